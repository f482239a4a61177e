/*
 * fuzz.h - what the libFuzzer targets and the seed generator share: the
 * fixed keys that seeds are signed and sealed with (so that mutated seeds
 * still reach the code behind a signature check), a reader that takes
 * typed fields off the fuzz input, and the check that stops a target when
 * a property fails.
 *
 * Nothing here is secret: these keys exist only in the fuzz targets.
 */
#ifndef PERMIT_FUZZ_H
#define PERMIT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/crypto.h"
#include "permit/record.h"

/*
 * A property of the code under test does not hold: print where and stop
 * the process, which libFuzzer reports as a crash (and keeps the input).
 * Not assert(): it must also fire in a build with NDEBUG.
 */
#define FUZZ_CHECK(cond)                                                     \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__,  \
              #cond);                                                        \
      abort();                                                               \
    }                                                                        \
  } while (0)

/* The identity (Ed25519) seed that signs records, cards, checkpoints and
 * catalogs in the seeds, and the node names they use. */
static const uint8_t fuzz_sign_seed[PERMIT_ED25519_SEED_LEN] = {
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a,
    0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32,
    0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60};
#define FUZZ_ISSUER "tixly.example"
#define FUZZ_AUDIENCE "fillmore.example"

/* The sealing (X25519) private key HPKE seeds are sealed to. */
static const uint8_t fuzz_kx_private[PERMIT_X25519_LEN] = {
    0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1,
    0x72, 0x51, 0xb2, 0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0,
    0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a};

/* The consent-centre link secret and context of the token seeds. */
static const uint8_t fuzz_token_secret[32] = {
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
    0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16,
    0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20};
#define FUZZ_TOKEN_CONTEXT FUZZ_ISSUER

/* The signing key, made once; it stays reachable until exit. */
static inline const permit_sign_key *fuzz_sign_key(void) {
  static permit_sign_key *key;
  if (key == NULL && permit_sign_key_from_seed(fuzz_sign_seed, &key) != 0) {
    fprintf(stderr, "fuzz: cannot make the signing key\n");
    abort();
  }
  return key;
}

/* The sealing key, made once. */
static inline const permit_kx_key *fuzz_kx_key(void) {
  static permit_kx_key *key;
  if (key == NULL && permit_kx_key_from_private(fuzz_kx_private, &key) != 0) {
    fprintf(stderr, "fuzz: cannot make the sealing key\n");
    abort();
  }
  return key;
}

/* The trusted-key entry for fuzz_sign_key(). */
static inline const permit_trusted_key *fuzz_trusted_key(void) {
  static permit_trusted_key tk;
  static int done;
  if (!done) {
    permit_trusted_key_set(&tk, permit_sign_key_public(fuzz_sign_key()));
    done = 1;
  }
  return &tk;
}

/*
 * Takes fields off the front of the input.  Past the end a reader gives
 * zeros and empty byte strings, so that every input means something.
 */
typedef struct fuzz_reader {
  const uint8_t *p;
  size_t left;
} fuzz_reader;

static inline void fuzz_reader_init(fuzz_reader *r, const uint8_t *data,
                                    size_t size) {
  r->p = data;
  r->left = size;
}

static inline uint8_t fuzz_u8(fuzz_reader *r) {
  if (r->left == 0) return 0;
  r->left--;
  return *r->p++;
}

/* Big-endian, like the seeds write it. */
static inline uint64_t fuzz_u64(fuzz_reader *r) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | fuzz_u8(r);
  return v;
}

/* Up to |n| bytes (fewer at the end); |*got| the count. */
static inline const uint8_t *fuzz_bytes(fuzz_reader *r, size_t n,
                                        size_t *got) {
  const uint8_t *p = r->p;
  if (n > r->left) n = r->left;
  r->p += n;
  r->left -= n;
  *got = n;
  return p;
}

/* Exactly |n| bytes into |out|, zero-padded past the end. */
static inline void fuzz_fill(fuzz_reader *r, uint8_t *out, size_t n) {
  size_t got;
  const uint8_t *p = fuzz_bytes(r, n, &got);
  if (got > 0) memcpy(out, p, got);
  memset(out + got, 0, n - got);
}

/* The rest of the input. */
static inline const uint8_t *fuzz_rest(fuzz_reader *r, size_t *got) {
  return fuzz_bytes(r, r->left, got);
}

/*
 * The input of a target for a signed envelope (card, catalog,
 * checkpoint): an even first byte means the rest is an envelope as
 * received; an odd one that the rest is a body, signed here with
 * fuzz_sign_key() under |context|, so that mutations get past the
 * signature to the body's checks.  |body| is NULL for a received
 * envelope; fuzz_envelope_free() frees what was signed.
 */
typedef struct fuzz_envelope {
  const uint8_t *env, *body;
  size_t len, body_len;
  uint8_t *signed_env;
} fuzz_envelope;

static inline void fuzz_envelope_take(const uint8_t *data, size_t size,
                                      const char *context, fuzz_envelope *e) {
  fuzz_reader r;
  fuzz_reader_init(&r, data, size);
  uint8_t mode = fuzz_u8(&r);
  size_t len;
  const uint8_t *rest = fuzz_rest(&r, &len);
  *e = (fuzz_envelope){.env = rest, .len = len};
  if (!(mode & 1) || len == 0) return;
  FUZZ_CHECK(permit_envelope_sign(context, rest, len, fuzz_sign_key(),
                                  &e->signed_env, &e->len, NULL) == 0);
  e->env = e->signed_env;
  e->body = rest;
  e->body_len = len;
}

static inline void fuzz_envelope_free(fuzz_envelope *e) {
  free(e->signed_env);
}

/* A malloc'd copy of |len| bytes with a NUL after them (for APIs that
 * take C strings); aborts when out of memory, as libFuzzer would. */
static inline char *fuzz_cstr(const uint8_t *p, size_t len) {
  char *s = malloc(len + 1);
  if (s == NULL) abort();
  if (len > 0) memcpy(s, p, len);
  s[len] = '\0';
  return s;
}

#endif
