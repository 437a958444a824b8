"""The codec recipe's batches: fixed-length crops of training audio, the crops of a step a pure
function of (seed, step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from llasa.audio import SAMPLE_RATE
from llasa.audio import load as load_audio
from llasa.data.manifest import AUDIO_SUFFIXES, read_jsonl


def list_audio(source: str | Path | list[str | Path]) -> list[str]:
    """The audio files of a JSONL manifest (`audio` per line, relative paths from its folder) or
    of a folder; a list of them gives all their files, in order."""
    if isinstance(source, (list, tuple)):
        return [audio for one in source for audio in list_audio(one)]
    path = Path(source)
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    elif path.is_file():
        items = read_jsonl(path)
        missing = [n for n, item in enumerate(items, 1) if not item.get("audio")]
        if missing:
            raise ValueError(f"{path}: line(s) {missing[:10]} have no `audio` field")
        files = [item["audio"] for item in items]
    else:
        raise FileNotFoundError(f"training audio not found: {path} (expected a JSONL manifest or a folder)")
    if not files:
        raise ValueError(f"{path}: no audio files")
    return files


class CropSampler:
    """Random fixed-length crops; the batch of a step depends only on (seed, step).

    Short files are zero-padded at the end, as the official data module does. Files at 16 kHz
    are read crop by crop; others are decoded whole and resampled.
    """

    def __init__(self, files: list[str], crop_samples: int, seed: int):
        self.files, self.crop, self.seed = files, crop_samples, seed
        self.infos = [sf.info(f) for f in tqdm(files, desc="index audio", unit="file", leave=False)]

    def read(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        """A crop of file `index`: random if `rng` is given, else its beginning."""
        info = self.infos[index]
        length = int(info.frames * SAMPLE_RATE / info.samplerate)
        offset = int(rng.integers(0, max(1, length - self.crop + 1))) if rng is not None else 0
        if info.samplerate == SAMPLE_RATE:
            wav, _ = sf.read(self.files[index], start=offset, frames=self.crop, dtype="float32", always_2d=True)
            wav = wav.mean(axis=1)
        else:
            wav = load_audio(self.files[index])[offset : offset + self.crop]
        return np.pad(wav, (0, self.crop - len(wav)))

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """(batch_size, 1, crop) random crops of random files."""
        rng = np.random.default_rng([self.seed, step])
        indices = rng.integers(0, len(self.files), size=batch_size)
        return torch.from_numpy(np.stack([self.read(int(i), rng) for i in indices]))[:, None]

    def beginnings(self) -> torch.Tensor:
        """(files, 1, crop): the beginning of every file (a fixed held-out batch)."""
        return torch.from_numpy(np.stack([self.read(i, None) for i in range(len(self.files))]))[:, None]
