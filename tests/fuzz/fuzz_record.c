/*
 * fuzz_record - a peer's SignedRecord: permit_record_verify() (envelope
 * decode, key lookup, signature, body decode, canonical form, field
 * validation) and what sync does with the result.
 *
 * Input: mode (1) || bytes.
 *   mode even: |bytes| is a SignedRecord, checked against the fuzz key.
 *   mode odd:  |bytes| is a Record body; the target signs it with the fuzz
 *              key first, so that mutations reach the body checks behind
 *              the signature, and checks that verify accepts it exactly
 *              when it decodes, is canonical and validates, and that a
 *              record it accepts signs back to the same envelope.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/record.h"

/* What permit_record_verify() must say about a correctly signed |body|,
 * worked out without it. */
static int expected(const uint8_t *body, size_t len) {
  if (len == 0) return PERMIT_EINVAL;
  Permit__V1__Record *rec = permit__v1__record__unpack(NULL, len, body);
  if (rec == NULL) return PERMIT_EINVAL;
  int rc = PERMIT_EINVAL;
  if (permit__v1__record__get_packed_size(rec) == len) {
    uint8_t *again = malloc(len);
    if (again == NULL) abort();
    permit__v1__record__pack(rec, again);
    if (memcmp(again, body, len) == 0 && permit_record_validate(rec, NULL) == 0)
      rc = 0;
    free(again);
  }
  permit__v1__record__free_unpacked(rec, NULL);
  return rc;
}

/* Properties of a record that verified. */
static void accepted(const Permit__V1__Record *rec) {
  FUZZ_CHECK(permit_record_validate(rec, NULL) == 0);
  FUZZ_CHECK(rec->issuer != NULL && rec->audience != NULL);
  permit_err err;
  int rc = permit_record_check_route(rec, rec->issuer, rec->audience, &err);
  FUZZ_CHECK(rc == 0);
  rc = permit_record_check_route(rec, FUZZ_ISSUER, FUZZ_AUDIENCE, &err);
  FUZZ_CHECK(rc == 0 || rc == PERMIT_EPERM);
}

static void signed_record(const uint8_t *in, size_t len) {
  Permit__V1__Record *rec = NULL;
  permit_err err;
  int rc = permit_record_verify(in, len, fuzz_trusted_key(), 1, &rec, &err);
  FUZZ_CHECK((rc == 0) == (rec != NULL));
  if (rc != 0) {
    FUZZ_CHECK(rc == PERMIT_EINVAL || rc == PERMIT_ETOOBIG ||
               rc == PERMIT_ENOTFOUND || rc == PERMIT_EVERIFY);
    FUZZ_CHECK(err.code == rc && memchr(err.msg, '\0', sizeof err.msg));
    return;
  }
  accepted(rec);
  /* Signing what was accepted gives an envelope that verifies to the
   * same record (the envelope itself may have been packed differently). */
  uint8_t *again;
  size_t again_len;
  FUZZ_CHECK(permit_record_sign(rec, fuzz_sign_key(), &again, &again_len,
                                &err) == 0);
  Permit__V1__Record *rec2 = NULL;
  FUZZ_CHECK(permit_record_verify(again, again_len, fuzz_trusted_key(), 1,
                                  &rec2, &err) == 0);
  size_t n = permit__v1__record__get_packed_size(rec);
  FUZZ_CHECK(n == permit__v1__record__get_packed_size(rec2));
  free(again);
  permit_record_free(rec2);
  permit_record_free(rec);
}

static void record_body(const uint8_t *body, size_t len) {
  uint8_t *env;
  size_t env_len;
  permit_err err;
  /* An empty body is the signed-envelope mode's case (refused as such). */
  if (len == 0) return;
  FUZZ_CHECK(permit_envelope_sign(PERMIT_RECORD_CONTEXT, body, len,
                                  fuzz_sign_key(), &env, &env_len, &err) == 0);
  Permit__V1__Record *rec = NULL;
  int rc = permit_record_verify(env, env_len, fuzz_trusted_key(), 1, &rec,
                                &err);
  FUZZ_CHECK(rc == (env_len > PERMIT_RECORD_MAX_LEN ? PERMIT_ETOOBIG
                                                     : expected(body, len)));
  if (rc == 0) {
    accepted(rec);
    /* The body was canonical and signatures are deterministic, so signing
     * the record again must give these very bytes. */
    uint8_t *again;
    size_t again_len;
    rc = permit_record_sign(rec, fuzz_sign_key(), &again, &again_len, &err);
    FUZZ_CHECK(rc == 0 || rc == PERMIT_ETOOBIG);
    if (rc == 0) {
      FUZZ_CHECK(again_len == env_len && memcmp(again, env, env_len) == 0);
      free(again);
    }
    permit_record_free(rec);
  }
  free(env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_reader r;
  fuzz_reader_init(&r, data, size);
  uint8_t mode = fuzz_u8(&r);
  size_t len;
  const uint8_t *rest = fuzz_rest(&r, &len);
  if (mode & 1)
    record_body(rest, len);
  else
    signed_record(rest, len);
  return 0;
}
