"""`llasa serve`: the speech API and its web page (uvicorn over :func:`llasa.serve.build_app`)."""

from __future__ import annotations

import argparse
import math
import os

from llasa.extras import require


def add_commands(subparsers) -> None:
    from llasa.tts import MAX_INPUT_CHARS

    serve = subparsers.add_parser(
        "serve",
        help="serve an OpenAI-compatible speech API and a web page",
        description="Serve POST /v1/audio/speech (OpenAI-compatible, with streaming), voices, and a page at /.",
    )
    serve.add_argument("--model", help="Llasa model: hub id or local directory (default: the published model)")
    serve.add_argument("--codec", help="X-codec2 codec: hub id or local directory (default: the published codec)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --api-key)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=os.environ.get("LLASA_API_KEY"),
                       help="require 'Authorization: Bearer KEY' (default: $LLASA_API_KEY)")  # fmt: skip
    serve.add_argument("--voices-dir", help="keep uploaded voices here across restarts (default: in memory)")
    serve.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    serve.add_argument("--queue-size", type=int, default=32, help="requests that may wait; more get 429 (default 32)")
    serve.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take, queueing included")
    serve.add_argument("--max-input-chars", type=int, default=MAX_INPUT_CHARS,
                       help=f"longest text accepted (default {MAX_INPUT_CHARS})")  # fmt: skip
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest voice clip upload (default 10 MiB)")
    serve.add_argument("--backend", choices=("transformers", "vllm"), default="transformers",
                       help="LM engine: transformers (any device) or vllm (CUDA, pip install vllm)")  # fmt: skip
    serve.add_argument("--device", default="cpu", help="torch device for the model and codec (cpu, cuda, ...)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from llasa.audio import check_writable
    from llasa.defaults import codec_or_default, model_or_default
    from llasa.serve import Limits, build_app, check_bind

    check_bind(args.host, args.api_key)  # before minutes of model loading
    if args.max_batch < 1 or args.queue_size < 1 or not 0 < args.timeout < math.inf:
        raise ValueError("--max-batch and --queue-size must be >= 1 and --timeout > 0")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be from 0 to 65535, got {args.port}")
    if args.max_input_chars < 1 or not 0 < args.max_upload_mb < math.inf:
        raise ValueError(f"--max-input-chars must be >= 1 and --max-upload-mb > 0, got {args.max_input_chars} and "
                         f"{args.max_upload_mb}")  # fmt: skip
    if args.voices_dir is not None:
        check_writable(args.voices_dir, folder=True, what="--voices-dir")
    model, codec = model_or_default(args.model), codec_or_default(args.codec)
    limits = Limits(max_input_chars=args.max_input_chars, max_upload_bytes=int(args.max_upload_mb * 2**20),
                    timeout=args.timeout)  # fmt: skip
    app = build_app(model, codec, device=args.device, backend=args.backend, max_batch=args.max_batch,
                    queue_size=args.queue_size, voices_dir=args.voices_dir, api_key=args.api_key, limits=limits)  # fmt: skip
    require("uvicorn", "llasa serve").run(app, host=args.host, port=args.port, log_level="info")
    return 0
