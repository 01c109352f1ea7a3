"""One reader, one label rule: eval's task loaders, datagen's input rows and the trainer's SFT rows accept
or refuse the same file the same way (harness_tasks/data_files.py, harness_tasks/tables.py)."""

import codecs
import json

import pytest

from datagen.teacher.stages import input_rows
from harness_tasks.data_files import DataFileError, read_rows
from harness_tasks.nli_cot import utils as nli
from harness_tasks.puzzte import utils as puzzte
from harness_tasks.tasks import get_task
from trainer.data import sft_rows

from conftest import write_jsonl

HEADER = "id,premise,hypothesis,label,thought_process\n"
LOADERS = {"nli_cot": nli.load, "puzzte": puzzte.load}


def _row(i, label):
    return f"r{i},Premise {i}.,Hypothesis {i}.,{label},Step 1: think.\n"


def read_all(task: str, path, **options) -> dict:
    """What each reader makes of ``path``: its gold labels (and ids), or its error message."""
    readers = {
        "eval": lambda: [(d["id"], d["label"]) for d in LOADERS[task](test_file=str(path), **options)["test"]],
        "datagen": lambda: [(r["id"], r["true_label"]) for r in input_rows("thoughts", path, get_task(task),
                                                                            **options)],
        "train": lambda: [(None, json.loads(r["completion"].removesuffix("</s>"))["predicted_label"])
                          for r in sft_rows(path, get_task(task), "</s>", **options)],
    }
    out = {}
    for name, read in readers.items():
        try:
            out[name] = read()
        except DataFileError as err:
            out[name] = f"error: {err}"
    return out


def same_everywhere(outcome: dict):
    labels = {name: [label for _, label in v] if isinstance(v, list) else v for name, v in outcome.items()}
    assert len({json.dumps(v) for v in labels.values()}) == 1, labels
    return labels["eval"]


@pytest.mark.parametrize("task", LOADERS)
def test_label_spellings_are_read_alike(tmp_path, task):
    path = tmp_path / "labels.csv"
    spellings = ["Entailment ", "entailment", "no entailment", "0", "1", "1.0", "ENTAILMENT"]
    path.write_text(HEADER + "".join(_row(i, s) for i, s in enumerate(spellings)), encoding="utf-8")
    assert same_everywhere(read_all(task, path)) == [1, 1, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("task", LOADERS)
def test_a_byte_order_mark_keeps_the_ids(tmp_path, task):
    """A spreadsheet's "CSV UTF-8" starts with a BOM: the first column is still `id`."""
    path = tmp_path / "bom.csv"
    path.write_bytes(codecs.BOM_UTF8 + (HEADER + _row(7, 1) + _row(9, 0)).encode("utf-8"))
    outcome = read_all(task, path)
    assert same_everywhere(outcome) == [1, 0]
    assert [i for i, _ in outcome["eval"]] == [i for i, _ in outcome["datagen"]] == ["r7", "r9"]
    assert not any(k.startswith("\ufeff") for k in input_rows("thoughts", path, get_task(task))[0])


@pytest.mark.parametrize("task", LOADERS)
@pytest.mark.parametrize("header", ["Label", "label ", "LABEL"])
def test_a_near_miss_label_header_is_an_error_not_unlabelled(tmp_path, task, header):
    path = tmp_path / "near.csv"
    path.write_text(HEADER.replace("label", header) + _row(1, 1), encoding="utf-8")
    message = same_everywhere(read_all(task, path))
    assert message == (f"error: {path}:1: column {header!r}: did you mean 'label'? Headers are matched exactly "
                       "(case and spaces count); rename the column")


@pytest.mark.parametrize("task", LOADERS)
def test_a_latin1_file_is_one_line_with_the_line(tmp_path, task):
    path = tmp_path / "latin1.csv"
    path.write_bytes((HEADER + _row(1, 1) + "r2,Le café est fermé.,Il est ouvert.,0,Step 1.\n").encode("latin-1"))
    assert same_everywhere(read_all(task, path)) == (
        f"error: {path}:3: not UTF-8 (byte 0xe9 in column 10); save the file as UTF-8 (in a spreadsheet: CSV UTF-8)")


@pytest.mark.parametrize("task", LOADERS)
def test_empty_labels_are_refused_with_count_and_line_unless_skipped(tmp_path, task, capsys):
    path = tmp_path / "holes.csv"
    path.write_text(HEADER + _row(1, 1) + _row(2, "") + _row(3, 0) + _row(4, " "), encoding="utf-8")
    assert same_everywhere(read_all(task, path)) == (
        f"error: {path}: 2 of 4 rows have an empty 'label' (first on line 3); fill them in, or set empty_labels "
        "to skip to leave those rows out")
    capsys.readouterr()
    skipped = read_all(task, path, empty_labels="skip")
    assert same_everywhere(skipped) == [1, 0]
    assert [i for i, _ in skipped["eval"]] == [i for i, _ in skipped["datagen"]] == ["r1", "r3"]
    said = capsys.readouterr().err
    assert f"{path}: skipped 2 of 4 rows with an empty 'label' (empty_labels=skip; first on line 3)" in said
    with pytest.raises(DataFileError, match=r"empty_labels='drop': use 'error' \(the default\) or 'skip'"):
        nli.load(test_file=str(path), empty_labels="drop")


def test_a_file_without_labels_is_unlabelled_for_eval_and_datagen_only(tmp_path):
    path = tmp_path / "hidden.csv"
    path.write_text("premise,hypothesis,thought_process\nA.,B.,Step 1.\n", encoding="utf-8")
    outcome = read_all("nli_cot", path)
    assert outcome["eval"] == outcome["datagen"] == [("0", None)]
    assert outcome["train"].startswith(f"error: {path}:2: missing column(s) ['label']")


def test_every_label_empty_says_how_to_read_it_unlabelled(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("premise,hypothesis,label\nA.,B.,\nC.,D.,\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"every 'label' cell is empty \(2 rows\); fill them in, or remove the "
                                            r"column to read the file as unlabelled"):
        nli.load(test_file=str(path))


def test_a_misspelt_text_column_is_named(tmp_path):
    path = tmp_path / "typo.csv"
    path.write_text("premise,hypothsis,label,thought_process\nA.,B.,1,Step 1.\n", encoding="utf-8")
    outcome = read_all("nli_cot", path)
    assert same_everywhere(outcome) == (
        f"error: {path}:2: missing column(s) ['hypothesis']; found ['hypothsis', 'label', 'premise', "
        "'thought_process'] ('hypothsis' looks like 'hypothesis': headers are matched exactly)")
    (tmp_path / "case.csv").write_text("Premise,hypothesis\nA.,B.\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"case.csv:1: column 'Premise': did you mean 'premise'\?"):
        nli.load(test_file=str(tmp_path / "case.csv"))


def test_csv_tsv_jsonl_and_parquet_read_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "a", "premise": "P, with a comma.", "hypothesis": "H.", "label": "entailment"},
            {"id": "b", "premise": "Q.", "hypothesis": "Café.", "label": 0}]
    (tmp_path / "d.csv").write_text('id,premise,hypothesis,label\na,"P, with a comma.",H.,entailment\nb,Q.,Café.,0\n',
                                    encoding="utf-8")
    (tmp_path / "d.tsv").write_text("id\tpremise\thypothesis\tlabel\na\tP, with a comma.\tH.\tentailment\n"
                                    "b\tQ.\tCafé.\t0\n", encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl", rows)
    pq.write_table(pa.Table.from_pylist([{**r, "label": str(r["label"])} for r in rows]), tmp_path / "d.parquet")
    loaded = {s: nli.load(test_file=str(tmp_path / f"d.{s}"))["test"].to_list() for s in ("csv", "tsv", "jsonl", "parquet")}
    assert all(v == loaded["csv"] for v in loaded.values())
    assert [(d["id"], d["premise"], d["label"]) for d in loaded["csv"]] == [("a", "P, with a comma.", 1),
                                                                          ("b", "Q.", 0)]


def test_header_problems_of_the_file_itself(tmp_path):
    twice = tmp_path / "twice.csv"
    twice.write_text("premise,hypothesis,label,label\nA.,B.,1,0\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"twice.csv:1: column 'label' appears twice in the header"):
        read_rows(twice)
    jsonl = write_jsonl(tmp_path / "d.jsonl", [{"premise": "A.", "hypothesis": "B."},
                                               {"premise": "C.", "hypothesis": "D.", "Label": 1}])
    with pytest.raises(DataFileError, match=r"d.jsonl:2: column 'Label': did you mean 'label'\?"):
        nli.load(test_file=str(jsonl))  # the line the odd key first appears on


def test_to_label_reads_float_text_as_its_integer():
    schema = get_task("nli_cot").schema
    assert [schema.to_label(v) for v in ("1.0", " 0.0 ", "2.0", "1.5", "nan")] == [1, 0, None, None, None]
