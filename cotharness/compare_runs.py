"""The runs of ``cotharness compare``: loading them, naming them and pairing their documents.

compare refuses what it cannot pair rather than reporting a figure on something else: a run folder
with several results files (which one?), two runs with one name, runs on different documents
(unless ``--intersect``), a document that differs between runs at the same position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness_tasks import manifest
from harness_tasks.errors import UserError


class CompareError(UserError, ValueError):
    """Runs that cannot be compared as given; the message says what to change."""


class MissingRunError(UserError, FileNotFoundError):
    """A run argument that is not there or holds no lm-eval output."""

SERVER_COUNTS = "the teacher's API server (meta.thoughts.tokens_out, all attempts of a row)"


@dataclass
class Run:
    name: str
    results: dict
    samples: dict[str, dict[int, dict]] = field(default_factory=dict)  # task -> doc_id -> sample
    teacher: dict | None = None  # a teacher thoughts file's provenance (see cotharness.teacher_run)
    files: list[dict] = field(default_factory=list)  # every file read: {"path", "sha256"}
    path: Path | None = None  # what the user named: a directory or a results file


def results_file(path: Path) -> Path:
    """The one lm-eval results file of a run argument: ``path`` itself, or the only one under it."""
    if not path.exists():
        raise MissingRunError(f"{path}: no such folder or file (give lm-eval's --output_path folder of the run)")
    if path.is_file():
        if not (path.name.startswith("results_") and path.suffix == ".json"):
            raise CompareError(f"{path}: neither an lm-eval output directory, a results_*.json nor a .jsonl thoughts file")
        return path
    found = sorted(path.rglob("results_*.json"))
    if not found:
        raise MissingRunError(f"{path}: no lm-eval results_*.json (run lm_eval with --output_path {path})")
    if len(found) > 1:  # lm-eval adds one per run into the same folder; the newest is not always the one meant
        raise CompareError(f"{path} holds {len(found)} lm-eval results files ({', '.join(map(str, found))}); "
                         "give the one to compare as the run argument instead of the folder")
    return found[0]


def load_run(path: Path, name: str | None = None) -> Run:
    """An lm-eval run: its results file and the samples written with it (``--log_samples``)."""
    path = Path(path)
    found = results_file(path)
    stamp = found.stem.removeprefix("results_")
    try:
        results = json.loads(found.read_text())
    except json.JSONDecodeError as err:
        raise CompareError(f"{found}: invalid JSON ({err.msg}, line {err.lineno})") from None
    run = Run(name or _model_name(results, path), results, path=path, files=[_file(found)])
    for task in results["results"]:
        samples_file = found.parent / f"samples_{task}_{stamp}.jsonl"
        if not samples_file.is_file():
            raise MissingRunError(f"{found.parent}: no samples_{task}_{stamp}.jsonl; rerun with --log_samples")
        run.files.append(_file(samples_file))
        run.samples[task] = {}
        for line in samples_file.read_text().splitlines():
            sample = json.loads(line)
            if sample["doc_id"] in run.samples[task]:  # lm-eval logs a document once per filter
                raise CompareError(f"{samples_file}: document {sample['doc_id']} twice (several filters?); "
                                 "cotharness compare reads runs with one filter per task")
            run.samples[task][sample["doc_id"]] = sample
    return run


def _file(path: Path) -> dict:
    return {"path": str(path), "sha256": manifest.sha256_file(path)}


def _model_name(results: dict, path: Path) -> str:
    args = model_args(results)
    if args.get("peft"):
        return Path(str(args["peft"])).name
    return folder_name(path)


def folder_name(path: Path) -> str:
    """A run's fallback name: its folder (for a results file, the lm-eval model folder holding it)."""
    path = Path(path)
    return path.parent.name if path.is_file() and path.suffix == ".json" else path.name


def model_args(results: dict) -> dict:
    """The run's ``--model_args`` as a dict (lm-eval records them as given: a dict or ``k=v,...``)."""
    args = (results.get("config") or {}).get("model_args") or {}
    if isinstance(args, str):
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(args)
    return args if isinstance(args, dict) else {}


def check_names(runs: list[Run], names_given: bool) -> None:
    """One name per run: with the same adapter name twice, every run is named after its folder;
    names that still collide are an error (a table row per name)."""
    if not names_given and len({r.name for r in runs}) < len(runs):
        for r in runs:
            r.name = folder_name(r.path)
    seen: dict[str, list[str]] = {}
    for r in runs:
        seen.setdefault(r.name, []).append(str(r.path))
    twice = {n: p for n, p in seen.items() if len(p) > 1}
    if twice:
        name, paths = next(iter(twice.items()))
        raise CompareError(f"{len(paths)} runs are named {name!r} ({', '.join(paths)}): give each a name with "
                         f"--names {','.join(f'name{i + 1}' for i in range(len(runs)))}")


def _same_document(a: dict, b: dict, fields: list[str] | None) -> str | None:
    """Why samples ``a`` and ``b`` are not of the same document, or None. lm-eval's ``doc_hash`` where
    both have it, else the logged documents; ``fields``: only these must agree (a judged task's
    documents also carry per-run settings such as the judge's cache path)."""
    if fields:
        for f in fields:
            if a["doc"].get(f) != b["doc"].get(f):
                return f"in {f}: {a['doc'].get(f)!r} vs {b['doc'].get(f)!r}"
        return None
    if a.get("doc_hash") and b.get("doc_hash"):
        return None if a["doc_hash"] == b["doc_hash"] else "(doc_hash)"
    if "doc" not in a or "doc" not in b:
        return "(the samples log neither doc_hash nor doc: there is nothing to check them by)"
    return None if a["doc"] == b["doc"] else "(the logged documents)"


def pair_documents(runs: list[Run], task: str, intersect: bool = False,
                   fields: list[str] | None = None) -> tuple[list[int], dict[str, dict] | None]:
    """The document ids every run evaluated, checked to be the same documents, and, where the runs
    cover different documents and ``intersect`` allows it, how many each run lost."""
    ids = {r.name: set(r.samples[task]) for r in runs}
    shared = sorted(set.intersection(*ids.values()))
    first = runs[0].samples[task]
    for r in runs[1:]:
        for d in shared:
            why = _same_document(first[d], r.samples[task][d], fields)
            if why:
                doc = first[d].get("doc") or {}
                raise CompareError(f"{task}: runs {runs[0].name} and {r.name} evaluated different documents: "
                                 f"they differ on document {d} (id {doc.get('id')!r}) {why}")
    if all(len(i) == len(shared) for i in ids.values()):
        return shared, None
    counts = ", ".join(f"{r.name} {len(ids[r.name])}" + (f" ({Path(r.teacher['path']).name})" if r.teacher else "")
                       for r in runs)
    if not intersect:
        raise CompareError(f"{task}: the runs evaluated different documents ({counts}; {len(shared)} in all of "
                         "them); rerun on the same documents, or pass --intersect to compare on the shared ones")
    if not shared:
        raise CompareError(f"{task}: the runs share no document ({counts})")
    return shared, {r.name: {"documents": len(ids[r.name]), "lost": len(ids[r.name]) - len(shared)} for r in runs}


def tokens(runs: list[Run]):
    """(count, name): a tokenizer for counting generated tokens, the first lm-eval run's model, if it
    can be loaded locally; (None, None) otherwise."""
    pretrained = model_args(next(r for r in runs if r.teacher is None).results).get("pretrained")
    if not pretrained:  # a model object given to lm-eval in Python: no name to load a tokenizer by
        return None, None
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(pretrained))
    except (OSError, ValueError):  # a hub id offline, a folder without a tokenizer: no counts
        return None, None
    return (lambda text: len(tok(text, add_special_tokens=False).input_ids)), f"tokenizer of {pretrained}"


def mean_tokens(samples: list[dict], count_tokens, counted_by) -> tuple[float | None, str | None]:
    """Mean generated tokens and who counted them; a teacher's own server counts where it has them."""
    if all("teacher" in s for s in samples):  # answered rows only: a failed row generated no answer
        samples = [s for s in samples if s["teacher"]["answered"]]
        served = [s["teacher"]["tokens_out"] for s in samples if s["teacher"]["tokens_out"] is not None]
        if served:
            return float(np.mean(served)), SERVER_COUNTS
    resps = [s["resps"][0][0] for s in samples if isinstance(s["resps"][0][0], str)]
    if resps and count_tokens:
        return float(np.mean([count_tokens(t) for t in resps])), counted_by
    return None, None
