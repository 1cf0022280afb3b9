/*
 * Prometheus metrics, served with libmicrohttpd on METRICS_ADDR:
 * GET /metrics (text exposition format) and GET /health.
 */

#ifndef SBW_METRICS_H
#define SBW_METRICS_H

#include <stddef.h>


int sbw_metrics_start(const char *host, int port, char *err, size_t errlen);
void sbw_metrics_stop(void);
char *sbw_metrics_render(void);

void sbw_metrics_entry(const char *topic, const char *outcome);
void sbw_metrics_bc_request(const char *op, const char *status);
void sbw_metrics_order_pushed(double seconds);
void sbw_metrics_order_deduped(void);
void sbw_metrics_order_recovered(void);
void sbw_metrics_order_failed(const char *reason);
void sbw_metrics_retry(const char *reason);
void sbw_metrics_order_sync(const char *event);
void sbw_metrics_trimmed(long long n);
void sbw_metrics_token_refresh(int ok);
void sbw_metrics_retry_queue_add(int delta);
void sbw_metrics_limiter_wait(const char *reason);
void sbw_metrics_limiter_waited(double seconds);
void sbw_metrics_stream_group(long long lag, long long pending);
void sbw_metrics_set_redis_up(int up);
void sbw_metrics_set_postgres_up(int up);
void sbw_metrics_dead_letter_written(const char *reason);
void sbw_metrics_dead_letter_replayed(const char *outcome);
void sbw_metrics_duplicate(const char *action);
void sbw_metrics_dead_letters_set(const char *const *reasons,
    const long long *counts, size_t n);


#endif /* SBW_METRICS_H */
