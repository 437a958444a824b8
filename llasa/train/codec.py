"""Codec training: the X-codec2 GAN recipe (spec/LLASA.md §4.7) on transformers' X-codec2, a
recipe for the training core (llasa/train/core.py: precision, resume, log).

Generator loss = mel * multi-scale log-mel L1 + adversarial * LSGAN + feature_matching *
(MPD + spec-D feature matching) [+ semantic * MSE to the frozen w2v-BERT features, for the
waveform model only: its own semantic encoder is the teacher]. One step is a discriminator
step then a generator step, each with its own AdamW and schedule. `loss.gan_start_step` trains
on reconstruction alone first, which is common practice and far cheaper on a CPU; the
discriminators' schedule starts when they do. Each checkpoint, and the finished run's
`<output_dir>/codec`, is a codec directory (`config.json` + `model.safetensors`) that
`llasa.codec` loads.

    llasa train codec configs/codec_small.yaml [--set key=value] [--max-steps N]
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.models.xcodec2.modeling_xcodec2 import Xcodec2SemanticAdapter

from llasa.audio import SAMPLE_RATE
from llasa.codec import loading
from llasa.codec.configs import codebook_size, get_config
from llasa.codec.discriminators import (
    MultiPeriodDiscriminator,
    MultiResolutionSpecDiscriminator,
)
from llasa.codec.features import semantic_features
from llasa.codec.losses import (
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from llasa.codec.mel_encoder import build_codec_model, is_mel_config
from llasa.config import from_dict, load_config_file
from llasa.train.args import OptimArgs, TrainArgs
from llasa.train.codec_data import CropSampler, list_audio
from llasa.train.core import Recipe, fit, make_scheduler


@dataclass
class CodecDataArgs:
    """Section `data`: the audio and how it is cut."""

    train: str | list[str] | None = None
    """a JSONL manifest (`audio` per line) or a folder of audio files, or a list of them (required)"""
    eval: str | list[str] | None = None
    """held-out audio, the same kinds; default: the last eval_clips training files are held out"""
    eval_clips: int = 8
    """held-out clips evaluated (their first eval_seconds)"""
    eval_seconds: float = 2.0
    """length of each held-out clip (a whole number of codec frames)"""
    crop_seconds: float = 6.0
    """length of each training crop (a whole number of codec frames)"""
    batch_size: int = 8
    """crops per step"""


@dataclass
class CodecLossArgs:
    """Section `loss`: the generator's terms and when the GAN starts."""

    mel: float = 15.0
    """weight of the multi-scale log-mel L1"""
    adversarial: float = 1.0
    """weight of the LSGAN generator term"""
    feature_matching: float = 1.0
    """weight of each discriminator's feature matching"""
    semantic: float = 5.0
    """weight of the MSE to the frozen w2v-BERT features (waveform X-codec2 only; 0 for encoder_type mel)"""
    gan_start_step: int = 0
    """steps of reconstruction alone before the discriminators train"""
    discriminator_seconds: float | None = None
    """the discriminators see a random segment of this length from each crop (None: the whole
    crop); on a CPU they cost many times the generator, and their cost is linear in length"""
    mel_n_mels: list[int] = field(default_factory=lambda: [5, 10, 20, 40, 80, 160, 320])
    """mel bands of each scale"""
    mel_window_lengths: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048])
    """STFT window of each scale (hop = window / 4)"""


@dataclass
class PeriodDiscriminatorArgs:
    """Section `discriminators.mpd`: HiFi-GAN's multi-period discriminator."""

    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    """one sub-discriminator per period"""
    channels: int = 16
    """channels of the first convolution (growing 4x per layer)"""
    max_channels: int = 512
    """the most channels of any convolution"""


@dataclass
class SpecDiscriminatorArgs:
    """Section `discriminators.spec`: multi-resolution STFT discriminator."""

    fft_sizes: list[int] = field(default_factory=lambda: [78, 126, 206, 334, 542, 876, 1418, 2296])
    """one sub-discriminator per STFT size"""
    hop_sizes: list[int] = field(default_factory=lambda: [39, 63, 103, 167, 271, 438, 709, 1148])
    """the hop of each STFT"""
    channels: int = 32
    """channels of the first convolution"""
    max_channels: int = 512
    """the most channels of any convolution"""


@dataclass
class DiscriminatorArgs:
    """Section `discriminators`."""

    mpd: PeriodDiscriminatorArgs = field(default_factory=PeriodDiscriminatorArgs)
    spec: SpecDiscriminatorArgs = field(default_factory=SpecDiscriminatorArgs)


@dataclass
class CodecTrainConfig:
    """A codec training recipe (configs/codec_small.yaml, configs/codec_small_gan.yaml); official
    values where the recipe has them (spec/LLASA.md §4.7)."""

    output_dir: str
    """where checkpoints, the log and the finished codec (`codec/`) go"""
    data: CodecDataArgs
    """section `data`"""
    model: str | dict = "small"
    """a llasa.codec preset name or a mapping of Xcodec2Config fields"""
    init_from: str | None = None
    """a codec directory (either layout) to fine-tune instead of random weights; its config.json
    then decides the architecture and `model` is not used"""
    decoder_only: bool = False
    """train only `acoustic_decoder` of the init_from codec (encoder, quantizer frozen, in eval
    mode): a GAN stage after an LM was trained on the codec's codes leaves those codes intact"""
    loss: CodecLossArgs = field(default_factory=CodecLossArgs)
    """section `loss`"""
    discriminators: DiscriminatorArgs = field(default_factory=DiscriminatorArgs)
    """section `discriminators`"""
    train: TrainArgs = field(default_factory=lambda: TrainArgs(max_steps=100_000, eval_every=500, save_every=500))
    """section `train` (llasa/train/args.py)"""
    optim: OptimArgs = field(default_factory=lambda: OptimArgs(
        lr=1e-4, betas=(0.8, 0.9), scheduler="polynomial", warmup_steps=3000, min_lr_ratio=0.2))  # fmt: skip
    """section `optim` (llasa/train/args.py): AdamW (0.8, 0.9), warmup then linear decay, as X-codec2"""

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("codec training config needs 'output_dir'")
        if not self.data.train:
            raise ValueError("codec training config needs 'data.train' (a JSONL manifest or a folder of audio)")
        if self.decoder_only and not self.init_from:
            raise ValueError("decoder_only fine-tunes the decoder of a trained codec: set init_from")
        hop = get_config(copy.deepcopy(self.model)).hop_length
        for name in ("crop_seconds", "eval_seconds"):
            samples = getattr(self.data, name) * SAMPLE_RATE
            if samples != int(samples) or int(samples) % hop:
                raise ValueError(f"data.{name}={getattr(self.data, name)} must be a whole number of {hop}-sample codec frames")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CodecTrainConfig:
        return from_dict(cls, raw, "codec training")


class SemanticHead(nn.Module):
    """Training-only: quantized latents -> predicted w2v-BERT features (official fc_post_s +
    SemanticDecoder, here X-codec2's own adapter block). Not part of the saved codec."""

    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.quantization_dim, config.semantic_model_config.hidden_size)
        self.decoder = Xcodec2SemanticAdapter(config)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, quantization_dim, T) -> (B, semantic hidden, T)."""
        return self.decoder(self.fc(latents.transpose(1, 2)).transpose(1, 2))


def _build_generator(cfg: CodecTrainConfig):
    if cfg.init_from:
        directory = loading.resolve(cfg.init_from)
        model_config, state = loading.read_checkpoint(directory)
        model = build_codec_model(model_config)
        loading.load_strict(model, state, source=f"'{directory}'")
        return model
    return build_codec_model(get_config(copy.deepcopy(cfg.model)))


class CodecRecipe(Recipe):
    """The codec (generator), its discriminators, crops of audio and the GAN losses."""

    name = "train codec"
    final_dir = "codec"
    plot_panels = {"reconstruction (multi-scale log-mel L1)": ("mel", "eval_mel"),
                   "GAN terms": ("adversarial", "d_loss", "fm_mpd", "fm_spec")}  # fmt: skip

    def __init__(self, cfg: CodecTrainConfig, accelerator, resumed: dict | None):
        if accelerator.num_processes > 1:
            # the generator is driven through encode/decode, not forward(), which DDP needs
            raise ValueError("the codec recipe trains in one process: launch `llasa train codec` without accelerate launch / torchrun")
        self.cfg, self.accelerator = cfg, accelerator
        device = accelerator.device
        generator = _build_generator(cfg).to(device)
        self.mel_model = is_mel_config(generator.config)
        if cfg.decoder_only:
            generator.requires_grad_(False)
            generator.acoustic_decoder.requires_grad_(True)
        models = {"generator": generator}
        if not self.mel_model:
            generator.semantic_encoder.requires_grad_(False)
            if cfg.loss.semantic > 0 and not cfg.decoder_only:
                models["semantic_head"] = SemanticHead(generator.config).to(device)
        elif cfg.loss.semantic > 0:
            raise ValueError("loss.semantic > 0 needs a semantic teacher, which only the waveform X-codec2 has "
                             "(its w2v-BERT); set loss.semantic: 0 for encoder_type: mel")  # fmt: skip
        disc = cfg.discriminators
        models["discriminators"] = nn.ModuleDict({
            "mpd": MultiPeriodDiscriminator(**asdict(disc.mpd)), "spec": MultiResolutionSpecDiscriminator(**asdict(disc.spec)),
        }).to(device)  # fmt: skip
        self.mel_loss = MultiScaleMelLoss(generator.config.sampling_rate, cfg.loss.mel_n_mels, cfg.loss.mel_window_lengths).to(device)

        data = cfg.data
        files = list_audio(data.train)
        if data.eval:
            held_out = list_audio(data.eval)
        else:
            if len(files) <= data.eval_clips:
                raise ValueError(f"{data.train}: {len(files)} files; need more than data.eval_clips={data.eval_clips}")
            files, held_out = files[: -data.eval_clips], files[-data.eval_clips :]
        self.sampler = CropSampler(files, int(data.crop_seconds * SAMPLE_RATE), cfg.train.seed)
        self.eval_batch = CropSampler(held_out[: data.eval_clips], int(data.eval_seconds * SAMPLE_RATE), cfg.train.seed).beginnings()
        self.generator = generator
        if not cfg.init_from:
            self._unit_variance_quantizer_input()

        optim = cfg.optim
        adamw = dict(lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        trainable = [p for name in ("generator", "semantic_head") if name in models for p in models[name].parameters() if p.requires_grad]
        opt_g = torch.optim.AdamW(trainable, **adamw)
        opt_d = torch.optim.AdamW(models["discriminators"].parameters(), **adamw)
        *prepared, self.opt_g, self.opt_d = accelerator.prepare(*models.values(), opt_g, opt_d)
        prepared = dict(zip(models, prepared))
        self.generator, self.discriminators = prepared["generator"], prepared["discriminators"]
        self.semantic_head = prepared.get("semantic_head")
        self.generator_params = trainable
        self.sched_g = make_scheduler(self.opt_g, optim, cfg.train.max_steps)
        self.sched_d = make_scheduler(self.opt_d, optim, max(1, cfg.train.max_steps - cfg.loss.gan_start_step))
        accelerator.register_for_checkpointing(self.sched_g, self.sched_d)
        self._train_mode()

    # one step -------------------------------------------------------------------------------

    def _train_mode(self) -> None:
        self.generator.train()
        if self.cfg.decoder_only:
            for name, module in self.generator.named_children():
                if name != "acoustic_decoder":
                    module.eval()  # no dropout: the codes are exactly those of the frozen encoder
        if self.semantic_head is not None:
            self.semantic_head.train()

    def _encode(self, wav: torch.Tensor):
        """(B, 1, N) -> (Xcodec2EncoderOutput with latents, w2v-BERT input features or None)."""
        if self.mel_model:
            return self.generator.encode(wav, output_latents=True), None
        features = torch.stack([semantic_features(w[0].numpy()) for w in wav.cpu()]).to(wav.device)
        return self.generator.encode(wav, input_features=features, output_latents=True), features

    @torch.no_grad()
    def _unit_variance_quantizer_input(self) -> None:
        """Rescale `quantizer.project_in` so the FSQ input has unit variance on real audio.

        transformers' initialisation (std 0.02, zero biases) shrinks the encoder's output until
        every frame rounds to the all-zero FSQ code, whose latent is exactly zero; the decoder
        then emits exact silence, where the clamped log-mel loss has no gradient at all, and
        training stalls until the discriminators switch on.
        """
        captured = {}
        projection = self.generator.quantizer.project_in
        handle = projection.register_forward_hook(lambda _module, _inputs, output: captured.update(z=output))
        try:
            self._encode(self.eval_batch.to(self.accelerator.device))
        finally:
            handle.remove()
        projection.weight.div_(captured["z"].float().std().clamp(min=1e-8))

    def reconstruct(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, 1, N) -> (reconstruction, codes, semantic loss or None), in the run's precision
        (the losses in fp32)."""
        with self.accelerator.autocast():
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.decoder_only):
                encoded, features = self._encode(wav)
            recon = self.generator.decode(latents=encoded.latents).audio_values[..., : wav.shape[-1]]
            semantic = None
            if self.semantic_head is not None and self.semantic_head.training:
                with torch.no_grad():
                    target = self.generator.semantic_encoder(features).last_hidden_state.transpose(1, 2)
                semantic = nn.functional.mse_loss(self.semantic_head(encoded.latents).float(), target.float())
        return recon.float(), encoded.audio_codes, semantic

    def _discriminate(self, wav: torch.Tensor):
        # in fp32 whatever the run's precision: their narrow 2-D convolutions ran slower in bf16 on CPU
        return {name: d(wav) for name, d in self.discriminators.items()}

    def _segments(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same random window of each real and generated crop, for the discriminators."""
        seconds = self.cfg.loss.discriminator_seconds
        length = real.shape[-1] if seconds is None else min(real.shape[-1], int(seconds * SAMPLE_RATE))
        if length == real.shape[-1]:
            return real, fake
        starts = torch.randint(0, real.shape[-1] - length + 1, (real.shape[0], 1, 1))
        index = (starts + torch.arange(length)).to(real.device)
        return real.gather(-1, index), fake.gather(-1, index)

    def batch(self, step: int) -> torch.Tensor:
        return self.sampler.batch(step, self.cfg.data.batch_size)

    def train_step(self, wav: torch.Tensor, step: int) -> dict:
        acc, weights, clip = self.accelerator, self.cfg.loss, self.cfg.optim.grad_clip
        wav = wav.to(acc.device, non_blocking=True)
        gan = step >= weights.gan_start_step
        recon, _, semantic = self.reconstruct(wav)
        stats: dict[str, Any] = {}

        if gan:
            real_segment, fake_segment = self._segments(wav, recon)
            self.discriminators.requires_grad_(True)
            real, fake = self._discriminate(real_segment), self._discriminate(fake_segment.detach())
            d_loss = sum(discriminator_loss(real[n][0], fake[n][0]) for n in real)
            self.opt_d.zero_grad(set_to_none=True)
            acc.backward(d_loss)
            stats["d_grad_norm"] = acc.clip_grad_norm_(self.discriminators.parameters(), clip)
            self.opt_d.step()
            self.sched_d.step()
            stats["d_loss"] = d_loss.detach()

        mel = self.mel_loss(recon, wav)
        total = weights.mel * mel
        stats["mel"] = mel.detach()
        if gan:
            self.discriminators.requires_grad_(False)  # no discriminator gradients from the G step
            fake = self._discriminate(fake_segment)
            with torch.no_grad():
                real = self._discriminate(real_segment)
            adversarial = sum(generator_adversarial_loss(fake[n][0]) for n in fake)
            total = total + weights.adversarial * adversarial
            stats["adversarial"] = adversarial.detach()
            for name in fake:
                matching = feature_matching_loss(real[name][1], fake[name][1])
                total = total + weights.feature_matching * matching
                stats[f"fm_{name}"] = matching.detach()
        if semantic is not None:
            total = total + weights.semantic * semantic
            stats["semantic"] = semantic.detach()
        self.opt_g.zero_grad(set_to_none=True)
        acc.backward(total)
        stats["g_grad_norm"] = acc.clip_grad_norm_(self.generator_params, clip)
        stats["lr"] = self.sched_g.get_last_lr()[0]
        self.opt_g.step()
        self.sched_g.step()
        stats["g_loss"] = total.detach()
        return stats

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Multi-scale mel L1 of the held-out clips' resynthesis, and the share of codes used."""
        self.generator.eval()
        if self.semantic_head is not None:
            self.semantic_head.eval()
        try:
            wav = self.eval_batch.to(self.accelerator.device)
            recon, codes, _ = self.reconstruct(wav)
            return {
                "eval_mel": float(self.mel_loss(recon, wav)),
                "codes_used": len(torch.unique(codes)) / codebook_size(self.generator.config),
            }
        finally:
            self._train_mode()

    def export(self, directory: Path) -> None:
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.generator).save_pretrained(str(directory))


def train_codec(config: CodecTrainConfig | dict | str | Path, *, resume: bool = True, max_steps: int | None = None) -> Path:
    """Train (or resume training) a codec; returns the finished codec's folder
    (``<output_dir>/codec``), or the last checkpoint of a run stopped early by ``max_steps``."""
    cfg = config if isinstance(config, CodecTrainConfig) else CodecTrainConfig.from_dict(load_config_file(config))
    return fit(CodecRecipe, cfg, resume=resume, max_steps=max_steps)
