"""The command line as installed: a `pipeline` command (and `python -m pipeline`) from any folder."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.__main__ import main
from tests.conftest import ROOT

DISTRIBUTION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
USER_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def test_the_package_declares_the_pipeline_command():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"pipeline": "pipeline.__main__:main"}


def installed(folder) -> bool:
    """Whether Python finds the project's distribution from `folder` (the source tree's own
    .egg-info, found from the project's folder, does not count)."""
    probe = f"import importlib.metadata as m; m.distribution({DISTRIBUTION!r})"
    return subprocess.run([sys.executable, "-c", probe], cwd=folder, env=USER_ENV, capture_output=True).returncode == 0


def test_installed_the_command_runs_from_any_folder(tmp_path):
    """After `pip install -e .` (as .ci/run does), from a folder outside the project, without PYTHONPATH."""
    if not installed(tmp_path):
        pytest.skip("the project is not installed in this environment (pip install -e .)")
    script = Path(sys.executable).parent / "pipeline"  # the console command beside the interpreter
    for command in ([sys.executable, "-m", "pipeline", "--help"], [str(script), "--help"]):
        done = subprocess.run(command, cwd=tmp_path, env=USER_ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "predict" in done.stdout, done.stderr


def test_without_params_anywhere_above_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["split", "cats_dogs"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: params.yaml: file not found (run from the project root or pass --params)"]
