"""Per-epoch seconds of a training with and without tf.data's autotuning, in one process.

Usage, from the repository root (a split made by `dvc repro split@cifar10` under DATA_ROOT):

    python benchmarks/epoch_stall.py [--data-root data] [--model cifar10_naive] [--epochs 4]

Keras makes a new iterator over the training data each epoch. With tf.data's autotuning on (its
default), an ending iterator waits for the autotuning thread's current sleep, which doubles
from 10 ms up to a minute; the wait shows as a long first step of the next epoch. The two
variants train the same network on the same batches (the model's params, the training split,
the validation split each epoch), one after the other, each from its own fresh weights;
printed per epoch: its seconds and its first step's milliseconds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.data import loaders  # noqa: E402
from pipeline.hardware import machine  # noqa: E402
from pipeline.models import build_model, compile_model  # noqa: E402
from pipeline.registry import REGISTRY  # noqa: E402
from pipeline.train import make_deterministic  # noqa: E402
from tests.fixtures import set_params  # noqa: E402


class EpochClock(keras.callbacks.Callback):
    """Each epoch's wall seconds (validation included) and its first training step's."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.first_step = time.perf_counter(), None

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step is None:
            self.first_step = time.perf_counter() - self.started

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((time.perf_counter() - self.started, self.first_step))


def with_autotune(dataset: tf.data.Dataset, enabled: bool) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.enabled = enabled
    return dataset.with_options(options)


def epoch_times(config, name: str, epochs: int, autotune: bool) -> list[tuple[float, float]]:
    params, spec = config.model(name), REGISTRY[name]
    make_deterministic(config.seed)
    model = build_model(name, params)
    train = loaders.make_dataset(config, spec.task, "train", params.image_size, params.batch_size, shuffle=True,
                                 augment=params.augment)
    val = loaders.make_dataset(config, spec.task, "val", params.image_size, params.batch_size)
    compile_model(model, spec.n_classes, params.learning_rate, label_smoothing=params.label_smoothing)
    clock = EpochClock()
    model.fit(with_autotune(train, autotune), validation_data=with_autotune(val, autotune), epochs=epochs,
              callbacks=[clock], verbose=0, shuffle=False)
    return clock.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--model", default="cifar10_naive", choices=[n for n, s in REGISTRY.items() if not s.uses_vgg16])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    params_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"epoch_stall_{os.getpid()}.yaml"
    params_file.write_text((Path(__file__).resolve().parent.parent / "params.yaml").read_text())
    set_params(params_file, **{"data.root": str(args.data_root.resolve())})
    config = load_config(params_file)
    params_file.unlink()
    print(f"{args.model}, {args.epochs} epochs per variant; {machine()}")
    for autotune in (True, False):
        times = epoch_times(config, args.model, args.epochs, autotune)
        epochs = ", ".join(f"{seconds:.1f} s (first step {1000 * first:.0f} ms)" for seconds, first in times)
        print(f"autotune {'on ' if autotune else 'off'}: {epochs}; mean of epochs 2+ "
              f"{np.mean([seconds for seconds, _ in times[1:]]):.1f} s", flush=True)


if __name__ == "__main__":
    main()
