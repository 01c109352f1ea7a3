"""The Performance page (docs/performance.md, linked from the README) is what bench/performance.py writes
from the committed JSON."""

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
    in_process = any("samples_per_s" in ev[arm] for arm in ("baseline", "project_bf16", "project_4bit"))
    for arm in ("baseline", "project_bf16", "project_4bit"):
        if in_process:
            assert f"{ev[arm]['samples_per_s']:,.2f}" in text and f"{ev[arm]['seconds_for_1977']:,.1f}" in text
        command = ev[arm]["command"]["command_seconds_for_1977"]
        assert f"| {command['median']:,.1f} ({command['min']:,.1f}-{command['max']:,.1f})" in text
    # the command's figure leads: its table comes before the in-process one (where there is one)
    assert ("| recipe | samples/s |" in text) == in_process
    if in_process:
        assert text.index("command seconds for 1,977") < text.index("| recipe | samples/s |")
    assert f"{tr['project']['real_tokens_per_s_median']:,}" in text and f"{tr['speedup_real_tokens_median']:.2f}x" in text
    for name, variant in tr.get("variants", {}).items():
        assert f"| {name} |" in text and f"{variant['real_tokens_per_s_median']:,}" in text


def test_the_markers_live_in_the_docs_page_and_the_readme_links_to_it():
    sys.path.insert(0, str(REPO / "bench"))
    import performance

    assert performance.PAGE == REPO / "docs/performance.md"
    page = performance.PAGE.read_text(encoding="utf-8")
    assert performance.START in page and performance.END in page
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert performance.START not in readme and "docs/performance.md" in readme


def test_readme_summary_leads_with_the_commands_seconds_from_the_same_json():
    sys.path.insert(0, str(REPO / "bench"))
    import json

    import performance

    ev = json.loads((REPO / "bench/results/eval_throughput.json").read_text())
    tr = json.loads((REPO / "bench/results/train_throughput.json").read_text())
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split(performance.SUMMARY_START, 1)[1].split(performance.SUMMARY_END, 1)[0]
    for arm in ("baseline", "project_bf16", "project_4bit"):
        row = next(line for line in block.splitlines() if line.startswith(f"| {ev[arm]['recipe']} |"))
        assert f"| {ev[arm]['command']['command_seconds_for_1977']['median']:,.1f} (" in row
        assert ("(1 run)" in row) == (len(ev[arm]["command"]["runs"]) == 1)
    assert f"{ev['speedup_command']['project_bf16']:.2f}" in block and ev["git"]["commit"] in block
    assert f"{tr['speedup_real_tokens_median']:.2f}x" in block


def test_the_4bit_target_is_set_by_the_bf16_arm_with_the_same_kv_cache():
    """The 4-bit arm's target is 1.2x a bf16 command: the one that decoded with the same KV cache (a 4-bit arm
    timed with the growing cache against a static-cache bf16 arm would be a cache comparison)."""
    sys.path.insert(0, str(REPO / "bench"))
    import performance

    def arm(seconds, **model_args):
        return {"model_args": model_args, "command": {"command_seconds_for_1977": {"median": seconds}}}

    r = {"device": "NVIDIA H100 80GB HBM3", "project_bf16": arm(80.0, dtype="bfloat16", kv_cache="static"),
         "project_bf16_dynamic": arm(110.0, dtype="bfloat16", kv_cache="dynamic"),
         "project_4bit": arm(100.0, load_in_4bit=True, kv_cache="dynamic")}
    assert performance._eval_goal("project_4bit", r) == 132.0
    r["project_4bit"] = arm(100.0, load_in_4bit=True, kv_cache="static")
    assert performance._eval_goal("project_4bit", r) == 96.0
    del r["project_bf16"]
    assert performance._eval_goal("project_4bit", r) is None
    assert performance._eval_goal("project_bf16_dynamic", r) is None and performance._eval_goal("baseline", r) is None


def test_gguf_section_carries_every_quantization_of_the_committed_export():
    sys.path.insert(0, str(REPO / "bench"))
    import json

    import performance

    text = performance.render()
    r = json.loads((REPO / "bench/results/gguf_export.json").read_text())
    assert set(r["results"]) == {"f16", "q8_0", "q4_k_m"}
    for quant, q in r["results"].items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {quant} | {q['gib']} |"))
        assert f"| {q['llama_cpp_cpu_decode_tokens_per_second']} |" in row and f"| {q['convert_seconds']} |" in row
    assert r["llama_cpp_build"] in text


def test_goals_say_by_how_much_each_target_is_missed_and_the_committed_json_carries_them():
    sys.path.insert(0, str(REPO / "bench"))
    import json

    import performance

    def arm(seconds, **model_args):
        return {"model_args": model_args, "command": {"command_seconds_for_1977": {"median": seconds}}}

    r = {"device": "NVIDIA H100 80GB HBM3", "project_bf16": arm(83.7, dtype="bfloat16", kv_cache="static"),
         "project_4bit": arm(84.7, load_in_4bit=True, kv_cache="static"), "speedup_command": {"project_bf16": 20.52}}
    g = performance.goals(r)
    assert g["project_bf16"] == {"target_seconds": 75, "median_seconds": 83.7, "met": False, "missed_by_seconds": 8.7}
    assert g["project_4bit"]["target_seconds"] == 100.4 and g["project_4bit"]["met"]
    assert g["x_seed"]["met"] is False and g["x_seed"]["missed_by_percent"] == 18
    r["device"] = "NVIDIA H200"  # the H200's memory is faster: its own target
    assert performance.goals(r)["project_bf16"]["target_seconds"] == 60
    ev = json.loads((REPO / "bench/results/eval_throughput.json").read_text())
    assert ev["goals"] == performance.goals(ev)
    tr = json.loads((REPO / "bench/results/train_throughput.json").read_text())
    assert tr["goal"] == performance.train_goal(tr)
    assert performance.train_goal({"speedup_real_tokens_median": 1.876})["missed_by_percent"] == 6
    assert performance.train_goal({"speedup_real_tokens_median": 2.01})["met"]
