"""YAML configuration files with ``base:`` inheritance: training configs are read by the trainer and,
for their model and length limit, by datagen's statistics."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness_tasks.errors import UserError


class YamlFileError(UserError, ValueError):
    pass


def merge(base: dict, override: dict) -> dict:
    """``override`` over ``base``, section by section."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The mapping at ``path`` merged over its ``base:`` chain (``base`` is relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise YamlFileError(f"{path}: circular base: chain {' -> '.join(map(str, _seen + (path,)))}")
    if not path.is_file():
        raise YamlFileError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise YamlFileError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise YamlFileError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    return merge(read_yaml(path.parent / base, _seen + (path,)), data)
