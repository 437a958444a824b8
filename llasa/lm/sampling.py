"""A stateful, batched speech-token decoder: one prefill, N rows, step by step.

Why not ``model.generate``: search over candidates (best-of-N, beam search over partial
sequences) needs to stop after K tokens, read every row's codes, and keep / duplicate rows by
indexing the KV cache, which ``generate`` does not expose. The decoder runs transformers'
``LlamaModel`` code unchanged and samples with transformers' own logits processors; what it
adds is the loop, the bookkeeping, and where the weights and the cache live:

* the prompt is prefilled once (never recomputed), through ``prefill_model`` when given (an
  fp32 copy on CPUs that emulate bf16), and its cache is held once for all N rows
  (:class:`SharedPrefix`): 8 rows of the built-in model decode in 1.3x the time of one, not 2.1x;
* the rest of the cache is allocated once for the whole decode (:class:`PreallocatedLayer`), in
  fp32 on a CPU, where bf16 attention products are slower and build a new kernel for each length
  the cache grows to (1.3 ms a step for the built-in model); and on a CPU
  the matrices are read from a copy in oneDNN's layout (:func:`decoding_copy`): decoding is
  bound by how fast the weights stream, and that layout streams them 1.4-3x faster than MKL's;
  the projections of one input (q, k, v; gate, up) are one product there (:class:`FusedLinears`),
  and a one-token step of a Llama calls its layers directly (:meth:`DecodingCopy.forward`);
* all live rows decode together in one batch, in lock-step, so they share one sequence
  length and need no padding or attention mask;
* logits are computed only for the output rows that may be sampled (the speech tokens and
  <|SPEECH_GENERATION_END|>): about a fifth of the output layer for the official
  vocabulary, and no text token can ever be emitted;
* a row that emits the end token (or reaches its budget) leaves the batch and the cache; the
  rows' Python state follows the device every few steps (every step on a CPU, where looking
  costs nothing and an extra step does), not at every token;
* each row draws from its own random stream, derived from (seed, row): row r of a seeded
  decoder samples the same codes whatever n is (up to floating-point differences between batch
  sizes), so the candidates of best-of-4 are the first four of best-of-8, and the best
  verifier score can only rise with N.
  Row 0's stream is ``seed`` itself, as is a server request's. A row that ``select`` copies
  gets a fresh stream, so the copies of a beam diverge.

Log-probabilities are those of the distribution actually sampled from (after repetition
penalty, temperature, top-k and top-p; or the untruncated one where repetition-aware sampling
drew again); a greedy step has log-probability 0.
"""

from __future__ import annotations

import copy
import itertools
import weakref
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    AttentionInterface,
    AttentionMaskInterface,
    DynamicCache,
    LlamaForCausalLM,
    LlamaModel,
)
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaMLP,
    LlamaRMSNorm,
    rotate_half,
)
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from llasa.hardware import fast_bf16, onednn_matmul
from llasa.lm.model import CONTEXT_LENGTH
from llasa.lm.vocab import SpeechVocab, codes_from_ids

# a model's own recommended sampling, in its config.json (e.g. {"temperature": 0.6, "top_p": 0.9}):
# what llasa uses for that model unless told otherwise. The official checkpoints have none, so
# they get the official settings
SAMPLING_KEY = "llasa_sampling"


@dataclass(frozen=True)
class SamplingParams:
    """Official defaults: temperature 0.8, top_p 1.0 (spec §2.5). ``temperature=0`` is greedy."""

    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float = 1.0
    # repetition-aware sampling (VALL-E 2; CosyVoice's default with window 10, threshold 0.1):
    # a sampled code that already fills at least ras_threshold of the last ras_window codes of
    # the speech stream (voice prompt included) is drawn again from the untruncated distribution
    # (repetition penalty and temperature, no top-k / top-p). 0 = off, the official behaviour
    ras_window: int = 0
    ras_threshold: float = 0.1

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k == 0:  # off, as in transformers' generate: how a flag undoes a model's own top-k
            object.__setattr__(self, "top_k", None)
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer, or 0 / None for off, got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if isinstance(self.ras_window, bool) or not isinstance(self.ras_window, int) or self.ras_window < 0:
            raise ValueError(f"ras_window must be a whole number of codes >= 0 (0 = off), got {self.ras_window!r}")
        if not 0 < self.ras_threshold <= 1:
            raise ValueError(f"ras_threshold must be in (0, 1], got {self.ras_threshold}")

    @classmethod
    def of_model(cls, model) -> "SamplingParams":
        """The sampling ``model`` recommends (``llasa_sampling`` in its config), else the official one."""
        raw = getattr(model.config, SAMPLING_KEY, None) or {}
        names = cls.names()
        if not isinstance(raw, dict) or set(raw) - set(names):
            raise ValueError(f"{SAMPLING_KEY} in the model's config.json must map some of {', '.join(names)} to values, "
                             f"got {raw!r}")  # fmt: skip
        return cls(**raw)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def but(self, **given) -> "SamplingParams":
        """These settings with those ``given`` that are not None (a caller's explicit choices)."""
        return replace(self, **{name: value for name, value in given.items() if value is not None})

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def repetition_aware(self) -> bool:
        return self.ras_window > 0 and not self.greedy

    def processors(self, *, truncate: bool = True) -> LogitsProcessorList:
        """transformers' processors, in the order ``generate`` applies them; ``truncate=False``
        leaves out top-k and top-p (the distribution repetition-aware sampling falls back to)."""
        chain = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            chain.append(RepetitionPenaltyLogitsProcessor(float(self.repetition_penalty)))
        if not self.greedy:
            if self.temperature != 1.0:
                chain.append(TemperatureLogitsWarper(float(self.temperature)))
            if truncate and self.top_k is not None:
                chain.append(TopKLogitsWarper(int(self.top_k)))
            if truncate and self.top_p < 1.0:
                chain.append(TopPLogitsWarper(float(self.top_p)))
        return chain


class Sampler:
    """The next token of each row under :class:`SamplingParams`: transformers' processors, then
    greedy choice or one draw per row, then repetition-aware resampling of the rows whose draw
    repeats itself too often. One place for the decoder here and the server's scheduler.

    ``scores``: raw logits over [speech codes..., SGE], one row each; ``history``: each row's speech
    codes so far (voice prompt included), as the repetition penalty reads them; ``generator``: as
    :func:`sample_from` takes it. Returns the chosen local indices and their log-probabilities
    under the distribution each was drawn from (0 for greedy).

    Why by hand: transformers' processors transform logits before a draw; this resampling
    depends on the draw itself, which no processor sees.
    """

    def __init__(self, params: SamplingParams):
        self.params = params
        self._processors = params.processors()
        self._fallback = params.processors(truncate=False) if params.repetition_aware else None

    def __call__(self, scores: torch.Tensor, history: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        processed = self._processors(history, scores.clone() if self._fallback is not None else scores)
        if self.params.greedy:
            choice = processed.argmax(dim=-1)
            return choice, torch.zeros(choice.shape, device=scores.device)
        choice, logp = sample_from(torch.softmax(processed, dim=-1), generator)
        if self._fallback is None:
            return choice, logp
        window = history[:, -self.params.ras_window :]
        repeats = (window == choice[:, None]).sum(dim=1)
        again = (repeats >= self.params.ras_window * self.params.ras_threshold).nonzero().flatten().tolist()
        if again:
            index = torch.tensor(again, dtype=torch.long, device=scores.device)
            full = self._fallback(history[index], scores[index])
            shared = generator is None or isinstance(generator, torch.Generator)
            streams = generator if shared else [generator[i] for i in again]
            choice[index], logp[index] = sample_from(torch.softmax(full, dim=-1), streams)
        return choice, logp


@dataclass
class Row:
    """One candidate: its new speech codes, whether it has stopped and why, its log-probability."""

    codes: list[int] = field(default_factory=list)
    finished: bool = False
    stop_reason: str | None = None  # "end" (emitted SGE) or "length" (hit the token budget)
    logprob: float = 0.0

    def copy(self) -> "Row":
        return Row(list(self.codes), self.finished, self.stop_reason, self.logprob)


class SpeechDecoder:
    """Decode speech tokens for ``n`` rows that share one prompt.

    >>> dec = SpeechDecoder(model, vocab, prompt, n=8, seed=0)
    >>> dec.step(25)            # 25 tokens for every live row
    >>> dec.codes()             # each row's codes so far
    >>> dec.select([3, 3, 5])   # keep / duplicate rows (beam search), cache included
    >>> dec.run()               # until every row has ended
    """

    def __init__(
        self,
        model: LlamaForCausalLM,
        vocab: SpeechVocab,
        prompt_ids: Sequence[int],
        *,
        n: int = 1,
        params: SamplingParams = SamplingParams(),
        seed: int | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        context_length: int = CONTEXT_LENGTH,
        prefill_model: LlamaForCausalLM | None = None,
    ):
        if n < 1:
            raise ValueError(f"n (number of candidates) must be >= 1, got {n}")
        prompt_ids = [int(i) for i in prompt_ids]
        room = context_length - len(prompt_ids)
        if room < 1:
            raise ValueError(
                f"prompt is {len(prompt_ids)} tokens, leaving no room for speech in the {context_length}-token context "
                "(shorten the text or the voice prompt)"
            )
        self.max_new_tokens = room if max_new_tokens is None else min(int(max_new_tokens), room)
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        # the end token is not sampled before this many codes (like generate's min_new_tokens)
        self.min_new_tokens = max(0, min(int(min_new_tokens), self.max_new_tokens))
        self.model = model
        self.vocab = vocab
        self.params = params  # settable between steps (e.g. a greedy tail after sampled prefixes)
        self.prompt_length = len(prompt_ids)
        device = model.get_input_embeddings().weight.device
        self.device = device
        self.seed = check_seed(seed)
        self._streams = n  # row streams created so far; a new stream's index
        self._generators = [self._generator(r) for r in range(n)]
        self._weight = model.get_output_embeddings().weight
        if model.get_output_embeddings().bias is not None:
            raise ValueError("output layers with a bias are not supported (Llama has none)")
        self._copy = decoding_copy(model, vocab)
        # the stop check reads a device flag on the host: free on a CPU, where an extra step
        # is not, but a pipeline stall on an accelerator, which checks every few steps instead
        self._check_every = 1 if device.type == "cpu" else STOP_CHECK_EVERY

        prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)
        with torch.inference_mode():
            prefilled, hidden = prefill(model, prompt, via=prefill_model, copy=self._copy)
            # a CPU attends in fp32: its bf16 products are slower at these sizes, and build a new
            # kernel for every length the cache grows to (1.3 ms a step, measured)
            self.cache = preallocated_cache(prefilled, n, self.prompt_length + self.max_new_tokens,
                                            dtype=torch.float32 if device.type == "cpu" else None)  # fmt: skip
        self._hidden = hidden.expand(n, -1)
        self.rows = [Row() for _ in range(n)]
        self._live = list(range(n))  # row index of each batch entry of the cache
        self._generated = 0  # codes of every live row so far: rows decode in lock-step
        # the repetition penalty's history: the speech already in the prompt (a voice) counts, as in generate
        prompt_codes = codes_from_ids(prompt_ids, vocab)
        self._history = torch.zeros(n, len(prompt_codes) + self.max_new_tokens, dtype=torch.long, device=device)
        self._history[:, : len(prompt_codes)] = torch.tensor(prompt_codes, dtype=torch.long, device=device)
        self._history_length = len(prompt_codes)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (choice, logp) of steps not yet in self.rows
        self._ended: torch.Tensor | None = None  # which rows said the end token during the pending steps

    # ------------------------------------------------------------------ state
    @property
    def params(self) -> SamplingParams:
        return self._params

    @params.setter
    def params(self, params: SamplingParams) -> None:
        self._params = params
        self._sampler = Sampler(params)

    @property
    def done(self) -> bool:
        return not self._live

    def codes(self) -> list[np.ndarray]:
        return [np.asarray(r.codes, dtype=np.int64) for r in self.rows]

    def select(self, indices: Sequence[int]) -> None:
        """Keep rows ``indices`` (in that order, repeats allowed): the new row j is a copy of
        old row ``indices[j]``, its KV cache included. Beam search keeps B rows and expands
        each into M with ``select([b for b in best for _ in range(M)])``."""
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("select() needs at least one row")
        bad = [i for i in indices if not 0 <= i < len(self.rows)]
        if bad:
            raise IndexError(f"row indices {bad} out of range for {len(self.rows)} rows")
        position = {row: b for b, row in enumerate(self._live)}
        batch = [position[i] for i in indices if i in position]
        self.rows = [self.rows[i].copy() for i in indices]
        # the first copy of a row keeps its random stream; further copies get new ones
        seen, generators = set(), []
        for i in indices:
            if i in seen:
                generators.append(self._generator(self._streams))
                self._streams += 1
            else:
                generators.append(self._generators[i])
                seen.add(i)
        self._generators = generators
        self._live = [j for j, i in enumerate(indices) if i in position]
        self._take(batch)

    # ------------------------------------------------------------------ decoding
    @torch.inference_mode()
    def step(self, k: int = 1) -> int:
        """Generate up to ``k`` tokens for every live row; returns how many steps ran."""
        ran = 0
        while ran < k and self._live:
            self._step(final=ran == k - 1)
            ran += 1
        return ran

    def run(self, *, progress: bool = False) -> list[np.ndarray]:
        """Decode until every row has stopped; returns each row's codes (SGE excluded)."""
        with tqdm(total=self.max_new_tokens, initial=max(len(r.codes) for r in self.rows), desc="speech tokens", unit="tok",
                  disable=not progress, leave=False) as bar:  # fmt: skip
            while self._live:
                bar.update(self.step(RUN_CHUNK))
        return self.codes()

    def _step(self, *, final: bool) -> None:
        """One token for every live row; the rows learn of it (and rows that ended leave the
        batch) at the next stop check, and always when ``final``."""
        scores = self._logits(self._hidden)
        end = self.vocab.codebook_size  # local index of <|SPEECH_GENERATION_END|>
        if self._generated < self.min_new_tokens:
            scores[:, end] = float("-inf")
        generators = None if self.seed is None else [self._generators[i] for i in self._live]
        choice, logp = self._sampler(scores, self._history[:, : self._history_length], generators)
        self._pending.append((choice, logp))
        self._generated += 1
        self._history[:, self._history_length] = choice
        self._history_length += 1
        ended = choice == end
        self._ended = ended if len(self._pending) == 1 else self._ended | ended
        if final or self._generated >= self.max_new_tokens or (
            len(self._pending) % self._check_every == 0 and bool(self._ended.any())
        ):
            keep = self._sync()
            if not self._live:
                return
            if len(keep) < len(choice):
                index = torch.tensor(keep, dtype=torch.long, device=self.device)
                choice, ended = choice[index], ended[index]
        # a row that ended but is not yet checked is fed <|SPEECH_GENERATION_END|>; its further codes are dropped
        fed = torch.where(ended, self.vocab.sge_id, choice + self.vocab.speech_offset)
        self._hidden = self._forward(fed[:, None])

    def _sync(self) -> list[int]:
        """Hand the pending steps to the rows; rows that ended or reached the budget leave the
        batch. Returns the batch entries that stay."""
        tokens = torch.stack([c for c, _ in self._pending], dim=1).tolist()
        logps = torch.stack([lp for _, lp in self._pending], dim=1).tolist()
        self._pending = []
        end = self.vocab.codebook_size
        keep = []
        for b, row_index in enumerate(self._live):
            row = self.rows[row_index]
            for token, lp in zip(tokens[b], logps[b]):
                row.logprob += lp
                if token == end:
                    row.finished, row.stop_reason = True, "end"
                    break
                row.codes.append(token)
            else:
                if len(row.codes) >= self.max_new_tokens:
                    row.finished, row.stop_reason = True, "length"
                else:
                    keep.append(b)
        if len(keep) < len(self._live):
            self._live = [self._live[b] for b in keep]
            self._take(keep)
        return keep

    def _generator(self, stream: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(row_seed(self.seed, stream))

    def _take(self, batch: list[int]) -> None:
        """Re-index the per-batch state (cache, hidden state, history) to entries ``batch``."""
        if not batch:
            self.cache = None
            return
        index = torch.tensor(batch, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self._hidden = self._hidden[index]
        self._history = self._history[index]

    def _forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the decoder over new tokens; the final hidden state of the last position."""
        if self._copy is not None:
            return self._copy.forward(input_ids, self.cache)
        return self.model.model(input_ids=input_ids, cache=self.cache, use_cache=True).last_hidden_state[:, -1]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return speech_logits(hidden, self._weight, self.vocab, copy=self._copy)


# steps between stop checks on an accelerator; and the steps ``run`` takes per call of ``step``
STOP_CHECK_EVERY = 8
RUN_CHUNK = 16


class SharedPrefix(NamedTuple):
    """One layer's keys (or values) for rows that share a prompt: the prompt's positions once,
    ``prefix`` (1, heads, P, dim), and each row's own positions after it, ``own`` (rows, heads, S, dim).

    Why: every candidate of a search reads the same prompt, usually most of the context (a voice
    prompt and the text). Held once, it is read once a step for all rows (one matrix product with
    every row's query) instead of once a row, and it is never copied when rows are chosen.
    """

    prefix: torch.Tensor
    own: torch.Tensor

    @property
    def dtype(self) -> torch.dtype:
        return self.own.dtype

    @property
    def shape(self) -> torch.Size:
        rows, heads, own, dim = self.own.shape
        return torch.Size((rows, heads, self.prefix.shape[2] + own, dim))

    def whole(self) -> torch.Tensor:
        """The rows' full keys (or values), as one tensor: a copy."""
        return torch.cat([self.prefix.expand(self.own.shape[0], -1, -1, -1), self.own], dim=2)


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values: the prompt's once (:class:`SharedPrefix`), and each row's own
    positions in buffers allocated once for the whole decode.

    ``DynamicLayer`` concatenates, copying the whole cache at every step (for 8 rows of 1,000
    tokens, several times the model's weights in bytes); here a step writes its position in
    place. ``keys`` / ``values`` are views of the filled part, so attention reads no empty slots
    and needs no mask.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: int, capacity: int):
        super().__init__()
        _, heads, length, dim = keys.shape
        # one row holds the prompt in its own buffer: there is nothing to share, and attention
        # over one tensor is two products where a shared prompt takes four
        self._prefix = (keys, values) if rows > 1 else None
        own = capacity - length if rows > 1 else capacity
        self._keys = keys.new_empty(rows, heads, own, dim)
        self._values = values.new_empty(rows, heads, own, values.shape[-1])
        self.prefix_length = length if rows > 1 else 0
        if rows == 1:
            self._keys[:, :, :length], self._values[:, :, :length] = keys, values
        self.length = self.prompt_length = length
        self.device, self.is_initialized = keys.device, True
        self._view()

    def _view(self) -> None:
        own = self.length - self.prefix_length
        self.keys, self.values = self._keys[:, :, :own], self._values[:, :, :own]
        if self._prefix is not None:
            self.keys, self.values = SharedPrefix(self._prefix[0], self.keys), SharedPrefix(self._prefix[1], self.values)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        start = self.length - self.prefix_length
        end = start + key_states.shape[-2]
        if end > self._keys.shape[2]:
            raise RuntimeError(f"the KV cache holds {self.prefix_length + self._keys.shape[2]} positions; "
                               f"position {self.prefix_length + end} asked for")  # fmt: skip
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self.length = self.prefix_length + end
        self._view()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length = max(self.prompt_length, self.length + tokens_to_remove)
        self._view()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._keys = self._keys.repeat_interleave(repeats, dim=0)
        self._values = self._values.repeat_interleave(repeats, dim=0)
        self._view()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._view()


def preallocated_cache(prefilled: DynamicCache, rows: int, capacity: int, *, dtype: torch.dtype | None = None) -> DynamicCache:
    """The prompt's cache (one row) copied into ``rows`` rows of :class:`PreallocatedLayer`
    that hold ``capacity`` positions, in ``dtype`` (default: the prompt cache's)."""
    cache = DynamicCache()
    cache.layers = [PreallocatedLayer(layer.keys.to(dtype or layer.keys.dtype), layer.values.to(dtype or layer.values.dtype),
                                      rows, capacity) for layer in prefilled.layers]  # fmt: skip
    return cache


# Decoding keeps a copy of the model's matrices in oneDNN's blocked layout (below) only up to
# this size: the official 1B in bf16 would need 2.2 GB more
PACKED_COPY_LIMIT = 1 << 30
# the batch size oneDNN lays fp32 matrices out for: from 4 rows on, one layout served 1 and 8
# rows alike (the 1-row layout made 8 rows 1.7x slower)
PACK_ROWS = 8


class PackedLinear(torch.nn.Module):
    """An ``nn.Linear`` for inference whose matrix is held in oneDNN's blocked layout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_ROWS)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


@dataclass
class DecodingCopy:
    """What a CPU decodes with: a copy of the model's transformer that shares every parameter and
    buffer and attends with :func:`decode_attention`, its linear layers packed
    (:class:`PackedLinear`) where that fits, and then the output layer's speech rows and
    end-token row packed too (``speech``; else None).

    Why packed: one token of a batch of 1 to 8 rows reads every matrix once, so decoding runs at
    the speed the CPU streams weights. MKL's matrix-vector product (what ``nn.Linear`` calls) read
    them at about 16 GB/s on the AMD CPU of these measurements (fp32) and oneDNN's, from its own
    layout, at 25-32 GB/s: 1.4x faster at 1 row, 2-3x at 8 rows; bf16 likewise 2x.

    Why eager, not ``torch.compile``: with torch 2.13 on the CPU, inductor does not lower the
    packed products, and over the model itself it spent 7-14 CPU seconds compiling the step
    (2-3 s in later processes, from inductor's cache) and then decoded no faster than eager (the
    built-in model and the 100m preset, one row).
    """

    body: LlamaModel
    speech: PackedLinear | None
    stamp: tuple
    layers: "list[_LayerPlan] | None" = field(init=False)

    def forward(self, input_ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """The body over one new token per row (``input_ids`` (rows, 1)): the last hidden state.

        What ``LlamaModel.forward`` computes from the same weights, less what one decoding step
        does not need: the mask builder (one query attends to the whole cache), the keyword
        plumbing, output capture and module hooks around every layer, and half the rotary
        arithmetic (q and k rotate as one tensor, straight out of the fused product). Why by
        hand: that machinery is a sixth of a step of the built-in model (one row, 1 thread: 6.3
        ms through the body, 5.4 here; `step_speedup` of bench/lm.py). Equal to the body's own
        forward (tests/test_lm_sampling.py); any other model, or more than one token, runs
        through it.
        """
        body = self.body
        if input_ids.shape[1] != 1 or self.layers is None:
            return body(input_ids=input_ids, cache=cache, use_cache=True).last_hidden_state[:, -1]
        hidden = body.embed_tokens(input_ids)
        position = torch.tensor([[cache.get_seq_length()]], device=input_ids.device)
        cos, sin = body.rotary_emb(hidden, position_ids=position)
        cos, sin = cos[:, None], sin[:, None]
        rows = hidden.shape[0]
        for plan, layer in zip(self.layers, cache.layers):
            qkv = plan.qkv(plan.attention_norm(hidden))
            rotated = qkv[..., : plan.rotated].view(rows, 1, -1, plan.head_dim).transpose(1, 2)
            rotated = rotated * cos + rotate_half(rotated) * sin
            value = qkv[..., plan.rotated :].view(rows, 1, -1, plan.head_dim).transpose(1, 2)
            keys, values = layer.update(rotated[:, plan.heads :], value)
            out, _ = decode_attention(None, rotated[:, : plan.heads], keys, values, None, scaling=plan.scaling)
            hidden = hidden + plan.output(out.reshape(rows, 1, -1))
            gate, up = plan.gate_up(plan.mlp_norm(hidden)).split(plan.intermediate, dim=-1)
            hidden = hidden + plan.down(plan.act(gate) * up)
        return body.norm(hidden)[:, -1]

    def __post_init__(self):
        # a plan per layer where the body is a plain Llama (its own classes, whatever their
        # configuration); else None and the body steps itself
        body = self.body
        plain = type(body) is LlamaModel and all(
            type(layer) is LlamaDecoderLayer and type(layer.self_attn) is LlamaAttention
            and type(layer.mlp) is LlamaMLP and type(norm) is LlamaRMSNorm
            for layer in body.layers for norm in (layer.input_layernorm, layer.post_attention_layernorm, body.norm)
        )  # fmt: skip
        self.layers = [_LayerPlan.of(layer) for layer in body.layers] if plain else None


class _LayerPlan(NamedTuple):
    """What :meth:`DecodingCopy.forward` calls for one Llama layer, each matrix product as one
    call (the fused product where the copy is packed, else the separate layers concatenated)."""

    attention_norm: torch.nn.Module
    qkv: object
    output: object
    mlp_norm: torch.nn.Module
    gate_up: object
    down: object
    act: object
    heads: int
    rotated: int  # features of q and k together, which rotate
    head_dim: int
    scaling: float
    intermediate: int

    @classmethod
    def of(cls, layer: LlamaDecoderLayer) -> "_LayerPlan":
        attention, mlp = layer.self_attn, layer.mlp
        heads = attention.config.num_attention_heads
        return cls(
            layer.input_layernorm, _product(attention.q_proj, attention.k_proj, attention.v_proj), attention.o_proj,
            layer.post_attention_layernorm, _product(mlp.gate_proj, mlp.up_proj), mlp.down_proj, mlp.act_fn,
            heads, attention.q_proj.out_features + attention.k_proj.out_features, attention.head_dim,
            attention.scaling, mlp.gate_proj.out_features,
        )  # fmt: skip


def _product(*linears: torch.nn.Module):
    """One call that gives the outputs of ``linears`` (which read the same input) side by side."""
    if all(isinstance(m, FusedPart) for m in linears) and len({id(m.fused) for m in linears}) == 1:
        return linears[0].fused.packed.forward
    return lambda x: torch.cat([m(x) for m in linears], dim=-1)


_COPIES: "weakref.WeakKeyDictionary[LlamaForCausalLM, DecodingCopy]" = weakref.WeakKeyDictionary()


def decoding_copy(model: LlamaForCausalLM, vocab: SpeechVocab) -> DecodingCopy | None:
    """The model's :class:`DecodingCopy` (made once, remade when a weight changes), or None off
    the CPU. Its matrices are packed unless the model is in bf16 where the CPU emulates it, oneDNN
    is missing, or the packed copy would exceed ``PACKED_COPY_LIMIT``."""
    weight = model.get_output_embeddings().weight
    if weight.device.type != "cpu":
        return None
    linears = [m for m in model.model.modules() if isinstance(m, torch.nn.Linear)]
    size = sum(m.weight.numel() for m in linears) + (vocab.codebook_size + 1) * weight.shape[1]
    pack = (
        torch.backends.mkldnn.is_available()
        and (weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16 and fast_bf16("cpu")))
        and size * weight.element_size() <= PACKED_COPY_LIMIT
    )
    stamp = (pack, vocab.speech_offset, vocab.codebook_size, vocab.sge_id) + tuple(
        (p.data_ptr(), _version(p)) for p in itertools.chain((m.weight for m in linears), [weight])
    )
    copied = _COPIES.get(model)
    if copied is None or copied.stamp != stamp:
        with torch.no_grad():
            speech = None
            if pack:
                rows = torch.cat([weight[vocab.speech_offset : vocab.speech_offset + vocab.codebook_size],
                                  weight[vocab.sge_id : vocab.sge_id + 1]])  # fmt: skip
                speech = PackedLinear(rows)
            copied = DecodingCopy(_decoding_body(model.model, pack=pack), speech, stamp)
        _COPIES[model] = copied
    return copied


def _version(tensor: torch.Tensor) -> int:
    """How often ``tensor`` was changed in place; tensors made in inference mode keep no count."""
    return -1 if tensor.is_inference() else tensor._version


class FusedLinears:
    """Linear layers that read the same input (q, k and v; gate and up) as one packed product.

    The model's code calls each projection in turn; the first call computes all of them and the
    others return their share of that product for as long as the input is the same tensor. Why:
    at a batch of 1-8 rows each oneDNN product costs about 40 us however small it is: q, k and v of
    the built-in model took 151 us as three products and 41 us as one; gate and up 122 and 68.
    """

    def __init__(self, linears: Sequence[torch.nn.Linear]):
        self.packed = PackedLinear(torch.cat([linear.weight for linear in linears]))
        self.sizes = [linear.out_features for linear in linears]
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()

    def output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if x is not self._input:
            self._outputs, self._input = self.packed(x).split(self.sizes, dim=-1), x
        return self._outputs[index]


class FusedPart(torch.nn.Module):
    """One projection of a :class:`FusedLinears`."""

    def __init__(self, fused: FusedLinears, index: int):
        super().__init__()
        self.fused, self.index = fused, index
        self.in_features, self.out_features = fused.packed.in_features, fused.sizes[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.output(x, self.index)


# projections of one input, fused when packed: attention's q, k, v and the MLP's gate, up
FUSED_PROJECTIONS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def _decoding_body(body: LlamaModel, *, pack: bool) -> LlamaModel:
    """A copy of ``body`` sharing every parameter and buffer, attending with
    :func:`decode_attention`, its linear layers packed if ``pack`` (the projections of one input
    as one product, :class:`FusedLinears`)."""
    shared = {id(t): t for t in itertools.chain(body.parameters(), body.buffers())}
    twin = copy.deepcopy(body, shared)
    for module in list(twin.modules()) if pack else []:
        for names in FUSED_PROJECTIONS:
            linears = [getattr(module, name, None) for name in names]
            if all(isinstance(m, torch.nn.Linear) and m.bias is None for m in linears):
                fused = FusedLinears(linears)
                for index, name in enumerate(names):
                    setattr(module, name, FusedPart(fused, index))
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, PackedLinear(child.weight, child.bias))
    twin.config._attn_implementation = DECODE_ATTENTION
    return twin.eval()


DECODE_ATTENTION = "llasa_decode"


def decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' eager attention for one new position and no mask, each group of query heads
    multiplied with its shared key/value head in place (eager attention copies the cache once per
    query head first); the prompt's keys (:class:`SharedPrefix`) are multiplied with every row's
    queries at once. Any other call goes to ``sdpa``.

    Why: torch's CPU flash-attention kernel is built for many query positions; for one bf16
    position over 8 rows of 250-1,500 cached ones it took 2-13 ms a layer, these products 0.1-1 ms.
    """
    shared = isinstance(key, SharedPrefix)
    if query.shape[2] != 1 or attention_mask is not None or dropout or kwargs.get("output_attentions"):
        if shared:
            key, value = key.whole(), value.whole()
        key, value = key.to(query.dtype), value.to(query.dtype)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    scale = dim**-0.5 if scaling is None else scaling
    given, query = query.dtype, query.to(key.dtype)  # the cache may be wider than the model (fp32 on a CPU)
    if not shared:
        grouped = query.reshape(batch, key.shape[1], heads // key.shape[1], dim)
        scores = torch.matmul(grouped, key.transpose(-1, -2)) * scale
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
        return torch.matmul(probs, value).reshape(batch, 1, heads, dim).to(given), None
    kv_heads, prompt = key.prefix.shape[1], key.prefix.shape[2]
    group = heads // kv_heads
    grouped = query.reshape(batch, kv_heads, group, dim)
    # every row's queries of a key/value head against the prompt's keys of that head: one product
    across = grouped.transpose(0, 1).reshape(kv_heads, batch * group, dim)
    on_prompt = torch.matmul(across, key.prefix[0].transpose(-1, -2))  # (kv_heads, rows x group, prompt)
    on_own = torch.matmul(grouped, key.own.transpose(-1, -2))  # (rows, kv_heads, group, own)
    scores = torch.cat([on_prompt.reshape(kv_heads, batch, group, prompt).transpose(0, 1), on_own], dim=-1) * scale
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.own.dtype)
    from_prompt = torch.matmul(probs[..., :prompt].transpose(0, 1).reshape(kv_heads, batch * group, prompt), value.prefix[0])
    out = from_prompt.reshape(kv_heads, batch, group, dim).transpose(0, 1) + torch.matmul(probs[..., prompt:], value.own)
    return out.reshape(batch, 1, heads, dim).to(given), None


AttentionInterface.register(DECODE_ATTENTION, decode_attention)
AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)


def prefill(
    model: LlamaForCausalLM, prompt: torch.Tensor, *, via: LlamaForCausalLM | None = None, copy: DecodingCopy | None = None
) -> tuple[DynamicCache, torch.Tensor]:
    """Run ``prompt`` (1, L) through the model: its KV cache and last position's hidden state,
    in ``model``'s dtype. ``via``: the same model in a wider dtype to run it through instead
    (:func:`llasa.lm.model.prefill_copy`; its cache is narrowed to ``model``'s dtype); else
    ``copy``, the model as :func:`decoding_copy` holds it."""
    runner = via if via is not None else copy.body if copy is not None else model
    body = runner.model if isinstance(runner, LlamaForCausalLM) else runner
    cache = DynamicCache(config=model.config)
    with onednn_matmul():
        hidden = body(input_ids=prompt, cache=cache, use_cache=True).last_hidden_state[:, -1]
    dtype = model.get_input_embeddings().weight.dtype
    if hidden.dtype == dtype:
        return cache, hidden
    narrow = DynamicCache(config=model.config)
    for i, layer in enumerate(cache.layers):
        narrow.update(layer.keys.to(dtype), layer.values.to(dtype), i)
    return narrow, hidden.to(dtype)


def speech_logits(hidden: torch.Tensor, weight: torch.Tensor, vocab: SpeechVocab, *,
                  copy: DecodingCopy | None = None) -> torch.Tensor:  # fmt: skip
    """Logits over [speech codes..., SGE] only (the tokens a speech row may sample), from row
    slices of the output matrix ``weight`` (views, no copy): 65k rows instead of 193k for Llasa;
    from ``copy``'s packed rows where it has them (:func:`decoding_copy`)."""
    if copy is not None and copy.speech is not None:
        return copy.speech(hidden).float()
    offset, size = vocab.speech_offset, vocab.codebook_size
    speech = F.linear(hidden, weight[offset : offset + size])
    end = F.linear(hidden, weight[vocab.sge_id : vocab.sge_id + 1])
    return torch.cat([speech, end], dim=-1).float()


SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes the unsigned 64-bit seeds [0, 2**64)


def check_seed(seed, *, name: str = "seed") -> int | None:
    """``seed`` as an int (None stays None); a ValueError naming ``name`` when torch could not use it."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number from 0 to 2**64-1, got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be from 0 to 2**64-1 ({SEED_LIMIT - 1}), got {seed}")
    return int(seed)


def offset_seed(seed: int | None, offset: int) -> int | None:
    """The seed of chunk (or item) ``offset`` of a run seeded with ``seed``: ``seed + offset``,
    wrapped so that every valid seed gives valid seeds for all its chunks."""
    return None if seed is None else (int(seed) + int(offset)) % SEED_LIMIT


def row_seed(seed: int, row: int) -> int:
    """The seed of row ``row``'s random stream: ``seed`` itself for row 0 (so one row, or a
    server request, draws what a plain seeded run draws), otherwise one derived from both."""
    if row == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed) % 2**63, int(row)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1  # a non-negative 63-bit seed


def sample_from(
    probs: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per row by inverting the CDF with a single uniform number, taken from
    ``generator``, or from ``generator[i]`` for row i when it is a sequence (one per row).

    Why not ``torch.multinomial``: on CPU it draws one random number per category, 3 ms per
    row for 65,537 speech tokens, which made sampling cost more than a 100M model's forward.
    A token of probability 0 (cut by top-k / top-p) can never be drawn: u is in (0, total].
    """
    cdf = probs.cumsum(dim=-1)
    if generator is None or isinstance(generator, torch.Generator):
        uniform = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device)
    else:
        if len(generator) != probs.shape[0]:
            raise ValueError(f"{len(generator)} random generators for {probs.shape[0]} rows")
        uniform = torch.cat([torch.rand(1, 1, generator=g, device=probs.device) for g in generator])
    u = (1.0 - uniform) * cdf[:, -1:]
    choice = torch.searchsorted(cdf, u).squeeze(1).clamp_max(probs.shape[-1] - 1)
    return choice, probs.gather(1, choice[:, None]).squeeze(1).log()


def generate_codes(
    model: LlamaForCausalLM,
    vocab: SpeechVocab,
    prompt_ids: Sequence[int],
    *,
    n: int = 1,
    params: SamplingParams = SamplingParams(),
    seed: int | None = None,
    max_new_tokens: int | None = None,
    min_new_tokens: int = 0,
    progress: bool = False,
) -> list[np.ndarray]:
    """Sample ``n`` speech-code sequences after one shared prefill (the whole run of a decoder)."""
    decoder = SpeechDecoder(model, vocab, prompt_ids, n=n, params=params, seed=seed, max_new_tokens=max_new_tokens,
                            min_new_tokens=min_new_tokens)  # fmt: skip
    return decoder.run(progress=progress)
