"""A small phone recogniser, trained on real audio, frozen, and used as a codec training loss.

Why: the built-in codec's decoder had stopped gaining intelligibility under the mel and GAN
losses (its PocketSphinx WER stalled at 14 points over the original audio from step 8,250 to
12,000 while its similarity and PESQ still rose): those losses weigh every spectral detail
alike, and nothing in them says which details tell words apart. A recogniser that has only
heard real speech does: training the decoder so that the recogniser reads the transcript's
phonemes off its output (CTC, `loss.intelligibility` in `llasa.train.codec`) pushes the
decoder towards the cues a listener uses, and it changes only the decoder, so the codes (and an
LM trained on them) stay valid. This is the perceptual counterpart of the phonetic term on the
codes (`PhoneticHead`). No pretrained phone recogniser can be loaded offline here (the CPU
verifiers are PocketSphinx, which is not differentiable, and Resemblyzer), hence this one.

The model: log-mel frames at 100 Hz (25 ms windows), a strided conv to 50 Hz (the codec's frame
rate, so `UtteranceSampler` batches serve both), six residual dilated conv blocks (about one
second of context) and a linear layer to phoneme symbols plus CTC's blank. No recurrence, so it
backpropagates in eval mode on any device (cuDNN's RNNs do not). About 2.5 M parameters with the
defaults; `configs/phones_small.yaml` (192 wide) has 1.4 M.

    llasa train phones configs/phones_small.yaml     # resumes where it stopped
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from llasa.audio import SAMPLE_RATE
from llasa.codec.mel_encoder import LogMelSpectrogram
from llasa.config import load_config_file
from llasa.train.codec import (
    STATE_FILE,
    CropSampler,
    PhoneticTargets,
    UtteranceSampler,
    _checkpoints,
    _device,
    _merge,
    _truncate_log,
    ctc_loss,
    greedy_phone_errors,
    list_clips,
    require_transcripts,
    save_checkpoint,
)

CONFIG_FILE = "recognizer.json"
WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "log.jsonl"
FINAL_DIR = "recognizer"
FRAME_HOP = 320  # samples per output frame: 50 Hz, the codec's rate

DEFAULTS: dict[str, Any] = {
    "output_dir": None,
    "frontend": "espeak:en-us",  # llasa.lm.frontend spec: text -> IPA phonemes
    # dilations cycle over the layers; the context each output frame sees is set by kernel,
    # layers and dilations (6 x kernel 5 x (1, 2, 4): about a second)
    "model": {"n_mels": 80, "width": 256, "layers": 6, "kernel": 5, "dilations": [1, 2, 4]},
    "data": {
        "train": None,  # JSONL manifest(s) with `audio` and `text`/`normalized`
        "eval": None,  # the same; if absent the last `eval_clips` training clips are held out
        "eval_clips": 64,
        "batch_size": 16,
        "max_seconds": 10.0,
        # SpecAugment on the training log-mels: masks per utterance and their largest width
        "time_masks": 2,
        "time_mask_frames": 20,
        "freq_masks": 2,
        "freq_mask_bins": 10,
    },
    "optim": {"lr": 2e-3, "final_lr": 2e-5, "warmup_steps": 300, "weight_decay": 0.01, "grad_clip": 1.0},
    "train": {
        "max_steps": 3000,
        "seed": 0,
        "device": "auto",
        "threads": None,
        "log_every": 25,
        "eval_every": 250,
        "save_every": 250,
        "keep_checkpoints": 2,
    },
}


class _Block(nn.Module):
    def __init__(self, width: int, kernel: int, dilation: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.mix = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, width, T)
        y = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return x + self.mix(nn.functional.gelu(self.conv(y)))


class PhoneRecognizer(nn.Module):
    """16 kHz waveform (B, 1, N) -> (B, N // 320, symbols + 1) log-probabilities (0: CTC blank)."""

    def __init__(
        self, symbols: list[str], frontend: str, *, n_mels: int = 80, width: int = 256, layers: int = 6, kernel: int = 5,
        dilations: list[int] | tuple[int, ...] = (1, 2, 4),
    ):  # fmt: skip
        super().__init__()
        self.config = {"symbols": list(symbols), "frontend": frontend, "n_mels": n_mels, "width": width,
                       "layers": layers, "kernel": kernel, "dilations": list(dilations)}  # fmt: skip
        self.features = LogMelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=FRAME_HOP // 2, n_mels=n_mels, same_padding=True
        )
        self.norm = nn.LayerNorm(n_mels)  # per frame: the spectrum's shape, not its level
        self.embed = nn.Conv1d(n_mels, width, 5, stride=2, padding=2)
        self.blocks = nn.Sequential(*(_Block(width, kernel, dilations[i % len(dilations)]) for i in range(layers)))
        self.out = nn.Linear(width, len(symbols) + 1)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 1, N) -> (B, N // 160, n_mels), the input `classify` reads (for augmentation)."""
        if wav.shape[-1] % FRAME_HOP:
            raise ValueError(f"the recogniser reads whole {FRAME_HOP}-sample frames; got {wav.shape[-1]} samples")
        return self.norm(self.features(wav).transpose(1, 2))

    def classify(self, mel: torch.Tensor) -> torch.Tensor:
        hidden = self.blocks(self.embed(mel.transpose(1, 2)))
        return self.out(hidden.transpose(1, 2)).float().log_softmax(-1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.classify(self.log_mel(wav))

    def targets(self) -> PhoneticTargets:
        """Transcript -> symbol ids with this recogniser's inventory."""
        return PhoneticTargets([], self.config["frontend"], symbols=self.config["symbols"])

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=2, ensure_ascii=False))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "PhoneRecognizer":
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory}: no {CONFIG_FILE}; train a recogniser with `llasa train phones CONFIG`")
        config = json.loads((directory / CONFIG_FILE).read_text())
        model = cls(config.pop("symbols"), config.pop("frontend"), **config)
        model.load_state_dict(load_file(directory / WEIGHTS_FILE))
        return model


def spec_augment(mel: torch.Tensor, frames: torch.Tensor, data: dict, rng: np.random.Generator) -> torch.Tensor:
    """Zero random time spans (within each utterance) and mel bands of (B, T, n_mels) log-mels."""
    mel = mel.clone()
    for row, count in enumerate((frames * 2).tolist()):  # `frames` counts 50 Hz frames; mels are 100 Hz
        for _ in range(data["time_masks"]):
            width = int(rng.integers(0, data["time_mask_frames"] + 1))
            start = int(rng.integers(0, max(1, count - width)))
            mel[row, start : start + width] = 0
        for _ in range(data["freq_masks"]):
            width = int(rng.integers(0, data["freq_mask_bins"] + 1))
            start = int(rng.integers(0, mel.shape[-1] - width + 1))
            mel[row, :, start : start + width] = 0
    return mel


def load_config(source: str | Path | dict) -> dict[str, Any]:
    config = _merge(DEFAULTS, load_config_file(source), "", what="phone recogniser training")
    for key in ("output_dir",):
        if not config[key]:
            raise ValueError(f"phone recogniser training config needs `{key}`")
    if not config["data"]["train"]:
        raise ValueError("phone recogniser training config needs `data.train` (JSONL manifests with `text`)")
    return config


def _lr_factor(step: int, optim: dict, total: int) -> float:
    """Linear warmup, then cosine from lr to final_lr at `total`."""
    if step < optim["warmup_steps"]:
        return (step + 1) / optim["warmup_steps"]
    progress = min(1.0, (step - optim["warmup_steps"]) / max(1, total - optim["warmup_steps"]))
    final = optim["final_lr"] / optim["lr"]
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def _utterances(clips, targets, data, seed, kind, source) -> UtteranceSampler:
    require_transcripts(clips, "the phone recogniser", kind, source)
    index = CropSampler([a for a, _ in clips], 1, seed)  # only for the lengths
    return UtteranceSampler([(a, t, index.samples(i)) for i, (a, t) in enumerate(clips)], targets,
                            hop=FRAME_HOP, max_samples=int(data["max_seconds"] * SAMPLE_RATE), seed=seed)  # fmt: skip


@torch.no_grad()
def evaluate(model: PhoneRecognizer, sampler: UtteranceSampler, device, batch_size: int = 16) -> dict[str, float]:
    """CTC loss per phoneme and best-path phone error rate over all of `sampler`'s utterances."""
    model.eval()
    losses, log_probs, batches = [], [], []
    for start in range(0, len(sampler.items), batch_size):
        batch = sampler.read(range(start, min(start + batch_size, len(sampler.items))))
        wav, frames, ids, lengths = batch
        out = model(wav.to(device)).cpu()
        losses.append(float(ctc_loss(out, frames, ids, lengths)) * len(frames))
        log_probs.append(out)
        batches.append(batch)
    # pooled PER over every batch at once: pad the per-batch outputs to one length
    width = max(lp.shape[1] for lp in log_probs)
    stacked = torch.cat([nn.functional.pad(lp, (0, 0, 0, width - lp.shape[1])) for lp in log_probs])
    frames = torch.cat([b[1] for b in batches])
    ids, lengths = torch.cat([b[2] for b in batches]), torch.cat([b[3] for b in batches])
    return {"eval_ctc": sum(losses) / len(frames), "eval_per": greedy_phone_errors(stacked, frames, ids, lengths)}


def train_recognizer(config: dict | str | Path, *, resume: bool = True, max_steps: int | None = None) -> Path:
    """Train (or resume) a phone recogniser; returns `<output_dir>/recognizer`."""
    config = load_config(config)
    data, optim, train = config["data"], config["optim"], config["train"]
    if train["threads"]:
        torch.set_num_threads(int(train["threads"]))
    device = _device(train["device"])
    output_dir = Path(config["output_dir"])
    log_path = output_dir / LOG_FILE
    last_step = int(max_steps if max_steps is not None else train["max_steps"])

    clips = list_clips(data["train"])
    if data["eval"]:
        eval_clips = list_clips(data["eval"])[: data["eval_clips"]]
    else:
        clips, eval_clips = clips[: -data["eval_clips"]], clips[-data["eval_clips"] :]
    texts = [t for _, t in clips if t]
    targets = PhoneticTargets(texts, config["frontend"])
    sampler = _utterances(clips, targets, data, train["seed"], "training", "data.train")
    held_out = _utterances(eval_clips, targets, data, train["seed"], "held-out", "data.eval" if data["eval"] else "data.train")

    torch.manual_seed(train["seed"])
    model = PhoneRecognizer(targets.symbols, config["frontend"], **config["model"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, optim, int(train["max_steps"])))  # not --max-steps: a pause
    step = 0
    found = _checkpoints(output_dir)
    if found and resume:
        state = torch.load(found[-1] / STATE_FILE, map_location=device, weights_only=True)
        if state["symbols"] != targets.symbols:
            raise ValueError(f"{found[-1]}: its phoneme inventory differs from this data's (other transcripts or front-end)")
        model.load_state_dict(load_file(found[-1] / WEIGHTS_FILE, device=str(device)))
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        tqdm.write(f"resuming from {found[-1]} (step {step})")
    else:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
        log_path.unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    _truncate_log(log_path, step)
    (output_dir / "train_config.json").write_text(json.dumps(config, indent=2))

    window, started = [], time.perf_counter()
    with open(log_path, "a") as log, tqdm(total=last_step, initial=step, desc="train phones", unit="step") as progress:
        while step < last_step:
            model.train()
            rng = np.random.default_rng([train["seed"], step, 2])
            wav, frames, ids, lengths = sampler.batch(step, data["batch_size"])
            mel = spec_augment(model.log_mel(wav.to(device)), frames, data, rng)
            loss = ctc_loss(model.classify(mel), frames.to(device), ids.to(device), lengths.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), optim["grad_clip"])
            opt.step()
            sched.step()
            step += 1
            window.append(loss.item())
            progress.update(1)
            if step % train["log_every"] == 0 or step == last_step:
                record = {"step": step, "ctc": float(np.mean(window)), "lr": sched.get_last_lr()[0],
                          "steps_per_s": len(window) / (time.perf_counter() - started)}  # fmt: skip
                log.write(json.dumps(record) + "\n")
                log.flush()
                progress.set_postfix(ctc=f"{record['ctc']:.3f}")
                window, started = [], time.perf_counter()
            if step % train["eval_every"] == 0 or step == last_step:
                record = {"step": step, **evaluate(model, held_out, device)}
                log.write(json.dumps(record) + "\n")
                log.flush()
                tqdm.write(json.dumps(record))
            if step % train["save_every"] == 0 or step == last_step:
                state = {"step": step, "opt": opt.state_dict(), "sched": sched.state_dict(), "symbols": targets.symbols}
                save_checkpoint(output_dir, step, model, state, train["keep_checkpoints"])
                started = time.perf_counter()
    final = output_dir / FINAL_DIR
    shutil.rmtree(final, ignore_errors=True)
    model.save_pretrained(final)
    return final
