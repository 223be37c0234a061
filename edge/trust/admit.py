"""What a board admits at start-up: the bundle under the device config's signature policy and its version
against the highest this board has accepted from the same signer (edge/trust/rollback.py), and what it is.

`Provenance` travels with every answer into the HUD, the ready line, the captures and the results, so a
record says which model produced it and how far it was trusted: signed by a key this board pins, signed by a
key it does not pin (integrity only), or UNSIGNED (only where the config says allow_unsigned).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.trust.bundle import Bundle, load_bundle
from edge.trust.rollback import VersionBook
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
    downgrade_from: str | None = None  # the higher version accepted before, when --allow-downgrade let this one run

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
                "signature": self.signature, "downgrade_from": self.downgrade_from}

    def describe(self) -> str:
        """'demo 0.1.0 (signed by ed25519:3f2a..., a pinned key)' or 'demo 0.1.0 (UNSIGNED MODEL)': the ready line's."""
        if self.signer is None:
            return f"{self.name} {self.version} ({UNSIGNED_MODEL})"
        down = f"; DOWNGRADE from {self.downgrade_from}, allowed by --allow-downgrade" if self.downgrade_from else ""
        return (f"{self.name} {self.version} (signed by {self.signer}, "
                f"{'a pinned key' if self.pinned else NOT_PINNED}{down})")


def admit(bundle_path: str, trust: Trust, book: VersionBook | None = None,
          allow_downgrade: bool = False) -> tuple[Bundle, Provenance]:
    """Load and check the bundle under `trust`, and a signed one's version against `book` (BundleError,
    SignatureError or RollbackError with one line otherwise). Nothing is recorded: see accept()."""
    bundle = load_bundle(bundle_path, trust=trust)
    signer = key_id(bundle.signer) if bundle.signer else None
    version = str(bundle.manifest["version"])
    downgrade = None
    if book is not None and signer is not None:
        downgrade = book.check(bundle.name, signer, version, allow_downgrade).downgrade_from
    return bundle, Provenance(bundle.name, version, bundle.digest, signer, pinned=bundle.signer in trust.keys,
                              downgrade_from=downgrade)


def accept(book: VersionBook, model: Provenance) -> None:
    """Remember a signed model's version as accepted (once it passed every start-up check)."""
    if model.signer is not None:
        book.accept(model.name, model.signer, model.version)
