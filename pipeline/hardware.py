"""The machine a run's numbers came from: oneDNN picks its kernels by CPU, so the digits follow it."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU, cores, GPUs and TensorFlow version, as training summaries record them."""
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "gpus": gpus, "tensorflow": tf.__version__}
