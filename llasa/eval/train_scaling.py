"""Train-time scaling: eval loss (and WER) against training compute, for runs of one recipe at
several model sizes (``configs/scaling.sh``; the paper's Fig. 3 in miniature).

Compute is counted the usual way (Kaplan et al. 2020): ``6 * N * D`` FLOPs, with ``N`` the
non-embedding parameters of the model and ``D`` the real (non-padding) tokens trained on, which
``llasa train lm`` logs. Each run contributes its eval-loss curve (every ``eval_every`` steps)
and, when an evaluation list is given, the WER of its latest checkpoint at that checkpoint's
compute.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from llasa.extras import pyplot
from llasa.train.lm import LOG_FILE

EMBEDDING = re.compile(r"(^|\.)(embed_tokens|lm_head)\.")


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest ``checkpoint-N`` (or ``final``) of a ``llasa train lm`` output directory."""
    run = Path(run_dir)
    found = [p for p in run.glob("checkpoint-*") if p.name[11:].isdigit() and (p / "model.safetensors").is_file()]
    found.sort(key=lambda p: int(p.name[11:]))
    if not found and (run / "final" / "model.safetensors").is_file():
        return run / "final"
    if not found:
        raise FileNotFoundError(f"{run}: no checkpoint-N/model.safetensors; is this a `llasa train lm` output directory?")
    return found[-1]


def non_embedding_parameters(checkpoint: str | Path) -> int:
    """Parameters outside the token embedding and output head, read from the safetensors header."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(Path(checkpoint) / "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            if not EMBEDDING.search(name):
                shape = f.get_slice(name).get_shape()
                size = 1
                for dim in shape:
                    size *= dim
                total += size
    return total


def run_curve(run_dir: str | Path, label: str | None = None) -> dict:
    """One run's size and eval-loss curve: ``{"run", "label", "params", "checkpoint", "points": [...]}``."""
    run = Path(run_dir)
    log_path = run / LOG_FILE
    if not log_path.is_file():
        raise FileNotFoundError(f"{run}: no {LOG_FILE}; is this a `llasa train lm` output directory?")
    checkpoint = latest_checkpoint(run)
    params = non_embedding_parameters(checkpoint)
    if label is None:
        config_path = run / "train_config.json"
        init = json.loads(config_path.read_text()).get("init", "") if config_path.is_file() else ""
        label = init.split(":", 1)[1] if init.startswith("preset:") else run.name
    points, tokens = [], 0
    for number, line in enumerate(log_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{log_path}, line {number}: not a JSON record ({exc})") from None
        tokens = record.get("tokens", tokens)  # eval steps are logging steps too; else the last count
        if record.get("eval_loss") is not None:
            points.append({"step": record["step"], "tokens": tokens, "flops": 6.0 * params * tokens,
                           "eval_loss": record["eval_loss"], "eval_text_gain": record.get("eval_text_gain")})  # fmt: skip
    if not points:
        raise ValueError(f"{log_path}: no eval_loss records yet (the run logs one every eval_every steps)")
    step = json.loads((checkpoint / "progress.json").read_text())["step"] if (checkpoint / "progress.json").is_file() else None
    return {"run": str(run), "label": label, "params": params, "checkpoint": str(checkpoint), "checkpoint_step": step,
            "points": points}  # fmt: skip


def checkpoint_flops(curve: dict) -> float:
    """Compute spent up to the run's latest checkpoint (from the logged point at or before it)."""
    step = curve.get("checkpoint_step")
    upto = [p for p in curve["points"] if step is None or p["step"] <= step]
    return (upto or curve["points"])[-1]["flops"]


def plot_train_scaling(curves: Sequence[dict], path: str | Path) -> Path:
    """Against training FLOPs, a line per size: eval loss, text gain (when logged; see
    ``LMTrainConfig.eval_text_gain``) and the WER of each latest checkpoint (when measured)."""
    plt = pyplot("plotting")

    curves = sorted(curves, key=lambda c: c["params"])
    panels = [("eval_loss", "eval loss (nats / speech token)")]
    if any(p.get("eval_text_gain") is not None for c in curves for p in c["points"]):
        panels.append(("eval_text_gain", "text gain (nats / speech token)"))
    if any(c.get("wer") is not None for c in curves):
        panels.append(("wer", "WER (%)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (key, ylabel) in zip(axes[0], panels):
        for curve in curves:
            label = f"{curve['label']} ({curve['params'] / 1e6:.2g}M)"
            if key == "wer":
                if curve.get("wer") is not None:
                    ax.scatter([checkpoint_flops(curve)], [curve["wer"]], label=label)
                continue
            points = [p for p in curve["points"] if p.get(key) is not None]
            ax.plot([p["flops"] for p in points], [p[key] for p in points], marker="o", markersize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("training compute (FLOPs, 6ND)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def evaluate_train_scaling(
    run_dirs: Sequence[str | Path],
    outdir: str | Path,
    *,
    items=None,
    codec=None,
    metrics=None,
    params=None,
    seed: int = 0,
    device: str = "cpu",
) -> list[dict]:
    """Curves of every run, WER of each run's latest checkpoint on ``items`` (when given), the
    plot ``train_scaling.png`` and ``train_scaling.json`` in ``outdir``. Returns the curves."""
    from llasa.eval.report import markdown_table

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    curves = [run_curve(r) for r in run_dirs]
    labels = [c["label"] for c in curves]
    if len(set(labels)) != len(labels):  # two runs of one preset: tell them apart by folder
        for curve in curves:
            curve["label"] = Path(curve["run"]).name
    if items:
        from llasa.eval.tts import evaluate_tts
        from llasa.lm.sampling import SamplingParams
        from llasa.tts import Synthesizer

        for curve in curves:
            synth = Synthesizer.from_pretrained(curve["checkpoint"], codec, device=device)
            summary = evaluate_tts(synth, items, out / curve["label"], metrics=metrics, params=params or SamplingParams(),
                                   seed=seed)  # fmt: skip
            curve["wer"], curve["sim"] = summary.get("wer"), summary.get("sim")
            curve["items"], curve["failed"] = summary["items"], summary["failed"]
    (out / "train_scaling.json").write_text(json.dumps(curves, indent=2))
    plot_train_scaling(curves, out / "train_scaling.png")
    rows = [{"size": c["label"], "params (non-emb.)": c["params"], "steps": c["points"][-1]["step"],
             "FLOPs": f"{c['points'][-1]['flops']:.3g}", "final eval loss": round(c["points"][-1]["eval_loss"], 4),
             "text gain": None if c["points"][-1]["eval_text_gain"] is None else round(c["points"][-1]["eval_text_gain"], 3),
             "WER": None if c.get("wer") is None else round(c["wer"], 1)} for c in curves]  # fmt: skip
    (out / "summary.md").write_text("# Train-time scaling\n\n" + markdown_table(rows, list(rows[0])) + "\n")
    return curves
