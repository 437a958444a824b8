"""`llasa eval tts`: synthesise a benchmark list and measure it the Seed-TTS-eval way.

For each item: clone the prompt voice (if any), speak the text (plainly or with a search
strategy), write ``wavs/<id>.wav``, and measure WER/CER against the text, speaker similarity to
the original prompt clip (sim-o), optionally DNSMOS, and the real-time factor (synthesis
seconds / audio seconds; voice encoding excluded, it is done once per voice). Where an item names
its ground-truth recording (``reference_wav``), that is transcribed too, so "WER within X points
of the original audio" reads off the summary (``wer_original``, ``wer_increase``). Records go to
``results.jsonl`` as they are made, so a run resumes where it stopped. WER is averaged per
utterance as in seed-tts-eval; the pooled (corpus) rate is reported too.

The summary names the ASR that judged (``judge_asr``) and the one a search verified with
(``verifier_asr``), and flags a judge that is the search's own verifier (``judge_is_verifier``;
``sim_judge_is_verifier`` for the speaker model): a gain it measures is the verifier's own score.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from llasa import audio as audio_io
from llasa.eval.lists import EvalItem
from llasa.eval.metrics import Metrics, judges
from llasa.eval.report import ResultLog, as_original, mean, pooled_rate, write_summary
from llasa.lm.sampling import SamplingParams, check_seed, offset_seed


def evaluate_tts(
    synth,
    items: list[EvalItem],
    outdir: str | Path,
    *,
    metrics: Metrics,
    searcher=None,
    params: SamplingParams | None = None,
    seed: int = 0,
    nested: Sequence[int] = (),
    progress: bool = True,
) -> dict:
    """Evaluate ``synth`` (a Synthesizer) on ``items``; returns the summary (also written to ``outdir``).

    Item i is sampled with seed ``seed + i`` and ``params`` (default: the model's own sampling).
    An item that cannot be spoken (text too long, a prompt clip too short) is recorded with its
    error and counted as failed. ``nested`` (with a best-of-N ``searcher``): sizes k < N also
    measured on what best-of-k would have chosen among the same candidates
    (``record["nested"][k]``, see ``Searcher.best_of_first``).
    """
    if nested and (searcher is None or searcher.beam):
        raise ValueError("nested sizes are read off a best-of-N search: pass a best-of-n searcher")
    if searcher is not None and searcher.voice_verifiers:
        voiceless = [item.id for item in items if item.prompt_wav is None]
        if voiceless:
            raise ValueError(f"verifier(s) {', '.join(searcher.voice_verifiers)} need a voice prompt, and "
                             f"{len(voiceless)} item(s) have none (first: {voiceless[0]})")  # fmt: skip
    seed = check_seed(seed)
    params = synth.sampling if params is None else params
    outdir = Path(outdir)
    log = ResultLog(outdir)
    todo = [(i, item) for i, item in enumerate(items) if item.id not in log]
    for i, item in tqdm(todo, desc="eval tts", unit="item", disable=not progress):
        log.append(_evaluate_item(synth, item, outdir, metrics, searcher, params, offset_seed(seed, i), nested))
    summary = summarize_tts(log.records([item.id for item in items]), metrics.metric)
    summary["strategy"] = searcher.strategy if searcher is not None else "sample"
    summary["sampling"] = ", ".join(f"{k} {v}" for k, v in asdict(params).items() if v is not None)
    summary.update(judges(metrics, searcher))
    write_summary(outdir, summary, f"TTS evaluation: {outdir.name}")
    return summary


def _evaluate_item(synth, item: EvalItem, outdir: Path, metrics: Metrics, searcher, params: SamplingParams, seed: int,
                   nested: Sequence[int] = ()) -> dict:  # fmt: skip
    """The item's record; an item that cannot be spoken is recorded with its error (and counted as failed)."""
    record = {"id": item.id, "text": item.text}
    try:
        voice = prompt = None
        if item.prompt_wav is not None:
            prompt = audio_io.load(item.prompt_wav, synth.sample_rate)
            voice = synth.voice(prompt, item.prompt_text, name=item.id, source_rate=synth.sample_rate)
        start = time.perf_counter()
        if searcher is None:
            wav = synth.tts(item.text, voice, params=params, seed=seed, progress=False)
        else:
            found = searcher(synth, item.text, voice, prompt_audio=prompt, language=metrics.language, params=params, seed=seed)
            wav = found.audio
            record["search"] = {"chosen": [c.chosen for c in found.chunks], "candidates": [len(c.candidates) for c in found.chunks],
                                "tokens": found.spent.tokens, "verifier_clips": found.spent.verifier_clips}  # fmt: skip
        synth_seconds = time.perf_counter() - start
    except ValueError as exc:
        return {**record, "error": str(exc)}
    seconds = len(wav) / synth.sample_rate
    path = audio_io.write(outdir / "wavs" / f"{item.id}.wav", wav, synth.sample_rate)
    record.update(wav=str(path.relative_to(outdir)), seconds=round(seconds, 3), synth_seconds=round(synth_seconds, 3),
                  rtf=round(synth_seconds / seconds, 4) if seconds else None)  # fmt: skip
    measured = _measure(metrics, wav, item.text, prompt)
    record.update(measured)
    if item.reference_wav is not None:
        record.update(as_original(metrics.file_intelligibility(item.reference_wav, item.text), metrics.metric))
    if nested:
        record["nested"] = {}
        by_choice = {tuple(record["search"]["chosen"]): measured}  # the same choice is the same audio: measured once
        for k in sorted(set(nested)):
            sub = searcher.best_of_first(found, k)
            if tuple(sub.chosen) not in by_choice:
                by_choice[tuple(sub.chosen)] = _measure(metrics, sub.audio, item.text, prompt)
            record["nested"][str(k)] = {"chosen": sub.chosen, "tokens": sub.tokens,
                                        "seconds": round(len(sub.audio) / synth.sample_rate, 3),
                                        **by_choice[tuple(sub.chosen)]}  # fmt: skip
    return record


def _measure(metrics: Metrics, wav, text: str, prompt) -> dict:
    """Intelligibility, similarity to the prompt (when there is one) and DNSMOS (when asked)."""
    out = metrics.intelligibility(wav, text)
    if prompt is not None:
        out["sim"] = metrics.similarity(wav, prompt)
    if metrics.dnsmos:
        out["dnsmos"] = metrics.quality(wav)
    return out


def summarize_tts(records: list[dict], metric: str = "wer") -> dict:
    """Means over the spoken items; error rates in percent."""
    ok = [r for r in records if "error" not in r]
    rate, pooled = mean(ok, metric), pooled_rate(ok)
    summary = {
        "items": len(records),
        "failed": len(records) - len(ok),
        metric: None if rate is None else 100 * rate,
        f"{metric}_corpus": None if pooled is None else 100 * pooled,
        "sim": mean(ok, "sim"),
        "dnsmos": mean(ok, "dnsmos"),
        "rtf": mean(ok, "rtf"),
        "audio_seconds": sum(r["seconds"] for r in ok),
    }
    originals = [r for r in ok if f"{metric}_original" in r]
    if originals:  # the ground truth of the same items (a list with reference recordings)
        summary[f"{metric}_original"] = 100 * mean(originals, f"{metric}_original")
        summary[f"{metric}_corpus_original"] = 100 * pooled_rate(originals, "errors_original")
        summary[f"{metric}_increase"] = 100 * mean(originals, metric) - summary[f"{metric}_original"]
    tokens = [r["search"]["tokens"] for r in ok if "search" in r]
    if tokens:
        summary["tokens_per_item"] = sum(tokens) / len(tokens)
    return summary
