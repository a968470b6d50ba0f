"""optuna-dashboard, started as docs/search.md says, on the storage of a finished search, lists its study."""
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from pipeline import search
from pipeline.config import load_config
from tests.test_search import MODEL, fake_fit, tiny_study  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow  # a real server
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def studies_listed(port: int) -> list[str]:
    """The names of the studies the dashboard's own API lists (what its start page shows)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as answer:
        return [study["study_name"] for study in json.load(answer)["study_summaries"]]


def test_the_dashboard_lists_a_finished_search(tiny_study, monkeypatch):
    monkeypatch.setattr(search, "fit_model", fake_fit(value_of=lambda hp: hp.learning_rate))
    config = load_config(tiny_study / "params.yaml")
    search.run(config, MODEL)
    name = search.study_name(config, MODEL)

    port = free_port()
    server = subprocess.Popen([shutil.which("optuna-dashboard"), f"sqlite:///{tiny_study / 'optuna.db'}",
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                listed = studies_listed(port)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not start"
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert listed == [name]
