"""One list of models: pipeline/registry.py. The CLI, params.yaml, dvc.yaml and CI follow it."""
import os
import subprocess
import sys

import pytest
import yaml

from pipeline import paths
from pipeline.__main__ import build_parser
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.registry import REGISTRY, evaluate_stage, train_stage
from tests.conftest import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PER_MODEL_STAGES = ("train", "evaluate", "visualize", "search")
SEEDS = load_config(ROOT / "params.yaml").seeds
MODEL_ITEM, SEED_ITEM = "${item.model}", "${item.seed}"  # what the matrices' paths are written with


@pytest.fixture(scope="module")
def dvc_stages(tmp_path_factory) -> list[str]:
    """The stages DVC makes of the shipped dvc.yaml and params.yaml, matrices and foreach resolved."""
    import shutil

    from tests.fixtures import dvc

    project = tmp_path_factory.mktemp("stages")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, project / name)
    dvc(project, "init", "--no-scm", "-q")
    return dvc(project, "stage", "list", "--name-only").split()


def test_dvc_trains_and_evaluates_every_model_of_the_registry_once_per_seed(dvc_stages):
    for kind, stage_name in (("train", train_stage), ("evaluate", evaluate_stage)):
        assert sorted(s for s in dvc_stages if s.startswith(f"{kind}_")) == \
            sorted(stage_name(name, seed) for name in REGISTRY for seed in SEEDS)
    assert sorted(s for s in dvc_stages if s.startswith("visualize@")) == sorted(f"visualize@{n}" for n in REGISTRY)
    assert not [s for s in dvc_stages if s.startswith(("tune", "search", "replicate"))]  # run only when asked


def test_a_model_s_files_are_named_after_its_run_key_in_dvc_yaml():
    """The matrix's outputs are the paths the code writes, for every model and seed."""
    outs = [next(iter(out)) if isinstance(out, dict) else out for out in DVC["stages"]["train_cifar10"]["outs"]]
    written = [paths.model_file, paths.run_id_file, paths.train_summary, paths.history_file]
    assert outs == [f(MODEL_ITEM, SEED_ITEM).as_posix() for f in written]
    metrics = [next(iter(out)) for out in DVC["stages"]["evaluate_cifar10"]["metrics"]]
    assert metrics == [paths.eval_metrics(MODEL_ITEM, SEED_ITEM).as_posix()]


def test_dvc_plots_hold_every_run_s_curves_and_confusion_matrix():
    """Whole folders: each model and seed is a plot without a line of dvc.yaml naming it."""
    plots = [next(iter(entry)) for entry in DVC["plots"]]
    folders = [paths.history_file(MODEL_ITEM, SEED_ITEM).parent, paths.confusion_file(MODEL_ITEM, SEED_ITEM).parent]
    assert plots == [f"{folder.as_posix()}/" for folder in folders]


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
    """CI runs the whole DAG (every train_<group>@ stage) under the params its subset script
    writes: each model of the registry under the default seed alone, at most two epochs, on 50
    images per class."""
    mirror = project / "mirror"
    mirror.mkdir()
    for name in ("cifar-10-python.tar.gz", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        (mirror / name).write_bytes(name.encode())
    subprocess.run([sys.executable, str(ROOT / ".ci" / "subset_params.py"), str(mirror)], cwd=project,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    config = load_config(project / "params.yaml")
    assert config.data.subset_per_class == 50
    assert config.seeds == [42]  # one training per model
    # The rebuilt CIFAR-10 archive passes as sources.cifar10.also_accepted's, with params as committed.
    assert config.sources.cifar10 == load_config(ROOT / "params.yaml").sources.cifar10
    for name in REGISTRY:
        params = config.model(name)
        assert params.epochs <= 2, name
        assert params.fine_tune is None or params.fine_tune.epochs <= 1, name
    commands = (ROOT / ".ci" / "pipeline").read_text().splitlines()
    assert "python .ci/subset_params.py \"$MIRROR\"" in commands
    assert "dvc repro" in commands  # no target: every stage of dvc.yaml, whose models are the registry's


def test_dvc_metrics_show_lists_only_the_compared_numbers_one_row_per_run(tmp_path):
    """Split counts, per-class scores and hyperparameters live in reports/, which DVC does not
    list as metrics: `dvc metrics show` prints one row per model and seed, with a few columns."""
    import json
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, project / name)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    compared = {"val_accuracy": 0.8, "val_loss": 0.5, "test_accuracy": 0.81, "test_loss": 0.49,
                "train_wall_time_s": 60.0}
    others = {"per_class": {"cats": {"recall": 0.8}}, "hyperparameters": {"epochs": 2}, "totals": {"train": 14}}
    runs = [(name, seed) for name in REGISTRY for seed in SEEDS]
    for name, seed in runs:
        for path, content in ((paths.eval_metrics(name, seed), compared), (paths.train_summary(name, seed), others),
                              (paths.test_summary(name, seed), others)):
            (project / path).parent.mkdir(parents=True, exist_ok=True)
            (project / path).write_text(json.dumps(content))
    for task in ("cats_dogs", "cifar10"):
        (project / paths.split_summary(task)).parent.mkdir(parents=True, exist_ok=True)
        (project / paths.split_summary(task)).write_text(json.dumps(others))
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=project,
                           capture_output=True, text=True, check=True)
    (workspace,) = json.loads(shown.stdout).values()
    files = workspace["data"]
    assert set(files) == {paths.eval_metrics(name, seed).as_posix() for name, seed in runs}
    assert len(files) == len(REGISTRY) * len(SEEDS)
    assert all(set(entry["data"]) == set(compared) for entry in files.values())
