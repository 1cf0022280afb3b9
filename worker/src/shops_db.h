/*
 * PostgreSQL side of the Shopify app: the shops table (one row per
 * shop: granted scopes, encrypted tokens, expiries, install and
 * uninstall times), its audit table, and the privacy requests table.
 * Schema component 'shops' in schema_version.
 */

#ifndef SBW_SHOPS_DB_H
#define SBW_SHOPS_DB_H

#include <stddef.h>

#include <libpq-fe.h>
#include <jansson.h>


#define SBW_SHOPS_SCHEMA_VERSION  1


typedef struct {
    char        domain[256];
    char        mode[24];            /* oauth, client_credentials */
    char        status[24];          /* active, uninstalled, reauth_required */
    char        scopes[1024];
    char       *access_token;        /* v1 blob, NULL when none */
    char       *refresh_token;       /* v1 blob, NULL when none */
    long long   access_left_ms;      /* -1: does not expire */
    long long   webhooks_gen;
    int         token_failures;
    int         webhooks_attempts;
} sbw_shop_row_t;


typedef struct {
    const char  *domain;
    const char  *scopes;
    const char  *requested_scopes;
    const char  *access_token;       /* blobs */
    const char  *refresh_token;
    long long    obtained_at_ms;
    long         expires_in;         /* -1: none */
    long         refresh_expires_in;
    const char  *webhook_id;
} sbw_shop_install_t;


int sbw_shops_migrate(PGconn *conn, char *err, size_t errlen);

int sbw_shops_exec(PGconn *conn, const char *sql, int n,
    const char *const *params, int want_tuples, PGresult **out, char *err,
    size_t errlen);

int sbw_shops_get(PGconn *conn, const char *domain, sbw_shop_row_t *row,
    char *err, size_t errlen);
void sbw_shop_row_clear(sbw_shop_row_t *row);

int sbw_shops_install(PGconn *conn, const sbw_shop_install_t *in,
    char *err, size_t errlen);
int sbw_shops_uninstall(PGconn *conn, const char *domain, long long at_ms,
    const char *triggered_at, char *err, size_t errlen);
int sbw_shops_store_tokens(PGconn *conn, const char *domain,
    const char *old_blob, const char *access_blob, long expires_in,
    const char *refresh_blob, long refresh_expires_in, const char *scopes,
    char *err, size_t errlen);
int sbw_shops_token_failed(PGconn *conn, const char *domain,
    long delay_ms, const char *message, int reauth, char *err,
    size_t errlen);
int sbw_shops_webhooks_done(PGconn *conn, const char *domain,
    long long gen, int ok, long delay_ms, const char *message, char *err,
    size_t errlen);
int sbw_shops_ensure_cc(PGconn *conn, const char *domain, char *err,
    size_t errlen);
int sbw_shops_audit(PGconn *conn, const char *domain, const char *action,
    const char *webhook_id, json_t *detail, char *err, size_t errlen);
int sbw_shops_lock(PGconn *conn, const char *domain, int wait, char *err,
    size_t errlen);
void sbw_shops_unlock(PGconn *conn, const char *domain);
int sbw_shops_due(PGconn *conn, long margin_ms, char ***refresh,
    size_t *nrefresh, char ***webhooks, size_t *nwebhooks, char *err,
    size_t errlen);
int sbw_shops_is_active(PGconn *conn, const char *domain, char *err,
    size_t errlen);


#endif /* SBW_SHOPS_DB_H */
