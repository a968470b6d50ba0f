"""The model registry: the study's architectures layer by layer, VGG16 wiring, saving and loading."""
from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from pipeline.__main__ import MODELS
from pipeline.config import Augment, FineTune, Model, Train
from pipeline.errors import ConfigError, PipelineError
import pipeline.models
from pipeline.hardware import native_bfloat16
from pipeline.models import build_model, compile_model, compute_policy, float32_copy
from pipeline.registry import REGISTRY, get_spec
from pipeline.models.vgg16 import unfreeze_top

AUGMENT = Augment(flip=True, rotation=0.1, zoom=0.2, translation=0.1, contrast=0.2)
# The layers the study's figures list; input and rescaling are this project's.
FIGURE_LAYERS = (
    keras.layers.Conv2D, keras.layers.MaxPooling2D, keras.layers.BatchNormalization,
    keras.layers.Dropout, keras.layers.Flatten, keras.layers.Dense, keras.layers.Add,
)

# Fig. 1, 2 and 3 of the report: (layer type, output shape without the batch axis).
FIG1 = [
    ("Conv2D", (148, 148, 32)), ("MaxPooling2D", (74, 74, 32)), ("Conv2D", (72, 72, 64)),
    ("BatchNormalization", (72, 72, 64)), ("MaxPooling2D", (36, 36, 64)), ("Dropout", (36, 36, 64)),
    ("Conv2D", (34, 34, 128)), ("MaxPooling2D", (17, 17, 128)), ("Conv2D", (15, 15, 128)),
    ("MaxPooling2D", (7, 7, 128)), ("Flatten", (6272,)), ("Dense", (256,)), ("Dense", (1,)),
]
FIG2_BEFORE_INCEPTION = [
    ("Conv2D", (32, 32, 32)), ("MaxPooling2D", (16, 16, 32)), ("Conv2D", (16, 16, 64)),
    ("BatchNormalization", (16, 16, 64)), ("MaxPooling2D", (8, 8, 64)), ("Dropout", (8, 8, 64)),
    ("Conv2D", (8, 8, 128)), ("MaxPooling2D", (4, 4, 128)),
]
FIG2_AFTER_INCEPTION = [
    ("Conv2D", (4, 4, 128)), ("MaxPooling2D", (2, 2, 128)), ("Flatten", (512,)),
    ("Dense", (256,)), ("Dense", (10,)),
]
FIG2 = FIG2_BEFORE_INCEPTION + FIG2_AFTER_INCEPTION
FIG3 = [
    ("Conv2D", (32, 32, 32)), ("MaxPooling2D", (16, 16, 32)), ("Conv2D", (16, 16, 64)),
    ("BatchNormalization", (16, 16, 64)), ("MaxPooling2D", (8, 8, 64)), ("Dropout", (8, 8, 64)),
    ("Conv2D", (8, 8, 64)), ("BatchNormalization", (8, 8, 64)), ("Dropout", (8, 8, 64)),
    ("Add", (8, 8, 64)), ("Flatten", (4096,)), ("Dense", (256,)), ("Dropout", (256,)), ("Dense", (10,)),
]


def params(image_size: int, **changes) -> Model:
    return Model(epochs=1, learning_rate=1e-3, batch_size=4, image_size=image_size, dropout=0.3, **changes)


def figure_layers(model: keras.Model, skip: str = "inception") -> list[tuple[str, tuple[int, ...]]]:
    """(type, output shape) of the layers a figure lists, in order; `skip` drops the added block."""
    return [
        (type(layer).__name__, tuple(layer.output.shape[1:]))
        for layer in model.layers
        if isinstance(layer, FIGURE_LAYERS) and not layer.name.startswith(skip)
    ]


def non_trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.non_trainable_weights)


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def random_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def vgg_model() -> keras.Model:
    """The one VGG16 model most tests share (random weights, small images, with augmentation)."""
    keras.utils.set_random_seed(0)
    return build_model("cats_dogs_vgg16_finetune_aug", params(32, augment=AUGMENT))


def test_registry_covers_every_configured_model():
    configured = list(Train.model_fields)
    assert sorted(REGISTRY) == sorted(configured) == sorted(MODELS)
    for name, spec in REGISTRY.items():
        assert name.startswith(spec.task)
        assert spec.n_classes == (2 if spec.task == "cats_dogs" else 10)
        assert spec.uses_vgg16 == ("vgg16" in name)


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="cifar10_resnet"):
        build_model("cifar10_resnet", params(32))
    with pytest.raises(ConfigError, match="cifar10_resnet"):
        get_spec("cifar10_resnet")


def test_too_small_image_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.cats_dogs_naive\.image_size"):
        build_model("cats_dogs_naive", params(32))


def test_cats_dogs_naive_is_fig1():
    model = build_model("cats_dogs_naive", params(150, augment=AUGMENT))
    assert model.name == "cats_dogs_naive"
    assert model.count_params() == 1_847_233
    assert non_trainable_count(model) == 128
    assert figure_layers(model) == FIG1
    assert [layer.name for layer in model.layers[:3]] == ["image", "rescale", "conv1"]  # augmentation is the input pipeline's


def test_cifar10_naive_is_fig2():
    model = build_model("cifar10_naive", params(32))
    assert model.count_params() == 374_986
    assert non_trainable_count(model) == 128
    assert figure_layers(model) == FIG2
    assert model.get_layer("predictions").activation.__name__ == "softmax"


def test_cifar10_residual_is_fig3():
    model = build_model("cifar10_residual", params(32))
    assert model.count_params() == 1_108_234
    assert figure_layers(model) == FIG3
    # The skip connection adds the block's input (first dropout) to its output (second dropout).
    shortcut, block_output = model.get_layer("residual_add").input
    assert shortcut is model.get_layer("dropout1").output
    assert block_output is model.get_layer("dropout2").output


def test_cifar10_inception_sits_between_pool3_and_conv4():
    model = build_model("cifar10_inception", params(32))
    names = [layer.name for layer in model.layers]
    block = names[names.index("pool3") + 1 : names.index("conv4")]
    assert sorted(block) == sorted(["inception_1x1", "inception_3x3", "inception_5x5", "inception_pool",
                                    "inception_concat"])
    concat = model.get_layer("inception_concat")
    branches = [tensor.shape[1:] for tensor in concat.input]
    assert branches == [(4, 4, 64), (4, 4, 64), (4, 4, 64), (4, 4, 128)]
    assert tuple(concat.output.shape[1:]) == (4, 4, 320)
    assert model.get_layer("conv4").input.shape[1:] == (4, 4, 320)
    assert figure_layers(model) == FIG2  # every other layer as in Fig. 2
    # 1x1, 3x3 and 5x5 branches of 64 filters on 128 channels, and conv4 now reads 320 channels.
    branch_params = {name: model.get_layer(name).count_params() for name in
                     ("inception_1x1", "inception_3x3", "inception_5x5", "inception_pool")}
    assert branch_params == {"inception_1x1": 128 * 64 + 64, "inception_3x3": 9 * 128 * 64 + 64,
                             "inception_5x5": 25 * 128 * 64 + 64, "inception_pool": 0}
    assert model.get_layer("conv4").count_params() == 9 * 320 * 128 + 128
    assert model.count_params() == 883_082  # the naive CNN's 374,986, its conv4 widened, plus the block


def test_a_model_is_the_same_network_with_or_without_augment():
    """Augmentation lives in the input pipeline: `augment` changes nothing in the saved model."""
    plain, augmenting = build_model("cifar10_residual", params(32)), build_model("cifar10_residual", params(32, augment=AUGMENT))
    assert [layer.name for layer in plain.layers] == [layer.name for layer in augmenting.layers]
    assert "augment" not in [layer.name for layer in plain.layers]


def test_compile_model_losses_and_accuracy():
    cifar = build_model("cifar10_residual", params(32))
    compile_model(cifar, 10, 1e-3)
    targets = np.eye(10, dtype="float32")[[0, 1, 2, 3]]
    assert set(cifar.evaluate(random_images(4, 32), targets, verbose=0, return_dict=True)) == {"loss", "accuracy"}
    assert isinstance(cifar.loss, keras.losses.CategoricalCrossentropy)

    cats = build_model("cats_dogs_naive", params(48))
    compile_model(cats, 2, 1e-3)
    targets = np.array([[0], [1], [0], [1]], dtype="float32")
    assert set(cats.evaluate(random_images(4, 48), targets, verbose=0, return_dict=True)) == {"loss", "accuracy"}
    assert isinstance(cats.loss, keras.losses.BinaryCrossentropy)


@pytest.mark.parametrize("name, n_classes, size", [("cifar10_naive", 10, 32), ("cats_dogs_naive", 2, 48)])
def test_label_smoothing_moves_the_targets_off_zero_and_one(name, n_classes, size):
    """The loss is the cross-entropy against y(1 - s) + s/K (K = 2 for one sigmoid unit)."""
    model = build_model(name, params(size))
    # a confident output (class 0 of ten, or class 1 of two), so that moving the targets changes the loss
    bias = np.zeros(model.get_layer("predictions").bias.shape, dtype="float32")
    bias[0] = 6.0
    model.get_layer("predictions").bias.assign(bias)
    images = random_images(4, size)
    if n_classes == 2:  # mostly the confident class: smoothing costs there more than it saves elsewhere
        targets = np.array([[1], [1], [1], [0]], dtype="float32")
    else:
        targets = np.eye(10, dtype="float32")[[0, 0, 0, 1]]
    p = np.clip(model.predict(images, verbose=0).astype("float64"), 1e-7, 1 - 1e-7)

    def expected(smoothing):
        y = targets * (1 - smoothing) + smoothing / (2 if n_classes == 2 else n_classes)
        if n_classes == 2:
            return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        return -np.mean(np.sum(y * np.log(p / p.sum(axis=1, keepdims=True)), axis=1))

    assert abs(expected(0.2) - expected(0.0)) > 0.05
    for smoothing in (0.2, 0.0):
        compile_model(model, n_classes, 1e-3, label_smoothing=smoothing)
        loss = model.evaluate(images, targets, verbose=0, return_dict=True)["loss"]
        assert loss == pytest.approx(expected(smoothing), rel=1e-3)


def test_cosine_schedule_decays_the_learning_rate_to_zero():
    model = build_model("cifar10_naive", params(32))
    compile_model(model, 10, 1e-3, decay_steps=10)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    model.optimizer.iterations.assign(5)
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4)
    model.optimizer.iterations.assign(10)
    assert float(model.optimizer.learning_rate) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("precision, native, policy", [
    ("float32", True, "float32"), ("auto", True, "mixed_bfloat16"), ("auto", False, "float32"),
    ("bfloat16", True, "mixed_bfloat16"),
])
def test_precision_means_bfloat16_only_where_the_cpu_has_it(monkeypatch, precision, native, policy):
    monkeypatch.setattr(pipeline.models, "native_bfloat16", lambda: native)
    assert compute_policy("cifar10_naive", params(32, precision=precision)) == policy


def test_bfloat16_on_a_cpu_without_it_names_the_key(monkeypatch):
    monkeypatch.setattr(pipeline.models, "native_bfloat16", lambda: False)
    with pytest.raises(ConfigError, match=r"train\.cifar10_naive\.precision: bfloat16 needs"):
        compute_policy("cifar10_naive", params(32, precision="bfloat16"))


@pytest.mark.parametrize("name", ["cifar10_residual", "cats_dogs_naive"])
def test_a_bfloat16_model_is_copied_to_float32_with_its_weights(name):
    """The model is kept in float32, which any CPU runs; the loss always sees float32 outputs."""
    size = 32 if name.startswith("cifar10") else 48
    keras.utils.set_random_seed(1)
    trained = build_model(name, params(size), policy="mixed_bfloat16")
    assert trained.get_layer("conv2").compute_dtype == "bfloat16"
    assert trained.get_layer("predictions").compute_dtype == "float32"
    keras.utils.set_random_seed(2)  # the copy starts from other weights: all must be overwritten
    kept = float32_copy(trained, name, params(size))
    assert {layer.dtype_policy.name for layer in kept.layers} == {"float32"}
    for copied, original in zip(kept.weights, trained.weights, strict=True):
        np.testing.assert_array_equal(copied.numpy(), original.numpy())
    if native_bfloat16():  # the two compute alike up to bfloat16's rounding
        images = random_images(4, size)
        np.testing.assert_allclose(kept.predict(images, verbose=0), trained.predict(images, verbose=0), atol=0.05)


def test_saved_model_loads_safely_with_same_predictions(tmp_path):
    model = build_model("cifar10_naive", params(32, augment=AUGMENT))
    path = tmp_path / "cifar10_naive.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = random_images(3, 32)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6)


def test_vgg16_layout(vgg_model):
    assert vgg_model.name == "cats_dogs_vgg16_finetune_aug"
    assert [layer.name for layer in vgg_model.layers] == ["image", "vgg_preprocess", "vgg16", "head"]
    base = vgg_model.get_layer("vgg16")
    assert base.count_params() == 14_714_688
    assert not base.trainable and not base.trainable_weights
    head = vgg_model.get_layer("head")
    assert [type(layer).__name__ for layer in head.layers] == ["Flatten", "Dense", "Dropout", "Dense"]
    assert head.layers[1].units == 256
    assert head.layers[-1].units == 1 and head.layers[-1].activation.__name__ == "sigmoid"
    assert trainable_count(vgg_model) == head.count_params()


def test_vgg_preprocess_matches_keras(vgg_model):
    images = random_images(2, 32, seed=1)
    expected = keras.applications.vgg16.preprocess_input(images.copy())
    actual = keras.ops.convert_to_numpy(vgg_model.get_layer("vgg_preprocess")(images))
    assert np.allclose(actual, expected, atol=1e-4)


def test_vgg16_saved_model_loads_safely(vgg_model, tmp_path):
    path = tmp_path / "vgg.keras"
    vgg_model.save(path)
    loaded = keras.saving.load_model(path)
    images = random_images(2, 32, seed=2)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), vgg_model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_vgg16_weights_file_and_unfreeze_top(vgg_model, tmp_path):
    # A weights file in the layout of Keras' vgg16_..._notop.h5, written from the shared model.
    weights = tmp_path / "vgg16_notop.h5"
    with h5py.File(weights, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, vgg_model.get_layer("vgg16"))
    tune = FineTune(epochs=1, learning_rate=1e-5)
    model = build_model("cats_dogs_vgg16_finetune", params(32, fine_tune=tune), vgg16_weights=weights)
    base = model.get_layer("vgg16")
    for loaded, written in zip(base.get_weights(), vgg_model.get_layer("vgg16").get_weights(), strict=True):
        np.testing.assert_array_equal(loaded, written)

    unfreeze_top(model, "block5_conv1")
    trainable = [layer.name for layer in base.layers if layer.trainable and layer.weights]
    assert trainable == ["block5_conv1", "block5_conv2", "block5_conv3"]
    block5 = sum(base.get_layer(name).count_params() for name in trainable)
    assert trainable_count(model) == block5 + model.get_layer("head").count_params()
    assert not model.get_layer("vgg_preprocess").trainable_weights

    with pytest.raises(ConfigError, match=r"train\.cats_dogs_vgg16_finetune\.fine_tune\.unfreeze_from"):
        unfreeze_top(model, "block9_conv1")


def test_missing_vgg16_weights_file(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        build_model("cats_dogs_vgg16_frozen", params(32), vgg16_weights=tmp_path / "missing.h5")
