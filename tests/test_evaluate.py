"""Evaluation: test metrics, DVC's confusion plot, logging into the training run (per seed; the default
seed's scores go to its registered version), refusing a model its run does not match, one-line errors."""
import json
import math
import os
import shutil
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from pipeline import evaluate, paths, tracking, train
from pipeline.__main__ import main
from pipeline.config import load_config
from pipeline.data import loaders
from pipeline.models import build_model
from pipeline.registry import evaluate_stage, train_stage
from tests.fixtures import CIFAR_CLASSES, make_cats_dogs_split, make_cifar10_split, set_params

SEED, OTHER_SEED = 42, 1  # params.yaml's default seed, and a further one
# model -> (task, classes, how to build its split, its params for a tiny run)
TINY = {
    "cifar10_naive": ("cifar10", CIFAR_CLASSES,
                      lambda root: make_cifar10_split(root, {"train": 4, "val": 1, "test": 2}),
                      {"epochs": 1, "batch_size": 16}),
    "cats_dogs_naive": ("cats_dogs", ["cats", "dogs"],
                        lambda root: make_cats_dogs_split(root, {"train": 6, "val": 2, "test": 3}),
                        {"epochs": 1, "batch_size": 8, "image_size": 48}),
}


def tiny_project(project, name):
    task, _, make_split, params = TINY[name]
    make_split(project / "data" / "split" / task)
    set_params(project / "params.yaml", **{f"train.{name}.{key}": value for key, value in params.items()})
    return load_config(project / "params.yaml")


def experiment_runs(task):
    return mlflow.search_runs(experiment_names=[task])


def dvc_confusion_plot(project, csv_path):
    """What `dvc plots show` makes of the CSV with the confusion template, as DVC's JSON."""
    repo = project / "dvc_repo"
    (repo / csv_path).parent.mkdir(parents=True)
    shutil.copy(csv_path, repo / csv_path)
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    shown = subprocess.run([*dvc, "plots", "show", "--json", "--template", "confusion", "-x", "actual",
                            "-y", "predicted", str(csv_path)], cwd=repo, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.mark.parametrize("name", list(TINY))
def test_evaluate_writes_metrics_confusion_and_logs_into_the_training_run(project, name):
    task, classes, _, _ = TINY[name]
    config = tiny_project(project, name)
    train.run(config, name, SEED)
    run_id = paths.run_id_file(name, SEED).read_text().strip()
    assert len(experiment_runs(task)) == 1
    # what a killed evaluation left beside its outputs: the next one removes it
    stale = [path.with_name(f".partial-99999.{path.name}") for path in
             (paths.eval_metrics(name, SEED), paths.confusion_file(name, SEED),
              paths.confusion_file(name, SEED).with_suffix(".png"))]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half-written")

    evaluate.run(config, name, SEED)
    assert not [path for path in stale if path.exists()]

    _, labels = loaders.load_arrays(config, task, "test", config.model(name).image_size)
    metrics = json.loads(paths.test_summary(name, SEED).read_text())
    assert metrics["test_size"] == len(labels)
    assert math.isfinite(metrics["test_loss"]) and metrics["test_loss"] >= 0
    assert 0 <= metrics["test_accuracy"] <= 1
    assert set(metrics["per_class"]) == set(classes)
    for index, cls in enumerate(classes):
        values = metrics["per_class"][cls]
        assert set(values) == {"precision", "recall", "f1", "support"}
        assert values["support"] == int((labels == index).sum())
        assert all(0 <= values[key] <= 1 for key in ("precision", "recall", "f1"))
    if len(classes) == 2:
        assert 0 <= metrics["test_roc_auc"] <= 1
    else:
        assert "test_roc_auc" not in metrics

    # What `dvc metrics show` lists: a few numbers, measured on the saved (last epoch's) weights.
    # Beside them, the run they were logged into and the version it registered (`dvc exp show` finds both).
    compared = json.loads(paths.eval_metrics(name, SEED).read_text())
    assert set(compared) == {"val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_wall_time_s",
                             "mlflow_run_id", "registered_version"}
    assert (compared["mlflow_run_id"], compared["registered_version"]) == (run_id, 1)
    last_epoch = pd.read_csv(paths.history_file(name, SEED)).iloc[-1]
    assert compared["val_accuracy"] == pytest.approx(last_epoch["val_accuracy"], abs=1e-4)
    assert compared["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=5e-5)
    summary = json.loads(paths.train_summary(name, SEED).read_text())
    assert compared["train_wall_time_s"] == summary["wall_time_s"]

    # One row per test image; the matrix it makes agrees with the metrics.
    confusion = pd.read_csv(paths.confusion_file(name, SEED))
    assert list(confusion.columns) == ["actual", "predicted"]
    assert len(confusion) == len(labels)
    assert sorted(confusion["actual"]) == sorted(classes[i] for i in labels)
    assert set(confusion["predicted"]) <= set(classes)
    matrix = pd.crosstab(confusion["actual"], confusion["predicted"])
    assert matrix.to_numpy().sum() == len(labels)
    correct = confusion["actual"] == confusion["predicted"]
    assert metrics["test_accuracy"] == pytest.approx(correct.mean())
    for cls in classes:
        actual = confusion["actual"] == cls
        assert metrics["per_class"][cls]["recall"] == pytest.approx((correct & actual).sum() / actual.sum())
    assert paths.confusion_file(name, SEED).with_suffix(".png").stat().st_size > 0

    # DVC reads it as its confusion plot: one datapoint per row, with actual and predicted.
    # (Both models write it through the same code; the two dvc processes are asked once.)
    if name == "cifar10_naive":
        plot = dvc_confusion_plot(project, paths.confusion_file(name, SEED))
        (entry,) = plot["data"][paths.confusion_file(name, SEED).as_posix()]
        values = entry["content"]["data"]["values"]
        assert len(values) == len(labels)
        assert sorted((v["actual"], v["predicted"]) for v in values) == \
            sorted(zip(confusion["actual"], confusion["predicted"]))

    # Logged into the training run itself: no new run, same id.
    runs = experiment_runs(task)
    assert list(runs["run_id"]) == [run_id]
    assert paths.run_id_file(name, SEED).read_text().strip() == run_id
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dvc_stage.evaluate"] == evaluate_stage(name, SEED) == f"evaluate_{task}@{name}-42"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run.data.metrics["test_loss"] == pytest.approx(metrics["test_loss"])
    if len(classes) == 2:
        assert run.data.metrics["test_roc_auc"] == pytest.approx(metrics["test_roc_auc"])
    for cls in classes:
        for key in ("precision", "recall", "f1"):
            assert run.data.metrics[f"test_{key}_{cls}"] == pytest.approx(metrics["per_class"][cls][key])
    assert "best_val_accuracy" in run.data.metrics  # the training's own metrics are still there
    client = mlflow.MlflowClient()
    figures = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert f"figures/{name}-42.png" in figures  # the confusion matrix
    assert ({"figures/roc.png", "figures/precision_recall.png"} <= figures) == (len(classes) == 2)
    assert {f"metrics/{name}-42.json"} <= {a.path for a in client.list_artifacts(run_id, "metrics")}
    # The default seed's model is the registered one: its version carries the scores and the alias.
    version = client.get_model_version_by_alias(name, tracking.CHAMPION)
    assert version.run_id == run_id
    assert float(version.tags["test_accuracy"]) == pytest.approx(metrics["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize("name", list(TINY))
def test_val_loss_is_the_training_loss_label_smoothing_included(project, name):
    """The same weights give the same val loss in metrics/ as in the training curves. (With
    mirror averaging, or in bfloat16, the curves come from another computation: not here.)"""
    config = tiny_project(project, name)
    set_params(project / "params.yaml", **{f"train.{name}.label_smoothing": 0.2, f"train.{name}.mirror_average": False,
                                           f"train.{name}.precision": "float32"})
    config = load_config(project / "params.yaml")
    train.run(config, name, SEED)
    evaluate.run(config, name, SEED)
    last_epoch = pd.read_csv(paths.history_file(name, SEED)).iloc[-1]
    compared = json.loads(paths.eval_metrics(name, SEED).read_text())
    assert compared["val_loss"] == pytest.approx(last_epoch["val_loss"], abs=1e-4)


def test_a_further_seed_is_scored_into_its_own_run_and_leaves_the_registry_alone(project):
    name = "cifar10_naive"
    config = tiny_project(project, name)
    for seed in (SEED, OTHER_SEED):
        train.run(config, name, seed)
    default_run, further_run = (tracking.recorded_run_id(name, seed) for seed in (SEED, OTHER_SEED))
    client = mlflow.MlflowClient()

    evaluate.run(config, name, OTHER_SEED)
    compared = json.loads(paths.eval_metrics(name, OTHER_SEED).read_text())
    assert paths.eval_metrics(name, OTHER_SEED).name == "cifar10_naive-1.json"
    assert compared["mlflow_run_id"] == further_run and "registered_version" not in compared
    assert not paths.eval_metrics(name, SEED).exists()
    further = client.get_run(further_run)
    assert further.data.metrics["test_accuracy"] == pytest.approx(compared["test_accuracy"], abs=5e-5)
    assert further.data.tags["dvc_stage.evaluate"] == evaluate_stage(name, OTHER_SEED)
    assert "test_accuracy" not in client.get_run(default_run).data.metrics
    (version,) = client.search_model_versions(f"name = '{name}'")  # the default seed's: untouched
    assert version.run_id == default_run and "test_accuracy" not in version.tags
    assert not client.get_registered_model(name).aliases

    evaluate.run(config, name, SEED)
    assert client.get_model_version_by_alias(name, tracking.CHAMPION).run_id == default_run


def test_evaluate_refuses_a_model_its_run_does_not_match_and_logs_nowhere(project, capsys):
    """The model file, its run id file and its training summary must come from one training:
    another run's id, another model file or no summary, and evaluate stops with one line before
    it scores or logs anything. Put back, the same files are scored into their own run."""
    name = "cifar10_naive"
    config = tiny_project(project, name)
    train.run(config, name, SEED)
    run_id = paths.run_id_file(name, SEED).read_text().strip()
    with mlflow.start_run() as other:  # another run in the same store
        pass
    model_file, run_id_file, summary = (paths.model_file(name, SEED), paths.run_id_file(name, SEED),
                                        paths.train_summary(name, SEED))
    mismatch = (f"error: {model_file} and {run_id_file} do not come from the same training (one was "
                f"interrupted); run `dvc repro {train_stage(name, SEED)}` again")

    def another_model():
        build_model(name, config.model(name)).save(model_file)

    tamperings = [(lambda: run_id_file.write_text(other.info.run_id + "\n"), mismatch),
                  (another_model, mismatch),
                  (summary.unlink, f"error: {summary}: not found; run `dvc repro {train_stage(name, SEED)}` first")]
    originals = {path: path.read_bytes() for path in (model_file, run_id_file, summary)}
    for tamper, message in tamperings:
        tamper()
        capsys.readouterr()
        assert main(["evaluate", name]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [message]
        for path, content in originals.items():
            path.write_bytes(content)

    assert not paths.eval_metrics(name, SEED).exists() and not paths.confusion_file(name, SEED).exists()
    runs = mlflow.search_runs(search_all_experiments=True)
    assert "metrics.test_accuracy" not in runs.columns  # neither the training's run nor the other
    assert "tags.dvc_stage.evaluate" not in runs.columns
    assert main(["evaluate", name]) == 0
    assert "test_accuracy" in mlflow.get_run(run_id).data.metrics
    assert "test_accuracy" not in mlflow.get_run(other.info.run_id).data.metrics


def test_missing_model_is_one_error_line(project, capsys):
    tiny_project(project, "cifar10_naive")
    assert main(["evaluate", "cifar10_naive"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {paths.model_file('cifar10_naive', SEED)}: not found; "
                   "run `dvc repro train_cifar10@cifar10_naive-42` first"]
    assert not paths.eval_metrics("cifar10_naive", SEED).exists()
    assert not paths.confusion_file("cifar10_naive", SEED).exists()
