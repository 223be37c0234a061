"""Ed25519 bundle signatures: sign on the workstation, pin the public key on the board.

The manifest hashes every file of the bundle, so a signature over manifest.yaml's bytes covers the whole
bundle, labels and version included. Hashes (and the golden self-test) alone do not stop someone who can write
the bundle, since they can recompute them: only a signature by a key the board pins proves intent. A board
checks the signature first, on the raw manifest bytes, before anything in the bundle is parsed or opened, and
by default runs only bundles signed by one of its `trusted_keys`; an unsigned bundle needs `allow_unsigned:
true` in the device config and is then announced as UNSIGNED MODEL. Key files: the private key is PKCS#8 PEM
(mode 0600), the public key one line `ed25519:<base64>` that goes into the device config as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from edge.record.durable import fsync_dir, write_durable
from edge.trust.bundletree import SIGNATURE  # beside manifest.yaml, the one file besides it that is not hashed
from edge.trust.safeyaml import MAX_BYTES, read_small

FORMAT = "skinedge-signature/1"
PREFIX = "ed25519:"


class SignatureError(ValueError):
    """One line: why the bundle's signature is refused."""


@dataclass(frozen=True)
class Trust:
    """What a board accepts: signatures by `keys`; with `required`, nothing else (a device config's default, unless
    allow_unsigned). Without `required` (allow_unsigned, or a workstation's `verify` with no config) an unsigned
    bundle is accepted and a signature by any key is checked for integrity only."""

    keys: tuple[str, ...] = ()
    required: bool = False


def key_bytes(text: str) -> bytes:
    """The 32 raw bytes of an `ed25519:<base64>` public key; ValueError if it is not one."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise ValueError(f"expected a public key '{PREFIX}<base64>' (from skinedge keygen's .pub file)")
    try:
        raw = base64.b64decode(text[len(PREFIX):], validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"expected a public key '{PREFIX}<base64 of 32 bytes>', the base64 part does not decode to 32 bytes")
    return raw


def short(key: str) -> str:
    return key[: len(PREFIX) + 12] + "..."


def key_id(key: str) -> str:
    """A public key's short, stable name for records and the version state: 'ed25519:' + 16 hex digits of the
    sha256 of its 32 bytes."""
    return PREFIX + hashlib.sha256(key_bytes(key)).hexdigest()[:16]


def keygen(out: Path) -> str:
    """Write a new private key to `out` (0600) and its public key to `out`.pub; return the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(out)
    if not out.name or out.is_dir():
        raise SignatureError(f"--out {out}: give a file name for the private key (FILE, and FILE.pub beside it)")
    pub_path = out.with_name(out.name + ".pub")
    for p in (out, pub_path):
        if p.exists():
            raise SignatureError(f"{p}: already exists (a key is never overwritten)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    line = PREFIX + base64.b64encode(raw).decode()
    pub_path.write_text(line + "\n")
    return line


def sign(root: Path, key_path: Path) -> str:
    """Sign root/manifest.yaml with the private key at `key_path`; replace root/signature atomically (a failed
    sign leaves the earlier signature in place); return the public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(read_small(key_path, 1 << 16), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise SignatureError(f"{key_path}: not a private key from skinedge keygen ({str(e)[:120]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{key_path}: not an Ed25519 private key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub = PREFIX + base64.b64encode(raw).decode()
    sig = key.sign(read_small(Path(root) / "manifest.yaml", MAX_BYTES + 1))
    # the old signature is replaced only by a complete new one: a failure before here leaves it as it was
    write_durable(Path(root) / SIGNATURE, f"{FORMAT}\nkey {pub}\nsig {base64.b64encode(sig).decode()}\n".encode())
    fsync_dir(Path(root))
    return pub


def read_public_key(spec: str) -> str:
    """A public key from the command line: the 'ed25519:...' line itself, or a .pub file holding it. A file any
    user may write is refused (anyone could put their own key there); SignatureError with one line."""
    if spec.startswith(PREFIX):
        text = spec
    else:
        path = Path(spec)
        try:
            if path.stat().st_mode & stat.S_IWOTH:
                raise SignatureError(f"{path}: writable by every user, so anyone could put their own key there; "
                                     f"chmod o-w {path}")
            text = read_small(path, 4096).decode("ascii", "replace").strip()
        except OSError as e:
            raise SignatureError(f"{path}: cannot read the public key ({e.strerror or e}); give a .pub file from "
                                 "skinedge keygen or the 'ed25519:...' line") from None
    try:
        key_bytes(text)
    except ValueError as e:
        raise SignatureError(f"{spec[:100]}: {e}") from None
    return text


def _read(path: Path) -> tuple[str, bytes]:
    try:
        text = read_small(path, 4096).decode("ascii", "replace")
    except OSError as e:
        raise SignatureError(f"{path}: unreadable ({e.strerror or e})") from None
    lines = text.splitlines()
    try:
        assert lines[0] == FORMAT and lines[1].startswith("key ") and lines[2].startswith("sig ")
        key, sig = lines[1][4:], base64.b64decode(lines[2][4:], validate=True)
        key_bytes(key)
    except (AssertionError, IndexError, ValueError):
        raise SignatureError(f"{path}: not a {FORMAT} file") from None
    return key, sig


def check(root: Path, manifest: bytes, trust: Trust) -> str | None:
    """The signer's public key if root/signature is a valid signature of `manifest` acceptable under `trust`;
    None for an unsigned bundle that `trust` allows; SignatureError otherwise."""
    path = Path(root) / SIGNATURE
    if trust.required and not trust.keys:
        raise SignatureError(f"{root}: this board pins no trusted_keys, so no bundle can be trusted: pin the "
                             "clinic's public key (systemd/install.sh --trusted-key KEY.pub, or trusted_keys in the "
                             "device config), or set allow_unsigned: true to run unsigned bundles as UNSIGNED MODEL")
    if not path.is_file():
        if trust.required:
            raise SignatureError(f"{root}: unsigned bundle, but this board requires a signature by one of its "
                                 "trusted_keys (sign it on the workstation: skinedge sign BUNDLE --key KEY; or set "
                                 "allow_unsigned: true in the device config to run it as UNSIGNED MODEL)")
        return None
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key, sig = _read(path)
    if trust.keys and key not in trust.keys:
        raise SignatureError(f"{path}: signed by {short(key)}, which is not among this board's trusted_keys")
    try:
        Ed25519PublicKey.from_public_bytes(key_bytes(key)).verify(sig, manifest)
    except InvalidSignature:
        raise SignatureError(f"{path}: does not match manifest.yaml (changed after signing)") from None
    return key
