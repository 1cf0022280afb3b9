
/*
 * Shopify webhook intake for nginx.
 *
 * A location with "shopify_webhook" reads the whole delivery body, checks
 * its X-Shopify-Hmac-Sha256 signature over the raw bytes, then hands the
 * delivery to Redis (see ngx_http_shopify_redis.c), where one script
 * checks the webhook id against earlier deliveries and appends the entry
 * to a stream.  The answer is 200 only once Redis has acknowledged.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "ngx_http_shopify_module.h"


#define NGX_HTTP_SHOPIFY_DIGEST_LEN   32


/* the delivery headers, by name without the "x-shopify-" prefix */
typedef enum {
    NGX_HTTP_SHOPIFY_H_HMAC = 0,
    NGX_HTTP_SHOPIFY_H_TOPIC,
    NGX_HTTP_SHOPIFY_H_SHOP,
    NGX_HTTP_SHOPIFY_H_WEBHOOK_ID,
    NGX_HTTP_SHOPIFY_H_API_VERSION,
    NGX_HTTP_SHOPIFY_H_TRIGGERED_AT,
    NGX_HTTP_SHOPIFY_H_EVENT_ID,
    NGX_HTTP_SHOPIFY_H_MAX
} ngx_http_shopify_header_e;


typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  display;
    ngx_uint_t                 required;    /* unsigned:1 */
    ngx_uint_t                 max_len;
    ngx_int_t                (*valid)(ngx_str_t *v);
} ngx_http_shopify_header_t;


/* a secret's keyed HMAC state, copied for every delivery */
typedef struct {
    EVP_MAC_CTX               *mac;
} ngx_http_shopify_secret_t;


static ngx_int_t ngx_http_shopify_webhook_handler(ngx_http_request_t *r);
static void ngx_http_shopify_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_shopify_flatten_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_shopify_verify(ngx_http_request_t *r,
    ngx_http_shopify_loc_conf_t *slcf, ngx_str_t *header, ngx_str_t *body);
static ngx_int_t ngx_http_shopify_build_command(ngx_http_request_t *r,
    ngx_http_shopify_loc_conf_t *slcf, ngx_http_shopify_ctx_t *ctx,
    ngx_str_t *h, ngx_str_t *body);
static ngx_str_t *ngx_http_shopify_header_or_dash(ngx_str_t *h,
    ngx_uint_t *seen, ngx_uint_t k);
static ngx_uint_t ngx_http_shopify_topic_allowed(
    ngx_http_shopify_loc_conf_t *slcf, ngx_http_shopify_ctx_t *ctx);
static void ngx_http_shopify_timeout_handler(ngx_event_t *ev);
static void ngx_http_shopify_ctx_cleanup(void *data);
static void ngx_http_shopify_finish(ngx_http_request_t *r,
    ngx_http_shopify_outcome_e outcome);
static ngx_int_t ngx_http_shopify_respond(ngx_http_request_t *r,
    ngx_http_shopify_outcome_e outcome);
static ngx_int_t ngx_http_shopify_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *type, ngx_str_t *body);
static ngx_int_t ngx_http_shopify_health_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_shopify_status_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_shopify_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_shopify_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_shopify_add_variables(ngx_conf_t *cf);
static uint64_t ngx_http_shopify_usec(void);

static ngx_int_t ngx_http_shopify_valid_topic(ngx_str_t *v);
static ngx_int_t ngx_http_shopify_valid_shop(ngx_str_t *v);
static ngx_int_t ngx_http_shopify_valid_token(ngx_str_t *v);

static void *ngx_http_shopify_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_shopify_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_shopify_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_shopify_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_shopify_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_shopify_webhook(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_shopify_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_shopify_health(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_shopify_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_shopify_allow_topics(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static void ngx_http_shopify_secrets_cleanup(void *data);
static ngx_int_t ngx_http_shopify_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_shopify_init_process(ngx_cycle_t *cycle);
static void ngx_http_shopify_exit_process(ngx_cycle_t *cycle);


static ngx_http_shopify_header_t  ngx_http_shopify_headers[] = {

    { ngx_string("hmac-sha256"), ngx_string("X-Shopify-Hmac-Sha256"),
      1, 128, NULL },

    { ngx_string("topic"), ngx_string("X-Shopify-Topic"),
      1, 128, ngx_http_shopify_valid_topic },

    { ngx_string("shop-domain"), ngx_string("X-Shopify-Shop-Domain"),
      1, 255, ngx_http_shopify_valid_shop },

    { ngx_string("webhook-id"), ngx_string("X-Shopify-Webhook-Id"),
      1, 128, ngx_http_shopify_valid_token },

    { ngx_string("api-version"), ngx_string("X-Shopify-API-Version"),
      1, 32, ngx_http_shopify_valid_token },

    { ngx_string("triggered-at"), ngx_string("X-Shopify-Triggered-At"),
      0, 64, ngx_http_shopify_valid_token },

    { ngx_string("event-id"), ngx_string("X-Shopify-Event-Id"),
      0, 128, ngx_http_shopify_valid_token }
};


/* the topics the product handles; each always goes to the stream */
static ngx_str_t  ngx_http_shopify_topics[NGX_HTTP_SHOPIFY_NTOPICS] = {
    ngx_string("unverified"),
    ngx_string("orders/create"),
    ngx_string("orders/updated"),
    ngx_string("orders/cancelled"),
    ngx_string("products/update"),
    ngx_string("inventory_levels/update"),
    ngx_string("app/uninstalled"),
    ngx_string("customers/data_request"),
    ngx_string("customers/redact"),
    ngx_string("shop/redact"),
    ngx_string("other")
};


typedef struct {
    ngx_uint_t                 status;
    ngx_str_t                  body;
} ngx_http_shopify_answer_t;


/* the answer for each outcome, by ngx_http_shopify_outcome_e */
static ngx_http_shopify_answer_t  ngx_http_shopify_answers[] = {
    { NGX_HTTP_OK, ngx_string("{\"status\":\"accepted\"}\n") },
    { NGX_HTTP_OK, ngx_string("{\"status\":\"duplicate\"}\n") },
    { NGX_HTTP_OK, ngx_string("{\"status\":\"ignored\"}\n") },
    { NGX_HTTP_UNAUTHORIZED,
      ngx_string("{\"error\":\"invalid signature\"}\n") },
    { NGX_HTTP_BAD_REQUEST,
      ngx_string("{\"error\":\"missing or malformed delivery headers\"}\n") },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
      ngx_string("{\"error\":\"body too large\"}\n") },
    { NGX_HTTP_NOT_ALLOWED,
      ngx_string("{\"error\":\"method not allowed\"}\n") },
    { NGX_HTTP_SERVICE_UNAVAILABLE,
      ngx_string("{\"error\":\"queue unavailable\"}\n") }
};


static ngx_str_t  ngx_http_shopify_outcomes[] = {
    ngx_string("accepted"),
    ngx_string("duplicate"),
    ngx_string("ignored"),
    ngx_string("bad_signature"),
    ngx_string("bad_request"),
    ngx_string("too_large"),
    ngx_string("not_allowed"),
    ngx_string("unavailable")
};


#define NGX_HTTP_SHOPIFY_VAR_TOPIC       0
#define NGX_HTTP_SHOPIFY_VAR_SHOP        1
#define NGX_HTTP_SHOPIFY_VAR_WEBHOOK_ID  2
#define NGX_HTTP_SHOPIFY_VAR_OUTCOME     3
#define NGX_HTTP_SHOPIFY_VAR_ENTRY_ID    4


static ngx_http_variable_t  ngx_http_shopify_vars[] = {

    { ngx_string("shopify_topic"), NULL, ngx_http_shopify_variable,
      NGX_HTTP_SHOPIFY_VAR_TOPIC, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("shopify_shop"), NULL, ngx_http_shopify_variable,
      NGX_HTTP_SHOPIFY_VAR_SHOP, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("shopify_webhook_id"), NULL, ngx_http_shopify_variable,
      NGX_HTTP_SHOPIFY_VAR_WEBHOOK_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("shopify_outcome"), NULL, ngx_http_shopify_variable,
      NGX_HTTP_SHOPIFY_VAR_OUTCOME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("shopify_entry_id"), NULL, ngx_http_shopify_variable,
      NGX_HTTP_SHOPIFY_VAR_ENTRY_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_command_t  ngx_http_shopify_commands[] = {

    { ngx_string("shopify_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_shopify_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("shopify_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_shopify_main_conf_t, connect_timeout),
      NULL },

    { ngx_string("shopify_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_shopify_main_conf_t, timeout),
      NULL },

    { ngx_string("shopify_webhook"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_shopify_webhook,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("shopify_webhook_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_shopify_secret,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("shopify_webhook_stream"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_loc_conf_t, stream),
      NULL },

    { ngx_string("shopify_webhook_dedupe_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_loc_conf_t, dedupe_ttl),
      NULL },

    { ngx_string("shopify_webhook_retry_after"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_loc_conf_t, retry_after),
      NULL },

    { ngx_string("shopify_webhook_allow_topics"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_shopify_allow_topics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("shopify_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_shopify_health,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("shopify_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_shopify_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_shopify_module_ctx = {
    ngx_http_shopify_add_variables,        /* preconfiguration */
    ngx_http_shopify_init,                 /* postconfiguration */

    ngx_http_shopify_create_main_conf,     /* create main configuration */
    ngx_http_shopify_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_shopify_create_loc_conf,      /* create location configuration */
    ngx_http_shopify_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_shopify_module = {
    NGX_MODULE_V1,
    &ngx_http_shopify_module_ctx,          /* module context */
    ngx_http_shopify_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_shopify_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_shopify_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};




static ngx_int_t
ngx_http_shopify_webhook_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (r->method != NGX_HTTP_POST) {
        rc = ngx_http_discard_request_body(r);

        if (rc != NGX_OK) {
            return rc;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify webhook: method \"%V\" not allowed",
                      &r->method_name);

        return ngx_http_shopify_respond(r, NGX_HTTP_SHOPIFY_NOT_ALLOWED);
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_shopify_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * Runs once the whole body is read.  Ends the request exactly once: at
 * once for a delivery that is refused, or from the Redis reply callback.
 */

static void
ngx_http_shopify_body_handler(ngx_http_request_t *r)
{
    u_char                        *lowcase;
    size_t                         len, prefix;
    ngx_str_t                      body, h[NGX_HTTP_SHOPIFY_H_MAX];
    ngx_str_t                     *id, *shop;
    ngx_int_t                      rc;
    ngx_uint_t                     i, k, seen[NGX_HTTP_SHOPIFY_H_MAX];
    ngx_list_part_t               *part;
    ngx_table_elt_t               *header;
    ngx_pool_cleanup_t            *cln;
    ngx_http_shopify_ctx_t        *ctx;
    ngx_http_shopify_header_t     *sh;
    ngx_http_shopify_loc_conf_t   *slcf;
    ngx_http_shopify_main_conf_t  *smcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_module);
    smcf = ngx_http_get_module_main_conf(r, ngx_http_shopify_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_shopify_ctx_t));
    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cln->handler = ngx_http_shopify_ctx_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_shopify_module);

    ngx_memzero(h, sizeof(h));
    ngx_memzero(seen, sizeof(seen));

    /* one pass over the headers; both spellings, any letter case */

    part = &r->headers_in.headers.part;
    header = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            header = part->elts;
            i = 0;
        }

        lowcase = header[i].lowcase_key;
        len = header[i].key.len;

        if (len > 10 && ngx_strncmp(lowcase, "x-shopify-", 10) == 0) {
            prefix = 10;

        } else if (len > 8 && ngx_strncmp(lowcase, "shopify-", 8) == 0) {
            prefix = 8;

        } else {
            continue;
        }

        for (k = 0; k < NGX_HTTP_SHOPIFY_H_MAX; k++) {
            sh = &ngx_http_shopify_headers[k];

            if (len - prefix == sh->name.len
                && ngx_strncmp(lowcase + prefix, sh->name.data, sh->name.len)
                   == 0)
            {
                h[k] = header[i].value;
                seen[k]++;
                break;
            }
        }
    }

    if (ngx_http_shopify_flatten_body(r, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* the signature first: nothing else is trusted before it */

    if (seen[NGX_HTTP_SHOPIFY_H_HMAC] != 1) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify webhook: %s X-Shopify-Hmac-Sha256 header",
                      seen[NGX_HTTP_SHOPIFY_H_HMAC] ? "repeated" : "no");

        ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_BAD_SIGNATURE);
        return;
    }

    rc = ngx_http_shopify_verify(r, slcf, &h[NGX_HTTP_SHOPIFY_H_HMAC], &body);

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_BAD_SIGNATURE);
        return;
    }

    for (k = 1; k < NGX_HTTP_SHOPIFY_H_MAX; k++) {
        sh = &ngx_http_shopify_headers[k];

        if (seen[k] == 0 && !sh->required) {
            continue;
        }

        if (seen[k] == 0 || seen[k] > 1 || h[k].len == 0
            || h[k].len > sh->max_len
            || (sh->valid && sh->valid(&h[k]) != NGX_OK))
        {
            /* name the delivery by whatever is well formed about it */
            id = ngx_http_shopify_header_or_dash(h, seen,
                                             NGX_HTTP_SHOPIFY_H_WEBHOOK_ID);
            shop = ngx_http_shopify_header_or_dash(h, seen,
                                                   NGX_HTTP_SHOPIFY_H_SHOP);

            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "shopify webhook: %s %V header "
                          "(webhook id %V, shop %V)",
                          seen[k] == 0 ? "no"
                          : seen[k] > 1 ? "repeated" : "malformed",
                          &sh->display, id, shop);

            ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_BAD_REQUEST);
            return;
        }
    }

    if (body.len == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify webhook: empty body");

        ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_BAD_REQUEST);
        return;
    }

    ctx->topic = h[NGX_HTTP_SHOPIFY_H_TOPIC];
    ctx->webhook_id = h[NGX_HTTP_SHOPIFY_H_WEBHOOK_ID];

    /* host names are case-insensitive: one shop, one spelling */
    ctx->shop.len = h[NGX_HTTP_SHOPIFY_H_SHOP].len;
    ctx->shop.data = ngx_pnalloc(r->pool, ctx->shop.len);
    if (ctx->shop.data == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_strlow(ctx->shop.data, h[NGX_HTTP_SHOPIFY_H_SHOP].data,
               ctx->shop.len);
    h[NGX_HTTP_SHOPIFY_H_SHOP] = ctx->shop;

    if (!ngx_http_shopify_topic_allowed(slcf, ctx)) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify webhook: topic \"%V\" from \"%V\" (id %V) "
                      "is not handled, ignored", &ctx->topic, &ctx->shop,
                      &ctx->webhook_id);

        ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_IGNORED);
        return;
    }

    if (ngx_http_shopify_build_command(r, slcf, ctx, h, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->start = ngx_http_shopify_usec();

    rc = ngx_http_shopify_redis_send(r, ctx);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify webhook: \"%V\" from \"%V\" (id %V) "
                      "not enqueued: redis %s", &ctx->topic, &ctx->shop,
                      &ctx->webhook_id, ngx_http_shopify_redis_state());

        ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_UNAVAILABLE);
        return;
    }

    /* a client that goes away while Redis works is noticed */
    r->read_event_handler = ngx_http_test_reading;

    ctx->timeout.handler = ngx_http_shopify_timeout_handler;
    ctx->timeout.data = r;
    ctx->timeout.log = r->connection->log;

    ngx_add_timer(&ctx->timeout, smcf->timeout);
}


/* a header's value for a log line when it is present once and well formed */

static ngx_str_t *
ngx_http_shopify_header_or_dash(ngx_str_t *h, ngx_uint_t *seen, ngx_uint_t k)
{
    ngx_http_shopify_header_t  *sh;

    static ngx_str_t  dash = ngx_string("-");

    sh = &ngx_http_shopify_headers[k];

    if (seen[k] != 1 || h[k].len == 0 || h[k].len > sh->max_len
        || (sh->valid && sh->valid(&h[k]) != NGX_OK))
    {
        return &dash;
    }

    return &h[k];
}


/*
 * Finds the topic's index for the metrics and decides whether it goes to
 * the stream: the product's topics always, others when allowed.
 */

static ngx_uint_t
ngx_http_shopify_topic_allowed(ngx_http_shopify_loc_conf_t *slcf,
    ngx_http_shopify_ctx_t *ctx)
{
    ngx_str_t   *allowed;
    ngx_uint_t   i;

    for (i = 1; i < NGX_HTTP_SHOPIFY_TOPIC_OTHER; i++) {
        if (ctx->topic.len == ngx_http_shopify_topics[i].len
            && ngx_strncmp(ctx->topic.data, ngx_http_shopify_topics[i].data,
                           ctx->topic.len)
               == 0)
        {
            ctx->topic_index = i;
            return 1;
        }
    }

    ctx->topic_index = NGX_HTTP_SHOPIFY_TOPIC_OTHER;

    if (slcf->allow_topics == NGX_CONF_UNSET_PTR) {
        return 0;
    }

    allowed = slcf->allow_topics->elts;

    for (i = 0; i < slcf->allow_topics->nelts; i++) {
        if (ctx->topic.len == allowed[i].len
            && ngx_strncmp(ctx->topic.data, allowed[i].data, ctx->topic.len)
               == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The body as one contiguous piece: the chain's single memory buffer when
 * that is what nginx kept, otherwise a copy of every buffer and of the
 * parts spilled to the temporary file.
 */

static ngx_int_t
ngx_http_shopify_flatten_body(ngx_http_request_t *r, ngx_str_t *body)
{
    off_t         size;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        ngx_str_set(body, "");
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && ngx_buf_in_memory(cl->buf)) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        size += ngx_buf_in_memory(b) ? b->last - b->pos
                                     : b->file_last - b->file_pos;
    }

    p = ngx_pnalloc(r->pool, (size_t) size + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = (size_t) size;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        size = b->file_last - b->file_pos;

        while (size > 0) {
            n = ngx_read_file(b->file, p, (size_t) size,
                              b->file_last - size);

            if (n == NGX_ERROR) {
                return NGX_ERROR;
            }

            if (n == 0) {
                ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                              "shopify webhook: request body file \"%V\" "
                              "is shorter than expected", &b->file->name);
                return NGX_ERROR;
            }

            p += n;
            size -= n;
        }
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "shopify webhook body copied, %uz bytes", body->len);

    return NGX_OK;
}


/*
 * Checks the base64 HMAC-SHA256 header against every configured secret
 * (several during a rotation), comparing the digests in constant time.
 */

static ngx_int_t
ngx_http_shopify_verify(ngx_http_request_t *r,
    ngx_http_shopify_loc_conf_t *slcf, ngx_str_t *header, ngx_str_t *body)
{
    u_char                      given[96], mac[EVP_MAX_MD_SIZE];
    size_t                      maclen;
    ngx_str_t                   decoded;
    ngx_uint_t                  i, match;
    EVP_MAC_CTX                *ctx;
    ngx_http_shopify_secret_t  *secrets;

    if (header->len != ngx_base64_encoded_length(NGX_HTTP_SHOPIFY_DIGEST_LEN))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify webhook: malformed X-Shopify-Hmac-Sha256 "
                      "header");
        return NGX_DECLINED;
    }

    decoded.data = given;

    if (ngx_decode_base64(&decoded, header) != NGX_OK
        || decoded.len != NGX_HTTP_SHOPIFY_DIGEST_LEN)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify webhook: malformed X-Shopify-Hmac-Sha256 "
                      "header");
        return NGX_DECLINED;
    }

    secrets = slcf->secrets->elts;
    match = 0;

    for (i = 0; i < slcf->secrets->nelts; i++) {

        ctx = EVP_MAC_CTX_dup(secrets[i].mac);
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        if (EVP_MAC_update(ctx, body->data, body->len) != 1
            || EVP_MAC_final(ctx, mac, &maclen, sizeof(mac)) != 1
            || maclen != NGX_HTTP_SHOPIFY_DIGEST_LEN)
        {
            EVP_MAC_CTX_free(ctx);
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "shopify webhook: HMAC computation failed");
            return NGX_ERROR;
        }

        EVP_MAC_CTX_free(ctx);

        if (CRYPTO_memcmp(mac, given, NGX_HTTP_SHOPIFY_DIGEST_LEN) == 0) {
            match = i + 1;
            break;
        }
    }

    if (match == 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify webhook: signature does not match any "
                      "configured secret, %uz body bytes", body->len);
        return NGX_DECLINED;
    }

    if (match > 1) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify webhook: signature matched secret #%ui, "
                      "not the first one", match);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "shopify webhook signature verified with secret #%ui",
                   match);

    return NGX_OK;
}


/*
 * The enqueue script's arguments: the stream, one dedupe key for the
 * webhook id and, when the delivery names its event, one for the event
 * within its shop and topic (one event reaches every subscription), the
 * keys' ttl, then the entry's fields.
 */

static ngx_int_t
ngx_http_shopify_build_command(ngx_http_request_t *r,
    ngx_http_shopify_loc_conf_t *slcf, ngx_http_shopify_ctx_t *ctx,
    ngx_str_t *h, ngx_str_t *body)
{
    u_char      *p, *received;
    ngx_str_t    key, value[NGX_HTTP_SHOPIFY_NFIELDS];
    ngx_uint_t   i, n, nkeys;
    ngx_time_t  *tp;

    static ngx_str_t  fields[NGX_HTTP_SHOPIFY_NFIELDS] = {
        ngx_string("topic"), ngx_string("shop"), ngx_string("webhook_id"),
        ngx_string("api_version"), ngx_string("triggered_at"),
        ngx_string("event_id"), ngx_string("received_at"),
        ngx_string("body")
    };

    static ngx_str_t  nkeys_text[] = { ngx_string("2"), ngx_string("3") };

    /* argv[0] and argv[1] (command, script) are set when sending */

    n = 3;

    ctx->argv[n] = (const char *) slcf->stream.data;
    ctx->argvlen[n++] = slcf->stream.len;

    key.len = slcf->stream.len + sizeof(":seen:") - 1 + ctx->webhook_id.len;
    key.data = ngx_pnalloc(r->pool, key.len);
    if (key.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key.data, slcf->stream.data, slcf->stream.len);
    p = ngx_cpymem(p, ":seen:", sizeof(":seen:") - 1);
    ngx_memcpy(p, ctx->webhook_id.data, ctx->webhook_id.len);

    ctx->argv[n] = (const char *) key.data;
    ctx->argvlen[n++] = key.len;
    nkeys = 2;

    if (h[NGX_HTTP_SHOPIFY_H_EVENT_ID].len) {
        key.len = slcf->stream.len + sizeof(":seen-event:") - 1
                  + ctx->shop.len + 1 + ctx->topic.len + 1
                  + h[NGX_HTTP_SHOPIFY_H_EVENT_ID].len;
        key.data = ngx_pnalloc(r->pool, key.len);
        if (key.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(key.data, slcf->stream.data, slcf->stream.len);
        p = ngx_cpymem(p, ":seen-event:", sizeof(":seen-event:") - 1);
        p = ngx_cpymem(p, ctx->shop.data, ctx->shop.len);
        *p++ = ':';
        p = ngx_cpymem(p, ctx->topic.data, ctx->topic.len);
        *p++ = ':';
        ngx_memcpy(p, h[NGX_HTTP_SHOPIFY_H_EVENT_ID].data,
                   h[NGX_HTTP_SHOPIFY_H_EVENT_ID].len);

        ctx->argv[n] = (const char *) key.data;
        ctx->argvlen[n++] = key.len;
        nkeys = 3;
    }

    ctx->argv[2] = (const char *) nkeys_text[nkeys - 2].data;
    ctx->argvlen[2] = nkeys_text[nkeys - 2].len;

    ctx->argv[n] = (const char *) slcf->ttl_text.data;
    ctx->argvlen[n++] = slcf->ttl_text.len;

    received = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 3);
    if (received == NULL) {
        return NGX_ERROR;
    }

    tp = ngx_timeofday();

    value[0] = ctx->topic;
    value[1] = ctx->shop;
    value[2] = ctx->webhook_id;
    value[3] = h[NGX_HTTP_SHOPIFY_H_API_VERSION];
    value[4] = h[NGX_HTTP_SHOPIFY_H_TRIGGERED_AT];
    value[5] = h[NGX_HTTP_SHOPIFY_H_EVENT_ID];
    value[6].data = received;
    value[6].len = ngx_sprintf(received, "%T%03M", tp->sec, tp->msec)
                   - received;
    value[7] = *body;

    for (i = 0; i < NGX_HTTP_SHOPIFY_NFIELDS; i++) {
        ctx->argv[n] = (const char *) fields[i].data;
        ctx->argvlen[n++] = fields[i].len;

        /* hiredis wants a pointer even for an empty value */
        ctx->argv[n] = value[i].len ? (const char *) value[i].data : "";
        ctx->argvlen[n++] = value[i].len;
    }

    ctx->nargs = n;

    return NGX_OK;
}


/* called from the Redis reply callback with the script's answer */

void
ngx_http_shopify_enqueue_done(ngx_http_request_t *r,
    ngx_http_shopify_reply_e reply, ngx_str_t *detail)
{
    ngx_connection_t        *c;
    ngx_http_shopify_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);

    ctx->token = NULL;

    switch (reply) {

    case NGX_HTTP_SHOPIFY_REPLY_ENQUEUED:
    case NGX_HTTP_SHOPIFY_REPLY_DUPLICATE:
    case NGX_HTTP_SHOPIFY_REPLY_DUPLICATE_EVENT:

        ngx_http_shopify_metrics_latency(ngx_http_shopify_usec()
                                         - ctx->start);

        /* the entry id, for $shopify_entry_id */
        ctx->entry_id.data = ngx_pstrdup(r->pool, detail);
        ctx->entry_id.len = ctx->entry_id.data ? detail->len : 0;

        if (reply == NGX_HTTP_SHOPIFY_REPLY_ENQUEUED) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "shopify webhook enqueued as %V", detail);

            ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_ACCEPTED);
            break;
        }

        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "shopify webhook: duplicate delivery %V of \"%V\" "
                      "from \"%V\" (same %s), first enqueued as %V",
                      &ctx->webhook_id, &ctx->topic, &ctx->shop,
                      reply == NGX_HTTP_SHOPIFY_REPLY_DUPLICATE
                      ? "webhook id" : "event id", detail);

        ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_DUPLICATE);
        break;

    case NGX_HTTP_SHOPIFY_REPLY_NOSCRIPT:
        if (!ctx->eval_fallback) {
            /* the script cache was flushed: send the script itself */
            ctx->eval_fallback = 1;

            if (ngx_http_shopify_redis_send(r, ctx) == NGX_OK) {
                return;
            }
        }

        /* fall through */

    default:
        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "shopify webhook: \"%V\" from \"%V\" (id %V) "
                      "not enqueued: %V", &ctx->topic, &ctx->shop,
                      &ctx->webhook_id, detail);

        ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_UNAVAILABLE);
        break;
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_shopify_timeout_handler(ngx_event_t *ev)
{
    ngx_uint_t                     sent;
    ngx_connection_t              *c;
    ngx_http_request_t            *r;
    ngx_http_shopify_ctx_t        *ctx;
    ngx_http_shopify_main_conf_t  *smcf;

    r = ev->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);
    smcf = ngx_http_get_module_main_conf(r, ngx_http_shopify_module);

    sent = (ctx->token != NULL);

    if (ctx->token) {
        /* the reply may still come; its callback will find no request */
        ctx->token->request = NULL;
        ctx->token = NULL;
    }

    ngx_http_shopify_redis_unwait(ctx);

    ngx_log_error(NGX_LOG_WARN, c->log, 0,
                  "shopify webhook: \"%V\" from \"%V\" (id %V) not "
                  "enqueued: redis did not answer within %M ms",
                  &ctx->topic, &ctx->shop, &ctx->webhook_id, smcf->timeout);

    ngx_http_shopify_finish(r, NGX_HTTP_SHOPIFY_UNAVAILABLE);

    ngx_http_run_posted_requests(c);

    if (sent) {
        /* later commands queue behind the stuck one: start afresh */
        ngx_http_shopify_redis_reset(ngx_cycle->log, "reply timed out");
    }
}


static void
ngx_http_shopify_ctx_cleanup(void *data)
{
    ngx_http_shopify_ctx_t  *ctx = data;

    ngx_http_shopify_redis_unwait(ctx);

    if (ctx->token) {
        ctx->token->request = NULL;
        ctx->token = NULL;
    }

    if (ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }
}


/* ends the request with the outcome's short JSON answer */

static void
ngx_http_shopify_finish(ngx_http_request_t *r,
    ngx_http_shopify_outcome_e outcome)
{
    ngx_http_shopify_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);

    if (ctx && ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }

    ngx_http_finalize_request(r, ngx_http_shopify_respond(r, outcome));
}


static ngx_int_t
ngx_http_shopify_respond(ngx_http_request_t *r,
    ngx_http_shopify_outcome_e outcome)
{
    ngx_table_elt_t              *h;
    ngx_http_shopify_ctx_t       *ctx;
    ngx_http_shopify_answer_t    *answer;
    ngx_http_shopify_loc_conf_t  *slcf;

    static ngx_str_t  json = ngx_string("application/json");

    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);

    if (ctx) {
        ctx->outcome = outcome;
        ctx->counted = 1;
    }

    ngx_http_shopify_metrics_count(ctx ? ctx->topic_index
                                       : NGX_HTTP_SHOPIFY_TOPIC_UNVERIFIED,
                                   outcome);

    answer = &ngx_http_shopify_answers[outcome];

    if (answer->status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        slcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_module);

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");

        h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (h->value.data == NULL) {
            return NGX_ERROR;
        }

        h->value.len = ngx_sprintf(h->value.data, "%T", slcf->retry_after)
                       - h->value.data;

    } else if (answer->status == NGX_HTTP_NOT_ALLOWED) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");
        ngx_str_set(&h->value, "POST");
    }

    return ngx_http_shopify_send(r, answer->status, &json, &answer->body);
}


static ngx_int_t
ngx_http_shopify_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = body->len;

    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_shopify_health_handler(ngx_http_request_t *r)
{
    u_char                        *p;
    ngx_int_t                      rc;
    ngx_str_t                      body;
    ngx_http_shopify_main_conf_t  *smcf;

    static ngx_str_t  json = ngx_string("application/json");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_shopify_module);

    p = ngx_pnalloc(r->pool, 64);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = p;
    body.len = ngx_sprintf(p, "{\"status\":\"ok\",\"redis\":\"%s\"}\n",
                           smcf->configured
                           ? ngx_http_shopify_redis_state() : "unused")
               - p;

    return ngx_http_shopify_send(r, NGX_HTTP_OK, &json, &body);
}


static ngx_int_t
ngx_http_shopify_status_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;
    ngx_str_t  body;

    static ngx_str_t  type = ngx_string("text/plain; version=0.0.4");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_shopify_metrics_render(r, &body);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_shopify_send(r, NGX_HTTP_OK, &type, &body);
}


/*
 * Deliveries that nginx itself refuses for their size never reach the
 * content handler: count them when the request is logged.
 */

static ngx_int_t
ngx_http_shopify_log_handler(ngx_http_request_t *r)
{
    ngx_http_shopify_ctx_t       *ctx;
    ngx_http_shopify_loc_conf_t  *slcf;

    if (r->headers_out.status != NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        return NGX_OK;
    }

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_module);

    if (!slcf->webhook) {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);

    if (ctx && ctx->counted) {
        return NGX_OK;
    }

    ngx_http_shopify_metrics_count(NGX_HTTP_SHOPIFY_TOPIC_UNVERIFIED,
                                   NGX_HTTP_SHOPIFY_TOO_LARGE);

    return NGX_OK;
}


static ngx_int_t
ngx_http_shopify_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t               *value;
    ngx_http_shopify_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_SHOPIFY_VAR_TOPIC:
        value = &ctx->topic;
        break;

    case NGX_HTTP_SHOPIFY_VAR_SHOP:
        value = &ctx->shop;
        break;

    case NGX_HTTP_SHOPIFY_VAR_WEBHOOK_ID:
        value = &ctx->webhook_id;
        break;

    case NGX_HTTP_SHOPIFY_VAR_OUTCOME:
        value = ctx->counted ? &ngx_http_shopify_outcomes[ctx->outcome]
                             : NULL;
        break;

    default: /* NGX_HTTP_SHOPIFY_VAR_ENTRY_ID */
        value = &ctx->entry_id;
        break;
    }

    if (value == NULL || value->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = value->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = value->data;

    return NGX_OK;
}


ngx_str_t *
ngx_http_shopify_topic_name(ngx_uint_t topic)
{
    return &ngx_http_shopify_topics[topic];
}


ngx_str_t *
ngx_http_shopify_outcome_name(ngx_uint_t outcome)
{
    return &ngx_http_shopify_outcomes[outcome];
}


static uint64_t
ngx_http_shopify_usec(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* header value checks: they go into Redis keys and log lines */

static ngx_int_t
ngx_http_shopify_valid_topic(ngx_str_t *v)
{
    u_char      ch;
    ngx_uint_t  i, slash;

    slash = 0;

    for (i = 0; i < v->len; i++) {
        ch = v->data[i];

        if (ch == '/') {
            slash++;
            continue;
        }

        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
            || ch == '_' || ch == '-' || ch == '.')
        {
            continue;
        }

        return NGX_DECLINED;
    }

    return (slash == 1 && v->data[0] != '/' && v->data[v->len - 1] != '/')
           ? NGX_OK : NGX_DECLINED;
}


static ngx_int_t
ngx_http_shopify_valid_shop(ngx_str_t *v)
{
    u_char      ch;
    size_t      name;
    ngx_uint_t  i;

    static ngx_str_t  suffix = ngx_string(".myshopify.com");

    if (v->len <= suffix.len
        || ngx_strncasecmp(v->data + v->len - suffix.len, suffix.data,
                           suffix.len)
           != 0)
    {
        return NGX_DECLINED;
    }

    name = v->len - suffix.len;

    for (i = 0; i < name; i++) {
        ch = ngx_tolower(v->data[i]);

        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
            || (ch == '-' && i > 0))
        {
            continue;
        }

        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_shopify_valid_token(ngx_str_t *v)
{
    u_char      ch;
    ngx_uint_t  i;

    for (i = 0; i < v->len; i++) {
        ch = v->data[i];

        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
            || (ch >= '0' && ch <= '9')
            || ch == '-' || ch == '_' || ch == '.' || ch == ':' || ch == '+')
        {
            continue;
        }

        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void *
ngx_http_shopify_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_shopify_main_conf_t  *smcf;

    smcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_shopify_main_conf_t));
    if (smcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     smcf->addr = { 0, NULL };
     *     smcf->host = { 0, NULL };
     *     smcf->path = { 0, NULL };
     *     smcf->port = 0;
     *     smcf->configured = 0;
     */

    smcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    smcf->timeout = NGX_CONF_UNSET_MSEC;

    return smcf;
}


static char *
ngx_http_shopify_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_shopify_main_conf_t  *smcf = conf;

    ngx_conf_init_msec_value(smcf->connect_timeout, 1000);
    ngx_conf_init_msec_value(smcf->timeout, 2000);

    return NGX_CONF_OK;
}


static void *
ngx_http_shopify_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_shopify_loc_conf_t  *slcf;

    slcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_shopify_loc_conf_t));
    if (slcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     slcf->stream = { 0, NULL };
     *     slcf->ttl_text = { 0, NULL };
     */

    slcf->webhook = NGX_CONF_UNSET;
    slcf->secrets = NGX_CONF_UNSET_PTR;
    slcf->allow_topics = NGX_CONF_UNSET_PTR;
    slcf->dedupe_ttl = NGX_CONF_UNSET;
    slcf->retry_after = NGX_CONF_UNSET;

    return slcf;
}


static char *
ngx_http_shopify_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_shopify_loc_conf_t *prev = parent;
    ngx_http_shopify_loc_conf_t *conf = child;

    ngx_http_shopify_main_conf_t  *smcf;

    ngx_conf_merge_value(conf->webhook, prev->webhook, 0);
    ngx_conf_merge_ptr_value(conf->secrets, prev->secrets, NULL);
    ngx_conf_merge_ptr_value(conf->allow_topics, prev->allow_topics,
                             NGX_CONF_UNSET_PTR);
    ngx_conf_merge_str_value(conf->stream, prev->stream, "shopify:webhooks");
    ngx_conf_merge_sec_value(conf->dedupe_ttl, prev->dedupe_ttl, 86400);
    ngx_conf_merge_sec_value(conf->retry_after, prev->retry_after, 5);

    if (!conf->webhook) {
        return NGX_CONF_OK;
    }

    if (conf->secrets == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_webhook\" needs at least one "
                           "\"shopify_webhook_secret\"");
        return NGX_CONF_ERROR;
    }

    if (conf->stream.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_webhook_stream\" must not be empty");
        return NGX_CONF_ERROR;
    }

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_shopify_module);

    if (!smcf->configured) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_webhook\" needs \"shopify_redis\" "
                           "in the http block");
        return NGX_CONF_ERROR;
    }

    if (conf->dedupe_ttl <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_webhook_dedupe_ttl\" must be "
                           "positive");
        return NGX_CONF_ERROR;
    }

    conf->ttl_text.data = ngx_pnalloc(cf->pool, NGX_TIME_T_LEN);
    if (conf->ttl_text.data == NULL) {
        return NGX_CONF_ERROR;
    }

    conf->ttl_text.len = ngx_sprintf(conf->ttl_text.data, "%T",
                                     conf->dedupe_ttl)
                         - conf->ttl_text.data;

    return NGX_CONF_OK;
}


static char *
ngx_http_shopify_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_shopify_main_conf_t *smcf = conf;

    u_char      *colon, *next;
    ngx_int_t    port, db;
    ngx_str_t   *value, host, secret;
    ngx_uint_t   i;

    if (smcf->configured) {
        return "is duplicate";
    }

    value = cf->args->elts;
    smcf->addr = value[1];

    /* options after the address: db=N user=NAME password=... */

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (db == NGX_ERROR) {
                goto invalid;
            }

            if (db > 0) {
                smcf->db.data = value[i].data + 3;
                smcf->db.len = value[i].len - 3;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "user=", 5) == 0
            && value[i].len > 5)
        {
            smcf->user.data = value[i].data + 5;
            smcf->user.len = value[i].len - 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0
            && value[i].len > 9)
        {
            secret.data = value[i].data + 9;
            secret.len = value[i].len - 9;

            /* "password=file=/path" and "password=env=NAME" work too */
            if (ngx_http_shopify_load_secret(cf, &secret, &secret)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            smcf->password.data = ngx_pnalloc(cf->pool, secret.len);
            if (smcf->password.data == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memcpy(smcf->password.data, secret.data, secret.len);
            smcf->password.len = secret.len;
            continue;
        }

        goto invalid;
    }

    if (smcf->user.len && smcf->password.len == 0) {
        return "has \"user=\" without \"password=\"";
    }

    if (value[1].len > 5 && ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        smcf->path.len = value[1].len - 5;
        smcf->path.data = ngx_pnalloc(cf->pool, smcf->path.len + 1);
        if (smcf->path.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(smcf->path.data, value[1].data + 5, smcf->path.len);
        smcf->path.data[smcf->path.len] = '\0';

        smcf->configured = 1;
        return NGX_CONF_OK;
    }

    colon = ngx_strlchr(value[1].data, value[1].data + value[1].len, ':');

    /* the last colon separates the port, as in "[::1]:6379" */
    while (colon) {
        next = ngx_strlchr(colon + 1, value[1].data + value[1].len, ':');
        if (next == NULL) {
            break;
        }

        colon = next;
    }

    if (colon == NULL) {
        host = value[1];
        port = 6379;

    } else {
        host.data = value[1].data;
        host.len = colon - value[1].data;
        port = ngx_atoi(colon + 1, value[1].data + value[1].len - colon - 1);

        if (port < 1 || port > 65535) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid port in \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (host.len > 2 && host.data[0] == '[' && host.data[host.len - 1] == ']')
    {
        host.data++;
        host.len -= 2;
    }

    /* hiredis 0.14 would resolve a name with a blocking call */
    if (ngx_inet_addr(host.data, host.len) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_inet6_addr(host.data, host.len, NULL) != NGX_OK
#endif
        )
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_redis\" needs an IP address or "
                           "\"unix:\" path, not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    smcf->host.len = host.len;
    smcf->host.data = ngx_pnalloc(cf->pool, host.len + 1);
    if (smcf->host.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(smcf->host.data, host.data, host.len);
    smcf->host.data[host.len] = '\0';
    smcf->port = (in_port_t) port;
    smcf->configured = 1;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_shopify_webhook(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_shopify_loc_conf_t *slcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (slcf->webhook != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    slcf->webhook = 1;

    if (ngx_http_shopify_metrics_add(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_shopify_webhook_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_shopify_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_shopify_loc_conf_t *slcf = conf;

    EVP_MAC                    *hmac;
    ngx_str_t                  *value, key;
    OSSL_PARAM                  params[2];
    ngx_pool_cleanup_t         *cln;
    ngx_http_shopify_secret_t  *secret;

    value = cf->args->elts;

    if (ngx_http_shopify_load_secret(cf, &value[1], &key) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (slcf->secrets == NGX_CONF_UNSET_PTR) {
        slcf->secrets = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_http_shopify_secret_t));
        if (slcf->secrets == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (slcf->secrets->nelts == NGX_HTTP_SHOPIFY_MAX_SECRETS) {
        return "is given too many times";
    }

    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (hmac == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "OpenSSL offers no HMAC implementation");
        return NGX_CONF_ERROR;
    }

    secret = ngx_array_push(slcf->secrets);
    if (secret == NULL) {
        EVP_MAC_free(hmac);
        return NGX_CONF_ERROR;
    }

    /* the context keeps its own reference to the algorithm */
    secret->mac = EVP_MAC_CTX_new(hmac);
    EVP_MAC_free(hmac);

    if (secret->mac == NULL) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_MAC_CTX_free(secret->mac);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_shopify_secrets_cleanup;
    cln->data = secret->mac;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_init(secret->mac, key.data, key.len, params) != 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot key HMAC-SHA256 with the secret");
        return NGX_CONF_ERROR;
    }

    /* the key now lives only inside the HMAC state */
    if (key.data != value[1].data) {
        OPENSSL_cleanse(key.data, key.len);
    }

    return NGX_CONF_OK;
}


/*
 * A secret is given inline, as "file=/path" (the first line of the file)
 * or as "env=NAME" (the variable in nginx's environment when the
 * configuration is read).
 */

ngx_int_t
ngx_http_shopify_load_secret(ngx_conf_t *cf, ngx_str_t *value,
    ngx_str_t *secret)
{
    u_char      *p, *name;
    size_t       len;
    ssize_t      n;
    ngx_str_t    path;
    ngx_file_t   file;
    u_char       buf[1024];

    if (value->len > 4 && ngx_strncmp(value->data, "env=", 4) == 0) {
        name = ngx_pnalloc(cf->temp_pool, value->len - 3);
        if (name == NULL) {
            return NGX_ERROR;
        }

        ngx_cpystrn(name, value->data + 4, value->len - 3);

        p = (u_char *) getenv((char *) name);

        if (p == NULL || *p == '\0') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "environment variable \"%s\" is not set",
                               name);
            return NGX_ERROR;
        }

        secret->data = p;
        secret->len = ngx_strlen(p);

        return NGX_OK;
    }

    if (value->len > 5 && ngx_strncmp(value->data, "file=", 5) == 0) {
        path.data = value->data + 5;
        path.len = value->len - 5;

        if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_memzero(&file, sizeof(ngx_file_t));
        file.name = path;
        file.log = cf->log;

        file.fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
        if (file.fd == NGX_INVALID_FILE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               ngx_open_file_n " \"%s\" failed", path.data);
            return NGX_ERROR;
        }

        n = ngx_read_file(&file, buf, sizeof(buf), 0);

        if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
            ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                          ngx_close_file_n " \"%s\" failed", path.data);
        }

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        for (len = 0; len < (size_t) n; len++) {
            if (buf[len] == CR || buf[len] == LF) {
                break;
            }
        }

        if (len == 0 || len == sizeof(buf)) {
            OPENSSL_cleanse(buf, sizeof(buf));
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "secret file \"%s\" is empty or its first "
                               "line is too long", path.data);
            return NGX_ERROR;
        }

        secret->data = ngx_pnalloc(cf->temp_pool, len);
        if (secret->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(secret->data, buf, len);
        secret->len = len;
        OPENSSL_cleanse(buf, sizeof(buf));

        return NGX_OK;
    }

    if (value->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "empty secret");
        return NGX_ERROR;
    }

    *secret = *value;

    return NGX_OK;
}


static void
ngx_http_shopify_secrets_cleanup(void *data)
{
    EVP_MAC_CTX_free(data);
}


static char *
ngx_http_shopify_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_shopify_health_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_shopify_allow_topics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_shopify_loc_conf_t *slcf = conf;

    ngx_str_t   *value, *topic;
    ngx_uint_t   i;

    if (slcf->allow_topics == NGX_CONF_UNSET_PTR) {
        slcf->allow_topics = ngx_array_create(cf->pool, cf->args->nelts,
                                              sizeof(ngx_str_t));
        if (slcf->allow_topics == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_http_shopify_valid_topic(&value[i]) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid topic \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        topic = ngx_array_push(slcf->allow_topics);
        if (topic == NULL) {
            return NGX_CONF_ERROR;
        }

        *topic = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_shopify_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    if (ngx_http_shopify_metrics_add(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_shopify_status_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_shopify_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_shopify_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_shopify_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_shopify_log_handler;

    return ngx_http_shopify_redis_script_init(cf);
}


static ngx_int_t
ngx_http_shopify_init_process(ngx_cycle_t *cycle)
{
    return ngx_http_shopify_redis_init_process(cycle);
}


static void
ngx_http_shopify_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_shopify_redis_exit_process(cycle);
}
