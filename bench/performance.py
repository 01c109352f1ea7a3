"""The Performance page (docs/performance.md), written from the committed benchmark JSON (never typed by hand).

    python bench/performance.py           # rewrite the sections between the page's and the README's markers
    python bench/performance.py --check   # exit 1 if either is out of date (the test suite runs this)

The README carries a short summary (the evaluation command's wall clock per recipe, the training ratio);
the page carries every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench/results"
PAGE = REPO / "docs/performance.md"
README = REPO / "README.md"
START, END = "<!-- performance:start (bench/performance.py writes this) -->", "<!-- performance:end -->"
SUMMARY_START, SUMMARY_END = "<!-- speed:start (bench/performance.py writes this) -->", "<!-- speed:end -->"
# The targets set for this project, to say by how much a result misses them: seconds of the user's
# command for 1,977 answers, by card (an H100's memory is slower than an H200's).
EVAL_GOAL_S = {"project_bf16": {"H100": 75, "H200": 60}}
EVAL_ARMS = ("baseline", "project_bf16", "project_bf16_dynamic", "project_4bit")
EVAL_4BIT_OF_BF16 = 1.2  # the 4-bit arm's target: at most this times the bf16 arm's command, same run, same KV cache
EVAL_X_SEED = 25  # the bf16 arm's command against the seed recipe's, same run
TRAIN_GOAL_X = 2.0
DEQUANTIZE_RESULTS = ("dequantize_agreement", "dequantize_agreement_small_cpu")
DECODE_RESULTS = ("decode_profile", "decode_profile_256")


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _load_all(names: tuple[str, ...]) -> list[dict] | None:
    """Several result files drawn as one table; None when none is there."""
    return [r for r in map(_load, names) if r is not None] or None


def _n(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _versions(r: dict, names: tuple[str, ...]) -> str:
    return ", ".join(f"{n} {r['versions'][n]}" for n in names if n in r.get("versions", {}))


def _goal(g: dict) -> str:
    """One arm's entry of goals() in words."""
    return "met" if g["met"] else (f"missed by {_n(g['missed_by_seconds'])} s "
                                   f"({_n(100 * (g['median_seconds'] / g['target_seconds'] - 1), 0)}%)")


def _spread(b: dict, digits: int = 1) -> str:
    return f"{_n(b['median'], digits)} ({_n(b['min'], digits)}-{_n(b['max'], digits)})"


def _cache(r: dict, arm: str) -> str:
    return r[arm]["model_args"]["kv_cache"]  # eval_throughput.py writes the default out


def _eval_goal(arm: str, r: dict) -> float | None:
    if arm == "project_4bit":  # against the bf16 arm that decoded with the same KV cache
        bf16 = next((a for a in ("project_bf16", "project_bf16_dynamic")
                     if r.get(a, {}).get("command") and _cache(r, a) == _cache(r, arm)), None)
        return bf16 and round(EVAL_4BIT_OF_BF16 * r[bf16]["command"]["command_seconds_for_1977"]["median"], 1)
    return next((s for card, s in EVAL_GOAL_S.get(arm, {}).items() if card in r["device"]), None)


def goals(r: dict) -> dict:
    """Each evaluation target against the result's medians: what bench/eval_throughput.py writes into its
    JSON and what the page says, from this one definition."""
    out = {}
    for arm in EVAL_ARMS:
        target = _eval_goal(arm, r) if r.get(arm, {}).get("command") else None
        if target:
            secs = r[arm]["command"]["command_seconds_for_1977"]["median"]
            out[arm] = {"target_seconds": target, "median_seconds": secs, "met": secs <= target,
                        "missed_by_seconds": max(0.0, round(secs - target, 1))}
    x = r.get("speedup_command", {}).get("project_bf16")
    if x is not None:
        out["x_seed"] = {"arm": "project_bf16", "target": EVAL_X_SEED, "measured": x, "met": x >= EVAL_X_SEED,
                         "missed_by_percent": max(0, round(100 * (1 - x / EVAL_X_SEED)))}
    return out


def evaluation(r: dict) -> list[str]:
    s = r["settings"]
    lines = [
        "### Evaluation: `nli_cot` through lm-eval",
        "",
        f"{r['device']}, {r['date']}, commit {r.get('git', {}).get('commit', 'unknown')} ({_versions(r, ('torch', 'transformers', 'lm_eval', 'bitsandbytes', 'peft'))}); "
        f"{s['model']}; {s['prompts']} ({s['prompt_tokens_min']}-{s['prompt_tokens_max']} tokens, median "
        f"{s['prompt_tokens_median']}); {s['forced_generation']}.",
        "",
        f"**The command** (what a user waits for): each arm is the user's `cotharness eval` process, timed from start "
        f"to exit, {s.get('command_repeats', 0)} run{'s' if s.get('command_repeats') != 1 else ''} per arm, alternating (median, with the fastest and slowest run). "
        "Phases: interpreter and imports / loading (quantizing, adapter, merge) / building the task / generation / "
        "scoring and writing the results, samples, predictions CSV and per-class report.",
        "",
        "| recipe | command seconds for 1,977 | startup / load / prepare / generation / writing (s) | x seed | target |",
        "|---|---|---|---|---|",
    ]
    arms, g = [arm for arm in EVAL_ARMS if arm in r], goals(r)
    for arm in arms:
        b, c = r[arm], r[arm].get("command")
        if c is None:
            continue
        timed = f", timed on {c['prompts_timed']} and extrapolated" if c["extrapolated"] else ""
        ph = c["phases_seconds_median"]
        phases = " / ".join(_n(ph[k]) for k in ("startup", "load", "prepare", "generation", "writing"))
        speed = "1.00" if arm == "baseline" else f"{r['speedup_command'][arm]:.2f}"
        goal = f"<= {g[arm]['target_seconds']} s: {_goal(g[arm])}" if arm in g else ""
        lines.append(f"| {b['recipe']} | {_spread(c['command_seconds_for_1977'])}{timed} | {phases} | {speed} | {goal} |")
    x_seed = g.get("x_seed")
    lines += [
        "",
        "Extrapolated: the command's measured wall clock plus the generation of the prompts it did not run, at its "
        f"measured rate. The targets are for the command; the 4-bit arm's is {EVAL_4BIT_OF_BF16}x the command of the "
        "bf16 arm with the same KV cache in the same run."
        + (f" The bf16 arm against the seed recipe: {x_seed['measured']:.2f}x (target {x_seed['target']}x: "
           + ("met" if x_seed["met"] else f"missed by {x_seed['missed_by_percent']}%") + ")." if x_seed else ""),
    ]
    if not any("samples_per_s" in r[arm] for arm in arms):  # a --mode command run
        return lines + ["", "Source: `bench/results/eval_throughput.json` (`bench/eval_throughput.py`)."]
    lines += [
        "",
        f"**In one process** (one process holds every arm's model; after a warm-up each, `lm_eval.simple_evaluate` "
        f"is timed from call to return: building the task, generating and scoring, without starting, loading or "
        f"writing): {s['repeats']} run{'s' if s['repeats'] != 1 else ''} per arm, alternating.",
        "",
        "| recipe | samples/s | seconds for 1,977 | peak GiB | x seed |",
        "|---|---|---|---|---|",
    ]
    for arm in arms:
        b = r[arm]
        if "samples_per_s" not in b:
            continue
        timed = f" (timed on {b['prompts_timed']}, extrapolated)" if b["extrapolated"] else ""
        speed = "1.00" if arm == "baseline" else f"{r['speedup'][arm]:.2f}"
        lines.append(f"| {b['recipe']} | {_n(b['samples_per_s'], 2)} ({_n(b['samples_per_s_min'], 2)}-"
                     f"{_n(b['samples_per_s_max'], 2)}) | {_n(b['seconds_for_1977'])}{timed} | {_n(b['peak_mem_gib'])} "
                     f"| {speed} |")
    return lines + ["", "Source: `bench/results/eval_throughput.json` (`bench/eval_throughput.py`)."]


VARIANTS = {
    "lm_eval_stop": "lm-eval's stop-string criteria (decode every row at every step)",
    "token_stop": "this project's token-level stop check (`harness_tasks/stop_tokens.py`)",
    "no_stop": "no stopping criteria (the floor for any stop check)",
    "static": "a static KV cache, not compiled",
    "static_compiled": "a static KV cache compiled by torch.compile",
}


def decode(runs: list[dict]) -> list[str]:
    lines = ["### Where a decoding step goes", "",
             "One batch of real `nli_cot` prompts on the Mistral-7B shape, generated as lm-eval calls `generate`; "
             "ms per step = (generate n2 tokens - generate n1) / (n2 - n1), so the prefill cancels out. The growing "
             "cache copies itself at every step, so its ms per step rise with n2.", "",
             "| machine | batch | padded prompt tokens | n1 / n2 | variant | ms per step | first call (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        s = r["settings"]
        where = f"{r['device']} ({', '.join(f'{k} {v}' for k, v in r['versions'].items())}), {s['repeats']} run"
        for batch, row in r["batches"].items():
            for name, v in row["variants"].items():
                ms = _n(v["ms_per_step"]) if "ms_per_step" in v else f"failed: {v.get('error', '?')}"
                first = _n(v["first_call_s"]) if "first_call_s" in v else ""
                lines.append(f"| {where} | {batch} | {row['prompt_tokens_padded']} | {s['n1']} / {s['n2']} | "
                             f"{VARIANTS.get(name, name)} | {ms} | {first} |")
    return lines + ["", "Compiled, the static cache's step is slower here and its first call takes half a minute "
                        "(compiling), so the project's static cache is not compiled.", "",
                    "Sources: " + ", ".join(f"`bench/results/{name}.json`" for name in DECODE_RESULTS)
                    + " (`bench/decode_profile.py`)."]


DEQUANTIZE_PATHS = {
    "true_4bit_rebatched": "true 4-bit again, other batches (the noise floor)",
    "dequantized_unmerged": "NF4 dequantized once, adapter beside it",
    "dequantized": "NF4 dequantized once, adapter merged (the default)",
}


def dequantize(runs: list[dict]) -> list[str]:
    lines = ["### 4-bit: dequantized once vs bitsandbytes' kernels", "",
             "The same r16 adapter and base loaded `load_in_4bit=True`, greedy decoding of real `nli_cot` prompts, "
             "each path against the true 4-bit path (`dequantize=False`: bitsandbytes' kernels, adapter beside the "
             "base). Re-batching the true 4-bit path shows how much the model's answers move under bf16-sized "
             "changes alone.", "",
             "| machine, shape | path | rows identical | tokens identical | first tokens identical | "
             "last-position logits: max / mean difference | peak GiB |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        s = r["settings"]
        # results written before the controls existed hold one comparison under "agreement"
        compared = r.get("agreement_with_true_4bit") or {"dequantized": r["agreement"]}
        where = f"{r['device']}, {r.get('shape', '7b')} ({s['prompts']} prompts x {s['new_tokens']} tokens)"
        for path, a in compared.items():
            mean = a.get("last_position_logits_mean_abs_diff")
            peak = r["paths"].get(path, {}).get("peak_memory_gib")
            lines.append(f"| {where} | {DEQUANTIZE_PATHS.get(path, path)} | {a['rows_identical']} of {a['rows']} | "
                         f"{100 * a['token_share_identical']:.1f}% | {a['first_token_identical']} of {a['rows']} | "
                         f"{a['last_position_logits_max_abs_diff']} / {mean if mean is not None else 'not recorded'} | "
                         f"{peak if peak is not None else ''} |")
    return lines + ["", "Sources: " + ", ".join(f"`bench/results/{name}.json`" for name in DEQUANTIZE_RESULTS)
                    + " (`bench/dequantize_agreement.py`)."]


def _on(value) -> str:
    return "on" if value else "off"


def _checkpointing(resolved: dict):
    # transformers 5.23 renamed the setting; results measured before keep the old name
    return resolved.get("activation_checkpointing", resolved.get("gradient_checkpointing"))


def train_goal(r: dict) -> dict:
    """The training target against the result's median ratio (bench/train_throughput.py writes it too)."""
    x = r["speedup_real_tokens_median"]
    return {"target_x": TRAIN_GOAL_X, "measured_x": x, "met": x >= TRAIN_GOAL_X,
            "missed_by_percent": max(0, round(100 * (1 - x / TRAIN_GOAL_X)))}


def training(r: dict) -> list[str]:
    s, base, proj = r["settings"], r["baseline"], r["project"]
    x, goal = r["speedup_real_tokens_median"], train_goal(r)
    miss = "met" if goal["met"] else f"missed by {goal['missed_by_percent']}%"
    lines = [
        "### Training: QLoRA SFT on CoT rows",
        "",
        f"{r['device']}, {r['date']} ({_versions(r, ('torch', 'transformers', 'trl', 'peft', 'bitsandbytes'))}); "
        f"{s['model']}; {s['data']}; batches of 16 rows up to {s['max_length_both_arms']} tokens; "
        f"{s['steps'] - s['warmup_steps']} timed steps after {s['warmup_steps']}; "
        f"{s['repeats']} runs per arm, {s['order']}. Checkpointing and Liger as `auto` chose them on this GPU "
        "(or as the overrides set them).",
        "",
        "| recipe | config | checkpointing | Liger | real tokens/s | vs seed | padding | peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [("seed", base), ("project", proj), *r.get("variants", {}).items()]
    for name, b in rows:
        runs = [run for run in b["runs"] if "real_tokens_per_s" in run]
        pad = sorted(run["padding_fraction"] for run in runs)[len(runs) // 2]
        chosen = runs[0]["resolved"]
        config = " ".join([f"`{b['config']}`", *(f"`{o}`" for o in b.get("overrides", []))])
        spread = (f"{b['real_tokens_per_s_median']:,} ({b['real_tokens_per_s_min']:,}-{b['real_tokens_per_s_max']:,})"
                  if len(runs) > 1 else f"{b['real_tokens_per_s_median']:,} (1 run)")
        lines.append(f"| {name} | {config} | {_on(_checkpointing(chosen))} | "
                     f"{_on(chosen['use_liger_kernel'])} | {spread} | "
                     f"{b['real_tokens_per_s_median'] / base['real_tokens_per_s_median']:.2f}x | {100 * pad:.1f}% | "
                     f"{_n(b['peak_memory_gib_max'])} |")
    return lines + ["", f"Project / seed: {x:.2f}x real tokens/s (target {TRAIN_GOAL_X:.0f}x: {miss}). "
                        "Source: `bench/results/train_throughput.json` (`bench/train_throughput.py`)."]


def scaling(r: dict | None) -> list[str]:
    lines = ["### Training on several GPUs (data parallel)", ""]
    if r is None:
        return lines + ["Not measured yet: `python bench/train_throughput.py --gpus 2 --data ... --label-column ...` "
                        "on a machine with two GPUs writes `bench/results/train_scaling.json`, and this section "
                        "from it."]
    one, many, x = r["one_gpu"], r["many_gpus"], r["scaling_real_tokens_median"]
    goal = "met" if x >= r["goal_scaling"] else f"missed by {100 * (1 - x / r['goal_scaling']):.0f}%"
    lines += [f"{r['device']}, {r['date']} ({_versions(r, ('torch', 'transformers', 'trl', 'accelerate'))}); "
              f"`{one['config']}` on 1 GPU and through `accelerate launch` on {r['gpus']} "
              f"(`configs/accelerate/multi_gpu.yaml`, per-GPU batch unchanged); {r['settings']['repeats']} runs each.",
              "", "| GPUs | real tokens/s (all GPUs) | peak GiB per GPU |", "|---|---|---|"]
    for n, b in ((1, one), (r["gpus"], many)):
        lines.append(f"| {n} | {b['real_tokens_per_s_median']:,} ({b['real_tokens_per_s_min']:,}-"
                     f"{b['real_tokens_per_s_max']:,}) | {_n(b['peak_memory_gib_max'])} |")
    return lines + ["", f"Scaling: {x:.2f}x one GPU (target {r['goal_scaling']}x: {goal}). "
                        "Source: `bench/results/train_scaling.json` (`bench/train_throughput.py --gpus`)."]


def datagen(r: dict) -> list[str]:
    s = r["settings"]
    arms = {k: v for k, v in r.items() if isinstance(v, dict) and "rows_per_s_median" in v}
    lines = ["### Data generation client", "", f"{r['device']}, {r['date']}; {s.get('server', '')}".rstrip("; "), "",
             "| arm | recipe | rows/s | share of the bound |", "|---|---|---|---|"]
    for name, b in arms.items():
        lines.append(f"| {name} | {b['recipe']} | {_n(b['rows_per_s_median'])} ({_n(b['rows_per_s_min'])}-"
                     f"{_n(b['rows_per_s_max'])}) | {100 * b['share_of_bound_median']:.0f}% of {b['bound_rows_per_s']} |")
    return lines + ["", "Source: `bench/results/datagen_throughput.json` (`bench/datagen_throughput.py`)."]


def gguf(r: dict) -> list[str]:
    s = r["settings"]
    commits = sorted({call["git"]["commit"] for call in r["calls"]})
    lines = ["### GGUF export: `cotharness export gguf` on the 7B shape", "",
             f"Merged on the CPU; the HF reference on {r['gpu'] or 'the CPU'} (bf16 on a GPU); llama.cpp on the machine's CPU, "
             f"{r['cpu']['model']}, {r['threads']} threads ({r['cpu']['cores']} cores), llama-cpp-python "
             f"{r['versions']['llama_cpp_python']} compiled for `{r['llama_cpp_build']}` (`pip install` compiles for the CPU "
             f"it runs on, which may add others: AMX, OpenMP); gguf {r['versions']['gguf']}; "
             f"commit {', '.join(commits)}. Decoding: greedy, one sequence, {s['prompts']} `nli_cot` prompts x "
             f"{s['max_new_tokens']} tokens. One call per quantization (each merges the adapter again).", "",
             "| quantization | file GiB | tensor types | convert s (K-quants: to f16 first) | quantize s | "
             "llama.cpp CPU tokens/s | transformers loads it, first token (s) | first-step logits: max difference "
             "from HF |",
             "|---|---|---|---|---|---|---|---|"]
    for quant in sorted(r["results"], key=lambda q: r["results"][q]["bytes"], reverse=True):
        q = r["results"][quant]
        types = ", ".join(f"{n} {k}" for k, n in sorted(q["tensor_types"].items()))
        reader = q["transformers_reader"]
        reads = f"yes ({reader['seconds']})" if reader["loads"] else "no"
        quantize = "" if q["quantize_seconds"] is None else q["quantize_seconds"]
        lines.append(f"| {quant} | {q['gib']} | {types} | {q['convert_seconds']} | {quantize} | "
                     f"{q['llama_cpp_cpu_decode_tokens_per_second']} | {reads} | "
                     f"{q['agreement_random_weights']['first_logits_max_abs_diff']} |")
    return lines + ["", "Random weights: the logit differences show how far each quantization moves the model, not "
                        "what it costs a trained model's answers (`compare` measures that on your task: "
                        "[Export](export.md)). Decoding one sequence on a CPU reads every weight once per token, so "
                        "tokens/s follow the file size. Source: `bench/results/gguf_export.json` "
                        "(`bench/gguf_export.py`)."]


def render() -> str:
    parts = ["## Performance", "",
             "Measured by the scripts in `bench/` against the seed recipes in the same command; every run is kept in "
             "the JSON. GPU figures use a Mistral-7B-v0.3 shape with random weights (speed and memory do not depend "
             "on the values) and this project's tiny tokenizer, which writes more tokens per text than Mistral's. "
             "They vary with the GPU, driver and library versions; rerun a script to measure yours.", ""]
    sections = ((evaluation, _load("eval_throughput")), (decode, _load_all(DECODE_RESULTS)),
                (dequantize, _load_all(DEQUANTIZE_RESULTS)), (training, _load("train_throughput")),
                (scaling, _load("train_scaling")), (datagen, _load("datagen_throughput")), (gguf, _load("gguf_export")))
    for fn, results in sections:
        if results is not None or fn is scaling:  # scaling says how to measure it when it is missing
            parts += fn(results) + [""]
    return "\n".join(parts).rstrip() + "\n"


def summary() -> str:
    """The README's few lines: what a user waits for, against the seed recipe."""
    lines = []
    ev = _load("eval_throughput")
    if ev is not None and any(ev.get(arm, {}).get("command") for arm in ("project_bf16", "project_4bit")):
        lines += [f"The evaluation command as a user waits for it (`cotharness eval`, start to exit: loading, merging, "
                  f"1,977 `nli_cot` answers of 200 tokens, writing) on a Mistral-7B shape, {ev['device']}, commit "
                  f"{ev.get('git', {}).get('commit', 'unknown')}:", "",
                  "| recipe | seconds | x seed |", "|---|---|---|"]
        for arm in EVAL_ARMS:
            c = ev.get(arm, {}).get("command")
            if c is None:
                continue
            runs = len(c["runs"])
            secs = (f"{_n(c['command_seconds_for_1977']['median'])} (1 run)" if runs == 1 else
                    f"{_spread(c['command_seconds_for_1977'])} (median of {runs} runs, fastest-slowest)")
            if c["extrapolated"]:
                secs += f" (timed on {c['prompts_timed']}, extrapolated)"
            speed = "1.00" if arm == "baseline" else f"{ev['speedup_command'][arm]:.2f}"
            lines.append(f"| {ev[arm]['recipe']} | {secs} | {speed} |")
        lines.append("")
    tr = _load("train_throughput")
    if tr is not None:
        lines += [f"Training (QLoRA SFT, `configs/train/default.yaml`): {tr['speedup_real_tokens_median']:.2f}x the seed "
                  f"recipe's real tokens/s on {tr['device']}.", ""]
    lines.append("Every run, the phases, memory and the targets: [Performance](docs/performance.md).")
    return "\n".join(lines) + "\n"


def updated(text: str, path: Path, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{path}: the markers {start!r} and {end!r} are missing")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if the page's or the README's section is out of date")
    args = p.parse_args()
    stale = []
    for path, start, end, body in ((PAGE, START, END, render()), (README, SUMMARY_START, SUMMARY_END, summary())):
        text = path.read_text(encoding="utf-8")
        new = updated(text, path, start, end, body)
        if new != text:
            stale.append(path.relative_to(REPO).as_posix())
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"{' and '.join(stale)} out of date: run python bench/performance.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
