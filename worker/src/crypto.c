/*
 * AES-256-GCM token encryption (see crypto.h for the format).
 *
 * Every failure, whatever its cause (a malformed blob, a wrong key, a
 * blob moved to another shop, a flipped bit), is the same NULL: the
 * caller only needs to know that the token cannot be used.
 */

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "crypto.h"


static int sbw_b64_decode(const char *in, size_t inlen, unsigned char *out,
    size_t *outlen);


/*
 * 64 hex characters into 32 bytes.  Returns 0, or -1 for anything else
 * (another length, a non-hex character).
 */
int
sbw_token_key_parse(const char *hex, unsigned char *key)
{
    size_t  i;
    int     hi, lo;

    if (hex == NULL || strlen(hex) != 2 * SBW_TOKEN_KEY_LEN) {
        return -1;
    }

    for (i = 0; i < SBW_TOKEN_KEY_LEN; i++) {
        hi = OPENSSL_hexchar2int((unsigned char) hex[2 * i]);
        lo = OPENSSL_hexchar2int((unsigned char) hex[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(key, SBW_TOKEN_KEY_LEN);
            return -1;
        }

        key[i] = (unsigned char) (hi << 4 | lo);
    }

    return 0;
}


/*
 * Encrypt a token for the shop aad.  Returns a malloc'ed "v1.<b64>"
 * string, or NULL (no randomness, no memory, an empty or oversized
 * token).
 */
char *
sbw_token_encrypt(const unsigned char *key, const char *aad,
    const char *plain)
{
    int              len, ok;
    char            *out;
    size_t           plen, rawlen, b64len;
    unsigned char   *raw;
    EVP_CIPHER_CTX  *ctx;

    plen = plain ? strlen(plain) : 0;

    if (plen == 0 || plen > SBW_TOKEN_MAX_PLAIN || aad == NULL) {
        return NULL;
    }

    rawlen = SBW_TOKEN_NONCE_LEN + plen + SBW_TOKEN_TAG_LEN;
    raw = malloc(rawlen);
    b64len = 4 * ((rawlen + 2) / 3);
    out = malloc(sizeof(SBW_TOKEN_PREFIX) + b64len);
    ctx = EVP_CIPHER_CTX_new();

    ok = raw != NULL && out != NULL && ctx != NULL
         && RAND_bytes(raw, SBW_TOKEN_NONCE_LEN) == 1
         && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL)
            == 1
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN,
                                SBW_TOKEN_NONCE_LEN, NULL) == 1
         && EVP_EncryptInit_ex(ctx, NULL, NULL, key, raw) == 1
         && EVP_EncryptUpdate(ctx, NULL, &len, (const unsigned char *) aad,
                              (int) strlen(aad)) == 1
         && EVP_EncryptUpdate(ctx, raw + SBW_TOKEN_NONCE_LEN, &len,
                              (const unsigned char *) plain, (int) plen)
            == 1
         && (size_t) len == plen
         && EVP_EncryptFinal_ex(ctx, raw + SBW_TOKEN_NONCE_LEN + len, &len)
            == 1
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG,
                                SBW_TOKEN_TAG_LEN,
                                raw + SBW_TOKEN_NONCE_LEN + plen) == 1;

    if (ok) {
        memcpy(out, SBW_TOKEN_PREFIX, sizeof(SBW_TOKEN_PREFIX) - 1);
        EVP_EncodeBlock((unsigned char *) out + sizeof(SBW_TOKEN_PREFIX) - 1,
                        raw, (int) rawlen);

    } else {
        free(out);
        out = NULL;
    }

    EVP_CIPHER_CTX_free(ctx);

    if (raw != NULL) {
        OPENSSL_cleanse(raw, rawlen);
        free(raw);
    }

    return out;
}


/*
 * Standard base64 with padding, strictly: a length that is a multiple
 * of 4, no other characters.  EVP_DecodeBlock() counts the padding as
 * zero bytes, so they are taken off here.
 */
static int
sbw_b64_decode(const char *in, size_t inlen, unsigned char *out,
    size_t *outlen)
{
    int             n;
    size_t          pad, i;
    unsigned char  *check;

    if (inlen == 0 || inlen % 4 != 0) {
        return -1;
    }

    for (i = 0; i < inlen; i++) {
        if (!isalnum((unsigned char) in[i]) && in[i] != '+' && in[i] != '/'
            && !(in[i] == '=' && i >= inlen - 2))
        {
            return -1;
        }
    }

    pad = (in[inlen - 1] == '=') + (in[inlen - 2] == '=');

    if (in[inlen - 1] != '=' && in[inlen - 2] == '=') {
        return -1;
    }

    n = EVP_DecodeBlock(out, (const unsigned char *) in, (int) inlen);
    if (n < 0 || (size_t) n < pad) {
        return -1;
    }

    *outlen = (size_t) n - pad;

    /* canonical only: unused bits before the padding must be zero */
    check = malloc(inlen + 1);
    if (check == NULL) {
        return -1;
    }

    EVP_EncodeBlock(check, out, (int) *outlen);
    n = memcmp(check, in, inlen);
    free(check);

    return n == 0 ? 0 : -1;
}


/*
 * Decrypt a stored token of the shop aad.  Returns the malloc'ed
 * plaintext (release it with sbw_token_free(), which wipes it), or NULL
 * when the blob is malformed, of another version, of another shop,
 * under another key, or altered.
 */
char *
sbw_token_decrypt(const unsigned char *key, const char *aad,
    const char *blob)
{
    int              len, ok;
    char            *plain;
    size_t           blen, rawlen, clen;
    const char      *b64;
    unsigned char   *raw;
    EVP_CIPHER_CTX  *ctx;

    if (blob == NULL || aad == NULL
        || strncmp(blob, SBW_TOKEN_PREFIX, sizeof(SBW_TOKEN_PREFIX) - 1)
           != 0)
    {
        return NULL;
    }

    b64 = blob + sizeof(SBW_TOKEN_PREFIX) - 1;
    blen = strlen(b64);

    if (blen > 4 * ((SBW_TOKEN_NONCE_LEN + SBW_TOKEN_MAX_PLAIN
                     + SBW_TOKEN_TAG_LEN + 2) / 3))
    {
        return NULL;
    }

    raw = malloc(blen / 4 * 3 + 3);
    if (raw == NULL) {
        return NULL;
    }

    if (sbw_b64_decode(b64, blen, raw, &rawlen) != 0
        || rawlen <= SBW_TOKEN_NONCE_LEN + SBW_TOKEN_TAG_LEN)
    {
        free(raw);
        return NULL;
    }

    clen = rawlen - SBW_TOKEN_NONCE_LEN - SBW_TOKEN_TAG_LEN;
    plain = malloc(clen + 1);
    ctx = EVP_CIPHER_CTX_new();

    ok = plain != NULL && ctx != NULL
         && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL)
            == 1
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN,
                                SBW_TOKEN_NONCE_LEN, NULL) == 1
         && EVP_DecryptInit_ex(ctx, NULL, NULL, key, raw) == 1
         && EVP_DecryptUpdate(ctx, NULL, &len, (const unsigned char *) aad,
                              (int) strlen(aad)) == 1
         && EVP_DecryptUpdate(ctx, (unsigned char *) plain, &len,
                              raw + SBW_TOKEN_NONCE_LEN, (int) clen) == 1
         && (size_t) len == clen
         && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG,
                                SBW_TOKEN_TAG_LEN,
                                raw + SBW_TOKEN_NONCE_LEN + clen) == 1
         && EVP_DecryptFinal_ex(ctx, (unsigned char *) plain + len, &len)
            == 1
         && memchr(plain, '\0', clen) == NULL;

    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(raw, rawlen);
    free(raw);

    if (!ok) {
        if (plain != NULL) {
            OPENSSL_cleanse(plain, clen);
            free(plain);
        }

        return NULL;
    }

    plain[clen] = '\0';
    return plain;
}


/*
 * Wipe and free a decrypted token.
 */
void
sbw_token_free(char *plain)
{
    if (plain != NULL) {
        OPENSSL_cleanse(plain, strlen(plain));
        free(plain);
    }
}
