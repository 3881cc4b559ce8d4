"""Stopping and losing nodes while traffic flows over memif. The memif PMD handles a peer's
going away on the EAL interrupt thread; a node must survive it at any moment: while it polls,
and while it is itself shutting down (in either order), and always exit cleanly."""
import signal

import pytest

import nervecluster as nc
from conftest import assert_clean_stop

ROUNDS = 8


def flowing(cl, a, b, timeout_ms=60000):
    """Bulk sends each way, running in the background; returns once b has received some."""
    sends = [cl.send_async(a, b, "metric", 3, "flow", count=1_000_000, no_wait=True, timeout_ms=timeout_ms),
             cl.send_async(b, a, "metric", 4, "flow", count=1_000_000, no_wait=True, timeout_ms=timeout_ms)]
    base = cl.status(b)["delivered"]["metric"][3]
    nc.wait_for(lambda: cl.status(b)["delivered"]["metric"][3] > base + 1000, 30, "traffic to flow")
    return sends


def reap(sends):
    for s in sends:
        s.communicate(timeout=60)


@pytest.mark.parametrize("order", ["together", "server-first", "client-first"])
def test_stop_while_the_peer_disconnects(clusters, order):
    """Both nodes stop while traffic flows: at once, or one first and the other as soon as the
    first is in its cleanup (it logged "stopping"), so that one side's disconnect lands during
    the other's teardown. Every stop is clean, every round."""
    for rnd in range(ROUNDS):
        cl = clusters(nc.memif_pair(f"it-stop-{order}-{rnd}", "198.18.7"))
        cl.up()
        sends = flowing(cl, 1, 2)
        first, second = {"together": (1, 2), "server-first": (1, 2), "client-first": (2, 1)}[order]
        cl.signal(first, signal.SIGTERM)
        if order != "together":
            nc.wait_for(lambda: "stopping" in cl.log(first), 30, f"nerved {first} to begin stopping")
        cl.signal(second, signal.SIGTERM)
        codes = {i: cl.wait_exit(i) for i in (1, 2)}
        reap(sends)
        problems = [p for i in codes for p in cl.stopped_cleanly(i)]
        assert not problems, f"round {rnd}: {problems}\n{cl.log(1)[-1500:]}\n{cl.log(2)[-1500:]}"
        assert not cl.dpdk_leftovers()


def test_peer_killed_under_traffic_then_back(clusters):
    """The client is killed (SIGKILL) in the middle of bursts, again and again: the server keeps
    running, answers status, takes the client back when it restarts, and stops cleanly."""
    cl = clusters(nc.memif_pair("it-peerloss", "198.18.8"))
    cl.up()
    for rnd in range(ROUNDS):
        # alpha's send ends once its lane has been full for 1 s: nothing drains a dead link.
        sends = flowing(cl, 1, 2, timeout_ms=1000)
        cl.procs[2].kill()
        cl.procs[2].wait()
        reap(sends)
        st = cl.status(1)
        assert cl.procs[1].poll() is None, f"round {rnd}: nerved 1 died with its peer:\n{cl.log(1)[-2000:]}"
        nc.wait_for(lambda: cl.status(1)["ports"][0]["link"] == "down", 10, "the link to go down")
        cl.start(2)
        cl.wait_ready(2)
        nc.wait_for(lambda: cl.status(1)["ports"][0]["link"] == "up", 10, "the link to come back")
        r = cl.send(1, 2, "command", 0, "ping")
        assert r["status"] == "ok" and r["reply"] == "pong", f"round {rnd}: {r}"
        assert st["counters"]["refused_total"] == 0
    assert_clean_stop(cl)


def test_server_killed_then_back_the_client_dials_again(clusters):
    """The server (alpha) is killed (SIGKILL) and started again, twice: the client (beta), which
    keeps running, dials it again once its link has been down 2 s (a memif client dials only
    when its device starts), and the two talk again, without restarting the client."""
    cl = clusters(nc.memif_pair("it-redial", "198.18.10"))
    cl.up()
    for rnd in range(2):
        before = cl.status(2)["ports"][0]["redials"]
        cl.procs[1].kill()
        cl.procs[1].wait()
        nc.wait_for(lambda: cl.status(2)["ports"][0]["link"] == "down", 10, "the client's link to go down")
        cl.start(1)
        cl.wait_ready(1)  # its link up: the client dialled again
        nc.wait_for(lambda: cl.status(2)["ports"][0]["link"] == "up", 10, "the client's link to come back")
        assert cl.status(2)["ports"][0]["redials"] > before, f"round {rnd}: {cl.status(2)['ports'][0]}"
        for a, b in ((2, 1), (1, 2)):
            r = cl.send(a, b, "command", 0, "ping")
            assert r["status"] == "ok" and r["reply"] == "pong", f"round {rnd}, {a} to {b}: {r}"
    assert cl.procs[2].poll() is None, cl.log(2)[-2000:]
    # The server gone for a while: the client dials its dead socket every 2 s (each dial fails,
    # the device stays stopped), and is reached again once the server is back.
    before = cl.status(2)["ports"][0]["redials"]
    cl.procs[1].kill()
    cl.procs[1].wait()
    nc.wait_for(lambda: cl.status(2)["ports"][0]["redials"] >= before + 2, 20, "the client to dial twice more")
    assert cl.status(2)["ports"][0]["link"] == "down"
    # The client stopped while it dials: a clean stop (a redial not yet run is dropped, one
    # running is waited for).
    codes = cl.stop([2])
    problems = cl.stopped_cleanly(2)
    assert codes[2] == 0 and not problems, f"{codes} {problems}\n{cl.log(2)[-2000:]}"
    cl.start(1)
    cl.start(2)
    cl.wait_ready(1)
    cl.wait_ready(2)
    r = cl.send(2, 1, "command", 0, "ping")
    assert r["status"] == "ok" and r["reply"] == "pong", r
    assert_clean_stop(cl)
