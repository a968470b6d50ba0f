"""Building and compiling the models that pipeline/registry.py lists by name."""
from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.hardware import native_bfloat16
from pipeline.registry import get_spec

if TYPE_CHECKING:
    import keras

    from pipeline.config import Model

__all__ = ["build_model", "compile_model", "compute_policy", "float32_copy", "loss_function"]


def compute_policy(name: str, params: Model) -> str:
    """The Keras dtype policy `params.precision` means on this machine: "mixed_bfloat16"
    (bfloat16 arithmetic on float32 weights) or "float32". "auto" takes bfloat16 where the CPU
    has it natively."""
    if params.precision == "float32":
        return "float32"
    if native_bfloat16():
        return "mixed_bfloat16"
    if params.precision == "bfloat16":
        raise ConfigError(f"train.{name}.precision: bfloat16 needs a CPU with AVX512_BF16 or AMX, and this one "
                          f"has neither; use auto or float32")
    return "float32"


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Layers made inside compute under `policy`; Keras's global policy is restored afterwards."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(name: str, params: Model, vgg16_weights: Path | None = None, policy: str = "float32") -> keras.Model:
    """An uncompiled model named `name`, computing under the dtype `policy`; seed with
    keras.utils.set_random_seed beforehand."""
    spec = get_spec(name)
    module_name, function = spec.builder.rsplit(".", 1)
    builder = getattr(importlib.import_module(f"pipeline.models.{module_name}"), function)
    with dtype_policy(policy):
        if spec.uses_vgg16:
            return builder(name, params, vgg16_weights)
        return builder(name, params)


def float32_copy(model: keras.Model, name: str, params: Model, vgg16_weights: Path | None = None) -> keras.Model:
    """The same network with the same weights, computing in float32: a model trained in
    bfloat16 is saved so, and runs on any CPU (one without bfloat16 kernels cannot run it)."""
    copy = build_model(name, params, vgg16_weights)
    for target, source in zip(copy.weights, model.weights, strict=True):
        if target.path != source.path:
            raise ValueError(f"{name}: weight {source.path} has no twin in float32 ({target.path})")
        target.assign(source)
    return copy


def compile_model(model: keras.Model, n_classes: int, learning_rate: float, decay_steps: int | None = None,
                  label_smoothing: float = 0.0, ema_momentum: float | None = None) -> None:
    """Adam with the cross-entropy that matches the output; the metric is 'accuracy' either way.

    With `decay_steps`, the learning rate follows a cosine from its value down to 0 over that
    many steps: the last epochs take small steps, so the model saved at the end is a settled one.
    `label_smoothing` trains towards 1 - s/2 rather than 1 (two classes), or spreads s over the classes.
    With `ema_momentum`, Adam keeps a moving average of the weights, which the model holds once
    training ends (and, with keras.callbacks.SwapEMAWeights, while it is validated).
    """
    import keras

    if n_classes == 2:
        accuracy = keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps) if decay_steps else learning_rate
    average = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum else {}
    model.compile(optimizer=keras.optimizers.Adam(rate, **average), loss=loss_function(n_classes, label_smoothing),
                  metrics=[accuracy])


def loss_function(n_classes: int, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The cross-entropy training minimises, which evaluation reports too: binary on one sigmoid
    unit for two classes, categorical on one-hot targets otherwise."""
    import keras

    if n_classes == 2:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
