"""Stage evaluate_<group>@<model>-<seed>: held-out test metrics, logged into the training's run.

metrics/<model>-<seed>.json holds what `dvc metrics show` and `dvc exp show` compare across
models and runs: the saved model's val and test accuracy and loss (both measured here, on the
weights that were saved), the training's wall time, and the MLflow run (and, for the default
seed, the registered version) that holds the rest. The per-class scores and ROC-AUC go to
reports/test/; the run also gets the confusion matrix and, for cats vs dogs, the ROC and
precision-recall curves as figures.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from pipeline import paths, tracking, trained
from pipeline.config import Config
from pipeline.data import loaders
from pipeline.data.split import split_checksum
from pipeline.inference import class_probabilities
from pipeline.models import loss_function
from pipeline.atomic import write_text_atomically
from pipeline.registry import REGISTRY, evaluate_stage
from pipeline.visualize import evaluation


def training_loss(labels: np.ndarray, probabilities: np.ndarray, label_smoothing: float) -> float:
    """The loss training minimised, label smoothing included: for the same weights, the val loss
    here is the val loss of the training curves."""
    n_classes = probabilities.shape[1]
    loss = loss_function(n_classes, label_smoothing)
    if n_classes == 2:  # the model's one sigmoid unit is the probability of class 1
        return float(loss(labels.reshape(-1, 1).astype(np.float32), probabilities[:, 1:]))
    return float(loss(np.eye(n_classes, dtype=np.float32)[labels], probabilities))


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def test_metrics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str], label_smoothing: float) -> dict:
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(len(classes)), zero_division=0)
    metrics = {
        "test_loss": training_loss(labels, probabilities, label_smoothing),
        "test_accuracy": accuracy(labels, probabilities),
        "test_size": int(len(labels)),
        "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for name, p, r, f, s in zip(classes, precision, recall, f1, support)},
    }
    if len(classes) == 2 and len(set(labels.tolist())) == 2:
        metrics["test_roc_auc"] = float(roc_auc_score(labels, probabilities[:, 1]))
    return metrics


def split_probabilities(config: Config, name: str, model: keras.Model, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's labels and the class probabilities of the model as it is used (mirror
    average included): the weights scored are the weights kept."""
    params = config.model(name)
    images, labels = loaders.load_arrays(config, REGISTRY[name].task, split, params.image_size)
    return labels, class_probabilities(model, images, params.mirror_average)


def val_metrics(config: Config, name: str, model: keras.Model) -> dict:
    labels, probabilities = split_probabilities(config, name, model, "val")
    smoothing = config.model(name).label_smoothing
    return {"val_accuracy": accuracy(labels, probabilities), "val_loss": training_loss(labels, probabilities, smoothing)}


def compared_metrics(val: dict, test: dict, wall_time_s: float | None) -> dict:
    """The few numbers `dvc metrics show` lists per model, rounded as they are compared."""
    numbers = {**val, "test_accuracy": test["test_accuracy"], "test_loss": test["test_loss"]}
    metrics = {key: round(value, 4) for key, value in numbers.items()}
    if wall_time_s is not None:
        metrics["train_wall_time_s"] = wall_time_s
    return metrics


def training_wall_time(name: str, seed: int) -> float | None:
    summary = paths.train_summary(name, seed)
    return json.loads(summary.read_text()).get("wall_time_s") if summary.exists() else None


def write_confusion(name: str, seed: int, classes: list[str], labels: np.ndarray, predicted: np.ndarray) -> None:
    """Each test image's actual and predicted class, for `dvc plots`."""
    write_text_atomically(paths.confusion_file(name, seed),
                          pd.DataFrame({"actual": [classes[i] for i in labels],
                                        "predicted": [classes[i] for i in predicted]}).to_csv(index=False))


def draw_figures(name: str, seed: int, classes: list[str], labels: np.ndarray, probabilities: np.ndarray,
                 folder: Path) -> list[Path]:
    """The confusion matrix (kept beside its CSV) and, for two classes, the ROC and
    precision-recall curves of the second class's probability: the figures the run holds."""
    title = f"{paths.run_key(name, seed)}: test accuracy {accuracy(labels, probabilities):.3f}"
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), labels=range(len(classes)))
    drawn = [evaluation.plot_confusion(matrix, classes, title, paths.confusion_file(name, seed).with_suffix(".png"))]
    if len(classes) == 2 and len(set(labels.tolist())) == 2:
        drawn += evaluation.plot_binary_curves(labels, probabilities[:, 1], classes[1], title, folder)
    return drawn


def run(config: Config, name: str, seed: int) -> None:
    config.check_seed(seed)
    spec, stage = REGISTRY[name], evaluate_stage(name, seed)
    run_id = tracking.recorded_run_id(name, seed)  # the model and its run must agree before anything is scored
    model = trained.load_model(name, seed)
    classes = loaders.class_names(config, spec.task)
    labels, probabilities = split_probabilities(config, name, model, "test")
    metrics = test_metrics(labels, probabilities, classes, config.model(name).label_smoothing)
    val = val_metrics(config, name, model)
    # The run's id (and the registered version's number) beside the numbers: `dvc exp show` finds the MLflow run.
    compared = {**compared_metrics(val, metrics, training_wall_time(name, seed)), "mlflow_run_id": run_id}

    with tracking.model_run(name, seed, spec.task, stage) as run, tempfile.TemporaryDirectory() as scratch:
        registered = tracking.version_of_run(name, run_id) if seed == config.seed else None
        if registered is not None:
            compared["registered_version"] = int(registered.version)
        write_text_atomically(paths.eval_metrics(name, seed), json.dumps(compared, indent=2) + "\n")
        write_text_atomically(paths.test_summary(name, seed), json.dumps(metrics, indent=2) + "\n")
        write_confusion(name, seed, classes, labels, probabilities.argmax(axis=1))
        figures = draw_figures(name, seed, classes, labels, probabilities, Path(scratch))

        tracking.log_splits(paths.split_dir(config, spec.task), spec.task, ["test"], split_checksum(spec.task))
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
        mlflow.log_metrics({f"saved_model_{key}": compared[key] for key in ("val_accuracy", "val_loss")})
        for cls, values in metrics["per_class"].items():
            mlflow.log_metrics({f"test_{key}_{cls}": float(v) for key, v in values.items() if key != "support"})
        for figure in figures:
            mlflow.log_artifact(str(figure), "figures")
        mlflow.log_artifact(str(paths.eval_metrics(name, seed)), "metrics")
        mlflow.log_artifact(str(paths.test_summary(name, seed)), "metrics")
        if registered is not None:
            tracking.record_scores(name, run.info.run_id, val["val_accuracy"], metrics["test_accuracy"])
    print(f"{paths.run_key(name, seed)}: test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}")
