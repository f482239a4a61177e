/*
 * admin.c - the Admin service permitctl talks to: this node's card,
 * pinning a peer, the peers with their sync state, and consent proofs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/contacts.h"
#include "permit/logging.h"
#include "permit/node_services.h"
#include "permit/util.h"
#include "permit/v1/venue_store.pb-c.h"

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

/* ---- consent proofs ---- */

/*
 * What a proof is made of, gathered from the venue's store: the contact
 * row, the log entry it names, the issuer's newest verified checkpoint,
 * the inclusion proof at that checkpoint's size, and the list's title and
 * notice text.  Everything here is freed by proof_parts_free().
 */
typedef struct proof_parts {
  permit_peer peer;
  Permit__Internal__StoredContact *row;
  uint8_t *leaf;
  size_t leaf_len;
  uint8_t *cp;
  size_t cp_len;
  permit_hash hashes[PERMIT_MERKLE_MAX_PROOF];
  size_t nhashes;
  Permit__V1__CatalogList *list;
  char *notice;
} proof_parts;

static void proof_parts_free(proof_parts *pp) {
  if (pp->row != NULL)
    permit__internal__stored_contact__free_unpacked(pp->row, NULL);
  if (pp->list != NULL) permit__v1__catalog_list__free_unpacked(pp->list, NULL);
  free(pp->leaf);
  free(pp->cp);
  free(pp->notice);
}

/*
 * The contact row of |email| on |list_id| delivered by |issuer|, or
 * |*out| NULL when there is none.  Rows are keyed by the pairwise
 * subject, which the venue computes from the issuer's pair key.
 */
static int proof_row(permit_store *st, const permit_peer *issuer,
                     const char *list_id, const char *email,
                     Permit__Internal__StoredContact **out, permit_err *err) {
  uint8_t key[PERMIT_CONTACT_KEY_MAX];
  *out = NULL;
  int n = snprintf((char *)key, sizeof key, "c/%s/%s/", list_id, issuer->name);
  if (n < 0 || (size_t)n + PERMIT_SUBJECT_LEN > sizeof key)
    return permit_err_set(err, PERMIT_EINVAL, "names too long for a row key");
  int rc = permit_subject(issuer->pair_key, email, strlen(email), key + n);
  if (rc != 0) return permit_err_set(err, rc, "cannot compute the subject");
  uint8_t *v;
  size_t vl;
  rc = permit_store_get(st, PERMIT_CF_CONTACTS, key,
                        (size_t)n + PERMIT_SUBJECT_LEN, &v, &vl, err);
  if (rc == PERMIT_ENOTFOUND) {
    permit_err_clear(err);
    return 0;
  }
  if (rc != 0) return rc;
  *out = permit__internal__stored_contact__unpack(NULL, vl, v);
  free(v);
  if (*out == NULL)
    return permit_err_set(err, PERMIT_ECORRUPT,
                          "the contact row of list %s from %s is damaged",
                          list_id, issuer->name);
  return 0;
}

/*
 * Finds the active row of |email| on |list_id|: from |issuer| when it is
 * not empty, else the newest opt-in of any issuer peer.  Returns a gRPC
 * status, with |why| saying what went wrong (never quoting the email).
 */
static int proof_find(permit_admin *a, const char *email, const char *list_id,
                      const char *issuer, proof_parts *pp, char *why,
                      size_t cap) {
  permit_peer *peers = calloc(PERMIT_MAX_PEERS, sizeof *peers);
  if (peers == NULL) {
    snprintf(why, cap, "out of memory");
    return PERMIT_GRPC_RESOURCE_EXHAUSTED;
  }
  size_t n = permit_node_peers(a->node, peers, PERMIT_MAX_PEERS);
  if (n > PERMIT_MAX_PEERS) n = PERMIT_MAX_PEERS;
  int status = PERMIT_GRPC_OK, issuers = 0, withdrawn = 0;
  permit_store *st = permit_node_store(a->node);
  for (size_t i = 0; i < n && status == PERMIT_GRPC_OK; i++) {
    const permit_peer *p = &peers[i];
    if (!(p->roles & PERMIT_ROLE_ISSUER)) continue;
    if (issuer[0] != '\0' && strcmp(issuer, p->name) != 0) continue;
    issuers++;
    Permit__Internal__StoredContact *row;
    permit_err err = {0};
    int rc = proof_row(st, p, list_id, email, &row, &err);
    if (rc != 0) {
      snprintf(why, cap, "%s", err.msg[0] ? err.msg : permit_strerror(rc));
      status = rc == PERMIT_ECORRUPT ? PERMIT_GRPC_DATA_LOSS
                                     : PERMIT_GRPC_INTERNAL;
      break;
    }
    if (row == NULL) continue;
    int newer = pp->row == NULL ||
                row->collected_at_ms > pp->row->collected_at_ms;
    if (strcmp(row->status, "active") != 0 || !newer) {
      withdrawn |= strcmp(row->status, "active") != 0;
      permit__internal__stored_contact__free_unpacked(row, NULL);
      continue;
    }
    if (pp->row != NULL)
      permit__internal__stored_contact__free_unpacked(pp->row, NULL);
    pp->row = row;
    pp->peer = *p;
  }
  free(peers);
  if (status != PERMIT_GRPC_OK) return status;
  if (issuer[0] != '\0' && issuers == 0) {
    snprintf(why, cap, "%s is not a pinned issuer", issuer);
    return PERMIT_GRPC_NOT_FOUND;
  }
  if (pp->row == NULL) {
    snprintf(why, cap, "no active consent for that email on list %s%s",
             list_id, withdrawn ? " (it was withdrawn)" : "");
    return PERMIT_GRPC_NOT_FOUND;
  }
  return PERMIT_GRPC_OK;
}

/* Reads a value of the default column family; 0 and |*v| NULL if none. */
static int proof_get(permit_store *st, const void *key, size_t kl,
                     uint8_t **v, size_t *vl, permit_err *err) {
  *v = NULL;
  *vl = 0;
  int rc = permit_store_get(st, PERMIT_CF_DEFAULT, key, kl, v, vl, err);
  if (rc == PERMIT_ENOTFOUND) {
    permit_err_clear(err);
    *v = NULL;
    return 0;
  }
  return rc;
}

/*
 * The list's title and the text of notice version |version|, which must
 * hash to |sha| (else it is left out: the proof then says the text was
 * not given rather than give a text the record does not name).
 */
static int proof_notice(permit_admin *a, const char *list_id,
                        uint32_t version, const ProtobufCBinaryData *sha,
                        proof_parts *pp, permit_err *err) {
  permit_store *st = permit_node_store(a->node);
  char key[16 + PERMIT_LIST_ID_MAX];
  int kl = snprintf(key, sizeof key, "list/%s", list_id);
  uint8_t *v;
  size_t vl;
  int rc = proof_get(st, key, (size_t)kl, &v, &vl, err);
  if (rc != 0) return rc;
  if (v != NULL) {
    pp->list = permit__v1__catalog_list__unpack(NULL, vl, v);
    free(v);
  }
  kl = snprintf(key, sizeof key, "notice/%s/", list_id);
  uint8_t be[4] = {(uint8_t)(version >> 24), (uint8_t)(version >> 16),
                   (uint8_t)(version >> 8), (uint8_t)version};
  memcpy(key + kl, be, sizeof be);
  rc = proof_get(st, key, (size_t)kl + sizeof be, &v, &vl, err);
  if (rc != 0 || v == NULL) return rc;
  uint8_t got[PERMIT_SHA256_LEN];
  permit_iov iov = {v, vl};
  int same = permit_sha256(&iov, 1, got) == 0 &&
             sha->len == PERMIT_SHA256_LEN &&
             memcmp(got, sha->data, PERMIT_SHA256_LEN) == 0 &&
             memchr(v, '\0', vl) == NULL;
  if (!same) {
    permit_logf(PERMIT_LEVEL_WARN, "admin.proof_notice",
                "the stored text of notice %u of list %s does not hash to "
                "the record's notice_sha256; the proof leaves it out",
                version, list_id);
  } else {
    pp->notice = malloc(vl + 1);
    if (pp->notice == NULL) {
      free(v);
      return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    }
    memcpy(pp->notice, v, vl);
    pp->notice[vl] = '\0';
  }
  free(v);
  return 0;
}

/*
 * Gathers the proof of the row found: the entry it names (checked to be
 * that opt-in), the newest verified checkpoint, the inclusion proof, the
 * notice.  Returns a gRPC status with |why|.
 */
static int proof_gather(permit_admin *a, const char *list_id, proof_parts *pp,
                        char *why, size_t cap) {
  const char *issuer = pp->peer.name;
  uint64_t seq = pp->row->seq;
  permit_log *in = permit_node_inbound(a->node, issuer);
  permit_err err = {0};
  Permit__V1__Record *rec = NULL;
  Permit__V1__Checkpoint *cpb = NULL;
  int status = PERMIT_GRPC_INTERNAL;
  if (in == NULL) {
    snprintf(why, cap, "no log from %s is open", issuer);
    goto out;
  }
  if (permit_log_get(in, seq, &pp->leaf, &pp->leaf_len, &err) != 0) {
    snprintf(why, cap, "the consent is entry %llu of the log from %s, which "
             "cannot be read: %s", (unsigned long long)seq, issuer, err.msg);
    status = PERMIT_GRPC_DATA_LOSS;
    goto out;
  }
  /* The row and the log are written together; check anyway, so that a
   * damaged store never yields a proof of some other record.  Checked as
   * sync checked it when it was stored (permit_record_verify_many). */
  permit_iov entry = {pp->leaf, pp->leaf_len};
  int vrc;
  if (permit_record_verify_many(&entry, 1, &pp->peer.identity, 1, &rec, &vrc,
                                &err) != 0 ||
      vrc != 0 ||
      rec->opt_in == NULL || rec->record_id.len != pp->row->record_id.len ||
      memcmp(rec->record_id.data, pp->row->record_id.data,
             rec->record_id.len) != 0 ||
      strcmp(rec->list_id, list_id) != 0) {
    snprintf(why, cap, "entry %llu of the log from %s is not the opt-in the "
             "contact row names", (unsigned long long)seq, issuer);
    status = PERMIT_GRPC_DATA_LOSS;
    goto out;
  }
  char key[8 + PERMIT_NAME_MAX];
  int kl = snprintf(key, sizeof key, "cp/%s", issuer);
  int rc = permit_store_get(permit_node_store(a->node), PERMIT_CF_CHECKPOINTS,
                            key, (size_t)kl, &pp->cp, &pp->cp_len, &err);
  if (rc == PERMIT_ENOTFOUND) {
    snprintf(why, cap, "the consent is entry %llu of the log from %s and no "
             "checkpoint covers it yet, retry (none verified yet)",
             (unsigned long long)seq, issuer);
    status = PERMIT_GRPC_FAILED_PRECONDITION;
    goto out;
  }
  if (rc == 0)
    rc = permit_checkpoint_verify(pp->cp, pp->cp_len, &pp->peer.identity, 1,
                                  &cpb, &err);
  if (rc != 0) {
    snprintf(why, cap, "the kept checkpoint of %s: %s", issuer, err.msg);
    status = PERMIT_GRPC_DATA_LOSS;
    goto out;
  }
  if (cpb->size <= seq) {
    snprintf(why, cap, "the consent is entry %llu of the log from %s and no "
             "checkpoint covers it yet, retry (the newest covers %llu "
             "entries)", (unsigned long long)seq, issuer,
             (unsigned long long)cpb->size);
    status = PERMIT_GRPC_FAILED_PRECONDITION;
    goto out;
  }
  if (strcmp(cpb->origin, permit_log_origin(in)) != 0 ||
      cpb->size > permit_log_size(in)) {
    snprintf(why, cap, "the kept checkpoint of %s is not of this mirror",
             issuer);
    goto out;
  }
  if (permit_log_inclusion_proof(in, seq, cpb->size, pp->hashes, &pp->nhashes,
                                 &err) != 0) {
    snprintf(why, cap, "cannot make the inclusion proof: %s", err.msg);
    goto out;
  }
  permit_hash leaf;
  permit_merkle_leaf_hash(pp->leaf, pp->leaf_len, leaf);
  if (permit_merkle_verify_inclusion(seq, cpb->size, leaf, pp->hashes,
                                     pp->nhashes, cpb->root_hash.data) != 0) {
    snprintf(why, cap, "the mirror of the log from %s does not match its "
             "checkpoint", issuer);
    goto out;
  }
  if (proof_notice(a, list_id, rec->opt_in->notice_version,
                   &rec->opt_in->notice_sha256, pp, &err) != 0) {
    snprintf(why, cap, "reading list %s: %s", list_id, err.msg);
    goto out;
  }
  status = PERMIT_GRPC_OK;
out:
  if (cpb != NULL) permit__v1__checkpoint__free_unpacked(cpb, NULL);
  if (rec != NULL) permit_record_free(rec);
  return status;
}

/* True when the sync stopped |issuer|'s log for equivocation (it keeps
 * "equivocation/<issuer>/<n>" in the checkpoints column family). */
static int equivocated(permit_admin *a, const char *issuer) {
  char key[32 + PERMIT_NAME_MAX];
  int kl = snprintf(key, sizeof key, "equivocation/%s/0", issuer);
  uint8_t *v = NULL;
  size_t vl = 0;
  if (permit_store_get(permit_node_store(a->node), PERMIT_CF_CHECKPOINTS, key,
                       (size_t)kl, &v, &vl, NULL) != 0)
    return 0;
  free(v);
  return 1;
}

static void get_proof(permit_call *c, const uint8_t *msg, size_t len) {
  permit_admin *a = permit_call_method_arg(c);
  Permit__V1__GetProofRequest *req =
      permit__v1__get_proof_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a GetProofRequest");
    return;
  }
  char why[1024] = "";
  int status = PERMIT_GRPC_OK;
  size_t el = strlen(req->email);
  char norm[PERMIT_CONTACT_EMAIL_MAX + 1];
  permit_err err = {0};
  if (!(permit_node_roles(a->node) & PERMIT_ROLE_AUDIENCE)) {
    status = PERMIT_GRPC_FAILED_PRECONDITION;
    snprintf(why, sizeof why, "%s holds no contacts (no audience role)",
             permit_node_name(a->node));
  } else if (el == 0 || el > PERMIT_CONTACT_EMAIL_MAX ||
             permit_email_normalize(req->email, el, norm, sizeof norm) != 0) {
    status = PERMIT_GRPC_INVALID_ARGUMENT;
    snprintf(why, sizeof why, "email must be 1 to %d bytes, not all blank",
             PERMIT_CONTACT_EMAIL_MAX);
  } else if (permit_list_id_validate(req->list_id, &err) != 0 ||
             (req->issuer[0] != '\0' &&
              permit_name_validate(req->issuer, &err) != 0)) {
    status = PERMIT_GRPC_INVALID_ARGUMENT;
    snprintf(why, sizeof why, "%s", err.msg);
  }
  proof_parts pp;
  memset(&pp, 0, sizeof pp);
  if (status == PERMIT_GRPC_OK)
    status = proof_find(a, req->email, req->list_id, req->issuer, &pp, why,
                        sizeof why);
  if (status == PERMIT_GRPC_OK && equivocated(a, pp.peer.name)) {
    /* The issuer signed two views of its log: no proof from it can be
     * trusted any more, whatever this copy says.  The evidence stays. */
    status = PERMIT_GRPC_FAILED_PRECONDITION;
    snprintf(why, sizeof why,
             "the log from %s is stopped for equivocation (two signed "
             "views of it are kept as evidence): no proof is given from it",
             pp.peer.name);
  }
  if (status == PERMIT_GRPC_OK)
    status = proof_gather(a, req->list_id, &pp, why, sizeof why);
  if (status != PERMIT_GRPC_OK) {
    permit_call_finish(c, status, "%s", why);
  } else {
    ProtobufCBinaryData bins[PERMIT_MERKLE_MAX_PROOF];
    for (size_t i = 0; i < pp.nhashes; i++)
      bins[i] = (ProtobufCBinaryData){PERMIT_HASH_LEN, pp.hashes[i]};
    Permit__V1__ConsentProof p = PERMIT__V1__CONSENT_PROOF__INIT;
    p.signed_record = (ProtobufCBinaryData){pp.leaf_len, pp.leaf};
    p.seq = pp.row->seq;
    p.signed_checkpoint = (ProtobufCBinaryData){pp.cp_len, pp.cp};
    p.inclusion = bins;
    p.n_inclusion = pp.nhashes;
    p.list_title = pp.list != NULL ? pp.list->title : "";
    p.notice_text = pp.notice != NULL ? pp.notice : "";
    p.issuer = pp.peer.name;
    p.audience = (char *)permit_node_name(a->node);
    p.list_id = req->list_id;
    permit_logf(PERMIT_LEVEL_INFO, "admin.proof",
                "proof of consent on list %s: entry %llu of the log from %s",
                req->list_id, (unsigned long long)p.seq, pp.peer.name);
    reply(c, &p.base);
  }
  proof_parts_free(&pp);
  /* The address is personal data: do not leave it in memory. */
  permit_wipe(norm, sizeof norm);
  permit_wipe(req->email, el);
  permit__v1__get_proof_request__free_unpacked(req, NULL);
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
