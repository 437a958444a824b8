"""LM training: code shards -> Llasa checkpoint, on `accelerate` (CPU, DDP, FSDP, DeepSpeed).

A nanoGPT-style loop with no trainer framework: the data order is a pure function of
(seed, step), so a run killed at any point resumes from its last checkpoint with the same
batches, and N processes see exactly the global batch that one process would. The loss is
the official one (SGS + speech tokens + SGE; spec/LLASA.md §3.1) averaged over the target
tokens of the whole global batch, so it does not depend on how the batch is split.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from llasa.config import load_config_file
from llasa.data.tokenize import CodeShardDataset
from llasa.lm.frontend import CONFIG_KEY
from llasa.lm.prompt import training_example
from llasa.lm.vocab import SpeechVocab
from llasa.train.precision import CHOICES as PRECISIONS
from llasa.train.precision import resolve_precision

STATE_DIR = "train_state"
PROGRESS_FILE = "progress.json"  # step and tokens of the run that wrote a checkpoint
LOG_FILE = "train_log.jsonl"


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class LMTrainConfig:
    # a `llasa data tokenize` output directory, or a list of them (made with the same codec,
    # tokenizer and front-end: checked), read as one dataset
    data: str | list[str]
    output_dir: str
    # "preset:NAME" (random init, llasa.lm presets), a text-LLM directory (vocabulary extended
    # as the official recipe does), or a Llasa checkpoint directory (fine-tuning)
    init: str = "preset:tiny"
    # a compact checkpoint (weights + progress.json, e.g. the shipped default model) whose run
    # this one continues at its step, when output_dir holds no full checkpoint; the optimiser
    # moments are not in it and restart (the data order carries on, and the schedule unless
    # restart_schedule)
    continue_from: str | None = None
    # with continue_from: a new cycle of the schedule (warmup, then cosine) from the continued
    # step to max_steps, instead of carrying on the old one where it stood (e.g. at its floor).
    # The warmup also spares the trained weights the first updates of fresh optimiser moments
    # (near lr * sign(gradient) for every weight)
    restart_schedule: bool = False
    tokenizer: str | None = None  # default: the tokenizer recorded by `llasa data tokenize`
    eval_data: str | None = None  # default: the last `eval_rows` rows of `data` are held out
    eval_rows: int = 64
    max_length: int = 2048
    batch_size: int = 8  # per process
    grad_accum: int = 1
    max_steps: int = 1000
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    # "auto" (bf16 where the hardware computes it, else fp32: llasa/train/precision.py), "no",
    # "bf16" or "fp16"
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    # "official": attention_mask = input_ids != pad, which also hides the <|eot_id|> closing the
    # system and user turns (LLaSA_training's quirk); "causal": every token is visible, exactly
    # as at inference, and the faster attention path runs (right padding needs no mask)
    attention: str = "official"
    length_grouped: int = 0  # >0: draw this many global batches at a time and batch by length
    lora: LoraSettings | None = None
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    # also log eval_text_gain: the held-out loss with each row's text swapped for another row's,
    # minus the true loss (nats per speech token). Near 0 the model ignores the text (it speaks
    # in the voice, but not the words); it rises when text-to-speech alignment emerges
    eval_text_gain: bool = True
    save_every: int = 200
    keep_checkpoints: int = 2
    # exposure-bias training: this fraction of the speech codes the model *reads* (never the
    # targets) is replaced, so it learns to say the right next frame after a wrong one of its own
    speech_noise: float = 0.0
    # the codec's FSQ levels (e.g. [8, 5, 5, 5]): a replaced code becomes an FSQ neighbour (each
    # dimension one level up or down with probability 1/2, at least one moved), like the near
    # misses a small LM samples; without them, a uniformly random code
    speech_noise_levels: list[int] | None = None
    # exposure-bias training with the model's own errors (parallel scheduled sampling, Duckworth
    # et al. 2019): a first forward pass without gradients predicts every speech frame from the
    # true past; this fraction of the speech codes the model then reads is replaced by a code
    # sampled from that prediction (at the inference temperature). One more forward pass per
    # step (about a third more compute); combines with speech_noise, which is applied after
    speech_self_feed: float = 0.0
    # voice-cloning format: in this fraction of the steps each example is one utterance joined after
    # another of the same speaker, as a cloned prompt is laid out (the two texts joined by a
    # space, then both utterances' codes). A model trained on single utterances has never seen
    # speech go on after a finished sentence, which is where a cloned voice prompt leaves it.
    # Needs the speaker of every row (the shard index that `llasa data tokenize` writes)
    voice_pairs: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "LMTrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown LM training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        raw = dict(raw)
        if raw.get("lora") is not None:
            raw["lora"] = LoraSettings(**raw["lora"])
        if "betas" in raw:
            raw["betas"] = tuple(raw["betas"])
        for name in ("data", "output_dir"):
            if not raw.get(name):
                raise ValueError(f"LM training config needs '{name}'")
        for name in ("speech_noise", "speech_self_feed"):
            if not 0 <= raw.get(name, 0.0) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {raw[name]}")
        if not 0 <= raw.get("voice_pairs", 0.0) <= 1:
            raise ValueError(f"voice_pairs must be in [0, 1], got {raw['voice_pairs']}")
        levels = raw.get("speech_noise_levels")
        if levels is not None and (not levels or any(int(n) < 2 for n in levels)):
            raise ValueError(f"speech_noise_levels must be FSQ levels (each >= 2), got {levels}")
        if isinstance(raw.get("mixed_precision"), bool):  # YAML reads a bare `no` as false
            raw["mixed_precision"] = "bf16" if raw["mixed_precision"] else "no"
        if raw.get("mixed_precision", "auto") not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {', '.join(PRECISIONS)}, got {raw['mixed_precision']!r}")
        if raw.get("attention", "official") not in ("official", "causal"):
            raise ValueError(f"attention must be 'official' or 'causal', got {raw['attention']!r}")
        return cls(**raw)


def lr_at(step: int, cfg: LMTrainConfig) -> float:
    """Linear warmup, then cosine down to min_lr_ratio of the peak (the official schedule)."""
    warmup = max(1, int(cfg.warmup_ratio * cfg.max_steps))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, cfg.max_steps - warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class RowOrder:
    """Which dataset rows step `s` uses: epoch-wise permutations from the seed, consumed in order.

    With ``group`` > 0 and row ``lengths``, every ``group`` consecutive global batches are drawn
    together, sorted by length, cut into batches and visited in a seeded random order: batches
    of similar lengths waste little compute on padding (the corpus' rows vary 2x in length).
    """

    def __init__(self, n_rows: int, seed: int, *, lengths: np.ndarray | None = None, group: int = 0):
        if n_rows == 0:
            raise ValueError("no training rows: the data directory holds no tokenized utterances")
        if group and lengths is None:
            raise ValueError("length grouping needs the rows' lengths")
        self.n_rows, self.seed, self.lengths, self.group, self._cache = n_rows, seed, lengths, group, {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)}
        return self._cache[epoch]

    def rows(self, start: int, count: int) -> list[int]:
        out = []
        for pos in range(start, start + count):
            epoch, i = divmod(pos, self.n_rows)
            out.append(int(self._perm(epoch)[i]))
        return out

    def batch(self, step: int, size: int) -> list[int]:
        """The rows of global batch ``step`` (``size`` rows)."""
        if not self.group:
            return self.rows(step * size, size)
        block, j = divmod(step, self.group)
        pool = sorted(self.rows(block * self.group * size, self.group * size), key=lambda r: self.lengths[r])
        visit = np.random.default_rng([self.seed, block, 1]).permutation(self.group)
        k = int(visit[j])
        return pool[k * size : (k + 1) * size]


PAD_MULTIPLE = 64


def collate(examples: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad un-padded examples to the longest in the batch (not to the 2048 of the rows),
    rounded up to a multiple of 64: a few distinct shapes instead of hundreds, which keeps
    oneDNN's kernel cache and the allocator from growing without bound (seen: 7 to 11 GB in
    4 minutes with exact lengths)."""
    longest = max(len(e["input_ids"]) for e in examples)
    length = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
    fill = {"input_ids": pad_id, "labels": -100, "attention_mask": 0}
    batch = {}
    for key, value in fill.items():
        out = torch.full((len(examples), length), value, dtype=torch.long)
        for i, e in enumerate(examples):
            out[i, : len(e[key])] = e[key]
        batch[key] = out
    return batch


def corrupt_speech(input_ids: torch.Tensor, vocab: SpeechVocab, rate: float, levels: list[int] | None,
                   generator: torch.Generator) -> torch.Tensor:
    """A copy of ``input_ids`` with a fraction ``rate`` of its speech codes replaced (see
    ``LMTrainConfig.speech_noise``); every other token is left as it is."""
    codes = input_ids - vocab.speech_offset
    speech = (codes >= 0) & (codes < vocab.codebook_size)
    hit = speech & (torch.rand(input_ids.shape, generator=generator) < rate)
    if levels is None:
        new = torch.randint(0, vocab.codebook_size, input_ids.shape, generator=generator)
    else:
        if math.prod(levels) != vocab.codebook_size:
            raise ValueError(f"speech_noise_levels {levels} make {math.prod(levels)} codes, the vocabulary has "
                             f"{vocab.codebook_size}")  # fmt: skip
        shape = (*input_ids.shape, len(levels))
        steps = (torch.rand(shape, generator=generator) < 0.5) * (torch.randint(0, 2, shape, generator=generator) * 2 - 1)
        # a code with no dimension drawn moves on one random dimension: it always changes
        forced = torch.nn.functional.one_hot(torch.randint(0, len(levels), input_ids.shape, generator=generator), len(levels))
        forced = forced * (torch.randint(0, 2, (*input_ids.shape, 1), generator=generator) * 2 - 1)
        steps = torch.where((steps == 0).all(-1, keepdim=True), forced, steps)
        new, basis, rest = torch.zeros_like(codes), 1, codes.clamp(0, vocab.codebook_size - 1)
        for d, n in enumerate(levels):  # FSQ index = digit_0 + n_0 (digit_1 + n_1 (...))
            digit, rest = rest % n, rest // n
            moved = digit + steps[..., d]
            moved = torch.where((moved < 0) | (moved >= n), digit - steps[..., d], moved)  # off the edge: the other way
            new += moved * basis
            basis *= n
    return torch.where(hit, new + vocab.speech_offset, input_ids)


def _noise_seed(cfg: LMTrainConfig, step: int, part: int) -> int:
    return cfg.seed * 1_000_003 + step * 1009 + part


def with_speech_noise(batch: dict[str, torch.Tensor], vocab: SpeechVocab, cfg: LMTrainConfig, step: int,
                      part: int) -> dict[str, torch.Tensor]:
    """The micro-batch ``part`` of ``step`` as the model reads it under ``cfg.speech_noise``: the
    inputs corrupted, the labels (the targets) untouched. The noise is a function of (seed,
    step, part), so a resumed run reads what an uninterrupted one did."""
    generator = torch.Generator().manual_seed(_noise_seed(cfg, step, part))
    return {**batch, "input_ids": corrupt_speech(batch["input_ids"], vocab, cfg.speech_noise, cfg.speech_noise_levels, generator)}


@torch.no_grad()
def with_self_feed(model, batch: dict[str, torch.Tensor], vocab: SpeechVocab, cfg: LMTrainConfig, step: int,
                   part: int) -> dict[str, torch.Tensor]:
    """The micro-batch ``part`` of ``step`` as the model reads it under ``cfg.speech_self_feed``:
    a fraction of its speech codes replaced by codes the model itself samples, from one forward
    pass over the true inputs; labels untouched. Which codes, and the draws, are a function of
    (seed, step, part) (and of the weights), so a resumed run reads what an uninterrupted one did."""
    from llasa.lm.sampling import SamplingParams

    ids = batch["input_ids"]
    codes = ids - vocab.speech_offset
    generator = torch.Generator().manual_seed(_noise_seed(cfg, step, part) + 500_009)
    hit = (codes >= 0) & (codes < vocab.codebook_size) & (torch.rand(ids.shape, generator=generator) < cfg.speech_self_feed)
    hit[:, 0] = False  # nothing predicts the first token
    rows, cols = hit.nonzero(as_tuple=True)
    if not len(rows):
        return batch
    device = next(model.parameters()).device
    logits = _logits(model, {k: v.to(device) for k, v in batch.items()}, official_mask=cfg.attention == "official")
    # the frame at t is predicted at t - 1; only speech codes may be drawn
    speech = logits[rows, cols - 1, vocab.speech_offset : vocab.speech_offset + vocab.codebook_size].float()
    draw = torch.Generator(device=speech.device).manual_seed(_noise_seed(cfg, step, part) + 700_001)
    drawn = torch.multinomial(torch.softmax(speech / SamplingParams().temperature, -1), 1, generator=draw).squeeze(-1)
    fed = ids.clone()
    fed[rows, cols] = drawn.to(ids.device) + vocab.speech_offset
    return {**batch, "input_ids": fed}


def _logits(model, batch: dict[str, torch.Tensor], *, official_mask: bool) -> torch.Tensor:
    mask = batch["attention_mask"] if official_mask else None
    return model(input_ids=batch["input_ids"], attention_mask=mask).logits


def token_loss_sum(model, batch: dict[str, torch.Tensor], *, official_mask: bool = True) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the labelled positions, and their count."""
    logits = _logits(model, batch, official_mask=official_mask)
    targets = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return loss, int((targets != -100).sum())


def data_dirs(cfg: LMTrainConfig) -> list[Path]:
    return [Path(cfg.data)] if isinstance(cfg.data, (str, Path)) else [Path(d) for d in cfg.data]


# what must agree between shard folders trained on together: the same token means the same thing
_SAME_TOKENS = ("codebook_size", "vocab_size", "speech_offset", "frontend", "sample_rate", "hop_length")


def _vocabulary(folder: Path) -> dict | None:
    """The token -> id maps of the tokenizer saved beside a folder's shards (None if none was)."""
    path = folder / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        return None
    made = json.loads(path.read_text())
    return {"model": made.get("model", {}).get("vocab"), "added": {t["content"]: t["id"] for t in made.get("added_tokens", [])}}


def check_data_dirs(dirs: list[Path]) -> None:
    """Several shard folders must have been made with the same codec codebook, tokenizer and
    front-end (their ``tokenize_config.json`` and saved vocabularies agree), or their rows mean
    different things."""
    made = {d: json.loads((d / "tokenize_config.json").read_text()) for d in dirs if (d / "tokenize_config.json").is_file()}
    if len(made) < 2:
        return
    (first, ref), *rest = made.items()
    vocabulary = _vocabulary(first)
    for folder, other in rest:
        differ = [f"{k}: {ref.get(k)!r} in {first} but {other.get(k)!r} in {folder}" for k in _SAME_TOKENS if ref.get(k) != other.get(k)]
        theirs = _vocabulary(folder)
        if vocabulary is not None and theirs is not None and theirs != vocabulary:
            differ.append(f"the tokenizers saved in {first}/tokenizer and {folder}/tokenizer have different vocabularies")
        if differ:
            raise ValueError("shard folders were tokenized differently, so their tokens mean different things: " + "; ".join(differ))


def _resolve_tokenizer(cfg: LMTrainConfig):
    from transformers import AutoTokenizer

    path = cfg.tokenizer
    if path is None:
        first = data_dirs(cfg)[0]
        recorded = first / "tokenizer"
        if not recorded.is_dir():
            raise ValueError(f"no tokenizer given and none recorded in {first} (expected {recorded})")
        path = str(recorded)
    return AutoTokenizer.from_pretrained(path)


def build_model(cfg: LMTrainConfig, tokenizer):
    from transformers import AutoModelForCausalLM

    from llasa.lm.model import build_model as build_preset, resolve

    vocab_size = len(tokenizer)
    if cfg.init.startswith("preset:"):
        model = build_preset(cfg.init.split(":", 1)[1], tokenizer, seed=cfg.seed)
    else:
        init = resolve(cfg.init)  # a local directory, or a hub id (e.g. meta-llama/Llama-3.2-1B-Instruct)
        if not (init / "config.json").is_file():
            raise ValueError(f"init '{cfg.init}' is neither 'preset:NAME' nor a model directory with config.json")
        model = AutoModelForCausalLM.from_pretrained(init, torch_dtype=torch.float32)
        if model.get_input_embeddings().weight.shape[0] < vocab_size:
            # a text LLM: grow its vocabulary by the control and speech tokens (official recipe)
            model.resize_token_embeddings(vocab_size)
        elif model.get_input_embeddings().weight.shape[0] > vocab_size:
            raise ValueError(
                f"model {cfg.init} has {model.get_input_embeddings().weight.shape[0]} embedding rows but the "
                f"tokenizer only {vocab_size} tokens: the data was tokenized with a different vocabulary"
            )
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|SPEECH_GENERATION_END|>")
    # the model reads what the rows hold: raw text or the front-end's phonemes (see llasa.lm.frontend)
    made_with = data_dirs(cfg)[0] / "tokenize_config.json"
    if made_with.is_file():
        setattr(model.config, CONFIG_KEY, json.loads(made_with.read_text()).get("frontend", "text"))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model


class _Examples:
    """Rows of a shard dataset rendered into training examples on demand; with ``voice_pairs``,
    :meth:`example` sometimes joins a row after another of the same speaker."""

    def __init__(self, dataset, tokenizer, max_length: int, indices: np.ndarray, *, voice_pairs: float = 0.0,
                 seed: int = 0):
        self.dataset, self.tokenizer, self.max_length, self.indices = dataset, tokenizer, max_length, indices
        self.voice_pairs, self.seed = voice_pairs, seed
        if voice_pairs:
            speakers = []
            for i in indices:
                try:
                    speakers.append(dataset.metadata(int(i))["speaker"])
                except (ValueError, KeyError) as err:
                    raise ValueError(f"voice_pairs needs the speaker of every training row (the shard index "
                                     f"written by `llasa data tokenize`): row {int(i)}: {err}") from None
            _, self._voice = np.unique(speakers, return_inverse=True)
            self._same_voice = [np.flatnonzero(self._voice == v) for v in range(self._voice.max() + 1)]
            self._vocab = SpeechVocab.from_tokenizer(tokenizer)
            self._space = tokenizer(" ", add_special_tokens=False)["input_ids"]

    def example(self, i: int, step: int) -> dict[str, torch.Tensor]:
        """Example ``i`` as training step ``step`` reads it: under ``voice_pairs``, joined after
        another utterance of its speaker in that fraction of the steps (a whole batch or none of
        it, so the single rows are not padded to the length of the joined ones). The draws are a
        function of (seed, step, i), so resumed runs read the same."""
        if self.voice_pairs and np.random.default_rng((self.seed, step)).random() < self.voice_pairs:
            others = self._same_voice[self._voice[i]]
            if len(others) > 1:
                j = int(np.random.default_rng((self.seed, step, int(i))).choice(others[others != i]))
                joined = self._joined(np.asarray(self.dataset[int(self.indices[j])]), np.asarray(self.dataset[int(self.indices[i])]))
                if joined is not None:
                    return training_example(self.tokenizer, joined, max_length=self.max_length, pad=False)
        return self[i]

    def _joined(self, first: np.ndarray, second: np.ndarray) -> np.ndarray | None:
        """``TUS text1 ␣ text2 TUE SGS codes1 codes2 SGE``: what a prompt cloned from ``first``
        reads, then the speech for ``second``. Token ids are joined, not the strings re-tokenized:
        exact for the byte-level tokenizer, a near neighbour of the joined string's tokens for a
        BPE one. None when a row is truncated or the pair would not fit ``max_length``."""
        parts = []
        for row in (first, second):
            sgs, sge = np.flatnonzero(row == self._vocab.sgs_id), np.flatnonzero(row == self._vocab.sge_id)
            if not sgs.size or not sge.size:
                return None
            parts.append((row[: sgs[0]], row[sgs[0] : sge[0] + 1]))
        (text1, speech1), (text2, speech2) = parts
        joined = np.concatenate([text1[:-1], self._space, text2[1:], speech1[:-1], speech2[1:]])
        return joined if len(joined) <= self.max_length else None

    def __len__(self) -> int:
        return len(self.indices)

    def lengths(self) -> np.ndarray:
        """Non-padding tokens of each row (a proxy for its example's length)."""
        pad = self.tokenizer.pad_token_id
        return np.array([int((np.asarray(self.dataset[int(i)]) != pad).sum()) for i in self.indices])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = np.asarray(self.dataset[int(self.indices[i])])
        return training_example(self.tokenizer, row, max_length=self.max_length, pad=False)


class _SwappedText(_Examples):
    """Each row's speech after another row's text (the row half the set away, or the next one
    whose text differs): the loss a model gets without reading the text it was given."""

    def __init__(self, examples: _Examples):
        super().__init__(examples.dataset, examples.tokenizer, examples.max_length, examples.indices)
        self._sgs = SpeechVocab.from_tokenizer(self.tokenizer).sgs_id

    def _split(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        row = np.asarray(self.dataset[int(self.indices[i])])
        start = int(np.flatnonzero(row == self._sgs)[0])
        return row[:start], row[start:]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        text, speech = self._split(i)
        for k in range(n - 1):
            other, _ = self._split((i + n // 2 + k) % n)
            if not np.array_equal(other, text):
                text = other
                break
        return training_example(self.tokenizer, np.concatenate([text, speech]), max_length=self.max_length, pad=False)


def _split(cfg: LMTrainConfig, tokenizer) -> tuple[_Examples, _Examples]:
    data = CodeShardDataset(data_dirs(cfg))
    n = len(data)
    pairs = {"voice_pairs": cfg.voice_pairs, "seed": cfg.seed}  # held-out rows stay single: a comparable loss
    if cfg.eval_data:
        eval_set = CodeShardDataset(cfg.eval_data)
        return (
            _Examples(data, tokenizer, cfg.max_length, np.arange(n), **pairs),
            _Examples(eval_set, tokenizer, cfg.max_length, np.arange(len(eval_set))),
        )
    n_eval = min(cfg.eval_rows, n // 10)
    return (
        _Examples(data, tokenizer, cfg.max_length, np.arange(n - n_eval), **pairs),
        _Examples(data, tokenizer, cfg.max_length, np.arange(n - n_eval, n)),
    )


def _cut_log(path: Path, step: int) -> None:
    """Drop records past the step a run resumes from: they are logged again as it gets there."""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def _latest_checkpoint(output_dir: Path) -> Path | None:
    found = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    found = [p for p in found if (p / STATE_DIR / "trainer.json").is_file()]
    return found[-1] if found else None


def train_lm(config: LMTrainConfig | dict | str | Path, *, resume: bool = True, max_steps: int | None = None) -> Path:
    """Train (or continue training) an LM; returns the directory of the final checkpoint.

    ``max_steps`` stops this invocation early (the schedule still follows ``config.max_steps``),
    which is how a long run is split over several sittings.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg = config if isinstance(config, LMTrainConfig) else LMTrainConfig.from_dict(load_config_file(config))
    out = Path(cfg.output_dir)
    precision = resolve_precision(cfg.mixed_precision, "cuda" if torch.cuda.is_available() else "cpu", where="mixed_precision")
    # cpu=True is what lets accelerate form a gloo process group under torchrun on CPU-only hosts
    accelerator = Accelerator(
        mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum, cpu=not torch.cuda.is_available()
    )
    set_seed(cfg.seed)
    check_data_dirs(data_dirs(cfg))
    tokenizer = _resolve_tokenizer(cfg)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    if cfg.continue_from and not (resume and _latest_checkpoint(out)):
        if not (Path(cfg.continue_from) / PROGRESS_FILE).is_file():
            raise ValueError(f"continue_from '{cfg.continue_from}' has no {PROGRESS_FILE}: it was not written by llasa train lm")
        cfg = replace(cfg, init=cfg.continue_from)
    model = build_model(cfg, tokenizer)
    train_set, eval_set = _split(cfg, tokenizer)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    if accelerator.state.deepspeed_plugin is not None:
        # no DataLoader goes through prepare(), so DeepSpeed's "auto" batch fields are filled here
        accelerator.state.deepspeed_plugin.deepspeed_config.update(
            train_micro_batch_size_per_gpu=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            gradient_clipping=cfg.grad_clip,
            train_batch_size=cfg.batch_size * cfg.grad_accum * accelerator.num_processes,
        )
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.print(f"precision: {'fp32' if precision == 'no' else precision} (mixed_precision: {cfg.mixed_precision})")

    step, total_tokens, progress = 0, 0, {}
    resumed = resume and (ckpt := _latest_checkpoint(out)) is not None
    if resumed:
        accelerator.load_state(str(ckpt / STATE_DIR))
        progress = json.loads((ckpt / STATE_DIR / "trainer.json").read_text())
        step, total_tokens = progress["step"], progress.get("tokens", 0)
        accelerator.print(f"resuming from {ckpt} at step {step}")
    elif cfg.continue_from:
        progress = json.loads((Path(cfg.continue_from) / PROGRESS_FILE).read_text())
        step, total_tokens = progress["step"], progress["tokens"]
        accelerator.print(f"continuing {cfg.continue_from} at step {step} (fresh optimiser moments)")
    if progress.get("rows") not in (None, len(train_set)):
        # the order is a function of the row count: with more (or fewer) rows it is a new one
        accelerator.print(f"the training data changed since step {step} ({progress['rows']} rows, now {len(train_set)}): "
                          "batches from here follow a new order over all of it")  # fmt: skip
    # the step at which the schedule's current cycle began (kept in the checkpoints for resumes)
    origin = step if cfg.continue_from and cfg.restart_schedule and not resumed else progress.get("schedule_from", 0)
    if origin >= cfg.max_steps:
        raise ValueError(f"max_steps {cfg.max_steps} leaves no steps for a new schedule from step {origin}: raise it")
    cycle = replace(cfg, max_steps=cfg.max_steps - origin)

    def rate(s: int) -> float:
        return lr_at(s - origin, cycle)

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        _cut_log(out / LOG_FILE, step)

    world, rank = accelerator.num_processes, accelerator.process_index
    lengths = train_set.lengths() if cfg.length_grouped else None
    order = RowOrder(len(train_set), cfg.seed, lengths=lengths, group=cfg.length_grouped)
    global_batch = cfg.batch_size * world * cfg.grad_accum
    stop = cfg.max_steps if max_steps is None else min(cfg.max_steps, max_steps)
    bar = tqdm(total=stop, initial=step, desc="train lm", disable=not accelerator.is_main_process, unit="step")
    tokens_seen, t0 = 0, time.perf_counter()
    model.train()
    while step < stop:
        rows = order.batch(step, global_batch)
        micro = [
            collate(
                [train_set.example(r, step) for r in rows[(a * world + rank) * cfg.batch_size : (a * world + rank + 1) * cfg.batch_size]],
                tokenizer.pad_token_id,
            )
            for a in range(cfg.grad_accum)
        ]
        local_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
        total_targets = int(accelerator.reduce(torch.tensor(local_targets, device=accelerator.device), "sum"))
        for group in optimizer.param_groups:
            group["lr"] = rate(step)
        loss_sum = 0.0
        for a, batch in enumerate(micro):
            if cfg.speech_self_feed:
                with accelerator.autocast():
                    batch = with_self_feed(model, batch, vocab, cfg, step, a * world + rank)
            if cfg.speech_noise:
                batch = with_speech_noise(batch, vocab, cfg, step, a * world + rank)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            # accumulate() syncs gradients (DDP/FSDP/DeepSpeed) and steps only on the last micro-batch
            with accelerator.accumulate(model), accelerator.autocast():
                summed, _ = token_loss_sum(model, batch, official_mask=cfg.attention == "official")
                # backward() divides by grad_accum and DDP averages over processes: undo both so
                # the gradient is that of the token mean over the whole global batch
                accelerator.backward(summed * world * cfg.grad_accum / max(1, total_targets))
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += float(summed.detach())
            tokens_seen += int(batch["attention_mask"].sum())
        step += 1
        loss = float(accelerator.reduce(torch.tensor(loss_sum, device=accelerator.device), "sum")) / max(1, total_targets)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        record: dict[str, Any] = {}
        if step % cfg.log_every == 0 or step == stop:
            elapsed = time.perf_counter() - t0
            interval = int(accelerator.reduce(torch.tensor(tokens_seen, device=accelerator.device), "sum"))
            total_tokens += interval
            # tokens = real (non-padding) tokens trained on so far: the compute axis of scaling plots
            record.update(
                loss=loss, lr=rate(step - 1), tokens=total_tokens, interval_s=round(elapsed, 4),
                tokens_per_s=interval / max(elapsed, 1e-9),
            )
            tokens_seen, t0 = 0, time.perf_counter()
        if step % cfg.eval_every == 0 or step == stop:
            record["eval_loss"] = evaluate(model, eval_set, cfg, accelerator)
            if cfg.eval_text_gain:
                record["eval_text_gain"] = evaluate(model, _SwappedText(eval_set), cfg, accelerator) - record["eval_loss"]
        if record and accelerator.is_main_process:
            record = {"step": step, **record}
            with open(out / LOG_FILE, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if step % cfg.save_every == 0 or step == stop:
            save_checkpoint(accelerator, model, tokenizer, out, step, cfg, tokens=total_tokens, rows=len(train_set),
                            schedule_from=origin)
    bar.close()
    final = out / f"checkpoint-{step}"
    if accelerator.is_main_process and step >= cfg.max_steps:
        export = out / "final"
        if export.exists():
            shutil.rmtree(export)
        shutil.copytree(final, export, ignore=shutil.ignore_patterns(STATE_DIR))
        final = export
    accelerator.wait_for_everyone()
    return final


@torch.no_grad()
def evaluate(model, eval_set: _Examples, cfg: LMTrainConfig, accelerator) -> float:
    """Token-mean loss on the held-out rows, each process taking its share."""
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = list(range(rank, len(eval_set), world))
    total, count = 0.0, 0
    for i in range(0, len(mine), cfg.batch_size):
        batch = collate([eval_set[j] for j in mine[i : i + cfg.batch_size]], eval_set.tokenizer.pad_token_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            summed, n = token_loss_sum(model, batch, official_mask=cfg.attention == "official")
        total, count = total + float(summed), count + n
    model.train()
    sums = accelerator.reduce(torch.tensor([total, float(count)], device=accelerator.device), "sum")
    return float(sums[0] / sums[1].clamp(min=1))


def save_checkpoint(accelerator, model, tokenizer, out: Path, step: int, cfg: LMTrainConfig, *, tokens: int = 0,
                    rows: int | None = None, schedule_from: int = 0) -> Path:  # fmt: skip
    """HF layout (loadable by `llasa tts --model`) + the training state for resume; old ones pruned."""
    ckpt = out / f"checkpoint-{step}"
    accelerator.wait_for_everyone()
    accelerator.save_state(str(ckpt / STATE_DIR))
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        if cfg.lora is not None:
            # the adapter for further fine-tuning, and merged full weights so that any loader works
            unwrapped.save_pretrained(ckpt / "adapter")
            unwrapped.merge_adapter()
            merged = {
                k.replace(".base_layer", ""): v.detach().clone()
                for k, v in unwrapped.get_base_model().state_dict().items()
                if "lora_" not in k
            }
            unwrapped.unmerge_adapter()
            if unwrapped.get_base_model().config.tie_word_embeddings:
                merged.pop("lm_head.weight", None)  # the embedding is the output layer
            unwrapped.get_base_model().save_pretrained(ckpt, state_dict=merged, safe_serialization=True)
        else:
            unwrapped.save_pretrained(ckpt, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(ckpt)
        record = {"step": step, "tokens": tokens, "rows": rows}
        if schedule_from:
            record["schedule_from"] = schedule_from
        progress = json.dumps(record)
        (ckpt / STATE_DIR / "trainer.json").write_text(progress)
        (ckpt / PROGRESS_FILE).write_text(progress)
        try:
            plot_log(out / LOG_FILE, out / "curve.png")
        except ImportError:
            pass  # matplotlib is optional (the `train` extra); the log has every figure
        done = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in done[: -cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return ckpt


def plot_log(log_path: str | Path, png_path: str | Path) -> Path:
    """Training curve from a train_log.jsonl: train and eval loss against tokens trained on
    (the compute axis of train-time scaling plots); needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line]
    fig, axis = plt.subplots(figsize=(7, 4))
    for key in ("loss", "eval_loss"):
        points = [(r["tokens"] / 1e6, r[key]) for r in records if key in r and "tokens" in r]
        if points:
            axis.plot(*zip(*points), label=key, marker="o" if key == "eval_loss" else None)
    axis.set(xlabel="tokens trained on (millions)", ylabel="cross-entropy (nats / speech token)", title="LM training")
    axis.grid(alpha=0.3)
    gain = [(r["tokens"] / 1e6, r["eval_text_gain"]) for r in records if "eval_text_gain" in r and "tokens" in r]
    if gain:  # on its own axis: a few hundredths until the model starts reading, then tenths
        right = axis.twinx()
        right.plot(*zip(*gain), color="tab:green", marker="s", label="eval_text_gain")
        right.set_ylabel("text gain (nats / speech token)", color="tab:green")
        fig.legend(loc="upper right", bbox_to_anchor=(0.85, 0.9))
    else:
        axis.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
