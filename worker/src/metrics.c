/*
 * Metrics registry and the libmicrohttpd endpoint.
 *
 * Counters live in one structure behind a mutex (updates are a few per
 * order, far from contended).  Labelled counters are small fixed tables;
 * label values beyond their size are folded into "other" so that a flood
 * of odd topics cannot grow memory.
 */

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "metrics.h"


#define SBW_PAIRS_MAX  128


typedef struct {
    char                a[64];
    char                b[32];
    unsigned long long  n;
} sbw_pair_t;


typedef struct {
    sbw_pair_t  v[SBW_PAIRS_MAX];
    size_t      n;
} sbw_pairs_t;


static const double  sbw_push_bounds[] = {
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
};

#define SBW_NBUCKETS  (sizeof(sbw_push_bounds) / sizeof(sbw_push_bounds[0]))


static struct {
    pthread_mutex_t      mutex;
    sbw_pairs_t          entries;        /* topic, outcome */
    sbw_pairs_t          requests;       /* op, status */
    sbw_pairs_t          failed;         /* reason */
    sbw_pairs_t          retries;        /* reason */
    sbw_pairs_t          dl_open;        /* reason (a gauge) */
    sbw_pairs_t          dl_writes;      /* reason */
    sbw_pairs_t          dl_replays;     /* outcome */
    sbw_pairs_t          duplicates;     /* action */
    int                  dl_known;       /* dl_open has been read */
    sbw_pairs_t          sync;           /* event (orders_sync.c) */
    sbw_pairs_t          limiter_waits;  /* reason */
    double               limiter_wait_s;
    long                 limiter_waiting;
    long long            stream_lag;     /* -1: unknown */
    long long            stream_pending; /* -1: not read yet */
    unsigned long long   pushed;
    unsigned long long   deduped;
    unsigned long long   recovered;
    unsigned long long   trimmed;
    unsigned long long   token_ok;
    unsigned long long   token_failed;
    unsigned long long   push_buckets[SBW_NBUCKETS];
    unsigned long long   push_count;
    double               push_sum;
    long                 retry_queue;
    int                  redis_up;
    int                  postgres_up;
    time_t               started;
    struct MHD_Daemon   *daemon;
} sbw_m = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .stream_lag = -1,
    .stream_pending = -1
};


static void sbw_pairs_inc(sbw_pairs_t *t, const char *a, const char *b,
    unsigned long long by);
static void sbw_label(FILE *f, const char *s);
static void sbw_render_pairs(FILE *f, const sbw_pairs_t *t,
    const char *name, const char *la, const char *lb);
static enum MHD_Result sbw_metrics_handler(void *cls,
    struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload, size_t *upload_size,
    void **con_cls);


/*
 * Add to the counter of (a, b), creating it if there is room, else
 * counting it under ("other", b).  Caller holds the mutex.
 */
static void
sbw_pairs_inc(sbw_pairs_t *t, const char *a, const char *b,
    unsigned long long by)
{
    size_t  i;

    if (b == NULL) {
        b = "";
    }

    for (i = 0; i < t->n; i++) {
        if (strcmp(t->v[i].a, a) == 0 && strcmp(t->v[i].b, b) == 0) {
            t->v[i].n += by;
            return;
        }
    }

    if (t->n + 1 >= SBW_PAIRS_MAX || strlen(a) >= sizeof(t->v[0].a)) {
        if (strcmp(a, "other") != 0) {
            sbw_pairs_inc(t, "other", b, by);
            return;
        }

        if (t->n == SBW_PAIRS_MAX) {
            return;
        }
    }

    snprintf(t->v[t->n].a, sizeof(t->v[0].a), "%s", a);
    snprintf(t->v[t->n].b, sizeof(t->v[0].b), "%s", b);
    t->v[t->n].n = by;
    t->n++;
}


void
sbw_metrics_entry(const char *topic, const char *outcome)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_pairs_inc(&sbw_m.entries, topic && *topic ? topic : "unknown",
                  outcome, 1);
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_bc_request(const char *op, const char *status)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_pairs_inc(&sbw_m.requests, op, status, 1);
    pthread_mutex_unlock(&sbw_m.mutex);
}


/*
 * Count a created order and put the POST duration in the histogram; the
 * bucket counters are kept cumulative, as the text format wants them.
 */
void
sbw_metrics_order_pushed(double seconds)
{
    size_t  i;

    pthread_mutex_lock(&sbw_m.mutex);

    sbw_m.pushed++;
    sbw_m.push_count++;
    sbw_m.push_sum += seconds;

    for (i = 0; i < SBW_NBUCKETS; i++) {
        if (seconds <= sbw_push_bounds[i]) {
            sbw_m.push_buckets[i]++;
        }
    }

    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_order_deduped(void)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_m.deduped++;
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_order_recovered(void)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_m.recovered++;
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_order_failed(const char *reason)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_pairs_inc(&sbw_m.failed, reason, "", 1);
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_retry(const char *reason)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_pairs_inc(&sbw_m.retries, reason, "", 1);
    pthread_mutex_unlock(&sbw_m.mutex);
}


/*
 * An order-sync event: totals matched, variance_added, total_mismatch,
 * updated, update_stale, cancelled, conflict.
 */
void
sbw_metrics_order_sync(const char *event)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_pairs_inc(&sbw_m.sync, event, "", 1);
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_trimmed(long long n)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_m.trimmed += (unsigned long long) (n > 0 ? n : 0);
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_token_refresh(int ok)
{
    pthread_mutex_lock(&sbw_m.mutex);

    if (ok) {
        sbw_m.token_ok++;

    } else {
        sbw_m.token_failed++;
    }

    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_retry_queue_add(int delta)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_m.retry_queue += delta;
    pthread_mutex_unlock(&sbw_m.mutex);
}


/* a BC request starts waiting for the limiter, held first by reason */
void
sbw_metrics_limiter_wait(const char *reason)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_pairs_inc(&sbw_m.limiter_waits, reason, "", 1);
    sbw_m.limiter_waiting++;
    pthread_mutex_unlock(&sbw_m.mutex);
}


/* ... and stops waiting after that long */
void
sbw_metrics_limiter_waited(double seconds)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_m.limiter_waiting--;
    sbw_m.limiter_wait_s += seconds;
    pthread_mutex_unlock(&sbw_m.mutex);
}


/* the consumer group's lag and pending count, -1 when Redis cannot tell */
void
sbw_metrics_stream_group(long long lag, long long pending)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_m.stream_lag = lag;
    sbw_m.stream_pending = pending;
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_set_redis_up(int up)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_m.redis_up = up;
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_set_postgres_up(int up)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_m.postgres_up = up;
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_dead_letter_written(const char *reason)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_pairs_inc(&sbw_m.dl_writes, reason, "", 1);
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_dead_letter_replayed(const char *outcome)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_pairs_inc(&sbw_m.dl_replays, outcome, "", 1);
    pthread_mutex_unlock(&sbw_m.mutex);
}


void
sbw_metrics_duplicate(const char *action)
{
    pthread_mutex_lock(&sbw_m.mutex);
    sbw_pairs_inc(&sbw_m.duplicates, action, "", 1);
    pthread_mutex_unlock(&sbw_m.mutex);
}


/*
 * The open dead letters by reason, as counted in PostgreSQL: every
 * reason seen so far is set to 0 first, so that a reason whose dead
 * letters were all handled shows 0 rather than vanishing.
 */
void
sbw_metrics_dead_letters_set(const char *const *reasons,
    const long long *counts, size_t n)
{
    size_t  i;

    pthread_mutex_lock(&sbw_m.mutex);

    for (i = 0; i < sbw_m.dl_open.n; i++) {
        sbw_m.dl_open.v[i].n = 0;
    }

    for (i = 0; i < n; i++) {
        sbw_pairs_inc(&sbw_m.dl_open, reasons[i], "",
                      (unsigned long long) (counts[i] > 0 ? counts[i] : 0));
    }

    sbw_m.dl_known = 1;
    pthread_mutex_unlock(&sbw_m.mutex);
}


/*
 * A label value with the exposition format's escapes.
 */
static void
sbw_label(FILE *f, const char *s)
{
    for ( ; *s; s++) {
        switch (*s) {

        case '\\':
            fputs("\\\\", f);
            break;

        case '"':
            fputs("\\\"", f);
            break;

        case '\n':
            fputs("\\n", f);
            break;

        default:
            fputc(*s, f);
        }
    }
}


/*
 * One sample line per (a, b) pair of a labelled counter; lb NULL for a
 * counter with a single label.
 */
static void
sbw_render_pairs(FILE *f, const sbw_pairs_t *t, const char *name,
    const char *la, const char *lb)
{
    size_t  i;

    for (i = 0; i < t->n; i++) {
        fprintf(f, "%s{%s=\"", name, la);
        sbw_label(f, t->v[i].a);

        if (lb != NULL) {
            fprintf(f, "\",%s=\"", lb);
            sbw_label(f, t->v[i].b);
        }

        fprintf(f, "\"} %llu\n", t->v[i].n);
    }
}


/*
 * The whole exposition text (the caller frees it), or NULL.
 */
char *
sbw_metrics_render(void)
{
    FILE    *f;
    char    *text;
    size_t   len, i;

    f = open_memstream(&text, &len);
    if (f == NULL) {
        return NULL;
    }

    pthread_mutex_lock(&sbw_m.mutex);

    fputs("# HELP bc_orders_pushed_total Sales orders created in Business "
          "Central by this worker.\n"
          "# TYPE bc_orders_pushed_total counter\n", f);
    fprintf(f, "bc_orders_pushed_total %llu\n", sbw_m.pushed);

    fputs("# HELP bc_orders_deduped_total Orders not sent because BC "
          "already had them (ledger or BC lookup).\n"
          "# TYPE bc_orders_deduped_total counter\n", f);
    fprintf(f, "bc_orders_deduped_total %llu\n", sbw_m.deduped);

    fputs("# HELP bc_orders_recovered_total Orders found in BC by "
          "externalDocumentNumber after an attempt with unknown outcome.\n"
          "# TYPE bc_orders_recovered_total counter\n", f);
    fprintf(f, "bc_orders_recovered_total %llu\n", sbw_m.recovered);

    fputs("# HELP bc_orders_failed_total Orders refused for good "
          "(recorded in the ledger and the dead-letter store).\n"
          "# TYPE bc_orders_failed_total counter\n", f);
    sbw_render_pairs(f, &sbw_m.failed, "bc_orders_failed_total", "reason",
                     NULL);

    fputs("# HELP bc_order_push_seconds Duration of the BC request that "
          "created a sales order.\n"
          "# TYPE bc_order_push_seconds histogram\n", f);

    /* buckets are kept cumulative by sbw_metrics_order_pushed() */
    for (i = 0; i < SBW_NBUCKETS; i++) {
        fprintf(f, "bc_order_push_seconds_bucket{le=\"%g\"} %llu\n",
                sbw_push_bounds[i], sbw_m.push_buckets[i]);
    }

    fprintf(f, "bc_order_push_seconds_bucket{le=\"+Inf\"} %llu\n",
            sbw_m.push_count);
    fprintf(f, "bc_order_push_seconds_sum %.6f\n", sbw_m.push_sum);
    fprintf(f, "bc_order_push_seconds_count %llu\n", sbw_m.push_count);

    fputs("# HELP bc_requests_total Requests to BC and Entra by operation "
          "and HTTP status (or timeout/error).\n"
          "# TYPE bc_requests_total counter\n", f);
    sbw_render_pairs(f, &sbw_m.requests, "bc_requests_total", "op",
                     "status");

    fputs("# HELP bc_token_refreshes_total Entra token requests by "
          "result.\n"
          "# TYPE bc_token_refreshes_total counter\n", f);
    fprintf(f, "bc_token_refreshes_total{result=\"ok\"} %llu\n",
            sbw_m.token_ok);
    fprintf(f, "bc_token_refreshes_total{result=\"failed\"} %llu\n",
            sbw_m.token_failed);

    fputs("# HELP worker_stream_entries_total Stream entries handled, by "
          "topic and outcome.\n"
          "# TYPE worker_stream_entries_total counter\n", f);
    sbw_render_pairs(f, &sbw_m.entries, "worker_stream_entries_total",
                     "topic", "outcome");

    fputs("# HELP bc_order_sync_total Totals checks, updates, "
          "cancellations and conflicts of orders already in BC\n"
          "# TYPE bc_order_sync_total counter\n", f);
    sbw_render_pairs(f, &sbw_m.sync, "bc_order_sync_total", "event",
                     NULL);

    fputs("# HELP worker_retries_total Entries left pending for a later "
          "try, by reason.\n"
          "# TYPE worker_retries_total counter\n", f);
    sbw_render_pairs(f, &sbw_m.retries, "worker_retries_total", "reason",
                     NULL);

    fputs("# HELP worker_retry_queue Entries waiting for their next "
          "try.\n"
          "# TYPE worker_retry_queue gauge\n", f);
    fprintf(f, "worker_retry_queue %ld\n", sbw_m.retry_queue);

    fputs("# HELP bc_limiter_waits_total BC requests that waited for the "
          "client-side limiter, by what held them first.\n"
          "# TYPE bc_limiter_waits_total counter\n", f);
    sbw_render_pairs(f, &sbw_m.limiter_waits, "bc_limiter_waits_total",
                     "reason", NULL);

    fputs("# HELP bc_limiter_wait_seconds_total Time BC requests spent "
          "waiting for the limiter.\n"
          "# TYPE bc_limiter_wait_seconds_total counter\n", f);
    fprintf(f, "bc_limiter_wait_seconds_total %.3f\n",
            sbw_m.limiter_wait_s);

    fputs("# HELP bc_limiter_waiting BC requests waiting for the limiter "
          "now.\n"
          "# TYPE bc_limiter_waiting gauge\n", f);
    fprintf(f, "bc_limiter_waiting %ld\n", sbw_m.limiter_waiting);

    if (sbw_m.stream_pending >= 0) {
        fputs("# HELP worker_stream_pending Entries delivered to the "
              "consumer group and not acknowledged yet.\n"
              "# TYPE worker_stream_pending gauge\n", f);
        fprintf(f, "worker_stream_pending %lld\n", sbw_m.stream_pending);
    }

    if (sbw_m.stream_lag >= 0) {
        fputs("# HELP worker_stream_lag Entries in the stream not yet "
              "delivered to the consumer group (Redis's lag).\n"
              "# TYPE worker_stream_lag gauge\n", f);
        fprintf(f, "worker_stream_lag %lld\n", sbw_m.stream_lag);
    }

    fputs("# HELP bc_dead_letters Open dead letters in PostgreSQL, by "
          "reason (refreshed every 15 s by thread 0).\n"
          "# TYPE bc_dead_letters gauge\n", f);

    if (sbw_m.dl_known) {
        sbw_render_pairs(f, &sbw_m.dl_open, "bc_dead_letters", "reason",
                         NULL);
    }

    fputs("# HELP bc_dead_letter_writes_total Entries this worker put in "
          "the dead-letter store, by reason.\n"
          "# TYPE bc_dead_letter_writes_total counter\n", f);
    sbw_render_pairs(f, &sbw_m.dl_writes, "bc_dead_letter_writes_total",
                     "reason", NULL);

    fputs("# HELP bc_dead_letter_replays_total Replays of dead letters "
          "finished by this worker, by outcome.\n"
          "# TYPE bc_dead_letter_replays_total counter\n", f);
    sbw_render_pairs(f, &sbw_m.dl_replays, "bc_dead_letter_replays_total",
                     "outcome", NULL);

    fputs("# HELP bc_duplicate_orders_total Extra open BC orders found "
          "with one externalDocumentNumber, by action.\n"
          "# TYPE bc_duplicate_orders_total counter\n", f);
    sbw_render_pairs(f, &sbw_m.duplicates, "bc_duplicate_orders_total",
                     "action", NULL);

    fputs("# HELP worker_stream_trimmed_total Entries removed from the "
          "stream after every group acknowledged them.\n"
          "# TYPE worker_stream_trimmed_total counter\n", f);
    fprintf(f, "worker_stream_trimmed_total %llu\n", sbw_m.trimmed);

    fputs("# HELP worker_redis_up Whether the last Redis operation "
          "worked.\n"
          "# TYPE worker_redis_up gauge\n", f);
    fprintf(f, "worker_redis_up %d\n", sbw_m.redis_up);

    fputs("# HELP worker_postgres_up Whether the last PostgreSQL "
          "operation worked.\n"
          "# TYPE worker_postgres_up gauge\n", f);
    fprintf(f, "worker_postgres_up %d\n", sbw_m.postgres_up);

    fputs("# HELP worker_start_time_seconds Unix time the worker "
          "started.\n"
          "# TYPE worker_start_time_seconds gauge\n", f);
    fprintf(f, "worker_start_time_seconds %lld\n",
            (long long) sbw_m.started);

    pthread_mutex_unlock(&sbw_m.mutex);

    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }

    return text;
}


/*
 * GET /metrics and GET /health; anything else is 404 (405 for other
 * methods).
 */
static enum MHD_Result
sbw_metrics_handler(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload,
    size_t *upload_size, void **con_cls)
{
    int                   up, status;
    char                 *text;
    const char           *ctype;
    enum MHD_Result       ret;
    struct MHD_Response  *resp;

    (void) cls;
    (void) version;
    (void) upload;
    (void) upload_size;
    (void) con_cls;

    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        text = strdup("method not allowed\n");
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        ctype = "text/plain";

    } else if (strcmp(url, "/metrics") == 0) {
        text = sbw_metrics_render();
        status = MHD_HTTP_OK;
        ctype = "text/plain; version=0.0.4; charset=utf-8";

    } else if (strcmp(url, "/health") == 0) {
        pthread_mutex_lock(&sbw_m.mutex);
        up = sbw_m.redis_up && sbw_m.postgres_up;
        text = NULL;

        if (asprintf(&text, "{\"status\":\"%s\",\"redis\":%s,"
                     "\"postgres\":%s}\n", up ? "ok" : "degraded",
                     sbw_m.redis_up ? "true" : "false",
                     sbw_m.postgres_up ? "true" : "false") < 0)
        {
            text = NULL;
        }

        pthread_mutex_unlock(&sbw_m.mutex);

        status = up ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
        ctype = "application/json";

    } else {
        text = strdup("not found\n");
        status = MHD_HTTP_NOT_FOUND;
        ctype = "text/plain";
    }

    if (text == NULL) {
        return MHD_NO;
    }

    resp = MHD_create_response_from_buffer(strlen(text), text,
                                           MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(text);
        return MHD_NO;
    }

    MHD_add_response_header(resp, "Content-Type", ctype);
    ret = MHD_queue_response(conn, (unsigned int) status, resp);
    MHD_destroy_response(resp);

    return ret;
}


/*
 * Start serving on host:port (IPv4 or IPv6 literal, or a name).
 */
int
sbw_metrics_start(const char *host, int port, char *err, size_t errlen)
{
    int               rc;
    char              portstr[16];
    unsigned int      flags;
    struct addrinfo   hints, *ai;

    pthread_mutex_lock(&sbw_m.mutex);
    sbw_m.started = time(NULL);
    pthread_mutex_unlock(&sbw_m.mutex);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;

    snprintf(portstr, sizeof(portstr), "%d", port);

    rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", host,
                 gai_strerror(rc));
        return -1;
    }

    flags = MHD_USE_INTERNAL_POLLING_THREAD;

    if (ai->ai_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }

    sbw_m.daemon = MHD_start_daemon(flags, (uint16_t) port, NULL, NULL,
                                    sbw_metrics_handler, NULL,
                                    MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                    MHD_OPTION_CONNECTION_TIMEOUT,
                                    (unsigned int) 10,
                                    MHD_OPTION_CONNECTION_LIMIT,
                                    (unsigned int) 64,
                                    MHD_OPTION_END);
    freeaddrinfo(ai);

    if (sbw_m.daemon == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d", host, port);
        return -1;
    }

    return 0;
}


void
sbw_metrics_stop(void)
{
    if (sbw_m.daemon != NULL) {
        MHD_stop_daemon(sbw_m.daemon);
        sbw_m.daemon = NULL;
    }
}
