"""`python -m pipeline predict`: classify image files and folders with a trained model.

A folder stands for the images in it and below it: the formats TensorFlow decodes (JPEG, PNG,
BMP, GIF), which every stage reads, and those Pillow reads besides (WebP, TIFF...). The images go
through the model in batches; each gets a line `path<TAB>label<TAB>probability`, and `--output
FILE.csv` keeps every class's probability as well. A file that is not a readable image gets an
error line and is counted; the others are still classified. A summary line (how many per class,
how many unreadable) ends the output, and the exit code says whether any file was unreadable.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image, ImageFile

from pipeline import atomic, serving, tracking, trained
from pipeline.config import Config
from pipeline.data import loaders
from pipeline.errors import PipelineError
from pipeline.inference import class_probabilities
from pipeline.registry import REGISTRY, evaluate_stage, train_stage

BATCH_SIZE = 32


def pillow_suffixes() -> set[str]:
    """The file suffixes of the formats Pillow can decode (not its stubs, which only identify)."""
    Image.init()
    decodes = {name for name, (factory, _) in Image.OPEN.items()
               if not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))}
    return {suffix for suffix, name in Image.registered_extensions().items() if name in decodes}


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"} | pillow_suffixes()


def load_model(config: Config, reference: str) -> tuple[keras.Model, list[str], bool]:
    """The network, its class names and whether it answers with the mirror average, from a model
    name (its trained .keras file and params.yaml) or an MLflow model URI of a photo classifier
    this project logged (runs:/<id>/classifier, models:/name@champion)."""
    if reference in REGISTRY:  # the default seed's model, the one registered and served
        network = trained.load_model(reference, config.seed)
        return network, classes_of(config, network), config.model(reference).mirror_average
    if ":/" not in reference:
        raise PipelineError(f"{reference}: not a model name ({', '.join(REGISTRY)}) nor an MLflow model URI "
                            f"(runs:/<run id>/classifier, models:/<name>@{tracking.CHAMPION})")
    tracking.connect()
    try:
        classifier = serving.unwrap(mlflow.pyfunc.load_model(reference))
    except Exception as error:  # MLflow raises several types for a bad URI
        raise PipelineError(not_loadable(reference, error, config.seed)) from None
    if classifier is None:
        raise PipelineError(f"{reference}: not a photo classifier of this project")
    return classifier.network, classifier.classes, classifier.mirror_average


def not_loadable(reference: str, error: Exception, seed: int) -> str:
    """Why an MLflow model URI did not load, in one line, the cause first. A registered model
    without the alias asked for is the usual one: the default seed's training registers a
    version, its evaluation picks the champion."""
    name, _, alias = reference.removeprefix("models:/").partition("@")
    if reference.startswith("models:/") and alias:
        try:
            aliases = mlflow.MlflowClient().get_registered_model(name).aliases
        except mlflow.exceptions.MlflowException:
            hint = f"; `dvc repro {train_stage(name, seed)}` registers it" if name in REGISTRY else ""
            return f"{reference}: no registered model {name}{hint}"
        if alias not in aliases:
            hint = f"; `dvc repro {evaluate_stage(name, seed)}` sets it" if alias == tracking.CHAMPION else ""
            return f"{reference}: no version of {name} has the alias {alias}{hint}"
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"{reference}: cannot load it as an MLflow model ({cause})"


def classes_of(config: Config, model: keras.Model) -> list[str]:
    """Class names from the number of outputs: one sigmoid unit is cats/dogs."""
    units = model.output_shape[-1]
    return loaders.class_names(config, "cats_dogs" if units == 1 else "cifar10")


def image_paths(arguments: list[Path]) -> list[Path]:
    """Files as given; folders expanded to the images inside, sorted."""
    found = []
    for argument in arguments:
        if argument.is_dir():
            found += sorted(p for p in argument.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(argument)
    return found


def read_image(path: Path, image_size: int) -> np.ndarray:
    try:
        return loaders.photo_decoder(image_size)(tf.io.read_file(str(path))).numpy()
    except tf.errors.NotFoundError:
        raise PipelineError(f"{path}: not found") from None
    except tf.errors.OpError:  # a format TensorFlow does not decode, not an image, cut short, unreadable
        return read_with_pillow(path, image_size)


def read_with_pillow(path: Path, image_size: int) -> np.ndarray:
    """A format TensorFlow does not decode (WebP, TIFF...) through Pillow, then resized as
    TensorFlow's decoded images are: the same pixels give the same input."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    except (OSError, ValueError, Image.DecompressionBombError):  # not an image, cut short, unreadable
        raise PipelineError(f"{path}: not a readable image") from None
    return tf.image.resize(pixels, (image_size, image_size)).numpy()


def classify(network: keras.Model, classes: list[str], files: list[Path], mirror_average: bool = False) -> pd.DataFrame:
    """One row per file, in order: path, label, its probability, each class's probability, or the error."""
    size = network.input_shape[1]
    rows = []
    for start in range(0, len(files), BATCH_SIZE):
        batch, images, errors = files[start:start + BATCH_SIZE], {}, {}
        for index, path in enumerate(batch):
            try:
                images[index] = read_image(path, size)
            except PipelineError as error:
                print(f"error: {error}", file=sys.stderr)
                errors[index] = str(error)
        probabilities = class_probabilities(network, np.stack(list(images.values())), mirror_average) if images else []
        by_index = dict(zip(images, probabilities))
        for index, path in enumerate(batch):
            if index in errors:
                rows.append({"path": str(path), "error": errors[index]})
                continue
            row = by_index[index]
            best = int(row.argmax())
            print(f"{path}\t{classes[best]}\t{row[best]:.4f}")
            rows.append({"path": str(path), "label": classes[best], "probability": float(row[best]),
                         **{f"p_{name}": float(p) for name, p in zip(classes, row)}})
    columns = ["path", "label", "probability", *(f"p_{name}" for name in classes), "error"]
    return pd.DataFrame(rows, columns=columns)


def summary(results: pd.DataFrame, classes: list[str]) -> str:
    counts = Counter(results["label"].dropna())
    unreadable = int(results["error"].notna().sum())
    per_class = ", ".join(f"{name} {counts[name]}" for name in classes if counts[name])
    return f"{len(results) - unreadable} classified ({per_class or 'none'}), {unreadable} unreadable"


def run(config: Config, reference: str, arguments: list[Path], output: Path | None = None) -> int:
    if output is not None:  # before the model loads and the images are read, not after
        atomic.check_writable(output)
    network, classes, mirror_average = load_model(config, reference)
    files = image_paths(arguments)
    if not files:
        raise PipelineError(f"no images in {', '.join(map(str, arguments))}")
    results = classify(network, classes, files, mirror_average)
    if output is not None:
        with atomic.replacing_file(output) as partial:
            results.to_csv(partial, index=False)
    print(summary(results, classes), file=sys.stderr)
    return 1 if results["error"].notna().any() else 0
