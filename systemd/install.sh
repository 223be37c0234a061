#!/usr/bin/env bash
# Install skinedge as a boot-time service on a Raspberry Pi, a Jetson or a Linux PC. Idempotent: run it
# again to upgrade; an existing /etc/skinedge/device.yaml is kept unless --replace-config is given.
#
#   sudo systemd/install.sh --device rpi5 --wheelhouse /media/usb/wheelhouse --trusted-key clinic.pub  # no internet
#   sudo systemd/install.sh --device rpi4 --source ~/skinedge --trusted-key clinic.pub  # a checkout (pip: internet)
#   sudo systemd/install.sh --device rpi5 --wheelhouse W --bundle ./signed --trusted-key clinic.pub  # + a signed bundle
#   systemd/install.sh --dry-run --device jetson-orin-nano --source . --trusted-key clinic.pub   # print the steps
#   sudo systemd/install.sh --device rpi4 --trusted-key clinic.pub --pacs https://pacs.hospital.example/dicom-web \
#        --pacs-credentials pacs.cred                              # also forward captures to the hospital's PACS
#   sudo systemd/install.sh --device rpi5 --trusted-key clinic.pub --web 192.168.1.20 --web-tls  # + the page
#
# A clinic install runs signed bundles only: --trusted-key pins the public key whose signatures the board accepts
# (make the pair on the workstation: skinedge keygen --out clinic-key; sign: skinedge sign BUNDLE --key clinic-key;
# copy clinic-key.pub to the board, never clinic-key). --allow-unsigned runs unsigned bundles instead, marked
# UNSIGNED MODEL on every screen and capture (demos, not clinics). Re-running keeps a config that already pins keys.
#
# Steps: system user `skinedge` (groups video, and gpio/render where they exist) -> /opt/skinedge/venv
# with skinedge[EXTRA] -> /etc/skinedge/device.yaml (plus pinned signing keys) -> bundle (signature,
# hashes and golden self-test checked on this board) -> /var/lib/skinedge (0700) with the board's device
# key, which signs every capture (its public key is printed) -> the unit (plus a Jetson drop-in) ->
# daemon-reload -> enable and (re)start. With --pacs: the dicom extra, a forward: section in the config, the
# credentials (0600, the service user's) and skinedge-forward.service (idle priority, network allowed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PREFIX=/opt/skinedge
VENV="$PREFIX/venv"
ETC=/etc/skinedge
STATE=/var/lib/skinedge
UNIT_DIR=/etc/systemd/system
SERVICE=skinedge.service
FORWARD=skinedge-forward.service
USER_NAME=skinedge

DRY=0 DEVICE="" CONFIG="" SOURCE="" WHEELHOUSE="" BUNDLE="" EXTRA="" START=1 REPLACE_CONFIG=0 MEMORY_MAX="" KEYS=() UNSIGNED=0
WEB="" WEB_TLS=0 WEB_ALLOW=()
PACS="" PACS_CRED="" PACS_CA=""

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<EOF

Options:
  --device NAME       device config device_configs/NAME.yaml (from --source, else this checkout)
  --config FILE       a device config file of your own instead of --device
  --wheelhouse DIR    install skinedge and every dependency from this folder, made on a workstation by
                      skinedge wheelhouse --out DIR (pinned by sha256; no internet needed)
  --source DIR        install skinedge from this source tree (pip fetches the dependencies: needs internet)
  --bundle DIR        copy this model bundle to $PREFIX/bundle (where the shipped configs point)
  --trusted-key FILE  pin this public key (from skinedge keygen) in $ETC/device.yaml with
                      require_signature: true, so only bundles signed by it run; repeatable. Required,
                      unless the config already pins keys or --allow-unsigned is given
  --allow-unsigned    run unsigned bundles (allow_unsigned: true; every screen says UNSIGNED MODEL)
  --extra pi|jetson|edge   pip extra (default: pi for rpi*, jetson for jetson*, edge otherwise)
  --replace-config    overwrite an existing $ETC/device.yaml
  --no-start          enable the service but do not (re)start it (e.g. when preparing an SD card image)
  --memory-max SIZE   the service's MemoryMax= (e.g. 512M); default: per board, see memory_max_for
  --web ADDRESS[:PORT]  serve the page (web: in $ETC/device.yaml) on this address only (port 8080 by
                      default); the unit then allows TCP for that port and the clients below, nothing else
  --web-tls           make a TLS certificate for the page ($ETC/web/) and serve HTTPS; its fingerprint is
                      printed here and shown on the board's screen
  --web-allow CIDR    clients allowed to reach the page (repeatable); default: the address's own /24 (IPv6:
                      /64), or localhost for a loopback address
  --pacs URL          forward captures to the hospital's PACS: https://HOST/DICOMWEB-BASE (STOW-RS) or
                      dicom://CALLED_AE@HOST:PORT (C-STORE); adds the dicom extra, a forward: section in
                      $ETC/device.yaml and $FORWARD (idle priority, the only unit with network)
  --pacs-credentials FILE  YAML with username + password (basic) or token (bearer), copied to
                      $ETC/pacs.cred, mode 0600, owned by $USER_NAME
  --pacs-ca FILE      the hospital's CA certificate (PEM), trusted instead of the system's: $ETC/pacs-ca.pem
  --dry-run           print every step instead of running it
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "== $*"; }

# Run a command, or print it under --dry-run.
run() {
    if ((DRY)); then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

# write_file DEST MODE: stdin to DEST atomically (or print it under --dry-run).
write_file() {
    local dest=$1 mode=$2 content line
    content="$(cat)"
    if ((DRY)); then
        echo "+ write $dest (mode $mode):"
        while IFS= read -r line; do printf '    %s\n' "$line"; done <<<"$content"
    else
        install -d -m 0755 "$(dirname "$dest")"
        printf '%s\n' "$content" >"$dest.tmp.$$"
        chmod "$mode" "$dest.tmp.$$"
        mv -f "$dest.tmp.$$" "$dest"
    fi
}

while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --device) DEVICE=${2:?--device needs a name}; shift ;;
        --config) CONFIG=${2:?--config needs a file}; shift ;;
        --source) SOURCE=${2:?--source needs a directory}; shift ;;
        --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift ;;
        --bundle) BUNDLE=${2:?--bundle needs a directory}; shift ;;
        --trusted-key) KEYS+=("${2:?--trusted-key needs a .pub file}"); shift ;;
        --allow-unsigned) UNSIGNED=1 ;;
        --extra) EXTRA=${2:?--extra needs pi, jetson or edge}; shift ;;
        --replace-config) REPLACE_CONFIG=1 ;;
        --no-start) START=0 ;;
        --memory-max) MEMORY_MAX=${2:?--memory-max needs a size such as 512M}; shift ;;
        --web) WEB=${2:?--web needs an address such as 192.168.1.20 or 192.168.1.20:8443}; shift ;;
        --web-tls) WEB_TLS=1 ;;
        --web-allow) WEB_ALLOW+=("${2:?--web-allow needs an address range such as 192.168.1.0/24}"); shift ;;
        --pacs) PACS=${2:?--pacs needs a URL}; shift ;;
        --pacs-credentials) PACS_CRED=${2:?--pacs-credentials needs a file}; shift ;;
        --pacs-ca) PACS_CA=${2:?--pacs-ca needs a PEM file}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

# MemoryMax= per board: a ceiling that turns a leak into an OOM kill and a restart (Restart=on-failure) before
# the board itself runs out of memory, not a tight fit. Measured peak RSS of `skinedge run` (x86_64, the
# whole edge runtime imported: ~86 MB before the first frame): 104-147 MB for the demo bundle, 127-157 MB for
# MobileNetV2 224 int8 (benchmarks/README.md, skinedge bench); 144.7 MiB peak and +0.76 B/frame over 500,000
# frames of the demo bundle (benchmarks/soak.py): a peak, not a trend.
# Zero 2 W: 512 MB shared with the GPU/camera -> 300M (2x the measured peak, ~150 MB left to the OS).
# Pi 4 / Pi 5 (1-8 GB): 768M (5x: room for an ensemble, 256 MB left on a 1 GB board).
# Jetson: CUDA + TensorRT context and the engine build (workspace capped at 256 MB) come on top, unmeasured
# here: Nano (4 GB shared) 2G, Orin Nano (8 GB) 3G. Other boards: half the RAM, at least 256M.
memory_max_for() {
    case $1 in
        rpi-zero2w) echo 300M ;;
        rpi4|rpi5|desktop) echo 768M ;;
        jetson-nano) echo 2G ;;
        jetson-orin-nano) echo 3G ;;
        *) awk '/^MemTotal:/ { m = int($2 / 2048); print (m < 256 ? 256 : m) "M" }' /proc/meminfo ;;
    esac
}

# ---- check the inputs before touching anything ----
[[ -n $DEVICE && -n $CONFIG ]] && die "give --device or --config, not both"
[[ -z $DEVICE && -z $CONFIG ]] && die "which board? give --device NAME (device_configs/NAME.yaml) or --config FILE"
# The package index has no skinedge, and a clinic board has no internet: the package comes from files.
[[ -n $SOURCE && -n $WHEELHOUSE ]] && die "give --wheelhouse or --source, not both"
[[ -z $SOURCE && -z $WHEELHOUSE ]] && die "where from? give --wheelhouse DIR (made with \`skinedge wheelhouse --out DIR\` on a workstation; no internet needed) or --source DIR (a skinedge checkout; pip fetches the dependencies from the internet)"
if [[ -n $SOURCE ]]; then
    [[ -f $SOURCE/setup.py ]] || die "--source $SOURCE: not a skinedge source tree (no setup.py)"
    SOURCE="$(cd "$SOURCE" && pwd)"
fi
if [[ -n $WHEELHOUSE ]]; then
    [[ -f $WHEELHOUSE/requirements.txt ]] || die "--wheelhouse $WHEELHOUSE: no requirements.txt (make one with: skinedge wheelhouse --out DIR)"
    WHEELHOUSE="$(cd "$WHEELHOUSE" && pwd)"
    PIP_WHEEL=("$WHEELHOUSE"/pip-*.whl)
    [[ -f ${PIP_WHEEL[0]} ]] || die "--wheelhouse $WHEELHOUSE: no pip wheel in it (make it again with skinedge wheelhouse)"
fi
if [[ -n $DEVICE ]]; then
    CONFIG="${SOURCE:-$REPO}/device_configs/$DEVICE.yaml"
    if [[ ! -f $CONFIG ]]; then
        known=("${SOURCE:-$REPO}"/device_configs/*.yaml)
        known=("${known[@]##*/}")
        die "--device $DEVICE: $CONFIG not found (available: ${known[*]%.yaml})"
    fi
fi
[[ -f $CONFIG ]] || die "--config $CONFIG: file not found"
if [[ -n $BUNDLE ]]; then
    [[ -f $BUNDLE/manifest.yaml ]] || die "--bundle $BUNDLE: not a skinedge bundle (no manifest.yaml)"
    BUNDLE="$(cd "$BUNDLE" && pwd)"
fi
CONFIG="$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")"
PINNED=()
for key in ${KEYS[@]+"${KEYS[@]}"}; do
    [[ -f $key ]] || die "--trusted-key $key: file not found"
    [[ $(stat -c %a "$key") =~ [2367]$ ]] && die "--trusted-key $key: writable by every user, so anyone could put their own key there (chmod o-w $key)"
    line="$(head -n 1 "$key")"
    [[ $line =~ ^ed25519:[A-Za-z0-9+/]{43}=$ ]] || die "--trusted-key $key: not a public key from skinedge keygen (expected one line ed25519:...)"
    PINNED+=("$line")
done
((${#PINNED[@]} && UNSIGNED)) && die "give --trusted-key or --allow-unsigned, not both"
# The config the board will run: the one kept in $ETC (an upgrade), else the one being installed.
EFFECTIVE=$CONFIG
if [[ -f $ETC/device.yaml ]] && ! cmp -s "$CONFIG" "$ETC/device.yaml" && ((!REPLACE_CONFIG)); then
    EFFECTIVE=$ETC/device.yaml
fi
if ((!${#PINNED[@]} && !UNSIGNED)) && ! grep -qE '^(trusted_keys:|allow_unsigned: *true)' "$EFFECTIVE"; then
    die "a clinic board runs signed bundles only: give --trusted-key KEY.pub (on the workstation: skinedge keygen --out clinic-key; skinedge sign BUNDLE --key clinic-key; copy clinic-key.pub here, never clinic-key), or --allow-unsigned to run unsigned bundles marked UNSIGNED MODEL"
fi
# --web ADDRESS[:PORT] (IPv6 in brackets: [fd00::20]:8443). The unit's firewall needs literal addresses.
WEB_ADDR="" WEB_PORT="" WEB_FAMILY=""
if [[ -n $WEB ]]; then
    if [[ $WEB =~ ^\[([0-9A-Fa-f:.]+)\](:([0-9]+))?$ ]]; then
        WEB_ADDR=${BASH_REMATCH[1]} WEB_PORT=${BASH_REMATCH[3]:-8080} WEB_FAMILY=AF_INET6
    elif [[ $WEB =~ ^([0-9]{1,3}(\.[0-9]{1,3}){3})(:([0-9]+))?$ ]]; then
        WEB_ADDR=${BASH_REMATCH[1]} WEB_PORT=${BASH_REMATCH[4]:-8080} WEB_FAMILY=AF_INET
    else
        die "--web $WEB: expected an IP address and optional port, e.g. 192.168.1.20, 192.168.1.20:8443 or [fd00::20]:8443"
    fi
    ((WEB_PORT >= 1 && WEB_PORT <= 65535)) || die "--web $WEB: port must be 1..65535"
    if ((${#WEB_ALLOW[@]} == 0)); then
        case $WEB_ADDR in
            127.*|::1) WEB_ALLOW=(localhost) ;;
            *:*) WEB_ALLOW=("$WEB_ADDR/64") ;;
            *) WEB_ALLOW=("${WEB_ADDR%.*}.0/24") ;;
        esac
    fi
elif ((WEB_TLS)) || ((${#WEB_ALLOW[@]})); then
    die "--web-tls and --web-allow need --web ADDRESS"
fi
board="${DEVICE:-$(basename "$CONFIG" .yaml)}"
if [[ -z $EXTRA ]]; then
    case $board in rpi*|raspberry*) EXTRA=pi ;; jetson*) EXTRA=jetson ;; *) EXTRA=edge ;; esac
fi
[[ $EXTRA =~ ^(pi|jetson|edge)$ ]] || die "--extra $EXTRA: expected pi, jetson or edge"
MEMORY_MAX=${MEMORY_MAX:-$(memory_max_for "$board")}
[[ $MEMORY_MAX =~ ^[1-9][0-9]*[KMG]$ ]] || die "--memory-max $MEMORY_MAX: expected a size such as 300M or 2G"
[[ -f $HERE/$SERVICE ]] || die "$HERE/$SERVICE not found (run this script from a skinedge checkout)"
if [[ -n $PACS ]]; then
    [[ $PACS =~ ^(https?|dicom):// ]] || die "--pacs $PACS: expected https://HOST/DICOMWEB-BASE or dicom://AE@HOST:PORT"
    [[ -z $PACS_CRED || -f $PACS_CRED ]] || die "--pacs-credentials $PACS_CRED: file not found"
    [[ -z $PACS_CA || -f $PACS_CA ]] || die "--pacs-ca $PACS_CA: file not found"
    grep -qE '^-----BEGIN CERTIFICATE-----' "${PACS_CA:-/dev/null}" || [[ -z $PACS_CA ]] ||
        die "--pacs-ca $PACS_CA: not a PEM certificate (-----BEGIN CERTIFICATE-----)"
elif [[ -n $PACS_CRED || -n $PACS_CA ]]; then
    die "--pacs-credentials and --pacs-ca go with --pacs URL"
fi
WANT="$EXTRA${PACS:+,dicom}"  # the extras this board installs
if [[ -n $WHEELHOUSE ]]; then
    # a wheelhouse pins one set of extras and one Python: check both before touching anything
    built_extra=$(sed -n 's/^skinedge\[\([a-z,]*\)\]==.*/\1/p' "$WHEELHOUSE/requirements.txt")
    built_python=$(sed -n 's/^# skinedge wheelhouse: .*; python \([0-9.]*\);.*/\1/p' "$WHEELHOUSE/requirements.txt")
    [[ $built_extra == "$WANT" ]] || die "--wheelhouse $WHEELHOUSE holds skinedge[${built_extra:-?}], this board needs [$WANT]: skinedge wheelhouse --extra $WANT --out DIR"
    have_python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
    [[ $built_python == "$have_python" ]] || die "--wheelhouse $WHEELHOUSE is for Python ${built_python:-?}, this board has $have_python: skinedge wheelhouse --python $have_python --out DIR"
fi
if ((DRY)); then
    echo "# dry run: nothing is changed; commands are printed as they would run"
elif ((EUID != 0)); then
    die "run as root (sudo), or use --dry-run"
fi
command -v python3 >/dev/null || die "python3 not found (apt install python3 python3-venv)"
command -v systemctl >/dev/null || die "systemctl not found: this installer needs systemd"
say "board $board, extra [$WANT], config $CONFIG, package from ${WHEELHOUSE:+wheelhouse }${WHEELHOUSE:-$SOURCE}, MemoryMax=$MEMORY_MAX"

# ---- 1. the service user: no login, no home, in the device groups ----
say "user $USER_NAME"
getent group "$USER_NAME" >/dev/null || run groupadd --system "$USER_NAME"
if getent passwd "$USER_NAME" >/dev/null; then
    echo "user $USER_NAME exists"
else
    run useradd --system --gid "$USER_NAME" --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin --comment "skinedge screening aid" "$USER_NAME"
fi
getent group video >/dev/null || die "group video does not exist; cameras and displays need it"
for group in video gpio render; do  # gpio: the button on Raspberry Pi OS; render: /dev/dri/renderD*
    if getent group "$group" >/dev/null; then run usermod -a -G "$group" "$USER_NAME"; fi
done

# ---- 2. directories ----
say "directories"
run install -d -m 0755 "$PREFIX" "$ETC"
run install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "$STATE"
run chmod 0700 "$STATE"  # an existing directory may be wider: captures are readable by the service only

# ---- 3. virtual environment and package ----
say "python environment $VENV"
venv_args=()
# picamera2/libcamera (Raspberry Pi OS) and TensorRT (JetPack) are apt packages, not wheels.
if [[ $EXTRA != edge ]]; then venv_args+=(--system-site-packages); fi
if [[ -n $WHEELHOUSE ]]; then
    # Offline: nothing but the wheelhouse. Its own pip goes into the venv (Debian's python3 without python3-venv
    # has no ensurepip), then every pinned wheel, hash-checked; pip never looks for an index.
    if [[ -x $VENV/bin/python ]]; then echo "$VENV exists"; else run python3 -m venv --without-pip "${venv_args[@]}" "$VENV"; fi
    run "$VENV/bin/python" "${PIP_WHEEL[0]}/pip" install --quiet --no-index --find-links "$WHEELHOUSE" --upgrade pip
    run "$VENV/bin/python" -m pip install --no-index --find-links "$WHEELHOUSE" --require-hashes -r "$WHEELHOUSE/requirements.txt"
else
    if [[ -x $VENV/bin/python ]]; then echo "$VENV exists"; else run python3 -m venv "${venv_args[@]}" "$VENV"; fi
    run "$VENV/bin/python" -m pip install --quiet --upgrade pip
    run "$VENV/bin/python" -m pip install --upgrade "$SOURCE[$WANT]"
fi

# ---- 4. device config ----
say "config $ETC/device.yaml"
if [[ -f $ETC/device.yaml ]] && ! cmp -s "$CONFIG" "$ETC/device.yaml" && ((!REPLACE_CONFIG)); then
    echo "keeping the existing $ETC/device.yaml (it differs from $CONFIG; --replace-config overwrites it)"
else
    run install -m 0644 "$CONFIG" "$ETC/device.yaml"
fi
if ((${#PINNED[@]})); then
    # The board refuses any bundle not signed by one of these keys, before opening a model file.
    if [[ -f $ETC/device.yaml ]] && grep -qE '^(trusted_keys|require_signature):' "$ETC/device.yaml"; then
        die "$ETC/device.yaml already sets trusted_keys/require_signature; edit it there (or --replace-config)"
    fi
    if ((DRY)); then
        echo "+ append to $ETC/device.yaml: require_signature: true, trusted_keys: ${PINNED[*]}"
    else
        { echo; echo "# pinned by install.sh: only bundles signed by these keys run"; echo "require_signature: true"
          echo "trusted_keys:"; printf -- '- %s\n' "${PINNED[@]}"; } >>"$ETC/device.yaml"
    fi
elif ((UNSIGNED)); then
    echo "WARNING: this board will run unsigned bundles; every screen and capture says UNSIGNED MODEL"
    if ! grep -qE '^allow_unsigned:' "$EFFECTIVE"; then
        if ((DRY)); then
            echo "+ append to $ETC/device.yaml: allow_unsigned: true"
        else
            { echo; echo "# written by install.sh --allow-unsigned: unsigned bundles run, marked UNSIGNED MODEL"
              echo "allow_unsigned: true"; } >>"$ETC/device.yaml"
        fi
    fi
fi
if [[ -n $WEB ]]; then
    # The page: listening on this address only; the unit's drop-in (step 5) opens exactly this port.
    say "page on $WEB_ADDR port $WEB_PORT"
    if [[ -f $ETC/device.yaml ]] && grep -qE '^web:' "$ETC/device.yaml"; then
        die "$ETC/device.yaml already has a web: section; edit it there (or --replace-config)"
    fi
    web_lines=("" "# the page, added by install.sh --web: only on this address" "web:" "  enabled: true"
               "  address: \"$WEB_ADDR\"" "  port: $WEB_PORT")
    if ((WEB_TLS)); then
        run install -d -m 0750 -g "$USER_NAME" "$ETC/web"
        run "$VENV/bin/skinedge" web-cert --address "$WEB_ADDR" --out "$ETC/web" --force
        run chgrp "$USER_NAME" "$ETC/web/key.pem"
        run chmod 0640 "$ETC/web/key.pem"
        web_lines+=("  tls_cert: $ETC/web/cert.pem" "  tls_key: $ETC/web/key.pem")
    fi
    if ((DRY)); then
        echo "+ append to $ETC/device.yaml:"; printf '    %s\n' "${web_lines[@]}"
    else
        printf '%s\n' "${web_lines[@]}" >>"$ETC/device.yaml"
    fi
fi
if [[ -n $PACS ]]; then
    # Forwarding (skinedge-forward.service): where to, with which credentials and CA; checked by check_config.
    if [[ -f $ETC/device.yaml ]] && grep -qE '^forward:' "$ETC/device.yaml"; then
        die "$ETC/device.yaml already has a forward: section; edit it there (or --replace-config)"
    fi
    if [[ -n $PACS_CRED ]]; then run install -m 0600 -o "$USER_NAME" -g "$USER_NAME" "$PACS_CRED" "$ETC/pacs.cred"; fi
    if [[ -n $PACS_CA ]]; then run install -m 0644 "$PACS_CA" "$ETC/pacs-ca.pem"; fi
    forward="forward:"$'\n'"  url: '$PACS'"
    if [[ -n $PACS_CRED ]]; then forward+=$'\n'"  credentials: $ETC/pacs.cred"; fi
    if [[ -n $PACS_CA ]]; then forward+=$'\n'"  ca_file: $ETC/pacs-ca.pem"; fi
    if ((DRY)); then
        echo "+ append to $ETC/device.yaml: ${forward//$'\n'/ }"
    else
        printf '\n# added by install.sh --pacs: store-and-forward to the hospital PACS (%s)\n%s\n' "$FORWARD" \
            "$forward" >>"$ETC/device.yaml"
    fi
fi
if [[ -n $BUNDLE ]]; then
    say "bundle $PREFIX/bundle"
    run rm -rf "$PREFIX/bundle.new"
    run cp -r "$BUNDLE" "$PREFIX/bundle.new"
    run chmod -R u=rwX,go=rX "$PREFIX/bundle.new"
    run rm -rf "$PREFIX/bundle.old"
    if [[ -e $PREFIX/bundle ]]; then run mv "$PREFIX/bundle" "$PREFIX/bundle.old"; fi
    run mv "$PREFIX/bundle.new" "$PREFIX/bundle"
    run rm -rf "$PREFIX/bundle.old"
fi
# Validate with the installed package: the config, where it points (the unit can only write below
# $STATE and cannot see /home), and the bundle's hashes and golden self-test on this board.
check_config() {
    "$VENV/bin/python" - "$ETC/device.yaml" "$STATE" "$USER_NAME" "$WEB_ADDR" "$WEB_PORT" <<'PY'
import subprocess
import sys
from pathlib import Path

from edge.config import ConfigError, load_config

path, state, user, web_addr, web_port = sys.argv[1:6]
try:
    cfg = load_config(path)
except ConfigError as e:
    sys.exit(f"install.sh: {e}")
# The unit opens the network only for --web's address and port: a config that serves the page elsewhere, or
# serves it without --web, would fail at start-up; say so now.
if cfg.web.enabled and (cfg.web.address, str(cfg.web.port)) != (web_addr, web_port):
    sys.exit(f"install.sh: {path}: web: enabled on {cfg.web.address} port {cfg.web.port}, but the unit is being "
             f"opened for {web_addr or 'nothing'}{' port ' + web_port if web_port else ''}: pass "
             f"--web {cfg.web.address}:{cfg.web.port} (or set web.enabled: false)")
if web_addr and not cfg.web.enabled:
    sys.exit(f"install.sh: {path}: --web given but web.enabled is false there")
if not (cfg.store.path + "/").startswith(state + "/"):
    sys.exit(f"install.sh: {path}: store.path: {cfg.store.path} is outside {state}, the only place the "
             f"service may write; use e.g. {state}/captures")
if not (cfg.state_dir + "/").startswith(state + "/"):
    sys.exit(f"install.sh: {path}: state_dir: {cfg.state_dir} is outside {state}, the only place the service may "
             f"write (it keeps the highest model versions accepted there); leave it unset or use {state}")
if not cfg.bundle:
    sys.exit(f"install.sh: {path}: bundle: not set; the service needs a model bundle")
if cfg.bundle.startswith(("/home/", "/root/")):
    sys.exit(f"install.sh: {path}: bundle: {cfg.bundle} is under /home or /root, which the service cannot "
             f"see (ProtectHome=yes); use --bundle to copy it to /opt/skinedge/bundle")
if not (Path(cfg.bundle) / "manifest.yaml").is_file():
    sys.exit(f"install.sh: {path}: bundle: {cfg.bundle} is not a bundle (no manifest.yaml); use --bundle DIR")
# As the service user, with the service's engine cache: proves that user can read the bundle and reach
# the backend's devices, and on a Jetson builds the TensorRT engine now rather than at first boot.
verify = ["skinedge", "verify", cfg.bundle, "--backend", cfg.backend, "--threads", str(cfg.threads), "--config", path]
cmd = ["runuser", "-u", user, "--", "env", f"SKINEDGE_ENGINE_CACHE={state}/engines",
       str(Path(sys.executable).parent / verify[0]), *verify[1:]]
if subprocess.run(cmd).returncode != 0:
    sys.exit(f"install.sh: bundle {cfg.bundle} failed `{' '.join(verify)}` on this board; not enabling")
print(f"config ok: bundle {cfg.bundle}, store {cfg.store.path}")
if cfg.forward.enabled:  # as the service user: the credentials file must be its own, 0600
    check = ("import sys\nfrom edge.config import load_config\nfrom edge.record.sender import connect\ntry:\n"
             "    connect(load_config(sys.argv[1]).forward).close()\nexcept (ValueError, ImportError) as e:\n"
             "    sys.exit(f'install.sh: forward: {e}')")
    cmd = ["runuser", "-u", user, "--", sys.executable, "-c", check, path]
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"install.sh: {path}: forward: the PACS settings above are refused; not enabling")
    print(f"forwarding ok: {cfg.forward.url} (credentials {cfg.forward.credentials or 'none'})")
# The board's device key signs every capture record (made once, never replaced; 0600, beside the store).
key = ["skinedge", "captures", "key", "--store", cfg.store.path]
cmd = ["runuser", "-u", user, "--", str(Path(sys.executable).parent / key[0]), *key[1:]]
if subprocess.run(cmd).returncode != 0:
    sys.exit(f"install.sh: `{' '.join(key)}` failed; the board cannot sign its captures; not enabling")
print("write this device key down (or keep the line above): `skinedge captures verify --zip FILE --key ...` checks "
      "this board's exports against it")
PY
}
if ((DRY)); then
    echo "+ check $ETC/device.yaml with $VENV/bin/python: config, store.path, bundle; skinedge verify as $USER_NAME"
    echo "+ device key: skinedge captures key --store <store.path> as $USER_NAME (made in $STATE if missing; prints its public key)"
else
    check_config
fi

# ---- 5. the unit ----
say "systemd unit"
run install -m 0644 "$HERE/$SERVICE" "$UNIT_DIR/$SERVICE"
if [[ $EXTRA == jetson ]]; then
    # Unverified on hardware. The GPU (TensorRT) uses /dev/nvhost-*, /dev/nvmap and /dev/nvgpu/*, whose
    # names differ across JetPack releases, so the device list is lifted rather than guessed; and
    # nvarguscamerasrc talks to nvargus-daemon through /tmp/argus_socket, hidden by PrivateTmp.
    write_file "$UNIT_DIR/$SERVICE.d/jetson.conf" 0644 <<'EOF'
# Written by skinedge's install.sh for Jetson boards.
[Service]
DeviceAllow=
DevicePolicy=auto
BindPaths=-/tmp/argus_socket
EOF
fi
if [[ -n $WEB ]]; then
    # The base unit has no AF_INET/AF_INET6 and IPAddressDeny=any. This opens one address family, binding to
    # the page's port only (SocketBindAllow), and traffic with the allowed clients only (IPAddressAllow).
    write_file "$UNIT_DIR/$SERVICE.d/web.conf" 0644 <<EOF
# Written by skinedge's install.sh --web: the page on $WEB_ADDR port $WEB_PORT, reachable from ${WEB_ALLOW[*]}.
[Service]
RestrictAddressFamilies=$WEB_FAMILY
SocketBindAllow=tcp:$WEB_PORT
SocketBindDeny=any
IPAddressAllow=${WEB_ALLOW[*]}
EOF
else
    run rm -f "$UNIT_DIR/$SERVICE.d/web.conf"  # the page is off: no network at all
fi
write_file "$UNIT_DIR/$SERVICE.d/memory.conf" 0644 <<EOF
# Written by skinedge's install.sh for board $board (see memory_max_for in install.sh for the sizes).
[Service]
MemoryMax=$MEMORY_MAX
EOF
if [[ -n $PACS ]]; then run install -m 0644 "$HERE/$FORWARD" "$UNIT_DIR/$FORWARD"; fi
run systemctl daemon-reload
run systemd-analyze verify "$UNIT_DIR/$SERVICE"
if [[ -n $PACS ]]; then run systemd-analyze verify "$UNIT_DIR/$FORWARD"; fi

# ---- 6. enable and start ----
say "enable"
run systemctl enable "$SERVICE"
if ((START)); then
    run systemctl restart "$SERVICE"  # restart: picks up an upgrade when the service was running
    echo "started; follow it with: journalctl -u $SERVICE -f   (status: systemctl status $SERVICE)"
else
    echo "enabled; it starts at the next boot (or: systemctl start $SERVICE)"
fi
if [[ -n $PACS ]]; then
    run systemctl enable "$FORWARD"
    if ((START)); then run systemctl restart "$FORWARD"; fi
    echo "forwarding to $PACS: journalctl -u $FORWARD -f; what waits: skinedge captures queue --config $ETC/device.yaml"
fi
