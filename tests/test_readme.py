"""README.md and docs/: short, every link resolves, and the results tables are the ones `report`
generates from the recorded runs (every model, every seed), never typed by hand."""
import re
import shutil
import subprocess
import sys

import pytest

from pipeline.config import load_config
from pipeline.report import collect, tables
from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MARKERS = tables.markers("results")
LINK = re.compile(r"\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[[^]]*\]\(([^)\s]+)\)")


def tracked_files() -> list[str]:
    """The files git holds or would hold once committed (the index, and new files not ignored)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [name for name in listed if (ROOT / name).is_file()]


def headings(page) -> set[str]:
    """GitHub's anchors of a page's headings."""
    titles = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


def test_readme_is_short_with_results_on_its_first_screen():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:60])
    assert MARKERS[0] in first_screen and MARKERS[1] in first_screen and "| `cifar10_naive` |" in first_screen


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


def test_readme_shows_the_tables_of_the_recorded_runs(monkeypatch):
    """Between its markers, README.md holds the summary and the verdicts `report` makes of the
    runs recorded in the repository (metrics/ and reports/training/, every model and seed)."""
    monkeypatch.chdir(ROOT)  # the runs' files are read where the stages write them
    runs = collect.runs(load_config(ROOT / "params.yaml"))
    text = README.read_text()
    for name in tables.README_TABLES:
        assert tables.around_markers(text, name)[1]  # each table has its markers, and something between them
    assert tables.readme_with_tables(text, runs) == text, (
        "README.md's tables differ from the recorded runs': run `dvc repro report`")


def test_committed_results_are_what_report_generates(tmp_path):
    """`report` run over the files git holds (records, code, params, README) writes the committed
    results.md and README.md."""
    for name in tracked_files():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    done = subprocess.run([sys.executable, "-m", "pipeline", "report"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    for page in ("reports/results.md", "README.md"):
        assert (tmp_path / page).read_text() == (ROOT / page).read_text(), f"{page}: run `dvc repro report`"


def test_readme_figures_are_committed_stage_outputs():
    """Every figure the README shows is in git and written by a stage of dvc.yaml, so a rerun redraws
    it (the report's comparisons: the stages whose figures DVC caches are not in git)."""
    from dvc.repo import Repo

    outputs = [out.def_path for stage in Repo(str(ROOT)).index.stages for out in stage.outs]
    tracked = set(tracked_files())
    figures = IMAGE.findall(README.read_text())
    for figure in figures:
        assert figure in tracked, f"{figure} is not committed"
        assert any(figure == out or figure.startswith(out.rstrip("/") + "/") for out in outputs), (
            f"{figure} is no stage's output")
