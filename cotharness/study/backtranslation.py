"""The builders of a backtranslation study's own stages (``inverse``, ``augment``, ``curate``): a stage's
resolved config (``graph._backtranslation_stages``) -> the step's typed config -> the step function the
``datagen backtranslate`` commands call. The backward and forward trainings are ordinary ``train`` stages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness_tasks.errors import WorkFailed


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def inverse(stage, say: Callable[[str], None]) -> None:
    from datagen.backtranslate.inverse import invert

    c = stage.config  # the study's own folder: its files are this stage's to replace
    done = invert(Path(c["input"]), Path(c["out"]), c["instruction_column"], c["response_column"],
                  c["dev_fraction"], c["seed"], force=True)
    say(f"{stage.id}: {len(done.train)} train and {len(done.dev)} dev pairs"
        + (f"; {len(done.duplicates)} repeated pair(s) left out" if done.duplicates else ""))


def augment(stage, say: Callable[[str], None]) -> None:
    from datagen.backtranslate.steps import AugmentRun
    from datagen.backtranslate.steps import augment as run

    c = stage.config
    # the study owns the file: a row asked with another request is stale (redo it)
    done = run(AugmentRun(input=Path(c["input"]), out=Path(c["out"]), model=c["model"], backend=c["backend"],
                          server_url=c["server_url"], adapter=_path(c["adapter"]), load_in_4bit=c["load_in_4bit"],
                          device=c["device"], batch_size=c["batch_size"], concurrency=c["concurrency"],
                          settings=dict(c["settings"]), limit=c["limit"], max_cost=c["max_cost"],
                          redo_changed=True, usable_out=Path(c["usable_out"])))
    if done.tally.stopped:
        raise WorkFailed(f"{stage.id}: stopped early ({done.tally.stopped}); the rows done are kept: rerun to continue")
    # a failed row (an echo or an empty instruction after every re-ask) is the backward model's answer, not
    # an outage: asking again gives the same; it is counted and left out of the pairs, never kept silently
    failed = done.tally.failed_rows
    say(f"{stage.id}: {done.usable} pair(s) with an instruction -> {c['usable_out']}"
        + (f"; {failed} response(s) got none (listed in {c['out']})" if failed else ""))


def curate(stage, say: Callable[[str], None]) -> None:
    from datagen.backtranslate.steps import CurateRun
    from datagen.backtranslate.steps import curate as run

    c = stage.config
    done = run(CurateRun(input=Path(c["input"]), out=Path(c["out"]), backend=c["backend"],
                         server_url=c["server_url"], settings=dict(c["settings"]), concurrency=c["concurrency"],
                         batch_size=c["batch_size"], max_cost=c["max_cost"], redo_changed=True, retry_failed=True))
    f = done.filtered
    if done.tally.stopped or f.pending:
        raise WorkFailed(f"{stage.id}: stopped early ({done.tally.stopped or f'{f.pending} pair(s) not judged'}); "
                         "the scores are kept: rerun to continue")
    counts = ", ".join(f"{k}: {v}" for k, v in f.counts.items())
    say(f"{stage.id}: scores {counts}; kept {f.kept} of {f.judged} (score >= {done.settings.threshold})")
