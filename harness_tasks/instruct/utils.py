"""Instruction following, the target of instruction backtranslation (Humpback-style self-instruct).

``instruct``: an instruction -> the assistant's response (free text: ``target`` is the response, no
label schema). The final model is trained on curated (instruction, response) pairs with this prompt,
loss on the response only. ``backward`` (a variant): a response -> the instruction it answers; the
backward model is trained on seed pairs the other way round and then writes instructions for
unlabelled responses. Both prompts are templates in ``prompts/`` (``instruct.j2``, ``backward.j2``).
"""

from __future__ import annotations

from harness_tasks.tasks import TaskSpec

TASK = TaskSpec(name="instruct", template="instruct", fields=("instruction",), schema=None,
                target=lambda row: row["response"])
VARIANTS = {
    "backward": TaskSpec(name="backward", template="backward", fields=("response",), schema=None,
                         target=lambda row: row["instruction"]),
}


# --- instruct_judged: held-out instructions answered with the instruct prompt, rated 1-5 by a judge -----
# (instruct_judged.yaml). Imports are inside the functions: task_names() imports every task's utils.py,
# and only a run of this task needs datasets and the judge client.

def load_judged(test_file: str | None = None, dataset: str | None = None, split: str = "test",
                instruction_column: str = "instruction", **metadata):
    """``custom_dataset`` of ``instruct_judged``: rows ``{id, instruction, reference, category}`` from
    ``test_file`` (JSONL/CSV with an ``instruction`` column; ``reference``, ``category``, ``id``
    optional), a ``datasets`` source (``dataset`` + ``split``: a hub id or a local directory), else the
    bundled sample. ``judge_*`` metadata configure the judge (``harness_tasks.judge.JudgeConfig``) and
    are copied into every document (the filter only sees documents); other metadata are ignored.
    The judge is checked here, before the model generates anything."""
    from pathlib import Path

    import datasets

    from harness_tasks import judge
    from harness_tasks.data_files import DataFileError, Table, check_header, read_table, row_id

    config = judge.JudgeConfig.from_metadata(metadata)
    wanted = (instruction_column, "id", "reference", "category")  # a near miss of one is an error
    if test_file and dataset:
        raise DataFileError(f"give test_file or dataset, not both (got {test_file!r} and {dataset!r})")
    if dataset:
        where = f"dataset {dataset!r} (split {split!r})"
        try:
            saved = any((Path(dataset) / f).is_file() for f in ("state.json", "dataset_dict.json"))
            ds = datasets.load_from_disk(dataset) if saved else datasets.load_dataset(dataset, split=split)
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        except Exception as err:  # offline hub, unknown split, unreadable files: one clear line
            raise DataFileError(f"{where}: cannot be loaded: {type(err).__name__}: {err}") from err
        check_header(Table(Path(dataset), ds.column_names, []), wanted, where)
        located = [(f"{where} row {i + 1}", row) for i, row in enumerate(ds)]
    else:
        path = Path(test_file) if test_file else Path(__file__).resolve().parent / "data" / "sample.jsonl"
        table = read_table(path)
        check_header(table, wanted)
        located = [(f"{path}:{lineno}", row) for lineno, row in table.rows]
        where = str(path)
    if not located:
        raise DataFileError(f"{where}: no rows")
    docs = []
    for i, (at, row) in enumerate(located):
        text = row.get(instruction_column)
        if not isinstance(text, str) or not text.strip():
            found = sorted(row) if instruction_column not in row else None
            raise DataFileError(f"{at}: column {instruction_column!r} is " + (
                f"missing; found {found}" if found is not None else "empty or not text"))
        rid, ref, cat = row.get("id"), row.get("reference"), row.get("category")
        docs.append({"id": row_id(rid, i), "instruction": text,
                     "reference": ref if isinstance(ref, str) and ref.strip() else None,
                     "category": str(cat) if cat not in (None, "") else None, **config.doc_fields()})
    judge.preflight(config)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def _judge_keys() -> list[str]:
    from harness_tasks.judge import JudgeConfig

    return list(JudgeConfig().doc_fields())


# The --metadata keys load_judged reads through **metadata, beyond its parameters: cotharness eval
# checks a user's keys against both before it loads a model.
load_judged.metadata_keys = _judge_keys


def doc_to_text(doc: dict) -> str:
    return TASK.prompt(doc)  # the instruct prompt, byte-identical to training


def judged_doc_to_target(doc: dict) -> str:
    return doc.get("reference") or ""  # logged only: the judge rates the answer on its own


class JudgeFilter:
    """lm-eval filter (any class with ``apply`` will do): every answer of the task at once, judged
    concurrently (``judge_concurrency`` requests in flight) instead of one blocking request per
    document in ``process_results``, with one cache look-up pass and one error for the whole run.
    Each answer becomes a JSON verdict; ``label`` (always null: free text has none) and ``method``
    (how the verdict came: judge, cache, empty) are the keys cotharness eval's predictions writer reads."""

    def __init__(self, **_kwargs):
        pass

    def apply(self, resps, docs):
        import json

        from harness_tasks import judge

        configs = {judge.JudgeConfig.from_doc(doc) for doc in docs}
        if len(configs) > 1:
            raise judge.JudgeError(f"the documents name {len(configs)} different judges; evaluate them separately")
        pairs = [(doc["instruction"], str(r).strip()) for group, doc in zip(resps, docs, strict=True) for r in group]
        verdicts = iter(judge.judge_pairs(pairs, configs.pop()) if pairs else [])
        return [[json.dumps({"label": None, "method": v.source, "score": v.score, "attempts": v.attempts,
                             "reply": v.reply}, ensure_ascii=False) for v in (next(verdicts) for _ in group)]
                for group in resps]


def judged_process_results(doc: dict, results: list) -> dict:
    """Per document: the score (None: unscored, left out of the mean), passing (>= 4, the curation
    threshold; unscored does not pass) and unscored. The score is logged per sample for compare."""
    import json

    from harness_tasks.judge import PASS_SCORE

    score = json.loads(results[0])["score"]
    return {"judge_score": score, "judge_pass": int(score is not None and score >= PASS_SCORE),
            "unscored": int(score is None)}
