"""Captures reach the PACS: DICOM encoding checked by dicom3tools' dciodvfy, and store-and-forward against a real
Orthanc (Debian's, started on loopback by tests/orthanc.py), a real HTTP server that answers 500, real TLS, real
SIGKILLs. The 1,000-capture run and the FPS-while-sending comparison are in benchmarks/forward.py."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from edge.record import dicom
from edge.record.credentials import CredentialsError
from edge.record.credentials import load as load_credentials
from edge.record.destination import DestinationError, parse_destination
from edge.record.outbox import Outbox
from edge.record.store import CaptureStore
from tests import orthanc as orthanc_mod
from tests._wait import until
from tests.forward_data import (
    LABELS,
    MODEL,
    check_instances,
    expected_counts,
    expected_instances,
    fill_store,
    kill_loop,
    sr_items,
    visit_of,
    write_config,
)
from tests.orthanc import PASSWORD, USER, Orthanc

REPO = Path(__file__).resolve().parents[1]
N = 12  # captures in the suite's store (benchmarks/forward.py sends 1,000)
LATE = 3  # captures kept while the PACS is down
KILLS = 20


# ---- fixtures ----


@pytest.fixture(scope="module")
def template_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fwd") / "store"
    fill_store(root, N, device_id="ward-7").close()
    return root


@pytest.fixture
def store_dir(template_store, tmp_path) -> Path:
    """A fresh copy of the module's store (nothing sent yet)."""
    root = tmp_path / "store"
    shutil.copytree(template_store, root)
    for key in ("device-key", "device-key.pub"):  # the key the chain is signed with and checked against
        shutil.copy2(template_store.parent / key, tmp_path)
    return root


@pytest.fixture
def pacs(tmp_path):
    orthanc_mod.require()
    server = Orthanc(tmp_path / "orthanc").start()
    yield server
    server.kill()


ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture
def cli(capsys):
    """`skinedge ARGS...` in this process (no interpreter start per call): (exit status, stdout, stderr)."""
    from edge.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
            print(e.code, file=sys.stderr)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)

    return run


@pytest.fixture
def send(cli):
    """`captures send --config CFG` at normal priority (idle priority would move this test process to SCHED_IDLE)."""
    return lambda cfg, *extra: cli("captures", "send", "--config", cfg, "--priority", "normal", *extra)


# ---- encoding ----


def _dciodvfy(path: Path) -> list[str]:
    if not shutil.which("dciodvfy"):
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools; scripts/test.sh does)")
    r = subprocess.run(["dciodvfy", str(path)], check=False, capture_output=True, text=True, timeout=60)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("dermatoscope", [False, True], ids=["vl-photographic", "dermoscopic"])
def test_frame_overlay_and_report_pass_dciodvfy(store_dir, tmp_path, dermatoscope):
    station = dicom.Station(institution="Clinique de Test", dermoscopic=dermatoscope)
    with CaptureStore(store_dir, create=False) as store:
        cap = store.list()[0]
        inst = dicom.Encoder(store, station)(cap)
    sop = pydicom.uid.DermoscopicPhotographyImageStorage if dermatoscope else pydicom.uid.VLPhotographicImageStorage
    assert [ds.SOPClassUID for ds in inst] == [sop, sop, pydicom.uid.EnhancedSRStorage]
    for role, ds in zip(("frame", "overlay", "report"), inst):
        path = tmp_path / f"{role}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert _dciodvfy(path) == [], role
    frame = cv2.cvtColor(cv2.imread(str(store_dir / cap.frame_file)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(inst.frame.pixel_array, frame)  # lossless, exactly the pixels the model saw
    assert inst.overlay.SourceImageSequence[0].ReferencedSOPInstanceUID == inst.frame.SOPInstanceUID
    assert inst.frame.SeriesInstanceUID == inst.overlay.SeriesInstanceUID != inst.report.SeriesInstanceUID
    assert inst.frame.StationName == cap.device_id == "ward-7"
    assert inst.frame.PatientName == "" and inst.frame.PatientID.startswith("NOVISIT-")


def test_a_capture_encodes_to_the_same_uids_every_time(store_dir):
    station = dicom.Station()
    with CaptureStore(store_dir, create=False) as store:
        caps = store.list()[:3]
        first = [dicom.Encoder(store, station)(c).sop_uids for c in caps]
        again = [dicom.Encoder(store, station)(c).sop_uids for c in caps]
        entries = {link.row: link.hash for link in store.links()}
    assert first == again
    assert first[0][0] == dicom._uid("instance", entries[caps[0].id], "frame")  # seeded by the chain entry's hash
    assert len({uid for uids in first for uid in uids}) == 9  # and every instance of every capture differs
    assert all(uid.startswith("2.25.") and len(uid) <= 64 for uids in first for uid in uids)


def test_one_study_per_visit_and_no_visit_is_nobody_else(store_dir):
    """Captures of one visit share a study whose patient ID is the visit ID; a capture without a visit is its own
    patient and study (two unnamed captures are never joined)."""
    with CaptureStore(store_dir, create=False) as store:
        caps = store.list()
        encode = dicom.Encoder(store, dicom.Station(issuer="district-12"))
        first, second, third, alone = (encode(caps[i]).frame for i in (1, 2, 4, 0))
    assert caps[1].visit_id == caps[2].visit_id == "V-1000" and caps[0].visit_id == ""
    assert first.StudyInstanceUID == second.StudyInstanceUID != third.StudyInstanceUID
    assert (first.PatientID, first.IssuerOfPatientID, first.PatientName) == ("V-1000", "district-12", "")
    assert second.StudyDate + second.StudyTime == first.ContentDate + first.ContentTime  # the visit's first capture
    assert alone.PatientID.startswith("NOVISIT-") and alone.StudyInstanceUID not in (first.StudyInstanceUID,
                                                                                     third.StudyInstanceUID)


def test_the_report_says_what_the_model_said_and_that_it_is_no_diagnosis(store_dir):
    with CaptureStore(store_dir, create=False) as store:
        cap = store.list()[4]
        inst = dicom.Encoder(store, dicom.Station())(cap)
    items = sr_items(inst.report)
    assert items["Finding"] == cap.label
    assert items["Probability"] == pytest.approx(cap.confidence, abs=1e-6)
    for label in LABELS:
        assert items[f"Probability of {label}"] == pytest.approx(cap.probs[label], abs=1e-6)
    assert items["Image quality and out-of-distribution gates"] == "pass"
    assert items["Gate score gate_ood_score"] == pytest.approx(cap.gate["gate_ood_score"])
    assert items["Model bundle SHA-256"] == cap.bundle_hash
    assert (items["Algorithm Name"], items["Algorithm Version"], items["Model signature (signing key ID)"]) == MODEL
    assert "not a diagnosis" in items["Comment"]
    assert items["Source image"] == inst.frame.SOPInstanceUID
    assert items["Illustration of Finding"] == inst.overlay.SOPInstanceUID
    assert inst.report.VerificationFlag == "UNVERIFIED"
    assert "not a diagnosis" in inst.frame.ImageComments and "not a diagnosis" in inst.overlay.ImageComments


# ---- configuration, destination, credentials ----


@pytest.mark.parametrize("url, expected", [
    ("http://pacs.example.org/dicom-web", "plain http://"),
    ("https://user:pw@pacs.example.org/dicom-web", "credentials do not belong in the URL"),
    ("ftp://pacs.example.org/", "expected an https:// DICOMweb URL"),
    ("dicom://pacs.example.org:104", "CALLED_AE_TITLE"),
    ("dicom://AN_AE_TITLE_FAR_TOO_LONG@pacs:104", "at most 16"),
])
def test_a_bad_destination_is_one_line(url, expected):
    with pytest.raises(DestinationError, match=expected):
        parse_destination(url)


def test_destinations_are_normalised():
    assert parse_destination("https://PACS.example.org:8443/dicom-web/").name == "https://pacs.example.org:8443/dicom-web"
    assert parse_destination("http://127.0.0.1:8042/dicom-web").kind == "stow"
    d = parse_destination("dicom://HOSPITAL@10.0.0.5:104")
    assert (d.kind, d.called_aet, d.host, d.port) == ("dimse", "HOSPITAL", "10.0.0.5", 104)


def test_forward_config_is_checked(tmp_path):
    from edge.config import ConfigError, load_config

    cfg = write_config(tmp_path, tmp_path / "s", "http://10.1.2.3/dicom-web")
    with pytest.raises(ConfigError, match=r"forward.url: plain http://"):
        load_config(cfg)
    cfg = write_config(tmp_path, tmp_path / "s", "https://pacs/dicom-web", retry_min_seconds=100, retry_max_seconds=10)
    with pytest.raises(ConfigError, match="forward.retry_min_seconds: must not exceed"):
        load_config(cfg)
    cfg = write_config(tmp_path, tmp_path / "s", "https://pacs/dicom-web", credentials={"token": "t"}, batch=2)
    c = load_config(cfg)
    assert c.forward.enabled and c.forward.batch == 2 and c.forward.credentials == str(tmp_path / "pacs.cred")


def test_credentials_must_be_private_and_well_formed(tmp_path):
    path = tmp_path / "pacs.cred"
    path.write_text(f"username: {USER}\npassword: {PASSWORD}\n")
    for mode in (0o644, 0o640, 0o604, 0o660):
        path.chmod(mode)
        with pytest.raises(CredentialsError, match=f"mode {mode:04o} lets other users") as e:
            load_credentials(path)
        assert PASSWORD not in str(e.value)
    path.chmod(0o600)
    assert load_credentials(path).kind == "basic"
    for text, expected in (("token: abc\nusername: u\n", "either token"), ("username: u\n", "needs both"),
                           ("passwd: x\n", "unknown key"), ("token: [1]\n", "one-line string")):
        path.write_text(text)
        with pytest.raises(CredentialsError, match=expected):
            load_credentials(path)


def test_edge_runtime_does_not_need_the_dicom_extra(store_dir):
    """With forwarding off, `run`'s modules and `captures list/export/verify` never import pydicom, pynetdicom or
    requests (a board installs only the edge extra)."""
    code = ("import sys; import edge.pipeline, edge.cli.run; from edge.cli import main; "
            f"main(['captures', 'list', '--store', {str(store_dir)!r}]); "
            f"main(['captures', 'verify', '--store', {str(store_dir)!r}]); "
            "print(sorted(m for m in ('pydicom', 'pynetdicom', 'requests') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


# ---- against a real Orthanc ----


def test_every_capture_reaches_orthanc_with_its_attributes_and_report(store_dir, tmp_path, pacs, send, cli):
    cfg = write_config(tmp_path, store_dir, pacs.url, {"username": USER, "password": PASSWORD})
    r = send(cfg)
    assert r.returncode == 0, r.stderr
    assert f"sent {N} capture(s) ({3 * N} instances)" in r.stdout and "0 waiting" in r.stdout
    expected = expected_instances(store_dir)
    stored = pacs.instances()
    assert set(stored) == set(expected)  # every instance, nothing else
    stats = pacs.statistics()
    counts = expected_counts(expected)
    assert counts[:2] == (3 * N, 2 * N) and counts[2] == N - sum(1 for i in range(N) if visit_of(i)) // 2
    assert (stats["CountInstances"], stats["CountSeries"], stats["CountStudies"]) == counts
    check_instances(pacs, expected, stored)
    # the viewer's rendering: Orthanc's preview of the frame is exactly the stored frame
    cap, _, ds = next(v for v in expected.values() if v[1] == "frame")
    png = pacs.get(f"/instances/{stored[ds.SOPInstanceUID]['_id']}/preview")
    preview = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(preview, cv2.imread(str(store_dir / cap.frame_file)))
    with Outbox(store_dir) as outbox:
        assert len(outbox.sent(pacs.url)) == N
    listed = cli("captures", "list", "--config", str(cfg))
    assert f"0 capture(s) waiting to be sent to {pacs.url}" in listed.stdout








def test_sending_again_duplicates_nothing(store_dir, tmp_path, pacs, send):
    """The send state lost (or a crash between the PACS's answer and the commit): everything is sent again, and the
    PACS still holds one instance per instance."""
    cfg = write_config(tmp_path, store_dir, pacs.url, {"username": USER, "password": PASSWORD})
    assert send(cfg, "--limit", "5").returncode == 4
    (store_dir / "outbox.db").unlink()
    for suffix in ("-wal", "-shm"):
        (store_dir / f"outbox.db{suffix}").unlink(missing_ok=True)
    assert send(cfg).returncode == 0
    assert pacs.count() == 3 * N and set(pacs.instances()) == set(expected_instances(store_dir))


@pytest.fixture(scope="module")
def kill_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill") / "store"
    fill_store(root, 2 * KILLS + 10, device_id="killed", seed=3).close()
    return root


def test_sigkill_mid_send_loses_nothing_and_duplicates_nothing(kill_store, tmp_path, pacs, send):
    """SIGKILL the sender as soon as Orthanc has received more instances than at the last kill (mid-request, or
    between the answer and the commit of the send state), KILLS times; then let it finish."""
    with CaptureStore(kill_store, create=False) as store:
        n = len(store.list())
    cfg = write_config(tmp_path, kill_store, pacs.url, {"username": USER, "password": PASSWORD}, batch=1)
    kills, mid_capture = kill_loop(pacs, cfg, KILLS)
    assert kills == KILLS, f"the store ran out after {kills} kills"
    with sqlite3.connect(kill_store / "outbox.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    r = send(cfg)
    assert r.returncode == 0 and "0 waiting" in r.stdout, r.stdout + r.stderr
    stats = pacs.statistics()
    expected = expected_instances(kill_store)
    assert (stats["CountInstances"], stats["CountSeries"], stats["CountStudies"]) == expected_counts(expected)
    assert stats["CountInstances"] == 3 * n and set(pacs.instances()) == set(expected)
    with Outbox(kill_store) as outbox:
        assert len(outbox.sent(pacs.url)) == n
    print(f"{kills} SIGKILLs, {mid_capture} of them with a capture half stored")


def _sent(store_dir: Path, url: str) -> int:
    with Outbox(store_dir) as outbox:
        return outbox.sent_count(url)


def test_the_pacs_going_down_and_coming_back(store_dir, tmp_path, pacs):
    cfg = write_config(tmp_path, store_dir, pacs.url, {"username": USER, "password": PASSWORD}, batch=1,
                       retry_min_seconds=0.2, retry_max_seconds=1.0, poll_seconds=0.2)
    log = tmp_path / "send.log"
    with open(log, "w") as err:
        watcher = subprocess.Popen([sys.executable, "-m", "edge.cli", "captures", "send", "--config", str(cfg),
                                    "--watch", "--priority", "normal"], stdout=err, stderr=subprocess.STDOUT, cwd=REPO,
                                   env=ENV)
    try:
        until("a few captures sent", lambda: _sent(store_dir, pacs.url) >= 3, step=0.05)
        pacs.stop()
        # captures kept while the PACS is down: the sender must meet the outage whether or not it had already
        # sent the first N (it may have, on an idle machine), so the test waits for states, not for time
        fill_store(store_dir, LATE, device_id="ward-7", seed=1).close()
        until("the sender to notice", lambda: "does not answer" in log.read_text(), step=0.05)
        sent_while_down = _sent(store_dir, pacs.url)
        pacs.start()
        until("every capture sent", lambda: _sent(store_dir, pacs.url) == N + LATE, step=0.05)
    finally:
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=60) == 0
    text = log.read_text()
    assert sent_while_down <= N and "Traceback" not in text and PASSWORD not in text
    assert pacs.count() == 3 * (N + LATE) and set(pacs.instances()) == set(expected_instances(store_dir))


def test_wrong_credentials_are_refused_counted_and_kept(store_dir, tmp_path, pacs, send, cli):
    cfg = write_config(tmp_path, store_dir, pacs.url, {"username": USER, "password": "not-the-password"})
    r = send(cfg)
    assert r.returncode == 4
    assert "refused the credentials" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "not-the-password" not in r.stdout + r.stderr
    q = cli("captures", "queue", "--config", str(cfg)).stdout
    assert f"{N} capture(s) waiting to be sent to {pacs.url} (4 refused, kept for retry)" in q
    assert pacs.count() == 0
    write_config(tmp_path, store_dir, pacs.url, {"username": USER, "password": PASSWORD})
    assert send(cfg).returncode == 0 and pacs.count() == 3 * N


class _Failing(http.server.BaseHTTPRequestHandler):
    """A real HTTP server that answers every STOW-RS request with 500, as a PACS whose database is down does."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b"internal error: database is locked"
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_server_error_is_one_line_and_the_captures_wait(store_dir, tmp_path, send):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        cfg = write_config(tmp_path, store_dir, url, {"token": "a-bearer-token"})
        r = send(cfg)
    finally:
        server.shutdown()
    assert r.returncode == 4
    assert r.stderr.strip().splitlines() == [(
        f"skinedge send: {url} refused 4 capture(s): HTTP 500 Internal Server Error: internal error: database is "
        "locked; kept for retry")]
    assert "a-bearer-token" not in r.stdout + r.stderr
    with Outbox(store_dir) as outbox, CaptureStore(store_dir, create=False) as store:
        q = outbox.queue(store.list(), url)
    assert len(q.waiting) == N and len(q.refused) == 4
    assert all(r.attempts == 1 and "HTTP 500" in r.last_error for r in q.refused.values())


REFUSE_ONE = """
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.SeriesDescription ~= nil and string.find(dicom.SeriesDescription, "^Capture 3: AI result") then
    error("the test's PACS refuses this report")
  end
  return true
end
"""


def test_an_instance_the_pacs_refuses_keeps_its_capture_waiting(store_dir, tmp_path, send):
    orthanc_mod.require()
    pacs = Orthanc(tmp_path / "orthanc", lua=REFUSE_ONE).start()
    try:
        # one capture per request: after the instance its Lua filter refused, Orthanc 1.10's DICOMweb plugin drops the
        # rest of the request (also left unconfirmed, so also kept)
        cfg = write_config(tmp_path, store_dir, pacs.url, {"username": USER, "password": PASSWORD}, batch=1)
        r = send(cfg)
        assert r.returncode == 4 and f"sent {N - 1} capture(s)" in r.stdout and "1 refused" in r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "(#3) not sent to" in lines[0] and "instance not confirmed by the server" in lines[0]
        assert pacs.count() == 3 * N - 1  # its frame and overlay arrived, its report did not
        r = send(cfg)  # tried again at once: `captures send` is "send now", back-off is for --watch
        assert r.returncode == 4 and "attempt 2" in r.stderr
    finally:
        pacs.kill()


def test_https_with_a_pinned_hospital_ca(store_dir, tmp_path, pacs, send):
    """The hospital's own CA, pinned: trusted although the system's CAs (and REQUESTS_CA_BUNDLE, set here as on many
    machines) do not know it; without the pin the same server is refused."""
    server_pem, ca = orthanc_mod.tls_files(tmp_path)
    front = orthanc_mod.Front(pacs, server_pem)
    os.environ.setdefault("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    try:
        creds = {"username": USER, "password": PASSWORD}
        r = send(write_config(tmp_path, store_dir, front.url, creds), "--limit", "2")
        assert r.returncode == 4 and "not trusted" in r.stdout and pacs.count() == 0  # system CAs: refused
        r = send(write_config(tmp_path, store_dir, front.url, creds, ca_file=str(ca)), "--limit", "2")
        assert r.returncode == 4 and "sent 2 capture(s)" in r.stdout and pacs.count() == 6
    finally:
        front.close()


def test_a_connection_closed_without_an_answer_is_tried_again_at_once(store_dir, tmp_path, pacs, send):
    """The server closes the connection as the request arrives (what a kept-alive connection timing out on the server
    side looks like to the client; Orthanc closes idle ones after a second): sent again on a new connection, not
    counted as the PACS being down."""
    front = orthanc_mod.Front(pacs, drop_first=1)
    try:
        r = send(write_config(tmp_path, store_dir, front.url, {"username": USER, "password": PASSWORD}))
    finally:
        front.close()
    assert front.dropped == 1
    assert r.returncode == 0 and f"sent {N} capture(s)" in r.stdout, r.stdout + r.stderr
    assert pacs.count() == 3 * N


def test_dimse_c_store(store_dir, tmp_path, pacs, send):
    cfg = write_config(tmp_path, store_dir, pacs.dimse_url, calling_aet="CLINIC7")
    r = send(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert pacs.count() == 3 * N and set(pacs.instances()) == set(expected_instances(store_dir))


def test_a_capture_edited_on_the_board_is_held_not_sent(store_dir, tmp_path, pacs, send):
    with CaptureStore(store_dir, create=False) as store:
        edited = store.list()[1]
    frame = store_dir / edited.frame_file
    frame.write_bytes(frame.read_bytes()[:-20] + bytes(20))
    cfg = write_config(tmp_path, store_dir, pacs.url, {"username": USER, "password": PASSWORD})
    r = send(cfg)
    assert r.returncode == 4 and f"sent {N - 1} capture(s)" in r.stdout
    assert f"capture {edited.uuid} (#2) not sent to {pacs.url}: held on the board, not sent" in r.stderr
    assert "sha256 does not match" in r.stderr
    assert pacs.count() == 3 * (N - 1)
    stored = {tags["PatientID"] for tags in pacs.instances().values()}
    assert not any(edited.uuid in pid for pid in stored)


def test_a_record_edited_in_the_database_is_not_sent_as_genuine(store_dir, tmp_path, pacs, send):
    """Someone changes capture #3's class in captures.db (its signed entry no longer verifies): the sender holds it
    and says why; the other captures go."""
    with sqlite3.connect(store_dir / "captures.db") as db:
        entry = db.execute("SELECT entry FROM captures WHERE id = 3").fetchone()[0]
        label = json.loads(entry)["record"]["label"]
        other = next(lab for lab in LABELS if lab != label)
        db.execute("UPDATE captures SET entry = ? WHERE id = 3",
                   (entry.replace(f'"label":"{label}"', f'"label":"{other}"'),))
    cfg = write_config(tmp_path, store_dir, pacs.url, {"username": USER, "password": PASSWORD})
    r = send(cfg)
    assert r.returncode == 4 and f"sent {N - 1} capture(s)" in r.stdout and "1 refused" in r.stdout
    assert "(#3) not sent to" in r.stderr and "held on the board, not sent: the record fails verification" in r.stderr
    assert pacs.count() == 3 * (N - 1)
    assert not any(tags["SeriesDescription"].startswith("Capture 3:") for tags in pacs.instances().values())


def test_dicom_export_for_a_usb_stick(store_dir, tmp_path, pacs, send, cli):
    out = tmp_path / "stick" / "SKINEDGE"
    out.parent.mkdir()
    r = cli("captures", "export", "--store", str(store_dir), "--dicom", str(out))
    assert r.returncode == 0 and f"exported {N} capture(s) to {out} (DICOM file-set)" in r.stdout, r.stderr
    assert _dciodvfy(out / "DICOMDIR") == []
    from pydicom.fileset import FileSet

    fs = FileSet(out / "DICOMDIR")
    expected = expected_instances(store_dir)
    assert {inst.SOPInstanceUID for inst in fs} == set(expected)
    for inst in fs:  # a hospital imports the stick ...
        pacs.post("/instances", Path(inst.path).read_bytes())
    assert pacs.count() == 3 * N
    cfg = write_config(tmp_path, store_dir, pacs.url, {"username": USER, "password": PASSWORD})
    assert send(cfg).returncode == 0  # ... and the same captures forwarded later are the same instances
    assert pacs.count() == 3 * N
    again = cli("captures", "export", "--store", str(store_dir), "--dicom", str(out))
    assert again.returncode == 2 and "folder is not empty" in again.stderr


def test_the_sender_runs_at_idle_priority(store_dir, tmp_path):
    cfg = write_config(tmp_path, store_dir, "http://127.0.0.1:9/dicom-web", retry_min_seconds=5)
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "captures", "send", "--config", str(cfg), "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=ENV)
    try:
        line = proc.stdout.readline()
        assert line.startswith("forwarding captures from") and "(SCHED_IDLE)" in line, line
        assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0 and "Traceback" not in out


# ---- the forwarding service ----

FORWARD_UNIT = REPO / "systemd" / "skinedge-forward.service"


def test_the_forwarding_unit_runs_idle_with_network_and_nothing_else():
    settings: dict[str, list[str]] = {}
    for line in FORWARD_UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["ExecStart"] == [
        "/opt/skinedge/venv/bin/skinedge captures send --config /etc/skinedge/device.yaml --watch"]
    for key, value in {"CPUSchedulingPolicy": "idle", "IOSchedulingClass": "idle", "CPUWeight": "idle",
                       "IOWeight": "1", "User": "skinedge",
                       "Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "PrivateDevices": "yes", "ReadWritePaths": "/var/lib/skinedge"}.items():
        assert settings[key] == [value], key
    assert set(settings["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    if shutil.which("systemd-analyze"):
        unit = Path(os.environ.get("TMPDIR", "/tmp")) / f"skinedge-forward-{os.getpid()}.service"
        unit.write_text(FORWARD_UNIT.read_text().replace("ExecStart=/opt/skinedge/venv/bin/skinedge ",
                                                         f"ExecStart={sys.executable} -m edge.cli "))
        try:
            r = subprocess.run(["systemd-analyze", "verify", str(unit)], check=False, capture_output=True, text=True)
        finally:
            unit.unlink()
        assert r.returncode == 0 and "skinedge" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_install_with_a_pacs_adds_the_extra_the_config_the_credentials_and_the_unit(tmp_path):
    cred = tmp_path / "pacs.cred"
    cred.write_text("token: t\n")
    r = subprocess.run(["bash", str(REPO / "systemd" / "install.sh"), "--dry-run", "--device", "rpi4", "--source",
                        str(REPO), "--allow-unsigned", "--pacs", "https://pacs.example.org/dicom-web", "--pacs-credentials", str(cred)],
                       check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for want in (f"{REPO}\\[pi\\,dicom\\]", f"install -m 0600 -o skinedge -g skinedge {cred} /etc/skinedge/pacs.cred",
                 "url: 'https://pacs.example.org/dicom-web'", "credentials: /etc/skinedge/pacs.cred",
                 f"install -m 0644 {FORWARD_UNIT} /etc/systemd/system/skinedge-forward.service",
                 "systemctl enable skinedge-forward.service"):
        assert want in r.stdout, want
    bad = subprocess.run(["bash", str(REPO / "systemd" / "install.sh"), "--dry-run", "--device", "rpi4",
                          "--source", str(REPO), "--allow-unsigned", "--pacs-credentials", str(cred)], check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and "go with --pacs URL" in bad.stderr


# ---- the HUD: how many captures wait ----


def test_the_hud_says_how_many_captures_wait():
    from edge.i18n import Messages
    from edge.overlay import footer_lines, hud

    def texts(waiting, language="en"):
        footer = footer_lines(12.0, msgs=Messages(language), waiting=waiting)
        return [t.text for t in hud(None, (480, 320), 0.6, 12.0, footer=footer).texts]

    assert "3 to send" in texts(3) and "all sent" in texts(0)
    assert not any("sen" in t for t in texts(None))  # forwarding off: nothing about it
    assert "3 a envoyer" in texts(3, "fr")  # the HUD's fonts are ASCII: accents dropped


def test_waiting_counts_the_store_minus_what_was_sent(store_dir, tmp_path):
    from edge.record.outbox import Waiting

    url = "https://pacs.example.org/dicom-web"
    waiting = Waiting(store_dir, url, every=0)
    assert waiting() == N
    with CaptureStore(store_dir, create=False) as store, Outbox(store_dir, write=True) as outbox:
        outbox.mark_sent(url, [c.uuid for c in store.list()[:5]])
        outbox.mark_sent("https://another.example/dicom-web", [c.uuid for c in store.list()])
    assert waiting() == N - 5
    assert Waiting(tmp_path / "no-store-yet", url)() == 0


def test_the_loop_shows_the_count_beside_fps(store_dir, tmp_path):
    """`run` with forward.url set: the first screen (FPS not known yet, so the same in both runs) differs from the
    one without forwarding only where the count is written, in the FPS row of the panel."""
    from edge.config import load_config
    from edge.pipeline import run

    demo = REPO / "edge" / "demo_assets"
    first = {}
    for forwarding in (False, True):
        overrides = {"display.path": str(tmp_path / f"out{forwarding}"), "backend": "tflite",
                     "store.path": str(store_dir)}
        if forwarding:
            overrides["forward.url"] = "https://pacs.example/dicom-web"
        run(load_config(demo / "demo.yaml", overrides), frames=1,
            on_frame=lambda f, a, overlay, key=forwarding: first.setdefault(key, overlay))
    rows, cols = np.nonzero(np.any(first[True] != first[False], axis=2))
    h, w = first[True].shape[:2]
    assert rows.size > 0, "the count is not on the screen"
    assert cols.min() > w // 2 and rows.max() - rows.min() < h // 8  # one short run of text, in the right panel
