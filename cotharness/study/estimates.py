"""What a stage will cost before it runs, where that is cheap to know, and where each figure comes from.

- API stages: the datagen dry run's estimate (``datagen.engine.pipeline.print_dry_run``) without its
  request planning: the stage's prompts rendered for the rows it wants of its input, 1 token per 3
  characters, ``TYPICAL_ANSWER_TOKENS`` per answer, priced by ``configs/datagen/prices.yaml``. Unknown
  until the input exists (score and reflect read the output of the stage before them).
- GPU stages: the committed benchmark figures in ``bench/results/`` (measured on Mistral-7B's shape),
  scaled by the rows (evaluation) or tokens (training: its SFT rows' text, 1 token per 3 characters,
  times the epochs) to process; unknown for any other model, or before the rows are known. A training
  also shows the memory estimator's peak where the base model's config can be read.
Never a number from nowhere: every estimate says its source, or says "unknown" and why.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotharness.study.config import PROJECT
from cotharness.study.graph import Stage

BENCH = PROJECT / "bench" / "results"
BENCH_MODEL = "Mistral-7B"  # the shape bench/results/{train,eval}_throughput.json measured


def api_cost(stage: Stage) -> str:
    cfg = stage.config
    try:
        from datagen.engine.pipeline import TYPICAL_ANSWER_TOKENS
        from datagen.engine.pricing import estimate_tokens, price_for
        from datagen.teacher.stages import STAGES, input_rows
        from harness_tasks.tasks import get_task

        if cfg["backend"] == "hf":
            return "$0 (a local model)"
        price = price_for(cfg["model"], cfg["backend"])
        if price is None:
            return f"unknown: {cfg['model']} is not in configs/datagen/prices.yaml"
        source = Path(cfg["input"])
        if not source.is_file():
            return f"unknown until {source} exists"
        task = get_task(cfg["task"])
        made = STAGES[cfg["stage"]](task)
        rows = [r for r in input_rows(cfg["stage"], source, task)[: cfg["limit"]] if made.wanted(r)]
        tokens_in = sum(estimate_tokens("".join(m["content"] for m in made.messages(r))) for r in rows)
        tokens_out = TYPICAL_ANSWER_TOKENS * len(rows)
    except Exception as err:  # noqa: BLE001 - an estimate never stops a plan; it says why it is missing
        return f"unknown: {str(err).splitlines()[0][:80]}"
    return (f"~${price.cost(tokens_in, tokens_out):.4f} for {len(rows)} rows (dry-run estimate: "
            f"{TYPICAL_ANSWER_TOKENS} tokens per answer; {price.describe()})")


def _bench(name: str) -> dict | None:
    path = BENCH / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _rows(path: str, limit: int | None) -> int | None:
    from harness_tasks.data_files import read_rows

    if not Path(path).is_file():
        return limit
    try:
        count = sum(1 for _ in read_rows(path))
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the step, not the estimate
        return limit
    return min(count, limit) if limit else count


def gpu_time(stage: Stage) -> str:
    if stage.kind == "train":
        return _train_time(stage)
    if stage.kind == "eval":
        return _eval_time(stage)
    return ""


def _train_tokens(cfg: dict) -> tuple[int, str] | None:
    """The real tokens a training will see: its rows' text at 1 token per 3 characters (the dry run's
    rule), times the epochs, or the rows ``max_steps`` draws; None until the SFT file exists."""
    from harness_tasks.data_files import read_rows

    path = Path(cfg["data"]["train_file"])
    if not path.is_file():
        return None
    try:
        rows = [row for _, row in read_rows(path)]
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the step, not the estimate
        return None
    if not rows:
        return None
    per_row = sum(len(v) for row in rows for v in row.values() if isinstance(v, str)) / 3 / len(rows)
    t = cfg["training"]
    if (t.get("max_steps") or -1) > 0:
        drawn = t["max_steps"] * t.get("per_device_train_batch_size", 8) * t.get("gradient_accumulation_steps", 1)
        return round(per_row * drawn), f"{t['max_steps']} steps of {drawn // t['max_steps']} rows"
    epochs = t.get("num_train_epochs", 3)
    return round(per_row * len(rows) * epochs), f"{len(rows)} rows x {epochs:g} epochs"


def _train_memory(cfg: dict) -> str:
    """The memory estimator's peak (trainer/memory.py), where the base model's config can be read."""
    try:
        from trainer.config import TrainConfig
        from trainer.memory import estimate

        return f"; peak ~{estimate(TrainConfig.model_validate(cfg)).total:.0f} GiB per GPU (trainer/memory.py)"
    except Exception:  # noqa: BLE001 - a hub model not cached here: no shape to estimate from
        return ""


def _train_time(stage: Stage) -> str:
    cfg = stage.config
    memory = _train_memory(cfg)
    if BENCH_MODEL not in str(cfg["model"]["base_model"]):
        return f"unknown: no benchmark of {cfg['model']['base_model']}{memory}"
    bench = _bench("train_throughput.json")
    if not bench:
        return "unknown: no bench/results/train_throughput.json" + memory
    rate = bench["project"]["real_tokens_per_s_median"]
    source = f"{rate:,} real tokens/s on {bench['device']} (bench/results/train_throughput.json)"
    counted = _train_tokens(cfg)
    if counted is None:
        return f"unknown until {cfg['data']['train_file']} exists; {source}{memory}"
    tokens, how = counted
    seconds = tokens / rate
    shown = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"
    return (f"~{shown} for ~{tokens:,} tokens ({how}; 1 token per 3 characters) at {source}; "
            f"training steps only, evaluations during training not counted{memory}")


def _eval_time(stage: Stage) -> str:
    cfg = stage.config
    if BENCH_MODEL not in str(cfg["pretrained"]):
        return f"unknown: no benchmark of {cfg['pretrained']}"
    bench = _bench("eval_throughput.json")
    if not bench:
        return "unknown: no bench/results/eval_throughput.json"
    four_bit = bool(cfg["model_args"].get("load_in_4bit"))
    arm = bench["project_4bit" if four_bit else "project_bf16"]
    seconds = arm.get("command", {}).get("command_seconds_for_1977", {}).get("median") or arm.get("seconds_for_1977")
    rows = _rows(cfg["test_file"], cfg["limit"])
    if not seconds or not rows:
        return "unknown: the test file's rows are not known yet"
    per_task = seconds * rows / 1977
    total = per_task * len(cfg["tasks"])
    shown = f"{total / 60:.0f} min" if total >= 60 else f"{total:.0f} s"
    return (f"~{shown} for {rows} rows x {len(cfg['tasks'])} task(s) on {bench['device']} "
            f"({'4-bit' if four_bit else 'bf16'} arm of bench/results/eval_throughput.json: {seconds:.0f} s per "
            "1,977 documents, 200 tokens per answer)")
