"""The page's TLS certificate: made on the board at install (systemd/install.sh --web-tls), self-signed.

No certificate authority knows a clinic board, so the browser warns on first contact; the user compares the
certificate's SHA-256 fingerprint the browser shows with the one on the board's own screen (HUD) and accepts it
once. The key is ECDSA P-256 (small and quick on a Pi), the certificate names the board's address and is valid
for ten years (a clinic board has no one to renew it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from edge.web import WebError

VALID_DAYS = 3650


def make_certificate(cert_path: Path, key_path: Path, address: str) -> str:
    """Write a new key (0600) and a self-signed certificate for `address`; return the certificate's fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"skinedge {address}")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint(cert_path)


def fingerprint(cert_path: Path | str) -> str:
    """SHA-256 of the certificate (DER) as browsers show it: 'AB:CD:...' (32 bytes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError) as e:
        raise WebError(f"web.tls_cert: {cert_path}: not a readable PEM certificate ({e})") from e
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()
