"""Load on the speech server over loopback: batched scheduling against one request at a time.

The same seeded requests (three of four streamed as pcm, one of four as a whole wav) are sent
by ``--clients`` concurrent clients to a server in a subprocess, once with ``--max-batch``
rows decoded together and once with one row at a time. A seeded request has exactly one
right answer, so every response of the batched run must equal the same request's response
in the one-at-a-time run, byte for byte, and be well-formed audio of whole codec frames
within the text's budget. A request that failed, came back malformed, or cut short (a strict
prefix of its counterpart) is ``lost``. One that differs inside is ``diverged``: a batch of
other lengths rounds floats differently from a batch of one (about 1e-7), and now and then a
sampling draw falls on the other side of a token boundary and the sequence takes another path;
that is valid audio, counted apart.

Model: the default model when one is published (``llasa.defaults.default_model_path``), else a
random one of ``--preset`` over the tiny codec. A random model rarely ends its speech, so
every request runs to its text's token budget: that is the load measured.

Prints one JSON line: requests, lost, diverged, errors_5xx, errors_4xx, throughput (requests/s),
audio_x_realtime, p50_ms / p95_ms (whole response), ttfa_ms / ttfa_p95_ms (first audio byte
of the streamed responses), the same figures for one_at_a_time, and batched_speedup
(batched throughput over one-at-a-time).

Usage: python bench/serve.py [--requests 200] [--clients 32] [--max-batch 8] [--preset tiny] [--quick]

--quick: 8 requests from 4 clients, batches of up to 4, on a random tiny model (checks that the
bench runs; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

TEXTS = ["Hello there.", "Yes, please.", "How are you today?", "It is raining again.", "See you soon!",
         "Thank you very much.", "Good morning.", "Where is the station?"]  # fmt: skip
HOP = 320

SERVER = """
import sys, torch, uvicorn
from llasa.serve import build_app
torch.set_num_threads(int(sys.argv[5]))
app = build_app(sys.argv[1], sys.argv[2], max_batch=int(sys.argv[3]), queue_size=64)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[4]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_dirs(preset: str, root: Path, *, random: bool = False) -> tuple[str, str, str]:
    """(model, codec, label): the default model when one is published (and not ``random``), else a random one."""
    from llasa.defaults import default_codec_path, default_model_path

    if not random and default_model_path() and default_codec_path():
        return default_model_path(), default_codec_path(), str(default_model_path())
    from llasa.codec import Codec
    from llasa.lm.model import build_model, save
    from llasa.lm.vocab import build_tokenizer

    codec = Codec.from_config("tiny", seed=0)
    tokenizer = build_tokenizer(None, codec.codebook_size)
    save(build_model(preset, tokenizer, seed=0), tokenizer, root / "lm")
    codec.save_pretrained(root / "codec")
    return str(root / "lm"), str(root / "codec"), f"random-{preset}"


async def one_request(client: httpx.AsyncClient, model_id: str, i: int) -> dict:
    stream = i % 4 != 3
    body = {"model": model_id, "input": TEXTS[i % len(TEXTS)], "voice": "default", "seed": i,
            "response_format": "pcm" if stream else "wav", "stream": stream}  # fmt: skip
    start = time.perf_counter()
    first = None
    data = bytearray()
    try:
        async with client.stream("POST", "/v1/audio/speech", json=body) as response:
            async for piece in response.aiter_bytes():
                if first is None and piece:
                    first = time.perf_counter() - start
                data += piece
            status = response.status_code
    except httpx.HTTPError as exc:
        return {"i": i, "status": 0, "error": repr(exc)}
    return {"i": i, "status": status, "stream": stream, "latency": time.perf_counter() - start, "ttfa": first,
            "audio": bytes(data)}  # fmt: skip


async def load(url: str, model_id: str, requests: int, clients: int) -> tuple[list[dict], float]:
    queue = list(range(requests))
    results: list[dict] = []

    async def worker(client):
        while queue:
            results.append(await one_request(client, model_id, queue.pop(0)))

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return sorted(results, key=lambda r: r["i"]), time.perf_counter() - start


def samples(result: dict) -> np.ndarray | None:
    """The response's audio as 16-bit samples, or None when it is not well-formed."""
    if result["status"] != 200:
        return None
    if result["stream"]:
        raw = result["audio"]
        return np.frombuffer(raw, "<i2") if len(raw) % (2 * HOP) == 0 else None
    try:
        wav, rate = sf.read(io.BytesIO(result["audio"]), dtype="int16")
    except Exception:
        return None
    return wav if rate == 16000 and len(wav) % HOP == 0 else None


def run_mode(model: str, codec: str, max_batch: int, args) -> tuple[dict, list[dict]]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, model, codec, str(max_batch), str(port), str(args.threads)],
                              env={**os.environ, "TQDM_DISABLE": "1"})  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        model_id = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]  # the server names its model
        asyncio.run(load(url, model_id, min(args.clients, 4), min(args.clients, 4)))  # warm-up, not counted
        results, wall = asyncio.run(load(url, model_id, args.requests, args.clients))
    finally:
        server.terminate()
        server.wait(timeout=60)
    ok = [r for r in results if r["status"] == 200]
    latencies = np.array([r["latency"] for r in ok]) * 1000
    ttfa = np.array([r["ttfa"] for r in ok if r["stream"] and r["ttfa"] is not None]) * 1000
    audio_seconds = sum(len(s) for s in (samples(r) for r in ok) if s is not None) / 16000
    figures = {
        "throughput": round(len(ok) / wall, 3),
        "audio_x_realtime": round(audio_seconds / wall, 3),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(ok) else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 1) if len(ok) else None,
        "ttfa_ms": round(float(np.percentile(ttfa, 50)), 1) if len(ttfa) else None,
        "ttfa_p95_ms": round(float(np.percentile(ttfa, 95)), 1) if len(ttfa) else None,
        "errors_5xx": sum(r["status"] >= 500 for r in results),
        "errors_4xx": sum(400 <= r["status"] < 500 for r in results),
        "wall_s": round(wall, 2),
    }
    return figures, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--preset", default="tiny", help="random model preset when no default model exists")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--quick", action="store_true", help="a few requests on a random tiny model: seconds, for CI")
    args = parser.parse_args()
    if args.quick:  # only the defaults change: sizes given on the command line still hold
        parser.set_defaults(requests=8, clients=4, max_batch=4)
        args = parser.parse_args()

    from llasa.tts import Synthesizer

    with tempfile.TemporaryDirectory() as tmp:
        # quick: a random tiny model keeps the server's load and every request short
        model, codec, label = model_dirs(args.preset, Path(tmp), random=args.quick)
        batched, batched_results = run_mode(model, codec, args.max_batch, args)
        single, single_results = run_mode(model, codec, 1, args)
        synth = Synthesizer.from_pretrained(model, codec)
        budget = {t: synth.max_new_tokens(t) * HOP for t in TEXTS}

    lost = diverged = 0
    for b, s in zip(batched_results, single_results):
        budget_samples = budget[TEXTS[b["i"] % len(TEXTS)]]
        got, reference = samples(b), samples(s)
        # empty audio is valid: a random model ends at its first token now and then
        if any(x is None or len(x) > budget_samples for x in (got, reference)):
            lost += 1  # failed, malformed or over budget, in either run
        elif not np.array_equal(got, reference):
            shorter, longer = sorted((got, reference), key=len)
            if np.array_equal(longer[: len(shorter)], shorter):
                lost += 1  # one is cut short: the other has all of it and more
            else:
                diverged += 1  # differs inside: a sampling draw flipped by float rounding (see the docstring)
    print(json.dumps({
        "model": label,
        "requests": args.requests,
        "clients": args.clients,
        "max_batch": args.max_batch,
        "quick": args.quick,
        "lost": lost,
        "diverged": diverged,
        **{k: batched[k] for k in ("errors_5xx", "errors_4xx", "throughput", "audio_x_realtime", "p50_ms", "p95_ms",
                                   "ttfa_ms", "ttfa_p95_ms", "wall_s")},
        "one_at_a_time": single,
        "batched_speedup": round(batched["throughput"] / single["throughput"], 2) if single["throughput"] else None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
