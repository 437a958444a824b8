"""Manifests: one JSON object per utterance (`audio`, `text`, optional `speaker`, `id`,
`duration`, `split`, plus any extra fields a source records), stored as JSONL.

Readers turn the common corpus layouts into items. They are generators, so that a corpus of
millions of utterances streams through in constant memory: rows come out as they are read,
and every problem (missing columns, missing files, empty transcripts, bad lines) is raised
in one ManifestError after the last row, so a user fixes a corpus in one pass. A caller that
needs a count or random access makes a list (`read_jsonl`, `check_items`) or reads twice.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from array import array
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf

from llasa.extras import require

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
TRANSCRIPT_SUFFIXES = (".txt", ".lab", ".normalized.txt", ".original.txt")
FORMATS = ("folder", "csv", "jsonl", "ljspeech", "libritts", "hf")
REQUIRED = ("audio", "text")
# other names for the required columns: Hugging Face `audiofolder` metadata, Common Voice
ALIASES = {"file_name": "audio", "path": "audio", "transcription": "text", "sentence": "text"}
TABLE_NAMES = ("manifest.jsonl", "metadata.jsonl", "metadata.csv", "metadata.tsv")


class ManifestError(ValueError):
    """A corpus that cannot be read, with every problem found listed in the message."""


def _report(problems: list[str], what: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ManifestError(f"{what}: {len(problems)} problem(s):\n  {shown}{more}")


def checked(items: Iterable[dict], *, source: str = "manifest", check_files: bool = True) -> Iterator[dict]:
    """The good items, each as it comes, with a unique `id` filled in (the audio file's stem)
    where none is given; after the last, one ManifestError listing every item without
    audio/text, with empty text, a missing file or a repeated id (or, with none, saying so).

    A corpus streams through: per item only a 16-byte digest of its id is kept, and repeats
    are found among the digests after the last item. A caller that stops early hears of no
    problem: read to the end before acting on a partial read."""
    problems: list[str] = []
    digests, numbers = bytearray(), array("q")
    n = -1
    for n, item in enumerate(items):
        where = f"item {n + 1}" + (f" ({item['id']})" if item.get("id") else "")
        missing = [k for k in REQUIRED if k not in item or item[k] is None]
        if missing:
            problems.append(f"{where}: missing column(s) {', '.join(missing)}")
            continue
        found = len(problems)
        if not str(item["text"]).strip():
            problems.append(f"{where}: empty transcript for {item['audio']}")
        if check_files and not Path(item["audio"]).is_file():
            problems.append(f"{where}: audio file not found: {item['audio']}")
        item.setdefault("id", Path(item["audio"]).stem)
        item["id"] = str(item["id"])
        digests += hashlib.blake2b(item["id"].encode(), digest_size=16).digest()
        numbers.append(n)
        if len(problems) == found:
            yield item
    problems += [f"item {later + 1}: duplicate id (also item {earlier + 1})"
                 for later, earlier in _repeats(digests, numbers)]
    _report(problems, source)
    if n < 0:
        raise ManifestError(f"{source}: no utterances found")


def _repeats(digests: bytearray, numbers: array) -> list[tuple[int, int]]:
    """(item, the previous item with the same id) for every repeated id, by 16-byte id digests."""
    keys = np.frombuffer(bytes(digests), dtype=np.uint64).reshape(-1, 2)
    order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: equal ids stay in item order
    ordered = keys[order]
    same = np.flatnonzero((ordered[1:] == ordered[:-1]).all(axis=1))
    items = np.frombuffer(numbers, dtype=np.int64)
    return sorted((int(items[order[i + 1]]), int(items[order[i]])) for i in same)


def check_items(items: Iterable[dict], *, source: str = "manifest", check_files: bool = True) -> list[dict]:
    """`checked` as a list: raises before returning anything."""
    return list(checked(items, source=source, check_files=check_files))


def _rename_aliases(item: dict) -> dict:
    for alias, name in ALIASES.items():
        if alias in item and name not in item:
            item[name] = item.pop(alias)
    return item


def _resolve(audio: str, base: Path) -> str:
    path = Path(os.path.expanduser(str(audio)))
    return str(path if path.is_absolute() else base / path)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, object, None) for each JSON object of a JSONL file, or (line number, None,
    problem) for a bad line; blank lines are skipped. Readers collect every problem in order."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, None, f"line {line_no}: not JSON ({exc.msg})"
                continue
            if not isinstance(item, dict):
                yield line_no, None, f"line {line_no}: expected an object, got {type(item).__name__}"
                continue
            yield line_no, item, None


def stream_jsonl(path: str | Path) -> Iterator[dict]:
    """The items of a JSONL manifest as they are read; relative audio paths are resolved
    against the manifest's folder. Bad lines are raised together after the last item."""
    path = Path(path)
    problems = []
    for _, item, problem in iter_jsonl(path):
        if problem:
            problems.append(problem)
            continue
        _rename_aliases(item)
        if "audio" in item and item["audio"] is not None:
            item["audio"] = _resolve(item["audio"], path.parent)
        yield item
    _report(problems, str(path))


def read_jsonl(path: str | Path) -> list[dict]:
    """A whole JSONL manifest as a list (small ones: evaluation lists, codec clips); bad lines
    are raised before anything is returned."""
    return list(stream_jsonl(path))


def read_csv(path: str | Path) -> Iterator[dict]:
    """A CSV/TSV table with a header naming `audio` and `text` (and optionally `speaker`, `id`, ...)."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        dialect = csv.Sniffer().sniff(sample, delimiters=",\t|;") if sample else csv.excel
        reader = csv.DictReader(f, dialect=dialect)
        columns = [ALIASES.get(c, c) for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ManifestError(
                f"{path}: missing column(s) {', '.join(missing)}; the header has {reader.fieldnames}"
            )
        for row in reader:
            item = _rename_aliases({k: v for k, v in row.items() if k is not None and v not in (None, "")})
            if "audio" in item:
                item["audio"] = _resolve(item["audio"], path.parent)
            if "duration" in item:
                item["duration"] = float(item["duration"])
            yield item


def _transcript_for(audio: Path) -> Path | None:
    for suffix in TRANSCRIPT_SUFFIXES:
        candidate = audio.with_name(audio.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_folder(root: str | Path) -> Iterator[dict]:
    """Audio files with a transcript beside each (`x.wav` + `x.txt`, `x.lab` or
    `x.normalized.txt`); the first sub-folder below the root, if any, names the speaker."""
    root = Path(root)
    problems = []
    # the sorted paths are held (for a stable order); the items are not
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        transcript = _transcript_for(audio)
        if transcript is None:
            problems.append(f"{audio}: no transcript ({' / '.join(audio.stem + s for s in TRANSCRIPT_SUFFIXES)})")
            continue
        item = {"audio": str(audio), "text": transcript.read_text(encoding="utf-8").strip(), "id": audio.stem}
        rel = audio.relative_to(root)
        if len(rel.parts) > 1:
            item["speaker"] = rel.parts[0]
        yield item
    _report(problems, str(root))


def read_ljspeech(root: str | Path) -> Iterator[dict]:
    """LJSpeech: `metadata.csv` rows `id|text|normalized text` and `wavs/<id>.wav`; one speaker."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise ManifestError(f"{root}: no metadata.csv (LJSpeech layout: metadata.csv + wavs/)")
    problems = []
    speaker = root.name
    with open(meta, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            fields = line.split("|")
            if len(fields) < 2:
                problems.append(f"metadata.csv line {line_no}: expected 'id|text|normalized', got {line!r}")
                continue
            item = {"audio": str(root / "wavs" / f"{fields[0]}.wav"), "id": fields[0], "text": fields[1], "speaker": speaker}
            if len(fields) > 2 and fields[2]:
                item["normalized"] = fields[2]
            yield item
    _report(problems, str(meta))


def read_libritts(root: str | Path) -> Iterator[dict]:
    """LibriTTS: `<speaker>/<chapter>/<id>.wav` with `<id>.normalized.txt` (else `.original.txt`)."""
    root = Path(root)
    problems, found = [], 0
    for audio in sorted(root.glob("*/*/*.wav")):
        speaker, chapter = audio.parent.parent.name, audio.parent.name
        norm, orig = audio.with_suffix(".normalized.txt"), audio.with_suffix(".original.txt")
        if not norm.is_file() and not orig.is_file():
            problems.append(f"{audio}: no {norm.name} or {orig.name}")
            continue
        item = {"audio": str(audio), "id": audio.stem, "speaker": speaker, "chapter": chapter}
        if norm.is_file():
            item["text"] = item["normalized"] = norm.read_text(encoding="utf-8").strip()
        if orig.is_file():
            item["text"] = orig.read_text(encoding="utf-8").strip()
        found += 1
        yield item
    if not found and not problems:
        raise ManifestError(f"{root}: no <speaker>/<chapter>/*.wav files (LibriTTS layout)")
    _report(problems, str(root))


def read_hf(path: str | Path, *, audio_dir: str | Path | None = None, split: str | None = None,
            audio_column: str = "audio", text_column: str = "text") -> Iterator[dict]:
    """A Hugging Face dataset saved with `save_to_disk` (or a local dataset folder).

    Audio stored inside the dataset (bytes) is written out under `audio_dir` so that the
    manifest points at files like every other reader; a `speaker` or `speaker_id` column
    names the speaker. Decoding is left off because
    `datasets`' decoders need torchcodec/torchaudio.
    """
    datasets = require("datasets", "reading Hugging Face datasets")
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: no such dataset folder")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        ds = datasets.load_dataset(str(path))  # a folder of data files with a loading script or config
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise ManifestError(f"{path}: holds splits {list(ds)}; choose one with split=...")
            split = next(iter(ds))
        if split not in ds:
            raise ManifestError(f"{path}: no split '{split}' (has {list(ds)})")
        ds = ds[split]
    missing = [c for c in (audio_column, text_column) if c not in ds.column_names]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}; the dataset has {ds.column_names}")
    speaker_column = next((c for c in ("speaker", "speaker_id") if c in ds.column_names), None)
    if isinstance(ds.features[audio_column], datasets.Audio):
        ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    audio_dir = Path(audio_dir) if audio_dir else path / "audio"
    for n, row in enumerate(ds):
        audio = row[audio_column]
        item_id = str(row.get("id", f"{path.name}-{n:06d}"))
        if isinstance(audio, dict):
            if audio.get("bytes"):
                suffix = Path(audio.get("path") or "x.wav").suffix or ".wav"
                out = audio_dir / f"{item_id}{suffix}"
                if not out.is_file():
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(audio["bytes"])
                audio = str(out)
            else:
                audio = audio.get("path")
        item = {"audio": audio, "text": row[text_column], "id": item_id}
        if speaker_column:
            item["speaker"] = str(row[speaker_column])
        yield item


def _table_in(folder: Path) -> Path | None:
    """A folder's own metadata table (a manifest beside its audio), if it has one."""
    return next((folder / n for n in TABLE_NAMES if (folder / n).is_file()), None)


def detect_format(src: str | Path) -> str:
    src = Path(src)
    if src.is_file():
        return "jsonl" if src.suffix == ".jsonl" else "csv"
    if not src.is_dir():
        raise ManifestError(f"{src}: no such file or folder")
    if (src / "metadata.csv").is_file() and (src / "wavs").is_dir():
        return "ljspeech"
    if (src / "dataset_info.json").is_file() or (src / "dataset_dict.json").is_file():
        return "hf"
    table = _table_in(src)
    if table is not None:
        return "jsonl" if table.suffix == ".jsonl" else "csv"
    if any(src.glob("*/*/*.normalized.txt")):
        return "libritts"
    return "folder"


def load_corpus(src: str | Path, format: str | None = None, **hf_options) -> Iterator[dict]:
    """The checked items of any supported layout (auto-detected unless `format` is given), as
    they are read; the layout is found (or refused) at once, the rows' problems are raised
    together after the last good row (see `checked`). `list(...)` for a count or indexing."""
    format = format or detect_format(src)
    if format in ("csv", "jsonl") and Path(src).is_dir():
        table = _table_in(Path(src))
        if table is None:
            raise ManifestError(f"{src}: a folder with no {' / '.join(TABLE_NAMES)} to read as {format}")
        src = table
    readers = {"folder": read_folder, "csv": read_csv, "jsonl": stream_jsonl, "ljspeech": read_ljspeech,
               "libritts": read_libritts, "hf": lambda p: read_hf(p, **hf_options)}
    if format not in readers:
        raise ManifestError(f"unknown manifest format '{format}'; choose one of {', '.join(FORMATS)}")
    return checked(readers[format](src), source=str(src))


def with_durations(items: Iterable[dict]) -> Iterator[dict]:
    """The items with `duration` (seconds) filled in from the file headers where it is missing."""
    for item in items:
        if item.get("duration") is None:
            info = sf.info(item["audio"])
            item["duration"] = round(info.frames / info.samplerate, 3)
        yield item


def write_jsonl(items: Iterable[dict], path: str | Path) -> Path:
    """Write items as JSONL atomically (a temporary file renamed into place); items that fail
    while they stream in (a checked corpus raises after its last row) leave no file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path
