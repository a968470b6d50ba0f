"""The whole DAG on a tiny run, stage by stage through the CLI: download -> split -> train ->
evaluate -> visualize -> report, from local copies of the three upstream files."""
import json
import re

import mlflow
import pytest

from pipeline import paths
from pipeline.__main__ import main
from tests.fixtures import digest, make_cifar_tar, make_pet_zip, make_vgg16_standin, set_params

pytestmark = pytest.mark.slow  # every stage of the DAG

# One model per task, and one VGG16 model (on the stand-in weights), each trained one epoch.
MODELS = {
    "cats_dogs_naive": ("cats_dogs", {"image_size": 48, "epochs": 1, "batch_size": 8}),
    "cats_dogs_vgg16_frozen": ("cats_dogs", {"image_size": 32, "epochs": 1, "batch_size": 8}),
    "cifar10_naive": ("cifar10", {"epochs": 1, "batch_size": 16}),
}
ROW = re.compile(r"^\| `(?P<name>\w+)`(?P<note>[^|]*)\| (?P<val_accuracy>[0-9.]+) \| (?P<best>[0-9.]+) \((?P<epoch>\d+)\) "
                 r"\| \*\*(?P<accuracy>[0-9.]+)\*\* \|")


def local_sources(project):
    """The three upstream files, built small, with params pointing at them by path and checksum."""
    folder = project / "upstream"
    folder.mkdir()
    files = {
        "cats_dogs": make_pet_zip(folder / "kagglecatsanddogs_5340.zip", per_class=12),  # with broken files
        "cifar10": make_cifar_tar(folder / "cifar-10-python.tar.gz", train_per_class=10, test_per_class=2),
        "vgg16": make_vgg16_standin(folder / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    }
    params = {}
    for source, path in files.items():
        params |= {f"sources.{source}.url": str(path), f"sources.{source}.checksum": digest(path)}
        if source != "vgg16":
            params[f"sources.{source}.size"] = path.stat().st_size
    return params


def cli(*argv):
    assert main(list(argv)) == 0, f"python -m pipeline {' '.join(argv)} failed"


def test_whole_dag_on_a_tiny_run(project):
    params = local_sources(project)
    params |= {"split.cats_dogs.per_class": 10, "split.cifar10.per_class": 10}
    for name, (_, model_params) in MODELS.items():
        params |= {f"train.{name}.{key}": value for key, value in model_params.items()}
    params |= {"visualize.ascent_steps": 2, "visualize.filters_per_layer": 2, "visualize.activation_layers": 2,
               "visualize.gradcam_images_per_class": 1,
               # two of VGG16's five default layers: the chosen names must be the ones drawn
               "visualize.filter_layers": {"cats_dogs_vgg16_frozen": ["block1_conv1", "block5_conv1"]}}
    set_params(project / "params.yaml", **params)

    for source in ("cats_dogs", "cifar10", "vgg16"):
        cli("download", source)
        assert json.loads((project / "data" / "raw" / source / "SOURCE.json").read_text())["verified"]
    for task in ("cats_dogs", "cifar10"):
        cli("split", task)
    assert json.loads(paths.split_summary("cats_dogs").read_text())["totals"] == {"train": 14, "val": 4, "test": 2}
    assert json.loads(paths.split_summary("cifar10").read_text())["totals"] == {"train": 80, "val": 10, "test": 10}
    for name in MODELS:
        cli("train", name)
        cli("evaluate", name)
        cli("visualize", name)
    cli("report")

    # The results table holds each model's numbers as its metrics files have them.
    results = (project / "reports" / "results.md").read_text()
    rows = {match["name"]: match for match in map(ROW.match, results.splitlines()) if match}
    assert set(rows) == set(MODELS)
    for name in MODELS:
        tested = json.loads(paths.eval_metrics(name).read_text())
        trained = json.loads(paths.train_summary(name).read_text())
        assert float(rows[name]["accuracy"]) == pytest.approx(tested["test_accuracy"], abs=5e-5)
        assert float(rows[name]["val_accuracy"]) == pytest.approx(tested["val_accuracy"], abs=5e-5)
        assert float(rows[name]["best"]) == pytest.approx(trained["best"]["val_accuracy"], abs=5e-5)
        assert int(rows[name]["epoch"]) == trained["best"]["val_accuracy_epoch"]
        assert f"[figures](figures/{name}/)" in rows[name].string
        # a VGG16 row measured with the stand-in weights says so
        assert ("STAND-IN" in rows[name]["note"]) == ("vgg16" in name)
    assert "subset" not in results.split("##")[0] and "seed 42" in results
    for task in ("cats_dogs", "cifar10"):
        assert (project / "reports" / "compare" / f"{task}_curves.png").stat().st_size > 0

    client = mlflow.MlflowClient()
    for name, (task, _) in MODELS.items():
        # Figures on disk: curves, activations, filter patterns, Grad-CAM.
        figures = paths.figures_dir(name)
        pngs = {path.name for path in figures.glob("*.png")}
        assert {"curves.png", "activations_00_input.png", "gradcam.png"} <= pngs
        assert any(png.startswith("activations_01_") for png in pngs)
        assert any(png.startswith("filters_") for png in pngs)

        # The model's one MLflow run holds its training, its test metrics and its figures.
        run_id = paths.run_id_file(name).read_text().strip()
        runs = mlflow.search_runs(experiment_names=[task], filter_string=f"attributes.run_name = '{name}'")
        assert list(runs["run_id"]) == [run_id]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        tested = json.loads(paths.eval_metrics(name).read_text())
        summary = json.loads(paths.test_summary(name).read_text())
        assert run.data.metrics["test_accuracy"] == pytest.approx(tested["test_accuracy"], abs=5e-5)
        assert run.data.metrics["test_loss"] == pytest.approx(tested["test_loss"], abs=5e-5)
        if task == "cats_dogs":  # its test split holds both classes (one image each), so it has an AUC
            assert run.data.metrics["test_roc_auc"] == pytest.approx(summary["test_roc_auc"])
        else:
            assert "test_roc_auc" not in summary
        logged = {artifact.path for artifact in client.list_artifacts(run_id, "figures")}
        assert {f"figures/{png}" for png in pngs} <= logged
        assert f"figures/{name}.png" in logged  # the confusion matrix
        models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                             filter_string=f"source_run_id = '{run_id}'")
        assert sorted(model.name for model in models) == ["classifier", "model"]  # Keras, and the photo classifier
    assert {png.name for png in paths.figures_dir("cats_dogs_vgg16_frozen").glob("filters_*.png")} == \
        {"filters_block1_conv1.png", "filters_block5_conv1.png"}
    assert len(mlflow.search_runs(experiment_names=["cats_dogs"])) == 2
    assert len(mlflow.search_runs(experiment_names=["cifar10"])) == 1
