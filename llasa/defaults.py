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


DEFAULT_VOICE = "slt"  # the built-in model's default: the clearest corpus voice for PocketSphinx


def model_or_default(model: str | None) -> str:
    """--model as given, else the built-in LM; a clear error in a checkout without one."""
    return _given_or_default(model, default_model_path(), "--model")


def codec_or_default(codec: str | None) -> str:
    """--codec as given, else the built-in codec; a clear error in a checkout without one."""
    return _given_or_default(codec, default_codec_path(), "--codec")


def _given_or_default(value: str | None, default: str | None, flag: str) -> str:
    if value:
        return value
    if default is None:
        raise ValueError(f"{flag} is required (no built-in default model in this checkout): pass a hub id or a local directory")
    return default


def voices_dir() -> Path:
    return DEFAULT_DIR / "voices"


def named_voices() -> dict[str, Path]:
    """The voice profiles shipped with the built-in model, by name."""
    return {p.stem: p for p in sorted(voices_dir().glob("*.json"))}


def is_default_model(model_dir: str | Path) -> bool:
    default = default_model_path()
    return default is not None and Path(model_dir).resolve() == Path(default).resolve()


def model_voices(model_dir: str | Path) -> dict[str, Path]:
    """Voice profiles that come with a model: the built-in model's named voices, or the
    `voices/*.json` inside any other model directory."""
    if is_default_model(model_dir):
        return named_voices()
    return {p.stem: p for p in sorted((Path(model_dir) / "voices").glob("*.json"))}


def default_voice_name(model_dir: str | Path | None = None) -> str | None:
    """The voice used when a request names none: the built-in model's DEFAULT_VOICE, else the
    first of a model's voices by name; None for a model that ships no voice."""
    names = list(model_voices(model_dir or default_model_path() or DEFAULT_DIR / "lm"))
    if DEFAULT_VOICE in names:
        return DEFAULT_VOICE
    return names[0] if names else None
