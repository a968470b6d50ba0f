"""One list of models: pipeline/registry.py. The CLI, params.yaml, dvc.yaml and CI follow it."""
import os
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
    return DVC["stages"]["tune"]["foreach"]


def test_dvc_models_map_is_the_registry():
    models = dvc_models()
    assert list(models) == list(REGISTRY)
    for name, spec in REGISTRY.items():
        module = spec.builder.split(".")[0]
        assert models[name]["task"] == spec.task
        assert models[name]["needs"] == ("${data.root}/raw/vgg16" if spec.uses_vgg16 else f"pipeline/models/{module}.py")


@pytest.mark.parametrize("stage", PER_MODEL_STAGES)
def test_every_per_model_stage_iterates_the_map(stage):
    assert DVC["stages"][stage]["foreach"] is dvc_models()  # one YAML anchor, not four copies


def test_report_declares_every_cifar10_model_s_params():
    """The report builds each CIFAR-10 network (to count its parameters) with its params."""
    declared = DVC["stages"]["report"]["params"]
    assert [f"train.{name}" for name, spec in REGISTRY.items() if spec.task == "cifar10"] == \
        [key for key in declared if key.startswith("train.")]


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


def test_ci_trains_every_model_of_the_registry_briefly(project):
    """CI runs the whole DAG (every train@ stage) under the params its subset script writes:
    each model of the registry, at most two epochs, on 50 images per class."""
    mirror = project / "mirror"
    mirror.mkdir()
    for name in ("cifar-10-python.tar.gz", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        (mirror / name).write_bytes(name.encode())
    subprocess.run([sys.executable, str(ROOT / ".ci" / "subset_params.py"), str(mirror)], cwd=project,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    config = load_config(project / "params.yaml")
    assert config.data.subset_per_class == 50
    # The rebuilt CIFAR-10 archive passes as sources.cifar10.also_accepted's, with params as committed.
    assert config.sources.cifar10 == load_config(ROOT / "params.yaml").sources.cifar10
    for name in REGISTRY:
        params = config.model(name)
        assert params.epochs <= 2, name
        assert params.fine_tune is None or params.fine_tune.epochs <= 1, name
    commands = (ROOT / ".ci" / "pipeline").read_text().splitlines()
    assert "python .ci/subset_params.py \"$MIRROR\"" in commands
    assert "dvc repro" in commands  # no target: every stage of dvc.yaml, whose models are the registry's


def test_dvc_metrics_show_lists_only_the_compared_numbers_one_row_per_model(tmp_path):
    """Split counts, per-class scores and hyperparameters live in reports/, which DVC does not
    list as metrics: `dvc metrics show` prints one row per model (and per further seed of a
    from-scratch model) with a few columns."""
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
    seeds = load_config(ROOT / "params.yaml").replicate.seeds
    replicas = [paths.replicate_metrics(name, seed) for name in REGISTRY if not REGISTRY[name].uses_vgg16
                for seed in seeds]
    for path in replicas:
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(json.dumps(compared))
    for task in ("cats_dogs", "cifar10"):
        (project / paths.split_summary(task)).parent.mkdir(parents=True, exist_ok=True)
        (project / paths.split_summary(task)).write_text(json.dumps(others))
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=project,
                           capture_output=True, text=True, check=True)
    (workspace,) = json.loads(shown.stdout).values()
    files = workspace["data"]
    assert set(files) == {paths.eval_metrics(name).as_posix() for name in REGISTRY} | {p.as_posix() for p in replicas}
    assert all(set(entry["data"]) == set(compared) for entry in files.values())
