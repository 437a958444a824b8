"""`llasa serve`: the speech API and its web page (uvicorn over :func:`llasa.serve.build_app`)."""

from __future__ import annotations

import argparse
import os


def add_commands(subparsers) -> None:
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
    serve.add_argument("--max-input-chars", type=int, default=4096, help="longest text accepted (default 4096)")
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest voice clip upload (default 10 MiB)")
    serve.add_argument("--backend", choices=("transformers", "vllm"), default="transformers",
                       help="LM engine: transformers (any device) or vllm (CUDA, pip install vllm)")  # fmt: skip
    serve.add_argument("--device", default="cpu", help="torch device for the model and codec (cpu, cuda, ...)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from llasa.defaults import codec_or_default, model_or_default
    from llasa.serve import Limits, build_app, check_bind

    check_bind(args.host, args.api_key)  # before minutes of model loading
    if args.max_batch < 1 or args.queue_size < 1 or args.timeout <= 0:
        raise ValueError("--max-batch and --queue-size must be >= 1 and --timeout > 0")
    model, codec = model_or_default(args.model), codec_or_default(args.codec)
    limits = Limits(max_input_chars=args.max_input_chars, max_upload_bytes=int(args.max_upload_mb * 2**20),
                    timeout=args.timeout)  # fmt: skip
    app = build_app(model, codec, device=args.device, backend=args.backend, max_batch=args.max_batch,
                    queue_size=args.queue_size, voices_dir=args.voices_dir, api_key=args.api_key, limits=limits)  # fmt: skip
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
