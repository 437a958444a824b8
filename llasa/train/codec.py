"""Codec training: the X-codec2 GAN recipe (spec/LLASA.md §4.7) on transformers' X-codec2.

Generator loss = mel * multi-scale log-mel L1 + adversarial * LSGAN + feature_matching *
(MPD + spec-D feature matching) [+ semantic * MSE to the frozen w2v-BERT features, for the
waveform model only: its own semantic encoder is the teacher] [+ phonetic * CTC of the
transcript's phonemes read off the quantized latents of whole utterances] [+ intelligibility *
CTC of the transcript's phonemes read by a frozen phone recogniser off the resynthesis of whole
utterances (llasa.train.phones)]. One iteration is a
discriminator step then a generator step, both AdamW (0.8, 0.9) with gradient clipping and
a quadratic-warmup / linear-decay schedule. `gan_start_step` trains on reconstruction alone
first, which is common practice and far cheaper on a CPU; the discriminators' schedule starts
when they do.

A nanoGPT-style loop: the batch of step s is a pure function of (seed, s), and a checkpoint
holds everything else that moves (weights, optimisers, schedules, RNG), so a run killed at any
point and restarted continues from its last checkpoint exactly as if uninterrupted. Each
checkpoint's generator is a codec directory (`config.json` + `model.safetensors`) that
`llasa.codec` loads; the final one is copied to `<output_dir>/codec`.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import shutil
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm
from transformers.models.xcodec2.modeling_xcodec2 import Xcodec2SemanticAdapter

from llasa.audio import SAMPLE_RATE, load as load_audio
from llasa.codec import loading
from llasa.codec.configs import codebook_size, get_config
from llasa.codec.discriminators import MultiPeriodDiscriminator, MultiResolutionSpecDiscriminator
from llasa.codec.features import semantic_features
from llasa.codec.losses import (
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from llasa.codec.mel_encoder import build_codec_model, is_mel_config
from llasa.config import load_config_file
from llasa.data.manifest import AUDIO_SUFFIXES, read_jsonl
from llasa.train.precision import resolve_precision

LOG_FILE = "log.jsonl"
STATE_FILE = "training_state.pt"
FINAL_DIR = "codec"

# Official values where the recipe has them (spec/LLASA.md §4.7); `output_dir` and `data.train`
# have no sensible default.
DEFAULTS: dict[str, Any] = {
    "output_dir": None,
    "model": "small",  # a llasa.codec preset name or a dict of Xcodec2Config fields
    # a codec directory (either layout) to fine-tune instead of random weights; its config.json
    # then decides the architecture and `model` is not used
    "init_from": None,
    "data": {
        "train": None,  # a JSONL manifest (`audio` per line) or a folder of audio files, or a list of them
        "eval": None,  # the same; if absent the last `eval_clips` training files are held out
        "eval_clips": 8,
        "eval_seconds": 2.0,
        "crop_seconds": 6.0,
        "batch_size": 8,
        # whole transcribed utterances per step for the phonetic and intelligibility terms (read
        # from the same sources, which must then be manifests with `text`), at most this long
        "phonetic_batch": 8,
        "phonetic_max_seconds": 10.0,
    },
    "loss": {
        "mel": 15.0,
        "adversarial": 1.0,
        "feature_matching": 1.0,
        "semantic": 5.0,
        # weight of the phonetic term (0: off): a small frame-wise head must read the transcript's
        # phonemes (CTC) off the quantized latents, so the codes keep what tells words apart; the
        # teacher-free stand-in for the semantic term, for the mel encoder (PhoneticHead says why)
        "phonetic": 0.0,
        "phonetic_frontend": "espeak:en-us",  # llasa.lm.frontend spec that turns text into phonemes
        # the head's learning rate as a multiple of optim.lr: at the codec's own rate it was still on
        # CTC's all-blank plateau after 2,000 steps, while its blank-pushing gradient shrank the codes used
        "phonetic_head_lr": 10.0,
        # weight of the intelligibility term (0: off): a frozen phone recogniser trained on real
        # audio (`llasa train phones`; its output directory is `recognizer`) must read the
        # transcript's phonemes (CTC) off the resynthesis of whole utterances; works with
        # train.decoder_only, so the codes stay those an LM was trained on (llasa/train/phones.py)
        "intelligibility": 0.0,
        "recognizer": None,
        "gan_start_step": 0,
        # the discriminators see a random segment of this length from each crop (None: the whole
        # crop); on a CPU they cost many times the generator, and their cost is linear in length
        "discriminator_seconds": None,
        "mel_n_mels": [5, 10, 20, 40, 80, 160, 320],
        "mel_window_lengths": [32, 64, 128, 256, 512, 1024, 2048],
    },
    "discriminators": {
        "mpd": {"periods": [2, 3, 5, 7, 11], "channels": 16, "max_channels": 512},
        "spec": {
            "fft_sizes": [78, 126, 206, 334, 542, 876, 1418, 2296],
            "hop_sizes": [39, 63, 103, 167, 271, 438, 709, 1148],
            "channels": 32,
            "max_channels": 512,
        },
    },
    "optim": {
        "lr": 1e-4,
        "warmup_start_lr": 1e-5,
        "final_lr": 2e-5,
        "warmup_steps": 3000,
        "decay_steps": 400_000,
        "betas": [0.8, 0.9],
        "weight_decay": 0.01,
        "grad_clip": 1.0,
    },
    "train": {
        "max_steps": 100_000,
        "seed": 0,
        "device": "auto",
        # autocast for the generator (FSQ, STFTs and losses stay fp32): true, false, or "auto" (bf16
        # where the hardware computes it, llasa/train/precision.py)
        "bf16": "auto",
        "bf16_discriminators": False,  # narrow 2-D convs ran slower in bf16 on CPU
        # train only `acoustic_decoder` of an `init_from` codec (encoder, quantizer frozen, in eval
        # mode): a GAN stage after an LM was trained on the codec's codes leaves those codes intact
        "decoder_only": False,
        "threads": None,
        "log_every": 10,
        "eval_every": 500,
        "save_every": 500,
        "keep_checkpoints": 2,
    },
}


# config ---------------------------------------------------------------------------------------


def _merge(defaults: dict, given: dict, where: str, what: str = "codec training") -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {what} option(s) {', '.join(where + k for k in unknown)}; "
                         f"known: {', '.join(where + k for k in defaults)}")
    merged = copy.deepcopy(defaults)
    for key, value in given.items():
        if isinstance(defaults[key], dict) and key != "model":
            if not isinstance(value, dict):
                raise ValueError(f"{what} option {where}{key} must be a mapping, got {value!r}")
            merged[key] = _merge(defaults[key], value, f"{where}{key}.", what)
        else:
            merged[key] = value
    return merged


def load_config(source: str | Path | dict) -> dict[str, Any]:
    """A YAML/JSON recipe (or a dict) merged over DEFAULTS; unknown or missing options raise."""
    config = _merge(DEFAULTS, load_config_file(source), "")
    for key in ("output_dir",):
        if not config[key]:
            raise ValueError(f"codec training config needs `{key}`")
    if not config["data"]["train"]:
        raise ValueError("codec training config needs `data.train` (a JSONL manifest or a folder of audio)")
    hop = get_config(config["model"]).hop_length
    for key in ("crop_seconds", "eval_seconds"):
        samples = config["data"][key] * SAMPLE_RATE
        if samples != int(samples) or int(samples) % hop:
            raise ValueError(f"data.{key}={config['data'][key]} must be a whole number of {hop}-sample codec frames")
    return config


# data -----------------------------------------------------------------------------------------


def list_clips(source: str | Path | list[str | Path]) -> list[tuple[str, str | None]]:
    """(audio file, transcript or None) of a JSONL manifest (`audio` per line, relative paths from
    its folder; the transcript is `normalized`, else `text`) or a folder of audio (no transcripts);
    a list of them gives all their clips, in order."""
    if isinstance(source, (list, tuple)):
        return [clip for one in source for clip in list_clips(one)]
    path = Path(source)
    if path.is_dir():
        clips = [(p, None) for p in sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)]
    elif path.is_file():
        items = read_jsonl(path)
        missing = [n for n, item in enumerate(items, 1) if not item.get("audio")]
        if missing:
            raise ValueError(f"{path}: line(s) {missing[:10]} have no `audio` field")
        clips = [(item["audio"], item.get("normalized") or item.get("text")) for item in items]
    else:
        raise FileNotFoundError(f"training audio not found: {path} (expected a JSONL manifest or a folder)")
    if not clips:
        raise ValueError(f"{path}: no audio files")
    return clips


def list_audio(source: str | Path | list[str | Path]) -> list[str]:
    """The audio files of `list_clips(source)`."""
    return [audio for audio, _ in list_clips(source)]


def require_transcripts(clips: list[tuple[str, str | None]], who: str, kind: str, source: str) -> None:
    """Raise, naming `who` and `source`, if any of `list_clips`' clips has no transcript."""
    untranscribed = [audio for audio, text in clips if not text]
    if untranscribed:
        raise ValueError(
            f"{who} needs a transcript for every {kind} clip; {len(untranscribed)} have none "
            f"(e.g. {untranscribed[0]}): {source} must be JSONL manifests with `text`"
        )


def save_checkpoint(output_dir: Path, step: int, model, state: dict, keep: int) -> Path:
    """Write `output_dir/checkpoints/step_N` (the model's `save_pretrained` + the training state)
    atomically, through a temporary folder renamed when complete; keep the newest `keep`."""
    final = output_dir / "checkpoints" / f"step_{step:08d}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    torch.save(state, partial / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in _checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old)
    return final


class CropSampler:
    """Random fixed-length crops; the batch of a step depends only on (seed, step).

    Short files are zero-padded at the end, as the official data module does. Files at 16 kHz
    are read crop by crop; others are decoded whole and resampled.
    """

    def __init__(self, files: list[str], crop_samples: int, seed: int):
        self.files, self.crop, self.seed = files, crop_samples, seed
        self.infos = [sf.info(f) for f in tqdm(files, desc="index audio", unit="file", leave=False)]

    def samples(self, index: int) -> int:
        """Length of file `index` at 16 kHz."""
        info = self.infos[index]
        return int(info.frames * SAMPLE_RATE / info.samplerate)

    def read(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        """A crop of file `index`: random if `rng` is given, else its beginning."""
        info = self.infos[index]
        length = self.samples(index)
        offset = int(rng.integers(0, max(1, length - self.crop + 1))) if rng is not None else 0
        if info.samplerate == SAMPLE_RATE:
            wav, _ = sf.read(self.files[index], start=offset, frames=self.crop, dtype="float32", always_2d=True)
            wav = wav.mean(axis=1)
        else:
            wav = load_audio(self.files[index])[offset : offset + self.crop]
        return np.pad(wav, (0, self.crop - len(wav)))

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, step])
        indices = rng.integers(0, len(self.files), size=batch_size)
        return torch.from_numpy(np.stack([self.read(int(i), rng) for i in indices]))[:, None]


class PhoneticTargets:
    """Transcripts as phoneme-symbol ids for the CTC term (0 is CTC's blank).

    The symbols are the characters of the front-end's IPA without spaces, punctuation and
    stress marks (espeak writes one character per phone, plus length marks and diphthong
    halves); the inventory is what the training transcripts use, in sorted order, so that a
    resumed run rebuilds it exactly (or `symbols`, e.g. a trained recogniser's). Symbols outside
    it (in held-out text) are dropped.
    """

    @staticmethod
    def phonetic(symbol: str) -> bool:
        return not (symbol.isspace() or symbol in "ˈˌ" or unicodedata.category(symbol).startswith("P"))

    def __init__(self, texts: list[str], frontend: str, symbols: list[str] | None = None):
        from llasa.lm.frontend import Frontend

        self.frontend = Frontend(frontend)
        unique = sorted(set(texts))
        self._phones = {t: self.frontend(t) for t in tqdm(unique, desc="phonemize", unit="text", leave=False)}
        if symbols is None:
            symbols = sorted({c for phones in self._phones.values() for c in phones if self.phonetic(c)})
        self.symbols = list(symbols)
        self._ids = {c: i for i, c in enumerate(self.symbols, 1)}

    def __call__(self, text: str) -> list[int]:
        if text not in self._phones:
            self._phones[text] = self.frontend(text)
        return [self._ids[c] for c in self._phones[text] if c in self._ids]


class UtteranceSampler:
    """Whole transcribed utterances with their phoneme ids; the batch of a step depends only on
    (seed, step). Utterances longer than `max_samples`, or with more phonemes than codec frames
    (CTC could not align them), are never drawn."""

    def __init__(self, clips: list[tuple[str, str, int]], targets: PhoneticTargets, *, hop: int, max_samples: int, seed: int):
        """``clips``: (audio file, transcript, length in 16 kHz samples), e.g. from a `CropSampler`'s index."""
        self.hop, self.seed = hop, seed
        self.items = []
        for audio, text, samples in clips:
            ids = targets(text)
            if 0 < len(ids) <= samples // hop and samples <= max_samples:
                self.items.append((audio, ids))
        if not self.items:
            raise ValueError(
                f"no transcribed utterance of at most {max_samples / SAMPLE_RATE:g} s with fewer phonemes than "
                "codec frames: raise data.phonetic_max_seconds or check the transcripts"
            )

    def read(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (waves (B, 1, N) zero-padded to whole frames, frames (B,), ids (sum of lengths,), lengths (B,))."""
        waves = [load_audio(self.items[i][0]) for i in indices]
        frames = [len(w) // self.hop for w in waves]
        padded = np.zeros((len(waves), max(frames) * self.hop), dtype=np.float32)
        for row, (wave, count) in enumerate(zip(waves, frames)):
            padded[row, : count * self.hop] = wave[: count * self.hop]
        ids = [self.items[i][1] for i in indices]
        return (
            torch.from_numpy(padded)[:, None],
            torch.tensor(frames),
            torch.tensor([i for row in ids for i in row]),
            torch.tensor([len(row) for row in ids]),
        )

    def batch(self, step: int, batch_size: int):
        rng = np.random.default_rng([self.seed, step, 1])
        return self.read(rng.integers(0, len(self.items), size=batch_size).tolist())


# model parts ----------------------------------------------------------------------------------


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


class PhoneticHead(nn.Module):
    """Training-only: quantized latents -> per-frame phoneme log-probabilities (+ CTC blank).

    Frame by frame, with one small hidden layer and no context, so that what it reads must be in
    each frame's code: the codes of a reconstruction-only encoder spend their 1,000 values on
    whatever lowers the mel loss (pitch, loudness), and the words suffer first. FACodec
    (NaturalSpeech 3) supervises its content codes with phones in the same spirit; X-codec2 uses
    a w2v-BERT teacher, which a CPU-sized mel codec does not have. Not part of the saved codec.
    On the built-in codec's data, 2,000 stage-1 steps with it gave no measurable WER gain (README).
    """

    def __init__(self, quantization_dim: int, symbols: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(quantization_dim, hidden), nn.GELU(), nn.Linear(hidden, symbols + 1))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, quantization_dim, T) -> (B, T, symbols + 1) log-probabilities, fp32."""
        return self.net(latents.transpose(1, 2)).float().log_softmax(-1)


def ctc_loss(log_probs: torch.Tensor, frames: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over utterances of the CTC loss per target phoneme."""
    return nn.functional.ctc_loss(log_probs.transpose(0, 1), ids, frames, lengths, blank=0, zero_infinity=True)


def greedy_phone_errors(log_probs: torch.Tensor, frames: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> float:
    """Phone error rate of best-path CTC decoding (collapse repeats, drop blanks), pooled."""
    import jiwer

    best = log_probs.argmax(-1)
    hyps, refs = [], []
    for row, (count, target) in enumerate(zip(frames.tolist(), ids.split(lengths.tolist()))):
        path = torch.unique_consecutive(best[row, :count]).tolist()
        hyps.append(" ".join(str(i) for i in path if i != 0))
        refs.append(" ".join(str(i) for i in target.tolist()))
    return float(jiwer.wer(refs, hyps))


def lr_factor(step: int, optim: dict) -> float:
    """Fraction of `lr` at `step`: quadratic warmup from warmup_start_lr, linear decay to final_lr."""
    peak, start, final = optim["lr"], optim["warmup_start_lr"], optim["final_lr"]
    warmup, decay = optim["warmup_steps"], optim["decay_steps"]
    if step < warmup:
        return (start + (peak - start) * (step / warmup) ** 2) / peak
    progress = min(1.0, (step - warmup) / decay) if decay > 0 else 1.0
    return (peak - (peak - final) * progress) / peak


def _build_generator(config: dict):
    if config["init_from"]:
        directory = loading.resolve(config["init_from"])
        model_config, state = loading.read_checkpoint(directory)
        model = build_codec_model(model_config)
        loading.load_strict(model, state, source=f"'{directory}'")
        return model
    return build_codec_model(get_config(copy.deepcopy(config["model"])))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# checkpoints ----------------------------------------------------------------------------------


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in (output_dir / "checkpoints").glob("step_*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not log_path.exists():
        return
    kept = [line for line in log_path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    log_path.write_text("".join(line + "\n" for line in kept))


# the loop -------------------------------------------------------------------------------------


class CodecTrainer:
    """One training run: models, optimisers, data and the step function, for `train_codec`."""

    def __init__(self, config: dict):
        self.config = config
        train, loss, optim = config["train"], config["loss"], config["optim"]
        if train["threads"]:
            torch.set_num_threads(int(train["threads"]))
        self.device = _device(train["device"])
        for name in ("bf16", "bf16_discriminators"):
            if train[name] not in (True, False, "auto"):
                raise ValueError(f"train.{name} must be true, false or auto, got {train[name]!r}")
        self.bf16, self.bf16_discriminators = (
            resolve_precision(train[name], self.device, where=f"train.{name}") == "bf16"
            for name in ("bf16", "bf16_discriminators")
        )
        for name in ("phonetic", "intelligibility"):
            if loss[name] < 0:
                raise ValueError(f"loss.{name} must be at least 0, got {loss[name]}")
        if loss["intelligibility"] > 0 and not loss["recognizer"]:
            raise ValueError("loss.intelligibility needs loss.recognizer: the output directory of `llasa train phones`")
        if loss["phonetic"] > 0 and train["decoder_only"]:
            raise ValueError("loss.phonetic trains the encoder's codes; train.decoder_only freezes them (set one of them off)")
        torch.manual_seed(train["seed"])
        self.generator = _build_generator(config).to(self.device)
        self.mel_model = is_mel_config(self.generator.config)
        if train["decoder_only"]:
            if not config["init_from"]:
                raise ValueError("train.decoder_only fine-tunes the decoder of a trained codec: set init_from")
            self.generator.requires_grad_(False)
            self.generator.acoustic_decoder.requires_grad_(True)
        self.semantic_head = None
        if not self.mel_model:
            self.generator.semantic_encoder.requires_grad_(False)
            if loss["semantic"] > 0 and not train["decoder_only"]:
                self.semantic_head = SemanticHead(self.generator.config).to(self.device)
        elif loss["semantic"] > 0:
            raise ValueError(
                "loss.semantic > 0 needs a semantic teacher, which only the waveform X-codec2 has "
                "(its w2v-BERT); set loss.semantic: 0 for encoder_type: mel"
            )
        self.phonetic_head = self.recognizer = None  # built with the data below
        self._train_mode()
        disc = config["discriminators"]
        self.discriminators = nn.ModuleDict(
            {"mpd": MultiPeriodDiscriminator(**disc["mpd"]), "spec": MultiResolutionSpecDiscriminator(**disc["spec"])}
        ).to(self.device)
        self.mel_loss = MultiScaleMelLoss(
            self.generator.config.sampling_rate, loss["mel_n_mels"], loss["mel_window_lengths"]
        ).to(self.device)

        data = config["data"]
        clips = list_clips(data["train"])
        if data["eval"]:
            eval_clips = list_clips(data["eval"])
        else:
            if len(clips) <= data["eval_clips"]:
                raise ValueError(f"{data['train']}: {len(clips)} files; need more than eval_clips={data['eval_clips']}")
            clips, eval_clips = clips[: -data["eval_clips"]], clips[-data["eval_clips"] :]
        eval_clips = eval_clips[: data["eval_clips"]]
        self.sampler = CropSampler([a for a, _ in clips], int(data["crop_seconds"] * SAMPLE_RATE), train["seed"])
        self.held_out = CropSampler([a for a, _ in eval_clips], int(data["eval_seconds"] * SAMPLE_RATE), train["seed"])
        self.eval_batch = torch.from_numpy(np.stack([self.held_out.read(i, None) for i in range(len(eval_clips))]))[:, None]
        if loss["phonetic"] > 0:
            self._phonetic_data(clips, eval_clips)
        if loss["intelligibility"] > 0:
            self._intelligibility_data(clips, eval_clips)
        if not config["init_from"]:
            self._unit_variance_quantizer_input()

        generator_params = [p for p in self.generator.parameters() if p.requires_grad]
        if self.semantic_head is not None:
            generator_params += list(self.semantic_head.parameters())
        groups = [{"params": generator_params}]
        if self.phonetic_head is not None:
            head = list(self.phonetic_head.parameters())
            groups.append({"params": head, "lr": optim["lr"] * loss["phonetic_head_lr"]})
            generator_params = generator_params + head
        self.generator_params = generator_params
        adamw = dict(lr=optim["lr"], betas=tuple(optim["betas"]), weight_decay=optim["weight_decay"])
        self.opt_g = torch.optim.AdamW(groups, **adamw)
        self.opt_d = torch.optim.AdamW(self.discriminators.parameters(), **adamw)
        schedule = lambda step: lr_factor(step, optim)  # noqa: E731
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, schedule)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, schedule)
        self.step = 0

    def _utterance_samplers(self, clips, eval_clips, targets: "PhoneticTargets", term: str):
        """(training, held-out or None) `UtteranceSampler`s of the transcribed clips for loss.`term`."""
        require_transcripts(clips, f"loss.{term}", "training", "data.train")
        data = self.config["data"]
        sampler = functools.partial(
            UtteranceSampler, targets=targets, hop=self.generator.config.hop_length,
            max_samples=int(data["phonetic_max_seconds"] * SAMPLE_RATE), seed=self.config["train"]["seed"],
        )
        # their lengths come from the crop samplers' index (the same files, in the same order)
        training = sampler([(a, t, self.sampler.samples(i)) for i, (a, t) in enumerate(clips)])
        held_out = [(a, t, self.held_out.samples(i)) for i, (a, t) in enumerate(eval_clips) if t]
        return training, (sampler(held_out) if held_out else None)

    def _phonetic_data(self, clips: list[tuple[str, str | None]], eval_clips: list[tuple[str, str | None]]) -> None:
        """Phoneme inventory, the utterance samplers and the head."""
        self.phonetic_targets = PhoneticTargets([text for _, text in clips if text], self.config["loss"]["phonetic_frontend"])
        self.utterances, self.eval_utterances = self._utterance_samplers(clips, eval_clips, self.phonetic_targets, "phonetic")
        self.phonetic_head = PhoneticHead(self.generator.config.quantization_dim, len(self.phonetic_targets.symbols))
        self.phonetic_head.to(self.device)

    def _intelligibility_data(self, clips: list[tuple[str, str | None]], eval_clips: list[tuple[str, str | None]]) -> None:
        """The frozen recogniser and utterance samplers with its phoneme inventory."""
        from llasa.train.phones import FRAME_HOP, PhoneRecognizer

        if self.generator.config.hop_length != FRAME_HOP:
            raise ValueError(f"loss.intelligibility: the recogniser reads {FRAME_HOP}-sample frames, "
                             f"this codec's hop is {self.generator.config.hop_length}")  # fmt: skip
        self.recognizer = PhoneRecognizer.from_pretrained(self.config["loss"]["recognizer"]).to(self.device)
        self.recognizer.eval().requires_grad_(False)  # a fixed listener: only the codec learns
        self.heard, self.eval_heard = self._utterance_samplers(clips, eval_clips, self.recognizer.targets(), "intelligibility")

    # state ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "discriminators": self.discriminators.state_dict(),
            "semantic_head": self.semantic_head.state_dict() if self.semantic_head is not None else None,
            "phonetic_head": self.phonetic_head.state_dict() if self.phonetic_head is not None else None,
            "phonetic_symbols": self.phonetic_targets.symbols if self.phonetic_head is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "config": self.config,
        }

    def save(self, output_dir: Path) -> Path:
        """Write checkpoints/step_N atomically (a temporary folder renamed when complete)."""
        return save_checkpoint(output_dir, self.step, self.generator, self.state_dict(), self.config["train"]["keep_checkpoints"])

    def load(self, checkpoint: Path) -> None:
        state = torch.load(checkpoint / STATE_FILE, map_location=self.device, weights_only=True)
        if state["config"]["model"] != self.config["model"] or state["config"]["discriminators"] != self.config["discriminators"]:
            raise ValueError(
                f"{checkpoint} was trained with another model or discriminator config; "
                "use a new output_dir or resume=False (--no-resume)"
            )
        weights = load_file(checkpoint / "model.safetensors", device=str(self.device))
        loading.load_strict(self.generator, weights, source=f"'{checkpoint}'")
        self.discriminators.load_state_dict(state["discriminators"])
        if self.semantic_head is not None:
            self.semantic_head.load_state_dict(state["semantic_head"])
        if self.phonetic_head is not None:
            if state.get("phonetic_symbols") != self.phonetic_targets.symbols:
                raise ValueError(f"{checkpoint}: its phoneme inventory differs from this data's (other transcripts or front-end)")
            self.phonetic_head.load_state_dict(state["phonetic_head"])
        for name in ("opt_g", "opt_d", "sched_g", "sched_d"):
            getattr(self, name).load_state_dict(state[name])
        torch.set_rng_state(state["rng"].cpu())
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = state["step"]

    # one step ---------------------------------------------------------------------------

    def _train_mode(self) -> None:
        self.generator.train()
        if self.config["train"]["decoder_only"]:
            for name, module in self.generator.named_children():
                if name != "acoustic_decoder":
                    module.eval()  # no dropout: the codes are exactly those of the frozen encoder
        for head in (self.semantic_head, self.phonetic_head):
            if head is not None:
                head.train()

    def _autocast(self, enabled: bool):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _encode(self, wav: torch.Tensor):
        """(B, 1, N) -> (Xcodec2EncoderOutput with latents, w2v-BERT input features or None)."""
        if self.mel_model:
            return self.generator.encode(wav, output_latents=True), None
        features = torch.stack([semantic_features(w[0].numpy()) for w in wav.cpu()]).to(self.device)
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
            self._encode(self.eval_batch.to(self.device))
        finally:
            handle.remove()
        projection.weight.div_(captured["z"].float().std().clamp(min=1e-8))

    def reconstruct(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, 1, N) -> (reconstruction, codes, semantic loss or None)."""
        with self._autocast(self.bf16):
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config["train"]["decoder_only"]):
                encoded, features = self._encode(wav)
            recon = self.generator.decode(latents=encoded.latents).audio_values[..., : wav.shape[-1]]
            semantic = None
            if self.semantic_head is not None and self.semantic_head.training:
                with torch.no_grad():
                    target = self.generator.semantic_encoder(features).last_hidden_state.transpose(1, 2)
                predicted = self.semantic_head(encoded.latents)
                semantic = nn.functional.mse_loss(predicted.float(), target.float())
        return recon.float(), encoded.audio_codes, semantic

    def phonetic(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(CTC loss, log-probabilities) of an `UtteranceSampler` batch: the encoder reads whole
        utterances (as at inference), the head reads their quantized latents."""
        wav, frames, ids, lengths = batch
        with self._autocast(self.bf16):
            latents = self._encode(wav.to(self.device))[0].latents
        log_probs = self.phonetic_head(latents)
        return ctc_loss(log_probs, *(t.to(self.device) for t in (frames, ids, lengths))), log_probs

    def intelligibility(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(CTC loss, log-probabilities) of the frozen recogniser on the resynthesis of an
        `UtteranceSampler` batch of whole utterances."""
        wav, frames, ids, lengths = batch
        recon = self.reconstruct(wav.to(self.device))[0]
        log_probs = self.recognizer(recon)
        return ctc_loss(log_probs, *(t.to(self.device) for t in (frames, ids, lengths))), log_probs

    def _discriminate(self, wav: torch.Tensor):
        with self._autocast(self.bf16_discriminators):
            return {name: d(wav) for name, d in self.discriminators.items()}

    def _segments(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same random window of each real and generated crop, for the discriminators."""
        seconds = self.config["loss"]["discriminator_seconds"]
        length = real.shape[-1] if seconds is None else min(real.shape[-1], int(seconds * SAMPLE_RATE))
        if length == real.shape[-1]:
            return real, fake
        starts = torch.randint(0, real.shape[-1] - length + 1, (real.shape[0], 1, 1))
        index = (starts + torch.arange(length)).to(real.device)
        return real.gather(-1, index), fake.gather(-1, index)

    def train_step(self, wav: torch.Tensor) -> dict[str, float]:
        loss_cfg, clip = self.config["loss"], self.config["optim"]["grad_clip"]
        gan = self.step >= loss_cfg["gan_start_step"]
        recon, _, semantic = self.reconstruct(wav)
        stats: dict[str, float] = {}

        if gan:
            real_segment, fake_segment = self._segments(wav, recon)
            self.discriminators.requires_grad_(True)
            real, fake = self._discriminate(real_segment), self._discriminate(fake_segment.detach())
            d_loss = sum(discriminator_loss(real[n][0], fake[n][0]) for n in real)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            stats["d_grad_norm"] = float(nn.utils.clip_grad_norm_(self.discriminators.parameters(), clip))
            self.opt_d.step()
            self.sched_d.step()
            stats["d_loss"] = d_loss.item()

        mel = self.mel_loss(recon, wav)
        total = loss_cfg["mel"] * mel
        stats["mel"] = mel.item()
        if gan:
            self.discriminators.requires_grad_(False)  # no discriminator gradients from the G step
            fake = self._discriminate(fake_segment)
            with torch.no_grad():
                real = self._discriminate(real_segment)
            adversarial = sum(generator_adversarial_loss(fake[n][0]) for n in fake)
            total = total + loss_cfg["adversarial"] * adversarial
            stats["adversarial"] = adversarial.item()
            for name in fake:
                matching = feature_matching_loss(real[name][1], fake[name][1])
                total = total + loss_cfg["feature_matching"] * matching
                stats[f"fm_{name}"] = matching.item()
        if semantic is not None:
            total = total + loss_cfg["semantic"] * semantic
            stats["semantic"] = semantic.item()
        if self.phonetic_head is not None:
            phonetic, _ = self.phonetic(self.utterances.batch(self.step, self.config["data"]["phonetic_batch"]))
            total = total + loss_cfg["phonetic"] * phonetic
            stats["phonetic"] = phonetic.item()
        if self.recognizer is not None:
            heard, _ = self.intelligibility(self.heard.batch(self.step, self.config["data"]["phonetic_batch"]))
            total = total + loss_cfg["intelligibility"] * heard
            stats["intelligibility"] = heard.item()
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        stats["g_grad_norm"] = float(nn.utils.clip_grad_norm_(self.generator_params, clip))
        self.opt_g.step()
        self.sched_g.step()
        stats["g_loss"] = total.item()
        stats["lr"] = self.sched_g.get_last_lr()[0]
        self.step += 1
        return stats

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Multi-scale mel L1 of the held-out clips' resynthesis, and the share of codes used; with
        the phonetic term, its CTC loss and best-path phone error rate on the held-out utterances;
        with the intelligibility term, the recogniser's on their resynthesis."""
        self.generator.eval()
        for head in (self.semantic_head, self.phonetic_head):
            if head is not None:
                head.eval()
        try:
            wav = self.eval_batch.to(self.device)
            recon, codes, _ = self.reconstruct(wav)
            record = {
                "eval_mel": float(self.mel_loss(recon, wav)),
                "codes_used": len(torch.unique(codes)) / codebook_size(self.generator.config),
            }
            if self.phonetic_head is not None and self.eval_utterances is not None:
                batch = self.eval_utterances.read(range(len(self.eval_utterances.items)))
                loss, log_probs = self.phonetic(batch)
                record.update(eval_phonetic=float(loss), eval_per=greedy_phone_errors(log_probs, *batch[1:]))
            if self.recognizer is not None and self.eval_heard is not None:
                batch = self.eval_heard.read(range(len(self.eval_heard.items)))
                loss, log_probs = self.intelligibility(batch)
                record.update(eval_intelligibility=float(loss), eval_heard_per=greedy_phone_errors(log_probs, *batch[1:]))
            return record
        finally:
            self._train_mode()


def train_codec(config: dict | str | Path, *, resume: bool = True, max_steps: int | None = None) -> Path:
    """Train (or resume training) a codec; returns the directory of the final codec.

    The output directory gets `checkpoints/step_N/` (codec + training state), `log.jsonl` and,
    when matplotlib is installed, `curve.png`. With `resume=False` existing checkpoints there
    are deleted first. `max_steps` overrides `train.max_steps` (stop early, resume later).
    """
    config = load_config(config)
    train = config["train"]
    output_dir = Path(config["output_dir"])
    log_path = output_dir / LOG_FILE
    last_step = int(max_steps if max_steps is not None else train["max_steps"])

    trainer = CodecTrainer(config)
    kinds = ("bf16" if on else "fp32" for on in (trainer.bf16, trainer.bf16_discriminators))
    tqdm.write("precision: generator {}, discriminators {}".format(*kinds))
    checkpoints = _checkpoints(output_dir)
    if checkpoints and resume:
        trainer.load(checkpoints[-1])
        tqdm.write(f"resuming from {checkpoints[-1]} (step {trainer.step})")
    else:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
        log_path.unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    _truncate_log(log_path, trainer.step)
    (output_dir / "train_config.json").write_text(json.dumps(config, indent=2))

    batch_size = config["data"]["batch_size"]
    window: dict[str, list[float]] = {}
    window_start = time.perf_counter()
    with open(log_path, "a") as log, tqdm(
        total=last_step, initial=trainer.step, desc="train codec", unit="step"
    ) as progress:

        def write(record: dict) -> None:
            log.write(json.dumps(record) + "\n")
            log.flush()

        while trainer.step < last_step:
            wav = trainer.sampler.batch(trainer.step, batch_size).to(trainer.device)
            for key, value in trainer.train_step(wav).items():
                window.setdefault(key, []).append(value)
            progress.update(1)
            step = trainer.step
            if step % train["log_every"] == 0 or step == last_step:
                elapsed = time.perf_counter() - window_start
                record = {"step": step, **{k: float(np.mean(v)) for k, v in window.items()}}
                record["steps_per_s"] = len(window["mel"]) / elapsed
                write(record)
                progress.set_postfix(mel=f"{record['mel']:.3f}", steps_s=f"{record['steps_per_s']:.2f}")
                window, window_start = {}, time.perf_counter()
            if step % train["eval_every"] == 0 or step == last_step:
                record = {"step": step, **trainer.evaluate()}
                write(record)
                tqdm.write(json.dumps(record))
            if step % train["save_every"] == 0 or step == last_step:
                trainer.save(output_dir)
                window_start = time.perf_counter()  # saving is not training time

    final = output_dir / FINAL_DIR
    shutil.rmtree(final, ignore_errors=True)
    trainer.generator.save_pretrained(str(final))
    try:
        plot_log(log_path, output_dir / "curve.png")
    except ImportError:
        tqdm.write("matplotlib is not installed: no curve.png (pip install matplotlib, then llasa.train.codec.plot_log)")
    return final


def plot_log(log_path: str | Path, png_path: str | Path) -> Path:
    """Training curve (train mel, eval mel, GAN terms) from a log.jsonl; needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, axis in (("mel", left), ("eval_mel", left), ("adversarial", right), ("d_loss", right),
                      ("fm_mpd", right), ("fm_spec", right)):
        points = [(r["step"], r[key]) for r in records if key in r and math.isfinite(r[key])]
        if points:
            axis.plot(*zip(*points), label=key)
    left.set(xlabel="step", ylabel="multi-scale log-mel L1", title="reconstruction")
    right.set(xlabel="step", title="GAN terms")
    for axis in (left, right):
        if axis.lines:
            axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
