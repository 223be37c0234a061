"""What a board admits at start-up: the bundle under the device config's signature policy, and what it is.

`Provenance` travels with every answer into the HUD, the ready line, the captures and the results, so a
record says which model produced it and how far it was trusted: signed by a key this board pins, signed by a
key it does not pin (integrity only), or UNSIGNED (only where the config says allow_unsigned).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.trust.bundle import Bundle, load_bundle
from edge.trust.signing import Trust, key_id

UNSIGNED = "UNSIGNED"
UNSIGNED_MODEL = "UNSIGNED MODEL"  # what the HUD, the ready line and captures say for an unsigned bundle
NOT_PINNED = "SIGNER NOT PINNED"  # signed, but by a key this board does not pin: integrity, not identity


@dataclass(frozen=True)
class Provenance:
    """Which model answered, and how far it is trusted."""

    name: str
    version: str
    digest: str  # sha256 of manifest.yaml (covers every file's hash)
    signer: str | None  # key id of the checked signature (edge.trust.signing.key_id); None: unsigned
    pinned: bool = False  # the signer is one of the board's trusted_keys

    @property
    def signature(self) -> str:
        """'UNSIGNED', 'ed25519:<id>' (a pinned key) or 'ed25519:<id> not pinned'."""
        if self.signer is None:
            return UNSIGNED
        return self.signer if self.pinned else f"{self.signer} not pinned"

    @property
    def warning(self) -> str | None:
        """The line the HUD, the ready line and every capture carry when the model's maker is not proven."""
        if self.signer is None:
            return UNSIGNED_MODEL
        return None if self.pinned else NOT_PINNED

    def record(self) -> dict[str, object]:
        """JSON-ready fields for captures and per-frame results."""
        return {"model": self.name, "model_version": self.version, "bundle_hash": self.digest,
                "signature": self.signature}

    def describe(self) -> str:
        """'demo 0.1.0 (signed by ed25519:3f2a..., a pinned key)' or 'demo 0.1.0 (UNSIGNED MODEL)': the ready line's."""
        if self.signer is None:
            return f"{self.name} {self.version} ({UNSIGNED_MODEL})"
        return f"{self.name} {self.version} (signed by {self.signer}, {'a pinned key' if self.pinned else NOT_PINNED})"


def admit(bundle_path: str, trust: Trust) -> tuple[Bundle, Provenance]:
    """Load and check the bundle under `trust` (BundleError / SignatureError with one line otherwise)."""
    bundle = load_bundle(bundle_path, trust=trust)
    signer = key_id(bundle.signer) if bundle.signer else None
    return bundle, Provenance(bundle.name, str(bundle.manifest["version"]), bundle.digest, signer,
                              pinned=bundle.signer in trust.keys)
