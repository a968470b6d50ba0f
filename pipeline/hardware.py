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


def cpu_flags() -> set[str]:
    return set((cpuinfo_field("flags") or "").split())


def cpu_name() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def vector_isa() -> str:
    """The widest instruction set oneDNN can use here: one CPU name ('AMD EPYC') covers
    machines with and without AVX-512, whose kernels round differently."""
    flags = cpu_flags()
    for isa, flag in (("AMX", "amx_tile"), ("AVX-512", "avx512f"), ("AVX2", "avx2")):
        if flag in flags:
            return isa
    return "unknown"


# ONEDNN_MAX_CPU_ISA caps that leave oneDNN its bfloat16 kernels
BFLOAT16_ISA_CAPS = {"ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                     "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16"}


def native_bfloat16() -> bool:
    """Whether oneDNN computes in bfloat16 here: the CPU must have it (AVX512_BF16 or AMX), and
    ONEDNN_MAX_CPU_ISA must not cap the kernels below it. Without them TensorFlow cannot run a
    bfloat16 network at all."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}) and cap in BFLOAT16_ISA_CAPS


def machine() -> dict:
    """CPU, its vector instruction set, cores, GPUs and TensorFlow version, as training summaries record them."""
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu_name(), "isa": vector_isa(), "cores": os.cpu_count(), "gpus": gpus,
            "tensorflow": tf.__version__}
