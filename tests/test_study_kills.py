"""`cotharness study run` killed for real (the project's issue 19): SIGINT during a teacher stage asks no
finished row again on the rerun, SIGINT during an evaluation reruns that evaluation and nothing trained.
And every shipped configs/study/*.yaml, sized down (the tiny model for every model, small generated data,
the loopback API for the teacher), passes `study plan` and runs end to end."""

import json
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
import yaml
from test_study_run import EVALUATION, TRAINING, run, tiny_study, write_study
from typer.testing import CliRunner

from backtranslate_responder import RUBRIC_OPENING
from backtranslate_responder import respond as backtranslate_respond
from conftest import REPO, write_jsonl
from fake_teacher import pairs, respond
from loopback_server import LoopbackServer


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-test-" + secrets.token_hex(12))


class Study:
    """``cotharness study run CONFIG --root ROOT`` as a process, its stdout read line by line as it comes."""

    def __init__(self, config: Path, root: Path):
        self.command = f"cotharness study run {config} --root {root}"
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("cotharness")), "study", "run", str(config), "--root", str(root)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "400"})
        self.lines: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, to), daemon=True)
                         for s, to in ((self.proc.stdout, self.lines), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    def _read(self, stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, ready, timeout=120.0):
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.02)

    def interrupt(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=120)
        for t in self._readers:
            t.join(timeout=10)
        assert self.proc.returncode == 130, self.output()
        return " ".join(" ".join(self.err).split())

    def output(self) -> str:
        return "\n".join(self.lines[-40:]) + "\n" + "\n".join(self.err[-40:])


def rows_in(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_a_study_killed_during_a_teacher_stage_asks_no_finished_row_again(key, tiny_model, tmp_path):
    n = 24
    inp = write_jsonl(tmp_path / "pairs.jsonl", pairs(n))
    test_file = write_jsonl(tmp_path / "test.jsonl", pairs(4))
    root = tmp_path / "studies"
    thoughts = root / "killed" / "datagen" / "thoughts.jsonl"
    with LoopbackServer(respond, latency=0.3) as server:
        config = write_study(tmp_path / "killed.yaml", {
            "name": "killed", "task": "nli_cot", "data": {"teacher_input": str(inp), "test_file": str(test_file)},
            "teacher": {"model": "open-mistral-7b", "stages": ["thoughts"], "server_url": server.url,
                        "concurrency": 2},
            "ablations": ["correct"],
            "training": {"base": str(REPO / "configs/train/demo.yaml"),
                         "set": {"model.base_model": str(tiny_model), **TRAINING}},
            "evaluation": EVALUATION})
        study = Study(config, root)
        study.wait_for(lambda: len(rows_in(thoughts)) >= 4)
        said = study.interrupt()
        assert "interrupted: study killed: stopped in thoughts" in said, said[-1500:]
        assert "finished this run: none" in said and study.command in said
        kept = rows_in(thoughts)
        asked = server.stats()["requests"]
        assert 4 <= len(kept) < n and asked < n
        # the requests in flight when the signal came finished and were saved (datagen's runner drains on
        # the first Ctrl-C): every request sent has its row
        assert asked == len(kept), (asked, len(kept))

        result, lines = run(config, root)
        assert list(result.ran) == ["thoughts", "prepare", "train/correct", "eval/base", "eval/correct", "compare"]
        assert server.stats()["requests"] == n, server.stats()  # nothing asked twice
        done = rows_in(thoughts)
        assert sorted(r["id"] for r in done) == sorted(f"r{i}" for i in range(n))  # each row once
        assert {r["id"]: r for r in done if r["id"] in {k["id"] for k in kept}} == {r["id"]: r for r in kept}
        assert (root / "killed" / "compare" / "summary.json").is_file()


@pytest.fixture(scope="module")
def nli_data(tmp_path_factory):
    from datagen.synthetic.nli import generate

    d = tmp_path_factory.mktemp("kill_data")
    return {"train": str(write_jsonl(d / "train.jsonl", generate("train", 24))),
            "dev": str(write_jsonl(d / "dev.jsonl", generate("dev", 8))),
            "test": str(write_jsonl(d / "test.jsonl", generate("test", 8)))}


def test_a_study_killed_during_an_evaluation_reruns_it_and_retrains_nothing(nli_data, tiny_model, tmp_path):
    data = {"test_file": nli_data["test"], "sft": {"a": {"train": nli_data["train"], "dev": nli_data["dev"]}}}
    study_config = tiny_study("evalcut", data, tiny_model, ablations=("a",))
    study_config["evaluation"] = {**EVALUATION, "gen_kwargs": {"max_gen_toks": 48}, "limit": 8}
    config = write_study(tmp_path / "evalcut.yaml", study_config)
    root = tmp_path / "studies"
    home = root / "evalcut"
    adapter = home / "runs" / "a" / "adapter_model.safetensors"

    study = Study(config, root)
    study.wait_for(lambda: any(line.startswith("eval/base: running") for line in study.lines))
    time.sleep(0.5)  # into lm-eval
    said = study.interrupt()
    assert "interrupted: study evalcut: stopped in eval/" in said, said[-1500:]
    assert "finished this run: train/a" in said
    trained = adapter.stat().st_mtime_ns, json.loads((home / "runs" / "a" / "run.json").read_text())
    assert trained[1]["status"] == "complete" and trained[1]["global_step"] == 4

    result, lines = run(config, root)
    assert result.skipped[0] == "train/a" and "train/a: skipped (current)" in lines
    assert "train/a" not in result.ran and list(result.ran)[-1] == "compare"
    assert "eval/a" in result.ran
    assert (adapter.stat().st_mtime_ns, json.loads((home / "runs" / "a" / "run.json").read_text())) == trained
    for row in ("base", "a"):
        assert len(list((home / "eval" / row).rglob("results_*.json"))) == 1
    summary = json.loads((home / "compare" / "summary.json").read_text())
    assert "base" in json.dumps(summary)


# --- the shipped studies, sized down -------------------------------------------------------------------

SEED_STUDIES = sorted(p.stem for p in (REPO / "configs" / "study").glob("*.yaml"))
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
# the recipes' GPU settings, replaced for a CPU; the rest of each study's training config stands
CPU = {"model.quantization": "none", "model.compute_dtype": "float32", "training.optim": "adamw_torch",
       "training.bf16": False, "training.use_cpu": True, "training.dataloader_num_workers": 0,
       "training.activation_checkpointing": False}
SMALL = {**TRAINING, "training.max_steps": 2, "training.save_steps": 2, "training.eval_steps": 2}


def teacher_pairs(n):
    """Pairs the fake teacher answers; every fourth gold label is flipped, so some rows are wrong and reflect
    has rows to rewrite."""
    rows = pairs(n)
    for r in rows[::4]:
        r["label"] = 1 - r["label"]
    return rows


def small_files(task: str, d: Path) -> dict[str, str]:
    """train/dev/test files of ``task``'s format, a few rows each (plus the teacher's input pairs)."""
    files = {"teacher_input": str(write_jsonl(d / "pairs.jsonl", teacher_pairs(12)))}
    if task == "instruct":  # backtranslation: seed pairs, unlabelled responses, held-out instructions
        from test_study_backtranslation import instructions, responses, seed_pairs

        return files | {"seed_pairs": str(write_jsonl(d / "seed_pairs.jsonl", seed_pairs())),
                        "responses": str(write_jsonl(d / "responses.jsonl", responses())),
                        "test": str(write_jsonl(d / "test.jsonl", instructions()))}
    if task == "tool_select":
        from datagen.tools.cli import build

        build(d / "tools", per_tool=10, ambiguous_per_tool=0, log=lambda *a, **k: None)
        return files | {s: str(d / "tools" / f"{s}.jsonl") for s in ("train", "dev", "test")}
    if task == "puzzte":
        from datagen.synthetic.puzzles import generate
    else:
        from datagen.synthetic.nli import generate
    sizes = {"train": 16, "dev": 4, "test": 4}
    return files | {s: str(write_jsonl(d / f"{s}.jsonl", generate(s, n))) for s, n in sizes.items()}


def local(value, tiny_model):
    """A hub id (or any model path this machine lacks) becomes the tiny model."""
    return str(tiny_model) if isinstance(value, str) and HUB_ID.fullmatch(value) else value


def sized_down(study: dict, files: dict, tiny_model: Path, server_url: str) -> dict:
    """The shipped study with only what must change to run here: every model the tiny one, the data small
    generated files, the teacher the loopback server, training a few CPU steps, evaluation 4 rows."""
    study = json.loads(json.dumps(study))
    data = study["data"]
    if "synthetic" in data:  # the study makes its data (and its base): small ones
        data["synthetic"].update(train=16, dev=4, test=4)
    else:
        data["test_file"] = files["test"]
    if study.get("tiny_base"):
        study["tiny_base"].update(shape={"hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": 2,
                                         "intermediate_size": 192}, steps=2)
    if "teacher_input" in data:
        data["teacher_input"] = files["teacher_input"]
    for pair in (data.get("sft") or {}).values():
        pair.update(train=files["train"], dev=files["dev"])
    if study.get("teacher"):
        study["teacher"]["server_url"] = server_url
    bt = study.get("backtranslation")
    if bt:  # the backward model the tiny one (from training.set), the judge the loopback server, 8 tokens
        bt.update(seed_pairs=files["seed_pairs"], responses=files["responses"], dev_fraction=0.2)
        bt["augment"] = {**bt.get("augment", {}), "load_in_4bit": False, "batch_size": 6, "max_tokens": 8,
                         **({"model": str(tiny_model)} if bt.get("augment", {}).get("model") else {})}
        bt["curate"] = {**bt.get("curate", {}), "server_url": server_url}
        study["evaluation"]["metadata"] = {**study["evaluation"].get("metadata", {}), "judge_url": server_url,
                                           "judge_cache": False}
    training = study.setdefault("training", {})
    given = {k: local(v, tiny_model) for k, v in (training.get("set") or {}).items()}
    own_base = {} if study.get("tiny_base") else {"model.base_model": str(tiny_model)}
    training["set"] = {**given, **own_base, **CPU, **SMALL}
    if study["task"] == "tool_select":  # the tiny byte-level tokenizer spends ~2x Mistral's tokens on its prompt
        training["set"]["data.max_length"] = 2048
    for overrides in (training.get("per_ablation") or {}).values():
        overrides.update({k: local(v, tiny_model) for k, v in overrides.items()})
    ev = study.setdefault("evaluation", {})
    if ev.get("base"):
        ev["base"] = local(ev["base"], tiny_model)
    ev["baselines"] = {k: local(v, tiny_model) for k, v in (ev.get("baselines") or {}).items()}
    ev.update({k: v for k, v in EVALUATION.items()})
    return study


def either(body: dict) -> str:
    """The NLI teacher, or the backtranslation study's backward model and pair judge."""
    system = body["messages"][0]
    if system["role"] == "system" and system["content"].startswith(RUBRIC_OPENING):
        return backtranslate_respond(body)
    return respond(body)


@pytest.mark.parametrize("name", SEED_STUDIES)
def test_a_shipped_study_plans_and_runs_end_to_end_sized_down(name, key, tiny_model, tmp_path):
    from cotharness.cli import app
    from cotharness.study.config import load_study
    from cotharness.study.graph import build
    from cotharness.study.identity import plan

    shipped = yaml.safe_load((REPO / "configs" / "study" / f"{name}.yaml").read_text())
    files = small_files(shipped["task"], tmp_path)
    root = tmp_path / "studies"
    with LoopbackServer(either) as server:
        config = write_study(tmp_path / f"{name}.yaml", sized_down(shipped, files, tiny_model, server.url))
        planned = CliRunner().invoke(app, ["study", "plan", str(config), "--root", str(root)])
        assert planned.exit_code == 0, planned.output
        stages = build(load_study(config), root, config)
        assert f"study {name}: {len(stages)} stages, {len(stages)} new" in " ".join(planned.output.split())

        result, lines = run(config, root)
        # every stage ran (the API stages side by side: in the order they finished)
        assert sorted(result.ran) == sorted(s.id for s in stages) and result.skipped == []
        # the structure stands: one row per model of the shipped study, compared
        rows = ["base", *(shipped.get("evaluation", {}).get("baselines") or {})]
        assert all(f"eval/{r}" in result.ran for r in rows)
        assert ("teacher_test" in result.ran) == bool(shipped.get("evaluation", {}).get("teacher"))
        assert sum(s.kind == "train" and s.id != "train/backward" for s in stages) == len(shipped["ablations"])
        home = root / name
        assert {v.status for v in plan(build(load_study(config), root, config), home)} == {"current"}
        summary = json.loads((home / "compare" / "summary.json").read_text())
        assert (home / "compare" / "summary.md").is_file()
        for row in (*rows, *shipped["ablations"]):
            assert row in json.dumps(summary)
