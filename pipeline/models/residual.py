"""Fig. 3: the CIFAR-10 CNN with one residual block (He et al. 2016); 1,108,234 parameters.

The block's convolution keeps 64 channels and 'same' padding and there is no pooling
inside it, so its output can be added to its input (8x8x64 both).
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.config import Model
from pipeline.models.common import check_image_size, output_layer, scratch_input
from pipeline.models.naive import stem


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
