/*
 * Business Central client.
 *
 * Each worker thread owns a curl easy handle (connections are reused
 * between its requests).  What the threads share lives in
 * sbw_bc_shared_t under one mutex: the access token, and the limiter
 * that caps requests in flight (BC_MAX_CONCURRENT), requests per sliding
 * window (the 6000 per 5 minutes BC allows per principal) and honours a
 * Retry-After from BC for everybody, so one 429 does not become five.
 */

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "backoff.h"
#include "bc.h"
#include "customer.h"
#include "errclass.h"
#include "log.h"
#include "metrics.h"
#include "text.h"


/* answers larger than this are cut off (a lookup never comes close) */
#define SBW_BC_MAX_BODY  (64 * 1024 * 1024)


struct sbw_bc_shared_s {
    pthread_mutex_t          mutex;
    pthread_cond_t           cond;
    pthread_mutex_t          token_mutex;     /* one token fetch at a time */
    const sbw_config_t      *conf;
    volatile sig_atomic_t   *stop;

    CURL                    *token_curl;
    char                    *token;
    long                     token_gen;
    double                   token_refresh_at;
    double                   token_expires_at;

    int                      active;
    double                   pause_until;
    double                  *ring;            /* send times, oldest first */
    int                      ring_len;
    int                      ring_head;
    int                      ring_count;
};


typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
    int      overflow;
} sbw_bc_buf_t;


typedef struct {
    long  retry_after_ms;
    char  request_id[128];
} sbw_bc_hdrs_t;


/* a request body that libcurl may read once and never rewind */
typedef struct {
    const char  *data;
    size_t       len;
    size_t       off;
} sbw_bc_body_t;


static double sbw_now(void);
static size_t sbw_bc_write(char *ptr, size_t size, size_t nmemb, void *ud);
static size_t sbw_bc_header(char *ptr, size_t size, size_t nmemb, void *ud);
static size_t sbw_bc_read(char *ptr, size_t size, size_t nmemb, void *ud);
static int sbw_bc_no_seek(void *ud, curl_off_t offset, int origin);
static int sbw_bc_perform(CURL *curl, const sbw_config_t *conf,
    const char *method, const char *url, const char *body, int once,
    struct curl_slist *hdrs, sbw_bc_result_t *res);
static void sbw_bc_parse_error(sbw_bc_result_t *res);
static int sbw_bc_token(sbw_bc_t *bc, long stale_gen, char **token,
    long *gen, sbw_bc_result_t *res);
static int sbw_bc_limit_wait(sbw_bc_shared_t *sh, int take);
static void sbw_bc_limit_release(sbw_bc_shared_t *sh,
    const sbw_bc_result_t *res);
static void sbw_bc_count(const char *op, const sbw_bc_result_t *res);
static void sbw_bc_call(sbw_bc_t *bc, const char *op, const char *method,
    const char *url, const char *body, sbw_bc_result_t *res);
static void sbw_bc_call_match(sbw_bc_t *bc, const char *op,
    const char *method, const char *url, const char *body,
    const char *if_match, sbw_bc_result_t *res);


static double
sbw_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


/*
 * State shared by all threads.  stop is the daemon's shutdown flag: the
 * limiter gives up waiting when it is set.
 */
sbw_bc_shared_t *
sbw_bc_shared_new(const sbw_config_t *conf, volatile sig_atomic_t *stop)
{
    sbw_bc_shared_t     *sh;
    pthread_condattr_t   ca;

    sh = calloc(1, sizeof(*sh));
    if (sh == NULL) {
        return NULL;
    }

    sh->conf = conf;
    sh->stop = stop;
    sh->ring_len = conf->rate_requests;

    if (sh->ring_len > 0) {
        sh->ring = calloc((size_t) sh->ring_len, sizeof(double));

        if (sh->ring == NULL) {
            free(sh);
            return NULL;
        }
    }

    sh->token_curl = curl_easy_init();
    if (sh->token_curl == NULL) {
        free(sh->ring);
        free(sh);
        return NULL;
    }

    pthread_mutex_init(&sh->mutex, NULL);
    pthread_mutex_init(&sh->token_mutex, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sh->cond, &ca);
    pthread_condattr_destroy(&ca);

    return sh;
}


/*
 * Release the shared state once every thread has stopped.
 */
void
sbw_bc_shared_free(sbw_bc_shared_t *sh)
{
    if (sh == NULL) {
        return;
    }

    curl_easy_cleanup(sh->token_curl);
    free(sh->token);
    free(sh->ring);
    pthread_mutex_destroy(&sh->mutex);
    pthread_mutex_destroy(&sh->token_mutex);
    pthread_cond_destroy(&sh->cond);
    free(sh);
}


/*
 * Per-thread client: a curl handle and the company URL
 * {BC365_API_BASE}/v2.0/{tenant}/{environment}/api/v2.0/companies({id}).
 */
int
sbw_bc_init(sbw_bc_t *bc, sbw_bc_shared_t *sh, const sbw_config_t *conf)
{
    int    n;
    char  *tenant, *env, *company;

    memset(bc, 0, sizeof(*bc));
    bc->shared = sh;
    bc->conf = conf;

    bc->curl = curl_easy_init();
    if (bc->curl == NULL) {
        return -1;
    }

    tenant = curl_easy_escape(bc->curl, conf->tenant, 0);
    env = curl_easy_escape(bc->curl, conf->environment, 0);
    company = curl_easy_escape(bc->curl, conf->company_id, 0);

    if (tenant && env && company) {
        n = snprintf(NULL, 0, "%s/v2.0/%s/%s/api/v2.0/companies(%s)",
                     conf->api_base, tenant, env, company);
        bc->base_url = malloc((size_t) n + 1);

        if (bc->base_url != NULL) {
            snprintf(bc->base_url, (size_t) n + 1,
                     "%s/v2.0/%s/%s/api/v2.0/companies(%s)",
                     conf->api_base, tenant, env, company);
        }
    }

    curl_free(tenant);
    curl_free(env);
    curl_free(company);

    if (bc->base_url == NULL) {
        curl_easy_cleanup(bc->curl);
        bc->curl = NULL;
        return -1;
    }

    return 0;
}


void
sbw_bc_cleanup(sbw_bc_t *bc)
{
    if (bc->curl != NULL) {
        curl_easy_cleanup(bc->curl);
    }

    free(bc->base_url);
    memset(bc, 0, sizeof(*bc));
}


void
sbw_bc_result_clear(sbw_bc_result_t *r)
{
    json_decref(r->body);
    memset(r, 0, sizeof(*r));
    r->retry_after_ms = -1;
}


/*
 * libcurl write callback: collect the answer body in a growing buffer.
 * Past SBW_BC_MAX_BODY the rest is dropped and the body is marked as
 * overflowed (it is then not parsed).
 */
static size_t
sbw_bc_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    size_t         n, ncap;
    char          *nd;
    sbw_bc_buf_t  *b;

    b = ud;
    n = size * nmemb;

    if (b->len + n + 1 > SBW_BC_MAX_BODY) {
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
 * Pick Retry-After and a request id out of the response headers.  A new
 * status line (after a 100 Continue, say) starts over.
 */
static size_t
sbw_bc_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    char            value[128];
    size_t          n, vlen;
    const char     *colon, *v;
    sbw_bc_hdrs_t  *h;

    h = ud;
    n = size * nmemb;

    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        h->retry_after_ms = -1;
        h->request_id[0] = '\0';
        return n;
    }

    colon = memchr(ptr, ':', n);
    if (colon == NULL) {
        return n;
    }

    v = colon + 1;

    while (v < ptr + n && (*v == ' ' || *v == '\t')) {
        v++;
    }

    vlen = (size_t) (ptr + n - v);

    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'
                        || v[vlen - 1] == ' '))
    {
        vlen--;
    }

    if (vlen >= sizeof(value)) {
        vlen = sizeof(value) - 1;
    }

    memcpy(value, v, vlen);
    value[vlen] = '\0';

    if ((size_t) (colon - ptr) == 11 && strncasecmp(ptr, "Retry-After", 11)
                                        == 0)
    {
        h->retry_after_ms = sbw_retry_after_parse(value, time(NULL));

    } else if (((size_t) (colon - ptr) == 10
                && strncasecmp(ptr, "request-id", 10) == 0)
               || ((size_t) (colon - ptr) == 16
                   && strncasecmp(ptr, "ms-correlation-x", 16) == 0))
    {
        if (h->request_id[0] == '\0') {
            snprintf(h->request_id, sizeof(h->request_id), "%s", value);
        }
    }

    return n;
}


/*
 * The GUID after "CorrelationId:" in a BC error message, "" if none.
 */
void
sbw_bc_extract_correlation(const char *message, char *out, size_t outlen)
{
    size_t       n;
    const char  *p;

    out[0] = '\0';

    if (message == NULL) {
        return;
    }

    p = strstr(message, "CorrelationId:");
    if (p == NULL) {
        return;
    }

    p += 14;

    while (*p == ' ') {
        p++;
    }

    n = 0;

    while ((isxdigit((unsigned char) p[n]) || p[n] == '-')
           && n + 1 < outlen)
    {
        out[n] = p[n];
        n++;
    }

    out[n] = '\0';
}


/*
 * BC errors are {"error":{"code","message"}}; Entra's token errors are
 * {"error":"invalid_client","error_description":"AADSTS...\r\n..."}.
 * Either is copied into the result (only the first line of an Entra
 * description: the rest is trace ids and a timestamp).
 */
static void
sbw_bc_parse_error(sbw_bc_result_t *res)
{
    size_t         n;
    const char    *code, *msg;
    const json_t  *err, *v;

    if (res->body == NULL) {
        return;
    }

    err = json_object_get(res->body, "error");

    if (json_is_object(err)) {
        code = json_string_value(json_object_get(err, "code"));
        msg = json_string_value(json_object_get(err, "message"));

        snprintf(res->error_code, sizeof(res->error_code), "%s",
                 code ? code : "");
        snprintf(res->error_message, sizeof(res->error_message), "%s",
                 msg ? msg : "");
        sbw_bc_extract_correlation(msg, res->correlation_id,
                                   sizeof(res->correlation_id));
        return;
    }

    if (json_is_string(err)) {
        snprintf(res->error_code, sizeof(res->error_code), "%s",
                 json_string_value(err));

        msg = json_string_value(json_object_get(res->body,
                                                "error_description"));
        if (msg != NULL) {
            n = strcspn(msg, "\r\n");
            if (n >= sizeof(res->error_message)) {
                n = sizeof(res->error_message) - 1;
            }

            memcpy(res->error_message, msg, n);
            res->error_message[n] = '\0';
        }

        v = json_object_get(res->body, "correlation_id");
        if (json_is_string(v)) {
            snprintf(res->correlation_id, sizeof(res->correlation_id), "%s",
                     json_string_value(v));
        }
    }
}


/*
 * libcurl read callback for a body sent once (sbw_bc_body_t).
 */
static size_t
sbw_bc_read(char *ptr, size_t size, size_t nmemb, void *ud)
{
    size_t          n;
    sbw_bc_body_t  *b;

    b = ud;
    n = b->len - b->off;

    if (n > size * nmemb) {
        n = size * nmemb;
    }

    memcpy(ptr, b->data + b->off, n);
    b->off += n;

    return n;
}


/*
 * libcurl seek callback that refuses every rewind.  When a reused
 * connection dies before any byte of the answer came, libcurl silently
 * sends the request again on a new connection, which it can do only by
 * rewinding the body.  For a POST that creates a document that would
 * create it twice if BC had committed the first one, so the rewind is
 * refused: the exchange ends with CURLE_SEND_FAIL_REWIND, an outcome in
 * doubt, and the ledger's look-up decides.
 */
static int
sbw_bc_no_seek(void *ud, curl_off_t offset, int origin)
{
    (void) ud;
    (void) offset;
    (void) origin;

    return CURL_SEEKFUNC_CANTSEEK;
}


/*
 * One HTTP exchange.  Fills status, Retry-After, the parsed JSON body and
 * error fields.  once: the POST body must never be sent twice (see
 * sbw_bc_no_seek()).  Returns 0 when an HTTP answer came, -1 otherwise
 * (curl_code says why).
 */
static int
sbw_bc_perform(CURL *curl, const sbw_config_t *conf, const char *method,
    const char *url, const char *body, int once, struct curl_slist *hdrs,
    sbw_bc_result_t *res)
{
    double         t0;
    CURLcode       rc;
    sbw_bc_buf_t   buf;
    sbw_bc_body_t  src;
    sbw_bc_hdrs_t  h;

    sbw_bc_result_clear(res);
    memset(&buf, 0, sizeof(buf));
    h.retry_after_ms = -1;
    h.request_id[0] = '\0';

    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     conf->connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, conf->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, sbw_bc_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, sbw_bc_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "shopify-bc-worker/1.0");

    if (strcmp(method, "POST") == 0 && once) {
        src.data = body ? body : "";
        src.len = strlen(src.data);
        src.off = 0;

        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, sbw_bc_read);
        curl_easy_setopt(curl, CURLOPT_READDATA, &src);
        curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, sbw_bc_no_seek);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t) src.len);

    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE,
                         (long) (body ? strlen(body) : 0));

    } else if (strcmp(method, "GET") != 0) {
        /* PATCH with its body, DELETE without */
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);

        if (body != NULL) {
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE,
                             (long) strlen(body));
        }

    } else {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    }

    t0 = sbw_now();
    rc = curl_easy_perform(curl);
    res->seconds = sbw_now() - t0;
    res->curl_code = (int) rc;

    if (rc != CURLE_OK) {
        snprintf(res->error_code, sizeof(res->error_code), "Transport_%s",
                 rc == CURLE_OPERATION_TIMEDOUT ? "Timeout" : "Error");
        snprintf(res->error_message, sizeof(res->error_message), "%s",
                 curl_easy_strerror(rc));
        free(buf.data);
        return -1;
    }

    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &res->status);
    res->retry_after_ms = h.retry_after_ms;

    if (buf.data != NULL && buf.len > 0 && !buf.overflow) {
        res->body = json_loadb(buf.data, buf.len, 0, NULL);
    }

    free(buf.data);

    if (res->status >= 400) {
        sbw_bc_parse_error(res);

        if (res->error_code[0] == '\0') {
            snprintf(res->error_code, sizeof(res->error_code), "HTTP_%ld",
                     res->status);
        }
    }

    if (res->correlation_id[0] == '\0' && h.request_id[0] != '\0') {
        snprintf(res->correlation_id, sizeof(res->correlation_id), "%s",
                 h.request_id);
    }

    return 0;
}


/*
 * A valid access token for the API.  The cached one is used until it is
 * near expiry (5 minutes before, or a quarter of its lifetime when that
 * is shorter); stale_gen >= 0 means "the token of that generation was
 * refused with 401", which forces a new one unless another thread has
 * already replaced it.  *token is a copy for the caller to free.  On
 * failure res describes the token endpoint's answer and -1 is returned.
 */
static int
sbw_bc_token(sbw_bc_t *bc, long stale_gen, char **token, long *gen,
    sbw_bc_result_t *res)
{
    int                 n;
    char               *form, *id, *secret, *scope, *url;
    double              now, ttl, margin;
    json_t             *v;
    sbw_bc_shared_t    *sh;
    struct curl_slist  *hdrs;
    const sbw_config_t *conf;

    sh = bc->shared;
    conf = bc->conf;
    *token = NULL;

    pthread_mutex_lock(&sh->token_mutex);

    now = sbw_now();

    if (sh->token != NULL && now < sh->token_refresh_at
        && (stale_gen < 0 || stale_gen != sh->token_gen))
    {
        *token = strdup(sh->token);
        *gen = sh->token_gen;
        pthread_mutex_unlock(&sh->token_mutex);

        if (*token == NULL) {
            snprintf(res->error_code, sizeof(res->error_code), "NoMemory");
            return -1;
        }

        return 0;
    }

    id = curl_easy_escape(sh->token_curl, conf->client_id, 0);
    secret = curl_easy_escape(sh->token_curl, conf->client_secret, 0);
    scope = curl_easy_escape(sh->token_curl, conf->scope, 0);
    form = NULL;
    url = NULL;

    if (id && secret && scope) {
        n = snprintf(NULL, 0, "grant_type=client_credentials&client_id=%s"
                     "&client_secret=%s&scope=%s", id, secret, scope);
        form = malloc((size_t) n + 1);

        if (form != NULL) {
            snprintf(form, (size_t) n + 1, "grant_type=client_credentials"
                     "&client_id=%s&client_secret=%s&scope=%s", id, secret,
                     scope);
        }
    }

    if (secret != NULL) {
        memset(secret, 0, strlen(secret));
    }

    curl_free(id);
    curl_free(secret);
    curl_free(scope);

    id = curl_easy_escape(sh->token_curl, conf->tenant, 0);

    if (id != NULL) {
        n = snprintf(NULL, 0, "%s/%s/oauth2/v2.0/token", conf->auth_base,
                     id);
        url = malloc((size_t) n + 1);

        if (url != NULL) {
            snprintf(url, (size_t) n + 1, "%s/%s/oauth2/v2.0/token",
                     conf->auth_base, id);
        }
    }

    curl_free(id);

    if (form == NULL || url == NULL) {
        free(form);
        free(url);
        pthread_mutex_unlock(&sh->token_mutex);
        snprintf(res->error_code, sizeof(res->error_code), "NoMemory");
        return -1;
    }

    hdrs = curl_slist_append(NULL, "Content-Type: "
                             "application/x-www-form-urlencoded");
    hdrs = curl_slist_append(hdrs, "Accept: application/json");

    sbw_bc_perform(sh->token_curl, conf, "POST", url, form, 0, hdrs,
                   res);

    curl_slist_free_all(hdrs);
    memset(form, 0, strlen(form));
    free(form);
    free(url);

    sbw_bc_count("token", res);

    if (res->curl_code == 0 && res->status == 200) {
        v = json_object_get(res->body, "access_token");

        if (json_is_string(v) && json_string_length(v) > 0) {
            free(sh->token);
            sh->token = strdup(json_string_value(v));

            v = json_object_get(res->body, "expires_in");
            ttl = json_is_integer(v) ? (double) json_integer_value(v)
                  : json_is_string(v) ? atof(json_string_value(v))
                  : 3599.0;

            if (ttl <= 0) {
                ttl = 60;
            }

            margin = ttl > 1200 ? 300 : ttl / 4;
            now = sbw_now();
            sh->token_expires_at = now + ttl;
            sh->token_refresh_at = now + ttl - margin;
            sh->token_gen++;

            *token = sh->token ? strdup(sh->token) : NULL;
            *gen = sh->token_gen;

            pthread_mutex_unlock(&sh->token_mutex);

            sbw_metrics_token_refresh(1);
            sbw_log(SBW_LOG_INFO, "token_refreshed",
                    json_pack("{s:i}", "expires_in", (json_int_t) ttl));

            if (*token == NULL) {
                snprintf(res->error_code, sizeof(res->error_code),
                         "NoMemory");
                return -1;
            }

            sbw_bc_result_clear(res);
            return 0;
        }

        snprintf(res->error_code, sizeof(res->error_code),
                 "Entra_NoAccessToken");
        snprintf(res->error_message, sizeof(res->error_message),
                 "token endpoint answered 200 without access_token");
    }

    pthread_mutex_unlock(&sh->token_mutex);

    sbw_metrics_token_refresh(0);
    sbw_log(SBW_LOG_ERROR, "token_failed",
            json_pack("{s:i,s:s,s:s,s:s}",
                      "status", (json_int_t) res->status,
                      "bc_error_code", res->error_code,
                      "message", res->error_message,
                      "correlation_id", res->correlation_id));

    /* whatever the token endpoint said, nothing was sent to BC */
    res->status = 0;
    res->curl_code = 0;

    return -1;
}


/*
 * Wait for the right to send one request: a free slot among
 * BC365_MAX_CONCURRENT, room in the sliding window of
 * BC365_RATE_LIMIT_REQUESTS per BC365_RATE_LIMIT_WINDOW_MS, and the end
 * of any Retry-After pause.  With take 0 only the wait: the right is
 * left for the request that follows.  Returns -1 if the daemon is
 * stopping.
 */
static int
sbw_bc_limit_wait(sbw_bc_shared_t *sh, int take)
{
    int               idx;
    double            now, until, window, start;
    const char       *held;
    struct timespec   ts;

    window = (double) sh->conf->rate_window_ms / 1000.0;
    held = NULL;
    start = 0;

    pthread_mutex_lock(&sh->mutex);

    for ( ;; ) {
        if (*sh->stop) {
            pthread_mutex_unlock(&sh->mutex);

            if (held != NULL) {
                sbw_metrics_limiter_waited(sbw_now() - start);
            }

            return -1;
        }

        now = sbw_now();
        until = now + 0.1;

        if (now < sh->pause_until) {
            if (sh->pause_until < until) {
                until = sh->pause_until;
            }

            if (held == NULL) {
                held = "retry_after";
                start = now;
                sbw_metrics_limiter_wait(held);
            }

        } else if (sh->active >= sh->conf->bc_max_concurrent) {
            /* wait for a release (or 100 ms) */
            if (held == NULL) {
                held = "concurrency";
                start = now;
                sbw_metrics_limiter_wait(held);
            }

        } else if (sh->ring_len > 0 && sh->ring_count == sh->ring_len
                   && sh->ring[sh->ring_head] > now - window)
        {
            if (sh->ring[sh->ring_head] + window < until) {
                until = sh->ring[sh->ring_head] + window;
            }

            if (held == NULL) {
                held = "rate";
                start = now;
                sbw_metrics_limiter_wait(held);
            }

        } else {
            break;
        }

        ts.tv_sec = (time_t) until;
        ts.tv_nsec = (long) ((until - (double) ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&sh->cond, &sh->mutex, &ts);
    }

    if (!take) {
        pthread_mutex_unlock(&sh->mutex);

        if (held != NULL) {
            sbw_metrics_limiter_waited(now - start);
        }

        return 0;
    }

    sh->active++;

    if (sh->ring_len > 0) {
        if (sh->ring_count < sh->ring_len) {
            idx = (sh->ring_head + sh->ring_count) % sh->ring_len;
            sh->ring[idx] = now;
            sh->ring_count++;

        } else {
            sh->ring[sh->ring_head] = now;
            sh->ring_head = (sh->ring_head + 1) % sh->ring_len;
        }
    }

    pthread_mutex_unlock(&sh->mutex);

    if (held != NULL) {
        sbw_metrics_limiter_waited(now - start);
    }

    return 0;
}


/*
 * Free the slot; a 429 or 503 with Retry-After pauses every thread for
 * that long (capped by RETRY_AFTER_MAX_MS).
 */
static void
sbw_bc_limit_release(sbw_bc_shared_t *sh, const sbw_bc_result_t *res)
{
    long    ms;
    double  until;

    pthread_mutex_lock(&sh->mutex);

    sh->active--;

    if ((res->status == 429 || res->status == 503)
        && res->retry_after_ms >= 0)
    {
        ms = res->retry_after_ms;

        if (ms > sh->conf->retry_after_max_ms) {
            ms = sh->conf->retry_after_max_ms;
        }

        until = sbw_now() + (double) ms / 1000.0;

        if (until > sh->pause_until) {
            sh->pause_until = until;
        }
    }

    pthread_cond_broadcast(&sh->cond);
    pthread_mutex_unlock(&sh->mutex);
}


static void
sbw_bc_count(const char *op, const sbw_bc_result_t *res)
{
    char  status[16];

    if (res->curl_code != 0) {
        sbw_metrics_bc_request(op, res->curl_code == CURLE_OPERATION_TIMEDOUT
                                   ? "timeout" : "error");
        return;
    }

    snprintf(status, sizeof(status), "%ld", res->status);
    sbw_metrics_bc_request(op, status);
}


/*
 * An authenticated API request through the limiter.  A 401 gets one
 * retry with a fresh token (the cached one may have been revoked or
 * expired early).
 */
static void
sbw_bc_call(sbw_bc_t *bc, const char *op, const char *method,
    const char *url, const char *body, sbw_bc_result_t *res)
{
    sbw_bc_call_match(bc, op, method, url, body, NULL, res);
}


/*
 * sbw_bc_call() with an If-Match header (PATCH and DELETE of an entity
 * BC versions with an ETag) when if_match is not NULL.
 */
static void
sbw_bc_call_match(sbw_bc_t *bc, const char *op, const char *method,
    const char *url, const char *body, const char *if_match,
    sbw_bc_result_t *res)
{
    int                 try;
    long                gen, stale;
    char               *token, *auth, im[512];
    size_t              n;
    struct curl_slist  *hdrs;

    stale = -1;

    for (try = 0; try < 2; try++) {
        sbw_bc_result_clear(res);

        if (sbw_bc_token(bc, stale, &token, &gen, res) != 0) {
            return;
        }

        n = strlen(token) + 32;
        auth = malloc(n);

        if (auth == NULL) {
            free(token);
            snprintf(res->error_code, sizeof(res->error_code), "NoMemory");
            return;
        }

        snprintf(auth, n, "Authorization: Bearer %s", token);
        memset(token, 0, strlen(token));
        free(token);

        hdrs = curl_slist_append(NULL, auth);
        hdrs = curl_slist_append(hdrs, "Accept: application/json");
        hdrs = curl_slist_append(hdrs, "Expect:");

        if (body != NULL) {
            hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        }

        if (if_match != NULL) {
            snprintf(im, sizeof(im), "If-Match: %s", if_match);
            hdrs = curl_slist_append(hdrs, im);
        }

        memset(auth, 0, strlen(auth));
        free(auth);

        if (sbw_bc_limit_wait(bc->shared, 1) != 0) {
            curl_slist_free_all(hdrs);
            res->curl_code = CURLE_ABORTED_BY_CALLBACK;
            snprintf(res->error_code, sizeof(res->error_code),
                     "Worker_Stopping");
            return;
        }

        sbw_bc_perform(bc->curl, bc->conf, method, url, body, 1, hdrs,
                       res);
        sbw_bc_limit_release(bc->shared, res);

        /* the slist holds a copy of the bearer header: wipe it */
        if (hdrs != NULL && hdrs->data != NULL) {
            memset(hdrs->data, 0, strlen(hdrs->data));
        }

        curl_slist_free_all(hdrs);
        sbw_bc_count(op, res);

        if (res->curl_code != 0 || res->status != 401) {
            return;
        }

        stale = gen;
    }
}


/*
 * Wait until the limiter would let a request go now, taking nothing: the
 * worker waits here before it records an attempt, so that an attempt
 * stays in doubt for the length of a request, not of a limiter wait.
 */
int
sbw_bc_wait_budget(sbw_bc_t *bc)
{
    if (bc->shared == NULL) {
        return 0;
    }

    return sbw_bc_limit_wait(bc->shared, 0);
}


/*
 * What a result means for the order (see sbw_bc_class_e): decided by
 * BC's error code family, then the status (errclass.c).
 */
sbw_bc_class_e
sbw_bc_classify(const sbw_bc_result_t *r)
{
    return sbw_errclass(r->status, r->curl_code, r->error_code);
}


/*
 * Error code and message for the ledger and the log.
 */
void
sbw_bc_describe(const sbw_bc_result_t *r, char *code, size_t codelen,
    char *msg, size_t msglen)
{
    snprintf(code, codelen, "%s", r->error_code[0] ? r->error_code
                                                   : "Unknown");

    if (r->error_message[0] != '\0') {
        snprintf(msg, msglen, "%s", r->error_message);

    } else if (r->status != 0) {
        snprintf(msg, msglen, "HTTP %ld", r->status);

    } else {
        snprintf(msg, msglen, "no answer");
    }
}


/*
 * POST .../salesOrders with the deep-insert payload.  On SBW_BC_OK the
 * new order's id and number are copied out.
 */
sbw_bc_class_e
sbw_bc_create_order(sbw_bc_t *bc, const char *payload, sbw_bc_result_t *res,
    char *id, size_t idlen, char *number, size_t numlen)
{
    int             n;
    char           *url;
    const char     *s;
    sbw_bc_class_e  cls;

    id[0] = '\0';
    number[0] = '\0';

    n = snprintf(NULL, 0, "%s/salesOrders", bc->base_url);
    url = malloc((size_t) n + 1);

    if (url == NULL) {
        sbw_bc_result_clear(res);
        res->curl_code = CURLE_OUT_OF_MEMORY;
        return SBW_BC_RETRY_NOT_SENT;
    }

    snprintf(url, (size_t) n + 1, "%s/salesOrders", bc->base_url);

    sbw_bc_call(bc, "create_order", "POST", url, payload, res);
    free(url);

    cls = sbw_bc_classify(res);

    if (cls == SBW_BC_OK) {
        s = json_string_value(json_object_get(res->body, "id"));
        snprintf(id, idlen, "%s", s ? s : "");

        s = json_string_value(json_object_get(res->body, "number"));
        snprintf(number, numlen, "%s", s ? s : "");
    }

    return cls;
}


/*
 * Look for a document carrying this externalDocumentNumber: an open
 * sales order, else a posted invoice or shipment (a posted order leaves
 * salesOrders).  Returns 1 and fills doc when found, 0 when BC has none,
 * -1 when a lookup failed (res tells why).
 */
int
sbw_bc_find_document(sbw_bc_t *bc, const char *external_doc,
    sbw_bc_doc_t *doc, sbw_bc_result_t *res)
{
    int            n;
    char          *quoted, *filter, *esc, *url;
    size_t         i;
    const char    *s;
    const json_t  *rows, *row;

    static const char *const  sets[] = {
        "salesOrders", "salesInvoices", "salesShipments"
    };
    static const char *const  types[] = {
        "salesOrder", "salesInvoice", "salesShipment"
    };

    memset(doc, 0, sizeof(*doc));

    quoted = sbw_odata_quote(external_doc);
    if (quoted == NULL) {
        return -1;
    }

    n = snprintf(NULL, 0, "externalDocumentNumber eq %s", quoted);
    filter = malloc((size_t) n + 1);

    if (filter == NULL) {
        free(quoted);
        return -1;
    }

    snprintf(filter, (size_t) n + 1, "externalDocumentNumber eq %s", quoted);
    free(quoted);

    esc = curl_easy_escape(bc->curl, filter, 0);
    free(filter);

    if (esc == NULL) {
        return -1;
    }

    for (i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        n = snprintf(NULL, 0, "%s/%s?$filter=%s&$select=id,number,"
                     "externalDocumentNumber", bc->base_url, sets[i], esc);
        url = malloc((size_t) n + 1);

        if (url == NULL) {
            curl_free(esc);
            return -1;
        }

        snprintf(url, (size_t) n + 1, "%s/%s?$filter=%s&$select=id,number,"
                 "externalDocumentNumber", bc->base_url, sets[i], esc);

        sbw_bc_call(bc, "lookup", "GET", url, NULL, res);
        free(url);

        if (sbw_bc_classify(res) != SBW_BC_OK) {
            curl_free(esc);
            return -1;
        }

        rows = json_object_get(res->body, "value");

        if (!json_is_array(rows)) {
            snprintf(res->error_code, sizeof(res->error_code),
                     "Worker_BadLookupAnswer");
            snprintf(res->error_message, sizeof(res->error_message),
                     "%s lookup answer has no value array", sets[i]);
            curl_free(esc);
            return -1;
        }

        if (json_array_size(rows) == 0) {
            continue;
        }

        row = json_array_get(rows, 0);

        snprintf(doc->doc_type, sizeof(doc->doc_type), "%s", types[i]);
        s = json_string_value(json_object_get(row, "id"));
        snprintf(doc->id, sizeof(doc->id), "%s", s ? s : "");
        s = json_string_value(json_object_get(row, "number"));
        snprintf(doc->number, sizeof(doc->number), "%s", s ? s : "");
        doc->matches = (int) json_array_size(rows);

        curl_free(esc);
        return 1;
    }

    curl_free(esc);
    return 0;
}


/*
 * Find the BC customer whose e-mail is this address, compared without
 * regard to ASCII case: GET customers?$filter=email eq '...' (see
 * sbw_customer_filter()).  When several customers share the address the
 * first BC returns (the lowest number) wins.  Returns 1 with its number,
 * 0 when BC has none, -1 when the look-up failed (res tells why).
 */
int
sbw_bc_find_customer(sbw_bc_t *bc, const char *email, char *number,
    size_t numlen, sbw_bc_result_t *res)
{
    int            n;
    char          *filter, *esc, *url;
    size_t         i;
    const char    *s;
    const json_t  *rows, *row;

    number[0] = '\0';

    filter = sbw_customer_filter(email);
    if (filter == NULL) {
        sbw_bc_result_clear(res);
        res->curl_code = CURLE_OUT_OF_MEMORY;
        return -1;
    }

    esc = curl_easy_escape(bc->curl, filter, 0);
    free(filter);

    if (esc == NULL) {
        sbw_bc_result_clear(res);
        res->curl_code = CURLE_OUT_OF_MEMORY;
        return -1;
    }

    n = snprintf(NULL, 0, "%s/customers?$filter=%s&$select=number,email",
                 bc->base_url, esc);
    url = malloc((size_t) n + 1);

    if (url == NULL) {
        curl_free(esc);
        sbw_bc_result_clear(res);
        res->curl_code = CURLE_OUT_OF_MEMORY;
        return -1;
    }

    snprintf(url, (size_t) n + 1, "%s/customers?$filter=%s"
             "&$select=number,email", bc->base_url, esc);
    curl_free(esc);

    sbw_bc_call(bc, "customer_lookup", "GET", url, NULL, res);
    free(url);

    if (sbw_bc_classify(res) != SBW_BC_OK) {
        return -1;
    }

    rows = json_object_get(res->body, "value");

    if (!json_is_array(rows)) {
        snprintf(res->error_code, sizeof(res->error_code),
                 "Worker_BadLookupAnswer");
        snprintf(res->error_message, sizeof(res->error_message),
                 "customers lookup answer has no value array");
        return -1;
    }

    json_array_foreach(rows, i, row) {
        s = json_string_value(json_object_get(row, "email"));

        if (s == NULL || strcasecmp(s, email) != 0) {
            continue;
        }

        s = json_string_value(json_object_get(row, "number"));

        if (s != NULL && s[0] != '\0' && strlen(s) < numlen) {
            snprintf(number, numlen, "%s", s);
            return 1;
        }
    }

    return 0;
}


/*
 * Point the client at another company: the orders of each shop go to the
 * shop's company (BC365_COMPANIES).  Returns 0, -1 out of memory (the
 * client keeps its company).
 */
int
sbw_bc_set_company(sbw_bc_t *bc, const char *company_id)
{
    int    n;
    char  *tenant, *env, *company, *url;

    url = NULL;
    tenant = curl_easy_escape(bc->curl, bc->conf->tenant, 0);
    env = curl_easy_escape(bc->curl, bc->conf->environment, 0);
    company = curl_easy_escape(bc->curl, company_id, 0);

    if (tenant && env && company) {
        n = snprintf(NULL, 0, "%s/v2.0/%s/%s/api/v2.0/companies(%s)",
                     bc->conf->api_base, tenant, env, company);
        url = malloc((size_t) n + 1);

        if (url != NULL) {
            snprintf(url, (size_t) n + 1, "%s/v2.0/%s/%s/api/v2.0/"
                     "companies(%s)", bc->conf->api_base, tenant, env,
                     company);
        }
    }

    curl_free(tenant);
    curl_free(env);
    curl_free(company);

    if (url == NULL) {
        return -1;
    }

    free(bc->base_url);
    bc->base_url = url;

    return 0;
}


/*
 * One request to the current company: path is relative to
 * .../companies({id}) ("/salesOrders(...)"), if_match is sent when not
 * NULL.  Returns the class of the answer; res holds it.
 */
sbw_bc_class_e
sbw_bc_request(sbw_bc_t *bc, const char *op, const char *method,
    const char *path, const char *body, const char *if_match,
    sbw_bc_result_t *res)
{
    int    n;
    char  *url;

    n = snprintf(NULL, 0, "%s%s", bc->base_url, path);
    url = malloc((size_t) n + 1);

    if (url == NULL) {
        sbw_bc_result_clear(res);
        res->curl_code = CURLE_OUT_OF_MEMORY;
        return SBW_BC_RETRY_NOT_SENT;
    }

    snprintf(url, (size_t) n + 1, "%s%s", bc->base_url, path);
    sbw_bc_call_match(bc, op, method, url, body, if_match, res);
    free(url);

    return sbw_bc_classify(res);
}
