"""Every model of the project by name: its task, its output and the builder that makes it.

This registry is the one list of models: the CLI's choices, params.yaml's `train` section,
`dvc.yaml`'s model lists, the report and CI all follow it (tests/test_model_list.py checks
them). Builders are named, not imported, so reading the list loads neither Keras nor any other
module of the project.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError

TASKS = ("cats_dogs", "cifar10")  # each has a source, a split and a recipe of the same name
SOURCES = (*TASKS, "vgg16")  # what the download stage fetches: each task's data and the VGG16 weights


@dataclass(frozen=True)
class ModelSpec:
    task: str  # one of TASKS: which split the model trains on
    n_classes: int  # 2: one sigmoid unit; more: a softmax over one-hot targets
    uses_vgg16: bool  # needs the VGG16 weights file and the two-phase training
    builder: str  # 'module.function' in pipeline.models: (name, params) or, with VGG16, (name, params, weights)
    in_study: bool = True  # one of the report's models; False: beyond the study


REGISTRY: dict[str, ModelSpec] = {
    "cats_dogs_naive": ModelSpec("cats_dogs", 2, False, "naive.build_cats_dogs"),
    "cats_dogs_vgg16_frozen": ModelSpec("cats_dogs", 2, True, "vgg16.build_cats_dogs"),
    "cats_dogs_vgg16_finetune": ModelSpec("cats_dogs", 2, True, "vgg16.build_cats_dogs"),
    "cats_dogs_vgg16_finetune_aug": ModelSpec("cats_dogs", 2, True, "vgg16.build_cats_dogs"),
    "cifar10_naive": ModelSpec("cifar10", 10, False, "naive.build_cifar10"),
    "cifar10_inception": ModelSpec("cifar10", 10, False, "inception.build_cifar10"),
    "cifar10_residual": ModelSpec("cifar10", 10, False, "residual.build_cifar10"),
    # The report's next step: other Inception modules, residual connections elsewhere.
    "cifar10_inception_reduced": ModelSpec("cifar10", 10, False, "inception.build_cifar10_reduced", False),
    "cifar10_inception_reduced_x2": ModelSpec("cifar10", 10, False, "inception.build_cifar10_reduced_x2", False),
    "cifar10_residual_8x8": ModelSpec("cifar10", 10, False, "residual.build_cifar10_skip_8x8", False),
    "cifar10_residual_4x4": ModelSpec("cifar10", 10, False, "residual.build_cifar10_skip_4x4", False),
}


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ConfigError(f"unknown model '{name}' (one of: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def group(name: str) -> str:
    """dvc.yaml's group of a model's trainings: what they read besides code, their task's split
    and, for the VGG16 models, the weights as well."""
    return "vgg16" if REGISTRY[name].uses_vgg16 else REGISTRY[name].task


def train_stage(name: str, seed: int) -> str:
    return f"train_{group(name)}@{name}-{seed}"


def evaluate_stage(name: str, seed: int) -> str:
    return f"evaluate_{group(name)}@{name}-{seed}"
