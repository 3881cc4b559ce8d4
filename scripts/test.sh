#!/usr/bin/env bash
# Sets up if needed, builds, runs every test, and ends with "N passed, M failed".
#
#   scripts/test.sh                 # everything: unit, node and integration suites; the unit
#                                   # suites again under ASan+UBSan; the node suites under
#                                   # ThreadSanitizer
#   scripts/test.sh --stress        # the node and integration suites with two CPU hogs beside
#                                   # them (a busy machine, as CI's may be)
#   scripts/test.sh --repeat N      # the node and integration suites N times (with --stress too)
#   scripts/test.sh --suite unit    # one meson suite only (other arguments go to `meson test`)
set -uo pipefail
cd "$(dirname "$0")/.."

stress=0
repeat=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stress) stress=1 ;;
    --repeat) repeat="${2:?--repeat needs a count}"; shift ;;
    --repeat=*) repeat="${1#--repeat=}" ;;
    *) args+=("$1") ;;
  esac
  shift
done
if ! [[ "$repeat" =~ ^[1-9][0-9]*$ ]]; then
  echo "test.sh: --repeat takes a positive count, got '$repeat'" >&2
  echo "0 passed, 1 failed"
  exit 2
fi

scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

# Counts results from meson's machine-readable logs of the given build directories. Each run
# starts by removing them (fresh_logs), so a meson that stops before running anything (a test
# program missing) leaves no log to count but a failure, never the last run's results.
fresh_logs() { rm -f build/meson-logs/testlog.json build-asan/meson-logs/testlog.json build-tsan/meson-logs/testlog.json; }
count() {
  /usr/bin/python3 - "$@" <<'PY'
import json, re, sys
passed = failed = 0
failures = []
for spec in sys.argv[1:]:
    d, label = spec.split(":", 1)
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
            failures.append((f"{t['name']}{label}: {t['result']}", t.get("stdout") or ""))
# What failed, and where: the first failure's lines of each failed test, after meson's own report
# (a log's tail is often all a CI page keeps).
mark = re.compile(r"FAILED:|REQUIRE|CHECK|with expansion|runtime error|Sanitizer|Assertion|"
                  r"Traceback|Error|error:|timed out|not up within")
for name, out in failures:
    lines = out.splitlines()
    first = next((i for i, l in enumerate(lines) if mark.search(l)), max(0, len(lines) - 12))
    print(f"FAILED: {name}")
    for l in lines[max(0, first - 4):first + 12]:
        print(f"    {l[:200]}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
}

if [ "$stress" = 1 ] || [ "$repeat" != 1 ]; then
  hogs=()
  if [ "$stress" = 1 ]; then
    for _ in 1 2; do
      sh -c 'while :; do :; done' &
      hogs+=($!)
    done
    echo "test.sh: two CPU hogs running (pids ${hogs[*]})"
  fi
  trap '[ ${#hogs[@]} -gt 0 ] && kill "${hogs[@]}" 2>/dev/null' EXIT
  fresh_logs
  meson test -C build --print-errorlogs --num-processes 2 --repeat "$repeat" \
    --suite node --suite node_alloc --suite integration "${args[@]}"
  count "build:"
  exit $?
fi

werror=false
[ "${NERVE_WERROR:-0}" = 1 ] && werror=true
# The DPDK-free unit suites again under AddressSanitizer + UndefinedBehaviorSanitizer.
if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan --buildtype=debug -Dunit_only=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dwerror="$werror" >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C build-asan >build-asan/ninja.log 2>&1 \
  || { tail -40 build-asan/ninja.log; echo "asan build failed"; echo "0 passed, 1 failed"; exit 1; }

# The node suites (a datapath thread beside proxy and status readers) under ThreadSanitizer.
if [ ! -f build-tsan/build.ninja ]; then
  meson setup build-tsan --buildtype=debugoptimized -Db_sanitize=thread -Dwerror="$werror" >/dev/null \
    || { echo "0 passed, 1 failed"; exit 1; }
fi
ninja -C build-tsan tests/test_node_ring_pair tests/test_node_lanes tests/test_node_stages tests/test_node_routing \
  tests/test_node_reliable \
  tests/test_drivers >build-tsan/ninja.log 2>&1 \
  || { tail -40 build-tsan/ninja.log; echo "tsan build failed"; echo "0 passed, 1 failed"; exit 1; }

fresh_logs
meson test -C build --print-errorlogs --num-processes 2 "${args[@]}"
meson test -C build-asan --print-errorlogs --suite unit
TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp" \
  meson test -C build-tsan --no-rebuild --print-errorlogs --suite node

count "build:" "build-asan: (asan+ubsan)" "build-tsan: (tsan)"
