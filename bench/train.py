"""LM training throughput: our data path (shards -> training rows -> batches, inside `train_lm`)
against a plain loop over the same batches prepared in advance, same model and optimiser.

Prints one JSON line: data_path_ratio = our tokens/s over the plain loop's (1.0 = the data
path costs nothing; well below 1 means it is the bottleneck). Each rate is the median over a
run's steps of that step's tokens/s: on a shared machine a neighbour's job slows whole stretches
of a run, which moves a run's mean by tens of percent and its median far less.

    python bench/train.py [--preset tiny] [--steps 40] [--batch-size 8] [--quick]

--quick: 4 steps of 2 one-second rows, one round (checks that the bench runs; its figures mean
nothing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llasa.data.tokenize import CodeShardDataset
from llasa.hardware import resolve_precision
from llasa.lm.model import build_model
from llasa.lm.prompt import memmap_row
from llasa.lm.vocab import build_tokenizer
from llasa.train.args import TrainArgs
from llasa.train.lm import LMTrainConfig, token_loss_sum, train_lm
from llasa.train.lm_data import Examples, RowOrder, collate


def make_shards(out: Path, codebook: int, rows: int, seconds: float) -> None:
    tokenizer = build_tokenizer(None, codebook)
    tokenizer.save_pretrained(out / "tokenizer")
    rng = np.random.default_rng(0)
    sentence = "The quick brown fox jumps over the lazy dog near the river bank."
    data = [memmap_row(tokenizer, sentence, rng.integers(0, codebook, int(50 * seconds))) for _ in range(rows)]
    np.stack(data).astype(np.int32).tofile(out / "shard-00000-of-00001.memmap")
    np.save(out / "shard-00000-of-00001_shape.npy", np.array([rows, 2048]))


def plain_loop(cfg: LMTrainConfig, batches: list[dict], tokenizer) -> list[float]:
    """Tokens/s of each step but the first (which warms up allocators and kernels)."""
    model = build_model(cfg.init.split(":", 1)[1], tokenizer, seed=cfg.train.seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas)
    # the precision train_lm resolves "auto" to, so that only the data path differs
    bf16 = resolve_precision(cfg.train.mixed_precision, "cpu", where="train.mixed_precision") == "bf16"
    rates = []
    for batch in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = token_loss_sum(model, batch)
            (loss / max(1, int((batch["labels"][:, 1:] != -100).sum()))).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        rates.append(int(batch["attention_mask"].sum()) / (time.perf_counter() - start))
    return rates[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--codebook", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per utterance")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few short steps, one round: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(steps=4, batch_size=2, seconds=1.0, rounds=1)
        args = parser.parse_args()
    ours_runs, plain_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_shards(tmp / "shards", args.codebook, rows=max(64, args.batch_size * 8), seconds=args.seconds)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tmp / "shards" / "tokenizer")
        # alternate the two a few times: this machine's load drifts, a single pair misleads
        for round_ in range(args.rounds):
            cfg = LMTrainConfig(
                data=str(tmp / "shards"), output_dir=str(tmp / f"run{round_}"), init=f"preset:{args.preset}",
                batch_size=args.batch_size, eval_rows=8,
                train=TrainArgs(max_steps=args.steps + 1, log_every=1, eval_every=10**9, save_every=10**9),
            )
            train_lm(cfg)
            log = [json.loads(line) for line in (tmp / f"run{round_}" / "train_log.jsonl").read_text().splitlines()]
            # each step's rate but the first (warm-up), as the plain loop measures
            ours_runs.append(float(np.median([(r["tokens"] - p["tokens"]) / r["interval_s"] for p, r in zip(log, log[1:])])))
            data = CodeShardDataset(tmp / "shards")
            held_out = min(cfg.eval_rows, len(data) // 10)
            examples = Examples(data, tokenizer, cfg.max_length, np.arange(len(data) - held_out))
            order = RowOrder(len(examples), cfg.train.seed)
            batches = [
                collate([examples[r] for r in order.rows(s * cfg.batch_size, cfg.batch_size)], tokenizer.pad_token_id)
                for s in range(args.steps)
            ]
            plain_runs.append(float(np.median(plain_loop(cfg, batches, tokenizer))))
    ours, plain = float(np.median(ours_runs)), float(np.median(plain_runs))
    ratio = float(np.median(np.array(ours_runs) / np.array(plain_runs)))
    print(json.dumps({
        "bench": "train", "preset": args.preset, "batch_size": args.batch_size, "steps": args.steps,
        "ours_tokens_per_s": round(ours, 1), "plain_tokens_per_s": round(plain, 1),
        "data_path_ratio": round(ratio, 3), "rounds": args.rounds, "quick": args.quick,
    }))


if __name__ == "__main__":
    main()
