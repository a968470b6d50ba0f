"""Per-epoch training time of `python -m pipeline train`, this code against a git revision, in one run.

Usage, from the repository root (the real images must be in ../shared/data):

    python benchmarks/training_speed.py --against REV [--models cifar10_naive cats_dogs_naive ...]
        [--repeats 3] [--isa AVX2] [--scale 1] [--out benchmarks/results/speed.json]

For each model and each side (the working tree, and REV checked out in a temporary worktree)
`python -m pipeline train <model>` runs as a user runs it, on the same split of real images
(7500 CIFAR-10 and 700 cats/dogs training images, `--scale` times that if given, and 1000 and
150 validation images), with the
model's default params but for its epochs: for 1 epoch and for 3, `--repeats` times each (3 by
default; the fastest counts, as with timeit: a loaded host only ever slows a run down). The
per-epoch time is (wall of 3 epochs - wall of 1 epoch) / 2, so start-up, tracing, the cache fill
and the final model logging fall out; augmentation, the validation pass and per-epoch logging
stay in. The sides alternate (REV 1, HEAD 1, HEAD 3, REV 3, then the mirror order) so both see
the same load.

Printed per model: training images/s on each side, the speed-up, and the arithmetic rate (3x
the forward FLOPs counted from the layers, per image) against this machine's float32
matrix-multiply rate, measured in the same run, and what the working tree computes in (its
`precision` resolved on this CPU: bfloat16 where the CPU has it, so the share can pass 100 %).
`--isa AVX2` sets ONEDNN_MAX_CPU_ISA=AVX2 for every training: the kernels an AVX2-only CPU runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402

from pipeline.hardware import machine  # noqa: E402
from real_split import CLASSES, write_split  # noqa: E402
from tests.fixtures import set_params  # noqa: E402

# Both sides see the same load: each repeat alternates them, and the next repeat mirrors the order.
ORDERS = [(("against", 1), ("head", 1), ("head", 3), ("against", 3)),
          (("head", 1), ("against", 1), ("against", 3), ("head", 3))]
PER_CLASS = {"cats_dogs": {"train": 350, "val": 75, "test": 2}, "cifar10": {"train": 750, "val": 100, "test": 2}}


def make_split(data_root: Path, scale: int, seed: int = 0) -> None:
    """data_root/split/<task>: the same real images for both sides, `scale` times PER_CLASS's training images."""
    rng = np.random.default_rng(seed)
    for task, per_class in PER_CLASS.items():
        write_split(data_root / "split" / task, task, {**per_class, "train": scale * per_class["train"]}, rng)


def checkout(revision: str, folder: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(folder), revision], cwd=ROOT, check=True)
    return folder


def train_seconds(code: Path, workdir: Path, data_root: Path, model: str, epochs: int, env: dict) -> float:
    """Wall seconds of `python -m pipeline train <model>` with `epochs` epochs, run from `code`."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    shutil.copyfile(code / "params.yaml", workdir / "params.yaml")
    set_params(workdir / "params.yaml", **{"data.root": str(data_root), "data.mirror": None,
                                           f"train.{model}.epochs": epochs})
    environment = {**env, "PYTHONPATH": str(code), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipeline", "train", model], cwd=workdir, env=environment,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{code}: train {model} failed:\n{result.stderr[-2000:]}")
    return seconds


def forward_flops(model: str) -> float:
    """Multiply-adds x 2 of one image's forward pass, counted from the convolution and dense layers."""
    import keras

    from pipeline.config import load_config
    from pipeline.models import build_model

    network = build_model(model, load_config(ROOT / "params.yaml").model(model))
    flops = 0.0
    for layer in network._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            height, width, channels = layer.output.shape[1:]
            flops += 2 * np.prod(layer.kernel_size) * layer.input.shape[-1] * channels * height * width
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return flops


def dtype_policy(model: str) -> str:
    """What the working tree's training computes in here (its `precision`, resolved on this CPU)."""
    from pipeline.config import load_config
    from pipeline.models import compute_policy

    return compute_policy(model, load_config(ROOT / "params.yaml").model(model))


def matmul_rate(size: int = 2048, repeats: int = 20) -> float:
    """float32 matrix-multiply FLOP/s of this machine, as TensorFlow runs it."""
    import tensorflow as tf

    a = tf.random.stateless_uniform((size, size), (1, 2))
    b = tf.random.stateless_uniform((size, size), (3, 4))
    multiply = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
    multiply(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        multiply(a, b).numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the git revision to compare with")
    parser.add_argument("--models", nargs="+", default=["cifar10_naive", "cats_dogs_naive"])
    parser.add_argument("--repeats", type=int, default=3, help="trainings per side and length; the fastest counts")
    parser.add_argument("--isa", choices=["AVX2"], help="run the trainings on AVX2 kernels only")
    parser.add_argument("--scale", type=int, default=1,
                        help="train on this many times 7500 CIFAR-10 and 700 cats/dogs images: longer epochs, "
                             "which a loaded host's start-up times blur less")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PIPELINE_DATA_MIRROR", None)
    if args.isa:
        env["ONEDNN_MAX_CPU_ISA"] = args.isa
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.isa  # the matmul rate below too

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a stopped run still removes its worktree
    rate = matmul_rate()
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed-") as scratch:
        scratch = Path(scratch)
        make_split(scratch / "data", args.scale)
        sides = {"against": checkout(args.against, scratch / "against"), "head": ROOT}
        try:
            for model in args.models:
                task = "cifar10" if model.startswith("cifar10") else "cats_dogs"
                images = args.scale * PER_CLASS[task]["train"] * len(CLASSES[task])
                walls = {}
                for repeat in range(args.repeats):
                    for side, epochs in ORDERS[repeat % 2]:
                        seconds = train_seconds(sides[side], scratch / "work" / side, scratch / "data",
                                                model, epochs, env)
                        walls.setdefault((side, epochs), []).append(seconds)
                        print(f"{model} {side} {epochs} epoch(s): {seconds:.1f} s", flush=True)
                walls = {cell: min(seconds) for cell, seconds in walls.items()}
                per_epoch = {side: (walls[side, 3] - walls[side, 1]) / 2 for side in sides}
                flops = 3 * forward_flops(model)
                rows.append({"model": model, "train_images": images, "per_epoch_s": per_epoch,
                             "dtype_policy_now": dtype_policy(model),
                             "images_per_s": {side: images / s for side, s in per_epoch.items()},
                             "speed_up": per_epoch["against"] / per_epoch["head"],
                             "training_flops_per_image": flops,
                             "matmul_share": {side: images / s * flops / rate for side, s in per_epoch.items()},
                             "fastest_walls_s": {f"{side}-{epochs}": wall for (side, epochs), wall in walls.items()}})
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(sides["against"])], cwd=ROOT)

    print(f"\nfloat32 matmul: {rate / 1e9:.1f} GFLOP/s; against {args.against}"
          + (f"; ONEDNN_MAX_CPU_ISA={args.isa}" if args.isa else ""))
    print("| model | images/s before | images/s now | speed-up | % of matmul rate before | now | now computes in |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| `{row['model']}` | {row['images_per_s']['against']:.0f} | {row['images_per_s']['head']:.0f} | "
              f"{row['speed_up']:.2f}x | {100 * row['matmul_share']['against']:.1f} % | "
              f"{100 * row['matmul_share']['head']:.1f} % | {row['dtype_policy_now']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"against": args.against, "isa": args.isa, "matmul_flops_per_s": rate,
                                    "machine": machine(), "python": platform.python_version(),
                                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
