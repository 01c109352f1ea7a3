"""The README's Performance section is what bench/performance.py writes from the committed JSON."""

import subprocess
import sys

from conftest import REPO


def test_performance_section_matches_the_committed_results():
    proc = subprocess.run([sys.executable, "bench/performance.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_section_carries_every_measured_figure():
    sys.path.insert(0, str(REPO / "bench"))
    import json

    import performance

    text = performance.render()
    ev = json.loads((REPO / "bench/results/eval_throughput.json").read_text())
    tr = json.loads((REPO / "bench/results/train_throughput.json").read_text())
    for arm in ("baseline", "project_bf16", "project_4bit"):
        assert f"{ev[arm]['samples_per_s']:,.2f}" in text and f"{ev[arm]['seconds_for_1977']:,.1f}" in text
    assert f"{tr['project']['real_tokens_per_s_median']:,}" in text and f"{tr['speedup_real_tokens_median']:.2f}x" in text
    for name, variant in tr.get("variants", {}).items():
        assert f"| {name} |" in text and f"{variant['real_tokens_per_s_median']:,}" in text
