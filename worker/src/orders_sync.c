/*
 * Order sync (see orders_sync.h).
 *
 * Everything here runs with the order's advisory lock held by the
 * caller (worker.c), on the caller's PostgreSQL session and BC client.
 * Each step reads BC's current state before it writes, so a step cut
 * short (crash, timeout, lost answer) is simply run again and converges
 * on the same end state: a totals check re-reads BC's total before it
 * adds a variance line, an update re-plans against BC's lines, a cancel
 * that finds the order gone is done.
 */

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customer.h"
#include "log.h"
#include "metrics.h"
#include "money.h"
#include "orders_sync.h"
#include "pg.h"
#include "sync_map.h"
#include "text.h"


/* key of the transaction lock serialising this component's migration */
#define SBW_SYNC_MIGRATE_LOCK  7426338

/* most line changes one update may make */
#define SBW_SYNC_MAX_OPS  512

/*
 * an update: plans made in one try (a POST refused as a line that exists
 * is followed by a read and a new plan) before the entry is retried
 */
#define SBW_SYNC_PLAN_PASSES  3

/* totals check: re-reads of BC's total before giving up */
#define SBW_SYNC_TOTAL_PASSES  3


static const char  sbw_sync_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS bc_order_sync ("
    "  shopify_order_id   bigint      PRIMARY KEY,"
    "  bc_company_id      text        NOT NULL,"
    "  money              text        NOT NULL DEFAULT 'shop',"
    "  last_updated_at    timestamptz,"
    "  last_topic         text,"
    "  shopify_total      numeric(20,2),"
    "  bc_total           numeric(20,2),"
    "  variance           numeric(20,2) NOT NULL DEFAULT 0,"
    "  totals_state       text        NOT NULL DEFAULT 'pending'"
    "    CHECK (totals_state IN ('pending', 'matched', 'variance',"
    "                            'mismatch', 'unchecked')),"
    "  sync_state         text        NOT NULL DEFAULT 'open'"
    "    CHECK (sync_state IN ('open', 'cancelled', 'conflict')),"
    "  conflict_code      text,"
    "  conflict_message   text,"
    "  updated_at         timestamptz NOT NULL DEFAULT now()"
    ");"
    "CREATE TABLE IF NOT EXISTS bc_sku_map ("
    "  sku             text        PRIMARY KEY,"
    "  bc_item_number  text        NOT NULL CHECK (bc_item_number <> ''),"
    "  source          text        NOT NULL DEFAULT 'manual',"
    "  updated_at      timestamptz NOT NULL DEFAULT now()"
    ");"
    "INSERT INTO schema_version (component, version)"
    "  VALUES ('orders-sync', 1) ON CONFLICT DO NOTHING";


static int sbw_sync_exec(sbw_ledger_t *l, const char *sql, int n,
    const char *const *params, PGresult **out);
static int sbw_sync_put(sbw_sync_t *s, int64_t order_id,
    const sbw_bc_order_t *o, const char *updated_at, const char *topic,
    const char *totals, const char *sync_state);
static int sbw_sync_set_totals(sbw_sync_t *s, int64_t order_id,
    const char *state, int64_t bc_total, int64_t variance);
static int sbw_sync_set_state(sbw_sync_t *s, int64_t order_id,
    const char *state, const char *code, const char *message,
    const char *updated_at, const char *topic);
static int sbw_valid_time(const char *t);
static void sbw_sync_bc_retry(sbw_sync_result_t *r, const char *step);
static void sbw_sync_review(sbw_sync_t *s, int64_t order_id,
    sbw_sync_result_t *r, const char *code, const char *event,
    const char *fmt, ...);
static int sbw_sync_get_order(sbw_sync_t *s, const char *bc_id,
    sbw_sync_result_t *r, json_t **order);
static void sbw_sync_reconcile(sbw_sync_t *s, int64_t order_id,
    const char *bc_id, const sbw_bc_order_t *o, const json_t *answer,
    sbw_sync_result_t *r);
static int sbw_sync_same_key(const sbw_bc_result_t *res,
    sbw_bc_class_e cls);
static void sbw_sync_update(sbw_sync_t *s, int64_t order_id,
    const sbw_bc_order_t *o, const char *bc_id, json_t *bc_order,
    const char *topic, sbw_sync_result_t *r);
static void sbw_sync_cancel(sbw_sync_t *s, int64_t order_id,
    const sbw_bc_order_t *o, const char *bc_id, json_t *bc_order,
    const char *topic, sbw_sync_result_t *r);
static char *sbw_customer_body(const json_t *order, const char *email);


/*
 * One parameterised statement on the caller's session.  Returns 0 (the
 * result in *out when out is not NULL) or -1 with l->errstr set.
 */
static int
sbw_sync_exec(sbw_ledger_t *l, const char *sql, int n,
    const char *const *params, PGresult **out)
{
    return sbw_pg_exec(l->conn, sql, n, params, SBW_PG_ANY, out, l->errstr,
                       sizeof(l->errstr));
}


/*
 * Create this component's tables (schema_version component
 * "orders-sync") and seed bc_sku_map from SKU_MAP_JSON.  The table wins:
 * a row written by a person (source 'manual', the column's default) is
 * never changed by the setting, so an edit made in the table is not
 * undone by a restart with an older setting.  Rows the setting wrote
 * (source 'SKU_MAP_JSON') follow it: added, changed, and removed when
 * the setting no longer names their SKU.  *seeded counts the rows added
 * or changed.  One transaction under its own advisory lock, like the
 * ledger's migration.
 */
int
sbw_sync_migrate(sbw_ledger_t *l, const sbw_config_t *conf,
    long long *seeded)
{
    char         *map, sql[64];
    PGresult     *res;
    const char   *params[1];

    *seeded = 0;

    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%d)",
             SBW_SYNC_MIGRATE_LOCK);

    if (sbw_sync_exec(l, "BEGIN", 0, NULL, NULL) != 0) {
        return -1;
    }

    if (sbw_sync_exec(l, sql, 0, NULL, NULL) != 0
        || sbw_sync_exec(l, "SELECT 1 FROM schema_version WHERE"
                         " component = 'orders-sync' AND version > 1",
                         0, NULL, &res) != 0)
    {
        goto failed;
    }

    if (PQntuples(res) > 0) {
        PQclear(res);
        snprintf(l->errstr, sizeof(l->errstr), "the orders-sync schema is "
                 "newer than this worker's version %d",
                 SBW_SYNC_SCHEMA_VERSION);
        goto failed;
    }

    PQclear(res);

    res = PQexec(l->conn, sbw_sync_schema_sql);

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(l->errstr, sizeof(l->errstr), "%s",
                 res ? PQresultErrorMessage(res) : PQerrorMessage(l->conn));
        l->errstr[strcspn(l->errstr, "\n")] = '\0';
        PQclear(res);
        goto failed;
    }

    PQclear(res);

    map = json_dumps(conf->sku_map, JSON_COMPACT);
    if (map == NULL) {
        snprintf(l->errstr, sizeof(l->errstr), "out of memory");
        goto failed;
    }

    params[0] = map;

    if (sbw_sync_exec(l,
            "DELETE FROM bc_sku_map WHERE source = 'SKU_MAP_JSON'"
            " AND sku NOT IN (SELECT key FROM json_each_text($1::json)"
            "                 WHERE value <> '')",
            1, params, NULL) != 0
        || sbw_sync_exec(l,
            "WITH added AS ("
            "  INSERT INTO bc_sku_map AS m (sku, bc_item_number, source)"
            "  SELECT key, value, 'SKU_MAP_JSON'"
            "    FROM json_each_text($1::json) WHERE value <> ''"
            "  ON CONFLICT (sku) DO UPDATE"
            "    SET bc_item_number = EXCLUDED.bc_item_number,"
            "        updated_at = now()"
            "    WHERE m.source = 'SKU_MAP_JSON'"
            "      AND m.bc_item_number <> EXCLUDED.bc_item_number"
            "  RETURNING 1"
            ") SELECT count(*) FROM added",
            1, params, &res) != 0)
    {
        free(map);
        goto failed;
    }

    free(map);
    *seeded = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);

    if (sbw_sync_exec(l, "COMMIT", 0, NULL, NULL) != 0) {
        goto failed;
    }

    return 0;

failed:

    PQclear(PQexec(l->conn, "ROLLBACK"));
    return -1;
}


/*
 * The SKU map for one order: the bc_sku_map rows of the order's SKUs, as
 * a JSON object sku -> item number (one query).  NULL on a database
 * error (l->errstr says which) or out of memory.
 */
json_t *
sbw_sync_sku_map(sbw_ledger_t *l, const json_t *order)
{
    char          *skus;
    size_t         i;
    json_t        *list, *map;
    PGresult      *res;
    const char    *params[1], *sku;
    const json_t  *li;

    list = json_array();
    if (list == NULL) {
        return NULL;
    }

    json_array_foreach(json_object_get(order, "line_items"), i, li) {
        sku = json_string_value(json_object_get(li, "sku"));

        if (sku != NULL && sku[0] != '\0') {
            json_array_append_new(list, json_string(sku));
        }
    }

    if (json_array_size(list) == 0) {
        json_decref(list);
        return json_object();
    }

    skus = json_dumps(list, JSON_COMPACT);
    json_decref(list);

    if (skus == NULL) {
        return NULL;
    }

    if (sbw_ledger_connect(l) != 0) {
        free(skus);
        return NULL;
    }

    params[0] = skus;

    if (sbw_sync_exec(l,
            "SELECT coalesce(json_object_agg(sku, bc_item_number), '{}')"
            "  FROM bc_sku_map"
            " WHERE sku IN (SELECT json_array_elements_text($1::json))",
            1, params, &res) != 0)
    {
        free(skus);
        return NULL;
    }

    free(skus);
    map = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);

    return map;
}


/*
 * The order's sync row.  Returns 0 (row->found says whether there is
 * one) or -1 on a database error.
 */
int
sbw_sync_read(sbw_ledger_t *l, int64_t order_id, sbw_sync_row_t *row)
{
    char         id[32];
    PGresult    *res;
    const char  *params[1];

    memset(row, 0, sizeof(*row));
    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    params[0] = id;

    if (sbw_sync_exec(l,
            "SELECT s.bc_company_id, s.totals_state, s.sync_state,"
            " s.last_updated_at IS NOT NULL,"
            " coalesce(l.bc_document_type, ''), s.shopify_order_id IS NULL"
            " FROM bc_order_ledger l LEFT JOIN bc_order_sync s"
            " USING (shopify_order_id)"
            " WHERE l.shopify_order_id = $1::bigint",
            1, params, &res) != 0)
    {
        return -1;
    }

    if (PQntuples(res) == 1) {
        snprintf(row->doc_type, sizeof(row->doc_type), "%s",
                 PQgetvalue(res, 0, 4));
    }

    if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 5), "f") == 0) {
        row->found = 1;
        snprintf(row->company, sizeof(row->company), "%s",
                 PQgetvalue(res, 0, 0));
        snprintf(row->totals_state, sizeof(row->totals_state), "%s",
                 PQgetvalue(res, 0, 1));
        snprintf(row->sync_state, sizeof(row->sync_state), "%s",
                 PQgetvalue(res, 0, 2));
        row->has_updated_at = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    }

    PQclear(res);
    return 0;
}


/*
 * Point the BC client at the order's company: the one recorded when the
 * order was created, else the shop's (BC365_COMPANIES, then
 * BC365_COMPANY_ID).  An order never moves between companies, even if
 * the setting changes later.
 */
int
sbw_sync_use_company(sbw_sync_t *s, const sbw_sync_row_t *row,
    const char *shop)
{
    const char  *company;

    company = row->found ? row->company
                         : sbw_company_for_shop(s->conf, shop);

    snprintf(s->company, sizeof(s->company), "%s", company);

    return sbw_bc_set_company(s->bc, s->company);
}


/*
 * Whether t looks like Shopify's updated_at ("2026-03-17T14:05:12-04:00",
 * "...Z", fractions allowed), so that PostgreSQL can take it as a
 * timestamptz; anything else is treated as unknown rather than risk a
 * cast error on every try.
 */
static int
sbw_valid_time(const char *t)
{
    size_t  i;

    static const char  pat[] = "dddd-dd-ddTdd:dd:dd";

    if (strlen(t) < sizeof(pat) - 1) {
        return 0;
    }

    for (i = 0; i < sizeof(pat) - 1; i++) {
        if (pat[i] == 'd' ? !isdigit((unsigned char) t[i]) : t[i] != pat[i]) {
            return 0;
        }
    }

    for (t += i; *t != '\0'; t++) {
        if (!isdigit((unsigned char) *t) && strchr(".:+-Z", *t) == NULL) {
            return 0;
        }
    }

    return 1;
}


/*
 * Whether updated_at is not newer than the state last applied to the
 * order: 1 older, 2 the very state applied last, 0 newer (or nothing
 * applied yet, or unknown), -1 on a database error.
 */
int
sbw_sync_is_stale(sbw_ledger_t *l, int64_t order_id, const char *updated_at)
{
    int          stale;
    char         id[32];
    PGresult    *res;
    const char  *params[2];

    if (updated_at == NULL || !sbw_valid_time(updated_at)) {
        return 0;
    }

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    params[0] = id;
    params[1] = updated_at;

    if (sbw_sync_exec(l,
            "SELECT CASE WHEN $2::timestamptz < last_updated_at THEN 1"
            " WHEN $2::timestamptz = last_updated_at THEN 2 ELSE 0 END"
            " FROM bc_order_sync WHERE shopify_order_id = $1::bigint",
            2, params, &res) != 0)
    {
        return -1;
    }

    stale = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)
            ? atoi(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);

    return stale;
}


/*
 * Insert or refresh the order's sync row.  updated_at is the Shopify
 * state applied ("" for none).  last_updated_at only moves forward
 * (greatest()), so the row always names the newest state applied.
 */
static int
sbw_sync_put(sbw_sync_t *s, int64_t order_id, const sbw_bc_order_t *o,
    const char *updated_at, const char *topic, const char *totals,
    const char *sync_state)
{
    char         id[32], total[SBW_MONEY_BUFLEN];
    const char  *params[8];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);

    if (o->shopify_total >= 0) {
        sbw_money_format(o->shopify_total, total, sizeof(total));

    } else {
        total[0] = '\0';
    }

    params[0] = id;
    params[1] = s->company;
    params[2] = s->conf->order_money == SBW_MONEY_PRESENTMENT
                ? "presentment" : "shop";
    params[3] = sbw_valid_time(updated_at) ? updated_at : "";
    params[4] = topic;
    params[5] = total;
    params[6] = totals;
    params[7] = sync_state;

    return sbw_sync_exec(s->ledger,
            "INSERT INTO bc_order_sync AS s (shopify_order_id, bc_company_id,"
            " money, last_updated_at, last_topic, shopify_total,"
            " totals_state, sync_state)"
            " VALUES ($1::bigint, $2, $3, nullif($4, '')::timestamptz, $5,"
            " nullif($6, '')::numeric, $7, $8)"
            " ON CONFLICT (shopify_order_id) DO UPDATE SET"
            " last_updated_at = greatest(s.last_updated_at,"
            "   EXCLUDED.last_updated_at),"
            " last_topic = EXCLUDED.last_topic,"
            " shopify_total = EXCLUDED.shopify_total,"
            " totals_state = EXCLUDED.totals_state,"
            " sync_state = EXCLUDED.sync_state,"
            " updated_at = now()",
            8, params, NULL);
}


static int
sbw_sync_set_totals(sbw_sync_t *s, int64_t order_id, const char *state,
    int64_t bc_total, int64_t variance)
{
    char         id[32], total[SBW_MONEY_BUFLEN], var[SBW_MONEY_BUFLEN];
    const char  *params[4];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    sbw_money_format(bc_total, total, sizeof(total));
    sbw_money_format(variance, var, sizeof(var));
    params[0] = id;
    params[1] = state;
    params[2] = total;
    params[3] = var;

    return sbw_sync_exec(s->ledger,
            "UPDATE bc_order_sync SET totals_state = $2,"
            " bc_total = $3::numeric, variance = $4::numeric,"
            " updated_at = now() WHERE shopify_order_id = $1::bigint",
            4, params, NULL);
}


/*
 * Record the sync state (open, cancelled, conflict) with the reason of a
 * conflict; updated_at (when not NULL) is recorded as applied.
 */
static int
sbw_sync_set_state(sbw_sync_t *s, int64_t order_id, const char *state,
    const char *code, const char *message, const char *updated_at,
    const char *topic)
{
    char         id[32];
    const char  *params[6];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    params[0] = id;
    params[1] = state;
    params[2] = code;
    params[3] = message;
    params[4] = updated_at != NULL && sbw_valid_time(updated_at)
                ? updated_at : "";
    params[5] = topic;

    return sbw_sync_exec(s->ledger,
            "UPDATE bc_order_sync SET sync_state = $2,"
            " conflict_code = nullif($3, ''),"
            " conflict_message = nullif($4, ''),"
            " last_updated_at = greatest(last_updated_at,"
            "   nullif($5, '')::timestamptz),"
            " last_topic = coalesce(nullif($6, ''), last_topic),"
            " updated_at = now() WHERE shopify_order_id = $1::bigint",
            6, params, NULL);
}


void
sbw_sync_result_init(sbw_sync_result_t *r)
{
    memset(r, 0, sizeof(*r));
    r->res.retry_after_ms = -1;
    r->level = SBW_LOG_INFO;
}


void
sbw_sync_result_clear(sbw_sync_result_t *r)
{
    json_decref(r->extra);
    sbw_bc_result_clear(&r->res);
    sbw_sync_result_init(r);
}


/*
 * A BC call failed in a way worth another try (r->res holds it).
 */
static void
sbw_sync_bc_retry(sbw_sync_result_t *r, const char *step)
{
    char  code[128], msg[512];

    sbw_bc_describe(&r->res, code, sizeof(code), msg, sizeof(msg));

    r->action = SBW_SYNC_RETRY;
    r->level = SBW_LOG_WARN;
    r->event = "order_retry";
    snprintf(r->code, sizeof(r->code), "%s", code);
    snprintf(r->message, sizeof(r->message), "%s", msg);
    json_decref(r->extra);
    r->extra = json_pack("{s:s,s:s,s:s,s:i,s:s}", "step", step,
                         "bc_error_code", code, "message", msg,
                         "status", (json_int_t) r->res.status,
                         "correlation_id", r->res.correlation_id);
}


/*
 * The order needs a person: the reason goes to the result (and so to the
 * dead-letter record and the log line).  A conflict is also recorded in
 * the sync row.
 */
static void
sbw_sync_review(sbw_sync_t *s, int64_t order_id, sbw_sync_result_t *r,
    const char *code, const char *event, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);

    snprintf(r->code, sizeof(r->code), "%s", code);
    r->action = SBW_SYNC_REVIEW;
    r->level = SBW_LOG_ERROR;
    r->event = event;

    if (strcmp(code, SBW_SYNC_ERR_CONFLICT) == 0) {
        sbw_metrics_order_sync("conflict");

        if (sbw_sync_set_state(s, order_id, "conflict", code, r->message,
                               NULL, NULL) != 0)
        {
            r->action = SBW_SYNC_PGFAIL;
        }
    }

    json_decref(r->extra);
    r->extra = json_pack("{s:s,s:s}", "bc_error_code", code,
                         "message", r->message);
}


/*
 * GET the BC order with its lines.  Returns 1 with *order (the caller
 * releases it), 0 when BC has no such order (404), -1 with r set for a
 * retry.
 */
static int
sbw_sync_get_order(sbw_sync_t *s, const char *bc_id, sbw_sync_result_t *r,
    json_t **order)
{
    char            path[160];
    sbw_bc_class_e  cls;

    *order = NULL;
    snprintf(path, sizeof(path), "/salesOrders(%s)?$expand=salesOrderLines",
             bc_id);

    cls = sbw_bc_request(s->bc, "order_read", "GET", path, NULL, NULL,
                         &r->res);

    if (cls == SBW_BC_OK && json_is_object(r->res.body)) {
        *order = json_incref(r->res.body);
        sbw_bc_result_clear(&r->res);
        return 1;
    }

    if (r->res.status == 404) {
        sbw_bc_result_clear(&r->res);
        return 0;
    }

    sbw_sync_bc_retry(r, "order_read");
    return -1;
}


/*
 * Bring BC's totalAmountIncludingTax to Shopify's total.  BC computes the
 * tax (BC is the authority; the worker never predicts it).  When BC's
 * total differs by no more than the tolerance (sbw_total_tolerance()),
 * one non-taxable Account line "Shopify rounding variance" on
 * BC365_ROUNDING_ACCOUNT carries the difference; BC's total is then read
 * again and must equal Shopify's to the cent.  Beyond the tolerance, or
 * without a rounding account, the order is flagged for review
 * (Mapping_TotalMismatch), never accepted silently.  A variance line left
 * from an earlier state of the order is removed first when the total no
 * longer matches.  answer is BC's answer to the order's POST (its total
 * saves one read), or NULL.
 */
static void
sbw_sync_reconcile(sbw_sync_t *s, int64_t order_id, const char *bc_id,
    const sbw_bc_order_t *o, const json_t *answer, sbw_sync_result_t *r)
{
    int             pass, got, has_variance;
    char            path[200], a[SBW_MONEY_BUFLEN], b[SBW_MONEY_BUFLEN];
    char            c[SBW_MONEY_BUFLEN], t[SBW_MONEY_BUFLEN], *body;
    size_t          i;
    json_t         *bc_order;
    int64_t         total, diff, tol, variance, cents;
    const json_t   *lines, *ln;
    sbw_bc_line_t   line;
    sbw_bc_class_e  cls;

    if (o->shopify_total < 0) {
        if (sbw_sync_set_totals(s, order_id, "unchecked", 0, 0) != 0) {
            r->action = SBW_SYNC_PGFAIL;
            return;
        }

        r->action = SBW_SYNC_ACK;
        r->level = SBW_LOG_WARN;
        r->event = "order_totals_unchecked";
        r->extra = json_pack("{s:s}", "message", "the Shopify order has no "
                             "total to compare BC's with");
        return;
    }

    tol = sbw_total_tolerance(s->conf->tax_tolerance, o->ntax_lines);

    /* TODO: BC taxes by the customer's tax area; guests elsewhere differ */

    for (pass = 0; pass < SBW_SYNC_TOTAL_PASSES; pass++) {
        bc_order = NULL;

        if (pass == 0 && answer != NULL
            && sbw_cents_of(json_object_get(answer,
                                            "totalAmountIncludingTax"),
                            &total) == 0)
        {
            /* the lines, when the answer has them ($expand) */
            lines = json_object_get(answer, "salesOrderLines");

        } else {
            got = sbw_sync_get_order(s, bc_id, r, &bc_order);

            if (got < 0) {
                return;
            }

            if (got == 0) {
                /* gone from salesOrders (posted or deleted) meanwhile */
                if (sbw_sync_set_totals(s, order_id, "unchecked", 0, 0)
                    != 0)
                {
                    r->action = SBW_SYNC_PGFAIL;
                    return;
                }

                r->action = SBW_SYNC_ACK;
                r->level = SBW_LOG_WARN;
                r->event = "order_totals_unchecked";
                r->extra = json_pack("{s:s}", "message", "the BC order is "
                                     "no longer in salesOrders");
                return;
            }

            if (sbw_cents_of(json_object_get(bc_order,
                                             "totalAmountIncludingTax"),
                             &total) != 0)
            {
                json_decref(bc_order);
                snprintf(r->res.error_code, sizeof(r->res.error_code),
                         "Worker_BadOrderAnswer");
                snprintf(r->res.error_message,
                         sizeof(r->res.error_message), "the BC order has "
                         "no totalAmountIncludingTax");
                sbw_sync_bc_retry(r, "order_read");
                return;
            }

            lines = json_object_get(bc_order, "salesOrderLines");
        }

        diff = o->shopify_total - total;
        variance = 0;
        has_variance = 0;

        json_array_foreach(lines, i, ln) {
            if (sbw_is_variance_line(ln, s->conf->rounding_account)
                && sbw_cents_of(json_object_get(ln, "unitPrice"), &cents)
                   == 0)
            {
                has_variance = 1;
                variance += cents;
            }
        }

        if (diff == 0) {
            json_decref(bc_order);

            if (sbw_sync_set_totals(s, order_id, has_variance ? "variance"
                                    : "matched", total, variance) != 0)
            {
                r->action = SBW_SYNC_PGFAIL;
                return;
            }

            sbw_metrics_order_sync(has_variance ? "variance_added"
                                                : "totals_matched");
            sbw_money_format(total, a, sizeof(a));
            sbw_money_format(variance, b, sizeof(b));
            r->action = SBW_SYNC_ACK;
            r->extra = json_pack("{s:s,s:s,s:s}", "bc_total", a,
                                 "variance", b, "company", s->company);
            return;
        }

        /* an old variance line no longer fits: remove it, read again */
        if (has_variance) {
            json_array_foreach(lines, i, ln) {
                if (!sbw_is_variance_line(ln, s->conf->rounding_account)) {
                    continue;
                }

                snprintf(path, sizeof(path), "/salesOrders(%s)/"
                         "salesOrderLines(%s)", bc_id,
                         json_string_value(json_object_get(ln, "id")));

                cls = sbw_bc_request(s->bc, "order_line", "DELETE", path,
                                     NULL, json_string_value(
                                         json_object_get(ln, "@odata.etag")),
                                     &r->res);

                if (cls != SBW_BC_OK && r->res.status != 404) {
                    json_decref(bc_order);
                    sbw_sync_bc_retry(r, "variance_delete");
                    return;
                }

                sbw_bc_result_clear(&r->res);
            }

            json_decref(bc_order);
            continue;
        }

        json_decref(bc_order);

        sbw_money_format(total, a, sizeof(a));
        sbw_money_format(o->shopify_total, b, sizeof(b));
        sbw_money_format(diff, c, sizeof(c));
        sbw_money_format(tol, t, sizeof(t));

        if (diff > tol || diff < -tol || s->conf->rounding_account == NULL) {
            if (sbw_sync_set_totals(s, order_id, "mismatch", total, 0)
                != 0)
            {
                r->action = SBW_SYNC_PGFAIL;
                return;
            }

            sbw_metrics_order_sync("total_mismatch");
            sbw_sync_review(s, order_id, r, SBW_MAP_ERR_MISMATCH,
                            "order_total_mismatch",
                            "BC's totalAmountIncludingTax %s differs from "
                            "Shopify's total %s by %s%s%s", a, b, c,
                            s->conf->rounding_account == NULL
                            ? "; no BC365_ROUNDING_ACCOUNT is set"
                            : ", more than the tolerance ",
                            s->conf->rounding_account == NULL ? "" : t);
            json_decref(r->extra);
            r->extra = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}",
                                 "bc_error_code", SBW_MAP_ERR_MISMATCH,
                                 "message", r->message, "bc_total", a,
                                 "shopify_total", b, "difference", c,
                                 "company", s->company);
            return;
        }

        /* within the tolerance: one rounding line, outside BC's tax */
        memset(&line, 0, sizeof(line));
        line.type = SBW_LINE_ACCOUNT;
        line.number = (char *) s->conf->rounding_account;
        line.description = (char *) SBW_VARIANCE_DESCRIPTION;
        line.quantity = 1;
        line.unit_price = diff;
        line.sequence = SBW_VARIANCE_SEQUENCE;
        line.tax_code = (s->conf->nontaxable_code != NULL
                         && strcmp(s->conf->nontaxable_code, "none") != 0)
                        ? s->conf->nontaxable_code : NULL;

        body = sbw_order_line_payload(&line, 0);
        if (body == NULL) {
            snprintf(r->res.error_code, sizeof(r->res.error_code),
                     "Worker_NoMemory");
            sbw_sync_bc_retry(r, "variance_line");
            return;
        }

        snprintf(path, sizeof(path), "/salesOrders(%s)/salesOrderLines",
                 bc_id);
        cls = sbw_bc_request(s->bc, "order_line", "POST", path, body, NULL,
                             &r->res);
        free(body);

        if (sbw_sync_same_key(&r->res, cls)) {
            /* an earlier try's line got there after all: read again */
            sbw_bc_result_clear(&r->res);
            continue;
        }

        if (cls == SBW_BC_PERMANENT) {
            sbw_bc_describe(&r->res, r->code, sizeof(r->code), path,
                            sizeof(path));

            if (sbw_sync_set_totals(s, order_id, "mismatch", total, 0)
                != 0)
            {
                r->action = SBW_SYNC_PGFAIL;
                return;
            }

            sbw_metrics_order_sync("total_mismatch");
            sbw_sync_review(s, order_id, r, SBW_MAP_ERR_MISMATCH,
                            "order_total_mismatch",
                            "BC's total %s differs from Shopify's %s by %s "
                            "and BC refused the rounding line: %s: %s", a,
                            b, c, r->res.error_code, r->res.error_message);
            return;
        }

        if (cls != SBW_BC_OK) {
            sbw_sync_bc_retry(r, "variance_line");
            return;
        }

        sbw_bc_result_clear(&r->res);
    }

    if (sbw_sync_set_totals(s, order_id, "mismatch", 0, 0) != 0) {
        r->action = SBW_SYNC_PGFAIL;
        return;
    }

    sbw_metrics_order_sync("total_mismatch");
    sbw_sync_review(s, order_id, r, SBW_MAP_ERR_MISMATCH,
                    "order_total_mismatch", "BC's total still differs from "
                    "Shopify's after %d passes", SBW_SYNC_TOTAL_PASSES);
}


/*
 * The BC order was just created (POST answered 2xx, ledger committed):
 * record the sync row, then check the totals.
 */
void
sbw_sync_after_create(sbw_sync_t *s, int64_t order_id,
    const sbw_bc_order_t *o, const char *bc_id, const json_t *answer,
    const char *topic, sbw_sync_result_t *r)
{
    if (sbw_sync_put(s, order_id, o, o->updated_at, topic, "pending", "open")
        != 0)
    {
        r->action = SBW_SYNC_PGFAIL;
        return;
    }

    sbw_sync_reconcile(s, order_id, bc_id, o, answer, r);
}


/*
 * The ledger says the BC document exists.  For orders/create: finish a
 * totals check an earlier try left pending (a crash, a lost answer), or
 * nothing (a duplicate).  For orders/updated and orders/cancelled: apply
 * the delivery to the open BC order unless an equal or newer state was
 * applied already.
 */
void
sbw_sync_created(sbw_sync_t *s, int64_t order_id, const sbw_sync_row_t *row,
    const sbw_bc_order_t *o, const char *doc_type, const char *bc_id,
    const char *topic, sbw_sync_result_t *r)
{
    int             stale, got;
    json_t         *bc_order;
    const char     *status;
    sbw_bc_doc_t    doc;

    r->action = SBW_SYNC_ACK;

    if (strcmp(topic, SBW_TOPIC_ORDERS_UPDATED) != 0
        && strcmp(topic, SBW_TOPIC_ORDERS_CANCELLED) != 0)
    {
        if (row->found && strcmp(row->totals_state, "pending") != 0) {
            return;
        }

        if (strcmp(doc_type, "salesOrder") != 0) {
            if (sbw_sync_put(s, order_id, o, o->updated_at, topic,
                             "unchecked", "open") != 0)
            {
                r->action = SBW_SYNC_PGFAIL;
            }

            return;
        }

        if (!row->found
            && sbw_sync_put(s, order_id, o, o->updated_at, topic, "pending",
                            "open") != 0)
        {
            r->action = SBW_SYNC_PGFAIL;
            return;
        }

        sbw_sync_reconcile(s, order_id, bc_id, o, NULL, r);
        return;
    }

    /*
     * orders/updated, orders/cancelled on an order without a sync row (an
     * order found by lookup, or created before this table): a row that
     * has applied no Shopify state yet
     */
    if (!row->found
        && sbw_sync_put(s, order_id, o, "", "orders/create", "unchecked",
                        "open") != 0)
    {
        r->action = SBW_SYNC_PGFAIL;
        return;
    }

    stale = sbw_sync_is_stale(s->ledger, order_id, o->updated_at);

    if (stale < 0) {
        r->action = SBW_SYNC_PGFAIL;
        return;
    }

    if (stale == 2 && row->found
        && strcmp(row->totals_state, "pending") == 0
        && strcmp(row->sync_state, "open") == 0
        && strcmp(topic, SBW_TOPIC_ORDERS_UPDATED) == 0
        && strcmp(doc_type, "salesOrder") == 0)
    {
        /*
         * this very edit was applied and its totals check was cut short
         * (BC failed, the worker died): check the totals now
         */
        sbw_sync_reconcile(s, order_id, bc_id, o, NULL, r);
        return;
    }

    if (stale) {
        sbw_metrics_order_sync("update_stale");
        r->event = "order_update_stale";
        r->extra = json_pack("{s:s,s:s}", "topic", topic, "updated_at",
                             o->updated_at);
        return;
    }

    if (row->found && strcmp(row->sync_state, "cancelled") == 0) {
        sbw_metrics_order_sync("update_stale");
        r->event = "order_update_stale";
        r->extra = json_pack("{s:s,s:s,s:s}", "topic", topic,
                             "updated_at", o->updated_at, "message",
                             "the BC order was deleted when Shopify "
                             "cancelled the order");
        return;
    }

    if (strcmp(doc_type, "salesOrder") != 0) {
        sbw_sync_review(s, order_id, r, SBW_SYNC_ERR_CONFLICT,
                        "order_conflict", "%s: the order is already posted "
                        "in BC (%s %s); Shopify's change is not applied",
                        topic, doc_type, bc_id);
        return;
    }

    got = sbw_sync_get_order(s, bc_id, r, &bc_order);

    if (got < 0) {
        return;
    }

    if (got == 0) {
        /* posted since, or deleted in BC by someone */
        if (sbw_bc_find_document(s->bc, o->external_doc, &doc, &r->res) < 0)
        {
            sbw_sync_bc_retry(r, "lookup");
            return;
        }

        sbw_bc_result_clear(&r->res);
        sbw_sync_review(s, order_id, r, SBW_SYNC_ERR_CONFLICT,
                        "order_conflict", "%s: the BC order is no longer "
                        "open (%s%s%s); Shopify's change is not applied",
                        topic, doc.doc_type[0] ? doc.doc_type : "deleted",
                        doc.doc_type[0] ? " " : "", doc.number);
        return;
    }

    status = json_string_value(json_object_get(bc_order, "status"));

    if (status != NULL && strcmp(status, "Draft") != 0) {
        sbw_sync_review(s, order_id, r, SBW_SYNC_ERR_CONFLICT,
                        "order_conflict", "%s: BC order %s is released "
                        "(status %s); Shopify's change is not applied",
                        topic, json_string_value(json_object_get(bc_order,
                                                                 "number")),
                        status);
        json_decref(bc_order);
        return;
    }

    if (strcmp(topic, SBW_TOPIC_ORDERS_CANCELLED) == 0) {
        sbw_sync_cancel(s, order_id, o, bc_id, bc_order, topic, r);

    } else {
        sbw_sync_update(s, order_id, o, bc_id, bc_order, topic, r);
    }

    json_decref(bc_order);
}


/*
 * A BC answer to one line change: 1 done, 0 r set (retry or review).
 * 409/412 mean the line changed under us: retry, which re-plans.
 */
static int
sbw_sync_line_answer(sbw_sync_t *s, int64_t order_id, sbw_bc_class_e cls,
    const char *topic, sbw_sync_result_t *r)
{
    if (cls == SBW_BC_OK || (r->res.status == 404 && r->res.curl_code == 0
                             && strcmp(r->res.error_code,
                                       "Internal_RecordNotFound") == 0))
    {
        sbw_bc_result_clear(&r->res);
        return 1;
    }

    if (r->res.status == 409 || r->res.status == 412) {
        sbw_sync_bc_retry(r, "order_line");
        return 0;
    }

    if (cls == SBW_BC_PERMANENT) {
        sbw_sync_review(s, order_id, r, SBW_SYNC_ERR_CONFLICT,
                        "order_conflict", "%s: BC refused a line change: "
                        "%s: %s (the BC order may be partly updated)",
                        topic, r->res.error_code, r->res.error_message);
        return 0;
    }

    sbw_sync_bc_retry(r, "order_line");
    return 0;
}


/*
 * Whether BC refused a POST because a line with its sequence exists (409
 * Internal_EntityWithSameKeyExists): an earlier try's POST of it that BC
 * carried out after the worker gave up.
 */
static int
sbw_sync_same_key(const sbw_bc_result_t *res, sbw_bc_class_e cls)
{
    return cls == SBW_BC_PERMANENT && res->status == 409
           && strcmp(res->error_code, "Internal_EntityWithSameKeyExists")
              == 0;
}


/*
 * Read the open BC order again (after a refused POST).  Returns 1 with
 * *order, 0 with r set for a retry: an order gone or released meanwhile
 * is left to the next try, which tells the cases apart.
 */
static int
sbw_sync_reread(sbw_sync_t *s, const char *bc_id, sbw_sync_result_t *r,
    json_t **order)
{
    int          got;
    const char  *status;

    got = sbw_sync_get_order(s, bc_id, r, order);

    if (got < 0) {
        return 0;
    }

    status = got ? json_string_value(json_object_get(*order, "status"))
                 : NULL;

    if (got == 0 || (status != NULL && strcmp(status, "Draft") != 0)) {
        json_decref(*order);
        *order = NULL;
        snprintf(r->res.error_code, sizeof(r->res.error_code),
                 "Worker_OrderChanged");
        snprintf(r->res.error_message, sizeof(r->res.error_message),
                 "the BC order is no longer open; the next try looks again");
        sbw_sync_bc_retry(r, "order_read");
        return 0;
    }

    return 1;
}


/* TODO: header fields (addresses, e-mail, phone) are not patched on edits */

/*
 * orders/updated on an open BC order: the lines are brought to the
 * edited order (current quantities, sbw_sync_plan()), then the totals
 * checked against current_total_price, then the state recorded as
 * applied.  Each added line is posted under the sequence the plan gives
 * it; when BC refuses one as a line that exists, an earlier try's POST
 * of it got there late: the order is read again and planned again (at
 * most SBW_SYNC_PLAN_PASSES times in one try), which keeps that line.
 */
static void
sbw_sync_update(sbw_sync_t *s, int64_t order_id, const sbw_bc_order_t *o,
    const char *bc_id, json_t *bc_order, const char *topic,
    sbw_sync_result_t *r)
{
    int             rc, pass, again;
    char            path[200], *body;
    size_t          i, nops, done;
    json_t         *current, *fresh;
    sbw_bc_line_t   line;
    sbw_sync_op_t  *ops;
    sbw_bc_class_e  cls;

    ops = calloc(SBW_SYNC_MAX_OPS, sizeof(*ops));
    if (ops == NULL) {
        snprintf(r->res.error_code, sizeof(r->res.error_code),
                 "Worker_NoMemory");
        sbw_sync_bc_retry(r, "update");
        return;
    }

    current = json_incref(bc_order);
    done = 0;
    nops = 0;

    for (pass = 0; ; pass++) {
        rc = sbw_sync_plan(json_object_get(current, "salesOrderLines"), o,
                           s->conf->rounding_account, ops, SBW_SYNC_MAX_OPS,
                           &nops);

        if (rc != 0) {
            free(ops);
            json_decref(current);

            if (rc == SBW_PLAN_NO_SEQUENCE) {
                sbw_sync_review(s, order_id, r, SBW_SYNC_ERR_CONFLICT,
                                "order_conflict", "%s: the BC order has no "
                                "line number (sequence) left for the lines "
                                "the edit adds", topic);
            } else {
                sbw_sync_review(s, order_id, r, SBW_SYNC_ERR_CONFLICT,
                                "order_conflict", "%s: the BC order's lines "
                                "cannot be matched with the edited order",
                                topic);
            }

            return;
        }

        again = 0;

        for (i = 0; i < nops; i++) {
            body = NULL;

            if (ops[i].op == SBW_OP_POST) {
                snprintf(path, sizeof(path),
                         "/salesOrders(%s)/salesOrderLines", bc_id);
                line = o->lines[ops[i].line];
                line.sequence = ops[i].sequence;
                body = sbw_order_line_payload(&line, 0);

            } else {
                snprintf(path, sizeof(path), "/salesOrders(%s)/"
                         "salesOrderLines(%s)", bc_id, ops[i].bc_line_id);

                if (ops[i].op == SBW_OP_PATCH) {
                    body = sbw_order_line_payload(&o->lines[ops[i].line],
                                                  1);
                }
            }

            if (ops[i].op != SBW_OP_DELETE && body == NULL) {
                free(ops);
                json_decref(current);
                snprintf(r->res.error_code, sizeof(r->res.error_code),
                         "Worker_NoMemory");
                sbw_sync_bc_retry(r, "update");
                return;
            }

            cls = sbw_bc_request(s->bc, "order_line",
                                 ops[i].op == SBW_OP_POST ? "POST"
                                 : ops[i].op == SBW_OP_PATCH ? "PATCH"
                                 : "DELETE",
                                 path, body, ops[i].etag, &r->res);
            free(body);

            if (ops[i].op == SBW_OP_POST && sbw_sync_same_key(&r->res, cls)
                && pass + 1 < SBW_SYNC_PLAN_PASSES)
            {
                /* the line is there already: read, plan again */
                sbw_bc_result_clear(&r->res);
                again = 1;
                break;
            }

            if (!sbw_sync_line_answer(s, order_id, cls, topic, r)) {
                free(ops);
                json_decref(current);
                return;
            }

            done++;
        }

        if (!again) {
            break;
        }

        /* the ops already made are in the plan of the order read next */
        if (!sbw_sync_reread(s, bc_id, r, &fresh)) {
            free(ops);
            json_decref(current);
            return;
        }

        json_decref(current);
        current = fresh;
    }

    free(ops);

    if (sbw_sync_put(s, order_id, o, o->updated_at, topic, "pending",
                     "open") != 0)
    {
        json_decref(current);
        r->action = SBW_SYNC_PGFAIL;
        return;
    }

    /* nothing changed since the last read: it holds BC's current total */
    sbw_sync_reconcile(s, order_id, bc_id, o, nops == 0 ? current : NULL,
                       r);
    json_decref(current);

    if (r->action == SBW_SYNC_ACK) {
        sbw_metrics_order_sync("updated");
        r->event = "order_updated";

        if (r->extra != NULL) {
            json_object_set_new(r->extra, "line_changes",
                                json_integer((json_int_t) done));
            json_object_set_new(r->extra, "updated_at",
                                json_string(o->updated_at));
        }
    }
}


/*
 * orders/cancelled on an open BC order: delete it (If-Match: its ETag).
 * An order already gone counts as deleted.
 */
static void
sbw_sync_cancel(sbw_sync_t *s, int64_t order_id, const sbw_bc_order_t *o,
    const char *bc_id, json_t *bc_order, const char *topic,
    sbw_sync_result_t *r)
{
    char            path[160];
    const char     *number;
    sbw_bc_class_e  cls;

    snprintf(path, sizeof(path), "/salesOrders(%s)", bc_id);
    number = json_string_value(json_object_get(bc_order, "number"));

    cls = sbw_bc_request(s->bc, "order_delete", "DELETE", path, NULL,
                         json_string_value(json_object_get(bc_order,
                                                           "@odata.etag")),
                         &r->res);

    if (!sbw_sync_line_answer(s, order_id, cls, topic, r)) {
        return;
    }

    if (sbw_sync_set_state(s, order_id, "cancelled", "", "", o->updated_at,
                           topic) != 0)
    {
        r->action = SBW_SYNC_PGFAIL;
        return;
    }

    sbw_metrics_order_sync("cancelled");
    r->action = SBW_SYNC_ACK;
    r->event = "order_cancelled";
    r->extra = json_pack("{s:s?,s:s,s:s}", "bc_number", number,
                         "company", s->company, "message",
                         "the open BC order was deleted");
}


/*
 * orders/cancelled for an order BC never got: nothing is created, the
 * ledger records why (so a create delivered later is a duplicate), the
 * sync row remembers the cancellation.
 */
void
sbw_sync_cancel_before_create(sbw_sync_t *s, int64_t order_id,
    const sbw_bc_order_t *o, sbw_sync_result_t *r)
{
    if (sbw_sync_put(s, order_id, o, o->updated_at,
                     SBW_TOPIC_ORDERS_CANCELLED, "unchecked", "cancelled") != 0
        || sbw_ledger_failed(s->ledger, order_id, SBW_SYNC_ERR_CANCELLED,
                             "cancelled in Shopify before it reached BC; "
                             "no BC order is made") != 0)
    {
        r->action = SBW_SYNC_PGFAIL;
        return;
    }

    sbw_metrics_order_sync("cancelled");
    r->action = SBW_SYNC_ACK;
    r->event = "order_cancelled";
    r->extra = json_pack("{s:s}", "message", "cancelled before it reached "
                         "BC: nothing to create");
}


/*
 * Set a text field of a customer body, cut to BC's length in characters
 * (UTF-16 units), when the value is a non-empty string.
 */
static void
sbw_customer_field(json_t *body, const char *name, const char *value,
    size_t maxlen)
{
    char  *cut;

    if (value == NULL || value[0] == '\0') {
        return;
    }

    cut = sbw_utf8_truncate(value, maxlen);

    if (cut != NULL) {
        json_object_set_new(body, name, json_string(cut));
        free(cut);
    }
}


/*
 * The body of POST customers for a Shopify order's buyer: the name
 * (company, else first and last name, else the e-mail), e-mail, phone
 * (left out when it has letters: BC refuses them) and the customer's
 * default address, else the billing, else the shipping address.
 */
static char *
sbw_customer_body(const json_t *order, const char *email)
{
    char          *text, name[512], cc[16];
    size_t         i;
    json_t        *body;
    const char    *first, *last, *company, *phone;
    const json_t  *cu, *addr;

    cu = json_object_get(order, "customer");
    addr = json_object_get(cu, "default_address");

    if (!json_is_object(addr)) {
        addr = json_object_get(order, "billing_address");
    }

    if (!json_is_object(addr)) {
        addr = json_object_get(order, "shipping_address");
    }

    first = json_string_value(json_object_get(cu, "first_name"));
    last = json_string_value(json_object_get(cu, "last_name"));
    company = json_string_value(json_object_get(addr, "company"));

    if (company != NULL && company[0] != '\0') {
        snprintf(name, sizeof(name), "%s", company);

    } else if ((first && first[0]) || (last && last[0])) {
        snprintf(name, sizeof(name), "%s%s%s", first ? first : "",
                 first && first[0] && last && last[0] ? " " : "",
                 last ? last : "");

    } else {
        snprintf(name, sizeof(name), "%s", email);
    }

    body = json_object();
    if (body == NULL) {
        return NULL;
    }

    sbw_customer_field(body, "displayName", name, 100);
    json_object_set_new(body, "type", json_string(company && company[0]
                                                  ? "Company" : "Person"));
    sbw_customer_field(body, "email", email, 80);

    phone = json_string_value(json_object_get(cu, "phone"));
    if (phone == NULL || phone[0] == '\0') {
        phone = json_string_value(json_object_get(addr, "phone"));
    }

    for (i = 0; phone != NULL && phone[i] != '\0'; i++) {
        if (isalpha((unsigned char) phone[i])) {
            phone = NULL;
            break;
        }
    }

    sbw_customer_field(body, "phoneNumber", phone, 30);

    if (json_is_object(addr)) {
        sbw_customer_field(body, "addressLine1", json_string_value(
                           json_object_get(addr, "address1")), 100);
        sbw_customer_field(body, "addressLine2", json_string_value(
                           json_object_get(addr, "address2")), 50);
        sbw_customer_field(body, "city", json_string_value(
                           json_object_get(addr, "city")), 30);
        sbw_customer_field(body, "state", json_string_value(
                           json_object_get(addr, "province_code")), 30);
        sbw_customer_field(body, "postalCode", json_string_value(
                           json_object_get(addr, "zip")), 20);

        if (sbw_ascii_lower(json_string_value(json_object_get(addr,
                            "country_code")) ? json_string_value(
                            json_object_get(addr, "country_code")) : "",
                            cc, sizeof(cc)) == 0 && cc[0] != '\0')
        {
            for (i = 0; cc[i] != '\0'; i++) {
                cc[i] = (char) toupper((unsigned char) cc[i]);
            }

            sbw_customer_field(body, "country", cc, 10);
        }
    }

    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);

    return text;
}


/*
 * BC365_CUSTOMER_STRATEGY=create, BC has no customer with the order's
 * e-mail: create one.  Creation is serialised per company and address
 * by an advisory lock, and BC is asked again under it, so two orders of
 * a new buyer processed at once make one customer.  A POST whose outcome
 * is lost is retried by the caller, whose next look-up finds the
 * customer if BC made it.  Returns 1 with the number, 0 when BC refused
 * the customer for good (res says why; the order keeps the default
 * customer), -1 for a retry.
 */
int
sbw_sync_customer_create(sbw_sync_t *s, const json_t *order,
    const char *email, char *number, size_t numlen, sbw_bc_result_t *res)
{
    int             found;
    char            key[SBW_CUSTOMER_KEY_BUFLEN + 16], lower[SBW_EMAIL_BUFLEN];
    char           *body;
    const char     *params[1], *n;
    sbw_bc_class_e  cls;

    if (sbw_ascii_lower(email, lower, sizeof(lower)) != 0) {
        return 0;
    }

    snprintf(key, sizeof(key), "bc_customer/%s/%s", s->company, lower);
    params[0] = key;

    if (sbw_sync_exec(s->ledger, "SELECT pg_advisory_lock("
                      "hashtextextended($1, 0))", 1, params, NULL) != 0)
    {
        snprintf(res->error_code, sizeof(res->error_code),
                 "Worker_Postgres");
        snprintf(res->error_message, sizeof(res->error_message), "%s",
                 s->ledger->errstr);
        return -1;
    }

    found = sbw_bc_find_customer(s->bc, email, number, numlen, res);

    if (found != 0) {
        goto done;
    }

    body = sbw_customer_body(order, email);

    if (body == NULL) {
        found = -1;
        goto done;
    }

    cls = sbw_bc_request(s->bc, "customer_create", "POST", "/customers",
                         body, NULL, res);
    free(body);

    if (cls == SBW_BC_OK) {
        n = json_string_value(json_object_get(res->body, "number"));

        if (n != NULL && n[0] != '\0' && strlen(n) < numlen) {
            snprintf(number, numlen, "%s", n);
            found = 1;

        } else {
            found = -1;
        }

    } else {
        found = cls == SBW_BC_PERMANENT ? 0 : -1;
    }

done:

    sbw_sync_exec(s->ledger, "SELECT pg_advisory_unlock("
                  "hashtextextended($1, 0))", 1, params, NULL);

    return found;
}
