"""This CPU: whether its integer kernels saturate (the one place that detects it: the backends, the self-test and
the converter's tolerance measurement ask here) and how many threads its backends may have."""

from __future__ import annotations

import os
import platform


def u8s8_saturates() -> bool:
    """x86 without VNNI: ONNX Runtime's fused u8s8 kernels add uint8 x int8 products in pairs into int16 (vpmaddubsw),
    which saturates with full 8-bit weights; ARM and x86 with VNNI sum exactly in int32."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return not {"avx512_vnni", "avx_vnni"} & set(flags)


THREADS_PER_CORE = 4  # the most threads a backend may get per core: beyond, runtimes only thrash (or crash)


def cores() -> int:
    """Cores this process may run on (its CPU affinity, as a container or taskset limits it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_threads() -> int:
    return THREADS_PER_CORE * cores()


def check_threads(n: int, what: str = "threads") -> str | None:
    """ValueError unless 1 <= n <= max_threads() (LiteRT segfaults and ONNX Runtime grows to gigabytes with
    100,000); a warning line when n exceeds the cores, else None."""
    if not 1 <= n <= max_threads():
        raise ValueError(f"{what}: expected an integer in 1..{max_threads()} ({THREADS_PER_CORE} per core, {cores()} "
                         f"core(s) here), found {n}")
    if n > cores():
        return f"WARNING: {what} {n} is more than the {cores()} core(s) here: the threads compete for cores"
    return None
