"""``sanity``: cheap checks that catch the typical failures of an autoregressive TTS sample.

Silero VAD (its ONNX model ships in the ``silero-vad`` wheel; run through onnxruntime because
torchaudio has no build for the pinned torch) finds the voiced segments; from them:
leading/trailing silence (late start, failure to stop), the longest internal pause, and the
speaking rate against the length of the text (too fast = words skipped or audio truncated; too
slow = babbling or stretching). Plus the share of clipped samples.
Each check is a factor in (0, 1] that decays with how far the clip is past its tolerance; the
total is their product, so 1.0 is a clean clip and 0.0 a clip with no speech at all.

:class:`Screen` applies the same readings, far more leniently, as a gate in front of costly
verifiers (the ``wer`` verifier's ASR): a candidate it rejects is not worth transcribing.
"""

from __future__ import annotations

import math

import numpy as np

from llasa.audio import SAMPLE_RATE
from llasa.extras import require
from llasa.verify.base import Score, VerifyRequest, check_wavs
from llasa.verify.text import counts_characters, units

# Typical read-speech rates (words/s; characters/s for zh/ja/yue): audiobook English is
# 2.5-3.5 words/s, Mandarin 4-5 characters/s.
_EXPECTED_RATE = {"word": 3.0, "character": 4.5}


class SanityVerifier:
    name = "sanity"
    supports_partial = True
    per_candidate = True

    def __init__(
        self,
        *,
        max_lead_s: float = 0.5,
        max_trail_s: float = 0.7,
        max_gap_s: float = 1.0,
        rate_range: tuple[float, float] = (0.5, 2.0),
        max_clip_ratio: float = 0.001,
    ):
        """``rate_range``: accepted speaking rate as a multiple of the typical rate for the language."""
        if not 0 < rate_range[0] < rate_range[1]:
            raise ValueError(f"rate_range must be (low, high) with 0 < low < high, got {rate_range}")
        self.max_lead_s, self.max_trail_s, self.max_gap_s = max_lead_s, max_trail_s, max_gap_s
        self.rate_range, self.max_clip_ratio = rate_range, max_clip_ratio
        self._vad = None

    @property
    def vad(self):
        if self._vad is None:
            silero_vad = require("silero_vad", "the sanity verifier (silero-vad)")

            self._vad = silero_vad.load_silero_vad(onnx=True)
        return self._vad

    def prepare(self, request: VerifyRequest) -> dict:
        n_units = len(units(request.text, request.language))
        if n_units == 0:
            raise ValueError(f"target text {request.text!r} has no words left after normalisation")
        kind = "character" if counts_characters(request.language) else "word"
        return {"units": n_units, "expected_rate": _EXPECTED_RATE[kind]}

    def segments(self, wav: np.ndarray) -> list[tuple[float, float]]:
        import torch
        get_speech_timestamps = require("silero_vad", "the sanity verifier (silero-vad)").get_speech_timestamps

        stamps = get_speech_timestamps(torch.from_numpy(wav), self.vad, sampling_rate=SAMPLE_RATE)
        return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]

    def score(self, wavs, request, state, *, partial=False):
        return [self._score_one(wav, state, partial) for wav in check_wavs(wavs)]

    def _score_one(self, wav: np.ndarray, state: dict, partial: bool) -> Score:
        duration = wav.shape[0] / SAMPLE_RATE
        clip_ratio = float(np.mean(np.abs(wav) >= 0.999)) if wav.size else 0.0
        segments = self.segments(wav) if wav.size else []
        if not segments:
            return Score(0.0, {"duration_s": duration, "voiced_s": 0.0, "clip_ratio": clip_ratio}, {"flags": "no_speech"})

        voiced = sum(end - start for start, end in segments)
        components = {
            "duration_s": duration,
            "voiced_s": voiced,
            "lead_silence_s": segments[0][0],
            "trail_silence_s": duration - segments[-1][1],
            "max_gap_s": max((b[0] - a[1] for a, b in zip(segments, segments[1:])), default=0.0),
            "clip_ratio": clip_ratio,
        }
        # excess past each tolerance, and the excess at which its factor falls to 1/e
        checks = {
            "lead_silence": (components["lead_silence_s"] - self.max_lead_s, 0.5),
            "long_gap": (components["max_gap_s"] - self.max_gap_s, 0.5),
            "clipping": (clip_ratio - self.max_clip_ratio, 0.01),
        }
        # a prefix may end in a pause and covers an unknown share of the text: no stop or rate check
        if not partial:
            rate_ratio = state["units"] / voiced / state["expected_rate"]
            components["rate"] = state["units"] / voiced
            components["rate_ratio"] = rate_ratio
            low, high = self.rate_range
            checks["trail_silence"] = (components["trail_silence_s"] - self.max_trail_s, 0.5)
            # on a log scale: twice too fast is as bad as twice too slow
            checks["too_fast"] = (math.log(rate_ratio / high), 0.25)
            checks["too_slow"] = (math.log(low / rate_ratio), 0.25)

        total, flags = 1.0, []
        for flag, (excess, scale) in checks.items():
            if excess > 0:
                total *= math.exp(-excess / scale)
                flags.append(flag)
        return Score(total, components, {"flags": ",".join(flags)} if flags else {})


class Screen:
    """Cheap reasons to reject a candidate before an expensive verifier (ASR) hears it.

    Only hopeless candidates fail: no speech at all (Silero VAD finds no segment), or, for a whole
    utterance, a length that no reading of the text could have: shorter than the text spoken at
    ``max_rate`` times the typical rate, or longer than the text spoken at ``1 / max_rate`` of it
    plus ``slack_s`` (room for pauses, and for short texts). The sanity verifier starts to
    penalise at half and twice the typical rate; these bounds sit at a quarter and four times.
    A prefix (``partial``) is judged on speech alone: it covers an unknown share of the text.
    """

    def __init__(self, *, max_rate: float = 4.0, slack_s: float = 4.0):
        if max_rate <= 1 or slack_s < 0:
            raise ValueError(f"need max_rate > 1 and slack_s >= 0, got {max_rate} and {slack_s}")
        self.max_rate, self.slack_s = max_rate, slack_s
        self.sanity = SanityVerifier()  # its VAD and its reading of the text

    def prepare(self, request: VerifyRequest) -> dict:
        state = self.sanity.prepare(request)
        typical_s = state["units"] / state["expected_rate"]
        return {"min_s": typical_s / self.max_rate, "max_s": typical_s * self.max_rate + self.slack_s}

    def reasons(self, wavs, state: dict, *, partial: bool = False) -> list[str | None]:
        """Per candidate, why it is rejected ("too_short", "too_long", "no_speech"), or None."""
        return [self._reason(wav, state, partial) for wav in check_wavs(wavs)]

    def _reason(self, wav: np.ndarray, state: dict, partial: bool) -> str | None:
        duration = wav.shape[0] / SAMPLE_RATE
        if not partial and duration < state["min_s"]:
            return "too_short"
        if not partial and duration > state["max_s"]:
            return "too_long"
        # the lengths are free to check; the VAD costs about 6 ms per second of audio on one core
        if not wav.size or not self.sanity.segments(wav):
            return "no_speech"
        return None
