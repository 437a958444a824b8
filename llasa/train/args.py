"""The option sections every recipe shares: `train` (how long, when to log, evaluate and save)
and `optim` (AdamW and its learning-rate schedule). A recipe's config holds one of each, with
its own defaults, beside the options of its model and data."""

from __future__ import annotations

from dataclasses import dataclass

from llasa.hardware import CHOICES as PRECISIONS

# transformers.get_scheduler names that decay to a floor (min_lr_ratio of the peak)
SCHEDULERS = ("cosine_with_min_lr", "polynomial")


@dataclass
class TrainArgs:
    """Section `train`: the run's length, precision and intervals."""

    max_steps: int = 1000
    """optimiser steps of the whole run; the schedule spans them (`--max-steps` only stops early)"""
    seed: int = 0
    """seeds the weights, the batch order and every random draw of the recipe"""
    mixed_precision: str | bool = "auto"
    """"auto" (bf16 where the hardware computes it, else fp32: llasa/hardware.py), "no", "bf16" or "fp16\""""
    log_every: int = 10
    """steps between records of the training log (means over the steps in between)"""
    eval_every: int = 200
    """steps between held-out evaluations (also at the last step)"""
    save_every: int = 200
    """steps between checkpoints (also at the last step)"""
    keep_checkpoints: int = 2
    """newest checkpoints kept in the output directory; older ones are deleted"""
    threads: int | None = None
    """CPU threads for torch (None: its default); 1 when other jobs share the cores, as
    oversubscribed OpenMP threads stall (8x slower seen)"""
    data_workers: int = 0
    """processes preparing batches ahead of the loop (DataLoader workers); 0: in the loop"""

    def __post_init__(self):
        if isinstance(self.mixed_precision, bool):  # YAML reads a bare `no` as false
            self.mixed_precision = "bf16" if self.mixed_precision else "no"
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"train.mixed_precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")
        for name in ("max_steps", "log_every", "eval_every", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class OptimArgs:
    """Section `optim`: AdamW and the learning-rate schedule (transformers.get_scheduler)."""

    lr: float = 5e-4
    """peak learning rate"""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW's moment decay rates"""
    weight_decay: float = 0.01
    """AdamW's decoupled weight decay"""
    grad_clip: float = 1.0
    """the gradient norm is clipped to this"""
    scheduler: str = "cosine_with_min_lr"
    """after the linear warmup, "cosine_with_min_lr" (cosine) or "polynomial" (linear) decay to min_lr_ratio"""
    warmup_steps: int | None = None
    """steps of linear warmup from 0; None: warmup_ratio of the schedule's steps"""
    warmup_ratio: float = 0.03
    """warmup as a fraction of the schedule's steps, when warmup_steps is None"""
    min_lr_ratio: float = 0.1
    """the rate the schedule ends at, as a fraction of lr"""

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"optim.scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if not 0 <= self.min_lr_ratio < 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1), got {self.min_lr_ratio}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
