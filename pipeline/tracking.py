"""MLflow set-up in one place: the store, one experiment per task, one run per model.

The training stage opens a model's run and writes its id to a DVC output; evaluate,
visualize and predict reopen that same run, so everything about a model sits together.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import mlflow
import mlflow.keras.save
import numpy as np

from pipeline import layout
from pipeline.errors import PipelineError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACTS_DIR = Path("mlartifacts")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def use_experiment(task: str) -> str:
    """Point MLflow at the store and the task's experiment, creating it on first use."""
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(task)
    if experiment is None:
        # A local artifact folder beside the SQLite store keeps everything in the project.
        location = None if "MLFLOW_TRACKING_URI" in os.environ else ARTIFACTS_DIR.resolve().as_uri()
        experiment_id = mlflow.create_experiment(task, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit() -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return result.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextlib.contextmanager
def training_run(model: str, task: str, tags: dict[str, str], resume_run_id: str | None = None):
    """A run named after the model (or the interrupted one being resumed); its id is
    written for the later stages to reopen. An exception inside ends the run FAILED."""
    use_experiment(task)
    run_tags = {"model": model, "task": task, "dvc_stage": f"train@{model}", "git_commit": git_commit(), **tags}
    with mlflow.start_run(run_id=resume_run_id, run_name=None if resume_run_id else model, tags=run_tags) as run:
        run_id_path = layout.run_id_file(model)
        run_id_path.parent.mkdir(parents=True, exist_ok=True)
        run_id_path.write_text(run.info.run_id + "\n")
        yield run


@contextlib.contextmanager
def model_run(model: str, task: str, stage: str):
    """Reopen the training run of `model` so a later stage logs beside the training."""
    run_id_path = layout.run_id_file(model)
    if not run_id_path.exists():
        raise PipelineError(f"{run_id_path}: no training run recorded; run `dvc repro train@{model}` first")
    use_experiment(task)
    run_id = run_id_path.read_text().strip()
    try:
        run = mlflow.start_run(run_id=run_id)
    except mlflow.exceptions.MlflowException as error:
        raise PipelineError(f"MLflow run {run_id} of {model} not found in {tracking_uri()}: {error.message}") from None
    with run:
        mlflow.set_tag(f"dvc_stage.{stage}", f"{stage}@{model}")
        yield run


def _save_example_into_new_folder(save_example):
    """mlflow.keras (3.17) writes the input example before creating the model folder; create it first."""
    def wrapper(mlflow_model, input_example, path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        return save_example(mlflow_model, input_example, path, *args, **kwargs)

    return wrapper


if not hasattr(mlflow.keras.save._save_example, "__wrapped__"):
    mlflow.keras.save._save_example = _save_example_into_new_folder(mlflow.keras.save._save_example)
    mlflow.keras.save._save_example.__wrapped__ = True


def log_keras_model(model, example: np.ndarray) -> None:
    """Log a Keras model to the active run with its signature and an input example."""
    import keras
    import tensorflow as tf

    signature = mlflow.models.infer_signature(example, model.predict(example, verbose=0))
    # Naming the requirements spares MLflow a subprocess that reloads the model to guess them.
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}"]
    mlflow.keras.log_model(model, name="model", signature=signature, input_example=example,
                           pip_requirements=requirements)
