"""The backtranslation study (configs/study/backtranslation.yaml's shape) on the tiny model: it plans every
stage new, runs inverse -> train/backward -> augment (the backward adapter, hf backend) -> curate (the
loopback judge) -> the forward trainings -> evaluations on instruct_judged -> compare end to end, a second
run runs nothing, and a changed curate threshold reruns curate and what reads it, never the backward model
or augment."""

import json
import os
import re
import secrets

import pytest
from test_study_kills import CPU, SMALL
from test_study_run import EVALUATION, run, write_study
from typer.testing import CliRunner

from backtranslate_responder import RESPONSES
from backtranslate_responder import respond as backtranslate_respond
from conftest import write_jsonl
from loopback_server import LoopbackServer

ORDER = ["inverse", "train/backward", "augment", "curate", "train/curated", "train/augmented", "eval/base",
         "eval/curated", "eval/augmented", "compare"]
# the stand-in judge reads each pair's score from a "(q=N)" tag in the response
QUALITY = [5, 4, 2, 5, 3, 1]


def seed_pairs():
    return [{"id": f"s{i}", "instruction": f"Tell me about topic {i}.", "response": f"Topic {i} is {text}"}
            for i, text in enumerate(RESPONSES)]


def responses():
    return [{"id": f"u{i}", "response": f"{RESPONSES[i]} (q={q})"} for i, q in enumerate(QUALITY)]


def instructions():
    return [{"id": f"t{i}", "instruction": text} for i, text in enumerate(
        ["Name a colour.", "Say hello.", "Count to three.", "Name a fruit."])]


def bt_study(files: dict, tiny_model, server_url: str, threshold: int = 4) -> dict:
    return {
        "name": "bt", "task": "instruct", "data": {"test_file": files["test"]},
        "backtranslation": {
            "seed_pairs": files["seed_pairs"], "responses": files["responses"], "dev_fraction": 0.2,
            "augment": {"backend": "hf", "batch_size": 6, "max_tokens": 8},
            "curate": {"backend": "mistral", "model": "mistral-large-latest", "server_url": server_url,
                       "threshold": threshold, "concurrency": 4}},
        "ablations": ["curated", "augmented"],
        "training": {"set": {"model.base_model": str(tiny_model), **CPU, **SMALL}},
        "evaluation": {**EVALUATION, "metadata": {"judge_model": "mistral-large-latest", "judge_url": server_url,
                                                  "judge_cache": False}},
        "comparison": {"base": "base", "primary": "curated"}}


@pytest.fixture(scope="module")
def server():
    # one server (one URL) for the module: the judge's URL is part of every evaluation's identity
    key = os.environ.get("MISTRAL_API_KEY")
    os.environ["MISTRAL_API_KEY"] = "sk-test-" + secrets.token_hex(12)
    with LoopbackServer(backtranslate_respond) as srv:
        yield srv
    if key is None:
        os.environ.pop("MISTRAL_API_KEY", None)
    else:
        os.environ["MISTRAL_API_KEY"] = key


@pytest.fixture(scope="module")
def study(server, tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("bt")
    files = {"seed_pairs": str(write_jsonl(d / "seed_pairs.jsonl", seed_pairs())),
             "responses": str(write_jsonl(d / "responses.jsonl", responses())),
             "test": str(write_jsonl(d / "test.jsonl", instructions()))}
    config = write_study(d / "bt.yaml", bt_study(files, tiny_model, server.url))
    return config, d / "studies", files


def test_the_plan_lists_every_stage_new(study):
    from cotharness.cli import app

    config, root, _ = study
    planned = CliRunner().invoke(app, ["study", "plan", str(config), "--root", str(root)])
    assert planned.exit_code == 0, planned.output
    said = " ".join(planned.output.split())
    assert f"study bt: {len(ORDER)} stages, {len(ORDER)} new" in said
    for stage in ORDER:
        assert stage in planned.output


def test_the_study_runs_end_to_end_then_runs_nothing(study):
    from cotharness.cli import app

    config, root, _ = study
    home = root / "bt"
    result, lines = run(config, root)
    assert list(result.ran) == ORDER and result.skipped == [], lines
    bt = home / "backtranslate"
    assert (bt / "backward" / "train.jsonl").is_file() and (bt / "backward" / "dev.jsonl").is_file()
    backward = json.loads((home / "runs" / "backward" / "run.json").read_text())
    assert backward["status"] == "complete" and backward["config"]["data"]["task"] == "backward"
    assert backward["config"]["lora"]["r"] == 32  # configs/train/backward.yaml
    # augment sampled the backward adapter, as the shipped settings say
    pairs = [json.loads(x) for x in (bt / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == len(QUALITY)
    assert all(p["meta"]["augment"]["backend"] == "hf" for p in pairs)
    manifest = json.loads((bt / "pairs.manifest.json").read_text())
    assert "temperature" in json.dumps(manifest) and "1.2" in json.dumps(manifest)
    usable = [json.loads(x) for x in (bt / "augmented.jsonl").read_text().splitlines()]
    assert len(usable) == sum(p["instruction"] is not None for p in pairs)
    curated = [json.loads(x) for x in (bt / "curated.jsonl").read_text().splitlines()]
    assert curated and all(r["score"] >= 4 for r in curated)
    forward = json.loads((home / "runs" / "curated" / "run.json").read_text())
    assert forward["config"]["data"]["task"] == "instruct" and forward["config"]["data"]["eval_file"] is None
    summary = json.dumps(json.loads((home / "compare" / "summary.json").read_text()))
    assert "judge_score" in summary and all(r in summary for r in ("base", "curated", "augmented"))

    again, lines = run(config, root)
    assert again.ran == {} and len(again.skipped) == len(ORDER)
    assert lines[0] == f"study bt: {len(ORDER)} current, 0 to run"

    reported = CliRunner().invoke(app, ["study", "report", str(config), "--root", str(root)])
    assert reported.exit_code == 0, reported.output
    text = (home / "report.md").read_text()
    assert "## Ablation table" in text and "judge_score" in text
    assert "instruction backtranslation" in text and "score >= 4" in text and "| train/backward |" in text


def test_a_changed_threshold_reruns_curate_and_what_reads_it_only(study, server, tiny_model):
    from cotharness.study.config import load_study
    from cotharness.study.graph import build
    from cotharness.study.identity import plan

    config, root, files = study
    home = root / "bt"
    scores = (home / "backtranslate" / "curated.scores.jsonl").read_bytes()
    write_study(config, bt_study(files, tiny_model, server.url, threshold=2))
    verdicts = {v.stage.id: v for v in plan(build(load_study(config), root, config), home)}
    assert {k for k, v in verdicts.items() if v.status != "current"} == {
        "curate", "train/curated", "eval/curated", "compare"}
    assert any("settings.threshold: 4 -> 2" in r for r in verdicts["curate"].reasons)

    result, _ = run(config, root)
    assert list(result.ran) == ["curate", "train/curated", "eval/curated", "compare"]
    assert {"inverse", "train/backward", "augment", "train/augmented"} <= set(result.skipped)
    # re-filtered from the saved scores: no pair judged again
    assert (home / "backtranslate" / "curated.scores.jsonl").read_bytes() == scores
    curated = [json.loads(x) for x in (home / "backtranslate" / "curated.jsonl").read_text().splitlines()]
    assert all(r["score"] >= 2 for r in curated) and any(r["score"] < 4 for r in curated)


def test_a_backtranslation_section_says_what_it_excludes(tmp_path):
    from cotharness.study.config import StudyError, load_study

    good = {"name": "x", "task": "instruct", "data": {"test_file": "t.jsonl"},
            "backtranslation": {"seed_pairs": "s.jsonl", "responses": "r.jsonl"}}
    config = write_study(tmp_path / "x.yaml", good)
    assert load_study(config).ablations == ["curated"]  # prepare's default ablations mean nothing here
    cases = {
        "leave out data.teacher_input, teacher:": {"data": {"teacher_input": "p.csv"}, "teacher": {"model": "m"}},
        "'curatd' is not a backtranslation ablation (curated, augmented); did you mean 'curated'?":
            {"ablations": ["curatd"]},
        "trains the 'instruct' task": {"task": "nli_cot"},
        "augment.model: the backward model's name on the server": {"backtranslation": {"augment": {"backend": "mistral"}}},
        "unknown key 'backtranslation.curate.treshold'; did you mean 'threshold'?":
            {"backtranslation": {"curate": {"treshold": 3}}},
    }
    for message, over in cases.items():
        with pytest.raises(StudyError, match=re.escape(message)):
            load_study(config, over)
