"""The demo cluster: three nerved processes joined by memif links (a full mesh), exchanging every
message type at every priority, then a report of what was delivered and how fast.

Run through scripts/demo.sh, which sets up and builds first."""
import os
import signal
import sys
import time

import nervecluster as nc

NAMES = {1: "alpha", 2: "beta", 3: "gamma"}
TYPES = nc.TYPES
PER_LANE = int(os.environ.get("NERVE_DEMO_PER_LANE", "200"))
PAYLOADS = {
    "command": "echo restart worker pool",
    "status": "component=db health=ok",
    "metric": "cpu.util=0.42 mem.used=0.61",
    "alert": "severity=warning disk.free<10%",
    "request": "cpu=2 mem=4G",
    "response": "granted",
}


def cluster_file(cl):
    """Three nodes, a memif link between each pair. Three nodes share two cores here: they back
    off when idle, and none keeps spinning after P0 traffic (busy_lanes = [])."""
    links = {(1, 2): "ab", (1, 3): "ac", (2, 3): "bc"}
    out = []
    for n in (1, 2, 3):
        ports = []
        for (a, b), tag in links.items():
            if n in (a, b):
                ports.append({"kind": "memif", "socket": f"{cl.dir}/{tag}.memif", "role": "server" if n == a else "client",
                              "peers": [b if n == a else a]})
        out.append(nc.node_toml(n, NAMES[n], f"198.18.0.{n}", cl.sock(n), ports,
                                'idle = "backoff"\nmemory_mb = 256\nbusy_lanes = []'))
    cl.write("\n".join(out))


def ctl(cl, node, *args):
    import json
    return json.loads(cl.ctl(node, *args).stdout)


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    # Stopped by a signal, the demo still stops its nodes (the finally block below).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, _interrupted)
    cl = nc.Cluster("demo")
    cluster_file(cl)
    ok = True
    try:
        print(f"== starting 3 nodes (cluster file {cl.path})")
        cl.up(ids=(1, 2, 3))
        for n in (1, 2, 3):
            st = ctl(cl, n, "status")
            ports = ", ".join(f"{p['name']}({p['kind']})->{p['peers']}" for p in st["ports"])
            print(f"   {NAMES[n]:<6} node {n}  lcore {st['node']['lcore']}  ports {ports}")

        print("\n== a command and a resource request, answered")
        r = ctl(cl, 1, "send", "--to", "2", "--type", "command", "--priority", "0", "echo hello from alpha")
        print(f"   alpha -> beta  command P0 'echo hello from alpha' -> '{r.get('reply')}' in {r['rtt_ns']/1000:.1f} us")
        r = ctl(cl, 3, "send", "--to", "1", "--type", "request", "--priority", "1", "cpu=2 mem=4G")
        print(f"   gamma -> alpha request P1 'cpu=2 mem=4G' -> '{r.get('reply')}' in {r['rtt_ns']/1000:.1f} us")

        print(f"\n== every type at every priority, {PER_LANE} messages each, between every pair of nodes")
        sent = {}  # (dst, type, prio) -> [count, digest]
        replies = {}  # (src, prio) -> replies its commands and requests received
        t0 = time.time()
        before = {n: ctl(cl, n, "status") for n in (1, 2, 3)}
        for a in (1, 2, 3):
            for b in (1, 2, 3):
                if a == b:
                    continue
                for t in TYPES:
                    for p in range(5):
                        # Commands and requests wait for their replies (nerved answers each one).
                        r = ctl(cl, a, "send", "--to", str(b), "--type", t, "--priority", str(p),
                                "--count", str(PER_LANE), "--number", PAYLOADS[t])
                        if r["status"] != "ok":
                            raise RuntimeError(f"{NAMES[a]}->{NAMES[b]} {t} P{p}: {r['status']}")
                        e = sent.setdefault((b, t, p), [0, 0])
                        e[0] += r["sent"]
                        e[1] = (e[1] + r["digest"]) % (1 << 64)
                        replies[(a, p)] = replies.get((a, p), 0) + r["replies"]
                print(f"   {NAMES[a]:<6} -> {NAMES[b]:<6} {PER_LANE * 30} messages sent ({time.time() - t0:.1f} s)")

        def expected(n, t, p):
            # Replies to this node's commands and requests arrive as responses too; they are
            # matched to their request, so they count but are not digested.
            extra = replies.get((n, p), 0) if t == "response" else 0
            return sent[(n, t, p)][0] + extra

        def all_delivered():
            now = {n: ctl(cl, n, "status") for n in (1, 2, 3)}
            done = all(nc.delivered_since(before[n], now[n], t, p) >= expected(n, t, p)
                       for n in (1, 2, 3) for t in TYPES for p in range(5))
            return now if done else None
        try:
            after = nc.wait_for(all_delivered, 30, "every message to be delivered", interval=0.1)
        except nc.Failure:
            after = {n: ctl(cl, n, "status") for n in (1, 2, 3)}

        print("\n== delivered (messages received per node, by type and priority)")
        print(f"   {'node':<7}{'type':<10}" + "".join(f"{'P' + str(p):>8}" for p in range(5)) + "   payloads")
        for n in (1, 2, 3):
            for t in TYPES:
                got = [nc.delivered_since(before[n], after[n], t, p) for p in range(5)]
                dig = [(after[n]["digest"][t][p] - before[n]["digest"][t][p]) % (1 << 64) for p in range(5)]
                exact = all(got[p] == expected(n, t, p) and dig[p] == sent[(n, t, p)][1] for p in range(5))
                ok &= exact
                print(f"   {NAMES[n]:<7}{t:<10}" + "".join(f"{g:>8}" for g in got) +
                      f"   {'byte-exact' if exact else 'MISMATCH'}")

        print("\n== one-way latency per priority lane (us, sender timestamp to delivery; nodes back off when idle)")
        print(f"   {'node':<7}{'lane':<6}{'count':>8}{'p50':>9}{'p99':>9}{'max':>10}{'budget':>9}{'missed':>8}")
        for n in (1, 2, 3):
            for lane in after[n]["lanes"]:
                print(f"   {NAMES[n]:<7}P{lane['priority']:<5}{lane['count']:>8}{lane['p50_ns']/1000:>9.1f}"
                      f"{lane['p99_ns']/1000:>9.1f}{lane['max_ns']/1000:>10.1f}{lane['budget_ns']/1000:>9.0f}"
                      f"{lane['deadline_miss']:>8}")
        print(f"   (three nodes share {os.cpu_count()} cores here and sleep when idle, so wake-ups and time"
              f" slices dominate these figures;\n    on dedicated busy-polling cores see docs/benchmarks.md,"
              f" or measure with nerve-perf)")
        refused = sum(after[n]["counters"]["refused_total"] for n in (1, 2, 3))
        total = sum(v[0] for v in sent.values())
        answered = sum(replies.values())
        print(f"\n   {total} messages sent, {total if ok else 'NOT all'} delivered byte-exact, "
              f"{answered} commands and requests answered, {refused} frames refused")
    except (nc.Failure, RuntimeError) as e:
        ok = False
        print(f"   {e}")
    finally:
        print("\n== stopping")
        try:
            codes = cl.stop()
        except nc.Failure as e:
            print(f"   {e}")
            codes = {}
            ok = False
        for n, rc in codes.items():
            ok &= rc == 0
            print(f"   {NAMES[n]:<6} exited {rc}")
        if ok:
            cl.remove()
        else:
            cl.kill_all()
            print(f"   logs kept in {cl.dir}")
    print("demo " + ("complete" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
