"""nerve-perf smoke run: every scenario over every transport that runs here (ring, memif,
af_packet and af_xdp across namespaces, kernel UDP), briefly. Checks correctness only, never
speed: the run succeeds, the JSON has the schema perf engineers rely on, counts add up, the
hgrm and SVG outputs are well formed. (The pci transport needs two cabled NIC ports.)"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

BUILD = os.environ.get("NERVE_BUILD", "build")
PERF = os.path.join(BUILD, "perf", "nerve-perf")
TRANSPORTS = ["ring", "memif", "af_packet", "af_xdp", "kernel-udp"]
SCENARIOS = {
    "pingpong": ["--count", "2000", "--warmup", "100", "--priority", "0,3"],
    "oneway": ["--rate", "20000", "--seconds", "0.1", "--warmup", "100"],
    "throughput": ["--seconds", "0.05", "--sweep", "0.05,0.5", "--size", "64,1024", "--warmup", "100"],
    "isolation": ["--count", "1000", "--warmup", "100", "--background", "4", "--background", "1"],
}
LATENCY_KEYS = ["min", "mean", "p50", "p90", "p99", "p999", "p9999", "max"]
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)


def validate(doc, scenario, transport):
    check(doc.get("tool") == "nerve-perf" and isinstance(doc.get("version"), str) and isinstance(doc.get("commit"), str),
          f"{scenario}/{transport}: tool, version, commit")
    setup = doc.get("setup", {})
    check(all(k in setup for k in ("cpu", "cores", "numa_node", "dpdk", "date")) and isinstance(setup["cores"], list),
          f"{scenario}/{transport}: setup keys")
    rows = doc.get("results", [])
    check(len(rows) > 0, f"{scenario}/{transport}: has results")
    for r in rows:
        ok = all(k in r for k in ("scenario", "transport", "priority", "size", "frame_bytes", "count", "lost",
                                  "deadline_misses", "rate_mps", "latency_ns"))
        ok = ok and all(isinstance(r["latency_ns"].get(k), (int, float)) for k in LATENCY_KEYS)
        lat = r["latency_ns"]
        ok = ok and r["count"] > 0 and lat["min"] <= lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
        ok = ok and r["frame_bytes"] > r["size"] and r["scenario"] == scenario and r["transport"] == transport
        check(ok, f"{scenario}/{transport} P{r.get('priority')} {r.get('size')}B: schema, count {r.get('count')}, "
                  f"ordered percentiles")
        if scenario == "pingpong":
            check(r["lost"] == 0 and r["count"] == 2000, f"{scenario}/{transport}: every ping answered")
        if scenario == "isolation":
            bg = r.get("background")
            check(isinstance(bg, dict) and isinstance(bg.get("priorities"), list) and "rate_mps" in bg,
                  f"isolation/{transport}: background {bg}")
    if scenario == "isolation":
        check([r["background"]["priorities"] for r in rows] == [[], [4], [1]], f"isolation/{transport}: idle, P4, P1 rows")
        check(all(r["background"]["rate_mps"] > 0 for r in rows[1:]), f"isolation/{transport}: floods delivered")
    if scenario == "throughput":
        check(len(rows) == 2 * 3 and sum(1 for r in rows if r.get("max")) == 2, f"throughput/{transport}: max + sweep rows per size")


def leftovers(pid):
    """What a run with this pid has set up and not yet removed: namespaces, /tmp dirs."""
    ns = [n.split()[0] for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
          if n.startswith((f"nvperf-a-{pid}-", f"nvperf-b-{pid}-"))]
    return ns + [f for f in os.listdir("/tmp") if f.startswith(f"nerve-perf-{pid}-")]


def start_long_run():
    """An af_packet pingpong that would run for minutes; returns once its namespaces exist."""
    p = subprocess.Popen([PERF, "pingpong", "--transport", "af_packet", "--count", "100000000", "--no-progress"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and len(leftovers(p.pid)) < 3 and p.poll() is None:
        time.sleep(0.1)
    time.sleep(1)  # under way
    return p


def interrupt_and_reap():
    # Ctrl-C: the run stops at its next step, removes its peer, namespaces and files, exits 130.
    p = start_long_run()
    check(len(leftovers(p.pid)) == 3, f"a long af_packet run set up {leftovers(p.pid)}")
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        err = "did not stop"
    check(p.returncode == 130 and "interrupted" in err, f"SIGINT stops a run with exit 130: {p.returncode} {err.strip()[:100]}")
    check(leftovers(p.pid) == [], f"an interrupted run leaves nothing behind: {leftovers(p.pid)}")
    # SIGKILL leaves its namespaces and files; the next run removes them.
    p = start_long_run()
    p.kill()
    p.wait()
    time.sleep(0.5)  # the peer goes too (PR_SET_PDEATHSIG)
    check(len(leftovers(p.pid)) == 3, f"a killed run left {leftovers(p.pid)}")
    r = subprocess.run([PERF, "pingpong", "--transport", "ring", "--count", "100", "--warmup", "10", "--no-progress"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and "leftover" in r.stderr and leftovers(p.pid) == [],
          f"the next run removes a killed run's leftovers: {r.stderr.strip()[:100]} {leftovers(p.pid)}")


def main():
    d = tempfile.mkdtemp(prefix="nerve-perf-smoke-")
    for scenario, args in SCENARIOS.items():
        for t in TRANSPORTS:
            out = os.path.join(d, f"{scenario}-{t}")
            r = subprocess.run([PERF, scenario, "--transport", t, *args, "--no-progress", "--json", out + ".json",
                                "--hgrm", out + ".hgrm", "--plot", out + ".svg"],
                               capture_output=True, text=True, timeout=180)
            check(r.returncode == 0, f"{scenario}/{t}: exit {r.returncode} {r.stderr.strip()[-300:]}")
            if r.returncode != 0:
                continue
            with open(out + ".json") as f:
                validate(json.load(f), scenario, t)
            with open(out + ".hgrm") as f:
                text = f.read()
            check("#[Mean" in text and "Percentile" in text, f"{scenario}/{t}: hgrm blocks")
            svg = ET.parse(out + ".svg").getroot()
            lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
            check(len(lines) > 0, f"{scenario}/{t}: svg with {len(lines)} lines")
    # --compare puts both transports' rows in one file.
    out = os.path.join(d, "compare.json")
    r = subprocess.run([PERF, "pingpong", "--transport", "memif", "--count", "2000", "--compare", "kernel-udp",
                        "--no-progress", "--json", out], capture_output=True, text=True, timeout=180)
    check(r.returncode == 0, f"pingpong --compare kernel-udp: exit {r.returncode}")
    if r.returncode == 0:
        with open(out) as f:
            rows = json.load(f)["results"]
        check([x["transport"] for x in rows] == ["memif", "kernel-udp"], "compare: memif and kernel-udp rows in one file")
    # Bad arguments: a clear refusal, exit 2.
    r = subprocess.run([PERF, "pingpong", "--transport", "memif", "--size", "4"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "--size 4" in r.stderr, f"a payload too small is refused: {r.stderr.strip()}")
    r = subprocess.run([PERF, "pingpong", "--transport", "carrier-pigeon"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "--transport" in r.stderr, "an unknown transport is refused")
    for bad, opt in ((["--count", "0"], "--count"), (["--warmup", "-5"], "--warmup"), (["--rate", "-1"], "--rate")):
        r = subprocess.run([PERF, "pingpong", "--transport", "ring", *bad], capture_output=True, text=True, timeout=60)
        check(r.returncode == 2 and opt in r.stderr, f"{' '.join(bad)} is refused: {r.stderr.strip()[:80]}")
    interrupt_and_reap()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    check("nvperf" not in left, "no namespaces left behind")
    print(f"{len(failures)} failure(s)")
    if failures:
        print(f"outputs kept in {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)
    sys.exit(1 if failures else 0)


main()
