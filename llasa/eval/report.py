"""Per-item results as resumable JSONL, and the summary written next to them (JSON + markdown)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

RESULTS = "results.jsonl"


class ResultLog:
    """``results.jsonl`` in an output folder: one record per item, appended as soon as it is
    measured, so an interrupted run resumes where it stopped (items already there are skipped)."""

    def __init__(self, outdir: str | Path):
        self.path = Path(outdir) / RESULTS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict] = {}
        if self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for line_no, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    if line_no == len(lines):  # a run killed mid-write: that item is redone
                        continue
                    raise ValueError(f"{self.path}: line {line_no} is not JSON; delete it to resume") from None
                self._records[str(record["id"])] = record
            if lines and not self.path.read_text(encoding="utf-8").endswith("\n"):
                # drop the torn last line so the next append starts clean
                self.path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._records.values()))

    def __contains__(self, uid: str) -> bool:
        return uid in self._records

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._records[str(record["id"])] = record

    def records(self, ids: Iterable[str] | None = None) -> list[dict]:
        """The records of ``ids`` (in that order, those present), or all of them."""
        if ids is None:
            return list(self._records.values())
        return [self._records[i] for i in ids if i in self._records]


def mean(records: list[dict], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
    return sum(values) / len(values) if values else None


def as_original(result: dict, metric: str) -> dict:
    """An intelligibility result (``Metrics.intelligibility``) of the original audio, under the
    record keys that sit beside the synthesis's own: ``wer_original``, ``errors_original``, ``hyp_original``."""
    return {f"{metric}_original": result[metric], "errors_original": result["errors"], "hyp_original": result["hyp"]}


def pooled_rate(records: list[dict], errors: str = "errors", units: str = "ref_units") -> float | None:
    """Corpus-level error rate: all errors over all reference units."""
    total = sum(r[units] for r in records if r.get(units) is not None)
    return sum(r[errors] for r in records if r.get(errors) is not None) / total if total else None


def write_summary(outdir: str | Path, summary: dict, title: str) -> tuple[Path, Path]:
    """``summary.json`` and ``summary.md`` (a metric | value table) in ``outdir``."""
    outdir = Path(outdir)
    json_path = outdir / "summary.json"
    json_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    rows = [f"| {key} | {_cell(value)} |" for key, value in summary.items()]
    md_path = outdir / "summary.md"
    md_path.write_text(f"# {title}\n\n| metric | value |\n|---|---|\n" + "\n".join(rows) + "\n")
    return json_path, md_path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows) + "\n"


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
