/*
 * Business Central API v2.0 client (libcurl) with an Entra
 * client-credentials token cache and a client-side limiter that keeps
 * the worker inside BC's per-principal limits.
 */

#ifndef SBW_BC_H
#define SBW_BC_H

#include <signal.h>

#include <curl/curl.h>
#include <jansson.h>

#include "config.h"


typedef enum {
    SBW_BC_OK = 0,
    SBW_BC_PERMANENT,          /* BC refused the request for good */
    SBW_BC_RETRY_NOT_SENT,     /* certainly not processed: retry */
    SBW_BC_RETRY_UNCERTAIN     /* may have been processed: look first */
} sbw_bc_class_e;


typedef struct {
    long      status;            /* HTTP status, 0 when none came */
    int       curl_code;         /* CURLcode, 0 when the exchange worked */
    long      retry_after_ms;    /* -1 when no Retry-After */
    double    seconds;           /* duration of the last exchange */
    char      error_code[128];
    char      error_message[512];
    char      correlation_id[128];
    json_t   *body;              /* parsed JSON answer, or NULL */
} sbw_bc_result_t;


typedef struct {
    char  doc_type[16];          /* salesOrder, salesInvoice, ... */
    char  id[64];
    char  number[64];
    int   matches;               /* documents found with that number */
} sbw_bc_doc_t;


typedef struct sbw_bc_shared_s  sbw_bc_shared_t;


typedef struct {
    CURL                *curl;
    sbw_bc_shared_t     *shared;
    const sbw_config_t  *conf;
    char                *base_url;   /* .../companies({id}) */
} sbw_bc_t;


sbw_bc_shared_t *sbw_bc_shared_new(const sbw_config_t *conf,
    volatile sig_atomic_t *stop);
void sbw_bc_shared_free(sbw_bc_shared_t *sh);
int sbw_bc_init(sbw_bc_t *bc, sbw_bc_shared_t *sh, const sbw_config_t *conf);
void sbw_bc_cleanup(sbw_bc_t *bc);
void sbw_bc_result_clear(sbw_bc_result_t *r);
int sbw_bc_wait_budget(sbw_bc_t *bc);
sbw_bc_class_e sbw_bc_classify(const sbw_bc_result_t *r);
void sbw_bc_describe(const sbw_bc_result_t *r, char *code, size_t codelen,
    char *msg, size_t msglen);
sbw_bc_class_e sbw_bc_create_order(sbw_bc_t *bc, const char *payload,
    sbw_bc_result_t *res, char *id, size_t idlen, char *number,
    size_t numlen);
int sbw_bc_find_customer(sbw_bc_t *bc, const char *email, char *number,
    size_t numlen, sbw_bc_result_t *res);
int sbw_bc_find_document(sbw_bc_t *bc, const char *external_doc,
    sbw_bc_doc_t *doc, sbw_bc_result_t *res);
void sbw_bc_extract_correlation(const char *message, char *out,
    size_t outlen);
int sbw_bc_set_company(sbw_bc_t *bc, const char *company_id);
sbw_bc_class_e sbw_bc_request(sbw_bc_t *bc, const char *op,
    const char *method, const char *path, const char *body,
    const char *if_match, sbw_bc_result_t *res);


#endif /* SBW_BC_H */
