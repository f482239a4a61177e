/*
 * test_wycheproof.c - every test of the Wycheproof files under
 * tests/vectors/wycheproof/ run through crypto.c, each handled as its
 * "result" says: valid (and acceptable) inputs must give exactly the
 * expected output, invalid ones must be refused.
 *
 * Permit's own policy changes two things:
 *  - X25519: a zero shared secret is refused (RFC 7748 6.1), so the tests
 *    flagged ZeroSharedSecret, "acceptable" in Wycheproof, must fail;
 *  - AEAD: the API takes 96-bit nonces and the protocol's key sizes only,
 *    so vectors with other sizes must be refused by the API; the valid
 *    ones among them are counted as skipped, outside the protocol's
 *    parameters.
 *
 * Each file's first valid test is also run with its expected value
 * corrupted, which must be reported as a mismatch: the comparisons are
 * real.
 */
#include <stdlib.h>
#include <string.h>

#include "permit/crypto.h"
#include "testlib.h"

typedef enum outcome {
  OUT_ACCEPTED, /* valid input, expected output produced */
  OUT_REJECTED, /* invalid input (or our policy), refused */
  OUT_SKIPPED,  /* valid, outside the protocol's parameters, refused */
  OUT_WRONG     /* disagrees with the vector */
} outcome;

typedef struct counts {
  int accepted, rejected, skipped, total;
} counts;

static const char *str_member(json_t *obj, const char *key) {
  const char *s = json_string_value(json_object_get(obj, key));
  return s != NULL ? s : "";
}

static int has_flag(json_t *t, const char *flag) {
  size_t i;
  json_t *f;
  json_array_foreach(json_object_get(t, "flags"), i, f) {
    if (strcmp(json_string_value(f) ? json_string_value(f) : "", flag) == 0)
      return 1;
  }
  return 0;
}

/* "valid" and "acceptable" are both inputs a correct library accepts. */
static int result_ok(json_t *t) {
  const char *r = str_member(t, "result");
  return strcmp(r, "valid") == 0 || strcmp(r, "acceptable") == 0;
}

static int all_zero(const uint8_t *p, size_t len) {
  uint8_t acc = 0;
  for (size_t i = 0; i < len; i++) acc |= p[i];
  return acc == 0;
}

/* ---- X25519 ---- */

static outcome x25519_case(json_t *g, json_t *t, int corrupt) {
  (void)g;
  size_t privlen, publen, sharedlen;
  uint8_t *priv = test_hex(t, "private", &privlen);
  uint8_t *pub = test_hex(t, "public", &publen);
  uint8_t *shared = test_hex(t, "shared", &sharedlen);
  if (corrupt && sharedlen > 0) shared[0] ^= 1;
  outcome o = OUT_WRONG;
  permit_kx_key *key = NULL;
  uint8_t got[PERMIT_X25519_LEN];
  if (privlen != PERMIT_X25519_LEN || publen != PERMIT_X25519_LEN) {
    /* Our API takes exactly 32-byte keys; nothing else can be valid. */
    o = result_ok(t) ? OUT_WRONG : OUT_REJECTED;
  } else if (permit_kx_key_from_private(priv, &key) != 0) {
    o = OUT_WRONG;
  } else {
    int rc = permit_kx_derive(key, pub, got);
    if (has_flag(t, "ZeroSharedSecret"))
      /* Policy: refused, whatever Wycheproof's "acceptable" says. */
      o = rc == PERMIT_EVERIFY && all_zero(shared, sharedlen) &&
                  all_zero(got, sizeof got)
              ? OUT_REJECTED
              : OUT_WRONG;
    else if (result_ok(t))
      o = rc == 0 && sharedlen == sizeof got &&
                  memcmp(got, shared, sizeof got) == 0
              ? OUT_ACCEPTED
              : OUT_WRONG;
    else
      o = rc != 0 ? OUT_REJECTED : OUT_WRONG;
  }
  permit_kx_key_free(key);
  free(priv);
  free(pub);
  free(shared);
  return o;
}

/* ---- Ed25519 ---- */

static outcome ed25519_case(json_t *g, json_t *t, int corrupt) {
  json_t *pk = json_object_get(g, "publicKey");
  size_t publen, msglen, siglen;
  uint8_t *pub = test_hex(pk, "pk", &publen);
  uint8_t *msg = test_hex(t, "msg", &msglen);
  uint8_t *sig = test_hex(t, "sig", &siglen);
  if (corrupt && siglen > 0) sig[siglen / 2] ^= 0x04;
  outcome o;
  if (publen != PERMIT_ED25519_PUB_LEN) {
    o = result_ok(t) ? OUT_WRONG : OUT_REJECTED;
  } else {
    int rc = permit_verify(pub, NULL, msg, msglen, sig, siglen);
    if (result_ok(t))
      o = rc == 0 ? OUT_ACCEPTED : OUT_WRONG;
    else
      o = rc == PERMIT_EVERIFY ? OUT_REJECTED : OUT_WRONG;
  }
  free(pub);
  free(msg);
  free(sig);
  return o;
}

/* ---- AEADs ---- */

static outcome aead_case(permit_aead_id aead, json_t *g, json_t *t,
                         int corrupt) {
  (void)g;
  size_t keylen, ivlen, aadlen, msglen, ctlen, taglen;
  uint8_t *key = test_hex(t, "key", &keylen);
  uint8_t *iv = test_hex(t, "iv", &ivlen);
  uint8_t *aad = test_hex(t, "aad", &aadlen);
  uint8_t *msg = test_hex(t, "msg", &msglen);
  uint8_t *ct = test_hex(t, "ct", &ctlen);
  uint8_t *tag = test_hex(t, "tag", &taglen);
  if (corrupt) {
    if (ctlen > 0)
      ct[0] ^= 1;
    else if (taglen > 0)
      tag[0] ^= 1;
  }
  /* What the API reads: ciphertext then tag. */
  size_t inlen = ctlen + taglen;
  uint8_t *in = malloc(inlen + 1);
  uint8_t *sealed = malloc(msglen + PERMIT_AEAD_TAG_LEN);
  uint8_t *opened = malloc(ctlen + taglen + 1);
  if (in == NULL || sealed == NULL || opened == NULL) exit(2);
  memcpy(in, ct, ctlen);
  memcpy(in + ctlen, tag, taglen);
  memset(opened, 0xaa, inlen + 1);

  int valid = result_ok(t);
  outcome o = OUT_WRONG;
  if (keylen != permit_aead_key_len(aead) ||
      ivlen != PERMIT_AEAD_NONCE_LEN) {
    /* Outside the API: both directions must refuse the sizes. */
    int rs = permit_aead_seal(aead, key, keylen, iv, ivlen, aad, aadlen, msg,
                              msglen, sealed);
    int ro = permit_aead_open(aead, key, keylen, iv, ivlen, aad, aadlen, in,
                              inlen, opened);
    if (rs == PERMIT_EINVAL && ro == PERMIT_EINVAL)
      o = valid ? OUT_SKIPPED : OUT_REJECTED;
  } else if (valid && taglen != PERMIT_AEAD_TAG_LEN) {
    /* Truncated tags are not offered: the open must not pass. */
    int ro = permit_aead_open(aead, key, keylen, iv, ivlen, aad, aadlen, in,
                              inlen, opened);
    if (ro != 0) o = OUT_SKIPPED;
  } else if (valid) {
    int rs = permit_aead_seal(aead, key, keylen, iv, ivlen, aad, aadlen, msg,
                              msglen, sealed);
    int ro = permit_aead_open(aead, key, keylen, iv, ivlen, aad, aadlen, in,
                              inlen, opened);
    if (rs == 0 && ro == 0 && ctlen == msglen &&
        memcmp(sealed, in, inlen) == 0 && memcmp(opened, msg, msglen) == 0)
      o = OUT_ACCEPTED;
  } else {
    int ro = permit_aead_open(aead, key, keylen, iv, ivlen, aad, aadlen, in,
                              inlen, opened);
    /* Refused, and no unauthenticated plaintext left behind. */
    if ((ro == PERMIT_EVERIFY &&
         all_zero(opened, inlen - PERMIT_AEAD_TAG_LEN)) ||
        (ro == PERMIT_EINVAL && inlen < PERMIT_AEAD_TAG_LEN))
      o = OUT_REJECTED;
  }
  free(key);
  free(iv);
  free(aad);
  free(msg);
  free(ct);
  free(tag);
  free(in);
  free(sealed);
  free(opened);
  return o;
}

static outcome chacha_case(json_t *g, json_t *t, int corrupt) {
  return aead_case(PERMIT_AEAD_CHACHA20_POLY1305, g, t, corrupt);
}

static outcome aes_gcm_case(json_t *g, json_t *t, int corrupt) {
  return aead_case(PERMIT_AEAD_AES_128_GCM, g, t, corrupt);
}

/* ---- HKDF-SHA256 ---- */

static outcome hkdf_case(json_t *g, json_t *t, int corrupt) {
  (void)g;
  size_t ikmlen, saltlen, infolen, okmlen;
  uint8_t *ikm = test_hex(t, "ikm", &ikmlen);
  uint8_t *salt = test_hex(t, "salt", &saltlen);
  uint8_t *info = test_hex(t, "info", &infolen);
  uint8_t *okm = test_hex(t, "okm", &okmlen);
  json_int_t size = json_integer_value(json_object_get(t, "size"));
  if (corrupt && okmlen > 0) okm[okmlen - 1] ^= 0x80;
  outcome o = OUT_WRONG;
  if (size >= 0) {
    uint8_t *out = malloc((size_t)size + 1);
    if (out == NULL) exit(2);
    int rc = permit_hkdf(salt, saltlen, ikm, ikmlen, info, infolen, out,
                         (size_t)size);
    if (result_ok(t))
      o = rc == 0 && okmlen == (size_t)size && memcmp(out, okm, okmlen) == 0
              ? OUT_ACCEPTED
              : OUT_WRONG;
    else
      o = rc == PERMIT_EINVAL ? OUT_REJECTED : OUT_WRONG;
    free(out);
  }
  free(ikm);
  free(salt);
  free(info);
  free(okm);
  return o;
}

/* ---- Driver ---- */

typedef outcome (*case_fn)(json_t *g, json_t *t, int corrupt);

static void run_file(const char *file, case_fn fn, const char *skip_note) {
  char rel[256];
  snprintf(rel, sizeof rel, "wycheproof/%s", file);
  json_t *root = test_load_json(rel);
  counts c = {0, 0, 0, 0};
  int canary_done = 0;
  size_t gi, ti;
  json_t *g, *t;
  json_array_foreach(json_object_get(root, "testGroups"), gi, g) {
    json_array_foreach(json_object_get(g, "tests"), ti, t) {
      int tc = (int)json_integer_value(json_object_get(t, "tcId"));
      outcome o = fn(g, t, 0);
      c.total++;
      switch (o) {
      case OUT_ACCEPTED: c.accepted++; break;
      case OUT_REJECTED: c.rejected++; break;
      case OUT_SKIPPED: c.skipped++; break;
      case OUT_WRONG: break;
      }
      CHECKF(o != OUT_WRONG, "%s tcId %d (%s, %s)", file, tc,
             str_member(t, "result"), str_member(t, "comment"));
      /* Run one passing valid test again with its expectation damaged. */
      if (!canary_done && o == OUT_ACCEPTED) {
        canary_done = 1;
        CHECKF(fn(g, t, 1) == OUT_WRONG,
               "%s tcId %d: a corrupted expected value went unnoticed", file,
               tc);
      }
    }
  }
  CHECKF(canary_done, "%s: no valid test was accepted", file);
  json_int_t declared = json_integer_value(json_object_get(root,
                                                           "numberOfTests"));
  CHECKF(c.total == declared, "%s: ran %d of %d tests", file, c.total,
         (int)declared);
  CHECKF(c.accepted + c.rejected + c.skipped == c.total,
         "%s: %d tests disagreed with the vectors", file,
         c.total - c.accepted - c.rejected - c.skipped);
  printf("%s: %d tests, %d accepted, %d rejected, %d skipped%s\n", file,
         c.total, c.accepted, c.rejected, c.skipped,
         c.skipped > 0 ? skip_note : "");
  json_decref(root);
}

int main(void) {
  CHECK(permit_crypto_init() == 0);
  static const char outside[] =
      " (valid, outside the protocol's parameters: refused by the API)";
  run_file("x25519_test.json", x25519_case, "");
  run_file("ed25519_test.json", ed25519_case, "");
  run_file("chacha20_poly1305_test.json", chacha_case, outside);
  run_file("hkdf_sha256_test.json", hkdf_case, "");
  run_file("aes_gcm_test.json", aes_gcm_case, outside);
  permit_crypto_cleanup();
  return test_finish("test_wycheproof");
}
