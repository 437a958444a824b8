"""The thread that owns the LM: it admits requests and decodes all of them in one batch.

Continuous batching over transformers' ``DynamicCache``: a request is prefilled alone
(batch 1, no padding), then its cache is merged into the running batch, left-padded to the
batch's length, with an attention mask hiding the padding and per-row position ids. Every
step runs one forward pass for all live rows, whatever their prompt lengths and however
far along they are; a row that ends leaves the batch, and the columns that were padding
for every remaining row are cut away. Sampling is per row, with the request's own
sampler and random generator, so a seeded request draws exactly what
``SpeechDecoder(n=1, seed=...)`` (and so ``Synthesizer.tts``) draws for it alone.

A request with several text chunks (long input, split at sentences) keeps its slot: when a
chunk ends, its next chunk is prefilled ahead of new requests, so audio keeps flowing.

Results travel as events on the request's asyncio queue (``Codes`` while decoding, then
``ChunkEnd`` per chunk and ``Done``, or ``Failed``), put there thread-safely for the server's
event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache, LlamaForCausalLM

from llasa.lm.model import CONTEXT_LENGTH
from llasa.lm.sampling import Sampler, SamplingParams, check_seed, decoding_copy, offset_seed, prefill, speech_logits
from llasa.lm.vocab import SpeechVocab, codes_from_ids

log = logging.getLogger("llasa.serve")

# codes are handed to the request in small groups: one event per token per row would make
# the event loop wake thousands of times a second for no earlier audio (the streaming codec
# needs a few dozen codes per chunk anyway)
EMIT_EVERY = 8


class Codes(NamedTuple):
    chunk: int
    codes: np.ndarray


class ChunkEnd(NamedTuple):
    chunk: int
    stop_reason: str  # "end" (the model ended the speech) or "length" (the token budget ran out)


class Done(NamedTuple):
    pass


class Failed(NamedTuple):
    status: int  # the HTTP status the server answers with
    message: str


class QueueFull(Exception):
    """Raised by ``submit`` when the waiting queue is full (the server answers 429)."""


class Job:
    """One request: the prompt of each text chunk, decoded one chunk after the other."""

    def __init__(
        self,
        prompts: Sequence[Sequence[int]],
        budgets: Sequence[int],
        params: SamplingParams = SamplingParams(),
        *,
        seed: int | None = None,
        minimums: Sequence[int] | None = None,
        timeout: float = 120.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        if not prompts or len(prompts) != len(budgets):
            raise ValueError("a job needs one token budget per prompt, and at least one prompt")
        self.prompts = [[int(t) for t in p] for p in prompts]
        self.budgets = [int(b) for b in budgets]
        # codes before the end token may be sampled (Synthesizer.min_new_tokens), per chunk
        self.minimums = [int(m) for m in minimums] if minimums is not None else [0] * len(budgets)
        self.params = params
        self.seed = check_seed(seed)
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.events: asyncio.Queue = asyncio.Queue()
        self._loop = loop or asyncio.get_running_loop()
        self.chunk = 0  # the chunk being (or next to be) decoded
        self.cancelled = False

    def send(self, event) -> None:
        self._loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        """Free the slot (the client went away): the scheduler drops the job at its next step."""
        self.cancelled = True

    def expired(self, now: float) -> bool:
        return now > self.deadline

    def chunk_seed(self) -> int | None:
        # as Synthesizer.tts seeds its chunks, so the server reproduces the library
        return offset_seed(self.seed, self.chunk)


@dataclass
class _Row:
    job: Job
    position: int  # position id of the next token
    budget: int
    minimum: int
    sampler: Sampler
    generator: torch.Generator | None
    history: torch.Tensor  # (1, L): the codes seen so far (a voice's included), for the repetition penalty and RAS
    produced: int = 0
    pending: list[int] = field(default_factory=list)


class Scheduler:
    """Batches the decoding of concurrent requests on one model; ``max_batch=1`` serves one at a time."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        vocab: SpeechVocab,
        *,
        max_batch: int = 8,
        queue_size: int = 32,
        context_length: int = CONTEXT_LENGTH,
        prefill_model: LlamaForCausalLM | None = None,
    ):
        if max_batch < 1 or queue_size < 1:
            raise ValueError(f"max_batch and queue_size must be >= 1, got {max_batch} and {queue_size}")
        self.model = model.eval()
        self.prefill_model = prefill_model  # prompts run through it (SpeechDecoder's prefill_model)
        self.vocab = vocab
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.context_length = context_length
        self.device = model.get_input_embeddings().weight.device
        self._weight = model.get_output_embeddings().weight
        # on a CPU, steps read the packed copy SpeechDecoder decodes with (its masked steps attend
        # through sdpa, as the model does); the weights do not change while the server runs
        self._copy = decoding_copy(self.model, vocab)

        self._waiting: collections.deque[Job] = collections.deque()
        self._continuing: collections.deque[Job] = collections.deque()  # jobs between two of their chunks
        self._cond = threading.Condition()
        self._closed = False
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (B, T): 1 where the cache holds a real token
        self._hidden: torch.Tensor | None = None  # (B, hidden): the last position's output of each row
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name="llasa-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ requests
    def submit(self, job: Job) -> None:
        for prompt, budget in zip(job.prompts, job.budgets):
            if len(prompt) + budget > self.context_length:
                raise ValueError(
                    f"a prompt of {len(prompt)} tokens and a budget of {budget} exceed the {self.context_length}-token context"
                )
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            if len(self._waiting) >= self.queue_size:
                raise QueueFull(f"the server is busy: {len(self._waiting)} requests are already waiting; retry later")
            self._waiting.append(job)
            self._cond.notify()

    def stats(self) -> dict:
        return {
            "alive": self._thread.is_alive(),
            "active": len(self._rows),
            "waiting": len(self._waiting),
            "max_batch": self.max_batch,
            "queue_size": self.queue_size,
            "steps": self.steps,
        }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._closed or self._waiting or self._continuing or self._rows):
                        self._cond.wait()
                    if self._closed:
                        break
                self._drop_finished_jobs()
                self._admit()
                if self._rows:
                    try:
                        self._step()
                    except Exception as exc:  # a failing forward must not kill the server: fail this batch only
                        log.exception("decoding step failed")
                        for row in self._rows:
                            row.job.send(Failed(500, f"internal error while decoding: {exc}"))
                        self._reset()
        for job in [*self._waiting, *self._continuing, *(r.job for r in self._rows)]:
            job.send(Failed(503, "the server is shutting down"))

    def _drop_finished_jobs(self) -> None:
        """Cancelled and timed-out jobs leave the queue and the batch."""
        now = time.monotonic()
        with self._cond:
            for queue in (self._waiting, self._continuing):
                for job in [j for j in queue if j.cancelled or j.expired(now)]:
                    queue.remove(job)
                    self._fail_if_expired(job, now)
        gone = [b for b, row in enumerate(self._rows) if row.job.cancelled or row.job.expired(now)]
        if gone:
            jobs = [self._rows[b].job for b in gone]
            self._remove(gone)  # before telling the client, which may then look at the stats
            for job in jobs:
                self._fail_if_expired(job, now)

    @staticmethod
    def _fail_if_expired(job: Job, now: float) -> None:
        if not job.cancelled and job.expired(now):
            job.send(Failed(504, f"the request timed out after {job.timeout:g} s"))

    def _admit(self) -> None:
        while len(self._rows) < self.max_batch:
            with self._cond:
                if self._continuing:
                    job = self._continuing.popleft()
                elif self._waiting:
                    job = self._waiting.popleft()
                else:
                    return
            try:
                self._prefill(job)
            except Exception as exc:
                log.exception("prefill failed")
                job.send(Failed(500, f"internal error while reading the prompt: {exc}"))

    def _prefill(self, job: Job) -> None:
        prompt = job.prompts[job.chunk]
        ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        cache, hidden = prefill(self.model, ids, via=self.prefill_model, copy=self._copy)
        seed = job.chunk_seed()
        params = job.params
        row = _Row(
            job=job,
            position=len(prompt),
            budget=job.budgets[job.chunk],
            minimum=min(job.minimums[job.chunk], job.budgets[job.chunk]),
            sampler=Sampler(params),
            generator=None if seed is None else torch.Generator(device=self.device).manual_seed(int(seed)),
            history=torch.tensor([codes_from_ids(prompt, self.vocab)], dtype=torch.long, device=self.device).reshape(1, -1),
        )
        self._merge(cache, hidden, len(prompt))
        self._rows.append(row)

    def _merge(self, cache: DynamicCache, hidden: torch.Tensor, length: int) -> None:
        """Add a prefilled row to the batch, left-padding whichever side is shorter."""
        mask = torch.ones(1, length, dtype=torch.long, device=self.device)
        if not self._rows:
            self._cache, self._mask, self._hidden = cache, mask, hidden
            return
        width = max(self._mask.shape[1], length)
        merged = DynamicCache(config=self.model.config)
        for i, (old, new) in enumerate(zip(self._cache.layers, cache.layers)):
            keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)])
            values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)])
            merged.update(keys, values, i)
        self._cache = merged
        self._mask = torch.cat([_left_pad(self._mask, width, dim=1), _left_pad(mask, width, dim=1)])
        self._hidden = torch.cat([self._hidden, hidden])

    def _remove(self, gone: list[int]) -> None:
        keep = [b for b in range(len(self._rows)) if b not in set(gone)]
        self._rows = [self._rows[b] for b in keep]
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self._hidden = self._hidden[index]
        # columns that are padding for every remaining row cost attention for nothing: cut them
        lead = int((self._mask.cumsum(dim=1) == 0).all(dim=0).sum())
        if lead:
            trimmed = DynamicCache(config=self.model.config)
            for i, layer in enumerate(self._cache.layers):
                trimmed.update(layer.keys[:, :, lead:], layer.values[:, :, lead:], i)
            self._cache = trimmed
            self._mask = self._mask[:, lead:]

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._hidden = [], None, None, None

    def _step(self) -> None:
        hidden = self._hidden
        logits = speech_logits(hidden, self._weight, self.vocab, copy=self._copy)
        end = self.vocab.codebook_size  # local index of <|SPEECH_GENERATION_END|>
        tokens, finished = [], []
        for b, row in enumerate(self._rows):
            scores = logits[b : b + 1]
            if row.produced < row.minimum:
                scores = scores.clone()
                scores[0, end] = float("-inf")
            token = int(row.sampler(scores, row.history, row.generator)[0][0])
            tokens.append(token)
            if token == end:
                self._end_chunk(row, "end")
                finished.append(b)
                continue
            row.pending.append(token)
            row.produced += 1
            row.history = torch.cat([row.history, torch.tensor([[token]], device=self.device)], dim=1)
            if row.produced >= row.budget:
                self._end_chunk(row, "length")
                finished.append(b)
            elif len(row.pending) >= EMIT_EVERY:
                self._emit(row)
        self.steps += 1

        if finished:
            done = set(finished)
            tokens = [t for b, t in enumerate(tokens) if b not in done]
            self._remove(finished)
        if not self._rows:
            return
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None] + self.vocab.speech_offset
        positions = torch.tensor([row.position for row in self._rows], dtype=torch.long, device=self.device)[:, None]
        self._mask = torch.cat([self._mask, torch.ones(len(self._rows), 1, dtype=torch.long, device=self.device)], dim=1)
        body = self.model.model if self._copy is None else self._copy.body
        out = body(input_ids=ids, attention_mask=self._mask, position_ids=positions, cache=self._cache, use_cache=True)
        self._hidden = out.last_hidden_state[:, -1]
        for row in self._rows:
            row.position += 1

    def _emit(self, row: _Row) -> None:
        if row.pending:
            row.job.send(Codes(row.job.chunk, np.asarray(row.pending, dtype=np.int64)))
            row.pending = []

    def _end_chunk(self, row: _Row, reason: str) -> None:
        job = row.job
        self._emit(row)
        job.send(ChunkEnd(job.chunk, reason))
        if job.chunk + 1 < len(job.prompts):
            job.chunk += 1
            with self._cond:
                self._continuing.append(job)
        else:
            job.send(Done())


def _left_pad(x: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """Zeros in front of ``x`` along ``dim`` (the sequence axis) up to ``width``."""
    missing = width - x.shape[dim]
    if missing == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [missing, 0]
    return F.pad(x, pad)
