/*
 * The worker loop and the exactly-once handling of orders/create.
 *
 * Exactly once rests on three things:
 *
 *   1. the PostgreSQL ledger row of the order says whether a BC document
 *      exists for it, and the stream entry is acknowledged only after the
 *      outcome is committed there;
 *   2. an "attempt started" mark (in_doubt) is committed before every
 *      POST, so an attempt whose outcome was lost (crash, timeout, 5xx,
 *      dropped connection) is followed by a lookup of the document in BC
 *      by externalDocumentNumber before anything is posted again;
 *   3. only one worker handles an order at a time: an advisory lock in
 *      PostgreSQL between processes, a registry of orders in flight
 *      between the threads of one process, and, for an attempt started
 *      by another process that may still be running, a wait until that
 *      attempt's HTTP request has certainly ended (BC365_TIMEOUT_MS).
 */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "bc.h"
#include "customer.h"
#include "dlq.h"
#include "dupcheck.h"
#include "errclass.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "order_map.h"
#include "orders_sync.h"
#include "shops.h"
#include "stream.h"
#include "worker.h"


#define SBW_DONE   0           /* entry acknowledged or nothing to do */
#define SBW_RETRY  1           /* entry stays pending, try again later */

#define SBW_TOPIC_ORDERS_CREATE  "orders/create"

/* extra wait after another process's attempt before looking it up */
#define SBW_INFLIGHT_GRACE_MS  5000

/* how often thread 0 counts the open dead letters for the gauge */
#define SBW_DLQ_STATS_INTERVAL  15.0
#define SBW_LAG_STATS_INTERVAL  5.0


typedef struct {
    sbw_entry_t  entry;
    double       due;           /* monotonic seconds */
    unsigned     attempts;      /* tries so far */
} sbw_retry_t;


struct sbw_worker_s {
    int                      index;
    pthread_t                tid;
    int                      started;
    const sbw_worker_env_t  *env;
    const sbw_config_t      *conf;

    sbw_stream_t             stream;
    sbw_ledger_t             ledger;
    sbw_bc_t                 bc;
    sbw_map_conf_t           mc;
    sbw_sync_t               sync;        /* orders_sync.c context */
    sbw_rng_t                rng;
    char                     owner[200];     /* name/index#instance */
    char                     owner_prefix[160];

    int                      redis_broken;
    int                      need_pending;
    unsigned                 redis_failures;

    sbw_retry_t             *queue;
    size_t                   qlen;
    size_t                   qcap;

    sbw_shops_ctx_t         *shops;          /* the Shopify app topics */
};


/* one order being processed by some thread of this process */
typedef struct sbw_inflight_s  sbw_inflight_t;

struct sbw_inflight_s {
    char             key[300];
    sbw_inflight_t  *next;
};


/* context of one order, for its log lines */
typedef struct {
    const sbw_entry_t  *entry;
    const char         *shop;          /* the entry's, in lower case */
    int64_t             order_id;
    const char         *order_name;
    const char         *external_doc;
    const char         *email;         /* NULL when the order has none */
    double              t0;
} sbw_order_ctx_t;


/* BC customer numbers by e-mail, shared by the threads of the process */
static pthread_once_t         sbw_customer_once = PTHREAD_ONCE_INIT;
static sbw_customer_cache_t   sbw_customer_cache;


static pthread_mutex_t   sbw_inflight_mutex = PTHREAD_MUTEX_INITIALIZER;
static sbw_inflight_t   *sbw_inflight_head;


static double sbw_mono(void);
static void sbw_worker_sleep(sbw_worker_t *w, long ms);
static int sbw_inflight_enter(const char *key);
static void sbw_inflight_leave(const char *key);
static void sbw_log_order(int level, const char *event,
    const sbw_order_ctx_t *oc, json_t *extra);
static long sbw_worker_delay(sbw_worker_t *w, unsigned attempts,
    long retry_after_ms);
static int sbw_worker_ack(sbw_worker_t *w, const sbw_entry_t *e);
static int sbw_worker_park(sbw_worker_t *w, const sbw_entry_t *e,
    const sbw_order_ctx_t *oc, const char *code, const char *message,
    const char *correlation_id, int attempts, int ledger_failed);
static void sbw_worker_replayed(sbw_worker_t *w, const sbw_entry_t *e,
    const sbw_order_ctx_t *oc, const char *bc_number);
static void sbw_worker_give_up(sbw_worker_t *w, const sbw_entry_t *e,
    long long deliveries);
static void sbw_worker_handle_redelivered(sbw_worker_t *w,
    sbw_entry_t *es, size_t n, int claimed);
static void sbw_worker_dlq_stats(sbw_worker_t *w);
static void sbw_worker_dupcheck(sbw_worker_t *w);
static int sbw_worker_process(sbw_worker_t *w, const sbw_entry_t *e,
    unsigned attempts, long *delay_ms);
static int sbw_worker_order(sbw_worker_t *w, const sbw_entry_t *e,
    unsigned attempts, long *delay_ms);
static int sbw_worker_shops(sbw_worker_t *w, const sbw_entry_t *e,
    unsigned attempts, long *delay_ms);
static int sbw_worker_order_locked(sbw_worker_t *w, const sbw_entry_t *e,
    sbw_order_ctx_t *oc, int map_rc, sbw_bc_order_t *o,
    const char *map_err, const json_t *order, unsigned attempts,
    long *delay_ms);
static int sbw_worker_sync_done(sbw_worker_t *w, const sbw_entry_t *e,
    sbw_order_ctx_t *oc, sbw_sync_result_t *sr, unsigned attempts,
    long *delay_ms);
static void sbw_customer_cache_setup(void);
static int sbw_worker_customer(sbw_worker_t *w, sbw_order_ctx_t *oc,
    sbw_bc_order_t *o, const json_t *order, sbw_bc_result_t *res);
static int sbw_queue_has(sbw_worker_t *w, const char *id);
static void sbw_queue_push(sbw_worker_t *w, const sbw_entry_t *e,
    unsigned attempts, long delay_ms);
static void sbw_queue_remove(sbw_worker_t *w, size_t i);
static double sbw_queue_next_due(sbw_worker_t *w);
static void sbw_worker_handle_new(sbw_worker_t *w, const sbw_entry_t *e);
static void sbw_worker_run_due(sbw_worker_t *w);
static int sbw_worker_pending_pass(sbw_worker_t *w);
static int sbw_worker_claim_pass(sbw_worker_t *w);
static void sbw_worker_trim(sbw_worker_t *w);
static int sbw_worker_redis_ready(sbw_worker_t *w);
static void *sbw_worker_run(void *arg);


static double
sbw_mono(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


/*
 * Sleep up to ms milliseconds, waking early when the daemon is told to
 * stop.
 */
static void
sbw_worker_sleep(sbw_worker_t *w, long ms)
{
    long             step;
    struct timespec  ts;

    while (ms > 0 && !*w->env->stop) {
        step = ms > 100 ? 100 : ms;
        ts.tv_sec = 0;
        ts.tv_nsec = step * 1000000L;

        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            if (*w->env->stop) {
                return;
            }
        }

        ms -= step;
    }
}


/*
 * Register an order as being processed by this process.  Returns 0, or
 * -1 when another thread already has it.
 */
static int
sbw_inflight_enter(const char *key)
{
    sbw_inflight_t  *p;

    pthread_mutex_lock(&sbw_inflight_mutex);

    for (p = sbw_inflight_head; p != NULL; p = p->next) {
        if (strcmp(p->key, key) == 0) {
            pthread_mutex_unlock(&sbw_inflight_mutex);
            return -1;
        }
    }

    p = malloc(sizeof(*p));
    if (p == NULL) {
        pthread_mutex_unlock(&sbw_inflight_mutex);
        return -1;
    }

    snprintf(p->key, sizeof(p->key), "%s", key);
    p->next = sbw_inflight_head;
    sbw_inflight_head = p;

    pthread_mutex_unlock(&sbw_inflight_mutex);
    return 0;
}


/*
 * Remove an order from this process's registry of orders in flight.
 */
static void
sbw_inflight_leave(const char *key)
{
    sbw_inflight_t  **pp, *p;

    pthread_mutex_lock(&sbw_inflight_mutex);

    for (pp = &sbw_inflight_head; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            p = *pp;
            *pp = p->next;
            free(p);
            break;
        }
    }

    pthread_mutex_unlock(&sbw_inflight_mutex);
}


/*
 * One log line about an order: the common identification fields, then
 * the event's own (extra is consumed).
 */
static void
sbw_log_order(int level, const char *event, const sbw_order_ctx_t *oc,
    json_t *extra)
{
    char     id[32];
    json_t  *f;

    if (!sbw_log_enabled(level)) {
        json_decref(extra);
        return;
    }

    if (oc->order_id > 0) {
        snprintf(id, sizeof(id), "%lld", (long long) oc->order_id);

    } else {
        id[0] = '\0';
    }

    f = json_pack("{s:s?,s:s?,s:s?,s:s?,s:s?,s:s?}",
                  "shop", oc->shop ? oc->shop : oc->entry->shop,
                  "order", id[0] ? id : NULL,
                  "order_name", oc->order_name,
                  "webhook_id", oc->entry->webhook_id,
                  "stream_id", oc->entry->id,
                  "external_document_number", oc->external_doc);

    if (f != NULL && extra != NULL) {
        json_object_update(f, extra);
    }

    json_decref(extra);

    if (f != NULL && oc->t0 > 0) {
        json_object_set_new(f, "ms", json_integer((json_int_t)
                            ((sbw_mono() - oc->t0) * 1000.0)));
    }

    sbw_log(level, event, f);
}


/*
 * Delay before the next try of an entry that has failed attempts times:
 * Retry-After when BC sent one, else exponential backoff with full
 * jitter.
 */
static long
sbw_worker_delay(sbw_worker_t *w, unsigned attempts, long retry_after_ms)
{
    return sbw_retry_delay_ms(&w->rng, attempts, w->conf->retry_base_ms,
                              w->conf->retry_max_ms, retry_after_ms,
                              w->conf->retry_after_max_ms);
}


/*
 * XACK the entry.  A failure leaves it pending: after the reconnect the
 * pending pass reads it again and the ledger turns it into a duplicate.
 */
static int
sbw_worker_ack(sbw_worker_t *w, const sbw_entry_t *e)
{
    if (sbw_stream_ack(&w->stream, e->id) != SBW_STREAM_OK) {
        sbw_log(SBW_LOG_WARN, "ack_failed",
                json_pack("{s:s,s:s}", "stream_id", e->id,
                          "message", w->stream.errstr));
        w->redis_broken = 1;
        return -1;
    }

    return 0;
}


/*
 * Park an entry in the dead-letter store (dlq.c).  With ledger_failed
 * the order's ledger row becomes "failed" in the same transaction, so
 * that an order is never failed without its dead letter (a later
 * delivery of a failed order is acknowledged as a duplicate, and would
 * not write it).  Both are committed before the caller acknowledges the
 * entry.  Returns 0, or -1 when PostgreSQL failed: nothing is recorded
 * and the entry must stay pending.
 */
static int
sbw_worker_park(sbw_worker_t *w, const sbw_entry_t *e,
    const sbw_order_ctx_t *oc, const char *code, const char *message,
    const char *correlation_id, int attempts, int ledger_failed)
{
    char            err[512];
    long long       id;
    const char     *reason;
    sbw_dlq_item_t  it;

    memset(&it, 0, sizeof(it));
    it.entry = e;
    it.shop = oc != NULL && oc->shop != NULL ? oc->shop : e->shop;
    it.order_id = oc != NULL ? oc->order_id : 0;
    it.code = code;
    it.message = message;
    it.correlation_id = correlation_id;
    it.attempts = attempts;

    reason = sbw_dlq_reason(code);

    if (sbw_ledger_connect(&w->ledger) != 0) {
        snprintf(err, sizeof(err), "%s", w->ledger.errstr);
        goto failed;
    }

    if (sbw_dlq_exec(w->ledger.conn, "BEGIN", err, sizeof(err)) != 0) {
        goto failed;
    }

    if (ledger_failed
        && sbw_ledger_failed(&w->ledger, it.order_id, code, message) != 0)
    {
        snprintf(err, sizeof(err), "%s", w->ledger.errstr);
        PQclear(PQexec(w->ledger.conn, "ROLLBACK"));
        goto failed;
    }

    if (sbw_dlq_add(w->ledger.conn, &it, &id, err, sizeof(err)) != 0
        || sbw_dlq_exec(w->ledger.conn, "COMMIT", err, sizeof(err)) != 0)
    {
        PQclear(PQexec(w->ledger.conn, "ROLLBACK"));
        goto failed;
    }

    sbw_metrics_dead_letter_written(reason);

    if (e->dead_letter_id != NULL) {
        sbw_metrics_dead_letter_replayed("failed_again");
    }

    sbw_log(SBW_LOG_INFO, "dead_lettered",
            json_pack("{s:I,s:s,s:s,s:s?,s:s,s:s?}",
                      "dead_letter_id", (json_int_t) id,
                      "reason", reason, "bc_error_code", code,
                      "replay_of", e->dead_letter_id,
                      "stream_id", e->id,
                      "webhook_id", e->webhook_id));
    return 0;

failed:

    sbw_metrics_set_postgres_up(0);
    sbw_log(SBW_LOG_WARN, "dead_letter_failed",
            json_pack("{s:s,s:s,s:s}", "stream_id", e->id,
                      "reason", reason, "message", err));
    return -1;
}


/*
 * A replayed dead letter (an entry the command line put back in the
 * stream) whose order now exists in BC: mark the dead letter resolved.
 * A failure here loses nothing (the ledger knows the order), so it is
 * only logged.
 */
static void
sbw_worker_replayed(sbw_worker_t *w, const sbw_entry_t *e,
    const sbw_order_ctx_t *oc, const char *bc_number)
{
    char  err[512];

    if (e->dead_letter_id == NULL || !sbw_dlq_id_ok(e->dead_letter_id)) {
        return;
    }

    if (sbw_dlq_resolved(w->ledger.conn, e->dead_letter_id, bc_number,
                         err, sizeof(err)) != 0)
    {
        sbw_log_order(SBW_LOG_WARN, "postgres_error", oc,
                      json_pack("{s:s}", "message", err));
        return;
    }

    sbw_metrics_dead_letter_replayed("resolved");
    sbw_log_order(SBW_LOG_INFO, "dead_letter_resolved", oc,
                  json_pack("{s:s,s:s}", "dead_letter_id",
                            e->dead_letter_id, "bc_number", bc_number));
}


/*
 * Handle one stream entry.  Returns SBW_DONE when the entry needs no
 * more work (acknowledged, or its ack failed and the pending pass will
 * see it again), SBW_RETRY with *delay_ms when it must be tried again.
 */
static int
sbw_worker_process(sbw_worker_t *w, const sbw_entry_t *e, unsigned attempts,
    long *delay_ms)
{
    const char  *topic;

    *delay_ms = 0;

    /* a pending entry trimmed away by someone: nothing left to process */
    if (e->deleted) {
        sbw_log(SBW_LOG_WARN, "entry_gone",
                json_pack("{s:s}", "stream_id", e->id));
        sbw_metrics_entry("unknown", "gone");
        sbw_worker_ack(w, e);
        return SBW_DONE;
    }

    topic = e->topic ? e->topic : "";

    if (strcmp(topic, SBW_TOPIC_ORDERS_CREATE) == 0
        || strcmp(topic, SBW_TOPIC_ORDERS_UPDATED) == 0
        || strcmp(topic, SBW_TOPIC_ORDERS_CANCELLED) == 0)
    {
        return sbw_worker_order(w, e, attempts, delay_ms);
    }

    if (sbw_shops_handles(topic)) {
        return sbw_worker_shops(w, e, attempts, delay_ms);
    }

    /* the intake always writes a topic: an entry without one is parked */
    if (topic[0] == '\0') {
        sbw_log(SBW_LOG_ERROR, "entry_invalid",
                json_pack("{s:s?,s:s?,s:s,s:s}", "shop", e->shop,
                          "webhook_id", e->webhook_id, "stream_id", e->id,
                          "message", "the entry has no topic"));

        if (sbw_worker_park(w, e, NULL, "Worker_InvalidEntry",
                            "the entry has no topic", NULL, (int) attempts,
                            0)
            != 0)
        {
            *delay_ms = sbw_worker_delay(w, attempts, -1);
            return SBW_RETRY;
        }

        sbw_metrics_entry("unknown", "invalid");
        sbw_worker_ack(w, e);
        return SBW_DONE;
    }

    /* no handler yet: acknowledge and count */
    sbw_log(SBW_LOG_INFO, "entry_ignored",
            json_pack("{s:s,s:s?,s:s?,s:s}", "topic", topic,
                      "shop", e->shop, "webhook_id", e->webhook_id,
                      "stream_id", e->id));
    sbw_metrics_entry(topic, "ignored");
    sbw_worker_ack(w, e);

    return SBW_DONE;
}


/*
 * Installs, uninstalls and privacy requests (shops.c): acknowledged when
 * done, dead-lettered when unusable, retried while PostgreSQL or Redis
 * fail.
 */
static int
sbw_worker_shops(sbw_worker_t *w, const sbw_entry_t *e, unsigned attempts,
    long *delay_ms)
{
    int               rc;
    sbw_shops_dead_t  dead;

    if (sbw_ledger_connect(&w->ledger) != 0) {
        sbw_metrics_set_postgres_up(0);
        sbw_log(SBW_LOG_WARN, "postgres_unavailable",
                json_pack("{s:s,s:s}", "topic", e->topic, "message",
                          w->ledger.errstr));
        rc = SBW_SHOPS_RETRY;

    } else {
        rc = sbw_shops_entry(w->shops, w->ledger.conn, w->stream.ctx, e,
                             &dead);
    }

    if (rc == SBW_SHOPS_RETRY) {
        *delay_ms = sbw_worker_delay(w, attempts, -1);
        sbw_metrics_retry("shops");
        sbw_metrics_entry(e->topic, "retry");
        return SBW_RETRY;
    }

    if (rc == SBW_SHOPS_DEAD) {
        if (sbw_worker_park(w, e, NULL, dead.code, dead.reason, NULL,
                            (int) attempts, 0)
            != 0)
        {
            *delay_ms = sbw_worker_delay(w, attempts, -1);
            return SBW_RETRY;
        }

        sbw_metrics_entry(e->topic, "invalid");

    } else {
        sbw_metrics_entry(e->topic, "done");
    }

    sbw_worker_ack(w, e);
    return SBW_DONE;
}


/*
 * orders/create: parse and map the order, then take the locks and run
 * the ledger algorithm.  Payloads that cannot be keyed (not JSON, no
 * order id, no shop) go to the dead-letter stream and are acknowledged.
 * The order's identity is its Shopify order id alone (unique across
 * shops); the shop, in lower case, is recorded and logged.
 */
static int
sbw_worker_order(sbw_worker_t *w, const sbw_entry_t *e, unsigned attempts,
    long *delay_ms)
{
    int               rc, map_rc;
    char              key[32], map_err[1024], extdoc[SBW_CODE35_BUFLEN];
    char              order_name[128], shop[SBW_SHOP_BUFLEN];
    char              email[SBW_EMAIL_BUFLEN];
    json_t           *order, *skus;
    int64_t           order_id;
    char             *near;
    sbw_map_conf_t    mc;
    const char       *reason, *name;
    json_error_t      jerr;
    sbw_bc_order_t    o;
    sbw_order_ctx_t   oc;

    memset(&oc, 0, sizeof(oc));
    oc.entry = e;
    oc.t0 = sbw_mono();

    order = NULL;
    reason = NULL;

    if (e->body == NULL || e->body_len == 0) {
        reason = "entry has no body";

    } else {
        order = sbw_order_parse(e->body, e->body_len, &jerr);

        if (order == NULL) {
            reason = "body is not valid JSON";

        } else if (sbw_order_id(order, &order_id) != 0) {
            reason = "order has no usable id";

        } else if (e->shop == NULL || e->shop[0] == '\0') {
            reason = "entry has no shop";

        } else if (sbw_ascii_lower(e->shop, shop, sizeof(shop)) != 0) {
            reason = "shop name is too long";

        } else {
            oc.shop = shop;
        }
    }

    if (reason != NULL) {
        if (order == NULL && e->body != NULL && e->body_len > 0) {
            /* where jansson stopped, not the text it stopped at */
            near = strstr(jerr.text, " near ");
            if (near != NULL) {
                *near = '\0';
            }

            sbw_log_order(SBW_LOG_ERROR, "entry_invalid", &oc,
                          json_pack("{s:s,s:s,s:s,s:i,s:i}",
                                    "topic", e->topic,
                                    "message", reason,
                                    "json_error", jerr.text,
                                    "json_line", (json_int_t) jerr.line,
                                    "json_column",
                                    (json_int_t) jerr.column));

        } else {
            sbw_log_order(SBW_LOG_ERROR, "entry_invalid", &oc,
                          json_pack("{s:s,s:s}",
                                    "topic", e->topic,
                                    "message", reason));
        }

        json_decref(order);

        if (sbw_worker_park(w, e, &oc, "Worker_InvalidEntry", reason, NULL,
                            0, 0) != 0)
        {
            *delay_ms = sbw_worker_delay(w, attempts, -1);
            sbw_metrics_retry("postgres");
            return SBW_RETRY;
        }

        sbw_metrics_entry(e->topic, "invalid");
        sbw_worker_ack(w, e);
        return SBW_DONE;
    }

    oc.order_id = order_id;
    sbw_external_doc_number(order_id, extdoc, sizeof(extdoc));
    oc.external_doc = extdoc;

    name = json_string_value(json_object_get(order, "name"));
    snprintf(order_name, sizeof(order_name), "%s", name ? name : "");
    oc.order_name = order_name;

    if (w->conf->customer_strategy != SBW_CUSTOMER_DEFAULT
        && sbw_order_email(order, email, sizeof(email)) == 0)
    {
        oc.email = email;
    }

    /*
     * the SKU map of this order's SKUs from bc_sku_map; an edited or
     * cancelled order is mapped with its current quantities and total
     */
    mc = w->mc;
    mc.use_current = strcmp(e->topic, SBW_TOPIC_ORDERS_CREATE) != 0;
    skus = sbw_sync_sku_map(&w->ledger, order);

    if (skus == NULL) {
        sbw_log_order(SBW_LOG_WARN, "postgres_error", &oc,
                      json_pack("{s:s}", "message", w->ledger.errstr));
        json_decref(order);
        sbw_metrics_set_postgres_up(0);
        sbw_ledger_close(&w->ledger);
        *delay_ms = sbw_worker_delay(w, attempts, -1);
        sbw_metrics_retry("postgres");
        return SBW_RETRY;
    }

    mc.sku_map = skus;
    map_rc = sbw_order_map(&mc, order, &o, map_err, sizeof(map_err));
    json_decref(skus);

    if (map_rc == SBW_MAP_NOMEM) {
        json_decref(order);
        *delay_ms = sbw_worker_delay(w, attempts, -1);
        sbw_metrics_retry("memory");
        return SBW_RETRY;
    }

    /* one thread of this process per order, whatever shop it names */
    snprintf(key, sizeof(key), "%lld", (long long) order_id);

    if (sbw_inflight_enter(key) != 0) {
        json_decref(order);
        sbw_order_free(&o);
        *delay_ms = 500 + (long) sbw_rng_below(&w->rng, 1000);
        sbw_metrics_retry("order_busy");
        return SBW_RETRY;
    }

    rc = sbw_worker_order_locked(w, e, &oc, map_rc, &o, map_err, order,
                                 attempts, delay_ms);

    sbw_inflight_leave(key);
    json_decref(order);

    if (map_rc == SBW_MAP_OK) {
        sbw_order_free(&o);
    }

    return rc;
}


/*
 * The ledger algorithm for one order, with this process's registry
 * entry held:
 *
 *   lock the order (advisory lock) and read or insert its ledger row;
 *   created / failed      -> acknowledge (a duplicate delivery);
 *   mapping refused       -> record the failure, dead-letter, acknowledge;
 *   in doubt              -> look the document up in BC; if found record
 *                            it and acknowledge;
 *   otherwise             -> commit "attempt started", POST the order,
 *                            record the outcome, then acknowledge (or
 *                            leave pending for a retry).
 */
static int
sbw_worker_order_locked(sbw_worker_t *w, const sbw_entry_t *e,
    sbw_order_ctx_t *oc, int map_rc, sbw_bc_order_t *o, const char *map_err,
    const json_t *order, unsigned attempts, long *delay_ms)
{
    int                locked, tries, found, same_name, is_create;
    json_t            *extra;
    sbw_sync_row_t     srow;
    sbw_sync_result_t  sr;
    char               code[128], msg[512], *payload;
    char               bc_id[64], bc_number[64];
    long               guard_ms;
    sbw_bc_doc_t       doc;
    sbw_bc_class_e     cls;
    sbw_bc_result_t    res;
    sbw_ledger_row_t   row;

    memset(&res, 0, sizeof(res));
    res.retry_after_ms = -1;
    sbw_sync_result_init(&sr);
    is_create = strcmp(e->topic, SBW_TOPIC_ORDERS_CREATE) == 0;

    /* 1. PostgreSQL connection and the order's lock */
    if (sbw_ledger_connect(&w->ledger) != 0) {
        sbw_metrics_set_postgres_up(0);
        sbw_log_order(SBW_LOG_WARN, "postgres_unavailable", oc,
                      json_pack("{s:s}", "message", w->ledger.errstr));
        *delay_ms = sbw_worker_delay(w, attempts, -1);
        sbw_metrics_retry("postgres");
        return SBW_RETRY;
    }

    locked = sbw_ledger_lock(&w->ledger, oc->order_id);

    if (locked < 0) {
        sbw_metrics_set_postgres_up(0);
        sbw_log_order(SBW_LOG_WARN, "postgres_error", oc,
                      json_pack("{s:s}", "message", w->ledger.errstr));
        sbw_ledger_close(&w->ledger);
        *delay_ms = sbw_worker_delay(w, attempts, -1);
        sbw_metrics_retry("postgres");
        return SBW_RETRY;
    }

    if (locked == 0) {
        /* another worker process is on this order right now */
        *delay_ms = 500 + (long) sbw_rng_below(&w->rng, 1000);
        sbw_metrics_retry("order_busy");
        return SBW_RETRY;
    }

    sbw_metrics_set_postgres_up(1);

    /* 2. the ledger row */
    if (sbw_ledger_claim(&w->ledger, oc->shop, oc->order_id,
                         oc->order_name ? oc->order_name : "",
                         oc->external_doc, e->webhook_id ? e->webhook_id
                                                         : "",
                         e->id, &row) != 0)
    {
        sbw_log_order(SBW_LOG_WARN, "postgres_error", oc,
                      json_pack("{s:s}", "message", w->ledger.errstr));
        goto retry_pg;
    }

    /* the number stored the first time is the one used, always */
    if (row.external_doc[0] != '\0' && map_rc == SBW_MAP_OK) {
        snprintf(o->external_doc, sizeof(o->external_doc), "%s",
                 row.external_doc);
        oc->external_doc = o->external_doc;
    }

    /*
     * X-Shopify-Shop-Domain is not covered by the webhook's HMAC, and an
     * order id belongs to one shop only: a delivery naming another shop
     * is this same order (a replay, or a misconfigured sender), handled
     * as such, and worth a warning.
     */
    if (strcmp(row.shop, oc->shop) != 0) {
        sbw_log_order(SBW_LOG_WARN, "order_shop_mismatch", oc,
                      json_pack("{s:s,s:s}", "ledger_shop", row.shop,
                                "message", "the delivery names another "
                                "shop than the one recorded for this "
                                "order id; handled as the same order"));
    }

    /*
     * the order's BC company: the one recorded with the order, else the
     * shop's (the shop of the ledger row, the first delivery's)
     */
    if (sbw_sync_read(&w->ledger, oc->order_id, &srow) != 0) {
        sbw_log_order(SBW_LOG_WARN, "postgres_error", oc,
                      json_pack("{s:s}", "message", w->ledger.errstr));
        goto retry_pg;
    }

    if (sbw_sync_use_company(&w->sync, &srow, row.shop) != 0) {
        goto retry_pg;
    }

    /*
     * an order in BC: a pending totals check, or an update or a
     * cancellation to apply (orders_sync.c); an edited order the mapping
     * refuses goes to review
     */
    if (strcmp(row.state, "created") == 0 && map_rc != SBW_MAP_OK
        && !is_create)
    {
        snprintf(sr.code, sizeof(sr.code), "%s", map_rc
                 == SBW_MAP_UNSUPPORTED ? SBW_MAP_ERR_UNSUPPORTED
                                        : SBW_MAP_ERR_INVALID);
        snprintf(sr.message, sizeof(sr.message), "%.500s", map_err);
        sr.action = SBW_SYNC_REVIEW;
        sr.level = SBW_LOG_ERROR;
        sr.event = "order_conflict";
        sr.extra = json_pack("{s:s,s:s}", "bc_error_code", sr.code,
                             "message", map_err);
        return sbw_worker_sync_done(w, e, oc, &sr, attempts, delay_ms);
    }

    if (strcmp(row.state, "created") == 0 && map_rc == SBW_MAP_OK) {
        sbw_sync_created(&w->sync, oc->order_id, &srow, o, srow.doc_type,
                         row.bc_id, e->topic, &sr);

        if (sr.action == SBW_SYNC_ACK && sr.event == NULL
            && sr.extra != NULL)
        {
            /* a totals check an earlier try left pending, now done */
            sr.event = "order_totals";
        }

        if (sr.action != SBW_SYNC_ACK || sr.event != NULL) {
            return sbw_worker_sync_done(w, e, oc, &sr, attempts, delay_ms);
        }

        sbw_sync_result_clear(&sr);
    }

    if (strcmp(row.state, "created") == 0) {
        sbw_worker_replayed(w, e, oc, row.bc_number);
        sbw_ledger_unlock(&w->ledger, oc->order_id);
        sbw_log_order(SBW_LOG_INFO, "order_duplicate", oc,
                      json_pack("{s:s}", "bc_number", row.bc_number));
        sbw_metrics_order_deduped();
        sbw_metrics_entry(e->topic, "duplicate");
        sbw_worker_ack(w, e);
        return SBW_DONE;
    }

    if (strcmp(row.state, "failed") == 0) {
        sbw_ledger_unlock(&w->ledger, oc->order_id);
        sbw_log_order(SBW_LOG_INFO, "order_duplicate_failed", oc,
                      json_pack("{s:s}", "bc_error_code", row.error_code));
        sbw_metrics_entry(e->topic, "duplicate_failed");
        sbw_worker_ack(w, e);
        return SBW_DONE;
    }

    /* 3. orders the mapping refuses are never sent */
    if (map_rc != SBW_MAP_OK) {
        snprintf(code, sizeof(code), "%s", map_rc == SBW_MAP_UNSUPPORTED
                 ? SBW_MAP_ERR_UNSUPPORTED : SBW_MAP_ERR_INVALID);

        if (sbw_worker_park(w, e, oc, code, map_err, NULL, row.attempts, 1)
            != 0)
        {
            goto retry_pg;
        }

        sbw_ledger_unlock(&w->ledger, oc->order_id);
        sbw_log_order(SBW_LOG_ERROR, "order_failed", oc,
                      json_pack("{s:s,s:s}", "bc_error_code", code,
                                "message", map_err));
        sbw_metrics_order_failed("mapping");
        sbw_metrics_entry(e->topic, "failed");
        sbw_worker_ack(w, e);

        return SBW_DONE;
    }

    /* a cancellation of an order BC never got: nothing to create */
    if (strcmp(e->topic, SBW_TOPIC_ORDERS_CANCELLED) == 0 && !row.in_doubt) {
        sbw_sync_cancel_before_create(&w->sync, oc->order_id, o, &sr);
        return sbw_worker_sync_done(w, e, oc, &sr, attempts, delay_ms);
    }

    /* 4. an earlier attempt's outcome is unknown: look in BC first */
    if (row.in_doubt) {
        same_name = strncmp(row.owner, w->owner_prefix,
                            strlen(w->owner_prefix)) == 0;

        /*
         * An attempt by another worker (other WORKER_NAME) may still be
         * on the wire if that worker lost its PostgreSQL session but not
         * its life: wait until its request has certainly timed out.  Our
         * own earlier attempts (this process, whose threads are kept
         * apart by the in-flight registry, or a previous run of this
         * WORKER_NAME, which is dead since we hold its consumer name) are
         * known to be over.
         */
        if (!same_name && row.since_attempt_ms >= 0) {
            guard_ms = w->conf->timeout_ms + w->conf->connect_timeout_ms
                       + SBW_INFLIGHT_GRACE_MS;

            if (row.since_attempt_ms < guard_ms) {
                sbw_ledger_unlock(&w->ledger, oc->order_id);
                *delay_ms = guard_ms - (long) row.since_attempt_ms
                            + (long) sbw_rng_below(&w->rng, 1000);
                sbw_log_order(SBW_LOG_INFO, "order_wait_foreign_attempt", oc,
                              json_pack("{s:s,s:i}", "attempt_owner",
                                        row.owner, "wait_ms",
                                        (json_int_t) *delay_ms));
                sbw_metrics_retry("foreign_attempt");
                return SBW_RETRY;
            }
        }

        found = sbw_bc_find_document(&w->bc, oc->external_doc, &doc, &res);

        if (found < 0) {
            sbw_bc_describe(&res, code, sizeof(code), msg, sizeof(msg));
            sbw_ledger_retry(&w->ledger, oc->order_id, 1, code, msg, 0);
            sbw_ledger_unlock(&w->ledger, oc->order_id);
            *delay_ms = sbw_worker_delay(w, attempts, res.retry_after_ms);
            sbw_log_order(SBW_LOG_WARN, "order_retry", oc,
                          json_pack("{s:s,s:s,s:s,s:i,s:s,s:i}",
                                    "step", "lookup",
                                    "bc_error_code", code, "message", msg,
                                    "status", (json_int_t) res.status,
                                    "correlation_id", res.correlation_id,
                                    "retry_in_ms", (json_int_t) *delay_ms));
            sbw_metrics_retry("bc_lookup");
            sbw_bc_result_clear(&res);
            return SBW_RETRY;
        }

        if (found > 0) {
            if (sbw_ledger_created(&w->ledger, oc->order_id,
                                   doc.doc_type, doc.id, doc.number,
                                   "lookup") != 0)
            {
                sbw_log_order(SBW_LOG_WARN, "postgres_error", oc,
                              json_pack("{s:s}", "message",
                                        w->ledger.errstr));
                sbw_bc_result_clear(&res);
                goto retry_pg;
            }

            sbw_worker_replayed(w, e, oc, doc.number);
            sbw_log_order(doc.matches > 1 ? SBW_LOG_WARN : SBW_LOG_INFO,
                          "order_recovered", oc,
                          json_pack("{s:s,s:s,s:i,s:i}",
                                    "bc_number", doc.number,
                                    "bc_document_type", doc.doc_type,
                                    "bc_matches", (json_int_t) doc.matches,
                                    "attempts", (json_int_t) row.attempts));
            sbw_metrics_order_recovered();
            sbw_metrics_order_deduped();
            sbw_metrics_entry(e->topic, "recovered");
            sbw_bc_result_clear(&res);

            /*
             * then, as for an order the ledger knew: its totals check, or
             * the update or cancellation this delivery carries
             */
            sbw_sync_created(&w->sync, oc->order_id, &srow, o,
                             doc.doc_type, doc.id, e->topic, &sr);

            if (sr.action == SBW_SYNC_ACK && sr.event == NULL
                && sr.extra != NULL)
            {
                sr.event = "order_totals";
            }

            return sbw_worker_sync_done(w, e, oc, &sr, attempts, delay_ms);
        }

        sbw_bc_result_clear(&res);

        /*
         * Not in BC yet.  A request whose answer was lost may still be
         * queued or running in BC (its client gave up, BC did not): it
         * is posted again only once BC365_INDOUBT_WAIT_MS have passed
         * since it was sent, looking it up again meanwhile.
         */
        /* TODO: a 500 answered by BC itself needs no wait; unrecorded */
        if (row.since_attempt_ms >= 0
            && row.since_attempt_ms < w->conf->indoubt_wait_ms)
        {
            guard_ms = w->conf->indoubt_wait_ms - (long) row.since_attempt_ms;
            *delay_ms = sbw_worker_delay(w, attempts, -1);

            if (*delay_ms > guard_ms) {
                *delay_ms = guard_ms;
            }

            *delay_ms += 50 + (long) sbw_rng_below(&w->rng, 200);

            sbw_ledger_unlock(&w->ledger, oc->order_id);
            sbw_log_order(SBW_LOG_INFO, "order_wait_in_doubt", oc,
                          json_pack("{s:I,s:I,s:i}",
                                    "since_attempt_ms",
                                    (json_int_t) row.since_attempt_ms,
                                    "wait_left_ms", (json_int_t) guard_ms,
                                    "retry_in_ms", (json_int_t) *delay_ms));
            sbw_metrics_retry("in_doubt_wait");
            return SBW_RETRY;
        }

        /*
         * a cancellation of an order BC has not got (and, the wait over,
         * will not get from an earlier attempt): nothing to create
         */
        if (strcmp(e->topic, SBW_TOPIC_ORDERS_CANCELLED) == 0) {
            sbw_sync_cancel_before_create(&w->sync, oc->order_id, o, &sr);
            return sbw_worker_sync_done(w, e, oc, &sr, attempts, delay_ms);
        }
    }

    /*
     * 5. the customer, before the attempt is committed: a failed look-up
     * is retried like a POST that was not sent, and leaves in_doubt as it
     * was
     */
    if (sbw_worker_customer(w, oc, o, order, &res) != 0) {
        sbw_bc_describe(&res, code, sizeof(code), msg, sizeof(msg));
        *delay_ms = sbw_worker_delay(w, attempts, res.retry_after_ms);
        sbw_ledger_retry(&w->ledger, oc->order_id, row.in_doubt, code, msg,
                         *delay_ms);
        sbw_ledger_unlock(&w->ledger, oc->order_id);
        sbw_log_order(SBW_LOG_WARN, "order_retry", oc,
                      json_pack("{s:s,s:s,s:s,s:i,s:s,s:i}",
                                "step", "customer_lookup",
                                "bc_error_code", code, "message", msg,
                                "status", (json_int_t) res.status,
                                "correlation_id", res.correlation_id,
                                "retry_in_ms", (json_int_t) *delay_ms));
        sbw_metrics_retry("bc_lookup");
        sbw_bc_result_clear(&res);
        return SBW_RETRY;
    }

    sbw_bc_result_clear(&res);

    /*
     * 6. commit "attempt started", then POST; the limiter's wait comes
     * first, so that an attempt left by a crash was a request on its way
     * and not an order still waiting for BC's budget
     */
    if (sbw_bc_wait_budget(&w->bc) != 0) {
        sbw_ledger_unlock(&w->ledger, oc->order_id);
        *delay_ms = 0;
        return SBW_RETRY;
    }

    if (sbw_ledger_start_attempt(&w->ledger, oc->order_id, w->owner, &tries)
        != 0)
    {
        sbw_log_order(SBW_LOG_WARN, "postgres_error", oc,
                      json_pack("{s:s}", "message", w->ledger.errstr));
        goto retry_pg;
    }

    payload = sbw_order_payload(o);

    if (payload == NULL) {
        sbw_ledger_retry(&w->ledger, oc->order_id, 0, "Worker_NoMemory",
                         "out of memory", 1000);
        sbw_ledger_unlock(&w->ledger, oc->order_id);
        *delay_ms = sbw_worker_delay(w, attempts, -1);
        sbw_metrics_retry("memory");
        return SBW_RETRY;
    }

    cls = sbw_bc_create_order(&w->bc, payload, &res, bc_id, sizeof(bc_id),
                              bc_number, sizeof(bc_number));
    free(payload);

    switch (cls) {

    case SBW_BC_OK:
        if (sbw_ledger_created(&w->ledger, oc->order_id,
                               "salesOrder", bc_id, bc_number, "post") != 0)
        {
            /* in_doubt stays set: the next try finds it by lookup */
            sbw_log_order(SBW_LOG_ERROR, "ledger_write_failed", oc,
                          json_pack("{s:s,s:s}", "bc_number", bc_number,
                                    "message", w->ledger.errstr));
            sbw_bc_result_clear(&res);
            goto retry_pg;
        }

        sbw_worker_replayed(w, e, oc, bc_number);
        sbw_metrics_order_pushed(res.seconds);
        sbw_metrics_entry(e->topic, "created");

        /* BC's total against Shopify's (orders_sync.c) */
        extra = json_pack("{s:s,s:s,s:i,s:i,s:i,s:s,s:s}",
                          "bc_number", bc_number, "bc_id", bc_id,
                          "lines", (json_int_t) o->nlines,
                          "attempts", (json_int_t) tries,
                          "bc_ms", (json_int_t) (res.seconds * 1000.0),
                          "company", w->sync.company,
                          "customer", o->customer_number);
        sbw_sync_after_create(&w->sync, oc->order_id, o, bc_id, res.body,
                              e->topic, &sr);
        sbw_bc_result_clear(&res);

        /* one line: the order, and its totals when they were checked */
        if (sr.action == SBW_SYNC_ACK && sr.event == NULL) {
            if (extra != NULL && sr.extra != NULL) {
                json_object_update(extra, sr.extra);
            }

            json_decref(sr.extra);
            sr.extra = NULL;
        }

        sbw_log_order(SBW_LOG_INFO, "order_created", oc, extra);

        return sbw_worker_sync_done(w, e, oc, &sr, attempts, delay_ms);

    case SBW_BC_PERMANENT:
        sbw_bc_describe(&res, code, sizeof(code), msg, sizeof(msg));

        if (sbw_worker_park(w, e, oc, code, msg, res.correlation_id, tries,
                            1) != 0)
        {
            sbw_bc_result_clear(&res);
            goto retry_pg;
        }

        sbw_ledger_unlock(&w->ledger, oc->order_id);
        sbw_log_order(SBW_LOG_ERROR, "order_failed", oc,
                      json_pack("{s:s,s:s,s:i,s:s,s:i}",
                                "bc_error_code", code, "message", msg,
                                "status", (json_int_t) res.status,
                                "correlation_id", res.correlation_id,
                                "attempts", (json_int_t) tries));
        sbw_metrics_order_failed("bc");
        sbw_metrics_entry(e->topic, "failed");
        sbw_bc_result_clear(&res);
        sbw_worker_ack(w, e);

        return SBW_DONE;

    default:
        sbw_bc_describe(&res, code, sizeof(code), msg, sizeof(msg));
        *delay_ms = sbw_worker_delay(w, attempts, res.retry_after_ms);

        sbw_ledger_retry(&w->ledger, oc->order_id,
                         cls == SBW_BC_RETRY_UNCERTAIN, code, msg,
                         *delay_ms);
        sbw_ledger_unlock(&w->ledger, oc->order_id);

        sbw_log_order(SBW_LOG_WARN, "order_retry", oc,
                      json_pack("{s:s,s:s,s:s,s:i,s:s,s:b,s:i,s:i}",
                                "step", "create",
                                "bc_error_code", code, "message", msg,
                                "status", (json_int_t) res.status,
                                "correlation_id", res.correlation_id,
                                "in_doubt", cls == SBW_BC_RETRY_UNCERTAIN,
                                "attempts", (json_int_t) tries,
                                "retry_in_ms", (json_int_t) *delay_ms));
        sbw_metrics_retry(res.status == 429 ? "bc_429"
                          : res.status >= 500 ? "bc_5xx"
                          : res.curl_code != 0 ? "bc_transport"
                          : "bc_other");
        sbw_metrics_entry(e->topic, "retry");
        sbw_bc_result_clear(&res);
        return SBW_RETRY;
    }

retry_pg:

    /* the session may be gone, and the lock with it: start over later */
    sbw_metrics_set_postgres_up(0);
    sbw_ledger_unlock(&w->ledger, oc->order_id);
    sbw_ledger_close(&w->ledger);
    *delay_ms = sbw_worker_delay(w, attempts, -1);
    sbw_metrics_retry("postgres");

    return SBW_RETRY;
}


/*
 * Finish an entry after an orders_sync.c step: one log line, then
 * acknowledge, dead-letter for review and acknowledge, or leave it for a
 * retry.  The order's lock is released in every case.
 */
static int
sbw_worker_sync_done(sbw_worker_t *w, const sbw_entry_t *e,
    sbw_order_ctx_t *oc, sbw_sync_result_t *sr, unsigned attempts,
    long *delay_ms)
{
    switch (sr->action) {

    case SBW_SYNC_PGFAIL:
        sbw_log_order(SBW_LOG_WARN, "postgres_error", oc,
                      json_pack("{s:s}", "message", w->ledger.errstr));
        sbw_sync_result_clear(sr);
        sbw_metrics_set_postgres_up(0);
        sbw_ledger_unlock(&w->ledger, oc->order_id);
        sbw_ledger_close(&w->ledger);
        *delay_ms = sbw_worker_delay(w, attempts, -1);
        sbw_metrics_retry("postgres");
        return SBW_RETRY;

    case SBW_SYNC_RETRY:
        sbw_ledger_unlock(&w->ledger, oc->order_id);
        *delay_ms = sbw_worker_delay(w, attempts, sr->res.retry_after_ms);

        if (sr->extra != NULL) {
            json_object_set_new(sr->extra, "retry_in_ms",
                                json_integer((json_int_t) *delay_ms));
        }

        sbw_log_order(SBW_LOG_WARN, "order_retry", oc, sr->extra);
        sr->extra = NULL;
        sbw_metrics_retry("bc_sync");
        sbw_metrics_entry(e->topic, "retry");
        sbw_sync_result_clear(sr);
        return SBW_RETRY;

    case SBW_SYNC_REVIEW:
        sbw_ledger_unlock(&w->ledger, oc->order_id);
        sbw_log_order(SBW_LOG_ERROR, sr->event ? sr->event : "order_review",
                      oc, sr->extra);
        sr->extra = NULL;
        sbw_metrics_entry(e->topic, "review");

        if (sbw_worker_park(w, e, oc, sr->code, sr->message,
                            sr->res.correlation_id, (int) attempts, 0)
            == 0)
        {
            sbw_worker_ack(w, e);
        }

        sbw_sync_result_clear(sr);
        return SBW_DONE;

    default:
        sbw_ledger_unlock(&w->ledger, oc->order_id);

        if (sr->event != NULL) {
            sbw_log_order(sr->level, sr->event, oc, sr->extra);
            sr->extra = NULL;
            sbw_metrics_entry(e->topic, strncmp(sr->event, "order_", 6)
                                        == 0 ? sr->event + 6 : sr->event);
        }

        sbw_sync_result_clear(sr);
        sbw_worker_ack(w, e);
        return SBW_DONE;
    }
}


/*
 * The process-wide customer cache, set up once.
 */
static void
sbw_customer_cache_setup(void)
{
    sbw_customer_cache_init(&sbw_customer_cache, SBW_CUSTOMER_CACHE_TTL);
}


/*
 * Strategy "email": replace the order's customer (the default one) by
 * the BC customer with the order's e-mail, from the cache or from one
 * look-up whose answer, found or not, is then cached.  An order without
 * e-mail, or whose e-mail BC does not know, keeps BC365_DEFAULT_CUSTOMER.
 * Returns 0, or -1 when the look-up failed (res tells why).
 */
static int
sbw_worker_customer(sbw_worker_t *w, sbw_order_ctx_t *oc, sbw_bc_order_t *o,
    const json_t *order, sbw_bc_result_t *res)
{
    int    found;
    char   number[SBW_CUSTOMER_NO_BUFLEN], *dup;
    char   key[SBW_CUSTOMER_KEY_BUFLEN];

    if (oc->email == NULL) {
        return 0;
    }

    pthread_once(&sbw_customer_once, sbw_customer_cache_setup);

    /* customers belong to a company */
    snprintf(key, sizeof(key), "%s/%s", w->sync.company, oc->email);

    if (!sbw_customer_cache_get(&sbw_customer_cache, key, sbw_mono(),
                                number, sizeof(number)))
    {
        found = sbw_bc_find_customer(&w->bc, oc->email, number,
                                     sizeof(number), res);
        if (found < 0) {
            return -1;
        }

        /* strategy create: BC has none, make one */
        if (found == 0
            && w->conf->customer_strategy == SBW_CUSTOMER_CREATE)
        {
            sbw_bc_result_clear(res);
            found = sbw_sync_customer_create(&w->sync, order, oc->email,
                                             number, sizeof(number), res);
            if (found < 0) {
                return -1;
            }

            if (found == 0) {
                sbw_log_order(SBW_LOG_WARN, "customer_refused", oc,
                              json_pack("{s:s,s:s,s:s}", "bc_error_code",
                                        res->error_code, "message",
                                        res->error_message, "customer",
                                        o->customer_number));
                sbw_bc_result_clear(res);

            } else {
                sbw_log_order(SBW_LOG_INFO, "customer_created", oc,
                              json_pack("{s:s}", "customer", number));
            }
        }

        sbw_customer_cache_put(&sbw_customer_cache, key,
                               found ? number : "", sbw_mono());
    }

    if (number[0] == '\0') {
        return 0;
    }

    dup = strdup(number);
    if (dup == NULL) {
        snprintf(res->error_code, sizeof(res->error_code), "Worker_NoMemory");
        return -1;
    }

    free(o->customer_number);
    o->customer_number = dup;

    return 0;
}


/*
 * Whether the retry queue already holds the entry with this id.
 */
static int
sbw_queue_has(sbw_worker_t *w, const char *id)
{
    size_t  i;

    for (i = 0; i < w->qlen; i++) {
        if (strcmp(w->queue[i].entry.id, id) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * Keep a copy of the entry for a later try.  Out of memory, the entry is
 * simply not queued: it stays pending in Redis and the next pending pass
 * picks it up.
 */
static void
sbw_queue_push(sbw_worker_t *w, const sbw_entry_t *e, unsigned attempts,
    long delay_ms)
{
    size_t        ncap;
    sbw_retry_t  *nq;

    if (w->qlen == w->qcap) {
        ncap = w->qcap ? w->qcap * 2 : 16;

        nq = realloc(w->queue, ncap * sizeof(sbw_retry_t));
        if (nq == NULL) {
            w->need_pending = 1;
            return;
        }

        w->queue = nq;
        w->qcap = ncap;
    }

    if (sbw_stream_copy_entry(&w->queue[w->qlen].entry, e) != 0) {
        w->need_pending = 1;
        return;
    }

    w->queue[w->qlen].attempts = attempts;
    w->queue[w->qlen].due = sbw_mono() + (double) delay_ms / 1000.0;
    w->qlen++;

    sbw_metrics_retry_queue_add(1);
}


static void
sbw_queue_remove(sbw_worker_t *w, size_t i)
{
    sbw_entry_clear(&w->queue[i].entry);

    w->queue[i] = w->queue[w->qlen - 1];
    w->qlen--;

    sbw_metrics_retry_queue_add(-1);
}


/*
 * Earliest due time in the retry queue (0 when it is empty).
 */
static double
sbw_queue_next_due(sbw_worker_t *w)
{
    size_t  i;
    double  due;

    due = 0;

    for (i = 0; i < w->qlen; i++) {
        if (i == 0 || w->queue[i].due < due) {
            due = w->queue[i].due;
        }
    }

    return due;
}


/*
 * Process an entry seen for the first time (or again after a restart)
 * and queue a copy if it needs another try.
 */
static void
sbw_worker_handle_new(sbw_worker_t *w, const sbw_entry_t *e)
{
    long  delay;

    if (sbw_worker_process(w, e, 0, &delay) == SBW_RETRY) {
        sbw_queue_push(w, e, 1, delay);
    }
}


/*
 * Try again every queued entry whose time has come.
 */
static void
sbw_worker_run_due(sbw_worker_t *w)
{
    long         delay;
    size_t       i;
    double       now;
    sbw_retry_t  *r;

    i = 0;

    while (i < w->qlen && !*w->env->stop && !w->redis_broken) {
        now = sbw_mono();
        r = &w->queue[i];

        if (r->due > now) {
            i++;
            continue;
        }

        if (sbw_worker_process(w, &r->entry, r->attempts, &delay)
            == SBW_DONE)
        {
            sbw_queue_remove(w, i);
            continue;
        }

        r = &w->queue[i];
        r->attempts++;
        r->due = sbw_mono() + (double) delay / 1000.0;

        /* still ours: not to be claimed, no delivery counted */
        if (!w->redis_broken
            && sbw_stream_touch(&w->stream, r->entry.id) == SBW_STREAM_CONN)
        {
            w->redis_broken = 1;
        }

        i++;
    }
}


/*
 * Entries delivered again: this consumer's own pending entries, or
 * entries just claimed from another consumer.  Each one is handled like
 * a new one, except an entry delivered more than MAX_DELIVERIES times
 * (XPENDING's delivery counter): it has been taken up that often without
 * ever reaching an outcome, most likely because handling it kills the
 * worker, so it goes to the dead-letter store instead.  Entries already
 * in the retry queue are skipped.  Stops early (and asks for a pending
 * pass later) when the retry queue fills up.
 */
static void
sbw_worker_handle_redelivered(sbw_worker_t *w, sbw_entry_t *es, size_t n,
    int claimed)
{
    size_t      i;
    long long  *counts;

    counts = NULL;

    if (w->conf->max_deliveries > 0 && n > 0) {
        counts = calloc(n, sizeof(long long));

        if (counts != NULL
            && sbw_stream_delivery_counts(&w->stream, es, n, counts)
               != SBW_STREAM_OK)
        {
            /* without counts every entry is handled as usual */
            sbw_log(SBW_LOG_WARN, "delivery_count_failed",
                    json_pack("{s:s}", "message", w->stream.errstr));
            free(counts);
            counts = NULL;
        }
    }

    for (i = 0; i < n; i++) {
        if (sbw_queue_has(w, es[i].id)) {
            continue;
        }

        if (claimed && !es[i].deleted) {
            sbw_log(SBW_LOG_INFO, "entry_claimed",
                    json_pack("{s:s,s:s?,s:I}", "stream_id", es[i].id,
                              "topic", es[i].topic, "deliveries",
                              (json_int_t) (counts ? counts[i] : 0)));
        }

        if (counts != NULL && !es[i].deleted
            && counts[i] > (long long) w->conf->max_deliveries)
        {
            sbw_worker_give_up(w, &es[i], counts[i]);

        } else {
            sbw_worker_handle_new(w, &es[i]);
        }

        if (*w->env->stop || w->redis_broken) {
            break;
        }

        if (w->qlen >= (size_t) w->conf->retry_queue_max) {
            w->need_pending = 1;
            break;
        }
    }

    free(counts);
}


/*
 * An entry delivered more than MAX_DELIVERIES times: dead-letter it
 * (without touching the ledger: if the order has an attempt in doubt, a
 * replay looks it up first) and acknowledge it.  If PostgreSQL cannot
 * take it, the entry stays pending and comes back with a later pass.
 */
static void
sbw_worker_give_up(sbw_worker_t *w, const sbw_entry_t *e,
    long long deliveries)
{
    char              msg[256], shop[SBW_SHOP_BUFLEN];
    json_t           *order;
    int64_t           order_id;
    json_error_t      jerr;
    sbw_order_ctx_t   oc;

    memset(&oc, 0, sizeof(oc));
    oc.entry = e;

    order = e->body != NULL ? sbw_order_parse(e->body, e->body_len, &jerr)
                            : NULL;

    if (order != NULL && sbw_order_id(order, &order_id) == 0) {
        oc.order_id = order_id;
    }

    json_decref(order);

    if (e->shop != NULL && sbw_ascii_lower(e->shop, shop, sizeof(shop))
                           == 0)
    {
        oc.shop = shop;
    }

    snprintf(msg, sizeof(msg), "delivered %lld times without an outcome "
             "(MAX_DELIVERIES=%d)", deliveries, w->conf->max_deliveries);

    sbw_log_order(SBW_LOG_ERROR, "entry_max_deliveries", &oc,
                  json_pack("{s:s?,s:I,s:s}", "topic", e->topic,
                            "deliveries", (json_int_t) deliveries,
                            "message", msg));

    if (sbw_worker_park(w, e, &oc, "Worker_MaxDeliveries", msg, NULL,
                        (int) deliveries, 0) != 0)
    {
        return;
    }

    sbw_metrics_entry(e->topic ? e->topic : "unknown", "dead_lettered");
    sbw_worker_ack(w, e);
}


/*
 * Re-process this consumer's own pending entries (XREADGROUP from id 0):
 * what a previous run of this WORKER_NAME, or this run before a Redis
 * reconnect, received but did not acknowledge.  Entries already queued
 * for retry are skipped.  Stops early when the retry queue is full and
 * resumes on a later call.
 */
static int
sbw_worker_pending_pass(sbw_worker_t *w)
{
    int           rc;
    char          cursor[64];
    size_t        n;
    sbw_entry_t  *es;

    snprintf(cursor, sizeof(cursor), "0");
    w->need_pending = 0;

    for ( ;; ) {
        rc = sbw_stream_read(&w->stream, cursor, 0, &es, &n);

        if (rc != SBW_STREAM_OK) {
            w->need_pending = 1;
            return rc;
        }

        if (n == 0) {
            break;
        }

        snprintf(cursor, sizeof(cursor), "%s", es[n - 1].id);

        sbw_worker_handle_redelivered(w, es, n, 0);
        sbw_entries_free(es, n);

        if (*w->env->stop || w->redis_broken || w->need_pending) {
            w->need_pending = 1;
            return SBW_STREAM_OK;
        }
    }

    return SBW_STREAM_OK;
}


/*
 * Take over entries left pending too long by other consumers (a worker
 * that died for good, or whose WORKER_NAME changed), scanning the whole
 * pending list: XAUTOCLAIM until its cursor comes back as 0-0.  Ids
 * whose message vanished (trimmed or deleted by hand) come back as
 * deleted entries and are reported as gone.
 */
static int
sbw_worker_claim_pass(sbw_worker_t *w)
{
    int           rc;
    char          cursor[64];
    size_t        n;
    sbw_entry_t  *es;

    snprintf(cursor, sizeof(cursor), "0-0");

    for ( ;; ) {
        rc = sbw_stream_autoclaim(&w->stream, cursor, sizeof(cursor), &es,
                                  &n);
        if (rc != SBW_STREAM_OK) {
            return rc;
        }

        sbw_worker_handle_redelivered(w, es, n, 1);
        sbw_entries_free(es, n);

        if (*w->env->stop || w->redis_broken || w->need_pending
            || strcmp(cursor, "0-0") == 0)
        {
            break;
        }
    }

    return SBW_STREAM_OK;
}


/*
 * Refresh the bc_dead_letters gauge from PostgreSQL.
 */
static void
sbw_worker_dlq_stats(sbw_worker_t *w)
{
    char        err[512];
    size_t      n, i;
    long long   counts[32];
    const char *names[32];
    char        reasons[32][SBW_DLQ_REASON_LEN];

    if (sbw_ledger_connect(&w->ledger) != 0
        || sbw_dlq_open_counts(w->ledger.conn, reasons, counts, 32, &n, err,
                               sizeof(err)) != 0)
    {
        sbw_log(SBW_LOG_DEBUG, "dead_letter_stats_failed",
                json_pack("{s:s}", "message", w->ledger.conn
                                              ? err : w->ledger.errstr));
        return;
    }

    for (i = 0; i < n; i++) {
        names[i] = reasons[i];
    }

    sbw_metrics_dead_letters_set(names, counts, n);
}


/*
 * One periodic pass of the duplicate detector (dupcheck.c) over the
 * orders that had more than one attempt, removing safe duplicates when
 * DUPLICATE_REMOVE is on.
 */
static void
sbw_worker_dupcheck(sbw_worker_t *w)
{
    char                  err[512];
    sbw_dupcheck_stats_t  st;

    if (sbw_ledger_connect(&w->ledger) != 0) {
        return;
    }

    if (sbw_dupcheck_run(&w->bc, w->ledger.conn, w->conf, 0,
                         w->conf->dup_remove, NULL, &st, err, sizeof(err))
        != 0)
    {
        sbw_log(SBW_LOG_WARN, "duplicate_check_failed",
                json_pack("{s:s}", "message", err));
        return;
    }

    if (st.checked > 0) {
        sbw_log(st.found > 0 ? SBW_LOG_WARN : SBW_LOG_INFO,
                "duplicate_check_done",
                json_pack("{s:i,s:i,s:i,s:i}",
                          "checked", (json_int_t) st.checked,
                          "found", (json_int_t) st.found,
                          "removed", (json_int_t) st.removed,
                          "kept", (json_int_t) st.kept));
    }
}


/*
 * Run one safe trim (see sbw_stream_trim()) and report what it removed.
 */
static void
sbw_worker_trim(sbw_worker_t *w)
{
    int        rc;
    char       minid[64];
    long long  trimmed;

    rc = sbw_stream_trim(&w->stream, &trimmed, minid, sizeof(minid));

    if (rc == SBW_STREAM_CONN) {
        w->redis_broken = 1;
        return;
    }

    if (rc != SBW_STREAM_OK) {
        sbw_log(SBW_LOG_WARN, "trim_failed",
                json_pack("{s:s}", "message", w->stream.errstr));
        return;
    }

    if (trimmed > 0) {
        sbw_metrics_trimmed(trimmed);
        sbw_log(SBW_LOG_INFO, "stream_trimmed",
                json_pack("{s:I,s:s}", "entries", (json_int_t) trimmed,
                          "minid", minid));
    }
}


/*
 * (Re)connect to Redis when needed, with backoff; after a reconnect the
 * group is ensured and a pending pass is due.  Returns 0 when connected.
 */
static int
sbw_worker_redis_ready(sbw_worker_t *w)
{
    if (w->redis_broken) {
        sbw_stream_close(&w->stream);
        w->redis_broken = 0;
    }

    if (w->stream.ctx != NULL) {
        return 0;
    }

    if (sbw_stream_connect(&w->stream) == SBW_STREAM_OK
        && sbw_stream_ensure_group(&w->stream) == SBW_STREAM_OK)
    {
        if (w->redis_failures > 0) {
            sbw_log(w->index == 0 ? SBW_LOG_INFO : SBW_LOG_DEBUG,
                    "redis_reconnected",
                    json_pack("{s:i,s:i}", "worker", (json_int_t) w->index,
                              "failures", (json_int_t) w->redis_failures));
        }

        w->redis_failures = 0;
        w->need_pending = 1;
        sbw_metrics_set_redis_up(1);
        return 0;
    }

    sbw_metrics_set_redis_up(0);

    /* one line on the first failure, then one per ten (thread 0 only) */
    if (w->redis_failures % 10 == 0) {
        sbw_log(w->index == 0 ? SBW_LOG_WARN : SBW_LOG_DEBUG,
                "redis_unavailable",
                json_pack("{s:i,s:s,s:i}", "worker", (json_int_t) w->index,
                          "message", w->stream.errstr,
                          "failures", (json_int_t) w->redis_failures + 1));
    }

    sbw_stream_close(&w->stream);
    sbw_worker_sleep(w, sbw_worker_delay(w, w->redis_failures, -1));
    w->redis_failures++;

    return -1;
}


/*
 * Thread body: reconnect when needed, pending pass, due retries, the
 * periodic trim (thread 0) and claim, then block for new entries.
 */
static void *
sbw_worker_run(void *arg)
{
    int            rc;
    long           block;
    size_t         n, i;
    double         now, next_claim, next_trim, last_activity, due;
    double         next_stats, next_dup, next_lag;
    long long      lag, pending;
    sbw_entry_t   *es;
    sbw_worker_t  *w;

    w = arg;
    now = sbw_mono();
    next_claim = now;
    next_trim = now;
    next_stats = now;
    next_lag = now;
    next_dup = now + (double) w->conf->dup_check_interval_ms / 1000.0;
    last_activity = now;

    while (!*w->env->stop) {

        /* connection */
        if (sbw_worker_redis_ready(w) != 0) {
            continue;
        }

        /* own pending entries first */
        if (w->need_pending && w->qlen < (size_t) w->conf->retry_queue_max) {
            if (sbw_worker_pending_pass(w) != SBW_STREAM_OK) {
                w->redis_broken = 1;
                continue;
            }

            last_activity = sbw_mono();
        }

        /* retries whose time has come */
        sbw_worker_run_due(w);

        if (w->redis_broken) {
            continue;
        }

        now = sbw_mono();

        /* trim what every group has acknowledged */
        if (w->index == 0 && w->conf->trim_interval_ms > 0
            && now >= next_trim)
        {
            sbw_worker_trim(w);
            next_trim = now + (double) w->conf->trim_interval_ms / 1000.0;

            if (w->redis_broken) {
                continue;
            }
        }

        /* the stream's lag and pending gauges */
        if (w->index == 0 && now >= next_lag) {
            rc = sbw_stream_group_stats(&w->stream, &lag, &pending);

            if (rc == SBW_STREAM_CONN) {
                w->redis_broken = 1;
                continue;
            }

            /* an error answer (the stream deleted by hand): unknown */
            sbw_metrics_stream_group(lag, pending);
            next_lag = now + SBW_LAG_STATS_INTERVAL;
        }

        /* the dead-letter gauge, and the duplicate detector */
        if (w->index == 0 && now >= next_stats) {
            sbw_worker_dlq_stats(w);
            next_stats = now + SBW_DLQ_STATS_INTERVAL;
        }

        if (w->index == 0 && w->conf->dup_check_interval_ms > 0
            && now >= next_dup)
        {
            sbw_worker_dupcheck(w);
            next_dup = sbw_mono()
                       + (double) w->conf->dup_check_interval_ms / 1000.0;
        }

        /* entries abandoned by other consumers */
        if (now >= next_claim) {
            if (sbw_worker_claim_pass(w) != SBW_STREAM_OK) {
                w->redis_broken = 1;
                continue;
            }

            next_claim = sbw_mono()
                         + (double) w->conf->claim_interval_ms / 1000.0;
        }

        /* a full retry queue means BC or PostgreSQL is struggling */
        if (w->qlen >= (size_t) w->conf->retry_queue_max) {
            due = sbw_queue_next_due(w) - sbw_mono();
            sbw_worker_sleep(w, due > 0 ? (long) (due * 1000.0) + 1 : 1);
            continue;
        }

        /* new entries */
        block = w->conf->block_ms;

        if (w->env->drain_ms > 0 && w->env->drain_ms < block) {
            block = w->env->drain_ms;
        }

        if (w->qlen > 0) {
            due = sbw_queue_next_due(w) - sbw_mono();

            if (due * 1000.0 < (double) block) {
                block = due > 0 ? (long) (due * 1000.0) : 0;
            }
        }

        if (block < 1) {
            block = 1;
        }

        rc = sbw_stream_read(&w->stream, ">", block, &es, &n);

        if (rc == SBW_STREAM_REPLY
            && strncmp(w->stream.errstr, "NOGROUP", 7) == 0)
        {
            /* stream or group deleted under us: recreate on reconnect */
            sbw_log(SBW_LOG_WARN, "group_missing",
                    json_pack("{s:s}", "message", w->stream.errstr));
            w->redis_broken = 1;
            continue;
        }

        if (rc != SBW_STREAM_OK) {
            sbw_log(w->index == 0 ? SBW_LOG_WARN : SBW_LOG_DEBUG,
                    "redis_read_failed",
                    json_pack("{s:i,s:s}", "worker", (json_int_t) w->index,
                              "message", w->stream.errstr));
            w->redis_broken = 1;
            continue;
        }

        for (i = 0; i < n; i++) {
            sbw_worker_handle_new(w, &es[i]);

            if (w->redis_broken) {
                break;
            }
        }

        sbw_entries_free(es, n);

        if (n > 0 || w->qlen > 0) {
            last_activity = sbw_mono();
        }

        /* --drain: leave once nothing new came for drain_ms */
        if (w->env->drain_ms > 0 && w->qlen == 0 && !w->need_pending
            && (sbw_mono() - last_activity) * 1000.0
               >= (double) w->env->drain_ms)
        {
            break;
        }
    }

    return NULL;
}


/*
 * A worker thread's state.  index numbers the threads of this process;
 * the consumer name is WORKER_NAME/index, stable across restarts.
 */
sbw_worker_t *
sbw_worker_new(const sbw_worker_env_t *env, int index)
{
    uint64_t       seed;
    sbw_worker_t  *w;

    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return NULL;
    }

    w->index = index;
    w->env = env;
    w->conf = env->conf;

    w->stream.conf = env->conf;
    snprintf(w->stream.consumer, sizeof(w->stream.consumer), "%s/%d",
             env->conf->worker_name, index);

    w->ledger.url = env->conf->database_url;

    snprintf(w->owner_prefix, sizeof(w->owner_prefix), "%s/",
             env->conf->worker_name);
    snprintf(w->owner, sizeof(w->owner), "%s/%d#%s",
             env->conf->worker_name, index, env->instance);

    w->mc.sku_map = env->conf->sku_map;
    w->mc.variant_map = env->conf->variant_map;
    w->mc.customer_number = env->conf->default_customer;
    w->mc.shipping_account = env->conf->shipping_account;
    w->mc.tip_account = env->conf->tip_account;
    w->mc.gift_card_account = env->conf->gift_card_account;
    w->mc.custom_line_account = env->conf->custom_line_account;
    w->mc.nontaxable_code = env->conf->nontaxable_code;
    w->mc.tax_account = env->conf->tax_account;
    w->mc.money = env->conf->order_money;
    w->mc.tax_line = env->conf->tax_policy == SBW_TAX_LINE;

    w->sync.conf = env->conf;
    w->sync.ledger = &w->ledger;
    w->sync.bc = &w->bc;

    seed = (uint64_t) time(NULL) ^ ((uint64_t) index << 32)
           ^ (uint64_t) (uintptr_t) w;
    sbw_rng_seed(&w->rng, seed);

    if (sbw_bc_init(&w->bc, env->bc_shared, env->conf) != 0) {
        free(w);
        return NULL;
    }

    w->shops = sbw_shops_ctx_new(env->conf, env->shopify, env->stop);
    if (w->shops == NULL) {
        sbw_bc_cleanup(&w->bc);
        free(w);
        return NULL;
    }

    return w;
}


int
sbw_worker_start(sbw_worker_t *w)
{
    if (pthread_create(&w->tid, NULL, sbw_worker_run, w) != 0) {
        return -1;
    }

    w->started = 1;
    return 0;
}


void
sbw_worker_join(sbw_worker_t *w)
{
    if (w->started) {
        pthread_join(w->tid, NULL);
        w->started = 0;
    }
}


/*
 * Release a stopped worker: queued copies, connections, curl handle.
 * Its entries stay pending in Redis for the next run.
 */
void
sbw_worker_free(sbw_worker_t *w)
{
    size_t  i;

    if (w == NULL) {
        return;
    }

    for (i = 0; i < w->qlen; i++) {
        sbw_entry_clear(&w->queue[i].entry);
    }

    sbw_metrics_retry_queue_add(-(int) w->qlen);
    free(w->queue);

    sbw_stream_close(&w->stream);
    sbw_ledger_close(&w->ledger);
    sbw_bc_cleanup(&w->bc);
    sbw_shops_ctx_free(w->shops);

    free(w);
}
