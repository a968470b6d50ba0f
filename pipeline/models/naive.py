"""The study's naive CNNs: Fig. 1 (cats vs dogs) and Fig. 2 (CIFAR-10).

Both stack the same layers; Fig. 1 uses 'valid' convolutions on 150x150 images,
Fig. 2 'same' convolutions on 32x32 images.
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.config import Model
from pipeline.models.common import check_image_size, output_layer, scratch_input


def stem(x, params: Model, padding: str):
    """The first two conv blocks, shared by every from-scratch model of the study."""
    x = layers.Conv2D(32, 3, padding=padding, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 3, padding=padding, activation="relu", name="conv2")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    return layers.Dropout(params.dropout, name="dropout1")(x)


def classifier(inputs: keras.KerasTensor, x: keras.KerasTensor, name: str, n_classes: int) -> keras.Model:
    """pool4, Flatten, Dense 256 and the output: how every from-scratch model of Fig. 1 and 2 ends."""
    x = layers.MaxPooling2D(name="pool4")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", name="dense1")(x)
    outputs = output_layer(n_classes)(x)
    return keras.Model(inputs, outputs, name=name)


def naive_cnn(name: str, params: Model, n_classes: int, padding: str) -> keras.Model:
    inputs, x = scratch_input(params)
    x = stem(x, params, padding)
    x = layers.Conv2D(128, 3, padding=padding, activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(name="pool3")(x)
    x = layers.Conv2D(128, 3, padding=padding, activation="relu", name="conv4")(x)
    return classifier(inputs, x, name, n_classes)


def build_cats_dogs(name: str, params: Model) -> keras.Model:
    """Fig. 1: 150x150x3 -> ... -> Flatten 6272 -> Dense 256 -> 1 sigmoid; 1,847,233 parameters."""
    check_image_size(name, params, 46)  # four valid convs and four poolings leave at least 1x1
    return naive_cnn(name, params, n_classes=2, padding="valid")


def build_cifar10(name: str, params: Model) -> keras.Model:
    """Fig. 2: 32x32x3 -> ... -> Flatten 512 -> Dense 256 -> 10 softmax; 374,986 parameters."""
    check_image_size(name, params, 16)  # four poolings halve it four times
    return naive_cnn(name, params, n_classes=10, padding="same")
