"""Filter patterns: the input each filter responds to most, found by gradient ascent.

As keras.io's "Visualizing what convnets learn": start from a grey image with a little
noise, and climb the gradient of the filter's mean response (borders left out) with
respect to the image. The image lives in the model's own input space, raw 0..255 pixels,
so the model's rescaling or VGG preprocessing is part of the path. All filters of a layer
climb at once, one image each, in a single batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pipeline.visualize.activations import DPI, conv_base, feature_layers  # noqa: E402

VGG_LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]
VGG_ASCENT_SIZE = 96


@dataclass
class FilterPatterns:
    layer: str
    filters: list[int]
    images: np.ndarray  # (filters, height, width, 3) uint8, ready to show
    before: np.ndarray  # mean response of each filter to its starting image
    after: np.ndarray  # ... and to the image gradient ascent ended with


def default_filter_layers(model: keras.Model) -> list[str]:
    """The first conv of each VGG16 block; every Conv2D of a from-scratch model."""
    base, preprocess = conv_base(model)
    if preprocess is not None:
        return [name for name in VGG_LAYERS if name in {layer.name for layer in base.layers}]
    return [layer.name for layer in feature_layers(model) if isinstance(layer, keras.layers.Conv2D)]


def layer_input_model(model: keras.Model, layer_name: str) -> keras.Model:
    """Raw 0..255 pixels -> the input of layer_name.

    VGG16 is a plain stack of fully convolutional layers, so its path is rebuilt on
    images of at most VGG_ASCENT_SIZE pixels: 96x96 costs 40% of a 150x150 climb.
    """
    base, preprocess = conv_base(model)
    if preprocess is None:
        return keras.Model(model.inputs[0], base.get_layer(layer_name).input)
    size = min(VGG_ASCENT_SIZE, model.inputs[0].shape[1])
    inputs = keras.Input((size, size, 3))
    x = preprocess(inputs)
    names = [layer.name for layer in base.layers]
    for layer in base.layers[1:names.index(layer_name)]:  # [0] is the base's InputLayer
        x = layer(x)
    return keras.Model(inputs, x)


def layer_response(layer: keras.layers.Layer, inputs: tf.Tensor) -> tf.Tensor:
    """The layer's feature maps; for a conv, taken before its activation.

    A ReLU'd filter that is negative everywhere on the grey start image has no gradient
    and would never move; its response before the ReLU always has one.
    """
    if not isinstance(layer, keras.layers.Conv2D):
        return layer(inputs, training=False)
    response = layer.convolution_op(inputs, layer.kernel)
    return response + layer.bias if layer.use_bias else response


def border_width(map_size: int) -> int:
    """Map positions left out at each edge: 2 as in keras.io, fewer on maps of a few pixels."""
    return min(2, (map_size - 1) // 4)


def mean_response(maps: tf.Tensor, filters: tf.Tensor) -> tf.Tensor:
    """Mean of filter filters[i] over image i's map, without the border positions.

    Border positions see the zero padding rather than the image, so they are left out.
    """
    border = border_width(min(maps.shape[1], maps.shape[2]))
    if border:
        maps = maps[:, border:-border, border:-border, :]
    mask = tf.one_hot(filters, maps.shape[-1])[:, tf.newaxis, tf.newaxis, :]
    chosen = tf.reduce_sum(maps * mask, axis=-1)
    return tf.reduce_mean(chosen, axis=(1, 2))


def start_images(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Grey 0..255 images with a little uniform noise (the study's 128 +- 10)."""
    rng = np.random.default_rng(seed)
    return (118.0 + 20.0 * rng.random((count, *size, 3))).astype("float32")


def deprocess(image: np.ndarray) -> np.ndarray:
    """Zero mean, std 0.15 around mid-grey, clipped: a displayable uint8 image."""
    image = image - image.mean()
    image = image / (image.std() + 1e-5) * 0.15 + 0.5
    return (np.clip(image, 0, 1) * 255).astype("uint8")


def gradient_ascent(model: keras.Model, layer_name: str, filters: list[int], steps: int,
                    step_size: float, seed: int = 0, progress: bool = False) -> FilterPatterns:
    """Maximise the mean response of each filter of layer_name, one image per filter.

    Each step follows the image's gradient, L2-normalised per image and scaled to unit
    RMS, so step_size is a change of about that many grey levels per pixel per step.
    """
    layer = conv_base(model)[0].get_layer(layer_name)
    extractor = layer_input_model(model, layer_name)
    images = tf.Variable(start_images(len(filters), tuple(extractor.inputs[0].shape[1:3]), seed))
    chosen = tf.constant(filters, dtype=tf.int32)

    def respond(images):
        return layer_response(layer, extractor(images, training=False))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(mean_response(respond(images), chosen))
        grads = tape.gradient(loss, images)  # images are independent
        grads = tf.math.l2_normalize(grads, axis=(1, 2, 3)) * math.sqrt(np.prod(images.shape[1:]))
        images.assign_add(step_size * grads)

    before = mean_response(respond(images), chosen).numpy()
    for _ in tqdm(range(steps), desc=f"filters {layer_name}", disable=not progress, leave=False):
        step()
    maps = respond(images)
    after = mean_response(maps, chosen).numpy()
    # The pixels under the left-out border never move: crop that grey frame off, as keras.io does.
    size = images.shape[1]
    margin = border_width(maps.shape[1]) * size // maps.shape[1]
    patterns = np.stack([deprocess(image[margin:size - margin, margin:size - margin]) for image in images.numpy()])
    return FilterPatterns(layer_name, list(filters), patterns, before, after)


def plot_filters(patterns: FilterPatterns, out_png: Path, title: str = "") -> None:
    """A grid of filter patterns, each labelled with its filter number."""
    count = len(patterns.filters)
    columns = min(count, 8)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.75 * rows + 0.5), dpi=DPI,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, number, image in zip(axes.flat, patterns.filters, patterns.images):
        ax.imshow(image, interpolation="bilinear")
        ax.set_title(f"filter {number}", fontsize=9)
    fig.suptitle(title or f"{patterns.layer}: input patterns maximising each filter", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)


def save_filter_patterns(model: keras.Model, layer_name: str, n_filters: int, steps: int,
                         step_size: float, out_dir: Path, progress: bool = False) -> FilterPatterns:
    """filters_<layer>.png for the first n_filters filters of layer_name."""
    channels = conv_base(model)[0].get_layer(layer_name).output.shape[-1]
    filters = list(range(min(n_filters, channels)))
    patterns = gradient_ascent(model, layer_name, filters, steps, step_size, progress=progress)
    title = (f"{layer_name}: input patterns maximising filters 0-{filters[-1]} "
             f"({steps} gradient-ascent steps)")
    plot_filters(patterns, Path(out_dir) / f"filters_{layer_name}.png", title)
    return patterns
