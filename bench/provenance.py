"""Which code a benchmark result came from. On the GPU machine the tree arrives as a copy without
``.git``, so the run names its commit in ``BENCH_COMMIT``; elsewhere git is asked."""

from __future__ import annotations

import os


def git() -> dict:
    from harness_tasks import manifest

    if os.environ.get("BENCH_COMMIT"):
        return {"commit": os.environ["BENCH_COMMIT"], "from": "BENCH_COMMIT"}
    return manifest.git_commit()
