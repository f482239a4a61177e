/*
 * node.c - the state a running node shares between its services.
 */
#include "permit/contacts.h"
#include "permit/node.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "permit/ed25519.h"
#include "permit/identity.h"
#include "permit/logging.h"
#include "permit/util.h"

typedef struct peer_slot {
  permit_peer peer;
  permit_log *outbound, *inbound;
} peer_slot;

struct permit_node {
  char name[PERMIT_NAME_MAX + 1];
  char endpoint[PERMIT_ENDPOINT_MAX];
  char consent_base[512];
  int roles;
  int lock_fd;
  permit_identity id;
  permit_store *store;
  permit_pinset *pins;
  char *cert;
  uint8_t secret[32];
  uint8_t token_secret[32]; /* MACs consent and unsubscribe links */
  int64_t handover_ms;      /* how long an erased contact waits */
  pthread_rwlock_t peers_lock;
  peer_slot *peers;
  size_t npeers;
  pthread_mutex_t lists_lock; /* serialises list definitions */
  permit_node_grow_fn grow_fn;
  void *grow_arg;
  permit_node_change_fn change_fn;
  void *change_arg;
  /* Guards the two hooks: a service may unregister while another thread
   * reports growth. */
  pthread_mutex_t hooks_lock;
};

const char *permit_node_name(const permit_node *n) { return n->name; }
int permit_node_roles(const permit_node *n) { return n->roles; }
int64_t permit_node_handover_ms(const permit_node *n) {
  return n->handover_ms;
}
const char *permit_node_consent_base(const permit_node *n) {
  return n->consent_base;
}
const permit_sign_key *permit_node_sign_key(const permit_node *n) {
  return n->id.sign;
}
const permit_kx_key *permit_node_seal_key(const permit_node *n) {
  return n->id.seal;
}
permit_store *permit_node_store(permit_node *n) { return n->store; }
const uint8_t *permit_node_secret(const permit_node *n) { return n->secret; }
permit_pinset *permit_node_pins(permit_node *n) { return n->pins; }
const char *permit_node_cert(const permit_node *n) { return n->cert; }

/* Loads the node secret, making it on first run. */
static int load_secret(permit_node *n, permit_err *err) {
  int rc = permit_store_get_fixed(n->store, PERMIT_CF_DEFAULT, "node/secret",
                                  11, n->secret, sizeof n->secret, err);
  if (rc != PERMIT_ENOTFOUND) return rc;
  if (permit_random(n->secret, sizeof n->secret) != 0)
    return permit_err_set(err, PERMIT_ECRYPTO, "no randomness");
  return permit_store_put(n->store, PERMIT_CF_DEFAULT, "node/secret", 11,
                          n->secret, sizeof n->secret, err);
}

/* The link secret is apart from the index secret: rotating it revokes
 * every link without changing a single index key. */
static int load_token_secret(permit_node *n, permit_err *err) {
  int rc = permit_store_get_fixed(n->store, PERMIT_CF_DEFAULT,
                                  "node/token-secret", 17, n->token_secret,
                                  sizeof n->token_secret, err);
  if (rc != PERMIT_ENOTFOUND) return rc;
  permit_err_clear(err);
  if (permit_random(n->token_secret, sizeof n->token_secret) != 0)
    return permit_err_set(err, PERMIT_ECRYPTO, "no randomness");
  return permit_store_put(n->store, PERMIT_CF_DEFAULT, "node/token-secret",
                          17, n->token_secret, sizeof n->token_secret, err);
}

/* The pair key with the reseller's name first (see permit_peer). */
static int derive_pair_key(permit_node *n, permit_peer *p, permit_err *err) {
  int self_issues = (n->roles & PERMIT_ROLE_ISSUER) &&
                    (p->roles & PERMIT_ROLE_AUDIENCE);
  int peer_issues = (p->roles & PERMIT_ROLE_ISSUER) &&
                    (n->roles & PERMIT_ROLE_AUDIENCE);
  const char *first, *second;
  if (self_issues && !peer_issues) {
    first = n->name, second = p->name;
  } else if (peer_issues && !self_issues) {
    first = p->name, second = n->name;
  } else if (strcmp(n->name, p->name) < 0) {
    /* Both or neither issue: an order both sides agree on. */
    first = n->name, second = p->name;
  } else {
    first = p->name, second = n->name;
  }
  int rc = permit_pair_key(n->id.seal, p->sealing_key, first, second,
                           p->pair_key);
  if (rc != 0)
    return permit_err_set(err, PERMIT_EVERIFY,
                          "no pair key with %s (bad sealing key)", p->name);
  return 0;
}

int permit_card_verify(const uint8_t *card, size_t len, permit_peer *peer,
                       permit_err *err) {
  memset(peer, 0, sizeof *peer);
  if (len == 0 || len > 4096)
    return permit_err_set(err, PERMIT_EINVAL, "card is %zu bytes", len);
  Permit__V1__NodeCard *env = permit__v1__node_card__unpack(NULL, len, card);
  if (env == NULL)
    return permit_err_set(err, PERMIT_EINVAL, "not a NodeCard");
  Permit__V1__NodeCardBody *b =
      permit__v1__node_card_body__unpack(NULL, env->body.len, env->body.data);
  int rc = 0;
  permit_err sub = {0};
  if (b == NULL) {
    rc = permit_err_set(err, PERMIT_EINVAL, "card body is not a NodeCardBody");
  } else if (b->identity_key.len != 32 || b->sealing_key.len != 32) {
    rc = permit_err_set(err, PERMIT_EINVAL, "card keys must be 32 bytes");
  } else if ((rc = permit_ed25519_key_check(b->identity_key.data)) != 1) {
    rc = rc < 0 ? permit_err_set(err, rc, "cannot check the card's identity "
                                 "key: no SHA-512 or BIGNUM from OpenSSL")
                : permit_err_set(err, PERMIT_EINVAL,
                                 "card identity key is not an Ed25519 key of "
                                 "prime order (a weak key anyone could sign "
                                 "for)");
  } else if (permit_name_validate(b->name, &sub) != 0) {
    rc = permit_err_set(err, PERMIT_EINVAL, "card name: %s", sub.msg);
  } else if (strlen(b->endpoint) == 0 ||
             strlen(b->endpoint) >= PERMIT_ENDPOINT_MAX ||
             strchr(b->endpoint, ':') == NULL) {
    rc = permit_err_set(err, PERMIT_EINVAL, "card endpoint is not host:port");
  } else {
    permit_trusted_key tk;
    permit_trusted_key_set(&tk, b->identity_key.data);
    ProtobufCMessage *m;
    const uint8_t *body;
    size_t bl;
    /* The card must be signed by the identity key it announces. */
    rc = permit_envelope_open(&permit__v1__node_card__descriptor,
                              PERMIT_CARD_CONTEXT, card, len, 4096, &tk, 1,
                              &m, &body, &bl, err);
    if (rc == 0) {
      protobuf_c_message_free_unpacked(m, NULL);
      snprintf(peer->name, sizeof peer->name, "%s", b->name);
      snprintf(peer->endpoint, sizeof peer->endpoint, "%s", b->endpoint);
      for (size_t i = 0; i < b->n_roles; i++)
        peer->roles |= b->roles[i] == PERMIT__V1__ROLE__ROLE_ISSUER
                           ? PERMIT_ROLE_ISSUER
                           : b->roles[i] == PERMIT__V1__ROLE__ROLE_AUDIENCE
                                 ? PERMIT_ROLE_AUDIENCE
                                 : 0;
      peer->identity = tk;
      memcpy(peer->sealing_key, b->sealing_key.data, 32);
      if (peer->roles == 0)
        rc = permit_err_set(err, PERMIT_EINVAL, "card names no role");
    }
  }
  if (b != NULL) permit__v1__node_card_body__free_unpacked(b, NULL);
  permit__v1__node_card__free_unpacked(env, NULL);
  return rc;
}

int permit_card_build(const permit_sign_key *sign, const permit_kx_key *seal,
                      const char *name, const char *endpoint, int roles,
                      uint8_t **out, size_t *len, permit_err *err) {
  Permit__V1__NodeCardBody b = PERMIT__V1__NODE_CARD_BODY__INIT;
  Permit__V1__Role r[2];
  b.name = (char *)name;
  b.endpoint = (char *)endpoint;
  if (roles & PERMIT_ROLE_ISSUER) r[b.n_roles++] = PERMIT__V1__ROLE__ROLE_ISSUER;
  if (roles & PERMIT_ROLE_AUDIENCE)
    r[b.n_roles++] = PERMIT__V1__ROLE__ROLE_AUDIENCE;
  b.roles = r;
  b.identity_key.data = (uint8_t *)permit_sign_key_public(sign);
  b.identity_key.len = 32;
  b.sealing_key.data = (uint8_t *)permit_kx_key_public(seal);
  b.sealing_key.len = 32;
  b.issued_at_ms = permit_now_ms();
  b.card_version = 1;
  uint8_t body[1024];
  size_t bl = permit__v1__node_card_body__get_packed_size(&b);
  if (bl > sizeof body)
    return permit_err_set(err, PERMIT_ETOOBIG, "card too large");
  permit__v1__node_card_body__pack(&b, body);
  return permit_envelope_sign(PERMIT_CARD_CONTEXT, body, bl, sign, out, len,
                              err);
}

int permit_node_card(permit_node *n, uint8_t **out, size_t *len,
                     permit_err *err) {
  return permit_card_build(n->id.sign, n->id.seal, n->name, n->endpoint,
                           n->roles, out, len, err);
}

static peer_slot *find_slot(permit_node *n, const char *name) {
  for (size_t i = 0; i < n->npeers; i++)
    if (strcmp(n->peers[i].peer.name, name) == 0) return &n->peers[i];
  return NULL;
}

/* Pins |p| and opens its logs; the peers lock is held for writing. */
static int install_peer(permit_node *n, permit_peer *p, permit_err *err) {
  if (n->npeers == PERMIT_MAX_PEERS)
    return permit_err_set(err, PERMIT_ETOOBIG, "too many peers");
  int rc = derive_pair_key(n, p, err);
  if (rc != 0) return rc;
  peer_slot slot = {.peer = *p};
  if ((rc = permit_log_open(n->store, n->name, p->name, &slot.outbound,
                            err)) != 0)
    return rc;
  if ((rc = permit_log_open(n->store, p->name, n->name, &slot.inbound,
                            err)) != 0) {
    permit_log_close(slot.outbound);
    return rc;
  }
  rc = permit_pinset_add(n->pins, p->identity.pub, p->name);
  if (rc != 0) {
    permit_log_close(slot.outbound);
    permit_log_close(slot.inbound);
    return permit_err_set(err, rc, "cannot pin %s's key", p->name);
  }
  peer_slot *grown = realloc(n->peers, (n->npeers + 1) * sizeof *grown);
  if (grown == NULL) {
    permit_log_close(slot.outbound);
    permit_log_close(slot.inbound);
    return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  }
  n->peers = grown;
  n->peers[n->npeers++] = slot;
  *p = slot.peer;
  return 0;
}

typedef struct load_ctx {
  permit_node *n;
  permit_err *err;
} load_ctx;

static int load_peer(void *arg, const uint8_t *k, size_t kl, const uint8_t *v,
                     size_t vl) {
  load_ctx *lc = arg;
  permit_peer p;
  permit_err why = {0};
  int rc = permit_card_verify(v, vl, &p, &why);
  if (rc != 0)
    /* Name the peer: a card pinned by an older version may fail a check
     * added since (a weak identity key), and the operator must find it. */
    return permit_err_set(lc->err, rc, "stored card of peer \"%.*s\": %s",
                          (int)(kl > 5 && kl - 5 < 256 ? kl - 5 : 0),
                          (const char *)k + 5, why.msg);
  return install_peer(lc->n, &p, lc->err);
}

int permit_node_open(const permit_node_config *cfg, permit_node **out,
                     permit_err *err) {
  permit_node *n = calloc(1, sizeof *n);
  if (n == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  n->lock_fd = -1;
  pthread_rwlock_init(&n->peers_lock, NULL);
  pthread_mutex_init(&n->lists_lock, NULL);
  pthread_mutex_init(&n->hooks_lock, NULL);
  snprintf(n->name, sizeof n->name, "%s", cfg->name);
  snprintf(n->endpoint, sizeof n->endpoint, "%s", cfg->endpoint);
  snprintf(n->consent_base, sizeof n->consent_base, "%s",
           cfg->consent_base_url ? cfg->consent_base_url : "");
  n->roles = cfg->roles;
  n->handover_ms = cfg->erased_handover_hours == 0
                       ? 24LL * 3600 * 1000
                       : cfg->erased_handover_hours < 0
                             ? 0
                             : (int64_t)cfg->erased_handover_hours * 3600 * 1000;
  int rc;
  char path[4200];
  size_t certlen;
  if ((rc = permit_name_validate(cfg->name, err)) != 0) goto fail;
  if ((rc = permit_identity_lock(cfg->data_dir, &n->lock_fd, err)) != 0)
    goto fail;
  if ((rc = permit_identity_open(cfg->data_dir, 1, &n->id, err)) != 0)
    goto fail;
  permit_logf(PERMIT_LEVEL_INFO, n->id.created ? "keys.created" : "keys.loaded",
              "%s identity key %s in %s/keys",
              n->id.created ? "created" : "loaded",
              permit_sign_key_id(n->id.sign), cfg->data_dir);
  snprintf(path, sizeof path, "%s/db", cfg->data_dir);
  /* Evidence is checked before it is served: every block is read once,
   * read-only, so a damaged file stops the start here (with RocksDB's
   * message naming it) and not one byte of the directory is changed. */
  char current[4300];
  snprintf(current, sizeof current, "%s/CURRENT", path);
  if (access(current, F_OK) == 0) {
    int64_t t0 = permit_now_ms();
    uint64_t keys = 0;
    permit_store *ro = NULL;
    rc = permit_store_open_read_only(path, &ro, err);
    if (rc == 0) rc = permit_store_verify(ro, &keys, err);
    permit_store_close(ro);
    if (rc != 0) goto fail;
    permit_logf(PERMIT_LEVEL_INFO, "store.verified",
                "%llu entries of %s read and their checksums verified in "
                "%lld ms",
                (unsigned long long)keys, path,
                (long long)(permit_now_ms() - t0));
  }
  if ((rc = permit_store_open(path, &n->store, err)) != 0) goto fail;
  if (cfg->min_free_disk_mb >= 0)
    permit_store_set_reserve(
        n->store,
        (uint64_t)(cfg->min_free_disk_mb ? cfg->min_free_disk_mb : 64) << 20);
  if ((rc = load_secret(n, err)) != 0) goto fail;
  if ((rc = load_token_secret(n, err)) != 0) goto fail;
  if ((rc = permit_tls_cert_create(n->id.sign, n->name, &n->cert, &certlen,
                                   err)) != 0)
    goto fail;
  n->pins = permit_pinset_new();
  if (n->pins == NULL) {
    rc = permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    goto fail;
  }
  load_ctx lc = {n, err};
  rc = permit_store_scan(n->store, PERMIT_CF_DEFAULT, "peer/", 5, NULL, 0,
                         load_peer, &lc, err);
  if (rc != 0) goto fail;
  *out = n;
  return 0;
fail:
  permit_node_close(n);
  return rc;
}

void permit_node_close(permit_node *n) {
  if (n == NULL) return;
  for (size_t i = 0; i < n->npeers; i++) {
    permit_log_close(n->peers[i].outbound);
    permit_log_close(n->peers[i].inbound);
  }
  free(n->peers);
  if (n->pins != NULL) permit_pinset_unref(n->pins);
  free(n->cert);
  permit_store_close(n->store);
  permit_identity_free(&n->id);
  if (n->lock_fd >= 0) permit_identity_unlock(n->lock_fd);
  pthread_rwlock_destroy(&n->peers_lock);
  pthread_mutex_destroy(&n->lists_lock);
  pthread_mutex_destroy(&n->hooks_lock);
  permit_wipe(n->secret, sizeof n->secret);
  permit_wipe(n->token_secret, sizeof n->token_secret);
  free(n);
}

int permit_node_peer_add(permit_node *n, const uint8_t *card, size_t len,
                         permit_peer *out, permit_err *err) {
  permit_peer p;
  int rc = permit_card_verify(card, len, &p, err);
  if (rc != 0) return rc;
  if (strcmp(p.name, n->name) == 0)
    return permit_err_set(err, PERMIT_EINVAL, "that is this node's own card");
  pthread_rwlock_wrlock(&n->peers_lock);
  peer_slot *have = find_slot(n, p.name);
  if (have != NULL) {
    int same = memcmp(have->peer.identity.pub, p.identity.pub, 32) == 0;
    if (same && out != NULL) *out = have->peer;
    pthread_rwlock_unlock(&n->peers_lock);
    if (!same)
      return permit_err_set(err, PERMIT_EEXIST,
                            "%s is pinned with another identity key (%s); "
                            "key rotation needs a card signed by the old key",
                            p.name, have->peer.identity.key_id);
    return 0;
  }
  char key[8 + PERMIT_NAME_MAX];
  int kl = snprintf(key, sizeof key, "peer/%s", p.name);
  rc = permit_store_put(n->store, PERMIT_CF_DEFAULT, key, (size_t)kl, card,
                        len, err);
  if (rc == 0) rc = install_peer(n, &p, err);
  pthread_rwlock_unlock(&n->peers_lock);
  if (rc == 0) {
    permit_logf(PERMIT_LEVEL_INFO, "peer.added", "pinned %s (key %s) at %s",
                p.name, p.identity.key_id, p.endpoint);
    if (out != NULL) *out = p;
  }
  return rc;
}

int permit_node_peer(permit_node *n, const char *name, permit_peer *out) {
  pthread_rwlock_rdlock(&n->peers_lock);
  peer_slot *s = find_slot(n, name);
  if (s != NULL) *out = s->peer;
  pthread_rwlock_unlock(&n->peers_lock);
  return s != NULL ? 0 : PERMIT_ENOTFOUND;
}

size_t permit_node_peers(permit_node *n, permit_peer *out, size_t cap) {
  pthread_rwlock_rdlock(&n->peers_lock);
  size_t count = n->npeers;
  for (size_t i = 0; i < count && i < cap; i++) out[i] = n->peers[i].peer;
  pthread_rwlock_unlock(&n->peers_lock);
  return count;
}

/* Logs are never closed before the node, so the pointer stays valid. */
permit_log *permit_node_outbound(permit_node *n, const char *peer) {
  pthread_rwlock_rdlock(&n->peers_lock);
  peer_slot *s = find_slot(n, peer);
  permit_log *log = s != NULL ? s->outbound : NULL;
  pthread_rwlock_unlock(&n->peers_lock);
  return log;
}

permit_log *permit_node_inbound(permit_node *n, const char *peer) {
  pthread_rwlock_rdlock(&n->peers_lock);
  peer_slot *s = find_slot(n, peer);
  permit_log *log = s != NULL ? s->inbound : NULL;
  pthread_rwlock_unlock(&n->peers_lock);
  return log;
}

void permit_node_on_grow(permit_node *n, permit_node_grow_fn fn, void *arg) {
  pthread_mutex_lock(&n->hooks_lock);
  n->grow_fn = fn;
  n->grow_arg = arg;
  pthread_mutex_unlock(&n->hooks_lock);
}

/* The hook runs under the lock, so unregistering waits for a call in
 * progress: after permit_node_on_grow(n, NULL, NULL) returns, the old
 * callback is not running and will not run. */
void permit_node_grew(permit_node *n, const char *peer) {
  pthread_mutex_lock(&n->hooks_lock);
  if (n->grow_fn != NULL) n->grow_fn(n->grow_arg, peer);
  pthread_mutex_unlock(&n->hooks_lock);
}

void permit_node_on_change(permit_node *n, permit_node_change_fn fn,
                           void *arg) {
  pthread_mutex_lock(&n->hooks_lock);
  n->change_fn = fn;
  n->change_arg = arg;
  pthread_mutex_unlock(&n->hooks_lock);
}

void permit_node_changed(permit_node *n) {
  pthread_mutex_lock(&n->hooks_lock);
  if (n->change_fn != NULL) n->change_fn(n->change_arg);
  pthread_mutex_unlock(&n->hooks_lock);
}

/* ---- lists ---- */

/* A string field of an initialised message points at protobuf-c's
 * static empty string until something of ours is put there. */
static void free_field(char *s) {
  if (s != protobuf_c_empty_string) free(s);
}

void permit_catalog_list_clear(Permit__V1__CatalogList *l) {
  free_field(l->list_id);
  free_field(l->title);
  free_field(l->notice_text);
  free(l->notice_sha256.data);
  permit__v1__catalog_list__init(l);
}

static int list_get(permit_node *n, const char *list_id,
                    Permit__V1__CatalogList **out, permit_err *err) {
  char key[8 + PERMIT_LIST_ID_MAX];
  int kl = snprintf(key, sizeof key, "list/%s", list_id);
  uint8_t *v;
  size_t vl;
  int rc = permit_store_get(n->store, PERMIT_CF_DEFAULT, key, (size_t)kl, &v,
                            &vl, err);
  if (rc != 0) return rc;
  *out = permit__v1__catalog_list__unpack(NULL, vl, v);
  free(v);
  if (*out == NULL)
    return permit_err_set(err, PERMIT_ECORRUPT, "stored list %s is damaged",
                          list_id);
  return 0;
}

int permit_node_list_title(permit_node *n, const char *list_id, char *out,
                           size_t cap) {
  Permit__V1__CatalogList *l = NULL;
  if (cap == 0 || permit_list_id_validate(list_id, NULL) != 0 ||
      list_get(n, list_id, &l, NULL) != 0)
    return PERMIT_ENOTFOUND;
  snprintf(out, cap, "%s", l->title[0] ? l->title : list_id);
  permit__v1__catalog_list__free_unpacked(l, NULL);
  return 0;
}

/* Only spaces, tabs and line breaks (what a buyer would see as nothing). */
static int blank(const char *s) {
  for (; *s != '\0'; s++)
    if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return 0;
  return 1;
}

int permit_node_define_list(permit_node *n, const char *list_id,
                            const char *title, const char *notice_text,
                            int *changed, Permit__V1__CatalogList *out,
                            permit_err *err) {
  int rc = permit_list_id_validate(list_id, err);
  if (rc != 0) return rc;
  /* The id is a path segment of the list's unsubscribe links: "." or
   * "..", which clients fold away, or any id that does not start with a
   * letter or digit, is not taken for a new list. */
  if (!((list_id[0] >= 'a' && list_id[0] <= 'z') ||
        (list_id[0] >= '0' && list_id[0] <= '9')))
    return permit_err_set(err, PERMIT_EINVAL,
                          "list id \"%.64s\" must start with a-z or 0-9",
                          list_id);
  size_t tl = strlen(title), nl = strlen(notice_text);
  if (tl == 0 || tl > 200)
    return permit_err_set(err, PERMIT_EINVAL,
                          "list title must be 1 to 200 bytes");
  if (nl == 0 || nl > 16384)
    return permit_err_set(err, PERMIT_EINVAL,
                          "notice text must be 1 to 16384 bytes");
  if (blank(title) || blank(notice_text))
    return permit_err_set(err, PERMIT_EINVAL,
                          "list title and notice text must not be blank");
  uint8_t sha[32];
  permit_iov iov = {notice_text, nl};
  permit_sha256(&iov, 1, sha);
  pthread_mutex_lock(&n->lists_lock);
  Permit__V1__CatalogList *cur = NULL;
  rc = list_get(n, list_id, &cur, err);
  if (rc != 0 && rc != PERMIT_ENOTFOUND) {
    pthread_mutex_unlock(&n->lists_lock);
    return rc;
  }
  permit_err_clear(err);
  uint32_t version = cur != NULL ? cur->notice_version : 0;
  int text_changed = cur == NULL || cur->notice_sha256.len != 32 ||
                     memcmp(cur->notice_sha256.data, sha, 32) != 0;
  int title_changed = cur == NULL || strcmp(cur->title, title) != 0;
  if (text_changed) version++;
  Permit__V1__CatalogList l = PERMIT__V1__CATALOG_LIST__INIT;
  l.list_id = (char *)list_id;
  l.title = (char *)title;
  l.notice_version = version;
  l.notice_text = (char *)notice_text;
  l.notice_sha256.data = sha;
  l.notice_sha256.len = 32;
  rc = 0;
  if (text_changed || title_changed) {
    permit_batch *b = permit_batch_new(n->store);
    size_t pl = permit__v1__catalog_list__get_packed_size(&l);
    uint8_t *buf = malloc(pl ? pl : 1);
    if (b == NULL || buf == NULL) {
      rc = permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    } else {
      permit__v1__catalog_list__pack(&l, buf);
      char key[16 + PERMIT_LIST_ID_MAX];
      int kl = snprintf(key, sizeof key, "list/%s", list_id);
      permit_batch_put(b, PERMIT_CF_DEFAULT, key, (size_t)kl, buf, pl);
      if (text_changed) {
        /* Every version's text is kept: proofs refer to old ones. */
        kl = snprintf(key, sizeof key, "notice/%s/", list_id);
        uint8_t vb[4] = {(uint8_t)(version >> 24), (uint8_t)(version >> 16),
                         (uint8_t)(version >> 8), (uint8_t)version};
        memcpy(key + kl, vb, 4);
        permit_batch_put(b, PERMIT_CF_DEFAULT, key, (size_t)kl + 4,
                         notice_text, nl);
      }
      rc = permit_store_write(n->store, b, 1, err);
    }
    free(buf);
    permit_batch_free(b);
  }
  pthread_mutex_unlock(&n->lists_lock);
  if (cur != NULL) permit__v1__catalog_list__free_unpacked(cur, NULL);
  if (rc != 0) return rc;
  if (changed != NULL) *changed = text_changed;
  if (out != NULL) {
    permit__v1__catalog_list__init(out);
    out->list_id = strdup(list_id);
    out->title = strdup(title);
    out->notice_version = version;
    out->notice_text = strdup(notice_text);
    out->notice_sha256.data = malloc(32);
    if (out->notice_sha256.data != NULL) {
      memcpy(out->notice_sha256.data, sha, 32);
      out->notice_sha256.len = 32;
    }
  }
  return 0;
}

typedef struct catalog_ctx {
  Permit__V1__CatalogList **lists;
  size_t n, cap;
} catalog_ctx;

static int catalog_one(void *arg, const uint8_t *k, size_t kl,
                       const uint8_t *v, size_t vl) {
  catalog_ctx *cc = arg;
  (void)k, (void)kl;
  if (cc->n == cc->cap) {
    size_t cap = cc->cap ? cc->cap * 2 : 8;
    Permit__V1__CatalogList **g = realloc(cc->lists, cap * sizeof *g);
    if (g == NULL) return PERMIT_ENOMEM;
    cc->lists = g;
    cc->cap = cap;
  }
  Permit__V1__CatalogList *l = permit__v1__catalog_list__unpack(NULL, vl, v);
  if (l == NULL) return PERMIT_ECORRUPT;
  cc->lists[cc->n++] = l;
  return 0;
}

int permit_node_catalog(permit_node *n, uint8_t **out, size_t *len,
                        permit_err *err) {
  catalog_ctx cc = {0};
  int rc = permit_store_scan(n->store, PERMIT_CF_DEFAULT, "list/", 5, NULL, 0,
                             catalog_one, &cc, err);
  if (rc == 0) {
    Permit__V1__Catalog c = PERMIT__V1__CATALOG__INIT;
    c.audience = n->name;
    c.issued_at_ms = permit_now_ms();
    c.lists = cc.lists;
    c.n_lists = cc.n;
    size_t bl = permit__v1__catalog__get_packed_size(&c);
    uint8_t *body = malloc(bl ? bl : 1);
    if (body == NULL) {
      rc = permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    } else {
      permit__v1__catalog__pack(&c, body);
      rc = permit_envelope_sign(PERMIT_CATALOG_CONTEXT, body, bl, n->id.sign,
                                out, len, err);
      free(body);
    }
  } else if (rc > 0 || rc == PERMIT_ECORRUPT) {
    rc = permit_err_set(err, PERMIT_ECORRUPT, "a stored list is damaged");
  }
  for (size_t i = 0; i < cc.n; i++)
    permit__v1__catalog_list__free_unpacked(cc.lists[i], NULL);
  free(cc.lists);
  return rc;
}

int permit_catalog_verify(const permit_peer *venue, const uint8_t *in,
                          size_t len, Permit__V1__Catalog **out,
                          permit_err *err) {
  ProtobufCMessage *env;
  const uint8_t *body;
  size_t bl;
  *out = NULL;
  int rc = permit_envelope_open(&permit__v1__signed_catalog__descriptor,
                                PERMIT_CATALOG_CONTEXT, in, len, 1 << 20,
                                &venue->identity, 1, &env, &body, &bl, err);
  if (rc != 0) return rc;
  Permit__V1__Catalog *c = permit__v1__catalog__unpack(NULL, bl, body);
  protobuf_c_message_free_unpacked(env, NULL);
  if (c == NULL)
    return permit_err_set(err, PERMIT_EINVAL, "catalog body is not a Catalog");
  if (strcmp(c->audience, venue->name) != 0) {
    /* The message quotes c->audience: write it before c is freed. */
    rc = permit_err_set(err, PERMIT_EPERM, "catalog names %s, not %s",
                        c->audience, venue->name);
    permit__v1__catalog__free_unpacked(c, NULL);
    return rc;
  }
  for (size_t i = 0; i < c->n_lists; i++) {
    Permit__V1__CatalogList *l = c->lists[i];
    size_t tl = strlen(l->title), nl = strlen(l->notice_text);
    uint8_t sha[32];
    permit_iov iov = {l->notice_text, nl};
    /* The hash is what every opt-in will carry as evidence of the text
     * shown: it must be the hash of that very text. */
    if (permit_list_id_validate(l->list_id, NULL) != 0 ||
        l->notice_version == 0 || l->notice_sha256.len != 32 || tl == 0 ||
        tl > 200 || nl == 0 || nl > 16384 ||
        !permit_contacts_text_ok(l->title, tl, 0) ||
        !permit_contacts_text_ok(l->notice_text, nl, 1) ||
        permit_sha256(&iov, 1, sha) != 0 ||
        memcmp(sha, l->notice_sha256.data, 32) != 0) {
      rc = permit_err_set(err, PERMIT_EINVAL,
                          "catalog list %zu is malformed (id, version, a "
                          "title or text that is empty, too long or not "
                          "UTF-8, or a notice hash that is not the text's)",
                          i);
      permit__v1__catalog__free_unpacked(c, NULL);
      return rc;
    }
  }
  *out = c;
  return 0;
}

/* "notice/<venue>/<list_id>/" || BE32(version): the text of every notice
 * version seen, for the consent centre (a buyer agreed to that text, not
 * to today's). */
static size_t notice_key(const char *venue, const char *list_id,
                         uint32_t version, char *out, size_t cap) {
  int kl = snprintf(out, cap, "notice/%s/%s/", venue, list_id);
  if (kl < 0 || (size_t)kl + 4 > cap) return 0;
  out[kl] = (char)(version >> 24);
  out[kl + 1] = (char)(version >> 16);
  out[kl + 2] = (char)(version >> 8);
  out[kl + 3] = (char)version;
  return (size_t)kl + 4;
}

int permit_node_catalog_store(permit_node *n, const char *venue,
                              const uint8_t *signed_catalog, size_t len,
                              permit_err *err) {
  char key[16 + 2 * PERMIT_NAME_MAX];
  int kl = snprintf(key, sizeof key, "catalog/%s", venue);
  permit_peer p;
  Permit__V1__Catalog *cat = NULL;
  if (permit_node_peer(n, venue, &p) != 0)
    return permit_err_set(err, PERMIT_ENOTFOUND, "%s is not a known venue",
                          venue);
  int rc = permit_catalog_verify(&p, signed_catalog, len, &cat, err);
  if (rc != 0) return rc;
  permit_batch *b = permit_batch_new(n->store);
  if (b == NULL) {
    permit__v1__catalog__free_unpacked(cat, NULL);
    return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  }
  permit_batch_put(b, PERMIT_CF_DEFAULT, key, (size_t)kl, signed_catalog,
                   len);
  for (size_t i = 0; i < cat->n_lists; i++) {
    const Permit__V1__CatalogList *l = cat->lists[i];
    char nk[32 + PERMIT_NAME_MAX + PERMIT_LIST_ID_MAX];
    size_t nkl = notice_key(venue, l->list_id, l->notice_version, nk,
                            sizeof nk);
    if (nkl > 0)
      permit_batch_put(b, PERMIT_CF_DEFAULT, nk, nkl, l->notice_text,
                       strlen(l->notice_text));
  }
  rc = permit_store_write(n->store, b, 0, err);
  permit_batch_free(b);
  permit__v1__catalog__free_unpacked(cat, NULL);
  return rc;
}

int permit_node_notice_text(permit_node *n, const char *venue,
                            const char *list_id, uint32_t version,
                            char **text, permit_err *err) {
  char nk[32 + PERMIT_NAME_MAX + PERMIT_LIST_ID_MAX];
  size_t nkl = notice_key(venue, list_id, version, nk, sizeof nk);
  if (nkl == 0) return permit_err_set(err, PERMIT_EINVAL, "name too long");
  uint8_t *v;
  size_t vl;
  int rc = permit_store_get(n->store, PERMIT_CF_DEFAULT, nk, nkl, &v, &vl,
                            err);
  if (rc != 0) return rc;
  *text = malloc(vl + 1);
  if (*text == NULL) {
    free(v);
    return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  }
  memcpy(*text, v, vl);
  (*text)[vl] = '\0';
  free(v);
  return 0;
}

int permit_node_exchanges(permit_node *n, const permit_peer *p) {
  return ((n->roles & PERMIT_ROLE_ISSUER) && (p->roles & PERMIT_ROLE_AUDIENCE)) ||
         ((n->roles & PERMIT_ROLE_AUDIENCE) && (p->roles & PERMIT_ROLE_ISSUER));
}

void permit_node_token_secret(permit_node *n, uint8_t out[32]) {
  pthread_mutex_lock(&n->lists_lock);
  memcpy(out, n->token_secret, 32);
  pthread_mutex_unlock(&n->lists_lock);
}

int permit_node_token_rotate(permit_node *n, permit_err *err) {
  uint8_t fresh[32];
  if (permit_random(fresh, sizeof fresh) != 0)
    return permit_err_set(err, PERMIT_ECRYPTO, "no randomness");
  pthread_mutex_lock(&n->lists_lock);
  int rc = permit_store_put(n->store, PERMIT_CF_DEFAULT, "node/token-secret",
                            17, fresh, sizeof fresh, err);
  if (rc == 0) memcpy(n->token_secret, fresh, sizeof fresh);
  pthread_mutex_unlock(&n->lists_lock);
  permit_wipe(fresh, sizeof fresh);
  return rc;
}

int permit_node_catalog_get(permit_node *n, const char *venue,
                            Permit__V1__Catalog **out, permit_err *err) {
  permit_peer p;
  if (permit_node_peer(n, venue, &p) != 0)
    return permit_err_set(err, PERMIT_ENOTFOUND, "%s is not a known venue",
                          venue);
  char key[16 + PERMIT_NAME_MAX];
  int kl = snprintf(key, sizeof key, "catalog/%s", venue);
  uint8_t *v;
  size_t vl;
  int rc = permit_store_get(n->store, PERMIT_CF_DEFAULT, key, (size_t)kl, &v,
                            &vl, err);
  if (rc == PERMIT_ENOTFOUND)
    return permit_err_set(err, PERMIT_ENOTFOUND,
                          "no catalog from %s yet (is it reachable?)", venue);
  if (rc != 0) return rc;
  /* Verified again: what is stored is evidence, not trusted blindly. */
  rc = permit_catalog_verify(&p, v, vl, out, err);
  free(v);
  return rc;
}
