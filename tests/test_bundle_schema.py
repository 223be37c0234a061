"""Inputs from outside the board are refused with one line naming the key or file: malformed manifests (a
generator of many), YAML aliases in manifests and configs, paths and symlinks leaving the bundle, files not
hashed, and .npz headers that lie about their size."""

from __future__ import annotations

import copy
import io
import os
import resource
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import yaml

from edge.config import ConfigError, load_config
from edge.gradcam import load_head
from edge.trust import manifest, safeyaml
from edge.trust.bundle import MANIFEST, BundleError, hash_tree, load_bundle
from tests.test_run import DEMO

BAD_VALUES = [12345, -1, 0, 2.5, float("nan"), float("inf"), True, None, "", "x" * 5000, [], [[[]]], {}, {"a": 1},
              "../../outside/x.onnx", "/etc/passwd"]


def _manifest(root) -> dict:
    return yaml.safe_load((root / MANIFEST).read_text())


def _write(root, man: dict, rehash: bool = False) -> None:
    if rehash:
        man = dict(man, artefacts=hash_tree(root))
    (root / MANIFEST).write_text(yaml.dump(man, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))


def _verify(root, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", "verify", str(root), "--backend", "onnx", *extra],
                          check=False, capture_output=True, text=True, timeout=120)


def _one_line_refusal(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


def _paths(node, prefix=()):
    """Every key path (tuple) in a nested dict/list."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for k, v in items:
        yield (*prefix, k)
        yield from _paths(v, (*prefix, k))


def _set(man: dict, path: tuple, value) -> dict:
    man = copy.deepcopy(man)
    node = man
    for k in path[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return man


_DELETE = object()


def _get(man: dict, path: tuple):
    for k in path:
        man = man[k]
    return man


def test_generated_malformed_manifests_give_one_clean_line(bundle):
    """Every key of the demo manifest replaced by each of many wrong values (and deleted, where it is a
    mapping key): each case passes the schema or ends in exactly one ManifestError line naming the key;
    never any other exception, never a multi-line or unbounded message. A sample goes through load_bundle
    (from the YAML file) as well."""
    good = _manifest(bundle)
    paths = list(_paths(good))
    cases = [(p, v) for p in paths for v in BAD_VALUES]
    cases += [(p, _DELETE) for p in paths if not isinstance(p[-1], int)]
    cases += [(("unknown_key",), 1), (("models", 0, "unknown_key"), 1), (("models", 0, "artefacts", "int8_onnx"), 7),
              (("input", "size"), []), (("models", 0, "artefacts", "head"), "../head.npz")]
    refused, accepted = 0, []
    for path, value in cases:
        try:
            manifest.check(_set(good, path, value))
        except manifest.ManifestError as e:
            msg = str(e)
            assert "\n" not in msg and len(msg) < 500, (path, value, msg)
            refused += 1
        else:
            accepted.append((path, value))
    print(f"\n{len(cases)} malformed manifests: {refused} refused with one line, {len(accepted)} accepted")
    assert len(cases) > 1000
    # Accepted only: a value of the original's kind (text for text, a finite number for a number), anything in
    # the free-form calibration/validation figures, or null/removal of an optional key.
    def same_kind(path, value):
        orig = _get(good, path)
        if isinstance(orig, bool) or isinstance(value, bool):
            return type(orig) is type(value)
        if isinstance(orig, (int, float)):
            return isinstance(value, (int, float)) and np.isfinite(value)
        return isinstance(orig, str) and isinstance(value, str) and 0 < len(value) <= 200

    for path, value in accepted:
        assert (path[0] in ("calibration", "validation", "golden") or same_kind(path, value)
                or value in (None, _DELETE) and path[-1] in ("ensemble", "tflite_outputs", "golden", "tolerances", "gates", "image")
                # the normalisation's descriptive keys: optional (older bundles lack them); no preset for a custom mean/std
                or value in (None, _DELETE) and path[:2] == ("input", "normalisation")
                and path[-1] in ("preset", "units", "channel_order", "formula")
                or value is _DELETE and path[0] == "tolerances" and len(path) == 2  # the self-test refuses it
                or value is _DELETE and (path[0] == "artefacts" or path[2:3] == ("artefacts",) and path[-1] != "head"
                                         or path[-1] in ("int8_tflite", "fp32_tflite"))
                or (path, value) == (("artefacts",), {})), (path, value)  # hashes: the hash check refuses these
    for path, value in cases[::40]:
        _write(bundle, _set(good, path, value))
        try:
            load_bundle(bundle, verify=path[0] == "artefacts")
        except BundleError as e:
            assert "\n" not in str(e) and str(e).startswith(str(bundle)), (path, value, str(e))


def test_cli_refuses_named_cases_with_one_line(bundle):
    good = _manifest(bundle)
    for path, value, key in [(("models", 0, "artefacts", "int8_onnx"), 7, "models[0].artefacts.int8_onnx"),
                             (("input", "size"), [], "input.size"),
                             (("labels",), "x" * 100_000, "labels")]:
        _write(bundle, _set(good, path, value))
        err = _one_line_refusal(_verify(bundle))
        assert key in err and len(err) < 700, err


def test_yaml_aliases_refused_in_manifest_and_config(bundle, tmp_path):
    """The 'billion laughs' shape: a few hundred bytes that expand to gigabytes. Refused before expanding,
    with one short line, in a manifest and in a device config."""
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
        f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n" for i in range(8))
    assert len(bomb) < 400
    (bundle / MANIFEST).write_text("format: skinedge-bundle/1\n" + bomb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BundleError, match="anchors and aliases") as e:
        load_bundle(bundle)
    assert len(str(e.value)) < 300
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(bomb)
    with pytest.raises(ConfigError, match="anchors and aliases") as e:
        load_config(cfg)
    assert len(str(e.value)) < 300
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # kB: nothing was expanded
    one_anchor = tmp_path / "anchor.yaml"
    one_anchor.write_text("source: &s {kind: folder, path: .}\ndisplay: {kind: 'null'}\n")
    with pytest.raises(ConfigError, match="line 1, column 9: .*anchors and aliases"):
        load_config(one_anchor)


def test_oversized_manifest_refused_without_reading_it(bundle):
    with open(bundle / MANIFEST, "ab") as f:
        f.write(b"#" * (2 << 20))
    with pytest.raises(BundleError, match="larger than"):
        load_bundle(bundle)


@pytest.mark.parametrize("where", ["artefacts", "dir", "hashes"])
def test_paths_leaving_the_bundle_refused(bundle, tmp_path, where):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(bundle / "model.int8.onnx", outside / "x.onnx")
    man = _manifest(bundle)
    for rel in ("../outside/x.onnx", str(outside / "x.onnx")):
        if where == "artefacts":
            man["models"][0]["artefacts"]["int8_onnx"] = rel
        elif where == "dir":
            man["models"][0]["dir"] = rel.rsplit("/", 1)[0]
        else:
            man["artefacts"][rel] = man["artefacts"]["model.int8.onnx"]
        _write(bundle, man)
        with pytest.raises(BundleError, match="relative path inside the bundle"):
            load_bundle(bundle)
        man = yaml.safe_load((DEMO / "bundle" / MANIFEST).read_text())


def test_symlink_leaving_the_bundle_refused(bundle, tmp_path):
    outside = tmp_path / "evil.onnx"
    shutil.copy(bundle / "model.int8.onnx", outside)
    (bundle / "model.int8.onnx").unlink()
    os.symlink(outside, bundle / "model.int8.onnx")
    _write(bundle, _manifest(bundle), rehash=False)
    with pytest.raises(BundleError, match="model.int8.onnx leads outside the bundle"):
        load_bundle(bundle)
    err = _one_line_refusal(_verify(bundle))
    assert "model.int8.onnx leads outside the bundle" in err
    # a symlinked directory leaving the bundle is refused the same way
    (bundle / "model.int8.onnx").unlink()
    shutil.copy(outside, bundle / "model.int8.onnx")
    os.symlink(tmp_path, bundle / "more")
    with pytest.raises(BundleError, match="more is a symlink leaving the bundle"):
        load_bundle(bundle)


def test_every_file_must_be_hashed(bundle):
    man = _manifest(bundle)
    del man["artefacts"]["golden.npz"]
    _write(bundle, man)
    with pytest.raises(BundleError, match="golden.npz is in the bundle but has no hash in the manifest"):
        load_bundle(bundle)
    _write(bundle, man, rehash=True)
    (bundle / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="extra.bin is in the bundle but has no hash"):
        load_bundle(bundle)
    _write(bundle, man, rehash=True)
    (bundle / "extra.bin").unlink()
    with pytest.raises(BundleError, match="extra.bin is missing"):
        load_bundle(bundle)


def test_zero_byte_and_lying_npz_refused_cleanly(bundle):
    (bundle / "head.npz").write_bytes(b"")
    _write(bundle, _manifest(bundle), rehash=True)
    err = _one_line_refusal(_verify(bundle))
    assert "head.npz: not an .npz archive" in err
    # an .npy header declaring a (100000, 100000, 3) float64 array: 240 GB, refused from the header alone
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (100000, 100000, 3)})
    with zipfile.ZipFile(bundle / "head.npz", "w") as z:
        z.writestr("w0.npy", buf.getvalue() + b"\0" * 64)
        z.writestr("layers.npy", buf.getvalue())
    _write(bundle, _manifest(bundle), rehash=True)
    with pytest.raises(ValueError, match=r"head.npz\[w0\]: header declares shape \(100000, 100000, 3\)"):
        load_head(bundle / "head.npz")
    err = _one_line_refusal(_verify(bundle))
    assert "header declares shape" in err


def test_converter_dump_never_writes_aliases():
    """yaml.safe_dump writes a shared object as &id001/*id001, which the loader refuses; safeyaml.dump does not."""
    shared = {"logits": [1, 4]}
    text = safeyaml.dump({"left": shared, "right": shared})
    assert "&" not in text and "*" not in text
    assert safeyaml.load(text) == {"left": shared, "right": shared}
