"""Every model of the project by name: its task, its output and how to build and compile it.

This registry is the one list of models: the CLI's choices, params.yaml's `train` section,
`dvc.yaml`'s `models` map, the report and CI all follow it (tests/test_models.py checks
dvc.yaml). Builders are named, not imported, so reading the list does not load Keras.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import keras

    from pipeline.config import Model

__all__ = ["REGISTRY", "ModelSpec", "build_model", "compile_model", "get_spec"]


@dataclass(frozen=True)
class ModelSpec:
    task: str  # 'cats_dogs' or 'cifar10': which split the model trains on
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


def build_model(name: str, params: Model, vgg16_weights: Path | None = None) -> keras.Model:
    """An uncompiled model named `name`; seed with keras.utils.set_random_seed beforehand."""
    spec = get_spec(name)
    module_name, function = spec.builder.rsplit(".", 1)
    builder = getattr(importlib.import_module(f"pipeline.models.{module_name}"), function)
    if spec.uses_vgg16:
        return builder(name, params, vgg16_weights)
    return builder(name, params)


def compile_model(model: keras.Model, n_classes: int, learning_rate: float, decay_steps: int | None = None,
                  label_smoothing: float = 0.0) -> None:
    """Adam with the cross-entropy that matches the output; the metric is 'accuracy' either way.

    With `decay_steps`, the learning rate follows a cosine from its value down to 0 over that
    many steps: the last epochs take small steps, so the model saved at the end is a settled one.
    `label_smoothing` trains towards 1 - s/2 rather than 1 (two classes), or spreads s over the classes.
    """
    import keras

    if n_classes == 2:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
        accuracy = keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps) if decay_steps else learning_rate
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=[accuracy])
