/*
 * ed25519.c - Ed25519 batch verification (see permit/ed25519.h).
 *
 * For items i with random 128-bit coefficients z_i, public keys A_j and
 * h_i = SHA-512(R_i || A_i || context || msg) the batch checks
 *
 *   [8s]B + sum_j [8 c_j](-A_j) + sum_i [8 z_i](-R_i) (+ [L](-A_u))
 *     == identity,
 *   s = sum_i z_i S_i mod L,  c_j = sum_{i under key j} z_i h_i mod L,
 *
 * which is the cofactored equation of RFC 8032 with the factor 8 taken
 * into the scalars, plus a check that one key A_u has no small-order
 * component (batch_equation() says why that is sound and free).  The
 * other keys are checked on their own ([L]A == identity) unless a key
 * cache kept per thread already knows them.
 *
 * The two scalar sums are accumulated unreduced in 64-bit words and reduced
 * once each with OpenSSL's BIGNUM.  The multi-scalar multiplication is
 * Straus's: one chain of doublings shared by every point, width-5 NAF
 * digits with a table of the odd multiples P, 3P, .., 15P per point, and
 * width-8 digits for B from a table of its odd multiples up to 127B made
 * once per process.  Points are taken in chunks of 64 so that the tables
 * stay in cache; each chunk has its own chain, as long as its longest
 * scalar (131 bits for a chunk of R's only).
 *
 * Field: GF(2^255 - 19), five limbs of 51 bits, products in 128 bits.
 * Curve: -x^2 + y^2 = 1 + d x^2 y^2, d = -121665/121666, in extended
 * coordinates (X : Y : Z : T), x = X/Z, y = Y/Z, xy = T/Z, with the
 * addition and doubling formulas of Hisil, Wong, Carter and Dawson
 * ("Twisted Edwards curves revisited", 2008, a = -1), which are complete
 * on this curve: no input needs a special case, small-order points
 * included.
 *
 * Limb bounds.  "Loose": every limb under 2^52; what fe_mul, fe_sq,
 * fe_sub and fe_carry return.  fe_add does not carry: the sum of two
 * loose values has limbs under 2^53.  fe_mul and fe_sq take limbs under
 * 2^54 (products then stay far under 2^128); fe_sub takes limbs under
 * 2^54 - 152 in both operands.  Every use below keeps to that.
 */
#include "permit/ed25519.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crypto_internal.h"
#include "permit/crypto.h"
#include "permit/error.h"

#ifndef __SIZEOF_INT128__
#error "ed25519.c needs unsigned __int128 (GCC or clang on a 64-bit target)"
#endif

__extension__ typedef unsigned __int128 u128;

#define MASK51 ((UINT64_C(1) << 51) - 1)

/* ---- the field ---- */

typedef struct fe {
  uint64_t v[5];
} fe;

static inline void fe_small(fe *h, uint64_t x) {
  h->v[0] = x;
  h->v[1] = h->v[2] = h->v[3] = h->v[4] = 0;
}

/* h = f + g, limbs not carried. */
static inline void fe_add(fe *h, const fe *f, const fe *g) {
  for (int i = 0; i < 5; i++) h->v[i] = f->v[i] + g->v[i];
}

/* Carries limbs under 2^63 back to a loose value. */
static inline void fe_carry(fe *h) {
  uint64_t c;
  c = h->v[0] >> 51;
  h->v[0] &= MASK51;
  h->v[1] += c;
  c = h->v[1] >> 51;
  h->v[1] &= MASK51;
  h->v[2] += c;
  c = h->v[2] >> 51;
  h->v[2] &= MASK51;
  h->v[3] += c;
  c = h->v[3] >> 51;
  h->v[3] &= MASK51;
  h->v[4] += c;
  c = h->v[4] >> 51;
  h->v[4] &= MASK51;
  h->v[0] += 19 * c;
}

/* h = f - g, as f + 8p - g then carried. */
static inline void fe_sub(fe *h, const fe *f, const fe *g) {
  /* 8p in limbs: 8 * (2^51 - 19), then 8 * (2^51 - 1). */
  const uint64_t p8_0 = (UINT64_C(1) << 54) - 152;
  const uint64_t p8_i = (UINT64_C(1) << 54) - 8;
  h->v[0] = f->v[0] + p8_0 - g->v[0];
  for (int i = 1; i < 5; i++) h->v[i] = f->v[i] + p8_i - g->v[i];
  fe_carry(h);
}

static inline void fe_neg(fe *h, const fe *f) {
  fe zero;
  fe_small(&zero, 0);
  fe_sub(h, &zero, f);
}

/* Folds the five 128-bit column sums of a product into a loose value. */
static inline void fe_fold(fe *h, u128 r0, u128 r1, u128 r2, u128 r3, u128 r4) {
  uint64_t h0, h1, h2, h3, h4;
  r1 += (uint64_t)(r0 >> 51);
  h0 = (uint64_t)r0 & MASK51;
  r2 += (uint64_t)(r1 >> 51);
  h1 = (uint64_t)r1 & MASK51;
  r3 += (uint64_t)(r2 >> 51);
  h2 = (uint64_t)r2 & MASK51;
  r4 += (uint64_t)(r3 >> 51);
  h3 = (uint64_t)r3 & MASK51;
  h4 = (uint64_t)r4 & MASK51;
  /* r4 >> 51 is under 2^70: 19 times it needs the 128-bit sum. */
  u128 t = (u128)h0 + (r4 >> 51) * 19;
  h0 = (uint64_t)t & MASK51;
  h1 += (uint64_t)(t >> 51);
  h->v[0] = h0;
  h->v[1] = h1;
  h->v[2] = h2;
  h->v[3] = h3;
  h->v[4] = h4;
}

static inline __attribute__((always_inline)) void fe_mul(fe *h, const fe *f,
                                                         const fe *g) {
  uint64_t f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
  uint64_t g0 = g->v[0], g1 = g->v[1], g2 = g->v[2], g3 = g->v[3], g4 = g->v[4];
  /* 2^255 = 19 mod p: columns past the fourth come back times 19. */
  uint64_t g1_19 = 19 * g1, g2_19 = 19 * g2, g3_19 = 19 * g3, g4_19 = 19 * g4;
  u128 r0 = (u128)f0 * g0 + (u128)f1 * g4_19 + (u128)f2 * g3_19 +
            (u128)f3 * g2_19 + (u128)f4 * g1_19;
  u128 r1 = (u128)f0 * g1 + (u128)f1 * g0 + (u128)f2 * g4_19 +
            (u128)f3 * g3_19 + (u128)f4 * g2_19;
  u128 r2 = (u128)f0 * g2 + (u128)f1 * g1 + (u128)f2 * g0 + (u128)f3 * g4_19 +
            (u128)f4 * g3_19;
  u128 r3 = (u128)f0 * g3 + (u128)f1 * g2 + (u128)f2 * g1 + (u128)f3 * g0 +
            (u128)f4 * g4_19;
  u128 r4 = (u128)f0 * g4 + (u128)f1 * g3 + (u128)f2 * g2 + (u128)f3 * g1 +
            (u128)f4 * g0;
  fe_fold(h, r0, r1, r2, r3, r4);
}

static inline __attribute__((always_inline)) void fe_sq(fe *h, const fe *f) {
  uint64_t f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
  uint64_t d0 = 2 * f0, d1 = 2 * f1;
  uint64_t f3_19 = 19 * f3, f4_19 = 19 * f4;
  uint64_t f3_38 = 2 * f3_19, f4_38 = 2 * f4_19;
  u128 r0 = (u128)f0 * f0 + (u128)f1 * f4_38 + (u128)f2 * f3_38;
  u128 r1 = (u128)d0 * f1 + (u128)f2 * f4_38 + (u128)f3 * f3_19;
  u128 r2 = (u128)d0 * f2 + (u128)f1 * f1 + (u128)f3 * f4_38;
  u128 r3 = (u128)d0 * f3 + (u128)d1 * f2 + (u128)f4 * f4_19;
  u128 r4 = (u128)d0 * f4 + (u128)d1 * f3 + (u128)f2 * f2;
  fe_fold(h, r0, r1, r2, r3, r4);
}

/* h = f^(2^n), n >= 1. */
static void fe_sqn(fe *h, const fe *f, int n) {
  fe_sq(h, f);
  for (int i = 1; i < n; i++) fe_sq(h, h);
}

static uint64_t load64(const uint8_t *p) {
  uint64_t x = 0;
  for (int i = 7; i >= 0; i--) x = (x << 8) | p[i];
  return x;
}

static void store64(uint8_t *p, uint64_t x) {
  for (int i = 0; i < 8; i++) {
    p[i] = (uint8_t)x;
    x >>= 8;
  }
}

/* The low 255 bits of |s| (bit 255 ignored), not reduced mod p. */
static void fe_frombytes(fe *h, const uint8_t s[32]) {
  uint64_t w0 = load64(s), w1 = load64(s + 8), w2 = load64(s + 16),
           w3 = load64(s + 24);
  h->v[0] = w0 & MASK51;
  h->v[1] = ((w0 >> 51) | (w1 << 13)) & MASK51;
  h->v[2] = ((w1 >> 38) | (w2 << 26)) & MASK51;
  h->v[3] = ((w2 >> 25) | (w3 << 39)) & MASK51;
  h->v[4] = (w3 >> 12) & MASK51;
}

/* The canonical encoding (value mod p, in [0, p)) of a loose |f|. */
static void fe_tobytes(uint8_t s[32], const fe *f) {
  fe h = *f;
  fe_carry(&h);
  /* Now h < 2^255 + 2^10 < 2p; q = 1 exactly when h >= p. */
  uint64_t q = (h.v[0] + 19) >> 51;
  q = (h.v[1] + q) >> 51;
  q = (h.v[2] + q) >> 51;
  q = (h.v[3] + q) >> 51;
  q = (h.v[4] + q) >> 51;
  /* h - q p = h + 19 q - q 2^255: the last mask drops q 2^255. */
  h.v[0] += 19 * q;
  h.v[1] += h.v[0] >> 51;
  h.v[0] &= MASK51;
  h.v[2] += h.v[1] >> 51;
  h.v[1] &= MASK51;
  h.v[3] += h.v[2] >> 51;
  h.v[2] &= MASK51;
  h.v[4] += h.v[3] >> 51;
  h.v[3] &= MASK51;
  h.v[4] &= MASK51;
  store64(s, h.v[0] | (h.v[1] << 51));
  store64(s + 8, (h.v[1] >> 13) | (h.v[2] << 38));
  store64(s + 16, (h.v[2] >> 26) | (h.v[3] << 25));
  store64(s + 24, (h.v[3] >> 39) | (h.v[4] << 12));
}

static int fe_iszero(const fe *f) {
  uint8_t s[32], acc = 0;
  fe_tobytes(s, f);
  for (int i = 0; i < 32; i++) acc |= s[i];
  return acc == 0;
}

static int fe_eq(const fe *f, const fe *g) {
  fe d;
  fe_sub(&d, f, g);
  return fe_iszero(&d);
}

static int fe_isodd(const fe *f) {
  uint8_t s[32];
  fe_tobytes(s, f);
  return s[0] & 1;
}

/* out = z^(2^250 - 1), z11 = z^11: the common start of the two powers. */
static void fe_pow250(fe *out, fe *z11, const fe *z) {
  fe z2, z9, t, a, b;
  fe_sq(&z2, z);
  fe_sqn(&t, &z2, 2);
  fe_mul(&z9, &t, z);
  fe_mul(z11, &z9, &z2);
  fe_sq(&t, z11);
  fe_mul(&a, &t, &z9); /* 2^5 - 1 */
  fe_sqn(&t, &a, 5);
  fe_mul(&a, &t, &a); /* 2^10 - 1 */
  fe_sqn(&t, &a, 10);
  fe_mul(&b, &t, &a); /* 2^20 - 1 */
  fe_sqn(&t, &b, 20);
  fe_mul(&t, &t, &b); /* 2^40 - 1 */
  fe_sqn(&t, &t, 10);
  fe_mul(&b, &t, &a); /* 2^50 - 1 */
  fe_sqn(&t, &b, 50);
  fe_mul(&a, &t, &b); /* 2^100 - 1 */
  fe_sqn(&t, &a, 100);
  fe_mul(&t, &t, &a); /* 2^200 - 1 */
  fe_sqn(&t, &t, 50);
  fe_mul(out, &t, &b); /* 2^250 - 1 */
}

/* h = z^(p - 2) = z^(2^255 - 21), the inverse of a non-zero z. */
static void fe_invert(fe *h, const fe *z) {
  fe t, z11;
  fe_pow250(&t, &z11, z);
  fe_sqn(&t, &t, 5);
  fe_mul(h, &t, &z11);
}

/* h = z^((p - 5) / 8) = z^(2^252 - 3). */
static void fe_pow22523(fe *h, const fe *z) {
  fe t, z11;
  fe_pow250(&t, &z11, z);
  fe_sqn(&t, &t, 2);
  fe_mul(h, &t, z);
}

/* ---- points ---- */

typedef struct ge {
  fe X, Y, Z, T;
} ge;

/* A sum or double before its last products: X = EF, Y = GH, Z = FG,
 * T = EH. */
typedef struct ge_done {
  fe E, F, G, H;
} ge_done;

/* A point ready to be added: Y + X, Y - X, 2Z, 2dT. */
typedef struct ge_cached {
  fe ypx, ymx, z2, t2d;
} ge_cached;

/* The same with Z = 1 (the base point's table). */
typedef struct ge_affine {
  fe ypx, ymx, t2d;
} ge_affine;

/* Odd multiples per point (w = 5: P .. 15P) and of B (w = 8: B .. 127B). */
#define WIN 5
#define TBL (1 << (WIN - 2))
#define BWIN 8
#define BTBL (1 << (BWIN - 2))

static struct {
  fe one, d, d2, sqrtm1;
  ge base;
  ge_affine btab[BTBL];
  BIGNUM *order;
  int ok;
} K;
static pthread_once_t K_once = PTHREAD_ONCE_INIT;

static void ge_identity(ge *p) {
  fe_small(&p->X, 0);
  fe_small(&p->Y, 1);
  fe_small(&p->Z, 1);
  fe_small(&p->T, 0);
}

static void ge_finish(ge *r, const ge_done *c, int with_t) {
  fe_mul(&r->X, &c->E, &c->F);
  fe_mul(&r->Y, &c->G, &c->H);
  fe_mul(&r->Z, &c->F, &c->G);
  if (with_t) fe_mul(&r->T, &c->E, &c->H);
}

/* 2P; reads X, Y, Z only.  With A = X^2, B = Y^2, C = 2Z^2 this is the
 * a = -1 doubling with E, F, G, H all negated (the products are the same):
 * E = A + B - (X + Y)^2, G = A - B, F = C + A - B, H = A + B. */
static void ge_double(ge_done *r, const ge *p) {
  fe a, b, c, s;
  fe_sq(&a, &p->X);
  fe_sq(&b, &p->Y);
  fe_sq(&c, &p->Z);
  fe_add(&c, &c, &c);
  fe_add(&s, &p->X, &p->Y);
  fe_sq(&s, &s);
  fe_add(&r->H, &a, &b);
  fe_sub(&r->E, &r->H, &s);
  fe_sub(&r->G, &a, &b);
  fe_add(&r->F, &c, &r->G);
}

/* The a = -1 addition of P and a point given as Y + X, Y - X, 2d T and
 * D = 2 Z1 Z2: A = (Y1 - X1)(Y2 - X2), B = (Y1 + X1)(Y2 + X2),
 * C = 2d T1 T2.  With |neg| set the second point is negated (A and B are
 * taken crosswise and C changes sign). */
static inline void ge_add_with(ge_done *r, const ge *p, const fe *ypx,
                               const fe *ymx, const fe *t2d, const fe *d,
                               int neg) {
  fe a, b, c;
  fe_sub(&a, &p->Y, &p->X);
  fe_add(&b, &p->Y, &p->X);
  fe_mul(&a, &a, neg ? ypx : ymx);
  fe_mul(&b, &b, neg ? ymx : ypx);
  fe_mul(&c, &p->T, t2d);
  fe_sub(&r->E, &b, &a);
  fe_add(&r->H, &b, &a);
  if (neg) {
    fe_add(&r->F, d, &c);
    fe_sub(&r->G, d, &c);
  } else {
    fe_sub(&r->F, d, &c);
    fe_add(&r->G, d, &c);
  }
}

/* P + Q, or P - Q with |neg|. */
static void ge_add_cached(ge_done *r, const ge *p, const ge_cached *q,
                          int neg) {
  fe d;
  fe_mul(&d, &p->Z, &q->z2);
  ge_add_with(r, p, &q->ypx, &q->ymx, &q->t2d, &d, neg);
}

/* The same with Q affine (Z2 = 1). */
static void ge_add_affine(ge_done *r, const ge *p, const ge_affine *q,
                          int neg) {
  fe d;
  fe_add(&d, &p->Z, &p->Z);
  ge_add_with(r, p, &q->ypx, &q->ymx, &q->t2d, &d, neg);
}

static void ge_to_cached(ge_cached *c, const ge *p) {
  fe_add(&c->ypx, &p->Y, &p->X);
  fe_sub(&c->ymx, &p->Y, &p->X);
  fe_add(&c->z2, &p->Z, &p->Z);
  fe_mul(&c->t2d, &p->T, &K.d2);
}

static void ge_to_affine(ge_affine *a, const ge *p) {
  fe zi, x, y;
  fe_invert(&zi, &p->Z);
  fe_mul(&x, &p->X, &zi);
  fe_mul(&y, &p->Y, &zi);
  fe_add(&a->ypx, &y, &x);
  fe_carry(&a->ypx);
  fe_sub(&a->ymx, &y, &x);
  fe_mul(&a->t2d, &x, &y);
  fe_mul(&a->t2d, &a->t2d, &K.d2);
}

/* r = p + q for two full points. */
static void ge_add(ge *r, const ge *p, const ge *q) {
  ge_cached c;
  ge_done t;
  ge_to_cached(&c, q);
  ge_add_cached(&t, p, &c, 0);
  ge_finish(r, &t, 1);
}

static void ge_neg(ge *p) {
  fe_neg(&p->X, &p->X);
  fe_neg(&p->T, &p->T);
}

static int ge_is_identity(const ge *p) {
  return fe_iszero(&p->X) && fe_eq(&p->Y, &p->Z);
}

/* [8]P. */
static void ge_times8(ge *r, const ge *p) {
  ge_done t;
  ge_double(&t, p);
  ge_finish(r, &t, 0);
  ge_double(&t, r);
  ge_finish(r, &t, 0);
  ge_double(&t, r);
  ge_finish(r, &t, 1);
}

static void ge_encode(uint8_t s[32], const ge *p) {
  fe zi, x, y;
  fe_invert(&zi, &p->Z);
  fe_mul(&x, &p->X, &zi);
  fe_mul(&y, &p->Y, &zi);
  fe_tobytes(s, &y);
  s[31] |= (uint8_t)(fe_isodd(&x) << 7);
}

/* Whether the low 255 bits of |s| are below p = 2^255 - 19. */
static int y_canonical(const uint8_t s[32]) {
  if ((s[31] & 0x7f) != 0x7f || s[0] < 0xed) return 1;
  for (int i = 1; i < 31; i++)
    if (s[i] != 0xff) return 1;
  return 0;
}

/*
 * Decodes |s| (RFC 8032 5.1.3) into |p|; returns 0 unless it is the
 * canonical encoding of a curve point: y < p, x^2 = (y^2 - 1)/(d y^2 + 1)
 * has a root, and the sign bit is clear when that root is 0.
 */
static int ge_decode(ge *p, const uint8_t s[32]) {
  if (!y_canonical(s)) return 0;
  fe y, u, v, v3, t, x, chk;
  fe_frombytes(&y, s);
  fe_sq(&u, &y);
  fe_mul(&v, &u, &K.d);
  fe_sub(&u, &u, &K.one); /* u = y^2 - 1 */
  fe_add(&v, &v, &K.one); /* v = d y^2 + 1, never 0 */
  fe_sq(&v3, &v);
  fe_mul(&v3, &v3, &v); /* v^3 */
  fe_sq(&t, &v3);
  fe_mul(&t, &t, &v); /* v^7 */
  fe_mul(&t, &t, &u);
  fe_pow22523(&t, &t); /* (u v^7)^((p - 5)/8) */
  fe_mul(&t, &t, &v3);
  fe_mul(&x, &t, &u); /* candidate root u v^3 (u v^7)^((p - 5)/8) */
  fe_sq(&chk, &x);
  fe_mul(&chk, &chk, &v);
  if (!fe_eq(&chk, &u)) {
    fe_neg(&t, &u);
    if (!fe_eq(&chk, &t)) return 0; /* u/v is not a square */
    fe_mul(&x, &x, &K.sqrtm1);
  }
  int sign = s[31] >> 7;
  if (sign && fe_iszero(&x)) return 0;
  if (fe_isodd(&x) != sign) fe_neg(&x, &x);
  p->X = x;
  p->Y = y;
  fe_carry(&p->Y);
  p->Z = K.one;
  fe_mul(&p->T, &x, &y);
  return 1;
}

/* tbl[i] = (2i + 1)P for i < TBL. */
static void ge_table(ge_cached tbl[TBL], const ge *p) {
  ge p2, cur = *p;
  ge_cached p2c;
  ge_done t;
  ge_double(&t, p);
  ge_finish(&p2, &t, 1);
  ge_to_cached(&p2c, &p2);
  ge_to_cached(&tbl[0], p);
  for (int i = 1; i < TBL; i++) {
    ge_add_cached(&t, &cur, &p2c, 0);
    ge_finish(&cur, &t, 1);
    ge_to_cached(&tbl[i], &cur);
  }
}

/* ---- scalars ---- */

/* Digits of a scalar of up to 256 bits: room for 64 * 4 + 2. */
#define NAF_LEN 258

/* w bits (1 <= w <= 64) of |k| (|words| words) from bit |pos|; zeros
 * past the end. */
static uint64_t bits_at(const uint64_t *k, int words, int pos, int w) {
  int q = pos >> 6, r = pos & 63;
  uint64_t v = 0;
  if (q < words) v = k[q] >> r;
  if (r != 0 && q + 1 < words) v |= k[q + 1] << (64 - r);
  return w == 64 ? v : v & ((UINT64_C(1) << w) - 1);
}

/*
 * Width-|w| NAF of |k| (|words| <= 4 little-endian words) into
 * naf[0..NAF_LEN): k = sum naf[i] 2^i, each digit 0 or odd with
 * |digit| < 2^(w-1), any w consecutive digits with at most one non-zero.
 * Returns the index of the highest non-zero digit, or -1 when k = 0.
 */
static int naf_compute(int8_t naf[NAF_LEN], const uint64_t *k, int words,
                       int w) {
  memset(naf, 0, NAF_LEN);
  uint64_t carry = 0;
  int top = -1;
  /* (k >> pos) + carry is what remains to write at each step. */
  for (int pos = 0; pos < NAF_LEN;) {
    uint64_t v = bits_at(k, words, pos, 64);
    /* Skip a run of zero digits: bits equal to the carry (0s with no
     * carry, 1s with one, where the carry moves on). */
    uint64_t run = carry ? ~v : v;
    if (run == 0) {
      pos += 64;
      continue;
    }
    int skip = __builtin_ctzll(run);
    if (skip > 0) {
      pos += skip;
      continue;
    }
    uint64_t win = (v & ((UINT64_C(1) << w) - 1)) + carry; /* odd, < 2^w */
    int d;
    if (win & (UINT64_C(1) << (w - 1))) {
      d = (int)win - (1 << w);
      carry = 1;
    } else {
      d = (int)win;
      carry = 0;
    }
    naf[pos] = (int8_t)d;
    top = pos;
    pos += w;
  }
  return top;
}

static void words_from_bytes(uint64_t *w, const uint8_t *s, int words) {
  for (int i = 0; i < words; i++) w[i] = load64(s + 8 * i);
}

/* acc += z * x, z of two words; |acc| has room for the whole sum. */
static void mac_words(uint64_t *acc, int accw, const uint64_t z[2],
                      const uint64_t *x, int xw) {
  for (int j = 0; j < 2; j++) {
    uint64_t carry = 0;
    int i;
    for (i = 0; i < xw; i++) {
      u128 t = (u128)z[j] * x[i] + acc[i + j] + carry;
      acc[i + j] = (uint64_t)t;
      carry = (uint64_t)(t >> 64);
    }
    for (i += j; carry != 0 && i < accw; i++) {
      u128 t = (u128)acc[i] + carry;
      acc[i] = (uint64_t)t;
      carry = (uint64_t)(t >> 64);
    }
  }
}

static const uint8_t order_le[32] = {
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
    0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};

/* Whether the 32-byte little-endian |s| is below L. */
static int scalar_canonical(const uint8_t s[32]) {
  for (int i = 31; i >= 0; i--) {
    if (s[i] < order_le[i]) return 1;
    if (s[i] > order_le[i]) return 0;
  }
  return 0; /* s == L */
}

/* Sums of up to PERMIT_ED25519_BATCH_MAX products of a 128-bit z and a
 * 512-bit h: under 2^652, in 11 words. */
#define ACC_WORDS 11

/* out = acc mod L; 0 on failure (out of memory). */
static int reduce_mod_l(uint8_t out[32], const uint64_t acc[ACC_WORDS],
                        BIGNUM *a, BIGNUM *r, BN_CTX *bctx) {
  uint8_t buf[8 * ACC_WORDS];
  for (int i = 0; i < ACC_WORDS; i++) store64(buf + 8 * i, acc[i]);
  return BN_lebin2bn(buf, sizeof buf, a) != NULL &&
         BN_nnmod(r, a, K.order, bctx) == 1 && BN_bn2lebinpad(r, out, 32) == 32;
}

/* ---- one-time set-up ---- */

static void K_init(void) {
  static const uint8_t base_enc[32] = {
      0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
      0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
      0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66};
  fe a, b, z11;
  fe_small(&K.one, 1);
  /* d = -121665 / 121666. */
  fe_small(&a, 121665);
  fe_neg(&a, &a);
  fe_small(&b, 121666);
  fe_invert(&b, &b);
  fe_mul(&K.d, &a, &b);
  fe_add(&K.d2, &K.d, &K.d);
  fe_carry(&K.d2);
  /* sqrt(-1) = 2^((p - 1)/4) = 2^(2^253 - 5): 2 is not a square mod p. */
  fe_small(&a, 2);
  fe_pow250(&b, &z11, &a);
  fe_sqn(&b, &b, 3);
  fe_small(&a, 8);
  fe_mul(&K.sqrtm1, &b, &a);
  fe_sq(&a, &K.sqrtm1);
  fe_add(&a, &a, &K.one);
  if (!fe_iszero(&a)) return;
  if (!ge_decode(&K.base, base_enc)) return;
  /* btab[i] = (2i + 1)B with Z = 1. */
  ge cur = K.base, b2;
  ge_done t;
  ge_cached b2c;
  ge_double(&t, &K.base);
  ge_finish(&b2, &t, 1);
  ge_to_cached(&b2c, &b2);
  for (int i = 0; i < BTBL; i++) {
    ge_to_affine(&K.btab[i], &cur);
    ge_add_cached(&t, &cur, &b2c, 0);
    ge_finish(&cur, &t, 1);
  }
  K.order = BN_lebin2bn(order_le, sizeof order_le, NULL);
  K.ok = K.order != NULL;
}

static int K_ready(void) {
  pthread_once(&K_once, K_init);
  return K.ok;
}

/* ---- multi-scalar multiplication ---- */

/* One point of a chunk: its odd multiples and its scalar's digits. */
typedef struct term {
  ge_cached tbl[TBL];
  int8_t naf[NAF_LEN];
  int top;
} term;

/*
 * out = sum_j [k_j]P_j (+ [b]B when |bnaf| is not NULL, its highest
 * non-zero digit at |btop|), with one shared chain of doublings.
 */
static void msm(ge *out, const term *t, size_t nt, const int8_t *bnaf,
                int btop) {
  int top = bnaf != NULL ? btop : -1;
  for (size_t j = 0; j < nt; j++)
    if (t[j].top > top) top = t[j].top;
  ge acc;
  ge_done c;
  ge_identity(&acc);
  for (int i = top; i >= 0; i--) {
    ge_double(&c, &acc);
    for (size_t j = 0; j < nt; j++) {
      int d = t[j].naf[i];
      if (d == 0) continue;
      ge_finish(&acc, &c, 1);
      ge_add_cached(&c, &acc, &t[j].tbl[(d < 0 ? -d : d) >> 1], d < 0);
    }
    if (bnaf != NULL && bnaf[i] != 0) {
      int d = bnaf[i];
      ge_finish(&acc, &c, 1);
      ge_add_affine(&c, &acc, &K.btab[(d < 0 ? -d : d) >> 1], d < 0);
    }
    /* A doubling comes next, which needs no T, except after the last. */
    ge_finish(&acc, &c, i == 0);
  }
  *out = acc;
}

/* ---- the batch ---- */

#define CHUNK 64

typedef struct key_slot {
  const uint8_t *pub;
  ge neg; /* -A */
  uint64_t acc[ACC_WORDS];
  uint8_t c[32]; /* sum of z h mod L */
} key_slot;

static uint64_t key_hash(const uint8_t *pub, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) {
    x ^= load64(pub + 8 * i);
    x *= UINT64_C(0x9e3779b97f4a7c15);
    x ^= x >> 29;
  }
  return x;
}

/* Whether [L]P is the identity, that is P has no component of small
 * order.  About a fifth of a batch of 16 under one key. */
static int ge_torsion_free(const ge *p) {
  term t;
  uint64_t lw[4];
  ge r;
  words_from_bytes(lw, order_le, 4);
  ge_table(t.tbl, p);
  t.top = naf_compute(t.naf, lw, 4, WIN);
  msm(&r, &t, 1, NULL, -1);
  return ge_is_identity(&r);
}

/*
 * Public keys known to be canonical points of prime order, lately seen on
 * this thread, with -A: proving that on its own (ge_torsion_free) costs
 * about as much as three items, and a venue sees the same few issuer keys
 * over and over.  Per thread, so it needs no lock and nothing to free.
 */
#define KEY_CACHE 16

typedef struct key_cache {
  uint8_t pub[KEY_CACHE][32];
  ge neg[KEY_CACHE];
  unsigned count, next;
} key_cache;

static _Thread_local key_cache tl_keys;

static void key_cache_put(const uint8_t pub[32], const ge *neg) {
  key_cache *c = &tl_keys;
  unsigned slot = c->next;
  c->next = (c->next + 1) % KEY_CACHE;
  if (c->count < KEY_CACHE) c->count++;
  memcpy(c->pub[slot], pub, 32);
  c->neg[slot] = *neg;
}

/* Key decoding's outcomes. */
enum { KEY_REFUSED, KEY_PRIME, KEY_UNCHECKED };

/*
 * Decodes a public key for the batch into -A.  KEY_REFUSED unless it is a
 * canonical encoding of a curve point that is not of small order.
 * KEY_PRIME when it is also known to have no small-order component: kept
 * from an earlier call, or checked here when |check| is set.  Otherwise
 * KEY_UNCHECKED, and the batch equation checks it (see batch_equation).
 * A key with a small-order component fails OpenSSL's cofactorless check
 * for 7 in 8 honest signatures while passing a cofactored one: such keys
 * are refused, and the caller falls back to OpenSSL.
 */
static int key_decode(key_slot *k, int check) {
  key_cache *c = &tl_keys;
  for (unsigned i = 0; i < c->count; i++)
    if (memcmp(c->pub[i], k->pub, 32) == 0) {
      k->neg = c->neg[i];
      return KEY_PRIME;
    }
  ge a, a8;
  if (!ge_decode(&a, k->pub)) return KEY_REFUSED;
  ge_times8(&a8, &a);
  if (ge_is_identity(&a8)) return KEY_REFUSED;
  if (check && !ge_torsion_free(&a)) return KEY_REFUSED;
  ge_neg(&a);
  k->neg = a;
  if (!check) return KEY_UNCHECKED;
  key_cache_put(k->pub, &a);
  return KEY_PRIME;
}

typedef struct batch {
  key_slot *keys;
  size_t nkeys;
  size_t unchecked; /* the key left to the equation, or SIZE_MAX */
  uint32_t *key_of; /* item -> key */
  uint32_t *slots;  /* hash table of keys, index + 1 */
  uint8_t *z;       /* 16 random bytes per item, then 8 for the hash */
  term *work;
  EVP_MD_CTX *md;
  BN_CTX *bctx;
} batch;

static void batch_free(batch *b) {
  free(b->keys);
  free(b->key_of);
  free(b->slots);
  free(b->z);
  free(b->work);
  EVP_MD_CTX_free(b->md);
  BN_CTX_free(b->bctx);
}

/* Sorts the items' keys into b->keys; returns 1, 0 for a key the batch
 * does not take, or a PERMIT_E* code. */
static int batch_keys(batch *b, const permit_ed25519_item *items, size_t n,
                      uint64_t seed) {
  size_t cap = 1;
  while (cap < 2 * n) cap <<= 1;
  b->slots = calloc(cap, sizeof *b->slots);
  b->keys = malloc(n * sizeof *b->keys);
  b->key_of = malloc(n * sizeof *b->key_of);
  if (b->slots == NULL || b->keys == NULL || b->key_of == NULL)
    return PERMIT_ENOMEM;
  size_t last = 0;
  b->unchecked = SIZE_MAX;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *pub = items[i].pub;
    /* Most batches are under one key: try the previous item's first. */
    if (b->nkeys > 0 &&
        (b->keys[last].pub == pub || memcmp(b->keys[last].pub, pub, 32) == 0)) {
      b->key_of[i] = (uint32_t)last;
      continue;
    }
    size_t s = (size_t)key_hash(pub, seed) & (cap - 1);
    while (b->slots[s] != 0 &&
           memcmp(b->keys[b->slots[s] - 1].pub, pub, 32) != 0)
      s = (s + 1) & (cap - 1);
    if (b->slots[s] == 0) {
      key_slot *k = &b->keys[b->nkeys];
      memset(k, 0, sizeof *k);
      k->pub = pub;
      /* The first new key is checked by the equation, others here. */
      int got = key_decode(k, b->unchecked != SIZE_MAX);
      if (got == KEY_REFUSED) return 0;
      if (got == KEY_UNCHECKED) b->unchecked = b->nkeys;
      b->slots[s] = (uint32_t)++b->nkeys;
    }
    last = b->slots[s] - 1;
    b->key_of[i] = (uint32_t)last;
  }
  return 1;
}

/* Hashes every item and accumulates the two scalar sums; returns 1 or a
 * PERMIT_E* code. */
static int batch_scalars(batch *b, const permit_ed25519_item *items, size_t n,
                         uint64_t sacc[ACC_WORDS]) {
  const permit_algs *algs = permit_algs_get();
  if (algs == NULL) return PERMIT_ECRYPTO;
  b->md = EVP_MD_CTX_new();
  if (b->md == NULL) return PERMIT_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const permit_ed25519_item *it = &items[i];
    uint8_t h[64];
    uint64_t z[2], hw[8], sw[4];
    if (EVP_DigestInit_ex2(b->md, algs->sha512, NULL) != 1 ||
        EVP_DigestUpdate(b->md, it->sig, 32) != 1 ||
        EVP_DigestUpdate(b->md, it->pub, 32) != 1 ||
        (it->context != NULL &&
         EVP_DigestUpdate(b->md, it->context, strlen(it->context)) != 1) ||
        (it->len > 0 && EVP_DigestUpdate(b->md, it->msg, it->len) != 1) ||
        EVP_DigestFinal_ex(b->md, h, NULL) != 1)
      return PERMIT_ECRYPTO;
    words_from_bytes(z, b->z + 16 * i, 2);
    words_from_bytes(hw, h, 8);
    words_from_bytes(sw, it->sig + 32, 4);
    mac_words(b->keys[b->key_of[i]].acc, ACC_WORDS, z, hw, 8);
    mac_words(sacc, ACC_WORDS, z, sw, 4);
  }
  return 1;
}

/* w = 8w; the top three bits of w[words - 1] must be clear. */
static void words_times8(uint64_t *w, int words) {
  for (int i = words - 1; i > 0; i--) w[i] = (w[i] << 3) | (w[i - 1] >> 61);
  w[0] <<= 3;
}

/* w += L, for w under 2^256 - L. */
static void words_add_order(uint64_t w[4]) {
  uint64_t lw[4], carry = 0;
  words_from_bytes(lw, order_le, 4);
  for (int i = 0; i < 4; i++) {
    u128 t = (u128)w[i] + lw[i] + carry;
    w[i] = (uint64_t)t;
    carry = (uint64_t)(t >> 64);
  }
}

/*
 * Runs the multi-scalar multiplication; returns 1 when the equation holds,
 * 0 when not or when an R does not decode.
 *
 * The cofactor goes into the scalars: with E_i = S_i B - R_i - h_i A_i,
 *
 *   W = sum_i [8 z_i] E_i - [L] A_u
 *     = [8s]B + sum_i [8 z_i](-R_i) + sum_j [8 c_j](-A_j) + [L](-A_u),
 *
 * A_u the key left unchecked (the term is absent when there is none).
 * [8 c_j]A_j equals [8 sum z_i h_i]A_j although c_j is reduced mod L: 8
 * kills any small-order component, and L divides the rest's order.  The
 * group is Z/8 x Z/L.  In the Z/L part W is 8 times the cofactored
 * combination, zero (but with probability about 2^-128) only when every
 * [8]E_i is.  In the Z/8 part only [L](-A_u) survives, and L is odd: it
 * is zero exactly when A_u has no small-order component.  So W is the
 * identity when the cofactored equation holds and A_u is of prime order,
 * and it costs no more than the cofactored check alone.
 */
static int batch_equation(batch *b, const permit_ed25519_item *items, size_t n,
                          const uint8_t s[32]) {
  size_t nterms = b->nkeys + n;
  uint64_t sw[4];
  int8_t bnaf[NAF_LEN];
  words_from_bytes(sw, s, 4);
  words_times8(sw, 4); /* s < L < 2^253 */
  int btop = naf_compute(bnaf, sw, 4, BWIN);
  ge total, part;
  ge_identity(&total);
  for (size_t start = 0; start < nterms; start += CHUNK) {
    size_t cnt = nterms - start < CHUNK ? nterms - start : CHUNK;
    for (size_t j = 0; j < cnt; j++) {
      size_t idx = start + j;
      term *t = &b->work[j];
      uint64_t kw[4];
      if (idx < b->nkeys) {
        ge_table(t->tbl, &b->keys[idx].neg);
        words_from_bytes(kw, b->keys[idx].c, 4);
        words_times8(kw, 4);                          /* c < L */
        if (idx == b->unchecked) words_add_order(kw); /* 8c + L < 9L */
        t->top = naf_compute(t->naf, kw, 4, WIN);
      } else {
        size_t i = idx - b->nkeys;
        ge r;
        if (!ge_decode(&r, items[i].sig)) return 0;
        ge_neg(&r);
        ge_table(t->tbl, &r);
        words_from_bytes(kw, b->z + 16 * i, 2);
        kw[2] = 0;
        words_times8(kw, 3);
        t->top = naf_compute(t->naf, kw, 3, WIN);
      }
    }
    msm(&part, b->work, cnt, start == 0 ? bnaf : NULL, btop);
    if (start == 0)
      total = part;
    else
      ge_add(&total, &total, &part);
  }
  if (!ge_is_identity(&total)) return 0;
  /* A_u is now known to be of prime order. */
  if (b->unchecked < b->nkeys) {
    key_slot *k = &b->keys[b->unchecked];
    key_cache_put(k->pub, &k->neg);
  }
  return 1;
}

/* Reduces the scalar sum |sacc| into |s| and each key's into its c;
 * returns 1 or a PERMIT_E* code. */
static int batch_reduce(batch *b, const uint64_t sacc[ACC_WORDS],
                        uint8_t s[32]) {
  b->bctx = BN_CTX_new();
  if (b->bctx == NULL) return PERMIT_ENOMEM;
  BN_CTX_start(b->bctx);
  BIGNUM *ba = BN_CTX_get(b->bctx);
  BIGNUM *br = BN_CTX_get(b->bctx);
  int ok = br != NULL && reduce_mod_l(s, sacc, ba, br, b->bctx);
  for (size_t j = 0; ok && j < b->nkeys; j++)
    ok = reduce_mod_l(b->keys[j].c, b->keys[j].acc, ba, br, b->bctx);
  BN_CTX_end(b->bctx);
  return ok ? 1 : PERMIT_ENOMEM;
}

/* The batch after the argument checks: 1, 0 or a PERMIT_E* code. */
static int batch_run(batch *b, const permit_ed25519_item *items, size_t n) {
  size_t zlen = 16 * n + 8;
  b->z = malloc(zlen);
  if (b->z == NULL) return PERMIT_ENOMEM;
  if (permit_random(b->z, zlen) != 0) return PERMIT_ECRYPTO;
  int rc = batch_keys(b, items, n, load64(b->z + 16 * n));
  if (rc != 1) return rc;
  uint64_t sacc[ACC_WORDS] = {0};
  rc = batch_scalars(b, items, n, sacc);
  if (rc != 1) return rc;
  uint8_t s[32];
  rc = batch_reduce(b, sacc, s);
  if (rc != 1) return rc;
  size_t nterms = b->nkeys + n;
  b->work = malloc((nterms < CHUNK ? nterms : CHUNK) * sizeof *b->work);
  if (b->work == NULL) return PERMIT_ENOMEM;
  return batch_equation(b, items, n, s);
}

int permit_ed25519_batch_verify(const permit_ed25519_item *items, size_t n) {
  if (n == 0) return 1;
  if (items == NULL || n > PERMIT_ED25519_BATCH_MAX) return PERMIT_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (items[i].pub == NULL || items[i].sig == NULL ||
        (items[i].msg == NULL && items[i].len > 0))
      return PERMIT_EINVAL;
  if (!K_ready()) return PERMIT_ECRYPTO;
  /* The checks that need no arithmetic first. */
  for (size_t i = 0; i < n; i++)
    if (!scalar_canonical(items[i].sig + 32) || !y_canonical(items[i].sig))
      return 0;
  batch b;
  memset(&b, 0, sizeof b);
  int rc = batch_run(&b, items, n);
  batch_free(&b);
  return rc;
}

/* ---- the point operations for tests ---- */

int permit_ed25519_point_check(const uint8_t p[32]) {
  ge q;
  return K_ready() && ge_decode(&q, p);
}

int permit_ed25519_key_check(const uint8_t pub[32]) {
  ge a, a8;
  if (!K_ready()) return PERMIT_ECRYPTO;
  if (!ge_decode(&a, pub)) return 0;
  ge_times8(&a8, &a);
  return !ge_is_identity(&a8) && ge_torsion_free(&a);
}

int permit_ed25519_scalarmult(uint8_t out[32], const uint8_t k[32],
                              const uint8_t *p) {
  if (!K_ready()) return PERMIT_ECRYPTO;
  uint64_t kw[4];
  ge r;
  words_from_bytes(kw, k, 4);
  if (p == NULL) {
    int8_t naf[NAF_LEN];
    int top = naf_compute(naf, kw, 4, BWIN);
    msm(&r, NULL, 0, naf, top);
  } else {
    term t;
    ge q;
    if (!ge_decode(&q, p)) return PERMIT_EINVAL;
    ge_table(t.tbl, &q);
    t.top = naf_compute(t.naf, kw, 4, WIN);
    msm(&r, &t, 1, NULL, -1);
  }
  ge_encode(out, &r);
  return 0;
}

int permit_ed25519_point_add(uint8_t out[32], const uint8_t p[32],
                             const uint8_t q[32]) {
  if (!K_ready()) return PERMIT_ECRYPTO;
  ge a, b;
  if (!ge_decode(&a, p) || !ge_decode(&b, q)) return PERMIT_EINVAL;
  ge_add(&a, &a, &b);
  ge_encode(out, &a);
  return 0;
}
