"""Where an MLflow run came from, as its tags: the git commit, whether the working tree had
uncommitted changes, and under `dvc exp run` the DVC experiment's name and baseline commit.

MLflow asks every registered run-context provider for tags when any run starts. This one is
registered through the `mlflow.run_context_provider` entry point of pyproject.toml, so once the
project is installed (`pip install -e .`), runs started by other means (a notebook, `mlflow run`)
are tagged too; the pipeline's own runs also pass `source_tags()` themselves.

It is a module of its own, beside the `pipeline` package rather than in it: MLflow loads the
provider in every process that imports it, and loading the package there would shadow the copy
of the package that a served model carries.
"""
from __future__ import annotations

import os
import subprocess

from mlflow.tracking.context.abstract_context import RunContextProvider

# What DVC sets for a stage's command under `dvc exp run`, and the tag each becomes.
DVC_EXPERIMENT = {"DVC_EXP_NAME": "dvc_exp_name", "DVC_EXP_BASELINE_REV": "dvc_exp_baseline_rev"}


def git(*args: str) -> str | None:
    """git's answer in the current folder (DVC runs a queued experiment in a copy); none outside a repository."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def source_tags() -> dict[str, str]:
    tags = {}
    commit = git("rev-parse", "HEAD")
    if commit:
        tags["git_commit"] = commit
        changes = git("status", "--porcelain", "--untracked-files=no")
        tags["git_dirty"] = "true" if changes else "false"
    tags.update({tag: os.environ[variable] for variable, tag in DVC_EXPERIMENT.items() if os.environ.get(variable)})
    return tags


class SourceContext(RunContextProvider):
    def in_context(self) -> bool:
        return True

    def tags(self) -> dict[str, str]:
        return source_tags()
