"""Where captures go: the PACS named by one URL in the device config (forward.url).

`https://pacs.example.org/dicom-web` is a DICOMweb server (STOW-RS: POST .../studies); `dicom://CALLED_AE@host:104`
a DIMSE one (C-STORE). Plain `http://` is accepted only to this machine (a local relay or an SSH tunnel): on any
other network the password and the images would travel readable. Credentials never go in the URL, which is
shown in logs and recorded beside each sent capture. Standard library only, so the config can check the URL on
a board without the dicom extra.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit


class DestinationError(ValueError):
    """The configured destination URL cannot be used (one line: what is wrong and what is expected)."""


@dataclass(frozen=True)
class Destination:
    kind: str  # "stow" | "dimse"
    name: str  # normalised URL, the key of the send state
    host: str
    port: int
    path: str = ""  # stow: the DICOMweb base path
    scheme: str = "https"
    called_aet: str = ""  # dimse


def parse_destination(url: str) -> Destination:
    """https://host[:port]/base (STOW-RS), http://127.0.0.1:port/base (loopback only), dicom://AE@host:port."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise DestinationError(f"{e}") from None
    host = parts.hostname or ""
    if parts.scheme in ("https", "http"):
        if not host:
            raise DestinationError("expected https://HOST/DICOMWEB-BASE, e.g. https://pacs.example.org/dicom-web")
        if parts.username or parts.password:
            raise DestinationError("credentials do not belong in the URL (it appears in logs): put them in the "
                                   "file named by forward.credentials")
        if parts.query or parts.fragment:
            raise DestinationError("expected no ?query or #fragment in the DICOMweb base URL")
        if parts.scheme == "http" and not _loopback(host):
            raise DestinationError(f"plain http:// sends images and passwords readable by anyone on the way; use "
                                   f"https:// (http:// is accepted only to this machine, e.g. an SSH tunnel), "
                                   f"found host {host!r}")
        path = parts.path.rstrip("/")
        netloc = f"[{host}]" if ":" in host else host
        name = f"{parts.scheme}://{netloc}{f':{port}' if port else ''}{path}"
        return Destination("stow", name, host, port or (443 if parts.scheme == "https" else 80), path, parts.scheme)
    if parts.scheme == "dicom":
        aet = parts.username or ""
        if not aet or not host or not port or len(aet) > 16 or parts.path not in ("", "/"):
            raise DestinationError("expected dicom://CALLED_AE_TITLE@HOST:PORT (AE title at most 16 characters), "
                                   "e.g. dicom://PACS@10.0.0.5:104")
        return Destination("dimse", f"dicom://{aet}@{host}:{port}", host, port, called_aet=aet)
    raise DestinationError(f"expected an https:// DICOMweb URL or dicom://AE@HOST:PORT, found scheme "
                           f"{parts.scheme or 'none'!r}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
