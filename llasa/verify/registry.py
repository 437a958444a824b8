"""Verifiers by name. Built-ins are imported only when asked for, so ``import llasa.verify``
loads no model library (resemblyzer, pocketsphinx, onnxruntime, librosa)."""

from __future__ import annotations

import importlib
from typing import Callable

from llasa.verify.base import Verifier

_BUILTIN = {
    "sim": "llasa.verify.speaker:speaker_similarity",
    "wer": "llasa.verify.wer:WERVerifier",
    "dnsmos": "llasa.verify.quality:DNSMOSVerifier",
    "sanity": "llasa.verify.sanity:SanityVerifier",
    "emotion": "llasa.verify.emotion:emotion_similarity",
}
_REGISTERED: dict[str, Callable[..., Verifier]] = {}


def register_verifier(name: str, factory: Callable[..., Verifier], *, overwrite: bool = False) -> None:
    """Make ``get_verifier(name, **kwargs)`` call ``factory(**kwargs)``."""
    if not overwrite and name in available_verifiers():
        raise ValueError(f"a verifier named '{name}' is already registered (pass overwrite=True to replace it)")
    _REGISTERED[name] = factory


def available_verifiers() -> list[str]:
    return sorted({*_BUILTIN, *_REGISTERED})


def get_verifier(name: str, **kwargs) -> Verifier:
    """A new verifier instance; its model loads on first use. kwargs go to the verifier's constructor."""
    if name in _REGISTERED:
        return _REGISTERED[name](**kwargs)
    if name not in _BUILTIN:
        raise KeyError(f"unknown verifier '{name}'; available: {', '.join(available_verifiers())}")
    module, attr = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)
