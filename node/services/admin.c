/*
 * admin.c - the Admin service permitctl talks to: this node's card,
 * pinning a peer, the peers with their sync state, and consent proofs.
 */
#include <stdlib.h>
#include <string.h>

#include "permit/logging.h"
#include "permit/node_services.h"

struct permit_admin {
  permit_node *node;
  permit_sync *sync;
};

permit_admin *permit_admin_new(permit_node *n, permit_sync *sync,
                               permit_err *err) {
  permit_admin *a = calloc(1, sizeof *a);
  if (a == NULL) {
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  a->node = n;
  a->sync = sync;
  return a;
}

void permit_admin_free(permit_admin *a) { free(a); }

/* Sends |m| packed and finishes OK. */
static void reply(permit_call *c, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  protobuf_c_message_pack(m, buf);
  permit_call_send(c, buf, n);
  free(buf);
  permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

static void get_card(permit_call *c, const uint8_t *msg, size_t len) {
  permit_admin *a = permit_call_method_arg(c);
  (void)msg, (void)len;
  uint8_t *card;
  size_t cl;
  permit_err err;
  if (permit_node_card(a->node, &card, &cl, &err) != 0) {
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "%s", err.msg);
    return;
  }
  /* The card is already a serialized NodeCard: send it as it is. */
  permit_call_send(c, card, cl);
  free(card);
  permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

static void peer_info(permit_admin *a, const permit_peer *p,
                      Permit__V1__PeerInfo *pi, Permit__V1__Role *roles,
                      char *state, size_t cap) {
  permit__v1__peer_info__init(pi);
  pi->name = (char *)p->name;
  pi->endpoint = (char *)p->endpoint;
  pi->key_id = (char *)p->identity.key_id;
  size_t nr = 0;
  if (p->roles & PERMIT_ROLE_ISSUER) roles[nr++] = PERMIT__V1__ROLE__ROLE_ISSUER;
  if (p->roles & PERMIT_ROLE_AUDIENCE)
    roles[nr++] = PERMIT__V1__ROLE__ROLE_AUDIENCE;
  pi->roles = roles;
  pi->n_roles = nr;
  state[0] = '\0';
  if (a->sync != NULL) permit_sync_state(a->sync, p->name, state, cap);
  pi->sync_state = state;
  pi->equivocation = strstr(state, "equivocation") != NULL;
  permit_log *in = permit_node_inbound(a->node, p->name);
  permit_log *out = permit_node_outbound(a->node, p->name);
  pi->inbound_size = in != NULL ? permit_log_size(in) : 0;
  pi->outbound_size = out != NULL ? permit_log_size(out) : 0;
}

static void add_peer(permit_call *c, const uint8_t *msg, size_t len) {
  permit_admin *a = permit_call_method_arg(c);
  Permit__V1__AddPeerRequest *req =
      permit__v1__add_peer_request__unpack(NULL, len, msg);
  if (req == NULL || req->card == NULL) {
    if (req != NULL) permit__v1__add_peer_request__free_unpacked(req, NULL);
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request has no card");
    return;
  }
  /* Re-pack the decoded envelope: its body bytes are carried unchanged,
   * so the signature over them still verifies. */
  size_t cl = permit__v1__node_card__get_packed_size(req->card);
  uint8_t *card = malloc(cl ? cl : 1);
  permit_peer p;
  permit_err err = {0};
  int rc = PERMIT_ENOMEM;
  if (card != NULL) {
    permit__v1__node_card__pack(req->card, card);
    rc = permit_node_peer_add(a->node, card, cl, &p, &err);
  }
  free(card);
  permit__v1__add_peer_request__free_unpacked(req, NULL);
  if (rc != 0) {
    int st = rc == PERMIT_EEXIST    ? PERMIT_GRPC_ALREADY_EXISTS
             : rc == PERMIT_EVERIFY || rc == PERMIT_EINVAL ||
                     rc == PERMIT_ENOTFOUND
                 ? PERMIT_GRPC_INVALID_ARGUMENT
                 : PERMIT_GRPC_INTERNAL;
    permit_call_finish(c, st, "%s", err.msg[0] ? err.msg : permit_strerror(rc));
    return;
  }
  if (a->sync != NULL) permit_sync_peer_added(a->sync, p.name);
  Permit__V1__PeerInfo pi;
  Permit__V1__Role roles[2];
  char state[256];
  peer_info(a, &p, &pi, roles, state, sizeof state);
  reply(c, &pi.base);
}

static void list_peers(permit_call *c, const uint8_t *msg, size_t len) {
  permit_admin *a = permit_call_method_arg(c);
  (void)msg, (void)len;
  static const size_t cap = PERMIT_MAX_PEERS;
  permit_peer *peers = calloc(cap, sizeof *peers);
  Permit__V1__PeerInfo *infos = calloc(cap, sizeof *infos);
  Permit__V1__PeerInfo **ptrs = calloc(cap, sizeof *ptrs);
  Permit__V1__Role(*roles)[2] = calloc(cap, sizeof *roles);
  char(*states)[256] = calloc(cap, sizeof *states);
  if (!peers || !infos || !ptrs || !roles || !states) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    size_t n = permit_node_peers(a->node, peers, cap);
    if (n > cap) n = cap;
    for (size_t i = 0; i < n; i++) {
      peer_info(a, &peers[i], &infos[i], roles[i], states[i], 256);
      ptrs[i] = &infos[i];
    }
    Permit__V1__ListPeersResponse resp = PERMIT__V1__LIST_PEERS_RESPONSE__INIT;
    resp.peers = ptrs;
    resp.n_peers = n;
    reply(c, &resp.base);
  }
  free(peers);
  free(infos);
  free(ptrs);
  free(roles);
  free(states);
}

static void get_proof(permit_call *c, const uint8_t *msg, size_t len) {
  (void)msg, (void)len;
  permit_call_finish(c, PERMIT_GRPC_UNIMPLEMENTED,
                     "consent proofs are not built yet");
}

void permit_admin_methods(permit_admin *a,
                          permit_method out[PERMIT_ADMIN_METHODS]) {
  out[0] = (permit_method){.path = "/permit.v1.Admin/GetCard",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = get_card,
                           .arg = a};
  out[1] = (permit_method){.path = "/permit.v1.Admin/AddPeer",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = add_peer,
                           .arg = a};
  out[2] = (permit_method){.path = "/permit.v1.Admin/ListPeers",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = list_peers,
                           .arg = a};
  out[3] = (permit_method){.path = "/permit.v1.Admin/GetProof",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = get_proof,
                           .arg = a};
}
