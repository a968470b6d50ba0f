"""Stage replicate_<task>@<model>-<seed>: one model trained again under a further seed, for the
spread between seeds.

The training is the default seed's (same params, split and code) with only `seed` changed, so
the weights' initialisation, the shuffles and the augmentation draws differ. Its MLflow run is
tagged with its seed and registers no model: the registry, the champion and `predict` keep the
default seed's. Its record is the model's test and val accuracy as used (mirror average
included) and its training summary; the model itself is not kept.
"""
from __future__ import annotations

import json
import shutil

import mlflow

from pipeline import evaluate, paths, tracking, train
from pipeline.atomic import write_text_atomically
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.registry import REGISTRY, replicate_stage


def check_replicable(config: Config, name: str, seed: int) -> None:
    if REGISTRY[name].uses_vgg16:
        raise ConfigError(f"{name}: only the from-scratch models are trained under further seeds")
    if seed not in config.replicate.seeds:
        raise ConfigError(f"seed {seed} is not in replicate.seeds {config.replicate.seeds}")


def run(config: Config, name: str, seed: int) -> None:
    check_replicable(config, name, seed)
    task, hp = REGISTRY[name].task, train.hyperparameters(config, name)  # a search is the default seed's
    config = config.model_copy(update={"seed": seed})
    key, stage = f"{name}-{seed}", replicate_stage(name, seed)
    params = train.logged_params(config, name, hp)
    tags = train.training_tags(config, name)
    resumed = train.resumable_run_id(key, task, params)
    with tracking.training_run(name, task, tags, resume_run_id=resumed, replicate_stage=stage) as active:
        model, history, summary = train.train_in_run(config, name, hp, key, active.info.run_id, params, tags)
        write_text_atomically(paths.replicate_history(name, seed), history.to_csv(index=False))
        write_text_atomically(paths.replicate_summary(name, seed), json.dumps(summary, indent=2) + "\n")
        train.log_curves(paths.replicate_history(name, seed), key)
        scores = scores_as_used(config, name, model, summary["wall_time_s"])
        write_text_atomically(paths.replicate_metrics(name, seed), json.dumps(scores, indent=2) + "\n")
        mlflow.log_metrics({"test_accuracy": scores["test_accuracy"], "test_loss": scores["test_loss"],
                            "saved_model_val_accuracy": scores["val_accuracy"],
                            "saved_model_val_loss": scores["val_loss"]})
    shutil.rmtree(train.BACKUP_ROOT / key, ignore_errors=True)  # finished: a rerun starts afresh
    print(f"{name} seed {seed}: test accuracy {scores['test_accuracy']:.4f}, val {scores['val_accuracy']:.4f}, "
          f"{summary['wall_time_s']} s")


def scores_as_used(config: Config, name: str, model, wall_time_s: float) -> dict:
    """What metrics/<model>.json holds for the default seed: val and test accuracy and loss of
    the model as it is used, and the training's wall time."""
    labels, probabilities = evaluate.split_probabilities(config, name, model, "test")
    test = {"test_accuracy": evaluate.accuracy(labels, probabilities),
            "test_loss": evaluate.training_loss(labels, probabilities, config.model(name).label_smoothing)}
    return evaluate.compared_metrics(evaluate.val_metrics(config, name, model), test, wall_time_s)
