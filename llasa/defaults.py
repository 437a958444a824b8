"""The built-in default model: where it lives inside the package, and its named voices.

`llasa tts`, `llasa codec` and `llasa serve` use it when no --model/--codec is given. The
directory holds `lm/` (a Llasa checkpoint), `codec/` (a codec checkpoint), `voices/NAME.json`
(voice profiles) and the model card.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DIR = Path(__file__).parent / "assets" / "default"


def _if_present(path: Path) -> str | None:
    return str(path) if (path / "config.json").is_file() else None


def default_model_path() -> str | None:
    """The built-in LM, or None in a checkout where it has not been trained yet."""
    return _if_present(DEFAULT_DIR / "lm")


def default_codec_path() -> str | None:
    """The built-in codec, or None in a checkout where it has not been trained yet."""
    return _if_present(DEFAULT_DIR / "codec")


def voices_dir() -> Path:
    return DEFAULT_DIR / "voices"


def named_voices() -> dict[str, Path]:
    """The voice profiles shipped with the default model, by name."""
    return {p.stem: p for p in sorted(voices_dir().glob("*.json"))}


def default_voice_name() -> str | None:
    """The voice used when a request names none: the first shipped voice (alphabetically)."""
    names = list(named_voices())
    return names[0] if names else None
