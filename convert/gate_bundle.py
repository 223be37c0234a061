"""Give an existing bundle an OOD gate without converting it again: `python -m convert.gate_bundle BUNDLE
--calib DIR --val DIR`.

Bundles made before the gates existed run with the OOD gate off. This fits the same gate `skinedge convert`
fits (convert/ood.py), from the bundle's own fp32 ONNX model run by the board's code (the float model, as
exported), writes gate.npz, adds `gates.ood` to the manifest, records the new meaning in golden.npz
(convert.golden.stamp), re-hashes, and adds the gate figures to report.json and MODEL_CARD.md. Use the
calibration and validation sets the bundle was converted with; sign the bundle again afterwards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from calibration.dataset import load_batch, sample_per_class, scan
from convert import golden
from convert.ood import bundle_model, card_section, fit_for_set
from edge.gates import GATE_FILE
from edge.trust import safeyaml
from edge.trust.bundle import MANIFEST, hash_tree, load_bundle

CARD_ANCHOR = "## Warnings"


def add_gate(root: Path, calib: Path, val: Path, per_class: int = 100) -> dict:
    """Fit and store the gate in the bundle at `root`; returns the figures."""
    bundle = load_bundle(root)
    val_images = load_batch(sample_per_class(scan(val, bundle.labels), None, seed=1), bundle.input_size).images
    with bundle_model(root) as model:
        gate = fit_for_set(model, bundle.weights, scan(calib, bundle.labels), per_class, val_images, print)
    if gate is None:
        raise SystemExit(f"{root}: no gate added")
    spec, arrays, figures = gate
    np.savez(root / GATE_FILE, **arrays)
    report = json.loads((root / "report.json").read_text())
    report["gates"] = figures
    (root / "report.json").write_text(json.dumps(report, indent=2))
    text = (root / "MODEL_CARD.md").read_text()
    card = text.split("## Gates\n")[0].split(CARD_ANCHOR)[0]
    (root / "MODEL_CARD.md").write_text(card + card_section(figures, "; added to this bundle after conversion by "
                                                            "convert/gate_bundle.py") + CARD_ANCHOR
                                        + text.split(CARD_ANCHOR, 1)[1])
    man = safeyaml.load(safeyaml.read(root / MANIFEST))
    man["gates"] = {"ood": spec}
    man["artefacts"] = hash_tree(root)
    (root / MANIFEST).write_text(safeyaml.dump(man))
    golden.stamp(root)  # the gate changes what the numbers mean; golden.npz records it
    load_bundle(root)  # the same checks as on the board
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert.gate_bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--calib", type=Path, required=True, help="ImageFolder the gate is fitted on")
    p.add_argument("--val", type=Path, required=True, help="ImageFolder the threshold is set on")
    p.add_argument("--per-class", type=int, default=100)
    a = p.parse_args(argv)
    add_gate(a.bundle, a.calib, a.val, a.per_class)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
