
/*
 * Shopify webhook intake for nginx: counters shared by all workers.
 *
 * One shared memory zone holds a fixed set of atomic counters, so workers
 * update them without a lock and the status handler reads them without
 * one.  The zone keeps its name and size across reloads, so nginx reuses
 * it and the counters survive; a restart starts them afresh, which the
 * start time gauge shows to the scraper.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_shopify_module.h"


#define NGX_HTTP_SHOPIFY_MAX_WORKERS   64
#define NGX_HTTP_SHOPIFY_NBUCKETS      12
#define NGX_HTTP_SHOPIFY_ZONE_SIZE     (64 * 1024)


typedef struct {
    ngx_atomic_t   deliveries[NGX_HTTP_SHOPIFY_NTOPICS]
                             [NGX_HTTP_SHOPIFY_NOUTCOMES];
    ngx_atomic_t   latency[NGX_HTTP_SHOPIFY_NBUCKETS + 1];
    ngx_atomic_t   latency_usec;
    ngx_atomic_t   reconnects;
    ngx_atomic_t   redis_up[NGX_HTTP_SHOPIFY_MAX_WORKERS];    /* pids */
    ngx_atomic_t   start_time;
} ngx_http_shopify_metrics_t;


static ngx_int_t ngx_http_shopify_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


/* histogram bounds, in microseconds */
static ngx_uint_t  ngx_http_shopify_bounds[NGX_HTTP_SHOPIFY_NBUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000
};

static char  *ngx_http_shopify_bound_text[NGX_HTTP_SHOPIFY_NBUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5"
};

static ngx_http_shopify_metrics_t  *ngx_http_shopify_metrics;


/* every directive that needs the counters asks; the zone is made once */

ngx_int_t
ngx_http_shopify_metrics_add(ngx_conf_t *cf)
{
    ngx_str_t        name = ngx_string("shopify_metrics");
    ngx_shm_zone_t  *zone;

    zone = ngx_shared_memory_add(cf, &name, NGX_HTTP_SHOPIFY_ZONE_SIZE,
                                 &ngx_http_shopify_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_http_shopify_metrics_init_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_shopify_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t             *shpool;
    ngx_http_shopify_metrics_t  *m;

    if (data) {
        /* a reload with the same zone: keep the counters */
        shm_zone->data = data;
        ngx_http_shopify_metrics = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        ngx_http_shopify_metrics = shpool->data;
        return NGX_OK;
    }

    m = ngx_slab_calloc(shpool, sizeof(ngx_http_shopify_metrics_t));
    if (m == NULL) {
        return NGX_ERROR;
    }

    m->start_time = ngx_time();

    shpool->data = m;
    shm_zone->data = m;
    ngx_http_shopify_metrics = m;

    return NGX_OK;
}


void
ngx_http_shopify_metrics_count(ngx_uint_t topic,
    ngx_http_shopify_outcome_e outcome)
{
    if (ngx_http_shopify_metrics == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(
                       &ngx_http_shopify_metrics->deliveries[topic][outcome],
                       1);
}


void
ngx_http_shopify_metrics_latency(ngx_int_t usec)
{
    ngx_uint_t                   i;
    ngx_http_shopify_metrics_t  *m;

    m = ngx_http_shopify_metrics;

    if (m == NULL) {
        return;
    }

    if (usec < 0) {
        usec = 0;
    }

    for (i = 0; i < NGX_HTTP_SHOPIFY_NBUCKETS; i++) {
        if ((ngx_uint_t) usec <= ngx_http_shopify_bounds[i]) {
            break;
        }
    }

    /* one bucket per observation; the renderer accumulates */
    (void) ngx_atomic_fetch_add(&m->latency[i], 1);
    (void) ngx_atomic_fetch_add(&m->latency_usec, usec);
}


/*
 * A worker's slot holds its pid while its connection is up.  Across a
 * reload a retiring worker and its successor share a slot, in either
 * order: only the pid that is in the slot may clear it, and a new worker
 * takes its slot over as it starts (ngx_http_shopify_metrics_worker()).
 */

void
ngx_http_shopify_metrics_redis(ngx_uint_t up, ngx_uint_t reconnect)
{
    ngx_atomic_t                *slot;
    ngx_http_shopify_metrics_t  *m;

    m = ngx_http_shopify_metrics;

    if (m == NULL) {
        return;
    }

    if (ngx_worker < NGX_HTTP_SHOPIFY_MAX_WORKERS) {
        slot = &m->redis_up[ngx_worker];

        if (!up) {
            (void) ngx_atomic_cmp_set(slot, (ngx_atomic_uint_t) ngx_pid, 0);

        } else if (!ngx_exiting && !ngx_quit) {
            *slot = (ngx_atomic_uint_t) ngx_pid;
        }
    }

    if (reconnect) {
        (void) ngx_atomic_fetch_add(&m->reconnects, 1);
    }
}


/* a worker starts with its slot down, whatever a predecessor left there */

void
ngx_http_shopify_metrics_worker(void)
{
    if (ngx_http_shopify_metrics != NULL
        && ngx_worker < NGX_HTTP_SHOPIFY_MAX_WORKERS)
    {
        ngx_http_shopify_metrics->redis_up[ngx_worker] = 0;
    }
}


/*
 * Renders the counters in Prometheus text format.  Every series is always
 * present, so rates work from the first scrape.
 */

ngx_int_t
ngx_http_shopify_metrics_render(ngx_http_request_t *r, ngx_str_t *out)
{
    u_char                      *p;
    size_t                       size;
    ngx_str_t                   *topic;
    ngx_uint_t                   t, o, i, up, sum, usec;
    ngx_http_shopify_metrics_t  *m;

    m = ngx_http_shopify_metrics;

    if (m == NULL) {
        return NGX_DECLINED;
    }

    size = 4096
           + NGX_HTTP_SHOPIFY_NTOPICS * NGX_HTTP_SHOPIFY_NOUTCOMES
             * (128 + NGX_ATOMIC_T_LEN)
           + (NGX_HTTP_SHOPIFY_NBUCKETS + 1) * (64 + NGX_ATOMIC_T_LEN);

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    p = ngx_sprintf(p,
        "# HELP shopify_webhook_deliveries_total Webhook deliveries by "
        "topic and outcome.\n"
        "# TYPE shopify_webhook_deliveries_total counter\n");

    for (t = 0; t < NGX_HTTP_SHOPIFY_NTOPICS; t++) {
        topic = ngx_http_shopify_topic_name(t);

        for (o = 0; o < NGX_HTTP_SHOPIFY_NOUTCOMES; o++) {
            p = ngx_sprintf(p, "shopify_webhook_deliveries_total{topic=\"%V\","
                            "outcome=\"%V\"} %uA\n", topic,
                            ngx_http_shopify_outcome_name(o),
                            m->deliveries[t][o]);
        }
    }

    p = ngx_sprintf(p,
        "# HELP shopify_webhook_enqueue_seconds Time from a verified "
        "delivery to Redis's acknowledgement.\n"
        "# TYPE shopify_webhook_enqueue_seconds histogram\n");

    sum = 0;

    for (i = 0; i < NGX_HTTP_SHOPIFY_NBUCKETS; i++) {
        sum += m->latency[i];
        p = ngx_sprintf(p, "shopify_webhook_enqueue_seconds_bucket"
                        "{le=\"%s\"} %ui\n", ngx_http_shopify_bound_text[i],
                        sum);
    }

    sum += m->latency[NGX_HTTP_SHOPIFY_NBUCKETS];
    usec = m->latency_usec;

    p = ngx_sprintf(p, "shopify_webhook_enqueue_seconds_bucket{le=\"+Inf\"} "
                    "%ui\n"
                    "shopify_webhook_enqueue_seconds_sum %ui.%06ui\n"
                    "shopify_webhook_enqueue_seconds_count %ui\n",
                    sum, usec / 1000000, usec % 1000000, sum);

    up = 0;

    for (i = 0; i < NGX_HTTP_SHOPIFY_MAX_WORKERS; i++) {
        up += (m->redis_up[i] != 0);
    }

    p = ngx_sprintf(p,
        "# HELP shopify_redis_connected_workers nginx workers whose Redis "
        "connection is up.\n"
        "# TYPE shopify_redis_connected_workers gauge\n"
        "shopify_redis_connected_workers %ui\n"
        "# HELP shopify_redis_reconnects_total Redis connections made again "
        "after a loss.\n"
        "# TYPE shopify_redis_reconnects_total counter\n"
        "shopify_redis_reconnects_total %uA\n"
        "# HELP shopify_intake_start_time_seconds When the counters "
        "started, as a Unix time.\n"
        "# TYPE shopify_intake_start_time_seconds gauge\n"
        "shopify_intake_start_time_seconds %uA\n",
        up, m->reconnects, m->start_time);

    out->len = p - out->data;

    return NGX_OK;
}
