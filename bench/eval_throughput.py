"""Evaluation throughput of ``nli_cot`` through lm-eval on a Mistral-7B shape: the seed recipe vs the project's.

Arms (all the real lm-eval path: ``lm_eval.simple_evaluate`` with this project's tasks and its ``hf-cot``
model, which is what ``cotharness eval`` and ``lm_eval --model hf-cot`` run):
- ``baseline``: the seed recipe, 4-bit NF4 base, the r16 adapter unmerged, batches of 32;
- ``project_bf16``: the project's defaults on a bf16 base: adapter merged, ``batch_size=auto``;
- ``project_4bit``: the project's defaults on a 4-bit base: adapter unmerged, ``batch_size=auto``.
A random model never stops by itself, and the answer must be as long for every arm: every answer is
forced to 200 tokens (``--gen_kwargs max_gen_toks=200,min_new_tokens=200``: end-of-sequence is
forbidden before 200 and generation ends at 200; a sequence that writes a stop string by chance is cut
in the output, but its batch decodes on).

The prompts are NLI pairs from CSV files (``--pairs``), repeated in order to 1,977 (the seed's test set
size). Slow arms time a subset that keeps the length distribution (every k-th prompt by length) and
report ``seconds_for_1977`` as 1,977 / samples per second, marked ``extrapolated``. One process holds
the three models (they fit together on an H200); each arm runs once untimed to warm up, then the arms
alternate for ``--repeats`` rounds. Peak memory of an arm = its own weights + the most its run
allocated above what was resident before it.

    python bench/eval_throughput.py --pairs train_400.csv unlabeled_100.csv --out bench/results/eval_throughput.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mistral_shape import build_model  # noqa: E402

N_PROMPTS = 1977
NEW_TOKENS = 200
GEN_KWARGS = f"max_gen_toks={NEW_TOKENS},min_new_tokens={NEW_TOKENS}"
ARMS = {
    "baseline": {"model_args": {"load_in_4bit": True}, "batch_size": 32, "subset": 64,
                 "recipe": "seed: hf backend, 4-bit NF4 (double quant, bf16 compute), adapter unmerged, batch 32"},
    "project_bf16": {"model_args": {"dtype": "bfloat16"}, "batch_size": "auto", "subset": None,
                     "recipe": "project default on a bf16 base: adapter merged (merge_peft), batch_size=auto"},
    "project_4bit": {"model_args": {"load_in_4bit": True}, "batch_size": "auto", "subset": 256,
                     "recipe": "project default on a 4-bit base: adapter unmerged, batch_size=auto"},
}


def write_prompts(pairs: list[Path], tokenizer, work: Path) -> tuple[dict, dict]:
    """1,977 prompts in the files' order, plus length-spread subsets for the slow arms; returns the
    files (by subset size, "full" and "warmup") and the prompts' length statistics."""
    from harness_tasks.tasks import get_task

    rows = []
    for path in pairs:
        with path.open(newline="", encoding="utf-8") as f:
            rows += [{"premise": r["premise"], "hypothesis": r["hypothesis"]} for r in csv.DictReader(f)]
    rows = [rows[i % len(rows)] for i in range(N_PROMPTS)]
    task = get_task("nli_cot")
    tokens = [len(tokenizer(task.prompt(row)).input_ids) for row in rows]
    by_length = sorted(range(N_PROMPTS), key=tokens.__getitem__)
    files = {"full": _csv(work / "prompts_full.csv", rows), "warmup": _csv(work / "prompts_warmup.csv", rows[:16])}
    for n in {a["subset"] for a in ARMS.values() if a["subset"]}:
        step = N_PROMPTS / n
        files[n] = _csv(work / f"prompts_{n}.csv", [rows[by_length[int(k * step)]] for k in range(n)])
    lengths = [tokens[i] for i in by_length]
    stats = {"distinct_pairs": len({(r["premise"], r["hypothesis"]) for r in rows}),
             "prompt_tokens_min": lengths[0], "prompt_tokens_median": lengths[len(lengths) // 2],
             "prompt_tokens_max": lengths[-1]}
    return files, stats


def _csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["premise", "hypothesis"])
        w.writeheader()
        w.writerows(rows)
    return path


def evaluate(lm, test_file: Path, gen_kwargs: str) -> tuple[float, int, dict]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from harness_tasks.tasks import TASKS_DIR

    started = time.perf_counter()
    tasks = TaskManager(include_path=str(TASKS_DIR), metadata={"test_file": str(test_file)})
    out = lm_eval.simple_evaluate(model=lm, tasks=["nli_cot"], task_manager=tasks, gen_kwargs=gen_kwargs,
                                  log_samples=False)
    seconds = time.perf_counter() - started
    return seconds, out["n-samples"]["nli_cot"]["effective"], out["results"]["nli_cot"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=Path, nargs="+", required=True, help="CSV files with premise,hypothesis columns")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/eval_throughput.json")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--work", type=Path, default=Path("/tmp/cotharness-evalbench"))
    args = p.parse_args()

    import torch
    from transformers import AutoTokenizer

    from cotharness.tiny_model import build
    from harness_tasks.hf_model import QuantizedHFLM

    args.work.mkdir(parents=True, exist_ok=True)
    tok_dir = build(args.work / "tiny")
    files, prompt_stats = write_prompts(args.pairs, AutoTokenizer.from_pretrained(tok_dir), args.work)
    t0 = time.perf_counter()
    base = build_model(tok_dir, args.work / "mistral-7b-shape", adapter_out=args.work / "adapter")
    build_s = round(time.perf_counter() - t0, 1)

    models, weights_gib, load_s = {}, {}, {}
    for arm in args.arms:
        before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        models[arm] = QuantizedHFLM(pretrained=str(base), peft=str(args.work / "adapter"),
                                    batch_size=ARMS[arm]["batch_size"], **ARMS[arm]["model_args"])
        load_s[arm] = round(time.perf_counter() - t0, 1)
        weights_gib[arm] = (torch.cuda.memory_allocated() - before) / 2**30
        evaluate(models[arm], files["warmup"], "max_gen_toks=4")

    runs = {arm: [] for arm in args.arms}
    report = {}
    for i in range(args.repeats):
        for arm in args.arms[i % len(args.arms):] + args.arms[:i % len(args.arms)]:  # rotate who goes first
            subset = ARMS[arm]["subset"]
            torch.cuda.empty_cache()
            resident = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            seconds, n, results = evaluate(models[arm], files[subset or "full"], GEN_KWARGS)
            peak = weights_gib[arm] + (torch.cuda.max_memory_allocated() - resident) / 2**30
            runs[arm].append({"round": i, "prompts": n, "seconds": round(seconds, 1),
                              "samples_per_s": round(n / seconds, 3), "peak_mem_gib": round(peak, 2),
                              "parse_fail": results.get("parse_fail,cot_json")})
            print(arm, runs[arm][-1], flush=True)
        report = make_report(args, runs, prompt_stats, build_s, load_s)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after every round: a timeout keeps the rounds done
    print(json.dumps({k: v for k, v in report.items() if k not in ("baseline", "project_bf16", "project_4bit")}, indent=1))
    return 0


def make_report(args, runs: dict, prompt_stats: dict, build_s: float, load_s: dict) -> dict:
    import torch

    from harness_tasks import manifest

    def block(arm: str) -> dict:
        rates = [r["samples_per_s"] for r in runs[arm]]
        median = statistics.median(rates)
        return {"recipe": ARMS[arm]["recipe"], "model_args": ARMS[arm]["model_args"] | {"peft": "<r16 adapter>"},
                "batch_size": ARMS[arm]["batch_size"], "prompts_timed": runs[arm][0]["prompts"],
                "extrapolated": ARMS[arm]["subset"] is not None,
                "samples_per_s": median, "samples_per_s_min": min(rates), "samples_per_s_max": max(rates),
                "seconds_for_1977": round(N_PROMPTS / median, 1),
                "peak_mem_gib": max(r["peak_mem_gib"] for r in runs[arm]), "load_seconds": load_s[arm],
                "runs": runs[arm]}

    report = {
        "benchmark": "eval_throughput", "date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0),
        "versions": manifest.package_versions(),
        # The GPU machine gets a copy of the tree whose .git may be stale: the caller names the commit.
        "git": {"commit": os.environ["BENCH_COMMIT"]} if os.environ.get("BENCH_COMMIT") else manifest.git_commit(),
        "settings": {"model": "Mistral-7B-v0.3 shape, random bf16 weights, LoRA r16/a32 on q,k,v,o with random weights",
                     "task": "nli_cot through lm_eval.simple_evaluate with the hf-cot model",
                     "prompts": f"{N_PROMPTS} NLI prompts from {', '.join(p.name for p in args.pairs)}, repeated in order, "
                                "tokenised by the project's tiny BPE tokenizer (it writes more tokens than Mistral's)",
                     **prompt_stats,
                     "forced_generation": f"--gen_kwargs {GEN_KWARGS}: every answer is {NEW_TOKENS} tokens",
                     "order": "one process holding every arm's model; one untimed warm-up each; then rounds of all "
                              "arms, the first arm rotating",
                     "subsets": "slow arms time every k-th prompt by length; seconds_for_1977 = 1977 / samples_per_s",
                     "repeats": len(next(iter(runs.values()))), "model_build_seconds": build_s},
    }
    for arm in runs:
        report[arm] = block(arm)
    if "baseline" in runs:
        report["speedup"] = {arm: round(report[arm]["samples_per_s"] / report["baseline"]["samples_per_s"], 2)
                             for arm in runs if arm != "baseline"}
    return report


if __name__ == "__main__":
    sys.exit(main())
