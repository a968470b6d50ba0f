"""`python -m pipeline predict`: a line per image, an error line per unreadable file, folders,
batches, a CSV and a summary line; model names and MLflow URIs."""

import errno
import io
import os
import subprocess

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import paths, predict, serving, train
from pipeline.__main__ import main
from pipeline.config import load_config
from pipeline.data import loaders
from pipeline.inference import class_probabilities
from pipeline.registry import evaluate_stage, train_stage
from tests.conftest import enter_project
from tests.fixtures import CIFAR_CLASSES, jpeg_bytes, make_cifar10_split, png_bytes, set_params

NAME, SEED = "cifar10_naive", 42  # a model name means the default seed's (seeds[0]) model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny cifar10_naive, trained once for the module in its own project folder, and three images."""
    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as patch:
        enter_project(root, patch)
        make_cifar10_split(root / "data" / "split" / "cifar10", {"train": 4, "val": 1, "test": 1})
        # the network alone, so its own outputs can be compared (the mirror average is tested in test_serving)
        set_params(root / "params.yaml", **{f"train.{NAME}.epochs": 1, f"train.{NAME}.batch_size": 16,
                                            f"train.{NAME}.mirror_average": False})
        train.run(load_config("params.yaml"), NAME, SEED)
        images = root / "images"
        images.mkdir()
        (images / "good.jpg").write_bytes(jpeg_bytes(seed=1))
        good = jpeg_bytes(seed=2)
        (images / "corrupt.jpg").write_bytes(good[: len(good) // 2])  # a JPEG cut short
        (images / "good2.png").write_bytes(png_bytes(seed=200))
        yield root


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if line.startswith("error: ")]


def summary_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def predicted_lines(stdout: str) -> dict[str, tuple[str, float]]:
    """'<path>\\t<class>\\t<probability>' lines -> {file name: (class, probability)}."""
    result = {}
    for line in stdout.strip().splitlines():
        path, cls, probability = line.split("\t")
        result[path.rsplit("/", 1)[-1]] = (cls, float(probability))
    return result


def files(root, *names):
    return [str(root / "images" / name) for name in names]


def decoded(paths, size=32):
    """The batch the model sees: each file decoded and resized as every stage does."""
    return np.stack([loaders.decode_image(tf.constant(path), size).numpy() for path in paths])


def test_predict_classifies_good_files_and_reports_the_corrupt_one(trained, capsys):
    code = main(["predict", "--model", NAME, *files(trained, "good.jpg", "corrupt.jpg", "good2.png")])
    out, err = capsys.readouterr()
    assert code != 0
    lines = predicted_lines(out)
    assert set(lines) == {"good.jpg", "good2.png"}  # the file after the corrupt one is still classified
    for cls, probability in lines.values():
        assert cls in CIFAR_CLASSES
        assert 1 / len(CIFAR_CLASSES) <= probability <= 1  # the most probable of ten
    errors = error_lines(err)
    assert len(errors) == 1 and "corrupt.jpg" in errors[0]
    counts = {name: sum(cls == name for cls, _ in lines.values()) for name in CIFAR_CLASSES}
    per_class = ", ".join(f"{name} {count}" for name, count in counts.items() if count)
    assert summary_line(err) == f"2 classified ({per_class}), 1 unreadable"

    # The printed class and probability are the model's own on the decoded file.
    config = load_config("params.yaml")
    model = keras.saving.load_model(paths.model_file(NAME, SEED))
    batch = decoded(files(trained, "good.jpg", "good2.png"))
    probabilities = model.predict(batch, verbose=0)
    classes = loaders.class_names(config, "cifar10")
    for name, row in zip(("good.jpg", "good2.png"), probabilities):
        assert lines[name] == (classes[int(row.argmax())], pytest.approx(float(row.max()), abs=1e-4))


def test_good_files_alone_exit_zero(trained, capsys):
    assert main(["predict", "--model", NAME, *files(trained, "good.jpg", "good2.png")]) == 0
    out, err = capsys.readouterr()
    assert set(predicted_lines(out)) == {"good.jpg", "good2.png"}
    assert err.strip().splitlines() == [summary_line(err)] and summary_line(err).endswith(", 0 unreadable")


def test_missing_file_is_an_error_line_and_a_folder_its_images(trained, capsys):
    (trained / "images" / "notes.txt").write_text("not an image, and not named as one\n")
    code = main(["predict", "--model", NAME, *files(trained, "missing.jpg"), str(trained / "images")])
    out, err = capsys.readouterr()
    assert code == 1
    assert set(predicted_lines(out)) == {"good.jpg", "good2.png"}  # the folder's images; notes.txt is no image
    errors = error_lines(err)
    assert len(errors) == 2
    assert "missing.jpg: not found" in errors[0] and errors[1].endswith("corrupt.jpg: not a readable image")
    assert summary_line(err).endswith(", 2 unreadable")


def test_output_csv_in_batches_keeps_every_file_in_order(trained, capsys, monkeypatch):
    monkeypatch.setattr(predict, "BATCH_SIZE", 2)  # five files: three batches, a corrupt one in the middle
    names = ["good.jpg", "good2.png", "corrupt.jpg", "good.jpg", "good2.png"]
    output = trained / "out" / "predictions.csv"
    assert main(["predict", "--model", NAME, "--output", str(output), *files(trained, *names)]) == 1
    out, err = capsys.readouterr()
    table = pd.read_csv(output)
    assert [path.rsplit("/", 1)[-1] for path in table["path"]] == names
    assert list(table.columns) == ["path", "label", "probability", *(f"p_{c}" for c in CIFAR_CLASSES), "error"]
    readable = table[table["error"].isna()]
    probabilities = readable[[f"p_{c}" for c in CIFAR_CLASSES]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert list(readable["label"]) == [CIFAR_CLASSES[i] for i in probabilities.argmax(axis=1)]
    np.testing.assert_allclose(readable["probability"], probabilities.max(axis=1), rtol=1e-6)
    assert table["label"].isna().tolist() == [False, False, True, False, False]
    assert table.loc[2, "error"].endswith("corrupt.jpg: not a readable image")
    # The same file gives the same numbers in whichever batch it lands.
    np.testing.assert_allclose(probabilities[0], probabilities[2], rtol=1e-5)
    np.testing.assert_allclose(probabilities[1], probabilities[3], rtol=1e-5)
    assert summary_line(err).startswith("4 classified (") and summary_line(err).endswith("), 1 unreadable")


def test_a_folder_without_images_is_one_error_line(trained, capsys):
    empty = trained / "empty"
    empty.mkdir(exist_ok=True)
    assert main(["predict", "--model", NAME, str(empty)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [f"error: no images in {empty}"]


def test_mlflow_uri_predicts_as_pyfunc(trained, capsys):
    run_id = paths.run_id_file(NAME, SEED).read_text().strip()
    uri = f"runs:/{run_id}/classifier"
    good = files(trained, "good.jpg", "good2.png")
    assert main(["predict", "--model", uri, *good]) == 0
    by_uri = predicted_lines(capsys.readouterr().out)
    assert main(["predict", "--model", NAME, *good]) == 0
    by_name = predicted_lines(capsys.readouterr().out)

    batch = decoded(good)
    classifier = serving.unwrap(mlflow.pyfunc.load_model(uri))
    probabilities = class_probabilities(classifier.network, batch, classifier.mirror_average)
    classes = loaders.class_names(load_config("params.yaml"), "cifar10")
    expected = {name: (classes[int(row.argmax())], round(float(row.max()), 4))
                for name, row in zip(("good.jpg", "good2.png"), probabilities)}
    for name, (cls, probability) in expected.items():
        assert by_uri[name][0] == cls == by_name[name][0]
        assert by_uri[name][1] == pytest.approx(probability, abs=1e-4)
        assert by_name[name][1] == pytest.approx(probability, abs=1e-4)

    # The registered photo classifier (version 1, made by the training) classifies the same.
    capsys.readouterr()
    assert main(["predict", "--model", f"models:/{NAME}/1", *good]) == 0
    assert predicted_lines(capsys.readouterr().out) == by_name


def test_a_model_name_means_the_default_seed_s_model(trained, capsys):
    """Whatever other seeds trained, a name is the first seed's model file: the one registered."""
    from pipeline.models import build_model

    good = files(trained, "good.jpg", "good2.png")
    config = load_config("params.yaml")
    keras.utils.set_random_seed(1)
    further = build_model(NAME, config.model(NAME))  # an untrained network: other answers
    further.save(paths.model_file(NAME, 1))
    params = trained / "params.yaml"
    before = params.read_text()
    try:
        assert main(["predict", "--model", NAME, *good]) == 0
        by_default = predicted_lines(capsys.readouterr().out)
        set_params(params, seeds=[1, 42])  # seed 1 becomes the default
        assert main(["predict", "--model", NAME, *good]) == 0
        by_further = predicted_lines(capsys.readouterr().out)
        set_params(params, seeds=[2, 42])  # a default seed not trained yet
        assert main(["predict", "--model", NAME, *good]) == 1
        _, err = capsys.readouterr()
    finally:
        params.write_text(before)
        paths.model_file(NAME, 1).unlink()
    probabilities = further.predict(decoded(good), verbose=0)
    assert {name: cls for name, (cls, _) in by_further.items()} == \
        {name: CIFAR_CLASSES[int(row.argmax())] for name, row in zip(("good.jpg", "good2.png"), probabilities)}
    for name, row in zip(("good.jpg", "good2.png"), probabilities):
        assert by_further[name][1] == pytest.approx(float(row.max()), abs=1e-4)
    assert by_further != by_default
    assert err.strip().splitlines() == [f"error: {paths.model_file(NAME, 2)}: not found; "
                                        f"run `dvc repro train_cifar10@{NAME}-2` first"]


@pytest.mark.parametrize("reference", ["no_such_model", "runs:/0123456789abcdef0123456789abcdef/model",
                                       "models:/nobody/1"])
def test_unknown_model_is_one_error_line(trained, capsys, reference):
    code = main(["predict", "--model", reference, *files(trained, "good.jpg")])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    errors = err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and reference in errors[0]


def test_predict_and_the_served_model_never_call_model_predict(trained, capsys, monkeypatch):
    """Model.predict sets itself up anew on every call (tens of milliseconds): the CLI and the
    served photo classifier run the network through the compiled forward pass instead."""
    good = files(trained, "good.jpg", "good2.png")
    assert main(["predict", "--model", NAME, *good]) == 0
    expected = predicted_lines(capsys.readouterr().out)

    def refuse(*args, **kwargs):
        raise AssertionError("keras.Model.predict was called")

    monkeypatch.setattr(keras.Model, "predict", refuse)
    assert main(["predict", "--model", NAME, *good]) == 0
    assert predicted_lines(capsys.readouterr().out) == expected
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    answer = served.predict(pd.DataFrame({"image": [open(path, "rb").read() for path in good]}))
    assert list(answer["label"]) == [label for label, _ in expected.values()]


@pytest.fixture
def immutable(tmp_path):
    """A folder that even root cannot write into (`chattr +i`), where the file system allows it."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("where", ["a folder", "under a file", "read-only folder"])
def test_an_unwritable_output_is_one_line_before_any_work(trained, capsys, tmp_path, request, where):
    if where == "a folder":
        output = tmp_path
        expected = f"error: {output}: is a folder"
    elif where == "under a file":
        output = trained / "images" / "good.jpg" / "predictions.csv"
        expected = f"error: {output.parent}: is a file, where a folder should be"
    else:
        output = request.getfixturevalue("immutable") / "predictions.csv"
        expected = f"error: {output}: cannot write (operation not permitted)"
    watched = output if output.is_dir() else output.parent
    before = sorted(watched.rglob("*"))
    code = main(["predict", "--model", NAME, "--output", str(output), *files(trained, "good.jpg")])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""  # nothing classified: the output was checked first
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected)
    assert sorted(watched.rglob("*")) == before


def test_an_output_refused_at_the_end_is_one_line_and_leaves_nothing(trained, capsys, tmp_path, monkeypatch):
    def read_only(source, target):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))

    monkeypatch.setattr(os, "replace", read_only)
    output = tmp_path / "predictions.csv"
    assert main(["predict", "--model", NAME, "--output", str(output), *files(trained, "good.jpg")]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [f"error: {output}: cannot write (read-only file system)"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_model_file_is_one_line_saying_how_to_get_it_back(trained, capsys, damage):
    """Keras calls a .keras file cut short "File not found", for a file that is there."""
    path = paths.model_file(NAME, SEED)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2] if damage == "truncated" else b"")
    try:
        assert main(["predict", "--model", NAME, *files(trained, "good.jpg")]) == 1
    finally:
        path.write_bytes(whole)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {path}: unreadable (truncated, or not a .keras file); restore it with "
                     f"`dvc checkout {path}` or train it again with `dvc repro {train_stage(NAME, SEED)}`"]


def test_params_of_another_folder_are_read_from_there_and_the_command_line_from_here(trained, capsys, tmp_path,
                                                                                       monkeypatch):
    """The model path comes from the params file's project; the image and --output from where the user stands."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes((trained / "images" / "good.jpg").read_bytes())
    params = trained / "params.yaml"
    assert main(["--params", str(params), "predict", "--model", NAME, "--output", "out.csv", "photo.jpg"]) == 0
    assert set(predicted_lines(capsys.readouterr().out)) == {"photo.jpg"}
    assert list(pd.read_csv(tmp_path / "out.csv")["path"]) == [str(tmp_path / "photo.jpg")]
    assert not (trained / "out.csv").exists()


def test_params_yaml_is_found_in_a_folder_above(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained / "images")
    assert main(["predict", "--model", NAME, "good.jpg"]) == 0
    assert set(predicted_lines(capsys.readouterr().out)) == {"good.jpg"}


def test_formats_only_pillow_reads_are_classified_as_their_png_twin(trained, capsys, tmp_path):
    """WebP and TIFF were left out of a folder without a word; a WebP cut short is unreadable."""
    image = Image.open(io.BytesIO(jpeg_bytes(seed=5))).convert("RGB")
    folder = tmp_path / "formats"
    folder.mkdir()
    image.save(folder / "photo.png")
    image.save(folder / "photo.webp", lossless=True)
    image.save(folder / "photo.tiff")
    assert main(["predict", "--model", NAME, str(folder)]) == 0
    out, err = capsys.readouterr()
    lines = predicted_lines(out)
    assert set(lines) == {"photo.png", "photo.webp", "photo.tiff"}
    assert lines["photo.webp"] == lines["photo.png"] == lines["photo.tiff"]
    assert summary_line(err).startswith("3 classified (")

    whole = (folder / "photo.webp").read_bytes()
    (folder / "cut.webp").write_bytes(whole[: len(whole) // 2])
    assert main(["predict", "--model", NAME, str(folder / "cut.webp")]) == 1
    assert error_lines(capsys.readouterr().err) == [f"error: {folder / 'cut.webp'}: not a readable image"]


@pytest.mark.parametrize("reference, expected", [
    (f"models:/{NAME}@champion", f"no version of {NAME} has the alias champion; "
                                 f"`dvc repro {evaluate_stage(NAME, SEED)}` sets it"),
    ("models:/cats_dogs_naive@champion", "no registered model cats_dogs_naive; "
                                         "`dvc repro train_cats_dogs@cats_dogs_naive-42` registers it"),
])
def test_a_champion_not_chosen_yet_says_which_stage_chooses_it(trained, capsys, reference, expected):
    """After a training alone, the cause comes first, not a list of the 11 model names."""
    assert main(["predict", "--model", reference, *files(trained, "good.jpg")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {reference}: {expected}"]
