"""One list of models: pipeline/models' REGISTRY. The CLI, params.yaml, dvc.yaml and CI follow it."""
import subprocess
import sys

import pytest
import yaml

from pipeline.__main__ import build_parser
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.models import REGISTRY
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
    text = text.replace("  cifar10_naive:\n", "  cifar10_resnet50:\n    epochs: 1\n    learning_rate: 0.1\n"
                        "    batch_size: 8\n    image_size: 32\n  cifar10_naive:\n")
    (project / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"train\.cifar10_resnet50: unknown key"):
        load_config(project / "params.yaml")


def test_ci_trains_the_registry_not_its_own_list():
    script = (ROOT / ".ci" / "pipeline").read_text()
    assert "for model in REGISTRY:" in script
    assert not [name for name in REGISTRY if name != "cats_dogs_naive" and name in script]
