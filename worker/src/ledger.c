/*
 * Order ledger in PostgreSQL (libpq).
 *
 * Every state change is a single autocommitted statement, durable when
 * the call returns (synchronous_commit is left at its default).  Mutual
 * exclusion between workers is a session-level advisory lock per order,
 * held across the BC call: it survives the commits made while it is
 * held, and PostgreSQL drops it by itself if the worker's session dies.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger.h"
#include "log.h"


/* key of the transaction lock serialising schema migrations */
#define SBW_MIGRATE_LOCK  7426337


static const char  sbw_schema_version_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "  component   text        NOT NULL,"
    "  version     integer     NOT NULL,"
    "  applied_at  timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (component, version)"
    ")";


/*
 * Version 2 from nothing.  The columns are those of version 1, in the
 * same order, so that a migrated table and a new one look the same.
 */
static const char  sbw_schema_v2_sql[] =
    "CREATE TABLE IF NOT EXISTS bc_order_ledger ("
    "  shop                      text        NOT NULL,"
    "  shopify_order_id          bigint      NOT NULL,"
    "  shopify_order_name        text        NOT NULL DEFAULT '',"
    "  external_document_number  text        NOT NULL,"
    "  state                     text        NOT NULL DEFAULT 'new'"
    "    CHECK (state IN ('new', 'attempting', 'created', 'failed')),"
    "  in_doubt                  boolean     NOT NULL DEFAULT false,"
    "  attempts                  integer     NOT NULL DEFAULT 0,"
    "  attempt_owner             text,"
    "  bc_document_type          text,"
    "  bc_id                     text,"
    "  bc_number                 text,"
    "  resolved_by               text,"
    "  error_code                text,"
    "  error_message             text,"
    "  first_webhook_id          text,"
    "  last_webhook_id           text,"
    "  last_stream_id            text,"
    "  first_seen_at             timestamptz NOT NULL DEFAULT now(),"
    "  last_seen_at              timestamptz NOT NULL DEFAULT now(),"
    "  last_attempt_at           timestamptz,"
    "  next_attempt_at           timestamptz,"
    "  completed_at              timestamptz,"
    "  PRIMARY KEY (shopify_order_id)"
    ");"
    "CREATE INDEX IF NOT EXISTS bc_order_ledger_open_idx"
    "  ON bc_order_ledger (state) WHERE state <> 'created';"
    "CREATE INDEX IF NOT EXISTS bc_order_ledger_extdoc_idx"
    "  ON bc_order_ledger (external_document_number);"
    "INSERT INTO schema_version (component, version)"
    "  VALUES ('worker', 2) ON CONFLICT DO NOTHING";


/*
 * Version 1 keyed the ledger by (shop, order id), so one order delivered
 * under two shop names could have two rows.  Before the key becomes the
 * order id, every order keeps one row: the one that knows the most
 * (created, then an attempt in doubt, then attempting, new, failed; the
 * oldest among equals).  The others are moved, not lost, to
 * bc_order_ledger_v1_duplicates.
 */
static const char  sbw_v1_duplicates_sql[] =
    "SELECT count(*) - count(DISTINCT shopify_order_id)"
    "  FROM bc_order_ledger";

static const char  sbw_v1_archive_sql[] =
    "CREATE TABLE IF NOT EXISTS bc_order_ledger_v1_duplicates ("
    "  LIKE bc_order_ledger,"
    "  archived_at  timestamptz NOT NULL DEFAULT now()"
    ");"
    "WITH ranked AS ("
    "  SELECT ctid AS row_ctid, row_number() OVER ("
    "    PARTITION BY shopify_order_id"
    "    ORDER BY state = 'created' DESC, in_doubt DESC,"
    "             state = 'attempting' DESC, state = 'new' DESC,"
    "             first_seen_at, shop) AS rank"
    "  FROM bc_order_ledger"
    "), moved AS ("
    "  DELETE FROM bc_order_ledger l USING ranked r"
    "  WHERE l.ctid = r.row_ctid AND r.rank > 1"
    "  RETURNING l.*"
    ")"
    "INSERT INTO bc_order_ledger_v1_duplicates SELECT *, now() FROM moved";

static const char  sbw_v1_to_v2_sql[] =
    "ALTER TABLE bc_order_ledger"
    "  DROP CONSTRAINT IF EXISTS bc_order_ledger_pkey;"
    "UPDATE bc_order_ledger SET shop = lower(shop) WHERE shop <> lower(shop);"
    "ALTER TABLE bc_order_ledger"
    "  ADD CONSTRAINT bc_order_ledger_pkey PRIMARY KEY (shopify_order_id)";


/*
 * Key of the advisory lock of an order.  The prefix keeps it apart from
 * other users of advisory locks in the same database.
 */
#define SBW_ORDER_LOCK_KEY  "hashtextextended('bc_order_ledger/' || $1, 0)"


static int sbw_ledger_run(sbw_ledger_t *l, const char *sql,
    ExecStatusType want, long long *value);
static int sbw_ledger_ok(sbw_ledger_t *l, PGresult *res, ExecStatusType want);
static int sbw_ledger_exec(sbw_ledger_t *l, const char *sql, int n,
    const char *const *params, ExecStatusType want, PGresult **out);
static void sbw_ledger_err(sbw_ledger_t *l, const char *what);
static void sbw_copy_field(PGresult *res, int col, char *dst, size_t len);
static void sbw_ledger_tidy(char *s);
static void sbw_ledger_notice(void *arg, const char *message);


/*
 * libpq messages span lines ("...\n\tThis probably means...\n"); a log
 * field should not.  Turn the layout into single spaces, in place.
 */
static void
sbw_ledger_tidy(char *s)
{
    char  *r, *w;
    int    space;

    space = 1;

    for (r = s, w = s; *r; r++) {
        if (*r == '\n' || *r == '\t' || *r == '\r' || *r == ' ') {
            if (!space) {
                *w++ = ' ';
            }

            space = 1;
            continue;
        }

        *w++ = *r;
        space = 0;
    }

    if (w > s && w[-1] == ' ') {
        w--;
    }

    *w = '\0';
}


/*
 * Server notices (such as "relation already exists, skipping" from the
 * migration) would otherwise go to stderr as plain text between the
 * JSON lines: they become debug log lines.
 */
static void
sbw_ledger_notice(void *arg, const char *message)
{
    char  buf[512];

    (void) arg;

    if (!sbw_log_enabled(SBW_LOG_DEBUG)) {
        return;
    }

    snprintf(buf, sizeof(buf), "%s", message);
    sbw_ledger_tidy(buf);
    sbw_log(SBW_LOG_DEBUG, "postgres_notice",
            json_pack("{s:s}", "message", buf));
}


static void
sbw_ledger_err(sbw_ledger_t *l, const char *what)
{
    const char  *msg;

    msg = l->conn ? PQerrorMessage(l->conn) : "no connection";

    snprintf(l->errstr, sizeof(l->errstr), "%s: %s", what, msg);
    sbw_ledger_tidy(l->errstr);
}


/*
 * Make sure there is a working connection, opening a new one if needed.
 * Returns 0 or -1 with errstr set.  Never called while an order lock is
 * held: a new session would not own that lock.
 */
int
sbw_ledger_connect(sbw_ledger_t *l)
{
    if (l->conn != NULL && PQstatus(l->conn) == CONNECTION_OK) {
        return 0;
    }

    sbw_ledger_close(l);

    l->conn = PQconnectdb(l->url);

    if (l->conn == NULL || PQstatus(l->conn) != CONNECTION_OK) {
        sbw_ledger_err(l, "cannot connect to PostgreSQL");
        sbw_ledger_close(l);
        return -1;
    }

    PQsetNoticeProcessor(l->conn, sbw_ledger_notice, NULL);

    return 0;
}


void
sbw_ledger_close(sbw_ledger_t *l)
{
    if (l->conn != NULL) {
        PQfinish(l->conn);
        l->conn = NULL;
    }
}


/*
 * Check a result's status; on mismatch record the server's message and
 * free the result.
 */
static int
sbw_ledger_ok(sbw_ledger_t *l, PGresult *res, ExecStatusType want)
{
    const char  *msg;

    if (res != NULL && PQresultStatus(res) == want) {
        return 0;
    }

    msg = res ? PQresultErrorMessage(res) : "";

    if (msg == NULL || *msg == '\0') {
        msg = l->conn ? PQerrorMessage(l->conn) : "no connection";
    }

    snprintf(l->errstr, sizeof(l->errstr), "%s", msg);
    sbw_ledger_tidy(l->errstr);

    PQclear(res);
    return -1;
}


/*
 * Run one parameterised statement (all parameters as text).  The result
 * is returned in *out when out is not NULL, else freed.
 */
static int
sbw_ledger_exec(sbw_ledger_t *l, const char *sql, int n,
    const char *const *params, ExecStatusType want, PGresult **out)
{
    PGresult  *res;

    if (l->conn == NULL) {
        snprintf(l->errstr, sizeof(l->errstr), "no connection");
        return -1;
    }

    res = PQexecParams(l->conn, sql, n, NULL, params, NULL, NULL, 0);

    if (sbw_ledger_ok(l, res, want) != 0) {
        return -1;
    }

    if (out != NULL) {
        *out = res;

    } else {
        PQclear(res);
    }

    return 0;
}


/*
 * Run one statement string without parameters (several statements are
 * allowed when want is PGRES_COMMAND_OK).  With value, the first column
 * of the single row it returns is read as an integer.
 */
static int
sbw_ledger_run(sbw_ledger_t *l, const char *sql, ExecStatusType want,
    long long *value)
{
    PGresult  *res;

    res = PQexec(l->conn, sql);
    if (sbw_ledger_ok(l, res, want) != 0) {
        return -1;
    }

    if (value != NULL) {
        if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
            snprintf(l->errstr, sizeof(l->errstr), "no value from: %.60s",
                     sql);
            PQclear(res);
            return -1;
        }

        *value = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    }

    PQclear(res);
    return 0;
}


/*
 * Bring the schema to SBW_LEDGER_SCHEMA_VERSION: create it when there is
 * none, or migrate a version 1 ledger (key (shop, order id)) to version
 * 2 (key order id, shops in lower case).  *from_version says what was
 * found (0: nothing), *archived how many version 1 rows were moved to
 * bc_order_ledger_v1_duplicates.  Several workers may start at once, and
 * concurrent CREATE TABLE IF NOT EXISTS can still collide in the
 * catalog, so everything runs in one transaction under a
 * transaction-level advisory lock: the migration is whole or not at all.
 * A schema newer than this worker's is refused.
 */
int
sbw_ledger_migrate(sbw_ledger_t *l, int *from_version, long long *archived)
{
    char       sql[64];
    long long  version, has_table;

    *from_version = 0;
    *archived = 0;

    if (sbw_ledger_run(l, "BEGIN", PGRES_COMMAND_OK, NULL) != 0) {
        return -1;
    }

    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%d)",
             SBW_MIGRATE_LOCK);

    if (sbw_ledger_run(l, sql, PGRES_TUPLES_OK, NULL) != 0
        || sbw_ledger_run(l, sbw_schema_version_sql, PGRES_COMMAND_OK, NULL)
           != 0
        || sbw_ledger_run(l, "SELECT coalesce(max(version), 0)"
                          " FROM schema_version WHERE component = 'worker'",
                          PGRES_TUPLES_OK, &version) != 0
        || sbw_ledger_run(l, "SELECT (to_regclass('bc_order_ledger')"
                          " IS NOT NULL)::int",
                          PGRES_TUPLES_OK, &has_table) != 0)
    {
        goto failed;
    }

    if (version > SBW_LEDGER_SCHEMA_VERSION) {
        snprintf(l->errstr, sizeof(l->errstr), "the ledger has schema "
                 "version %lld, newer than this worker's %d", version,
                 SBW_LEDGER_SCHEMA_VERSION);
        goto failed;
    }

    /* a table without version 2 recorded is taken as version 1 */
    if (has_table && version < 2) {
        *from_version = 1;

        if (sbw_ledger_run(l, sbw_v1_duplicates_sql, PGRES_TUPLES_OK,
                           archived) != 0
            || (*archived > 0
                && sbw_ledger_run(l, sbw_v1_archive_sql, PGRES_COMMAND_OK,
                                  NULL) != 0)
            || sbw_ledger_run(l, sbw_v1_to_v2_sql, PGRES_COMMAND_OK, NULL)
               != 0)
        {
            goto failed;
        }

    } else if (has_table) {
        *from_version = (int) version;
    }

    if (sbw_ledger_run(l, sbw_schema_v2_sql, PGRES_COMMAND_OK, NULL) != 0
        || sbw_ledger_run(l, "COMMIT", PGRES_COMMAND_OK, NULL) != 0)
    {
        goto failed;
    }

    return 0;

failed:

    PQclear(PQexec(l->conn, "ROLLBACK"));
    return -1;
}


/*
 * Try to take the order's advisory lock without waiting.  Returns 1 when
 * taken, 0 when another session holds it (another worker is on this
 * order right now), -1 on error.  The key is the order id alone, like
 * the ledger's: deliveries of one order under different shop names are
 * kept apart too.
 */
int
sbw_ledger_lock(sbw_ledger_t *l, int64_t order_id)
{
    int          got;
    char         id[32];
    PGresult    *res;
    const char  *params[1];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    params[0] = id;

    if (sbw_ledger_exec(l, "SELECT pg_try_advisory_lock("
                        SBW_ORDER_LOCK_KEY ")",
                        1, params, PGRES_TUPLES_OK, &res) != 0)
    {
        return -1;
    }

    got = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);

    return got;
}


int
sbw_ledger_unlock(sbw_ledger_t *l, int64_t order_id)
{
    char         id[32];
    const char  *params[1];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    params[0] = id;

    return sbw_ledger_exec(l, "SELECT pg_advisory_unlock("
                           SBW_ORDER_LOCK_KEY ")",
                           1, params, PGRES_TUPLES_OK, NULL);
}


static void
sbw_copy_field(PGresult *res, int col, char *dst, size_t len)
{
    const char  *v;

    v = PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col);
    snprintf(dst, len, "%s", v);
}


/*
 * Insert the order's row if it is new, note the delivery if not, and
 * return the row.  The externalDocumentNumber and the shop stored the
 * first time are kept and returned, so every later attempt and lookup
 * uses exactly the same values, whatever shop a later delivery names.
 * shop is expected in lower case.
 */
int
sbw_ledger_claim(sbw_ledger_t *l, const char *shop, int64_t order_id,
    const char *order_name, const char *external_doc,
    const char *webhook_id, const char *stream_id, sbw_ledger_row_t *row)
{
    char         id[32];
    PGresult    *res;
    const char  *params[6];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    params[0] = shop;
    params[1] = id;
    params[2] = order_name;
    params[3] = external_doc;
    params[4] = webhook_id;
    params[5] = stream_id;

    if (sbw_ledger_exec(l,
            "INSERT INTO bc_order_ledger AS l (shop, shopify_order_id,"
            " shopify_order_name, external_document_number,"
            " first_webhook_id, last_webhook_id, last_stream_id)"
            " VALUES ($1, $2::bigint, $3, $4, $5, $5, $6)"
            " ON CONFLICT (shopify_order_id) DO UPDATE"
            " SET last_seen_at = now(),"
            "     last_webhook_id = EXCLUDED.last_webhook_id,"
            "     last_stream_id = EXCLUDED.last_stream_id"
            " RETURNING shop, state, attempts, in_doubt,"
            " coalesce((extract(epoch FROM clock_timestamp()"
            "   - last_attempt_at) * 1000)::bigint, -1),"
            " coalesce(attempt_owner, ''), external_document_number,"
            " coalesce(bc_number, ''), coalesce(bc_id, ''),"
            " coalesce(error_code, '')",
            6, params, PGRES_TUPLES_OK, &res) != 0)
    {
        return -1;
    }

    if (PQntuples(res) != 1) {
        snprintf(l->errstr, sizeof(l->errstr), "claim returned %d rows",
                 PQntuples(res));
        PQclear(res);
        return -1;
    }

    memset(row, 0, sizeof(*row));
    sbw_copy_field(res, 0, row->shop, sizeof(row->shop));
    sbw_copy_field(res, 1, row->state, sizeof(row->state));
    row->attempts = atoi(PQgetvalue(res, 0, 2));
    row->in_doubt = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    row->since_attempt_ms = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    sbw_copy_field(res, 5, row->owner, sizeof(row->owner));
    sbw_copy_field(res, 6, row->external_doc, sizeof(row->external_doc));
    sbw_copy_field(res, 7, row->bc_number, sizeof(row->bc_number));
    sbw_copy_field(res, 8, row->bc_id, sizeof(row->bc_id));
    sbw_copy_field(res, 9, row->error_code, sizeof(row->error_code));

    PQclear(res);
    return 0;
}


/*
 * Record that an attempt is starting, before the request leaves: the row
 * becomes "attempting" and in doubt, so that if the worker dies or the
 * outcome is lost the next attempt looks in BC before posting again.
 */
int
sbw_ledger_start_attempt(sbw_ledger_t *l, int64_t order_id,
    const char *owner, int *attempts)
{
    char         id[32];
    PGresult    *res;
    const char  *params[2];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    params[0] = id;
    params[1] = owner;

    if (sbw_ledger_exec(l,
            "UPDATE bc_order_ledger SET state = 'attempting',"
            " in_doubt = true, attempts = attempts + 1,"
            " attempt_owner = $2, last_attempt_at = clock_timestamp(),"
            " next_attempt_at = NULL"
            " WHERE shopify_order_id = $1::bigint"
            " AND state IN ('new', 'attempting')"
            " RETURNING attempts",
            2, params, PGRES_TUPLES_OK, &res) != 0)
    {
        return -1;
    }

    if (PQntuples(res) != 1) {
        snprintf(l->errstr, sizeof(l->errstr), "order is no longer open");
        PQclear(res);
        return -1;
    }

    *attempts = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);

    return 0;
}


/*
 * The BC document exists: record its type, id and number.  resolved_by
 * is "post" when this worker's request created it, "lookup" when it was
 * found in BC after an attempt whose outcome had been lost.
 */
int
sbw_ledger_created(sbw_ledger_t *l, int64_t order_id,
    const char *doc_type, const char *bc_id, const char *bc_number,
    const char *resolved_by)
{
    char         id[32];
    const char  *params[5];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    params[0] = id;
    params[1] = doc_type;
    params[2] = bc_id;
    params[3] = bc_number;
    params[4] = resolved_by;

    return sbw_ledger_exec(l,
            "UPDATE bc_order_ledger SET state = 'created', in_doubt = false,"
            " bc_document_type = $2, bc_id = $3, bc_number = $4,"
            " resolved_by = $5, error_code = NULL, error_message = NULL,"
            " next_attempt_at = NULL, completed_at = clock_timestamp()"
            " WHERE shopify_order_id = $1::bigint",
            5, params, PGRES_COMMAND_OK, NULL);
}


/*
 * The order cannot be booked (mapping refused it, or BC rejected it for a
 * reason retrying cannot fix).  Nothing exists in BC for it.
 */
int
sbw_ledger_failed(sbw_ledger_t *l, int64_t order_id, const char *code,
    const char *message)
{
    char         id[32];
    const char  *params[3];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    params[0] = id;
    params[1] = code;
    params[2] = message;

    return sbw_ledger_exec(l,
            "UPDATE bc_order_ledger SET state = 'failed', in_doubt = false,"
            " error_code = $2, error_message = $3, next_attempt_at = NULL,"
            " completed_at = clock_timestamp()"
            " WHERE shopify_order_id = $1::bigint",
            3, params, PGRES_COMMAND_OK, NULL);
}


/*
 * A transient failure: remember the error and when the next try is due.
 * in_doubt says whether BC may have created the order anyway (timeout,
 * 5xx, dropped connection) or certainly did not (429, refused
 * connection, authentication), which decides whether the next attempt
 * must look in BC first.
 */
int
sbw_ledger_retry(sbw_ledger_t *l, int64_t order_id, int in_doubt,
    const char *code, const char *message, long delay_ms)
{
    char         id[32], delay[32];
    const char  *params[5];

    snprintf(id, sizeof(id), "%lld", (long long) order_id);
    snprintf(delay, sizeof(delay), "%ld", delay_ms);
    params[0] = id;
    params[1] = in_doubt ? "t" : "f";
    params[2] = code;
    params[3] = message;
    params[4] = delay;

    return sbw_ledger_exec(l,
            "UPDATE bc_order_ledger SET in_doubt = $2::boolean,"
            " error_code = $3, error_message = $4,"
            " next_attempt_at = clock_timestamp()"
            "   + $5::bigint * interval '1 millisecond'"
            " WHERE shopify_order_id = $1::bigint"
            " AND state IN ('new', 'attempting')",
            5, params, PGRES_COMMAND_OK, NULL);
}
