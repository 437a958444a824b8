"""Speed on a GPU: Llasa-1B-shaped decoding (our SpeechDecoder against transformers' `generate`)
and X-codec2 real-time factors.

LM: the `1b` preset (Llama-3.2-1B shapes, tied output layer) with random weights, in bf16, over
the official vocabulary (193,800 tokens: a stand-in Llama-3 tokenizer, built by the test helper,
with the 65,536 speech codes); the same prompt and sampling (temperature 0.8, top_p 1) for both
decoders, every row forced to run --tokens steps (`min_new_tokens`), at batch 1 and 8 (8 rows
after one prompt). tok_s figures count the tokens of all rows per second of wall time, the
prompt's prefill included (as a request pays it).

Batch-1 speed is bounded by memory bandwidth: each token reads every weight once. The bound is
the card's bandwidth (a table by `torch.cuda.get_device_name()`, else a measured device-to-device
copy) over the bytes of weights a token reads: all but the embedding, plus the output rows the
decoder computes (ours: the speech codes and the end token; `generate`: the whole vocabulary).
The KV cache (under 20 MB at these lengths) is left out. `*_bandwidth_share` = tok/s over that bound.

Codec: transformers' Xcodec2Model at the released sizes (`xcodec2` preset), random weights,
fp32; real-time factor = wall seconds per second of audio of a --codec-seconds clip.

Prints one JSON line. Needs nothing downloaded; from a bare copy of the tree:

    PYTHONPATH=. python bench/gpu.py [--tokens 200] [--device cuda] [--quick]

--quick: the tiny preset and the tiny codec on the CPU, a few tokens (checks that the bench
runs, as CI does; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from codec import speech_like
from lm import TEXT, official_layout_base

from llasa.codec import Codec
from llasa.lm.model import build_model
from llasa.lm.prompt import prompt_ids
from llasa.lm.sampling import SamplingParams, SpeechDecoder
from llasa.lm.vocab import SpeechVocab, build_tokenizer

# peak memory bandwidth (bytes/s) by a part of the device's name, most specific first
BANDWIDTH = (
    ("H200", 4.8e12),
    ("H100 PCIe", 2.0e12),
    ("H100 SXM", 3.35e12),
    ("H100 80GB HBM3", 3.35e12),  # how the SXM part names itself
    ("A100-SXM4-80GB", 2.0e12),
    ("A100 80GB", 2.0e12),
)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_time(fn, device: torch.device, repeats: int) -> float:
    """The shortest of ``repeats`` runs, in seconds, the device's queued work included."""
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes/s of a device-to-device copy, which reads and writes every byte."""
    source = torch.empty(nbytes, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # warm-up
    return 2 * nbytes / wall_time(lambda: target.copy_(source), device, repeats=5)


def bandwidth(device: torch.device, name: str, quick: bool) -> tuple[float, str]:
    """(bytes/s, where the figure comes from)."""
    for part, value in BANDWIDTH:
        if part in name:
            return value, "table"
    return copy_bandwidth(device, (64 if quick else 1024) * 2**20), "measured copy"


def bench_lm(preset: str, device: torch.device, tokens: int, repeats: int, bytes_per_second: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(official_layout_base(Path(tmp)), 65536)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    with torch.device(device):  # built in place: a 1B model's fp32 weights never pass through the CPU
        model = build_model(preset, tokenizer, seed=0, dtype=torch.bfloat16)
    prompt = prompt_ids(tokenizer, TEXT)
    params = SamplingParams()

    def ours(n: int):
        decoder = SpeechDecoder(model, vocab, prompt, n=n, params=params, seed=0, max_new_tokens=tokens,
                                min_new_tokens=tokens)  # fmt: skip
        decoder.run()
        assert all(len(c) == tokens for c in decoder.codes())

    def theirs(n: int):
        input_ids = torch.tensor([prompt] * n, device=device)
        with torch.inference_mode():
            out = model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True, temperature=params.temperature,
                top_p=params.top_p, max_new_tokens=tokens, min_new_tokens=tokens, eos_token_id=vocab.sge_id,
                pad_token_id=vocab.pad_id,
            )  # fmt: skip
        assert out.shape == (n, len(prompt) + tokens)

    figures = {}
    for n in (1, 8):
        ours(n), theirs(n)  # warm-up: allocator, kernels, cuBLAS handles
        t_ours = wall_time(functools.partial(ours, n), device, repeats)
        t_theirs = wall_time(functools.partial(theirs, n), device, repeats)
        figures[f"ours_b{n}_tok_s"] = round(n * tokens / t_ours, 1)
        figures[f"generate_b{n}_tok_s"] = round(n * tokens / t_theirs, 1)
        figures[f"speedup_b{n}"] = round(t_theirs / t_ours, 3)

    embedding = model.get_input_embeddings().weight
    hidden, element = embedding.shape[1], embedding.element_size()
    body = sum(p.numel() for name, p in model.named_parameters() if p is not embedding) * element
    if not model.config.tie_word_embeddings:
        body -= model.get_output_embeddings().weight.numel() * element  # counted below, as the rows read
    read = {
        "ours": body + (vocab.codebook_size + 1) * hidden * element,
        "generate": body + len(tokenizer) * hidden * element,
    }
    for who, nbytes in read.items():
        bound = bytes_per_second / nbytes
        figures[f"{who}_weight_gb_per_token"] = round(nbytes / 1e9, 3)
        figures[f"{who}_b1_bandwidth_bound_tok_s"] = round(bound, 1)
        figures[f"{who}_b1_bandwidth_share"] = round(figures[f"{who}_b1_tok_s"] / bound, 3)
    return {
        "preset": preset,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "vocab_size": len(tokenizer),
        "prompt_tokens": len(prompt),
        **figures,
    }


def bench_codec(preset: str, device: torch.device, seconds: float, repeats: int) -> dict:
    codec = Codec.from_config(preset, seed=0)
    codec.model.to(device)
    wav = speech_like(int(seconds * codec.sample_rate))
    codes = codec.encode(wav)
    codec.decode(codes)  # warm-up
    encode = wall_time(lambda: codec.encode(wav), device, repeats)
    decode = wall_time(lambda: codec.decode(codes), device, repeats)
    return {
        "codec": preset,
        "codec_params_m": round(sum(p.numel() for p in codec.model.parameters()) / 1e6, 1),
        "codec_seconds": seconds,
        "encode_rtf": round(encode / seconds, 4),
        "decode_rtf": round(decode / seconds, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200, help="speech tokens per row")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each measurement (the best counts)")
    parser.add_argument("--preset", default="1b", help="LM preset (llasa.lm.model.PRESETS)")
    parser.add_argument("--codec", default="xcodec2", help="codec preset (llasa.codec.configs.PRESETS)")
    parser.add_argument("--codec-seconds", type=float, default=10.0)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models on the CPU: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(tokens=8, repeats=1, preset="tiny", codec="tiny", codec_seconds=1.0, device="cpu")
        args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: run on a GPU, or give --quick (or --device cpu)")
    name = device_name(device)
    bytes_per_second, source = bandwidth(device, name, args.quick)
    print(json.dumps({
        "bench": "gpu", "device": name, "quick": args.quick, "torch": torch.__version__, "dtype": "bfloat16",
        "tokens": args.tokens, "repeats": args.repeats,
        "bandwidth_tb_s": round(bytes_per_second / 1e12, 3), "bandwidth_source": source,
        **bench_lm(args.preset, device, args.tokens, args.repeats, bytes_per_second),
        **bench_codec(args.codec, device, args.codec_seconds, args.repeats),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
