"""LM training: code shards -> Llasa checkpoint, a recipe for the training core
(llasa/train/core.py: CPU, DDP, FSDP, DeepSpeed, resume, log).

The loss is the official one (SGS + speech tokens + SGE; spec/LLASA.md §3.1) averaged over the
target tokens of the whole global batch, so it does not depend on how the batch is split over
processes and micro-batches: N processes train exactly as one does on the same global batch.

    llasa train lm configs/lm_default.yaml [--set key=value] [--max-steps N] [--continue-from DIR]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llasa.config import from_dict, load_config_file
from llasa.extras import require
from llasa.lm.frontend import CONFIG_KEY
from llasa.lm.vocab import SpeechVocab
from llasa.train.args import OptimArgs, TrainArgs
from llasa.train.core import LOG_FILE, PROGRESS_FILE, Recipe, fit, make_scheduler
from llasa.train.lm_data import (
    RowOrder,
    SwappedText,
    check_data_dirs,
    collate,
    data_dirs,
    split,
    with_speech_noise,
)

# the layout of a run directory is read elsewhere: its log (llasa eval train-scaling) and the
# progress of a compact checkpoint (scripts/export_default.py)
__all__ = ["LOG_FILE", "PROGRESS_FILE", "LMTrainConfig", "LoraArgs", "build_model", "token_loss_sum", "train_lm"]


@dataclass
class LoraArgs:
    """Section `lora`: low-rank adapters (peft) instead of full fine-tuning."""

    r: int = 8
    """rank of the adapters"""
    alpha: int = 32
    """their scale is alpha / r"""
    dropout: float = 0.1
    """dropout on the adapters' input"""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """the linear layers that get adapters"""


@dataclass
class LMTrainConfig:
    """An LM training recipe (configs/lm_default.yaml, configs/lm_1b.yaml)."""

    data: str | list[str]
    """a `llasa data tokenize` output directory, or a list of them (made with the same codec,
    tokenizer and front-end: checked), read as one dataset"""
    output_dir: str
    """where checkpoints, the log and the finished model (`final/`) go"""
    init: str = "preset:tiny"
    """"preset:NAME" (random init, llasa.lm presets), a text-LLM directory or hub id (vocabulary
    extended as the official recipe does), or a Llasa checkpoint directory (fine-tuning)"""
    continue_from: str | None = None
    """a compact checkpoint (weights + progress.json, e.g. the shipped default model) whose run
    this one carries on at its step when output_dir holds no checkpoint yet; the optimiser
    moments restart (the data order carries on, and the schedule unless restart_schedule)"""
    restart_schedule: bool = False
    """with continue_from: a new cycle of the schedule (warmup, then decay) from the continued step
    to train.max_steps instead of the old one where it stood; the warmup also spares the trained
    weights the first updates of fresh optimiser moments (near lr * sign(gradient) for every weight)"""
    tokenizer: str | None = None
    """default: the tokenizer `llasa data tokenize` saved beside the first data directory"""
    eval_data: str | None = None
    """held-out shards; default: the last eval_rows rows of data (at most a tenth) are held out"""
    eval_rows: int = 64
    """rows held out of data when eval_data is not given"""
    max_length: int = 2048
    """longest training example in tokens (longer ones are cut)"""
    batch_size: int = 8
    """rows per micro-batch and process"""
    grad_accum: int = 1
    """micro-batches per optimiser step"""
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass: less memory, about a third more compute"""
    attention: str = "official"
    """"official": attention_mask = input_ids != pad, which also hides the <|eot_id|> closing the
    system and user turns (LLaSA_training's quirk); "causal": every token is visible, exactly as
    at inference, and the faster attention path runs (right padding needs no mask)"""
    length_grouped: int = 0
    """>0: draw this many global batches at a time and batch rows of similar length together"""
    lora: LoraArgs | None = None
    """train low-rank adapters (section `lora`) instead of every weight"""
    eval_text_gain: bool = True
    """also log eval_text_gain: the held-out loss with each row's text swapped for another row's,
    minus the true loss (nats per speech token). Near 0 the model ignores the text; it rises when
    text-to-speech alignment emerges"""
    speech_noise: float = 0.0
    """exposure-bias training: this fraction of the speech codes the model *reads* (never the
    targets) is replaced, so it learns to say the right next frame after a wrong one of its own"""
    speech_noise_levels: list[int] | None = None
    """the codec's FSQ levels (e.g. [8, 5, 5, 5]): a replaced code becomes an FSQ neighbour, like
    the near misses a small LM samples; without them, a uniformly random code"""
    voice_pairs: float = 0.0
    """voice-cloning layout: in this fraction of the steps each example is one utterance joined
    after another of the same speaker, as a cloned prompt is laid out (the two texts joined by a
    space, then both utterances' codes). Needs the speaker of every row (the shard index)"""
    train: TrainArgs = field(default_factory=TrainArgs)
    """section `train`: length, precision, intervals (llasa/train/args.py)"""
    optim: OptimArgs = field(default_factory=OptimArgs)
    """section `optim`: AdamW and its schedule (llasa/train/args.py)"""

    def __post_init__(self):
        for name in ("data", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"LM training config needs '{name}'")
        if not 0 <= self.speech_noise < 1:
            raise ValueError(f"speech_noise must be in [0, 1), got {self.speech_noise}")
        if not 0 <= self.voice_pairs <= 1:
            raise ValueError(f"voice_pairs must be in [0, 1], got {self.voice_pairs}")
        levels = self.speech_noise_levels
        if levels is not None and (not levels or any(int(n) < 2 for n in levels)):
            raise ValueError(f"speech_noise_levels must be FSQ levels (each >= 2), got {levels}")
        if self.attention not in ("official", "causal"):
            raise ValueError(f"attention must be 'official' or 'causal', got {self.attention!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LMTrainConfig:
        return from_dict(cls, raw, "LM training")


def token_loss_sum(model, batch: dict[str, torch.Tensor], *, official_mask: bool = True) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled positions."""
    mask = batch["attention_mask"] if official_mask else None
    logits = model(input_ids=batch["input_ids"], attention_mask=mask).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100,
        reduction="sum",
    )  # fmt: skip


def _targets(batch: dict[str, torch.Tensor]) -> int:
    """How many positions the loss counts (read off the host copy: no device sync)."""
    return int((batch["labels"][:, 1:] != -100).sum())


def resolve_tokenizer(cfg: LMTrainConfig):
    from transformers import AutoTokenizer

    path = cfg.tokenizer
    if path is None:
        first = data_dirs(cfg.data)[0]
        recorded = first / "tokenizer"
        if not recorded.is_dir():
            raise ValueError(f"no tokenizer given and none recorded in {first} (expected {recorded})")
        path = str(recorded)
    return AutoTokenizer.from_pretrained(path)


def build_model(cfg: LMTrainConfig, tokenizer, init: str | None = None):
    """The model to train from ``init`` (default ``cfg.init``), with LoRA adapters if asked."""
    from transformers import AutoModelForCausalLM

    from llasa.lm.model import build_model as build_preset
    from llasa.lm.model import resolve

    init = init or cfg.init
    vocab_size = len(tokenizer)
    if init.startswith("preset:"):
        model = build_preset(init.split(":", 1)[1], tokenizer, seed=cfg.train.seed)
    else:
        path = resolve(init)  # a local directory, or a hub id (e.g. meta-llama/Llama-3.2-1B-Instruct)
        if not (path / "config.json").is_file():
            raise ValueError(f"init '{init}' is neither 'preset:NAME' nor a model directory with config.json")
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
        rows = model.get_input_embeddings().weight.shape[0]
        if rows < vocab_size:
            # a text LLM: grow its vocabulary by the control and speech tokens (official recipe)
            model.resize_token_embeddings(vocab_size)
        elif rows > vocab_size:
            raise ValueError(f"model {init} has {rows} embedding rows but the tokenizer only {vocab_size} tokens: "
                             "the data was tokenized with a different vocabulary")  # fmt: skip
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|SPEECH_GENERATION_END|>")
    # the model reads what the rows hold: raw text or the front-end's phonemes (see llasa.lm.frontend)
    made_with = data_dirs(cfg.data)[0] / "tokenize_config.json"
    if made_with.is_file():
        setattr(model.config, CONFIG_KEY, json.loads(made_with.read_text()).get("frontend", "text"))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora is not None:
        peft = require("peft", "LoRA training")
        lora = peft.LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                               target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")  # fmt: skip
        model = peft.get_peft_model(model, lora)
    return model


class LMRecipe(Recipe):
    """The Llama decoder, its batches of shard rows and the token-mean loss."""

    name = "train lm"
    final_dir = "final"
    counters = ("tokens",)  # real (non-padding) tokens trained on: the compute axis of scaling plots
    plot_x = "tokens"
    plot_panels = {"cross-entropy (nats / speech token)": ("loss", "eval_loss"),
                   "text gain (nats / speech token)": ("eval_text_gain",)}  # fmt: skip

    def __init__(self, cfg: LMTrainConfig, accelerator, resumed: dict | None):
        self.cfg, self.accelerator = cfg, accelerator
        check_data_dirs(data_dirs(cfg.data))
        self.tokenizer = resolve_tokenizer(cfg)
        self.vocab = SpeechVocab.from_tokenizer(self.tokenizer)
        self.started, init = {"step": 0}, cfg.init
        if cfg.continue_from and resumed is None:
            compact = Path(cfg.continue_from) / PROGRESS_FILE
            if not compact.is_file():
                raise ValueError(f"continue_from '{cfg.continue_from}' has no {PROGRESS_FILE}: it was not written by llasa train lm")
            self.started, init = json.loads(compact.read_text()), cfg.continue_from
            accelerator.print(f"continuing {cfg.continue_from} at step {self.started['step']} (fresh optimiser moments)")
        progress = resumed or self.started
        # the step at which the schedule's current cycle began (kept in the checkpoints for resumes)
        restart = cfg.continue_from and cfg.restart_schedule and resumed is None
        self.origin = progress["step"] if restart else progress.get("schedule_from", 0)
        if self.origin >= cfg.train.max_steps:
            raise ValueError(f"train.max_steps {cfg.train.max_steps} leaves no steps for a new schedule from step "
                             f"{self.origin}: raise it")  # fmt: skip

        model = build_model(cfg, self.tokenizer, init)
        self.train_set, self.eval_set = split(cfg.data, cfg.eval_data, cfg.eval_rows, self.tokenizer, cfg.max_length,
                                              voice_pairs=cfg.voice_pairs, seed=cfg.train.seed)  # fmt: skip
        if progress.get("rows") not in (None, len(self.train_set)):
            # the order is a function of the row count: with more (or fewer) rows it is a new one
            accelerator.print(f"the training data changed since step {progress['step']} ({progress['rows']} rows, now "
                              f"{len(self.train_set)}): batches from here follow a new order over all of it")  # fmt: skip
        weights = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in weights if p.ndim >= 2], "weight_decay": cfg.optim.weight_decay},
             {"params": [p for p in weights if p.ndim < 2], "weight_decay": 0.0}],
            lr=cfg.optim.lr, betas=cfg.optim.betas,
        )  # fmt: skip
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        if accelerator.state.deepspeed_plugin is not None:
            # no DataLoader goes through prepare(), so DeepSpeed's "auto" batch fields are filled here
            accelerator.state.deepspeed_plugin.deepspeed_config.update(
                train_micro_batch_size_per_gpu=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
                gradient_clipping=cfg.optim.grad_clip, train_batch_size=cfg.batch_size * cfg.grad_accum * self.world,
            )  # fmt: skip
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        # prepare() wraps forward in autocast and an fp32 copy of every output: the logits are the
        # largest tensor, and their copy cost a quarter of a small model's step. The steps run
        # under accelerator.autocast() and the loss upcasts the logits it reads, so it goes
        accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        self.scheduler = make_scheduler(self.optimizer, cfg.optim, cfg.train.max_steps - self.origin,
                                        start=progress["step"] - self.origin)  # fmt: skip
        accelerator.register_for_checkpointing(self.scheduler)
        self.model.train()
        lengths = self.train_set.lengths() if cfg.length_grouped else None
        self.order = RowOrder(len(self.train_set), cfg.train.seed, lengths=lengths, group=cfg.length_grouped)
        self._held_out: dict[str, list] = {}

    def start(self) -> dict:
        return self.started

    def progress(self) -> dict:
        return {"rows": len(self.train_set), **({"schedule_from": self.origin} if self.origin else {})}

    def batch(self, step: int) -> list[dict[str, torch.Tensor]]:
        """This process's micro-batches of global batch ``step`` (in a DataLoader: off the loop)."""
        cfg, pad = self.cfg, self.tokenizer.pad_token_id
        rows = self.order.batch(step, cfg.batch_size * self.world * cfg.grad_accum)
        micro = []
        for a in range(cfg.grad_accum):
            part = a * self.world + self.rank
            batch = collate([self.train_set.example(r, step) for r in rows[part * cfg.batch_size : (part + 1) * cfg.batch_size]], pad)
            if cfg.speech_noise:
                batch = with_speech_noise(batch, self.vocab, cfg.speech_noise, cfg.speech_noise_levels, seed=cfg.train.seed,
                                          step=step, part=part)  # fmt: skip
            micro.append(batch)
        return micro

    def train_step(self, micro: list[dict[str, torch.Tensor]], step: int) -> dict:
        acc, cfg = self.accelerator, self.cfg
        device = acc.device
        total = acc.reduce(torch.tensor(sum(_targets(b) for b in micro), device=device), "sum").clamp(min=1)
        # backward() divides by grad_accum and DDP averages over processes: undo both so the
        # gradient is that of the token mean over the whole global batch
        scale = self.world * cfg.grad_accum / total
        loss_sum, tokens = 0.0, sum(int(b["attention_mask"].sum()) for b in micro)
        for batch in micro:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            # accumulate() syncs gradients (DDP/FSDP/DeepSpeed) and steps only on the last micro-batch
            with acc.accumulate(self.model), acc.autocast():
                summed = token_loss_sum(self.model, batch, official_mask=cfg.attention == "official")
                acc.backward(summed * scale)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            loss_sum = loss_sum + summed.detach()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        return {"loss": loss_sum * self.world / total, "lr": lr, "tokens": tokens}

    @torch.no_grad()
    def _held_out_loss(self, name: str, examples) -> float:
        """Token-mean loss on held-out rows, each process taking its share (batches kept)."""
        acc, cfg = self.accelerator, self.cfg
        if name not in self._held_out:
            mine = list(range(self.rank, len(examples), self.world))
            self._held_out[name] = [collate([examples[j] for j in mine[i : i + cfg.batch_size]], self.tokenizer.pad_token_id)
                                    for i in range(0, len(mine), cfg.batch_size)]  # fmt: skip
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=acc.device)
        for batch in self._held_out[name]:
            count = _targets(batch)
            with acc.autocast():
                summed = token_loss_sum(self.model, {k: v.to(acc.device) for k, v in batch.items()},
                                        official_mask=cfg.attention == "official")  # fmt: skip
            sums += torch.stack([summed.double(), torch.tensor(float(count), dtype=torch.float64, device=acc.device)])
        self.model.train()
        sums = acc.reduce(sums, "sum")
        return float(sums[0] / sums[1].clamp(min=1))

    def evaluate(self) -> dict[str, float]:
        record = {"eval_loss": self._held_out_loss("true", self.eval_set)}
        if self.cfg.eval_text_gain:
            record["eval_text_gain"] = self._held_out_loss("swapped", SwappedText(self.eval_set)) - record["eval_loss"]
        return record

    def export(self, directory: Path) -> None:
        """HF layout, loadable by `llasa tts --model`; with LoRA, the adapter for further
        fine-tuning and merged full weights so that any loader works."""
        acc = self.accelerator
        unwrapped = acc.unwrap_model(self.model)
        state_dict = acc.get_state_dict(self.model)
        if not acc.is_main_process:
            return
        if self.cfg.lora is not None:
            unwrapped.save_pretrained(directory / "adapter")
            unwrapped.merge_adapter()
            base = unwrapped.get_base_model()
            merged = {k.replace(".base_layer", ""): v.detach().clone() for k, v in base.state_dict().items() if "lora_" not in k}
            unwrapped.unmerge_adapter()
            if base.config.tie_word_embeddings:
                merged.pop("lm_head.weight", None)  # the embedding is the output layer
            base.save_pretrained(directory, state_dict=merged, safe_serialization=True)
        else:
            unwrapped.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)


def train_lm(config: LMTrainConfig | dict | str | Path, *, resume: bool = True, max_steps: int | None = None) -> Path:
    """Train (or carry on training) an LM; returns the finished model's folder (``final``), or
    the last checkpoint of a run stopped early by ``max_steps`` (the schedule still follows
    ``train.max_steps``: a long run split over several invocations)."""
    cfg = config if isinstance(config, LMTrainConfig) else LMTrainConfig.from_dict(load_config_file(config))
    return fit(LMRecipe, cfg, resume=resume, max_steps=max_steps, gradient_accumulation_steps=cfg.grad_accum)
