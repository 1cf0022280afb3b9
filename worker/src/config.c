/*
 * Settings from the environment.
 *
 * Every problem found is reported in one line: first the required
 * settings that are missing, all of them, then the first malformed one.
 * main() prints that line and exits with status 2.
 */

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "money.h"
#include "sync_map.h"
#include "log.h"


#define SBW_DEFAULT_REDIS_URL      "redis://127.0.0.1:6379/0"
#define SBW_DEFAULT_API_BASE       "https://api.businesscentral.dynamics.com"
#define SBW_DEFAULT_AUTH_BASE      "https://login.microsoftonline.com"
#define SBW_DEFAULT_SCOPE  \
    "https://api.businesscentral.dynamics.com/.default"


typedef struct {
    sbw_getenv_pt   get;
    void           *ctx;
    char           *err;
    size_t          errlen;
    int             bad;
} sbw_env_t;


static const char *sbw_env(sbw_env_t *e, const char *name);
static void sbw_env_fail(sbw_env_t *e, const char *fmt, ...);
static char *sbw_env_str(sbw_env_t *e, const char *name, const char *def);
static long sbw_env_long(sbw_env_t *e, const char *name, long def,
    long min, long max);
static char *sbw_strip_slash(char *s);
static char *sbw_pct_decode(const char *s, size_t n);
static int sbw_parse_metrics_addr(const char *s, char **host, int *port);
static json_t *sbw_load_string_map(sbw_env_t *e, const char *name,
    const char *text);


/*
 * The process environment, for sbw_config_load().
 */
const char *
sbw_getenv_process(const char *name, void *ctx)
{
    (void) ctx;
    return getenv(name);
}


/*
 * A setting's value, NULL when unset or empty (an empty value counts as
 * unset, which is what `FOO= cmd` in a shell usually means).
 */
static const char *
sbw_env(sbw_env_t *e, const char *name)
{
    const char  *v;

    v = e->get(name, e->ctx);

    if (v == NULL || *v == '\0') {
        return NULL;
    }

    return v;
}


/*
 * Record the first malformed setting; later ones are not reported, the
 * operator fixes them one run at a time.
 */
static void
sbw_env_fail(sbw_env_t *e, const char *fmt, ...)
{
    va_list  ap;

    if (e->bad) {
        return;
    }

    e->bad = 1;

    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
}


static char *
sbw_env_str(sbw_env_t *e, const char *name, const char *def)
{
    const char  *v;

    v = sbw_env(e, name);

    if (v == NULL) {
        v = def;
    }

    return v ? strdup(v) : NULL;
}


/*
 * An integer setting within [min, max], def when unset.
 */
static long
sbw_env_long(sbw_env_t *e, const char *name, long def, long min, long max)
{
    char        *end;
    long         n;
    const char  *v;

    v = sbw_env(e, name);

    if (v == NULL) {
        return def;
    }

    n = strtol(v, &end, 10);

    if (end == v || *end != '\0' || n < min || n > max) {
        sbw_env_fail(e, "invalid %s: \"%s\" (an integer from %ld to %ld)",
                     name, v, min, max);
        return def;
    }

    return n;
}


/*
 * Drop trailing slashes from a base URL, in place, so that paths can be
 * appended with one "/".
 */
static char *
sbw_strip_slash(char *s)
{
    size_t  n;

    if (s == NULL) {
        return NULL;
    }

    n = strlen(s);

    while (n > 0 && s[n - 1] == '/') {
        s[--n] = '\0';
    }

    return s;
}


/*
 * Copy of the first n bytes of s with %XX escapes decoded (user names and
 * passwords in URLs).  NULL on a malformed escape or no memory.
 */
static char *
sbw_pct_decode(const char *s, size_t n)
{
    char    *out, hex[3];
    size_t   i, j;

    out = malloc(n + 1);
    if (out == NULL) {
        return NULL;
    }

    for (i = 0, j = 0; i < n; i++) {
        if (s[i] != '%') {
            out[j++] = s[i];
            continue;
        }

        if (i + 2 >= n) {
            free(out);
            return NULL;
        }

        if (!isxdigit((unsigned char) s[i + 1])
            || !isxdigit((unsigned char) s[i + 2]))
        {
            free(out);
            return NULL;
        }

        hex[0] = s[i + 1];
        hex[1] = s[i + 2];
        hex[2] = '\0';
        out[j++] = (char) strtol(hex, NULL, 16);
        i += 2;
    }

    out[j] = '\0';
    return out;
}


void
sbw_redis_url_free(sbw_redis_url_t *u)
{
    free(u->host);
    free(u->path);
    free(u->user);
    free(u->password);
    memset(u, 0, sizeof(*u));
}


/*
 * Parse REDIS_URL.  Accepted forms:
 *
 *   redis://[[user]:password@]host[:port][/db]
 *   redis://user@host...              (user name only)
 *   redis+unix://[[user]:password@]/path/to/socket[?db=N]
 *   unix:///path/to/socket[?db=N&password=...]
 *
 * host may be an IPv6 literal in brackets.  rediss:// is refused: the
 * Debian hiredis 0.14 has no TLS.  Returns 0, or -1 with a message.
 */
int
sbw_redis_url_parse(const char *url, sbw_redis_url_t *out, char *err,
    size_t errlen)
{
    int          is_unix;
    long         n;
    char        *end;
    size_t       len;
    const char  *p, *at, *colon, *q, *hs, *he, *name, *val;

    memset(out, 0, sizeof(*out));
    out->port = 6379;

    if (strncmp(url, "redis://", 8) == 0) {
        is_unix = 0;
        p = url + 8;

    } else if (strncmp(url, "redis+unix://", 13) == 0) {
        is_unix = 1;
        p = url + 13;

    } else if (strncmp(url, "unix://", 7) == 0) {
        is_unix = 1;
        p = url + 7;

    } else if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(err, errlen, "invalid REDIS_URL: rediss:// (TLS) is not "
                 "supported by this build");
        return -1;

    } else {
        snprintf(err, errlen, "invalid REDIS_URL: expected redis://, "
                 "redis+unix:// or unix://");
        return -1;
    }

    /* user information: up to the last '@' before any '/' or '?' */
    at = NULL;

    for (q = p; *q != '\0' && *q != '/' && *q != '?'; q++) {
        if (*q == '@') {
            at = q;
        }
    }

    if (at != NULL) {
        colon = memchr(p, ':', (size_t) (at - p));

        if (colon != NULL) {
            if (colon > p) {
                out->user = sbw_pct_decode(p, (size_t) (colon - p));
                if (out->user == NULL) {
                    goto bad_userinfo;
                }
            }

            out->password = sbw_pct_decode(colon + 1,
                                           (size_t) (at - colon - 1));
            if (out->password == NULL) {
                goto bad_userinfo;
            }

        } else if (at > p) {
            out->user = sbw_pct_decode(p, (size_t) (at - p));
            if (out->user == NULL) {
                goto bad_userinfo;
            }
        }

        p = at + 1;
    }

    q = strchr(p, '?');
    len = q ? (size_t) (q - p) : strlen(p);

    if (is_unix) {
        if (len == 0 || p[0] != '/') {
            snprintf(err, errlen, "invalid REDIS_URL: a unix socket URL "
                     "needs an absolute path (unix:///path/to/socket)");
            sbw_redis_url_free(out);
            return -1;
        }

        out->path = strndup(p, len);

    } else {
        hs = p;

        if (*hs == '[') {
            he = memchr(hs, ']', len);
            if (he == NULL) {
                goto bad_host;
            }

            out->host = strndup(hs + 1, (size_t) (he - hs - 1));
            he++;

        } else {
            he = hs;

            while (he < p + len && *he != ':' && *he != '/') {
                he++;
            }

            out->host = strndup(hs, (size_t) (he - hs));
        }

        if (out->host == NULL || out->host[0] == '\0') {
            goto bad_host;
        }

        if (he < p + len && *he == ':') {
            n = strtol(he + 1, &end, 10);

            if (end == he + 1 || n < 1 || n > 65535
                || (end < p + len && *end != '/'))
            {
                goto bad_host;
            }

            out->port = (int) n;
            he = end;
        }

        if (he < p + len && *he == '/') {
            he++;

            if (he < p + len) {
                n = strtol(he, &end, 10);

                if (end == he || end != p + len || n < 0 || n > 65535) {
                    snprintf(err, errlen, "invalid REDIS_URL: the database "
                             "after the host must be a number");
                    sbw_redis_url_free(out);
                    return -1;
                }

                out->db = (int) n;
            }

        } else if (he != p + len) {
            goto bad_host;
        }
    }

    /* query parameters: db=N and password=... */
    while (q != NULL && *q != '\0') {
        name = q + 1;
        q = strchr(name, '&');
        val = strchr(name, '=');

        if (val == NULL || (q != NULL && val > q)) {
            continue;
        }

        val++;
        len = q ? (size_t) (q - val) : strlen(val);

        if (strncmp(name, "db=", 3) == 0) {
            n = strtol(val, &end, 10);

            if (end == val || end != val + len || n < 0 || n > 65535) {
                snprintf(err, errlen, "invalid REDIS_URL: db= must be a "
                         "number");
                sbw_redis_url_free(out);
                return -1;
            }

            out->db = (int) n;

        } else if (strncmp(name, "password=", 9) == 0) {
            free(out->password);
            out->password = sbw_pct_decode(val, len);

            if (out->password == NULL) {
                goto bad_userinfo;
            }
        }
    }

    return 0;

bad_userinfo:

    snprintf(err, errlen, "invalid REDIS_URL: malformed user or password "
             "(percent-encode reserved characters)");
    sbw_redis_url_free(out);
    return -1;

bad_host:

    snprintf(err, errlen, "invalid REDIS_URL: expected host[:port][/db] "
             "after redis://");
    sbw_redis_url_free(out);
    return -1;
}


/*
 * DATABASE_URL in a form libpq accepts.  A SQLAlchemy-style scheme such
 * as "postgresql+psycopg2://" loses its "+driver" part; plain libpq URIs
 * (postgresql://, postgres://) and key=value strings pass unchanged.
 * Returns a new string, or NULL with a message.
 */
char *
sbw_database_url_normalize(const char *url, char *err, size_t errlen)
{
    char        *out;
    size_t       slen;
    const char  *sep, *plus;

    sep = strstr(url, "://");

    if (sep == NULL) {
        /* "host=... dbname=..." connection strings */
        if (strchr(url, '=') != NULL) {
            return strdup(url);
        }

        snprintf(err, errlen, "invalid DATABASE_URL: expected "
                 "postgresql://... or a libpq key=value string");
        return NULL;
    }

    plus = memchr(url, '+', (size_t) (sep - url));
    slen = plus ? (size_t) (plus - url) : (size_t) (sep - url);

    if (!((slen == 10 && strncmp(url, "postgresql", 10) == 0)
          || (slen == 8 && strncmp(url, "postgres", 8) == 0)))
    {
        snprintf(err, errlen, "invalid DATABASE_URL: scheme must be "
                 "postgresql:// or postgres:// (optionally +driver)");
        return NULL;
    }

    out = malloc(slen + strlen(sep) + 1);
    if (out == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    memcpy(out, url, slen);
    strcpy(out + slen, sep);

    return out;
}


/*
 * Build the variant id -> item number object from either shape:
 * an object {"45512345000080": "1936-S"} or the array of
 * fixtures/meta/variant-map.json ([{variant_id, bc_item_no}, ...],
 * entries whose bc_item_no is null are skipped).  NULL with a message
 * when the shape is wrong.
 */
json_t *
sbw_variant_map_from_json(const json_t *in, char *err, size_t errlen)
{
    char           key[32];
    size_t         i;
    json_t        *out;
    const char    *k;
    const json_t  *e, *vid, *no, *v;

    out = json_object();
    if (out == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    if (json_is_object(in)) {
        json_object_foreach((json_t *) in, k, v) {
            if (json_is_null(v)) {
                continue;
            }

            if (!json_is_string(v)) {
                snprintf(err, errlen, "value of variant \"%s\" is not a "
                         "string", k);
                json_decref(out);
                return NULL;
            }

            json_object_set(out, k, (json_t *) v);
        }

        return out;
    }

    if (!json_is_array(in)) {
        snprintf(err, errlen, "expected an object or an array");
        json_decref(out);
        return NULL;
    }

    json_array_foreach(in, i, e) {
        vid = json_object_get(e, "variant_id");
        no = json_object_get(e, "bc_item_no");

        if (!json_is_integer(vid)) {
            snprintf(err, errlen, "entry %zu has no integer variant_id",
                     i + 1);
            json_decref(out);
            return NULL;
        }

        if (!json_is_string(no) || json_string_length(no) == 0) {
            continue;
        }

        snprintf(key, sizeof(key), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(vid));
        json_object_set(out, key, (json_t *) no);
    }

    return out;
}


/*
 * A JSON object of strings from a setting's text (SKU_MAP_JSON), with
 * jansson's line/column in the message when it does not parse.
 */
static json_t *
sbw_load_string_map(sbw_env_t *e, const char *name, const char *text)
{
    json_t       *m, *v;
    const char   *k;
    json_error_t  jerr;

    m = json_loads(text, 0, &jerr);

    if (m == NULL) {
        sbw_env_fail(e, "invalid %s: line %d column %d: %s", name,
                     jerr.line, jerr.column, jerr.text);
        return NULL;
    }

    if (!json_is_object(m)) {
        sbw_env_fail(e, "invalid %s: expected a JSON object", name);
        json_decref(m);
        return NULL;
    }

    json_object_foreach(m, k, v) {
        if (!json_is_string(v)) {
            sbw_env_fail(e, "invalid %s: value of \"%s\" is not a string",
                         name, k);
            json_decref(m);
            return NULL;
        }
    }

    return m;
}


/*
 * METRICS_ADDR: "host:port", "[v6]:port", ":port" (loopback), or
 * "off"/"none"/"0" to disable the endpoint (host stays NULL).
 */
static int
sbw_parse_metrics_addr(const char *s, char **host, int *port)
{
    long         n;
    char        *end;
    const char  *colon;

    *host = NULL;
    *port = 0;

    if (strcmp(s, "off") == 0 || strcmp(s, "none") == 0
        || strcmp(s, "0") == 0)
    {
        return 0;
    }

    if (s[0] == '[') {
        colon = strstr(s, "]:");
        if (colon == NULL) {
            return -1;
        }

        *host = strndup(s + 1, (size_t) (colon - s - 1));
        colon++;

    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            return -1;
        }

        *host = (colon == s) ? strdup("127.0.0.1")
                             : strndup(s, (size_t) (colon - s));
    }

    n = strtol(colon + 1, &end, 10);

    if (*host == NULL || end == colon + 1 || *end != '\0' || n < 0
        || n > 65535)
    {
        free(*host);
        *host = NULL;
        return -1;
    }

    *port = (int) n;
    return 0;
}


/*
 * Read every setting.  Returns 0, or SBW_EXIT_CONFIG with a single line
 * in err naming the missing required settings or the malformed one.
 */
int
sbw_config_load(sbw_config_t *c, sbw_getenv_pt get, void *ctx, char *err,
    size_t errlen)
{
    char          host[256], msg[256], missing[512];
    int64_t       cents;
    json_t       *vm, *parsed;
    size_t        i;
    sbw_env_t     e;
    const char   *v, *text;
    json_error_t  jerr;

    static const char *const  required[] = {
        "DATABASE_URL", "BC365_TENANT_ID", "BC365_CLIENT_ID",
        "BC365_CLIENT_SECRET", "BC365_COMPANY_ID", "BC365_SHIPPING_ACCOUNT"
    };

    memset(c, 0, sizeof(*c));
    memset(&e, 0, sizeof(e));
    e.get = get;
    e.ctx = ctx;
    e.err = msg;
    e.errlen = sizeof(msg);
    msg[0] = '\0';
    missing[0] = '\0';

    for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (sbw_env(&e, required[i]) == NULL) {
            if (missing[0] != '\0') {
                strncat(missing, ", ", sizeof(missing) - strlen(missing) - 1);
            }

            strncat(missing, required[i],
                    sizeof(missing) - strlen(missing) - 1);
        }
    }

    if (missing[0] != '\0') {
        snprintf(err, errlen, "missing required settings: %s", missing);
        return SBW_EXIT_CONFIG;
    }

    /* Redis */
    v = sbw_env(&e, "REDIS_URL");

    if (sbw_redis_url_parse(v ? v : SBW_DEFAULT_REDIS_URL, &c->redis, msg,
                            sizeof(msg)) != 0)
    {
        e.bad = 1;
    }

    /* PostgreSQL */
    if (!e.bad) {
        c->database_url = sbw_database_url_normalize(sbw_env(&e,
                                                     "DATABASE_URL"),
                                                     msg, sizeof(msg));
        if (c->database_url == NULL) {
            e.bad = 1;
        }
    }

    /* mapping tables */
    text = sbw_env(&e, "SKU_MAP_JSON");
    c->sku_map = text ? sbw_load_string_map(&e, "SKU_MAP_JSON", text)
                      : json_object();

    c->variant_map = json_object();

    text = sbw_env(&e, "VARIANT_MAP_FILE");

    if (text != NULL && !e.bad) {
        parsed = json_load_file(text, 0, &jerr);

        if (parsed == NULL) {
            sbw_env_fail(&e, "invalid VARIANT_MAP_FILE: %s: line %d "
                         "column %d: %s", text, jerr.line, jerr.column,
                         jerr.text);

        } else {
            vm = sbw_variant_map_from_json(parsed, err, errlen);

            if (vm == NULL) {
                sbw_env_fail(&e, "invalid VARIANT_MAP_FILE: %s", err);

            } else {
                json_object_update(c->variant_map, vm);
                json_decref(vm);
            }

            json_decref(parsed);
        }
    }

    text = sbw_env(&e, "VARIANT_MAP_JSON");

    if (text != NULL && !e.bad) {
        parsed = json_loads(text, 0, &jerr);

        if (parsed == NULL) {
            sbw_env_fail(&e, "invalid VARIANT_MAP_JSON: line %d column %d:"
                         " %s", jerr.line, jerr.column, jerr.text);

        } else {
            vm = sbw_variant_map_from_json(parsed, err, errlen);

            if (vm == NULL) {
                sbw_env_fail(&e, "invalid VARIANT_MAP_JSON: %s", err);

            } else {
                json_object_update(c->variant_map, vm);
                json_decref(vm);
            }

            json_decref(parsed);
        }
    }

    /* Business Central and Entra */
    c->tenant = sbw_env_str(&e, "BC365_TENANT_ID", NULL);
    c->client_id = sbw_env_str(&e, "BC365_CLIENT_ID", NULL);
    c->client_secret = sbw_env_str(&e, "BC365_CLIENT_SECRET", NULL);
    c->company_id = sbw_env_str(&e, "BC365_COMPANY_ID", NULL);
    c->environment = sbw_env_str(&e, "BC365_ENVIRONMENT", "production");
    c->api_base = sbw_strip_slash(sbw_env_str(&e, "BC365_API_BASE",
                                              SBW_DEFAULT_API_BASE));
    c->auth_base = sbw_strip_slash(sbw_env_str(&e, "BC365_AUTH_BASE",
                                               SBW_DEFAULT_AUTH_BASE));
    c->scope = sbw_env_str(&e, "BC365_SCOPE", SBW_DEFAULT_SCOPE);
    c->default_customer = sbw_env_str(&e, "BC365_DEFAULT_CUSTOMER", "WEB");
    c->shipping_account = sbw_env_str(&e, "BC365_SHIPPING_ACCOUNT", NULL);
    c->tip_account = sbw_env_str(&e, "BC365_TIP_ACCOUNT", NULL);
    c->gift_card_account = sbw_env_str(&e, "BC365_GIFT_CARD_ACCOUNT", NULL);
    c->custom_line_account = sbw_env_str(&e, "BC365_CUSTOM_LINE_ACCOUNT",
                                         NULL);

    c->connect_timeout_ms = sbw_env_long(&e, "BC365_CONNECT_TIMEOUT_MS",
                                         5000, 100, 600000);
    c->timeout_ms = sbw_env_long(&e, "BC365_TIMEOUT_MS", 60000, 500,
                                 3600000);
    c->bc_max_concurrent = (int) sbw_env_long(&e, "BC365_MAX_CONCURRENT", 8,
                                              1, 100);
    c->rate_requests = (int) sbw_env_long(&e, "BC365_RATE_LIMIT_REQUESTS",
                                          6000, 0, 1000000);
    c->rate_window_ms = sbw_env_long(&e, "BC365_RATE_LIMIT_WINDOW_MS",
                                     301000, 1, 86400000);

    /* stream */
    c->stream_key = sbw_env_str(&e, "STREAM_KEY", "shopify:webhooks");
    c->group = sbw_env_str(&e, "STREAM_GROUP", "bc-sync");

    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0') {
        strcpy(host, "worker");
    }

    host[sizeof(host) - 1] = '\0';
    c->worker_name = sbw_env_str(&e, "WORKER_NAME", host);

    c->concurrency = (int) sbw_env_long(&e, "WORKER_CONCURRENCY", 10, 1, 64);
    c->stream_batch = (int) sbw_env_long(&e, "STREAM_BATCH", 1, 1, 1000);
    c->retry_queue_max = (int) sbw_env_long(&e, "RETRY_QUEUE_MAX", 32, 1,
                                            100000);
    c->redis_timeout_ms = sbw_env_long(&e, "REDIS_TIMEOUT_MS", 5000, 100,
                                       600000);
    c->block_ms = sbw_env_long(&e, "STREAM_BLOCK_MS", 2000, 1, 600000);
    c->claim_idle_ms = sbw_env_long(&e, "CLAIM_MIN_IDLE_MS", 300000, 1000,
                                    86400000);
    c->claim_interval_ms = sbw_env_long(&e, "CLAIM_INTERVAL_MS", 30000, 100,
                                        86400000);
    c->trim_interval_ms = sbw_env_long(&e, "TRIM_INTERVAL_MS", 60000, 0,
                                       86400000);
    c->retry_base_ms = sbw_env_long(&e, "RETRY_BASE_MS", 500, 1, 3600000);
    c->retry_max_ms = sbw_env_long(&e, "RETRY_MAX_MS", 60000, 1, 86400000);
    c->retry_after_max_ms = sbw_env_long(&e, "RETRY_AFTER_MAX_MS", 120000,
                                         0, 86400000);

    /* failures and recovery (dlq.c, dupcheck.c) */
    c->indoubt_wait_ms = sbw_env_long(&e, "BC365_INDOUBT_WAIT_MS", 660000,
                                      0, 86400000);
    c->max_deliveries = (int) sbw_env_long(&e, "MAX_DELIVERIES", 10, 0,
                                           1000000);
    c->dup_check_interval_ms = sbw_env_long(&e, "DUPLICATE_CHECK_INTERVAL_MS",
                                            600000, 0, 86400000);
    c->dup_remove = (int) sbw_env_long(&e, "DUPLICATE_REMOVE", 1, 0, 1);

    v = sbw_env(&e, "BC365_CUSTOMER_STRATEGY");
    c->customer_strategy = SBW_CUSTOMER_EMAIL;

    if (v != NULL) {
        if (strcmp(v, "default") == 0) {
            c->customer_strategy = SBW_CUSTOMER_DEFAULT;

        } else if (strcmp(v, "create") == 0) {
            c->customer_strategy = SBW_CUSTOMER_CREATE;

        } else if (strcmp(v, "email") != 0) {
            sbw_env_fail(&e, "invalid BC365_CUSTOMER_STRATEGY: \"%s\" "
                         "(default, email or create)", v);
        }
    }

    /* order sync: companies per shop, money, tax (orders_sync.c) */
    text = sbw_env(&e, "BC365_COMPANIES");
    c->companies = text ? sbw_load_string_map(&e, "BC365_COMPANIES", text)
                        : json_object();

    if (c->companies != NULL && !e.bad
        && sbw_companies_check(c->companies, msg, sizeof(msg)) != 0)
    {
        e.bad = 1;
    }

    if (c->company_id != NULL && !e.bad && !sbw_is_guid(c->company_id)) {
        sbw_env_fail(&e, "invalid BC365_COMPANY_ID: \"%s\" (the company's "
                     "id, a GUID, as GET .../companies lists it)",
                     c->company_id);
    }

    if (!e.bad && c->retry_max_ms < c->retry_base_ms) {
        sbw_env_fail(&e, "invalid RETRY_MAX_MS: %ld is less than "
                     "RETRY_BASE_MS %ld", c->retry_max_ms,
                     c->retry_base_ms);
    }

    if (c->api_base != NULL && !e.bad
        && strncmp(c->api_base, "https://", 8) != 0
        && strncmp(c->api_base, "http://", 7) != 0)
    {
        sbw_env_fail(&e, "invalid BC365_API_BASE: \"%s\" (an http:// or "
                     "https:// URL)", c->api_base);
    }

    c->rounding_account = sbw_env_str(&e, "BC365_ROUNDING_ACCOUNT", NULL);
    c->tax_account = sbw_env_str(&e, "BC365_TAX_ACCOUNT", NULL);
    c->nontaxable_code = sbw_env_str(&e, "BC365_NONTAXABLE_TAX_CODE",
                                     "NONTAXABLE");

    v = sbw_env(&e, "BC365_ORDER_MONEY");
    c->order_money = SBW_MONEY_SHOP;

    if (v != NULL && strcmp(v, "presentment") == 0) {
        c->order_money = SBW_MONEY_PRESENTMENT;

    } else if (v != NULL && strcmp(v, "shop") != 0) {
        sbw_env_fail(&e, "invalid BC365_ORDER_MONEY: \"%s\" (shop or "
                     "presentment)", v);
    }

    v = sbw_env(&e, "BC365_TAX_POLICY");
    c->tax_policy = SBW_TAX_VARIANCE;

    if (v != NULL && strcmp(v, "line") == 0) {
        c->tax_policy = SBW_TAX_LINE;

    } else if (v != NULL && strcmp(v, "variance") != 0) {
        sbw_env_fail(&e, "invalid BC365_TAX_POLICY: \"%s\" (variance or "
                     "line)", v);
    }

    if (c->tax_policy == SBW_TAX_LINE && c->tax_account == NULL && !e.bad) {
        sbw_env_fail(&e, "BC365_TAX_POLICY=line needs BC365_TAX_ACCOUNT");
    }

    v = sbw_env(&e, "BC365_TAX_TOLERANCE");
    c->tax_tolerance = -1;

    if (v != NULL && strcmp(v, "auto") != 0) {
        if (sbw_money_parse(v, &cents) != 0 || cents < 0
            || cents > 100000)
        {
            sbw_env_fail(&e, "invalid BC365_TAX_TOLERANCE: \"%s\" (auto, "
                         "or an amount from 0.00 to 1000.00)", v);

        } else {
            c->tax_tolerance = (long) cents;
        }
    }

    /* observability */
    v = sbw_env(&e, "LOG_LEVEL");
    c->log_level = SBW_LOG_INFO;

    if (v != NULL) {
        c->log_level = sbw_log_level_parse(v);

        if (c->log_level < 0) {
            sbw_env_fail(&e, "invalid LOG_LEVEL: \"%s\" (debug, info, warn "
                         "or error)", v);
            c->log_level = SBW_LOG_INFO;
        }
    }

    v = sbw_env(&e, "METRICS_ADDR");

    if (sbw_parse_metrics_addr(v ? v : "127.0.0.1:9101", &c->metrics_host,
                               &c->metrics_port) != 0)
    {
        sbw_env_fail(&e, "invalid METRICS_ADDR: \"%s\" (host:port or off)",
                     v);
    }

    if (!e.bad
        && (c->environment == NULL || c->api_base == NULL
            || c->auth_base == NULL || c->scope == NULL
            || c->default_customer == NULL || c->stream_key == NULL
            || c->group == NULL || c->worker_name == NULL
            || c->sku_map == NULL
            || c->variant_map == NULL || c->tenant == NULL
            || c->companies == NULL || c->nontaxable_code == NULL
            || c->client_id == NULL || c->client_secret == NULL
            || c->company_id == NULL || c->shipping_account == NULL))
    {
        sbw_env_fail(&e, "out of memory reading settings");
    }

    if (e.bad) {
        snprintf(err, errlen, "%s", msg);
        sbw_config_free(c);
        return SBW_EXIT_CONFIG;
    }

    return 0;
}


/*
 * Release every setting; the structure is zeroed and may be loaded
 * again.
 */
void
sbw_config_free(sbw_config_t *c)
{
    sbw_redis_url_free(&c->redis);
    json_decref(c->sku_map);
    json_decref(c->variant_map);
    json_decref(c->companies);
    free(c->rounding_account);
    free(c->tax_account);
    free(c->nontaxable_code);

    free(c->database_url);
    free(c->tenant);
    free(c->client_id);
    free(c->client_secret);
    free(c->environment);
    free(c->company_id);
    free(c->api_base);
    free(c->auth_base);
    free(c->scope);
    free(c->default_customer);
    free(c->shipping_account);
    free(c->tip_account);
    free(c->gift_card_account);
    free(c->custom_line_account);
    free(c->stream_key);
    free(c->group);
    free(c->worker_name);
    free(c->metrics_host);

    memset(c, 0, sizeof(*c));
}
