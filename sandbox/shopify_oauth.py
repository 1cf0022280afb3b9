"""Shopify OAuth in the sandbox: the authorize redirect and the token endpoint.

Endpoints (on a shop host, see shopify.py):

  GET  /admin/oauth/authorize?client_id&scope&redirect_uri&state[&grant_options[]=per-user]
       Approves at once (no merchant to click): 302 to redirect_uri with
       code, hmac, host, shop, state, timestamp, signed as Shopify signs
       (sign_query below).  Unknown client_id or a redirect_uri the app does
       not allow: 400 HTML page "Oauth error invalid_request: ...".
  POST /admin/oauth/access_token   (form or JSON body)
       - code grant: client_id, client_secret, code [, expiring=1]
         -> {access_token, scope} or, with expiring=1,
            {access_token, scope, expires_in, refresh_token, refresh_token_expires_in}
       - grant_type=refresh_token: client_id, client_secret, refresh_token
         -> a new access token and a new refresh token (same fields)
       - grant_type=client_credentials: client_id, client_secret
         -> {access_token, scope, expires_in}
       Errors: 400 {"error": "...", "error_description": "..."}.

Codes are single use and live 60 s.  A refresh token stays valid after it
was used, until its replacement or the access token issued with that
replacement is first used; then it dies.  Using it again before that
revokes the replacement pair issued the first time (a lost answer) and
issues a new one.

For the GraphQL side (shopify_admin.py):

    from shopify_oauth import token_shop
    token_shop(token) -> (shop, [scopes]) or None

None when the token is unknown, expired or revoked.  A successful lookup
counts as the token's first use (see above).

Apps: --shopify-app ID:SECRET[:SCOPES] on the command line (SCOPES comma
separated: what the authorize step grants when the request names none),
or the control endpoint:

  GET    /_sandbox/shopify/apps                     (no secrets shown)
  POST   /_sandbox/shopify/apps  {"client_id", "client_secret", "scopes",
         "grant_scopes": granted whatever is asked (to test a shortfall),
         "redirect_uris": allowed prefixes (default: any),
         "access_ttl": 3599, "refresh_ttl": 7776000,
         "client_credentials": true}
  DELETE /_sandbox/shopify/apps/<client_id>
  GET    /_sandbox/shopify/oauth/tokens   every live token: sha256, shop, kind, scope, expiry
  POST   /_sandbox/shopify/oauth/check {"token"}  token_shop(token), as a use of it
  POST   /_sandbox/shopify/oauth/expire  {"shop"}  access tokens of the shop expire now
  POST   /_sandbox/shopify/oauth/revoke  {"shop"}  every token of the shop dies (uninstall)

Tokens and codes are never logged; the store keeps only their SHA-256.
"""

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
import urllib.parse

from shopify import Reply, control, on_reset, route

CODE_TTL = 60
DEFAULT_ACCESS_TTL = 3599
DEFAULT_REFRESH_TTL = 7776000
CC_TTL = 86399


def _h(token):
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.apps = {}      # client_id -> dict
        self.cli_apps = {}  # the command line's, restored by a reset
        self.reset()

    def reset(self):
        with self.lock:
            self.apps = {k: dict(v) for k, v in self.cli_apps.items()}
            self.codes = {}     # sha256(code) -> {client_id, shop, scope, exp, online}
            self.tokens = {}    # sha256(token) -> record (below)

    # token record: {kind: access|refresh, shop, client_id, scope, exp (None
    # = never), parent: sha256 of the refresh token this pair replaced,
    # pair: sha256 of the other token of the pair, used: bool}

    def issue(self, kind, shop, client_id, scope, ttl, parent=None):
        prefix = {"access": "shpat_", "refresh": "shprt_", "cc": "shpca_"}[kind]
        tok = prefix + secrets.token_hex(16)
        self.tokens[_h(tok)] = {"kind": "refresh" if kind == "refresh" else "access", "shop": shop,
                                "client_id": client_id, "scope": scope,
                                "exp": None if ttl is None else time.time() + ttl,
                                "parent": parent, "pair": None, "used": False}
        return tok

    def first_use(self, rec):
        """A replacement is used: the refresh token it replaced dies."""
        if rec["used"]:
            return
        rec["used"] = True
        parent = rec.get("parent")
        if parent:
            self.tokens.pop(parent, None)
            for r in self.tokens.values():
                if r.get("parent") == parent:
                    r["parent"] = None
                    r["used"] = True

    def live(self, h):
        rec = self.tokens.get(h)
        if rec is None:
            return None
        if rec["exp"] is not None and rec["exp"] <= time.time():
            return None
        return rec


STORE = Store()


@on_reset
def _reset(app):
    STORE.reset()


def token_shop(token):
    """(shop, [scopes]) for a live access token, else None.  Counts as use."""
    if not isinstance(token, str) or not token:
        return None
    with STORE.lock:
        rec = STORE.live(_h(token))
        if rec is None or rec["kind"] != "access":
            return None
        STORE.first_use(rec)
        return rec["shop"], [s for s in rec["scope"].split(",") if s]


# --- command line ---------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("--shopify-app", action="append", metavar="ID:SECRET[:SCOPES]",
                        help="a Shopify app for the OAuth endpoints (repeatable)")


def configure(args):
    for spec in getattr(args, "shopify_app", None) or []:
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise SystemExit("--shopify-app wants ID:SECRET[:SCOPES]")
        app = new_app({"client_id": parts[0], "client_secret": parts[1],
                       "scopes": parts[2] if len(parts) > 2 else ""})
        STORE.cli_apps[app["client_id"]] = app
    STORE.reset()


def new_app(d):
    if not isinstance(d, dict):
        raise ValueError("send a JSON object")
    cid, sec = d.get("client_id"), d.get("client_secret")
    if not isinstance(cid, str) or not cid or not isinstance(sec, str) or not sec:
        raise ValueError("client_id and client_secret are required strings")
    app = {"client_id": cid, "client_secret": sec,
           "scopes": norm_scope(d.get("scopes", "")),
           "grant_scopes": None if d.get("grant_scopes") is None else norm_scope(d["grant_scopes"]),
           "redirect_uris": list(d.get("redirect_uris") or []),
           "access_ttl": int(d.get("access_ttl", DEFAULT_ACCESS_TTL)),
           "refresh_ttl": int(d.get("refresh_ttl", DEFAULT_REFRESH_TTL)),
           "client_credentials": bool(d.get("client_credentials", True))}
    return app


def norm_scope(s):
    if isinstance(s, list):
        s = ",".join(s)
    if not isinstance(s, str):
        raise ValueError("scopes: a comma-separated string or a list")
    return ",".join(x.strip() for x in s.split(",") if x.strip())


# --- signing, as Shopify does ----------------------------------------------

def _esc(s, chars):
    for c in "%" + chars.replace("%", ""):
        s = s.replace(c, "%%%02X" % ord(c))
    return s


def signable(pairs):
    """The string Shopify's HMAC covers, from decoded (key, value) pairs:
    hmac and signature left out; keys ending in [] gathered into one value
    written ["a", "b"] under the key without []; '%' and '&' escaped as
    %25 and %26 in keys and values and '=' as %3D in keys; "key=value"
    sorted and joined with '&'."""
    single, arrays = {}, {}
    for k, v in pairs:
        if k in ("hmac", "signature"):
            continue
        if k.endswith("[]"):
            arrays.setdefault(k[:-2], []).append(v)
        else:
            single[k] = v
    for k, vs in arrays.items():
        single[k] = "[" + ", ".join('"%s"' % v for v in vs) + "]"
    items = ["%s=%s" % (_esc(k, "&="), _esc(v, "&")) for k, v in single.items()]
    return "&".join(sorted(items))


def sign_query(secret, pairs):
    return hmac.new(secret.encode(), signable(pairs).encode(), hashlib.sha256).hexdigest()


# --- endpoints ------------------------------------------------------------

def oauth_error_page(message):
    body = ("<!DOCTYPE html><html><head><title>Oauth error</title></head><body>"
            "<h1>Oauth error invalid_request: %s</h1></body></html>" % html.escape(message))
    return Reply(400, body, ctype="text/html; charset=utf-8",
                 log={"endpoint": "authorize", "outcome": "invalid_request"})


def host_param(shop):
    name = shop[: -len(".myshopify.com")]
    raw = ("admin.shopify.com/store/%s" % name).encode()
    return base64.b64encode(raw).decode().rstrip("=")


@route("GET", r"^/admin/oauth/authorize$")
def authorize(req):
    p = req.params
    cid = p.get("client_id", [""])[0]
    with STORE.lock:
        app = STORE.apps.get(cid)
        app = dict(app) if app else None
    if app is None:
        return oauth_error_page("Could not find Shopify API application with api_key %s" % cid)
    redirect_uri = p.get("redirect_uri", [""])[0]
    u = urllib.parse.urlsplit(redirect_uri)
    if u.scheme not in ("http", "https") or not u.netloc:
        return oauth_error_page("The redirect_uri is missing or not a URL")
    if app["redirect_uris"] and not any(redirect_uri.startswith(a) for a in app["redirect_uris"]):
        return oauth_error_page("The redirect_uri is not whitelisted")
    requested = norm_scope(p.get("scope", [""])[0]) if "scope" in p else app["scopes"]
    granted = app["grant_scopes"] if app["grant_scopes"] is not None else requested
    online = "per-user" in p.get("grant_options[]", [])
    code = secrets.token_hex(16)
    with STORE.lock:
        now = time.time()
        STORE.codes = {h: c for h, c in STORE.codes.items() if c["exp"] > now}
        STORE.codes[_h(code)] = {"client_id": cid, "shop": req.shop, "scope": granted,
                                 "exp": now + CODE_TTL, "online": online}
    pairs = [("code", code), ("host", host_param(req.shop)), ("shop", req.shop),
             ("timestamp", str(int(time.time())))]
    if "state" in p:
        pairs.append(("state", p["state"][0]))
    pairs.append(("hmac", sign_query(app["client_secret"], pairs)))
    pairs.sort()
    query = urllib.parse.urlencode(pairs)
    location = redirect_uri + ("&" if u.query else "?") + query
    return Reply(302, b"", headers=[("Location", location)],
                 log={"endpoint": "authorize", "client_id": cid, "scope": granted,
                      "requested_scope": requested, "redirect_host": u.netloc, "outcome": "approved"})


def token_error(error, desc, grant, cid, status=400):
    return Reply(status, {"error": error, "error_description": desc},
                 headers=[("Cache-Control", "no-store")],
                 log={"endpoint": "access_token", "grant": grant, "client_id": cid, "outcome": error})


def parse_body(req):
    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    text = req.body.decode("utf-8", "replace")
    if ctype == "application/json":
        try:
            d = json.loads(text or "{}")
        except ValueError:
            return None
        if not isinstance(d, dict):
            return None
        return {k: ("1" if v is True else str(v)) for k, v in d.items() if v is not None}
    form = urllib.parse.parse_qs(text, keep_blank_values=True)
    return {k: v[-1] for k, v in form.items()}


@route("POST", r"^/admin/oauth/access_token$")
def access_token(req):
    f = parse_body(req)
    if f is None:
        return token_error("invalid_request", "The request body could not be parsed", None, None)
    grant = f.get("grant_type", "authorization_code")
    cid = f.get("client_id", "")
    with STORE.lock:
        app = STORE.apps.get(cid)
        app = dict(app) if app else None
    if app is None or not f.get("client_secret") \
            or not hmac.compare_digest(f["client_secret"].encode(), app["client_secret"].encode()):
        return token_error("invalid_client", "Client credentials are invalid", grant, cid)
    expiring = f.get("expiring", "0") in ("1", "true")
    if grant == "authorization_code":
        return code_grant(req, app, f, expiring)
    if grant == "refresh_token":
        return refresh_grant(req, app, f)
    if grant == "client_credentials":
        return cc_grant(req, app)
    return token_error("unsupported_grant_type", "The grant type %s is not supported" % grant[:40],
                       grant[:40], cid)


def pair_answer(app, shop, scope, parent=None):
    """A new expiring access token + refresh token (the lock is held)."""
    at = STORE.issue("access", shop, app["client_id"], scope, app["access_ttl"], parent)
    rt = STORE.issue("refresh", shop, app["client_id"], scope, app["refresh_ttl"], parent)
    STORE.tokens[_h(at)]["pair"] = _h(rt)
    STORE.tokens[_h(rt)]["pair"] = _h(at)
    return {"access_token": at, "scope": scope, "expires_in": app["access_ttl"],
            "refresh_token": rt, "refresh_token_expires_in": app["refresh_ttl"]}


def code_grant(req, app, f, expiring):
    code = f.get("code", "")
    cid = app["client_id"]
    with STORE.lock:
        c = STORE.codes.pop(_h(code), None) if code else None
        if c is None or c["exp"] <= time.time() or c["client_id"] != cid or c["shop"] != req.shop:
            return token_error("invalid_request", "The authorization code was not found or was already used",
                               "authorization_code", cid)
        if c["online"]:
            ttl = 86399
            at = STORE.issue("access", req.shop, cid, c["scope"], ttl)
            body = {"access_token": at, "scope": c["scope"], "expires_in": ttl,
                    "associated_user_scope": c["scope"],
                    "associated_user": {"id": 902541635, "first_name": "Sandbox", "last_name": "Owner",
                                        "email": "owner@example.com", "account_owner": True,
                                        "locale": "en", "collaborator": False, "email_verified": True}}
        elif expiring:
            body = pair_answer(app, req.shop, c["scope"])
        else:
            at = STORE.issue("access", req.shop, cid, c["scope"], None)
            body = {"access_token": at, "scope": c["scope"]}
    return Reply(200, body, headers=[("Cache-Control", "no-store")],
                 log={"endpoint": "access_token", "grant": "authorization_code", "client_id": cid,
                      "expiring": expiring, "scope": body["scope"], "outcome": "ok"})


def refresh_grant(req, app, f):
    rt = f.get("refresh_token", "")
    cid = app["client_id"]
    with STORE.lock:
        h = _h(rt) if rt else None
        rec = STORE.live(h) if h else None
        if rec is None or rec["kind"] != "refresh" or rec["client_id"] != cid or rec["shop"] != req.shop:
            return token_error("invalid_grant", "The refresh token is invalid, expired or revoked",
                               "refresh_token", cid)
        STORE.first_use(rec)
        # a replacement issued earlier for this token was lost: it dies
        for k in [k for k, r in STORE.tokens.items() if r.get("parent") == h]:
            del STORE.tokens[k]
        body = pair_answer(app, req.shop, rec["scope"], parent=h)
    return Reply(200, body, headers=[("Cache-Control", "no-store")],
                 log={"endpoint": "access_token", "grant": "refresh_token", "client_id": cid,
                      "scope": body["scope"], "outcome": "ok"})


def cc_grant(req, app):
    cid = app["client_id"]
    if not app["client_credentials"]:
        return token_error("unauthorized_client", "This app may not use the client credentials grant",
                           "client_credentials", cid)
    with STORE.lock:
        at = STORE.issue("cc", req.shop, cid, app["scopes"], CC_TTL)
    return Reply(200, {"access_token": at, "scope": app["scopes"], "expires_in": CC_TTL},
                 headers=[("Cache-Control", "no-store")],
                 log={"endpoint": "access_token", "grant": "client_credentials", "client_id": cid,
                      "scope": app["scopes"], "outcome": "ok"})


# --- control --------------------------------------------------------------

def _json(body):
    try:
        return json.loads(body.decode("utf-8") or "null")
    except (ValueError, UnicodeDecodeError):
        return None


def _public(app):
    return {k: v for k, v in app.items() if k != "client_secret"}


@control("apps")
def control_apps(app_, method, rest, params, body):
    if not rest and method == "GET":
        with STORE.lock:
            return 200, {"value": [_public(a) for a in STORE.apps.values()]}
    if not rest and method == "POST":
        try:
            a = new_app(_json(body))
        except (ValueError, TypeError) as e:
            return 400, {"error": str(e)}
        with STORE.lock:
            STORE.apps[a["client_id"]] = a
        return 200, _public(a)
    if len(rest) == 1 and method == "DELETE":
        with STORE.lock:
            gone = STORE.apps.pop(rest[0], None)
        return (200, {"ok": True}) if gone else (404, {"error": "no such app"})
    return 404, {"error": "unknown control endpoint"}


@control("oauth")
def control_oauth(app_, method, rest, params, body):
    if rest == ["tokens"] and method == "GET":
        now = time.time()
        with STORE.lock:
            rows = [{"sha256": h, "kind": r["kind"], "shop": r["shop"], "client_id": r["client_id"],
                     "scope": r["scope"], "expires_in": None if r["exp"] is None else int(r["exp"] - now),
                     "used": r["used"], "replaces": r["parent"]}
                    for h, r in STORE.tokens.items() if r["exp"] is None or r["exp"] > now]
        return 200, {"value": rows}
    if rest == ["check"] and method == "POST":
        d = _json(body)
        got = token_shop(d.get("token")) if isinstance(d, dict) else None
        return 200, {"valid": got is not None, "shop": got[0] if got else None,
                     "scopes": got[1] if got else None}
    if rest in (["expire"], ["revoke"]) and method == "POST":
        d = _json(body)
        shop = d.get("shop") if isinstance(d, dict) else None
        if not isinstance(shop, str):
            return 400, {"error": "send {\"shop\": \"<name>.myshopify.com\"}"}
        n = 0
        with STORE.lock:
            for h in list(STORE.tokens):
                r = STORE.tokens[h]
                if r["shop"] != shop:
                    continue
                if rest == ["revoke"]:
                    del STORE.tokens[h]
                    n += 1
                elif r["kind"] == "access":
                    r["exp"] = time.time() - 1
                    n += 1
        return 200, {"shop": shop, "tokens": n}
    return 404, {"error": "unknown control endpoint"}
