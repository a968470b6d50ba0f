"""Stage split: sample sizes, broken files, seeds, the subset profile and the CIFAR-10 pickles."""
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import paths
from pipeline.__main__ import main
from pipeline.config import SPLITS, load_config
from pipeline.data import cifar_pickles, loaders, split
from pipeline.errors import PipelineError
from tests.fixtures import CIFAR_CLASSES, jpeg_bytes, make_cifar_tar, make_pet_images, set_params

BAD_FILES = {"empty.jpg": "empty", "notes.txt": "not_an_image", "png_named.jpg": "not_jpeg",
             "truncated.jpg": "truncated_or_corrupt"}


def pet_config(project, available, **params):
    """params.yaml with `params` set, and `available` good images per class plus the broken ones."""
    set_params(project / "params.yaml", **params)
    config = load_config()
    make_pet_images(paths.raw_dir(config, "cats_dogs"), available)
    return config


def cifar_config(project, train_per_class=12, test_per_class=3, **params):
    set_params(project / "params.yaml", **params)
    config = load_config()
    archive = make_cifar_tar(project / "cifar.tar.gz", train_per_class, test_per_class)
    with tarfile.open(archive) as tar:
        tar.extractall(paths.raw_dir(config, "cifar10"), filter="data")
    return config


def split_files(config):
    """{split: {class: sorted file names}} of the cats_dogs split."""
    root = paths.split_dir(config, "cats_dogs")
    return {s: {c: sorted(p.name for p in (root / s / c).iterdir()) for c in ("cats", "dogs")} for s in SPLITS}


def read_metrics(task):
    return json.loads(paths.split_summary(task).read_text())


def test_cats_dogs_counts_and_ratios(project):
    config = pet_config(project, 25, **{"split.cats_dogs.per_class": 20})
    split.run(config, "cats_dogs")
    files = split_files(config)
    for name in ("cats", "dogs"):
        assert [len(files[s][name]) for s in SPLITS] == [14, 3, 3]
        assert len({f for s in SPLITS for f in files[s][name]}) == 20  # no file in two splits
    source = paths.raw_dir(config, "cats_dogs") / "PetImages" / "Cat" / files["train"]["cats"][0]
    copied = paths.split_dir(config, "cats_dogs") / "train" / "cats" / files["train"]["cats"][0]
    assert copied.read_bytes() == source.read_bytes()
    metrics = read_metrics("cats_dogs")
    assert metrics["totals"] == {"train": 28, "val": 6, "test": 6}
    assert metrics["counts"]["val"] == {"cats": 3, "dogs": 3}
    assert metrics["seed"] == 42 and metrics["per_class"] == 20 and len(metrics["sha256"]) == 64
    assert sorted(p.name for p in (config.data.root / "split").iterdir()) == ["cats_dogs"]  # no staging left


def test_broken_files_are_left_out_counted_and_replaced(project):
    # 20 wanted out of 20 good: every broken file is met on the way and must be replaced.
    config = pet_config(project, 20, **{"split.cats_dogs.per_class": 20})
    split.run(config, "cats_dogs")
    files = split_files(config)
    for name in ("cats", "dogs"):
        kept = {f for s in SPLITS for f in files[s][name]}
        assert kept == {f"{i}.jpg" for i in range(20)}
    left_out = read_metrics("cats_dogs")["left_out"]
    assert left_out["count"] == 8
    assert left_out["by_reason"] == {reason: 2 for reason in BAD_FILES.values()}
    assert left_out["files"] == sorted(f"{c}/{f}" for c in ("Cat", "Dog") for f in BAD_FILES)


def test_a_photo_twice_in_the_source_lands_in_one_split_only(project):
    """The full Microsoft zip holds byte-identical photos under two names (even one in each class
    folder): each content is drawn once, its copies are left out, counted and replaced."""
    config = pet_config(project, 20, **{"split.cats_dogs.per_class": 19})
    pet = paths.raw_dir(config, "cats_dogs") / "PetImages"
    for copy in range(20, 26):  # copies of cats 0..5 among the cats, and of cat 6 among the dogs
        (pet / "Cat" / f"{copy}.jpg").write_bytes((pet / "Cat" / f"{copy - 20}.jpg").read_bytes())
    (pet / "Dog" / "20.jpg").write_bytes((pet / "Cat" / "6.jpg").read_bytes())
    split.run(config, "cats_dogs")

    root = paths.split_dir(config, "cats_dogs")
    contents = [path.read_bytes() for path in root.rglob("*.jpg")]
    assert len(contents) == len(set(contents)) == 38  # 19 + 19, every photo once
    metrics = read_metrics("cats_dogs")
    duplicates = [name for name in metrics["left_out"]["files"] if name not in
                  {f"{c}/{f}" for c in ("Cat", "Dog") for f in BAD_FILES}]
    assert metrics["duplicates_left_out"] == metrics["left_out"]["by_reason"]["duplicate"] == len(duplicates) > 0
    assert metrics["totals"] == {"train": 26, "val": 6, "test": 6}


def test_cifar10_copies_of_an_image_are_left_out(project):
    config = cifar_config(project, **{"split.cifar10.per_class": 14})
    folder = paths.raw_dir(config, "cifar10") / cifar_pickles.FOLDER
    batch_file = folder / "data_batch_1"
    batch = pickle.loads(batch_file.read_bytes())
    batch[b"data"][1] = batch[b"data"][0]  # the second image is a copy of the first
    batch[b"labels"][1] = batch[b"labels"][0]
    batch_file.write_bytes(pickle.dumps(batch, protocol=2))
    split.run(config, "cifar10")

    images = np.concatenate([np.load(paths.split_dir(config, "cifar10") / f"{s}.npz")["images"] for s in SPLITS])
    assert len({image.tobytes() for image in images}) == len(images) == 140
    assert read_metrics("cifar10")["duplicates_left_out"] == 1


@pytest.mark.parametrize("name, reason", [*BAD_FILES.items(), ("0.jpg", None)])
def test_jpeg_problem_names_the_reason(project, name, reason):
    pet = make_pet_images(project, 1)
    assert split.jpeg_problem(name, (pet / "Cat" / name).read_bytes()) == reason


def test_jpeg_cut_inside_its_pixels_is_truncated_and_names_must_end_jpg():
    data = jpeg_bytes(1, size=(256, 256))
    assert split.jpeg_problem("1.jpg", data[: len(data) * 4 // 5]) == "truncated_or_corrupt"
    assert split.jpeg_problem("1.jpeg", data) == "not_named_jpg"


def test_same_split_seed_same_split_other_split_seed_differs(project):
    config = pet_config(project, 30, **{"split.cats_dogs.per_class": 10})
    split.run(config, "cats_dogs")
    first, first_digest = split_files(config), read_metrics("cats_dogs")["sha256"]
    split.run(config, "cats_dogs")  # replaces the existing split
    assert split_files(config) == first
    assert read_metrics("cats_dogs")["sha256"] == first_digest
    set_params(project / "params.yaml", seeds=[7, 1])  # the trainings' seeds: not the split's
    split.run(load_config(), "cats_dogs")
    assert split_files(config) == first and read_metrics("cats_dogs")["sha256"] == first_digest
    set_params(project / "params.yaml", **{"split.seed": 7})
    split.run(load_config(), "cats_dogs")
    assert split_files(config) != first
    assert read_metrics("cats_dogs")["sha256"] != first_digest
    assert read_metrics("cats_dogs")["seed"] == 7


def test_subset_profile_shrinks_both_tasks(project):
    pet_config(project, 10)
    config = cifar_config(project, **{"data.subset_per_class": 5})
    split.run(config, "cats_dogs")
    split.run(config, "cifar10")
    assert read_metrics("cats_dogs")["totals"] == {"train": 6, "val": 2, "test": 2}
    assert read_metrics("cifar10")["totals"] == {"train": 30, "val": 10, "test": 10}


@pytest.mark.parametrize("params, key", [
    ({"split.cats_dogs.per_class": 15}, "split.cats_dogs.per_class"),
    ({"data.subset_per_class": 15}, "data.subset_per_class"),
])
def test_too_few_images_exit_2_naming_the_key(project, capsys, params, key):
    config = pet_config(project, 10, **params)
    assert main(["split", "cats_dogs"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0] and "only 10 readable" in errors[0]
    assert not (config.data.root / "split").exists() or not any((config.data.root / "split").iterdir())


def test_missing_input_names_the_download_stage(project, capsys):
    assert main(["split", "cifar10"]) == 1
    assert "dvc repro download@cifar10" in capsys.readouterr().err


def test_restricted_unpickler_refuses_other_globals(project):
    class Exploit:
        def __reduce__(self):
            return os.system, ("touch exploited",)

    path = project / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(PipelineError, match="refusing to load global .*system"):
        cifar_pickles.read_pickle(path)
    assert not (project / "exploited").exists()


def test_cifar10_split_is_stratified(project):
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    config = cifar_config(project, **{"split.cifar10.per_class": 15, "split.cifar10.fractions": fractions})
    split.run(config, "cifar10")
    root = paths.split_dir(config, "cifar10")
    assert json.loads((root / "classes.json").read_text()) == CIFAR_CLASSES
    pooled = []
    for name, per_class in zip(SPLITS, (9, 3, 3)):
        with np.load(root / f"{name}.npz") as arrays:
            images, labels = arrays["images"], arrays["labels"]
        assert images.dtype == np.uint8 and images.shape == (per_class * 10, 32, 32, 3)
        assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [per_class] * 10
        pooled += [(image.tobytes(), label) for image, label in zip(images, labels)]
    source = read_cifar_source(config)
    assert sorted(pooled) == sorted(source)  # all 150 images, each once, with its own label
    assert read_metrics("cifar10")["totals"] == {"train": 90, "val": 30, "test": 30}


def read_cifar_source(config):
    """(HWC image bytes, label) of every image in the raw pickles."""
    folder = paths.raw_dir(config, "cifar10") / cifar_pickles.FOLDER
    pairs = []
    for name in cifar_pickles.BATCHES:
        batch = pickle.loads((folder / name).read_bytes(), encoding="bytes")
        images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        pairs += [(image.tobytes(), label) for image, label in zip(images, batch[b"labels"])]
    return pairs


def test_cifar10_bad_batch_keeps_the_previous_split(project):
    config = cifar_config(project, **{"split.cifar10.per_class": 15})
    split.run(config, "cifar10")
    before = read_metrics("cifar10")["sha256"]
    batch = paths.raw_dir(config, "cifar10") / cifar_pickles.FOLDER / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(PipelineError, match="data_batch_3"):
        split.run(config, "cifar10")
    batch.unlink()
    with pytest.raises(PipelineError, match="data_batch_3: missing"):
        split.run(config, "cifar10")
    assert split.folder_digest(paths.split_dir(config, "cifar10")) == before
    assert sorted(p.name for p in (config.data.root / "split").iterdir()) == ["cifar10"]


def encoded(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **{"format": "JPEG", "quality": 90, **options})
    return buffer.getvalue()


def file_kinds() -> dict[str, bytes]:
    """One file of each kind the real PetImages zip holds, built with Pillow."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    good = encoded(rgb)
    scan = good.index(b"\xff\xda")  # start of the entropy-coded image data
    middle = (scan + len(good)) // 2
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    return {
        "baseline": good,
        "progressive": encoded(rgb, progressive=True),
        "cmyk": encoded(rgb.convert("CMYK")),
        "grayscale": encoded(rgb.convert("L")),
        "tiny": encoded(Image.new("RGB", (1, 1), (200, 30, 90))),
        "zero_byte": b"",
        "truncated": good[: len(good) * 2 // 3],
        "not_jpeg": png.getvalue(),
        "not_an_image": b"<html>not an image</html>\n",
        # A stray marker inside the scan: Pillow decodes it (the rest comes out grey), TensorFlow refuses it.
        "stray_marker": good[:middle] + b"\xff\xe1" + good[middle:],
    }


FILE_KINDS = {"baseline": None, "progressive": None, "cmyk": None, "grayscale": None, "tiny": None,
              "zero_byte": "empty", "truncated": "truncated_or_corrupt", "not_jpeg": "not_jpeg",
              "not_an_image": "not_an_image", "stray_marker": "truncated_or_corrupt"}


@pytest.mark.parametrize("kind, reason", FILE_KINDS.items())
def test_the_split_admits_what_the_training_decoder_reads(kind, reason):
    assert split.jpeg_problem(f"{kind}.jpg", file_kinds()[kind]) == reason


def test_every_file_the_split_admits_decodes_for_training(project):
    """The split of a PetImages folder holding every kind of file, read back the way training
    reads it: no admitted file makes TensorFlow's decoder fail, and each keeps its colours."""
    set_params(project / "params.yaml", **{"split.cats_dogs.per_class": 5})
    config = load_config()
    pet = paths.raw_dir(config, "cats_dogs") / "PetImages"
    (pet / "Cat").mkdir(parents=True)
    for kind, data in file_kinds().items():
        (pet / "Cat" / f"{kind}.jpg").write_bytes(data)
    (pet / "Dog").mkdir()  # other photos: the same bytes in both folders would be duplicates
    for index in range(5):
        (pet / "Dog" / f"dog{index}.jpg").write_bytes(jpeg_bytes(seed=500 + index, size=(48, 48)))
    split.run(config, "cats_dogs")
    admitted = {p.stem for p in paths.split_dir(config, "cats_dogs").rglob("*.jpg")}
    assert admitted == {kind for kind, reason in FILE_KINDS.items() if reason is None} | {f"dog{i}" for i in range(5)}
    for split_name in SPLITS:
        loaders.load_arrays(config, "cats_dogs", split_name, 40)  # decodes every file of the split
    for path in paths.split_dir(config, "cats_dogs").rglob("*.jpg"):
        with Image.open(path) as image:
            expected = np.asarray(image.convert("RGB"), dtype=np.float32)
        decoded = loaders.decode_image(tf.constant(str(path)), expected.shape[0]).numpy()
        assert np.abs(decoded - expected).mean() < 3, path.name  # CMYK and grey come out as Pillow's RGB
