"""Reading CIFAR-10's python pickles (cifar-10-batches-py) into arrays, safely.

A pickle can name any callable, and Python's stock Unpickler calls it while loading: the
batches are read by an Unpickler that rebuilds plain data and numpy arrays only. Each batch is
checked (uint8 rows of 3x32x32 pixels, one class index per row) before it is used.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct as numpy_reconstruct

from pipeline.errors import PipelineError
from pipeline.progress import progress_bar

FOLDER = "cifar-10-batches-py"
BATCHES = [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]
PIXELS = 3 * 32 * 32


def read_class_names(path: Path) -> list[str]:
    meta = read_pickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not names or not all(isinstance(name, bytes) for name in names):
        raise PipelineError(f"{path}: no b'label_names' list; not a CIFAR-10 batches.meta")
    return [name.decode() for name in names]


def read_batches(folder: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Every batch pooled: images (N, 32, 32, 3) uint8 RGB and labels (N,) int64."""
    images, labels = [], []
    for name in progress_bar("read cifar10", BATCHES, unit="batch"):
        data, batch_labels = check_batch(folder / name, read_pickle(folder / name), n_classes)
        # Each row holds the R, G and B planes one after the other; Keras wants channels last.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def check_batch(path: Path, batch: object, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The b'data' and b'labels' of a batch, or a PipelineError saying what is wrong."""
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise PipelineError(f"{path}: no b'data' and b'labels'; not a CIFAR-10 batch")
    data = batch[b"data"]
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError):
        raise PipelineError(f"{path}: b'labels' is not a list of class indices") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (PIXELS,):
        raise PipelineError(f"{path}: b'data' is not a uint8 array of {PIXELS} pixels per row")
    if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= n_classes:
        raise PipelineError(f"{path}: b'labels' must hold one class index below {n_classes} per image")
    return data, labels


def read_pickle(path: Path) -> object:
    try:
        with path.open("rb") as file:
            return RestrictedUnpickler(file, encoding="bytes").load()
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; run `dvc repro download@cifar10` again") from None
    except Exception as error:  # truncated or foreign bytes make pickle raise many kinds of error
        message = " ".join(str(error).split()) or type(error).__name__
        raise PipelineError(f"{path}: not a readable CIFAR-10 pickle ({message})") from None


def latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What a protocol-2 pickle written by Python 3 calls to rebuild a bytes object."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Loads plain data and numpy arrays only: a pickle can name any callable, and loading it
    with the stock Unpickler would call it, so every global outside this list is refused."""

    ALLOWED = {
        # numpy 1 and numpy 2 name the function that rebuilds an array differently.
        ("numpy.core.multiarray", "_reconstruct"): numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): numpy_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): latin1_bytes,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None
