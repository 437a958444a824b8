"""``dnsmos``: non-intrusive speech quality (Microsoft DNSMOS P.835 + P.808) through ``speechmos``,
whose ONNX models ship inside the wheel. Needs no prompt or text; works on prefixes too (clips
shorter than DNSMOS's 9 s window are tiled up to it by speechmos).
"""

from __future__ import annotations

import numpy as np

from llasa.audio import SAMPLE_RATE
from llasa.extras import require
from llasa.verify.base import Score, VerifyRequest, check_wavs, is_too_short

# the floor of the MOS scale: what a clip too short to rate gets
_MOS_FLOOR = 1.0


class DNSMOSVerifier:
    """total = overall MOS (OVRL, 1-5); signal, background and P.808 MOS in components.

    ``personalized``: the pDNSMOS variant, which also penalises interfering talkers.
    """

    name = "dnsmos"
    supports_partial = True
    per_candidate = True

    def __init__(self, *, personalized: bool = False):
        self.model_type = "dnsmos_personalized" if personalized else "dnsmos"

    def prepare(self, request: VerifyRequest) -> None:
        return None

    def score(self, wavs, request, state, *, partial=False):
        dnsmos = require("speechmos.dnsmos", "the dnsmos verifier")

        scores = []
        for wav in check_wavs(wavs):
            if is_too_short(wav):
                floor = {key: _MOS_FLOOR for key in ("ovrl", "sig", "bak", "p808")}
                scores.append(Score(_MOS_FLOOR, floor, {"flags": "too_short"}))
                continue
            mos = dnsmos.run(np.clip(wav, -1.0, 1.0), SAMPLE_RATE, model_type=self.model_type)
            components = {key: float(mos[f"{key}_mos"]) for key in ("ovrl", "sig", "bak", "p808")}
            scores.append(Score(components["ovrl"], components))
        return scores
