"""Helpers for the integration tests: cluster files, real nerved processes, nerve-ctl calls.

Every test makes its own temporary directory, starts its daemons, and checks on the way out
that they exited cleanly and left nothing behind (control sockets, memif sockets, DPDK
runtime directories).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("NERVE_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
NERVED = os.path.join(BUILD, "apps", "nerved")
CTL = os.path.join(BUILD, "apps", "nerve-ctl")
TYPES = ["command", "status", "metric", "alert", "request", "response"]


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print(f"ok: {what}", flush=True)


def node_toml(node_id, name, ip, sock, ports, extra=""):
    out = [f"[[node]]", f"id = {node_id}", f'name = "{name}"', f'mac = "02:00:00:00:00:{node_id:02x}"',
           f'ip = "{ip}"', f'control_socket = "{sock}"', extra]
    for p in ports:
        out.append("  [[node.port]]")
        for k, v in p.items():
            out.append(f"  {k} = {json.dumps(v)}")
    return "\n".join(out) + "\n"


_dirs = []  # every cluster's directory, removed by main() when the test passes


def memif_pair(name, subnet):
    """A cluster file of alpha (1, memif server) and beta (2, client) joined by one memif link,
    addressed subnet.1 and subnet.2 (198.18.x)."""
    cl = Cluster(name)
    cl.memif = f"{cl.dir}/link.memif"
    cl.write(node_toml(1, "alpha", f"{subnet}.1", cl.sock(1),
                       [{"kind": "memif", "socket": cl.memif, "role": "server", "peers": [2]}]) +
             node_toml(2, "beta", f"{subnet}.2", cl.sock(2),
                       [{"kind": "memif", "socket": cl.memif, "role": "client", "peers": [1]}]))
    return cl


class Cluster:
    def __init__(self, name, tmp=None):
        self.name = name
        self.dir = tmp or tempfile.mkdtemp(prefix=f"nerve-{name}-")
        _dirs.append(self.dir)
        self.path = os.path.join(self.dir, "cluster.toml")
        self.procs = {}
        self.nodes = {}

    def write(self, nodes_toml):
        with open(self.path, "w") as f:
            f.write(f'[cluster]\nname = "{self.name}"\n\n' + nodes_toml)

    def sock(self, node_id):
        return os.path.join(self.dir, f"n{node_id}.sock")

    def start(self, node_id, netns=None, extra_args=()):
        cmd = [NERVED, "--config", self.path, "--node", str(node_id), "--digest", *extra_args]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        log = open(os.path.join(self.dir, f"nerved-{node_id}.log"), "w")
        self.procs[node_id] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def up(self, netns=None):
        """Starts nodes 1 and 2 (in netns[0] and netns[1] if given) and waits until both are
        ready: all the integration tests run such a pair."""
        for node_id in (1, 2):
            self.start(node_id, netns=netns[node_id - 1] if netns else None)
        for node_id in (1, 2):
            self.wait_ready(node_id)

    def wait_ready(self, node_id, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.procs[node_id].poll() is not None:
                raise Failure(f"nerved {node_id} exited early with {self.procs[node_id].returncode}:\n{self.log(node_id)}")
            r = self.ctl(node_id, "status", check_rc=False)
            if r.returncode == 0:
                st = json.loads(r.stdout)
                if all(p["link"] == "up" for p in st["ports"]):
                    return st
            time.sleep(0.1)
        raise Failure(f"nerved {node_id} not ready in {timeout}s:\n{self.log(node_id)}")

    def log(self, node_id):
        with open(os.path.join(self.dir, f"nerved-{node_id}.log")) as f:
            return f.read()

    def ctl(self, node_id, *args, check_rc=True):
        r = subprocess.run([CTL, "--config", self.path, "--node", str(node_id), "--json", *args],
                           capture_output=True, text=True, timeout=120)
        if check_rc and r.returncode != 0:
            raise Failure(f"nerve-ctl {' '.join(args)} -> {r.returncode}: {r.stderr}")
        return r

    def status(self, node_id):
        return json.loads(self.ctl(node_id, "status").stdout)

    def send(self, src, dst, mtype, prio, payload, count=1, number=False, wait=False, no_wait=False, rate=0):
        args = ["send", "--to", str(dst), "--type", mtype, "--priority", str(prio), "--count", str(count)]
        if rate:
            args += ["--rate", str(rate)]
        if number:
            args.append("--number")
        if wait:
            args.append("--wait")
        if no_wait:
            args.append("--no-wait")
        return json.loads(self.ctl(src, *args, payload).stdout)

    def stop(self):
        """SIGTERM every daemon; each must exit 0 and remove its control socket."""
        for nid, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for nid, p in self.procs.items():
            try:
                rc = p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                bt = subprocess.run(["gdb", "-batch", "-ex", "thread apply all bt", "-p", str(p.pid)],
                                    capture_output=True, text=True).stdout
                p.kill()
                raise Failure(f"nerved {nid} did not stop on SIGTERM; its threads:\n{bt}")
            check(rc == 0, f"nerved {nid} exited 0 on SIGTERM (got {rc})")
            check("stopped cleanly" in self.log(nid), f"nerved {nid} logged a clean stop")
            check(not os.path.exists(self.sock(nid)), f"nerved {nid} removed its control socket")
        leftovers = [f for f in os.listdir("/var/run/dpdk") if f.startswith(f"nerve-{self.name}-")] \
            if os.path.isdir("/var/run/dpdk") else []
        check(not leftovers, f"no DPDK runtime directories left ({leftovers})")

    def kill_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def exchange_all(cl, a, b, per_lane, rate=0):
    """per_lane messages of every type and priority from a to b; b must receive every one with
    the same payload digest a sent. `rate` paces the sender (kernel-backed links have no
    back-pressure: a receiver that loses its core for milliseconds would otherwise overflow)."""
    base = settle(cl, b)
    sent = {}
    for t in TYPES:
        for prio in range(5):
            r = cl.send(a, b, t, prio, f"{t}-P{prio}-from-{a}", count=per_lane, number=True, no_wait=True, rate=rate)
            if r["status"] != "ok" or r["sent"] != per_lane:
                raise Failure(f"{a}->{b} {t} P{prio}: {r}")
            sent[(t, prio)] = r["digest"]
    # Delivery is asynchronous: wait until b has counted everything (or time out).
    deadline = time.time() + 30
    while True:
        st = cl.status(b)
        done = all(st["delivered"][t][p] - base["delivered"][t][p] >= per_lane for t in TYPES for p in range(5))
        if done or time.time() > deadline:
            break
        time.sleep(0.2)
    for t in TYPES:
        for prio in range(5):
            got = st["delivered"][t][prio] - base["delivered"][t][prio]
            digest = (st["digest"][t][prio] - base["digest"][t][prio]) % (1 << 64)
            if got != per_lane or digest != sent[(t, prio)]:
                refused = {k: v for k, v in st["counters"]["refused"].items() if v}
                sender = cl.status(a)
                raise Failure(f"{a}->{b} {t} P{prio}: delivered {got}/{per_lane}, digest "
                              f"{digest:#x} vs sent {sent[(t, prio)]:#x}; receiver ports "
                              f"{[(p['name'], p['ipackets'], p['imissed'], p['ierrors']) for p in st['ports']]}, "
                              f"refused {refused}, rx_frames {st['counters']['rx_frames']}; sender ports "
                              f"{[(p['name'], p['opackets'], p['oerrors']) for p in sender['ports']]}, sender "
                              f"lanes shed {[l['shed'] for l in sender['lanes']]}")
    print(f"ok: {a}->{b}: {per_lane} messages of each of 6 types x 5 priorities delivered, payloads byte-exact",
          flush=True)
    return st


def settle(cl, node_id):
    """Status of node_id once nothing more is arriving (replies to earlier requests may be in flight)."""
    prev = cl.status(node_id)
    while True:
        time.sleep(0.3)
        cur = cl.status(node_id)
        if cur["delivered"] == prev["delivered"]:
            return cur
        prev = cur


def main(fn):
    """Runs a test; its clusters' directories (configs, logs, sockets) go when it passes and
    stay, named on stderr, when it fails."""
    try:
        fn()
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        for d in _dirs:
            print(f"logs kept in {d}", file=sys.stderr, flush=True)
        sys.exit(1)
    for d in _dirs:
        shutil.rmtree(d, ignore_errors=True)
