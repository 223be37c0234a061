"""Getting DICOM instances to the hospital: DICOMweb STOW-RS (HTTPS) or DIMSE C-STORE.

A capture counts as sent only when the server has named every one of its instances as stored: a STOW-RS
answer without a ReferencedSOPSequence (a captive portal's 200 page, a proxy's error) confirms nothing, and an
instance the server leaves out of its answer (Orthanc 1.10 does so for one its Lua filter refused) is not sent.

Two failures are told apart, because the sender reacts differently: `Unreachable` (no answer: no route,
refused connection, timeout, TLS failure) waits with back-off and counts against no capture; `Refused` (the
server answered no to the whole request: wrong credentials, HTTP 5xx, association rejected) is counted
against each capture in the request. A server that stores some instances and refuses others says so per
instance in the `Outcome`.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Protocol

from pydicom import dcmwrite
from pydicom.dataset import Dataset

from edge.record.credentials import Credentials
from edge.record.destination import Destination

log = logging.getLogger(__name__)
SHOWN = 160  # characters of a server's answer quoted in a log line


class Unreachable(RuntimeError):
    """No answer from the destination: try again later; no capture is to blame."""


class Refused(RuntimeError):
    """The destination answered and refused the whole request."""


@dataclass
class Outcome:
    stored: set[str] = field(default_factory=set)  # SOP Instance UIDs the server confirmed
    failed: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> the server's reason


class Transport(Protocol):
    name: str  # the destination as shown and as recorded in the send state (no credentials in it)

    def send(self, instances: Sequence[Dataset]) -> Outcome: ...

    def close(self) -> None: ...


def open_transport(dest: Destination, credentials: Credentials | None = None, ca_file: str | None = None,
                   timeout: float = 30.0, calling_aet: str = "SKINEDGE") -> Transport:
    if dest.kind == "stow":
        return StowRs(dest, credentials or Credentials(), ca_file, timeout)
    return CStore(dest, calling_aet, timeout)


def part10(ds: Dataset) -> bytes:
    """The instance as a DICOM file (preamble, file meta, data set): what STOW-RS and a DICOMDIR carry."""
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


class StowRs:
    """DICOMweb STOW-RS with requests: one multipart/related POST per batch, keep-alive between them.

    Certificates are verified against the system's CAs, or only against `ca_file` when it is given (a pinned
    hospital CA). Redirects are not followed: a redirect is answered as a refusal naming the new address.
    """

    def __init__(self, dest: Destination, credentials: Credentials, ca_file: str | None, timeout: float):
        import requests

        self._requests = requests
        self.name = dest.name
        self.url = f"{dest.name}/studies"
        self.timeout = timeout
        self.session = requests.Session()
        # passed with each request: a Session's verify loses to REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment,
        # which would quietly replace a pinned CA by the system's
        self.verify = ca_file or True
        if credentials.kind == "basic":
            self.session.auth = (credentials.username, credentials.password)
        elif credentials.kind == "bearer":
            self.session.headers["Authorization"] = f"Bearer {credentials.token}"
        self.session.headers["Accept"] = "application/dicom+json"

    def send(self, instances: Sequence[Dataset]) -> Outcome:
        boundary = uuid.uuid4().hex
        body = b"".join(b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (boundary.encode(), part10(ds))
                        for ds in instances) + b"--%s--\r\n" % boundary.encode()
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
        req = self._requests
        for attempt in (1, 2):
            try:
                resp = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout,
                                         verify=self.verify, allow_redirects=False)
                break
            except req.exceptions.SSLError as e:
                raise Unreachable(f"TLS: {_tls_reason(e)}") from None
            except req.exceptions.ConnectionError as e:
                # A kept-alive connection the server closed while we encoded the next batch (Orthanc closes idle
                # ones after 1 s): the request never reached it; once more on a new connection (the same UIDs
                # make even a repeated store harmless).
                if attempt == 1 and "Connection aborted" in str(e):
                    continue
                raise Unreachable(_connection_reason(e)) from None
            except req.exceptions.Timeout as e:
                raise Unreachable(_connection_reason(e)) from None
            except req.exceptions.RequestException as e:
                raise Unreachable(_quote(str(e))) from None
        return self._outcome(resp, [ds.SOPInstanceUID for ds in instances])

    def _outcome(self, resp, uids: list[str]) -> Outcome:
        status = resp.status_code
        if status in (401, 403):
            raise Refused(f"HTTP {status} {resp.reason}: the PACS refused the credentials (check the file named by "
                          "forward.credentials)")
        if 300 <= status < 400:
            raise Refused(f"HTTP {status}: the server redirects to {_quote(resp.headers.get('Location', '?'))}; set "
                          "forward.url to the final address")
        answer = _json_dataset(resp)
        if answer is None:
            raise Refused(f"HTTP {status} {resp.reason}: {_quote(resp.text) or 'no answer body'}"
                          if status >= 400 else f"HTTP {status}: the answer does not list stored instances "
                                                f"(content type {resp.headers.get('Content-Type', 'none')!r})")
        outcome = Outcome()
        for item in answer.get("ReferencedSOPSequence", []):
            if item.get("ReferencedSOPInstanceUID") in uids:
                outcome.stored.add(item.ReferencedSOPInstanceUID)
        for item in answer.get("FailedSOPSequence", []):
            uid = item.get("ReferencedSOPInstanceUID")
            if uid in uids:
                outcome.failed[uid] = f"failure reason {item.get('FailureReason', '?')} (HTTP {status})"
        if not outcome.stored and not outcome.failed and status >= 400:
            raise Refused(f"HTTP {status} {resp.reason}")
        return outcome

    def close(self) -> None:
        self.session.close()


def _json_dataset(resp) -> Dataset | None:
    if "json" not in resp.headers.get("Content-Type", ""):
        return None
    try:
        return Dataset.from_json(resp.json())
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _tls_reason(e: Exception) -> str:
    text = str(e)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ("the server's certificate is not trusted (set forward.ca_file to the hospital's CA certificate if it "
                "uses its own CA)")
    return _quote(text)


def _connection_reason(e: Exception) -> str:
    text = str(e)
    for marker, reason in (("Name or service not known", "host name not found (DNS)"),
                           ("Temporary failure in name resolution", "host name not found (no DNS)"),
                           ("Connection refused", "connection refused (server down or wrong port)"),
                           ("timed out", "timed out"), ("Network is unreachable", "network unreachable"),
                           ("No route to host", "no route to host")):
        if marker in text:
            return reason
    return _quote(text)


# C-STORE statuses that mean stored: success, and the warnings (coercion, elements discarded, not checked)
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class CStore:
    """DIMSE C-STORE with pynetdicom: one association per batch, each instance's status checked."""

    def __init__(self, dest: Destination, calling_aet: str, timeout: float):
        from pynetdicom import AE

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # it logs every PDU at INFO
        self.name = dest.name
        self.dest = dest
        self.ae = AE(ae_title=calling_aet)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = timeout
        self.ae.connection_timeout = timeout
        self._contexts: set[str] = set()

    def send(self, instances: Sequence[Dataset]) -> Outcome:
        self._propose(instances)
        try:
            assoc = self.ae.associate(self.dest.host, self.dest.port, ae_title=self.dest.called_aet)
        except (OSError, socket.gaierror) as e:
            raise Unreachable(f"{e.strerror or e}") from None
        if assoc.is_rejected:
            raise Refused(f"association rejected by {self.dest.called_aet} (check the called and calling AE titles "
                          "the PACS accepts)")
        if not assoc.is_established:
            raise Unreachable("no DICOM association (server down, wrong port, or it aborted)")
        outcome = Outcome()
        try:
            for ds in instances:
                status = assoc.send_c_store(ds)
                code = status.get("Status") if status else None
                if code is None:
                    raise Unreachable("the association ended before the server answered")
                if code in STORED:
                    outcome.stored.add(ds.SOPInstanceUID)
                else:
                    outcome.failed[ds.SOPInstanceUID] = f"C-STORE status 0x{code:04X}"
        except ValueError as e:  # no accepted presentation context for this SOP class
            raise Refused(f"the PACS accepts no presentation context for this instance: {e}") from None
        finally:
            if assoc.is_established:
                assoc.release()
        return outcome

    def _propose(self, instances: Sequence[Dataset]) -> None:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        for ds in instances:
            if ds.SOPClassUID not in self._contexts:
                self._contexts.add(ds.SOPClassUID)
                self.ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

    def close(self) -> None:
        self.ae.shutdown()
