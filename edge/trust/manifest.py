"""manifest.yaml's schema: every field's type and range, checked before anything uses it.

A manifest is data from outside the board (a USB stick, a download): a wrong type must end in one line
naming the key, never in a traceback or a huge allocation deep inside a backend. Unknown keys are
refused too, so a manifest from a newer converter is not half-understood.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from edge.trust import semver
from edge.trust.safeyaml import cut, shown

FORMAT = "skinedge-bundle/1"
ARTEFACT_KINDS = ("fp32_onnx", "int8_onnx", "int8_tflite", "fp32_tflite", "head")
MAX_CLASSES = 1000
MAX_MEMBERS = 16


class ManifestError(ValueError):
    """'<dotted.key>: expected ..., found ...'."""


Check = Callable[[Any, str], Any]


def _fail(key: str, expected: str, v: Any) -> None:
    raise ManifestError(f"{key}: expected {expected}, found {shown(v)} ({type(v).__name__})")


def text(max_len: int = 200, pattern: str | None = None) -> Check:
    def check(v, key):
        if not isinstance(v, str) or not 0 < len(v) <= max_len or (pattern and not re.fullmatch(pattern, v)):
            _fail(key, f"a string of 1..{max_len} characters" + (f" matching {pattern}" if pattern else ""), v)
        return v
    return check


def const(value: str) -> Check:
    def check(v, key):
        if v != value:
            _fail(key, repr(value), v)
        return v
    return check


def integer(lo: int, hi: int) -> Check:
    def check(v, key):
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            _fail(key, f"an integer in {lo}..{hi}", v)
        return v
    return check


def number(lo: float, hi: float) -> Check:
    def check(v, key):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            _fail(key, f"a number in {lo}..{hi}", v)
        return float(v)
    return check


def optional(check: Check) -> Check:
    return lambda v, key: None if v is None else check(v, key)


def either(*checks: Check) -> Check:
    """The first check that accepts the value; the last one's message otherwise."""
    def check(v, key):
        for c in checks[:-1]:
            try:
                return c(v, key)
            except ManifestError:
                pass
        return checks[-1](v, key)
    return check


def seq(item: Check, lo: int, hi: int, unique: bool = False) -> Check:
    def check(v, key):
        if not isinstance(v, list) or not lo <= len(v) <= hi:
            _fail(key, f"a list of {lo}..{hi} items" if lo != hi else f"a list of {lo} items", v)
        out = [item(x, f"{key}[{i}]") for i, x in enumerate(v)]
        if unique and len(set(map(repr, out))) != len(out):
            _fail(key, "a list without repeated items", v)
        return out
    return check


def mapping(fields: dict[str, tuple[Check, bool]] | None = None, keys: Check | None = None,
            values: Check | None = None, max_items: int = 1000, min_items: int = 0) -> Check:
    """Fixed `fields` {name: (check, required)}, or free-form entries whose keys and values are checked."""
    def check(v, key):
        if not isinstance(v, dict) or not min_items <= len(v) <= max_items:
            _fail(key, f"a mapping of {min_items}..{max_items if fields is None else len(fields)} entries", v)
        out = {}
        for k, x in v.items():
            sub = cut(f"{key}.{k}" if key else str(k))
            if fields is not None:
                if k not in fields:
                    raise ManifestError(f"{sub}: unknown key (known: {', '.join(fields)})")
                out[k] = fields[k][0](x, sub)
            else:
                out[keys(k, f"{key} key {shown(k, 60)}")] = values(x, sub)
        for k, (_, required) in (fields or {}).items():
            if required and k not in v:
                raise ManifestError(f"{key + '.' if key else ''}{k}: required key is missing")
        return out
    return check


def relpath(allow_dot: bool = False) -> Check:
    """A POSIX path relative to the bundle that cannot climb out of it lexically."""
    def check(v, key):
        ok = isinstance(v, str) and 0 < len(v) <= 255 and not v.startswith("/") and "\\" not in v and "\0" not in v
        parts = v.split("/") if ok else []
        if not ok or (v != "." or not allow_dot) and any(p in ("", ".", "..") for p in parts):
            _fail(key, "a relative path inside the bundle (no leading /, no '..', no empty part)", v)
        return v
    return check


def flag(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        _fail(key, "true or false", v)
    return v


def semantic_version(v: Any, key: str) -> str:
    """MAJOR.MINOR.PATCH[-pre][+build]: the board orders versions to refuse a rollback (edge/trust/rollback.py)."""
    try:
        semver.parse(v)
    except ValueError:
        _fail(key, "a semantic version MAJOR.MINOR.PATCH such as 1.4.0 or 2.0.0-rc.1", v)
    return v


NAME = text(100, r"[A-Za-z0-9_.-]+")
SHA256 = text(64, r"[0-9a-f]{64}")
SCALAR = either(flag, number(-1e12, 1e12), optional(text(500)))
DIM = integer(1, 100_000)
METRIC = either(optional(number(-1e12, 1e12)), mapping(keys=text(100), values=optional(number(-1e12, 1e12))))
TFLITE_MAP = mapping({"logits": (integer(0, 1), True), "features": (integer(0, 1), True)})
MEMBER = mapping({
    "name": (NAME, True),
    "arch": (text(200), True),
    "dir": (relpath(allow_dot=True), True),
    "weight": (number(1e-6, 1e6), True),
    "outputs": (mapping({"logits": (seq(DIM, 2, 2), True), "features": (seq(DIM, 4, 4), True)}), True),
    "artefacts": (mapping({kind: (relpath(), kind == "head") for kind in ARTEFACT_KINDS}), True),
    "tflite_outputs": (optional(either(TFLITE_MAP, mapping({"int8_tflite": (TFLITE_MAP, False),
                                                           "fp32_tflite": (TFLITE_MAP, False)}, min_items=1))), False),
})
TOLERANCE = mapping({
    "dprob": (number(0, 1), True),
    "logit_shift": (number(0, 100), True),
    "cam_corr": (number(-1, 1), True),
    "cam_median": (number(-1, 1), True),
})
# scalars nested up to 3 mappings deep: calibration.mixed_precision.<member>.float_convs.<conv> (convert.mixed)
CALIBRATION_VALUE = SCALAR
for _ in range(3):
    CALIBRATION_VALUE = either(SCALAR, mapping(keys=text(100), values=CALIBRATION_VALUE))
SCHEMA = mapping({
    "format": (const(FORMAT), True),
    "name": (text(200), True),
    "arch": (text(200), True),
    "version": (semantic_version, True),
    "created": (text(50), True),
    "labels": (seq(text(100), 1, MAX_CLASSES, unique=True), True),
    "input": (mapping({
        "size": (seq(integer(8, 8192), 2, 2), True),
        "dtype": (const("uint8"), True),
        "layout": (mapping({"onnx": (const("NCHW"), True), "tflite": (const("NHWC"), True)}), True),
        # the model's own preprocessing, inside the graph (convert.export.Preprocessing); the board feeds RGB
        "normalisation": (mapping({"mean": (seq(number(-1e3, 1e3), 3, 3), True),
                                   "std": (seq(number(1e-6, 1e3), 3, 3), True), "where": (text(100), True),
                                   "preset": (optional(text(50)), False), "units": (text(50), False),
                                   "channel_order": (text(3, "RGB|BGR"), False), "formula": (text(200), False)}),
                          True),
    }), True),
    "ensemble": (optional(mapping({"weights": (seq(number(1e-6, 1e6), 2, MAX_MEMBERS), True)})), False),
    "models": (seq(MEMBER, 1, MAX_MEMBERS), True),
    "calibration": (optional(mapping(keys=text(100), values=CALIBRATION_VALUE)), False),
    "validation": (optional(mapping(keys=text(100), values=mapping(keys=text(100), values=METRIC))), False),
    "golden": (optional(mapping(keys=text(100), values=either(SCALAR, mapping(keys=text(100), values=SCALAR)))), False),
    "tolerances": (optional(mapping(keys=text(100), values=TOLERANCE, min_items=1)), False),
    "gates": (optional(mapping({"ood": (mapping({  # edge/gates.py, written by convert/ood.py
        "file": (const("gate.npz"), True), "method": (text(100), True), "threshold": (number(-1e12, 1e12), True),
        "members": (seq(mapping({"method": (text(100), True), "loc": (number(-1e12, 1e12), True),
                                 "scale": (number(1e-12, 1e12), True)}), 1, MAX_MEMBERS), True),
        "max_flag_rate": (number(0, 1), True),
        "image": (mapping({"method": (const("image_stats"), True), "loc": (number(-1e12, 1e12), True),
                           "scale": (number(1e-12, 1e12), True)}), False)}), True)})), False),
    "artefacts": (mapping(keys=relpath(), values=SHA256, max_items=10_000), True),
})


def check(man: Any) -> dict:
    """The manifest with every field checked (ManifestError naming the first bad key otherwise) and normalised
    (numbers as floats, TFLite output mappings per artefact), plus the cross-field rules: each member's logits
    match the labels, ensemble weights match the members."""
    if not isinstance(man, dict):
        _fail("manifest", "a mapping of keys", man)
    if man.get("format") != FORMAT:  # first, so an unrelated YAML file says what it is not
        _fail("format", repr(FORMAT), man.get("format"))
    man = SCHEMA(man, "")
    k = len(man["labels"])
    for m in man["models"]:  # bundles from before the fp32 TFLite artefact: one flat mapping, the int8 model's
        if set(m.get("tflite_outputs") or {}) == {"logits", "features"}:
            m["tflite_outputs"] = {"int8_tflite": m["tflite_outputs"]}
    for i, m in enumerate(man["models"]):
        if m["outputs"]["logits"] != [1, k]:
            raise ManifestError(f"models[{i}].outputs.logits: {m['outputs']['logits']} has "
                                f"{m['outputs']['logits'][-1]} classes but there are {k} labels")
    ens = man.get("ensemble")
    if ens is not None and len(ens["weights"]) != len(man["models"]):
        raise ManifestError(f"ensemble.weights: {len(ens['weights'])} weights for {len(man['models'])} models")
    return man
