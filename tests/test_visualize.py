"""The figures of a trained model, on tiny stand-in models shaped like the real ones."""
import json

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import paths, tracking
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.visualize import activations, curves, filters, gradcam
from tests.fixtures import CIFAR_CLASSES, set_params

SIZE = 32


def flat_model() -> keras.Model:
    """A from-scratch CNN's shape: image -> rescale -> conv/pool/dropout/bn -> softmax."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Dropout(0.3, name="dropout1")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))


def vgg_style_model() -> keras.Model:
    """The VGG16 models' shape: image -> vgg_preprocess -> nested vgg16 -> nested head."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(3, 1, name="vgg_preprocess")(inputs)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    head = keras.Sequential([keras.Input(base.output.shape[1:]), keras.layers.Flatten(),
                             keras.layers.Dense(8, activation="relu"), keras.layers.Dropout(0.5),
                             keras.layers.Dense(1, activation="sigmoid")], name="head")
    return keras.Model(inputs, head(base(x)))


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype("float32")


def assert_png(path):
    assert path.exists(), path
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()


# activations


def test_activation_grid_has_one_tile_per_channel():
    maps = np.random.default_rng(0).normal(size=(7, 5, 11)).astype("float32")
    mosaic, tiles = activations.activation_grid(maps, gap=1)
    rows, columns = activations.grid_shape(11)
    assert tiles == 11
    assert mosaic.shape == (rows * 8 - 1, columns * 6 - 1)
    filled = [not np.isnan(mosaic[r * 8, c * 6]) for r in range(rows) for c in range(columns)]
    assert sum(filled) == 11
    assert np.nanmin(mosaic) >= 0 and np.nanmax(mosaic) <= 1


def test_activations_skip_preprocessing_and_draw_every_channel(tmp_path):
    model = flat_model()
    tiles = activations.save_activations(model, images(1)[0], 4, tmp_path, label="(cat)")
    assert tiles == {"conv1": 8, "pool1": 8, "conv2": 6, "bn1": 6}  # no rescale, no dropout
    for name in ["activations_00_input.png", "activations_01_conv1.png", "activations_04_bn1.png"]:
        assert_png(tmp_path / name)
    assert activations.layer_activations(model, images(1)[0], 1)["conv1"].shape == (30, 30, 8)


def test_activations_go_inside_the_nested_vgg16():
    maps = activations.layer_activations(vgg_style_model(), images(1)[0], 3)
    assert list(maps) == ["block1_conv1", "block1_conv2", "block1_pool"]
    assert maps["block1_pool"].shape == (16, 16, 64)


# filter patterns


def test_gradient_ascent_raises_the_filter_response():
    result = filters.gradient_ascent(flat_model(), "conv2", [0, 1, 2, 3], steps=20, step_size=10.0)
    count, height, width, channels = result.images.shape
    assert (count, channels) == (4, 3) and result.images.dtype == np.uint8
    assert height == width and SIZE // 2 < height <= SIZE  # the unoptimised frame is cropped off
    assert np.all(result.after > 2 * np.abs(result.before)), (result.before, result.after)


def test_gradient_ascent_through_vgg_preprocess_and_the_nested_base(tmp_path):
    model = vgg_style_model()
    assert filters.default_filter_layers(model) == filters.VGG_LAYERS
    result = filters.save_filter_patterns(model, "block2_conv1", 3, steps=60, step_size=10.0, out_dir=tmp_path)
    assert result.filters == [0, 1, 2]
    assert np.all(result.after > 2 * np.abs(result.before)), (result.before, result.after)
    assert_png(tmp_path / "filters_block2_conv1.png")


def test_default_filter_layers_of_a_scratch_model_are_its_convs():
    assert filters.default_filter_layers(flat_model()) == ["conv1", "conv2"]


def test_deprocess_gives_a_displayable_image():
    image = filters.deprocess(np.random.default_rng(0).normal(50, 300, (8, 8, 3)))
    assert image.dtype == np.uint8
    assert 100 < image.mean() < 155  # centred on mid-grey


# Grad-CAM


@pytest.mark.parametrize("make_model, layer", [(flat_model, "conv2"), (vgg_style_model, "block5_conv3")])
def test_gradcam_heatmaps_have_the_image_size_and_peak_at_one(make_model, layer):
    model = make_model()
    assert gradcam.last_conv_layer(model) == layer
    batch = images(3)
    cams = gradcam.gradcam(model, batch)
    assert cams.heatmaps.shape == (3, SIZE, SIZE)
    assert np.all(np.isfinite(cams.heatmaps))
    # each map is scaled to its own peak, not clipped: its brightest point is close to 1 (bilinear
    # upsampling lands between the coarse map's points) and few points reach 1
    assert np.all(cams.heatmaps.max(axis=(1, 2)) > 0.85)
    assert np.all((cams.heatmaps > 0.999).mean(axis=(1, 2)) < 0.25)
    assert np.all((cams.probability >= 0) & (cams.probability <= 1))
    probabilities = model.predict(batch, verbose=0)
    if probabilities.shape[-1] == 1:  # sigmoid: the predicted class and its probability
        expected = (probabilities[:, 0] > 0.5).astype(int)
        np.testing.assert_allclose(cams.probability, np.where(expected, probabilities[:, 0], 1 - probabilities[:, 0]),
                                   rtol=1e-4)
    else:
        expected = probabilities.argmax(axis=1)
        np.testing.assert_allclose(cams.probability, probabilities.max(axis=1), rtol=1e-4)
    np.testing.assert_array_equal(cams.predicted, expected)


def test_gradcam_points_at_the_evidence():
    """A brightness detector that says 'class 1' for bright images looks at the bright square."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    conv = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="conv")
    x = keras.layers.GlobalAveragePooling2D()(conv(x))
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(x))
    conv.set_weights([np.full((3, 3, 3, 1), 1 / 27, "float32"), np.array([-0.3], "float32")])
    dense.set_weights([np.ones((1, 1), "float32"), np.zeros(1, "float32")])
    image = np.zeros((1, SIZE, SIZE, 3), "float32")
    image[:, 4:12, 20:28] = 255.0
    cams = gradcam.gradcam(model, image)
    heat = cams.heatmaps[0]
    assert cams.predicted[0] == 1
    assert heat[5:11, 21:27].min() > 0.5
    assert heat[16:, :].max() < 1e-6 and heat[:, :14].max() < 1e-6


def test_gradcam_figure(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2])
    cams = gradcam.save_gradcam(flat_model(), images(6), labels, ["cat", "dog", "ship"], 1, tmp_path)
    assert len(cams.heatmaps) == 3  # one image of each class
    assert_png(tmp_path / "gradcam.png")


# curves


def history_csv(path, with_phase: bool):
    frame = pd.DataFrame({"epoch": [1, 2, 3, 4], "loss": [0.9, 0.7, 0.5, 0.4], "accuracy": [0.5, 0.6, 0.7, 0.8],
                          "val_loss": [0.95, 0.8, 0.7, 0.65], "val_accuracy": [0.5, 0.55, 0.65, 0.7]})
    if with_phase:
        frame.insert(1, "phase", ["head", "head", "fine_tune", "fine_tune"])
    frame.to_csv(path, index=False)
    return path


def test_learning_curves_png_from_a_history_csv(tmp_path):
    out = curves.plot_history(history_csv(tmp_path / "history.csv", with_phase=True), tmp_path / "curves.png", "m")
    assert_png(out)
    assert curves.phase_starts(pd.read_csv(tmp_path / "history.csv")) == [(2.5, "fine_tune")]
    assert curves.phase_starts(pd.read_csv(history_csv(tmp_path / "plain.csv", with_phase=False))) == []


def test_compare_models_takes_frames_and_dicts(tmp_path):
    frame = pd.read_csv(history_csv(tmp_path / "a.csv", with_phase=False))
    as_dict = {"val_accuracy": [0.4, 0.6], "val_loss": [1.0, 0.8]}
    assert_png(curves.compare_models({"a": frame, "b": as_dict}, tmp_path / "compare.png"))


# the stage

NAME, SEED, OTHER_SEED = "cifar10_naive", 42, 1  # params.yaml's default seed, and a further one


def test_stage_without_a_trained_model_says_what_to_run(project):
    from pipeline.visualize import run

    with pytest.raises(PipelineError, match=r"not found; run `dvc repro train_cifar10@cifar10_naive-42` first"):
        run(load_config(), NAME)


def trained_stand_in(config, seed: int) -> str:
    """An untrained cifar10_naive recorded as a training under `seed` records it (train's own
    writer: model, history, summary and run id, in step); its MLflow run's id."""
    from pipeline import train
    from pipeline.models import build_model
    from pipeline.registry import train_stage

    keras.utils.set_random_seed(seed)
    model = build_model(NAME, config.model(NAME))
    history = pd.read_csv(history_csv(f"history-{seed}.csv", with_phase=False))
    with tracking.training_run(NAME, "cifar10", train_stage(NAME, seed), {"seed": str(seed)}) as training:
        train.write_outputs(NAME, seed, model, history, {"epochs": 4}, training.info.run_id)
    return training.info.run_id


def tiny_visualize_project(project):
    set_params(project / "params.yaml", **{"visualize.activation_layers": 2, "visualize.filters_per_layer": 2,
                                           "visualize.ascent_steps": 2, "visualize.gradcam_images_per_class": 1,
                                           "visualize.filter_layers": {NAME: ["conv1", "conv4"]}})
    config = load_config()
    split = paths.split_dir(config, "cifar10")
    split.mkdir(parents=True)
    np.savez(split / "test.npz", images=images(20).astype("uint8"), labels=np.repeat(np.arange(10), 2))
    (split / "classes.json").write_text(json.dumps(CIFAR_CLASSES))
    paths.history_file(NAME, SEED).parent.mkdir(parents=True)
    return config


def test_stage_writes_the_default_seed_s_figures_and_logs_them_to_its_training_run(project):
    from pipeline.visualize import run

    config = tiny_visualize_project(project)
    default_run, further_run = (trained_stand_in(config, seed) for seed in (SEED, OTHER_SEED))
    stale = paths.figures_dir(NAME) / "stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")

    run(config, NAME)

    figures = paths.figures_dir(NAME)
    assert figures.as_posix() == "reports/figures/cifar10_naive"  # one set per model: the default seed's
    expected = {"curves.png", "gradcam.png", "activations_00_input.png", "activations_01_conv1.png",
                "activations_02_pool1.png", "filters_conv1.png", "filters_conv4.png", "filters.json"}
    assert {path.name for path in figures.iterdir()} == expected
    for name in expected - {"filters.json"}:
        assert_png(figures / name)
    assert list(json.loads((figures / "filters.json").read_text())) == ["conv1", "conv4"]
    assert not list(figures.parent.glob(".cifar10_naive*"))  # no scratch folder left behind
    import mlflow

    client = mlflow.MlflowClient()
    logged = {info.path for info in client.list_artifacts(default_run, "figures")}
    assert "figures/gradcam.png" in logged and "figures/filters_conv4.png" in logged
    assert client.get_run(default_run).data.tags["dvc_stage.visualize"] == f"visualize@{NAME}"
    assert client.list_artifacts(further_run, "figures") == []  # the further seed's run: nothing


def test_stage_refuses_a_model_its_run_does_not_match_before_drawing(project):
    """A model file that is not the recorded training's (a training killed before its run id was
    written): one error, and the figures already there are left as they were."""
    from pipeline.models import build_model
    from pipeline.visualize import run

    config = tiny_visualize_project(project)
    trained_stand_in(config, SEED)
    build_model(NAME, config.model(NAME)).save(paths.model_file(NAME, SEED))  # another model
    old = paths.figures_dir(NAME) / "curves.png"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")
    with pytest.raises(PipelineError, match=r"do not come from the same training .*train_cifar10@cifar10_naive-42"):
        run(config, NAME)
    assert [path.name for path in paths.figures_dir(NAME).iterdir()] == ["curves.png"]
    assert old.read_bytes() == b"old"
