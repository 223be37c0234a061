"""Host side of one emulated measurement: run guest.py under qemu-aarch64 with the counting plugin on a given
ARM core and turn the plugin's marks into instructions per inference, per Grad-CAM + overlay and per frame.

The libraries pick their kernels from the CPU they see: the hardware capabilities (getauxval(AT_HWCAP), which
qemu derives from the emulated -cpu, e.g. asimddp on Cortex-A76) and /proc/cpuinfo (CPU part and Features,
read by the cpuinfo library inside XNNPACK and ONNX Runtime). qemu -L serves /proc/cpuinfo from the ARM root,
so each core gets a view of the root (symlinks to it) with its own cpuinfo, written as Linux prints it on
that core.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEMO_BUNDLE = REPO / "edge" / "demo_assets" / "bundle"
DEMO_CLIP = REPO / "edge" / "demo_assets" / "clip.mp4"
CLASSES = ("total", "ldst", "simd", "dot", "scalar")
PLUGIN = "opt/arm_cost/count.so"  # inside the ARM root, built by setup.sh
STACK_STRINGS = 8192  # bytes of argv, environment and executable name the guest always starts with


@dataclass(frozen=True)
class Core:
    qemu: str  # qemu -cpu name
    part: str  # MIDR part number in /proc/cpuinfo
    variant: str
    revision: int
    features: str  # /proc/cpuinfo Features as Linux prints them on the board
    boards: str


BASE = "fp asimd evtstrm crc32 cpuid"
CRYPTO = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
V82 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
CORES = {
    "cortex-a53": Core("cortex-a53", "0xd03", "0x0", 4, BASE, "Raspberry Pi Zero 2 W"),
    "cortex-a57": Core("cortex-a57", "0xd07", "0x1", 1, CRYPTO, "Jetson Nano"),
    "cortex-a72": Core("cortex-a72", "0xd08", "0x0", 3, BASE, "Raspberry Pi 4"),
    "cortex-a76": Core("cortex-a76", "0xd0b", "0x4", 1, V82, "Raspberry Pi 5"),
    "neoverse-n1": Core("neoverse-n1", "0xd0c", "0x3", 1, V82 + " ssbs", "Jetson Orin Nano (A78AE) stand-in"),
}


class EmulationError(RuntimeError):
    """The emulated run failed or the tooling is missing: one line saying which and how to fix it."""


def arm_root() -> Path | None:
    """The ARM root with the counting plugin built into it ($SKINEDGE_ARM_ROOT), or None."""
    root = os.environ.get("SKINEDGE_ARM_ROOT")
    return Path(root) if root else None


def missing_tooling(root: Path | None) -> str | None:
    """Why counting cannot run here (to skip with), or None when it can."""
    if root is None:
        return "SKINEDGE_ARM_ROOT not set (see .ci/run)"
    if not (root / "usr/bin/python3.11").exists():
        return f"{root}: no emulated Python (run ../shared/tools/aarch64-python.sh setup)"
    if not (root / PLUGIN).exists():
        return f"{root / PLUGIN} missing (run benchmarks/arm_cost/setup.sh)"
    if not shutil.which("qemu-aarch64"):
        return "qemu-aarch64 (Debian's qemu-user, built with plugin support) not installed: run benchmarks/arm_cost/setup.sh"
    return None


def cpuinfo(core: Core, cpus: int = 4) -> str:
    return "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {core.features}\nCPU implementer\t: 0x41\n"
                   f"CPU architecture: 8\nCPU variant\t: {core.variant}\nCPU part\t: {core.part}\n"
                   f"CPU revision\t: {core.revision}\n\n" for i in range(cpus))


_VIEWS = threading.Lock()  # run.py --jobs N runs measure() in threads; two runs on one core share its view


def core_view(root: Path, core: Core) -> Path:
    """root/../<root name>-<core>: the root through symlinks, with this core's /proc/cpuinfo.

    /tmp is left out: qemu -L would show the guest a symlinked /tmp, and realpath() of anything under the
    host's /tmp (the ARM root, scratch files) would then resolve into the root's own tmp.
    """
    view = root.parent / f"{root.name}-{core.qemu}"
    with _VIEWS:
        (view / "proc").mkdir(parents=True, exist_ok=True)
        for entry in root.iterdir():
            link = view / entry.name
            if entry.name not in ("proc", "tmp") and not link.is_symlink():
                link.symlink_to(entry)
        info, text = view / "proc" / "cpuinfo", cpuinfo(core)
        if not info.is_file() or info.read_text() != text:  # never rewritten under a starting guest
            info.write_text(text)
    return view


@cache
def no_aslr() -> list[str]:
    """`setarch -R` where the host allows it (a container's seccomp may not): qemu-user maps the guest wherever
    the host's mmap says; with randomisation, ONNX Runtime int8 counts still wander by ~0.01 % between runs."""
    ok = shutil.which("setarch") and subprocess.run(["setarch", "-R", "true"], capture_output=True,
                                                    check=False).returncode == 0
    return ["setarch", "-R"] if ok else []


def fixed_stack(argv: list[str], env: dict[str, str]) -> dict[str, str]:
    """env plus SKINEDGE_STACK_PAD, so that the strings qemu copies onto the guest's initial stack (argv, the
    environment, the executable's name) always take STACK_STRINGS bytes.

    Why: ONNX Runtime's int8 inference takes one of two instruction counts, 0.5 % apart, depending on where the
    guest's stack starts (measured: demo bundle on the A72, 25.85 or 25.99 M as an unused variable's length
    changed), and that start moves with every path in argv and the environment: checkout, ARM root, scratch.
    """
    used = sum(len(a.encode()) + 1 for a in argv) + len(argv[0].encode()) + 1
    used += sum(len(f"{k}={v}".encode()) + 1 for k, v in env.items()) + len("SKINEDGE_STACK_PAD=") + 1
    if used > STACK_STRINGS:
        raise EmulationError(f"argv and environment take {used} bytes, more than STACK_STRINGS = {STACK_STRINGS}")
    return {**env, "SKINEDGE_STACK_PAD": "x" * (STACK_STRINGS - used)}


def parse_marks(text: str) -> dict[str, dict[str, int]]:
    """'mark 3 total N ldst N ...' lines -> {'3': {'total': N, ...}, 'exit': {...}}."""
    marks = {}
    for line in text.splitlines():
        words = line.split()
        name = words[1] if words[0] == "mark" else words[0]
        rest = words[2:] if words[0] == "mark" else words[1:]
        marks[name] = {rest[i]: int(rest[i + 1]) for i in range(0, len(rest), 2)}
    return marks


def _diff(a: dict[str, int], b: dict[str, int], k: int) -> dict[str, float]:
    return {c: (b[c] - a[c]) / k for c in CLASSES}


def per_unit(marks: dict[str, dict[str, int]], base: int, k: int) -> dict[str, dict[str, float]]:
    """Instructions per inference, per Grad-CAM + overlay, and (with its marks) per pipeline frame."""
    m = {int(n): v for n, v in marks.items() if n != "exit"}
    out = {"inference": _diff(m[base + 1], m[base + 2], k), "gradcam_overlay": _diff(m[base + 3], m[base + 4], k)}
    if base + 7 in m:
        first, second = _diff(m[base + 5], m[base + 6], 1), _diff(m[base + 6], m[base + 7], 1)
        out["pipeline_frame"] = {c: (second[c] - first[c]) / k for c in CLASSES}
    return out


def run_guest(root: Path, core: str, script: Path, job: dict, plugin: str, what: str, scratch: Path,
              timeout: float = 7200, env_extra: dict[str, str] | None = None, preload: str | None = None) -> dict:
    """Run `script` (a guest program taking one JSON argument) in the emulated Python on `core`, under the TCG
    plugin `plugin` ("opt/arm_cost/x.so,arg=...", inside the root), with everything that makes counts repeat
    (fixed stack strings, no address randomisation, fixed hash seed, its own HOME, `env_extra`, and `preload`, a
    library inside the root the guest's loader preloads); its last stdout line as JSON."""
    view = core_view(root, CORES[core])
    scratch.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch),  # nothing a run leaves in HOME reaches the next
           "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONHASHSEED": "0", "PYTHONPATH": f"{REPO}:{root}/opt/site", **(env_extra or {})}
    guest = [f"{view}/usr/bin/python3.11", str(script), json.dumps(job)]
    env = fixed_stack(guest, env)
    guest_env = ["-E", f"LD_PRELOAD={preload}"] if preload else []  # the guest's, not qemu's own
    cmd = [*no_aslr(), "qemu-aarch64", "-cpu", core, "-L", str(view), *guest_env, "-plugin", f"{root}/{plugin}",
           *guest]
    try:
        proc = subprocess.run(cmd, env=env, cwd=scratch, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"{what}: timed out after {timeout:.0f} s") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise EmulationError(f"{what}: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(root: Path, core: str, bundle: Path, combos: list[tuple[str, str]], threads: int = 1, k: int = 3,
            warmup: int = 2, pipeline: bool = False, pipeline_n: int = 2, timeout: float = 7200,
            scratch: Path | None = None) -> dict:
    """One bundle on one emulated core, each (backend, precision) of combos in the same process: instructions
    by class per decoded frame, and per inference / Grad-CAM + overlay / pipeline frame for each combination."""
    scratch = scratch or Path(f"/tmp/arm-cost-{os.getpid()}")
    out = scratch / f"{core}-{Path(bundle).name}-t{threads}.marks"
    job = {"bundle": str(Path(bundle).resolve()), "combos": combos, "threads": threads, "k": k, "warmup": warmup,
           "pipeline": pipeline, "pipeline_n": pipeline_n, "clip": str(DEMO_CLIP)}
    info = run_guest(root, core, HERE / "guest.py", job, f"{PLUGIN},out={out}", f"{core} {Path(bundle).name}",
                     scratch, timeout)
    marks = parse_marks(out.read_text())
    runs = [{**r, **per_unit(marks, r["base"], k)} for r in info.pop("runs")]
    return {"core": core, "bundle": info.pop("bundle_name"), "bundle_path": str(Path(bundle).resolve()),
            "threads": threads, "k": k, **info,
            "decode_preprocess": {c: (marks["2"][c] - marks["1"][c]) / k for c in CLASSES}, "runs": runs}
