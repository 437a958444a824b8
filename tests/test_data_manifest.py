import argparse
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import soundfile as sf

from llasa.data import manifest as m
from llasa.data.cli import add_commands

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (apt-get install flite)")

TEXTS = ["The quick brown fox jumps.", "Is it raining in the city today?", "Seven cats sat on the mat."]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Three short real speech clips made with flite."""
    root = tmp_path_factory.mktemp("clips")
    out = []
    for n, text in enumerate(TEXTS):
        path = root / f"clip{n}.wav"
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
        out.append(path)
    return out


def _texts(items):
    return sorted(it["text"] for it in items)


def test_folder_with_txt_and_lab_and_speaker_subfolders(tmp_path, clips):
    for n, (clip, text) in enumerate(zip(clips, TEXTS)):
        speaker = tmp_path / ("alice" if n < 2 else "bob")
        speaker.mkdir(exist_ok=True)
        shutil.copy(clip, speaker / f"u{n}.wav")
        (speaker / f"u{n}{'.lab' if n == 1 else '.txt'}").write_text(text + "\n")
    items = list(m.load_corpus(tmp_path))
    assert m.detect_format(tmp_path) == "folder"
    assert _texts(items) == sorted(TEXTS)
    assert {it["id"]: it["speaker"] for it in items} == {"u0": "alice", "u1": "alice", "u2": "bob"}


def test_folder_without_transcript_is_reported(tmp_path, clips):
    shutil.copy(clips[0], tmp_path / "a.wav")
    shutil.copy(clips[1], tmp_path / "b.wav")
    (tmp_path / "a.txt").write_text(TEXTS[0])
    with pytest.raises(m.ManifestError, match=r"b\.wav: no transcript"):
        list(m.load_corpus(tmp_path, "folder"))


def test_csv_resolves_relative_paths_and_keeps_speaker(tmp_path, clips):
    (tmp_path / "audio").mkdir()
    rows = ["audio,text,speaker"]
    for n, (clip, text) in enumerate(zip(clips, TEXTS)):
        shutil.copy(clip, tmp_path / "audio" / clip.name)
        rows.append(f'audio/{clip.name},"{text}",spk{n}')
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    items = list(m.load_corpus(tmp_path / "list.csv"))
    assert [Path(it["audio"]) for it in items] == [tmp_path / "audio" / c.name for c in clips]
    assert [it["text"] for it in items] == TEXTS and items[2]["speaker"] == "spk2"


def test_csv_missing_column_is_named(tmp_path):
    (tmp_path / "list.csv").write_text("wav_file,transcript\nx.wav,hello there\n")
    with pytest.raises(m.ManifestError, match="missing column.*audio, text"):
        list(m.load_corpus(tmp_path / "list.csv"))


def test_jsonl_collects_every_problem(tmp_path, clips):
    lines = [
        {"audio": str(clips[0]), "text": TEXTS[0]},
        {"audio": "nope/missing1.wav", "text": "hello there"},
        {"audio": "missing2.wav", "text": "hello again"},
        {"audio": str(clips[1]), "text": "   "},
        {"text": "no audio column"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(m.ManifestError) as err:
        list(m.load_corpus(path))
    message = str(err.value)
    assert "4 problem(s)" in message
    assert "missing1.wav" in message and "missing2.wav" in message
    assert "empty transcript" in message and "missing column(s) audio" in message


def test_jsonl_round_trip(tmp_path, clips):
    items = [{"audio": str(c), "text": t, "speaker": "s"} for c, t in zip(clips, TEXTS)]
    m.write_jsonl(items, tmp_path / "m.jsonl")
    again = list(m.load_corpus(tmp_path / "m.jsonl"))
    assert [it["text"] for it in again] == TEXTS and [it["id"] for it in again] == ["clip0", "clip1", "clip2"]


def test_ljspeech(tmp_path, clips):
    (tmp_path / "wavs").mkdir()
    lines = []
    for n, (clip, text) in enumerate(zip(clips, TEXTS)):
        shutil.copy(clip, tmp_path / "wavs" / f"LJ001-{n:04d}.wav")
        lines.append(f"LJ001-{n:04d}|{text}|{text.lower()}")
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    assert m.detect_format(tmp_path) == "ljspeech"
    items = list(m.load_corpus(tmp_path))
    assert [it["id"] for it in items] == ["LJ001-0000", "LJ001-0001", "LJ001-0002"]
    assert items[0]["text"] == TEXTS[0] and items[0]["normalized"] == TEXTS[0].lower()


def test_ljspeech_missing_wav_is_reported(tmp_path, clips):
    (tmp_path / "wavs").mkdir()
    shutil.copy(clips[0], tmp_path / "wavs" / "a.wav")
    (tmp_path / "metadata.csv").write_text("a|hello there|hello there\nb|gone file|gone file\n")
    with pytest.raises(m.ManifestError, match=r"audio file not found: .*b\.wav"):
        list(m.load_corpus(tmp_path))


def test_libritts(tmp_path, clips):
    for n, (clip, text) in enumerate(zip(clips, TEXTS)):
        speaker = "84" if n < 2 else "121"
        chapter = tmp_path / speaker / "1000"
        chapter.mkdir(parents=True, exist_ok=True)
        stem = f"{speaker}_1000_{n:06d}_000000"
        shutil.copy(clip, chapter / f"{stem}.wav")
        (chapter / f"{stem}.normalized.txt").write_text(text)
        (chapter / f"{stem}.original.txt").write_text(text.upper())
    assert m.detect_format(tmp_path) == "libritts"
    items = list(m.load_corpus(tmp_path))
    assert sorted(it["speaker"] for it in items) == ["121", "84", "84"]
    by_id = {it["id"]: it for it in items}
    assert by_id["84_1000_000000_000000"]["normalized"] == TEXTS[0]
    assert by_id["84_1000_000000_000000"]["text"] == TEXTS[0].upper()


def test_hugging_face_saved_dataset_writes_embedded_audio(tmp_path, clips):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"audio": [str(c) for c in clips], "text": TEXTS, "speaker_id": [1, 1, 2]}
    ).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(tmp_path / "ds"))
    assert m.detect_format(tmp_path / "ds") == "hf"
    items = list(m.load_corpus(tmp_path / "ds", audio_dir=tmp_path / "audio"))
    assert [it["text"] for it in items] == TEXTS and [it["speaker"] for it in items] == ["1", "1", "2"]
    for item, clip in zip(items, clips):
        assert Path(item["audio"]).parent == tmp_path / "audio"
        assert sf.read(item["audio"])[0].shape == sf.read(str(clip))[0].shape


def test_hugging_face_missing_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"audio": ["x.wav"], "sentence": ["hi there"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(m.ManifestError, match="missing column.*text"):
        list(m.load_corpus(tmp_path / "ds", "hf"))


def test_cli_manifest_writes_durations(tmp_path, clips):
    for clip, text in zip(clips, TEXTS):
        shutil.copy(clip, tmp_path / clip.name)
        (tmp_path / f"{clip.stem}.txt").write_text(text)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    out = tmp_path / "out" / "manifest.jsonl"
    args = parser.parse_args(["data", "manifest", str(tmp_path), "-o", str(out)])
    assert args.handler(args) == 0
    items = m.read_jsonl(out)
    for item, clip in zip(items, clips):
        info = sf.info(str(clip))
        assert item["duration"] == pytest.approx(info.frames / info.samplerate, abs=1e-3)


def test_folder_with_audiofolder_metadata_uses_column_aliases(tmp_path, clips):
    lines = ["file_name,transcription"]
    for clip, text in zip(clips, TEXTS):
        shutil.copy(clip, tmp_path / clip.name)
        lines.append(f'{clip.name},"{text}"')
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    assert m.detect_format(tmp_path) == "csv"
    items = list(m.load_corpus(tmp_path))
    assert [it["text"] for it in items] == TEXTS
    assert [it["audio"] for it in items] == [str(tmp_path / c.name) for c in clips]


def test_rows_stream_out_before_the_rest_of_the_manifest_exists(tmp_path, clips):
    """A manifest is read row by row: through a pipe whose writer holds back the rest until the
    first row has come out; a bad line after it is reported once the end is reached."""
    pipe = tmp_path / "manifest.jsonl"
    os.mkfifo(pipe)
    first_row_read, held_back_too_long = threading.Event(), []

    def write():
        with open(pipe, "w", encoding="utf-8") as f:
            f.write(json.dumps({"audio": str(clips[0]), "text": TEXTS[0]}) + "\n")
            f.flush()
            held_back_too_long.append(not first_row_read.wait(20))
            f.write(json.dumps({"audio": str(clips[1]), "text": TEXTS[1]}) + "\n" + "{not json\n")

    writer = threading.Thread(target=write)
    writer.start()
    items = m.load_corpus(pipe, "jsonl")
    assert next(items)["id"] == "clip0"
    first_row_read.set()
    assert next(items)["id"] == "clip1"
    with pytest.raises(m.ManifestError, match="line 3: not JSON"):
        next(items)
    writer.join()
    assert held_back_too_long == [False]


def test_later_bad_rows_do_not_hold_back_the_first(tmp_path, clips):
    for clip in clips:
        shutil.copy(clip, tmp_path / clip.name)
    rows = ["audio,text", f"{clips[0].name},{TEXTS[0]}", f"{clips[1].name},{TEXTS[1]}", "gone.wav,", "gone.wav,hi"]
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    items = m.load_corpus(tmp_path)
    assert [next(items)["id"], next(items)["id"]] == ["clip0", "clip1"]
    with pytest.raises(m.ManifestError, match="2 problem"):
        next(items)


def test_repeated_ids_are_found_after_the_last_row():
    items = [{"audio": f"{name}.wav", "text": "hi"} for name in ("a", "b", "a", "c", "b", "a")]
    with pytest.raises(m.ManifestError) as err:
        m.check_items(items, check_files=False)
    assert str(err.value).splitlines()[1:] == [
        "  item 3: duplicate id (also item 1)", "  item 5: duplicate id (also item 2)",
        "  item 6: duplicate id (also item 3)",
    ]


def test_cli_manifest_of_a_bad_corpus_writes_nothing(tmp_path, clips):
    rows = [{"audio": str(clips[0]), "text": TEXTS[0]}, {"audio": str(tmp_path / "gone.wav"), "text": "hi"}]
    m.write_jsonl(rows, tmp_path / "in.jsonl")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    out = tmp_path / "out" / "manifest.jsonl"
    args = parser.parse_args(["data", "manifest", str(tmp_path / "in.jsonl"), "-o", str(out)])
    with pytest.raises(m.ManifestError, match="gone.wav"):
        args.handler(args)
    assert not out.exists() and not list(out.parent.glob("*.tmp"))
