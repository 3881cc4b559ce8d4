"""Bad requests on a running nerved's control socket: every one gets a clear {"error": ...}
naming the problem and is counted (counters.control_refused); the daemon keeps serving, and
stops cleanly afterwards, however its connections are left."""
import json
import signal
import socket
import threading
import subprocess

import pytest

import nervecluster as nc
from conftest import assert_clean_stop


def call(sock_path, raw):
    """Sends one raw request line and returns the decoded reply (None if the connection closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock_path)
        s.sendall(raw if isinstance(raw, bytes) else raw.encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf += chunk
        return json.loads(buf)


SEND = {"op": "send", "to": 2, "type": "metric", "priority": 3, "payload": "x"}

BAD = [
    (b"this is not json\n", "request is not JSON"),
    (b"\xff\xfe\x00\x01garbage\n", "request is not JSON"),
    (b"[1, 2, 3]\n", "request must be a JSON object"),
    (b'{"op": 5}\n', "op: expected a string"),
    (b'{"op": "launch"}\n', "unknown op 'launch'"),
    (dict(SEND, priority="0"), "priority: expected an integer in 0..4"),
    (dict(SEND, priority=9), "priority: expected an integer in 0..4"),
    (dict(SEND, count=-1), "count: expected an integer in 1..100000000"),
    (dict(SEND, count=10 ** 15), "count: expected an integer in 1..100000000"),
    (dict(SEND, count=2 ** 64 - 1), "count: expected an integer in 1..100000000"),
    (dict(SEND, timeout_ms=0), "timeout_ms: expected an integer in 1..3600000"),
    (dict(SEND, rate=-5), "rate: expected a number in 0..1000000000"),
    (dict(SEND, number="yes"), "number: expected true or false"),
    (dict(SEND, payload=17), "payload: expected a string"),
    (dict(SEND, type="gossip"), "type: unknown message type 'gossip'"),
    (dict(SEND, to=70000), "to: expected an integer in 1..65534"),
    ({k: v for k, v in SEND.items() if k != "priority"}, "priority: required"),
    ({k: v for k, v in SEND.items() if k != "to"}, "one of to (a node id), group"),
    ({**SEND, "group": 5}, "one of to (a node id), group"),
    ({**{k: v for k, v in SEND.items() if k != "to"}, "group": 999}, "group: no group 999"),
    ({**{k: v for k, v in SEND.items() if k != "to"}, "service": 999}, "service: no service 999"),
    ({**{k: v for k, v in SEND.items() if k != "to"}, "broadcast": True, "payload": "p" * 100000},
     "exceeds one frame (1424 bytes at this MTU): a message that large goes as fragments, to a node"),
    ({**{k: v for k, v in SEND.items() if k != "to"}, "broadcast": True, "payload": "p" * 1420, "number": True,
      "count": 100000}, "exceeds one frame"),
    (dict(SEND, size=2 * 1024 * 1024), "exceeds the cluster's max_message (1048576 bytes)"),
    (dict(SEND, size=0), "size: expected an integer in 1..16777216"),
    (dict(SEND, payload="abc", size=2), "size: 2 bytes is less than the payload's 3"),
]


@pytest.fixture
def pair(clusters):
    cl = clusters(nc.memif_pair("it-control", "198.18.5"))
    cl.up()
    return cl


def test_bad_requests_are_refused_and_counted(pair):
    cl = pair
    for raw, needle in BAD:
        line = raw if isinstance(raw, bytes) else (json.dumps(raw) + "\n").encode()
        rep = call(cl.sock(1), line)
        assert rep is not None and needle in rep.get("error", ""), f"{line[:60]!r}: {rep}"
    rep = call(cl.sock(1), b'{"op": "status", "pad": "' + b"p" * (1 << 20) + b'"}\n')
    assert rep is not None and "request longer than 1048576 bytes" in rep.get("error", ""), rep
    st = cl.status(1)
    assert st["counters"]["control_refused"] == len(BAD) + 1
    sent = sum(sum(lanes) for lanes in st["sent"].values())
    assert sent == 0, "nothing was sent on a refused request"
    # nerved's answer to an unknown command quotes 64 bytes of it, which can cut a multi-byte
    # character in two: the reply is not UTF-8, and must still come back.
    r = cl.send(1, 2, "command", 0, "\u20ac" * 30)
    assert r["status"] == "ok" and r["reply"].startswith("unknown command '\u20ac"), r
    r = cl.send(1, 2, "command", 0, "ping")
    assert r["status"] == "ok" and r["reply"] == "pong", "nerved still serves after all of it"
    assert_clean_stop(cl)


def test_one_app_serves_queries_and_its_bad_lines_are_counted(pair):
    """serve_queries: the first connection serves the node's fabric queries, a second is refused
    while it lasts; an answer to no query and lines that are not answers (of any JSON shape) are
    counted refusals, and the stream goes on; when the first goes, another may serve."""
    cl = pair
    first = socket.socket(socket.AF_UNIX)
    first.connect(cl.sock(1))
    first.sendall(b'{"op": "serve_queries"}\n')
    ack = json.loads(first.makefile("rb").readline())
    assert ack["serving"] is True and ack["node"] == 1 and ack["max_payload"] > 1000, ack
    rep = call(cl.sock(1), b'{"op": "serve_queries"}\n')
    assert "already serves this node's queries" in rep.get("error", ""), rep
    first.sendall(b'{"op": "answer", "query": 12345, "text": "ok 0 0 0"}\nnot json\n{"op": 1}\n'
                  b'{"op": "answer", "query": "x", "text": 5}\n')
    nc.wait_for(lambda: cl.status(1)["counters"]["control_refused"] == 5, 10, "five refusals counted")
    assert cl.status(1)["queries"]["serving"] is True
    # A query from beta reaches the app as a line; its answer goes back as the response.
    got = {}

    def answer():
        line = first.makefile("rb").readline()
        q = json.loads(line)
        got.update(q)
        first.sendall((json.dumps({"op": "answer", "query": q["query"], "text": "ok 1 0 1\nhello"}) + "\n").encode())
    t = threading.Thread(target=answer)
    t.start()
    r = cl.send(2, 1, "command", 3, "query current 0")
    t.join(timeout=10)
    assert got["from"] == 2 and got["text"] == "query current 0", got
    assert r["status"] == "ok" and r["reply"] == "ok 1 0 1\nhello", r
    first.close()
    nc.wait_for(lambda: not cl.status(1)["queries"]["serving"], 10, "the desk to see the app gone")
    second = socket.socket(socket.AF_UNIX)
    second.connect(cl.sock(1))
    second.sendall(b'{"op": "serve_queries"}\n')
    assert json.loads(second.makefile("rb").readline())["serving"] is True
    second.close()
    assert_clean_stop(cl)


def test_paced_send_outlasts_its_timeouts(pair):
    """A paced send outlasts both the fabric timeout (1 ms, counted from when each message is
    due) and nerve-ctl's usual reply margin (5 s): it still runs to its end."""
    r = json.loads(pair.ctl(1, "--timeout-ms", "1", "send", "--to", "2", "--type", "metric", "--priority", "4",
                            "--count", "600", "--rate", "100", "paced").stdout)
    assert r["status"] == "ok" and r["sent"] == 600, r
    assert_clean_stop(pair)


def test_open_connections_never_delay_a_stop(pair):
    """An idle connection, one stopped mid-line and a paced send with an hour to go: SIGTERM ends
    all three at once; the send reports status shutdown and how much it sent."""
    cl = pair
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(cl.sock(1))
    half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    half.connect(cl.sock(1))
    half.sendall(b'{"op": "sta')
    slow = subprocess.Popen([nc.CTL, "--config", cl.path, "--node", "1", "--json", "send", "--to", "2", "--type",
                             "metric", "--priority", "4", "--count", "360000", "--rate", "100", "hour"],
                            stdout=subprocess.PIPE, text=True)
    nc.wait_for(lambda: cl.status(2)["delivered"]["metric"][4] >= 2, 30, "the paced send to be under way")
    cl.signal(1, signal.SIGTERM)
    cl.signal(2, signal.SIGTERM)
    # The paced send had an hour left: both stop within the stop deadline, well before it.
    codes = {i: cl.wait_exit(i, timeout=30) for i in (1, 2)}
    assert codes == {1: 0, 2: 0}, codes
    out, _ = slow.communicate(timeout=30)
    r = json.loads(out)
    assert slow.returncode == 1 and r["status"] == "shutdown" and 0 < r["sent"] < 360000, r
    idle.close()
    half.close()
    assert not [p for i in (1, 2) for p in cl.stopped_cleanly(i)]
