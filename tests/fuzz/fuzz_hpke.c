/*
 * fuzz_hpke - opening a sealed contact (permit/hpke.h): decapsulation of
 * a peer's encapsulated key and the AEAD open, with the fuzz sealing key.
 *
 * Input: aead (1) || info length (1) || aad length (1) || info || aad ||
 * enc (32) || ciphertext || tag (16).  The aead byte picks, by its value
 * mod 4, AES-128-GCM, ChaCha20-Poly1305 (twice), or its top six bits as
 * the id, so that unknown ids are tried too.
 *
 * permit_hpke_open() and the two-step setup + open must agree, and what
 * opens must seal back, under a context set up from the same enc, to the
 * same ciphertext.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/hpke.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_reader r;
  fuzz_reader_init(&r, data, size);
  uint8_t sel = fuzz_u8(&r);
  permit_aead_id aead = sel % 4 == 0   ? PERMIT_AEAD_AES_128_GCM
                        : sel % 4 == 1 ? PERMIT_AEAD_CHACHA20_POLY1305
                        : sel % 4 == 2 ? PERMIT_AEAD_CHACHA20_POLY1305
                                       : (permit_aead_id)(sel >> 2);
  size_t info_len = fuzz_u8(&r), aad_len = fuzz_u8(&r);
  const uint8_t *info = fuzz_bytes(&r, info_len, &info_len);
  const uint8_t *aad = fuzz_bytes(&r, aad_len, &aad_len);
  size_t in_len;
  const uint8_t *in = fuzz_rest(&r, &in_len);
  const permit_kx_key *key = fuzz_kx_key();

  size_t pt_len = in_len >= PERMIT_HPKE_ENC_LEN + PERMIT_AEAD_TAG_LEN
                      ? in_len - PERMIT_HPKE_ENC_LEN - PERMIT_AEAD_TAG_LEN
                      : 0;
  /* Exactly the room the header asks for, so ASan sees any overrun. */
  uint8_t *pt = malloc(pt_len ? pt_len : 1);
  uint8_t *pt2 = malloc(pt_len ? pt_len : 1);
  if (pt == NULL || pt2 == NULL) abort();
  int rc = permit_hpke_open(aead, key, info, info_len, aad, aad_len, in,
                            in_len, pt);
  FUZZ_CHECK(rc == 0 || rc == PERMIT_EINVAL || rc == PERMIT_EVERIFY);
  if (in_len < PERMIT_HPKE_ENC_LEN + PERMIT_AEAD_TAG_LEN) {
    FUZZ_CHECK(rc == PERMIT_EINVAL);
    goto done;
  }

  permit_hpke_ctx ctx;
  int rc2 = permit_hpke_setup_base_r(aead, key, in, info, info_len, &ctx);
  if (rc2 == 0) {
    rc2 = permit_hpke_ctx_open(&ctx, aad, aad_len, in + PERMIT_HPKE_ENC_LEN,
                               in_len - PERMIT_HPKE_ENC_LEN, pt2);
    /* A failed open must not use up the sequence number: the same
     * ciphertext fails again the same way, a good one opens once. */
    if (rc2 != 0)
      FUZZ_CHECK(permit_hpke_ctx_open(&ctx, aad, aad_len,
                                      in + PERMIT_HPKE_ENC_LEN,
                                      in_len - PERMIT_HPKE_ENC_LEN,
                                      pt2) == rc2);
    permit_hpke_ctx_wipe(&ctx);
  }
  FUZZ_CHECK(rc == rc2);
  if (rc == 0) {
    FUZZ_CHECK(pt_len == 0 || memcmp(pt, pt2, pt_len) == 0);
    uint8_t *ct = malloc(pt_len + PERMIT_AEAD_TAG_LEN);
    if (ct == NULL) abort();
    FUZZ_CHECK(permit_hpke_setup_base_r(aead, key, in, info, info_len,
                                        &ctx) == 0);
    FUZZ_CHECK(permit_hpke_ctx_seal(&ctx, aad, aad_len, pt, pt_len, ct) == 0);
    FUZZ_CHECK(memcmp(ct, in + PERMIT_HPKE_ENC_LEN,
                      pt_len + PERMIT_AEAD_TAG_LEN) == 0);
    permit_hpke_ctx_wipe(&ctx);
    free(ct);
  }
done:
  free(pt2);
  free(pt);
  return 0;
}
