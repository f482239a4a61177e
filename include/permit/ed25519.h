/*
 * permit/ed25519.h - batch verification of Ed25519 signatures (RFC 8032),
 * for the venue side of sync, which verifies one signature per received
 * record.
 *
 * One call decides whether all of n signatures are valid with one
 * multi-scalar multiplication: a random linear combination (coefficients
 * of 128 bits drawn from the OpenSSL CSPRNG on every call) of the n
 * verification equations.  It answers "all valid" or "not all valid"; on
 * the latter the caller verifies each item on its own with permit_verify()
 * (OpenSSL) to learn which.
 *
 * Cofactored versus cofactorless.  OpenSSL checks [S]B - [k]A == R
 * exactly (it compares the encoding of [S]B - [k]A with R's bytes).  The
 * batch checks the cofactored equation of RFC 8032 section 5.1.7,
 * [8][S]B == [8]R + [8][k]A, which is what a random combination of many
 * equations can check.  The two differ only for a signature whose R is a
 * valid point with a non-zero component of small order (R = R' + T with
 * [8]T the identity, T not): the batch accepts it, OpenSSL refuses it.
 * Only the holder of the private key can make such a signature (changing
 * R changes k, so a third party cannot turn a valid signature into one),
 * so a signer can produce records that a batch accepts and a single
 * verification refuses; nothing else can tell the two checks apart.
 *
 * What holds:
 *  - when every item passes OpenSSL's check and every public key is a
 *    canonical encoding of a point of prime order L (as every key made by
 *    Ed25519 key generation is), the batch returns 1;
 *  - when an item fails OpenSSL's check for a reason other than a small
 *    order component of R, the batch returns 0, except with probability
 *    about 2^-128 (over the coefficients, not over the input).
 *
 * The items carry no signature length: the caller checks that a
 * signature is exactly PERMIT_ED25519_SIG_LEN (64) bytes before making an
 * item of it (longer or shorter ones are invalid).
 *
 * Every function here is thread-safe.  The constants and the table of
 * multiples of the base point are built once per process (pthread_once).
 * Each thread keeps the last 16 public keys it found to be of prime order
 * (32 bytes and the decoded point each, in thread-local storage: nothing
 * to free), because that check costs about as much as three items;
 * nothing else outlives a call.  All of it runs in
 * variable time: it is meant for public data (signatures, keys and
 * messages), never for secrets.
 */
#ifndef PERMIT_ED25519_H
#define PERMIT_ED25519_H

#include <stddef.h>
#include <stdint.h>

#include "permit/error.h"

/* The largest batch permit_ed25519_batch_verify() takes. */
#define PERMIT_ED25519_BATCH_MAX 4096

/* One signature to check; every pointer is borrowed for the call only. */
typedef struct {
  const uint8_t *pub;  /* 32-byte Ed25519 public key */
  const uint8_t *sig;  /* 64-byte signature R || S */
  const char *context; /* may be NULL; when set the signed bytes are
                          context || msg (as permit_sign() makes them) */
  const uint8_t *msg;  /* may be NULL when |len| is 0 */
  size_t len;
} permit_ed25519_item;

/*
 * Checks the |n| signatures of |items| together.  Returns 1 when all are
 * valid (in the sense above), 0 when at least one is not or cannot be
 * checked in a batch, PERMIT_EINVAL when |n| is over
 * PERMIT_ED25519_BATCH_MAX or an item has a NULL |pub| or |sig| (or a NULL
 * |msg| with a non-zero |len|), PERMIT_ENOMEM when memory runs out and
 * PERMIT_ECRYPTO when OpenSSL's SHA-512 or random generator fails.  An
 * |n| of 0 returns 1.
 *
 * It returns 0, and the caller then verifies each item with OpenSSL, when:
 *  - an S is not below the group order L (OpenSSL refuses these too);
 *  - an R is not the canonical encoding of a curve point (y >= p, x = 0
 *    with the sign bit set, or no such point; OpenSSL refuses these too);
 *  - a public key is not a canonical encoding of a point, is a point of
 *    small order, or has a component of small order.  OpenSSL may accept
 *    signatures under such keys (under a small-order key anyone can forge
 *    them; under a key with a small-order component 1 in 8 honest
 *    signatures passes, which a cofactored check would not tell from the
 *    other 7); the batch leaves the decision to OpenSSL.
 *
 * Each distinct public key is decoded once per call, however many items
 * share it, and costs about as much as one more item, or four when it is
 * new to this thread and not the first new key of the batch: a batch
 * under one key costs less per item than one under as many keys as items.
 */
int permit_ed25519_batch_verify(const permit_ed25519_item *items, size_t n);

/*
 * Returns 1 when |pub| is a public key worth trusting: the canonical
 * encoding of a point of prime order L (neither of small order nor with
 * a small-order component), 0 otherwise, PERMIT_ECRYPTO when the
 * one-time set-up failed.  OpenSSL verifies signatures
 * under any point: under the identity, for one, anyone can make a
 * signature it accepts.  Cards announcing such keys are refused.
 */
int permit_ed25519_key_check(const uint8_t pub[32]);

/*
 * The point operations below the batch, on 32-byte encodings, for tests
 * and tools.  Variable time: never pass a secret scalar in production.
 */

/* Returns 1 when |p| is the canonical encoding of a curve point (any
 * order), 0 otherwise. */
int permit_ed25519_point_check(const uint8_t p[32]);

/*
 * Writes the encoding of [k]P into |out|, where |k| is a 256-bit
 * little-endian integer taken as it is (not reduced mod L) and P is the
 * point |p| encodes, or the base point B when |p| is NULL (computed
 * through the fixed table of B, not the general path).  Returns 0,
 * PERMIT_EINVAL when |p| does not pass permit_ed25519_point_check(), or
 * PERMIT_ECRYPTO when the one-time set-up failed.
 */
int permit_ed25519_scalarmult(uint8_t out[32], const uint8_t k[32],
                              const uint8_t *p);

/*
 * Writes the encoding of P + Q into |out|.  Returns 0, PERMIT_EINVAL when
 * |p| or |q| does not pass permit_ed25519_point_check(), or PERMIT_ECRYPTO
 * when the one-time set-up failed.
 */
int permit_ed25519_point_add(uint8_t out[32], const uint8_t p[32],
                             const uint8_t q[32]);

#endif
