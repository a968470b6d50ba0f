"""Further seeds: the default seed's training with only the seed changed, scored as the model is
used, tracked in MLflow under its seed, and never registered."""
import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline import paths, replicate, train
from pipeline.__main__ import main
from pipeline.config import load_config
from tests.fixtures import make_cifar10_split, set_params

NAME = "cifar10_naive"


@pytest.fixture
def tiny(project):
    make_cifar10_split(project / "data" / "split" / "cifar10", {"train": 6, "val": 2, "test": 2})
    set_params(project / "params.yaml", **{f"train.{NAME}.epochs": 2, f"train.{NAME}.batch_size": 16,
                                           "replicate.seeds": [1, 2]})
    return load_config(project / "params.yaml")


def test_a_further_seed_is_tracked_with_its_seed_and_registers_nothing(tiny):
    replicate.run(tiny, NAME, 1)

    scores = json.loads(paths.replicate_metrics(NAME, 1).read_text())
    assert set(scores) == {"val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_wall_time_s"}
    summary = json.loads(paths.replicate_summary(NAME, 1).read_text())
    assert summary["epochs"] == 2 and summary["wall_time_s"] == scores["train_wall_time_s"]
    assert list(pd.read_csv(paths.replicate_history(NAME, 1))["epoch"]) == [1, 2]

    (run,) = mlflow.search_runs(experiment_names=["cifar10"], output_format="list")
    assert run.info.run_name == f"{NAME} seed 1" and run.info.status == "FINISHED"
    assert run.data.tags["seed"] == "1" and run.data.tags["dvc_stage"] == f"replicate_cifar10@{NAME}-1"
    assert run.data.params["seed"] == "1"
    assert round(run.data.metrics["test_accuracy"], 4) == scores["test_accuracy"]
    # the registry, the champion and predict keep the default seed's model
    assert mlflow.MlflowClient().search_model_versions(f"name = '{NAME}'") == []
    assert not paths.model_file(NAME).exists() and not paths.run_id_file(NAME).exists()


def test_only_the_seed_changes(tiny, project):
    """Seed 1's training is the default training under seed 1: same curves digit for digit."""
    replicate.run(tiny, NAME, 1)
    hp = train.hyperparameters(tiny, NAME)
    _, under_seed_1 = train.fit_model(tiny.model_copy(update={"seed": 1}), NAME, hp, workdir=project / "a")
    replicated = pd.read_csv(paths.replicate_history(NAME, 1))
    np.testing.assert_allclose(replicated["loss"], under_seed_1["loss"], rtol=1e-6)
    _, under_default_seed = train.fit_model(tiny, NAME, hp, workdir=project / "b")
    assert not np.allclose(under_default_seed["loss"], under_seed_1["loss"])


@pytest.mark.parametrize("model, seed, message", [
    (NAME, 3, "seed 3 is not in replicate.seeds"),
    ("cats_dogs_vgg16_frozen", 1, "only the from-scratch models"),
])
def test_a_seed_not_listed_or_a_vgg16_model_is_one_line(tiny, capsys, model, seed, message):
    assert main(["replicate", model, str(seed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
