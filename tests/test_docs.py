"""The documentation: the site builds strictly (every page in the nav, no broken link or anchor), the
README's links land on pages and headings that exist, and the troubleshooting page is current."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import catalogue
from conftest import REPO

ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=root,
                          env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = build(REPO, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_site_builds_strictly(site):
    assert (site / "index.html").exists() and (site / "troubleshooting/index.html").exists()
    assert (site / "performance/index.html").exists()


def test_a_broken_link_or_anchor_fails_the_build(tmp_path):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs/tasks.md"
    page.write_text(page.read_text() + "\n[a heading that is not there](eval.md#no-such-heading)\n")
    proc = build(tmp_path, tmp_path / "site")
    assert proc.returncode != 0 and "no-such-heading" in proc.stdout + proc.stderr


def test_every_page_is_in_the_nav():
    import yaml

    def pages(nav):
        for item in nav:
            for value in item.values() if isinstance(item, dict) else [item]:
                yield from pages(value) if isinstance(value, list) else [value]

    nav = set(pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]))
    assert nav == {p.name for p in (REPO / "docs").glob("*.md") if p.name != "README.md"}


def test_the_readme_links_land(site):
    """The README is not part of the site: its links into docs/ are checked against the built pages."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 10
    for path, anchor in links:
        assert (REPO / path).exists(), path
        if path.endswith(".md") and path != "docs/index.md":
            html = (site / Path(path).relative_to("docs").with_suffix("") / "index.html").read_text()
            assert not anchor or f'id="{anchor}"' in html, f"{path}#{anchor}"


def test_the_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    for command in ("make demo", "make test", "cotharness datagen", "cotharness train", "cotharness eval",
                    "cotharness compare"):
        assert command in readme, command


def test_the_troubleshooting_page_is_current():
    proc = subprocess.run([sys.executable, "tests/catalogue.py", "--check"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_troubleshooting_table_comes_from_the_catalogue_modules(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", sys.path[:])
    monkeypatch.delitem(sys.modules, "test_catalogue_zz_docs_example", raising=False)
    assert catalogue.render(tmp_path) == "No entries yet.\n"  # no catalogue module yet
    (tmp_path / "test_catalogue_zz_docs_example.py").write_text(textwrap.dedent('''
        from catalogue import Case

        AREA = "training configs"
        CASES = [
            Case(id="typo", argv=["train", "--config", "{tmp}/c.yaml", "--set", "training.lerning_rate=1"],
                 exit_code=2, says="did you mean 'learning_rate'?", fix="Fix the key's spelling | see --help.",
                 env={"CUDA_VISIBLE_DEVICES": ""}),
            Case(id="model", argv=["eval", "--model_args", "pretrained={tiny}"], exit_code=2,
                 says="`{tiny}` has no config.json", fix="Point pretrained= at a model directory."),
        ]
    '''))
    text = catalogue.render(tmp_path)
    assert text.splitlines()[:4] == ["### Training configs", "", "| command | what you see | what to do |",
                                     "|---|---|---|"]
    rows = text.splitlines()[4:6]
    assert rows[0] == ("| `CUDA_VISIBLE_DEVICES='' cotharness train --config c.yaml --set training.lerning_rate=1` "
                       "| `error: ... did you mean 'learning_rate'? ...` (exit 2) "
                       "| Fix the key's spelling \\| see --help. |")
    assert rows[1].startswith("| `cotharness eval --model_args pretrained=MODEL_DIR` | "
                              "``error: ... `MODEL_DIR` has no config.json ...`` (exit 2) |")
    page = catalogue.updated(f"intro\n{catalogue.START}\nold\n{catalogue.END}\nrest\n", tmp_path)
    assert page == f"intro\n{catalogue.START}\n{text}{catalogue.END}\nrest\n"
