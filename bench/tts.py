"""Real-time factor of synthesis with the built-in default model (or --model/--codec).

rtf = wall time / seconds of audio produced, for a 10-word sentence (< 1 is faster than real
time), measured over a few seeded runs after a warm-up; the LM and codec shares are reported
separately. Where the synthesizer prefills prompts through an fp32 copy (a bf16 model on a CPU
without bf16 arithmetic: ``llasa.lm.model.prefill_copy``), the prompt's prefill is also timed
without it, in the same process: ``prefill_speedup``. Streaming (``Synthesizer.stream``, what
the server streams): ``first_audio_s``, the time from the call to the first audio piece, and
``first_audio_ratio``, that over the time the whole synthesis (``tts``) takes; ``stream_overhead``
= the stream's time to its last piece / the whole synthesis. Prints one JSON line:

    python bench/tts.py [--runs 5] [--threads 2] [--quick]

--quick: one run of a four-word sentence (checks that the bench runs; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from llasa.defaults import default_codec_path, default_model_path, default_voice_name, model_voices
from llasa.tts import Synthesizer, Voice

SENTENCE = "The quick brown fox jumps over the lazy dog near the river."
QUICK_SENTENCE = "The quick brown fox."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model_path())
    parser.add_argument("--codec", default=default_codec_path())
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="one run of a short sentence: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(runs=1)
        args = parser.parse_args()
    sentence = QUICK_SENTENCE if args.quick else SENTENCE
    if not (args.model and args.codec):
        parser.error("no built-in default model in this checkout: pass --model and --codec")
    torch.set_num_threads(args.threads)
    synth = Synthesizer.from_pretrained(args.model, args.codec)
    name = default_voice_name(args.model)
    voice = Voice.load(model_voices(args.model)[name]) if name else None
    synth.tts(sentence, voice, seed=0, progress=False)  # warm-up
    copied = synth.prefill_model is not None
    prefill = {"copy": 0.0, "plain": 0.0}
    if copied:
        plain = Synthesizer(synth.model, synth.tokenizer, synth.codec, fp32_prefill=False)
        for run in range(args.runs):
            for key, who in (("plain", plain), ("copy", synth)):
                start = time.perf_counter()
                who.decoder(sentence, voice, seed=run)  # the prompt's prefill only
                prefill[key] += time.perf_counter() - start
    lm_s = codec_s = audio_s = first_s = stream_s = 0.0
    for run in range(args.runs):
        start = time.perf_counter()
        codes = synth.decoder(sentence, voice, seed=run).run()
        mid = time.perf_counter()
        wav = synth.decode(codes, voice)[0]
        end = time.perf_counter()
        lm_s, codec_s, audio_s = lm_s + mid - start, codec_s + end - mid, audio_s + len(wav) / synth.sample_rate
        start = time.perf_counter()
        pieces = synth.stream(sentence, voice, seed=run)
        next(pieces)
        first = time.perf_counter()
        for _ in pieces:
            pass
        first_s, stream_s = first_s + first - start, stream_s + time.perf_counter() - start
    print(json.dumps({
        "bench": "tts", "words": len(sentence.split()), "runs": args.runs, "threads": args.threads, "quick": args.quick,
        "voice": name, "audio_s_per_run": round(audio_s / args.runs, 3),
        "rtf": round((lm_s + codec_s) / max(audio_s, 1e-9), 4),
        "lm_rtf": round(lm_s / max(audio_s, 1e-9), 4), "codec_rtf": round(codec_s / max(audio_s, 1e-9), 4),
        "tokens_per_s": round(audio_s * synth.frame_rate / max(lm_s, 1e-9), 1),
        "first_audio_s": round(first_s / args.runs, 4), "first_audio_ratio": round(first_s / (lm_s + codec_s), 4),
        "stream_overhead": round(stream_s / (lm_s + codec_s), 4),
        "mean_abs_amplitude": round(float(np.mean(np.abs(wav))), 4),
        "fp32_prefill": copied,
        "prefill_s": round(prefill["copy"] / args.runs, 4) if copied else None,
        "prefill_speedup": round(prefill["plain"] / prefill["copy"], 2) if copied else None,
    }))


if __name__ == "__main__":
    main()
