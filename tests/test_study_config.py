"""The study config (cotharness/study): the shipped studies validate and plan, mistakes name the file and
key, sweeps expand, and the plan reruns exactly what a change touches."""

from pathlib import Path

import pytest
import yaml

from cotharness.study import config as study_config
from cotharness.study import graph, identity
from cotharness.study.config import StudyError, load_study
from cotharness.study.sweep import runs

from conftest import REPO

SHIPPED = sorted((REPO / "configs" / "study").glob("*.yaml"))


def _plan(path, root):
    study = load_study(path)
    stages = graph.build(study, root, path)
    return stages, identity.plan(stages, Path(root) / study.name)


def test_the_ablation_names_are_prepares():
    from datagen.teacher.prepare import ABLATIONS

    assert tuple(ABLATIONS) == study_config.ABLATIONS
    assert ABLATIONS == graph.PREPARE_FOLDERS


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_study_validates_and_plans(path, tmp_path):
    stages, verdicts = _plan(path, tmp_path)
    assert [v.status for v in verdicts] == ["new"] * len(stages)
    assert stages[-1].kind == "compare"
    assert {s.kind for s in stages} >= {"train", "eval", "compare"}
    for stage in stages:  # every output under studies/<name>/
        assert all(Path(p).is_relative_to(tmp_path / path.stem) for p in stage.outputs), stage.id


def test_the_seed_study_has_its_stages(tmp_path):
    stages, _ = _plan(REPO / "configs" / "study" / "nli_ablations.yaml", tmp_path)
    ids = [s.id for s in stages]
    assert ids[:4] == ["thoughts", "reflect", "teacher_test", "prepare"]
    assert {i for i in ids if i.startswith("train/")} == {"train/correct", "train/reflected", "train/all"}
    assert {i for i in ids if i.startswith("eval/")} == {
        "eval/base", "eval/instruct", "eval/correct", "eval/reflected", "eval/all"}
    compare = stages[-1].config
    assert compare["names"][0] == "base" and "teacher" in compare["names"]


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _study(tmp_path, **changes) -> dict:
    (tmp_path / "pairs.csv").write_text("premise,hypothesis,label\nA cat sat.,A cat sat.,1\nA dog ran.,A cat sat.,0\n")
    (tmp_path / "test.csv").write_text("premise,hypothesis,label\nA bird sang.,A bird sang.,1\n")
    data = {"name": "s", "task": "nli_cot",
            "data": {"teacher_input": str(tmp_path / "pairs.csv"), "test_file": str(tmp_path / "test.csv")},
            "teacher": {"model": "open-mistral-7b", "reflect_model": "mistral-large-latest",
                        "stages": ["thoughts", "reflect"]},
            "ablations": ["correct", "reflected", "all"],
            "training": {"base": "configs/train/default.yaml"},
            "evaluation": {"base": "base-model", "baselines": {"instruct": "instruct-model"}, "teacher": True},
            "comparison": {"base": "base", "primary": "reflected"}}
    for key, value in changes.items():
        data[key] = value
    return data


@pytest.mark.parametrize(("section", "typo", "where", "suggestion"), [
    (None, "traning", "traning", "training"),
    ("teacher", "modle", "teacher.modle", "model"),
    ("evaluation", "baseline", "evaluation.baseline", "baselines"),
])
def test_a_typo_key_names_the_file_and_the_closest_key(tmp_path, section, typo, where, suggestion):
    data = _study(tmp_path)
    (data if section is None else data[section])[typo] = 1
    path = _write(tmp_path / "study.yaml", data)
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert str(path) in str(err.value) and repr(where) in str(err.value)
    assert f"did you mean {suggestion!r}" in str(err.value)


def test_a_typo_in_a_dotted_training_key_names_the_run(tmp_path):
    data = _study(tmp_path, training={"set": {"training.learning_rat": 1e-4}})
    path = _write(tmp_path / "study.yaml", data)
    with pytest.raises(StudyError, match=r"study.yaml: training \(run correct\).*did you mean 'learning_rate'"):
        graph.build(load_study(path), tmp_path / "studies", path)


def test_an_unknown_ablation_and_row_are_named(tmp_path):
    path = _write(tmp_path / "a.yaml", _study(tmp_path, ablations=["correct", "reflcted"]))
    with pytest.raises(StudyError, match="did you mean 'reflected'"):
        load_study(path)
    path = _write(tmp_path / "b.yaml", _study(tmp_path, comparison={"primary": "reflectd"}))
    with pytest.raises(StudyError, match=r"comparison.primary.*did you mean 'reflected'"):
        graph.build(load_study(path), tmp_path / "studies", path)


def test_a_sweep_expands_into_the_cartesian_product(tmp_path):
    data = _study(tmp_path, ablations=["correct", "reflected"],
                  training={"set": {"training.num_train_epochs": 2},
                            "per_ablation": {"reflected": {"lora.dropout": 0.1}},
                            "sweep": {"training.learning_rate": [1.0e-4, 2.0e-4], "lora.r": [8, 16]}})
    data["comparison"] = {"primary": "reflected-learning_rate-0.0002-r-16"}
    path = _write(tmp_path / "study.yaml", data)
    study = load_study(path)
    made = runs(study)
    assert len(made) == 8
    assert made[0].name == "correct-learning_rate-0.0001-r-8"
    stages = {s.id: s for s in graph.build(study, tmp_path / "studies", path)}
    cfg = stages["train/reflected-learning_rate-0.0002-r-16"].config
    assert cfg["training"]["learning_rate"] == 2.0e-4 and cfg["lora"]["r"] == 16
    assert cfg["training"]["num_train_epochs"] == 2 and cfg["lora"]["dropout"] == 0.1
    assert cfg["output_dir"] == str(tmp_path / "studies" / "s" / "runs" / "reflected-learning_rate-0.0002-r-16")
    assert cfg["data"]["train_file"].endswith("sft/correct_reflected/train.jsonl")
    assert stages["train/correct-learning_rate-0.0001-r-8"].config["lora"]["dropout"] == 0.05
    assert sum(1 for i in stages if i.startswith("eval/")) == 8 + 2


def test_the_study_owns_output_and_data_keys(tmp_path):
    path = _write(tmp_path / "study.yaml", _study(tmp_path, training={"set": {"output_dir": "elsewhere"}}))
    with pytest.raises(StudyError, match="training.set.output_dir: the study sets it"):
        graph.build(load_study(path), tmp_path / "studies", path)


def _finish_all(path, root):
    """Record every stage as finished, with its outputs made: what `study run` leaves behind."""
    stages = graph.build(load_study(path), root, path)
    ids = identity.identities(stages)
    home = root / "s"
    for stage in stages:
        for out in stage.outputs:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).mkdir() if stage.kind == "eval" else Path(out).write_text("x")
        identity.record(home, stage, ids[stage.id])
    assert {v.status for v in identity.plan(stages, home)} == {"current"}


def _not_current(path, root) -> dict:
    _, verdicts = _plan(path, root)
    return {v.stage.id: (v.status, v.reasons) for v in verdicts if v.status != "current"}


def test_changing_one_ablation_reruns_its_training_its_evaluation_and_the_comparison(tmp_path):
    root = tmp_path / "studies"
    path = _write(tmp_path / "study.yaml", _study(tmp_path))
    _finish_all(path, root)
    _write(path, _study(tmp_path, training={"per_ablation": {"all": {"training.learning_rate": 1.0e-4}}}))
    todo = _not_current(path, root)
    assert set(todo) == {"train/all", "eval/all", "compare"}
    assert {status for status, _ in todo.values()} == {"changed"}
    assert todo["train/all"][1] == ["config training.learning_rate: 0.0002 -> 0.0001"]
    assert todo["eval/all"][1] == ["input adapter: stage train/all changed"]


def test_changing_the_test_file_reruns_evaluation_the_teachers_answers_and_the_comparison(tmp_path):
    root = tmp_path / "studies"
    path = _write(tmp_path / "study.yaml", _study(tmp_path))
    _finish_all(path, root)
    (tmp_path / "test.csv").write_text("premise,hypothesis,label\nA bird sang.,A fish swam.,0\n")
    todo = _not_current(path, root)
    evals = {i for i in todo if i.startswith("eval/")}
    assert evals == {"eval/base", "eval/instruct", "eval/correct", "eval/reflected", "eval/all"}
    assert set(todo) == evals | {"teacher_test", "compare"}
    assert todo["eval/base"][1] == [f"input file {tmp_path / 'test.csv'} changed"]


def test_a_template_change_marks_the_datagen_stages_that_render_it(tmp_path, monkeypatch):
    import prompts

    root = tmp_path / "studies"
    path = _write(tmp_path / "study.yaml", _study(tmp_path))
    _finish_all(path, root)
    real = prompts.template_hash
    monkeypatch.setattr(prompts, "template_hash", lambda name: "edited" if name == "reflect_user" else real(name))
    todo = _not_current(path, root)
    assert "thoughts" not in todo and "teacher_test" not in todo
    assert todo["reflect"] == ("changed", ["template reflect_user.j2 changed"])
    # reflect's output feeds prepare, so everything trained on it runs again; the base rows do not
    assert "prepare" in todo and "train/correct" in todo and "eval/base" not in todo

    monkeypatch.setattr(prompts, "template_hash", lambda name: "edited" if name == "teacher_system" else real(name))
    todo = _not_current(path, root)
    assert todo["thoughts"] == ("changed", ["template teacher_system.j2 changed"])
    assert todo["teacher_test"] == ("changed", ["template teacher_system.j2 changed"])


def test_a_missing_output_or_an_upstream_rerun_is_not_current(tmp_path):
    root = tmp_path / "studies"
    path = _write(tmp_path / "study.yaml", _study(tmp_path))
    _finish_all(path, root)
    (root / "s" / "runs" / "correct" / "run.json").unlink()
    todo = _not_current(path, root)
    assert todo["train/correct"][0] == "changed" and "output missing" in todo["train/correct"][1][0]
    assert todo["eval/correct"] == ("stale", ["train/correct runs again"])


def test_the_cli_plans_and_shows_status(tmp_path):
    from typer.testing import CliRunner

    from cotharness.cli import app

    path = _write(tmp_path / "study.yaml", _study(tmp_path))
    for command in ("plan", "status"):
        result = CliRunner().invoke(app, ["study", command, str(path), "--root", str(tmp_path / "studies")])
        assert result.exit_code == 0, result.output
        assert "train/reflected" in result.output and "new" in result.output
