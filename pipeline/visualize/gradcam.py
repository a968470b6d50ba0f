"""Grad-CAM (keras.io's "Grad-CAM class activation visualization"): where the model looked.

The gradient of the predicted class's score with respect to the last conv feature map,
averaged over the map, weighs each channel; the weighted, rectified sum of the channels is
the heat map. The score is taken before the final sigmoid or softmax, which would flatten
the gradient of a confident prediction.
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

from pipeline.visualize.activations import DPI, conv_base, feature_layers  # noqa: E402

CONV_MAP_TYPES = (keras.layers.Conv2D, keras.layers.Add, keras.layers.Concatenate)


@dataclass
class GradCam:
    heatmaps: np.ndarray  # (images, height, width), 0..1
    predicted: np.ndarray  # class index per image
    probability: np.ndarray  # the model's probability of that class


def classifier_layer(model: keras.Model) -> keras.layers.Dense:
    """The final Dense layer, inside the nested head if there is one."""
    layer = model.layers[-1]
    while isinstance(layer, keras.Model):
        layer = layer.layers[-1]
    return layer


def last_conv_layer(model: keras.Model) -> str:
    """The last conv feature map; a merge of conv branches (residual Add, inception
    Concatenate) after the last Conv2D counts, since it holds both paths."""
    return [layer for layer in feature_layers(model) if isinstance(layer, CONV_MAP_TYPES)][-1].name


def gradcam_model(model: keras.Model, layer_name: str) -> keras.Model:
    """Raw pixels -> [the layer's feature maps, the input of the final Dense layer].

    For a VGG16 model the feature maps sit inside the nested base, so the path is rebuilt
    from its pieces: preprocess -> base (giving the maps and its output) -> head.
    """
    dense = classifier_layer(model)
    base, preprocess = conv_base(model)
    if preprocess is None:
        return keras.Model(model.inputs[0], [model.get_layer(layer_name).output, dense.input])
    head = model.layers[-1]
    inputs = keras.Input(shape=model.inputs[0].shape[1:])
    maps, features = keras.Model(base.inputs, [base.get_layer(layer_name).output, base.outputs[0]])(
        preprocess(inputs))
    return keras.Model(inputs, [maps, keras.Model(head.inputs, dense.input)(features)])


def class_scores(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Predicted class per image and its score (logit); a single sigmoid unit scores
    'class 1' as the logit and 'class 0' as minus the logit."""
    if logits.shape[-1] == 1:
        predicted = tf.cast(logits[:, 0] > 0, tf.int32)
        return predicted, tf.where(predicted == 1, logits[:, 0], -logits[:, 0])
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return predicted, tf.gather(logits, predicted, axis=1, batch_dims=1)


def predicted_probability(dense: keras.layers.Dense, logits: tf.Tensor, predicted: np.ndarray) -> np.ndarray:
    """The model's own output (sigmoid or softmax) for the predicted class."""
    probabilities = keras.ops.convert_to_numpy(dense.activation(logits))
    if probabilities.shape[-1] == 1:
        return np.where(predicted == 1, probabilities[:, 0], 1 - probabilities[:, 0])
    return probabilities[np.arange(len(predicted)), predicted]


def gradcam(model: keras.Model, images: np.ndarray, layer_name: str | None = None) -> GradCam:
    """Grad-CAM heat maps of the predicted class, upsampled to the images' size."""
    layer_name = layer_name or last_conv_layer(model)
    dense = classifier_layer(model)
    grad_model = gradcam_model(model, layer_name)
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        maps, features = grad_model(images, training=False)
        logits = tf.matmul(features, dense.kernel) + dense.bias
        predicted, score = class_scores(logits)
        # Images do not interact at inference, so the gradient of the sum gives each image's own.
        total = tf.reduce_sum(score)
    grads = tape.gradient(total, maps)
    channel_weights = tf.reduce_mean(grads, axis=(1, 2))
    heat = tf.nn.relu(tf.einsum("nhwc,nc->nhw", maps, channel_weights))
    heat = heat / tf.maximum(tf.reduce_max(heat, axis=(1, 2), keepdims=True), 1e-12)
    heat = tf.image.resize(heat[..., tf.newaxis], images.shape[1:3], method="bilinear")[..., 0]
    predicted = predicted.numpy()
    return GradCam(np.clip(heat.numpy(), 0, 1), predicted, predicted_probability(dense, logits, predicted))


def examples_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first per_class images of each class, in class order."""
    return np.concatenate([np.flatnonzero(labels == label)[:per_class] for label in np.unique(labels)])


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat map in the jet colour map, blended over the 0..255 image; floats 0..1."""
    colours = plt.get_cmap("jet")(heatmap)[..., :3]
    return np.clip((1 - alpha) * image / 255.0 + alpha * colours, 0, 1)


def plot_gradcam(images: np.ndarray, labels: np.ndarray, cams: GradCam, class_names: list[str],
                 out_png: Path, title: str = "Grad-CAM") -> None:
    """Each image above its heat-map overlay; true class above, prediction below (red if wrong)."""
    count = len(images)
    columns = min(count, 10)
    pairs = math.ceil(count / columns)
    fig, axes = plt.subplots(2 * pairs, columns, figsize=(1.7 * columns, 3.7 * pairs + 0.5), dpi=DPI,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for index in range(count):
        row, column = divmod(index, columns)
        top, bottom = axes[2 * row, column], axes[2 * row + 1, column]
        top.imshow(np.clip(images[index], 0, 255).astype("uint8"))
        top.set_title(f"true: {class_names[labels[index]]}", fontsize=9)
        bottom.imshow(overlay(images[index], cams.heatmaps[index]))
        correct = cams.predicted[index] == labels[index]
        bottom.set_title(f"pred: {class_names[cams.predicted[index]]} {cams.probability[index]:.2f}",
                         fontsize=9, color="darkgreen" if correct else "firebrick")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)


def save_gradcam(model: keras.Model, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                 per_class: int, out_dir: Path) -> GradCam:
    """gradcam.png: a few test images per class with the heat map of their predicted class."""
    chosen = examples_per_class(labels, per_class)
    layer_name = last_conv_layer(model)
    cams = gradcam(model, images[chosen], layer_name)
    plot_gradcam(images[chosen], labels[chosen], cams, class_names, Path(out_dir) / "gradcam.png",
                 f"Grad-CAM of the predicted class on {layer_name} (red: wrong prediction)")
    return cams
