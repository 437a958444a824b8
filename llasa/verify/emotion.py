"""``emotion``: similarity of utterance-level emotion embeddings between prompt and candidate.

The paper's emotion verifier is emotion2vec (mean-pooled frame features, cosine to the reference).
Any transformers audio encoder saved with ``save_pretrained`` plugs in here (data2vec/emotion2vec
ports, wav2vec2/HuBERT emotion models); there is no offline default, so a model is required.
"""

from __future__ import annotations

from pathlib import Path

from llasa.verify.base import EmbeddingSimilarity
from llasa.verify.hf import TransformersEmbedder


def emotion_similarity(model: str | Path | None = None, *, layer: int | None = None, device: str | None = None) -> EmbeddingSimilarity:
    """``layer``: which hidden state to pool (None: the last); emotion information often peaks in upper-middle layers."""
    if model is None:
        raise ValueError(
            "the 'emotion' verifier needs model=<local dir or hub id> of a transformers audio encoder "
            "(e.g. an emotion2vec/data2vec or wav2vec2 emotion model); none ships with llasa"
        )
    return EmbeddingSimilarity("emotion", lambda: TransformersEmbedder(model, pooling="mean", layer=layer, device=device))
