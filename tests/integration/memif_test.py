"""Two nerved processes joined by net_memif: 10,000 messages of every type and priority each way,
none lost, every payload byte-exact; commands are answered; SIGTERM stops both cleanly."""
import os

import harness as h

PER_LANE = 10000


def run():
    cl = h.memif_pair("it-memif", "198.18.0")
    try:
        cl.up()
        r = cl.send(1, 2, "command", 0, "echo hello fabric")
        h.check(r["status"] == "ok" and r["reply"] == "hello fabric", f"command answered: {r.get('reply')}")
        r = cl.send(2, 1, "request", 2, "cpu=2")
        h.check(r["status"] == "ok" and r["replies"] == 1, "resource request acknowledged")
        h.exchange_all(cl, 1, 2, PER_LANE)
        st = h.exchange_all(cl, 2, 1, PER_LANE)
        h.check(st["counters"]["refused_total"] == 0, "nothing refused")
        h.check(st["lanes"][0]["count"] > 0 and st["lanes"][0]["p50_ns"] > 0, "P0 latency recorded")
        h.check(all(p["lane_mode"] == "paired-queues" for p in st["ports"]), "memif ports pair one queue per lane")
        h.check(all(l["shed"] == 0 and "backpressure" in l and l["budget_ns"] > 0 for l in st["lanes"]),
                "lanes report budget, shed and back-pressure")
        cl.stop()
        h.check(not os.path.exists(cl.memif), "memif socket removed")
    finally:
        cl.kill_all()


h.main(run)
