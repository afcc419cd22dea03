"""What the CPU can do that changes how the embedding model is best run."""

from __future__ import annotations

import functools

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})  # Linux's names for the x86 int8 dot-product instructions


@functools.cache  # the CPU does not change while the process runs: its flags are read once
def has_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies 8-bit integers with VNNI (`vpdpbusd`: uint8 x int8 summed into int32, never
    saturating). Read from Linux's CPU flags; elsewhere unknown, reported as absent."""
    try:
        with open(cpuinfo, encoding="utf-8") as file:
            flags = next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), [])
    except OSError:  # not Linux
        return False
    return bool(VNNI_FLAGS & set(flags))
