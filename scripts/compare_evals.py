"""Paired difference of a metric between two sets of `llasa eval tts` runs, item by item.

    python scripts/compare_evals.py --a runs/sw_base_s0 runs/sw_base_s100 --b runs/sw_t06_s0 runs/sw_t06_s100

The i-th folder of --a is paired with the i-th of --b (same list, same seed), records by item
id. Prints one JSON line: the two means, their difference (b - a) and its standard error over
the pairs, in points. Pairing removes the spread between sentences, which dominates a 40-item
list: this is what decides whether a change beats the noise.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def records(folder: Path, metric: str) -> dict[str, float]:
    path = folder / "results.jsonl"
    if not path.is_file():
        raise SystemExit(f"{folder}: no results.jsonl (not an `llasa eval tts` output folder)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: float(r[metric]) for r in rows if metric in r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", nargs="+", required=True, type=Path, help="baseline runs")
    parser.add_argument("--b", nargs="+", required=True, type=Path, help="runs to compare, in the same seed order")
    parser.add_argument("--metric", default="wer", help="a per-item field of results.jsonl (default wer)")
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        parser.error(f"--a has {len(args.a)} folders and --b {len(args.b)}: pair them one to one")
    pairs = []
    for fa, fb in zip(args.a, args.b):
        ra, rb = records(fa, args.metric), records(fb, args.metric)
        pairs += [(ra[i], rb[i]) for i in sorted(set(ra) & set(rb))]
    if len(pairs) < 2:
        raise SystemExit("fewer than two paired items")
    diffs = [100 * (b - a) for a, b in pairs]
    mean = sum(diffs) / len(diffs)
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    print(json.dumps({"metric": args.metric, "pairs": len(pairs), "a": round(100 * sum(a for a, _ in pairs) / len(pairs), 2),
                      "b": round(100 * sum(b for _, b in pairs) / len(pairs), 2), "b_minus_a": round(mean, 2),
                      "se": round(se, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
