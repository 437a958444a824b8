"""Cost of verifier-guided search against a single sample, on the same model in one process.

Model: the built-in model and its default voice (or --model DIR --codec DIR), speaking three
sentences, each row ending where the model ends it; or, with --model random, a random-weight LM
preset over the tiny codec whose rows are capped at --tokens speech tokens (a random model speaks
noise, so the screen rejects every candidate before the ASR: only the ``unscreened`` figures then
show the cost of transcribing). Verifier: wer as a search builds it (Whisper tiny.en through
faster-whisper in its fitted window when installed, else PocketSphinx; --asr names one), with its
screen. Times are summed over the sentences. Prints one JSON line:

  best_of_8_cost_ratio       wall time of best-of-8 with the wer verifier (sample 8, decode 8, score 8)
                             over one plain sample (sample 1, decode 1)
  best_of_8_lm_s, _codec_s, _verifier_s
                             its stages: sampling (this thread), decoding and scoring (the judging
                             thread, overlapping the sampling)
  best_of_8_wait_s           the judging not hidden behind sampling (the sampling thread waiting)
  screened_out               candidates the screen kept from the ASR
  best_of_8_unscreened_cost_ratio, unscreened_verifier_s_per_candidate
                             the same search with the screen off: every candidate transcribed
  sampling_8_ratio           the LM part alone: 8 rows after one prefill over 1 row
  verifier_s_per_candidate   wer verifier seconds per candidate (screen, and ASR of what passes)
  codec_s_per_candidate      codec decode seconds per candidate
  beam_2x4_cost_ratio        beam search (B=2, M=4, a wer PRM every --step-tokens, wer ORM) over one sample
  beam_verifier_share        share of the beam search's time spent in verifiers

Usage: python bench/search.py [--model builtin|random|DIR] [--codec DIR] [--preset mini] [--tokens 100]
                              [--step-tokens 25] [--threads 1] [--asr faster-whisper|pocketsphinx] [--quick]

--quick: a random tiny preset, 20 tokens a candidate, one sentence, one run each (checks that the
bench runs; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from llasa.codec import Codec
from llasa.defaults import default_codec_path, default_model_path
from llasa.lm.model import build_model
from llasa.lm.vocab import build_tokenizer
from llasa.search import Searcher, Spent
from llasa.search.cli import resolve_voice
from llasa.tts import Synthesizer
from llasa.verify import get_verifier

TEXTS = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
         "It is easy to tell the depth of a well."]  # Harvard sentences, in none of the corpora


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
    parser.add_argument("--asr", choices=["faster-whisper", "pocketsphinx"],
                        help="the wer verifier's ASR (default: its own choice)")
    parser.add_argument("--model", default="builtin",
                        help="a trained model directory, 'builtin' (default), or 'random' (a random --preset)")
    parser.add_argument("--codec", help="the codec directory of --model DIR")
    parser.add_argument("--quick", action="store_true", help="tiny preset, short candidates: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(model="random", preset="tiny", tokens=20, step_tokens=10, repeats=1)
        args = parser.parse_args()
    torch.set_num_threads(args.threads)

    voice = None
    texts = TEXTS[:1] if args.quick else TEXTS
    if args.model != "random":
        builtin = args.model == "builtin"
        model, codec = (default_model_path(), default_codec_path()) if builtin else (args.model, args.codec)
        if not (model and codec):
            parser.error("--model DIR needs --codec DIR (and 'builtin' a checkout with the built-in model)")
        synth = Synthesizer.from_pretrained(model, codec)
        voice = resolve_voice(None, None, synth, model)
    else:
        codec = Codec.from_config("tiny", seed=0)
        tokenizer = build_tokenizer(None, codec.codebook_size)
        synth = Synthesizer(build_model(args.preset, tokenizer, seed=0), tokenizer, codec)
        synth.max_new_tokens = lambda text: args.tokens  # a fixed length, so every run does the same work

    def single():
        for text in texts:
            synth.decode(synth.decoder(text, voice, n=1, seed=0).run(), voice)

    def sample(n):
        for text in texts:
            synth.decoder(text, voice, n=n, seed=0).run()

    def spent(searcher):
        """Every sentence searched; the Spent of all of them."""
        total = Spent()
        for text in texts:
            part = searcher(synth, text, voice, seed=0).spent
            for key, value in vars(part).items():
                setattr(total, key, getattr(total, key) + value)
        return total

    wer = get_verifier("wer", asr=args.asr)
    unscreened = get_verifier("wer", asr=args.asr, screen=False)
    shared = {"wer": wer}  # one ASR for both searchers
    best_of_8 = Searcher("best-of-n", verifiers="wer", n=8, verifier_cache=shared)
    best_of_8_unscreened = Searcher("best-of-n", verifiers=unscreened, n=8)
    beam = Searcher("beam", verifiers="wer", beam_width=2, expand=4, step_tokens=args.step_tokens, verifier_cache=shared)
    best_of_8(synth, texts[0], voice, seed=0)  # warm-up: loads the ASR and the VAD, fills caches
    unscreened._asr = wer.asr

    single_s, _ = best_of(args.repeats, single)
    lm_single_s, _ = best_of(args.repeats, lambda: sample(1))
    lm_8_s, _ = best_of(args.repeats, lambda: sample(8))
    bo8_s, bo8 = best_of(args.repeats, lambda: spent(best_of_8))
    open_s, opened = best_of(args.repeats, lambda: spent(best_of_8_unscreened))
    beam_s, beamed = best_of(args.repeats, lambda: spent(beam))

    candidates = bo8.candidates
    print(json.dumps({
        "model": args.preset if args.model == "random" else args.model,
        "codec": {"builtin": "builtin", "random": "tiny"}.get(args.model, args.codec),
        "sentences": len(texts),
        "tokens": args.tokens if args.model == "random" else None,
        "threads": args.threads,
        "quick": args.quick,
        "asr": wer.asr_name,
        "single_sample_s": round(single_s, 4),
        "best_of_8_s": round(bo8_s, 4),
        "best_of_8_cost_ratio": round(bo8_s / single_s, 3),
        "best_of_8_lm_s": round(bo8.lm_seconds, 4),
        "best_of_8_codec_s": round(bo8.codec_seconds, 4),
        "best_of_8_verifier_s": round(bo8.verifier_seconds, 4),
        "best_of_8_wait_s": round(bo8.wait_seconds, 4),
        "screened_out": bo8.screened_out,
        "best_of_8_unscreened_cost_ratio": round(open_s / single_s, 3),
        "unscreened_verifier_s_per_candidate": round(opened.verifier_seconds / opened.candidates, 4),
        "unscreened_wait_s": round(opened.wait_seconds, 4),
        "sampling_8_ratio": round(lm_8_s / lm_single_s, 3),
        "verifier_s_per_candidate": round(bo8.verifier_seconds / candidates, 4),
        "codec_s_per_candidate": round(bo8.codec_seconds / candidates, 4),
        "candidate_audio_s": round(bo8.verifier_audio_seconds / candidates, 3),
        "beam_2x4_cost_ratio": round(beam_s / single_s, 3),
        "beam_tokens": beamed.tokens,
        "beam_verifier_clips": beamed.verifier_clips,
        "beam_verifier_share": round(beamed.verifier_seconds / beam_s, 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
