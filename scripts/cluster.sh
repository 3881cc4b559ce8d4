#!/usr/bin/env bash
# A cluster from a topology file on this host: namespaces, links, a nerved per node.
#   scripts/cluster.sh up|status|down FILE      scripts/cluster.sh kill|start FILE NODE
# See scripts/cluster.py for the file's format; examples in docs/examples.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = up ] || [ "${1:-}" = start ]; then scripts/setup.sh >/dev/null; fi
exec /usr/bin/python3 scripts/cluster.py "$@"
