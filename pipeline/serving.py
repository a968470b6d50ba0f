"""A model that classifies photos: encoded JPEG/PNG bytes in, a label and class probabilities out.

This is the model each training registers and `mlflow models serve` serves. A request is a
DataFrame with one `image` column of binary values (base64 in JSON, as MLflow sends binary
columns); the answer has, per image, its `label` and `probabilities` by class name. The trained
Keras network travels inside it as an artifact and stays loadable on its own.
"""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from pipeline.inference import class_probabilities

IMAGE_COLUMN = "image"
LOGGED_NAME = "classifier"  # the one model a training run logs
NETWORK_ARTIFACT = "network"


class PhotoClassifier(mlflow.pyfunc.PythonModel):
    """The network and its class names; MLflow builds it empty and fills it in load_context."""

    def __init__(self, network=None, classes: list[str] | None = None, mirror_average: bool = False):
        self.network, self.classes, self.mirror_average = network, classes, mirror_average

    def load_context(self, context):
        import keras

        self.network = keras.saving.load_model(context.artifacts[NETWORK_ARTIFACT])
        self.classes = list(context.model_config["classes"])
        self.mirror_average = bool(context.model_config.get("mirror_average", False))

    @property
    def image_size(self) -> int:
        return self.network.input_shape[1]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        images = [decode(raw, self.image_size, row) for row, raw in enumerate(model_input[IMAGE_COLUMN])]
        if not images:
            return labelled(np.zeros((0, len(self.classes))), self.classes)
        return labelled(class_probabilities(self.network, np.stack(images), self.mirror_average), self.classes)


def decode(raw: bytes, image_size: int, row: int) -> np.ndarray:
    import tensorflow as tf

    from pipeline.data import loaders

    try:
        return loaders.photo_decoder(image_size)(raw).numpy()
    except (tf.errors.OpError, ValueError):  # not an image, cut short, empty
        # MLflow's server answers this one request with HTTP 400 and the message, and carries on.
        raise mlflow.exceptions.MlflowException.invalid_parameter_value(
            f"row {row} of column {IMAGE_COLUMN!r} is not a readable JPEG, PNG, BMP or GIF image "
            f"({len(raw)} bytes)") from None


def labelled(probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "label": [classes[i] for i in probabilities.argmax(axis=1)],
        "probabilities": [dict(zip(classes, map(float, row))) for row in probabilities],
    })


def example_photo(size: int) -> bytes:
    """A plain grey JPEG, the input example stored with the model."""
    import tensorflow as tf

    return tf.io.encode_jpeg(tf.fill((size, size, 3), tf.constant(127, tf.uint8))).numpy()


def classifier_arguments(network, network_file: Path, classes: list[str], mirror_average: bool = False) -> dict:
    """How MLflow stores the photo classifier: as code (mlflow_model_code.py) with the `pipeline`
    package beside it, so any machine with the requirements loads it, and nothing is unpickled."""
    import keras
    import tensorflow as tf

    example = pd.DataFrame({IMAGE_COLUMN: [example_photo(network.input_shape[1])]})
    signature = infer_signature(example, PhotoClassifier(network, classes, mirror_average).predict(None, example))
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"mlflow=={mlflow.__version__}"]
    return {"python_model": Path(__file__).with_name("mlflow_model_code.py"),
            "artifacts": {NETWORK_ARTIFACT: str(network_file)}, "model_config": {"classes": classes, "mirror_average": mirror_average},
            "code_paths": [str(Path(__file__).parent)], "signature": signature, "input_example": example,
            "pip_requirements": requirements}


def log_classifier(network, network_file: Path, classes: list[str], registered_name: str,
                   mirror_average: bool = False):
    """Log the photo classifier to the active run and register it as a new version of `registered_name`."""
    return mlflow.pyfunc.log_model(name=LOGGED_NAME, registered_model_name=registered_name,
                                   **classifier_arguments(network, network_file, classes, mirror_average))


def save_classifier(network, network_file: Path, classes: list[str], path: Path, mirror_average: bool = False) -> None:
    """The same classifier saved to a folder, outside any run (benchmarks)."""
    mlflow.pyfunc.save_model(path, **classifier_arguments(network, network_file, classes, mirror_average))


def unwrap(model) -> PhotoClassifier | None:
    """The classifier inside a loaded pyfunc model, or None for any other kind of model."""
    try:
        inner = model.unwrap_python_model()
    except mlflow.exceptions.MlflowException:
        return None
    return inner if isinstance(inner, PhotoClassifier) else None
