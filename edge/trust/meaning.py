"""What the numbers of a bundle mean, as one digest: labels and their order, preprocessing, outputs, ensemble
weights, gates and self-test tolerances.

The golden self-test compares class *indices*: a manifest whose labels were swapped would pass it and show
"normal" for every "pigmented" lesion. So golden.npz records the label list and this digest of every manifest
field that changes what a number means (convert/golden.py writes them), and the self-test refuses a bundle
whose manifest no longer matches them (edge/trust/selftest.py). That catches an edited or mixed-up manifest on
any board, signed or not; only the signature proves who made the bundle (someone who can edit the manifest can
also recompute golden.npz and every hash).
"""

from __future__ import annotations

import hashlib
import json

# manifest fields that change what a probability, a class, a gate outcome or the self-test's verdict means
FIELDS = ("name", "arch", "version", "labels", "input", "ensemble", "models", "gates", "tolerances")


def digest(manifest: dict) -> str:
    """sha256 of the canonical JSON of FIELDS (as edge.trust.manifest.check normalises them)."""
    meaning = {k: manifest.get(k) for k in FIELDS}
    text = json.dumps(meaning, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
