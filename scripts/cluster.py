"""A cluster described by a topology file, on one host: each node in its own network namespace,
a link per [[link]] of the file (a veth pair driven by af_packet or af_xdp, or a memif link),
nerved in each. Run through scripts/cluster.sh:

    scripts/cluster.sh up FILE        # make everything, start the nodes, wait for the links
    scripts/cluster.sh status FILE    # per node: process, links, routes, traffic
    scripts/cluster.sh kill FILE ID   # SIGKILL one node (a failure, for trying failover)
    scripts/cluster.sh start FILE ID  # start a node again
    scripts/cluster.sh down FILE      # stop every node, remove what `up` made

The topology file (docs/examples/topologies/*.toml, docs/operations.md "Clusters on one host"):

    [topology]
    name = "chain"            # names the namespaces, the state directory and the cluster
    link = "af_packet"        # af_packet, af_xdp or memif: how links are made (default af_packet)
    namespaces = true         # each node in a network namespace of its own (memif may say false)
    metrics_port = 9460       # node N's sidecar serves /metrics on 127.0.0.1:(9460+N); 0: no sidecars

    [cluster]                 # copied into the cluster file: heartbeats, ttl, route metrics ...

    [[node]]                  # id and name; any other node key (idle, lane_depth ...) is copied
    id = 1
    name = "a"

    [[link]]
    nodes = [1, 2]            # kind = "memif" etc. overrides the default for one link

    [[group]] / [[service]]   # copied as they are
    [telemetry]               # copied: the sidecars' tiers (docs/operations.md "Telemetry")

Beside each nerved runs its telemetry sidecar, nerve-telemetry (outside the namespaces: it reads
the node's stats region in /dev/shm and serves /metrics on the host's loopback).

`up` writes the cluster file nerved runs from into the state directory
($NERVE_CLUSTER_DIR, default /tmp, then nerve-cluster-NAME/cluster.toml) and prints it: give it
to nerve-ctl. Nodes back off when idle so that many share a few cores, and a link is declared
down after 100 missed heartbeats (100 ms) unless the file's [cluster] says otherwise: a node
that loses its core for a few milliseconds is not dead. Exit codes: 0 done, 1 a node failed to
start or is not healthy, 2 a bad topology or cluster file (nothing started).
"""
import json
import os
import signal
import subprocess
import sys
import time
import tomllib

import nervecluster as nc

KINDS = ("af_packet", "af_xdp", "memif")
NODE_DEFAULTS = {"idle": "backoff", "memory_mb": 256, "busy_lanes": []}


class BadInput(Exception):
    pass


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise BadInput(f"cannot copy value {v!r} into the cluster file")


def toml_table(header, table):
    lines = [header]
    for k, v in table.items():
        if isinstance(v, dict):
            raise BadInput(f"{header} {k}: nested tables are not copied")
        lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


class Topology:
    def __init__(self, path):
        try:
            with open(path, "rb") as f:
                t = tomllib.load(f)
        except OSError as e:
            raise BadInput(f"{path}: {e.strerror}")
        except tomllib.TOMLDecodeError as e:
            raise BadInput(f"{path}: not TOML: {e}")
        self.path = path
        top = t.get("topology", {})
        self.name = top.get("name", "")
        if not isinstance(self.name, str) or not self.name or not self.name.replace("-", "").isalnum() or len(self.name) > 12:
            raise BadInput(f"{path}: [topology] name: 1-12 letters, digits or '-', got {self.name!r}")
        self.kind = top.get("link", "af_packet")
        if self.kind not in KINDS:
            raise BadInput(f"{path}: [topology] link: one of {', '.join(KINDS)}, got {self.kind!r}")
        self.namespaces = top.get("namespaces", True)
        self.metrics_port = top.get("metrics_port", 9460)
        if not isinstance(self.metrics_port, int) or not (self.metrics_port == 0 or 1024 <= self.metrics_port <= 60000):
            raise BadInput(f"{path}: [topology] metrics_port: 0 or 1024..60000, got {self.metrics_port!r}")
        self.telemetry = dict(t.get("telemetry", {}))
        self.cluster_keys = dict(t.get("cluster", {}))
        self.cluster_keys.pop("name", None)
        self.cluster_keys.setdefault("heartbeat_miss", 100)
        self.groups = t.get("group", [])
        self.services = t.get("service", [])
        self.nodes = {}
        for i, n in enumerate(t.get("node", [])):
            nid = n.get("id")
            if not isinstance(nid, int) or not 1 <= nid <= 4000:
                raise BadInput(f"{path}: node[{i}].id: an integer in 1..4000, got {nid!r}")
            if nid in self.nodes:
                raise BadInput(f"{path}: node[{i}].id: node {nid} is listed twice")
            self.nodes[nid] = dict(n)
        if not self.nodes:
            raise BadInput(f"{path}: no [[node]]")
        self.links = []
        seen = set()
        for i, l in enumerate(t.get("link", [])):
            ends = l.get("nodes")
            if not isinstance(ends, list) or len(ends) != 2:
                raise BadInput(f"{path}: link[{i}].nodes: two node ids, got {ends!r}")
            for e in ends:
                if e not in self.nodes:
                    raise BadInput(f"{path}: link[{i}]: node {e} is not in the file")
            a, b = sorted(ends)
            if a == b:
                raise BadInput(f"{path}: link[{i}]: a link from node {a} to itself")
            if (a, b) in seen:
                raise BadInput(f"{path}: link[{i}]: nodes {a} and {b} are already linked")
            seen.add((a, b))
            kind = l.get("kind", self.kind)
            if kind not in KINDS:
                raise BadInput(f"{path}: link[{i}].kind: one of {', '.join(KINDS)}, got {kind!r}")
            self.links.append((a, b, kind))
        if not self.namespaces and any(k != "memif" for _, _, k in self.links):
            raise BadInput(f"{path}: namespaces = false works with memif links only")
        self.dir = os.path.join(os.environ.get("NERVE_CLUSTER_DIR", "/tmp"), f"nerve-cluster-{self.name}")
        self.cluster_file = os.path.join(self.dir, "cluster.toml")
        self.state_file = os.path.join(self.dir, "state.json")

    def ns(self, nid):
        return f"nv-{self.name}-{nid}" if self.namespaces else None

    @staticmethod
    def mac(nid):
        return f"02:4e:56:00:{nid >> 8:02x}:{nid & 0xff:02x}"

    @staticmethod
    def ip(nid):
        return f"198.19.{nid // 250}.{nid % 250 + 1}"

    @staticmethod
    def iface(peer):
        return f"nv{peer}"

    def sock(self, nid):
        return os.path.join(self.dir, f"n{nid}.sock")

    def cluster_toml(self):
        out = [toml_table("[cluster]", {"name": self.name, **self.cluster_keys})]
        for nid, n in sorted(self.nodes.items()):
            keys = {"id": nid, "name": n.get("name", f"n{nid}"), "mac": self.mac(nid), "ip": self.ip(nid),
                    "control_socket": self.sock(nid)}
            if self.metrics_port:
                keys["metrics_listen"] = self.metrics_listen(nid)
            keys.update({k: v for k, v in NODE_DEFAULTS.items() if k not in n})
            keys.update({k: v for k, v in n.items() if k not in ("id", "name")})
            text = toml_table("[[node]]", keys)
            for a, b, kind in self.links:
                if nid not in (a, b):
                    continue
                peer = b if nid == a else a
                if kind == "memif":
                    port = {"kind": "memif", "socket": os.path.join(self.dir, f"l{a}-{b}.memif"),
                            "role": "server" if nid == a else "client", "peers": [peer]}
                else:
                    port = {"kind": kind, "iface": self.iface(peer), "rx_desc": 4096, "peers": [peer]}
                text += "  " + toml_table("[[node.port]]", port).replace("\n", "\n  ").rstrip() + "\n"
            out.append(text)
        for g in self.groups:
            out.append(toml_table("[[group]]", g))
        for s in self.services:
            out.append(toml_table("[[service]]", s))
        if self.telemetry:
            out.append(toml_table("[telemetry]", self.telemetry))
        return "\n".join(out)

    def metrics_listen(self, nid):
        return f"127.0.0.1:{self.metrics_port + nid}"


def load_state(topo):
    try:
        with open(topo.state_file) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_state(topo, state):
    with open(topo.state_file + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(topo.state_file + ".tmp", topo.state_file)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def start_node(topo, state, nid):
    log = open(os.path.join(topo.dir, f"nerved-{nid}.log"), "a")
    cmd = [nc.NERVED, "--config", topo.cluster_file, "--node", str(nid)]
    if topo.ns(nid):
        cmd = ["ip", "netns", "exec", topo.ns(nid)] + cmd
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state["pids"][str(nid)] = p.pid
    save_state(topo, state)
    return p


def start_sidecar(topo, state, nid):
    """nerve-telemetry for node nid: waits for the node's region, follows it across restarts."""
    if not topo.metrics_port:
        return None
    log = open(os.path.join(topo.dir, f"telemetry-{nid}.log"), "a")
    cmd = [nc.TELEMETRY, "--config", topo.cluster_file, "--node", str(nid)]
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state.setdefault("sidecars", {})[str(nid)] = p.pid
    save_state(topo, state)
    return p


def ctl_status(topo, nid):
    r = subprocess.run([nc.CTL, "--config", topo.cluster_file, "--node", str(nid), "--json", "status"],
                       capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout) if r.returncode == 0 else None


def healthy(topo, nid):
    st = ctl_status(topo, nid)
    return st is not None and all(l["up"] for l in st["links"]) and len(st["links"]) == sum(
        nid in (a, b) for a, b, _ in topo.links)


def log_tail(topo, nid, lines=15, kind="nerved"):
    try:
        with open(os.path.join(topo.dir, f"{kind}-{nid}.log")) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def up(topo):
    if load_state(topo) is not None:
        raise BadInput(f"cluster {topo.name} is already up ({topo.dir}); `cluster.sh down {topo.path}` first")
    if topo.namespaces and os.geteuid() != 0:
        raise BadInput("network namespaces need root (or namespaces = false with memif links)")
    os.makedirs(topo.dir, exist_ok=True)
    with open(topo.cluster_file, "w") as f:
        f.write(topo.cluster_toml())
    # The cluster file as nerved reads it: groups, services, ttl, static routes ... Nothing is
    # made before it passes.
    r = subprocess.run([nc.NERVED, "--config", topo.cluster_file, "--node", str(min(topo.nodes)), "--check"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        err = r.stderr.strip().replace(topo.cluster_file, topo.path + " (as a cluster file)")
        subprocess.run(["rm", "-rf", topo.dir])
        raise BadInput(err)
    state = {"namespaces": [], "pids": {}}
    save_state(topo, state)
    t0 = time.monotonic()
    for nid in sorted(topo.nodes):
        if topo.ns(nid):
            ns = topo.ns(nid)
            nc.sh("ip", "netns", "add", ns)
            state["namespaces"].append(ns)
            save_state(topo, state)
            for key in ("all", "default"):
                nc.sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
            nc.sh("ip", "-n", ns, "link", "set", "lo", "up")
    for a, b, kind in topo.links:
        if kind == "memif":
            continue
        # Made inside the namespaces: the names only need to be unique there.
        nc.sh("ip", "link", "add", "nvtmp-a", "netns", topo.ns(a), "type", "veth", "peer", "name", "nvtmp-b",
              "netns", topo.ns(b))
        for nid, tmp, peer in ((a, "nvtmp-a", b), (b, "nvtmp-b", a)):
            nc.sh("ip", "-n", topo.ns(nid), "link", "set", tmp, "name", topo.iface(peer))
            nc.sh("ip", "-n", topo.ns(nid), "link", "set", topo.iface(peer), "address", topo.mac(nid), "up")
    procs = {nid: start_node(topo, state, nid) for nid in sorted(topo.nodes)}
    sidecars = {nid: start_sidecar(topo, state, nid) for nid in sorted(topo.nodes)}
    deadline = time.monotonic() + 60 + 2 * len(topo.nodes)
    waiting = set(topo.nodes)
    while waiting and time.monotonic() < deadline:
        for nid in sorted(waiting):
            if procs[nid].poll() is not None:
                print(f"cluster {topo.name}: node {nid} exited with {procs[nid].returncode}:\n{log_tail(topo, nid)}",
                      file=sys.stderr)
                down(topo, quiet=True)
                return 1
            if sidecars[nid] is not None and sidecars[nid].poll() is not None:
                # The node runs without it (an address in use, say): said, not fatal.
                print(f"cluster {topo.name}: warning: the sidecar of node {nid} exited with "
                      f"{sidecars[nid].returncode}; the node runs without telemetry:\n"
                      f"{log_tail(topo, nid, kind='telemetry')}", file=sys.stderr)
                sidecars[nid] = None
            if healthy(topo, nid):
                waiting.discard(nid)
        time.sleep(0.1)
    if waiting:
        print(f"cluster {topo.name}: nodes {sorted(waiting)} did not bring all their links up in time", file=sys.stderr)
        for nid in sorted(waiting):
            print(f"--- node {nid}:\n{log_tail(topo, nid)}", file=sys.stderr)
        down(topo, quiet=True)
        return 1
    print(f"cluster {topo.name} up: {len(topo.nodes)} nodes, {len(topo.links)} links, in "
          f"{time.monotonic() - t0:.1f} s")
    print(f"  cluster file: {topo.cluster_file}")
    print(f"  try: {nc.CTL} --config {topo.cluster_file} --node {min(topo.nodes)} routes")
    if topo.metrics_port:
        print(f"  metrics: http://{topo.metrics_listen(min(topo.nodes))}/metrics (node N: port "
              f"{topo.metrics_port}+N)")
    return 0


def status(topo):
    state = load_state(topo)
    if state is None:
        print(f"cluster {topo.name} is not up")
        return 1
    ok = True
    print(f"cluster {topo.name} ({topo.cluster_file})")
    print(f"  {'node':>5} {'name':<10} {'process':<8} {'links up':>9} {'routes':>7} {'delivered':>10} "
          f"{'forwarded':>10} {'refused':>8}  sidecar")
    for nid in sorted(topo.nodes):
        pid = state["pids"].get(str(nid))
        running = pid is not None and alive(pid)
        st = ctl_status(topo, nid) if running else None
        name = topo.nodes[nid].get("name", f"n{nid}")
        if st is None:
            ok = False
            print(f"  {nid:>5} {name:<10} {'running' if running else 'stopped':<8} {'-':>9}")
            continue
        sc = state.get("sidecars", {}).get(str(nid))
        sidecar = (f"http://{topo.metrics_listen(nid)}/metrics" if sc and alive(sc) else "stopped") \
            if topo.metrics_port else "-"
        ok &= sidecar != "stopped"
        up_n = sum(l["up"] for l in st["links"])
        ok &= up_n == len(st["links"])
        routes = st["routing"]["db_size"]
        delivered = sum(sum(v) for v in st["delivered"].values())
        forwarded = sum(st["forwarded"]["lanes"])
        links = f"{up_n}/{len(st['links'])}"
        print(f"  {nid:>5} {name:<10} {'running':<8} {links:>9} {routes:>7} {delivered:>10} "
              f"{forwarded:>10} {st['counters']['refused_total']:>8}  {sidecar}")
    return 0 if ok else 1


def kill(topo, nid):
    state = load_state(topo)
    pid = state and state["pids"].get(str(nid))
    if not pid or not alive(pid):
        raise BadInput(f"node {nid} of cluster {topo.name} is not running")
    os.kill(pid, signal.SIGKILL)
    return 0


def start(topo, nid):
    state = load_state(topo)
    if state is None:
        raise BadInput(f"cluster {topo.name} is not up")
    if nid not in topo.nodes:
        raise BadInput(f"node {nid} is not in {topo.path}")
    pid = state["pids"].get(str(nid))
    if pid and alive(pid):
        raise BadInput(f"node {nid} is running")
    # What a killed node left: its DPDK runtime files, its control socket.
    subprocess.run(["rm", "-rf", f"/var/run/dpdk/nerve-{topo.name}-{nid}", topo.sock(nid)])
    start_node(topo, state, nid)
    sc = state.get("sidecars", {}).get(str(nid))
    if not (sc and alive(sc)):
        start_sidecar(topo, state, nid)  # a running one follows the node to its new region
    nc.wait_for(lambda: healthy(topo, nid), 60, f"node {nid} to come up with its links", interval=0.1)
    return 0


def down(topo, quiet=False):
    state = load_state(topo)
    if state is None:
        if not quiet:
            print(f"cluster {topo.name} is not up")
        return 0
    pids = [p for p in list(state["pids"].values()) + list(state.get("sidecars", {}).values()) if alive(p)]
    for p in pids:
        os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in pids:
        if alive(p):
            print(f"cluster {topo.name}: pid {p} did not stop on SIGTERM; killed", file=sys.stderr)
            os.kill(p, signal.SIGKILL)
    for ns in state["namespaces"]:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for nid in topo.nodes:
        # A killed node's runtime files and stats region (one stopped cleanly removed its own).
        subprocess.run(["rm", "-rf", f"/var/run/dpdk/nerve-{topo.name}-{nid}", nc.region_path(topo.sock(nid))])
    subprocess.run(["rm", "-rf", topo.dir])
    if not quiet:
        print(f"cluster {topo.name} down: {len(state['pids'])} nodes stopped (and their sidecars), {len(state['namespaces'])} namespaces removed")
    return 0


USAGE = "usage: cluster.sh up|status|down FILE | kill|start FILE NODE"


def main(argv):
    if len(argv) < 2 or argv[0] not in ("up", "status", "down", "kill", "start"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        topo = Topology(argv[1])
        if argv[0] in ("kill", "start"):
            if len(argv) != 3 or not argv[2].isdigit():
                raise BadInput(USAGE)
            nid = int(argv[2])
            return kill(topo, nid) if argv[0] == "kill" else start(topo, nid)
        return {"up": up, "status": status, "down": down}[argv[0]](topo)
    except BadInput as e:
        print(f"cluster.sh: {e}", file=sys.stderr)
        return 2
    except nc.Failure as e:
        print(f"cluster.sh: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
