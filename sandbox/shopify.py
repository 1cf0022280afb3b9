"""The Shopify side of the sandbox: requests to <shop>.myshopify.com.

sandbox.py hands every request whose Host header is a shop domain
(`<name>.myshopify.com`, any port) to dispatch() here, on the plain HTTP
port and on the HTTPS one (--https-port, see TLSServer).  The shop comes
from the Host header, as on Shopify.  Endpoints live in their own files
and register themselves with @route; control endpoints under
/_sandbox/shopify/<name> with @control:

    from shopify import route, control, Reply

    @route("POST", r"^/admin/oauth/access_token$")
    def access_token(req):          # req: Request below
        return Reply(200, {"access_token": ...}, log={"grant": "..."})

Request log: every Shopify request (never its body) and every TLS
connection attempt is kept for tests:

    GET    /_sandbox/shopify/requests[?since=SEQ]
           -> {"value": [entries], "last": SEQ, "connections": N,
               "tls_failures": N}
    DELETE /_sandbox/shopify/requests     empties it, zeroes the counters

An entry: {seq, time, method, shop, host, sni, path, query, status, ...}
plus what the route put in Reply.log.  Routes must not log secrets,
codes or tokens there.  Python 3 standard library only.
"""

import datetime as dt
import http.server
import json
import re
import socket
import ssl
import sys
import threading

SHOP_RE = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")

ROUTES = []      # (method, compiled path pattern, fn(Request) -> Reply)
CONTROLS = {}    # name -> fn(app, method, rest parts, params, body) -> (status, obj)
RESETS = []      # fn(app), called by POST /_sandbox/reset


def route(method, pattern):
    def deco(fn):
        ROUTES.append((method, re.compile(pattern), fn))
        return fn
    return deco


def control(name):
    def deco(fn):
        CONTROLS[name] = fn
        return fn
    return deco


def on_reset(fn):
    RESETS.append(fn)
    return fn


class Reply:
    """What a route answers: a JSON object (dict/list), or bytes/str with
    ctype; extra headers; fields for the request log."""

    def __init__(self, status, body, headers=None, ctype=None, log=None):
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        self.ctype = ctype
        self.log = dict(log or {})


class Request:
    def __init__(self, app, handler, method, shop, host, path, query, params, body):
        self.app = app
        self.handler = handler
        self.method = method
        self.shop = shop
        self.host = host
        self.path = path
        self.query = query
        self.params = params          # urllib.parse.parse_qs(query, keep_blank_values=True)
        self.body = body              # bytes
        self.headers = handler.headers
        self.sni = getattr(handler.connection, "sni", None)
        self.scheme = "https" if isinstance(handler.connection, ssl.SSLSocket) else "http"
        self.port = handler.server.server_address[1]


def shop_from_host(host):
    """The shop domain a Host header names, or None."""
    if not host:
        return None
    name = host.strip().lower()
    if name.startswith("["):
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    return name if SHOP_RE.match(name) else None


def iso_ms():
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class State:
    """Per-sandbox Shopify state: the request log and whatever the route
    modules keep (route modules put their own attributes on it)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.log = []
        self.seq = 0
        self.connections = 0
        self.tls_failures = 0


def state(app):
    st = getattr(app, "shopify", None)
    if st is None:
        with app.lock:
            st = getattr(app, "shopify", None)
            if st is None:
                st = app.shopify = State()
    return st


def log_add(app, entry):
    st = state(app)
    with st.lock:
        st.seq += 1
        entry["seq"] = st.seq
        st.log.append(entry)
        if len(st.log) > 100000:
            del st.log[:10000]


def note_connection(app, sni, error):
    st = state(app)
    with st.lock:
        st.connections += 1
        if error is not None:
            st.tls_failures += 1
    if error is not None:
        log_add(app, {"time": iso_ms(), "event": "tls_handshake_failed", "sni": sni,
                      "error": str(error)[:200]})


def reset(app):
    st = state(app)
    with st.lock:
        st.log = []
        st.seq = 0
        st.connections = 0
        st.tls_failures = 0
    for fn in RESETS:
        fn(app)


def dispatch(app, handler, method, shop, path, split, params, body):
    """Answers one request to a shop host; returns the status sent."""
    req = Request(app, handler, method, shop, handler.headers.get("Host"), path, split.query, params, body)
    reply = None
    allowed = []
    for m, pat, fn in ROUTES:
        if pat.match(path):
            if m == method:
                reply = fn(req)
                break
            allowed.append(m)
    if reply is None:
        if allowed:
            reply = Reply(405, {"errors": "Method Not Allowed"}, headers=[("Allow", ", ".join(allowed))])
        else:
            reply = Reply(404, {"errors": "Not Found"})
    send(handler, reply)
    entry = {"time": iso_ms(), "method": method, "shop": shop, "host": req.host, "sni": req.sni,
             "scheme": req.scheme, "path": path, "query": split.query, "status": reply.status}
    entry.update(reply.log)
    log_add(app, entry)
    return reply.status


def send(handler, reply):
    body = reply.body
    ctype = reply.ctype
    if isinstance(body, (dict, list)):
        body = json.dumps(body, separators=(",", ":")).encode()
        ctype = ctype or "application/json; charset=utf-8"
    elif isinstance(body, str):
        body = body.encode()
    body = body or b""
    handler.send_response(reply.status)
    if ctype:
        handler.send_header("Content-Type", ctype)
    for k, v in reply.headers:
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body and handler.command != "HEAD":
        handler.wfile.write(body)


def control_request(app, method, parts, params, body):
    """/_sandbox/shopify/...: (status, obj), or None when unknown."""
    if parts == ["requests"]:
        st = state(app)
        if method == "GET":
            since = int(params.get("since", ["0"])[0] or 0)
            with st.lock:
                return 200, {"value": [e for e in st.log if e["seq"] > since], "last": st.seq,
                             "connections": st.connections, "tls_failures": st.tls_failures}
        if method == "DELETE":
            with st.lock:
                st.log = []
                st.connections = 0
                st.tls_failures = 0
            return 200, {"ok": True}
    if parts and parts[0] in CONTROLS:
        return CONTROLS[parts[0]](app, method, parts[1:], params, body)
    return None


class TLSServer(http.server.ThreadingHTTPServer):
    """The sandbox's HTTPS listener: the same handler as the HTTP port.
    The TLS handshake runs in the connection's own thread, so a client that
    stalls it does not hold up the accept loop.  The SNI name the client
    sent is kept on the socket (.sni) and shows in the request log."""

    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, addr, handler, cert, key, app):
        super().__init__(addr, handler)
        self.app = app
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(cert, key)
        self.ctx.sni_callback = self._sni

    @staticmethod
    def _sni(sock, name, ctx):
        sock.sni = name
        return None

    def finish_request(self, request, client_address):
        request.settimeout(30)
        tls = None
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            note_connection(self.app, None, e)
            print("sandbox: TLS handshake with %s:%d failed: %s" % (client_address[0], client_address[1], e),
                  file=sys.stderr, flush=True)
            return
        try:
            note_connection(self.app, getattr(tls, "sni", None), None)
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tls.close()
