"""Stage visualize@<model>: the figures of the default seed's model, logged into its training run.

reports/figures/<model>/ (DVC's cache) receives: the learning curves, the activations of the first
layers for one test image, filter patterns by gradient ascent, and Grad-CAM heat maps.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import mlflow
from tqdm import tqdm

from pipeline import paths, tracking, trained
from pipeline.config import Config
from pipeline.data import loaders
from pipeline.errors import PipelineError
from pipeline.atomic import replacing_folder
from pipeline.registry import REGISTRY, train_stage
from pipeline.visualize.activations import save_activations
from pipeline.visualize.curves import plot_history
from pipeline.visualize.filters import default_filter_layers, save_filter_patterns
from pipeline.visualize.gradcam import save_gradcam


def require_training(name: str, seed: int) -> None:
    """The model file and its history come from its training; say so if either is missing."""
    for path in (paths.model_file(name, seed), paths.history_file(name, seed)):
        if not path.exists():
            raise PipelineError(f"{path}: not found; run `dvc repro {train_stage(name, seed)}` first")


def draw_filters(config: Config, name: str, model: keras.Model, out_dir: Path) -> dict:
    """filters_<layer>.png per chosen layer; the mean responses before and after the ascent."""
    params = config.visualize
    layer_names = params.filter_layers.get(name) or default_filter_layers(model)
    summary = {}
    for layer_name in tqdm(layer_names, desc=f"{name} filter patterns", unit="layer"):
        patterns = save_filter_patterns(model, layer_name, params.filters_per_layer, params.ascent_steps,
                                        params.ascent_step_size, out_dir, progress=True)
        summary[layer_name] = {"filters": patterns.filters,
                               "mean_before": [round(float(value), 4) for value in patterns.before],
                               "mean_after": [round(float(value), 4) for value in patterns.after]}
    return summary


def draw_figures(config: Config, name: str, model: keras.Model, out_dir: Path) -> None:
    task = REGISTRY[name].task
    images, labels = loaders.load_arrays(config, task, "test", config.model(name).image_size)
    classes = loaders.class_names(config, task)
    plot_history(paths.history_file(name, config.seed), out_dir / "curves.png",
                 title=f"{name} (seed {config.seed}): learning curves")
    save_activations(model, images[0], config.visualize.activation_layers, out_dir,
                     label=f"(test image 0, {classes[labels[0]]})")
    save_gradcam(model, images, labels, classes, config.visualize.gradcam_images_per_class, out_dir)
    summary = draw_filters(config, name, model, out_dir)
    (out_dir / "filters.json").write_text(json.dumps(summary, indent=2) + "\n")


def run(config: Config, name: str) -> None:
    seed = config.seed
    require_training(name, seed)
    tracking.recorded_run_id(name, seed)  # the model and its run must agree before anything is drawn
    model = trained.load_model(name, seed, compile=False)
    target = paths.figures_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with replacing_folder(target) as built:  # a failed run leaves the old set, never half of one
        draw_figures(config, name, model, built)
    with tracking.model_run(name, seed, REGISTRY[name].task, f"visualize@{name}"):
        mlflow.log_artifacts(str(target), "figures")
    print(f"{name}: {len(list(target.glob('*.png')))} figures in {target}")

