"""A tracking server that is down, or is no MLflow server, fails every command that talks to
MLflow within seconds, with one line naming its address (MLflow's client alone retries a
refused connection for minutes before it says so)."""
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.__main__ import main
from tests.conftest import ROOT
from tests.fixtures import make_cifar10_split
from tests.test_serving import free_port

FAIL_WITHIN_S = 10


class NotMlflow(BaseHTTPRequestHandler):
    """A web server, but not MLflow's: 404 for everything."""

    def do_GET(self):
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(params=["refused", "not MLflow"])
def dead_server(request, project, monkeypatch, tmp_path):
    """MLFLOW_TRACKING_URI at a closed port, or at a web server that is not MLflow's (404 for /health).

    MLflow's retries are cut to one quick try here, so that without the check these tests fail
    in seconds (with a traceback) rather than after minutes; the check does not depend on them."""
    if request.param == "refused":
        url, expected = f"http://127.0.0.1:{free_port()}", "unreachable: [Errno 111] Connection refused"
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), NotMlflow)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        request.addfinalizer(server.shutdown)
        url, expected = f"http://127.0.0.1:{server.server_port}", "it answers /health with HTTP 404"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    return url, expected


def assert_one_line_in_time(command, capsys, url, expected):
    started = time.monotonic()
    code = main(command)
    elapsed = time.monotonic() - started
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: MLflow tracking server {url}: {expected}")
    assert elapsed < FAIL_WITHIN_S


@pytest.mark.parametrize("command", [["train", "cifar10_naive"], ["evaluate", "cifar10_naive"],
                                     ["visualize", "cifar10_naive"], ["train", "cifar10_naive", "1"],
                                     ["predict", "--model", "models:/cifar10_naive@champion", "photo.jpg"],
                                     ["predict", "--model", "runs:/0123456789abcdef0123456789abcdef/model",
                                      "photo.jpg"]],
                         ids=lambda command: " ".join(command[:3]))
def test_a_dead_tracking_server_is_one_line_within_seconds(dead_server, capsys, command):
    """Before any work: training, scoring and drawing are not done only to be lost."""
    assert_one_line_in_time(command, capsys, *dead_server)


def test_a_search_with_a_dead_tracking_server_is_one_line_within_seconds(dead_server, project, capsys):
    make_cifar10_split(project / "data" / "split" / "cifar10", {"train": 2, "val": 1, "test": 1})
    assert_one_line_in_time(["search", "cifar10_naive"], capsys, *dead_server)


@pytest.mark.slow
def test_predict_with_a_dead_tracking_server_and_mlflow_defaults(project, tmp_path):
    """As a user meets it, MLflow's retries as they are: one line within seconds, not minutes
    of silence. (A subprocess, so that the failure without the check is a timeout.)"""
    url = f"http://127.0.0.1:{free_port()}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_HTTP_")}
    env |= {"MLFLOW_TRACKING_URI": url, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipeline", "predict", "--model", "models:/cats_dogs_naive@champion", "x.jpg"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: MLflow tracking server {url}: unreachable: [Errno 111] Connection refused; start it, or point "
        f"MLFLOW_TRACKING_URI at one that runs"]
