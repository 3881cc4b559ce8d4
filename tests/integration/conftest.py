"""Fixtures for the integration tests: clusters of real nerved processes and the network
namespaces they run in, made per test and removed after it (a failed test keeps its cluster
directory, logs included, and names it)."""

import pytest

import nervecluster as nc


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture
def netns():
    """netns(tag) -> a Netns whose namespaces are removed after the test (after its nodes)."""
    made = []

    def make(tag):
        n = nc.Netns(tag)
        made.append(n)
        return n
    yield make
    for n in made:
        n.remove()
        assert not n.left(), f"namespaces left behind: {n.left()}"


@pytest.fixture
def clusters(request, netns):
    """clusters(cluster) registers a Cluster: its nodes are killed after the test if still
    running, and its directory removed when the test passed."""
    made = []

    def keep(cl):
        made.append(cl)
        return cl
    yield keep
    failed = _failed(request)
    for cl in made:
        cl.remove(keep_dir=failed)  # stats regions and DPDK runtime directories go either way
        if failed:
            print(f"logs kept in {cl.dir}")


def assert_clean_stop(cl, ids=None, timeout=30):
    """SIGTERM to the nodes; each must exit 0, log a clean stop and leave nothing behind."""
    codes = cl.stop(ids, timeout)
    problems = [p for i in codes for p in cl.stopped_cleanly(i)]
    assert not problems, f"{problems}\n" + "\n".join(cl.log(i)[-2000:] for i in codes)
    assert not cl.dpdk_leftovers(), f"DPDK runtime directories left: {cl.dpdk_leftovers()}"
