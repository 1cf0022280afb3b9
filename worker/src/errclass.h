/*
 * What an error means for an order: retry it later (and whether BC may
 * have done the work anyway) or park it in the dead-letter store.  The
 * decision is taken from BC's error code family first and the HTTP
 * status second, so that one rule covers BC's own answers, gateway
 * answers without a BC body and the worker's own failures.
 */

#ifndef SBW_ERRCLASS_H
#define SBW_ERRCLASS_H

#include "bc.h"


sbw_bc_class_e sbw_errclass(long status, int curl_code, const char *code);
const char *sbw_dlq_reason(const char *code);


#endif /* SBW_ERRCLASS_H */
