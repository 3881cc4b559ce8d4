"""The demo cluster: three nerved processes joined by memif links (a full mesh), exchanging every
message type at every priority, then a report of what was delivered and how fast.

Run through scripts/demo.sh, which sets up and builds first."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
NERVED = os.path.join(BUILD, "apps", "nerved")
CTL = os.path.join(BUILD, "apps", "nerve-ctl")
TYPES = ["command", "status", "metric", "alert", "request", "response"]
NAMES = {1: "alpha", 2: "beta", 3: "gamma"}
PER_LANE = int(os.environ.get("NERVE_DEMO_PER_LANE", "200"))
PAYLOADS = {
    "command": "echo restart worker pool",
    "status": "component=db health=ok",
    "metric": "cpu.util=0.42 mem.used=0.61",
    "alert": "severity=warning disk.free<10%",
    "request": "cpu=2 mem=4G",
    "response": "granted",
}


def cluster_file(d):
    links = {(1, 2): "ab", (1, 3): "ac", (2, 3): "bc"}
    out = ['[cluster]\nname = "demo"\n']
    for n in (1, 2, 3):
        out.append(f'[[node]]\nid = {n}\nname = "{NAMES[n]}"\nmac = "02:00:00:00:00:0{n}"\n'
                   f'ip = "198.18.0.{n}"\ncontrol_socket = "{d}/{NAMES[n]}.sock"\nidle = "backoff"\nmemory_mb = 256\n'
                   # Three nodes share two cores here: none may keep spinning after P0 traffic.
                   f'busy_lanes = []\n')
        for (a, b), tag in links.items():
            if n not in (a, b):
                continue
            peer = b if n == a else a
            role = "server" if n == a else "client"
            out.append(f'  [[node.port]]\n  kind = "memif"\n  socket = "{d}/{tag}.memif"\n'
                       f'  role = "{role}"\n  peers = [{peer}]\n')
    return "\n".join(out)


def ctl(path, node, *args):
    r = subprocess.run([CTL, "--config", path, "--node", str(node), "--json", *args],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"nerve-ctl {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    # Stopped by a signal, the demo still stops its nodes (the finally block below).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, _interrupted)
    d = tempfile.mkdtemp(prefix="nerve-demo-")
    path = os.path.join(d, "cluster.toml")
    with open(path, "w") as f:
        f.write(cluster_file(d))
    procs = {}
    ok = True
    try:
        print(f"== starting 3 nodes (cluster file {path})")
        for n in (1, 2, 3):
            log = open(os.path.join(d, f"{NAMES[n]}.log"), "w")
            procs[n] = subprocess.Popen([NERVED, "--config", path, "--node", str(n), "--digest"],
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        for n in (1, 2, 3):
            while True:
                if procs[n].poll() is not None:
                    raise RuntimeError(f"nerved {NAMES[n]} exited: see {d}/{NAMES[n]}.log")
                try:
                    st = ctl(path, n, "status")
                    if all(p["link"] == "up" for p in st["ports"]):
                        break
                except RuntimeError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"nerved {NAMES[n]} did not come up")
                time.sleep(0.1)
            ports = ", ".join(f"{p['name']}({p['kind']})->{p['peers']}" for p in st["ports"])
            print(f"   {NAMES[n]:<6} node {n}  lcore {st['node']['lcore']}  ports {ports}")

        print("\n== a command and a resource request, answered")
        r = ctl(path, 1, "send", "--to", "2", "--type", "command", "--priority", "0", "echo hello from alpha")
        print(f"   alpha -> beta  command P0 'echo hello from alpha' -> '{r.get('reply')}' in {r['rtt_ns']/1000:.1f} us")
        r = ctl(path, 3, "send", "--to", "1", "--type", "request", "--priority", "1", "cpu=2 mem=4G")
        print(f"   gamma -> alpha request P1 'cpu=2 mem=4G' -> '{r.get('reply')}' in {r['rtt_ns']/1000:.1f} us")

        print(f"\n== every type at every priority, {PER_LANE} messages each, between every pair of nodes")
        sent = {}  # (dst, type, prio) -> [count, digest]
        replies = {}  # (src, prio) -> replies its commands and requests received
        t0 = time.time()
        before = {n: ctl(path, n, "status") for n in (1, 2, 3)}
        for a in (1, 2, 3):
            for b in (1, 2, 3):
                if a == b:
                    continue
                for t in TYPES:
                    for p in range(5):
                        # Commands and requests wait for their replies (nerved answers each one).
                        r = ctl(path, a, "send", "--to", str(b), "--type", t, "--priority", str(p),
                                "--count", str(PER_LANE), "--number", PAYLOADS[t])
                        if r["status"] != "ok":
                            raise RuntimeError(f"{NAMES[a]}->{NAMES[b]} {t} P{p}: {r['status']}")
                        e = sent.setdefault((b, t, p), [0, 0])
                        e[0] += r["sent"]
                        e[1] = (e[1] + r["digest"]) % (1 << 64)
                        replies[(a, p)] = replies.get((a, p), 0) + r["replies"]
                print(f"   {NAMES[a]:<6} -> {NAMES[b]:<6} {PER_LANE * 30} messages sent ({time.time() - t0:.1f} s)")
        time.sleep(0.5)
        after = {n: ctl(path, n, "status") for n in (1, 2, 3)}

        print("\n== delivered (messages received per node, by type and priority)")
        print(f"   {'node':<7}{'type':<10}" + "".join(f"{'P' + str(p):>8}" for p in range(5)) + "   payloads")
        for n in (1, 2, 3):
            for t in TYPES:
                got = [after[n]["delivered"][t][p] - before[n]["delivered"][t][p] for p in range(5)]
                dig = [(after[n]["digest"][t][p] - before[n]["digest"][t][p]) % (1 << 64) for p in range(5)]
                want = [list(sent[(n, t, p)]) for p in range(5)]
                if t == "response":
                    # Replies to this node's commands and requests arrive on the response lane
                    # too; they are matched to their request, so they count but are not digested.
                    for p in range(5):
                        want[p][0] += replies.get((n, p), 0)
                exact = all(got[p] == want[p][0] and dig[p] == want[p][1] for p in range(5))
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
    finally:
        print("\n== stopping")
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for n, p in procs.items():
            try:
                rc = p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = "killed"
            ok &= rc == 0
            print(f"   {NAMES[n]:<6} exited {rc}")
        if ok:
            shutil.rmtree(d, ignore_errors=True)
        else:
            print(f"   logs kept in {d}")
    print("demo " + ("complete" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
