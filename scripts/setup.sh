#!/usr/bin/env bash
# Installs every Debian package nerve needs, then configures and builds it.
# Idempotent: safe to rerun. Needs root for the package step (skipped when all are present).
#
#   scripts/setup.sh            # packages + release build in build/
#   NERVE_WERROR=1 scripts/setup.sh   # same, warnings are errors (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  meson ninja-build pkg-config g++
  libdpdk-dev dpdk-dev            # EAL, ethdev, mempool, ring, memif/af_packet/af_xdp/tap/null PMDs
  dpdk                            # dpdk-testpmd: the forwarding reference of nerve-perf forward
  libfmt-dev libnuma-dev catch2 libtomlplusplus-dev libcli11-dev
  nlohmann-json3-dev              # control socket and --json output
  libcpp-httplib-dev              # nerve-telemetry's /metrics endpoint, nerve-ctl watch and top
  libncurses-dev                  # nerve-ctl top
  prometheus                      # the real server the telemetry test lets scrape a node
  iproute2 procps                 # namespaces and veth pairs for the af_packet/af_xdp tests
  python3-pytest python3-scapy gdb  # integration tests: pytest, injected frames, stacks of a hung daemon
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages (${missing[*]}); run as root to install them" >&2
    exit 2
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

werror=false
[ "${NERVE_WERROR:-0}" = 1 ] && werror=true
if [ ! -f build/build.ninja ]; then
  meson setup build --buildtype=release -Dwerror="$werror" -Dmarch=portable
else
  meson configure build -Dwerror="$werror" >/dev/null
fi
ninja -C build
