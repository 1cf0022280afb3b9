/*
 * Shopify app settings (see shopify_conf.h).  Problems are reported the
 * way config.c reports them: missing required names first, all of them,
 * else the first malformed value.
 */

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "shopify_conf.h"


/* topics an app cannot subscribe to through the API (app configuration) */
static const char  *sbw_compliance_topics[] = {
    "customers/data_request", "customers/redact", "shop/redact", NULL
};


typedef struct {
    sbw_getenv_pt   get;
    void           *ctx;
    char           *err;
    size_t          errlen;
    int             bad;
} sbw_senv_t;


static const char *sbw_senv(sbw_senv_t *e, const char *name);
static void sbw_senv_fail(sbw_senv_t *e, const char *fmt, ...);
static long sbw_senv_long(sbw_senv_t *e, const char *name, long def,
    long min, long max);
static char *sbw_read_first_line(const char *path);
static int sbw_split_list(const char *text, char ***out, size_t *n);
static int sbw_cmp_str(const void *a, const void *b);


static const char *
sbw_senv(sbw_senv_t *e, const char *name)
{
    const char  *v;

    v = e->get(name, e->ctx);

    return (v == NULL || *v == '\0') ? NULL : v;
}


static void
sbw_senv_fail(sbw_senv_t *e, const char *fmt, ...)
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


static long
sbw_senv_long(sbw_senv_t *e, const char *name, long def, long min, long max)
{
    char        *end;
    long         n;
    const char  *v;

    v = sbw_senv(e, name);

    if (v == NULL) {
        return def;
    }

    n = strtol(v, &end, 10);

    if (end == v || *end != '\0' || n < min || n > max) {
        sbw_senv_fail(e, "invalid %s: \"%s\" (an integer from %ld to %ld)",
                      name, v, min, max);
        return def;
    }

    return n;
}


/*
 * The first line of a file, without its line end; NULL when the file
 * cannot be read or the line is empty.
 */
static char *
sbw_read_first_line(const char *path)
{
    FILE    *f;
    char     buf[1024];
    size_t   n;

    f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }

    if (fgets(buf, sizeof(buf), f) == NULL) {
        fclose(f);
        return NULL;
    }

    fclose(f);

    n = strcspn(buf, "\r\n");
    buf[n] = '\0';

    if (n == 0) {
        return NULL;
    }

    return strdup(buf);
}


static int
sbw_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/*
 * A comma-separated list, items trimmed, empty items skipped.
 */
static int
sbw_split_list(const char *text, char ***out, size_t *n)
{
    char        **v, **nv;
    size_t        len, cap;
    const char   *p, *s, *t;

    *out = NULL;
    *n = 0;
    v = NULL;
    cap = 0;

    for (p = text; p != NULL && *p != '\0'; ) {
        s = p;
        t = strchr(p, ',');
        len = t ? (size_t) (t - s) : strlen(s);
        p = t ? t + 1 : NULL;

        while (len > 0 && isspace((unsigned char) *s)) {
            s++;
            len--;
        }

        while (len > 0 && isspace((unsigned char) s[len - 1])) {
            len--;
        }

        if (len == 0) {
            continue;
        }

        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            nv = realloc(v, cap * sizeof(char *));
            if (nv == NULL) {
                goto nomem;
            }

            v = nv;
        }

        v[*n] = strndup(s, len);
        if (v[*n] == NULL) {
            goto nomem;
        }

        (*n)++;
    }

    *out = v;
    return 0;

nomem:

    while (*n > 0) {
        free(v[--(*n)]);
    }

    free(v);
    return -1;
}


/*
 * A shop domain as Shopify spells it, <name>.myshopify.com, in lower
 * case into out.  Returns 0, or -1 for anything else (ports, schemes,
 * paths, other hosts, NULs cannot get through).
 */
int
sbw_shop_domain_normalize(const char *in, char *out, size_t outlen)
{
    size_t       i, n, name;
    static const char  suffix[] = ".myshopify.com";

    if (in == NULL) {
        return -1;
    }

    n = strlen(in);

    if (n <= sizeof(suffix) - 1 || n >= outlen) {
        return -1;
    }

    name = n - (sizeof(suffix) - 1);

    if (strcasecmp(in + name, suffix) != 0
        || !isalnum((unsigned char) in[0]))
    {
        return -1;
    }

    for (i = 0; i < name; i++) {
        if (!isalnum((unsigned char) in[i]) && in[i] != '-') {
            return -1;
        }
    }

    for (i = 0; i <= n; i++) {
        out[i] = (char) tolower((unsigned char) in[i]);
    }

    return 0;
}


/*
 * A webhook topic ("orders/create") as GraphQL's WebhookSubscriptionTopic
 * enum value ("ORDERS_CREATE").  Returns 0, or -1 if it is not of the
 * form word/word in lower case letters and underscores.
 */
int
sbw_shopify_topic_enum(const char *topic, char *out, size_t outlen)
{
    size_t       i, n, slashes;

    n = strlen(topic);

    if (n == 0 || n >= outlen || topic[0] == '/' || topic[n - 1] == '/') {
        return -1;
    }

    slashes = 0;

    for (i = 0; i < n; i++) {
        if (topic[i] == '/') {
            slashes++;
            out[i] = '_';

        } else if (islower((unsigned char) topic[i]) || topic[i] == '_') {
            out[i] = (char) toupper((unsigned char) topic[i]);

        } else {
            return -1;
        }
    }

    out[n] = '\0';

    return slashes == 1 ? 0 : -1;
}


/*
 * Whether a topic, as an enum value, is one of the configured ones.
 */
int
sbw_shopify_topic_wanted(const sbw_shopify_conf_t *c, const char *topic_enum)
{
    char    e[128];
    size_t  i;

    for (i = 0; i < c->ntopics; i++) {
        if (sbw_shopify_topic_enum(c->topics[i], e, sizeof(e)) == 0
            && strcmp(e, topic_enum) == 0)
        {
            return 1;
        }
    }

    return 0;
}


int
sbw_shopify_is_cc_shop(const sbw_shopify_conf_t *c, const char *shop)
{
    size_t  i;

    for (i = 0; i < c->ncc_shops; i++) {
        if (strcmp(c->cc_shops[i], shop) == 0) {
            return 1;
        }
    }

    return 0;
}


int
sbw_shopify_conf_load(sbw_shopify_conf_t *c, sbw_getenv_pt get, void *ctx,
    char *err, size_t errlen)
{
    char         missing[256], e_buf[128], shop[SBW_SHOP_DOMAIN_BUFLEN];
    size_t       i, j;
    const char  *v, *file;
    sbw_senv_t   e;

    memset(c, 0, sizeof(*c));
    e.get = get;
    e.ctx = ctx;
    e.err = err;
    e.errlen = errlen;
    e.bad = 0;
    missing[0] = '\0';

    v = sbw_senv(&e, "SHOPIFY_TOKEN_KEY");

    if (v != NULL) {
        if (sbw_token_key_parse(v, c->key) != 0) {
            sbw_senv_fail(&e, "invalid SHOPIFY_TOKEN_KEY: expected 64 hex "
                          "characters (32 bytes)");

        } else {
            c->have_key = 1;
        }
    }

    v = sbw_senv(&e, "SHOPIFY_CLIENT_ID");
    c->enabled = v != NULL;
    c->client_id = v ? strdup(v) : NULL;

    v = sbw_senv(&e, "SHOPIFY_CLIENT_SECRET");
    file = sbw_senv(&e, "SHOPIFY_CLIENT_SECRET_FILE");

    if (v != NULL) {
        c->client_secret = strdup(v);

    } else if (file != NULL) {
        c->client_secret = sbw_read_first_line(file);

        if (c->client_secret == NULL) {
            sbw_senv_fail(&e, "invalid SHOPIFY_CLIENT_SECRET_FILE: cannot "
                          "read a secret from \"%s\"", file);
        }
    }

    v = sbw_senv(&e, "SHOPIFY_WEBHOOK_CALLBACK_URL");

    if (v != NULL) {
        if (strncmp(v, "https://", 8) != 0 || strlen(v) <= 8
            || strpbrk(v, " \t\r\n\"") != NULL)
        {
            sbw_senv_fail(&e, "invalid SHOPIFY_WEBHOOK_CALLBACK_URL: \"%s\" "
                          "(Shopify delivers to https:// URLs only)", v);
        }

        c->callback_url = strdup(v);
    }

    if (c->enabled) {
        if (c->client_secret == NULL && file == NULL) {
            strcat(missing, "SHOPIFY_CLIENT_SECRET");
        }

        if (!c->have_key && sbw_senv(&e, "SHOPIFY_TOKEN_KEY") == NULL) {
            strcat(missing, missing[0] ? ", SHOPIFY_TOKEN_KEY"
                                       : "SHOPIFY_TOKEN_KEY");
        }

        if (c->callback_url == NULL) {
            strcat(missing, missing[0] ? ", SHOPIFY_WEBHOOK_CALLBACK_URL"
                                       : "SHOPIFY_WEBHOOK_CALLBACK_URL");
        }
    }

    if (missing[0] != '\0') {
        snprintf(err, errlen, "missing required settings: %s", missing);
        sbw_shopify_conf_free(c);
        return -1;
    }

    v = sbw_senv(&e, "SHOPIFY_API_VERSION");
    v = v ? v : SBW_SHOPIFY_DEFAULT_API_VERSION;

    if (strlen(v) != 7 || !isdigit((unsigned char) v[0])
        || !isdigit((unsigned char) v[1]) || !isdigit((unsigned char) v[2])
        || !isdigit((unsigned char) v[3]) || v[4] != '-'
        || !isdigit((unsigned char) v[5]) || !isdigit((unsigned char) v[6]))
    {
        sbw_senv_fail(&e, "invalid SHOPIFY_API_VERSION: \"%s\" (YYYY-MM)",
                      v);
    }

    c->api_version = strdup(v);

    v = sbw_senv(&e, "SHOPIFY_WEBHOOK_TOPICS");
    v = v ? v : SBW_SHOPIFY_DEFAULT_TOPICS;

    if (sbw_split_list(v, &c->topics, &c->ntopics) != 0) {
        sbw_senv_fail(&e, "out of memory reading settings");
    }

    for (i = 0; i < c->ntopics; i++) {
        if (sbw_shopify_topic_enum(c->topics[i], e_buf, sizeof(e_buf))
            != 0)
        {
            sbw_senv_fail(&e, "invalid SHOPIFY_WEBHOOK_TOPICS: \"%s\" is "
                          "not a topic (such as orders/create)",
                          c->topics[i]);
        }

        for (j = 0; sbw_compliance_topics[j] != NULL; j++) {
            if (strcmp(c->topics[i], sbw_compliance_topics[j]) == 0) {
                sbw_senv_fail(&e, "invalid SHOPIFY_WEBHOOK_TOPICS: %s is a "
                              "privacy topic, set in the app's "
                              "configuration, not through the API",
                              c->topics[i]);
            }
        }
    }

    qsort(c->topics, c->ntopics, sizeof(char *), sbw_cmp_str);

    for (i = 1; i < c->ntopics; i++) {
        if (strcmp(c->topics[i - 1], c->topics[i]) == 0) {
            sbw_senv_fail(&e, "invalid SHOPIFY_WEBHOOK_TOPICS: %s is "
                          "listed twice", c->topics[i]);
        }
    }

    v = sbw_senv(&e, "SHOPIFY_CLIENT_CREDENTIALS_SHOPS");

    if (v != NULL && sbw_split_list(v, &c->cc_shops, &c->ncc_shops) != 0) {
        sbw_senv_fail(&e, "out of memory reading settings");
    }

    for (i = 0; i < c->ncc_shops; i++) {
        if (sbw_shop_domain_normalize(c->cc_shops[i], shop, sizeof(shop))
            != 0)
        {
            sbw_senv_fail(&e, "invalid SHOPIFY_CLIENT_CREDENTIALS_SHOPS: "
                          "\"%s\" is not a <name>.myshopify.com domain",
                          c->cc_shops[i]);
            continue;
        }

        strcpy(c->cc_shops[i], shop);
    }

    if (c->ncc_shops > 0 && !c->enabled) {
        sbw_senv_fail(&e, "invalid SHOPIFY_CLIENT_CREDENTIALS_SHOPS: needs "
                      "SHOPIFY_CLIENT_ID");
    }

    v = sbw_senv(&e, "SHOPIFY_CONNECT_TO");

    if (v != NULL) {
        if (strchr(v, ':') == NULL || strpbrk(v, " /") != NULL) {
            sbw_senv_fail(&e, "invalid SHOPIFY_CONNECT_TO: \"%s\" "
                          "(host:port)", v);
        }

        c->connect_to = strdup(v);
    }

    v = sbw_senv(&e, "SHOPIFY_CA_FILE");
    c->ca_file = v ? strdup(v) : NULL;

    c->refresh_margin_ms = 1000 * sbw_senv_long(&e, "SHOPIFY_REFRESH_MARGIN_S",
                                                300, 0, 86400);
    c->maintenance_ms = sbw_senv_long(&e, "SHOPIFY_MAINTENANCE_INTERVAL_MS",
                                      30000, 50, 86400000);
    c->connect_timeout_ms = sbw_senv_long(&e, "SHOPIFY_CONNECT_TIMEOUT_MS",
                                          5000, 100, 600000);
    c->timeout_ms = sbw_senv_long(&e, "SHOPIFY_TIMEOUT_MS", 30000, 100,
                                  600000);
    c->throttle_max_wait_ms = sbw_senv_long(&e,
                                            "SHOPIFY_THROTTLE_MAX_WAIT_MS",
                                            60000, 0, 3600000);
    c->retention_days = sbw_senv_long(&e, "PAYLOAD_RETENTION_DAYS", 30, 0,
                                      36500);
    c->purge_interval_ms = sbw_senv_long(&e, "PURGE_INTERVAL_MS", 3600000,
                                         50, 86400000);

    if (c->api_version == NULL
        || (c->enabled && c->client_id == NULL))
    {
        sbw_senv_fail(&e, "out of memory reading settings");
    }

    if (e.bad) {
        sbw_shopify_conf_free(c);
        return -1;
    }

    return 0;
}


void
sbw_shopify_conf_free(sbw_shopify_conf_t *c)
{
    size_t  i;

    if (c->client_secret != NULL) {
        OPENSSL_cleanse(c->client_secret, strlen(c->client_secret));
    }

    free(c->client_id);
    free(c->client_secret);
    free(c->api_version);
    free(c->callback_url);
    free(c->connect_to);
    free(c->ca_file);

    for (i = 0; i < c->ntopics; i++) {
        free(c->topics[i]);
    }

    for (i = 0; i < c->ncc_shops; i++) {
        free(c->cc_shops[i]);
    }

    free(c->topics);
    free(c->cc_shops);

    OPENSSL_cleanse(c->key, sizeof(c->key));
    memset(c, 0, sizeof(*c));
}
