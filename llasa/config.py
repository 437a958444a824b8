"""Config files: YAML or JSON, by suffix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
