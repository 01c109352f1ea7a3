"""`cotharness datagen tools --from-db`: logged requests from a real PostgreSQL server (started here)
and from SQLite; labels only from the named column; the password never shown."""

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotharness.cli import app

PASSWORD = "pw-" + secrets.token_hex(8)  # random, so any occurrence in an output is a leak
ROUTER_WARNING = "teach the model the router's mistakes"

# (request, tool a person checked, tool a keyword router chose, the call's parameters)
LOG = [
    ("What does our travel policy say about the exceptions?", "rag_retrieval", "rag_retrieval",
     {"query": "travel policy exceptions", "collection": "policies"}),
    ("search our wiki for the VPN reset steps", "rag_retrieval", "search",
     {"query": "VPN reset steps", "collection": "handbook"}),
    ("Any news today about interest rates?", "web_search", "search", {"query": "interest rates news", "recency": "day"}),
    ("calculate how many weeks until my 40:1 loan is paid", "code_execution", "calc",
     {"code": "print(40 / 1)"}),
    ("thanks, you're great", "direct_chat", None, {}),
    ("Thanks,  you're GREAT", "direct_chat", None, {}),  # the same request again
    ("What is 37 multiplied by 19?", "code_execution", "code_execution", None),  # no logged call
    ("not reviewed yet", None, "search", None),
]
SELECT = ("SELECT user_query, reviewed_tool, call FROM agent_log "
          "WHERE reviewed_tool IS NOT NULL AND user_query NOT LIKE 'zz%' ORDER BY id")


def _server_bin() -> Path:
    """The directory with initdb and pg_ctl: pg_config's, PATH's, or Debian's versioned directory."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        candidates.append(Path(out))
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are not installed; the --from-db tests need a "
                "real server: install them (Debian/Ubuntu: apt-get install postgresql; .ci/run does this)",
                pytrace=False)


def _run(cmd, log: Path | None = None):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    if proc.returncode:
        extra = log.read_text() if log and log.is_file() else ""
        pytest.fail(f"{cmd[0] if cmd[0] != 'runuser' else cmd[4]} failed:\n{proc.stdout}{proc.stderr}{extra}",
                    pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server in a temporary directory, with password authentication; yields its URL.

    PostgreSQL refuses to run as root, so as root the server runs as the postgres (or nobody) user."""
    bindir = _server_bin()
    base = Path(tempfile.mkdtemp(prefix="cotharness-pg-"))
    (base / "pw").write_text(PASSWORD)
    prefix = []
    if os.geteuid() == 0:
        user = next(u for u in ("postgres", "nobody") if _has_user(u))
        entry = pwd.getpwnam(user)
        for path in (base, base / "pw"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        prefix = ["runuser", "-u", user, "--"]
    data, log, port = base / "data", base / "server.log", _free_port()
    try:
        _run([*prefix, bindir / "initdb", "-D", data, "-U", "cotharness", "--pwfile", base / "pw",
              "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"])
        _run([*prefix, bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-o",
              f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], log)
        url = f"postgresql+psycopg://cotharness:{PASSWORD}@127.0.0.1:{port}/postgres"
        _fill_postgres(url)
        yield url
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _fill_postgres(url):
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE agent_log (id serial PRIMARY KEY, user_query text, reviewed_tool text, "
                          "router_tool text, call jsonb)"))
        for query, reviewed, router, call in LOG:
            conn.execute(text("INSERT INTO agent_log (user_query, reviewed_tool, router_tool, call) "
                              "VALUES (:q, :r, :k, CAST(:c AS jsonb))"),
                         {"q": query, "r": reviewed, "k": router, "c": None if call is None else json.dumps(call)})
    engine.dispose()


def datagen(*args):
    return CliRunner().invoke(app, ["datagen", "tools", *map(str, args)])


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for s in ("train", "dev", "test") for line in (out / f"{s}.jsonl").read_text().splitlines()]


def assert_no_password(result, out: Path | None = None):
    texts = [result.output] + ([p.read_text() for p in out.iterdir()] if out and out.exists() else [])
    assert not any(PASSWORD in t for t in texts)


def test_postgres_rows_with_checked_labels(postgres, tmp_path):
    out = tmp_path / "out"
    result = datagen("--from-db", postgres, "--query", SELECT, "--query-column", "user_query", "--label-column",
                     "reviewed_tool", "--parameters-column", "call", "--no-synthetic", "--out", out)
    assert result.exit_code == 0, result.output
    assert ROUTER_WARNING in result.output and "7 rows read, 6 kept" in result.output
    assert "1 duplicates (0 labelled differently)" in result.output
    assert "1 database rows have no gold parameters" in result.output
    rows = {r["query"]: r for r in rows_of(out)}
    expected = {q: (tool, call) for q, tool, _, call in LOG[:5] + LOG[6:7]}
    assert {q: (r["tool"], r.get("parameters")) for q, r in rows.items()} == expected
    assert all(r["source"] == "db" and not r["ambiguous"] and r["reasoning"] for r in rows.values())
    assert "parameters" not in rows["What is 37 multiplied by 19?"]  # no call logged: none invented
    manifest = json.loads((out / "manifest.json").read_text())
    assert re.fullmatch(r"postgresql\+psycopg://cotharness:\*\*\*@127\.0\.0\.1:\d+/postgres", manifest["database"]["url"])
    assert manifest["database"]["rows_read"] == 7 and manifest["database"]["dropped_duplicates"] == 1
    assert_no_password(result, out)


def test_postgres_router_labels_are_refused_or_dropped_with_a_count(postgres, tmp_path):
    select = "SELECT user_query, router_tool FROM agent_log ORDER BY id"
    args = ("--from-db", postgres, "--query", select, "--query-column", "user_query", "--label-column", "router_tool",
            "--no-synthetic", "--out", tmp_path / "out")
    result = datagen(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert ("error: 6 rows have a router_tool that is not a declared tool: 'search' (3 rows), NULL (2 rows), "
            "'calc' (1 row); declared: ['rag_retrieval', 'web_search', 'code_execution', 'direct_chat']") in error
    assert "--skip-unknown" in error and not (tmp_path / "out").exists()
    result = datagen(*args, "--skip-unknown")
    assert result.exit_code == 0, result.output
    assert "8 rows read, 2 kept; dropped: 6 with an undeclared label" in result.output
    assert {r["tool"] for r in rows_of(tmp_path / "out")} == {"rag_retrieval", "code_execution"}
    assert_no_password(result, tmp_path / "out")


@pytest.mark.parametrize("change,query,message", [
    (lambda url: re.sub(r":\d+/", f":{_free_port()}/", url), SELECT, "cannot reach or query"),
    (lambda url: url.replace(PASSWORD, PASSWORD[::-1]), SELECT, "password authentication failed"),
    (lambda url: url, "SELECT * FROM no_such_table", 'relation "no_such_table" does not exist'),
    (lambda url: url, "SELECT user_query AS q FROM agent_log", "--query-column 'user_query' is not a column"),
    (lambda url: url.replace("+psycopg", "+nodriver"), SELECT, "not a usable database URL"),
])
def test_database_failures_are_one_line_without_the_password(postgres, tmp_path, change, query, message):
    url = change(postgres)
    result = datagen("--from-db", url, "--query", query, "--query-column", "user_query", "--label-column",
                     "reviewed_tool", "--no-synthetic", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert message in error, error
    assert PASSWORD not in result.output and PASSWORD[::-1] not in result.output


def _sqlite(path: Path, rows) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE logs (q TEXT, tool TEXT, params TEXT, why TEXT)")
        db.executemany("INSERT INTO logs VALUES (?, ?, ?, ?)", rows)
    return f"sqlite:///{path}"


def test_sqlite_rows_merge_with_synthetic_ones(tmp_path):
    logged = [(f"Is the canteen open on day {i} of the retreat?", "rag_retrieval",
               json.dumps({"query": f"canteen day {i}", "collection": "handbook"}), f"Internal schedule {i}.")
              for i in range(20)]
    url = _sqlite(tmp_path / "log.db", logged + [("Hey!", "direct_chat", "{}", None)])
    out = tmp_path / "out"
    result = datagen("--from-db", url, "--query", "SELECT * FROM logs", "--query-column", "q", "--label-column",
                     "tool", "--parameters-column", "params", "--reasoning-column", "why", "--per-tool", 50,
                     "--ambiguous-per-tool", 0, "--out", out)
    assert result.exit_code == 0, result.output
    rows = rows_of(out)
    db = [r for r in rows if r["source"] == "db"]
    assert len(db) == 21 and len(rows) == 21 + 4 * 50
    assert {r["parameters"]["query"] for r in db if r["tool"] == "rag_retrieval"} == {f"canteen day {i}" for i in range(20)}
    assert next(r for r in db if r["query"] == "Hey!")["reasoning"].startswith("This request is for direct_chat: ")
    test = json.loads((out / "manifest.json").read_text())["splits"]["test"]
    assert test["tools"]["rag_retrieval"] == 7  # 70 rows of the tool, 10% of them
    assert test["sources"]["db"] >= 1 and test["sources"]["synthetic"] >= 1


def test_sqlite_invalid_parameters_and_missing_label_column(tmp_path):
    url = _sqlite(tmp_path / "log.db", [("What is 2 to the 10th?", "code_execution", '{"cmd": "2**10"}', None),
                                        ("Weather in Oslo?", "web_search", "not json", None),
                                        ("Hi", "direct_chat", None, None)])
    args = ("--from-db", url, "--query", "SELECT * FROM logs", "--query-column", "q", "--parameters-column", "params",
            "--no-synthetic", "--out", tmp_path / "out")
    result = datagen(*args)
    assert result.exit_code == 2 and "error: --from-db needs --label-column" in result.output
    result = datagen(*args, "--label-column", "tool")
    assert result.exit_code == 2
    assert ("2 rows have parameters that do not satisfy their tool's schema, e.g. result row 1 (code_execution): "
            "parameters: 'code' is a required property") in result.output
    result = datagen(*args, "--label-column", "tool", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert [r["query"] for r in rows_of(tmp_path / "out")] == ["Hi"]


def test_password_in_the_query_string_is_masked_too(postgres, tmp_path):
    url = postgres.replace(f":{PASSWORD}@", "@") + f"?password={PASSWORD}"  # libpq reads it there as well
    out = tmp_path / "out"
    result = datagen("--from-db", url, "--query", SELECT, "--query-column", "user_query", "--label-column",
                     "reviewed_tool", "--no-synthetic", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["database"]["url"].endswith("/postgres?password=***")
    assert_no_password(result, out)


@pytest.mark.parametrize("url,shown,hidden", [
    ("postgresql+psycopg://ann:s3cr%40t@db.example:5432/logs", "postgresql+psycopg://ann:***@db.example:5432/logs",
     ["s3cr%40t", "s3cr@t"]),
    ("postgresql://ann:half@broken@db.example/logs", "postgresql://ann:***@db.example/logs", ["half@broken"]),
    ("postgresql://db.example/logs?user=ann&password=s3cr3t", "postgresql://db.example/logs?user=ann&password=***",
     ["s3cr3t"]),
    ("sqlite:///logs.db", "sqlite:///logs.db", []),
])
def test_masked_urls(url, shown, hidden):
    from datagen.tools.db import masked, scrub

    assert masked(url) == shown
    message = "the driver said: " + " and ".join(hidden)
    assert not any(h in scrub(message, url) for h in hidden)
    assert scrub("connection refused", url) == "connection refused"


def test_missing_sqlite_file_is_not_created(tmp_path):
    result = datagen("--from-db", f"sqlite:///{tmp_path / 'nope.db'}", "--query", "SELECT 1", "--label-column", "x",
                     "--no-synthetic", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "error: --from-db: no SQLite database file" in result.output
    assert not (tmp_path / "nope.db").exists()
