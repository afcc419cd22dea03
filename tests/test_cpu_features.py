"""Reading the CPU's int8 dot-product support (`knowledge.cpu_features`), which picks the questions' weight type
(`knowledge.onnx_minilm`) and which `make bench` records as `machine_int8_vnni`."""

from __future__ import annotations

from knowledge.cpu_features import has_vnni


def test_vnni_is_read_from_the_cpu_flags(tmp_path):
    avx512, avx, without, other = (tmp_path / name for name in ("avx512", "avx", "avx2", "missing"))
    avx512.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    avx.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert has_vnni(str(avx512)) and has_vnni(str(avx))
    assert not has_vnni(str(without))
    assert not has_vnni(str(other))  # no /proc/cpuinfo (not Linux): treated as absent, the safe choice


def test_this_machines_answer_is_its_cpu_flags():
    with open("/proc/cpuinfo", encoding="utf-8") as file:
        flags = set(next(line for line in file if line.startswith("flags")).split(":", 1)[1].split())
    assert has_vnni() == bool({"avx512_vnni", "avx_vnni"} & flags)
