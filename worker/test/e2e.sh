#!/usr/bin/env bash
# End-to-end check of shopify-bc-worker against a private redis-server,
# a throwaway PostgreSQL cluster (scripts/pg-throwaway.sh) and the BC sandbox
# (sandbox/sandbox.py), all on free high ports in a temporary directory
# that is removed at the end.  Entries are written to the stream the way
# the nginx module writes them (XADD with its fields), so nginx is not
# needed.
#
#   make -C worker check          (or: worker/test/e2e.sh)
#
# Prints one "ok"/"not ok" line per check and ends with
# "N passed, N failed"; the exit status is 1 if anything failed.

set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

# the PostgreSQL cluster only lives as long as pg-throwaway's command
if [ -z "${SBW_E2E_INNER:-}" ]; then
    exec env SBW_E2E_INNER=1 "$root/scripts/pg-throwaway.sh" -- "$0" "$@"
fi

worker="$root/worker/build/shopify-bc-worker"
fixtures="$root/fixtures"
work=$(mktemp -d /tmp/sbw-e2e.XXXXXX)
passed=0
failed=0
redis_pid=""
sandbox_pid=""
worker_pid=""

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

cleanup() {
    # SBW_E2E_LOG=FILE keeps the worker's log lines for a look afterwards
    [ -n "${SBW_E2E_LOG:-}" ] && cp "$work/worker.log" "$SBW_E2E_LOG"
    [ -n "$worker_pid" ] && kill -9 "$worker_pid" 2>/dev/null
    [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

ok() {
    # ok NAME COMMAND...: one TAP-like line
    local name=$1
    shift
    if "$@"; then
        echo "ok - $name"
        passed=$((passed + 1))
    else
        echo "not ok - $name"
        failed=$((failed + 1))
    fi
}

redis_port=$(free_port)
sandbox_port=$(free_port)
metrics_port=$(free_port)

start_redis() {
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" \
        --appendonly yes --appendfsync always --save '' \
        --maxmemory-policy noeviction >"$work/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 50); do
        rc ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

stop_redis() {
    rc shutdown >/dev/null 2>&1
    wait "$redis_pid" 2>/dev/null
    redis_pid=""
}

rc() { redis-cli -p "$redis_port" "$@"; }
sq() { psql -XAtq -c "$1"; }
sb() { curl -s "http://127.0.0.1:$sandbox_port/_sandbox/$1" "${@:2}"; }

start_redis || { echo "cannot start redis-server"; exit 1; }

python3 "$root/sandbox/sandbox.py" serve --port "$sandbox_port" --quiet \
    >"$work/sandbox.log" 2>&1 &
sandbox_pid=$!
for _ in $(seq 50); do
    sb health >/dev/null 2>&1 && break
    sleep 0.1
done

export REDIS_URL="redis://127.0.0.1:$redis_port/0"
export DATABASE_URL="postgresql+psycopg2://"      # libpq takes PG* vars
export BC365_TENANT_ID=sandbox-tenant
export BC365_CLIENT_ID=sandbox-client-id
export BC365_CLIENT_SECRET=sandbox-client-secret
export BC365_ENVIRONMENT=production
export BC365_COMPANY_ID=31b7c38b-2d4e-5437-beff-68c052310a74
export BC365_API_BASE="http://127.0.0.1:$sandbox_port"
export BC365_AUTH_BASE="http://127.0.0.1:$sandbox_port"
export BC365_SHIPPING_ACCOUNT=40400
export BC365_ROUNDING_ACCOUNT=40900
eur=a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6
export BC365_COMPANIES="{\"acme-demo-eu.myshopify.com\":\"$eur\",
  \"acme-europe-webshop.myshopify.com\":\"$eur\"}"
export VARIANT_MAP_FILE="$fixtures/meta/variant-map.json"
export METRICS_ADDR="127.0.0.1:$metrics_port"
export WORKER_NAME=e2e
export RETRY_BASE_MS=100
export RETRY_MAX_MS=1000
export BC365_TIMEOUT_MS=5000
export BC365_INDOUBT_WAIT_MS=2000

xadd() {
    # xadd FILE TOPIC WEBHOOK_ID: the fields in the nginx module's order;
    # the shop is the fixture's (fixtures/meta/webhook-headers.json)
    local shop
    shop=$(python3 -c 'import json, os, sys
h = json.load(open(sys.argv[1])).get("headers", {})
print(h.get(os.path.basename(sys.argv[2]), {}).get(
    "X-Shopify-Shop-Domain", "acme-demo.myshopify.com"))' \
        "$fixtures/meta/webhook-headers.json" "$1")
    rc -x XADD shopify:webhooks '*' topic "$2" \
        shop "$shop" webhook_id "$3" api_version 2024-04 \
        triggered_at "" event_id "" received_at "$(date +%s)000" \
        body <"$1" >/dev/null
}

reset_all() {
    sb reset -X POST >/dev/null
    rc flushall >/dev/null
    sq "DROP TABLE IF EXISTS bc_order_ledger, bc_order_ledger_v1_duplicates,
        schema_version, dead_letters, bc_duplicate_checks" 2>/dev/null
}

drain() {
    "$worker" --drain=1500 2>>"$work/worker.log"
}

bc_count() {
    # number of BC documents (open or posted) with this external number
    sb orders | python3 -c '
import json, sys
n = sum(1 for o in json.load(sys.stdin)["value"]
        if o["order"]["externalDocumentNumber"] == sys.argv[1])
print(n)' "$1"
}

ledger() {
    # ledger ORDER_ID COLUMN
    sq "SELECT $2 FROM bc_order_ledger WHERE shopify_order_id = $1"
}

faults() { sb faults -X POST -d "$1" >/dev/null; }

post_fault() {
    # post_fault TIMES 'ACTION FIELDS': a rule on POST .../salesOrders
    local rule='"method":"POST","path_regex":"/salesOrders$"'
    faults "[{$rule,\"times\":$1,$2}]"
}

pending() { rc XPENDING shopify:webhooks bc-sync | head -1; }

F="$fixtures/shopify"
BASIC=6021450011001
BASIC_DOC=SHOPIFY-$BASIC


# 1. configuration errors: one line, exit status 2

out=$(env -u BC365_CLIENT_SECRET -u BC365_COMPANY_ID "$worker" 2>&1)
status=$?
ok "missing settings exit 2" test "$status" = 2
ok "missing settings named in one line" \
    test "$(echo "$out" | wc -l)" = 1 -a \
    -n "$(echo "$out" | grep 'BC365_CLIENT_SECRET, BC365_COMPANY_ID')"


# 2. every fixture, a duplicate delivery and a topic without handler

reset_all
for f in basic discounts unicode guest-pos large multicurrency long-name \
         no-sku; do
    xadd "$F/orders-create-$f.json" orders/create "wh-$f"
done
xadd "$F/orders-create-basic.json" orders/create wh-basic-again
xadd "$F/products-update.json" products/update wh-products
drain
ok "drain exits 0" test $? = 0

ok "basic order created once" test "$(bc_count $BASIC_DOC)" = 1
ok "seven orders in BC" test "$(sb orders | python3 -c \
    'import json,sys; print(len(json.load(sys.stdin)["value"]))')" = 7
ok "totals including tax match the reference" python3 - "$fixtures" <<'EOF'
import json, sys
from decimal import Decimal
exp = json.load(open(sys.argv[1] + "/expected/bc-sales-orders.json"))
got = {}
import urllib.request, os
port = os.environ["BC365_API_BASE"].rsplit(":", 1)[1]
data = json.load(urllib.request.urlopen(
    "http://127.0.0.1:%s/_sandbox/orders" % port))
for o in data["value"]:
    got[o["order"]["externalDocumentNumber"]] = o["order"]
bad = 0
for name in ("basic", "discounts", "unicode", "guest-pos", "large",
             "multicurrency", "long-name"):
    e = exp["orders-create-%s.json" % name]
    o = got["SHOPIFY-%d" % e["shopifyOrderId"]]
    have = Decimal(str(o["totalAmountIncludingTax"]))
    want = Decimal(e["amountIncludingTax"])
    if have != want:
        print("# %s: %s != %s" % (name, have, want))
        bad += 1
sys.exit(bad)
EOF
ok "no-sku order refused in the ledger" \
    test "$(ledger 6021450011003 state)/$(ledger 6021450011003 error_code)" \
    = "failed/Mapping_UnsupportedLines"
ok "no-sku order in the dead-letter store" \
    test "$(sq "SELECT reason || '/' || status FROM dead_letters
                WHERE shopify_order_id = 6021450011003")" \
    = "unmapped_lines/open"
ok "nothing left pending" test "$(pending)" = 0
ok "one outcome line per order entry" \
    test "$(grep -c '"event":"order_\(created\|failed\|duplicate\)"' \
            "$work/worker.log")" = 9
ok "no secret or token in the log" \
    test -z "$(grep -e sandbox-client-secret -e access_token -e Bearer \
               "$work/worker.log")"


# 3. lost answers: BC committed, the worker never heard

for fault in '"action":"commit_then_drop"' \
             '"action":"commit_then_fail","status":500' \
             '"action":"commit_then_fail","status":504'; do
    reset_all
    post_fault 1 "$fault"
    xadd "$F/orders-create-basic.json" orders/create wh-1
    drain
    ok "$fault: exactly one order" test "$(bc_count $BASIC_DOC)" = 1
    ok "$fault: found by lookup" \
        test "$(ledger $BASIC state)/$(ledger $BASIC resolved_by)" \
        = "created/lookup"
done


# 4. 429 and 503 with Retry-After, then success; 401 after revocation

reset_all
post_fault 2 '"status":429,"retry_after":1'
xadd "$F/orders-create-basic.json" orders/create wh-1
drain
ok "429: exactly one order" test "$(bc_count $BASIC_DOC)" = 1
ok "429: posted on the third attempt, no lookup" \
    test "$(ledger $BASIC attempts)/$(ledger $BASIC resolved_by)" = "3/post"

reset_all
post_fault 1 '"status":503'
xadd "$F/orders-create-basic.json" orders/create wh-1
drain
ok "503: exactly one order" test "$(bc_count $BASIC_DOC)" = 1

reset_all
"$worker" --drain=300 2>>"$work/worker.log"      # takes a token
sb tokens/revoke -X POST >/dev/null
xadd "$F/orders-create-basic.json" orders/create wh-1
drain
ok "revoked token: refreshed, one order" test "$(bc_count $BASIC_DOC)" = 1


# 5. BC refuses the document: recorded, not retried

reset_all
SKU_MAP_JSON='{"1900-S":"NO-SUCH-ITEM"}' \
    "$worker" --drain=1500 2>>"$work/worker.log" &
worker_pid=$!
xadd "$F/orders-create-basic.json" orders/create wh-1
wait $worker_pid; worker_pid=""
ok "unknown item: no order" test "$(bc_count $BASIC_DOC)" = 0
ok "unknown item: BC error code in the ledger" \
    test "$(ledger $BASIC state)/$(ledger $BASIC error_code)" \
    = "failed/Application_DialogException"
ok "unknown item: acknowledged" test "$(pending)" = 0


# 6. SIGKILL between BC's commit and the ledger's

reset_all
post_fault 1 '"action":"commit_then_hold","hold_ms":3000'
"$worker" 2>>"$work/worker.log" &
worker_pid=$!
xadd "$F/orders-create-basic.json" orders/create wh-1
for _ in $(seq 50); do
    [ "$(bc_count $BASIC_DOC)" = 1 ] && break
    sleep 0.1
done
kill -9 $worker_pid; wait $worker_pid 2>/dev/null; worker_pid=""
ok "SIGKILL: entry still pending" test "$(pending)" = 1
ok "SIGKILL: ledger in doubt" test "$(ledger $BASIC in_doubt)" = t
drain
ok "SIGKILL + restart: exactly one order" test "$(bc_count $BASIC_DOC)" = 1
ok "SIGKILL + restart: found by lookup, acknowledged" \
    test "$(ledger $BASIC resolved_by)/$(pending)" = "lookup/0"


# 7. posted orders leave salesOrders: the lookup finds the invoice

reset_all
post_fault 1 '"action":"commit_then_hold","hold_ms":3000'
"$worker" 2>>"$work/worker.log" &
worker_pid=$!
xadd "$F/orders-create-basic.json" orders/create wh-1
for _ in $(seq 50); do
    [ "$(bc_count $BASIC_DOC)" = 1 ] && break
    sleep 0.1
done
kill -9 $worker_pid; wait $worker_pid 2>/dev/null; worker_pid=""
sb faults -X DELETE >/dev/null
oid=$(sb orders | python3 -c 'import json, sys
print(json.load(sys.stdin)["value"][0]["order"]["id"])')
sb "companies/$BC365_COMPANY_ID/salesOrders/$oid/post" -X POST >/dev/null
drain
ok "posted before recovery: still one document" \
    test "$(bc_count $BASIC_DOC)" = 1
ok "posted before recovery: found as an invoice" \
    test "$(ledger $BASIC bc_document_type)" = salesInvoice


# 8. Redis restart under a running worker

reset_all
"$worker" 2>>"$work/worker.log" &
worker_pid=$!
xadd "$F/orders-create-basic.json" orders/create wh-1
sleep 1.5
stop_redis
sleep 1
start_redis
xadd "$F/orders-create-discounts.json" orders/create wh-2
for _ in $(seq 100); do
    [ "$(bc_count SHOPIFY-6021450011002)" = 1 ] && break
    sleep 0.1
done
ok "redis restart: both orders once" \
    test "$(bc_count $BASIC_DOC)$(bc_count SHOPIFY-6021450011002)" = 11


# 9. PostgreSQL restart while an order is on the wire

reset_all
kill -TERM $worker_pid; wait $worker_pid; worker_pid=""
post_fault 1 '"action":"commit_then_hold","hold_ms":2000'
"$worker" 2>>"$work/worker.log" &
worker_pid=$!
sleep 0.5
xadd "$F/orders-create-basic.json" orders/create wh-1
sleep 0.5
# the throwaway cluster of scripts/pg-throwaway.sh, nothing else
ok "postgres restart: the test cluster restarted" \
    "$PG_THROWAWAY_DIR/restart"
for _ in $(seq 150); do
    [ "$(ledger $BASIC state 2>/dev/null)" = created ] && break
    sleep 0.1
done
ok "postgres restart: exactly one order" test "$(bc_count $BASIC_DOC)" = 1
ok "postgres restart: recorded" test "$(ledger $BASIC state)" = created
ok "postgres restart: the worker saw PostgreSQL go away" \
    test -n "$(grep -e ledger_write_failed -e postgres_error \
               -e postgres_unavailable "$work/worker.log")"


# 10. metrics and health

m=$(curl -s "http://127.0.0.1:$metrics_port/metrics")
ok "metrics: pushed counter" \
    test -n "$(echo "$m" | grep '^bc_orders_pushed_total ')"
ok "metrics: push histogram" \
    test -n "$(echo "$m" | grep '^bc_order_push_seconds_count ')"
ok "metrics: entries by topic and outcome" \
    test -n "$(echo "$m" | grep '^worker_stream_entries_total{topic="orders/')"
ok "health: 200" test "$(curl -s -o /dev/null -w '%{http_code}' \
    "http://127.0.0.1:$metrics_port/health")" = 200
kill -TERM $worker_pid; wait $worker_pid; worker_pid=""


# 11. trimming keeps what another group still needs

reset_all
rc XGROUP CREATE shopify:webhooks audit 0 MKSTREAM >/dev/null
xadd "$F/orders-create-basic.json" orders/create wh-1
xadd "$F/products-update.json" products/update wh-2
TRIM_INTERVAL_MS=200 "$worker" --drain=1000 2>>"$work/worker.log"
ok "trim: entries another group has not read are kept" \
    test "$(rc XLEN shopify:webhooks)" = 2
first=$(rc XRANGE shopify:webhooks - + COUNT 1 | head -1)
rc XREADGROUP GROUP audit a COUNT 1 STREAMS shopify:webhooks '>' >/dev/null
rc XACK shopify:webhooks audit "$first" >/dev/null
TRIM_INTERVAL_MS=200 "$worker" --drain=1000 2>>"$work/worker.log"
ok "trim: entries every group acknowledged are removed" \
    test "$(rc XLEN shopify:webhooks)" = 1


# 12. a body with \u0000 is valid JSON: mapped, or refused for the field;
#     an empty body is dead-lettered

reset_all
python3 - "$F/orders-create-basic.json" "$work" <<'EOF'
import sys
body = open(sys.argv[1]).read()
note = body.replace('"note":null', '"note":"gift\\u0000wrap"', 1)
sku = body.replace('"sku":"1896-S"', '"sku":"1896-S\\u0000X"', 1)
sku = sku.replace('"id":6021450011001,', '"id":6021450011009,', 1)
assert note != body and "6021450011009" in sku and "u0000X" in sku
open(sys.argv[2] + "/nul-note.json", "w").write(note)
open(sys.argv[2] + "/nul-sku.json", "w").write(sku)
EOF
xadd "$work/nul-note.json" orders/create wh-nul-note
xadd "$work/nul-sku.json" orders/create wh-nul-sku
xadd /dev/null orders/create wh-empty
drain
ok "empty body: dead-lettered as such" \
    test "$(sq "SELECT count(*) FROM dead_letters
                WHERE webhook_id = 'wh-empty'
                AND error_message = 'entry has no body'")" = 1
ok "NUL in a note: order created" test "$(bc_count $BASIC_DOC)" = 1
ok "NUL in a SKU: refused, naming the field" \
    test "$(ledger 6021450011009 error_code)/$(ledger 6021450011009 \
        "error_message LIKE '%sku contains a NUL character%'")" \
    = "Mapping_InvalidOrder/t"
ok "NUL: not reported as invalid JSON" \
    test -z "$(grep 'not valid JSON' "$work/worker.log")"


# 13. a ledger of schema version 1, with rows, is migrated to version 2

reset_all
sq "CREATE TABLE schema_version (
      component text NOT NULL, version integer NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (component, version));
    INSERT INTO schema_version (component, version) VALUES ('worker', 1);
    CREATE TABLE bc_order_ledger (
      shop text NOT NULL, shopify_order_id bigint NOT NULL,
      shopify_order_name text NOT NULL DEFAULT '',
      external_document_number text NOT NULL,
      state text NOT NULL DEFAULT 'new'
        CHECK (state IN ('new', 'attempting', 'created', 'failed')),
      in_doubt boolean NOT NULL DEFAULT false,
      attempts integer NOT NULL DEFAULT 0, attempt_owner text,
      bc_document_type text, bc_id text, bc_number text, resolved_by text,
      error_code text, error_message text, first_webhook_id text,
      last_webhook_id text, last_stream_id text,
      first_seen_at timestamptz NOT NULL DEFAULT now(),
      last_seen_at timestamptz NOT NULL DEFAULT now(),
      last_attempt_at timestamptz, next_attempt_at timestamptz,
      completed_at timestamptz,
      PRIMARY KEY (shop, shopify_order_id));
    CREATE INDEX bc_order_ledger_open_idx
      ON bc_order_ledger (state) WHERE state <> 'created';
    CREATE INDEX bc_order_ledger_extdoc_idx
      ON bc_order_ledger (external_document_number);
    INSERT INTO bc_order_ledger (shop, shopify_order_id,
      shopify_order_name, external_document_number, state, attempts,
      bc_document_type, bc_id, bc_number, resolved_by, first_seen_at)
    VALUES
      ('Acme-Demo.myshopify.com', $BASIC, '#1043', '$BASIC_DOC', 'created',
       1, 'salesOrder', 'c0ffee00-0000-4000-8000-000000000001', '101001',
       'post', now() - interval '1 hour'),
      ('other.myshopify.com', $BASIC, '#1043', '$BASIC_DOC', 'new', 0,
       NULL, NULL, NULL, NULL, now()),
      ('ACME-DEMO.MYSHOPIFY.COM', 6021450011002, '#1044',
       'SHOPIFY-6021450011002', 'failed', 1, NULL, NULL, NULL, NULL,
       now());" >/dev/null
xadd "$F/orders-create-basic.json" orders/create wh-after-migration
drain
ok "v1 ledger: drain exits 0" test $? = 0
ok "v1 ledger: schema version 2 recorded" \
    test "$(sq "SELECT max(version) FROM schema_version
                WHERE component = 'worker'")" = 2
ok "v1 ledger: one row per order id, the created one kept" \
    test "$(sq "SELECT string_agg(shop || '/' || state, ','
                ORDER BY shopify_order_id) FROM bc_order_ledger")" \
    = "acme-demo.myshopify.com/created,acme-demo.myshopify.com/failed"
ok "v1 ledger: the other row kept aside" \
    test "$(sq "SELECT shop || '/' || shopify_order_id
                FROM bc_order_ledger_v1_duplicates")" \
    = "other.myshopify.com/$BASIC"
ok "v1 ledger: the order id is the primary key" \
    test "$(sq "SELECT string_agg(a.attname, ',') FROM pg_index i
                JOIN pg_attribute a ON a.attrelid = i.indrelid
                 AND a.attnum = ANY (i.indkey)
                WHERE i.indrelid = 'bc_order_ledger'::regclass
                  AND i.indisprimary")" = shopify_order_id
ok "v1 ledger: a known order is a duplicate, not posted again" \
    test "$(bc_count $BASIC_DOC)/$(pending)" = "0/0"
drain
ok "v2 ledger: a second start changes nothing" \
    test "$? $(sq "SELECT count(*) FROM schema_version
                   WHERE component = 'worker'") \
$(sq "SELECT count(*) FROM bc_order_ledger")" = "0 2 2"
ok "orders-sync schema recorded as its own component" \
    test "$(sq "SELECT version FROM schema_version
                WHERE component = 'orders-sync'")" = 1


echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
