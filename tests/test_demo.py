"""The demo pipeline's plumbing at toy size (the real demo, `make demo`, is the +30-points check)."""

import json

import pytest

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


@pytest.fixture
def toy_demo(monkeypatch, tmp_path):
    from cotharness import demo

    monkeypatch.setattr(demo, "BASE_SHAPE", {"hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": 2,
                                             "intermediate_size": 192})
    monkeypatch.setattr(demo, "PRETRAIN_STEPS", 2)
    monkeypatch.setattr(demo, "SPLITS", {"train": 32, "dev": 8, "test": 10})
    config = tmp_path / "demo.yaml"
    config.write_text(f"base: {REPO / 'configs/train/demo.yaml'}\n"
                      "training: {max_steps: 2, eval_steps: 1, save_steps: 1, logging_steps: 1}\n")
    return demo, config


def test_demo_pipeline_writes_the_report_and_resumes(toy_demo, tmp_path):
    demo, config = toy_demo
    out, work = tmp_path / "results", tmp_path / "work"
    # an untrained toy cannot gain 30 points: the demo must say so and fail, not pretend
    assert demo.run(out_dir=out, work=work, config=config) == 1
    rows = json.loads((out / "summary.json").read_text())
    acc = {r["model"]: r for r in rows if r["metric"] == "acc"}
    assert set(acc) == {"tiny-base", "tiny-base + LoRA"}
    for r in acc.values():
        assert {"model", "task", "metric", "value", "ci_low", "ci_high"} <= set(r) and r["task"] == "nli_cot"
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    assert (out / "summary.md").is_file() and (out / "summary.csv").is_file()
    assert list(out.glob("*.png"))
    families = json.loads((out / "by_family.json").read_text())
    assert sum(f["n"] for f in families["tiny-base + LoRA"].values()) == 10
    assert (out / "by_family.png").stat().st_size > 0
    run = json.loads((work / "lora" / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["model"]["quantization"] == "none"

    # a second run reuses the base and the adapter and redoes only the evaluation
    stamps = {p: p.stat().st_mtime_ns for p in (work / "tiny-base" / "pretrain.json", work / "lora" / "run.json")}
    assert demo.run(out_dir=out, work=work, config=config) == 1
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert len(list((out / "lm_eval" / "tuned").rglob("results_*.json"))) == 1

    # another seed must not reuse what the first one built: base and adapter are made again
    assert demo.run(out_dir=out, work=work, config=config, seed=1) == 1
    assert json.loads((work / "tiny-base" / "pretrain.json").read_text())["seed"] == 1
    run = json.loads((work / "lora" / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["training"]["seed"] == 1 and run["resumed_from"] is None

    # a rebuilt base (same seed and training config) makes the adapter stale: it is trained again
    stamp = (work / "lora" / "run.json").stat().st_mtime_ns
    demo.PRETRAIN_STEPS = 3  # monkeypatched: restored after the test
    assert demo.run(out_dir=out, work=work, config=config, seed=1) == 1
    assert json.loads((work / "tiny-base" / "pretrain.json").read_text())["steps"] == 3
    assert (work / "lora" / "run.json").stat().st_mtime_ns != stamp
