"""`dvc exp run --temp` runs the stages in a copy of the project under .dvc/tmp/exps that is
deleted afterwards: the training's MLflow run must land in the project's own store."""
import os
import shutil
import subprocess
import sys

import mlflow
import pytest
import yaml

from tests.conftest import ROOT
from tests.test_serving import NAME, tiny_cats_dogs

pytestmark = pytest.mark.slow  # real git and dvc, a training in a temporary copy
GIT_IDENTITY = {"user.name": "test", "user.email": "test@example.com"}


def command(project, *args, environment):
    result = subprocess.run(list(args), cwd=project, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_temp_experiment_logs_into_the_projects_store(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    tiny_cats_dogs(project)
    stage = {"cmd": f"{sys.executable} -m pipeline train {NAME}", "deps": ["data/split/cats_dogs"],
             "params": [f"train.{NAME}"],
             "outs": [f"models/{NAME}-42.keras", {f"models/{NAME}-42.run_id": {"cache": False}}]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}))
    (project / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/optuna.db\n/reports/\n/metrics/\n")
    # The default store (no MLFLOW_TRACKING_URI): sqlite:///mlflow.db, relative to the project.
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "PIPELINE_DATA_MIRROR")}
    environment.update(PYTHONPATH=str(ROOT), DVC_NO_ANALYTICS="1", MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1")
    command(project, "git", "init", "-q", environment=environment)
    for key, value in GIT_IDENTITY.items():
        command(project, "git", "config", key, value, environment=environment)
    command(project, sys.executable, "-m", "dvc", "init", "-q", environment=environment)
    command(project, "git", "add", "-A", environment=environment)
    command(project, "git", "commit", "-qm", "tiny project", environment=environment)

    command(project, sys.executable, "-m", "dvc", "exp", "run", "--temp", environment=environment)

    # Nothing of it in the workspace but the store; the copy it ran in is gone.
    assert not (project / "models").exists()
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))
    store = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("cats_dogs").experiment_id])
    assert [(run.info.run_name, run.info.status) for run in runs] == [(f"{NAME} seed 42", "FINISHED")]
    assert runs[0].info.artifact_uri.startswith((project / "mlartifacts").as_uri())
    assert (project / "mlartifacts").is_dir() and any((project / "mlartifacts").rglob(f"{NAME}-42.keras"))
    version = client.get_registered_model(NAME).latest_versions[0]
    assert version.run_id == runs[0].info.run_id
