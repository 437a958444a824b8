"""Voices as server resources: uploaded once, referenced by id, never by a path on the server.

An uploaded voice is kept in memory and, when the server has a voices directory, as a
profile ``<id>.json`` there (reloaded at start). The voices shipped with the model (the
default model's ``voices/NAME.json``, or ``voices/`` inside a model directory) are served
under their names and cannot be deleted. ``default`` names the model's default voice: the
first shipped voice by name, as ``llasa tts`` picks it, else no voice (the model picks a
speaker).
"""

from __future__ import annotations

import re
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from llasa.tts import Voice

DEFAULT_VOICE_ID = "default"
_ID = re.compile(r"voice_[0-9a-f]{16}")


@dataclass
class StoredVoice:
    id: str
    voice: Voice | None  # None: the default of a model that ships no voice
    created_at: int
    builtin: bool = False

    def describe(self) -> dict:
        """The OpenAI voice object (``audio.voice``) with what Llasa adds: transcript and length."""
        voice = self.voice
        return {
            "id": self.id,
            "object": "audio.voice",
            "type": "audio_sample",
            "created_at": self.created_at,
            "name": voice.name if voice else "model default (no reference voice)",
            "text": voice.text if voice else None,
            "transcribed": voice.transcribed if voice else False,  # the text is what an ASR heard, unchecked
            "seconds": round(voice.seconds, 2) if voice else 0.0,
            "builtin": self.builtin,
        }


class VoiceStore:
    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        shipped: dict[str, Voice] | None = None,
        default_name: str | None = None,
        max_voices: int = 256,
    ):
        """``shipped``: the model's own voices by name; ``default_name`` (else the first by name)
        is the default."""
        self.directory = Path(directory) if directory is not None else None
        self.max_voices = max_voices
        now = int(time.time())
        self._shipped = {name: StoredVoice(name, voice, now, builtin=True) for name, voice in sorted((shipped or {}).items())}
        first = self._shipped.get(default_name) or next(iter(self._shipped.values()), None)
        self.default = StoredVoice(DEFAULT_VOICE_ID, first.voice if first else None, now, builtin=True)
        self._voices: dict[str, StoredVoice] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path in sorted(self.directory.glob("voice_*.json")):
                if not _ID.fullmatch(path.stem):
                    continue
                try:
                    voice = Voice.load(path)
                except ValueError as exc:
                    warnings.warn(f"skipping voice profile {path}: {exc}")
                    continue
                self._voices[path.stem] = StoredVoice(path.stem, voice, int(path.stat().st_mtime))

    def __len__(self) -> int:
        return len(self._voices)

    def get(self, voice_id: str) -> StoredVoice:
        """Raises KeyError for an id that names no voice."""
        if voice_id == DEFAULT_VOICE_ID:
            return self.default
        if voice_id in self._shipped:
            return self._shipped[voice_id]
        if not _ID.fullmatch(voice_id) or voice_id not in self._voices:
            raise KeyError(voice_id)
        return self._voices[voice_id]

    def list(self) -> list[StoredVoice]:
        return [self.default, *self._shipped.values(), *sorted(self._voices.values(), key=lambda v: v.created_at)]

    def add(self, voice: Voice) -> StoredVoice:
        if len(self._voices) >= self.max_voices:
            raise OverflowError(f"the server holds its maximum of {self.max_voices} voices: delete one first")
        stored = StoredVoice(f"voice_{secrets.token_hex(8)}", voice, int(time.time()))
        if self.directory is not None:
            voice.save(self.directory / f"{stored.id}.json")
        self._voices[stored.id] = stored
        return stored

    def delete(self, voice_id: str) -> None:
        """Raises KeyError for an unknown id, ValueError for the model's own voices."""
        if voice_id == DEFAULT_VOICE_ID or voice_id in self._shipped:
            raise ValueError(f"voice '{voice_id}' belongs to the model and cannot be deleted")
        stored = self.get(voice_id)
        del self._voices[stored.id]
        if self.directory is not None:
            (self.directory / f"{stored.id}.json").unlink(missing_ok=True)


def shipped_voices(model_dir: str | Path, *, builtin: bool = False) -> dict[str, Voice]:
    """The voice profiles that come with a model: the built-in model's named voices
    (``builtin``), or the ``voices/*.json`` inside the model directory."""
    from llasa import defaults

    paths = defaults.named_voices() if builtin else defaults.model_voices(model_dir)
    voices = {}
    for name, path in paths.items():
        if name == DEFAULT_VOICE_ID or _ID.fullmatch(name):
            warnings.warn(f"{path}: a shipped voice may not be named like '{DEFAULT_VOICE_ID}' or an upload id; skipped")
            continue
        voices[name] = Voice.load(path)
    return voices
