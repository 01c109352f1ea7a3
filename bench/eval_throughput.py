"""Evaluation throughput of ``nli_cot`` through lm-eval on a Mistral-7B shape: the seed recipe vs the project's.

Arms (all the real lm-eval path: ``lm_eval.simple_evaluate`` with this project's tasks and its ``hf-cot``
model, which is what ``cotharness eval`` and ``lm_eval --model hf-cot`` run):
- ``baseline``: the seed recipe, 4-bit NF4 base (bitsandbytes' 4-bit kernels: ``dequantize=False``), the r16
  adapter unmerged, batches of 32, transformers' growing KV cache (``kv_cache=dynamic``);
- ``project_bf16``: the project's defaults on a bf16 base: adapter merged, ``batch_size=auto``, a static
  KV cache;
- ``project_bf16_dynamic``: the bf16 arm with ``kv_cache=dynamic`` (a cache that grows at every step);
- ``project_4bit``: the project's defaults on a 4-bit base: the NF4 weights dequantized once to bf16, the
  adapter merged into them, ``batch_size=auto``.
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

What a user waits for is the command, not the loop: ``--mode command`` times each arm as the user's
``cotharness eval`` process (``bench/timed_eval.py``: the real command with a clock at each phase boundary)
from start to exit: interpreter and imports, loading (quantizing, the adapter, merging), building the
task, generation, scoring and writing (results, samples, predictions CSV, per-class report). Arms on a
subset report ``command_seconds_for_1977`` as the measured command plus the generation of the prompts
not timed, at the measured rate (marked ``extrapolated``). ``--mode in-process`` is the loop above;
``--mode both`` (the default) runs the commands first, then the loop. ``--append`` adds this call's runs
to the rounds already in ``--out`` (a GPU machine's 10-minute calls), reusing the model built in ``--work``.

    python bench/eval_throughput.py --pairs train_400.csv unlabeled_100.csv --out bench/results/eval_throughput.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
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

N_PROMPTS = 1977
NEW_TOKENS = 200
GEN_KWARGS = f"max_gen_toks={NEW_TOKENS},min_new_tokens={NEW_TOKENS}"
ARMS = {
    # the seed decoded with transformers' growing cache: the baseline keeps it whatever the project's default
    "baseline": {"model_args": {"load_in_4bit": True, "dequantize": False, "kv_cache": "dynamic"}, "batch_size": 32,
                 "subset": 64,
                 "recipe": "seed: hf backend, 4-bit NF4 (double quant, bf16 compute), adapter unmerged, batch 32"},
    "project_bf16": {"model_args": {"dtype": "bfloat16"}, "batch_size": "auto", "subset": None,
                     "recipe": "project default on a bf16 base: adapter merged (merge_peft), batch_size=auto, "
                               "static KV cache"},
    "project_bf16_dynamic": {"model_args": {"dtype": "bfloat16", "kv_cache": "dynamic"}, "batch_size": "auto",
                             "subset": None, "recipe": "the bf16 arm with kv_cache=dynamic (a KV cache that grows "
                                                       "by a copy at every step)"},
    "project_4bit": {"model_args": {"load_in_4bit": True}, "batch_size": "auto", "subset": None,
                     "recipe": "project default on a 4-bit base: NF4 weights dequantized once to bf16 (the values "
                               "the 4-bit matmul uses), adapter merged, batch_size=auto"},
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


PHASES = ("startup", "load", "prepare", "generation", "writing", "exit")


def run_command(arm: str, base: Path, adapter: Path, test_file: Path, work: Path, round_: int) -> dict:
    """One arm as the user's ``cotharness eval`` process; its wall clock and where it went."""
    a = ARMS[arm]
    model_args = ",".join([f"pretrained={base}", f"peft={adapter}", *(f"{k}={v}" for k, v in a["model_args"].items())])
    out_dir, phases_file = work / f"command_{arm}_{round_}", work / f"phases_{arm}_{round_}.json"
    argv = ["--model", "hf", "--model_args", model_args, "--tasks", "nli_cot",
            "--metadata", json.dumps({"test_file": str(test_file)}), "--gen_kwargs", GEN_KWARGS,
            "--batch_size", str(a["batch_size"]), "--output_path", str(out_dir)]
    env = {**os.environ, "COTHARNESS_PHASES": str(phases_file), "PYTHONUNBUFFERED": "1"}
    with (work / f"command_{arm}_{round_}.log").open("w") as log:
        started = time.time()
        rc = subprocess.run([sys.executable, str(REPO / "bench/timed_eval.py"), *argv], stdout=log,
                            stderr=subprocess.STDOUT, env=env).returncode
        ended = time.time()
    if rc != 0:
        raise SystemExit(f"{arm}: cotharness eval exited {rc}; see {log.name}")
    m = json.loads(phases_file.read_text())
    bounds = [started, m["load_start"], m["load_end"], m["generation_start"], m["generation_end"], m["command_end"], ended]
    results = json.loads(max(out_dir.rglob("results_*.json")).read_text())
    n = results["n-samples"]["nli_cot"]["effective"]
    wall = ended - started
    generation = m["generation_end"] - m["generation_start"]
    # a subset arm: the prompts not timed would add generation at the measured rate, nothing else
    full = wall + generation * (N_PROMPTS / n - 1)
    return {"round": round_, "prompts": n, "command": ("cotharness eval " + " ".join(argv[:-2]) + " --output_path DIR").replace(str(work), "$WORK"),
            "wall_seconds": round(wall, 1),
            "phases_seconds": {ph: round(end - start, 1) for ph, start, end in zip(PHASES, bounds, bounds[1:], strict=False)},
            "lm_eval_total_seconds": round(float(results.get("total_evaluation_time_seconds") or 0), 1),
            "command_seconds_for_1977": round(full, 1),
            "parse_fail": results["results"]["nli_cot"].get("parse_fail,cot_json"),
            # startup split: the interpreter and the imports of torch/transformers/lm-eval/peft, then the rest
            "startup_imports_seconds": round(m["modules_imported"] - started, 1) if "modules_imported" in m else None,
            "batches": m.get("batches", [])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=Path, nargs="+", required=True, help="CSV files with premise,hypothesis columns")
    p.add_argument("--out", type=Path, default=REPO / "bench/results/eval_throughput.json")
    p.add_argument("--repeats", type=int, default=3, help="rounds of every arm in this call")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--mode", choices=("both", "command", "in-process"), default="both")
    p.add_argument("--append", action="store_true", help="add to the runs already in --out")
    p.add_argument("--work", type=Path, default=Path("/tmp/cotharness-evalbench"))
    args = p.parse_args()

    from transformers import AutoTokenizer

    from cotharness.tiny_model import build

    args.work.mkdir(parents=True, exist_ok=True)
    tok_dir = build(args.work / "tiny")
    files, prompt_stats = write_prompts(args.pairs, AutoTokenizer.from_pretrained(tok_dir), args.work)
    previous = json.loads(args.out.read_text()) if args.append and args.out.exists() else {}
    base, adapter = args.work / "mistral-7b-shape", args.work / "adapter"
    build_s = previous.get("settings", {}).get("model_build_seconds")
    if not (base / "config.json").is_file() or not (adapter / "adapter_config.json").is_file():
        t0 = time.perf_counter()
        build_model(tok_dir, base, adapter_out=adapter)
        build_s = round(time.perf_counter() - t0, 1)
    # the arms already in --out stay in it when this call runs only some of them
    kept = [arm for arm in ARMS if arm in args.arms or arm in previous]
    runs = {arm: [r for r in (previous.get(arm) or {}).get("runs", [])] for arm in kept}
    commands = {arm: list(((previous.get(arm) or {}).get("command") or {}).get("runs", [])) for arm in kept}
    load_s = {arm: (previous.get(arm) or {}).get("load_seconds") for arm in kept}
    commit = provenance.git().get("commit")  # each run names its code: appended calls may run newer code

    def save() -> None:
        report = make_report(args, runs, commands, prompt_stats, build_s, load_s)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after every run: a timeout keeps what was done

    if args.mode in ("both", "command"):
        first = max((len(c) for c in commands.values()), default=0)
        for i in range(first, first + args.repeats):
            for arm in args.arms[i % len(args.arms):] + args.arms[:i % len(args.arms)]:  # rotate who goes first
                commands[arm].append(run_command(arm, base, adapter, files[ARMS[arm]["subset"] or "full"],
                                                 args.work, i) | {"commit": commit})
                print(arm, "command", commands[arm][-1], flush=True)
                save()
    if args.mode in ("both", "in-process"):
        in_process(args, base, adapter, files, runs, load_s, save, commit)
    return 0


def in_process(args, base: Path, adapter: Path, files: dict, runs: dict, load_s: dict, save, commit: str | None) -> None:
    """The arms' generation in one process that holds every model, after a warm-up each."""
    import torch

    from harness_tasks.hf_model import QuantizedHFLM

    models, weights_gib = {}, {}
    for arm in args.arms:
        before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        models[arm] = QuantizedHFLM(pretrained=str(base), peft=str(adapter), batch_size=ARMS[arm]["batch_size"],
                                    **ARMS[arm]["model_args"])
        load_s[arm] = round(time.perf_counter() - t0, 1)
        weights_gib[arm] = (torch.cuda.memory_allocated() - before) / 2**30
        evaluate(models[arm], files["warmup"], "max_gen_toks=4")
    first = max((len(r) for r in runs.values()), default=0)
    for i in range(first, first + args.repeats):
        for arm in args.arms[i % len(args.arms):] + args.arms[:i % len(args.arms)]:
            subset = ARMS[arm]["subset"]
            torch.cuda.empty_cache()
            resident = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            seconds, n, results = evaluate(models[arm], files[subset or "full"], GEN_KWARGS)
            peak = weights_gib[arm] + (torch.cuda.max_memory_allocated() - resident) / 2**30
            runs[arm].append({"round": i, "commit": commit, "prompts": n, "seconds": round(seconds, 1),
                              "samples_per_s": round(n / seconds, 3), "peak_mem_gib": round(peak, 2),
                              "parse_fail": results.get("parse_fail,cot_json")})
            print(arm, "in-process", runs[arm][-1], flush=True)
            save()


def _spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": min(values), "max": max(values)}


def make_report(args, runs: dict, commands: dict, prompt_stats: dict, build_s, load_s: dict) -> dict:
    import inspect

    import torch

    from harness_tasks import manifest
    from harness_tasks.hf_model import QuantizedHFLM

    # the KV cache an arm decoded with, written out where the arm takes the default: a result must not
    # depend on what the default was when it is read (bench/performance.py pairs arms by it)
    cache = {"kv_cache": inspect.signature(QuantizedHFLM).parameters["kv_cache"].default}

    def block(arm: str) -> dict:
        out = {"recipe": ARMS[arm]["recipe"], "model_args": cache | ARMS[arm]["model_args"] | {"peft": "<r16 adapter>"},
               "batch_size": ARMS[arm]["batch_size"]}
        if commands[arm]:
            c = commands[arm]
            out["command"] = {"prompts_timed": c[0]["prompts"], "extrapolated": ARMS[arm]["subset"] is not None,
                              "command_seconds_for_1977": _spread([r["command_seconds_for_1977"] for r in c]),
                              "wall_seconds": _spread([r["wall_seconds"] for r in c]),
                              "phases_seconds_median": {ph: round(statistics.median(r["phases_seconds"][ph] for r in c), 1)
                                                        for ph in PHASES},
                              "runs": c}
        if runs[arm]:
            rates = [r["samples_per_s"] for r in runs[arm]]
            median = statistics.median(rates)
            out |= {"prompts_timed": runs[arm][0]["prompts"], "extrapolated": ARMS[arm]["subset"] is not None,
                    "samples_per_s": median, "samples_per_s_min": min(rates), "samples_per_s_max": max(rates),
                    "seconds_for_1977": round(N_PROMPTS / median, 1),
                    "peak_mem_gib": max(r["peak_mem_gib"] for r in runs[arm]), "load_seconds": load_s[arm],
                    "runs": runs[arm]}
        return out

    report = {
        "benchmark": "eval_throughput", "date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0),
        "versions": manifest.package_versions(),
        "git": provenance.git(),
        "settings": {"model": "Mistral-7B-v0.3 shape, random bf16 weights, LoRA r16/a32 on q,k,v,o with random weights",
                     "task": "nli_cot through lm-eval with the hf-cot model (cotharness eval --model hf selects it)",
                     "prompts": f"{N_PROMPTS} NLI prompts from {', '.join(p.name for p in args.pairs)}, repeated in order, "
                                "tokenised by the project's tiny BPE tokenizer (it writes more tokens than Mistral's)",
                     **prompt_stats,
                     "forced_generation": f"--gen_kwargs {GEN_KWARGS}: every answer is {NEW_TOKENS} tokens",
                     "command": "each arm as the user's `cotharness eval` process (bench/timed_eval.py), timed from "
                                "start to exit; arms alternate, the first arm rotating",
                     "order": "in-process: one process holding every arm's model; one untimed warm-up each; then "
                              "rounds of all arms, the first arm rotating",
                     "subsets": "slow arms time every k-th prompt by length; in-process seconds_for_1977 = 1977 / "
                                "samples_per_s; command_seconds_for_1977 = the command's wall + the untimed prompts' "
                                "generation at the measured rate",
                     "repeats": max(len(r) for r in runs.values()),
                     "command_repeats": max(len(c) for c in commands.values()),
                     "model_build_seconds": build_s},
    }
    for arm in runs:
        report[arm] = block(arm)
    if "baseline" in runs:
        if runs["baseline"]:
            report["speedup"] = {arm: round(report[arm]["samples_per_s"] / report["baseline"]["samples_per_s"], 2)
                                 for arm in runs if arm != "baseline" and runs[arm]}
        if commands["baseline"]:
            seed = report["baseline"]["command"]["command_seconds_for_1977"]["median"]
            report["speedup_command"] = {
                arm: round(seed / report[arm]["command"]["command_seconds_for_1977"]["median"], 2)
                for arm in runs if arm != "baseline" and commands[arm]}
    report["goals"] = performance.goals(report)  # by how much each target is met or missed
    return report


if __name__ == "__main__":
    sys.exit(main())
