/*
 * The operator's verbs: dead letters, the ledger, and a dry run.
 *
 *   shopify-bc-worker dlq list|show|retry|discard ...
 *   shopify-bc-worker ledger list|show|duplicates ...
 *   shopify-bc-worker dry-run FILE [--shop S] | --dlq ID
 *
 * They read the worker's settings from the same environment.  Output is
 * a table (or key: value lines) for people, one JSON document with
 * --json.  Exit statuses: cli_args.h.
 *
 * A retry puts the entry back in the stream (XADD with the original
 * fields and a dead_letter_id field) for the running worker, rather than
 * posting it from here: the worker's rate limiter, locks, logs and
 * metrics then apply to replays as to every order, and a retry of many
 * dead letters returns at once.  Before the XADD, in one transaction
 * with it, a failed ledger row is reopened with in_doubt set, so the
 * worker looks the order up in BC before it posts: a replay of an order
 * BC already has (created by hand, or by a late request) is recorded,
 * not created twice.  The externalDocumentNumber is the one stored in
 * the ledger, and an edited payload must keep the order id.
 */

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>

#include "bc.h"
#include "cli.h"
#include "cli_args.h"
#include "config.h"
#include "customer.h"
#include "dlq.h"
#include "dupcheck.h"
#include "ledger.h"
#include "log.h"
#include "order_map.h"
#include "stream.h"
#include "sync_map.h"
#include "text.h"


#define SBW_CLI_PAYLOAD_MAX  (16 * 1024 * 1024)


typedef struct {
    sbw_cli_args_t   *args;
    sbw_config_t     *conf;
    PGconn           *pg;
    sbw_stream_t      stream;
    const char       *by;
    json_t           *results;       /* --json output of retry/discard */
} sbw_cli_t;


static volatile sig_atomic_t  sbw_cli_stop;


static int sbw_cli_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static json_t *sbw_cli_query(sbw_cli_t *c, const char *sql, int n,
    const char *const *params);
static void sbw_cli_print_json(const json_t *j);
static const char *sbw_cli_str(const json_t *o, const char *key);
static void sbw_cli_cell(const char *s, int width);
static char *sbw_cli_read_file(const char *path, size_t *len);
static char *sbw_cli_decode_payload(const char *text, const char *encoding,
    size_t *len);
static void sbw_cli_map_conf(const sbw_config_t *conf, sbw_map_conf_t *mc);
static int sbw_cli_dlq_list(sbw_cli_t *c);
static int sbw_cli_dlq_show(sbw_cli_t *c);
static int sbw_cli_dlq_retry(sbw_cli_t *c);
static int sbw_cli_retry_one(sbw_cli_t *c, long long id, const char *edited,
    size_t edited_len);
static int sbw_cli_dlq_discard(sbw_cli_t *c);
static int sbw_cli_ledger_list(sbw_cli_t *c);
static int sbw_cli_ledger_show(sbw_cli_t *c);
static int sbw_cli_ledger_duplicates(sbw_cli_t *c);
static int sbw_cli_dry_run(sbw_cli_t *c);
static int sbw_cli_worst(int a, int b);
static void sbw_cli_result(sbw_cli_t *c, long long id, const char *result,
    const char *stream_id, const char *message);


static int
sbw_cli_fail(int code, const char *fmt, ...)
{
    va_list  ap;

    fputs("shopify-bc-worker: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);

    return code;
}


/*
 * Several ids at once: the most serious outcome decides the status
 * (failed, then refused, then not found).
 */
static int
sbw_cli_worst(int a, int b)
{
    static const int  rank[] = { 0, 4, 0, 2, 3, 1 };

    if (a < 0 || a > 5) {
        return a;
    }

    if (b < 0 || b > 5) {
        return b;
    }

    return rank[b] > rank[a] ? b : a;
}


/*
 * Run a query whose single row and column is a JSON text, and parse it.
 * NULL on failure (reported).
 */
static json_t *
sbw_cli_query(sbw_cli_t *c, const char *sql, int n,
    const char *const *params)
{
    json_t        *j;
    PGresult      *res;
    json_error_t   jerr;

    res = PQexecParams(c->pg, sql, n, NULL, params, NULL, NULL, 0);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        sbw_cli_fail(SBW_CLI_FAILED, "PostgreSQL: %s",
                     res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg));
        PQclear(res);
        return NULL;
    }

    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return json_null();
    }

    j = json_loads(PQgetvalue(res, 0, 0), JSON_DECODE_ANY, &jerr);
    PQclear(res);

    if (j == NULL) {
        sbw_cli_fail(SBW_CLI_FAILED, "unreadable answer: %s", jerr.text);
    }

    return j;
}


static void
sbw_cli_print_json(const json_t *j)
{
    char  *s;

    s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);

    if (s != NULL) {
        puts(s);
        free(s);
    }
}


/*
 * A field as text for a table: strings as they are, numbers and
 * booleans printed, null as "".
 */
static const char *
sbw_cli_str(const json_t *o, const char *key)
{
    static char    buf[4][64];
    static int     slot;
    const json_t  *v;
    char          *b;

    v = json_object_get(o, key);
    b = buf[slot++ % 4];

    if (json_is_string(v)) {
        return json_string_value(v);
    }

    if (json_is_integer(v)) {
        snprintf(b, 64, "%lld", (long long) json_integer_value(v));
        return b;
    }

    if (json_is_boolean(v)) {
        return json_is_true(v) ? "yes" : "no";
    }

    return "";
}


/*
 * One table cell: cut to width characters ("~" marking a cut, never in
 * the middle of a character), padded with spaces; width 0 prints the
 * text uncut.
 */
static void
sbw_cli_cell(const char *s, int width)
{
    int     chars;
    size_t  cut;

    if (width == 0) {
        fputs(s, stdout);
        return;
    }

    chars = (int) sbw_utf8_length(s);

    if (chars > width) {
        cut = sbw_utf8_prefix(s, (size_t) width - 1);
        fwrite(s, 1, cut, stdout);
        fputc('~', stdout);
        chars = width;

    } else {
        fputs(s, stdout);
    }

    for ( ; chars < width + 1; chars++) {
        fputc(' ', stdout);
    }
}


/*
 * A whole file (at most 16 MB), NUL-terminated.
 */
static char *
sbw_cli_read_file(const char *path, size_t *len)
{
    FILE    *f;
    char    *buf;
    size_t   n;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    buf = malloc(SBW_CLI_PAYLOAD_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }

    n = fread(buf, 1, SBW_CLI_PAYLOAD_MAX + 1, f);
    fclose(f);

    if (n > SBW_CLI_PAYLOAD_MAX) {
        free(buf);
        return NULL;
    }

    buf[n] = '\0';
    *len = n;

    return buf;
}


/*
 * The stored payload as bytes (base64 decoded when it had to be).
 */
static char *
sbw_cli_decode_payload(const char *text, const char *encoding, size_t *len)
{
    int     n;
    char   *out;
    size_t  tl;

    tl = strlen(text);

    if (strcmp(encoding, "base64") != 0) {
        out = strdup(text);
        *len = tl;
        return out;
    }

    out = malloc(tl / 4 * 3 + 4);
    if (out == NULL) {
        return NULL;
    }

    n = EVP_DecodeBlock((unsigned char *) out, (const unsigned char *) text,
                        (int) tl);
    if (n < 0) {
        free(out);
        return NULL;
    }

    /* EVP_DecodeBlock counts the padding as zero bytes */
    if (tl >= 1 && text[tl - 1] == '=') {
        n--;
    }

    if (tl >= 2 && text[tl - 2] == '=') {
        n--;
    }

    out[n] = '\0';
    *len = (size_t) n;

    return out;
}


static void
sbw_cli_map_conf(const sbw_config_t *conf, sbw_map_conf_t *mc)
{
    memset(mc, 0, sizeof(*mc));
    mc->sku_map = conf->sku_map;
    mc->variant_map = conf->variant_map;
    mc->customer_number = conf->default_customer;
    mc->shipping_account = conf->shipping_account;
    mc->tip_account = conf->tip_account;
    mc->gift_card_account = conf->gift_card_account;
    mc->custom_line_account = conf->custom_line_account;
}


/* --- dlq list / show ------------------------------------------------ */


static int
sbw_cli_dlq_list(sbw_cli_t *c)
{
    char           limit[32];
    size_t         i;
    json_t        *rows, *r;
    const char    *params[4];

    snprintf(limit, sizeof(limit), "%ld", c->args->limit);
    params[0] = c->args->status;
    params[1] = c->args->shop;
    params[2] = c->args->reason;
    params[3] = limit;

    rows = sbw_cli_query(c,
        "SELECT coalesce(json_agg(t ORDER BY t.id), '[]') FROM ("
        " SELECT id, status, reason, shop, shopify_order_id::text"
        "  AS order_id, webhook_id, topic, stream_id, error_code,"
        "  error_message, correlation_id, attempts,"
        "  to_char(created_at AT TIME ZONE 'UTC',"
        "          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at,"
        "  to_char(updated_at AT TIME ZONE 'UTC',"
        "          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS updated_at"
        " FROM dead_letters"
        " WHERE ($1 = 'all' OR status = $1)"
        " AND ($2::text IS NULL OR lower(shop) = lower($2))"
        " AND ($3::text IS NULL OR reason = $3)"
        " ORDER BY id DESC LIMIT $4::bigint) t",
        4, params);

    if (rows == NULL) {
        return SBW_CLI_FAILED;
    }

    if (c->args->json) {
        sbw_cli_print_json(rows);
        json_decref(rows);
        return SBW_CLI_OK;
    }

    if (json_array_size(rows) == 0) {
        printf("no %s dead letters\n",
               strcmp(c->args->status, "all") == 0 ? "" : c->args->status);
        json_decref(rows);
        return SBW_CLI_OK;
    }

    sbw_cli_cell("ID", 6);
    sbw_cli_cell("STATUS", 9);
    sbw_cli_cell("REASON", 18);
    sbw_cli_cell("ORDER", 15);
    sbw_cli_cell("SHOP", 26);
    sbw_cli_cell("CODE", 28);
    sbw_cli_cell("CREATED", 20);
    sbw_cli_cell("MESSAGE", 0);
    putchar('\n');

    json_array_foreach(rows, i, r) {
        sbw_cli_cell(sbw_cli_str(r, "id"), 6);
        sbw_cli_cell(sbw_cli_str(r, "status"), 9);
        sbw_cli_cell(sbw_cli_str(r, "reason"), 18);
        sbw_cli_cell(sbw_cli_str(r, "order_id"), 15);
        sbw_cli_cell(sbw_cli_str(r, "shop"), 26);
        sbw_cli_cell(sbw_cli_str(r, "error_code"), 28);
        sbw_cli_cell(sbw_cli_str(r, "created_at"), 20);
        sbw_cli_cell(sbw_cli_str(r, "error_message"), 60);
        putchar('\n');
    }

    json_decref(rows);
    return SBW_CLI_OK;
}


static int
sbw_cli_dlq_show(sbw_cli_t *c)
{
    char         id[32], *payload, *dump;
    size_t       i, len;
    json_t      *row, *h, *body;
    const char  *params[1], *enc, *keys[] = {
        "id", "status", "reason", "shop", "order_id", "webhook_id",
        "topic", "stream_id", "error_code", "error_message",
        "correlation_id", "attempts", "api_version", "triggered_at",
        "event_id", "received_at", "created_at", "updated_at", NULL
    };

    snprintf(id, sizeof(id), "%lld", c->args->ids[0]);
    params[0] = id;

    row = sbw_cli_query(c,
        "SELECT row_to_json(t) FROM ("
        " SELECT id, status, reason, shop, shopify_order_id::text"
        "  AS order_id, webhook_id, topic, stream_id, error_code,"
        "  error_message, correlation_id, attempts, api_version,"
        "  triggered_at, event_id, received_at, created_at, updated_at,"
        "  payload, payload_encoding, history"
        " FROM dead_letters WHERE id = $1::bigint) t",
        1, params);

    if (row == NULL) {
        return SBW_CLI_FAILED;
    }

    if (json_is_null(row)) {
        json_decref(row);
        return sbw_cli_fail(SBW_CLI_NOT_FOUND, "no dead letter %s", id);
    }

    if (c->args->json) {
        sbw_cli_print_json(row);
        json_decref(row);
        return SBW_CLI_OK;
    }

    for (i = 0; keys[i] != NULL; i++) {
        printf("%-16s %s\n", keys[i], sbw_cli_str(row, keys[i]));
    }

    printf("history\n");

    json_array_foreach(json_object_get(row, "history"), i, h) {
        dump = json_dumps(h, JSON_COMPACT);
        printf("  %s\n", dump ? dump : "");
        free(dump);
    }

    enc = sbw_cli_str(row, "payload_encoding");

    if (json_is_string(json_object_get(row, "payload"))) {
        payload = sbw_cli_decode_payload(sbw_cli_str(row, "payload"), enc,
                                         &len);
        body = payload ? json_loadb(payload, len, JSON_ALLOW_NUL, NULL)
                       : NULL;

        printf("payload (%zu bytes%s)\n", len,
               strcmp(enc, "base64") == 0 ? ", not text: stored as base64"
                                          : "");

        if (body != NULL) {
            dump = json_dumps(body, JSON_INDENT(2));
            printf("%s\n", dump ? dump : "");
            free(dump);
            json_decref(body);

        } else {
            printf("%s\n", sbw_cli_str(row, "payload"));
        }

        free(payload);

    } else {
        printf("payload          (none)\n");
    }

    json_decref(row);
    return SBW_CLI_OK;
}


/* --- dlq retry / discard -------------------------------------------- */


static void
sbw_cli_result(sbw_cli_t *c, long long id, const char *result,
    const char *stream_id, const char *message)
{
    if (c->results != NULL) {
        json_array_append_new(c->results,
                              json_pack("{s:I,s:s,s:s?,s:s}",
                                        "id", (json_int_t) id,
                                        "result", result,
                                        "stream_id", stream_id,
                                        "message", message));
        return;
    }

    printf("dead letter %lld: %s\n", id, message);
}


static int
sbw_cli_dlq_retry(sbw_cli_t *c)
{
    int           rc, one, rows, i;
    char         *edited, limit[8];
    size_t        n, len;
    json_t       *ids;
    PGresult     *res;
    const char   *params[3];

    edited = NULL;
    len = 0;

    if (c->args->payload_file != NULL) {
        edited = sbw_cli_read_file(c->args->payload_file, &len);

        if (edited == NULL) {
            return sbw_cli_fail(SBW_CLI_USAGE, "cannot read %s (or it is "
                                "larger than 16 MB)", c->args->payload_file);
        }
    }

    if (c->args->json) {
        c->results = json_array();
    }

    rc = SBW_CLI_OK;

    if (!c->args->all) {
        for (n = 0; n < c->args->nids; n++) {
            one = sbw_cli_retry_one(c, c->args->ids[n], edited, len);
            rc = sbw_cli_worst(rc, one);
        }

    } else {
        snprintf(limit, sizeof(limit), "%d", 100000);
        params[0] = c->args->shop;
        params[1] = c->args->reason;
        params[2] = limit;

        res = PQexecParams(c->pg,
            "SELECT id FROM dead_letters WHERE status = 'open'"
            " AND reason <> 'duplicate_bc_order'"
            " AND ($1::text IS NULL OR lower(shop) = lower($1))"
            " AND ($2::text IS NULL OR reason = $2)"
            " ORDER BY id LIMIT $3::bigint",
            3, NULL, params, NULL, NULL, 0);

        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
            sbw_cli_fail(SBW_CLI_FAILED, "PostgreSQL: %s",
                         PQerrorMessage(c->pg));
            PQclear(res);
            free(edited);
            json_decref(c->results);
            return SBW_CLI_FAILED;
        }

        rows = PQntuples(res);
        ids = json_array();

        for (i = 0; i < rows; i++) {
            json_array_append_new(ids, json_integer(
                strtoll(PQgetvalue(res, i, 0), NULL, 10)));
        }

        PQclear(res);

        if (rows == 0 && c->results == NULL) {
            printf("no open dead letters to retry\n");
        }

        for (n = 0; n < json_array_size(ids); n++) {
            one = sbw_cli_retry_one(c, (long long) json_integer_value(
                                        json_array_get(ids, n)), NULL, 0);
            rc = sbw_cli_worst(rc, one);
        }

        json_decref(ids);
    }

    if (c->results != NULL) {
        sbw_cli_print_json(c->results);
        json_decref(c->results);
        c->results = NULL;
    }

    free(edited);
    return rc;
}


/*
 * Retry one dead letter (see the top of this file).  edited: a new
 * payload, validated as a JSON order with the same order id that the
 * mapping accepts.
 */
static int
sbw_cli_retry_one(sbw_cli_t *c, long long id, const char *edited,
    size_t edited_len)
{
    int              rc, map_rc;
    char             ids[32], oid_s[32], msg[1400], map_err[1024];
    char             new_id[64], *stored;
    size_t           stored_len;
    json_t          *order;
    int64_t          order_id, edited_id;
    PGresult        *res;
    const char      *params[5], *status, *reason, *bc_number;
    json_error_t     jerr;
    sbw_entry_t      e;
    sbw_bc_order_t   o;
    sbw_map_conf_t   mc;

    snprintf(ids, sizeof(ids), "%lld", id);
    memset(&e, 0, sizeof(e));
    stored = NULL;

    if (sbw_dlq_exec(c->pg, "BEGIN", msg, sizeof(msg)) != 0) {
        sbw_cli_result(c, id, "failed", NULL, msg);
        return SBW_CLI_FAILED;
    }

    params[0] = ids;
    res = PQexecParams(c->pg,
        "SELECT status, reason, coalesce(shopify_order_id, 0),"
        " coalesce(topic, 'orders/create'), shop, webhook_id, api_version,"
        " triggered_at, event_id, received_at, payload,"
        " payload_encoding"
        " FROM dead_letters WHERE id = $1::bigint FOR UPDATE",
        1, NULL, params, NULL, NULL, 0);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(msg, sizeof(msg), "PostgreSQL: %s", PQerrorMessage(c->pg));
        rc = SBW_CLI_FAILED;
        goto refused;
    }

    if (PQntuples(res) == 0) {
        snprintf(msg, sizeof(msg), "no such dead letter");
        rc = SBW_CLI_NOT_FOUND;
        goto refused;
    }

    status = PQgetvalue(res, 0, 0);
    reason = PQgetvalue(res, 0, 1);
    order_id = strtoll(PQgetvalue(res, 0, 2), NULL, 10);

    if (strcmp(status, "open") != 0) {
        snprintf(msg, sizeof(msg), "it is %s; only open dead letters are "
                 "retried", status);
        rc = SBW_CLI_REFUSED;
        goto refused;
    }

    if (strcmp(reason, "duplicate_bc_order") == 0) {
        snprintf(msg, sizeof(msg), "a duplicate BC order report has "
                 "nothing to replay; remove the copy in BC, then discard "
                 "it");
        rc = SBW_CLI_REFUSED;
        goto refused;
    }

    /* the entry as it was, with the payload stored or given */
    e.topic = strdup(PQgetvalue(res, 0, 3));
    e.shop = PQgetisnull(res, 0, 4) ? NULL : strdup(PQgetvalue(res, 0, 4));

#define SBW_CLI_FIELD(f, col)                                                \
    e.f = PQgetisnull(res, 0, col) ? NULL : strdup(PQgetvalue(res, 0, col))

    SBW_CLI_FIELD(webhook_id, 5);
    SBW_CLI_FIELD(api_version, 6);
    SBW_CLI_FIELD(triggered_at, 7);
    SBW_CLI_FIELD(event_id, 8);
    SBW_CLI_FIELD(received_at, 9);

#undef SBW_CLI_FIELD

    if (edited != NULL) {
        order = sbw_order_parse(edited, edited_len, &jerr);

        if (order == NULL) {
            snprintf(msg, sizeof(msg), "the edited payload is not JSON: %s "
                     "(line %d, column %d)", jerr.text, jerr.line,
                     jerr.column);
            rc = SBW_CLI_REFUSED;
            goto refused;
        }

        if (sbw_order_id(order, &edited_id) != 0
            || (order_id > 0 && edited_id != order_id))
        {
            json_decref(order);
            snprintf(msg, sizeof(msg), "the edited payload must keep the "
                     "order id %lld (its externalDocumentNumber is "
                     SBW_EXTDOC_PREFIX "%lld)", (long long) order_id,
                     (long long) order_id);
            rc = SBW_CLI_REFUSED;
            goto refused;
        }

        sbw_cli_map_conf(c->conf, &mc);
        map_rc = sbw_order_map(&mc, order, &o, map_err, sizeof(map_err));
        json_decref(order);

        if (map_rc != SBW_MAP_OK) {
            snprintf(msg, sizeof(msg), "the edited payload is refused: %s",
                     map_rc == SBW_MAP_NOMEM ? "out of memory" : map_err);
            rc = SBW_CLI_REFUSED;
            goto refused;
        }

        sbw_order_free(&o);
        order_id = edited_id;
        e.body = strdup(edited);
        e.body_len = edited_len;

    } else if (!PQgetisnull(res, 0, 10)) {
        stored = sbw_cli_decode_payload(PQgetvalue(res, 0, 10),
                                        PQgetvalue(res, 0, 11), &stored_len);
        e.body = stored;
        e.body_len = stored != NULL ? stored_len : 0;
        stored = NULL;
    }

    PQclear(res);
    res = NULL;

    /* the ledger: an order BC already has is not sent again */
    snprintf(oid_s, sizeof(oid_s), "%lld", (long long) order_id);

    if (order_id > 0) {
        params[0] = oid_s;
        res = PQexecParams(c->pg,
            "SELECT state, coalesce(bc_number, '') FROM bc_order_ledger"
            " WHERE shopify_order_id = $1::bigint FOR UPDATE",
            1, NULL, params, NULL, NULL, 0);

        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
            snprintf(msg, sizeof(msg), "PostgreSQL: %s",
                     PQerrorMessage(c->pg));
            rc = SBW_CLI_FAILED;
            goto refused;
        }

        if (PQntuples(res) == 1
            && strcmp(PQgetvalue(res, 0, 0), "created") == 0)
        {
            bc_number = PQgetvalue(res, 0, 1);
            params[0] = ids;
            params[1] = bc_number;
            params[2] = c->by;

            PQclear(PQexecParams(c->pg,
                "UPDATE dead_letters SET status = 'resolved',"
                " updated_at = now(), history = history ||"
                " jsonb_build_array(jsonb_build_object('at', now(),"
                "  'action', 'resolved', 'by', $3::text, 'bc_number', $2::text,"
                "  'note', 'already in BC: not sent again'))"
                " WHERE id = $1::bigint",
                3, NULL, params, NULL, NULL, 0));

            snprintf(msg, sizeof(msg), "order %s is already in BC as %s: "
                     "not sent again, resolved", oid_s, bc_number);
            PQclear(res);
            res = NULL;

            if (sbw_dlq_exec(c->pg, "COMMIT", map_err, sizeof(map_err))
                != 0)
            {
                snprintf(msg, sizeof(msg), "PostgreSQL: %s", map_err);
                rc = SBW_CLI_FAILED;
                goto refused;
            }

            sbw_cli_result(c, id, "resolved", NULL, msg);
            sbw_entry_clear(&e);
            return SBW_CLI_OK;
        }

        /*
         * failed: open again, and look in BC first (in_doubt); no
         * attempt is in flight, so no wait before that look-up
         */
        PQclear(res);
        res = PQexecParams(c->pg,
            "UPDATE bc_order_ledger SET state = 'new', in_doubt = true,"
            " error_code = NULL, error_message = NULL,"
            " last_attempt_at = NULL, next_attempt_at = NULL,"
            " completed_at = NULL"
            " WHERE shopify_order_id = $1::bigint AND state = 'failed'",
            1, NULL, params, NULL, NULL, 0);

        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            snprintf(msg, sizeof(msg), "PostgreSQL: %s",
                     PQerrorMessage(c->pg));
            rc = SBW_CLI_FAILED;
            goto refused;
        }

        PQclear(res);
        res = NULL;
    }

    /* the entry goes back in the stream for the worker */
    if (c->stream.ctx == NULL
        && sbw_stream_connect(&c->stream) != SBW_STREAM_OK)
    {
        snprintf(msg, sizeof(msg), "Redis: %s", c->stream.errstr);
        rc = SBW_CLI_FAILED;
        goto refused;
    }

    if (sbw_stream_replay(&c->stream, &e, ids, new_id, sizeof(new_id))
        != SBW_STREAM_OK)
    {
        snprintf(msg, sizeof(msg), "Redis: %s", c->stream.errstr);
        sbw_stream_close(&c->stream);
        rc = SBW_CLI_FAILED;
        goto refused;
    }

    params[0] = ids;
    params[1] = new_id;
    params[2] = c->by;
    params[3] = edited != NULL ? "true" : "false";
    params[4] = c->args->note;

    res = PQexecParams(c->pg,
        "UPDATE dead_letters SET status = 'retried', updated_at = now(),"
        " history = history || jsonb_build_array(jsonb_strip_nulls("
        "  jsonb_build_object('at', now(), 'action', 'retry', 'by', $3::text,"
        "  'stream_id', $2::text, 'payload_edited', $4::boolean,"
        "  'note', $5::text)))"
        " WHERE id = $1::bigint",
        5, NULL, params, NULL, NULL, 0);

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK
        || sbw_dlq_exec(c->pg, "COMMIT", msg, sizeof(msg)) != 0)
    {
        /*
         * the entry is in the stream, but the ledger row stayed failed:
         * the worker acknowledges it as a duplicate of a failed order
         */
        snprintf(msg, sizeof(msg), "PostgreSQL: %s; the entry %s added to "
                 "the stream will be acknowledged without effect",
                 PQerrorMessage(c->pg), new_id);
        rc = SBW_CLI_FAILED;
        goto refused;
    }

    PQclear(res);

    if (order_id > 0) {
        snprintf(msg, sizeof(msg), "replayed as stream entry %s (order %s, "
                 "externalDocumentNumber " SBW_EXTDOC_PREFIX "%s%s)",
                 new_id, oid_s, oid_s, edited ? ", edited payload" : "");

    } else {
        snprintf(msg, sizeof(msg), "replayed as stream entry %s", new_id);
    }

    sbw_cli_result(c, id, "replayed", new_id, msg);
    sbw_entry_clear(&e);

    return SBW_CLI_OK;

refused:

    PQclear(res);
    PQclear(PQexec(c->pg, "ROLLBACK"));
    free(stored);
    sbw_entry_clear(&e);
    sbw_cli_result(c, id, rc == SBW_CLI_FAILED ? "failed"
                          : rc == SBW_CLI_NOT_FOUND ? "not_found"
                          : "refused", NULL, msg);

    return rc;
}


static int
sbw_cli_dlq_discard(sbw_cli_t *c)
{
    int          rc, one;
    char         id[32], msg[256];
    size_t       n;
    PGresult    *res;
    const char  *params[3];

    if (c->args->json) {
        c->results = json_array();
    }

    rc = SBW_CLI_OK;

    for (n = 0; n < c->args->nids; n++) {
        snprintf(id, sizeof(id), "%lld", c->args->ids[n]);
        params[0] = id;
        params[1] = c->by;
        params[2] = c->args->note;

        res = PQexecParams(c->pg,
            "WITH d AS (SELECT id, status FROM dead_letters"
            "  WHERE id = $1::bigint),"
            " u AS (UPDATE dead_letters SET status = 'discarded',"
            "  updated_at = now(), history = history || jsonb_build_array("
            "  jsonb_strip_nulls(jsonb_build_object('at', now(),"
            "   'action', 'discarded', 'by', $2::text, 'note', $3::text)))"
            "  WHERE id = $1::bigint AND status = 'open' RETURNING id)"
            " SELECT d.status, (SELECT count(*) FROM u) FROM d",
            3, NULL, params, NULL, NULL, 0);

        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
            snprintf(msg, sizeof(msg), "PostgreSQL: %s",
                     PQerrorMessage(c->pg));
            sbw_cli_result(c, c->args->ids[n], "failed", NULL, msg);
            one = SBW_CLI_FAILED;

        } else if (PQntuples(res) == 0) {
            sbw_cli_result(c, c->args->ids[n], "not_found", NULL,
                           "no such dead letter");
            one = SBW_CLI_NOT_FOUND;

        } else if (strcmp(PQgetvalue(res, 0, 1), "1") != 0) {
            snprintf(msg, sizeof(msg), "it is %s; only open dead letters "
                     "are discarded", PQgetvalue(res, 0, 0));
            sbw_cli_result(c, c->args->ids[n], "refused", NULL, msg);
            one = SBW_CLI_REFUSED;

        } else {
            sbw_cli_result(c, c->args->ids[n], "discarded", NULL,
                           "discarded");
            one = SBW_CLI_OK;
        }

        PQclear(res);
        rc = sbw_cli_worst(rc, one);
    }

    if (c->results != NULL) {
        sbw_cli_print_json(c->results);
        json_decref(c->results);
        c->results = NULL;
    }

    return rc;
}


/* --- ledger ---------------------------------------------------------- */


static int
sbw_cli_ledger_list(sbw_cli_t *c)
{
    char         limit[32];
    size_t       i;
    json_t      *rows, *r;
    const char  *params[3];

    snprintf(limit, sizeof(limit), "%ld", c->args->limit);
    params[0] = c->args->shop;
    params[1] = c->args->state;
    params[2] = limit;

    rows = sbw_cli_query(c,
        "SELECT coalesce(json_agg(t), '[]') FROM ("
        " SELECT shopify_order_id::text AS order_id, shop,"
        "  shopify_order_name AS name, state, in_doubt, attempts,"
        "  external_document_number, bc_document_type, bc_number,"
        "  resolved_by, error_code, error_message,"
        "  to_char(first_seen_at AT TIME ZONE 'UTC',"
        "          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS first_seen_at,"
        "  to_char(completed_at AT TIME ZONE 'UTC',"
        "          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS completed_at"
        " FROM bc_order_ledger"
        " WHERE ($1::text IS NULL OR shop = lower($1))"
        " AND ($2::text IS NULL OR state = $2)"
        " ORDER BY first_seen_at DESC, shopify_order_id DESC"
        " LIMIT $3::bigint) t",
        3, params);

    if (rows == NULL) {
        return SBW_CLI_FAILED;
    }

    if (c->args->json) {
        sbw_cli_print_json(rows);
        json_decref(rows);
        return SBW_CLI_OK;
    }

    if (json_array_size(rows) == 0) {
        printf("no orders\n");
        json_decref(rows);
        return SBW_CLI_OK;
    }

    sbw_cli_cell("ORDER", 15);
    sbw_cli_cell("NAME", 10);
    sbw_cli_cell("SHOP", 26);
    sbw_cli_cell("STATE", 10);
    sbw_cli_cell("ATT", 3);
    sbw_cli_cell("BC", 14);
    sbw_cli_cell("FIRST SEEN", 20);
    sbw_cli_cell("ERROR", 0);
    putchar('\n');

    json_array_foreach(rows, i, r) {
        sbw_cli_cell(sbw_cli_str(r, "order_id"), 15);
        sbw_cli_cell(sbw_cli_str(r, "name"), 10);
        sbw_cli_cell(sbw_cli_str(r, "shop"), 26);
        sbw_cli_cell(json_is_true(json_object_get(r, "in_doubt"))
                     ? "in-doubt" : sbw_cli_str(r, "state"), 10);
        sbw_cli_cell(sbw_cli_str(r, "attempts"), 3);
        sbw_cli_cell(sbw_cli_str(r, "bc_number"), 14);
        sbw_cli_cell(sbw_cli_str(r, "first_seen_at"), 20);
        sbw_cli_cell(sbw_cli_str(r, "error_code"), 0);
        putchar('\n');
    }

    json_decref(rows);
    return SBW_CLI_OK;
}


static int
sbw_cli_ledger_show(sbw_cli_t *c)
{
    char         id[32];
    size_t       i;
    json_t      *doc, *order, *dl;
    const char  *key, *params[1];
    json_t      *v;

    snprintf(id, sizeof(id), "%lld", c->args->order_id);
    params[0] = id;

    doc = sbw_cli_query(c,
        "SELECT json_build_object("
        " 'order', (SELECT row_to_json(l) FROM bc_order_ledger l"
        "           WHERE shopify_order_id = $1::bigint),"
        " 'dead_letters', (SELECT coalesce(json_agg(json_build_object("
        "   'id', id, 'status', status, 'reason', reason,"
        "   'error_code', error_code, 'created_at', created_at)"
        "   ORDER BY id), '[]')"
        "  FROM dead_letters WHERE shopify_order_id = $1::bigint))",
        1, params);

    if (doc == NULL) {
        return SBW_CLI_FAILED;
    }

    order = json_object_get(doc, "order");

    if (!json_is_object(order)) {
        json_decref(doc);
        return sbw_cli_fail(SBW_CLI_NOT_FOUND, "order %s is not in the "
                            "ledger", id);
    }

    if (c->args->json) {
        sbw_cli_print_json(doc);
        json_decref(doc);
        return SBW_CLI_OK;
    }

    json_object_foreach(order, key, v) {
        printf("%-26s %s\n", key, sbw_cli_str(order, key));
    }

    json_array_foreach(json_object_get(doc, "dead_letters"), i, dl) {
        printf("dead letter %-14s %s %s %s\n", sbw_cli_str(dl, "id"),
               sbw_cli_str(dl, "status"), sbw_cli_str(dl, "reason"),
               sbw_cli_str(dl, "error_code"));
    }

    json_decref(doc);
    return SBW_CLI_OK;
}


static int
sbw_cli_ledger_duplicates(sbw_cli_t *c)
{
    int                    rc;
    char                   err[512];
    size_t                 i, j;
    json_t                *report, *f, *copy;
    sbw_bc_t               bc;
    sbw_bc_shared_t       *shared;
    sbw_dupcheck_stats_t   st;

    shared = sbw_bc_shared_new(c->conf, &sbw_cli_stop);

    if (shared == NULL || sbw_bc_init(&bc, shared, c->conf) != 0) {
        sbw_bc_shared_free(shared);
        return sbw_cli_fail(SBW_CLI_FAILED, "out of memory");
    }

    report = json_array();
    rc = sbw_dupcheck_run(&bc, c->pg, c->conf, 1, c->args->remove, report,
                          &st, err, sizeof(err));

    sbw_bc_cleanup(&bc);
    sbw_bc_shared_free(shared);

    if (rc != 0) {
        json_decref(report);
        return sbw_cli_fail(SBW_CLI_FAILED, "duplicate check: %s", err);
    }

    if (c->args->json) {
        sbw_cli_print_json(json_pack("{s:i,s:i,s:i,s:i,s:o}",
                                     "checked", st.checked,
                                     "found", st.found,
                                     "removed", st.removed,
                                     "kept", st.kept,
                                     "orders", report));

    } else {
        printf("checked %d orders posted more than once: %d extra copies "
               "found, %d removed, %d left\n", st.checked, st.found,
               st.removed, st.kept);

        json_array_foreach(report, i, f) {
            printf("order %s (%s):\n", sbw_cli_str(f, "order"),
                   sbw_cli_str(f, "external_document_number"));

            json_array_foreach(json_object_get(f, "copies"), j, copy) {
                printf("  %-14s %-8s %s\n", sbw_cli_str(copy, "number"),
                       sbw_cli_str(copy, "status"),
                       sbw_cli_str(copy, "action"));
            }
        }

        json_decref(report);
    }

    return st.kept > 0 || (st.found > 0 && !c->args->remove)
           ? SBW_CLI_DUPLICATES : SBW_CLI_OK;
}


/* --- dry run --------------------------------------------------------- */


static int
sbw_cli_dry_run(sbw_cli_t *c)
{
    int              map_rc, rc;
    char             id[32], map_err[1024], email[SBW_EMAIL_BUFLEN];
    char             shop[256], company[64];
    char            *raw, *payload, *url;
    size_t           len;
    json_t          *order, *row, *body, *out;
    int64_t          order_id;
    sbw_bc_t         bc;
    const char      *params[1], *state, *ledger_doc;
    json_error_t     jerr;
    sbw_bc_order_t   o;
    sbw_map_conf_t   mc;

    raw = NULL;
    len = 0;
    shop[0] = '\0';
    company[0] = '\0';

    if (c->args->file != NULL) {
        if (c->args->shop != NULL) {
            snprintf(shop, sizeof(shop), "%s", c->args->shop);
        }

        raw = sbw_cli_read_file(c->args->file, &len);

        if (raw == NULL) {
            return sbw_cli_fail(SBW_CLI_USAGE, "cannot read %s (or it is "
                                "larger than 16 MB)", c->args->file);
        }

    } else {
        snprintf(id, sizeof(id), "%lld", c->args->dlq_id);
        params[0] = id;
        row = sbw_cli_query(c,
            "SELECT json_build_object('payload', payload,"
            " 'encoding', payload_encoding, 'shop', shop)"
            " FROM dead_letters WHERE id = $1::bigint",
            1, params);

        if (row == NULL) {
            return SBW_CLI_FAILED;
        }

        if (!json_is_object(row)) {
            json_decref(row);
            return sbw_cli_fail(SBW_CLI_NOT_FOUND, "no dead letter %s", id);
        }

        snprintf(shop, sizeof(shop), "%s", sbw_cli_str(row, "shop"));

        if (json_is_string(json_object_get(row, "payload"))) {
            raw = sbw_cli_decode_payload(sbw_cli_str(row, "payload"),
                                         sbw_cli_str(row, "encoding"), &len);
        }

        json_decref(row);

        if (raw == NULL) {
            return sbw_cli_fail(SBW_CLI_REFUSED, "dead letter %s has no "
                                "payload", id);
        }
    }

    order = sbw_order_parse(raw, len, &jerr);
    free(raw);

    if (order == NULL || sbw_order_id(order, &order_id) != 0) {
        json_decref(order);
        return sbw_cli_fail(SBW_CLI_REFUSED, "not an order: %s",
                            order == NULL ? jerr.text
                                          : "no usable order id");
    }

    sbw_cli_map_conf(c->conf, &mc);
    map_rc = sbw_order_map(&mc, order, &o, map_err, sizeof(map_err));

    email[0] = '\0';

    if (c->conf->customer_strategy == SBW_CUSTOMER_EMAIL
        && sbw_order_email(order, email, sizeof(email)) != 0)
    {
        email[0] = '\0';
    }

    json_decref(order);

    if (map_rc != SBW_MAP_OK) {
        return sbw_cli_fail(SBW_CLI_REFUSED, "the order would not be sent: "
                            "%s: %s", map_rc == SBW_MAP_UNSUPPORTED
                                      ? SBW_MAP_ERR_UNSUPPORTED
                                      : SBW_MAP_ERR_INVALID, map_err);
    }

    /*
     * what the ledger knows: its externalDocumentNumber wins, and the
     * company the order went to; else the company of the dead letter's
     * shop, else the default one
     */
    state = NULL;
    ledger_doc = NULL;
    row = NULL;

    if (c->pg != NULL) {
        snprintf(id, sizeof(id), "%lld", (long long) order_id);
        params[0] = id;
        row = sbw_cli_query(c,
            "SELECT json_build_object('state', state, 'bc_number',"
            " bc_number, 'external_document_number',"
            " external_document_number, 'company',"
            " (SELECT bc_company_id FROM bc_order_sync s"
            "  WHERE s.shopify_order_id = l.shopify_order_id))"
            " FROM bc_order_ledger l WHERE shopify_order_id = $1::bigint",
            1, params);

        if (json_is_object(row)) {
            state = sbw_cli_str(row, "state");
            ledger_doc = sbw_cli_str(row, "external_document_number");

            if (ledger_doc[0] != '\0') {
                snprintf(o.external_doc, sizeof(o.external_doc), "%s",
                         ledger_doc);
            }

            snprintf(company, sizeof(company), "%s",
                     sbw_cli_str(row, "company"));
        }
    }

    if (company[0] == '\0') {
        snprintf(company, sizeof(company), "%s",
                 sbw_company_for_shop(c->conf, shop[0] ? shop : NULL));
    }

    payload = sbw_order_payload(&o);

    if (payload == NULL || sbw_bc_init(&bc, NULL, c->conf) != 0
        || sbw_bc_set_company(&bc, company) != 0)
    {
        free(payload);
        sbw_order_free(&o);
        json_decref(row);
        return sbw_cli_fail(SBW_CLI_FAILED, "out of memory");
    }

    len = strlen(bc.base_url) + sizeof("/salesOrders");
    url = malloc(len);

    if (url != NULL) {
        snprintf(url, len, "%s/salesOrders", bc.base_url);
    }

    rc = SBW_CLI_OK;

    if (c->args->json) {
        body = json_loads(payload, 0, NULL);
        out = json_pack("{s:s,s:s,s:s?,s:s,s:s,s:s?,s:s?,s:s?,s:o?,s:s}",
                        "company", company,
                        "method", "POST",
                        "url", url,
                        "order", id,
                        "external_document_number", o.external_doc,
                        "customer_number", o.customer_number,
                        "customer_lookup_email", email[0] ? email : NULL,
                        "ledger_state", state,
                        "body", body,
                        "body_text", payload);
        sbw_cli_print_json(out);
        json_decref(out);

    } else {
        printf("company   %s\n", company);
        printf("request   POST %s\n", url ? url : "");
        printf("order     %s  externalDocumentNumber %s\n", id,
               o.external_doc);

        if (email[0] != '\0') {
            printf("customer  the BC customer with e-mail %s, looked up "
                   "when sent; %s if BC has none\n", email,
                   o.customer_number);

        } else {
            printf("customer  %s\n", o.customer_number);
        }

        if (state != NULL) {
            printf("ledger    %s%s%s\n", state,
                   strcmp(state, "created") == 0 ? ": BC has it as " : "",
                   strcmp(state, "created") == 0
                   ? sbw_cli_str(row, "bc_number") : "");
        }

        printf("body      (as sent, %zu bytes)\n%s\n", strlen(payload),
               payload);
        printf("nothing was sent\n");
    }

    free(url);
    free(payload);
    sbw_bc_cleanup(&bc);
    sbw_order_free(&o);
    json_decref(row);

    return rc;
}


/*
 * Entry point of the verbs; argv[0] is the verb.  Returns the exit
 * status.
 */
int
sbw_cli_main(int argc, char **argv)
{
    int             rc, from;
    char            err[1024];
    long long       archived;
    sbw_cli_t       c;
    sbw_ledger_t    l;
    sbw_config_t    conf;
    sbw_cli_args_t  args;

    rc = sbw_cli_parse(argc, argv, &args, err, sizeof(err));

    if (rc != SBW_CLI_OK) {
        fprintf(stderr, "shopify-bc-worker: %s\n%s", err, sbw_cli_usage());
        return SBW_CLI_USAGE;
    }

    if (args.cmd == SBW_CLI_HELP) {
        fputs(sbw_cli_usage(), stdout);
        return SBW_CLI_OK;
    }

    if (sbw_config_load(&conf, sbw_getenv_process, NULL, err, sizeof(err))
        != 0)
    {
        return sbw_cli_fail(SBW_CLI_USAGE, "settings: %s", err);
    }

    /* the verbs speak on stdout; only problems go to the JSON log */
    sbw_log_set_level(conf.log_level > SBW_LOG_WARN ? conf.log_level
                                                    : SBW_LOG_WARN);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        sbw_config_free(&conf);
        return sbw_cli_fail(SBW_CLI_FAILED, "curl_global_init failed");
    }

    memset(&c, 0, sizeof(c));
    c.args = &args;
    c.conf = &conf;
    c.stream.conf = &conf;
    c.by = getenv("USER") != NULL ? getenv("USER") : "cli";

    memset(&l, 0, sizeof(l));
    l.url = conf.database_url;

    if (sbw_ledger_connect(&l) != 0) {
        if (args.cmd != SBW_CLI_DRY_RUN || args.file == NULL) {
            rc = sbw_cli_fail(SBW_CLI_FAILED, "%s", l.errstr);
            goto done;
        }

    } else if (sbw_ledger_migrate(&l, &from, &archived) != 0
               || sbw_dlq_migrate(l.conn, err, sizeof(err)) != 0)
    {
        rc = sbw_cli_fail(SBW_CLI_FAILED, "schema: %s",
                          l.errstr[0] ? l.errstr : err);
        goto done;
    }

    c.pg = l.conn;

    switch (args.cmd) {

    case SBW_CLI_DLQ_LIST:
        rc = sbw_cli_dlq_list(&c);
        break;

    case SBW_CLI_DLQ_SHOW:
        rc = sbw_cli_dlq_show(&c);
        break;

    case SBW_CLI_DLQ_RETRY:
        rc = sbw_cli_dlq_retry(&c);
        break;

    case SBW_CLI_DLQ_DISCARD:
        rc = sbw_cli_dlq_discard(&c);
        break;

    case SBW_CLI_LEDGER_LIST:
        rc = sbw_cli_ledger_list(&c);
        break;

    case SBW_CLI_LEDGER_SHOW:
        rc = sbw_cli_ledger_show(&c);
        break;

    case SBW_CLI_LEDGER_DUPLICATES:
        rc = sbw_cli_ledger_duplicates(&c);
        break;

    case SBW_CLI_DRY_RUN:
        rc = sbw_cli_dry_run(&c);
        break;

    default:
        rc = SBW_CLI_USAGE;
    }

done:

    sbw_stream_close(&c.stream);
    sbw_ledger_close(&l);
    curl_global_cleanup();
    sbw_config_free(&conf);

    return rc;
}
