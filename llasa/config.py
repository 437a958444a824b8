"""Config files (YAML or JSON, by suffix), command-line overrides, and dataclasses of options read from them."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

T = typing.TypeVar("T")


def load_config_file(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of options at the top level")
    return data


def apply_overrides(config: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` overrides from the command line, on a copy of ``config``.

    Values are read as YAML (``lr=3e-4`` is a float, ``betas=[0.9,0.95]`` a list, ``init=preset:tiny``
    a string); a dotted key reaches into nested sections (``train.max_steps=100``).
    """
    out = json.loads(json.dumps(config))  # deep copy of plain data
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        import yaml

        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: value is not valid YAML: {exc}") from None
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        *parents, leaf = key.strip().split(".")
        node = out
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {'.'.join(parents[: i + 1])} is not a section")
            node = child
        node[leaf] = value
    return out


def from_dict(cls: type[T], raw: dict[str, Any], what: str, where: str = "") -> T:
    """A dataclass of options (``cls``) from a mapping, sections (fields whose type is itself a
    dataclass) from nested mappings. Values not given keep the field's default; a section's
    default instance supplies the values its mapping leaves out.

    Errors name the option with its dotted path (``optim.lr``): an unknown key (and the known
    ones), a required one missing, a section that is not a mapping, a value of the wrong type.
    ``what`` names the config in them ("LM training").
    """
    if not isinstance(raw, dict):
        raise ValueError(f"{what} option {where.rstrip('.') or 'file'} must be a mapping of options, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise ValueError(f"unknown {what} option(s): {', '.join(where + str(k) for k in unknown)}; "
                         f"known: {', '.join(where + k for k in known)}")  # fmt: skip
    values = {}
    for f in dataclasses.fields(cls):
        section = _section(hints[f.name])
        default = _default(f)
        if f.name not in raw:
            if default is dataclasses.MISSING:
                if section is None:
                    raise ValueError(f"{what} config needs '{where}{f.name}'")
                values[f.name] = from_dict(section, {}, what, f"{where}{f.name}.")  # names its missing option
            continue
        value = raw[f.name]
        if section is not None and value is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{what} option {where}{f.name} must be a mapping of options, got {value!r}")
            base = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else {}
            value = from_dict(section, {**base, **value}, what, f"{where}{f.name}.")
        else:
            value = _typed(value, hints[f.name], f"{what} option {where}{f.name}")
        values[f.name] = value
    return cls(**values)



def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _section(hint: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), if it is a section."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    found = [t for t in options if dataclasses.is_dataclass(t)]
    return found[0] if found else None


def _typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` checked against a plain type hint (bool, int, float, str, tuple, their unions
    with None); YAML's numbers written as strings (``3e-4``) become numbers, lists tuples."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options or hint is Any:
            return None
        raise ValueError(f"{name} must be set, got null")
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and not isinstance(value, bool):
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        if origin is str and isinstance(value, str):
            return value
        if origin in (list, tuple) and isinstance(value, (list, tuple)):
            return origin(value)
        if origin in (dict, Any) or option is Any:
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"{name} must be {expected}, got {value!r}")
