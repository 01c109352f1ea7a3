"""`cotharness study run --executor local|slurm` (the project's issue 19): stages as submitit jobs. API
stages run side by side, device stages one per GPU, each job seeing only its GPU; the SLURM path (tested on
submitit's local cluster) runs a whole study; a user's mistake inside a job is the parent's one error line;
Ctrl-C at the terminal lets each job save its work and the rerun asks no finished row again."""

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_study_run import EVALUATION, TRAINING, data, run, tiny_study, write_study  # noqa: F401 (data: a fixture)

from conftest import REPO, write_jsonl
from fake_teacher import pairs, respond
from loopback_server import LoopbackServer


def stage(kind, backend="mistral"):
    from cotharness.study.graph import Stage

    return Stage(kind, kind, {"backend": backend} if kind in ("thoughts", "teacher_test") else {})


def test_each_stage_waits_for_its_resource():
    from cotharness.study.dispatch import Pool, choose, resource

    assert [resource(stage(k)) for k in ("thoughts", "train", "eval", "tiny_base", "prepare", "compare")] == \
        ["api", "device", "device", "device", "light", "light"]
    assert resource(stage("thoughts", backend="hf")) == "device"  # a local teacher needs the GPU
    pool = Pool([0, 1], api_stages=1, slurm=False)
    assert [pool.take("device"), pool.take("device"), pool.take("device")] == [("gpu", 0), ("gpu", 1), None]
    assert pool.take("api") == ("api", None) and pool.take("api") is None and pool.take("light") == ("free", None)
    pool.give(("gpu", 1))
    assert pool.take("device") == ("gpu", 1)
    cpu = Pool([], api_stages=2, slurm=False)  # no GPU: one device stage at a time
    assert cpu.take("device") == ("cpu", None) and cpu.take("device") is None
    assert Pool([], 1, slurm=True).take("device") == ("free", None)  # SLURM queues them itself
    api2 = [stage("thoughts"), stage("teacher_test")]
    assert choose("auto", api2, []) == "local" and choose("auto", api2[:1], [0]) == "inline"
    assert choose("auto", [stage("train")], [0, 1]) == "local" and choose("inline", api2, [0, 1]) == "inline"


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from cotharness.study.dispatch import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus(None) == [2, 3] and visible_gpus([1]) == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus(None) == []


def teacher_study(tmp_path, server_url, n=8, **teacher):
    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs(n))
    test_file = write_jsonl(tmp_path / "test.jsonl", pairs(n))
    return write_study(tmp_path / "api.yaml", {
        "name": "api", "task": "nli_cot", "data": {"teacher_input": str(inp), "test_file": str(test_file)},
        "teacher": {"model": "open-mistral-7b", "stages": ["thoughts"], "server_url": server_url, **teacher},
        "ablations": ["correct"], "evaluation": {**EVALUATION, "teacher": True, "limit": None},
        "training": {"base": str(REPO / "configs/train/demo.yaml"), "set": {**TRAINING, "model.base_model": "x"}}})


def api_verdicts(config, root):
    from cotharness.study.config import load_study
    from cotharness.study.graph import build
    from cotharness.study.identity import plan

    study = load_study(config)
    return study, [v for v in plan(build(study, root, config), root / study.name)
                   if v.stage.kind in ("thoughts", "teacher_test")]


def dispatch(study, verdicts, root, lines):
    from cotharness.study.dispatch import dispatch

    return dispatch(verdicts, root / study.name, study.execution, "local", [], "cotharness study run api.yaml",
                    lines.append, lambda s, v: False, study.name)


def test_api_stages_run_side_by_side_and_the_parent_records_them(tmp_path, monkeypatch):
    from cotharness.study.identity import read_state

    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-" + secrets.token_hex(12))
    root = tmp_path / "studies"
    with LoopbackServer(respond, latency=0.2) as server:
        study, verdicts = api_verdicts(teacher_study(tmp_path, server.url, concurrency=2), root)
        lines = []
        ran = dispatch(study, verdicts, root, lines)
        assert set(ran) == {"thoughts", "teacher_test"}, lines
        started = [i for i, line in enumerate(lines) if ": running (new)" in line]
        finished = [i for i, line in enumerate(lines) if re.search(r": ran in \d+ s$", line)]
        assert len(started) == 2 and max(started) < min(finished), lines  # both started before either ended
        assert server.stats()["requests"] == 16
    assert set(read_state(root / "api")["stages"]) == {"thoughts", "teacher_test"}
    assert all(Path(line.split("log: ")[1]).is_file() for line in lines if "log: " in line)


def test_a_users_mistake_in_a_job_is_the_parents_one_line(tmp_path, monkeypatch):
    from cotharness.study.identity import read_state
    from harness_tasks.errors import UserError

    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    root = tmp_path / "studies"
    study, verdicts = api_verdicts(teacher_study(tmp_path, None), root)  # the Mistral API itself: a key needed
    lines = []
    with pytest.raises(UserError, match="MISTRAL_API_KEY"):
        dispatch(study, verdicts, root, lines)
    assert read_state(root / "api")["stages"] == {}
    assert sum("failed: " in line for line in lines) == 2, lines


def test_the_slurm_path_runs_a_whole_study(data, tiny_model, tmp_path, monkeypatch):  # noqa: F811
    """``--executor slurm`` on submitit's local cluster: the device stages go through the SLURM path (its
    parameters from execution.slurm), the rest run here; a second run finds every stage current."""
    from cotharness.study import dispatch as module

    monkeypatch.setattr(module, "SLURM_CLUSTER", "local")
    study = tiny_study("slurmed", data, tiny_model, ablations=("a",))
    study["execution"] = {"slurm": {"train": {"partition": "gpu", "timeout_min": 30}, "eval": {"timeout_min": 10}}}
    config = write_study(tmp_path / "tiny.yaml", study)
    root = tmp_path / "studies"
    from cotharness.study.run import run as run_study

    lines = []
    result = run_study(config, root, say=lines.append, executor="slurm")
    assert list(result.ran) and set(result.ran) == {"train/a", "eval/base", "eval/a", "compare"}, lines
    text = "\n".join(lines)
    assert "train/a: running (new) on SLURM (gpu, 1 GPU)" in text
    assert "eval/base: running (new) on SLURM (default partition, 1 GPU)" in text
    assert "compare: running (new) beside the others" in text
    assert (root / "slurmed" / "compare" / "summary.json").is_file()
    assert run(config, root)[0].ran == {}


def test_ctrl_c_at_the_terminal_lets_each_job_save_and_the_rerun_asks_nothing_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-" + secrets.token_hex(12))
    n = 24
    root = tmp_path / "studies"
    thoughts = root / "api" / "datagen" / "thoughts.jsonl"
    with LoopbackServer(respond, latency=0.3) as server:
        config = teacher_study(tmp_path, server.url, n=n, concurrency=2)
        # the terminal's Ctrl-C goes to the whole foreground process group: the command and its jobs
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("cotharness")), "study", "run", str(config), "--root", str(root),
             "--executor", "local"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "400"})
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while not (thoughts.is_file() and len(thoughts.read_text().splitlines()) >= 4):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(out) + proc.stderr.read()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(timeout=10)
        err = " ".join(proc.stderr.read().split())
        assert proc.returncode == 130, "".join(out) + err
        assert "interrupted: study api: stopped in" in err and "thoughts" in err, err
        kept = thoughts.read_text().splitlines()
        asked = server.stats()["requests"]
        teacher_rows = (root / "api" / "datagen" / "teacher_test.jsonl").read_text().splitlines()
        # every request sent has its row: the jobs drained what was in flight, none was killed mid-request
        assert asked == len(kept) + len(teacher_rows) and len(kept) < n, (asked, len(kept), len(teacher_rows))

        study, verdicts = api_verdicts(config, root)
        dispatch(study, verdicts, root, [])
        assert server.stats()["requests"] == 2 * n  # each row of both stages asked exactly once
