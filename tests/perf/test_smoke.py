"""nerve-perf smoke run: every scenario over every transport that runs here (ring, memif,
af_packet and af_xdp across namespaces, kernel UDP), briefly. Checks correctness only, never
speed: the run succeeds, the JSON has the schema perf engineers rely on, counts add up, the
hgrm and SVG outputs are well formed. (The pci transport needs two cabled NIC ports.)"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import pytest

import nervecluster as nc

PERF = nc.PERF
TRANSPORTS = ["ring", "memif", "af_packet", "af_xdp", "kernel-udp"]
SCENARIOS = {
    "pingpong": ["--count", "2000", "--warmup", "100", "--priority", "0,3"],
    "oneway": ["--rate", "20000", "--seconds", "0.1", "--warmup", "100"],
    "throughput": ["--seconds", "0.05", "--sweep", "0.05,0.5", "--size", "64,1024", "--warmup", "100"],
    "isolation": ["--count", "1000", "--warmup", "100", "--background", "4", "--background", "1"],
}
LATENCY_KEYS = ["min", "mean", "p50", "p90", "p99", "p999", "p9999", "max"]


def validate(doc, scenario, transport):
    assert doc.get("tool") == "nerve-perf" and isinstance(doc.get("version"), str) and isinstance(doc.get("commit"), str)
    setup = doc.get("setup", {})
    assert all(k in setup for k in ("cpu", "cores", "numa_node", "dpdk", "date")) and isinstance(setup["cores"], list)
    rows = doc.get("results", [])
    assert len(rows) > 0
    for r in rows:
        assert all(k in r for k in ("scenario", "transport", "priority", "size", "frame_bytes", "count", "lost",
                                    "deadline_misses", "rate_mps", "latency_ns")), r
        assert all(isinstance(r["latency_ns"].get(k), (int, float)) for k in LATENCY_KEYS), r
        lat = r["latency_ns"]
        assert r["count"] > 0 and lat["min"] <= lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"], r
        assert r["frame_bytes"] > r["size"] and r["scenario"] == scenario and r["transport"] == transport, r
        if scenario == "pingpong":
            assert r["lost"] == 0 and r["count"] == 2000, f"every ping answered: {r}"
        if scenario == "isolation":
            bg = r.get("background")
            assert isinstance(bg, dict) and isinstance(bg.get("priorities"), list) and "rate_mps" in bg, bg
    if scenario == "isolation":
        assert [r["background"]["priorities"] for r in rows] == [[], [4], [1]]
        assert all(r["background"]["rate_mps"] > 0 for r in rows[1:]), "floods delivered"
    if scenario == "throughput":
        assert len(rows) == 2 * 3 and sum(1 for r in rows if r.get("max")) == 2, "max + sweep rows per size"


@pytest.fixture
def outdir(request):
    d = tempfile.mkdtemp(prefix="nerve-perf-smoke-")
    yield d
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed:
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"outputs kept in {d}")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_scenario(outdir, scenario, transport):
    out = os.path.join(outdir, f"{scenario}-{transport}")
    r = subprocess.run([PERF, scenario, "--transport", transport, *SCENARIOS[scenario], "--no-progress", "--json",
                        out + ".json", "--hgrm", out + ".hgrm", "--plot", out + ".svg"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    with open(out + ".json") as f:
        validate(json.load(f), scenario, transport)
    with open(out + ".hgrm") as f:
        text = f.read()
    assert "#[Mean" in text and "Percentile" in text, "hgrm blocks"
    svg = ET.parse(out + ".svg").getroot()
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) > 0, "svg lines"


def test_compare_puts_both_transports_in_one_file(outdir):
    out = os.path.join(outdir, "compare.json")
    r = subprocess.run([PERF, "pingpong", "--transport", "memif", "--count", "2000", "--compare", "kernel-udp",
                        "--no-progress", "--json", out], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    with open(out) as f:
        rows = json.load(f)["results"]
    assert [x["transport"] for x in rows] == ["memif", "kernel-udp"]


@pytest.mark.parametrize("args,needle", [
    (["pingpong", "--transport", "memif", "--size", "4"], "--size 4"),
    (["pingpong", "--transport", "carrier-pigeon"], "--transport"),
    (["pingpong", "--transport", "ring", "--count", "0"], "--count"),
    (["pingpong", "--transport", "ring", "--warmup", "-5"], "--warmup"),
    (["pingpong", "--transport", "ring", "--rate", "-1"], "--rate"),
])
def test_bad_arguments_are_refused(args, needle):
    r = subprocess.run([PERF, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def leftovers(pid):
    """What a run with this pid has set up and not yet removed: namespaces, /tmp dirs."""
    ns = [n.split()[0] for n in nc.sh("ip", "netns", "list").stdout.splitlines()
          if n.startswith((f"nvperf-a-{pid}-", f"nvperf-b-{pid}-"))]
    return ns + [f for f in os.listdir("/tmp") if f.startswith(f"nerve-perf-{pid}-")]


def peer_of(pid):
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return r.stdout.split()


def start_long_run():
    """An af_packet pingpong that would run for minutes; returns once its peer is running."""
    p = subprocess.Popen([PERF, "pingpong", "--transport", "af_packet", "--count", "100000000", "--no-progress"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    nc.wait_for(lambda: p.poll() is not None or (len(leftovers(p.pid)) == 3 and peer_of(p.pid)), 30,
                "the long run's namespaces and peer")
    assert p.poll() is None, p.stderr.read()
    return p


def test_interrupt_and_reap():
    # Ctrl-C: the run stops at its next step, removes its peer, namespaces and files, exits 130.
    p = start_long_run()
    assert len(leftovers(p.pid)) == 3
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and "interrupted" in err, err
    assert leftovers(p.pid) == [], "an interrupted run leaves nothing behind"
    # SIGKILL leaves its namespaces and files; the next run removes them.
    p = start_long_run()
    peers = peer_of(p.pid)
    p.kill()
    p.wait()
    # The peer follows (PR_SET_PDEATHSIG).
    nc.wait_for(lambda: not any(os.path.exists(f"/proc/{q}") for q in peers), 30, "the killed run's peer to exit")
    assert len(leftovers(p.pid)) == 3, leftovers(p.pid)
    r = subprocess.run([PERF, "pingpong", "--transport", "ring", "--count", "100", "--warmup", "10", "--no-progress"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "leftover" in r.stderr and leftovers(p.pid) == [], r.stderr
    assert "nvperf" not in nc.sh("ip", "netns", "list").stdout, "no namespaces left behind"


@pytest.mark.parametrize("transport", ["memif", "af_packet"])
def test_floor_rows_side_by_side(outdir, transport):
    """--floor repeats every row on the same kind of port driven by a bare DPDK loop: rows
    alternate nerve, raw, with the same frame length, each complete."""
    out = os.path.join(outdir, f"floor-{transport}.json")
    r = subprocess.run([PERF, "pingpong", "--transport", transport, "--count", "2000", "--warmup", "100", "--size",
                        "64,1024", "--floor", "--no-progress", "--json", out], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    with open(out) as f:
        rows = json.load(f)["results"]
    assert [x["stack"] for x in rows] == ["nerve", "raw", "nerve", "raw"]
    assert [x["size"] for x in rows] == [64, 64, 1024, 1024]
    for nerve, raw in zip(rows[::2], rows[1::2]):
        assert nerve["frame_bytes"] == raw["frame_bytes"]
        assert nerve["count"] == raw["count"] == 2000 and nerve["lost"] == raw["lost"] == 0
    out = os.path.join(outdir, f"floor-tp-{transport}.json")
    r = subprocess.run([PERF, "throughput", "--transport", transport, "--seconds", "0.05", "--sweep", "0.5",
                        "--floor", "--no-progress", "--json", out], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    with open(out) as f:
        rows = json.load(f)["results"]
    assert [x["stack"] for x in rows] == ["nerve", "raw", "nerve", "raw"]
    assert all(x["count"] > 0 for x in rows)


def test_floor_needs_a_dpdk_port():
    r = subprocess.run([PERF, "pingpong", "--transport", "ring", "--floor", "--count", "10"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "--floor" in r.stderr, r.stderr


def test_hops_rows_one_per_path_length(outdir):
    out = os.path.join(outdir, "hops.json")
    r = subprocess.run([PERF, "pingpong", "--transport", "memif", "--hops", "1,2,3", "--count", "2000", "--warmup", "100",
                        "--no-progress", "--json", out], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    with open(out) as f:
        rows = json.load(f)["results"]
    assert [x["hops"] for x in rows] == [1, 2, 3]
    assert all(x["lost"] == 0 and x["count"] == 2000 for x in rows), rows
    r = subprocess.run([PERF, "pingpong", "--transport", "af_packet", "--hops", "2"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--hops" in r.stderr, r.stderr


def test_route_build_times_and_advertisement_traffic(outdir):
    out = os.path.join(outdir, "route.json")
    r = subprocess.run([PERF, "route", "--nodes", "16,128", "--count", "3", "--json", out], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    with open(out) as f:
        rows = json.load(f)["results"]
    assert len(rows) == 2 * 2 * 2  # two shapes, two sizes, with and without trees
    for x in rows:
        assert x["scenario"] == "route" and x["count"] == 3 and x["latency_ns"]["p50"] > 0, x
        rt = x["route"]
        assert rt["nodes"] in (16, 128) or x["transport"] == "leaf-spine", x
        # Flooding: every advertisement crosses 2E - (n - 1) links, every node advertises.
        assert rt["lsa_frames_per_refresh"] == rt["nodes"] * (2 * rt["links"] - rt["nodes"] + 1), x


def test_forward_beside_testpmd(outdir):
    out = os.path.join(outdir, "forward.json")
    r = subprocess.run([PERF, "forward", "--seconds", "0.2", "--rounds", "1", "--json", out], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        rows = json.load(f)["results"]
    assert [x["stack"] for x in rows] == ["nerve", "testpmd-io", "testpmd-macswap"]
    for x in rows:
        assert x["scenario"] == "forward" and x["rate_mps"] > 10000 and x["round"] == 0, x
        assert 0 <= x["lost"] <= x["sent"], x  # a forwarder that loses its core drops (testpmd, nerve's P3 sheds)
        # Each forwarder's own count of busy cycles per frame (nerve's polls, testpmd's
        # --record-core-cycles), read from its output: present and plausible (no forwarder
        # moves a frame in 10 cycles; at 10^6 a core would forward under 5,000 frames/s).
        assert x["tsc_mhz"] > 100 and 10 < x["cycles_per_frame"] < 1e6, x
    assert "% of macswap" in r.stdout and "% of macswap's capacity" in r.stdout
    assert not [d for d in os.listdir("/tmp") if d.startswith("nerve-perf-") and d.endswith("-90")]


def test_multicast_every_member_once(outdir):
    out = os.path.join(outdir, "multicast.json")
    r = subprocess.run([PERF, "multicast", "--members", "8", "--count", "20000", "--json", out], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        (row,) = json.load(f)["results"]
    assert row["multicast"]["members"] == [20000] * 8 and row["multicast"]["duplicates"] == 0, row
    assert row["lost"] == 0 and row["rate_mps"] > 0


def test_service_spread_and_slow_instance(outdir):
    out = os.path.join(outdir, "service.json")
    r = subprocess.run([PERF, "service", "--count", "20000", "--rate", "5000", "--seconds", "0.5", "--json", out],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        rows = json.load(f)["results"]
    assert [(x["service"]["policy"], x["service"]["test"]) for x in rows] == [
        ("round_robin", "spread"), ("hash", "spread"), ("round_robin", "response"), ("least_outstanding", "response")]
    assert rows[0]["service"]["per_instance"] == [5000] * 4 and rows[0]["service"]["chi2"] == 0
    assert sum(rows[1]["service"]["per_instance"]) == 20000 and rows[1]["service"]["chi2_p"] > 0.001, rows[1]
    assert all(x["lost"] == 0 for x in rows), rows
    # One instance takes 1 ms a request (1,000/s): round robin sends it 1,250/s and queues.
    assert rows[3]["latency_ns"]["p99"] < rows[2]["latency_ns"]["p99"], rows[2:]


def test_reliability_through_a_faulty_link(outdir):
    """The proof run of reliable delivery, shortened: 100,000 messages over memif whose ports drop
    1 %, duplicate 0.5 % and reorder 1 % of frames both ways: none lost, none twice, none out of
    order, and the faults were there to repair."""
    out = os.path.join(outdir, "reliability.json")
    r = subprocess.run([PERF, "reliability", "--count", "100000", "--priority", "0,3",
                        "--fault", "drop=0.01,dup=0.005,reorder=0.01,corrupt=0.001", "--json", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        rows = json.load(f)["results"]
    assert [x["priority"] for x in rows] == [0, 3]
    for x in rows:
        assert x["reliable"] and x["sent"] == 100000 and x["count"] == 100000, x
        assert x["lost"] == 0 and x["duplicates"] == 0 and x["reordered"] == 0 and x["failed"] == 0, x
        assert x["faults_injected"] > 1000 and x["retransmits"] > 0, x
        assert x["recovery_ns"]["count"] > 0, x
    # With and without reliable delivery, side by side: both measured, no loss.
    out2 = os.path.join(outdir, "overhead.json")
    r = subprocess.run([PERF, "reliability", "--overhead", "--count", "2000", "--rounds", "1", "--json", out2],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out2) as f:
        rows = json.load(f)["results"]
    assert [(x["stack"], x["reliable"]) for x in rows] == [("unreliable", False), ("reliable", True)], rows
    assert all(x["count"] == 2000 for x in rows), rows


def test_reliability_over_two_paths(outdir):
    """--paths 1,2: the same P0 stream over one link and over two at once, each link losing 2 %
    on its own: both rows exact; over two paths far fewer frames need sending again."""
    out = os.path.join(outdir, "paths.json")
    r = subprocess.run([PERF, "reliability", "--count", "20000", "--priority", "0", "--paths", "1,2", "--rate", "20000",
                        "--fault", "drop=0.02", "--json", out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        one, two = json.load(f)["results"]
    assert (one["paths"], two["paths"]) == (1, 2), (one, two)
    for x in (one, two):
        assert x["lost"] == 0 and x["duplicates"] == 0 and x["reordered"] == 0 and x["failed"] == 0, x
        assert x["count"] == 20000, x
    # One path: about 2 % of the messages (and some acks) sent again. Two: a message is sent
    # again when both copies or its ack were lost.
    assert one["retransmits"] > 200, one
    assert two["retransmits"] < one["retransmits"], (one, two)


@pytest.mark.parametrize("transport", ["ring", "memif"])
def test_reliable_flag_on_other_scenarios(outdir, transport):
    """--reliable sends the probes with reliable delivery: rows say so, and nothing is lost."""
    out = os.path.join(outdir, "reliable.json")
    r = subprocess.run([PERF, "pingpong", "--transport", transport, "--reliable", "--count", "2000", "--warmup", "100",
                        "--json", out], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        (row,) = json.load(f)["results"]
    assert row["reliable"] is True and row["lost"] == 0 and row["count"] == 2000, row


@pytest.mark.parametrize("args,needle", [
    (["pingpong", "--transport", "kernel-udp", "--reliable"], "--reliable"),
    (["reliability", "--fault", "drop=2"], "drop='2'"),
    (["reliability", "--transport", "af_packet"], "--transport"),
    (["reliability", "--paths", "3"], "--paths"),
])
def test_reliability_bad_arguments(args, needle):
    r = subprocess.run([PERF, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


@pytest.mark.parametrize("transport", ["af_packet", "memif"])
def test_failover_reports_the_gap(outdir, transport):
    out = os.path.join(outdir, f"failover-{transport}.json")
    r = subprocess.run([PERF, "failover", "--transport", transport, "--seconds", "1", "--rate", "5000",
                        "--heartbeat-miss", "20", "--json", out], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        (row,) = json.load(f)["results"]
    assert row["scenario"] == "failover" and row["transport"] == transport and row["failover"]["killed"] in (2, 3), row
    # A send the node refuses while its routes change (no route, back-pressure) is counted apart.
    refused = dict(row["failover"]["refused"])
    assert set(refused) <= {"no_route", "backpressure"}, row
    assert row["failover"]["duplicates"] == 0 and row["sent"] + sum(refused.values()) == 5000, row
    assert row["lost"] + sum(refused.values()) < 2500, f"the stream went on around the dead node: {row}"
    # What was lost is split by whether A sent it before the kill or after; A saw its link go down.
    fo = row["failover"]
    assert fo["lost_before_kill"] + fo["lost_after_kill"] == row["lost"], row
    assert all(a < b for a, b in fo["lost_runs_ms"]) and (row["lost"] == 0) == (fo["lost_runs_ms"] == []), row
    assert "refused_at_d" in fo and "refused_at_survivor" in fo, row
    assert fo["detect_ms"] > 0, row
    assert row["latency_ns"]["max"] > 0
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "nvperf-" not in listed, listed
