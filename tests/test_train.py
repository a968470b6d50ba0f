"""Training: outputs per seed, MLflow record (the default seed registers), determinism, files left in
step by a kill, resume after a kill, NaN guard, VGG16 feature caching."""
import json
import os
import signal
import subprocess
import sys
import time

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline import evaluate, paths, serving, tracking, train
from pipeline.__main__ import main
from pipeline.config import load_config
from pipeline.data import loaders
from pipeline.hardware import native_bfloat16
from pipeline.models import build_model, vgg16
from pipeline.registry import REGISTRY
from pipeline.errors import ConfigError, PipelineError
from tests.conftest import ROOT
from tests.fixtures import make_cats_dogs_split, make_cifar10_split, make_vgg16_standin, set_params

TINY_CIFAR = {"train": 6, "val": 2, "test": 2}
NAME, SEED, OTHER_SEED = "cifar10_naive", 42, 1  # params.yaml's default seed, and a further one


def tiny_cifar_project(project, epochs=2, **extra):
    make_cifar10_split(project / "data" / "split" / "cifar10", TINY_CIFAR)
    set_params(project / "params.yaml", **{"train.cifar10_naive.epochs": epochs, "train.cifar10_naive.batch_size": 16,
                                           "train.cifar10_naive.learning_rate": 0.001, **extra})
    return load_config(project / "params.yaml")


def runs_named(name, seed):
    return mlflow.search_runs(experiment_names=["cifar10"], filter_string=f"attributes.run_name = '{name} seed {seed}'")


def test_training_writes_outputs_and_mlflow_run(project):
    config = tiny_cifar_project(project)
    train.run(config, NAME, SEED)

    history = pd.read_csv(paths.history_file(NAME, SEED))
    assert list(history["epoch"]) == [1, 2]
    assert paths.history_file(NAME, SEED).name == "cifar10_naive-42.csv"
    summary = json.loads(paths.train_summary(NAME, SEED).read_text())
    assert summary["epochs"] == 2 and 0 <= summary["best"]["val_accuracy"] <= 1
    saved = keras.saving.load_model(paths.model_file(NAME, SEED))
    assert summary["seed"] == SEED and summary["parameters"] == saved.count_params()

    # The summary names the run and the model file it was written with: the run id file agrees.
    run_id = paths.run_id_file(NAME, SEED).read_text().strip()
    assert summary["mlflow_run_id"] == run_id
    assert summary["model_sha256"] == tracking.file_sha256(paths.model_file(NAME, SEED))
    assert tracking.recorded_run_id(NAME, SEED) == run_id
    assert list(runs_named(NAME, SEED)["run_id"]) == [run_id]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.001" and run.data.params["batch_size"] == "16"
    assert run.data.params["seed"] == "42"
    assert run.data.tags["dvc_stage"] == "train_cifar10@cifar10_naive-42" and run.data.tags["seed"] == "42"
    steps = mlflow.MlflowClient().get_metric_history(run_id, "val_accuracy")
    assert sorted(m.step for m in steps) == [1, 2]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "figures")}
    assert "figures/cifar10_naive-42_curves.png" in artifacts

    # The default seed's training registers its photo classifier.
    (version,) = mlflow.MlflowClient().search_model_versions(f"name = '{NAME}'")
    assert (str(version.version), version.run_id) == ("1", run_id)
    # It is the one model the run logs, so MLflow's model list shows the training once.
    logged = mlflow.MlflowClient().search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [(model.name, model.source_run_id) for model in logged] == [("classifier", run_id)]
    classifier = serving.unwrap(mlflow.pyfunc.load_model(f"runs:/{run_id}/classifier"))
    images = np.random.default_rng(0).uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
    predictions = classifier.network.predict(images, verbose=0)
    assert predictions.shape == (3, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1, rtol=1e-5)


def test_a_further_seed_writes_its_own_files_and_run_and_registers_no_version(project):
    config = tiny_cifar_project(project, epochs=1)
    train.run(config, NAME, OTHER_SEED)

    assert [p.name for p in sorted(paths.MODELS_DIR.iterdir()) if not p.name.startswith(".")] == \
        ["cifar10_naive-1.keras", "cifar10_naive-1.run_id"]  # nothing of the default seed's
    summary = json.loads(paths.train_summary(NAME, OTHER_SEED).read_text())
    assert summary["seed"] == OTHER_SEED and len(pd.read_csv(paths.history_file(NAME, OTHER_SEED))) == 1
    run_id = tracking.recorded_run_id(NAME, OTHER_SEED)  # model, run id and summary agree
    assert list(runs_named(NAME, OTHER_SEED)["run_id"]) == [run_id]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.params["seed"], run.data.tags["seed"]) == ("1", "1")
    assert run.data.tags["dvc_stage"] == "train_cifar10@cifar10_naive-1"
    # Its params, metrics and curves are logged like any training's...
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1]
    assert "best_val_accuracy" in run.data.metrics
    assert "figures/cifar10_naive-1_curves.png" in {a.path for a in client.list_artifacts(run_id, "figures")}
    # ...but no model is logged nor registered: only the default seed's is served.
    assert client.search_model_versions(f"name = '{NAME}'") == []
    assert mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list") == []


def test_a_seed_not_in_seeds_trains_nothing(project):
    config = tiny_cifar_project(project)
    with pytest.raises(ConfigError, match=r"^seed 7 is not in seeds \[42, 1, 2\]$"):
        train.run(config, NAME, 7)
    assert not paths.MODELS_DIR.exists() and mlflow.get_experiment_by_name("cifar10") is None


@pytest.mark.parametrize("schedule, final_rate", [("constant", 0.001), ("cosine", 0.0)])
def test_learning_rate_schedule_runs_over_all_epochs(project, schedule, final_rate):
    # in float32 the model returned is the one trained, with its optimizer (a bfloat16 one is copied)
    config = tiny_cifar_project(project, epochs=2, **{"train.cifar10_naive.lr_schedule": schedule,
                                                      "train.cifar10_naive.precision": "float32"})
    model, _ = train.fit_model(config, "cifar10_naive", train.hyperparameters(config, "cifar10_naive"))
    assert float(model.optimizer.learning_rate) == pytest.approx(final_rate, abs=1e-9)


def test_same_params_and_seed_give_the_same_numbers_another_seed_others(project):
    config = tiny_cifar_project(project)
    hp = train.hyperparameters(config, "cifar10_naive")
    first = train.fit_model(config, "cifar10_naive", hp, workdir=project / "a")[1]
    second = train.fit_model(config, "cifar10_naive", hp, workdir=project / "b")[1]
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    other = train.fit_model(config.under_seed(OTHER_SEED), "cifar10_naive", hp, workdir=project / "c")[1]
    assert not np.array_equal(other["loss"], first["loss"])


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no bfloat16 kernels")
def test_a_model_trained_in_bfloat16_is_saved_and_scored_in_float32(project):
    config = tiny_cifar_project(project, **{"train.cifar10_naive.precision": "bfloat16"})
    train.run(config, NAME, SEED)
    summary = json.loads(paths.train_summary(NAME, SEED).read_text())
    assert summary["precision"] == "mixed_bfloat16"
    saved = keras.saving.load_model(paths.model_file(NAME, SEED))
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    images, labels = loaders.load_arrays(config, "cifar10", "val", 32)
    val_loss = saved.evaluate(images, loaders.encode_labels(labels, 10), verbose=0)[0]
    assert val_loss == pytest.approx(summary["final"]["val_loss"], abs=0.02)  # bfloat16's rounding apart


def test_a_moving_average_of_the_weights_is_validated_and_kept(project):
    """With `ema_momentum`, each epoch validates the averaged weights and those are the weights
    saved: the curves' last val loss is the saved model's."""
    import keras

    from pipeline import evaluate

    # the curves come from the network alone, computing in float32: so is it scored here
    alone = {"train.cifar10_naive.mirror_average": False, "train.cifar10_naive.precision": "float32"}
    config = tiny_cifar_project(project, epochs=3, **alone, **{"train.cifar10_naive.ema_momentum": None})
    plain = train.fit_model(config, "cifar10_naive", train.hyperparameters(config, "cifar10_naive"),
                            workdir=project / "plain")[0]
    config = tiny_cifar_project(project, epochs=3, **alone, **{"train.cifar10_naive.ema_momentum": 0.6})
    train.run(config, NAME, SEED)
    history = pd.read_csv(paths.history_file(NAME, SEED))
    saved = keras.saving.load_model(paths.model_file(NAME, SEED))
    assert not np.allclose(saved.get_layer("conv1").kernel.numpy(), plain.get_layer("conv1").kernel.numpy())
    val = evaluate.val_metrics(config, "cifar10_naive", saved)
    assert history["val_loss"].iloc[-1] == pytest.approx(val["val_loss"], abs=1e-4)


def test_nan_loss_fails_the_run(project, monkeypatch):
    config = tiny_cifar_project(project)
    real = train.loaders.encode_labels

    def poisoned(labels, n_classes):
        # NaN targets, not NaN pixels: some CPU kernels turn relu(NaN) into 0, which would hide them
        return np.full_like(real(labels, n_classes), np.nan)

    monkeypatch.setattr(train.loaders, "encode_labels", poisoned)
    with pytest.raises(PipelineError, match="loss became nan"):
        train.run(config, NAME, SEED)
    (status,) = runs_named(NAME, SEED)["status"]
    assert status == "FAILED"
    # Its files are written when it ends, and it ended before: no model, no run id to reopen.
    assert not paths.model_file(NAME, SEED).exists() and not paths.run_id_file(NAME, SEED).exists()


def train_killed_after(name, log, epochs):
    """`python -m pipeline train <name>` (the default seed), killed once its CSV `log` holds
    `epochs` epochs: the command, its environment and how many epochs the log holds at the kill."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipeline", "train", name]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) <= epochs):
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    return command, env, len(pd.read_csv(log))


def backup_log(name, seed, phase="train"):
    return train.BACKUP_ROOT.resolve() / paths.run_key(name, seed) / phase / "history.csv"


def running_run_ids(experiment):
    return list(mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'RUNNING'")["run_id"])


def training_files(name, seed):
    return {path: path.read_bytes() for path in (paths.model_file(name, seed), paths.history_file(name, seed),
                                                 paths.train_summary(name, seed), paths.run_id_file(name, seed))}


@pytest.mark.slow
@pytest.mark.parametrize("torn_backup", [None, "latest.weights.h5", "training_metadata.json"],
                         ids=["clean-kill", "torn-weights", "torn-epoch-counter"])
def test_killed_training_resumes_from_its_last_epoch(project, torn_backup):
    tiny_cifar_project(project, epochs=40)
    log = backup_log(NAME, SEED)
    command, env, done_before_kill = train_killed_after(NAME, log, 3)
    assert 3 <= done_before_kill < 40, "the kill should land part-way through training"
    if torn_backup:  # as if a state file had been cut short (a full disk, a kill while Keras wrote it)
        state = log.parent / "state" / torn_backup
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    # The files are written when the training ends: the killed one left none, only its run.
    assert not paths.model_file(NAME, SEED).exists() and not paths.run_id_file(NAME, SEED).exists()
    (run_id,) = running_run_ids("cifar10")

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming the interrupted run {run_id}" in second.stdout
    # Keras logs "Epoch k/40" for each epoch it trains: the resumed process starts after the kill.
    trained_again = [line for line in second.stdout.splitlines() if line.startswith("Epoch ")]
    assert len(trained_again) <= 40 - done_before_kill + (2 if torn_backup else 1)
    history = pd.read_csv(paths.history_file(NAME, SEED))
    assert list(history["epoch"]) == list(range(1, 41))
    assert tracking.recorded_run_id(NAME, SEED) == run_id  # model, summary and run id: the resumed run's
    assert mlflow.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_a_killed_training_leaves_the_last_finished_one_s_files_which_evaluate_still_scores(project):
    """The model, history, summary and run id are written when a training ends: one killed part-way
    (kill -9) leaves the previous training's files as they were, in step with one another, and
    evaluate scores that model into that model's own run."""
    config = tiny_cifar_project(project, epochs=1)
    train.run(config, NAME, SEED)
    previous, before = paths.run_id_file(NAME, SEED).read_text().strip(), training_files(NAME, SEED)
    set_params(project / "params.yaml", **{f"train.{NAME}.epochs": 40})
    _, _, done_before_kill = train_killed_after(NAME, backup_log(NAME, SEED), 2)
    assert 2 <= done_before_kill < 40, "the kill should land part-way through training"
    (killed,) = running_run_ids("cifar10")
    assert killed != previous

    assert training_files(NAME, SEED) == before
    assert tracking.recorded_run_id(NAME, SEED) == previous
    evaluate.run(load_config(), NAME, SEED)
    assert "test_accuracy" in mlflow.get_run(previous).data.metrics
    assert "test_accuracy" not in mlflow.get_run(killed).data.metrics
    (version,) = mlflow.MlflowClient().search_model_versions(f"name = '{NAME}'")
    assert version.run_id == previous and "test_accuracy" in version.tags


class Killed(BaseException):
    """What a kill does between two writes: nothing after it runs (no `except Exception` sees it)."""


@pytest.mark.parametrize("killed_before", ["history", "run_id"])
def test_a_training_killed_between_its_files_makes_evaluate_refuse_in_one_line(project, monkeypatch, capsys,
                                                                               killed_before):
    """Killed after the new model was saved (before its history) or after its summary (before its
    run id): the files on disk come from two trainings; evaluate says so and scores nothing. The
    training run again (what the message says) puts them back in step."""
    config = tiny_cifar_project(project, epochs=1)
    train.run(config, NAME, SEED)
    previous = paths.run_id_file(NAME, SEED).read_text().strip()
    config = tiny_cifar_project(project, epochs=1, **{f"train.{NAME}.learning_rate": 0.01})  # another model
    last_write = {"history": paths.history_file(NAME, SEED), "run_id": paths.run_id_file(NAME, SEED)}[killed_before]
    real = train.write_text_atomically

    def killed_at(path, text):
        if path == last_write:
            raise Killed
        real(path, text)

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(train, "write_text_atomically", killed_at)
        train.run(config, NAME, SEED)
    assert paths.run_id_file(NAME, SEED).read_text().strip() == previous

    capsys.readouterr()
    assert main(["evaluate", NAME]) == 1
    model, run_id = paths.model_file(NAME, SEED), paths.run_id_file(NAME, SEED)
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {model} and {run_id} do not come from the same training (one was interrupted); "
        f"run `dvc repro train_cifar10@{NAME}-{SEED}` again"]
    assert not paths.eval_metrics(NAME, SEED).exists()
    assert "metrics.test_accuracy" not in mlflow.search_runs(experiment_names=["cifar10"]).columns  # in no run

    train.run(config, NAME, SEED)  # resumes the interrupted run, and writes its files whole
    resumed = tracking.recorded_run_id(NAME, SEED)
    assert resumed != previous
    assert main(["evaluate", NAME]) == 0
    assert "test_accuracy" in mlflow.get_run(resumed).data.metrics


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
    real = vgg16.frozen_features
    monkeypatch.setattr(vgg16, "frozen_features", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    model, history = train.fit_model(config, name, train.hyperparameters(config, name))
    assert list(history["phase"]) == ["head", "head", "fine_tune"]
    # without augmentation blocks 1-4 run once per image (train and val), below the fine-tuned block5;
    # with it no feature is cached: every phase runs the whole network on augmented images
    assert calls == (["block4_pool"] * 2 if name == "cats_dogs_vgg16_finetune" else [])
    base = model.get_layer("vgg16")
    block5 = [base.get_layer(f"block5_conv{i}") for i in (1, 2, 3)]
    expected = model.get_layer("head").trainable_weights + [w for layer in block5 for w in layer.trainable_weights]
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in expected}  # head and block5, nothing else
    image = np.full((1, 32, 32, 3), 120.0, dtype="float32")
    assert model.predict(image, verbose=0).shape == (1, 1)


def test_frozen_vgg16_runs_its_base_once_per_image(tiny_vgg_project, monkeypatch):
    set_params(tiny_vgg_project / "params.yaml", **{"train.cats_dogs_vgg16_frozen.image_size": 32,
                                                    "train.cats_dogs_vgg16_frozen.epochs": 3})
    config = load_config("params.yaml")
    calls = []
    real = vgg16.frozen_features
    monkeypatch.setattr(vgg16, "frozen_features", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
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


AUGMENT = {"flip": True, "rotation": 0.1, "zoom": 0.2, "translation": 0.1}


def tiny_vgg_config(project, name, **extra):
    """`name` at 32x32 for two head epochs and one fine-tuning epoch, no dropout."""
    params = {"image_size": 32, "epochs": 2, "dropout": 0.0, **extra}
    if load_config(project / "params.yaml").model(name).fine_tune is not None:
        params["fine_tune.epochs"] = 1
    set_params(project / "params.yaml", **{f"train.{name}.{key}": value for key, value in params.items()})
    return load_config(project / "params.yaml")


def one_pass(data) -> list[float]:
    """The images of one pass over a phase's input, as sorted per-image sums: the same images
    in another order give the same list, augmented ones another."""
    images = np.concatenate([batch[0] for batch in data])
    return sorted(np.asarray(images, dtype=np.float64).reshape(len(images), -1).sum(axis=1).round(2))


def spy_on_phases(monkeypatch):
    """Per phase, whether its input changes from one pass to the next (augmentation), whether
    its network answers the same twice at inference, and its learning rate once it is over."""
    seen = {}
    real = train.fit_phase

    def spy(net, train_data, val_data, run, phase, *args, **kwargs):
        x = next(iter(train_data))[0][:4]
        seen[phase] = {
            "training_varies": one_pass(train_data) != one_pass(train_data),
            "val_varies": one_pass(val_data) != one_pass(val_data),
            "inference_same": np.array_equal(net(x, training=False), net(x, training=False)),
        }
        history = real(net, train_data, val_data, run, phase, *args, **kwargs)
        seen[phase]["final_rate"] = float(net.optimizer.learning_rate)
        return history

    monkeypatch.setattr(train, "fit_phase", spy)
    return seen


@pytest.mark.parametrize("name, extra, augmented", [
    ("cats_dogs_vgg16_frozen", {}, {"head": False}),
    ("cats_dogs_vgg16_frozen", {"augment": AUGMENT}, {"head": True}),
    ("cats_dogs_vgg16_finetune", {}, {"head": False, "fine_tune": False}),
    ("cats_dogs_vgg16_finetune_aug", {}, {"head": True, "fine_tune": True}),
], ids=["frozen", "frozen-augment", "finetune", "finetune_aug"])
def test_vgg16_augments_in_every_phase_iff_params_say(tiny_vgg_project, monkeypatch, name, extra, augmented):
    config = tiny_vgg_config(tiny_vgg_project, name, **extra)
    seen = spy_on_phases(monkeypatch)
    train.fit_model(config, name, train.hyperparameters(config, name))
    assert {phase: s["training_varies"] for phase, s in seen.items()} == augmented
    assert not any(s["val_varies"] for s in seen.values())  # never the validation images
    assert all(s["inference_same"] for s in seen.values())  # nor at inference


@pytest.mark.parametrize("name", ["cats_dogs_vgg16_finetune", "cats_dogs_vgg16_finetune_aug"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_vgg16_learning_rate_schedule_applies_to_both_phases(tiny_vgg_project, monkeypatch, name, schedule):
    config = tiny_vgg_config(tiny_vgg_project, name, lr_schedule=schedule)
    seen = spy_on_phases(monkeypatch)
    train.fit_model(config, name, train.hyperparameters(config, name))
    params = config.model(name)
    expected = {"head": params.learning_rate, "fine_tune": params.fine_tune.learning_rate}
    if schedule == "cosine":
        expected = {"head": 0.0, "fine_tune": 0.0}  # each phase's rate decays to 0 over its own epochs
    assert {phase: s["final_rate"] for phase, s in seen.items()} == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name", ["cifar10_naive", "cats_dogs_vgg16_finetune", "cats_dogs_vgg16_finetune_aug"])
def test_every_dataset_a_training_reads_runs_without_tf_data_s_autotuning(tiny_vgg_project, monkeypatch, name):
    """An ending iterator waits out the autotuning optimiser's current sleep (it doubles up to a
    minute), and Keras ends one per epoch: a 22 s epoch took 41. Both the images and the cached
    features (finetune) and the augmented images (finetune_aug) must go without it."""
    import keras

    if name == "cifar10_naive":
        config = tiny_cifar_project(tiny_vgg_project, epochs=1)
    else:
        config = tiny_vgg_config(tiny_vgg_project, name)
    read = []
    fit = keras.Model.fit

    def recording_fit(model, x=None, *args, validation_data=None, **kwargs):
        read.extend([x, validation_data])
        return fit(model, x, *args, validation_data=validation_data, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    train.fit_model(config, name, train.hyperparameters(config, name))
    assert len(read) == (2 if name == "cifar10_naive" else 4)
    assert all(data.options().autotune.enabled is False for data in read)


def test_cached_features_give_the_whole_models_outputs(tiny_vgg_project):
    """The head on cached block5 features, and block5 + head on cached block4 features, predict
    what the whole model predicts on the images."""
    config = load_config("params.yaml")
    name = "cats_dogs_vgg16_finetune"
    params = config.model(name).model_copy(update={"image_size": 32})
    train.make_deterministic(0)
    model = build_model(name, params, train.vgg16_weights(config))
    images = np.random.default_rng(0).uniform(0, 255, size=(6, 32, 32, 3)).astype("float32")
    whole = model.predict(images, verbose=0)
    head_on_features = model.get_layer("head").predict(vgg16.frozen_features(model, images, "block5_pool"), verbose=0)
    top_on_features = vgg16.submodel(model, "block5_conv1").predict(
        vgg16.frozen_features(model, images, "block4_pool"), verbose=0)
    assert whole.std() > 1e-3  # the images give different outputs: the comparison means something
    np.testing.assert_allclose(head_on_features, whole, atol=1e-4)
    np.testing.assert_allclose(top_on_features, whole, atol=1e-4)


def test_resume_needs_the_same_params_and_split(project):
    """A killed training's backup is kept per model and seed (its run key), and resumed only with
    the same params on the same split."""
    key, params = paths.run_key(NAME, SEED), {"learning_rate": 0.001}
    split_metrics = paths.split_summary("cifar10")
    split_metrics.parent.mkdir(parents=True)
    split_metrics.write_text(json.dumps({"sha256": "a" * 64}))
    train.remember_run(key, "cifar10", "run-1", params)
    assert train.resumable_run_id(paths.run_key(NAME, OTHER_SEED), "cifar10", params) is None  # another seed's
    assert train.resumable_run_id(key, "cifar10", params) == "run-1"
    assert train.resumable_run_id(key, "cifar10", {"learning_rate": 0.01}) is None  # other params: not resumed
    assert not (train.BACKUP_ROOT / key).exists()  # and the backup is dropped
    train.remember_run(key, "cifar10", "run-2", params)
    split_metrics.write_text(json.dumps({"sha256": "b" * 64}))  # the split changed since
    assert train.resumable_run_id(key, "cifar10", params) is None
    assert not (train.BACKUP_ROOT / key).exists()


@pytest.mark.slow
def test_killed_vgg16_fine_tuning_resumes_in_its_second_phase(tiny_vgg_project):
    name = "cats_dogs_vgg16_finetune"
    set_params(tiny_vgg_project / "params.yaml", **{f"train.{name}.image_size": 32, f"train.{name}.epochs": 3,
                                                    f"train.{name}.fine_tune.epochs": 40})
    backup = backup_log(name, SEED).parent.parent
    command, env, done_before_kill = train_killed_after(name, backup / "fine_tune" / "history.csv", 3)
    assert 3 <= done_before_kill < 40, "the kill should land part-way through fine-tuning"
    assert (backup / "head" / "finished.weights.h5").exists()

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "the head phase had finished; its weights are restored" in second.stdout
    epochs_trained = [line for line in second.stdout.splitlines() if line.startswith("Epoch ")]
    assert not [line for line in epochs_trained if line.endswith("/3")]  # no head epoch trained again
    assert 1 <= len(epochs_trained) <= 40 - done_before_kill + 1  # fine-tuning went on from the kill
    history = pd.read_csv(paths.history_file(name, SEED))
    assert list(history["phase"]) == ["head"] * 3 + ["fine_tune"] * 40
    assert list(history["epoch"]) == list(range(1, 44))


def test_training_removes_what_a_killed_run_left_beside_its_outputs(project):
    config = tiny_cifar_project(project, epochs=1)
    outputs = [paths.model_file(NAME, SEED), paths.history_file(NAME, SEED), paths.train_summary(NAME, SEED),
               paths.run_id_file(NAME, SEED)]
    stale = [path.with_name(f".partial-99999.{path.name}") for path in outputs]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half-written")
    train.run(config, NAME, SEED)
    assert not [path for path in stale if path.exists()]
    assert [p.name for p in paths.MODELS_DIR.iterdir() if p.name.startswith(".partial")] == []
    assert len(pd.read_csv(paths.history_file(NAME, SEED))) == 1
    assert json.loads(paths.train_summary(NAME, SEED).read_text())["epochs"] == 1


def test_fine_tune_on_a_model_without_a_pretrained_base_names_the_key(project):
    config = tiny_cifar_project(project, **{"train.cifar10_naive.fine_tune": {"epochs": 1, "learning_rate": 0.001}})
    with pytest.raises(ConfigError, match="train.cifar10_naive.fine_tune: only the VGG16 models"):
        train.fit_model(config, "cifar10_naive", train.hyperparameters(config, "cifar10_naive"))


@pytest.mark.parametrize("name", [name for name, spec in REGISTRY.items() if spec.task == "cifar10" and spec.in_study])
def test_cifar10_default_recipe_augments_training_images_only(project, monkeypatch, name):
    """params.yaml's recipe for the study's CIFAR-10 models: each pass over the training images
    augments them anew (flips, shifts); the validation images and the network at inference
    stay the same."""
    make_cifar10_split(project / "data" / "split" / "cifar10", TINY_CIFAR)
    set_params(project / "params.yaml", **{f"train.{name}.epochs": 1, f"train.{name}.batch_size": 16,
                                           f"train.{name}.dropout": 0.0})
    config = load_config(project / "params.yaml")
    assert config.model(name).augment is not None, "the default recipe augments CIFAR-10"
    seen = spy_on_phases(monkeypatch)
    train.fit_model(config, name, train.hyperparameters(config, name))
    assert seen["train"]["training_varies"] and seen["train"]["inference_same"]
    assert not seen["train"]["val_varies"]
