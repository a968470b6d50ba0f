"""Training throughput of the input paths train.py uses, measured on real images.

Usage, from the repository root (the real images must be in ../shared/data):

    python benchmarks/training_throughput.py [--batches N] [--vgg-batches N] [--epochs N]
        [--caching-epochs N] [--models MODEL ...] [--out benchmarks/results/throughput.json]

1. Per model, training images/s fed the way train.py feeds it ("pipeline") against a plain
   model.fit on the same images as numpy arrays ("arrays"). One warm-up epoch per side is
   dropped, then the sides alternate (A B B A ...) so both see the same load; the rate is each
   side's fastest epoch. CPU seconds per epoch are kept too: they move far less than wall time
   on a shared CPU. Target: ratio >= 1.
2. cats_dogs_vgg16_frozen: --caching-epochs epochs with the base run once per image (features
   cached, then the head) against the whole model, base frozen, on images. Target: >= 8x.

Data: a small split of the real images in a temporary folder, with a randomly initialised
VGG16 stand-in for the weights (throughput does not depend on their values).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline import paths, train  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.data import loaders  # noqa: E402
from pipeline.models import build_model, compile_model, vgg16  # noqa: E402
from pipeline.registry import REGISTRY
from tests.fixtures import make_vgg16_standin, set_params  # noqa: E402
from real_split import CLASSES, write_split  # noqa: E402

tf.get_logger().setLevel("ERROR")  # retracing notes: each model here traces its own functions
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")  # a tf.data side shuffles itself

HELD_OUT = 4  # val and test images per class: the split's layout needs them; they are not timed


def prepare_project(folder: Path, batches: int) -> Config:
    """params.yaml whose data.root holds a split of each task, `batches` batches of training images."""
    params_file = folder / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", params_file)
    set_params(params_file, **{"data.root": str(folder / "data"), "data.mirror": None})
    config = load_config(params_file)
    rng = np.random.default_rng(config.seed)
    for task, classes in CLASSES.items():
        per_class = -(-batches * config.model(f"{task}_naive").batch_size // len(classes))
        write_split(paths.split_dir(config, task), task, {"train": per_class, "val": HELD_OUT, "test": HELD_OUT}, rng)
    make_vgg16_standin(paths.raw_dir(config, "vgg16") / config.sources.vgg16.filename)
    return config


class EpochTimer(keras.callbacks.Callback):
    """Wall and CPU (all threads of this process) seconds of each epoch."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self.started[0])
        self.cpu.append(time.process_time() - self.started[1])


def fit(model: keras.Model, data: dict, epochs: int) -> EpochTimer:
    timer = EpochTimer()
    model.fit(**data, epochs=epochs, verbose=0, callbacks=[timer])
    return timer


def fresh_model(config: Config, name: str) -> keras.Model:
    """The model as fit_model builds it: same seed, so both sides start from the same weights."""
    train.make_deterministic(config.seed)
    weights = train.vgg16_weights(config) if REGISTRY[name].uses_vgg16 else None
    return build_model(name, config.model(name), weights)


def vgg_images(config: Config, name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` training images and their targets, as train_vgg16 loads them."""
    images, labels = loaders.load_arrays(config, "cats_dogs", "train", config.model(name).image_size)
    chosen = np.concatenate([np.flatnonzero(labels == label)[:n] for label, n in enumerate((count // 2, count - count // 2))])
    return images[chosen], loaders.encode_labels(labels[chosen], 2)


def sides(config: Config, name: str, vgg_count: int) -> tuple[tuple, tuple, float]:
    """(model, fit arguments) of the pipeline side and of the arrays side, and the one-time setup seconds."""
    spec, params = REGISTRY[name], config.model(name)
    pipeline, arrays = fresh_model(config, name), fresh_model(config, name)
    if not spec.uses_vgg16:  # train_from_scratch: make_dataset (decode, resize, cache, shuffle, prefetch)
        for model in (pipeline, arrays):
            compile_model(model, spec.n_classes, params.learning_rate)
        images, labels = loaders.load_arrays(config, spec.task, "train", params.image_size)
        dataset = loaders.make_dataset(config, spec.task, "train", params.image_size, params.batch_size, shuffle=True)
        as_arrays = {"x": images, "y": loaders.encode_labels(labels, spec.n_classes), "batch_size": params.batch_size}
        return (pipeline, {"x": dataset}), (arrays, as_arrays), 0.0
    # The fine-tune phase: block5 + head on cached block4 features, or with augmentation the
    # whole network on train.py's tf.data batches; against the whole model on arrays.
    images, targets = vgg_images(config, name, vgg_count)
    phase = params.fine_tune
    for model in (pipeline, arrays):
        vgg16.unfreeze_top(model, phase.unfreeze_from)
        compile_model(model, 2, phase.learning_rate)
    as_arrays = {"x": images, "y": targets, "batch_size": params.batch_size}
    if params.augment is not None:
        return (pipeline, {"x": train.augmented_batches(images, targets, params.batch_size, config.seed)}), \
            (arrays, as_arrays), 0.0
    started = time.perf_counter()
    features = vgg16.frozen_features(pipeline, images, vgg16.layer_before(pipeline, phase.unfreeze_from))
    setup = time.perf_counter() - started
    upper = vgg16.submodel(pipeline, phase.unfreeze_from)
    compile_model(upper, 2, phase.learning_rate)
    return (upper, {"x": features, "y": targets, "batch_size": params.batch_size}), (arrays, as_arrays), setup


def row(name: str, images: int, pipeline: dict, arrays: dict, setup: float) -> dict:
    """Rates from each side's fastest epoch: on a shared CPU the slower ones carry other load."""
    rate = {side: images / min(times["wall"]) for side, times in (("pipeline", pipeline), ("arrays", arrays))}
    return {"model": name, "images_per_epoch": images, "setup_s": round(setup, 3),
            "pipeline_epochs": pipeline, "arrays_epochs": arrays,
            "pipeline_images_per_s": round(rate["pipeline"], 2), "arrays_images_per_s": round(rate["arrays"], 2),
            "ratio": round(rate["pipeline"] / rate["arrays"], 3),
            "cpu_ratio": round(min(arrays["cpu"]) / min(pipeline["cpu"]), 3)}


def compare_model(config: Config, name: str, epochs: int, vgg_count: int) -> dict:
    (pipeline, pipeline_data), (arrays, arrays_data), setup = sides(config, name, vgg_count)
    measured = {"pipeline": {"wall": [], "cpu": []}, "arrays": {"wall": [], "cpu": []}}
    runs = {"pipeline": (pipeline, pipeline_data), "arrays": (arrays, arrays_data)}
    for model, data in runs.values():
        fit(model, data, 1)  # warm-up: tracing, cache fill
    for round_ in range(epochs):
        for side in ("pipeline", "arrays") if round_ % 2 == 0 else ("arrays", "pipeline"):
            timer = fit(*runs[side], 1)
            measured[side]["wall"] += timer.wall
            measured[side]["cpu"] += timer.cpu
    images = len(arrays_data["x"])
    keras.backend.clear_session()
    return row(name, images, measured["pipeline"], measured["arrays"], setup)


def compare_caching(config: Config, epochs: int, vgg_count: int) -> tuple[dict, dict]:
    """cats_dogs_vgg16_frozen both ways, training only; also part 1's row for that model."""
    name = "cats_dogs_vgg16_frozen"
    params = config.model(name)
    images, targets = vgg_images(config, name, vgg_count)
    runs = {}
    for way in ("cached", "recomputed"):
        model = fresh_model(config, name)
        started, cpu_started = time.perf_counter(), time.process_time()
        inputs, features_s = images, 0.0
        if way == "cached":  # train.py's way: the frozen base once per image, then the head alone
            inputs = vgg16.frozen_features(model, images, "block5_pool")
            model, features_s = model.get_layer("head"), time.perf_counter() - started
        compile_model(model, 2, params.learning_rate)
        timer = fit(model, {"x": inputs, "y": targets, "batch_size": params.batch_size}, epochs)
        runs[way] = {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu_started,
                     "features_s": features_s, "epochs": {"wall": timer.wall, "cpu": timer.cpu}}
        keras.backend.clear_session()
    caching = {"model": name, "epochs": epochs, "images": len(images), **runs,
               "speedup": round(runs["recomputed"]["wall_s"] / runs["cached"]["wall_s"], 2),
               "cpu_speedup": round(runs["recomputed"]["cpu_s"] / runs["cached"]["cpu_s"], 2)}
    after_warm_up = {way: {key: values[1:] for key, values in runs[way]["epochs"].items()} for way in runs}
    return caching, row(name, len(images), after_warm_up["cached"], after_warm_up["recomputed"],
                        runs["cached"]["features_s"])


def main() -> None:
    # cats_dogs_vgg16_frozen's row comes from part 2, whose two sides are exactly its two paths
    part_one = [name for name in REGISTRY if name != "cats_dogs_vgg16_frozen"]
    study = [name for name in part_one if REGISTRY[name].in_study]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10, help="batches per epoch, from-scratch models (10)")
    parser.add_argument("--vgg-batches", type=int, default=4, help="batches per epoch, VGG16 models (4)")
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per side after the warm-up (2)")
    parser.add_argument("--caching-epochs", type=int, default=10, help="epochs of part 2 (10)")
    parser.add_argument("--models", nargs="+", default=study, choices=part_one, metavar="MODEL",
                        help="models of part 1 (default: the study's; cats_dogs_vgg16_frozen's row comes from part 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "throughput.json")
    args = parser.parse_args()
    if args.vgg_batches > args.batches:
        parser.error("--vgg-batches takes its images from the split of --batches batches: keep it smaller")

    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="throughput_") as folder:
        config = prepare_project(Path(folder), args.batches)
        vgg_count = args.vgg_batches * config.model("cats_dogs_vgg16_frozen").batch_size
        rows = []
        for name in args.models:
            rows.append(compare_model(config, name, args.epochs, vgg_count))
            print(f"{name:30} ratio {rows[-1]['ratio']:5.2f}  CPU ratio {rows[-1]['cpu_ratio']:5.2f}", flush=True)
        caching, frozen = compare_caching(config, args.caching_epochs, vgg_count)
    rows.append(frozen)
    print(f"{frozen['model']:30} ratio {frozen['ratio']:5.2f}  CPU ratio {frozen['cpu_ratio']:5.2f}")
    print(f"cached VGG16 features, {caching['epochs']} epochs of {caching['images']} images: "
          f"{caching['speedup']:.1f}x faster than recomputing the base ({caching['cpu_speedup']:.1f}x in CPU time)")
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "gpus": len(tf.config.list_physical_devices("GPU")), "python": platform.python_version(),
                    "tensorflow": tf.__version__, "keras": keras.__version__,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "settings": vars(args) | {"out": str(args.out)},
        "throughput": rows,
        "caching": caching,
        "targets": {"ratio_at_least_1": all(r["ratio"] >= 1.0 for r in rows),
                    "cpu_ratio_at_least_1": all(r["cpu_ratio"] >= 1.0 for r in rows),
                    "cached_at_least_8x": caching["speedup"] >= 8, "cached_at_least_8x_cpu": caching["cpu_speedup"] >= 8},
        "total_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
