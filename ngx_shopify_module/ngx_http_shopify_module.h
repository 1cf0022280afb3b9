
/*
 * Shopify webhook intake for nginx: shared declarations.
 */


#ifndef _NGX_HTTP_SHOPIFY_MODULE_H_INCLUDED_
#define _NGX_HTTP_SHOPIFY_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_SHOPIFY_MAX_SECRETS      8
#define NGX_HTTP_SHOPIFY_NFIELDS          8

/* EVALSHA sha nkeys stream seen [seen-event] ttl + field/value pairs */
#define NGX_HTTP_SHOPIFY_NARGS            (7 + 2 * NGX_HTTP_SHOPIFY_NFIELDS)


typedef struct {
    ngx_str_t                  addr;        /* as written, for logs */
    ngx_str_t                  host;        /* NUL-terminated IP */
    ngx_str_t                  path;        /* NUL-terminated socket */
    in_port_t                  port;
    ngx_str_t                  db;          /* SELECT, when not 0 */
    ngx_str_t                  user;        /* AUTH user (ACL) */
    ngx_str_t                  password;    /* AUTH password */
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 timeout;
    ngx_flag_t                 configured;
} ngx_http_shopify_main_conf_t;


typedef struct {
    ngx_flag_t                 webhook;
    ngx_array_t               *secrets;     /* of ngx_str_t */
    ngx_str_t                  stream;
    ngx_array_t               *allow_topics;    /* of ngx_str_t */
    ngx_str_t                  ttl_text;    /* dedupe ttl, seconds */
    time_t                     dedupe_ttl;
    time_t                     retry_after;
} ngx_http_shopify_loc_conf_t;


typedef struct ngx_http_shopify_token_s  ngx_http_shopify_token_t;


/* a redis command's link back to its request; outlives the request */
struct ngx_http_shopify_token_s {
    ngx_http_request_t        *request;     /* NULL once the request ended */
};


/* what Redis made of an enqueue, passed from the redis side */
typedef enum {
    NGX_HTTP_SHOPIFY_REPLY_ENQUEUED = 0,
    NGX_HTTP_SHOPIFY_REPLY_DUPLICATE,
    NGX_HTTP_SHOPIFY_REPLY_DUPLICATE_EVENT,
    NGX_HTTP_SHOPIFY_REPLY_NOSCRIPT,
    NGX_HTTP_SHOPIFY_REPLY_FAILED
} ngx_http_shopify_reply_e;


/* how a delivery was answered, as counted in the metrics */
typedef enum {
    NGX_HTTP_SHOPIFY_ACCEPTED = 0,
    NGX_HTTP_SHOPIFY_DUPLICATE,
    NGX_HTTP_SHOPIFY_IGNORED,
    NGX_HTTP_SHOPIFY_BAD_SIGNATURE,
    NGX_HTTP_SHOPIFY_BAD_REQUEST,
    NGX_HTTP_SHOPIFY_TOO_LARGE,
    NGX_HTTP_SHOPIFY_NOT_ALLOWED,
    NGX_HTTP_SHOPIFY_UNAVAILABLE,
    NGX_HTTP_SHOPIFY_NOUTCOMES
} ngx_http_shopify_outcome_e;


/*
 * topics the metrics tell apart: 0 is a delivery whose signature was not
 * (yet) verified, the last one any other topic
 */
#define NGX_HTTP_SHOPIFY_TOPIC_UNVERIFIED  0
#define NGX_HTTP_SHOPIFY_NTOPICS           11
#define NGX_HTTP_SHOPIFY_TOPIC_OTHER       (NGX_HTTP_SHOPIFY_NTOPICS - 1)


/*
 * the raw reply (a redisReply, or NULL when the connection failed) of a
 * command that another part of the module sent through the connection
 */
typedef void (*ngx_http_shopify_reply_pt)(ngx_http_request_t *r,
    void *reply);


/* per request state of an intake delivery */
typedef struct {
    ngx_http_request_t          *request;
    ngx_queue_t                  queue;     /* while the connection sets up */
    ngx_http_shopify_token_t    *token;     /* pending redis command */
    ngx_event_t                  timeout;   /* redis reply deadline */
    uint64_t                     start;     /* usec, monotonic */
    ngx_uint_t                   nargs;
    const char                  *argv[NGX_HTTP_SHOPIFY_NARGS];
    size_t                       argvlen[NGX_HTTP_SHOPIFY_NARGS];
    ngx_str_t                    webhook_id;
    ngx_str_t                    topic;
    ngx_str_t                    shop;
    ngx_str_t                    entry_id;
    ngx_uint_t                   topic_index;
    ngx_http_shopify_outcome_e   outcome;
    ngx_http_shopify_reply_pt    reply_handler; /* not the intake's own */
    unsigned                     raw:1;     /* argv sent as it is */
    unsigned                     counted:1;
    unsigned                     waiting:1;
    unsigned                     eval_fallback:1;
} ngx_http_shopify_ctx_t;


extern ngx_module_t  ngx_http_shopify_module;


ngx_int_t ngx_http_shopify_redis_init_process(ngx_cycle_t *cycle);
void ngx_http_shopify_redis_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_shopify_redis_send(ngx_http_request_t *r,
    ngx_http_shopify_ctx_t *ctx);
void ngx_http_shopify_redis_unwait(ngx_http_shopify_ctx_t *ctx);
void ngx_http_shopify_redis_reset(ngx_log_t *log, const char *reason);
const char *ngx_http_shopify_redis_state(void);
ngx_int_t ngx_http_shopify_redis_script_init(ngx_conf_t *cf);
ngx_http_shopify_reply_e ngx_http_shopify_redis_outcome(void *reply,
    ngx_str_t *detail);
ngx_int_t ngx_http_shopify_load_secret(ngx_conf_t *cf, ngx_str_t *value,
    ngx_str_t *secret);

void ngx_http_shopify_enqueue_done(ngx_http_request_t *r,
    ngx_http_shopify_reply_e reply, ngx_str_t *detail);
ngx_str_t *ngx_http_shopify_topic_name(ngx_uint_t topic);
ngx_str_t *ngx_http_shopify_outcome_name(ngx_uint_t outcome);

ngx_int_t ngx_http_shopify_metrics_add(ngx_conf_t *cf);
void ngx_http_shopify_metrics_count(ngx_uint_t topic,
    ngx_http_shopify_outcome_e outcome);
void ngx_http_shopify_metrics_latency(ngx_int_t usec);
void ngx_http_shopify_metrics_redis(ngx_uint_t up, ngx_uint_t reconnect);
void ngx_http_shopify_metrics_worker(void);
ngx_int_t ngx_http_shopify_metrics_render(ngx_http_request_t *r,
    ngx_str_t *out);


#endif /* _NGX_HTTP_SHOPIFY_MODULE_H_INCLUDED_ */
