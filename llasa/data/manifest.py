"""Manifests: one JSON object per utterance (`audio`, `text`, optional `speaker`, `id`,
`duration`, `split`, plus any extra fields a source records), stored as JSONL.

Readers turn the common corpus layouts into items; `check_items` finds every problem at
once (missing columns, missing files, empty transcripts) so a user fixes a corpus in one pass.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

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


def check_items(items: list[dict], *, source: str = "manifest", check_files: bool = True) -> list[dict]:
    """Raise ManifestError listing all items without audio/text, with empty text or missing files;
    fill in a unique `id` (the audio file's stem) where none is given."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, item in enumerate(items):
        where = f"item {n + 1}" + (f" ({item['id']})" if item.get("id") else "")
        missing = [k for k in REQUIRED if k not in item or item[k] is None]
        if missing:
            problems.append(f"{where}: missing column(s) {', '.join(missing)}")
            continue
        if not str(item["text"]).strip():
            problems.append(f"{where}: empty transcript for {item['audio']}")
        if check_files and not Path(item["audio"]).is_file():
            problems.append(f"{where}: audio file not found: {item['audio']}")
        item.setdefault("id", Path(item["audio"]).stem)
        item["id"] = str(item["id"])
        if item["id"] in seen:
            problems.append(f"{where}: duplicate id '{item['id']}' (also item {seen[item['id']] + 1})")
        seen[item["id"]] = n
    _report(problems, source)
    if not items:
        raise ManifestError(f"{source}: no utterances found")
    return items


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


def read_jsonl(path: str | Path) -> list[dict]:
    """A JSONL manifest; relative audio paths are resolved against the manifest's folder."""
    path = Path(path)
    items, problems = [], []
    for _, item, problem in iter_jsonl(path):
        if problem:
            problems.append(problem)
            continue
        _rename_aliases(item)
        if "audio" in item and item["audio"] is not None:
            item["audio"] = _resolve(item["audio"], path.parent)
        items.append(item)
    _report(problems, str(path))
    return items


def read_csv(path: str | Path) -> list[dict]:
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
        items = [_rename_aliases({k: v for k, v in row.items() if k is not None and v not in (None, "")})
                 for row in reader]
    for item in items:
        if "audio" in item:
            item["audio"] = _resolve(item["audio"], path.parent)
        if "duration" in item:
            item["duration"] = float(item["duration"])
    return items


def _transcript_for(audio: Path) -> Path | None:
    for suffix in TRANSCRIPT_SUFFIXES:
        candidate = audio.with_name(audio.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_folder(root: str | Path) -> list[dict]:
    """Audio files with a transcript beside each (`x.wav` + `x.txt`, `x.lab` or
    `x.normalized.txt`); the first sub-folder below the root, if any, names the speaker."""
    root = Path(root)
    items, problems = [], []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        transcript = _transcript_for(audio)
        if transcript is None:
            problems.append(f"{audio}: no transcript ({' / '.join(audio.stem + s for s in TRANSCRIPT_SUFFIXES)})")
            continue
        item = {"audio": str(audio), "text": transcript.read_text(encoding="utf-8").strip(), "id": audio.stem}
        rel = audio.relative_to(root)
        if len(rel.parts) > 1:
            item["speaker"] = rel.parts[0]
        items.append(item)
    _report(problems, str(root))
    return items


def read_ljspeech(root: str | Path) -> list[dict]:
    """LJSpeech: `metadata.csv` rows `id|text|normalized text` and `wavs/<id>.wav`; one speaker."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise ManifestError(f"{root}: no metadata.csv (LJSpeech layout: metadata.csv + wavs/)")
    items, problems = [], []
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
            items.append(item)
    _report(problems, str(meta))
    return items


def read_libritts(root: str | Path) -> list[dict]:
    """LibriTTS: `<speaker>/<chapter>/<id>.wav` with `<id>.normalized.txt` (else `.original.txt`)."""
    root = Path(root)
    items, problems = [], []
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
        items.append(item)
    if not items and not problems:
        raise ManifestError(f"{root}: no <speaker>/<chapter>/*.wav files (LibriTTS layout)")
    _report(problems, str(root))
    return items


def read_hf(path: str | Path, *, audio_dir: str | Path | None = None, split: str | None = None,
            audio_column: str = "audio", text_column: str = "text") -> list[dict]:
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
    items = []
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
        items.append(item)
    return items


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


def load_corpus(src: str | Path, format: str | None = None, **hf_options) -> list[dict]:
    """Read any supported layout (auto-detected unless `format` is given) and check it."""
    format = format or detect_format(src)
    if format in ("csv", "jsonl") and Path(src).is_dir():
        table = _table_in(Path(src))
        if table is None:
            raise ManifestError(f"{src}: a folder with no {' / '.join(TABLE_NAMES)} to read as {format}")
        src = table
    readers = {"folder": read_folder, "csv": read_csv, "jsonl": read_jsonl, "ljspeech": read_ljspeech,
               "libritts": read_libritts, "hf": lambda p: read_hf(p, **hf_options)}
    if format not in readers:
        raise ManifestError(f"unknown manifest format '{format}'; choose one of {', '.join(FORMATS)}")
    return check_items(readers[format](src), source=str(src))


def add_durations(items: Iterable[dict]) -> None:
    """Fill in `duration` (seconds) from the file headers where it is missing."""
    for item in items:
        if item.get("duration") is None:
            info = sf.info(item["audio"])
            item["duration"] = round(info.frames / info.samplerate, 3)


def write_jsonl(items: Iterable[dict], path: str | Path) -> Path:
    """Write items as JSONL atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path
