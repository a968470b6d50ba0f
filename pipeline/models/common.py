"""Pieces every architecture shares: the input stem, augmentation and the classifier output."""
from __future__ import annotations

import keras

from pipeline.config import Augment, Model
from pipeline.errors import ConfigError


def check_image_size(name: str, params: Model, minimum: int) -> None:
    """Fail with the params key rather than a shape error deep inside Keras."""
    if params.image_size < minimum:
        raise ConfigError(f"train.{name}.image_size: must be at least {minimum} for this architecture")


def augmentation(augment: Augment) -> keras.Sequential | None:
    """Random flips, rotations, zooms, shifts and contrast; Keras applies them only in training."""
    layers = []
    if augment.flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom))
    if augment.translation:
        layers.append(keras.layers.RandomTranslation(augment.translation, augment.translation))
    if augment.contrast:
        # Images arrive as 0..255, RandomContrast's default value range.
        layers.append(keras.layers.RandomContrast(augment.contrast))
    return keras.Sequential(layers, name="augment") if layers else None


def image_input(params: Model) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model input (raw 0..255 pixels) and the tensor after augmentation, if any."""
    inputs = keras.Input(shape=(params.image_size, params.image_size, 3), name="image")
    augment = augmentation(params.augment) if params.augment else None
    return inputs, augment(inputs) if augment else inputs


def scratch_input(params: Model) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Input, augmentation, then 0..255 -> 0..1: a from-scratch model works on raw pixels."""
    inputs, x = image_input(params)
    return inputs, keras.layers.Rescaling(1 / 255, name="rescale")(x)


def output_layer(n_classes: int) -> keras.layers.Dense:
    """One sigmoid unit for two classes (binary cross-entropy), else a softmax over the classes."""
    if n_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="predictions")
    return keras.layers.Dense(n_classes, activation="softmax", name="predictions")
