import json
import shutil

import numpy as np
import pytest

from llasa import audio
from llasa.codec import Codec
from llasa.codec.testing import randomize_weights
from llasa.data import tokenize as tk
from llasa.data.manifest import write_jsonl
from llasa.lm.prompt import memmap_row
from llasa.lm.vocab import build_tokenizer

MAX_LENGTH = 128
N_GOOD = 9


@pytest.fixture(scope="module")
def codec():
    return randomize_weights(Codec.from_config("tiny", seed=0), seed=0)


@pytest.fixture(scope="module")
def tokenizer(codec):
    return build_tokenizer(None, codec.codebook_size)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Nine good clips (two lengths, so batches form) and four that must be skipped."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    items = []
    for n in range(N_GOOD):
        wav = (0.1 * rng.standard_normal(3200 if n % 2 else 4160)).astype(np.float32)
        audio.write(root / f"u{n}.wav", wav)
        items.append({"audio": str(root / f"u{n}.wav"), "text": f"Utterance number {n}.", "id": f"u{n}",
                      "speaker": f"s{n % 3}"})
    (root / "garbage.wav").write_bytes(b"this is not audio at all" * 10)
    audio.write(root / "long.wav", (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32))  # 151 codes
    audio.write(root / "wordy.wav", (0.1 * rng.standard_normal(3200)).astype(np.float32))
    bad = [
        {"audio": str(root / "garbage.wav"), "text": "Broken file.", "id": "garbage"},
        {"audio": str(root / "missing.wav"), "text": "Gone.", "id": "missing"},
        {"audio": str(root / "long.wav"), "text": "Too long.", "id": "long"},
        {"audio": str(root / "wordy.wav"), "text": "word " * 40, "id": "wordy"},  # text alone overflows
    ]
    items[2:2] = bad[:2]
    items[7:7] = bad[2:]
    write_jsonl(items, root / "manifest.jsonl")
    return root / "manifest.jsonl", items


def run(corpus, codec, tokenizer, out, **kw):
    kw.setdefault("chunk_size", 4)
    return tk.tokenize_manifest(corpus[0], out, codec=codec, tokenizer=tokenizer, codec_name="tiny-random",
                                tokenizer_name="bytes", batch_size=4, max_length=MAX_LENGTH, **kw)


def shard_files(out, rank=0, world=1):
    prefix = tk.shard_prefix(out, rank, world)
    return {suffix: prefix.with_name(prefix.name + suffix).read_bytes()
            for suffix in (".memmap", "_shape.npy", ".index.jsonl", ".skipped.jsonl")}


@pytest.fixture(scope="module")
def reference(corpus, codec, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    progress = run(corpus, codec, tokenizer, out)
    return out, progress


def test_rows_are_official_format_and_bad_items_are_listed(reference, corpus, codec, tokenizer):
    out, progress = reference
    assert progress["done"] and progress["rows"] == N_GOOD and progress["skipped"] == 4
    dataset = tk.CodeShardDataset(out)
    assert len(dataset) == N_GOOD and dataset.max_length == MAX_LENGTH
    good = [it for it in corpus[1] if it["id"].startswith("u")]
    wavs = [audio.load(item["audio"]) for item in good]
    for i, (item, wav, codes) in enumerate(zip(good, wavs, codec.encode(wavs, batch_size=len(wavs)))):
        expected = memmap_row(tokenizer, item["text"], codes, max_length=MAX_LENGTH)
        row = dataset[i]
        assert row.dtype.is_floating_point is False and row.numpy().dtype == np.int32
        np.testing.assert_array_equal(row.numpy(), expected)
        meta = dataset.metadata(i)
        assert meta["id"] == item["id"] and meta["speaker"] == item["speaker"] and meta["row"] == i
        assert meta["n_codes"] == codec.num_codes(len(wav))
    skipped = {s["id"]: s["reason"] for s in map(json.loads, (out / "shard-00000-of-00001.skipped.jsonl").open())}
    assert set(skipped) == {"garbage", "missing", "long", "wordy"}
    assert skipped["long"] == skipped["wordy"] == "over-length"
    assert "no such file" in skipped["missing"] and "unreadable" in skipped["garbage"]
    config = json.loads((out / tk.CONFIG_NAME).read_text())
    assert config["codec"] == "tiny-random" and config["codebook_size"] == codec.codebook_size
    assert config["max_length"] == MAX_LENGTH and config["vocab_size"] == len(tokenizer)


def test_resume_after_interruption_matches_an_uninterrupted_run(reference, corpus, codec, tokenizer, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_first_chunk(progress):
        raise Stop

    with pytest.raises(Stop):
        run(corpus, codec, tokenizer, tmp_path, on_commit=stop_after_first_chunk)
    partial = json.loads((tmp_path / "shard-00000-of-00001.progress.json").read_text())
    assert partial["items_done"] == 4 and not partial["done"]
    assert len(tk.CodeShardDataset(tmp_path)) == partial["rows"]  # readers see only committed rows

    seen = []
    run(corpus, codec, tokenizer, tmp_path, on_commit=seen.append)
    assert seen[0]["items_done"] == 8  # carried on after the commit, not from the start
    assert shard_files(tmp_path) == shard_files(reference[0])


def test_crash_before_commit_drops_the_uncommitted_chunk(reference, corpus, codec, tokenizer, tmp_path,
                                                         monkeypatch):
    real_write, commits = tk._write_atomic, []

    def crash_on_second_commit(path, data):
        if path.name.endswith(".progress.json"):
            commits.append(path)
            if len(commits) == 2:
                raise KeyboardInterrupt  # killed after the rows were appended, before the commit
        real_write(path, data)

    monkeypatch.setattr(tk, "_write_atomic", crash_on_second_commit)
    with pytest.raises(KeyboardInterrupt):
        run(corpus, codec, tokenizer, tmp_path)
    row_bytes = MAX_LENGTH * 4
    committed = json.loads((tmp_path / "shard-00000-of-00001.progress.json").read_text())["rows"]
    assert (tmp_path / "shard-00000-of-00001.memmap").stat().st_size > committed * row_bytes
    monkeypatch.setattr(tk, "_write_atomic", real_write)
    run(corpus, codec, tokenizer, tmp_path)
    assert shard_files(tmp_path) == shard_files(reference[0])


def test_ranks_cover_every_item_exactly_once(reference, corpus, codec, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        run(corpus, codec, tokenizer, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.memmap")) == [
        "shard-00000-of-00002.memmap", "shard-00001-of-00002.memmap"]
    handled = []
    for rank in (0, 1):
        prefix = tk.shard_prefix(tmp_path, rank, 2)
        for suffix in (".index.jsonl", ".skipped.jsonl"):
            lines = prefix.with_name(prefix.name + suffix).read_text().splitlines()
            handled += [(json.loads(line)["item"], rank) for line in lines]
    assert sorted(i for i, _ in handled) == list(range(len(corpus[1])))
    assert all(i % 2 == rank for i, rank in handled)
    sharded, whole = tk.CodeShardDataset(tmp_path), tk.CodeShardDataset(reference[0])
    assert len(sharded) == len(whole) == N_GOOD
    rows = lambda ds: sorted(ds[i].numpy().tobytes() for i in range(len(ds)))  # noqa: E731
    assert rows(sharded) == rows(whole)


def test_other_settings_in_the_same_folder_are_refused(reference, corpus, codec, tokenizer, tmp_path):
    shutil.copytree(reference[0], tmp_path / "out")
    with pytest.raises(ValueError, match="max_length"):
        tk.tokenize_manifest(corpus[0], tmp_path / "out", codec=codec, tokenizer=tokenizer,
                             codec_name="tiny-random", tokenizer_name="bytes", max_length=256)


def test_tokenizing_by_synthesis_is_recorded_and_kept_apart(reference, corpus, codec, tokenizer, tmp_path):
    refining = Codec(codec.model, refine_lr=0.5)  # random weights saturate the FSQ bound: small steps stall
    progress = run(corpus, refining, tokenizer, tmp_path / "refined", refine_steps=4)
    assert progress["done"] and progress["rows"] == N_GOOD
    config = json.loads((tmp_path / "refined" / tk.CONFIG_NAME).read_text())
    assert config["refine_steps"] == 4 and config["refine_lr"] == 0.5 and "refine_cepstral" not in config
    with pytest.raises(ValueError, match="refine_cepstral differ"):  # another objective, another folder
        run(corpus, Codec(codec.model, refine_lr=0.5, refine_cepstral=1.0), tokenizer, tmp_path / "refined", refine_steps=4)
    assert "refine_steps" not in json.loads((reference[0] / tk.CONFIG_NAME).read_text())
    refined, plain = tk.CodeShardDataset(tmp_path / "refined"), tk.CodeShardDataset(reference[0])
    assert any(not np.array_equal(refined[i].numpy(), plain[i].numpy()) for i in range(N_GOOD))
    shutil.copytree(reference[0], tmp_path / "out")
    with pytest.raises(ValueError, match="refine_lr, refine_steps differ"):
        run(corpus, refining, tokenizer, tmp_path / "out", refine_steps=4)
    with pytest.raises(ValueError, match="refine_steps must be 0 or more"):
        run(corpus, refining, tokenizer, tmp_path / "neg", refine_steps=-1)


def test_rank_outside_world_is_an_error():
    with pytest.raises(ValueError, match="rank 2 is not within a world of size 2"):
        tk.distributed_rank(2, 2)


def test_tokenizer_for_another_codebook_is_refused(corpus, codec, tmp_path):
    with pytest.raises(ValueError, match="speech tokens but the codec has"):
        tk.tokenize_manifest(corpus[0], tmp_path, codec=codec, tokenizer=build_tokenizer(None, 16),
                             codec_name="c", tokenizer_name="t")


def test_cli_tokenize_saves_the_tokenizer_beside_the_shards(reference, corpus, codec, tmp_path):
    import argparse

    from transformers import AutoTokenizer

    from llasa.data.cli import add_commands

    codec.save_pretrained(tmp_path / "codec")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["data", "tokenize", str(corpus[0]), str(tmp_path / "out"), "--codec",
                              str(tmp_path / "codec"), "--max-length", str(MAX_LENGTH), "--batch-size", "8",
                              "--device", "cpu", "--rank", "0", "--world-size", "1"])
    assert args.handler(args) == 0
    saved = AutoTokenizer.from_pretrained(tmp_path / "out" / "tokenizer")
    assert len(saved) == codec.codebook_size + saved.convert_tokens_to_ids("<|s_0|>")
    rows = tk.CodeShardDataset(tmp_path / "out")
    whole = tk.CodeShardDataset(reference[0])
    assert [rows[i].tolist() for i in range(len(rows))] == [whole[i].tolist() for i in range(len(whole))]
