"""The GraphQL Admin API subset the worker uses, on a shop host.

    POST /admin/api/<YYYY-MM>/graphql.json
         X-Shopify-Access-Token: <token>      (token_shop() of shopify_oauth)
         {"query": "...", "variables": {...}}

Operations understood (a small recogniser, not a GraphQL parser: the
operation is the first field of the document; its arguments are read from
`variables` or from literals):

    webhookSubscriptions(first, after) { edges { node { id topic uri } }
                                         pageInfo { hasNextPage endCursor } }
    webhookSubscriptionCreate(topic, webhookSubscription: {uri, format})
        { webhookSubscription { id topic uri } userErrors { field message } }
    webhookSubscriptionDelete(id)
        { deletedWebhookSubscriptionId userErrors { field message } }

Answers in Shopify's shapes: HTTP 200 with `data`, `errors` for documents it
cannot run (unknown field, bad variable), `userErrors` for bad input, and
always `extensions.cost` {requestedQueryCost, actualQueryCost,
throttleStatus {maximumAvailable, currentlyAvailable, restoreRate}}.  Cost
is a leaky bucket per shop (default 2000 points, 100 per second): a query
costing more than the bucket holds is not run and gets
errors[].extensions.code THROTTLED (HTTP 200, actualQueryCost null).  A
connection costs 2 + `first`, refunded down to 2 + the nodes returned; a
mutation 10.  A missing, unknown or revoked token: 401
{"errors": "[API] Invalid API key or access token (unrecognized login or
wrong password)"}.

Control (under /_sandbox/shopify/admin/):

    GET    webhooks?shop=S            the shop's subscriptions
    POST   webhooks {shop, topic, uri} add one (a stale one, say)
    DELETE webhooks?shop=S            remove them all (Shopify does so on uninstall)
    POST   bucket {shop?, maximum?, available?, restore_rate?}
           with shop: that shop's bucket now; without: the defaults for
           buckets made from now on
    POST   faults [{path, shop?, kind: "drop"|"status", status?, body?, times?}]
    GET    faults / DELETE faults

Faults apply to every shop route (the OAuth endpoints included): "drop"
lets the route do its work (a token refresh is committed) and then closes
the connection without an answer, a lost response; "status" answers
`status` with `body` without running the route.  `times` (default 1)
counts matching requests; path is a regular expression.

The request log (shopify.py) gets `operation` and, when refused,
`throttled: true` for each GraphQL request.
"""

import json
import re
import threading
import time

import shopify
from shopify import Reply, control, on_reset, route
from shopify_oauth import token_shop

API_VERSION_RE = r"^/admin/api/(\d{4}-\d{2}|unstable)/graphql\.json$"
DEFAULT_BUCKET = {"maximum": 2000.0, "restore_rate": 100.0}
MUTATION_COST = 10
MAX_FIRST = 250

# the WebhookSubscriptionTopic values this sandbox knows
TOPICS = {
    "APP_UNINSTALLED", "CUSTOMERS_CREATE", "CUSTOMERS_DELETE", "CUSTOMERS_UPDATE",
    "INVENTORY_LEVELS_UPDATE", "ORDERS_CANCELLED", "ORDERS_CREATE", "ORDERS_DELETE",
    "ORDERS_EDITED", "ORDERS_FULFILLED", "ORDERS_PAID", "ORDERS_UPDATED",
    "PRODUCTS_CREATE", "PRODUCTS_DELETE", "PRODUCTS_UPDATE", "REFUNDS_CREATE", "SHOP_UPDATE",
}

# access scope a topic needs (one of them)
TOPIC_SCOPES = {"ORDERS": ("read_orders", "write_orders"),
                "REFUNDS": ("read_orders", "write_orders"),
                "CUSTOMERS": ("read_customers", "write_customers"),
                "PRODUCTS": ("read_products", "write_products"),
                "INVENTORY": ("read_inventory", "write_inventory")}

INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"


class Admin:
    def __init__(self):
        self.lock = threading.RLock()
        self.defaults = dict(DEFAULT_BUCKET)
        self.reset()

    def reset(self):
        with self.lock:
            self.subs = {}      # shop -> {id (int) -> sub}
            self.next_id = 1001
            self.buckets = {}   # shop -> {maximum, available, restore_rate, t}
            self.faults = []

    def bucket(self, shop):
        b = self.buckets.get(shop)
        now = time.monotonic()
        if b is None:
            b = self.buckets[shop] = {"maximum": self.defaults["maximum"],
                                      "available": self.defaults["maximum"],
                                      "restore_rate": self.defaults["restore_rate"], "t": now}
        b["available"] = min(b["maximum"], b["available"] + (now - b["t"]) * b["restore_rate"])
        b["t"] = now
        return b


ADMIN = Admin()


@on_reset
def _reset(app):
    ADMIN.reset()
    ADMIN.defaults = dict(DEFAULT_BUCKET)


def gid(n):
    return "gid://shopify/WebhookSubscription/%d" % n


def sub_view(s):
    return {"id": gid(s["id"]), "topic": s["topic"], "uri": s["uri"], "format": s["format"],
            "createdAt": s["createdAt"], "updatedAt": s["createdAt"]}


def cost_ext(b, requested, actual):
    return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual,
                     "throttleStatus": {"maximumAvailable": b["maximum"],
                                        "currentlyAvailable": int(b["available"]),
                                        "restoreRate": b["restore_rate"]}}}


class GqlError(Exception):
    def __init__(self, message, extensions=None):
        Exception.__init__(self, message)
        self.message = message
        self.extensions = extensions or {}


# --- the recogniser ----------------------------------------------------------

FIELD_RE = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\(([^)]*)\))?")
OP_RE = re.compile(r"^\s*(query|mutation)?\b")


def split_args(text):
    """'a: $x, b: {c: "d"}' -> [("a", "$x"), ("b", '{c: "d"}')], commas in
    braces and strings kept."""
    out, depth, cur, quote = [], 0, "", False
    for ch in text:
        if ch == '"' and not cur.endswith("\\"):
            quote = not quote
        if not quote and ch in "{[":
            depth += 1
        if not quote and ch in "}]":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    pairs = []
    for item in out:
        name, sep, value = item.partition(":")
        if not sep:
            raise GqlError("Parse error on \"%s\"" % item.strip()[:40], {"code": "parseError"})
        pairs.append((name.strip(), value.strip()))
    return pairs


def literal(value, variables):
    """A GraphQL argument value: $variable, "string", number, enum, null, or
    an input object {k: v} of those."""
    if value.startswith("$"):
        name = value[1:]
        if name not in variables:
            return None
        return variables[name]
    if value.startswith('"'):
        try:
            return json.loads(value)
        except ValueError:
            raise GqlError("Parse error on %s" % value[:40], {"code": "parseError"})
    if value.startswith("{"):
        return {k: literal(v, variables) for k, v in split_args(value[1:-1])}
    if value == "null":
        return None
    if re.match(r"^-?\d+$", value):
        return int(value)
    return value


def recognise(query, variables):
    """(kind, field, args) of the document's first field."""
    m = OP_RE.match(query)
    kind = (m.group(1) if m and m.group(1) else "query")
    f = FIELD_RE.search(query)
    if not f:
        raise GqlError("Parse error: no selection", {"code": "parseError"})
    field = f.group(1)
    args = {}
    if f.group(3):
        args = {k: literal(v, variables) for k, v in split_args(f.group(3))}
    return kind, field, args


# --- operations ----------------------------------------------------------------

def op_list(shop, args):
    first = args.get("first")
    if not isinstance(first, int) or first < 1:
        raise GqlError("you must provide one of first or last", {"code": "argumentLiteralsIncompatible"})
    if first > MAX_FIRST:
        raise GqlError("The connection webhookSubscriptions has a maximum page size of 250",
                       {"code": "maxPageSizeExceeded"})
    after = args.get("after")
    with ADMIN.lock:
        subs = sorted(ADMIN.subs.get(shop, {}).values(), key=lambda s: s["id"])
    if after:
        try:
            n = int(after.replace("cursor-", ""), 10)
        except ValueError:
            raise GqlError("Invalid cursor for current pagination.", {"code": "invalidCursor"})
        subs = [s for s in subs if s["id"] > n]
    page, more = subs[:first], len(subs) > first
    data = {"webhookSubscriptions": {
        "edges": [{"cursor": "cursor-%d" % s["id"], "node": sub_view(s)} for s in page],
        "pageInfo": {"hasNextPage": more, "hasPreviousPage": bool(after),
                     "startCursor": ("cursor-%d" % page[0]["id"]) if page else None,
                     "endCursor": ("cursor-%d" % page[-1]["id"]) if page else None}}}
    return data, 2 + first, 2 + len(page)


def topic_allowed(topic, scopes):
    need = TOPIC_SCOPES.get(topic.split("_")[0])
    return need is None or any(s in scopes for s in need)


def op_create(shop, args, scopes):
    topic = args.get("topic")
    if topic not in TOPICS:
        raise GqlError("Variable $topic of type WebhookSubscriptionTopic! was provided invalid value",
                       {"value": topic, "problems": [{"path": [], "explanation":
                        "Expected \"%s\" to be one of: %s" % (topic, ", ".join(sorted(TOPICS)))}]})
    ws = args.get("webhookSubscription")
    if not isinstance(ws, dict):
        raise GqlError("Variable $webhookSubscription of type WebhookSubscriptionInput! was provided "
                       "invalid value", {"value": ws})
    uri = ws.get("uri") or ws.get("callbackUrl")
    fmt = ws.get("format") or "JSON"
    errors = []
    if not topic_allowed(topic, scopes):
        errors.append({"field": ["webhookSubscription"],
                       "message": "You do not have permission to create or update webhooks with %s "
                                  "topic." % topic.lower().replace("_", "/", 1)})
    elif not isinstance(uri, str) or not re.match(r"^https://[^/\s]+", uri):
        errors.append({"field": ["webhookSubscription", "callbackUrl"], "message": "Address is invalid"})
    elif fmt not in ("JSON", "XML"):
        errors.append({"field": ["webhookSubscription", "format"], "message": "Format is invalid"})
    with ADMIN.lock:
        subs = ADMIN.subs.setdefault(shop, {})
        if not errors and any(s["topic"] == topic and s["uri"] == uri for s in subs.values()):
            errors.append({"field": ["webhookSubscription", "callbackUrl"],
                           "message": "Address for this topic has already been taken"})
        created = None
        if not errors:
            n = ADMIN.next_id
            ADMIN.next_id += 1
            created = subs[n] = {"id": n, "topic": topic, "uri": uri, "format": fmt,
                                 "createdAt": shopify.iso_ms()[:19] + "Z"}
    return {"webhookSubscriptionCreate": {"webhookSubscription": sub_view(created) if created else None,
                                          "userErrors": errors}}, MUTATION_COST, MUTATION_COST


def op_delete(shop, args):
    ident = args.get("id")
    m = re.match(r"^gid://shopify/WebhookSubscription/(\d+)$", ident or "")
    if not m:
        raise GqlError("Variable $id of type ID! was provided invalid value", {"value": ident})
    with ADMIN.lock:
        gone = ADMIN.subs.get(shop, {}).pop(int(m.group(1)), None)
    if gone is None:
        return {"webhookSubscriptionDelete": {"deletedWebhookSubscriptionId": None,
                                              "userErrors": [{"field": ["id"], "message":
                                                              "Webhook subscription does not exist"}]}}, \
            MUTATION_COST, MUTATION_COST
    return {"webhookSubscriptionDelete": {"deletedWebhookSubscriptionId": ident, "userErrors": []}}, \
        MUTATION_COST, MUTATION_COST


# requested cost, before running, by operation
def requested_cost(field, args):
    if field == "webhookSubscriptions":
        first = args.get("first")
        return 2 + (first if isinstance(first, int) and 0 < first <= MAX_FIRST else 0)
    return MUTATION_COST


@route("POST", API_VERSION_RE)
def graphql(req):
    token = req.headers.get("X-Shopify-Access-Token")
    got = token_shop(token) if token else None
    if got is None or got[0] != req.shop:
        return Reply(401, {"errors": INVALID_TOKEN}, log={"operation": "unauthorized"})
    scopes = got[1]
    try:
        doc = json.loads(req.body.decode("utf-8") or "null")
    except (ValueError, UnicodeDecodeError):
        return Reply(400, {"errors": {"query": "Required parameter missing or invalid"}},
                     log={"operation": "bad_request"})
    if not isinstance(doc, dict) or not isinstance(doc.get("query"), str):
        return Reply(400, {"errors": {"query": "Required parameter missing or invalid"}},
                     log={"operation": "bad_request"})
    variables = doc.get("variables") or {}
    with ADMIN.lock:
        b = ADMIN.bucket(req.shop)
    try:
        kind, field, args = recognise(doc["query"], variables if isinstance(variables, dict) else {})
        ops = {"query": {"webhookSubscriptions": lambda: op_list(req.shop, args)},
               "mutation": {"webhookSubscriptionCreate": lambda: op_create(req.shop, args, scopes),
                            "webhookSubscriptionDelete": lambda: op_delete(req.shop, args)}}
        run = ops.get(kind, {}).get(field)
        if run is None:
            raise GqlError("Field '%s' doesn't exist on type '%s'" % (
                field, "QueryRoot" if kind == "query" else "Mutation"), {"code": "undefinedField"})
        requested = requested_cost(field, args)
        with ADMIN.lock:
            b = ADMIN.bucket(req.shop)
            if requested > b["available"]:
                body = {"errors": [{"message": "Throttled", "extensions": {
                            "code": "THROTTLED",
                            "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                        "extensions": cost_ext(b, requested, None)}
                return Reply(200, body, log={"operation": field, "throttled": True})
            b["available"] -= requested
        data, _, actual = run()
        with ADMIN.lock:
            b = ADMIN.bucket(req.shop)
            b["available"] = min(b["maximum"], b["available"] + requested - actual)
        return Reply(200, {"data": data, "extensions": cost_ext(b, requested, actual)},
                     log={"operation": field})
    except GqlError as e:
        err = {"message": e.message, "locations": [{"line": 1, "column": 1}]}
        if e.extensions:
            err["extensions"] = e.extensions
        return Reply(200, {"errors": [err], "extensions": cost_ext(b, 1, None)},
                     log={"operation": "error"})


# --- faults on shop routes ----------------------------------------------------

def _fault_for(req):
    with ADMIN.lock:
        for f in ADMIN.faults:
            if f["times"] <= 0:
                continue
            if f.get("shop") and f["shop"] != req.shop:
                continue
            if not re.search(f["path"], req.path):
                continue
            f["times"] -= 1
            return dict(f)
    return None


def _with_faults(fn):
    def wrapped(req):
        f = _fault_for(req)
        if f is not None and f["kind"] == "status":
            return Reply(f.get("status", 503), f.get("body") or {"errors": "Service Unavailable"},
                         log={"fault": "status"})
        reply = fn(req)
        if f is not None and f["kind"] == "drop":
            # the work is done; the answer is lost (the handler closes
            # the connection without writing one)
            raise ConnectionAbortedError("sandbox fault: answer dropped")
        return reply
    wrapped.__name__ = getattr(fn, "__name__", "route")
    return wrapped


def install_faults():
    """Wrap every shop route registered so far (sandbox.py imports this
    module after the route modules)."""
    for i, (m, pat, fn) in enumerate(shopify.ROUTES):
        if not getattr(fn, "_faults", False):
            w = _with_faults(fn)
            w._faults = True
            shopify.ROUTES[i] = (m, pat, w)


install_faults()


# --- control ------------------------------------------------------------------

def _json(body):
    try:
        return json.loads(body.decode("utf-8") or "null")
    except (ValueError, UnicodeDecodeError):
        return None


@control("admin")
def control_admin(app_, method, rest, params, body):
    shop = (params.get("shop") or [None])[0]
    if rest == ["webhooks"]:
        if method == "GET":
            if not shop:
                return 400, {"error": "?shop= needed"}
            with ADMIN.lock:
                subs = sorted(ADMIN.subs.get(shop, {}).values(), key=lambda s: s["id"])
                return 200, {"value": [sub_view(s) for s in subs]}
        if method == "POST":
            d = _json(body)
            if not isinstance(d, dict) or not all(isinstance(d.get(k), str) for k in ("shop", "topic", "uri")):
                return 400, {"error": "send {shop, topic, uri}"}
            with ADMIN.lock:
                n = ADMIN.next_id
                ADMIN.next_id += 1
                s = ADMIN.subs.setdefault(d["shop"], {})[n] = {
                    "id": n, "topic": d["topic"], "uri": d["uri"], "format": "JSON",
                    "createdAt": shopify.iso_ms()[:19] + "Z"}
            return 200, sub_view(s)
        if method == "DELETE":
            with ADMIN.lock:
                ADMIN.subs.pop(shop, None)
            return 200, {"ok": True}
    if rest == ["bucket"] and method == "POST":
        d = _json(body)
        if not isinstance(d, dict):
            return 400, {"error": "send {shop?, maximum?, available?, restore_rate?}"}
        for k in ("maximum", "available", "restore_rate"):
            if k in d and (not isinstance(d[k], (int, float)) or d[k] < 0):
                return 400, {"error": "%s must be a non-negative number" % k}
        with ADMIN.lock:
            if d.get("shop"):
                b = ADMIN.bucket(d["shop"])
                for k in ("maximum", "available", "restore_rate"):
                    if k in d:
                        b[k] = float(d[k])
                b["available"] = min(b["available"], b["maximum"])
                return 200, {k: b[k] for k in ("maximum", "available", "restore_rate")}
            for k in ("maximum", "restore_rate"):
                if k in d:
                    ADMIN.defaults[k] = float(d[k])
            return 200, dict(ADMIN.defaults)
    if rest == ["faults"]:
        if method == "GET":
            with ADMIN.lock:
                return 200, {"value": list(ADMIN.faults)}
        if method == "DELETE":
            with ADMIN.lock:
                ADMIN.faults = []
            return 200, {"ok": True}
        if method == "POST":
            d = _json(body)
            if isinstance(d, dict):
                d = [d]
            if not isinstance(d, list):
                return 400, {"error": "send a fault or a list of faults"}
            rules = []
            for f in d:
                if not isinstance(f, dict) or f.get("kind") not in ("drop", "status") \
                        or not isinstance(f.get("path"), str):
                    return 400, {"error": "a fault: {path, kind: drop|status, shop?, status?, body?, times?}"}
                try:
                    re.compile(f["path"])
                except re.error as e:
                    return 400, {"error": "bad path pattern: %s" % e}
                rules.append({"path": f["path"], "kind": f["kind"], "shop": f.get("shop"),
                              "status": int(f.get("status", 503)), "body": f.get("body"),
                              "times": int(f.get("times", 1))})
            with ADMIN.lock:
                ADMIN.faults = rules
            return 200, {"value": rules}
    return 404, {"error": "unknown control endpoint"}
