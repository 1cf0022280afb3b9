/*
 * Shopify orders/create payload -> Business Central salesOrder request.
 *
 * The mapping is a pure function of the order JSON and the mapping
 * settings: no I/O, no clock, no globals, so the unit tests can run it
 * over every fixture and compare with the reference BC orders.
 */

#ifndef SBW_ORDER_MAP_H
#define SBW_ORDER_MAP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "text.h"


/* sbw_order_map() results */
#define SBW_MAP_OK           0
#define SBW_MAP_UNSUPPORTED  1    /* lines the worker cannot book yet */
#define SBW_MAP_INVALID      2    /* not a usable order payload */
#define SBW_MAP_NOMEM       -1
#define SBW_MAP_SKIPPED      3    /* internal: a line with nothing left */

/* ledger / log error codes for the two refusals above */
#define SBW_MAP_ERR_UNSUPPORTED  "Mapping_UnsupportedLines"
#define SBW_MAP_ERR_INVALID      "Mapping_InvalidOrder"
#define SBW_MAP_ERR_MISMATCH     "Mapping_TotalMismatch"

/* prefix of every externalDocumentNumber the worker writes */
#define SBW_EXTDOC_PREFIX  "SHOPIFY-"

/*
 * What the mapping accepts as real.  A line's quantity is 1 to
 * SBW_MAP_MAX_QUANTITY.  Every amount (a price, a discount allocation, a
 * line total before or after its discount, the order total) is 0 to
 * SBW_MAP_MAX_CENTS: 10^13 cents, 100,000,000,000.00 in the order's
 * currency.  Both are far beyond any order a shop takes, and anything
 * outside them is refused as Mapping_InvalidOrder rather than booked.
 * quantity x price can still exceed int64_t within these bounds, so it
 * is computed with an overflow check.
 */
#define SBW_MAP_MAX_QUANTITY  1000000
#define SBW_MAP_MAX_CENTS     10000000000000LL


typedef enum {
    SBW_LINE_COMMENT = 0,
    SBW_LINE_ITEM,
    SBW_LINE_ACCOUNT
} sbw_line_type_e;


typedef struct {
    sbw_line_type_e   type;
    const char       *role;           /* "note", "item", "shipping", "tip",
                                         "gift_card_sold", "custom_line" */
    char             *number;         /* lineObjectNumber, NULL if none */
    char             *description;    /* already cut to 100 characters */
    int64_t           shopify_id;     /* line item or shipping line id */
    int64_t           quantity;
    int64_t           unit_price;     /* cents */
    int64_t           discount;       /* cents */
    int64_t           amount;         /* quantity x price - discount */
    const char       *tax_code;       /* taxCode to send, NULL: BC's */
    int64_t           sequence;       /* sequence (Line No.) to ask for,
                                         0: BC numbers the line */
} sbw_bc_line_t;


typedef struct {
    int64_t          order_id;
    char            *order_name;
    char            *customer_number;
    char            *currency;        /* NULL when the order has none */
    int              taxes_included;
    char             order_date[11];  /* "YYYY-MM-DD" or "" */
    char             external_doc[SBW_CODE35_BUFLEN];
    sbw_bc_line_t   *lines;
    size_t           nlines;
    int64_t          lines_total;     /* sum of line amounts, cents */
    int64_t          shopify_total;   /* what BC's total must be; -1: ? */
    int              ntax_lines;      /* tax amounts Shopify rounded */
    char             updated_at[40];  /* Shopify's updated_at, or "" */
} sbw_bc_order_t;


typedef struct {
    const json_t  *sku_map;           /* object sku -> item no, or NULL */
    const json_t  *variant_map;       /* object "variant id" -> item no */
    const char    *customer_number;
    const char    *shipping_account;
    const char    *tip_account;       /* NULL: such lines are refused */
    const char    *gift_card_account;
    const char    *custom_line_account;
    const char    *nontaxable_code;   /* taxCode of lines Shopify did not
                                         tax; NULL or "none": not sent */
    const char    *tax_account;       /* tax_line: Shopify's tax here */
    int            money;             /* SBW_MONEY_SHOP / _PRESENTMENT */
    int            tax_line;          /* BC365_TAX_POLICY=line */
    int            use_current;       /* orders/updated: the current
                                         quantities and total */
} sbw_map_conf_t;


json_t *sbw_order_parse(const char *body, size_t len, json_error_t *err);
int sbw_order_id(const json_t *order, int64_t *id);
void sbw_external_doc_number(int64_t order_id, char *out, size_t len);
int sbw_map_money(const sbw_map_conf_t *mc, const json_t *obj,
    const char *field, int64_t *cents);
int sbw_order_map(const sbw_map_conf_t *mc, const json_t *order,
    sbw_bc_order_t *out, char *err, size_t errlen);
char *sbw_order_payload(const sbw_bc_order_t *o);
char *sbw_order_line_payload(const sbw_bc_line_t *l, int amounts_only);
void sbw_order_free(sbw_bc_order_t *o);


#endif /* SBW_ORDER_MAP_H */
