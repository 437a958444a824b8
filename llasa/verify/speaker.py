"""``sim``: speaker similarity between the voice prompt and each candidate.

Default embedder: Resemblyzer (GE2E d-vectors; its weights ship inside the wheel, so it works
offline). With ``model=``: a transformers x-vector model such as WavLM-SV (microsoft/wavlm-base-plus-sv,
or the WavLM-large SV head Seed-TTS-eval uses, once converted), from a local directory or hub id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llasa.extras import require
from llasa.verify.base import EmbeddingSimilarity
from llasa.verify.hf import TransformersEmbedder, pick_device

# one 25 ms mel window: the least Resemblyzer can embed (it pads up to its 1.6 s partials itself)
_MIN_TRIMMED_SAMPLES = 400
_SILENCE_PEAK = 1e-4  # -80 dBFS


class ResemblyzerEmbedder:
    def __init__(self, device: str | None = None):
        resemblyzer = require("resemblyzer", "the sim verifier (Resemblyzer)")

        self._preprocess = resemblyzer.preprocess_wav
        self.encoder = resemblyzer.VoiceEncoder(pick_device(device), verbose=False)

    def __call__(self, wavs: list[np.ndarray]) -> np.ndarray:
        out = []
        for wav in wavs:
            # Resemblyzer was trained on loudness-normalised audio with long pauses removed; digital
            # silence would normalise to NaN and a near-silent clip trims to nothing: embed those raw
            trimmed = self._preprocess(wav) if np.abs(wav).max() > _SILENCE_PEAK else wav[:0]
            out.append(self.encoder.embed_utterance(trimmed if trimmed.shape[0] >= _MIN_TRIMMED_SAMPLES else wav))
        return np.stack(out)


def speaker_similarity(model: str | Path | None = None, *, device: str | None = None) -> EmbeddingSimilarity:
    """The ``sim`` verifier: total = cosine similarity to the prompt (about 0.9+ same voice, 0.6 different
    with Resemblyzer). The embedder loads on first use."""
    if model is None:
        return EmbeddingSimilarity("sim", lambda: ResemblyzerEmbedder(device))
    return EmbeddingSimilarity("sim", lambda: TransformersEmbedder(model, pooling="xvector", device=device))
