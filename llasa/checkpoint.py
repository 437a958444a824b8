"""Checkpoint folders and devices, checked before loading: a corrupt or truncated file, a hub
id that cannot be fetched or a device that is not there fails with one line naming it, not
with a traceback from deep inside transformers, safetensors or torch.

Shared by the LM (:mod:`llasa.lm.model`) and the codec (:mod:`llasa.codec.loading`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def download(name: str, *, what: str, allow_patterns: list[str]) -> Path:
    """Fetch hub id ``name`` (``what``: "model", "codec") into the Hugging Face cache; a ValueError
    naming it when the hub cannot give it (no network, no such repository, no access)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=allow_patterns))
    except (OSError, ValueError) as exc:  # huggingface_hub's errors derive from these (HTTP, offline, not found)
        reason = " ".join(str(exc).split())
        raise ValueError(f"{what} '{name}' is not a local directory, and the hub could not provide it: {reason}") from None


def check_files(directory: str | Path, *, what: str) -> Path:
    """Every JSON and safetensors file in ``directory`` (a checkpoint of a ``what``) can be read:
    JSON that parses, safetensors whose header is whole and whose data is all there (a download
    or copy cut short). Raises ValueError naming the first file that cannot be read."""
    directory = Path(directory)
    for file in sorted(directory.glob("*.json")):
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{what} '{directory}': {file.name} is not readable JSON ({exc})") from None
    from safetensors import SafetensorError, safe_open

    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass  # opening parses the header and checks that the file holds all the data it lists
        except (OSError, SafetensorError) as exc:
            raise ValueError(
                f"{what} '{directory}': {file.name} is corrupt or truncated ({exc}); download or copy it again"
            ) from None
    return directory


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device that exists on this machine, else a ValueError saying why."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {str(device)!r} is not a torch device (cpu, cuda, cuda:1, mps, ...): {exc}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device '{device}': no CUDA GPU is available here (use --device cpu)")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device '{device}': this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return dev
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:  # torch asserts when a backend is not compiled in
        raise ValueError(f"device '{device}' is not available here: {' '.join(str(exc).split())}") from None
    return dev
