"""A weighted sum of verifiers whose totals are normalised within the batch first.

Raw totals live on unrelated scales (cosine 0-1, -WER, MOS 1-5, sanity 0-1), so each verifier's
totals over the candidates of one request are z-scored or ranked before weighting: only the
ordering a verifier induces on this batch matters, as in F5-TTS's reward combiner.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from llasa.verify.base import Score, Verifier, VerifyRequest
from llasa.verify.registry import get_verifier

NORMALIZATIONS = ("zscore", "rank", "none")


def normalize_batch(values: Sequence[float], method: str = "zscore") -> np.ndarray:
    """``zscore``: mean 0, std 1 (all 0 when every value is equal). ``rank``: average ranks mapped
    to [0, 1] (0.5 for a batch of one or all ties). ``none``: unchanged."""
    x = np.asarray(values, dtype=np.float64)
    if method == "none":
        return x
    if method == "zscore":
        std = x.std()
        return (x - x.mean()) / std if std > 0 else np.zeros_like(x)
    if method == "rank":
        from scipy.stats import rankdata

        if x.size < 2:
            return np.full_like(x, 0.5)
        return (rankdata(x, method="average") - 1) / (x.size - 1)
    raise ValueError(f"unknown normalisation {method!r}; choose one of {NORMALIZATIONS}")


def parse_weights(spec: str) -> dict[str, float]:
    """``"sim:1,wer:0.5"`` -> {"sim": 1.0, "wer": 0.5}; a name without weight counts 1."""
    weights = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, weight = item.partition(":")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"bad weight in verifier spec {spec!r}: {item!r} (expected name:number)") from None
    if not weights:
        raise ValueError(f"empty verifier spec {spec!r}")
    return weights


class CombinedVerifier:
    """Itself a Verifier. total = sum of weight x normalised total; every part's raw total
    (``"<name>"``), normalised total (``"<name>.norm"``) and components (``"<name>.<key>"``) are kept.

    With ``partial=True`` only the parts that support partial scoring take part.
    """

    name = "combined"
    # a candidate's total depends on its batch-mates (normalisation); see score_parts for pieces
    per_candidate = False

    def __init__(self, weights: Mapping[str | Verifier, float] | str, *, normalize: str = "zscore"):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalisation {normalize!r}; choose one of {NORMALIZATIONS}")
        if isinstance(weights, str):
            weights = parse_weights(weights)
        if not weights:
            raise ValueError("CombinedVerifier needs at least one verifier")
        self.parts: list[tuple[Verifier, float]] = [
            (get_verifier(v) if isinstance(v, str) else v, float(w)) for v, w in weights.items()
        ]
        names = [v.name for v, _ in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"verifier names must be distinct to keep their components apart: {names}")
        self.normalize = normalize

    @property
    def supports_partial(self) -> bool:
        return any(v.supports_partial for v, _ in self.parts)

    @property
    def parts_per_candidate(self) -> bool:
        """Every part scores each candidate alone, so :meth:`score_parts` may run piece by piece."""
        return all(getattr(v, "per_candidate", False) for v, _ in self.parts)

    def prepare(self, request: VerifyRequest) -> dict:
        return {v.name: v.prepare(request) for v, _ in self.parts}

    def score(self, wavs, request, state, *, partial=False):
        return self.finish(self.score_parts(wavs, request, state, partial=partial), partial=partial)

    def score_parts(self, wavs, request, state, *, partial=False) -> list[Score]:
        """Every part's raw total and components, not yet normalised (``total`` is NaN). :meth:`finish`
        over the pieces of a batch scored this way gives what :meth:`score` gives for the whole."""
        parts = self._parts(partial)
        if not parts:
            raise ValueError(f"none of {[v.name for v, _ in self.parts]} supports partial scoring")
        components: list[dict[str, float]] = [{} for _ in wavs]
        info: list[dict[str, str]] = [{} for _ in wavs]
        for verifier, _ in parts:
            for i, s in enumerate(verifier.score(wavs, request, state[verifier.name], partial=partial)):
                components[i][verifier.name] = s.total
                components[i].update({f"{verifier.name}.{k}": v for k, v in s.components.items()})
                info[i].update({f"{verifier.name}.{k}": v for k, v in s.info.items()})
        return [Score(float("nan"), c, m) for c, m in zip(components, info)]

    def finish(self, parts: Sequence[Score], *, partial: bool = False) -> list[Score]:
        """The combined Scores of a whole batch from :meth:`score_parts` results, normalised over it."""
        components = [dict(s.components) for s in parts]
        normalised = self._normalised(components, partial)
        for name, (_, normed) in normalised.items():
            for c, value in zip(components, normed):
                c[f"{name}.norm"] = float(value)
        totals = sum(weight * normed for weight, normed in normalised.values())
        return [Score(float(t), c, dict(s.info)) for t, c, s in zip(totals, components, parts)]

    def combine(self, components: Sequence[Mapping[str, float]], *, partial: bool = False) -> np.ndarray:
        """The combined totals of a batch from each part's raw total (``components[i][name]``, as
        :meth:`score` keeps them), normalised within this batch: re-ranking a subset of a batch
        (the first k of N candidates) gives what scoring the subset alone would have given."""
        return sum(weight * normed for weight, normed in self._normalised(components, partial).values())

    def _parts(self, partial: bool) -> list[tuple[Verifier, float]]:
        """The (verifier, weight) pairs that score: with ``partial``, those that can judge partial audio."""
        return [(v, w) for v, w in self.parts if v.supports_partial or not partial]

    def _normalised(self, components: Sequence[Mapping[str, float]], partial: bool) -> dict[str, tuple[float, np.ndarray]]:
        return {v.name: (w, normalize_batch([c[v.name] for c in components], self.normalize)) for v, w in self._parts(partial)}
