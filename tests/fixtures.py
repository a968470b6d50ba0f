"""Tiny data in the real upstream formats, built on the fly by the tests.

- a PetImages folder (and its zip) as in Microsoft's kagglecatsanddogs_5340.zip, with the
  kinds of broken files the real zip holds;
- a cifar-10-python.tar.gz with cifar-10-batches-py pickles in the official dict paths.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A real JPEG of smooth random colour, different per seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize(size, Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), seed % 256, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_pet_images(root: Path, per_class: int, with_bad: bool = True) -> Path:
    """root/PetImages/{Cat,Dog}/<n>.jpg, numbered like Microsoft's zip; returns the PetImages folder."""
    pet = root / "PetImages"
    for offset, name in enumerate(("Cat", "Dog")):
        folder = pet / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            (folder / f"{index}.jpg").write_bytes(jpeg_bytes(seed=offset * 100_000 + index))
        if with_bad:
            good = jpeg_bytes(seed=offset + 999_999)
            (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
            (folder / "empty.jpg").write_bytes(b"")
            (folder / "png_named.jpg").write_bytes(png_bytes(offset))
            (folder / "notes.txt").write_bytes(b"not an image\n")
    return pet


def write_sha256sums(pet: Path) -> Path:
    """SHA256SUMS beside PetImages/, one 'digest  PetImages/<Class>/<file>' line per file."""
    lines = []
    for path in sorted(p for p in pet.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(pet.parent).as_posix()}")
    sums = pet.parent / "SHA256SUMS"
    sums.write_text("\n".join(lines) + "\n")
    return sums


def make_pet_zip(path: Path, per_class: int, with_bad: bool = True) -> Path:
    """A zip laid out as kagglecatsanddogs_5340.zip: PetImages/Cat/*.jpg, PetImages/Dog/*.jpg."""
    staging = path.parent / (path.stem + "_staging")
    pet = make_pet_images(staging, per_class, with_bad)
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(pet.rglob("*")):
            archive.write(file, file.relative_to(staging).as_posix())
    return path


def _cifar_batch(rng: np.random.Generator, labels: list[int], label: bytes) -> dict:
    count = len(labels)
    return {
        b"batch_label": label,
        b"labels": labels,
        b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
        b"filenames": [f"image_{i}.png".encode() for i in range(count)],
    }


def make_cifar_tar(path: Path, train_per_class: int = 5, test_per_class: int = 1, seed: int = 0) -> Path:
    """cifar-10-python.tar.gz in the official layout: data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.default_rng(seed)
    train_labels = [label for label in range(10) for _ in range(train_per_class)]
    rng.shuffle(train_labels)
    members = {"batches.meta": {b"label_names": [c.encode() for c in CIFAR_CLASSES],
                                b"num_cases_per_batch": len(train_labels) // 5, b"num_vis": 3072}}
    for index, chunk in enumerate(np.array_split(np.asarray(train_labels), 5), start=1):
        members[f"data_batch_{index}"] = _cifar_batch(rng, chunk.tolist(), f"training batch {index} of 5".encode())
    members["test_batch"] = _cifar_batch(rng, [label for label in range(10) for _ in range(test_per_class)],
                                         b"testing batch 1 of 1")
    with tarfile.open(path, "w:gz") as archive:
        for name, obj in members.items():
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return path


def digest(path: Path, algorithm: str = "sha256") -> str:
    """'<algorithm>:<hex>' of a file, the form params.yaml takes."""
    return f"{algorithm}:{hashlib.new(algorithm, path.read_bytes()).hexdigest()}"


def set_params(params_file: Path, **dotted: object) -> None:
    """Rewrite keys of a params.yaml in place: set_params(p, **{"data.subset_per_class": 5})."""
    import yaml

    params = yaml.safe_load(params_file.read_text())
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def make_vgg16_standin(path: Path) -> Path:
    """A STAND-IN for Keras's VGG16 notop ImageNet weights: a randomly initialised VGG16 saved in
    the same legacy HDF5 layout (layer_names, weight_names), so it loads exactly where the real
    file would. Its features are meaningless: it proves plumbing, never accuracy."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, include_top=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        legacy_h5_format.save_weights_to_hdf5_group(h5, model)
        h5.attrs["standin"] = "randomly initialised VGG16, not ImageNet weights"
    return path


def make_cats_dogs_split(split_root: Path, per_split: dict[str, int], size: tuple[int, int] = (64, 48)) -> Path:
    """A ready split as split@cats_dogs leaves it: <split>/{cats,dogs}/<n>.jpg."""
    seed = 0
    for split, count in per_split.items():
        for name in ("cats", "dogs"):
            folder = split_root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                seed += 1
                (folder / f"{index}.jpg").write_bytes(jpeg_bytes(seed, size))
    return split_root


def make_cifar10_split(split_root: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """A ready split as split@cifar10 leaves it: {train,val,test}.npz and classes.json.

    Each class gets its own mean colour, so a model can learn something in a few steps."""
    import json

    rng = np.random.default_rng(seed)
    split_root.mkdir(parents=True, exist_ok=True)
    for split, count in per_split.items():
        labels = np.repeat(np.arange(10), count)
        colours = (labels[:, None] * 25).astype(np.int64)
        noise = rng.integers(0, 40, size=(len(labels), 32, 32, 3))
        images = np.clip(colours[:, None, None, :] + noise, 0, 255).astype(np.uint8)
        np.savez_compressed(split_root / f"{split}.npz", images=images, labels=labels.astype(np.int64))
    (split_root / "classes.json").write_text(json.dumps(CIFAR_CLASSES))
    return split_root


def dvc(project: Path, *args: str) -> str:
    """Run a dvc command in `project`; its output, or the test fails with what it said."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


HISTORY_STAND_IN = "epoch,phase,loss,accuracy,val_loss,val_accuracy\n1,train,0.7,0.5,0.7,0.5\n"


def scratch_dvc_project(root: Path) -> Path:
    """A git + DVC project with the real dvc.yaml, params.yaml and code, and a stand-in file for
    every input and output of the stages from train to report, so `dvc commit` can record those
    stages without running them and `dvc status` then says what a change makes stale."""
    import json
    import shutil
    import subprocess

    import yaml

    from pipeline import paths
    from pipeline.registry import REGISTRY

    repository = Path(__file__).resolve().parent.parent
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(repository / name, root / name)
    shutil.copytree(repository / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("data/split/cats_dogs", "data/split/cifar10", "data/raw/vgg16"):
        (root / folder).mkdir(parents=True)
        (root / folder / "content").write_text(folder)
    contents = {"reports/results.md": "results", "reports/compare/cifar10_accuracy.png": "png"}
    for task in ("cats_dogs", "cifar10"):
        contents[paths.split_summary(task)] = json.dumps({"totals": {"train": 2, "val": 1, "test": 1}, "sha256": task})
    seeds = yaml.safe_load((root / "params.yaml").read_text())["seeds"]
    for name in REGISTRY:
        contents[paths.figures_dir(name) / "curves.png"] = name
        for seed in seeds:
            contents.update({paths.model_file(name, seed): name, paths.run_id_file(name, seed): name,
                             paths.train_summary(name, seed): "{}", paths.history_file(name, seed): HISTORY_STAND_IN,
                             paths.eval_metrics(name, seed): "{}", paths.test_summary(name, seed): "{}",
                             paths.confusion_file(name, seed): "actual,predicted\n",
                             paths.confusion_file(name, seed).with_suffix(".png"): name})
    for output, content in contents.items():
        (root / output).parent.mkdir(parents=True, exist_ok=True)
        (root / output).write_text(content)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    return root
