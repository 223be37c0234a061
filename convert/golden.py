"""golden.npz and the self-test tolerances: chosen, computed and measured at conversion.

The golden images are the validation set's most borderline ones (smallest float top-1 margin, where a
tampered or broken model flips first) plus a round-robin over the classes. For each artefact the reference
outputs come from the runtime's CPU-independent mode where it has one: ONNX Runtime without graph
optimisation runs a QDQ model as DequantizeLinear -> float op -> QuantizeLinear, the exact integer semantics
with none of the u8s8 saturation of x86 CPUs without VNNI. LiteRT's reference kernels differ from XNNPACK
(the kernels every board runs) systematically, so a TFLite artefact's reference is this machine's XNNPACK
output and the reference kernels only measure how far two honest kernel sets drift apart.

golden.npz also records the label list and a digest of every manifest field that changes what a number means
(edge/trust/meaning.py), checked by the board's self-test before any number.

Tolerances are `MARGIN` times the drift measured on the golden images between the kernels a board runs (as
this machine has them) and the exact reference kernels (another CPU's kernels are assumed to drift no further
than twice what was seen here), never below a floor. They are never widened to absorb this machine's faults:
where ONNX Runtime's fused int8 kernels saturate (x86 without VNNI, edge.backends.cpu), the board-kernel drift
is measured on the same integers stored as uint8 weights, which its U8U8 kernels sum exactly (`u8_weights`:
on the demo bundle that gave max |dprob| 0.0202, CAM min 0.995, exactly what ONNX Runtime's kernels give on an
emulated Cortex-A72 and A76, where the saturating U8S8 kernels had 0.447 and 0.840). The quantities: max |dprob|, the largest per-class median shift of the centred logits (a
systematic bias moves every image; kernel noise does not), and the minimum and median Grad-CAM correlation.
"""

from __future__ import annotations

import argparse
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from calibration.dataset import load_batch, sample_per_class, scan
from edge.backends.cpu import u8s8_saturates
from edge.classify import Classifier
from edge.trust import manifest, meaning, safeyaml
from edge.trust.bundle import MANIFEST, Bundle, hash_tree, load_bundle
from edge.trust.bundletree import SIGNATURE
from edge.trust.npzfile import load_npz
from edge.trust.selftest import GOLDEN, Outputs, compare

MARGIN = 2.0
FUSED = "this CPU's fused kernels"
# Floors per precision: where this CPU's kernels equal the reference (fp32, or int8 on a CPU that does not
# saturate) the measured drift is ~0, yet another CPU sums in another order.
FLOORS = {"fp32": {"dprob": 0.002, "logit_shift": 0.01, "cam_corr": 0.01, "cam_median": 0.001},
          "int8": {"dprob": 0.02, "logit_shift": 0.05, "cam_corr": 0.05, "cam_median": 0.01}}
RUNNERS = {"fp32_onnx": ("onnx", "fp32"), "int8_onnx": ("onnx", "int8"), "int8_tflite": ("tflite", "int8"),
           "fp32_tflite": ("tflite", "fp32")}


def pick(float_probs: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of n golden images: the n//2 with the smallest float top-1 margin, then round-robin over the
    true classes among the rest."""
    srt = np.sort(float_probs, 1)
    border = list(np.argsort(srt[:, -1] - srt[:, -2], kind="stable")[: n // 2])
    rest = [[i for i in np.flatnonzero(labels == c) if i not in border] for c in np.unique(labels)]
    while len(border) < min(n, len(labels)):
        for pool in rest:
            if pool and len(border) < n:
                border.append(pool.pop(0))
    return np.sort(np.array(border, dtype=int))


def run(clf: Classifier, images: np.ndarray, targets: np.ndarray | None = None) -> Outputs:
    """Probabilities, per-member logits and Grad-CAM (for `targets`, else each image's top class)."""
    res = [clf(img, target=None if targets is None else int(t)) for img, t in
           zip(images, targets if targets is not None else [None] * len(images))]
    return Outputs(np.array([r.probs for r in res]), np.array([r.logits for r in res]), np.array([r.cam for r in res]))


def tolerance(board: Outputs, ref: Outputs, precision: str) -> dict[str, float]:
    """MARGIN times the measured drift between two honest kernel sets, floored, and clamped to what the
    quantities can be (a random-init model's maps can drift so far that 2x the drift leaves the -1..1 range)."""
    drift = compare(board, ref)
    floor = FLOORS[precision]
    return {
        "dprob": round(min(max(MARGIN * drift.max_dprob, floor["dprob"]), 1.0), 4),
        "logit_shift": round(min(max(MARGIN * drift.logit_shift, floor["logit_shift"]), 100.0), 4),
        "cam_corr": round(max(1 - max(MARGIN * (1 - drift.cam_min), floor["cam_corr"]), -1.0), 4),
        "cam_median": round(max(1 - max(MARGIN * (1 - drift.cam_median), floor["cam_median"]), -1.0), 4),
    }


def cpu() -> dict[str, str | bool]:
    """What the golden outputs were computed on: integer kernels (and so the drift) depend on it."""
    flags, model = "", platform.processor()
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), model)
        flags = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    versions = {}
    for dist in ("onnxruntime", "ai-edge-litert", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {"machine": platform.machine(), "cpu": model or "unknown",
            "vnni": any(f in flags.split() for f in ("avx512_vnni", "avx_vnni")), **versions}


def u8_weights(path: Path) -> bytes:
    """The int8 QDQ model with every int8 weight stored as uint8 (w + 128, zero point + 128): the same integers
    under DequantizeLinear, which ONNX Runtime's fused kernels sum exactly on any x86 (U8U8: pairs of 16-bit
    products, no int16 saturation), so their drift from the exact session is what a board's kernels show."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    shifted: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3 or node.input[0] not in inits:
            continue
        if inits[node.input[0]].data_type != onnx.TensorProto.INT8 or node.input[2] not in inits:
            continue
        for name in node.input[0], node.input[2]:
            if name not in shifted:  # an initializer shared by several nodes is shifted once
                values = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
                inits[name].CopyFrom(numpy_helper.from_array(values.astype(np.uint8), name))
                shifted.add(name)
    return model.SerializeToString()


def board_kernels(bundle: Bundle, kind: str, precision: str) -> tuple[Classifier, str]:
    """A classifier running the kernels a board runs, as this machine has them, and what they are: the runtime's
    fused kernels; for ONNX Runtime's int8 on a CPU where those saturate, the U8U8 ones (u8_weights)."""
    clf = Classifier(bundle, kind, threads=2, precision=precision, fused=True)
    if (kind, precision) != ("onnx", "int8") or not u8s8_saturates():
        return clf, FUSED
    from edge.backends.onnx import OnnxBackend

    # the same members with their weights as uint8 (the file's integers, untouched on disk)
    clf.backends = [OnnxBackend(u8_weights(m.files["int8_onnx"]), 2, "int8_onnx", fused=True) for m in bundle.members]
    return clf, "ONNX Runtime's fused kernels on the int8 weights stored as uint8 (this CPU's U8S8 kernels saturate)"


def write(bundle: Bundle, artefacts: list[str], images: np.ndarray, float_probs: np.ndarray,
          float_cams: np.ndarray) -> dict:
    """Run every artefact on the golden images on board kernels and reference kernels, write golden.npz into the
    bundle, and return the manifest's `golden` and `tolerances` entries."""
    arrays = {"input": images, "probs_float": float_probs, "cam_float": float_cams}
    tolerances, measured = {}, {}
    for artefact in artefacts:
        kind, precision = RUNNERS[artefact]
        ref = run(Classifier(bundle, kind, threads=2, precision=precision, reference=True), images)
        clf, measured[artefact] = board_kernels(bundle, kind, precision)
        tolerances[artefact] = tolerance(run(clf, images, ref.probs.argmax(1)), ref, precision)
        golden = ref if kind == "onnx" else run(clf, images)  # maps for its own top class, as the self-test asks
        arrays.update({f"probs_{artefact}": golden.probs, f"logits_{artefact}": golden.logits,
                       f"cam_{artefact}": golden.cams})
    entries = {
        "golden": {"n": len(images), "margin": MARGIN,
                   "reference": {"onnx": "onnxruntime, graph optimisation off (exact QDQ integer semantics)",
                                 "tflite": "this machine's XNNPACK; drift measured against LiteRT's reference kernels"},
                   "computed_on": cpu(), "board_kernels": measured},  # what each tolerance's drift was measured on
        "tolerances": tolerances,
    }
    np.savez(bundle.root / GOLDEN, **arrays, **meaning_arrays({**bundle.manifest, **entries}))
    return entries


def meaning_arrays(man: dict) -> dict[str, np.ndarray]:
    """golden.npz's record of what the numbers mean: the label list and edge.trust.meaning's digest, over the
    manifest as the board reads it (written and schema-checked first, so its numbers are normalised alike)."""
    checked = manifest.check(safeyaml.load(safeyaml.dump(man)))
    return {"labels": np.array(checked["labels"]), "meaning": np.array(meaning.digest(checked))}


def stamp(root: Path) -> None:
    """Record the manifest's current labels and meaning digest in golden.npz and re-hash, after a deliberate
    change to what the numbers mean that leaves the model's outputs as they were (convert/gate_bundle.py adds a
    gate). Any signature is removed: whoever stamps must sign again, since stamping is exactly what someone
    tampering with an unsigned bundle would do."""
    bundle = load_bundle(root, check_signature=False)
    arrays = {k: v for k, v in load_npz(root / GOLDEN).items() if k not in ("labels", "meaning")}
    np.savez(root / GOLDEN, **arrays, **meaning_arrays(bundle.manifest))
    (root / SIGNATURE).unlink(missing_ok=True)
    man = dict(_raw_manifest(root), artefacts=hash_tree(root))
    (root / MANIFEST).write_text(safeyaml.dump(man))


def _raw_manifest(root: Path) -> dict:
    """manifest.yaml as written (Bundle.manifest is schema-normalised: integers of number fields become floats)."""
    return safeyaml.load(safeyaml.read(root / MANIFEST))


def card_section(man: dict) -> str:
    """MODEL_CARD.md's self-test section: tolerances per artefact and what the references were computed on."""
    g, tol = man.get("golden"), man.get("tolerances") or {}
    if not g:
        return ""
    on, measured = g["computed_on"], g.get("board_kernels") or {}
    rows = "".join(f"| {a} | {t['dprob']} | {t['logit_shift']} | {t['cam_corr']} | {t['cam_median']} | "
                   f"{measured.get(a, FUSED)} |\n" for a, t in tol.items())
    return f"""## Golden self-test
{g['n']} golden images (the most borderline validation images first). Tolerances are {g['margin']}× the drift
measured here between the board kernels and the exact reference kernels, with floors. References computed on
{on['machine']} ({on['cpu']}, VNNI: {'yes' if on['vnni'] else 'no'}), onnxruntime {on['onnxruntime']},
ai-edge-litert {on['ai-edge-litert']}.

| artefact | max abs dprob | class logit shift | CAM corr min | CAM corr median | drift measured on |
|---|---|---|---|---|---|
{rows}"""


def refresh(root: Path, val: Path, n: int = 24) -> dict:
    """Re-measure an existing bundle's golden file and tolerances without re-converting it (the artefacts are
    unchanged). The float reference is the fp32 ONNX run without graph optimisation, which the converter's
    validation shows equal to the torch model (max |dprob| 1e-6). Any signature is removed: re-sign after."""
    bundle = load_bundle(root)
    data = scan(val, bundle.labels)
    images = load_batch(sample_per_class(data, None, seed=1), bundle.input_size)
    flt = run(Classifier(bundle, "onnx", threads=2, precision="fp32", reference=True), images.images)
    idx = pick(flt.probs, images.labels, n)
    artefacts = [a for a in RUNNERS if bundle.has(a)]
    man = dict(_raw_manifest(root), **write(bundle, artefacts, images.images[idx], flt.probs[idx], flt.cams[idx]))
    card = root / "MODEL_CARD.md"
    card.write_text(card.read_text().split("## Golden self-test")[0].rstrip() + "\n\n" + card_section(man))
    (root / SIGNATURE).unlink(missing_ok=True)
    man["artefacts"] = hash_tree(root)
    (root / MANIFEST).write_text(safeyaml.dump(man))
    load_bundle(root)
    return man


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert.golden",
                                description="re-measure a bundle's golden.npz and self-test tolerances")
    p.add_argument("bundle", type=Path)
    p.add_argument("--val", type=Path, required=True, help="the held-out ImageFolder the bundle was validated on")
    p.add_argument("--n", type=int, default=24)
    a = p.parse_args(argv)
    man = refresh(a.bundle, a.val, a.n)
    for artefact, tol in man["tolerances"].items():
        print(f"{artefact}: {tol}")
    print(f"{a.bundle}: golden.npz and tolerances refreshed; sign it again if it was signed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
