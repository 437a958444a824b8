"""Codec training recipe: losses, discriminators, the mel-encoder codec, training as before the
shared training core, and resume (also after SIGKILL)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from test_train_lm import _run_killed
from transformers import Xcodec2Config, Xcodec2Model

from llasa.codec import Codec
from llasa.codec.discriminators import (
    MultiPeriodDiscriminator,
    MultiResolutionSpecDiscriminator,
)
from llasa.codec.losses import (
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from llasa.codec.mel_encoder import Xcodec2MelModel, build_codec_model
from llasa.train.codec import CodecRecipe, CodecTrainConfig, train_codec
from llasa.train.codec_data import list_audio
from llasa.train.core import make_accelerator

TINY_MEL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "semantic_model_config": {
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "output_hidden_size": 32
    },
    "quantization_dim": 96,
    "quantization_levels": [4, 4, 4],
    "encoder_type": "mel",
    "mel_bins": 32,
    "mel_encoder_layers": 1,
}
TINY_DISCRIMINATORS = {
    "mpd": {"periods": [2, 3], "channels": 4, "max_channels": 16},
    "spec": {"fft_sizes": [126, 542], "hop_sizes": [63, 271], "channels": 4, "max_channels": 16},
}


def _voice(f0: float, seconds: float, seed: int) -> np.ndarray:
    """A buzzy harmonic tone with vibrato and a syllable-rate envelope: speech-like enough."""
    t = np.arange(int(16000 * seconds)) / 16000
    phase = 2 * np.pi * f0 * (t + 0.02 * np.sin(2 * np.pi * 0.7 * t))
    wav = sum(np.sin(k * phase) / k for k in range(1, 8)) * np.sin(2 * np.pi * 3 * t) ** 2
    wav += 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.5 * wav / np.abs(wav).max()).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i in range(6):
        sf.write(root / f"clip{i}.wav", _voice(110 + 30 * i, 1.2, i), 16000)
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"clip{i}.wav"}) + "\n" for i in range(6)))
    return root


def _recipe(corpus, output_dir, **train) -> dict:
    return {
        "output_dir": str(output_dir),
        "model": copy.deepcopy(TINY_MEL),
        "data": {"train": str(corpus / "train.jsonl"), "eval_clips": 2, "crop_seconds": 0.4, "eval_seconds": 0.4, "batch_size": 2},
        "loss": {"semantic": 0, "gan_start_step": 2, "discriminator_seconds": 0.2},
        "discriminators": copy.deepcopy(TINY_DISCRIMINATORS),
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"max_steps": 4, "log_every": 1, "eval_every": 2, "save_every": 2, "mixed_precision": "no", **train},
    }


def _build(recipe: dict) -> CodecRecipe:
    """The recipe's models, optimisers and data, as `train_codec` builds them."""
    cfg = CodecTrainConfig.from_dict(recipe)
    return CodecRecipe(cfg, make_accelerator(cfg.train), None)


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


# losses and discriminators ----------------------------------------------------------------------


def test_discriminators_give_one_logit_map_and_feature_list_per_subdiscriminator():
    wav = torch.randn(2, 1, 4001, requires_grad=True)  # odd length: MPD pads to its period
    for disc, count in (
        (MultiPeriodDiscriminator(periods=(2, 3, 5), channels=4, max_channels=16), 3),
        (MultiResolutionSpecDiscriminator(fft_sizes=(64, 256), hop_sizes=(16, 64), channels=4, max_channels=8), 2),
    ):
        logits, features = disc(wav)
        assert len(logits) == len(features) == count
        assert all(x.ndim == 2 and x.shape[0] == 2 for x in logits)
        assert all(len(f) == len(features[0]) >= 3 for f in features)
        generator_adversarial_loss(logits).backward()
        assert wav.grad is not None and wav.grad.abs().sum() > 0
        wav.grad = None


def test_gan_losses_are_lsgan_and_l1_feature_matching():
    ones, zeros = [torch.ones(2, 5)], [torch.zeros(2, 5)]
    assert discriminator_loss(ones, zeros) == 0
    assert discriminator_loss(zeros, ones) == 2  # (1-0)^2 + 1^2
    assert generator_adversarial_loss(ones) == 0 and generator_adversarial_loss(zeros) == 1
    real = [[torch.zeros(3), torch.ones(4)]]
    fake = [[torch.zeros(3), torch.full((4,), 3.0)]]
    assert feature_matching_loss(real, fake) == pytest.approx(1.0)  # mean over layers of (0, 2)


def test_multiscale_mel_loss_is_zero_for_identical_audio_and_has_gradients():
    loss = MultiScaleMelLoss()
    assert len(loss.spectrograms) == 7
    target = torch.from_numpy(_voice(150, 0.5, 0))[None, None]
    assert loss(target, target) == 0
    predicted = (0.5 * target).requires_grad_()
    value = loss(predicted, target)
    value.backward()
    # halving the amplitude shifts every log10 mel bin by log10(2) at each of the 7 scales
    assert value.item() == pytest.approx(7 * np.log10(2), rel=0.05)
    assert predicted.grad.abs().sum() > 0


# the mel-encoder codec ----------------------------------------------------------------------------


def test_mel_codec_keeps_the_xcodec2_token_interface_and_round_trips_through_save(tmp_path):
    config = Xcodec2Config(**copy.deepcopy(TINY_MEL))
    torch.manual_seed(0)
    model = build_codec_model(config).eval()
    assert isinstance(model, Xcodec2MelModel)
    assert isinstance(build_codec_model(Xcodec2Config(**{k: v for k, v in TINY_MEL.items() if k != "encoder_type"})), Xcodec2Model)
    wav = torch.from_numpy(_voice(140, 0.64, 1))[None, None]  # 10240 samples = 32 frames
    with torch.no_grad():
        codes = model.encode(wav).audio_codes
        audio = model.decode(audio_codes=codes).audio_values
    assert codes.shape == (1, 1, 32) and codes.min() >= 0 and codes.max() < 64
    assert audio.shape == (1, 1, 320 * 32)
    # the decoder half uses Xcodec2Model's module names, so its weights are interchangeable
    assert {k for k in model.state_dict() if not k.startswith(("mel_encoder.", "fc_encoder."))} == {
        k for k in Xcodec2Model(Xcodec2Config(**{k: v for k, v in TINY_MEL.items() if k != "encoder_type"})).state_dict()
        if k.startswith(("quantizer.", "acoustic_decoder."))
    }
    model.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["encoder_type"] == "mel"
    reloaded = Xcodec2MelModel.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        assert torch.equal(reloaded.encode(wav).audio_codes, codes)
        assert torch.allclose(reloaded.decode(audio_codes=codes).audio_values, audio, atol=1e-6)


# training ---------------------------------------------------------------------------------------


def test_a_few_reconstruction_steps_reduce_the_mel_loss_on_one_clip(corpus, tmp_path):
    recipe = _recipe(corpus, tmp_path, mixed_precision="bf16")
    recipe["loss"]["gan_start_step"] = 1000
    recipe["optim"].update(lr=3e-3, warmup_steps=0)
    trainer = _build(recipe)
    wav = trainer.batch(0)
    losses = [float(trainer.train_step(wav, step)["mel"]) for step in range(12)]
    assert losses[0] > 0 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


# The loop this core replaced (git 9010f5e), on the recipe of test_same_loss_as_before_the_training_core
# at seeds 0, 1, 2 (one thread): mean train mel loss of the last 5 of 20 steps (the GAN on from step
# 10), held-out mel loss at step 20.
BEFORE = {"mel_last5": [2.5242, 2.5126, 2.6600], "eval_mel": [3.5015, 3.6135, 3.5144]}


def test_same_loss_as_before_the_training_core(corpus, tmp_path):
    """The tiny GAN recipe reaches the losses it reached before, within the seed-to-seed spread
    (no warmup: the old one rose quadratically from warmup_start_lr, transformers' linearly from 0)."""
    recipe = _recipe(corpus, tmp_path / "run", max_steps=20, eval_every=10, save_every=20)
    recipe["loss"]["gan_start_step"] = 10
    recipe["optim"].update(lr=3e-3, warmup_steps=0, min_lr_ratio=0.1)
    train_codec(recipe)
    records = _log(tmp_path / "run")
    now = {"mel_last5": np.mean([r["mel"] for r in records[-5:]]), "eval_mel": records[-1]["eval_mel"]}
    assert "d_loss" in records[-1]
    for key, before in BEFORE.items():
        assert abs(now[key] - before[0]) <= max(before) - min(before), (key, now[key], before)


def _comparable(records):
    return [{k: v for k, v in r.items() if k not in ("steps_per_s", "interval_s")} for r in records]


def _assert_same_run(a, b, run_a, run_b):
    assert [r["step"] for r in _log(b)] == [r["step"] for r in _log(a)]
    for x, y in zip(_comparable(_log(a)), _comparable(_log(b)), strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), key
    weights_a, weights_b = load_file(run_a / "model.safetensors"), load_file(run_b / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], rtol=1e-5, atol=1e-6)


def test_stopped_run_resumes_exactly_like_an_uninterrupted_one(corpus, tmp_path):
    # 4 steps with the GAN switching on at step 2: both phases cross the checkpoint
    straight = train_codec(_recipe(corpus, tmp_path / "straight"), resume=False)
    interrupted = _recipe(corpus, tmp_path / "resumed")
    train_codec(interrupted, resume=False, max_steps=2)
    assert (tmp_path / "resumed" / "checkpoint-2" / "progress.json").is_file()
    resumed = train_codec(interrupted, resume=True)
    assert [r["step"] for r in _log(tmp_path / "resumed") if "mel" in r] == [1, 2, 3, 4]
    assert "d_loss" in _log(tmp_path / "straight")[-1]  # the GAN phase was reached
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed", straight, resumed)
    # the discriminators' schedule (the second registered) moved only on their 2 steps
    state = torch.load(tmp_path / "resumed" / "checkpoint-4" / "train_state" / "custom_checkpoint_1.pkl", weights_only=False)
    assert state["last_epoch"] == 2
    other = _recipe(corpus, tmp_path / "resumed", max_steps=6)
    other["discriminators"]["mpd"]["channels"] = 8
    with pytest.raises(RuntimeError, match="checkpoint-4: its training state does not fit this recipe"):
        train_codec(other)


def test_sigkill_mid_run_then_resume_equals_uninterrupted(corpus, tmp_path):
    settings = dict(max_steps=8, save_every=2, eval_every=4)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(_recipe(corpus, tmp_path / "killed", **settings)))
    _run_killed(["train", "codec", str(recipe)], tmp_path / "killed", after_step=3)
    assert not (tmp_path / "killed" / "codec").exists()
    resumed = train_codec(recipe)
    full = train_codec(_recipe(corpus, tmp_path / "full", **settings))
    _assert_same_run(tmp_path / "full", tmp_path / "killed", full, resumed)


def test_config_errors_name_the_problem(corpus, tmp_path):
    recipe = _recipe(corpus, tmp_path)
    recipe["optim"]["learning_rate"] = 1
    with pytest.raises(ValueError, match=r"unknown codec training option\(s\): optim.learning_rate; known: optim.lr"):
        CodecTrainConfig.from_dict(recipe)
    recipe = _recipe(corpus, tmp_path)
    recipe["data"]["crop_seconds"] = 0.33
    with pytest.raises(ValueError, match="crop_seconds"):
        CodecTrainConfig.from_dict(recipe)
    recipe = _recipe(corpus, tmp_path)
    recipe["discriminators"]["mpd"]["kernel"] = 3
    with pytest.raises(ValueError, match="discriminators.mpd.kernel; known: discriminators.mpd.periods"):
        CodecTrainConfig.from_dict(recipe)
    with pytest.raises(ValueError, match="needs 'data.train'"):
        CodecTrainConfig.from_dict({"output_dir": str(tmp_path)})
    recipe = _recipe(corpus, tmp_path)
    recipe["loss"]["semantic"] = 5
    with pytest.raises(ValueError, match="semantic teacher"):
        _build(recipe)


@pytest.mark.parametrize("has_bf16", [False, True], ids=["avx2-only", "amx"])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(corpus, tmp_path, monkeypatch, has_bf16):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: has_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    trainer = _build(_recipe(corpus, tmp_path, mixed_precision="auto"))
    assert trainer.accelerator.mixed_precision == ("bf16" if has_bf16 else "no")
    recon, _, _ = trainer.reconstruct(trainer.eval_batch)
    assert recon.dtype == torch.float32  # losses stay fp32 either way
    with pytest.raises(ValueError, match="train.mixed_precision must be one of auto, no, bf16, fp16, got 'yes'"):
        CodecTrainConfig.from_dict(_recipe(corpus, tmp_path, mixed_precision="yes"))


def test_training_audio_may_come_from_several_sources(corpus, tmp_path):
    """data.train: a list of manifests and folders reads all their files (more corpora for a stage)."""
    one = list_audio(corpus / "train.jsonl")
    both = list_audio([corpus / "train.jsonl", corpus])
    assert len(one) == 6 and both[:6] == one and sorted(both[6:]) == sorted(str(p) for p in corpus.glob("*.wav"))
    recipe = _recipe(corpus, tmp_path)
    recipe["data"]["train"] = [str(corpus / "train.jsonl"), str(corpus)]
    assert len(_build(recipe).sampler.files) == 12 - 2  # the last eval_clips held out
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_audio([corpus / "train.jsonl", tmp_path / "nowhere"])


def test_waveform_xcodec2_trains_with_its_semantic_teacher(corpus, tmp_path):
    recipe = _recipe(corpus, tmp_path, max_steps=1)
    recipe["model"] = "tiny"
    recipe["loss"]["semantic"] = 5.0
    final = train_codec(recipe, resume=False)
    assert _log(tmp_path)[0]["semantic"] > 0
    assert "semantic_encoder.encoder.layers.0.ffn1.intermediate_dense.weight" in load_file(final / "model.safetensors")
    codec = Codec.from_pretrained(final)
    assert len(codec.decode(codec.encode(_voice(150, 0.5, 3)))) == 320 * (8000 // 320 + 1)


def _codec_builds_mel_models() -> bool:
    try:
        return isinstance(Codec.from_config(Xcodec2Config(**copy.deepcopy(TINY_MEL))).model, Xcodec2MelModel)
    except Exception:
        return False


@pytest.mark.xfail(
    not _codec_builds_mel_models(),
    reason="llasa.codec.Codec does not build `encoder_type: mel` models yet (needs build_codec_model)",
)
def test_trained_mel_codec_loads_and_runs_through_llasa_codec(corpus, tmp_path):
    final = train_codec(_recipe(corpus, tmp_path, max_steps=1), resume=False)
    for directory in (final, tmp_path / "checkpoint-1"):
        codec = Codec.from_pretrained(directory)
        assert isinstance(codec.model, Xcodec2MelModel)
        codes = codec.encode(_voice(150, 0.5, 3))
        assert len(codes) == 8000 // 320 + 1 and codes.max() < 64
        assert len(codec.decode(codes)) == 320 * len(codes)


def test_decoder_only_stage_keeps_the_codes_and_trains_the_decoder(corpus, tmp_path):
    stage1 = train_codec(_recipe(corpus, tmp_path / "stage1", max_steps=1), resume=False)
    recipe = _recipe(corpus, tmp_path / "stage2", max_steps=2)
    recipe.update(init_from=str(stage1), decoder_only=True)
    recipe["loss"]["gan_start_step"] = 0
    stage2 = train_codec(recipe, resume=False)
    before, after = load_file(stage1 / "model.safetensors"), load_file(stage2 / "model.safetensors")
    decoder = [k for k in before if k.startswith("acoustic_decoder.")]
    assert all(torch.equal(before[k], after[k]) for k in before if k not in decoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    wav = torch.from_numpy(_voice(150, 0.64, 4))[None, None]
    with torch.no_grad():
        codes = [Xcodec2MelModel.from_pretrained(str(d)).eval().encode(wav).audio_codes for d in (stage1, stage2)]
    assert torch.equal(*codes)
    with pytest.raises(ValueError, match="init_from"):
        CodecTrainConfig.from_dict({**_recipe(corpus, tmp_path / "x"), "decoder_only": True})
