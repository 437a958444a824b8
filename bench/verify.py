"""Verifier cost per candidate on a 3 s recorded clip (LibriVox, pocketsphinx-testdata).

Prints one JSON line. ``<name>_rtf`` = seconds of compute per second of candidate audio, for
sim, sanity, dnsmos, the screen alone, and wer with each ASR backend installed
(``wer_faster_whisper_rtf``, ``wer_pocketsphinx_rtf``; ``wer_whisper_rtf`` with --whisper-model;
``wer_rtf`` is the backend the verifier picks by itself, named in ``wer_asr``; faster-whisper in
the window a search uses, and ``wer_faster_whisper_full_window_rtf`` in a judge's). Each wer figure
includes its screen; ``wer_screened_out_rtf`` is wer on a noise clip of the same length, which
the screen rejects before the ASR. ``<name>_ms`` = milliseconds per candidate;
``prepare_once_speedup`` = scoring N candidates with the request state recomputed for each
candidate (the naive loop) over the prepare-once path, both timed here.
Run: python bench/verify.py [--n 8] [--whisper-model DIR] [--quick]

--quick: 2 candidates (checks that the bench runs, every verifier loaded; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from llasa.audio import load
from llasa.extras import MissingExtra
from llasa.verify import CombinedVerifier, VerifyRequest, get_verifier
from llasa.verify.sanity import Screen
from llasa.verify.wer import ASR_BACKENDS

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP, PROMPT = "sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0870"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="candidates per request")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (and faster-whisper's); 1 is fastest when other jobs share the cores "
                             "(oversubscribed OpenMP threads spin: Resemblyzer went from 0.1 s to 0.3-3 s a clip with 2)")
    parser.add_argument("--whisper-model", help="a transformers Whisper checkpoint directory, to time that backend too")
    parser.add_argument("--quick", action="store_true", help="2 candidates: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(n=2)
        args = parser.parse_args()
    torch.set_num_threads(args.threads)

    clip, prompt = load(LIBRIVOX / f"{CLIP}.wav"), load(LIBRIVOX / f"{PROMPT}.wav")
    seconds = len(clip) / 16_000
    request = VerifyRequest("he was not an ill disposed young man", prompt_audio=prompt)
    wavs = [clip] * args.n
    figures = {"clip_s": round(seconds, 2), "n": args.n, "cpus": os.cpu_count(), "threads": args.threads, "quick": args.quick}

    def measure(key: str, verifier, candidates=wavs) -> None:
        figures[f"{key}_load_s"] = round(timed(lambda: verifier.score(candidates[:1], request, verifier.prepare(request))), 3)
        state = verifier.prepare(request)
        per_candidate = timed(lambda: verifier.score(candidates, request, state)) / args.n
        figures[f"{key}_ms"] = round(1000 * per_candidate, 1)
        figures[f"{key}_rtf"] = round(per_candidate / seconds, 4)

    for name in ("sim", "sanity", "dnsmos"):
        measure(name, get_verifier(name))

    screen = Screen()
    state = screen.prepare(request)
    screen.reasons(wavs[:1], state)  # loads the VAD
    figures["screen_rtf"] = round(timed(lambda: screen.reasons(wavs, state)) / args.n / seconds, 4)

    wer = get_verifier("wer")
    figures["wer_asr"] = wer.asr_name
    measure("wer", wer)
    noise = (0.01 * np.random.default_rng(0).standard_normal(len(clip))).astype(np.float32)
    measure("wer_screened_out", wer, [noise] * args.n)
    for backend in ASR_BACKENDS:
        model = args.whisper_model if backend == "whisper" else None
        if backend == "whisper" and model is None:
            continue
        try:
            measure(f"wer_{backend.replace('-', '_')}", get_verifier("wer", asr=backend, model=model))
            if backend == "faster-whisper":  # as a judge hears: Whisper's full 30 s window
                measure("wer_faster_whisper_full_window", get_verifier("wer", asr=backend, model=model, fast=False))
        except MissingExtra:
            figures[f"wer_{backend.replace('-', '_')}_rtf"] = None

    combined = CombinedVerifier({"sim": 1.0, "wer": 1.0, "sanity": 0.5}, normalize="rank")
    combined.score(wavs[:1], request, combined.prepare(request))  # load the models
    once = timed(lambda: combined.score(wavs, request, combined.prepare(request)))
    naive = timed(lambda: [combined.score([w], request, combined.prepare(request)) for w in wavs])
    figures["combined_ms"] = round(1000 * once / args.n, 1)
    figures["prepare_once_speedup"] = round(naive / once, 3)
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
