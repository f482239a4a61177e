/*
 * fuzz_catalog - a venue's signed list catalog, which a reseller fetches
 * and shows at checkout: permit_catalog_verify().
 *
 * Input: mode (1) || bytes.
 *   mode even: |bytes| is a SignedCatalog from the venue FUZZ_AUDIENCE,
 *              whose pinned key is the fuzz key.
 *   mode odd:  |bytes| is a Catalog body, signed by the target.
 * An accepted catalog names the venue it came from, and every list in it
 * has a valid id, a notice version and a 32-byte notice hash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/node.h"

static int verify(const uint8_t *in, size_t len) {
  permit_peer venue;
  memset(&venue, 0, sizeof venue);
  snprintf(venue.name, sizeof venue.name, "%s", FUZZ_AUDIENCE);
  venue.identity = *fuzz_trusted_key();
  venue.roles = PERMIT_ROLE_AUDIENCE;
  Permit__V1__Catalog *c = NULL;
  permit_err err;
  int rc = permit_catalog_verify(&venue, in, len, &c, &err);
  FUZZ_CHECK((rc == 0) == (c != NULL));
  if (rc != 0) {
    FUZZ_CHECK(rc == PERMIT_EINVAL || rc == PERMIT_ETOOBIG ||
               rc == PERMIT_ENOTFOUND || rc == PERMIT_EVERIFY ||
               rc == PERMIT_EPERM);
    FUZZ_CHECK(err.code == rc && memchr(err.msg, '\0', sizeof err.msg));
    return rc;
  }
  FUZZ_CHECK(strcmp(c->audience, FUZZ_AUDIENCE) == 0);
  for (size_t i = 0; i < c->n_lists; i++) {
    const Permit__V1__CatalogList *l = c->lists[i];
    FUZZ_CHECK(permit_list_id_validate(l->list_id, NULL) == 0);
    FUZZ_CHECK(l->notice_version > 0 && l->notice_sha256.len == 32);
    FUZZ_CHECK(l->title != NULL && l->notice_text != NULL);
  }
  permit__v1__catalog__free_unpacked(c, NULL);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_envelope e;
  fuzz_envelope_take(data, size, PERMIT_CATALOG_CONTEXT, &e);
  int rc = verify(e.env, e.len);
  /* Signed here by the trusted key: the signature cannot be the fault. */
  if (e.body != NULL)
    FUZZ_CHECK(rc == 0 || rc == PERMIT_EINVAL || rc == PERMIT_EPERM ||
               (e.len > (1u << 20) && rc == PERMIT_ETOOBIG));
  fuzz_envelope_free(&e);
  return 0;
}
