#!/usr/bin/env bash
# The standard nerve-perf suite: pingpong (64 B and 1 KiB), throughput sweep (64 B .. 8 KiB) and
# isolation (P0 under P4 and under P1 floods), each over memif, over af_packet between network
# namespaces, and over kernel UDP (the peer baseline), side by side in one session. Every memif
# and af_packet row is repeated on the same kind of port driven by a bare DPDK loop (--floor:
# rows with "stack": "raw"), interleaved, so nerve's cost reads as a ratio.
#
# Writes perf/results/<date>-<host>.json (every row), perf/results/<date>-<host>-<scenario>.svg
# and perf/results/<date>-<host>.md (the tables docs/benchmarks.md quotes). Needs root (namespaces).
#   scripts/bench.sh            # full suite (a few minutes), then the fabric's
#   scripts/bench.sh fabric     # the fabric's only: forwarding beside dpdk-testpmd, added latency
#                               # per hop, failover (5 runs), multicast fan-out, services, route
#                               # computation; writes perf/results/<date>-<host>-fabric.{json,md}
#   scripts/bench.sh reliability   # reliable delivery: 10 M messages through a faulty memif link,
#                               # every lane, P0 paced with 1 % loss (recovery time), the P0 round
#                               # trip with and without, an unpaced 1 M burst over af_packet with
#                               # and without, large messages (1 MiB, 64 KiB, 4 KiB) in fragments;
#                               # P0 over one link and over two at once through 1 % loss each;
#                               # writes perf/results/<date>-<host>-reliability.{json,md}
#   scripts/bench.sh paths      # that last run alone (one and two paths, twice each, interleaved);
#                               # writes perf/results/<date>-<host>-paths.{json,md}
#   scripts/bench.sh telemetry  # the telemetry sidecar's cost to the datapath (msgs/s, P0 round
#                               # trips, without and with it, interleaved) and its tiers' timing
#                               # beside a busy-polling node; writes perf/results/<date>-<host>-telemetry.{json,md}
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

run_in() {  # directory, name, then nerve-perf arguments
  local dir=$1 name=$2; shift 2
  echo "== nerve-perf $*" >&2
  "$perf" "$@" --json "$dir/$name.json" | tee "$dir/$name.txt"
}
run() { run_in "$tmp" "$@"; }

fabric() {
  local ftmp="$tmp/fabric"
  mkdir -p "$ftmp"
  frun() { run_in "$ftmp" "$@"; }
  local rounds=5 fsecs=2 hops=200000 fo=5
  if [ "${BENCH_QUICK:-0}" = 1 ]; then rounds=1; fsecs=0.2; hops=5000; fo=1; fi
  frun forward forward --rounds "$rounds" --seconds "$fsecs"
  frun hops pingpong --transport memif --hops 1,2,3 --count "$hops"
  for i in $(seq 1 "$fo"); do frun "failover-$i" failover; done
  frun multicast multicast --members 8
  frun service service
  frun route route
  /usr/bin/python3 - "$ftmp" "$out/$stamp-fabric" <<'PY'
import glob, json, statistics, sys
tmp, base = sys.argv[1], sys.argv[2]
docs = {f.split("/")[-1][:-5]: json.load(open(f)) for f in sorted(glob.glob(f"{tmp}/*.json"))}
first = next(iter(docs.values()))
merged = dict(first); merged["setup"] = dict(first["setup"], scenario="fabric")
merged["results"] = [r for d in docs.values() for r in d["results"]]
json.dump(merged, open(base + ".json", "w"), indent=2)
rs = merged["results"]
us = lambda ns: f"{ns / 1000:.2f}"
L = [f"Commit {merged['commit']}, {merged['setup']['date']}, {merged['setup']['cpu']}, DPDK {merged['setup']['dpdk']}.", ""]
fw = [r for r in rs if r["scenario"] == "forward"]
med = {s: statistics.median([r["rate_mps"] for r in fw if r["stack"] == s]) for s in ("nerve", "testpmd-io", "testpmd-macswap")}
L += ["### forward (64 B, one core, memif in and out; median of the rounds)", "",
      "| forwarder | rounds (Mmsg/s) | median Mmsg/s | nerve / this |", "|---|---|---|---|"]
for s, m in med.items():
    per = ", ".join(f"{r['rate_mps'] / 1e6:.2f}" for r in fw if r["stack"] == s)
    L.append(f"| {s} | {per} | {m / 1e6:.2f} | {100 * med['nerve'] / m:.0f} % |")
hp = [r for r in rs if r["scenario"] == "pingpong"]
L += ["", "### added latency per hop (memif round trip, P0, 64 B)", "",
      "| hops | count | p50 µs | p99 µs | p99.9 µs | added p50 per hop µs |", "|---|---|---|---|---|---|"]
base1 = next(r for r in hp if r["hops"] == 1)["latency_ns"]["p50"]
for r in hp:
    l = r["latency_ns"]
    add = "" if r["hops"] == 1 else f"{(l['p50'] - base1) / (r['hops'] - 1) / 1000:.2f}"
    L.append(f"| {r['hops']} | {r['count']} | {us(l['p50'])} | {us(l['p99'])} | {us(l['p999'])} | {add} |")
fo = [r for r in rs if r["scenario"] == "failover"]
L += ["", "### failover (P0 10,000/s across the af_packet diamond, forwarder killed; default heartbeats)", "",
      "| run | killed | sent | lost | lost as ms of stream | max gap ms | p99.99 gap ms |", "|---|---|---|---|---|---|---|"]
for i, r in enumerate(fo, 1):
    L.append(f"| {i} | node {r['failover']['killed']} | {r['sent']} | {r['lost']} | {r['lost'] / r['offered_mps'] * 1000:.1f} | "
             f"{r['latency_ns']['max'] / 1e6:.2f} | {r['latency_ns']['p9999'] / 1e6:.2f} |")
if fo:
    L.append(f"| median | | | {statistics.median(r['lost'] for r in fo)} | "
             f"{statistics.median(r['lost'] / r['offered_mps'] * 1000 for r in fo):.1f} | "
             f"{statistics.median(r['latency_ns']['max'] for r in fo) / 1e6:.2f} | |")
mc = [r for r in rs if r["scenario"] == "multicast"]
L += ["", "### multicast fan-out (8 members, in-process ring links)", ""]
for r in mc:
    L.append(f"{r['sent']} messages at {r['rate_mps']:.0f}/s from the sender ({r['rate_mps'] * 8:.0f} deliveries/s); "
             f"members got {r['multicast']['members']}; missing {r['lost']}, twice {r['multicast']['duplicates']}.")
sv = [r for r in rs if r["scenario"] == "service"]
L += ["", "### services (4 instances, in-process ring links)", "",
      "| policy | test | per instance | chi-square (3 dof) | p | p50 µs | p99 µs | p99.9 µs | unanswered |",
      "|---|---|---|---|---|---|---|---|---|"]
for r in sv:
    s = r["service"]; l = r["latency_ns"]; spread = s["test"] == "spread"
    L.append(f"| {s['policy']} | {'spread' if spread else 'slow instance, ' + str(int(r['offered_mps'])) + '/s'} | "
             f"{s['per_instance']} | {s.get('chi2', 0):.2f} | {s.get('chi2_p', 0):.3f} | "
             + (" | | " if spread else f"{us(l['p50'])} | {us(l['p99'])} | {us(l['p999'])} | ") + f"{r['lost']} |")
rt = [r for r in rs if r["scenario"] == "route"]
L += ["", "### route computation (one node's table, fib = shortest paths both metrics + alternates; trees = broadcast "
      "trees of every source) and advertisement traffic", "",
      "| topology | nodes | links | build | p50 ms | LSA frames per full refresh | LSA kB/s per link (5 s refresh) | "
      "heartbeat kB/s per link (1 kHz) |", "|---|---|---|---|---|---|---|---|"]
for r in rt:
    x = r["route"]
    L.append(f"| {r['transport']} | {x['nodes']} | {x['links']} | {r['stack']} | {r['latency_ns']['p50'] / 1e6:.2f} | "
             f"{x['lsa_frames_per_refresh']} | {x['lsa_bytes_per_refresh'] / x['links'] / 5 / 1000:.1f} | "
             f"{x['heartbeat_bytes_per_s'] / x['links'] / 1000:.1f} |")
open(base + ".md", "w").write("\n".join(L) + "\n")
print(f"wrote {base}.json, {base}.md")
PY
}
telemetry() {
  local ttmp="$tmp/telemetry"
  mkdir -p "$ttmp"
  trun() { run_in "$ttmp" "$@"; }
  local secs=2 rtts=200000 tier_s=30
  if [ "${BENCH_QUICK:-0}" = 1 ]; then secs=0.2; rtts=5000; tier_s=3; fi
  trun 1-throughput throughput --transport memif --sweep 1 --seconds "$secs" --sidecar-hz 0,100,0,100,0,100,0,100,0,100
  trun 2-pingpong pingpong --transport memif --count "$rtts" --sidecar-hz 0,100,0,100,0,100,0,100,0,100
  # Tier timing: a busy-polling node on CPU 0, its peer backing off on CPU 1, the sidecar on
  # CPU 1, sleeping to each tick, then spinning the last 200 us.
  /usr/bin/python3 - "$ttmp" "$tier_s" <<'PY'
import json, subprocess, sys
sys.path.insert(0, "scripts")
import nervecluster as nc
tmp, secs = sys.argv[1], sys.argv[2]
cl = nc.Cluster("benchtier")
memif = f"{cl.dir}/link.memif"
cl.write(nc.node_toml(1, "alpha", "198.18.79.1", cl.sock(1), [{"kind": "memif", "socket": memif, "role": "server",
                                                                "peers": [2]}], 'idle = "busy"\ncores = [0]') +
         nc.node_toml(2, "beta", "198.18.79.2", cl.sock(2), [{"kind": "memif", "socket": memif, "role": "client",
                                                               "peers": [1]}], "cores = [1]"))
out = {}
try:
    cl.up()
    for name, args in (("sleep", ["--spin-us", "0", "--cpu", "1"]), ("spin200", ["--spin-us", "200", "--cpu", "1"])):
        cmd = [nc.TELEMETRY, "--config", cl.path, "--node", "1", "--duration", secs, "--report", f"{tmp}/tiers.json",
               "--log-level", "warn", *args]
        print("== " + " ".join(cmd[1:]), file=sys.stderr)
        subprocess.run(cmd, check=True)
        out[name] = dict(json.load(open(f"{tmp}/tiers.json")), args=" ".join(args))
finally:
    cl.kill_all()
    cl.remove()
# From a datapath event to its sample leaving the node: P2's budget at 1 us makes every P2
# delivery a deadline miss; beta sends 17 a second (a rate that does not lock to the sidecar's
# 10 ms ticks: 20/s did, and every event landed just before a tick); alpha's sidecar pushes its
# critical tier (lanes) to beta.
cl = nc.Cluster("benchevent")
memif = f"{cl.dir}/link.memif"
budget = "lane_budget_us = [100, 500, 1, 2000, 5000]"
cl.write(nc.node_toml(1, "alpha", "198.18.79.1", cl.sock(1), [{"kind": "memif", "socket": memif, "role": "server",
                                                                "peers": [2]}], f'cores = [0]\n{budget}') +
         nc.node_toml(2, "beta", "198.18.79.2", cl.sock(2), [{"kind": "memif", "socket": memif, "role": "client",
                                                               "peers": [1]}], "cores = [1]"))
with open(cl.path, "a") as f:
    f.write('\n[telemetry]\npush_to = [2]\npush_tiers = ["critical"]\n')
try:
    cl.up()
    events = max(17, int(float(secs) * 17) - 17)
    cmd = [nc.TELEMETRY, "--config", cl.path, "--node", "1", "--duration", str(events / 17 + 2), "--report",
           f"{tmp}/event.json", "--log-level", "warn", "--cpu", "1"]
    print("== " + " ".join(cmd[1:]) + f"  (beta sends {events} P2 messages at 17/s)", file=sys.stderr)
    sc = subprocess.Popen(cmd)
    cl.send(2, 1, "metric", 2, "late", count=events, rate=17)
    sc.wait()
    out["event"] = dict(json.load(open(f"{tmp}/event.json")), args="--cpu 1, push_to beta", events=events)
finally:
    cl.kill_all()
    cl.remove()
json.dump(out, open(f"{tmp}/tiers.out", "w"), indent=2)
PY
  /usr/bin/python3 - "$ttmp" "$out/$stamp-telemetry" <<'PY'
import glob, json, statistics, sys
tmp, base = sys.argv[1], sys.argv[2]
docs = {f.split("/")[-1][:-5]: json.load(open(f)) for f in sorted(glob.glob(f"{tmp}/*-*.json"))}
first = next(iter(docs.values()))
merged = dict(first); merged["setup"] = dict(first["setup"], scenario="telemetry")
merged["results"] = [dict(r, run=k) for k, d in docs.items() for r in d["results"]]
merged["tiers"] = json.load(open(f"{tmp}/tiers.out"))
json.dump(merged, open(base + ".json", "w"), indent=2)
us = lambda ns: f"{ns / 1000:.2f}"
med = statistics.median
L = [f"Commit {merged['commit']}, {merged['setup']['date']}, {merged['setup']['cpu']}, DPDK {merged['setup']['dpdk']}.", ""]
tp = {hz: [r for r in merged["results"] if r["scenario"] == "throughput" and r.get("max") and r["sidecar_hz"] == hz]
      for hz in (0, 100)}
L += ["| one way, memif, P0 64 B, unpaced | runs | msgs/s, each run | median msgs/s |", "|---|---|---|---|"]
for hz, rs in tp.items():
    each = ", ".join("%.0f" % r["rate_mps"] for r in rs)
    L.append(f"| sidecar {hz} Hz | {len(rs)} | {each} | {med(r['rate_mps'] for r in rs):.0f} |")
L.append(f"| with / without | | | **{med(r['rate_mps'] for r in tp[100]) / med(r['rate_mps'] for r in tp[0]):.3f}** |")
pp = {hz: [r for r in merged["results"] if r["scenario"] == "pingpong" and r["sidecar_hz"] == hz] for hz in (0, 100)}
L += ["", "| P0 round trip, memif, 64 B | runs | round trips/s (median) | p50 µs | p99 µs | p99.9 µs | p99.99 µs (medians of the runs) |",
      "|---|---|---|---|---|---|---|"]
for hz, rs in pp.items():
    m = lambda k: med(r["latency_ns"][k] for r in rs)
    L.append(f"| sidecar {hz} Hz | {len(rs)} | {med(r['rate_mps'] for r in rs):.0f} | {us(m('p50'))} | {us(m('p99'))} | "
             f"{us(m('p999'))} | {us(m('p9999'))} |")
r0 = lambda k: med(r["latency_ns"][k] for r in pp[100]) / med(r["latency_ns"][k] for r in pp[0])
L.append(f"| with / without | | {med(r['rate_mps'] for r in pp[100]) / med(r['rate_mps'] for r in pp[0]):.3f} | "
         f"**{r0('p50'):.3f}** | **{r0('p99'):.3f}** | {r0('p999'):.3f} | {r0('p9999'):.3f} |")
L += ["", "| tier timing, deadline to sample | sidecar | ticks | skipped | late p50 µs | p99 µs | p99.9 µs | max µs |",
      "|---|---|---|---|---|---|---|---|"]
for name, rep in merged["tiers"].items():
    if name == "event":
        continue
    for tier, t in rep["tiers"].items():
        if t["ticks"]:
            L.append(f"| {tier} ({t['hz']:g} Hz) | {rep['args']} | {t['ticks']} | {t['skipped']} | {t['late_p50_us']:.1f} | "
                     f"{t['late_p99_us']:.1f} | {t['late_p999_us']:.1f} | {t['late_max_us']:.1f} |")
L += ["", "| the sidecar's own cost (getrusage, all its threads) | CPU s | wall s | share of a core | "
      "voluntary / involuntary switches |", "|---|---|---|---|---|"]
for name, rep in merged["tiers"].items():
    p = rep.get("process")
    if p:
        L.append(f"| {rep['args']} | {p['cpu_seconds']:.2f} | {p['wall_seconds']:.1f} | {100 * p['share_of_a_core']:.2f} % | "
                 f"{p['voluntary_switches']} / {p['involuntary_switches']} |")
ev = merged["tiers"]["event"]
L += ["", f"| from a deadline miss ({ev['events']} events, 17 a second) | count | p50 µs | p99 µs | max µs |",
      "|---|---|---|---|---|"]
for key, what in (("event_to_sample", "to the first sample showing it (critical tier, 100 Hz)"),
                  ("event_to_push", "to that sample handed to the fabric (push_to, lane P0)")):
    e = ev[key]
    L.append(f"| {what} | {e['count']} | {e['p50_us']:.0f} | {e['p99_us']:.0f} | {e['max_us']:.0f} |")
open(base + ".md", "w").write("\n".join(L) + "\n")
print(f"wrote {base}.json, {base}.md")
PY
}

reliability() {
  local only="${1:-}" name=reliability
  [ -n "$only" ] && name="$only"
  local rtmp="$tmp/$name"
  mkdir -p "$rtmp"
  rrun() { run_in "$rtmp" "$@"; }
  local big=10000000 lane=100000 paced=200000 burst=1000000 large=3000
  if [ "${BENCH_QUICK:-0}" = 1 ]; then big=100000; lane=10000; paced=10000; burst=50000; large=300; fi
  # P0 at 20,000/s through 1 % loss on each link: over one link, then over two at once (the
  # nodes joined by two links, each losing on its own), side by side.
  if [ "$only" = paths ]; then
    # The machine's own tail in the same session: P0 round trips over memif, nerve and the bare
    # DPDK loop.
    rrun 0-floor pingpong --transport memif --count 200000 --floor
    rrun 8-paths reliability --count "$paced" --rate 20000 --fault drop=0.01 --priority 0 --paths 1,2,1,2
    rrun 9-paths-unreliable reliability --count "$paced" --rate 20000 --fault drop=0.01 --priority 0 --paths 1,2,1,2 \
      --unreliable
  else
  rrun 1-big reliability --count "$big" --priority 0
  rrun 2-lanes reliability --count "$lane" --priority 0,1,2,3,4
  rrun 3-paced reliability --count "$paced" --rate 20000 --fault drop=0.01 --priority 0
  rrun 4-overhead reliability --overhead --rounds 5
  rrun 5-burst throughput --transport af_packet --count "$burst" --sweep 1 --priority 3
  rrun 6-burst-reliable throughput --transport af_packet --count "$burst" --sweep 1 --priority 3 --reliable
  rrun 7-large reliability --count "$large" --size 1048576,65536,4096 --priority 3   # fragments
  rrun 8-paths reliability --count "$paced" --rate 20000 --fault drop=0.01 --priority 0 --paths 1,2,1,2
  rrun 9-paths-unreliable reliability --count "$paced" --rate 20000 --fault drop=0.01 --priority 0 --paths 1,2,1,2 \
    --unreliable
  fi
  /usr/bin/python3 - "$rtmp" "$out/$stamp-$name" <<'PY'
import glob, json, sys
tmp, base = sys.argv[1], sys.argv[2]
docs = {f.split("/")[-1][:-5]: json.load(open(f)) for f in sorted(glob.glob(f"{tmp}/*.json"))}
first = next(iter(docs.values()))
merged = dict(first); merged["setup"] = dict(first["setup"], scenario="reliability")
merged["results"] = [dict(r, run=k) for k, d in docs.items() for r in d["results"]]
json.dump(merged, open(base + ".json", "w"), indent=2)
us = lambda ns: f"{ns / 1000:.2f}"
L = [f"Commit {merged['commit']}, {merged['setup']['date']}, {merged['setup']['cpu']}, DPDK {merged['setup']['dpdk']}.", ""]
L += ["| run | lane | bytes | paths | reliable | faults (each port, on receive) | sent | lost | dup | reordered | retransmits | faults injected | "
      "msgs/s | p50 µs | p99 µs | p99.9 µs | p99.99 µs | budget misses | sent again: p50 / p99 µs to ack |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in merged["results"]:
    if r["scenario"] != "reliability": continue
    l = r["latency_ns"]; rc = r["recovery_ns"]
    L.append(f"| {r['run']} | P{r['priority']} | {r['size']} | {r.get('paths', 1)} | {'yes' if r['reliable'] else 'no'} | {r['fault']} | {r['sent']} | {r['lost']} | {r['duplicates']} | "
             f"{r['reordered']} | {r['retransmits']} | {r['faults_injected']} | {r['rate_mps']:.0f} | {us(l['p50'])} | "
             f"{us(l['p99'])} | {us(l['p999'])} | {us(l['p9999'])} | {r['deadline_misses']} | "
             f"{(us(rc['p50']) + ' / ' + us(rc['p99'])) if rc['count'] else '-'} |")
ov = [r for r in merged["results"] if r["scenario"] == "reliability-rtt"]
if ov:
  L += ["", "| P0 round trip, memif, 64 B | round trips | p50 µs | p90 µs | p99 µs | max µs |", "|---|---|---|---|---|---|"]
for r in ov:
    l = r["latency_ns"]
    L.append(f"| {r['stack']} | {r['count']} | {us(l['p50'])} | {us(l['p90'])} | {us(l['p99'])} | {us(l['max'])} |")
if len(ov) == 2:
    L.append(f"| reliable / unreliable | | {ov[1]['latency_ns']['p50'] / ov[0]['latency_ns']['p50']:.3f} | | | |")
bursts = [r for r in merged["results"] if r["scenario"] == "throughput" and r.get("max")]
if bursts:
  L += ["", "| unpaced burst, af_packet across namespaces, P3 64 B | sent | lost | msgs/s | p50 µs | p99 µs |", "|---|---|---|---|---|---|"]
for r in bursts:
    l = r["latency_ns"]
    L.append(f"| {'reliable' if r['reliable'] else 'unreliable'} | {r['sent']} | {r['lost']} | {r['rate_mps']:.0f} | "
             f"{us(l['p50'])} | {us(l['p99'])} |")
floor = [r for r in merged["results"] if r["scenario"] == "pingpong"]
if floor:
  L += ["", "| P0 round trip, memif, 64 B (the machine's tail, same session) | round trips | p50 µs | p99 µs | p99.9 µs | p99.99 µs | max µs |",
        "|---|---|---|---|---|---|---|"]
for r in floor:
    l = r["latency_ns"]
    L.append(f"| {r['stack']} | {r['count']} | {us(l['p50'])} | {us(l['p99'])} | {us(l['p999'])} | {us(l['p9999'])} | "
             f"{us(l['max'])} |")
open(base + ".md", "w").write("\n".join(L) + "\n")
print(f"wrote {base}.json, {base}.md")
PY
}
if [ "${1:-}" = fabric ]; then
  fabric
  exit 0
fi
if [ "${1:-}" = reliability ]; then
  reliability
  exit 0
fi
if [ "${1:-}" = paths ]; then
  reliability paths
  exit 0
fi
if [ "${1:-}" = telemetry ]; then
  telemetry
  exit 0
fi

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
fabric
