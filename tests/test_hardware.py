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
