"""Two nerved processes joined by net_memif: 10,000 messages of every type and priority each way,
none lost, every payload byte-exact; commands are answered; SIGTERM stops both cleanly."""
import os
import signal
import time

import nervecluster as nc
from conftest import assert_clean_stop

PER_LANE = 10000


def test_memif_two_processes(clusters):
    cl = clusters(nc.memif_pair("it-memif", "198.18.0"))
    cl.up()
    r = cl.send(1, 2, "command", 0, "echo hello fabric")
    assert r["status"] == "ok" and r["reply"] == "hello fabric", r
    r = cl.send(2, 1, "request", 2, "cpu=2")
    assert r["status"] == "ok" and r["replies"] == 1, r
    nc.exchange_all(cl, 1, 2, PER_LANE)
    st = nc.exchange_all(cl, 2, 1, PER_LANE)
    assert st["counters"]["refused_total"] == 0, {k: v for k, v in st["counters"]["refused"].items() if v}
    assert st["lanes"][0]["count"] > 0 and st["lanes"][0]["p50_ns"] > 0, "P0 latency recorded"
    assert all(p["lane_mode"] == "paired-queues" for p in st["ports"]), "memif ports pair one queue per lane"
    assert all(l["shed"] == 0 and "backpressure" in l and l["budget_ns"] > 0 for l in st["lanes"]), st["lanes"]
    assert_clean_stop(cl)
    assert not os.path.exists(cl.memif), "memif socket removed"


def test_a_memif_peer_killed_takes_its_link_down_at_once(clusters):
    """Heartbeats at 100 Hz, down after 1,000 missed (10 s): the survivor's link still goes down
    within a moment of its peer's SIGKILL, from the memif port's own state (the peer's control
    socket closed), and comes up again when the peer is back."""
    cl = clusters(nc.memif_pair("it-carrier", "198.18.7", cluster_keys="heartbeat_hz = 100\nheartbeat_miss = 1000"))
    cl.up()

    def link(node_id):
        return cl.status(node_id)["links"][0]

    deadline = time.monotonic() + 30
    while not (link(1)["up"] and link(1)["heartbeats_rx"] > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link(1)["up"], link(1)
    cl.signal(2, signal.SIGKILL)
    cl.wait_exit(2)
    killed = time.monotonic()
    while link(1)["up"] and time.monotonic() < killed + 5:
        time.sleep(0.01)
    after = time.monotonic() - killed
    l1 = link(1)
    assert not l1["up"] and l1["downs"] == 1, f"{l1} {after:.3f} s after the kill (heartbeats alone: 10 s)"
    cl.start(2)
    cl.wait_ready(2)
    deadline = time.monotonic() + 30
    while not link(1)["up"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link(1)["up"] and link(1)["downs"] == 1, link(1)
    assert_clean_stop(cl)


def test_responses_under_load_are_never_shed(clusters):
    """A counted stream of requests into small lanes: every one is answered, none shed, even
    when the responder's lane is full (it keeps the response and sends it later)."""
    cl = clusters(nc.memif_pair("it-owed", "198.18.6", node_extra="lane_depth = [32, 32, 32, 32, 32]"))
    cl.up()
    r = cl.send(1, 2, "request", 4, "load", count=20000)
    assert r["status"] == "ok" and r["sent"] == 20000 and r["replies"] == 20000, r
    st2 = cl.status(2)
    assert st2["counters"]["replies_failed"] == 0
    assert st2["lanes"][4]["shed"] == 0, st2["lanes"][4]
    assert st2["counters"]["replies_sent"] == 20000
    assert_clean_stop(cl)


def test_reliable_sends_through_a_lossy_link(clusters):
    """nerve-ctl send --reliable over a memif link that drops, duplicates and reorders frames
    both ways: every message of every type and lane arrives once, intact (the digests), and the
    replies come back."""
    cl = clusters(nc.memif_pair("it-lossy", "198.18.7", fault="drop=0.02,dup=0.01,reorder=0.02,lanes=0-4,seed=7"))
    cl.up()
    r = cl.send(1, 2, "command", 0, "echo x", count=500, reliable=True)
    assert r["status"] == "ok" and r["sent"] == 500 and r["replies"] == 500, r
    nc.exchange_all(cl, 1, 2, 2000, reliable=True)
    st = nc.exchange_all(cl, 2, 1, 2000, reliable=True)
    assert st["counters"]["refused_total"] == 0, {k: v for k, v in st["counters"]["refused"].items() if v}
    for node in (1, 2):
        s = cl.status(node)
        rel = s["reliable"]
        assert sum(l["failed"] for l in rel) == 0, f"node {node}: {rel}"
        assert sum(l["retransmits"] + l["fast_retransmits"] for l in rel) > 0, f"node {node}: {rel}"
        assert sum(l["duplicates"] for l in rel) > 0 and sum(l["reordered"] for l in rel) > 0, f"node {node}: {rel}"
        (port,) = s["ports"]
        assert port["fault"]["dropped"] > 0, port["fault"]
    assert_clean_stop(cl)


def test_large_messages_between_processes_through_a_lossy_link(clusters):
    """nerve-ctl send --size: messages of up to 1 MiB, cut into fragments, through a memif link
    that drops, duplicates and reorders frames both ways, arrive whole (the receiver's digest of
    every byte) and are answered; what is too large is refused with the reason."""
    cl = clusters(nc.memif_pair("it-large", "198.18.8", fault="drop=0.01,dup=0.005,reorder=0.01,lanes=0-4,seed=3"))
    cl.up()
    r = cl.send(1, 2, "metric", 3, "large", count=6, number=True, size=1 << 20, timeout_ms=20000)
    assert r["status"] == "ok" and r["sent"] == 6, r
    nc.wait_for(lambda: cl.status(2)["digest"]["metric"][3] == r["digest"], 30, "beta to hold all six, whole")
    r = cl.send(1, 2, "command", 1, "echo", count=3, size=200000, timeout_ms=20000)
    assert r["status"] == "ok" and r["replies"] == 3, r  # requests of 200 kB, answered
    rel = cl.status(2)["reliable"]
    assert rel[3]["joined"] == 6 and rel[1]["joined"] == 3, rel
    assert sum(l["join_aborted"] for l in rel) == 0, rel
    sender = cl.status(1)["reliable"]
    assert sender[3]["split"] == 6 and sender[3]["failed"] == 0, sender
    assert sender[3]["sent"] == 6 * 737, sender  # 1 MiB in fragments of 1,424 bytes, each sent once
    assert sender[3]["retransmits"] + sender[3]["fast_retransmits"] > 0, sender
    too = cl.ctl(1, *cl.send_args(2, "metric", 3, "x", size=2 << 20), check_rc=False)
    assert too.returncode != 0 and "exceeds the cluster's max_message" in too.stderr + too.stdout, too
    bad = cl.ctl(1, "send", "--broadcast", "--size", "5000", "--type", "status", "--priority", "0", "x", check_rc=False)
    assert bad.returncode == 2 and "--size" in bad.stderr, bad.stderr
    assert_clean_stop(cl)


def paths_state(cl):
    """What both nodes say of the two paths, for a failure message."""
    out = {}
    for n in (1, 2):
        st = cl.status(n)
        out[n] = {"delivered_status": st["delivered"]["status"], "paths": st["paths"], "links": st["links"],
                  "refused": {k: v for k, v in st["counters"]["refused"].items() if v},
                  "ports": [(p["ipackets"], p["opackets"], p["imissed"], p["fault"]) for p in st["ports"]],
                  "lanes": [(l["shed"], l["backpressure"]) for l in st["lanes"]]}
    return out


def test_two_paths_between_processes(clusters):
    """nerve-ctl send --paths 2 over two memif links, one of which loses every frame of lane 1:
    every message arrives once, by the other path; on a lane neither link loses, each message's
    second copy is discarded. Status and routes say so."""
    cl = clusters(nc.memif_pair("it-paths", "198.18.9", links=2, faults=["drop=1,lanes=1,seed=5", None]))
    cl.up()
    nc.wait_for(lambda: len(cl.status(1)["links"]) == 2 and all(l["up"] for l in cl.status(1)["links"]), 20,
                "both links up")
    (route,) = nc.wait_for(lambda: [r for r in cl.routes(1)["routes"] if r["two_paths"]] or None, 20,
                           "alpha's table to have two paths to beta")
    assert sorted(p["port"] for p in route["two_paths"]) == [0, 1], route
    r = cl.send(1, 2, "status", 1, "lossy", count=2000, number=True, paths=2, no_wait=True)
    assert r["status"] == "ok" and r["sent"] == 2000, r
    nc.wait_for(lambda: cl.status(2)["delivered"]["status"][1] == 2000, 20, "beta to get 2,000 on P1",
                on_fail=lambda: paths_state(cl))
    st = cl.status(2)
    assert st["digest"]["status"][1] == r["digest"], "the same messages, once each"
    (ch,) = [c for c in st["paths"]["channels"] if c["src"] == 1]
    assert ch["won"] == [0, 2000] and ch["discarded"] == 0, ch  # path 1 (port 0) lost them all
    assert st["ports"][0]["fault"]["dropped"] >= 1000, st["ports"][0]["fault"]
    r = cl.send(1, 2, "status", 2, "clean", count=500, number=True, paths=2, no_wait=True)
    assert r["status"] == "ok" and r["sent"] == 500, r
    nc.wait_for(lambda: cl.status(2)["delivered"]["status"][2] == 500, 20, "beta to get 500 on P2",
                on_fail=lambda: paths_state(cl))
    nc.wait_for(lambda: [c for c in cl.status(2)["paths"]["channels"] if c["src"] == 1][0]["discarded"] == 500, 20,
                "beta to discard the 500 second copies")
    (ch,) = [c for c in cl.status(2)["paths"]["channels"] if c["src"] == 1]
    assert sum(ch["won"]) == 2500, ch
    assert cl.status(1)["paths"]["sent_two"][1:3] == [2000, 500]
    # Two paths to anything but one node is refused before nerved sees it.
    bad = cl.ctl(1, "send", "--broadcast", "--paths", "2", "--type", "status", "--priority", "0", "x",
                 check_rc=False)
    assert bad.returncode == 2 and "--paths" in bad.stderr, bad.stderr
    assert_clean_stop(cl)
