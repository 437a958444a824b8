"""Serving: an OpenAI-compatible speech API (FastAPI) with streaming, voices and a web page.

>>> app = build_app("path/to/model", "path/to/codec")      # or create_app(synthesizer, ...)
>>> uvicorn.run(app, host="127.0.0.1", port=8000)           # what `llasa serve` does
"""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from llasa.defaults import default_voice_name, is_default_model
from llasa.extras import require

if TYPE_CHECKING:
    from llasa.serve.app import Limits

__all__ = ["Limits", "Job", "QueueFull", "Scheduler", "VoiceStore", "build_app", "check_bind", "create_app", "serve_in_thread"]

# imported on first use: `llasa --help` and `llasa tts` must work without the `serve` extra (FastAPI)
_LAZY = {
    "Limits": "llasa.serve.app",
    "create_app": "llasa.serve.app",
    "Job": "llasa.serve.scheduler",
    "QueueFull": "llasa.serve.scheduler",
    "Scheduler": "llasa.serve.scheduler",
    "VoiceStore": "llasa.serve.voices",
    "shipped_voices": "llasa.serve.voices",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llasa.serve' has no attribute {name!r}")

BACKENDS = ("transformers", "vllm")


def check_bind(host: str, api_key: str | None) -> None:
    """Anything reachable beyond this machine must ask for a key: refuse to start otherwise."""
    if api_key:
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a host name may resolve to anything
    if not loopback:
        raise ValueError(
            f"refusing to serve on {host} without an API key: pass --api-key (or set LLASA_API_KEY), "
            "or bind to 127.0.0.1"
        )


def build_app(
    model: str | Path,
    codec,
    *,
    device: str = "cpu",
    backend: str = "transformers",
    max_batch: int = 8,
    queue_size: int = 32,
    voices_dir: str | Path | None = None,
    api_key: str | None = None,
    limits: Limits | None = None,
):
    """Load a model and its codec and build the app (``model``: hub id or local directory)."""
    for package in ("fastapi", "uvicorn", "multipart"):
        require(package, "the server")  # before minutes of model loading
    from llasa.lm.model import resolve
    from llasa.serve.app import Limits, create_app
    from llasa.serve.scheduler import Scheduler
    from llasa.serve.voices import VoiceStore, shipped_voices
    from llasa.tts import Synthesizer

    limits = limits or Limits()

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    model_dir = resolve(model)
    if backend == "vllm":
        from llasa.codec import Codec
        from llasa.serve.vllm_backend import VLLMBackend

        # the LM runs in vLLM's engine, which takes most of the GPU; the transformers copy stays on
        # the CPU for the tokenizer, the vocabulary checks and searches (which step rows themselves)
        codec = codec if isinstance(codec, Codec) else Codec.from_pretrained(codec, device=device)
        synth = Synthesizer.from_pretrained(model_dir, codec, device="cpu")
        engine = VLLMBackend(str(model_dir), synth.vocab, max_batch=max_batch, queue_size=queue_size,
                             context_length=synth.context_length)  # fmt: skip
    else:
        synth = Synthesizer.from_pretrained(model_dir, codec, device=device)
        engine = Scheduler(synth.model, synth.vocab, max_batch=max_batch, queue_size=queue_size,
                           context_length=synth.context_length, prefill_model=synth.prefill_model)  # fmt: skip
    builtin = is_default_model(model_dir)
    voices = VoiceStore(voices_dir, shipped=shipped_voices(model_dir, builtin=builtin), default_name=default_voice_name(model_dir))
    # what /v1/models lists: never a path on the server
    model_id = "llasa" if builtin else Path(model).name if Path(model).expanduser().exists() else str(model)
    return create_app(synth, backend=engine, model_id=model_id, voices=voices, api_key=api_key, limits=limits)


@contextlib.contextmanager
def serve_in_thread(app, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread (tests, benchmarks, notebooks); yields
    its base URL (``port=0`` picks a free port) and stops the server on exit."""
    uvicorn = require("uvicorn", "the server")
    check_bind(host, app.state.api_key)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="llasa-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
