"""What pruning saves: the same search of cifar10_naive with and without a pruner.

Both searches use the same model, data subset, seed and number of trials; the table compares
the epochs trained in total and the best validation accuracy found. The target: pruning trains
at most half the epochs for the same best value, within one point.

By default each pruned search tries the very configurations the unpruned one drew, in the same
order, so the two differ only in what the pruner stops, not in the sampler's luck (TPE draws
other points once some trials are pruned). `--independent` lets each search's own TPE sampler
draw, as `python -m pipeline search <model>` does.

    python benchmarks/pruning.py                      # params' search: 20 trials, epochs 2..30
    python benchmarks/pruning.py --seeds 1 2 42 --pruners none median percentile
    python benchmarks/pruning.py --trials 6 --train-per-class 30 --epochs 2 4 --pruners none median  # quick
    python benchmarks/pruning.py --recorded benchmarks/results/pruning.json --pruners percentile  # no training

The images come from a folder of CIFAR-10 JPEGs laid out as <split>/<class>/*.jpg (by default
../shared/data/cifar10/jpg beside the project), or from the project's data/split/cifar10.
Writes benchmarks/results/pruning.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "cifar10_naive"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEFAULT_JPEGS = ROOT.parent / "shared" / "data" / "cifar10" / "jpg"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "pruning.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, help="trials per search (default: search.n_trials of params.yaml)")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=100,
                        help="validation images per class: enough that one point is more than noise")
    parser.add_argument("--epochs", type=int, nargs=2, metavar=("LOW", "HIGH"),
                        help="the searched range of epochs (default: search.epochs of params.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="one comparison per seed, for the sampler and the training (default: params.yaml's)")
    parser.add_argument("--pruners", nargs="+", default=["none", "median", "percentile", "hyperband"],
                        choices=["none", "median", "percentile", "hyperband"])
    parser.add_argument("--independent", action="store_true",
                        help="let each search's sampler draw its own trials instead of replaying the unpruned ones")
    parser.add_argument("--jpegs", type=Path, default=DEFAULT_JPEGS, help="CIFAR-10 JPEGs: <split>/<class>/*.jpg")
    parser.add_argument("--recorded", type=Path, metavar="JSON",
                        help="judge the unpruned searches recorded in an earlier pruning.json with --pruners, "
                             "without training (default --out: <JSON>-rejudged.json)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.out is None:
        args.out = args.recorded.with_name(f"{args.recorded.stem}-rejudged.json") if args.recorded else DEFAULT_OUT
    return args


def from_jpegs(folder: Path, per_class: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The first images of each class of the JPEG folder's train split, cut into train and val."""
    splits = {name: ([], []) for name in per_class}
    for label, name in enumerate(CLASSES):
        files = iter(sorted((folder / "train" / name).glob("*.jpg")))
        for split, count in per_class.items():
            for path in [next(files) for _ in range(count)]:
                splits[split][0].append(np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8))
                splits[split][1].append(label)
    return {split: (np.stack(images), np.asarray(labels, dtype=np.int64)) for split, (images, labels) in splits.items()}


def from_project_split(folder: Path, per_class: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The first images of each class of an existing split (train and val .npz)."""
    splits = {}
    for split, count in per_class.items():
        with np.load(folder / f"{split}.npz") as arrays:
            images, labels = arrays["images"], arrays["labels"]
        keep = np.concatenate([np.flatnonzero(labels == label)[:count] for label in range(len(CLASSES))])
        splits[split] = (images[keep], labels[keep])
    return splits


def write_split(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """The split stage's format: <split>.npz with uint8 images and int64 labels, and classes.json."""
    folder = root / "split" / "cifar10"
    folder.mkdir(parents=True)
    for split, (images, labels) in {**splits, "test": splits["val"]}.items():
        np.savez(folder / f"{split}.npz", images=images, labels=labels)
    (folder / "classes.json").write_text(json.dumps(CLASSES))


def search_config(config, data_root: Path, pruner: str, seed: int, args: argparse.Namespace):
    """params.yaml's config with the benchmark's data, search size and pruner. The search's first
    trial is the model's params.yaml values: their epochs are kept inside the benchmark's range."""
    from pipeline.config import Range

    space = config.search.model_copy(update={
        "pruner": pruner, "n_trials": args.trials, "timeout_s": None,
        "storage": f"sqlite:///{data_root.parent / f'optuna-{pruner}.db'}",
        "epochs": Range(low=args.epochs[0], high=args.epochs[1]),
    })
    data = config.data.model_copy(update={"root": data_root, "subset_per_class": None})
    params = config.model(MODEL)
    model = params.model_copy(update={"epochs": min(max(params.epochs, args.epochs[0]), args.epochs[1])})
    train = config.train.model_copy(update={MODEL: model})
    return config.model_copy(update={"data": data, "search": space, "seeds": [seed], "train": train})


def replay(config, trials: list[dict]) -> None:
    """Queue the given configurations, in order, in the search's (new) study."""
    import optuna

    from pipeline import search

    study = optuna.create_study(study_name=search.study_name(config, MODEL), storage=config.search.storage,
                                direction="maximize")
    for params in trials:
        study.enqueue_trial(params)


def run_search(config, pruner: str, trials: list[dict] | None = None) -> dict:
    import optuna

    from pipeline import search

    if trials:
        replay(config, trials)
    started = time.perf_counter()
    search.run(config, MODEL)
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name=search.study_name(config, MODEL), storage=config.search.storage)
    return {**summarise(study, pruner), "wall_time_s": round(seconds, 1),
            "val_accuracy_per_epoch": [[round(value, 4) for value in curve] for curve in trial_curves(study)]}


def trial_curves(study) -> list[list[float]]:
    """Each trial's val accuracy epoch by epoch, from its MLflow run (the pruner sees only tenths)."""
    import mlflow

    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.study = '{study.study_name}'",
                              output_format="list")
    curves = {int(run.data.tags["trial"]): [m.value for m in sorted(
        client.get_metric_history(run.info.run_id, "val_accuracy"), key=lambda m: m.step)]
        for run in runs if "trial" in run.data.tags}
    return [curves.get(trial.number, []) for trial in study.trials]


def summarise(study, pruner: str) -> dict:
    """A search's figures: epochs trained, best value, trials."""
    from pipeline import search

    epochs_per_trial = [trial.user_attrs.get("epochs_trained", 0) for trial in study.trials]
    return {
        "pruner": pruner,
        "epochs_trained": sum(epochs_per_trial),
        "best_val_accuracy": study.best_value,
        "best_trial": study.best_trial.number,
        "trials": search.counts(study),
        "trial_params": [trial.params for trial in study.trials],
        "epochs_per_trial": epochs_per_trial,
    }


def prune_recorded(config, pruner: str, unpruned: dict) -> dict:
    """What the pruner would have stopped in a recorded unpruned search. Training is
    deterministic, so a pruned trial is exactly the first epochs of its unpruned run: feeding
    the recorded curves to the pruner, epoch by epoch, gives the pruned search's figures."""
    import optuna
    from optuna.trial import TrialState

    from pipeline import search

    # The search's own study name: Hyperband assigns its brackets from it.
    study = optuna.create_study(study_name=search.study_name(config, MODEL), direction="maximize",
                                pruner=search.make_pruner(config, MODEL))
    for params, curve in zip(unpruned["trial_params"], unpruned["val_accuracy_per_epoch"]):
        study.enqueue_trial(params)
        trial = study.ask()
        search.suggest(trial, search.search_space(config, MODEL))
        reporter = search.ReportToTrial(trial, total_epochs=len(curve))  # judged as the search judges
        pruned = False
        try:
            for epoch, value in enumerate(curve):
                reporter.on_epoch_end(epoch, {search.MONITOR: value})
        except optuna.TrialPruned:
            pruned = True
        trial.set_user_attr("epochs_trained", reporter.epochs)
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, curve[-1])  # a trial's value is its last epoch's
    return {**summarise(study, pruner), "wall_time_s": None, "recorded": True}


def rejudge(config, args: argparse.Namespace) -> None:
    """--recorded: each recorded seed's unpruned search, judged by each of --pruners."""
    report = json.loads(args.recorded.read_text())
    args.epochs, args.trials = report["epochs_range"], report["trials"]
    if "runs" not in report:  # written before --seeds: one seed
        report["runs"] = [{"seed": report.pop("seed"), "results": report.pop("results")}]
    for run in report["runs"]:
        unpruned = next(row for row in run["results"] if row["pruner"] == "none")
        run["results"] = [unpruned] + [
            prune_recorded(search_config(config, config.data.root, pruner, run["seed"], args), pruner, unpruned)
            for pruner in args.pruners if pruner != "none"]
        print_table(run["seed"], run["results"])
        run["against_no_pruning"] = compare(run["results"])
    report["rejudged_from"] = str(args.recorded)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


def print_table(seed: int, results: list[dict]) -> None:
    print(f"\nseed {seed}")
    print(f"{'pruner':<10} {'epochs':>7} {'best val_accuracy':>18} {'complete':>9} {'pruned':>7} {'time (s)':>9}")
    for row in results:
        print(f"{row['pruner']:<10} {row['epochs_trained']:>7} {row['best_val_accuracy']:>18.4f} "
              f"{row['trials']['complete']:>9} {row['trials']['pruned']:>7} {row['wall_time_s'] or '-':>9}")


def compare(results: list[dict]) -> dict:
    """Each pruner against no pruning: the share of epochs it trained and the change in best value."""
    baseline = next((row for row in results if row["pruner"] == "none"), None)
    if baseline is None:
        return {}
    summary = {}
    for row in results:
        if row is baseline:
            continue
        share = row["epochs_trained"] / baseline["epochs_trained"]
        change = round(100 * (row["best_val_accuracy"] - baseline["best_val_accuracy"]), 2) + 0.0  # no "-0.0"
        summary[row["pruner"]] = {"epoch_share": round(share, 3), "best_change_points": change,
                                  "target_met": share <= 0.5 and change >= -1.0}
        print(f"{row['pruner']}: {share:.0%} of the epochs, best value {change:+.1f} points "
              f"({'meets' if summary[row['pruner']]['target_met'] else 'misses'} the target: <= 50%, >= -1 point)")
    return summary


def compare_pruners(config, data_root: Path, seed: int, args: argparse.Namespace) -> list[dict]:
    """The unpruned search, then one search per pruner (replaying its trials unless --independent)."""
    results = []
    for pruner in sorted(args.pruners, key=lambda name: name != "none"):  # the unpruned search first
        baseline = next((row for row in results if row["pruner"] == "none"), None)
        trials = None if args.independent or baseline is None else baseline["trial_params"]
        results.append(run_search(search_config(config, data_root, pruner, seed, args), pruner, trials))
    return results


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipeline.config import load_config

    config = load_config(ROOT / "params.yaml")
    if args.recorded:
        return rejudge(config, args)
    args.seeds = args.seeds or [config.seed]
    args.trials = args.trials or config.search.n_trials
    args.epochs = args.epochs or (int(config.search.epochs.low), int(config.search.epochs.high))
    per_class = {"train": args.train_per_class, "val": args.val_per_class}
    project_split = ROOT / config.data.root / "split" / "cifar10"
    with tempfile.TemporaryDirectory(prefix="pruning-benchmark-") as scratch:
        scratch = Path(scratch)
        splits = from_jpegs(args.jpegs, per_class) if args.jpegs.is_dir() else from_project_split(project_split,
                                                                                                   per_class)
        write_split(scratch / "data", splits)
        # The searches run inside the scratch folder: their searches/ file and MLflow store stay there.
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
        os.environ.pop("OPTUNA_STORAGE", None)
        os.environ.pop("SEARCH_N_TRIALS", None)
        os.chdir(scratch)
        runs = [{"seed": seed, "results": compare_pruners(config, scratch / "data", seed, args)} for seed in args.seeds]
        os.chdir(ROOT)

    for run in runs:
        print_table(run["seed"], run["results"])
        run["against_no_pruning"] = compare(run["results"])
    report = {"model": MODEL, "seeds": args.seeds, "trials": args.trials, "train_per_class": args.train_per_class,
              "val_per_class": args.val_per_class, "epochs_range": list(args.epochs),
              "same_trials": not args.independent,
              "learning_rate_range": [config.search.learning_rate.low, config.search.learning_rate.high],
              "batch_sizes": config.search.batch_size, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
