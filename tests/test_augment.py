"""Augmentation in the input pipeline: what each kind does to an image, fresh draws every epoch,
the same draws for the same seed, and nothing done to the images it is not asked to change."""
import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import Augment
from pipeline.data.augment import augment_images, augmented

SEED = tf.constant([3, 4], tf.int64)
NONE = {"flip": False, "rotation": 0.0, "zoom": 0.0, "translation": 0.0, "contrast": 0.0, "cutout": 0.0}


def images(count: int = 16, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def augment(batch: np.ndarray, **kinds) -> np.ndarray:
    return augment_images(tf.constant(batch), Augment(**{**NONE, **kinds}), SEED).numpy()


def shifted(image: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
    height, width = image.shape[:2]
    return padded[pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def test_nothing_asked_nothing_done():
    batch = images()
    np.testing.assert_array_equal(augment(batch), batch)


def test_flip_mirrors_some_images_and_leaves_the_others():
    batch = images()
    out = augment(batch, flip=True)
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, batch)]
    kept = [np.array_equal(o, i) for o, i in zip(out, batch)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_translation_moves_each_image_by_whole_pixels_without_resampling():
    """0.125 of 32 pixels: up to 4 either way, edges filled by reflection; pixel values untouched."""
    batch = images()
    out = augment(batch, translation=0.125)
    offsets = []
    for o, i in zip(out, batch):
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if np.array_equal(o, shifted(i, dy, dx, 4))]
        assert len(found) == 1
        offsets += found
    assert len(set(offsets)) > 4  # drawn per image


def test_rotation_and_zoom_resample_once_within_range():
    batch = images(8, 48)
    out = augment(batch, flip=True, rotation=0.1, zoom=0.2, translation=0.1)
    assert out.shape == batch.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 255  # bilinear mixes of pixels, nothing outside
    assert not any(np.allclose(o, i) for o, i in zip(out, batch))


def test_affine_path_with_no_turn_or_zoom_is_the_image_or_its_mirror():
    """The one transform (flip, rotation, zoom, shift) lands on exact pixels when it moves none."""
    batch = images()
    out = augment(batch, flip=True, zoom=1e-9)
    assert all(np.array_equal(o, i) or np.array_equal(o, i[:, ::-1]) for o, i in zip(out, batch))


def test_contrast_scales_about_each_image_s_mean():
    batch = np.full((4, 8, 8, 3), 100.0, np.float32)
    batch[:, :4] = 140.0
    out = augment(batch, contrast=0.5)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), batch.mean(axis=(1, 2, 3)), rtol=1e-5)
    assert not np.allclose(out, batch)


def blanked_boxes(out: np.ndarray, before: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Per image, the rows and columns (top, bottom, left, right) where `out` differs from `before`."""
    boxes = []
    for o, b in zip(out, before):
        rows, columns = np.nonzero((o != b).any(axis=-1))
        boxes.append((rows.min(), rows.max() + 1, columns.min(), columns.max() + 1))
    return boxes


def test_cutout_blanks_one_square_per_image_to_its_mean_colour():
    """0.25 of 32 pixels: an 8-pixel square, clipped where it hangs over an edge."""
    batch = images(64)
    out = augment(batch, cutout=0.25)
    boxes = blanked_boxes(out, batch)
    for o, b, (top, bottom, left, right) in zip(out, batch, boxes):
        assert bottom - top <= 8 and right - left <= 8
        np.testing.assert_allclose(o[top:bottom, left:right], np.broadcast_to(b.mean(axis=(0, 1)), (bottom - top, right - left, 3)), rtol=1e-5)
    assert (8, 8) in {(bottom - top, right - left) for top, bottom, left, right in boxes}
    assert len({box[0] for box in boxes}) > 4 and min(box[0] for box in boxes) == 0  # anywhere, over edges too


def test_cutout_leaves_the_other_draws_as_they_were():
    batch = images()
    without = augment(batch, flip=True, translation=0.125)
    with_cutout = augment(batch, flip=True, translation=0.125, cutout=0.25)
    for w, o, (top, bottom, left, right) in zip(with_cutout, without, blanked_boxes(with_cutout, without)):
        outside = np.ones(w.shape[:2], bool)
        outside[top:bottom, left:right] = False
        np.testing.assert_array_equal(w[outside], o[outside])


def epochs(dataset: tf.data.Dataset, count: int) -> list[np.ndarray]:
    return [np.concatenate([batch[0].numpy() for batch in dataset]) for _ in range(count)]


@pytest.mark.parametrize("kinds", [{"flip": True, "translation": 0.125, "cutout": 0.25}, {"flip": True, "rotation": 0.1, "zoom": 0.2}])
def test_new_draws_every_epoch_and_the_same_draws_for_the_same_seed(kinds):
    batch, targets = images(), np.arange(16, dtype=np.float32)

    def pipeline(seed: int) -> tf.data.Dataset:
        plain = tf.data.Dataset.from_tensor_slices((batch, targets)).batch(4)
        return augmented(plain, Augment(**{**NONE, **kinds}), seed)

    first, second = epochs(pipeline(42), 2)
    assert not np.array_equal(first, second)
    again = epochs(pipeline(42), 2)
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)
    assert not np.array_equal(epochs(pipeline(7), 1)[0], first)
    labels = [np.concatenate([b[1].numpy() for b in pipeline(42)])]
    np.testing.assert_array_equal(labels[0], targets)  # the targets ride along untouched
