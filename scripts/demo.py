"""The demo: the leaf-spine of docs/examples/topologies/leaf-spine.toml (2 spines, 3 leaves, 2
hosts under each leaf; 11 nerved processes, each in its own network namespace, joined by memif links),
brought up by cluster.py, then in a few screens: a message across three forwarding nodes, a
broadcast reaching every node once, a multicast group, services spreading requests, and a
spine killed while a P0 stream flows, with counts and latencies per lane. Everything it made is
removed at the end.

Run through scripts/demo.sh, which sets up and builds first."""
import json
import os
import signal
import subprocess
import sys
import time

import cluster as topo_mod
import nervecluster as nc

ROOT = nc.ROOT
TOPOLOGY = os.path.join(ROOT, "docs", "examples", "topologies", "leaf-spine.toml")
PER_LANE = int(os.environ.get("NERVE_DEMO_PER_LANE", "500"))
SPINES, LEAVES, HOSTS = (1, 2), (11, 12, 13), (21, 22, 23, 24, 25, 26)
ALL = SPINES + LEAVES + HOSTS


class Demo:
    def __init__(self):
        self.topo = topo_mod.Topology(TOPOLOGY)
        self.cfg = self.topo.cluster_file
        self.names = {nid: n.get("name", str(nid)) for nid, n in self.topo.nodes.items()}

    def ctl(self, node, *args, check=True):
        r = subprocess.run([nc.CTL, "--config", self.cfg, "--node", str(node), "--json", *args], capture_output=True,
                           text=True, timeout=120)
        if check and r.returncode != 0:
            raise nc.Failure(f"nerve-ctl --node {node} {' '.join(args)} -> {r.returncode}: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def status(self, nodes=ALL):
        return {n: self.ctl(n, "status") for n in nodes}

    def name(self, n):
        return f"{self.names[n]}({n})"

    def path(self, src, dst):
        """The P0 path from src to dst, hop by hop, from each node's routes."""
        hops, at = [src], src
        while at != dst and len(hops) < 10:
            r = next(x for x in self.ctl(at, "routes")["routes"] if x["dst"] == dst)
            at = r["lanes"][0]["next_hop"]
            if at == 0:
                break
            hops.append(at)
        return hops


def delivered(st, mtype, prio):
    return st["delivered"][mtype][prio]


def screen(title):
    print(f"\n== {title}")


def converged(d):
    """Every node has a route up to every other node."""
    for n in ALL:
        routes = d.ctl(n, "routes")["routes"]
        if len(routes) != len(ALL) - 1 or any(r["lanes"][0]["next_hop"] == 0 for r in routes):
            return False
    return True


def run(d):
    ok = True
    screen(f"bringing up {len(ALL)} nodes: 2 spines, 3 leaves, 2 hosts per leaf ({TOPOLOGY})")
    t0 = time.monotonic()
    if topo_mod.up(d.topo) != 0:
        raise nc.Failure("cluster.sh up failed")
    nc.wait_for(lambda: converged(d), 30, "every node to have a route to every other", interval=0.1)
    print(f"   every node routes to every other after {time.monotonic() - t0:.1f} s; cluster file {d.cfg}")

    # --- three forwarding nodes -----------------------------------------------------------
    src, dst = 21, 26
    hops = d.path(src, dst)
    screen(f"h1 -> h6 across three forwarding nodes: {' -> '.join(d.name(h) for h in hops)}")
    r = d.ctl(src, "send", "--to", str(dst), "--type", "command", "--priority", "0", "echo hello across the fabric")
    print(f"   command P0 'echo hello across the fabric' -> '{r.get('reply')}', round trip {r['rtt_ns'] / 1000:.0f} us")
    before = d.status()
    for p in range(5):
        r = d.ctl(src, "send", "--to", str(dst), "--type", "metric", "--priority", str(p), "--count", str(PER_LANE),
                  "--number", "cpu.util=0.42")
        ok &= r["status"] == "ok" and r["sent"] == PER_LANE
    nc.wait_for(lambda: all(delivered(d.ctl(dst, "status"), "metric", p) - delivered(before[dst], "metric", p)
                            >= PER_LANE for p in range(5)), 30, "the metrics at h6", interval=0.1)
    after = d.status()
    print(f"   {PER_LANE} metrics per lane; frames each node on the way forwarded, per lane, and how long after"
          f" it was sent a frame reached that node (p50):")
    print(f"   {'node':<12}" + "".join(f"{'P' + str(p):>8}" for p in range(5)) + "   sender to here, p50 us per lane")
    for h in hops[1:-1]:
        fwd = [after[h]["forwarded"]["lanes"][p] - before[h]["forwarded"]["lanes"][p] for p in range(5)]
        transit = " ".join(f"{t['p50_ns'] / 1000:.1f}" for t in after[h]["forwarded"]["transit"])
        print(f"   {d.name(h):<12}" + "".join(f"{v:>8}" for v in fwd) + f"   {transit}")
    got = [delivered(after[dst], "metric", p) - delivered(before[dst], "metric", p) for p in range(5)]
    ok &= got == [PER_LANE] * 5
    print(f"   {'h6 got':<12}" + "".join(f"{v:>8}" for v in got))

    # --- broadcast ------------------------------------------------------------------------
    screen("a broadcast from h3 reaches every other node exactly once")
    before = d.status()
    r = d.ctl(23, "send", "--broadcast", "--type", "alert", "--priority", "1", "--count", "100",
              "severity=warning disk.free<10%")
    ok &= r["status"] == "ok"

    def bcast_counts():
        now = d.status()
        return {n: delivered(now[n], "alert", 1) - delivered(before[n], "alert", 1) for n in ALL}
    nc.wait_for(lambda: all(v >= 100 for n, v in bcast_counts().items() if n != 23), 30, "the broadcast everywhere")
    counts = bcast_counts()
    ok &= all(v == (0 if n == 23 else 100) for n, v in counts.items())
    print("   alerts received: " + ", ".join(f"{d.names[n]} {counts[n]}" for n in ALL))
    dup = sum(after_st["counters"]["refused"].get("duplicate", 0) for after_st in d.status().values())
    print(f"   100 sent, each of the 10 other nodes got 100 (one copy per branch of h3's tree); duplicates refused: {dup}")

    # --- multicast ------------------------------------------------------------------------
    screen("multicast to group ops (h2, h4, h6); then h5 joins")
    before = d.status()
    d.ctl(21, "send", "--group", "ops", "--type", "status", "--priority", "2", "--count", "100", "component=db ok")

    def mcast_counts():
        now = d.status()
        return {n: delivered(now[n], "status", 2) - delivered(before[n], "status", 2) for n in ALL}
    nc.wait_for(lambda: all(mcast_counts()[m] >= 100 for m in (22, 24, 26)), 30, "the multicast at its members")
    c1 = mcast_counts()
    ok &= all(v == (100 if n in (22, 24, 26) else 0) for n, v in c1.items())
    d.ctl(25, "join", "ops")
    nc.wait_for(lambda: d.ctl(21, "groups")["groups"][0]["members"] == [22, 24, 25, 26], 20, "h1 to learn h5 joined")
    d.ctl(21, "send", "--group", "ops", "--type", "status", "--priority", "2", "--count", "50", "component=db ok")
    nc.wait_for(lambda: mcast_counts()[25] >= 50 and mcast_counts()[26] >= 150, 30, "the multicast at h5")
    c2 = mcast_counts()
    ok &= c2[25] == 50 and c2[22] == 150 and c2[21] == 0 and c2[23] == 0
    print("   after 100 messages:  " + ", ".join(f"{d.names[n]} {c1[n]}" for n in HOSTS))
    print("   h5 joined, 50 more:  " + ", ".join(f"{d.names[n]} {c2[n]}" for n in HOSTS))

    # --- services -------------------------------------------------------------------------
    screen("services: calc spreads requests round robin; kv keeps each key on one instance")
    r = d.ctl(21, "send", "--service", "calc", "--type", "command", "--priority", "2", "--count", "300", "ping")
    ok &= r["status"] == "ok" and r["replies"] == 300
    print(f"   calc: 300 requests from h1, {r['replies']} answered; per instance "
          + ", ".join(f"{d.names[int(k)]} {v}" for k, v in sorted(r["spread"].items())))
    for key in ("user:alice", "user:bob", "user:carol"):
        r = d.ctl(22, "send", "--service", "kv", "--key", key, "--type", "request", "--priority", "3", "--count", "20",
                  "get")
        ok &= r["status"] == "ok" and len(r["spread"]) == 1
        inst = next(iter(r["spread"]))
        print(f"   kv: key {key:<11} 20 requests -> all to {d.names[int(inst)]} ({r['replies']} answered)")

    # --- failover -------------------------------------------------------------------------
    hops = d.path(21, 26)
    spine = hops[2]
    rate, count = 5000, 10000
    screen(f"a P0 stream h1 -> h6 at {rate}/s; {d.name(spine)}, which carries it, is killed (SIGKILL)")
    st6 = d.ctl(26, "status")
    stream = subprocess.Popen([nc.CTL, "--config", d.cfg, "--node", "21", "--json", "send", "--to", "26",
                               "--type", "status", "--priority", "0", "--count", str(count), "--rate", str(rate),
                               "--number", "heartbeat of h1"], stdout=subprocess.PIPE, text=True)
    nc.wait_for(lambda: delivered(d.ctl(26, "status"), "status", 0) - delivered(st6, "status", 0) > count // 4, 20,
                "the stream to flow")
    t_kill = time.monotonic()
    topo_mod.kill(d.topo, spine)
    new_path = nc.wait_for(lambda: (lambda p: p if spine not in p and p[-1] == 26 else None)(d.path(21, 26)), 20,
                           "a path around the dead spine", interval=0.01)
    moved = time.monotonic() - t_kill
    out, _ = stream.communicate(timeout=60)
    sent = json.loads(out)["sent"]
    nc.wait_for(lambda: delivered(d.ctl(26, "status"), "status", 0) - delivered(st6, "status", 0) >= sent - count // 2,
                20, "the stream's end")
    # Frames still in flight at the last look: the count until all arrived, or a second passes.
    deadline = time.monotonic() + 1.0
    while True:
        got = delivered(d.ctl(26, "status"), "status", 0) - delivered(st6, "status", 0)
        if got >= sent or time.monotonic() > deadline:
            break
    lost = sent - got
    print(f"   new path {' -> '.join(d.name(h) for h in new_path)}, routes moved {moved * 1000:.0f} ms after the kill")
    print(f"   {sent} sent, {got} delivered, {lost} lost = {lost / rate * 1000:.0f} ms of the stream: the frames on"
          f" their way through {d.names[spine]} and those sent\n   before its links were declared down (here"
          f" after 100 missed heartbeats, 100 ms: eleven nodes share two cores).")
    ok &= lost < rate // 2  # at most half a second's worth

    # --- lanes ----------------------------------------------------------------------------
    screen("one-way latency per lane at the hosts (us, sender's timestamp to delivery)")
    final = d.status(HOSTS)
    print(f"   {'host':<6}" + "".join(f"{'P' + str(p) + ' n':>9}{'p50':>7}{'p99':>8}" for p in range(5)))
    for h in HOSTS:
        cells = "".join(f"{l['count']:>9}{l['p50_ns'] / 1000:>7.0f}{l['p99_ns'] / 1000:>8.0f}" for l in final[h]["lanes"])
        print(f"   {d.names[h]:<6}{cells}")
    print(f"   (11 nodes on {os.cpu_count()} cores, backing off when idle: wake-ups dominate; docs/benchmarks.md has"
          " busy-polling figures)")
    return ok


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, _interrupted)
    d = Demo()
    topo_mod.down(d.topo, quiet=True)  # what an interrupted run left
    ok = False
    t0 = time.monotonic()
    try:
        ok = run(d)
    except (nc.Failure, RuntimeError, KeyError, StopIteration) as e:
        print(f"   {type(e).__name__}: {e}")
        for n in ALL:
            tail = topo_mod.log_tail(d.topo, n, 5)
            if "error" in tail.lower():
                print(f"   --- {d.name(n)}:\n{tail}")
    finally:
        screen("stopping")
        topo_mod.down(d.topo)
    print(f"demo {'complete' if ok else 'FAILED'} in {time.monotonic() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
