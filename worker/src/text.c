/*
 * UTF-8 aware truncation and BC Code[n] normalisation.
 *
 * Business Central runs on .NET, where a string's length is counted in
 * UTF-16 code units.  A character outside the Basic Multilingual Plane
 * (most emoji) therefore takes two of the 100 "characters" of a Text[100]
 * field.  The helpers below count the same way, which keeps every value
 * within BC's limit and never cuts a UTF-8 sequence in half.
 */

#include <stdlib.h>
#include <string.h>

#include "text.h"


static size_t sbw_utf8_seq(const unsigned char *p, size_t *units);


/*
 * Length in bytes of the UTF-8 sequence starting at p, and the number of
 * UTF-16 code units the character needs.  A byte that does not start a
 * well-formed sequence is taken as a single one-unit character so that
 * malformed input still makes progress (jansson only hands out valid
 * UTF-8, so this is a safety net rather than a feature).
 */
static size_t
sbw_utf8_seq(const unsigned char *p, size_t *units)
{
    size_t  n, i;

    *units = 1;

    if (p[0] < 0x80) {
        return 1;
    }

    if ((p[0] & 0xe0) == 0xc0) {
        n = 2;

    } else if ((p[0] & 0xf0) == 0xe0) {
        n = 3;

    } else if ((p[0] & 0xf8) == 0xf0) {
        n = 4;

    } else {
        return 1;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 1;
        }
    }

    if (n == 4) {
        *units = 2;
    }

    return n;
}


/*
 * Number of bytes of s that make up its first max_chars characters
 * (UTF-16 units, see above).  A character that would straddle the limit
 * is left out whole.
 */
size_t
sbw_utf8_prefix(const char *s, size_t max_chars)
{
    size_t                used, len, units, off;
    const unsigned char  *p;

    p = (const unsigned char *) s;
    used = 0;
    off = 0;

    while (p[off] != '\0') {
        len = sbw_utf8_seq(p + off, &units);

        if (used + units > max_chars) {
            break;
        }

        used += units;
        off += len;
    }

    return off;
}


/*
 * Length of s in BC characters (UTF-16 code units).
 */
size_t
sbw_utf8_length(const char *s)
{
    size_t                used, units, off;
    const unsigned char  *p;

    p = (const unsigned char *) s;
    used = 0;
    off = 0;

    while (p[off] != '\0') {
        off += sbw_utf8_seq(p + off, &units);
        used += units;
    }

    return used;
}


/*
 * A newly allocated copy of s cut to max_chars characters.  Returns NULL
 * only when memory runs out.
 */
char *
sbw_utf8_truncate(const char *s, size_t max_chars)
{
    size_t   n;
    char    *out;

    n = sbw_utf8_prefix(s, max_chars);

    out = malloc(n + 1);
    if (out == NULL) {
        return NULL;
    }

    memcpy(out, s, n);
    out[n] = '\0';

    return out;
}


/*
 * Store in out the value BC keeps for a Code[max_chars] field given in:
 * surrounding blanks removed, ASCII letters upper-cased, then cut to
 * max_chars characters.  Non-ASCII letters are left as they are; the
 * worker only ever builds ASCII codes, and guessing .NET's culture rules
 * for the rest would be worse than not touching them.  out is always
 * NUL-terminated.
 */
void
sbw_code_normalize(const char *in, char *out, size_t outlen, size_t max_chars)
{
    size_t       len, n, i;
    const char  *start;

    if (outlen == 0) {
        return;
    }

    start = in;

    while (*start == ' ' || *start == '\t' || *start == '\r'
           || *start == '\n')
    {
        start++;
    }

    len = strlen(start);

    while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'
                       || start[len - 1] == '\r' || start[len - 1] == '\n'))
    {
        len--;
    }

    n = 0;

    for (i = 0; i < len && n + 1 < outlen; i++) {
        out[n++] = start[i];
    }

    out[n] = '\0';

    for (i = 0; i < n; i++) {
        if (out[i] >= 'a' && out[i] <= 'z') {
            out[i] = (char) (out[i] - 'a' + 'A');
        }
    }

    n = sbw_utf8_prefix(out, max_chars);
    out[n] = '\0';

    /* cutting may expose trailing blanks again; BC would trim them too */
    while (n > 0 && out[n - 1] == ' ') {
        out[--n] = '\0';
    }
}


/*
 * An OData string literal for s: wrapped in single quotes, with every
 * single quote inside doubled.  The caller frees the result; NULL means
 * out of memory.
 */
char *
sbw_odata_quote(const char *s)
{
    size_t       n;
    char        *out, *q;
    const char  *p;

    n = 3;

    for (p = s; *p; p++) {
        n += (*p == '\'') ? 2 : 1;
    }

    out = malloc(n);
    if (out == NULL) {
        return NULL;
    }

    q = out;
    *q++ = '\'';

    for (p = s; *p; p++) {
        *q++ = *p;

        if (*p == '\'') {
            *q++ = '\'';
        }
    }

    *q++ = '\'';
    *q = '\0';

    return out;
}


/*
 * Copy in to out with ASCII letters in lower case: the form in which the
 * worker stores and compares shop domains (DNS names are ASCII and case
 * does not matter in them).  Returns 0, or -1 when in does not fit in
 * outlen bytes (out then holds an empty string).
 */
int
sbw_ascii_lower(const char *in, char *out, size_t outlen)
{
    size_t  i, len;

    len = strlen(in);

    if (outlen == 0) {
        return -1;
    }

    if (len >= outlen) {
        out[0] = '\0';
        return -1;
    }

    for (i = 0; i < len; i++) {
        out[i] = (in[i] >= 'A' && in[i] <= 'Z')
                 ? (char) (in[i] - 'A' + 'a') : in[i];
    }

    out[len] = '\0';
    return 0;
}
