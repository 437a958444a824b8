"""X-codec2 speed against the official xcodec2==0.1.5 package, and streaming fidelity.

Both models are built at the released sizes (w2v-BERT with all 24 layers on the official side,
as the released checkpoint ships) with the same random, input-sensitive weights; ours is
loaded from the official model's state dict saved in the released layout, through our loader.
Timings are process CPU seconds on `--threads` threads (default 1): on a shared machine wall
time mostly measures the other processes, and CPU time of one thread does not. The models
alternate within each of `--repeats` rounds (after one warm-up round); speedups are the medians
of the rounds' ratios, real-time factors (CPU seconds per second of audio) the medians of the
times. Prints one JSON line; speedups > 1 mean we are faster.

    python bench/codec.py [--seconds 5] [--repeats 2] [--threads 1] [--stream-codec DIR] [--quick]

--quick: the official architecture shrunk (narrow layers, the 16 w2v-BERT layers the official
model reads) on a short clip: the same comparison in seconds, for CI; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2BertConfig, Xcodec2Config

from llasa.codec import Codec
from llasa.codec.official import build_official_model, released_key_names
from llasa.codec.testing import randomize_weights


def speech_like(num_samples: int, seed: int = 0) -> np.ndarray:
    t = np.arange(num_samples) / 16000
    noise = np.random.RandomState(seed).randn(num_samples)
    return (0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.5 * np.sin(t))) + 0.02 * noise).astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


def timed(fn):
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def shrunk_config() -> Xcodec2Config:
    """The official architecture at test widths; w2v-BERT keeps the 16 layers the official model reads."""
    semantic = Wav2Vec2BertConfig(hidden_size=64, num_hidden_layers=16, num_attention_heads=2, intermediate_size=128,
                                  output_hidden_size=64)  # fmt: skip
    return Xcodec2Config(semantic_model_config=semantic, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=64, encoder_hidden_size=8,
                         quantization_dim=192)  # fmt: skip


def build_pair(directory: Path, *, quick: bool = False) -> tuple[torch.nn.Module, Codec, Codec]:
    config = shrunk_config() if quick else Xcodec2Config(semantic_model_config=Wav2Vec2BertConfig(num_hidden_layers=24))
    official = randomize_weights(build_official_model(config), seed=1)
    state = {k: v.contiguous() for k, v in official.state_dict().items()}
    save_file(released_key_names(state), str(directory / "model.safetensors"))
    if quick:  # the original package's config.json names no sizes: a shrunk model needs its own
        config.save_pretrained(directory)
    else:
        (directory / "config.json").write_text(json.dumps({"model_type": "xcodec2", "semantic_hidden_size": 1024}))
    return official, Codec.from_pretrained(directory), Codec.from_pretrained(directory, semantic_bf16=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the timed clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stream-seconds", type=float, default=10.0)
    parser.add_argument("--stream-codec", help="measure streaming on this (trained) codec instead")
    parser.add_argument("--quick", action="store_true", help="a shrunk codec on a short clip: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(seconds=1.0, repeats=1, stream_seconds=2.0)
        args = parser.parse_args()
    torch.set_num_threads(args.threads)

    wav = speech_like(int(args.seconds * 16000))
    tensor = torch.from_numpy(wav)[None]
    with tempfile.TemporaryDirectory() as tmp:
        official, ours, ours_bf16 = build_pair(Path(tmp), quick=args.quick)
    times = {"official_encode": [], "ours_encode": [], "ours_bf16_encode": [], "official_decode": [], "ours_decode": []}
    for _ in range(args.repeats + 1):  # the first round warms up both
        with torch.no_grad():  # what the official encode_code/decode_code run under
            t, their_codes = timed(lambda: official.encode_code(tensor))
            times["official_encode"].append(t)
        t, codes = timed(lambda: ours.encode(wav))
        times["ours_encode"].append(t)
        t, codes_bf16 = timed(lambda: ours_bf16.encode(wav))
        times["ours_bf16_encode"].append(t)
        with torch.no_grad():
            t, their_audio = timed(lambda: official.decode_code(torch.from_numpy(codes)[None, None]))
            times["official_decode"].append(t)
        t, audio = timed(lambda: ours.decode(codes))
        times["ours_decode"].append(t)
    times = {name: values[1:] for name, values in times.items()}  # the first round warms up

    def median_ratio(theirs: str, ours_: str) -> float:
        return round(statistics.median(t / o for t, o in zip(times[theirs], times[ours_])), 3)

    median = {name: statistics.median(values) for name, values in times.items()}

    stream_codec = Codec.from_pretrained(args.stream_codec) if args.stream_codec else ours
    stream_codes = stream_codec.encode(speech_like(int(args.stream_seconds * 16000), seed=1))
    t_full, full = timed(lambda: stream_codec.decode(stream_codes))
    t_stream, chunks = timed(lambda: list(stream_codec.stream_decode(stream_codes)))
    blind = np.concatenate(list(stream_codec.stream_decode(stream_codes, left_context=0, lookahead=0)))
    print(json.dumps({
        "encode_speedup": median_ratio("official_encode", "ours_encode"),
        "encode_speedup_semantic_bf16": median_ratio("official_encode", "ours_bf16_encode"),
        "codes_equal_fraction_semantic_bf16": float(np.mean(codes_bf16 == codes)),
        "decode_speedup": median_ratio("official_decode", "ours_decode"),
        "encode_rtf_ours": round(median["ours_encode"] / args.seconds, 3),
        "encode_rtf_official": round(median["official_encode"] / args.seconds, 3),
        "decode_rtf_ours": round(median["ours_decode"] / args.seconds, 3),
        "decode_rtf_official": round(median["official_decode"] / args.seconds, 3),
        "codes_equal_fraction": float(np.mean(their_codes[0, 0].numpy() == codes)),
        "decode_max_abs_diff": float(np.abs(their_audio[0, 0].numpy() - audio).max()),
        "stream_model": args.stream_codec or "random-weights xcodec2",
        "stream_snr_db": round(snr_db(full, np.concatenate(chunks)), 2),
        "stream_snr_db_without_context_or_lookahead": round(snr_db(full, blind), 2),
        "stream_cost_over_full_decode": round(t_stream / t_full, 2),
        "seconds": args.seconds,
        "threads": args.threads,
        "quick": args.quick,
    }))


if __name__ == "__main__":
    main()
