"""Bad config and bad arguments: a clear message naming the problem, exit code 2, nothing left
running and no control socket left behind."""
import os
import subprocess

import harness as h

GOOD_NODE = dict(kind="null", peers=[2])


def nerved(*args):
    return subprocess.run([h.NERVED, *args], capture_output=True, text=True, timeout=60)


def ctl(*args):
    return subprocess.run([h.CTL, *args], capture_output=True, text=True, timeout=60)


def expect(r, code, needle, what):
    h.check(r.returncode == code and needle in r.stderr,
            f"{what}: exit {r.returncode}, says {r.stderr.strip().splitlines()[0] if r.stderr.strip() else '-'!r}")


def run():
    cl = h.Cluster("it-bad")
    good = (h.node_toml(1, "alpha", "198.18.4.1", cl.sock(1), [{"kind": "null", "peers": [2]}]) +
            h.node_toml(2, "beta", "198.18.4.2", cl.sock(2), [{"kind": "null", "peers": [1]}]))

    def config_case(text, needle, what):
        cl.write(text)
        expect(nerved("--config", cl.path, "--node", "1"), 2, needle, f"nerved, {what}")
        expect(ctl("--config", cl.path, "--node", "1", "status"), 2, needle, f"nerve-ctl, {what}")

    config_case(good.replace('ip = "198.18.4.1"\n', ""), "node[0].ip: missing key", "missing key")
    config_case(good.replace("id = 1\n", 'id = "1"\n', 1), "node[0].id: expected an integer, got a string", "wrong type")
    config_case(good.replace('kind = "null"', 'kind = "nic"', 1), "node[0].port[0].kind: unknown port kind 'nic'",
                "unknown port kind")
    config_case(good + "bogus = 1\n", "node[1].port[0].bogus: unknown key", "unknown key")
    config_case(good + "[[node\n", "cluster.toml:", "TOML syntax error")
    config_case(good.replace("peers = [2]", "peers = [5]"), "node 5 is not in the cluster", "unknown peer")

    cl.write(good)
    expect(nerved("--config", cl.path, "--node", "9"), 2, "node 9 is not in", "nerved, unknown node")
    expect(ctl("--config", cl.path, "--node", "9", "status"), 2, "node 9 is not in", "nerve-ctl, unknown node")
    expect(nerved("--config", cl.dir + "/missing.toml", "--node", "1"), 2, "missing.toml", "nerved, missing file")
    expect(nerved("--node", "1"), 2, "--config is required", "nerved, no --config")
    expect(nerved("--config", cl.path, "--node", "one"), 2, "--node", "nerved, non-numeric --node")
    expect(nerved("--config", cl.path, "--node", "1", "--frobnicate"), 2, "frobnicate", "nerved, unknown flag")
    expect(ctl("--config", cl.path, "--node", "1", "send", "--to", "2", "--type", "command", "--priority", "7", "x"),
           2, "--priority", "nerve-ctl, priority out of range")
    expect(ctl("--config", cl.path, "--node", "1", "send", "--to", "2", "--type", "gossip", "--priority", "0", "x"),
           2, "--type", "nerve-ctl, unknown type")
    expect(ctl("--config", cl.path, "--node", "1", "send", "--to", "7", "--type", "alert", "--priority", "0", "x"),
           2, "node 7 is not in", "nerve-ctl, unknown destination")
    expect(ctl("--config", cl.path, "--node", "1"), 2, "subcommand", "nerve-ctl, no subcommand")
    expect(ctl("--config", cl.path, "--node", "1", "status"), 3, "cannot reach nerved", "nerve-ctl, nerved not running")

    left = subprocess.run(["pgrep", "-f", f"nerved --config {cl.path}"], capture_output=True, text=True).stdout
    h.check(left.strip() == "", "no nerved left running")
    h.check(not os.path.exists(cl.sock(1)), "no control socket left behind")
    h.check(not any(f.startswith("nerve-it-bad-") for f in os.listdir("/var/run/dpdk"))
            if os.path.isdir("/var/run/dpdk") else True, "no DPDK runtime directory left behind")


h.main(run)
