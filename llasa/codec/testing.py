"""Random codecs whose codes depend on their input, for tests and benchmarks.

transformers' initialisation (std 0.02, SnakeBeta parameters 0) shrinks the signal layer by
layer until the FSQ sees only biases: every frame gets the same code (43690 for the official
codebook), which makes any comparison of codes vacuous. Variance-preserving weights
(std 1/sqrt(fan_in)) plus small noise on vectors keep the input visible at the quantizer.
"""

from __future__ import annotations

import math

import torch

from llasa.codec.codec import Codec


@torch.no_grad()
def randomize_weights(target: Codec | torch.nn.Module, *, seed: int = 0):
    """Overwrite the weights of a Codec (or any module, e.g. the official model) in place with
    input-sensitive random values; returns `target`."""
    module = target.model if isinstance(target, Codec) else target
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if parameter.ndim >= 2:
            parameter.copy_(noise / math.sqrt(parameter[0].numel()))
        else:
            parameter.add_(0.1 * noise)
    return target
