"""`cotharness study report` (the project's issue 19, item 4): the report of a tiny study, written by
`study run` at its end and again by `study report`, holds the comparison's rows with summary.json's
numbers, the loss curves, compute time and every stage's identity; a study with nothing run says so;
the same recorded outputs give the same file."""

import json

import pytest
from test_study_run import data, run, tiny_study, write_study  # noqa: F401 (the module's data fixture)


@pytest.fixture(scope="module")
def ran(data, tiny_model, tmp_path_factory):  # noqa: F811
    work = tmp_path_factory.mktemp("report")
    config = write_study(work / "tiny.yaml", tiny_study("tiny", data, tiny_model, ablations=("a", "b")))
    root = work / "studies"
    result, lines = run(config, root)
    return config, root, result, lines


def test_study_run_writes_the_report_at_its_end(ran):
    config, root, result, lines = ran
    home = root / "tiny"
    assert lines[-1] == f"report: {home / 'report.md'}"
    assert (home / "report.md").is_file()
    state = json.loads((home / "state.json").read_text())
    assert all(isinstance(rec["seconds"], float) for rec in state["stages"].values())


def test_the_report_holds_the_comparison_losses_costs_and_provenance(ran):
    from typer.testing import CliRunner

    from cotharness.compare_stats import ci_cell, fmt
    from cotharness.study.cli import app

    config, root, _, _ = ran
    home = root / "tiny"
    out = CliRunner().invoke(app, ["report", str(config), "--root", str(root)])
    assert out.exit_code == 0, out.output
    text = (home / "report.md").read_text()
    assert "not run" not in text

    rows = json.loads((home / "compare" / "summary.json").read_text())
    table = {line.split(" | ")[0].removeprefix("| "): line for line in text.splitlines()
             if line.startswith("| ") and " [" in line}
    assert set(table) == {"base", "a", "b"} == {r["model"] for r in rows}
    for r in rows:  # every metric's cell is summary.json's value and CI
        assert f" {ci_cell(r)} |" in table[r["model"]]
    acc = {r["model"]: r for r in rows if r["metric"] == "acc"}
    for model in ("a", "b"):
        cells = table[model].strip("| ").split(" | ")
        assert cells[-4:-2] == [fmt(acc[model]["delta_vs_base"]), fmt(acc[model]["mcnemar_p"], pct=False)]
    b = table["b"].strip("| ").split(" | ")
    assert b[-2] == fmt(acc["b"]["value"] - acc["a"]["value"])  # vs the primary row, a
    assert b[-1] != "-"  # the paired test against the primary ran
    assert table["a"].strip("| ").split(" | ")[-2:] == ["-", "-"]

    assert "## Per-class results" in text and "| class | base | a | b | support |" in text
    assert (home / "report" / "loss.png").stat().st_size > 1000 and "](report/loss.png)" in text
    for name in ("a", "b"):
        record = json.loads((home / "runs" / name / "run.json").read_text())
        assert f"| {name} | complete | 4 / 4 |" in text
        assert f"| train/{name} | {record['train_seconds'] / 3600:.4f} h" in text
    state = json.loads((home / "state.json").read_text())
    assert len(state["stages"]) == 6
    for stage_id, rec in state["stages"].items():
        assert f"| {stage_id} | current | `{rec['identity']}` | {rec['finished']} |" in text
    assert "| output of | cotharness |" in text


def test_the_report_is_the_same_file_twice(ran):
    from cotharness.study.report import report

    config, root, _, _ = ran
    first = report(config, root).read_bytes()
    png = (root / "tiny" / "report" / "loss.png").read_bytes()
    assert report(config, root).read_bytes() == first
    assert (root / "tiny" / "report" / "loss.png").read_bytes() == png


def test_a_study_with_nothing_run_is_reported_as_not_run(data, tiny_model, tmp_path):  # noqa: F811
    from cotharness.study.report import report

    config = write_study(tmp_path / "fresh.yaml", tiny_study("fresh", data, tiny_model, ablations=("a",)))
    text = report(config, tmp_path / "studies").read_text()
    assert "The comparison is not run yet" in text
    assert "| a | not run yet |" in text and "Loss curves: not run yet" in text
    assert "| train/a | new | not run yet |" in text and "| compare | new | not run yet |" in text
    assert "[" not in text.split("## Per-class")[0]  # no number made up for the table
    assert not (tmp_path / "studies" / "fresh" / "report").exists()
