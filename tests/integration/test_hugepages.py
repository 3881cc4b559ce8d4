"""The production profile on hugepages: two nodes on a hugetlbfs mount of the test's own,
reserved for the test and released after it. A clean stop leaves no hugepage file behind and
returns every page."""
import os
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
        subprocess.run(["umount", mount], capture_output=True)
        os.rmdir(mount)
        with open(NR, "w") as f:
            f.write(str(before))


def test_production_profile_leaves_no_hugepage_file(clusters, hugepages):
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
