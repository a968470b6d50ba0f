"""Training-time augmentation, done in the input pipeline on whole batches.

Mirror images and integer shifts need no interpolation: a batch is padded once (reflecting its
edges, as Keras's RandomTranslation fills) and each image is cropped from it by index. Rotation
and zoom need resampling: then flip, rotation, zoom and shift are one affine transform per image,
applied in one bilinear pass instead of one pass each. Contrast scales each image about its mean.
Cutout blanks one square of each image (to its mean colour), so no single patch can be relied on.

The randomness is stateless: each batch draws from a seed that `tf.data.Dataset.random` gives it
(a new one every epoch), so the same params give the same images without serialising anything.
Augmentation ranges follow Keras's layers of the same names: `rotation` is a fraction of a full
turn, `zoom`, `translation` and `cutout` fractions of the image's side, `contrast` a factor
range 1 ± c.
"""
from __future__ import annotations

import math

import tensorflow as tf

from pipeline.config import Augment

AUTOTUNE = tf.data.AUTOTUNE


def augmented(dataset: tf.data.Dataset, augment: Augment, seed: int) -> tf.data.Dataset:
    """Batches of (images, targets) with each image augmented anew every epoch."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds).map(
        lambda batch, batch_seed: (augment_images(batch[0], augment, batch_seed), batch[1]),
        num_parallel_calls=AUTOTUNE, deterministic=True)


def augment_images(images: tf.Tensor, augment: Augment, seed: tf.Tensor) -> tf.Tensor:
    """(B, H, W, C) float images, augmented as `augment` says, drawn from the (2,) `seed`."""
    flip_seed, geometry_seed, contrast_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if augment.rotation or augment.zoom:
        images = affine(images, augment, flip_seed)
    else:
        if augment.flip:
            images = random_flip(images, flip_seed)
        if augment.translation:
            images = random_shift(images, augment.translation, geometry_seed)
    if augment.contrast:
        images = random_contrast(images, augment.contrast, contrast_seed)
    if augment.cutout:  # its own seed, folded in, so the other kinds draw as they did without it
        images = random_cutout(images, augment.cutout, tf.random.experimental.stateless_fold_in(seed, 3))
    return images


def random_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    flip = tf.random.stateless_uniform(tf.shape(images)[:1], seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def random_shift(images: tf.Tensor, fraction: float, seed: tf.Tensor) -> tf.Tensor:
    """Each image moved by a whole number of pixels, up to `fraction` of its side either way."""
    height, width = images.shape[1], images.shape[2]
    pad_y, pad_x = round(fraction * height), round(fraction * width)
    padded = tf.pad(images, [[0, 0], [pad_y, pad_y], [pad_x, pad_x], [0, 0]], mode="REFLECT")
    batch = tf.shape(images)[:1]
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    top = tf.random.stateless_uniform(batch, seed_y, 0, 2 * pad_y + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform(batch, seed_x, 0, 2 * pad_x + 1, dtype=tf.int32)
    rows = top[:, None] + tf.range(height)[None, :]
    columns = left[:, None] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)


def random_contrast(images: tf.Tensor, factor: float, seed: tf.Tensor) -> tf.Tensor:
    scale = tf.random.stateless_uniform(tf.shape(images)[:1], seed, 1 - factor, 1 + factor)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.clip_by_value((images - mean) * scale[:, None, None, None] + mean, 0.0, 255.0)


def random_cutout(images: tf.Tensor, fraction: float, seed: tf.Tensor) -> tf.Tensor:
    """A square `fraction` of the side, centred anywhere in each image (so it may hang over an
    edge), filled with that image's mean colour."""
    height, width = images.shape[1], images.shape[2]
    size_y, size_x = round(fraction * height), round(fraction * width)
    batch = tf.shape(images)[:1]
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    top = tf.random.stateless_uniform(batch, seed_y, 0, height, dtype=tf.int32) - size_y // 2
    left = tf.random.stateless_uniform(batch, seed_x, 0, width, dtype=tf.int32) - size_x // 2
    rows, columns = tf.range(height)[None, :], tf.range(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size_y)
    in_columns = (columns >= left[:, None]) & (columns < left[:, None] + size_x)
    inside = in_rows[:, :, None, None] & in_columns[:, None, :, None]
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.where(inside, mean, images)


def affine(images: tf.Tensor, augment: Augment, seed: tf.Tensor) -> tf.Tensor:
    """Flip, rotation, zoom and shift as one transform per image, resampled once (bilinear)."""
    height, width = images.shape[1], images.shape[2]
    batch = tf.shape(images)[:1]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
    flip = tf.cast(tf.random.stateless_uniform(batch, seeds[0]) < 0.5, tf.float32) if augment.flip \
        else tf.zeros(batch)
    angle = tf.random.stateless_uniform(batch, seeds[1], -1.0, 1.0) * augment.rotation * 2 * math.pi
    scale = 1.0 + tf.random.stateless_uniform(batch, seeds[2], -1.0, 1.0) * augment.zoom
    shift_x = tf.random.stateless_uniform(batch, seeds[3], -1.0, 1.0) * augment.translation * width
    shift_y = tf.random.stateless_uniform(batch, seeds[4], -1.0, 1.0) * augment.translation * height
    # Where each output pixel samples the input: about the centre, mirrored, zoomed, turned, moved.
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    sign = 1.0 - 2.0 * flip  # -1: mirrored
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    a0, a1 = cos * sign, -sin
    b0, b1 = sin * sign, cos
    a2 = centre_x - a0 * centre_x - a1 * centre_y - shift_x
    b2 = centre_y - b0 * centre_x - b1 * centre_y - shift_y
    zeros = tf.zeros(batch)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[height, width], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")
