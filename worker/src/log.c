/*
 * JSON-lines logger.  A mutex keeps lines from different threads whole;
 * each line is written with a single fputs() followed by a flush so that
 * a crash loses at most the line being written.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"


static int              sbw_log_min = SBW_LOG_INFO;
static pthread_mutex_t  sbw_log_mutex = PTHREAD_MUTEX_INITIALIZER;

static const char *const  sbw_log_names[] = {
    "debug", "info", "warn", "error"
};


/*
 * Level number for a LOG_LEVEL value (case-insensitive "debug", "info",
 * "warn"/"warning", "error"), or -1 if unknown.
 */
int
sbw_log_level_parse(const char *s)
{
    if (s == NULL || *s == '\0') {
        return -1;
    }

    if (strcasecmp(s, "debug") == 0) {
        return SBW_LOG_DEBUG;
    }

    if (strcasecmp(s, "info") == 0) {
        return SBW_LOG_INFO;
    }

    if (strcasecmp(s, "warn") == 0 || strcasecmp(s, "warning") == 0) {
        return SBW_LOG_WARN;
    }

    if (strcasecmp(s, "error") == 0) {
        return SBW_LOG_ERROR;
    }

    return -1;
}


void
sbw_log_set_level(int level)
{
    sbw_log_min = level;
}


int
sbw_log_enabled(int level)
{
    return level >= sbw_log_min;
}


/*
 * Write one log line.  fields (may be NULL) is consumed.  Keys "ts",
 * "level" and "event" are set here and override any caller value.
 */
void
sbw_log(int level, const char *event, json_t *fields)
{
    char            ts[40], frac[8];
    char           *line;
    json_t         *obj, *value;
    const char     *key;
    struct tm       tm;
    struct timeval  tv;

    if (level < sbw_log_min || level < SBW_LOG_DEBUG
        || level > SBW_LOG_ERROR)
    {
        json_decref(fields);
        return;
    }

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(frac, sizeof(frac), ".%03dZ", (int) (tv.tv_usec / 1000));
    strncat(ts, frac, sizeof(ts) - strlen(ts) - 1);

    obj = json_object();
    if (obj == NULL) {
        json_decref(fields);
        return;
    }

    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(sbw_log_names[level]));
    json_object_set_new(obj, "event", json_string(event));

    /* caller fields follow in their order; null values are left out */
    json_object_foreach(fields, key, value) {
        if (!json_is_null(value) && json_object_get(obj, key) == NULL) {
            json_object_set(obj, key, value);
        }
    }

    json_decref(fields);

    line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);

    if (line == NULL) {
        return;
    }

    pthread_mutex_lock(&sbw_log_mutex);
    fputs(line, stderr);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&sbw_log_mutex);

    free(line);
}
