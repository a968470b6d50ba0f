"""Training: outputs, MLflow record, determinism, resume after a kill, NaN guard, VGG16 feature caching."""
import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline import layout, train
from pipeline.config import load_config
from pipeline.errors import ConfigError, PipelineError
from tests.conftest import ROOT
from tests.fixtures import make_cats_dogs_split, make_cifar10_split, make_vgg16_standin, set_params

TINY_CIFAR = {"train": 6, "val": 2, "test": 2}


def tiny_cifar_project(project, epochs=2, **extra):
    make_cifar10_split(project / "data" / "split" / "cifar10", TINY_CIFAR)
    set_params(project / "params.yaml", **{"train.cifar10_naive.epochs": epochs,
                                           "train.cifar10_naive.batch_size": 16, **extra})
    return load_config(project / "params.yaml")


def test_training_writes_outputs_and_mlflow_run(project):
    config = tiny_cifar_project(project)
    train.run(config, "cifar10_naive")

    history = pd.read_csv(layout.history_file("cifar10_naive"))
    assert list(history["epoch"]) == [1, 2]
    metrics = json.loads(layout.train_metrics("cifar10_naive").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["best"]["val_accuracy"] <= 1
    assert layout.model_file("cifar10_naive").exists()

    run_id = layout.run_id_file("cifar10_naive").read_text().strip()
    runs = mlflow.search_runs(experiment_names=["cifar10"], filter_string="attributes.run_name = 'cifar10_naive'")
    assert list(runs["run_id"]) == [run_id]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.001" and run.data.params["batch_size"] == "16"
    assert run.data.tags["dvc_stage"] == "train@cifar10_naive"
    steps = mlflow.MlflowClient().get_metric_history(run_id, "val_accuracy")
    assert sorted(m.step for m in steps) == [1, 2]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "figures")}
    assert "figures/cifar10_naive_curves.png" in artifacts

    model = mlflow.keras.load_model(f"runs:/{run_id}/model")
    images = np.random.default_rng(0).uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
    predictions = model.predict(images, verbose=0)
    assert predictions.shape == (3, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1, rtol=1e-5)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(images)), predictions, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("schedule, final_rate", [("constant", 0.001), ("cosine", 0.0)])
def test_learning_rate_schedule_runs_over_all_epochs(project, schedule, final_rate):
    config = tiny_cifar_project(project, epochs=2, **{"train.cifar10_naive.lr_schedule": schedule})
    model, _ = train.fit_model(config, "cifar10_naive", train.hyperparameters(config, "cifar10_naive"))
    assert float(model.optimizer.learning_rate) == pytest.approx(final_rate, abs=1e-9)


def test_same_params_give_the_same_numbers(project):
    config = tiny_cifar_project(project)
    hp = train.hyperparameters(config, "cifar10_naive")
    first = train.fit_model(config, "cifar10_naive", hp, workdir=project / "a")[1]
    second = train.fit_model(config, "cifar10_naive", hp, workdir=project / "b")[1]
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_nan_loss_fails_the_run(project, monkeypatch):
    config = tiny_cifar_project(project)
    real = train.loaders.encode_labels

    def poisoned(labels, n_classes):
        # NaN targets, not NaN pixels: some CPU kernels turn relu(NaN) into 0, which would hide them
        return np.full_like(real(labels, n_classes), np.nan)

    monkeypatch.setattr(train.loaders, "encode_labels", poisoned)
    with pytest.raises(PipelineError, match="loss became nan"):
        train.run(config, "cifar10_naive")
    run = mlflow.get_run(layout.run_id_file("cifar10_naive").read_text().strip())
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("torn_backup", [False, True], ids=["clean-kill", "kill-while-saving"])
def test_killed_training_resumes_from_its_last_epoch(project, torn_backup):
    tiny_cifar_project(project, epochs=40)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipeline", "train", "cifar10_naive"]
    log = project / "models" / ".backup" / "cifar10_naive" / "train" / "history.csv"
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before_kill = len(pd.read_csv(log))
    assert 3 <= done_before_kill < 40, "the kill should land part-way through training"
    if torn_backup:  # as if the kill had landed while Keras wrote the weights
        weights = log.parent / "state" / "latest.weights.h5"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    run_id = layout.run_id_file("cifar10_naive").read_text().strip()

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming the interrupted run {run_id}" in second.stdout
    # Keras logs "Epoch k/40" for each epoch it trains: the resumed process starts after the kill.
    trained_again = [line for line in second.stdout.splitlines() if line.startswith("Epoch ")]
    assert len(trained_again) <= 40 - done_before_kill + (2 if torn_backup else 1)
    history = pd.read_csv(layout.history_file("cifar10_naive"))
    assert list(history["epoch"]) == list(range(1, 41))
    assert layout.run_id_file("cifar10_naive").read_text().strip() == run_id
    assert mlflow.get_run(run_id).info.status == "FINISHED"


@pytest.fixture
def tiny_vgg_project(project):
    make_cats_dogs_split(project / "data" / "split" / "cats_dogs", {"train": 6, "val": 2, "test": 2})
    make_vgg16_standin(project / "data" / "raw" / "vgg16" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    return project


@pytest.mark.parametrize("name", ["cats_dogs_vgg16_finetune", "cats_dogs_vgg16_finetune_aug"])
def test_vgg16_trains_head_then_top_block(tiny_vgg_project, name, monkeypatch):
    set_params(tiny_vgg_project / "params.yaml", **{f"train.{name}.image_size": 32, f"train.{name}.epochs": 2,
                                                    f"train.{name}.fine_tune.epochs": 1})
    config = load_config("params.yaml")
    calls = []
    real = train.frozen_features
    monkeypatch.setattr(train, "frozen_features", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    model, history = train.fit_model(config, name, train.hyperparameters(config, name))
    assert list(history["phase"]) == ["head", "head", "fine_tune"]
    # blocks 1-4 run once per image: below block5 when it fine-tunes on fixed input, else the whole base
    assert calls == (["block4_pool"] * 2 if name == "cats_dogs_vgg16_finetune" else ["block5_pool"] * 2)
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    base = model.get_layer("vgg16")
    assert {layer.name for layer in base.layers if layer.trainable_weights} == \
        {"block5_conv1", "block5_conv2", "block5_conv3"}
    assert trainable  # head and block5 train; nothing below block5 does
    assert not any(layer.trainable_weights for layer in base.layers if layer.name.startswith(("block1", "block4")))
    image = np.full((1, 32, 32, 3), 120.0, dtype="float32")
    assert model.predict(image, verbose=0).shape == (1, 1)


def test_frozen_vgg16_runs_its_base_once_per_image(tiny_vgg_project, monkeypatch):
    set_params(tiny_vgg_project / "params.yaml", **{"train.cats_dogs_vgg16_frozen.image_size": 32,
                                                    "train.cats_dogs_vgg16_frozen.epochs": 3})
    config = load_config("params.yaml")
    calls = []
    real = train.frozen_features
    monkeypatch.setattr(train, "frozen_features", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    model, history = train.fit_model(config, "cats_dogs_vgg16_frozen",
                                     train.hyperparameters(config, "cats_dogs_vgg16_frozen"))
    assert calls == [12, 4]  # train and val images, once each, for three epochs
    assert len(history) == 3
    assert not model.get_layer("vgg16").trainable_weights


def test_unknown_fine_tune_layer_names_the_key(tiny_vgg_project):
    name = "cats_dogs_vgg16_finetune"
    set_params(tiny_vgg_project / "params.yaml", **{f"train.{name}.image_size": 32,
                                                    f"train.{name}.fine_tune.unfreeze_from": "block9_conv1"})
    config = load_config("params.yaml")
    with pytest.raises(ConfigError, match=f"train.{name}.fine_tune.unfreeze_from"):
        train.fit_model(config, name, train.hyperparameters(config, name))
