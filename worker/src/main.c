/*
 * shopify-bc-worker: drains the Shopify webhook stream that the nginx
 * module fills and creates the Business Central sales orders.
 *
 *   shopify-bc-worker [--drain[=MS] | --once] [--help] [--version]
 *
 * Settings come from the environment (README-settings.md).  --drain
 * processes until nothing new has arrived for MS milliseconds (default
 * 2000) and no retry is outstanding, then exits 0; --once is the same
 * with the default.  SIGTERM and SIGINT finish the entries in hand and
 * exit.
 */

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/rand.h>

#include "bc.h"
#include "cli.h"
#include "config.h"
#include "dlq.h"
#include "ledger.h"
#include "orders_sync.h"
#include "log.h"
#include "metrics.h"
#include "shops.h"
#include "shops_db.h"
#include "stream.h"
#include "worker.h"


#define SBW_VERSION  "1.0.0"

#define SBW_DEFAULT_DRAIN_MS  2000


static volatile sig_atomic_t  sbw_stop;


static void sbw_on_signal(int signo);
static void sbw_usage(FILE *f);
static int sbw_parse_args(int argc, char **argv, long *drain_ms);
static int sbw_prepare_redis(const sbw_config_t *conf);
static int sbw_prepare_postgres(const sbw_config_t *conf);
static void sbw_pause(long ms);


static void
sbw_on_signal(int signo)
{
    (void) signo;
    sbw_stop = 1;
}


static void
sbw_usage(FILE *f)
{
    fputs("usage: shopify-bc-worker [--drain[=MS] | --once] [--help] "
          "[--version]\n"
          "  --drain[=MS]  exit once no new entry came for MS ms "
          "(default 2000)\n"
          "  --once        same as --drain with the default\n"
          "settings are read from the environment (README.md, \"Worker "
          "settings\"); the dlq, ledger, dry-run, webhooks and tokens "
          "verbs: shopify-bc-worker dlq --help\n", f);
}


/*
 * Returns 0 to run, 1 to exit 0 (help, version), 2 on a usage error.
 */
static int
sbw_parse_args(int argc, char **argv, long *drain_ms)
{
    int    i;
    long   n;
    char  *end;

    *drain_ms = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--once") == 0 || strcmp(argv[i], "--drain")
                                              == 0)
        {
            *drain_ms = SBW_DEFAULT_DRAIN_MS;

        } else if (strncmp(argv[i], "--drain=", 8) == 0) {
            n = strtol(argv[i] + 8, &end, 10);

            if (end == argv[i] + 8 || *end != '\0' || n < 1
                || n > 86400000)
            {
                fprintf(stderr, "shopify-bc-worker: invalid %s\n", argv[i]);
                return 2;
            }

            *drain_ms = n;

        } else if (strcmp(argv[i], "--help") == 0
                   || strcmp(argv[i], "-h") == 0)
        {
            sbw_usage(stdout);
            return 1;

        } else if (strcmp(argv[i], "--version") == 0) {
            printf("shopify-bc-worker %s\n", SBW_VERSION);
            return 1;

        } else {
            fprintf(stderr, "shopify-bc-worker: unknown argument \"%s\"\n",
                    argv[i]);
            sbw_usage(stderr);
            return 2;
        }
    }

    return 0;
}


static void
sbw_pause(long ms)
{
    while (ms > 0 && !sbw_stop) {
        usleep(100000);
        ms -= 100;
    }
}


/*
 * Connect once and make sure the consumer group exists, retrying with a
 * growing pause until Redis answers or the daemon is stopped.
 */
static int
sbw_prepare_redis(const sbw_config_t *conf)
{
    long          delay;
    unsigned      tries;
    sbw_stream_t  s;

    memset(&s, 0, sizeof(s));
    s.conf = conf;
    delay = 500;

    for (tries = 0; !sbw_stop; tries++) {
        if (sbw_stream_connect(&s) == SBW_STREAM_OK
            && sbw_stream_ensure_group(&s) == SBW_STREAM_OK)
        {
            sbw_stream_close(&s);
            sbw_metrics_set_redis_up(1);
            return 0;
        }

        if (tries % 10 == 0) {
            sbw_log(SBW_LOG_WARN, "redis_unavailable",
                    json_pack("{s:s,s:i}", "message", s.errstr,
                              "failures", (json_int_t) tries + 1));
        }

        sbw_stream_close(&s);
        sbw_pause(delay);
        delay = delay * 2 > 10000 ? 10000 : delay * 2;
    }

    return -1;
}


/*
 * Connect and run the schema migration, retrying like sbw_prepare_redis.
 * A migration that PostgreSQL refuses (permissions, say) is fatal.
 */
static int
sbw_prepare_postgres(const sbw_config_t *conf)
{
    int           from;
    long          delay;
    unsigned      tries;
    long long     archived, seeded;
    sbw_ledger_t  l;

    memset(&l, 0, sizeof(l));
    l.url = conf->database_url;
    delay = 500;

    for (tries = 0; !sbw_stop; tries++) {
        if (sbw_ledger_connect(&l) == 0) {
            if (sbw_ledger_migrate(&l, &from, &archived) != 0
                || sbw_shops_migrate(l.conn, l.errstr, sizeof(l.errstr))
                   != 0
                || sbw_dlq_migrate(l.conn, l.errstr, sizeof(l.errstr)) != 0)
            {
                sbw_log(SBW_LOG_ERROR, "migration_failed",
                        json_pack("{s:s}", "message", l.errstr));
                sbw_ledger_close(&l);
                return -1;
            }

            /* the order sync's own tables (orders_sync.c) */
            if (sbw_sync_migrate(&l, conf, &seeded) != 0) {
                sbw_log(SBW_LOG_ERROR, "migration_failed",
                        json_pack("{s:s,s:s}", "component", "orders-sync",
                                  "message", l.errstr));
                sbw_ledger_close(&l);
                return -1;
            }

            sbw_ledger_close(&l);

            if (seeded > 0) {
                sbw_log(SBW_LOG_INFO, "sku_map_seeded",
                        json_pack("{s:I}", "skus", (json_int_t) seeded));
            }

            if (archived > 0) {
                sbw_log(SBW_LOG_WARN, "ledger_duplicates_archived",
                        json_pack("{s:I,s:s}", "rows", (json_int_t) archived,
                                  "message", "version 1 rows of an order "
                                  "seen under several shops, moved to "
                                  "bc_order_ledger_v1_duplicates"));
            }

            sbw_metrics_set_postgres_up(1);
            sbw_log(SBW_LOG_INFO, "schema_ready",
                    json_pack("{s:i,s:i}", "version",
                              (json_int_t) SBW_LEDGER_SCHEMA_VERSION,
                              "from_version", from));
            return 0;
        }

        if (tries % 10 == 0) {
            sbw_log(SBW_LOG_WARN, "postgres_unavailable",
                    json_pack("{s:s,s:i}", "message", l.errstr,
                              "failures", (json_int_t) tries + 1));
        }

        sbw_pause(delay);
        delay = delay * 2 > 10000 ? 10000 : delay * 2;
    }

    return -1;
}


/*
 * Read the settings, start the metrics endpoint, wait for Redis (group)
 * and PostgreSQL (migration), then run WORKER_CONCURRENCY worker threads
 * until a signal or, with --drain, until they run out of work.  Exit
 * status: 0 after a clean stop, 1 on a startup failure, 2 for bad
 * settings or arguments.
 */
int
main(int argc, char **argv)
{
    int                 rc, i, nstarted;
    char                err[1024], instance[32], metrics[300];
    long                drain_ms;
    pid_t               pid;
    unsigned char       rnd[8];
    sbw_config_t        conf;
    sbw_worker_t      **workers;
    sbw_bc_shared_t    *shared;
    sbw_worker_env_t    env;
    struct sigaction    sa;
    sbw_shopify_conf_t  sconf;

    /* subcommands: webhooks ensure --shop X, tokens encrypt --shop X */
    if (argc > 1 && (strcmp(argv[1], "webhooks") == 0
                     || strcmp(argv[1], "tokens") == 0))
    {
        return sbw_shops_cli(argc - 1, argv + 1);
    }

    /* dlq, ledger and dry-run verbs (cli.c) */
    if (argc > 1 && sbw_cli_is_command(argv[1])) {
        return sbw_cli_main(argc - 1, argv + 1);
    }

    rc = sbw_parse_args(argc, argv, &drain_ms);
    if (rc != 0) {
        return rc == 1 ? 0 : 2;
    }

    if (sbw_config_load(&conf, sbw_getenv_process, NULL, err, sizeof(err))
        != 0)
    {
        sbw_log(SBW_LOG_ERROR, "config_invalid",
                json_pack("{s:s}", "message", err));
        return SBW_EXIT_CONFIG;
    }

    if (sbw_shopify_conf_load(&sconf, sbw_getenv_process, NULL, err,
                              sizeof(err)) != 0)
    {
        sbw_log(SBW_LOG_ERROR, "config_invalid",
                json_pack("{s:s}", "message", err));
        sbw_config_free(&conf);
        return SBW_EXIT_CONFIG;
    }

    sbw_log_set_level(conf.log_level);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sbw_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        sbw_log(SBW_LOG_ERROR, "startup_failed",
                json_pack("{s:s}", "message", "curl_global_init failed"));
        sbw_shopify_conf_free(&sconf);
        sbw_config_free(&conf);
        return 1;
    }

    /* jansson seeds its hash function once; do it before the threads */
    json_object_seed(0);

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        pid = getpid();
        memset(rnd, 0, sizeof(rnd));
        memcpy(rnd, &pid, sizeof(pid));
    }

    for (i = 0; i < (int) sizeof(rnd); i++) {
        snprintf(instance + 2 * i, 3, "%02x", rnd[i]);
    }

    metrics[0] = '\0';

    if (conf.metrics_host != NULL) {
        if (sbw_metrics_start(conf.metrics_host, conf.metrics_port, err,
                              sizeof(err)) != 0)
        {
            sbw_log(SBW_LOG_ERROR, "metrics_failed",
                    json_pack("{s:s}", "message", err));
            curl_global_cleanup();
            sbw_shopify_conf_free(&sconf);
            sbw_config_free(&conf);
            return 1;
        }

        snprintf(metrics, sizeof(metrics), "%s:%d", conf.metrics_host,
                 conf.metrics_port);
    }

    sbw_log(SBW_LOG_INFO, "worker_starting",
            json_pack("{s:s,s:s?,s:i,s:s?,s:s,s:s,s:s,s:i,s:s,s:s,s:s,"
                      "s:s?,s:s,s:i}",
                      "version", SBW_VERSION,
                      "redis_host", conf.redis.host,
                      "redis_port", (json_int_t) conf.redis.port,
                      "redis_socket", conf.redis.path,
                      "stream", conf.stream_key,
                      "group", conf.group,
                      "worker_name", conf.worker_name,
                      "concurrency", (json_int_t) conf.concurrency,
                      "bc_api_base", conf.api_base,
                      "bc_environment", conf.environment,
                      "bc_company_id", conf.company_id,
                      "metrics", metrics[0] ? metrics : NULL,
                      "instance", instance,
                      "drain_ms", (json_int_t) drain_ms));

    rc = 1;
    workers = NULL;
    shared = NULL;
    nstarted = 0;

    if (sbw_prepare_redis(&conf) != 0 || sbw_prepare_postgres(&conf) != 0) {
        rc = sbw_stop ? 0 : 1;
        goto done;
    }

    shared = sbw_bc_shared_new(&conf, &sbw_stop);
    workers = calloc((size_t) conf.concurrency, sizeof(sbw_worker_t *));

    if (shared == NULL || workers == NULL) {
        sbw_log(SBW_LOG_ERROR, "startup_failed",
                json_pack("{s:s}", "message", "out of memory"));
        goto done;
    }

    env.conf = &conf;
    env.shopify = &sconf;
    env.bc_shared = shared;
    env.stop = &sbw_stop;
    env.instance = instance;
    env.drain_ms = drain_ms;

    for (i = 0; i < conf.concurrency; i++) {
        workers[i] = sbw_worker_new(&env, i);

        if (workers[i] == NULL || sbw_worker_start(workers[i]) != 0) {
            sbw_log(SBW_LOG_ERROR, "startup_failed",
                    json_pack("{s:s,s:i}", "message",
                              "cannot start worker thread",
                              "worker", (json_int_t) i));
            sbw_stop = 1;
            break;
        }

        nstarted++;
    }

    if (!sbw_stop && drain_ms == 0
        && sbw_shops_maint_start(&conf, &sconf, &sbw_stop) != 0)
    {
        sbw_log(SBW_LOG_ERROR, "startup_failed",
                json_pack("{s:s}", "message",
                          "cannot start the shops maintenance thread"));
        sbw_stop = 1;
    }

    sbw_log(SBW_LOG_INFO, "worker_started",
            json_pack("{s:i}", "threads", (json_int_t) nstarted));

    for (i = 0; i < conf.concurrency; i++) {
        if (workers[i] != NULL) {
            sbw_worker_join(workers[i]);
        }
    }

    sbw_shops_maint_stop();
    rc = nstarted == conf.concurrency ? 0 : 1;

done:

    if (workers != NULL) {
        for (i = 0; i < conf.concurrency; i++) {
            sbw_worker_free(workers[i]);
        }

        free(workers);
    }

    sbw_bc_shared_free(shared);
    sbw_metrics_stop();

    sbw_log(SBW_LOG_INFO, "worker_stopped", json_pack("{s:i}", "status",
                                                      (json_int_t) rc));

    curl_global_cleanup();
    sbw_shopify_conf_free(&sconf);
    sbw_config_free(&conf);

    return rc;
}
