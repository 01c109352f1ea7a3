"""Logged requests from a database (PostgreSQL via psycopg 3, SQLite, anything SQLAlchemy reaches).

The label of a row comes only from the column the user names (``--label-column``): never from
keywords. A label a keyword router assigned is the router's guess, and a model trained on it learns
the router's mistakes, so the command warns to use labels a person checked. The database URL's
password never appears in a message or a file: URLs are shown masked and error texts are scrubbed.
The query runs through the driver as written, in a transaction that is rolled back.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from harness_tasks.errors import UserError
from harness_tasks.tool_select.tools import parameter_errors

ROUTER_WARNING = ("warning: the labels are taken from the label column as stored. Labels that a keyword "
                  "router assigned teach the model the router's mistakes: use labels a person checked.")
# user:password@ in a URL; the password runs to the last "@" before the host (an unencoded "@" in it
# makes the URL invalid, but must not leak half of it)
_USERINFO = re.compile(r"://[^:/@\s]*:(\S*)@[^@/\s]*")


class DatabaseError(UserError):
    pass


def secrets_in(url: str) -> list[str]:
    """The URL's password as written and decoded (what must never be shown)."""
    found = {m.group(1) for m in _USERINFO.finditer(url)}
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        for password in (parsed.password, parsed.query.get("password")):  # ?password= works with libpq
            if isinstance(password, str) and password:
                found |= {password, quote(password, safe="")}
    except Exception:  # unparseable URL: the pattern above still finds a password
        pass
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def masked(url: str) -> str:
    """The URL as given, with its password replaced by ***."""
    hidden = _USERINFO.sub(lambda m: m.group(0).replace(f":{m.group(1)}@", ":***@", 1), url)
    return scrub(hidden, url)


def scrub(text: str, url: str) -> str:
    for secret in secrets_in(url):
        text = text.replace(secret, "***")
    return text


def _reason(err: Exception) -> str:
    """The driver's own message, first line (SQLAlchemy appends the SQL and a link)."""
    orig = getattr(err, "orig", None) or err
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def fetch(url: str, sql: str) -> tuple[list[str], list[dict]]:
    """(column names, rows as dicts) of ``sql``; any failure is one DatabaseError line."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = masked(url)
    try:
        engine = create_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as err:
        raise DatabaseError(scrub(f"--from-db: not a usable database URL ({shown}): {_reason(err)}", url)) from None
    database = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and database not in (None, "", ":memory:") \
            and not database.startswith("file:") and not Path(database).is_file():
        # SQLite would create an empty database there and then report a missing table
        raise DatabaseError(f"--from-db: no SQLite database file {database}")
    try:
        # The SQL reaches the database as written: text() would read ':word' as a bind parameter, and a
        # driver given even an empty parameter list reads '%' as a placeholder (psycopg: LIKE 'a%').
        with engine.connect() as conn:
            result = conn.execution_options(no_parameters=True).exec_driver_sql(sql)
            if not result.returns_rows:
                raise DatabaseError("--query returned no rows to read; give a SELECT")
            columns = list(result.keys())
            rows = [dict(m) for m in result.mappings()]
            conn.rollback()  # read only: whatever the statement changed is undone
    except SQLAlchemyError as err:
        from sqlalchemy.exc import InterfaceError, OperationalError

        what = "cannot reach or query" if isinstance(err, OperationalError | InterfaceError) else "query failed on"
        raise DatabaseError(scrub(f"--from-db: {what} {shown}: {_reason(err)}", url)) from None
    finally:
        engine.dispose()
    return columns, rows


@dataclass
class Extracted:
    rows: list[dict]
    read: int
    unknown: Counter = field(default_factory=Counter)  # label -> rows dropped (--skip-unknown)
    invalid: int = 0  # rows dropped for parameters that fail the schema (--skip-invalid)
    empty: int = 0  # rows without a request text
    without_reasoning: int = 0  # rows given the tool's fallback reasoning
    without_parameters: int = 0


def fallback_reasoning(spec: dict) -> str:
    """For a logged request without a reasoning column: the tool's purpose, from its description."""
    first = re.split(r"(?<=[.!?])\s", spec["description"].strip(), maxsplit=1)[0]
    return f"This request is for {spec['name']}: {first[0].lower() + first[1:]}"


def _shown(label) -> str:
    return "NULL" if label is None else repr(label)


def extract(columns: list[str], raw: list[dict], specs: list[dict], *, query_column: str, label_column: str,
            parameters_column: str | None = None, reasoning_column: str | None = None,
            skip_unknown: bool = False, skip_invalid: bool = False) -> Extracted:
    """Task rows from database rows: ``query``, ``tool`` (the label column, which must name a declared
    tool), ``parameters`` and ``reasoning`` where their columns are given, ``source: "db"``."""
    for option, column in (("--query-column", query_column), ("--label-column", label_column),
                           ("--parameters-column", parameters_column), ("--reasoning-column", reasoning_column)):
        if column is not None and column not in columns:
            raise DatabaseError(f"{option} {column!r} is not a column of the query's result; columns: {columns}")
    by_name = {s["name"]: s for s in specs}
    out = Extracted(rows=[], read=len(raw))
    invalid_first = None
    for n, r in enumerate(raw):
        query, label = r[query_column], r[label_column]
        label = label.strip() if isinstance(label, str) else label
        if not isinstance(query, str) or not query.strip():
            out.empty += 1
            continue
        if label not in by_name:
            out.unknown[_shown(label)] += 1
            continue
        row = {"id": f"db-{n}", "query": query.strip(), "tool": label}
        params = r[parameters_column] if parameters_column else None
        if isinstance(params, str) and params.strip():
            try:
                params = json.loads(params)
            except json.JSONDecodeError:
                pass  # reported below as not an object
        if params not in (None, ""):
            errors = parameter_errors(by_name[label], params)
            if errors:
                out.invalid += 1
                invalid_first = invalid_first or f"result row {n + 1} ({label}): {errors[0]}"
                continue
            row["parameters"] = params
        else:
            out.without_parameters += 1
        reasoning = r[reasoning_column] if reasoning_column else None
        if not isinstance(reasoning, str) or not reasoning.strip():
            out.without_reasoning += 1
            reasoning = fallback_reasoning(by_name[label])
        out.rows.append({**row, "reasoning": reasoning.strip(), "ambiguous": False, "alternative": None,
                         "source": "db", "tools": specs})
    if out.unknown and not skip_unknown:
        listed = ", ".join(f"{label} ({k} row{'s' * (k > 1)})" for label, k in out.unknown.most_common())
        raise DatabaseError(f"{sum(out.unknown.values())} rows have a {label_column} that is not a declared tool: "
                            f"{listed}; declared: {list(by_name)}. Fix the labels, declare the tool, or pass "
                            "--skip-unknown to drop these rows")
    if out.invalid and not skip_invalid:
        raise DatabaseError(f"{out.invalid} rows have parameters that do not satisfy their tool's schema, e.g. "
                            f"{invalid_first}; fix them or pass --skip-invalid to drop these rows")
    return out
