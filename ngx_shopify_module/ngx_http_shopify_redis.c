
/*
 * Shopify webhook intake for nginx: the per-worker Redis connection.
 *
 * Each worker keeps one hiredis async context whose socket is driven by
 * nginx's own event loop, so an enqueue never blocks the worker.  All
 * requests of a worker share the connection and their commands are
 * pipelined; Redis answers them in order.  hiredis 0.14 has no timers:
 * connect and reply deadlines are nginx timers, and the reconnect backoff
 * timer is cancelable so it never holds up a graceful shutdown.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_shopify_module.h"


#define NGX_HTTP_SHOPIFY_REDIS_DOWN        0
#define NGX_HTTP_SHOPIFY_REDIS_CONNECTING  1
#define NGX_HTTP_SHOPIFY_REDIS_UP          2

#define NGX_HTTP_SHOPIFY_BACKOFF_MIN       50
#define NGX_HTTP_SHOPIFY_BACKOFF_MAX       2000


typedef struct {
    redisAsyncContext             *ac;
    ngx_connection_t              *conn;
    ngx_event_t                    reconnect;
    ngx_event_t                    connect_timer;
    ngx_msec_t                     backoff;
    ngx_queue_t                    waiting;     /* requests held in setup */
    ngx_uint_t                     state;
    ngx_uint_t                     exiting;
    ngx_uint_t                     connected_before;
    ngx_log_t                     *log;
    ngx_http_shopify_main_conf_t  *smcf;
} ngx_http_shopify_redis_t;


static void ngx_http_shopify_redis_connect(void);
static void ngx_http_shopify_redis_schedule(void);
static void ngx_http_shopify_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_shopify_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_shopify_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_shopify_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_http_shopify_redis_script_loaded(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_shopify_redis_setup_done(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_shopify_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata);
static ngx_int_t ngx_http_shopify_redis_command(ngx_http_request_t *r,
    ngx_http_shopify_ctx_t *ctx);
static void ngx_http_shopify_redis_release(ngx_uint_t up);

static void ngx_http_shopify_redis_read_handler(ngx_event_t *ev);
static void ngx_http_shopify_redis_write_handler(ngx_event_t *ev);
static void ngx_http_shopify_redis_add_read(void *data);
static void ngx_http_shopify_redis_del_read(void *data);
static void ngx_http_shopify_redis_add_write(void *data);
static void ngx_http_shopify_redis_del_write(void *data);
static void ngx_http_shopify_redis_cleanup(void *data);


/*
 * The check for an earlier delivery and the enqueue are one atomic step:
 * KEYS[1] is the stream, KEYS[2..] the dedupe keys, ARGV[1] their ttl in
 * seconds, ARGV[2..] the entry's field/value pairs.  The answer is
 * {1, new entry id}, or {0, id of the entry that first carried the key,
 * which key: 1 the webhook id, 2 the event id}.
 */
static ngx_str_t  ngx_http_shopify_script = ngx_string(
    "for i = 2, #KEYS do "
    "local seen = redis.call('GET', KEYS[i]) "
    "if seen then return {0, seen, i - 1} end "
    "end "
    "local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2)) "
    "for i = 2, #KEYS do "
    "redis.call('SET', KEYS[i], id, 'EX', ARGV[1]) "
    "end "
    "return {1, id}");

static u_char  ngx_http_shopify_script_sha[41];

static ngx_http_shopify_redis_t  ngx_http_shopify_redis;


ngx_int_t
ngx_http_shopify_redis_script_init(ngx_conf_t *cf)
{
    u_char        digest[EVP_MAX_MD_SIZE];
    unsigned int  len;

    if (EVP_Digest(ngx_http_shopify_script.data,
                   ngx_http_shopify_script.len, digest, &len, EVP_sha1(),
                   NULL)
        != 1)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "shopify: cannot compute the script digest");
        return NGX_ERROR;
    }

    ngx_hex_dump(ngx_http_shopify_script_sha, digest, len);
    ngx_http_shopify_script_sha[40] = '\0';

    return NGX_OK;
}


ngx_int_t
ngx_http_shopify_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_http_shopify_redis_t      *rs;
    ngx_http_shopify_main_conf_t  *smcf;

    smcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_shopify_module);

    if (smcf == NULL || !smcf->configured) {
        return NGX_OK;
    }

    rs = &ngx_http_shopify_redis;

    ngx_memzero(rs, sizeof(ngx_http_shopify_redis_t));

    ngx_http_shopify_metrics_worker();

    rs->log = cycle->log;
    rs->smcf = smcf;
    rs->state = NGX_HTTP_SHOPIFY_REDIS_DOWN;

    ngx_queue_init(&rs->waiting);

    rs->reconnect.handler = ngx_http_shopify_redis_reconnect_handler;
    rs->reconnect.log = cycle->log;
    rs->reconnect.data = rs;
    rs->reconnect.cancelable = 1;

    rs->connect_timer.handler = ngx_http_shopify_redis_connect_timeout;
    rs->connect_timer.log = cycle->log;
    rs->connect_timer.data = rs;
    rs->connect_timer.cancelable = 1;

    ngx_http_shopify_redis_connect();

    return NGX_OK;
}


void
ngx_http_shopify_redis_exit_process(ngx_cycle_t *cycle)
{
    redisAsyncContext         *ac;
    ngx_http_shopify_redis_t  *rs;

    rs = &ngx_http_shopify_redis;

    if (rs->smcf == NULL) {
        return;
    }

    rs->exiting = 1;

    if (rs->reconnect.timer_set) {
        ngx_del_timer(&rs->reconnect);
    }

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    if (rs->ac) {
        /* cleared first: the disconnect callback must not see a loss */
        ac = rs->ac;
        rs->ac = NULL;
        redisAsyncFree(ac);
    }

    ngx_http_shopify_redis_release(0);
    ngx_http_shopify_metrics_redis(0, 0);
}


const char *
ngx_http_shopify_redis_state(void)
{
    switch (ngx_http_shopify_redis.state) {

    case NGX_HTTP_SHOPIFY_REDIS_UP:
        return "up";

    case NGX_HTTP_SHOPIFY_REDIS_CONNECTING:
        return "connecting";

    default:
        return "down";
    }
}


/*
 * Queues the request's command.  While a new connection is being set up
 * (AUTH, SELECT, script load) requests wait in a queue of their own, so
 * that no enqueue can run before the connection is what it must be.
 * NGX_DECLINED means Redis is known to be unreachable right now and the
 * caller should answer at once.
 */

ngx_int_t
ngx_http_shopify_redis_send(ngx_http_request_t *r, ngx_http_shopify_ctx_t *ctx)
{
    ngx_http_shopify_redis_t  *rs;

    rs = &ngx_http_shopify_redis;

    if (rs->ac == NULL || rs->state == NGX_HTTP_SHOPIFY_REDIS_DOWN) {
        return NGX_DECLINED;
    }

    if (rs->state == NGX_HTTP_SHOPIFY_REDIS_CONNECTING) {
        ctx->request = r;
        ctx->waiting = 1;
        ngx_queue_insert_tail(&rs->waiting, &ctx->queue);

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "shopify redis command waits for the connection");
        return NGX_OK;
    }

    return ngx_http_shopify_redis_command(r, ctx);
}


void
ngx_http_shopify_redis_unwait(ngx_http_shopify_ctx_t *ctx)
{
    if (ctx->waiting) {
        ngx_queue_remove(&ctx->queue);
        ctx->waiting = 0;
    }
}


static ngx_int_t
ngx_http_shopify_redis_command(ngx_http_request_t *r,
    ngx_http_shopify_ctx_t *ctx)
{
    ngx_http_shopify_token_t  *token;
    ngx_http_shopify_redis_t  *rs;

    rs = &ngx_http_shopify_redis;

    if (ctx->raw) {
        /* another part of the module's own command */

    } else if (ctx->eval_fallback) {
        ctx->argv[0] = "EVAL";
        ctx->argvlen[0] = sizeof("EVAL") - 1;
        ctx->argv[1] = (const char *) ngx_http_shopify_script.data;
        ctx->argvlen[1] = ngx_http_shopify_script.len;

    } else {
        ctx->argv[0] = "EVALSHA";
        ctx->argvlen[0] = sizeof("EVALSHA") - 1;
        ctx->argv[1] = (const char *) ngx_http_shopify_script_sha;
        ctx->argvlen[1] = 40;
    }

    /* the token outlives the request if the client goes away */
    token = ngx_alloc(sizeof(ngx_http_shopify_token_t), r->connection->log);
    if (token == NULL) {
        return NGX_ERROR;
    }

    token->request = r;

    if (redisAsyncCommandArgv(rs->ac, ngx_http_shopify_redis_reply, token,
                              (int) ctx->nargs, ctx->argv, ctx->argvlen)
        != REDIS_OK)
    {
        ngx_free(token);
        return NGX_ERROR;
    }

    ctx->token = token;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "shopify redis command queued, %s, %uz body bytes",
                   ctx->argv[0], ctx->argvlen[ctx->nargs - 1]);

    return NGX_OK;
}


/*
 * The requests held during set-up go on: sent when the connection is
 * ready, answered "unavailable" when it failed.
 */

static void
ngx_http_shopify_redis_release(ngx_uint_t up)
{
    ngx_str_t                  detail;
    ngx_queue_t               *q;
    ngx_http_request_t        *r;
    ngx_http_shopify_ctx_t    *ctx;
    ngx_http_shopify_redis_t  *rs;

    rs = &ngx_http_shopify_redis;

    if (rs->waiting.next == NULL) {
        return;
    }

    while (!ngx_queue_empty(&rs->waiting)) {
        q = ngx_queue_head(&rs->waiting);
        ngx_queue_remove(q);

        ctx = ngx_queue_data(q, ngx_http_shopify_ctx_t, queue);
        ctx->waiting = 0;
        r = ctx->request;

        if (up && ngx_http_shopify_redis_command(r, ctx) == NGX_OK) {
            continue;
        }

        if (ctx->reply_handler) {
            ctx->reply_handler(r, NULL);
            continue;
        }

        ngx_str_set(&detail, "the redis connection could not be set up");
        ngx_http_shopify_enqueue_done(r, NGX_HTTP_SHOPIFY_REPLY_FAILED,
                                      &detail);
    }
}


/*
 * Drops the connection: every command still waiting for a reply is
 * answered as "unavailable" and a reconnect is scheduled.
 */

void
ngx_http_shopify_redis_reset(ngx_log_t *log, const char *reason)
{
    redisAsyncContext         *ac;
    ngx_http_shopify_redis_t  *rs;

    rs = &ngx_http_shopify_redis;

    if (rs->ac == NULL) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "shopify: dropping redis connection to \"%V\": %s",
                  &rs->smcf->addr, reason);

    ac = rs->ac;
    rs->ac = NULL;
    rs->state = NGX_HTTP_SHOPIFY_REDIS_DOWN;

    ngx_http_shopify_metrics_redis(0, 0);

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    redisAsyncFree(ac);

    ngx_http_shopify_redis_release(0);
    ngx_http_shopify_redis_schedule();
}


static void
ngx_http_shopify_redis_connect(void)
{
    redisAsyncContext             *ac;
    ngx_connection_t              *c;
    ngx_http_shopify_redis_t      *rs;
    ngx_http_shopify_main_conf_t  *smcf;

    rs = &ngx_http_shopify_redis;
    smcf = rs->smcf;

    if (smcf->path.len) {
        ac = redisAsyncConnectUnix((const char *) smcf->path.data);

    } else {
        /* host is a literal address: hiredis resolves nothing */
        ac = redisAsyncConnect((const char *) smcf->host.data, smcf->port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_CRIT, rs->log, 0,
                      "shopify: cannot allocate a redis context");
        ngx_http_shopify_redis_schedule();
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "shopify: connect to redis \"%V\" failed: %s",
                      &smcf->addr, ac->errstr);
        redisAsyncFree(ac);
        ngx_http_shopify_redis_schedule();
        return;
    }

    c = ngx_get_connection(ac->c.fd, rs->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_shopify_redis_schedule();
        return;
    }

    c->data = rs;
    c->read->handler = ngx_http_shopify_redis_read_handler;
    c->write->handler = ngx_http_shopify_redis_write_handler;
    c->read->log = rs->log;
    c->write->log = rs->log;

    rs->ac = ac;
    rs->conn = c;
    rs->state = NGX_HTTP_SHOPIFY_REDIS_CONNECTING;

    ac->ev.data = rs;
    ac->ev.addRead = ngx_http_shopify_redis_add_read;
    ac->ev.delRead = ngx_http_shopify_redis_del_read;
    ac->ev.addWrite = ngx_http_shopify_redis_add_write;
    ac->ev.delWrite = ngx_http_shopify_redis_del_write;
    ac->ev.cleanup = ngx_http_shopify_redis_cleanup;

    /* hooks first: setting the connect callback arms the write event */
    redisAsyncSetConnectCallback(ac, ngx_http_shopify_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_shopify_redis_on_disconnect);

    ngx_add_timer(&rs->connect_timer, smcf->connect_timeout);

    /* pipelined ahead of every enqueue: authenticate, pick the database */

    if (smcf->user.len) {
        (void) redisAsyncCommand(ac, ngx_http_shopify_redis_setup_done,
                                 "AUTH", "AUTH %b %b",
                                 smcf->user.data, smcf->user.len,
                                 smcf->password.data, smcf->password.len);

    } else if (smcf->password.len) {
        (void) redisAsyncCommand(ac, ngx_http_shopify_redis_setup_done,
                                 "AUTH", "AUTH %b",
                                 smcf->password.data, smcf->password.len);
    }

    if (smcf->db.len) {
        (void) redisAsyncCommand(ac, ngx_http_shopify_redis_setup_done,
                                 "SELECT", "SELECT %b",
                                 smcf->db.data, smcf->db.len);
    }

    /* a restarted redis has lost its script cache: load it first */
    if (redisAsyncCommand(ac, ngx_http_shopify_redis_script_loaded, NULL,
                          "SCRIPT LOAD %b", ngx_http_shopify_script.data,
                          ngx_http_shopify_script.len)
        != REDIS_OK)
    {
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "shopify: cannot queue SCRIPT LOAD for redis \"%V\"",
                      &smcf->addr);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rs->log, 0,
                   "shopify redis connecting, fd:%d", ac->c.fd);
}


static void
ngx_http_shopify_redis_schedule(void)
{
    ngx_http_shopify_redis_t  *rs;

    rs = &ngx_http_shopify_redis;

    if (rs->exiting || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (rs->reconnect.timer_set || rs->ac != NULL) {
        return;
    }

    if (rs->backoff == 0) {
        rs->backoff = NGX_HTTP_SHOPIFY_BACKOFF_MIN;

    } else {
        rs->backoff = ngx_min(rs->backoff * 2, NGX_HTTP_SHOPIFY_BACKOFF_MAX);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, rs->log, 0,
                   "shopify redis reconnect in %M ms", rs->backoff);

    ngx_add_timer(&rs->reconnect, rs->backoff);
}


static void
ngx_http_shopify_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_shopify_redis_t  *rs;

    rs = ev->data;

    if (rs->exiting || rs->ac != NULL) {
        return;
    }

    ngx_http_shopify_redis_connect();
}


static void
ngx_http_shopify_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_shopify_redis_t  *rs;

    rs = ev->data;

    if (rs->state == NGX_HTTP_SHOPIFY_REDIS_CONNECTING) {
        ngx_http_shopify_redis_reset(rs->log, "connect timed out");
    }
}


static void
ngx_http_shopify_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_shopify_redis_t  *rs;

    rs = ac->ev.data;

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context once this returns */
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "shopify: connect to redis \"%V\" failed: %s",
                      &rs->smcf->addr, ac->errstr);

        rs->ac = NULL;
        rs->state = NGX_HTTP_SHOPIFY_REDIS_DOWN;
        ngx_http_shopify_redis_release(0);
        ngx_http_shopify_redis_schedule();
        return;
    }

    /* up once the set-up commands behind the connect have answered */

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, rs->log, 0,
                   "shopify redis connected, setting up");
}


static void
ngx_http_shopify_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_shopify_redis_t  *rs;

    rs = ac->ev.data;

    if (rs->ac == ac) {
        /* the server went away; a reset clears rs->ac before freeing */
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "shopify: lost redis connection to \"%V\": %s",
                      &rs->smcf->addr,
                      status == REDIS_OK ? "closed" : ac->errstr);

        rs->ac = NULL;
        rs->state = NGX_HTTP_SHOPIFY_REDIS_DOWN;

        ngx_http_shopify_metrics_redis(0, 0);
        ngx_http_shopify_redis_release(0);
    }

    ngx_http_shopify_redis_schedule();
}


static void
ngx_http_shopify_redis_script_loaded(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply                *rr;
    ngx_http_shopify_redis_t  *rs;

    rs = ac->ev.data;
    rr = reply;

    if (rr == NULL || rs->ac != ac
        || rs->state != NGX_HTTP_SHOPIFY_REDIS_CONNECTING)
    {
        /* the connection is going away, or set-up failed before */
        return;
    }

    if (rr->type != REDIS_REPLY_STRING
        || rr->len != 40
        || ngx_strncasecmp((u_char *) rr->str, ngx_http_shopify_script_sha,
                           40)
           != 0)
    {
        /* enqueues still work through the EVAL fallback */
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "shopify: redis \"%V\" did not load the enqueue "
                      "script: %*s", &rs->smcf->addr,
                      rr->type == REDIS_REPLY_ERROR ? rr->len : 0,
                      rr->type == REDIS_REPLY_ERROR ? rr->str : "");
    }

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    rs->state = NGX_HTTP_SHOPIFY_REDIS_UP;

    ngx_log_error(NGX_LOG_NOTICE, rs->log, 0,
                  "shopify: connected to redis \"%V\"", &rs->smcf->addr);

    ngx_http_shopify_metrics_redis(1, rs->connected_before);

    rs->connected_before = 1;
    rs->backoff = 0;

    ngx_http_shopify_redis_release(1);
}


static void
ngx_http_shopify_redis_setup_done(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply                *rr;
    ngx_http_shopify_redis_t  *rs;

    rs = ac->ev.data;
    rr = reply;

    if (rr == NULL || rr->type != REDIS_REPLY_ERROR || rs->ac != ac) {
        return;
    }

    /* no enqueue was sent yet: the held requests get 503 */

    ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                  "shopify: redis \"%V\" refused %s: %*s",
                  &rs->smcf->addr, (char *) privdata, rr->len, rr->str);

    rs->ac = NULL;
    rs->state = NGX_HTTP_SHOPIFY_REDIS_DOWN;

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    /* freed by hiredis once this callback returns */
    redisAsyncFree(ac);

    ngx_http_shopify_redis_release(0);
    ngx_http_shopify_redis_schedule();
}


static void
ngx_http_shopify_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_str_t                  detail;
    ngx_http_request_t        *r;
    ngx_http_shopify_ctx_t    *ctx;
    ngx_http_shopify_token_t  *token;
    ngx_http_shopify_reply_e   outcome;

    token = privdata;
    r = token->request;

    ngx_free(token);

    if (r == NULL) {
        /* the request ended (client gone or deadline passed) */
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_shopify_module);

    if (ctx->reply_handler) {
        ctx->token = NULL;
        ctx->reply_handler(r, reply);
        return;
    }

    outcome = ngx_http_shopify_redis_outcome(reply, &detail);

    ngx_http_shopify_enqueue_done(r, outcome, &detail);
}


/* what the enqueue script's reply means; NULL: the connection failed */

ngx_http_shopify_reply_e
ngx_http_shopify_redis_outcome(void *reply, ngx_str_t *detail)
{
    redisReply                *rr;
    ngx_http_shopify_reply_e   outcome;

    rr = reply;

    ngx_str_null(detail);

    if (rr == NULL) {
        outcome = NGX_HTTP_SHOPIFY_REPLY_FAILED;
        ngx_str_set(detail, "connection lost");

    } else if (rr->type == REDIS_REPLY_ERROR) {
        outcome = (rr->len >= 8 && ngx_strncmp(rr->str, "NOSCRIPT", 8) == 0)
                  ? NGX_HTTP_SHOPIFY_REPLY_NOSCRIPT
                  : NGX_HTTP_SHOPIFY_REPLY_FAILED;
        detail->data = (u_char *) rr->str;
        detail->len = rr->len;

    } else if (rr->type == REDIS_REPLY_ARRAY
               && rr->elements >= 2
               && rr->element[0]->type == REDIS_REPLY_INTEGER
               && rr->element[1]->type == REDIS_REPLY_STRING)
    {
        if (rr->element[0]->integer) {
            outcome = NGX_HTTP_SHOPIFY_REPLY_ENQUEUED;

        } else if (rr->elements == 3
                   && rr->element[2]->type == REDIS_REPLY_INTEGER
                   && rr->element[2]->integer == 2)
        {
            outcome = NGX_HTTP_SHOPIFY_REPLY_DUPLICATE_EVENT;

        } else {
            outcome = NGX_HTTP_SHOPIFY_REPLY_DUPLICATE;
        }

        detail->data = (u_char *) rr->element[1]->str;
        detail->len = rr->element[1]->len;

    } else {
        outcome = NGX_HTTP_SHOPIFY_REPLY_FAILED;
        ngx_str_set(detail, "unexpected reply to the enqueue script");
    }

    return outcome;
}


/* hiredis event hooks on nginx's event loop */


static void
ngx_http_shopify_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_shopify_redis_t  *rs;

    c = ev->data;
    rs = c->data;

    /* the context and c may be freed inside: touch neither afterwards */
    redisAsyncHandleRead(rs->ac);
}


static void
ngx_http_shopify_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_shopify_redis_t  *rs;

    c = ev->data;
    rs = c->data;

    redisAsyncHandleWrite(rs->ac);
}


/*
 * Level-triggered registration: hiredis reads at most 16k per call, so
 * with edge triggering a burst of replies could be left unread.
 */

static void
ngx_http_shopify_redis_add_read(void *data)
{
    ngx_http_shopify_redis_t  *rs = data;

    if (!rs->conn->read->active) {
        if (ngx_add_event(rs->conn->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, rs->log, 0,
                          "shopify: cannot add redis read event");
        }
    }
}


static void
ngx_http_shopify_redis_del_read(void *data)
{
    ngx_http_shopify_redis_t  *rs = data;

    if (rs->conn->read->active) {
        (void) ngx_del_event(rs->conn->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_shopify_redis_add_write(void *data)
{
    ngx_http_shopify_redis_t  *rs = data;

    if (!rs->conn->write->active) {
        if (ngx_add_event(rs->conn->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, rs->log, 0,
                          "shopify: cannot add redis write event");
        }
    }
}


static void
ngx_http_shopify_redis_del_write(void *data)
{
    ngx_http_shopify_redis_t  *rs = data;

    if (rs->conn->write->active) {
        (void) ngx_del_event(rs->conn->write, NGX_WRITE_EVENT, 0);
    }
}


/*
 * Called by hiredis while it frees the context, just before it closes the
 * socket: release the nginx connection but leave the fd to hiredis.
 */

static void
ngx_http_shopify_redis_cleanup(void *data)
{
    ngx_connection_t          *c;
    ngx_http_shopify_redis_t  *rs = data;

    c = rs->conn;

    if (c == NULL) {
        return;
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;
    rs->conn = NULL;
}
