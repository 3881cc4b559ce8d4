"""Clusters of real nerved processes on one host: cluster files, starting and stopping nodes
(optionally each in a network namespace), nerve-ctl calls, and waits on conditions with
deadlines. The integration tests, the demo and the cluster scripts use it.

Every wait here is a condition with a deadline: `wait_for(check, timeout, what)` polls `check`
until it returns something true, and raises Failure naming `what` when the deadline passes.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("NERVE_BUILD", os.path.join(ROOT, "build"))
NERVED = os.path.join(BUILD, "apps", "nerved")
CTL = os.path.join(BUILD, "apps", "nerve-ctl")
TELEMETRY = os.path.join(BUILD, "apps", "nerve-telemetry")
PERF = os.path.join(BUILD, "perf", "nerve-perf")
TYPES = ["command", "status", "metric", "alert", "request", "response"]


def region_path(control_socket):
    """The default stats region of a node with this control socket (config::default_stats_region)."""
    name = ""
    for c in control_socket:
        if c == "/":
            if name and not name.endswith("-"):
                name += "-"
        else:
            name += c
    return f"/dev/shm/nerve-{name[-200:]}.stats"


def scrape(port, host="127.0.0.1"):
    """A sidecar's /metrics as {(name, frozenset(labels)): value}; None if nothing answers."""
    import urllib.request
    try:
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    out = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        name, _, labels = head.partition("{")
        pairs = [kv.split("=", 1) for kv in labels.rstrip("}").split(",") if kv]
        out[(name, frozenset((k, v.strip('"')) for k, v in pairs))] = float(value)
    return out


def metric(m, name, **labels):
    """The one sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    hits = [v for (n, ls), v in m.items() if n == name and want <= set(ls)]
    if len(hits) != 1:
        raise Failure(f"{len(hits)} samples of {name}{labels} in the exposition")
    return hits[0]


class Failure(Exception):
    pass


def wait_for(check, timeout, what, interval=0.02, on_fail=None):
    """Polls check() until it returns a true value (returned), or raises Failure after
    `timeout` seconds (with on_fail()'s account, when given). `interval` is the pause between
    polls, never a wait for its own sake."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout} s waiting for {what}" + (f": {on_fail()}" if on_fail else ""))
        time.sleep(interval)


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def node_toml(node_id, name, ip, sock, ports, extra="", mac=None):
    mac = mac or f"02:00:00:00:00:{node_id:02x}"
    out = ["[[node]]", f"id = {node_id}", f'name = "{name}"', f'mac = "{mac}"', f'ip = "{ip}"',
           f'control_socket = "{sock}"', extra]
    for p in ports:
        out.append("  [[node.port]]")
        for k, v in p.items():
            out.append(f"  {k} = {json.dumps(v)}")
    return "\n".join(out) + "\n"


class Netns:
    """Network namespaces joined by veth pairs, made by this object and removed by remove().
    Names carry the pid so parallel runs never meet; addresses come from 198.18.0.0/15."""

    def __init__(self, tag):
        self.tag = f"{tag}{os.getpid() % 100000}"
        self.names = []
        self.veths = []  # (ns, ifname)

    def add(self, suffix):
        ns = f"nv-{self.tag}-{suffix}"
        sh("ip", "netns", "add", ns)
        self.names.append(ns)
        for key in ("all", "default"):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def link(self, ns_a, if_a, mac_a, ns_b, if_b, mac_b, mtu=1500):
        """A veth pair between two namespaces, each end with the node's MAC, up. No IP
        addresses: the kernel stays out of the fabric's traffic."""
        sh("ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        for ns, ifn, mac in ((ns_a, if_a, mac_a), (ns_b, if_b, mac_b)):
            sh("ip", "-n", ns, "link", "set", ifn, "address", mac, "mtu", str(mtu))
            sh("ip", "-n", ns, "link", "set", ifn, "up")
            self.veths.append((ns, ifn))

    def counter(self, ns, ifname, name):
        """A kernel counter of an interface (statistics/<name>, e.g. rx_packets)."""
        r = sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{ifname}/statistics/{name}")
        return int(r.stdout)

    def remove(self):
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.names = []

    def left(self):
        listed = sh("ip", "netns", "list").stdout
        return [n for n in self.names if n in listed]


class Cluster:
    """A cluster file in a directory of its own, and the nerved processes started from it."""

    def __init__(self, name, directory=None):
        self.name = name
        self.dir = directory or tempfile.mkdtemp(prefix=f"nerve-{name}-")
        self.path = os.path.join(self.dir, "cluster.toml")
        self.procs = {}
        self.netns = {}

    # Test and demo clusters share two cores with everything else on the machine: a node
    # that loses its core for a few milliseconds is not dead. Heartbeats at the default rate,
    # but a link is declared down only after 100 ms of silence (the default, 3.5 ms, is for
    # dedicated cores; the failover tests set their own).
    LENIENT = "heartbeat_miss = 100"

    def write(self, nodes_toml, cluster_keys=None):
        keys = self.LENIENT if cluster_keys is None else cluster_keys
        if cluster_keys and "heartbeat_miss" not in cluster_keys and "heartbeat_hz" not in cluster_keys:
            keys = self.LENIENT + "\n" + cluster_keys
        with open(self.path, "w") as f:
            f.write(f'[cluster]\nname = "{self.name}"\n{keys}\n' + nodes_toml)

    def sock(self, node_id):
        return os.path.join(self.dir, f"n{node_id}.sock")

    def logfile(self, node_id):
        return os.path.join(self.dir, f"nerved-{node_id}.log")

    def start(self, node_id, netns=None, extra_args=(), digest=True):
        # memif's handshake in the log (about forty lines a link), for a link that does not come
        # up; NERVE_DPDK_LOG (space-separated --dpdk-log specs, empty: none) replaces it.
        cmd = [NERVED, "--config", self.path, "--node", str(node_id), *(["--digest"] if digest else []),
               *[x for l in os.environ.get("NERVE_DPDK_LOG", "pmd.net.memif:debug").split() for x in ("--dpdk-log", l)], *extra_args]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd  # exec: nerved keeps the pid
        log = open(self.logfile(node_id), "w")
        self.procs[node_id] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.netns[node_id] = netns

    def up(self, ids=(1, 2), netns=None, timeout=30):
        """Starts the nodes (node i in netns[i] if given) and waits until all links are up."""
        for i in ids:
            self.start(i, netns=netns.get(i) if netns else None)
        for i in ids:
            self.wait_ready(i, timeout)

    def wait_ready(self, node_id, timeout=30):
        last = {}

        def ready():
            p = self.procs[node_id]
            if p.poll() is not None:
                raise Failure(f"nerved {node_id} exited early with {p.returncode}:\n{self.log(node_id)}")
            r = self.ctl(node_id, "status", check_rc=False)
            last["status"] = r.stdout.strip()[-2000:] or r.stderr.strip()[-500:]
            if r.returncode != 0:
                return None
            st = json.loads(r.stdout)
            last["status"] = json.dumps({k: st[k] for k in ("ports", "links") if k in st})[-4000:]
            return st if all(port["link"] == "up" for port in st["ports"]) else None
        try:
            return wait_for(ready, timeout, f"nerved {node_id} to come up with its links")
        except Failure as e:  # what the nodes said, for whoever reads the failure
            logs = "".join(f"\n--- nerved {i} (last 40 lines):\n" + "".join(self.log(i).splitlines(True)[-40:])
                           for i in self.procs)
            raise Failure(f"{e}\nlast status (ports, links) or error: {last.get('status', '(none)')}{logs}") from None

    def log(self, node_id):
        with open(self.logfile(node_id)) as f:
            return f.read()

    def ctl(self, node_id, *args, check_rc=True, timeout=300):
        r = subprocess.run([CTL, "--config", self.path, "--node", str(node_id), "--json", *args],
                           capture_output=True, text=True, timeout=timeout)
        if check_rc and r.returncode != 0:
            raise Failure(f"nerve-ctl {' '.join(args)} -> {r.returncode}: {r.stderr}{r.stdout}")
        return r

    def status(self, node_id):
        return json.loads(self.ctl(node_id, "status").stdout)

    def routes(self, node_id):
        return json.loads(self.ctl(node_id, "routes").stdout)

    def send_args(self, dst, mtype, prio, payload, count=1, number=False, wait=False, no_wait=False, rate=0,
                  timeout_ms=None, reliable=False, size=0, paths=1):
        args = ([] if timeout_ms is None else ["--timeout-ms", str(timeout_ms)]) + \
            ["send", "--to", str(dst), "--type", mtype, "--priority", str(prio), "--count", str(count)]
        if rate:
            args += ["--rate", str(rate)]
        if number:
            args.append("--number")
        if wait:
            args.append("--wait")
        if no_wait:
            args.append("--no-wait")
        if reliable:
            args.append("--reliable")
        if size:
            args += ["--size", str(size)]
        if paths != 1:
            args += ["--paths", str(paths)]
        return args + [payload]

    def send(self, src, dst, mtype, prio, payload, check_rc=True, **kw):
        r = self.ctl(src, *self.send_args(dst, mtype, prio, payload, **kw), check_rc=check_rc)
        return json.loads(r.stdout) if r.stdout.strip() else {"status": f"nerve-ctl exit {r.returncode}"}

    def send_async(self, src, dst, mtype, prio, payload, **kw):
        """A send running in the background: a Popen whose stdout is the JSON result."""
        return subprocess.Popen([CTL, "--config", self.path, "--node", str(src), "--json",
                                 *self.send_args(dst, mtype, prio, payload, **kw)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def signal(self, node_id, sig):
        os.kill(self.procs[node_id].pid, sig)

    def wait_exit(self, node_id, timeout=30):
        """The exit code of node_id, or Failure with its threads' stacks if it hangs."""
        p = self.procs[node_id]
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            bt = subprocess.run(["gdb", "-batch", "-ex", "thread apply all bt", "-p", str(p.pid)],
                                capture_output=True, text=True).stdout
            p.kill()
            p.wait()
            raise Failure(f"nerved {node_id} did not stop within {timeout} s; its threads:\n{bt}")

    def stop(self, ids=None, timeout=30):
        """SIGTERM to every node at once; returns {id: exit code}."""
        ids = list(ids or self.procs)
        for i in ids:
            if self.procs[i].poll() is None:
                self.signal(i, signal.SIGTERM)
        return {i: self.wait_exit(i, timeout) for i in ids}

    def stopped_cleanly(self, node_id):
        """Problems with node_id's stop, as a list of strings (empty: clean)."""
        problems = []
        rc = self.procs[node_id].returncode
        if rc != 0:
            problems.append(f"nerved {node_id} exited {rc}")
        if "stopped cleanly" not in self.log(node_id):
            problems.append(f"nerved {node_id} did not log a clean stop")
        if os.path.exists(self.sock(node_id)):
            problems.append(f"nerved {node_id} left its control socket")
        return problems

    def dpdk_leftovers(self):
        d = "/var/run/dpdk"
        return [f for f in os.listdir(d) if f.startswith(f"nerve-{self.name}-")] if os.path.isdir(d) else []

    def kill_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    def remove(self, keep_dir=False):
        """Kills what still runs, then removes what a killed nerved cannot: its stats region (in
        /dev/shm, outside the directory) and its DPDK runtime directory; and the directory,
        unless `keep_dir` (a failed test's logs)."""
        self.kill_all()
        for i in self.procs:
            try:
                os.unlink(region_path(self.sock(i)))
            except FileNotFoundError:
                pass
            shutil.rmtree(f"/var/run/dpdk/nerve-{self.name}-{i}", ignore_errors=True)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def memif_pair(name, subnet, node_extra="", fault=None, links=1, faults=None, cluster_keys=None):
    """alpha (1, memif server) and beta (2, client) joined by one memif link (or `links`),
    addressed subnet.1 and subnet.2 (198.18.x). `fault`: every port's fault profile (each faults
    what it receives); `faults`: one per link instead (None: none on that link); `cluster_keys`:
    lines for [cluster]."""
    cl = Cluster(name)
    cl.memif = f"{cl.dir}/link.memif"
    sockets = [cl.memif] + [f"{cl.dir}/link{k}.memif" for k in range(1, links)]
    per_link = faults if faults is not None else [fault] * links

    def ports(role, peer):
        return [{"kind": "memif", "socket": s, "role": role, "peers": [peer], **({"fault": f} if f else {})}
                for s, f in zip(sockets, per_link)]
    cl.write(node_toml(1, "alpha", f"{subnet}.1", cl.sock(1), ports("server", 2), node_extra) +
             node_toml(2, "beta", f"{subnet}.2", cl.sock(2), ports("client", 1), node_extra), cluster_keys)
    return cl


def delivered_since(before, after, mtype, prio):
    return after["delivered"][mtype][prio] - before["delivered"][mtype][prio]


def exchange_all(cl, a, b, per_lane, rate=0, timeout=60, reliable=False, timeout_ms=None):
    """per_lane messages of every type and priority from a to b; b must receive every one with
    the digest a sent. Returns b's status after. `rate` paces the sender (kernel-backed links
    have no back-pressure); `reliable` sends them reliably (what a link drops is sent again);
    `timeout_ms`: how long each send may wait for room (nerve-ctl --timeout-ms)."""
    base = cl.status(b)
    sent = {}
    for t in TYPES:
        for prio in range(5):
            r = cl.send(a, b, t, prio, f"{t}-P{prio}-from-{a}", count=per_lane, number=True, no_wait=True, rate=rate,
                        reliable=reliable, timeout_ms=timeout_ms, check_rc=False)
            if r["status"] != "ok" or r["sent"] != per_lane:
                st = {n: cl.status(n) for n in (a, b)}
                links = {n: s["links"] for n, s in st.items()}
                ports = {n: [(p["name"], p["ipackets"], p["imissed"], p["rx_nombuf"]) for p in s["ports"]]
                         for n, s in st.items()}
                rel = {n: [{k: v for k, v in l.items() if v} for l in s["reliable"]] for n, s in st.items()}
                refused = {n: {k: v for k, v in s["counters"]["refused"].items() if v} for n, s in st.items()}
                raise Failure(f"{a}->{b} {t} P{prio}: {r}; links {links}; ports (name, ipackets, imissed, rx_nombuf) "
                              f"{ports}; refused {refused}; reliable {rel}")
            sent[(t, prio)] = r["digest"]

    def all_there():
        st = cl.status(b)
        done = all(delivered_since(base, st, t, p) >= per_lane for t in TYPES for p in range(5))
        return st if done else None
    try:
        st = wait_for(all_there, timeout, f"{b} to receive {per_lane} of each type and lane", interval=0.1)
    except Failure:
        st = cl.status(b)
    for t in TYPES:
        for prio in range(5):
            got = delivered_since(base, st, t, prio)
            digest = (st["digest"][t][prio] - base["digest"][t][prio]) % (1 << 64)
            if got != per_lane or digest != sent[(t, prio)]:
                refused = {k: v for k, v in st["counters"]["refused"].items() if v}
                sender = cl.status(a)
                rel = {n: {k: v for k, v in s["reliable"][prio].items() if v} for n, s in ((a, sender), (b, st))}
                raise Failure(f"{a}->{b} {t} P{prio}: delivered {got}/{per_lane}, digest {digest:#x} vs sent "
                              f"{sent[(t, prio)]:#x}; receiver ports "
                              f"{[(p['name'], p['ipackets'], p['imissed'], p['ierrors']) for p in st['ports']]}, "
                              f"refused {refused}; sender lanes shed {[l['shed'] for l in sender['lanes']]}; "
                              f"reliable P{prio} {rel}")
    return st
