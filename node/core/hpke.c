/*
 * hpke.c - RFC 9180 base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
 * and AES-128-GCM or ChaCha20-Poly1305, from the primitives of crypto.c.
 * Section numbers below are RFC 9180's.
 */
#include <stdlib.h>
#include <string.h>

#include "permit/hpke.h"
#include "permit/util.h"

#define HPKE_NN PERMIT_AEAD_NONCE_LEN
#define HPKE_NH PERMIT_SHA256_LEN
#define HPKE_NSECRET PERMIT_SHA256_LEN
#define HPKE_NSK PERMIT_X25519_LEN
#define HPKE_MODE_BASE 0x00

static const char version_label[] = "HPKE-v1";

/* "KEM" || I2OSP(kem_id, 2) or "HPKE" || kem_id || kdf_id || aead_id. */
typedef struct suite_id {
  uint8_t b[10];
  size_t len;
} suite_id;

static suite_id kem_suite(void) {
  suite_id s = {{'K', 'E', 'M', PERMIT_HPKE_KEM_X25519 >> 8,
                 PERMIT_HPKE_KEM_X25519 & 0xff},
                5};
  return s;
}

static suite_id hpke_suite(permit_aead_id aead) {
  suite_id s = {{'H', 'P', 'K', 'E', PERMIT_HPKE_KEM_X25519 >> 8,
                 PERMIT_HPKE_KEM_X25519 & 0xff,
                 PERMIT_HPKE_KDF_HKDF_SHA256 >> 8,
                 PERMIT_HPKE_KDF_HKDF_SHA256 & 0xff, (uint8_t)(aead >> 8),
                 (uint8_t)(aead & 0xff)},
                10};
  return s;
}

/*
 * LabeledExtract (4): Extract(salt, "HPKE-v1" || suite_id || label || ikm).
 * The short inputs (DH outputs, empty psk) are built on the stack; only an
 * application's info can need the heap.
 */
static int labeled_extract(const suite_id *suite, const uint8_t *salt,
                           size_t saltlen, const char *label,
                           const uint8_t *ikm, size_t ikmlen,
                           uint8_t prk[HPKE_NH]) {
  uint8_t stackbuf[256];
  size_t vlen = sizeof version_label - 1, llen = strlen(label);
  size_t head = vlen + suite->len + llen;
  if (ikmlen > SIZE_MAX - head) return PERMIT_EINVAL;
  size_t total = head + ikmlen;
  uint8_t *buf = total <= sizeof stackbuf ? stackbuf : malloc(total);
  if (buf == NULL) return PERMIT_ENOMEM;
  memcpy(buf, version_label, vlen);
  memcpy(buf + vlen, suite->b, suite->len);
  memcpy(buf + vlen + suite->len, label, llen);
  if (ikmlen > 0) memcpy(buf + head, ikm, ikmlen);
  int rc = permit_hkdf_extract(salt, saltlen, buf, total, prk);
  permit_wipe(buf, total);
  if (buf != stackbuf) free(buf);
  return rc;
}

/*
 * LabeledExpand (4): Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id ||
 * label || info, L).  Every info here is a KEM or key schedule context of
 * at most 65 bytes.
 */
static int labeled_expand(const suite_id *suite, const uint8_t *prk,
                          const char *label, const uint8_t *info,
                          size_t infolen, uint8_t *out, size_t outlen) {
  uint8_t buf[160];
  size_t vlen = sizeof version_label - 1, llen = strlen(label);
  size_t head = 2 + vlen + suite->len + llen;
  if (outlen > 0xffff || head > sizeof buf || infolen > sizeof buf - head)
    return PERMIT_EINVAL;
  size_t n = 0;
  buf[n++] = (uint8_t)(outlen >> 8);
  buf[n++] = (uint8_t)outlen;
  memcpy(buf + n, version_label, vlen);
  n += vlen;
  memcpy(buf + n, suite->b, suite->len);
  n += suite->len;
  memcpy(buf + n, label, llen);
  n += llen;
  if (infolen > 0) memcpy(buf + n, info, infolen);
  n += infolen;
  int rc = permit_hkdf_expand(prk, HPKE_NH, buf, n, out, outlen);
  permit_wipe(buf, n);
  return rc;
}

/* DeriveKeyPair (7.1.3) for X25519: sk = LabeledExpand(dkp_prk, "sk"). */
static int derive_key_pair(const uint8_t *ikm, size_t ikmlen,
                           permit_kx_key **out) {
  suite_id kem = kem_suite();
  uint8_t prk[HPKE_NH], sk[HPKE_NSK];
  int rc = labeled_extract(&kem, NULL, 0, "dkp_prk", ikm, ikmlen, prk);
  if (rc == 0) rc = labeled_expand(&kem, prk, "sk", NULL, 0, sk, sizeof sk);
  if (rc == 0) rc = permit_kx_key_from_private(sk, out);
  permit_wipe(prk, sizeof prk);
  permit_wipe(sk, sizeof sk);
  return rc;
}

/* ExtractAndExpand (4.1) with kem_context = enc || pkR. */
static int extract_and_expand(const uint8_t dh[PERMIT_X25519_LEN],
                              const uint8_t enc[PERMIT_HPKE_ENC_LEN],
                              const uint8_t pk_r[PERMIT_X25519_LEN],
                              uint8_t shared_secret[HPKE_NSECRET]) {
  suite_id kem = kem_suite();
  uint8_t kem_context[PERMIT_HPKE_ENC_LEN + PERMIT_X25519_LEN];
  memcpy(kem_context, enc, PERMIT_HPKE_ENC_LEN);
  memcpy(kem_context + PERMIT_HPKE_ENC_LEN, pk_r, PERMIT_X25519_LEN);
  uint8_t prk[HPKE_NH];
  int rc = labeled_extract(&kem, NULL, 0, "eae_prk", dh, PERMIT_X25519_LEN,
                           prk);
  if (rc == 0)
    rc = labeled_expand(&kem, prk, "shared_secret", kem_context,
                        sizeof kem_context, shared_secret, HPKE_NSECRET);
  permit_wipe(prk, sizeof prk);
  return rc;
}

/*
 * Encap (4.1).  With |ikm_e| the ephemeral key comes from DeriveKeyPair,
 * as in the RFC's test vectors; otherwise it is fresh.  A low-order
 * |pk_r| gives PERMIT_EVERIFY (the DH output is zero).
 */
static int encap(const uint8_t pk_r[PERMIT_X25519_LEN], const uint8_t *ikm_e,
                 size_t ikm_elen, uint8_t shared_secret[HPKE_NSECRET],
                 uint8_t enc[PERMIT_HPKE_ENC_LEN]) {
  permit_kx_key *eph = NULL;
  int rc = ikm_e != NULL ? derive_key_pair(ikm_e, ikm_elen, &eph)
                         : permit_kx_key_generate(&eph);
  if (rc != 0) return rc;
  uint8_t dh[PERMIT_X25519_LEN];
  memcpy(enc, permit_kx_key_public(eph), PERMIT_HPKE_ENC_LEN);
  rc = permit_kx_derive(eph, pk_r, dh);
  if (rc == 0) rc = extract_and_expand(dh, enc, pk_r, shared_secret);
  permit_wipe(dh, sizeof dh);
  permit_kx_key_free(eph);
  return rc;
}

/* Decap (4.1).  An all-zero DH output (low-order |enc|) is PERMIT_EVERIFY. */
static int decap(const permit_kx_key *sk_r,
                 const uint8_t enc[PERMIT_HPKE_ENC_LEN],
                 uint8_t shared_secret[HPKE_NSECRET]) {
  uint8_t dh[PERMIT_X25519_LEN];
  int rc = permit_kx_derive(sk_r, enc, dh);
  if (rc == 0)
    rc = extract_and_expand(dh, enc, permit_kx_key_public(sk_r),
                            shared_secret);
  permit_wipe(dh, sizeof dh);
  return rc;
}

/*
 * Test-only entry points, declared by tests/unit/test_hpke.c and nowhere
 * else: they expose the KEM's shared secret, which the public API keeps
 * inside the key schedule, so that RFC 9180's shared_secret can be checked.
 */
int permit_hpke__encap_kat(const uint8_t pk_r[PERMIT_X25519_LEN],
                           const uint8_t *ikm_e, size_t ikm_elen,
                           uint8_t enc[PERMIT_HPKE_ENC_LEN],
                           uint8_t shared_secret[HPKE_NSECRET]);
int permit_hpke__decap_kat(const permit_kx_key *sk_r,
                           const uint8_t enc[PERMIT_HPKE_ENC_LEN],
                           uint8_t shared_secret[HPKE_NSECRET]);

int permit_hpke__encap_kat(const uint8_t pk_r[PERMIT_X25519_LEN],
                           const uint8_t *ikm_e, size_t ikm_elen,
                           uint8_t enc[PERMIT_HPKE_ENC_LEN],
                           uint8_t shared_secret[HPKE_NSECRET]) {
  if (pk_r == NULL || ikm_e == NULL || enc == NULL || shared_secret == NULL)
    return PERMIT_EINVAL;
  return encap(pk_r, ikm_e, ikm_elen, shared_secret, enc);
}

int permit_hpke__decap_kat(const permit_kx_key *sk_r,
                           const uint8_t enc[PERMIT_HPKE_ENC_LEN],
                           uint8_t shared_secret[HPKE_NSECRET]) {
  if (sk_r == NULL || enc == NULL || shared_secret == NULL)
    return PERMIT_EINVAL;
  return decap(sk_r, enc, shared_secret);
}

/* KeySchedule (5.1) for mode_base: psk and psk_id are empty. */
static int key_schedule(permit_aead_id aead,
                        const uint8_t shared_secret[HPKE_NSECRET],
                        const uint8_t *info, size_t infolen,
                        permit_hpke_ctx *ctx) {
  suite_id suite = hpke_suite(aead);
  /* mode || psk_id_hash || info_hash */
  uint8_t ksc[1 + 2 * HPKE_NH];
  uint8_t secret[HPKE_NH];
  ksc[0] = HPKE_MODE_BASE;
  int rc = labeled_extract(&suite, NULL, 0, "psk_id_hash", NULL, 0, ksc + 1);
  if (rc == 0)
    rc = labeled_extract(&suite, NULL, 0, "info_hash", info, infolen,
                         ksc + 1 + HPKE_NH);
  if (rc == 0)
    rc = labeled_extract(&suite, shared_secret, HPKE_NSECRET, "secret", NULL,
                         0, secret);
  if (rc == 0)
    rc = labeled_expand(&suite, secret, "key", ksc, sizeof ksc, ctx->key,
                        ctx->key_len);
  if (rc == 0)
    rc = labeled_expand(&suite, secret, "base_nonce", ksc, sizeof ksc,
                        ctx->base_nonce, HPKE_NN);
  if (rc == 0)
    rc = labeled_expand(&suite, secret, "exp", ksc, sizeof ksc,
                        ctx->exporter_secret, HPKE_NH);
  permit_wipe(secret, sizeof secret);
  return rc;
}

/* Checks the AEAD and starts |ctx| for it; returns 0 or PERMIT_EINVAL. */
static int ctx_begin(permit_aead_id aead, const uint8_t *info, size_t infolen,
                     permit_hpke_ctx *ctx) {
  if (ctx == NULL) return PERMIT_EINVAL;
  memset(ctx, 0, sizeof *ctx);
  size_t nk = permit_aead_key_len(aead);
  if (nk == 0 || nk > sizeof ctx->key || (info == NULL && infolen > 0))
    return PERMIT_EINVAL;
  ctx->aead = aead;
  ctx->key_len = nk;
  ctx->seq = 0;
  return 0;
}

int permit_hpke_setup_base_s(permit_aead_id aead,
                             const uint8_t pk_r[PERMIT_X25519_LEN],
                             const uint8_t *info, size_t infolen,
                             const uint8_t *ikm_e, size_t ikm_elen,
                             uint8_t enc[PERMIT_HPKE_ENC_LEN],
                             permit_hpke_ctx *ctx) {
  int rc = ctx_begin(aead, info, infolen, ctx);
  if (rc != 0) return rc;
  /* 7.1.3: the ikm must carry at least Nsk bytes of entropy. */
  if (pk_r == NULL || enc == NULL || (ikm_e != NULL && ikm_elen < HPKE_NSK))
    return PERMIT_EINVAL;
  uint8_t shared_secret[HPKE_NSECRET];
  rc = encap(pk_r, ikm_e, ikm_elen, shared_secret, enc);
  if (rc == 0) rc = key_schedule(aead, shared_secret, info, infolen, ctx);
  permit_wipe(shared_secret, sizeof shared_secret);
  if (rc != 0) permit_hpke_ctx_wipe(ctx);
  return rc;
}

int permit_hpke_setup_base_r(permit_aead_id aead, const permit_kx_key *sk_r,
                             const uint8_t enc[PERMIT_HPKE_ENC_LEN],
                             const uint8_t *info, size_t infolen,
                             permit_hpke_ctx *ctx) {
  int rc = ctx_begin(aead, info, infolen, ctx);
  if (rc != 0) return rc;
  if (sk_r == NULL || enc == NULL) return PERMIT_EINVAL;
  uint8_t shared_secret[HPKE_NSECRET];
  rc = decap(sk_r, enc, shared_secret);
  if (rc == 0) rc = key_schedule(aead, shared_secret, info, infolen, ctx);
  permit_wipe(shared_secret, sizeof shared_secret);
  if (rc != 0) permit_hpke_ctx_wipe(ctx);
  return rc;
}

/*
 * ComputeNonce (5.2): base_nonce XOR I2OSP(seq, Nn).  Refuses the last
 * sequence number, since IncrementSeq could not move past it and a nonce
 * must never repeat under one key.
 */
static int compute_nonce(const permit_hpke_ctx *ctx,
                         uint8_t nonce[HPKE_NN]) {
  if (ctx->seq == UINT64_MAX) return PERMIT_ETOOBIG;
  uint8_t seq[8];
  permit_put_u64be(seq, ctx->seq);
  memcpy(nonce, ctx->base_nonce, HPKE_NN);
  for (size_t i = 0; i < sizeof seq; i++) nonce[HPKE_NN - 8 + i] ^= seq[i];
  return 0;
}

int permit_hpke_ctx_seal(permit_hpke_ctx *ctx, const uint8_t *aad,
                         size_t aadlen, const uint8_t *pt, size_t ptlen,
                         uint8_t *ct) {
  if (ctx == NULL) return PERMIT_EINVAL;
  uint8_t nonce[HPKE_NN];
  int rc = compute_nonce(ctx, nonce);
  if (rc == 0)
    rc = permit_aead_seal(ctx->aead, ctx->key, ctx->key_len, nonce,
                          sizeof nonce, aad, aadlen, pt, ptlen, ct);
  if (rc == 0) ctx->seq++;
  return rc;
}

int permit_hpke_ctx_open(permit_hpke_ctx *ctx, const uint8_t *aad,
                         size_t aadlen, const uint8_t *ct, size_t ctlen,
                         uint8_t *pt) {
  if (ctx == NULL) return PERMIT_EINVAL;
  uint8_t nonce[HPKE_NN];
  int rc = compute_nonce(ctx, nonce);
  if (rc == 0)
    rc = permit_aead_open(ctx->aead, ctx->key, ctx->key_len, nonce,
                          sizeof nonce, aad, aadlen, ct, ctlen, pt);
  /* 5.2: a failed open leaves the sequence number where it was. */
  if (rc == 0) ctx->seq++;
  return rc;
}

void permit_hpke_ctx_wipe(permit_hpke_ctx *ctx) {
  if (ctx != NULL) permit_wipe(ctx, sizeof *ctx);
}

int permit_hpke_seal(permit_aead_id aead, const uint8_t pk_r[PERMIT_X25519_LEN],
                     const uint8_t *info, size_t infolen, const uint8_t *aad,
                     size_t aadlen, const uint8_t *pt, size_t ptlen,
                     uint8_t *out) {
  if (out == NULL ||
      ptlen > SIZE_MAX - PERMIT_HPKE_ENC_LEN - PERMIT_AEAD_TAG_LEN)
    return PERMIT_EINVAL;
  permit_hpke_ctx ctx;
  int rc = permit_hpke_setup_base_s(aead, pk_r, info, infolen, NULL, 0, out,
                                    &ctx);
  if (rc == 0)
    rc = permit_hpke_ctx_seal(&ctx, aad, aadlen, pt, ptlen,
                              out + PERMIT_HPKE_ENC_LEN);
  permit_hpke_ctx_wipe(&ctx);
  return rc;
}

int permit_hpke_open(permit_aead_id aead, const permit_kx_key *sk_r,
                     const uint8_t *info, size_t infolen, const uint8_t *aad,
                     size_t aadlen, const uint8_t *in, size_t inlen,
                     uint8_t *pt) {
  if (in == NULL || inlen < PERMIT_HPKE_ENC_LEN + PERMIT_AEAD_TAG_LEN)
    return PERMIT_EINVAL;
  permit_hpke_ctx ctx;
  int rc = permit_hpke_setup_base_r(aead, sk_r, in, info, infolen, &ctx);
  if (rc == 0)
    rc = permit_hpke_ctx_open(&ctx, aad, aadlen, in + PERMIT_HPKE_ENC_LEN,
                              inlen - PERMIT_HPKE_ENC_LEN, pt);
  permit_hpke_ctx_wipe(&ctx);
  return rc;
}
