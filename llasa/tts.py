"""Text (+ a voice) -> 16 kHz speech: prompt, sample speech codes, decode them with the codec.

A :class:`Voice` is a reference clip encoded once (its codes and transcript) and reusable;
it is saved as a small JSON profile. A clip given without its transcript is transcribed by the
ASR of the ``wer`` verifier (:func:`transcribe_clip`). Long text is split at sentence boundaries into chunks
that fit the 2048-token context and the longest text the model speaks well (:class:`TextLimits`,
read from its config), each chunk is spoken with the same voice prompt, and the pieces are joined
with short cross-fades. With a :class:`Repair` each chunk is heard by an ASR as it is made and
sampled again when it missed too many of its words.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from llasa import audio as audio_io
from llasa.codec.streaming import StreamingDecoder
from llasa.lm import model as lm_model
from llasa.lm.frontend import frontend_of
from llasa.lm.prompt import check_text, join_voice_text, prompt_ids
from llasa.lm.sampling import SamplingParams, SpeechDecoder, check_seed, offset_seed, row_seed
from llasa.lm.vocab import SpeechVocab

MIN_VOICE_SECONDS = 1.0
# a voice may take at most about half the context (1000 of 2048 tokens at 50 Hz), leaving room to speak
MAX_VOICE_SECONDS = 20.0
MAX_CHUNK_CHARS = 300
# the longest text one request speaks: OpenAI's limit for /v1/audio/speech, the server's
# default and `llasa tts`'s (--max-chars): 4096 characters are ~14 chunks and minutes of speech
MAX_INPUT_CHARS = 4096
# candidates the CLI and the server sample side by side (n, or beams x continuations): every
# row holds its own KV cache and logits, so memory grows with it (n=100000 asks for ~11 GB)
MAX_CANDIDATES = 32
VOICE_FORMAT = "llasa-voice"

# Upper bounds on speaking time used to cap generation: slow speech runs ~8 characters/s in
# alphabetic scripts and ~3 syllables (= characters) per second in CJK scripts; the headroom
# covers leading/trailing silence. A model that never emits the end token stops here.
_SECONDS_PER_CHAR = 0.125
_SECONDS_PER_WIDE_CHAR = 0.4
_HEADROOM_SECONDS = 2.0
# Lower bounds used to keep the end token back until the text could have been said at all:
# very fast speech runs ~25 characters/s in alphabetic scripts, ~8 in CJK. An undertrained
# model (or a voice clip ending in silence) otherwise may stop at once with nothing said.
_MIN_SECONDS_PER_CHAR = 0.04
_MIN_SECONDS_PER_WIDE_CHAR = 0.12

# a model's own limits on what one chunk of text may hold, in its config.json, e.g. {"max_chunk_chars":
# 120, "max_chunk_sentences": 1, "repair": {"retries": 2, "threshold": 0.5}}: a model trained on single
# sentences loses its way (loops, dropped words) in longer chunks. The official checkpoints have none,
# so they keep the context-sized chunks and no repair
TEXT_KEY = "llasa_text"

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？；])")
_CLAUSE_END = re.compile(r"(?<=[,;:，、：])\s*")


@dataclass(frozen=True)
class Repair:
    """Hear each chunk as it is made and sample it again when it missed its words.

    A chunk whose error rate (the ``wer`` verifier's, with ``asr`` / ``model`` choosing its ASR) is
    above ``threshold`` is sampled again, up to ``retries`` more times, until one passes; the try
    with the lowest error rate is kept (the first of equals). The defaults are bench/long_text.py's
    best trade-off for the built-in model (PocketSphinx hearing, Whisper judging): a threshold of
    0.3 retried half the chunks for no better WER than 0.5, which retried a fifth."""

    retries: int = 2
    threshold: float = 0.5
    asr: str | None = None
    model: str | None = None
    language: str = "en"

    def __post_init__(self):
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"repair retries must be a whole number >= 0, got {self.retries!r}")
        if not self.threshold >= 0:
            raise ValueError(f"repair threshold must be an error rate >= 0, got {self.threshold}")

    def verifier_options(self) -> dict:
        return {key: value for key, value in (("asr", self.asr), ("model", self.model)) if value is not None}


@dataclass
class ChunkRepair:
    """What the repair heard in one chunk: every try's error rate, transcript, audio and time (sampling
    and decoding; ``verify_seconds``: hearing), and the try kept."""

    chunk: int
    text: str
    errors: list[float] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    verify_seconds: list[float] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list, repr=False)
    chosen: int = 0

    @property
    def tries(self) -> int:
        return len(self.errors)

    @property
    def repaired(self) -> bool:
        return self.tries > 1

    def to_dict(self) -> dict:
        """Everything but the audio, for a JSON report."""
        return {"chunk": self.chunk, "text": self.text, "tries": self.tries, "chosen": self.chosen,
                "errors": [round(e, 4) for e in self.errors], "transcripts": self.transcripts,
                "seconds": [round(t, 3) for t in self.seconds],
                "verify_seconds": [round(t, 3) for t in self.verify_seconds]}  # fmt: skip


@dataclass(frozen=True)
class TextLimits:
    """What one chunk of text may hold for a model (``llasa_text`` in its config), and the repair it
    recommends (None: none)."""

    max_chunk_chars: int = MAX_CHUNK_CHARS
    max_chunk_sentences: int | None = None
    repair: Repair | None = None

    def __post_init__(self):
        for name in ("max_chunk_chars", "max_chunk_sentences"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")

    @classmethod
    def of_model(cls, model) -> "TextLimits":
        raw = getattr(model.config, TEXT_KEY, None) or {}
        names = ("max_chunk_chars", "max_chunk_sentences", "repair")
        if not isinstance(raw, dict) or set(raw) - set(names):
            raise ValueError(f"{TEXT_KEY} in the model's config.json must map some of {', '.join(names)} to values, got {raw!r}")
        repair = raw.get("repair")
        try:
            return cls(**{**raw, "repair": Repair(**repair) if isinstance(repair, dict) else None})
        except TypeError as exc:
            raise ValueError(f"{TEXT_KEY} in the model's config.json: {exc}") from None


def speech_recognizer(model: str | Path | None = None, asr: str | None = None):
    """The ASR of the ``wer`` verifier (its own choice, the strongest installed; or the checkpoint
    ``model``, the backend ``asr``): an object with ``transcribe(wavs, language) -> list[str]``
    (and, where it knows them, ``languages``)."""
    from llasa.extras import MissingExtra
    from llasa.verify import get_verifier

    options = {key: value for key, value in (("model", model), ("asr", asr)) if value is not None}
    try:
        return get_verifier("wer", fast=False, **options).asr  # a transcript, not a ranking
    except MissingExtra as exc:
        raise MissingExtra(f"transcribing a voice clip given without its transcript needs an ASR: {exc} (or give the "
                           "clip's transcript)") from None  # fmt: skip


def transcribe_clip(wav: np.ndarray, asr=None, *, language: str = "en", what: str = "the voice clip") -> str:
    """The transcript ``asr`` (default: :func:`speech_recognizer`) hears in a 16 kHz clip, with a
    warning that shows it: a voice prompt whose transcript misses words teaches the model wrong
    sounds for them, so a checked transcript clones better."""
    from llasa.verify.text import language_code

    asr = speech_recognizer() if asr is None else asr
    languages = getattr(asr, "languages", None)
    if languages is not None and language_code(language) not in languages:
        raise ValueError(f"{what} has no transcript, and the ASR {type(asr).__name__} does not recognise language "
                         f"'{language}' (it knows {', '.join(sorted(languages))}): give the clip's transcript")  # fmt: skip
    text = " ".join(asr.transcribe([wav], language)[0].split())
    if not text:
        raise ValueError(f"{what}: the ASR ({type(asr).__name__}) heard no words in it: give the clip's transcript")
    warnings.warn(f"{what} has no transcript; the ASR heard: \"{text}\". That is used as its transcript, but a checked "
                  "transcript clones better (pass the text the clip says)", stacklevel=2)  # fmt: skip
    return text


@dataclass
class Voice:
    """A reference voice: the codec codes of a clip and its transcript (``transcribed``: the
    transcript is what an ASR heard, not a given one)."""

    codes: np.ndarray
    text: str
    name: str = "voice"
    codebook_size: int | None = None
    frame_rate: float = 50.0
    transcribed: bool = False

    @property
    def seconds(self) -> float:
        return len(self.codes) / self.frame_rate

    @classmethod
    def from_audio(
        cls,
        codec,
        audio: audio_io.AudioLike,
        text: str | None = None,
        *,
        name: str | None = None,
        source_rate: int | None = None,
        max_seconds: float = MAX_VOICE_SECONDS,
        asr=None,
        language: str = "en",
    ) -> "Voice":
        """Encode a reference clip (path, bytes or array) with its transcript.

        Clips shorter than 1 s are rejected; clips longer than ``max_seconds`` are cut to
        that length with a warning (the transcript must then be cut to match). Without
        ``text`` the part used is transcribed by ``asr`` (default: the ``wer`` verifier's, in
        ``language``), with a warning showing what it heard: see :func:`transcribe_clip`."""
        if text is not None:
            check_text(text, what="voice transcript")
        wav = audio_io.load(audio, codec.sample_rate, source_rate=source_rate, min_seconds=MIN_VOICE_SECONDS)
        limit = int(max_seconds * codec.sample_rate)
        if len(wav) > limit:
            if text is not None:
                warnings.warn(
                    f"voice clip is {len(wav) / codec.sample_rate:.1f} s; only its first {max_seconds:g} s fit the "
                    "context and are used: make sure the transcript covers only that part",
                    stacklevel=2,
                )
            wav = wav[:limit]
        if name is None:
            name = Path(audio).stem if isinstance(audio, (str, Path)) else "voice"
        transcribed = text is None
        if transcribed:
            text = transcribe_clip(wav, asr, language=language, what=f"voice clip '{name}'")
        return cls(
            codes=np.asarray(codec.encode(wav), dtype=np.int64),
            text=text,
            name=name,
            codebook_size=codec.codebook_size,
            frame_rate=codec.sample_rate / codec.hop_length,
            transcribed=transcribed,
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = {
            "format": VOICE_FORMAT,
            "version": 1,
            "name": self.name,
            "text": self.text,
            "codebook_size": self.codebook_size,
            "frame_rate": self.frame_rate,
            "codes": self.codes.tolist(),
        }
        if self.transcribed:
            profile["transcribed"] = True
        path.write_text(json.dumps(profile, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Voice":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"'{path}': no such voice profile")
        try:
            profile = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"'{path}' is not a voice profile (invalid JSON: {exc})") from None
        if not isinstance(profile, dict) or profile.get("format") != VOICE_FORMAT:
            raise ValueError(f"'{path}' is not a voice profile (expected \"format\": \"{VOICE_FORMAT}\")")
        missing = [k for k in ("text", "codes") if k not in profile]
        if missing:
            raise ValueError(f"'{path}': voice profile lacks {', '.join(missing)}")
        codes = np.asarray(profile["codes"], dtype=np.int64)
        if codes.ndim != 1 or codes.size == 0:
            raise ValueError(f"'{path}': voice profile has no codes")
        return cls(
            codes=codes,
            text=profile["text"],
            name=profile.get("name", path.stem),
            codebook_size=profile.get("codebook_size"),
            frame_rate=float(profile.get("frame_rate", 50.0)),
            transcribed=bool(profile.get("transcribed", False)),
        )


def speaking_seconds(text: str, *, fastest: bool = False) -> float:
    """A generous upper bound on how long ``text`` takes to say (see the rates above), or with
    ``fastest`` a lower bound: the least time any speaker needs for it."""
    seconds = 0.0 if fastest else _HEADROOM_SECONDS
    narrow, wide = (_MIN_SECONDS_PER_CHAR, _MIN_SECONDS_PER_WIDE_CHAR) if fastest else (_SECONDS_PER_CHAR, _SECONDS_PER_WIDE_CHAR)
    for ch in text:
        if ch.isspace():
            continue
        seconds += wide if unicodedata.east_asian_width(ch) in "WF" else narrow
    return seconds


def _speakable(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (whitespace normalised); punctuation-only pieces ("...") stay
    attached to the sentence before them, or the one after at the start."""
    sentences: list[str] = []
    pending = ""
    for piece in (p.strip() for p in _SENTENCE_END.split(" ".join(text.split()))):
        if not piece:
            continue
        if not _speakable(piece):
            if sentences:
                sentences[-1] = f"{sentences[-1]} {piece}"
            else:
                pending = f"{pending} {piece}".strip()
            continue
        sentences.append(f"{pending} {piece}".strip())
        pending = ""
    return sentences


class SpeechStream:
    """Speech codes of successive text chunks in, the audio of :meth:`Synthesizer.tts` out, piece by piece.

    Each chunk's codes are decoded as they arrive by a :class:`StreamingDecoder` that hears the
    voice's codes first (as :meth:`Synthesizer.decode` puts them before each chunk). Chunks are
    joined as ``tts`` joins them (:func:`llasa.audio.crossfade_concat`): the last fade's worth of
    a chunk is held back until the next chunk's first audio is there to mix with, or the end.
    With a decoder whose receptive field fits ``left_context`` and ``lookahead`` the pieces add
    up to ``tts``'s audio exactly; X-codec2's attention sees the whole utterance, so there the
    chunk edges differ slightly (see :mod:`llasa.codec.streaming`).

    >>> stream = synth.audio_stream(voice)
    >>> pieces = stream.push(codes) + stream.end_chunk() + ... + stream.finish()
    """

    def __init__(self, codec, voice: Voice | None = None, *, chunk_tokens: int = 25, left_context: int = 150,
                 lookahead: int = 4):  # fmt: skip
        self.decoder = StreamingDecoder(codec, chunk_tokens=chunk_tokens, left_context=left_context, lookahead=lookahead,
                                        context=voice.codes if voice is not None else None)  # fmt: skip
        self.sample_rate = codec.sample_rate
        self._hold = int(_JOIN_FADE_SECONDS * codec.sample_rate)
        self._tail = np.zeros(0, dtype=np.float32)  # joined audio not yet handed out: at most the last fade
        self._head = np.zeros(0, dtype=np.float32)  # this chunk's first audio, waiting to fade in over the tail
        self._joined = True  # the chunk under way has faded in (or has nothing to fade over)

    def push(self, codes) -> list[np.ndarray]:
        """Codes of the chunk under way; returns the audio that is now final."""
        return self._add(self.decoder.push(codes))

    def end_chunk(self) -> list[np.ndarray]:
        """The chunk under way has ended; the next codes pushed begin a new chunk."""
        pieces = self._add(self.decoder.flush(), ending=True)
        self._joined = len(self._tail) == 0
        return pieces

    def finish(self) -> list[np.ndarray]:
        """The rest of the audio; call after the last chunk's :meth:`end_chunk`."""
        pieces = self._add(self.decoder.flush(), ending=True)
        if len(self._tail):
            pieces.append(self._tail)
        self._tail = np.zeros(0, dtype=np.float32)
        return pieces

    def _add(self, pieces: list[np.ndarray], *, ending: bool = False) -> list[np.ndarray]:
        audio = np.concatenate([self._head, *pieces]) if pieces else self._head
        if not self._joined:
            # crossfade_concat fades over min(fade, len(previous), len(next)): wait until the next
            # chunk's length no longer matters (a fade's worth of it) or the chunk is over
            if len(audio) < self._hold and not ending:
                self._head = audio
                return []
            self._head = np.zeros(0, dtype=np.float32)
            if not len(audio):
                return []
            audio = audio_io.crossfade_concat([self._tail, audio], self.sample_rate)
            self._tail = np.zeros(0, dtype=np.float32)
            self._joined = True
        joined = np.concatenate([self._tail, audio])
        cut = max(0, len(joined) - self._hold)
        self._tail = joined[cut:]
        return [joined[:cut]] if cut else []


# the fade with which tts() joins its chunks: crossfade_concat's own, read where it is set
_JOIN_FADE_SECONDS = inspect.signature(audio_io.crossfade_concat).parameters["fade_seconds"].default


class Synthesizer:
    """A Llasa model, its tokenizer and its codec, ready to speak."""

    def __init__(
        self, model, tokenizer, codec, *, context_length: int = lm_model.CONTEXT_LENGTH, fp32_prefill: bool = True
    ):
        self.model = model.eval()
        # prompts run through an fp32 copy where bf16 is emulated (a CPU without AVX512-BF16 / AMX)
        # and the copy is small: lm_model.prefill_copy says why. fp32_prefill=False: never
        self.prefill_model = lm_model.prefill_copy(model) if fp32_prefill else None
        self.tokenizer = tokenizer
        self.codec = codec
        self.context_length = context_length
        self.vocab: SpeechVocab = lm_model.check_vocabulary(model, tokenizer, codec.codebook_size)
        self.frame_rate = codec.sample_rate / codec.hop_length
        self.sample_rate = codec.sample_rate
        self._template_length: int | None = None
        self.frontend = frontend_of(model)  # raw text, or the phonemes the model was trained on
        self.sampling = SamplingParams.of_model(model)  # the model's recommended sampling, else the official
        self.text_limits = TextLimits.of_model(model)  # the model's longest good chunk, its recommended repair
        self._repair_verifiers: dict[tuple, Any] = {}

    @classmethod
    def from_pretrained(
        cls, model: str | Path, codec, *, device: str | torch.device = "cpu", dtype: torch.dtype | str = "auto"
    ) -> "Synthesizer":
        """``model``: HKUSTAudio/Llasa-1B/3B/8B or a local directory; ``codec``: a hub id, a
        local directory, or a loaded :class:`llasa.codec.Codec`."""
        from llasa.codec import Codec

        lm, tokenizer = lm_model.load(model, device=device, dtype=dtype)
        if not isinstance(codec, Codec):
            codec = Codec.from_pretrained(codec, device=device)
        return cls(lm, tokenizer, codec)

    # ----------------------------------------------------------------- voices and prompts
    def voice(
        self,
        audio: audio_io.AudioLike,
        text: str | None = None,
        *,
        name: str | None = None,
        source_rate: int | None = None,
        asr=None,
        language: str = "en",
    ) -> Voice:
        """Encode a reference clip once; pass the result to :meth:`tts` as often as needed.
        Without ``text`` the clip is transcribed (``asr``, ``language``: see :meth:`Voice.from_audio`)."""
        max_seconds = min(MAX_VOICE_SECONDS, self.context_length // 2 / self.frame_rate)
        if isinstance(text, str):
            self.frontend.check(text, what="voice transcript")
        voice = Voice.from_audio(self.codec, audio, text, name=name, source_rate=source_rate, max_seconds=max_seconds,
                                 asr=asr, language=language)  # fmt: skip
        if voice.transcribed:
            self.frontend.check(voice.text, what="the ASR's transcript of the voice clip")
        return voice

    def _check_voice(self, voice: Voice | None) -> None:
        if voice is not None and voice.codebook_size not in (None, self.vocab.codebook_size):
            raise ValueError(
                f"voice '{voice.name}' was encoded with a codec of {voice.codebook_size} codes, but this model "
                f"speaks {self.vocab.codebook_size}: re-create the voice with this model's codec"
            )

    def prompt(self, text: str, voice: Voice | None = None) -> list[int]:
        self._check_voice(voice)
        return prompt_ids(
            self.tokenizer,
            self.frontend(text),
            voice_text=self.frontend(voice.text) if voice else None,
            voice_codes=voice.codes if voice else None,
            vocab=self.vocab,
        )

    def max_new_tokens(self, text: str) -> int:
        """The token budget of one chunk: its speaking time at the codec's frame rate."""
        return math.ceil(speaking_seconds(text) * self.frame_rate)

    def min_new_tokens(self, text: str) -> int:
        """Codes before which the end token may not be sampled: the fastest speaking time."""
        return math.floor(speaking_seconds(text, fastest=True) * self.frame_rate)

    def _prompt_length(self, text: str, voice: Voice | None) -> int:
        """len(self.prompt(text, voice)) without rendering the template (or validating a
        fragment): the text span sits between two added tokens, so it is tokenised on its own."""
        if self._template_length is None:
            spoken = self.tokenizer(self.frontend("a"), add_special_tokens=False)["input_ids"]
            self._template_length = len(self.prompt("a")) - len(spoken)
        span = join_voice_text(self.frontend(voice.text), self.frontend(text)) if voice is not None else self.frontend(text)
        voice_codes = len(voice.codes) if voice is not None else 0
        return self._template_length + len(self.tokenizer(span, add_special_tokens=False)["input_ids"]) + voice_codes

    def _fits(self, text: str, voice: Voice | None, max_chunk_chars: int) -> bool:
        if len(text) > max_chunk_chars:
            return False
        return self._prompt_length(text, voice) + self.max_new_tokens(text) <= self.context_length

    def split_text(self, text: str, voice: Voice | None = None, *, max_chunk_chars: int | None = None,
                   max_chunk_sentences: int | None = None) -> list[str]:  # fmt: skip
        """Chunks of whole sentences that each fit the context (prompt + speech budget),
        ``max_chunk_chars`` and ``max_chunk_sentences`` (default: the model's :attr:`text_limits`);
        a sentence too long on its own is cut at clauses, then words."""
        check_text(text, self.tokenizer)
        self.frontend.check(text)
        max_chunk_chars = self.text_limits.max_chunk_chars if max_chunk_chars is None else max_chunk_chars
        if max_chunk_sentences is None:
            max_chunk_sentences = self.text_limits.max_chunk_sentences
        chunks: list[str] = []
        sentences: list[int] = []  # per chunk, the sentences it was joined from
        for sentence in split_sentences(text):
            for k, piece in enumerate(self._pieces(sentence, voice, max_chunk_chars)):
                joined = f"{chunks[-1]} {piece}" if chunks else piece
                room = max_chunk_sentences is None or k > 0 or (chunks and sentences[-1] < max_chunk_sentences)
                if chunks and room and self._fits(joined, voice, max_chunk_chars):
                    chunks[-1] = joined
                    sentences[-1] += k == 0
                else:
                    chunks.append(piece)
                    sentences.append(1)
        # a punctuation-only fragment of a cut sentence is not spoken on its own
        return [c for c in chunks if _speakable(c)]

    def _pieces(self, sentence: str, voice: Voice | None, max_chunk_chars: int) -> list[str]:
        if self._fits(sentence, voice, max_chunk_chars):
            return [sentence]
        for splitter in (_CLAUSE_END.split, str.split):
            parts = [p.strip() for p in splitter(sentence) if p.strip()]
            if len(parts) > 1:
                pieces: list[str] = []
                for part in parts:
                    joined = f"{pieces[-1]} {part}" if pieces else part
                    if pieces and self._fits(joined, voice, max_chunk_chars):
                        pieces[-1] = joined
                    else:
                        pieces.extend(self._pieces(part, voice, max_chunk_chars))
                return pieces
        # one unbreakable word (or CJK run without punctuation): cut by characters
        if len(sentence) > 1:
            half = len(sentence) // 2
            return self._pieces(sentence[:half], voice, max_chunk_chars) + self._pieces(sentence[half:], voice, max_chunk_chars)
        raise ValueError(
            "the voice prompt leaves no room to speak even one character in the "
            f"{self.context_length}-token context: use a shorter voice clip"
        )

    # ----------------------------------------------------------------- synthesis
    def decoder(
        self,
        text: str,
        voice: Voice | None = None,
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> SpeechDecoder:
        """A prefilled decoder for one chunk of text, for callers that step and select rows
        (``params``: default, the model's own, :attr:`sampling`)."""
        budget = self.max_new_tokens(text) if max_new_tokens is None else max_new_tokens
        return SpeechDecoder(
            self.model,
            self.vocab,
            self.prompt(text, voice),
            n=n,
            params=self.sampling if params is None else params,
            seed=seed,
            max_new_tokens=budget,
            min_new_tokens=self.min_new_tokens(text),
            context_length=self.context_length,
            prefill_model=self.prefill_model,
        )

    def decode(self, codes: Sequence[np.ndarray], voice: Voice | None = None) -> list[np.ndarray]:
        """Speech codes -> audio. With a voice the codes are decoded after the voice's codes
        (as the official card does, so the codec sees the context) and the voice's part is cut."""
        prefix = voice.codes if voice is not None else np.zeros(0, dtype=np.int64)
        full = [np.concatenate([prefix, np.asarray(c, dtype=np.int64)]) for c in codes]
        keep = [i for i, c in enumerate(codes) if len(c)]
        out = [np.zeros(0, dtype=np.float32) for _ in codes]
        if keep:
            for i, wav in zip(keep, self.codec.decode([full[i] for i in keep])):
                out[i] = np.asarray(wav, dtype=np.float32)[len(prefix) * self.codec.hop_length :]
        return out

    def join(self, pieces: Sequence[np.ndarray]) -> np.ndarray:
        """The audio of successive text chunks as one utterance (short cross-fades)."""
        return audio_io.crossfade_concat(list(pieces), self.sample_rate)

    def audio_stream(self, voice: Voice | None = None, **options) -> SpeechStream:
        """A :class:`SpeechStream` that decodes this model's codes in ``voice`` (``options``:
        ``chunk_tokens``, ``left_context``, ``lookahead`` of :class:`StreamingDecoder`)."""
        self._check_voice(voice)
        return SpeechStream(self.codec, voice, **options)

    def _params(self, params: SamplingParams | None, **overrides) -> SamplingParams:
        return (self.sampling if params is None else params).but(**overrides)

    def tts(
        self,
        text: str,
        voice: Voice | None = None,
        *,
        params: SamplingParams | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        seed: int | None = None,
        n: int = 1,
        max_chunk_chars: int | None = None,
        repair: Repair | bool | None = None,
        repairs: list[ChunkRepair] | None = None,
        progress: bool = True,
    ) -> np.ndarray | list[np.ndarray]:
        """Speak ``text`` (in ``voice`` when given): 16 kHz float32 audio of the new speech only.

        ``n > 1`` samples n candidates after one shared prefill per chunk and returns a list of
        n arrays (candidate i joins the i-th sample of every chunk); ``n == 1`` returns one array.
        ``temperature=0`` decodes greedily. ``params`` replaces the model's own sampling
        (:attr:`sampling`); the keywords given override either. Under a ``seed`` the result is reproducible.

        ``repair``: a :class:`Repair` (or True for the default one, False for none; default: the
        model's recommendation, ``text_limits.repair``) checks every chunk with an ASR and samples
        again those that missed their words; each chunk's record is appended to ``repairs`` when a
        list is given. Repair needs ``n == 1`` (a model's recommended repair is skipped for n > 1).
        A chunk's first try is what ``tts`` without repair makes under the same seed.
        """
        params = self._params(params, temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty)
        seed = check_seed(seed)
        self._check_voice(voice)
        if repair is None:
            repair = self.text_limits.repair if n == 1 else None
        elif repair is True:
            repair = Repair()
        elif repair is False:
            repair = None
        if repair is not None and n != 1:
            raise ValueError(f"repair keeps the best of a chunk's tries, so it samples one candidate; got n={n}")
        chunks = self.split_text(text, voice, max_chunk_chars=max_chunk_chars)
        pieces: list[list[np.ndarray]] = []  # [chunk][candidate]
        for i, chunk in enumerate(tqdm(chunks, desc="chunks", unit="chunk", disable=not progress or len(chunks) < 2)):
            chunk_seed = offset_seed(seed, i)
            if repair is not None:
                wav, record = self._repaired(chunk, voice, repair, params, chunk_seed, progress)
                record.chunk = i
                if repairs is not None:
                    repairs.append(record)
                pieces.append([wav])
                continue
            codes = self.decoder(chunk, voice, n=n, params=params, seed=chunk_seed).run(progress=progress)
            pieces.append(self.decode(codes, voice))
        candidates = [self.join([p[j] for p in pieces]) for j in range(n)]
        return candidates[0] if n == 1 else candidates

    def repair_verifier(self, repair: Repair):
        """The ``wer`` verifier that hears chunks for ``repair``, loaded once per ASR choice."""
        from llasa.verify import get_verifier

        key = tuple(sorted(repair.verifier_options().items()))
        if key not in self._repair_verifiers:
            self._repair_verifiers[key] = get_verifier("wer", **repair.verifier_options())
        return self._repair_verifiers[key]

    def _repaired(self, chunk: str, voice: Voice | None, repair: Repair, params: SamplingParams, seed: int | None,
                  progress: bool) -> tuple[np.ndarray, ChunkRepair]:  # fmt: skip
        """One chunk, tried until the ASR hears it within the threshold (or the retries run out):
        the try with the lowest error rate, and the record of every try."""
        from llasa.verify import VerifyRequest

        verifier = self.repair_verifier(repair)
        request = VerifyRequest(text=chunk, prompt_text=voice.text if voice is not None else None, language=repair.language)
        state = verifier.prepare(request)
        record = ChunkRepair(chunk=0, text=chunk)
        for attempt in range(repair.retries + 1):
            # try k draws what row k of a best-of-n over this chunk would draw: the first try is plain tts's
            try_seed = None if seed is None else row_seed(seed, attempt)
            start = time.perf_counter()
            codes = self.decoder(chunk, voice, params=params, seed=try_seed).run(progress=progress)
            (wav,) = self.decode(codes, voice)
            heard = time.perf_counter()
            (score,) = verifier.score([wav], request, state)
            record.seconds.append(heard - start)
            record.verify_seconds.append(time.perf_counter() - heard)
            record.audio.append(wav)
            record.errors.append(-float(score.total))
            record.transcripts.append(score.info.get("hyp", ""))
            if record.errors[-1] <= repair.threshold:
                break
        record.chosen = int(np.argmin(record.errors))
        return record.audio[record.chosen], record

    def stream(
        self,
        text: str,
        voice: Voice | None = None,
        *,
        params: SamplingParams | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        seed: int | None = None,
        max_chunk_chars: int | None = None,
        chunk_tokens: int = 25,
        left_context: int = 150,
        lookahead: int = 4,
    ) -> Iterator[np.ndarray]:
        """Speak ``text`` as :meth:`tts` does (same arguments, same codes under a seed), yielding
        16 kHz float32 audio while the model is still speaking: the first piece comes once
        ``chunk_tokens + lookahead`` codes exist (0.58 s of speech at the defaults), then one
        every ``chunk_tokens``. Joined, the pieces are ``tts``'s audio up to the seams of
        streamed decoding (:class:`SpeechStream`). Streaming never repairs: a chunk is heard by
        the listener before an ASR could judge it, so it is ``tts(..., repair=False)``'s audio."""
        params = self._params(params, temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty)
        seed = check_seed(seed)
        audio = self.audio_stream(voice, chunk_tokens=chunk_tokens, left_context=left_context, lookahead=lookahead)
        for i, chunk in enumerate(self.split_text(text, voice, max_chunk_chars=max_chunk_chars)):
            decoder = self.decoder(chunk, voice, params=params, seed=offset_seed(seed, i))
            row, sent = decoder.rows[0], 0
            while not decoder.done:
                decoder.step(1)
                yield from audio.push(row.codes[sent:])
                sent = len(row.codes)
            yield from audio.end_chunk()
        yield from audio.finish()
