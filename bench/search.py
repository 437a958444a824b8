"""Cost of verifier-guided search against a single sample, on the same model in one process.

Model: a random-weight LM preset (default "mini", the built-in default size) over the tiny
codec (256 codes); every chunk is capped at --tokens speech tokens. Verifier: wer (PocketSphinx).
Prints one JSON line:

  best_of_8_cost_ratio       wall time of best-of-8 with the wer verifier (sample 8, decode 8, score 8)
                             over one plain sample (sample 1, decode 1)
  sampling_8_ratio           the LM part alone: 8 rows after one prefill over 1 row
  verifier_s_per_candidate   wer verifier seconds per candidate (PocketSphinx on the candidate's audio)
  codec_s_per_candidate      codec decode seconds per candidate
  beam_2x4_cost_ratio        beam search (B=2, M=4, a wer PRM every --step-tokens, wer ORM) over one sample
  beam_verifier_share        share of the beam search's time spent in verifiers

Usage: python bench/search.py [--preset mini] [--tokens 100] [--step-tokens 25] [--threads 1] [--quick]

--quick: the tiny preset, 20 tokens a candidate, one run each (checks that the bench runs; its
figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from llasa.codec import Codec
from llasa.lm.model import build_model
from llasa.lm.vocab import build_tokenizer
from llasa.search import Searcher
from llasa.tts import Synthesizer

TEXT = "The birch canoe slid on the smooth planks."


def best_of(repeats: int, fn):
    """(shortest wall time, the result of that run)."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
        if best is None or elapsed < best[0]:
            best = (elapsed, out)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--tokens", type=int, default=100, help="speech tokens per candidate (cap)")
    parser.add_argument("--step-tokens", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny preset, short candidates: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(preset="tiny", tokens=20, step_tokens=10, repeats=1)
        args = parser.parse_args()
    torch.set_num_threads(args.threads)

    codec = Codec.from_config("tiny", seed=0)
    tokenizer = build_tokenizer(None, codec.codebook_size)
    synth = Synthesizer(build_model(args.preset, tokenizer, seed=0), tokenizer, codec)
    synth.max_new_tokens = lambda text: args.tokens  # a fixed length, so every run does the same work

    def single():
        codes = synth.decoder(TEXT, n=1, seed=0).run()
        return synth.decode(codes)

    shared = {}  # one PocketSphinx for both searchers
    best_of_8 = Searcher("best-of-n", verifiers="wer", n=8, verifier_cache=shared)
    beam = Searcher("beam", verifiers="wer", beam_width=2, expand=4, step_tokens=args.step_tokens, verifier_cache=shared)
    best_of_8(synth, TEXT, seed=0)  # warm-up: loads PocketSphinx, fills caches

    single_s, _ = best_of(args.repeats, single)
    lm_single_s, _ = best_of(args.repeats, lambda: synth.decoder(TEXT, n=1, seed=0).run())
    lm_8_s, _ = best_of(args.repeats, lambda: synth.decoder(TEXT, n=8, seed=0).run())
    bo8_s, bo8 = best_of(args.repeats, lambda: best_of_8(synth, TEXT, seed=0))
    beam_s, beamed = best_of(args.repeats, lambda: beam(synth, TEXT, seed=0))

    candidates = bo8.spent.candidates
    print(json.dumps({
        "preset": args.preset,
        "codec": "tiny",
        "tokens": args.tokens,
        "threads": args.threads,
        "quick": args.quick,
        "single_sample_s": round(single_s, 4),
        "best_of_8_s": round(bo8_s, 4),
        "best_of_8_cost_ratio": round(bo8_s / single_s, 3),
        "sampling_8_ratio": round(lm_8_s / lm_single_s, 3),
        "verifier_s_per_candidate": round(bo8.spent.verifier_seconds / candidates, 4),
        "codec_s_per_candidate": round(bo8.spent.codec_seconds / candidates, 4),
        "candidate_audio_s": round(bo8.spent.verifier_audio_seconds / candidates, 3),
        "beam_2x4_cost_ratio": round(beam_s / single_s, 3),
        "beam_tokens": beamed.spent.tokens,
        "beam_verifier_clips": beamed.spent.verifier_clips,
        "beam_verifier_share": round(beamed.spent.verifier_seconds / beam_s, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
