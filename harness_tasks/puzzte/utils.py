"""puzzte / puzzte_3way: a logic puzzle (premise) and a statement (hypothesis) -> does the puzzle entail it?

Puzzles of three families, after Szomiu & Groza's puzzte dataset (arXiv 2112.05742; on the hub as
``tasksource/puzzte``): comparison, knights and knaves, zebra. The gold answer is entailment (true in
every situation the clues allow), contradiction (true in none) or ambiguous (true in some).

- ``puzzte`` (2-way, as the seed project evaluated it): 1 = entailment, 0 = not entailment
  (contradiction and ambiguous merged); precision/recall/F1 are those of entailment.
- ``puzzte_3way``: 1 = entailment, 0 = contradiction, 2 = ambiguous. Entailment keeps the id it has
  in ``puzzte`` and ``nli_cot``; files are safer with label names, which mean the same in both tasks.

Data (``--metadata``): by default the bundled sample (``data/sample.jsonl``, 300 test-split rows of
``cotharness datagen puzzles``); ``{"test_file": "x.jsonl"}`` for a CSV/JSONL file;
``{"dataset": "tasksource/puzzte", "split": "validation"}`` for ``datasets.load_dataset`` (a hub id or a
local directory). Column names and labels are read as ``data.py`` says; ``family`` is kept per row.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from harness_tasks import metrics
from harness_tasks.cot_json import CoTJSONFilter, filtered_answer
from harness_tasks.data_files import DataFileError, to_dataset
from harness_tasks.puzzte import data
from harness_tasks.schema import AnswerSchema
from harness_tasks.tasks import TaskSpec

SCHEMA = AnswerSchema(
    labels={1: "entailment", 0: "not entailment"},
    positive=1,
    # the 3-way names (and puzzte's own "ambiguity") are all "not entailment" here
    label_synonyms={"entailed": 1, "not entailed": 0, "no entailment": 0, "non entailment": 0, "contradiction": 0,
                    "contradicted": 0, "ambiguous": 0, "ambiguity": 0, "neutral": 0, "unknown": 0},
)
SCHEMA_3WAY = AnswerSchema(
    labels={1: "entailment", 0: "contradiction", 2: "ambiguous"},
    label_synonyms={"entailed": 1, "contradicted": 0, "ambiguity": 2, "neutral": 2, "unknown": 2,
                    "undetermined": 2},
)
FIELDS = ("premise", "hypothesis")
TEMPLATE = "puzzte"  # one template for both: it spells each label from its name (label_names)
# The worked example teacher models are shown (datagen); made up for this project, names outside the
# generator's pools. Label 1 is entailment in both tasks.
EXAMPLE = {
    "premise": "Iris, Jonas and Kemal are all of different heights. Iris is taller than Jonas. "
               "Kemal is shorter than Jonas.",
    "hypothesis": "Iris is the tallest.",
    "thought_process": "Step 1: Iris is taller than Jonas, and Jonas is taller than Kemal. Step 2: So the only "
                       "order from tallest to shortest that fits both clues is Iris, Jonas, Kemal. Step 3: In it, "
                       "Iris is the tallest, so the statement follows from the clues.",
    "label": 1,
}


def _label_names(schema: AnswerSchema):
    return lambda row: {"label_names": dict(schema.labels)}


TASK = TaskSpec(name="puzzte", template=TEMPLATE, fields=FIELDS, schema=SCHEMA, example=EXAMPLE,
                context=_label_names(SCHEMA))
VARIANTS = {"puzzte_3way": TaskSpec(name="puzzte_3way", template=TEMPLATE, fields=FIELDS, schema=SCHEMA_3WAY,
                                    example=EXAMPLE, context=_label_names(SCHEMA_3WAY))}
SAMPLE_FILE = Path(__file__).resolve().parent / "data" / "sample.jsonl"


def rows(schema: AnswerSchema, test_file: str | None = None, dataset: str | None = None, split: str = "test",
         label_column: str = "label", empty_labels: str = "error") -> list[dict]:
    """The task's rows with labels in ``schema``'s ids, from a file, a dataset or the bundled sample."""
    if test_file and dataset:
        raise DataFileError(f"give test_file or dataset, not both (got {test_file!r} and {dataset!r})")
    if dataset:
        return data.from_dataset(dataset, split, schema, label_column, empty_labels)
    return data.from_file(test_file or SAMPLE_FILE, schema, label_column, empty_labels)


def load(test_file: str | None = None, dataset: str | None = None, split: str = "test", label_column: str = "label",
         empty_labels: str = "error", **_metadata) -> datasets.DatasetDict:
    """``custom_dataset`` of ``puzzte``; also receives model args and other metadata (ignored here:
    ``cotharness eval`` checks the user's keys against these parameters)."""
    return datasets.DatasetDict({"test": to_dataset(rows(SCHEMA, test_file, dataset, split, label_column,
                                                         empty_labels))})


def load_3way(test_file: str | None = None, dataset: str | None = None, split: str = "test",
              label_column: str = "label", empty_labels: str = "error", **_metadata) -> datasets.DatasetDict:
    """``custom_dataset`` of ``puzzte_3way``."""
    return datasets.DatasetDict({"test": to_dataset(rows(SCHEMA_3WAY, test_file, dataset, split, label_column,
                                                         empty_labels))})


def doc_to_text(doc: dict) -> str:
    return TASK.prompt(doc)


def doc_to_text_3way(doc: dict) -> str:
    return VARIANTS["puzzte_3way"].prompt(doc)


def doc_to_target(doc: dict) -> str:
    return "" if doc["label"] is None else str(doc["label"])


class AnswerFilter(CoTJSONFilter):
    schema = SCHEMA


class AnswerFilter3Way(CoTJSONFilter):
    schema = SCHEMA_3WAY


def process_results(doc: dict, results: list) -> dict:
    return metrics.score(doc["label"], filtered_answer(results[0])["label"], SCHEMA)


def process_results_3way(doc: dict, results: list) -> dict:
    return metrics.score(doc["label"], filtered_answer(results[0])["label"], SCHEMA_3WAY)
