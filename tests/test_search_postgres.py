"""`python -m pipeline search <model>` with several workers: two processes work on one study in a real PostgreSQL server.

The server is Debian's PostgreSQL (`.ci/run` installs it), started on 127.0.0.1 on a free port
in a temporary folder and stopped at the end. Without it the test fails with one line saying
how to install it; `python -m pytest -m "not slow"` leaves it out.
"""
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import optuna
import psycopg2
import pytest

from pipeline import paths, search, tracking
from tests.conftest import ROOT
from tests.fixtures import set_params
from tests.test_search import DEFAULTS, MODEL, SEARCH, study_of, write_cifar_split

SERVER_USER = "postgres"  # the server refuses to run as root
N_TRIALS = 4
pytestmark = pytest.mark.slow
WORKER_TIMEOUT_S = 600


def server_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if (p.parent / "pg_ctl").exists()]
    return max(found, key=lambda folder: float(folder.parent.name)) if found else None


def as_server_user() -> list[str]:
    """Run a server command as the unprivileged user when the tests run as root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True)
    return ["runuser", "-u", SERVER_USER, "--"]


def server(run_as: list[str], *command) -> None:
    """Run a server tool; on failure show what it said and the server's log."""
    result = subprocess.run([*run_as, *map(str, command)], capture_output=True, text=True)
    if result.returncode:
        log = Path(command[command.index("-l") + 1]) if "-l" in command else None
        details = log.read_text()[-2000:] if log and log.exists() else ""
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stdout}{result.stderr}{details}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway server; yields its SQLAlchemy URL prefix, e.g. postgresql+psycopg2://postgres@127.0.0.1:5433."""
    binaries = server_bin()
    if binaries is None:
        pytest.fail("PostgreSQL server not found (no /usr/lib/postgresql/*/bin/initdb): "
                    "install it with `apt-get install postgresql`", pytrace=False)
    run_as = as_server_user()
    folder = Path(tempfile.mkdtemp(prefix="search-postgres-"))  # in /tmp: the server user can reach it
    data, port = folder / "data", free_port()
    if run_as:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
    server(run_as, binaries / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    # -F: no fsync, a test server need not survive a power cut.
    options = f"-h 127.0.0.1 -p {port} -k {folder} -F"
    server(run_as, binaries / "pg_ctl", "-D", data, "-l", folder / "server.log", "-o", options, "-w", "-t", "60",
           "start")
    try:
        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE optuna")
            cursor.execute("CREATE DATABASE mlflow")
        connection.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*run_as, binaries / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def start_worker(project: Path, environment: dict, index: int) -> subprocess.Popen:
    log = open(project / f"worker-{index}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "pipeline", "search", MODEL], cwd=project, env=environment,
                            stdout=log, stderr=subprocess.STDOUT)


def test_two_workers_share_one_study(postgres, project, monkeypatch):
    write_cifar_split(project)
    set_params(project / "params.yaml", **{**SEARCH, "search.n_trials": N_TRIALS})
    storage, store = f"{postgres}/optuna", f"{postgres}/mlflow"
    # Create both schemas before the workers start, as a shared deployment would: two processes
    # creating the same tables at the same moment can collide in PostgreSQL's catalogue.
    optuna.storages.RDBStorage(storage).engine.dispose()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    tracking.use_experiment("cifar10")

    environment = {**os.environ, search.STORAGE_ENV: storage, "PYTHONPATH": str(ROOT)}
    workers = [start_worker(project, environment, index) for index in range(2)]
    try:
        codes = [worker.wait(timeout=WORKER_TIMEOUT_S) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    logs = "\n".join((project / f"worker-{i}.log").read_text()[-2000:] for i in range(2))
    assert codes == [0, 0], logs

    study = optuna.load_study(study_name=study_of(project), storage=storage)
    finished = study.get_trials(states=search.FINISHED)
    numbers = [trial.number for trial in study.trials]
    assert len(set(numbers)) == len(numbers)
    # Each worker stops once the two together reach n_trials: at most the other's trial in flight over.
    assert N_TRIALS <= len(finished) <= N_TRIALS + 1
    pids = {trial.user_attrs["worker"].rsplit(":", 1)[1] for trial in finished}
    assert pids == {str(worker.pid) for worker in workers}, logs
    assert study.trials[0].params == DEFAULTS  # params.yaml's values first, whichever worker ran them

    # The result (written last by the worker that finished last) is the database's best trial.
    best = optuna.load_study(study_name=study_of(project), storage=storage).best_trial
    record = json.loads(paths.search_result(MODEL).read_text())
    assert (record["trial"], record["value"]) == (best.number, best.value)
    assert {key: record[key] for key in best.params} == best.params

    # MLflow in PostgreSQL too: a parent run per worker, each trial nested under its worker's parent.
    parents = mlflow.search_runs(experiment_names=["cifar10"], filter_string=f"tags.mlflow.runName = '{study_of(project)}'")
    assert len(parents) == 2
    parent_of = dict(zip(parents["tags.worker"], parents["run_id"]))
    runs = mlflow.search_runs(experiment_names=["cifar10"], filter_string=f"tags.study = '{study_of(project)}'")
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert (children["tags.mlflow.parentRunId"] == children["tags.worker"].map(parent_of)).all()
    assert sorted(int(number) for number in children["tags.trial"]) == sorted(numbers)
    assert set(runs["status"]) <= {"FINISHED", "KILLED"}  # none left RUNNING
