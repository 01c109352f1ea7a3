"""Settings of ``datagen backtranslate augment`` and ``datagen curate``: the shipped
``configs/datagen/backtranslate.yaml`` (the seed project's values), a user's file read over it, then
command-line flags. The shipped file is the only place the defaults are written down."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness_tasks.data_files import DataFileError
from harness_tasks.manifest import sha256_file
from harness_tasks.yaml_files import YamlFileError, merge, read_yaml

SHIPPED_NAME = "configs/datagen/backtranslate.yaml"
DEFAULT_SETTINGS = Path(__file__).resolve().parents[2] / SHIPPED_NAME


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AugmentSettings(_Section):
    temperature: float = Field(ge=0)
    top_p: float | None = Field(gt=0, le=1)
    max_tokens: int = Field(gt=0)
    seed: int | None
    batch_size: int = Field(gt=0)
    concurrency: int = Field(gt=0)
    max_reprompts: int = Field(ge=0)


class CurateSettings(_Section):
    model: str
    threshold: int = Field(ge=1, le=5)
    temperature: float = Field(ge=0)
    max_tokens: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    concurrency: int = Field(gt=0)
    max_reprompts: int = Field(ge=0)


class Settings(_Section):
    augment: AugmentSettings
    curate: CurateSettings


def load(path: Path | None, section: str, flags: dict) -> tuple[BaseModel, dict]:
    """The ``section`` settings with ``flags`` (None: not given) over the file(s), and what the manifest
    records about where they came from."""
    try:
        data = read_yaml(DEFAULT_SETTINGS)
        if path is not None:
            data = merge(data, read_yaml(path))
    except YamlFileError as err:
        raise DataFileError(str(err)) from None
    data.pop("base", None)
    given = {k: v for k, v in flags.items() if v is not None}
    data[section] = {**data.get(section, {}), **given}
    try:
        settings = getattr(Settings.model_validate(data), section)
    except ValidationError as err:
        e = err.errors()[0]
        loc = e["loc"]
        if len(loc) >= 2 and loc[0] == section and loc[1] in given:
            source = f"--{str(loc[1]).replace('_', '-')}"
        else:
            source = f"{path or DEFAULT_SETTINGS}: {'.'.join(map(str, loc))}"
        raise DataFileError(f"{source}: {e['msg'].removeprefix('Value error, ')}") from None
    # the shipped file by its place in the repository: a manifest names no machine's directories
    files = {SHIPPED_NAME: sha256_file(DEFAULT_SETTINGS)} | ({str(path): sha256_file(path)} if path else {})
    return settings, {"files": files, "from_flags": sorted(given), **settings.model_dump()}
