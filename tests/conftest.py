"""Shared test set-up: a quiet TensorFlow and a params.yaml copy per test."""
import os
import shutil
from pathlib import Path

import mlflow
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent


def enter_project(root: Path, patch: pytest.MonkeyPatch) -> Path:
    """Work inside `root` as a project: a copy of params.yaml, its own MLflow store, no mirror."""
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    patch.chdir(root)
    patch.delenv("PIPELINE_DATA_MIRROR", raising=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # the client keeps the last URI set in this process otherwise
    return root


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch project folder holding a copy of params.yaml; the tests run inside it."""
    return enter_project(tmp_path, monkeypatch)
