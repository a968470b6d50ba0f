"""Fig. 2 with Inception blocks (Szegedy et al. 2015) between pool3 and conv4, on the 4x4x128 map.

- `cifar10_inception` (the study's): one naive block (their Fig. 2a). 1x1, 3x3 and 5x5
  convolutions (64 filters each, 'same', relu) and a 3x3 stride-1 max-pool side by side,
  concatenated: 64+64+64+128 = 320 channels. The study does not give its filter counts; 64 per
  branch keeps the block the size of the layers around it (286,912 parameters in the block,
  883,082 in the model).
- `cifar10_inception_reduced`: one block with dimension reduction (their Fig. 2b) in the same
  place. 1x1 convolutions shrink the input before the 3x3 (to 32 channels) and 5x5 (to 16)
  branches and project the pooling branch (to 64), so every branch gives 64 channels: 256 in
  all, from 66,864 parameters in the block (a quarter of the naive block's); 589,306 in the model.
- `cifar10_inception_reduced_x2`: two such blocks in a row (the second reads the first's 256
  channels), as GoogLeNet stacks them; 678,698 parameters.
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.config import Model
from pipeline.models.common import check_image_size, scratch_input
from pipeline.models.naive import classifier, stem

BRANCH_FILTERS = 64
REDUCE_3X3, REDUCE_5X5 = 32, 16  # channels the 1x1 convolutions leave for the larger kernels


def naive_inception_block(x: keras.KerasTensor, filters: int = BRANCH_FILTERS) -> keras.KerasTensor:
    """Several receptive fields on the same input, stacked along the channels."""
    branch_1x1 = layers.Conv2D(filters, 1, padding="same", activation="relu", name="inception_1x1")(x)
    branch_3x3 = layers.Conv2D(filters, 3, padding="same", activation="relu", name="inception_3x3")(x)
    branch_5x5 = layers.Conv2D(filters, 5, padding="same", activation="relu", name="inception_5x5")(x)
    branch_pool = layers.MaxPooling2D(3, strides=1, padding="same", name="inception_pool")(x)
    return layers.Concatenate(name="inception_concat")([branch_1x1, branch_3x3, branch_5x5, branch_pool])


def reduced_inception_block(x: keras.KerasTensor, prefix: str, filters: int = BRANCH_FILTERS) -> keras.KerasTensor:
    """The same four branches, with 1x1 convolutions that cut the channels the 3x3 and 5x5
    kernels read and the pooling branch passes on: the cost of the block falls, its width stays."""
    def conv(tensor, count, size, name):
        return layers.Conv2D(count, size, padding="same", activation="relu", name=f"{prefix}_{name}")(tensor)

    branch_1x1 = conv(x, filters, 1, "1x1")
    branch_3x3 = conv(conv(x, REDUCE_3X3, 1, "3x3_reduce"), filters, 3, "3x3")
    branch_5x5 = conv(conv(x, REDUCE_5X5, 1, "5x5_reduce"), filters, 5, "5x5")
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{prefix}_pool")(x)
    branch_pool = conv(pooled, filters, 1, "pool_proj")
    return layers.Concatenate(name=f"{prefix}_concat")([branch_1x1, branch_3x3, branch_5x5, branch_pool])


def inception_cnn(name: str, params: Model, blocks) -> keras.Model:
    """Fig. 2 with `blocks` (functions of one tensor) applied in turn between pool3 and conv4."""
    check_image_size(name, params, 16)
    inputs, x = scratch_input(params)
    x = stem(x, params, padding="same")
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(name="pool3")(x)
    for block in blocks:
        x = block(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv4")(x)
    return classifier(inputs, x, name, n_classes=10)


def build_cifar10(name: str, params: Model) -> keras.Model:
    return inception_cnn(name, params, [naive_inception_block])


def build_cifar10_reduced(name: str, params: Model) -> keras.Model:
    return inception_cnn(name, params, [lambda x: reduced_inception_block(x, "inception")])


def build_cifar10_reduced_x2(name: str, params: Model) -> keras.Model:
    return inception_cnn(name, params, [lambda x: reduced_inception_block(x, "inception"),
                                        lambda x: reduced_inception_block(x, "inception2")])
