/*
 * Duplicate BC orders.
 *
 * Only an order the worker posted more than once (ledger attempts > 1)
 * can have been created twice by it: an attempt whose outcome was lost,
 * not found by the look-up, then posted again while BC still ran the
 * first.  Those orders are looked up in salesOrders by
 * externalDocumentNumber once every attempt is certainly over
 * (BC365_INDOUBT_WAIT_MS after the last one), and once only: the check
 * is recorded in bc_duplicate_checks.  "ledger duplicates" on the
 * command line checks every such order again, at once.
 *
 * Of two or more open copies the oldest (lowest number in BC's number
 * series) is kept.  A newer copy is removed only when that is safe:
 * still Draft or Open (not released to the warehouse), nothing shipped
 * or invoiced on any line, and deleted with If-Match on the ETag just
 * read, so that a copy someone changed in the meantime is left alone.
 * Every finding is logged, counted, and recorded as a dead letter of
 * reason duplicate_bc_order (resolved when every extra copy was
 * removed, open when one needs a person).
 */

/* TODO: copies made by hand, or already posted, are not looked for */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "dupcheck.h"
#include "log.h"
#include "metrics.h"
#include "sync_map.h"
#include "text.h"


static int sbw_dupcheck_order(sbw_bc_t *bc, PGconn *pg, int remove,
    const char *order_id, const char *shop, const char *extdoc,
    const char *ledger_bc_id, json_t *report, sbw_dupcheck_stats_t *st,
    char *err, size_t errlen);
static int sbw_dupcheck_copy_cmp(const void *a, const void *b);
static const char *sbw_dupcheck_unsafe(const json_t *doc);


/*
 * Order of BC document numbers from one number series: a shorter number
 * is older ("S-ORD9" before "S-ORD10"), equal lengths compare as text.
 */
int
sbw_dupcheck_number_cmp(const char *a, const char *b)
{
    size_t  la, lb;

    la = strlen(a);
    lb = strlen(b);

    if (la != lb) {
        return la < lb ? -1 : 1;
    }

    return strcmp(a, b);
}


static int
sbw_dupcheck_copy_cmp(const void *a, const void *b)
{
    const char  *na, *nb;

    na = json_string_value(json_object_get(*(json_t *const *) a, "number"));
    nb = json_string_value(json_object_get(*(json_t *const *) b, "number"));

    return sbw_dupcheck_number_cmp(na ? na : "", nb ? nb : "");
}


/*
 * Why a copy must not be deleted, or NULL when it may.
 */
static const char *
sbw_dupcheck_unsafe(const json_t *doc)
{
    size_t         i;
    const char    *status;
    const json_t  *lines, *line;

    status = json_string_value(json_object_get(doc, "status"));

    if (status == NULL
        || (strcmp(status, "Draft") != 0 && strcmp(status, "Open") != 0))
    {
        return "not Draft or Open";
    }

    if (json_is_true(json_object_get(doc, "fullyShipped"))) {
        return "shipped";
    }

    lines = json_object_get(doc, "salesOrderLines");

    if (!json_is_array(lines)) {
        return "lines unknown";
    }

    json_array_foreach(lines, i, line) {
        if (json_number_value(json_object_get(line, "shippedQuantity")) > 0
            || json_number_value(json_object_get(line, "invoicedQuantity"))
               > 0)
        {
            return "shipped or invoiced in part";
        }
    }

    if (json_string_value(json_object_get(doc, "@odata.etag")) == NULL) {
        return "no ETag";
    }

    return NULL;
}


/*
 * Check one order: its open copies in BC, and what to do about extra
 * ones.  Returns 0, or -1 when BC or PostgreSQL failed (err).
 */
static int
sbw_dupcheck_order(sbw_bc_t *bc, PGconn *pg, int remove,
    const char *order_id, const char *shop, const char *extdoc,
    const char *ledger_bc_id, json_t *report, sbw_dupcheck_stats_t *st,
    char *err, size_t errlen)
{
    int              n, removed, kept;
    char            *quoted, *filter, *esc, *path, msg[1024], copies[16];
    size_t           i, ncopies, used;
    json_t          *rows, **docs, *finding, *list, *item;
    const char      *why, *id, *number, *etag, *params[3];
    PGresult        *res2;
    sbw_bc_class_e   cls;
    sbw_bc_result_t  res;
    sbw_dlq_item_t   it;
    long long        dl_id;

    memset(&res, 0, sizeof(res));
    res.retry_after_ms = -1;

    quoted = sbw_odata_quote(extdoc);
    if (quoted == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    n = snprintf(NULL, 0, "externalDocumentNumber eq %s", quoted);
    filter = malloc((size_t) n + 1);

    if (filter == NULL) {
        free(quoted);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    snprintf(filter, (size_t) n + 1, "externalDocumentNumber eq %s", quoted);
    free(quoted);

    esc = curl_easy_escape(bc->curl, filter, 0);
    free(filter);

    if (esc == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    n = snprintf(NULL, 0, "/salesOrders?$filter=%s&$expand=salesOrderLines",
                 esc);
    path = malloc((size_t) n + 1);

    if (path == NULL) {
        curl_free(esc);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    snprintf(path, (size_t) n + 1,
             "/salesOrders?$filter=%s&$expand=salesOrderLines", esc);
    curl_free(esc);

    cls = sbw_bc_request(bc, "duplicate_check", "GET", path, NULL, NULL,
                         &res);
    free(path);

    rows = json_object_get(res.body, "value");

    if (cls != SBW_BC_OK || !json_is_array(rows)) {
        snprintf(err, errlen, "looking up %s: %s %s", extdoc,
                 res.error_code[0] ? res.error_code : "no value array",
                 res.error_message);
        sbw_bc_result_clear(&res);
        return -1;
    }

    st->checked++;
    ncopies = json_array_size(rows);
    snprintf(copies, sizeof(copies), "%zu", ncopies);

    params[0] = order_id;
    params[1] = copies;

    PQclear(PQexecParams(pg,
        "INSERT INTO bc_duplicate_checks (shopify_order_id, checked_at,"
        " copies) VALUES ($1::bigint, clock_timestamp(), $2::integer)"
        " ON CONFLICT (shopify_order_id) DO UPDATE"
        " SET checked_at = EXCLUDED.checked_at, copies = EXCLUDED.copies",
        2, NULL, params, NULL, NULL, 0));

    if (ncopies < 2) {
        sbw_bc_result_clear(&res);
        return 0;
    }

    docs = calloc(ncopies, sizeof(json_t *));
    if (docs == NULL) {
        sbw_bc_result_clear(&res);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for (i = 0; i < ncopies; i++) {
        docs[i] = json_incref(json_array_get(rows, i));
    }

    sbw_bc_result_clear(&res);
    qsort(docs, ncopies, sizeof(json_t *), sbw_dupcheck_copy_cmp);

    finding = json_pack("{s:s,s:s,s:s,s:[]}", "order", order_id,
                        "shop", shop, "external_document_number", extdoc,
                        "copies");
    list = json_object_get(finding, "copies");

    removed = 0;
    kept = 0;
    used = (size_t) snprintf(msg, sizeof(msg), "%zu open BC orders carry "
                             "%s:", ncopies, extdoc);

    for (i = 0; i < ncopies; i++) {
        id = json_string_value(json_object_get(docs[i], "id"));
        number = json_string_value(json_object_get(docs[i], "number"));
        etag = json_string_value(json_object_get(docs[i], "@odata.etag"));

        if (id == NULL || number == NULL) {
            id = id ? id : "";
            number = number ? number : "";
        }

        if (i == 0) {
            why = "kept: the oldest";

        } else if (!remove) {
            why = "kept: removal is off";
            kept++;

        } else if ((why = sbw_dupcheck_unsafe(docs[i])) != NULL) {
            kept++;

        } else {
            n = snprintf(NULL, 0, "/salesOrders(%s)", id);
            path = malloc((size_t) n + 1);

            if (path == NULL) {
                why = "kept: out of memory";
                kept++;

            } else {
                snprintf(path, (size_t) n + 1, "/salesOrders(%s)", id);
                cls = sbw_bc_request(bc, "duplicate_delete", "DELETE", path,
                                     NULL, etag, &res);
                free(path);

                if (cls == SBW_BC_OK) {
                    why = "removed";
                    removed++;

                } else {
                    why = "kept: BC refused the delete";
                    kept++;
                }

                sbw_bc_result_clear(&res);
            }
        }

        item = json_pack("{s:s,s:s,s:s?,s:s}", "number", number, "id", id,
                         "status", json_string_value(
                             json_object_get(docs[i], "status")),
                         "action", why);
        json_array_append_new(list, item);

        if (used < sizeof(msg)) {
            used += (size_t) snprintf(msg + used, sizeof(msg) - used,
                                      "%s %s (%s)", i ? "," : "", number,
                                      why);
        }

        /* the ledger must name a copy that still exists */
        if (strcmp(why, "removed") == 0 && strcmp(id, ledger_bc_id) == 0) {
            params[0] = order_id;
            params[1] = json_string_value(json_object_get(docs[0], "id"));
            params[2] = json_string_value(json_object_get(docs[0],
                                                          "number"));
            PQclear(PQexecParams(pg,
                "UPDATE bc_order_ledger SET bc_id = $2, bc_number = $3"
                " WHERE shopify_order_id = $1::bigint",
                3, NULL, params, NULL, NULL, 0));
        }
    }

    st->found += (int) ncopies - 1;
    st->removed += removed;
    st->kept += kept;

    for (i = 0; i < ncopies - 1; i++) {
        sbw_metrics_duplicate("found");
    }

    for (i = 0; i < (size_t) removed; i++) {
        sbw_metrics_duplicate("removed");
    }

    for (i = 0; i < (size_t) kept; i++) {
        sbw_metrics_duplicate("kept");
    }

    sbw_log(SBW_LOG_WARN, "duplicate_order_found",
            json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:s}",
                      "order", order_id, "shop", shop,
                      "external_document_number", extdoc,
                      "copies", (json_int_t) ncopies,
                      "removed", (json_int_t) removed,
                      "kept", (json_int_t) kept, "message", msg));

    /* the audit record, where an operator looks */
    memset(&it, 0, sizeof(it));
    it.shop = shop;
    it.order_id = strtoll(order_id, NULL, 10);
    it.code = "Worker_DuplicateOrder";
    it.message = msg;
    it.attempts = (int) ncopies;
    it.status = kept > 0 ? "open" : "resolved";

    /* an open record of this order from an earlier pass is updated */
    params[0] = order_id;
    params[1] = msg;
    params[2] = it.status;
    res2 = PQexecParams(pg,
        "UPDATE dead_letters SET error_message = $2, status = $3,"
        " updated_at = now(), history = history || jsonb_build_array("
        "  jsonb_build_object('at', now(), 'action', 'checked_again'))"
        " WHERE shopify_order_id = $1::bigint"
        " AND reason = 'duplicate_bc_order' AND status = 'open'"
        " RETURNING id",
        3, NULL, params, NULL, NULL, 0);

    if (res2 != NULL && PQresultStatus(res2) == PGRES_TUPLES_OK
        && PQntuples(res2) > 0)
    {
        json_object_set_new(finding, "dead_letter_id", json_integer(
            (json_int_t) strtoll(PQgetvalue(res2, 0, 0), NULL, 10)));

    } else if (sbw_dlq_add(pg, &it, &dl_id, err, errlen) == 0) {
        json_object_set_new(finding, "dead_letter_id",
                            json_integer((json_int_t) dl_id));
        sbw_metrics_dead_letter_written("duplicate_bc_order");
    }

    PQclear(res2);

    if (report != NULL) {
        json_array_append(report, finding);
    }

    json_decref(finding);

    for (i = 0; i < ncopies; i++) {
        json_decref(docs[i]);
    }

    free(docs);
    return 0;
}


/*
 * One pass.  all: every order with more than one attempt, checked or
 * not, at once (the command line); otherwise only those not checked
 * since their last attempt, and only once BC365_INDOUBT_WAIT_MS have
 * passed since it.  remove: delete safe extra copies.  report (may be
 * NULL) receives one object per order with duplicates.
 */
int
sbw_dupcheck_run(sbw_bc_t *bc, PGconn *pg, const sbw_config_t *conf,
    int all, int remove, json_t *report, sbw_dupcheck_stats_t *st,
    char *err, size_t errlen)
{
    int          i, rows, rc;
    char         wait[32];
    PGresult    *res;
    const char  *params[2], *company;

    memset(st, 0, sizeof(*st));

    snprintf(wait, sizeof(wait), "%ld", conf->indoubt_wait_ms);
    params[0] = all ? "t" : "f";
    params[1] = wait;

    res = PQexecParams(pg,
        "SELECT shopify_order_id, shop, external_document_number,"
        " coalesce(bc_id, ''),"
        " coalesce((SELECT bc_company_id FROM bc_order_sync s"
        "           WHERE s.shopify_order_id = l.shopify_order_id), '')"
        " FROM bc_order_ledger l"
        " WHERE state = 'created' AND attempts > 1"
        " AND ($1::boolean OR (last_attempt_at < clock_timestamp()"
        "      - $2::bigint * interval '1 millisecond'"
        "  AND NOT EXISTS (SELECT 1 FROM bc_duplicate_checks c"
        "   WHERE c.shopify_order_id = l.shopify_order_id"
        "   AND c.checked_at >= l.last_attempt_at)))"
        " ORDER BY last_attempt_at LIMIT 500",
        2, NULL, params, NULL, NULL, 0);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", res ? PQresultErrorMessage(res)
                                        : PQerrorMessage(pg));
        PQclear(res);
        return -1;
    }

    rows = PQntuples(res);
    rc = 0;

    for (i = 0; i < rows; i++) {
        /* the order's own company (orders_sync.c), else its shop's */
        company = PQgetvalue(res, i, 4);

        if (company[0] == '\0') {
            company = sbw_company_for_shop(conf, PQgetvalue(res, i, 1));
        }

        if (sbw_bc_set_company(bc, company) != 0) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
            break;
        }

        rc = sbw_dupcheck_order(bc, pg, remove, PQgetvalue(res, i, 0),
                                PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                                PQgetvalue(res, i, 3), report, st, err,
                                errlen);
        if (rc != 0) {
            break;
        }
    }

    PQclear(res);
    return rc;
}
