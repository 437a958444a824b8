"""Text normalisation for scoring transcripts against the target text, and its counting units.

jiwer supplies the string transforms; numbers become words first (num2words) because TTS speaks
"1990" and ASR writes words back (PocketSphinx always, Whisper often).
"""

from __future__ import annotations

import re

from llasa.extras import require

# Languages written without spaces between words: errors and speech rate are counted in characters
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "yue"})

_NUMBER = re.compile(r"(?<![\w.])(\d+(?:,\d{3})*(?:\.\d+)?)(st|nd|rd|th)?\b")


def language_code(language: str) -> str:
    """'en-US', 'zh_CN' -> 'en', 'zh'."""
    return language.lower().replace("_", "-").split("-")[0]


def counts_characters(language: str) -> bool:
    return language_code(language) in CHARACTER_LANGUAGES


def _spell_number(match: re.Match, lang: str) -> str:
    from num2words import num2words

    digits, ordinal_suffix = match.group(1).replace(",", ""), match.group(2)
    if ordinal_suffix:
        return num2words(int(digits), to="ordinal", lang=lang)
    if "." in digits:
        return num2words(float(digits), lang=lang)
    value = int(digits)
    # four-digit numbers in this range are read as years ("nineteen ninety") far more often than
    # as quantities in the sentences TTS is asked to say
    if len(digits) == 4 and 1100 <= value <= 2099 and value % 100 and not 2000 <= value <= 2009:
        return num2words(value, to="year", lang=lang)
    return num2words(value, lang=lang)


def spell_numbers(text: str, language: str = "en") -> str:
    """Digits to words where num2words knows the language; others keep their digits."""
    from num2words import CONVERTER_CLASSES

    lang = language_code(language)
    if lang not in CONVERTER_CLASSES:
        return text
    return _NUMBER.sub(lambda m: _spell_number(m, lang), text)


def normalize(text: str, language: str = "en") -> str:
    """Lower case, numbers as words, no punctuation or symbols, single spaces."""
    jiwer = require("jiwer", "text normalisation for WER")

    transform = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            # apostrophes join ("don't" -> "dont") so a contraction is one word on both sides; any other
            # punctuation or symbol separates words
            jiwer.SubstituteRegexes({r"['\u2019]": "", r"[^\w\s]|_": " "}),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
        ]
    )
    return transform(spell_numbers(text, language))


def units(text: str, language: str = "en") -> list[str]:
    """The tokens errors and speaking rate are counted in: words, or characters for zh/ja/yue."""
    text = normalize(text, language)
    if counts_characters(language):
        return [ch for ch in text if not ch.isspace()]
    return text.split()


def word_errors(reference: str, hypothesis: str, language: str = "en") -> tuple[int, int]:
    """Errors (substitutions + deletions + insertions) of ``hypothesis`` against ``reference``,
    and the reference's length, both in :func:`units`: a list's WER is the sum of the first
    over the sum of the second."""
    truth, heard = units(reference, language), units(hypothesis, language)
    if not truth or not heard:
        return max(len(truth), len(heard)), len(truth)
    jiwer = require("jiwer", "word error rate")
    m = jiwer.process_words(" ".join(truth), " ".join(heard))
    return m.substitutions + m.deletions + m.insertions, len(truth)


def pooled_error_rate(references: list[str], hypotheses: list[str], language: str = "en") -> float:
    """A list's error rate: all errors over all reference units (not the mean of each item's)."""
    counts = [word_errors(r, h, language) for r, h in zip(references, hypotheses, strict=True)]
    return sum(e for e, _ in counts) / max(sum(n for _, n in counts), 1)


def error_metric(language: str) -> str:
    return "cer" if counts_characters(language) else "wer"
