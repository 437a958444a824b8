"""`llasa eval codec`: resynthesis quality of a codec on a manifest of recordings (paper Table 1).

Each clip is encoded and decoded; the resynthesis is measured against the original: WER of
both (so "resynthesis WER within X points of the original" reads off the summary), speaker
similarity to the original, STOI, PESQ wide- and narrow-band, and optionally DNSMOS of both.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from llasa import audio as audio_io
from llasa.codec.refine import DEFAULT_LR
from llasa.eval.metrics import Metrics, pesq, stoi
from llasa.eval.report import ResultLog, as_original, mean, pooled_rate, write_summary


def evaluate_codec(
    codec, items: list[dict], outdir: str | Path, *, metrics: Metrics, refine_steps: int = 0, progress: bool = True
) -> dict:
    """``items``: manifest records with ``id``, ``audio`` and ``text`` (``llasa.data.manifest.load_corpus``).
    Writes ``wavs/<id>.wav`` (the resynthesis), ``results.jsonl`` (resumable) and the summary.
    ``refine_steps``: analysis-by-synthesis encoding (`Codec.encode`, with the codec's
    ``refine_lr`` and ``refine_cepstral``); a folder holds one setting, recorded with each clip."""
    outdir = Path(outdir)
    log = ResultLog(outdir)
    setting = _encoding(refine_steps, getattr(codec, "refine_lr", DEFAULT_LR), getattr(codec, "refine_cepstral", 0.0))
    for record in log.records():
        # records from before the learning rate and weight were kept were all made at these defaults
        recorded = _encoding(record.get("refine_steps", 0), record.get("refine_lr", DEFAULT_LR), record.get("refine_cepstral", 0.0))
        if recorded != setting:
            raise ValueError(
                f"{outdir}: its results were measured with {_describe(recorded)}, not {_describe(setting)}; "
                "give another output folder (-o) or the same setting"
            )
    todo = [item for item in items if item["id"] not in log]
    for item in tqdm(todo, desc="eval codec", unit="clip", disable=not progress):
        log.append(_evaluate_clip(codec, item, outdir, metrics, setting))
    summary = summarize_codec(log.records([item["id"] for item in items]), metrics.metric)
    summary.update(setting)
    write_summary(outdir, summary, f"Codec resynthesis: {outdir.name}")
    return summary


def _encoding(refine_steps: int, refine_lr: float, refine_cepstral: float) -> dict:
    """How clips were encoded: the search's steps and, when there is a search, its settings."""
    if not refine_steps:
        return {"refine_steps": 0}
    return {"refine_steps": refine_steps, "refine_lr": refine_lr, "refine_cepstral": refine_cepstral}


def _describe(setting: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in setting.items())


def _evaluate_clip(codec, item: dict, outdir: Path, metrics: Metrics, setting: dict) -> dict:
    """The clip's record, encoded as ``setting`` says (`_encoding`); an unreadable clip is recorded
    with its error (and counted as failed)."""
    try:
        original = audio_io.load(item["audio"], codec.sample_rate)
    except ValueError as exc:
        return {"id": item["id"], "text": item["text"], **setting, "error": str(exc)}
    resynth = codec.decode(codec.encode(original, refine_steps=setting["refine_steps"]))[: len(original)]  # decoding pads to whole frames
    path = audio_io.write(outdir / "wavs" / f"{item['id']}.wav", resynth, codec.sample_rate)
    before, after = metrics.intelligibility(original, item["text"]), metrics.intelligibility(resynth, item["text"])
    m = metrics.metric
    record = {
        "id": item["id"],
        "text": item["text"],
        "wav": str(path.relative_to(outdir)),
        "seconds": round(len(original) / codec.sample_rate, 3),
        **setting,
        m: after[m],
        "errors": after["errors"],
        "hyp": after["hyp"],
        **as_original(before, m),
        "ref_units": after["ref_units"],
        "sim": metrics.similarity(resynth, original),
        "stoi": stoi(original, resynth),
        "pesq_wb": pesq(original, resynth, "wb"),
        "pesq_nb": pesq(original, resynth, "nb"),
    }
    if metrics.dnsmos:
        record["dnsmos"] = metrics.quality(resynth)
        record["dnsmos_original"] = metrics.quality(original)
    return record


def summarize_codec(records: list[dict], metric: str = "wer") -> dict:
    ok = [r for r in records if "error" not in r]

    def percent(value):
        return None if value is None else 100 * value

    summary = {
        "items": len(records),
        "failed": len(records) - len(ok),
        f"{metric}_original": percent(mean(ok, f"{metric}_original")),
        metric: percent(mean(ok, metric)),
        f"{metric}_corpus_original": percent(pooled_rate(ok, "errors_original")),
        f"{metric}_corpus": percent(pooled_rate(ok)),
        "sim": mean(ok, "sim"),
        "stoi": mean(ok, "stoi"),
        "pesq_wb": mean(ok, "pesq_wb"),
        "pesq_nb": mean(ok, "pesq_nb"),
        "dnsmos_original": mean(ok, "dnsmos_original"),
        "dnsmos": mean(ok, "dnsmos"),
        "audio_seconds": sum(r["seconds"] for r in ok),
    }
    if summary[metric] is not None:
        summary[f"{metric}_increase"] = summary[metric] - summary[f"{metric}_original"]
    return summary
