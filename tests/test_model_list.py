"""One list of models: pipeline/registry.py. The CLI, params.yaml, dvc.yaml and CI follow it."""
import subprocess
import sys

import pytest
import yaml

from pipeline.__main__ import build_parser
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.registry import REGISTRY
from tests.conftest import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PER_MODEL_STAGES = ("tune", "train", "evaluate", "visualize")


def dvc_models() -> dict:
    (models,) = [entry["models"] for entry in DVC["vars"] if "models" in entry]
    return models


def test_dvc_models_map_is_the_registry():
    models = dvc_models()
    assert list(models) == list(REGISTRY)
    for name, spec in REGISTRY.items():
        assert models[name]["task"] == spec.task
        assert models[name]["needs"] == ("raw/vgg16" if spec.uses_vgg16 else f"split/{spec.task}")


@pytest.mark.parametrize("stage", PER_MODEL_STAGES)
def test_every_per_model_stage_iterates_the_map(stage):
    assert DVC["stages"][stage]["foreach"] == "${models}"


def test_dvc_comparison_plots_hold_each_task_s_models():
    plots = {name: spec for entry in DVC["plots"] for name, spec in entry.items()}
    for task in ("cats_dogs", "cifar10"):
        names = [name for name, spec in REGISTRY.items() if spec.task == task]
        for metric in ("val_accuracy", "val_loss"):
            y = plots[f"{task} {metric.replace('_', ' ')}"]["y"]
            assert y == {f"reports/history/{name}.csv": metric for name in names}


def test_cli_choices_are_the_registry():
    parser = build_parser()
    stages = parser._subparsers._group_actions[0].choices
    for stage in PER_MODEL_STAGES:
        (argument,) = [a for a in stages[stage]._actions if a.dest == "model"]
        assert list(argument.choices) == list(REGISTRY)
    shown = subprocess.run([sys.executable, "-m", "pipeline", "train", "--help"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    assert all(name in shown for name in REGISTRY)


def test_params_must_configure_every_model(project):
    text = (project / "params.yaml").read_text()
    start = text.index("  cifar10_residual_4x4:")
    (project / "params.yaml").write_text(text[:start])  # the last model's section cut off
    with pytest.raises(ConfigError, match=r"train\.cifar10_residual_4x4: missing key"):
        load_config(project / "params.yaml")


def test_params_refuse_a_model_the_registry_lacks(project):
    text = (project / "params.yaml").read_text()
    text = text.replace("  cifar10_naive:", "  cifar10_resnet50:\n    epochs: 1\n    learning_rate: 0.1\n"
                        "    batch_size: 8\n    image_size: 32\n  cifar10_naive:")
    (project / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"train\.cifar10_resnet50: unknown key"):
        load_config(project / "params.yaml")


def test_ci_trains_the_registry_not_its_own_list():
    script = (ROOT / ".ci" / "pipeline").read_text()
    assert "for model in REGISTRY:" in script
    assert not [name for name in REGISTRY if name != "cats_dogs_naive" and name in script]


def test_dvc_metrics_show_lists_only_the_compared_numbers_one_row_per_model(tmp_path):
    """Split counts, per-class scores and hyperparameters live in reports/, which DVC does not
    list as metrics: `dvc metrics show` prints one row per model with a few columns."""
    import json
    import shutil

    from pipeline import paths

    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, project / name)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    compared = {"val_accuracy": 0.8, "val_loss": 0.5, "test_accuracy": 0.81, "test_loss": 0.49,
                "train_wall_time_s": 60.0}
    others = {"per_class": {"cats": {"recall": 0.8}}, "hyperparameters": {"epochs": 2}, "totals": {"train": 14}}
    for name in REGISTRY:
        for path, content in ((paths.eval_metrics(name), compared), (paths.train_summary(name), others),
                              (paths.test_summary(name), others)):
            (project / path).parent.mkdir(parents=True, exist_ok=True)
            (project / path).write_text(json.dumps(content))
    for task in ("cats_dogs", "cifar10"):
        (project / paths.split_summary(task)).parent.mkdir(parents=True, exist_ok=True)
        (project / paths.split_summary(task)).write_text(json.dumps(others))
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=project,
                           capture_output=True, text=True, check=True)
    (workspace,) = json.loads(shown.stdout).values()
    files = workspace["data"]
    assert set(files) == {paths.eval_metrics(name).as_posix() for name in REGISTRY}
    assert all(set(entry["data"]) == set(compared) for entry in files.values())
