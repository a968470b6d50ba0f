"""Outputs written whole or not at all, and what a killed run left beside them removed; a full
or read-only disk is one line naming the path, with the old output kept."""
import errno
import os
from pathlib import Path
import subprocess
import sys

import pytest

from pipeline import report
from pipeline.config import load_config
from pipeline.atomic import replacing_file, replacing_folder, write_text_atomically
from pipeline.errors import PipelineError
from tests.conftest import ROOT
from tests.test_train import tiny_cifar_project


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
    Path("README.md").write_text("".join(f"<!-- {name}:start -->\n<!-- {name}:end -->\n" for name in ("results", "verdicts")))
    report.run(load_config("params.yaml"))
    assert not stale.exists()
    assert report.RESULTS.read_text().startswith("# Results")


def refuse(code):
    def replace(source, target):
        raise OSError(code, os.strerror(code), str(target))

    return replace


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "no space left on device"),
                                          (errno.EROFS, "read-only file system")])
def test_a_refused_rename_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, code, reason):
    path = tmp_path / "model.keras"
    path.write_text("old")
    monkeypatch.setattr(os, "replace", refuse(code))
    with pytest.raises(PipelineError) as error:
        write_text_atomically(path, "new")
    assert str(error.value) == f"{path}: cannot write ({reason})"
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_a_full_disk_while_writing_is_one_line_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(PipelineError, match="model.keras: cannot write \\(no space left on device\\)$"):
        with replacing_file(path) as partial:
            partial.write_text("half")
            raise OSError(errno.ENOSPC, "Can't synchronously write data (file write failed: ...\n...)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"] and path.read_text() == "old"


def test_a_folder_where_a_folder_cannot_be_is_one_line(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file, not a folder")
    with pytest.raises(PipelineError, match="models: is a file, where a folder should be$"):
        write_text_atomically(blocker / "model.run_id", "x")
    with pytest.raises(PipelineError, match="cannot write \\(not a directory\\)$"):
        write_text_atomically(blocker / "seeds" / "model.run_id", "x")


@pytest.fixture
def small_disk(project):
    """models/ on a 3 MB tmpfs: room for a tiny training's resume state, not for its model."""
    models = project / "models"
    models.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(models)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield models
    subprocess.run(["umount", str(models)], check=True)


@pytest.mark.slow
def test_a_full_disk_during_training_is_one_line_and_keeps_model_and_state(project, small_disk):
    """h5py reports a full disk with a multi-line OSError, and HDF5 crashed the interpreter at exit
    (exit 139) over the file it could not close: one line, exit 1, the old model and whole state files."""
    import h5py

    tiny_cifar_project(project, epochs=3)
    previous = small_disk / "cifar10_naive.keras"
    previous.write_bytes(b"the previous model")
    command = [sys.executable, "-m", "pipeline", "train", "cifar10_naive"]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no space left on device" in errors[0] and "models/" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert previous.read_bytes() == b"the previous model"
    left = [path for path in small_disk.rglob("*") if path.name.startswith(".partial-")]
    assert left == []
    for state in small_disk.rglob("*.h5"):  # whatever resume state was written is whole
        with h5py.File(state, "r"):
            pass
