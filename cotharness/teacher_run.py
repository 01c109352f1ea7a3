"""A datagen ``thoughts`` file as a ``cotharness compare`` run: the teacher model as a baseline row.

The teacher answered the rows of a thoughts JSONL (``cotharness datagen thoughts``, or the seed
format). To compare it with lm-eval runs, each document of a reference lm-eval run is matched to the
teacher row with the same input fields (whitespace-normalised; lm-eval doc ids are positions, so ids
are not used), the gold labels are checked to agree, and the teacher's answer becomes an lm-eval-like
sample, scored by the task's own ``metrics.score`` and aggregated by compare exactly as lm-eval
aggregates a run. A failed row (no answer) is an unparsed answer, like an lm-eval parse failure.
Reference documents the file lacks are missing from the teacher's run: compare refuses such a run
unless asked to compare on the documents all runs share (``--intersect``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from cotharness.compare_runs import CompareError, MissingRunError, Run
from datagen.engine.store import sidecar
from harness_tasks import manifest, metrics
from harness_tasks.data_files import read_rows
from harness_tasks.tasks import get_task

STAGE = "thoughts"


def _key(row: dict, fields: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(" ".join(str(row[f]).split()) for f in fields)


def load_teacher(path: Path, reference: Run, name: str | None = None, task_name: str = "nli_cot") -> Run:
    """The teacher's answers in ``path`` on the documents of ``reference`` (an lm-eval run).

    The task is the manifest's ``task``, else ``task_name``; the run covers the reference's lm-eval
    task of that name. Documents the file lacks are left out (counts in ``run.teacher``).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingRunError(f"{path}: no such teacher thoughts file")
    info_file = sidecar(path, "manifest")
    try:
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    except json.JSONDecodeError as err:
        raise CompareError(f"{info_file}: invalid JSON ({err.msg}, line {err.lineno})") from None
    task_name = info.get("task") or task_name
    try:
        task = get_task(task_name)
    except KeyError as err:
        raise CompareError(f"{path}: {err.args[0]}") from None
    s = task.schema

    candidates: dict[tuple, list[tuple[int, dict]]] = {}
    for lineno, row in read_rows(path):
        missing = [f for f in task.fields if not isinstance(row.get(f), str)]
        missing += [k for k in (s.thought_key, s.label_key) if k not in row]
        if missing:
            raise CompareError(f"{path}:{lineno}: no {', '.join(missing)}: not a thoughts file of task {task_name} "
                             "(`cotharness datagen thoughts` output)")
        candidates.setdefault(_key(row, task.fields), []).append((lineno, row))
    rows = [r for rows in candidates.values() for _, r in rows]
    metas = [r.get("meta", {}).get(STAGE) or {} for r in rows]
    models = Counter(m["model"] for m in metas if m.get("model"))
    model = models.most_common(1)[0][0] if models else info.get("model")
    backends = Counter(m["backend"] for m in metas if m.get("backend"))
    # Only the lm-eval task of the same name: a teacher's reasoned answers do not belong in the table
    # of a variant scored otherwise (nli_direct ranks two answer words by likelihood).
    lm_tasks = [t for t in reference.samples if t == task_name]
    if not lm_tasks:
        raise CompareError(f"{path}: {reference.name} has no {task_name} results (it has "
                         f"{sorted(reference.samples)}); set the teacher's task with --teacher-task")

    files = [{"path": str(f), "sha256": manifest.sha256_file(f)} for f in (path, info_file) if f.is_file()]
    run = Run(name or model or path.stem, results={}, path=path, files=files)
    run.teacher = {"path": str(path), "sha256": files[0]["sha256"], "model": model or info.get("model"),
                   "backend": info.get("backend") or (backends.most_common(1)[0][0] if backends else None),
                   "task": task_name, "manifest": str(info_file) if info else None, "rows": len(rows),
                   "reference_run": reference.name, "documents": {}}
    for lm_task in lm_tasks:
        unused = {k: list(v) for k, v in candidates.items()}
        samples, wrong_gold = {}, []
        for doc_id, ref in reference.samples[lm_task].items():
            doc = ref["doc"]
            if any(f not in doc for f in task.fields):
                raise CompareError(f"{reference.name}: {lm_task} documents lack the fields {task.fields} of "
                                 f"task {task_name}")
            gold = s.to_label(doc.get("label"))
            found = unused.get(_key(doc, task.fields))
            if not found:
                continue
            # same inputs twice: take a row with the same gold label, else one without any
            golds = [s.to_label(r.get("true_label")) for _, r in found]
            pick = 0 if gold is None else next((i for i, g in enumerate(golds) if g == gold),
                                               next((i for i, g in enumerate(golds) if g is None), None))
            if pick is None:
                lineno, row = found[0]
                wrong_gold.append(f"document {doc_id} (id {doc.get('id')!r}) has gold {doc.get('label')!r} in "
                                  f"{reference.name} but true_label {row.get('true_label')!r} in {path}:{lineno} "
                                  f"(id {row.get('id')!r})")
                continue
            lineno, row = found.pop(pick)
            samples[doc_id] = _sample(task, doc_id, ref, row, lineno)
        if wrong_gold:
            more = f" (and {len(wrong_gold) - 1} more)" if len(wrong_gold) > 1 else ""
            raise CompareError(f"{lm_task}: gold labels disagree: {wrong_gold[0]}{more}")
        if not samples:
            raise CompareError(f"{path}: no row matches a document of {reference.name} ({lm_task}) on "
                             f"{', '.join(task.fields)}; is it the same data?")
        run.samples[lm_task] = samples
        run.teacher["documents"][lm_task] = {"matched": len(samples),
                                             "missing": len(reference.samples[lm_task]) - len(samples)}
    return run


def _sample(task, doc_id: int, ref: dict, row: dict, lineno: int) -> dict:
    """An lm-eval-like sample: what compare reads (``doc``, ``doc_hash``, ``resps``, the metrics)."""
    s = task.schema
    meta = row.get("meta", {}).get(STAGE) or {}
    pred = None if meta.get("status") == "failed" else s.to_label(row.get(s.label_key))
    thought = row.get(s.thought_key)
    answered = pred is not None and isinstance(thought, str)
    tokens = meta.get("tokens_out")
    scores = metrics.score(s.to_label(ref["doc"].get("label")), pred, s)
    return {"doc_id": doc_id, "doc": ref["doc"], "doc_hash": ref.get("doc_hash"),
            "resps": [[task.answer(thought, pred) if answered else ""]], "metrics": list(scores), **scores,
            "teacher": {"id": row.get("id"), "line": lineno, "answered": answered,
                        "tokens_out": tokens if answered and isinstance(tokens, int) else None}}
