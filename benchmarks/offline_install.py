"""The clinic install with no internet, end to end on an emulated Raspberry Pi (aarch64, Debian 12, Python 3.11):

1. `skinedge wheelhouse` on this workstation (the one step that needs the internet; skipped with --wheelhouse);
2. the python-environment steps of `systemd/install.sh --wheelhouse` (taken from its --dry-run, so they are the
   installer's own commands), run under qemu-user in a network namespace with no network at all (`unshare -n`,
   where allowed) and with pip's own configuration switched off: pip can reach nothing but the wheelhouse;
3. `skinedge --version` and `skinedge verify` of the demo bundle (LiteRT and ONNX Runtime) from that venv.

    python -m benchmarks.offline_install --arm-root /tmp/i23-arm [--wheelhouse DIR] [--keep DIR]

The root comes from ../shared/tools/aarch64-python.sh setup (ARM_ROOT=...); nothing in it is changed: the venv is
made in a scratch folder, by the root's own Python. Prints each step's time and the verdict; exit 0 when verify
passes. (tests/test_offline_install.py runs it as a background job with SKINEDGE_OFFLINE_INSTALL=1: about two
CPU minutes of emulation and a 112 MB download, too long for the suite by default.)
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "edge" / "demo_assets" / "bundle"
INSTALL = REPO / "systemd" / "install.sh"
VENV = "/opt/skinedge/venv"  # where install.sh puts it on a board


def no_network() -> list[str]:
    """`unshare -n` where this machine allows a new network namespace (then not even loopback is up), else []."""
    ok = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True,
                                                    check=False).returncode == 0
    return ["unshare", "-n"] if ok else []


def emulated(root: Path, home: Path) -> list[str]:
    """The prefix that runs an aarch64 program of `root` here, with a minimal environment and no pip config."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "QEMU_CPU": "cortex-a72",
           "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return [*no_network(), "env", "-i", *(f"{k}={v}" for k, v in env.items()), "qemu-aarch64-static", "-L", str(root)]


def installer_steps(wheelhouse: Path) -> list[list[str]]:
    """The commands install.sh runs for the python environment, from its own --dry-run."""
    r = subprocess.run(["bash", str(INSTALL), "--dry-run", "--device", "rpi4", "--wheelhouse", str(wheelhouse),
                        "--no-start", "--allow-unsigned"], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"install.sh --dry-run failed: {r.stderr.strip()}")
    lines = r.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("== python environment"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("== "))
    return [shlex.split(line[2:]) for line in lines[start + 1:end] if line.startswith("+ ")]


def on_board(cmd: list[str], root: Path, venv: Path) -> list[str]:
    """An installer command as it runs here: python3 is the root's, the venv lives in the scratch folder."""
    out = []
    for word in cmd:
        word = word.replace(VENV, str(venv))
        out.append(str(root / "usr/bin/python3.11") if word == "python3" else word)
    return out


def run(prefix: list[str], cmd: list[str], what: str) -> tuple[tuple[float, float], str]:
    """Run one step; ((wall s, CPU s), its stdout). CPU seconds (user + system of the step's processes) are what
    the step costs on an idle core; wall time on a shared machine also holds the time others had the CPU."""
    t, cpu = time.perf_counter(), _children_cpu()
    r = subprocess.run([*prefix, *cmd], capture_output=True, text=True, check=False)
    took = (time.perf_counter() - t, _children_cpu() - cpu)
    if r.returncode != 0:
        raise SystemExit(f"{what} failed ({r.returncode}): {(r.stderr.strip() or r.stdout.strip())[-2000:]}")
    return took, r.stdout


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm-root", type=Path, default=Path(os.environ.get("SKINEDGE_ARM_ROOT", "/tmp/skinedge-aarch64")))
    p.add_argument("--wheelhouse", type=Path, help="use this wheelhouse instead of building one (no internet then)")
    p.add_argument("--keep", type=Path, help="scratch folder to keep (default: a temporary one, removed)")
    a = p.parse_args(argv)
    root = a.arm_root.resolve()
    if not (root / "usr/bin/python3.11").is_file():
        raise SystemExit(f"{root}: no emulated Python 3.11 (ARM_ROOT={root} bash ../shared/tools/aarch64-python.sh setup)")
    scratch = Path(a.keep or tempfile.mkdtemp(prefix="skinedge-offline-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        times = {}
        wheelhouse = a.wheelhouse
        if wheelhouse is None:
            from edge.wheelhouse import Target, build

            t, cpu = time.perf_counter(), _children_cpu()
            wheelhouse = scratch / "wheelhouse"
            build(wheelhouse, Target("pi", "3.11", "aarch64", "2.36"))
            times["skinedge wheelhouse (workstation, internet)"] = (time.perf_counter() - t, _children_cpu() - cpu)
        prefix = emulated(root, scratch / "home")
        (scratch / "home").mkdir(exist_ok=True)
        venv = scratch / "venv"
        for cmd in installer_steps(wheelhouse.resolve()):
            board = on_board(cmd, root, venv)
            times[" ".join(cmd[:4])[:70]], _ = run(prefix, board, " ".join(cmd))
        py = [str(venv / "bin/python"), str(venv / "bin/skinedge")]
        times["skinedge --version"], version = run(prefix, [*py, "--version"], "skinedge --version")
        times["skinedge verify (demo)"], verify = run(prefix, [*py, "verify", str(DEMO), "--backend", "tflite,onnx"],
                                                       "skinedge verify")
        mb = sum(w.stat().st_size for w in wheelhouse.glob("*.whl")) / 1e6
        isolated = "a network namespace with no network (unshare -n)" if no_network() else \
            "NOT isolated (unshare -n is not allowed here): pip's config off and --no-index only"
        print(f"offline install on emulated aarch64 ({root}); network: {isolated}")
        print(f"wheelhouse {wheelhouse}: {len(list(wheelhouse.glob('*.whl')))} wheels, {mb:.0f} MB")
        print(f"  {'wall s':>8} {'CPU s':>8}  step (load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
        for what, (wall, cpu) in times.items():
            print(f"  {wall:8.1f} {cpu:8.1f}  {what}")
        wall, cpu = (sum(v[i] for k, v in times.items() if "workstation" not in k) for i in (0, 1))
        print(f"  {wall:8.1f} {cpu:8.1f}  on the emulated board, in all")
        print(version.strip())
        print("\n".join(line for line in verify.splitlines() if ":" in line and "INFO" not in line))
        return 0 if verify.strip().endswith("verdict: PASS") else 1
    finally:
        if a.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
