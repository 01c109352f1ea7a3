"""The catalogue of user mistakes: one row per mistake, run as the user runs it (the ``cotharness``
process), each checked for its exit status, a single ``error:`` line on stderr that says what to do,
no traceback, and no output file created or changed.

Each ``tests/test_catalogue_<area>.py`` holds a ``CASES`` list of :class:`Case` and parametrises
:func:`check` over it; ``docs/troubleshooting.md`` is written from the same rows
(``python tests/catalogue.py`` rewrites it, the test suite checks it is current).

Placeholders in ``argv`` and in the files a case writes: ``{tmp}`` (the case's own empty folder, the
working directory of the command), ``{tiny}`` (the tiny model), ``{adapter}`` (a LoRA adapter of it),
``{data}`` (a valid labelled NLI CSV), ``{repo}`` (the checkout).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COTHARNESS = Path(sys.executable).parent / "cotharness"
DATA = "id,premise,hypothesis,label\nr1,A man sleeps.,A person sleeps.,1\nr2,A cat runs.,A dog sleeps.,0\n"


@dataclass
class Case:
    id: str
    argv: list[str]
    """after ``cotharness``"""
    exit_code: int
    says: str
    """a part of the one ``error:`` line (after placeholders are filled)"""
    fix: str
    """what the user does about it, in a few words (the troubleshooting page's last column)"""
    files: dict[str, str] = field(default_factory=dict)
    """files to write under ``{tmp}`` before the command (relative path -> text), e.g. a config"""
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 120


def fill(text: str, where: dict[str, Path]) -> str:
    for name, value in where.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check(case: Case, tmp: Path, tiny: Path, adapter: Path) -> None:
    """Run ``case`` in ``tmp`` and assert the catalogue's promise."""
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "data.csv"
    data.write_text(DATA, encoding="utf-8")
    where = {"tmp": tmp, "tiny": tiny, "adapter": adapter, "data": data, "repo": REPO}
    for rel, text in case.files.items():
        path = tmp / fill(rel, where)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fill(text, where), encoding="utf-8")
    before = snapshot(tmp)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "COTHARNESS_DEBUG": "",
           **{k: fill(v, where) for k, v in case.env.items()}}
    proc = subprocess.run([str(COTHARNESS), *(fill(a, where) for a in case.argv)], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=case.timeout)
    shown = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    assert fill(case.says, where) in lines[0], shown
    assert proc.returncode == case.exit_code, shown
    assert snapshot(tmp) == before, f"files created or changed\n{shown}"
