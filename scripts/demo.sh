#!/usr/bin/env bash
# Sets up if needed, then runs a 3-node demo cluster on virtual devices (memif, no NIC, no
# hugepages): every message type at every priority between every pair of nodes, a report of
# what was delivered and the per-priority latency, and a clean stop.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
exec /usr/bin/python3 scripts/demo.py "$@"
