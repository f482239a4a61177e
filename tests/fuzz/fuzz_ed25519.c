/*
 * fuzz_ed25519 - batch verification of Ed25519 signatures
 * (permit_ed25519_batch_verify) against OpenSSL's one-by-one check.
 *
 * Input: count (1) || items.  Each item: kind (1) || ...
 *   kind 0-1:  msg length (1) || msg || flip (2): the target signs
 *              context || msg with one of two fixed keys (kind picks),
 *              then flips bit |flip| of signature || key || msg (no flip
 *              when it is past the end), so that most batches hold valid
 *              signatures and a few precise faults;
 *   kind 2-255: key (32) || signature (64) || msg length (1) || msg, as
 *              given, for encodings that signing never makes.
 *
 * What must hold: the batch says 1 only when OpenSSL accepts every item,
 * and when OpenSSL accepts every item it says 1, unless a key is weak
 * (permit_ed25519_key_check), which the batch leaves to OpenSSL.
 * (Signatures with a small-order component in R pass the batch and not
 * OpenSSL; only a key's owner can make them, and this target signs with
 * OpenSSL, which never does.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "permit/ed25519.h"

#define MAX_ITEMS 24
#define CONTEXT "permit/v1/record\n"

/* The second signing key: another fixed seed. */
static const permit_sign_key *second_key(void) {
  static permit_sign_key *key;
  static const uint8_t seed[PERMIT_ED25519_SEED_LEN] = {
      0x4c, 0xcd, 0x08, 0x9b, 0x28, 0xff, 0x96, 0xda, 0x9d, 0xb6, 0xc3,
      0x46, 0xec, 0x11, 0x4e, 0x0f, 0x5b, 0x8a, 0x31, 0x9f, 0x35, 0xab,
      0xa6, 0x24, 0xda, 0x8c, 0xf6, 0xed, 0x4f, 0xb8, 0xa6, 0xfb};
  if (key == NULL && permit_sign_key_from_seed(seed, &key) != 0) abort();
  return key;
}

typedef struct item {
  uint8_t pub[32], sig[64], msg[255];
  size_t len;
} item;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_reader r;
  fuzz_reader_init(&r, data, size);
  size_t n = 1 + fuzz_u8(&r) % MAX_ITEMS;
  item *its = calloc(n, sizeof *its);
  permit_ed25519_item batch[MAX_ITEMS];
  if (its == NULL) abort();
  for (size_t i = 0; i < n; i++) {
    item *it = &its[i];
    uint8_t kind = fuzz_u8(&r);
    if (kind < 2) {
      const permit_sign_key *k = kind == 0 ? fuzz_sign_key() : second_key();
      it->len = fuzz_u8(&r);
      fuzz_fill(&r, it->msg, it->len);
      FUZZ_CHECK(permit_sign(k, CONTEXT, it->msg, it->len, it->sig) == 0);
      memcpy(it->pub, permit_sign_key_public(k), 32);
      size_t flip = (size_t)fuzz_u8(&r) << 8 | fuzz_u8(&r);
      if (flip < 8 * 64)
        it->sig[flip / 8] ^= (uint8_t)(1u << (flip % 8));
      else if ((flip -= 8 * 64) < 8 * 32)
        it->pub[flip / 8] ^= (uint8_t)(1u << (flip % 8));
      else if ((flip -= 8 * 32) < 8 * it->len)
        it->msg[flip / 8] ^= (uint8_t)(1u << (flip % 8));
    } else {
      fuzz_fill(&r, it->pub, 32);
      fuzz_fill(&r, it->sig, 64);
      it->len = fuzz_u8(&r);
      fuzz_fill(&r, it->msg, it->len);
    }
    batch[i] = (permit_ed25519_item){.pub = it->pub, .sig = it->sig,
                                     .context = CONTEXT, .msg = it->msg,
                                     .len = it->len};
  }
  int all = 1, weak = 0;
  for (size_t i = 0; i < n; i++) {
    if (permit_verify(its[i].pub, CONTEXT, its[i].msg, its[i].len,
                      its[i].sig, 64) != 0)
      all = 0;
    if (!permit_ed25519_key_check(its[i].pub)) weak = 1;
  }
  int got = permit_ed25519_batch_verify(batch, n);
  FUZZ_CHECK(got == 0 || got == 1);
  FUZZ_CHECK(got == 0 || all);
  FUZZ_CHECK(got == 1 || !all || weak);
  free(its);
  return 0;
}
