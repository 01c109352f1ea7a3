"""One invocation of a stage (any workload's), from the command line's settings to the closing summary.

Reads and validates the input, opens (locks, repairs) the output, plans the requests, refreshes
finished rows whose input changed and drops those the stage no longer wants, runs the requests on
the chosen backend, rewrites the output with one row per id, writes ``<out>.manifest.json`` and
prints the summary. ``dry_run`` stops after planning: it reads the output as a run would (a torn
tail left out, in memory), prints the first request and an estimate of the tokens and the cost, and
sends and writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.table import Table

import prompts
from datagen.engine import runner
from datagen.engine.backends import BACKENDS, make_backend
from datagen.engine.cli_checks import UsageError, choice, server_url, task_spec
from datagen.engine.pricing import Price, estimate_tokens, price_for
from datagen.engine.runner import Budget, Item, Options, Recorder, Tally, console
from datagen.engine.stage import Stage
from datagen.engine.store import JsonlStore, row_key, sidecar
from harness_tasks import manifest
from harness_tasks.data_files import is_empty
from harness_tasks.secrets import api_key, redact
from harness_tasks.tables import read_table
from harness_tasks.tasks import TaskSpec

TYPICAL_ANSWER_TOKENS = 250  # dry-run estimate before any answer of this run exists


@dataclass
class StageRun:
    stage: str
    input: Path
    out: Path
    model: str
    backend: str = "mistral"
    task: str = "nli_cot"
    server_url: str | None = None
    label_column: str = "label"
    empty_labels: str = "error"
    """thoughts: rows with an empty gold label are an error, or skipped ("skip")"""
    limit: int | None = None
    dry_run: bool = False
    temperature: float = 0.0
    top_p: float | None = None
    max_tokens: int = 1024
    seed: int | None = 0
    response_format: str = "json_object"
    """json_object | json_schema | none"""
    timeout: float = 120.0
    prices: Path | None = None
    backend_args: dict = field(default_factory=dict)
    """backend-specific settings: hf (adapter, batch_size, load_in_4bit, device, use_chat_template),
    batch (poll_interval)"""
    options: Options = field(default_factory=Options)
    extra: dict = field(default_factory=dict)
    """more for the manifest (e.g. the settings file a command read)"""


def manifest_path(out: Path) -> Path:
    return sidecar(out, "manifest")


def response_format(kind: str, stage: Stage) -> dict | None:
    if kind == "none":
        return None
    if kind == "json_schema":  # structured output: the server constrains decoding to our schema
        return {"type": "json_schema", "json_schema": {"name": f"cotharness_{stage.name}",
                                                        "schema": stage.answer_model.model_json_schema(),
                                                        "strict": True}}
    return {"type": "json_object"}


def params(cfg: StageRun) -> dict:
    out = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    if cfg.top_p is not None:
        out["top_p"] = cfg.top_p
    if cfg.seed is not None:
        out["random_seed"] = cfg.seed
    return out


def run(cfg: StageRun, stage: Stage | Callable[[TaskSpec], Stage],
        rows: list[dict] | Callable[[TaskSpec], list[dict]]) -> Tally:
    """Run one stage; returns what it did (also printed and recorded in the manifest).

    ``stage`` and ``rows``: the workload's stage and its validated input rows, or functions of the task
    that make them (called after every setting is checked, so a wrong option is reported before the
    input is read: the teacher's ``datagen.teacher.stages.run``).
    """
    from datagen.engine.backends import endpoint

    # every setting is checked before the input is read, a request sent or a model loaded
    choice("--backend", cfg.backend, BACKENDS)
    server_url(cfg.server_url)
    task = task_spec(cfg.task)
    choice("--response-format", cfg.response_format, ("json_object", "json_schema", "none"))
    if cfg.out.suffix != ".jsonl":
        raise UsageError(f"--out {cfg.out}: the output is JSONL; name it *.jsonl")
    if cfg.out.is_dir():
        raise UsageError(f"--out {cfg.out}: is a directory; the output is one JSONL file")
    stage = stage if isinstance(stage, Stage) else stage(task)
    if stage.answer_model is None and cfg.response_format != "none":
        raise UsageError(f"{cfg.stage} is answered in free text, not JSON: use --response-format none")
    if callable(rows):
        rows = rows(task)
    rows = rows[: cfg.limit]
    price = price_for(cfg.model, cfg.backend, cfg.prices)
    if cfg.options.max_cost is not None and price is None:
        raise UsageError(f"--max-cost needs the price of {cfg.model!r}: add it to "
                         f"{cfg.prices or 'configs/datagen/prices.yaml'} or pass --prices FILE")
    tally, fmt = Tally(), response_format(cfg.response_format, stage)
    where = endpoint(cfg.backend, cfg.model, cfg.server_url, cfg.backend_args)
    if cfg.dry_run:
        store = JsonlStore.peek(cfg.out)
        todo = runner.plan(stage, rows, store, where, cfg.model, fmt, params(cfg), cfg.options, tally)
        print_dry_run(cfg, todo.items, tally, price, store)
        return tally

    # A missing key, model or adapter is reported now, before the output is touched.
    backend = None if cfg.backend == "mistral-batch" else make_backend(
        cfg.backend, cfg.model, cfg.server_url, cfg.timeout, cfg.backend_args, cfg.options.concurrency)
    if cfg.backend == "mistral-batch":
        api_key(required=cfg.server_url is None)
    started = time.monotonic()
    with JsonlStore(cfg.out) as store:
        if store.torn:
            console.print(f"[yellow]{cfg.out}: cut off a torn last line ({store.torn} bytes) left by a killed run")
        todo = runner.plan(stage, rows, store, where, cfg.model, fmt, params(cfg), cfg.options, tally)
        for row in todo.refreshed:
            store.append(row)
        store.discard(todo.dropped)
        items = todo.items
        progress, update = runner.progress_bar(cfg.stage, len(items))
        recorder = Recorder(stage, store, cfg.backend, tally, price, on_row=lambda: update(tally))
        budget = Budget(cfg.options.max_cost, price, tally)
        error = None
        try:
            with progress:
                asyncio.run(_execute(cfg, backend, items, recorder, budget))
        except BaseException as err:  # noqa: BLE001 - recorded, then raised again after the summary
            error = err
            tally.stopped = tally.stopped or _why(err)
        finally:
            if budget.refused:
                tally.stopped = budget.reason()  # with what the requests in flight cost after the refusal
            store.compact([row_key(r) for r in rows])
            report = stage.report(list(store.rows.values())) if stage.report else {}
            _write_manifest(cfg, stage, store, tally, price, where, runner.elapsed(started), report)
        print_summary(cfg, tally, price, runner.elapsed(started), store, report)
        if error is not None:
            raise error
    return tally


async def _execute(cfg: StageRun, backend, items: list[Item], recorder: Recorder, budget: Budget) -> None:
    if backend is None:
        from datagen.engine.backends.mistral_batch import run_batch

        if items:
            await run_batch(cfg, items, recorder, budget)
        return
    try:
        if items:
            await runner.run_live(items, backend, recorder, cfg.options, budget)
    finally:
        await backend.aclose()


def _why(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt | asyncio.CancelledError):
        return "interrupted"
    return redact(str(err)) or type(err).__name__


def _skipped(cfg: StageRun) -> dict:
    """With ``empty_labels="skip"``: how many input rows were left out for an empty gold label."""
    if cfg.stage != "thoughts" or cfg.empty_labels != "skip":
        return {}
    table = read_table(cfg.input)
    empty = sum(1 for _, row in table.rows if cfg.label_column in row and is_empty(row[cfg.label_column]))
    return {"empty_labels": "skip", "skipped_empty_label": empty}


def _write_manifest(cfg: StageRun, stage: Stage, store: JsonlStore, tally: Tally, price: Price | None,
                    where: str, wall: float, report: dict) -> None:
    path = manifest_path(cfg.out)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    statuses = _statuses(store, cfg.stage)
    templates = (*stage.templates, stage.task.template)
    data = {
        "stage": cfg.stage, "task": stage.task.name, "backend": cfg.backend, "model": cfg.model,
        "endpoint": redact(where),
        "request": {"response_format": cfg.response_format, **params(cfg), "max_reprompts": cfg.options.max_reprompts},
        "prompts": {name: prompts.template_hash(name) for name in templates},
        "input": {"path": str(cfg.input), "sha256": manifest.sha256_file(cfg.input), "rows": tally.rows,
                  **_skipped(cfg)},
        "output": {"path": str(cfg.out), "rows": len(store.rows), "ok": statuses.count("ok"),
                   "failed": statuses.count("failed")},
        "price": asdict(price) if price else None, **({"report": report} if report else {}), **cfg.extra,
        "versions": manifest.package_versions(), "git": manifest.git_commit(),
        "runs": [*previous.get("runs", []), {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_seconds": wall,
                                             **_tally_dict(tally)}],
    }
    manifest.write_atomic(path, json.dumps(data, indent=2, default=str))


def _statuses(store: JsonlStore, stage: str) -> list[str | None]:
    return [r.get("meta", {}).get(stage, {}).get("status") for r in store.rows.values()]


def _tally_dict(tally: Tally) -> dict:
    out = asdict(tally)
    out["failures"] = [{"id": i, "error": e} for i, e in tally.failures]
    out["not_run"] = tally.not_run
    return out


def print_summary(cfg: StageRun, tally: Tally, price: Price | None, wall: float, store: JsonlStore,
                  report: dict | None = None) -> None:
    table = Table(title=f"datagen {cfg.stage}: {cfg.model} ({cfg.backend}) -> {cfg.out}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("rows", f"{tally.rows} in the input; {tally.not_selected} not for this stage, "
                          f"{tally.done_before} done and {tally.failed_before} failed earlier (skipped)")
    table.add_row("refreshed", f"{tally.refreshed} of those rewritten from their changed input (gold label, other "
                               "columns), without a request")
    if tally.dropped:
        table.add_row("dropped", f"{len(tally.dropped)} finished row(s) the changed input no longer selects for "
                                 f"this stage (reflect: the teacher is now right), e.g. id {tally.dropped[0]!r}: "
                                 "taken out of the output (all ids in the manifest)")
    table.add_row("this run", f"done {tally.done}, failed {tally.failed}, not run {tally.not_run}")
    table.add_row("re-prompts", f"{tally.reprompts} (repaired JSON accepted: {tally.repaired})")
    table.add_row("retries", f"{tally.retries} (429, 5xx, timeouts)")
    table.add_row("tokens", f"{tally.tokens_in:,} in, {tally.tokens_out:,} out")
    table.add_row("cost", f"${tally.cost:.4f} at {price.describe()}" if price else
                  f"unknown: {cfg.model} is not in the price table")
    rate = (tally.done + tally.failed) / wall if wall else 0
    table.add_row("wall time", f"{wall:.1f} s ({rate:.2f} rows/s)")
    statuses = _statuses(store, cfg.stage)
    table.add_row("output", f"{len(store.rows)} rows: {statuses.count('ok')} ok, {statuses.count('failed')} failed")
    for name, value in (report or {}).items():  # the stage's own counts, e.g. a score distribution
        table.add_row(name, ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value))
    console.print(table)
    for row_id, error in tally.failures[:20]:
        console.print(f"[red]failed[/] id {row_id}: {error}", markup=True, highlight=False)
    if len(tally.failures) > 20:
        console.print(f"... and {len(tally.failures) - 20} more (listed in {manifest_path(cfg.out)})")
    if tally.stopped:
        console.print(f"[yellow]stopped: {tally.stopped}; rerun the same command to continue")


def print_dry_run(cfg: StageRun, items: list[Item], tally: Tally, price: Price | None, store: JsonlStore) -> None:
    if items:
        console.print("[bold]first request[/] (of this run):")
        console.print_json(json.dumps(items[0].request.body(), ensure_ascii=False))
    done = [r["meta"][cfg.stage] for r in store.rows.values()
            if r.get("meta", {}).get(cfg.stage, {}).get("status") == "ok"]
    per_row_out = (sum(m["tokens_out"] for m in done) / len(done)) if done else TYPICAL_ANSWER_TOKENS
    tokens_in = sum(estimate_tokens("".join(m["content"] for m in i.request.messages)) for i in items)
    tokens_out = int(per_row_out * len(items))
    worst_out = cfg.max_tokens * len(items)
    console.print(f"{len(items)} request(s) to send ({tally.rows} rows; {tally.not_selected} not for this stage, "
                  f"{tally.done_before} done, {tally.failed_before} failed earlier)")
    if store.torn:
        console.print(f"{cfg.out}: a run would cut off a torn last line ({store.torn} bytes)")
    if tally.refreshed or tally.dropped:
        console.print(f"a run would refresh {tally.refreshed} finished row(s) from their changed input (no request) "
                      f"and drop {len(tally.dropped)} this stage no longer asks about")
    basis = "mean of this output's answers" if done else "a typical CoT answer"
    console.print(f"tokens: ~{tokens_in:,} in (at most; 1 token per 3 characters), ~{tokens_out:,} out "
                  f"({per_row_out:.0f} per row: {basis}; at most {worst_out:,}), before any re-prompt")
    if price is None:
        console.print(f"cost: unknown ({cfg.model} is not in the price table)")
    else:
        console.print(f"cost: ~${price.cost(tokens_in, tokens_out):.4f}, at most ${price.cost(tokens_in, worst_out):.4f} "
                      f"({price.describe()})")
