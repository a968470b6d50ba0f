"""DVC experiments and MLflow runs find each other: a training run is tagged with the DVC
experiment and commit that made it, `dvc exp show` prints the run's id, and a queue of
experiments run two at a time leaves one finished MLflow run each, with no SQLite lock error."""
import json
import os
import subprocess
import sys
import time

import mlflow
import pytest
import yaml

from tests.conftest import ROOT
from tests.test_serving import NAME, tiny_cats_dogs

pytestmark = pytest.mark.slow  # real git and dvc, trainings in DVC's copies of the project
GIT_IDENTITY = {"user.name": "test", "user.email": "test@example.com"}
TRAIN = f"train_cats_dogs@{NAME}-42"  # the stage the training run's dvc_stage tag names
QUEUE_TIMEOUT_S = 900


def stages() -> dict:
    """The pipeline's own training and evaluation commands, on the tiny split only (a stage of
    this small dvc.yaml cannot have an @ in its name: it is `train`, and `evaluate`)."""
    run = f"{NAME}-42"
    return {
        "train": {"cmd": f"{sys.executable} -m pipeline train {NAME} 42", "deps": ["data/split/cats_dogs"],
                "params": [f"train.{NAME}"],
                "outs": [f"models/{run}.keras", {f"models/{run}.run_id": {"cache": False}},
                         {f"reports/training/{run}.json": {"cache": False}},
                         {f"reports/history/{run}.csv": {"cache": False}}]},
        "evaluate": {"cmd": f"{sys.executable} -m pipeline evaluate {NAME} 42",
                   "deps": [f"models/{run}.keras", f"models/{run}.run_id", "data/split/cats_dogs"],
                   "metrics": [{f"metrics/{run}.json": {"cache": False}}],
                   "outs": [{f"reports/test/{run}.json": {"cache": False}}, f"reports/confusion/{run}.csv",
                            f"reports/confusion/{run}.png"]},
    }


def environment() -> dict:
    # The default store (no MLFLOW_TRACKING_URI): sqlite:///mlflow.db in the project, even from DVC's copies.
    kept = {key: value for key, value in os.environ.items()
            if key not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "PIPELINE_DATA_MIRROR")}
    return {**kept, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}


def command(project, *args) -> str:
    result = subprocess.run(list(args), cwd=project, env=environment(), capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def dvc(project, *args) -> str:
    return command(project, sys.executable, "-m", "dvc", *args)


@pytest.fixture
def repository(tmp_path):
    """A git + DVC project: the tiny cats/dogs split (DVC-tracked) and the two stages, committed."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    tiny_cats_dogs(project)
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages()}))
    (project / ".gitignore").write_text("/mlflow.db\n/mlflow.db.lock\n/mlartifacts/\n/optuna.db\n")
    command(project, "git", "init", "-q")
    for key, value in GIT_IDENTITY.items():
        command(project, "git", "config", key, value)
    dvc(project, "init", "-q")
    dvc(project, "add", "-q", "data/split/cats_dogs")
    command(project, "git", "add", "-A")
    command(project, "git", "commit", "-qm", "tiny project")
    return project


def client(project) -> mlflow.MlflowClient:
    store = f"sqlite:///{project / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=store, registry_uri=store)


def training_runs(project) -> list:
    found = client(project)
    return found.search_runs([found.get_experiment_by_name("cats_dogs").experiment_id],
                             "tags.dvc_stage = '" + TRAIN + "'")


def test_an_experiment_s_run_is_tagged_and_dvc_exp_show_finds_it(repository):
    commit = command(repository, "git", "rev-parse", "HEAD").strip()
    dvc(repository, "exp", "run", "-n", "try1", "-S", f"train.{NAME}.epochs=2", "evaluate")

    (run,) = training_runs(repository)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dvc_exp_name"] == "try1"
    assert run.data.tags["dvc_exp_baseline_rev"] == commit and run.data.tags["git_commit"] == commit
    assert run.data.params["epochs"] == "2"
    shown = dvc(repository, "exp", "show", "--json")
    assert run.info.run_id in shown and "try1" in shown
    metrics = json.loads((repository / f"metrics/{NAME}-42.json").read_text())
    assert metrics["mlflow_run_id"] == run.info.run_id and metrics["registered_version"] == 1
    figures = {artifact.path for artifact in client(repository).list_artifacts(run.info.run_id, "figures")}
    assert {f"figures/{name}.png" for name in (f"{NAME}-42", "roc", "precision_recall")} <= figures
    logged = mlflow.MlflowClient(f"sqlite:///{repository / 'mlflow.db'}").search_logged_models(
        experiment_ids=[run.info.experiment_id])
    assert [model.name for model in logged] == ["classifier"]  # one model per training, once in the UI


def test_a_queue_of_three_run_two_at_a_time_leaves_three_runs(repository):
    rates = ["0.001", "0.002", "0.003"]
    for rate in rates:
        dvc(repository, "exp", "run", "--queue", "-S", f"train.{NAME}.learning_rate={rate}", "evaluate")
    dvc(repository, "queue", "start", "-j", "2")
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        status = dvc(repository, "queue", "status")
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(5)
    dvc(repository, "queue", "stop", "--kill")
    assert status.count("Success") == 3, status

    listed = dvc(repository, "exp", "list")  # "\t756bee4 [amort-yoni]" per experiment
    runs = training_runs(repository)
    assert sorted(run.data.params["learning_rate"] for run in runs) == rates
    assert all(run.info.status == "FINISHED" for run in runs)
    names = {run.data.tags["dvc_exp_name"] for run in runs}
    assert len(names) == 3 and all(f"[{name}]" in listed for name in names)
