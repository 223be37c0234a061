"""What a board admits at start-up: the bundle under the device config's signature policy, and what it is.

`Provenance` travels with every answer into the HUD, the ready line, the captures and the results, so a
record says which model produced it and how far it was trusted (signed by a pinned key, or UNSIGNED).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.trust.bundle import Bundle, load_bundle
from edge.trust.signing import Trust, key_id

UNSIGNED = "UNSIGNED"
UNSIGNED_MODEL = "UNSIGNED MODEL"  # what the HUD, the ready line and captures say for an unsigned bundle


@dataclass(frozen=True)
class Provenance:
    """Which model answered, and how far it is trusted."""

    name: str
    version: str
    digest: str  # sha256 of manifest.yaml (covers every file's hash)
    signer: str | None  # key id of the checked signature (edge.trust.signing.key_id); None: unsigned

    @property
    def signature(self) -> str:
        return self.signer or UNSIGNED

    @property
    def warning(self) -> str | None:
        """The line the HUD, the ready line and every capture carry when the model is not signed."""
        return UNSIGNED_MODEL if self.signer is None else None

    def record(self) -> dict[str, object]:
        """JSON-ready fields for captures and per-frame results."""
        return {"model": self.name, "model_version": self.version, "bundle_hash": self.digest,
                "signature": self.signature}

    def describe(self) -> str:
        """'demo 0.1.0 (signed by 3f2a...)' or 'demo 0.1.0 (UNSIGNED MODEL)', for the ready line."""
        return f"{self.name} {self.version} ({self.warning or f'signed by {self.signer}'})"


def admit(bundle_path: str, trust: Trust) -> tuple[Bundle, Provenance]:
    """Load and check the bundle under `trust` (BundleError / SignatureError with one line otherwise)."""
    bundle = load_bundle(bundle_path, trust=trust)
    signer = key_id(bundle.signer) if bundle.signer else None
    return bundle, Provenance(bundle.name, str(bundle.manifest["version"]), bundle.digest, signer)
