"""Codec training recipe: losses, discriminators, the mel-encoder codec, training and resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from transformers import Xcodec2Config, Xcodec2Model

from llasa.codec import Codec
from llasa.codec.discriminators import MultiPeriodDiscriminator, MultiResolutionSpecDiscriminator
from llasa.codec.losses import (
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from llasa.codec.mel_encoder import Xcodec2MelModel, build_codec_model
from llasa.train.codec import (
    CodecTrainer,
    PhoneticTargets,
    UtteranceSampler,
    ctc_loss,
    greedy_phone_errors,
    list_audio,
    load_config,
    lr_factor,
    train_codec,
)
from llasa.train.phones import PhoneRecognizer, train_recognizer

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
    manifest.write_text("".join(json.dumps({"audio": f"clip{i}.wav", "text": "x"}) + "\n" for i in range(6)))
    return root


def _recipe(corpus, output_dir, **train) -> dict:
    return {
        "output_dir": str(output_dir),
        "model": copy.deepcopy(TINY_MEL),
        "data": {"train": str(corpus / "train.jsonl"), "eval_clips": 2, "crop_seconds": 0.4, "eval_seconds": 0.4, "batch_size": 2},
        "loss": {"semantic": 0, "gan_start_step": 2, "discriminator_seconds": 0.2},
        "discriminators": copy.deepcopy(TINY_DISCRIMINATORS),
        "optim": {"lr": 1e-3, "warmup_steps": 2, "decay_steps": 10},
        "train": {"max_steps": 4, "log_every": 1, "eval_every": 2, "save_every": 2, "bf16": False, **train},
    }


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


def test_lr_schedule_warms_up_quadratically_then_decays_linearly():
    optim = {"lr": 1e-4, "warmup_start_lr": 1e-5, "final_lr": 2e-5, "warmup_steps": 100, "decay_steps": 1000}
    assert lr_factor(0, optim) == pytest.approx(0.1)
    assert lr_factor(50, optim) == pytest.approx((1e-5 + 9e-5 * 0.25) / 1e-4)
    assert lr_factor(100, optim) == pytest.approx(1.0)
    assert lr_factor(600, optim) == pytest.approx(0.6)
    assert lr_factor(10_000, optim) == pytest.approx(0.2)


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
    recipe = _recipe(corpus, tmp_path, bf16=True)
    recipe["loss"]["gan_start_step"] = 1000
    recipe["optim"].update(lr=3e-3, warmup_steps=0)
    trainer = CodecTrainer(load_config(recipe))
    wav = trainer.sampler.batch(0, 2)
    losses = [trainer.train_step(wav)["mel"] for _ in range(12)]
    assert losses[0] > 0 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_killed_run_resumes_exactly_like_an_uninterrupted_one(corpus, tmp_path):
    # 4 steps with the GAN switching on at step 2: both phases cross the checkpoint
    straight = train_codec(_recipe(corpus, tmp_path / "straight"), resume=False)
    interrupted = _recipe(corpus, tmp_path / "resumed")
    train_codec(interrupted, resume=False, max_steps=2)
    assert (tmp_path / "resumed" / "checkpoints" / "step_00000002").is_dir()
    resumed = train_codec(interrupted, resume=True)

    def log(run):
        return [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]

    def comparable(records):
        return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in records]

    assert [r["step"] for r in log("resumed") if "mel" in r] == [1, 2, 3, 4]
    assert "d_loss" in log("straight")[-2]  # the GAN phase was reached
    for a, b in zip(comparable(log("straight")), comparable(log("resumed")), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    weights_a, weights_b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], rtol=1e-5, atol=1e-6)
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "step_00000004" / "training_state.pt", weights_only=True)
    assert state["step"] == 4 and state["sched_d"]["last_epoch"] == 2  # D steps only once the GAN is on


def test_config_errors_name_the_problem(corpus, tmp_path):
    recipe = _recipe(corpus, tmp_path)
    recipe["optim"]["learning_rate"] = 1
    with pytest.raises(ValueError, match="optim.learning_rate"):
        load_config(recipe)
    recipe = _recipe(corpus, tmp_path)
    recipe["data"]["crop_seconds"] = 0.33
    with pytest.raises(ValueError, match="crop_seconds"):
        load_config(recipe)
    recipe = _recipe(corpus, tmp_path)
    recipe["loss"]["semantic"] = 5
    with pytest.raises(ValueError, match="semantic teacher"):
        CodecTrainer(load_config(recipe))


@pytest.mark.parametrize("has_bf16", [False, True], ids=["avx2-only", "amx"])
def test_bf16_auto_autocasts_only_where_the_cpu_computes_bf16(corpus, tmp_path, monkeypatch, has_bf16):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: has_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    trainer = CodecTrainer(load_config(_recipe(corpus, tmp_path, bf16="auto", device="cpu")))
    assert (trainer.bf16, trainer.bf16_discriminators) == (has_bf16, False)
    recon, _, _ = trainer.reconstruct(trainer.eval_batch)
    assert recon.dtype == torch.float32  # losses stay fp32 either way
    with pytest.raises(ValueError, match="train.bf16 must be true, false or auto, got 'yes'"):
        CodecTrainer(load_config(_recipe(corpus, tmp_path, bf16="yes")))


def test_training_audio_may_come_from_several_sources(corpus, tmp_path):
    """data.train: a list of manifests and folders reads all their files (more corpora for a stage)."""
    one = list_audio(corpus / "train.jsonl")
    both = list_audio([corpus / "train.jsonl", corpus])
    assert len(one) == 6 and both[:6] == one and sorted(both[6:]) == sorted(str(p) for p in corpus.glob("*.wav"))
    recipe = _recipe(corpus, tmp_path)
    recipe["data"]["train"] = [str(corpus / "train.jsonl"), str(corpus)]
    assert len(CodecTrainer(load_config(recipe)).sampler.files) == 12 - 2  # the last eval_clips held out
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_audio([corpus / "train.jsonl", tmp_path / "nowhere"])


def test_waveform_xcodec2_trains_with_its_semantic_teacher(corpus, tmp_path):
    recipe = _recipe(corpus, tmp_path, max_steps=1)
    recipe["model"] = "tiny"
    recipe["loss"]["semantic"] = 5.0
    final = train_codec(recipe, resume=False)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[0]["semantic"] > 0
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
    for directory in (final, tmp_path / "checkpoints" / "step_00000001"):
        codec = Codec.from_pretrained(directory)
        assert isinstance(codec.model, Xcodec2MelModel)
        codes = codec.encode(_voice(150, 0.5, 3))
        assert len(codes) == 8000 // 320 + 1 and codes.max() < 64
        assert len(codec.decode(codes)) == 320 * len(codes)


def test_decoder_only_stage_keeps_the_codes_and_trains_the_decoder(corpus, tmp_path):
    stage1 = train_codec(_recipe(corpus, tmp_path / "stage1", max_steps=1), resume=False)
    recipe = _recipe(corpus, tmp_path / "stage2", max_steps=2, decoder_only=True)
    recipe["init_from"] = str(stage1)
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
        CodecTrainer(load_config(_recipe(corpus, tmp_path / "x", decoder_only=True)))


# the phonetic term --------------------------------------------------------------------------------

SENTENCES = ["Hello, world!", "The cat sat on the mat.", "A quick brown fox?", "One, two, three.",
             "Good morning to you.", "See you very soon."]


@pytest.fixture(scope="module")
def transcribed(tmp_path_factory):
    root = tmp_path_factory.mktemp("transcribed")
    for i in range(6):
        sf.write(root / f"clip{i}.wav", _voice(110 + 30 * i, 1.2, i), 16000)
    (root / "train.jsonl").write_text(
        "".join(json.dumps({"audio": f"clip{i}.wav", "text": SENTENCES[i]}) + "\n" for i in range(6))
    )
    return root


def _fit(loss_fn, optimizer, steps: int) -> list[float]:
    """`steps` optimiser steps on `loss_fn()`; the losses before each."""
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _phonetic_recipe(corpus, output_dir, **train) -> dict:
    recipe = _recipe(corpus, output_dir, **train)
    recipe["loss"]["phonetic"] = 5.0
    recipe["data"]["phonetic_batch"] = 2
    return recipe


def test_phoneme_targets_are_the_ipa_without_stress_spaces_or_punctuation():
    targets = PhoneticTargets(SENTENCES, "espeak:en-us")
    assert targets.symbols == sorted(targets.symbols) and len(set(targets.symbols)) == len(targets.symbols)
    assert not set(targets.symbols) & set(" ,.!?ˈˌ")
    assert {"ð", "ə", "k"} <= set(targets.symbols)
    ids = targets("The cat.")
    assert ids and min(ids) >= 1 and max(ids) <= len(targets.symbols)  # 0 is CTC's blank
    assert "".join(targets.symbols[i - 1] for i in ids) == "ðəkæt"
    assert targets("Hello, world!") == targets("hello world")


def test_utterance_batches_are_whole_clips_that_ctc_can_align(transcribed, tmp_path):
    targets = PhoneticTargets(SENTENCES, "espeak:en-us")
    clips = [(str(transcribed / f"clip{i}.wav"), SENTENCES[i], 19200) for i in range(6)]
    sf.write(tmp_path / "short.wav", _voice(150, 0.1, 9), 16000)  # 5 frames for ~15 phonemes
    sampler = UtteranceSampler(clips + [(str(tmp_path / "short.wav"), SENTENCES[1], 1600)], targets,
                               hop=320, max_samples=16000 * 2, seed=0)
    assert len(sampler.items) == 6  # the clip too short to hold its phonemes is never drawn
    wav, frames, ids, lengths = sampler.batch(3, 4)
    assert wav.shape == (4, 1, 60 * 320) and frames.tolist() == [60] * 4
    assert ids.shape == (int(lengths.sum()),) and bool((lengths > 0).all())
    again = sampler.batch(3, 4)
    assert torch.equal(again[0], wav) and torch.equal(again[2], ids)  # a pure function of (seed, step)
    with pytest.raises(ValueError, match="phonetic_max_seconds"):
        UtteranceSampler(clips, targets, hop=320, max_samples=16000, seed=0)


def test_ctc_loss_and_best_path_phone_errors():
    # 6 frames, symbols 1..3 (+ blank 0): best path 1 1 0 2 3 3 -> "1 2 3"
    path = torch.tensor([[1, 1, 0, 2, 3, 3]])
    log_probs = torch.full((1, 6, 4), -20.0).scatter(-1, path[..., None], 0.0).log_softmax(-1)
    frames, lengths = torch.tensor([6]), torch.tensor([3])
    assert greedy_phone_errors(log_probs, frames, torch.tensor([1, 2, 3]), lengths) == 0.0
    assert greedy_phone_errors(log_probs, frames, torch.tensor([1, 2, 2]), lengths) == pytest.approx(1 / 3)
    assert float(ctc_loss(log_probs, frames, torch.tensor([1, 2, 3]), lengths)) < 1e-3
    assert float(ctc_loss(log_probs, frames, torch.tensor([3, 2, 1]), lengths)) > 5


def test_phonetic_term_trains_the_encoder_to_spell_out_phonemes(transcribed, tmp_path):
    recipe = _phonetic_recipe(transcribed, tmp_path, max_steps=2)
    recipe["loss"]["gan_start_step"] = 1000
    recipe["optim"].update(lr=3e-3, warmup_steps=0)
    trainer = CodecTrainer(load_config(recipe))
    head_group = trainer.opt_g.param_groups[-1]
    assert head_group["params"] == list(trainer.phonetic_head.parameters())
    assert head_group["lr"] == pytest.approx(10 * trainer.opt_g.param_groups[0]["lr"])  # phonetic_head_lr
    batch = trainer.utterances.batch(0, 4)
    encoder_before = {k: v.clone() for k, v in trainer.generator.mel_encoder.state_dict().items()}
    losses = _fit(lambda: trainer.phonetic(batch)[0], trainer.opt_g, 25)
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    assert any(not torch.equal(encoder_before[k], v) for k, v in trainer.generator.mel_encoder.state_dict().items())

    final = train_codec(recipe, resume=False)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(r["phonetic"] > 0 for r in records if "mel" in r)
    evals = [r for r in records if "eval_mel" in r]
    assert evals and all(0 <= r["eval_per"] and r["eval_phonetic"] > 0 for r in evals)
    assert not any("phonetic" in key for key in load_file(final / "model.safetensors"))  # training-only head
    assert isinstance(Codec.from_pretrained(final).model, Xcodec2MelModel)


def test_phonetic_run_resumes_exactly(transcribed, tmp_path):
    straight = train_codec(_phonetic_recipe(transcribed, tmp_path / "straight", max_steps=3), resume=False)
    interrupted = _phonetic_recipe(transcribed, tmp_path / "resumed", max_steps=3)
    train_codec(interrupted, resume=False, max_steps=2)
    resumed = train_codec(interrupted, resume=True)
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("straight", "resumed")]
    for a, b in zip(*logs, strict=True):
        for key in ("mel", "phonetic", "eval_phonetic"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5), key
    weights_a, weights_b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], rtol=1e-5, atol=1e-6)


def test_phonetic_term_errors_name_the_problem(corpus, transcribed, tmp_path):
    recipe = _phonetic_recipe(transcribed, tmp_path, decoder_only=True)
    recipe["init_from"] = "unused"
    with pytest.raises(ValueError, match="decoder_only"):
        CodecTrainer(load_config(recipe))
    recipe = _phonetic_recipe(transcribed, tmp_path)
    recipe["data"]["train"] = [str(transcribed / "train.jsonl"), str(corpus)]  # a folder: no transcripts
    with pytest.raises(ValueError, match="needs a transcript for every training clip"):
        CodecTrainer(load_config(recipe))
    recipe = _phonetic_recipe(transcribed, tmp_path)
    recipe["loss"]["phonetic"] = -1
    with pytest.raises(ValueError, match="loss.phonetic must be at least 0"):
        CodecTrainer(load_config(recipe))


# the phone recogniser and the intelligibility term ------------------------------------------------

TINY_RECOGNIZER = {"n_mels": 32, "width": 32, "layers": 2, "kernel": 3, "dilations": [1, 2]}


def _phones_recipe(transcribed, output_dir, **train) -> dict:
    return {
        "output_dir": str(output_dir),
        "model": dict(TINY_RECOGNIZER),
        "data": {"train": str(transcribed / "train.jsonl"), "eval_clips": 2, "batch_size": 2, "max_seconds": 2.0,
                 "time_mask_frames": 5, "freq_mask_bins": 4},
        "optim": {"lr": 3e-3, "warmup_steps": 1},
        "train": {"max_steps": 4, "log_every": 1, "eval_every": 2, "save_every": 2, **train},
    }  # fmt: skip


def test_phone_recognizer_reads_50_hz_frames_and_round_trips_through_save(tmp_path):
    model = PhoneRecognizer(["a", "b", "c"], "espeak:en-us", **TINY_RECOGNIZER).eval()
    wav = torch.from_numpy(_voice(150, 0.64, 1))[None, None]
    log_probs = model(wav)
    assert log_probs.shape == (1, 32, 4)  # 0.64 s at 50 Hz; 3 symbols + blank
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(1, 32))
    model.save_pretrained(tmp_path / "r")
    again = PhoneRecognizer.from_pretrained(tmp_path / "r").eval()
    assert torch.equal(again(wav), log_probs) and again.config == model.config
    with pytest.raises(ValueError, match="320-sample frames"):
        model(wav[..., :-1])
    with pytest.raises(FileNotFoundError, match="llasa train phones"):
        PhoneRecognizer.from_pretrained(tmp_path)


def test_recognizer_training_learns_and_resumes_exactly(transcribed, tmp_path):
    straight = train_recognizer(_phones_recipe(transcribed, tmp_path / "straight"), resume=False)
    interrupted = _phones_recipe(transcribed, tmp_path / "resumed")
    train_recognizer(interrupted, resume=False, max_steps=2)
    resumed = train_recognizer(interrupted, resume=True)
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("straight", "resumed")]
    assert [sorted(r) for r in logs[0]] == [sorted(r) for r in logs[1]]
    for a, b in zip(*logs, strict=True):
        for key in ("ctc", "eval_ctc", "eval_per"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5), key
    a, b = (load_file(d / "model.safetensors") for d in (straight, resumed))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # the model it trains can learn to read: CTC on one batch falls
    model = PhoneRecognizer.from_pretrained(straight)
    targets = model.targets()
    assert set(model.config["symbols"]) >= {"ð", "ə"} and targets("The cat.")
    sampler = UtteranceSampler([(str(transcribed / f"clip{i}.wav"), SENTENCES[i], 19200) for i in range(4)],
                               targets, hop=320, max_samples=32000, seed=0)  # fmt: skip
    batch = sampler.read(range(4))
    losses = _fit(lambda: ctc_loss(model(batch[0]), *batch[1:]), torch.optim.Adam(model.parameters(), lr=3e-3), 30)
    assert np.mean(losses[-3:]) < 0.75 * losses[0], losses


def _intelligibility_recipe(transcribed, tmp_path, recognizer) -> dict:
    stage1 = train_codec(_recipe(transcribed, tmp_path / "stage1", max_steps=1), resume=False)
    recipe = _recipe(transcribed, tmp_path / "stage2", max_steps=2, decoder_only=True)
    recipe["init_from"] = str(stage1)
    recipe["loss"].update(gan_start_step=0, intelligibility=2.0, recognizer=str(recognizer))
    recipe["data"]["phonetic_batch"] = 2
    return recipe


def test_intelligibility_term_trains_only_the_decoder_to_be_understood(transcribed, tmp_path):
    listener = PhoneRecognizer(PhoneticTargets(SENTENCES, "espeak:en-us").symbols, "espeak:en-us", **TINY_RECOGNIZER)
    listener.save_pretrained(tmp_path / "listener")
    recipe = _intelligibility_recipe(transcribed, tmp_path, tmp_path / "listener")
    trainer = CodecTrainer(load_config(recipe))
    assert not any(p.requires_grad for p in trainer.recognizer.parameters()) and not trainer.recognizer.training
    batch = trainer.heard.batch(0, 2)
    before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    losses = _fit(lambda: trainer.intelligibility(batch)[0], trainer.opt_g, 15)  # the term alone moves the decoder
    assert np.mean(losses[-3:]) < 0.9 * losses[0], losses
    after = trainer.generator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("acoustic_decoder."))
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("acoustic_decoder."))

    final = train_codec(recipe, resume=False)
    records = [json.loads(line) for line in (tmp_path / "stage2" / "log.jsonl").read_text().splitlines()]
    assert all(r["intelligibility"] > 0 for r in records if "mel" in r)
    evals = [r for r in records if "eval_mel" in r]
    assert evals and all(r["eval_intelligibility"] > 0 and 0 <= r["eval_heard_per"] for r in evals)
    assert load_file(tmp_path / "listener" / "model.safetensors").keys() == listener.state_dict().keys()
    assert not any("recognizer" in key for key in load_file(final / "model.safetensors"))
    stage1 = load_file(tmp_path / "stage1" / "codec" / "model.safetensors")
    shipped = load_file(final / "model.safetensors")
    assert all(torch.equal(stage1[k], shipped[k]) for k in stage1 if not k.startswith("acoustic_decoder."))


def test_intelligibility_errors_name_the_problem(transcribed, tmp_path):
    recipe = _recipe(transcribed, tmp_path)
    recipe["loss"]["intelligibility"] = 1.0
    with pytest.raises(ValueError, match="loss.recognizer"):
        CodecTrainer(load_config(recipe))
    recipe["loss"]["recognizer"] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="llasa train phones"):
        CodecTrainer(load_config(recipe))
    recipe["loss"]["intelligibility"] = -1.0
    with pytest.raises(ValueError, match="loss.intelligibility must be at least 0"):
        CodecTrainer(load_config(recipe))


def test_llasa_train_phones_runs_a_recipe_from_the_command_line(transcribed, tmp_path, capsys):
    from llasa.cli import main

    recipe = tmp_path / "phones.json"
    recipe.write_text(json.dumps(_phones_recipe(transcribed, tmp_path / "run")))
    assert main(["train", "phones", str(recipe), "--max-steps", "2", "--set", "model.width=16"]) == 0
    assert capsys.readouterr().out.strip().endswith("recognizer")
    assert PhoneRecognizer.from_pretrained(tmp_path / "run" / "recognizer").config["width"] == 16
