"""`python -m pipeline predict`: a line per image, an error line per unreadable file, MLflow URIs."""
import shutil

import keras
import mlflow
import mlflow.keras.save
import numpy as np
import pytest
import tensorflow as tf

from pipeline import layout, train
from pipeline.__main__ import main
from pipeline.config import load_config
from pipeline.data import loaders
from tests.conftest import ROOT
from tests.fixtures import CIFAR_CLASSES, jpeg_bytes, make_cifar10_split, png_bytes, set_params

NAME = "cifar10_naive"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny cifar10_naive, trained once for the module in its own project folder, and three images."""
    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as patch:
        shutil.copy(ROOT / "params.yaml", root / "params.yaml")
        patch.chdir(root)
        patch.delenv("PIPELINE_DATA_MIRROR", raising=False)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        # MLflow's pip-requirement inference loads the model again in a subprocess (~40 s here).
        patch.setattr(mlflow.keras.save, "infer_pip_requirements", lambda *a, fallback=None, **k: fallback)
        make_cifar10_split(root / "data" / "split" / "cifar10", {"train": 4, "val": 1, "test": 1})
        set_params(root / "params.yaml", **{f"train.{NAME}.epochs": 1, f"train.{NAME}.batch_size": 16})
        train.run(load_config("params.yaml"), NAME)
        images = root / "images"
        images.mkdir()
        (images / "good.jpg").write_bytes(jpeg_bytes(seed=1))
        good = jpeg_bytes(seed=2)
        (images / "corrupt.jpg").write_bytes(good[: len(good) // 2])  # a JPEG cut short
        (images / "good2.png").write_bytes(png_bytes(seed=200))
        yield root


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
    errors = err.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith("error: ") and "corrupt.jpg" in errors[0]

    # The printed class and probability are the model's own on the decoded file.
    config = load_config("params.yaml")
    model = keras.saving.load_model(layout.model_file(NAME))
    batch = decoded(files(trained, "good.jpg", "good2.png"))
    probabilities = model.predict(batch, verbose=0)
    classes = loaders.class_names(config, "cifar10")
    for name, row in zip(("good.jpg", "good2.png"), probabilities):
        assert lines[name] == (classes[int(row.argmax())], pytest.approx(float(row.max()), abs=1e-4))


def test_good_files_alone_exit_zero(trained, capsys):
    assert main(["predict", "--model", NAME, *files(trained, "good.jpg", "good2.png")]) == 0
    out, err = capsys.readouterr()
    assert set(predicted_lines(out)) == {"good.jpg", "good2.png"} and err == ""


def test_missing_file_and_folder_are_error_lines_too(trained, capsys):
    code = main(["predict", "--model", NAME, *files(trained, "missing.jpg", "good.jpg"), str(trained / "images")])
    out, err = capsys.readouterr()
    assert code == 1
    assert set(predicted_lines(out)) == {"good.jpg"}
    errors = err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "missing.jpg: not found" in errors[0]
    assert errors[1].endswith(f"{trained / 'images'}: not a readable image")


def test_mlflow_uri_predicts_as_pyfunc(trained, capsys):
    run_id = layout.run_id_file(NAME).read_text().strip()
    uri = f"runs:/{run_id}/model"
    good = files(trained, "good.jpg", "good2.png")
    assert main(["predict", "--model", uri, *good]) == 0
    by_uri = predicted_lines(capsys.readouterr().out)
    assert main(["predict", "--model", NAME, *good]) == 0
    by_name = predicted_lines(capsys.readouterr().out)

    batch = decoded(good)
    probabilities = np.asarray(mlflow.pyfunc.load_model(uri).predict(batch))
    classes = loaders.class_names(load_config("params.yaml"), "cifar10")
    expected = {name: (classes[int(row.argmax())], round(float(row.max()), 4))
                for name, row in zip(("good.jpg", "good2.png"), probabilities)}
    for name, (cls, probability) in expected.items():
        assert by_uri[name][0] == cls == by_name[name][0]
        assert by_uri[name][1] == pytest.approx(probability, abs=1e-4)
        assert by_name[name][1] == pytest.approx(probability, abs=1e-4)


@pytest.mark.parametrize("reference", ["no_such_model", "runs:/0123456789abcdef0123456789abcdef/model",
                                       "models:/nobody/1"])
def test_unknown_model_is_one_error_line(trained, capsys, reference):
    code = main(["predict", "--model", reference, *files(trained, "good.jpg")])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    errors = err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and reference in errors[0]
