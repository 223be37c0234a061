#!/usr/bin/env bash
# Set up instruction counting on an emulated ARM root made by ../shared/tools/aarch64-python.sh setup:
#  - Debian 12's qemu-user (dynamically linked qemu-aarch64, built with TCG plugin support; it coexists
#    with qemu-user-static, which the root's own `run` uses);
#  - qemu-plugin.h of exactly the installed qemu version, taken from Debian's qemu source package
#    (fetched through apt from deb.debian.org into a scratch directory, never committed);
#  - count.c and profile.c built against it into $ARM_ROOT/opt/arm_cost/{count,profile}.so;
#  - fixed_clock.c cross-built for aarch64 (gcc-aarch64-linux-gnu) into $ARM_ROOT/opt/arm_cost/fixed_clock.so;
#  - qemu's own cache simulator (contrib/plugins/cache.c) as libcache.so, which cache_check.py holds profile.c to;
#  - llvm-19 (Debian bookworm's; llvm-mc and llvm-mca with --skip-unsupported-instructions) for predict.py.
# Needs root, apt and gcc. Usage: ARM_ROOT=/tmp/skinedge-aarch64 bash benchmarks/arm_cost/setup.sh
set -euo pipefail
R=${ARM_ROOT:?set ARM_ROOT to the emulated root}
HERE=$(cd "$(dirname "$0")" && pwd)
[ -x "$R/usr/bin/python3.11" ] || { echo "$R: no emulated Python; run aarch64-python.sh setup first" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
if ! command -v qemu-aarch64 >/dev/null || ! command -v gcc >/dev/null || [ ! -x /usr/lib/llvm-19/bin/llvm-mca ] ||
   ! pkg-config --exists glib-2.0 || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends qemu-user gcc libc6-dev llvm-19 libglib2.0-dev pkg-config \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi
version=$(dpkg-query -W -f='${source:Version}' qemu-user)
work=$(mktemp -d /tmp/arm-cost-src.XXXXXX)
trap 'rm -rf "$work"' EXIT
# A private apt state with the deb-src entries, so the machine's sources.list stays as it is.
mkdir -p "$work/lists/partial"
printf 'deb-src http://deb.debian.org/debian %s main\n' bookworm bookworm-updates > "$work/sources.list"
printf 'deb-src http://deb.debian.org/debian-security bookworm-security main\n' >> "$work/sources.list"
apt=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
apt-get "${apt[@]}" update -qq
(cd "$work" && apt-get "${apt[@]}" source --download-only -qq "qemu=$version" >/dev/null)
tar -xJf "$work"/qemu_*.orig.tar.xz -C "$work" --wildcards '*/include/qemu/qemu-plugin.h' '*/contrib/plugins/cache.c'
mkdir -p "$R/opt/arm_cost"
for plugin in count profile; do
  gcc -O2 -Wall -Wextra -Wno-unused-parameter -shared -fPIC -I"$(dirname "$(find "$work" -name qemu-plugin.h)")" \
    -o "$R/opt/arm_cost/$plugin.so" "$HERE/$plugin.c"
  echo "$plugin plugin for qemu $version built: $R/opt/arm_cost/$plugin.so"
done
gcc -O2 -shared -fPIC $(pkg-config --cflags glib-2.0) -I"$(dirname "$(find "$work" -name qemu-plugin.h)")" \
  -o "$R/opt/arm_cost/libcache.so" "$(find "$work" -path '*contrib/plugins/cache.c')" $(pkg-config --libs glib-2.0)
echo "qemu's cache plugin built: $R/opt/arm_cost/libcache.so"
aarch64-linux-gnu-gcc -O2 -Wall -Wextra -shared -fPIC -o "$R/opt/arm_cost/fixed_clock.so" "$HERE/fixed_clock.c"
echo "fixed clock for profiled guests built: $R/opt/arm_cost/fixed_clock.so"
