"""Text front-ends: what the LM reads in place of raw text.

The official checkpoints read raw text through Llama's BPE (front-end ``"text"``). Small
models trained on a CPU learn the text-to-sound alignment far sooner from phonemes, so a
model may instead read espeak-ng's IPA (``"espeak:en-us"``). The front-end is a property of
a model: tokenization records it in its shard folder, training copies it into the model's
``config.json`` (``llasa_frontend``), and synthesis applies the one the model names.

espeak-ng comes as a pip wheel (``espeakng-loader``, driven by ``phonemizer``), so no system
package is needed.
"""

from __future__ import annotations

import functools
import logging
import threading

DEFAULT = "text"
CONFIG_KEY = "llasa_frontend"


class Frontend:
    """``frontend(text) -> str``: the form of ``text`` the model reads."""

    def __init__(self, spec: str = DEFAULT):
        kind, _, language = spec.partition(":")
        if kind == "text" and not language:
            self._backend = None
        elif kind == "espeak" and language:
            self._backend = _espeak(language)
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
