"""The PACS credentials: a small YAML file that only the sender's user may read.

A board travels, its SD card can be copied, and exports leave on USB sticks: the password or token lives in
one file of its own (never in the device config, the logs or an export), and that file is refused, as ssh
refuses a private key, when its mode lets anyone else read or write it, or when another user owns it.

    username: clinic-12        # HTTP basic authentication
    password: "..."
or
    token: "..."               # HTTP bearer authentication (OAuth 2 access token or the like)
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from edge.trust import safeyaml


class CredentialsError(ValueError):
    """One line naming the file and what is wrong; never the secret itself."""


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "bearer" if self.token else "basic" if self.username else "none"


def check_private(path: Path) -> None:
    """CredentialsError unless `path` is a regular file owned by this user (or root) with no group/other bits."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise CredentialsError(f"credentials {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"credentials {path}: not a regular file")
    if st.st_uid not in (os.geteuid(), 0):
        raise CredentialsError(f"credentials {path}: owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    if st.st_mode & 0o077:
        raise CredentialsError(f"credentials {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users read or "
                               f"change it; run: chmod 600 {path}")


def load(path: Path | str) -> Credentials:
    """Read and check a credentials file (basic: username + password, or bearer: token)."""
    path = Path(path)
    check_private(path)
    try:
        data = safeyaml.load(safeyaml.read(path))
    except (OSError, UnicodeDecodeError) as e:
        raise CredentialsError(f"credentials {path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    except safeyaml.YamlError as e:
        raise CredentialsError(f"credentials {path}: {e}") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"credentials {path}: expected 'username:' and 'password:' lines, or a 'token:' line")
    unknown = sorted(str(k) for k in data if k not in ("username", "password", "token"))
    if unknown:
        raise CredentialsError(f"credentials {path}: unknown key {safeyaml.shown(unknown[0])} (known: username, "
                               "password, token)")
    for key, value in data.items():
        if not isinstance(value, str) or not value or any(c in value for c in "\r\n"):
            raise CredentialsError(f"credentials {path}: {key}: expected a non-empty one-line string")
    if "token" in data and ("username" in data or "password" in data):
        raise CredentialsError(f"credentials {path}: give either token (bearer) or username and password (basic), "
                               "not both")
    if "token" not in data and not ("username" in data and "password" in data):
        raise CredentialsError(f"credentials {path}: basic authentication needs both username and password")
    if ":" in data.get("username", ""):
        raise CredentialsError(f"credentials {path}: username: HTTP basic authentication forbids ':' in it")
    return Credentials(data.get("username"), data.get("password"), data.get("token"))
