"""The measurements of an evaluation, on 16 kHz mono audio.

Content (WER, or CER for Chinese/Japanese), speaker similarity and DNSMOS come from the
verifiers of :mod:`llasa.verify`, so a metric and a search reward are the same model; STOI and
PESQ (intrusive: they need the original) come from ``pystoi`` and ``pesq``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llasa.audio import SAMPLE_RATE, load
from llasa.extras import require
from llasa.verify import Verifier, VerifyRequest, get_verifier
from llasa.verify.text import error_metric

PESQ_FLOOR = 1.0


class Metrics:
    """WER/CER, speaker similarity and (optionally) DNSMOS; each model loads on first use.

    ``wer_model``, ``wer_asr``: the judge's ASR, a Whisper checkpoint directory and/or a backend
    of the wer verifier (default: the strongest ASR installed, the wer verifier's own choice);
    ``sim_model``: a speaker-verification checkpoint (default Resemblyzer).
    ``verifiers`` (by name) are the judges; :meth:`search_cache` lends them to a search.
    """

    def __init__(self, *, language: str = "en", wer_model: str | Path | None = None, wer_asr: str | None = None,
                 sim_model: str | Path | None = None, dnsmos: bool = False):  # fmt: skip
        self.language = language
        self.metric = error_metric(language)  # "wer" or "cer"
        self.wer_options = {key: value for key, value in (("model", wer_model), ("asr", wer_asr)) if value is not None}
        self.verifiers: dict[str, Verifier] = {
            "wer": get_verifier("wer", fast=False, **self.wer_options),  # a judge hears in full
            "sim": get_verifier("sim", model=sim_model),
        }
        if dnsmos:
            self.verifiers["dnsmos"] = get_verifier("dnsmos")
        self._files: dict[tuple[str, str], dict] = {}

    @property
    def dnsmos(self) -> bool:
        return "dnsmos" in self.verifiers

    @property
    def asr_name(self) -> str:
        """The ASR that judges intelligibility."""
        return self.verifiers["wer"].asr_name

    def search_cache(self) -> dict[str, Verifier]:
        """Verifiers a search may reuse instead of loading its own: the judges except the ASR, which
        judges in full while a search's hears fast (llasa.verify.wer, ``fast``);
        :func:`judges` still says when both are the same ASR."""
        return {name: verifier for name, verifier in self.verifiers.items() if name != "wer"}


    def _score(self, name: str, wav: np.ndarray, request: VerifyRequest):
        verifier = self.verifiers[name]
        return verifier.score([wav], request, verifier.prepare(request))[0]

    def intelligibility(self, wav: np.ndarray, text: str) -> dict:
        """Error rate of the transcript against ``text``, with the counts that pool into a corpus rate."""
        score = self._score("wer", wav, VerifyRequest(text=text, language=self.language))
        c = score.components
        return {
            self.metric: c[self.metric],
            "errors": int(c["substitutions"] + c["deletions"] + c["insertions"]),
            "ref_units": int(c["ref_units"]),
            "hyp": score.info["hyp"],
        }

    def file_intelligibility(self, path: str | Path, text: str) -> dict:
        """``intelligibility`` of an audio file, remembered: a benchmark's reference recordings are
        transcribed once, however many runs (the points of ``eval scaling``) share these metrics."""
        key = (str(path), text)
        if key not in self._files:
            self._files[key] = self.intelligibility(load(path, SAMPLE_RATE), text)
        return self._files[key]

    def similarity(self, wav: np.ndarray, reference: np.ndarray) -> float:
        return self._score("sim", wav, VerifyRequest(text="", prompt_audio=reference, language=self.language)).total

    def quality(self, wav: np.ndarray) -> float:
        return self._score("dnsmos", wav, VerifyRequest(text="", language=self.language)).total


def search_verifiers(searcher) -> dict[str, Verifier]:
    """The verifiers a search scores with, by name (the parts of a combination)."""
    return {part.name: part for part in searcher.verifier_parts}


def judges(metrics: Metrics, searcher=None) -> dict:
    """Which ASR judged and which verified (None: no search, or one without wer); whether the
    judge is the search's own verifier, for intelligibility (the same ASR) and for speaker
    similarity (the same model). A gain judged by the verifier that chose the candidates
    measures what it was optimised for, not the speech: it flatters the search."""
    used = search_verifiers(searcher) if searcher is not None else {}
    verifier_asr = used["wer"].asr_name if "wer" in used else None
    return {
        "judge_asr": metrics.asr_name,
        "verifier_asr": verifier_asr,
        "judge_is_verifier": verifier_asr == metrics.asr_name,
        "sim_judge_is_verifier": used.get("sim") is metrics.verifiers["sim"],
    }


def stoi(reference: np.ndarray, degraded: np.ndarray) -> float:
    compute = require("pystoi", "STOI").stoi

    n = min(len(reference), len(degraded))
    return float(compute(reference[:n], degraded[:n], SAMPLE_RATE, extended=False))


def pesq(reference: np.ndarray, degraded: np.ndarray, mode: str) -> float | None:
    """PESQ wide-band (``"wb"``) or narrow-band (``"nb"``); None when the reference holds no speech.

    A digitally silent output gets the floor of the MOS scale: the library would divide by its
    zero peak, and leaving the clip out would flatter a codec that outputs nothing."""
    pesq_lib = require("pesq", "PESQ")
    NoUtterancesError, compute = pesq_lib.NoUtterancesError, pesq_lib.pesq

    n = min(len(reference), len(degraded))
    if not np.any(reference[:n]):
        return None
    if not np.any(degraded[:n]):
        return PESQ_FLOOR
    try:
        return float(compute(SAMPLE_RATE, reference[:n], degraded[:n], mode))
    except NoUtterancesError:
        return None
