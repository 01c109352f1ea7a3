import json

import pytest

from harness_tasks.data_files import DataFileError
from harness_tasks.nli_cot.utils import SAMPLE_FILE, load

from conftest import write_jsonl


def test_bundled_sample_is_balanced_and_labelled():
    ds = load()["test"]
    assert len(ds) >= 20
    assert set(ds["label"]) == {0, 1}
    assert abs(sum(ds["label"]) / len(ds) - 0.5) <= 0.1


def test_bundled_sample_matches_generator():
    """The shipped sample is what the project's generator writes (no hand edits, no drift)."""
    from datagen.synthetic.nli import generate

    rows = [json.loads(line) for line in SAMPLE_FILE.read_text().splitlines()]
    expected = [{k: r[k] for k in ("id", "premise", "hypothesis", "label")} for r in generate("test", len(rows))]
    assert rows == expected


def test_csv_with_and_without_labels(tmp_path):
    labelled = tmp_path / "dev.csv"
    labelled.write_text('premise,hypothesis,label\n"A, with comma",B,1\nC,D,0\n', encoding="utf-8")
    ds = load(test_file=str(labelled))["test"]
    assert ds["premise"] == ["A, with comma", "C"] and ds["label"] == [1, 0] and ds["id"] == ["0", "1"]
    hidden = tmp_path / "test.csv"
    hidden.write_text("premise,hypothesis\nA,B\n", encoding="utf-8")
    assert load(test_file=str(hidden))["test"]["label"] == [None]


def test_label_column_override(tmp_path):
    path = write_jsonl(tmp_path / "thoughts.jsonl",
                       [{"id": 7, "premise": "A", "hypothesis": "B", "true_label": 1, "predicted_label": 0}])
    ds = load(test_file=str(path), label_column="true_label")["test"]
    assert ds["label"] == [1] and ds["id"] == ["7"]


def test_metadata_kwargs_are_ignored():
    # lm-eval passes model args and other metadata into custom_dataset
    assert len(load(pretrained="x", peft="y", version=1.0)["test"]) > 0


@pytest.mark.parametrize("content,suffix,message", [
    ('{"premise": "A", "hypothesis": "B"}\n{"premise": "A", "hypo', ".jsonl", ":2: invalid JSON"),
    ('{"premise": "A"}\n', ".jsonl", ":1: missing column(s) ['hypothesis']"),
    ('["A", "B"]\n', ".jsonl", ":1: expected a JSON object"),
    ("premise,hypothesis,label\nA,B,1\nC,D,yes\n", ".csv", ":3: label='yes' is not one of [1, 0]"),
    ("premise,hypothesis\nA,,\n", ".csv", ":2: more cells than the header"),
    ("premise,hypothesis\nA,\n", ".csv", ":2: column 'hypothesis' is empty"),
    ("premise,hypothesis\n", ".csv", ": no rows"),
    ("a\tb\n", ".xlsx", "unsupported file type '.xlsx' (use .csv, .tsv, .jsonl or .parquet; from a spreadsheet, "
                        "save as CSV UTF-8)"),
])
def test_bad_files_name_file_and_line(tmp_path, content, suffix, message):
    path = tmp_path / f"data{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFileError) as err:
        load(test_file=str(path))
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="no such file"):
        load(test_file=str(tmp_path / "nope.csv"))
