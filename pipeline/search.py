"""`python -m pipeline search <model>` (or `mlflow run . -e tune`): an Optuna search of epochs,
learning rate and batch size, run only when asked, never by `dvc repro`.

The study lives in a database (SQLite by default, any SQLAlchemy URL, PostgreSQL for several
workers at once), so a killed search resumes where it stopped and several processes, on one
machine or many, can work on the same study. Every trial reports its validation accuracy after
each epoch, and the pruner stops the ones that fall behind. MLflow gets one parent run per
invocation and a nested run per trial. params.yaml's values are the study's first trial, so the
search can only improve on them on validation.

The best hyperparameters go to searches/<model>.json, and the command to try them as a DVC
experiment is printed; `--apply` writes them into params.yaml's `train.<model>` instead, so the
next `dvc repro` trains with them. Training only ever reads params.yaml.

A search's setting is everything a trial's value depends on: the search space, the seed, the
data (subset size and the split's checksum), the model's params and the training code (the code
files its training stage in dvc.yaml depends on). The study is named after it, so a change to
any of them starts a new study rather than reuse a finished one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import keras
import mlflow
import optuna
import sqlalchemy
import yaml
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from cnn_study_run_context import source_tags
from pipeline import paths, tracking
from pipeline.config import PARAMS_FILE, Config, Range, Search
from pipeline.data.split import split_checksum
from pipeline.errors import ConfigError, PipelineError
from pipeline.atomic import replacing_file, write_text_atomically
from pipeline.registry import get_spec, group
from pipeline.train import Hyperparameters, fit_model, vgg16_weights

STORAGE_ENV = "OPTUNA_STORAGE"  # overrides search.storage, e.g. a shared PostgreSQL for many workers
N_TRIALS_ENV = "SEARCH_N_TRIALS"  # overrides search.n_trials (the MLproject's n_trials parameter)
PROJECT = Path(__file__).resolve().parent.parent  # where dvc.yaml and the code lie, whatever the current folder
HYPERPARAMETERS = ("epochs", "learning_rate", "batch_size")
MONITOR = "val_accuracy"
HEARTBEAT_S = 30  # a running trial proves its worker alive this often...
GRACE_S = 120  # ...and one silent this long is failed (its worker died) and queued again once
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials that count towards n_trials
STARTUP_TRIALS = 5  # Optuna's default: fewer make the bar a coin toss
BAR_TRIALS = 3  # finished trials that reached an epoch before it has a bar: one is not a crowd
WARMUP_EPOCHS = 2  # the first epoch a trial can be pruned at: the first is mostly the random start
SCHEDULE_STEPS = 10  # trials are compared at each tenth of their schedule, whatever its length
RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


@contextlib.contextmanager
def experimental_allowed():
    """Heartbeats, the retry callback and the matplotlib plots are marked experimental; they work."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def schedule_step(epochs_done: int, total_epochs: int) -> int:
    """The tenths of its schedule a trial has trained: the step it reports at.

    The learning rate decays over a trial's own epochs, so epoch 5 of a 5-epoch trial has
    settled while epoch 5 of a 30-epoch one has not. Compared at the same fraction of their
    schedules, a long trial is not pruned for being mid-schedule.
    """
    return math.floor(SCHEDULE_STEPS * epochs_done / total_epochs)


class ReportToTrial(keras.callbacks.Callback):
    """Report the validation accuracy at each tenth of the schedule; end the trial when the pruner says so.

    A step is reported at the first epoch that reaches it (a short trial skips some), and no
    trial is judged before WARMUP_EPOCHS epochs. Epochs are counted across the phases of a
    two-phase (fine-tuning) fit, where Keras' epoch index starts again at 0.
    """

    def __init__(self, trial: optuna.Trial, total_epochs: int, monitor: str = MONITOR):
        super().__init__()
        self.trial, self.total_epochs, self.monitor = trial, total_epochs, monitor
        self.epochs = 0  # epochs trained so far, over all phases
        self.last_step = -1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise PipelineError(f"'{self.monitor}' is not among the epoch's metrics: {sorted(logs or {})}")
        step = schedule_step(self.epochs, self.total_epochs)
        if step == self.last_step:
            return
        self.last_step = step
        self.trial.report(float(value), step=step)
        if self.epochs >= WARMUP_EPOCHS and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {self.epochs} of {self.total_epochs} "
                                     f"({self.monitor} {float(value):.4f})")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def params_values(config: Config, model: str) -> dict:
    """params.yaml's epochs, learning rate and batch size for the model."""
    params = config.model(model)
    return {key: getattr(params, key) for key in HYPERPARAMETERS}


def widen(span: Range, value: float) -> Range:
    return Range(low=min(span.low, value), high=max(span.high, value))


def search_space(config: Config, model: str) -> Search:
    """search's ranges, widened where needed to hold params.yaml's values: those are the first trial,
    and a trial outside the space would leave the sampler a point it cannot place."""
    space, start = config.search, params_values(config, model)
    sizes = space.batch_size if start["batch_size"] in space.batch_size else [*space.batch_size, start["batch_size"]]
    return space.model_copy(update={"epochs": widen(space.epochs, start["epochs"]),
                                    "learning_rate": widen(space.learning_rate, start["learning_rate"]),
                                    "batch_size": sizes})


def storage_url(config: Config) -> str:
    """The study's database; a relative SQLite file lies in the project, even in a DVC temp experiment."""
    return tracking.in_project(os.environ.get(STORAGE_ENV) or config.search.storage)


def n_trials(config: Config) -> int:
    raw = os.environ.get(N_TRIALS_ENV)
    if not raw:
        return config.search.n_trials
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{N_TRIALS_ENV}: must be a whole number of at least 1, not {raw!r}")
    return int(raw)


def open_storage(url: str) -> RDBStorage:
    """The study's database. The heartbeat tells a trial whose worker died (left RUNNING
    forever) from a live one: once silent for GRACE_S it is failed and re-queued once."""
    key = STORAGE_ENV if os.environ.get(STORAGE_ENV) else "search.storage"
    try:
        with experimental_allowed():
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as error:
        raise ConfigError(f"{key}: not a usable SQLAlchemy URL ({error})") from None
    except sqlalchemy.exc.OperationalError as error:
        raise PipelineError(f"{key}: cannot open the study database: {error.orig}") from None


def make_pruner(config: Config, model: str) -> optuna.pruners.BasePruner:
    """A trial whose best validation accuracy so far falls below the bar at its step (a tenth of
    its schedule) stops: the median of the finished trials at that step, or for the percentile
    pruner the value their top search.percentile % reach (33: the top third; benchmarks/pruning.py
    measures the choice). No trial is judged before WARMUP_EPOCHS epochs, nor before
    STARTUP_TRIALS trials finished, nor at a step fewer than BAR_TRIALS finished trials reported."""
    if config.search.pruner in ("median", "percentile"):  # Optuna's median pruner is its 50th percentile
        keep = 50.0 if config.search.pruner == "median" else config.search.percentile
        return optuna.pruners.PercentilePruner(keep, n_startup_trials=STARTUP_TRIALS,
                                               n_min_trials=BAR_TRIALS)
    if config.search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=SCHEDULE_STEPS)
    return optuna.pruners.NopPruner()


def load_study(config: Config, model: str, storage: RDBStorage) -> optuna.Study:
    """Create the study, or load it with its finished trials when it already exists."""
    study = optuna.create_study(study_name=study_name(config, model), storage=storage, direction="maximize",
                                load_if_exists=True)
    # A resumed search (or another worker) must not redraw the same first random points, so
    # the seed moves on with the trials already there; a fresh study uses the params' seed.
    study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(study.trials))
    study.pruner = make_pruner(config, model)
    return study


def suggest(trial: optuna.Trial, space: Search) -> Hyperparameters:
    return Hyperparameters(
        epochs=trial.suggest_int("epochs", int(space.epochs.low), int(space.epochs.high)),
        learning_rate=trial.suggest_float("learning_rate", space.learning_rate.low, space.learning_rate.high,
                                          log=True),
        batch_size=trial.suggest_categorical("batch_size", list(space.batch_size)),
    )


def total_epochs(config: Config, model: str, hp: Hyperparameters) -> int:
    """The epochs of a trial's whole schedule: the searched ones plus any fine-tuning phase."""
    fine_tune = config.model(model).fine_tune
    return hp.epochs + (fine_tune.epochs if fine_tune else 0)


def make_objective(config: Config, model: str, experiment_id: str):
    """Train one trial's model inside its own nested MLflow run. Training keeps the last epoch's
    model, so the trial's value is the last epoch's val_accuracy, not the best epoch's."""
    space = search_space(config, model)

    def objective(trial: optuna.Trial) -> float:
        end_dead_runs(trial.study, experiment_id)  # Optuna has just failed the trials of dead workers
        hp = suggest(trial, space)
        trial.set_user_attr("worker", worker_id())
        reporter = ReportToTrial(trial, total_epochs(config, model, hp))
        state = TrialState.FAIL
        mlflow.start_run(nested=True, run_name=f"trial-{trial.number}",
                         tags={**source_tags(), "trial": trial.number, "worker": worker_id(),
                               "study": study_name(config, model)})
        try:
            mlflow.log_params(asdict(hp))
            with tempfile.TemporaryDirectory(prefix=f"{model}-trial-{trial.number}-") as workdir:
                _, history = fit_model(config, model, hp, workdir=Path(workdir), callbacks=(reporter,))
            value = float(history[MONITOR].iloc[-1])
            mlflow.log_metric(f"final_{MONITOR}", value)
            state = TrialState.COMPLETE
            return value
        except optuna.TrialPruned:
            state = TrialState.PRUNED
            raise
        finally:
            trial.set_user_attr("epochs_trained", reporter.epochs)
            mlflow.set_tag("state", state.name)
            mlflow.end_run(RUN_STATUS[state])
            keras.backend.clear_session()  # the next trial builds its model on a clean slate

    return objective


def counts(study: optuna.Study) -> dict[str, int]:
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    return {state.name.lower(): states.count(state) for state in (*FINISHED, TrialState.FAIL)}


def n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def search_params(config: Config, model: str, target: int) -> dict:
    space = search_space(config, model)
    return {"n_trials": target, "pruner": space.pruner, "timeout_s": space.timeout_s, "seed": config.seed,
            "epochs_range": f"{int(space.epochs.low)}..{int(space.epochs.high)}",
            "learning_rate_range": f"{space.learning_rate.low:g}..{space.learning_rate.high:g}",
            "batch_size_choices": ",".join(map(str, space.batch_size))}


def write_result(path: Path, study: optuna.Study, setting: dict) -> dict:
    """The best trial's hyperparameters and the setting searched under, written whole or not at all."""
    best = study.best_trial
    record = {**{key: best.params[key] for key in HYPERPARAMETERS},
              "value": best.value, "trial": best.number, "study": study.study_name, "setting": setting}
    write_text_atomically(path, json.dumps(record, indent=2) + "\n")
    return record


def apply_to_params(params_file: Path, model: str, record: dict) -> None:
    """The search's choice into params.yaml's train.<model>, comments and layout kept."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: the file stays as its author wrote it, but for these three values
    params = yaml.load(params_file)
    for key in HYPERPARAMETERS:
        params["train"][model][key] = record[key]
    with replacing_file(params_file) as partial:
        yaml.dump(params, partial)


def worker_gone(worker: str) -> bool:
    """Whether a worker (host:pid) is known dead: only one on this machine can be asked directly."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        pass
    return False


def end_dead_runs(study: optuna.Study, experiment_id: str) -> None:
    """End the MLflow runs that killed workers left RUNNING: a trial's run once Optuna failed the
    trial (its heartbeat stopped), and the worker's parent run with it; on this machine, also the
    runs of a worker whose process is gone (killed between trials)."""
    with experimental_allowed():
        optuna.storages.fail_stale_trials(study)
    failed = {trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    client = mlflow.MlflowClient()
    running = client.search_runs([experiment_id], f"tags.study = '{study.study_name}' and "
                                                  "attributes.status = 'RUNNING'")
    trials = [r for r in running if "trial" in r.data.tags]
    parents = {r.info.run_id: r for r in running if "trial" not in r.data.tags}
    dead = {run_id for run_id, r in parents.items() if worker_gone(r.data.tags.get("worker", ""))}
    for run in trials:
        parent = run.data.tags.get("mlflow.parentRunId")
        if int(run.data.tags["trial"]) in failed or parent in dead:
            client.set_tag(run.info.run_id, "state", TrialState.FAIL.name)
            client.set_terminated(run.info.run_id, RUN_STATUS[TrialState.FAIL])
            dead.add(parent)
    for run_id in dead & parents.keys():
        client.set_terminated(run_id, "KILLED")


def log_plots(study: optuna.Study) -> None:
    """Optuna's optimisation history and, once two trials completed, the parameter importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    figures = {"optimization_history": plots.plot_optimization_history}
    if counts(study)["complete"] >= 2:
        figures["param_importances"] = plots.plot_param_importances
    with tempfile.TemporaryDirectory() as scratch, experimental_allowed():
        for name, plot in figures.items():
            axes = plot(study)
            axes.figure.savefig(Path(scratch) / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(axes.figure)
        mlflow.log_artifacts(scratch, "figures")


def log_summary(study: optuna.Study, record: dict) -> None:
    mlflow.log_params({f"best_{key}": record[key] for key in HYPERPARAMETERS})
    mlflow.log_metrics({"best_value": record["value"], "best_trial": record["trial"],
                        **{f"trials_{state}": count for state, count in counts(study).items()}})
    mlflow.set_tag("best_trial", record["trial"])
    log_plots(study)


def check_inputs(config: Config, model: str) -> None:
    """Fail once, before the search, rather than in every trial."""
    spec = get_spec(model)
    split = paths.split_dir(config, spec.task)
    if not split.is_dir():
        raise PipelineError(f"{split}: not found; run `dvc repro split@{spec.task}` first")
    if spec.uses_vgg16:
        vgg16_weights(config)


def run(config: Config, model: str, apply: bool = False, params_file: Path = PARAMS_FILE) -> None:
    check_inputs(config, model)
    target = n_trials(config)
    url = storage_url(config)
    study = load_study(config, model, open_storage(url))
    remaining = max(target - n_finished(study), 0)
    print(f"{study.study_name}: {len(study.trials)} trials already in the study, {remaining} to run")
    if remaining:  # params.yaml's values first (once per study): the search can only improve on them
        study.enqueue_trial(params_values(config, model), skip_if_exists=True)

    task = get_spec(model).task
    experiment_id = tracking.use_experiment(task)
    end_dead_runs(study, experiment_id)  # runs left RUNNING by workers killed before this one started
    tags = {**source_tags(), "model": model, "task": task, "study": study.study_name,
            "storage": sqlalchemy.engine.make_url(url).render_as_string(hide_password=True),
            "worker": worker_id()}
    with mlflow.start_run(run_name=study.study_name, tags=tags):
        mlflow.log_params(search_params(config, model, target))
        if remaining:
            # n_trials bounds this worker; the callback stops it once all workers together reach it.
            study.optimize(make_objective(config, model, experiment_id), n_trials=remaining,
                           timeout=config.search.timeout_s, catch=(PipelineError,), gc_after_trial=True,
                           callbacks=[optuna.study.MaxTrialsCallback(target, states=FINISHED)])
        if counts(study)["complete"] == 0:
            raise PipelineError(f"{study.study_name}: no trial completed ({counts(study)}); see its runs in MLflow")
        record = write_result(paths.search_result(model), study, search_setting(config, model))
        log_summary(study, record)
    trials = ", ".join(f"{count} {state}" for state, count in counts(study).items())
    print(f"{model}: best {MONITOR} {record['value']:.4f} (trial {record['trial']}: epochs {record['epochs']}, "
          f"learning_rate {record['learning_rate']:.3g}, batch_size {record['batch_size']}); "
          f"trials: {trials} -> {paths.search_result(model)}")
    if apply:
        apply_to_params(params_file, model, record)
        print(f"written into {params_file} (train.{model}); `dvc repro` trains with them")
    else:
        # ++: set the key, or add it where the model's section leaves it to its task's recipe
        values = " ".join(f"-S ++train.{model}.{key}={record[key]}" for key in HYPERPARAMETERS)
        print(f"try them: dvc exp run {values}   (or search again with --apply to write them into params.yaml)")


# --- The search's setting: what a trial's value depends on, and so what names its study ---

def training_code(model: str) -> list[Path]:
    """The Python files the model's training stage depends on in dvc.yaml: one list of training code."""
    stage = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"][f"train_{group(model)}"]
    declared = [PROJECT / dep for dep in stage["deps"] if dep.startswith("pipeline/")]
    return sorted(file for path in declared for file in ([path] if path.suffix == ".py" else path.rglob("*.py")))


def code_checksum(model: str) -> str:
    """sha256 over the names and bytes of the model's training code."""
    digest = hashlib.sha256()
    for path in training_code(model):
        digest.update(f"{path.relative_to(PROJECT).as_posix()}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def flatten(values: dict, prefix: str) -> dict:
    """{"a": {"b": 1}} -> {"prefix.a.b": 1}: one key per setting, named as params.yaml names it."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}.{key}"))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def search_setting(config: Config, model: str) -> dict:
    """What a trial's value depends on, one params-style key per setting."""
    space = config.search.model_dump(mode="json", exclude={"storage", "n_trials", "timeout_s"})
    return {
        **flatten(space, "search"),
        "seed": config.seed,
        "data.subset_per_class": config.data.subset_per_class,
        **flatten(config.model(model).model_dump(mode="json"), f"train.{model}"),
        "split sha256": split_checksum(get_spec(model).task),
        "training code sha256": code_checksum(model),
    }


def study_name(config: Config, model: str) -> str:
    """One study per model and setting: workers with the same setting share it."""
    setting = json.dumps(search_setting(config, model), sort_keys=True)
    return f"search-{model}-{hashlib.sha256(setting.encode()).hexdigest()[:8]}"
