/*
 * Shopify money values are decimal strings ("1000.80").  They are turned
 * into signed integer cents here and never pass through floating point.
 */

#ifndef SBW_MONEY_H
#define SBW_MONEY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>


/* longest text sbw_money_format() writes, terminating NUL included */
#define SBW_MONEY_BUFLEN  32


int sbw_money_parse(const char *s, int64_t *cents);
int sbw_money_from_json(const json_t *v, int64_t *cents);
void sbw_money_format(int64_t cents, char *buf, size_t len);


#endif /* SBW_MONEY_H */
