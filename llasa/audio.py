"""Audio in and out: load any common file, mix to mono, resample to 16 kHz, validate, write.

Built on soundfile (libsndfile: wav/flac/ogg/mp3) and soxr; torchaudio has no build for the
pinned CPU torch.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000

AudioLike = Union[str, Path, bytes, np.ndarray]


class AudioError(ValueError):
    """Audio that cannot be used, with the source and the problem in the message."""


def _describe(source) -> str:
    if isinstance(source, (str, Path)):
        return f"'{source}'"
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes of uploaded audio>"
    return "<array>"


def to_mono(wav: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) as soundfile reads it -> (N,) float32, channels averaged."""
    wav = np.asarray(wav)
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    elif wav.ndim != 1:
        raise AudioError(f"expected audio of shape (samples,) or (samples, channels), got {wav.shape}")
    return wav.astype(np.float32, copy=False)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    if orig_sr == target_sr:
        return wav
    return soxr.resample(wav, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def validate(
    wav: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    source=None,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
    clip_warn: bool = True,
) -> np.ndarray:
    """Check a mono waveform; raise AudioError naming the source and the problem."""
    name = _describe(source)
    if wav.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not np.all(np.isfinite(wav)):
        bad = int((~np.isfinite(wav)).sum())
        raise AudioError(f"{name}: audio contains {bad} NaN/inf samples")
    seconds = wav.shape[-1] / sample_rate
    if seconds < min_seconds:
        raise AudioError(f"{name}: audio is {seconds:.3f} s long, shorter than the {min_seconds:g} s minimum")
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{name}: audio is {seconds:.1f} s long, longer than the {max_seconds:g} s maximum")
    peak = float(np.abs(wav).max())
    if peak > 2.0:
        raise AudioError(
            f"{name}: samples far outside [-1, 1] (peak {peak:.1f}); expected float audio in [-1, 1], "
            "not integer PCM values stored as floats"
        )
    if peak > 1.0:
        # lossy decoders and resamplers overshoot slightly: clip, but say so
        warnings.warn(f"{name}: peak {peak:.3f} exceeds 1.0; clipped to [-1, 1]", stacklevel=2)
        wav = np.clip(wav, -1.0, 1.0)
    if clip_warn:
        clipped = float(np.mean(np.abs(wav) >= 0.999))
        if clipped > 0.001:
            warnings.warn(f"{name}: {clipped:.1%} of samples are clipped; quality may suffer", stacklevel=2)
    return wav


def load(
    source: AudioLike,
    sample_rate: int = SAMPLE_RATE,
    *,
    source_rate: int | None = None,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Load a file path, encoded bytes, or an array into mono float32 at ``sample_rate``.

    Arrays need ``source_rate`` (their sample rate). Raises AudioError for unreadable,
    empty, non-finite, too short or too long audio.
    """
    name = _describe(source)
    if isinstance(source, np.ndarray):
        if source_rate is None:
            raise AudioError("an audio array needs its sample rate (source_rate=...)")
        wav, sr = source, source_rate
        if wav.ndim == 2 and wav.shape[0] < wav.shape[1] and wav.shape[0] <= 8:
            wav = wav.T  # (channels, samples) -> (samples, channels)
        if np.issubdtype(wav.dtype, np.integer):
            wav = wav.astype(np.float32) / float(np.iinfo(wav.dtype).max + 1)
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.exists():
                raise AudioError(f"{name}: no such file")
            if path.is_dir():
                raise AudioError(f"{name}: is a directory, not an audio file")
            handle = str(path)
        elif isinstance(source, (bytes, bytearray)):
            handle = io.BytesIO(source)
        else:
            raise AudioError(f"cannot load audio from {type(source).__name__}")
        try:
            wav, sr = sf.read(handle, dtype="float32", always_2d=False)
        except Exception as exc:  # libsndfile raises several types; all mean the same to a user
            raise AudioError(f"{name}: unreadable audio ({exc})") from None
    wav = to_mono(wav)
    if wav.size and not np.all(np.isfinite(wav)):
        validate(wav, sr, source=source)
    wav = resample(wav, int(sr), sample_rate)
    return validate(wav, sample_rate, source=source, min_seconds=min_seconds, max_seconds=max_seconds)


def check_writable(path: Union[str, Path], *, folder: bool = False, what: str = "output") -> Path:
    """Fail before any work when ``path`` (a file, or with ``folder`` a directory) cannot be
    written: it is the wrong kind of thing, a parent is a file, or a directory is read-only."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise ValueError(f"{what} '{path}' is a file; expected a folder")
        if not folder and path.is_dir():
            raise ValueError(f"{what} '{path}' is a directory; expected a file name")
        if not os.access(path, os.W_OK):
            raise ValueError(f"{what} '{path}' is not writable (permission denied)")
        return path
    parent = path.absolute().parent
    while not parent.exists():  # the folders that do not exist yet are made when writing
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} '{path}': '{parent}' is a file, so no folder can be made in it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} '{path}': cannot write in '{parent}' (permission denied)")
    return path


def check_output(path: Union[str, Path], *, what: str = "output") -> Path:
    """An audio file to write: writable (:func:`check_writable`), with a suffix that names a
    format :func:`write` can write. Verbs call it before any work, not after minutes of synthesis."""
    path = check_writable(path, what=what)
    fmt = path.suffix[1:].upper()
    if not fmt or fmt not in sf.available_formats() or sf.default_subtype(fmt) is None:
        problem = f"'{path.suffix}' is not an audio format" if path.suffix else "no suffix to tell the audio format"
        raise ValueError(f"{what} '{path}': {problem}; name the file .wav, .flac or .ogg")
    return path


def write(path: Union[str, Path], wav: np.ndarray, sample_rate: int = SAMPLE_RATE, format: str | None = None) -> Path:
    """Write mono float audio; the format follows the suffix (wav, flac, ogg) unless given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    sf.write(str(path), wav, sample_rate, format=format)
    return path


def encode_bytes(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, format: str = "wav") -> bytes:
    """Encode audio to bytes: 'wav', 'flac', 'ogg' or raw little-endian 16-bit 'pcm'."""
    wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if format == "pcm":
        return (wav * 32767.0).astype("<i2").tobytes()
    buf = io.BytesIO()
    sf.write(buf, wav, sample_rate, format=format.upper(), subtype="PCM_16" if format == "wav" else None)
    return buf.getvalue()


def crossfade_concat(chunks: list[np.ndarray], sample_rate: int = SAMPLE_RATE, fade_seconds: float = 0.02) -> np.ndarray:
    """Join chunks with short equal-power cross-fades (long text is synthesised in pieces)."""
    chunks = [np.asarray(c, dtype=np.float32).reshape(-1) for c in chunks if len(c)]
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    out = chunks[0]
    for nxt in chunks[1:]:
        n = min(int(fade_seconds * sample_rate), len(out), len(nxt))
        if n == 0:
            out = np.concatenate([out, nxt])
            continue
        t = np.linspace(0.0, np.pi / 2, n, dtype=np.float32)
        mixed = out[-n:] * np.cos(t) + nxt[:n] * np.sin(t)
        out = np.concatenate([out[:-n], mixed, nxt[n:]])
    return out
