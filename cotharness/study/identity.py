"""A stage's identity, the record of finished stages (``studies/<name>/state.json``) and the plan.

Identity = sha256 over the canonical JSON of the stage's resolved config, its inputs, the hashes of the
prompt templates it renders and the package version. An input the study is given (the teacher's pairs,
the test file, ready SFT files) counts by its sha256; an input another stage writes counts by that
stage's identity, so an identity is known before anything runs and does not change when its upstream
finishes (a retrained adapter never has the same bytes twice). ``plan`` compares the identities with
what state.json recorded.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import prompts
from cotharness.study.graph import Stage
from harness_tasks.manifest import sha256_file, write_atomic

STATE_FILE = "state.json"
MISSING = "missing"
STATUSES = ("current", "new", "changed", "stale")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cotharness")
    except PackageNotFoundError:
        return "unknown"


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Identity:
    digest: str
    config: dict
    inputs: dict[str, str]
    """input name -> sha256 of the file, ``missing``, or ``stage <id> <identity>``"""
    templates: dict[str, str]
    version: str

    def record(self) -> dict:
        return {"identity": self.digest, "config": self.config, "inputs": self.inputs,
                "templates": self.templates, "version": self.version}


def identities(stages: list[Stage], version: str | None = None) -> dict[str, Identity]:
    """Every stage's identity, in order (an upstream's before its dependants')."""
    version = version or package_version()
    out: dict[str, Identity] = {}
    for stage in stages:
        inputs = {}
        for name, path in stage.inputs.items():
            producer = stage.produced_by.get(name)
            if producer:
                inputs[name] = f"stage {producer} {out[producer].digest}"
            else:
                inputs[name] = sha256_file(path) if Path(path).is_file() else MISSING
        templates = {name: prompts.template_hash(name) for name in stage.templates}
        body = {"kind": stage.kind, "config": stage.config, "inputs": inputs, "templates": templates,
                "version": version}
        digest = hashlib.sha256(canonical(body).encode()).hexdigest()
        out[stage.id] = Identity(digest, stage.config, inputs, templates, version)
    return out


def state_path(home: Path | str) -> Path:
    return Path(home) / STATE_FILE


def read_state(home: Path | str) -> dict:
    path = state_path(home)
    if not path.is_file():
        return {"stages": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {"stages": {}}  # written atomically, so only a hand edit breaks it: nothing is current then
    data.setdefault("stages", {})
    return data


def record(home: Path | str, stage: Stage, identity: Identity, finished: str | None = None,
           seconds: float | None = None) -> Path:
    """Record ``stage`` as finished with ``identity`` (what ``run`` does after a stage succeeds), and the
    wall seconds it took when given (the report's compute time)."""
    state = read_state(home)
    state["stages"][stage.id] = {**identity.record(), "kind": stage.kind, "outputs": list(stage.outputs),
                                 "finished": finished or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 **({"seconds": seconds} if seconds is not None else {})}
    return write_atomic(state_path(home), json.dumps(state, indent=2, sort_keys=True, default=str) + "\n")


def record_started(home: Path | str, stage: Stage, identity: Identity) -> Path:
    """Record that ``stage`` started with ``identity`` (a training: whether a checkpoint left in its run
    dir by a cut run may be resumed, or belongs to another config)."""
    state = read_state(home)
    state.setdefault("started", {})[stage.id] = identity.digest
    return write_atomic(state_path(home), json.dumps(state, indent=2, sort_keys=True, default=str) + "\n")


def started(home: Path | str, stage_id: str) -> str | None:
    """The identity ``stage_id`` last started with, if recorded."""
    return read_state(home).get("started", {}).get(stage_id)


@dataclass
class Verdict:
    stage: Stage
    status: str
    reasons: list[str] = field(default_factory=list)
    identity: Identity | None = None
    recorded: dict | None = None
    """what state.json holds for the stage, if anything"""

    @property
    def outputs_present(self) -> list[str]:
        return [p for p in self.stage.outputs if Path(p).exists()]


def plan(stages: list[Stage], home: Path | str, version: str | None = None) -> list[Verdict]:
    """Each stage as current (recorded identity matches and its outputs exist), new (never recorded),
    changed (recorded with another identity, or its outputs are gone: the reasons say which) or stale (its
    own identity matches but an upstream stage will run again)."""
    ids = identities(stages, version)
    recorded = read_state(home)["stages"]
    rerun: set[str] = set()
    out = []
    for stage in stages:
        ident, rec = ids[stage.id], recorded.get(stage.id)
        missing = [p for p in stage.outputs if not Path(p).exists()]
        if rec is None:
            verdict = Verdict(stage, "new", [], ident, None)
        elif rec.get("identity") != ident.digest:
            verdict = Verdict(stage, "changed", differences(rec, ident, stage), ident, rec)
        elif missing:
            verdict = Verdict(stage, "changed", [f"output missing: {p}" for p in missing], ident, rec)
        elif any(d in rerun for d in stage.dependencies):
            verdict = Verdict(stage, "stale", [f"{d} runs again" for d in stage.dependencies if d in rerun], ident, rec)
        else:
            verdict = Verdict(stage, "current", [], ident, rec)
        if verdict.status != "current":
            rerun.add(stage.id)
        out.append(verdict)
    return out


def flatten(data, prefix: str = "") -> dict:
    if isinstance(data, dict) and data:
        out = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def differences(recorded: dict, ident: Identity, stage: Stage) -> list[str]:
    """What differs between a recorded identity and the current one, in words."""
    out = []
    old, new = flatten(recorded.get("config", {})), flatten(ident.config)
    for key in sorted(set(old) | set(new)):
        if old.get(key, MISSING) != new.get(key, MISSING):
            out.append(f"config {key}: {_short(old.get(key))} -> {_short(new.get(key))}")
    old_inputs = recorded.get("inputs", {})
    for name in sorted(set(old_inputs) | set(ident.inputs)):
        if old_inputs.get(name) != ident.inputs.get(name):
            producer = stage.produced_by.get(name)
            if producer:
                out.append(f"input {name}: stage {producer} changed")
            elif ident.inputs.get(name) == MISSING:
                out.append(f"input file {stage.inputs.get(name)} is missing")
            else:
                out.append(f"input file {stage.inputs.get(name, name)} changed")
    old_templates = recorded.get("templates", {})
    for name in sorted(set(old_templates) | set(ident.templates)):
        if old_templates.get(name) != ident.templates.get(name):
            out.append(f"template {name}.j2 changed")
    if recorded.get("version") != ident.version:
        out.append(f"version {recorded.get('version')} -> {ident.version}")
    return out or ["identity differs (recorded by another layout of the identity)"]
