"""The demo pipeline's plumbing at toy size (the real demo, `make demo`, is the +30-points check)."""

import json

from datagen.synthetic.nli import FAMILIES, check, generate, vocabulary

from conftest import REPO


def test_thoughts_end_with_the_comparison_that_decides_the_label():
    rows = list(generate("train", 200))
    assert {r["family"] for r in rows} == set(FAMILIES)
    for r in rows:
        verdict = r["thought_process"].rsplit(". ", 1)[-1]
        assert verdict == ("So it follows." if r["label"] else "So it does not follow."), r
        # the verdict is exactly "some pair was the same"
        assert (": same." in r["thought_process"]) == bool(r["label"]), r


def test_check_spells_out_every_pair():
    assert check("Rome", ["Oslo", "Rome"]) == "Rome and Oslo: different. Rome and Rome: same. So it follows."
    assert check("calm", ["brave"]) == "calm and brave: different. So it does not follow."


def test_generic_pretraining_text_holds_nothing_of_the_task():
    import random

    from cotharness.tiny_pretrain import equality_line

    rng, words = random.Random(0), vocabulary()
    lines = [equality_line(rng, words) for _ in range(500)]
    assert 150 < sum(line.endswith(": same.") for line in lines) < 350
    for line in lines:
        x, rest = line.split(" and ", 1)
        y, verdict = rest.rsplit(": ", 1)
        assert verdict == ("same." if x == y else "different.")
    text = " ".join(lines)
    for task_word in ("Premise", "Hypothesis", "Step", "follows", "label"):
        assert task_word not in text


def test_pretrain_replaces_the_model_in_place(tiny_model, tmp_path):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from cotharness.tiny_pretrain import pretrain

    model_dir = tmp_path / "base"
    shutil.copytree(tiny_model, model_dir)
    before = AutoModelForCausalLM.from_pretrained(model_dir).model.embed_tokens.weight.clone()
    record = pretrain(model_dir, steps=3, batch_size=4, progress=False)
    after = AutoModelForCausalLM.from_pretrained(model_dir).model.embed_tokens.weight
    assert not torch.equal(before, after)
    assert json.loads((model_dir / "pretrain.json").read_text())["steps"] == 3
    assert 0.0 <= record["equality_accuracy"] <= 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]  # no staging or backup left behind
    assert (model_dir / "tokenizer.json").is_file()


def toy_study(path, **tiny_base):
    """The shipped demo study at toy size: a 2-layer base pre-trained 2 steps, 32 training rows, 2 steps."""
    import yaml

    study = yaml.safe_load((REPO / "configs/study/demo.yaml").read_text())
    study["tiny_base"].update({"shape": {"hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": 2,
                                         "intermediate_size": 192}, "steps": 2, **tiny_base})
    study["data"]["synthetic"].update({"train": 32, "dev": 8, "test": 10})
    study["training"]["set"].update({"training.max_steps": 2, "training.eval_steps": 1, "training.save_steps": 1,
                                     "training.logging_steps": 1, "training.report_to": []})
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_the_criterion_is_read_from_the_comparison(tmp_path):
    from cotharness.demo import check

    def summary(base, tuned, low):
        rows = [{"model": "base", "task": "nli_cot", "metric": "acc", "value": base, "ci_low": 0.0, "ci_high": base},
                {"model": "synthetic", "task": "nli_cot", "metric": "acc", "value": tuned, "ci_low": low,
                 "ci_high": 1.0}]
        return write(tmp_path / "summary.json", rows)

    def write(path, rows):
        path.write_text(json.dumps(rows))
        return path

    assert check(summary(0.0, 0.8, 0.72))[0]
    ok, line = check(summary(0.0, 0.55, 0.48))  # +55 points, but within reach of chance: the format alone
    assert not ok and "CI above chance" in line
    assert not check(summary(0.3, 0.58, 0.52))[0]  # above chance, but only +28 points


def test_the_demo_is_a_study_of_the_project_found_from_any_folder(tmp_path, monkeypatch):
    from cotharness.demo import STUDY
    from cotharness.study.config import load_study
    from cotharness.study.graph import build

    monkeypatch.chdir(tmp_path)
    assert STUDY.is_absolute() and STUDY == REPO / "configs/study/demo.yaml"
    stages = build(load_study(STUDY), tmp_path / "studies", STUDY)
    assert [s.id for s in stages] == ["tiny_base", "synthetic", "train/synthetic", "eval/base", "eval/synthetic",
                                      "compare"]
    train = stages[2].config
    assert train["model"]["base_model"] == str(tmp_path / "studies/demo/tiny-base")
    assert train["data"]["train_file"] == str(tmp_path / "studies/demo/data/train.jsonl")
    assert train["training"]["max_steps"] == 1600 and train["model"]["quantization"] == "none"


def test_the_demo_runs_as_a_study_skips_what_is_current_and_rebuilds_for_another_seed(tmp_path, monkeypatch):
    import time

    from cotharness import demo

    monkeypatch.chdir(tmp_path)  # any folder: the study's training config is the project's own
    study, root = toy_study(tmp_path / "demo.yaml"), tmp_path / "studies"
    home = root / "demo"
    lines = []
    # an untrained toy cannot gain 30 points: the demo must say so and fail, not pretend
    code, line = demo.run(root=root, study=study, say=lines.append)
    assert code == 1 and "the demo expects at least +30%" in line and str(home / "report.md") in line
    assert lines[0] == "study demo: 0 current, 6 to run (6 new); executor inline"
    assert (home / "report.md").is_file() and "# Study demo" in (home / "report.md").read_text()
    rows = json.loads((home / "compare" / "summary.json").read_text())
    acc = {r["model"]: r for r in rows if r["metric"] == "acc"}
    assert set(acc) == {"base", "synthetic"}
    for r in acc.values():
        assert r["task"] == "nli_cot" and r["ci_low"] <= r["value"] <= r["ci_high"]
    assert (home / "compare" / "summary.md").is_file()
    families = json.loads((home / "by_family.json").read_text())
    assert sum(f["n"] for f in families["synthetic"].values()) == 10 and (home / "by_family.png").stat().st_size
    assert [len(p.read_text().splitlines()) for p in (home / "data" / f"{s}.jsonl" for s in ("train", "dev", "test"))] \
        == [32, 8, 10]
    run = json.loads((home / "runs" / "synthetic" / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["model"]["quantization"] == "none"
    assert run["config"]["model"]["base_model"] == str(home / "tiny-base")

    # a second run finds everything current: it runs nothing, in seconds
    stamps = {p: p.stat().st_mtime_ns for p in (home / "tiny-base" / "pretrain.json",
                                                 home / "runs" / "synthetic" / "run.json")}
    start, lines = time.monotonic(), []
    assert demo.run(root=root, study=study, say=lines.append)[0] == 1
    assert lines[0] == "study demo: 6 current, 0 to run" and time.monotonic() - start < 20
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}

    # another seed rebuilds the base and everything after it; the data stay
    lines = []
    assert demo.run(root=root, study=study, seed=1, limit=4, say=lines.append)[0] == 1
    ran = [line.split(":")[0] for line in lines if ": ran in " in line]
    assert ran == ["tiny_base", "train/synthetic", "eval/base", "eval/synthetic", "compare"]
    assert json.loads((home / "tiny-base" / "pretrain.json").read_text())["seed"] == 1
    run = json.loads((home / "runs" / "synthetic" / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["training"]["seed"] == 1 and run["resumed_from"] is None
    assert len(list((home / "eval" / "synthetic").rglob("results_*.json"))) == 1

    # a seed in the study itself is the same change: a rebuilt base makes the adapter stale
    toy_study(study, steps=3, seed=1)
    lines = []
    demo.run(root=root, study=study, seed=1, limit=4, say=lines.append)
    assert json.loads((home / "tiny-base" / "pretrain.json").read_text())["steps"] == 3
    assert any(line.startswith("train/synthetic: running") for line in lines)


def test_the_demo_options_that_are_gone_say_so():
    from typer.testing import CliRunner

    from cotharness.cli import app

    result = CliRunner().invoke(app, ["demo", "--out", "results/demo"])
    assert result.exit_code == 2 and "--out and --work are gone" in result.output
