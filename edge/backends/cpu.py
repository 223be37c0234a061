"""What this CPU's integer kernels do: the one place that detects it (the self-test, the backends and the
converter's tolerance measurement all ask here)."""

from __future__ import annotations

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
