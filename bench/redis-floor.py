#!/usr/bin/env python3
"""What Redis alone spends per accepted delivery, and what other designs
would spend (make bench-redis-floor; see bench/README.md).

The intake's CPU per delivery is nginx's share plus Redis's.  This bench
leaves nginx out and asks how low Redis's share can go: it sends the
commands the module sends for one delivery, pipelined from two
connections (as two nginx workers do), to a private redis-server with the
production persistence (appendonly yes, appendfsync always), and reads
the CPU the kernel charged to redis-server per stream entry.  The client
is plain Python on sockets; its own CPU is not counted.

Variants, alternated round by round:
  module    EVALSHA of the module's own script (read from
            ngx_http_shopify_redis.c): dedupe check + XADD + dedupe keys
  multi     MULTI, XADD, SET NX GET EX for both dedupe keys, EXEC: the
            same effects without Lua (every delivery reaches the stream;
            a duplicate would have to be XDELed afterwards)
  xadd      a bare XADD of the same entry: the floor of any design that
            stores the delivery in a Redis stream with this persistence
  xadd8     eight deliveries in one XADD (one entry, eight bodies): what
            batching deliveries across requests would leave; per delivery
Each runs with the stream left to grow (as in the closed-loop phase of
bench/intake.py) and with a trimmer keeping it short (as a draining
worker would).
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "bench"))

from intake import make_body  # noqa: E402  (same 5 KB body as make bench)

ENTRIES = int(os.environ.get("BENCH_FLOOR_ENTRIES", "40000"))
ROUNDS = int(os.environ.get("BENCH_FLOOR_ROUNDS", "2"))
PIPELINE = 32


def module_script():
    """The Lua text of ngx_http_shopify_script, from the C source."""
    path = os.path.join(TOP, "ngx_shopify_module/ngx_http_shopify_redis.c")
    with open(path) as f:
        src = f.read()
    m = re.search(r"ngx_http_shopify_script = ngx_string\((.*?)\);", src,
                  re.S)
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.f = self.sock.makefile("rb")

    def reply(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data
        if kind == b"-":
            raise RuntimeError(rest.decode())
        return int(rest) if kind == b":" else rest

    def cmd(self, *args):
        self.sock.sendall(resp(*args))
        return self.reply()


def requests(variant, sha, body, i):
    """(bytes to send, replies to read) for delivery i."""
    fields = ["topic", "orders/create", "shop", "bench.myshopify.com",
              "webhook_id", "w-%d" % i, "api_version", "2025-10",
              "triggered_at", "2026-12-03T00:00:00.000Z", "event_id",
              "e-%d" % i, "received_at", "1764720000000", "body", body]
    seen = "shopify:webhooks:seen:w-%d" % i
    event = ("shopify:webhooks:seen-event:bench.myshopify.com:"
             "orders/create:e-%d" % i)
    if variant == "module":
        return resp("EVALSHA", sha, 3, "shopify:webhooks", seen, event, 60,
                    *fields), 1
    if variant == "multi":
        return (resp("MULTI") + resp("XADD", "shopify:webhooks", "*", *fields)
                + resp("SET", seen, "1", "NX", "GET", "EX", 60)
                + resp("SET", event, "1", "NX", "GET", "EX", 60)
                + resp("EXEC")), 5
    return resp("XADD", "shopify:webhooks", "*", *fields), 1


def batch(body, first, n):
    """One XADD carrying deliveries first .. first + n - 1."""
    fields = []
    for i in range(first, first + n):
        fields += ["webhook_id.%d" % i, "w-%d" % i, "body.%d" % i, body]
    return resp("XADD", "shopify:webhooks", "*", *fields), 1


def client(port, variant, sha, body, first, count):
    c = Conn(port)
    i = first
    while i < first + count:
        n = min(PIPELINE, first + count - i)
        out, replies = b"", 0
        if variant == "xadd8":
            for k in range(i, i + n, 8):
                data, r = batch(body, k, min(8, i + n - k))
                out += data
                replies += r
        else:
            for k in range(i, i + n):
                data, r = requests(variant, sha, body, k)
                out += data
                replies += r
        c.sock.sendall(out)
        for _ in range(replies):
            c.reply()
        i += n


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(variant, trim, body, script):
    tmp = tempfile.mkdtemp(prefix="shopify-floor.")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    subprocess.run(["redis-server", "--port", str(port), "--bind",
                    "127.0.0.1", "--dir", tmp, "--appendonly", "yes",
                    "--appendfsync", "always", "--save", "",
                    "--auto-aof-rewrite-percentage", "0",
                    "--daemonize", "yes", "--pidfile", tmp + "/redis.pid",
                    "--logfile", tmp + "/redis.log"], check=True)
    for _ in range(100):
        try:
            ctl = Conn(port)
            ctl.cmd("PING")
            break
        except (OSError, RuntimeError):
            time.sleep(0.05)
    with open(tmp + "/redis.pid") as f:
        pid = int(f.read())
    sha = ctl.cmd("SCRIPT", "LOAD", script).decode()
    stop = threading.Event()

    def trimmer():
        t = Conn(port)
        while not stop.wait(0.2):
            t.cmd("XTRIM", "shopify:webhooks", "MAXLEN", "~", 1000)

    tt = threading.Thread(target=trimmer) if trim else None
    if tt:
        tt.start()
    c0, t0 = cpu_ticks(pid), time.monotonic()
    half = ENTRIES // 2
    ts = [threading.Thread(target=client, args=(port, variant, sha, body,
                                                k * 10_000_000, half))
          for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    c1, t1 = cpu_ticks(pid), time.monotonic()
    stop.set()
    if tt:
        tt.join()
    info = ctl.cmd("XINFO", "STREAM", "shopify:webhooks")
    added = int(info[info.index(b"entries-added") + 1])
    if variant == "xadd8":
        added = 2 * (ENTRIES // 2)  # deliveries: eight to an entry
    try:
        ctl.cmd("SHUTDOWN", "NOSAVE")
    except (OSError, RuntimeError):
        pass
    subprocess.run(["rm", "-rf", tmp])
    hz = os.sysconf("SC_CLK_TCK")
    return {"variant": variant, "trim": trim, "entries": added,
            "redis_cpu_s": (c1 - c0) / hz, "wall_s": t1 - t0,
            "redis_us_per_entry": (c1 - c0) / hz * 1e6 / added}


def main():
    body, what = make_body(os.environ.get("BENCH_BODY", "5k"))
    script = module_script()
    runs = []
    plan = [(v, t) for t in (False, True) for v in ("module", "multi", "xadd", "xadd8")]
    for r in range(ROUNDS):
        order = plan[r % len(plan):] + plan[:r % len(plan)]
        for variant, trim in order:
            res = run(variant, trim, body, script)
            res["round"] = r + 1
            runs.append(res)
            print("[floor] round %d %-6s %-8s %6.1f us of Redis CPU per "
                  "entry (%d entries, %.1f s)"
                  % (r + 1, variant, "trimmed" if trim else "growing",
                     res["redis_us_per_entry"], res["entries"],
                     res["wall_s"]), flush=True)
    agg = {}
    for variant, trim in plan:
        rs = [x for x in runs if x["variant"] == variant
              and x["trim"] == trim]
        agg["%s/%s" % (variant, "trimmed" if trim else "growing")] = (
            sum(x["redis_cpu_s"] for x in rs) * 1e6
            / sum(x["entries"] for x in rs))
    print("\nRedis CPU per accepted delivery, %d B body, appendfsync always"
          % len(body))
    print("%-10s %10s %10s" % ("variant", "growing", "trimmed"))
    for variant in ("module", "multi", "xadd", "xadd8"):
        print("%-10s %10.1f %10.1f" % (variant, agg[variant + "/growing"],
                                      agg[variant + "/trimmed"]))
    for trim in ("growing", "trimmed"):
        print("module / xadd (%s): %.2fx" % (
            trim, agg["module/" + trim] / agg["xadd/" + trim]))
    os.makedirs(os.path.join(TOP, "bench/results"), exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = os.path.join(TOP, "bench/results/redis-floor-%s.json" % stamp)
    with open(out, "w") as f:
        json.dump({"body_bytes": len(body), "body": what,
                   "entries_per_run": ENTRIES, "pipeline": PIPELINE,
                   "connections": 2, "aggregate_us_per_entry": agg,
                   "runs": runs}, f, indent=1)
    print("written to %s" % os.path.relpath(out, TOP))


if __name__ == "__main__":
    main()
