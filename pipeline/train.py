"""Stage train_<group>@<model>-<seed>: fit one model of the registry under one seed and record it in MLflow.

From-scratch models train on a tf.data pipeline, which augments the training images (a
model's `augment`) anew each epoch. The VGG16 models never run a frozen part of the network
more than once per image: its features are computed once and the layers above train on them.
Only augmentation (which changes the input every epoch) forces the whole network to run each
epoch, in every phase: a model with `augment` trains on augmented images from its first epoch
to its last.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline import paths, serving, tracking
from pipeline.hardware import machine
from pipeline.config import Augment, Config
from pipeline.data import loaders
from pipeline.data.augment import augmented
from pipeline.data.split import split_checksum
from pipeline.errors import ConfigError, PipelineError
from pipeline.atomic import replacing_file, write_text_atomically
from pipeline.models import build_model, compile_model, compute_policy, float32_copy, vgg16
from pipeline.registry import REGISTRY, train_stage

HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy"]
BACKUP_ROOT = paths.MODELS_DIR / ".backup"


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int
    learning_rate: float
    batch_size: int


def make_deterministic(seed: int) -> None:
    """Same params, same numbers: seeded initialisers, shuffles and deterministic kernels."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def hyperparameters(config: Config, name: str) -> Hyperparameters:
    """params.yaml's epochs, learning rate and batch size (a search's choice goes there too)."""
    params = config.model(name)
    return Hyperparameters(params.epochs, params.learning_rate, params.batch_size)


class MlflowEpochLogger(keras.callbacks.Callback):
    """Per-epoch metrics into the active MLflow run, numbered across training phases."""

    def __init__(self, first_step: int = 0):
        super().__init__()
        self.first_step = first_step

    def on_epoch_end(self, epoch, logs=None):
        if mlflow.active_run() is None:  # a bare fit (tests, benchmarks) must not open a stray run
            return
        mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=self.first_step + epoch + 1)


class StopOnNaN(keras.callbacks.Callback):
    """Fail loudly: a NaN loss means the run is worthless, so end it as FAILED with a reason."""

    def __init__(self, name: str, phase: str):
        super().__init__()
        self.name, self.phase = name, phase

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise PipelineError(
                f"{self.name}: loss became {float(loss)} in {self.phase} training (batch {batch}); "
                f"lower train.{self.name}.learning_rate"
            )


@dataclass(frozen=True)
class Run:
    """What every training phase shares: the model's name, a folder for resume state, extra callbacks."""
    name: str
    workdir: Path
    callbacks: tuple = ()


class KeepFinishedWeights(keras.callbacks.Callback):
    """At the end of a phase, keep its weights: a run killed in a later phase restores them
    instead of training this phase again (BackupAndRestore deletes its state when a fit ends)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def on_train_end(self, logs=None):
        with replacing_file(self.path) as partial:
            self.model.save_weights(partial)


class WholeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose files a kill never tears, and which survives one torn anyway.

    Keras writes its state in place, and a kill that lands while it writes the epoch counter
    leaves an empty JSON file that it cannot read (it falls back to the previous state only
    for unreadable weights). Here each file is written beside and renamed into place, and an
    unreadable epoch counter falls back to the previous state like unreadable weights do.
    """

    def _save_model(self):
        for path in (self._weights_path, self._training_metadata_path):
            if Path(path).exists():
                with replacing_file(Path(f"{path}.bkp")) as partial:
                    shutil.copyfile(path, partial)
        with replacing_file(Path(self._weights_path)) as partial:
            self.model.save_weights(partial)
        epoch = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        write_text_atomically(Path(self._training_metadata_path), json.dumps(epoch))

    def _load_model(self):
        try:
            super()._load_model()
        except json.JSONDecodeError as torn:  # on_train_begin restores the previous state on OSError
            raise OSError(f"{self._training_metadata_path}: unreadable") from torn


def fit_phase(model, train_data: tf.data.Dataset, val_data: tf.data.Dataset, run: Run, phase: str, epochs: int,
              first_step: int) -> pd.DataFrame:
    """model.fit with resume, NaN guard and MLflow logging; returns this phase's per-epoch history.

    BackupAndRestore makes a killed run continue from its last finished epoch; it keeps the
    previous state too, for a state file found torn. The CSV log is written first and
    appended to: an epoch trained again after a kill replaces its row, none goes missing. A
    phase that finished before the kill is not trained again: its final weights are loaded.
    """
    backup = run.workdir / phase
    backup.mkdir(parents=True, exist_ok=True)
    csv_log, finished = backup / "history.csv", backup / "finished.weights.h5"
    if finished.exists():
        model.load_weights(finished)
        print(f"{run.name}: the {phase} phase had finished; its weights are restored, not trained again")
    else:
        callbacks = [
            keras.callbacks.CSVLogger(str(csv_log), append=True),
            KeepFinishedWeights(finished),  # before BackupAndRestore, which drops its state on the same call
            WholeBackupAndRestore(str(backup / "state"), double_checkpoint=True),
            StopOnNaN(run.name, phase),
            MlflowEpochLogger(first_step),
            *run.callbacks,
        ]
        if model.optimizer.use_ema:  # validate the averaged weights: the curves show the model kept
            callbacks.insert(0, keras.callbacks.SwapEMAWeights())
        # the dataset shuffles itself each epoch; shuffle=False only silences Keras's reminder
        model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks, verbose=2, shuffle=False)
    history = pd.read_csv(csv_log).drop_duplicates("epoch", keep="last")
    history["phase"] = phase
    return history


def vgg16_weights(config: Config) -> Path:
    path = paths.raw_dir(config, "vgg16") / config.sources.vgg16.filename
    if not path.exists():
        raise PipelineError(f"{path}: not found; run `dvc repro download@vgg16` first")
    return path


def weights_origin(path: Path) -> str:
    """'imagenet', or 'STAND-IN' for a randomly initialised file marked as such (CI, tests)."""
    import h5py

    with h5py.File(path, "r") as h5:
        return "STAND-IN (random init, not ImageNet)" if "standin" in h5.attrs else "imagenet"


def augmented_batches(images: np.ndarray, targets: np.ndarray, batch_size: int, augment: Augment,
                      seed: int) -> tf.data.Dataset:
    """Shuffled batches of in-memory images, augmented anew each epoch."""
    return loaders.prefetched(augmented(loaders.array_batches(images, targets, batch_size, seed), augment, seed))


def batches_of(inputs: np.ndarray, targets: np.ndarray, hp: Hyperparameters, shuffle_seed: int | None = None):
    return loaders.prefetched(loaders.array_batches(inputs, targets, hp.batch_size, shuffle_seed))


def cosine_steps(params, epochs: int, steps_per_epoch: int) -> int | None:
    """The steps a cosine learning rate decays over in one phase; None for a constant rate."""
    return epochs * steps_per_epoch if params.lr_schedule == "cosine" else None


def train_vgg16(config: Config, run: Run, model: keras.Model, hp: Hyperparameters) -> pd.DataFrame:
    """The head on the frozen base; then, if asked, the top of the base fine-tuned with it.

    Both phases follow `lr_schedule` (a cosine restarts from each phase's learning rate) and
    `augment`: with augmentation the whole network runs on augmented images in both phases,
    without it the frozen layers run once per image and the rest trains on their output.
    """
    params = config.model(run.name)
    train_x, train_y = loaders.load_arrays(config, "cats_dogs", "train", params.image_size)
    val_x, val_y = loaders.load_arrays(config, "cats_dogs", "val", params.image_size)
    train_t, val_t = loaders.encode_labels(train_y, 2), loaders.encode_labels(val_y, 2)
    if params.augment is not None:
        return train_vgg16_on_images(config, run, model, hp, (train_x, train_t), (val_x, val_t))
    return train_vgg16_on_features(config, run, model, hp, (train_x, train_t), (val_x, val_t))


def train_vgg16_on_images(config: Config, run: Run, model: keras.Model, hp: Hyperparameters,
                          train: tuple, val: tuple) -> pd.DataFrame:
    """Augmentation changes the input every epoch, so no feature can be cached: each phase fits
    the whole model on augmented batches, with the base frozen, then with its top unfrozen."""
    params = config.model(run.name)
    tune, batches = params.fine_tune, math.ceil(len(train[0]) / hp.batch_size)
    images = augmented_batches(*train, hp.batch_size, params.augment, config.seed)
    val_data = batches_of(*val, hp)
    compile_model(model, 2, hp.learning_rate, cosine_steps(params, hp.epochs, batches), params.label_smoothing,
                  ema_momentum=params.ema_momentum)
    histories = [fit_phase(model, images, val_data, run, "head", hp.epochs, 0)]
    if tune is not None:
        vgg16.unfreeze_top(model, tune.unfreeze_from)
        compile_model(model, 2, tune.learning_rate, cosine_steps(params, tune.epochs, batches), params.label_smoothing,
                      ema_momentum=params.ema_momentum)
        histories.append(fit_phase(model, images, val_data, run, "fine_tune", tune.epochs, hp.epochs))
    return pd.concat(histories)


def train_vgg16_on_features(config: Config, run: Run, model: keras.Model, hp: Hyperparameters,
                            train: tuple, val: tuple) -> pd.DataFrame:
    """The frozen layers run once per image: the head trains on the base's output; the top
    block, when fine-tuned, trains with the head on the output of the layers below it."""
    params = config.model(run.name)
    tune, batches = params.fine_tune, math.ceil(len(train[0]) / hp.batch_size)
    # When the top block is fine-tuned next on unchanging input, stop below it and reuse that
    # for phase 2; the head's input is then that output run once through the top block.
    last = model.get_layer("vgg16").layers[-1].name
    cut = vgg16.layer_before(model, tune.unfreeze_from) if tune else last
    lower = (vgg16.frozen_features(model, train[0], cut), vgg16.frozen_features(model, val[0], cut))
    features = lower
    if cut != last:
        top = vgg16.submodel(model, tune.unfreeze_from, last)
        features = tuple(top.predict(part, batch_size=32, verbose=0) for part in lower)
    head = model.get_layer("head")
    compile_model(head, 2, hp.learning_rate, cosine_steps(params, hp.epochs, batches), params.label_smoothing,
                  ema_momentum=params.ema_momentum)
    histories = [fit_phase(head, batches_of(features[0], train[1], hp, config.seed),
                           batches_of(features[1], val[1], hp), run, "head", hp.epochs, 0)]
    if tune is not None:
        vgg16.unfreeze_top(model, tune.unfreeze_from)
        upper = vgg16.submodel(model, tune.unfreeze_from)
        compile_model(upper, 2, tune.learning_rate, cosine_steps(params, tune.epochs, batches),
                      params.label_smoothing, ema_momentum=params.ema_momentum)
        histories.append(fit_phase(upper, batches_of(lower[0], train[1], hp, config.seed),
                                   batches_of(lower[1], val[1], hp), run, "fine_tune", tune.epochs, hp.epochs))
    return pd.concat(histories)


def train_from_scratch(config: Config, run: Run, model: keras.Model, hp: Hyperparameters) -> pd.DataFrame:
    spec, params = REGISTRY[run.name], config.model(run.name)
    if params.fine_tune is not None:  # refused rather than ignored: the model has no pretrained base
        raise ConfigError(f"train.{run.name}.fine_tune: only the VGG16 models have a base to fine-tune")
    train_data = loaders.make_dataset(config, spec.task, "train", params.image_size, hp.batch_size, shuffle=True,
                                      augment=params.augment)
    val_data = loaders.make_dataset(config, spec.task, "val", params.image_size, hp.batch_size)
    steps = cosine_steps(params, hp.epochs, int(train_data.cardinality()))
    compile_model(model, spec.n_classes, hp.learning_rate, steps, params.label_smoothing,
                  ema_momentum=params.ema_momentum)
    return fit_phase(model, train_data, val_data, run, "train", hp.epochs, 0)


def fit_model(config: Config, name: str, hp: Hyperparameters, workdir: Path | None = None,
              callbacks: tuple = ()) -> tuple[keras.Model, pd.DataFrame]:
    """Build and train one model; the history has one row per epoch over all phases. The model
    returned computes in float32, whatever training computed in, and is compiled.

    `workdir` holds the resume state (one per concurrent training); `callbacks` join every
    phase's fit (the tuner reports to Optuna through them).
    """
    make_deterministic(config.seed)
    spec, params = REGISTRY[name], config.model(name)
    weights = vgg16_weights(config) if spec.uses_vgg16 else None
    policy = compute_policy(name, params)
    model = build_model(name, params, weights, policy)
    trainer = train_vgg16 if spec.uses_vgg16 else train_from_scratch
    run = Run(name, workdir or BACKUP_ROOT / name, tuple(callbacks))
    history = trainer(config, run, model, hp).reset_index(drop=True)
    if policy != "float32":  # kept in float32, which every CPU runs, and scored as kept
        model = float32_copy(model, name, params, weights)
    if spec.uses_vgg16 or policy != "float32":  # compiled in parts, or not at all: give it its loss
        compile_model(model, spec.n_classes, hp.learning_rate, label_smoothing=params.label_smoothing)
        model.optimizer.build(model.trainable_variables)  # saved whole, so that loading it matches
    history["epoch"] = np.arange(1, len(history) + 1)
    return model, history[HISTORY_COLUMNS]


def training_summary(model: keras.Model, history: pd.DataFrame, hp: Hyperparameters, wall_time_s: float,
                     policy: str, seed: int) -> dict:
    """What the run did. The saved model is the last epoch's ("final"); "best" is the epoch
    with the highest val accuracy, for comparison, not the one saved."""
    best = history.loc[history["val_accuracy"].idxmax()]
    final = history.iloc[-1]
    return {
        "seed": seed,
        "parameters": int(model.count_params()),
        "hyperparameters": {"epochs": hp.epochs, "learning_rate": hp.learning_rate, "batch_size": hp.batch_size},
        "final": {k: float(final[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
        "best": {"val_accuracy": float(best["val_accuracy"]), "val_accuracy_epoch": int(best["epoch"]),
                 "val_loss": float(history["val_loss"].min())},
        "epochs": int(len(history)),
        "wall_time_s": round(wall_time_s, 1),
        "machine": machine(),
        "precision": policy,  # what training computed in; the saved model computes in float32
    }


def logged_params(config: Config, name: str, hp: Hyperparameters) -> dict:
    params = config.model(name).model_dump()
    flat = {**{f"model.{k}": v for k, v in params.items() if not isinstance(v, dict)},
            **{f"model.{p}.{k}": v for p, d in params.items() if isinstance(d, dict) for k, v in d.items()}}
    return {**flat, "epochs": hp.epochs, "learning_rate": hp.learning_rate, "batch_size": hp.batch_size,
            "seed": config.seed,
            "dtype_policy": compute_policy(name, config.model(name)),
            "subset_per_class": config.data.subset_per_class, "per_class": config.per_class(REGISTRY[name].task)}


def save_model_atomically(model: keras.Model, path: Path) -> None:
    with replacing_file(path) as partial:
        model.save(partial)


def log_model(model: keras.Model, config: Config, name: str, tags: dict[str, str]) -> None:
    """The photo classifier (the saved network inside, photos in, labels out): the one model the
    run logs, registered as a new version of `name` tagged with `tags`, and what
    `mlflow models serve` and `predict` take."""
    classes = loaders.class_names(config, REGISTRY[name].task)
    info = serving.log_classifier(model, paths.model_file(name, config.seed), classes, name,
                                  config.model(name).mirror_average)
    tracking.tag_version(name, info.registered_model_version, tags)


def write_outputs(name: str, seed: int, model: keras.Model, history: pd.DataFrame, summary: dict,
                  run_id: str) -> None:
    """The model, its history, its summary and its run id, in that order, each replaced whole.

    The summary names the model file's checksum and the run, and the run id file comes last:
    a training killed between two of them leaves files that evaluate sees disagree, and refuses.
    """
    save_model_atomically(model, paths.model_file(name, seed))
    write_text_atomically(paths.history_file(name, seed), history.to_csv(index=False))
    summary = {**summary, "mlflow_run_id": run_id, "model_sha256": tracking.file_sha256(paths.model_file(name, seed))}
    write_text_atomically(paths.train_summary(name, seed), json.dumps(summary, indent=2) + "\n")
    write_text_atomically(paths.run_id_file(name, seed), run_id + "\n")


def resumable_run_id(key: str, task: str, params: dict) -> str | None:
    """The MLflow run a killed training (`key`: the model and its seed) left behind, if it trained with these same params on this same split (its checksum).

    Backups of a run with other params or another split are dropped: resuming them would mix
    two experiments.
    """
    backup, record = BACKUP_ROOT / key, BACKUP_ROOT / key / "run.json"
    if record.exists():
        previous = json.loads(record.read_text())
        if previous == training_identity(task, previous["run_id"], params):
            print(f"{key}: resuming the interrupted run {previous['run_id']}")
            return previous["run_id"]
    shutil.rmtree(backup, ignore_errors=True)
    return None


def remember_run(key: str, task: str, run_id: str, params: dict) -> None:
    write_text_atomically(BACKUP_ROOT / key / "run.json", json.dumps(training_identity(task, run_id, params)))


def training_identity(task: str, run_id: str, params: dict) -> dict:
    """What a resumed training must share with the killed one, as its JSON record holds it."""
    return json.loads(json.dumps({"run_id": run_id, "params": params, "split_sha256": split_checksum(task)}))


def training_tags(config: Config, name: str) -> dict[str, str]:
    """The split's checksum, the seed and, for VGG16 models, which weights the base holds."""
    tags = {"split_sha256": split_checksum(REGISTRY[name].task), "seed": str(config.seed)}
    if REGISTRY[name].uses_vgg16:
        tags["vgg16_weights"] = weights_origin(vgg16_weights(config))
        if tags["vgg16_weights"] != "imagenet":
            print(f"warning: {name} uses the VGG16 weights {tags['vgg16_weights']}: its accuracy means nothing")
    return tags


def train_in_run(config: Config, name: str, hp: Hyperparameters, key: str, run_id: str, params: dict,
                 tags: dict) -> tuple:
    """Inside the open MLflow run `run_id`: train (resume state under `key`), logging the params
    and summary metrics. Returns the model, its history and its training summary."""
    task = REGISTRY[name].task
    remember_run(key, task, run_id, params)
    mlflow.log_params(params)
    tracking.log_splits(paths.split_dir(config, task), task, ["train", "val"], tags["split_sha256"])
    started = time.perf_counter()
    model, history = fit_model(config, name, hp, BACKUP_ROOT / key)
    summary = training_summary(model, history, hp, time.perf_counter() - started, params["dtype_policy"], config.seed)
    if "vgg16_weights" in tags:  # so the results table can say which weights it measured
        summary["vgg16_weights"] = tags["vgg16_weights"]
    mlflow.log_metrics({"best_val_accuracy": summary["best"]["val_accuracy"],
                        "best_val_loss": summary["best"]["val_loss"], "wall_time_s": summary["wall_time_s"]})
    return model, history, summary


def run(config: Config, name: str, seed: int) -> None:
    """Train `name` under `seed`. The default seed's training registers its model (the one
    served); the other seeds' trainings log their runs and keep their model files only."""
    config.check_seed(seed)
    registered = seed == config.seed
    config = config.under_seed(seed)
    task, hp, key = REGISTRY[name].task, hyperparameters(config, name), paths.run_key(name, seed)
    params = logged_params(config, name, hp)
    tags = training_tags(config, name)
    resumed = resumable_run_id(key, task, params)
    with tracking.training_run(name, task, train_stage(name, seed), tags, resumed) as active:
        run_id = active.info.run_id
        model, history, summary = train_in_run(config, name, hp, key, run_id, params, tags)
        write_outputs(name, seed, model, history, summary, run_id)
        log_curves(paths.history_file(name, seed), key)
        if registered:
            log_model(model, config, name, tags)
    shutil.rmtree(BACKUP_ROOT / key, ignore_errors=True)  # finished: a rerun starts afresh
    print(f"{key}: val_accuracy {summary['final']['val_accuracy']:.4f} (best {summary['best']['val_accuracy']:.4f}, "
          f"epoch {summary['best']['val_accuracy_epoch']}), {summary['wall_time_s']} s")


def log_curves(history_csv: Path, title: str) -> None:
    """The history table and its plot, as artifacts of the active run."""
    from pipeline.visualize.curves import plot_history

    mlflow.log_artifact(str(history_csv), "history")
    with tempfile.TemporaryDirectory() as scratch:
        png = Path(scratch) / f"{title}_curves.png"
        plot_history(history_csv, png, title=title)
        mlflow.log_artifact(str(png), "figures")
