#!/usr/bin/env bash
# Sets up if needed, builds, runs every test, and ends with "N passed, M failed".
#
#   scripts/test.sh                 # everything: unit + integration, unit again under ASan+UBSan,
#                                   # and the node suites under ThreadSanitizer
#   scripts/test.sh --suite unit    # one meson suite only (extra args go to `meson test`)
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

werror=false
[ "${NERVE_WERROR:-0}" = 1 ] && werror=true
# The DPDK-free unit suites again under AddressSanitizer + UndefinedBehaviorSanitizer.
if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan --buildtype=debug -Dunit_only=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dwerror="$werror" >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C build-asan >/dev/null || { echo "asan build failed"; echo "0 passed, 1 failed"; exit 1; }

# The node suites (a datapath thread beside proxy and status readers) under ThreadSanitizer.
if [ ! -f build-tsan/build.ninja ]; then
  meson setup build-tsan --buildtype=debugoptimized -Db_sanitize=thread -Dwerror="$werror" >/dev/null \
    || { echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C build-tsan tests/test_node_ring_pair tests/test_node_lanes tests/test_node_stages tests/test_drivers >/dev/null \
  || { echo "tsan build failed"; echo "0 passed, 1 failed"; exit 1; }

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
meson test -C build --print-errorlogs --num-processes 2 "$@"
meson test -C build-asan --print-errorlogs --suite unit
TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp" \
  meson test -C build-tsan --no-rebuild --print-errorlogs --suite node

# Count results of both runs from meson's machine-readable logs.
/usr/bin/python3 - <<'PY'
import json, sys
passed = failed = 0
for d, label in (("build", ""), ("build-asan", " (asan+ubsan)"), ("build-tsan", " (tsan)")):
    try:
        lines = open(f"{d}/meson-logs/testlog.json").read().splitlines()
    except OSError:
        failed += 1
        print(f"missing test log in {d}")
        continue
    for line in lines:
        t = json.loads(line)
        ok = t["result"] in ("OK", "EXPECTEDFAIL")
        passed += ok
        failed += not ok
        if not ok:
            print(f"FAILED: {t['name']}{label}: {t['result']}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
