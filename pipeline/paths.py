"""Where every stage reads and writes: the files DVC tracks, named in one place."""
from pathlib import Path

from pipeline.config import Config

MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
REPORTS_DIR = Path("reports")
SEARCHES_DIR = Path("searches")


def downloads_dir(config: Config) -> Path:
    """Fetched archives, kept out of DVC so an interrupted download can resume."""
    return config.data.root / "downloads"


def raw_dir(config: Config, source: str) -> Path:
    return config.data.root / "raw" / source


def split_dir(config: Config, task: str) -> Path:
    return config.data.root / "split" / task


def split_summary(task: str) -> Path:
    """Counts per class and part, the files left out and the split's sha256 (not a DVC metric)."""
    return REPORTS_DIR / "splits" / f"{task}.json"


def run_key(model: str, seed: int) -> str:
    """One training of one model under one seed, as stage names and file names call it."""
    return f"{model}-{seed}"


def model_file(model: str, seed: int) -> Path:
    return MODELS_DIR / f"{run_key(model, seed)}.keras"


def run_id_file(model: str, seed: int) -> Path:
    """The MLflow run of the training, which evaluate reopens; written with the model, never before it."""
    return MODELS_DIR / f"{run_key(model, seed)}.run_id"


def history_file(model: str, seed: int) -> Path:
    return REPORTS_DIR / "history" / f"{run_key(model, seed)}.csv"


def train_summary(model: str, seed: int) -> Path:
    """What training did: hyperparameters, parameter count, best and final epochs, wall time, machine."""
    return REPORTS_DIR / "training" / f"{run_key(model, seed)}.json"


def eval_metrics(model: str, seed: int) -> Path:
    """The numbers `dvc metrics show` compares: the saved model's val and test accuracy and loss, wall time."""
    return METRICS_DIR / f"{run_key(model, seed)}.json"


def test_summary(model: str, seed: int) -> Path:
    """Per-class precision, recall and F1, ROC-AUC and the test size (not a DVC metric)."""
    return REPORTS_DIR / "test" / f"{run_key(model, seed)}.json"


def confusion_file(model: str, seed: int) -> Path:
    return REPORTS_DIR / "confusion" / f"{run_key(model, seed)}.csv"


def figures_dir(model: str) -> Path:
    """Activations, filter patterns, Grad-CAM and curves of the model of the default seed."""
    return REPORTS_DIR / "figures" / model


def search_result(model: str) -> Path:
    """The best epochs, learning rate and batch size a search found, and the setting it searched under."""
    return SEARCHES_DIR / f"{model}.json"
