"""Training precision: "auto" trains in bf16 only where the hardware computes it (an AVX2-only
CPU emulates bf16: a step of the default LM recipe took 117 s against 14 s in fp32)."""

import warnings

import pytest
import torch

from llasa.hardware import fast_bf16, resolve_precision
from llasa.train.lm import LMTrainConfig


@pytest.fixture(params=[False, True], ids=["avx2-only", "amx"])
def cpu_bf16(request, monkeypatch):
    """Pretend the CPU has (or lacks) bf16 arithmetic, whatever this machine has."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: request.param, raising=False)
    return request.param


def test_fast_bf16_follows_the_cpu_features(cpu_bf16):
    assert fast_bf16("cpu") is cpu_bf16


def test_auto_is_bf16_only_where_it_is_fast_and_an_explicit_bf16_on_emulation_warns(cpu_bf16):
    assert resolve_precision("auto", "cpu", where="x") == ("bf16" if cpu_bf16 else "no")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_precision("bf16", "cpu", where="mixed_precision") == "bf16"  # the user's choice stands
        assert resolve_precision(True, "cpu", where="train.bf16") == "bf16"
        assert resolve_precision("no", "cpu", where="x") == resolve_precision(False, "cpu", where="x") == "no"
    slow = [str(w.message) for w in caught if "no bf16 arithmetic" in str(w.message)]
    assert len(slow) == (0 if cpu_bf16 else 2)
    assert all("'auto'" in m for m in slow)


def test_bad_precision_names_the_choices():
    with pytest.raises(ValueError, match="mixed_precision must be one of auto, no, bf16, fp16.*'fp32'"):
        resolve_precision("fp32", "cpu", where="mixed_precision")
    with pytest.raises(ValueError, match="train.mixed_precision must be one of .*'fp8'"):
        LMTrainConfig.from_dict({"data": "d", "output_dir": "o", "train": {"mixed_precision": "fp8"}})
    # YAML reads a bare `no` as false
    assert LMTrainConfig.from_dict({"data": "d", "output_dir": "o", "train": {"mixed_precision": False}}).train.mixed_precision == "no"
    assert LMTrainConfig.from_dict({"data": "d", "output_dir": "o"}).train.mixed_precision == "auto"


def test_lm_training_runs_in_the_resolved_precision(cpu_bf16, monkeypatch, tmp_path, capsys):
    """What `llasa train lm` hands accelerate is the resolved choice, not "auto"."""
    import accelerate

    seen = []

    class Stop(Exception):
        pass

    def fake_accelerator(*args, mixed_precision=None, **kwargs):
        seen.append(mixed_precision)
        raise Stop

    monkeypatch.setattr(accelerate, "Accelerator", fake_accelerator)
    from llasa.train.lm import train_lm

    with pytest.raises(Stop):
        train_lm(LMTrainConfig(data=str(tmp_path), output_dir=str(tmp_path / "out")))
    assert seen == ["bf16" if cpu_bf16 else "no"]
