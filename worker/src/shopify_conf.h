/*
 * Settings of the Shopify app side of the worker: the app's
 * credentials, the token encryption key, the webhook subscriptions each
 * shop must have, token refresh, privacy retention.  Read from the
 * environment like the rest (see the top README's settings table).
 *
 * SHOPIFY_CLIENT_ID turns the Shopify API side on (token refresh,
 * webhook registration); SHOPIFY_CLIENT_SECRET (or _FILE),
 * SHOPIFY_TOKEN_KEY and SHOPIFY_WEBHOOK_CALLBACK_URL are then required.
 * Uninstalls and privacy requests are handled either way: they need
 * only PostgreSQL and Redis.
 */

#ifndef SBW_SHOPIFY_CONF_H
#define SBW_SHOPIFY_CONF_H

#include <stddef.h>

#include "config.h"
#include "crypto.h"


#define SBW_SHOPIFY_DEFAULT_API_VERSION  "2025-10"
#define SBW_SHOPIFY_DEFAULT_TOPICS       "app/uninstalled,orders/create"

/* room for a shop domain */
#define SBW_SHOP_DOMAIN_BUFLEN  256


typedef struct {
    int             enabled;           /* SHOPIFY_CLIENT_ID is set */
    int             have_key;
    unsigned char   key[SBW_TOKEN_KEY_LEN];

    char           *client_id;
    char           *client_secret;
    char           *api_version;
    char           *callback_url;
    char          **topics;            /* "orders/create" form, sorted */
    size_t          ntopics;
    char          **cc_shops;          /* client-credentials shops */
    size_t          ncc_shops;

    char           *connect_to;        /* tests: "host:port" */
    char           *ca_file;           /* tests: CA bundle */

    long            refresh_margin_ms;
    long            maintenance_ms;
    long            connect_timeout_ms;
    long            timeout_ms;
    long            throttle_max_wait_ms;
    long            retention_days;    /* 0: payloads kept until trimmed */
    long            purge_interval_ms;
} sbw_shopify_conf_t;


int sbw_shopify_conf_load(sbw_shopify_conf_t *c, sbw_getenv_pt get,
    void *ctx, char *err, size_t errlen);
void sbw_shopify_conf_free(sbw_shopify_conf_t *c);
int sbw_shop_domain_normalize(const char *in, char *out, size_t outlen);
int sbw_shopify_topic_enum(const char *topic, char *out, size_t outlen);
int sbw_shopify_topic_wanted(const sbw_shopify_conf_t *c,
    const char *topic_enum);
int sbw_shopify_is_cc_shop(const sbw_shopify_conf_t *c, const char *shop);


#endif /* SBW_SHOPIFY_CONF_H */
