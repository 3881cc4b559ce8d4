"""docs/examples/memif-pair.toml, run as its header and the README say: two nerved, a ping
answered, status, SIGTERM; nothing left behind."""
import os
import shutil

import harness as h

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "examples", "memif-pair.toml")
RUN_DIR = "/tmp/nerve-example"  # where the example puts its sockets


class Example(h.Cluster):
    def __init__(self):
        super().__init__("example")
        self.path = os.path.abspath(EXAMPLE)

    def sock(self, node_id):
        return os.path.join(RUN_DIR, {1: "alpha", 2: "beta"}[node_id] + ".sock")


def run():
    os.makedirs(RUN_DIR, exist_ok=True)  # as the example's header says: nerved creates no directories
    cl = Example()
    try:
        cl.up()
        r = cl.send(1, 2, "command", 0, "ping")
        h.check(r["status"] == "ok" and r["reply"] == "pong", f"the example answers ping: {r.get('reply')}")
        st = cl.status(1)
        h.check(st["node"]["name"] == "alpha" and st["ports"][0]["lane_mode"] == "paired-queues",
                "status shows alpha with a memif port pairing one queue per lane")
        cl.stop()
        h.check(not os.path.exists(os.path.join(RUN_DIR, "alpha-beta.memif")), "memif socket removed")
    finally:
        cl.kill_all()
        shutil.rmtree(RUN_DIR, ignore_errors=True)


h.main(run)
