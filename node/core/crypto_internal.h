/*
 * crypto_internal.h - the algorithm implementations fetched once by
 * permit_crypto_init() (hash.c), shared by crypto.c, hpke.c and merkle.c.
 * Valid after a successful permit_crypto_init() until
 * permit_crypto_cleanup().
 */
#ifndef PERMIT_CRYPTO_INTERNAL_H
#define PERMIT_CRYPTO_INTERNAL_H

#include <openssl/evp.h>
#include <openssl/kdf.h>

typedef struct permit_algs {
  EVP_MD *sha256;
  EVP_MD *sha512; /* Ed25519 batch verification's hashes */
  EVP_MAC *hmac;
  EVP_KDF *hkdf;
  EVP_CIPHER *aes_128_gcm;
  EVP_CIPHER *chacha20_poly1305;
} permit_algs;

/* The fetched algorithms, or NULL when permit_crypto_init() failed. */
const permit_algs *permit_algs_get(void);

/*
 * The OpenSSL key inside |key|, borrowed (valid while |key| lives), for the
 * transport's certificates and TLS contexts.
 */
struct permit_sign_key;
EVP_PKEY *permit_sign_key_evp(const struct permit_sign_key *key);

/*
 * One per-thread state serves hash.c and crypto.c: hash.c makes it on a
 * thread's first use and frees it when the thread ends (or, for the
 * thread that exits or calls permit_crypto_cleanup(), then).  crypto.c
 * keeps its contexts behind the slot this returns (NULL when the state
 * cannot be made); they are freed with permit_crypto_thread_free().
 */
void **permit_thread_crypto_slot(void);
void permit_crypto_thread_free(void *contexts);

#endif
