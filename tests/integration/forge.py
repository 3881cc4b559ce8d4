"""Frames a rogue host writes onto a link, run inside a network namespace by the tests:

  forge.py send IFACE SPEC.json     build and send the frames SPEC lists
  forge.py answer IFACE SPEC.json   wait for a command on the wire, then answer it as SPEC says

A SPEC frame is a dict of the fields below (every one optional); "ip_fragments": N splits the
frame into N IPv4 fragments (scapy); "udp_checksum": true has scapy fill in the UDP checksum
(reliable frames and acks need one). The nerve header is built byte by byte as docs/wire.md
gives it, so the tests can write every field wrong on purpose."""
import json
import socket
import struct
import sys
import time

from scapy.all import IP, UDP, Ether, Raw, fragment  # python3-scapy

DSCP = [46, 34, 26, 18, 8]
DEFAULTS = dict(dst_mac="02:00:00:00:00:01", src_mac="02:00:00:00:00:02", src_ip="198.18.3.2", dst_ip="198.18.3.1",
                port=47800, magic="NV", version=2, type=2, prio=0, flags=0, ttl=8, epoch=0, src=2, dst=1, channel=0,
                frag_index=0, frag_count=1, seq=0, ack=0, msg_id=1, corr_id=0, timestamp=None, payload="forged",
                payload_len=None, tag=0, pad=0, ip_checksum=None, dscp=None, ip_fragments=0, session=0,
                udp_checksum=False)


def frame(spec):
    s = dict(DEFAULTS, **spec)
    payload = s["payload"].encode() + bytes(s["pad"])
    ts = time.time_ns() if s["timestamp"] is None else s["timestamp"]
    plen = len(payload) if s["payload_len"] is None else s["payload_len"]
    hdr = s["magic"].encode() + bytes([s["version"], s["type"], s["prio"], s["flags"], s["ttl"], s["epoch"]])
    hdr += struct.pack("<HHHH", s["src"], s["dst"], s["channel"], s["frag_index"])
    hdr += struct.pack("<IIIIQHIH", s["seq"], s["ack"], s["msg_id"], s["corr_id"], ts, plen, s["session"],
                       s["frag_count"])
    body = hdr + payload + bytes(s["tag"])
    dscp = DSCP[s["prio"]] if s["dscp"] is None else s["dscp"]
    ip = IP(src=s["src_ip"], dst=s["dst_ip"], tos=dscp << 2, flags="DF", ttl=64, id=0)
    if s["ip_checksum"] is not None:
        ip.chksum = s["ip_checksum"]
    udp = UDP(sport=s["port"], dport=s["port"], chksum=None if s["udp_checksum"] else 0)  # None: scapy computes it
    pkt = Ether(dst=s["dst_mac"], src=s["src_mac"]) / ip / udp / Raw(body)
    if s["ip_fragments"]:
        pkt[IP].flags = 0
        size = (len(body) + 8) // s["ip_fragments"] // 8 * 8 + 8
        return [bytes(f) for f in fragment(pkt, fragsize=size)]
    return [bytes(pkt)]


def main():
    mode, iface, specs = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    if mode == "send":
        for spec in specs:
            for f in frame(spec):
                s.send(f)
        return
    # answer: the first nerve command on the wire (not one we sent), answered with its msg_id
    print("listening", flush=True)
    s.settimeout(20)
    while True:
        raw = s.recv(65536)
        if len(raw) < 90 or raw[12:14] != b"\x08\x00" or raw[42:44] != b"NV" or raw[45] != 1:
            continue
        msg_id = struct.unpack_from("<I", raw, 42 + 24)[0]
        for spec in specs:
            for f in frame(dict(spec, corr_id=msg_id)):
                s.send(f)
        print(msg_id)
        return


main()
