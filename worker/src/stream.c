/*
 * Redis stream access: consumer group reads, claims, acknowledgements,
 * replays from the dead-letter store and safe trimming.
 *
 * All calls are synchronous.  A call that fails at the connection level
 * returns SBW_STREAM_CONN and leaves the context for the caller to close
 * and reconnect; an error reply returns SBW_STREAM_REPLY with the text in
 * s->errstr.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "stream.h"


typedef struct {
    unsigned long long  ms;
    unsigned long long  seq;
} sbw_sid_t;


static int sbw_stream_check(sbw_stream_t *s, redisReply *r);
static char *sbw_reply_dup(const redisReply *r);
static int sbw_entry_parse(const redisReply *r, sbw_entry_t *e);
static int sbw_entries_parse(const redisReply *arr, sbw_entry_t **out,
    size_t *n);
static int sbw_sid_parse(const char *s, sbw_sid_t *id);
static int sbw_sid_cmp(const sbw_sid_t *a, const sbw_sid_t *b);
static const redisReply *sbw_map_get(const redisReply *r, const char *key);


/*
 * Classify a reply: NULL means the connection failed (hiredis sets
 * ctx->err), an error reply is copied to errstr.  Frees r on error.
 */
static int
sbw_stream_check(sbw_stream_t *s, redisReply *r)
{
    if (r == NULL) {
        snprintf(s->errstr, sizeof(s->errstr), "%s",
                 s->ctx && s->ctx->errstr[0] ? s->ctx->errstr
                                             : "connection lost");
        return SBW_STREAM_CONN;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(s->errstr, sizeof(s->errstr), "%s", r->str);
        freeReplyObject(r);
        return SBW_STREAM_REPLY;
    }

    return SBW_STREAM_OK;
}


/*
 * Connect, authenticate and select the database from REDIS_URL.  The
 * socket timeout covers the longest blocking read plus the normal command
 * timeout, so that XREADGROUP BLOCK never trips it.
 */
int
sbw_stream_connect(sbw_stream_t *s)
{
    long                    ms;
    redisReply             *r;
    struct timeval          tv;
    const sbw_redis_url_t  *u;

    sbw_stream_close(s);

    u = &s->conf->redis;
    ms = s->conf->redis_timeout_ms;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;

    if (u->path != NULL) {
        s->ctx = redisConnectUnixWithTimeout(u->path, tv);

    } else {
        s->ctx = redisConnectWithTimeout(u->host, u->port, tv);
    }

    if (s->ctx == NULL) {
        snprintf(s->errstr, sizeof(s->errstr), "out of memory");
        return SBW_STREAM_CONN;
    }

    if (s->ctx->err) {
        snprintf(s->errstr, sizeof(s->errstr), "%s", s->ctx->errstr);
        sbw_stream_close(s);
        return SBW_STREAM_CONN;
    }

    ms = s->conf->redis_timeout_ms + s->conf->block_ms;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;

    if (redisSetTimeout(s->ctx, tv) != REDIS_OK) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot set timeout");
        sbw_stream_close(s);
        return SBW_STREAM_CONN;
    }

    if (u->path == NULL) {
        redisEnableKeepAlive(s->ctx);
    }

    if (u->password != NULL) {
        if (u->user != NULL) {
            r = redisCommand(s->ctx, "AUTH %s %s", u->user, u->password);

        } else {
            r = redisCommand(s->ctx, "AUTH %s", u->password);
        }

        if (sbw_stream_check(s, r) != SBW_STREAM_OK) {
            sbw_stream_close(s);
            return SBW_STREAM_CONN;
        }

        freeReplyObject(r);
    }

    if (u->db != 0) {
        r = redisCommand(s->ctx, "SELECT %d", u->db);

        if (sbw_stream_check(s, r) != SBW_STREAM_OK) {
            sbw_stream_close(s);
            return SBW_STREAM_CONN;
        }

        freeReplyObject(r);
    }

    return SBW_STREAM_OK;
}


void
sbw_stream_close(sbw_stream_t *s)
{
    if (s->ctx != NULL) {
        redisFree(s->ctx);
        s->ctx = NULL;
    }
}


/*
 * Create the consumer group at the start of the stream (creating the
 * stream too if nginx has not written to it yet).  A group that already
 * exists (BUSYGROUP) is fine: its position is kept.
 */
int
sbw_stream_ensure_group(sbw_stream_t *s)
{
    int          rc;
    redisReply  *r;

    r = redisCommand(s->ctx, "XGROUP CREATE %s %s 0 MKSTREAM",
                     s->conf->stream_key, s->conf->group);

    rc = sbw_stream_check(s, r);

    if (rc == SBW_STREAM_REPLY && strncmp(s->errstr, "BUSYGROUP", 9) == 0) {
        return SBW_STREAM_OK;
    }

    if (rc == SBW_STREAM_OK) {
        freeReplyObject(r);
    }

    return rc;
}


/*
 * NUL-terminated copy of a string reply (binary-safe: the length comes
 * from the reply), or NULL.
 */
static char *
sbw_reply_dup(const redisReply *r)
{
    char  *p;

    if (r == NULL || (r->type != REDIS_REPLY_STRING
                      && r->type != REDIS_REPLY_STATUS))
    {
        return NULL;
    }

    p = malloc(r->len + 1);
    if (p != NULL) {
        memcpy(p, r->str, r->len);
        p[r->len] = '\0';
    }

    return p;
}


/*
 * One [id, [field, value, ...]] element.  A nil field list marks a
 * pending entry whose message has been deleted from the stream.
 */
static int
sbw_entry_parse(const redisReply *r, sbw_entry_t *e)
{
    size_t             i;
    char             **slot;
    const char        *name;
    const redisReply  *f, *k, *v;

    memset(e, 0, sizeof(*e));

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        return -1;
    }

    e->id = sbw_reply_dup(r->element[0]);
    if (e->id == NULL) {
        return -1;
    }

    f = r->element[1];

    if (f->type == REDIS_REPLY_NIL) {
        e->deleted = 1;
        return 0;
    }

    if (f->type != REDIS_REPLY_ARRAY) {
        return -1;
    }

    for (i = 0; i + 1 < f->elements; i += 2) {
        k = f->element[i];
        v = f->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        name = k->str;
        slot = NULL;

        if (strcmp(name, "topic") == 0) {
            slot = &e->topic;

        } else if (strcmp(name, "shop") == 0) {
            slot = &e->shop;

        } else if (strcmp(name, "webhook_id") == 0) {
            slot = &e->webhook_id;

        } else if (strcmp(name, "api_version") == 0) {
            slot = &e->api_version;

        } else if (strcmp(name, "triggered_at") == 0) {
            slot = &e->triggered_at;

        } else if (strcmp(name, "event_id") == 0) {
            slot = &e->event_id;

        } else if (strcmp(name, "received_at") == 0) {
            slot = &e->received_at;

        } else if (strcmp(name, "dead_letter_id") == 0) {
            slot = &e->dead_letter_id;

        } else if (strcmp(name, "body") == 0) {
            slot = &e->body;
            e->body_len = v->len;
        }

        if (slot == NULL || *slot != NULL) {
            continue;
        }

        *slot = sbw_reply_dup(v);
        if (*slot == NULL) {
            return -1;
        }
    }

    return 0;
}


/*
 * An array of stream entries into a newly allocated sbw_entry_t array.
 */
static int
sbw_entries_parse(const redisReply *arr, sbw_entry_t **out, size_t *n)
{
    size_t        i;
    sbw_entry_t  *es;

    *out = NULL;
    *n = 0;

    if (arr->type != REDIS_REPLY_ARRAY) {
        return -1;
    }

    if (arr->elements == 0) {
        return 0;
    }

    es = calloc(arr->elements, sizeof(sbw_entry_t));
    if (es == NULL) {
        return -1;
    }

    for (i = 0; i < arr->elements; i++) {
        if (sbw_entry_parse(arr->element[i], &es[i]) != 0) {
            sbw_entries_free(es, i + 1);
            return -1;
        }
    }

    *out = es;
    *n = arr->elements;

    return 0;
}


/*
 * XREADGROUP from "from": ">" for new entries (blocking up to block_ms),
 * or an id for this consumer's own pending entries after that id (no
 * blocking).  *out is NULL and *n 0 when nothing came.
 */
int
sbw_stream_read(sbw_stream_t *s, const char *from, long block_ms,
    sbw_entry_t **out, size_t *n)
{
    int                rc;
    redisReply        *r;
    const redisReply  *entries;

    *out = NULL;
    *n = 0;

    if (strcmp(from, ">") == 0) {
        r = redisCommand(s->ctx, "XREADGROUP GROUP %s %s COUNT %d BLOCK %ld "
                         "STREAMS %s >", s->conf->group, s->consumer,
                         s->conf->stream_batch, block_ms,
                         s->conf->stream_key);

    } else {
        /* own pending entries: bigger pages, nothing to share out */
        r = redisCommand(s->ctx, "XREADGROUP GROUP %s %s COUNT %d "
                         "STREAMS %s %s", s->conf->group, s->consumer,
                         s->conf->stream_batch > 50 ? s->conf->stream_batch
                                                    : 50,
                         s->conf->stream_key, from);
    }

    rc = sbw_stream_check(s, r);
    if (rc != SBW_STREAM_OK) {
        return rc;
    }

    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return SBW_STREAM_OK;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1
        || r->element[0]->type != REDIS_REPLY_ARRAY
        || r->element[0]->elements < 2)
    {
        snprintf(s->errstr, sizeof(s->errstr), "unexpected XREADGROUP "
                 "reply");
        freeReplyObject(r);
        return SBW_STREAM_REPLY;
    }

    entries = r->element[0]->element[1];

    if (sbw_entries_parse(entries, out, n) != 0) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot parse entries");
        freeReplyObject(r);
        return SBW_STREAM_REPLY;
    }

    freeReplyObject(r);
    return SBW_STREAM_OK;
}


/*
 * XAUTOCLAIM: take over entries that other consumers of the group have
 * left pending for longer than CLAIM_MIN_IDLE_MS (a worker that died or
 * was renamed).  cursor is the scan position, "0-0" to start; it is
 * updated and comes back as "0-0" when the scan is complete.  Redis 7
 * removes from the pending list, by itself, the claimed ids whose
 * message is gone (trimmed or deleted by hand) and names them in a third
 * element: they are appended to *out as entries marked deleted, so that
 * the caller reports them like any other vanished entry.
 */
int
sbw_stream_autoclaim(sbw_stream_t *s, char *cursor, size_t cursor_len,
    sbw_entry_t **out, size_t *n)
{
    int                rc, count;
    size_t             i, nd;
    redisReply        *r;
    sbw_entry_t       *es;
    const redisReply  *del;

    *out = NULL;
    *n = 0;

    count = s->conf->stream_batch > 10 ? s->conf->stream_batch : 10;

    r = redisCommand(s->ctx, "XAUTOCLAIM %s %s %s %ld %s COUNT %d",
                     s->conf->stream_key, s->conf->group, s->consumer,
                     s->conf->claim_idle_ms, cursor, count);

    rc = sbw_stream_check(s, r);
    if (rc != SBW_STREAM_OK) {
        return rc;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        snprintf(s->errstr, sizeof(s->errstr), "unexpected XAUTOCLAIM "
                 "reply");
        freeReplyObject(r);
        return SBW_STREAM_REPLY;
    }

    snprintf(cursor, cursor_len, "%s", r->element[0]->str);

    if (sbw_entries_parse(r->element[1], out, n) != 0) {
        snprintf(s->errstr, sizeof(s->errstr), "cannot parse entries");
        freeReplyObject(r);
        return SBW_STREAM_REPLY;
    }

    del = r->elements >= 3 ? r->element[2] : NULL;
    nd = del != NULL && del->type == REDIS_REPLY_ARRAY ? del->elements : 0;

    if (nd > 0) {
        es = realloc(*out, (*n + nd) * sizeof(sbw_entry_t));
        if (es == NULL) {
            /* they are out of the pending list already: only a report */
            snprintf(s->errstr, sizeof(s->errstr), "out of memory");
            sbw_entries_free(*out, *n);
            *out = NULL;
            *n = 0;
            freeReplyObject(r);
            return SBW_STREAM_REPLY;
        }

        for (i = 0; i < nd; i++) {
            memset(&es[*n], 0, sizeof(sbw_entry_t));
            es[*n].deleted = 1;
            es[*n].id = sbw_reply_dup(del->element[i]);

            if (es[*n].id == NULL) {
                continue;
            }

            (*n)++;
        }

        *out = es;
    }

    freeReplyObject(r);
    return SBW_STREAM_OK;
}


/*
 * Keep an entry this consumer is still retrying from looking abandoned:
 * XCLAIM ... 0 id JUSTID resets its idle time without counting a
 * delivery, so other consumers' XAUTOCLAIM leaves it alone and its
 * delivery count does not climb towards MAX_DELIVERIES while BC is down.
 */
int
sbw_stream_touch(sbw_stream_t *s, const char *id)
{
    int          rc;
    redisReply  *r;

    r = redisCommand(s->ctx, "XCLAIM %s %s %s 0 %s JUSTID",
                     s->conf->stream_key, s->conf->group, s->consumer, id);

    rc = sbw_stream_check(s, r);
    if (rc == SBW_STREAM_OK) {
        freeReplyObject(r);
    }

    return rc;
}


/*
 * How many times each of the entries es[0..n-1] (ids in increasing
 * order, all pending for this consumer) has been delivered: XPENDING
 * over their id range.  counts[i] is 0 for an entry no longer pending.
 */
int
sbw_stream_delivery_counts(sbw_stream_t *s, const sbw_entry_t *es,
    size_t n, long long *counts)
{
    int                rc;
    size_t             i, j;
    redisReply        *r;
    const redisReply  *p;

    for (i = 0; i < n; i++) {
        counts[i] = 0;
    }

    if (n == 0) {
        return SBW_STREAM_OK;
    }

    r = redisCommand(s->ctx, "XPENDING %s %s %s %s %d %s",
                     s->conf->stream_key, s->conf->group, es[0].id,
                     es[n - 1].id, (int) n + 16, s->consumer);

    rc = sbw_stream_check(s, r);
    if (rc != SBW_STREAM_OK) {
        return rc;
    }

    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(s->errstr, sizeof(s->errstr), "unexpected XPENDING reply");
        freeReplyObject(r);
        return SBW_STREAM_REPLY;
    }

    for (j = 0; j < r->elements; j++) {
        p = r->element[j];

        if (p->type != REDIS_REPLY_ARRAY || p->elements < 4
            || p->element[0]->type != REDIS_REPLY_STRING
            || p->element[3]->type != REDIS_REPLY_INTEGER)
        {
            continue;
        }

        for (i = 0; i < n; i++) {
            if (es[i].id != NULL && strcmp(es[i].id, p->element[0]->str)
                                    == 0)
            {
                counts[i] = p->element[3]->integer;
                break;
            }
        }
    }

    freeReplyObject(r);
    return SBW_STREAM_OK;
}


/*
 * XACK one entry in our group; done only once its outcome is durable in
 * PostgreSQL.
 */
int
sbw_stream_ack(sbw_stream_t *s, const char *id)
{
    int          rc;
    redisReply  *r;

    r = redisCommand(s->ctx, "XACK %s %s %s", s->conf->stream_key,
                     s->conf->group, id);

    rc = sbw_stream_check(s, r);
    if (rc == SBW_STREAM_OK) {
        freeReplyObject(r);
    }

    return rc;
}


/*
 * Add a copy of an entry to the stream again (a replay from the
 * dead-letter store): the fields nginx writes, in nginx's order, with
 * the body given (possibly edited), plus dead_letter_id, which lets the
 * worker report the outcome on the dead letter.  new_id receives the id
 * of the new entry.
 */
int
sbw_stream_replay(sbw_stream_t *s, const sbw_entry_t *e,
    const char *dead_letter_id, char *new_id, size_t new_id_len)
{
    int          rc, argc;
    size_t       lens[32];
    redisReply  *r;
    const char  *argv[32];

#define SBW_RP_ARG(name, value, len)                                         \
    do {                                                                     \
        if ((value) != NULL) {                                               \
            argv[argc] = (name);                                             \
            lens[argc] = strlen(name);                                       \
            argc++;                                                          \
            argv[argc] = (value);                                            \
            lens[argc] = (len);                                              \
            argc++;                                                          \
        }                                                                    \
    } while (0)

    argc = 0;
    argv[argc] = "XADD";
    lens[argc++] = 4;
    argv[argc] = s->conf->stream_key;
    lens[argc] = strlen(s->conf->stream_key);
    argc++;
    argv[argc] = "*";
    lens[argc++] = 1;

    SBW_RP_ARG("topic", e->topic, e->topic ? strlen(e->topic) : 0);
    SBW_RP_ARG("shop", e->shop, e->shop ? strlen(e->shop) : 0);
    SBW_RP_ARG("webhook_id", e->webhook_id,
               e->webhook_id ? strlen(e->webhook_id) : 0);
    SBW_RP_ARG("api_version", e->api_version,
               e->api_version ? strlen(e->api_version) : 0);
    SBW_RP_ARG("triggered_at", e->triggered_at,
               e->triggered_at ? strlen(e->triggered_at) : 0);
    SBW_RP_ARG("event_id", e->event_id,
               e->event_id ? strlen(e->event_id) : 0);
    SBW_RP_ARG("received_at", e->received_at,
               e->received_at ? strlen(e->received_at) : 0);
    SBW_RP_ARG("dead_letter_id", dead_letter_id,
               dead_letter_id ? strlen(dead_letter_id) : 0);
    SBW_RP_ARG("body", e->body != NULL ? e->body : "", e->body_len);

#undef SBW_RP_ARG

    r = redisCommandArgv(s->ctx, argc, argv, lens);

    rc = sbw_stream_check(s, r);
    if (rc != SBW_STREAM_OK) {
        return rc;
    }

    if (r->type != REDIS_REPLY_STRING) {
        snprintf(s->errstr, sizeof(s->errstr), "unexpected XADD reply");
        freeReplyObject(r);
        return SBW_STREAM_REPLY;
    }

    snprintf(new_id, new_id_len, "%s", r->str);
    freeReplyObject(r);

    return SBW_STREAM_OK;
}


/*
 * Parse a stream id "ms-seq" (or a bare "ms") into its two numbers.
 */
static int
sbw_sid_parse(const char *s, sbw_sid_t *id)
{
    char  *end;

    errno = 0;
    id->ms = strtoull(s, &end, 10);

    if (end == s || errno != 0) {
        return -1;
    }

    id->seq = 0;

    if (*end == '-') {
        s = end + 1;
        id->seq = strtoull(s, &end, 10);

        if (end == s || errno != 0) {
            return -1;
        }
    }

    return *end == '\0' ? 0 : -1;
}


static int
sbw_sid_cmp(const sbw_sid_t *a, const sbw_sid_t *b)
{
    if (a->ms != b->ms) {
        return a->ms < b->ms ? -1 : 1;
    }

    if (a->seq != b->seq) {
        return a->seq < b->seq ? -1 : 1;
    }

    return 0;
}


/*
 * Value of key in a flat [key, value, key, value, ...] reply (RESP2
 * form of XINFO maps).
 */
static const redisReply *
sbw_map_get(const redisReply *r, const char *key)
{
    size_t  i;

    if (r->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }

    for (i = 0; i + 1 < r->elements; i += 2) {
        if (r->element[i]->type == REDIS_REPLY_STRING
            && strcmp(r->element[i]->str, key) == 0)
        {
            return r->element[i + 1];
        }
    }

    return NULL;
}


/*
 * The oldest entry some consumer group may still need.  For every group
 * (ours and any other) that bound is its oldest pending entry (XPENDING)
 * if it has one, else the entry after its last-delivered-id: everything
 * older has been delivered and acknowledged by every group.  minid
 * receives the minimum over all groups, "" for a stream without groups
 * (nothing can be called done then).
 */
int
sbw_stream_floor(sbw_stream_t *s, char *minid, size_t minid_len)
{
    int                rc, have;
    size_t             i;
    sbw_sid_t          best, cand;
    redisReply        *groups, *p;
    const redisReply  *g, *name, *pending, *last;

    minid[0] = '\0';
    have = 0;
    best.ms = 0;
    best.seq = 0;

    groups = redisCommand(s->ctx, "XINFO GROUPS %s", s->conf->stream_key);

    rc = sbw_stream_check(s, groups);
    if (rc != SBW_STREAM_OK) {
        return rc;
    }

    if (groups->type != REDIS_REPLY_ARRAY || groups->elements == 0) {
        freeReplyObject(groups);
        return SBW_STREAM_OK;
    }

    for (i = 0; i < groups->elements; i++) {
        g = groups->element[i];
        name = sbw_map_get(g, "name");
        pending = sbw_map_get(g, "pending");
        last = sbw_map_get(g, "last-delivered-id");

        if (name == NULL || name->type != REDIS_REPLY_STRING
            || pending == NULL || pending->type != REDIS_REPLY_INTEGER
            || last == NULL || last->type != REDIS_REPLY_STRING
            || sbw_sid_parse(last->str, &cand) != 0)
        {
            snprintf(s->errstr, sizeof(s->errstr), "unexpected XINFO "
                     "GROUPS reply");
            freeReplyObject(groups);
            return SBW_STREAM_REPLY;
        }

        if (pending->integer > 0) {
            p = redisCommand(s->ctx, "XPENDING %s %s", s->conf->stream_key,
                             name->str);

            rc = sbw_stream_check(s, p);
            if (rc != SBW_STREAM_OK) {
                freeReplyObject(groups);
                return rc;
            }

            if (p->type != REDIS_REPLY_ARRAY || p->elements < 2
                || p->element[1]->type != REDIS_REPLY_STRING
                || sbw_sid_parse(p->element[1]->str, &cand) != 0)
            {
                /* nothing pending any more: fall back to last delivered */
                if (sbw_sid_parse(last->str, &cand) != 0) {
                    freeReplyObject(p);
                    freeReplyObject(groups);
                    return SBW_STREAM_REPLY;
                }

                cand.seq++;
                if (cand.seq == 0) {
                    cand.ms++;
                }
            }

            freeReplyObject(p);

        } else {
            cand.seq++;
            if (cand.seq == 0) {
                cand.ms++;
            }
        }

        if (!have || sbw_sid_cmp(&cand, &best) < 0) {
            best = cand;
            have = 1;
        }
    }

    freeReplyObject(groups);

    if (have) {
        snprintf(minid, minid_len, "%llu-%llu", best.ms, best.seq);
    }

    return SBW_STREAM_OK;
}


/*
 * Our consumer group's lag (entries not yet delivered to it; -1 when
 * Redis cannot tell, e.g. after entries were deleted) and its pending
 * count, from XINFO GROUPS.
 */
int
sbw_stream_group_stats(sbw_stream_t *s, long long *lag, long long *pending)
{
    int                rc;
    size_t             i;
    redisReply        *groups;
    const redisReply  *g, *name, *v;

    *lag = -1;
    *pending = -1;

    groups = redisCommand(s->ctx, "XINFO GROUPS %s", s->conf->stream_key);

    rc = sbw_stream_check(s, groups);
    if (rc != SBW_STREAM_OK) {
        return rc;
    }

    for (i = 0; groups->type == REDIS_REPLY_ARRAY && i < groups->elements;
         i++)
    {
        g = groups->element[i];
        name = sbw_map_get(g, "name");

        if (name == NULL || name->type != REDIS_REPLY_STRING
            || strcmp(name->str, s->conf->group) != 0)
        {
            continue;
        }

        v = sbw_map_get(g, "pending");
        if (v != NULL && v->type == REDIS_REPLY_INTEGER) {
            *pending = v->integer;
        }

        /* Redis 7.0 and later; nil when the lag cannot be computed */
        v = sbw_map_get(g, "lag");
        if (v != NULL && v->type == REDIS_REPLY_INTEGER) {
            *lag = v->integer;
        }
    }

    freeReplyObject(groups);

    return SBW_STREAM_OK;
}


/*
 * Order of two entry ids ("ms-seq" or "ms"): <0, 0, >0.  An id that does
 * not parse sorts first.
 */
int
sbw_stream_id_cmp(const char *a, const char *b)
{
    int        pa, pb;
    sbw_sid_t  x, y;

    pa = sbw_sid_parse(a, &x);
    pb = sbw_sid_parse(b, &y);

    if (pa != 0 || pb != 0) {
        return (pa != 0) - (pb != 0) ? (pb != 0) - (pa != 0) : 0;
    }

    return sbw_sid_cmp(&x, &y);
}


/*
 * Trim the stream below sbw_stream_floor(), so nothing unacknowledged or
 * undelivered is ever lost.  A stream without groups is left alone.
 * *trimmed is the number of entries removed; minid receives the bound
 * used ("" if none).
 */
int
sbw_stream_trim(sbw_stream_t *s, long long *trimmed, char *minid,
    size_t minid_len)
{
    int          rc;
    redisReply  *r;

    *trimmed = 0;

    rc = sbw_stream_floor(s, minid, minid_len);
    if (rc != SBW_STREAM_OK || minid[0] == '\0') {
        return rc;
    }

    r = redisCommand(s->ctx, "XTRIM %s MINID %s", s->conf->stream_key,
                     minid);

    rc = sbw_stream_check(s, r);
    if (rc != SBW_STREAM_OK) {
        return rc;
    }

    if (r->type == REDIS_REPLY_INTEGER) {
        *trimmed = r->integer;
    }

    freeReplyObject(r);
    return SBW_STREAM_OK;
}


/*
 * Deep copy of an entry (for the retry queue, which outlives the reply
 * batch).  Returns 0 or -1 when out of memory.
 */
int
sbw_stream_copy_entry(sbw_entry_t *dst, const sbw_entry_t *src)
{
    memset(dst, 0, sizeof(*dst));

#define SBW_COPY_STR(f)                                                      \
    if (src->f != NULL && (dst->f = strdup(src->f)) == NULL) {               \
        sbw_entry_clear(dst);                                                \
        return -1;                                                           \
    }

    SBW_COPY_STR(id);
    SBW_COPY_STR(topic);
    SBW_COPY_STR(shop);
    SBW_COPY_STR(webhook_id);
    SBW_COPY_STR(api_version);
    SBW_COPY_STR(triggered_at);
    SBW_COPY_STR(event_id);
    SBW_COPY_STR(received_at);
    SBW_COPY_STR(dead_letter_id);

#undef SBW_COPY_STR

    if (src->body != NULL) {
        dst->body = malloc(src->body_len + 1);
        if (dst->body == NULL) {
            sbw_entry_clear(dst);
            return -1;
        }

        memcpy(dst->body, src->body, src->body_len);
        dst->body[src->body_len] = '\0';
        dst->body_len = src->body_len;
    }

    dst->deleted = src->deleted;
    return 0;
}


/*
 * Free an entry's strings and zero it.
 */
void
sbw_entry_clear(sbw_entry_t *e)
{
    free(e->id);
    free(e->topic);
    free(e->shop);
    free(e->webhook_id);
    free(e->api_version);
    free(e->triggered_at);
    free(e->event_id);
    free(e->received_at);
    free(e->dead_letter_id);
    free(e->body);

    memset(e, 0, sizeof(*e));
}


/*
 * Free an array returned by sbw_stream_read() or sbw_stream_autoclaim().
 */
void
sbw_entries_free(sbw_entry_t *e, size_t n)
{
    size_t  i;

    if (e == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        sbw_entry_clear(&e[i]);
    }

    free(e);
}
