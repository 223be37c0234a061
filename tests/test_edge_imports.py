"""The board runtime never imports torch, torchvision or tensorflow (DESIGN.md): checked statically over
every file under edge/, and dynamically by importing every edge module in a fresh interpreter. And edge's
modules import each other without cycles, counting imports inside functions and under TYPE_CHECKING: a
cycle means a name lives in the wrong module."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

EDGE = Path(__file__).resolve().parent.parent / "edge"
FORBIDDEN = ("torch", "torchvision", "tensorflow")
# Environment variables by which ONNX Runtime 1.32 decides it runs on CI and sends no telemetry (strings in its
# library; CI=true checked by hand), and XDG_CACHE_HOME, which moves its event store out of HOME.
ORT_CI_MARKERS = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL",
                  "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER",
                  "XDG_CACHE_HOME")


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


def test_onnx_runtime_keeps_no_telemetry_once_edge_is_imported(tmp_path):
    """ONNX Runtime's telemetry, on by default, keeps an event store under ~/.cache/Microsoft and uploads from it on
    timers; importing edge turns it off (edge/__init__.py) unless the user asked for it (the control: =0).
    ONNX Runtime also keeps quiet on a machine that looks like CI (CI, GITHUB_ACTIONS, ... set), as the project's
    CI does, so the children run without those: a board has none of them."""
    code = ("from pathlib import Path; from edge.backends.onnx import OnnxBackend; "
            "OnnxBackend(Path('edge/demo_assets/bundle/model.int8.onnx'))")
    stores = {}
    for setting in (None, "0"):
        env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", *ORT_CI_MARKERS)}
        env.update(HOME=str(tmp_path / str(setting)), **({"ORT_DISABLE_TELEMETRY": setting} if setting else {}))
        r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                           cwd=EDGE.parent, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        stores[setting] = sorted(p.name for p in (tmp_path / str(setting)).rglob("*") if p.is_file())
    assert stores[None] == [], stores
    assert "onnxruntime.db" in stores["0"], stores


def _edge_imports(path: Path) -> set[str]:
    """The edge modules that a file imports anywhere in it (top level, in functions, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("edge.")}


def test_edge_modules_import_each_other_without_cycles():
    modules = {".".join(p.relative_to(EDGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in EDGE.rglob("*.py")}
    graph = {name: _edge_imports(p) & modules.keys() - {name} for name, p in modules.items()}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert not cycles, [" -> ".join(c) for c in cycles]
