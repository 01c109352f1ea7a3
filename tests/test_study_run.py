"""`cotharness study run` (the project's issue 19): a tiny study runs end to end on the tiny model, a
second run runs nothing, a changed training value reruns exactly that training, its evaluation and the
comparison, a study killed during training resumes from its checkpoint, and a teacher stage cut short
asks only for the rows it lacks."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, write_jsonl
from fake_teacher import pairs, respond
from loopback_server import LoopbackServer

TRAINING = {"training.max_steps": 4, "training.per_device_train_batch_size": 4, "training.save_steps": 2,
            "training.eval_steps": 4, "training.load_best_model_at_end": False, "training.logging_steps": 1,
            "training.warmup_steps": 0, "training.report_to": []}
EVALUATION = {"model_args": {"dtype": "float32"}, "gen_kwargs": {"max_gen_toks": 8}, "limit": 4, "batch_size": 4,
              "device": "cpu"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from datagen.synthetic.nli import generate

    d = tmp_path_factory.mktemp("study_data")
    sft = {}
    for name, seed_split in (("a", "train"), ("b", "dev")):
        sft[name] = {"train": str(write_jsonl(d / f"{name}_train.jsonl", generate(seed_split, 24))),
                     "dev": str(write_jsonl(d / f"{name}_dev.jsonl", generate("dev", 8)))}
    return {"sft": sft, "test_file": str(write_jsonl(d / "test.jsonl", generate("test", 4))), "dir": d}


def write_study(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def tiny_study(name, data, tiny_model, ablations=("a", "b"), training=None, **extra):
    return {"name": name, "task": "nli_cot",
            "data": {"test_file": data["test_file"], "sft": {a: data["sft"][a] for a in ablations}},
            "ablations": list(ablations),
            "training": {"base": str(REPO / "configs/train/demo.yaml"),
                         "set": {"model.base_model": str(tiny_model), **TRAINING, **(training or {})}, **extra},
            "evaluation": EVALUATION, "comparison": {"base": "base", "primary": ablations[0]}}


def run(config, root):
    from cotharness.study.run import run as run_study

    lines = []
    result = run_study(config, root, say=lines.append)
    return result, lines


@pytest.fixture(scope="module")
def study(data, tiny_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("study")
    config = write_study(work / "tiny.yaml", tiny_study("tiny", data, tiny_model))
    return config, work / "studies"


def test_a_study_runs_every_stage_and_records_it(study):
    from cotharness.study.config import load_study
    from cotharness.study.graph import build
    from cotharness.study.identity import plan

    config, root = study
    result, lines = run(config, root)
    order = ["train/a", "train/b", "eval/base", "eval/a", "eval/b", "compare"]
    assert list(result.ran) == order and result.skipped == []
    assert lines[0] == "study tiny: 0 current, 6 to run (6 new); executor inline"  # no GPU, no API stage
    assert all(any(line.startswith(f"{s}: ran in ") for line in lines) for s in order)
    home = root / "tiny"
    verdicts = plan(build(load_study(config), root, config), home)
    assert {v.stage.id: v.status for v in verdicts} == dict.fromkeys(order, "current")
    for name in ("a", "b"):
        record = json.loads((home / "runs" / name / "run.json").read_text())
        assert record["status"] == "complete" and record["global_step"] == 4
    for row in ("base", "a", "b"):
        assert len(list((home / "eval" / row).rglob("results_*.json"))) == 1
    summary = json.loads((home / "compare" / "summary.json").read_text())
    assert (home / "compare" / "summary.md").is_file() and "base" in json.dumps(summary)


def test_a_second_run_runs_nothing(study):
    config, root = study
    start = time.monotonic()
    result, lines = run(config, root)
    assert result.ran == {} and len(result.skipped) == 6
    assert lines[0] == "study tiny: 6 current, 0 to run"
    assert time.monotonic() - start < 15


def test_one_changed_training_value_reruns_that_training_its_eval_and_the_comparison(study, data, tiny_model):
    from cotharness.study.config import load_study
    from cotharness.study.graph import build
    from cotharness.study.identity import plan

    config, root = study
    home = root / "tiny"
    write_study(config, tiny_study("tiny", data, tiny_model,
                                   per_ablation={"b": {"training.learning_rate": 1.0e-3}}))
    verdicts = {v.stage.id: v for v in plan(build(load_study(config), root, config), home)}
    assert {k: v.status for k, v in verdicts.items() if v.status != "current"} == {
        "train/b": "changed", "eval/b": "changed", "compare": "changed"}
    assert any("training.learning_rate" in r for r in verdicts["train/b"].reasons)
    assert verdicts["eval/b"].reasons == ["input adapter: stage train/b changed"]
    before = (home / "runs" / "b" / "adapter_model.safetensors").read_bytes()

    result, lines = run(config, root)
    assert list(result.ran) == ["train/b", "eval/b", "compare"]
    assert result.skipped == ["train/a", "eval/base", "eval/a"]
    # the earlier adapter of b is kept beside, not deleted
    aside = [p for p in (home / "runs").iterdir() if p.name.startswith("b.stale-")]
    assert len(aside) == 1 and (aside[0] / "adapter_model.safetensors").read_bytes() == before
    assert any("moved aside to" in line and str(aside[0]) in line for line in lines)
    record = json.loads((home / "runs" / "b" / "run.json").read_text())
    assert record["status"] == "complete" and record["config"]["training"]["learning_rate"] == 1.0e-3
    assert run(config, root)[0].ran == {}


def test_a_study_killed_during_training_resumes_from_its_checkpoint(data, tiny_model, tmp_path):
    config = write_study(tmp_path / "cut.yaml", tiny_study(
        "cut", data, tiny_model, ablations=("a",), training={"training.max_steps": 16}))
    root = tmp_path / "studies"
    run_dir = root / "cut" / "runs" / "a"
    command = [str(Path(sys.executable).with_name("cotharness")), "study", "run", str(config), "--root", str(root)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    while not list(run_dir.glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    said = " ".join(err.split())
    assert "interrupted: study cut: stopped in train/a (stopped by SIGINT at step" in said, said[-1500:]
    assert "finished this run: none" in said
    assert f"cotharness study run {config} --root {root}" in said
    cut = json.loads((run_dir / "run.json").read_text())
    assert cut["status"] == "interrupted" and cut["global_step"] < 16

    result, lines = run(config, root)
    assert list(result.ran) == ["train/a", "eval/base", "eval/a", "compare"] and result.skipped == []
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "complete" and record["global_step"] == 16
    assert record["resumed_from"] and [s["status"] for s in record["segments"]] == ["interrupted", "complete"]
    assert record["segments"][1]["from_step"] == record["segments"][0]["to_step"] > 0
    assert not any("moved aside" in line for line in lines)


def test_a_teacher_stage_cut_short_asks_only_for_the_rows_it_lacks(tiny_model, tmp_path, monkeypatch):
    from cotharness.study.run import run as run_study
    from datagen.engine.pipeline import StageRun
    from datagen.teacher.stages import run as run_stage

    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-" + secrets.token_hex(12))
    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs(10))
    test_file = write_jsonl(tmp_path / "test.jsonl", pairs(4))
    root = tmp_path / "studies"
    thoughts = root / "taught" / "datagen" / "thoughts.jsonl"

    def until_prepare(lines):
        def say(line):
            lines.append(line)
            if line.startswith("prepare: running"):
                raise KeyboardInterrupt
        return say

    with LoopbackServer(respond) as server:
        config = write_study(tmp_path / "taught.yaml", {
            "name": "taught", "task": "nli_cot", "data": {"teacher_input": str(inp), "test_file": str(test_file)},
            "teacher": {"model": "open-mistral-7b", "stages": ["thoughts"], "server_url": server.url},
            "ablations": ["correct"],
            "training": {"base": str(REPO / "configs/train/demo.yaml"),
                         "set": {"model.base_model": str(tiny_model), **TRAINING}},
            "evaluation": EVALUATION})
        # a run killed mid-thoughts left the first 4 rows, asked exactly as the study asks them
        thoughts.parent.mkdir(parents=True)
        run_stage(StageRun(stage="thoughts", input=inp, out=thoughts, model="open-mistral-7b",
                           server_url=server.url, limit=4))
        assert server.stats()["requests"] == 4

        lines = []
        with pytest.raises(KeyboardInterrupt, match="stopped in prepare; finished this run: thoughts"):
            run_study(config, root, say=until_prepare(lines))
        assert server.stats()["requests"] == 10  # the 6 missing rows only
        assert len(thoughts.read_text().splitlines()) == 10
        assert lines[1].startswith("thoughts: running (new)")

        lines = []
        with pytest.raises(KeyboardInterrupt):
            run_study(config, root, say=until_prepare(lines))
        assert "thoughts: skipped (current)" in lines and server.stats()["requests"] == 10
