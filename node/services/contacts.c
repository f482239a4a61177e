/*
 * contacts.c - the venue's contacts, encrypted at rest per subject, and
 * their change feed (see permit/contacts.h for the layout).
 */
#include "permit/contacts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/crypto.h"
#include "permit/logging.h"
#include "permit/record.h"
#include "permit/util.h"
#include "permit/v1/venue_store.pb-c.h"

#define SUBJECT_KEY_LEN 32
#define SKEY_KEY_MAX (2 + PERMIT_NAME_MAX + 1 + PERMIT_SUBJECT_LEN)
#define INDEX_KEY_MAX (SKEY_KEY_MAX + PERMIT_LIST_ID_MAX)
#define FEED_KEY_LEN (5 + 8)
#define FEED_HEAD "feed/head"
#define FEED_HEAD_LEN (sizeof FEED_HEAD - 1)

typedef Permit__Internal__StoredContact stored_contact;
typedef Permit__Internal__ContactFeedEntry feed_entry;

/* ---- validation ---- */

/* Well-formed UTF-8 (RFC 3629): no overlong forms, surrogates, code
 * points over U+10FFFF, truncated sequences or stray continuations. */
static int utf8_ok(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    size_t more;
    unsigned cp, least;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) {
      more = 1, cp = c & 0x1f, least = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      more = 2, cp = c & 0x0f, least = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      more = 3, cp = c & 0x07, least = 0x10000;
    } else {
      return 0;
    }
    if (len - i - 1 < more) return 0;
    for (size_t j = 1; j <= more; j++) {
      if ((s[i + j] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (s[i + j] & 0x3f);
    }
    if (cp < least || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += more + 1;
  }
  return 1;
}

int permit_contacts_text_ok(const char *s, size_t len, int multiline) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c < 0x20 || c == 0x7f) &&
        !(multiline && (c == '\t' || c == '\n' || c == '\r')))
      return 0;
  }
  return utf8_ok((const unsigned char *)s, len);
}

static int field_ok(const char *what, const char *s, size_t max, int required,
                    permit_err *err) {
  size_t len = s != NULL ? strlen(s) : 0;
  if (len == 0)
    return required ? permit_err_set(err, PERMIT_EINVAL, "contact %s is empty",
                                     what)
                    : 0;
  if (len > max)
    return permit_err_set(err, PERMIT_EINVAL,
                          "contact %s is longer than %zu bytes", what, max);
  if (!permit_contacts_text_ok(s, len, 0))
    return permit_err_set(err, PERMIT_EINVAL,
                          "contact %s is not UTF-8 without control characters",
                          what);
  return 0;
}

int permit_contact_validate(const Permit__V1__Contact *c, permit_err *err) {
  int rc;
  if ((rc = field_ok("email", c->email, PERMIT_CONTACT_EMAIL_MAX, 1, err)) ||
      (rc = field_ok("given_name", c->given_name, PERMIT_CONTACT_NAME_MAX, 0,
                     err)) ||
      (rc = field_ok("family_name", c->family_name, PERMIT_CONTACT_NAME_MAX,
                     0, err)) ||
      (rc = field_ok("locale", c->locale, PERMIT_CONTACT_LOCALE_MAX, 0, err)))
    return rc;
  return 0;
}

/* ---- keys ---- */

/* "c/<list>/<issuer>/" || subject; 0 when the names do not fit. */
static size_t row_key(const char *list_id, const char *issuer,
                      const uint8_t *subject, uint8_t out[PERMIT_CONTACT_KEY_MAX]) {
  int n = snprintf((char *)out, PERMIT_CONTACT_KEY_MAX, "c/%s/%s/", list_id,
                   issuer);
  if (n < 0 || (size_t)n + PERMIT_SUBJECT_LEN > PERMIT_CONTACT_KEY_MAX)
    return 0;
  memcpy(out + n, subject, PERMIT_SUBJECT_LEN);
  return (size_t)n + PERMIT_SUBJECT_LEN;
}

/* "<tag>/<issuer>/" || subject, for the subject key (k) and index (s). */
static size_t subject_key_name(char tag, const char *issuer,
                               const uint8_t *subject, uint8_t out[SKEY_KEY_MAX]) {
  int n = snprintf((char *)out, SKEY_KEY_MAX, "%c/%s/", tag, issuer);
  if (n < 0 || (size_t)n + PERMIT_SUBJECT_LEN > SKEY_KEY_MAX) return 0;
  memcpy(out + n, subject, PERMIT_SUBJECT_LEN);
  return (size_t)n + PERMIT_SUBJECT_LEN;
}

static void feed_key(uint64_t change, uint8_t out[FEED_KEY_LEN]) {
  memcpy(out, "feed/", 5);
  permit_put_u64be(out + 5, change);
}

int permit_contacts_head(permit_store *s, uint64_t *head, permit_err *err) {
  uint8_t v[8];
  int rc = permit_store_get_fixed(s, PERMIT_CF_CONTACTS, FEED_HEAD,
                                  FEED_HEAD_LEN, v, sizeof v, err);
  if (rc == PERMIT_ENOTFOUND) {
    permit_err_clear(err);
    *head = 0;
    return 0;
  }
  if (rc != 0) return rc;
  *head = permit_get_u64be(v);
  return 0;
}

/* ---- sealing at rest ---- */

/* nonce || ChaCha20-Poly1305(key, nonce, aad = row key, Contact). */
static int seal_contact(const uint8_t key[SUBJECT_KEY_LEN], const uint8_t *rk,
                        size_t rkl, const Permit__V1__Contact *c,
                        uint8_t **out, size_t *outlen) {
  size_t pl = permit__v1__contact__get_packed_size(c);
  uint8_t *pt = malloc(pl ? pl : 1);
  uint8_t *sealed = malloc(PERMIT_AEAD_NONCE_LEN + pl + PERMIT_AEAD_TAG_LEN);
  int rc = PERMIT_ENOMEM;
  if (pt != NULL && sealed != NULL) {
    permit__v1__contact__pack(c, pt);
    rc = permit_random(sealed, PERMIT_AEAD_NONCE_LEN) != 0 ? PERMIT_ECRYPTO : 0;
    if (rc == 0)
      rc = permit_aead_seal(PERMIT_AEAD_CHACHA20_POLY1305, key,
                            SUBJECT_KEY_LEN, sealed, PERMIT_AEAD_NONCE_LEN, rk,
                            rkl, pt, pl, sealed + PERMIT_AEAD_NONCE_LEN);
  }
  if (pt != NULL) {
    permit_wipe(pt, pl);
    free(pt);
  }
  if (rc != 0) {
    free(sealed);
    return rc;
  }
  *out = sealed;
  *outlen = PERMIT_AEAD_NONCE_LEN + pl + PERMIT_AEAD_TAG_LEN;
  return 0;
}

/* Wipes the personal data of an unpacked Contact, then frees it. */
static void contact_free(Permit__V1__Contact *c) {
  if (c == NULL) return;
  char *fields[] = {c->email, c->given_name, c->family_name, c->locale};
  for (size_t i = 0; i < 4; i++)
    if (fields[i] != NULL) permit_wipe(fields[i], strlen(fields[i]));
  permit__v1__contact__free_unpacked(c, NULL);
}

static int open_contact(const uint8_t key[SUBJECT_KEY_LEN], const uint8_t *rk,
                        size_t rkl, const ProtobufCBinaryData *sealed,
                        Permit__V1__Contact **out) {
  if (sealed->len <= PERMIT_AEAD_NONCE_LEN + PERMIT_AEAD_TAG_LEN)
    return PERMIT_ECORRUPT;
  size_t ctl = sealed->len - PERMIT_AEAD_NONCE_LEN;
  uint8_t *pt = malloc(ctl - PERMIT_AEAD_TAG_LEN);
  if (pt == NULL) return PERMIT_ENOMEM;
  int rc = permit_aead_open(PERMIT_AEAD_CHACHA20_POLY1305, key, SUBJECT_KEY_LEN,
                            sealed->data, PERMIT_AEAD_NONCE_LEN, rk, rkl,
                            sealed->data + PERMIT_AEAD_NONCE_LEN, ctl, pt);
  if (rc == 0) {
    *out = permit__v1__contact__unpack(NULL, ctl - PERMIT_AEAD_TAG_LEN, pt);
    if (*out == NULL) rc = PERMIT_ECORRUPT;
  }
  permit_wipe(pt, ctl - PERMIT_AEAD_TAG_LEN);
  free(pt);
  return rc;
}

/* ---- transactions ---- */

typedef struct staged {
  uint8_t *key, *val;
  size_t klen, vlen;
  int del;
} staged;

struct permit_contacts_txn {
  permit_store *s;
  uint64_t head;    /* the feed head once the staged changes are written */
  uint64_t changes; /* staged changes */
  staged *ops;
  size_t n, cap;
  /* Open addressing over the staged keys: 1 + the index of the latest
   * op on each key, 0 for an empty slot; a power of two, at most half
   * full.  Reads find their own writes without a scan of the batch. */
  uint32_t *slots;
  size_t nslots;
  uint64_t *prunes; /* entries of the issuer's log to prune */
  size_t nprunes, prune_cap;
  int no_handover;  /* erasures shred at once, no farewell */
};

void permit_contacts_txn_handover(permit_contacts_txn *t, int on) {
  t->no_handover = !on;
}

int permit_contacts_txn_new(permit_store *s, permit_contacts_txn **out,
                            permit_err *err) {
  permit_contacts_txn *t = calloc(1, sizeof *t);
  if (t == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  t->s = s;
  int rc = permit_contacts_head(s, &t->head, err);
  if (rc != 0) {
    free(t);
    return rc;
  }
  *out = t;
  return 0;
}

void permit_contacts_txn_free(permit_contacts_txn *t) {
  if (t == NULL) return;
  for (size_t i = 0; i < t->n; i++) {
    /* Subject keys are among the values. */
    if (t->ops[i].val != NULL) permit_wipe(t->ops[i].val, t->ops[i].vlen);
    free(t->ops[i].key);
    free(t->ops[i].val);
  }
  free(t->ops);
  free(t->slots);
  free(t->prunes);
  free(t);
}

size_t permit_contacts_txn_prunes(const permit_contacts_txn *t,
                                  const uint64_t **seqs) {
  *seqs = t->prunes;
  return t->nprunes;
}

static int prune_add(permit_contacts_txn *t, uint64_t seq) {
  for (size_t i = 0; i < t->nprunes; i++)
    if (t->prunes[i] == seq) return 0;
  if (t->nprunes == t->prune_cap) {
    size_t cap = t->prune_cap ? t->prune_cap * 2 : 8;
    uint64_t *g = realloc(t->prunes, cap * sizeof *g);
    if (g == NULL) return PERMIT_ENOMEM;
    t->prunes = g;
    t->prune_cap = cap;
  }
  t->prunes[t->nprunes++] = seq;
  return 0;
}

uint64_t permit_contacts_txn_changes(const permit_contacts_txn *t) {
  return t->changes;
}

/* FNV-1a over |key|. */
static uint64_t key_hash(const uint8_t *key, size_t klen) {
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < klen; i++) h = (h ^ key[i]) * 0x100000001b3u;
  return h;
}

/* The slot holding |key|, or the empty slot where it would go. */
static size_t slot_find(const permit_contacts_txn *t, const uint8_t *key,
                        size_t klen) {
  size_t mask = t->nslots - 1, i = (size_t)key_hash(key, klen) & mask;
  for (;; i = (i + 1) & mask) {
    uint32_t s = t->slots[i];
    if (s == 0) return i;
    const staged *op = &t->ops[s - 1];
    if (op->klen == klen && memcmp(op->key, key, klen) == 0) return i;
  }
}

/* Points the slot of ops[i]'s key at it; the table has room. */
static void slot_set(permit_contacts_txn *t, size_t i) {
  t->slots[slot_find(t, t->ops[i].key, t->ops[i].klen)] = (uint32_t)(i + 1);
}

/* Makes room in the table for one more key. */
static int slots_reserve(permit_contacts_txn *t) {
  if ((t->n + 1) * 2 <= t->nslots) return 0;
  if (t->n >= UINT32_MAX / 4) return PERMIT_ENOMEM;
  size_t nslots = t->nslots ? t->nslots * 2 : 256;
  uint32_t *g = calloc(nslots, sizeof *g);
  if (g == NULL) return PERMIT_ENOMEM;
  free(t->slots);
  t->slots = g;
  t->nslots = nslots;
  for (size_t i = 0; i < t->n; i++) slot_set(t, i); /* later ones win */
  return 0;
}

static int stage(permit_contacts_txn *t, const uint8_t *key, size_t klen,
                 const uint8_t *val, size_t vlen, int del) {
  if (slots_reserve(t) != 0) return PERMIT_ENOMEM;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    staged *g = realloc(t->ops, cap * sizeof *g);
    if (g == NULL) return PERMIT_ENOMEM;
    t->ops = g;
    t->cap = cap;
  }
  staged *op = &t->ops[t->n];
  op->key = malloc(klen);
  op->val = del ? NULL : malloc(vlen ? vlen : 1);
  if (op->key == NULL || (!del && op->val == NULL)) {
    free(op->key);
    free(op->val);
    return PERMIT_ENOMEM;
  }
  memcpy(op->key, key, klen);
  op->klen = klen;
  if (!del && vlen > 0) memcpy(op->val, val, vlen);
  op->vlen = del ? 0 : vlen;
  op->del = del;
  slot_set(t, t->n++);
  return 0;
}

/*
 * Reads |key| as this transaction sees it: its own latest write, else the
 * store.  |*val| is malloc'd (caller frees).  PERMIT_ENOTFOUND when absent
 * or deleted.
 */
static int txn_get(permit_contacts_txn *t, const uint8_t *key, size_t klen,
                   uint8_t **val, size_t *vlen, permit_err *err) {
  uint32_t slot = t->nslots > 0 ? t->slots[slot_find(t, key, klen)] : 0;
  if (slot != 0) {
    staged *op = &t->ops[slot - 1];
    if (op->del) return PERMIT_ENOTFOUND;
    *val = malloc(op->vlen ? op->vlen : 1);
    if (*val == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    memcpy(*val, op->val, op->vlen);
    *vlen = op->vlen;
    return 0;
  }
  int rc = permit_store_get(t->s, PERMIT_CF_CONTACTS, key, klen, val, vlen,
                            err);
  if (rc == PERMIT_ENOTFOUND) permit_err_clear(err);
  return rc;
}

/* The subject's key, made (and staged) when it has none and |create|. */
static int subject_key(permit_contacts_txn *t, const char *issuer,
                       const uint8_t *subject, int create,
                       uint8_t out[SUBJECT_KEY_LEN], permit_err *err) {
  uint8_t k[SKEY_KEY_MAX];
  size_t kl = subject_key_name('k', issuer, subject, k);
  if (kl == 0) return permit_err_set(err, PERMIT_EINVAL, "issuer name too long");
  uint8_t *v;
  size_t vl;
  int rc = txn_get(t, k, kl, &v, &vl, err);
  if (rc == 0) {
    if (vl != SUBJECT_KEY_LEN) rc = PERMIT_ECORRUPT;
    else memcpy(out, v, SUBJECT_KEY_LEN);
    permit_wipe(v, vl);
    free(v);
    return rc == 0 ? 0
                   : permit_err_set(err, rc, "a subject key of %s is damaged",
                                    issuer);
  }
  if (rc != PERMIT_ENOTFOUND || !create) return rc;
  if (permit_random(out, SUBJECT_KEY_LEN) != 0)
    return permit_err_set(err, PERMIT_ECRYPTO, "no randomness");
  if (stage(t, k, kl, out, SUBJECT_KEY_LEN, 0) != 0)
    return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  return 0;
}

static int stage_msg(permit_contacts_txn *t, const uint8_t *key, size_t klen,
                     const ProtobufCMessage *m, permit_err *err) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  protobuf_c_message_pack(m, buf);
  int rc = stage(t, key, klen, buf, n, 0);
  free(buf);
  return rc == 0 ? 0 : permit_err_set(err, rc, "out of memory");
}

/* Adds a change to the feed; the row's key names the contact.  An
 * "erased" change may carry the contact sealed for its one delivery. */
static int feed_add_farewell(permit_contacts_txn *t, const char *kind,
                             const uint8_t *rk, size_t rkl,
                             const ProtobufCBinaryData *record_id,
                             const char *issuer, const char *list_id,
                             uint64_t seq, const uint8_t *farewell,
                             size_t fl, permit_err *err) {
  feed_entry f = PERMIT__INTERNAL__CONTACT_FEED_ENTRY__INIT;
  f.farewell.data = (uint8_t *)farewell;
  f.farewell.len = fl;
  f.kind = (char *)kind;
  f.contact_key.data = (uint8_t *)rk;
  f.contact_key.len = rkl;
  f.record_id = *record_id;
  f.issuer = (char *)issuer;
  f.list_id = (char *)list_id;
  f.seq = seq;
  f.at_ms = permit_now_ms();
  uint8_t k[FEED_KEY_LEN];
  feed_key(t->head + 1, k);
  int rc = stage_msg(t, k, sizeof k, &f.base, err);
  if (rc == 0) {
    t->head++;
    t->changes++;
  }
  return rc;
}

static int feed_add(permit_contacts_txn *t, const char *kind,
                    const uint8_t *rk, size_t rkl,
                    const ProtobufCBinaryData *record_id, const char *issuer,
                    const char *list_id, uint64_t seq, permit_err *err) {
  return feed_add_farewell(t, kind, rk, rkl, record_id, issuer, list_id, seq,
                           NULL, 0, err);
}

/* The row of |rec|'s subject and list, decoded; PERMIT_ENOTFOUND if none. */
static int row_get(permit_contacts_txn *t, const Permit__V1__Record *rec,
                   uint8_t rk[PERMIT_CONTACT_KEY_MAX], size_t *rkl,
                   stored_contact **out, permit_err *err) {
  *out = NULL;
  if (rec->subject.len != PERMIT_SUBJECT_LEN)
    return permit_err_set(err, PERMIT_EINVAL, "subject is not 32 bytes");
  *rkl = row_key(rec->list_id, rec->issuer, rec->subject.data, rk);
  if (*rkl == 0)
    return permit_err_set(err, PERMIT_EINVAL, "list or issuer name too long");
  uint8_t *v;
  size_t vl;
  int rc = txn_get(t, rk, *rkl, &v, &vl, err);
  if (rc != 0) return rc;
  *out = permit__internal__stored_contact__unpack(NULL, vl, v);
  free(v);
  if (*out == NULL)
    return permit_err_set(err, PERMIT_ECORRUPT, "a contact row of list %s is "
                          "damaged", rec->list_id);
  return 0;
}

int permit_contacts_txn_opt_in(permit_contacts_txn *t,
                               const Permit__V1__Record *rec,
                               const Permit__V1__Contact *contact,
                               uint64_t seq, permit_err *err) {
  if (rec->kind_case != PERMIT__V1__RECORD__KIND_OPT_IN ||
      rec->opt_in == NULL || rec->subject.len != PERMIT_SUBJECT_LEN)
    return permit_err_set(err, PERMIT_EINVAL, "not an opt-in record");
  const Permit__V1__OptIn *o = rec->opt_in;
  uint8_t rk[PERMIT_CONTACT_KEY_MAX], ik[INDEX_KEY_MAX];
  size_t rkl = row_key(rec->list_id, rec->issuer, rec->subject.data, rk);
  size_t ikl = subject_key_name('s', rec->issuer, rec->subject.data, ik);
  size_t ll = strlen(rec->list_id);
  if (rkl == 0 || ikl == 0 || ikl + ll > sizeof ik)
    return permit_err_set(err, PERMIT_EINVAL, "list or issuer name too long");
  memcpy(ik + ikl, rec->list_id, ll);
  ikl += ll;

  uint8_t key[SUBJECT_KEY_LEN];
  int rc = subject_key(t, rec->issuer, rec->subject.data, 1, key, err);
  if (rc != 0) return rc;
  uint8_t *sealed = NULL;
  size_t sl = 0;
  rc = seal_contact(key, rk, rkl, contact, &sealed, &sl);
  permit_wipe(key, sizeof key);
  if (rc != 0)
    return permit_err_set(err, rc, "cannot encrypt a contact: %s",
                          permit_strerror(rc));

  stored_contact sc = PERMIT__INTERNAL__STORED_CONTACT__INIT;
  sc.record_id = rec->record_id;
  sc.issuer = rec->issuer;
  sc.list_id = rec->list_id;
  sc.subject = rec->subject;
  sc.collected_at_ms = o->collected_at_ms;
  sc.notice_version = o->notice_version;
  sc.notice_sha256 = o->notice_sha256;
  sc.method = o->method;
  sc.seq = seq;
  sc.status = "active";
  sc.sealed.data = sealed;
  sc.sealed.len = sl;
  sc.status_seq = seq;
  sc.change = t->head + 1;
  rc = stage_msg(t, rk, rkl, &sc.base, err);
  free(sealed);
  if (rc == 0 && stage(t, ik, ikl, NULL, 0, 0) != 0)
    rc = permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  /* Where the sealed copy of this contact sits in the mirror log, so that
   * an erasure can prune it there too. */
  uint8_t ok_[SKEY_KEY_MAX + 8];
  size_t okl = subject_key_name('o', rec->issuer, rec->subject.data, ok_);
  if (rc == 0 && okl > 0) {
    permit_put_u64be(ok_ + okl, seq);
    if (stage(t, ok_, okl + 8, (const uint8_t *)rec->list_id, ll, 0) != 0)
      rc = permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  }
  if (rc == 0)
    rc = feed_add(t, "subscribed", rk, rkl, &rec->record_id, rec->issuer,
                  rec->list_id, seq, err);
  return rc;
}

int permit_contacts_txn_withdraw(permit_contacts_txn *t,
                                 const Permit__V1__Record *rec, uint64_t seq,
                                 int *applied, permit_err *err) {
  *applied = 0;
  if (rec->kind_case != PERMIT__V1__RECORD__KIND_WITHDRAWAL ||
      rec->withdrawal == NULL)
    return permit_err_set(err, PERMIT_EINVAL, "not a withdrawal record");
  uint8_t rk[PERMIT_CONTACT_KEY_MAX];
  size_t rkl;
  stored_contact *sc;
  int rc = row_get(t, rec, rk, &rkl, &sc, err);
  if (rc == PERMIT_ENOTFOUND) return 0;
  if (rc != 0) return rc;
  const ProtobufCBinaryData *ref = &rec->withdrawal->refers_to;
  if (sc->record_id.len == ref->len &&
      memcmp(sc->record_id.data, ref->data, ref->len) == 0 &&
      strcmp(sc->status, "active") == 0) {
    char *was = sc->status;
    sc->status = "withdrawn";
    sc->status_seq = seq;
    sc->change = t->head + 1;
    rc = stage_msg(t, rk, rkl, &sc->base, err);
    if (rc == 0)
      rc = feed_add(t, "unsubscribed", rk, rkl, &sc->record_id, rec->issuer,
                    rec->list_id, seq, err);
    if (rc == 0) *applied = 1;
    sc->status = was; /* free_unpacked frees what unpack allocated */
  }
  permit__internal__stored_contact__free_unpacked(sc, NULL);
  return rc;
}

typedef struct index_set {
  uint8_t **keys;
  size_t *lens;
  size_t n, cap;
} index_set;

static void index_set_free(index_set *is) {
  for (size_t i = 0; i < is->n; i++) free(is->keys[i]);
  free(is->keys);
  free(is->lens);
}

static int index_set_find(const index_set *is, const uint8_t *k, size_t kl) {
  for (size_t i = 0; i < is->n; i++)
    if (is->lens[i] == kl && memcmp(is->keys[i], k, kl) == 0) return (int)i;
  return -1;
}

static int index_set_add(index_set *is, const uint8_t *k, size_t kl) {
  if (index_set_find(is, k, kl) >= 0) return 0;
  if (is->n == is->cap) {
    size_t cap = is->cap ? is->cap * 2 : 8;
    uint8_t **gk = realloc(is->keys, cap * sizeof *gk);
    if (gk == NULL) return PERMIT_ENOMEM;
    is->keys = gk;
    size_t *gl = realloc(is->lens, cap * sizeof *gl);
    if (gl == NULL) return PERMIT_ENOMEM;
    is->lens = gl;
    is->cap = cap;
  }
  is->keys[is->n] = malloc(kl);
  if (is->keys[is->n] == NULL) return PERMIT_ENOMEM;
  memcpy(is->keys[is->n], k, kl);
  is->lens[is->n++] = kl;
  return 0;
}

static int index_collect(void *arg, const uint8_t *k, size_t kl,
                         const uint8_t *v, size_t vl) {
  (void)v, (void)vl;
  return index_set_add(arg, k, kl);
}

/*
 * Counts the lists that hold |subject| of |issuer| as the transaction
 * sees them (the store's index rows, then the staged ones).
 */
static int subject_lists(permit_contacts_txn *t, const uint8_t *prefix,
                         size_t plen, size_t *count, permit_err *err) {
  index_set is = {0};
  int rc = permit_store_scan(t->s, PERMIT_CF_CONTACTS, prefix, plen, NULL, 0,
                             index_collect, &is, err);
  for (size_t i = 0; rc == 0 && i < t->n; i++) {
    staged *op = &t->ops[i];
    if (op->klen <= plen || memcmp(op->key, prefix, plen) != 0) continue;
    if (!op->del) {
      rc = index_set_add(&is, op->key, op->klen);
    } else {
      int at = index_set_find(&is, op->key, op->klen);
      if (at >= 0) {
        free(is.keys[at]);
        is.keys[at] = is.keys[is.n - 1];
        is.lens[at] = is.lens[is.n - 1];
        is.n--;
      }
    }
  }
  if (rc == PERMIT_ENOMEM) permit_err_set(err, rc, "out of memory");
  *count = is.n;
  index_set_free(&is);
  return rc;
}

typedef struct copies_ctx {
  index_set *is;
  const char *list_id;
} copies_ctx;

static int copies_collect(void *arg, const uint8_t *k, size_t kl,
                          const uint8_t *v, size_t vl) {
  copies_ctx *cc = arg;
  size_t ll = strlen(cc->list_id);
  if (vl != ll || memcmp(v, cc->list_id, ll) != 0) return 0;
  return index_set_add(cc->is, k, kl);
}

/*
 * The mirror entries that hold sealed copies of |subject|'s contact on
 * |list_id| (the opt-ins' "o/" index rows, stored and staged): each is
 * marked for pruning and its index row deleted.
 */
static int erase_copies(permit_contacts_txn *t, const char *issuer,
                        const uint8_t *subject, const char *list_id,
                        permit_err *err) {
  uint8_t prefix[SKEY_KEY_MAX];
  size_t pl = subject_key_name('o', issuer, subject, prefix);
  if (pl == 0) return permit_err_set(err, PERMIT_EINVAL, "issuer too long");
  index_set is = {0};
  copies_ctx cc = {&is, list_id};
  int rc = permit_store_scan(t->s, PERMIT_CF_CONTACTS, prefix, pl, NULL, 0,
                             copies_collect, &cc, err);
  size_t ll = strlen(list_id);
  for (size_t i = 0; rc == 0 && i < t->n; i++) {
    staged *op = &t->ops[i];
    if (op->klen != pl + 8 || memcmp(op->key, prefix, pl) != 0) continue;
    int at = index_set_find(&is, op->key, op->klen);
    if (op->del) {
      if (at >= 0) {
        free(is.keys[at]);
        is.keys[at] = is.keys[is.n - 1];
        is.lens[at] = is.lens[is.n - 1];
        is.n--;
      }
    } else if (op->vlen == ll && memcmp(op->val, list_id, ll) == 0) {
      rc = index_set_add(&is, op->key, op->klen);
    }
  }
  for (size_t i = 0; rc == 0 && i < is.n; i++) {
    if (is.lens[i] != pl + 8) continue;
    if (prune_add(t, permit_get_u64be(is.keys[i] + pl)) != 0 ||
        stage(t, is.keys[i], is.lens[i], NULL, 0, 1) != 0)
      rc = PERMIT_ENOMEM;
  }
  if (rc == PERMIT_ENOMEM) permit_err_set(err, rc, "out of memory");
  index_set_free(&is);
  return rc;
}

static void log_damaged(const uint8_t *k, size_t kl, int rc);

#define FAREWELL_KEY_LEN (3 + 8)

static void farewell_key(uint64_t change, uint8_t out[FAREWELL_KEY_LEN]) {
  memcpy(out, "fk/", 3);
  permit_put_u64be(out + 3, change);
}

/*
 * The contact of row |sc| sealed under a fresh one-time key, staged at
 * "fk/" || BE64(change) with the time; |*out| malloc'd.  Nothing (|*out|
 * NULL) when the row does not open.
 */
static int farewell_seal(permit_contacts_txn *t, const stored_contact *sc,
                         const uint8_t *rk, size_t rkl, uint64_t change,
                         uint8_t **out, size_t *outlen, permit_err *err) {
  *out = NULL;
  *outlen = 0;
  uint8_t key[SUBJECT_KEY_LEN], fk[FAREWELL_KEY_LEN], kv[8 + SUBJECT_KEY_LEN];
  int rc = subject_key(t, sc->issuer, sc->subject.data, 0, key, err);
  if (rc == PERMIT_ENOTFOUND) return 0;
  if (rc != 0) return rc;
  Permit__V1__Contact *c = NULL;
  rc = open_contact(key, rk, rkl, &sc->sealed, &c);
  permit_wipe(key, sizeof key);
  if (rc != 0) {
    log_damaged(rk, rkl, rc);
    return 0; /* nothing readable to hand over */
  }
  farewell_key(change, fk);
  permit_put_u64be(kv, (uint64_t)permit_now_ms());
  if (permit_random(kv + 8, SUBJECT_KEY_LEN) != 0) {
    rc = permit_err_set(err, PERMIT_ECRYPTO, "no randomness");
  } else if ((rc = seal_contact(kv + 8, fk, sizeof fk, c, out, outlen)) != 0) {
    rc = permit_err_set(err, rc, "cannot seal an erased contact");
  } else if (stage(t, fk, sizeof fk, kv, sizeof kv, 0) != 0) {
    free(*out);
    *out = NULL;
    rc = permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  }
  permit_wipe(kv, sizeof kv);
  contact_free(c);
  return rc;
}

int permit_contacts_txn_erase(permit_contacts_txn *t,
                              const Permit__V1__Record *rec, uint64_t seq,
                              int *applied, permit_err *err) {
  *applied = 0;
  if (rec->kind_case != PERMIT__V1__RECORD__KIND_ERASURE)
    return permit_err_set(err, PERMIT_EINVAL, "not an erasure record");
  uint8_t rk[PERMIT_CONTACT_KEY_MAX];
  size_t rkl;
  stored_contact *sc;
  int rc = row_get(t, rec, rk, &rkl, &sc, err);
  if (rc != 0 && rc != PERMIT_ENOTFOUND) return rc;
  /* The sealed copies in the mirror go even when the row is gone. */
  int crc = erase_copies(t, rec->issuer, rec->subject.data, rec->list_id,
                         err);
  if (crc != 0) {
    if (sc != NULL) permit__internal__stored_contact__free_unpacked(sc, NULL);
    return crc;
  }
  if (rc == PERMIT_ENOTFOUND) return 0;
  uint8_t ik[INDEX_KEY_MAX], kk[SKEY_KEY_MAX];
  size_t pl = subject_key_name('s', rec->issuer, rec->subject.data, ik);
  size_t kkl = subject_key_name('k', rec->issuer, rec->subject.data, kk);
  size_t ll = strlen(rec->list_id);
  if (pl == 0 || kkl == 0 || pl + ll > sizeof ik) {
    permit__internal__stored_contact__free_unpacked(sc, NULL);
    return permit_err_set(err, PERMIT_EINVAL, "list or issuer name too long");
  }
  memcpy(ik + pl, rec->list_id, ll);
  uint8_t *farewell = NULL;
  size_t fl = 0;
  if (!t->no_handover)
    rc = farewell_seal(t, sc, rk, rkl, t->head + 1, &farewell, &fl, err);
  size_t count = 0;
  if (rc == 0 && (stage(t, rk, rkl, NULL, 0, 1) != 0 ||
                  stage(t, ik, pl + ll, NULL, 0, 1) != 0))
    rc = permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  if (rc == 0) rc = subject_lists(t, ik, pl, &count, err);
  /* With its last row goes the key: what is left anywhere of the
   * subject's contact can no longer be read. */
  if (rc == 0 && count == 0 && stage(t, kk, kkl, NULL, 0, 1) != 0)
    rc = permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  if (rc == 0)
    rc = feed_add_farewell(t, "erased", rk, rkl, &sc->record_id, rec->issuer,
                           rec->list_id, seq, farewell, fl, err);
  if (rc == 0) *applied = 1;
  free(farewell);
  permit__internal__stored_contact__free_unpacked(sc, NULL);
  return rc;
}

int permit_contacts_txn_unsubscribe(permit_contacts_txn *t,
                                    const char *list_id, const char *issuer,
                                    const uint8_t subject[PERMIT_SUBJECT_LEN],
                                    uint8_t record_id[PERMIT_RECORD_ID_LEN],
                                    int *applied, permit_err *err) {
  *applied = 0;
  uint8_t rk[PERMIT_CONTACT_KEY_MAX];
  size_t rkl = row_key(list_id, issuer, subject, rk);
  if (rkl == 0)
    return permit_err_set(err, PERMIT_EINVAL, "list or issuer name too long");
  uint8_t *v;
  size_t vl;
  int rc = txn_get(t, rk, rkl, &v, &vl, err);
  if (rc != 0) return rc;
  stored_contact *sc = permit__internal__stored_contact__unpack(NULL, vl, v);
  free(v);
  if (sc == NULL)
    return permit_err_set(err, PERMIT_ECORRUPT,
                          "a contact row of list %s is damaged", list_id);
  if (sc->record_id.len != PERMIT_RECORD_ID_LEN) {
    rc = permit_err_set(err, PERMIT_ECORRUPT, "a contact row of list %s has "
                        "a bad record id", list_id);
  } else if (strcmp(sc->status, "active") == 0) {
    memcpy(record_id, sc->record_id.data, PERMIT_RECORD_ID_LEN);
    char *was = sc->status;
    sc->status = "withdrawn";
    sc->change = t->head + 1;
    rc = stage_msg(t, rk, rkl, &sc->base, err);
    if (rc == 0)
      rc = feed_add(t, "unsubscribed", rk, rkl, &sc->record_id, issuer,
                    list_id, sc->seq, err);
    if (rc == 0) *applied = 1;
    sc->status = was;
  }
  permit__internal__stored_contact__free_unpacked(sc, NULL);
  return rc;
}

/* qsort_r over op indexes: RocksDB's bytewise order of their keys. */
static int op_key_cmp(const void *a, const void *b, void *ops) {
  const staged *x = &((const staged *)ops)[*(const uint32_t *)a];
  const staged *y = &((const staged *)ops)[*(const uint32_t *)b];
  size_t n = x->klen < y->klen ? x->klen : y->klen;
  int c = memcmp(x->key, y->key, n);
  return c != 0 ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/*
 * Adds the staged writes to |b|: only the latest op on each key (the
 * batch is atomic, so only that one shows), in key order, which is much
 * cheaper for the memtable than the random order of subjects.
 */
void permit_contacts_txn_write(const permit_contacts_txn *t, permit_batch *b) {
  uint32_t *idx = t->n > 0 ? malloc(t->n * sizeof *idx) : NULL;
  size_t m = 0;
  if (idx != NULL) {
    for (size_t i = 0; i < t->nslots; i++)
      if (t->slots[i] != 0) idx[m++] = t->slots[i] - 1;
    qsort_r(idx, m, sizeof *idx, op_key_cmp, t->ops);
  } else {
    m = t->n; /* out of memory: every op, in the order staged */
  }
  for (size_t j = 0; j < m; j++) {
    const staged *op = &t->ops[idx != NULL ? idx[j] : j];
    if (op->del)
      permit_batch_delete(b, PERMIT_CF_CONTACTS, op->key, op->klen);
    else
      permit_batch_put(b, PERMIT_CF_CONTACTS, op->key, op->klen, op->val,
                       op->vlen);
  }
  free(idx);
  if (t->changes > 0) {
    uint8_t v[8];
    permit_put_u64be(v, t->head);
    permit_batch_put(b, PERMIT_CF_CONTACTS, FEED_HEAD, FEED_HEAD_LEN, v, 8);
  }
}

/* ---- reading ---- */

/*
 * Decrypts the row |sc| stored at |rk|.  PERMIT_ENOTFOUND when its
 * subject key is gone, PERMIT_EVERIFY or PERMIT_ECORRUPT when it does not
 * open.
 */
static int row_open(permit_store *s, const stored_contact *sc,
                    const uint8_t *rk, size_t rkl, Permit__V1__Contact **out) {
  uint8_t k[SKEY_KEY_MAX], key[SUBJECT_KEY_LEN];
  *out = NULL;
  if (sc->subject.len != PERMIT_SUBJECT_LEN) return PERMIT_ECORRUPT;
  size_t kl = subject_key_name('k', sc->issuer, sc->subject.data, k);
  if (kl == 0) return PERMIT_ECORRUPT;
  int rc = permit_store_get_fixed(s, PERMIT_CF_CONTACTS, k, kl, key,
                                  sizeof key, NULL);
  if (rc == 0) rc = open_contact(key, rk, rkl, &sc->sealed, out);
  permit_wipe(key, sizeof key);
  return rc;
}

static void entry_fill(Permit__V1__ContactEntry *e, const stored_contact *sc,
                       const Permit__V1__Contact *c) {
  permit__v1__contact_entry__init(e);
  if (c != NULL) {
    e->email = c->email;
    e->given_name = c->given_name;
    e->family_name = c->family_name;
    e->locale = c->locale;
  }
  e->list_id = sc->list_id;
  e->issuer = sc->issuer;
  e->record_id = sc->record_id;
  e->collected_at_ms = sc->collected_at_ms;
  e->notice_version = sc->notice_version;
  e->notice_sha256 = sc->notice_sha256;
  e->method = sc->method;
  e->status = sc->status;
  e->seq = sc->seq;
  e->subject = sc->subject;
}

static void log_damaged(const uint8_t *k, size_t kl, int rc) {
  char hex[2 * 16 + 1];
  /* The subject (the key's end) names the row without personal data. */
  permit_hex_encode(k + kl - 16, 16, hex);
  permit_logf(PERMIT_LEVEL_WARN, "contacts.damaged",
              "contact row %.*s...%s does not open (%s); skipped",
              (int)(kl - PERMIT_SUBJECT_LEN), (const char *)k, hex,
              permit_strerror(rc));
}

typedef struct list_ctx {
  permit_store *s;
  int include_withdrawn;
  permit_contacts_cursor *cursor;
  permit_contact_visit_fn visit;
  void *arg;
} list_ctx;

static int list_one(void *arg, const uint8_t *k, size_t kl, const uint8_t *v,
                    size_t vl) {
  list_ctx *lc = arg;
  permit_contacts_cursor *cur = lc->cursor;
  if (kl == cur->len && memcmp(k, cur->key, kl) == 0) return 0;
  if (kl > sizeof cur->key || kl <= PERMIT_SUBJECT_LEN) return 0;
  memcpy(cur->key, k, kl);
  cur->len = kl;
  stored_contact *sc = permit__internal__stored_contact__unpack(NULL, vl, v);
  if (sc == NULL) {
    log_damaged(k, kl, PERMIT_ECORRUPT);
    return 0;
  }
  int rc = 0;
  if (lc->include_withdrawn || strcmp(sc->status, "active") == 0) {
    Permit__V1__Contact *c;
    int orc = row_open(lc->s, sc, k, kl, &c);
    if (orc != 0) {
      log_damaged(k, kl, orc);
    } else {
      Permit__V1__ContactEntry e;
      entry_fill(&e, sc, c);
      rc = lc->visit(lc->arg, &e);
    }
    contact_free(c);
  }
  permit__internal__stored_contact__free_unpacked(sc, NULL);
  return rc;
}

int permit_contacts_list(permit_store *s, const char *list_id,
                         int include_withdrawn,
                         permit_contacts_cursor *cursor,
                         permit_contact_visit_fn visit, void *arg,
                         permit_err *err) {
  int rc = permit_list_id_validate(list_id, err);
  if (rc != 0) return rc;
  char prefix[4 + PERMIT_LIST_ID_MAX];
  int pl = snprintf(prefix, sizeof prefix, "c/%s/", list_id);
  if (cursor->len > sizeof cursor->key)
    return permit_err_set(err, PERMIT_EINVAL, "bad cursor");
  list_ctx lc = {s, include_withdrawn, cursor, visit, arg};
  return permit_store_scan(s, PERMIT_CF_CONTACTS, prefix, (size_t)pl,
                           cursor->len ? cursor->key : NULL, cursor->len,
                           list_one, &lc, err);
}

/* The farewell of change |change|, while its one-time key is kept. */
static int farewell_open(permit_store *s, uint64_t change,
                         const ProtobufCBinaryData *sealed,
                         Permit__V1__Contact **out) {
  uint8_t fk[FAREWELL_KEY_LEN], kv[8 + SUBJECT_KEY_LEN];
  farewell_key(change, fk);
  int rc = permit_store_get_fixed(s, PERMIT_CF_CONTACTS, fk, sizeof fk, kv,
                                  sizeof kv, NULL);
  if (rc == 0) rc = open_contact(kv + 8, fk, sizeof fk, sealed, out);
  permit_wipe(kv, sizeof kv);
  return rc;
}

int permit_contacts_farewell_forget(permit_store *s, uint64_t change,
                                    permit_err *err) {
  uint8_t fk[FAREWELL_KEY_LEN], k[FEED_KEY_LEN];
  farewell_key(change, fk);
  feed_key(change, k);
  uint8_t *v = NULL;
  size_t vl = 0;
  int rc = permit_store_get(s, PERMIT_CF_CONTACTS, k, sizeof k, &v, &vl, err);
  if (rc != 0) return rc == PERMIT_ENOTFOUND ? 0 : rc;
  feed_entry *f = permit__internal__contact_feed_entry__unpack(NULL, vl, v);
  free(v);
  if (f == NULL)
    return permit_err_set(err, PERMIT_ECORRUPT, "change %llu is damaged",
                          (unsigned long long)change);
  permit_batch *b = permit_batch_new(s);
  if (b == NULL) {
    permit__internal__contact_feed_entry__free_unpacked(f, NULL);
    return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  }
  permit_batch_delete(b, PERMIT_CF_CONTACTS, fk, sizeof fk);
  if (f->farewell.len > 0) {
    /* The feed entry keeps its place, without the sealed contact. */
    f->farewell.len = 0;
    size_t n = protobuf_c_message_get_packed_size(&f->base);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf != NULL) {
      protobuf_c_message_pack(&f->base, buf);
      permit_batch_put(b, PERMIT_CF_CONTACTS, k, sizeof k, buf, n);
      free(buf);
    }
  }
  rc = permit_store_write(s, b, 1, err);
  permit_batch_free(b);
  permit__internal__contact_feed_entry__free_unpacked(f, NULL);
  return rc;
}

typedef struct purge_ctx {
  int64_t before_ms;
  uint64_t *changes;
  size_t n, cap;
} purge_ctx;

static int purge_one(void *arg, const uint8_t *k, size_t kl,
                     const uint8_t *v, size_t vl) {
  purge_ctx *pc = arg;
  if (kl != FAREWELL_KEY_LEN || vl != 8 + SUBJECT_KEY_LEN) return 0;
  if ((int64_t)permit_get_u64be(v) >= pc->before_ms) return 0;
  if (pc->n == pc->cap) {
    size_t cap = pc->cap ? pc->cap * 2 : 16;
    uint64_t *g = realloc(pc->changes, cap * sizeof *g);
    if (g == NULL) return PERMIT_ENOMEM;
    pc->changes = g;
    pc->cap = cap;
  }
  pc->changes[pc->n++] = permit_get_u64be(k + 3);
  return 0;
}

int permit_contacts_farewell_purge(permit_store *s, int64_t before_ms,
                                   size_t *purged, permit_err *err) {
  purge_ctx pc = {.before_ms = before_ms};
  *purged = 0;
  int rc = permit_store_scan(s, PERMIT_CF_CONTACTS, "fk/", 3, NULL, 0,
                             purge_one, &pc, err);
  for (size_t i = 0; rc == 0 && i < pc.n; i++) {
    rc = permit_contacts_farewell_forget(s, pc.changes[i], err);
    if (rc == 0) (*purged)++;
  }
  if (rc == PERMIT_ENOMEM) permit_err_set(err, rc, "out of memory");
  free(pc.changes);
  return rc;
}

typedef struct changes_ctx {
  permit_store *s;
  permit_change_visit_fn visit;
  void *arg;
} changes_ctx;

static int change_one(void *arg, const uint8_t *k, size_t kl,
                      const uint8_t *v, size_t vl) {
  changes_ctx *cc = arg;
  if (kl != FEED_KEY_LEN) return 0; /* feed/head */
  feed_entry *f = permit__internal__contact_feed_entry__unpack(NULL, vl, v);
  if (f == NULL) {
    permit_logf(PERMIT_LEVEL_WARN, "contacts.damaged",
                "change %llu of the contact feed is damaged; skipped",
                (unsigned long long)permit_get_u64be(k + 5));
    return 0;
  }
  Permit__V1__ContactChange ch = PERMIT__V1__CONTACT_CHANGE__INIT;
  Permit__V1__ContactEntry e;
  ch.change = permit_get_u64be(k + 5);
  ch.kind = f->kind;
  ch.contact = &e;
  stored_contact *sc = NULL;
  Permit__V1__Contact *c = NULL;
  uint8_t *row = NULL;
  size_t rl = 0;
  int rc = permit_store_get(cc->s, PERMIT_CF_CONTACTS, f->contact_key.data,
                            f->contact_key.len, &row, &rl, NULL);
  if (rc == 0) sc = permit__internal__stored_contact__unpack(NULL, rl, row);
  free(row);
  if (sc != NULL) {
    int orc = row_open(cc->s, sc, f->contact_key.data, f->contact_key.len, &c);
    if (orc != 0 && f->contact_key.len > PERMIT_SUBJECT_LEN)
      log_damaged(f->contact_key.data, f->contact_key.len, orc);
    entry_fill(&e, sc, c);
  } else {
    /* Erased since: what the feed itself knows, and once, the contact as
     * it was (the farewell), so that the venue's tools can delete it. */
    permit__v1__contact_entry__init(&e);
    e.list_id = f->list_id;
    e.issuer = f->issuer;
    e.record_id = f->record_id;
    e.seq = f->seq;
    e.status = "erased";
    if (strcmp(f->kind, "erased") == 0 && f->farewell.len > 0 &&
        farewell_open(cc->s, ch.change, &f->farewell, &c) == 0) {
      e.email = c->email;
      e.given_name = c->given_name;
      e.family_name = c->family_name;
      e.locale = c->locale;
    }
  }
  rc = cc->visit(cc->arg, &ch);
  contact_free(c);
  if (sc != NULL) permit__internal__stored_contact__free_unpacked(sc, NULL);
  permit__internal__contact_feed_entry__free_unpacked(f, NULL);
  return rc;
}

int permit_contacts_changes(permit_store *s, uint64_t after,
                            permit_change_visit_fn visit, void *arg,
                            permit_err *err) {
  if (after == UINT64_MAX) return 0;
  uint8_t start[FEED_KEY_LEN];
  feed_key(after + 1, start);
  changes_ctx cc = {s, visit, arg};
  return permit_store_scan(s, PERMIT_CF_CONTACTS, "feed/", 5, start,
                           sizeof start, change_one, &cc, err);
}
