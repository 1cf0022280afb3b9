/*
 * Parsing of the command-line verbs:
 *
 *   dlq list [--shop S] [--status S|all] [--reason R] [--limit N]
 *   dlq show ID
 *   dlq retry ID... | --all [--shop S] [--reason R]   [--note TEXT]
 *   dlq retry ID --payload FILE                       [--note TEXT]
 *   dlq discard ID...                                 [--note TEXT]
 *   ledger list [--shop S] [--state S] [--limit N]
 *   ledger show ORDER_ID
 *   ledger duplicates [--remove]
 *   dry-run FILE [--shop S] | --dlq ID
 *
 * and --json anywhere.  Nothing here touches a service.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_args.h"
#include "shopify_conf.h"


static int sbw_cli_number(const char *s, long long *out);
static int sbw_cli_word(const char *s);
static int sbw_cli_one_of(const char *s, const char *const *set);


static const char *const  sbw_dlq_statuses[] = {
    "open", "retried", "resolved", "discarded", "all", NULL
};

static const char *const  sbw_ledger_states[] = {
    "new", "attempting", "created", "failed", NULL
};


/* the options that take a value, of any verb */
static const char *const  sbw_cli_value_options[] = {
    "--shop", "--status", "--reason", "--state", "--limit", "--payload",
    "--note", "--dlq", NULL
};


const char *
sbw_cli_usage(void)
{
    return
        "usage: shopify-bc-worker dlq list [--shop S] [--status S|all] "
        "[--reason R] [--limit N]\n"
        "       shopify-bc-worker dlq show ID\n"
        "       shopify-bc-worker dlq retry ID... | --all [--shop S] "
        "[--reason R]\n"
        "       shopify-bc-worker dlq retry ID --payload FILE\n"
        "       shopify-bc-worker dlq discard ID... [--note TEXT]\n"
        "       shopify-bc-worker ledger list [--shop S] [--state S] "
        "[--limit N]\n"
        "       shopify-bc-worker ledger show ORDER_ID\n"
        "       shopify-bc-worker ledger duplicates [--remove]\n"
        "       shopify-bc-worker dry-run FILE [--shop S] | --dlq ID\n"
        "       shopify-bc-worker webhooks ensure --shop S\n"
        "       shopify-bc-worker tokens encrypt --shop S < TOKEN\n"
        "every verb takes --json; settings come from the environment\n"
        "exit status: 0 done, 1 failed, 2 usage, 3 not found, 4 refused, "
        "5 duplicates left\n";
}


/*
 * Whether argv[1] of the program is one of the verbs.
 */
int
sbw_cli_is_command(const char *word)
{
    return word != NULL && (strcmp(word, "dlq") == 0
                            || strcmp(word, "ledger") == 0
                            || strcmp(word, "dry-run") == 0);
}


/*
 * A positive decimal number (an id).
 */
static int
sbw_cli_number(const char *s, long long *out)
{
    char       *end;
    long long   v;

    if (s == NULL || *s < '0' || *s > '9') {
        return -1;
    }

    errno = 0;
    v = strtoll(s, &end, 10);

    if (errno != 0 || *end != '\0' || v <= 0) {
        return -1;
    }

    *out = v;
    return 0;
}


/*
 * A reason: lower-case letters, digits and underscores.
 */
static int
sbw_cli_word(const char *s)
{
    size_t  n;

    n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_");

    return n > 0 && n <= 64 && s[n] == '\0';
}


static int
sbw_cli_one_of(const char *s, const char *const *set)
{
    for ( ; *set != NULL; set++) {
        if (strcmp(s, *set) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * Parse argv[0] (the verb: dlq, ledger, dry-run) and what follows.
 * Returns SBW_CLI_OK, or SBW_CLI_USAGE with err set.  --help gives
 * cmd SBW_CLI_HELP.
 */
int
sbw_cli_parse(int argc, char **argv, sbw_cli_args_t *a, char *err,
    size_t errlen)
{
    int          i, first;
    char         shop[256];
    long long    n;
    const char  *verb, *sub, *arg, *val;

    memset(a, 0, sizeof(*a));
    a->limit = 100;
    err[0] = '\0';

    if (argc < 1 || !sbw_cli_is_command(argv[0])) {
        snprintf(err, errlen, "unknown command");
        return SBW_CLI_USAGE;
    }

    verb = argv[0];
    sub = NULL;
    first = 1;

    if (strcmp(verb, "dry-run") == 0) {
        a->cmd = SBW_CLI_DRY_RUN;

    } else {
        if (argc < 2) {
            snprintf(err, errlen, "%s: a sub-command is needed", verb);
            return SBW_CLI_USAGE;
        }

        sub = argv[1];
        first = 2;

        if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
            a->cmd = SBW_CLI_HELP;
            return SBW_CLI_OK;
        }

        if (strcmp(verb, "dlq") == 0) {
            a->cmd = strcmp(sub, "list") == 0 ? SBW_CLI_DLQ_LIST
                     : strcmp(sub, "show") == 0 ? SBW_CLI_DLQ_SHOW
                     : strcmp(sub, "retry") == 0 ? SBW_CLI_DLQ_RETRY
                     : strcmp(sub, "discard") == 0 ? SBW_CLI_DLQ_DISCARD
                     : SBW_CLI_NONE;

        } else {
            a->cmd = strcmp(sub, "list") == 0 ? SBW_CLI_LEDGER_LIST
                     : strcmp(sub, "show") == 0 ? SBW_CLI_LEDGER_SHOW
                     : strcmp(sub, "duplicates") == 0
                       ? SBW_CLI_LEDGER_DUPLICATES
                     : SBW_CLI_NONE;
        }

        if (a->cmd == SBW_CLI_NONE) {
            snprintf(err, errlen, "%s: unknown sub-command \"%s\"", verb,
                     sub);
            return SBW_CLI_USAGE;
        }
    }

    for (i = first; i < argc; i++) {
        arg = argv[i];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            a->cmd = SBW_CLI_HELP;
            return SBW_CLI_OK;
        }

        if (strcmp(arg, "--json") == 0) {
            a->json = 1;
            continue;
        }

        if (strcmp(arg, "--all") == 0 && a->cmd == SBW_CLI_DLQ_RETRY) {
            a->all = 1;
            continue;
        }

        if (strcmp(arg, "--remove") == 0
            && a->cmd == SBW_CLI_LEDGER_DUPLICATES)
        {
            a->remove = 1;
            continue;
        }

        if (strncmp(arg, "--", 2) == 0) {
            if (!sbw_cli_one_of(arg, sbw_cli_value_options)) {
                snprintf(err, errlen, "unknown option \"%s\"", arg);
                return SBW_CLI_USAGE;
            }

            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", arg);
                return SBW_CLI_USAGE;
            }

            val = argv[++i];

            if (strcmp(arg, "--shop") == 0
                && (a->cmd == SBW_CLI_DLQ_LIST || a->cmd == SBW_CLI_DLQ_RETRY
                    || a->cmd == SBW_CLI_LEDGER_LIST
                    || a->cmd == SBW_CLI_DRY_RUN))
            {
                if (val[0] == '\0' || strlen(val) > 255) {
                    snprintf(err, errlen, "invalid --shop");
                    return SBW_CLI_USAGE;
                }

                a->shop = val;

            } else if (strcmp(arg, "--status") == 0
                       && a->cmd == SBW_CLI_DLQ_LIST)
            {
                if (!sbw_cli_one_of(val, sbw_dlq_statuses)) {
                    snprintf(err, errlen, "invalid --status \"%s\" (open, "
                             "retried, resolved, discarded or all)", val);
                    return SBW_CLI_USAGE;
                }

                a->status = val;

            } else if (strcmp(arg, "--reason") == 0
                       && (a->cmd == SBW_CLI_DLQ_LIST
                           || a->cmd == SBW_CLI_DLQ_RETRY))
            {
                if (!sbw_cli_word(val)) {
                    snprintf(err, errlen, "invalid --reason \"%s\"", val);
                    return SBW_CLI_USAGE;
                }

                a->reason = val;

            } else if (strcmp(arg, "--state") == 0
                       && a->cmd == SBW_CLI_LEDGER_LIST)
            {
                if (!sbw_cli_one_of(val, sbw_ledger_states)) {
                    snprintf(err, errlen, "invalid --state \"%s\" (new, "
                             "attempting, created or failed)", val);
                    return SBW_CLI_USAGE;
                }

                a->state = val;

            } else if (strcmp(arg, "--limit") == 0
                       && (a->cmd == SBW_CLI_DLQ_LIST
                           || a->cmd == SBW_CLI_LEDGER_LIST))
            {
                if (sbw_cli_number(val, &n) != 0 || n > 100000) {
                    snprintf(err, errlen, "invalid --limit \"%s\"", val);
                    return SBW_CLI_USAGE;
                }

                a->limit = (long) n;

            } else if (strcmp(arg, "--payload") == 0
                       && a->cmd == SBW_CLI_DLQ_RETRY)
            {
                a->payload_file = val;

            } else if (strcmp(arg, "--note") == 0
                       && (a->cmd == SBW_CLI_DLQ_RETRY
                           || a->cmd == SBW_CLI_DLQ_DISCARD))
            {
                a->note = val;

            } else if (strcmp(arg, "--dlq") == 0
                       && a->cmd == SBW_CLI_DRY_RUN)
            {
                if (sbw_cli_number(val, &a->dlq_id) != 0) {
                    snprintf(err, errlen, "invalid dead letter id \"%s\"",
                             val);
                    return SBW_CLI_USAGE;
                }

            } else {
                snprintf(err, errlen, "unknown option \"%s\"", arg);
                return SBW_CLI_USAGE;
            }

            continue;
        }

        /* positional arguments */
        switch (a->cmd) {

        case SBW_CLI_DLQ_SHOW:
        case SBW_CLI_DLQ_RETRY:
        case SBW_CLI_DLQ_DISCARD:
            if (sbw_cli_number(arg, &n) != 0) {
                snprintf(err, errlen, "invalid dead letter id \"%s\"", arg);
                return SBW_CLI_USAGE;
            }

            if (a->nids == SBW_CLI_MAX_IDS) {
                snprintf(err, errlen, "at most %d ids at once",
                         SBW_CLI_MAX_IDS);
                return SBW_CLI_USAGE;
            }

            a->ids[a->nids++] = n;
            break;

        case SBW_CLI_LEDGER_SHOW:
            if (a->order_id != 0 || sbw_cli_number(arg, &a->order_id) != 0)
            {
                snprintf(err, errlen, "one Shopify order id is needed, not "
                         "\"%s\"", arg);
                return SBW_CLI_USAGE;
            }

            break;

        case SBW_CLI_DRY_RUN:
            if (a->file != NULL) {
                snprintf(err, errlen, "dry-run takes one file");
                return SBW_CLI_USAGE;
            }

            a->file = arg;
            break;

        default:
            snprintf(err, errlen, "unexpected argument \"%s\"", arg);
            return SBW_CLI_USAGE;
        }
    }

    /* what each verb needs */
    switch (a->cmd) {

    case SBW_CLI_DLQ_SHOW:
        if (a->nids != 1) {
            snprintf(err, errlen, "dlq show needs one id");
            return SBW_CLI_USAGE;
        }

        break;

    case SBW_CLI_DLQ_RETRY:
        if (a->all && a->nids > 0) {
            snprintf(err, errlen, "dlq retry: ids or --all, not both");
            return SBW_CLI_USAGE;
        }

        if (!a->all && a->nids == 0) {
            snprintf(err, errlen, "dlq retry needs ids or --all");
            return SBW_CLI_USAGE;
        }

        if (!a->all && (a->shop != NULL || a->reason != NULL)) {
            snprintf(err, errlen, "--shop and --reason go with --all");
            return SBW_CLI_USAGE;
        }

        if (a->payload_file != NULL && (a->all || a->nids != 1)) {
            snprintf(err, errlen, "--payload goes with exactly one id");
            return SBW_CLI_USAGE;
        }

        break;

    case SBW_CLI_DLQ_DISCARD:
        if (a->nids == 0) {
            snprintf(err, errlen, "dlq discard needs ids");
            return SBW_CLI_USAGE;
        }

        break;

    case SBW_CLI_LEDGER_SHOW:
        if (a->order_id == 0) {
            snprintf(err, errlen, "ledger show needs a Shopify order id");
            return SBW_CLI_USAGE;
        }

        break;

    case SBW_CLI_DRY_RUN:
        if ((a->file == NULL) == (a->dlq_id == 0)) {
            snprintf(err, errlen, "dry-run needs a FILE or --dlq ID");
            return SBW_CLI_USAGE;
        }

        if (a->shop != NULL && a->file == NULL) {
            snprintf(err, errlen, "--shop goes with a FILE (a dead letter "
                     "knows its shop)");
            return SBW_CLI_USAGE;
        }

        if (a->shop != NULL
            && sbw_shop_domain_normalize(a->shop, shop, sizeof(shop)) != 0)
        {
            snprintf(err, errlen, "--shop must be a shop domain "
                     "(<name>.myshopify.com)");
            return SBW_CLI_USAGE;
        }

        break;

    default:
        break;
    }

    if (a->cmd == SBW_CLI_DLQ_LIST && a->status == NULL) {
        a->status = "open";
    }

    return SBW_CLI_OK;
}
