
/*
 * Shopify app install (OAuth authorization-code grant) for nginx.
 *
 * "shopify_oauth_install" checks the shop name, issues a random single-use
 * state bound to the browser by a signed cookie and redirects to the
 * shop's authorize page.  "shopify_oauth_callback" checks Shopify's query
 * signature, the timestamp, the state and the cookie, marks the state used
 * in Redis, exchanges the code for an expiring offline token through an
 * in-memory subrequest to an internal proxy location, and enqueues one
 * "shopify/installed" entry, the tokens encrypted with AES-256-GCM, into
 * the webhook stream.  Nothing leaves nginx before every local check has
 * passed, and no token is ever logged or stored in plain text.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <malloc.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "ngx_http_shopify_module.h"


#define NGX_HTTP_SHOPIFY_OAUTH_INSTALL    1
#define NGX_HTTP_SHOPIFY_OAUTH_CALLBACK   2

#define NGX_HTTP_SHOPIFY_OAUTH_MAX_ARGS   32
#define NGX_HTTP_SHOPIFY_OAUTH_MAX_QUERY  4096
#define NGX_HTTP_SHOPIFY_OAUTH_STATE_LEN  16      /* bytes: 128 bits */
#define NGX_HTTP_SHOPIFY_OAUTH_SHOP_NAME  63      /* a DNS label */
#define NGX_HTTP_SHOPIFY_OAUTH_MAX_CODE   256
#define NGX_HTTP_SHOPIFY_OAUTH_KEY_LEN    32
#define NGX_HTTP_SHOPIFY_OAUTH_NONCE_LEN  12
#define NGX_HTTP_SHOPIFY_OAUTH_TAG_LEN    16
#define NGX_HTTP_SHOPIFY_OAUTH_MAX_TOKEN  1024

#define NGX_HTTP_SHOPIFY_OAUTH_STEP_STATE     1
#define NGX_HTTP_SHOPIFY_OAUTH_STEP_EXCHANGE  2
#define NGX_HTTP_SHOPIFY_OAUTH_STEP_ENQUEUE   3


typedef struct {
    ngx_uint_t                   handler;
    ngx_str_t                    client_id;
    ngx_array_t                 *client_secrets;    /* of ngx_str_t */
    ngx_str_t                    state_secret;
    ngx_array_t                 *state_keys;        /* of ngx_str_t */
    ngx_str_t                    scopes;
    ngx_http_complex_value_t    *redirect_uri;
    ngx_str_t                    token_location;
    ngx_str_t                    api_version;
    ngx_str_t                    token_key;     /* 32 bytes */
    time_t                       state_ttl;
    time_t                       window;
    ngx_msec_t                   store_timeout;
} ngx_http_shopify_oauth_loc_conf_t;


/* a query parameter, decoded; raw: its value as sent */
typedef struct {
    ngx_str_t                    key;
    ngx_str_t                    value;
    ngx_str_t                    raw;
} ngx_http_shopify_oauth_arg_t;


typedef struct {
    ngx_http_shopify_ctx_t       redis;     /* the connection's view */
    ngx_http_request_t          *request;
    ngx_str_t                    shop;
    ngx_str_t                    code;
    u_char                       state[NGX_HTTP_SHOPIFY_OAUTH_STATE_LEN * 2];
    ngx_str_t                    response;  /* the token endpoint's body */
    ngx_uint_t                   status;    /* and its status */
    ngx_uint_t                   step;
    ngx_event_t                  timeout;   /* redis reply deadline */
    ngx_event_t                  retry;     /* the entry, sent again */
    ngx_msec_t                   store_deadline;
    ngx_uint_t                   attempts;
    unsigned                     exchanged:1;
} ngx_http_shopify_oauth_ctx_t;


static ngx_int_t ngx_http_shopify_oauth_install_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_shopify_oauth_callback_handler(
    ngx_http_request_t *r);
static void ngx_http_shopify_oauth_state_marked(ngx_http_request_t *r,
    void *reply);
static ngx_int_t ngx_http_shopify_oauth_exchange(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx);
static ngx_int_t ngx_http_shopify_oauth_exchanged(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_shopify_oauth_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_shopify_oauth_store(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx);
static ngx_int_t ngx_http_shopify_oauth_answer(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx, ngx_uint_t *status,
    const char **reason);
static void ngx_http_shopify_oauth_json_free(void *p);
static ngx_int_t ngx_http_shopify_oauth_entry(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx, json_t *answer, json_t *granted);
static void ngx_http_shopify_oauth_enqueued(ngx_http_request_t *r,
    void *reply);
static ngx_int_t ngx_http_shopify_oauth_redis(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx);
static void ngx_http_shopify_oauth_store_failed(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx, ngx_str_t *detail);
static void ngx_http_shopify_oauth_retry_handler(ngx_event_t *ev);
static void ngx_http_shopify_oauth_timeout_handler(ngx_event_t *ev);
static void ngx_http_shopify_oauth_cleanup(void *data);
static void ngx_http_shopify_oauth_finish(ngx_http_request_t *r,
    ngx_uint_t status, const char *reason);
static ngx_int_t ngx_http_shopify_oauth_page(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *text);

static ngx_int_t ngx_http_shopify_oauth_parse_args(ngx_http_request_t *r,
    ngx_array_t **args);
static ngx_int_t ngx_http_shopify_oauth_decode(ngx_pool_t *pool,
    u_char *p, u_char *last, ngx_str_t *out);
static ngx_http_shopify_oauth_arg_t *ngx_http_shopify_oauth_arg(
    ngx_array_t *args, const char *name);
static ngx_int_t ngx_http_shopify_oauth_verify_query(ngx_http_request_t *r,
    ngx_http_shopify_oauth_loc_conf_t *olcf, ngx_array_t *args);
static ngx_int_t ngx_http_shopify_oauth_check_time(ngx_http_request_t *r,
    ngx_http_shopify_oauth_loc_conf_t *olcf, ngx_array_t *args);
static ngx_int_t ngx_http_shopify_oauth_shop(ngx_str_t *raw,
    ngx_uint_t lower, ngx_str_t *shop, ngx_pool_t *pool);
static ngx_int_t ngx_http_shopify_oauth_cookie_check(ngx_http_request_t *r,
    ngx_http_shopify_oauth_loc_conf_t *olcf, ngx_str_t *state,
    ngx_str_t *shop, const char **why);
static ngx_int_t ngx_http_shopify_oauth_cookie_mac(ngx_str_t *key,
    ngx_str_t *state, time_t expiry, ngx_str_t *shop, u_char *mac);
static ngx_int_t ngx_http_shopify_oauth_add_header(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);
static ngx_int_t ngx_http_shopify_oauth_clear_cookie(ngx_http_request_t *r);
static ngx_uint_t ngx_http_shopify_oauth_scopes_cover(ngx_str_t *granted,
    ngx_str_t *requested, ngx_str_t *missing);
static ngx_int_t ngx_http_shopify_oauth_encrypt(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *shop, const char *text, ngx_str_t *out);
static size_t ngx_http_shopify_oauth_escape(u_char *dst, u_char *src,
    size_t len);
static ngx_int_t ngx_http_shopify_oauth_hmac(ngx_str_t *key, u_char *data,
    size_t len, u_char *mac);

static ngx_int_t ngx_http_shopify_oauth_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_shopify_oauth_add_variables(ngx_conf_t *cf);
static void *ngx_http_shopify_oauth_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_shopify_oauth_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_shopify_oauth_set_handler(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_shopify_oauth_set_secret(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_shopify_oauth_set_client_secret(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_shopify_oauth_keep_secret(ngx_conf_t *cf,
    ngx_str_t *value, ngx_str_t *out);
static char *ngx_http_shopify_oauth_set_key(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_shopify_oauth_set_scopes(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_str_t  ngx_http_shopify_oauth_cookie = ngx_string(
    "__Host-shopify_oauth");
static ngx_str_t  ngx_http_shopify_oauth_topic = ngx_string(
    "shopify/installed");


static ngx_command_t  ngx_http_shopify_oauth_commands[] = {

    { ngx_string("shopify_oauth_install"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_shopify_oauth_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_SHOPIFY_OAUTH_INSTALL,
      NULL },

    { ngx_string("shopify_oauth_callback"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_shopify_oauth_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_SHOPIFY_OAUTH_CALLBACK,
      NULL },

    { ngx_string("shopify_oauth_client_id"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, client_id),
      NULL },

    { ngx_string("shopify_oauth_client_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_shopify_oauth_set_client_secret,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, client_secrets),
      NULL },

    { ngx_string("shopify_oauth_state_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_shopify_oauth_set_secret,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, state_secret),
      NULL },

    { ngx_string("shopify_oauth_scopes"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_shopify_oauth_set_scopes,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, scopes),
      NULL },

    { ngx_string("shopify_oauth_redirect_uri"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, redirect_uri),
      NULL },

    { ngx_string("shopify_oauth_token_location"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, token_location),
      NULL },

    { ngx_string("shopify_oauth_api_version"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, api_version),
      NULL },

    { ngx_string("shopify_oauth_token_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_shopify_oauth_set_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, token_key),
      NULL },

    { ngx_string("shopify_oauth_state_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, state_ttl),
      NULL },

    { ngx_string("shopify_oauth_timestamp_window"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, window),
      NULL },

    { ngx_string("shopify_oauth_store_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_shopify_oauth_loc_conf_t, store_timeout),
      NULL },

      ngx_null_command
};


static ngx_http_variable_t  ngx_http_shopify_oauth_vars[] = {

    { ngx_string("shopify_oauth_shop"), NULL,
      ngx_http_shopify_oauth_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_http_module_t  ngx_http_shopify_oauth_module_ctx = {
    ngx_http_shopify_oauth_add_variables,  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_shopify_oauth_create_loc_conf, /* create location configuration */
    ngx_http_shopify_oauth_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_http_shopify_oauth_module = {
    NGX_MODULE_V1,
    &ngx_http_shopify_oauth_module_ctx,    /* module context */
    ngx_http_shopify_oauth_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * GET /install?shop=<name>.myshopify.com: 302 to the shop's authorize page
 * with a fresh state, which a signed cookie binds to this browser.  When
 * Shopify itself opened the link (hmac and timestamp present), its
 * signature is checked first.
 */

static ngx_int_t
ngx_http_shopify_oauth_install_handler(ngx_http_request_t *r)
{
    u_char                             *p, *cookie, *location;
    u_char                              rnd[NGX_HTTP_SHOPIFY_OAUTH_STATE_LEN];
    u_char                              mac[32];
    size_t                              len;
    time_t                              expiry;
    ngx_int_t                           rc;
    ngx_str_t                           shop, state, value, text, redirect;
    ngx_array_t                        *args;
    ngx_http_shopify_oauth_arg_t       *arg;
    ngx_http_shopify_oauth_loc_conf_t  *olcf;

    u_char                              hex[NGX_HTTP_SHOPIFY_OAUTH_STATE_LEN
                                            * 2];

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_oauth_module);

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    if (r->method != NGX_HTTP_GET) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify oauth: install: method \"%V\" not allowed",
                      &r->method_name);
        ngx_str_set(&value, "GET");
        if (ngx_http_shopify_oauth_add_header(r, "Allow", &value) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_str_set(&text, "Method not allowed.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_NOT_ALLOWED, &text);
    }

    rc = ngx_http_shopify_oauth_parse_args(r, &args);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_str_set(&text, "Malformed query string.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_BAD_REQUEST, &text);
    }

    arg = ngx_http_shopify_oauth_arg(args, "shop");

    if (arg == NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify oauth: install without a shop parameter");
        ngx_str_set(&text, "Missing shop parameter.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_BAD_REQUEST, &text);
    }

    /* opened by Shopify: its signature, then its age */

    if (ngx_http_shopify_oauth_arg(args, "hmac")) {
        rc = ngx_http_shopify_oauth_verify_query(r, olcf, args);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc != NGX_OK) {
            ngx_str_set(&text, "Invalid signature.");
            return ngx_http_shopify_oauth_page(r, NGX_HTTP_UNAUTHORIZED,
                                               &text);
        }

        if (ngx_http_shopify_oauth_check_time(r, olcf, args) != NGX_OK) {
            ngx_str_set(&text, "The link has expired; open the app again.");
            return ngx_http_shopify_oauth_page(r, NGX_HTTP_BAD_REQUEST,
                                               &text);
        }
    }

    /* the shop, checked before it goes anywhere near a URL */

    if (ngx_http_shopify_oauth_shop(&arg->raw, 1, &shop, r->pool) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify oauth: install: invalid shop parameter, "
                      "%uz bytes", arg->raw.len);
        ngx_str_set(&text, "Invalid shop: expected <name>.myshopify.com.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_BAD_REQUEST, &text);
    }

    if (ngx_http_complex_value(r, olcf->redirect_uri, &redirect) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!(redirect.len > 8
          && (ngx_strncmp(redirect.data, "https://", 8) == 0
              || ngx_strncmp(redirect.data, "http://", 7) == 0)))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "shopify oauth: \"shopify_oauth_redirect_uri\" gave "
                      "\"%V\", not an absolute URL", &redirect);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "shopify oauth: RAND_bytes() failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_hex_dump(hex, rnd, sizeof(rnd));
    state.data = hex;
    state.len = sizeof(hex);

    expiry = ngx_time() + olcf->state_ttl;

    /* signed with the current key, the first one */
    if (ngx_http_shopify_oauth_cookie_mac(olcf->state_keys->elts, &state,
                                          expiry, &shop, mac)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* __Host-shopify_oauth=v1.<state>.<expiry>.<mac>.<shop>; attributes */

    len = ngx_http_shopify_oauth_cookie.len + sizeof("=v1.") - 1
          + state.len + 1 + NGX_TIME_T_LEN + 1 + 64 + 1 + shop.len
          + sizeof("; Path=/; Max-Age=; HttpOnly; Secure; SameSite=Lax") - 1
          + NGX_TIME_T_LEN;

    cookie = ngx_pnalloc(r->pool, len);
    if (cookie == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(cookie, "%V=v1.%V.%T.", &ngx_http_shopify_oauth_cookie,
                    &state, expiry);
    p = ngx_hex_dump(p, mac, sizeof(mac));
    p = ngx_sprintf(p, ".%V; Path=/; Max-Age=%T; HttpOnly; Secure; "
                    "SameSite=Lax", &shop, olcf->state_ttl);

    value.data = cookie;
    value.len = p - cookie;

    if (ngx_http_shopify_oauth_add_header(r, "Set-Cookie", &value) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = sizeof("https://") - 1
          + sizeof("/admin/oauth/authorize?client_id=&scope="
                   "&redirect_uri=&state=") - 1
          + shop.len + 3 * olcf->client_id.len + 3 * olcf->scopes.len
          + 3 * redirect.len + state.len;

    location = ngx_pnalloc(r->pool, len);
    if (location == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(location, "https://%V/admin/oauth/authorize?client_id=",
                    &shop);
    p += ngx_http_shopify_oauth_escape(p, olcf->client_id.data,
                                       olcf->client_id.len);
    p = ngx_cpymem(p, "&scope=", sizeof("&scope=") - 1);
    p += ngx_http_shopify_oauth_escape(p, olcf->scopes.data,
                                       olcf->scopes.len);
    p = ngx_cpymem(p, "&redirect_uri=", sizeof("&redirect_uri=") - 1);
    p += ngx_http_shopify_oauth_escape(p, redirect.data, redirect.len);
    p = ngx_sprintf(p, "&state=%V", &state);

    r->headers_out.location = ngx_list_push(&r->headers_out.headers);
    if (r->headers_out.location == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.location->hash = 1;
    ngx_str_set(&r->headers_out.location->key, "Location");
    r->headers_out.location->value.data = location;
    r->headers_out.location->value.len = p - location;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "shopify oauth: install of \"%V\" redirected to Shopify",
                  &shop);

    ngx_str_set(&text, "Redirecting to Shopify.");

    return ngx_http_shopify_oauth_page(r, NGX_HTTP_MOVED_TEMPORARILY, &text);
}


/*
 * GET /callback?code&hmac&host&shop&state&timestamp: every local check,
 * then the state is marked used in Redis; the exchange follows from the
 * reply.
 */

static ngx_int_t
ngx_http_shopify_oauth_callback_handler(ngx_http_request_t *r)
{
    u_char                             *p, ch;
    ngx_int_t                           rc;
    ngx_str_t                           text, shop;
    ngx_uint_t                          i;
    ngx_array_t                        *args;
    const char                         *why;
    ngx_pool_cleanup_t                 *cln;
    ngx_http_shopify_oauth_arg_t       *code, *state, *arg;
    ngx_http_shopify_oauth_ctx_t       *ctx;
    ngx_http_shopify_oauth_loc_conf_t  *olcf;

    static const char  *required[] = {
        "code", "hmac", "shop", "state", "timestamp"
    };

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_oauth_module);

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    if (r->method != NGX_HTTP_GET) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify oauth: callback: method \"%V\" not allowed",
                      &r->method_name);
        ngx_str_set(&text, "GET");
        if (ngx_http_shopify_oauth_add_header(r, "Allow", &text) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_str_set(&text, "Method not allowed.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_NOT_ALLOWED, &text);
    }

    /* whatever happens next, the state cookie has done its work */
    if (ngx_http_shopify_oauth_clear_cookie(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_shopify_oauth_parse_args(r, &args);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_str_set(&text, "Malformed query string.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_BAD_REQUEST, &text);
    }

    for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        arg = ngx_http_shopify_oauth_arg(args, required[i]);

        if (arg == NULL || arg->value.len == 0) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "shopify oauth: callback without \"%s\"",
                          required[i]);
            ngx_str_set(&text, "Incomplete callback from Shopify.");
            return ngx_http_shopify_oauth_page(r, NGX_HTTP_BAD_REQUEST,
                                               &text);
        }
    }

    rc = ngx_http_shopify_oauth_verify_query(r, olcf, args);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_str_set(&text, "Invalid signature.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_UNAUTHORIZED, &text);
    }

    if (ngx_http_shopify_oauth_check_time(r, olcf, args) != NGX_OK) {
        ngx_str_set(&text, "The callback has expired; install the app "
                    "again.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_BAD_REQUEST, &text);
    }

    arg = ngx_http_shopify_oauth_arg(args, "shop");

    if (ngx_http_shopify_oauth_shop(&arg->raw, 0, &shop, r->pool) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify oauth: callback: invalid shop parameter, "
                      "%uz bytes", arg->raw.len);
        ngx_str_set(&text, "Invalid shop.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_BAD_REQUEST, &text);
    }

    state = ngx_http_shopify_oauth_arg(args, "state");
    code = ngx_http_shopify_oauth_arg(args, "code");

    for (i = 0; i < code->value.len; i++) {
        ch = code->value.data[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
        {
            break;
        }
    }

    if (i < code->value.len
        || code->value.len > NGX_HTTP_SHOPIFY_OAUTH_MAX_CODE)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify oauth: callback for \"%V\": malformed code",
                      &shop);
        ngx_str_set(&text, "Malformed authorization code.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_BAD_REQUEST, &text);
    }

    if (ngx_http_shopify_oauth_cookie_check(r, olcf, &state->value, &shop,
                                            &why)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify oauth: callback for \"%V\" refused: %s",
                      &shop, why);
        ngx_str_set(&text, "This install link does not belong to this "
                    "browser or has expired; install the app again.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_FORBIDDEN, &text);
    }

    /* all checked: mark the state used, once and for all */

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_shopify_oauth_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_shopify_oauth_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->shop = shop;
    ctx->code = code->value;
    ngx_memcpy(ctx->state, state->value.data, sizeof(ctx->state));

    ctx->redis.shop = shop;
    ctx->redis.topic = ngx_http_shopify_oauth_topic;
    ctx->redis.webhook_id.len = sizeof("install-") - 1 + sizeof(ctx->state);
    ctx->redis.webhook_id.data = ngx_pnalloc(r->pool,
                                             ctx->redis.webhook_id.len);
    if (ctx->redis.webhook_id.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(ctx->redis.webhook_id.data, "install-",
                   sizeof("install-") - 1);
    ngx_memcpy(p, ctx->state, sizeof(ctx->state));

    ngx_http_set_ctx(r, ctx, ngx_http_shopify_oauth_module);
    ngx_http_set_ctx(r, &ctx->redis, ngx_http_shopify_module);

    ctx->timeout.handler = ngx_http_shopify_oauth_timeout_handler;
    ctx->timeout.data = r;
    ctx->timeout.log = r->connection->log;

    ctx->retry.handler = ngx_http_shopify_oauth_retry_handler;
    ctx->retry.data = r;
    ctx->retry.log = r->connection->log;

    ctx->step = NGX_HTTP_SHOPIFY_OAUTH_STEP_STATE;

    rc = ngx_http_shopify_oauth_redis(r, ctx);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify oauth: callback for \"%V\" not handled: "
                      "redis %s", &shop, ngx_http_shopify_redis_state());
        ngx_str_set(&text, "Temporarily unavailable; try again shortly.");
        return ngx_http_shopify_oauth_page(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           &text);
    }

    r->main->count++;

    return NGX_DONE;
}


/*
 * Sends the step's command: SET <stream>:oauth-state:<state> NX, or the
 * enqueue script.  NGX_DECLINED: Redis is down.
 */

static ngx_int_t
ngx_http_shopify_oauth_redis(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx)
{
    u_char                             *p;
    ngx_int_t                           rc;
    ngx_str_t                           key;
    ngx_http_shopify_loc_conf_t        *slcf;
    ngx_http_shopify_main_conf_t       *smcf;
    ngx_http_shopify_oauth_loc_conf_t  *olcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_module);
    smcf = ngx_http_get_module_main_conf(r, ngx_http_shopify_module);
    olcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_oauth_module);

    if (ctx->step == NGX_HTTP_SHOPIFY_OAUTH_STEP_STATE) {
        key.len = slcf->stream.len + sizeof(":oauth-state:") - 1
                  + sizeof(ctx->state);
        key.data = ngx_pnalloc(r->pool, key.len + NGX_TIME_T_LEN);
        if (key.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(key.data, slcf->stream.data, slcf->stream.len);
        p = ngx_cpymem(p, ":oauth-state:", sizeof(":oauth-state:") - 1);
        p = ngx_cpymem(p, ctx->state, sizeof(ctx->state));

        /* the mark outlives every cookie that could carry this state */
        ctx->redis.argv[0] = "SET";
        ctx->redis.argvlen[0] = 3;
        ctx->redis.argv[1] = (const char *) key.data;
        ctx->redis.argvlen[1] = key.len;
        ctx->redis.argv[2] = "1";
        ctx->redis.argvlen[2] = 1;
        ctx->redis.argv[3] = "NX";
        ctx->redis.argvlen[3] = 2;
        ctx->redis.argv[4] = "EX";
        ctx->redis.argvlen[4] = 2;
        ctx->redis.argv[5] = (const char *) p;
        ctx->redis.argvlen[5] = ngx_sprintf(p, "%T",
                                            olcf->state_ttl + olcf->window)
                                - p;
        ctx->redis.nargs = 6;
        ctx->redis.raw = 1;
        ctx->redis.reply_handler = ngx_http_shopify_oauth_state_marked;

    } else {
        ctx->redis.raw = 0;
        ctx->redis.reply_handler = ngx_http_shopify_oauth_enqueued;
    }

    rc = ngx_http_shopify_redis_send(r, &ctx->redis);

    if (rc != NGX_OK) {
        return rc;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "shopify oauth redis step %ui sent", ctx->step);

    ngx_add_timer(&ctx->timeout, smcf->timeout);

    return NGX_OK;
}


static void
ngx_http_shopify_oauth_state_marked(ngx_http_request_t *r, void *reply)
{
    redisReply                    *rr;
    ngx_connection_t              *c;
    ngx_http_shopify_oauth_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_oauth_module);
    rr = reply;

    if (ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }

    if (rr == NULL || rr->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "shopify oauth: callback for \"%V\" not handled: "
                      "redis: %*s", &ctx->shop,
                      rr ? rr->len : sizeof("connection lost") - 1,
                      rr ? rr->str : "connection lost");

        ngx_http_shopify_oauth_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "Temporarily unavailable; try again "
                                      "shortly.");
        goto done;
    }

    if (rr->type != REDIS_REPLY_STATUS) {
        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "shopify oauth: callback for \"%V\" refused: the "
                      "state was used before", &ctx->shop);

        ngx_http_shopify_oauth_finish(r, NGX_HTTP_FORBIDDEN,
                                      "This install link was already used; "
                                      "install the app again.");
        goto done;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "shopify oauth state marked used");

    ctx->step = NGX_HTTP_SHOPIFY_OAUTH_STEP_EXCHANGE;

    if (ngx_http_shopify_oauth_exchange(r, ctx) != NGX_OK) {
        ngx_http_shopify_oauth_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                      "Internal error.");
    }

done:

    ngx_http_run_posted_requests(c);
}


/*
 * The code exchange: an in-memory subrequest to the internal location,
 * whose proxy_pass reaches https://$shopify_oauth_shop.  The form goes as
 * the subrequest's own body (so no variable holds the client secret), and
 * none of the browser's headers is passed on.
 */

static ngx_int_t
ngx_http_shopify_oauth_exchange(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx)
{
    u_char                             *p;
    size_t                              len;
    ngx_buf_t                          *b;
    ngx_str_t                          *secret;
    ngx_chain_t                        *cl;
    ngx_http_request_t                 *sr;
    ngx_http_request_body_t            *rb;
    ngx_http_post_subrequest_t         *ps;
    ngx_http_shopify_oauth_loc_conf_t  *olcf;

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_oauth_module);

    /* the current secret: the first one */
    secret = olcf->client_secrets->elts;

    len = sizeof("client_id=&client_secret=&code=&expiring=1") - 1
          + 3 * (olcf->client_id.len + secret->len + ctx->code.len);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(b->last, "client_id=", sizeof("client_id=") - 1);
    p += ngx_http_shopify_oauth_escape(p, olcf->client_id.data,
                                       olcf->client_id.len);
    p = ngx_cpymem(p, "&client_secret=", sizeof("&client_secret=") - 1);
    p += ngx_http_shopify_oauth_escape(p, secret->data, secret->len);
    p = ngx_cpymem(p, "&code=", sizeof("&code=") - 1);
    p += ngx_http_shopify_oauth_escape(p, ctx->code.data, ctx->code.len);
    p = ngx_cpymem(p, "&expiring=1", sizeof("&expiring=1") - 1);
    b->last = p;
    b->last_buf = 1;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;

    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (rb == NULL) {
        return NGX_ERROR;
    }

    rb->bufs = cl;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_shopify_oauth_exchanged;
    ps->data = ctx;

    if (ngx_http_subrequest(r, &olcf->token_location, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sr->method = NGX_HTTP_POST;
    ngx_str_set(&sr->method_name, "POST");
    sr->request_body = rb;
    sr->headers_in.content_length_n = b->last - b->pos;
    sr->headers_in.content_length = NULL;
    sr->headers_in.chunked = 0;

    /* nothing of the browser's request goes to Shopify */
    if (ngx_list_init(&sr->headers_in.headers, r->pool, 1,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "shopify oauth code exchange for \"%V\" started",
                   &ctx->shop);

    return NGX_OK;
}


static ngx_int_t
ngx_http_shopify_oauth_exchanged(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_shopify_oauth_ctx_t *ctx = data;

    ngx_buf_t           *b;
    ngx_http_request_t  *r;

    r = sr->parent;

    if (ctx->exchanged) {
        return rc;
    }

    ctx->exchanged = 1;

    ctx->status = sr->headers_out.status;

    /* nginx's own failures (resolver, TLS, timeouts) come as rc */
    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        ctx->status = (rc >= NGX_HTTP_SPECIAL_RESPONSE) ? (ngx_uint_t) rc
                                                        : NGX_HTTP_BAD_GATEWAY;
    }

    if (sr->out && sr->out->buf && ngx_buf_in_memory(sr->out->buf)) {
        b = sr->out->buf;

        ctx->response.len = b->last - b->pos;
        ctx->response.data = ngx_pnalloc(r->pool, ctx->response.len + 1);
        if (ctx->response.data == NULL) {
            ctx->response.len = 0;

        } else {
            ngx_memcpy(ctx->response.data, b->pos, ctx->response.len);
        }

        /* the plain token lives on in one copy only, cleansed after use */
        OPENSSL_cleanse(b->pos, b->last - b->pos);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "shopify oauth code exchange done: rc %i, status %ui, "
                   "%uz bytes", rc, ctx->status, ctx->response.len);

    r->write_event_handler = ngx_http_shopify_oauth_resume;

    return rc;
}


static void
ngx_http_shopify_oauth_resume(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_http_shopify_oauth_ctx_t       *ctx;
    ngx_http_shopify_oauth_loc_conf_t  *olcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_oauth_module);

    if (ctx == NULL || !ctx->exchanged
        || ctx->step != NGX_HTTP_SHOPIFY_OAUTH_STEP_EXCHANGE)
    {
        return;
    }

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_oauth_module);

    ctx->step = NGX_HTTP_SHOPIFY_OAUTH_STEP_ENQUEUE;
    ctx->store_deadline = ngx_current_msec + olcf->store_timeout;
    r->write_event_handler = ngx_http_request_empty_handler;

    /* the request may be finished and freed inside: ctx is gone unless
     * NGX_ERROR is returned */
    rc = ngx_http_shopify_oauth_store(r, ctx);

    if (rc == NGX_ERROR) {
        ngx_http_shopify_oauth_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                      "Internal error.");
    }

    /* otherwise answered already, or the enqueue reply will answer */
}


/*
 * The token endpoint's answer: checked, the scopes compared, the tokens
 * encrypted, the entry sent.  Answers itself on every refusal.
 */

static ngx_int_t
ngx_http_shopify_oauth_store(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx)
{
    ngx_int_t       rc;
    ngx_str_t       detail;
    ngx_uint_t      status;
    const char     *reason;
    json_free_t     saved_free;
    json_malloc_t   saved_malloc;

    /*
     * while jansson holds the answer, every block it frees is wiped
     * first: its parse buffer, the strings, the objects; only this code
     * runs until the allocator is put back
     */

    json_get_alloc_funcs(&saved_malloc, &saved_free);
    json_set_alloc_funcs(malloc, ngx_http_shopify_oauth_json_free);

    rc = ngx_http_shopify_oauth_answer(r, ctx, &status, &reason);

    json_set_alloc_funcs(saved_malloc, saved_free);

    if (rc != NGX_OK) {
        return rc;
    }

    if (status) {
        ngx_http_shopify_oauth_finish(r, status, reason);
        return NGX_OK;
    }

    rc = ngx_http_shopify_oauth_redis(r, ctx);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_str_set(&detail, "redis is down");
        ngx_http_shopify_oauth_store_failed(r, ctx, &detail);
    }

    return NGX_OK;
}


/*
 * Parses and checks the answer and lays out the entry.  *status: 0 when
 * the entry is ready, else the refusal to answer with *reason.
 */

static ngx_int_t
ngx_http_shopify_oauth_answer(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx, ngx_uint_t *status,
    const char **reason)
{
    json_t                             *answer, *token, *scope, *error;
    ngx_int_t                           rc;
    ngx_str_t                           granted, missing;
    json_error_t                        jerr;
    ngx_http_shopify_oauth_loc_conf_t  *olcf;

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_oauth_module);

    answer = NULL;
    *status = 0;

    if (ctx->response.len) {
        answer = json_loadb((const char *) ctx->response.data,
                            ctx->response.len, JSON_REJECT_DUPLICATES,
                            &jerr);

        OPENSSL_cleanse(ctx->response.data, ctx->response.len);
    }

    if (ctx->status != NGX_HTTP_OK) {
        error = json_is_object(answer) ? json_object_get(answer, "error")
                                       : NULL;

        /* Shopify's error code names the cause and is no secret */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "shopify oauth: code exchange for \"%V\" failed: "
                      "status %ui%s%s", &ctx->shop, ctx->status,
                      json_is_string(error) ? ", error " : "",
                      json_is_string(error) ? json_string_value(error) : "");

        json_decref(answer);

        *status = NGX_HTTP_BAD_GATEWAY;
        *reason = "Shopify did not grant access; install the app again.";
        return NGX_OK;
    }

    token = json_is_object(answer) ? json_object_get(answer, "access_token")
                                   : NULL;
    scope = json_is_object(answer) ? json_object_get(answer, "scope") : NULL;

    if (!json_is_string(token) || json_string_length(token) == 0
        || json_string_length(token) > NGX_HTTP_SHOPIFY_OAUTH_MAX_TOKEN
        || !json_is_string(scope))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "shopify oauth: code exchange for \"%V\": unexpected "
                      "answer, %uz bytes", &ctx->shop, ctx->response.len);

        json_decref(answer);

        *status = NGX_HTTP_BAD_GATEWAY;
        *reason = "Unexpected answer from Shopify.";
        return NGX_OK;
    }

    granted.data = (u_char *) json_string_value(scope);
    granted.len = json_string_length(scope);

    if (!ngx_http_shopify_oauth_scopes_cover(&granted, &olcf->scopes,
                                             &missing))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify oauth: \"%V\" granted \"%V\", short of the "
                      "requested \"%V\" (first missing: \"%V\"); nothing "
                      "stored", &ctx->shop, &granted, &olcf->scopes,
                      &missing);

        json_decref(answer);

        *status = NGX_HTTP_FORBIDDEN;
        *reason = "The app was granted fewer permissions than it needs; "
                  "install it again and approve every permission.";
        return NGX_OK;
    }

    rc = ngx_http_shopify_oauth_entry(r, ctx, answer, scope);

    json_decref(answer);

    return rc;
}


/* jansson's free() while it holds the answer: the block is wiped first */

static void
ngx_http_shopify_oauth_json_free(void *p)
{
    if (p) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}


/*
 * The "shopify/installed" stream entry, as a webhook entry: the tokens in
 * the JSON body are "v1." + base64(nonce || ciphertext || tag), AES-256-GCM
 * with the shop as additional data.
 */

static ngx_int_t
ngx_http_shopify_oauth_entry(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx, json_t *answer, json_t *granted)
{
    u_char                             *p, *received, *triggered;
    char                               *dump;
    json_t                             *body, *v;
    ngx_tm_t                            tm;
    ngx_str_t                           enc, key;
    ngx_str_t                           value[NGX_HTTP_SHOPIFY_NFIELDS];
    ngx_uint_t                          i, n;
    ngx_time_t                         *tp;
    ngx_http_shopify_loc_conf_t        *slcf;
    ngx_http_shopify_oauth_loc_conf_t  *olcf;

    static ngx_str_t  fields[NGX_HTTP_SHOPIFY_NFIELDS] = {
        ngx_string("topic"), ngx_string("shop"), ngx_string("webhook_id"),
        ngx_string("api_version"), ngx_string("triggered_at"),
        ngx_string("event_id"), ngx_string("received_at"),
        ngx_string("body")
    };

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_module);
    olcf = ngx_http_get_module_loc_conf(r, ngx_http_shopify_oauth_module);

    tp = ngx_timeofday();

    body = json_object();
    if (body == NULL) {
        return NGX_ERROR;
    }

    if (json_object_set_new(body, "shop",
                            json_stringn((char *) ctx->shop.data,
                                         ctx->shop.len))
        || json_object_set(body, "scope", granted)
        || json_object_set_new(body, "requested_scope",
                               json_stringn((char *) olcf->scopes.data,
                                            olcf->scopes.len)))
    {
        goto failed;
    }

    if (ngx_http_shopify_oauth_encrypt(r, &olcf->token_key, &ctx->shop,
            json_string_value(json_object_get(answer, "access_token")),
            &enc)
        != NGX_OK
        || json_object_set_new(body, "access_token",
                               json_stringn((char *) enc.data, enc.len)))
    {
        goto failed;
    }

    v = json_object_get(answer, "expires_in");
    if (json_is_integer(v)
        && json_object_set(body, "expires_in", v))
    {
        goto failed;
    }

    v = json_object_get(answer, "refresh_token");

    if (json_is_string(v) && json_string_length(v) > 0
        && json_string_length(v) <= NGX_HTTP_SHOPIFY_OAUTH_MAX_TOKEN)
    {
        if (ngx_http_shopify_oauth_encrypt(r, &olcf->token_key, &ctx->shop,
                                           json_string_value(v), &enc)
            != NGX_OK
            || json_object_set_new(body, "refresh_token",
                                   json_stringn((char *) enc.data, enc.len)))
        {
            goto failed;
        }

        v = json_object_get(answer, "refresh_token_expires_in");
        if (json_is_integer(v)
            && json_object_set(body, "refresh_token_expires_in", v))
        {
            goto failed;
        }

    } else {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify oauth: \"%V\" gave a token that does not "
                      "expire, no refresh token", &ctx->shop);
    }

    if (json_object_set_new(body, "obtained_at",
                            json_integer((json_int_t) tp->sec * 1000
                                         + tp->msec)))
    {
        goto failed;
    }

    dump = json_dumps(body, JSON_COMPACT);
    json_decref(body);

    if (dump == NULL) {
        return NGX_ERROR;
    }

    value[7].len = ngx_strlen(dump);
    value[7].data = ngx_pnalloc(r->pool, value[7].len);
    if (value[7].data == NULL) {
        free(dump);
        return NGX_ERROR;
    }

    ngx_memcpy(value[7].data, dump, value[7].len);
    free(dump);

    /* the arguments, laid out as the intake lays out a delivery's */

    key.len = slcf->stream.len + sizeof(":seen:") - 1
              + ctx->redis.webhook_id.len;
    key.data = ngx_pnalloc(r->pool, key.len + 2 * NGX_TIME_T_LEN + 64);
    if (key.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key.data, slcf->stream.data, slcf->stream.len);
    p = ngx_cpymem(p, ":seen:", sizeof(":seen:") - 1);
    p = ngx_cpymem(p, ctx->redis.webhook_id.data, ctx->redis.webhook_id.len);

    n = 2;
    ctx->redis.argv[n] = "2";
    ctx->redis.argvlen[n++] = 1;
    ctx->redis.argv[n] = (const char *) slcf->stream.data;
    ctx->redis.argvlen[n++] = slcf->stream.len;
    ctx->redis.argv[n] = (const char *) key.data;
    ctx->redis.argvlen[n++] = key.len;

    ctx->redis.argv[n] = (const char *) p;
    ctx->redis.argvlen[n++] = ngx_sprintf(p, "%T", slcf->dedupe_ttl) - p;
    p += ctx->redis.argvlen[n - 1];

    received = p;
    p = ngx_sprintf(p, "%T%03M", tp->sec, tp->msec);

    ngx_gmtime(tp->sec, &tm);
    triggered = p;
    p = ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02d.%03MZ",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                    tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec, tp->msec);

    value[0] = ngx_http_shopify_oauth_topic;
    value[1] = ctx->shop;
    value[2] = ctx->redis.webhook_id;
    value[3] = olcf->api_version;
    value[4].data = triggered;
    value[4].len = p - triggered;
    ngx_str_null(&value[5]);
    value[6].data = received;
    value[6].len = triggered - received;

    for (i = 0; i < NGX_HTTP_SHOPIFY_NFIELDS; i++) {
        ctx->redis.argv[n] = (const char *) fields[i].data;
        ctx->redis.argvlen[n++] = fields[i].len;
        ctx->redis.argv[n] = value[i].len ? (const char *) value[i].data : "";
        ctx->redis.argvlen[n++] = value[i].len;
    }

    ctx->redis.nargs = n;
    ctx->redis.eval_fallback = 0;

    return NGX_OK;

failed:

    json_decref(body);

    return NGX_ERROR;
}


static void
ngx_http_shopify_oauth_enqueued(ngx_http_request_t *r, void *reply)
{
    u_char                        *p;
    ngx_str_t                      detail;
    ngx_connection_t              *c;
    ngx_http_shopify_reply_e       outcome;
    ngx_http_shopify_oauth_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_oauth_module);

    if (ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }

    outcome = ngx_http_shopify_redis_outcome(reply, &detail);

    switch (outcome) {

    case NGX_HTTP_SHOPIFY_REPLY_ENQUEUED:
    case NGX_HTTP_SHOPIFY_REPLY_DUPLICATE:
    case NGX_HTTP_SHOPIFY_REPLY_DUPLICATE_EVENT:

        ctx->redis.entry_id.data = ngx_pstrdup(r->pool, &detail);
        ctx->redis.entry_id.len = ctx->redis.entry_id.data ? detail.len : 0;

        ngx_log_error(NGX_LOG_NOTICE, c->log, 0,
                      "shopify oauth: \"%V\" installed, entry %V%s",
                      &ctx->shop, &detail,
                      outcome == NGX_HTTP_SHOPIFY_REPLY_ENQUEUED
                      ? "" : " (enqueued before)");

        p = ngx_pnalloc(r->pool, ctx->shop.len + sizeof(" is installed."));
        if (p == NULL) {
            ngx_http_shopify_oauth_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "Internal error.");
            break;
        }

        *ngx_sprintf(p, "%V is installed.", &ctx->shop) = '\0';

        ngx_http_shopify_oauth_finish(r, NGX_HTTP_OK, (char *) p);
        break;

    case NGX_HTTP_SHOPIFY_REPLY_NOSCRIPT:
        if (!ctx->redis.eval_fallback) {
            /* the script cache was flushed: send the script itself */
            ctx->redis.eval_fallback = 1;

            if (ngx_http_shopify_oauth_redis(r, ctx) == NGX_OK) {
                return;
            }
        }

        /* fall through */

    default:
        ngx_http_shopify_oauth_store_failed(r, ctx, &detail);
        break;
    }

    ngx_http_run_posted_requests(c);
}


/*
 * The tokens are in hand but Redis did not take the entry (down, too
 * slow, an error): it is sent again every half second until
 * "shopify_oauth_store_timeout" has passed.  A copy that Redis did run
 * after all makes the next try a duplicate, which counts as stored.
 */

static void
ngx_http_shopify_oauth_store_failed(ngx_http_request_t *r,
    ngx_http_shopify_oauth_ctx_t *ctx, ngx_str_t *detail)
{
    ngx_msec_int_t  left;

    left = (ngx_msec_int_t) (ctx->store_deadline - ngx_current_msec);

    ctx->attempts++;

    if (left > 0) {
        if (ctx->attempts == 1) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "shopify oauth: token for \"%V\" not stored yet: "
                          "%V; trying again", &ctx->shop, detail);

        } else {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "shopify oauth store attempt %ui failed: %V",
                           ctx->attempts, detail);
        }

        ngx_add_timer(&ctx->retry, (ngx_msec_t) ngx_min(left, 500));
        return;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "shopify oauth: token for \"%V\" obtained but not "
                  "stored: %V; gave up after %ui attempts", &ctx->shop,
                  detail, ctx->attempts);

    ngx_http_shopify_oauth_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  "Shopify approved the app, but the install "
                                  "could not be recorded here; install the "
                                  "app again.");
}


static void
ngx_http_shopify_oauth_retry_handler(ngx_event_t *ev)
{
    ngx_int_t                      rc;
    ngx_str_t                      detail;
    ngx_connection_t              *c;
    ngx_http_request_t            *r;
    ngx_http_shopify_oauth_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_oauth_module);

    rc = ngx_http_shopify_oauth_redis(r, ctx);

    if (rc == NGX_ERROR) {
        ngx_http_shopify_oauth_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                      "Internal error.");

    } else if (rc != NGX_OK) {
        ngx_str_set(&detail, "redis is down");
        ngx_http_shopify_oauth_store_failed(r, ctx, &detail);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_shopify_oauth_timeout_handler(ngx_event_t *ev)
{
    ngx_str_t                      detail;
    ngx_uint_t                     sent;
    ngx_connection_t              *c;
    ngx_http_request_t            *r;
    ngx_http_shopify_oauth_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_oauth_module);

    sent = (ctx->redis.token != NULL);

    if (ctx->redis.token) {
        ctx->redis.token->request = NULL;
        ctx->redis.token = NULL;
    }

    ngx_http_shopify_redis_unwait(&ctx->redis);

    if (ctx->step == NGX_HTTP_SHOPIFY_OAUTH_STEP_ENQUEUE) {
        ngx_str_set(&detail, "redis did not answer in time");
        ngx_http_shopify_oauth_store_failed(r, ctx, &detail);

    } else {
        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "shopify oauth: callback for \"%V\" not handled: "
                      "redis did not answer in time", &ctx->shop);

        /* the state may be marked used by now: a new install it is */
        ngx_http_shopify_oauth_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "Temporarily unavailable; install the "
                                      "app again shortly.");
    }

    ngx_http_run_posted_requests(c);

    if (sent) {
        ngx_http_shopify_redis_reset(ngx_cycle->log, "reply timed out");
    }
}


static void
ngx_http_shopify_oauth_cleanup(void *data)
{
    ngx_http_shopify_oauth_ctx_t  *ctx = data;

    ngx_http_shopify_redis_unwait(&ctx->redis);

    if (ctx->redis.token) {
        ctx->redis.token->request = NULL;
        ctx->redis.token = NULL;
    }

    if (ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }

    if (ctx->retry.timer_set) {
        ngx_del_timer(&ctx->retry);
    }

    if (ctx->response.len) {
        OPENSSL_cleanse(ctx->response.data, ctx->response.len);
        ctx->response.len = 0;
    }
}


static void
ngx_http_shopify_oauth_finish(ngx_http_request_t *r, ngx_uint_t status,
    const char *reason)
{
    ngx_str_t                      text;
    ngx_http_shopify_oauth_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_oauth_module);

    if (ctx && ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }

    if (ctx && ctx->retry.timer_set) {
        ngx_del_timer(&ctx->retry);
    }

    text.data = (u_char *) reason;
    text.len = ngx_strlen(reason);

    ngx_http_finalize_request(r, ngx_http_shopify_oauth_page(r, status,
                                                             &text));
}


/* a short HTML page: the text is ours or a validated shop name */

static ngx_int_t
ngx_http_shopify_oauth_page(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *text)
{
    u_char       *p;
    ngx_int_t     rc;
    ngx_str_t     cc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    static ngx_str_t  head = ngx_string(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        "<title>Shopify app</title></head>\n<body><p>");
    static ngx_str_t  tail = ngx_string("</p></body></html>\n");

    ngx_str_set(&cc, "no-store");
    if (ngx_http_shopify_oauth_add_header(r, "Cache-Control", &cc) != NGX_OK)
    {
        return NGX_ERROR;
    }

    b = ngx_create_temp_buf(r->pool, head.len + text->len + tail.len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(b->last, head.data, head.len);
    p = ngx_cpymem(p, text->data, text->len);
    b->last = ngx_cpymem(p, tail.data, tail.len);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "text/html; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * The query string as decoded key/value pairs.  NGX_DECLINED for anything
 * a Shopify query never holds: a bad percent escape, a NUL, a plain key
 * given twice (only "key[]" repeats), too many pairs or bytes.
 */

static ngx_int_t
ngx_http_shopify_oauth_parse_args(ngx_http_request_t *r, ngx_array_t **out)
{
    u_char                        *p, *last, *amp, *eq;
    ngx_str_t                      raw_key;
    ngx_uint_t                     i, j;
    ngx_array_t                   *args;
    ngx_http_shopify_oauth_arg_t  *arg, *all;

    if (r->args.len > NGX_HTTP_SHOPIFY_OAUTH_MAX_QUERY) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "shopify oauth: query string of %uz bytes refused",
                      r->args.len);
        return NGX_DECLINED;
    }

    args = ngx_array_create(r->pool, 8, sizeof(ngx_http_shopify_oauth_arg_t));
    if (args == NULL) {
        return NGX_ERROR;
    }

    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        if (amp == p) {
            p++;
            continue;
        }

        if (args->nelts == NGX_HTTP_SHOPIFY_OAUTH_MAX_ARGS) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "shopify oauth: too many query parameters");
            return NGX_DECLINED;
        }

        arg = ngx_array_push(args);
        if (arg == NULL) {
            return NGX_ERROR;
        }

        eq = ngx_strlchr(p, amp, '=');

        raw_key.data = p;
        raw_key.len = (eq ? eq : amp) - p;
        arg->raw.data = eq ? eq + 1 : amp;
        arg->raw.len = eq ? (size_t) (amp - eq - 1) : 0;

        if (ngx_http_shopify_oauth_decode(r->pool, raw_key.data,
                                          raw_key.data + raw_key.len,
                                          &arg->key)
            != NGX_OK
            || ngx_http_shopify_oauth_decode(r->pool, arg->raw.data,
                                             arg->raw.data + arg->raw.len,
                                             &arg->value)
               != NGX_OK)
        {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "shopify oauth: malformed query string");
            return NGX_DECLINED;
        }

        p = amp + 1;
    }

    /* a plain key given twice is ambiguous: refuse it */

    all = args->elts;

    for (i = 0; i < args->nelts; i++) {

        if (all[i].key.len >= 2
            && ngx_strncmp(all[i].key.data + all[i].key.len - 2, "[]", 2)
               == 0)
        {
            continue;
        }

        for (j = i + 1; j < args->nelts; j++) {
            if (all[j].key.len == all[i].key.len
                && ngx_memcmp(all[j].key.data, all[i].key.data,
                              all[i].key.len)
                   == 0)
            {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "shopify oauth: a query parameter is given "
                              "twice");
                return NGX_DECLINED;
            }
        }
    }

    *out = args;

    return NGX_OK;
}


/* form decoding: '+' is a space, %XX a byte; strict, no NUL */

static ngx_int_t
ngx_http_shopify_oauth_decode(ngx_pool_t *pool, u_char *p, u_char *last,
    ngx_str_t *out)
{
    u_char     *d, ch;
    ngx_int_t   hi, lo;

    out->data = ngx_pnalloc(pool, last - p + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    d = out->data;

    while (p < last) {
        ch = *p++;

        if (ch == '+') {
            *d++ = ' ';
            continue;
        }

        if (ch == '%') {
            if (last - p < 2) {
                return NGX_DECLINED;
            }

            hi = ngx_hextoi(p, 1);
            lo = ngx_hextoi(p + 1, 1);

            if (hi == NGX_ERROR || lo == NGX_ERROR) {
                return NGX_DECLINED;
            }

            ch = (u_char) (hi * 16 + lo);
            p += 2;
        }

        if (ch == '\0') {
            return NGX_DECLINED;
        }

        *d++ = ch;
    }

    out->len = d - out->data;
    *d = '\0';

    return NGX_OK;
}


static ngx_http_shopify_oauth_arg_t *
ngx_http_shopify_oauth_arg(ngx_array_t *args, const char *name)
{
    size_t                         len;
    ngx_uint_t                     i;
    ngx_http_shopify_oauth_arg_t  *arg;

    len = ngx_strlen(name);
    arg = args->elts;

    for (i = 0; i < args->nelts; i++) {
        if (arg[i].key.len == len
            && ngx_strncmp(arg[i].key.data, name, len) == 0)
        {
            return &arg[i];
        }
    }

    return NULL;
}


static int ngx_libc_cdecl
ngx_http_shopify_oauth_cmp(const void *one, const void *two)
{
    ngx_int_t         rc;
    const ngx_str_t  *a = one;
    const ngx_str_t  *b = two;

    rc = ngx_memcmp(a->data, b->data, ngx_min(a->len, b->len));

    if (rc != 0) {
        return rc;
    }

    return (a->len > b->len) - (a->len < b->len);
}


/* '%' and '&' (and '=' in keys) written as %25, %26, %3D */

static u_char *
ngx_http_shopify_oauth_sign_escape(u_char *d, ngx_str_t *s, ngx_uint_t key)
{
    u_char      ch;
    ngx_uint_t  i;

    for (i = 0; i < s->len; i++) {
        ch = s->data[i];

        if (ch == '%' || ch == '&' || (key && ch == '=')) {
            d = ngx_sprintf(d, "%%%02Xd", (int) ch);
            continue;
        }

        *d++ = ch;
    }

    return d;
}


/*
 * Shopify's query signature: every parameter but hmac and signature,
 * "key[]" ones gathered into one value written ["a", "b"] under the key
 * without "[]", '%' and '&' escaped in keys and values and '=' in keys,
 * the "key=value" strings sorted and joined with '&', HMAC-SHA256 with the
 * client secret, hex.  NGX_DECLINED: no match.
 */

static ngx_int_t
ngx_http_shopify_oauth_verify_query(ngx_http_request_t *r,
    ngx_http_shopify_oauth_loc_conf_t *olcf, ngx_array_t *args)
{
    u_char                        *p, *q;
    u_char                         given[32], mac[32];
    size_t                         len;
    ngx_str_t                     *items, base, *hmac, *secrets;
    ngx_int_t                      n;
    ngx_uint_t                     i, j, nitems;
    ngx_http_shopify_oauth_arg_t  *arg;

    arg = args->elts;
    hmac = &ngx_http_shopify_oauth_arg(args, "hmac")->value;

    if (hmac->len != 64) {
        goto bad;
    }

    for (i = 0; i < 32; i++) {
        n = ngx_hextoi(hmac->data + 2 * i, 2);
        if (n == NGX_ERROR) {
            goto bad;
        }

        given[i] = (u_char) n;
    }

    items = ngx_pcalloc(r->pool, args->nelts * sizeof(ngx_str_t));
    if (items == NULL) {
        return NGX_ERROR;
    }

    nitems = 0;
    len = 0;

    for (i = 0; i < args->nelts; i++) {

        if ((arg[i].key.len == 4
             && ngx_strncmp(arg[i].key.data, "hmac", 4) == 0)
            || (arg[i].key.len == 9
                && ngx_strncmp(arg[i].key.data, "signature", 9) == 0))
        {
            continue;
        }

        if (arg[i].key.len >= 2
            && ngx_strncmp(arg[i].key.data + arg[i].key.len - 2, "[]", 2)
               == 0)
        {
            /* the first of its kind gathers every value of the key */

            for (j = 0; j < i; j++) {
                if (arg[j].key.len == arg[i].key.len
                    && ngx_memcmp(arg[j].key.data, arg[i].key.data,
                                  arg[i].key.len)
                       == 0)
                {
                    break;
                }
            }

            if (j < i) {
                continue;
            }

            base.data = arg[i].key.data;
            base.len = arg[i].key.len - 2;

            len = 3 * base.len + 3;

            for (j = i; j < args->nelts; j++) {
                if (arg[j].key.len == arg[i].key.len
                    && ngx_memcmp(arg[j].key.data, arg[i].key.data,
                                  arg[i].key.len)
                       == 0)
                {
                    if (ngx_strlchr(arg[j].value.data,
                                    arg[j].value.data + arg[j].value.len,
                                    '"')
                        || ngx_strlchr(arg[j].value.data,
                                       arg[j].value.data + arg[j].value.len,
                                       '\\'))
                    {
                        goto bad;
                    }

                    len += 3 * arg[j].value.len + 4;
                }
            }

            p = ngx_pnalloc(r->pool, len);
            if (p == NULL) {
                return NGX_ERROR;
            }

            items[nitems].data = p;
            p = ngx_http_shopify_oauth_sign_escape(p, &base, 1);
            p = ngx_cpymem(p, "=[", 2);

            for (j = i; j < args->nelts; j++) {
                if (arg[j].key.len == arg[i].key.len
                    && ngx_memcmp(arg[j].key.data, arg[i].key.data,
                                  arg[i].key.len)
                       == 0)
                {
                    if (j != i) {
                        p = ngx_cpymem(p, ", ", 2);
                    }

                    *p++ = '"';
                    p = ngx_http_shopify_oauth_sign_escape(p, &arg[j].value,
                                                           0);
                    *p++ = '"';
                }
            }

            *p++ = ']';
            items[nitems].len = p - items[nitems].data;
            nitems++;
            continue;
        }

        p = ngx_pnalloc(r->pool, 3 * (arg[i].key.len + arg[i].value.len) + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        items[nitems].data = p;
        p = ngx_http_shopify_oauth_sign_escape(p, &arg[i].key, 1);
        *p++ = '=';
        p = ngx_http_shopify_oauth_sign_escape(p, &arg[i].value, 0);
        items[nitems].len = p - items[nitems].data;
        nitems++;
    }

    ngx_qsort(items, nitems, sizeof(ngx_str_t), ngx_http_shopify_oauth_cmp);

    len = 0;

    for (i = 0; i < nitems; i++) {
        len += items[i].len + 1;
    }

    q = ngx_pnalloc(r->pool, len + 1);
    if (q == NULL) {
        return NGX_ERROR;
    }

    p = q;

    for (i = 0; i < nitems; i++) {
        if (i) {
            *p++ = '&';
        }

        p = ngx_cpymem(p, items[i].data, items[i].len);
    }

    /* every configured secret: several during a rotation */

    secrets = olcf->client_secrets->elts;

    for (i = 0; i < olcf->client_secrets->nelts; i++) {

        if (ngx_http_shopify_oauth_hmac(&secrets[i], q, p - q, mac)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "shopify oauth: HMAC computation failed");
            return NGX_ERROR;
        }

        if (CRYPTO_memcmp(mac, given, sizeof(mac)) == 0) {
            break;
        }
    }

    if (i == olcf->client_secrets->nelts) {
        goto bad;
    }

    if (i > 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify oauth: query signature matched client "
                      "secret #%ui, not the first one", i + 1);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "shopify oauth query signature verified with secret #%ui",
                   i + 1);

    return NGX_OK;

bad:

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "shopify oauth: query signature does not match (%V)",
                  &r->uri);

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_shopify_oauth_check_time(ngx_http_request_t *r,
    ngx_http_shopify_oauth_loc_conf_t *olcf, ngx_array_t *args)
{
    time_t                         ts, now;
    ngx_http_shopify_oauth_arg_t  *arg;

    arg = ngx_http_shopify_oauth_arg(args, "timestamp");

    ts = (arg && arg->value.len <= 12)
         ? ngx_atotm(arg->value.data, arg->value.len) : NGX_ERROR;

    now = ngx_time();

    if (ts == NGX_ERROR || ts > now + olcf->window
        || ts < now - olcf->window)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "shopify oauth: signed request %s (%V)",
                      ts == NGX_ERROR ? "without a valid timestamp"
                      : ts > now ? "from the future" : "too old", &r->uri);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * <name>.myshopify.com, name [a-z0-9][a-z0-9-]*, at most 63 bytes; the
 * raw value must be exactly that (no escape, port, scheme, userinfo,
 * path, fragment), capitals only where "lower" lets them be folded.
 */

static ngx_int_t
ngx_http_shopify_oauth_shop(ngx_str_t *raw, ngx_uint_t lower,
    ngx_str_t *shop, ngx_pool_t *pool)
{
    u_char      ch;
    size_t      name;
    ngx_uint_t  i;

    static ngx_str_t  suffix = ngx_string(".myshopify.com");

    if (raw->len <= suffix.len
        || raw->len > suffix.len + NGX_HTTP_SHOPIFY_OAUTH_SHOP_NAME)
    {
        return NGX_DECLINED;
    }

    shop->data = ngx_pnalloc(pool, raw->len);
    if (shop->data == NULL) {
        return NGX_ERROR;
    }

    shop->len = raw->len;

    for (i = 0; i < raw->len; i++) {
        ch = raw->data[i];

        if (ch >= 'A' && ch <= 'Z') {
            if (!lower) {
                return NGX_DECLINED;
            }

            ch |= 0x20;
        }

        shop->data[i] = ch;
    }

    name = shop->len - suffix.len;

    if (ngx_strncmp(shop->data + name, suffix.data, suffix.len) != 0) {
        return NGX_DECLINED;
    }

    for (i = 0; i < name; i++) {
        ch = shop->data[i];

        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
            || (ch == '-' && i > 0))
        {
            continue;
        }

        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * The browser's cookie: v1.<state>.<expiry>.<mac>.<shop>, signed with the
 * state secret; it must be unexpired and name this state and this shop.
 */

static ngx_int_t
ngx_http_shopify_oauth_cookie_check(ngx_http_request_t *r,
    ngx_http_shopify_oauth_loc_conf_t *olcf, ngx_str_t *state,
    ngx_str_t *shop, const char **why)
{
    u_char      *p, *last;
    u_char       given[32], mac[32];
    time_t       expiry;
    ngx_int_t    n;
    ngx_str_t    value, cstate, cshop, *keys;
    ngx_uint_t   i;

    if (state->len != NGX_HTTP_SHOPIFY_OAUTH_STATE_LEN * 2) {
        *why = "malformed state";
        return NGX_DECLINED;
    }

    for (i = 0; i < state->len; i++) {
        if (!((state->data[i] >= '0' && state->data[i] <= '9')
              || (state->data[i] >= 'a' && state->data[i] <= 'f')))
        {
            *why = "malformed state";
            return NGX_DECLINED;
        }
    }

    if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies,
                                          &ngx_http_shopify_oauth_cookie,
                                          &value)
        == NGX_DECLINED)
    {
        *why = "no install cookie";
        return NGX_DECLINED;
    }

    *why = "malformed install cookie";

    p = value.data;
    last = p + value.len;

    if (last - p < 3 + 33 + 2 + 65 + 1 || ngx_strncmp(p, "v1.", 3) != 0) {
        return NGX_DECLINED;
    }

    p += 3;
    cstate.data = p;
    cstate.len = NGX_HTTP_SHOPIFY_OAUTH_STATE_LEN * 2;
    p += cstate.len;

    if (*p++ != '.') {
        return NGX_DECLINED;
    }

    value.data = p;

    while (p < last && *p >= '0' && *p <= '9') {
        p++;
    }

    expiry = ngx_atotm(value.data, p - value.data);

    if (expiry == NGX_ERROR || p >= last || *p++ != '.' || last - p < 66) {
        return NGX_DECLINED;
    }

    for (i = 0; i < 32; i++) {
        n = ngx_hextoi(p + 2 * i, 2);
        if (n == NGX_ERROR) {
            return NGX_DECLINED;
        }

        given[i] = (u_char) n;
    }

    p += 64;

    if (*p++ != '.') {
        return NGX_DECLINED;
    }

    cshop.data = p;
    cshop.len = last - p;

    /* issued under any of the keys: an install begun before a rotation */

    keys = olcf->state_keys->elts;

    for (i = 0; i < olcf->state_keys->nelts; i++) {

        if (ngx_http_shopify_oauth_cookie_mac(&keys[i], &cstate, expiry,
                                              &cshop, mac)
            != NGX_OK)
        {
            *why = "HMAC computation failed";
            return NGX_DECLINED;
        }

        if (CRYPTO_memcmp(mac, given, sizeof(mac)) == 0) {
            break;
        }
    }

    if (i == olcf->state_keys->nelts) {
        *why = "install cookie with a bad signature";
        return NGX_DECLINED;
    }

    if (expiry < ngx_time()) {
        *why = "install cookie expired";
        return NGX_DECLINED;
    }

    if (CRYPTO_memcmp(cstate.data, state->data, cstate.len) != 0) {
        *why = "state does not match the install cookie";
        return NGX_DECLINED;
    }

    if (cshop.len != shop->len
        || ngx_memcmp(cshop.data, shop->data, shop->len) != 0)
    {
        *why = "shop does not match the install cookie";
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_shopify_oauth_cookie_mac(ngx_str_t *key, ngx_str_t *state,
    time_t expiry, ngx_str_t *shop, u_char *mac)
{
    u_char  *p;
    u_char   buf[3 + 32 + 1 + NGX_TIME_T_LEN + 1 + 14
                 + NGX_HTTP_SHOPIFY_OAUTH_SHOP_NAME + 1];

    if (state->len != NGX_HTTP_SHOPIFY_OAUTH_STATE_LEN * 2
        || shop->len > 14 + NGX_HTTP_SHOPIFY_OAUTH_SHOP_NAME)
    {
        return NGX_ERROR;
    }

    p = ngx_sprintf(buf, "v1.%V.%T.%V", state, expiry, shop);

    return ngx_http_shopify_oauth_hmac(key, buf, p - buf, mac);
}


static ngx_int_t
ngx_http_shopify_oauth_hmac(ngx_str_t *key, u_char *data, size_t len,
    u_char *mac)
{
    size_t  maclen;

    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key->data, key->len,
                  data, len, mac, 32, &maclen)
        == NULL
        || maclen != 32)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_shopify_oauth_add_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_shopify_oauth_clear_cookie(ngx_http_request_t *r)
{
    ngx_str_t  value;

    ngx_str_set(&value, "__Host-shopify_oauth=; Path=/; Max-Age=0; "
                "HttpOnly; Secure; SameSite=Lax");

    return ngx_http_shopify_oauth_add_header(r, "Set-Cookie", &value);
}


/*
 * Whether the granted scopes cover the requested ones; a write_ scope
 * includes its read_ scope, as on Shopify, and so does an
 * unauthenticated_write_ one its unauthenticated_read_ one.  *missing: the
 * first one not covered.
 */

static ngx_uint_t
ngx_http_shopify_oauth_scopes_cover(ngx_str_t *granted,
    ngx_str_t *requested, ngx_str_t *missing)
{
    u_char      *p, *last, *q, *qlast, *e, *f;
    size_t       len, glen, pre;
    ngx_uint_t   found;

    static ngx_str_t  unauth = ngx_string("unauthenticated_");

    p = requested->data;
    last = p + requested->len;

    while (p < last) {
        e = ngx_strlchr(p, last, ',');
        if (e == NULL) {
            e = last;
        }

        len = e - p;

        found = (len == 0);

        /* the length of the part before "read_", if any */
        pre = (len > unauth.len
               && ngx_strncmp(p, unauth.data, unauth.len) == 0)
              ? unauth.len : 0;

        q = granted->data;
        qlast = q + granted->len;

        while (!found && q < qlast) {
            while (q < qlast && *q == ' ') {
                q++;
            }

            f = ngx_strlchr(q, qlast, ',');
            if (f == NULL) {
                f = qlast;
            }

            glen = f - q;

            while (glen && q[glen - 1] == ' ') {
                glen--;
            }

            if (glen == len && ngx_memcmp(q, p, len) == 0) {
                found = 1;

            } else if (len > pre + 5
                       && ngx_strncmp(p + pre, "read_", 5) == 0
                       && glen == len + 1
                       && ngx_memcmp(q, p, pre) == 0
                       && ngx_strncmp(q + pre, "write_", 6) == 0
                       && ngx_memcmp(q + pre + 6, p + pre + 5, len - pre - 5)
                          == 0)
            {
                found = 1;
            }

            q = f + 1;
        }

        if (!found) {
            missing->data = p;
            missing->len = len;
            return 0;
        }

        p = e + 1;
    }

    return 1;
}


/* "v1." + base64(nonce || AES-256-GCM ciphertext || tag), AAD = the shop */

static ngx_int_t
ngx_http_shopify_oauth_encrypt(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *shop, const char *text, ngx_str_t *out)
{
    int                outl, finl;
    u_char            *buf;
    size_t             len;
    ngx_str_t          raw, b64;
    EVP_CIPHER_CTX    *cc;

    len = ngx_strlen(text);

    buf = ngx_pnalloc(r->pool, NGX_HTTP_SHOPIFY_OAUTH_NONCE_LEN + len
                               + NGX_HTTP_SHOPIFY_OAUTH_TAG_LEN);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    if (RAND_bytes(buf, NGX_HTTP_SHOPIFY_OAUTH_NONCE_LEN) != 1) {
        return NGX_ERROR;
    }

    cc = EVP_CIPHER_CTX_new();
    if (cc == NULL) {
        return NGX_ERROR;
    }

    if (EVP_EncryptInit_ex(cc, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_SET_IVLEN,
                               NGX_HTTP_SHOPIFY_OAUTH_NONCE_LEN, NULL)
           != 1
        || EVP_EncryptInit_ex(cc, NULL, NULL, key->data, buf) != 1
        || EVP_EncryptUpdate(cc, NULL, &outl, shop->data, (int) shop->len)
           != 1
        || EVP_EncryptUpdate(cc, buf + NGX_HTTP_SHOPIFY_OAUTH_NONCE_LEN,
                             &outl, (u_char *) text, (int) len)
           != 1
        || EVP_EncryptFinal_ex(cc, buf + NGX_HTTP_SHOPIFY_OAUTH_NONCE_LEN
                                   + outl, &finl)
           != 1
        || (size_t) (outl + finl) != len
        || EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_GET_TAG,
                               NGX_HTTP_SHOPIFY_OAUTH_TAG_LEN,
                               buf + NGX_HTTP_SHOPIFY_OAUTH_NONCE_LEN + len)
           != 1)
    {
        EVP_CIPHER_CTX_free(cc);
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "shopify oauth: AES-256-GCM encryption failed");
        return NGX_ERROR;
    }

    EVP_CIPHER_CTX_free(cc);

    /* the plain token is not needed any more */
    OPENSSL_cleanse((void *) text, len);

    raw.data = buf;
    raw.len = NGX_HTTP_SHOPIFY_OAUTH_NONCE_LEN + len
              + NGX_HTTP_SHOPIFY_OAUTH_TAG_LEN;

    out->data = ngx_pnalloc(r->pool, 3 + ngx_base64_encoded_length(raw.len));
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, "v1.", 3);
    b64.data = out->data + 3;
    ngx_encode_base64(&b64, &raw);
    out->len = 3 + b64.len;

    return NGX_OK;
}


/* percent-encodes all but the unreserved characters (RFC 3986) */

static size_t
ngx_http_shopify_oauth_escape(u_char *dst, u_char *src, size_t len)
{
    u_char  *d, ch;
    size_t   i;

    static u_char  hex[] = "0123456789ABCDEF";

    d = dst;

    for (i = 0; i < len; i++) {
        ch = src[i];

        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
            || (ch >= '0' && ch <= '9')
            || ch == '-' || ch == '.' || ch == '_' || ch == '~')
        {
            *d++ = ch;
            continue;
        }

        *d++ = '%';
        *d++ = hex[ch >> 4];
        *d++ = hex[ch & 0xf];
    }

    return d - dst;
}


static ngx_int_t
ngx_http_shopify_oauth_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_shopify_oauth_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_shopify_oauth_module);

    if (ctx == NULL || ctx->shop.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->shop.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = ctx->shop.data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_shopify_oauth_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_shopify_oauth_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static void *
ngx_http_shopify_oauth_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_shopify_oauth_loc_conf_t  *olcf;

    olcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_shopify_oauth_loc_conf_t));
    if (olcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     olcf->handler = 0;
     *     olcf->client_id = { 0, NULL };
     *     olcf->state_keys = NULL;
     *     ... every string empty
     */

    olcf->client_secrets = NGX_CONF_UNSET_PTR;
    olcf->redirect_uri = NGX_CONF_UNSET_PTR;
    olcf->state_ttl = NGX_CONF_UNSET;
    olcf->window = NGX_CONF_UNSET;
    olcf->store_timeout = NGX_CONF_UNSET_MSEC;

    return olcf;
}


static char *
ngx_http_shopify_oauth_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_shopify_oauth_loc_conf_t *prev = parent;
    ngx_http_shopify_oauth_loc_conf_t *conf = child;

    ngx_str_t                     *uri, *secret, *key;
    ngx_str_t                      label;
    ngx_uint_t                     i;
    ngx_http_shopify_main_conf_t  *smcf;

    ngx_conf_merge_str_value(conf->client_id, prev->client_id, "");
    ngx_conf_merge_ptr_value(conf->client_secrets, prev->client_secrets,
                             NULL);
    ngx_conf_merge_str_value(conf->state_secret, prev->state_secret, "");
    ngx_conf_merge_str_value(conf->scopes, prev->scopes, "");
    ngx_conf_merge_ptr_value(conf->redirect_uri, prev->redirect_uri, NULL);
    ngx_conf_merge_str_value(conf->token_location, prev->token_location,
                             "/_shopify_oauth_token");
    ngx_conf_merge_str_value(conf->api_version, prev->api_version, "");
    ngx_conf_merge_str_value(conf->token_key, prev->token_key, "");
    ngx_conf_merge_sec_value(conf->state_ttl, prev->state_ttl, 600);
    ngx_conf_merge_sec_value(conf->window, prev->window, 90);
    ngx_conf_merge_msec_value(conf->store_timeout, prev->store_timeout,
                              10000);

    if (conf->handler == 0) {
        return NGX_CONF_OK;
    }

    if (conf->client_id.len == 0 || conf->client_secrets == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_oauth_%s\" needs "
                           "\"shopify_oauth_client_id\" and "
                           "\"shopify_oauth_client_secret\"",
                           conf->handler == NGX_HTTP_SHOPIFY_OAUTH_INSTALL
                           ? "install" : "callback");
        return NGX_CONF_ERROR;
    }

    if (conf->scopes.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_oauth_scopes\" is not set");
        return NGX_CONF_ERROR;
    }

    if (conf->state_ttl <= 0 || conf->window <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_oauth_state_ttl\" and "
                           "\"shopify_oauth_timestamp_window\" must be "
                           "positive");
        return NGX_CONF_ERROR;
    }

    conf->state_keys = ngx_array_create(cf->pool,
                                        conf->client_secrets->nelts,
                                        sizeof(ngx_str_t));
    if (conf->state_keys == NULL) {
        return NGX_CONF_ERROR;
    }

    if (conf->state_secret.len) {
        key = ngx_array_push(conf->state_keys);
        if (key == NULL) {
            return NGX_CONF_ERROR;
        }

        *key = conf->state_secret;

    } else {
        /* one derived from each client secret, for this one purpose */

        ngx_str_set(&label, "shopify-bc oauth state cookie v1");
        secret = conf->client_secrets->elts;

        for (i = 0; i < conf->client_secrets->nelts; i++) {
            key = ngx_array_push(conf->state_keys);
            if (key == NULL) {
                return NGX_CONF_ERROR;
            }

            key->data = ngx_pnalloc(cf->pool, 32);
            if (key->data == NULL) {
                return NGX_CONF_ERROR;
            }

            if (ngx_http_shopify_oauth_hmac(&secret[i], label.data,
                                            label.len, key->data)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            key->len = 32;
        }
    }

    if (conf->handler == NGX_HTTP_SHOPIFY_OAUTH_INSTALL) {
        uri = conf->redirect_uri ? &conf->redirect_uri->value : NULL;

        if (uri == NULL
            || (conf->redirect_uri->lengths == NULL
                && !(uri->len > 8
                     && (ngx_strncmp(uri->data, "https://", 8) == 0
                         || ngx_strncmp(uri->data, "http://", 7) == 0))))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"shopify_oauth_install\" needs "
                               "\"shopify_oauth_redirect_uri\", an absolute "
                               "URL");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (conf->token_key.len != NGX_HTTP_SHOPIFY_OAUTH_KEY_LEN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_oauth_callback\" needs "
                           "\"shopify_oauth_token_key\"");
        return NGX_CONF_ERROR;
    }

    if (conf->token_location.data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_oauth_token_location\" must be a URI "
                           "starting with \"/\"");
        return NGX_CONF_ERROR;
    }

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_shopify_module);

    if (!smcf->configured) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"shopify_oauth_callback\" needs "
                           "\"shopify_redis\" in the http block");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_shopify_oauth_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_shopify_oauth_loc_conf_t *olcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (olcf->handler) {
        return "is duplicate";
    }

    olcf->handler = cmd->offset;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    clcf->handler = (cmd->offset == NGX_HTTP_SHOPIFY_OAUTH_INSTALL)
                    ? ngx_http_shopify_oauth_install_handler
                    : ngx_http_shopify_oauth_callback_handler;

    return NGX_CONF_OK;
}


/* inline, "file=/path" or "env=NAME", as shopify_webhook_secret */

static char *
ngx_http_shopify_oauth_set_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t  *field, *value;

    field = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_http_shopify_oauth_keep_secret(cf, &value[1], field);
}


/*
 * The app's client secret: inline, "file=/path" or "env=NAME".  Repeated
 * (up to 8 times) during a rotation: a query signed with any of them is
 * accepted, and the first one goes into the code exchange.
 */

static char *
ngx_http_shopify_oauth_set_client_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_shopify_oauth_loc_conf_t *olcf = conf;

    ngx_str_t  *value, *s;

    if (olcf->client_secrets == NGX_CONF_UNSET_PTR) {
        olcf->client_secrets = ngx_array_create(cf->pool, 2,
                                                sizeof(ngx_str_t));
        if (olcf->client_secrets == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (olcf->client_secrets->nelts == NGX_HTTP_SHOPIFY_MAX_SECRETS) {
        return "is given too many times";
    }

    value = cf->args->elts;

    s = ngx_array_push(olcf->client_secrets);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_shopify_oauth_keep_secret(cf, &value[1], s);
}


/*
 * Loads a secret as shopify_webhook_secret does and keeps a copy in the
 * configuration's pool; a copy read from a file or the environment is
 * wiped once kept.
 */

static char *
ngx_http_shopify_oauth_keep_secret(ngx_conf_t *cf, ngx_str_t *value,
    ngx_str_t *out)
{
    ngx_str_t  secret;

    if (ngx_http_shopify_load_secret(cf, value, &secret) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    out->data = ngx_pnalloc(cf->pool, secret.len);
    if (out->data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(out->data, secret.data, secret.len);
    out->len = secret.len;

    if (secret.data != value->data) {
        OPENSSL_cleanse(secret.data, secret.len);
    }

    return NGX_CONF_OK;
}


/* 64 hex digits from "env=NAME" or "file=/path", never inline */

static char *
ngx_http_shopify_oauth_set_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t   *field, *value, hex;
    ngx_int_t    n;
    ngx_uint_t   i;

    field = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (!(value[1].len > 4 && ngx_strncmp(value[1].data, "env=", 4) == 0)
        && !(value[1].len > 5 && ngx_strncmp(value[1].data, "file=", 5) == 0))
    {
        return "takes \"env=NAME\" or \"file=/path\", the key is not "
               "written in the configuration";
    }

    if (ngx_http_shopify_load_secret(cf, &value[1], &hex) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    field->data = ngx_pnalloc(cf->pool, NGX_HTTP_SHOPIFY_OAUTH_KEY_LEN);
    if (field->data == NULL) {
        return NGX_CONF_ERROR;
    }

    n = (hex.len == 2 * NGX_HTTP_SHOPIFY_OAUTH_KEY_LEN) ? 0 : NGX_ERROR;

    for (i = 0; n != NGX_ERROR && i < NGX_HTTP_SHOPIFY_OAUTH_KEY_LEN; i++) {
        n = ngx_hextoi(hex.data + 2 * i, 2);
        field->data[i] = (u_char) n;
    }

    if (hex.data != value[1].data && hex.len) {
        OPENSSL_cleanse(hex.data, hex.len);
    }

    if (n == NGX_ERROR) {
        OPENSSL_cleanse(field->data, NGX_HTTP_SHOPIFY_OAUTH_KEY_LEN);
        field->data = NULL;
        return "needs 64 hex digits (a 32-byte AES-256 key)";
    }

    field->len = NGX_HTTP_SHOPIFY_OAUTH_KEY_LEN;

    return NGX_CONF_OK;
}


/* comma-separated Shopify scopes: read_orders,write_products */

static char *
ngx_http_shopify_oauth_set_scopes(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    u_char      ch;
    ngx_str_t  *field, *value;
    ngx_uint_t  i;

    field = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; i < value[1].len; i++) {
        ch = value[1].data[i];

        if ((ch >= 'a' && ch <= 'z') || ch == '_' || ch == ','
            || (ch >= '0' && ch <= '9'))
        {
            continue;
        }

        break;
    }

    if (value[1].len == 0 || i < value[1].len || value[1].data[0] == ','
        || value[1].data[value[1].len - 1] == ','
        || ngx_strstrn(value[1].data, ",,", 2 - 1))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid scopes \"%V\": expected a comma-"
                           "separated list such as read_orders,"
                           "write_products", &value[1]);
        return NGX_CONF_ERROR;
    }

    *field = value[1];

    return NGX_CONF_OK;
}
