"""The board runtime never imports torch, torchvision or tensorflow (DESIGN.md): checked statically over
every file under edge/, and dynamically by importing every edge module in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EDGE = Path(__file__).resolve().parent.parent / "edge"
FORBIDDEN = ("torch", "torchvision", "tensorflow")


def test_no_forbidden_import_statement():
    pattern = re.compile(rf"^\s*(import|from)\s+({'|'.join(FORBIDDEN)})\b", re.MULTILINE)
    offenders = [str(p) for p in EDGE.rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders, offenders


def test_importing_every_edge_module_loads_none_of_them():
    code = f"""
import importlib, pkgutil, sys
import edge
for m in pkgutil.walk_packages(edge.__path__, "edge."):
    importlib.import_module(m.name)
import edge.backends.onnx, edge.backends.tflite
print(sorted(n for n in {FORBIDDEN!r} if n in sys.modules))
"""
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=EDGE.parent,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
