"""End to end: a teacher writes thoughts, a stronger model reflects, prepare builds the ablations and
`cotharness train` trains on each; the local-model backend; a killed Batch API run re-attaches."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from cotharness.cli import app

from conftest import REPO, write_jsonl
from fake_teacher import respond
from loopback_server import LoopbackServer


def invoke(*args, exit_code=0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == exit_code, result.output
    return result


@pytest.fixture
def key(monkeypatch, tmp_path):
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-e2e-0123456789")
    monkeypatch.chdir(tmp_path)


def test_thoughts_reflect_prepare_train(key, tmp_path, tiny_model):
    from datagen.synthetic.nli import generate

    pairs = [{k: r[k] for k in ("premise", "hypothesis", "label")} for r in generate("train", 60)]
    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    with LoopbackServer(respond) as server:
        url = server.url
        invoke("datagen", "thoughts", "--input", inp, "--out", "t.jsonl", "--server-url", url)
        invoke("datagen", "reflect", "--input", "t.jsonl", "--out", "r.jsonl", "--server-url", url)
    thoughts = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    wrong = sum(r["correct"] is False for r in thoughts)
    assert 0 < wrong < 60  # the scripted teacher's word-overlap rule is right on some rows only
    invoke("datagen", "prepare", "--thoughts", "t.jsonl", "--reflections", "r.jsonl", "--out", "sft",
           "--tokenizer", tiny_model, "--max-length", 512)
    stats = json.loads((tmp_path / "sft/stats.json").read_text())
    assert stats["teacher"]["accuracy"] == pytest.approx((60 - wrong) / 60)
    kept = {a: stats["ablations"][a]["rows"] for a in ("correct", "reflected", "all")}
    assert kept == {"correct": 60 - wrong, "reflected": 60, "all": 60}
    for folder in ("correct_only", "correct_reflected", "all"):
        run = tmp_path / "runs" / folder
        invoke("train", "--config", REPO / "configs/train/demo.yaml", "--base-model", tiny_model,
               "--train-file", f"sft/{folder}/train.jsonl", "--eval-file", f"sft/{folder}/dev.jsonl",
               "--output-dir", run, "--max-steps", 2, "--set", "training.eval_steps=2", "--set", "training.save_steps=2")
        record = json.loads((run / "run.json").read_text())
        assert record["status"] == "complete" and record["global_step"] == 2
        assert record["data"][f"sft/{folder}/train.jsonl"]["rows"] == stats["ablations"][
            {"correct_only": "correct", "correct_reflected": "reflected", "all": "all"}[folder]]["train"]


def test_local_model_backend_records_every_row(tmp_path, tiny_model, monkeypatch):
    """The embedded tiny model cannot write JSON: each row is re-prompted, then recorded as failed, at no cost."""
    monkeypatch.chdir(tmp_path)
    inp = write_jsonl(tmp_path / "pairs.jsonl", [{"premise": f"A{i} sat.", "hypothesis": "A sat."} for i in range(3)])
    result = invoke("datagen", "thoughts", "--input", inp, "--out", "t.jsonl", "--backend", "hf", "--model",
                    tiny_model, "--max-tokens", 12, "--max-reprompts", 1, "--batch-size", 3,
                    exit_code=1)  # every row failed: the run says so and exits 1
    assert result.output.rstrip().endswith("3 row(s) failed: rerun with --retry-failed to try them again")
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    for r in rows:
        meta = r["meta"]["thoughts"]
        assert meta["backend"] == "hf" and meta["attempts"] == 2 and meta["tokens_out"] > 0
        assert meta["status"] == "failed" and r["predicted_label"] is None
    assert "$0.0000" in result.output
    manifest = json.loads((tmp_path / "t.manifest.json").read_text())
    assert manifest["endpoint"].startswith("hf:") and manifest["price"] == {"input": 0.0, "output": 0.0}


@pytest.mark.parametrize("lost_id", [False, True], ids=["while-polling", "before-saving-the-job-id"])
def test_killed_batch_run_reattaches_to_its_job(tmp_path, lost_id):
    """Killed while the job runs: the next run collects that job instead of submitting (and paying) again,
    also when the kill came between creating the job and recording its id (found by its metadata token)."""
    inp = write_jsonl(tmp_path / "pairs.jsonl", [{"id": i, "premise": f"Bo {i} ran home.", "hypothesis": "Bo ran.",
                                                  "label": 1} for i in range(8)])
    out, state = tmp_path / "t.jsonl", tmp_path / "t.batch.json"
    server = subprocess.Popen([sys.executable, str(REPO / "tests/loopback_server.py"), "--hold-batches",
                               "--responder", "fake_teacher:respond"], stdout=subprocess.PIPE, text=True)
    try:
        url = "http://127.0.0.1:" + server.stdout.readline().split()[1]
        cmd = [sys.executable, "-m", "cotharness.cli", "datagen", "thoughts", "--input", str(inp), "--out", str(out),
               "--server-url", url, "--backend", "mistral-batch", "--poll-interval", "0.05"]
        env = {**os.environ, "MISTRAL_API_KEY": "sk-test-batch-42", "COLUMNS": "200"}
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and not state.exists():
            time.sleep(0.05)
        time.sleep(0.3)  # polling the held job
        first.send_signal(signal.SIGKILL)
        first.wait()
        recorded = json.loads(state.read_text())
        assert len(recorded["jobs"]) == 1 and not recorded["jobs"][0]["merged"]
        job_id = recorded["jobs"][0]["id"]
        if lost_id:
            recorded["jobs"][0]["id"] = None
            state.write_text(json.dumps(recorded))
        urllib.request.urlopen(urllib.request.Request(url + "/control/release", method="POST")).close()
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert f"re-attaching to batch job {job_id}" in second.stderr
        with urllib.request.urlopen(url + "/stats") as reply:
            stats = json.load(reply)
    finally:
        server.terminate()
    assert stats["batch_jobs_created"] == 1 and stats["batch_lines"] == 8
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [str(i) for i in range(8)]
    assert all(r["meta"]["thoughts"]["status"] == "ok" and r["meta"]["thoughts"]["batch_job"] == job_id
               for r in rows)


def test_batch_job_that_was_never_created_is_forgotten(tmp_path, monkeypatch):
    """A job recorded as about to be created, which the server does not know: its rows go to a new job."""
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-batch-7")
    inp = write_jsonl(tmp_path / "pairs.jsonl", [{"premise": f"Al {i} ate.", "hypothesis": "Al ate."} for i in range(3)])
    (tmp_path / "t.batch.json").write_text(json.dumps({"stage": "thoughts", "open": {}, "jobs": [
        {"id": None, "token": "never-sent", "round": 1, "requests": {"0": "x"}, "merged": False}]}))
    with LoopbackServer(respond) as server:
        invoke("datagen", "thoughts", "--input", inp, "--out", tmp_path / "t.jsonl", "--server-url", server.url,
               "--backend", "mistral-batch", "--poll-interval", 0.02)
        assert server.stats()["batch_jobs_created"] == 1
    jobs = json.loads((tmp_path / "t.batch.json").read_text())["jobs"]
    assert len(jobs) == 1 and jobs[0]["token"] != "never-sent" and jobs[0]["merged"]
