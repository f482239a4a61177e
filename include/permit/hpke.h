/*
 * permit/hpke.h - HPKE (RFC 9180) base mode with DHKEM(X25519,
 * HKDF-SHA256) and HKDF-SHA256, over AES-128-GCM or ChaCha20-Poly1305.
 * OpenSSL 3.0 has no HPKE API; this is built from its X25519, HKDF and
 * AEAD.  Permit seals each buyer's contact this way (protocol.md 4).
 */
#ifndef PERMIT_HPKE_H
#define PERMIT_HPKE_H

#include <stddef.h>
#include <stdint.h>

#include "permit/crypto.h"

#define PERMIT_HPKE_ENC_LEN 32
#define PERMIT_HPKE_KEM_X25519 0x0020
#define PERMIT_HPKE_KDF_HKDF_SHA256 0x0001

/*
 * An encryption context (RFC 9180 5.1).  Treat the fields as private; the
 * struct is public only so a context can live on the stack.
 */
typedef struct permit_hpke_ctx {
  permit_aead_id aead;
  uint8_t key[32];
  size_t key_len;
  uint8_t base_nonce[PERMIT_AEAD_NONCE_LEN];
  uint8_t exporter_secret[PERMIT_SHA256_LEN];
  uint64_t seq;
} permit_hpke_ctx;

/*
 * SetupBaseS: encapsulates to the recipient key |pk_r|, writes the
 * encapsulated key to |enc| and fills |ctx|.  |ikm_e| is NULL in normal
 * use (a fresh ephemeral key); the known-answer tests pass RFC 9180's ikmE
 * so that the ephemeral key is derived with DeriveKeyPair (at least 32
 * bytes, else PERMIT_EINVAL).  PERMIT_EVERIFY for a low-order |pk_r|.
 */
int permit_hpke_setup_base_s(permit_aead_id aead,
                             const uint8_t pk_r[PERMIT_X25519_LEN],
                             const uint8_t *info, size_t infolen,
                             const uint8_t *ikm_e, size_t ikm_elen,
                             uint8_t enc[PERMIT_HPKE_ENC_LEN],
                             permit_hpke_ctx *ctx);

/* SetupBaseR: decapsulates |enc| with the recipient's key. */
int permit_hpke_setup_base_r(permit_aead_id aead, const permit_kx_key *sk_r,
                             const uint8_t enc[PERMIT_HPKE_ENC_LEN],
                             const uint8_t *info, size_t infolen,
                             permit_hpke_ctx *ctx);

/*
 * Seals the next message (nonce = base_nonce XOR seq) into |ct|, which
 * must have room for ptlen + PERMIT_AEAD_TAG_LEN bytes.  PERMIT_ETOOBIG
 * once the sequence number is used up.
 */
int permit_hpke_ctx_seal(permit_hpke_ctx *ctx, const uint8_t *aad,
                         size_t aadlen, const uint8_t *pt, size_t ptlen,
                         uint8_t *ct);

/* Opens the next message into |pt| (ctlen - PERMIT_AEAD_TAG_LEN bytes);
 * a failed open leaves the sequence number where it was. */
int permit_hpke_ctx_open(permit_hpke_ctx *ctx, const uint8_t *aad,
                         size_t aadlen, const uint8_t *ct, size_t ctlen,
                         uint8_t *pt);

/* Erases the context's secrets. */
void permit_hpke_ctx_wipe(permit_hpke_ctx *ctx);

/*
 * Single-shot seal (RFC 9180 6.1): |out| receives enc || ciphertext || tag,
 * and must have room for PERMIT_HPKE_ENC_LEN + ptlen + PERMIT_AEAD_TAG_LEN
 * bytes, and must not overlap |pt|.
 */
int permit_hpke_seal(permit_aead_id aead, const uint8_t pk_r[PERMIT_X25519_LEN],
                     const uint8_t *info, size_t infolen, const uint8_t *aad,
                     size_t aadlen, const uint8_t *pt, size_t ptlen,
                     uint8_t *out);

/*
 * Single-shot open of enc || ciphertext || tag (|inlen| bytes) into |pt|
 * (inlen - PERMIT_HPKE_ENC_LEN - PERMIT_AEAD_TAG_LEN bytes).  Returns
 * PERMIT_EINVAL when |inlen| is too short, PERMIT_EVERIFY when the
 * encapsulated key or the tag is wrong.
 */
int permit_hpke_open(permit_aead_id aead, const permit_kx_key *sk_r,
                     const uint8_t *info, size_t infolen, const uint8_t *aad,
                     size_t aadlen, const uint8_t *in, size_t inlen,
                     uint8_t *pt);

#endif
