"""`cotharness demo` over several seeds and training recipes: how reliably does fine-tuning pass?

Each (recipe, seed) is one real `cotharness demo --seed S --config C` process on the CPU with its own
study root (``--root``: the demo study lands in ``<root>/demo/``) and ``--threads`` threads (2 = the CI
machine), several in parallel. The demo resumes what an earlier, interrupted invocation left, so rerunning this after a timeout completes the set.
Writes, per run: exit status, wall time, base and fine-tuned accuracy with 95% CI, and accuracy per family.

    python bench/demo_seeds.py --seeds 0 1 2 --recipe demo=configs/train/demo.yaml \
        --recipe 400x16=bench/configs/demo_400x16.yaml --out bench/results/demo_seeds.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness_tasks import manifest  # noqa: E402

TUNED, BASE = "synthetic", "base"  # the demo study's rows


def run_one(recipe: str, config: str, seed: int, root: Path, threads: int) -> dict:
    work = root / f"{recipe}-s{seed}"
    out = work / "demo"
    resumed = out.exists()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    log = root / f"{recipe}-s{seed}.log"
    started = time.time()
    with log.open("a") as fh:
        code = subprocess.call([sys.executable, "-c", "from cotharness.cli import main; main()", "demo", "--seed", str(seed),
                                "--config", config, "--root", str(work)],
                               stdout=fh, stderr=subprocess.STDOUT, env=env)
    record = {"recipe": recipe, "config": config, "seed": seed, "exit_code": code,
              "wall_s": round(time.time() - started, 1), "resumed": resumed, "log": str(log)}
    summary = out / "compare" / "summary.json"
    if code in (0, 1) and summary.is_file():
        acc = {r["model"]: r for r in json.loads(summary.read_text()) if r["metric"] == "acc"}
        record.update(base_acc=acc[BASE]["value"], acc=acc[TUNED]["value"], ci_low=acc[TUNED]["ci_low"],
                      ci_high=acc[TUNED]["ci_high"],
                      by_family={f: v["acc"] for f, v in json.loads((out / "by_family.json").read_text())[TUNED].items()})
    print(json.dumps(record), flush=True)
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipe", action="append", required=True, help="NAME=CONFIG.yaml (repeatable)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per demo (the CI machine has 2 cores)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="demos at once")
    p.add_argument("--root", type=Path, default=Path("runs/bench-demo-seeds"))
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    recipes = dict(r.split("=", 1) for r in a.recipe)
    a.root.mkdir(parents=True, exist_ok=True)
    jobs = [(name, cfg, seed) for seed in a.seeds for name, cfg in recipes.items()]
    with ThreadPoolExecutor(a.jobs) as pool:
        runs = list(pool.map(lambda j: run_one(*j, a.root, a.threads), jobs))
    summary = {}
    for name in recipes:
        accs = [r["acc"] for r in runs if r["recipe"] == name and "acc" in r]
        summary[name] = {"runs": len(accs), "passed": sum(r["exit_code"] == 0 for r in runs if r["recipe"] == name),
                         "acc_mean": round(statistics.mean(accs), 4) if accs else None,
                         "acc_min": min(accs, default=None), "acc_max": max(accs, default=None)}
    result = {"what": "cotharness demo (real pipeline, CPU) per training recipe and seed",
              "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                          "threads_per_run": a.threads, "parallel_runs": a.jobs},
              "git": manifest.git_commit(), "versions": manifest.package_versions(),
              "summary": summary, "runs": runs}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_atomic(a.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
