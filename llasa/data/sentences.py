"""English sentences for the synthetic corpus, all from text found offline.

Prose comes from what this machine ships: the Debian `fortunes` databases (quotations and
aphorisms, when installed), Python's own documentation (`pydoc_data`, always present) and the
pocketsphinx LibriVox transcripts. Templates add what prose lacks: numbers, dates, times,
money, names and questions. Every sentence carries a `text` (as written, digits included) and
a `normalized` form (numbers spelled out by num2words) that is what the TTS engine is given,
so the transcript always matches what was spoken.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Collection

from num2words import num2words

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# the non-offensive `fortunes` package; `fortunes-off` lives elsewhere and is never read
FORTUNE_FILES = ("fortunes", "literature", "wisdom", "people", "science", "work", "food", "education",
                 "pets", "miscellaneous", "platitudes", "love", "sports", "kids", "humorists", "art", "law",
                 "medicine", "computers", "men-women", "songs-poems", "politics")
LIBRIVOX_TRANSCRIPTS = Path("/usr/share/pocketsphinx/test/data/librivox/transcription")

MIN_WORDS, MAX_WORDS = 4, 20
# plain words and light punctuation only: symbols, digits and abbreviations are read
# differently by each engine, so prose that contains them would make the transcript unreliable
_SPEAKABLE = re.compile(r"[A-Z][A-Za-z ,;'\-]+[.?!]")
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def _speakable(sentence: str) -> bool:
    return (_SPEAKABLE.fullmatch(sentence) is not None and not _ACRONYM.search(sentence)
            and "--" not in sentence and MIN_WORDS <= len(sentence.split()) <= MAX_WORDS)


def _split(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text).strip()
    return [s for s in _SENTENCE_END.split(text) if _speakable(s)]


def fortune_sentences() -> list[str]:
    if not FORTUNES_DIR.is_dir():
        return []
    out = []
    for name in FORTUNE_FILES:
        path = FORTUNES_DIR / name
        if not path.is_file():
            continue
        for entry in path.read_text(encoding="latin-1").split("\n%\n"):
            # drop the attribution ("-- Mark Twain") that follows a quotation
            out.extend(_split(re.split(r"\n\s*--", entry)[0]))
    return out


def python_doc_sentences() -> list[str]:
    import pydoc_data.topics

    return _split(" ".join(pydoc_data.topics.topics.values()))


def librivox_sentences() -> list[str]:
    if not LIBRIVOX_TRANSCRIPTS.is_file():
        return []
    out = []
    for line in LIBRIVOX_TRANSCRIPTS.read_text(encoding="utf-8").splitlines():
        words = re.sub(r"\(.*?\)$", "", line).replace("<s>", "").replace("</s>", "").split()
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            out.append(" ".join(words).capitalize() + ".")
    return out


PROSE_SOURCES = {"fortunes": fortune_sentences, "python-docs": python_doc_sentences, "librivox": librivox_sentences}


def prose_pool() -> list[tuple[str, str]]:
    """(sentence, source) pairs, de-duplicated and sorted so a seed gives the same draw."""
    seen: dict[str, str] = {}
    for source, read in PROSE_SOURCES.items():
        for sentence in read():
            seen.setdefault(sentence, source)
    return sorted(seen.items())


NAMES = ("Alice", "Bob", "Carlos", "Diana", "Edward", "Fatima", "George", "Hannah", "Ivan", "Julia",
         "Kevin", "Laura", "Martin", "Nora", "Oliver", "Priya", "Quentin", "Rosa", "Samuel", "Tara",
         "Victor", "Wendy", "Yusuf", "Zoe")
PLACES = ("Boston", "the station", "the library", "London", "the market", "Chicago", "the harbor",
          "the office", "Paris", "the museum", "Denver", "the school")
ITEMS = ("apples", "books", "tickets", "chairs", "letters", "bottles", "candles", "pencils", "boxes", "maps")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _words(n: int) -> str:
    return num2words(n)


def _clock(hour: int, minute: int) -> str:
    return f"{_words(hour)} {'oh ' if minute < 10 else ''}{_words(minute)}"


def _template(rng: random.Random) -> tuple[str, str]:
    """One (written, spoken) pair; each template renders both forms from the same values."""
    name, other = rng.sample(NAMES, 2)
    place, item = rng.choice(PLACES), rng.choice(ITEMS)
    n = rng.randint(2, 999)
    day, month, year = rng.randint(1, 28), rng.choice(MONTHS), rng.randint(1850, 2030)
    hour, minute = rng.randint(1, 12), rng.choice((5, 10, 15, 20, 25, 30, 40, 45, 50))
    dollars, cents = rng.randint(1, 500), rng.randint(1, 99)
    weekday = rng.choice(WEEKDAYS)
    pairs = [
        (f"{name} bought {n} {item} at {place}.", f"{name} bought {_words(n)} {item} at {place}."),
        (f"How many {item} did {name} leave at {place}?", None),
        (f"The meeting with {other} starts at {hour}:{minute:02d} on {weekday}.",
         f"The meeting with {other} starts at {_clock(hour, minute)} on {weekday}."),
        (f"{name} was born on {month} {day}, {year}.",
         f"{name} was born on {month} {num2words(day, to='ordinal')}, {num2words(year, to='year')}."),
        (f"The ticket to {place} costs ${dollars}.{cents:02d}.",
         f"The ticket to {place} costs {_words(dollars)} dollars and {_words(cents)} cents."),
        (f"Did {name} really walk {n} miles to {place} with {other}?",
         f"Did {name} really walk {_words(n)} miles to {place} with {other}?"),
        (f"Call {other} before {hour} o'clock.", f"Call {other} before {_words(hour)} o'clock."),
        (f"Why is {name} waiting at {place} again?", None),
        (f"Room {n} is on floor {day}.", f"Room {_words(n)} is on floor {_words(day)}."),
        (f"In {year}, {name} moved to {place} with {n} {item}.",
         f"In {num2words(year, to='year')}, {name} moved to {place} with {_words(n)} {item}."),
        (f"Is it true that {name} finished {num2words(day, to='ordinal')} out of {n} runners?",
         f"Is it true that {name} finished {num2words(day, to='ordinal')} out of {_words(n)} runners?"),
        (f"{name} and {other} counted {n * 7} {item} by {weekday} evening.",
         f"{name} and {other} counted {_words(n * 7)} {item} by {weekday} evening."),
    ]
    written, spoken = rng.choice(pairs)
    return written, spoken or written


def draw_sentences(n: int, seed: int, template_share: float = 0.3, exclude: Collection[str] = ()) -> list[dict]:
    """`n` distinct sentences (`text`, `normalized`, `source`), reproducible from `seed`.

    About `template_share` of them come from the templates, the rest from the prose pool;
    when the prose runs out, templates fill the remainder. Sentences in `exclude` (the texts of
    another corpus, say) are never drawn.
    """
    if n < 1:
        raise ValueError(f"need at least one sentence, got {n}")
    rng = random.Random(seed)
    exclude = set(exclude)
    pool = [entry for entry in prose_pool() if entry[0] not in exclude]
    n_prose = min(len(pool), round(n * (1.0 - template_share)))
    picked = [{"text": s, "normalized": s, "source": src} for s, src in rng.sample(pool, n_prose)]
    seen = {p["text"] for p in picked} | exclude
    attempts = 0
    while len(picked) < n:
        written, spoken = _template(rng)
        attempts += 1
        if attempts > 100 * n:
            raise ValueError(f"could not draw {n} distinct sentences (have {len(picked)})")
        if written in seen or not MIN_WORDS <= len(spoken.split()) <= MAX_WORDS:
            continue
        seen.add(written)
        picked.append({"text": written, "normalized": spoken, "source": "template"})
    rng.shuffle(picked)
    return picked
