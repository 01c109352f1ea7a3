"""``cotharness demo``: the whole pipeline on the embedded tiny model, on a CPU, with no API key.

1. base: build the tiny Mistral-architecture model and pre-train it on generic word comparisons
   (cotharness/tiny_pretrain.py says why); kept in ``runs/demo/tiny-base`` and reused.
2. data: train/dev/test splits of the synthetic NLI task (datagen/synthetic/nli.py; test names unseen).
3. train: LoRA fine-tuning through the real trainer with ``configs/train/demo.yaml``.
4. evaluate base and fine-tuned with lm-eval ``nli_cot`` on the held-out test split.
5. compare: ``results/demo/summary.{md,csv,json}``, confusion matrices and bars, and the table.

Every stage is resumable: a finished stage is skipped, an interrupted training run resumes from its
last checkpoint, and an evaluation is redone whole; Ctrl-C says which. A base or adapter made with
another seed or training config is made again, never reused. The default config is the project's own
(found beside this package, not in the working directory), so the demo runs from any folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)

# The demo base: 128 wide, 4 layers (1.0M parameters); pre-training plus fine-tuning fit in the
# demo's ten minutes on 2 cores.
BASE_SHAPE = {"hidden_size": 128, "layers": 4, "heads": 4, "kv_heads": 2, "intermediate_size": 384}
PRETRAIN_STEPS = 1000  # word-comparison accuracy 0.9925-0.995, by machine (runs/demo/tiny-base/pretrain.json)
SPLITS = {"train": 2000, "dev": 100, "test": 200}
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "demo.yaml"
RERUN = "rerun the same command"
# The demo is the end-to-end check; it fails unless fine-tuning adds MIN_GAIN accuracy AND the
# fine-tuned CI clears chance: the base scores 0 (no parseable answer), so format alone gives ~+50.
MIN_GAIN = 0.30
CHANCE = 0.5
MAX_GEN_TOKS = 96  # the longest gold answer is 61 tokens; an untrained model would ramble to the limit


def build_base(path: Path, seed: int = 0) -> bool:
    """Build and pre-train the base unless ``path`` holds one made with these settings; True if built now."""
    from cotharness.tiny_model import build
    from cotharness.tiny_pretrain import pretrain

    done = path / "pretrain.json"
    if done.is_file():
        record = json.loads(done.read_text())
        shape = json.loads((path / "config.json").read_text())
        if (record.get("steps"), record.get("seed"), shape["hidden_size"], shape["num_hidden_layers"]) == (
                PRETRAIN_STEPS, seed, BASE_SHAPE["hidden_size"], BASE_SHAPE["layers"]):
            return False
        console.print(f"[yellow]{path} was built with other settings (shape, steps or seed); rebuilding it")
    console.rule("1/5 tiny base model")
    shutil.rmtree(path, ignore_errors=True)
    build(path, **BASE_SHAPE)
    record = pretrain(path, steps=PRETRAIN_STEPS, seed=seed)
    console.print(f"pre-trained {path}: word-comparison accuracy {record['equality_accuracy']:.1%}")
    return True


@contextmanager
def kept(what: str) -> Iterator[None]:
    """Ctrl-C in this stage ends the command with one line saying ``what`` was kept and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(what) from None


def training_config(config: Path, base: Path, data: Path, out: Path, seed: int = 0):
    """The demo's training config: ``config`` with the demo's base, data, output and seed. Read before
    anything is built, so that a missing or wrong config costs no pre-training."""
    from trainer.config import load_config

    return load_config(config, {"output_dir": str(out), "model": {"base_model": str(base)},
                                "data": {"train_file": str(data / "train.jsonl"), "eval_file": str(data / "dev.jsonl")},
                                "training": {"seed": seed}})


def fine_tune(config: Path, base: Path, data: Path, out: Path, seed: int = 0) -> Path:
    from trainer.train import RUN_FILE, train

    cfg = training_config(config, base, data, out, seed)
    run_file = out / RUN_FILE
    if run_file.is_file():
        record = json.loads(run_file.read_text())
        if record.get("config") != json.loads(json.dumps(cfg.model_dump(), default=str)):
            # a changed config or seed: resuming or reusing would mix two recipes in one adapter
            console.print(f"[yellow]{out} holds a run with another configuration; training again from scratch")
            shutil.rmtree(out)
        elif record.get("status") == "complete":
            console.print(f"3/5 fine-tuned adapter already in {out}")
            return out
    console.rule(f"3/5 LoRA fine-tuning ({config})")
    return train(cfg, resume=out.is_dir()).run_dir


def evaluate(name: str, model_args: str, test_file: Path, out: Path, limit: int | None) -> Path:
    from cotharness.run_eval import main as run_eval

    shutil.rmtree(out, ignore_errors=True)  # one results file per run: compare reads the newest
    args = ["--tasks", "nli_cot", "--model_args", f"{model_args},dtype=float32", "--device", "cpu",
            "--batch_size", "16", "--gen_kwargs", f"max_gen_toks={MAX_GEN_TOKS}", "--output_path", str(out),
            "--metadata", json.dumps({"test_file": str(test_file.resolve())})]
    if limit:
        args += ["--limit", str(limit)]
    console.rule(f"4/5 lm-eval nli_cot: {name}")
    if run_eval(args) != 0:
        raise RuntimeError(f"lm-eval failed for {name}")
    return out


def by_family(runs: list, test_file: Path, out: Path) -> dict:
    """Accuracy per task family (syllogism, negation, ...): which skills fine-tuning actually taught.

    Written to ``by_family.json`` and ``by_family.png`` in ``out`` and printed as a table."""
    from rich.table import Table

    from cotharness.compare import labels_of
    from cotharness.plots import family_bars
    from harness_tasks.data_files import read_rows
    from harness_tasks.manifest import write_atomic

    family = {row["id"]: row["family"] for _, row in read_rows(test_file)}
    table = {}
    for run in runs:  # compare's loaded runs (cotharness.compare.Run)
        counts: dict[str, list[int]] = {}
        for sample in run.samples["nli_cot"].values():
            gold, pred = labels_of(sample)
            hits = counts.setdefault(family[sample["doc"]["id"]], [0, 0])
            hits[0] += int(pred is not None and str(pred) == str(gold))
            hits[1] += 1
        table[run.name] = {f: {"acc": c / n, "n": n} for f, (c, n) in sorted(counts.items())}
    write_atomic(out / "by_family.json", json.dumps(table, indent=2) + "\n")
    family_bars(table, out / "by_family.png", CHANCE)
    names = list(table)
    view = Table(title="nli_cot accuracy by task family (chance: 50%)")
    view.add_column("family")
    for name in names:
        view.add_column(name, justify="right")
    for fam in table[names[0]]:
        view.add_row(fam, *(f"{table[n][fam]['acc']:.0%} of {table[n][fam]['n']}" for n in names))
    Console().print(view)
    return table


def run(out_dir: Path = Path("results/demo"), work: Path = Path("runs/demo"), config: Path = CONFIG,
        limit: int | None = None, seed: int = 0) -> int:
    """The whole demo; 0 if fine-tuning passed the criterion above. ``seed`` drives the base's pre-training
    and the fine-tuning (LoRA init, batch order); the data and its held-out test split never change."""
    from cotharness.compare import compare, print_table
    from datagen.cli import write_synthetic

    base = work / "tiny-base"
    settings = training_config(config, base, work / "data", work / "lora", seed)
    with kept(f"no pre-trained base yet (pre-training keeps nothing until it ends); {RERUN} to start it again"):
        if build_base(base, seed):
            shutil.rmtree(work / "lora", ignore_errors=True)  # an adapter trained on a previous base is stale
    with kept(f"the pre-trained base in {base}; {RERUN} to go on from the data"):
        console.rule("2/5 synthetic NLI data")
        splits = write_synthetic(work / "data", SPLITS)
    every = settings.training.get("save_steps")
    with kept(f"the base in {base} and the training checkpoints in {work / 'lora'}"
              f"{f' (one every {every} steps)' if every else ''}; {RERUN} to resume from the last one"):
        adapter = fine_tune(config, base, work / "data", work / "lora", seed)
    with kept(f"the base and the adapter in {work}; {RERUN}: it reuses them and redoes only the evaluation"):
        runs = [evaluate("base", f"pretrained={base}", splits["test"], out_dir / "lm_eval" / "base", limit),
                evaluate("fine-tuned", f"pretrained={base},peft={adapter}", splits["test"],
                         out_dir / "lm_eval" / "tuned", limit)]
        console.rule("5/5 comparison")
        names = ["tiny-base", "tiny-base + LoRA"]
        report = compare(runs, out_dir, names=names)
        print_table(report["rows"])
        by_family(report["runs"], splits["test"], out_dir)
    acc = {r["model"]: r for r in report["rows"] if r["metric"] == "acc"}
    gain = acc["tiny-base + LoRA"]["value"] - acc["tiny-base"]["value"]
    console.print(f"fine-tuning changed nli_cot accuracy by {gain:+.1%} on "
                  f"{report['tasks']['nli_cot']['documents']} held-out documents; report in {out_dir}/summary.md")
    tuned = acc["tiny-base + LoRA"]
    if gain < MIN_GAIN or tuned["ci_low"] <= CHANCE:
        console.print(f"[red]the demo expects fine-tuning to add at least {MIN_GAIN:.0%} accuracy with the 95% CI above "
                      f"chance ({CHANCE:.0%}; below it, the gain is the answer format alone): something in the "
                      "pipeline (prompt, loss masking, EOS, parsing) is broken, or the run differs from the defaults")
        return 1
    return 0
