"""README.md and docs/: short, every link resolves, and the results table is the one `report`
generates from what is recorded, never typed by hand."""
import re
import shutil
import subprocess
import sys

import pytest

from pipeline import report
from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MARKERS = report.readme_markers("results")
LINK = re.compile(r"\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[[^]]*\]\(([^)\s]+)\)")


def readme_table(table: str) -> str:
    return report.around_table(README.read_text(), table)[1]


def tracked_files() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()


def headings(page) -> set[str]:
    """GitHub's anchors of a page's headings."""
    titles = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


def test_readme_is_short_with_results_and_a_figure_on_its_first_screen():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:60])
    assert MARKERS[0] in first_screen and MARKERS[1] in first_screen and "| `cifar10_naive` |" in first_screen
    assert re.search(r"!\[[^]]*\]\([^)]+\.png\)", first_screen)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # commands, not links
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in headings(resolved), f"{page.name}: {target} names no heading"


@pytest.mark.parametrize("table, title", report.README_TABLES.items())
def test_readme_shows_the_tables_of_the_committed_results(table, title):
    results = (ROOT / "reports" / "results.md").read_text()
    assert readme_table(table) == report.section_table(results, title), (
        f"README.md's {table} table differs from reports/results.md's: run `python -m pipeline readme`")


def test_committed_results_are_what_report_generates(tmp_path):
    """`report` run over the files git holds (records, dvc.lock, code, params) writes the committed results.md."""
    for name in tracked_files():
        if (ROOT / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tmp_path / name)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "pipeline", "report"], cwd=tmp_path, check=True, capture_output=True,
                   env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert (tmp_path / "reports" / "results.md").read_text() == (ROOT / "reports" / "results.md").read_text()


def test_readme_figures_are_committed_stage_outputs():
    """Every figure the README shows is in git and written by a stage of dvc.yaml, so a rerun redraws it."""
    from dvc.repo import Repo

    outputs = [out.def_path for stage in Repo(str(ROOT)).index.stages for out in stage.outs]
    tracked = set(tracked_files())
    figures = IMAGE.findall(README.read_text())
    assert len(figures) >= 6  # curves, accuracy against size and time, confusion, Grad-CAM, filters
    for figure in figures:
        assert figure in tracked, f"{figure} is not committed"
        assert any(figure == out or figure.startswith(out.rstrip("/") + "/") for out in outputs), (
            f"{figure} is no stage's output")
