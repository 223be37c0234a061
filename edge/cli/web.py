"""`skinedge web-cert`: the TLS certificate of the board's page (systemd/install.sh --web-tls runs it)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path


def _web_cert(a: argparse.Namespace) -> int:
    from edge.web.tls import make_certificate

    try:
        ipaddress.ip_address(a.address)
    except ValueError:
        print(f"skinedge web-cert: --address {a.address[:60]!r}: expected the IP address the page listens on",
              file=sys.stderr)
        return 2
    if not a.out.is_dir():
        print(f"skinedge web-cert: --out {a.out}: not a directory", file=sys.stderr)
        return 2
    cert, key = a.out / "cert.pem", a.out / "key.pem"
    if (cert.exists() or key.exists()) and not a.force:
        print(f"skinedge web-cert: {cert} or {key} exists; pass --force to replace them (browsers that accepted "
              "the old certificate will warn again)", file=sys.stderr)
        return 2
    print(f"certificate {cert}, key {key} (0600)\nSHA-256 fingerprint {make_certificate(cert, key, a.address)}")
    print(f"device config: web: {{enabled: true, address: {a.address}, tls_cert: {cert}, tls_key: {key}}}")
    return 0


def add_parsers(sub) -> None:
    w = sub.add_parser("web-cert", help="make the self-signed TLS certificate of the board's page")
    w.add_argument("--address", required=True, help="the IP address the page listens on (web.address)")
    w.add_argument("--out", type=Path, required=True, help="folder for cert.pem and key.pem")
    w.add_argument("--force", action="store_true", help="replace an existing certificate")
    w.set_defaults(fn=_web_cert)
