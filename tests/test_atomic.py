"""Outputs written whole or not at all, and what a killed run left beside them removed."""
import pytest

from pipeline import report
from pipeline.config import load_config
from pipeline.atomic import replacing_file, replacing_folder, write_text_atomically


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    write_text_atomically(path, "old\n")
    with pytest.raises(RuntimeError), replacing_file(path) as partial:
        partial.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_the_next_write_removes_what_killed_runs_left(tmp_path):
    path = tmp_path / "model.keras"
    left = [tmp_path / ".partial-4242.model.keras", tmp_path / ".previous-4242.model.keras"]
    for stale in left:
        stale.write_text("half-written")
    other = tmp_path / ".partial-4242.other.keras"  # another output's partial is not this one's to remove
    other.write_text("in progress")
    with replacing_file(path) as partial:
        assert partial.name.endswith(".model.keras")  # Keras and matplotlib read the suffix
        partial.write_text("whole")
    assert path.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "model.keras"]


def test_a_folder_replaces_the_old_one_and_stale_staging_is_removed(tmp_path):
    target = tmp_path / "figures"
    (tmp_path / ".partial-4242.figures").mkdir()
    (tmp_path / ".partial-4242.figures" / "half.png").write_text("half")
    (tmp_path / ".previous-4242.figures").mkdir()
    target.mkdir()
    (target / "old.png").write_text("old")
    with replacing_folder(target) as staging:
        (staging / "new.png").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]
    assert sorted(p.name for p in target.iterdir()) == ["new.png"]


def test_report_removes_a_killed_reports_partial(project):
    stale = report.RESULTS.with_name(f".partial-4242.{report.RESULTS.name}")
    stale.parent.mkdir(parents=True)
    stale.write_text("# Res")
    report.run(load_config("params.yaml"))
    assert not stale.exists()
    assert report.RESULTS.read_text().startswith("# Results")
