"""Benchmark lists: Seed-TTS-eval ``meta.lst`` and its JSONL equivalent.

``meta.lst``: one ``id|prompt_text|prompt_wav|text`` per line (Seed-TTS-eval's test-zh lists add a
fifth field, the ground-truth recording, kept as ``reference_wav``). Relative paths are resolved
against the list's folder, as seed-tts-eval's scripts do. JSONL: ``id``, ``text`` and optional
``prompt_text``, ``prompt_wav`` (or ``prompt_audio``), ``reference_wav``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llasa.data.manifest import ManifestError, iter_jsonl


@dataclass
class EvalItem:
    id: str
    text: str
    prompt_text: str | None = None
    prompt_wav: str | None = None
    reference_wav: str | None = None


def _resolve(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    path = Path(os.path.expanduser(path))
    return str(path if path.is_absolute() else base / path)


def _check(items: list[EvalItem], problems: list[str], source: Path) -> list[EvalItem]:
    seen: dict[str, int] = {}
    for n, item in enumerate(items, 1):
        if item.id in seen:
            problems.append(f"item {n}: duplicate id '{item.id}' (also item {seen[item.id]})")
        seen[item.id] = n
        if (item.prompt_wav is None) != (item.prompt_text is None):
            problems.append(f"item {n} ({item.id}): a voice prompt needs both its audio and its transcript")
        if item.prompt_wav is not None and not Path(item.prompt_wav).is_file():
            problems.append(f"item {n} ({item.id}): prompt audio not found: {item.prompt_wav}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ManifestError(f"{source}: {len(problems)} problem(s):\n  {shown}{more}")
    if not items:
        raise ManifestError(f"{source}: no items")
    return items


def read_meta_lst(path: str | Path) -> list[EvalItem]:
    """Read a Seed-TTS-eval ``meta.lst``; every bad line is reported at once, with its number."""
    path = Path(path)
    items, problems = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) not in (4, 5):
            problems.append(f"line {line_no}: expected 4 fields id|prompt_text|prompt_wav|text (or 5 with a reference wav), "
                            f"got {len(fields)}")  # fmt: skip
            continue
        uid, prompt_text, prompt_wav, text = fields[:4]
        empty = [name for name, value in (("id", uid), ("text", text)) if not value]
        if empty:
            problems.append(f"line {line_no}: empty {' and '.join(empty)}")
            continue
        reference = fields[4] if len(fields) == 5 else None
        items.append(EvalItem(uid, text, prompt_text or None, _resolve(prompt_wav, path.parent), _resolve(reference, path.parent)))
    return _check(items, problems, path)


def read_jsonl_list(path: str | Path) -> list[EvalItem]:
    path = Path(path)
    items, problems = [], []
    for line_no, row, problem in iter_jsonl(path):
        if problem:
            problems.append(problem)
            continue
        missing = [k for k in ("id", "text") if not str(row.get(k) or "").strip()]
        if missing:
            problems.append(f"line {line_no}: missing {' and '.join(missing)}")
            continue
        items.append(
            EvalItem(
                str(row["id"]),
                row["text"],
                row.get("prompt_text") or None,
                _resolve(row.get("prompt_wav") or row.get("prompt_audio"), path.parent),
                _resolve(row.get("reference_wav"), path.parent),
            )
        )
    return _check(items, problems, path)


def read_eval_list(path: str | Path) -> list[EvalItem]:
    """A ``.jsonl`` list or a ``meta.lst`` (any other suffix); a folder means its ``meta.lst``."""
    path = Path(path)
    if path.is_dir():
        path = path / "meta.lst"
    if not path.is_file():
        raise ManifestError(f"{path}: no such benchmark list")
    return read_jsonl_list(path) if path.suffix == ".jsonl" else read_meta_lst(path)
