"""`python -m pipeline predict`: classify image files with a trained model.

A file that is not a readable image gets an error line; the others are still classified,
and the exit code says whether any failed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import tensorflow as tf

from pipeline import layout, tracking
from pipeline.config import Config
from pipeline.data import loaders
from pipeline.errors import PipelineError
from pipeline.models import REGISTRY


def load_model(reference: str) -> keras.Model:
    """A registry name (its trained .keras file) or any MLflow model URI (runs:/, models:/)."""
    if reference in REGISTRY:
        path = layout.model_file(reference)
        if not path.exists():
            raise PipelineError(f"{path}: not found; run `dvc repro train@{reference}` first")
        return keras.saving.load_model(path)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        return mlflow.keras.load_model(reference)
    except Exception as error:  # MLflow raises several types for a bad URI
        raise PipelineError(f"cannot load model {reference!r}: not a model name "
                            f"({', '.join(REGISTRY)}) nor a loadable MLflow model URI ({error})") from None


def classes_of(config: Config, model: keras.Model) -> list[str]:
    """Class names from the number of outputs: one sigmoid unit is cats/dogs."""
    units = model.output_shape[-1]
    return loaders.class_names(config, "cats_dogs" if units == 1 else "cifar10")


def read_image(path: Path, image_size: int) -> np.ndarray:
    try:
        return loaders.decode_image(tf.constant(str(path)), image_size).numpy()
    except tf.errors.NotFoundError:
        raise PipelineError(f"{path}: not found") from None
    except tf.errors.OpError:  # not an image, cut short, a folder, no permission to read
        raise PipelineError(f"{path}: not a readable image") from None


def run(config: Config, reference: str, images: list[Path]) -> int:
    model = load_model(reference)
    classes = classes_of(config, model)
    size = model.input_shape[1]
    failed = 0
    for path in images:
        try:
            image = read_image(path, size)
        except PipelineError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        output = model.predict(image[None], verbose=0)[0]
        probabilities = np.array([1 - output[0], output[0]]) if len(output) == 1 else output
        best = int(probabilities.argmax())
        print(f"{path}\t{classes[best]}\t{probabilities[best]:.4f}")
    return 1 if failed else 0
