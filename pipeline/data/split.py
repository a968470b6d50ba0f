"""Stage `split`: a seeded sample of each task's images, split per class into train/val/test.

cats_dogs: N cats and N dogs drawn at random from Microsoft's PetImages. Each candidate is
decoded once with Pillow; the files that are no usable JPEG (empty, not an image, another
format, truncated) are left out, counted by reason and replaced by the next candidate, so the
sample stays N + N. The files are copied to split/{train,val,test}/{cats,dogs}/<original name>.

cifar10: the 60000 images of the official pickles pooled, N per class sampled and split per
class, written as split/{train,val,test}.npz (uint8 HWC RGB images, int64 labels) and
split/classes.json.

Both write metrics/split_<task>.json with a sha256 of the split's content, which training tags
its MLflow runs with. The split is built in a sibling folder and renamed into place at the end,
so a failure never leaves a half-written split behind.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import json
import pickle
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct as numpy_reconstruct
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipeline import layout
from pipeline.config import SPLITS, Config
from pipeline.errors import ConfigError, PipelineError
from pipeline.files import replacing_folder, write_text_atomically

PET_CLASSES = {"Cat": "cats", "Dog": "dogs"}  # Microsoft's folder -> the split's class folder
JPEG_MAGIC = b"\xff\xd8\xff"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]
CIFAR_PIXELS = 3 * 32 * 32


def run(config: Config, task: str) -> None:
    splitters = {"cats_dogs": split_cats_dogs, "cifar10": split_cifar10}
    metrics = splitters[task](config)
    write_json(layout.split_metrics(task), metrics)
    totals = ", ".join(f"{split} {count}" for split, count in metrics["totals"].items())
    print(f"split {task}: {totals}; {metrics['left_out']['count']} files left out")


# ---------------------------------------------------------------- shared helpers


def per_class_key(config: Config, task: str) -> str:
    """The params key that set the images per class, for error messages."""
    if config.data.subset_per_class is not None:
        return "data.subset_per_class"
    return f"split.{task}.per_class"


def split_sizes(config: Config, task: str) -> dict[str, int]:
    """Images per class in each split: train and val rounded, test the rest, none empty."""
    n = config.per_class(task)
    if n < len(SPLITS):
        key = per_class_key(config, task)
        raise ConfigError(f"{key}: {n} images per class cannot fill train, val and test; use 3 or more")
    fractions = getattr(config.split, task).fractions
    val = min(max(1, round(n * fractions.val)), n - 2)
    train = min(max(1, round(n * fractions.train)), n - val - 1)
    return {"train": train, "val": val, "test": n - train - val}


def split_labels(sizes: dict[str, int]) -> list[str]:
    """The split of each position of a shuffled sample: the first ones train, then val, then test."""
    return [split for split in SPLITS for _ in range(sizes[split])]


def require_folder(path: Path, source: str) -> None:
    if not path.is_dir():
        raise PipelineError(f"{path}: not found; run `dvc repro download@{source}` first")



def folder_digest(folder: Path) -> str:
    """sha256 over the sorted relative paths and the bytes of every file: the split's identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        file_digest = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_digest}\n".encode())
    return digest.hexdigest()


def split_metrics(config: Config, task: str, counts: dict, left_out: dict[str, str], digest: str) -> dict:
    return {
        "task": task,
        "seed": config.seed,
        "per_class": config.per_class(task),
        "counts": counts,
        "totals": {split: sum(counts[split].values()) for split in SPLITS},
        "left_out": {
            "count": len(left_out),
            "by_reason": dict(sorted(Counter(left_out.values()).items())),
            "files": sorted(left_out),
        },
        "sha256": digest,
    }


def write_json(path: Path, content: object) -> None:
    write_text_atomically(path, json.dumps(content, indent=2) + "\n")


# ---------------------------------------------------------------- cats_dogs


def split_cats_dogs(config: Config) -> dict:
    task = "cats_dogs"
    pet = layout.raw_dir(config, task) / "PetImages"
    for folder in PET_CLASSES:
        require_folder(pet / folder, task)
    sizes = split_sizes(config, task)
    counts = {split: {name: sizes[split] for name in PET_CLASSES.values()} for split in SPLITS}
    left_out: dict[str, str] = {}  # "Cat/666.jpg" -> why it was left out
    with replacing_folder(layout.split_dir(config, task)) as staging:
        for index, (folder, name) in enumerate(PET_CLASSES.items()):
            # One generator per class: the cats drawn do not depend on how many dogs there are.
            rng = np.random.default_rng([config.seed, index])
            candidates = shuffled(sorted(p for p in (pet / folder).iterdir() if p.is_file()), rng)
            copied = copy_sample(candidates, split_labels(sizes), staging, name, left_out)
            if copied < config.per_class(task):
                raise ConfigError(
                    f"{per_class_key(config, task)}: {config.per_class(task)} {name} wanted but "
                    f"{pet / folder} holds only {copied} readable JPEGs"
                )
        digest = folder_digest(staging)
    return split_metrics(config, task, counts, left_out, digest)


def shuffled(files: list[Path], rng: np.random.Generator) -> list[Path]:
    return [files[i] for i in rng.permutation(len(files))]


def copy_sample(
    candidates: list[Path], labels: list[str], staging: Path, name: str, left_out: dict[str, str]
) -> int:
    """Copy the first good candidates to staging/<split>/<name>/, one per label; return how many."""
    for split in SPLITS:
        (staging / split / name).mkdir(parents=True, exist_ok=True)
    copied = 0
    with tqdm(total=len(labels), desc=f"split {name}", unit="img") as bar:
        # zip stops at the last label, so no candidate is decoded beyond the ones needed.
        for split, (path, data) in zip(labels, readable_jpegs(candidates, left_out)):
            (staging / split / name / path.name).write_bytes(data)
            copied += 1
            bar.update()
    return copied


def readable_jpegs(candidates: list[Path], left_out: dict[str, str]) -> Iterator[tuple[Path, bytes]]:
    """The usable candidates with their bytes, in order; the others go to left_out with the reason."""
    for path in candidates:
        data = path.read_bytes()
        problem = jpeg_problem(path.name, data)
        if problem:
            left_out[f"{path.parent.name}/{path.name}"] = problem
        else:
            yield path, data


def jpeg_problem(name: str, data: bytes) -> str | None:
    """Why a file cannot be a training image, or None when it decodes fully as a JPEG."""
    if not data:
        return "empty"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd EXIF blocks, which do no harm
        try:
            image = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, OSError):
            # A JPEG cut inside its header starts right but cannot even be opened.
            return "truncated_or_corrupt" if data.startswith(JPEG_MAGIC) else "not_an_image"
        with image:
            if image.format != "JPEG":
                return "not_jpeg"
            try:
                image.load()  # the full decode: a truncated file opens fine and fails only here
            except Exception:  # damaged data makes Pillow raise many kinds of error
                return "truncated_or_corrupt"
    if not name.endswith(".jpg"):
        return "not_named_jpg"  # the loaders find the images by this suffix
    return None


# ---------------------------------------------------------------- cifar10


def split_cifar10(config: Config) -> dict:
    task = "cifar10"
    folder = layout.raw_dir(config, task) / CIFAR_FOLDER
    require_folder(folder, task)
    classes = read_class_names(folder / "batches.meta")
    images, labels = read_batches(folder, len(classes))
    sizes = split_sizes(config, task)
    rng = np.random.default_rng(config.seed)
    chosen = {split: [] for split in SPLITS}
    for label, name in enumerate(classes):
        members = np.flatnonzero(labels == label)
        if len(members) < config.per_class(task):
            raise ConfigError(
                f"{per_class_key(config, task)}: {config.per_class(task)} images per class wanted "
                f"but class {name!r} has only {len(members)}"
            )
        sample = rng.permutation(members)[: config.per_class(task)]
        for split, part in zip(SPLITS, np.split(sample, [sizes["train"], sizes["train"] + sizes["val"]])):
            chosen[split].append(part)
    with replacing_folder(layout.split_dir(config, task)) as staging:
        for split in tqdm(SPLITS, desc="write cifar10", unit="split"):
            order = rng.permutation(np.concatenate(chosen[split]))  # mix the classes
            np.savez_compressed(staging / f"{split}.npz", images=images[order], labels=labels[order])
        (staging / "classes.json").write_text(json.dumps(classes) + "\n")
        digest = folder_digest(staging)
    counts = {split: {name: sizes[split] for name in classes} for split in SPLITS}
    return split_metrics(config, task, counts, {}, digest)


def read_class_names(path: Path) -> list[str]:
    meta = read_pickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not names or not all(isinstance(name, bytes) for name in names):
        raise PipelineError(f"{path}: no b'label_names' list; not a CIFAR-10 batches.meta")
    return [name.decode() for name in names]


def read_batches(folder: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Every batch pooled: images (N, 32, 32, 3) uint8 RGB and labels (N,) int64."""
    images, labels = [], []
    for name in tqdm(CIFAR_BATCHES, desc="read cifar10", unit="batch"):
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
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (CIFAR_PIXELS,):
        raise PipelineError(f"{path}: b'data' is not a uint8 array of {CIFAR_PIXELS} pixels per row")
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
