/*
 * Dead-letter store in PostgreSQL (libpq).
 *
 * The payload is kept as Shopify sent it, byte for byte: as text when it
 * is valid UTF-8 without NUL bytes (every JSON body is), else base64
 * (payload_encoding says which), so that nothing is lost even for an
 * entry that is not JSON at all.  History is a JSON array of events
 * ({"at","action",...}) appended by the worker and the command line.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "dlq.h"
#include "errclass.h"
#include "pg.h"


/* the same transaction lock as the ledger's migration (ledger.c) */
#define SBW_MIGRATE_LOCK_SQL  "SELECT pg_advisory_xact_lock(7426337)"


static const char  sbw_dlq_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "  component   text        NOT NULL,"
    "  version     integer     NOT NULL,"
    "  applied_at  timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (component, version)"
    ");"
    "CREATE TABLE IF NOT EXISTS dead_letters ("
    "  id                bigserial   PRIMARY KEY,"
    "  shop              text,"
    "  shopify_order_id  bigint,"
    "  webhook_id        text,"
    "  topic             text,"
    "  stream_id         text,"
    "  reason            text        NOT NULL,"
    "  error_code        text,"
    "  error_message     text,"
    "  correlation_id    text,"
    "  payload           text,"
    "  payload_encoding  text        NOT NULL DEFAULT 'text'"
    "    CHECK (payload_encoding IN ('text', 'base64')),"
    "  api_version       text,"
    "  triggered_at      text,"
    "  event_id          text,"
    "  received_at       text,"
    "  attempts          integer     NOT NULL DEFAULT 0,"
    "  status            text        NOT NULL DEFAULT 'open'"
    "    CHECK (status IN ('open', 'retried', 'resolved', 'discarded')),"
    "  history           jsonb       NOT NULL DEFAULT '[]',"
    "  created_at        timestamptz NOT NULL DEFAULT now(),"
    "  updated_at        timestamptz NOT NULL DEFAULT now()"
    ");"
    "CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_stream_id_key"
    "  ON dead_letters (stream_id);"
    "CREATE INDEX IF NOT EXISTS dead_letters_status_idx"
    "  ON dead_letters (status, reason);"
    "CREATE INDEX IF NOT EXISTS dead_letters_order_idx"
    "  ON dead_letters (shopify_order_id);"
    "CREATE TABLE IF NOT EXISTS bc_duplicate_checks ("
    "  shopify_order_id  bigint      PRIMARY KEY,"
    "  checked_at        timestamptz NOT NULL DEFAULT now(),"
    "  copies            integer     NOT NULL"
    ");"
    "INSERT INTO schema_version (component, version)"
    "  VALUES ('dead-letters', 1) ON CONFLICT DO NOTHING";


static int sbw_dlq_params(PGconn *pg, const char *sql, int n,
    const char *const *params, ExecStatusType want, PGresult **out,
    char *err, size_t errlen);


/*
 * Run statements without parameters (BEGIN, COMMIT, ROLLBACK, DDL).
 */
int
sbw_dlq_exec(PGconn *pg, const char *sql, char *err, size_t errlen)
{
    PGresult        *res;
    ExecStatusType   st;

    if (pg == NULL) {
        snprintf(err, errlen, "no connection");
        return -1;
    }

    res = PQexec(pg, sql);
    st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        sbw_pg_error(pg, res, err, errlen);
        PQclear(res);
        return -1;
    }

    PQclear(res);
    return 0;
}


static int
sbw_dlq_params(PGconn *pg, const char *sql, int n, const char *const *params,
    ExecStatusType want, PGresult **out, char *err, size_t errlen)
{
    return sbw_pg_exec(pg, sql, n, params,
                       want == PGRES_TUPLES_OK ? SBW_PG_TUPLES
                                               : SBW_PG_COMMAND,
                       out, err, errlen);
}


/*
 * Create the tables of component "dead-letters" if needed, in one
 * transaction under the migration lock the ledger uses.
 */
int
sbw_dlq_migrate(PGconn *pg, char *err, size_t errlen)
{
    if (sbw_dlq_exec(pg, "BEGIN", err, errlen) != 0) {
        return -1;
    }

    if (sbw_dlq_exec(pg, SBW_MIGRATE_LOCK_SQL, err, errlen) != 0
        || sbw_dlq_exec(pg, sbw_dlq_schema_sql, err, errlen) != 0
        || sbw_dlq_exec(pg, "COMMIT", err, errlen) != 0)
    {
        PQclear(PQexec(pg, "ROLLBACK"));
        return -1;
    }

    return 0;
}


/*
 * Whether bytes can be stored as PostgreSQL text: valid UTF-8 (no
 * overlong forms, no surrogates) and no NUL byte.
 */
int
sbw_dlq_text_ok(const char *s, size_t len)
{
    size_t          i, n, k;
    unsigned int    cp;
    unsigned char   c;

    for (i = 0; i < len; i += n) {
        c = (unsigned char) s[i];

        if (c == 0) {
            return 0;
        }

        if (c < 0x80) {
            n = 1;
            continue;
        }

        if ((c & 0xe0) == 0xc0) {
            n = 2;
            cp = c & 0x1f;

        } else if ((c & 0xf0) == 0xe0) {
            n = 3;
            cp = c & 0x0f;

        } else if ((c & 0xf8) == 0xf0) {
            n = 4;
            cp = c & 0x07;

        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            c = (unsigned char) s[i + k];

            if ((c & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (c & 0x3f);
        }

        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
            || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
            || (cp >= 0xd800 && cp <= 0xdfff))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * Whether s is a dead letter id: 1 to 18 digits.
 */
int
sbw_dlq_id_ok(const char *s)
{
    size_t  n;

    n = strspn(s, "0123456789");

    return n > 0 && n <= 18 && s[n] == '\0';
}


/*
 * Record a dead letter and return its id.  For an entry that is itself
 * a replay of a dead letter (dead_letter_id), that row is reopened with
 * the new error instead of a new row being added; the same entry
 * recorded twice (its acknowledgement was lost) changes nothing.  An
 * entry already recorded under its stream id returns the existing row.
 * The caller decides the transaction: on its own the statement commits
 * by itself.
 */
int
sbw_dlq_add(PGconn *pg, const sbw_dlq_item_t *it, long long *id,
    char *err, size_t errlen)
{
    int                 rc;
    char                oid[32], attempts[16], *b64;
    size_t              blen;
    PGresult           *res;
    const char         *params[17], *payload, *encoding;
    const sbw_entry_t  *e;

    e = it->entry;
    b64 = NULL;
    payload = NULL;
    encoding = "text";
    *id = 0;

    if (e != NULL && e->body != NULL) {
        blen = e->body_len;

        if (sbw_dlq_text_ok(e->body, blen)) {
            payload = e->body;

        } else {
            b64 = malloc(4 * ((blen + 2) / 3) + 1);
            if (b64 == NULL) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }

            EVP_EncodeBlock((unsigned char *) b64,
                            (const unsigned char *) e->body, (int) blen);
            payload = b64;
            encoding = "base64";
        }
    }

    snprintf(oid, sizeof(oid), "%lld", (long long) it->order_id);
    snprintf(attempts, sizeof(attempts), "%d", it->attempts);

    /* a replay that failed again: reopen its dead letter */
    if (e != NULL && e->dead_letter_id != NULL
        && sbw_dlq_id_ok(e->dead_letter_id))
    {
        params[0] = e->dead_letter_id;
        params[1] = sbw_dlq_reason(it->code);
        params[2] = it->code;
        params[3] = it->message;
        params[4] = it->correlation_id ? it->correlation_id : "";
        params[5] = payload;
        params[6] = encoding;
        params[7] = e->id;
        params[8] = attempts;

        rc = sbw_dlq_params(pg,
            "WITH upd AS ("
            " UPDATE dead_letters SET status = 'open', reason = $2,"
            "  error_code = $3, error_message = $4,"
            "  correlation_id = nullif($5, ''), payload = $6,"
            "  payload_encoding = $7, stream_id = $8,"
            "  attempts = $9::integer, updated_at = now(),"
            "  history = history || jsonb_build_array(jsonb_build_object("
            "   'at', now(), 'action', 'failed_again', 'error_code', $3::text,"
            "   'stream_id', $8::text))"
            " WHERE id = $1::bigint AND stream_id IS DISTINCT FROM $8"
            " RETURNING id)"
            " SELECT id FROM upd UNION ALL"
            " SELECT id FROM dead_letters"
            "  WHERE id = $1::bigint AND stream_id = $8",
            9, params, PGRES_TUPLES_OK, &res, err, errlen);

        if (rc != 0) {
            free(b64);
            return -1;
        }

        if (PQntuples(res) > 0) {
            *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            PQclear(res);
            free(b64);
            return 0;
        }

        PQclear(res);

        /* no such dead letter any more: a new one */
    }

    params[0] = it->shop ? it->shop : (e ? e->shop : NULL);
    params[1] = it->order_id > 0 ? oid : NULL;
    params[2] = e ? e->webhook_id : NULL;
    params[3] = e ? e->topic : NULL;
    params[4] = e ? e->id : NULL;
    params[5] = sbw_dlq_reason(it->code);
    params[6] = it->code;
    params[7] = it->message;
    params[8] = it->correlation_id && it->correlation_id[0]
                ? it->correlation_id : NULL;
    params[9] = payload;
    params[10] = encoding;
    params[11] = e ? e->api_version : NULL;
    params[12] = e ? e->triggered_at : NULL;
    params[13] = e ? e->event_id : NULL;
    params[14] = e ? e->received_at : NULL;
    params[15] = attempts;
    params[16] = it->status ? it->status : "open";

    rc = sbw_dlq_params(pg,
        "WITH ins AS ("
        " INSERT INTO dead_letters (shop, shopify_order_id, webhook_id,"
        "  topic, stream_id, reason, error_code, error_message,"
        "  correlation_id, payload, payload_encoding, api_version,"
        "  triggered_at, event_id, received_at, attempts, status, history)"
        " VALUES ($1, $2::bigint, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
        "  $12, $13, $14, $15, $16::integer, $17,"
        "  jsonb_build_array(jsonb_build_object('at', now(),"
        "   'action', 'dead_lettered', 'error_code', $7::text)))"
        " ON CONFLICT (stream_id) DO NOTHING RETURNING id)"
        " SELECT id FROM ins UNION ALL"
        " SELECT id FROM dead_letters WHERE stream_id = $5",
        17, params, PGRES_TUPLES_OK, &res, err, errlen);

    free(b64);

    if (rc != 0) {
        return -1;
    }

    if (PQntuples(res) < 1) {
        snprintf(err, errlen, "dead letter insert returned no row");
        PQclear(res);
        return -1;
    }

    *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);

    return 0;
}


/*
 * A replayed dead letter reached BC (created, found, or already there):
 * it is resolved.  Only a dead letter still waiting for its replay's
 * outcome changes.
 */
int
sbw_dlq_resolved(PGconn *pg, const char *dead_letter_id,
    const char *bc_number, char *err, size_t errlen)
{
    const char  *params[2];

    params[0] = dead_letter_id;
    params[1] = bc_number ? bc_number : "";

    return sbw_dlq_params(pg,
        "UPDATE dead_letters SET status = 'resolved', updated_at = now(),"
        " history = history || jsonb_build_array(jsonb_build_object("
        "  'at', now(), 'action', 'resolved', 'bc_number', $2::text))"
        " WHERE id = $1::bigint AND status IN ('open', 'retried')",
        2, params, PGRES_COMMAND_OK, NULL, err, errlen);
}


/*
 * Open dead letters by reason, for the bc_dead_letters gauge (every
 * reason present in the table, 0 when none of its dead letters is
 * open): at most max reasons, copied into reasons[i].
 */
int
sbw_dlq_open_counts(PGconn *pg, char (*reasons)[SBW_DLQ_REASON_LEN],
    long long *counts, size_t max, size_t *n, char *err, size_t errlen)
{
    int        i, rows;
    PGresult  *res;

    *n = 0;

    if (sbw_dlq_params(pg,
            "SELECT reason, count(*) FILTER (WHERE status = 'open')"
            " FROM dead_letters GROUP BY reason ORDER BY reason",
            0, NULL, PGRES_TUPLES_OK, &res, err, errlen) != 0)
    {
        return -1;
    }

    rows = PQntuples(res);

    for (i = 0; i < rows && (size_t) i < max; i++) {
        snprintf(reasons[i], SBW_DLQ_REASON_LEN, "%s",
                 PQgetvalue(res, i, 0));
        counts[i] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        (*n)++;
    }

    PQclear(res);
    return 0;
}
