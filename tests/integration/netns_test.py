"""Two nerved processes in two network namespaces joined by a veth pair, over net_af_packet (or
net_af_xdp: pass the kind as argv[1], and the count as argv[2]): 10,000 messages of every type and priority each way, none
lost, payloads byte-exact. The namespaces and the veth pair are the test's own and are removed
afterwards. The veths carry no IP address, so the kernel stays out of the fabric's traffic."""
import os
import signal
import subprocess
import sys
import time

import harness as h



def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


FORGER = r"""
import socket, struct, sys, time
iface = sys.argv[1]
def csum(b):
    s = sum(struct.unpack("!10H", b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def frame(dst_node=1, magic=b"NV", ttl=8, bad_csum=False, cut=None):
    payload = b"forged"
    hdr = magic + bytes([1, 1, 0, 0, ttl, 0]) + struct.pack("<HHH", 2, dst_node, 0) + bytes([0, 1])
    hdr += struct.pack("<IIIIQH", 0, 0, 1, 0, time.time_ns(), len(payload)) + bytes(6)
    udp = struct.pack("!HHHH", 47800, 47800, 8 + len(hdr) + len(payload), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 46 << 2, 20 + len(udp) + len(hdr) + len(payload), 0, 0x4000, 64, 17, 0,
                     bytes([198, 18, 3, 2]), bytes([198, 18, 3, 1]))
    c = csum(ip) ^ (0x1 if bad_csum else 0)
    ip = ip[:10] + struct.pack("!H", c) + ip[12:]
    f = bytes.fromhex("020000000001020000000002") + b"\x08\x00" + ip + udp + hdr + payload
    return f[:cut] if cut else f
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
s.send(frame())                 # a valid frame: accepted
s.send(frame(cut=60))           # truncated
s.send(frame(magic=b"XX"))      # bad magic
s.send(frame(dst_node=7))       # for another node
s.send(frame(bad_csum=True))    # bad IPv4 checksum
s.send(frame(ttl=0))            # TTL expired
"""


def forge(netns, iface, cl):
    """Frames written onto the wire from beta's side by a raw socket, as a rogue host would."""
    before = cl.status(1)
    sh("ip", "netns", "exec", netns, "/usr/bin/python3", "-c", FORGER, iface)
    after = h.settle(cl, 1)
    ref = {k: after["counters"]["refused"][k] - before["counters"]["refused"][k] for k in after["counters"]["refused"]}
    want = {"truncated": 1, "bad_magic": 1, "not_for_us": 1, "bad_ip_checksum": 1, "ttl_expired": 1}
    h.check(all(ref[k] == v for k, v in want.items()) and sum(ref.values()) == 5,
            f"forged frames refused and counted by reason: {dict((k, v) for k, v in ref.items() if v)}")
    got = after["delivered"]["command"][0] - before["delivered"]["command"][0]
    h.check(got == 1, "the one well-formed injected frame was delivered")


def stall(cl, kind):
    """The receiver loses its core (SIGSTOP) while a burst arrives: the kernel ring overflows.
    Every message must be either delivered or counted as missed by the receiving port."""
    burst = 8000
    before = h.settle(cl, 2)
    os.kill(cl.procs[2].pid, signal.SIGSTOP)  # `ip netns exec` execs nerved: same pid
    try:
        r = cl.send(1, 2, "metric", 4, "burst", count=burst, no_wait=True)
        h.check(r["status"] == "ok" and r["sent"] == burst, f"{burst} sent at a stopped receiver")
        time.sleep(0.5)
    finally:
        os.kill(cl.procs[2].pid, signal.SIGCONT)
    after = h.settle(cl, 2)
    got = after["delivered"]["metric"][4] - before["delivered"]["metric"][4]
    missed = sum(p["imissed"] for p in after["ports"]) - sum(p["imissed"] for p in before["ports"])
    h.check(missed > 0 and got + missed == burst,
            f"{kind}: a stopped receiver's overflow is counted: {got} delivered + {missed} missed = {burst}")


def run():
    kind = sys.argv[1] if len(sys.argv) > 1 else "af_packet"
    per_lane = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    tag = f"{os.getpid() % 100000}"
    ns = [f"nerve-a-{tag}", f"nerve-b-{tag}"]
    veth = [f"nva{tag}", f"nvb{tag}"]
    cl = h.Cluster(f"it-{kind.replace('_', '')}")
    try:
        for n in ns:
            sh("ip", "netns", "add", n)
            sh("ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            sh("ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "link", "add", veth[0], "netns", ns[0], "type", "veth", "peer", "name", veth[1], "netns", ns[1])
        for n, v, mac in zip(ns, veth, ["02:00:00:00:00:01", "02:00:00:00:00:02"]):
            sh("ip", "-n", n, "link", "set", v, "address", mac)
            sh("ip", "-n", n, "link", "set", v, "up")
        # Busy-polling, as production nodes on kernel-backed ports run: a receiver that sleeps
        # when idle can miss the start of a burst (there is no back-pressure through the kernel).
        busy = 'idle = "busy"'
        cl.write(h.node_toml(1, "alpha", "198.18.3.1", cl.sock(1),
                             [{"kind": kind, "iface": veth[0], "peers": [2], "rx_desc": 4096}], busy) +
                 h.node_toml(2, "beta", "198.18.3.2", cl.sock(2),
                             [{"kind": kind, "iface": veth[1], "peers": [1], "rx_desc": 4096}], busy))
        cl.up(netns=ns)
        r = cl.send(1, 2, "command", 0, "ping")
        h.check(r["status"] == "ok" and r["reply"] == "pong", f"ping across namespaces over {kind}: {r.get('reply')}")
        # Paced: the kernel gives no back-pressure, and a receiver that loses its core while
        # an unpaced burst arrives overflows its ring (counted as imissed; see stall()).
        h.exchange_all(cl, 1, 2, per_lane, rate=50000)
        st = h.exchange_all(cl, 2, 1, per_lane, rate=50000)
        h.check(st["counters"]["refused_total"] == 0, f"nothing refused ({st['counters']['refused']})")
        h.check(all(p["lane_mode"] == "software" for p in st["ports"]), f"{kind} ports classify lanes in software")
        forge(ns[1], veth[1], cl)
        stall(cl, kind)
        cl.stop()
    finally:
        cl.kill_all()
        for n in ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    h.check(all(n not in left for n in ns), "namespaces removed")


h.main(run)
