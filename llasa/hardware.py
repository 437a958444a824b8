"""What the hardware computes fast: whether bf16 runs in hardware, and the precision to train in.

bf16 is only fast where the hardware has bf16 arithmetic: GPUs from Ampere on, and CPUs with
AVX512-BF16 or AMX. Elsewhere oneDNN emulates it, and it is far slower than fp32: one step of
the default LM recipe (configs/lm_default.yaml, batch 16) took 117 s in bf16 against 14 s in
fp32 on a 2-core AMD EPYC with AVX2 only, while on a 2-core AMX CPU bf16 was several times
faster than fp32. So a recipe written on one machine must not fix the choice, and inference
(llasa.lm.model.prefill_copy) asks the same question.
"""

from __future__ import annotations

import warnings

import torch

CHOICES = ("auto", "no", "bf16", "fp16")


def fast_bf16(device: torch.device | str) -> bool:
    """True where bf16 matmuls run in hardware on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # torch's own CPU feature probes (the flags oneDNN dispatches on)
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return True  # other accelerators (xpu, mps, ...): leave an explicit choice to the user


def resolve_precision(setting: str | bool, device: torch.device | str, *, where: str) -> str:
    """``setting`` ("auto", "no", "bf16", "fp16", or a bool for bf16 on/off) as "no", "bf16" or
    "fp16". An explicit bf16 where it is emulated runs, with a warning saying why it is slow."""
    if isinstance(setting, bool):
        setting = "bf16" if setting else "no"
    if setting not in CHOICES:
        raise ValueError(f"{where} must be one of {', '.join(CHOICES)} (or true/false), got {setting!r}")
    fast = fast_bf16(device)
    if setting == "auto":
        return "bf16" if fast else "no"
    if setting == "bf16" and not fast:
        warnings.warn(
            f"{where} is bf16, but this {torch.device(device).type} has no bf16 arithmetic (no AVX512-BF16 or AMX): "
            "it is emulated and several times slower than fp32. Set it to 'auto' (fp32 here) or 'no'.",
            stacklevel=2,
        )
    return setting
