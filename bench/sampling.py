"""Intelligibility of the built-in voice under other sampling settings than the model's own.

Each setting speaks every sentence of a list with the built-in model and its default voice
(seeds 0 .. --seeds-1 per sentence, as `llasa tts --search none` speaks them); Whisper tiny.en
judges all of them (the strongest installed ASR, `speech_recognizer`; full window), and WER is
pooled over sentences and seeds. The first setting is the model's own (`llasa_sampling` in its
config.json); each other setting changes only the fields it names. Prints one JSON line with
each setting's WER, its ratio to the model's own (`wer_ratio`), its change against the model's
own in WER points, paired by sentence and seed, with the standard error of that change
(`points`, `points_se`), and its seconds of speech per sentence (a setting that speaks slower or
stops early shows there).

Lists: bench/sampling_sentences.txt, written for this bench, is the list settings are chosen on;
confirm a choice on lists it was not chosen on (`--sentences bench/peer_sentences.txt`,
`bench/default_search_sentences.txt`).

    python bench/sampling.py [--sentences FILE] [--seeds 2] [--settings "temperature=0.6;temperature=0.4,top_k=10"] [--quick]

--quick: two sentences, one seed, one other setting (checks that the bench runs; its figures mean little).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from llasa.audio import SAMPLE_RATE
from llasa.defaults import default_codec_path, default_model_path
from llasa.lm.sampling import SamplingParams
from llasa.search.cli import resolve_voice
from llasa.tts import Synthesizer, speech_recognizer
from llasa.verify.text import word_errors

SENTENCES = Path(__file__).with_name("sampling_sentences.txt")
# the settings compared on 2026-12-07 (docs/sampling.md)
SETTINGS = "temperature=0.6;temperature=0.45;temperature=0.3;temperature=0.6,top_k=10;temperature=0.45,top_k=10"


def parse_settings(text: str) -> list[dict]:
    """``"temperature=0.6;top_k=10,top_p=0.9"`` -> [{"temperature": 0.6}, {"top_k": 10, "top_p": 0.9}]."""
    known = SamplingParams.names()
    settings = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        setting = {}
        for field in part.split(","):
            name, _, value = field.partition("=")
            name = name.strip()
            if name not in known:
                raise SystemExit(f"unknown sampling field {name!r} in {part!r}; known: {', '.join(known)}")
            try:
                setting[name] = int(value) if name in ("top_k", "ras_window") else float(value)
            except ValueError:
                raise SystemExit(f"sampling field {name} needs a number, got {value!r} in {part!r}") from None
        settings.append(setting)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=Path, default=SENTENCES)
    parser.add_argument("--seeds", type=int, default=2, help="samples of each sentence per setting")
    parser.add_argument("--settings", default=SETTINGS, help="settings besides the model's own, ';'-separated")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="two sentences, one seed, one other setting")
    args = parser.parse_args()
    texts = [line.strip() for line in args.sentences.read_text(encoding="utf-8").splitlines() if line.strip()]
    settings = parse_settings(args.settings)
    if args.quick:
        texts, args.seeds, settings = texts[:2], 1, settings[:1]
    if args.threads:
        torch.set_num_threads(args.threads)
    model, codec = default_model_path(), default_codec_path()
    if not (model and codec):
        sys.exit("no built-in default model in this checkout")
    synth = Synthesizer.from_pretrained(model, codec)
    voice = resolve_voice(None, None, synth, model)
    judge = speech_recognizer()
    own = synth.sampling
    results, errors = [], []
    for setting in [{}] + settings:
        params = own.but(**setting)
        wavs = [synth.tts(text, voice, params=params, seed=seed, progress=False) for seed in range(args.seeds) for text in texts]
        counts = [word_errors(text, hyp) for text, hyp in zip(texts * args.seeds, judge.transcribe(wavs, "en"))]
        errors.append(np.array([e for e, _ in counts], dtype=float))
        words = sum(n for _, n in counts)
        results.append({
            "setting": setting or "model's own",
            "wer": round(float(errors[-1].sum()) / words, 4),
            "speech_s": round(float(np.mean([len(w) for w in wavs])) / SAMPLE_RATE, 2),
        })  # fmt: skip
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    base = results[0]["wer"]
    for result, its_errors in zip(results, errors):
        result["wer_ratio"] = round(result["wer"] / base, 3) if base else None
        # the change in WER points against the model's own, paired item by item (same sentence and
        # seed), with its standard error
        change = its_errors - errors[0]
        result["points"] = round(100 * float(change.sum()) / words, 2)
        result["points_se"] = round(100 * float(np.sqrt(len(change)) * change.std(ddof=1)) / words, 2) if len(change) > 1 else None
    print(json.dumps({"bench": "sampling", "sentences": str(args.sentences.name), "items": len(texts),
                      "seeds": args.seeds, "judge": getattr(judge, "name", type(judge).__name__),
                      "own": {k: getattr(own, k) for k in SamplingParams.names()}, "quick": args.quick,
                      "settings": results}))  # fmt: skip


if __name__ == "__main__":
    main()
