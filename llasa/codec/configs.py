"""Named X-codec2 presets, all plain `transformers.Xcodec2Config` objects.

The codebook (`quantization_levels`, FSQ levels per dimension) is part of the config: the
number of codes is their product, and a smaller codebook makes the LM's output layer cheaper.
`as_codes` checks codes against it, for batched and streaming decoding alike.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np
import torch
from transformers import Wav2Vec2BertConfig, Xcodec2Config

ConfigLike = Union[str, dict, Xcodec2Config]


def _official() -> Xcodec2Config:
    # Xcodec2Config's defaults are the released HKUSTAudio/xcodec2 sizes (16-layer w2v-bert,
    # 1024-wide 12-layer decoder, FSQ 4^8 = 65,536 codes)
    return Xcodec2Config()


def _tiny() -> Xcodec2Config:
    """2.2 M parameters and 256 codes: builds and runs in well under a second, for tests."""
    return Xcodec2Config(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        encoder_hidden_size=8,
        semantic_model_config=Wav2Vec2BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, output_hidden_size=64
        ),
        quantization_dim=128 + 64,
        quantization_levels=[4, 4, 4, 4],
    )


def _small() -> Xcodec2Config:
    """The size we train on CPU: decoder 256 wide x 4 layers, waveform encoder 8 wide.

    Codebook [8, 5, 5, 5] = 1,000 codes (a calibration run here used 999 of them); a small
    codebook keeps the LM's output layer, which dominates its cost on CPU, cheap.
    """
    return Xcodec2Config(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=64,
        encoder_hidden_size=8,
        semantic_model_config=Wav2Vec2BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, output_hidden_size=64
        ),
        quantization_dim=256 + 64,
        quantization_levels=[8, 5, 5, 5],
    )


PRESETS: dict[str, Callable[[], Xcodec2Config]] = {"xcodec2": _official, "tiny": _tiny, "small": _small}


def get_config(config: ConfigLike) -> Xcodec2Config:
    """A preset name, a dict of Xcodec2Config fields, or an Xcodec2Config -> Xcodec2Config."""
    if isinstance(config, Xcodec2Config):
        return config
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown codec preset {config!r}; known presets: {', '.join(sorted(PRESETS))}")
        return PRESETS[config]()
    if isinstance(config, dict):
        return Xcodec2Config(**config)
    raise TypeError(f"codec config must be a preset name, a dict or an Xcodec2Config, not {type(config).__name__}")


def codebook_size(config: Xcodec2Config) -> int:
    return math.prod(config.quantization_levels)


def as_codes(codes, codebook: int, *, what: str = "codes") -> np.ndarray:
    """Validate one sequence of codes -> 1-D int64 array, with errors that name the problem."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    array = np.asarray(codes)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D sequence of codes, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{what}: no codes to decode (empty sequence)")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what}: codes must be integers, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= codebook:
        bad = low if low < 0 else high
        raise ValueError(f"{what}: code {bad} is outside the codebook of {codebook} codes (valid: 0..{codebook - 1})")
    return array.astype(np.int64, copy=False)
