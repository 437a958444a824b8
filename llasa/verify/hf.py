"""Verifier models with user-supplied weights, through transformers (a local directory or a hub id).

Nothing here downloads on its own: a hub id resolves from the local cache when HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llasa.audio import SAMPLE_RATE, resample


def resolve_source(source: str | Path) -> str:
    """A directory that exists, or a hub id; a path-looking string that does not exist is an error
    here rather than a confusing 'repo id' error from the hub client."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"model '{text}': expected a directory saved with save_pretrained(), got a file")
        return str(path)
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"model directory '{text}' does not exist")
    return text


def pick_device(device: str | None) -> str:
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformersEmbedder:
    """Utterance embeddings from a transformers audio encoder.

    ``pooling="xvector"``: an ``AutoModelForAudioXVector`` (WavLM-SV and kin) and its ``embeddings``.
    ``pooling="mean"``: an ``AutoModel`` encoder (emotion2vec-style, wav2vec2/HuBERT/data2vec),
    mean of the frames of ``hidden_states[layer]`` (default: the last layer).
    """

    def __init__(self, source: str | Path, *, pooling: str = "mean", layer: int | None = None, device: str | None = None):
        import torch
        from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioXVector

        if pooling not in ("mean", "xvector"):
            raise ValueError(f"pooling must be 'mean' or 'xvector', got {pooling!r}")
        src = resolve_source(source)
        self.pooling, self.layer = pooling, layer
        self.device = pick_device(device)
        self.extractor = AutoFeatureExtractor.from_pretrained(src)
        model_cls = AutoModelForAudioXVector if pooling == "xvector" else AutoModel
        self.model = model_cls.from_pretrained(src).eval().to(self.device)
        self._torch = torch

    def __call__(self, wavs: list[np.ndarray]) -> np.ndarray:
        rate = getattr(self.extractor, "sampling_rate", SAMPLE_RATE)
        out = []
        # one clip at a time: zero padding shifts the pooled embedding of models whose feature
        # extractor returns no attention mask, and a verifier must not depend on its batch-mates
        with self._torch.inference_mode():
            for wav in wavs:
                inputs = self.extractor(resample(wav, SAMPLE_RATE, rate), sampling_rate=rate, return_tensors="pt")
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                if self.pooling == "xvector":
                    emb = self.model(**inputs).embeddings[0]
                else:
                    result = self.model(**inputs, output_hidden_states=self.layer is not None)
                    hidden = result.last_hidden_state if self.layer is None else result.hidden_states[self.layer]
                    emb = hidden[0].mean(0)
                out.append(emb.float().cpu().numpy())
        return np.stack(out)
