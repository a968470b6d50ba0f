"""One CLI for every stage: python -m pipeline STAGE [ARGS]. Run with --help for the list.

It works in the project's folder, the one holding the params file (--params, else params.yaml
here or in the nearest folder above): the paths in params.yaml are taken from there, wherever
the command is started. Paths given on the command line are taken from where it is started.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from pipeline.config import PARAMS_FILE, load_config
from pipeline.errors import DISK_ERRORS, PipelineError, cannot_write
from pipeline.registry import REGISTRY, SOURCES, TASKS

MODELS = tuple(REGISTRY)

# stage name -> (module holding run(config, ...), help, positional argument and its choices)
STAGES = {
    "download": ("pipeline.data.download", "fetch, verify and unpack one upstream source", "source", SOURCES),
    "split": ("pipeline.data.split", "sample and split one task's images into train/val/test", "task", TASKS),
    "train": ("pipeline.train", "train one model under one seed and log it to MLflow", "model", MODELS),
    "evaluate": ("pipeline.evaluate", "test-set metrics and confusion matrix of one training", "model", MODELS),
    "visualize": ("pipeline.visualize", "activations, filter patterns, Grad-CAM and curves", "model", MODELS),
    "search": ("pipeline.search", "Optuna search of epochs, learning rate and batch size", "model", MODELS),
    "report": ("pipeline.report", "the results tables and figures, from every run's metrics", None, None),
}
SEEDED = ("train", "evaluate")  # run per model and seed


# Stages that talk to MLflow (predict connects only when given a model URI): a tracking server
# that is down fails them before their work, not after it.
TRACKED = {"train", "evaluate", "visualize", "search"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, help=f"params file; its folder is the project's (default: "
                                                      f"{PARAMS_FILE} here or in the nearest folder above)")
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (_, help_text, argument, choices) in STAGES.items():
        stage = stages.add_parser(name, help=help_text, description=help_text)
        if argument:
            stage.add_argument(argument, choices=choices)
        if name in SEEDED:
            stage.add_argument("seed", type=seed_or_default, nargs="?",
                               help="one of params.yaml's seeds (default, or empty: the first)")
        if name == "search":
            stage.add_argument("--apply", action="store_true",
                               help="write the best epochs, learning rate and batch size into params.yaml")
    predict = stages.add_parser("predict", help="classify image files and folders with a trained model",
                                description="classify image files and folders with a trained model")
    predict.add_argument("--model", required=True,
                         help="a model name or an MLflow model URI (runs:/..., models:/<name>@champion)")
    predict.add_argument("--output", type=Path, metavar="FILE.csv",
                         help="also write each image's label and class probabilities here")
    predict.add_argument("images", nargs="+", type=Path, help="image files, or folders of images")
    return parser


def seed_or_default(text: str) -> int | None:
    """A seed; empty (what `mlflow run -e train` passes without -P seed=...) means the default one."""
    return int(text) if text.strip() else None


def find_params(given: Path | None) -> Path:
    """--params, else params.yaml here or in the nearest folder above, as git and DVC find theirs."""
    if given is not None or PARAMS_FILE.is_file():
        return given or PARAMS_FILE
    above = [folder / PARAMS_FILE for folder in Path.cwd().parents]
    return next((path for path in above if path.is_file()), PARAMS_FILE)  # none: load_config says so


def enter_project(params: Path, args: argparse.Namespace) -> Path:
    """Move into the folder holding `params`; return the params file as seen from there. The
    paths of the command line (images, --output) are the user's: made absolute first."""
    if not params.is_file() or params.parent.resolve() == Path.cwd().resolve():
        return params
    for name in ("images", "output"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(args, name, [path.absolute() for path in value] if isinstance(value, list) else value.absolute())
    params = params.resolve()
    os.chdir(params.parent)
    return params


def run(args: argparse.Namespace) -> int:
    params = enter_project(find_params(args.params), args)
    config = load_config(params)
    seed = config.seed if getattr(args, "seed", None) is None else args.seed
    config.check_seed(seed)  # before anything is opened or written
    import_tensorflow_quietly()
    if args.stage in TRACKED:
        from pipeline.tracking import connect

        connect()
    if args.stage == "predict":
        from pipeline.predict import run as predict

        return predict(config, args.model, args.images, args.output)
    module_name, _, argument, _ = STAGES[args.stage]
    stage = importlib.import_module(module_name)
    arguments = [getattr(args, argument)] if argument else []
    if args.stage in SEEDED:
        arguments.append(seed)
    if args.stage == "search":
        arguments += [args.apply, params]  # --apply writes into the params file the search read
    stage.run(config, *arguments)
    return 0


def import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up lines (CUDA probing, absl) ignore TF_CPP_MIN_LOG_LEVEL:
    hide the stderr file descriptor while it loads, so a stage's own messages stand alone."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] != "3":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a full or read-only disk under a write that is not atomic (a log)
        if error.errno not in DISK_ERRORS:
            raise
        print(f"error: {cannot_write(error.filename or 'output', error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
