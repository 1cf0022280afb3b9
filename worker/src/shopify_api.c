/*
 * Shop endpoints over libcurl (see shopify_api.h).  Nothing here logs:
 * the callers do, without tokens.  Request bodies and headers that held
 * a secret are wiped before they are freed.
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "shopify_api.h"


/* answers larger than this are not parsed */
#define SBW_SHOPIFY_MAX_BODY  (8 * 1024 * 1024)


typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
    int      overflow;
} sbw_shopify_buf_t;


static size_t sbw_shopify_write(char *ptr, size_t size, size_t nmemb,
    void *ud);
static size_t sbw_shopify_header(char *ptr, size_t size, size_t nmemb,
    void *ud);
static int sbw_shopify_post(sbw_shopify_t *s, const char *shop,
    const char *path, const char *ctype, const char *token,
    const char *body, sbw_shopify_res_t *res);
static int sbw_shopify_token_post(sbw_shopify_t *s, const char *shop,
    const char *grant, const char *refresh_token, sbw_shopify_res_t *res);
static void sbw_wipe_free(char *s);


static void
sbw_wipe_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}


int
sbw_shopify_init(sbw_shopify_t *s, const sbw_shopify_conf_t *conf)
{
    char  entry[300];

    memset(s, 0, sizeof(*s));
    s->conf = conf;

    s->curl = curl_easy_init();
    if (s->curl == NULL) {
        return -1;
    }

    if (conf->connect_to != NULL) {
        /* any host, any port: every connection goes there */
        snprintf(entry, sizeof(entry), "::%s", conf->connect_to);
        s->connect_to = curl_slist_append(NULL, entry);

        if (s->connect_to == NULL) {
            curl_easy_cleanup(s->curl);
            s->curl = NULL;
            return -1;
        }
    }

    return 0;
}


void
sbw_shopify_cleanup(sbw_shopify_t *s)
{
    if (s->curl != NULL) {
        curl_easy_cleanup(s->curl);
    }

    curl_slist_free_all(s->connect_to);
    memset(s, 0, sizeof(*s));
}


void
sbw_shopify_res_clear(sbw_shopify_res_t *r)
{
    json_decref(r->body);
    memset(r, 0, sizeof(*r));
    r->retry_after_ms = -1;
}


static size_t
sbw_shopify_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    size_t              n, ncap;
    char               *nd;
    sbw_shopify_buf_t  *b;

    b = ud;
    n = size * nmemb;

    if (b->len + n + 1 > SBW_SHOPIFY_MAX_BODY) {
        b->overflow = 1;
        return n;
    }

    if (b->len + n + 1 > b->cap) {
        ncap = b->cap ? b->cap : 4096;

        while (ncap < b->len + n + 1) {
            ncap *= 2;
        }

        nd = realloc(b->data, ncap);
        if (nd == NULL) {
            return 0;
        }

        b->data = nd;
        b->cap = ncap;
    }

    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';

    return n;
}


/*
 * Retry-After (seconds) of a 429 or 503.
 */
static size_t
sbw_shopify_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    long    *retry_after_ms;
    char     num[32];
    size_t   n, i, j;

    retry_after_ms = ud;
    n = size * nmemb;

    if (n > 12 && strncasecmp(ptr, "Retry-After:", 12) == 0) {
        for (i = 12; i < n && (ptr[i] == ' ' || ptr[i] == '\t'); i++) {
            /* void */
        }

        for (j = 0; i < n && isdigit((unsigned char) ptr[i])
                    && j < sizeof(num) - 1; i++, j++)
        {
            num[j] = ptr[i];
        }

        num[j] = '\0';

        if (j > 0 && j < 7) {
            *retry_after_ms = strtol(num, NULL, 10) * 1000;
        }
    }

    return n;
}


/*
 * POST https://<shop><path>.  Returns 0 when an HTTP answer came (any
 * status), -1 when none did (res->error says why).
 */
static int
sbw_shopify_post(sbw_shopify_t *s, const char *shop, const char *path,
    const char *ctype, const char *token, const char *body,
    sbw_shopify_res_t *res)
{
    int                 rc;
    char                url[600], ct[100], *auth;
    size_t              alen;
    const char         *m;
    json_t             *err;
    sbw_shopify_buf_t   buf;
    struct curl_slist  *hdrs, *h;

    sbw_shopify_res_clear(res);
    memset(&buf, 0, sizeof(buf));
    hdrs = NULL;
    auth = NULL;

    snprintf(url, sizeof(url), "https://%s%s", shop, path);
    snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);

    h = curl_slist_append(NULL, ct);
    if (h == NULL) {
        goto nomem;
    }

    hdrs = h;

    h = curl_slist_append(hdrs, "Accept: application/json");
    if (h == NULL) {
        goto nomem;
    }

    if (token != NULL) {
        alen = strlen(token) + sizeof("X-Shopify-Access-Token: ");
        auth = malloc(alen);
        if (auth == NULL) {
            goto nomem;
        }

        snprintf(auth, alen, "X-Shopify-Access-Token: %s", token);

        h = curl_slist_append(hdrs, auth);
        if (h == NULL) {
            goto nomem;
        }
    }

    curl_easy_reset(s->curl);
    curl_easy_setopt(s->curl, CURLOPT_URL, url);
    curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS,
                     s->conf->connect_timeout_ms);
    curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, s->conf->timeout_ms);
    curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(s->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
    curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, sbw_shopify_write);
    curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(s->curl, CURLOPT_HEADERFUNCTION, sbw_shopify_header);
    curl_easy_setopt(s->curl, CURLOPT_HEADERDATA, &res->retry_after_ms);
    curl_easy_setopt(s->curl, CURLOPT_USERAGENT, "shopify-bc-worker/1.0");
    curl_easy_setopt(s->curl, CURLOPT_PROTOCOLS_STR, "https");

    if (s->connect_to != NULL) {
        curl_easy_setopt(s->curl, CURLOPT_CONNECT_TO, s->connect_to);
    }

    if (s->conf->ca_file != NULL) {
        curl_easy_setopt(s->curl, CURLOPT_CAINFO, s->conf->ca_file);
    }

    rc = (int) curl_easy_perform(s->curl);

    /* the slist holds its own copy of the header: wipe it too */
    for (h = hdrs; h != NULL; h = h->next) {
        OPENSSL_cleanse(h->data, strlen(h->data));
    }

    curl_slist_free_all(hdrs);
    sbw_wipe_free(auth);

    res->curl_code = rc;

    if (rc != CURLE_OK) {
        snprintf(res->error, sizeof(res->error), "%s",
                 curl_easy_strerror((CURLcode) rc));
        free(buf.data);
        return -1;
    }

    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &res->status);

    if (buf.data != NULL && !buf.overflow) {
        res->body = json_loadb(buf.data, buf.len, 0, NULL);
    }

    if (buf.data != NULL) {
        OPENSSL_cleanse(buf.data, buf.len);
        free(buf.data);
    }

    if (res->status >= 400) {
        err = json_object_get(res->body, "error");
        m = json_string_value(err);

        if (m != NULL) {
            snprintf(res->oauth_error, sizeof(res->oauth_error), "%s", m);
        }

        m = json_string_value(json_object_get(res->body,
                                              "error_description"));
        if (m == NULL) {
            m = json_string_value(json_object_get(res->body, "errors"));
        }

        snprintf(res->error, sizeof(res->error), "HTTP %ld%s%s%s%s",
                 res->status, res->oauth_error[0] ? " " : "",
                 res->oauth_error, m ? ": " : "", m ? m : "");
    }

    return 0;

nomem:

    curl_slist_free_all(hdrs);
    sbw_wipe_free(auth);
    snprintf(res->error, sizeof(res->error), "out of memory");
    return -1;
}


/*
 * POST /admin/oauth/access_token, form-encoded, with the app's
 * credentials.
 */
static int
sbw_shopify_token_post(sbw_shopify_t *s, const char *shop,
    const char *grant, const char *refresh_token, sbw_shopify_res_t *res)
{
    int      rc;
    char    *body, *id, *secret, *rt;
    size_t   len;

    id = curl_easy_escape(s->curl, s->conf->client_id, 0);
    secret = curl_easy_escape(s->curl, s->conf->client_secret, 0);
    rt = refresh_token ? curl_easy_escape(s->curl, refresh_token, 0) : NULL;
    body = NULL;

    if (id != NULL && secret != NULL && (refresh_token == NULL || rt))
    {
        len = strlen(grant) + strlen(id) + strlen(secret)
              + (rt ? strlen(rt) : 0) + 80;
        body = malloc(len);

        if (body != NULL) {
            snprintf(body, len, "grant_type=%s&client_id=%s&client_secret=%s"
                     "%s%s", grant, id, secret,
                     rt ? "&refresh_token=" : "", rt ? rt : "");
        }
    }

    if (secret != NULL) {
        OPENSSL_cleanse(secret, strlen(secret));
    }

    if (rt != NULL) {
        OPENSSL_cleanse(rt, strlen(rt));
    }

    curl_free(id);
    curl_free(secret);
    curl_free(rt);

    if (body == NULL) {
        sbw_shopify_res_clear(res);
        snprintf(res->error, sizeof(res->error), "out of memory");
        return -1;
    }

    rc = sbw_shopify_post(s, shop, "/admin/oauth/access_token",
                          "application/x-www-form-urlencoded", NULL, body,
                          res);
    sbw_wipe_free(body);

    return rc;
}


int
sbw_shopify_refresh(sbw_shopify_t *s, const char *shop,
    const char *refresh_token, sbw_shopify_res_t *res)
{
    return sbw_shopify_token_post(s, shop, "refresh_token", refresh_token,
                                  res);
}


int
sbw_shopify_client_credentials(sbw_shopify_t *s, const char *shop,
    sbw_shopify_res_t *res)
{
    return sbw_shopify_token_post(s, shop, "client_credentials", NULL, res);
}


int
sbw_shopify_graphql(sbw_shopify_t *s, const char *shop, const char *token,
    const char *body, sbw_shopify_res_t *res)
{
    char  path[64];

    snprintf(path, sizeof(path), "/admin/api/%s/graphql.json",
             s->conf->api_version);

    return sbw_shopify_post(s, shop, path, "application/json", token, body,
                            res);
}


/*
 * The token endpoint's answer: access_token (required), scope,
 * expires_in, refresh_token, refresh_token_expires_in.  Returns 0, or -1
 * with msg.
 */
int
sbw_shopify_parse_tokens(json_t *body, sbw_shopify_tokens_t *t, char *msg,
    size_t msglen)
{
    json_t      *v;
    const char  *at, *rt, *scope;

    memset(t, 0, sizeof(*t));
    t->expires_in = -1;
    t->refresh_expires_in = -1;

    at = json_string_value(json_object_get(body, "access_token"));
    rt = json_string_value(json_object_get(body, "refresh_token"));
    scope = json_string_value(json_object_get(body, "scope"));

    if (at == NULL || at[0] == '\0') {
        snprintf(msg, msglen, "the token endpoint's answer has no "
                 "access_token");
        return -1;
    }

    v = json_object_get(body, "expires_in");
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        t->expires_in = (long) json_integer_value(v);
    }

    v = json_object_get(body, "refresh_token_expires_in");
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        t->refresh_expires_in = (long) json_integer_value(v);
    }

    t->access_token = strdup(at);
    t->refresh_token = rt && rt[0] ? strdup(rt) : NULL;
    t->scope = strdup(scope ? scope : "");

    if (t->access_token == NULL || t->scope == NULL
        || (rt && rt[0] && t->refresh_token == NULL))
    {
        sbw_shopify_tokens_clear(t);
        snprintf(msg, msglen, "out of memory");
        return -1;
    }

    return 0;
}


void
sbw_shopify_tokens_clear(sbw_shopify_tokens_t *t)
{
    sbw_wipe_free(t->access_token);
    sbw_wipe_free(t->refresh_token);
    free(t->scope);
    memset(t, 0, sizeof(*t));
}
