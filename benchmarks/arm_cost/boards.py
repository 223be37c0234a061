"""The boards a prediction is made for: which emulated core runs their kernels, which LLVM scheduling model costs
their instructions, their clock, caches and DRAM, each with where the figure comes from.

LLVM 19 (Debian bookworm's llvm-19) schedules cortex-a72, cortex-a76 and cortex-a78(ae) with its Cortex-A57 model
(`llvm-mca -mcpu=cortex-a72` prints A57 resources), has Neoverse-N1 and Cortex-A53/A55 models of their own (LLVM 14
schedules neoverse-n1 with the A57 model too). So:
- Cortex-A57 (Jetson Nano): the A57 model, exact.
- Cortex-A72 (Pi 4): the A57 model, approximate: the A72 is the A57's successor with the same 3-wide decode and two
  64-bit FP/NEON pipes (a 128-bit FMLA takes both), but shorter FP and multiply latencies (A72 optimization guide).
- Cortex-A76 (Pi 5): the Neoverse-N1 model, close: the N1 is the A76 core ("Ares") for infrastructure, with the same
  4-wide decode and two 128-bit NEON pipes; LLVM's own cortex-a76 entry would use the A57 model, which has neither.
- Cortex-A78AE (Orin): the Neoverse-N1 model, approximate: the A78 keeps the A76's two 128-bit NEON pipes but decodes
  and dispatches wider (and its kernels are those qemu's Neoverse-N1 gets: Armv8.2 with dot product).
- Cortex-A53 (Pi Zero 2 W, Pi 3B+): the A53 model (in-order, dual issue), exact.
"""

from __future__ import annotations

from dataclasses import dataclass

PI_DOCS = "https://www.raspberrypi.com/documentation/computers/processors.html"
PI5_DETAILS = "https://threedots.ovh/blog/2023/09/gathering-some-raspberry-pi-5-details/"
PI4_STREAM = "https://www.sci-pi.org.uk/bench/stream.html"
NANO_SPEC = "https://developer.nvidia.com/embedded/jetson-nano-developer-kit"
ORIN_SPEC = "https://developer.nvidia.com/embedded/jetson-modules"
ARM_TRM = "Arm Technical Reference Manuals (Cortex-A53 r0p4, A57 r1p3, A72 r0p3, A76 r4p1, A78AE), 'L1 data cache' / 'L2'"


@dataclass(frozen=True)
class Cache:
    kib: int
    ways: int
    latency: int  # load-to-use cycles on a hit


@dataclass(frozen=True)
class Board:
    name: str  # the --predict name
    title: str
    core: str  # qemu -cpu (its kernels: benchmarks/arm_cost/emulate.CORES)
    mca_cpu: str  # llvm-mca -mcpu whose scheduling model costs it
    mca_note: str  # how close that model is
    ghz: float
    cores: int
    l1d: Cache
    l2: Cache
    l2_shared: bool
    l3: Cache | None
    dram_ns: float  # load-to-use latency of a DRAM access
    dram_gbs: float  # what one core streams from DRAM (STREAM copy-like), GB/s
    sources: str

    @property
    def geometry(self) -> str:
        """Cache sizes and ways, as profile.c's cache= argument after the name (boards alike share a simulation)."""
        l3 = f":{self.l3.kib}:{self.l3.ways}" if self.l3 else ""
        return f"{self.l1d.kib}:{self.l1d.ways}:{self.l2.kib}:{self.l2.ways}:{int(self.l2_shared)}{l3}"


BOARDS = {b.name: b for b in (
    Board("rpi4", "Raspberry Pi 4 (4x Cortex-A72, 1.5 GHz)", "cortex-a72", "cortex-a72",
          "LLVM's A57 model (A72: same widths, shorter FP latencies): approximate", 1.5, 4,
          Cache(32, 2, 4), Cache(1024, 16, 21), True, None, 120.0, 5.5,
          f"{PI_DOCS} (BCM2711: 1.5 GHz, 32 KB L1D per core, 1 MB shared L2); {ARM_TRM}; {PI4_STREAM} "
          "(STREAM copy 5.5 GB/s); DRAM latency ~120 ns (LPDDR4-3200, approximate)"),
    Board("rpi5", "Raspberry Pi 5 (4x Cortex-A76, 2.4 GHz)", "cortex-a76", "neoverse-n1",
          "LLVM's Neoverse-N1 model (the A76 core): close", 2.4, 4,
          Cache(64, 4, 4), Cache(512, 8, 11), False, Cache(2048, 16, 35), 100.0, 10.0,
          f"{PI5_DETAILS} (BCM2712: 2.4 GHz, 64 KB L1D and 512 KB L2 per core, 2 MB shared L3, 32-bit LPDDR4X "
          f"17 GB/s peak); {ARM_TRM}; one-core DRAM stream ~10 GB/s and latency ~100 ns (approximate)"),
    Board("jetson-nano", "Jetson Nano (4x Cortex-A57, 1.43 GHz)", "cortex-a57", "cortex-a57",
          "LLVM's A57 model: exact", 1.43, 4,
          Cache(32, 2, 4), Cache(2048, 16, 21), True, None, 130.0, 6.0,
          f"{NANO_SPEC} (4x A57 at 1.43 GHz, 2 MB L2, 64-bit LPDDR4 25.6 GB/s peak); {ARM_TRM}; one-core DRAM "
          "stream ~6 GB/s and latency ~130 ns (approximate)"),
    Board("orin-nano", "Jetson Orin Nano 8 GB (6x Cortex-A78AE, 1.5 GHz), CPU only", "neoverse-n1", "neoverse-n1",
          "LLVM's Neoverse-N1 model (A78: same NEON pipes, wider dispatch): approximate", 1.5, 6,
          Cache(64, 4, 4), Cache(256, 8, 11), False, Cache(4096, 16, 35), 110.0, 15.0,
          f"{ORIN_SPEC} (6x A78AE at 1.5 GHz, 1.5 MB L2 (256 KB per core), 4 MB L3, 128-bit LPDDR5 68 GB/s peak); "
          f"{ARM_TRM}; one-core DRAM stream ~15 GB/s and latency ~110 ns (approximate)"),
    Board("rpi-zero2w", "Raspberry Pi Zero 2 W (4x Cortex-A53, 1.0 GHz)", "cortex-a53", "cortex-a53",
          "LLVM's A53 model (in-order, dual issue): exact", 1.0, 4,
          Cache(32, 4, 3), Cache(512, 16, 15), True, None, 150.0, 2.0,
          f"{PI_DOCS} (RP3A0 = BCM2710A1: 4x A53 at 1 GHz, 512 KB shared L2; 32 KB L1D per core as the issue and "
          f"A53 TRM configuration); LPDDR2; one-core DRAM stream ~2 GB/s and latency ~150 ns (approximate)"),
    Board("rpi3b+", "Raspberry Pi 3B+ (4x Cortex-A53, 1.4 GHz)", "cortex-a53", "cortex-a53",
          "LLVM's A53 model (in-order, dual issue): exact", 1.4, 4,
          Cache(32, 4, 3), Cache(512, 16, 15), True, None, 150.0, 2.2,
          f"{PI_DOCS} (BCM2837B0: 4x A53 at 1.4 GHz, 512 KB shared L2); LPDDR2; one-core DRAM stream ~2.2 GB/s "
          "and latency ~150 ns (approximate)"),
)}


def parse_boards(text: str) -> list[Board]:
    """'rpi4,rpi5' -> the boards, or ValueError naming the unknown ones and the known."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BOARDS]
    if unknown or not names:
        raise ValueError(f"unknown board {', '.join(unknown) or '(none)'}: expected some of {', '.join(BOARDS)}")
    return [BOARDS[n] for n in names]
