"""`skinedge wheelhouse`: everything a board installs, as files to carry on a stick to a clinic with no internet.

On the workstation (which has the internet): skinedge's own wheel, built from this checkout (edge/COMMIT records the
commit), and every wheel of the board's extra for the board's platform and Python, fetched by
`pip download --only-binary=:all: --platform ... --python-version ...`, plus pip itself (a minimal Debian has no
ensurepip to make a venv's pip from). `requirements.txt` pins every wheel with its sha256, so the board's
`pip install --no-index --find-links DIR --require-hashes -r DIR/requirements.txt` (systemd/install.sh
--wheelhouse DIR) installs exactly these files, checked, and never looks for a network.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import edge

REQUIREMENTS = "requirements.txt"
BOARDS = ("pi", "jetson", "edge")  # one of these, plus optionally dicom (install.sh --pacs installs [EXTRA,dicom])
ADDONS = ("dicom",)
MACHINES = ("aarch64", "x86_64")
# Raspberry Pi OS Bookworm (Debian 12): Python 3.11, glibc 2.36. A Jetson on JetPack 6 (Ubuntu 22.04): 3.10, 2.35.
DEFAULT_PYTHON, DEFAULT_GLIBC = "3.11", "2.36"
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


class WheelhouseError(RuntimeError):
    """One line: what could not be built or fetched, and why."""


@dataclass(frozen=True)
class Target:
    extra: str = "pi"
    python: str = DEFAULT_PYTHON
    machine: str = "aarch64"
    glibc: str = DEFAULT_GLIBC

    def platforms(self) -> list[str]:
        """manylinux tags a board with this glibc accepts: manylinux2014 (= 2.17) up to its own version."""
        major, minor = (int(x) for x in self.glibc.split("."))
        return [f"manylinux2014_{self.machine}"] + [f"manylinux_{major}_{m}_{self.machine}" for m in range(17, minor + 1)]

    def describe(self) -> str:
        return f"skinedge[{self.extra}] for Python {self.python} on manylinux {self.machine} (glibc <= {self.glibc})"


def check_target(t: Target) -> None:
    parts = t.extra.split(",")
    if parts[0] not in BOARDS or any(p not in ADDONS for p in parts[1:]):
        raise WheelhouseError(f"--extra {t.extra}: expected one of {', '.join(BOARDS)}, optionally followed by "
                              f",{',' .join(ADDONS)} (a board that forwards to a PACS: install.sh --pacs)")
    if t.machine not in MACHINES:
        raise WheelhouseError(f"--machine {t.machine}: expected one of {', '.join(MACHINES)} (onnxruntime publishes "
                              "no 32-bit ARM wheels: a Pi needs a 64-bit OS)")
    if not re.fullmatch(r"3\.\d{1,2}", t.python) or not re.fullmatch(r"2\.\d{2}", t.glibc):
        raise WheelhouseError(f"--python {t.python} / --glibc {t.glibc}: expected versions such as 3.11 and 2.36")


def source_tree(given: Path | None) -> Path:
    """The checkout to build skinedge's wheel from: `given`, else the one this package runs from."""
    root = Path(given) if given else Path(edge.__file__).resolve().parent.parent
    if not (root / "setup.py").is_file():
        raise WheelhouseError(f"{root}: not a skinedge checkout (no setup.py); pass --source DIR")
    return root


def _pip(args: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.strip().splitlines() if x.startswith("ERROR")] or proc.stderr.strip().splitlines()
        raise WheelhouseError(f"{what} failed: {(lines or ['pip exited ' + str(proc.returncode)])[-1][:300]}")


def wheel_name(path: Path) -> tuple[str, str]:
    """(normalised project name, version) from a wheel's file name."""
    m = _WHEEL.match(path.name)
    if not m:
        raise WheelhouseError(f"{path}: not a wheel file name")
    return re.sub(r"[-_.]+", "-", m["name"]).lower(), m["version"]


def requirements(out: Path, target: Target) -> str:
    """Every wheel in `out` pinned with its sha256 (skinedge with the target's extra), pip itself left out."""
    lines = [f"# skinedge wheelhouse: {target.describe()}; python {target.python}; extra {target.extra}",
             "# install: pip install --no-index --find-links DIR --require-hashes -r DIR/requirements.txt"]
    for whl in sorted(out.glob("*.whl")):
        name, version = wheel_name(whl)
        if name == "pip":
            continue
        digest = hashlib.sha256(whl.read_bytes()).hexdigest()
        lines.append(f"{name}{f'[{target.extra}]' if name == 'skinedge' else ''}=={version} --hash=sha256:{digest}")
    return "\n".join(lines) + "\n"


def own_wheel(root: Path, out: Path) -> Path:
    """skinedge's wheel, built from the checkout at `root` into `out` (setup.py records the commit in it)."""
    made = [d for d in (root / "build", root / "skinedge.egg-info") if not d.exists()]
    try:
        _pip(["wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(root)],
             "building skinedge's wheel")
    finally:
        for d in made:  # setuptools' working folders, not part of the checkout (an editable install's are kept)
            shutil.rmtree(d, ignore_errors=True)
    return next(Path(out).glob("skinedge-*.whl"))


def build(out: Path, target: Target, source: Path | None = None, say=print) -> list[Path]:
    """Write the wheelhouse into `out` (a new or empty folder); returns its wheels."""
    check_target(target)
    root = source_tree(source)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WheelhouseError(f"--out {out}: exists and is not an empty folder (a wheelhouse holds one set of pinned "
                              "wheels)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WheelhouseError(f"--out {out}: cannot create it ({e.strerror or e})") from None
    try:
        say(f"wheelhouse: building skinedge {edge.__version__} from {root}")
        own = own_wheel(root, out)
        say(f"wheelhouse: fetching {target.describe()} and pip (pip download; needs the internet)")
        platforms = [a for p in target.platforms() for a in ("--platform", p)]
        _pip(["download", "--quiet", "--only-binary=:all:", "--implementation", "cp", "--python-version",
              target.python, *platforms, "--dest", str(out), f"{own}[{target.extra}]", "pip"],
             f"pip download for {target.describe()}")
        (out / REQUIREMENTS).write_text(requirements(out, target))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return sorted(out.glob("*.whl"))
