#!/usr/bin/env python3
"""Intake benchmark: ngx_http_shopify_module against nginx's `return 200;`.

Started by bench/intake.sh (which checks the tools and builds the open-loop
client); see bench/README.md for what is measured and how.  Everything runs
on loopback, on ports picked free at run time, in a temporary directory
that is removed at the end.  Every phase is bounded in requests and time.
"""

import array
import base64
import datetime
import hashlib
import hmac
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(TOP, "bench")

INTAKE_PATH = "/webhooks/shopify"
RETURN200_PATH = "/return200"
STREAM = "shopify:webhooks"
SECRET = "bench-webhook-secret-not-a-real-key"
WRONG_SECRET = "bench-wrong-secret"
HZ = os.sysconf("SC_CLK_TCK")

# the three measured kinds, in report order
KINDS = ("return200", "intake", "badsig")
LABEL = {
    "return200": "return 200",
    "intake": "intake (accepted)",
    "badsig": "bad signature (401)",
}


def env_num(name, default, cast=float, lo=None, hi=None, prog="bench"):
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        v = cast(raw)
    except ValueError:
        sys.exit(f"{prog}: {name}={raw!r} is not a number")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        sys.exit(f"{prog}: {name}={raw} is out of range [{lo}, {hi}]")
    return v


def settings():
    s = {}
    s["seconds"] = env_num("BENCH_SECONDS", 10.0, float, 1, 120)
    s["rounds"] = env_num("BENCH_ROUNDS", 3, int, 1, 10)
    s["conns"] = env_num("BENCH_CONNS", 64, int, 2, 1024)
    s["wrk_threads"] = env_num("BENCH_WRK_THREADS", 2, int, 1, 16)
    s["warmup_seconds"] = env_num("BENCH_WARMUP_SECONDS", 2.0, float, 0, 30)
    s["ol_seconds"] = env_num("BENCH_OL_SECONDS", s["seconds"], float, 1, 120)
    s["ol_rounds"] = env_num("BENCH_OL_ROUNDS", s["rounds"], int, 1, 10)
    s["ol_rate"] = env_num("BENCH_OL_RATE", 0.0, float, 0, 1e6)
    s["ol_fraction"] = env_num("BENCH_OL_FRACTION", 0.5, float, 0.01, 1.0)
    s["rss_deliveries"] = env_num("BENCH_RSS_DELIVERIES", 1000000, int,
                                  0, 10000000)
    s["rss_timeout"] = env_num("BENCH_RSS_TIMEOUT", 600, int, 10, 3600)
    s["dedupe_ttl"] = env_num("BENCH_DEDUPE_TTL", 60, int, 1, 86400)
    s["body"] = os.environ.get("BENCH_BODY", "5k")
    s["access_log"] = env_num("BENCH_ACCESS_LOG", 0, int, 0, 1)
    s["redis_unix"] = env_num("BENCH_REDIS_UNIX", 0, int, 0, 1)
    s["reuseport"] = env_num("BENCH_REUSEPORT", 1, int, 0, 1)
    s["strict"] = env_num("BENCH_STRICT", 0, int, 0, 1)
    s["nginx"] = os.environ.get("BENCH_NGINX", "/usr/sbin/nginx")
    s["module"] = os.environ.get(
        "BENCH_MODULE",
        os.path.join(TOP, "build/nginx/ngx_http_shopify_module.so"))
    s["openloop"] = os.environ.get(
        "BENCH_OPENLOOP", os.path.join(TOP, "build/bench/openloop"))
    s["results_dir"] = os.environ.get(
        "BENCH_RESULTS_DIR", os.path.join(BENCH, "results"))
    s["keep_tmp"] = env_num("BENCH_KEEP_TMP", 0, int, 0, 1)
    return s


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------
# the delivery body

def make_body(kind):
    """The request body and a note saying what it is.

    "5k" (default): orders-create-basic.json with the customer object, the
    second line item, shipping_lines, client_details and the billing
    address removed, re-serialised compactly with Shopify's escaped
    slashes.  "basic": the 8.6 KB fixture byte for byte.  Anything else is
    a path to a file used as is.
    """
    fixture = os.path.join(TOP, "fixtures/shopify/orders-create-basic.json")
    if kind == "basic":
        with open(fixture, "rb") as f:
            return f.read(), "fixtures/shopify/orders-create-basic.json as is"
    if kind != "5k":
        with open(kind, "rb") as f:
            return f.read(), f"{kind} as is"
    with open(fixture, "rb") as f:
        order = json.load(f)
    for key in ("customer", "shipping_lines", "client_details",
                "billing_address"):
        order.pop(key, None)
    order["line_items"] = order["line_items"][:1]
    text = json.dumps(order, separators=(",", ":"), ensure_ascii=False)
    body = text.replace("/", "\\/").encode()
    return body, ("orders-create-basic.json less customer, shipping_lines, "
                  "client_details, billing_address and its second line "
                  "item, compact JSON with escaped slashes")


def sign(body, secret):
    mac = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


# --------------------------------------------------------------------------
# processes and the kernel's accounting

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): utime is field 14, stime field 15
    return {"ppid": int(rest[1]), "utime": int(rest[11]),
            "stime": int(rest[12])}


def alive(pid):
    """False once the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(")") + 2] != "Z"


def send_signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def children(ppid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if proc_stat(int(name))["ppid"] == ppid:
                out.append(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return sorted(out)


def cpu_ticks(pids):
    out = {}
    for pid in pids:
        st = proc_stat(pid)
        out[pid] = st["utime"] + st["stime"]
    return out


def machine_ticks():
    """Busy and steal ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    return busy, v[7]


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def conns_per_worker(workers, port):
    """Established client connections held by each worker, from
    /proc/net/tcp and the workers' fd tables."""
    est = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if p[3] == "01" and int(p[1].split(":")[1], 16) == port:
                est.add(p[9])
    out = {}
    for pid in workers:
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in est:
                    n += 1
        except OSError:
            pass
        out[str(pid)] = n
    return out


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class RedisError(Exception):
    pass


class Redis:
    """The few commands the bench needs, over RESP2."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.rf = self.sock.makefile("rb")

    def close(self):
        self.rf.close()
        self.sock.close()

    @staticmethod
    def encode(args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(parts)

    def cmd(self, *args):
        self.sock.sendall(self.encode(args))
        return self._reply()

    def pipeline(self, cmds):
        self.sock.sendall(b"".join(self.encode(c) for c in cmds))
        return [self._reply() for _ in cmds]

    def _reply(self):
        line = self.rf.readline()
        if not line:
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return self.rf.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")

    def info(self, section):
        text = self.cmd("INFO", section).decode()
        out = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def entries_added(self):
        try:
            flat = self.cmd("XINFO", "STREAM", STREAM)
        except RedisError:
            return 0        # no stream yet
        info = dict(zip(flat[0::2], flat[1::2]))
        return int(info[b"entries-added"])


# --------------------------------------------------------------------------

class Bench:

    def __init__(self, s):
        self.s = s
        self.problems = []
        self.tmp = None
        self.nginx_pid = None
        self.redis_pid = None
        self.redis = None

    # ---------------------------------------------------------------- setup

    def setup(self):
        s = self.s
        self.tmp = tempfile.mkdtemp(prefix="shopify-bench.")
        os.chmod(self.tmp, 0o755)
        log(f"working directory {self.tmp}")

        self.body, self.body_note = make_body(s["body"])
        self.body_file = os.path.join(self.tmp, "body.json")
        with open(self.body_file, "wb") as f:
            f.write(self.body)
        self.good_hmac = sign(self.body, SECRET)
        self.bad_hmac = sign(self.body, WRONG_SECRET)

        # the module as it is now: a rebuild during the run changes nothing
        self.module = os.path.join(self.tmp, "ngx_http_shopify_module.so")
        shutil.copyfile(s["module"], self.module)

        self.nginx_port = free_port()
        self.redis_port = free_port()
        while self.redis_port == self.nginx_port:
            self.redis_port = free_port()

        self.start_redis()
        self.start_nginx()

    def start_redis(self):
        d = os.path.join(self.tmp, "redis")
        os.mkdir(d)
        pidfile = os.path.join(d, "redis.pid")
        self.redis_socket = os.path.join(d, "redis.sock")
        unix = (["--unixsocket", self.redis_socket, "--unixsocketperm", "777"]
                if self.s["redis_unix"] else [])
        subprocess.run(
            ["redis-server", "--bind", "127.0.0.1",
             "--port", str(self.redis_port), "--dir", d,
             "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--maxmemory-policy", "noeviction",
             # no rewrite inside a measured interval: the bench rewrites
             # the AOF itself between intervals (see README)
             "--auto-aof-rewrite-percentage", "0",
             "--daemonize", "yes", "--pidfile", pidfile,
             "--logfile", os.path.join(d, "redis.log")] + unix,
            check=True, timeout=30)
        for _ in range(100):
            try:
                self.redis = Redis(self.redis_port)
                self.redis.cmd("PING")
                break
            except (OSError, RedisError):
                self.redis = None
                time.sleep(0.1)
        if self.redis is None:
            raise RuntimeError("redis did not start")
        with open(pidfile) as f:
            self.redis_pid = int(f.read())
        # redis records its own stalls (fsync, AOF write, commands, expiry)
        self.redis.cmd("CONFIG", "SET", "latency-monitor-threshold", "2")
        cfg = self.redis.cmd("CONFIG", "GET", "app*")
        cfg += self.redis.cmd("CONFIG", "GET", "maxmemory-policy")
        self.redis_config = {k.decode(): v.decode()
                             for k, v in zip(cfg[0::2], cfg[1::2])}
        log(f"redis {self.redis_port} pid {self.redis_pid} "
            f"{self.redis_config}")

    def start_nginx(self):
        s = self.s
        prefix = os.path.join(self.tmp, "nginx")
        for sub in ("conf", "logs", "tmp"):
            os.makedirs(os.path.join(prefix, sub))
        user_line = ""
        if os.getuid() == 0:
            user_line = "user www-data;"
            shutil.chown(os.path.join(prefix, "tmp"), "www-data")
        reuseport = " reuseport" if s["reuseport"] else ""
        redis_addr = (f"unix:{self.redis_socket}" if s["redis_unix"]
                      else f"127.0.0.1:{self.redis_port}")
        access = ("access_log off;" if not s["access_log"] else
                  f"access_log {prefix}/logs/access.log;")
        conf = f"""
load_module {self.module};
{user_line}
worker_processes 2;
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log notice;
events {{ worker_connections 4096; }}
http {{
    {access}
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    shopify_redis {redis_addr};
    server {{
        listen 127.0.0.1:{self.nginx_port}{reuseport};
        client_body_buffer_size 512k;
        client_max_body_size 4m;
        location = {INTAKE_PATH} {{
            shopify_webhook;
            shopify_webhook_secret "{SECRET}";
            shopify_webhook_dedupe_ttl {s['dedupe_ttl']}s;
        }}
        location = {RETURN200_PATH} {{
            return 200;
        }}
        location = /health {{
            shopify_health;
        }}
        location = /status {{
            shopify_status;
        }}
    }}
}}
"""
        self.nginx_conf_text = conf
        with open(os.path.join(prefix, "conf/nginx.conf"), "w") as f:
            f.write(conf)
        self.error_log = os.path.join(prefix, "logs/error.log")
        # the module may be in the middle of a rebuild (others share the
        # build directory): test the configuration, copy again if needed
        for attempt in range(3):
            t = subprocess.run([s["nginx"], "-t", "-q", "-p", prefix,
                                "-c", "conf/nginx.conf", "-e", "stderr"],
                               capture_output=True, text=True, timeout=30)
            if t.returncode == 0:
                break
            log(f"nginx -t failed: {t.stderr.strip()}")
            if attempt == 2:
                raise RuntimeError("nginx refuses the configuration")
            time.sleep(10)
            shutil.copyfile(s["module"], self.module)
        subprocess.run([s["nginx"], "-p", prefix, "-c", "conf/nginx.conf",
                        "-e", "stderr"], check=True, timeout=30)
        pidfile = os.path.join(prefix, "logs/nginx.pid")
        for _ in range(100):
            if os.path.exists(pidfile):
                with open(pidfile) as f:
                    txt = f.read().strip()
                if txt:
                    self.nginx_pid = int(txt)
                    break
            time.sleep(0.1)
        if self.nginx_pid is None:
            raise RuntimeError("nginx did not start")

        # both workers connected to redis
        for _ in range(100):
            self.workers = children(self.nginx_pid)
            if len(self.workers) == 2 and self.health() == "up":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("nginx workers or their redis link not up")
        log(f"nginx {self.nginx_port} master {self.nginx_pid} "
            f"workers {self.workers}")

    def health(self):
        data = self.get("/health")
        m = re.search(rb'"redis":"(\w+)"', data or b"")
        return m.group(1).decode() if m else None

    def get(self, path):
        try:
            with socket.create_connection(("127.0.0.1", self.nginx_port),
                                          timeout=5) as c:
                c.sendall(b"GET %s HTTP/1.0\r\nHost: b\r\n\r\n"
                          % path.encode())
                data = b""
                while True:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        return data

    def teardown(self):
        # both daemonized: not our children, so wait by polling /proc
        if self.nginx_pid and alive(self.nginx_pid):
            send_signal(self.nginx_pid, signal.SIGQUIT)
            for _ in range(100):
                if not alive(self.nginx_pid):
                    break
                time.sleep(0.1)
            else:
                send_signal(self.nginx_pid, signal.SIGTERM)
        if self.redis_pid and alive(self.redis_pid):
            try:
                self.redis.cmd("SHUTDOWN", "NOSAVE")
            except (OSError, RedisError, AttributeError):
                pass
            for _ in range(100):
                if not alive(self.redis_pid):
                    break
                time.sleep(0.1)
            else:
                send_signal(self.redis_pid, signal.SIGTERM)
        if self.tmp and not self.s["keep_tmp"]:
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp:
            log(f"kept {self.tmp}")

    # ----------------------------------------------------------- measuring

    def check_workers(self, where):
        now = children(self.nginx_pid)
        if now != self.workers:
            self.problems.append(
                f"nginx workers changed {where}: {self.workers} -> {now} "
                "(a worker died and was respawned; see the error log)")
            self.workers = now

    def snapshot(self):
        busy, steal = machine_ticks()
        return {"t": time.monotonic(),
                "nginx": cpu_ticks(self.workers),
                "redis": cpu_ticks([self.redis_pid])[self.redis_pid],
                "entries": self.redis.entries_added(),
                "client": children_cpu_s(),
                "busy": busy, "steal": steal}

    def cpu_delta(self, a, b):
        ng = sum(b["nginx"][p] - a["nginx"][p] for p in a["nginx"])
        per = {str(p): b["nginx"][p] - a["nginx"][p] for p in a["nginx"]}
        return {"nginx_s": ng / HZ, "redis_s": (b["redis"] - a["redis"]) / HZ,
                "nginx_per_worker_s": {k: v / HZ for k, v in per.items()},
                "entries_added": b["entries"] - a["entries"],
                "wall_s": b["t"] - a["t"],
                # the load generator (wrk or openloop), reaped by then
                "client_s": b["client"] - a["client"],
                # every CPU of the machine: the rest is noise from others
                "machine_busy_s": (b["busy"] - a["busy"]) / HZ,
                "machine_steal_s": (b["steal"] - a["steal"]) / HZ}

    def url(self, kind):
        path = RETURN200_PATH if kind == "return200" else INTAKE_PATH
        return f"http://127.0.0.1:{self.nginx_port}{path}"

    def run_wrk(self, kind, seconds, tag, limit=0):
        s = self.s
        mac = self.bad_hmac if kind == "badsig" else self.good_hmac
        cmd = ["wrk", "-t", str(s["wrk_threads"]), "-c", str(s["conns"]),
               "-d", f"{int(round(seconds))}s", "--timeout", "5s",
               "-s", os.path.join(BENCH, "wrk-delivery.lua"),
               self.url(kind), "--", self.body_file, mac,
               f"{self.run_id}-{tag}", str(limit)]
        env = dict(os.environ, BENCH_WRK_THREADS=str(s["wrk_threads"]))
        out, err, rc, spread = self.run_client(cmd, seconds, env)
        m = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
        if rc != 0 or not m:
            raise RuntimeError(f"wrk failed ({rc}): {out[-2000:]} "
                               f"{err[-2000:]}")
        w = json.loads(m.group(1))
        w["conns_per_worker"] = spread
        return w

    def check_spread(self, tag, spread):
        total = sum(spread.values())
        if total and max(spread.values()) > 0.75 * total:
            self.problems.append(
                f"{tag}: connections unevenly spread over the nginx workers "
                f"{spread}")

    def run_client(self, cmd, seconds, env=None):
        """Runs a load generator for about `seconds`; looks, halfway, at
        how its connections are spread over the nginx workers."""
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        try:
            # three looks, keeping the one that saw most connections: wrk
            # reconnects after nginx's keepalive_requests (1000)
            spread = {}
            for k in range(3):
                try:
                    p.wait(timeout=min(1.0, seconds / 6))
                    break
                except subprocess.TimeoutExpired:
                    pass
                look = conns_per_worker(self.workers, self.nginx_port)
                if sum(look.values()) > sum(spread.values()):
                    spread = look
            out, err = p.communicate(timeout=seconds + 60)
        except BaseException:
            p.kill()
            p.wait()
            raise
        return out, err, p.returncode, spread

    def settle(self):
        """Between measured intervals: empty the stream, drop the dedupe
        keys (so that none expires inside a later interval, charging its
        cost to another kind), keep the AOF small, let the machine calm
        down."""
        self.redis.cmd("XTRIM", STREAM, "MAXLEN", "0")
        self.drop_dedupe_keys()
        size = int(self.redis.info("persistence").get("aof_current_size", 0))
        if size > 256 * 1024 * 1024:
            self.rewrite_aof()
        time.sleep(1.0)

    def drop_dedupe_keys(self):
        cursor = b"0"
        for _ in range(10000):
            cursor, keys = self.redis.cmd("SCAN", cursor, "MATCH",
                                          STREAM + ":seen*", "COUNT", "10000")
            if keys:
                self.redis.cmd("UNLINK", *keys)
            if cursor == b"0":
                return
        self.problems.append("dedupe keys: SCAN did not finish")

    def rewrite_aof(self):
        try:
            self.redis.cmd("BGREWRITEAOF")
        except RedisError:
            pass            # already running
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            p = self.redis.info("persistence")
            if (p.get("aof_rewrite_in_progress") == "0"
                    and p.get("aof_rewrite_scheduled") == "0"):
                return
            time.sleep(0.2)
        self.problems.append("AOF rewrite did not finish within 300 s")

    def redis_stalls(self):
        """Redis's latency monitor since the last reset: for each kind of
        event over 2 ms, how many seconds had one and the worst (ms)."""
        out = {}
        for ev in self.redis.cmd("LATENCY", "LATEST"):
            name = ev[0].decode()
            hist = self.redis.cmd("LATENCY", "HISTORY", name)
            out[name] = {"max_ms": ev[3], "seconds_with_stall": len(hist)}
        self.redis.cmd("LATENCY", "RESET")
        return out

    def commandstats(self):
        out = {}
        for k, v in self.redis.info("commandstats").items():
            f = dict(x.split("=", 1) for x in v.split(","))
            out[k.replace("cmdstat_", "")] = {
                "calls": int(f["calls"]),
                "usec_per_call": float(f["usec_per_call"])}
        return out

    def measure(self, kind, seconds, tag):
        self.redis.cmd("CONFIG", "RESETSTAT")
        self.redis.cmd("LATENCY", "RESET")
        before = self.snapshot()
        w = self.run_wrk(kind, seconds, tag)
        self.check_spread(tag, w["conns_per_worker"])
        time.sleep(0.3)     # in-flight deliveries reach redis
        after = self.snapshot()
        d = self.cpu_delta(before, after)
        stats = self.commandstats()
        stalls = self.redis_stalls()
        dur = w["duration_us"] / 1e6
        ok = w["requests"] - w["err_status"]
        r = {"kind": kind, "tag": tag, "wrk": w, "cpu": d,
             "duration_s": dur, "requests": w["requests"],
             "non_2xx_3xx": w["err_status"],
             "redis_stalls": stalls,
             "redis_commandstats": {k: v for k, v in stats.items()
                                    if k in ("evalsha", "eval", "xadd",
                                             "set", "get")}}
        if kind == "intake":
            # every enqueue counts, including the few still in flight when
            # wrk stopped: they cost CPU too
            r["denominator"] = d["entries_added"]
            r["rate"] = ok / dur
            r["server_cpu_s"] = d["nginx_s"] + d["redis_s"]
            if w["err_status"]:
                self.problems.append(
                    f"{tag}: {w['err_status']} intake answers were not 2xx")
            if not (ok <= d["entries_added"] <= ok + self.s["conns"]):
                self.problems.append(
                    f"{tag}: {ok} deliveries answered 200 but the stream "
                    f"grew by {d['entries_added']}")
        else:
            r["denominator"] = w["requests"]
            r["rate"] = w["requests"] / dur
            r["server_cpu_s"] = d["nginx_s"]
            if d["entries_added"]:
                self.problems.append(
                    f"{tag}: the stream grew by {d['entries_added']}")
            if kind == "badsig" and w["err_status"] != w["requests"]:
                self.problems.append(
                    f"{tag}: {w['requests'] - w['err_status']} forged "
                    "deliveries were not refused")
            if kind == "return200" and w["err_status"]:
                self.problems.append(f"{tag}: {w['err_status']} errors")
        for e in ("err_connect", "err_read", "err_write", "err_timeout"):
            if w[e]:
                self.problems.append(f"{tag}: wrk {e} = {w[e]}")
        r["cpu_us_per_req"] = (r["server_cpu_s"] / r["denominator"] * 1e6
                               if r["denominator"] else None)
        log(f"{tag:22s} {r['rate']:9.0f} req/s  p50 "
            f"{w['lat_p50_us'] / 1000:7.2f} ms  p99 "
            f"{w['lat_p99_us'] / 1000:7.2f} ms  cpu "
            f"{r['cpu_us_per_req'] or 0:7.1f} us/req conns "
            f"{w['conns_per_worker']} "
            f"(nginx {d['nginx_s']:.2f} s, redis {d['redis_s']:.2f} s, "
            f"client {d['client_s']:.2f} s, machine {d['machine_busy_s']:.2f}"
            f" s)" + stall_text(stalls))
        self.check_workers(tag)
        return r

    # -------------------------------------------------------------- phases

    def closed_loop(self):
        s = self.s
        log(f"warm-up, {s['warmup_seconds']:.0f} s per kind")
        if s["warmup_seconds"] > 0:
            for kind in KINDS:
                self.run_wrk(kind, max(1, s["warmup_seconds"]),
                             f"warm-{kind}")
                self.settle()
        runs = []
        order = list(KINDS)
        for rnd in range(s["rounds"]):
            # rotate the order so that no kind always runs first
            rot = order[rnd % 3:] + order[:rnd % 3]
            for kind in rot:
                runs.append(self.measure(kind, s["seconds"],
                                         f"r{rnd + 1}-{kind}"))
                self.settle()
        agg = {}
        for kind in KINDS:
            rs = [r for r in runs if r["kind"] == kind]
            dur = sum(r["duration_s"] for r in rs)
            ok = sum(r["requests"] - (r["non_2xx_3xx"]
                                      if kind == "intake" else 0)
                     for r in rs)
            den = sum(r["denominator"] for r in rs)
            cpu = sum(r["server_cpu_s"] for r in rs)
            agg[kind] = {
                "rate": ok / dur,
                "requests": sum(r["requests"] for r in rs),
                "denominator": den,
                "duration_s": dur,
                "server_cpu_s": cpu,
                "nginx_cpu_s": sum(r["cpu"]["nginx_s"] for r in rs),
                "redis_cpu_s": sum(r["cpu"]["redis_s"] for r in rs),
                "cpu_us_per_req": cpu / den * 1e6 if den else None,
                # wrk gives percentiles per run: the median of the runs
                "lat_p50_us": median([r["wrk"]["lat_p50_us"] for r in rs]),
                "lat_p99_us": median([r["wrk"]["lat_p99_us"] for r in rs]),
                "per_round_rate": [r["rate"] for r in rs],
                "per_round_cpu_us_per_req": [r["cpu_us_per_req"]
                                             for r in rs],
            }
            agg[kind]["nginx_us_per_req"] = (
                agg[kind]["nginx_cpu_s"] / den * 1e6 if den else None)
            agg[kind]["redis_us_per_req"] = (
                agg[kind]["redis_cpu_s"] / den * 1e6 if den else None)
        return runs, agg

    def open_loop(self, rate):
        s = self.s
        heads = {}
        for kind in ("return200", "intake"):
            path = RETURN200_PATH if kind == "return200" else INTAKE_PATH
            head = (f"POST {path} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{self.nginx_port}\r\n"
                    "Content-Type: application/json\r\n"
                    "X-Shopify-Topic: orders/create\r\n"
                    f"X-Shopify-Hmac-Sha256: {self.good_hmac}\r\n"
                    "X-Shopify-Shop-Domain: acme-demo.myshopify.com\r\n"
                    "X-Shopify-API-Version: 2024-04\r\n"
                    "X-Shopify-Triggered-At: "
                    "2026-03-16T14:12:33.000261327Z\r\n"
                    "X-Shopify-Webhook-Id: ")
            heads[kind] = os.path.join(self.tmp, f"head-{kind}.txt")
            with open(heads[kind], "w") as f:
                f.write(head)
        runs = []
        raw = {"return200": array.array("Q"), "intake": array.array("Q")}
        for rnd in range(s["ol_rounds"]):
            order = (["intake", "return200"] if rnd % 2 == 0
                     else ["return200", "intake"])
            for kind in order:
                tag = f"ol{rnd + 1}-{kind}"
                rawf = os.path.join(self.tmp, f"{tag}.lat")
                self.redis.cmd("LATENCY", "RESET")
                before = self.snapshot()
                cmd = [s["openloop"], "-p", str(self.nginx_port),
                       "-r", f"{rate:.1f}", "-d", str(s["ol_seconds"]),
                       "-w", "1", "-t", "5", "-c", str(s["conns"]),
                       "-H", heads[kind], "-b", self.body_file,
                       "-i", f"{self.run_id}-{tag}-", "-o", rawf]
                out, err, rc, spread = self.run_client(
                    cmd, s["ol_seconds"] + 1)
                if rc != 0:
                    raise RuntimeError(f"openloop failed: {err}")
                o = json.loads(out)
                o["conns_per_worker"] = spread
                self.check_spread(tag, spread)
                time.sleep(0.3)
                after = self.snapshot()
                d = self.cpu_delta(before, after)
                a = array.array("Q")
                with open(rawf, "rb") as f:
                    a.frombytes(f.read())
                raw[kind].extend(a)
                good = o["status"].get("200", 0)
                if good != o["completed"] or o["errors"] or o["unanswered"]:
                    self.problems.append(
                        f"{tag}: {o['completed']} answered, {good} with "
                        f"200, {o['errors']} errors, {o['unanswered']} "
                        "unanswered")
                if o["send_lag_p99_us"] > 5000:
                    self.problems.append(
                        f"{tag}: the client itself ran late (send lag p99 "
                        f"{o['send_lag_p99_us'] / 1000:.1f} ms): the machine "
                        "was busy")
                if o["waited_for_conn"]:
                    self.problems.append(
                        f"{tag}: the server fell behind the offered rate: "
                        f"{o['waited_for_conn']} requests found all "
                        f"{s['conns']} connections busy (their latency is "
                        "still counted from when they were due)")
                cpu = d["nginx_s"] + (d["redis_s"] if kind == "intake" else 0)
                den = (d["entries_added"] if kind == "intake"
                       else o["completed"])
                r = {"kind": kind, "tag": tag, "client": o, "cpu": d,
                     "redis_stalls": self.redis_stalls(),
                     "server_cpu_s": cpu,
                     "cpu_us_per_req": cpu / den * 1e6 if den else None}
                runs.append(r)
                log(f"{tag:22s} {rate:9.0f} req/s offered  p50 "
                    f"{o['lat_p50_us'] / 1000:7.3f} ms  p99 "
                    f"{o['lat_p99_us'] / 1000:7.3f} ms  send lag p99 "
                    f"{o['send_lag_p99_us'] / 1000:.3f} ms  waited "
                    f"{o['waited_for_conn']}  conns {spread}"
                    + stall_text(r["redis_stalls"]))
                self.check_workers(tag)
                self.settle()
        agg = {}
        for kind, a in raw.items():
            v = sorted(a)
            rs = [r for r in runs if r["kind"] == kind]
            agg[kind] = {
                "samples": len(v),
                "lat_p50_us": pct(v, 50) / 1000,
                "lat_p90_us": pct(v, 90) / 1000,
                "lat_p99_us": pct(v, 99) / 1000,
                "lat_p999_us": pct(v, 99.9) / 1000,
                "lat_max_us": v[-1] / 1000 if v else None,
                "send_lag_p99_us_max": max(r["client"]["send_lag_p99_us"]
                                           for r in rs),
                "cpu_us_per_req": median([r["cpu_us_per_req"] for r in rs]),
            }
        return runs, agg

    def rss(self):
        s = self.s
        n = s["rss_deliveries"]
        self.check_workers("before the RSS phase")
        before = {str(p): rss_kb(p) for p in self.workers}
        e0 = self.redis.entries_added()
        # the disk is small: let redis compact its AOF as in production
        self.redis.cmd("CONFIG", "SET", "auto-aof-rewrite-percentage", "100")

        mac = self.good_hmac
        cmd = ["wrk", "-t", str(s["wrk_threads"]), "-c", str(s["conns"]),
               "-d", f"{s['rss_timeout']}s", "--timeout", "5s",
               "-s", os.path.join(BENCH, "wrk-delivery.lua"),
               self.url("intake"), "--", self.body_file, mac,
               f"{self.run_id}-rss", str(n)]
        env = dict(os.environ, BENCH_WRK_THREADS=str(s["wrk_threads"]))
        out = tempfile.TemporaryFile(mode="w+")
        t_start = time.monotonic()
        wrk = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                               text=True, env=env)
        series = []
        trims = 0
        delivered = 0
        try:
            # every second: trim the stream, sample the workers' RSS; ends
            # once n deliveries are in, wrk stops, or at the time limit
            deadline = t_start + s["rss_timeout"] + 30
            while time.monotonic() < deadline:
                self.redis.cmd("XTRIM", STREAM, "MAXLEN", "1000")
                trims += 1
                delivered = self.redis.entries_added() - e0
                series.append({
                    "t": round(time.monotonic() - t_start, 1),
                    "deliveries": delivered,
                    "rss_kb": {str(p): rss_kb(p) for p in self.workers}})
                # each wrk thread may stop one short of its quota
                if delivered >= n - s["wrk_threads"] or wrk.poll() is not None:
                    break
                time.sleep(1.0)
        finally:
            if wrk.poll() is None:
                wrk.send_signal(signal.SIGINT)     # wrk prints its summary
            try:
                wrk.wait(timeout=30)
            except subprocess.TimeoutExpired:
                wrk.kill()
                wrk.wait()
        elapsed = time.monotonic() - t_start
        out.seek(0)
        text = out.read()
        out.close()
        m = re.search(r"^WRKJSON (\{.*\})$", text, re.M)
        w = json.loads(m.group(1)) if m else None
        time.sleep(1.0)
        delivered = self.redis.entries_added() - e0
        after = {str(p): rss_kb(p) for p in self.workers}
        self.check_workers("during the RSS phase")
        self.redis.cmd("CONFIG", "SET", "auto-aof-rewrite-percentage", "0")
        self.settle()
        self.rewrite_aof()
        growth = {p: after[p] - before[p] for p in before if p in after}
        if delivered < n - s["wrk_threads"]:
            self.problems.append(
                f"RSS phase: only {delivered} of {n} deliveries enqueued "
                f"within {s['rss_timeout']} s")
        if w is None:
            self.problems.append(f"RSS phase: no wrk summary: {text[-500:]}")
        elif w["err_status"]:
            self.problems.append(
                f"RSS phase: {w['err_status']} answers were not 2xx")
        log(f"RSS: {delivered} deliveries in {elapsed:.0f} s, worker RSS "
            f"before {before} kB, after {after} kB")
        return {"deliveries_requested": n, "deliveries_enqueued": delivered,
                "elapsed_s": elapsed, "wrk": w, "rss_before_kb": before,
                "rss_after_kb": after, "growth_kb": growth,
                "max_growth_kb": max(growth.values()) if growth else None,
                "total_growth_kb": sum(growth.values()) if growth else None,
                "trims": trims, "series": series}

    def error_log_summary(self):
        levels = {}
        samples = {}
        with open(self.error_log, errors="replace") as f:
            for line in f:
                m = re.match(r"\S+ \S+ \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)",
                             line)
                if not m:
                    continue
                lvl, msg = m.groups()
                levels[lvl] = levels.get(lvl, 0) + 1
                key = re.sub(r"\d+", "N", msg.split(",")[0])[:120]
                if lvl in ("warn", "error", "crit", "alert", "emerg"):
                    samples.setdefault(lvl, {})
                    samples[lvl][key] = samples[lvl].get(key, 0) + 1
        for lvl in ("crit", "alert", "emerg"):
            if levels.get(lvl):
                self.problems.append(
                    f"error log: {levels[lvl]} lines at [{lvl}]")
        return {"lines_by_level": levels, "messages": samples}

    # ----------------------------------------------------------------- run

    def run(self):
        s = self.s
        started = datetime.datetime.now(datetime.timezone.utc)
        self.run_id = "b" + started.strftime("%H%M%S") + f"p{os.getpid()}"
        self.setup()

        log(f"closed loop: {s['rounds']} rounds x {s['seconds']:.0f} s per "
            f"kind, {s['conns']} connections, {s['wrk_threads']} wrk threads")
        cl_runs, cl = self.closed_loop()

        rate = s["ol_rate"] or s["ol_fraction"] * cl["intake"]["rate"]
        log(f"open loop at {rate:.0f} req/s: {s['ol_rounds']} rounds x "
            f"{s['ol_seconds']:.0f} s per kind")
        ol_runs, ol = self.open_loop(rate)

        rss = None
        if s["rss_deliveries"] > 0:
            log(f"RSS: {s['rss_deliveries']} deliveries, stream trimmed "
                "to 1000 entries every second")
            rss = self.rss()

        errlog = self.error_log_summary()
        status = self.get("/status") or b""
        status = status.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
        finished = datetime.datetime.now(datetime.timezone.utc)

        r200, intake, bad = cl["return200"], cl["intake"], cl["badsig"]
        ratios = {
            "cpu_per_req_intake_over_return200":
                intake["cpu_us_per_req"] / r200["cpu_us_per_req"],
            "throughput_intake_over_return200":
                intake["rate"] / r200["rate"],
            "cpu_per_req_badsig_over_return200":
                bad["cpu_us_per_req"] / r200["cpu_us_per_req"],
            "throughput_badsig_over_return200": bad["rate"] / r200["rate"],
            "open_loop_p99_intake_over_return200":
                ol["intake"]["lat_p99_us"] / ol["return200"]["lat_p99_us"],
            "open_loop_p50_intake_over_return200":
                ol["intake"]["lat_p50_us"] / ol["return200"]["lat_p50_us"],
        }
        per_round = []
        for rnd in range(s["rounds"]):
            by = {r["kind"]: r for r in cl_runs
                  if r["tag"].startswith(f"r{rnd + 1}-")}
            per_round.append({
                "cpu_ratio": by["intake"]["cpu_us_per_req"]
                / by["return200"]["cpu_us_per_req"],
                "throughput_ratio": by["intake"]["rate"]
                / by["return200"]["rate"]})
        ratios["per_round"] = per_round

        bars = [
            {"bar": "server CPU per accepted delivery <= 3x return 200",
             "value": ratios["cpu_per_req_intake_over_return200"],
             "limit": 3.0,
             "pass": ratios["cpu_per_req_intake_over_return200"] <= 3.0},
            {"bar": "intake throughput >= 50% of return 200",
             "value": ratios["throughput_intake_over_return200"],
             "limit": 0.5,
             "pass": ratios["throughput_intake_over_return200"] >= 0.5},
            {"bar": "open-loop p99 at half the intake max <= 3x return 200",
             "value": ratios["open_loop_p99_intake_over_return200"],
             "limit": 3.0,
             "pass": ratios["open_loop_p99_intake_over_return200"] <= 3.0},
        ]
        if rss:
            bars.append({
                "bar": f"nginx worker RSS growth over "
                       f"{rss['deliveries_enqueued']} deliveries <= 1 MB",
                "value": rss["max_growth_kb"], "limit": 1024,
                "pass": rss["max_growth_kb"] <= 1024
                and rss["deliveries_enqueued"] >= s["rss_deliveries"]})

        result = {
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "settings": {k: v for k, v in s.items()
                         if k not in ("results_dir",)},
            "environment": self.environment(),
            "body": {"bytes": len(self.body),
                     "sha256": hashlib.sha256(self.body).hexdigest(),
                     "what": self.body_note},
            "cpu_accounting": (
                "utime+stime deltas from /proc/<pid>/stat of the 2 nginx "
                f"workers (+ redis-server for the intake), USER_HZ={HZ}; "
                "per request = CPU seconds / requests answered "
                "(intake: / stream entries added)"),
            "closed_loop": {"aggregate": cl, "runs": cl_runs},
            "open_loop": {"rate": rate, "aggregate": ol, "runs": ol_runs},
            "rss": rss,
            "ratios": ratios,
            "bars": bars,
            "error_log": errlog,
            # the module's own counters (shopify_status) at the end
            "module_metrics": [l for l in status.splitlines()
                               if l and not l.startswith("#")
                               and not l.endswith(" 0")],
            "redis_config": self.redis_config,
            "nginx_conf": self.nginx_conf_text,
            "problems": self.problems,
        }
        os.makedirs(s["results_dir"], exist_ok=True)
        out = os.path.join(
            s["results_dir"],
            "intake-" + started.strftime("%Y%m%dT%H%M%SZ") + ".json")
        with open(out, "w") as f:
            json.dump(result, f, indent=1, sort_keys=False)
            f.write("\n")
        print_table(result)
        print(f"\nresults: {os.path.relpath(out, os.getcwd())}")
        return result

    def environment(self):
        def first_line(cmd):
            try:
                p = subprocess.run(cmd, capture_output=True, text=True,
                                   timeout=10)
                return (p.stdout + p.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.SubprocessError):
                return None
        with open(self.module, "rb") as f:
            so_sha = hashlib.sha256(f.read()).hexdigest()
        git = first_line(["git", "-C", TOP, "rev-parse", "--short", "HEAD"])
        dirty = first_line(["git", "-C", TOP, "status", "--porcelain",
                            "--", "ngx_shopify_module", "config"])
        cpu = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        return {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu,
            "nginx": first_line([self.s["nginx"], "-v"]),
            "redis": first_line(["redis-server", "--version"]),
            "wrk": first_line(["wrk", "-v"]),
            "module_sha256": so_sha,
            "module_mtime": datetime.datetime.fromtimestamp(
                os.path.getmtime(self.s["module"])).isoformat(
                    timespec="seconds"),
            "git_head": git,
            "module_source_modified": bool(dirty),
        }


def stall_text(stalls):
    if not stalls:
        return ""
    return "  redis stalls: " + ", ".join(
        f"{k} max {v['max_ms']} ms in {v['seconds_with_stall']} s"
        for k, v in sorted(stalls.items()))


def median(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def pct(v, p):
    """Nearest rank, as openloop.c does."""
    if not v:
        return float("nan")
    k = max(1, min(len(v), int(p / 100 * len(v) + 0.999999)))
    return v[k - 1]


def print_table(res):
    cl = res["closed_loop"]["aggregate"]
    ol = res["open_loop"]["aggregate"]
    st = res["settings"]
    print()
    print(f"intake benchmark: {res['body']['bytes']} B orders/create, "
          f"{st['conns']} keep-alive connections, 2 nginx workers, "
          f"{st['rounds']} rounds x {st['seconds']:.0f} s")
    print()
    print(f"{'closed loop (wrk)':22s} {'req/s':>9s} {'p50 ms':>8s} "
          f"{'p99 ms':>8s} {'CPU us/req':>11s}  (nginx + redis)")
    for kind in KINDS:
        a = cl[kind]
        redis = f"+ {a['redis_us_per_req']:.1f}" if kind == "intake" else ""
        print(f"{LABEL[kind]:22s} {a['rate']:9.0f} "
              f"{a['lat_p50_us'] / 1000:8.2f} {a['lat_p99_us'] / 1000:8.2f} "
              f"{a['cpu_us_per_req']:11.1f}  ({a['nginx_us_per_req']:.1f} "
              f"{redis})")
    print()
    print(f"open loop at {res['open_loop']['rate']:.0f} req/s "
          f"{'p50 ms':>9s} {'p99 ms':>8s} {'p99.9 ms':>9s} {'CPU us/req':>11s}")
    for kind in ("return200", "intake"):
        a = ol[kind]
        print(f"{LABEL[kind]:26s} {a['lat_p50_us'] / 1000:9.3f} "
              f"{a['lat_p99_us'] / 1000:8.3f} {a['lat_p999_us'] / 1000:9.3f} "
              f"{a['cpu_us_per_req']:11.1f}")
    worst = {}
    for run in res["open_loop"]["runs"]:
        if run["kind"] == "intake":
            for k, v in run["redis_stalls"].items():
                worst[k] = max(worst.get(k, 0), v["max_ms"])
    if worst:
        print("redis stalls over 2 ms during the intake open loop (worst): "
              + ", ".join(f"{k} {v} ms" for k, v in sorted(worst.items())))
    r = res["ratios"]
    print()
    print("intake / return 200: CPU per request "
          f"{r['cpu_per_req_intake_over_return200']:.2f}x, throughput "
          f"{r['throughput_intake_over_return200'] * 100:.0f}%, open-loop "
          f"p99 {r['open_loop_p99_intake_over_return200']:.2f}x")
    print("bad signature / return 200: CPU per request "
          f"{r['cpu_per_req_badsig_over_return200']:.2f}x, throughput "
          f"{r['throughput_badsig_over_return200'] * 100:.0f}%")
    if res["rss"]:
        x = res["rss"]
        print(f"RSS over {x['deliveries_enqueued']} deliveries: "
              + ", ".join(f"worker {p}: {x['rss_before_kb'][p]} -> "
                          f"{x['rss_after_kb'][p]} kB "
                          f"({x['growth_kb'][p]:+d})"
                          for p in x["rss_before_kb"]))
    print()
    for b in res["bars"]:
        val = b["value"]
        shown = (f"{val * 100:.0f}%" if b["limit"] == 0.5
                 else f"{val:+d} kB" if b["limit"] == 1024
                 else f"{val:.2f}x")
        print(f"  [{'PASS' if b['pass'] else 'FAIL'}] {b['bar']}: {shown}")
    if res["problems"]:
        print("\nproblems seen during the run:")
        for p in res["problems"]:
            print(f"  - {p}")


def main():
    s = settings()
    for path in (s["nginx"], s["module"], s["openloop"]):
        if not os.path.exists(path):
            sys.exit(f"bench: {path} is missing")
    b = Bench(s)

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        res = b.run()
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        b.teardown()
    if s["strict"] and not all(x["pass"] for x in res["bars"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
