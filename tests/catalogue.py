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


# --- docs/troubleshooting.md: the same rows as a table (python tests/catalogue.py [--check]) ---

PAGE = REPO / "docs/troubleshooting.md"
START = "<!-- catalogue:start (python tests/catalogue.py writes this) -->"
END = "<!-- catalogue:end -->"
SHOWN = {"{tmp}/": "", "{tmp}": ".", "{repo}/": "", "{repo}": ".", "{tiny}": "MODEL_DIR",
         "{adapter}": "ADAPTER_DIR", "{data}": "data.csv"}
"""How the placeholders read on the page: paths relative to the directory the command runs in."""


def modules(folder: Path | None = None) -> list:
    """Every ``tests/test_catalogue_*.py`` that has a ``CASES`` list, in file-name order. A module may set
    ``AREA`` (the page's heading for its rows); else the heading comes from the file name."""
    import importlib

    here = str(Path(__file__).resolve().parent)
    for where in dict.fromkeys([here, str(folder or here)]):
        if where not in sys.path:
            sys.path.insert(0, where)
    found = []
    for path in sorted(Path(folder or here).glob("test_catalogue_*.py")):
        module = importlib.import_module(path.stem)
        if getattr(module, "CASES", None) is not None:
            found.append(module)
    return found


def _shown(text: str) -> str:
    for placeholder, shown in SHOWN.items():
        text = text.replace(placeholder, shown)
    return text


def _code(text: str) -> str:
    """``text`` as an inline code span in a table cell (backticks inside it and pipes are kept)."""
    text = " ".join(text.split()).replace("|", "\\|")
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(folder: Path | None = None) -> str:
    """The section between the page's markers: one table per catalogue module (of ``folder``, default
    this file's)."""
    import shlex

    parts = []
    for module in modules(folder):
        area = getattr(module, "AREA", None) or module.__name__.removeprefix("test_catalogue_").replace("_", " ")
        parts += [f"### {area[:1].upper()}{area[1:]}", "", "| command | what you see | what to do |", "|---|---|---|"]
        for case in module.CASES:
            command = shlex.join(["cotharness", *(_shown(a) for a in case.argv)])
            env = " ".join(f"{k}={shlex.quote(_shown(v))}" for k, v in case.env.items())
            command = f"{env} {command}" if env else command
            seen = f"{_code('error: ... ' + _shown(case.says) + ' ...')} (exit {case.exit_code})"
            parts.append(f"| {_code(command)} | {seen} | {_cell(case.fix)} |")
        parts.append("")
    if not parts:
        parts = ["No entries yet.", ""]
    return "\n".join(parts)


def updated(page: str, folder: Path | None = None) -> str:
    if START not in page or END not in page:
        raise SystemExit(f"{PAGE}: the markers {START!r} and {END!r} are missing")
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render(folder)}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Write docs/troubleshooting.md's table from the catalogue's CASES.")
    p.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = p.parse_args(argv)
    text = PAGE.read_text(encoding="utf-8")
    new = updated(text)
    if args.check:
        if new != text:
            print("docs/troubleshooting.md is out of date: run python tests/catalogue.py")
            return 1
        return 0
    PAGE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
