"""MLflow set-up in one place: the store, one experiment per task, one run per training, the registry.

Each training (a model under a seed) opens a run and writes its id beside the model, a DVC
output; evaluate and visualize reopen that same run, so everything about a training sits
together. The default seed's training registers its photo classifier as a new version of the
model's registered model; its evaluation tags the version with its val and test accuracy and
moves the `champion` alias to the best val accuracy among the versions trained on the same split.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow

from cnn_study_run_context import source_tags
from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.registry import train_stage

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACTS_DIR = Path("mlartifacts")
SQLITE = "sqlite:///"
# Opens the experiment on MLflow's model-training page (runs table, charts) rather than its GenAI one.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
CHAMPION = "champion"
DATASET_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
MAX_DIGEST = 36  # MLflow stores at most 36 characters of a dataset's digest
PROBE_TIMEOUT_S = 5  # to connect, and again for the first answer


def project_root() -> Path:
    """The project's folder. `dvc exp run --temp` and `--queue` run the stages in a copy under
    .dvc/tmp/exps that is thrown away afterwards; DVC points DVC_ROOT at the original project."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def in_project(url: str) -> str:
    """A relative SQLite URL (sqlite:///mlflow.db) made absolute against the project's folder."""
    path = url[len(SQLITE):] if url.startswith(SQLITE) else None
    if path is None or path.startswith("/") or path in ("", ":memory:"):
        return url
    return SQLITE + str(project_root() / path)


def tracking_uri() -> str:
    return in_project(os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))


def connect() -> str:
    """Point MLflow at the store; return its URI. A tracking server must answer first, within
    seconds: MLflow's own client retries a refused connection with growing pauses
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES) and stays silent for minutes before it says so."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        check_reachable(uri)
    elif uri.startswith(SQLITE) and uri != SQLITE + ":memory:":
        create_store_once(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def create_store_once(uri: str) -> None:
    """MLflow creates a SQLite store's tables when a process first opens it; two processes doing
    so at once (a DVC queue running experiments side by side) collide in its schema migrations.
    A file lock beside the store lets one create it while the other waits."""
    from filelock import FileLock

    quiet = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables..."
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # a command's error stays its one line
    try:
        with FileLock(f"{uri[len(SQLITE):]}.lock"):
            mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    finally:
        quiet.setLevel(level)


def check_reachable(uri: str) -> None:
    """The server's /health must answer, as an MLflow server's does (or ask for a login)."""
    parts = urllib.parse.urlsplit(uri)
    address = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no credentials in messages
    try:
        urllib.request.urlopen(f"{address.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S).close()
        return
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return
        reason = f"it answers /health with HTTP {error.code}: not an MLflow tracking server, or not a working one"
    except OSError as error:  # refused, unknown host, no answer in time (URLError is an OSError)
        reason = f"unreachable: {getattr(error, 'reason', None) or error}"
    raise PipelineError(f"MLflow tracking server {address}: {reason}; start it, or point MLFLOW_TRACKING_URI "
                        f"at one that runs")


def use_experiment(task: str) -> str:
    """Point MLflow at the store and the task's experiment, creating it on first use."""
    uri = connect()
    experiment = mlflow.get_experiment_by_name(task)
    if experiment is None:
        # A local artifact folder beside a SQLite store keeps everything in the project;
        # a tracking server keeps the artifacts where it was told to.
        location = (project_root() / ARTIFACTS_DIR).as_uri() if uri.startswith(SQLITE) else None
        experiment_id = mlflow.create_experiment(task, artifact_location=location, tags=EXPERIMENT_KIND)
    else:
        experiment_id = experiment.experiment_id
        for key, value in EXPERIMENT_KIND.items():
            if experiment.tags.get(key) != value:  # an experiment made before the kind was set
                mlflow.MlflowClient().set_experiment_tag(experiment_id, key, value)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def training_run(model: str, task: str, stage: str, tags: dict[str, str], resume_run_id: str | None = None):
    """A run named after the model and its seed (or the interrupted one being resumed), tagged
    with its DVC stage. An exception inside ends the run FAILED. The training writes the run's
    id beside the model when both are done, for the later stages to reopen."""
    use_experiment(task)
    run_tags = {"model": model, "task": task, "dvc_stage": stage, **source_tags(), **tags}
    run_name = f"{model} seed {tags['seed']}"
    # System metrics (CPU, memory, disk, network; GPU where nvidia-ml-py finds one) are sampled every 10 s.
    with mlflow.start_run(run_id=resume_run_id, run_name=None if resume_run_id else run_name, tags=run_tags,
                          log_system_metrics=True) as run:
        yield run


@contextlib.contextmanager
def model_run(model: str, seed: int, task: str, stage: str):
    """Reopen the training run of `model` under `seed` so a later stage logs beside the training."""
    run_id = recorded_run_id(model, seed)
    use_experiment(task)
    try:
        run = mlflow.start_run(run_id=run_id)
    except mlflow.exceptions.MlflowException as error:
        raise PipelineError(f"MLflow run {run_id} of {model} not found in {tracking_uri()}: {error.message}") from None
    with run:
        kind = stage.partition("@")[0].partition("_")[0]  # evaluate, visualize: a tag's key may hold no @
        mlflow.set_tag(f"dvc_stage.{kind}", stage)
        yield run


def recorded_run_id(model: str, seed: int) -> str:
    """The run that made the model file, checked against the training summary written with it:
    a training killed between writing its files leaves them disagreeing, and none is trusted."""
    rerun = f"run `dvc repro {train_stage(model, seed)}`"
    run_id_path, summary_path = paths.run_id_file(model, seed), paths.train_summary(model, seed)
    model_path = paths.model_file(model, seed)
    for path in (model_path, run_id_path, summary_path):
        if not path.exists():
            raise PipelineError(f"{path}: not found; {rerun} first")
    run_id, summary = run_id_path.read_text().strip(), json.loads(summary_path.read_text())
    if summary.get("mlflow_run_id") != run_id or summary.get("model_sha256") != file_sha256(model_path):
        raise PipelineError(f"{model_path} and {run_id_path} do not come from the same training "
                            f"(one was interrupted); {rerun} again")
    return run_id


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_splits(split_root: Path, task: str, parts: list[str], checksum: str) -> None:
    """The split parts the active run used, as MLflow datasets: the folder (or file) as
    source, the split's checksum as digest, so the run page says which data it saw."""
    from mlflow.data.meta_dataset import MetaDataset

    for part in parts:
        found = [path for path in (split_root / part, split_root / f"{part}.npz") if path.exists()]
        if not found:
            raise PipelineError(f"{split_root / part}: not found; run `dvc repro split@{task}` first")
        dataset = MetaDataset(local_source(project_root() / found[0]), name=f"{task}/{part}",
                              digest=checksum[:MAX_DIGEST])
        mlflow.log_input(dataset, context=DATASET_CONTEXTS[part], tags={"split_sha256": checksum})


def local_source(path: Path):
    """MLflow's dataset source for a local path (asked for by type: a bare path matches two)."""
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    return get_dataset_source_from_json(json.dumps({"uri": path.as_uri()}), source_type="local")


def tag_version(name: str, version: str, tags: dict[str, str]) -> None:
    """Tag a registered version with the run that made it and what it was trained on."""
    client = mlflow.MlflowClient()
    for key, value in {"run_id": mlflow.active_run().info.run_id, **tags}.items():
        client.set_model_version_tag(name, version, key, value)


def version_of_run(name: str, run_id: str):
    """The registered version of `name` that the run `run_id` made, or None."""
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def record_scores(name: str, run_id: str, val_accuracy: float, test_accuracy: float) -> str | None:
    """Tag the run's version with its scores and point `champion` at the best version.

    The champion is chosen on validation accuracy, among the versions trained on the same split
    as this one (a subset-profile version is never weighed against a full-size one): choosing
    by test accuracy would be model selection on the test set. The test accuracy is a tag for
    reporting. Ties go to the version that holds the alias already, then to the older one.
    Returns the champion's version (None: nothing registered).
    """
    client = mlflow.MlflowClient()
    version = version_of_run(name, run_id)
    if version is None:
        print(f"warning: run {run_id} registered no version of {name}; no scores recorded")
        return None
    client.set_model_version_tag(name, version.version, "val_accuracy", f"{val_accuracy:.6f}")
    client.set_model_version_tag(name, version.version, "test_accuracy", f"{test_accuracy:.6f}")
    try:
        current = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        current = None
    split = version.tags.get("split_sha256")
    rivals = [v for v in client.search_model_versions(f"name = '{name}'")
              if "val_accuracy" in v.tags and v.tags.get("split_sha256") == split]
    best = max(rivals, key=lambda v: (float(v.tags["val_accuracy"]), str(v.version) == current, -int(v.version)))
    if str(best.version) != current:
        client.set_registered_model_alias(name, CHAMPION, str(best.version))
    return str(best.version)
