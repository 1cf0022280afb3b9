/*
 * HTTP client for a shop's own endpoints (libcurl): the OAuth token
 * endpoint (refresh, client credentials) and the GraphQL Admin API.
 * URLs are the real ones, https://<shop>/admin/...; tests redirect every
 * connection with SHOPIFY_CONNECT_TO and trust their CA with
 * SHOPIFY_CA_FILE, verification stays on.
 */

#ifndef SBW_SHOPIFY_API_H
#define SBW_SHOPIFY_API_H

#include <curl/curl.h>
#include <jansson.h>

#include "shopify_conf.h"


typedef struct {
    long     status;             /* HTTP status, 0 when none came */
    int      curl_code;          /* CURLcode, 0 when the exchange worked */
    long     retry_after_ms;     /* -1 when absent */
    json_t  *body;               /* parsed JSON answer, or NULL */
    char     error[256];         /* what went wrong, for a log line */
    char     oauth_error[64];    /* "error" of a token endpoint answer */
} sbw_shopify_res_t;


typedef struct {
    char  *access_token;
    char  *refresh_token;        /* NULL when none came */
    char  *scope;
    long   expires_in;           /* seconds, -1 when absent */
    long   refresh_expires_in;   /* seconds, -1 when absent */
} sbw_shopify_tokens_t;


typedef struct {
    CURL                      *curl;
    struct curl_slist         *connect_to;
    const sbw_shopify_conf_t  *conf;
} sbw_shopify_t;


int sbw_shopify_init(sbw_shopify_t *s, const sbw_shopify_conf_t *conf);
void sbw_shopify_cleanup(sbw_shopify_t *s);
void sbw_shopify_res_clear(sbw_shopify_res_t *r);

int sbw_shopify_refresh(sbw_shopify_t *s, const char *shop,
    const char *refresh_token, sbw_shopify_res_t *res);
int sbw_shopify_client_credentials(sbw_shopify_t *s, const char *shop,
    sbw_shopify_res_t *res);
int sbw_shopify_graphql(sbw_shopify_t *s, const char *shop,
    const char *token, const char *body, sbw_shopify_res_t *res);

int sbw_shopify_parse_tokens(json_t *body, sbw_shopify_tokens_t *t,
    char *msg, size_t msglen);
void sbw_shopify_tokens_clear(sbw_shopify_tokens_t *t);


#endif /* SBW_SHOPIFY_API_H */
