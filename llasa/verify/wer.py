"""``wer``: transcribe each candidate and score its word (or character) error rate against the text.

ASR: PocketSphinx (English; its model ships in the wheel, so it works offline; about 20-27 % WER
on clean flite speech, so it ranks candidates rather than measuring absolute quality) or any
Whisper checkpoint through transformers (``model=`` a local directory or hub id; English,
Chinese and the rest of Whisper's languages; CER for zh/ja/yue as Seed-TTS-eval does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from llasa.audio import SAMPLE_RATE
from llasa.extras import require
from llasa.verify.base import Score, VerifyRequest, check_wavs, is_too_short
from llasa.verify.hf import pick_device, resolve_source
from llasa.verify.text import error_metric, language_code, units


class PocketSphinxASR:
    languages = frozenset({"en"})

    def __init__(self):
        pocketsphinx = require("pocketsphinx", "the wer verifier (PocketSphinx)")

        self.decoder = pocketsphinx.Decoder(samprate=SAMPLE_RATE, logfn=os.devnull)

    def transcribe(self, wavs: list[np.ndarray], language: str) -> list[str]:
        out = []
        for wav in wavs:
            pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype("<i2").tobytes()
            # a fresh front end per clip: otherwise its noise and CMN estimates carry over from the
            # clips decoded before, and one file's transcript depends on what came earlier
            self.decoder.reinit_feat()
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            out.append(hyp.hypstr if hyp is not None else "")
        return out


class WhisperASR:
    """Whisper via transformers. Clips longer than 30 s are cut to 30 s by the feature extractor."""

    def __init__(self, source: str | Path, *, device: str | None = None, batch_size: int = 8):
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        src = resolve_source(source)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.processor = AutoProcessor.from_pretrained(src)
        self.model = WhisperForConditionalGeneration.from_pretrained(src).eval().to(self.device)

    def transcribe(self, wavs: list[np.ndarray], language: str) -> list[str]:
        import torch

        # multilingual checkpoints must be told the language, or they may transcribe zh as en
        multilingual = bool(getattr(self.model.generation_config, "lang_to_id", None))
        kwargs = {"language": language, "task": "transcribe"} if multilingual else {}
        out = []
        with torch.inference_mode():
            for start in range(0, len(wavs), self.batch_size):
                batch = wavs[start : start + self.batch_size]
                features = self.processor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
                ids = self.model.generate(features.to(self.device, self.model.dtype), **kwargs)
                out.extend(text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True))
        return out


def best_prefix(reference: list[str], hypothesis: list[str]) -> list[str]:
    """The prefix of the reference that a partial transcript matches best (ties: the longer one).

    jiwer scores whole sequences only; a process reward needs the text the audio has reached so far.
    """
    Levenshtein = require("rapidfuzz.distance", "the wer verifier's partial scores").Levenshtein

    costs = [Levenshtein.distance(hypothesis, reference[:k]) for k in range(len(reference) + 1)]
    k = len(costs) - 1 - int(np.argmin(costs[::-1]))
    return reference[:k]


class WERVerifier:
    """total = -error rate (WER, or CER for character languages); raw counts in components, transcript in info."""

    name = "wer"
    supports_partial = True

    def __init__(self, model: str | Path | None = None, *, device: str | None = None, batch_size: int = 8):
        self._model, self._device, self._batch_size = model, device, batch_size
        self._asr = None

    @property
    def asr(self):
        if self._asr is None:
            if self._model is None:
                self._asr = PocketSphinxASR()
            else:
                self._asr = WhisperASR(self._model, device=self._device, batch_size=self._batch_size)
        return self._asr

    def prepare(self, request: VerifyRequest) -> list[str]:
        if self._model is None and language_code(request.language) not in PocketSphinxASR.languages:
            raise ValueError(
                f"PocketSphinx recognises English only, not '{request.language}': "
                "pass model=<Whisper checkpoint dir> to get_verifier('wer', ...)"
            )
        reference = units(request.text, request.language)
        if not reference:
            raise ValueError(f"target text {request.text!r} has no words left after normalisation")
        return reference

    def score(self, wavs, request, state, *, partial=False):
        jiwer = require("jiwer", "the wer verifier")

        wavs = check_wavs(wavs)
        usable = [i for i, w in enumerate(wavs) if not is_too_short(w)]
        hyps = [""] * len(wavs)
        for i, text in zip(usable, self.asr.transcribe([wavs[i] for i in usable], request.language)):
            hyps[i] = text
        metric = error_metric(request.language)
        scores = []
        for hyp in hyps:
            hyp_units = units(hyp, request.language)
            reference = best_prefix(state, hyp_units) if partial else state
            if reference:
                m = jiwer.process_words(" ".join(reference), " ".join(hyp_units))
                errors = m.substitutions + m.deletions + m.insertions
                counts = {"substitutions": m.substitutions, "deletions": m.deletions, "insertions": m.insertions}
            else:  # a prefix with no words recognised yet matches the empty prefix: nothing wrong so far
                errors, counts = 0, {"substitutions": 0, "deletions": 0, "insertions": 0}
            counts = {k: float(v) for k, v in counts.items()}
            rate = errors / max(len(reference), 1)
            scores.append(Score(-rate, {metric: rate, "ref_units": float(len(reference)), **counts}, {"hyp": hyp}))
        return scores
