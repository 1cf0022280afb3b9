/*
 * Command-line verbs of shopify-bc-worker (dead letters, ledger, dry
 * run): argument parsing, kept apart from the actions so that it can be
 * unit-tested.
 */

#ifndef SBW_CLI_ARGS_H
#define SBW_CLI_ARGS_H

#include <stddef.h>


/* exit statuses of the verbs (README: "Exit statuses") */
#define SBW_CLI_OK          0
#define SBW_CLI_FAILED      1     /* PostgreSQL, Redis or BC failed */
#define SBW_CLI_USAGE       2     /* bad arguments or settings */
#define SBW_CLI_NOT_FOUND   3     /* no such dead letter or order */
#define SBW_CLI_REFUSED     4     /* wrong state, invalid payload */
#define SBW_CLI_DUPLICATES  5     /* duplicates found and left */

#define SBW_CLI_MAX_IDS  256


typedef enum {
    SBW_CLI_NONE = 0,
    SBW_CLI_HELP,
    SBW_CLI_DLQ_LIST,
    SBW_CLI_DLQ_SHOW,
    SBW_CLI_DLQ_RETRY,
    SBW_CLI_DLQ_DISCARD,
    SBW_CLI_LEDGER_LIST,
    SBW_CLI_LEDGER_SHOW,
    SBW_CLI_LEDGER_DUPLICATES,
    SBW_CLI_DRY_RUN
} sbw_cli_cmd_e;


typedef struct {
    sbw_cli_cmd_e   cmd;
    int             json;
    int             all;
    int             remove;
    long            limit;
    const char     *shop;          /* lower-cased by the query */
    const char     *status;        /* dead letter status, or "all" */
    const char     *reason;
    const char     *state;         /* ledger state */
    const char     *payload_file;  /* dlq retry --payload */
    const char     *file;          /* dry-run FILE */
    const char     *note;          /* dlq discard/retry --note */
    long long       dlq_id;        /* dry-run --dlq */
    long long       order_id;      /* ledger show */
    long long       ids[SBW_CLI_MAX_IDS];
    size_t          nids;
} sbw_cli_args_t;


int sbw_cli_is_command(const char *word);
int sbw_cli_parse(int argc, char **argv, sbw_cli_args_t *a, char *err,
    size_t errlen);
const char *sbw_cli_usage(void);


#endif /* SBW_CLI_ARGS_H */
