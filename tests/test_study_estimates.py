"""`study plan`'s estimates (the project's issue 19): a training's GPU time from its SFT rows' tokens and
the committed throughput, an evaluation's from the test rows; "unknown" says why, never a made-up number."""

import json

from conftest import REPO, write_jsonl


def training_stage(train_file, **training):
    from cotharness.study.graph import Stage
    from trainer.config import load_config

    cfg = load_config(REPO / "configs/train/default.yaml",
                      {"data": {"train_file": str(train_file)}, "training": training})
    return Stage("train/x", "train", cfg.model_dump(mode="json"))


def test_a_training_is_estimated_from_its_rows_tokens_and_the_committed_rate(tmp_path):
    from cotharness.study.estimates import gpu_time

    rate = json.loads((REPO / "bench/results/train_throughput.json").read_text())["project"]["real_tokens_per_s_median"]
    rows = [{"prompt": "p" * 150, "completion": "c" * 150, "label": 1} for _ in range(30)]  # 100 tokens a row
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    said = gpu_time(training_stage(train, num_train_epochs=2))
    assert "~6,000 tokens (30 rows x 2 epochs" in said and f"{rate:,} real tokens/s" in said, said
    said = gpu_time(training_stage(train, max_steps=10, per_device_train_batch_size=4,
                                   gradient_accumulation_steps=2))
    assert "~8,000 tokens (10 steps of 8 rows" in said, said
    said = gpu_time(training_stage(tmp_path / "absent.jsonl"))
    assert said.startswith(f"unknown until {tmp_path / 'absent.jsonl'} exists"), said


def test_a_model_without_a_benchmark_is_unknown(tmp_path, tiny_model):
    from cotharness.study.estimates import gpu_time
    from cotharness.study.graph import Stage
    from trainer.config import load_config

    cfg = load_config(REPO / "configs/train/demo.yaml", {"model": {"base_model": str(tiny_model)}})
    said = gpu_time(Stage("train/x", "train", cfg.model_dump(mode="json")))
    # the tiny model's config is local: the memory estimator still says its peak
    assert said.startswith(f"unknown: no benchmark of {tiny_model}; peak ~") and "GiB per GPU" in said, said
