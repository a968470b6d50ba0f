"""Reading the splits back: the one place that turns split files into arrays and tf.data pipelines.

Images come out as float32 in 0..255; each model carries its own preprocessing, so a saved
model works on raw pixels. Labels come out in the form the task's loss wants: a (1,) float
for binary cross-entropy, a one-hot vector for categorical cross-entropy.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline import paths
from pipeline.config import Augment, Config
from pipeline.data.augment import augmented
from pipeline.errors import PipelineError

CATS_DOGS_CLASSES = ["cats", "dogs"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
AUTOTUNE = tf.data.AUTOTUNE


def class_names(config: Config, task: str) -> list[str]:
    if task == "cats_dogs":
        return list(CATS_DOGS_CLASSES)
    recorded = paths.split_dir(config, task) / "classes.json"
    return json.loads(recorded.read_text()) if recorded.exists() else list(CIFAR10_CLASSES)


def image_files(config: Config, task: str, split: str) -> tuple[list[Path], np.ndarray]:
    """The JPEG paths of a cats_dogs split, sorted, with their class indices."""
    root = paths.split_dir(config, task) / split
    found, labels = [], []
    for index, name in enumerate(CATS_DOGS_CLASSES):
        files = sorted((root / name).glob("*.jpg"))
        found += files
        labels += [index] * len(files)
    if not found:
        raise PipelineError(f"{root}: no images; run `dvc repro split@{task}` first")
    return found, np.asarray(labels, dtype=np.int64)


def decode_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """An image file -> (size, size, 3) float32 0..255, as every stage sees images."""
    return decode_bytes(tf.io.read_file(path), image_size)


def decode_bytes(raw: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded JPEG/PNG/BMP/GIF bytes -> (size, size, 3) float32 0..255; the served model decodes so too."""
    image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    return tf.image.resize(image, (image_size, image_size))


@functools.cache
def photo_decoder(image_size: int):
    """decode_bytes compiled for one image size: one call per photo instead of one per op,
    which is most of what a served photo costs. Unreadable bytes raise tf.errors.OpError."""
    return tf.function(lambda raw: decode_bytes(raw, image_size), input_signature=[tf.TensorSpec((), tf.string)])


def load_arrays(config: Config, task: str, split: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory: images (N, size, size, 3) float32 0..255 and integer labels (N,)."""
    if task == "cifar10":
        path = paths.split_dir(config, task) / f"{split}.npz"
        if not path.exists():
            raise PipelineError(f"{path}: not found; run `dvc repro split@{task}` first")
        with np.load(path) as arrays:
            images, labels = arrays["images"], arrays["labels"]
        if image_size != images.shape[1]:
            images = tf.image.resize(images, (image_size, image_size)).numpy()
        return images.astype(np.float32), labels.astype(np.int64)
    files, labels = image_files(config, task, split)
    dataset = tf.data.Dataset.from_tensor_slices([str(p) for p in files])
    dataset = dataset.map(lambda p: decode_image(p, image_size), num_parallel_calls=AUTOTUNE)
    images = np.concatenate([batch.numpy() for batch in dataset.batch(256)])
    return images, labels


def encode_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Integer classes -> the targets of the loss: (N, 1) floats if binary, else one-hot."""
    if n_classes == 2:
        return labels.astype(np.float32).reshape(-1, 1)
    return np.eye(n_classes, dtype=np.float32)[labels]


def make_dataset(
    config: Config,
    task: str,
    split: str,
    image_size: int,
    batch_size: int,
    shuffle: bool = False,
    augment: Augment | None = None,
) -> tf.data.Dataset:
    """Batches of (images, targets): decoded and resized once, cached, shuffled per epoch,
    augmented anew each epoch if `augment` says how, prefetched."""
    n_classes = len(class_names(config, task))
    if task == "cifar10":
        images, labels = load_arrays(config, task, split, image_size)
        dataset = tf.data.Dataset.from_tensor_slices((images, encode_labels(labels, n_classes)))
    else:
        files, labels = image_files(config, task, split)
        dataset = tf.data.Dataset.from_tensor_slices(([str(p) for p in files], encode_labels(labels, n_classes)))
        dataset = dataset.map(lambda p, y: (decode_image(p, image_size), y), num_parallel_calls=AUTOTUNE)
    dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(10_000, seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment is not None:
        dataset = augmented(dataset, augment, config.seed)
    return prefetched(dataset)


def array_batches(images: np.ndarray, targets: np.ndarray, batch_size: int,
                  shuffle_seed: int | None = None) -> tf.data.Dataset:
    """In-memory (images, targets) as batches, reshuffled every epoch when a seed is given."""
    dataset = tf.data.Dataset.from_tensor_slices((images, targets))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


def prefetched(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset, prefetched, with tf.data's autotuning optimiser off.

    Keras makes a new iterator each epoch, and an ending iterator waits for that optimiser's
    current sleep, which doubles from 10 ms up to a minute: a 13 s epoch ended at 20.5 s.
    Parallel maps then use one thread per core and the prefetch buffer still grows as needed.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(AUTOTUNE).with_options(options)
