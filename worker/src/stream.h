/*
 * The shopify:webhooks Redis stream, read through a consumer group with
 * the synchronous hiredis API (one connection per worker thread).
 */

#ifndef SBW_STREAM_H
#define SBW_STREAM_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include "config.h"


/* results of the sbw_stream_*() calls */
#define SBW_STREAM_OK      0
#define SBW_STREAM_CONN   -1    /* connection lost: reconnect */
#define SBW_STREAM_REPLY  -2    /* Redis answered with an error */


typedef struct {
    char    *id;
    char    *topic;
    char    *shop;
    char    *webhook_id;
    char    *api_version;
    char    *triggered_at;
    char    *event_id;
    char    *received_at;
    char    *dead_letter_id;   /* set on a replay from the dead letters */
    char    *body;
    size_t   body_len;
    int      deleted;          /* pending entry trimmed from the stream */
} sbw_entry_t;


typedef struct {
    redisContext        *ctx;
    const sbw_config_t  *conf;
    char                 consumer[300];
    char                 errstr[256];
} sbw_stream_t;


int sbw_stream_connect(sbw_stream_t *s);
void sbw_stream_close(sbw_stream_t *s);
int sbw_stream_ensure_group(sbw_stream_t *s);
int sbw_stream_read(sbw_stream_t *s, const char *from, long block_ms,
    sbw_entry_t **out, size_t *n);
int sbw_stream_autoclaim(sbw_stream_t *s, char *cursor, size_t cursor_len,
    sbw_entry_t **out, size_t *n);
int sbw_stream_ack(sbw_stream_t *s, const char *id);
int sbw_stream_id_cmp(const char *a, const char *b);
int sbw_stream_floor(sbw_stream_t *s, char *minid, size_t minid_len);
int sbw_stream_group_stats(sbw_stream_t *s, long long *lag,
    long long *pending);
int sbw_stream_touch(sbw_stream_t *s, const char *id);
int sbw_stream_delivery_counts(sbw_stream_t *s, const sbw_entry_t *es,
    size_t n, long long *counts);
int sbw_stream_replay(sbw_stream_t *s, const sbw_entry_t *e,
    const char *dead_letter_id, char *new_id, size_t new_id_len);
int sbw_stream_trim(sbw_stream_t *s, long long *trimmed, char *minid,
    size_t minid_len);
int sbw_stream_copy_entry(sbw_entry_t *dst, const sbw_entry_t *src);
void sbw_entry_clear(sbw_entry_t *e);
void sbw_entries_free(sbw_entry_t *e, size_t n);


#endif /* SBW_STREAM_H */
