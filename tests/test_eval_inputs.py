"""cotharness eval checks --metadata keys and the data before any model loads (cotharness/eval_inputs.py)."""

import json
import sys

import pytest

from cotharness import eval_inputs, run_eval
from harness_tasks.errors import UserError


def main(argv):
    """run_eval.main as the cotharness command ends it: a user's error is one line and its exit status."""
    try:
        return run_eval.main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


@pytest.fixture
def executed(monkeypatch):
    """lm-eval's run (model load included) replaced by a note that it was reached."""
    from lm_eval._cli import HarnessCLI

    calls = []
    monkeypatch.setattr(HarnessCLI, "execute", lambda self, args: calls.append(args))
    return calls


def run(tmp_path, tasks, metadata):
    # a directory that only looks like a model: lm-eval would fail on it, were it ever loaded
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    return main(["--tasks", tasks, "--model_args", f"pretrained={tmp_path}", "--device", "cpu",
                 "--metadata", json.dumps(metadata)])


def error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("key,meant", [("test_flie", "test_file"), ("label_colum", "label_column"),
                                       ("empty_label", "empty_labels")])
def test_a_misspelt_key_is_an_error_before_the_model(tmp_path, capsys, executed, key, meant):
    assert run(tmp_path, "nli_cot", {key: "mine.csv"}) == 2
    assert error_lines(capsys) == [f"error: --metadata key {key!r}: did you mean {meant!r}? no selected task "
                                   "(nli_cot) reads it; they read empty_labels, label_column, test_file"]
    assert executed == []


def test_judge_keys_are_known_to_instruct_judged(tmp_path, capsys, executed):
    assert run(tmp_path, "instruct_judged", {"judge_modle": "m"}) == 2
    (line,) = error_lines(capsys)
    assert line.startswith("error: --metadata key 'judge_modle': did you mean 'judge_model'? no selected task "
                           "(instruct_judged) reads it; they read dataset, instruction_column, judge_cache,")
    assert executed == []


def test_a_bad_file_fails_before_the_model(tmp_path, capsys, executed):
    data = tmp_path / "dev.csv"
    data.write_text("premise,hypothesis,Label\nA.,B.,1\n", encoding="utf-8")
    assert run(tmp_path, "nli_cot,puzzte", {"test_file": str(data)}) == 2
    assert error_lines(capsys) == [f"error: {data}:1: column 'Label': did you mean 'label'? Headers are matched "
                                   "exactly (case and spaces count); rename the column"]
    assert executed == []


def test_empty_labels_fail_fast_or_are_skipped_aloud(tmp_path, capsys, executed):
    data = tmp_path / "dev.csv"
    data.write_text("premise,hypothesis,label\nA.,B.,1\nC.,D.,\n", encoding="utf-8")
    assert run(tmp_path, "nli_cot", {"test_file": str(data)}) == 2
    assert error_lines(capsys) == [f"error: {data}: 1 of 2 rows have an empty 'label' (first on line 3); fill them "
                                   "in, or set empty_labels to skip to leave those rows out"]
    assert executed == []
    data.write_text("premise,hypothesis,label\nA.,B.,1\nC.,D.,\nE.,F.,0\n", encoding="utf-8")  # another count
    assert run(tmp_path, "nli_cot", {"test_file": str(data), "empty_labels": "skip"}) == 0
    assert f"{data}: skipped 1 of 3 rows with an empty 'label'" in capsys.readouterr().err
    assert len(executed) == 1 and executed[0].metadata == {"test_file": str(data), "empty_labels": "skip"}


def test_keys_for_a_task_not_of_ours_are_a_warning(tmp_path, capsys, executed):
    assert run(tmp_path, "nli_cot,hellaswag", {"max_seq_lengths": [4096]}) == 0
    err = capsys.readouterr().err
    assert "warning: --metadata key 'max_seq_lengths': no selected task (nli_cot) reads it; they read " \
           "empty_labels, label_column, test_file; passed on in case hellaswag reads it" in err
    assert len(executed) == 1
    assert run(tmp_path, "hellaswag", {"max_seq_lengths": [4096]}) == 0  # not ours at all: nothing to say
    assert "max_seq_lengths" not in capsys.readouterr().err and len(executed) == 2


def test_a_key_one_selected_task_reads_is_fine(tmp_path, capsys, executed):
    assert run(tmp_path, "nli_cot,puzzte", {"split": "test"}) == 0  # puzzte's; nli_cot ignores it
    assert len(executed) == 1


def test_tasks_and_tags_map_to_their_loaders():
    from harness_tasks.instruct.utils import load_judged
    from harness_tasks.nli_cot.utils import load

    ours, others = eval_inputs.select(["nli_direct,hellaswag"])
    assert ours == {"nli_direct": load} and others == ["hellaswag"]
    ours, others = eval_inputs.select(["cotharness"])  # the tag every task of ours carries
    assert {"nli_cot", "nli_direct", "puzzte", "puzzte_3way", "tool_select", "instruct_judged"} <= set(ours)
    assert others == [] and ours["instruct_judged"] is load_judged
    assert {"judge_model", "judge_url", "test_file", "instruction_column"} <= eval_inputs.metadata_keys(load_judged)


def test_a_run_of_our_tasks_only_does_not_index_lm_evals_own(monkeypatch):
    """lm-eval reads its ~14,000 built-in task YAMLs at every start; a run of this project's tasks skips them
    (and an lm-eval task name still gets the full index)."""
    import lm_eval.tasks as tasks_module

    from cotharness.eval_inputs import all_ours, without_lm_evals_own_tasks
    from harness_tasks.tasks import TASKS_DIR

    assert all_ours(["nli_cot,puzzte"]) and not all_ours(["nli_cot,hellaswag"]) and not all_ours([])
    original = tasks_module.TaskManager
    with without_lm_evals_own_tasks():
        names = tasks_module.TaskManager(include_path=[str(TASKS_DIR)]).all_tasks
    assert "nli_cot" in names and "nli_direct" in names and "hellaswag" not in names
    assert tasks_module.TaskManager is original
