"""QLoRA training throughput and peak memory on a Mistral-7B-shaped model: the seed recipe vs the project's.

Arms are training configs: the seed recipe frozen in ``bench/configs/seed_train.yaml`` (no ``base:``, so
it never follows a changed default) and the project's ``configs/train/default.yaml``. Each run is a
fresh process (``--child``) that loads the same saved random-weight model through the project's trainer
(``trainer.train.prepare``: TRL SFTTrainer, NF4 base, LoRA), trains ``--steps`` optimizer steps and times
the last ``steps - warmup``; arms alternate, ``--repeats`` times each, and every run is kept. Both arms
train on the same rows (``data.max_length`` raised to fit the longest for both: the seed's 512 would
drop rows, and the arms would no longer see the same data). Throughput counts real (non-pad) tokens.
Weights are random: speed and memory do not depend on their values.

    python bench/train_throughput.py --data thoughts.jsonl --label-column true_label \\
        --out bench/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import performance  # noqa: E402
import provenance  # noqa: E402
from mistral_shape import build_model  # noqa: E402

ARMS = {"baseline": (REPO / "bench/configs/seed_train.yaml", []), "project": (REPO / "configs/train/default.yaml", [])}


def parse_arm(spec: str) -> tuple[str, tuple[Path, list[str]]]:
    """``--add-arm NAME=CONFIG [section.key=value ...]``: one more arm, a config plus overrides (for trying recipes)."""
    head, *overrides = spec.split()
    name, _, config = head.partition("=")
    if not name or not config:
        raise argparse.ArgumentTypeError(f"--add-arm {spec!r}: expected NAME=CONFIG [section.key=value ...]")
    return name, ((REPO / config).resolve(), overrides)


def child(args) -> dict:
    """One timed run of one arm in this (fresh) process; prints and returns its JSON."""
    import torch
    from transformers import TrainerCallback

    from harness_tasks.yaml_files import merge
    from trainer.config import load_config, parse_set
    from trainer.memory import estimate
    from trainer.train import prepare

    cfg = load_config(args.config, merge({
        "output_dir": str(args.work / f"run-{args.arm}"), "model": {"base_model": str(args.base)},
        "data": {"train_file": str(args.train_file), "eval_file": None, "max_length": args.max_length},
        "training": {"max_steps": args.steps, "save_strategy": "no", "eval_strategy": "no", "report_to": [],
                     "logging_steps": 1000, "load_best_model_at_end": False}}, parse_set(args.set or [])))
    started = time.perf_counter()
    run = prepare(cfg)
    trainer = run.trainer
    load_s = time.perf_counter() - started
    seen = {"real": 0, "padded": 0}
    marks = {}
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        mask = batch["attention_mask"] if "attention_mask" in batch else None
        seen["real"] += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        seen["padded"] += int(batch["input_ids"].numel())
        return batch

    class Clock(TrainerCallback):
        # Cumulative tokens at each step's end: the data loader may fetch one batch ahead, the same
        # one at both ends of the timed window, so the difference counts the window's tokens.
        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            marks[state.global_step] = (time.perf_counter(), seen["real"], seen["padded"])

    cuda = torch.cuda.is_available()
    trainer.data_collator = counting_collator
    trainer.add_callback(Clock())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out = trainer.train()
    (t0, r0, p0), (t1, r1, p1) = marks[args.warmup], marks[args.steps]
    # data parallel: every process trains its own rows in the same window; count all of them
    memory = [torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30] if cuda else [0, 0]
    counts = torch.tensor([r1 - r0, p1 - p0, *memory], dtype=torch.float64, device=trainer.args.device)
    world = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        torch.distributed.all_reduce(counts[:2])
        torch.distributed.all_reduce(counts[2:], op=torch.distributed.ReduceOp.MAX)
        if torch.distributed.get_rank() != 0:
            return {}
    real, padded, peak, reserved = counts.tolist()
    seconds = t1 - t0
    result = {
        "arm": args.arm, "config": str(Path(args.config).resolve().relative_to(REPO)), "processes": world,
        "steps_timed": args.steps - args.warmup,
        "seconds": round(seconds, 2), "real_tokens_per_s": round(real / seconds),
        "padded_tokens_per_s": round(padded / seconds), "padding_fraction": round(1 - real / padded, 3),
        "peak_memory_gib": round(peak, 2),  # per GPU, the largest
        "peak_reserved_gib": round(reserved, 2),
        "estimate_gib": round(estimate(run.cfg, longest=args.max_length).total, 2), "load_seconds": round(load_s, 1),
        "resolved": run.settings,  # the "auto" settings as chosen on this GPU
        "train_loss": round(out.training_loss, 4),  # ~ln(vocab) for random weights: a broken kernel shows here
    }
    print("RESULT " + json.dumps(result), flush=True)
    return result


def prepare_data(rows_path: Path, label_column: str, work: Path, rows_needed: int) -> tuple[Path, int, Path]:
    """The rows as the trainer reads them, repeated to fill every step; returns (file, longest, tokenizer)."""
    from cotharness.tiny_model import build
    from harness_tasks.tasks import get_task

    tok_dir = build(work / "tiny")
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("thought_process") and r.get(label_column) is not None]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    task = get_task("nli_cot")
    longest = max(len(tok(task.prompt(r) + task.answer(r["thought_process"], r[label_column]) + tok.eos_token)
                      .input_ids) for r in rows)
    data = work / "train.jsonl"
    with data.open("w") as f:
        for i in range(rows_needed):
            r = rows[i % len(rows)]
            f.write(json.dumps({"premise": r["premise"], "hypothesis": r["hypothesis"],
                                "thought_process": r["thought_process"], "label": r[label_column]}) + "\n")
    return data, longest, tok_dir


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="CoT rows: premise, hypothesis, thought_process, a label column")
    p.add_argument("--label-column", default="label")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/train_throughput.json")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run (16 rows each)")
    p.add_argument("--warmup", type=int, default=4, help="steps not timed")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/cotharness-bench"))
    p.add_argument("--add-arm", dest="arms", type=parse_arm, action="append", default=[],
                   help="an extra arm, 'NAME=CONFIG [section.key=value ...]'; reported under 'variants'")
    p.add_argument("--gpus", type=int, default=1,
                   help="N > 1: data-parallel scaling instead: the project's config on 1 GPU and on N GPUs "
                        "(accelerate launch, configs/accelerate/multi_gpu.yaml); writes train_scaling.json")
    p.add_argument("--base-model", type=Path, help="an existing model instead of the random Mistral-7B shape "
                                                    "(a tiny one, to try the script)")
    # child mode (one run in a fresh process)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--train-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[],
                   help="a config override for every arm, section.key=value (e.g. training.bf16=false on a CPU)")
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    if args.data is None:
        p.error("--data is required")
    if args.gpus > 1 and args.out == p.get_default("out"):
        args.out = REPO / "bench/results/train_scaling.json"

    import torch

    from harness_tasks import manifest

    args.work.mkdir(parents=True, exist_ok=True)
    data, longest, tok_dir = prepare_data(args.data, args.label_column, args.work, 16 * 4 * (args.steps + 2))
    t0 = time.perf_counter()
    base = args.base_model or build_model(tok_dir, args.work / "mistral-7b-shape")
    build_s = round(time.perf_counter() - t0, 1)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if args.gpus > 1:  # the same config on one GPU and on N
        project = ARMS["project"]
        arms, launch = {"one_gpu": project, f"{args.gpus}_gpus": project}, {f"{args.gpus}_gpus": args.gpus}
    else:
        arms, launch = {**ARMS, **dict(args.arms)}, {}
    runs = {arm: [] for arm in arms}
    for i in range(args.repeats):
        for arm, (config, overrides) in arms.items():
            cmd = [sys.executable, __file__]
            if arm in launch:
                cmd[1:1] = ["-m", "accelerate.commands.launch", "--config_file",
                            str(REPO / "configs/accelerate/multi_gpu.yaml"), "--num_processes", str(launch[arm])]
            cmd += ["--child", "--arm", arm, "--config", str(config), "--base", str(base),
                    "--train-file", str(data), "--max-length", str(longest), "--steps", str(args.steps),
                    "--warmup", str(args.warmup), "--work", str(args.work)]
            cmd += [f"--set={o}" for o in [*args.set, *overrides]]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.stderr.write(out.stdout[-3000:] + out.stderr[-5000:])
                if arm in ARMS:
                    raise SystemExit(f"{arm} run {i} failed")
                runs[arm].append({"arm": arm, "failed": (out.stderr.strip().splitlines() or ["?"])[-1][:300]})
                continue
            runs[arm].append(json.loads(line.removeprefix("RESULT ")))
            print(arm, runs[arm][-1], flush=True)

    def block(arm: str) -> dict:
        config, overrides = arms[arm]
        done = [r for r in runs[arm] if "failed" not in r]
        rates = [r["real_tokens_per_s"] for r in done]
        summary = {"real_tokens_per_s_median": statistics.median(rates), "real_tokens_per_s_min": min(rates),
                   "real_tokens_per_s_max": max(rates),
                   "peak_memory_gib_max": max(r["peak_memory_gib"] for r in done)} if done else {}
        return {"config": str(config.relative_to(REPO)), "overrides": overrides, "config_text": config.read_text(),
                **summary, "runs": runs[arm]}

    report = {
        "benchmark": "train_scaling" if args.gpus > 1 else "train_throughput", "date": time.strftime("%Y-%m-%d"),
        "device": f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
        else "cpu",
        "versions": manifest.package_versions(),
        "git": provenance.git(),
        "settings": {"model": f"{args.base_model}, loaded through the trainer" if args.base_model else
                     "Mistral-7B-v0.3 shape, random bf16 weights, loaded through the trainer",
                     "data": f"{args.data.name}: {len(set(data.read_text().splitlines()))} distinct rows, "
                             "tokenised by the project's tiny BPE tokenizer (Mistral's is not available offline; "
                             "it writes more tokens per text)",
                     "max_length_both_arms": longest, "steps": args.steps, "warmup_steps": args.warmup,
                     "repeats": args.repeats, "order": "alternating, one fresh process per run",
                     "model_build_seconds": build_s},
    }
    if args.gpus > 1:
        one, many = (block(arm) for arm in arms)
        report.update(one_gpu=one, many_gpus=many, gpus=args.gpus, goal_scaling=1.8,
                      scaling_real_tokens_median=round(many["real_tokens_per_s_median"]
                                                       / one["real_tokens_per_s_median"], 3))
    else:
        report.update(baseline=block("baseline"), project=block("project"))
        if args.arms:
            report["variants"] = {arm: block(arm) for arm, _ in args.arms}
        report["speedup_real_tokens_median"] = round(report["project"]["real_tokens_per_s_median"]
                                                     / report["baseline"]["real_tokens_per_s_median"], 3)
        report["goal"] = performance.train_goal(report)  # by how much the 2x target is met or missed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict) or k == "settings"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
