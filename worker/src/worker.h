/*
 * Worker threads: each one is a consumer of the stream's group with its
 * own Redis, PostgreSQL and HTTP connections, and turns orders/create
 * entries into BC sales orders exactly once.
 */

#ifndef SBW_WORKER_H
#define SBW_WORKER_H

#include <signal.h>

#include "bc.h"
#include "config.h"
#include "shopify_conf.h"


typedef struct {
    const sbw_config_t      *conf;
    const sbw_shopify_conf_t *shopify;   /* the Shopify app settings */
    sbw_bc_shared_t         *bc_shared;
    volatile sig_atomic_t   *stop;
    const char              *instance;   /* random id of this process */
    long                     drain_ms;   /* > 0: exit when idle that long */
} sbw_worker_env_t;


typedef struct sbw_worker_s  sbw_worker_t;


sbw_worker_t *sbw_worker_new(const sbw_worker_env_t *env, int index);
int sbw_worker_start(sbw_worker_t *w);
void sbw_worker_join(sbw_worker_t *w);
void sbw_worker_free(sbw_worker_t *w);


#endif /* SBW_WORKER_H */
