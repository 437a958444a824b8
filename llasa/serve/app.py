"""The HTTP API: OpenAI's ``/v1/audio/speech`` and voices, over a batching backend.

Choices a client should know (also in the API's OpenAPI page at /docs):

* ``response_format``: wav (default), flac or pcm (16-bit little-endian mono at 16 kHz);
  mp3, opus and aac are refused with 400 (no encoder is shipped).
* ``speed`` must be 1.0 (Llasa has no rate control; a resampled "speed" would change the
  pitch), and ``instructions`` is refused: both 400 rather than silently ignored.
* ``stream: true`` (or OpenAI's ``stream_format: "audio"``) sends audio while the model is
  still speaking: wav with an unknown-length header, or raw pcm. A failure after the first
  byte (a timeout, say) can only end the stream early.
* ``voice``: ``default`` (the model's own voice), an id from ``POST /v1/voices``, or
  ``{"id": ...}``; no other names exist, so OpenAI's built-in names are 400.
* sampling: ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty``, ``ras_window``,
  ``ras_threshold``, ``seed`` as extra
  body fields (those left out are the model's own, ``Synthesizer.sampling``); a seeded request
  reproduces ``Synthesizer.tts(..., seed=...)``.
* search: ``n``, ``strategy`` (best-of-n, beam, prm-sim+orm-wer), ``verifiers`` ("wer",
  "sim:1,wer:0.5", a list or a name -> weight map), ``beam_width``, ``expand``, ``step_tokens``
  as extra body fields run :class:`llasa.search.Searcher`. Searches run one at a time on their
  own thread beside the decoding batch, and return whole audio (no streaming). With
  ``return_candidates: true`` a search answers JSON instead: the chosen audio and, per text
  chunk, every candidate with its audio (base64, in ``response_format``), its scores and
  whether it was chosen (``SearchResult.to_dict`` plus the audio).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hmac
import logging
import math
import struct
import time
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from llasa import audio as audio_io
from llasa.lm.sampling import SamplingParams, check_seed
from llasa.serve.scheduler import ChunkEnd, Codes, Done, Failed, Job, QueueFull, Scheduler
from llasa.serve.voices import VoiceStore
from llasa.tts import MAX_CANDIDATES, MAX_INPUT_CHARS, MAX_VOICE_SECONDS, MIN_VOICE_SECONDS, Synthesizer, Voice

log = logging.getLogger("llasa.serve")

STATIC = Path(__file__).parent / "static"
FORMATS = {"wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/L16; rate=16000; channels=1"}
STREAM_FORMATS = ("wav", "pcm")
UNSUPPORTED_FORMATS = ("mp3", "opus", "aac")
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                413: "invalid_request_error", 429: "rate_limit_error", 504: "timeout_error"}  # fmt: skip


@dataclass(frozen=True)
class Limits:
    max_input_chars: int = MAX_INPUT_CHARS
    max_upload_bytes: int = 10 * 2**20  # a 20 s clip is 640 kB as 16-bit wav at 16 kHz; 10 MiB allows 48 kHz stereo
    max_clip_seconds: float = MAX_VOICE_SECONDS
    timeout: float = 120.0  # seconds from arrival to the last code, queueing included
    max_search_rows: int = MAX_CANDIDATES  # candidates (n, or beam_width x expand) one search may decode side by side
    search_queue: int = 4  # searches that may wait for the one running; more get 429


class SpeechRequest(BaseModel):
    # unknown fields are errors: a misspelt "temprature" must not be silently ignored
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str
    voice: str | dict[str, Any] | None = None
    response_format: str = "wav"
    speed: float = 1.0
    instructions: str | None = None
    stream: bool = False
    stream_format: Literal["audio", "sse"] | None = None
    # sampling left out (None) is the model's own (`llasa_sampling` in its config), else the official
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    ras_window: int | None = None
    ras_threshold: float | None = None
    seed: int | None = None
    n: int | None = None
    strategy: str | None = None
    verifiers: str | list[str] | dict[str, float] | None = None
    beam_width: int | None = None
    expand: int | None = None
    step_tokens: int | None = None
    return_candidates: bool = False

    def search_settings(self) -> dict | None:
        """The Searcher arguments this request sets, or None when it asks for no search."""
        settings = {k: getattr(self, k) for k in ("n", "strategy", "verifiers", "beam_width", "expand", "step_tokens")}
        settings = {k: v for k, v in settings.items() if v is not None}
        if isinstance(settings.get("verifiers"), list):
            settings["verifiers"] = ",".join(settings["verifiers"])
        return settings or None


def error_body(status: int, message: str) -> dict:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown" (0xFFFFFFFF), as streaming servers send it."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", 0xFFFFFFFF)


class _BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413, by Content-Length or while reading."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = JSONResponse(error_body(413, self._message()), status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self._message())  # raised inside the endpoint's body parsing
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body too large: the limit is {self.max_bytes / 2**20:.1f} MiB"


class SearchRunner:
    """Searches, one at a time on their own thread: a search decodes its own rows (and keeps,
    drops and copies them between steps) and scores them with verifier models, so it cannot
    join the decoding batch. Verifiers load once and are kept for later requests."""

    def __init__(self, queue_size: int):
        self.queue_size = queue_size
        self.verifier_cache: dict = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llasa-search")
        self._pending = 0

    async def run(self, work, timeout: float, *, what: str = "search"):
        """``work()`` on the search thread; its errors of bad input become 400 naming ``what``."""
        if self._pending > self.queue_size:
            raise HTTPException(429, f"the server is busy: {self._pending} searches are running or waiting; retry later",
                                headers={"Retry-After": "5"})  # fmt: skip
        self._pending += 1
        future = self._executor.submit(work)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the {what} timed out after {timeout:g} s") from None
        except HTTPException:
            raise
        except (ValueError, KeyError, ImportError) as exc:  # bad settings, unknown or uninstalled verifiers
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise HTTPException(400, f"{what}: {message}") from None
        finally:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def create_app(
    synth: Synthesizer,
    *,
    backend: Scheduler | None = None,
    model_id: str = "llasa",
    voices: VoiceStore | None = None,
    api_key: str | None = None,
    limits: Limits = Limits(),
) -> FastAPI:
    """The API over a loaded synthesizer. ``backend`` defaults to a batching :class:`Scheduler`
    on ``synth.model``; it is closed when the app shuts down."""
    backend = backend or Scheduler(synth.model, synth.vocab, context_length=synth.context_length,
                                   prefill_model=synth.prefill_model)  # fmt: skip
    voices = voices if voices is not None else VoiceStore()

    searches = SearchRunner(limits.search_queue)

    @asynccontextmanager
    async def lifespan(app):
        yield
        searches.close()
        await run_in_threadpool(backend.close)

    app = FastAPI(title="Llasa speech API", version="1", lifespan=lifespan, description=__doc__)
    app.state.backend, app.state.voices, app.state.synth, app.state.api_key = backend, voices, synth, api_key
    app.state.searches = searches
    app.add_middleware(_BodyLimit, max_bytes=limits.max_upload_bytes + 2**16)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body(400, f"invalid request: {problems}"), status_code=400)

    async def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    protected = [Depends(authorize)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse((STATIC / "index.html").read_text())

    @app.get("/health")
    async def health():
        stats = backend.stats()
        return JSONResponse({"status": "ok" if stats["alive"] else "down", "model": model_id, **stats},
                            status_code=200 if stats["alive"] else 503)  # fmt: skip

    @app.get("/v1/models", dependencies=protected)
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "llasa"}]}

    # ------------------------------------------------------------------ voices
    @app.get("/v1/voices", dependencies=protected)
    @app.get("/v1/audio/voices", dependencies=protected, include_in_schema=False)
    async def list_voices():
        return {"object": "list", "data": [v.describe() for v in voices.list()]}

    @app.get("/v1/voices/{voice_id}", dependencies=protected)
    async def get_voice(voice_id: str):
        try:
            return voices.get(voice_id).describe()
        except KeyError:
            raise HTTPException(404, f"no voice '{voice_id}'") from None

    @app.post("/v1/voices", dependencies=protected)
    @app.post("/v1/audio/voices", dependencies=protected, include_in_schema=False)
    async def create_voice(request: Request):
        """Multipart: the clip as ``file`` (or OpenAI's ``audio_sample``), its transcript as ``text``, an optional ``name``.
        Without ``text`` the clip is transcribed by the server's ASR (the ``wer`` verifier's); the voice
        object returned says so (``"transcribed": true``) and holds the transcript used (``text``): a
        checked transcript clones better."""
        try:
            form = await request.form(max_files=1, max_fields=8)
        except HTTPException:
            raise
        except Exception as exc:  # python-multipart's parse errors: the upload itself is malformed
            raise HTTPException(400, f"malformed multipart upload: {exc}") from None
        clip = form.get("file") or form.get("audio_sample")
        text = form.get("text")
        name = form.get("name") or None
        if not isinstance(clip, UploadFile):
            raise HTTPException(400, "upload the reference clip as the multipart file field 'file'")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise HTTPException(400, "the field 'text' (the transcript of the clip) is empty: send the transcript, or "
                                "leave the field out to have the clip transcribed")  # fmt: skip
        data = await clip.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, f"the clip is larger than the {limits.max_upload_bytes / 2**20:.1f} MiB limit")
        if name is not None and (not isinstance(name, str) or len(name) > 128):
            raise HTTPException(400, "'name' must be text of at most 128 characters")
        name = name or Path(clip.filename or "voice").stem[:128]
        if text is None:
            # the ASR is the search's wer verifier's (a model held once): both run on the search thread
            voice = await searches.run(lambda: _encode_voice(synth, data, None, name, limits, asr=_asr(searches)),
                                       limits.timeout, what="voice transcription")  # fmt: skip
        else:
            voice = await run_in_threadpool(_encode_voice, synth, data, text, name, limits)
        try:
            return voices.add(voice).describe()
        except OverflowError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.delete("/v1/voices/{voice_id}", dependencies=protected)
    @app.delete("/v1/audio/voices/{voice_id}", dependencies=protected, include_in_schema=False)
    async def delete_voice(voice_id: str):
        try:
            voices.delete(voice_id)
        except KeyError:
            raise HTTPException(404, f"no voice '{voice_id}'") from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}

    # ------------------------------------------------------------------ speech
    @app.post("/v1/audio/speech", dependencies=protected)
    async def speech(body: SpeechRequest, request: Request):
        if body.model != model_id:
            raise HTTPException(404, f"no model '{body.model}': this server serves '{model_id}' (see GET /v1/models)")
        fmt = body.response_format.lower()
        if fmt in UNSUPPORTED_FORMATS:
            raise HTTPException(400, f"response_format '{fmt}' is not supported: use wav, flac or pcm")
        if fmt not in FORMATS:
            raise HTTPException(400, f"unknown response_format '{body.response_format}': use wav, flac or pcm")
        if body.stream_format == "sse":
            raise HTTPException(400, "stream_format 'sse' is not supported: use 'audio' (or stream: true)")
        stream = body.stream or body.stream_format == "audio"
        if stream and fmt not in STREAM_FORMATS:
            raise HTTPException(400, f"streaming sends wav or pcm, not {fmt}")
        if body.speed != 1.0:
            raise HTTPException(400, "speed must be 1.0: Llasa has no speaking-rate control")
        if body.instructions:
            raise HTTPException(400, "instructions are not supported: Llasa takes its style from the voice clip")
        if len(body.input) > limits.max_input_chars:
            raise HTTPException(413, f"input is {len(body.input)} characters; the limit is {limits.max_input_chars}")
        voice_id = body.voice.get("id") if isinstance(body.voice, dict) else body.voice
        voice = _voice(voices, "default" if voice_id is None else str(voice_id)).voice
        try:
            params = synth.sampling.but(**{name: getattr(body, name) for name in SamplingParams.names()})
            check_seed(body.seed)
            chunks = synth.split_text(body.input, voice)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        settings = body.search_settings()
        if body.return_candidates and settings is None:
            raise HTTPException(400, "return_candidates lists a search's candidates: also send n, strategy or verifiers")
        if settings is not None:
            if stream:
                raise HTTPException(400, "search picks among whole candidates, so it cannot stream: send stream: false")
            found = await _search(searches, synth, body.input, voice, settings, params, body.seed, limits)
            if body.return_candidates:
                return JSONResponse(await run_in_threadpool(_candidates, found, fmt))
            return Response(audio_io.encode_bytes(found.audio, synth.sample_rate, fmt), media_type=FORMATS[fmt])

        job = Job([synth.prompt(c, voice) for c in chunks], [synth.max_new_tokens(c) for c in chunks], params,
                  seed=body.seed, minimums=[synth.min_new_tokens(c) for c in chunks], timeout=limits.timeout)  # fmt: skip
        try:
            backend.submit(job)
        except QueueFull as exc:
            raise HTTPException(429, str(exc), headers={"Retry-After": "1"}) from None
        except ValueError as exc:  # a job this backend cannot serve
            raise HTTPException(400, str(exc)) from None
        if stream:
            return await _stream(synth, job, fmt, voice)
        codes: list[list[np.ndarray]] = [[] for _ in chunks]
        async for event in _events(job, request):
            if isinstance(event, Codes):
                codes[event.chunk].append(event.codes)
        joined = [np.concatenate(c) if c else np.zeros(0, dtype=np.int64) for c in codes]
        wav = await run_in_threadpool(_render, synth, joined, voice)
        return Response(audio_io.encode_bytes(wav, synth.sample_rate, fmt), media_type=FORMATS[fmt])

    return app


async def _search(searches: SearchRunner, synth, text, voice, settings: dict, params, seed, limits: Limits):
    """The :class:`llasa.search.SearchResult` of the request's search."""
    try:
        from llasa.search import Searcher
    except ImportError as exc:
        raise HTTPException(400, f"search not available: {exc}") from None
    try:
        searcher = Searcher(**settings, verifier_cache=searches.verifier_cache, max_rows=limits.max_search_rows)
    except (ValueError, KeyError, ImportError) as exc:
        raise HTTPException(400, f"search: {exc.args[0] if exc.args else exc}") from None
    return await searches.run(lambda: searcher(synth, text, voice, params=params, seed=seed), limits.timeout)


def _candidates(found, fmt: str) -> dict:
    """A search's answer as JSON: the chosen audio, and every candidate of every chunk with its
    audio and scores (a score that is not a number, as a candidate no verifier could judge, is null)."""

    def encoded(wav: np.ndarray) -> str:
        return base64.b64encode(audio_io.encode_bytes(wav, found.sample_rate, fmt)).decode("ascii")

    report = _finite(found.to_dict())
    for chunk, described in zip(found.chunks, report["chunks"]):
        for j, (candidate, entry) in enumerate(zip(chunk.candidates, described["candidates"])):
            entry.update(index=j, chosen=j == chunk.chosen, audio=encoded(candidate.audio))
    return {"object": "audio.speech.search", "format": fmt, "media_type": FORMATS[fmt], "sample_rate": found.sample_rate,
            "audio": encoded(found.audio), **report}  # fmt: skip


def _finite(value):
    """``value`` with NaN and infinities as None: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _voice(voices: VoiceStore, voice_id: str):
    try:
        return voices.get(voice_id)
    except KeyError:
        raise HTTPException(400, f"unknown voice '{voice_id}': use 'default' or an id from GET /v1/voices") from None


def _asr(searches: SearchRunner):
    """The ASR of the wer verifier that searches use (loaded once, kept in their cache)."""
    from llasa.extras import MissingExtra
    from llasa.verify import get_verifier

    if "wer" not in searches.verifier_cache:
        searches.verifier_cache["wer"] = get_verifier("wer")
    try:
        return searches.verifier_cache["wer"].asr
    except MissingExtra as exc:
        raise HTTPException(400, f"send the clip's transcript as the field 'text': this server has no ASR to transcribe "
                            f"it ({exc})") from None  # fmt: skip


def _encode_voice(synth: Synthesizer, data: bytes, text: str | None, name: str, limits: Limits, *, asr=None):
    try:
        wav = audio_io.load(data, synth.sample_rate, min_seconds=MIN_VOICE_SECONDS, max_seconds=limits.max_clip_seconds)
        with warnings.catch_warnings():  # the response says the transcript was heard, not given
            warnings.simplefilter("ignore", UserWarning)
            return synth.voice(wav, text, name=name, source_rate=synth.sample_rate, asr=asr)
    except ValueError as exc:  # AudioError included: unreadable, empty, too short or too long
        raise HTTPException(400, str(exc)) from None


def _render(synth: Synthesizer, codes: list[np.ndarray], voice) -> np.ndarray:
    """As Synthesizer.tts joins chunks: decode with the voice as codec context, cross-fade.
    One chunk per call, as tts does (a batch of several would draw a progress bar in the log)."""
    return synth.join([synth.decode([c], voice)[0] for c in codes])


async def _events(job: Job, request: Request | None) -> AsyncIterator:
    """The job's events up to Done; Failed becomes an HTTP error. Checks every quarter second
    whether the client left (``request``) and cancels the job then, or whenever the caller
    stops listening."""
    finished = False
    next_check = time.monotonic() + 0.25
    try:
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), timeout=0.25)
            except asyncio.TimeoutError:
                event = None
            # events may arrive every few milliseconds, so the check goes by the clock, not by silence
            if request is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.25
                if await request.is_disconnected():
                    raise HTTPException(499, "the client closed the connection")
            if event is None:
                if time.monotonic() > job.deadline + 10:  # the scheduler should have answered 504 already
                    raise HTTPException(504, f"the request timed out after {job.timeout:g} s")
                continue
            if isinstance(event, Failed):
                finished = True
                raise HTTPException(event.status, event.message)
            if isinstance(event, Done):
                finished = True
                return
            yield event
    finally:
        if not finished:
            job.cancel()


async def _stream(synth: Synthesizer, job: Job, fmt: str, voice: Voice | None) -> StreamingResponse:
    events = _events(job, None)
    # wait for the first codes before answering, so that a request that fails in the queue
    # (timeout, shutdown) still gets its status code instead of an empty 200 stream
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None

    async def body():
        if fmt == "wav":
            yield wav_stream_header(synth.sample_rate)
        # the library's stream (Synthesizer.stream) over the scheduler's codes: the same audio
        audio = synth.audio_stream(voice)
        pending = [first] if first is not None else []
        try:
            while True:
                try:
                    event = pending.pop() if pending else await anext(events)
                except StopAsyncIteration:
                    pieces = await run_in_threadpool(audio.finish)
                    event = None
                if isinstance(event, Codes):
                    pieces = await run_in_threadpool(audio.push, event.codes)
                elif isinstance(event, ChunkEnd):
                    pieces = await run_in_threadpool(audio.end_chunk)
                elif event is not None:
                    continue
                for piece in pieces:
                    yield audio_io.encode_bytes(piece, synth.sample_rate, "pcm")
                if event is None:
                    return
        except HTTPException as exc:  # headers are out: all a stream can do is end early
            log.warning("stream ended early: %s", exc.detail)
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type=FORMATS[fmt])
