/*
 * fuzz_checkpoint - a peer's signed log head (GetCheckpoint, Pull, the
 * checkpoints a mirror keeps): permit_checkpoint_verify().
 *
 * Input: mode (1) || bytes.
 *   mode even: |bytes| is a SignedCheckpoint checked against the fuzz key.
 *   mode odd:  |bytes| is a Checkpoint body, signed with the fuzz key by
 *              the target so that mutations reach the body checks.
 * An accepted checkpoint must be the canonical encoding of itself, with a
 * 32-byte root and an origin "permit/v1/log/<issuer>/<audience>" of two
 * valid node names.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/log.h"

static void accepted(const Permit__V1__Checkpoint *cp) {
  static const char prefix[] = "permit/v1/log/";
  FUZZ_CHECK(cp->root_hash.len == PERMIT_HASH_LEN);
  FUZZ_CHECK(cp->origin != NULL &&
             strncmp(cp->origin, prefix, sizeof prefix - 1) == 0);
  const char *issuer = cp->origin + sizeof prefix - 1;
  const char *slash = strchr(issuer, '/');
  FUZZ_CHECK(slash != NULL && slash - issuer <= PERMIT_NAME_MAX);
  char name[PERMIT_NAME_MAX + 1];
  memcpy(name, issuer, (size_t)(slash - issuer));
  name[slash - issuer] = '\0';
  FUZZ_CHECK(permit_name_validate(name, NULL) == 0);
  FUZZ_CHECK(permit_name_validate(slash + 1, NULL) == 0);
  FUZZ_CHECK(strlen(cp->origin) < PERMIT_ORIGIN_MAX);
}

static int verify(const uint8_t *in, size_t len, const uint8_t *body,
                  size_t body_len) {
  Permit__V1__Checkpoint *cp = NULL;
  permit_err err;
  int rc = permit_checkpoint_verify(in, len, fuzz_trusted_key(), 1, &cp, &err);
  FUZZ_CHECK((rc == 0) == (cp != NULL));
  if (rc != 0) {
    FUZZ_CHECK(rc == PERMIT_EINVAL || rc == PERMIT_ETOOBIG ||
               rc == PERMIT_ENOTFOUND || rc == PERMIT_EVERIFY);
    FUZZ_CHECK(err.code == rc && memchr(err.msg, '\0', sizeof err.msg));
    return rc;
  }
  accepted(cp);
  if (body != NULL) {
    size_t n = permit__v1__checkpoint__get_packed_size(cp);
    FUZZ_CHECK(n == body_len);
    uint8_t *again = malloc(n);
    if (again == NULL) abort();
    permit__v1__checkpoint__pack(cp, again);
    FUZZ_CHECK(memcmp(again, body, n) == 0);
    free(again);
  }
  permit__v1__checkpoint__free_unpacked(cp, NULL);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_envelope e;
  fuzz_envelope_take(data, size, PERMIT_CHECKPOINT_CONTEXT, &e);
  int rc = verify(e.env, e.len, e.body, e.body_len);
  /* Signed by the trusted key and small enough: only the body can fail. */
  if (e.body != NULL && e.len <= PERMIT_CHECKPOINT_MAX_LEN)
    FUZZ_CHECK(rc == 0 || rc == PERMIT_EINVAL);
  fuzz_envelope_free(&e);
  return 0;
}
