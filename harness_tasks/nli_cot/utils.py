"""nli_cot / nli_direct: premise + hypothesis -> 1 (entailment) or 0 (no entailment).

Data: CSV or JSONL with ``premise,hypothesis[,label]`` (and an optional ``id``). The bundled sample
is used unless ``--metadata '{"test_file": "path.csv"}'`` names another file; ``label_column``
renames the gold column (e.g. ``true_label`` in datagen output). A file without a label column gets
predictions only; empty cells in one are an error unless ``"empty_labels": "skip"`` (``data_files``).
"""

from __future__ import annotations

from pathlib import Path

import datasets

import prompts
from harness_tasks import metrics
from harness_tasks.cot_json import CoTJSONFilter, filtered_answer
from harness_tasks.data_files import load_task_rows, to_dataset
from harness_tasks.schema import AnswerSchema
from harness_tasks.tasks import TaskSpec

SCHEMA = AnswerSchema(
    labels={1: "entailment", 0: "no entailment"},
    positive=1,
    label_synonyms={"entailed": 1, "not entailment": 0, "not entailed": 0, "non entailment": 0,
                    "no entail": 0, "not_entailment": 0},
)
FIELDS = ("premise", "hypothesis")
# The worked example teacher models are shown (datagen); made up for this project.
EXAMPLE = {
    "premise": "Every bakery on Elm Street opens before seven, and Rosa's is a bakery on Elm Street.",
    "hypothesis": "Rosa's opens before seven.",
    "thought_process": "Step 1: The premise says that every bakery on Elm Street opens before seven and that "
                       "Rosa's is one of them. Step 2: The hypothesis claims that Rosa's opens before seven. "
                       "Step 3: What holds for every bakery on Elm Street holds for Rosa's, so the premise "
                       "guarantees the hypothesis.",
    "label": 1,
}
TASK = TaskSpec(name="nli_cot", template="nli_cot", fields=FIELDS, schema=SCHEMA, example=EXAMPLE)
DIRECT_TEMPLATE = "nli_direct"
DIRECT_CHOICES = {0: "no", 1: "yes"}  # answer word per label for nli_direct
SAMPLE_FILE = Path(__file__).resolve().parent / "data" / "sample.jsonl"


def load(test_file: str | None = None, label_column: str = "label", empty_labels: str = "error",
         **_metadata) -> datasets.DatasetDict:
    """``custom_dataset`` for lm-eval; also receives model args and other metadata (ignored here:
    ``cotharness eval`` checks the user's keys against these parameters)."""
    rows = load_task_rows(test_file or SAMPLE_FILE, FIELDS, SCHEMA, label_column, empty_labels=empty_labels)
    return datasets.DatasetDict({"test": to_dataset(rows)})


def doc_to_text(doc: dict) -> str:
    return TASK.prompt(doc)


def doc_to_target(doc: dict) -> str:
    return "" if doc["label"] is None else str(doc["label"])


class AnswerFilter(CoTJSONFilter):
    schema = SCHEMA


def process_results(doc: dict, results: list) -> dict:
    return metrics.score(doc["label"], filtered_answer(results[0])["label"], SCHEMA)


# --- nli_direct: the cheap log-likelihood baseline, no reasoning ---------------------------------

def direct_doc_to_text(doc: dict) -> str:
    return prompts.instruction_prompt(DIRECT_TEMPLATE, **{f: doc[f] for f in FIELDS})


def direct_doc_to_choice(doc: dict) -> list[str]:
    return list(DIRECT_CHOICES.values())


def direct_doc_to_target(doc: dict) -> int:
    # lm-eval needs an index for logging; unlabelled rows are never scored against it
    return 0 if doc["label"] is None else list(DIRECT_CHOICES).index(doc["label"])


def direct_process_results(doc: dict, results: list) -> dict:
    lls = [ll for ll, _ in results]
    pred = list(DIRECT_CHOICES)[max(range(len(lls)), key=lls.__getitem__)]
    return metrics.score(doc["label"], pred, SCHEMA)
