/*
 * test_hpke.c - hpke.c against RFC 9180 A.1.1 and A.2.1 (base mode,
 * DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM and
 * ChaCha20-Poly1305), then the single-shot API and its refusals.
 */
#include <stdlib.h>
#include <string.h>

#include "permit/hpke.h"
#include "permit/util.h"
#include "testlib.h"

/* Test-only entry points defined in hpke.c (declared nowhere else): the
 * KEM's shared secret, which the public API keeps to itself. */
int permit_hpke__encap_kat(const uint8_t pk_r[PERMIT_X25519_LEN],
                           const uint8_t *ikm_e, size_t ikm_elen,
                           uint8_t enc[PERMIT_HPKE_ENC_LEN],
                           uint8_t shared_secret[PERMIT_SHA256_LEN]);
int permit_hpke__decap_kat(const permit_kx_key *sk_r,
                           const uint8_t enc[PERMIT_HPKE_ENC_LEN],
                           uint8_t shared_secret[PERMIT_SHA256_LEN]);

/* Decodes member |key| of |obj|, which must be |want| bytes. */
static uint8_t *hex_exact(json_t *obj, const char *key, size_t want) {
  size_t len;
  uint8_t *p = test_hex(obj, key, &len);
  if (len != want) {
    fprintf(stderr, "vector member \"%s\" is %zu bytes, not %zu\n", key, len,
            want);
    exit(2);
  }
  return p;
}

static void test_suite(json_t *s) {
  const char *section = json_string_value(json_object_get(s, "section"));
  if (section == NULL) section = "?";
  permit_aead_id aead =
      (permit_aead_id)json_integer_value(json_object_get(s, "aead_id"));
  size_t nk = permit_aead_key_len(aead);
  CHECKF(nk != 0, "%s: aead_id %d", section, (int)aead);
  CHECKF(json_integer_value(json_object_get(s, "mode")) == 0 &&
             json_integer_value(json_object_get(s, "kem_id")) ==
                 PERMIT_HPKE_KEM_X25519 &&
             json_integer_value(json_object_get(s, "kdf_id")) ==
                 PERMIT_HPKE_KDF_HKDF_SHA256,
         "%s: not a base-mode X25519/HKDF-SHA256 suite", section);
  if (nk == 0) return;

  size_t infolen, ikmlen;
  uint8_t *info = test_hex(s, "info", &infolen);
  uint8_t *ikm_e = test_hex(s, "ikmE", &ikmlen);
  uint8_t *sk_rm = hex_exact(s, "skRm", PERMIT_X25519_LEN);
  uint8_t *enc = hex_exact(s, "enc", PERMIT_HPKE_ENC_LEN);
  uint8_t *shared = hex_exact(s, "shared_secret", PERMIT_SHA256_LEN);
  uint8_t *key = hex_exact(s, "key", nk);
  uint8_t *base_nonce = hex_exact(s, "base_nonce", PERMIT_AEAD_NONCE_LEN);

  permit_kx_key *sk_r = NULL;
  CHECK(permit_kx_key_from_private(sk_rm, &sk_r) == 0);
  if (sk_r == NULL) goto out;
  const uint8_t *pk_r = permit_kx_key_public(sk_r);

  /* The KEM on its own: Encap with ikmE, and Decap. */
  uint8_t got_enc[PERMIT_HPKE_ENC_LEN], got_ss[PERMIT_SHA256_LEN];
  CHECKF(permit_hpke__encap_kat(pk_r, ikm_e, ikmlen, got_enc, got_ss) == 0,
         "%s", section);
  CHECKF(memcmp(got_enc, enc, PERMIT_HPKE_ENC_LEN) == 0, "%s enc", section);
  CHECKF(memcmp(got_ss, shared, PERMIT_SHA256_LEN) == 0,
         "%s shared_secret (encap)", section);
  memset(got_ss, 0, sizeof got_ss);
  CHECKF(permit_hpke__decap_kat(sk_r, enc, got_ss) == 0, "%s", section);
  CHECKF(memcmp(got_ss, shared, PERMIT_SHA256_LEN) == 0,
         "%s shared_secret (decap)", section);

  /* The key schedule, from both ends. */
  permit_hpke_ctx snd, rcv;
  memset(got_enc, 0, sizeof got_enc);
  CHECKF(permit_hpke_setup_base_s(aead, pk_r, info, infolen, ikm_e, ikmlen,
                                  got_enc, &snd) == 0,
         "%s setup S", section);
  CHECKF(memcmp(got_enc, enc, PERMIT_HPKE_ENC_LEN) == 0, "%s enc (S)",
         section);
  CHECKF(snd.key_len == nk && memcmp(snd.key, key, nk) == 0, "%s key (S)",
         section);
  CHECKF(memcmp(snd.base_nonce, base_nonce, PERMIT_AEAD_NONCE_LEN) == 0,
         "%s base_nonce (S)", section);
  CHECKF(permit_hpke_setup_base_r(aead, sk_r, enc, info, infolen, &rcv) == 0,
         "%s setup R", section);
  CHECKF(rcv.key_len == nk && memcmp(rcv.key, key, nk) == 0, "%s key (R)",
         section);
  CHECKF(memcmp(rcv.base_nonce, base_nonce, PERMIT_AEAD_NONCE_LEN) == 0,
         "%s base_nonce (R)", section);
  CHECKF(memcmp(rcv.exporter_secret, snd.exporter_secret, PERMIT_SHA256_LEN) ==
             0,
         "%s exporter_secret", section);

  /* Every listed encryption, in order, both ways.  The vectors may list
   * only some sequence numbers; the contexts are stepped past the rest. */
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(s, "encryptions"), i, e) {
    json_int_t seq = json_integer_value(json_object_get(e, "seq"));
    size_t ptlen, aadlen, ctlen;
    uint8_t *pt = test_hex(e, "pt", &ptlen);
    uint8_t *aad = test_hex(e, "aad", &aadlen);
    uint8_t *ct = test_hex(e, "ct", &ctlen);
    CHECKF(seq >= 0 && (uint64_t)seq >= snd.seq, "%s seq %lld", section,
           (long long)seq);
    if (seq >= 0) {
      snd.seq = (uint64_t)seq;
      rcv.seq = (uint64_t)seq;
    }
    uint8_t *got = malloc(ptlen + PERMIT_AEAD_TAG_LEN);
    uint8_t *back = malloc(ptlen + 1);
    if (got == NULL || back == NULL) exit(2);
    CHECKF(ctlen == ptlen + PERMIT_AEAD_TAG_LEN, "%s seq %lld ct length",
           section, (long long)seq);
    CHECKF(permit_hpke_ctx_seal(&snd, aad, aadlen, pt, ptlen, got) == 0,
           "%s seq %lld seal", section, (long long)seq);
    CHECKF(ctlen == ptlen + PERMIT_AEAD_TAG_LEN && memcmp(got, ct, ctlen) == 0,
           "%s seq %lld ct", section, (long long)seq);
    CHECKF(permit_hpke_ctx_open(&rcv, aad, aadlen, ct, ctlen, back) == 0,
           "%s seq %lld open", section, (long long)seq);
    CHECKF(memcmp(back, pt, ptlen) == 0, "%s seq %lld pt", section,
           (long long)seq);
    CHECKF(snd.seq == (uint64_t)seq + 1 && rcv.seq == (uint64_t)seq + 1,
           "%s seq %lld: sequence not advanced", section, (long long)seq);
    /* The same ciphertext again is refused: the receiver has moved on,
     * and a failed open does not move it. */
    CHECKF(permit_hpke_ctx_open(&rcv, aad, aadlen, ct, ctlen, back) ==
               PERMIT_EVERIFY,
           "%s seq %lld replay", section, (long long)seq);
    CHECKF(rcv.seq == (uint64_t)seq + 1, "%s seq %lld: failed open moved seq",
           section, (long long)seq);
    free(got);
    free(back);
    free(pt);
    free(aad);
    free(ct);
  }

  /* Nonce = base_nonce XOR I2OSP(seq, 12), checked at a sequence number
   * whose bytes all differ (the vectors above start at 0). */
  {
    const uint64_t seq = 0x0102030405060708u;
    uint8_t nonce[PERMIT_AEAD_NONCE_LEN], msg[5] = "hello";
    uint8_t a[sizeof msg + PERMIT_AEAD_TAG_LEN], b[sizeof a];
    memcpy(nonce, base_nonce, sizeof nonce);
    for (int k = 0; k < 8; k++)
      nonce[PERMIT_AEAD_NONCE_LEN - 1 - k] ^= (uint8_t)(seq >> (8 * k));
    snd.seq = seq;
    CHECK(permit_hpke_ctx_seal(&snd, NULL, 0, msg, sizeof msg, a) == 0);
    CHECK(permit_aead_seal(aead, key, nk, nonce, sizeof nonce, NULL, 0, msg,
                           sizeof msg, b) == 0);
    CHECKF(memcmp(a, b, sizeof a) == 0, "%s nonce at seq %llx", section,
           (unsigned long long)seq);
    rcv.seq = seq;
    CHECK(permit_hpke_ctx_open(&rcv, NULL, 0, a, sizeof a, msg) == 0);
    CHECK(rcv.seq == seq + 1);
  }

  /* The sequence number never wraps. */
  uint8_t one = 1, ct1[1 + PERMIT_AEAD_TAG_LEN];
  snd.seq = UINT64_MAX;
  CHECK(permit_hpke_ctx_seal(&snd, NULL, 0, &one, 1, ct1) == PERMIT_ETOOBIG);
  CHECK(snd.seq == UINT64_MAX);
  snd.seq = UINT64_MAX - 1;
  CHECK(permit_hpke_ctx_seal(&snd, NULL, 0, &one, 1, ct1) == 0);
  CHECK(permit_hpke_ctx_seal(&snd, NULL, 0, &one, 1, ct1) == PERMIT_ETOOBIG);

  permit_hpke_ctx_wipe(&snd);
  permit_hpke_ctx_wipe(&rcv);
  uint8_t zero[sizeof snd];
  memset(zero, 0, sizeof zero);
  CHECK(memcmp(&snd, zero, sizeof snd) == 0);

  /* Too little ikm for DeriveKeyPair. */
  CHECK(permit_hpke_setup_base_s(aead, pk_r, info, infolen, ikm_e, 31,
                                 got_enc, &snd) == PERMIT_EINVAL);
out:
  permit_kx_key_free(sk_r);
  free(info);
  free(ikm_e);
  free(sk_rm);
  free(enc);
  free(shared);
  free(key);
  free(base_nonce);
}

/* The single-shot API (6.1) with Permit's own info and aad. */
static void test_single_shot(permit_aead_id aead) {
  static const char info[] = "permit/v1/contact\nvenue.example\nreseller";
  static const char other_info[] = "permit/v1/contact\nvenue.example\nother";
  uint8_t aad[16], pt[200];
  CHECK(permit_random(aad, sizeof aad) == 0);
  for (size_t i = 0; i < sizeof pt; i++) pt[i] = (uint8_t)(i * 7);
  const size_t outlen = PERMIT_HPKE_ENC_LEN + sizeof pt + PERMIT_AEAD_TAG_LEN;
  uint8_t out[PERMIT_HPKE_ENC_LEN + sizeof pt + PERMIT_AEAD_TAG_LEN];
  uint8_t back[sizeof pt];
  const uint8_t *ii = (const uint8_t *)info;
  size_t il = sizeof info - 1;

  permit_kx_key *sk_r = NULL, *wrong = NULL;
  CHECK(permit_kx_key_generate(&sk_r) == 0);
  CHECK(permit_kx_key_generate(&wrong) == 0);
  if (sk_r == NULL || wrong == NULL) goto out;
  const uint8_t *pk_r = permit_kx_key_public(sk_r);

  CHECK(permit_hpke_seal(aead, pk_r, ii, il, aad, sizeof aad, pt, sizeof pt,
                         out) == 0);
  CHECK(permit_hpke_open(aead, sk_r, ii, il, aad, sizeof aad, out, outlen,
                         back) == 0);
  CHECK(memcmp(back, pt, sizeof pt) == 0);

  /* A second seal uses a fresh ephemeral key. */
  uint8_t out2[sizeof out];
  CHECK(permit_hpke_seal(aead, pk_r, ii, il, aad, sizeof aad, pt, sizeof pt,
                         out2) == 0);
  CHECK(memcmp(out, out2, PERMIT_HPKE_ENC_LEN) != 0);

  /* Wrong info, aad, key or suite, or a tampered enc, ciphertext or tag. */
  CHECK(permit_hpke_open(aead, sk_r, (const uint8_t *)other_info,
                         sizeof other_info - 1, aad, sizeof aad, out, outlen,
                         back) == PERMIT_EVERIFY);
  CHECK(permit_hpke_open(aead, sk_r, NULL, 0, aad, sizeof aad, out, outlen,
                         back) == PERMIT_EVERIFY);
  aad[0] ^= 1;
  CHECK(permit_hpke_open(aead, sk_r, ii, il, aad, sizeof aad, out, outlen,
                         back) == PERMIT_EVERIFY);
  aad[0] ^= 1;
  CHECK(permit_hpke_open(aead, wrong, ii, il, aad, sizeof aad, out, outlen,
                         back) == PERMIT_EVERIFY);
  permit_aead_id other = aead == PERMIT_AEAD_AES_128_GCM
                             ? PERMIT_AEAD_CHACHA20_POLY1305
                             : PERMIT_AEAD_AES_128_GCM;
  CHECK(permit_hpke_open(other, sk_r, ii, il, aad, sizeof aad, out, outlen,
                         back) == PERMIT_EVERIFY);
  size_t spots[] = {0, 31, PERMIT_HPKE_ENC_LEN, PERMIT_HPKE_ENC_LEN + 100,
                    outlen - 1};
  for (size_t i = 0; i < sizeof spots / sizeof spots[0]; i++) {
    out[spots[i]] ^= 0x02;
    memset(back, 0x55, sizeof back);
    CHECKF(permit_hpke_open(aead, sk_r, ii, il, aad, sizeof aad, out, outlen,
                            back) == PERMIT_EVERIFY,
           "aead %d: byte %zu tampered", (int)aead, spots[i]);
    out[spots[i]] ^= 0x02;
  }
  CHECK(permit_hpke_open(aead, sk_r, ii, il, aad, sizeof aad, out, outlen,
                         back) == 0);

  /* A low-order enc (the zero point) gives a zero DH output: refused
   * before any key is derived. */
  uint8_t low[PERMIT_HPKE_ENC_LEN + PERMIT_AEAD_TAG_LEN] = {0};
  permit_hpke_ctx ctx;
  CHECK(permit_hpke_open(aead, sk_r, ii, il, NULL, 0, low, sizeof low,
                         back) == PERMIT_EVERIFY);
  CHECK(permit_hpke_setup_base_r(aead, sk_r, low, ii, il, &ctx) ==
        PERMIT_EVERIFY);
  /* And sealing to a low-order recipient key is refused too. */
  uint8_t zero_pk[PERMIT_X25519_LEN] = {0};
  CHECK(permit_hpke_seal(aead, zero_pk, ii, il, NULL, 0, pt, 1, out2) ==
        PERMIT_EVERIFY);

  /* Too short to hold enc and a tag. */
  CHECK(permit_hpke_open(aead, sk_r, ii, il, aad, sizeof aad, out,
                         PERMIT_HPKE_ENC_LEN + PERMIT_AEAD_TAG_LEN - 1,
                         back) == PERMIT_EINVAL);
  CHECK(permit_hpke_open(aead, sk_r, ii, il, aad, sizeof aad, out, 0, back) ==
        PERMIT_EINVAL);
  CHECK(permit_hpke_seal(aead, pk_r, ii, il, NULL, 0, pt, SIZE_MAX - 40,
                         out2) == PERMIT_EINVAL);

  /* Empty plaintext: enc and a tag only. */
  uint8_t tiny[PERMIT_HPKE_ENC_LEN + PERMIT_AEAD_TAG_LEN];
  CHECK(permit_hpke_seal(aead, pk_r, NULL, 0, NULL, 0, NULL, 0, tiny) == 0);
  CHECK(permit_hpke_open(aead, sk_r, NULL, 0, NULL, 0, tiny, sizeof tiny,
                         NULL) == 0);
out:
  permit_kx_key_free(sk_r);
  permit_kx_key_free(wrong);
}

static void test_bad_suite(void) {
  permit_kx_key *k = NULL;
  CHECK(permit_kx_key_generate(&k) == 0);
  if (k == NULL) return;
  uint8_t enc[PERMIT_HPKE_ENC_LEN], out[64];
  permit_hpke_ctx ctx;
  CHECK(permit_hpke_setup_base_s((permit_aead_id)2, permit_kx_key_public(k),
                                 NULL, 0, NULL, 0, enc, &ctx) ==
        PERMIT_EINVAL);
  CHECK(permit_hpke_seal((permit_aead_id)0, permit_kx_key_public(k), NULL, 0,
                         NULL, 0, out, 1, out) == PERMIT_EINVAL);
  permit_kx_key_free(k);
}

int main(void) {
  CHECK(permit_crypto_init() == 0);
  json_t *root = test_load_json("hpke/rfc9180-base.json");
  CHECK(json_array_size(root) == 2);
  size_t i;
  json_t *s;
  json_array_foreach(root, i, s) test_suite(s);
  json_decref(root);
  test_single_shot(PERMIT_AEAD_AES_128_GCM);
  test_single_shot(PERMIT_AEAD_CHACHA20_POLY1305);
  test_bad_suite();
  permit_crypto_cleanup();
  return test_finish("test_hpke");
}
