"""The cats-vs-dogs classifier on the VGG16 convolutional base (frozen, then optionally fine-tuned).

Top-level layers: image -> vgg_preprocess -> vgg16 -> head. The training code
relies on these names: it runs `vgg16` once to cache features (`frozen_features`), trains
`head` on them, and for fine-tuning unfreezes the top of `vgg16` with `unfreeze_top` and
trains that part alone (`submodel`) on the features cached below it (`layer_before`).
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from pipeline.config import Model
from pipeline.errors import ConfigError, PipelineError
from pipeline.models.common import check_image_size, image_input, output_layer

# keras.applications.vgg16.preprocess_input ("caffe" mode): RGB -> BGR, minus these means.
IMAGENET_BGR_MEANS = (103.939, 116.779, 123.68)
MIN_IMAGE_SIZE = 32  # the smallest input keras.applications.VGG16 accepts without its top


def vgg_preprocess_layer() -> layers.Conv2D:
    """preprocess_input as a frozen 1x1 convolution: a built-in layer, so a saved model
    loads without custom objects or Lambda code. Output channel c is input channel 2-c
    (RGB -> BGR) plus a bias of minus that channel's ImageNet mean."""
    layer = layers.Conv2D(3, 1, name="vgg_preprocess", trainable=False)
    layer.build((None, None, None, 3))
    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for bgr in range(3):
        kernel[0, 0, 2 - bgr, bgr] = 1.0
    bias = -np.asarray(IMAGENET_BGR_MEANS, dtype="float32")
    layer.set_weights([kernel, bias])
    return layer


def vgg16_base(image_size: int, weights: Path | None) -> keras.Model:
    """VGG16 without its classifier, all 14,714,688 parameters frozen."""
    if weights is not None and not Path(weights).is_file():
        raise PipelineError(f"{weights}: VGG16 weights not found; run `dvc repro download@vgg16` first")
    base = keras.applications.VGG16(
        include_top=False,
        weights=None if weights is None else str(weights),
        input_shape=(image_size, image_size, 3),
    )
    base.trainable = False
    return base


def classifier_head(feature_shape: tuple[int, ...], dropout: float) -> keras.Sequential:
    """A small model of its own, so it can be trained alone on cached VGG16 features."""
    return keras.Sequential(
        [
            keras.Input(shape=feature_shape),
            layers.Flatten(name="flatten"),
            layers.Dense(256, activation="relu", name="dense1"),
            layers.Dropout(dropout, name="dropout1"),
            output_layer(2),
        ],
        name="head",
    )


def build_cats_dogs(name: str, params: Model, weights: Path | None = None) -> keras.Model:
    """`weights`: a local copy of vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, or None
    for random weights (tests); never 'imagenet', which would need a download."""
    check_image_size(name, params, MIN_IMAGE_SIZE)
    inputs = image_input(params)
    x = vgg_preprocess_layer()(inputs)
    base = vgg16_base(params.image_size, weights)
    x = base(x)
    outputs = classifier_head(base.output.shape[1:], params.dropout)(x)
    return keras.Model(inputs, outputs, name=name)


def unfreeze_top(model: keras.Model, from_layer: str) -> None:
    """Make the VGG16 layers from `from_layer` on trainable, keep those before it frozen.

    Recompile the model afterwards: Keras reads the trainable flags when compiling.
    """
    base = model.get_layer("vgg16")
    names = [layer.name for layer in base.layers]
    if from_layer not in names:
        raise ConfigError(
            f"train.{model.name}.fine_tune.unfreeze_from: no VGG16 layer '{from_layer}' "
            f"(one of: {', '.join(names[1:])})"
        )
    base.trainable = True
    for layer in base.layers[: names.index(from_layer)]:
        layer.trainable = False


def layer_before(model: keras.Model, name: str) -> str:
    """The VGG16 layer just below `name`: where the cached features stop when `name` fine-tunes."""
    names = [layer.name for layer in model.get_layer("vgg16").layers]
    if name not in names[1:]:
        raise ConfigError(f"train.{model.name}.fine_tune.unfreeze_from: {name!r} is not a VGG16 layer "
                          f"(one of {', '.join(names[1:])})")
    return names[names.index(name) - 1]


def submodel(model: keras.Model, first: str, last: str | None = None) -> keras.Model:
    """Layers of the VGG stack from `first` up to `last` (both included) as one model; with no
    `last`, up to the top of the stack and through the head.

    The layers are shared with `model`, so training the piece trains the whole model.
    """
    base, head = model.get_layer("vgg16"), model.get_layer("head")
    names = [layer.name for layer in base.layers]
    stop = names.index(last) + 1 if last else len(names)
    start = names.index(first)
    inputs = keras.Input(shape=base.layers[start].input.shape[1:])
    x = inputs
    for layer in base.layers[start:stop]:
        x = layer(x)
    if last is None:
        x = head(x)
    return keras.Model(inputs, x)


def frozen_features(model: keras.Model, images: np.ndarray, until: str) -> np.ndarray:
    """Run preprocessing and the frozen VGG16 layers up to `until` once, in inference mode."""
    base = model.get_layer("vgg16")
    inputs = keras.Input(shape=images.shape[1:])
    x = model.get_layer("vgg_preprocess")(inputs)
    x = keras.Model(base.input, base.get_layer(until).output)(x)
    extractor = keras.Model(inputs, x)
    return extractor.predict(images, batch_size=32, verbose=0)
