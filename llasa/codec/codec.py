"""`Codec`: 16 kHz waveforms <-> X-codec2 speech codes, on transformers' `Xcodec2Model`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Xcodec2Config, Xcodec2Model

from llasa.audio import AudioError, validate
from llasa.checkpoint import check_device
from llasa.codec import fastpath, loading
from llasa.codec.configs import ConfigLike, as_codes, codebook_size, get_config
from llasa.codec.features import SEMANTIC_HOP, pad_waveform, semantic_features
from llasa.codec.mel_encoder import build_codec_model
from llasa.codec.refine import DEFAULT_LR, quantizer_inputs, refine_codes
from llasa.codec.streaming import StreamingDecoder
from llasa.hardware import onednn_matmul


# a bar appears only on work that lasts: a search decodes its candidates in a fraction of a second,
# many times a request
PROGRESS_DELAY = 2.0


def _as_waveform(wav, what: str) -> np.ndarray:
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    array = np.asarray(wav)
    if array.ndim != 1:
        raise AudioError(f"{what}: expected 1-D mono audio at 16 kHz, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError(
            f"{what}: expected float audio in [-1, 1], got dtype {array.dtype} (convert integer PCM first)"
        )
    return validate(array.astype(np.float32, copy=False), source=what, clip_warn=False)


def _is_batch(items) -> bool:
    return isinstance(items, (list, tuple))


# On CPU the waveform encoder's activations (2x upsampled inside every SnakeBeta) outgrow the
# caches: per item it took 0.26 s alone, 0.25 s in pairs, 0.82 s in batches of 8 (5 s clips,
# tiny preset, 1 thread). So CPU batches hold at most this many samples, whatever batch_size.
CPU_BATCH_SAMPLES = 10 * 16000


def _same_length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    # Only equal-length items share a batch: the waveform encoder (centred convs, replicate
    # padding) and the decoder (GroupNorm and attention over time) both let padding leak into
    # real frames, so padded batches would give different codes/audio than one item alone.
    groups: dict[int, list[int]] = defaultdict(list)
    for index, length in enumerate(lengths):
        groups[length].append(index)
    return [group[i : i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


def _autocast_bf16(module: torch.nn.Module) -> None:
    """Run `module` (the w2v-BERT encoder) under bf16 autocast, handing fp32 states onwards.

    An instance-level `forward` keeps the module, its parameters and state_dict untouched.
    """
    inner = module.forward

    def forward(*args, **kwargs):
        device = next(module.parameters()).device.type
        with torch.autocast(device, dtype=torch.bfloat16):
            output = inner(*args, **kwargs)
        output.last_hidden_state = output.last_hidden_state.float()
        return output

    module.forward = forward


ENCODE_KEY = "llasa_encode"  # a codec's recommended encoding, in its config.json: {"refine_steps": N, ...}


class Codec:
    """An X-codec2 codec: `encode` 16 kHz audio to codes, `decode` codes back to audio.

    `semantic_bf16=True` runs the w2v-BERT encoder in bf16 autocast: about 2.8x faster on
    CPUs with AMX and half the encode time of the full model, but codes may differ from fp32
    where a value sits near an FSQ rounding boundary, so it is off by default.

    `refine_steps`, `refine_lr` and `refine_cepstral` (the weight of the cepstral distance in its
    objective) are the analysis-by-synthesis encoding (`llasa.codec.refine`)
    this codec recommends for resynthesis: `llasa_encode` in its config.json, else 0 steps (the
    released checkpoints recommend none). `encode` refines only when asked: ``refine_steps=None``
    takes the recommendation (as the `llasa codec` verbs and `llasa eval codec` do unless told),
    a number that many steps.
    """

    def __init__(
        self, model: Xcodec2Model, *, semantic_bf16: bool = False, refine_steps: int | None = None,
        refine_lr: float | None = None, refine_cepstral: float | None = None,
    ):  # fmt: skip
        config = model.config
        if config.hop_length != SEMANTIC_HOP or config.sampling_rate != 16000:
            raise ValueError(
                f"the w2v-BERT front-end runs at 50 Hz on 16 kHz audio: the codec needs hop 320 at 16 kHz, "
                f"got hop {config.hop_length} (downsampling_ratios {list(config.downsampling_ratios)}) at "
                f"{config.sampling_rate} Hz"
            )
        self.model = model.eval()
        fastpath.install(model)
        self.semantic_bf16 = semantic_bf16
        if semantic_bf16:
            _autocast_bf16(model.semantic_encoder)
        self.sample_rate: int = config.sampling_rate
        self.hop_length: int = config.hop_length
        self.codebook_size: int = codebook_size(config)
        recommended = getattr(config, ENCODE_KEY, None) or {}
        self.refine_steps: int = int(recommended.get("refine_steps", 0) if refine_steps is None else refine_steps)
        self.refine_lr: float = float(recommended.get("refine_lr", DEFAULT_LR) if refine_lr is None else refine_lr)
        self.refine_cepstral: float = float(
            recommended.get("refine_cepstral", 0.0) if refine_cepstral is None else refine_cepstral
        )
        if self.refine_steps < 0 or self.refine_lr <= 0 or self.refine_cepstral < 0:
            raise ValueError(
                "refine_steps and refine_cepstral must be 0 or more and refine_lr positive, got "
                f"{self.refine_steps}, {self.refine_cepstral} and {self.refine_lr}"
            )

    @property
    def config(self) -> Xcodec2Config:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: ConfigLike, *, seed: int | None = None, semantic_bf16: bool = False) -> "Codec":
        """A codec with freshly initialised (random) weights; `seed` makes them reproducible."""
        config = get_config(config)
        if seed is None:
            return cls(build_codec_model(config), semantic_bf16=semantic_bf16)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(build_codec_model(config), semantic_bf16=semantic_bf16)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device="cpu", dtype: torch.dtype = torch.float32, semantic_bf16: bool = False
    ) -> "Codec":
        """Load a hub id or local directory, in transformers' layout or the original one."""
        check_device(device)
        directory = loading.resolve(name_or_path)
        config, state = loading.read_checkpoint(directory)
        model = build_codec_model(config)
        loading.load_strict(model, state, source=f"'{directory}'")
        return cls(model.to(device=device, dtype=dtype), semantic_bf16=semantic_bf16)

    def save_pretrained(self, directory: str | Path) -> None:
        """transformers' layout: config.json + model.safetensors, readable by Xcodec2Model too."""
        self.model.save_pretrained(str(directory))

    # encode / decode ------------------------------------------------------------------------

    def num_codes(self, num_samples: int) -> int:
        """Codes for `num_samples` of audio: the official padding always adds a frame."""
        return num_samples // self.hop_length + 1

    def resolve_refine_steps(self, refine_steps: int | None) -> int:
        """The refinement steps an encode takes: ``refine_steps``, or for None this codec's
        recommendation (`self.refine_steps`)."""
        steps = self.refine_steps if refine_steps is None else refine_steps
        if steps < 0:
            raise ValueError(f"refine_steps must be 0 or more, got {steps}")
        return steps

    @torch.no_grad()  # not inference_mode: refinement needs autograd on the encoder's output
    def encode(self, wavs, *, batch_size: int = 8, refine_steps: int | None = 0):
        """1-D float 16 kHz audio -> 1-D int64 codes (N // 320 + 1 of them); a list -> a list.

        ``refine_steps`` > 0 tunes the codes by synthesis (`llasa.codec.refine`, that many Adam
        steps at ``self.refine_lr`` through the decoder): codes the decoder renders closer to
        the input, for as many decoder passes forward and back. None takes the codec's
        recommendation (`resolve_refine_steps`). 0, the default, is the encoder's own codes: an
        LM is trained on those (`llasa data tokenize` shards) and so prompted with them (voice
        profiles), while refinement is for resynthesis.
        """
        refine_steps = self.resolve_refine_steps(refine_steps)
        batch = _is_batch(wavs)
        items = list(wavs) if batch else [wavs]
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        padded = [
            pad_waveform(_as_waveform(wav, f"audio item {i}" if batch else "audio"), self.hop_length)
            for i, wav in enumerate(items)
        ]
        codes: list[np.ndarray | None] = [None] * len(items)
        lengths = [len(p) for p in padded]
        if self.device.type == "cpu":
            batch_size = min(batch_size, max(1, CPU_BATCH_SAMPLES // max(lengths)))
        batches = _same_length_batches(lengths, batch_size)
        for indices in tqdm(batches, desc="encode", unit="batch", disable=len(batches) < 2, delay=PROGRESS_DELAY):
            with onednn_matmul(), fastpath.scratch():
                self._encode_batch([padded[i] for i in indices], indices, codes, refine_steps)
        return codes if batch else codes[0]

    def _encode_batch(self, padded: list[np.ndarray], indices: list[int], codes: list, refine_steps: int) -> None:
        """Encode equal-length padded waveforms into ``codes[index]`` for each of ``indices``."""
        waves = torch.from_numpy(np.stack(padded))[:, None]
        extra = {}
        if getattr(self.model, "uses_semantic_features", True):  # the log-mel variant reads none
            features = torch.stack([semantic_features(wave) for wave in padded])
            extra["input_features"] = features.to(self.device, self.dtype)
        waves = waves.to(self.device, self.dtype)
        if refine_steps:
            start = quantizer_inputs(self.model, lambda: self.model.encode(input_values=waves, **extra))
            out = refine_codes(
                self.model, waves, start, steps=refine_steps, lr=self.refine_lr,
                cepstral_weight=self.refine_cepstral, progress=True,
            )  # fmt: skip
        else:
            out = self.model.encode(input_values=waves, **extra).audio_codes
        for row, index in zip(out[:, 0].long().cpu().numpy(), indices):
            codes[index] = row

    @torch.inference_mode()
    def decode(self, codes, *, batch_size: int = 8):
        """1-D int codes -> 1-D float32 audio of 320 samples per code; a list -> a list."""
        batch = _is_batch(codes) and not (codes and np.isscalar(codes[0]))
        items = list(codes) if batch else [codes]
        checked = [
            as_codes(c, self.codebook_size, what=f"codes item {i}" if batch else "codes") for i, c in enumerate(items)
        ]
        audio: list[np.ndarray | None] = [None] * len(items)
        batches = _same_length_batches([len(c) for c in checked], batch_size)
        for indices in tqdm(batches, desc="decode", unit="batch", disable=len(batches) < 2, delay=PROGRESS_DELAY):
            stacked = torch.from_numpy(np.stack([checked[i] for i in indices]))[:, None]
            for row, index in zip(self._decode_tensor(stacked), indices):
                audio[index] = row
        return audio if batch else audio[0]

    def _decode_tensor(self, codes: torch.Tensor) -> np.ndarray:
        """(B, 1, T) int64 codes, already validated -> (B, 320 T) float32 audio."""
        with onednn_matmul():
            values = self.model.decode(audio_codes=codes.to(self.device)).audio_values
        return values[:, 0].float().cpu().numpy()

    def stream_decode(
        self, codes: Iterable, *, chunk_tokens: int = 25, left_context: int = 150, lookahead: int = 4, context=None
    ) -> Iterator[np.ndarray]:
        """Codes arriving one by one or in arrays -> float32 audio chunks as soon as possible.

        See `llasa.codec.streaming.StreamingDecoder` for how chunks are cut and joined, and for
        ``context`` (codes heard before the stream, e.g. a cloned voice's, never emitted).
        """
        decoder = StreamingDecoder(
            self, chunk_tokens=chunk_tokens, left_context=left_context, lookahead=lookahead, context=context
        )
        for item in codes:
            yield from decoder.push(item)
        yield from decoder.flush()
