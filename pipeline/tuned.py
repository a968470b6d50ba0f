"""tuned/<model>.json: the epochs, learning rate and batch size a search chose, and what it searched under.

A search's setting is everything a trial's value depends on: the search space, the seed, the
data (subset size and the split's checksum), the model's params and the training code. The
study is named after it, so a change to any of them starts a new study rather than reuse a
finished one; the tuned file keeps it, so training can tell a file from another setting and
say what differs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline import paths
from pipeline.config import Config
from pipeline.data.split import split_checksum
from pipeline.errors import PipelineError
from pipeline.registry import get_spec

PACKAGE = Path(__file__).resolve().parent
# The code a trial runs: a change to it can change every trial's value.
TRAINING_CODE = ("train.py", "models", "data/loaders.py", "data/augment.py")
SHORT = 12  # characters of a checksum shown in a message


def code_checksum() -> str:
    """sha256 over the names and bytes of the training code's Python files."""
    digest = hashlib.sha256()
    for entry in TRAINING_CODE:
        found = [PACKAGE / entry] if entry.endswith(".py") else sorted((PACKAGE / entry).glob("*.py"))
        for path in found:
            digest.update(f"{path.relative_to(PACKAGE).as_posix()}\0".encode() + path.read_bytes())
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
    space = config.tune.model_dump(mode="json", exclude={"storage", "n_trials", "timeout_s"})
    return {
        **flatten(space, "tune"),
        "seed": config.seed,
        "data.subset_per_class": config.data.subset_per_class,
        **flatten(config.model(model).model_dump(mode="json"), f"train.{model}"),
        "split sha256": split_checksum(get_spec(model).task),
        "training code sha256": code_checksum(),
    }


def study_name(config: Config, model: str) -> str:
    """One study per model and setting: workers with the same setting share it."""
    setting = json.dumps(search_setting(config, model), sort_keys=True)
    return f"tune-{model}-{hashlib.sha256(setting.encode()).hexdigest()[:8]}"


def shown(value: object) -> str:
    text = json.dumps(value)
    return text[1:SHORT + 1] + "…" if isinstance(value, str) and len(value) > SHORT else text


def differences(recorded: dict, current: dict) -> list[str]:
    """'key old -> new' for each setting that changed since the search."""
    keys = sorted(set(recorded) | set(current))
    return [f"{key} {shown(recorded.get(key))} -> {shown(current.get(key))}"
            for key in keys if recorded.get(key) != current.get(key)]


def searched_values(config: Config, model: str) -> dict:
    """The search's choice for `model`, once sure it was made under today's setting."""
    path = paths.tuned_file(model)
    refresh = f"run `dvc repro tune@{model}` or set train.use_tuned: false"
    if not path.exists():
        raise PipelineError(f"{path}: not found; {refresh}")
    record = json.loads(path.read_text())
    if record.get("source") != "search":
        raise PipelineError(f"{path}: holds params.yaml's values, not a search's; {refresh}")
    changed = differences(record.get("setting", {}), search_setting(config, model))
    if changed:
        raise PipelineError(f"{path}: searched under other settings ({'; '.join(changed)}); {refresh}")
    return record
