"""Residual connections (He et al. 2016) in the CIFAR-10 CNN.

- `cifar10_residual` (the study's Fig. 3): one residual block after the stem; 1,108,234
  parameters. The block's convolution keeps 64 channels and 'same' padding and there is no
  pooling inside it, so its output can be added to its input (8x8x64 both).
- `cifar10_residual_8x8`: Fig. 2 (the naive CNN) with a skip around conv3, at 8x8. conv3 turns
  64 channels into 128, so the shortcut is a 1x1 projection (64 -> 128, He et al.'s option B):
  y = relu(conv3(x) + W x). 383,306 parameters: the naive CNN's plus the projection's 8,320.
- `cifar10_residual_4x4`: Fig. 2 with a skip around conv4, at 4x4, where input and output are
  both 128 channels: an identity shortcut, y = relu(conv4(x) + x). Exactly the naive CNN's
  374,986 parameters, so any difference from it is the skip's alone.
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.config import Model
from pipeline.models.common import check_image_size, output_layer, scratch_input
from pipeline.models.naive import classifier, stem


def build_cifar10(name: str, params: Model) -> keras.Model:
    check_image_size(name, params, 4)  # two poolings
    inputs, x = scratch_input(params)
    shortcut = stem(x, params, padding="same")
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(shortcut)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Dropout(params.dropout, name="dropout2")(x)
    x = layers.Add(name="residual_add")([shortcut, x])
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", name="dense1")(x)
    x = layers.Dropout(params.dropout, name="dropout3")(x)
    outputs = output_layer(10)(x)
    return keras.Model(inputs, outputs, name=name)


def conv_with_skip(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """A 3x3 convolution whose input is added back before the relu; a 1x1 projection
    matches the channels when they differ."""
    residual = layers.Conv2D(filters, 3, padding="same", name=name)(x)
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, name=f"{name}_projection")(x)
    x = layers.Add(name=f"{name}_add")([residual, shortcut])
    return layers.Activation("relu", name=f"{name}_relu")(x)


def conv(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    return layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)


def naive_cnn_with_skip(name: str, params: Model, around: str) -> keras.Model:
    """Fig. 2 layer for layer, with the convolution named `around` wrapped by a skip."""
    check_image_size(name, params, 16)
    inputs, x = scratch_input(params)
    x = stem(x, params, padding="same")
    x = (conv_with_skip if around == "conv3" else conv)(x, 128, "conv3")
    x = layers.MaxPooling2D(name="pool3")(x)
    x = (conv_with_skip if around == "conv4" else conv)(x, 128, "conv4")
    return classifier(inputs, x, name, n_classes=10)


def build_cifar10_skip_8x8(name: str, params: Model) -> keras.Model:
    return naive_cnn_with_skip(name, params, around="conv3")


def build_cifar10_skip_4x4(name: str, params: Model) -> keras.Model:
    return naive_cnn_with_skip(name, params, around="conv4")
