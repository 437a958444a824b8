"""What the hardware computes fast: whether bf16 runs in hardware, and the precision to train in.

bf16 is only fast where the hardware has bf16 arithmetic: GPUs from Ampere on, and CPUs with
AVX512-BF16 or AMX. Elsewhere oneDNN emulates it, and it is far slower than fp32: one step of
the default LM recipe (configs/lm_default.yaml, batch 16) took 117 s in bf16 against 14 s in
fp32 on a 2-core AMD EPYC with AVX2 only, while on a 2-core AMX CPU bf16 was several times
faster than fp32. So a recipe written on one machine must not fix the choice, and inference
(llasa.lm.model.prefill_copy) asks the same question.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

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


# Products of fewer rows stay with MKL: oneDNN reorders the weight into its blocked layout at
# every call, which only pays from about this many rows (measured on the AMD CPU below).
ONEDNN_MIN_ROWS = 64


@functools.lru_cache(maxsize=1)
def mkl_is_generic() -> bool:
    """True on x86 CPUs other than Intel's, where MKL (which torch calls for fp32 matrix
    products) runs its generic kernels: on a 2-core AMD EPYC with AVX-512, MKL's sgemm reached
    45-50 GMAC/s and oneDNN's 85-105 on the same products (251 x 1024 by 1024 x 4096)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            vendor = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("vendor_id")), "")
    except OSError:
        return False
    return bool(vendor) and vendor != "GenuineIntel"


class OneDNNMatmul(TorchFunctionMode):
    """Inside it, fp32 CPU matrix products of at least ``ONEDNN_MIN_ROWS`` rows (``F.linear``,
    and ``conv1d`` with a width-1 kernel, which torch otherwise runs through im2col) go to
    oneDNN's convolution instead of MKL. Only where no gradient is needed: the results differ
    from MKL's by float rounding (about 1e-7 relative), not in meaning.

    A mode rather than patched modules: it applies to what runs inside it, on this thread, and
    leaves the models themselves, and anyone else's calls on them, as they are.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            out = _onednn_linear(*args, **kwargs)
        elif func is F.conv1d:
            out = _onednn_pointwise_conv(*args, **kwargs)
        else:
            out = None
        return func(*args, **kwargs) if out is None else out


def onednn_matmul():
    """:class:`OneDNNMatmul` where it pays (``mkl_is_generic``), else a context that does nothing."""
    return OneDNNMatmul() if mkl_is_generic() else contextlib.nullcontext()


def _eligible(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    if torch.is_autocast_enabled("cpu"):  # the product is to run in bf16: leave it to autocast
        return False
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or t.layout != torch.strided for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _onednn_linear(x, weight, bias=None):
    if x.dim() < 2 or weight.dim() != 2 or not _eligible(x, weight, bias):
        return None
    rows, features = x.numel() // x.shape[-1], x.shape[-1]
    if rows < ONEDNN_MIN_ROWS:
        return None
    # (rows, in) row-major as a channels-last (1, in, 1, rows) image: oneDNN reads it in place and
    # writes a channels-last result, which is (rows, out) row-major (from other strides it would
    # write channels-first, and every later op would read a transposed tensor)
    image = x.reshape(rows, features).contiguous().view(1, 1, rows, features).permute(0, 3, 1, 2)
    out = torch.mkldnn_convolution(image, weight[:, :, None, None], bias, [0, 0], [1, 1], [1, 1], 1)
    return out.permute(0, 2, 3, 1).contiguous().view(*x.shape[:-1], weight.shape[0])


def _onednn_pointwise_conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if x.dim() != 3 or weight.dim() != 3 or weight.shape[-1] != 1 or groups != 1 or not _eligible(x, weight, bias):
        return None
    if _single(stride) != 1 or padding not in (0, (0,), [0], "valid") or x.shape[0] * x.shape[-1] < ONEDNN_MIN_ROWS:
        return None
    out = torch.mkldnn_convolution(x.unsqueeze(2), weight.unsqueeze(2), bias, [0, 0], [1, 1], [1, 1], 1)
    return out.squeeze(2)


def _single(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value
