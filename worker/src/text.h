/*
 * Text helpers shaped by Business Central's field rules: Text[n] and
 * Code[n] lengths are counted in characters, Code fields are stored
 * upper case and trimmed, and OData string literals double their quotes.
 */

#ifndef SBW_TEXT_H
#define SBW_TEXT_H

#include <stddef.h>


/* BC field lengths used by the worker */
#define SBW_BC_DESCRIPTION_LEN  100
#define SBW_BC_CODE35_LEN       35

/* buffer able to hold any Code[35] value, 4 bytes per character at most */
#define SBW_CODE35_BUFLEN       (SBW_BC_CODE35_LEN * 4 + 1)


size_t sbw_utf8_prefix(const char *s, size_t max_chars);
char *sbw_utf8_truncate(const char *s, size_t max_chars);
size_t sbw_utf8_length(const char *s);
void sbw_code_normalize(const char *in, char *out, size_t outlen,
    size_t max_chars);
char *sbw_odata_quote(const char *s);
int sbw_ascii_lower(const char *in, char *out, size_t outlen);


#endif /* SBW_TEXT_H */
