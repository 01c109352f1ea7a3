"""Teacher-stage throughput against an API stand-in that answers every request in a fixed time.

A loopback server (tests/loopback_server.py, its own process) answers each chat request after
``--latency`` seconds, like an API under load; `cotharness datagen thoughts` (a fresh process per run)
generates ``--rows`` rows through the real mistralai SDK. With C requests in flight the bound is
C / latency rows/s, so rows/s over that bound shows whether the client adds a serial bottleneck
(the issue's goal: >= 80% at concurrency 32). The baseline arm is the seed's teacher loop: one request
at a time (concurrency 1); a third arm runs the project without its cache of the SDK's model classes.
Arms alternate, each run in a new output file; every run is kept.

    python bench/datagen_throughput.py --out bench/results/datagen_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from harness_tasks import manifest  # noqa: E402


def make_rows(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "premise": f"Row {i}: the courier left the parcel at the blue door.",
                                "hypothesis": f"Row {i}: a parcel was delivered.", "label": 1}) + "\n")
    return path


# The third arm: the project without its cache of the SDK's per-call pydantic model classes
# (datagen/engine/backends/mistral.py), to show what that cache is worth.
UNCACHED = "import datagen.engine.backends.mistral as m; m._cache_sdk_models = lambda: None; "


def run_arm(url: str, rows: Path, out: Path, concurrency: int, prelude: str = "") -> dict:
    cmd = [sys.executable, "-c", prelude + "from cotharness.cli import main; main()", "datagen", "thoughts",
           "--input", str(rows), "--out", str(out), "--server-url", url, "--model", "open-mistral-7b",
           "--concurrency", str(concurrency)]
    env = dict(os.environ, MISTRAL_API_KEY="bench-key", HF_HUB_OFFLINE="1")
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    run = json.loads(out.with_name(out.stem + ".manifest.json").read_text())["runs"][-1]
    assert run["done"] == sum(1 for _ in rows.open()) and run["failed"] == 0, run
    return {"rows": run["done"], "wall_s": run["wall_seconds"], "rows_per_s": round(run["done"] / run["wall_seconds"], 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rows", type=int, default=640, help="rows per project run")
    p.add_argument("--baseline-rows", type=int, default=20, help="rows per baseline (sequential) run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "bench/results/datagen_throughput.json")
    args = p.parse_args(argv)

    server = subprocess.Popen([sys.executable, str(REPO / "tests/loopback_server.py"), "--latency", str(args.latency),
                               "--responder", "fake_teacher:respond"], stdout=subprocess.PIPE, text=True)
    runs = {"baseline": [], "project": [], "project_sdk_uncached": []}
    try:
        url = "http://127.0.0.1:" + server.stdout.readline().split()[1]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            project_rows = make_rows(tmp / "proj.jsonl", args.rows)
            rows = {"baseline": make_rows(tmp / "base.jsonl", args.baseline_rows), "project": project_rows,
                    "project_sdk_uncached": project_rows}
            conc = {"baseline": 1, "project": args.concurrency, "project_sdk_uncached": args.concurrency}
            run_arm(url, rows["project"], tmp / "warmup.jsonl", args.concurrency)  # imports, page cache
            for i in range(args.repeats):
                for arm in runs:
                    prelude = UNCACHED if arm == "project_sdk_uncached" else ""
                    result = run_arm(url, rows[arm], tmp / f"{arm}-{i}.jsonl", conc[arm], prelude)
                    runs[arm].append(result)
                    print(arm, result, flush=True)
    finally:
        server.terminate()

    def block(arm: str, concurrency: int) -> dict:
        rates = [r["rows_per_s"] for r in runs[arm]]
        bound = concurrency / args.latency
        return {"concurrency": concurrency, "bound_rows_per_s": bound, "rows_per_s_median": statistics.median(rates),
                "rows_per_s_min": min(rates), "rows_per_s_max": max(rates),
                "share_of_bound_median": round(statistics.median(rates) / bound, 3), "runs": runs[arm]}

    project = block("project", args.concurrency)
    result = {
        "benchmark": "datagen_throughput", "date": time.strftime("%Y-%m-%d"),
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU only; loopback HTTP)",
        "versions": manifest.package_versions() | {"mistralai": _version("mistralai")}, "git": manifest.git_commit(),
        "settings": {"latency_s": args.latency, "rows": args.rows, "baseline_rows": args.baseline_rows,
                     "repeats": args.repeats, "stage": "thoughts", "response_format": "json_object",
                     "server": "tests/loopback_server.py (ThreadingHTTPServer, own process), fake_teacher:respond"},
        "baseline": {"recipe": "the seed's teacher loop: one request at a time", **block("baseline", 1)},
        "project": {"recipe": f"cotharness datagen thoughts --concurrency {args.concurrency}", **project},
        "project_sdk_uncached": {"recipe": "the same without caching the SDK's per-call pydantic model classes",
                                 **block("project_sdk_uncached", args.concurrency)},
        "goal": {"rows_per_s": round(0.8 * project["bound_rows_per_s"], 1),
                 "met": project["rows_per_s_min"] >= 0.8 * project["bound_rows_per_s"]},
        "note": "wall time is the stage's own (manifest runs[-1].wall_seconds): input, planning, requests, "
                "compaction; Python start-up excluded. Depends on the CPU only through client overhead.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: {m: v for m, v in result[k].items() if m != "runs"} for k in
                      ("baseline", "project", "project_sdk_uncached", "goal")}, indent=1))
    return 0


def _version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
