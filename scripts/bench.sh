#!/usr/bin/env bash
# The standard nerve-perf suite: pingpong (64 B and 1 KiB), throughput sweep (64 B .. 8 KiB) and
# isolation (P0 under P4 and under P1 floods), each over memif, over af_packet between network
# namespaces, and over kernel UDP (the peer baseline), side by side in one session. Every memif
# and af_packet row is repeated on the same kind of port driven by a bare DPDK loop (--floor:
# rows with "stack": "raw"), interleaved, so nerve's cost reads as a ratio.
#
# Writes perf/results/<date>-<host>.json (every row), perf/results/<date>-<host>-<scenario>.svg
# and perf/results/<date>-<host>.md (the tables docs/benchmarks.md quotes). Needs root (namespaces).
#   scripts/bench.sh            # full suite (a few minutes)
#   BENCH_QUICK=1 scripts/bench.sh   # a short run of the same suite (not for the record)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
perf=build/perf/nerve-perf
stamp="$(date -u +%Y-%m-%d)-$(hostname -s)"
out=perf/results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

count=100000; secs=0.5; iso=50000
if [ "${BENCH_QUICK:-0}" = 1 ]; then count=5000; secs=0.05; iso=2000; fi

run() {  # name, then nerve-perf arguments
  local name=$1; shift
  echo "== nerve-perf $*" >&2
  "$perf" "$@" --json "$tmp/$name.json" | tee "$tmp/$name.txt"
}

for t in memif af_packet; do
  run "pingpong-$t" pingpong --transport "$t" --size 64,1024 --count "$count" --plot "$tmp/pingpong-$t.svg" \
      --floor --compare kernel-udp
done
for t in memif af_packet kernel-udp; do
  floor=()
  [ "$t" != kernel-udp ] && floor=(--floor)
  run "throughput-$t" throughput --transport "$t" --size 64,1024,8192 --seconds "$secs" "${floor[@]}"
  run "isolation-$t" isolation --transport "$t" --count "$iso" --background 4 --background 1
done
# Wake-up cost: P0 round trips 1 ms apart, the far end busy-polling, backing off, or backing
# off but kept busy by recent P0 traffic (busy_lanes = [0]); kernel UDP blocking in poll(2).
for idle in busy backoff backoff-p0-busy; do
  run "wakeup-$idle" pingpong --transport memif --count "$((count / 50))" --warmup 100 --gap-us 1000 \
      --peer-idle "$idle" --compare kernel-udp
done
# One plot of the pingpong rows of every transport.
"$perf" pingpong --transport memif --size 64 --count "$count" --compare af_packet,kernel-udp --plot "$out/$stamp-pingpong.svg" \
  --json "$tmp/plot.json" >/dev/null

/usr/bin/python3 - "$tmp" "$out/$stamp" <<'PY'
import glob, json, sys
tmp, base = sys.argv[1], sys.argv[2]
docs = [json.load(open(f)) for f in sorted(glob.glob(f"{tmp}/*.json")) if not f.endswith("plot.json")]
merged = dict(docs[0]); merged["results"] = [r for d in docs for r in d["results"]]
merged["setup"]["scenario"] = "suite"
json.dump(merged, open(base + ".json", "w"), indent=2)
us = lambda ns: f"{ns / 1000:.2f}"
lines = [f"Commit {merged['commit']}, {merged['setup']['date']}, {merged['setup']['cpu']}, "
         f"cores {merged['setup']['cores']}, DPDK {merged['setup']['dpdk']}.", ""]
def table(title, rows, extra):
    lines.extend([f"### {title}", "",
                  "| transport | stack | lane | payload | frame | count | lost | " + " | ".join(h for h, _ in extra) +
                  " | p50 µs | p99 µs | p99.9 µs | max µs |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(extra) + "---|---|---|---|"])
    for r in rows:
        l = r["latency_ns"]
        lines.append(f"| {r['transport']} | {r.get('stack', 'nerve')} | P{r['priority']} | {r['size']} B | {r['frame_bytes']} B | {r['count']} | "
                     f"{r['lost']} | " + " | ".join(f(r) for _, f in extra) +
                     f" | {us(l['p50'])} | {us(l['p99'])} | {us(l['p999'])} | {us(l['max'])} |")
    lines.append("")
rs = merged["results"]
table("pingpong (round trip)", [r for r in rs if r["scenario"] == "pingpong" and not r.get("gap_us")],
      [("round trips/s", lambda r: f"{r['rate_mps']:.0f}")])
table("wake-up (P0 round trips 1 ms apart; far end's idle policy)",
      [r for r in rs if r["scenario"] == "pingpong" and r.get("gap_us")], [("far end", lambda r: r["peer_idle"])])
table("throughput (one way; max = unpaced, then offered loads; * = knee)",
      [r for r in rs if r["scenario"] == "throughput"],
      [("offered/s", lambda r: "max" if r.get("max") else f"{r['offered_mps']:.0f}"),
       ("delivered/s", lambda r: f"{r['rate_mps']:.0f}"), ("Gbit/s", lambda r: f"{r['gbps']:.2f}"),
       ("knee", lambda r: "*" if r.get("knee") else "")])
table("isolation (P0 round trip; background delivered rate)", [r for r in rs if r["scenario"] == "isolation"],
      [("background", lambda r: ("P" + ",P".join(map(str, r["background"]["priorities"])) + f" {r['background']['rate_mps']:.0f}/s")
        if r["background"]["priorities"] else "idle")])
open(base + ".md", "w").write("\n".join(lines) + "\n")
print(f"wrote {base}.json, {base}.md, {base}-pingpong.svg")
PY
