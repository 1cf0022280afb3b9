/*
 * The GraphQL Admin API operations the worker sends (webhook
 * subscriptions: list, create, delete), the parsing of their answers,
 * and the cost-based throttling arithmetic.  No I/O: unit-tested.
 */

#ifndef SBW_SHOPIFY_GQL_H
#define SBW_SHOPIFY_GQL_H

#include <stddef.h>

#include <jansson.h>

#include "shopify_conf.h"


/* subscriptions asked for per page of the list query */
#define SBW_GQL_PAGE  50

/* what a mutation is assumed to cost before Shopify has said */
#define SBW_GQL_MUTATION_COST  10

/* results of sbw_gql_check() */
#define SBW_GQL_OK         0
#define SBW_GQL_THROTTLED  1   /* errors[].extensions.code THROTTLED */
#define SBW_GQL_ERRORS     2   /* other top-level errors */
#define SBW_GQL_MALFORMED  3   /* no data, not JSON, ... */


typedef struct {
    double  requested;        /* requestedQueryCost, -1 unknown */
    double  actual;           /* actualQueryCost, -1 unknown */
    double  maximum;          /* throttleStatus, -1 unknown */
    double  available;
    double  restore_rate;     /* points per second */
} sbw_gql_cost_t;


typedef struct {
    char  *id;                /* gid://shopify/WebhookSubscription/N */
    char  *topic;             /* ORDERS_CREATE */
    char  *uri;
} sbw_gql_sub_t;


char *sbw_gql_list_body(const char *after);
char *sbw_gql_create_body(const char *topic_enum, const char *uri);
char *sbw_gql_delete_body(const char *id);

void sbw_gql_cost_init(sbw_gql_cost_t *c);
int sbw_gql_check(json_t *resp, sbw_gql_cost_t *cost, char *msg,
    size_t msglen);
long sbw_gql_wait_ms(const sbw_gql_cost_t *c, double need);

int sbw_gql_parse_list(json_t *resp, sbw_gql_sub_t **subs, size_t *n,
    int *has_next, char *cursor, size_t cursorlen, char *msg,
    size_t msglen);
int sbw_gql_parse_mutation(json_t *resp, const char *field, char *msg,
    size_t msglen);
void sbw_gql_subs_free(sbw_gql_sub_t *subs, size_t n);

int sbw_gql_plan(const sbw_shopify_conf_t *c, const sbw_gql_sub_t *subs,
    size_t n, int *keep, char ***create, size_t *ncreate);
void sbw_gql_strv_free(char **v, size_t n);


#endif /* SBW_SHOPIFY_GQL_H */
