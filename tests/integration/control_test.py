"""Bad requests on a running nerved's control socket: every one gets a clear {"error": ...}
naming the problem and is counted (counters.control_refused); the daemon keeps serving, and
stops cleanly afterwards. Also: a reply that is not valid UTF-8 reaches the caller intact."""
import json
import socket
import subprocess
import time

import harness as h


def call(sock_path, raw):
    """Sends one raw request line and returns the decoded reply (None if the connection closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
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
    ({k: v for k, v in SEND.items() if k != "to"}, "to: required"),
    (dict(SEND, payload="p" * 100000), "exceeds one frame"),
]


def run():
    cl = h.memif_pair("it-control", "198.18.5")
    try:
        cl.up()
        for raw, needle in BAD:
            line = raw if isinstance(raw, bytes) else (json.dumps(raw) + "\n").encode()
            rep = call(cl.sock(1), line)
            h.check(rep is not None and needle in rep.get("error", ""),
                    f"refused {line[:60]!r}: {rep.get('error') if rep else 'connection closed'}")
        rep = call(cl.sock(1), b'{"op": "status", "pad": "' + b"p" * (1 << 20) + b'"}\n')
        h.check(rep is not None and "request longer than 1048576 bytes" in rep.get("error", ""),
                f"an overlong request is refused: {rep}")
        st = cl.status(1)
        h.check(st["counters"]["control_refused"] == len(BAD) + 1,
                f"every bad request counted ({st['counters']['control_refused']} of {len(BAD) + 1})")
        h.check(st["counters"]["tx_frames"] == 0, "nothing was sent on a refused request")

        # nerved's answer to an unknown command quotes 64 bytes of it, which can cut a
        # multi-byte character in two: the reply is not UTF-8, and must still come back.
        r = cl.send(1, 2, "command", 0, "\u20ac" * 30)
        h.check(r["status"] == "ok" and r["reply"].startswith("unknown command '\u20ac"),
                f"a reply that is not UTF-8 is delivered (with U+FFFD for the cut character): {r.get('reply')!r}")
        r = cl.send(1, 2, "command", 0, "ping")
        h.check(r["status"] == "ok" and r["reply"] == "pong", "nerved still serves after all of it")

        # A paced send outlasts both the fabric timeout (1 ms, counted from when each message
        # is due) and nerve-ctl's usual reply margin (5 s): it still runs to its end.
        r = json.loads(cl.ctl(1, "--timeout-ms", "1", "send", "--to", "2", "--type", "metric", "--priority", "4",
                              "--count", "600", "--rate", "100", "paced").stdout)
        h.check(r["status"] == "ok" and r["sent"] == 600, f"a 6 s paced send completes: {r}")

        # Connections that stay open, one idle and one mid-line, must not hold up a shutdown.
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(cl.sock(1))
        half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        half.connect(cl.sock(1))
        half.sendall(b'{"op": "sta')
        # And a paced send with an hour to go ends at once, with status "shutdown".
        slow = subprocess.Popen([h.CTL, "--config", cl.path, "--node", "1", "--json", "send", "--to", "2", "--type",
                                 "metric", "--priority", "4", "--count", "360000", "--rate", "100", "hour"],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        t0 = time.time()
        cl.stop()
        h.check(time.time() - t0 < 5, f"stopped in {time.time() - t0:.1f} s with three control connections open")
        out, _ = slow.communicate(timeout=10)
        r = json.loads(out)
        h.check(slow.returncode == 1 and r["status"] == "shutdown" and 0 < r["sent"] < 360000,
                f"the paced send in progress ended with status shutdown after {r['sent']} messages")
        idle.close()
        half.close()
    finally:
        cl.kill_all()


h.main(run)
