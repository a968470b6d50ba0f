"""Intermediate activations: what each of the first layers responds to in one test image.

The study's procedure: a model whose outputs are the first N feature-map layers, run on
one image, every channel of every layer drawn as a tile. The helpers that find the
feature-map layers, also inside the nested VGG16 base, serve the other figures too.
"""
from __future__ import annotations

import math
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
# Layers that only prepare the input (or are the identity at inference) hold no features.
INPUT_LAYERS = ("augment", "rescale", "vgg_preprocess")
SKIPPED_TYPES = (keras.layers.InputLayer, keras.layers.Dropout, keras.layers.Rescaling)


def conv_base(model: keras.Model) -> tuple[keras.Model, keras.layers.Layer | None]:
    """The network that holds the feature maps, and the preprocessing layer in front of it.

    From-scratch models hold their conv layers at the top level. The VGG16 models nest
    them in the "vgg16" sub-model, which "vgg_preprocess" feeds.
    """
    names = [layer.name for layer in model.layers]
    if "vgg16" in names:
        return model.get_layer("vgg16"), model.get_layer("vgg_preprocess")
    return model, None


def feature_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers whose output is a feature map (batch, height, width, channels), in order."""
    base, _ = conv_base(model)
    return [
        layer for layer in base.layers
        if layer.name not in INPUT_LAYERS
        and not isinstance(layer, SKIPPED_TYPES)
        and not isinstance(layer, keras.Model)
        and len(layer.output.shape) == 4
    ]


def feature_model(model: keras.Model, layer_names: list[str]) -> keras.Model:
    """Raw 0..255 pixels -> {name: feature maps of that layer}."""
    base, preprocess = conv_base(model)
    tensors = {name: base.get_layer(name).output for name in layer_names}
    if preprocess is None:
        return keras.Model(model.inputs[0], tensors)
    # Nested base: build pixels -> preprocess -> (the base cut at those layers).
    inputs = keras.Input(shape=model.inputs[0].shape[1:])
    return keras.Model(inputs, keras.Model(base.inputs, tensors)(preprocess(inputs)))


def layer_activations(model: keras.Model, image: np.ndarray, n_layers: int) -> dict[str, np.ndarray]:
    """Feature maps (height, width, channels) of the first n_layers feature layers for one image."""
    names = [layer.name for layer in feature_layers(model)[:n_layers]]
    outputs = feature_model(model, names)(image[np.newaxis].astype("float32"), training=False)
    return {name: keras.ops.convert_to_numpy(outputs[name])[0] for name in names}


def normalise(tile: np.ndarray) -> np.ndarray:
    """Scale one channel to 0..1 on its own range, so weak channels stay visible."""
    low, high = float(tile.min()), float(tile.max())
    return (tile - low) / (high - low) if high > low else np.zeros_like(tile)


def grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns of a grid about twice as wide as tall, with no half-empty last row
    when a divisor of the count comes close (channel counts are mostly powers of two)."""
    target = math.sqrt(2 * count)
    fitting = [d for d in range(1, count + 1) if count % d == 0 and target / 2 <= d <= target * 2]
    columns = min(fitting, key=lambda d: abs(d - target)) if fitting else math.ceil(target)
    return math.ceil(count / columns), columns


def activation_grid(maps: np.ndarray, gap: int = 1) -> tuple[np.ndarray, int]:
    """All channels of (height, width, channels) as one mosaic, NaN between tiles; and the tile count."""
    height, width, channels = maps.shape
    rows, columns = grid_shape(channels)
    mosaic = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap), np.nan, dtype="float32")
    for channel in range(channels):
        row, column = divmod(channel, columns)
        top, left = row * (height + gap), column * (width + gap)
        mosaic[top:top + height, left:left + width] = normalise(maps[..., channel])
    return mosaic, channels


def plot_activation_grid(maps: np.ndarray, layer_name: str, out_png: Path) -> int:
    """One PNG of every channel of one layer; returns the number of tiles drawn."""
    mosaic, tiles = activation_grid(maps, gap=max(1, maps.shape[0] // 16))
    height, width = mosaic.shape
    columns = grid_shape(tiles)[1]
    # Tiles of at least 64 pixels where the page allows, never so large that the file balloons.
    fig_width = float(np.clip(columns * max(maps.shape[1], 64) / DPI, 6, 12))
    fig_height = fig_width * height / width + 0.6
    fig, ax = plt.subplots(figsize=(fig_width, fig_height), dpi=DPI)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"{layer_name}: {' x '.join(str(n) for n in maps.shape)} "
                 f"(height x width x channels), one tile per channel", fontsize=11)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)
    return tiles


def plot_input(image: np.ndarray, title: str, out_png: Path) -> None:
    """The test image the activation grids were computed on."""
    fig, ax = plt.subplots(figsize=(3, 3.3), dpi=DPI)
    ax.imshow(np.clip(image, 0, 255).astype("uint8"))
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)


def save_activations(model: keras.Model, image: np.ndarray, n_layers: int, out_dir: Path,
                     label: str = "") -> dict[str, int]:
    """activations_00_input.png, then activations_NN_<layer>.png per layer; tiles per layer."""
    out_dir = Path(out_dir)
    plot_input(image, f"input image {label}".strip(), out_dir / "activations_00_input.png")
    tiles = {}
    for index, (name, maps) in enumerate(layer_activations(model, image, n_layers).items(), start=1):
        tiles[name] = plot_activation_grid(maps, name, out_dir / f"activations_{index:02d}_{name}.png")
    return tiles
