/*
 * hash.c - the process-wide cache of fetched OpenSSL algorithms, and the
 * hash functions built on it.  OpenSSL 3.0 looks an algorithm up in its
 * provider tables on every implicit fetch (EVP_sha256() and friends);
 * fetching once and reusing the handle keeps that out of the hot path.
 */
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <pthread.h>

#include "crypto_internal.h"
#include "permit/crypto.h"

static permit_algs algs;
static int algs_ok;
static pthread_once_t algs_once = PTHREAD_ONCE_INIT;

static void algs_fetch(void) {
  algs.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  algs.hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  algs.hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
  algs.aes_128_gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
  algs.chacha20_poly1305 = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  algs_ok = algs.sha256 && algs.hmac && algs.hkdf && algs.aes_128_gcm &&
            algs.chacha20_poly1305;
}

int permit_crypto_init(void) {
  pthread_once(&algs_once, algs_fetch);
  return algs_ok ? 0 : PERMIT_ECRYPTO;
}

const permit_algs *permit_algs_get(void) {
  return permit_crypto_init() == 0 ? &algs : NULL;
}

void permit_crypto_cleanup(void) {
  EVP_MD_free(algs.sha256);
  EVP_MAC_free(algs.hmac);
  EVP_KDF_free(algs.hkdf);
  EVP_CIPHER_free(algs.aes_128_gcm);
  EVP_CIPHER_free(algs.chacha20_poly1305);
  algs = (permit_algs){0};
  algs_ok = 0;
}

int permit_random(uint8_t *out, size_t len) {
  /* RAND_bytes takes an int: a larger |len| would be cut, and the caller
   * would believe the whole buffer random. */
  if (len > INT_MAX) return PERMIT_EINVAL;
  return RAND_bytes(out, (int)len) == 1 ? 0 : PERMIT_ECRYPTO;
}

int permit_sha256(const permit_iov *parts, size_t n,
                  uint8_t out[PERMIT_SHA256_LEN]) {
  const permit_algs *a = permit_algs_get();
  if (a == NULL) return PERMIT_ECRYPTO;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx != NULL && EVP_DigestInit_ex2(ctx, a->sha256, NULL) == 1;
  for (size_t i = 0; ok && i < n; i++)
    ok = EVP_DigestUpdate(ctx, parts[i].base, parts[i].len) == 1;
  ok = ok && EVP_DigestFinal_ex(ctx, out, NULL) == 1;
  EVP_MD_CTX_free(ctx);
  return ok ? 0 : PERMIT_ECRYPTO;
}

int permit_hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *data,
                       size_t len, uint8_t out[PERMIT_SHA256_LEN]) {
  const permit_algs *a = permit_algs_get();
  if (a == NULL) return PERMIT_ECRYPTO;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
      OSSL_PARAM_construct_end()};
  EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(a->hmac);
  size_t outlen = 0;
  /* An empty HMAC key is legal; OpenSSL wants a non-NULL pointer for it. */
  static const uint8_t empty[1];
  int ok = ctx != NULL &&
           EVP_MAC_init(ctx, keylen ? key : empty, keylen, params) == 1 &&
           EVP_MAC_update(ctx, data, len) == 1 &&
           EVP_MAC_final(ctx, out, &outlen, PERMIT_SHA256_LEN) == 1 &&
           outlen == PERMIT_SHA256_LEN;
  EVP_MAC_CTX_free(ctx);
  return ok ? 0 : PERMIT_ECRYPTO;
}
