"""sd_notify over real Unix datagram sockets, the frame-fed watchdog, the systemd unit and its installer."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.service import FrameWatchdog, Notifier, watchdog_interval

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "skinedge.service"
INSTALL = REPO / "systemd" / "install.sh"


class Listener:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket, read by a thread as
    systemd reads it (the kernel queues only a few datagrams; a socket nobody reads fills up)."""

    MARK = "skinedge-test-mark"

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the sender's pid, as systemd checks
        self.sock.settimeout(0.05)
        self._got: list[tuple[str, int]] = []
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        space = socket.CMSG_SPACE(struct.calcsize("iII"))
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, space)
            except TimeoutError:
                continue
            pid = next((struct.unpack("iII", d)[0] for lvl, typ, d in anc
                        if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS), -1)
            with self._arrived:
                self._got.append((data.decode(), pid))
                self._arrived.notify_all()

    def take(self) -> list[tuple[str, int]]:
        """Everything sent to the socket before this call (by senders whose send has returned), waiting for a state,
        not for quiet: a mark sent now queues behind every datagram already sent (one socket's queue is first in,
        first out), so once the mark is read, all of them have been."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(self.MARK.encode(), self.address)
        with self._arrived:
            assert self._arrived.wait_for(lambda: any(t == self.MARK for t, _ in self._got), timeout=120)
            at = next(i for i, (t, _) in enumerate(self._got) if t == self.MARK)
            got, self._got = self._got[:at], self._got[at + 1:]
        return got

    def texts(self) -> list[str]:
        return [text for text, _ in self.take()]

    def wait_for(self, done, timeout: float = 120.0) -> bool:
        """Block until `done(texts received so far)` holds (a state: READY=1 arrived), or `timeout` seconds pass."""
        with self._arrived:
            return self._arrived.wait_for(lambda: done([t for t, _ in self._got]), timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener(tmp_path):
    path = tmp_path / "notify"
    if len(str(path)) > 100:  # sun_path holds 108 bytes
        path = Path(os.path.realpath("/tmp")) / f"sd-notify-{os.getpid()}"
    lis = Listener(str(path))
    yield lis
    lis.close()
    path.unlink(missing_ok=True)


def test_notifier_sends_each_message_as_one_datagram(listener):
    n = Notifier(listener.address)
    assert n.enabled
    assert n.ready("bundle micro on tflite;\nself-test ok")
    assert n.status("camera lost")
    assert n.watchdog()
    assert n.stopping()
    n.close()
    assert listener.texts() == [
        "READY=1\nSTATUS=bundle micro on tflite; self-test ok",  # a newline in a status would start a new field
        "STATUS=camera lost",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_notifier_abstract_socket_name():
    name = f"skinedge-test-{os.getpid()}"
    lis = Listener("\0" + name)
    try:
        n = Notifier("@" + name)
        assert n.ready()
        n.close()
        assert lis.texts() == ["READY=1"]
    finally:
        lis.close()


def test_notifier_reads_notify_socket_from_another_process(listener):
    """As under systemd: the service process finds $NOTIFY_SOCKET itself and sends from its own pid."""
    code = "from edge.service import Notifier; n = Notifier(); n.ready('up'); n.watchdog(); print(n.enabled)"
    env = {**os.environ, "NOTIFY_SOCKET": listener.address, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=60)
    assert out.strip() == "True"
    assert listener.take() == [("READY=1\nSTATUS=up", child.pid), ("WATCHDOG=1", child.pid)]


def test_notifier_is_a_no_op_without_notify_socket(monkeypatch, listener):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert n.ready("x") is False and n.watchdog() is False and n.status("y") is False
    n.close()
    assert listener.take() == []


def test_notifier_survives_a_vanished_socket(tmp_path):
    n = Notifier(str(tmp_path / "gone"))  # systemd restarting, or a stale variable: no exception
    assert n.enabled and n.watchdog() is False and n.status("x") is False


def test_watchdog_pings_never_block_on_a_full_queue(tmp_path):
    """Nobody reads this socket: once the kernel queue is full, pings are dropped instead of hanging the loop."""
    path = str(tmp_path / "unread")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        n = Notifier(path)
        sent = [n.watchdog() for _ in range(2000)]
        assert sent[0] and not sent[-1]  # the first ones queued, the rest dropped; and we got here
        assert n.status("still alive") is False  # a waiting send gives up after SEND_TIMEOUT
    finally:
        sock.close()


def test_frame_watchdog_pings_while_frames_flow_and_stops_on_stall(listener):
    """On the watchdog's own clock (advanced by the test, so a loaded machine cannot turn a 10 ms frame gap into a
    stall): frames at 100 fps ping once per interval; a gap longer than stall_after stops the pings."""
    now = [1000.0]  # in milliseconds, so that every step below is exact in floating point
    wd = FrameWatchdog(Notifier(listener.address), interval=50.0, stall_after=500.0, clock=lambda: now[0])

    def frames(n: int, gap: float) -> list[str]:
        """Pings sent for n frames `gap` ms apart, read after each frame as systemd reads them (the kernel queues
        only 10 datagrams: pings sent faster than they are read are dropped, by design)."""
        got = []
        for _ in range(n):
            now[0] += gap
            wd.frame()
            got += listener.texts()
        return got

    assert frames(60, 10.0) == ["WATCHDOG=1"] * 12  # 0.6 s at 100 fps: one ping per 50 ms interval, not per frame
    assert wd.pings == 12
    now[0] += 1000.0  # the camera stalls: no frames for a second
    assert frames(1, 0.0) == []  # a lone frame after a gap longer than stall_after is not flow
    assert frames(20, 10.0) == ["WATCHDOG=1"] * 4  # frames flow again


def test_frame_watchdog_rejects_nonsense():
    with pytest.raises(ValueError, match="interval and stall_after must be > 0"):
        FrameWatchdog(Notifier(""), interval=0, stall_after=1)


def test_watchdog_interval_from_environment(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")  # WatchdogSec=30
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # inherited, meant for another process
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "thirty")
    with pytest.raises(ValueError, match="WATCHDOG_USEC: expected a positive number of microseconds"):
        watchdog_interval()


# ---- the unit ----

def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_has_the_service_contract():
    s = _unit_settings()
    for key, value in {"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
                       "RestartSec": "5", "User": "skinedge", "Group": "skinedge", "SupplementaryGroups": "video",
                       "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "DevicePolicy": "closed", "StateDirectoryMode": "0700",
                       "ReadWritePaths": "/var/lib/skinedge", "Environment": "PYTHONUNBUFFERED=1"}.items():
        assert value in s[key], key
    assert s["ExecStart"] == ["/opt/skinedge/venv/bin/skinedge run --config /etc/skinedge/device.yaml"]
    assert "char-video4linux rw" in s["DeviceAllow"] and "char-fb rw" in s["DeviceAllow"]
    assert not any(f in s["RestrictAddressFamilies"][0] for f in ("AF_INET", "AF_PACKET"))  # no network: the page's
    assert s["IPAddressDeny"] == ["any"] and "SocketBindAllow" not in s  # drop-in (install.sh --web) opens one port
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= s.keys()


def _testable_unit(tmp_path: Path, extra: str = "") -> Path:
    """A copy whose ExecStart names a binary that exists here (verify checks that it is executable)."""
    text = UNIT.read_text()
    text = text.replace("ExecStart=/opt/skinedge/venv/bin/skinedge ", f"ExecStart={sys.executable} -m edge.cli ")
    unit = tmp_path / "skinedge.service"
    unit.write_text(text + extra)
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian: apt-get install -y systemd)")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    unit = _testable_unit(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], check=False, capture_output=True, text=True)
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "skinedge" in line]
    assert r.returncode == 0 and ours == [], r.stdout + r.stderr
    # The check is live: verify exits 0 on a bad line but prints it, and that is what we look for above.
    (tmp_path / "bad").mkdir()
    bad = _testable_unit(tmp_path / "bad", "[Service]\nDevicePolicy=clsoed\n")
    r = subprocess.run(["systemd-analyze", "verify", str(bad)], check=False, capture_output=True, text=True)
    assert "device policy" in (r.stdout + r.stderr).lower()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_exposure_score(tmp_path):
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(_testable_unit(tmp_path))],
                       check=False, capture_output=True, text=True)
    m = re.search(r"Overall exposure level for skinedge.service: ([0-9.]+)", r.stdout + r.stderr)
    if r.returncode != 0 and not m:
        pytest.skip(f"systemd-analyze security --offline unsupported here: {r.stderr.strip()[:200]}")
    print(f"\nsystemd-analyze security exposure: {m.group(1)} (0 = locked down, 10 = exposed)")
    assert float(m.group(1)) <= 2.0


# ---- the installer ----

def _install(*args: str) -> subprocess.CompletedProcess:
    """install.sh with these arguments, from this checkout unless a package source is given (the installer asks
    for one: tests/test_offline_install.py)."""
    source = [] if {"--source", "--wheelhouse"} & set(args) else ["--source", str(REPO)]
    return subprocess.run(["bash", str(INSTALL), *args, *source], check=False, capture_output=True, text=True)


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> str:
    """A clinic's public key file: a clinic install pins one (tests/test_signing.py checks without it)."""
    from edge.trust.signing import keygen

    out = tmp_path_factory.mktemp("key") / "clinic"
    keygen(out)
    return str(out) + ".pub"


def test_install_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(INSTALL)], check=False).returncode == 0
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", str(INSTALL)], check=False, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_install_dry_run_prints_the_steps_and_changes_nothing(tmp_path, key):
    config = tmp_path / "rpi5.yaml"
    shutil.copy(REPO / "device_configs" / "rpi5.yaml", config)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.yaml").write_text("name: test\n")
    watched = [Path(p) for p in ("/etc/skinedge", "/opt/skinedge", "/etc/systemd/system/skinedge.service")]
    before = [p.exists() for p in watched]

    r = _install("--dry-run", "--config", str(config), "--source", str(REPO), "--bundle", str(bundle),
                 "--trusted-key", key)
    assert r.returncode == 0, r.stderr
    steps = [line for line in r.stdout.splitlines() if line.startswith("+ ")]
    expected = [
        "usermod -a -G video skinedge",
        "install -d -m 0700 -o skinedge -g skinedge /var/lib/skinedge",
        "python3 -m venv --system-site-packages /opt/skinedge/venv",
        f"/opt/skinedge/venv/bin/python -m pip install --upgrade {REPO}\\[pi\\]",
        f"install -m 0644 {config} /etc/skinedge/device.yaml",
        f"cp -r {bundle} /opt/skinedge/bundle.new",
        "skinedge verify as skinedge",
        "device key: skinedge captures key --store <store.path> as skinedge",
        f"install -m 0644 {UNIT} /etc/systemd/system/skinedge.service",
        "systemctl daemon-reload",
        "systemctl enable skinedge.service",
        "systemctl restart skinedge.service",
    ]
    at = 0
    for want in expected:  # each step appears, in this order
        at = next((i for i in range(at, len(steps)) if want in steps[i]), None)
        assert at is not None, f"missing or out of order: {want}\n{r.stdout}"
    assert "jetson.conf" not in r.stdout
    assert [p.exists() for p in watched] == before


def test_install_dry_run_for_jetson_and_desktop(key):
    jetson = _install("--dry-run", "--device", "jetson-orin-nano", "--no-start", "--trusted-key", key)
    assert jetson.returncode == 0, jetson.stderr
    assert f"{REPO}\\[jetson\\]" in jetson.stdout and "jetson.conf" in jetson.stdout
    assert "BindPaths=-/tmp/argus_socket" in jetson.stdout and "systemctl restart" not in jetson.stdout
    desktop = _install("--dry-run", "--device", "desktop")
    assert desktop.returncode == 0, desktop.stderr
    assert f"{REPO}\\[edge\\]" in desktop.stdout and "--system-site-packages" not in desktop.stdout


def test_install_refuses_bad_arguments_with_one_clear_line(key):
    cases = {
        (): "which board? give --device NAME",
        ("--dry-run", "--device", "toaster"): "--device toaster: ",
        ("--dry-run", "--config", "/nonexistent.yaml"): "--config /nonexistent.yaml: file not found",
        ("--dry-run", "--device", "rpi5", "--bundle", "/nonexistent"): "not a skinedge bundle",
        ("--dry-run", "--device", "rpi5", "--extra", "cuda", "--trusted-key", key): "--extra cuda: expected pi, "
                                                                                    "jetson or edge",
        ("--frobnicate",): "unknown option: --frobnicate",
    }
    for args, message in cases.items():
        r = _install(*args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    assert "rpi5" in _install("--dry-run", "--device", "toaster").stderr  # lists the boards it knows


def test_memory_is_capped_per_board(key):
    """The unit caps memory (a leak ends in a restart, not a dead board); install.sh writes a size per board."""
    s = _unit_settings()
    assert s["MemoryMax"] == ["768M"] and s["MemorySwapMax"] == ["0"]
    sizes = {"rpi-zero2w": "300M", "rpi4": "768M", "rpi5": "768M", "jetson-nano": "2G", "jetson-orin-nano": "3G",
             "desktop": "768M"}
    assert set(sizes) == {p.stem for p in (REPO / "device_configs").glob("*.yaml")}
    for board, size in sizes.items():
        r = _install("--dry-run", "--device", board, "--no-start", "--trusted-key", key)
        assert r.returncode == 0, r.stderr
        assert "+ write /etc/systemd/system/skinedge.service.d/memory.conf" in r.stdout
        assert f"    MemoryMax={size}\n" in r.stdout, board
    r = _install("--dry-run", "--device", "rpi4", "--memory-max", "1G", "--trusted-key", key)
    assert "    MemoryMax=1G\n" in r.stdout
    r = _install("--dry-run", "--device", "rpi4", "--memory-max", "lots", "--trusted-key", key)
    assert r.returncode == 2 and "--memory-max lots: expected a size such as 300M or 2G" in r.stderr


# ---- the network: nothing listens unless the page is on, and then only on its address ----

def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process `pid` holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addr, port = fields[1].split(":")
                raw = bytes.fromhex(addr)
                host = (socket.inet_ntop(socket.AF_INET, raw[::-1]) if width == 8 else
                        socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
                found.append((host, int(port, 16)))
    return found


def _board_process(listener: Listener, tmp_path: Path, *overrides: str) -> subprocess.Popen:
    """`skinedge run` on the demo bundle (looping clip, no screen) as the service runs it, once it is READY."""
    config = tmp_path / "board.yaml"
    demo = REPO / "edge" / "demo_assets"
    config.write_text(f"bundle: {demo / 'bundle'}\nbackend: tflite\nthreads: 1\n"
                      f"source: {{kind: video, path: {demo / 'clip.mp4'}, loop: true}}\n"
                      f"display: {{kind: 'null'}}\nstore: {{path: {tmp_path / 'store'}}}\nallow_unsigned: true\n"
                      + "".join(overrides))
    env = {**os.environ, "NOTIFY_SOCKET": listener.address, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not listener.wait_for(lambda texts: any(t.startswith("READY=1") for t in texts), timeout=0.5):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate(timeout=30)
    listener.texts()  # what it sent so far: READY=1, STATUS=...
    return child


def _stop(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGINT)
    child.communicate(timeout=60)


def test_no_network_listener_unless_the_page_is_on_and_then_only_its_address(listener, tmp_path):
    """The unit has no AF_INET (test_unit_has_the_service_contract); the process itself opens no port either,
    and with the page on it listens on the configured address only."""
    child = _board_process(listener, tmp_path)
    try:
        assert _listening(child.pid) == []
    finally:
        _stop(child)
    with socket.socket() as probe:  # a free port, then released for the board
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    child = _board_process(listener, tmp_path, f"web: {{enabled: true, address: 127.0.0.2, port: {port}}}\n")
    try:
        assert _listening(child.pid) == [("127.0.0.2", port)]
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        _stop(child)


def test_install_opens_the_network_only_for_the_page(tmp_path):
    off = _install("--dry-run", "--device", "rpi5", "--allow-unsigned", "--no-start")
    assert off.returncode == 0 and "+ rm -f /etc/systemd/system/skinedge.service.d/web.conf" in off.stdout
    on = _install("--dry-run", "--device", "rpi5", "--allow-unsigned", "--no-start", "--web", "192.168.1.20:8443", "--web-tls")
    assert on.returncode == 0, on.stderr
    dropin = on.stdout.split("+ write /etc/systemd/system/skinedge.service.d/web.conf (mode 0644):\n")[1]
    lines = [line.strip() for line in dropin.split("\n+ ")[0].splitlines()]
    assert lines[1:] == ["[Service]", "RestrictAddressFamilies=AF_INET", "SocketBindAllow=tcp:8443",
                         "SocketBindDeny=any", "IPAddressAllow=192.168.1.0/24"]
    assert 'address: "192.168.1.20"' in on.stdout and "port: 8443" in on.stdout and "web-cert --address" in on.stdout
    loop = _install("--dry-run", "--device", "rpi5", "--allow-unsigned", "--no-start", "--web", "127.0.0.1")
    assert "IPAddressAllow=localhost" in loop.stdout and "SocketBindAllow=tcp:8080" in loop.stdout
    v6 = _install("--dry-run", "--device", "rpi5", "--allow-unsigned", "--no-start", "--web", "[fd00::20]:8443", "--web-allow", "fd00::/64")
    assert "RestrictAddressFamilies=AF_INET6" in v6.stdout and "IPAddressAllow=fd00::/64" in v6.stdout
    for bad, message in ((("--web", "clinic.local"),
                          "--web clinic.local: expected an IP address and optional port"),
                         (("--web-tls",), "--web-tls and --web-allow need --web ADDRESS")):
        r = _install("--dry-run", "--device", "rpi5", "--allow-unsigned", *bad)
        assert r.returncode == 2 and message in r.stderr, r.stderr
    if shutil.which("systemd-analyze"):
        unit = _testable_unit(tmp_path, "\n" + "\n".join(lines[1:]) + "\n")
        r = subprocess.run(["systemd-analyze", "verify", str(unit)], check=False, capture_output=True, text=True)
        assert r.returncode == 0 and not [x for x in (r.stdout + r.stderr).splitlines() if "skinedge" in x], r.stderr
