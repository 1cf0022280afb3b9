/*
 * Customer strategy "email" (BC365_CUSTOMER_STRATEGY): the e-mail an
 * order names, the BC filter that finds the customer with it, and an
 * in-memory cache so that repeated orders of one buyer cost one look-up.
 * Everything here is pure (the cache takes the time from its caller),
 * so the unit tests can drive it.
 */

#ifndef SBW_CUSTOMER_H
#define SBW_CUSTOMER_H

#include <pthread.h>
#include <stddef.h>

#include <jansson.h>


/* BC's customer e-mail is a Text[80]; longer addresses cannot match */
#define SBW_BC_EMAIL_LEN       80
#define SBW_EMAIL_BUFLEN       (SBW_BC_EMAIL_LEN * 4 + 1)

/* a cache key: "<company id>/<e-mail>" */
#define SBW_CUSTOMER_KEY_BUFLEN  (SBW_EMAIL_BUFLEN + 64)

/* BC's customer number is a Code[20] */
#define SBW_CUSTOMER_NO_BUFLEN  (20 * 4 + 1)

/* how long a look-up's answer (found or not) is reused */
#define SBW_CUSTOMER_CACHE_TTL  600.0    /* seconds */
#define SBW_CUSTOMER_CACHE_SLOTS  1024
/*
 * set-associative: an address can live in any of the WAYS slots of its
 * set, so a few addresses that hash alike do not evict each other
 */
#define SBW_CUSTOMER_CACHE_WAYS   4
#define SBW_CUSTOMER_CACHE_SETS                                          \
    (SBW_CUSTOMER_CACHE_SLOTS / SBW_CUSTOMER_CACHE_WAYS)


typedef struct {
    char    email[SBW_CUSTOMER_KEY_BUFLEN];  /* lower case, "" when free */
    char    number[SBW_CUSTOMER_NO_BUFLEN];  /* "" when BC has none */
    double  expires;
} sbw_customer_slot_t;


typedef struct {
    pthread_mutex_t      mutex;
    double               ttl;
    sbw_customer_slot_t  slots[SBW_CUSTOMER_CACHE_SLOTS];
} sbw_customer_cache_t;


int sbw_order_email(const json_t *order, char *out, size_t outlen);
char *sbw_customer_filter(const char *email);
void sbw_customer_cache_init(sbw_customer_cache_t *c, double ttl);
int sbw_customer_cache_get(sbw_customer_cache_t *c, const char *email,
    double now, char *number, size_t numlen);
void sbw_customer_cache_put(sbw_customer_cache_t *c, const char *email,
    const char *number, double now);


#endif /* SBW_CUSTOMER_H */
