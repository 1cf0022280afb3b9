#!/usr/bin/env python3
"""The demo's second half, run by scripts/demo.sh once the stack is up.

Delivers every fixtures/shopify/orders-create-*.json to nginx the way
Shopify does (signed, Shopify's headers, retries), waits until the worker
has recorded an outcome for each order in its PostgreSQL ledger, then
prints one line per order: the Shopify name and the BC sales order it
became (number, lines, amount), or the error the worker recorded.  Exits
non-zero when an order that must succeed did not.
"""

import glob
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# every fixture order must reach BC, in its shop's company, with BC's
# total equal to Shopify's
MUST_SUCCEED = {
    "orders-create-basic.json",
    "orders-create-discounts.json",
    "orders-create-unicode.json",
    "orders-create-long-name.json",
    "orders-create-guest-pos.json",
    "orders-create-large.json",
    "orders-create-multicurrency.json",
    "orders-create-no-sku.json",
}


def load_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k] = v.strip("'")
    return env


def psql(env, sql):
    out = subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
         "-d", env["DATABASE_URL"], "-c", sql],
        check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def bc_token(env):
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials",
        "client_id": env["BC365_CLIENT_ID"],
        "client_secret": env["BC365_CLIENT_SECRET"],
        "scope": "https://api.businesscentral.dynamics.com/.default",
    }).encode()
    url = "%s/%s/oauth2/v2.0/token" % (env["BC365_AUTH_BASE"],
                                      env["BC365_TENANT_ID"])
    with urllib.request.urlopen(url, form, timeout=10) as r:
        return json.load(r)["access_token"]


def bc_get(env, token, path):
    url = "%s/v2.0/%s/%s/api/v2.0/%s" % (
        env["BC365_API_BASE"], env["BC365_TENANT_ID"],
        env["BC365_ENVIRONMENT"], path)
    req = urllib.request.Request(url, headers={
        "Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def bc_order(env, token, company, bc_id, doc_type):
    path = {"salesOrder": "salesOrders", "salesInvoice": "salesInvoices",
            "salesShipment": "salesShipments"}.get(doc_type, "salesOrders")
    lines = {"salesOrders": "salesOrderLines",
             "salesInvoices": "salesInvoiceLines",
             "salesShipments": "salesShipmentLines"}[path]
    doc = bc_get(env, token, "companies(%s)/%s(%s)?$expand=%s"
                 % (company, path, bc_id, lines))
    return doc, doc.get(lines, [])


def main():
    stack_dir = os.environ.get("STACK_DIR", "/var/tmp/shopify-bc-stack")
    env = load_env(os.path.join(stack_dir, "stack.env"))
    files = sorted(glob.glob(os.path.join(TOP, "fixtures/shopify",
                                          "orders-create-*.json")))

    print("Delivering %d Shopify orders to %s" % (len(files),
                                                  env["WEBHOOK_URL"]))
    send = subprocess.run(
        [sys.executable, os.path.join(TOP, "sandbox/sandbox.py"), "send",
         "--url", env["WEBHOOK_URL"], "--secret",
         env["SHOPIFY_WEBHOOK_SECRET"], "--retries", "5",
         "--retry-delays", "1,2,4,8,16"] + files)
    if send.returncode != 0:
        print("demo: some deliveries were never accepted by nginx")
        return 1

    orders = {}
    for path in files:
        with open(path, "rb") as f:
            body = json.loads(f.read())
        orders[os.path.basename(path)] = (str(body["id"]), body["name"])

    ids = ",".join(oid for oid, _ in orders.values())
    deadline = time.time() + 120
    rows = {}
    while time.time() < deadline:
        rows = {r[0]: r for r in psql(env, (
            "SELECT shopify_order_id, state, coalesce(bc_number, ''),"
            " coalesce(bc_id, ''), coalesce(bc_document_type, ''),"
            " coalesce(error_code, ''), coalesce(error_message, ''),"
            " external_document_number, coalesce(s.bc_company_id, ''),"
            " coalesce(s.totals_state, ''), coalesce(s.variance::text, ''),"
            " coalesce(s.shopify_total::text, '')"
            " FROM bc_order_ledger l LEFT JOIN bc_order_sync s"
            " USING (shopify_order_id)"
            " WHERE shopify_order_id IN (%s)") % ids)}
        done = [r for r in rows.values() if r[1] == "failed"
                or (r[1] == "created" and r[9] not in ("", "pending"))]
        if len(done) == len(orders):
            break
        time.sleep(0.5)

    token = bc_token(env)
    companies = {c["id"]: c["name"]
                 for c in bc_get(env, token, "companies")["value"]}
    failures = 0
    print()
    for name in sorted(orders, key=lambda n: orders[n][1]):
        oid, shopify_name = orders[name]
        row = rows.get(oid)
        if row is None or row[1] not in ("created", "failed"):
            state = row[1] if row else "not seen by the worker"
            print("%-40s -> still pending (%s)" % (shopify_name, state))
            failures += name in MUST_SUCCEED
            continue
        if row[1] == "failed":
            print("%-40s -> not created: %s %s" % (shopify_name, row[5],
                                                   row[6]))
            failures += name in MUST_SUCCEED
            continue
        company = row[8] or env["BC365_COMPANY_ID"]
        doc, lines = bc_order(env, token, company, row[3], row[4])
        items = sum(1 for l in lines if l.get("lineType") == "Item")
        other = sum(1 for l in lines if l.get("lineType") == "Account")
        total = "%.2f" % doc.get("totalAmountIncludingTax", 0)
        print("%-40s -> BC sales order %s (%s) in %s, customer %s: %d item"
              " + %d G/L lines, total %s %s incl. %.2f tax (Shopify %s%s)"
              % (shopify_name, row[2], row[7], companies.get(company, company),
                 doc.get("customerNumber", "?"), items, other, total,
                 doc.get("currencyCode", ""), doc.get("totalTaxAmount", 0),
                 row[11],
                 ", rounding variance %s" % row[10]
                 if row[9] == "variance" else ""))
        if row[9] not in ("matched", "variance") or total != row[11]:
            print("%-40s    totals: %s" % ("", {
                "": "no totals check on record (an order booked before the"
                    " worker checked totals? scripts/stack.sh destroy"
                    " starts afresh)",
                "pending": "the totals check has not run yet",
                "mismatch": "BC's total differs from Shopify's beyond the"
                            " tolerance: a dead letter for review",
            }.get(row[9], "%s, BC %s against Shopify %s"
                  % (row[9], total, row[11] or "?"))))
            failures += name in MUST_SUCCEED

    print()
    if failures:
        print("demo: %d order(s) that must reach BC did not" % failures)
        return 1
    print("demo: every order that must reach BC did; the stack keeps "
          "running (make down stops it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
