/*
 * The operator's verbs of shopify-bc-worker (cli.c): dlq, ledger and
 * dry-run.
 */

#ifndef SBW_CLI_H
#define SBW_CLI_H

#include "cli_args.h"


int sbw_cli_main(int argc, char **argv);


#endif /* SBW_CLI_H */
