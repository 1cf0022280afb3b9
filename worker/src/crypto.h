/*
 * Shopify tokens at rest: AES-256-GCM (OpenSSL EVP) with the shop
 * domain as additional authenticated data, so a token copied to another
 * shop's row does not decrypt.  The stored form, shared with the nginx
 * module, is
 *
 *   "v1." base64(12-byte random nonce || ciphertext || 16-byte tag)
 *
 * (standard base64 with padding).  The key is 32 bytes, given as 64 hex
 * characters in SHOPIFY_TOKEN_KEY.
 */

#ifndef SBW_CRYPTO_H
#define SBW_CRYPTO_H

#include <stddef.h>


#define SBW_TOKEN_KEY_LEN    32
#define SBW_TOKEN_NONCE_LEN  12
#define SBW_TOKEN_TAG_LEN    16
#define SBW_TOKEN_PREFIX     "v1."

/* longest plaintext token accepted (Shopify's are well under 200) */
#define SBW_TOKEN_MAX_PLAIN  4096


int sbw_token_key_parse(const char *hex, unsigned char *key);
char *sbw_token_encrypt(const unsigned char *key, const char *aad,
    const char *plain);
char *sbw_token_decrypt(const unsigned char *key, const char *aad,
    const char *blob);
void sbw_token_free(char *plain);


#endif /* SBW_CRYPTO_H */
