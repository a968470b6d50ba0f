"""Every MLflow run says where it came from: the commit, a dirty tree, the DVC experiment."""
import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from cnn_study_run_context import source_tags

GIT_IDENTITY = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
PLAIN_RUN = """
import json, mlflow, sys
mlflow.set_tracking_uri(sys.argv[1])
with mlflow.start_run() as run:
    pass
print(json.dumps(mlflow.get_run(run.info.run_id).data.tags))
"""


@pytest.fixture
def repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / "params.yaml").write_text("seeds: [42]\n")
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", *GIT_IDENTITY, "commit", "-qm", "first"], check=True)
    return tmp_path


def head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def test_the_commit_and_whether_tracked_files_changed(repository, monkeypatch):
    for variable in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(variable, raising=False)
    assert source_tags() == {"git_commit": head(), "git_dirty": "false"}
    (repository / "untracked.txt").write_text("not the project's")
    assert source_tags()["git_dirty"] == "false"
    (repository / "params.yaml").write_text("seeds: [42, 1]\n")
    assert source_tags()["git_dirty"] == "true"


def test_the_dvc_experiment_from_what_dvc_sets(repository, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "try1")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", head())
    tags = source_tags()
    assert (tags["dvc_exp_name"], tags["dvc_exp_baseline_rev"]) == ("try1", head())


def test_outside_a_repository_no_commit_is_claimed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert "git_commit" not in source_tags() and "git_dirty" not in source_tags()


@pytest.mark.skipif(not any(entry.value.startswith("cnn_study_run_context")
                            for entry in importlib.metadata.entry_points(group="mlflow.run_context_provider")),
                    reason="the project is not installed (pip install -e .): MLflow does not know the provider")
def test_a_run_started_outside_the_pipeline_is_tagged_too(repository):
    """A plain mlflow.start_run, as a notebook would make it: MLflow asks the installed provider."""
    environment = {**{key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")},
                   "DVC_EXP_NAME": "try1"}
    result = subprocess.run([sys.executable, "-c", PLAIN_RUN, f"sqlite:///{repository / 'mlflow.db'}"],
                            capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    tags = json.loads(result.stdout.strip().splitlines()[-1])
    assert tags["git_commit"] == head() and tags["dvc_exp_name"] == "try1"
