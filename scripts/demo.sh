#!/usr/bin/env bash
# Sets up if needed, then runs the leaf-spine of docs/examples/topologies/leaf-spine.toml on virtual
# devices (11 nodes in network namespaces, memif links; no NIC, no hugepages; as root): a
# message across three forwarding nodes, a broadcast, a multicast group, services, a spine
# killed under traffic, latency per lane; then removes everything it made.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
exec /usr/bin/python3 scripts/demo.py "$@"
