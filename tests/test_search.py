"""`python -m pipeline search <model>`: a tiny Optuna study end to end on a fake CIFAR-10 split,
its MLflow runs, its result in searches/ (params.yaml untouched, or its values written in with
--apply, comments kept), params.yaml's values as the first trial, resuming a killed search and
ending its MLflow runs, pruning, the study named after everything a trial depends on (training code
included), and bad search ranges."""
import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pipeline import paths, search, tracking
from pipeline.__main__ import main
from pipeline.config import load_config
from pipeline.train import Hyperparameters, hyperparameters
from tests.conftest import ROOT
from tests.fixtures import CIFAR_CLASSES, set_params

MODEL = "cifar10_naive"
# The model's params.yaml values lie inside the searched ranges: its first trial is as short as the rest.
DEFAULTS = {"epochs": 2, "learning_rate": 0.001, "batch_size": 32}
SEARCH = {**{f"train.{MODEL}.{key}": value for key, value in DEFAULTS.items()},
          "search.n_trials": 3, "search.epochs": {"low": 1, "high": 2},
          "search.learning_rate": {"low": 0.0001, "high": 0.01}, "search.batch_size": [16, 32],
          "search.pruner": "median", "search.storage": "sqlite:///optuna.db"}


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


def code_copy(folder: Path, monkeypatch) -> Path:
    """A copy of dvc.yaml and the package, where the search reads the training code it hashes."""
    folder.mkdir()
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    shutil.copytree(ROOT / "pipeline", folder / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(search, "PROJECT", folder)
    return folder


@pytest.fixture
def tiny_study(project):
    """A project with a fake split and a search small enough for a test."""
    write_cifar_split(project)
    set_params(project / "params.yaml", **SEARCH)
    return project


def study_of(project: Path) -> str:
    return search.study_name(load_config(project / "params.yaml"), MODEL)


def load(project: Path) -> optuna.Study:
    return optuna.load_study(study_name=study_of(project), storage=f"sqlite:///{project / 'optuna.db'}")


def runs_of(parent_id: str):
    return mlflow.search_runs(experiment_names=["cifar10"], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def parent_runs(project: Path):
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return mlflow.search_runs(experiment_names=["cifar10"], filter_string=f"tags.mlflow.runName = '{study_of(project)}'")


def all_runs():
    return mlflow.search_runs(experiment_names=["cifar10"])


def tried_params(printed: str, params_file: Path):
    """The printed `dvc exp run -S ...` line's overrides applied to `params_file` by DVC's own code
    (what `dvc exp run -S` does to params.yaml); the model's params as training then reads them."""
    from dvc.utils.hydra import apply_overrides

    line = next(line for line in printed.splitlines() if "dvc exp run" in line)
    words = shlex.split(line.split("dvc exp run", 1)[1])
    overrides = [value for flag, value in zip(words, words[1:]) if flag == "-S"]
    assert len(overrides) == 3, line
    apply_overrides(params_file, overrides)
    return load_config(params_file).model(MODEL)


def test_study_end_to_end(tiny_study, capsys):
    params_before = (tiny_study / "params.yaml").read_bytes()
    assert main(["search", MODEL]) == 0

    study = load(tiny_study)
    finished = study.get_trials(states=search.FINISHED)
    assert len(finished) == 3
    assert all(trial.user_attrs["worker"].endswith(f":{os.getpid()}") for trial in finished)
    # params.yaml's values are the first trial; the others are the sampler's.
    assert study.trials[0].params == DEFAULTS
    assert all(trial.params != DEFAULTS for trial in study.trials[1:])
    # Each trial's value is what training keeps: its last epoch's val_accuracy.
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert trial.value == trial.intermediate_values[max(trial.intermediate_values)]

    # One parent run, a nested run per trial carrying its params, state and per-epoch metrics.
    parents = parent_runs(tiny_study)
    assert len(parents) == 1
    parent = parents.iloc[0]
    assert "tags.dvc_stage" not in parents.columns  # no DVC stage runs a search
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
    assert "RUNNING" not in set(all_runs()["status"])

    best = study.best_trial
    assert parent["metrics.best_value"] == pytest.approx(best.value)
    assert int(parent["params.best_epochs"]) == best.params["epochs"]
    artifacts = {a.path for a in client.list_artifacts(parent.run_id, "figures")}
    assert "figures/optimization_history.png" in artifacts
    # Parameter importances need two completed trials: drawn exactly when there are.
    completed = len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert ("figures/param_importances.png" in artifacts) == (completed >= 2)

    # The best trial's hyperparameters and the setting searched under, in searches/<model>.json...
    record = json.loads((tiny_study / "searches" / f"{MODEL}.json").read_text())
    assert record == {**best.params, "value": best.value, "trial": best.number, "study": study_of(tiny_study),
                      "setting": search.search_setting(load_config(), MODEL)}
    assert [p.name for p in (tiny_study / "searches").iterdir()] == [f"{MODEL}.json"]  # no temp file left
    # ...and the command that tries them, on the shipped params.yaml (where train.<model> may be
    # empty) as on this one; training still reads params.yaml alone, untouched.
    printed = capsys.readouterr().out
    for params in (ROOT / "params.yaml", tiny_study / "params.yaml"):
        shutil.copy(params, tiny_study / "tried.yaml")
        tried = tried_params(printed, tiny_study / "tried.yaml")
        assert (tried.epochs, tried.learning_rate, tried.batch_size) == tuple(best.params[key] for key in DEFAULTS)
    assert (tiny_study / "params.yaml").read_bytes() == params_before
    assert hyperparameters(load_config(), MODEL) == Hyperparameters(**DEFAULTS)


def test_params_values_outside_the_ranges_widen_the_search(tiny_study, monkeypatch):
    """params.yaml's 3 epochs lie beyond search.epochs (1..2): the searched range grows to hold
    them, so the first trial trains exactly params.yaml's values; a resumed search adds no copy."""
    set_params(tiny_study / "params.yaml", **{f"train.{MODEL}.epochs": 3, f"train.{MODEL}.batch_size": 8,
                                              "search.n_trials": 1})
    space = search.search_space(load_config(tiny_study / "params.yaml"), MODEL)
    assert (space.epochs.low, space.epochs.high, space.batch_size) == (1, 3, [16, 32, 8])
    assert main(["search", MODEL]) == 0

    first = load(tiny_study).trials[0]
    assert first.params == {**DEFAULTS, "epochs": 3, "batch_size": 8}
    assert first.distributions["epochs"] == IntDistribution(1, 3)
    assert first.user_attrs["epochs_trained"] == 3
    assert parent_runs(tiny_study).iloc[0]["params.epochs_range"] == "1..3"

    set_params(tiny_study / "params.yaml", **{"search.pruner": "none"})  # the same study, one more trial
    monkeypatch.setenv(search.N_TRIALS_ENV, "2")
    assert main(["search", MODEL]) == 0
    trials = load(tiny_study).trials
    assert len(trials) == 2 and trials[1].params != trials[0].params


def fake_fit(curve: list[float] | None = None, value_of=None):
    """A training whose val_accuracy follows `curve` (or stays at `value_of(hp)`), reported epoch by
    epoch like Keras would."""

    def fit_model(config, name, hp, workdir=None, callbacks=()):
        values = curve if curve is not None else [value_of(hp)] * hp.epochs
        for epoch, value in enumerate(values):
            for callback in callbacks:
                callback.on_epoch_end(epoch, {"val_accuracy": value})
        history = pd.DataFrame({"epoch": range(1, len(values) + 1), "val_accuracy": values})
        return None, history

    return fit_model


def test_trial_value_is_the_last_epochs_not_the_best(tiny_study, monkeypatch):
    """Training keeps the last epoch's model: a trial whose best epoch came earlier is worth its last."""
    set_params(tiny_study / "params.yaml", **{"search.n_trials": 1, "search.pruner": "none",
                                              f"train.{MODEL}.epochs": 3})
    monkeypatch.setattr(search, "fit_model", fake_fit([0.5, 0.9, 0.6]))
    assert main(["search", MODEL]) == 0

    (trial,) = load(tiny_study).trials
    assert trial.value == 0.6
    assert trial.intermediate_values == {3: 0.5, 6: 0.9, 10: 0.6}  # what the pruner saw, by tenths of the schedule
    record = json.loads(paths.search_result(MODEL).read_text())
    assert record["value"] == 0.6
    assert runs_of(parent_runs(tiny_study).iloc[0].run_id)["metrics.final_val_accuracy"].tolist() == [0.6]


def set_params_keeping_comments(params_file: Path, **dotted) -> None:
    """set_params, through a round trip that keeps the file's comments and layout."""
    from ruamel.yaml import YAML

    round_trip = YAML()
    params = round_trip.load(params_file)
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = value
    with params_file.open("w") as file:
        round_trip.dump(params, file)


def comments(text: str) -> list[str]:
    return [line.split("#", 1)[1].strip() for line in text.splitlines() if "#" in line]


def better_than_params(hp) -> float:
    """Any trial but params.yaml's values scores higher: the search's choice differs from them."""
    return 0.5 if hp == Hyperparameters(**DEFAULTS) else 0.6 + hp.learning_rate


def test_apply_writes_the_choice_into_params_yaml_keeping_its_comments(project, monkeypatch, capsys):
    """--apply: the best trial's epochs, learning rate and batch size become train.<model>'s in
    params.yaml, every other value and every comment as they were; training then reads them."""
    write_cifar_split(project)
    set_params_keeping_comments(project / "params.yaml", **{**SEARCH, "search.pruner": "none"})
    before = (project / "params.yaml").read_text()
    assert comments(before) == comments((ROOT / "params.yaml").read_text())  # the shipped file's, all of them
    monkeypatch.setattr(search, "fit_model", fake_fit(value_of=better_than_params))

    assert main(["search", MODEL, "--apply"]) == 0
    record = json.loads(paths.search_result(MODEL).read_text())
    chosen = {key: record[key] for key in DEFAULTS}
    assert chosen != DEFAULTS and record["trial"] != 0
    after = (project / "params.yaml").read_text()
    assert comments(after) == comments(before)
    expected = yaml.safe_load(before)
    expected["train"][MODEL].update(chosen)
    assert yaml.safe_load(after) == expected  # nothing else changed
    assert hyperparameters(load_config(), MODEL) == Hyperparameters(**chosen)
    out = capsys.readouterr().out
    assert f"written into params.yaml (train.{MODEL})" in out and "dvc exp run" not in out


def test_apply_writes_into_the_params_file_the_search_read(tiny_study, monkeypatch):
    """`--params other.yaml search --apply`: the values go where the settings came from."""
    other = tiny_study / "other.yaml"
    shutil.move(tiny_study / "params.yaml", other)
    set_params(other, **{"search.n_trials": 2, "search.pruner": "none"})
    monkeypatch.setattr(search, "fit_model", fake_fit(value_of=better_than_params))
    assert main(["--params", str(other), "search", MODEL, "--apply"]) == 0
    record = json.loads(paths.search_result(MODEL).read_text())
    assert load_config(other).model(MODEL).learning_rate == record["learning_rate"] != DEFAULTS["learning_rate"]
    assert not (tiny_study / "params.yaml").exists()


def test_mlflow_project_tune_entry_point_runs_the_search(tmp_path):
    from tests.test_config import entry_point_command

    environment, argv = entry_point_command(tmp_path, "tune", model=MODEL, n_trials="3", apply="true")
    assert (environment["SEARCH_N_TRIALS"], argv) == ("3", ["search", MODEL, "--apply"])
    environment, argv = entry_point_command(tmp_path, "tune", model=MODEL)
    assert (environment["SEARCH_N_TRIALS"], argv) == ("", ["search", MODEL])  # params.yaml's n_trials


def count_rows(database: Path, query: str, state: str) -> int:
    """Read a database directly: no Optuna or MLflow set-up racing the running worker."""
    try:
        with sqlite3.connect(database, timeout=1) as connection:
            return connection.execute(query, (state,)).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return 0


def count_trials(database: Path, state: str) -> int:
    return count_rows(database, "SELECT count(*) FROM trials WHERE state = ?", state)


def count_runs(database: Path, status: str) -> int:
    return count_rows(database, "SELECT count(*) FROM runs WHERE status = ?", status)


@pytest.mark.slow
def test_killed_search_resumes_keeping_finished_trials(tiny_study, monkeypatch):
    environment = {**os.environ, search.N_TRIALS_ENV: "20", "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "pipeline", "search", MODEL], cwd=tiny_study, env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        database = tiny_study / "optuna.db"
        # Kill it (as a crash would) once a trial has finished and the next one is training:
        # its trial RUNNING in the study, its run RUNNING in MLflow beside the search's.
        while (count_trials(database, "COMPLETE") < 1 or count_trials(database, "RUNNING") < 1
               or count_runs(tiny_study / "mlflow.db", "RUNNING") < 2):
            assert worker.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.5)
        worker.kill()
    finally:
        worker.kill()
        worker.wait()

    before = load(tiny_study)
    kept = {t.number: (t.state, t.value, t.params) for t in before.get_trials(states=search.FINISHED)}
    (orphan,) = before.get_trials(states=(TrialState.RUNNING,))
    (dead_parent,) = parent_runs(tiny_study)["run_id"]
    left_running = set(all_runs().query("status == 'RUNNING'")["tags.mlflow.runName"])
    assert left_running == {study_of(tiny_study), f"trial-{orphan.number}"}  # what the kill left behind

    # A short heartbeat grace lets this test see the orphan failed and retried without waiting.
    monkeypatch.setattr(search, "HEARTBEAT_S", 1)
    monkeypatch.setattr(search, "GRACE_S", 2)
    time.sleep(2)
    assert main(["search", MODEL]) == 0  # search.n_trials is 3

    after = load(tiny_study)
    finished = after.get_trials(states=search.FINISHED)
    assert len(finished) == 3
    assert {t.number: (t.state, t.value, t.params) for t in finished if t.number in kept} == kept
    assert after.trials[orphan.number].state == TrialState.FAIL
    retried = [t for t in finished if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1
    assert orphan.params.items() <= retried[0].params.items()  # what the orphan had drawn before it died
    assert len(after.trials) == len(kept) + 1 + (3 - len(kept))

    # The next worker ended the dead one's runs: its parent KILLED, the orphan's FAILED.
    runs = all_runs().set_index("tags.mlflow.runName")
    assert "RUNNING" not in set(runs["status"])
    assert runs[runs["run_id"] == dead_parent]["status"].tolist() == ["KILLED"]
    orphan_run = runs.loc[f"trial-{orphan.number}"]
    assert (orphan_run["status"], orphan_run["tags.state"]) == ("FAILED", "FAIL")
    assert orphan_run["tags.mlflow.parentRunId"] == dead_parent


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # asked by hand, not by optimize
def test_runs_of_dead_workers_are_ended(tiny_study, monkeypatch):
    """A worker elsewhere whose trial's heartbeat stopped, and one on this machine whose process is
    gone between trials: their runs are ended; a live worker's are left running."""
    monkeypatch.setattr(search, "HEARTBEAT_S", 1)
    monkeypatch.setattr(search, "GRACE_S", 1)
    config = load_config(tiny_study / "params.yaml")
    study = search.load_study(config, MODEL, search.open_storage(f"sqlite:///{tiny_study / 'optuna.db'}"))
    silent, live = study.ask(), study.ask()
    study._storage.record_heartbeat(silent._trial_id)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a real process id, no longer alive

    experiment = tracking.use_experiment("cifar10")
    client, name = mlflow.MlflowClient(), study.study_name

    def start(worker: str, trial=None, parent=None) -> str:
        tags = {"study": name, "worker": worker}
        if trial is not None:
            tags.update({"trial": str(trial.number), "mlflow.parentRunId": parent})
        return client.create_run(experiment, tags=tags).info.run_id

    elsewhere = start("elsewhere:1")
    elsewhere_trial = start("elsewhere:1", silent, elsewhere)
    here = start(f"{socket.gethostname()}:{os.getpid()}")
    here_trial = start(f"{socket.gethostname()}:{os.getpid()}", live, here)
    gone_parent = start(f"{socket.gethostname()}:{gone.pid}")
    time.sleep(2)  # the silent trial's heartbeat is now older than the grace period
    study._storage.record_heartbeat(live._trial_id)

    search.end_dead_runs(study, experiment)
    status = {run_id: client.get_run(run_id).info.status
              for run_id in (elsewhere, elsewhere_trial, here, here_trial, gone_parent)}
    assert status == {elsewhere: "KILLED", elsewhere_trial: "FAILED", here: "RUNNING", here_trial: "RUNNING",
                      gone_parent: "KILLED"}
    assert client.get_run(elsewhere_trial).data.tags["state"] == "FAIL"
    assert load(tiny_study).trials[silent.number].state == TrialState.FAIL


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
            value=1.0, intermediate_values={search.schedule_step(done, epochs): 1.0 for done in range(1, epochs + 1)}))


def run_trial(study: optuna.Study, curve: list[float]) -> bool:
    """A trial whose val accuracy follows `curve` over its epochs, reported as training reports
    it; whether the pruner stopped it. A finished trial is told its last value."""
    trial = study.ask()
    reporter = search.ReportToTrial(trial, total_epochs=len(curve))
    try:
        for epoch, value in enumerate(curve):
            reporter.on_epoch_end(epoch, {"val_accuracy": value})
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return True
    study.tell(trial, curve[-1])
    return False


def rising(start: float, end: float, epochs: int) -> list[float]:
    """A curve that climbs from start to end over the epochs, as under a decaying learning rate."""
    return list(np.linspace(start, end, epochs))


@pytest.mark.parametrize("pruner", ["median", "percentile"])
def test_a_long_trial_is_not_pruned_for_being_mid_schedule(tiny_study, pruner):
    """Short trials settle early (their learning rate has decayed by their last epoch); a long
    one, better at every fraction of its schedule, is still climbing at their last epoch. It
    must be compared with them at the same fraction of its schedule, not at the same epoch."""
    set_params(tiny_study / "params.yaml", **{"search.pruner": pruner})
    study = optuna.create_study(direction="maximize", pruner=search.make_pruner(load_config(), MODEL))
    for _ in range(search.STARTUP_TRIALS):
        assert not run_trial(study, rising(0.50, 0.80, 4))
    assert not run_trial(study, rising(0.52, 0.85, 20))  # below 0.80 until its 13th epoch
    # ...while a long trial that is worse at the same fractions is pruned.
    assert run_trial(study, rising(0.30, 0.60, 20))


@pytest.mark.parametrize("pruner", ["median", "percentile"])
def test_trial_below_the_bar_is_pruned(tiny_study, pruner):
    epochs = search.WARMUP_EPOCHS + 1
    set_params(tiny_study / "params.yaml", **{"search.epochs": {"low": epochs, "high": epochs},
                                              f"train.{MODEL}.epochs": epochs,
                                              "search.n_trials": search.STARTUP_TRIALS + 1, "search.pruner": pruner})
    seed_good_trials(tiny_study, search.STARTUP_TRIALS, epochs)
    assert main(["search", MODEL]) == 0  # one trial left to run

    trial = load(tiny_study).trials[search.STARTUP_TRIALS]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["epochs_trained"] == search.WARMUP_EPOCHS  # judged first after the warm-up
    children = runs_of(parent_runs(tiny_study).iloc[0].run_id)
    assert children["tags.state"].tolist() == ["PRUNED"]
    assert children["status"].tolist() == ["KILLED"]
    record = json.loads(paths.search_result(MODEL).read_text())
    assert (record["trial"], record["value"]) == (0, 1.0)


def pruned_at_warmup(config, finished_values: list[float], value: float, short_trials: int = 0) -> bool:
    """Whether the search's pruner stops a trial scoring `value` at its first judged epoch once
    the finished trials have scored `finished_values` at every epoch (and `short_trials` more
    ended, scoring 1.0, an epoch before it)."""
    study = optuna.create_study(direction="maximize", pruner=search.make_pruner(config, MODEL))
    for finished in finished_values:
        study.add_trial(optuna.trial.create_trial(
            value=finished, intermediate_values={step: finished for step in range(search.WARMUP_EPOCHS)}))
    for _ in range(short_trials):
        study.add_trial(optuna.trial.create_trial(
            value=1.0, intermediate_values={step: 1.0 for step in range(search.WARMUP_EPOCHS - 1)}))
    trial = study.ask()
    for step in range(search.WARMUP_EPOCHS):
        trial.report(value, step)
    return bool(trial.should_prune())


@pytest.mark.parametrize("pruner, percentile, pruned", [
    ("median", 25.0, False),     # 0.7 is above the median, 0.6
    ("percentile", 25.0, True),  # ...but not in the top quarter (above 0.8)
    ("percentile", 50.0, False),
    ("none", 25.0, False),
])
def test_pruner_sets_the_bar_from_params(tiny_study, pruner, percentile, pruned):
    set_params(tiny_study / "params.yaml", **{"search.pruner": pruner, "search.percentile": percentile})
    config = load_config(tiny_study / "params.yaml")
    scores = [0.2, 0.4, 0.6, 0.8, 1.0]
    assert pruned_at_warmup(config, scores, 0.7) is pruned
    assert pruned_at_warmup(config, scores, 0.9) is False


@pytest.mark.parametrize("pruner", ["median", "percentile"])
def test_no_bar_from_fewer_than_three_trials_at_that_epoch(tiny_study, pruner):
    set_params(tiny_study / "params.yaml", **{"search.pruner": pruner})
    config = load_config(tiny_study / "params.yaml")
    short = search.STARTUP_TRIALS  # enough finished trials, but none reached the judged epoch
    assert pruned_at_warmup(config, [1.0, 1.0], 0.1, short_trials=short) is False
    assert pruned_at_warmup(config, [1.0, 1.0, 1.0], 0.1, short_trials=short) is True


@pytest.mark.parametrize(
    "override, key",
    [
        ({"search.learning_rate": {"low": 0.01, "high": 0.001}}, "search.learning_rate"),
        ({"search.learning_rate": {"low": 0.0, "high": 0.01}}, "search.learning_rate"),
        ({"search.learning_rate": {"low": -0.001, "high": 0.01}}, "search.learning_rate"),
        ({"search.epochs": {"low": 5, "high": 2}}, "search.epochs"),
        ({"search.epochs": {"low": 0, "high": 2}}, "search.epochs"),
        ({"search.batch_size": []}, "search.batch_size"),
        ({"search.batch_size": [32, 0]}, "search.batch_size"),
        ({"search.n_trials": 0}, "search.n_trials"),
        ({"search.pruner": "quantile"}, "search.pruner"),
        ({"search.percentile": 0}, "search.percentile"),
        ({"search.percentile": 100}, "search.percentile"),
        ({"search.storage": "not a database url"}, "search.storage"),
    ],
)
def test_bad_search_settings_exit_2_naming_the_key(tiny_study, capsys, override, key):
    set_params(tiny_study / "params.yaml", **override)
    assert main(["search", MODEL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and key in err[0]


def test_bad_trial_count_override_exits_2(tiny_study, capsys, monkeypatch):
    monkeypatch.setenv(search.N_TRIALS_ENV, "many")
    assert main(["search", MODEL]) == 2
    assert search.N_TRIALS_ENV in capsys.readouterr().err


def test_missing_split_says_which_stage_to_run(project, capsys):
    assert main(["search", MODEL]) == 1
    assert "split@cifar10" in capsys.readouterr().err


def test_a_relative_sqlite_study_lies_in_the_project_even_in_a_dvc_temp_experiment(project, monkeypatch):
    config = load_config()
    monkeypatch.delenv(search.STORAGE_ENV, raising=False)
    monkeypatch.setenv("DVC_ROOT", str(project / "original"))  # what `dvc exp run --temp` hands its stages
    assert search.storage_url(config) == f"sqlite:///{project / 'original' / 'optuna.db'}"
    monkeypatch.setenv(search.STORAGE_ENV, "postgresql+psycopg2://optuna@db/optuna")
    assert search.storage_url(config) == "postgresql+psycopg2://optuna@db/optuna"


def nested_trials_of_each_search(project: Path) -> list[int]:
    """For each search run of the model (oldest first), how many trial runs it holds."""
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    searches = mlflow.search_runs(experiment_names=["cifar10"], filter_string=f"tags.model = '{MODEL}'",
                                  order_by=["attributes.start_time ASC"])
    return [len(runs_of(run_id)) for run_id in searches.run_id]


def test_a_new_split_starts_a_new_search_rather_than_reuse_the_finished_one(tiny_study, monkeypatch):
    set_params(tiny_study / "params.yaml", **{"search.n_trials": 2, "search.pruner": "none"})
    monkeypatch.setattr(search, "fit_model", fake_fit([0.5, 0.6]))
    summary = paths.split_summary("cifar10")
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"sha256": "a" * 64}))
    assert main(["search", MODEL]) == 0
    assert main(["search", MODEL]) == 0  # the same split: the finished study, no trial trained again
    summary.write_text(json.dumps({"sha256": "b" * 64}))  # the split stage ran on other data
    assert main(["search", MODEL]) == 0
    assert nested_trials_of_each_search(tiny_study) == [2, 0, 2]
    record = json.loads(paths.search_result(MODEL).read_text())
    assert record["setting"]["split sha256"] == "b" * 64


@pytest.mark.parametrize("change, renames", [
    ("pipeline/models/naive.py", True),  # the network's code (pipeline/models, declared as a folder)
    ("pipeline/data/augment.py", True),  # a file the training stage declares
    ("pipeline/train.py", True),
    ("pipeline/evaluate.py", False),  # code the training does not run
    ("pipeline/visualize/filters.py", False),
])
def test_a_change_to_the_training_code_names_another_study(project, monkeypatch, change, renames):
    """The study's name hashes the .py files that the model's train stage in dvc.yaml depends on:
    a change to one of them starts a new study; a change elsewhere reuses the study."""
    code = code_copy(project / "code", monkeypatch)
    summary = paths.split_summary("cifar10")
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"sha256": "a" * 64}))
    config = load_config()
    before = search.study_name(config, MODEL)
    assert before.startswith(f"search-{MODEL}-")
    with (code / change).open("a") as file:
        file.write("# another version\n")
    assert (search.study_name(config, MODEL) != before) is renames


def test_the_training_code_is_what_dvc_yaml_declares_for_the_model_s_group(project, monkeypatch):
    """Declaring another file in the training stage's deps changes the code hashed, for the models
    of that stage's group only; the code is the project's wherever the search runs from."""
    from_elsewhere = search.code_checksum(MODEL)  # from a folder without dvc.yaml or code: the project's
    monkeypatch.chdir(ROOT)
    assert search.code_checksum(MODEL) == from_elsewhere
    monkeypatch.chdir(project)
    code = code_copy(project / "code", monkeypatch)
    hashed = {path.relative_to(code).as_posix() for path in search.training_code(MODEL)}
    assert {"pipeline/train.py", "pipeline/models/naive.py", "pipeline/data/augment.py"} <= hashed
    assert "pipeline/evaluate.py" not in hashed and "pipeline/inference.py" not in hashed
    before = {model: search.code_checksum(model) for model in (MODEL, "cats_dogs_naive", "cats_dogs_vgg16_frozen")}
    dvc_yaml = yaml.safe_load((code / "dvc.yaml").read_text())
    stage = dvc_yaml["stages"]["train_cifar10"]  # its deps: an alias of train_cats_dogs's, replaced not changed
    stage["deps"] = [*stage["deps"], "pipeline/inference.py"]
    (code / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    assert code / "pipeline" / "inference.py" in search.training_code(MODEL)
    after = {model: search.code_checksum(model) for model in before}
    assert {model: after[model] != before[model] for model in before} == {
        MODEL: True, "cats_dogs_naive": False, "cats_dogs_vgg16_frozen": False}
