/*
 * The shops, shop_audit and privacy_requests tables (see shops_db.h).
 *
 * Tokens are stored as the v1 blobs nginx produced or the worker
 * encrypted; nothing here sees a plaintext token.  Every change of a
 * token is a compare-and-set on the blob it replaces, so a refresh that
 * raced an uninstall, a reinstall or another refresher changes nothing.
 * Times are PostgreSQL's (now()), expiries are computed there from
 * expires_in, so the worker's clock does not matter.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"
#include "shops_db.h"


/* transaction lock serialising this component's migrations */
#define SBW_SHOPS_MIGRATE_LOCK  7426338


static const char  sbw_shops_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "  component   text        NOT NULL,"
    "  version     integer     NOT NULL,"
    "  applied_at  timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (component, version)"
    ");"
    "CREATE TABLE IF NOT EXISTS shops ("
    "  domain              text        PRIMARY KEY,"
    "  mode                text        NOT NULL DEFAULT 'oauth'"
    "    CHECK (mode IN ('oauth', 'client_credentials')),"
    "  status              text        NOT NULL DEFAULT 'active'"
    "    CHECK (status IN ('active', 'uninstalled', 'reauth_required')),"
    "  scopes              text        NOT NULL DEFAULT '',"
    "  requested_scopes    text,"
    "  access_token        text,"
    "  access_expires_at   timestamptz,"
    "  refresh_token       text,"
    "  refresh_expires_at  timestamptz,"
    "  token_obtained_at   timestamptz,"
    "  token_failures      integer     NOT NULL DEFAULT 0,"
    "  token_retry_at      timestamptz,"
    "  installed_at        timestamptz,"
    "  uninstalled_at      timestamptz,"
    "  install_webhook_id  text,"
    "  webhooks_gen        bigint      NOT NULL DEFAULT 0,"
    "  webhooks_due_at     timestamptz,"
    "  webhooks_attempts   integer     NOT NULL DEFAULT 0,"
    "  webhooks_synced_at  timestamptz,"
    "  last_error          text,"
    "  created_at          timestamptz NOT NULL DEFAULT now(),"
    "  updated_at          timestamptz NOT NULL DEFAULT now()"
    ");"
    "CREATE TABLE IF NOT EXISTS shop_audit ("
    "  id          bigserial   PRIMARY KEY,"
    "  shop        text        NOT NULL,"
    "  action      text        NOT NULL,"
    "  webhook_id  text,"
    "  detail      jsonb       NOT NULL DEFAULT '{}',"
    "  at          timestamptz NOT NULL DEFAULT now()"
    ");"
    "CREATE UNIQUE INDEX IF NOT EXISTS shop_audit_delivery_idx"
    "  ON shop_audit (action, webhook_id) WHERE webhook_id IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS shop_audit_shop_idx ON shop_audit (shop, at);"
    "CREATE TABLE IF NOT EXISTS privacy_requests ("
    "  id               bigserial   PRIMARY KEY,"
    "  shop             text        NOT NULL,"
    "  topic            text        NOT NULL,"
    "  webhook_id       text        NOT NULL UNIQUE,"
    "  customer_id      bigint,"
    "  data_request_id  bigint,"
    "  order_ids        bigint[]    NOT NULL DEFAULT '{}',"
    "  export           jsonb,"
    "  received_at      timestamptz NOT NULL DEFAULT now(),"
    "  redacted_at      timestamptz"
    ");"
    "CREATE INDEX IF NOT EXISTS privacy_requests_customer_idx"
    "  ON privacy_requests (shop, customer_id);"
    "INSERT INTO schema_version (component, version)"
    "  VALUES ('shops', 1) ON CONFLICT DO NOTHING";


static const char  sbw_shops_install_sql[] =
    "INSERT INTO shops AS s (domain, mode, status, scopes,"
    "  requested_scopes, access_token, access_expires_at, refresh_token,"
    "  refresh_expires_at, token_obtained_at, installed_at,"
    "  install_webhook_id, webhooks_gen, webhooks_due_at)"
    " VALUES ($1, 'oauth', 'active', $2, $3, $4,"
    "  to_timestamp($6::bigint / 1000.0)"
    "    + $5::bigint * interval '1 second',"
    "  $7, to_timestamp($6::bigint / 1000.0)"
    "    + $8::bigint * interval '1 second',"
    "  to_timestamp($6::bigint / 1000.0),"
    "  to_timestamp($6::bigint / 1000.0), $9, 1, now())"
    " ON CONFLICT (domain) DO UPDATE SET"
    "  mode = 'oauth', status = 'active', scopes = EXCLUDED.scopes,"
    "  requested_scopes = EXCLUDED.requested_scopes,"
    "  access_token = EXCLUDED.access_token,"
    "  access_expires_at = EXCLUDED.access_expires_at,"
    "  refresh_token = EXCLUDED.refresh_token,"
    "  refresh_expires_at = EXCLUDED.refresh_expires_at,"
    "  token_obtained_at = EXCLUDED.token_obtained_at,"
    "  token_failures = 0, token_retry_at = NULL,"
    "  installed_at = EXCLUDED.installed_at, uninstalled_at = NULL,"
    "  install_webhook_id = EXCLUDED.install_webhook_id,"
    "  webhooks_gen = s.webhooks_gen + 1, webhooks_due_at = now(),"
    "  webhooks_attempts = 0, last_error = NULL, updated_at = now()"
    " WHERE (s.installed_at IS NULL"
    "        OR s.installed_at < EXCLUDED.installed_at)"
    "   AND (s.uninstalled_at IS NULL"
    "        OR s.uninstalled_at < EXCLUDED.installed_at)"
    " RETURNING domain";


static const char  sbw_shops_uninstall_sql[] =
    "INSERT INTO shops AS s (domain, status, uninstalled_at)"
    " VALUES ($1, 'uninstalled', coalesce($3::timestamptz,"
    "                                     to_timestamp($2::bigint / 1000.0)))"
    " ON CONFLICT (domain) DO UPDATE SET"
    "  status = 'uninstalled', uninstalled_at = EXCLUDED.uninstalled_at,"
    "  access_token = NULL, access_expires_at = NULL,"
    "  refresh_token = NULL, refresh_expires_at = NULL,"
    "  token_retry_at = NULL, webhooks_due_at = NULL,"
    "  webhooks_gen = s.webhooks_gen + 1, updated_at = now()"
    " WHERE (s.installed_at IS NULL"
    "        OR s.installed_at <= EXCLUDED.uninstalled_at)"
    "   AND (s.uninstalled_at IS NULL"
    "        OR s.uninstalled_at < EXCLUDED.uninstalled_at)"
    " RETURNING domain";


static const char  sbw_shops_get_sql[] =
    "SELECT domain, mode, status, scopes, access_token, refresh_token,"
    "  CASE WHEN access_expires_at IS NULL THEN -1"
    "    ELSE greatest(0, (extract(epoch FROM access_expires_at - now())"
    "                      * 1000)::bigint) END,"
    "  webhooks_gen, token_failures, webhooks_attempts"
    " FROM shops WHERE domain = $1";


/*
 * Refreshed or new tokens, only over the blob they replace ($2: the old
 * refresh token, or for client credentials the old access token) and
 * only for an active shop.  A refresh answer without a refresh token
 * keeps the current one.
 */
static const char  sbw_shops_store_sql[] =
    "UPDATE shops SET"
    "  access_token = $3,"
    "  access_expires_at = CASE WHEN $4::bigint < 0 THEN NULL"
    "    ELSE now() + $4::bigint * interval '1 second' END,"
    "  refresh_token = coalesce($5, refresh_token),"
    "  refresh_expires_at = CASE WHEN $5 IS NULL THEN refresh_expires_at"
    "    WHEN $6::bigint < 0 THEN NULL"
    "    ELSE now() + $6::bigint * interval '1 second' END,"
    "  scopes = CASE WHEN $7 = '' THEN scopes ELSE $7 END,"
    "  token_obtained_at = now(), token_failures = 0,"
    "  token_retry_at = NULL, last_error = NULL, updated_at = now()"
    " WHERE domain = $1 AND status = 'active'"
    "   AND CASE WHEN mode = 'oauth' THEN refresh_token"
    "       ELSE coalesce(access_token, '') END = $2"
    " RETURNING domain";


static const char  sbw_shops_due_sql[] =
    "SELECT domain,"
    "  coalesce(((mode = 'client_credentials' AND (access_token IS NULL"
    "     OR access_expires_at < now() + $1::bigint"
    "                                    * interval '1 millisecond'))"
    "   OR (mode = 'oauth' AND refresh_token IS NOT NULL"
    "       AND access_expires_at < now() + $1::bigint"
    "                                       * interval '1 millisecond'))"
    "   AND (token_retry_at IS NULL OR token_retry_at <= now()), false),"
    "  coalesce(webhooks_due_at <= now(), false)"
    " FROM shops WHERE status = 'active' ORDER BY domain";


/*
 * Key of a shop's advisory lock (token refresh, webhook registration).
 */
#define SBW_SHOP_LOCK_KEY  "hashtextextended('shops/' || $1, 0)"


static int sbw_strv_push(char ***v, size_t *n, const char *s);


/*
 * One parameterised statement (text parameters).  With out the result
 * is handed over, else freed.
 */
int
sbw_shops_exec(PGconn *conn, const char *sql, int n,
    const char *const *params, int want_tuples, PGresult **out, char *err,
    size_t errlen)
{
    return sbw_pg_exec(conn, sql, n, params,
                       want_tuples ? SBW_PG_TUPLES : SBW_PG_COMMAND, out,
                       err, errlen);
}


/*
 * Create this component's tables (version 1) in one transaction under
 * its own advisory lock.  A newer version than this worker's is refused.
 */
int
sbw_shops_migrate(PGconn *conn, char *err, size_t errlen)
{
    char       sql[64];
    long long  version;
    PGresult  *res;

    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%d)",
             SBW_SHOPS_MIGRATE_LOCK);

    res = PQexec(conn, "BEGIN");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        goto failed;
    }

    PQclear(res);

    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        goto failed;
    }

    PQclear(res);

    res = PQexec(conn, sbw_shops_schema_sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        goto failed;
    }

    PQclear(res);

    res = PQexec(conn, "SELECT max(version) FROM schema_version"
                       " WHERE component = 'shops'");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        goto failed;
    }

    version = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);

    if (version > SBW_SHOPS_SCHEMA_VERSION) {
        snprintf(err, errlen, "the shops tables have schema version %lld, "
                 "newer than this worker's %d", version,
                 SBW_SHOPS_SCHEMA_VERSION);
        PQclear(PQexec(conn, "ROLLBACK"));
        return -1;
    }

    res = PQexec(conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        goto failed;
    }

    PQclear(res);
    return 0;

failed:

    sbw_pg_error(conn, res, err, errlen);
    PQclear(res);
    PQclear(PQexec(conn, "ROLLBACK"));
    return -1;
}


/*
 * Read a shop's row.  Returns 1 when found, 0 when there is none, -1 on
 * error.
 */
int
sbw_shops_get(PGconn *conn, const char *domain, sbw_shop_row_t *row,
    char *err, size_t errlen)
{
    int           nomem;
    PGresult     *res;
    const char   *params[1];

    memset(row, 0, sizeof(*row));
    params[0] = domain;

    if (sbw_shops_exec(conn, sbw_shops_get_sql, 1, params, 1, &res, err,
                       errlen) != 0)
    {
        return -1;
    }

    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }

    snprintf(row->domain, sizeof(row->domain), "%s", PQgetvalue(res, 0, 0));
    snprintf(row->mode, sizeof(row->mode), "%s", PQgetvalue(res, 0, 1));
    snprintf(row->status, sizeof(row->status), "%s", PQgetvalue(res, 0, 2));
    snprintf(row->scopes, sizeof(row->scopes), "%s", PQgetvalue(res, 0, 3));

    if (!PQgetisnull(res, 0, 4)) {
        row->access_token = strdup(PQgetvalue(res, 0, 4));
    }

    if (!PQgetisnull(res, 0, 5)) {
        row->refresh_token = strdup(PQgetvalue(res, 0, 5));
    }

    row->access_left_ms = strtoll(PQgetvalue(res, 0, 6), NULL, 10);
    row->webhooks_gen = strtoll(PQgetvalue(res, 0, 7), NULL, 10);
    row->token_failures = atoi(PQgetvalue(res, 0, 8));
    row->webhooks_attempts = atoi(PQgetvalue(res, 0, 9));

    nomem = (!PQgetisnull(res, 0, 4) && row->access_token == NULL)
            || (!PQgetisnull(res, 0, 5) && row->refresh_token == NULL);

    PQclear(res);

    if (nomem) {
        sbw_shop_row_clear(row);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    return 1;
}


void
sbw_shop_row_clear(sbw_shop_row_t *row)
{
    free(row->access_token);
    free(row->refresh_token);
    row->access_token = NULL;
    row->refresh_token = NULL;
}


/*
 * Record an install.  Returns 1 when it was applied, 0 when the row
 * already reflects this or a later install or uninstall (a redelivery,
 * or an older install arriving late), -1 on error.
 */
int
sbw_shops_install(PGconn *conn, const sbw_shop_install_t *in, char *err,
    size_t errlen)
{
    int          applied;
    char         exp[32], rexp[32], at[32];
    PGresult    *res;
    const char  *params[9];

    snprintf(exp, sizeof(exp), "%ld", in->expires_in);
    snprintf(rexp, sizeof(rexp), "%ld", in->refresh_expires_in);
    snprintf(at, sizeof(at), "%lld", in->obtained_at_ms);

    params[0] = in->domain;
    params[1] = in->scopes;
    params[2] = in->requested_scopes;
    params[3] = in->access_token;
    params[4] = in->expires_in >= 0 ? exp : NULL;
    params[5] = at;
    params[6] = in->refresh_token;
    params[7] = in->refresh_expires_in >= 0 ? rexp : NULL;
    params[8] = in->webhook_id;

    if (sbw_shops_exec(conn, sbw_shops_install_sql, 9, params, 1, &res, err,
                       errlen) != 0)
    {
        return -1;
    }

    applied = PQntuples(res) > 0;
    PQclear(res);

    return applied;
}


/*
 * Record an uninstall at triggered_at (Shopify's time, ISO 8601), or at
 * at_ms when the delivery had none: tokens dropped, no more Shopify
 * calls.
 * Returns 1 when applied, 0 when the row already has this or a later
 * uninstall, or an install after it; -1 on error.
 */
int
sbw_shops_uninstall(PGconn *conn, const char *domain, long long at_ms,
    const char *triggered_at, char *err, size_t errlen)
{
    int          applied;
    char         at[32];
    PGresult    *res;
    const char  *params[3];

    snprintf(at, sizeof(at), "%lld", at_ms);
    params[0] = domain;
    params[1] = at;
    params[2] = triggered_at && triggered_at[0] ? triggered_at : NULL;

    if (sbw_shops_exec(conn, sbw_shops_uninstall_sql, 3, params, 1, &res,
                       err, errlen) != 0)
    {
        return -1;
    }

    applied = PQntuples(res) > 0;
    PQclear(res);

    return applied;
}


/*
 * Store new tokens over old_blob.  Returns 1 when stored, 0 when the row
 * changed meanwhile (uninstall, reinstall, another refresher), -1 on
 * error.
 */
int
sbw_shops_store_tokens(PGconn *conn, const char *domain,
    const char *old_blob, const char *access_blob, long expires_in,
    const char *refresh_blob, long refresh_expires_in, const char *scopes,
    char *err, size_t errlen)
{
    int          stored;
    char         exp[32], rexp[32];
    PGresult    *res;
    const char  *params[7];

    snprintf(exp, sizeof(exp), "%ld", expires_in);
    snprintf(rexp, sizeof(rexp), "%ld", refresh_expires_in);

    params[0] = domain;
    params[1] = old_blob ? old_blob : "";
    params[2] = access_blob;
    params[3] = exp;
    params[4] = refresh_blob;
    params[5] = rexp;
    params[6] = scopes ? scopes : "";

    if (sbw_shops_exec(conn, sbw_shops_store_sql, 7, params, 1, &res, err,
                       errlen) != 0)
    {
        return -1;
    }

    stored = PQntuples(res) > 0;
    PQclear(res);

    return stored;
}


/*
 * A failed token request: try again after delay_ms, or, with reauth,
 * never (the refresh token is dead: the merchant must open the app).
 */
int
sbw_shops_token_failed(PGconn *conn, const char *domain, long delay_ms,
    const char *message, int reauth, char *err, size_t errlen)
{
    char         delay[32];
    const char  *params[4];

    snprintf(delay, sizeof(delay), "%ld", delay_ms);
    params[0] = domain;
    params[1] = delay;
    params[2] = message;
    params[3] = reauth ? "t" : "f";

    return sbw_shops_exec(conn,
        "UPDATE shops SET token_failures = token_failures + 1,"
        "  token_retry_at = now() + $2::bigint * interval '1 millisecond',"
        "  last_error = $3, updated_at = now(),"
        "  status = CASE WHEN $4::boolean THEN 'reauth_required'"
        "    ELSE status END"
        " WHERE domain = $1 AND status = 'active'",
        4, params, 0, NULL, err, errlen);
}


/*
 * Outcome of a webhook registration run of generation gen: done, or to
 * be tried again after delay_ms.  A newer generation (a reinstall
 * meanwhile) is left due.
 */
int
sbw_shops_webhooks_done(PGconn *conn, const char *domain, long long gen,
    int ok, long delay_ms, const char *message, char *err, size_t errlen)
{
    char         g[32], delay[32];
    const char  *params[4];

    snprintf(g, sizeof(g), "%lld", gen);
    snprintf(delay, sizeof(delay), "%ld", delay_ms);
    params[0] = domain;
    params[1] = g;
    params[2] = delay;
    params[3] = message;

    if (ok) {
        return sbw_shops_exec(conn,
            "UPDATE shops SET webhooks_due_at = NULL, webhooks_attempts = 0,"
            "  webhooks_synced_at = now(), last_error = NULL,"
            "  updated_at = now()"
            " WHERE domain = $1 AND webhooks_gen = $2::bigint",
            2, params, 0, NULL, err, errlen);
    }

    return sbw_shops_exec(conn,
        "UPDATE shops SET webhooks_attempts = webhooks_attempts + 1,"
        "  webhooks_due_at = now() + $3::bigint * interval '1 millisecond',"
        "  last_error = $4, updated_at = now()"
        " WHERE domain = $1 AND webhooks_gen = $2::bigint"
        "   AND status = 'active'",
        4, params, 0, NULL, err, errlen);
}


/*
 * A client-credentials shop (SHOPIFY_CLIENT_CREDENTIALS_SHOPS) gets its
 * row the first time; its token is then fetched by the maintenance
 * pass.  An existing row, uninstalled included, is left alone.
 */
int
sbw_shops_ensure_cc(PGconn *conn, const char *domain, char *err,
    size_t errlen)
{
    const char  *params[1];

    params[0] = domain;

    return sbw_shops_exec(conn,
        "INSERT INTO shops (domain, mode, status, installed_at,"
        "  webhooks_gen, webhooks_due_at)"
        " VALUES ($1, 'client_credentials', 'active', now(), 1, now())"
        " ON CONFLICT (domain) DO NOTHING",
        1, params, 0, NULL, err, errlen);
}


/*
 * One audit row (detail is consumed).  A redelivery of the same webhook
 * id for the same action adds none.
 */
int
sbw_shops_audit(PGconn *conn, const char *domain, const char *action,
    const char *webhook_id, json_t *detail, char *err, size_t errlen)
{
    int          rc;
    char        *d;
    const char  *params[4];

    d = json_dumps(detail ? detail : json_object(), JSON_COMPACT);
    json_decref(detail);

    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    params[0] = domain;
    params[1] = action;
    params[2] = webhook_id && webhook_id[0] ? webhook_id : NULL;
    params[3] = d;

    rc = sbw_shops_exec(conn,
        "INSERT INTO shop_audit (shop, action, webhook_id, detail)"
        " VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT DO NOTHING",
        4, params, 0, NULL, err, errlen);
    free(d);

    return rc;
}


/*
 * The shop's session-level advisory lock, which keeps token refreshes
 * and webhook registration of one shop to one worker at a time.  With
 * wait 0: returns 1 taken, 0 busy; with wait: blocks.  -1 on error.
 */
int
sbw_shops_lock(PGconn *conn, const char *domain, int wait, char *err,
    size_t errlen)
{
    int          got;
    PGresult    *res;
    const char  *params[1];

    params[0] = domain;

    if (sbw_shops_exec(conn, wait
                       ? "SELECT pg_advisory_lock(" SBW_SHOP_LOCK_KEY
                         "), true"
                       : "SELECT true, pg_try_advisory_lock("
                         SBW_SHOP_LOCK_KEY ")",
                       1, params, 1, &res, err, errlen) != 0)
    {
        return -1;
    }

    got = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);

    return got;
}


void
sbw_shops_unlock(PGconn *conn, const char *domain)
{
    PGresult    *res;
    const char  *params[1];

    params[0] = domain;
    res = PQexecParams(conn, "SELECT pg_advisory_unlock(" SBW_SHOP_LOCK_KEY
                       ")", 1, NULL, params, NULL, NULL, 0);
    PQclear(res);
}


static int
sbw_strv_push(char ***v, size_t *n, const char *s)
{
    char  **nv;

    nv = realloc(*v, (*n + 1) * sizeof(char *));
    if (nv == NULL) {
        return -1;
    }

    *v = nv;
    nv[*n] = strdup(s);

    if (nv[*n] == NULL) {
        return -1;
    }

    (*n)++;
    return 0;
}


/*
 * Active shops whose token expires within margin_ms (or, client
 * credentials, that have none), and those whose webhook registration is
 * due.
 */
int
sbw_shops_due(PGconn *conn, long margin_ms, char ***refresh,
    size_t *nrefresh, char ***webhooks, size_t *nwebhooks, char *err,
    size_t errlen)
{
    int          i;
    char         m[32];
    PGresult    *res;
    const char  *params[1];

    *refresh = NULL;
    *webhooks = NULL;
    *nrefresh = 0;
    *nwebhooks = 0;

    snprintf(m, sizeof(m), "%ld", margin_ms);
    params[0] = m;

    if (sbw_shops_exec(conn, sbw_shops_due_sql, 1, params, 1, &res, err,
                       errlen) != 0)
    {
        return -1;
    }

    for (i = 0; i < PQntuples(res); i++) {
        if ((strcmp(PQgetvalue(res, i, 1), "t") == 0
             && sbw_strv_push(refresh, nrefresh, PQgetvalue(res, i, 0)) != 0)
            || (strcmp(PQgetvalue(res, i, 2), "t") == 0
                && sbw_strv_push(webhooks, nwebhooks, PQgetvalue(res, i, 0))
                   != 0))
        {
            PQclear(res);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }

    PQclear(res);
    return 0;
}


/*
 * Whether the shop may still be called (installed, not uninstalled).
 * 1 yes, 0 no, -1 error.
 */
int
sbw_shops_is_active(PGconn *conn, const char *domain, char *err,
    size_t errlen)
{
    int          active;
    PGresult    *res;
    const char  *params[1];

    params[0] = domain;

    if (sbw_shops_exec(conn, "SELECT 1 FROM shops WHERE domain = $1"
                       " AND status = 'active'", 1, params, 1, &res, err,
                       errlen) != 0)
    {
        return -1;
    }

    active = PQntuples(res) > 0;
    PQclear(res);

    return active;
}
