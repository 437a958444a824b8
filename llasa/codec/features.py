"""The codec's input front-end: the official padding rule and w2v-BERT fbank features.

transformers' own `Xcodec2FeatureExtractor` computes the fbank through torchaudio, which has
no build for our torch; `SeamlessM4TFeatureExtractor` (numpy) computes the same Kaldi fbank
(w2v-BERT 2.0's own extractor) and gave identical codes.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from transformers import SeamlessM4TFeatureExtractor

SEMANTIC_HOP = 320  # w2v-BERT: 10 ms fbank frames stacked in pairs -> 50 Hz at 16 kHz


@functools.lru_cache(maxsize=1)
def _extractor() -> SeamlessM4TFeatureExtractor:
    return SeamlessM4TFeatureExtractor(
        feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2, padding_value=1.0
    )


def pad_waveform(wav: np.ndarray, hop_length: int) -> np.ndarray:
    """Append `hop - N % hop` zeros, as the official encoder does.

    An input that is already a multiple of the hop still gets a whole extra frame: this is
    what makes T = N // hop + 1, and codes of the released models assume it.
    """
    return np.pad(wav, (0, hop_length - wav.shape[-1] % hop_length))


def semantic_features(padded: np.ndarray) -> torch.Tensor:
    """(L,) waveform padded by `pad_waveform` -> (L / 320, 160) w2v-BERT input features.

    The extra half hop of zeros on each side centres the 25 ms fbank windows so that there are
    exactly two fbank frames (one stacked feature) per codec frame.
    """
    half = SEMANTIC_HOP // 2
    framed = np.pad(padded, (half, half))
    features = _extractor()(framed, sampling_rate=16000, return_tensors="pt")["input_features"][0]
    expected = padded.shape[-1] // SEMANTIC_HOP
    if features.shape[0] != expected:  # guards against a changed extractor, not user input
        raise RuntimeError(f"w2v-BERT front-end gave {features.shape[0]} frames for {expected} codec frames")
    return features
