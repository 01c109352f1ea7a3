"""Self-curation, the third step of instruction backtranslation (Humpback): a judge rates every
(instruction, response) pair from 1 to 5 and only the pairs rated at least ``threshold`` are kept.

The judge is asked with the project's one pair rubric (``prompts/rate_pair_system.j2`` and
``rate_pair_user.j2``, shared with the judge-scored evaluation) and answers in free text, its
reasoning first and a last line ``Score: N``, read by ``harness_tasks.judge_score.parse_score``. A
reply without a readable score is re-prompted in the same conversation (the runner's mechanism)
up to ``max_reprompts`` times, then the pair is recorded as unscored (score null, the reason and the
judge's last reply in ``meta.curate``), never given a default score.

Two files: ``<out>.scores.jsonl`` holds every judged pair with its score and the judge's reasoning;
it is the resumable store the runner writes, so a killed run continues where it stopped. ``<out>``
holds the pairs with ``score >= threshold``; it is rebuilt from the scores at the end of every run,
so a rerun with another threshold re-filters without asking the judge again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import prompts
from datagen.engine.answers import InvalidAnswer
from datagen.engine.stage import Stage
from datagen.engine.store import JsonlStore, row_key, sidecar
from harness_tasks import manifest
from harness_tasks.data_files import DataFileError, claim_id, read_rows, row_id, text_cell
from harness_tasks.judge_score import SCORES, parse_score
from harness_tasks.tasks import get_task

STAGE = "curate"
TASK = "instruct"  # the curated pairs train the instruct task
TEMPLATES = ("rate_pair_system", "rate_pair_user")
REPROMPT = ("Your reply could not be used: {error}. Keep your judgement and end your reply with a line of its "
            "own, exactly in this form:\nScore: <1 to 5>")
UNSCORED = "unscored"


class Judgement(NamedTuple):
    score: int
    reasoning: str


def read_judgement(text: str) -> Judgement:
    """The judge's score (``parse_score``) and its reasoning (the reply without a final score line)."""
    score = parse_score(text)
    if score is None:
        raise InvalidAnswer('the reply has no final "Score: N" line with N from 1 to 5')
    lines = text.strip().splitlines()
    last = lines[-1].strip() if lines else ""
    # a last line that is only the verdict ("Score: 4", "**Score:** 4/5") is not reasoning
    reasoning = "\n".join(lines[:-1]).strip() if len(last) <= 24 and parse_score(last) == score else text.strip()
    return Judgement(score, reasoning or text.strip())


def scores_path(out: str | Path) -> Path:
    """``curated.jsonl`` -> ``curated.scores.jsonl``: every judged pair, beside the output."""
    out = Path(out)
    return out.with_name(f"{out.name.removesuffix('.jsonl')}.scores.jsonl")


def _augment_failed(row: dict) -> bool:
    return (row.get("meta") or {}).get("augment", {}).get("status") == "failed"


def _judgeable(row: dict) -> bool:
    return not _augment_failed(row)


def read_pairs(path: str | Path) -> list[dict]:
    """(instruction, response) pairs, e.g. ``datagen backtranslate augment``'s output.

    Rows the augment stage recorded as failed (no instruction) are kept in the list but never judged;
    any other row needs a non-empty instruction and response.
    """
    path = Path(path)
    rows, seen = [], {}
    for index, (lineno, row) in enumerate(read_rows(path)):
        where = f"{path}:{lineno}"
        if not _augment_failed(row):
            for column in ("instruction", "response"):
                text_cell(row, column, where, "curate reads (instruction, response) pairs, e.g. the output of "
                                              "backtranslate augment")
        rid = row_id(row.get("id"), index)
        claim_id(seen, rid, where, lineno)
        rows.append({**row, "id": rid})
    if not rows:
        raise DataFileError(f"{path}: no rows")
    return rows


def distribution(rows: list[dict]) -> dict:
    """How many judged pairs got each score, and how many none (``unscored``)."""
    counts = {str(s): 0 for s in SCORES} | {UNSCORED: 0}
    for row in rows:
        status = row.get("meta", {}).get(STAGE, {}).get("status")
        if status == "ok":
            counts[str(row["score"])] += 1
        elif status == "failed":
            counts[UNSCORED] += 1
    return counts


def curate_stage() -> Stage:
    def user(row):
        return prompts.render("rate_pair_user", instruction=row["instruction"], response=row["response"])

    def result(row, judgement: Judgement):
        return {"score": judgement.score, "judge_reasoning": judgement.reasoning}

    return Stage(STAGE, get_task(TASK), prompts.render("rate_pair_system"), user, answer_model=None, result=result,
                 empty={"score": None, "judge_reasoning": None}, wanted=_judgeable, read=read_judgement,
                 reprompt=REPROMPT, templates=TEMPLATES, report=lambda rows: {"scores": distribution(rows)})


@dataclass
class Filtered:
    kept: int
    judged: int
    counts: dict
    not_judged: int
    """rows the augment stage had failed (no instruction)"""
    pending: int
    """judgeable rows without a score or a failure yet (a stopped run, --limit)"""


def write_curated(out: Path, rows: list[dict], threshold: int, judge: dict, source: Path) -> Filtered:
    """``out``: the pairs of ``rows`` (input order) rated ``>= threshold``, each with its score; its
    manifest: the threshold, the distribution, what was left out and why."""
    scores_file = scores_path(out)
    scored = JsonlStore.read(scores_file) if scores_file.is_file() else {}
    judged = [scored[k] for k in (row_key(r) for r in rows) if k in scored
              and scored[k].get("meta", {}).get(STAGE, {}).get("status") in ("ok", "failed")]
    kept = [{"id": r["id"], "instruction": r["instruction"], "response": r["response"], "score": r["score"],
             "meta": r.get("meta", {})}
            for r in judged if r["meta"][STAGE]["status"] == "ok" and r["score"] >= threshold]
    manifest.write_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    result = Filtered(kept=len(kept), judged=len(judged), counts=distribution(judged),
                      not_judged=sum(map(_augment_failed, rows)),
                      pending=sum(map(_judgeable, rows)) - len(judged))
    unscored = [{"id": r["id"], "reason": r["meta"][STAGE].get("error")}
                for r in judged if r["meta"][STAGE]["status"] == "failed"]
    data = {
        "stage": STAGE, "threshold": threshold, "judge": judge,
        "input": {"path": str(source), "sha256": manifest.sha256_file(source), "rows": len(rows)},
        "rubric": {name: prompts.template_hash(name) for name in TEMPLATES},
        "scores": {"path": str(scores_file), "manifest": str(sidecar(scores_file, "manifest"))},
        "output": {"path": str(out), "rows": len(kept)},
        "pairs": {"input": len(rows), "judged": result.judged, "kept": result.kept,
                  "not_judged_augment_failed": result.not_judged, "pending": result.pending},
        "distribution": result.counts, "unscored": unscored,
        "versions": manifest.package_versions(), "git": manifest.git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    manifest.write_atomic(sidecar(out, "manifest"), json.dumps(data, indent=2, default=str))
    return result
