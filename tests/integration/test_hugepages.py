"""The production profile on hugepages: two nodes on a hugetlbfs mount of the test's own,
reserved for the test and released after it. A clean stop leaves no hugepage file behind and
returns every page."""
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

import nervecluster as nc
from conftest import assert_clean_stop

NR = "/proc/sys/vm/nr_hugepages"
PAGES = 256  # 512 MiB of 2 MiB pages: two nodes' pools, memif regions and EAL tables


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


@pytest.fixture
def hugepages():
    if os.geteuid() != 0:
        pytest.skip("reserving hugepages needs root")
    with open(NR) as f:
        before = int(f.read())
    mount = tempfile.mkdtemp(prefix="nerve-huge-")
    nc.sh("mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", mount)
    try:
        with open(NR, "w") as f:
            f.write(str(before + PAGES))
        if meminfo("HugePages_Free") < PAGES:
            pytest.skip("the kernel could not reserve the hugepages")
        yield mount
    finally:
        # Whatever happened (the nodes may still hold pages if the test failed: the mount goes
        # lazily then), the reservation is given back and the mount point removed.
        if subprocess.run(["umount", mount], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mount], capture_output=True)
        with open(NR, "w") as f:
            f.write(str(before))
        try:
            os.rmdir(mount)
        except OSError:
            pass


def test_production_profile_leaves_no_hugepage_file(hugepages, clusters):  # nodes stop before pages go
    extra = f'profile = "production"\nhuge_dir = "{hugepages}"\nmbufs = 2047'
    cl = clusters(nc.memif_pair("it-huge", "198.18.9", node_extra=extra))
    free_before = meminfo("HugePages_Free")
    cl.up()
    st = cl.status(1)
    assert st["node"]["profile"] == "production" and st["node"]["idle"] == "busy", st["node"]
    used = os.listdir(hugepages)
    assert used, "the nodes run on the test's hugepages"
    assert meminfo("HugePages_Free") < free_before
    r = cl.send(1, 2, "command", 0, "ping")
    assert r["status"] == "ok" and r["reply"] == "pong", r
    assert_clean_stop(cl)
    assert os.listdir(hugepages) == [], f"hugepage files left: {os.listdir(hugepages)}"
    assert meminfo("HugePages_Free") == free_before, "every page returned"


def pcapng_packets(path):
    """The frames of a pcapng file (Enhanced Packet Blocks), as bytes."""
    import struct
    data = open(path, "rb").read()
    out, at = [], 0
    order = "<"
    while at + 12 <= len(data):
        btype, blen = struct.unpack_from(order + "II", data, at)
        if btype == 0x0A0D0D0A:  # section header: its byte-order magic decides the rest
            order = "<" if data[at + 8:at + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            btype, blen = struct.unpack_from(order + "II", data, at)
        if blen < 12 or at + blen > len(data):
            break  # a block still being written: read it next time
        if btype == 6:
            caplen = struct.unpack_from(order + "I", data, at + 20)[0]
            out.append(data[at + 28:at + 28 + caplen])
        at += blen
    return out


def test_dpdk_dumpcap_captures_a_running_node(hugepages, clusters, tmp_path):  # nodes stop before pages go
    """DPDK's dpdk-dumpcap attaches to a running production node as a secondary process and
    writes the frames of its port, both ways, to a pcapng file; the node goes on, and still
    stops cleanly afterwards."""
    if not shutil.which("dpdk-dumpcap"):
        pytest.skip("dpdk-dumpcap (package dpdk) is not installed")
    extra = f'profile = "production"\nhuge_dir = "{hugepages}"\nmbufs = 2047'
    cl = clusters(nc.memif_pair("it-cap", "198.18.10", node_extra=extra))
    cl.up()
    out = tmp_path / "alpha.pcapng"
    cap = subprocess.Popen(["dpdk-dumpcap", f"--file-prefix=nerve-{cl.name}-1", "-i", "0", "-a", "duration:20",
                            "-w", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The capture is on once frames reach the file (the heartbeats flow at 1 kHz).
        def capturing():
            if cap.poll() is not None:
                raise nc.Failure(f"dpdk-dumpcap exited {cap.returncode}: {cap.stdout.read()}")
            return out.exists() and len(pcapng_packets(out)) > 10
        nc.wait_for(capturing, 30, "dpdk-dumpcap to write frames")
        for _ in range(3):  # (a busy host may hold a reply up: a generous timeout)
            r = cl.send(2, 1, "command", 0, "echo captured-by-dumpcap", timeout_ms=20000)
            assert r["status"] == "ok" and r["reply"] == "captured-by-dumpcap", r

        def both_ways():
            frames = pcapng_packets(out)
            got = [f for f in frames if b"captured-by-dumpcap" in f]
            return got if len(got) >= 6 else None  # each command in, each response out
        got = nc.wait_for(both_ways, 20, "the commands and their responses in the capture")
        assert all(f[12:14] == b"\x08\x00" for f in got), "IPv4 frames, whole from their Ethernet header"
    finally:
        cap.send_signal(signal.SIGINT)
        try:
            log = cap.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            cap.kill()  # never left attached to the node the fixtures stop next
            log = cap.communicate()[0]
            raise
    assert cap.returncode == 0, log
    assert "Packets captured" in log or "packets" in log.lower(), log
    # The node went on while captured, and afterwards.
    r = cl.send(1, 2, "command", 0, "ping")
    assert r["status"] == "ok" and r["reply"] == "pong", r
    assert_clean_stop(cl)
    assert os.listdir(hugepages) == [], f"hugepage files left: {os.listdir(hugepages)}"
