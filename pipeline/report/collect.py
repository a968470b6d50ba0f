"""Every run the report speaks of: one row per model and seed, read from the files its stages left.

A run is recorded when both its metrics (evaluate) and its training summary (train) exist.
Whether they are up to date is DVC's concern: its DAG reruns a stale training before the report.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.registry import REGISTRY, TASKS

COLUMNS = ["model", "seed", "val_accuracy", "test_accuracy", "wall_time_s", "cpu_kind", "parameters", "stand_in"]


def read_json(path: Path) -> dict | None:
    """The file's content; none where it does not exist."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PipelineError(f"{path} is no JSON: {error}") from None


def cpu_kind(machine: dict) -> str:
    """The CPU and the vector instructions its kernels use: what decides a run's last digits."""
    return machine["cpu"] + (f" ({machine['isa']})" if machine.get("isa") else "")


def is_stand_in(summary: dict) -> bool:
    """Trained on VGG16 weights other than ImageNet's (a test's stand-in): its accuracy means nothing."""
    return summary.get("vgg16_weights", "imagenet") != "imagenet"


def read_run(model: str, seed: int) -> dict | None:
    """One run's row; none where either of its files is missing."""
    metrics = read_json(paths.eval_metrics(model, seed))
    summary = read_json(paths.train_summary(model, seed))
    if metrics is None or summary is None:
        return None
    return {"model": model, "seed": seed,
            "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
            "wall_time_s": summary["wall_time_s"], "cpu_kind": cpu_kind(summary["machine"]),
            "parameters": summary["parameters"], "stand_in": is_stand_in(summary)}


def runs(config: Config) -> pd.DataFrame:
    """The recorded runs, in the registry's order of models and params.yaml's order of seeds."""
    found = [read_run(model, seed) for model in REGISTRY for seed in config.seeds]
    return pd.DataFrame([row for row in found if row], columns=COLUMNS)


def measured(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose accuracy means something: none trained on stand-in VGG16 weights."""
    return runs[~runs["stand_in"].astype(bool)]


def of_model(runs: pd.DataFrame, model: str) -> pd.DataFrame:
    return runs[runs["model"] == model]


def splits() -> dict[str, dict]:
    """Each task's split summary, where the split has run."""
    found = {task: read_json(paths.split_summary(task)) for task in TASKS}
    return {task: split for task, split in found.items() if split}
