/*
 * The Shopify app's life, worker side: installs recorded from the
 * shopify/installed entries nginx writes after OAuth, offline tokens
 * refreshed ahead of expiry (or client-credentials tokens fetched),
 * webhook subscriptions made to match the settings through the GraphQL
 * Admin API, uninstalls, and the privacy topics (privacy.c).
 *
 * Stream entries of these topics are handled by the worker threads
 * (sbw_shops_entry()); token refreshes, retried registrations and the
 * retention purge run in one maintenance thread per process.
 */

#ifndef SBW_SHOPS_H
#define SBW_SHOPS_H

#include <signal.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "config.h"
#include "shopify_conf.h"
#include "stream.h"


#define SBW_TOPIC_INSTALLED  "shopify/installed"

/* results of sbw_shops_entry() */
#define SBW_SHOPS_ACK     0      /* done: acknowledge the entry */
#define SBW_SHOPS_RETRY   1      /* leave pending, try again later */
#define SBW_SHOPS_DEAD    2      /* dead-letter (code, reason), then ack */


typedef struct sbw_shops_ctx_s  sbw_shops_ctx_t;


typedef struct {
    const char  *code;
    char         reason[512];
} sbw_shops_dead_t;


int sbw_shops_handles(const char *topic);
sbw_shops_ctx_t *sbw_shops_ctx_new(const sbw_config_t *conf,
    const sbw_shopify_conf_t *sconf, volatile sig_atomic_t *stop);
void sbw_shops_ctx_free(sbw_shops_ctx_t *ctx);
int sbw_shops_entry(sbw_shops_ctx_t *ctx, PGconn *conn, redisContext *redis,
    const sbw_entry_t *e, sbw_shops_dead_t *dead);

int sbw_shops_maint_start(const sbw_config_t *conf,
    const sbw_shopify_conf_t *sconf, volatile sig_atomic_t *stop);
void sbw_shops_maint_stop(void);

int sbw_shops_cli(int argc, char **argv);


#endif /* SBW_SHOPS_H */
