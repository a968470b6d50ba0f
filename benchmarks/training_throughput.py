"""Training throughput of the project's input pipelines, measured on real images.

Usage, from the repository root:

    python benchmarks/training_throughput.py [--batches N] [--out benchmarks/results/throughput.json]

It builds, in a temporary folder, a small split of the real images in ../shared/data (in the
exact layout the split stage writes), a VGG16 STAND-IN weights file (randomly initialised, the
real ImageNet file is not available offline) and a params.yaml pointing at both. Then:

1. For each model of the registry, training images/s fed the way train.py feeds it
   ("pipeline") against a plain `model.fit` on the same images as numpy arrays ("arrays"),
   with the batch size of params.yaml, over --batches batches per epoch (--vgg-batches for the
   VGG16 models, whose full network costs ~15x the naive CNN at 150x150). The warm-up epoch
   (tracing, cache fill) is left out and the two sides alternate epoch by epoch, so both see
   the same load on a shared machine; the rate comes from each side's fastest epoch.
   - from-scratch models: `loaders.make_dataset` (decode, resize, cache, shuffle, batch, prefetch);
   - cats_dogs_vgg16_frozen: the head trained on features computed once by `train.frozen_features`,
     against the whole model (base frozen) on images; read off the runs of part 2, after their
     first epoch;
   - cats_dogs_vgg16_finetune: the fine-tune phase, i.e. block5 and the head trained on cached
     block4 features, against the whole model (block5 unfrozen) on images (its first phase, the
     head alone, is the frozen model's row);
   - cats_dogs_vgg16_finetune_aug: the fine-tune phase with augmentation, which must run the whole
     network every epoch: train.py's tf.data pipeline over the arrays, against the arrays.
   The one-time feature extraction of the VGG16 paths is reported as "setup", outside the rate.
   CPU seconds per epoch are recorded too: on a CPU shared with other programs they move far
   less than wall time, so their ratio tells whether one path costs more than the other.
2. For cats_dogs_vgg16_frozen, the wall time of 10 epochs of train.py's way (features computed
   once, then the head) against the whole model fit on images with its base frozen, which runs
   the base again every epoch.

The numbers are throughput only: with the stand-in weights the accuracies mean nothing.
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
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline import layout, train  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.data import loaders  # noqa: E402
from pipeline.models import REGISTRY, build_model, compile_model  # noqa: E402
from pipeline.models.vgg16 import unfreeze_top  # noqa: E402
from tests.fixtures import make_vgg16_standin, set_params  # noqa: E402

tf.get_logger().setLevel("ERROR")  # retracing notes: each model here traces its own functions
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")  # fit's default, as in train.py

SHARED_DATA = ROOT.parent / "shared" / "data"
PET_IMAGES = SHARED_DATA / "cats_dogs" / "PetImages"
CIFAR10_JPEGS = SHARED_DATA / "cifar10" / "jpg" / "train"
PET_FOLDERS = {"cats": "Cat", "dogs": "Dog"}  # split class folder -> PetImages folder
HELD_OUT_PER_CLASS = 4  # val and test images per class: written for the layout, not timed
SEED = 42


# ---------------------------------------------------------------- data


def class_counts(total: int, n_classes: int) -> list[int]:
    """`total` images spread over the classes as evenly as possible."""
    return [total // n_classes + (index < total % n_classes) for index in range(n_classes)]


def sample_files(folder: Path, count: int, seed: int) -> list[Path]:
    files = sorted(folder.glob("*.jpg"))
    return [files[i] for i in np.random.default_rng(seed).permutation(len(files))[:count]]


def write_cats_dogs_split(split_root: Path, train_images: int) -> None:
    """split_root/{train,val,test}/{cats,dogs}/<original name>.jpg, as split@cats_dogs copies them."""
    for index, (name, train_count) in enumerate(zip(PET_FOLDERS, class_counts(train_images, 2))):
        sizes = {"train": train_count, "val": HELD_OUT_PER_CLASS, "test": HELD_OUT_PER_CLASS}
        files = iter(sample_files(PET_IMAGES / PET_FOLDERS[name], sum(sizes.values()), SEED + index))
        for split, count in sizes.items():
            folder = split_root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                path = next(files)
                shutil.copyfile(path, folder / path.name)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def write_cifar10_split(split_root: Path, train_images: int) -> None:
    """split_root/{train,val,test}.npz (uint8 HWC images, int64 labels, classes mixed) and classes.json."""
    classes = loaders.CIFAR10_CLASSES
    rng = np.random.default_rng(SEED)
    parts = {"train": [], "val": [], "test": []}
    for label, (name, train_count) in enumerate(zip(classes, class_counts(train_images, len(classes)))):
        sizes = {"train": train_count, "val": HELD_OUT_PER_CLASS, "test": HELD_OUT_PER_CLASS}
        files = iter(sample_files(CIFAR10_JPEGS / name, sum(sizes.values()), SEED + label))
        for split, count in sizes.items():
            parts[split] += [(read_rgb(next(files)), label) for _ in range(count)]
    split_root.mkdir(parents=True, exist_ok=True)
    for split, items in parts.items():
        order = rng.permutation(len(items))
        images = np.stack([items[i][0] for i in order])
        labels = np.asarray([items[i][1] for i in order], dtype=np.int64)
        np.savez_compressed(split_root / f"{split}.npz", images=images, labels=labels)
    (split_root / "classes.json").write_text(json.dumps(classes) + "\n")


def prepare_project(folder: Path, batches: int) -> Config:
    """A params.yaml whose data.root holds both splits and the VGG16 stand-in weights."""
    params_file = folder / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", params_file)
    set_params(params_file, **{"data.root": str(folder / "data"), "data.mirror": None})
    config = load_config(params_file)
    write_cats_dogs_split(layout.split_dir(config, "cats_dogs"),
                          batches * config.model("cats_dogs_naive").batch_size)
    write_cifar10_split(layout.split_dir(config, "cifar10"), batches * config.model("cifar10_naive").batch_size)
    make_vgg16_standin(layout.raw_dir(config, "vgg16") / config.sources.vgg16.filename)
    return config


def balanced_subset(images: np.ndarray, labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first images of each class, `count` in all, in the loader's order."""
    chosen = np.concatenate([np.flatnonzero(labels == label)[:n]
                             for label, n in enumerate(class_counts(count, int(labels.max()) + 1))])
    return images[chosen], labels[chosen]


def cats_dogs_images(config: Config, name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The training images and targets as train.py loads them for the VGG16 models."""
    params = config.model(name)
    images, labels = loaders.load_arrays(config, "cats_dogs", "train", params.image_size)
    images, labels = balanced_subset(images, labels, count)
    return images, loaders.encode_labels(labels, 2)


# ---------------------------------------------------------------- timing


class EpochTimer(keras.callbacks.Callback):
    """Wall and CPU (all threads of this process) seconds of each epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.cpu_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)
        self.cpu_seconds.append(time.process_time() - self.cpu_started)


@dataclass
class Side:
    """One side of a comparison: a compiled model, what its model.fit gets, the images per epoch,
    and the wall and CPU seconds of its measured epochs."""
    model: keras.Model | None
    fit_args: dict
    images: int
    wall: list = field(default_factory=list)
    cpu: list = field(default_factory=list)


def fit_epochs(side: Side, epochs: int) -> EpochTimer:
    timer = EpochTimer()
    side.model.fit(**side.fit_args, epochs=epochs, verbose=0, callbacks=[timer])
    return timer


def array_args(images: np.ndarray, targets: np.ndarray, batch_size: int) -> dict:
    return {"x": images, "y": targets, "batch_size": batch_size, "shuffle": True}


def timed(function, *args):
    """(result, seconds) of one call."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


# ---------------------------------------------------------------- the two sides of each model


def fresh_model(config: Config, name: str) -> keras.Model:
    """The model as fit_model builds it: same seed, so both sides start from the same weights."""
    train.make_deterministic(config.seed)
    weights = train.vgg16_weights(config) if REGISTRY[name].uses_vgg16 else None
    return build_model(name, config.model(name), weights)


def scratch_sides(config: Config, name: str, vgg_images: int) -> tuple[Side, Side, float]:
    """make_dataset, as train_from_scratch feeds the model, against the same split as arrays."""
    spec, params = REGISTRY[name], config.model(name)
    pipeline_model, arrays_model = fresh_model(config, name), fresh_model(config, name)
    for model in (pipeline_model, arrays_model):
        compile_model(model, spec.n_classes, params.learning_rate)
    dataset = loaders.make_dataset(config, spec.task, "train", params.image_size, params.batch_size, shuffle=True)
    images, labels = loaders.load_arrays(config, spec.task, "train", params.image_size)
    targets = loaders.encode_labels(labels, spec.n_classes)
    return (Side(pipeline_model, {"x": dataset}, len(images)),
            Side(arrays_model, array_args(images, targets, params.batch_size), len(images)), 0.0)


def finetune_sides(config: Config, name: str, vgg_images: int) -> tuple[Side, Side, float]:
    """Fine-tune phase: block5 + head on cached block4 features, against the whole model on images."""
    params = config.model(name)
    tune = params.fine_tune
    images, targets = cats_dogs_images(config, name, vgg_images)
    model, whole = fresh_model(config, name), fresh_model(config, name)
    for each in (model, whole):
        unfreeze_top(each, tune.unfreeze_from)
    upper = train.submodel(model, tune.unfreeze_from)
    compile_model(upper, 2, tune.learning_rate)
    compile_model(whole, 2, tune.learning_rate)
    below = train.layer_before(model, tune.unfreeze_from)
    features, setup = timed(train.frozen_features, model, images, below)
    return (Side(upper, array_args(features, targets, params.batch_size), len(images)),
            Side(whole, array_args(images, targets, params.batch_size), len(images)), setup)


def augmented_finetune_sides(config: Config, name: str, vgg_images: int) -> tuple[Side, Side, float]:
    """Fine-tune phase with augmentation: train.py's tf.data over the arrays, against the arrays."""
    params = config.model(name)
    tune = params.fine_tune
    images, targets = cats_dogs_images(config, name, vgg_images)
    pipeline_model, arrays_model = fresh_model(config, name), fresh_model(config, name)
    for model in (pipeline_model, arrays_model):
        unfreeze_top(model, tune.unfreeze_from)
        compile_model(model, 2, tune.learning_rate)
    dataset = train.augmented_batches(images, targets, params.batch_size, config.seed)
    return (Side(pipeline_model, {"x": dataset}, len(images)),
            Side(arrays_model, array_args(images, targets, params.batch_size), len(images)), 0.0)


SIDES = {
    "cats_dogs_naive": (scratch_sides, "make_dataset (JPEG decode+resize, cache, shuffle, batch, prefetch)"),
    "cats_dogs_vgg16_finetune": (finetune_sides, "fine-tune: block5+head on cached block4 features"),
    "cats_dogs_vgg16_finetune_aug": (augmented_finetune_sides, "fine-tune with augmentation: tf.data over arrays"),
    "cifar10_naive": (scratch_sides, "make_dataset (npz arrays, cache, shuffle, batch, prefetch)"),
    "cifar10_inception": (scratch_sides, "make_dataset (npz arrays, cache, shuffle, batch, prefetch)"),
    "cifar10_residual": (scratch_sides, "make_dataset (npz arrays, cache, shuffle, batch, prefetch)"),
}


# ---------------------------------------------------------------- part 1: pipeline against arrays


def alternate_epochs(pipeline: Side, arrays: Side, epochs: int) -> None:
    """One warm-up epoch each (tracing, cache fill: dropped), then one epoch at a time in ABBA order."""
    for side in (pipeline, arrays):
        fit_epochs(side, 1)
    for round_ in range(epochs):
        order = (pipeline, arrays) if round_ % 2 == 0 else (arrays, pipeline)
        for side in order:
            timer = fit_epochs(side, 1)
            side.wall += timer.seconds
            side.cpu += timer.cpu_seconds


def images_per_second(side: Side) -> float:
    """From the fastest measured epoch: on a shared CPU, slower ones carry other programs' load."""
    return side.images / min(side.wall)


def throughput_row(config: Config, name: str, description: str, pipeline: Side, arrays: Side, setup: float) -> dict:
    return {
        "model": name,
        "pipeline": description,
        "batch_size": config.model(name).batch_size,
        "images_per_epoch": pipeline.images,
        "setup_s": round(setup, 3),
        "pipeline_epoch_s": [round(s, 4) for s in pipeline.wall],
        "arrays_epoch_s": [round(s, 4) for s in arrays.wall],
        "pipeline_epoch_cpu_s": [round(s, 4) for s in pipeline.cpu],
        "arrays_epoch_cpu_s": [round(s, 4) for s in arrays.cpu],
        "pipeline_images_per_s": round(images_per_second(pipeline), 2),
        "arrays_images_per_s": round(images_per_second(arrays), 2),
        "ratio": round(images_per_second(pipeline) / images_per_second(arrays), 3),
        "cpu_ratio": round(min(arrays.cpu) / min(pipeline.cpu), 3),
    }


def compare_model(config: Config, name: str, epochs: int, vgg_images: int) -> dict:
    make_sides, description = SIDES[name]
    pipeline, arrays, setup = make_sides(config, name, vgg_images)
    alternate_epochs(pipeline, arrays, epochs)
    keras.backend.clear_session()
    return throughput_row(config, name, description, pipeline, arrays, setup)


# ---------------------------------------------------------------- part 2: cached features against recomputing


def cached_features_run(config: Config, name: str, images: np.ndarray, targets: np.ndarray, epochs: int) -> dict:
    """train.py's way: the frozen base runs once per image, then the head trains `epochs` epochs."""
    params = config.model(name)
    model = fresh_model(config, name)
    head = model.get_layer("head")
    compile_model(head, 2, params.learning_rate)
    last = model.get_layer("vgg16").layers[-1].name
    started, cpu_started = time.perf_counter(), time.process_time()
    features = train.frozen_features(model, images, last)
    extracted = time.perf_counter() - started
    timer = fit_epochs(Side(head, array_args(features, targets, params.batch_size), len(images)), epochs)
    return {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu_started,
            "features_s": extracted, "epoch_s": timer.seconds, "epoch_cpu_s": timer.cpu_seconds}


def recomputed_run(config: Config, name: str, images: np.ndarray, targets: np.ndarray, epochs: int) -> dict:
    """The whole model on images, base frozen: the base runs again on every image every epoch."""
    params = config.model(name)
    model = fresh_model(config, name)
    compile_model(model, 2, params.learning_rate)
    started, cpu_started = time.perf_counter(), time.process_time()
    timer = fit_epochs(Side(model, array_args(images, targets, params.batch_size), len(images)), epochs)
    return {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu_started,
            "epoch_s": timer.seconds, "epoch_cpu_s": timer.cpu_seconds}


def rounded(run: dict) -> dict:
    return {key: [round(s, 4) for s in value] if isinstance(value, list) else round(value, 3)
            for key, value in run.items()}


def compare_caching(config: Config, epochs: int, vgg_images: int) -> dict:
    name = "cats_dogs_vgg16_frozen"
    images, targets = cats_dogs_images(config, name, vgg_images)
    cached = cached_features_run(config, name, images, targets, epochs)
    keras.backend.clear_session()
    recomputed = recomputed_run(config, name, images, targets, epochs)
    keras.backend.clear_session()
    return {
        "model": name,
        "epochs": epochs,
        "images": len(images),
        "cached": rounded(cached),
        "recomputed": rounded(recomputed),
        "speedup": round(recomputed["wall_s"] / cached["wall_s"], 2),
        "cpu_speedup": round(recomputed["cpu_s"] / cached["cpu_s"], 2),
    }


def frozen_row(config: Config, caching: dict) -> dict:
    """Part 1's row for cats_dogs_vgg16_frozen, read off part 2's runs: its two sides are exactly
    the head on cached features and the whole model on images; their first epoch is the warm-up."""
    cached, recomputed = caching["cached"], caching["recomputed"]
    pipeline = Side(None, {}, caching["images"], cached["epoch_s"][1:], cached["epoch_cpu_s"][1:])
    arrays = Side(None, {}, caching["images"], recomputed["epoch_s"][1:], recomputed["epoch_cpu_s"][1:])
    return throughput_row(config, caching["model"], "head on VGG16 features cached once (from part 2)",
                          pipeline, arrays, cached["features_s"])


# ---------------------------------------------------------------- report


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown"


def machine() -> dict:
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def print_throughput(rows: list[dict]) -> None:
    print("\n1. Training images/s: the input path train.py uses vs plain model.fit on numpy arrays")
    print("   best measured epoch of each side (warm-up epoch excluded); ratio = pipeline/arrays;")
    print("   CPU ratio = arrays/pipeline CPU seconds per epoch; setup = one-time VGG16 feature extraction")
    header = (f"{'model':30} {'batch':>5} {'imgs':>5} {'pipeline/s':>10} {'arrays/s':>9} {'ratio':>6} "
              f"{'CPU ratio':>9} {'setup s':>8}  pipeline")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['model']:30} {row['batch_size']:>5} {row['images_per_epoch']:>5} "
              f"{row['pipeline_images_per_s']:>10.1f} {row['arrays_images_per_s']:>9.1f} {row['ratio']:>6.2f} "
              f"{row['cpu_ratio']:>9.2f} {row['setup_s']:>8.1f}  {row['pipeline']}")


def print_caching(result: dict) -> None:
    cached, recomputed = result["cached"], result["recomputed"]
    print(f"\n2. {result['model']}: {result['epochs']} epochs on {result['images']} images")
    print(f"   cached features (train.py): {cached['wall_s']:8.1f} s wall {cached['cpu_s']:8.1f} s CPU  "
          f"(feature extraction {cached['features_s']:.1f} s, then the head)")
    print(f"   base recomputed each epoch: {recomputed['wall_s']:8.1f} s wall {recomputed['cpu_s']:8.1f} s CPU")
    print(f"   speed-up: {result['speedup']:.1f}x wall, {result['cpu_speedup']:.1f}x CPU time")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10,
                        help="training batches per epoch of the from-scratch models (default 10)")
    parser.add_argument("--vgg-batches", type=int, default=4,
                        help="training batches per epoch of the VGG16 models, whose full network is "
                             "~15x the cost of the naive CNN at 150x150 (default 4: with fewer, the one-time "
                             "feature extraction dominates part 2)")
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per side after the warm-up (default 2)")
    parser.add_argument("--caching-epochs", type=int, default=10, help="epochs of part 2 (default 10)")
    parser.add_argument("--models", nargs="+", default=list(SIDES), choices=list(SIDES), metavar="MODEL",
                        help="models of part 1 (default: all; cats_dogs_vgg16_frozen's row comes from part 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "throughput.json")
    args = parser.parse_args()
    if args.vgg_batches > args.batches:
        parser.error("--vgg-batches takes its images from the cats_dogs split of --batches batches: keep it smaller")
    return args


def main() -> None:
    args = parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="throughput_") as folder:
        config = prepare_project(Path(folder), args.batches)
        vgg_images = args.vgg_batches * config.model("cats_dogs_vgg16_frozen").batch_size
        weights = train.weights_origin(train.vgg16_weights(config))
        host = machine()
        print(f"machine: {host['cpu']}, {host['cpu_count']} cores, {host['gpus']} GPU; "
              f"load average {load_before[0]:.1f} before the run")
        print(f"data: real images from {SHARED_DATA}; VGG16 weights: {weights}")
        rows = []
        for name in args.models:
            rows.append(compare_model(config, name, args.epochs, vgg_images))
            print(f"  {name}: ratio {rows[-1]['ratio']:.2f}", flush=True)
        caching = compare_caching(config, args.caching_epochs, vgg_images)
        rows.append(frozen_row(config, caching))
    rows.sort(key=lambda row: list(REGISTRY).index(row["model"]))
    print_throughput(rows)
    print_caching(caching)
    report = {
        "machine": {**host, "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "settings": {"batches": args.batches, "vgg_batches": args.vgg_batches, "measured_epochs": args.epochs,
                     "vgg16_weights": weights, "data": str(SHARED_DATA)},
        "throughput": rows,
        "caching": caching,
        "targets": {"ratio_at_least_1": all(row["ratio"] >= 1.0 for row in rows),
                    "cpu_ratio_at_least_1": all(row["cpu_ratio"] >= 1.0 for row in rows),
                    "cached_at_least_8x": caching["speedup"] >= 8,
                    "cached_at_least_8x_cpu": caching["cpu_speedup"] >= 8},
        "total_s": round(time.perf_counter() - started, 1),
        "total_cpu_s": round(time.process_time(), 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out} ({report['total_s']:.0f} s wall, {report['total_cpu_s']:.0f} s CPU in all)")


if __name__ == "__main__":
    main()
