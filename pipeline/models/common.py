"""Pieces every architecture shares: the input and the classifier output.

Augmentation is not part of a model: the input pipeline does it (pipeline/data/augment.py), so
a saved model is the network alone, the same in training and at inference.
"""
from __future__ import annotations

import keras

from pipeline.config import Model
from pipeline.errors import ConfigError


def check_image_size(name: str, params: Model, minimum: int) -> None:
    """Fail with the params key rather than a shape error deep inside Keras."""
    if params.image_size < minimum:
        raise ConfigError(f"train.{name}.image_size: must be at least {minimum} for this architecture")


def image_input(params: Model) -> keras.KerasTensor:
    """The model input: raw 0..255 pixels."""
    return keras.Input(shape=(params.image_size, params.image_size, 3), name="image")


def scratch_input(params: Model) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Input, then 0..255 -> 0..1: a from-scratch model works on raw pixels."""
    inputs = image_input(params)
    return inputs, keras.layers.Rescaling(1 / 255, name="rescale")(inputs)


def output_layer(n_classes: int) -> keras.layers.Dense:
    """One sigmoid unit for two classes (binary cross-entropy), else a softmax over the classes;
    in float32 whatever the model computes in, so the loss sees no bfloat16 rounding."""
    if n_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="predictions", dtype="float32")
    return keras.layers.Dense(n_classes, activation="softmax", name="predictions", dtype="float32")
