"""Audio + transcripts -> code shards in the official memmap format (spec §3.1).

Each rank of a job writes one shard: `shard-RRRRR-of-WWWWW.memmap` (int32 rows of
`max_length`: text tokens, SGS, codes + offset, SGE, eos padding), `..._shape.npy` (the
official `[N, max_length]` shape file), `.index.jsonl` (one line of metadata per row) and
`.skipped.jsonl` (items left out, with the reason).

Work is committed chunk by chunk: rows, index lines and skip lines are appended and synced,
then `.progress.json` (the commit record) is replaced atomically. A restarted run truncates
every file back to the last commit and carries on after it, so a kill at any moment loses
at most one uncommitted chunk and never duplicates a row.

A manifest file is streamed, never held: one pass checks it and fingerprints this rank's
items, one sums the audio still to encode (the progress bar's total), one encodes. It must not
change while a run, or the runs that resume it, read it (the fingerprint refuses a changed one).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from llasa import audio
from llasa.data.manifest import checked, stream_jsonl

CONFIG_NAME = "tokenize_config.json"


def distributed_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """This process's (rank, world size): explicit values win, then RANK / WORLD_SIZE as set by
    `torchrun` and `accelerate launch`, else (0, 1)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not within a world of size {world_size}")
    return rank, world_size


def shard_prefix(out_dir: Path, rank: int, world_size: int) -> Path:
    return out_dir / f"shard-{rank:05d}-of-{world_size:05d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _save_shape(path: Path, rows: int, max_length: int) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, np.array([rows, max_length], dtype=np.int64))
    os.replace(tmp, path)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _keep_lines(path: Path, n: int) -> None:
    """Cut a JSONL file back to its first `n` lines (the committed ones)."""
    lines = path.read_bytes().splitlines(keepends=True) if path.exists() else []
    if len(lines) != n:
        if len(lines) < n:
            raise RuntimeError(f"{path} has {len(lines)} lines but {n} were committed; the shard is damaged")
        _write_atomic(path, b"".join(lines[:n]))


def _fingerprint(items: Iterable[dict], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for item in items:
        digest.update(json.dumps([item["id"], item["audio"], item.get(settings["text_field"])]).encode())
    return digest.hexdigest()


def _seconds(item: dict) -> float:
    if item.get("duration") is not None:
        return float(item["duration"])
    try:
        info = sf.info(item["audio"])
    except (RuntimeError, OSError):  # unreadable files are reported when they are loaded
        return 0.0
    return info.frames / info.samplerate


def _lines(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def tokenize_manifest(
    manifest: str | Path | Iterable[dict],
    out_dir: str | Path,
    *,
    codec,
    tokenizer,
    codec_name: str,
    tokenizer_name: str,
    batch_size: int = 8,
    max_length: int = 2048,
    text_field: str = "text",
    frontend: str = "text",
    refine_steps: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    chunk_size: int | None = None,
    on_commit: Callable[[dict], None] | None = None,
) -> dict:
    """Encode this rank's items (those with index % world_size == rank) into its shard.

    `codec` is a `llasa.codec.Codec`, `tokenizer` a Llasa tokenizer; their names are recorded
    in `tokenize_config.json`. `on_commit(progress)` runs after each committed chunk.
    `refine_steps` > 0 encodes by synthesis (`Codec.encode`): an LM trained on such codes
    should be prompted with them too; 0 (the default) keeps the encoder's own.
    Returns the shard's progress record (rows, items done, skipped, hours).
    """
    from llasa.lm.frontend import Frontend
    from llasa.lm.prompt import memmap_row
    from llasa.lm.vocab import SpeechVocab

    to_model_text = Frontend(frontend)

    rank, world_size = distributed_rank(rank, world_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be 0 or more, got {refine_steps}")
    chunk_size = chunk_size or 4 * batch_size
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    if vocab.codebook_size != codec.codebook_size:
        raise ValueError(f"the tokenizer has {vocab.codebook_size} speech tokens but the codec has "
                         f"{codec.codebook_size} codes: build the tokenizer for this codec")
    if isinstance(manifest, (str, Path)):
        manifest_name = str(manifest)

        def items() -> Iterator[dict]:
            return checked(stream_jsonl(manifest), source=manifest_name, check_files=False)
    else:
        manifest_name, given = "<items>", list(manifest)

        def items() -> Iterator[dict]:
            return checked(given, check_files=False)

    def mine() -> Iterator[tuple[int, dict]]:
        return ((index, item) for index, item in enumerate(items()) if index % world_size == rank)

    # the checking pass: a bad manifest is refused before anything is written
    n_items = sum(1 for _ in items())

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "codec": codec_name, "codebook_size": codec.codebook_size, "sample_rate": codec.sample_rate,
        "hop_length": codec.hop_length, "tokenizer": tokenizer_name, "vocab_size": len(tokenizer),
        "speech_offset": vocab.speech_offset, "max_length": max_length, "text_field": text_field, "frontend": frontend,
        "world_size": world_size, "manifest": manifest_name, "items": n_items,
    }
    if refine_steps:  # recorded only when used, so shards made before the option still resume
        config.update(refine_steps=refine_steps, refine_lr=codec.refine_lr)
        if codec.refine_cepstral:  # likewise
            config.update(refine_cepstral=codec.refine_cepstral)
    config_path = out_dir / CONFIG_NAME
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        if previous != config:
            changed = sorted(k for k in config.keys() | previous.keys() if config.get(k) != previous.get(k))
            raise ValueError(f"{out_dir} holds shards made with other settings ({', '.join(changed)} differ); "
                             "use a new output folder")
    else:
        _write_atomic(config_path, (json.dumps(config, indent=2) + "\n").encode())

    prefix = shard_prefix(out_dir, rank, world_size)
    rows_path, shape_path = prefix.with_suffix(".memmap"), Path(f"{prefix}_shape.npy")
    index_path, skipped_path = prefix.with_suffix(".index.jsonl"), prefix.with_suffix(".skipped.jsonl")
    progress_path = prefix.with_suffix(".progress.json")
    n_mine = len(range(rank, n_items, world_size))
    fingerprint = _fingerprint((item for _, item in mine()), config)
    row_bytes = max_length * np.dtype(np.int32).itemsize

    if progress_path.is_file():
        progress = json.loads(progress_path.read_text())
        if progress["fingerprint"] != fingerprint:
            raise ValueError(f"{progress_path} belongs to another manifest or settings; use a new output folder")
        with open(rows_path, "r+b") as f:
            f.truncate(progress["rows"] * row_bytes)  # drop rows of a chunk that never committed
        _keep_lines(index_path, progress["rows"])
        _keep_lines(skipped_path, progress["skipped"])
    else:
        progress = {"rows": 0, "items_done": 0, "skipped": 0, "seconds": 0.0, "fingerprint": fingerprint,
                    "done": False}
        for path in (rows_path, index_path, skipped_path):
            path.write_bytes(b"")
    _save_shape(shape_path, progress["rows"], max_length)

    committed = progress["items_done"]  # this rank's items already in the shard
    total_seconds = progress["seconds"] + sum(_seconds(item) for _, item in islice(mine(), committed, None))
    bar = tqdm(total=total_seconds / 3600, initial=progress["seconds"] / 3600,
               desc=f"tokenize {rank}/{world_size}", unit="h audio", bar_format=
               "{l_bar}{bar}| {n:.2f}/{total:.2f} h audio [{elapsed}<{remaining}{postfix}]")
    start, seconds_now = time.perf_counter(), 0.0
    todo = islice(mine(), committed, None)
    while chunk := list(islice(todo, chunk_size)):
        skipped, loaded = [], []
        for index, item in chunk:
            reason = None
            text = item.get(text_field)
            if not isinstance(text, str) or not text.strip():
                reason = f"no '{text_field}' transcript"
            else:
                try:
                    wav = audio.load(item["audio"], codec.sample_rate)
                except audio.AudioError as exc:
                    reason = f"bad audio: {exc}"
                else:
                    # cheap pre-check: audio whose codes alone overflow the row is not worth encoding
                    if codec.num_codes(len(wav)) + 2 > max_length:
                        reason = "over-length"
            if reason:
                skipped.append({"item": index, "id": item["id"], "audio": item["audio"], "reason": reason})
            else:
                loaded.append((index, item, text, wav))
        wavs = [wav for *_, wav in loaded]
        codes = codec.encode(wavs, batch_size=batch_size, refine_steps=refine_steps) if loaded else []
        rows, entries = [], []
        for (index, item, text, wav), item_codes in zip(loaded, codes):
            try:
                row = memmap_row(tokenizer, to_model_text(text), item_codes, max_length=max_length)
            except ValueError as exc:
                skipped.append({"item": index, "id": item["id"], "audio": item["audio"], "reason": str(exc)})
                continue
            if not np.any(row == vocab.sge_id):  # memmap_row truncates; a row without its end is useless
                skipped.append({"item": index, "id": item["id"], "audio": item["audio"], "reason": "over-length"})
                continue
            duration = len(wav) / codec.sample_rate
            entries.append({"row": progress["rows"] + len(rows), "item": index, "id": item["id"],
                            "speaker": item.get("speaker"), "text": text, "duration": round(duration, 3),
                            "n_codes": int(len(item_codes)), "audio": item["audio"]})
            rows.append(row)
        if rows:
            _append(rows_path, np.stack(rows).astype(np.int32).tobytes())
            _append(index_path, _lines(entries))
        if skipped:
            _append(skipped_path, _lines(skipped))
        chunk_seconds = sum(_seconds(item) for _, item in chunk)
        progress.update(rows=progress["rows"] + len(rows), items_done=progress["items_done"] + len(chunk),
                        skipped=progress["skipped"] + len(skipped), seconds=progress["seconds"] + chunk_seconds,
                        done=progress["items_done"] + len(chunk) == n_mine)
        _write_atomic(progress_path, json.dumps(progress).encode())  # the commit point
        _save_shape(shape_path, progress["rows"], max_length)
        seconds_now += chunk_seconds
        # audio seconds per wall second = hours of audio per hour
        bar.set_postfix_str(f"{seconds_now / max(time.perf_counter() - start, 1e-9):.1f} h/h, "
                            f"{progress['rows']} rows, {progress['skipped']} skipped")
        bar.update(min(chunk_seconds / 3600, bar.total - bar.n))  # float sums may overshoot the total
        if on_commit:
            on_commit(dict(progress))
    bar.close()
    if committed == n_mine:
        progress["done"] = True
        _write_atomic(progress_path, json.dumps(progress).encode())
    return progress


class CodeShardDataset(torch.utils.data.Dataset):
    """All committed rows of every shard in a folder (or in several folders, one after the
    other), as int32 tensors of `max_length`.

    Reads any `X.memmap` with its `X_shape.npy`, so the official `train_input_ids.memmap`
    files load too. `metadata(i)` gives a row's index entry where one was written.
    """

    def __init__(self, directory: str | Path | Sequence[str | Path]):
        directories = [Path(directory)] if isinstance(directory, (str, Path)) else [Path(d) for d in directory]
        if not directories:
            raise ValueError("no shard folder given")
        self.directory = directories[0]
        self.shards: list[tuple[Path, np.memmap | None, int]] = []
        widths: dict[int, Path] = {}
        for folder in directories:
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: no such shard folder")
            found = 0
            for rows_path in sorted(folder.glob("*.memmap")):
                shape_path = rows_path.with_name(rows_path.stem + "_shape.npy")
                if not shape_path.is_file():
                    raise ValueError(f"{rows_path}: no {shape_path.name} beside it")
                rows, width = (int(x) for x in np.load(shape_path))
                widths.setdefault(width, folder)
                if rows:
                    # the file may hold uncommitted rows past `rows` while a run is going on
                    self.shards.append((rows_path, np.memmap(rows_path, dtype=np.int32, mode="r", shape=(rows, width)), rows))
                    found += rows
            if not found:
                raise ValueError(f"{folder}: no rows (no *.memmap shards with a *_shape.npy, or all empty)")
        if len(widths) > 1:
            where = ", ".join(f"{w} in {folder}" for w, folder in sorted(widths.items()))
            raise ValueError(f"shards have different row lengths ({where}): tokenize them with the same --max-length")
        self.max_length = next(iter(widths))
        self.offsets = np.cumsum([0] + [rows for *_, rows in self.shards])
        self._index: dict[Path, list[dict]] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        i %= len(self)
        shard = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return shard, i - int(self.offsets[shard])

    def __getitem__(self, i: int) -> torch.Tensor:
        shard, row = self._locate(i)
        return torch.from_numpy(np.array(self.shards[shard][1][row]))

    def metadata(self, i: int) -> dict:
        shard, row = self._locate(i)
        path = self.shards[shard][0].with_suffix(".index.jsonl")
        if path not in self._index:
            if not path.is_file():
                raise ValueError(f"{path}: no index for this shard")
            self._index[path] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return self._index[path][row]
