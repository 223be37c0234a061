"""The board's own Ed25519 key: it signs every capture record and the chain's head (edge/record/chain.py).

Made once per board, in the state directory that holds the store (/var/lib/skinedge for the default
store.path /var/lib/skinedge/captures): `device-key` (PKCS#8 PEM, 0600) and `device-key.pub` (one line
`ed25519:<base64>`, the format of bundle keys). systemd/install.sh makes it and prints the public key; `run` and
`capture` make it at their first capture if it is missing, and say so. It is never overwritten: creation is
atomic (temp file, fsync, link), so two processes or a power cut cannot leave half a key. A lost key means a
new one, which `captures verify` then reports from the record where it changed.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from edge.record.durable import write_new
from edge.trust.signing import PREFIX, key_bytes

log = logging.getLogger(__name__)
KEY_NAME = "device-key"


class DeviceKeyError(RuntimeError):
    """One line: which key file and what is wrong with it."""


def key_path(store_root: Path | str) -> Path:
    """Where the device key of the store at `store_root` lives: beside it, in the state directory."""
    return Path(os.path.abspath(store_root)).parent / KEY_NAME


def pub_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


@dataclass(frozen=True)
class DeviceKey:
    path: Path
    public: str  # ed25519:<base64>
    _private: object  # cryptography's Ed25519PrivateKey

    def sign(self, text: str) -> str:
        return base64.b64encode(self._private.sign(text.encode())).decode()


def _public_line(private) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PREFIX + base64.b64encode(raw).decode()


def load(path: Path) -> DeviceKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as e:
        raise DeviceKeyError(f"device key {path}: {e.strerror or e}") from e
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        private = None
    if not isinstance(private, Ed25519PrivateKey):
        raise DeviceKeyError(f"device key {path}: not an Ed25519 private key in PEM (damaged?); move it aside and a "
                             "new key is made (captures verify then reports the key change)")
    if mode & 0o077:
        log.warning("device key %s: readable by other users (mode %o); it should be 0600", path, mode)
    return DeviceKey(path, _public_line(private), private)


def load_or_create(path: Path) -> DeviceKey:
    """The key at `path`; made (with its .pub) if there is none, with a warning line naming the public key."""
    path = Path(path)
    if not path.exists():
        _create(path)
    key = load(path)
    if not pub_path(path).is_file():  # a crash between the two files, or deleted: the .pub derives from the key
        try:
            write_new(pub_path(path), (key.public + "\n").encode(), 0o644)
        except OSError as e:
            log.warning("device key %s: its public key file cannot be written: %s", path, e.strerror or e)
    return key


def public_key(path: Path) -> str | None:
    """The public key line of the key at `path` (its .pub, else derived from the private key); None if neither
    can be read."""
    try:
        line = pub_path(path).read_text(encoding="ascii").strip()
        key_bytes(line)
        return line
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    try:
        return load(path).public
    except DeviceKeyError:
        return None


def _create(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        made = write_new(path, pem, 0o600)
    except OSError as e:
        raise DeviceKeyError(f"device key {path}: cannot be made: {e.strerror or e}") from e
    if made:
        write_new(pub_path(path), (_public_line(private) + "\n").encode(), 0o644)
        log.warning("skinedge: made this board's device key %s; it signs every capture. Public key: %s (keep it "
                    "to check exports: skinedge captures verify --zip FILE --key ...)", path, _public_line(private))
