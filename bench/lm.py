"""Speech-token decoding speed: our SpeechDecoder against transformers' `generate`.

Same model, same prompt, same sampling (temperature 0.8, top_p 1), in one process. Models are
random-weight presets with the official 65,536-code codebook, over two text vocabularies:
"byte" (our 261-token byte-level tokenizer: speech is 99.6 % of the output layer) and
"official" (a stand-in Llama-3 tokenizer with the official layout: 193,800 tokens, speech is a
third of the output layer; built by the test helper, no download). Prints one JSON line:

  decode_speedup   ours over generate, time for the same tokens (prefill included) at N=1
                   (100m, official layout, fp32)
  n8_cost_ratio    time of N=8 candidates over N=1 with our decoder (same configuration)
  <config>         those figures, tokens/s, the one-off seconds our decoder spent packing the
                   model's weights (made once per model, see llasa.lm.sampling.decoding_copy),
                   and step_speedup: one row's decoding step through the copy's own layer calls
                   (DecodingCopy.forward) over the same step through transformers' forward

Timings are process CPU seconds on `--threads` threads (default 1): on a machine whose cores
other jobs share, wall time mostly measures those jobs. Each round runs generate, ours at N=1
and ours at N=8 back to back; the figures are the medians over `--repeats` rounds of each
round's ratios (a round's three runs see the same neighbours).

Usage: python bench/lm.py [--tokens 50] [--repeats 3] [--threads 1] [--quick]

--quick: the tiny preset only, over both vocabularies, for a few tokens (checks that the bench
runs; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from llasa.lm.model import build_model
from llasa.lm.prompt import prompt_ids
from llasa.lm.sampling import SamplingParams, SpeechDecoder, decoding_copy
from llasa.lm.vocab import SpeechVocab, build_tokenizer

TEXT = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def official_layout_base(directory: Path) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from lm_helpers import make_fake_llama3_dir

    return str(make_fake_llama3_dir(directory))


def bench_preset(preset: str, base: str | None, dtype: torch.dtype, tokens: int, repeats: int) -> dict:
    tokenizer = build_tokenizer(base, 65536)
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

    packing = cpu_seconds(lambda: decoding_copy(model, vocab))
    copied = decoding_copy(model, vocab)
    stepper = SpeechDecoder(model, vocab, prompt, params=params, seed=0, max_new_tokens=tokens)
    token = torch.tensor([[vocab.speech_offset]])

    def steps(step) -> None:
        with torch.inference_mode():
            for _ in range(tokens):  # the same position again and again: the cache does not grow
                step()
                for layer in stepper.cache.layers:
                    layer.crop(-1)

    own = lambda: copied.forward(token, stepper.cache)  # noqa: E731
    body = lambda: copied.body(input_ids=token, cache=stepper.cache, use_cache=True)  # noqa: E731
    ours(1)  # warm-up (allocator, kernels)
    theirs()
    rounds = [(cpu_seconds(theirs), cpu_seconds(lambda: ours(1)), cpu_seconds(lambda: ours(8))) for _ in range(repeats)]
    step_rounds = [cpu_seconds(lambda: steps(body)) / cpu_seconds(lambda: steps(own)) for _ in range(repeats)]
    t_generate, t_ours_1, _ = (statistics.median(column) for column in zip(*rounds))
    return {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "ours_tok_s": round(tokens / t_ours_1, 1),
        "generate_tok_s": round(tokens / t_generate, 1),
        "decode_speedup": round(statistics.median(g / o1 for g, o1, _ in rounds), 3),
        "n8_cost_ratio": round(statistics.median(o8 / o1 for _, o1, o8 in rounds), 3),
        "packing_s": round(packing, 3),
        "step_speedup": round(statistics.median(step_rounds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; figures are their medians")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="tiny preset, few tokens: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(tokens=8, repeats=1)
        args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        official = official_layout_base(Path(tmp))
        size = "tiny" if args.quick else "100m"  # the headline's preset
        configs = {"tiny_byte_fp32": ("tiny", None, torch.float32), "tiny_byte_bf16": ("tiny", None, torch.bfloat16)}
        if not args.quick:
            configs.update({"100m_byte_fp32": ("100m", None, torch.float32), "100m_byte_bf16": ("100m", None, torch.bfloat16)})
        configs[f"{size}_official_fp32"] = (size, official, torch.float32)
        results = {name: bench_preset(*config, args.tokens, args.repeats) for name, config in configs.items()}
    headline = results[f"{size}_official_fp32"]
    print(
        json.dumps(
            {
                "decode_speedup": headline["decode_speedup"],
                "n8_cost_ratio": headline["n8_cost_ratio"],
                "tokens": args.tokens,
                "threads": torch.get_num_threads(),
                "quick": args.quick,
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
