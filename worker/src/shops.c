/*
 * The Shopify app's life, worker side (see shops.h).
 *
 * Tokens.  A shop's access and refresh tokens live only in the shops
 * row, encrypted (crypto.c).  A refresh rotates the refresh token, and
 * Shopify keeps the previous one usable until the new one is first
 * used.  So the new pair is committed, as a compare-and-set over the old
 * refresh token, before the new access token is used; if the answer is
 * lost (timeout, dropped connection) or cannot be stored, nothing
 * changes here and the next try uses the old refresh token again.  A
 * refresh token Shopify refuses (invalid_grant) puts the shop in
 * reauth_required: the merchant must open the app again.
 *
 * Shopify-side work of a shop (token requests, GraphQL calls) runs under
 * the shop's advisory lock, so one worker does it at a time, and each
 * call is preceded by a check that the shop is still active: an
 * app/uninstalled entry stops it at the next call.
 */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "backoff.h"
#include "crypto.h"
#include "log.h"
#include "privacy.h"
#include "shopify_api.h"
#include "shopify_gql.h"
#include "shops.h"
#include "shops_db.h"


/* results of the token and GraphQL steps */
#define SBW_STEP_OK        0
#define SBW_STEP_FAIL     -1      /* try again later */
#define SBW_STEP_STOPPED  -2      /* shop no longer active, or stopping */
#define SBW_STEP_AUTH     -3      /* 401: the token was refused */

/* backoff of failed token requests and registrations */
#define SBW_SHOPS_RETRY_BASE_MS  1000
#define SBW_SHOPS_RETRY_MAX_MS   (15 * 60 * 1000)

/* throttled answers accepted for one GraphQL call before giving up */
#define SBW_GQL_MAX_THROTTLED  20


struct sbw_shops_ctx_s {
    const sbw_config_t         *conf;
    const sbw_shopify_conf_t   *sconf;
    volatile sig_atomic_t      *stop;
    sbw_shopify_t               api;
    int                         api_ready;
    sbw_rng_t                   rng;
    sbw_gql_cost_t              cost;       /* last known bucket */
};


/* what a registration run did, for the log and the CLI */
typedef struct {
    int      kept;
    json_t  *created;
    json_t  *deleted;
    long     throttled_ms;
} sbw_ensure_report_t;


static void sbw_shops_sleep(sbw_shops_ctx_t *ctx, long ms);
static long sbw_shops_backoff(sbw_shops_ctx_t *ctx, int failures);
static int sbw_shops_api(sbw_shops_ctx_t *ctx);
static int sbw_shops_fetch_token(sbw_shops_ctx_t *ctx, PGconn *conn,
    const char *shop, int force, char **token);
static int sbw_shops_gql(sbw_shops_ctx_t *ctx, PGconn *conn,
    const char *shop, const char *token, const char *body, double cost,
    json_t **out, sbw_ensure_report_t *rep, char *err, size_t errlen);
static int sbw_shops_gql_auth(sbw_shops_ctx_t *ctx, PGconn *conn,
    const char *shop, char **token, const char *body, double cost,
    json_t **out, sbw_ensure_report_t *rep, char *err, size_t errlen);
static int sbw_shops_ensure_locked(sbw_shops_ctx_t *ctx, PGconn *conn,
    const char *shop, sbw_ensure_report_t *rep, char *err, size_t errlen);
static int sbw_shops_ensure(sbw_shops_ctx_t *ctx, PGconn *conn,
    const char *shop, int wait, sbw_ensure_report_t *rep);
static int sbw_shops_installed(sbw_shops_ctx_t *ctx, PGconn *conn,
    const sbw_entry_t *e, const char *shop, sbw_shops_dead_t *dead);
static int sbw_shops_uninstalled(sbw_shops_ctx_t *ctx, PGconn *conn,
    const sbw_entry_t *e, const char *shop, sbw_shops_dead_t *dead);
static void *sbw_shops_maint_run(void *arg);
static int sbw_shops_cli_encrypt(const char *shop);


int
sbw_shops_handles(const char *topic)
{
    return strcmp(topic, SBW_TOPIC_INSTALLED) == 0
           || strcmp(topic, "app/uninstalled") == 0
           || strcmp(topic, "customers/data_request") == 0
           || strcmp(topic, "customers/redact") == 0
           || strcmp(topic, "shop/redact") == 0;
}


sbw_shops_ctx_t *
sbw_shops_ctx_new(const sbw_config_t *conf, const sbw_shopify_conf_t *sconf,
    volatile sig_atomic_t *stop)
{
    sbw_shops_ctx_t  *ctx;

    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->conf = conf;
    ctx->sconf = sconf;
    ctx->stop = stop;
    sbw_rng_seed(&ctx->rng, (uint64_t) time(NULL) ^ (uint64_t) (uintptr_t)
                                                    ctx);
    sbw_gql_cost_init(&ctx->cost);

    return ctx;
}


void
sbw_shops_ctx_free(sbw_shops_ctx_t *ctx)
{
    if (ctx == NULL) {
        return;
    }

    if (ctx->api_ready) {
        sbw_shopify_cleanup(&ctx->api);
    }

    free(ctx);
}


static void
sbw_shops_sleep(sbw_shops_ctx_t *ctx, long ms)
{
    long             step;
    struct timespec  ts;

    while (ms > 0 && !*ctx->stop) {
        step = ms > 100 ? 100 : ms;
        ts.tv_sec = 0;
        ts.tv_nsec = step * 1000000L;

        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            /* void */
        }

        ms -= step;
    }
}


static long
sbw_shops_backoff(sbw_shops_ctx_t *ctx, int failures)
{
    return SBW_SHOPS_RETRY_BASE_MS / 2
           + sbw_backoff_ms(&ctx->rng, (unsigned) failures,
                            SBW_SHOPS_RETRY_BASE_MS,
                            SBW_SHOPS_RETRY_MAX_MS);
}


static int
sbw_shops_api(sbw_shops_ctx_t *ctx)
{
    if (!ctx->api_ready) {
        if (sbw_shopify_init(&ctx->api, ctx->sconf) != 0) {
            return -1;
        }

        ctx->api_ready = 1;
    }

    return 0;
}


/*
 * A usable access token for the shop (plaintext in *token, to be
 * released with sbw_token_free()), with the shop's lock held.  The
 * stored one is used while it has more than the refresh margin left,
 * unless force (it was just refused); otherwise a new one is obtained
 * and committed first (refresh token, or client credentials).
 */
static int
sbw_shops_fetch_token(sbw_shops_ctx_t *ctx, PGconn *conn, const char *shop,
    int force, char **token)
{
    int                   rc, found, reauth;
    char                  err[512], msg[256];
    char                 *rt, *access_blob, *refresh_blob;
    const char           *old;
    sbw_shop_row_t        row;
    sbw_shopify_res_t     res;
    sbw_shopify_tokens_t  t;

    *token = NULL;

    found = sbw_shops_get(conn, shop, &row, err, sizeof(err));

    if (found < 0) {
        sbw_log(SBW_LOG_WARN, "postgres_error",
                json_pack("{s:s,s:s}", "shop", shop, "message", err));
        return SBW_STEP_FAIL;
    }

    if (found == 0 || strcmp(row.status, "active") != 0) {
        sbw_shop_row_clear(&row);
        return SBW_STEP_STOPPED;
    }

    if (!force && row.access_token != NULL
        && (row.access_left_ms < 0
            || row.access_left_ms > ctx->sconf->refresh_margin_ms))
    {
        *token = sbw_token_decrypt(ctx->sconf->key, shop, row.access_token);
        sbw_shop_row_clear(&row);

        if (*token == NULL) {
            sbw_log(SBW_LOG_ERROR, "token_undecryptable",
                    json_pack("{s:s,s:s}", "shop", shop, "message",
                              "the stored access token does not decrypt "
                              "with SHOPIFY_TOKEN_KEY"));
            return SBW_STEP_FAIL;
        }

        return SBW_STEP_OK;
    }

    if (!ctx->sconf->enabled || sbw_shops_api(ctx) != 0) {
        sbw_shop_row_clear(&row);
        return SBW_STEP_FAIL;
    }

    memset(&res, 0, sizeof(res));
    res.retry_after_ms = -1;
    rt = NULL;

    if (strcmp(row.mode, "client_credentials") == 0) {
        old = row.access_token ? row.access_token : "";
        rc = sbw_shopify_client_credentials(&ctx->api, shop, &res);

    } else {
        old = row.refresh_token;

        if (old == NULL) {
            sbw_shop_row_clear(&row);
            sbw_log(SBW_LOG_WARN, "token_expired",
                    json_pack("{s:s,s:s}", "shop", shop, "message",
                              "the access token expires and there is no "
                              "refresh token"));
            return SBW_STEP_FAIL;
        }

        rt = sbw_token_decrypt(ctx->sconf->key, shop, old);

        if (rt == NULL) {
            sbw_log(SBW_LOG_ERROR, "token_undecryptable",
                    json_pack("{s:s,s:s}", "shop", shop, "message",
                              "the stored refresh token does not decrypt "
                              "with SHOPIFY_TOKEN_KEY"));
            sbw_shop_row_clear(&row);
            return SBW_STEP_FAIL;
        }

        rc = sbw_shopify_refresh(&ctx->api, shop, rt, &res);
        sbw_token_free(rt);
    }

    if (rc != 0 || res.status != 200) {
        /*
         * No answer, or a refusal.  invalid_grant (or 401) means this
         * refresh token will never work again; anything else (a lost
         * answer, 429, 5xx) leaves it as it is for the next try.
         */
        reauth = rc == 0 && strcmp(row.mode, "oauth") == 0
                 && (strcmp(res.oauth_error, "invalid_grant") == 0
                     || res.status == 401);

        sbw_log(reauth ? SBW_LOG_ERROR : SBW_LOG_WARN, "shop_token_failed",
                json_pack("{s:s,s:s,s:i,s:s,s:b}", "shop", shop,
                          "mode", row.mode, "status", (json_int_t) res.status,
                          "message", res.error, "reauth_required", reauth));

        if (sbw_shops_token_failed(conn, shop,
                                   sbw_shops_backoff(ctx, row.token_failures),
                                   res.error, reauth, err, sizeof(err)) != 0)
        {
            sbw_log(SBW_LOG_WARN, "postgres_error",
                    json_pack("{s:s,s:s}", "shop", shop, "message", err));
        }

        if (reauth) {
            sbw_shops_audit(conn, shop, "reauth_required", NULL,
                            json_pack("{s:s}", "reason", res.error), err,
                            sizeof(err));
        }

        sbw_shopify_res_clear(&res);
        sbw_shop_row_clear(&row);
        return SBW_STEP_FAIL;
    }

    if (sbw_shopify_parse_tokens(res.body, &t, msg, sizeof(msg)) != 0) {
        sbw_log(SBW_LOG_WARN, "shop_token_failed",
                json_pack("{s:s,s:s,s:s}", "shop", shop, "mode", row.mode,
                          "message", msg));
        sbw_shops_token_failed(conn, shop,
                               sbw_shops_backoff(ctx, row.token_failures),
                               msg, 0, err, sizeof(err));
        sbw_shopify_res_clear(&res);
        sbw_shop_row_clear(&row);
        return SBW_STEP_FAIL;
    }

    sbw_shopify_res_clear(&res);

    access_blob = sbw_token_encrypt(ctx->sconf->key, shop, t.access_token);
    refresh_blob = t.refresh_token
                   ? sbw_token_encrypt(ctx->sconf->key, shop, t.refresh_token)
                   : NULL;

    if (access_blob == NULL || (t.refresh_token != NULL
                                && refresh_blob == NULL))
    {
        free(access_blob);
        free(refresh_blob);
        sbw_shopify_tokens_clear(&t);
        sbw_shop_row_clear(&row);
        return SBW_STEP_FAIL;
    }

    /* committed before the new token is used, or not used at all */
    rc = sbw_shops_store_tokens(conn, shop, old, access_blob, t.expires_in,
                                refresh_blob, t.refresh_expires_in, t.scope,
                                err, sizeof(err));

    free(access_blob);
    free(refresh_blob);

    if (rc <= 0) {
        if (rc < 0) {
            sbw_log(SBW_LOG_WARN, "token_store_failed",
                    json_pack("{s:s,s:s}", "shop", shop, "message", err));

        } else {
            sbw_log(SBW_LOG_INFO, "token_discarded",
                    json_pack("{s:s,s:s}", "shop", shop, "message",
                              "the shop changed meanwhile (uninstalled, "
                              "reinstalled or refreshed elsewhere)"));
        }

        sbw_shopify_tokens_clear(&t);
        sbw_shop_row_clear(&row);
        return rc < 0 ? SBW_STEP_FAIL : SBW_STEP_STOPPED;
    }

    sbw_log(SBW_LOG_INFO, "shop_token_refreshed",
            json_pack("{s:s,s:s,s:I,s:b}", "shop", shop, "mode", row.mode,
                      "expires_in", (json_int_t) t.expires_in,
                      "rotated", t.refresh_token != NULL));

    *token = t.access_token;
    t.access_token = NULL;
    sbw_shopify_tokens_clear(&t);
    sbw_shop_row_clear(&row);

    return SBW_STEP_OK;
}


/*
 * One GraphQL call, honouring cost throttling: wait when the last known
 * bucket cannot pay the expected cost, and after a THROTTLED answer wait
 * as its restore rate says, then send again.  The shop's status is
 * checked before every send.
 */
static int
sbw_shops_gql(sbw_shops_ctx_t *ctx, PGconn *conn, const char *shop,
    const char *token, const char *body, double cost, json_t **out,
    sbw_ensure_report_t *rep, char *err, size_t errlen)
{
    int                throttled, rc, active;
    long               wait;
    char               msg[256];
    sbw_shopify_res_t  res;

    *out = NULL;
    memset(&res, 0, sizeof(res));

    for (throttled = 0; throttled <= SBW_GQL_MAX_THROTTLED; ) {
        wait = sbw_gql_wait_ms(&ctx->cost, cost);

        if (wait > 0) {
            if (wait > ctx->sconf->throttle_max_wait_ms) {
                snprintf(err, errlen, "throttled: %ld ms to wait, over "
                         "SHOPIFY_THROTTLE_MAX_WAIT_MS", wait);
                return SBW_STEP_FAIL;
            }

            sbw_log(SBW_LOG_INFO, "shopify_throttle_wait",
                    json_pack("{s:s,s:i,s:f,s:f,s:f}", "shop", shop,
                              "wait_ms", (json_int_t) wait,
                              "cost", cost,
                              "available", ctx->cost.available,
                              "restore_rate", ctx->cost.restore_rate));
            rep->throttled_ms += wait;
            sbw_shops_sleep(ctx, wait);

            /* the bucket has refilled by now, as far as we know */
            ctx->cost.available = cost;
        }

        if (*ctx->stop) {
            return SBW_STEP_STOPPED;
        }

        active = sbw_shops_is_active(conn, shop, err, errlen);

        if (active <= 0) {
            return active < 0 ? SBW_STEP_FAIL : SBW_STEP_STOPPED;
        }

        if (sbw_shopify_graphql(&ctx->api, shop, token, body, &res) != 0) {
            snprintf(err, errlen, "%s", res.error);
            sbw_shopify_res_clear(&res);
            return SBW_STEP_FAIL;
        }

        if (res.status == 401) {
            sbw_shopify_res_clear(&res);
            snprintf(err, errlen, "HTTP 401: the access token was refused");
            return SBW_STEP_AUTH;
        }

        if (res.status != 200) {
            snprintf(err, errlen, "%s", res.error[0] ? res.error : "HTTP "
                     "error");
            sbw_shopify_res_clear(&res);
            return SBW_STEP_FAIL;
        }

        rc = sbw_gql_check(res.body, &ctx->cost, msg, sizeof(msg));

        if (rc == SBW_GQL_THROTTLED) {
            throttled++;
            sbw_log(SBW_LOG_INFO, "shopify_throttled",
                    json_pack("{s:s,s:f,s:f,s:f}", "shop", shop,
                              "requested", ctx->cost.requested,
                              "available", ctx->cost.available,
                              "restore_rate", ctx->cost.restore_rate));

            if (ctx->cost.requested > 0) {
                cost = ctx->cost.requested;
            }

            /* nothing known about the bucket: wait a second */
            if (sbw_gql_wait_ms(&ctx->cost, cost) == 0) {
                sbw_shops_sleep(ctx, 1000);
            }

            sbw_shopify_res_clear(&res);
            continue;
        }

        if (rc != SBW_GQL_OK) {
            snprintf(err, errlen, "GraphQL: %s", msg);
            sbw_shopify_res_clear(&res);
            return SBW_STEP_FAIL;
        }

        *out = json_incref(res.body);
        sbw_shopify_res_clear(&res);
        return SBW_STEP_OK;
    }

    snprintf(err, errlen, "throttled %d times in a row",
             SBW_GQL_MAX_THROTTLED);
    return SBW_STEP_FAIL;
}


/*
 * sbw_shops_gql() with the token: a 401 gets one new token (refresh or
 * client credentials) and one more try.
 */
static int
sbw_shops_gql_auth(sbw_shops_ctx_t *ctx, PGconn *conn, const char *shop,
    char **token, const char *body, double cost, json_t **out,
    sbw_ensure_report_t *rep, char *err, size_t errlen)
{
    int  rc;

    rc = sbw_shops_gql(ctx, conn, shop, *token, body, cost, out, rep, err,
                       errlen);

    if (rc != SBW_STEP_AUTH) {
        return rc;
    }

    sbw_token_free(*token);
    *token = NULL;

    rc = sbw_shops_fetch_token(ctx, conn, shop, 1, token);
    if (rc != SBW_STEP_OK) {
        snprintf(err, errlen, "the access token was refused and no new "
                 "one could be obtained");
        return rc;
    }

    rc = sbw_shops_gql(ctx, conn, shop, *token, body, cost, out, rep, err,
                       errlen);

    return rc == SBW_STEP_AUTH ? SBW_STEP_FAIL : rc;
}


/*
 * Make the shop's webhook subscriptions match the settings: list them
 * all (page by page), delete those that are not wanted (other topics,
 * other URLs, duplicates), create the missing ones.  The shop's lock is
 * held.
 */
static int
sbw_shops_ensure_locked(sbw_shops_ctx_t *ctx, PGconn *conn,
    const char *shop, sbw_ensure_report_t *rep, char *err, size_t errlen)
{
    int              rc, has_next, *keep;
    char             cursor[512], msg[256], *body, *token;
    char           **create;
    size_t           n, i, ncreate;
    json_t          *resp;
    sbw_gql_sub_t   *subs;

    if (sbw_shops_api(ctx) != 0) {
        snprintf(err, errlen, "cannot set up libcurl");
        return SBW_STEP_FAIL;
    }

    rc = sbw_shops_fetch_token(ctx, conn, shop, 0, &token);
    if (rc != SBW_STEP_OK) {
        snprintf(err, errlen, "no usable access token");
        return rc;
    }

    subs = NULL;
    n = 0;
    keep = NULL;
    create = NULL;
    ncreate = 0;
    has_next = 1;
    cursor[0] = '\0';

    /* 1. the shop's subscriptions, all pages */
    while (has_next) {
        body = sbw_gql_list_body(cursor[0] ? cursor : NULL);
        if (body == NULL) {
            rc = SBW_STEP_FAIL;
            snprintf(err, errlen, "out of memory");
            goto done;
        }

        rc = sbw_shops_gql_auth(ctx, conn, shop, &token, body,
                                SBW_GQL_PAGE + 2, &resp, rep, err, errlen);
        free(body);

        if (rc != SBW_STEP_OK) {
            goto done;
        }

        rc = sbw_gql_parse_list(resp, &subs, &n, &has_next, cursor,
                                sizeof(cursor), msg, sizeof(msg));
        json_decref(resp);

        if (rc != 0) {
            snprintf(err, errlen, "%s", msg);
            rc = SBW_STEP_FAIL;
            goto done;
        }
    }

    /* 2. the difference */
    keep = calloc(n + 1, sizeof(int));

    if (keep == NULL
        || sbw_gql_plan(ctx->sconf, subs, n, keep, &create, &ncreate) != 0)
    {
        snprintf(err, errlen, "out of memory");
        rc = SBW_STEP_FAIL;
        goto done;
    }

    /* 3. stale ones go */
    for (i = 0; i < n; i++) {
        if (keep[i]) {
            rep->kept++;
            continue;
        }

        body = sbw_gql_delete_body(subs[i].id);
        if (body == NULL) {
            rc = SBW_STEP_FAIL;
            goto done;
        }

        rc = sbw_shops_gql_auth(ctx, conn, shop, &token, body,
                                SBW_GQL_MUTATION_COST, &resp, rep, err,
                                errlen);
        free(body);

        if (rc != SBW_STEP_OK) {
            goto done;
        }

        if (sbw_gql_parse_mutation(resp, "webhookSubscriptionDelete", msg,
                                   sizeof(msg)) != 0
            && strstr(msg, "does not exist") == NULL)
        {
            json_decref(resp);
            snprintf(err, errlen, "webhookSubscriptionDelete %s: %s",
                     subs[i].topic, msg);
            rc = SBW_STEP_FAIL;
            goto done;
        }

        json_decref(resp);
        json_array_append_new(rep->deleted,
                              json_pack("{s:s,s:s,s:s}", "id", subs[i].id,
                                        "topic", subs[i].topic,
                                        "uri", subs[i].uri));
    }

    /* 4. missing ones are made */
    for (i = 0; i < ncreate; i++) {
        body = sbw_gql_create_body(create[i], ctx->sconf->callback_url);
        if (body == NULL) {
            rc = SBW_STEP_FAIL;
            goto done;
        }

        rc = sbw_shops_gql_auth(ctx, conn, shop, &token, body,
                                SBW_GQL_MUTATION_COST, &resp, rep, err,
                                errlen);
        free(body);

        if (rc != SBW_STEP_OK) {
            goto done;
        }

        if (sbw_gql_parse_mutation(resp, "webhookSubscriptionCreate", msg,
                                   sizeof(msg)) != 0
            && strstr(msg, "already been taken") == NULL)
        {
            json_decref(resp);
            snprintf(err, errlen, "webhookSubscriptionCreate %s: %s",
                     create[i], msg);
            rc = SBW_STEP_FAIL;
            goto done;
        }

        json_decref(resp);
        json_array_append_new(rep->created, json_string(create[i]));
    }

    rc = SBW_STEP_OK;

done:

    sbw_token_free(token);
    sbw_gql_subs_free(subs, n);
    sbw_gql_strv_free(create, ncreate);
    free(keep);

    return rc;
}


/*
 * One registration run for a shop, under its lock (wait: block for it,
 * else skip when another worker holds it), with its outcome recorded in
 * the shops row.  Returns an SBW_STEP_ value; a busy lock counts as
 * SBW_STEP_OK (the other worker does it).
 */
static int
sbw_shops_ensure(sbw_shops_ctx_t *ctx, PGconn *conn, const char *shop,
    int wait, sbw_ensure_report_t *rep)
{
    int             rc, locked, found;
    char            err[512], perr[512];
    sbw_shop_row_t  row;

    rep->kept = 0;
    rep->throttled_ms = 0;
    rep->created = json_array();
    rep->deleted = json_array();

    locked = sbw_shops_lock(conn, shop, wait, err, sizeof(err));

    if (locked <= 0) {
        if (locked < 0) {
            sbw_log(SBW_LOG_WARN, "postgres_error",
                    json_pack("{s:s,s:s}", "shop", shop, "message", err));
        }

        return locked < 0 ? SBW_STEP_FAIL : SBW_STEP_OK;
    }

    found = sbw_shops_get(conn, shop, &row, err, sizeof(err));
    sbw_shop_row_clear(&row);

    if (found <= 0 || strcmp(row.status, "active") != 0) {
        sbw_shops_unlock(conn, shop);
        return found < 0 ? SBW_STEP_FAIL : SBW_STEP_STOPPED;
    }

    err[0] = '\0';
    rc = sbw_shops_ensure_locked(ctx, conn, shop, rep, err, sizeof(err));

    if (rc == SBW_STEP_OK) {
        sbw_log(SBW_LOG_INFO, "webhooks_ensured",
                json_pack("{s:s,s:i,s:O,s:O,s:i}", "shop", shop,
                          "kept", (json_int_t) rep->kept,
                          "created", rep->created, "deleted", rep->deleted,
                          "throttled_ms", (json_int_t) rep->throttled_ms));

    } else if (rc == SBW_STEP_STOPPED) {
        sbw_log(SBW_LOG_INFO, "webhooks_stopped",
                json_pack("{s:s,s:s}", "shop", shop, "message",
                          "the shop is no longer active"));

    } else {
        sbw_log(SBW_LOG_WARN, "webhooks_failed",
                json_pack("{s:s,s:s,s:O,s:O}", "shop", shop, "message", err,
                          "created", rep->created, "deleted",
                          rep->deleted));
    }

    if (rc != SBW_STEP_STOPPED
        && sbw_shops_webhooks_done(conn, shop, row.webhooks_gen,
                                   rc == SBW_STEP_OK,
                                   sbw_shops_backoff(ctx,
                                                     row.webhooks_attempts),
                                   err, perr, sizeof(perr)) != 0)
    {
        sbw_log(SBW_LOG_WARN, "postgres_error",
                json_pack("{s:s,s:s}", "shop", shop, "message", perr));
    }

    sbw_shops_unlock(conn, shop);

    return rc;
}


static void
sbw_report_free(sbw_ensure_report_t *rep)
{
    json_decref(rep->created);
    json_decref(rep->deleted);
    rep->created = NULL;
    rep->deleted = NULL;
}


/*
 * shopify/installed (written by nginx after the OAuth exchange): check
 * the body, record the shop (an older install never overwrites a newer
 * one), audit, then register the webhooks right away.  The entry is
 * acknowledged whether or not registration worked: the row says it is
 * due, and the maintenance pass retries it.
 */
static int
sbw_shops_installed(sbw_shops_ctx_t *ctx, PGconn *conn, const sbw_entry_t *e,
    const char *shop, sbw_shops_dead_t *dead)
{
    int                  applied;
    char                 err[512], body_shop[SBW_SHOP_DOMAIN_BUFLEN];
    char                *probe;
    json_t              *b, *v;
    json_error_t         jerr;
    sbw_shop_install_t   in;
    sbw_ensure_report_t  rep;

    b = json_loadb(e->body ? e->body : "", e->body_len, 0, &jerr);
    memset(&in, 0, sizeof(in));
    dead->code = "Shops_InvalidInstall";

    if (!json_is_object(b)) {
        snprintf(dead->reason, sizeof(dead->reason), "body is not a JSON "
                 "object");
        goto invalid;
    }

    if (sbw_shop_domain_normalize(json_string_value(json_object_get(b,
                                                                    "shop")),
                                  body_shop, sizeof(body_shop)) != 0
        || strcmp(body_shop, shop) != 0)
    {
        snprintf(dead->reason, sizeof(dead->reason), "the body's shop is "
                 "not the entry's");
        goto invalid;
    }

    /*
     * Without the key the tokens cannot be read: parked rather than kept
     * pending, which would hold back the stream's trimming for as long
     * as the setting is missing.  "dlq retry" it once the key is set.
     */
    if (!ctx->sconf->have_key) {
        dead->code = "Shops_NoTokenKey";
        snprintf(dead->reason, sizeof(dead->reason), "SHOPIFY_TOKEN_KEY is "
                 "not set: set it (the key nginx encrypts with), then retry "
                 "this dead letter");
        goto invalid;
    }

    in.domain = shop;
    in.scopes = json_string_value(json_object_get(b, "scope"));
    in.requested_scopes = json_string_value(json_object_get(b,
                                                            "requested_scope"));
    in.access_token = json_string_value(json_object_get(b, "access_token"));
    in.refresh_token = json_string_value(json_object_get(b, "refresh_token"));
    in.webhook_id = e->webhook_id;
    in.expires_in = -1;
    in.refresh_expires_in = -1;

    v = json_object_get(b, "obtained_at");
    in.obtained_at_ms = json_is_integer(v) ? json_integer_value(v) : 0;

    v = json_object_get(b, "expires_in");
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        in.expires_in = (long) json_integer_value(v);
    }

    v = json_object_get(b, "refresh_token_expires_in");
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        in.refresh_expires_in = (long) json_integer_value(v);
    }

    if (in.scopes == NULL || in.access_token == NULL
        || in.obtained_at_ms <= 0)
    {
        snprintf(dead->reason, sizeof(dead->reason), "scope, access_token "
                 "or obtained_at missing");
        goto invalid;
    }

    /*
     * the blobs must be ours and this shop's: decrypt them once
     * TODO: a blob under another key is dead-lettered, not retried
     */
    probe = sbw_token_decrypt(ctx->sconf->key, shop, in.access_token);

    if (probe == NULL) {
        dead->code = "Shops_TokenUndecryptable";
        snprintf(dead->reason, sizeof(dead->reason), "the access token does "
                 "not decrypt with SHOPIFY_TOKEN_KEY for this shop");
        goto invalid;
    }

    sbw_token_free(probe);

    if (in.refresh_token != NULL) {
        probe = sbw_token_decrypt(ctx->sconf->key, shop, in.refresh_token);

        if (probe == NULL) {
            dead->code = "Shops_TokenUndecryptable";
            snprintf(dead->reason, sizeof(dead->reason), "the refresh token "
                     "does not decrypt with SHOPIFY_TOKEN_KEY for this "
                     "shop");
            goto invalid;
        }

        sbw_token_free(probe);
    }

    applied = sbw_shops_install(conn, &in, err, sizeof(err));

    if (applied < 0
        || sbw_shops_audit(conn, shop, applied ? "installed"
                                               : "install_ignored",
                           e->webhook_id,
                           json_pack("{s:s,s:s?,s:b,s:b}", "scope",
                                     in.scopes, "requested_scope",
                                     in.requested_scopes, "expiring",
                                     in.expires_in >= 0, "refresh_token",
                                     in.refresh_token != NULL),
                           err, sizeof(err)) != 0)
    {
        json_decref(b);
        sbw_log(SBW_LOG_WARN, "postgres_error",
                json_pack("{s:s,s:s}", "shop", shop, "message", err));
        return SBW_SHOPS_RETRY;
    }

    sbw_log(applied ? SBW_LOG_INFO : SBW_LOG_WARN,
            applied ? "shop_installed" : "shop_install_ignored",
            json_pack("{s:s,s:s?,s:s,s:s?,s:b,s:s}", "shop", shop,
                      "webhook_id", e->webhook_id, "scope", in.scopes,
                      "requested_scope", in.requested_scopes,
                      "expiring", in.expires_in >= 0, "message",
                      applied ? "shop recorded"
                              : "the shop has a later install or "
                                "uninstall: nothing changed"));

    if (in.requested_scopes != NULL
        && strcmp(in.requested_scopes, in.scopes) != 0)
    {
        sbw_log(SBW_LOG_WARN, "shop_scopes_differ",
                json_pack("{s:s,s:s,s:s}", "shop", shop, "scope",
                          in.scopes, "requested_scope",
                          in.requested_scopes));
    }

    json_decref(b);

    if (applied && ctx->sconf->enabled) {
        sbw_shops_ensure(ctx, conn, shop, 0, &rep);
        sbw_report_free(&rep);
    }

    return SBW_SHOPS_ACK;

invalid:

    json_decref(b);
    sbw_log(SBW_LOG_ERROR, "entry_invalid",
            json_pack("{s:s,s:s,s:s?,s:s,s:s}", "topic", SBW_TOPIC_INSTALLED,
                      "shop", shop, "webhook_id", e->webhook_id,
                      "stream_id", e->id, "message", dead->reason));
    return SBW_SHOPS_DEAD;
}


/*
 * app/uninstalled: the token died with the uninstall.  The shop stops
 * being called at once (every Shopify call checks its status first), its
 * tokens are dropped.  Orders already in the stream still go to BC; the
 * ledger and everything else stay until shop/redact.
 */
static int
sbw_shops_uninstalled(sbw_shops_ctx_t *ctx, PGconn *conn,
    const sbw_entry_t *e, const char *shop, sbw_shops_dead_t *dead)
{
    int        applied;
    char       err[512], body_shop[SBW_SHOP_DOMAIN_BUFLEN];
    json_t    *b;
    long long  at_ms;

    (void) ctx;

    /*
     * The shop header is not signed, the body is: the body's
     * myshopify_domain must be the entry's shop, or a signed body of one
     * shop could uninstall another.
     */
    b = json_loadb(e->body ? e->body : "", e->body_len, 0, NULL);

    if (sbw_shop_domain_normalize(json_string_value(
                                      json_object_get(b, "myshopify_domain")),
                                  body_shop, sizeof(body_shop)) != 0
        || strcmp(body_shop, shop) != 0)
    {
        json_decref(b);
        dead->code = "Shops_InvalidEntry";
        snprintf(dead->reason, sizeof(dead->reason), "the body's "
                 "myshopify_domain is not the entry's shop");
        sbw_log(SBW_LOG_ERROR, "entry_invalid",
                json_pack("{s:s,s:s,s:s,s:s?}", "shop", shop, "message",
                          dead->reason, "stream_id", e->id, "webhook_id",
                          e->webhook_id));
        return SBW_SHOPS_DEAD;
    }

    json_decref(b);

    /* TODO: install times are ours, uninstall times Shopify's: no skew check */
    at_ms = e->received_at ? strtoll(e->received_at, NULL, 10) : 0;

    applied = sbw_shops_uninstall(conn, shop, at_ms, e->triggered_at, err,
                                  sizeof(err));

    if (applied < 0
        || sbw_shops_audit(conn, shop, "uninstalled", e->webhook_id,
                           json_pack("{s:b,s:s?}", "applied", applied,
                                     "triggered_at", e->triggered_at),
                           err, sizeof(err)) != 0)
    {
        sbw_log(SBW_LOG_WARN, "postgres_error",
                json_pack("{s:s,s:s}", "shop", shop, "message", err));
        return SBW_SHOPS_RETRY;
    }

    sbw_log(SBW_LOG_INFO, applied ? "shop_uninstalled"
                                  : "shop_uninstall_ignored",
            json_pack("{s:s,s:s?,s:s?,s:s}", "shop", shop,
                      "webhook_id", e->webhook_id,
                      "triggered_at", e->triggered_at,
                      "message", applied ? "tokens dropped, Shopify calls "
                                           "stopped; data kept until "
                                           "shop/redact"
                                         : "the shop has a later install "
                                           "or this uninstall already"));

    return SBW_SHOPS_ACK;
}


/*
 * One stream entry of a topic sbw_shops_handles() accepts.
 */
int
sbw_shops_entry(sbw_shops_ctx_t *ctx, PGconn *conn, redisContext *redis,
    const sbw_entry_t *e, sbw_shops_dead_t *dead)
{
    int          rc;
    char         shop[SBW_SHOP_DOMAIN_BUFLEN], err[512];
    const char  *topic;

    topic = e->topic ? e->topic : "";
    dead->code = "Shops_InvalidEntry";
    dead->reason[0] = '\0';

    if (sbw_shop_domain_normalize(e->shop, shop, sizeof(shop)) != 0) {
        snprintf(dead->reason, sizeof(dead->reason), "the entry's shop is "
                 "not a <name>.myshopify.com domain");
        sbw_log(SBW_LOG_ERROR, "entry_invalid",
                json_pack("{s:s,s:s,s:s,s:s?}", "topic", topic, "message",
                          dead->reason, "stream_id", e->id, "webhook_id",
                          e->webhook_id));
        return SBW_SHOPS_DEAD;
    }

    if (strcmp(topic, SBW_TOPIC_INSTALLED) == 0) {
        return sbw_shops_installed(ctx, conn, e, shop, dead);
    }

    if (strcmp(topic, "app/uninstalled") == 0) {
        return sbw_shops_uninstalled(ctx, conn, e, shop, dead);
    }

    rc = sbw_privacy_handle(conn, redis, ctx->conf, shop, e, err,
                            sizeof(err));

    if (rc == SBW_PRIVACY_INVALID) {
        dead->code = "Privacy_InvalidPayload";
        snprintf(dead->reason, sizeof(dead->reason), "%s", err);
        return SBW_SHOPS_DEAD;
    }

    return rc == SBW_PRIVACY_OK ? SBW_SHOPS_ACK : SBW_SHOPS_RETRY;
}


/* ---- maintenance thread ---------------------------------------------- */


typedef struct {
    const sbw_config_t         *conf;
    const sbw_shopify_conf_t   *sconf;
    volatile sig_atomic_t      *stop;
    pthread_t                   tid;
    int                         started;
} sbw_maint_t;


static sbw_maint_t  sbw_maint;


/*
 * Every SHOPIFY_MAINTENANCE_INTERVAL_MS: client-credentials shops get
 * their row, tokens within the refresh margin are renewed, due webhook
 * registrations run; every PURGE_INTERVAL_MS the retention purge.
 */
static void *
sbw_shops_maint_run(void *arg)
{
    int                   rc;
    char                  err[512], *token, **refresh, **webhooks;
    size_t                i, nrefresh, nwebhooks;
    double                next_purge;
    PGconn               *conn;
    sbw_maint_t          *m;
    sbw_stream_t          redis;
    sbw_shops_ctx_t      *ctx;
    struct timespec       ts;
    sbw_ensure_report_t   rep;

    m = arg;
    conn = NULL;
    memset(&redis, 0, sizeof(redis));
    redis.conf = m->conf;
    next_purge = 0;

    ctx = sbw_shops_ctx_new(m->conf, m->sconf, m->stop);
    if (ctx == NULL) {
        return NULL;
    }

    while (!*m->stop) {
        if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
            PQfinish(conn);
            conn = PQconnectdb(m->conf->database_url);

            if (PQstatus(conn) != CONNECTION_OK) {
                PQfinish(conn);
                conn = NULL;
                sbw_shops_sleep(ctx, m->sconf->maintenance_ms);
                continue;
            }
        }

        for (i = 0; m->sconf->enabled && i < m->sconf->ncc_shops; i++) {
            if (sbw_shops_ensure_cc(conn, m->sconf->cc_shops[i], err,
                                    sizeof(err)) != 0)
            {
                sbw_log(SBW_LOG_WARN, "postgres_error",
                        json_pack("{s:s}", "message", err));
            }
        }

        if (m->sconf->enabled
            && sbw_shops_due(conn, m->sconf->refresh_margin_ms, &refresh,
                             &nrefresh, &webhooks, &nwebhooks, err,
                             sizeof(err)) == 0)
        {
            /* tokens first: a registration then finds a fresh one */
            for (i = 0; i < nrefresh && !*m->stop; i++) {
                if (sbw_shops_lock(conn, refresh[i], 0, err, sizeof(err))
                    != 1)
                {
                    continue;
                }

                rc = sbw_shops_fetch_token(ctx, conn, refresh[i], 0, &token);
                sbw_token_free(token);
                sbw_shops_unlock(conn, refresh[i]);
                (void) rc;
            }

            for (i = 0; i < nwebhooks && !*m->stop; i++) {
                sbw_shops_ensure(ctx, conn, webhooks[i], 0, &rep);
                sbw_report_free(&rep);
            }

            sbw_gql_strv_free(refresh, nrefresh);
            sbw_gql_strv_free(webhooks, nwebhooks);
        }

        clock_gettime(CLOCK_MONOTONIC, &ts);

        if (m->sconf->retention_days > 0 && ts.tv_sec >= next_purge) {
            if (redis.ctx == NULL) {
                sbw_stream_connect(&redis);
            }

            if (sbw_privacy_purge(conn, redis.ctx, m->conf,
                                  m->sconf->retention_days, err,
                                  sizeof(err)) != 0)
            {
                sbw_log(SBW_LOG_WARN, "purge_failed",
                        json_pack("{s:s}", "message", err));
                sbw_stream_close(&redis);

            } else {
                next_purge = ts.tv_sec + m->sconf->purge_interval_ms / 1000.0;
            }
        }

        sbw_shops_sleep(ctx, m->sconf->maintenance_ms);
    }

    sbw_stream_close(&redis);
    PQfinish(conn);
    sbw_shops_ctx_free(ctx);

    return NULL;
}


int
sbw_shops_maint_start(const sbw_config_t *conf,
    const sbw_shopify_conf_t *sconf, volatile sig_atomic_t *stop)
{
    sbw_maint.conf = conf;
    sbw_maint.sconf = sconf;
    sbw_maint.stop = stop;

    if (pthread_create(&sbw_maint.tid, NULL, sbw_shops_maint_run,
                       &sbw_maint) != 0)
    {
        return -1;
    }

    sbw_maint.started = 1;
    return 0;
}


void
sbw_shops_maint_stop(void)
{
    if (sbw_maint.started) {
        pthread_join(sbw_maint.tid, NULL);
        sbw_maint.started = 0;
    }
}


/* ---- CLI: webhooks ensure --shop X, tokens encrypt --shop X ---------- */


/*
 * `tokens encrypt --shop <domain>`: the token on standard input (one
 * line) as the v1 blob the shops table and nginx use, with
 * SHOPIFY_TOKEN_KEY.  For seeding a shop by hand, and for tests.  There
 * is no decrypt command: tokens never leave the worker in clear.
 */
static int
sbw_shops_cli_encrypt(const char *shop)
{
    char           line[SBW_TOKEN_MAX_PLAIN + 2], *blob;
    size_t         n;
    const char    *hex;
    unsigned char  key[SBW_TOKEN_KEY_LEN];

    hex = getenv("SHOPIFY_TOKEN_KEY");

    if (sbw_token_key_parse(hex, key) != 0) {
        fputs("shopify-bc-worker: SHOPIFY_TOKEN_KEY must be 64 hex "
              "characters\n", stderr);
        return 2;
    }

    if (fgets(line, sizeof(line), stdin) == NULL) {
        fputs("shopify-bc-worker: no token on standard input\n", stderr);
        return 2;
    }

    n = strcspn(line, "\r\n");
    line[n] = '\0';

    blob = sbw_token_encrypt(key, shop, line);
    OPENSSL_cleanse(line, sizeof(line));
    OPENSSL_cleanse(key, sizeof(key));

    if (blob == NULL) {
        fputs("shopify-bc-worker: cannot encrypt (empty token?)\n", stderr);
        return 1;
    }

    puts(blob);
    free(blob);

    return 0;
}


/*
 * `webhooks ensure --shop <domain>` (argv[0] is "webhooks" or "tokens"):
 * one registration run now, waiting
 * for the shop's lock if a worker holds it.  Prints one JSON line with
 * what was kept, created and deleted.  Exit 0 done, 1 failed, 2 usage or
 * settings.
 */
int
sbw_shops_cli(int argc, char **argv)
{
    int                   rc, i;
    char                  err[1024], shop[SBW_SHOP_DOMAIN_BUFLEN];
    char                 *out;
    json_t               *result;
    PGconn               *conn;
    const char           *shop_arg;
    sbw_config_t          conf;
    sbw_shops_ctx_t      *ctx;
    sbw_shopify_conf_t    sconf;
    sbw_ensure_report_t   rep;
    static volatile sig_atomic_t  never;

    shop_arg = NULL;

    for (i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--shop") == 0 && i + 1 < argc) {
            shop_arg = argv[++i];

        } else if (strncmp(argv[i], "--shop=", 7) == 0) {
            shop_arg = argv[i] + 7;

        } else {
            shop_arg = NULL;
            break;
        }
    }

    if (argc < 2 || shop_arg == NULL
        || !((strcmp(argv[0], "webhooks") == 0
              && strcmp(argv[1], "ensure") == 0)
             || (strcmp(argv[0], "tokens") == 0
                 && strcmp(argv[1], "encrypt") == 0)))
    {
        fputs("usage: shopify-bc-worker webhooks ensure --shop "
              "<name>.myshopify.com\n"
              "       shopify-bc-worker tokens encrypt --shop "
              "<name>.myshopify.com < token\n", stderr);
        return 2;
    }

    if (sbw_shop_domain_normalize(shop_arg, shop, sizeof(shop)) != 0) {
        fprintf(stderr, "shopify-bc-worker: \"%s\" is not a "
                "<name>.myshopify.com domain\n", shop_arg);
        return 2;
    }

    if (strcmp(argv[0], "tokens") == 0) {
        return sbw_shops_cli_encrypt(shop);
    }

    if (sbw_config_load(&conf, sbw_getenv_process, NULL, err, sizeof(err))
        != 0)
    {
        sbw_log(SBW_LOG_ERROR, "config_invalid",
                json_pack("{s:s}", "message", err));
        return SBW_EXIT_CONFIG;
    }

    if (sbw_shopify_conf_load(&sconf, sbw_getenv_process, NULL, err,
                              sizeof(err)) != 0
        || !sconf.enabled)
    {
        sbw_log(SBW_LOG_ERROR, "config_invalid",
                json_pack("{s:s}", "message", sconf.enabled || err[0]
                          ? err : "SHOPIFY_CLIENT_ID is not set"));
        sbw_config_free(&conf);
        return SBW_EXIT_CONFIG;
    }

    sbw_log_set_level(conf.log_level);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    rc = 1;
    never = 0;
    ctx = sbw_shops_ctx_new(&conf, &sconf, &never);
    conn = PQconnectdb(conf.database_url);

    if (ctx == NULL || PQstatus(conn) != CONNECTION_OK) {
        sbw_log(SBW_LOG_ERROR, "postgres_unavailable",
                json_pack("{s:s}", "message", PQerrorMessage(conn)));
        goto done;
    }

    if (sbw_shops_migrate(conn, err, sizeof(err)) != 0) {
        sbw_log(SBW_LOG_ERROR, "migration_failed",
                json_pack("{s:s}", "message", err));
        goto done;
    }

    i = sbw_shops_ensure(ctx, conn, shop, 1, &rep);

    out = NULL;
    result = json_pack("{s:s,s:s,s:i,s:O,s:O,s:i}", "shop", shop,
                               "result", i == SBW_STEP_OK ? "ok"
                                         : i == SBW_STEP_STOPPED
                                           ? "not_active" : "failed",
                               "kept", (json_int_t) rep.kept,
                               "created", rep.created,
                               "deleted", rep.deleted,
                               "throttled_ms",
                               (json_int_t) rep.throttled_ms);
    if (result != NULL) {
        out = json_dumps(result, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(result);
    }

    sbw_report_free(&rep);

    if (out != NULL) {
        puts(out);
        free(out);
    }

    rc = i == SBW_STEP_OK ? 0 : 1;

done:

    PQfinish(conn);
    sbw_shops_ctx_free(ctx);
    sbw_shopify_conf_free(&sconf);
    sbw_config_free(&conf);
    curl_global_cleanup();

    return rc;
}
