
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
static void ngx_http_shopify_timeout_handler(ngx_event_t *ev);
static void ngx_http_shopify_ctx_cleanup(void *data);
static void ngx_http_shopify_finish(ngx_http_request_t *r, ngx_uint_t status,
    char *body);
static ngx_int_t ngx_http_shopify_respond(ngx_http_request_t *r,
    ngx_uint_t status, char *body);
static ngx_int_t ngx_http_shopify_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body);
static ngx_int_t ngx_http_shopify_health_handler(ngx_http_request_t *r);

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


static ngx_command_t  ngx_http_shopify_commands[] = {

    { ngx_string("shopify_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
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

    { ngx_string("shopify_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_shopify_health,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_shopify_module_ctx = {
    NULL,                                  /* preconfiguration */
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


static EVP_MAC  *ngx_http_shopify_hmac;


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

        return ngx_http_shopify_respond(r, NGX_HTTP_NOT_ALLOWED,
                                  "{\"error\":\"method not allowed\"}\n");
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

        ngx_http_shopify_finish(r, NGX_HTTP_UNAUTHORIZED,
                                "{\"error\":\"invalid signature\"}\n");
        return;
    }

    if (ngx_http_shopify_verify(r, slcf, &h[NGX_HTTP_SHOPIFY_H_HMAC], &body)
        != NGX_OK)
    {
        ngx_http_shopify_finish(r, NGX_HTTP_UNAUTHORIZED,
                                "{\"error\":\"invalid signature\"}\n");
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
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "shopify webhook: %s %V header",
                          seen[k] == 0 ? "no"
                          : seen[k] > 1 ? "repeated" : "malformed",
                          &sh->display);

            ngx_http_shopify_finish(r, NGX_HTTP_BAD_REQUEST,
                                    "{\"error\":\"missing or malformed "
                                    "delivery headers\"}\n");
            return;
        }
    }

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

    ctx->topic = h[NGX_HTTP_SHOPIFY_H_TOPIC];
    ctx->shop = h[NGX_HTTP_SHOPIFY_H_SHOP];
    ctx->webhook_id = h[NGX_HTTP_SHOPIFY_H_WEBHOOK_ID];

    if (ngx_http_shopify_build_command(r, slcf, ctx, h, &body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_shopify_redis_send(r, ctx);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify webhook: \"%V\" from \"%V\" (id %V) "
                      "not enqueued: redis %s", &ctx->topic, &ctx->shop,
                      &ctx->webhook_id, ngx_http_shopify_redis_state());

        ngx_http_shopify_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "{\"error\":\"queue unavailable\"}\n");
        return;
    }

    /* a client that goes away while Redis works is noticed */
    r->read_event_handler = ngx_http_test_reading;

    ctx->timeout.handler = ngx_http_shopify_timeout_handler;
    ctx->timeout.data = r;
    ctx->timeout.log = r->connection->log;

    ngx_add_timer(&ctx->timeout, smcf->timeout);
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


static ngx_int_t
ngx_http_shopify_build_command(ngx_http_request_t *r,
    ngx_http_shopify_loc_conf_t *slcf, ngx_http_shopify_ctx_t *ctx,
    ngx_str_t *h, ngx_str_t *body)
{
    u_char      *p, *received, *seen;
    ngx_uint_t   n;
    ngx_time_t  *tp;

    static const char  *fields[] = {
        "topic", "shop", "webhook_id", "api_version", "triggered_at",
        "event_id", "received_at", "body"
    };

    seen = ngx_pnalloc(r->pool, slcf->seen_prefix.len
                                + ctx->webhook_id.len);
    received = ngx_pnalloc(r->pool, NGX_INT64_LEN + 3);

    if (seen == NULL || received == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(seen, slcf->seen_prefix.data, slcf->seen_prefix.len);
    p = ngx_cpymem(p, ctx->webhook_id.data, ctx->webhook_id.len);

    tp = ngx_timeofday();
    p = ngx_sprintf(received, "%T%03M", tp->sec, tp->msec);

    /* argv[0] and argv[1] (command, script) are set when sending */

    ctx->argv[2] = "2";
    ctx->argvlen[2] = 1;
    ctx->argv[3] = (const char *) slcf->stream.data;
    ctx->argvlen[3] = slcf->stream.len;
    ctx->argv[4] = (const char *) seen;
    ctx->argvlen[4] = slcf->seen_prefix.len + ctx->webhook_id.len;
    ctx->argv[5] = (const char *) slcf->ttl_text.data;
    ctx->argvlen[5] = slcf->ttl_text.len;

    n = 6;

    ctx->argv[n] = fields[0];
    ctx->argvlen[n++] = ngx_strlen(fields[0]);
    ctx->argv[n] = (const char *) h[NGX_HTTP_SHOPIFY_H_TOPIC].data;
    ctx->argvlen[n++] = h[NGX_HTTP_SHOPIFY_H_TOPIC].len;

    ctx->argv[n] = fields[1];
    ctx->argvlen[n++] = ngx_strlen(fields[1]);
    ctx->argv[n] = (const char *) h[NGX_HTTP_SHOPIFY_H_SHOP].data;
    ctx->argvlen[n++] = h[NGX_HTTP_SHOPIFY_H_SHOP].len;

    ctx->argv[n] = fields[2];
    ctx->argvlen[n++] = ngx_strlen(fields[2]);
    ctx->argv[n] = (const char *) h[NGX_HTTP_SHOPIFY_H_WEBHOOK_ID].data;
    ctx->argvlen[n++] = h[NGX_HTTP_SHOPIFY_H_WEBHOOK_ID].len;

    ctx->argv[n] = fields[3];
    ctx->argvlen[n++] = ngx_strlen(fields[3]);
    ctx->argv[n] = (const char *) h[NGX_HTTP_SHOPIFY_H_API_VERSION].data;
    ctx->argvlen[n++] = h[NGX_HTTP_SHOPIFY_H_API_VERSION].len;

    ctx->argv[n] = fields[4];
    ctx->argvlen[n++] = ngx_strlen(fields[4]);
    ctx->argv[n] = h[NGX_HTTP_SHOPIFY_H_TRIGGERED_AT].len
                   ? (const char *) h[NGX_HTTP_SHOPIFY_H_TRIGGERED_AT].data
                   : "";
    ctx->argvlen[n++] = h[NGX_HTTP_SHOPIFY_H_TRIGGERED_AT].len;

    ctx->argv[n] = fields[5];
    ctx->argvlen[n++] = ngx_strlen(fields[5]);
    ctx->argv[n] = h[NGX_HTTP_SHOPIFY_H_EVENT_ID].len
                   ? (const char *) h[NGX_HTTP_SHOPIFY_H_EVENT_ID].data
                   : "";
    ctx->argvlen[n++] = h[NGX_HTTP_SHOPIFY_H_EVENT_ID].len;

    ctx->argv[n] = fields[6];
    ctx->argvlen[n++] = ngx_strlen(fields[6]);
    ctx->argv[n] = (const char *) received;
    ctx->argvlen[n++] = p - received;

    ctx->argv[n] = fields[7];
    ctx->argvlen[n++] = ngx_strlen(fields[7]);
    ctx->argv[n] = (const char *) body->data;
    ctx->argvlen[n++] = body->len;

    ctx->nargs = n;

    return NGX_OK;
}


/* called from the Redis reply callback with the script's answer */

void
ngx_http_shopify_enqueue_done(ngx_http_request_t *r,
    ngx_http_shopify_outcome_e outcome, ngx_str_t *detail)
{
    ngx_connection_t        *c;
    ngx_http_shopify_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);

    ctx->token = NULL;

    switch (outcome) {

    case NGX_HTTP_SHOPIFY_ENQUEUED:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "shopify webhook enqueued as %V", detail);

        ngx_http_shopify_finish(r, NGX_HTTP_OK,
                                "{\"status\":\"accepted\"}\n");
        break;

    case NGX_HTTP_SHOPIFY_DUPLICATE:
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "shopify webhook: duplicate delivery %V of \"%V\" "
                      "from \"%V\", first enqueued as %V", &ctx->webhook_id,
                      &ctx->topic, &ctx->shop, detail);

        ngx_http_shopify_finish(r, NGX_HTTP_OK,
                                "{\"status\":\"duplicate\"}\n");
        break;

    case NGX_HTTP_SHOPIFY_NOSCRIPT:
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

        ngx_http_shopify_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "{\"error\":\"queue unavailable\"}\n");
        break;
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_shopify_timeout_handler(ngx_event_t *ev)
{
    ngx_connection_t              *c;
    ngx_http_request_t            *r;
    ngx_http_shopify_ctx_t        *ctx;
    ngx_http_shopify_main_conf_t  *smcf;

    r = ev->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);
    smcf = ngx_http_get_module_main_conf(r, ngx_http_shopify_module);

    if (ctx->token) {
        /* the reply may still come; its callback will find no request */
        ctx->token->request = NULL;
        ctx->token = NULL;
    }

    ngx_log_error(NGX_LOG_WARN, c->log, 0,
                  "shopify webhook: \"%V\" from \"%V\" (id %V) not "
                  "enqueued: redis did not answer within %M ms",
                  &ctx->topic, &ctx->shop, &ctx->webhook_id, smcf->timeout);

    ngx_http_shopify_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                            "{\"error\":\"queue unavailable\"}\n");

    ngx_http_run_posted_requests(c);

    /* later commands queue behind the stuck one: start afresh */
    ngx_http_shopify_redis_reset(ngx_cycle->log, "reply timed out");
}


static void
ngx_http_shopify_ctx_cleanup(void *data)
{
    ngx_http_shopify_ctx_t  *ctx = data;

    if (ctx->token) {
        ctx->token->request = NULL;
        ctx->token = NULL;
    }

    if (ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }
}


/* ends the request with a short JSON answer */

static void
ngx_http_shopify_finish(ngx_http_request_t *r, ngx_uint_t status, char *body)
{
    ngx_http_shopify_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);

    if (ctx && ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }

    ngx_http_finalize_request(r, ngx_http_shopify_respond(r, status, body));
}


static ngx_int_t
ngx_http_shopify_respond(ngx_http_request_t *r, ngx_uint_t status,
    char *body)
{
    ngx_str_t                     text;
    ngx_table_elt_t              *h;
    ngx_http_shopify_loc_conf_t  *slcf;

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
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

    } else if (status == NGX_HTTP_NOT_ALLOWED) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");
        ngx_str_set(&h->value, "POST");
    }

    text.data = (u_char *) body;
    text.len = ngx_strlen(body);

    return ngx_http_shopify_send(r, status, &text);
}


static ngx_int_t
ngx_http_shopify_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = body->len;

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
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

    return ngx_http_shopify_send(r, NGX_HTTP_OK, &body);
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
     *     slcf->seen_prefix = { 0, NULL };
     *     slcf->ttl_text = { 0, NULL };
     */

    slcf->webhook = NGX_CONF_UNSET;
    slcf->secrets = NGX_CONF_UNSET_PTR;
    slcf->dedupe_ttl = NGX_CONF_UNSET;
    slcf->retry_after = NGX_CONF_UNSET;

    return slcf;
}


static char *
ngx_http_shopify_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_shopify_loc_conf_t *prev = parent;
    ngx_http_shopify_loc_conf_t *conf = child;

    u_char                        *p;
    ngx_http_shopify_main_conf_t  *smcf;

    ngx_conf_merge_value(conf->webhook, prev->webhook, 0);
    ngx_conf_merge_ptr_value(conf->secrets, prev->secrets, NULL);
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

    conf->seen_prefix.len = conf->stream.len + sizeof(":seen:") - 1;
    conf->seen_prefix.data = ngx_pnalloc(cf->pool, conf->seen_prefix.len);
    conf->ttl_text.data = ngx_pnalloc(cf->pool, NGX_TIME_T_LEN);

    if (conf->seen_prefix.data == NULL || conf->ttl_text.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(conf->seen_prefix.data, conf->stream.data,
                   conf->stream.len);
    ngx_memcpy(p, ":seen:", sizeof(":seen:") - 1);

    conf->ttl_text.len = ngx_sprintf(conf->ttl_text.data, "%T",
                                     conf->dedupe_ttl)
                         - conf->ttl_text.data;

    return NGX_CONF_OK;
}


static char *
ngx_http_shopify_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_shopify_main_conf_t *smcf = conf;

    u_char     *colon, *next;
    ngx_int_t   port;
    ngx_str_t  *value, host;

    if (smcf->configured) {
        return "is duplicate";
    }

    value = cf->args->elts;
    smcf->addr = value[1];

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

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_shopify_webhook_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_shopify_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_shopify_loc_conf_t *slcf = conf;

    ngx_str_t                  *value;
    OSSL_PARAM                  params[2];
    ngx_pool_cleanup_t         *cln;
    ngx_http_shopify_secret_t  *secret;

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "must not be empty";
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

    if (ngx_http_shopify_hmac == NULL) {
        ngx_http_shopify_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (ngx_http_shopify_hmac == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "OpenSSL offers no HMAC implementation");
            return NGX_CONF_ERROR;
        }
    }

    secret = ngx_array_push(slcf->secrets);
    if (secret == NULL) {
        return NGX_CONF_ERROR;
    }

    secret->mac = EVP_MAC_CTX_new(ngx_http_shopify_hmac);
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

    if (EVP_MAC_init(secret->mac, value[1].data, value[1].len, params) != 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot key HMAC-SHA256 with the secret");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
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


static ngx_int_t
ngx_http_shopify_init(ngx_conf_t *cf)
{
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
