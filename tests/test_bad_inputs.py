"""Bad input to every verb of `llasa` and every endpoint of the server, as one table.

The CLI answers each with exit code 2 (1 for an evaluation whose items failed) and one line on
stderr naming the problem, never a traceback; cases marked ``early`` must fail before any model
or codec loads. The server answers 4xx with a message, never 5xx.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from test_serve import sine, wav_bytes

from llasa.cli import main
from llasa.codec import Codec
from llasa.lm.model import build_model, save
from llasa.lm.vocab import build_tokenizer
from llasa.tts import MAX_CANDIDATES, MAX_INPUT_CHARS, Synthesizer

SEED_2_80 = str(2**80)  # the overflow a torch generator reports as "Overflow when unpacking long long"
LONG_TEXT = "Hello there. " * 1600  # 20,800 characters: past the default limit


@pytest.fixture(scope="module")
def root(tmp_path_factory, codec):
    """A tiny model (plain text, and one reading espeak phonemes) and codec, broken copies of
    both, and bad files of every kind the verbs read."""
    root = tmp_path_factory.mktemp("bad_inputs")
    tokenizer = build_tokenizer(None, codec.codebook_size)
    save(build_model("tiny", tokenizer, seed=1), tokenizer, root / "lm")
    codec.save_pretrained(root / "codec")
    shutil.copytree(root / "lm", root / "lm_espeak")
    config = json.loads((root / "lm_espeak" / "config.json").read_text())
    (root / "lm_espeak" / "config.json").write_text(json.dumps({**config, "llasa_frontend": "espeak:en-us"}))

    def broken(source: str, name: str, file: str, content: bytes | None) -> None:
        shutil.copytree(root / source, root / name)
        if content is None:
            (root / name / file).unlink()
        else:
            (root / name / file).write_bytes(content)

    weights = (root / "lm" / "model.safetensors").read_bytes()
    broken("lm", "lm_badjson", "config.json", b'{"model_type": "llama", ')
    broken("lm", "lm_trunc", "model.safetensors", weights[: len(weights) // 3])
    broken("lm", "lm_emptyweights", "model.safetensors", b"")
    broken("lm", "lm_noweights", "model.safetensors", None)
    broken("lm", "lm_noconfig", "config.json", None)
    broken("lm", "lm_badtokenizer", "tokenizer.json", b'{"version": "1.0", "model": 5}')
    broken("lm", "lm_listconfig", "config.json", b"[1, 2, 3]")
    codec_weights = (root / "codec" / "model.safetensors").read_bytes()
    broken("codec", "codec_badjson", "config.json", b"{not json")
    broken("codec", "codec_trunc", "model.safetensors", codec_weights[:1000])
    broken("codec", "codec_noweights", "model.safetensors", None)
    broken("codec", "codec_listconfig", "config.json", b'["a"]')

    (root / "clip.wav").write_bytes(wav_bytes(sine(2.0)))
    (root / "short.wav").write_bytes(wav_bytes(sine(0.5)))
    (root / "empty.wav").write_bytes(wav_bytes(np.zeros(0, np.float32)))
    nan = sine(2.0)
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    (root / "notaudio.wav").write_text("this is not audio\n")
    (root / "afile").write_text("a plain file, not a folder\n")
    (root / "adir").mkdir()
    (root / "notprofile.json").write_text('{"format": "something else"}')
    (root / "brokenprofile.json").write_text("{broken")
    np.save(root / "codes.npy", np.arange(10, dtype=np.int64))
    np.save(root / "codes_out_of_range.npy", np.array([0, 1, codec.codebook_size + 5], dtype=np.int64))
    np.save(root / "codes_float.npy", np.array([0.5, 1.5]))
    (root / "notnpy.npy").write_bytes(b"not a numpy file")
    (root / "badprompt.lst").write_text(f"item1|Some words.|{root / 'notaudio.wav'}|Hello there.\n")
    (root / "badlines.lst").write_text("only|three|fields\n|no id||\n")
    (root / "missingprompt.lst").write_text(f"item1|Words.|{root / 'nowhere.wav'}|Hello.\n")
    (root / "codec_items.jsonl").write_text(json.dumps({"audio": str(root / "notaudio.wav"), "text": "Words."}) + "\n")
    (root / "manifest_badjson.jsonl").write_text('{"audio": "x.wav", "text": "hi"}\n{broken\n')
    (root / "manifest_missing_audio.jsonl").write_text(json.dumps({"audio": str(root / "nowhere.wav"), "text": "Hi."}) + "\n")
    (root / "bad.yaml").write_text("a: [unclosed\n")
    (root / "list.yaml").write_text("- just\n- a list\n")
    (root / "recipe.yaml").write_text("init: preset:tiny\n")
    shutil.copytree(root / "lm", root / "run_badlog" / "checkpoint-1")
    (root / "run_badlog" / "train_log.jsonl").write_text("{broken\n")
    return root


@pytest.fixture
def no_loading(monkeypatch):
    """Loading a model or a codec fails the test: the case must be refused before that work."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model or codec started loading before the bad input was refused")

    monkeypatch.setattr(Synthesizer, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(Codec, "from_pretrained", classmethod(refuse))


def case(argv: str, pattern: str, *, code: int = 2, early: bool = True, id: str | None = None):
    return pytest.param(argv, pattern, code, early, id=id or argv[:60])


M = "--model {r}/lm --codec {r}/codec"
ME = "--model {r}/lm_espeak --codec {r}/codec"
# (arguments, what stderr must say, exit code, refused before loading)
# fmt: off
CLI_CASES = [
    # --- llasa tts: counts, seeds, lengths
    case(f"tts Hello. -o {{r}}/o.wav -n 100000 {M}", rf"-n 100000: at most {MAX_CANDIDATES} candidates"),
    case(f"tts Hello. -o {{r}}/o.wav -n 33 {M}", rf"at most {MAX_CANDIDATES}"),
    case(f"tts Hello. -o {{r}}/o.wav -n 0 {M}", r"-n must be at least 1"),
    case(f"tts Hello. -o {{r}}/o.wav -n -3 {M}", r"-n must be at least 1"),
    case(f"tts Hello. -o {{r}}/o.wav --search best-of-n -n 64 {M}", r"at most 32"),
    case(f"tts Hello. -o {{r}}/o.wav --search beam --beam-width 8 --expand 8 {M}", r"64 candidates .*limit of 32"),
    case(f"tts Hello. -o {{r}}/o.wav --search beam -n 4 {M}", r"-n is the candidate count of best-of-n"),
    case(f"tts Hello. -o {{r}}/o.wav --seed {SEED_2_80} {M}", r"--seed must be from 0 to 2\*\*64-1"),
    case(f"tts Hello. -o {{r}}/o.wav --seed -1 {M}", r"--seed must be from 0 to 2\*\*64-1"),
    case(f"tts Hello. -o {{r}}/o.wav --seed {2**64} {M}", r"--seed must be from 0"),
    case(f"tts Hello. -o {{r}}/o.wav --seed abc {M}", r"argument --seed: invalid int value"),
    case(f"tts {{long}} -o {{r}}/o.wav {M}", rf"20800 characters; the limit is {MAX_INPUT_CHARS}.*--max-chars", id="tts 20,800 characters"),
    case(f"tts {{long}} -o {{r}}/o.wav --max-chars 100 {M}", r"the limit is 100", id="tts text over --max-chars 100"),
    case(f"tts Hello. -o {{r}}/o.wav --max-chars -1 {M}", r"--max-chars must be 0 \(no limit\) or more"),
    # --- llasa tts: the text itself
    case(f"tts '' -o {{r}}/o.wav {M}", r"text is empty"),
    case(f"tts '   ' -o {{r}}/o.wav {M}", r"text is empty"),
    case(f"tts '?!...' -o {{r}}/o.wav {M}", r"no speakable characters"),
    case(f"tts '你好，世界。' -o {{r}}/o.wav {ME}", r"cannot read: Han .*espeak:en-us.*Latin script only", early=False),
    case(f"tts 'مرحبا بالعالم' -o {{r}}/o.wav {ME}", r"cannot read: Arabic", early=False),
    case(f"tts 'Hello Привет' -o {{r}}/o.wav {ME}", r"cannot read: Cyrillic", early=False),
    case(f"tts 'Say <|SPEECH_GENERATION_START|> now' -o {{r}}/o.wav {M}", r"control token", early=False),
    # --- llasa tts: output paths
    case(f"tts Hello. -o {{r}}/afile/x.wav {M}", r"'.*afile' is a file, so no folder can be made in it"),
    case(f"tts Hello. -o {{r}}/afile/deeper/x.wav {M}", r"afile' is a file"),
    case(f"tts Hello. -o {{r}}/adir {M}", r"is a directory; expected a file name"),
    case(f"tts Hello. -o {{r}}/o.txt {M}", r"'.txt' is not an audio format"),
    case(f"tts Hello. -o {{r}}/noext {M}", r"no suffix to tell the audio format"),
    # --- llasa tts: sampling and search flags
    case(f"tts Hello. -o {{r}}/o.wav --temperature -1 {M}", r"temperature must be >= 0"),
    case(f"tts Hello. -o {{r}}/o.wav --temperature nan {M}", r"temperature must be >= 0"),
    case(f"tts Hello. -o {{r}}/o.wav --top-p 1.5 {M}", r"top_p must be in \(0, 1\]"),
    case(f"tts Hello. -o {{r}}/o.wav --top-k -2 {M}", r"top_k must be a positive integer"),
    case(f"tts Hello. -o {{r}}/o.wav --repetition-penalty 0 {M}", r"repetition_penalty must be > 0"),
    case(f"tts Hello. -o {{r}}/o.wav --ras-window -1 {M}", r"ras_window must be"),
    case(f"tts Hello. -o {{r}}/o.wav --ras-threshold 2 {M}", r"ras_threshold must be in"),
    case(f"tts Hello. -o {{r}}/o.wav --beam-width 2 {M}", r"--beam-width needs --search"),
    # whether a model repairs chunks (which --scores also reports) is in its config: read after loading
    case(f"tts Hello. -o {{r}}/o.wav --scores {M}", r"--scores needs --search .* or repair", early=False),
    case(f"tts Hello. -o {{r}}/o.wav --search magic {M}", r"argument --search: invalid choice"),
    case(f"tts Hello. -o {{r}}/o.wav --search beam --expand 0 {M}", r"expand must be at least 1"),
    # --- llasa tts: voices
    case(f"tts Hello. -o {{r}}/o.wav --voice nobody {M}", r"--voice 'nobody' is neither a file nor a named voice"),
    case(f"tts Hello. -o {{r}}/o.wav --voice {{r}}/nowhere.wav {M}", r"--voice '.*nowhere.wav': no such file"),
    case(f"tts Hello. -o {{r}}/o.wav --voice-text Words. {M}", r"--voice-text needs --voice"),
    case(f"tts Hello. -o {{r}}/o.wav --voice {{r}}/notaudio.wav --voice-text Words. {M}", r"notaudio.wav': unreadable audio"),
    case(f"tts Hello. -o {{r}}/o.wav --voice {{r}}/short.wav --voice-text Words. {M}", r"shorter than the 1 s minimum"),
    case(f"tts Hello. -o {{r}}/o.wav --voice {{r}}/nowhere.wav --voice-text Words. {M}", r"nowhere.wav': no such file"),
    case(f"tts Hello. -o {{r}}/o.wav --voice {{r}}/notprofile.json {M}", r"is not a voice profile"),
    case(f"tts Hello. -o {{r}}/o.wav --voice {{r}}/brokenprofile.json {M}", r"invalid JSON"),
    case(f"tts Hello. -o {{r}}/o.wav --voice {{r}}/clip.wav --voice-text '你好' {ME}", r"voice transcript has letters", early=False),
    # --- llasa tts: models, codecs, devices
    case("tts Hello. -o {r}/o.wav --model {r}/nowhere --codec {r}/codec", r"nowhere': no such directory, and not a hub id", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/afile --codec {r}/codec", r"afile' is a file; expected a model directory", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm_noconfig --codec {r}/codec", r"has no config.json", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm_badjson --codec {r}/codec", r"config.json is not readable JSON", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm_listconfig --codec {r}/codec", r"config.json is not a model config", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm_trunc --codec {r}/codec", r"model.safetensors is corrupt or truncated", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm_emptyweights --codec {r}/codec", r"model.safetensors is corrupt", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm_noweights --codec {r}/codec", r"has no \*.safetensors weights", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm_badtokenizer --codec {r}/codec", r"its tokenizer \(tokenizer.json, tokenizer_config.json\) cannot be loaded", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/codec --codec {r}/codec", r"holds a 'xcodec2' model", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm --codec {r}/codec_badjson", r"codec '.*codec_badjson': config.json is not readable JSON", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm --codec {r}/codec_trunc", r"model.safetensors is corrupt or truncated", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm --codec {r}/codec_noweights", r"no \*.safetensors weights", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm --codec {r}/codec_listconfig", r"not a codec config", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm --codec {r}/lm", r"neither an Xcodec2Config nor the official", early=False),
    case("tts Hello. -o {r}/o.wav --model {r}/lm --codec {r}/nowhere", r"neither a local directory nor a hub id", early=False),
    case(f"tts Hello. -o {{r}}/o.wav --device nonsense {M}", r"device 'nonsense' is not a torch device", early=False),
    # --- llasa voice create
    case("voice create {r}/nowhere.wav --text Words. -o {r}/v.json --codec {r}/codec", r"nowhere.wav': no such file"),
    case("voice create {r}/notaudio.wav --text Words. -o {r}/v.json --codec {r}/codec", r"unreadable audio"),
    case("voice create {r}/short.wav --text Words. -o {r}/v.json --codec {r}/codec", r"shorter than the 1 s minimum"),
    case("voice create {r}/empty.wav --text Words. -o {r}/v.json --codec {r}/codec", r"audio is empty"),
    case("voice create {r}/nan.wav --text Words. -o {r}/v.json --codec {r}/codec", r"NaN/inf samples"),
    case("voice create {r}/adir --text Words. -o {r}/v.json --codec {r}/codec", r"is a directory, not an audio file"),
    case("voice create {r}/clip.wav --text '' -o {r}/v.json --codec {r}/codec", r"transcript\) is empty"),
    case("voice create {r}/clip.wav --text Words. -o {r}/afile/v.json --codec {r}/codec", r"afile' is a file"),
    case("voice create {r}/clip.wav --text Words. -o {r}/v.json --codec {r}/codec_trunc", r"corrupt or truncated", early=False),
    case("voice create {r}/clip.wav --text Words. --wer-model {r}/lm -o {r}/v.json", r"--wer-model: only without --text"),
    # --- llasa codec
    case("codec encode {r}/nowhere.wav -o {r}/c.npy --codec {r}/codec", r"nowhere.wav': no such file"),
    case("codec encode {r}/notaudio.wav -o {r}/c.npy --codec {r}/codec", r"unreadable audio"),
    case("codec encode {r}/clip.wav -o {r}/afile/c.npy --codec {r}/codec", r"afile' is a file"),
    case("codec encode {r}/clip.wav -o {r}/c.npy --codec {r}/codec --refine-steps -1", r"--refine-steps: must be 0 or more, got -1"),
    case("codec encode {r}/clip.wav -o {r}/c.npy --codec {r}/codec_badjson", r"config.json is not readable JSON", early=False),
    case("codec resynth {r}/clip.wav -o {r}/r.txt --codec {r}/codec", r"'.txt' is not an audio format"),
    case("codec resynth {r}/clip.wav -o {r}/afile/r.wav --codec {r}/codec", r"afile' is a file"),
    case("codec resynth {r}/empty.wav -o {r}/r.wav --codec {r}/codec", r"audio is empty"),
    case("codec resynth {r}/nan.wav -o {r}/r.wav --codec {r}/codec", r"NaN/inf"),
    case("codec decode {r}/nowhere.npy -o {r}/d.wav --codec {r}/codec", r"no such codes file"),
    case("codec decode {r}/notnpy.npy -o {r}/d.wav --codec {r}/codec", r"is not a .npy file"),
    case("codec decode {r}/codes_out_of_range.npy -o {r}/d.wav --codec {r}/codec", r"codes", early=False),
    case("codec decode {r}/codes_float.npy -o {r}/d.wav --codec {r}/codec", r"codes", early=False),
    case("codec decode {r}/codes.npy -o {r}/adir --codec {r}/codec", r"is a directory"),
    # --- llasa data
    case("data manifest {r}/nowhere -o {r}/m.jsonl", r"nowhere"),
    case("data manifest {r}/manifest_badjson.jsonl -o {r}/m.jsonl", r"line 2"),
    case("data manifest {r}/manifest_missing_audio.jsonl -o {r}/m.jsonl", r"audio file not found"),
    case("data manifest {r}/adir -o {r}/afile/m.jsonl", r"afile' is a file"),
    case("data manifest {r}/adir -o {r}/m.jsonl --format nonsense", r"argument --format: invalid choice"),
    case("data synth {r}/corpus --sentences 0", r"--sentences: must be at least 1"),
    case("data synth {r}/corpus --sentences 5 --voices nobody", r"nobody"),
    case("data synth {r}/corpus --hours -1", r"hours must be positive"),
    case("data synth {r}/afile --sentences 5", r"afile' is a file; expected a folder"),
    case("data synth {r}/corpus", r"one of the arguments --sentences --hours is required"),
    case("data tokenize {r}/nowhere.jsonl {r}/shards --codec {r}/codec", r"nowhere.jsonl': no such file"),
    case("data tokenize {r}/manifest_badjson.jsonl {r}/shards --codec {r}/codec --frontend phones", r"unknown text front-end"),
    case("data tokenize {r}/manifest_badjson.jsonl {r}/shards --codec {r}/codec --batch-size 0", r"--batch-size: must be at least 1"),
    case("data tokenize {r}/manifest_badjson.jsonl {r}/afile --codec {r}/codec", r"afile' is a file"),
    case("data tokenize {r}/manifest_badjson.jsonl {r}/shards --codec {r}/codec --refine-steps -1", r"--refine-steps: must be 0"),
    case("data tokenize {r}/manifest_badjson.jsonl {r}/shards --codec {r}/codec --rank 3 --world-size 2", r"rank 3 is not within"),
    case("data tokenize {r}/manifest_badjson.jsonl {r}/shards --codec {r}/codec_trunc", r"corrupt or truncated", early=False),
    case("data tokenize {r}/manifest_badjson.jsonl {r}/shards --codec {r}/codec --device cuda:99", r"device 'cuda:99'", early=False),
    # --- llasa train
    case("train lm {r}/nowhere.yaml", r"config file not found"),
    case("train lm {r}/bad.yaml", r"invalid YAML"),
    case("train lm {r}/list.yaml", r"expected a mapping"),
    case("train codec {r}/bad.yaml", r"invalid YAML"),
    case("train lm {r}/recipe.yaml --set nokey", r"override 'nokey' is not KEY=VALUE"),
    case("train lm {r}/recipe.yaml --set 'x=[unclosed'", r"value is not valid YAML"),
    case("train lm {r}/recipe.yaml --max-steps many", r"argument --max-steps: invalid int value"),
    # --- llasa eval
    case("eval tts {r}/nowhere.lst -o {r}/ev " + M, r"no such benchmark list"),
    case("eval tts {r}/badlines.lst -o {r}/ev " + M, r"line 1: expected 4 fields.*line 2: empty id"),
    case("eval tts {r}/missingprompt.lst -o {r}/ev " + M, r"prompt audio not found"),
    case("eval tts {r}/badprompt.lst -o {r}/ev --limit 0 " + M, r"--limit must be at least 1"),
    case("eval tts {r}/badprompt.lst -o {r}/ev -n 4 " + M, r"-n is the candidate count of --search best-of-n"),
    case("eval tts {r}/badprompt.lst -o {r}/ev --search best-of-n -n 100 " + M, r"at most 32"),
    case(f"eval tts {{r}}/badprompt.lst -o {{r}}/ev --seed {SEED_2_80} " + M, r"--seed must be from 0"),
    case("eval tts {r}/badprompt.lst -o {r}/afile " + M, r"--output '.*afile' is a file; expected a folder"),
    case("eval tts {r}/badprompt.lst -o {r}/ev_bad " + M, r"1 of 1 items failed \(errors in .*results.jsonl; summary in .*summary.json\)",
         code=1, early=False),
    case("eval codec {r}/codec_items.jsonl -o {r}/evc --codec {r}/codec", r"1 of 1 items failed", code=1, early=False),
    case("eval codec {r}/nowhere.jsonl -o {r}/evc --codec {r}/codec", r"nowhere"),
    case("eval codec {r}/codec_items.jsonl -o {r}/evc --codec {r}/codec --refine-steps -2", r"--refine-steps: must be 0 or more"),
    case("eval scaling {r}/badprompt.lst -o {r}/evs --strategies magic " + M, r"unknown strategies \['magic'\]"),
    case("eval scaling {r}/badprompt.lst -o {r}/evs --sizes 0 " + M, r"sizes must be positive integers"),
    case("eval scaling {r}/badprompt.lst -o {r}/evs --sizes 1,64 " + M, r"--sizes 64: at most 32"),
    case("eval scaling {r}/badprompt.lst -o {r}/evs --top-p 7 " + M, r"top_p must be in"),
    case("eval train-scaling {r}/adir -o {r}/evt", r"no train_log.jsonl"),
    case("eval train-scaling {r}/run_badlog -o {r}/evt", r"line 1: not a JSON record", early=False),
    case("eval train-scaling {r}/adir -o {r}/evt --limit 3", r"--limit applies to --list"),
    # --- llasa serve (flags are checked before the model loads)
    case("serve --host 0.0.0.0 " + M, r"refusing to serve on 0.0.0.0 without an API key"),
    case("serve --max-batch 0 " + M, r"--max-batch and --queue-size must be >= 1"),
    case("serve --queue-size -1 " + M, r"--max-batch and --queue-size must be >= 1"),
    case("serve --timeout 0 " + M, r"--timeout > 0"),
    case("serve --timeout nan " + M, r"--timeout > 0"),
    case("serve --port 70000 " + M, r"--port must be from 0 to 65535"),
    case("serve --max-input-chars 0 " + M, r"--max-input-chars must be >= 1"),
    case("serve --max-upload-mb inf " + M, r"--max-upload-mb > 0"),
    case("serve --voices-dir {r}/afile " + M, r"--voices-dir '.*afile' is a file"),
    case("serve --backend magic " + M, r"argument --backend: invalid choice"),
    case("serve --model {r}/lm_trunc --codec {r}/codec", r"corrupt or truncated", early=False),
]
# fmt: on


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, pattern, code, early", CLI_CASES)
def test_cli_refuses_bad_input(argv, pattern, code, early, root, capsys, monkeypatch, request):
    monkeypatch.delenv("LLASA_API_KEY", raising=False)
    if early:
        request.getfixturevalue("no_loading")
    args = [a.format(r=root, long=LONG_TEXT) for a in shlex.split(argv)]
    got, err = run_cli(args, capsys)
    assert "Traceback" not in err
    assert got == code, err
    assert re.search(pattern, err, re.S), err
    lines = [line for line in err.splitlines() if line.startswith("llasa")]
    # one line that names the verb (argparse prints its usage before it)
    assert len(lines) == 1 and lines[0].startswith(f"llasa {args[0]}"), err


def test_failed_evaluation_still_writes_its_summary(root, capsys):
    code, _ = run_cli(f"eval tts {root}/badprompt.lst -o {root}/ev_summary --model {root}/lm --codec {root}/codec".split(), capsys)
    summary = json.loads((root / "ev_summary" / "summary.json").read_text())
    assert code == 1 and summary["failed"] == 1 and summary["items"] == 1


def test_the_installed_command_prints_one_line_and_no_traceback(root):
    """The real entry point, in a process of its own (the in-process cases share one)."""
    result = subprocess.run([sys.executable, "-m", "llasa.cli", "tts", "Hello.", "-o", f"{root}/afile/x.wav", "--seed",
                             SEED_2_80, "--model", f"{root}/lm", "--codec", f"{root}/codec"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("llasa tts: error: --seed must be from 0 to 2**64-1")


# ------------------------------------------------------------------------------------ server
@pytest.fixture(scope="module")
def client(codec):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from llasa.serve import Limits, create_app

    tokenizer = build_tokenizer(None, codec.codebook_size)
    model = build_model("tiny", tokenizer, seed=1)
    model.config.llasa_frontend = "espeak:en-us"  # the built-in model's front-end: it refuses other scripts
    synth = Synthesizer(model, tokenizer, codec)
    app = create_app(synth, model_id="tiny", limits=Limits(max_input_chars=800, max_upload_bytes=200_000, timeout=60))
    with TestClient(app) as client:
        yield client


SPEECH = {"model": "tiny", "input": "Hello there.", "voice": "default"}


def speech(**change):
    return ("post", "/v1/audio/speech", {"json": {**SPEECH, **change}})


def upload(files=None, data=None):
    return ("post", "/v1/voices", {"files": files, "data": data})


# (request, status, what the error message must say)
SERVER_CASES = [
    pytest.param(*speech(seed=2**80), 400, r"seed must be from 0 to 2\*\*64-1", id="seed 2**80"),
    pytest.param(*speech(seed=2**64), 400, r"seed must be from 0", id="seed 2**64"),
    pytest.param(*speech(seed=-5), 400, r"seed must be from 0", id="seed -5"),
    pytest.param(*speech(seed="abc"), 400, r"seed", id="seed 'abc'"),
    pytest.param(*speech(seed=1.5), 400, r"seed", id="seed 1.5"),
    pytest.param(*speech(n=100000), 400, rf"limit of {MAX_CANDIDATES}", id="n 100000"),
    pytest.param(*speech(n=2**80), 400, rf"limit of {MAX_CANDIDATES}", id="n 2**80"),
    pytest.param(*speech(strategy="beam", beam_width=8, expand=8), 400, r"64 candidates", id="beam 8x8"),
    pytest.param(*speech(n=0), 400, r"n must be at least 1", id="n 0"),
    pytest.param(*speech(input="word " * 200), 413, r"limit is 800", id="input over the limit"),
    pytest.param(*speech(input=""), 400, r"empty", id="input empty"),
    pytest.param(*speech(input=123), 400, r"input", id="input a number"),
    pytest.param(*speech(input="你好，世界。"), 400, r"cannot read: Han", id="input Chinese"),
    pytest.param(*speech(input="مرحبا بالعالم"), 400, r"cannot read: Arabic", id="input Arabic"),
    pytest.param(*speech(temperature=-1), 400, r"temperature", id="temperature -1"),
    pytest.param(*speech(top_p=0), 400, r"top_p", id="top_p 0"),
    pytest.param(*speech(top_k=-3), 400, r"top_k", id="top_k -3"),
    pytest.param(*speech(repetition_penalty=0), 400, r"repetition_penalty", id="repetition_penalty 0"),
    pytest.param(*speech(ras_threshold=5), 400, r"ras_threshold", id="ras_threshold 5"),
    pytest.param(*speech(response_format="mp3"), 400, r"not supported", id="format mp3"),
    pytest.param(*speech(response_format="xyz"), 400, r"unknown response_format", id="format xyz"),
    pytest.param(*speech(speed=2.0), 400, r"speed must be 1.0", id="speed 2"),
    pytest.param(*speech(instructions="shout"), 400, r"instructions", id="instructions"),
    pytest.param(*speech(stream=True, response_format="flac"), 400, r"streaming sends wav or pcm", id="stream flac"),
    pytest.param(*speech(stream_format="sse"), 400, r"sse", id="stream_format sse"),
    pytest.param(*speech(strategy="magic"), 400, r"unknown search strategy", id="strategy magic"),
    pytest.param(*speech(n=2, stream=True), 400, r"cannot stream", id="search and stream"),
    pytest.param(*speech(verifiers="nope"), 400, r"unknown verifier 'nope'", id="verifier nope"),
    pytest.param(*speech(voice="nobody"), 400, r"unknown voice 'nobody'", id="voice unknown"),
    pytest.param(*speech(model="tts-1"), 404, r"no model 'tts-1'", id="model unknown"),
    pytest.param(*speech(temprature=0.5), 400, r"temprature", id="misspelt field"),
    pytest.param("post", "/v1/audio/speech", {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
                 400, r"invalid request", id="body not JSON"),  # fmt: skip
    pytest.param(*upload({"file": ("x.wav", b"\x00garbage" * 100)}, {"text": "Words."}), 400, r"unreadable audio",
                 id="upload not audio"),  # fmt: skip
    pytest.param(*upload({"file": ("x.wav", wav_bytes(sine(0.5)))}, {"text": "Words."}), 400, r"shorter than the 1 s",
                 id="upload too short"),  # fmt: skip
    pytest.param(*upload({"file": ("x.wav", wav_bytes(sine(2.0)))}, {"text": ""}), 400, r"'text' .* is empty",
                 id="upload with an empty text"),  # fmt: skip
    pytest.param(*upload(None, {"text": "Words."}), 400, r"file", id="upload without a file"),
    pytest.param(*upload({"file": ("x.wav", wav_bytes(sine(2.0)))}, {"text": "你好"}), 400, r"voice transcript has letters",
                 id="upload Chinese transcript"),  # fmt: skip
    pytest.param(*upload({"file": ("x.wav", b"\x00" * 300_000)}, {"text": "Words."}), 413, r"too large|limit",
                 id="upload too large"),  # fmt: skip
    pytest.param("get", "/v1/voices/voice_0123456789abcdef", {}, 404, r"no voice", id="get unknown voice"),
    pytest.param("delete", "/v1/voices/default", {}, 400, r"cannot be deleted", id="delete default voice"),
]


@pytest.mark.parametrize("method, path, kwargs, status, pattern", SERVER_CASES)
def test_server_refuses_bad_input(client, method, path, kwargs, status, pattern):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert re.search(pattern, message), message


def test_server_is_still_healthy(client):
    health = client.get("/health").json()
    assert health["alive"] and health["active"] == 0 and health["waiting"] == 0
