"""`llasa eval scaling`: quality against inference compute, one curve per search strategy
(the paper's inference-time scaling plots).

A point is one strategy at one size: best-of-N with N = size; beam search with B x M = size rows
in flight (M = ``expand``, or size itself when smaller; B = size / M). A point's compute is the
mean number of speech tokens sampled per item. Each beam point is a full `eval tts` run in its
own folder (so points resume independently). Best-of-N points are nested: candidate r of an
item is the same whatever N (each row has its own random stream), so only the largest N is run
(folder ``best-of-n-<N>``) and every smaller point is read off its candidates
(``Searcher.best_of_first``): half the sampling of separate runs, and the points are paired
(same candidates), so the curve's steps are not sampling noise. A read-off point has no
measured real-time factor (``rtf`` is empty; ``derived_from`` names N). Points go to
``scaling.json`` and are plotted to ``scaling.png``, one panel per metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from llasa.eval.lists import EvalItem
from llasa.eval.metrics import Metrics, judges
from llasa.eval.report import ResultLog, markdown_table
from llasa.eval.tts import evaluate_tts, summarize_tts
from llasa.extras import pyplot
from llasa.lm.sampling import SamplingParams
from llasa.search import Searcher


def searcher_for(strategy: str, size: int, *, expand: int = 2, step_tokens: int = 50, verifiers: str | None = None,
                 verifier_options: dict | None = None, verifier_cache: dict | None = None) -> Searcher:  # fmt: skip
    """The searcher of one point: ``size`` candidates (best-of-N) or ``size`` rows in flight (beam)."""
    shared = dict(verifiers=verifiers, verifier_options=verifier_options, verifier_cache=verifier_cache)
    if strategy == "best-of-n":
        return Searcher(strategy, n=size, **shared)
    expand = min(expand, size)
    if size % expand:
        raise ValueError(f"size {size} is not a multiple of --expand {expand}: beam search keeps size / expand beams")
    return Searcher(strategy, beam_width=size // expand, expand=expand, step_tokens=step_tokens, **shared)


def evaluate_scaling(
    synth,
    items: list[EvalItem],
    outdir: str | Path,
    *,
    metrics: Metrics,
    strategies: Sequence[str] = ("best-of-n", "prm-sim+orm-wer"),
    sizes: Sequence[int] = (1, 2, 4, 8),
    expand: int = 2,
    step_tokens: int = 50,
    verifiers: str | None = None,
    wer_options: dict | None = None,
    params: SamplingParams | None = None,  # default: the model's own sampling
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Run every (strategy, size) point; returns the points (also in ``scaling.json``, ``scaling.md``, ``scaling.png``).

    ``verifiers``: the search verifiers of best-of-n and beam (default wer); the named recipe fixes
    its own. ``wer_options``: how the searches' wer verifier is built (``model``, ``asr``; default:
    the judge's ASR, which is then the verifier: the points say so). The searches share the
    metric's other models (:meth:`Metrics.search_cache`), so each loads once.
    """
    outdir = Path(outdir)
    sizes = sorted(set(sizes))  # each point once, smallest first
    cache = metrics.search_cache()
    # all built first, so that a bad size fails before any work; best-of-N runs at its largest
    # size only, the smaller ones are read off its candidates
    searchers = [(s, size, searcher_for(s, size, expand=expand, step_tokens=step_tokens,
                                        verifiers=None if s == "prm-sim+orm-wer" else verifiers,
                                        verifier_options={"wer": wer_options or {}}, verifier_cache=cache))
                 for s in strategies for size in (sizes[-1:] if s == "best-of-n" else sizes)]  # fmt: skip
    points = []
    for strategy, size, searcher in searchers:
        nested = [] if searcher.beam else sizes[:-1]
        folder = outdir / f"{strategy}-{size}"
        summary = evaluate_tts(synth, items, folder, metrics=metrics, searcher=searcher, params=params, seed=seed,
                               nested=nested, progress=progress)  # fmt: skip
        for k in nested:
            points.append({"strategy": strategy, "size": k, "beam_width": None, "expand": None,
                           **_nested_summary(folder, items, k, metrics.metric), **judges(metrics, searcher),
                           "derived_from": size})  # fmt: skip
        points.append({"strategy": strategy, "size": size, "beam_width": searcher.beam_width if searcher.beam else None,
                       "expand": searcher.expand if searcher.beam else None, **summary})  # fmt: skip
    (outdir / "scaling.json").write_text(json.dumps(points, indent=1))
    columns = ["strategy", "size", "tokens_per_item", metrics.metric, "sim", "dnsmos", "rtf", "failed", "verifier_asr",
               "judge_asr", "judge_is_verifier"]  # fmt: skip
    (outdir / "scaling.md").write_text("# Inference-time scaling\n\n" + markdown_table(points, columns))
    plot_scaling(points, outdir / "scaling.png", metrics=[metrics.metric, "sim"] + (["dnsmos"] if metrics.dnsmos else []))
    return points


def _nested_summary(folder: Path, items: list[EvalItem], k: int, metric: str) -> dict:
    """The summary of best-of-k read off the records of a best-of-N run in ``folder``."""
    view = []
    for record in ResultLog(folder).records([item.id for item in items]):
        if "error" in record:
            view.append(record)
            continue
        if str(k) not in record.get("nested", {}):
            raise ValueError(f"{folder}: item {record['id']} was evaluated without best-of-{k} read off its candidates "
                             "(an earlier run with other sizes): use a new output folder")  # fmt: skip
        sub = record["nested"][str(k)]
        view.append({**record, **{key: value for key, value in sub.items() if key not in ("chosen", "tokens")},
                     "rtf": None, "search": {"tokens": sub["tokens"]}})  # fmt: skip
    summary = summarize_tts(view, metric)
    summary["strategy"] = "best-of-n"
    return summary


def plot_scaling(points: list[dict], path: str | Path, *, metrics: Sequence[str] = ("wer", "sim")) -> Path:
    """One panel per metric: metric against mean tokens sampled per item (log scale), a line per strategy."""
    plt = pyplot("plotting")

    labels = {"wer": "WER (%)", "cer": "CER (%)", "sim": "speaker similarity", "dnsmos": "DNSMOS"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for strategy in dict.fromkeys(p["strategy"] for p in points):
            curve = [p for p in points if p["strategy"] == strategy and p.get(metric) is not None]
            if not curve:
                continue
            xs, ys = [p["tokens_per_item"] for p in curve], [p[metric] for p in curve]
            ax.plot(xs, ys, marker="o", label=strategy)
            for p, x, y in zip(curve, xs, ys):
                ax.annotate(str(p["size"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("speech tokens sampled per item")
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
