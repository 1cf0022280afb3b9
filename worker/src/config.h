/*
 * Worker settings, all read from the environment (see
 * README-settings.md for the table of names, defaults and meanings).
 */

#ifndef SBW_CONFIG_H
#define SBW_CONFIG_H

#include <stddef.h>

#include <jansson.h>


/* exit status for a configuration the worker cannot run with */
#define SBW_EXIT_CONFIG  2

/* BC365_CUSTOMER_STRATEGY: how an order's BC customer is chosen */
#define SBW_CUSTOMER_DEFAULT  0    /* always BC365_DEFAULT_CUSTOMER */
#define SBW_CUSTOMER_EMAIL    1    /* the customer with the order's e-mail */
#define SBW_CUSTOMER_CREATE   2    /* by e-mail, created when BC has none */

/* BC365_ORDER_MONEY: which of Shopify's two amounts a document takes */
#define SBW_MONEY_SHOP         0
#define SBW_MONEY_PRESENTMENT  1

/* BC365_TAX_POLICY */
#define SBW_TAX_VARIANCE  0    /* BC computes tax; rounding line if close */
#define SBW_TAX_LINE      1    /* Shopify's tax as its own G/L line */


typedef struct {
    char  *host;          /* NULL for a unix socket */
    int    port;
    char  *path;          /* unix socket path, NULL for TCP */
    char  *user;          /* ACL user (Redis 6+), NULL for none */
    char  *password;      /* NULL for none */
    int    db;
} sbw_redis_url_t;


typedef struct {
    sbw_redis_url_t   redis;
    char             *database_url;      /* libpq form, +driver dropped */

    json_t           *sku_map;           /* object sku -> item no */
    json_t           *variant_map;       /* object "variant id" -> no */

    char             *tenant;
    char             *client_id;
    char             *client_secret;
    char             *environment;
    char             *company_id;
    char             *api_base;
    char             *auth_base;
    char             *scope;
    char             *default_customer;
    char             *shipping_account;
    char             *tip_account;       /* NULL: tips are refused */
    char             *gift_card_account; /* NULL: gift cards are refused */
    char             *custom_line_account;   /* NULL: refused */
    int               customer_strategy;

    /* order sync (see orders_sync.c) */
    json_t           *companies;         /* object shop -> company id */
    char             *rounding_account;  /* NULL: variances go to review */
    char             *tax_account;       /* BC365_TAX_POLICY=line */
    char             *nontaxable_code;   /* NULL: taxCode never sent */
    int               order_money;
    int               tax_policy;
    long              tax_tolerance;     /* cents, -1: auto */

    char             *stream_key;
    char             *group;
    char             *worker_name;

    char             *metrics_host;      /* NULL: metrics disabled */
    int               metrics_port;

    int               log_level;
    int               concurrency;
    int               stream_batch;
    int               bc_max_concurrent;
    int               rate_requests;
    int               retry_queue_max;

    long              rate_window_ms;
    long              connect_timeout_ms;
    long              timeout_ms;
    long              redis_timeout_ms;
    long              block_ms;
    long              claim_idle_ms;
    long              claim_interval_ms;
    long              trim_interval_ms;
    long              retry_base_ms;
    long              retry_max_ms;
    long              retry_after_max_ms;

    long              indoubt_wait_ms;   /* BC365_INDOUBT_WAIT_MS */
    int               max_deliveries;    /* 0: no limit */
    long              dup_check_interval_ms;  /* 0: no periodic check */
    int               dup_remove;        /* remove a safe duplicate */
} sbw_config_t;


/* where settings come from: getenv() in the daemon, a table in tests */
typedef const char *(*sbw_getenv_pt)(const char *name, void *ctx);


int sbw_config_load(sbw_config_t *c, sbw_getenv_pt get, void *ctx,
    char *err, size_t errlen);
void sbw_config_free(sbw_config_t *c);
int sbw_redis_url_parse(const char *url, sbw_redis_url_t *out,
    char *err, size_t errlen);
void sbw_redis_url_free(sbw_redis_url_t *u);
char *sbw_database_url_normalize(const char *url, char *err, size_t errlen);
json_t *sbw_variant_map_from_json(const json_t *in, char *err,
    size_t errlen);
const char *sbw_getenv_process(const char *name, void *ctx);


#endif /* SBW_CONFIG_H */
