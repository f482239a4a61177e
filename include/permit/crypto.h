/*
 * permit/crypto.h - the primitives Permit is built from, on OpenSSL 3.0:
 * SHA-256, HMAC-SHA256, HKDF-SHA256, AEAD (AES-128-GCM and
 * ChaCha20-Poly1305), Ed25519 identity keys, X25519 sealing keys, key
 * files, and the pairwise pseudonym of protocol.md section 4.
 *
 * The algorithm implementations are fetched from OpenSSL once, by
 * permit_crypto_init(), and shared by every thread afterwards.  Each
 * thread also keeps a few reusable OpenSSL contexts, made on its first
 * call and freed when it ends.
 */
#ifndef PERMIT_CRYPTO_H
#define PERMIT_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "permit/error.h"

#define PERMIT_SHA256_LEN 32
#define PERMIT_ED25519_PUB_LEN 32
#define PERMIT_ED25519_SEED_LEN 32
#define PERMIT_ED25519_SIG_LEN 64
#define PERMIT_X25519_LEN 32
#define PERMIT_AEAD_NONCE_LEN 12
#define PERMIT_AEAD_TAG_LEN 16
/* Hex of the first 8 bytes of SHA-256(public key), plus the NUL. */
#define PERMIT_KEY_ID_LEN 17
/* RFC 5869: HKDF-SHA256 output is at most 255 hash lengths. */
#define PERMIT_HKDF_MAX_OUT (255 * PERMIT_SHA256_LEN)

/*
 * Fetches every algorithm Permit uses.  Safe to call many times and from
 * many threads; every other function here calls it on first use.  Returns
 * 0, or PERMIT_ECRYPTO when OpenSSL lacks an algorithm.
 */
int permit_crypto_init(void);

/*
 * Releases the fetched algorithms.  Call once at process exit, when no
 * other thread uses this module, so leak checkers stay quiet.
 */
void permit_crypto_cleanup(void);

/* Fills |len| bytes of |out| from the OpenSSL CSPRNG.  Requests of up to
 * 64 bytes are served from a per-thread buffer of its output (refilled
 * after a fork), to spare OpenSSL's per-call cost. */
int permit_random(uint8_t *out, size_t len);

/* One buffer of a message given in parts. */
typedef struct permit_iov {
  const void *base;
  size_t len;
} permit_iov;

/* SHA-256 of the concatenation of |n| parts. */
int permit_sha256(const permit_iov *parts, size_t n,
                  uint8_t out[PERMIT_SHA256_LEN]);

/* HMAC-SHA256 of |data| under |key|. */
int permit_hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *data,
                       size_t len, uint8_t out[PERMIT_SHA256_LEN]);

/*
 * HMAC-SHA256 under |key| of the concatenation of |n| parts.  Returns
 * PERMIT_EINVAL when |key| or a part is NULL with a non-zero length.
 */
int permit_hmac_sha256_iov(const uint8_t *key, size_t keylen,
                           const permit_iov *parts, size_t n,
                           uint8_t out[PERMIT_SHA256_LEN]);

/* HKDF-Extract (RFC 5869 2.2).  |salt| may be NULL with |saltlen| 0. */
int permit_hkdf_extract(const uint8_t *salt, size_t saltlen,
                        const uint8_t *ikm, size_t ikmlen,
                        uint8_t prk[PERMIT_SHA256_LEN]);

/*
 * HKDF-Expand (RFC 5869 2.3).  Returns PERMIT_EINVAL when |outlen| is 0 or
 * over PERMIT_HKDF_MAX_OUT, |prklen| is under the hash length, or |info|
 * is NULL with a non-zero |infolen|.
 */
int permit_hkdf_expand(const uint8_t *prk, size_t prklen, const uint8_t *info,
                       size_t infolen, uint8_t *out, size_t outlen);

/* Extract then Expand; same limits as permit_hkdf_expand(). */
int permit_hkdf(const uint8_t *salt, size_t saltlen, const uint8_t *ikm,
                size_t ikmlen, const uint8_t *info, size_t infolen,
                uint8_t *out, size_t outlen);

/* AEADs, numbered as HPKE (RFC 9180 7.3) numbers them. */
typedef enum permit_aead_id {
  PERMIT_AEAD_AES_128_GCM = 1,
  PERMIT_AEAD_CHACHA20_POLY1305 = 3
} permit_aead_id;

/* Key length of |aead| in bytes, or 0 for an unknown id. */
size_t permit_aead_key_len(permit_aead_id aead);

/*
 * Encrypts |ptlen| bytes of |pt| into |ct|, which must have room for
 * ptlen + PERMIT_AEAD_TAG_LEN bytes (ciphertext then tag).  |keylen| must
 * be the AEAD's key length and |noncelen| PERMIT_AEAD_NONCE_LEN, otherwise
 * PERMIT_EINVAL.  |ct| may equal |pt|.
 */
int permit_aead_seal(permit_aead_id aead, const uint8_t *key, size_t keylen,
                     const uint8_t *nonce, size_t noncelen, const uint8_t *aad,
                     size_t aadlen, const uint8_t *pt, size_t ptlen,
                     uint8_t *ct);

/*
 * Decrypts and authenticates |ctlen| bytes (ciphertext then tag) into
 * |pt|, which must have room for ctlen - PERMIT_AEAD_TAG_LEN bytes.
 * Returns PERMIT_EVERIFY when the tag does not match (|pt| is then wiped)
 * and PERMIT_EINVAL for bad lengths.  |pt| may equal |ct|.
 */
int permit_aead_open(permit_aead_id aead, const uint8_t *key, size_t keylen,
                     const uint8_t *nonce, size_t noncelen, const uint8_t *aad,
                     size_t aadlen, const uint8_t *ct, size_t ctlen,
                     uint8_t *pt);

/* Key id of a public key: hex of the first 8 bytes of its SHA-256. */
void permit_key_id(const uint8_t *pub, size_t publen,
                   char out[PERMIT_KEY_ID_LEN]);

/* ---- Ed25519 identity keys ---- */

typedef struct permit_sign_key permit_sign_key;

/* Creates a fresh key.  The caller owns |*out| (permit_sign_key_free). */
int permit_sign_key_generate(permit_sign_key **out);

/* Creates the key whose RFC 8032 private seed is |seed|. */
int permit_sign_key_from_seed(const uint8_t seed[PERMIT_ED25519_SEED_LEN],
                              permit_sign_key **out);

void permit_sign_key_free(permit_sign_key *key);

/* The 32-byte public key; valid while |key| lives. */
const uint8_t *permit_sign_key_public(const permit_sign_key *key);

/* The key id (see permit_key_id); valid while |key| lives. */
const char *permit_sign_key_id(const permit_sign_key *key);

/*
 * Signs |msg|.  When |context| is not NULL the signed bytes are
 * context || msg, which is how Permit separates record, checkpoint and card
 * signatures ("permit/v1/record\n").
 */
int permit_sign(const permit_sign_key *key, const char *context,
                const uint8_t *msg, size_t len,
                uint8_t sig[PERMIT_ED25519_SIG_LEN]);

/*
 * Verifies an Ed25519 signature over (context ||) msg.  Returns 0 when it
 * is valid, PERMIT_EVERIFY when it is not (including a malformed public
 * key or a signature of the wrong length).
 */
int permit_verify(const uint8_t pub[PERMIT_ED25519_PUB_LEN],
                  const char *context, const uint8_t *msg, size_t len,
                  const uint8_t *sig, size_t siglen);

/* ---- X25519 sealing keys ---- */

typedef struct permit_kx_key permit_kx_key;

int permit_kx_key_generate(permit_kx_key **out);
int permit_kx_key_from_private(const uint8_t sk[PERMIT_X25519_LEN],
                               permit_kx_key **out);
void permit_kx_key_free(permit_kx_key *key);
const uint8_t *permit_kx_key_public(const permit_kx_key *key);

/* Copies the private scalar into |sk| (for HPKE's key schedule tests). */
int permit_kx_key_private(const permit_kx_key *key,
                          uint8_t sk[PERMIT_X25519_LEN]);

/*
 * X25519(key, peer_pub).  Returns PERMIT_EVERIFY when the result is all
 * zero (a low-order peer key), which RFC 7748 6.1 says to refuse.
 */
int permit_kx_derive(const permit_kx_key *key,
                     const uint8_t peer_pub[PERMIT_X25519_LEN],
                     uint8_t shared[PERMIT_X25519_LEN]);

/* ---- Key files ---- */

/*
 * Writes |key| as a PKCS#8 PEM file at |path|, created with mode 0600 and
 * fsync'd.  Refuses (PERMIT_EEXIST) to overwrite an existing file.
 */
int permit_sign_key_save(const permit_sign_key *key, const char *path,
                         permit_err *err);
int permit_kx_key_save(const permit_kx_key *key, const char *path,
                       permit_err *err);

/*
 * Reads a key written by the matching save function.  Returns
 * PERMIT_EPERM, with a message naming the file and its mode, when the file
 * is readable or writable by group or others; PERMIT_ENOTFOUND when it
 * does not exist; PERMIT_EINVAL when it is not a key of that type, not a
 * regular file or over 16 KiB; PERMIT_EIO when it cannot be read.
 */
int permit_sign_key_load(const char *path, permit_sign_key **out,
                         permit_err *err);
int permit_kx_key_load(const char *path, permit_kx_key **out,
                       permit_err *err);

/* ---- Pairwise pseudonyms (protocol.md section 4) ---- */

/*
 * pair_key = HKDF-SHA256(salt = empty, ikm = X25519(own, peer_pub),
 *                        info = "permit/v1/pair\n" issuer "\n" audience).
 * Both ends compute the same key from their own private key and the other
 * side's public key.
 */
int permit_pair_key(const permit_kx_key *own,
                    const uint8_t peer_pub[PERMIT_X25519_LEN],
                    const char *issuer, const char *audience,
                    uint8_t pair_key[PERMIT_SHA256_LEN]);

/*
 * Trims ASCII white space around |email| and lower-cases it into |out|
 * (capacity |cap|, NUL-terminated).  Returns PERMIT_EINVAL when nothing is
 * left, PERMIT_ETOOBIG when |cap| is too small.
 */
int permit_email_normalize(const char *email, size_t len, char *out,
                           size_t cap);

/* subject = HMAC-SHA256(pair_key, normalize(email)). */
int permit_subject(const uint8_t pair_key[PERMIT_SHA256_LEN], const char *email,
                   size_t len, uint8_t subject[PERMIT_SHA256_LEN]);

#endif
