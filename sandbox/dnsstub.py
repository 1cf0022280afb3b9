#!/usr/bin/env python3
"""A tiny DNS server for tests: *.myshopify.com is 127.0.0.1.

nginx's `resolver` reads no /etc/hosts, so a test that lets nginx reach
https://<shop>.myshopify.com points `resolver 127.0.0.1:<port>` here.

  A     <name>.myshopify.com   -> 127.0.0.1 (TTL --ttl)
  other <name>.myshopify.com   -> no records (NOERROR, "NODATA")
  anything else                -> NXDOMAIN

Every query is appended to --log as one JSON line
{"time", "name", "type", "answer"}, flushed at once, so the log is also the
proof that nginx asked for nothing at all.  UDP only; one thread.
Python 3 standard library only.

  python3 sandbox/dnsstub.py --port 0 --port-file F --log queries.jsonl
"""

import argparse
import json
import os
import re
import signal
import socket
import struct
import sys
import time

SHOP_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
                       r"\.myshopify\.com$")
TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX",
         16: "TXT", 28: "AAAA", 33: "SRV", 65: "HTTPS", 255: "ANY"}
RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_NOTIMP = 1, 3, 4


def parse_question(pkt):
    """(id, flags, qname bytes, name text, qtype, qclass, end) or raises ValueError."""
    if len(pkt) < 12:
        raise ValueError("short header")
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", pkt[:12])
    if flags & 0x8000:
        raise ValueError("not a query")
    if qd != 1:
        raise ValueError("%d questions" % qd)
    pos, labels = 12, []
    while True:
        if pos >= len(pkt):
            raise ValueError("truncated name")
        n = pkt[pos]
        if n & 0xC0:
            raise ValueError("compressed question name")
        pos += 1
        if n == 0:
            break
        labels.append(pkt[pos:pos + n])
        pos += n
        if pos > 12 + 255:
            raise ValueError("name too long")
    if pos + 4 > len(pkt):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!2H", pkt[pos:pos + 4])
    name = ".".join(l.decode("latin-1") for l in labels)
    return qid, flags, pkt[12:pos], name, qtype, qclass, pos + 4


def answer(pkt, ttl):
    """The reply packet and the log fields for one query packet."""
    try:
        qid, flags, qname, name, qtype, qclass, end = parse_question(pkt)
    except ValueError as e:
        if len(pkt) < 2:
            return None, {"name": None, "type": None, "answer": "ignored: %s" % e}
        qid = struct.unpack("!H", pkt[:2])[0]
        hdr = struct.pack("!6H", qid, 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)
        return hdr, {"name": None, "type": None, "answer": "FORMERR: %s" % e}
    opcode = (flags >> 11) & 0xF
    rd = flags & 0x0100
    tname = TYPES.get(qtype, str(qtype))
    question = qname + struct.pack("!2H", qtype, qclass)
    base = 0x8000 | 0x0400 | (opcode << 11) | rd  # QR, AA
    if opcode != 0:
        hdr = struct.pack("!6H", qid, base | RCODE_NOTIMP, 1, 0, 0, 0)
        return hdr + question, {"name": name, "type": tname, "answer": "NOTIMP"}
    lname = name.lower()
    if not SHOP_NAME.match(lname) or qclass not in (1, 255):
        hdr = struct.pack("!6H", qid, base | RCODE_NXDOMAIN, 1, 0, 0, 0)
        return hdr + question, {"name": name, "type": tname, "answer": "NXDOMAIN"}
    if qtype != 1:
        hdr = struct.pack("!6H", qid, base, 1, 0, 0, 0)
        return hdr + question, {"name": name, "type": tname, "answer": "NODATA"}
    hdr = struct.pack("!6H", qid, base, 1, 1, 0, 0)
    rr = b"\xc0\x0c" + struct.pack("!2HIH", 1, 1, ttl, 4) + socket.inet_aton("127.0.0.1")
    return hdr + question + rr, {"name": name, "type": tname, "answer": "127.0.0.1"}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="dnsstub.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="UDP port (0 = any free port)")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--log", required=True, help="append one JSON line per query here")
    ap.add_argument("--ttl", type=int, default=30)
    args = ap.parse_args(argv)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    log = open(args.log, "a", encoding="utf-8")
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("dnsstub: listening on udp %s:%d, log %s" % (args.host, port, args.log),
          file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        try:
            pkt, peer = sock.recvfrom(4096)
        except InterruptedError:
            continue
        reply, entry = answer(pkt, args.ttl)
        entry = dict(time=round(time.time(), 3), **entry)
        log.write(json.dumps(entry, sort_keys=True) + "\n")
        log.flush()
        if reply is not None:
            try:
                sock.sendto(reply, peer)
            except OSError as e:
                print("dnsstub: cannot answer %s: %s" % (peer, e), file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
