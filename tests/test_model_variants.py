"""The study's next step: Inception modules with dimension reduction and residual skips at other
depths. Each is Fig. 2 layer for layer except where its docstring says, with pinned counts."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.models import build_model
from pipeline.registry import REGISTRY
from tests.test_models import FIG2, FIG2_BEFORE_INCEPTION, figure_layers, params

VARIANTS = {  # model -> parameter count
    "cifar10_inception_reduced": 589_306,
    "cifar10_inception_reduced_x2": 678_698,
    "cifar10_residual_8x8": 383_306,
    "cifar10_residual_4x4": 374_986,
}
REDUCED_BLOCK = ["1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool", "pool_proj", "concat"]


def conv_params(size: int, channels_in: int, filters: int) -> int:
    return size * size * channels_in * filters + filters


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_parameter_count(name):
    model = build_model(name, params(32))
    assert model.count_params() == VARIANTS[name]
    assert not REGISTRY[name].in_study
    assert model.output.shape[1:] == (10,)


def block_layers(model, first: str, last: str) -> list[str]:
    names = [layer.name for layer in model.layers]
    return names[names.index(first) + 1 : names.index(last)]


@pytest.mark.parametrize("name, prefixes", [
    ("cifar10_inception_reduced", ["inception"]),
    ("cifar10_inception_reduced_x2", ["inception", "inception2"]),
])
def test_reduced_inception_blocks_sit_between_pool3_and_conv4(name, prefixes):
    model = build_model(name, params(32))
    expected = [f"{prefix}_{part}" for prefix in prefixes for part in REDUCED_BLOCK]
    assert sorted(block_layers(model, "pool3", "conv4")) == sorted(expected)
    assert figure_layers(model) == FIG2  # outside the blocks, Fig. 2 as it is
    channels_in = 128
    for prefix in prefixes:
        concat = model.get_layer(f"{prefix}_concat")
        assert [tuple(t.shape[1:]) for t in concat.input] == [(4, 4, 64)] * 4
        # The 1x1 reductions are what the 3x3 and 5x5 kernels read.
        assert model.get_layer(f"{prefix}_3x3").input is model.get_layer(f"{prefix}_3x3_reduce").output
        assert model.get_layer(f"{prefix}_5x5").input is model.get_layer(f"{prefix}_5x5_reduce").output
        assert model.get_layer(f"{prefix}_pool_proj").input is model.get_layer(f"{prefix}_pool").output
        assert model.get_layer(f"{prefix}_3x3_reduce").output.shape[-1] == 32
        assert model.get_layer(f"{prefix}_5x5_reduce").output.shape[-1] == 16
        block = sum(model.get_layer(f"{prefix}_{part}").count_params() for part in REDUCED_BLOCK)
        assert block == (conv_params(1, channels_in, 64) + conv_params(1, channels_in, 32) + conv_params(3, 32, 64)
                         + conv_params(1, channels_in, 16) + conv_params(5, 16, 64) + conv_params(1, channels_in, 64))
        channels_in = 256
    assert model.get_layer("conv4").input.shape[1:] == (4, 4, 256)


def test_reduced_block_is_cheaper_than_the_naive_block():
    naive = build_model("cifar10_inception", params(32))
    reduced = build_model("cifar10_inception_reduced", params(32))
    naive_block = sum(layer.count_params() for layer in naive.layers if layer.name.startswith("inception"))
    reduced_block = sum(layer.count_params() for layer in reduced.layers if layer.name.startswith("inception"))
    assert (naive_block, reduced_block) == (286_912, 66_864)


FIG2_SKIP_8X8 = FIG2_BEFORE_INCEPTION[:6] + [
    ("Conv2D", (8, 8, 128)), ("Conv2D", (8, 8, 128)), ("Add", (8, 8, 128)), ("MaxPooling2D", (4, 4, 128)),
    ("Conv2D", (4, 4, 128)), ("MaxPooling2D", (2, 2, 128)), ("Flatten", (512,)), ("Dense", (256,)), ("Dense", (10,)),
]
FIG2_SKIP_4X4 = FIG2_BEFORE_INCEPTION + [
    ("Conv2D", (4, 4, 128)), ("Add", (4, 4, 128)), ("MaxPooling2D", (2, 2, 128)),
    ("Flatten", (512,)), ("Dense", (256,)), ("Dense", (10,)),
]


def test_residual_8x8_projects_the_shortcut_around_conv3():
    model = build_model("cifar10_residual_8x8", params(32))
    assert figure_layers(model) == FIG2_SKIP_8X8
    block_input = model.get_layer("dropout1").output  # 8x8x64
    assert model.get_layer("conv3").input is block_input
    projection = model.get_layer("conv3_projection")
    assert projection.input is block_input and projection.kernel.shape == (1, 1, 64, 128)
    residual, shortcut = model.get_layer("conv3_add").input
    assert residual is model.get_layer("conv3").output and shortcut is projection.output
    assert model.get_layer("pool3").input is model.get_layer("conv3_relu").output
    assert model.count_params() - build_model("cifar10_naive", params(32)).count_params() == 64 * 128 + 128


def test_residual_4x4_adds_the_identity_around_conv4():
    model = build_model("cifar10_residual_4x4", params(32))
    assert figure_layers(model) == FIG2_SKIP_4X4
    residual, shortcut = model.get_layer("conv4_add").input
    assert residual is model.get_layer("conv4").output
    assert shortcut is model.get_layer("pool3").output  # nothing on the shortcut: same shape
    assert "conv4_projection" not in [layer.name for layer in model.layers]


def test_a_skip_changes_what_the_network_computes():
    """Same seed, same weights but for the skip: the outputs differ, so the skip is wired in."""
    import keras

    keras.utils.set_random_seed(0)
    plain = build_model("cifar10_naive", params(32))
    keras.utils.set_random_seed(0)
    skip = build_model("cifar10_residual_4x4", params(32))
    skip.set_weights(plain.get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert not np.allclose(plain.predict(images, verbose=0), skip.predict(images, verbose=0))
