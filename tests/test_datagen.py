"""The teacher pipeline against a loopback stand-in of the Mistral API, through the real SDK."""

import json
import secrets

import pytest
from typer.testing import CliRunner

from cotharness.cli import app

from conftest import write_jsonl
from fake_teacher import respond, rule_label
from loopback_server import LoopbackServer, Reply

FAULTS = {"429": 0.1, "500": 0.1, "503": 0.05, "broken_json": 0.1, "wrong_schema": 0.1, "slow": 0.05}


def pairs(n, start=0, marker=None):
    rows = []
    for i in range(start, start + n):
        premise = f"Ana {i} walked to the station and bought bread {i}"
        hypothesis = f"Ana {i} bought bread" if i % 2 else f"Ana {i} bought milk"
        if marker and i % 7 == 3:
            premise = f"{marker} {premise}"
        rows.append({"id": f"r{i}", "premise": premise, "hypothesis": hypothesis, "label": i % 2})
    return rows


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def key(monkeypatch, tmp_path):
    value = "sk-test-" + secrets.token_hex(12)
    monkeypatch.setenv("MISTRAL_API_KEY", value)
    monkeypatch.chdir(tmp_path)  # no stray .env, outputs in tmp
    return value


def cli(*args):
    result = CliRunner().invoke(app, ["datagen", *map(str, args)])
    return result


def thoughts(server, inp, out, *extra):
    return cli("thoughts", "--input", inp, "--out", out, "--server-url", server.url, "--model", "open-mistral-7b",
               "--timeout", 1, *extra)


def test_thoughts_survive_faults_and_every_row_is_there_once(key, tmp_path):
    rows = pairs(40, marker="NEVER_JSON")
    inp = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "t.jsonl"
    with LoopbackServer(respond, faults=FAULTS, retry_after=0.05, slow_seconds=1.5) as server:
        result = thoughts(server, inp, out, "--concurrency", 4)
        stats = server.stats()
        assert key in "".join(f"{h}" for h in server.auth_headers)  # the key was sent ...
    # 6 rows never got a valid answer: everything is written, then the run says so last and exits 1
    assert result.exit_code == 1, result.output
    assert result.output.rstrip().endswith("6 row(s) failed: rerun with --retry-failed to try them again")
    done = read(out)
    assert [r["id"] for r in done] == [r["id"] for r in rows]  # every row once, in input order
    for row, src in zip(done, rows, strict=True):
        meta = row["meta"]["thoughts"]
        if "NEVER_JSON" in src["premise"]:
            assert meta["status"] == "failed" and row["predicted_label"] is None
            assert meta["attempts"] == 3 and "no valid answer" in meta["error"]
        else:
            assert meta["status"] == "ok", meta
            assert row["predicted_label"] == rule_label(src["premise"], src["hypothesis"])
            assert row["true_label"] == src["label"] and row["correct"] == (row["predicted_label"] == src["label"])
            assert row["thought_process"].startswith("Step 1")
    # every fault kind happened and was survived
    assert {"429", "500", "503", "broken_json", "wrong_schema", "slow"} <= set(stats["faults"])
    assert stats["max_in_flight"] <= 4
    # ... and appears nowhere else: outputs, manifest, console
    texts = [p.read_text() for p in tmp_path.iterdir() if p.is_file()] + [result.output]
    assert not any(key in t for t in texts)
    manifest = json.loads((tmp_path / "t.manifest.json").read_text())
    assert manifest["output"] == {"path": str(out), "rows": 40, "ok": 34, "failed": 6}
    run = manifest["runs"][-1]
    assert run["retries"] >= stats["by_status"].get(429, 0) and run["reprompts"] >= 1
    assert run["tokens_in"] > 0 and run["cost"] > 0
    assert {f["id"] for f in run["failures"]} == {r["id"] for r in rows if "NEVER_JSON" in r["premise"]}


def test_rerun_skips_finished_rows_and_resumes(key, tmp_path):
    rows = pairs(12)
    inp = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "t.jsonl"
    with LoopbackServer(respond) as server:
        assert thoughts(server, inp, out, "--limit", 5).exit_code == 0
        assert server.stats()["requests"] == 5
        with out.open("a") as f:  # a run killed in the middle of a write
            f.write('{"id": "r5", "premise": "half a li')
        result = thoughts(server, inp, out)
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == 12  # only the 7 missing rows were asked for
        assert "torn last line" in result.output
        result = thoughts(server, inp, out)
        assert server.stats()["requests"] == 12 and "done 0" in result.output
    assert [r["id"] for r in read(out)] == [r["id"] for r in rows]


def test_a_changed_prompt_is_noticed_not_mixed_in(key, tmp_path):
    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs(4))
    out = tmp_path / "t.jsonl"
    with LoopbackServer(respond) as server:
        assert thoughts(server, inp, out).exit_code == 0
        result = thoughts(server, inp, out, "--temperature", 0.7)
        assert result.exit_code == 2 and "made by a different request" in result.output
        assert "Traceback" not in result.output and server.stats()["requests"] == 4
        result = thoughts(server, inp, out, "--temperature", 0.7, "--redo-changed")
        assert result.exit_code == 0 and server.stats()["requests"] == 8
    assert len(read(out)) == 4  # replaced, not appended twice


def test_retry_failed_asks_again_only_for_failed_rows(key, tmp_path):
    rows = pairs(8, marker="NEVER_JSON")
    inp = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "t.jsonl"
    with LoopbackServer(respond) as server:
        thoughts(server, inp, out, "--max-reprompts", 0)
        failed = [r["id"] for r in read(out) if r["meta"]["thoughts"]["status"] == "failed"]
        assert failed == ["r3"]
        before = server.stats()["requests"]
        result = thoughts(server, inp, out, "--max-reprompts", 0)
        assert server.stats()["requests"] == before and "--retry-failed" in result.output
        assert result.exit_code == 1  # the output still has a failed row
        result = thoughts(server, inp, out, "--max-reprompts", 0, "--retry-failed")
        assert server.stats()["requests"] == before + 1 and result.exit_code == 1  # and failed again


def test_bad_key_and_missing_key_stop_with_one_line(key, tmp_path, monkeypatch):
    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs(6))

    def refuse(body):
        raise Reply(401, {"message": "Unauthorized", "request_id": "x"})

    with LoopbackServer(refuse) as server:
        result = thoughts(server, inp, tmp_path / "t.jsonl")
    assert result.exit_code == 2
    assert "refused the API key" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t.jsonl").exists() or read(tmp_path / "t.jsonl") == []  # no row marked failed
    monkeypatch.delenv("MISTRAL_API_KEY")
    result = cli("thoughts", "--input", inp, "--out", tmp_path / "u.jsonl")
    assert result.exit_code == 2 and "MISTRAL_API_KEY is not set" in result.output
    (tmp_path / ".env").write_text(f"MISTRAL_API_KEY={key}\n")  # the key may come from a .env file
    with LoopbackServer(respond) as server:
        result = cli("datagen", "--help")
        result = thoughts(server, inp, tmp_path / "u.jsonl")
        assert result.exit_code == 0 and server.auth_headers == {f"Bearer {key}"}


def test_max_cost_stops_before_the_limit(key, tmp_path):
    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs(30))
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  open-mistral-7b: {input: 100.0, output: 100.0}\n")
    limit = 0.9  # about 10 rows' worst case at this price
    with LoopbackServer(respond) as server:
        result = thoughts(server, inp, tmp_path / "t.jsonl", "--prices", prices, "--max-cost", limit,
                          "--max-tokens", 200, "--concurrency", 3)
    assert result.exit_code == 3 and "--max-cost" in result.output
    run = json.loads((tmp_path / "t.manifest.json").read_text())["runs"][-1]
    assert 0 < run["cost"] <= limit and 0 < run["done"] < 30 and run["not_run"] == 30 - run["done"]


def test_dry_run_sends_and_writes_nothing(key, tmp_path):
    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs(5))
    with LoopbackServer(respond) as server:
        result = thoughts(server, inp, tmp_path / "t.jsonl", "--dry-run")
        assert server.stats()["requests"] == 0
    assert result.exit_code == 0, result.output
    assert "first request" in result.output and "5 request(s) to send" in result.output and "cost: ~$" in result.output
    assert not (tmp_path / "t.jsonl").exists()


def test_structured_output_sends_the_answer_schema(key, tmp_path):
    seen = []

    def record(body):
        seen.append(body)
        return respond(body)

    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs(1))
    with LoopbackServer(record) as server:
        thoughts(server, inp, tmp_path / "t.jsonl", "--response-format", "json_schema")
    schema = seen[0]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["thought_process", "predicted_label"]
    assert schema["properties"]["predicted_label"]["enum"] == [1, 0]


def test_score_and_reflect_read_the_thoughts(key, tmp_path):
    rows = pairs(10)
    rows[4]["label"] = 1 - rows[4]["label"]  # gold disagrees with the teacher's rule: a wrong row
    rows[6]["premise"] = "WRONG_FIRST " + rows[6]["premise"]
    rows[6]["label"] = 1 - rule_label(rows[6]["premise"], rows[6]["hypothesis"])
    inp = write_jsonl(tmp_path / "pairs.jsonl", rows)
    t, s, r = (tmp_path / f"{n}.jsonl" for n in "tsr")
    with LoopbackServer(respond) as server:
        assert thoughts(server, inp, t).exit_code == 0
        wrong = [x["id"] for x in read(t) if x["correct"] is False]
        assert wrong == ["r4", "r6"]
        result = cli("score", "--input", t, "--out", s, "--server-url", server.url)
        assert result.exit_code == 0, result.output
        result = cli("reflect", "--input", t, "--out", r, "--server-url", server.url)
        assert result.exit_code == 0, result.output
    scored = read(s)
    assert len(scored) == 10 and {x["judge_score"] for x in scored} == {4}
    assert all(x["meta"]["thoughts"]["status"] == "ok" and x["meta"]["score"]["status"] == "ok" for x in scored)
    reflected = read(r)
    assert [x["id"] for x in reflected] == wrong  # only the rows the teacher got wrong
    for x in reflected:
        assert x["improved_thought_process"].startswith("Step 1") and x["error_analysis"]
    # the reflection that first reached the wrong label was re-prompted with what to fix
    assert [x["meta"]["reflect"]["reprompts"] for x in reflected] == [0, 1]


def test_batch_api_retries_only_failed_rows_and_reattaches(key, tmp_path):
    rows = pairs(12)
    inp = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "t.jsonl"
    args = ("--backend", "mistral-batch", "--poll-interval", 0.02)
    with LoopbackServer(respond, faults={"500": 0.25, "wrong_schema": 0.2}) as server:
        result = thoughts(server, inp, out, *args)
        assert result.exit_code == 0, result.output
        stats = server.stats()
        jobs = list(server.jobs.values())
    done = read(out)
    assert [r["id"] for r in done] == [r["id"] for r in rows]
    assert all(r["meta"]["thoughts"]["status"] == "ok" for r in done)
    assert stats["batch_jobs_created"] == len(jobs) >= 2
    # the second job holds only the rows that failed or were invalid in the first, not the whole job
    first_faults = sum(stats["faults"].values())
    assert jobs[0]["total_requests"] == 12 and jobs[1]["total_requests"] == first_faults
    state = json.loads((tmp_path / "t.batch.json").read_text())
    assert [j["id"] for j in state["jobs"]] == [j["id"] for j in jobs] and all(j["merged"] for j in state["jobs"])
    assert json.loads((tmp_path / "t.manifest.json").read_text())["price"]["input"] == 0.125  # half price


def test_killed_run_resumes_without_duplicates_or_paying_twice(key, tmp_path):
    """SIGKILL part way (no cleanup at all), run again: every row once, finished rows never asked again."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import REPO

    rows = pairs(60)
    inp = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "t.jsonl"
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "loopback_server.py"), "--latency", "0.1",
                               "--responder", "fake_teacher:respond", "--faults", json.dumps({"429": 0.1})],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = "http://127.0.0.1:" + server.stdout.readline().split()[1]
        cmd = [sys.executable, "-m", "cotharness.cli", "datagen", "thoughts", "--input", str(inp), "--out", str(out),
               "--server-url", url, "--concurrency", "4", "--model", "open-mistral-7b"]
        env = {**os.environ, "MISTRAL_DEBUG": "1", "COLUMNS": "200"}  # the SDK's debug log would print the key's header
        log = (tmp_path / "first.log").open("w")
        first = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 20):
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        first_log = (tmp_path / "first.log").read_text()
        before = {r["id"] for r in read(out) if r["meta"]["thoughts"]["status"] == "ok"}
        assert 20 <= len(before) < 60
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        with urllib.request.urlopen(url + "/stats") as reply:
            stats = json.load(reply)
    finally:
        server.terminate()
    done = read(out)
    assert [r["id"] for r in done] == [r["id"] for r in rows]
    assert all(r["meta"]["thoughts"]["status"] == "ok" for r in done)
    # answers paid for twice: only rows that were in flight when the process died (<= concurrency)
    answered = stats["by_status"]["200"]
    assert 60 <= answered <= 60 + 4
    assert f"{len(before)} done" in second.stderr
    assert key not in first_log + second.stdout + second.stderr + out.read_text()


def test_two_runs_cannot_write_one_output(tmp_path):
    from datagen.engine.store import JsonlStore, OutputLockedError

    out = tmp_path / "t.jsonl"
    with JsonlStore(out) as first:
        first.append({"id": "a"})
        with pytest.raises(OutputLockedError, match="another run is writing"):
            JsonlStore(out).open()
    assert not (tmp_path / "t.jsonl.lock").exists()  # removed with the lock
    with JsonlStore(out) as again:
        assert list(again.rows) == ["a"]


def test_requests_that_cannot_succeed(key, tmp_path):
    """A 400 fails its row at once (no retry); a rate limit that never lifts stops the run, rows kept."""
    rows = pairs(6)
    rows[2]["premise"] = "ALWAYS_400 " + rows[2]["premise"]
    inp = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with LoopbackServer(respond) as server:
        result = thoughts(server, inp, tmp_path / "t.jsonl")
        assert server.stats()["by_status"] == {200: 5, 400: 1}
    assert result.exit_code == 1  # a failed row
    failed = [r for r in read(tmp_path / "t.jsonl") if r["meta"]["thoughts"]["status"] == "failed"]
    assert [r["id"] for r in failed] == ["r2"] and failed[0]["meta"]["thoughts"]["error"].startswith("HTTP 400")

    def throttled(body):
        raise Reply(429, {"message": "Requests rate limit exceeded"}, {"Retry-After": "0.01"})

    with LoopbackServer(throttled) as server:
        result = thoughts(server, inp, tmp_path / "u.jsonl", "--max-retries", 2, "--concurrency", 1)
    assert result.exit_code == 2 and "keeps rate-limiting" in result.output and "Traceback" not in result.output
    assert read(tmp_path / "u.jsonl") == []  # nothing marked failed: a rerun asks again


def test_bad_input_is_named(key, tmp_path):
    rows = pairs(3)
    rows[2]["id"] = "r0"
    result = cli("thoughts", "--input", write_jsonl(tmp_path / "dup.jsonl", rows), "--out", tmp_path / "t.jsonl",
                 "--server-url", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "id 'r0' is on 2 rows" in result.output
    (tmp_path / "bad.csv").write_text("premise,hypothesis,label\nA cat sat.,A cat sat.,maybe\n")
    result = cli("thoughts", "--input", tmp_path / "bad.csv", "--out", tmp_path / "t.jsonl",
                 "--server-url", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "bad.csv:2: label='maybe' is not one of [1, 0]" in result.output
    result = cli("thoughts", "--input", tmp_path / "none.csv", "--out", tmp_path / "t.jsonl")
    assert result.exit_code == 2 and "none.csv: no such file" in result.output


def test_requests_per_minute_are_capped(key, tmp_path):
    """--rpm 60: a burst of 60 requests, then one a second; the 64th arrives about 4 s after the first."""
    import time

    arrived = []

    def timed(body):
        arrived.append(time.monotonic())
        return respond(body)

    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs(64))
    with LoopbackServer(timed) as server:
        result = thoughts(server, inp, tmp_path / "t.jsonl", "--rpm", 60, "--concurrency", 16)
    assert result.exit_code == 0 and len(read(tmp_path / "t.jsonl")) == 64
    assert max(arrived) - min(arrived) >= 3.0  # unlimited, 64 loopback requests take well under a second


def test_output_must_be_jsonl(key, tmp_path):
    result = cli("thoughts", "--input", write_jsonl(tmp_path / "p.jsonl", pairs(1)), "--out", tmp_path / "t.txt",
                 "--server-url", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "name it *.jsonl" in result.output
