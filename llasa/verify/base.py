"""The verifier protocol: one TTS request, a batch of candidate waveforms in, one Score each out.

Shape follows F5-TTS's ``rewards/``: every verifier returns scores where higher is better and
keeps its raw metric (WER, MOS, cosine, seconds of silence) in named components, so a search
can rank, combine and log them without knowing which verifier made them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from llasa.audio import SAMPLE_RATE, AudioError

# Below this a candidate holds no word: verifiers give it their floor score instead of running
# a model on it (DNSMOS would loop forever tiling an empty clip; Resemblyzer needs one frame).
MIN_SECONDS = 0.1


@dataclass
class VerifyRequest:
    """One TTS request as the verifiers see it. Audio is mono float at 16 kHz."""

    text: str
    prompt_audio: np.ndarray | None = None
    prompt_text: str | None = None
    language: str = "en"


@dataclass
class Score:
    """``total``: higher is better. ``components``: raw numeric metrics. ``info``: text (a transcript, flags)."""

    total: float
    components: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Verifier(Protocol):
    """Optionally also ``per_candidate = True``: each candidate's score depends on that candidate
    alone, not on its batch-mates, so a search may score candidates in pieces as they finish."""

    name: str
    # False: the verifier cannot judge a prefix of an utterance (a process reward needs that)
    supports_partial: bool

    def prepare(self, request: VerifyRequest) -> Any:
        """Per-request work done once (e.g. the prompt's speaker embedding); passed back to score()."""

    def score(
        self, wavs: Sequence[np.ndarray], request: VerifyRequest, state: Any, *, partial: bool = False
    ) -> list[Score]:
        """One Score per waveform. ``partial``: each waveform is a prefix of the final utterance."""


def check_wavs(wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Candidates as 1-D float32 arrays; a wrong shape or NaN is a caller bug, so it raises."""
    if isinstance(wavs, np.ndarray):
        raise AudioError("wavs must be a list of 1-D arrays (one per candidate), not one array")
    out = []
    for i, wav in enumerate(wavs):
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise AudioError(f"candidate {i}: expected a 1-D waveform at {SAMPLE_RATE} Hz, got shape {wav.shape}")
        if not np.all(np.isfinite(wav)):
            raise AudioError(f"candidate {i}: waveform contains NaN/inf samples")
        out.append(wav)
    return out


def is_too_short(wav: np.ndarray) -> bool:
    return wav.shape[0] < MIN_SECONDS * SAMPLE_RATE


def require_prompt(request: VerifyRequest, verifier: str) -> np.ndarray:
    if request.prompt_audio is None:
        raise ValueError(f"the '{verifier}' verifier compares against a voice prompt: request.prompt_audio is None")
    (prompt,) = check_wavs([request.prompt_audio])
    if is_too_short(prompt):
        raise AudioError(f"voice prompt is {prompt.shape[0] / SAMPLE_RATE:.3f} s long; need at least {MIN_SECONDS} s")
    return prompt


class EmbeddingSimilarity:
    """Cosine similarity between the prompt's utterance embedding and each candidate's.

    Speaker and emotion verifiers differ only in the embedder (``embed(list of wavs) -> (B, D)``),
    which is built on first use so that constructing the verifier imports nothing heavy.
    """

    supports_partial = True
    per_candidate = True

    def __init__(self, name: str, make_embedder):
        self.name = name
        self._make_embedder = make_embedder
        self._embedder = None

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = self._make_embedder()
        return self._embedder

    def _unit_embeddings(self, wavs: list[np.ndarray]) -> np.ndarray:
        emb = np.asarray(self.embedder(wavs), dtype=np.float64)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def prepare(self, request: VerifyRequest) -> np.ndarray:
        return self._unit_embeddings([require_prompt(request, self.name)])[0]

    def score(self, wavs, request, state, *, partial=False):
        wavs = check_wavs(wavs)
        usable = [i for i, w in enumerate(wavs) if not is_too_short(w)]
        usable_set = set(usable)
        cos = np.zeros(len(wavs))
        if usable:
            cos[usable] = self._unit_embeddings([wavs[i] for i in usable]) @ state
        # -1 is the floor of a cosine: a clip too short to embed ranks below any real one
        return [
            Score(float(c), {"cosine": float(c)}) if i in usable_set else Score(-1.0, {"cosine": -1.0}, {"flags": "too_short"})
            for i, c in enumerate(cos)
        ]
