"""docs/examples/memif-pair.toml, run as its header and the README say: the socket directory,
two nerved, a ping answered, status, SIGTERM; nothing left behind."""
import os
import shutil

import nervecluster as nc
from conftest import assert_clean_stop

EXAMPLE = os.path.join(nc.ROOT, "docs", "examples", "memif-pair.toml")
RUN_DIR = "/tmp/nerve-example"  # where the example puts its sockets


class Example(nc.Cluster):
    def __init__(self):
        super().__init__("example")
        self.path = EXAMPLE

    def sock(self, node_id):
        return os.path.join(RUN_DIR, {1: "alpha", 2: "beta"}[node_id] + ".sock")


def test_the_example_runs_as_documented(clusters):
    os.makedirs(RUN_DIR, exist_ok=True)
    cl = clusters(Example())
    try:
        cl.up()
        r = cl.send(1, 2, "command", 0, "ping")
        assert r["status"] == "ok" and r["reply"] == "pong", r
        st = cl.status(1)
        assert st["node"]["name"] == "alpha" and st["ports"][0]["lane_mode"] == "paired-queues"
        assert_clean_stop(cl)
        assert not os.path.exists(os.path.join(RUN_DIR, "alpha-beta.memif")), "memif socket removed"
    finally:
        shutil.rmtree(RUN_DIR, ignore_errors=True)
