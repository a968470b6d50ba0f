"""Stage `split`: a seeded sample of each task's images, split per class into train/val/test.

cats_dogs: N cats and N dogs drawn at random from Microsoft's PetImages. Each candidate is
decoded with Pillow, which says what is wrong with a bad file, and with TensorFlow, the decoder
training uses; the files that are no usable JPEG (empty, not an image, another format,
truncated or corrupt), and byte-identical copies of an image already drawn, are left out,
counted by reason and replaced by the next candidate, so the sample stays N + N and no photo
sits in two splits. The files are copied to split/{train,val,test}/{cats,dogs}/<original name>.

cifar10: the 60000 images of the official pickles pooled, N per class sampled and split per
class, written as split/{train,val,test}.npz (uint8 HWC RGB images, int64 labels) and
split/classes.json. The pickles are read by `cifar_pickles`; a byte-identical copy of an earlier
image would be left out (the official 60000 have none).

Both write reports/splits/<task>.json with a sha256 of the split's content, which training tags
its MLflow runs with. The split is built in a sibling folder and renamed into place at the end,
so a failure never leaves a half-written split behind.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from pipeline import paths
from pipeline.config import SPLITS, Config
from pipeline.data import cifar_pickles, loaders
from pipeline.errors import ConfigError, PipelineError
from pipeline.atomic import replacing_folder, write_text_atomically
from pipeline.progress import progress_bar

PET_CLASSES = {"Cat": "cats", "Dog": "dogs"}  # Microsoft's folder -> the split's class folder
JPEG_MAGIC = b"\xff\xd8\xff"
DUPLICATE = "duplicate"  # the reason a byte-identical copy of an image already drawn is left out


def run(config: Config, task: str) -> None:
    splitters = {"cats_dogs": split_cats_dogs, "cifar10": split_cifar10}
    summary = splitters[task](config)
    write_json(paths.split_summary(task), summary)
    totals = ", ".join(f"{split} {count}" for split, count in summary["totals"].items())
    print(f"split {task}: {totals}; {summary['left_out']['count']} files left out")


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


def split_checksum(task: str) -> str:
    """The sha256 the split stage recorded for `task`'s split, or 'unknown' before it ran."""
    path = paths.split_summary(task)
    return json.loads(path.read_text()).get("sha256", "unknown") if path.exists() else "unknown"


def split_summary(config: Config, task: str, counts: dict, left_out: dict[str, str], digest: str) -> dict:
    return {
        "task": task,
        "seed": config.split.seed,
        "per_class": config.per_class(task),
        "counts": counts,
        "totals": {split: sum(counts[split].values()) for split in SPLITS},
        "left_out": {
            "count": len(left_out),
            "by_reason": dict(sorted(Counter(left_out.values()).items())),
            "files": sorted(left_out),
        },
        "duplicates_left_out": sum(reason == DUPLICATE for reason in left_out.values()),
        "sha256": digest,
        "source": source_record(config, task),
    }


def source_record(config: Config, task: str) -> dict:
    """Which file or folder the images came from and its verified checksum (download's SOURCE.json),
    so a result names its data: a mirror's sample or rebuilt archive is not the upstream one."""
    path = paths.raw_dir(config, task) / "SOURCE.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    origin = record.get("origin")
    return {"origin": Path(origin).name if origin else None, "checksum": record.get("checksum")}


def write_json(path: Path, content: object) -> None:
    write_text_atomically(path, json.dumps(content, indent=2) + "\n")


# ---------------------------------------------------------------- cats_dogs


def split_cats_dogs(config: Config) -> dict:
    task = "cats_dogs"
    pet = paths.raw_dir(config, task) / "PetImages"
    for folder in PET_CLASSES:
        require_folder(pet / folder, task)
    sizes = split_sizes(config, task)
    counts = {split: {name: sizes[split] for name in PET_CLASSES.values()} for split in SPLITS}
    left_out: dict[str, str] = {}  # "Cat/666.jpg" -> why it was left out
    drawn: set[str] = set()  # sha256 of every image taken, over both classes: each content once
    with replacing_folder(paths.split_dir(config, task)) as staging:
        for index, (folder, name) in enumerate(PET_CLASSES.items()):
            # One generator per class: the cats drawn do not depend on how many dogs there are.
            rng = np.random.default_rng([config.split.seed, index])
            candidates = shuffled(sorted(p for p in (pet / folder).iterdir() if p.is_file()), rng)
            copied = copy_sample(candidates, split_labels(sizes), staging, name, left_out, drawn)
            if copied < config.per_class(task):
                raise ConfigError(
                    f"{per_class_key(config, task)}: {config.per_class(task)} {name} wanted but "
                    f"{pet / folder} holds only {copied} readable JPEGs that are not copies of one drawn already"
                )
        digest = folder_digest(staging)
    return split_summary(config, task, counts, left_out, digest)


def shuffled(files: list[Path], rng: np.random.Generator) -> list[Path]:
    return [files[i] for i in rng.permutation(len(files))]


def copy_sample(
    candidates: list[Path], labels: list[str], staging: Path, name: str, left_out: dict[str, str], drawn: set[str]
) -> int:
    """Copy the first good candidates to staging/<split>/<name>/, one per label; return how many."""
    for split in SPLITS:
        (staging / split / name).mkdir(parents=True, exist_ok=True)
    copied = 0
    with progress_bar(f"split {name}", total=len(labels), unit="img") as bar:
        # zip stops at the last label, so no candidate is decoded beyond the ones needed.
        for split, (path, data) in zip(labels, readable_jpegs(candidates, left_out, drawn)):
            (staging / split / name / path.name).write_bytes(data)
            copied += 1
            bar.update()
    return copied


def readable_jpegs(candidates: list[Path], left_out: dict[str, str], drawn: set[str]) -> Iterator[tuple[Path, bytes]]:
    """The usable candidates with their bytes, in order; the others go to left_out with the reason.

    A byte-identical copy of an image already drawn is left out too: the same photo in train
    and test would be scored on what the model was trained on.
    """
    for path in candidates:
        data = path.read_bytes()
        content = hashlib.sha256(data).hexdigest()
        problem = jpeg_problem(path.name, data) or (DUPLICATE if content in drawn else None)
        if problem:
            left_out[f"{path.parent.name}/{path.name}"] = problem
        else:
            drawn.add(content)
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
    if not decodes_for_training(data):
        return "truncated_or_corrupt"  # e.g. a stray marker in the scan: Pillow greys the rest out
    if not name.endswith(".jpg"):
        return "not_named_jpg"  # the loaders find the images by this suffix
    return None


def decodes_for_training(data: bytes) -> bool:
    """Whether TensorFlow's decoder, the one every epoch uses, reads the whole image: Pillow
    accepts some damaged scans that TensorFlow refuses, and one such file would crash a training."""
    try:
        loaders.decode_bytes(tf.constant(data), 1)
    except tf.errors.InvalidArgumentError:
        return False
    return True


# ---------------------------------------------------------------- cifar10


def split_cifar10(config: Config) -> dict:
    task = "cifar10"
    folder = paths.raw_dir(config, task) / cifar_pickles.FOLDER
    require_folder(folder, task)
    classes = cifar_pickles.read_class_names(folder / "batches.meta")
    images, labels = cifar_pickles.read_batches(folder, len(classes))
    unique, left_out = first_copies(images)
    sizes = split_sizes(config, task)
    rng = np.random.default_rng(config.split.seed)
    chosen = {split: [] for split in SPLITS}
    for label, name in enumerate(classes):
        members = np.flatnonzero((labels == label) & unique)
        if len(members) < config.per_class(task):
            raise ConfigError(
                f"{per_class_key(config, task)}: {config.per_class(task)} images per class wanted "
                f"but class {name!r} has only {len(members)}"
            )
        sample = rng.permutation(members)[: config.per_class(task)]
        for split, part in zip(SPLITS, np.split(sample, [sizes["train"], sizes["train"] + sizes["val"]])):
            chosen[split].append(part)
    with replacing_folder(paths.split_dir(config, task)) as staging:
        for split in progress_bar("write cifar10", SPLITS, unit="split"):
            order = rng.permutation(np.concatenate(chosen[split]))  # mix the classes
            np.savez_compressed(staging / f"{split}.npz", images=images[order], labels=labels[order])
        (staging / "classes.json").write_text(json.dumps(classes) + "\n")
        digest = folder_digest(staging)
    counts = {split: {name: sizes[split] for name in classes} for split in SPLITS}
    return split_summary(config, task, counts, left_out, digest)


def first_copies(images: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """Which images are the first of their content (byte-identical copies after it are left
    out, so no image sits in two splits), and the left-out ones by position in the pickles."""
    seen: set[bytes] = set()
    unique = np.ones(len(images), dtype=bool)
    for index, image in enumerate(images):
        content = hashlib.sha256(image.tobytes()).digest()
        unique[index] = content not in seen
        seen.add(content)
    return unique, {f"image {index}": DUPLICATE for index in np.flatnonzero(~unique)}
