/*
 * fuzz_card - a partner's node card (permitctl peer add, AddPeer, cards
 * stored under peer/): permit_card_verify().
 *
 * Input: mode (1) || bytes.
 *   mode even: |bytes| is a NodeCard.
 *   mode odd:  |bytes| is a NodeCardBody, which the target signs with the
 *              fuzz key (the seeds announce that key as their identity,
 *              so mutations of the other fields get past the signature).
 * Whatever is accepted must be a peer the node can use: a valid name, an
 * endpoint with a port separator, a role, and the identity key that
 * signed the card.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/node.h"

static void check(const uint8_t *card, size_t len) {
  permit_peer peer;
  permit_err err;
  int rc = permit_card_verify(card, len, &peer, &err);
  if (rc != 0) {
    FUZZ_CHECK(rc == PERMIT_EINVAL || rc == PERMIT_ETOOBIG ||
               rc == PERMIT_ENOTFOUND || rc == PERMIT_EVERIFY);
    FUZZ_CHECK(err.code == rc && memchr(err.msg, '\0', sizeof err.msg));
    return;
  }
  FUZZ_CHECK(permit_name_validate(peer.name, NULL) == 0);
  size_t el = strnlen(peer.endpoint, sizeof peer.endpoint);
  FUZZ_CHECK(el > 0 && el < sizeof peer.endpoint);
  FUZZ_CHECK(strchr(peer.endpoint, ':') != NULL);
  FUZZ_CHECK(peer.roles >= 1 && peer.roles <= 3);
  /* The card says who signed it; that key must be the one kept. */
  Permit__V1__NodeCard *env = permit__v1__node_card__unpack(NULL, len, card);
  FUZZ_CHECK(env != NULL);
  Permit__V1__NodeCardBody *b =
      permit__v1__node_card_body__unpack(NULL, env->body.len, env->body.data);
  FUZZ_CHECK(b != NULL && b->identity_key.len == PERMIT_ED25519_PUB_LEN);
  FUZZ_CHECK(memcmp(peer.identity.pub, b->identity_key.data,
                    PERMIT_ED25519_PUB_LEN) == 0);
  FUZZ_CHECK(strcmp(peer.identity.key_id, env->key_id) == 0);
  permit__v1__node_card_body__free_unpacked(b, NULL);
  permit__v1__node_card__free_unpacked(env, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_envelope e;
  fuzz_envelope_take(data, size, PERMIT_CARD_CONTEXT, &e);
  check(e.env, e.len);
  fuzz_envelope_free(&e);
  return 0;
}
