"""The network's answer for images: class probabilities, computed one way for evaluation,
`predict` and the served model, so the model that is scored is the model that is used.

The network runs through one compiled function per network (traced once, for any batch
size), not `Model.predict`, whose per-call set-up costs tens of milliseconds: a served photo
is answered in milliseconds.
"""
from __future__ import annotations

import weakref

import numpy as np

BATCH_SIZE = 64
_COMPILED = weakref.WeakKeyDictionary()  # network -> its compiled forward pass


def compiled_forward(network):
    """The network in inference mode as a tf.function over batches of any size."""
    import tensorflow as tf

    if network not in _COMPILED:
        spec = tf.TensorSpec((None, *network.input_shape[1:]), tf.float32)
        _COMPILED[network] = tf.function(lambda images: network(images, training=False), input_signature=[spec])
    return _COMPILED[network]


def network_outputs(network, images: np.ndarray) -> np.ndarray:
    forward = compiled_forward(network)
    chunks = [forward(images[start:start + BATCH_SIZE]).numpy() for start in range(0, len(images), BATCH_SIZE)]
    return np.concatenate(chunks) if chunks else np.zeros((0, network.output_shape[-1]), np.float32)


def class_probabilities(network, images: np.ndarray, mirror_average: bool = False) -> np.ndarray:
    """(N, n_classes) probabilities; a sigmoid output becomes [p(class 0), p(class 1)].

    With `mirror_average`, each image's answer is the mean of the network's answers for it and
    for its mirror image (left-right), as the model's `mirror_average` param asks."""
    images = np.asarray(images, dtype=np.float32)
    outputs = network_outputs(network, images)
    if mirror_average:
        outputs = (outputs + network_outputs(network, images[:, :, ::-1])) / 2
    if outputs.shape[1] == 1:
        return np.hstack([1 - outputs, outputs])
    return outputs
