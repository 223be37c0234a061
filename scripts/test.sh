#!/usr/bin/env bash
# The README's test command: sets up everything the tests need on a fresh machine, then runs them.
#   bash scripts/test.sh [PYTEST_ARGS...]
# 1. .venv (created, or reused when present) with torch 2.14.1 / torchvision 0.29.1 and skinedge's convert + dev
#    extras, installed editable; Debian's chromium + chromium-driver (apt) for the page's browser tests.
#    2. Where ../shared/tools/aarch64-python.sh exists (this project's CI machines):
#    an emulated aarch64 Python with skinedge's edge extra installed from the built wheel, as a Pi user would
#    install it, for tests/test_arm.py; elsewhere those tests are skipped, and this says so. 3. Debian's Orthanc PACS
#    (+ its DICOMweb plugin) and dicom3tools (dciodvfy) for tests/test_forward.py, with apt-get when missing (root
#    only; elsewhere those tests skip with one line). 4. pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

[ -x .venv/bin/python ] || { echo "creating .venv"; python3 -m venv .venv; }
. .venv/bin/activate
echo "installing torch 2.14.1, torchvision 0.29.1 and skinedge[convert,dev] into .venv (minutes on a fresh machine)"
pip install -q --upgrade pip
pip install -q torch==2.14.1 torchvision==0.29.1
pip install -q -e ".[convert,dev]"

# Debian's Chromium and chromedriver for the page's browser tests (tests/test_browser.py, tests/test_visit_flow.py);
# quick when present. Where they cannot be installed those tests are skipped with one line saying why.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing chromium and chromium-driver (apt) for the page's browser tests"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null; } || echo "chromium: apt-get failed: the browser tests will be skipped"
  else
    echo "chromium/chromedriver missing and apt-get unavailable (or not root): the browser tests will be skipped"
  fi
fi

ARM_TOOL=../shared/tools/aarch64-python.sh
if [ -f "$ARM_TOOL" ]; then
  # Reused when already set up (the root holds only the runtime's third-party wheels); skinedge itself is
  # reinstalled from this checkout's wheel on every run.
  export SKINEDGE_ARM_ROOT=${SKINEDGE_ARM_ROOT:-/tmp/skinedge-aarch64}
  if [ -x "$SKINEDGE_ARM_ROOT/usr/bin/python3.11" ]; then
    echo "aarch64: reusing the emulated Python in $SKINEDGE_ARM_ROOT"
  else
    echo "aarch64: setting up an emulated Python in $SKINEDGE_ARM_ROOT (about a minute)"
    ARM_ROOT=$SKINEDGE_ARM_ROOT bash "$ARM_TOOL" setup
  fi
  wheels=$(mktemp -d)
  pip wheel -q --no-deps -w "$wheels" .
  python -m pip install -q --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_34_aarch64 --target "$SKINEDGE_ARM_ROOT/opt/site" --upgrade \
    "$(ls "$wheels"/skinedge-*.whl)[edge]"
  rm -rf "$wheels" build
  # qemu-user (TCG plugins), the counting and profiling plugins and llvm-19 for tests/test_arm_cost.py and
  # tests/test_predict.py; rebuilt when a plugin's source changes
  [ "$SKINEDGE_ARM_ROOT/opt/arm_cost/count.so" -nt benchmarks/arm_cost/count.c ] &&
    [ "$SKINEDGE_ARM_ROOT/opt/arm_cost/profile.so" -nt benchmarks/arm_cost/profile.c ] &&
    [ "$SKINEDGE_ARM_ROOT/opt/arm_cost/fixed_clock.so" -nt benchmarks/arm_cost/fixed_clock.c ] &&
    [ -x /usr/lib/llvm-19/bin/llvm-mca ] ||
    ARM_ROOT=$SKINEDGE_ARM_ROOT bash benchmarks/arm_cost/setup.sh
else
  echo "aarch64: $ARM_TOOL not found: tests/test_arm.py will be skipped (the x86 tests run in full)"
fi

# A real PACS for the forwarding tests, which start their own Orthanc on loopback ports (never Debian's service,
# which the package would start on 8042: stopped and disabled again when this script installed it).
APT_PKGS="orthanc orthanc-dicomweb dicom3tools"
missing=$(for p in $APT_PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $(echo $missing) (apt-get) for tests/test_forward.py"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # one word per package
    { apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; } ||
      echo "could not install $(echo $missing): tests/test_forward.py skips what needs them"
    if command -v systemctl >/dev/null && systemctl is-enabled orthanc >/dev/null 2>&1; then
      systemctl disable --now orthanc >/dev/null 2>&1 || true
    fi
  else
    echo "$(echo $missing) not installed and apt-get not usable here: tests/test_forward.py skips what needs them"
  fi
fi

exec python -m pytest -q "$@"
