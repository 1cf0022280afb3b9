#!/usr/bin/env python3
"""Worker throughput benchmark: shopify-bc-worker against the BC sandbox.

Started by bench/worker.sh inside scripts/pg-throwaway.sh (so PG* point at
a throwaway PostgreSQL cluster).  For each regime it starts a private
Redis, a sandbox with BC's latency and limits, fills the stream with
fresh orders the way nginx writes them, runs the worker until every order
is booked, reads the sandbox's request log and checks that every order
became exactly one BC sales order.  bench/README.md ("Worker throughput")
explains the figures and the ceiling.
"""

import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "bench"))

import intake  # noqa: E402  (the intake bench's settings and port helpers)
WORKER = os.environ.get("BENCH_WORKER_BIN") or os.path.join(
    TOP, "worker", "build", "shopify-bc-worker")
SANDBOX = os.path.join(TOP, "sandbox", "sandbox.py")
FIXTURES = os.path.join(TOP, "fixtures")
STREAM = "shopify:webhooks"
GROUP = "bc-sync"
TENANT = "bench-tenant"
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret-not-a-real-one"
USD_COMPANY = "31b7c38b-2d4e-5437-beff-68c052310a74"
EUR_COMPANY = "a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6"

# fixtures whose BC total equals Shopify's at once (no variance line):
# each costs one POST, plus a customer look-up the first time its e-mail
# is seen in its company (bench/README.md, "What an order costs")
DEFAULT_FIXTURES = "basic,unicode,guest-pos,multicurrency,long-name"

BC_PATH = re.compile(r"^/v2\.0/[^/]+/[^/]+/api/v2\.0(/.*)?$")
TOKEN_PATH = re.compile(r"^/[^/]+/oauth2/v2\.0/token$")


def log(msg):
    print("bench-worker: " + msg, file=sys.stderr, flush=True)


def env_num(name, default, cast=float, lo=None, hi=None):
    return intake.env_num(name, default, cast, lo, hi, prog="bench-worker")


def settings():
    s = {}
    s["regimes"] = [r for r in os.environ.get(
        "BENCH_WORKER_REGIMES", "rate,concurrency").split(",") if r]
    for r in s["regimes"]:
        if r not in ("rate", "concurrency"):
            sys.exit(f"bench-worker: unknown regime {r!r} "
                     "(BENCH_WORKER_REGIMES: rate, concurrency)")
    s["latency_ms"] = env_num("BENCH_WORKER_LATENCY_MS", 100.0, float, 1, 10000)
    s["max_concurrent"] = env_num("BENCH_WORKER_MAX_CONCURRENT", 5, int, 1, 100)
    s["max_queue"] = env_num("BENCH_WORKER_MAX_QUEUE", 95, int, 0, 1000)
    s["rate_limit"] = env_num("BENCH_WORKER_RATE_LIMIT", 200, int, 1, 100000)
    s["rate_window_s"] = env_num("BENCH_WORKER_RATE_WINDOW_S", 10.0, float, 1, 600)
    s["windows"] = env_num("BENCH_WORKER_WINDOWS", 5, int, 1, 100)
    s["margin_ms"] = env_num("BENCH_WORKER_MARGIN_MS", 100, int, 0, 60000)
    s["conc_seconds"] = env_num("BENCH_WORKER_CONC_SECONDS", 30.0, float, 5, 600)
    s["conc_warmup_s"] = env_num("BENCH_WORKER_CONC_WARMUP_S", 5.0, float, 0, 60)
    s["conc_rate_limit"] = env_num("BENCH_WORKER_CONC_RATE_LIMIT", 100000, int,
                                   1000, 1000000)
    s["threads"] = env_num("BENCH_WORKER_THREADS", 10, int, 1, 64)
    s["inflight"] = env_num("BENCH_WORKER_INFLIGHT", 0, int, 0, 100)
    s["headroom"] = env_num("BENCH_WORKER_HEADROOM", 1.1, float, 1.0, 3.0)
    s["orders"] = env_num("BENCH_WORKER_ORDERS", 0, int, 0, 1000000)
    s["emails"] = os.environ.get("BENCH_WORKER_EMAILS", "fixture")
    if s["emails"] not in ("fixture", "unique"):
        sys.exit("bench-worker: BENCH_WORKER_EMAILS is fixture or unique")
    s["fixtures"] = [f for f in os.environ.get(
        "BENCH_WORKER_FIXTURES", DEFAULT_FIXTURES).split(",") if f]
    s["pg_fsync"] = env_num("BENCH_WORKER_PG_FSYNC", 1, int, 0, 1)
    s["timeout_s"] = env_num("BENCH_WORKER_TIMEOUT_S", 600, int, 30, 7200)
    s["strict"] = env_num("BENCH_STRICT", 0, int, 0, 1)
    s["keep_tmp"] = env_num("BENCH_KEEP_TMP", 0, int, 0, 1)
    s["results_dir"] = os.environ.get("BENCH_RESULTS_DIR",
                                      os.path.join(TOP, "bench", "results"))
    return s


def wait_for(what, seconds, fn, interval=0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{what}: not ready after {seconds} s")


def cpu_s(pid):
    """User + system CPU seconds of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def parse_iso(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


# --------------------------------------------------------------------------

def psql(sql, db="postgres"):
    out = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db,
                          "-c", sql], capture_output=True, text=True,
                         env=dict(os.environ,
                                  PGOPTIONS="-c client_min_messages=warning"))
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()}")
    return [line.split("|") for line in out.stdout.splitlines()]


def http_json(url, method="GET", body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def http_text(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


# --------------------------------------------------------------------------

def shop_of(fixture_file, headers):
    h = headers.get(os.path.basename(fixture_file), {})
    return h.get("X-Shopify-Shop-Domain", "acme-demo.myshopify.com")


def order_email(order):
    """The address the worker matches the customer by (customer.c)."""
    for v in ((order.get("customer") or {}).get("email"), order.get("email"),
              order.get("contact_email")):
        if isinstance(v, str) and "@" in v.strip():
            return v.strip()
    return None


def load_templates(s):
    """The fixture orders in turn, each with its shop and what it costs:
    one POST, and with BENCH_WORKER_EMAILS=unique a customer look-up for
    every order that has an e-mail (with fixture e-mails the look-up is
    made once per address and company, then cached for 10 minutes)."""
    meta = json.load(open(os.path.join(FIXTURES, "meta",
                                       "webhook-headers.json")))["headers"]
    out = []
    for name in s["fixtures"]:
        path = os.path.join(FIXTURES, "shopify", f"orders-create-{name}.json")
        if not os.path.exists(path):
            sys.exit(f"bench-worker: no fixture {path}")
        order = json.load(open(path))
        cost = 1 + (1 if s["emails"] == "unique" and order_email(order) else 0)
        out.append({"name": name, "order": order, "shop": shop_of(path, meta),
                    "calls": cost})
    return out


def make_orders(s, templates, n, base_id):
    """n distinct orders/create deliveries: the fixtures in turn, each with
    a fresh order id (and, with BENCH_WORKER_EMAILS=unique, an e-mail BC
    does not know)."""
    out = []
    for i in range(n):
        t = templates[i % len(templates)]
        order = json.loads(json.dumps(t["order"]))
        oid = base_id + i
        order["id"] = oid
        order["order_number"] = 100000 + i
        order["name"] = f"#B{100000 + i}"
        order["admin_graphql_api_id"] = f"gid://shopify/Order/{oid}"
        if s["emails"] == "unique" and order_email(order):
            email = f"bench.buyer.{oid}@example.com"
            for holder in (order, order.get("customer")):
                if isinstance(holder, dict):
                    for k in ("email", "contact_email"):
                        if holder.get(k):
                            holder[k] = email
        # compact, with Shopify's escaped slashes
        body = json.dumps(order, separators=(",", ":"),
                          ensure_ascii=False).replace("/", "\\/").encode()
        out.append({"id": oid, "fixture": t["name"], "shop": t["shop"], "body": body})
    return out


def classify(e):
    """What a BC API call of the request log was."""
    path, method = e["path"], e["method"]
    m = BC_PATH.match(path)
    rest = (m.group(1) or "") if m else ""
    if method == "POST" and rest.endswith("/salesOrders"):
        return "create_order"
    if method == "GET" and rest.endswith("/customers"):
        return "customer_lookup"
    if method == "POST" and rest.endswith("/customers"):
        return "customer_create"
    if method == "POST" and rest.endswith("/salesOrderLines"):
        return "variance_line"
    if method == "GET" and re.search(r"/sales(Orders|Invoices|Shipments)$", rest):
        return "lookup"
    if method == "GET" and re.search(r"/salesOrders\([^)]*\)$", rest):
        return "order_read"
    return "other"


# --------------------------------------------------------------------------

class Run:
    """One regime: its own Redis, database, sandbox and worker."""

    def __init__(self, s, regime, tmp):
        self.s = s
        self.regime = regime
        self.dir = os.path.join(tmp, regime)
        os.makedirs(self.dir)
        self.procs = []
        self.problems = []
        lat = s["latency_ms"] / 1000.0
        if regime == "rate":
            self.sb_limit, self.sb_window = s["rate_limit"], s["rate_window_s"]
        else:
            # rate limit out of the way: the concurrency bound decides
            self.sb_limit, self.sb_window = s["conc_rate_limit"], 300.0
        self.conc_bound = s["max_concurrent"] / lat
        self.rate_bound = self.sb_limit / self.sb_window
        self.ceiling = min(self.conc_bound, self.rate_bound)
        self.templates = load_templates(s)
        self.calls_per_order = (sum(t["calls"] for t in self.templates)
                                / len(self.templates))
        self.ceiling_orders = self.ceiling / self.calls_per_order
        if regime == "rate":
            self.warmup = self.sb_window
            self.measure = s["windows"] * self.sb_window
        else:
            self.warmup = s["conc_warmup_s"]
            self.measure = s["conc_seconds"]
        self.n = s["orders"] or int(self.ceiling_orders * (self.warmup + self.measure)
                                    * s["headroom"]) + 20

    # -- processes ---------------------------------------------------------
    def spawn(self, name, argv, env=None):
        logf = open(os.path.join(self.dir, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        logf.close()
        self.procs.append((name, p))
        return p

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []

    def start_redis(self):
        self.redis_port = intake.free_port()
        self.spawn("redis", [
            "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", self.dir, "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--maxmemory-policy", "noeviction"])
        self.redis = wait_for("redis", 15, lambda: intake.Redis(self.redis_port))
        wait_for("redis ping", 15, lambda: self.redis.cmd("PING") == "PONG")

    def start_sandbox(self):
        s = self.s
        self.sb_port = intake.free_port()
        self.sb_url = f"http://127.0.0.1:{self.sb_port}"
        self.spawn("sandbox", [
            sys.executable, SANDBOX, "serve", "--host", "127.0.0.1",
            "--port", str(self.sb_port), "--quiet", "--tenant", TENANT,
            "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
            "--latency-ms", str(s["latency_ms"]),
            "--max-concurrent", str(s["max_concurrent"]),
            "--max-queue", str(s["max_queue"]),
            "--rate-limit", str(self.sb_limit),
            "--rate-window-s", str(self.sb_window)])
        wait_for("sandbox", 30, lambda: http_json(self.sb_url + "/_sandbox/health"))

    def create_db(self):
        self.db = f"bench_worker_{self.regime}"
        psql(f"DROP DATABASE IF EXISTS {self.db}")
        psql(f"CREATE DATABASE {self.db}")

    def worker_env(self):
        s = self.s
        self.metrics_port = intake.free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BC365_", "SHOPIFY_", "WORKER_", "STREAM_"))}
        env.update({
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DATABASE_URL": f"dbname={self.db}",
            "STREAM_KEY": STREAM, "STREAM_GROUP": GROUP,
            "WORKER_NAME": f"bench-{self.regime}",
            "WORKER_CONCURRENCY": str(s["threads"]),
            "BC365_TENANT_ID": TENANT, "BC365_CLIENT_ID": CLIENT_ID,
            "BC365_CLIENT_SECRET": CLIENT_SECRET,
            "BC365_ENVIRONMENT": "production", "BC365_COMPANY_ID": USD_COMPANY,
            "BC365_API_BASE": self.sb_url, "BC365_AUTH_BASE": self.sb_url,
            "BC365_DEFAULT_CUSTOMER": "WEB", "BC365_SHIPPING_ACCOUNT": "40400",
            "BC365_ROUNDING_ACCOUNT": "40900",
            # the sandbox's G/L accounts, so that the no-SKU fixture maps too
            "BC365_GIFT_CARD_ACCOUNT": "22150", "BC365_TIP_ACCOUNT": "22300",
            "BC365_CUSTOM_LINE_ACCOUNT": "40250",
            "BC365_COMPANIES": json.dumps({
                "acme-demo-eu.myshopify.com": EUR_COMPANY,
                "acme-europe-webshop.myshopify.com": EUR_COMPANY}),
            "VARIANT_MAP_FILE": os.path.join(FIXTURES, "meta", "variant-map.json"),
            # the worker's limiter as an operator sets it: BC's limit, the
            # window plus a margin
            "BC365_RATE_LIMIT_REQUESTS": str(self.sb_limit),
            "BC365_RATE_LIMIT_WINDOW_MS": str(int(round(self.sb_window * 1000))
                                              + s["margin_ms"]),
            "METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "LOG_LEVEL": "info",
        })
        if s["inflight"]:
            env["BC365_MAX_CONCURRENT"] = str(s["inflight"])
        self.env_shown = {k: env[k] for k in sorted(env) if k.startswith(
            ("BC365_RATE", "BC365_MAX", "WORKER_CONC"))}
        # the worker's own default (README, "Worker settings")
        self.env_shown.setdefault("BC365_MAX_CONCURRENT", "8 (default)")
        return env

    # -- the run -----------------------------------------------------------
    def enqueue(self, orders):
        now_ms = int(time.time() * 1000)
        triggered = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%f000Z")
        for i in range(0, len(orders), 200):
            cmds = []
            for o in orders[i:i + 200]:
                # the fields and their order as ngx_http_shopify_module writes them
                cmds.append(["XADD", STREAM, "*", "topic", "orders/create",
                             "shop", o["shop"], "webhook_id", str(uuid.uuid4()),
                             "api_version", "2024-04", "triggered_at", triggered,
                             "event_id", str(uuid.uuid4()),
                             "received_at", str(now_ms), "body", o["body"]])
            self.redis.pipeline(cmds)
        got = self.redis.cmd("XLEN", STREAM)
        if got != len(orders):
            raise RuntimeError(f"stream has {got} entries, {len(orders)} enqueued")

    def ledger_counts(self):
        rows = psql("SELECT state, count(*) FROM bc_order_ledger GROUP BY state",
                    self.db)
        return {r[0]: int(r[1]) for r in rows}

    def run(self):
        s = self.s
        self.start_redis()
        self.start_sandbox()
        self.create_db()
        base_id = int(time.time() * 1000) * 1000 + (0 if self.regime == "rate" else 500)
        orders = make_orders(s, self.templates, self.n, base_id)
        self.orders = orders
        log(f"{self.regime}: {self.n} orders into the stream")
        self.enqueue(orders)
        env = self.worker_env()
        log(f"{self.regime}: worker with {self.env_shown}; sandbox "
            f"{s['max_concurrent']} at once x {s['latency_ms']:g} ms, "
            f"{self.sb_limit} per {self.sb_window:g} s")
        t_start = time.time()
        worker = self.spawn("worker", [WORKER], env)
        deadline = time.monotonic() + s["timeout_s"]
        counts = {}
        last_print = 0
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                self.problems.append(f"the worker exited with status {worker.returncode}")
                break
            try:
                counts = self.ledger_counts()
            except RuntimeError:
                counts = {}     # the table is not there yet
            done = counts.get("created", 0) + counts.get("failed", 0)
            if done >= self.n:
                break
            if time.monotonic() - last_print > 10:
                log(f"{self.regime}: {counts.get('created', 0)}/{self.n} booked "
                    f"after {time.time() - t_start:.0f} s")
                last_print = time.monotonic()
            time.sleep(0.5)
        else:
            self.problems.append(f"not every order was booked within {s['timeout_s']} s")
        t_done = time.time()
        self.cpu = {name: cpu_s(p.pid) for name, p in self.procs}
        self.loadavg = open("/proc/loadavg").read().split()[:3]
        # the metrics before the worker stops
        try:
            self.metrics = http_text(f"http://127.0.0.1:{self.metrics_port}/metrics")
        except OSError:
            self.metrics = ""
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                self.problems.append("the worker did not stop within 30 s of SIGTERM")
                worker.kill()
                worker.wait()
        self.worker_status = worker.returncode
        self.wall_s = t_done - t_start
        return self.analyse()

    # -- figures -----------------------------------------------------------
    def analyse(self):
        s = self.s
        reqlog = http_json(self.sb_url + "/_sandbox/requests")
        if s["keep_tmp"]:
            with open(os.path.join(self.dir, "requests.json"), "w") as f:
                json.dump(reqlog, f)
        if reqlog.get("dropped"):
            self.problems.append(f"the sandbox dropped {reqlog['dropped']} log entries")
        stats = http_json(self.sb_url + "/_sandbox/stats")["principals"].get(CLIENT_ID, {})
        bc, token = [], []
        for e in reqlog["value"]:
            e["start"] = parse_iso(e["time"]) - e["durationMs"] / 1000.0
            if TOKEN_PATH.match(e["path"]):
                token.append(e)
            elif BC_PATH.match(e["path"]):
                e["op"] = classify(e)
                bc.append(e)
        bc.sort(key=lambda e: e["start"])
        if not bc:
            raise RuntimeError(f"{self.regime}: no BC call in the sandbox's log")
        t0 = bc[0]["start"]
        accepted = [e for e in bc if e["status"] != 429]

        def count(pred, lo, hi):
            return sum(1 for e in bc if lo <= e["start"] < hi and pred(e))

        def is_order(e):
            return e["op"] == "create_order" and e["status"] == 201

        # whole windows (or seconds) after the first: a clock started at
        # the first call
        a, b = t0 + self.warmup, t0 + self.warmup + self.measure
        timed = {"from_s": self.warmup, "length_s": self.measure,
                 "calls": count(lambda e: e["status"] != 429, a, b),
                 "orders_created": count(is_order, a, b)}
        timed["calls_s"] = timed["calls"] / self.measure
        timed["orders_s"] = timed["orders_created"] / self.measure
        clock = "time"
        L, k = self.sb_limit, s["windows"]
        if self.regime == "rate" and len(accepted) > L * (k + 1):
            # the clock of the sliding window: how long the budget of k
            # windows took to spend once the first window's was spent,
            # from the start of call L+1 to the start of call L*(k+1)+1
            a, b = accepted[L]["start"], accepted[L * (k + 1)]["start"]
            part = accepted[L:L * (k + 1)]
            calls = len(part)
            created = sum(1 for e in part if is_order(e))
            clock = "budget"
        else:
            if self.regime == "rate":
                self.problems.append(
                    f"fewer than {L * (k + 1) + 1} accepted calls: the budget clock "
                    "could not run, the figures use whole windows")
            calls, created = timed["calls"], timed["orders_created"]
        measure = b - a
        c429 = count(lambda e: e["status"] == 429, a, b)
        last_create = max((e["start"] for e in bc if is_order(e)), default=t0)
        if last_create < b:
            self.problems.append(
                f"the backlog ran out {b - last_create:.1f} s before the measured "
                "interval ended (raise BENCH_WORKER_HEADROOM or BENCH_WORKER_ORDERS)")
        ops, statuses = {}, {}
        for e in bc:
            ops[e["op"]] = ops.get(e["op"], 0) + 1
            statuses[str(e["status"])] = statuses.get(str(e["status"]), 0) + 1
        total = len(bc)
        total429 = sum(1 for e in bc if e["status"] == 429)
        ops_in = {}
        for e in bc:
            if a <= e["start"] < b:
                ops_in[e["op"]] = ops_in.get(e["op"], 0) + 1
        # calls per second (or per window) from the first call on
        step = self.sb_window if self.regime == "rate" else 1.0
        series = []
        t = t0
        while t < bc[-1]["start"]:
            series.append(count(lambda e: e["status"] != 429, t, t + step))
            t += step
        durations = sorted(e["durationMs"] for e in bc if a <= e["start"] < b
                           and e["status"] != 429)
        verify = self.verify()
        calls_s = calls / measure
        orders_s = created / measure
        res = {
            "regime": self.regime,
            "orders": self.n,
            "fixtures": {t["name"]: {"shop": t["shop"], "calls": t["calls"]}
                         for t in self.templates},
            "emails": s["emails"],
            "sandbox": {"latency_ms": s["latency_ms"], "max_concurrent": s["max_concurrent"],
                        "max_queue": s["max_queue"], "rate_limit": self.sb_limit,
                        "rate_window_s": self.sb_window, "stats": stats},
            "worker_env": self.env_shown,
            "ceiling": {
                "concurrency_bound_calls_s": self.conc_bound,
                "rate_bound_calls_s": self.rate_bound,
                "calls_s": self.ceiling,
                "calls_per_order": self.calls_per_order,
                "orders_s": self.ceiling_orders,
            },
            "interval": {"clock": clock, "from_first_call_s": a - t0, "length_s": measure,
                         "calls": calls, "calls_429": c429, "orders_created": created,
                         "ops": ops_in,
                         "duration_ms_p50": durations[len(durations) // 2] if durations else None,
                         "duration_ms_max": durations[-1] if durations else None},
            "whole_windows" if self.regime == "rate" else "whole_seconds": timed,
            "calls_s": calls_s,
            "orders_s": orders_s,
            "calls_ratio": calls_s / self.ceiling,
            "orders_ratio": orders_s / self.ceiling_orders,
            "measured_calls_per_order": (calls / created) if created else None,
            "whole_run": {"bc_calls": total, "bc_calls_429": total429,
                          "fraction_429": total429 / total if total else 0.0,
                          "token_calls": len(token),
                          "token_statuses": sorted({e["status"] for e in token}),
                          "ops": ops, "statuses": statuses,
                          "first_call_to_last_s": bc[-1]["start"] - t0,
                          "wall_s": self.wall_s,
                          "calls_per_order": (total - total429) / self.n},
            "series_step_s": step,
            "series": series,
            "verify": verify,
            "worker_exit_status": self.worker_status,
            "cpu_s": self.cpu,
            "loadavg_at_end": self.loadavg,
            "worker_metrics": [l for l in self.metrics.splitlines()
                               if l.startswith(("bc_requests_total", "worker_retries_total",
                                                "bc_orders_", "worker_stream_entries_total"))
                               and not l.endswith(" 0")],
            "problems": self.problems,
        }
        return res

    def verify(self):
        docs = http_json(self.sb_url + "/_sandbox/orders", timeout=300)["value"]
        per = {}
        for d in docs:
            ext = (d.get("order") or {}).get("externalDocumentNumber", "")
            per[ext] = per.get(ext, 0) + 1
        ours = {f"SHOPIFY-{o['id']}" for o in self.orders}
        missing = [x for x in ours if per.get(x, 0) == 0]
        dup = [x for x in ours if per.get(x, 0) > 1]
        strangers = sum(n for x, n in per.items() if x not in ours)
        ledger = self.ledger_counts()
        created = int(psql(
            "SELECT count(*) FROM bc_order_ledger WHERE state = 'created' "
            "AND bc_number IS NOT NULL AND bc_number <> ''", self.db)[0][0])
        ids = psql("SELECT shopify_order_id FROM bc_order_ledger", self.db)
        not_in_ledger = len({o["id"] for o in self.orders} - {int(r[0]) for r in ids})
        dl = int(psql("SELECT count(*) FROM dead_letters", self.db)[0][0])
        pending = self.redis.cmd("XPENDING", STREAM, GROUP)[0]
        multi = int(psql("SELECT count(*) FROM bc_order_ledger WHERE attempts > 1",
                         self.db)[0][0])
        lost = len(set(missing) | set())  # orders BC does not have
        lost_ledger = self.n - created
        v = {"bc_documents": len(docs), "orders_missing_in_bc": len(missing),
             "orders_duplicated_in_bc": len(dup), "bc_documents_not_ours": strangers,
             "ledger_states": ledger, "ledger_created": created,
             "orders_not_in_ledger": not_in_ledger, "ledger_not_created": lost_ledger,
             "orders_posted_more_than_once": multi,
             "dead_letters": dl, "stream_pending": pending,
             "lost": max(lost, lost_ledger), "duplicated": len(dup) + strangers}
        return v


# --------------------------------------------------------------------------

def environment():
    def out(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except OSError:
            return ""
    return {"kernel": platform.release(), "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "redis": out(["redis-server", "--version"]),
            "postgres": out(["psql", "--version"]),
            "git_commit": out(["git", "-C", TOP, "rev-parse", "HEAD"]),
            "worker_bin": WORKER,
            "worker_sha256": out(["sha256sum", WORKER]).split(" ")[0],
            "git_dirty": bool(out(["git", "-C", TOP, "status", "--porcelain",
                                   "--untracked-files=no", "--", "worker/src",
                                   "sandbox", "bench/worker.py"])),
            "loadavg": open("/proc/loadavg").read().split()[:3]}


def print_table(s, results):
    print()
    print(f"worker benchmark: sandbox {s['latency_ms']:g} ms per call, "
          f"{s['max_concurrent']} at once (+{s['max_queue']} queued), "
          f"{s['threads']} worker threads")
    print()
    print(f"{'regime':<12} {'limit':>18} {'ceiling':>9} {'calls/s':>8} {'ratio':>6} "
          f"{'orders/s':>9} {'ceiling':>8} {'ratio':>6} {'429':>6} {'lost':>5} {'dup':>4}")
    for r in results:
        c = r["ceiling"]
        limit = (f"{r['sandbox']['rate_limit']}/{r['sandbox']['rate_window_s']:g}s"
                 if r["regime"] == "rate" else f"{r['sandbox']['max_concurrent']}x"
                 f"{r['sandbox']['latency_ms']:g}ms")
        print(f"{r['regime']:<12} {limit:>18} {c['calls_s']:>9.2f} {r['calls_s']:>8.2f} "
              f"{100 * r['calls_ratio']:>5.1f}% {r['orders_s']:>9.2f} {c['orders_s']:>8.2f} "
              f"{100 * r['orders_ratio']:>5.1f}% "
              f"{100 * r['whole_run']['fraction_429']:>5.2f}% "
              f"{r['verify']['lost']:>5} {r['verify']['duplicated']:>4}")
    print()
    for r in results:
        i = r["interval"]
        w = r["whole_run"]
        print(f"{r['regime']}: {r['orders']} orders; measured {i['length_s']:.2f} s "
              f"({i['clock']} clock) from {i['from_first_call_s']:.2f} s after the first "
              f"BC call: {i['calls']} calls, {i['orders_created']} orders "
              f"({r['measured_calls_per_order'] or 0:.3f} calls/order), "
              f"p50 {i['duration_ms_p50']} ms per call")
        if r["regime"] == "rate":
            ww = r["whole_windows"]
            print(f"  whole windows {ww['from_s']:g}-{ww['from_s'] + ww['length_s']:g} s "
                  f"after the first call: {ww['calls']} calls, {ww['calls_s']:.2f} calls/s")
        print(f"  whole run: {w['bc_calls']} BC calls ({w['bc_calls_429']} answered 429), "
              f"{w['token_calls']} token calls, {w['calls_per_order']:.3f} calls/order, "
              f"ops {w['ops']}, peak {r['sandbox']['stats'].get('peakActive')} active / "
              f"{r['sandbox']['stats'].get('peakQueued')} queued in the sandbox")
        print(f"  {w['wall_s']:.0f} s; CPU s: " + ", ".join(
            f"{k} {v:.1f}" for k, v in r["cpu_s"].items() if v is not None))
    print()


def bars(results):
    out = []
    for r in results:
        g = r["regime"]
        out.append((f"{g}: BC calls/s >= 90% of the ceiling "
                    f"({r['ceiling']['calls_s']:.2f}/s)", r["calls_ratio"] >= 0.9,
                    f"{100 * r['calls_ratio']:.1f}%"))
        out.append((f"{g}: orders/s >= 90% of the ceiling "
                    f"({r['ceiling']['orders_s']:.2f}/s)", r["orders_ratio"] >= 0.9,
                    f"{100 * r['orders_ratio']:.1f}%"))
        f = r["whole_run"]["fraction_429"]
        out.append((f"{g}: calls answered 429 <= 1%", f <= 0.01, f"{100 * f:.2f}%"))
        out.append((f"{g}: orders lost = 0", r["verify"]["lost"] == 0,
                    str(r["verify"]["lost"])))
        out.append((f"{g}: orders duplicated = 0", r["verify"]["duplicated"] == 0,
                    str(r["verify"]["duplicated"])))
    return out


def main():
    s = settings()
    for tool in ("redis-server", "psql"):
        if shutil.which(tool) is None:
            sys.exit(f"bench-worker: {tool} is missing (make deps installs it)")
    if not os.access(WORKER, os.X_OK):
        sys.exit(f"bench-worker: {WORKER} is missing (make worker builds it)")
    if "PGHOST" not in os.environ:
        sys.exit("bench-worker: run me through bench/worker.sh (it starts PostgreSQL)")
    pg_fsync = psql("SHOW fsync")[0][0]
    if pg_fsync != ("on" if s["pg_fsync"] else "off"):
        sys.exit(f"bench-worker: PostgreSQL runs with fsync={pg_fsync}, "
                 f"BENCH_WORKER_PG_FSYNC={s['pg_fsync']} (start me with bench/worker.sh)")
    tmp = tempfile.mkdtemp(prefix="bench-worker.")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results, problems = [], []
    t_begin = time.monotonic()
    try:
        for regime in s["regimes"]:
            r = Run(s, regime, tmp)
            try:
                results.append(r.run())
            finally:
                r.stop_all()
    finally:
        if s["keep_tmp"]:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        problems += [f"{r['regime']}: {p}" for p in r["problems"]]
    print_table(s, results)
    checks = bars(results)
    for name, ok, value in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {value}")
    if problems:
        print("\nproblems seen during the run:")
        for p in problems:
            print("  - " + p)
    doc = {"settings": s, "environment": dict(environment(), pg_fsync=pg_fsync),
           "started_utc": stamp, "seconds": time.monotonic() - t_begin,
           "results": results,
           "bars": [{"bar": n, "pass": ok, "value": v} for n, ok, v in checks],
           "problems": problems}
    os.makedirs(s["results_dir"], exist_ok=True)
    path = os.path.join(s["results_dir"], f"worker-{stamp}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"\nJSON: {os.path.relpath(path, TOP)} ({doc['seconds']:.0f} s)")
    failed = [n for n, ok, _ in checks if not ok]
    if problems and not results:
        return 1
    if s["strict"] and (failed or problems):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
