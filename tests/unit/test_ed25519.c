/*
 * test_ed25519.c - the batch verifier of ed25519.c:
 *  - the point arithmetic: [L]B is the identity, encodings survive a
 *    decode and re-encode, the fixed-base and general paths agree, and
 *    [a]B of a clamped seed hash is the public key OpenSSL derives;
 *  - every Wycheproof ed25519 vector, alone and mixed into a batch of the
 *    valid ones;
 *  - a few thousand random signatures, some corrupted, in random batches:
 *    a batch returns 1 exactly when OpenSSL's EVP_DigestVerify accepts
 *    every item;
 *  - the one documented difference from OpenSSL: a signature whose R has
 *    a small-order component, built here from a known private key, which
 *    the (cofactored) batch accepts and OpenSSL refuses;
 *  - R encodings OpenSSL never matches, and two bad signatures whose
 *    errors cancel unless the coefficients are random;
 *  - keys the batch leaves to OpenSSL (small order, with a small-order
 *    component, not canonical, no point), edge cases of the API, the
 *    largest batch, and batches from several threads at once.
 *
 * The random choices come from a generator seeded by $PERMIT_TEST_SEED or
 * the clock; the seed is printed so that a failure can be replayed (the
 * batch's own coefficients are drawn by the library and are not
 * replayed).
 */
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "permit/crypto.h"
#include "permit/ed25519.h"
#include "permit/record.h"
#include "permit/util.h"
#include "testlib.h"

#define CONTEXT "permit/v1/record\n"

static const uint8_t identity_enc[32] = {1};

/* ---- helpers ---- */

static uint64_t rng_state;

static uint64_t rng(void) {
  /* splitmix64 */
  uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static size_t rng_below(size_t n) { return (size_t)(rng() % n); }

static void rng_bytes(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rng();
}

/* OpenSSL's verdict, straight from EVP_DigestVerify on a fresh context. */
static int ossl_verify(const permit_ed25519_item *it) {
  size_t clen = it->context != NULL ? strlen(it->context) : 0;
  uint8_t *buf = malloc(clen + it->len + 1);
  if (buf == NULL) exit(2);
  if (clen > 0) memcpy(buf, it->context, clen);
  if (it->len > 0) memcpy(buf + clen, it->msg, it->len);
  int ok = 0;
  EVP_PKEY *pkey =
      EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, it->pub, 32);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (pkey != NULL && md != NULL &&
      EVP_DigestVerifyInit_ex(md, NULL, NULL, NULL, NULL, pkey, NULL) == 1)
    ok = EVP_DigestVerify(md, it->sig, 64, buf, clen + it->len) == 1;
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(pkey);
  free(buf);
  return ok;
}

static int batch1(const permit_ed25519_item *it) {
  return permit_ed25519_batch_verify(it, 1);
}

/* SHA-512 of the concatenation of up to four parts. */
static void sha512(uint8_t out[64], const void *a, size_t alen, const void *b,
                   size_t blen, const void *c, size_t clen, const void *d,
                   size_t dlen) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (md == NULL || EVP_DigestInit_ex(md, EVP_sha512(), NULL) != 1 ||
      EVP_DigestUpdate(md, a, alen) != 1 ||
      EVP_DigestUpdate(md, b, blen) != 1 ||
      EVP_DigestUpdate(md, c, clen) != 1 ||
      EVP_DigestUpdate(md, d, dlen) != 1 ||
      EVP_DigestFinal_ex(md, out, NULL) != 1)
    exit(2);
  EVP_MD_CTX_free(md);
}

static const uint8_t order_le[32] = {
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
    0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};

/* out = (x * y + z) mod L on little-endian byte strings (y, z may be
 * NULL for 1 and 0). */
static void scalar_muladd(uint8_t out[32], const uint8_t *x, size_t xlen,
                          const uint8_t *y, size_t ylen, const uint8_t *z,
                          size_t zlen) {
  BN_CTX *ctx = BN_CTX_new();
  BIGNUM *l = BN_lebin2bn(order_le, 32, NULL);
  BIGNUM *a = BN_lebin2bn(x, (int)xlen, NULL);
  BIGNUM *b = y != NULL ? BN_lebin2bn(y, (int)ylen, NULL) : BN_new();
  BIGNUM *c = z != NULL ? BN_lebin2bn(z, (int)zlen, NULL) : BN_new();
  if (ctx == NULL || l == NULL || a == NULL || b == NULL || c == NULL) exit(2);
  if (y == NULL) BN_one(b);
  if (z == NULL) BN_zero(c);
  if (BN_mul(a, a, b, ctx) != 1 || BN_add(a, a, c) != 1 ||
      BN_nnmod(a, a, l, ctx) != 1 || BN_bn2lebinpad(a, out, 32) != 32)
    exit(2);
  BN_free(a);
  BN_free(b);
  BN_free(c);
  BN_free(l);
  BN_CTX_free(ctx);
}

/* |x| + |y| as 256-bit little-endian integers (no overflow expected). */
static void add256(uint8_t out[32], const uint8_t x[32], const uint8_t y[32]) {
  unsigned carry = 0;
  for (int i = 0; i < 32; i++) {
    unsigned t = (unsigned)x[i] + y[i] + carry;
    out[i] = (uint8_t)t;
    carry = t >> 8;
  }
}

static void small_scalar(uint8_t k[32], unsigned v) {
  memset(k, 0, 32);
  k[0] = (uint8_t)v;
  k[1] = (uint8_t)(v >> 8);
}

/* A signed item with buffers of its own (so that it can be corrupted). */
typedef struct owned {
  uint8_t pub[32];
  uint8_t sig[64];
  uint8_t msg[256];
  const char *context;
  size_t len;
} owned;

static permit_sign_key *keys[8];
#define NKEYS 8

static void owned_make(owned *o, int key, const char *context, size_t len) {
  o->context = context;
  o->len = len;
  rng_bytes(o->msg, len);
  memcpy(o->pub, permit_sign_key_public(keys[key]), 32);
  if (permit_sign(keys[key], context, o->msg, len, o->sig) != 0) exit(2);
}

static permit_ed25519_item owned_item(const owned *o) {
  return (permit_ed25519_item){o->pub, o->sig, o->context, o->msg, o->len};
}

/* ---- the point arithmetic ---- */

static void test_points(void) {
  uint8_t benc[32], l[32], out[32], out2[32], k[32];
  memcpy(l, order_le, 32);
  memset(benc, 0x66, 32);
  benc[0] = 0x58;
  CHECK(permit_ed25519_point_check(benc) == 1);
  CHECK(permit_ed25519_point_check(identity_enc) == 1);

  /* [1]B, [0]B, [L]B and [L + 1]B on both paths. */
  small_scalar(k, 1);
  CHECK(permit_ed25519_scalarmult(out, k, NULL) == 0 &&
        memcmp(out, benc, 32) == 0);
  CHECK(permit_ed25519_scalarmult(out, k, benc) == 0 &&
        memcmp(out, benc, 32) == 0);
  small_scalar(k, 0);
  CHECK(permit_ed25519_scalarmult(out, k, NULL) == 0 &&
        memcmp(out, identity_enc, 32) == 0);
  CHECK(permit_ed25519_scalarmult(out, l, NULL) == 0 &&
        memcmp(out, identity_enc, 32) == 0);
  CHECK(permit_ed25519_scalarmult(out, l, benc) == 0 &&
        memcmp(out, identity_enc, 32) == 0);
  memcpy(k, l, 32);
  k[0]++; /* L + 1 (no carry: L ends in 0xed) */
  CHECK(permit_ed25519_scalarmult(out, k, NULL) == 0 &&
        memcmp(out, benc, 32) == 0);
  k[0] -= 2; /* L - 1: -B, B with the sign of x flipped */
  CHECK(permit_ed25519_scalarmult(out, k, NULL) == 0 &&
        memcmp(out, benc, 31) == 0 && out[31] == (benc[31] ^ 0x80));
  /* The largest 256-bit scalar, on both paths. */
  memset(k, 0xff, 32);
  CHECK(permit_ed25519_scalarmult(out, k, NULL) == 0 &&
        permit_ed25519_scalarmult(out2, k, benc) == 0 &&
        memcmp(out, out2, 32) == 0);

  /* Random multiples: decode(encode(P)) == P, the two paths agree, and
   * the group law holds. */
  for (int i = 0; i < 64; i++) {
    uint8_t k1[32], k2[32], ks[32], p1[32], p2[32], ps[32], sum[32];
    rng_bytes(k1, 32);
    rng_bytes(k2, 32);
    k1[31] &= 0x7f;
    k2[31] &= 0x7f;
    add256(ks, k1, k2);
    CHECK(permit_ed25519_scalarmult(p1, k1, NULL) == 0);
    CHECK(permit_ed25519_scalarmult(p2, k2, NULL) == 0);
    CHECK(permit_ed25519_scalarmult(ps, ks, NULL) == 0);
    CHECK(permit_ed25519_point_check(p1) == 1);
    CHECK(permit_ed25519_point_add(out, p1, identity_enc) == 0 &&
          memcmp(out, p1, 32) == 0);
    CHECK(permit_ed25519_scalarmult(out, k1, benc) == 0 &&
          memcmp(out, p1, 32) == 0);
    CHECK(permit_ed25519_point_add(sum, p1, p2) == 0 &&
          memcmp(sum, ps, 32) == 0);
    /* [k2]([k1]B) == [k1]([k2]B) */
    CHECK(permit_ed25519_scalarmult(out, k2, p1) == 0 &&
          permit_ed25519_scalarmult(out2, k1, p2) == 0 &&
          memcmp(out, out2, 32) == 0);
    /* [L]P is the identity for P in the prime-order group. */
    CHECK(permit_ed25519_scalarmult(out, l, p1) == 0 &&
          memcmp(out, identity_enc, 32) == 0);
  }

  /* [a]B for a clamped SHA-512(seed) is OpenSSL's public key. */
  for (int i = 0; i < 8; i++) {
    uint8_t seed[32], h[64];
    permit_sign_key *key;
    rng_bytes(seed, 32);
    CHECK(permit_sign_key_from_seed(seed, &key) == 0);
    sha512(h, seed, 32, "", 0, "", 0, "", 0);
    h[0] &= 248;
    h[31] &= 127;
    h[31] |= 64;
    CHECK(permit_ed25519_scalarmult(out, h, NULL) == 0 &&
          memcmp(out, permit_sign_key_public(key), 32) == 0);
    permit_sign_key_free(key);
  }

  /* Encodings that are not canonical, or of no point. */
  uint8_t e[32];
  memset(e, 0xff, 32);
  e[31] = 0x7f;
  e[0] = 0xed; /* y = p */
  CHECK(permit_ed25519_point_check(e) == 0);
  e[0] = 0xee; /* y = p + 1, which would be the identity */
  CHECK(permit_ed25519_point_check(e) == 0);
  e[0] = 0xec; /* y = p - 1 = -1, x = 0: a point of order 2 */
  CHECK(permit_ed25519_point_check(e) == 1);
  e[31] |= 0x80; /* ... with the sign bit set */
  CHECK(permit_ed25519_point_check(e) == 0);
  memcpy(e, identity_enc, 32);
  e[31] |= 0x80; /* y = 1 with the sign bit set */
  CHECK(permit_ed25519_point_check(e) == 0);
  CHECK(permit_ed25519_point_add(out, e, benc) == PERMIT_EINVAL);
  CHECK(permit_ed25519_scalarmult(out, l, e) == PERMIT_EINVAL);
  /* About half of all y have a point. */
  int decoded = 0;
  for (int i = 0; i < 200; i++) {
    rng_bytes(e, 32);
    decoded += permit_ed25519_point_check(e);
  }
  CHECKF(decoded > 50 && decoded < 150, "%d of 200 decoded", decoded);
}

/* ---- Wycheproof ---- */

/*
 * Invalid vectors that only a cofactorless verifier refuses, which the
 * batch accepts by design (R with a small-order component): none in this
 * file.  test_wycheproof_file() checks every invalid vector the API can
 * take (64-byte signatures) against this list, so a new one would show as
 * a failure naming its tcId.
 */
static const int cofactored_only[] = {0 /* sentinel: no tcId is 0 */};

static int is_cofactored_only(int tcid) {
  for (size_t i = 0; i < sizeof cofactored_only / sizeof *cofactored_only; i++)
    if (cofactored_only[i] == tcid && tcid != 0) return 1;
  return 0;
}

typedef struct wvec {
  int tcid;
  uint8_t *pub, *msg, *sig;
  size_t msglen, siglen;
  int valid;
} wvec;

static void test_wycheproof_file(void) {
  json_t *root = test_load_json("wycheproof/ed25519_test.json");
  size_t count = 0, cap = 256;
  wvec *v = calloc(cap, sizeof *v);
  if (v == NULL) exit(2);
  size_t gi, ti;
  json_t *g, *t;
  json_array_foreach(json_object_get(root, "testGroups"), gi, g) {
    json_t *pk = json_object_get(g, "publicKey");
    json_array_foreach(json_object_get(g, "tests"), ti, t) {
      if (count == cap) exit(2);
      wvec *w = &v[count++];
      size_t publen;
      w->tcid = (int)json_integer_value(json_object_get(t, "tcId"));
      w->pub = test_hex(pk, "pk", &publen);
      w->msg = test_hex(t, "msg", &w->msglen);
      w->sig = test_hex(t, "sig", &w->siglen);
      const char *r = json_string_value(json_object_get(t, "result"));
      w->valid = r != NULL && strcmp(r, "valid") == 0;
      CHECKF(publen == 32, "tcId %d", w->tcid);
      CHECKF(r != NULL && (w->valid || strcmp(r, "invalid") == 0),
             "tcId %d: result %s", w->tcid, r ? r : "(none)");
    }
  }
  CHECKF(count == 151, "%zu vectors", count);

  /* The valid ones, alone and then all together (several keys). */
  permit_ed25519_item *valid = calloc(count, sizeof *valid);
  if (valid == NULL) exit(2);
  size_t nvalid = 0, ninvalid = 0, nshape = 0;
  for (size_t i = 0; i < count; i++) {
    wvec *w = &v[i];
    permit_ed25519_item it = {w->pub, w->sig, NULL, w->msg, w->msglen};
    if (w->valid) {
      CHECKF(w->siglen == 64, "tcId %d", w->tcid);
      CHECKF(ossl_verify(&it) == 1, "tcId %d: OpenSSL", w->tcid);
      CHECKF(batch1(&it) == 1, "tcId %d: valid, alone", w->tcid);
      valid[nvalid++] = it;
    }
  }
  CHECKF(permit_ed25519_batch_verify(valid, nvalid) == 1,
         "all %zu valid vectors in one batch", nvalid);
  CHECK(nvalid == 88);

  /* The invalid ones, alone and at a random place among the valid. */
  permit_ed25519_item *mixed = calloc(nvalid + 1, sizeof *mixed);
  if (mixed == NULL) exit(2);
  for (size_t i = 0; i < count; i++) {
    wvec *w = &v[i];
    if (w->valid) continue;
    if (w->siglen != 64) {
      /* Outside the API: an item's signature is 64 bytes, and checking
       * that is the caller's job.  These are the truncated, padded and
       * shortened signatures. */
      nshape++;
      CHECKF(w->tcid >= 30 && w->tcid <= 41, "tcId %d: length %zu", w->tcid,
             w->siglen);
      continue;
    }
    ninvalid++;
    permit_ed25519_item it = {w->pub, w->sig, NULL, w->msg, w->msglen};
    CHECKF(ossl_verify(&it) == 0, "tcId %d: OpenSSL accepts", w->tcid);
    int want = is_cofactored_only(w->tcid) ? 1 : 0;
    CHECKF(batch1(&it) == want, "tcId %d: invalid, alone", w->tcid);
    size_t at = rng_below(nvalid + 1);
    memcpy(mixed, valid, at * sizeof *mixed);
    mixed[at] = it;
    memcpy(mixed + at + 1, valid + at, (nvalid - at) * sizeof *mixed);
    CHECKF(permit_ed25519_batch_verify(mixed, nvalid + 1) == want,
           "tcId %d: invalid, at %zu of %zu", w->tcid, at, nvalid + 1);
  }
  CHECK(ninvalid == 51);
  CHECK(nshape == 12);
  printf(
      "wycheproof: %zu valid, %zu invalid, %zu of a length the API "
      "does not take\n",
      nvalid, ninvalid, nshape);
  for (size_t i = 0; i < count; i++) {
    free(v[i].pub);
    free(v[i].msg);
    free(v[i].sig);
  }
  free(v);
  free(valid);
  free(mixed);
  json_decref(root);
}

/* ---- against OpenSSL on random, corrupted signatures ---- */

enum {
  BAD_R,
  BAD_S,
  BAD_MSG,
  BAD_KEY,
  BAD_S_PLUS_L,
  BAD_SWAP,
  BAD_CONTEXT,
  BAD_KINDS
};

static const char *const bad_names[BAD_KINDS] = {
    "bit of R", "bit of S",         "bit of msg", "bit of key",
    "S + L",    "swapped messages", "context"};

static const char *const contexts[] = {NULL, CONTEXT, "ctx", ""};

/* Corrupts item |i| of |o| (|m| items) in way |kind|; returns 0 when that
 * kind does not apply to it. */
static int corrupt(owned *o, size_t m, size_t i, int kind) {
  owned *x = &o[i];
  switch (kind) {
    case BAD_R:
      x->sig[rng_below(32)] ^= (uint8_t)(1u << rng_below(8));
      return 1;
    case BAD_S:
      x->sig[32 + rng_below(32)] ^= (uint8_t)(1u << rng_below(8));
      return 1;
    case BAD_MSG:
      if (x->len == 0) return 0;
      x->msg[rng_below(x->len)] ^= (uint8_t)(1u << rng_below(8));
      return 1;
    case BAD_KEY:
      x->pub[rng_below(32)] ^= (uint8_t)(1u << rng_below(8));
      return 1;
    case BAD_S_PLUS_L:
      add256(x->sig + 32, x->sig + 32, order_le);
      return 1;
    case BAD_SWAP: {
      if (m < 2) return 0;
      size_t j = (i + 1 + rng_below(m - 1)) % m;
      uint8_t tmp[256];
      size_t tl = x->len;
      memcpy(tmp, x->msg, tl);
      memcpy(x->msg, o[j].msg, o[j].len);
      x->len = o[j].len;
      memcpy(o[j].msg, tmp, tl);
      o[j].len = tl;
      return 1;
    }
    case BAD_CONTEXT:
      /* NULL and "" sign the same bytes: move to one that differs. */
      if (x->context == NULL || x->context[0] == '\0')
        x->context = "ctx";
      else if (strcmp(x->context, "ctx") == 0)
        x->context = CONTEXT;
      else
        x->context = NULL;
      return 1;
  }
  return 0;
}

static void test_differential(void) {
  enum { MAXB = 48 };
  owned *o = calloc(MAXB, sizeof *o);
  permit_ed25519_item *items = calloc(MAXB, sizeof *items);
  if (o == NULL || items == NULL) exit(2);
  int total = 0, batches = 0, accepted = 0, refused = 0;
  int kinds_seen[BAD_KINDS] = {0};
  while (total < 3000) {
    size_t m = 1 + rng_below(MAXB);
    int one_key = rng_below(2) == 0;
    int key = (int)rng_below(NKEYS);
    for (size_t i = 0; i < m; i++) {
      int k = one_key ? key : (int)rng_below(NKEYS);
      owned_make(&o[i], k, contexts[rng_below(4)], rng_below(257));
    }
    /* Half the batches untouched, the others with one to three bad. */
    int nbad = rng_below(2) == 0 ? 0 : 1 + (int)rng_below(3);
    char what[256] = "";
    for (int b = 0; b < nbad; b++) {
      size_t i = rng_below(m);
      int kind;
      do kind = (int)rng_below(BAD_KINDS);
      while (!corrupt(o, m, i, kind));
      kinds_seen[kind]++;
      size_t used = strlen(what);
      snprintf(what + used, sizeof what - used, " [%zu] %s;", i,
               bad_names[kind]);
    }
    int want = 1;
    for (size_t i = 0; i < m; i++) {
      items[i] = owned_item(&o[i]);
      want &= ossl_verify(&items[i]);
    }
    int got = permit_ed25519_batch_verify(items, m);
    CHECKF(got == want, "batch %d of %zu items: batch %d, OpenSSL %d;%s",
           batches, m, got, want, what);
    if (want)
      accepted++;
    else
      refused++;
    total += (int)m;
    batches++;
  }
  /* Both outcomes and every kind of corruption were exercised. */
  CHECKF(accepted > 20 && refused > 20, "%d accepted, %d refused", accepted,
         refused);
  for (int k = 0; k < BAD_KINDS; k++)
    CHECKF(kinds_seen[k] > 2, "%s: %d", bad_names[k], kinds_seen[k]);
  printf(
      "differential: %d signatures in %d batches, %d accepted, %d "
      "refused\n",
      total, batches, accepted, refused);
  free(o);
  free(items);
}

/* ---- R with a small-order component ---- */

/* A point of order exactly 8: [L]P of a random point P has order
 * dividing 8; keep one whose [4] multiple is not the identity. */
static void order8_point(uint8_t t[32]) {
  uint8_t p[32], q[32], k[32];
  for (int tries = 0; tries < 1000; tries++) {
    rng_bytes(p, 32);
    if (!permit_ed25519_point_check(p)) continue;
    if (permit_ed25519_scalarmult(t, order_le, p) != 0) exit(2);
    small_scalar(k, 4);
    if (permit_ed25519_scalarmult(q, k, t) != 0) exit(2);
    if (memcmp(q, identity_enc, 32) != 0) return;
  }
  fprintf(stderr, "no point of order 8 found\n");
  exit(2);
}

/*
 * Signs |msg| with the private scalar |a| (public key |pub|) and nonce
 * point [r]B + T (T NULL for none): R = [r]B + T, k = H(R || A || ctx ||
 * msg), S = r + k a mod L.
 */
static void sign_with_torsion(uint8_t sig[64], const uint8_t a[32],
                              const uint8_t pub[32], const uint8_t *t,
                              const char *context, const uint8_t *msg,
                              size_t len) {
  uint8_t r[32], rb[32], h[64];
  rng_bytes(r, 32);
  scalar_muladd(r, r, 32, NULL, 0, NULL, 0);
  if (permit_ed25519_scalarmult(rb, r, NULL) != 0) exit(2);
  if (t != NULL) {
    if (permit_ed25519_point_add(sig, rb, t) != 0) exit(2);
  } else {
    memcpy(sig, rb, 32);
  }
  size_t clen = context != NULL ? strlen(context) : 0;
  sha512(h, sig, 32, pub, 32, context != NULL ? context : "", clen, msg, len);
  scalar_muladd(sig + 32, h, 64, a, 32, r, 32);
}

/* The private scalar |a| and public key |pub| of RFC 8032 7.1 TEST 1's
 * seed, checked against OpenSSL's. */
static void known_key(uint8_t a[32], uint8_t pub[32]) {
  uint8_t seed[32], h[64], tmp[32];
  test_unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        seed, sizeof seed);
  permit_sign_key *key;
  CHECK(permit_sign_key_from_seed(seed, &key) == 0);
  memcpy(pub, permit_sign_key_public(key), 32);
  permit_sign_key_free(key);
  sha512(h, seed, 32, "", 0, "", 0, "", 0);
  memcpy(a, h, 32);
  a[0] &= 248;
  a[31] &= 127;
  a[31] |= 64;
  CHECK(permit_ed25519_scalarmult(tmp, a, NULL) == 0 &&
        memcmp(tmp, pub, 32) == 0);
}

static void test_small_order_r(void) {
  uint8_t a[32], pub[32], t8[32], k[32], tmp[32];
  known_key(a, pub);

  order8_point(t8);
  small_scalar(k, 8);
  CHECK(permit_ed25519_scalarmult(tmp, k, t8) == 0 &&
        memcmp(tmp, identity_enc, 32) == 0);
  /* The torsion points of order 8, 4 and 2. */
  uint8_t tors[3][32];
  memcpy(tors[0], t8, 32);
  small_scalar(k, 2);
  CHECK(permit_ed25519_scalarmult(tors[1], k, t8) == 0);
  small_scalar(k, 4);
  CHECK(permit_ed25519_scalarmult(tors[2], k, t8) == 0);
  for (int i = 0; i < 3; i++) CHECK(memcmp(tors[i], identity_enc, 32) != 0);

  uint8_t msg[100];
  rng_bytes(msg, sizeof msg);
  /* The construction without T is an ordinary signature. */
  uint8_t sig0[64];
  sign_with_torsion(sig0, a, pub, NULL, CONTEXT, msg, sizeof msg);
  permit_ed25519_item plain = {pub, sig0, CONTEXT, msg, sizeof msg};
  CHECK(ossl_verify(&plain) == 1);
  CHECK(batch1(&plain) == 1);

  for (int i = 0; i < 3; i++) {
    uint8_t sig[64];
    sign_with_torsion(sig, a, pub, tors[i], CONTEXT, msg, sizeof msg);
    permit_ed25519_item it = {pub, sig, CONTEXT, msg, sizeof msg};
    /* The documented difference: OpenSSL (cofactorless) refuses, the
     * batch (cofactored) accepts, alone and among others. */
    CHECKF(ossl_verify(&it) == 0, "torsion %d: OpenSSL", i);
    CHECKF(batch1(&it) == 1, "torsion %d: batch", i);
    permit_ed25519_item two[2] = {plain, it};
    CHECKF(permit_ed25519_batch_verify(two, 2) == 1, "torsion %d: pair", i);
    /* Still bound to the message: another one fails both. */
    msg[0] ^= 1;
    CHECKF(batch1(&it) == 0, "torsion %d: other message", i);
    msg[0] ^= 1;
  }
}

/*
 * R given as an encoding OpenSSL never matches: the identity written with
 * y = p + 1, or with the sign bit set.  With S = k a (so that [S]B - [k]A
 * is the identity), the canonical encoding 01 00 .. 00 is valid for both
 * verifiers, the other two for neither.
 */
static void test_noncanonical_r(void) {
  uint8_t a[32], pub[32], h[64], sig[64], msg[20];
  known_key(a, pub);
  rng_bytes(msg, sizeof msg);
  for (int form = 0; form < 3; form++) {
    memset(sig, 0, 32);
    if (form == 0) {
      sig[0] = 1;
    } else if (form == 1) {
      memset(sig, 0xff, 32);
      sig[0] = 0xee;
      sig[31] = 0x7f;
    } else {
      sig[0] = 1;
      sig[31] = 0x80;
    }
    sha512(h, sig, 32, pub, 32, "", 0, msg, sizeof msg);
    scalar_muladd(sig + 32, h, 64, a, 32, NULL, 0);
    permit_ed25519_item it = {pub, sig, NULL, msg, sizeof msg};
    CHECKF(ossl_verify(&it) == (form == 0), "form %d: OpenSSL", form);
    CHECKF(batch1(&it) == (form == 0), "form %d: batch", form);
  }
}

/*
 * A public key with a small-order component, A = [a]B + T (T of order 8):
 * an honest signature (R = [r]B, S = r + k a) has [S]B - R - [k]A = -[k]T,
 * which OpenSSL accepts only when 8 divides k, and which a cofactored
 * check alone would always accept.  The batch refuses such keys (the
 * caller then asks OpenSSL): whether the key is the batch's first new
 * one (checked inside the equation), a later new one (checked on its
 * own) or follows keys seen before.
 */
static void test_mixed_order_key(void) {
  uint8_t a[32], pub[32], t8[32], amix[32], msg[40];
  known_key(a, pub);
  order8_point(t8);
  CHECK(permit_ed25519_point_add(amix, pub, t8) == 0);
  permit_sign_key *fresh[2];
  owned o[2];
  for (int i = 0; i < 2; i++) {
    CHECK(permit_sign_key_generate(&fresh[i]) == 0);
    o[i].context = CONTEXT;
    o[i].len = 30;
    rng_bytes(o[i].msg, o[i].len);
    memcpy(o[i].pub, permit_sign_key_public(fresh[i]), 32);
    CHECK(permit_sign(fresh[i], CONTEXT, o[i].msg, o[i].len, o[i].sig) == 0);
  }
  /* fresh[1]'s key is seen in a good batch, and so kept; fresh[0]'s
   * never is. */
  permit_ed25519_item known = owned_item(&o[1]);
  CHECK(batch1(&known) == 1);
  int ossl_accepted = 0, tries = 0;
  while (ossl_accepted < 2 && tries < 400) {
    tries++;
    uint8_t sig[64];
    rng_bytes(msg, sizeof msg);
    sign_with_torsion(sig, a, amix, NULL, CONTEXT, msg, sizeof msg);
    permit_ed25519_item it = {amix, sig, CONTEXT, msg, sizeof msg};
    int ossl = ossl_verify(&it);
    ossl_accepted += ossl;
    /* Alone: the first new key, left to the equation. */
    CHECKF(batch1(&it) == 0, "try %d (OpenSSL %d): alone", tries, ossl);
    /* After a new key: A is checked on its own. */
    permit_ed25519_item two[2] = {owned_item(&o[0]), it};
    CHECKF(permit_ed25519_batch_verify(two, 2) == 0,
           "try %d (OpenSSL %d): second new key", tries, ossl);
    /* After a kept key: A is the first new key again. */
    two[0] = known;
    CHECKF(permit_ed25519_batch_verify(two, 2) == 0,
           "try %d (OpenSSL %d): after a kept key", tries, ossl);
  }
  /* About 1 in 8: the case where OpenSSL accepts and the batch defers. */
  CHECKF(ossl_accepted == 2, "OpenSSL accepted %d of %d", ossl_accepted, tries);
  /* The fresh keys themselves were fine all along. */
  permit_ed25519_item good[2] = {owned_item(&o[0]), owned_item(&o[1])};
  CHECK(permit_ed25519_batch_verify(good, 2) == 1);
  for (int i = 0; i < 2; i++) permit_sign_key_free(fresh[i]);
}

/* ---- keys the batch leaves to OpenSSL ---- */

static void test_odd_keys(void) {
  uint8_t t8[32], s[32], sig[64], msg[32], pub[32];
  order8_point(t8);
  rng_bytes(msg, sizeof msg);
  /* Under a small-order key A, [S]B - [k]A == [S]B - (a small-order
   * point): R = [S]B works whenever [k]A is the identity, always for
   * A the identity, for 1 in 8 messages under A of order 8. */
  const uint8_t *small[2] = {identity_enc, t8};
  for (int i = 0; i < 2; i++) {
    rng_bytes(s, 32);
    scalar_muladd(s, s, 32, NULL, 0, NULL, 0);
    CHECK(permit_ed25519_scalarmult(sig, s, NULL) == 0);
    memcpy(sig + 32, s, 32);
    permit_ed25519_item it = {small[i], sig, NULL, msg, sizeof msg};
    CHECKF(batch1(&it) == 0, "small-order key %d", i);
    if (i == 0)
      printf(
          "note: OpenSSL %s a signature under the identity as public "
          "key\n",
          ossl_verify(&it) ? "accepts" : "refuses");
  }
  /* A key whose y is not below p. */
  memset(pub, 0xff, 32);
  pub[0] = 0xee;
  pub[31] = 0x7f;
  memset(sig, 0, 64);
  sig[0] = 1;
  permit_ed25519_item it = {pub, sig, NULL, msg, sizeof msg};
  CHECK(batch1(&it) == 0);
  /* A key that is no point. */
  int found = 0;
  for (int i = 0; i < 100 && !found; i++) {
    rng_bytes(pub, 32);
    if (permit_ed25519_point_check(pub)) continue;
    found = 1;
    CHECK(batch1(&it) == 0);
  }
  CHECK(found);
}

/* ---- the API's edges ---- */

static void test_edges(void) {
  owned o[2];
  permit_ed25519_item items[16];
  CHECK(permit_ed25519_batch_verify(NULL, 0) == 1);

  /* Contexts: NULL and "" sign the same bytes, "ctx" others. */
  owned_make(&o[0], 0, "ctx", 40);
  items[0] = owned_item(&o[0]);
  CHECK(batch1(&items[0]) == 1);
  items[0].context = NULL;
  CHECK(batch1(&items[0]) == 0);
  items[0].context = "ctx\n";
  CHECK(batch1(&items[0]) == 0);
  owned_make(&o[1], 1, NULL, 40);
  items[0] = owned_item(&o[1]);
  CHECK(batch1(&items[0]) == 1);
  items[0].context = "";
  CHECK(batch1(&items[0]) == 1);
  items[0].context = "ctx";
  CHECK(batch1(&items[0]) == 0);

  /* An empty message, given as NULL. */
  owned_make(&o[0], 2, CONTEXT, 0);
  items[0] = owned_item(&o[0]);
  items[0].msg = NULL;
  CHECK(batch1(&items[0]) == 1);

  /* The same item 16 times; then the same bad item 16 times. */
  for (int i = 0; i < 16; i++) items[i] = owned_item(&o[0]);
  CHECK(permit_ed25519_batch_verify(items, 16) == 1);
  o[0].sig[40] ^= 1;
  CHECK(permit_ed25519_batch_verify(items, 16) == 0);
  o[0].sig[40] ^= 1;
  /* One bad copy among good ones (the same bytes but another message). */
  owned_make(&o[1], 2, CONTEXT, 10);
  items[7] = owned_item(&o[1]);
  CHECK(permit_ed25519_batch_verify(items, 16) == 1);
  items[7].len = 9;
  CHECK(permit_ed25519_batch_verify(items, 16) == 0);

  /* Arguments. */
  items[7].len = 10;
  items[3].pub = NULL;
  CHECK(permit_ed25519_batch_verify(items, 16) == PERMIT_EINVAL);
  items[3] = owned_item(&o[0]);
  items[3].sig = NULL;
  CHECK(permit_ed25519_batch_verify(items, 16) == PERMIT_EINVAL);
  items[3] = owned_item(&o[1]);
  items[3].msg = NULL;
  CHECK(permit_ed25519_batch_verify(items, 16) == PERMIT_EINVAL);
  CHECK(permit_ed25519_batch_verify(NULL, 1) == PERMIT_EINVAL);
  permit_ed25519_item *many =
      calloc(PERMIT_ED25519_BATCH_MAX + 1, sizeof *many);
  if (many == NULL) exit(2);
  for (size_t i = 0; i <= PERMIT_ED25519_BATCH_MAX; i++)
    many[i] = owned_item(&o[0]);
  CHECK(permit_ed25519_batch_verify(many, PERMIT_ED25519_BATCH_MAX + 1) ==
        PERMIT_EINVAL);
  free(many);
}

/*
 * Two bad signatures whose errors cancel in a plain sum: S1 + e and
 * S2 - e.  Only the random coefficients catch them, so this fails if the
 * coefficients are not independent per item.
 */
static void test_cancelling(void) {
  owned o[2];
  uint8_t e[32], neg_e[32], lm1[32];
  permit_ed25519_item items[2];
  memcpy(lm1, order_le, 32);
  lm1[0]--; /* L - 1 */
  for (int round = 0; round < 20; round++) {
    int key = (int)rng_below(NKEYS);
    owned_make(&o[0], key, CONTEXT, 50);
    owned_make(&o[1], round % 2 ? key : (key + 1) % NKEYS, CONTEXT, 50);
    rng_bytes(e, 32);
    scalar_muladd(e, e, 32, NULL, 0, NULL, 0);
    scalar_muladd(neg_e, e, 32, lm1, 32, NULL, 0); /* -e mod L */
    scalar_muladd(o[0].sig + 32, o[0].sig + 32, 32, NULL, 0, e, 32);
    scalar_muladd(o[1].sig + 32, o[1].sig + 32, 32, NULL, 0, neg_e, 32);
    items[0] = owned_item(&o[0]);
    items[1] = owned_item(&o[1]);
    CHECK(ossl_verify(&items[0]) == 0 && ossl_verify(&items[1]) == 0);
    CHECKF(permit_ed25519_batch_verify(items, 2) == 0, "round %d", round);
  }
}

/* The largest batch, over many keys and many chunks. */
static void test_large(void) {
  enum { N = PERMIT_ED25519_BATCH_MAX, DISTINCT = 512, NK = 300 };
  permit_sign_key **k = calloc(NK, sizeof *k);
  owned *o = calloc(DISTINCT, sizeof *o);
  permit_ed25519_item *items = calloc(N, sizeof *items);
  if (k == NULL || o == NULL || items == NULL) exit(2);
  for (int i = 0; i < NK; i++) CHECK(permit_sign_key_generate(&k[i]) == 0);
  for (int i = 0; i < DISTINCT; i++) {
    permit_sign_key *key = k[i % NK];
    o[i].context = CONTEXT;
    o[i].len = 1 + rng_below(100);
    rng_bytes(o[i].msg, o[i].len);
    memcpy(o[i].pub, permit_sign_key_public(key), 32);
    CHECK(permit_sign(key, CONTEXT, o[i].msg, o[i].len, o[i].sig) == 0);
  }
  for (int i = 0; i < N; i++) items[i] = owned_item(&o[rng_below(DISTINCT)]);
  CHECK(permit_ed25519_batch_verify(items, N) == 1);
  /* One wrong item late in the batch. */
  owned bad = o[0];
  bad.sig[3] ^= 0x10;
  items[N - 100] = owned_item(&bad);
  CHECK(permit_ed25519_batch_verify(items, N) == 0);
  /* Under one key: 4096 R's over 65 chunks. */
  for (int i = 0; i < DISTINCT; i++) {
    memcpy(o[i].pub, permit_sign_key_public(k[0]), 32);
    CHECK(permit_sign(k[0], CONTEXT, o[i].msg, o[i].len, o[i].sig) == 0);
  }
  for (int i = 0; i < N; i++) items[i] = owned_item(&o[i % DISTINCT]);
  CHECK(permit_ed25519_batch_verify(items, N) == 1);
  items[N - 1] = owned_item(&bad);
  CHECK(permit_ed25519_batch_verify(items, N) == 0);
  for (int i = 0; i < NK; i++) permit_sign_key_free(k[i]);
  free(k);
  free(o);
  free(items);
}

/* ---- several threads at once ---- */

typedef struct thread_job {
  owned o[16];
  int wrong;
} thread_job;

static void *thread_run(void *arg) {
  thread_job *j = arg;
  permit_ed25519_item items[16];
  for (int round = 0; round < 40; round++) {
    for (int i = 0; i < 16; i++) items[i] = owned_item(&j->o[i]);
    int bad = round % 2;
    if (bad) j->o[round % 16].msg[0] ^= 1;
    if (permit_ed25519_batch_verify(items, 16) != !bad) j->wrong++;
    if (bad) j->o[round % 16].msg[0] ^= 1;
  }
  return NULL;
}

static void test_threads(void) {
  enum { T = 4 };
  thread_job *jobs = calloc(T, sizeof *jobs);
  pthread_t th[T];
  if (jobs == NULL) exit(2);
  for (int t = 0; t < T; t++)
    for (int i = 0; i < 16; i++)
      owned_make(&jobs[t].o[i], (t + i) % NKEYS, CONTEXT, 1 + rng_below(200));
  for (int t = 0; t < T; t++)
    CHECK(pthread_create(&th[t], NULL, thread_run, &jobs[t]) == 0);
  for (int t = 0; t < T; t++) {
    pthread_join(th[t], NULL);
    CHECKF(jobs[t].wrong == 0, "thread %d: %d wrong", t, jobs[t].wrong);
  }
  free(jobs);
}

/*
 * permit_record_verify_many() holds every signature to the cofactored
 * equation whether its batch passes or falls back to one-by-one checks:
 * a record signed with a small-order R passes the signature check alone,
 * next to a good record and next to a bad one (when the batch fails),
 * while permit_record_verify() (OpenSSL) refuses it.  The body here is
 * not a Record, so "passes the signature" shows as PERMIT_EINVAL (the
 * body's error) rather than PERMIT_EVERIFY.
 */
static void test_record_batches(void) {
  uint8_t a[32], pub[32], t8[32];
  known_key(a, pub);
  order8_point(t8);
  permit_trusted_key tk;
  permit_trusted_key_set(&tk, pub);
  static const uint8_t body[] = {0x0a, 0x05, 'h', 'e', 'l', 'l', 'o'};
  uint8_t sig[3][64], env[3][256];
  size_t len[3];
  sign_with_torsion(sig[0], a, pub, t8, PERMIT_RECORD_CONTEXT, body,
                    sizeof body);                        /* small-order R */
  sign_with_torsion(sig[1], a, pub, NULL, PERMIT_RECORD_CONTEXT, body,
                    sizeof body);                        /* good */
  memcpy(sig[2], sig[1], 64);
  sig[2][40] ^= 1;                                       /* bad */
  for (int i = 0; i < 3; i++) {
    Permit__V1__SignedRecord sr = PERMIT__V1__SIGNED_RECORD__INIT;
    sr.body = (ProtobufCBinaryData){sizeof body, (uint8_t *)body};
    sr.signature = (ProtobufCBinaryData){64, sig[i]};
    sr.key_id = tk.key_id;
    len[i] = permit__v1__signed_record__pack(&sr, env[i]);
  }
  Permit__V1__Record *out[2] = {NULL, NULL};
  permit_err errs[2];
  int rcs[2];
  permit_err err;
  CHECK(permit_record_verify(env[0], len[0], &tk, 1, &out[0], &err) ==
        PERMIT_EVERIFY);
  static const int neighbour[] = {-1, 1, 2}; /* none, good, bad */
  for (size_t c = 0; c < 3; c++) {
    int other = neighbour[c];
    permit_iov in[2] = {{env[0], len[0]}, {NULL, 0}};
    size_t n = 1;
    if (other > 0) in[n++] = (permit_iov){env[other], len[other]};
    CHECK(permit_record_verify_many(in, n, &tk, 1, out, rcs, errs) == 0);
    CHECKF(rcs[0] == PERMIT_EINVAL, "small-order R with neighbour %d: %d "
           "(%s)", other, rcs[0], errs[0].msg);
    if (n == 2)
      CHECKF(rcs[1] == (other == 1 ? PERMIT_EINVAL : PERMIT_EVERIFY),
             "neighbour %d: %d", other, rcs[1]);
  }
}

int main(void) {
  const char *env = getenv("PERMIT_TEST_SEED");
  uint64_t seed = env != NULL ? strtoull(env, NULL, 0)
                              : (uint64_t)time(NULL) ^ (uint64_t)clock();
  printf("test_ed25519: PERMIT_TEST_SEED=%llu\n", (unsigned long long)seed);
  rng_state = seed;
  for (int i = 0; i < NKEYS; i++) {
    uint8_t s[32];
    rng_bytes(s, 32);
    CHECK(permit_sign_key_from_seed(s, &keys[i]) == 0);
  }
  test_points();
  test_wycheproof_file();
  test_differential();
  test_small_order_r();
  test_record_batches();
  test_noncanonical_r();
  test_mixed_order_key();
  test_odd_keys();
  test_edges();
  test_cancelling();
  test_large();
  test_threads();
  for (int i = 0; i < NKEYS; i++) permit_sign_key_free(keys[i]);
  permit_crypto_cleanup();
  return test_finish("test_ed25519");
}
