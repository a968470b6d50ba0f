"""One recipe per task (recipes.<task>), written once, under each model's own train.<model> keys."""
import json

import pytest
import yaml

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.registry import REGISTRY, train_stage
from tests.conftest import ROOT
from tests.fixtures import dvc, scratch_dvc_project, set_params

CIFAR10 = [name for name, spec in REGISTRY.items() if spec.task == "cifar10"]
CATS_DOGS = [name for name, spec in REGISTRY.items() if spec.task == "cats_dogs"]
SEEDS = load_config(ROOT / "params.yaml").seeds


def test_the_shipped_recipe_is_written_once_and_every_cifar10_model_trains_with_it():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    config = load_config(ROOT / "params.yaml")
    recipe = params["recipes"]["cifar10"]
    for name in CIFAR10:
        assert not params["train"][name], f"train.{name} repeats the recipe"
        assert config.model(name).model_dump(include=set(recipe)) == {
            key: (value if key != "augment" else config.model(name).augment.model_dump()) for key, value in recipe.items()}


def test_a_recipe_change_reaches_every_model_of_its_task_and_no_other(project):
    before = load_config()
    set_params(project / "params.yaml", **{"recipes.cifar10.learning_rate": 0.0123, "recipes.cifar10.augment.flip": False})
    after = load_config()
    for name in CIFAR10:
        assert after.model(name).learning_rate == 0.0123 and after.model(name).augment.flip is False
        assert after.model(name).augment.translation == before.model(name).augment.translation  # merged key by key
    for name in CATS_DOGS:
        assert after.model(name) == before.model(name)


def test_a_models_own_key_wins_and_none_clears_a_section(project):
    set_params(project / "params.yaml", **{"train.cifar10_residual.learning_rate": 0.0005,
                                          "train.cifar10_residual.augment": None,
                                          "train.cats_dogs_naive.image_size": 64})
    config = load_config()
    assert config.model("cifar10_residual").learning_rate == 0.0005
    assert config.model("cifar10_residual").augment is None
    assert config.model("cifar10_naive").learning_rate == config.recipes.cifar10.learning_rate
    assert config.model("cats_dogs_naive").image_size == 64
    assert config.model("cats_dogs_vgg16_frozen").image_size == config.recipes.cats_dogs.image_size


@pytest.mark.parametrize("override, message", [
    ({"recipes.cifar10.learnig_rate": 0.01}, "recipes.cifar10.learnig_rate: unknown key"),
    ({"recipes.cifar10.epochs": 0}, "recipes.cifar10.epochs: Input should be greater than 0"),
    ({"recipes.cifar10.augment.flipp": True}, "recipes.cifar10.augment.flipp: unknown key"),
    ({"recipes.imagenet": {"epochs": 1}}, "recipes.imagenet: unknown key"),
    ({"recipes.cifar10.epochs": None}, "train.cifar10_naive.epochs: missing key (set it there or in recipes.cifar10)"),
])
def test_a_bad_recipe_is_one_line_naming_the_key(project, override, message):
    set_params(project / "params.yaml", **override)
    with pytest.raises(ConfigError) as error:
        load_config()
    assert str(error.value) == f"params.yaml: {message}"


@pytest.mark.slow
def test_dvc_retrains_the_models_of_a_changed_recipe_and_no_other(tmp_path):
    """The real dvc.yaml: after every training (each model under each seed) is recorded, a change
    to recipes.cifar10 makes exactly the CIFAR-10 trainings out of date, under every seed."""
    scratch_dvc_project(tmp_path)
    trainings = [train_stage(name, seed) for name in REGISTRY for seed in SEEDS]
    dvc(tmp_path, "commit", "-f", "-q", *trainings)
    assert json.loads(dvc(tmp_path, "status", "--json", *trainings)) == {}

    set_params(tmp_path / "params.yaml", **{"recipes.cifar10.learning_rate": 0.0007})
    stale = set(json.loads(dvc(tmp_path, "status", "--json", *trainings)))
    assert stale == {train_stage(name, seed) for name in CIFAR10 for seed in SEEDS}
