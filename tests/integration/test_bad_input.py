"""Bad config and bad arguments: a clear message naming the problem, the documented exit code,
nothing left running and nothing left on disk."""
import os
import subprocess

import pytest

import nervecluster as nc


def nerved(*args):
    return subprocess.run([nc.NERVED, *args], capture_output=True, text=True, timeout=60)


def ctl(*args):
    return subprocess.run([nc.CTL, *args], capture_output=True, text=True, timeout=60)


def expect(r, code, needle):
    first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else "-"
    assert r.returncode == code and needle in r.stderr, f"exit {r.returncode}, says {first!r}"


@pytest.fixture
def cl(clusters):
    c = clusters(nc.Cluster("it-bad"))
    c.good = (nc.node_toml(1, "alpha", "198.18.4.1", c.sock(1), [{"kind": "null", "peers": [2]}]) +
              nc.node_toml(2, "beta", "198.18.4.2", c.sock(2), [{"kind": "null", "peers": [1]}]))
    yield c
    left = subprocess.run(["pgrep", "-f", f"nerved --config {c.path}"], capture_output=True, text=True).stdout
    assert left.strip() == "", "no nerved left running"
    assert not os.path.exists(c.sock(1)), "no control socket left behind"
    assert not c.dpdk_leftovers(), "no DPDK runtime directory left behind"


CONFIG_CASES = [
    (lambda g: g.replace('ip = "198.18.4.1"\n', ""), "node[0].ip: missing key"),
    (lambda g: g.replace("id = 1\n", 'id = "1"\n', 1), "node[0].id: expected an integer, got a string"),
    (lambda g: g.replace('kind = "null"', 'kind = "nic"', 1), "node[0].port[0].kind: unknown port kind 'nic'"),
    (lambda g: g + "bogus = 1\n", "node[1].port[0].bogus: unknown key"),
    (lambda g: g + "[[node\n", "cluster.toml:"),
    (lambda g: g.replace("peers = [2]", "peers = [5]"), "node 5 is not in the cluster"),
    (lambda g: g.replace("02:00:00:00:00:02", "02:00:00:00:00:01"), "node[1].mac: 02:00:00:00:00:01 is also node[0]'s"),
    (lambda g: g.replace("198.18.4.2", "198.18.4.1"), "node[1].ip: 198.18.4.1 is also node[0]'s"),
    (lambda g: g.replace("198.18.4.1", "255.255.255.255"), "node[0].ip: 255.255.255.255 is not a unicast address"),
]


@pytest.mark.parametrize("edit,needle", CONFIG_CASES, ids=[c[1][:40] for c in CONFIG_CASES])
def test_bad_cluster_files(cl, edit, needle):
    cl.write(edit(cl.good))
    expect(nerved("--config", cl.path, "--node", "1"), 2, needle)
    expect(ctl("--config", cl.path, "--node", "1", "status"), 2, needle)


def test_bad_arguments(cl):
    cl.write(cl.good)
    expect(nerved("--config", cl.path, "--node", "9"), 2, "node 9 is not in")
    expect(ctl("--config", cl.path, "--node", "9", "status"), 2, "node 9 is not in")
    expect(nerved("--config", cl.dir + "/missing.toml", "--node", "1"), 2, "missing.toml")
    expect(nerved("--node", "1"), 2, "--config is required")
    expect(nerved("--config", cl.path, "--node", "one"), 2, "--node")
    expect(nerved("--config", cl.path, "--node", "1", "--frobnicate"), 2, "frobnicate")
    expect(nerved("--config", cl.path, "--node", "1", "--dpdk-log", "pmd.net.memif=debug"), 2, "--dpdk-log: expected COMPONENT:LEVEL")
    expect(nerved("--config", cl.path, "--node", "1", "--dpdk-log", "pmd.net.memif:loud"), 2, "--dpdk-log")
    expect(ctl("--config", cl.path, "--node", "1", "send", "--to", "2", "--type", "command", "--priority", "7", "x"),
           2, "--priority")
    expect(ctl("--config", cl.path, "--node", "1", "send", "--to", "2", "--type", "gossip", "--priority", "0", "x"),
           2, "--type")
    expect(ctl("--config", cl.path, "--node", "1", "send", "--to", "7", "--type", "alert", "--priority", "0", "x"),
           2, "node 7 is not in")
    expect(ctl("--config", cl.path, "--node", "1"), 2, "subcommand")
    expect(ctl("--config", cl.path, "--node", "1", "status"), 3, "cannot reach nerved")


def test_socket_in_a_directory_that_does_not_exist(cl):
    """nerved creates no directories (and so leaves none behind): it names the key instead."""
    missing = os.path.join(cl.dir, "no-such-dir")
    cl.write(cl.good.replace(cl.sock(1), os.path.join(missing, "n1.sock")))
    expect(nerved("--config", cl.path, "--node", "1"), 2, f"node[0].control_socket: directory {missing} does not exist")
    assert not os.path.exists(missing)
    memif = (nc.node_toml(1, "alpha", "198.18.4.1", cl.sock(1),
                          [{"kind": "memif", "socket": os.path.join(missing, "l.memif"), "role": "server", "peers": [2]}]) +
             nc.node_toml(2, "beta", "198.18.4.2", cl.sock(2), [{"kind": "null", "peers": [1]}]))
    cl.write(memif)
    expect(nerved("--config", cl.path, "--node", "1"), 2, "node[0].port[0].socket: directory")
    assert not os.path.exists(missing)


def test_missing_interface_is_named(cl):
    for kind in ("af_packet", "af_xdp"):
        cl.write(nc.node_toml(1, "alpha", "198.18.4.1", cl.sock(1), [{"kind": kind, "iface": "nvnosuch0", "peers": [2]}]) +
                 nc.node_toml(2, "beta", "198.18.4.2", cl.sock(2), [{"kind": "null", "peers": [1]}]))
        expect(nerved("--config", cl.path, "--node", "1"), 1, "interface 'nvnosuch0' does not exist")
