"""A real Orthanc PACS for the tests: Debian's `orthanc` with its DICOMweb plugin (`orthanc-dicomweb`), started on
free loopback ports with a config and storage folder of its own (never the system service), stopped and started
again on the same ports and storage (a hospital server going down and coming back), optionally with a Lua script.
scripts/test.sh installs the packages; where they cannot be installed the tests skip with one line.

HTTPS goes through `Front`, a TLS-terminating relay in front of Orthanc (as a hospital puts nginx in front of
it), because Debian 12's Orthanc 1.10.1 segfaults on its first HTTPS connection: its CivetWeb 1.15 with OpenSSL 3
(civetweb/civetweb#1316), with RSA and EC keys alike.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",)
USER, PASSWORD = "clinic", "s3cret-pacs-password"
START_SECONDS = 60  # a loaded 2-core CI machine: Orthanc itself starts in ~0.3 s


def missing() -> str | None:
    """Why Orthanc cannot run here (one line), or None."""
    if not Path(ORTHANC).is_file():
        return "Orthanc not installed (apt-get install orthanc orthanc-dicomweb; scripts/test.sh does)"
    if not any(Path(p).is_file() for p in PLUGINS):
        return "Orthanc's DICOMweb plugin not installed (apt-get install orthanc-dicomweb; scripts/test.sh does)"
    return None


def require() -> None:
    why = missing()
    if why:
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process under `root` (config, storage, log); `url` is its DICOMweb base."""

    def __init__(self, root: Path, lua: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.log = self.root / "orthanc.log"
        self.proc: subprocess.Popen | None = None
        config = {
            "Name": "skinedge-test", "StorageDirectory": str(self.root / "db"), "IndexDirectory": str(self.root / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [p for p in PLUGINS if Path(p).is_file()], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "SaveJobs": False, "StorageCompression": False, "HttpCompressionEnabled": False,
            "UnknownSopClassAccepted": True,  # DCMTK 3.6.7 predates the Dermoscopic Photography SOP class (C-STORE)
        }
        if lua:
            (self.root / "script.lua").write_text(lua)
            config["LuaScripts"] = [str(self.root / "script.lua")]
        (self.root / "orthanc.json").write_text(json.dumps(config, indent=1))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"{self.base}/dicom-web"

    @property
    def dimse_url(self) -> str:
        return f"dicom://ORTHANC@127.0.0.1:{self.dicom_port}"

    def start(self) -> Orthanc:
        """Start and wait until the REST API answers (a state, not a time)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([ORTHANC, str(self.root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                self.get("/system", timeout=2)
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Orthanc did not answer within {START_SECONDS} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop as a server is stopped (SIGTERM, then wait); its storage stays for start()."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    # ---- its REST API ----

    def _request(self, method: str, path: str, timeout: float = 30, **kw):
        import requests

        try:
            r = requests.request(method, self.base + path, auth=(USER, PASSWORD), timeout=timeout, **kw)
        except requests.RequestException as e:
            raise OSError(str(e)) from e
        r.raise_for_status()
        return r

    def get(self, path: str, timeout: float = 30):
        r = self._request("GET", path, timeout)
        return r.json() if "json" in r.headers.get("Content-Type", "") else r.content

    def post(self, path: str, data: bytes):
        return self._request("POST", path, data=data).json()

    def count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def statistics(self) -> dict:
        return self.get("/statistics")

    def instances(self) -> dict[str, dict]:
        """Every stored instance by SOPInstanceUID: Orthanc's main tags of the instance, its series, study and
        patient merged, and its Orthanc ID as "_id" (three requests, whatever the number of instances)."""
        series = {s["ID"]: s for s in self.get("/series?expand")}
        studies = {s["ID"]: s for s in self.get("/studies?expand")}
        out = {}
        for inst in self.get("/instances?expand"):
            se = series[inst["ParentSeries"]]
            st = studies[se["ParentStudy"]]
            tags = {**st["PatientMainDicomTags"], **st["MainDicomTags"], **se["MainDicomTags"],
                    **inst["MainDicomTags"], "_id": inst["ID"]}
            out[tags["SOPInstanceUID"]] = tags
        return out

    def dataset(self, oid: str):
        """The stored DICOM file of an instance, read back with pydicom."""
        import io

        import pydicom

        return pydicom.dcmread(io.BytesIO(self.get(f"/instances/{oid}/file")))


def tls_files(root: Path) -> tuple[Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (server PEM with its key, for Orthanc; CA PEM)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # Orthanc 1.10's CivetWeb crashes on EC keys
    ca = (x509.CertificateBuilder().subject_name(name("skinedge test hospital CA")).issuer_name(name("skinedge test hospital CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    server, ca_pem = root / "server.pem", root / "ca.pem"
    server.write_bytes(cert.public_bytes(pem) + key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                                                  serialization.NoEncryption()))
    ca_pem.write_bytes(ca.public_bytes(pem))
    return server, ca_pem


class Front:
    """A relay on a loopback port in front of Orthanc's HTTP port, byte for byte, one thread per direction per
    connection: with `server_pem`, HTTPS (real TLS, Python's OpenSSL, a certificate from `tls_files`); with
    `drop_first`, the first that many connections are closed once the request has begun to arrive, without an
    answer (a server closing a kept-alive connection just as the client sends on it)."""

    def __init__(self, orthanc: Orthanc, server_pem: Path | None = None, drop_first: int = 0):
        self.orthanc = orthanc
        self.context = None
        if server_pem is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(server_pem)
        self.to_drop = drop_first
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.port}/dicom-web"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(client, server_side=True) if self.context else client
        except (ssl.SSLError, OSError):  # a client that does not trust the certificate hangs up here
            client.close()
            return
        if self.dropped < self.to_drop:
            self.dropped += 1
            conn.recv(65536)
            conn.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.orthanc.http_port))
        threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()
        _pump(conn, upstream)

    def close(self) -> None:
        self.listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
