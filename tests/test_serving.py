"""The registered photo classifier: what training and evaluation record in the registry, and a
real `mlflow models serve` process answering a plain HTTP client."""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import tensorflow as tf

from pipeline import evaluate, paths, serving, tracking, train
from pipeline.data.split import split_checksum
from pipeline.config import load_config
from pipeline.data import loaders
from tests.conftest import ROOT, enter_project
from tests.fixtures import jpeg_bytes, make_cats_dogs_split, set_params

NAME, SEED = "cats_dogs_naive", 42  # the default seed: its training registers the model
CLASSES = ["cats", "dogs"]
TINY_SPLIT = {"train": 4, "val": 2, "test": 3}
# The network alone answers (the default recipe's mirror averaging is tested on its own, below).
TINY_PARAMS = {f"train.{NAME}.epochs": 1, f"train.{NAME}.batch_size": 4, f"train.{NAME}.image_size": 48,
               f"train.{NAME}.mirror_average": False}
SERVER_START_S = 240


def tiny_cats_dogs(root, **params):
    """A project folder with a tiny cats/dogs split and params for a one-epoch cats_dogs_naive."""
    make_cats_dogs_split(root / "data" / "split" / "cats_dogs", TINY_SPLIT)
    set_params(root / "params.yaml", **{**TINY_PARAMS, **params})


def train_and_evaluate(root):
    """Train and evaluate under the default seed (the one that registers); its run's id."""
    config = load_config(root / "params.yaml")
    train.run(config, NAME, config.seed)
    evaluate.run(config, NAME, config.seed)
    return paths.run_id_file(NAME, config.seed).read_text().strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """One tiny cats_dogs_naive trained and evaluated in its own project: version 1, the champion."""
    root = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as patch:
        enter_project(root, patch)
        patch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # a tiny training lasts seconds, not 10
        tiny_cats_dogs(root)
        train_and_evaluate(root)
        yield root


@pytest.fixture(autouse=True)
def same_store():
    """MLflow's client keeps the last URI set in this process: use the one the environment names."""
    if "MLFLOW_TRACKING_URI" in os.environ:  # a test of its own project sets it when it enters
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


def champion_network():
    """The Keras network inside the champion, loaded on its own."""
    folder = mlflow.artifacts.download_artifacts(f"models:/{NAME}@{tracking.CHAMPION}")
    (network,) = Path(folder, "artifacts").glob("*.keras")  # the model file of the training that registered it
    return keras.saving.load_model(network)


def served_probabilities(prediction: dict) -> np.ndarray:
    """One served answer's probabilities, in the order of CLASSES."""
    return np.array([prediction["probabilities"][c] for c in CLASSES])


def expected_probabilities(network, photos: list[bytes]) -> np.ndarray:
    """What the network says about the photos, decoded as every stage decodes images."""
    size = network.input_shape[1]
    images = np.stack([loaders.decode_bytes(tf.constant(photo), size).numpy() for photo in photos])
    sigmoid = network.predict(images, verbose=0)
    return np.hstack([1 - sigmoid, sigmoid])


def request(photos: list[bytes]) -> dict:
    """The JSON MLflow's scoring protocol takes: binary columns travel as base64."""
    return {"dataframe_records": [{serving.IMAGE_COLUMN: base64.b64encode(photo).decode()} for photo in photos]}


@pytest.fixture
def server(registered):
    """`mlflow models serve` on the champion, on 127.0.0.1, from a folder outside the repository."""
    port = free_port()
    elsewhere = registered / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    log = open(registered / "serve.log", "w")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@{tracking.CHAMPION}",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=elsewhere, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/ping", process, registered / "serve.log")
        yield url
    finally:
        stop(process)
        log.close()


def wait_until_up(url: str, process: subprocess.Popen, log, timeout_s: float = SERVER_START_S) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the server did not start:\n{log.read_text()[-3000:]}"
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting up
            pass
        time.sleep(1)


def stop(process: subprocess.Popen) -> None:
    """End a server started in its own session, with the workers it forked."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_training_registers_a_version_and_evaluation_makes_it_champion(registered):
    client = mlflow.MlflowClient()
    run_id = paths.run_id_file(NAME, SEED).read_text().strip()
    version = client.get_model_version_by_alias(NAME, tracking.CHAMPION)
    assert str(version.version) == "1" and version.run_id == run_id
    assert version.tags["run_id"] == run_id
    assert version.tags["split_sha256"] == split_checksum("cats_dogs")
    test_accuracy = json.loads(paths.eval_metrics(NAME, SEED).read_text())["test_accuracy"]
    assert float(version.tags["test_accuracy"]) == pytest.approx(test_accuracy, abs=1e-6)

    # The registered model is the photo classifier, the one model its run logs.
    folder = mlflow.artifacts.download_artifacts(f"models:/{NAME}/1")
    assert [p.name for p in Path(folder, "artifacts").glob("*.keras")] == [f"{NAME}-42.keras"]
    info = mlflow.models.get_model_info(f"models:/{NAME}/1")
    assert "keras" not in info.flavors and info.signature.inputs.input_types() == [mlflow.types.DataType.binary]
    assert mlflow.models.get_model_info(f"runs:/{run_id}/classifier").model_uuid == info.model_uuid

    run = client.get_run(run_id)
    inputs = {(d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context"), d.dataset.digest)
              for d in run.inputs.dataset_inputs}
    digest = split_checksum("cats_dogs")[:tracking.MAX_DIGEST]
    assert inputs == {("cats_dogs/train", "training", digest), ("cats_dogs/val", "validation", digest),
                      ("cats_dogs/test", "test", digest)}
    sources = {d.dataset.name: d.dataset.source for d in run.inputs.dataset_inputs}
    assert (registered / "data" / "split" / "cats_dogs" / "train").as_uri() in sources["cats_dogs/train"]
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


# Keras itself imports matplotlib.pyplot (keras.src.visualization) with TensorFlow: what counts is
# what the served model loads beyond that.
SERVED_MODEL_IMPORTS = """
import json, sys
import tensorflow
heavy = ("pipeline.train", "pipeline.evaluate", "pipeline.search", "pipeline.visualize", "matplotlib")
before = {m for m in sys.modules if m.startswith(heavy)}
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
answer = model.predict(pd.DataFrame({"image": [open(sys.argv[2], "rb").read()]}))
print(json.dumps({"label": answer["label"][0], "pipeline": sys.modules["pipeline"].__file__,
                  "loaded": sorted(m for m in sys.modules if m.startswith(heavy) and m not in before)}))
"""


def test_the_served_model_loads_neither_training_evaluation_nor_matplotlib(registered, tmp_path):
    """What `mlflow models serve` runs: the registered classifier loaded from its own copy of the code."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes(5, (80, 60)))
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", SERVED_MODEL_IMPORTS, f"models:/{NAME}@{tracking.CHAMPION}",
                             str(photo)], cwd=registered, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["label"] in CLASSES
    assert not answer["pipeline"].startswith(str(ROOT))  # the model's own copy of the package
    assert answer["loaded"] == []


def test_the_alias_follows_the_better_validation_accuracy(registered):
    client = mlflow.MlflowClient()
    first = float(client.get_model_version(NAME, "1").tags["val_accuracy"])
    # Another default seed, another network: version 2, whose val accuracy decides where the alias goes.
    set_params(registered / "params.yaml", seeds=[7, SEED])
    second_run = train_and_evaluate(registered)
    versions = sorted(client.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))
    assert [str(v.version) for v in versions] == ["1", "2"] and versions[1].run_id == second_run
    assert all("test_accuracy" in v.tags for v in versions)  # kept for reporting
    second = float(versions[1].tags["val_accuracy"])
    expected = "2" if second > first else "1"
    assert str(client.get_model_version_by_alias(NAME, tracking.CHAMPION).version) == expected


def register_scored(name: str, val_accuracy: float, test_accuracy: float, split: str = "split-a") -> tuple[str, str]:
    """A real version in a real registry, trained on `split`, scored as evaluate scores it;
    its run id and the champion's version after the scoring."""
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        pass
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/classifier", run_id=run.info.run_id,
                                          tags={"split_sha256": split})
    champion = tracking.record_scores(name, run.info.run_id, val_accuracy, test_accuracy)
    assert version.version and champion == str(client.get_model_version_by_alias(name, tracking.CHAMPION).version)
    return run.info.run_id, champion


def test_the_champion_is_chosen_on_validation_never_on_test(project):
    tracking.use_experiment("rule")
    mlflow.MlflowClient().create_registered_model("rule")
    register_scored("rule", val_accuracy=0.80, test_accuracy=0.70)
    _, champion = register_scored("rule", val_accuracy=0.75, test_accuracy=0.90)  # better test, worse val
    assert champion == "1"
    tags = mlflow.MlflowClient().get_model_version("rule", "2").tags
    assert (tags["val_accuracy"], tags["test_accuracy"]) == ("0.750000", "0.900000")


def test_a_worse_new_version_does_not_take_the_alias(project):
    """The rule itself, on real versions in a real registry: better moves it, worse or equal does not."""
    tracking.use_experiment("rule")
    mlflow.MlflowClient().create_registered_model("rule")
    runs, champions = zip(*(register_scored("rule", accuracy, 0.5) for accuracy in (0.6, 0.5, 0.6, 0.8)))
    assert champions == ("1", "1", "1", "4")
    # Re-evaluating the champion lower hands the alias back to the best of the others, the older on a tie.
    assert tracking.record_scores("rule", runs[3], 0.4, 0.5) == "1"


def test_versions_on_another_split_are_not_weighed(project):
    """A subset-profile version and a full-size one are never compared: the champion is the best
    of the versions trained on the split just evaluated."""
    tracking.use_experiment("rule")
    mlflow.MlflowClient().create_registered_model("rule")
    register_scored("rule", 0.95, 0.95, split="subset")  # a tiny split scores high by luck
    _, champion = register_scored("rule", 0.85, 0.84, split="full")
    assert champion == "2"
    _, champion = register_scored("rule", 0.80, 0.83, split="full")
    assert champion == "2"


@pytest.mark.slow
def test_server_classifies_photos_and_survives_a_corrupt_one(registered, server):
    photos = [jpeg_bytes(seed, size) for seed, size in ((11, (64, 48)), (12, (200, 150)), (13, (31, 90)))]
    response = requests.post(f"{server}/invocations", json=request(photos), timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = expected_probabilities(champion_network(), photos)
    assert len(predictions) == 3
    for prediction, row in zip(predictions, expected):
        assert list(prediction["probabilities"]) == CLASSES
        served = served_probabilities(prediction)
        assert served.sum() == pytest.approx(1, abs=1e-5)
        np.testing.assert_allclose(served, row, atol=1e-5)
        assert prediction["label"] == CLASSES[int(row.argmax())]

    corrupt = photos[0][: len(photos[0]) // 2]  # a JPEG cut short
    response = requests.post(f"{server}/invocations", json=request([corrupt]), timeout=60)
    assert response.status_code == 400
    error = response.json()
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "row 0 of column 'image' is not a readable JPEG, PNG, BMP or GIF image" in error["message"]

    # Still up, and still right.
    assert requests.get(f"{server}/ping", timeout=10).status_code == 200
    again = requests.post(f"{server}/invocations", json=request(photos[1:2]), timeout=60)
    assert again.status_code == 200
    (alone,) = again.json()["predictions"]
    assert alone["label"] == predictions[1]["label"]
    # oneDNN picks its kernels by batch size (AMX does), so a photo sent alone may differ in the last bits.
    np.testing.assert_allclose(served_probabilities(alone), served_probabilities(predictions[1]), atol=1e-6)


def test_the_mirror_average_is_scored_predicted_and_served_alike(project):
    """With `mirror_average`, evaluation, `predict` (by name and by the registered classifier)
    and the served pyfunc all answer the mean over each photo and its mirror image."""
    from pipeline import predict

    tiny_cats_dogs(project, **{f"train.{NAME}.mirror_average": True})
    train_and_evaluate(project)
    config = load_config(project / "params.yaml")
    files = sorted((project / "data" / "split" / "cats_dogs" / "test").rglob("*.jpg"))
    network = keras.saving.load_model(paths.model_file(NAME, SEED))
    images = np.stack([loaders.decode_bytes(tf.constant(path.read_bytes()), 48).numpy() for path in files])
    plain = network.predict(images, verbose=0)[:, 0]
    averaged = (plain + network.predict(images[:, :, ::-1], verbose=0)[:, 0]) / 2
    assert not np.allclose(plain, averaged, atol=1e-4)  # the mirror changes this network's answer

    for reference in (NAME, f"models:/{NAME}@{tracking.CHAMPION}"):
        network_used, classes, mirror_average = predict.load_model(config, reference)
        assert mirror_average
        answers = predict.classify(network_used, classes, files, mirror_average)
        np.testing.assert_allclose(answers["p_dogs"], averaged, atol=1e-5)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@{tracking.CHAMPION}").predict(
        pd.DataFrame({serving.IMAGE_COLUMN: [path.read_bytes() for path in files]}))
    np.testing.assert_allclose([p["dogs"] for p in served["probabilities"]], averaged, atol=1e-5)

    labels = np.array([CLASSES.index(path.parent.name) for path in files])
    scored = json.loads(paths.test_summary(NAME, SEED).read_text())["test_accuracy"]
    assert scored == pytest.approx(float(np.mean((averaged > 0.5) == labels)))
