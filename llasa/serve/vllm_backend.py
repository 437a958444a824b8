"""The LM on vLLM (GPU machines): Llasa is a plain Llama, so vLLM's engine serves it unchanged.

Same contract as :class:`llasa.serve.scheduler.Scheduler` (``submit``, ``stats``, ``close``,
events on the job's queue); vLLM does the batching (``max_num_seqs = max_batch``). Only the
speech tokens and the end token may be sampled (``allowed_token_ids``), as in SpeechDecoder.
Repetition-aware sampling needs the draw before it is kept, which vLLM's sampler does not
expose: such requests are refused.
vllm is imported when this backend is built, never by the rest of the package.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import numpy as np

from llasa.lm.model import CONTEXT_LENGTH
from llasa.lm.vocab import SpeechVocab
from llasa.serve.scheduler import ChunkEnd, Codes, Done, Failed, Job, QueueFull

log = logging.getLogger("llasa.serve")


class VLLMBackend:
    def __init__(
        self,
        model_path: str,
        vocab: SpeechVocab,
        *,
        max_batch: int = 8,
        queue_size: int = 32,
        context_length: int = CONTEXT_LENGTH,
        gpu_memory_utilization: float = 0.8,
        dtype: str = "auto",
    ):
        try:
            import vllm
        except ImportError:
            raise ValueError("--backend vllm needs the vllm package (pip install vllm) on a CUDA machine") from None
        self._vllm = vllm
        self.vocab = vocab
        self.max_batch = max_batch
        self.queue_size = queue_size
        args = vllm.EngineArgs(model=str(model_path), max_model_len=context_length, max_num_seqs=max_batch,
                               gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                               skip_tokenizer_init=True)  # fmt: skip
        self.engine = vllm.LLMEngine.from_engine_args(args)
        self._allowed = [*range(vocab.speech_offset, vocab.speech_offset + vocab.codebook_size), vocab.sge_id]
        self._new: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}  # vLLM request id -> job
        self._cond = threading.Condition()
        self._closed = False
        self._count = 0
        self._thread = threading.Thread(target=self._run, name="llasa-vllm", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        if job.params.repetition_aware:
            raise ValueError("repetition-aware sampling (ras_window) is not available with the vLLM backend: "
                             "send ras_window 0, or serve with the built-in backend")  # fmt: skip
        with self._cond:
            if self._closed:
                raise RuntimeError("the backend is closed")
            if len(self._new) + len(self._jobs) >= self.max_batch + self.queue_size:
                raise QueueFull(f"the server is busy: {len(self._jobs)} requests are in flight; retry later")
            self._new.append(job)
            self._cond.notify()

    def stats(self) -> dict:
        return {"alive": self._thread.is_alive(), "active": len(self._jobs), "waiting": len(self._new),
                "max_batch": self.max_batch, "queue_size": self.queue_size}  # fmt: skip

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _add(self, job: Job) -> None:
        params = job.params
        sampling = self._vllm.SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or -1,  # -1: off (older vLLM refuses 0)
            repetition_penalty=params.repetition_penalty,
            seed=job.chunk_seed(),
            max_tokens=job.budgets[job.chunk],
            min_tokens=job.minimums[job.chunk],
            stop_token_ids=[self.vocab.sge_id],
            allowed_token_ids=self._allowed,
            detokenize=False,
            output_kind=self._vllm.sampling_params.RequestOutputKind.DELTA,
        )
        self._count += 1
        request_id = str(self._count)
        self.engine.add_request(request_id, {"prompt_token_ids": job.prompts[job.chunk]}, sampling)
        self._jobs[request_id] = job

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or self._new or self._jobs):
                    self._cond.wait()
                if self._closed:
                    break
                new, self._new = list(self._new), collections.deque()
            for job in new:
                self._add(job)
            now = time.monotonic()
            gone = [rid for rid, job in self._jobs.items() if job.cancelled or job.expired(now)]
            if gone:
                self.engine.abort_request(gone)
                for rid in gone:
                    job = self._jobs.pop(rid)
                    if not job.cancelled:
                        job.send(Failed(504, f"the request timed out after {job.timeout:g} s"))
            if not self._jobs:
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # keep serving: fail what was in flight
                log.exception("vLLM step failed")
                self.engine.abort_request(list(self._jobs))
                for job in self._jobs.values():
                    job.send(Failed(500, f"internal error while decoding: {exc}"))
                self._jobs.clear()
                continue
            for out in outputs:
                job = self._jobs.get(out.request_id)
                if job is None:
                    continue
                ids = [t for t in out.outputs[0].token_ids if t != self.vocab.sge_id]
                if ids:
                    job.send(Codes(job.chunk, np.asarray(ids, dtype=np.int64) - self.vocab.speech_offset))
                if out.finished:
                    del self._jobs[out.request_id]
                    job.send(ChunkEnd(job.chunk, "length" if out.outputs[0].finish_reason == "length" else "end"))
                    if job.chunk + 1 < len(job.prompts):
                        job.chunk += 1
                        self._add(job)
                    else:
                        job.send(Done())
        for job in [*self._new, *self._jobs.values()]:
            job.send(Failed(503, "the server is shutting down"))
