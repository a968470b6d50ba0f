"""Shared test set-up: a quiet TensorFlow and a params.yaml copy per test."""
import os
import shutil
from pathlib import Path

import mlflow
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch project folder holding a copy of params.yaml; the tests run inside it."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_DATA_MIRROR", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # the client keeps the last URI set in this process otherwise
    return tmp_path
