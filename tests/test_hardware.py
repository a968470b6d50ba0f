"""What a training records of its machine: the CPU's name alone ('AMD EPYC') does not say which
kernels oneDNN ran, so the vector instruction set is recorded beside it."""
import pytest

from pipeline import hardware


@pytest.mark.parametrize("flags, isa", [
    ("fpu sse2 avx avx2 fma", "AVX2"),
    ("fpu avx2 avx512f avx512bw avx512_bf16", "AVX-512"),
    ("avx2 avx512f amx_bf16 amx_tile amx_int8", "AMX"),
    ("fpu sse2", "unknown"),
])
def test_the_widest_instruction_set_is_named(monkeypatch, flags, isa):
    monkeypatch.setattr(hardware, "cpuinfo_field", lambda name: flags if name == "flags" else "Some CPU")
    assert hardware.vector_isa() == isa


def test_this_machine_is_described():
    described = hardware.machine()
    assert described["cpu"] and described["cores"] >= 1
    assert described["isa"] in {"AMX", "AVX-512", "AVX2", "unknown"}


@pytest.mark.parametrize("flags, native", [
    ("fpu avx2 fma", False), ("avx2 avx512f avx512bw", False),
    ("avx2 avx512f avx512_bf16", True), ("avx2 avx512f amx_bf16 amx_tile", True),
])
def test_native_bfloat16_is_read_from_the_cpu_flags(monkeypatch, flags, native):
    monkeypatch.setattr(hardware, "cpuinfo_field", lambda name: flags if name == "flags" else "Some CPU")
    assert hardware.native_bfloat16() is native


@pytest.mark.parametrize("cap, native", [("AVX2", False), ("AVX512_CORE", False), ("avx512_core_bf16", True),
                                         ("AVX512_CORE_AMX", True)])
def test_kernels_capped_below_bfloat16_have_none(monkeypatch, cap, native):
    monkeypatch.setattr(hardware, "cpuinfo_field", lambda name: "avx2 avx512f avx512_bf16" if name == "flags" else "")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert hardware.native_bfloat16() is native
