"""Verifier-guided inference-time search (Llasa paper §5.5): best-of-N, beam search over
partial sequences, and the paper's best recipe, "Partial PRM (spk sim) + ORM (WER)".

* ``best-of-n`` (outcome reward, ORM): N candidates after one shared prefill, all decoded to
  the end, scored once; the best total wins.
* ``beam`` (process reward, PRM): B x M rows are sampled; every K tokens each live row's
  partial audio is decoded and scored with ``partial=True``, the B best rows are kept and each
  is duplicated into M continuations (KV cache included, see ``SpeechDecoder.select``). A row
  that ends leaves the search for a pool of finished candidates; the search stops when no row
  is live. The pool is then ranked by the final (outcome) verifiers.
* ``prm-sim+orm-wer``: ``beam`` with speaker similarity as the PRM and WER as the ORM.

Verifiers come from :mod:`llasa.verify`; several are combined with weights after normalising
each one's totals within the batch (``CombinedVerifier``). A voice's speaker reference is the
caller's ``prompt_audio`` (the original clip, as Seed-TTS-eval's sim-o) or else the codec's
resynthesis of the voice codes. Without any voice, ``sim`` has nothing to compare with and the
search refuses to start, naming the verifiers that can work without one.

Sampling and judging overlap: the LM samples on the calling thread while one worker thread
decodes finished rows to audio and scores them (the LM's torch ops, the codec's and the ASR's
release the GIL). A best-of-N row is judged as soon as it ends, so most of the judging hides
behind the rows still sampling; beam search judges its finished pool the same way, and the
candidates of one chunk of a long text are judged while the next chunk samples. Verifiers
that score each candidate alone (``per_candidate``) are called piece by piece; a combination of
them is normalised over the whole batch at the end, as if it had been scored at once.

Budget: ``max_tokens`` caps the speech tokens sampled in one call (every live row's token
counts; duplicated prefixes are free, as the cache is copied, not recomputed). When the next
step would overspend, the live rows are cut where they are (``stop_reason="budget"``) and
judged with the finished ones. Long text is searched chunk by chunk; the budget is shared
evenly between the chunks. Every call reports what it spent (:class:`Spent`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from tqdm.auto import tqdm

from llasa import audio as audio_io
from llasa.lm.sampling import SamplingParams, check_seed, offset_seed
from llasa.verify import CombinedVerifier, Score, Verifier, VerifyRequest, get_verifier, parse_weights

STRATEGIES = ("best-of-n", "beam", "prm-sim+orm-wer")
# a model's recommended search, in its config.json beside llasa_sampling: Searcher's arguments, e.g.
# {"strategy": "best-of-n", "n": 4, "verifiers": "wer", "verifier_options": {"wer": {"asr": "pocketsphinx"}}}.
# bench/default_search.py decides it: a search is recommended when it cuts WER by a quarter, as a
# judge that is not its verifier hears it, for at most twice the time of one sample
SEARCH_KEY = "llasa_search"
# verifiers that compare with a voice prompt and so cannot run without one
NEEDS_VOICE = frozenset({"sim", "emotion"})

VerifierSpec = str | Verifier | Mapping[str | Verifier, float]


@dataclass
class Candidate:
    """One finished (or cut) sequence: its codes, audio and the final verifier's score."""

    codes: np.ndarray
    audio: np.ndarray
    stop_reason: str  # "end", "length" (the chunk's token cap) or "budget"
    logprob: float
    score: float = float("nan")
    components: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "tokens": int(len(self.codes)),
            "seconds": round(len(self.audio) / audio_io.SAMPLE_RATE, 3),
            "stop_reason": self.stop_reason,
            "logprob": round(self.logprob, 4),
            "score": self.score,
            "components": self.components,
            "info": self.info,
        }


@dataclass
class BeamStep:
    """One PRM round: the live rows (indices into the decoder's rows), their partial scores, the rows kept."""

    tokens: int  # length of the partial sequences that were scored
    rows: list[int]
    scores: list[float]
    kept: list[int]


@dataclass
class ChunkResult:
    text: str
    candidates: list[Candidate]
    chosen: int
    steps: list[BeamStep] = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]


@dataclass
class Spent:
    """Compute used by one search call."""

    tokens: int = 0  # speech tokens sampled, over all rows
    candidates: int = 0  # finished (or cut) sequences judged by the final verifier
    verifier_calls: int = 0  # batches scored
    verifier_clips: int = 0  # waveforms scored (each by every verifier part)
    verifier_audio_seconds: float = 0.0
    screened_out: int = 0  # candidates a verifier's screen rejected before its costly model ran
    lm_seconds: float = 0.0  # sampling, on the calling thread
    codec_seconds: float = 0.0  # decoding to audio, on the judging thread
    verifier_seconds: float = 0.0  # scoring, on the judging thread
    wait_seconds: float = 0.0  # the calling thread idle, waiting for judgements: the part not overlapped


@dataclass
class SearchResult:
    """The chosen audio (chunks joined) and, per chunk, every candidate with its scores."""

    audio: np.ndarray
    sample_rate: int
    strategy: str
    chunks: list[ChunkResult]
    spent: Spent

    @property
    def codes(self) -> list[np.ndarray]:
        """The chosen codes of each chunk."""
        return [chunk.best.codes for chunk in self.chunks]

    def to_dict(self) -> dict:
        """Everything but the audio, for a JSON report next to the output."""
        spent = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self.spent).items()}
        return {
            "strategy": self.strategy,
            "spent": spent,
            "chunks": [
                {
                    "text": c.text,
                    "chosen": c.chosen,
                    "candidates": [cand.to_dict() for cand in c.candidates],
                    "steps": [asdict(s) for s in c.steps],
                }
                for c in self.chunks
            ],
        }


class Nested(NamedTuple):
    """What best-of-k would have returned, read off a best-of-N result (see ``Searcher.best_of_first``)."""

    audio: np.ndarray
    chosen: list[int]  # per chunk, the candidate picked among the first k
    tokens: int  # speech tokens the first k candidates cost (the END token included, as ``Spent.tokens``)


def _in_pieces(verifier: Verifier) -> bool:
    """Whether ``verifier`` may score a batch piece by piece (see the module docstring)."""
    if isinstance(verifier, CombinedVerifier):
        return verifier.parts_per_candidate
    return bool(getattr(verifier, "per_candidate", False))


def _parts(verifier: Verifier) -> list[Verifier]:
    return [part for part, _ in getattr(verifier, "parts", [(verifier, 1.0)])]


def _rejected(score: Score) -> bool:
    return any(key == "rejected" or key.endswith(".rejected") for key in score.info)


def _names(spec: VerifierSpec) -> list[str]:
    if isinstance(spec, str):
        return list(parse_weights(spec))
    if isinstance(spec, Mapping):
        return [v if isinstance(v, str) else v.name for v in spec]
    return [spec.name]


class Searcher:
    """A search strategy with its verifiers loaded once, applied to any number of requests.

    ``verifiers``: the scoring verifiers ("wer", "sim:1,wer:0.5", a Verifier, or a mapping of
    verifier -> weight); for ``beam`` they are the process reward. ``final_verifiers``: the
    outcome reward that ranks beam search's finished pool (default: ``verifiers``).
    ``verifier_options``: constructor kwargs by verifier name, e.g. {"wer": {"model": whisper_dir}}.
    ``verifier_cache``: verifiers by name to use (and add to) instead of building new ones, so that
    several searchers, or a search and an evaluation, load each model once.
    ``max_rows``: the most rows (:attr:`rows`) this searcher may decode side by side; None: no cap.
    """

    def __init__(
        self,
        strategy: str = "best-of-n",
        *,
        verifiers: VerifierSpec | None = None,
        final_verifiers: VerifierSpec | None = None,
        n: int = 8,
        beam_width: int = 2,
        expand: int = 4,
        step_tokens: int = 50,
        max_tokens: int | None = None,
        normalize: str = "zscore",
        verifier_options: Mapping[str, dict] | None = None,
        verifier_cache: dict[str, Verifier] | None = None,
        max_rows: int | None = None,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown search strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if strategy == "prm-sim+orm-wer":
            if verifiers is not None or final_verifiers is not None:
                raise ValueError("'prm-sim+orm-wer' fixes its verifiers (sim, then wer); use --search beam to choose them")
            verifiers, final_verifiers = "sim", "wer"
        if strategy == "best-of-n" and final_verifiers is not None:
            raise ValueError("final_verifiers rank beam search's finished pool; best-of-n has one verifier step (verifiers)")
        verifiers = "wer" if verifiers is None else verifiers
        for name, value in (("n", n), ("beam_width", beam_width), ("expand", expand), ("step_tokens", step_tokens)):
            if int(value) < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1 (or None for no cap), got {max_tokens}")
        self.strategy = strategy
        self.n, self.beam_width, self.expand, self.step_tokens = int(n), int(beam_width), int(expand), int(step_tokens)
        if max_rows is not None and self.rows > max_rows:
            # before the verifiers load: a request for too many rows fails at once
            shape = f"beam_width {self.beam_width} x expand {self.expand}" if self.beam else f"n={self.n}"
            raise ValueError(f"a search of {self.rows} candidates ({shape}) exceeds the limit of {max_rows}")
        self.max_tokens = max_tokens
        self._options = dict(verifier_options or {})
        # shared by the PRM and ORM, so each model loads once
        self._instances: dict[str, Verifier] = {} if verifier_cache is None else verifier_cache
        self.verifier = self._build(verifiers, normalize)
        self.final_verifier = self.verifier if final_verifiers is None else self._build(final_verifiers, normalize)
        self.voice_verifiers = sorted(
            NEEDS_VOICE.intersection(_names(verifiers) + ([] if final_verifiers is None else _names(final_verifiers)))
        )
        if self.beam and not self.verifier.supports_partial:
            raise ValueError(f"verifier '{self.verifier.name}' cannot score partial audio, so it cannot guide beam search")

    @classmethod
    def of_model(cls, model, *, wer_options: dict | None = None, **kwargs) -> "Searcher | None":
        """The search ``model`` recommends (``llasa_search`` in its config), or None. ``wer_options``
        (e.g. ``{"asr": "faster-whisper"}``), when given, replace its wer verifier's; ``kwargs`` go to
        the Searcher (``max_rows``, ``verifier_cache``)."""
        recommended = getattr(model.config, SEARCH_KEY, None)
        if recommended is None:
            return None
        if not isinstance(recommended, Mapping):
            raise ValueError(f"{SEARCH_KEY} in the model's config must map Searcher's arguments, got {recommended!r}")
        options = dict(recommended)
        if wer_options:
            options["verifier_options"] = {**options.get("verifier_options", {}), "wer": wer_options}
        try:
            return cls(options.pop("strategy", "best-of-n"), **options, **kwargs)
        except TypeError as exc:
            raise ValueError(f"{SEARCH_KEY} in the model's config: {exc}") from None

    def describe(self) -> str:
        """The search in a few words, e.g. "best-of-4 with the wer (pocketsphinx) verifier"."""
        shape = f"best-of-{self.n}" if not self.beam else f"{self.strategy} ({self.beam_width} x {self.expand})"
        asr = [f"{v.name} ({v.asr_name})" if hasattr(v, "asr_name") else v.name for v in _parts(self.final_verifier)]
        return f"{shape} with the {', '.join(asr)} verifier"

    @property
    def verifier_parts(self) -> list[Verifier]:
        """Every verifier it scores with, once each: the parts of a combination, the process
        verifier's and the outcome verifier's."""
        parts = {id(v): v for v in (*_parts(self.verifier), *_parts(self.final_verifier))}
        return list(parts.values())

    def load(self) -> None:
        """Load every verifier's model now rather than at the first candidate, so that a missing
        package (MissingExtra, naming its extra) is raised before any sampling."""
        for verifier in self.verifier_parts:
            if hasattr(verifier, "load"):
                verifier.load()

    @property
    def beam(self) -> bool:
        return self.strategy != "best-of-n"

    @property
    def rows(self) -> int:
        """Rows decoded side by side: the candidates of best-of-N, B x M for beam search."""
        return self.beam_width * self.expand if self.beam else self.n

    def _instance(self, name: str) -> Verifier:
        if name not in self._instances:
            self._instances[name] = get_verifier(name, **self._options.get(name, {}))
        return self._instances[name]

    def _build(self, spec: VerifierSpec, normalize: str) -> Verifier:
        if isinstance(spec, str):
            spec = parse_weights(spec)
        if not isinstance(spec, Mapping):
            return spec
        weights = {self._instance(v) if isinstance(v, str) else v: w for v, w in spec.items()}
        if len(weights) == 1 and next(iter(weights.values())) > 0:
            # one verifier ranks the same after normalisation: keep its raw, readable totals
            return next(iter(weights))
        return CombinedVerifier(weights, normalize=normalize)

    def best_of_first(self, result: SearchResult, k: int) -> Nested:
        """Best-of-k read off this searcher's best-of-N ``result`` (k <= N), with no new sampling.

        Candidate r of a chunk is the same whatever N (each row has its own random stream, see
        ``SpeechDecoder``), so best-of-k would have judged exactly the first k candidates; they
        are re-ranked among themselves (a combined verifier normalises over those k alone).
        """
        if self.beam:
            raise ValueError(f"'{self.strategy}' results do not nest: which rows live on depends on every verifier round")
        if self.max_tokens is not None:
            raise ValueError("a token budget cuts the rows where the budget ran out, so best-of-N with a budget does not "
                             "contain best-of-k: search without max_tokens")  # fmt: skip
        if not 1 <= k <= self.n:
            raise ValueError(f"k must be between 1 and N={self.n}, got {k}")
        chosen = []
        for chunk in result.chunks:
            first = chunk.candidates[:k]
            if isinstance(self.final_verifier, CombinedVerifier):
                totals = self.final_verifier.combine([c.components for c in first])
            else:
                totals = [c.score for c in first]
            chosen.append(int(np.argmax(totals)))  # first of equals, as in the search itself
        audio = audio_io.crossfade_concat([c.candidates[j].audio for c, j in zip(result.chunks, chosen)], result.sample_rate)
        tokens = sum(len(c.codes) + (c.stop_reason == "end") for chunk in result.chunks for c in chunk.candidates[:k])
        return Nested(audio, chosen, tokens)

    # ------------------------------------------------------------------ search
    def __call__(
        self,
        synth,
        text: str,
        voice=None,
        *,
        prompt_audio: np.ndarray | None = None,
        language: str = "en",
        params: SamplingParams = SamplingParams(),
        seed: int | None = None,
        progress: bool = False,
    ) -> SearchResult:
        """Search for the best rendering of ``text`` (in ``voice``) with ``synth`` (a Synthesizer)."""
        seed = check_seed(seed)
        if self.voice_verifiers and voice is None and prompt_audio is None:
            raise ValueError(
                f"verifier(s) {', '.join(self.voice_verifiers)} compare with a voice prompt, and none was given: "
                "pass a voice, or search with verifiers that need none (wer, dnsmos, sanity)"
            )
        if prompt_audio is None and voice is not None:
            prompt_audio = synth.codec.decode(voice.codes)
        chunks = synth.split_text(text, voice)
        share = None if self.max_tokens is None else self.max_tokens // len(chunks)
        if share is not None and share < self.rows:
            raise ValueError(
                f"max_tokens={self.max_tokens} cannot sample one token for each of {self.rows} rows "
                f"in each of {len(chunks)} chunk(s): raise it or search fewer candidates"
            )
        spent = Spent()
        # one judging thread: every codec and verifier call runs there, one at a time, so no model
        # is used from two threads at once
        worker = ThreadPoolExecutor(1, thread_name_prefix="llasa-judge")
        jobs: list[Future] = []  # every chunk's, so that a judging error stops the sampling at once
        try:
            pools = []
            for i, chunk in enumerate(tqdm(chunks, desc="chunks", unit="chunk", disable=not progress or len(chunks) < 2)):
                prompt_text = voice.text if voice is not None else None
                request = VerifyRequest(text=chunk, prompt_audio=prompt_audio, prompt_text=prompt_text, language=language)
                chunk_seed = offset_seed(seed, i)
                run = _Run(self, synth, voice, request, share, spent, progress, worker, jobs)
                decoder = synth.decoder(chunk, voice, n=self.rows, params=params, seed=chunk_seed)
                pools.append(run.beam(decoder) if self.beam else run.best_of_n(decoder))
            results = [pool.result() for pool in pools]
        finally:
            worker.shutdown(wait=True, cancel_futures=True)
        joined = audio_io.crossfade_concat([r.best.audio for r in results], synth.sample_rate)
        return SearchResult(joined, synth.sample_rate, self.strategy, results, spent)


class _Run:
    """The search of one chunk: sampling under the budget on this thread, judging on the worker."""

    def __init__(self, searcher: Searcher, synth, voice, request: VerifyRequest, budget: int | None, spent: Spent,
                 progress: bool, worker: ThreadPoolExecutor, jobs: list[Future]):  # fmt: skip
        self.searcher, self.synth, self.voice, self.request = searcher, synth, voice, request
        self.budget = budget
        self.spent = spent
        self.used = 0  # tokens this chunk
        self.progress = progress
        self.worker = worker
        self._states: dict[int, Any] = {}
        self._jobs = jobs
        # per-request verifier work (and a bad request's error) starts at once, beside the sampling
        verifiers = {id(v): v for v in (searcher.verifier, searcher.final_verifier)}
        for verifier in verifiers.values():
            self._submit(self._state, verifier)

    # ------------------------------------------------------------------ the worker's side
    def _submit(self, fn, *args) -> Future:
        job = self.worker.submit(fn, *args)
        self._jobs.append(job)
        return job

    def _wait(self, job: Future):
        start = time.perf_counter()
        try:
            return job.result()
        finally:
            self.spent.wait_seconds += time.perf_counter() - start

    def _check_jobs(self) -> None:
        """Raise a judging error at once rather than after the rest of the sampling."""
        for job in self._jobs:
            if job.done() and job.exception() is not None:
                raise job.exception()
        self._jobs[:] = [job for job in self._jobs if not job.done()]

    def _state(self, verifier: Verifier) -> Any:
        if id(verifier) not in self._states:
            self._states[id(verifier)] = verifier.prepare(self.request)
        return self._states[id(verifier)]

    def _decode(self, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
        start = time.perf_counter()
        wavs = self.synth.decode(codes, self.voice)
        self.spent.codec_seconds += time.perf_counter() - start
        return wavs

    def _score(self, verifier: Verifier, wavs: list[np.ndarray], partial: bool = False) -> list[Score]:
        """Scores of ``wavs``; a combination's parts only (normalised later by ``finish``) when it is
        scored in pieces."""
        state = self._state(verifier)
        start = time.perf_counter()
        if isinstance(verifier, CombinedVerifier) and _in_pieces(verifier) and not partial:
            scores = verifier.score_parts(wavs, self.request, state, partial=partial)
        else:
            scores = verifier.score(wavs, self.request, state, partial=partial)
        self.spent.verifier_seconds += time.perf_counter() - start
        self.spent.verifier_calls += 1
        self.spent.verifier_clips += len(wavs)
        self.spent.verifier_audio_seconds += sum(len(w) for w in wavs) / audio_io.SAMPLE_RATE
        return scores

    def _decode_and_score(self, codes: list[np.ndarray], verifier: Verifier, partial: bool, score: bool = True):
        wavs = self._decode(codes)
        return wavs, self._score(verifier, wavs, partial) if score else None

    # ------------------------------------------------------------------ this thread's side
    def _advance(self, decoder, k: int, bar, on_step=None) -> bool:
        """Up to ``k`` tokens for every live row; False when the budget stopped it first.
        ``on_step`` runs after every token (outside the LM's clock)."""
        for _ in range(k):
            live = sum(not row.finished for row in decoder.rows)
            if not live:
                return True
            if self.budget is not None and self.used + live > self.budget:
                return False
            start = time.perf_counter()
            decoder.step(1)
            self.spent.lm_seconds += time.perf_counter() - start
            self.used += live
            self.spent.tokens += live
            bar.update(1)
            if on_step is not None:
                on_step()
        return True

    def _bar(self, decoder):
        return tqdm(total=decoder.max_new_tokens, desc=self.searcher.strategy, unit="tok", disable=not self.progress, leave=False)

    def _cut(self, decoder) -> None:
        for row in decoder.rows:
            if not row.finished:
                row.finished, row.stop_reason = True, "budget"

    def best_of_n(self, decoder) -> _Pool:
        pool = _Pool(self)
        judged: set[int] = set()

        def judge_finished():
            done = [i for i, row in enumerate(decoder.rows) if row.finished and i not in judged]
            if done:
                judged.update(done)
                pool.add([decoder.rows[i] for i in done], keys=done)
            self._check_jobs()

        with self._bar(decoder) as bar:
            if not self._advance(decoder, decoder.max_new_tokens, bar, judge_finished):
                self._cut(decoder)
            judge_finished()
        return pool

    def beam(self, decoder) -> _Pool:
        width, expand = self.searcher.beam_width, self.searcher.expand
        pool = _Pool(self)
        steps = pool.steps
        with self._bar(decoder) as bar:
            while True:
                within_budget = self._advance(decoder, self.searcher.step_tokens, bar)
                if not within_budget:
                    self._cut(decoder)
                pool.add([row for row in decoder.rows if row.finished])
                self._check_jobs()
                live = [i for i, row in enumerate(decoder.rows) if not row.finished]
                if not live:
                    break
                codes = [np.asarray(decoder.rows[i].codes, dtype=np.int64) for i in live]
                _, scores = self._wait(self._submit(self._decode_and_score, codes, self.searcher.verifier, True))
                totals = np.array([s.total for s in scores])
                order = np.argsort(-totals, kind="stable")[:width]  # ties keep row order: deterministic
                kept = [live[j] for j in order]
                steps.append(BeamStep(len(decoder.rows[live[0]].codes), live, totals.tolist(), kept))
                decoder.select([i for i in kept for _ in range(expand)])
        return pool


class _Pool:
    """The finished rows of one chunk, judged by the outcome verifier on the worker as they are
    added. Each piece of judging takes every row that finished since the last one (one codec
    batch, one verifier batch) and scores it where the verifier scores candidates alone; otherwise
    :meth:`result` scores the whole pool at once. ``steps``: beam search's PRM rounds."""

    def __init__(self, run: _Run):
        self.run = run
        self.verifier = run.searcher.final_verifier
        self.in_pieces = _in_pieces(self.verifier)
        self.rows: list = []
        self.keys: list[int] = []
        self.wavs: dict[int, np.ndarray] = {}  # by index into rows
        self.scores: dict[int, Score] = {}
        self.jobs: list[Future] = []
        self.steps: list[BeamStep] = []
        self._waiting: list[int] = []  # rows no piece has taken yet
        self._lock = threading.Lock()

    def add(self, rows, keys: Sequence[int] | None = None) -> None:
        """``keys`` order the candidates in the result (default: the order they were added)."""
        if not rows:
            return
        with self._lock:
            first = len(self.rows)
            self.rows += [row.copy() for row in rows]
            self.keys += list(range(first, len(self.rows))) if keys is None else list(keys)
            self._waiting += range(first, len(self.rows))
        self.jobs.append(self.run._submit(self._judge_waiting))

    def _judge_waiting(self) -> None:
        """On the worker: a piece that finds nothing waiting was taken by the piece before it."""
        with self._lock:
            taken, self._waiting = self._waiting, []
            codes = [np.asarray(self.rows[i].codes, dtype=np.int64) for i in taken]
        if not taken:
            return
        wavs, scores = self.run._decode_and_score(codes, self.verifier, False, self.in_pieces)
        self.wavs.update(zip(taken, wavs))
        if scores is not None:
            self.scores.update(zip(taken, scores))

    def result(self) -> ChunkResult:
        run = self.run
        for job in self.jobs:
            run._wait(job)
        order = sorted(range(len(self.rows)), key=self.keys.__getitem__)
        rows, wavs = [self.rows[j] for j in order], [self.wavs[j] for j in order]
        if not self.in_pieces:
            scores = run._wait(run._submit(run._score, self.verifier, wavs))
        else:
            scores = [self.scores[j] for j in order]
            if isinstance(self.verifier, CombinedVerifier):
                scores = self.verifier.finish(scores)
        candidates = [
            Candidate(np.asarray(r.codes, dtype=np.int64), w, r.stop_reason, r.logprob, s.total, s.components, s.info)
            for r, w, s in zip(rows, wavs, scores)
        ]
        run.spent.candidates += len(candidates)
        run.spent.screened_out += sum(_rejected(s) for s in scores)
        chosen = int(np.argmax([c.score for c in candidates]))  # first of equals: deterministic
        return ChunkResult(run.request.text, candidates, chosen, self.steps)


def search(
    synth,
    text: str,
    voice=None,
    *,
    strategy: str = "best-of-n",
    verifiers: VerifierSpec | None = None,
    final_verifiers: VerifierSpec | None = None,
    n: int = 8,
    beam_width: int = 2,
    expand: int = 4,
    step_tokens: int = 50,
    max_tokens: int | None = None,
    normalize: str = "zscore",
    verifier_options: Mapping[str, dict] | None = None,
    prompt_audio: np.ndarray | None = None,
    language: str = "en",
    params: SamplingParams = SamplingParams(),
    seed: int | None = None,
    progress: bool = False,
) -> SearchResult:
    """One search call; build a :class:`Searcher` instead to reuse its verifiers across requests.

    >>> result = search(synth, "Hello there.", voice, strategy="prm-sim+orm-wer", beam_width=2, expand=4, seed=0)
    >>> result.audio, result.chunks[0].chosen, [c.score for c in result.chunks[0].candidates], result.spent.tokens
    """
    searcher = Searcher(
        strategy,
        verifiers=verifiers,
        final_verifiers=final_verifiers,
        n=n,
        beam_width=beam_width,
        expand=expand,
        step_tokens=step_tokens,
        max_tokens=max_tokens,
        normalize=normalize,
        verifier_options=verifier_options,
    )
    return searcher(synth, text, voice, prompt_audio=prompt_audio, language=language, params=params, seed=seed, progress=progress)
