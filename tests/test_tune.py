"""tune@<model>: a tiny Optuna study end to end on a fake CIFAR-10 split, its MLflow runs, the
tuned file that training reads, resuming a killed search, pruning, and bad search ranges."""
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pipeline import tune
from pipeline.__main__ import main
from pipeline.config import load_config
from pipeline.train import Hyperparameters, hyperparameters
from tests.conftest import ROOT
from tests.fixtures import CIFAR_CLASSES, set_params

MODEL = "cifar10_naive"
SEARCH = {"tune.n_trials": 3, "tune.epochs": {"low": 1, "high": 2},
          "tune.learning_rate": {"low": 0.0001, "high": 0.01}, "tune.batch_size": [16, 32],
          "tune.pruner": "median", "tune.storage": "sqlite:///optuna.db"}


def write_cifar_split(root: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """data/split/cifar10/{train,val,test}.npz and classes.json, as the split stage writes them.

    Each class is a faint colour under strong noise: learnable, but not in two epochs.
    """
    folder = root / "data" / "split" / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(10, 1, 1, 3))
    for split, per_class in (sizes or {"train": 20, "val": 5, "test": 5}).items():
        labels = np.repeat(np.arange(10), per_class)
        noise = rng.integers(0, 256, size=(len(labels), 32, 32, 3))
        images = (0.8 * noise + 0.2 * colours[labels]).astype(np.uint8)
        np.savez_compressed(folder / f"{split}.npz", images=images, labels=labels.astype(np.int64))
    (folder / "classes.json").write_text(json.dumps(CIFAR_CLASSES) + "\n")
    return folder


@pytest.fixture
def tiny_study(project):
    """A project with a fake split and a search small enough for a test."""
    write_cifar_split(project)
    set_params(project / "params.yaml", **SEARCH)
    return project


def study_of(project: Path) -> str:
    return tune.study_name(load_config(project / "params.yaml"), MODEL)


def load(project: Path) -> optuna.Study:
    return optuna.load_study(study_name=study_of(project), storage=f"sqlite:///{project / 'optuna.db'}")


def runs_of(parent_id: str):
    return mlflow.search_runs(experiment_names=["cifar10"], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def parent_runs(project: Path):
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return mlflow.search_runs(experiment_names=["cifar10"], filter_string=f"tags.mlflow.runName = '{study_of(project)}'")


def test_study_end_to_end(tiny_study):
    assert main(["tune", MODEL]) == 0

    study = load(tiny_study)
    finished = study.get_trials(states=tune.FINISHED)
    assert len(finished) == 3
    assert all(trial.user_attrs["worker"].endswith(f":{os.getpid()}") for trial in finished)

    # One parent run, a nested run per trial carrying its params, state and per-epoch metrics.
    parents = parent_runs(tiny_study)
    assert len(parents) == 1
    parent = parents.iloc[0]
    children = runs_of(parent.run_id)
    assert sorted(children["tags.mlflow.runName"]) == ["trial-0", "trial-1", "trial-2"]
    client = mlflow.MlflowClient()
    for trial in study.trials:
        child = children[children["tags.mlflow.runName"] == f"trial-{trial.number}"].iloc[0]
        assert child["tags.state"] == trial.state.name
        assert int(child["params.epochs"]) == trial.params["epochs"]
        assert int(child["params.batch_size"]) == trial.params["batch_size"]
        steps = [m.step for m in client.get_metric_history(child.run_id, "val_accuracy")]
        assert steps == list(range(1, trial.user_attrs["epochs_trained"] + 1))

    best = study.best_trial
    assert parent["metrics.best_value"] == pytest.approx(best.value)
    assert int(parent["params.best_epochs"]) == best.params["epochs"]
    artifacts = {a.path for a in client.list_artifacts(parent.run_id, "figures")}
    assert "figures/optimization_history.png" in artifacts
    if len(study.get_trials(states=(TrialState.COMPLETE,))) >= 2:
        assert "figures/param_importances.png" in artifacts

    # The best trial's hyperparameters, which training takes when told to.
    record = json.loads((tiny_study / "tuned" / f"{MODEL}.json").read_text())
    assert record == {**best.params, "value": best.value, "trial": best.number, "study": study_of(tiny_study)}
    set_params(tiny_study / "params.yaml", **{"train.use_tuned": True})
    assert hyperparameters(load_config(), MODEL) == Hyperparameters(**best.params)


def count_trials(database: Path, state: str) -> int:
    """Read the study database directly: no Optuna storage set-up racing the running worker."""
    try:
        with sqlite3.connect(database, timeout=1) as connection:
            return connection.execute("SELECT count(*) FROM trials WHERE state = ?", (state,)).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return 0


def test_killed_search_resumes_keeping_finished_trials(tiny_study, monkeypatch):
    environment = {**os.environ, tune.N_TRIALS_ENV: "20", "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "pipeline", "tune", MODEL], cwd=tiny_study, env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        database = tiny_study / "optuna.db"
        # Kill it (as a crash would) once a trial has finished and the next one is training.
        while count_trials(database, "COMPLETE") < 1 or count_trials(database, "RUNNING") < 1:
            assert worker.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.5)
        worker.kill()
    finally:
        worker.kill()
        worker.wait()

    before = load(tiny_study)
    kept = {t.number: (t.state, t.value, t.params) for t in before.get_trials(states=tune.FINISHED)}
    (orphan,) = before.get_trials(states=(TrialState.RUNNING,))

    # A short heartbeat grace lets this test see the orphan failed and retried without waiting.
    monkeypatch.setattr(tune, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune, "GRACE_S", 2)
    time.sleep(2)
    assert main(["tune", MODEL]) == 0  # tune.n_trials is 3

    after = load(tiny_study)
    finished = after.get_trials(states=tune.FINISHED)
    assert len(finished) == 3
    assert {t.number: (t.state, t.value, t.params) for t in finished if t.number in kept} == kept
    assert after.trials[orphan.number].state == TrialState.FAIL
    retried = [t for t in finished if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1
    assert orphan.params.items() <= retried[0].params.items()  # what the orphan had drawn before it died
    assert len(after.trials) == len(kept) + 1 + (3 - len(kept))


def seed_good_trials(project: Path, count: int, epochs: int) -> None:
    """Trials that scored a perfect 1.0 at every epoch: any real trial falls below their median."""
    study = optuna.create_study(study_name=study_of(project), storage=f"sqlite:///{project / 'optuna.db'}",
                                direction="maximize")
    distributions = {"epochs": IntDistribution(epochs, epochs),
                     "learning_rate": FloatDistribution(0.0001, 0.01, log=True),
                     "batch_size": CategoricalDistribution([16, 32])}
    for _ in range(count):
        study.add_trial(optuna.trial.create_trial(
            params={"epochs": epochs, "learning_rate": 0.001, "batch_size": 32}, distributions=distributions,
            value=1.0, intermediate_values={step: 1.0 for step in range(epochs)}))


@pytest.mark.parametrize("pruner", ["median", "percentile"])
def test_trial_below_the_bar_is_pruned(tiny_study, pruner):
    epochs = tune.WARMUP_EPOCHS + 1
    set_params(tiny_study / "params.yaml", **{"tune.epochs": {"low": epochs, "high": epochs},
                                              "tune.n_trials": tune.STARTUP_TRIALS + 1, "tune.pruner": pruner})
    seed_good_trials(tiny_study, tune.STARTUP_TRIALS, epochs)
    assert main(["tune", MODEL]) == 0  # one trial left to run

    trial = load(tiny_study).trials[tune.STARTUP_TRIALS]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["epochs_trained"] == tune.WARMUP_EPOCHS  # judged first after the warm-up
    children = runs_of(parent_runs(tiny_study).iloc[0].run_id)
    assert children["tags.state"].tolist() == ["PRUNED"]
    assert children["status"].tolist() == ["KILLED"]
    record = json.loads((tiny_study / "tuned" / f"{MODEL}.json").read_text())
    assert (record["trial"], record["value"]) == (0, 1.0)


def pruned_at_warmup(config, finished_values: list[float], value: float, short_trials: int = 0) -> bool:
    """Whether the search's pruner stops a trial scoring `value` at its first judged epoch once
    the finished trials have scored `finished_values` at every epoch (and `short_trials` more
    ended, scoring 1.0, an epoch before it)."""
    study = optuna.create_study(direction="maximize", pruner=tune.make_pruner(config, MODEL))
    for finished in finished_values:
        study.add_trial(optuna.trial.create_trial(
            value=finished, intermediate_values={step: finished for step in range(tune.WARMUP_EPOCHS)}))
    for _ in range(short_trials):
        study.add_trial(optuna.trial.create_trial(
            value=1.0, intermediate_values={step: 1.0 for step in range(tune.WARMUP_EPOCHS - 1)}))
    trial = study.ask()
    for step in range(tune.WARMUP_EPOCHS):
        trial.report(value, step)
    return bool(trial.should_prune())


@pytest.mark.parametrize("pruner, percentile, pruned", [
    ("median", 25.0, False),     # 0.7 is above the median, 0.6
    ("percentile", 25.0, True),  # ...but not in the top quarter (above 0.8)
    ("percentile", 50.0, False),
    ("none", 25.0, False),
])
def test_pruner_sets_the_bar_from_params(tiny_study, pruner, percentile, pruned):
    set_params(tiny_study / "params.yaml", **{"tune.pruner": pruner, "tune.percentile": percentile})
    config = load_config(tiny_study / "params.yaml")
    scores = [0.2, 0.4, 0.6, 0.8, 1.0]
    assert pruned_at_warmup(config, scores, 0.7) is pruned
    assert pruned_at_warmup(config, scores, 0.9) is False


@pytest.mark.parametrize("pruner", ["median", "percentile"])
def test_no_bar_from_fewer_than_three_trials_at_that_epoch(tiny_study, pruner):
    set_params(tiny_study / "params.yaml", **{"tune.pruner": pruner})
    config = load_config(tiny_study / "params.yaml")
    short = tune.STARTUP_TRIALS  # enough finished trials, but none reached the judged epoch
    assert pruned_at_warmup(config, [1.0, 1.0], 0.1, short_trials=short) is False
    assert pruned_at_warmup(config, [1.0, 1.0, 1.0], 0.1, short_trials=short) is True


@pytest.mark.parametrize(
    "override, key",
    [
        ({"tune.learning_rate": {"low": 0.01, "high": 0.001}}, "tune.learning_rate"),
        ({"tune.learning_rate": {"low": 0.0, "high": 0.01}}, "tune.learning_rate"),
        ({"tune.learning_rate": {"low": -0.001, "high": 0.01}}, "tune.learning_rate"),
        ({"tune.epochs": {"low": 5, "high": 2}}, "tune.epochs"),
        ({"tune.epochs": {"low": 0, "high": 2}}, "tune.epochs"),
        ({"tune.batch_size": []}, "tune.batch_size"),
        ({"tune.batch_size": [32, 0]}, "tune.batch_size"),
        ({"tune.n_trials": 0}, "tune.n_trials"),
        ({"tune.pruner": "quantile"}, "tune.pruner"),
        ({"tune.percentile": 0}, "tune.percentile"),
        ({"tune.percentile": 100}, "tune.percentile"),
        ({"tune.storage": "not a database url"}, "tune.storage"),
    ],
)
def test_bad_search_settings_exit_2_naming_the_key(tiny_study, capsys, override, key):
    set_params(tiny_study / "params.yaml", **override)
    assert main(["tune", MODEL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and key in err[0]


def test_bad_trial_count_override_exits_2(tiny_study, capsys, monkeypatch):
    monkeypatch.setenv(tune.N_TRIALS_ENV, "many")
    assert main(["tune", MODEL]) == 2
    assert tune.N_TRIALS_ENV in capsys.readouterr().err


def test_missing_split_says_which_stage_to_run(project, capsys):
    assert main(["tune", MODEL]) == 1
    assert "split@cifar10" in capsys.readouterr().err
