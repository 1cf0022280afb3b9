/*
 * Privacy topics and retention (see privacy.h).
 *
 * Where personal data is kept, and what each request does there:
 *
 *   Redis, the webhook stream and the dead-letter stream: whole
 *     payloads.  Entries of the shop that belong to the customer (an
 *     order to redact, the customer's id or e-mail) are exported or
 *     deleted (XDEL); shop/redact deletes every entry of the shop.
 *   PostgreSQL bc_order_ledger: no payload, but error messages may
 *     quote one; a payload column, if a later schema adds one, is
 *     cleared too.  customers/redact clears them for the customer's
 *     orders, shop/redact deletes the shop's rows.
 *   PostgreSQL dead_letters (when that table exists): payloads; the
 *     customer's rows (or the shop's) are deleted.
 *   PostgreSQL bc_order_sync, bc_duplicate_checks and
 *     bc_order_ledger_v1_duplicates (when they exist): a conflict's
 *     reason may quote BC's message, the archived ledger rows an error
 *     message; customers/redact clears those texts for the customer's
 *     orders, shop/redact deletes the rows of the shop's orders.
 *   privacy_requests: exports made for customers/data_request, cleared
 *     by a later customers/redact of that customer, deleted by
 *     shop/redact, and emptied after the retention period.
 *
 * The audit row of each request holds ids and counts only.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "privacy.h"
#include "shops_db.h"


/* entries read per XRANGE */
#define SBW_PRIVACY_PAGE  200


static int sbw_privacy_subject(json_t *body, sbw_privacy_subject_t *who,
    const char *ids_key, char *err, size_t errlen);
static char *sbw_privacy_ids_array(const sbw_privacy_subject_t *who);
static char *sbw_privacy_id_regex(const sbw_privacy_subject_t *who);
static int sbw_privacy_scan(redisContext *c, const char *key,
    const sbw_privacy_subject_t *who, const char *shop, const char *skip,
    int del, const char *keep_from, json_t *found, long long *count,
    long long *kept, char *err, size_t errlen);
static int sbw_privacy_floor(redisContext *c, const sbw_config_t *conf,
    char *floor, size_t len, char *err, size_t errlen);
static int sbw_privacy_column(PGconn *conn, const char *table,
    const char *const *names, char *out, size_t outlen, char *err,
    size_t errlen);
static long long sbw_privacy_affected_in(PGconn *conn, const char *table,
    const char *const *columns, const char *sql, int n,
    const char *const *params, char *err, size_t errlen);
static long long sbw_privacy_affected(PGconn *conn, const char *sql,
    int n, const char *const *params, char *err, size_t errlen);
static int sbw_privacy_data_request(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, const char *shop, const sbw_entry_t *e,
    json_t *body, char *err, size_t errlen);
static int sbw_privacy_customer_redact(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, const char *shop, const sbw_entry_t *e,
    json_t *body, char *err, size_t errlen);
static int sbw_privacy_shop_redact(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, const char *shop, const sbw_entry_t *e,
    char *err, size_t errlen);
static int sbw_privacy_dead_letters(PGconn *conn, const char *shop,
    const sbw_privacy_subject_t *who, int del, json_t **rows,
    long long *count, char *err, size_t errlen);


static const char  *sbw_dl_body_columns[] = { "body", "payload", NULL };
static const char  *sbw_dl_shop_columns[] = { "shop", NULL };
static const char  *sbw_dl_order_columns[] = { "shopify_order_id", NULL };
static const char  *sbw_dl_time_columns[] = {
    "created_at", "dead_at", "failed_at", "received_at", "at", NULL
};
static const char  *sbw_ledger_payload_columns[] = {
    "payload", "body", NULL
};
static const char  *sbw_sync_columns[] = { "conflict_message", NULL };
static const char  *sbw_dupcheck_columns[] = { "copies", NULL };
static const char  *sbw_archive_columns[] = { "error_message", NULL };


static int
sbw_json_ieq(json_t *v, const char *s)
{
    return s != NULL && json_is_string(v)
           && strcasecmp(json_string_value(v), s) == 0;
}


/*
 * Whether a stream entry holds data of the subject: an entry of the
 * shop whose body is one of the orders, or names the customer by id or
 * e-mail.  With whole_shop, every entry of the shop.
 */
int
sbw_privacy_entry_matches(const sbw_privacy_subject_t *who,
    const char *shop, const char *entry_shop, const char *topic,
    const char *body, size_t len)
{
    int           hit;
    size_t        i;
    json_t       *b, *id, *cust;
    json_int_t    n;

    (void) topic;

    if (entry_shop == NULL || strcasecmp(entry_shop, shop) != 0) {
        return 0;
    }

    if (who->whole_shop) {
        return 1;
    }

    b = json_loadb(body ? body : "", len, JSON_ALLOW_NUL, NULL);

    if (!json_is_object(b)) {
        json_decref(b);

        /* not JSON: only an e-mail in the text can tell */
        return who->email != NULL && body != NULL
               && strcasestr(body, who->email) != NULL;
    }

    hit = 0;

    for (i = 0; i < 2 && !hit; i++) {
        id = json_object_get(b, i == 0 ? "id" : "order_id");

        if (json_is_integer(id)) {
            n = json_integer_value(id);

            for (size_t k = 0; k < who->norders; k++) {
                if (who->order_ids[k] == n) {
                    hit = 1;
                }
            }
        }
    }

    cust = json_object_get(b, "customer");

    if (!hit && who->customer_id > 0
        && json_is_integer(json_object_get(cust, "id"))
        && json_integer_value(json_object_get(cust, "id"))
           == who->customer_id)
    {
        hit = 1;
    }

    if (!hit && who->email != NULL
        && (sbw_json_ieq(json_object_get(b, "email"), who->email)
            || sbw_json_ieq(json_object_get(b, "contact_email"), who->email)
            || sbw_json_ieq(json_object_get(cust, "email"), who->email)))
    {
        hit = 1;
    }

    json_decref(b);
    return hit;
}


/*
 * The subject of a customers/ payload: customer.id, customer.email,
 * customer.phone and the order ids under ids_key.
 */
static int
sbw_privacy_subject(json_t *body, sbw_privacy_subject_t *who,
    const char *ids_key, char *err, size_t errlen)
{
    size_t   i;
    json_t  *cust, *ids, *v;

    memset(who, 0, sizeof(*who));

    cust = json_object_get(body, "customer");
    v = json_object_get(cust, "id");

    if (json_is_integer(v) && json_integer_value(v) > 0) {
        who->customer_id = json_integer_value(v);
    }

    who->email = json_string_value(json_object_get(cust, "email"));
    who->phone = json_string_value(json_object_get(cust, "phone"));

    if (who->email != NULL && (who->email[0] == '\0'
                               || strchr(who->email, '@') == NULL))
    {
        who->email = NULL;
    }

    ids = json_object_get(body, ids_key);

    if (ids != NULL && !json_is_array(ids)) {
        snprintf(err, errlen, "%s is not an array", ids_key);
        return -1;
    }

    who->order_ids = calloc(json_array_size(ids) + 1, sizeof(long long));
    if (who->order_ids == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    json_array_foreach(ids, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0) {
            snprintf(err, errlen, "%s holds something other than order "
                     "ids", ids_key);
            free(who->order_ids);
            who->order_ids = NULL;
            return -1;
        }

        who->order_ids[who->norders++] = json_integer_value(v);
    }

    if (who->customer_id == 0 && who->email == NULL && who->norders == 0) {
        snprintf(err, errlen, "the payload names no customer and no order");
        free(who->order_ids);
        who->order_ids = NULL;
        return -1;
    }

    return 0;
}


/*
 * The order ids as a PostgreSQL array literal ("{1,2}").
 */
static char *
sbw_privacy_ids_array(const sbw_privacy_subject_t *who)
{
    char    *s;
    size_t   i, len, cap;

    cap = 3 + who->norders * 21;
    s = malloc(cap);
    if (s == NULL) {
        return NULL;
    }

    len = (size_t) snprintf(s, cap, "{");

    for (i = 0; i < who->norders; i++) {
        len += (size_t) snprintf(s + len, cap - len, "%s%lld", i ? "," : "",
                                 who->order_ids[i]);
    }

    snprintf(s + len, cap - len, "}");
    return s;
}


/*
 * A POSIX regex matching "id": N for the orders and the customer in a
 * JSON text, NULL when there are no ids.
 */
static char *
sbw_privacy_id_regex(const sbw_privacy_subject_t *who)
{
    char    *s;
    size_t   i, len, cap;

    if (who->norders == 0 && who->customer_id == 0) {
        return NULL;
    }

    cap = 64 + (who->norders + 1) * 21;
    s = malloc(cap);
    if (s == NULL) {
        return NULL;
    }

    len = (size_t) snprintf(s, cap, "\"(order_)?id\":[[:space:]]*(");

    for (i = 0; i < who->norders; i++) {
        len += (size_t) snprintf(s + len, cap - len, "%s%lld", i ? "|" : "",
                                 who->order_ids[i]);
    }

    if (who->customer_id > 0) {
        len += (size_t) snprintf(s + len, cap - len, "%s%lld",
                                 who->norders ? "|" : "", who->customer_id);
    }

    snprintf(s + len, cap - len, ")[,}[:space:]]");
    return s;
}


/*
 * The webhook stream's entries that every consumer group has finished
 * are those below floor; an entry at or above it may still be waiting to
 * reach BC.  "0-0" when the stream has no group yet.
 */
static int
sbw_privacy_floor(redisContext *c, const sbw_config_t *conf, char *floor,
    size_t len, char *err, size_t errlen)
{
    sbw_stream_t  s;

    memset(&s, 0, sizeof(s));
    s.ctx = c;
    s.conf = conf;

    if (sbw_stream_floor(&s, floor, len) != SBW_STREAM_OK) {
        snprintf(err, errlen, "consumer groups of %s: %s", conf->stream_key,
                 s.errstr);
        return -1;
    }

    if (floor[0] == '\0') {
        snprintf(floor, len, "0-0");
    }

    return 0;
}


/*
 * Walk a stream (XRANGE pages) for entries of the subject: count them,
 * list them in found (id, topic, webhook id, payload) and, with del,
 * XDEL them.  skip: an entry id left alone (the request's own).
 * keep_from: with del, entries at or above this id are not deleted but
 * counted in *kept: they have not reached BC yet, and erasing them would
 * lose an order.  They leave the stream with the trim that follows their
 * processing.
 */
static int
sbw_privacy_scan(redisContext *c, const char *key,
    const sbw_privacy_subject_t *who, const char *shop, const char *skip,
    int del, const char *keep_from, json_t *found, long long *count,
    long long *kept, char *err, size_t errlen)
{
    char          start[80];
    size_t        i, j, nd;
    const char   *f, *topic, *eshop, *wid, *body, **ids;
    size_t        blen;
    redisReply   *r, *e, *kv, *d;
    json_t       *payload;

    snprintf(start, sizeof(start), "-");

    for ( ;; ) {
        r = redisCommand(c, "XRANGE %s %s + COUNT %d", key, start,
                         SBW_PRIVACY_PAGE);

        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            snprintf(err, errlen, "XRANGE %s: %s", key,
                     r ? (r->str ? r->str : "unexpected reply") : c->errstr);
            freeReplyObject(r);
            return -1;
        }

        if (r->elements == 0) {
            freeReplyObject(r);
            return 0;
        }

        ids = calloc(r->elements, sizeof(char *));
        if (ids == NULL) {
            freeReplyObject(r);
            snprintf(err, errlen, "out of memory");
            return -1;
        }

        nd = 0;

        for (i = 0; i < r->elements; i++) {
            e = r->element[i];

            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
                || e->element[0]->type != REDIS_REPLY_STRING
                || e->element[1]->type != REDIS_REPLY_ARRAY)
            {
                continue;
            }

            kv = e->element[1];
            topic = eshop = wid = body = NULL;
            blen = 0;

            for (j = 0; j + 1 < kv->elements; j += 2) {
                if (kv->element[j]->type != REDIS_REPLY_STRING
                    || kv->element[j + 1]->type != REDIS_REPLY_STRING)
                {
                    continue;
                }

                f = kv->element[j]->str;

                if (strcmp(f, "topic") == 0) {
                    topic = kv->element[j + 1]->str;

                } else if (strcmp(f, "shop") == 0) {
                    eshop = kv->element[j + 1]->str;

                } else if (strcmp(f, "webhook_id") == 0) {
                    wid = kv->element[j + 1]->str;

                } else if (strcmp(f, "body") == 0) {
                    body = kv->element[j + 1]->str;
                    blen = kv->element[j + 1]->len;
                }
            }

            if ((skip != NULL && strcmp(e->element[0]->str, skip) == 0)
                || !sbw_privacy_entry_matches(who, shop, eshop, topic, body,
                                              blen))
            {
                continue;
            }

            (*count)++;

            if (found != NULL) {
                payload = json_loadb(body ? body : "", blen, JSON_ALLOW_NUL,
                                     NULL);
                json_array_append_new(found,
                    json_pack("{s:s,s:s,s:s?,s:s?,s:o}", "stream", key,
                              "id", e->element[0]->str, "topic", topic,
                              "webhook_id", wid, "payload",
                              payload ? payload
                                      : json_stringn(body ? body : "",
                                                     blen)));
            }

            if (keep_from != NULL
                && sbw_stream_id_cmp(e->element[0]->str, keep_from) >= 0)
            {
                (*kept)++;
                continue;
            }

            ids[nd++] = e->element[0]->str;
        }

        snprintf(start, sizeof(start), "(%s",
                 r->element[r->elements - 1]->element[0]->str);

        if (del && nd > 0) {
            for (i = 0; i < nd; i++) {
                d = redisCommand(c, "XDEL %s %s", key, ids[i]);

                if (d == NULL || d->type == REDIS_REPLY_ERROR) {
                    snprintf(err, errlen, "XDEL %s: %s", key,
                             d ? d->str : c->errstr);
                    freeReplyObject(d);
                    free(ids);
                    freeReplyObject(r);
                    return -1;
                }

                freeReplyObject(d);
            }
        }

        free(ids);
        freeReplyObject(r);
    }
}


/*
 * The first of names that table has as a column, into out.  Returns 1
 * found, 0 not (or no such table), -1 error.
 */
static int
sbw_privacy_column(PGconn *conn, const char *table,
    const char *const *names, char *out, size_t outlen, char *err,
    size_t errlen)
{
    int          i;
    PGresult    *res;
    const char  *params[2];

    for (i = 0; names[i] != NULL; i++) {
        params[0] = table;
        params[1] = names[i];

        if (sbw_shops_exec(conn, "SELECT 1 FROM information_schema.columns"
                           " WHERE table_schema = current_schema()"
                           "   AND table_name = $1 AND column_name = $2",
                           2, params, 1, &res, err, errlen) != 0)
        {
            return -1;
        }

        if (PQntuples(res) > 0) {
            PQclear(res);
            snprintf(out, outlen, "%s", names[i]);
            return 1;
        }

        PQclear(res);
    }

    return 0;
}


/*
 * Run a statement that returns one row with a count.
 */
static long long
sbw_privacy_affected(PGconn *conn, const char *sql, int n,
    const char *const *params, char *err, size_t errlen)
{
    long long   v;
    PGresult   *res;

    if (sbw_shops_exec(conn, sql, n, params, 1, &res, err, errlen) != 0) {
        return -1;
    }

    v = PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);

    return v;
}


/*
 * sbw_privacy_affected() on a table of another component: 0 without
 * running anything when the table (with one of its columns) is not
 * there, -1 on an error.
 */
static long long
sbw_privacy_affected_in(PGconn *conn, const char *table,
    const char *const *columns, const char *sql, int n,
    const char *const *params, char *err, size_t errlen)
{
    int   has;
    char  col[64];

    has = sbw_privacy_column(conn, table, columns, col, sizeof(col), err,
                             errlen);

    if (has <= 0) {
        return has;
    }

    return sbw_privacy_affected(conn, sql, n, params, err, errlen);
}


/*
 * Rows of the dead_letters table (another component's, when it exists)
 * that hold the subject's data: listed (rows) or deleted (del).  The
 * table's columns are looked up, not assumed: a shop column, a body or
 * payload column searched for the ids and the e-mail, and the order id
 * column when there is one.
 */
static int
sbw_privacy_dead_letters(PGconn *conn, const char *shop,
    const sbw_privacy_subject_t *who, int del, json_t **rows,
    long long *count, char *err, size_t errlen)
{
    int          has, byid;
    char         body[64], shopcol[64], idcol[64], sql[1024], idcond[96];
    char        *re, *ids;
    PGresult    *res;
    json_t      *v;
    const char  *params[4];

    *count = 0;

    if (rows != NULL) {
        *rows = json_array();
    }

    res = PQexec(conn, "SELECT to_regclass('dead_letters') IS NOT NULL");

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }

    has = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);

    if (!has) {
        return 0;
    }

    if (sbw_privacy_column(conn, "dead_letters", sbw_dl_shop_columns,
                           shopcol, sizeof(shopcol), err, errlen) != 1)
    {
        snprintf(err, errlen, "dead_letters has no shop column");
        return -1;
    }

    has = who->whole_shop ? 0
          : sbw_privacy_column(conn, "dead_letters", sbw_dl_body_columns,
                               body, sizeof(body), err, errlen);

    if (has < 0) {
        return -1;
    }

    if (!who->whole_shop && !has) {
        snprintf(err, errlen, "dead_letters has no body or payload column");
        return -1;
    }

    re = sbw_privacy_id_regex(who);
    ids = sbw_privacy_ids_array(who);

    /* a row that names its order: matched by id (its payload may be
       base64) */
    byid = who->whole_shop ? 0
           : sbw_privacy_column(conn, "dead_letters", sbw_dl_order_columns,
                                idcol, sizeof(idcol), err, errlen);

    if (byid < 0 || ids == NULL) {
        free(re);
        free(ids);
        return -1;
    }

    params[0] = shop;
    params[1] = re ? re : "^$.";
    params[2] = who->email ? who->email : "";
    params[3] = ids;

    if (byid) {
        snprintf(idcond, sizeof(idcond), " OR t.%s = ANY($4::bigint[])",
                 idcol);

    } else {
        snprintf(idcond, sizeof(idcond), " OR $4::bigint[] IS NULL");
    }

    if (who->whole_shop) {
        snprintf(sql, sizeof(sql),
                 "WITH d AS (%s FROM dead_letters t WHERE lower(t.%s) = $1"
                 " %s) SELECT count(*)%s FROM d",
                 del ? "DELETE" : "SELECT t.*", shopcol,
                 del ? "RETURNING 1 AS x" : "",
                 rows ? ", coalesce(json_agg(d), '[]')" : "");

    } else {
        snprintf(sql, sizeof(sql),
                 "WITH d AS (%s FROM dead_letters t WHERE lower(t.%s) = $1"
                 "  AND (t.%s::text ~ $2 OR ($3 <> '' AND"
                 "       position(lower($3) IN lower(t.%s::text)) > 0)%s)"
                 " %s) SELECT count(*)%s FROM d",
                 del ? "DELETE" : "SELECT t.*", shopcol, body, body, idcond,
                 del ? "RETURNING 1 AS x" : "",
                 rows ? ", coalesce(json_agg(d), '[]')" : "");
    }

    if (sbw_shops_exec(conn, sql, who->whole_shop ? 1 : 4, params, 1, &res,
                       err, errlen) != 0)
    {
        free(re);
        free(ids);
        return -1;
    }

    free(re);
    free(ids);

    *count = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

    if (rows != NULL) {
        v = json_loads(PQgetvalue(res, 0, 1), 0, NULL);

        if (v != NULL) {
            json_decref(*rows);
            *rows = v;
        }
    }

    PQclear(res);
    return 0;
}


/*
 * customers/data_request: gather what is held for the customer and keep
 * it as one export in privacy_requests, for the merchant to hand over.
 */
static int
sbw_privacy_data_request(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, const char *shop, const sbw_entry_t *e,
    json_t *body, char *err, size_t errlen)
{
    int                     rc, has;
    char                   *ids, *text, cid[32], drid[32], col[64];
    json_t                 *export, *ledger, *sync, *entries, *dl;
    PGresult               *res;
    long long               nstream, ndl;
    json_int_t              dr;
    const char             *params[6];
    sbw_privacy_subject_t   who;

    if (sbw_privacy_subject(body, &who, "orders_requested", err, errlen)
        != 0)
    {
        return SBW_PRIVACY_INVALID;
    }

    rc = SBW_PRIVACY_RETRY;
    export = NULL;
    entries = json_array();
    dl = NULL;
    nstream = 0;
    text = NULL;
    ids = sbw_privacy_ids_array(&who);

    dr = json_integer_value(json_object_get(json_object_get(body,
                                                            "data_request"),
                                            "id"));
    snprintf(cid, sizeof(cid), "%lld", who.customer_id);
    snprintf(drid, sizeof(drid), "%lld", (long long) dr);

    if (ids == NULL || entries == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }

    /* 1. the ledger rows of the orders */
    params[0] = shop;
    params[1] = ids;

    if (sbw_shops_exec(conn,
            "SELECT coalesce(json_agg(json_build_object("
            "  'shopify_order_id', shopify_order_id,"
            "  'shopify_order_name', shopify_order_name,"
            "  'external_document_number', external_document_number,"
            "  'state', state, 'bc_document_type', bc_document_type,"
            "  'bc_number', bc_number, 'error_code', error_code,"
            "  'error_message', error_message,"
            "  'first_seen_at', first_seen_at, 'completed_at', completed_at)"
            "  ORDER BY shopify_order_id), '[]')"
            " FROM bc_order_ledger"
            " WHERE shop = $1 AND shopify_order_id = ANY($2::bigint[])",
            2, params, 1, &res, err, errlen) != 0)
    {
        goto done;
    }

    ledger = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);

    /* the order sync rows, when that table exists: totals, states, text */
    sync = NULL;
    has = sbw_privacy_column(conn, "bc_order_sync", sbw_sync_columns, col,
                             sizeof(col), err, errlen);

    if (has < 0) {
        json_decref(ledger);
        goto done;
    }

    if (has > 0 && sbw_shops_exec(conn,
            "SELECT coalesce(json_agg(to_jsonb(s)"
            "  ORDER BY s.shopify_order_id), '[]')"
            " FROM bc_order_sync s JOIN bc_order_ledger l"
            "  USING (shopify_order_id)"
            " WHERE l.shop = $1 AND l.shopify_order_id = ANY($2::bigint[])",
            2, params, 1, &res, err, errlen) != 0)
    {
        json_decref(ledger);
        goto done;
    }

    if (has > 0) {
        sync = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        PQclear(res);
    }

    /* 2. dead letters, 3. stream entries */
    if (sbw_privacy_dead_letters(conn, shop, &who, 0, &dl, &ndl, err,
                                 errlen) != 0
        || redis == NULL
        || sbw_privacy_scan(redis, conf->stream_key, &who, shop, e->id, 0,
                            NULL, entries, &nstream, NULL, err, errlen) != 0)
    {
        if (redis == NULL) {
            snprintf(err, errlen, "no Redis connection");
        }

        json_decref(ledger);
        json_decref(sync);
        goto done;
    }

    export = json_pack("{s:s,s:I,s:s?,s:s?,s:I,s:o,s:o,s:o,s:o,s:O}",
                       "shop", shop,
                       "customer_id", (json_int_t) who.customer_id,
                       "email", who.email, "phone", who.phone,
                       "data_request_id", dr,
                       "ledger", ledger ? ledger : json_array(),
                       "order_sync", sync ? sync : json_array(),
                       "dead_letters", dl ? dl : json_array(),
                       "stream_entries", entries,
                       "orders_requested", json_object_get(body,
                                                           "orders_requested"));
    entries = NULL;
    dl = NULL;

    text = export ? json_dumps(export, JSON_COMPACT) : NULL;

    if (text == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }

    /* 4. the export, and the audit row */
    params[0] = shop;
    params[1] = e->webhook_id ? e->webhook_id : e->id;
    params[2] = who.customer_id ? cid : NULL;
    params[3] = dr ? drid : NULL;
    params[4] = ids;
    params[5] = text;

    if (sbw_shops_exec(conn,
            "INSERT INTO privacy_requests (shop, topic, webhook_id,"
            "  customer_id, data_request_id, order_ids, export)"
            " VALUES ($1, 'customers/data_request', $2, $3::bigint,"
            "  $4::bigint, $5::bigint[], $6::jsonb)"
            " ON CONFLICT (webhook_id) DO NOTHING",
            6, params, 0, NULL, err, errlen) != 0
        || sbw_shops_audit(conn, shop, "customers_data_request",
                           e->webhook_id,
                           json_pack("{s:I,s:I,s:i,s:I,s:I,s:I}",
                                     "customer_id",
                                     (json_int_t) who.customer_id,
                                     "data_request_id", dr,
                                     "orders", (json_int_t) who.norders,
                                     "ledger_rows", (json_int_t)
                                     json_array_size(json_object_get(export,
                                                                     "ledger")),
                                     "dead_letters", (json_int_t) ndl,
                                     "stream_entries", (json_int_t) nstream),
                           err, errlen) != 0)
    {
        goto done;
    }

    sbw_log(SBW_LOG_INFO, "privacy_data_request",
            json_pack("{s:s,s:s?,s:I,s:I,s:I,s:I}", "shop", shop,
                      "webhook_id", e->webhook_id,
                      "customer_id", (json_int_t) who.customer_id,
                      "data_request_id", dr,
                      "stream_entries", (json_int_t) nstream,
                      "dead_letters", (json_int_t) ndl));
    rc = SBW_PRIVACY_OK;

done:

    free(text);
    free(ids);
    json_decref(export);
    json_decref(entries);
    json_decref(dl);
    free(who.order_ids);

    return rc;
}


/*
 * customers/redact: erase the customer's personal data everywhere.
 */
static int
sbw_privacy_customer_redact(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, const char *shop, const sbw_entry_t *e,
    json_t *body, char *err, size_t errlen)
{
    int                     rc, has;
    char                   *ids, cid[32], col[64], sql[512];
    char                    floor[64];
    long long               nledger, nstream, ndl, nexp, nkept, nsync;
    const char             *params[3];
    sbw_privacy_subject_t   who;

    if (sbw_privacy_subject(body, &who, "orders_to_redact", err, errlen)
        != 0)
    {
        return SBW_PRIVACY_INVALID;
    }

    rc = SBW_PRIVACY_RETRY;
    nstream = 0;
    nkept = 0;
    nsync = 0;
    ids = sbw_privacy_ids_array(&who);
    snprintf(cid, sizeof(cid), "%lld", who.customer_id);

    if (ids == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }

    /* 1. the ledger: error texts, and a payload column if there is one */
    params[0] = shop;
    params[1] = ids;

    nledger = sbw_privacy_affected(conn,
        "WITH u AS (UPDATE bc_order_ledger SET error_message = NULL"
        " WHERE shop = $1 AND shopify_order_id = ANY($2::bigint[])"
        "   AND error_message IS NOT NULL RETURNING 1)"
        " SELECT count(*) FROM u", 2, params, err, errlen);

    if (nledger < 0) {
        goto done;
    }

    has = sbw_privacy_column(conn, "bc_order_ledger",
                             sbw_ledger_payload_columns, col, sizeof(col),
                             err, errlen);
    if (has < 0) {
        goto done;
    }

    if (has) {
        snprintf(sql, sizeof(sql),
                 "UPDATE bc_order_ledger SET %s = NULL WHERE shop = $1"
                 " AND shopify_order_id = ANY($2::bigint[])", col);

        if (sbw_shops_exec(conn, sql, 2, params, 0, NULL, err, errlen)
            != 0)
        {
            goto done;
        }
    }

    /* the ledger rows the version 2 migration archived */
    if (sbw_privacy_affected_in(conn, "bc_order_ledger_v1_duplicates",
            sbw_archive_columns,
            "WITH u AS (UPDATE bc_order_ledger_v1_duplicates"
            " SET error_message = NULL WHERE shop = $1"
            "   AND shopify_order_id = ANY($2::bigint[]) RETURNING 1)"
            " SELECT count(*) FROM u", 2, params, err, errlen) < 0)
    {
        goto done;
    }

    /* the order sync state: a conflict's reason may quote BC */
    nsync = sbw_privacy_affected_in(conn, "bc_order_sync", sbw_sync_columns,
        "WITH u AS (UPDATE bc_order_sync SET conflict_message = NULL"
        " WHERE shopify_order_id = ANY($2::bigint[])"
        "   AND conflict_message IS NOT NULL"
        "   AND shopify_order_id IN (SELECT shopify_order_id"
        "     FROM bc_order_ledger WHERE shop = $1) RETURNING 1)"
        " SELECT count(*) FROM u", 2, params, err, errlen);

    if (nsync < 0) {
        goto done;
    }

    /* 2. earlier exports for this customer */
    params[1] = cid;

    nexp = sbw_privacy_affected(conn,
        "WITH u AS (UPDATE privacy_requests SET export = NULL,"
        "  redacted_at = now()"
        " WHERE shop = $1 AND customer_id = $2::bigint"
        "   AND redacted_at IS NULL RETURNING 1)"
        " SELECT count(*) FROM u", 2, params, err, errlen);

    if (nexp < 0) {
        goto done;
    }

    /* 3. dead letters, 4. stream entries */
    if (sbw_privacy_dead_letters(conn, shop, &who, 1, NULL, &ndl, err,
                                 errlen) != 0)
    {
        goto done;
    }

    if (redis == NULL) {
        snprintf(err, errlen, "no Redis connection");
        goto done;
    }

    if (sbw_privacy_floor(redis, conf, floor, sizeof(floor), err, errlen)
           != 0
        || sbw_privacy_scan(redis, conf->stream_key, &who, shop, e->id, 1,
                            floor, NULL, &nstream, &nkept, err, errlen) != 0)
    {
        goto done;
    }

    if (sbw_shops_audit(conn, shop, "customers_redact", e->webhook_id,
                        json_pack("{s:I,s:i,s:I,s:I,s:I,s:I,s:I,s:I}",
                                  "customer_id",
                                  (json_int_t) who.customer_id,
                                  "orders", (json_int_t) who.norders,
                                  "ledger_rows", (json_int_t) nledger,
                                  "order_sync_rows", (json_int_t) nsync,
                                  "exports", (json_int_t) nexp,
                                  "dead_letters", (json_int_t) ndl,
                                  "stream_entries", (json_int_t) nstream,
                                  "stream_entries_kept",
                                  (json_int_t) nkept),
                        err, errlen) != 0)
    {
        goto done;
    }

    sbw_log(SBW_LOG_INFO, "privacy_customer_redacted",
            json_pack("{s:s,s:s?,s:I,s:I,s:I,s:I,s:I,s:I}", "shop", shop,
                      "webhook_id", e->webhook_id,
                      "customer_id", (json_int_t) who.customer_id,
                      "ledger_rows", (json_int_t) nledger,
                      "exports", (json_int_t) nexp,
                      "dead_letters", (json_int_t) ndl,
                      "stream_entries", (json_int_t) nstream,
                      "stream_entries_kept", (json_int_t) nkept));
    rc = SBW_PRIVACY_OK;

done:

    free(ids);
    free(who.order_ids);

    return rc;
}


/*
 * shop/redact (48 hours after an uninstall): erase the shop's data.  A
 * shop that is installed again keeps its shops row (and its tokens).
 */
static int
sbw_privacy_shop_redact(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, const char *shop, const sbw_entry_t *e,
    char *err, size_t errlen)
{
    char                    floor[64];
    long long               nledger, nreq, nshop, ndl, nstream, nkept;
    long long               nsync, ndup, narch;
    const char             *params[1];
    sbw_privacy_subject_t   who;

    memset(&who, 0, sizeof(who));
    who.whole_shop = 1;
    nstream = 0;
    nkept = 0;
    params[0] = shop;

    /*
     * the rows kept by order id go first, while the ledger still says
     * which orders are the shop's: a retry after a failure finds them
     */

    nsync = sbw_privacy_affected_in(conn, "bc_order_sync", sbw_sync_columns,
        "WITH d AS (DELETE FROM bc_order_sync WHERE shopify_order_id IN"
        " (SELECT shopify_order_id FROM bc_order_ledger WHERE shop = $1)"
        " RETURNING 1) SELECT count(*) FROM d", 1, params, err, errlen);

    ndup = nsync < 0 ? -1
           : sbw_privacy_affected_in(conn, "bc_duplicate_checks",
                 sbw_dupcheck_columns,
                 "WITH d AS (DELETE FROM bc_duplicate_checks WHERE"
                 " shopify_order_id IN (SELECT shopify_order_id"
                 "   FROM bc_order_ledger WHERE shop = $1)"
                 " RETURNING 1) SELECT count(*) FROM d",
                 1, params, err, errlen);

    narch = ndup < 0 ? -1
            : sbw_privacy_affected_in(conn, "bc_order_ledger_v1_duplicates",
                  sbw_archive_columns,
                  "WITH d AS (DELETE FROM bc_order_ledger_v1_duplicates"
                  " WHERE shop = $1 RETURNING 1) SELECT count(*) FROM d",
                  1, params, err, errlen);

    if (narch < 0) {
        return SBW_PRIVACY_RETRY;
    }

    nledger = sbw_privacy_affected(conn,
        "WITH d AS (DELETE FROM bc_order_ledger WHERE shop = $1"
        " RETURNING 1) SELECT count(*) FROM d", 1, params, err, errlen);
    nreq = nledger < 0 ? -1 : sbw_privacy_affected(conn,
        "WITH d AS (DELETE FROM privacy_requests WHERE shop = $1"
        " RETURNING 1) SELECT count(*) FROM d", 1, params, err, errlen);
    nshop = nreq < 0 ? -1 : sbw_privacy_affected(conn,
        "WITH d AS (DELETE FROM shops WHERE domain = $1"
        " AND status <> 'active' RETURNING 1) SELECT count(*) FROM d",
        1, params, err, errlen);

    if (nshop < 0
        || sbw_privacy_dead_letters(conn, shop, &who, 1, NULL, &ndl, err,
                                    errlen) != 0)
    {
        return SBW_PRIVACY_RETRY;
    }

    if (redis == NULL) {
        snprintf(err, errlen, "no Redis connection");
        return SBW_PRIVACY_RETRY;
    }

    if (sbw_privacy_floor(redis, conf, floor, sizeof(floor), err, errlen)
           != 0
        || sbw_privacy_scan(redis, conf->stream_key, &who, shop, e->id, 1,
                            floor, NULL, &nstream, &nkept, err, errlen) != 0)
    {
        return SBW_PRIVACY_RETRY;
    }

    if (sbw_shops_audit(conn, shop, "shop_redact", e->webhook_id,
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:b,s:I,s:I,s:I}",
                                  "ledger_rows", (json_int_t) nledger,
                                  "archived_ledger_rows", (json_int_t) narch,
                                  "order_sync_rows", (json_int_t) nsync,
                                  "duplicate_checks", (json_int_t) ndup,
                                  "privacy_requests", (json_int_t) nreq,
                                  "shop_row", nshop > 0,
                                  "dead_letters", (json_int_t) ndl,
                                  "stream_entries", (json_int_t) nstream,
                                  "stream_entries_kept",
                                  (json_int_t) nkept),
                        err, errlen) != 0)
    {
        return SBW_PRIVACY_RETRY;
    }

    sbw_log(SBW_LOG_INFO, "privacy_shop_redacted",
            json_pack("{s:s,s:s?,s:I,s:I,s:b,s:I,s:I,s:I}", "shop", shop,
                      "webhook_id", e->webhook_id,
                      "ledger_rows", (json_int_t) nledger,
                      "privacy_requests", (json_int_t) nreq,
                      "shop_row", nshop > 0,
                      "dead_letters", (json_int_t) ndl,
                      "stream_entries", (json_int_t) nstream,
                      "stream_entries_kept", (json_int_t) nkept));

    return SBW_PRIVACY_OK;
}


int
sbw_privacy_handle(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, const char *shop, const sbw_entry_t *e,
    char *err, size_t errlen)
{
    int           rc;
    char          bshop[256];
    json_t       *body;
    const char   *topic, *d;

    topic = e->topic ? e->topic : "";
    body = json_loadb(e->body ? e->body : "", e->body_len, 0, NULL);

    d = json_string_value(json_object_get(body, "shop_domain"));

    if (!json_is_object(body) || d == NULL || strlen(d) >= sizeof(bshop)
        || strcasecmp(d, shop) != 0)
    {
        snprintf(err, errlen, "%s: the body is not an object naming the "
                 "entry's shop in shop_domain", topic);
        json_decref(body);
        sbw_log(SBW_LOG_ERROR, "entry_invalid",
                json_pack("{s:s,s:s,s:s,s:s?}", "topic", topic, "shop", shop,
                          "message", err, "webhook_id", e->webhook_id));
        return SBW_PRIVACY_INVALID;
    }

    if (strcmp(topic, "customers/data_request") == 0) {
        rc = sbw_privacy_data_request(conn, redis, conf, shop, e, body, err,
                                      errlen);

    } else if (strcmp(topic, "customers/redact") == 0) {
        rc = sbw_privacy_customer_redact(conn, redis, conf, shop, e, body,
                                         err, errlen);

    } else {
        rc = sbw_privacy_shop_redact(conn, redis, conf, shop, e, err,
                                     errlen);
    }

    json_decref(body);

    if (rc == SBW_PRIVACY_INVALID) {
        sbw_log(SBW_LOG_ERROR, "entry_invalid",
                json_pack("{s:s,s:s,s:s,s:s?}", "topic", topic, "shop", shop,
                          "message", err, "webhook_id", e->webhook_id));

    } else if (rc != SBW_PRIVACY_OK) {
        sbw_log(SBW_LOG_WARN, "privacy_retry",
                json_pack("{s:s,s:s,s:s,s:s?}", "topic", topic, "shop", shop,
                          "message", err, "webhook_id", e->webhook_id));
    }

    return rc;
}


/*
 * PAYLOAD_RETENTION_DAYS: nothing holding a payload outlives it, except
 * an open dead letter (an order still to be booked, counted in a warning
 * until someone retries or discards it).  Resolved and discarded
 * dead_letters rows and ledger payloads older than that are dropped,
 * exports emptied.
 * The webhook stream itself is trimmed as soon as every group has
 * acknowledged (stream.c), which is sooner.
 */
int
sbw_privacy_purge(PGconn *conn, redisContext *redis,
    const sbw_config_t *conf, long retention_days, char *err, size_t errlen)
{
    int          has;
    char         days[32], col[64], sql[512];
    long long    nexp, ndl, nopen;
    const char  *params[1];

    (void) redis;
    (void) conf;

    snprintf(days, sizeof(days), "%ld", retention_days);
    params[0] = days;
    ndl = 0;

    nexp = sbw_privacy_affected(conn,
        "WITH u AS (UPDATE privacy_requests SET export = NULL"
        " WHERE export IS NOT NULL"
        "   AND received_at < now() - $1::int * interval '1 day'"
        " RETURNING 1) SELECT count(*) FROM u", 1, params, err, errlen);

    if (nexp < 0) {
        return -1;
    }

    has = sbw_privacy_column(conn, "bc_order_ledger",
                             sbw_ledger_payload_columns, col, sizeof(col),
                             err, errlen);

    if (has > 0) {
        snprintf(sql, sizeof(sql), "UPDATE bc_order_ledger SET %s = NULL"
                 " WHERE %s IS NOT NULL"
                 "   AND first_seen_at < now() - $1::int * interval '1 day'",
                 col, col);
        has = sbw_shops_exec(conn, sql, 1, params, 0, NULL, err, errlen);
    }

    if (has < 0) {
        return -1;
    }

    has = sbw_privacy_column(conn, "dead_letters", sbw_dl_time_columns,
                             col, sizeof(col), err, errlen);

    if (has > 0) {
        snprintf(sql, sizeof(sql), "WITH d AS (DELETE FROM dead_letters"
                 " WHERE %s < now() - $1::int * interval '1 day'"
                 "   AND status IN ('resolved', 'discarded')"
                 " RETURNING 1) SELECT count(*) FROM d", col);
        ndl = sbw_privacy_affected(conn, sql, 1, params, err, errlen);
        has = ndl < 0 ? -1 : 0;
    }

    if (has < 0) {
        return -1;
    }

    /* an open dead letter is an order still to be booked: it stays */
    nopen = sbw_privacy_affected(conn,
        "SELECT count(*) FROM dead_letters WHERE status = 'open'"
        "   AND created_at < now() - $1::int * interval '1 day'",
        1, params, err, errlen);

    if (nopen < 0) {
        return -1;
    }

    if (nopen > 0) {
        sbw_log(SBW_LOG_WARN, "retention_kept_open_dead_letters",
                json_pack("{s:i,s:I}", "retention_days",
                          (json_int_t) retention_days,
                          "open_dead_letters", (json_int_t) nopen));
    }

    if (nexp + ndl > 0) {
        sbw_log(SBW_LOG_INFO, "retention_purged",
                json_pack("{s:i,s:I,s:I}", "retention_days",
                          (json_int_t) retention_days,
                          "exports", (json_int_t) nexp,
                          "dead_letters", (json_int_t) ndl));
        sbw_shops_audit(conn, "*", "retention_purge", NULL,
                        json_pack("{s:i,s:I,s:I}", "retention_days",
                                  (json_int_t) retention_days,
                                  "exports", (json_int_t) nexp,
                                  "dead_letters", (json_int_t) ndl),
                        err, errlen);
    }

    return 0;
}
