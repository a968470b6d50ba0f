"""The network's answer for images: class probabilities, computed one way for evaluation,
`predict` and the served model, so the model that is scored is the model that is used."""
from __future__ import annotations

import numpy as np


def class_probabilities(network, images: np.ndarray) -> np.ndarray:
    """(N, n_classes) probabilities; a sigmoid output becomes [p(class 0), p(class 1)]."""
    outputs = network.predict(images, batch_size=64, verbose=0)
    if outputs.shape[1] == 1:
        return np.hstack([1 - outputs, outputs])
    return outputs
