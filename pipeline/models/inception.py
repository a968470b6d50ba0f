"""Fig. 2 with one naive Inception block (Szegedy et al. 2015, Fig. 2a) between pool3 and conv4.

The block runs 1x1, 3x3 and 5x5 convolutions (64 filters each, 'same', relu) and a 3x3
stride-1 max-pool side by side on the 4x4x128 map and concatenates them: 64+64+64+128 = 320
channels. The study does not give its filter counts; 64 per branch keeps the block the size
of the layers around it (286,912 parameters in the block, 883,082 in the model).
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.config import Model
from pipeline.models.common import check_image_size, output_layer, scratch_input
from pipeline.models.naive import stem

BRANCH_FILTERS = 64


def naive_inception_block(x: keras.KerasTensor, filters: int = BRANCH_FILTERS) -> keras.KerasTensor:
    """Several receptive fields on the same input, stacked along the channels."""
    branch_1x1 = layers.Conv2D(filters, 1, padding="same", activation="relu", name="inception_1x1")(x)
    branch_3x3 = layers.Conv2D(filters, 3, padding="same", activation="relu", name="inception_3x3")(x)
    branch_5x5 = layers.Conv2D(filters, 5, padding="same", activation="relu", name="inception_5x5")(x)
    branch_pool = layers.MaxPooling2D(3, strides=1, padding="same", name="inception_pool")(x)
    return layers.Concatenate(name="inception_concat")([branch_1x1, branch_3x3, branch_5x5, branch_pool])


def build_cifar10(name: str, params: Model) -> keras.Model:
    check_image_size(name, params, 16)
    inputs, x = scratch_input(params)
    x = stem(x, params, padding="same")
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(name="pool3")(x)
    x = naive_inception_block(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.MaxPooling2D(name="pool4")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", name="dense1")(x)
    outputs = output_layer(10)(x)
    return keras.Model(inputs, outputs, name=name)
