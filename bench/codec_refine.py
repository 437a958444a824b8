"""Cost and effect of analysis-by-synthesis encoding (`Codec.encode(refine_steps=N)`) against plain encoding.

Input: a recording given with --audio, else the built-in voices' prompts decoded to audio (speech
available offline). Both encodings run in this process on the same audio; timings are process
CPU seconds (the best of --repeats), so other jobs on a shared machine matter less. `mel` is the
multi-scale mel distance (the codec's training loss) between each resynthesis and its input,
`cepstral` the envelope distance the refinement also brings down when the codec weights it
(`refine_cepstral`). Prints one JSON line: `cost_ratio` (refined / plain CPU time), the real-time
factor of each (CPU seconds per second of audio), both distances and the share of codes moved.

    python bench/codec_refine.py [--codec DIR] [--steps N] [--audio FILE ...] [--threads 2] [--quick]

--quick: 3 steps on 1 s of one clip (checks that the bench runs; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from llasa.codec import Codec
from llasa.codec.features import pad_waveform
from llasa.codec.losses import CepstralDistance, MultiScaleMelLoss
from llasa.defaults import codec_or_default, default_model_path, model_voices
from llasa.tts import Voice


def best_time(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", help="codec directory (default: the built-in one)")
    parser.add_argument("--steps", type=int, help="refinement steps (default: the codec's recommendation)")
    parser.add_argument("--audio", nargs="*", help="recordings to encode (default: the built-in voices, decoded)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clips", type=int, help="encode only the first N clips (default: all)")
    parser.add_argument("--clip-seconds", type=float, help="cut each clip to this length (default: whole)")
    parser.add_argument("--quick", action="store_true", help="3 steps on 1 s of one clip: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(steps=3, clips=1, clip_seconds=1.0)
        args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = Codec.from_pretrained(codec_or_default(args.codec))
    steps = codec.resolve_refine_steps(args.steps)
    if steps < 1:
        parser.error("the codec recommends no refinement: give --steps")
    if args.audio:
        from llasa.audio import load

        wavs = [load(path) for path in args.audio[: args.clips]]
    else:
        voices = model_voices(default_model_path()) if default_model_path() else {}
        if not voices:
            parser.error("no built-in voices in this checkout: give --audio")
        wavs = [codec.decode(Voice.load(path).codes) for _, path in sorted(voices.items())[: args.clips]]
    if args.clip_seconds:
        wavs = [w[: int(args.clip_seconds * codec.sample_rate)] for w in wavs]
    seconds = sum(len(w) for w in wavs) / codec.sample_rate
    plain_time, plain = best_time(lambda: [codec.encode(w) for w in wavs], args.repeats)
    refined_time, refined = best_time(lambda: [codec.encode(w, refine_steps=steps) for w in wavs], args.repeats)

    def distance(measure, codes_list) -> float:
        with torch.no_grad():
            return float(np.mean([
                measure(torch.from_numpy(codec.decode(c))[None], torch.from_numpy(pad_waveform(w, codec.hop_length))[None])
                for c, w in zip(codes_list, wavs)
            ]))  # fmt: skip

    mel, cepstral = MultiScaleMelLoss(codec.sample_rate), CepstralDistance(codec.sample_rate)

    moved = np.mean(np.concatenate([p != r for p, r in zip(plain, refined)]))
    print(json.dumps({
        "steps": steps, "lr": codec.refine_lr, "cepstral_weight": codec.refine_cepstral, "clips": len(wavs),
        "audio_seconds": round(seconds, 2),
        "cost_ratio": round(refined_time / plain_time, 1),
        "rtf_plain": round(plain_time / seconds, 4), "rtf_refined": round(refined_time / seconds, 3),
        "mel_plain": round(distance(mel, plain), 4), "mel_refined": round(distance(mel, refined), 4),
        "cepstral_plain": round(distance(cepstral, plain), 4), "cepstral_refined": round(distance(cepstral, refined), 4),
        "codes_moved": round(float(moved), 3), "threads": args.threads, "quick": args.quick,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
