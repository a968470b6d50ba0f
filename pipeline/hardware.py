"""The machine a run's numbers came from: oneDNN picks its kernels by CPU, so the digits follow it."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpuinfo_field(name: str) -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    return None


def cpu_name() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def vector_isa() -> str:
    """The widest instruction set oneDNN can use here: one CPU name ('AMD EPYC') covers
    machines with and without AVX-512, whose kernels round differently."""
    flags = set((cpuinfo_field("flags") or "").split())
    for isa, flag in (("AMX", "amx_tile"), ("AVX-512", "avx512f"), ("AVX2", "avx2")):
        if flag in flags:
            return isa
    return "unknown"


def native_bfloat16() -> bool:
    """Whether the CPU computes in bfloat16 itself (AVX512_BF16 or AMX): oneDNN has bfloat16
    kernels only for those, and an AVX2-only CPU cannot run a bfloat16 network at all."""
    flags = set((cpuinfo_field("flags") or "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def machine() -> dict:
    """CPU, its vector instruction set, cores, GPUs and TensorFlow version, as training summaries record them."""
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu_name(), "isa": vector_isa(), "cores": os.cpu_count(), "gpus": gpus,
            "tensorflow": tf.__version__}
