"""``cotharness eval``: lm-eval's own CLI with this project's tasks and 4-bit loading preset.

Differences from plain ``lm_eval`` (everything else is passed through untouched):
- ``harness_tasks/`` is always on the task search path (in addition to any ``--include_path``);
- before the model loads, ``--metadata`` keys are checked against the selected tasks' loaders (a typo
  is an error with a did-you-mean) and each task's data is loaded once, so a bad file fails in seconds;
- ``--model hf`` (lm-eval's default) becomes ``hf-cot`` (``harness_tasks/hf_model.py``): ``load_in_4bit=True``
  and ``bnb_4bit_*`` work on transformers 5, an adapter is merged into an unquantized base, and the
  batch size defaults to ``auto``, sized for generation from the prompts and free memory;
- with ``--output_path``, samples are logged and each CoT task's predictions are also written as
  ``predictions_<task>_<timestamp>.csv`` (id, predicted label, how it was parsed, gold if known), and
  for labelled documents per-class precision/recall/F1 and the confusion matrix are printed and
  written as ``per_class_<task>_<timestamp>.json`` (any label set: NLI classes, puzzle verdicts, tools).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from harness_tasks.cot_json import filtered_answer
from harness_tasks.manifest import write_atomic, write_csv_atomic
from harness_tasks.tasks import TASKS_DIR, schema_for

HF_ALIASES = {"hf", "hf-auto", "huggingface"}


def main(argv: list[str]) -> int:
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from harness_tasks import hf_model

    setup_logging()
    cli = HarnessCLI()
    if not argv or argv[0] not in ("run", "ls", "validate"):
        argv = ["run", *argv]  # like lm_eval's legacy form, and `cotharness eval --help` shows run's help
    sys.argv = ["lm_eval", *argv]  # HarnessCLI reads sys.argv
    args = cli.parse_args()
    args.include_path = [p for p in (getattr(args, "include_path", None), str(TASKS_DIR)) if p]
    if args.command != "run":
        cli.execute(args)
        return 0
    if args.model in HF_ALIASES or (args.model is None and not getattr(args, "config", None)):
        args.model = hf_model.NAME  # lm-eval's default model is hf
    if args.model == hf_model.NAME and getattr(args, "batch_size", None) is None:
        args.batch_size = "auto"  # lm-eval's default is 1; hf-cot sizes generation batches to the memory
    missing = _missing_local_paths(args.model_args)
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    from harness_tasks.data_files import DataFileError
    from harness_tasks.judge import JudgeError

    try:
        problem = check_inputs(args)
    except (DataFileError, JudgeError) as err:  # the user's data file or judge settings, said in one line
        problem = str(err)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.output_path:
        args.log_samples = True
    before = _samples(args.output_path)
    try:
        cli.execute(args)
    except (DataFileError, JudgeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") != "0":
        return 0  # under accelerate/torchrun only rank 0 saves samples, so only it writes predictions
    for samples in sorted(_samples(args.output_path) - before):
        rows = read_predictions(samples)
        if rows is None:
            continue
        print(f"predictions: {write_predictions(samples, rows)}")
        report = write_per_class(samples, rows)
        if report:
            print(f"per class: {report}")
    return 0


def check_inputs(args) -> str | None:
    """Before any model loads: the ``--metadata`` keys are ones the selected tasks read (a typo would
    silently score the bundled sample), and each task's data loads. Returns the problem, if any;
    a bad file raises DataFileError. Warnings (keys passed on to a task not of this project) are printed."""
    from cotharness import eval_inputs

    if not args.tasks:
        return None  # tasks from a --config file: lm-eval checks them
    metadata = args.metadata or {}
    ours, others = eval_inputs.select(args.tasks)
    errors, warnings = eval_inputs.check_keys(metadata, ours, others)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if errors:
        return errors[0]
    eval_inputs.check_data(metadata, ours)
    return None


LOCAL_PREFIXES = ("/", "./", "../", "~")


def _missing_local_paths(model_args) -> str | None:
    """A model, adapter or tokenizer given as a local path (absolute, ./ or ~) that does not exist: said in
    one line, before lm-eval would take it for a hub id and fail deep inside transformers."""
    if not isinstance(model_args, dict):
        return None
    for key in ("pretrained", "peft", "tokenizer"):
        value = model_args.get(key)
        if isinstance(value, str) and value.startswith(LOCAL_PREFIXES) and not Path(value).expanduser().exists():
            return f"--model_args {key}={value}: no such directory (a hub id has no leading '/', './' or '~')"
    return None


def _samples(output_path: str | None) -> set[Path]:
    return set(Path(output_path).rglob("samples_*.jsonl")) if output_path else set()


def read_predictions(samples: Path) -> list[dict] | None:
    """One task's predictions from lm-eval's samples file (id, predicted label, how it was parsed, gold
    if known); None if not a CoT-JSON task."""
    if schema_for(task_of(samples)) is None:
        return None  # a free-text task (e.g. judge-scored instruction following): no label to predict
    rows = []
    with samples.open(encoding="utf-8") as f:
        for line in f:
            sample = json.loads(line)
            resp = (sample.get("filtered_resps") or [None])[0]
            try:
                answer = filtered_answer(resp)
            except (TypeError, ValueError):
                return None  # not produced by our CoT filter (e.g. a log-likelihood task)
            doc = sample["doc"]
            rows.append({"id": doc.get("id", sample["doc_id"]), "predicted_label": answer["label"],
                         "parse_method": answer["method"], "label": doc.get("label")})
    return rows


def _beside(samples: Path, prefix: str, suffix: str) -> Path:
    return samples.with_name(samples.name.replace("samples_", prefix, 1)).with_suffix(suffix)


def write_predictions(samples: Path, rows: list[dict]) -> Path:
    """``predictions_<task>_<timestamp>.csv`` beside the samples file."""
    return write_csv_atomic(_beside(samples, "predictions_", ".csv"), rows,
                            ["id", "predicted_label", "parse_method", "label"])


def task_of(path: Path) -> str:
    """The task in lm-eval's ``samples_<task>_<timestamp>.jsonl`` name."""
    match = re.match(r"samples_(.+)_\d{4}-\d{2}-\d{2}T", path.name)
    return match.group(1) if match else path.stem


def write_per_class(samples: Path, rows: list[dict]) -> Path | None:
    """Per-class scores and confusion of the labelled predictions, printed and written as
    ``per_class_<task>_<timestamp>.json`` beside the samples file; None without labelled rows."""
    from rich.console import Console

    from cotharness.per_class import report, tables

    labelled = [r for r in rows if r["label"] is not None]
    if not labelled:
        return None
    task = task_of(samples)
    schema = schema_for(task)
    names = {str(k): v for k, v in schema.labels.items()} if schema else {}
    gold = [names.get(str(r["label"]), str(r["label"])) for r in labelled]
    pred = [None if r["predicted_label"] is None else names.get(str(r["predicted_label"]), str(r["predicted_label"]))
            for r in labelled]
    rep = {"task": task, **report(gold, pred, order=list(names.values()))}
    console = Console()
    for table in tables(task, rep):
        console.print(table)
    out = _beside(samples, "per_class_", ".json")
    write_atomic(out, json.dumps(rep, indent=2))
    return out
