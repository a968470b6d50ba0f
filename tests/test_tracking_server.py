"""Team mode: a real `mlflow server` on 127.0.0.1 with a PostgreSQL backend store and a local
artifact root; a training and an evaluation report to it over HTTP.

PostgreSQL is started as in the Optuna test (`.ci/run` installs it; without it the test fails
with one line saying how to install it).
"""
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from pipeline import serving, tracking
from tests.fixtures import jpeg_bytes
from tests.test_serving import NAME, free_port, stop, tiny_cats_dogs, train_and_evaluate, wait_until_up
from tests.test_search_postgres import postgres  # noqa: F401  (the throwaway PostgreSQL server)

pytestmark = pytest.mark.slow  # a real tracking server on PostgreSQL


@pytest.fixture
def tracking_server(postgres, tmp_path):  # noqa: F811
    """`mlflow server` against the database `mlflow`, artifacts proxied into a local folder."""
    home = tmp_path / "server"
    home.mkdir()
    port, artifacts = free_port(), home / "artifacts"
    log = open(home / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{postgres}/mlflow",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, home / "server.log")
        yield url, artifacts
    finally:
        stop(process)
        log.close()


def test_training_and_evaluation_report_to_a_tracking_server(tracking_server, project, monkeypatch):
    url, artifacts = tracking_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    tiny_cats_dogs(project)
    run_id = train_and_evaluate(project)

    client = mlflow.MlflowClient(tracking_uri=url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == f"{NAME} seed 42"
    assert "test_accuracy" in run.data.metrics and "system/cpu_utilization_percentage" in run.data.metrics
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    contexts = {d.dataset.name: next(t.value for t in d.tags if t.key == "mlflow.data.context")
                for d in run.inputs.dataset_inputs}
    assert contexts == {"cats_dogs/train": "training", "cats_dogs/val": "validation", "cats_dogs/test": "test"}

    # The run's model, and the registered version that evaluation made champion.
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert {(m.name, m.source_run_id) for m in models} == {(serving.LOGGED_NAME, run_id)}  # one per training
    version = client.get_model_version_by_alias(NAME, tracking.CHAMPION)
    assert str(version.version) == "1" and version.run_id == run_id and version.tags["run_id"] == run_id
    assert float(version.tags["test_accuracy"]) == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)

    # The files went through the server into its artifact root, not into the project.
    assert not (project / "mlartifacts").exists() and not (project / "mlruns").exists()
    stored = {path.name for path in artifacts.rglob("*") if path.is_file()}
    assert {f"{NAME}-42.keras", "MLmodel", f"{NAME}-42_curves.png"} <= stored

    # Another machine needs only the server's address to use the champion.
    photo = jpeg_bytes(seed=3)
    champion = mlflow.pyfunc.load_model(f"models:/{NAME}@{tracking.CHAMPION}")
    answer = champion.predict(pd.DataFrame({serving.IMAGE_COLUMN: [photo]}))
    assert answer.loc[0, "label"] in ("cats", "dogs")
    assert sum(answer.loc[0, "probabilities"].values()) == pytest.approx(1, abs=1e-5)
