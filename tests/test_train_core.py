"""The training core's own parts: the options read from a mapping, the log cut back on resume,
checkpoints that count only once complete. (Its loop is tested through both recipes, in
test_train_lm.py and test_train_codec.py.)"""

import json
from dataclasses import dataclass, field

import pytest

from llasa.config import apply_overrides, from_dict
from llasa.train.core import PROGRESS_FILE, STATE_DIR, Checkpoints, TrainLog


@dataclass
class Inner:
    size: int = 2
    rate: float = 0.5


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=lambda: Inner(size=3))
    maybe: Inner | None = None
    sizes: tuple[int, int] = (1, 2)


def test_options_come_from_nested_mappings_with_named_errors():
    raw = apply_overrides({"name": "x", "inner": {"rate": 1}}, ["inner.size=7", "sizes=[3, 4]", "maybe={}"])
    got = from_dict(Outer, raw, "test")
    assert got == Outer("x", Inner(7, 1.0), Inner(), (3, 4))
    assert from_dict(Outer, {"name": "x"}, "test").inner == Inner(size=3)  # the section's own defaults
    for raw, match in (
        ({}, "test config needs 'name'"),
        ({"name": "x", "inner": {"sise": 1}}, r"unknown test option\(s\): inner.sise; known: inner.size, inner.rate"),
        ({"name": "x", "inner": 5}, "test option inner must be a mapping of options, got 5"),
        ({"name": "x", "inner": {"size": 1.5}}, "test option inner.size must be int, got 1.5"),
        ({"name": 3}, "test option name must be str, got 3"),
    ):
        with pytest.raises(ValueError, match=match):
            from_dict(Outer, raw, "test")


def test_log_cut_drops_later_records_and_a_torn_line(tmp_path):
    log = TrainLog(tmp_path / "log.jsonl")
    for step in (1, 2, 3, 4):
        log.append({"step": step, "loss": 1.0 / step})
    with open(log.path, "a") as fh:
        fh.write('{"step": 5, "lo')  # a process killed while writing
    assert [r["step"] for r in log.records()] == [1, 2, 3, 4]
    log.cut(2)
    assert [r["step"] for r in log.records()] == [1, 2]
    log.append({"step": 3, "loss": 0.3})
    assert json.loads(log.path.read_text().splitlines()[-1]) == {"step": 3, "loss": 0.3}


def test_only_complete_checkpoints_resume_and_count(tmp_path):
    checkpoints = Checkpoints(tmp_path, keep=2)

    def make(step, complete=True):
        (checkpoints.path(step) / STATE_DIR).mkdir(parents=True)
        if complete:
            (checkpoints.path(step) / PROGRESS_FILE).write_text(json.dumps({"step": step}))

    for step in (2, 4, 6):
        make(step)
    make(8, complete=False)  # killed while saving
    (tmp_path / "checkpoint-x").mkdir()  # not ours
    assert checkpoints.latest() == checkpoints.path(6)
    make(10)
    checkpoints.prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-6", "checkpoint-x"]
