"""Resuming a datagen run exactly (the project's issue 17): a changed input refreshes finished rows
without asking again, rows a stage no longer wants leave its output, a whole last row is not "torn",
a dry run reads the output as a run would, failed rows exit 1, and --max-cost's message gives the
summary's figure. Through the CLI, the real SDK and the loopback server."""

import json
import secrets

import pytest
from typer.testing import CliRunner

from cotharness.cli import app

import backtranslate_responder
from conftest import write_jsonl
from fake_teacher import respond
from loopback_server import LoopbackServer


def pairs(n, marker=None):
    """The teacher's rule gets each row right (label i % 2) unless a test flips a gold label."""
    rows = []
    for i in range(n):
        premise = f"Ana {i} walked to the station and bought bread {i}"
        if marker and i == 3:
            premise = f"{marker} {premise}"
        rows.append({"id": f"r{i}", "premise": premise,
                     "hypothesis": f"Ana {i} bought bread" if i % 2 else f"Ana {i} bought milk", "label": i % 2})
    return rows


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def flat(text):
    """Console text without rich's line wrapping."""
    return " ".join(text.split())


@pytest.fixture
def key(monkeypatch, tmp_path):
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-" + secrets.token_hex(12))
    monkeypatch.chdir(tmp_path)


def cli(*args):
    return CliRunner().invoke(app, ["datagen", *map(str, args)])


def stage(name, server, inp, out, *extra):
    return cli(name, "--input", inp, "--out", out, "--server-url", server.url, "--model", "open-mistral-7b", *extra)


def last_run(out):
    return json.loads(out.with_name(out.name.replace(".jsonl", ".manifest.json")).read_text())["runs"][-1]


def test_corrected_gold_labels_and_new_columns_are_refreshed_without_asking_again(key, tmp_path):
    rows = pairs(6, marker="NEVER_JSON")  # r3 fails: its gold is refreshed all the same
    inp, out = tmp_path / "pairs.jsonl", tmp_path / "t.jsonl"
    write_jsonl(inp, rows)
    with LoopbackServer(respond) as server:
        stage("thoughts", server, inp, out, "--max-reprompts", 0)
        asked = server.stats()["requests"]
        assert [r["correct"] for r in read(out)] == [True, True, True, None, True, True]
        rows[1]["label"], rows[2]["label"], rows[3]["label"] = 0, 1, 0  # the gold labels, corrected
        rows[5]["source"] = "annotator 2"  # and a column the prompt does not use
        write_jsonl(inp, rows)
        result = stage("thoughts", server, inp, out, "--max-reprompts", 0)
        assert server.stats()["requests"] == asked, result.output  # nothing asked again
        assert "4 of those rewritten from their changed input" in flat(result.output)
        assert last_run(out)["refreshed"] == 4
        got = {r["id"]: r for r in read(out)}
        assert [got[f"r{i}"]["true_label"] for i in range(6)] == [r["label"] for r in rows]
        assert [got[f"r{i}"]["correct"] for i in range(6)] == [True, False, False, None, True, True]
        assert got["r5"]["source"] == "annotator 2" and got["r3"]["meta"]["thoughts"]["status"] == "failed"
        assert got["r1"]["thought_process"].startswith("Step 1")  # the answer and how it was made stand
        before = out.read_bytes()
        result = stage("thoughts", server, inp, out, "--max-reprompts", 0)
        assert "0 of those rewritten" in flat(result.output) and out.read_bytes() == before


def test_later_stages_refresh_and_drop_rows_the_input_no_longer_asks_for(key, tmp_path):
    rows = pairs(6)
    rows[4]["label"], rows[5]["label"] = 1, 0  # gold says the teacher is wrong on r4 and r5 ...
    inp, t, s, r = (tmp_path / n for n in ("pairs.jsonl", "t.jsonl", "s.jsonl", "r.jsonl"))
    write_jsonl(inp, rows)
    with LoopbackServer(respond) as server:
        assert stage("thoughts", server, inp, t).exit_code == 0
        assert stage("score", server, t, s).exit_code == 0
        assert stage("reflect", server, t, r).exit_code == 0
        assert [x["id"] for x in read(r)] == ["r4", "r5"]
        asked = server.stats()["requests"]
        rows[4]["label"] = 0  # ... until r4's gold is corrected: the teacher was right
        write_jsonl(inp, rows)
        assert stage("thoughts", server, inp, t).exit_code == 0
        result = stage("score", server, t, s)
        assert result.exit_code == 0 and "1 of those rewritten" in flat(result.output)
        assert {x["id"]: x["correct"] for x in read(s)}["r4"] is True
        result = stage("reflect", server, t, r, "--dry-run")
        assert "drop 1 this stage no longer asks about" in flat(result.output)
        assert [x["id"] for x in read(r)] == ["r4", "r5"]  # a dry run changes nothing
        result = stage("reflect", server, t, r)
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == asked  # no new request anywhere
    assert "1 finished row(s) the changed input no longer selects" in flat(result.output)
    assert [x["id"] for x in read(r)] == ["r5"] and last_run(r)["dropped"] == ["r4"]


def test_curate_drops_the_score_of_a_pair_that_lost_its_instruction(key, tmp_path):
    rows = [{"id": f"p{i}", "instruction": f"Tell me fact {i}.", "response": f"Fact {i} holds (q=5)."}
            for i in range(3)]
    inp = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with LoopbackServer(backtranslate_responder.respond) as server:
        args = ("curate", "--input", inp, "--out", "curated.jsonl", "--model", "judge-large", "--server-url",
                server.url)
        assert cli(*args).exit_code == 0
        assert [x["id"] for x in read(tmp_path / "curated.jsonl")] == ["p0", "p1", "p2"]
        # augment was redone and failed on p1: there is no instruction to keep any more
        rows[1] = {"id": "p1", "instruction": None, "response": rows[1]["response"],
                   "meta": {"augment": {"status": "failed", "error": "no valid answer in 3 tries"}}}
        write_jsonl(inp, rows)
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert server.stats()["requests"] == 3
    assert [x["id"] for x in read(tmp_path / "curated.jsonl")] == ["p0", "p2"]
    assert [x["id"] for x in read(tmp_path / "curated.scores.jsonl")] == ["p0", "p2"]


def test_a_whole_last_row_without_its_newline_is_kept(key, tmp_path):
    inp, out = write_jsonl(tmp_path / "pairs.jsonl", pairs(4)), tmp_path / "t.jsonl"
    with LoopbackServer(respond) as server:
        assert stage("thoughts", server, inp, out).exit_code == 0
        out.write_bytes(out.read_bytes().rstrip(b"\n"))  # e.g. saved by an editor
        result = stage("thoughts", server, inp, out)
        assert result.exit_code == 0 and server.stats()["requests"] == 4, result.output
        assert "torn" not in result.output and "done 0" in result.output
    assert [r["id"] for r in read(out)] == ["r0", "r1", "r2", "r3"]


def test_the_store_cuts_only_a_torn_tail(tmp_path):
    from datagen.engine.store import JsonlStore
    from harness_tasks.data_files import DataFileError

    out = tmp_path / "t.jsonl"
    for tail, kept, torn in [(b'{"id": "b"}', ["a", "b"], 0), (b'{"id": "b", "x": "hal', ["a"], 21),
                             ('{"id": "b", "x": "é'.encode()[:-1], ["a"], 19), (b"  ", ["a"], 0)]:
        out.write_bytes(b'{"id": "a"}\n' + tail)
        with JsonlStore(out) as store:
            assert list(store.rows) == kept and store.torn == torn
            store.append({"id": "c"})
        assert [json.loads(x)["id"] for x in out.read_text().split("\n") if x.strip()] == [*kept, "c"]
        out.write_bytes(b'{"id": "a"}\n' + tail)
        peeked = JsonlStore.peek(out)  # what a dry run reads: the same rows, the file as it was
        assert (list(peeked.rows), peeked.torn) == (kept, torn) and out.read_bytes().endswith(tail)
    out.write_bytes(b'{"id": "a"}\nnot json\n{"id": "b", "x": "hal')  # not an output: left as it is
    with pytest.raises(DataFileError, match="t.jsonl:2: invalid JSON"):
        JsonlStore(out).open()
    assert out.read_bytes().endswith(b'"hal') and not (tmp_path / "t.jsonl.lock").exists()


def test_dry_run_reads_a_torn_output_as_a_run_would(key, tmp_path):
    inp, out = write_jsonl(tmp_path / "pairs.jsonl", pairs(6)), tmp_path / "t.jsonl"
    with LoopbackServer(respond) as server:
        assert stage("thoughts", server, inp, out, "--limit", 3).exit_code == 0
        with out.open("a") as f:  # a run killed in the middle of a write
            f.write('{"id": "r3", "premise": "half a li')
        torn = out.read_bytes()
        result = stage("thoughts", server, inp, out, "--dry-run")
        assert result.exit_code == 0, result.output
        assert "3 request(s) to send" in result.output and "torn last line (34 bytes)" in flat(result.output)
        assert out.read_bytes() == torn and server.stats()["requests"] == 3
        assert stage("thoughts", server, inp, out).exit_code == 0 and server.stats()["requests"] == 6


def test_failed_rows_exit_1_after_everything_is_written(key, tmp_path):
    rows = pairs(3)
    for row in rows:
        row["premise"] = "NEVER_JSON " + row["premise"]
    inp, out = write_jsonl(tmp_path / "pairs.jsonl", rows), tmp_path / "t.jsonl"
    with LoopbackServer(respond) as server:
        result = stage("thoughts", server, inp, out, "--max-reprompts", 0)
        assert result.exit_code == 1, result.output
        assert result.output.rstrip().endswith("3 row(s) failed: rerun with --retry-failed to try them again")
        assert [r["meta"]["thoughts"]["status"] for r in read(out)] == ["failed"] * 3
        assert last_run(out)["failed"] == 3 and "output" in result.output  # manifest and summary written
        result = stage("thoughts", server, inp, out, "--max-reprompts", 0)  # nothing asked; still incomplete
        assert result.exit_code == 1 and "3 of them in an earlier run" in result.output
        assert stage("thoughts", server, inp, out, "--dry-run").exit_code == 0


@pytest.mark.parametrize("backend", ["mistral", "mistral-batch"])
def test_max_cost_message_gives_the_spent_of_the_summary(key, tmp_path, backend):
    """The next request is refused while the first is still in flight: what the stop message says was
    spent must include it, as the summary and the manifest do."""
    inp, out = write_jsonl(tmp_path / "pairs.jsonl", pairs(5)), tmp_path / "t.jsonl"
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  open-mistral-7b: {input: 100.0, output: 100.0}\n")
    with LoopbackServer(respond) as server:
        result = stage("thoughts", server, inp, out, "--prices", prices, "--max-cost", 0.1, "--max-tokens", 100,
                       "--concurrency", 3, "--backend", backend, "--poll-interval", 0.02)
    assert result.exit_code == 3, result.output
    run = last_run(out)
    assert run["cost"] > 0 and run["done"] >= 1
    spent = f"spent ${run['cost']:.4f}"
    assert spent in run["stopped"] and spent in flat(result.output), result.output
    assert f"cost ${run['cost']:.4f} at" in flat(result.output.replace("│", " "))


def test_empty_gold_labels_fail_before_any_request_or_are_skipped_and_counted(key, tmp_path):
    rows = pairs(4)
    rows[2]["label"] = ""
    inp, out = tmp_path / "pairs.jsonl", tmp_path / "t.jsonl"
    write_jsonl(inp, rows)
    with LoopbackServer(respond) as server:
        refused = stage("thoughts", server, inp, out)
        assert refused.exit_code == 2 and server.stats()["requests"] == 0 and not out.exists()
        assert "1 of 4 rows have an empty 'label' (first on line 3)" in flat(refused.output)
        result = stage("thoughts", server, inp, out, "--empty-labels", "skip")
        assert result.exit_code == 0, result.output
    assert [r["id"] for r in read(out)] == ["r0", "r1", "r3"]
    manifest = json.loads(out.with_name("t.manifest.json").read_text())
    assert manifest["input"] | {"sha256": None} == {"path": str(inp), "sha256": None, "rows": 3,
                                                    "empty_labels": "skip", "skipped_empty_label": 1}
    assert stage("thoughts", server, inp, out, "--empty-labels", "drop").exit_code == 2
