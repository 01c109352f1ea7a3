"""Instruction backtranslation through the CLI: ``backtranslate inverse``, ``augment`` with a model on a
server and ``curate``, through the real SDK against the loopback server, answered by
``backtranslate_responder.py`` (a scripted backward model and judge): re-asks, unscored pairs, exact
score distributions, re-filtering, kill and resume, bad input, no key in any output."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from typer.testing import CliRunner

import prompts
from cotharness.cli import app
from harness_tasks.tasks import get_task

import backtranslate_responder
from conftest import REPO, write_jsonl
from loopback_server import LoopbackServer


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def one_error_line(result, message):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


@pytest.fixture
def key(monkeypatch, tmp_path):
    value = "sk-test-" + secrets.token_hex(12)
    monkeypatch.setenv("MISTRAL_API_KEY", value)
    monkeypatch.chdir(tmp_path)  # no stray .env; outputs in tmp
    backtranslate_responder._seen.clear()
    return value


def no_key_anywhere(key, tmp_path, *outputs):
    texts = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()] + list(outputs)
    assert texts and not any(key in t for t in texts)


def read_complete(path):
    """The rows of a file a killed run was appending to: its last line may be torn."""
    lines = path.read_text().split("\n")
    return [json.loads(line) for line in lines[:-1]]


def test_inverse_checks_dedupes_and_splits_by_response(tmp_path):
    rows = [{"prompt": f"Question {i}?", "answer": f"Answer number {i}."} for i in range(40)]
    rows.insert(10, {"prompt": "Question 3?", "answer": " Answer  number 3. "})  # the pair of line 4 again
    rows.insert(20, {"prompt": "Another question 5?", "answer": "Answer number 5."})  # a second instruction
    src = tmp_path / "pairs.csv"
    src.write_text("prompt,answer\n" + "".join(f'"{r["prompt"]}","{r["answer"]}"\n' for r in rows))
    args = ("datagen", "backtranslate", "inverse", "--input", src, "--instruction-column", "prompt",
            "--response-column", "answer")
    result = cli(*args, "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert "42 rows read; 39 train and 2 dev pairs" in result.output
    assert "left out 1 repeated pair(s): line 12 repeats line 5" in result.output
    train, dev = read(tmp_path / "a/train.jsonl"), read(tmp_path / "a/dev.jsonl")
    assert all(set(r) == {"id", "instruction", "response"} for r in train + dev)
    assert len(dev) == 2 and {r["response"] for r in dev}.isdisjoint(r["response"] for r in train)
    same = [r for r in train + dev if r["response"] == "Answer number 5."]
    assert len(same) == 2 and (same[0] in dev) == (same[1] in dev)  # one response, one split
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    assert manifest["duplicates_left_out"] == [{"line": 12, "first_on_line": 5}]
    assert manifest["output"]["train"]["rows"] == 39 and manifest["task"] == "backward"
    # the same seed gives the same files; another seed another dev split
    assert cli(*args, "--out", tmp_path / "b").exit_code == 0
    assert (tmp_path / "b/dev.jsonl").read_text() == (tmp_path / "a/dev.jsonl").read_text()
    assert cli(*args, "--out", tmp_path / "c", "--seed", 1).exit_code == 0
    assert (tmp_path / "c/dev.jsonl").read_text() != (tmp_path / "a/dev.jsonl").read_text()

    src.write_text('prompt,answer\n"Q1","A1"\n"Q2",""\n')
    one_error_line(cli(*args, "--out", tmp_path / "d"), "pairs.csv:3: 'answer' is empty or not text")
    one_error_line(cli(*args[:-4], "--out", tmp_path / "d"), "no column 'instruction'")
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "instruction": "a", "response": "b"},
                                                {"id": 1, "instruction": "c", "response": "d"}])
    one_error_line(cli("datagen", "backtranslate", "inverse", "--input", dup, "--out", tmp_path / "d"),
                   "dup.jsonl:2: id '1' again (first on line 1)")


def test_augment_on_a_server_reasks_degenerate_instructions(key, tmp_path):
    responses = list(backtranslate_responder.RESPONSES)
    responses[2] = "EMPTY_FIRST " + responses[2]
    responses[5] = "ECHO_ALWAYS " + responses[5]
    src = write_jsonl(tmp_path / "lima.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(responses)])
    (tmp_path / "mine.yaml").write_text("augment:\n  top_p: 0.95\n")
    bodies = []
    with LoopbackServer(lambda body: bodies.append(body) or backtranslate_responder.respond(body)) as server:
        result = cli("datagen", "backtranslate", "augment", "--input", src, "--out", "pairs.jsonl",
                     "--response-column", "text", "--model", "backward-8b", "--server-url", server.url,
                     "--config", "mine.yaml", "--seed", 5, "--concurrency", 2)
    assert result.exit_code == 1, result.output  # r5 failed: written, reported last, exit 1
    assert result.output.rstrip().endswith("1 row(s) failed: rerun with --retry-failed to try them again")
    task, rows = get_task("backward"), read(tmp_path / "pairs.jsonl")
    by_text = {}
    for body in bodies:  # exactly the backward prompt as the only message; settings from file, flag, defaults
        assert len(body["messages"]) == 1 and body["messages"][0]["role"] == "user"
        assert (body["temperature"], body["top_p"]) == (1.2, 0.95)
        by_text.setdefault(body["messages"][0]["content"], []).append(body["random_seed"])
    assert set(by_text) == {task.text({"response": t}) for t in responses}
    assert by_text[task.text({"response": responses[2]})] == [5, 6]  # re-asked with the next seed
    assert by_text[task.text({"response": responses[5]})] == [5, 6, 7]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(8)]
    for i, row in enumerate(rows):
        meta = row["meta"]["augment"]
        if i == 5:
            assert meta["status"] == "failed" and row["instruction"] is None and meta["attempts"] == 3
            assert "echoes the response" in meta["error"] and meta["last_reply"].startswith("ECHO_ALWAYS")
        else:
            assert meta["status"] == "ok"
            assert row["instruction"] == backtranslate_responder.instruction_for(row["response"])
            assert meta["reprompts"] == (1 if i == 2 else 0) and meta["model"] == "backward-8b"
    manifest = json.loads((tmp_path / "pairs.manifest.json").read_text())
    assert manifest["output"] == {"path": "pairs.jsonl", "rows": 8, "ok": 7, "failed": 1}
    assert manifest["settings"]["from_flags"] == ["concurrency", "seed"] and manifest["settings"]["top_p"] == 0.95
    assert set(manifest["settings"]["files"]) == {"configs/datagen/backtranslate.yaml", "mine.yaml"}
    assert "failed id r5" in result.output
    no_key_anywhere(key, tmp_path, result.output)


PAIRS = [(4, 5), (5, 2), (3, 3), (2, 1), (1, 2)]  # (score the judge gives, how many pairs)


def judged_pairs():
    rows, expected = [], {}
    for score, n in PAIRS:
        for _ in range(n):
            i = len(rows)
            rows.append({"id": f"p{i}", "instruction": f"Tell me fact {i}.",
                         "response": f"Fact {i} holds (q={score})."})
            expected[f"p{i}"] = score
    rows.append({"id": "late", "instruction": "Tell me a late fact.", "response": "UNPARSEABLE_FIRST fact (q=4)."})
    expected["late"] = 4
    rows.append({"id": "never", "instruction": "Tell me an odd fact.", "response": "NEVER_SCORED fact (q=5)."})
    expected["never"] = None
    rows.append({"id": "noinst", "instruction": None, "response": "An answer without an instruction.",
                 "meta": {"augment": {"status": "failed", "error": "no valid answer in 3 tries"}}})
    return rows, expected


def test_curate_keeps_pairs_at_the_threshold_and_records_every_score(key, tmp_path):
    rows, expected = judged_pairs()
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    bodies = []
    with LoopbackServer(lambda body: bodies.append(body) or backtranslate_responder.respond(body)) as server:
        args = ("datagen", "curate", "--input", src, "--out", "curated.jsonl", "--model", "judge-large",
                "--server-url", server.url)
        result = cli(*args, "--dry-run")
        assert result.exit_code == 0 and "15 request(s) to send" in result.output and not bodies
        assert not list(tmp_path.glob("curated*"))
        result = cli(*args, "--threshold", 4)
        assert result.exit_code == 1, result.output  # "never" is unscored: the curated file is written all the same
        assert result.output.rstrip().endswith("1 row(s) failed: rerun with --retry-failed to try them again")
        requests = server.stats()["requests"]
        assert requests == len(rows) - 1 + 1 + 2  # all but noinst; one re-prompt for late, two for never

        scores = {r["id"]: r for r in read(tmp_path / "curated.scores.jsonl")}
        assert list(scores) == [r["id"] for r in rows[:-1]]  # every judgeable pair once; noinst not judged
        for rid, score in expected.items():
            assert scores[rid]["score"] == score
            if score is not None:
                assert scores[rid]["judge_reasoning"].startswith("The response") and "Score" not in \
                       scores[rid]["judge_reasoning"]
        never = scores["never"]["meta"]["curate"]
        assert never["status"] == "failed" and never["attempts"] == 3 and 'no final "Score: N" line' in never["error"]
        assert never["last_reply"].endswith("Score: 7/10") and scores["never"]["judge_reasoning"] is None
        assert scores["late"]["meta"]["curate"]["reprompts"] == 1
        late = [b["messages"] for b in bodies if "UNPARSEABLE_FIRST" in b["messages"][1]["content"]]
        assert [m["role"] for m in late[1]] == ["system", "user", "assistant", "user"]  # the same conversation
        assert late[1][:2] == late[0] and late[1][2]["content"] == backtranslate_responder.judge(late[0])
        assert late[1][3]["content"].endswith("Score: <1 to 5>")
        # the project's rubric, as it is, and each pair in its user template
        assert {b["messages"][0]["content"] for b in bodies} == {prompts.render("rate_pair_system")}
        assert {b["messages"][1]["content"] for b in bodies} == {
            prompts.render("rate_pair_user", instruction=r["instruction"], response=r["response"]) for r in rows[:-1]}

        kept = read(tmp_path / "curated.jsonl")
        assert [r["id"] for r in kept] == [rid for rid, s in expected.items() if s is not None and s >= 4]
        assert all(r["score"] >= 4 and set(r) == {"id", "instruction", "response", "score", "meta"} for r in kept)
        distribution = {"1": 2, "2": 1, "3": 3, "4": 6, "5": 2, "unscored": 1}
        manifest = json.loads((tmp_path / "curated.manifest.json").read_text())
        assert manifest["distribution"] == distribution and manifest["threshold"] == 4
        assert manifest["pairs"] == {"input": 16, "judged": 15, "kept": 8, "not_judged_augment_failed": 1,
                                     "pending": 0}
        assert manifest["unscored"] == [{"id": "never", "reason": never["error"]}]
        judge_manifest = json.loads((tmp_path / "curated.scores.manifest.json").read_text())
        assert judge_manifest["report"] == {"scores": distribution}
        assert set(judge_manifest["prompts"]) == {"rate_pair_system", "rate_pair_user", "instruct"}
        assert "1: 2, 2: 1, 3: 3, 4: 6, 5: 2, unscored: 1" in result.output
        assert "kept 8 of 15 (score >= 4)" in result.output

        # another threshold: the same scores re-filtered, the judge not asked again
        result = cli(*args, "--threshold", 3)
        assert result.exit_code == 1 and server.stats()["requests"] == requests  # "never" is still unscored
        assert "1 row(s) failed, 1 of them in an earlier run: rerun with --retry-failed" in result.output
        assert len(read(tmp_path / "curated.jsonl")) == 11
        assert json.loads((tmp_path / "curated.manifest.json").read_text())["threshold"] == 3
        result = cli(*args, "--threshold", 5)
        assert [r["id"] for r in read(tmp_path / "curated.jsonl")] == ["p5", "p6"]
    no_key_anywhere(key, tmp_path, result.output)


@pytest.mark.parametrize("stage", ["augment", "curate"])
def test_killed_run_resumes_without_duplicates(stage, key, tmp_path):
    """SIGKILL part way (no cleanup at all), run again: every row once, finished rows never asked again."""
    n = 40
    if stage == "augment":
        responses = backtranslate_responder.RESPONSES
        src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "response": f"Answer {i}: {responses[i % 8]}"}
                                                  for i in range(n)])
        cmd = ["backtranslate", "augment", "--model", "backward-8b"]
        out = store = tmp_path / "pairs.jsonl"
    else:
        src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "instruction": f"Say {i}.",
                                                   "response": f"{i} (q={i % 5 + 1})"} for i in range(n)])
        cmd = ["curate", "--model", "judge-large"]
        out, store = tmp_path / "curated.jsonl", tmp_path / "curated.scores.jsonl"
    server = subprocess.Popen([sys.executable, str(REPO / "tests/loopback_server.py"), "--latency", "0.05",
                               "--responder", "backtranslate_responder:respond"], stdout=subprocess.PIPE, text=True)
    try:
        url = "http://127.0.0.1:" + server.stdout.readline().split()[1]
        cmd = [sys.executable, "-m", "cotharness.cli", "datagen", *cmd, "--input", str(src), "--out", str(out),
               "--server-url", url, "--concurrency", "2"]
        env = {**os.environ, "MISTRAL_DEBUG": "1", "COLUMNS": "200"}
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and (not store.exists() or len(store.read_text().splitlines()) < 8):
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        before = len(read_complete(store))
        assert 8 <= before < n
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        with urllib.request.urlopen(url + "/stats") as reply:
            answered = json.load(reply)["by_status"]["200"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = read(store)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(n)]
    assert all(r["meta"][stage]["status"] == "ok" for r in rows)
    assert n <= answered <= n + 2  # paid twice: only the rows in flight when the process died
    assert f"{before} done" in second.stderr
    if stage == "curate":
        assert [r["id"] for r in read(out)] == [r["id"] for r in rows if r["score"] >= 4]
    assert key not in second.stdout + second.stderr + store.read_text()


def test_bad_input_ends_in_one_error_line(key, tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [{"response": "fine"}, {"response": " "}])
    url = ("--server-url", "http://127.0.0.1:9")
    augment = ("datagen", "backtranslate", "augment", "--out", "p.jsonl")
    one_error_line(cli(*augment, "--input", src, "--model", "m", *url), "r.jsonl:2: 'response' is empty or not text")
    one_error_line(cli(*augment, "--input", src, "--model", "m", "--response-column", "text", *url),
                   "r.jsonl:1: no column 'text'")
    one_error_line(cli(*augment, "--input", src, "--model", "m", "--local-model", tmp_path), "give one")
    one_error_line(cli(*augment, "--input", src), "--model is required")
    one_error_line(cli(*augment, "--input", tmp_path / "none.jsonl", "--model", "m", *url), "none.jsonl: no such file")
    fine = write_jsonl(tmp_path / "fine.jsonl", [{"response": "fine"}])
    one_error_line(cli(*augment, "--input", fine, "--backend", "hf", "--model", tmp_path / "nothing"),
                   "does not exist")
    (tmp_path / "bad.yaml").write_text("augment:\n  temprature: 1.0\n")
    one_error_line(cli(*augment, "--input", src, "--model", "m", "--config", "bad.yaml", *url),
                   "bad.yaml: augment.temprature: Extra inputs are not permitted")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"id": "a", "instruction": "Do it.", "response": "Done."},
                                                   {"id": "b", "response": "Done."}])
    curate = ("datagen", "curate", "--model", "judge", *url)
    one_error_line(cli(*curate, "--input", pairs, "--out", "c.jsonl"), "pairs.jsonl:2: no column 'instruction'")
    one_error_line(cli(*curate, "--input", pairs, "--out", "c.txt"), "name it *.jsonl")
    assert not list(tmp_path.glob("p*.manifest.json")) and not (tmp_path / "c.jsonl").exists()
