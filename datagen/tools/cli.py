"""``cotharness datagen tools``: tool_select data from a tools file and, optionally, a database of
logged requests: synthesis, merge, deduplication, an 80/10/10 split stratified by tool, manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datagen.engine.cli_checks import UsageError as _Usage
from datagen.engine.cli_checks import existing
from datagen.engine.cli_options import Force, Seed
from datagen.tools import data as tools_data
from datagen.tools import db as tools_db
from harness_tasks.errors import UserError, traceback_if_debugging
from harness_tasks.manifest import sha256_file
from harness_tasks.tool_select.tools import DEFAULT_TOOLS_FILE, load_tools

DEFAULT_PER_TOOL, DEFAULT_AMBIGUOUS = 100, 10


class UsageError(_Usage, ValueError):
    pass


def build(out: Path, tools_file: Path | None = None, *, per_tool: int = DEFAULT_PER_TOOL,
          ambiguous_per_tool: int = DEFAULT_AMBIGUOUS, seed: int = 0, synthetic: bool = True,
          db_url: str | None = None, db_query: str | None = None, query_column: str = "query",
          label_column: str | None = None, parameters_column: str | None = None,
          reasoning_column: str | None = None, skip_unknown: bool = False, skip_invalid: bool = False,
          log=None, force: bool = False) -> dict:
    """Write the dataset; returns the manifest. Raises UsageError, ToolsFileError, SynthesisError,
    DatabaseError (one line each; the command prints it)."""
    log = log or _echo
    tools_path = Path(tools_file) if tools_file else DEFAULT_TOOLS_FILE
    if (db_url is None) != (db_query is None):
        raise UsageError("--from-db and --query go together: the database URL and the SELECT "
                                     "that reads the logged requests")
    if db_url is not None and not label_column:
        raise UsageError("--from-db needs --label-column: the column holding each request's tool, "
                                     "as a person checked it (labels are never inferred)")
    if not synthetic and db_url is None:
        raise UsageError("--no-synthetic without --from-db leaves nothing to write")
    existing(out, ("train.jsonl", "dev.jsonl", "test.jsonl", "tools.yaml", "manifest.json"), force)
    tools = load_tools(tools_path)
    specs = tools.specs()
    manifest: dict = {"command": "cotharness datagen tools",
                      "tools_file": {"path": str(tools_file) if tools_file else "bundled tool_select/tools.yaml",
                                     "sha256": sha256_file(tools_path)},
                      "options": {"per_tool": per_tool, "ambiguous_per_tool": ambiguous_per_tool, "seed": seed,
                                  "synthetic": synthetic, "splits": tools_data.SPLITS},
                      "database": None}
    rows: list[dict] = []
    if db_url is not None:
        log(tools_db.ROUTER_WARNING, err=True)
        columns, raw = tools_db.fetch(db_url, db_query)
        got = tools_db.extract(columns, raw, specs, query_column=query_column, label_column=label_column,
                               parameters_column=parameters_column, reasoning_column=reasoning_column,
                               skip_unknown=skip_unknown, skip_invalid=skip_invalid)
        rows, duplicates, conflicting = tools_data.dedupe(got.rows)
        manifest["database"] = {
            "url": tools_db.masked(db_url), "query": tools_db.scrub(db_query, db_url),
            "columns": {"query": query_column, "label": label_column, "parameters": parameters_column,
                        "reasoning": reasoning_column},
            "rows_read": got.read, "rows_kept": len(rows), "dropped_unknown_label": dict(got.unknown),
            "dropped_invalid_parameters": got.invalid, "dropped_empty_query": got.empty,
            "dropped_duplicates": duplicates, "duplicates_with_another_label": conflicting,
            "without_parameters": got.without_parameters, "fallback_reasoning": got.without_reasoning}
        dropped = [f"{n} {why}" for n, why in (
            (sum(got.unknown.values()), "with an undeclared label"), (got.invalid, "with invalid parameters"),
            (got.empty, "without a request"), (duplicates, f"duplicates ({conflicting} labelled differently)")) if n]
        log(f"database {tools_db.masked(db_url)}: {got.read} rows read, {len(rows)} kept"
            + (f"; dropped: {', '.join(dropped)}" if dropped else ""))
        if got.without_parameters:
            log(f"warning: {got.without_parameters} database rows have no gold parameters"
                f"{'' if parameters_column else ' (no --parameters-column)'}: they are scored on the tool "
                "only, and training on them teaches answers without parameters", err=True)
        if got.without_reasoning:
            log(f"note: {got.without_reasoning} database rows have no reasoning and get a generic one from their "
                "tool's description (--reasoning-column to use your own)", err=True)
    if synthetic:
        seen = {tools_data.normalise_query(r["query"]) for r in rows}  # a logged request wins over a template
        rows += tools_data.synthesize(tools, per_tool, ambiguous_per_tool, seed, tools_path, seen)
    if not rows:
        raise tools_db.DatabaseError("no rows to write: the query gave no usable requests")
    splits = tools_data.split(rows, seed)
    manifest = tools_data.write(out, splits, tools_path, manifest)
    for name, c in manifest["splits"].items():
        log(f"{name}: {out / (name + '.jsonl')} ({c['rows']} rows, {c['ambiguous']} ambiguous; "
            + ", ".join(f"{t} {k}" for t, k in c["tools"].items()) + ")")
    return manifest


def _echo(message: str, err: bool = False) -> None:
    typer.echo(message, err=err)


def command(
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl, dev.jsonl, test.jsonl, tools.yaml, "
                                           "manifest.json.")],
    tools: Annotated[Path | None, typer.Option(help="Tools YAML (default: the bundled four tools).")] = None,
    per_tool: Annotated[int, typer.Option(min=1, max=100_000, help="Synthetic requests per tool.")]
    = DEFAULT_PER_TOOL,
    ambiguous_per_tool: Annotated[int, typer.Option(
        min=0, max=100_000, help="Extra requests per tool that plausibly fit two tools (flagged ambiguous).")]
    = DEFAULT_AMBIGUOUS,
    seed: Seed = 0, force: Force = False,
    synthetic: Annotated[bool, typer.Option(help="Write synthetic requests (merged with --from-db rows).")] = True,
    from_db: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of logged requests: postgresql+psycopg://user:password@host/db, sqlite:///file.db.")]
    = None,
    query: Annotated[str | None, typer.Option(help="SELECT that reads the logged requests (with --from-db).")] = None,
    query_column: Annotated[str, typer.Option(help="Result column with the request text.")] = "query",
    label_column: Annotated[str | None, typer.Option(
        help="Result column with each request's tool, as a person checked it (required with --from-db).")] = None,
    parameters_column: Annotated[str | None, typer.Option(
        help="Result column with the gold parameters (JSON object or its text).")] = None,
    reasoning_column: Annotated[str | None, typer.Option(help="Result column with a reasoning to train on.")] = None,
    skip_unknown: Annotated[bool, typer.Option(help="Drop rows whose label is not a declared tool.")] = False,
    skip_invalid: Annotated[bool, typer.Option(help="Drop rows whose parameters fail their tool's schema.")] = False,
):
    """tool_select data: synthetic requests from the tools YAML and/or logged requests from a database."""
    try:
        build(out, tools, per_tool=per_tool, ambiguous_per_tool=ambiguous_per_tool, seed=seed, synthetic=synthetic,
              db_url=from_db, db_query=query, query_column=query_column, label_column=label_column,
              parameters_column=parameters_column, reasoning_column=reasoning_column, skip_unknown=skip_unknown,
              skip_invalid=skip_invalid, log=_echo, force=force)
    except (UserError, OSError) as err:
        traceback_if_debugging()
        message = str(err) if from_db is None else tools_db.scrub(str(err), from_db)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(getattr(err, "exit_code", 2)) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: each file is either complete or untouched; rerun the same command with --force", err=True)
        raise typer.Exit(130) from None
