"""Text front-ends: what the LM reads in place of raw text.

The official checkpoints read raw text through Llama's BPE (front-end ``"text"``). Small
models trained on a CPU learn the text-to-sound alignment far sooner from phonemes, so a
model may instead read espeak-ng's IPA (``"espeak:en-us"``). The front-end is a property of
a model: tokenization records it in its shard folder, training copies it into the model's
``config.json`` (``llasa_frontend``), and synthesis applies the one the model names.

espeak-ng comes as a pip wheel (``espeakng-loader``, driven by ``phonemizer``), so no system
package is needed.

A front-end knows which scripts it reads (:attr:`Frontend.scripts`). BPE reads any script, so
``text`` accepts anything. espeak-ng spells a letter of a script its language does not read
("Chinese letter", "Arabic letter ...") and the model then speaks seconds of that spelling,
so an espeak front-end refuses such text (:meth:`Frontend.check`) rather than warn.
"""

from __future__ import annotations

import functools
import logging
import threading
import unicodedata

DEFAULT = "text"
CONFIG_KEY = "llasa_frontend"

# the scripts of espeak-ng languages written in another than Latin (every voice also reads
# Latin letters, as names and loanwords), and languages written in Latin alone; a language in
# neither table is not checked
_ESPEAK_SCRIPTS = {
    "cmn": ("Han",), "yue": ("Han",), "zh": ("Han",), "ja": ("Han", "Hiragana", "Katakana"), "ko": ("Hangul",),
    "ar": ("Arabic",), "fa": ("Arabic",), "ur": ("Arabic",), "he": ("Hebrew",), "el": ("Greek",), "grc": ("Greek",),
    "ru": ("Cyrillic",), "uk": ("Cyrillic",), "bg": ("Cyrillic",), "be": ("Cyrillic",), "mk": ("Cyrillic",),
    "sr": ("Cyrillic",), "kk": ("Cyrillic",), "ky": ("Cyrillic",), "hi": ("Devanagari",), "mr": ("Devanagari",),
    "ne": ("Devanagari",), "bn": ("Bengali",), "ta": ("Tamil",), "te": ("Telugu",), "th": ("Thai",),
    "ka": ("Georgian",), "hy": ("Armenian",), "am": ("Ethiopic",),
}  # fmt: skip
_LATIN_LANGUAGES = frozenset(
    "af az ca cs cy da de en eo es et eu fi fr ga gl hr hu id is it la lt lv ms mt nb nl no pl pt ro sk sl sq sv sw tr "
    "uz vi".split()
)
_SCRIPT_WORDS = {"CJK": "Han"}  # the first word of a letter's Unicode name, where it is not the script's name


def script_of(ch: str) -> str | None:
    """The script of a letter ("Latin", "Han", "Arabic", ...: the first word of its Unicode name);
    None for anything that is not a letter of a script (digits, punctuation, modifier letters)."""
    category = unicodedata.category(ch)
    if not category.startswith("L") or category == "Lm" or ch == "\u00b5":  # the micro sign is a unit, in any script
        return None
    base = unicodedata.normalize("NFKC", ch)[:1]  # fullwidth and mathematical letters count as their script
    word = unicodedata.name(base, "").split(" ")[0]
    return _SCRIPT_WORDS.get(word, word.title()) or None


def _espeak_scripts(language: str) -> tuple[str, ...] | None:
    code = language.lower().split("-")[0]
    if code in _ESPEAK_SCRIPTS:
        return ("Latin", *_ESPEAK_SCRIPTS[code])
    return ("Latin",) if code in _LATIN_LANGUAGES else None


class Frontend:
    """``frontend(text) -> str``: the form of ``text`` the model reads."""

    def __init__(self, spec: str = DEFAULT):
        kind, _, language = spec.partition(":")
        if kind == "text" and not language:
            self._backend = None
            self.scripts: tuple[str, ...] | None = None  # BPE reads every script
        elif kind == "espeak" and language:
            self._backend = _espeak(language)
            self.scripts = _espeak_scripts(language)
        else:
            raise ValueError(f"unknown text front-end {spec!r}: use 'text' or 'espeak:LANGUAGE' (e.g. 'espeak:en-us')")
        self.spec = spec
        self._lock = threading.Lock()  # the espeak library keeps global state

    def __call__(self, text: str) -> str:
        if self._backend is None:
            return text
        with self._lock:
            out = self._backend.phonemize([text], strip=True, njobs=1)[0]
        if not out.strip():
            raise ValueError(f"the {self.spec} front-end found nothing to say in {text[:80]!r}")
        return out

    def check(self, text: str, *, what: str = "text") -> str:
        """``text`` if this front-end can read every letter of it; else a ValueError naming the
        scripts it reads and the letters it cannot (see the module's docstring for why it refuses)."""
        if self.scripts is None:
            return text
        foreign: dict[str, list[str]] = {}
        for ch in text:
            script = script_of(ch)
            if script is not None and script not in self.scripts:
                foreign.setdefault(script, []).append(ch)
        if foreign:
            found = ", ".join(f"{script} ({''.join(chars[:6])!r}{', ...' if len(chars) > 6 else ''})"
                              for script, chars in foreign.items())  # fmt: skip
            readable = " and ".join(self.scripts)
            raise ValueError(
                f"{what} has letters this model cannot read: {found}. Its text front-end ({self.spec}) reads "
                f"{readable} script only and refuses other text rather than spell it letter by letter; use a model "
                "that reads raw text (the official Llasa checkpoints read any script)"
            )
        return text

    def __repr__(self) -> str:
        return f"Frontend({self.spec!r})"


@functools.lru_cache(maxsize=None)
def _espeak(language: str):
    try:
        import espeakng_loader
        from phonemizer.backend import EspeakBackend
        from phonemizer.backend.espeak.wrapper import EspeakWrapper
    except ImportError:
        raise ValueError(
            "the espeak front-end needs the packages espeakng-loader and phonemizer: pip install espeakng-loader phonemizer"
        ) from None
    EspeakWrapper.set_library(espeakng_loader.get_library_path())
    EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
    quiet = logging.getLogger("llasa.frontend.phonemizer")
    quiet.setLevel(logging.ERROR)  # phonemizer warns about word-count mismatches on punctuation
    try:
        return EspeakBackend(language, preserve_punctuation=True, with_stress=True, logger=quiet)
    except RuntimeError as exc:
        raise ValueError(f"espeak-ng does not know the language {language!r}: {exc}") from None


def frontend_of(model) -> Frontend:
    """The front-end a model was trained with (``text`` when its config names none)."""
    return Frontend(getattr(model.config, CONFIG_KEY, None) or DEFAULT)
