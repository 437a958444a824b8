"""Verifiers: reward models that score candidate waveforms of one TTS request (higher is better).

    from llasa.verify import VerifyRequest, get_verifier, CombinedVerifier
    request = VerifyRequest(text="Hello there.", prompt_audio=prompt_wav)
    sim = get_verifier("sim")                 # Resemblyzer; get_verifier("sim", model="wavlm-sv-dir")
    state = sim.prepare(request)              # once per request
    scores = sim.score(candidate_wavs, request, state)            # outcome reward (best-of-N)
    scores = sim.score(prefix_wavs, request, state, partial=True) # process reward (beam search)
    both = CombinedVerifier({"sim": 1.0, "wer": 1.0}, normalize="rank")

Built-ins: sim (speaker), wer (ASR content: Whisper tiny.en through faster-whisper when installed,
else PocketSphinx; hopeless candidates screened out before the ASR), dnsmos (quality), sanity
(VAD timing/rate/clipping), emotion (embedding similarity, user-supplied model).
"""

from llasa.verify.base import MIN_SECONDS, Score, Verifier, VerifyRequest
from llasa.verify.combine import CombinedVerifier, normalize_batch, parse_weights
from llasa.verify.registry import available_verifiers, get_verifier, register_verifier

__all__ = [
    "MIN_SECONDS",
    "CombinedVerifier",
    "Score",
    "Verifier",
    "VerifyRequest",
    "available_verifiers",
    "get_verifier",
    "normalize_batch",
    "parse_weights",
    "register_verifier",
]
