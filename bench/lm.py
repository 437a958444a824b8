"""Speech-token decoding speed: our SpeechDecoder against transformers' `generate`.

Same model, same prompt, same sampling (temperature 0.8, top_p 1), in one process. Models are
random-weight presets with the official 65,536-code codebook over the byte-level text vocabulary.
Prints one JSON line:

  decode_speedup       ours over generate, tokens/s at N=1 (the larger preset)
  n8_cost_ratio        wall time of N=8 candidates over N=1 with our decoder (the larger preset, bf16)
  per-preset figures   the same ratios for each preset and dtype

Usage: python bench/lm.py [--tokens 100] [--presets tiny,100m]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from llasa.lm.model import build_model
from llasa.lm.prompt import prompt_ids
from llasa.lm.sampling import SamplingParams, SpeechDecoder
from llasa.lm.vocab import SpeechVocab, build_tokenizer

TEXT = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_preset(preset: str, dtype: torch.dtype, tokens: int, repeats: int) -> dict:
    tokenizer = build_tokenizer(None, 65536)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    model = build_model(preset, tokenizer, seed=0, dtype=dtype)
    prompt = prompt_ids(tokenizer, TEXT)
    params = SamplingParams()

    def ours(n: int):
        decoder = SpeechDecoder(model, vocab, prompt, n=n, params=params, seed=0, max_new_tokens=tokens)
        decoder.run()
        # a random model almost never samples SGE (1 in 65,537), so every row runs `tokens` steps
        assert all(len(c) == tokens for c in decoder.codes())

    def theirs():
        with torch.inference_mode():
            model.generate(
                torch.tensor([prompt]), do_sample=True, temperature=0.8, top_p=1.0, max_new_tokens=tokens,
                min_new_tokens=tokens, eos_token_id=vocab.sge_id, pad_token_id=vocab.pad_id,
            )  # fmt: skip

    ours(1)  # warm-up (allocator, kernels)
    t_generate = best_time(theirs, repeats)
    t_ours_1 = best_time(lambda: ours(1), repeats)
    t_ours_8 = best_time(lambda: ours(8), repeats)
    return {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "ours_tok_s": round(tokens / t_ours_1, 1),
        "generate_tok_s": round(tokens / t_generate, 1),
        "decode_speedup": round(t_generate / t_ours_1, 3),
        "n8_cost_ratio": round(t_ours_8 / t_ours_1, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--presets", default="tiny,100m")
    args = parser.parse_args()
    presets = args.presets.split(",")
    results = {}
    for preset in presets:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            results[f"{preset}_{name}"] = bench_preset(preset, dtype, args.tokens, args.repeats)
    main_preset = presets[-1]
    print(
        json.dumps(
            {
                "decode_speedup": results[f"{main_preset}_fp32"]["decode_speedup"],
                "n8_cost_ratio": results[f"{main_preset}_bf16"]["n8_cost_ratio"],
                "n8_cost_ratio_fp32": results[f"{main_preset}_fp32"]["n8_cost_ratio"],
                "tokens": args.tokens,
                "threads": torch.get_num_threads(),
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
