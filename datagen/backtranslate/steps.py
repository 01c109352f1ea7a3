"""The step functions of ``datagen backtranslate augment`` and ``datagen curate``, each with its typed
config: the commands (``datagen/backtranslate/cli.py``) and ``cotharness study run`` call the same
functions. Settings given as ``None`` come from ``configs/datagen/backtranslate.yaml`` (and ``config``,
read over it); a user's mistake raises a UserError, rows that failed are in the returned tally.
(``inverse`` needs no wrapper: ``datagen.backtranslate.inverse.invert`` is its step function.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness_tasks import manifest

# sampling and judging settings a caller may give; None: the settings file's value
AUGMENT_SETTINGS = ("temperature", "top_p", "max_tokens", "seed", "max_reprompts")
CURATE_SETTINGS = ("model", "threshold", "temperature", "max_tokens", "max_reprompts")


@dataclass(kw_only=True)
class Requests:
    """What both steps share: how requests are made, limited, priced and resumed."""

    dry_run: bool = False
    timeout: float = 120.0
    rpm: int | None = None
    tpm: int | None = None
    max_retries: int = 6
    max_cost: float | None = None
    retry_failed: bool = False
    redo_changed: bool = False
    prices: Path | None = None


@dataclass(kw_only=True)
class AugmentRun(Requests):
    input: Path
    out: Path
    model: str
    backend: str = "mistral"
    server_url: str | None = None
    adapter: Path | None = None
    load_in_4bit: bool = False
    device: str | None = None
    batch_size: int | None = None
    concurrency: int | None = None
    settings: dict = field(default_factory=dict)
    """AUGMENT_SETTINGS given over the settings file (None or absent: the file's)"""
    config: Path | None = None
    limit: int | None = None
    response_column: str = "response"
    poll_interval: float | None = 30.0
    usable_out: Path | None = None
    """also write the pairs that got an instruction, as ``{id, instruction, response}`` (training rows)"""


@dataclass
class AugmentResult:
    tally: object
    duplicates: list[tuple[int, int]]
    """(line, first line) of the repeated responses left out of the input"""
    usable: int | None = None
    """rows written to ``usable_out``"""


def augment(cfg: AugmentRun) -> AugmentResult:
    """The backward model writes the instruction each unlabelled response answers (resumable)."""
    from datagen.backtranslate import settings as backtranslate_settings
    from datagen.backtranslate.augment import augment_stage, read_responses
    from datagen.engine.cli_checks import api_key_for, backend_settings
    from datagen.engine.pipeline import StageRun, run
    from datagen.engine.runner import Options

    s, record = backtranslate_settings.load(cfg.config, "augment", dict(
        {k: cfg.settings.get(k) for k in AUGMENT_SETTINGS}, batch_size=cfg.batch_size, concurrency=cfg.concurrency))
    local = cfg.backend == "hf"
    # a model fine-tuned by `cotharness train` saw the project's instruction wrapper, not a chat template
    in_flight, backend_args = backend_settings(
        cfg.backend, cfg.model, cfg.server_url, concurrency=cfg.concurrency, batch_size=cfg.batch_size,
        adapter=cfg.adapter, load_in_4bit=cfg.load_in_4bit, device=cfg.device, poll_interval=cfg.poll_interval,
        use_chat_template=False if local else None, default_concurrency=s.concurrency,
        default_batch_size=s.batch_size)
    api_key_for(cfg.backend, cfg.server_url, cfg.dry_run)
    loaded = read_responses(cfg.input, cfg.response_column)
    stage_run = StageRun(
        stage="augment", input=cfg.input, out=cfg.out, model=cfg.model, backend=cfg.backend, task="backward",
        server_url=cfg.server_url, limit=cfg.limit, dry_run=cfg.dry_run, temperature=s.temperature, top_p=s.top_p,
        max_tokens=s.max_tokens, seed=s.seed, response_format="none", timeout=cfg.timeout, prices=cfg.prices,
        backend_args=backend_args,
        options=Options(concurrency=in_flight, max_reprompts=s.max_reprompts, rpm=cfg.rpm, tpm=cfg.tpm,
                        max_retries=cfg.max_retries, max_cost=cfg.max_cost, retry_failed=cfg.retry_failed,
                        redo_changed=cfg.redo_changed),
        extra={"settings": record, "input_duplicates_left_out": [
            {"line": line, "first_on_line": first} for line, first in loaded.duplicates]})
    tally = run(stage_run, stage=augment_stage(), rows=loaded.rows)
    usable = None
    if cfg.usable_out is not None and not cfg.dry_run:
        usable = write_usable(cfg.out, cfg.usable_out)
    return AugmentResult(tally, loaded.duplicates, usable)


def write_usable(pairs: Path, out: Path) -> int:
    """``out``: every pair of augment's output that got an instruction (failed rows left out), as
    training rows ``{id, instruction, response}``, written whole; returns how many."""
    from datagen.engine.store import JsonlStore

    rows = [r for r in JsonlStore.read(pairs).values() if r.get("instruction")] if pairs.is_file() else []
    manifest.write_atomic(out, "".join(json.dumps({"id": r["id"], "instruction": r["instruction"],
                                                   "response": r["response"]}, ensure_ascii=False) + "\n"
                                       for r in rows))
    return len(rows)


@dataclass(kw_only=True)
class CurateRun(Requests):
    input: Path
    out: Path
    backend: str = "mistral"
    server_url: str | None = None
    settings: dict = field(default_factory=dict)
    """CURATE_SETTINGS given over the settings file (None or absent: the file's)"""
    config: Path | None = None
    seed: int | None = 0
    concurrency: int | None = None
    batch_size: int | None = None
    limit: int | None = None
    adapter: Path | None = None
    load_in_4bit: bool = False
    device: str | None = None
    poll_interval: float | None = 30.0


@dataclass
class CurateResult:
    tally: object
    settings: object
    """the curate settings used (model, threshold, ...)"""
    filtered: object | None
    """``datagen.backtranslate.curate.Filtered`` (None on a dry run)"""


def curate(cfg: CurateRun) -> CurateResult:
    """A judge rates each pair 1-5 (resumable: every score kept in ``<out>.scores.jsonl``); ``out`` gets
    the pairs rated >= threshold, rebuilt from the saved scores every run."""
    from datagen.backtranslate import settings as backtranslate_settings
    from datagen.backtranslate.curate import curate_stage, read_pairs, scores_path, write_curated
    from datagen.engine.backends import endpoint
    from datagen.engine.cli_checks import UsageError, api_key_for, backend_settings
    from datagen.engine.pipeline import StageRun, run
    from datagen.engine.runner import Options
    from harness_tasks.secrets import redact

    if cfg.out.suffix != ".jsonl":
        raise UsageError(f"--out {cfg.out}: the output is JSONL; name it *.jsonl")
    s, record = backtranslate_settings.load(cfg.config, "curate", dict(
        {k: cfg.settings.get(k) for k in CURATE_SETTINGS}, concurrency=cfg.concurrency, batch_size=cfg.batch_size))
    in_flight, backend_args = backend_settings(
        cfg.backend, s.model, cfg.server_url, concurrency=cfg.concurrency, batch_size=cfg.batch_size,
        adapter=cfg.adapter, load_in_4bit=cfg.load_in_4bit, device=cfg.device, poll_interval=cfg.poll_interval,
        default_concurrency=s.concurrency, default_batch_size=s.batch_size)
    api_key_for(cfg.backend, cfg.server_url, cfg.dry_run)
    rows = read_pairs(cfg.input)[: cfg.limit]
    stage_run = StageRun(
        stage="curate", input=cfg.input, out=scores_path(cfg.out), model=s.model, backend=cfg.backend,
        task="instruct", server_url=cfg.server_url, dry_run=cfg.dry_run, temperature=s.temperature,
        max_tokens=s.max_tokens, seed=cfg.seed, response_format="none", timeout=cfg.timeout, prices=cfg.prices,
        backend_args=backend_args,
        options=Options(concurrency=in_flight, max_reprompts=s.max_reprompts, rpm=cfg.rpm, tpm=cfg.tpm,
                        max_retries=cfg.max_retries, max_cost=cfg.max_cost, retry_failed=cfg.retry_failed,
                        redo_changed=cfg.redo_changed),
        extra={"settings": record})
    tally = run(stage_run, stage=curate_stage(), rows=rows)
    if cfg.dry_run:
        return CurateResult(tally, s, None)
    judge = {"model": s.model, "backend": cfg.backend,
             "endpoint": redact(endpoint(cfg.backend, s.model, cfg.server_url, backend_args))}
    return CurateResult(tally, s, write_curated(cfg.out, rows, s.threshold, judge, cfg.input))
