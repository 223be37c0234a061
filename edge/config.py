"""Device configuration: a strictly validated YAML file per board (device_configs/*.yaml).

A clinic board has no one on site who can debug Python, so a typo must fail at start-up with one line
that names the file and the key, not half an hour later as odd behaviour. Every key is checked: unknown
keys (with a "did you mean" hint), wrong types, out-of-range values and missing required keys are all
`ConfigError`s. Relative paths are resolved against the config file's directory (values from the
command line against the working directory), so a config works from wherever the service starts.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from edge.backends.cpu import check_threads, cores, max_threads
from edge.gates import GatesConfig
from edge.trust import safeyaml
from edge.trust.signing import Trust, key_bytes

# gradcam.colormap: OpenCV's colour maps by lower-case name (edge.overlay renders with them)
MAX_CAMERA_INDEX = 9999  # OpenCV takes an int; /dev/videoN numbers are far below this
COLORMAPS = {n[len("COLORMAP_"):].lower(): getattr(cv2, n) for n in dir(cv2) if n.startswith("COLORMAP_")}


class ConfigError(ValueError):
    """'<file>: <dotted.key>: <what was expected, what was found>'."""

    def __init__(self, file: Path | str, key: str | None, msg: str):
        key = None if key is None else safeyaml.cut(key)
        self.file, self.key = str(file), key
        super().__init__(f"{file}: {key}: {msg}" if key else f"{file}: {msg}")


@dataclass(frozen=True)
class SourceConfig:
    kind: str  # picamera2 | opencv | folder | video
    device: str | int | None = None  # opencv: camera index or /dev/videoN
    pipeline: str | None = None  # opencv: GStreamer pipeline (wins over device)
    path: str | None = None  # video file or image folder
    resolution: tuple[int, int] = (640, 480)  # (w, h) requested from cameras
    fps: int = 30
    loop: bool = False  # video/folder: start again at the end
    max_image_megapixels: float = 100.0  # folder: larger images are refused from their header, never decoded
    max_image_megabytes: float = 256.0  # folder: larger files are refused before they are read


@dataclass(frozen=True)
class DisplayConfig:
    kind: str  # window | framebuffer | files | null
    device: str | None = None  # framebuffer: /dev/fbN
    size: tuple[int, int] = (800, 480)  # (w, h) of the panel
    rotation: int = 0  # degrees clockwise: 0 | 90 | 180 | 270
    fullscreen: bool = False
    path: str | None = None  # files: a folder of PNGs or a .mp4/.avi


@dataclass(frozen=True)
class GradcamConfig:
    every_n: int = 1  # compute the map every n-th frame; 0 = off
    alpha: float = 0.45
    colormap: str = "jet"


@dataclass(frozen=True)
class ThresholdsConfig:
    min_confidence: float = 0.6


@dataclass(frozen=True)
class StoreConfig:
    path: str = "/var/lib/skinedge/captures"
    keep_raw: bool = True


@dataclass(frozen=True)
class ForwardConfig:
    """Store-and-forward to a hospital PACS (edge/record/sender.py); off while url is null."""

    url: str | None = None  # https://HOST/DICOMWEB-BASE (STOW-RS) or dicom://CALLED_AE@HOST:PORT (C-STORE)
    credentials: str | None = None  # a 0600 YAML file: username + password (basic) or token (bearer)
    ca_file: str | None = None  # PEM CA certificate(s) to trust instead of the system's: a pinned hospital CA
    calling_aet: str = "SKINEDGE"  # C-STORE: this board's AE title
    batch: int = 4  # captures per request
    timeout_seconds: float = 30.0
    retry_min_seconds: float = 10.0  # back-off while the PACS fails: first wait ...
    retry_max_seconds: float = 900.0  # ... doubling up to this
    poll_seconds: float = 30.0  # how often to look for new captures when none wait

    @property
    def enabled(self) -> bool:
        return self.url is not None


@dataclass(frozen=True)
class DicomConfig:
    """How captures are described as DICOM (forwarding and `captures export --dicom`)."""

    dermatoscope: bool = False  # the camera is a dermatoscope: Dermoscopic Photography Image (modality DMS)
    institution: str | None = None  # InstitutionName: the clinic
    patient_id_issuer: str | None = None  # Issuer of Patient ID (who assigns visit IDs); default: this board


@dataclass(frozen=True)
class TriggerConfig:
    key: str | None = None
    gpio_pin: int | None = None


@dataclass(frozen=True)
class WatchdogConfig:
    enabled: bool = True
    stall_seconds: float = 10.0


@dataclass(frozen=True)
class VisitsConfig:
    """Pseudonymous visit IDs (edge.record.visits): never a name, so the default pattern needs a digit."""

    required: bool = False  # keep no capture without a visit ID
    scan: bool = True  # read the patient card's QR code or barcode from the camera
    pattern: str = r"(?=.*[0-9])[A-Za-z0-9][A-Za-z0-9._-]{2,39}"  # a whole visit ID must match (re.fullmatch)
    duplicate_seconds: float = 10.0  # a capture this soon after the previous one of the same visit ...
    duplicate_change: float = 0.08  # ... that differs from it by less than this (edge.record.visits) is a duplicate


@dataclass(frozen=True)
class WebConfig:
    """The page for a tablet or phone (edge/web): off unless enabled; loopback unless an address is given."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (tests); the unit's firewall needs a fixed one
    tls_cert: str | None = None  # PEM files (systemd/install.sh --web-tls makes them); both or neither
    tls_key: str | None = None
    session_hours: float = 12.0  # a paired browser's session cookie expires after this
    live_fps: float = 10.0  # the live view's frame rate at most (each frame is a JPEG encoded on the board)


@dataclass(frozen=True)
class DeviceConfig:
    path: Path
    bundle: str | None
    backend: str
    threads: int
    source: SourceConfig
    display: DisplayConfig
    gradcam: GradcamConfig
    thresholds: ThresholdsConfig
    store: StoreConfig
    trigger: TriggerConfig
    watchdog: WatchdogConfig
    gates: GatesConfig
    device_name: str
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    parallel_members: bool = False  # ensembles: run members in parallel threads (the runtimes release the GIL)
    precision: str = "int8"  # which artefact the backend opens: int8, or fp32 where int8 does not pay on the CPU
    trust: Trust = field(default_factory=Trust)  # trusted_keys + allow_unsigned: the signatures accepted
    state_dir: str = "/var/lib/skinedge"  # the board's own state: highest versions accepted (edge/trust/rollback.py)
    language: str = "en"  # what the HUD, the page and the export say (edge/i18n)
    visits: VisitsConfig = field(default_factory=VisitsConfig)
    web: WebConfig = field(default_factory=WebConfig)


# ---- value checkers: return the normalised value or raise _Bad with "expected ..., found ..." ----


class _Bad(Exception):
    pass


Check = Callable[[Any], Any]
REQUIRED = object()


def _found(v: Any) -> str:
    return f"found {safeyaml.shown(v)} ({type(v).__name__})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(lo: int, hi: int | None = None) -> Check:
    def check(v):
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise _Bad(f"expected an integer {rng}, {_found(v)}")
        return v

    return check


def _float(lo: float, hi: float | None = None) -> Check:
    def check(v):
        if not (_is_int(v) or isinstance(v, float)) or not (lo <= v and (hi is None or v <= hi)):
            rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise _Bad(f"expected a number {rng}, {_found(v)}")
        return float(v)

    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, {_found(v)}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _Bad(f"expected a non-empty string, {_found(v)}")
    return v


def _char(v: Any) -> str:
    if not isinstance(v, str) or len(v) != 1:
        raise _Bad(f"expected a single character in quotes, e.g. \"c\", {_found(v)}")
    return v


def _threads(v: Any) -> int:
    """1..4 x cores (edge.backends.cpu): 100,000 threads crash LiteRT and grow ONNX Runtime to gigabytes."""
    if not _is_int(v):
        raise _Bad(f"expected an integer in 1..{max_threads()}, {_found(v)}")
    try:
        check_threads(v)
    except ValueError as e:
        raise _Bad(str(e).removeprefix("threads: ")) from None
    return v


def _camera(v: Any) -> int | str:
    if _is_int(v) and 0 <= v <= MAX_CAMERA_INDEX:
        return v
    if isinstance(v, str) and v:
        return v
    raise _Bad(f"expected a camera index (0..{MAX_CAMERA_INDEX}) or a device path such as /dev/video0, {_found(v)}")


def _size(lo: int, hi: int, pixels: int, what: str) -> Check:
    """[w, h] with each side in lo..hi and w*h <= pixels: bounded by real hardware (`what`), because a frame of
    [40000, 40000] is accepted by OpenCV and costs gigabytes and seconds per frame."""
    def check(v):
        if (not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_int(x) and lo <= x <= hi for x in v)
                or v[0] * v[1] > pixels):
            raise _Bad(f"expected [width, height], integers in {lo}..{hi} and at most {pixels / 1e6:.1f} "
                       f"megapixels ({what}), {_found(v)}")
        return int(v[0]), int(v[1])

    return check


def _enum(*choices: Any) -> Check:
    def check(v):
        if v in choices and type(v) is type(choices[0]):
            return v
        hint = difflib.get_close_matches(str(v), [str(c) for c in choices], n=1)
        raise _Bad(f"expected one of {', '.join(map(repr, choices))}, {_found(v)}"
                   + (f"; did you mean {hint[0]!r}?" if hint else ""))

    return check


def _display_kind(v: Any) -> str:
    # An unquoted `kind: null` is YAML's null, not the string; both mean "no display", so accept it.
    return _enum("window", "auto", "framebuffer", "files", "null")("null" if v is None else v)


def _public_keys(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > 64:
        raise _Bad(f"expected a list of public keys ('ed25519:...' lines from skinedge keygen's .pub file), {_found(v)}")
    for i, key in enumerate(v):
        try:
            key_bytes(key)
        except ValueError as e:
            raise _Bad(f"item {i}: {e}, {_found(key)}") from None
    return tuple(v)


def _regex(v: Any) -> str:
    _str(v)
    try:
        re.compile(v)
    except re.error as e:
        raise _Bad(f"expected a regular expression, {_found(v)}: {e}") from None
    return v


def _address(v: Any) -> str:
    """An IP address to listen on (not a host name: the unit's firewall rules need the address itself)."""
    try:
        return str(ipaddress.ip_address(v if isinstance(v, str) else ""))
    except ValueError:
        raise _Bad(f"expected an IP address such as 127.0.0.1 or 192.168.1.20, {_found(v)}") from None


def _language(v: Any) -> str:
    from edge.i18n import LANGUAGES

    return _enum(*LANGUAGES)(v)


def _destination(v: Any) -> str:
    from edge.record.destination import DestinationError, parse_destination

    try:
        return parse_destination(_str(v)).name
    except DestinationError as e:
        raise _Bad(f"{e}, {_found(v)}") from None


def _aet(v: Any) -> str:
    if not isinstance(v, str) or not 0 < len(v.strip()) <= 16 or not v.isascii() or "\\" in v or not v.isprintable():
        raise _Bad(f"expected a DICOM AE title: 1 to 16 printable ASCII characters, no backslash, {_found(v)}")
    return v.strip()


def _optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


# Each section: its dataclass and {key: (checker, default or REQUIRED)}. Top-level scalars live under "".
SCHEMA: dict[str, tuple[type | None, dict[str, tuple[Check, Any]]]] = {
    "": (None, {
        "bundle": (_optional(_str), None),
        "backend": (_enum("tflite", "onnx", "tensorrt", "auto"), "auto"),
        "threads": (_threads, min(4, cores())),
        "precision": (_enum("int8", "fp32"), "int8"),
        "device_name": (_optional(_str), None),
        "parallel_members": (_bool, False),
        "trusted_keys": (_public_keys, ()),
        "require_signature": (_bool, False),  # implied unless allow_unsigned: kept for explicit configs
        "allow_unsigned": (_bool, False),
        "state_dir": (_optional(_str), None),  # default: the folder that holds store.path
        "language": (_language, "en"),
    }),
    "source": (SourceConfig, {
        "kind": (_enum("picamera2", "opencv", "folder", "video"), REQUIRED),
        "device": (_optional(_camera), None),
        "pipeline": (_optional(_str), None),
        "path": (_optional(_str), None),
        "resolution": (_size(16, 9248, 9248 * 6944, "the largest Raspberry Pi camera sensor, 64 MP"),
                       SourceConfig.resolution),
        "fps": (_int(1, 240), SourceConfig.fps),
        "loop": (_bool, SourceConfig.loop),
        "max_image_megapixels": (_float(0.01, 10000.0), SourceConfig.max_image_megapixels),
        "max_image_megabytes": (_float(0.01, 100000.0), SourceConfig.max_image_megabytes),
    }),
    "display": (DisplayConfig, {
        "kind": (_display_kind, REQUIRED),
        "device": (_optional(_str), None),
        "size": (_size(120, 7680, 7680 * 4320, "an 8K panel"), DisplayConfig.size),
        "rotation": (_enum(0, 90, 180, 270), DisplayConfig.rotation),
        "fullscreen": (_bool, DisplayConfig.fullscreen),
        "path": (_optional(_str), None),
    }),
    "gradcam": (GradcamConfig, {
        "every_n": (_int(0, 10_000), GradcamConfig.every_n),
        "alpha": (_float(0.0, 1.0), GradcamConfig.alpha),
        "colormap": (_enum(*COLORMAPS), GradcamConfig.colormap),
    }),
    "thresholds": (ThresholdsConfig, {"min_confidence": (_float(0.0, 1.0), ThresholdsConfig.min_confidence)}),
    "store": (StoreConfig, {"path": (_str, StoreConfig.path), "keep_raw": (_bool, StoreConfig.keep_raw)}),
    "trigger": (TriggerConfig, {
        "key": (_optional(_char), None),
        "gpio_pin": (_optional(_int(0, 255)), None),
    }),
    "gates": (GatesConfig, {
        "enabled": (_bool, GatesConfig.enabled),
        "ood": (_bool, GatesConfig.ood),
        "blur_min": (_float(0.0), GatesConfig.blur_min),
        "dark_level": (_float(0.0, 255.0), GatesConfig.dark_level),
        "bright_level": (_float(0.0, 255.0), GatesConfig.bright_level),
        "clipped_max": (_float(0.0, 1.0), GatesConfig.clipped_max),
        "motion_max": (_float(0.0), GatesConfig.motion_max),
        "stable_frames": (_int(1, 100), GatesConfig.stable_frames),
    }),
    "visits": (VisitsConfig, {
        "required": (_bool, VisitsConfig.required),
        "scan": (_bool, VisitsConfig.scan),
        "pattern": (_regex, VisitsConfig.pattern),
        "duplicate_seconds": (_float(0.0, 3600.0), VisitsConfig.duplicate_seconds),
        "duplicate_change": (_float(0.0, 1.0), VisitsConfig.duplicate_change),
    }),
    "web": (WebConfig, {
        "enabled": (_bool, WebConfig.enabled),
        "address": (_address, WebConfig.address),
        "port": (_int(0, 65535), WebConfig.port),
        "tls_cert": (_optional(_str), None),
        "tls_key": (_optional(_str), None),
        "session_hours": (_float(0.05, 24.0 * 30), WebConfig.session_hours),
        "live_fps": (_float(1.0, 30.0), WebConfig.live_fps),
    }),
    "forward": (ForwardConfig, {
        "url": (_optional(_destination), None),
        "credentials": (_optional(_str), None),
        "ca_file": (_optional(_str), None),
        "calling_aet": (_aet, ForwardConfig.calling_aet),
        "batch": (_int(1, 100), ForwardConfig.batch),
        "timeout_seconds": (_float(1.0, 600.0), ForwardConfig.timeout_seconds),
        "retry_min_seconds": (_float(0.1, 86400.0), ForwardConfig.retry_min_seconds),
        "retry_max_seconds": (_float(0.1, 86400.0), ForwardConfig.retry_max_seconds),
        "poll_seconds": (_float(0.1, 86400.0), ForwardConfig.poll_seconds),
    }),
    "dicom": (DicomConfig, {
        "dermatoscope": (_bool, DicomConfig.dermatoscope),
        "institution": (_optional(_str), None),
        "patient_id_issuer": (_optional(_str), None),
    }),
    "watchdog": (WatchdogConfig, {
        "enabled": (_bool, WatchdogConfig.enabled),
        "stall_seconds": (_float(0.1, 3600.0), WatchdogConfig.stall_seconds),
    }),
}
PATH_KEYS = ("bundle", "source.path", "store.path", "display.path", "state_dir", "web.tls_cert", "web.tls_key",
             "forward.credentials", "forward.ca_file")
# Where the frames come from: a command-line value for one of these replaces the file's others, so
# `--source clip.mp4` is not shadowed by a GStreamer pipeline left in the file.
SOURCE_LOCATION = ("source.device", "source.pipeline", "source.path")


def _unknown(key: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    return "unknown key" + (f"; did you mean {hint[0]!r}?" if hint else f" (known: {', '.join(known)})")


def _read_yaml(path: Path) -> dict:
    try:
        text = safeyaml.read(path).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "config file not found") from None
    except (OSError, UnicodeDecodeError, safeyaml.YamlError) as e:
        raise ConfigError(path, None, f"cannot read config: {e}") from None
    try:
        data = safeyaml.load(text)
    except safeyaml.YamlError as e:
        raise ConfigError(path, None, str(e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):  # its text is not echoed: a config path pointed at a key file must not print it
        raise ConfigError(path, None, f"expected a mapping of keys at the top level, found a {type(data).__name__} "
                          "(is this a device config?)")
    return data


def _flatten(path: Path, data: dict) -> dict[str, Any]:
    """{'source': {'kind': ...}} -> {'source.kind': ...}, refusing unknown sections and keys."""
    flat: dict[str, Any] = {}
    top_known = list(SCHEMA[""][1]) + [s for s in SCHEMA if s]
    for key, value in data.items():
        key = str(key)
        if key in SCHEMA[""][1]:
            flat[key] = value
        elif key in SCHEMA and key:
            if not isinstance(value, dict):
                raise ConfigError(path, key, f"expected a mapping of {key} settings, {_found(value)}")
            for sub, v in value.items():
                dotted = f"{key}.{sub}"
                if str(sub) not in SCHEMA[key][1]:
                    raise ConfigError(path, dotted, _unknown(dotted, list(SCHEMA[key][1])))
                flat[dotted] = v
        else:
            raise ConfigError(path, key, _unknown(key, top_known))
    return flat


def _check_override_keys(path: Path, overrides: dict[str, Any]) -> None:
    for dotted in overrides:
        section, _, key = dotted.rpartition(".")
        if section not in SCHEMA or key not in SCHEMA[section][1]:
            known = [f"{s}.{k}" if s else k for s, (_, keys) in SCHEMA.items() for k in keys]
            hint = difflib.get_close_matches(dotted, known, n=1)
            raise ConfigError(path, f"{dotted} (override)",
                              "unknown key" + (f"; did you mean {hint[0]!r}?" if hint else ""))


def _resolve(value: str, base: Path) -> str:
    if "://" in value:  # a stream URL (source.path: rtsp://, http://) is not a file
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def load_config(path: Path | str, overrides: dict[str, Any] | None = None) -> DeviceConfig:
    """Read, validate and normalise a device config; `overrides` are dotted keys (from the command line)."""
    path = Path(path)
    flat = _flatten(path, _read_yaml(path))
    overrides = dict(overrides or {})
    _check_override_keys(path, overrides)
    if any(k in overrides for k in SOURCE_LOCATION):
        flat = {k: v for k, v in flat.items() if k not in SOURCE_LOCATION}
    flat.update(overrides)

    values: dict[str, Any] = {}
    for section, (_, keys) in SCHEMA.items():
        for key, (check, default) in keys.items():
            dotted = f"{section}.{key}" if section else key
            label = f"{dotted} (override)" if dotted in overrides else dotted
            if dotted not in flat:
                if default is REQUIRED:
                    raise ConfigError(path, dotted, "required key is missing")
                values[dotted] = default
                continue
            try:
                value = check(flat[dotted])
            except _Bad as e:
                raise ConfigError(path, label, str(e)) from None
            if dotted in PATH_KEYS and value is not None:
                value = _resolve(value, Path.cwd() if dotted in overrides else path.parent.resolve())
            values[dotted] = value
    _cross_check(path, values)

    sections = {s: cls(**{k: values[f"{s}.{k}"] for k in keys}) for s, (cls, keys) in SCHEMA.items() if s}
    return DeviceConfig(path=path, bundle=values["bundle"], backend=values["backend"],
                        threads=values["threads"], device_name=values["device_name"] or path.stem,
                        parallel_members=values["parallel_members"], precision=values["precision"],
                        trust=Trust(values["trusted_keys"], not values["allow_unsigned"]),
                        state_dir=values["state_dir"] or str(Path(values["store.path"]).parent),
                        language=values["language"], **sections)


def _cross_check(path: Path, v: dict[str, Any]) -> None:
    """Keys that are required only for some kinds; fills the framebuffer device default."""
    kind = v["source.kind"]
    if kind in ("video", "folder") and v["source.path"] is None:
        raise ConfigError(path, "source.path", f"required when source.kind is {kind!r}")
    if kind == "opencv" and v["source.device"] is None and v["source.pipeline"] is None:
        raise ConfigError(path, "source.device", "source.kind 'opencv' needs source.device (an index or "
                          "/dev/videoN) or source.pipeline (a GStreamer pipeline)")
    if v["display.kind"] == "files" and v["display.path"] is None:
        raise ConfigError(path, "display.path",
                          "required when display.kind is 'files' (a folder, .mp4 or .avi)")
    if v["require_signature"] and not v["trusted_keys"]:
        raise ConfigError(path, "require_signature", "true needs trusted_keys: the public key(s) whose signatures "
                          "this board accepts (skinedge keygen writes one)")
    if v["trusted_keys"] and path.exists() and os.stat(path).st_mode & stat.S_IWOTH:
        raise ConfigError(path, "trusted_keys", "this file is writable by every user, so anyone could pin their own "
                          f"key in it: chmod o-w {path}")
    if v["require_signature"] and v["allow_unsigned"]:
        raise ConfigError(path, "allow_unsigned", "true contradicts require_signature: true; keep one of them")
    if v["gates.dark_level"] >= v["gates.bright_level"]:
        raise ConfigError(path, "gates.dark_level", f"must be below gates.bright_level ({v['gates.bright_level']:g}), "
                          f"found {v['gates.dark_level']:g}")
    if (v["web.tls_cert"] is None) != (v["web.tls_key"] is None):
        raise ConfigError(path, "web.tls_cert", "TLS needs both web.tls_cert and web.tls_key (PEM files), or neither")
    if v["forward.retry_min_seconds"] > v["forward.retry_max_seconds"]:
        raise ConfigError(path, "forward.retry_min_seconds", f"must not exceed forward.retry_max_seconds "
                          f"({v['forward.retry_max_seconds']:g}), found {v['forward.retry_min_seconds']:g}")
    if v["forward.url"] is None and (v["forward.credentials"] or v["forward.ca_file"]):
        raise ConfigError(path, "forward.url", "required when forward.credentials or forward.ca_file is set "
                          "(where to send captures)")
    if v["display.kind"] == "framebuffer" and v["display.device"] is None:
        v["display.device"] = "/dev/fb0"


def source_overrides(spec: str) -> dict:
    """--source: 'picamera2', a device index, /dev/videoN, a GStreamer pipeline ('!'), a video file or an image folder."""
    if spec == "picamera2":
        return {"source.kind": "picamera2"}
    if spec.isdigit():
        return {"source.kind": "opencv", "source.device": int(spec)}
    if spec.startswith("/dev/video"):
        return {"source.kind": "opencv", "source.device": spec}
    if "!" in spec:
        return {"source.kind": "opencv", "source.pipeline": spec}
    if "://" in spec:  # a stream: live, read as a video
        return {"source.kind": "video", "source.path": spec}
    if _is_dir(spec):
        return {"source.kind": "folder", "source.path": str(Path(spec).resolve())}
    return {"source.kind": "video", "source.path": str(Path(spec).resolve())}


def _is_dir(spec: str) -> bool:
    try:
        return Path(spec).is_dir()
    except OSError:  # e.g. a name too long for the file system: not a folder; the source says why when opened
        return False


def display_overrides(spec: str) -> dict:
    """--display: 'window', 'auto', 'null', '/dev/fbN', 'framebuffer:PATH', or a folder / .mp4 / .avi path to write
    frames to."""
    if spec in ("window", "auto", "null"):
        return {"display.kind": spec}
    if spec.startswith("/dev/fb"):
        return {"display.kind": "framebuffer", "display.device": spec}
    if spec.startswith("framebuffer:"):  # a framebuffer device at another path
        return {"display.kind": "framebuffer", "display.device": spec.split(":", 1)[1]}
    return {"display.kind": "files", "display.path": str(Path(spec).resolve())}
