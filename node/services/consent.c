/*
 * consent.c - the issuer's side of a buyer's consent: links, the Buyer
 * service, the consent-centre pages and the unsubscribes venues send
 * back (see permit/consent.h for the storage).
 *
 * Reads (the consent list) run on the worker; changes are jobs on the
 * sync thread (permit_sync_submit) that append a Withdrawal or Erasure to
 * the venue's log and change the buyer's rows in the same synced batch,
 * and answer once that is durable (permit_job).
 */
#include "permit/consent.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/job.h"
#include "permit/logging.h"
#include "permit/token.h"
#include "permit/util.h"
#include "permit/web.h"

#define TOKEN_KIND_CONSENT 'c'
#define BOPT_PREFIX "bopt/"
#define BOPT_PREFIX_LEN 5
#define BOPT_KEY_LEN (BOPT_PREFIX_LEN + 32 + PERMIT_RECORD_ID_LEN)
#define MAX_CONSENTS 1024 /* opt-ins shown for one buyer */
#define CSRF_LEN 22       /* base64url of 16 bytes */
#define MSG_LEN 512

typedef Permit__Internal__ConsentEntry consent_entry;

struct permit_consent {
  permit_node *n;
  permit_sync *sync;
  char origin[PERMIT_LINK_MAX];
};

/* ---- keys ---- */

static void bopt_key(const uint8_t buyer[32], const uint8_t *record_id,
                     uint8_t out[BOPT_KEY_LEN]) {
  memcpy(out, BOPT_PREFIX, BOPT_PREFIX_LEN);
  memcpy(out + BOPT_PREFIX_LEN, buyer, 32);
  memcpy(out + BOPT_PREFIX_LEN + 32, record_id, PERMIT_RECORD_ID_LEN);
}

static size_t rec_key(const uint8_t *record_id, char out[4 + 33]) {
  memcpy(out, "rec/", 4);
  permit_hex_encode(record_id, PERMIT_RECORD_ID_LEN, out + 4);
  return 4 + 2 * PERMIT_RECORD_ID_LEN;
}

/* "buyer/" || buyer || "/" venue "/" list_id: a row opt-ins wrote up to
 * this version; a buyer's opt-ins are found under "bopt/" instead. */
static size_t old_buyer_index_key(const uint8_t buyer[32], const char *venue,
                                  const char *list_id, uint8_t *out,
                                  size_t cap) {
  if (cap < 6 + 32) return 0;
  memcpy(out, "buyer/", 6);
  memcpy(out + 6, buyer, 32);
  int n = snprintf((char *)out + 38, cap - 38, "/%s/%s", venue, list_id);
  return n < 0 || (size_t)n >= cap - 38 ? 0 : 38 + (size_t)n;
}

/* The idempotency row of an opt-in with its new state. */
static void idem_put(permit_batch *b, const consent_entry *e,
                     const uint8_t *record_id, int state) {
  if (e->idem_key.len != PERMIT_SHA256_LEN) return;
  uint8_t v[PERMIT_RECORD_ID_LEN + 8 + 1];
  memcpy(v, record_id, PERMIT_RECORD_ID_LEN);
  permit_put_u64be(v + PERMIT_RECORD_ID_LEN, e->seq);
  v[PERMIT_RECORD_ID_LEN + 8] = (uint8_t)state;
  permit_batch_put(b, PERMIT_CF_IDEMPOTENCY, e->idem_key.data,
                   e->idem_key.len, v, sizeof v);
}

static int entry_put(permit_batch *b, const uint8_t key[BOPT_KEY_LEN],
                     const consent_entry *e) {
  size_t n = permit__internal__consent_entry__get_packed_size(e);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) return PERMIT_ENOMEM;
  permit__internal__consent_entry__pack(e, buf);
  permit_batch_put(b, PERMIT_CF_INDEXES, key, BOPT_KEY_LEN, buf, n);
  free(buf);
  return 0;
}

void permit_consent_stage_optin(permit_batch *b, const uint8_t buyer[32],
                                const uint8_t record_id[16], uint64_t seq,
                                const Permit__Internal__ConsentEntry *e) {
  uint8_t k[BOPT_KEY_LEN];
  bopt_key(buyer, record_id, k);
  consent_entry copy = *e;
  copy.seq = seq;
  entry_put(b, k, &copy);
  char rk[4 + 33];
  size_t rkl = rec_key(record_id, rk);
  size_t vl = strlen(e->venue);
  uint8_t v[8 + 32 + PERMIT_NAME_MAX];
  permit_put_u64be(v, seq);
  memcpy(v + 8, buyer, 32);
  memcpy(v + 40, e->venue, vl);
  permit_batch_put(b, PERMIT_CF_RECORDS, rk, rkl, v, 40 + vl);
}

/* The buyer and venue an opt-in id names (records "rec/" row). */
static int rec_lookup(permit_node *n, const uint8_t *record_id,
                      uint8_t buyer[32], char venue[PERMIT_NAME_MAX + 1]) {
  char rk[4 + 33];
  size_t rkl = rec_key(record_id, rk);
  uint8_t *v;
  size_t vl;
  int rc = permit_store_get(permit_node_store(n), PERMIT_CF_RECORDS, rk, rkl,
                            &v, &vl, NULL);
  if (rc != 0) return rc;
  if (vl < 40 || vl - 40 > PERMIT_NAME_MAX) {
    free(v);
    return PERMIT_ECORRUPT;
  }
  memcpy(buyer, v + 8, 32);
  memcpy(venue, v + 40, vl - 40);
  venue[vl - 40] = '\0';
  free(v);
  return 0;
}

int permit_consent_record_buyer(permit_node *n, const uint8_t record_id[16],
                                uint8_t buyer[32]) {
  char venue[PERMIT_NAME_MAX + 1];
  return rec_lookup(n, record_id, buyer, venue);
}

static int entry_get(permit_node *n, const uint8_t key[BOPT_KEY_LEN],
                     consent_entry **out) {
  uint8_t *v;
  size_t vl;
  int rc = permit_store_get(permit_node_store(n), PERMIT_CF_INDEXES, key,
                            BOPT_KEY_LEN, &v, &vl, NULL);
  if (rc != 0) return rc;
  *out = permit__internal__consent_entry__unpack(NULL, vl, v);
  free(v);
  return *out != NULL ? 0 : PERMIT_ECORRUPT;
}

/* ---- links ---- */

/* The node's name: a link of one node is no link of another's (the kind
 * byte tells consent links from unsubscribe links). */
static void token_context(permit_node *n, char *out, size_t cap) {
  snprintf(out, cap, "%s", permit_node_name(n));
}

int permit_consent_link(permit_node *n, const uint8_t buyer[32], char *out,
                        size_t cap) {
  uint8_t secret[32];
  char ctx[PERMIT_NAME_MAX + 16], token[PERMIT_TOKEN_MAX];
  permit_node_token_secret(n, secret);
  token_context(n, ctx, sizeof ctx);
  int64_t expiry =
      permit_now_ms() + (int64_t)PERMIT_CONSENT_LINK_DAYS * 86400000;
  int rc = permit_token_make(secret, ctx, TOKEN_KIND_CONSENT, expiry, buyer,
                             32, token, sizeof token);
  permit_wipe(secret, sizeof secret);
  if (rc != 0) return rc;
  const char *base = permit_node_consent_base(n);
  size_t bl = strlen(base);
  while (bl > 0 && base[bl - 1] == '/') bl--;
  int w = bl > 0 ? snprintf(out, cap, "%.*s/c/%s", (int)bl, base, token)
                 : snprintf(out, cap, "https://%s/c/%s", permit_node_name(n),
                            token);
  return w > 0 && (size_t)w < cap ? 0 : PERMIT_ETOOBIG;
}

/*
 * The buyer a token names.  Returns 0, or an HTTP-ish verdict for the
 * message: PERMIT_EVERIFY (forged or from before a secret rotation),
 * PERMIT_TOKEN_EXPIRED, PERMIT_EINVAL (malformed).
 */
static int token_buyer(permit_node *n, const char *token, size_t len,
                       uint8_t buyer[32]) {
  uint8_t secret[32], payload[PERMIT_TOKEN_PAYLOAD_MAX];
  char ctx[PERMIT_NAME_MAX + 16];
  size_t pl = 0;
  permit_node_token_secret(n, secret);
  token_context(n, ctx, sizeof ctx);
  int rc = permit_token_open(secret, ctx, TOKEN_KIND_CONSENT, token, len,
                             permit_now_ms(), payload, sizeof payload, &pl,
                             NULL);
  permit_wipe(secret, sizeof secret);
  if (rc == 0 && pl != 32) rc = PERMIT_EINVAL;
  if (rc == 0) memcpy(buyer, payload, 32);
  return rc;
}

static const char *token_problem(int rc) {
  return rc == PERMIT_TOKEN_EXPIRED
             ? "This link has expired. Use the link in your most recent "
               "confirmation email, or ask the ticket seller for a new one."
             : "This link is not valid. Check that it was copied whole from "
               "your confirmation email.";
}

/* The per-link value of the forms' hidden csrf field: a page from
 * somewhere else cannot know it without the link itself. */
static void csrf_for(permit_node *n, const char *token, char out[CSRF_LEN + 1]) {
  uint8_t secret[32], mac[PERMIT_SHA256_LEN], in[5 + PERMIT_TOKEN_MAX];
  size_t tl = strnlen(token, PERMIT_TOKEN_MAX - 1);
  memcpy(in, "csrf\n", 5);
  memcpy(in + 5, token, tl);
  permit_node_token_secret(n, secret);
  if (permit_hmac_sha256(secret, 32, in, 5 + tl, mac) != 0)
    memset(mac, 0, sizeof mac); /* then no form matches */
  permit_wipe(secret, sizeof secret);
  permit_base64url_encode(mac, 16, out, CSRF_LEN + 1);
}

/* ---- reading a buyer's consents ---- */

typedef struct consent_row {
  uint8_t record_id[PERMIT_RECORD_ID_LEN];
  consent_entry *e;
} consent_row;

typedef struct rows {
  consent_row *v;
  size_t n, cap;
} rows;

static void rows_free(rows *r) {
  for (size_t i = 0; i < r->n; i++)
    permit__internal__consent_entry__free_unpacked(r->v[i].e, NULL);
  free(r->v);
  r->v = NULL;
  r->n = r->cap = 0;
}

static int rows_collect(void *arg, const uint8_t *k, size_t kl,
                        const uint8_t *v, size_t vl) {
  rows *r = arg;
  if (kl != BOPT_KEY_LEN) return 0;
  if (r->n == MAX_CONSENTS) return 1;
  consent_entry *e = permit__internal__consent_entry__unpack(NULL, vl, v);
  if (e == NULL) {
    permit_logf(PERMIT_LEVEL_WARN, "consent.damaged",
                "a consent row is damaged; skipped");
    return 0;
  }
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    consent_row *g = realloc(r->v, cap * sizeof *g);
    if (g == NULL) {
      permit__internal__consent_entry__free_unpacked(e, NULL);
      return PERMIT_ENOMEM;
    }
    r->v = g;
    r->cap = cap;
  }
  memcpy(r->v[r->n].record_id, k + BOPT_PREFIX_LEN + 32,
         PERMIT_RECORD_ID_LEN);
  r->v[r->n++].e = e;
  return 0;
}

static int rows_load(permit_node *n, const uint8_t buyer[32], rows *r,
                     permit_err *err) {
  uint8_t prefix[BOPT_PREFIX_LEN + 32];
  memcpy(prefix, BOPT_PREFIX, BOPT_PREFIX_LEN);
  memcpy(prefix + BOPT_PREFIX_LEN, buyer, 32);
  int rc = permit_store_scan(permit_node_store(n), PERMIT_CF_INDEXES, prefix,
                             sizeof prefix, NULL, 0, rows_collect, r, err);
  if (rc == 1) rc = 0;
  if (rc != 0) rows_free(r);
  return rc;
}

/* What the page and ListConsents show of one opt-in; strings malloc'd. */
typedef struct shown {
  char *title, *notice;
} shown;

static char *list_title(permit_node *n, const char *venue,
                        const char *list_id) {
  Permit__V1__Catalog *cat = NULL;
  char *title = NULL;
  if (permit_node_catalog_get(n, venue, &cat, NULL) != 0) return NULL;
  for (size_t i = 0; i < cat->n_lists; i++)
    if (strcmp(cat->lists[i]->list_id, list_id) == 0) {
      title = strdup(cat->lists[i]->title);
      break;
    }
  permit__v1__catalog__free_unpacked(cat, NULL);
  return title;
}

static void shown_fill(permit_node *n, const consent_entry *e, shown *s) {
  s->title = list_title(n, e->venue, e->list_id);
  s->notice = NULL;
  permit_node_notice_text(n, e->venue, e->list_id, e->notice_version,
                          &s->notice, NULL);
}

static const char *state_words(const char *state) {
  if (strcmp(state, "unsubscribed") == 0) return "unsubscribed at the venue";
  return state;
}

/* ---- changes (sync thread) ---- */

enum { OP_WITHDRAW, OP_ERASE };

typedef struct buyer_op {
  permit_consent *co;
  permit_job *job;
  int kind;
  int web; /* answer with a page, not a gRPC message */
  uint8_t buyer[32];
  uint8_t record_id[PERMIT_RECORD_ID_LEN];
  char token[PERMIT_TOKEN_MAX];
  /* the outcome */
  int status; /* gRPC */
  char msg[MSG_LEN];
  int changed;
  int64_t at_ms;
  int records, venues;
} buyer_op;

/* Signs a Withdrawal or Erasure about |e| for its venue. */
static int build_record(permit_node *n, const consent_entry *e,
                        const uint8_t *refers_to, int erase, int64_t now,
                        uint8_t **out, size_t *len, permit_err *err) {
  uint8_t id[PERMIT_RECORD_ID_LEN];
  if (permit_random(id, sizeof id) != 0)
    return permit_err_set(err, PERMIT_ECRYPTO, "no randomness");
  Permit__V1__Record rec = PERMIT__V1__RECORD__INIT;
  rec.record_id.data = id;
  rec.record_id.len = sizeof id;
  rec.issuer = (char *)permit_node_name(n);
  rec.audience = e->venue;
  rec.list_id = e->list_id;
  rec.subject = e->subject;
  rec.issued_at_ms = now;
  Permit__V1__Withdrawal w = PERMIT__V1__WITHDRAWAL__INIT;
  Permit__V1__Erasure er = PERMIT__V1__ERASURE__INIT;
  if (erase) {
    er.requested_at_ms = now;
    rec.kind_case = PERMIT__V1__RECORD__KIND_ERASURE;
    rec.erasure = &er;
  } else {
    w.refers_to.data = (uint8_t *)refers_to;
    w.refers_to.len = PERMIT_RECORD_ID_LEN;
    w.reason = PERMIT__V1__WITHDRAWAL_REASON__WITHDRAWAL_REASON_BUYER_REQUEST;
    w.withdrawn_at_ms = now;
    rec.kind_case = PERMIT__V1__RECORD__KIND_WITHDRAWAL;
    rec.withdrawal = &w;
  }
  return permit_record_sign(&rec, permit_node_sign_key(n), out, len, err);
}

#define WITHDRAW_MAX 64 /* active opt-ins of one buyer on one list */

typedef struct withdraw_ctx {
  const uint8_t *buyer;
  consent_row *sel[WITHDRAW_MAX];
  size_t n;
  int64_t now;
} withdraw_ctx;

static int withdraw_extra(void *arg, uint64_t seq, permit_batch *b) {
  withdraw_ctx *wc = arg;
  (void)seq;
  for (size_t i = 0; i < wc->n; i++) {
    consent_entry *e = wc->sel[i]->e;
    uint8_t key[BOPT_KEY_LEN];
    bopt_key(wc->buyer, wc->sel[i]->record_id, key);
    char *was = e->state;
    int64_t at = e->changed_at_ms;
    e->state = "withdrawn";
    e->changed_at_ms = wc->now;
    idem_put(b, e, wc->sel[i]->record_id, PERMIT_IDEM_WITHDRAWN);
    int rc = entry_put(b, key, e);
    e->state = was;
    e->changed_at_ms = at;
    if (rc != 0) return rc;
  }
  return 0;
}

/*
 * Withdraws the opt-in named, and with it every other active opt-in of
 * the buyer on the same list of the same venue (from other orders): the
 * button says "leave this list", and the venue's row holds only the
 * newest of them.  One Withdrawal each, in one atomic append.
 */
static void do_withdraw(buyer_op *op) {
  permit_node *n = op->co->n;
  uint8_t key[BOPT_KEY_LEN];
  bopt_key(op->buyer, op->record_id, key);
  consent_entry *e = NULL;
  int rc = entry_get(n, key, &e);
  if (rc == PERMIT_ENOTFOUND) {
    op->status = PERMIT_GRPC_NOT_FOUND;
    snprintf(op->msg, sizeof op->msg,
             "this buyer has no opt-in with that record id");
    return;
  }
  if (rc != 0) {
    op->status = PERMIT_GRPC_INTERNAL;
    snprintf(op->msg, sizeof op->msg, "the consent row cannot be read");
    return;
  }
  if (strcmp(e->state, "active") != 0) {
    op->status = PERMIT_GRPC_OK;
    op->changed = 0;
    op->at_ms = e->changed_at_ms;
    permit__internal__consent_entry__free_unpacked(e, NULL);
    return;
  }
  rows r = {0};
  permit_err err = {0};
  withdraw_ctx wc = {.buyer = op->buyer, .now = permit_now_ms()};
  permit_iov iov[WITHDRAW_MAX];
  uint8_t *entries[WITHDRAW_MAX];
  size_t ne = 0;
  permit_log *log = permit_node_outbound(n, e->venue);
  op->status = PERMIT_GRPC_OK;
  if (log == NULL) {
    op->status = PERMIT_GRPC_FAILED_PRECONDITION;
    snprintf(op->msg, sizeof op->msg, "the venue %s is no longer a peer",
             e->venue);
  } else if (rows_load(n, op->buyer, &r, &err) != 0) {
    op->status = PERMIT_GRPC_INTERNAL;
    snprintf(op->msg, sizeof op->msg, "the buyer's consents cannot be read");
  }
  for (size_t i = 0; op->status == PERMIT_GRPC_OK && i < r.n; i++) {
    consent_row *row = &r.v[i];
    if (strcmp(row->e->venue, e->venue) != 0 ||
        strcmp(row->e->list_id, e->list_id) != 0 ||
        strcmp(row->e->state, "active") != 0 || wc.n == WITHDRAW_MAX)
      continue;
    size_t len = 0;
    if (build_record(n, row->e, row->record_id, 0, wc.now, &entries[ne],
                     &len, &err) != 0) {
      op->status = PERMIT_GRPC_INTERNAL;
      snprintf(op->msg, sizeof op->msg, "cannot sign the withdrawal");
      permit_logf(PERMIT_LEVEL_ERROR, "consent.sign_failed", "%s", err.msg);
      break;
    }
    iov[ne].base = entries[ne];
    iov[ne].len = len;
    ne++;
    wc.sel[wc.n++] = row;
  }
  uint64_t first = 0;
  if (op->status == PERMIT_GRPC_OK && ne == 0) {
    op->status = PERMIT_GRPC_INTERNAL;
    snprintf(op->msg, sizeof op->msg, "the opt-in vanished meanwhile");
  } else if (op->status == PERMIT_GRPC_OK) {
    if (permit_log_append_many(log, iov, ne, withdraw_extra, &wc, &first,
                               &err) != 0) {
      op->status = PERMIT_GRPC_UNAVAILABLE;
      snprintf(op->msg, sizeof op->msg,
               "the withdrawal could not be stored durably; retry");
      permit_logf(PERMIT_LEVEL_ERROR, "consent.append_failed", "%s", err.msg);
    } else {
      char hex[2 * PERMIT_RECORD_ID_LEN + 1];
      permit_hex_encode(op->record_id, PERMIT_RECORD_ID_LEN, hex);
      permit_logf(PERMIT_LEVEL_INFO, "consent.withdrawn",
                  "opt-in %s withdrawn by the buyer (%zu on that list): "
                  "entries %llu.. to %s",
                  hex, ne, (unsigned long long)first, e->venue);
      permit_node_grew(n, e->venue);
      op->changed = 1;
      op->at_ms = wc.now;
    }
  }
  for (size_t i = 0; i < ne; i++) free(entries[i]);
  rows_free(&r);
  permit__internal__consent_entry__free_unpacked(e, NULL);
}

typedef struct erase_ctx {
  permit_log *log;
  const uint8_t *buyer;
  rows *r;
  const char *venue;
  permit_err *err;
} erase_ctx;

/* The buyer's rows for one venue go, and the sealed payloads of their
 * opt-ins in its log. */
static int erase_extra(void *arg, uint64_t seq, permit_batch *b) {
  erase_ctx *ec = arg;
  (void)seq;
  for (size_t i = 0; i < ec->r->n; i++) {
    const consent_entry *e = ec->r->v[i].e;
    const uint8_t *id = ec->r->v[i].record_id;
    if (strcmp(e->venue, ec->venue) != 0) continue;
    uint8_t k[BOPT_KEY_LEN];
    bopt_key(ec->buyer, id, k);
    permit_batch_delete(b, PERMIT_CF_INDEXES, k, sizeof k);
    char rk[4 + 33];
    permit_batch_delete(b, PERMIT_CF_RECORDS, rk, rec_key(id, rk));
    /* Written by opt-ins of earlier versions (nothing read it). */
    uint8_t ik[6 + 32 + 2 + PERMIT_NAME_MAX + PERMIT_LIST_ID_MAX + 1];
    size_t ikl = old_buyer_index_key(ec->buyer, e->venue, e->list_id, ik,
                                     sizeof ik);
    if (ikl > 0) permit_batch_delete(b, PERMIT_CF_INDEXES, ik, ikl);
    idem_put(b, e, id, PERMIT_IDEM_ERASED);
    int rc = permit_log_prune(ec->log, e->seq, NULL, b, ec->err);
    if (rc != 0 && rc != PERMIT_ENOTFOUND) return rc;
  }
  return 0;
}

static void do_erase(buyer_op *op) {
  permit_node *n = op->co->n;
  rows r = {0};
  permit_err err = {0};
  if (rows_load(n, op->buyer, &r, &err) != 0) {
    op->status = PERMIT_GRPC_INTERNAL;
    snprintf(op->msg, sizeof op->msg, "the buyer's consents cannot be read");
    return;
  }
  op->status = PERMIT_GRPC_OK;
  int64_t now = permit_now_ms();
  for (size_t i = 0; i < r.n && op->status == PERMIT_GRPC_OK; i++) {
    const char *venue = r.v[i].e->venue;
    int seen = 0;
    for (size_t j = 0; j < i && !seen; j++)
      seen = strcmp(r.v[j].e->venue, venue) == 0;
    if (seen) continue;
    /* One Erasure per list of this venue. */
    permit_iov iov[64];
    uint8_t *entries[64];
    size_t ne = 0;
    int count = 0;
    for (size_t j = i; j < r.n; j++) {
      const consent_entry *e = r.v[j].e;
      if (strcmp(e->venue, venue) != 0) continue;
      count++;
      int dup = 0;
      for (size_t k = i; k < j && !dup; k++)
        dup = strcmp(r.v[k].e->venue, venue) == 0 &&
              strcmp(r.v[k].e->list_id, e->list_id) == 0;
      if (dup || ne == 64) continue;
      size_t len = 0;
      if (build_record(n, e, NULL, 1, now, &entries[ne], &len, &err) != 0) {
        op->status = PERMIT_GRPC_INTERNAL;
        snprintf(op->msg, sizeof op->msg, "cannot sign an erasure");
        break;
      }
      iov[ne].base = entries[ne];
      iov[ne].len = len;
      ne++;
    }
    permit_log *log = permit_node_outbound(n, venue);
    if (op->status == PERMIT_GRPC_OK && log == NULL) {
      op->status = PERMIT_GRPC_FAILED_PRECONDITION;
      snprintf(op->msg, sizeof op->msg, "the venue %s is no longer a peer",
               venue);
    }
    if (op->status == PERMIT_GRPC_OK) {
      erase_ctx ec = {log, op->buyer, &r, venue, &err};
      uint64_t first = 0;
      if (permit_log_append_many(log, iov, ne, erase_extra, &ec, &first,
                                 &err) != 0) {
        op->status = PERMIT_GRPC_UNAVAILABLE;
        snprintf(op->msg, sizeof op->msg,
                 "the erasure could not be stored durably; retry (what was "
                 "erased so far stays erased)");
        permit_logf(PERMIT_LEVEL_ERROR, "consent.append_failed", "%s",
                    err.msg);
      } else {
        permit_logf(PERMIT_LEVEL_INFO, "consent.erased",
                    "a buyer's %d opt-ins erased: %zu erasures to %s from "
                    "entry %llu",
                    count, ne, venue, (unsigned long long)first);
        permit_node_grew(n, venue);
        op->records += count;
        op->venues++;
      }
    }
    for (size_t k = 0; k < ne; k++) free(entries[k]);
  }
  rows_free(&r);
}

static void buyer_work(void *arg, int cancelled) {
  buyer_op *op = arg;
  if (cancelled) {
    op->status = PERMIT_GRPC_UNAVAILABLE;
    snprintf(op->msg, sizeof op->msg, "the node is stopping; retry");
  } else if (op->kind == OP_WITHDRAW) {
    do_withdraw(op);
  } else {
    do_erase(op);
  }
  permit_job_done(op->job);
}

/* ---- web helpers (shared with the venue's pages) ---- */

static void add_security(permit_http_header *h, size_t *n) {
  for (size_t i = 0; permit_web_security_headers[i] != NULL; i += 2) {
    h[*n].name = permit_web_security_headers[i];
    h[*n].value = permit_web_security_headers[i + 1];
    (*n)++;
  }
}

void permit_web_send_page(permit_call *c, int status, struct evbuffer *body) {
  permit_http_header h[16];
  size_t n = 0;
  add_security(h, &n);
  size_t len = evbuffer_get_length(body);
  const uint8_t *p = evbuffer_pullup(body, (ev_ssize_t)len);
  permit_http_respond(c, status, "text/html; charset=utf-8", h, n, p, len);
}

void permit_web_send_message(permit_call *c, int status, const char *title,
                             const char *text) {
  struct evbuffer *b = evbuffer_new();
  if (b == NULL) {
    permit_http_respond(c, 503, "text/plain; charset=utf-8", NULL, 0,
                        "out of memory\n", 14);
    return;
  }
  permit_web_message_page(b, title, text, NULL);
  permit_web_send_page(c, status, b);
  evbuffer_free(b);
}

void permit_web_redirect(permit_call *c, const char *location) {
  permit_http_header h[16];
  size_t n = 0;
  add_security(h, &n);
  h[n++] = (permit_http_header){"location", location};
  permit_http_respond(c, 303, "text/plain; charset=utf-8", h, n, NULL, 0);
}

void permit_web_origin(permit_node *n, char *out, size_t cap) {
  const char *base = permit_node_consent_base(n);
  const char *p = strstr(base, "://");
  size_t len = strlen(base);
  if (p != NULL) {
    const char *slash = strchr(p + 3, '/');
    if (slash != NULL) len = (size_t)(slash - base);
  }
  snprintf(out, cap, "%.*s", (int)len, base);
}

static void css_handler(permit_call *c, const permit_http_request *r) {
  (void)r;
  size_t len = 0;
  const char *css = permit_web_css(&len);
  permit_http_header h[] = {{"cache-control", "public, max-age=86400"},
                            {"x-content-type-options", "nosniff"}};
  permit_http_respond(c, 200, "text/css; charset=utf-8", h, 2, css, len);
}

void permit_web_static_route(permit_web_route *out) {
  *out = (permit_web_route){.prefix = "/static/permit.css",
                            .handler = css_handler};
}

/* ---- the consent centre ---- */

static void page_answer(permit_call *c, void *data) {
  buyer_op *op = data;
  char loc[PERMIT_TOKEN_MAX + 32];
  if (op->status == PERMIT_GRPC_OK) {
    const char *m = op->kind == OP_ERASE ? "erased"
                    : op->changed        ? "withdrawn"
                                         : "unchanged";
    snprintf(loc, sizeof loc, "/c/%s?m=%s", op->token, m);
    permit_web_redirect(c, loc);
  } else {
    permit_web_send_message(
        c, op->status == PERMIT_GRPC_NOT_FOUND ? 404 : 503,
        op->status == PERMIT_GRPC_NOT_FOUND ? "Not found" : "Please try again",
        op->msg);
  }
}

static void show_page(permit_consent *co, permit_call *c, const char *token,
                      const uint8_t buyer[32], const char *query) {
  rows r = {0};
  permit_err err = {0};
  if (rows_load(co->n, buyer, &r, &err) != 0) {
    permit_web_send_message(c, 503, "Please try again",
                            "Your choices cannot be read right now.");
    return;
  }
  permit_consent_item *items = calloc(r.n ? r.n : 1, sizeof *items);
  shown *sh = calloc(r.n ? r.n : 1, sizeof *sh);
  char (*hex)[2 * PERMIT_RECORD_ID_LEN + 1] =
      calloc(r.n ? r.n : 1, sizeof *hex);
  struct evbuffer *b = evbuffer_new();
  if (items == NULL || sh == NULL || hex == NULL || b == NULL) {
    permit_web_send_message(c, 503, "Please try again", "Out of memory.");
  } else {
    for (size_t i = 0; i < r.n; i++) {
      const consent_entry *e = r.v[i].e;
      shown_fill(co->n, e, &sh[i]);
      permit_hex_encode(r.v[i].record_id, PERMIT_RECORD_ID_LEN, hex[i]);
      items[i] = (permit_consent_item){.venue = e->venue,
                                       .list_id = e->list_id,
                                       .list_title = sh[i].title,
                                       .notice_text = sh[i].notice,
                                       .notice_version = e->notice_version,
                                       .collected_at_ms = e->collected_at_ms,
                                       .state = state_words(e->state),
                                       .changed_at_ms = e->changed_at_ms,
                                       .record_id_hex = hex[i]};
    }
    const char *flash = NULL;
    if (strcmp(query, "m=withdrawn") == 0)
      flash = "Done: you have left that list. The venue has been told.";
    else if (strcmp(query, "m=unchanged") == 0)
      flash = "You had already left that list.";
    else if (strcmp(query, "m=erased") == 0)
      flash = "Done: every venue has been told to erase your details.";
    char action[PERMIT_TOKEN_MAX + 8], csrf[CSRF_LEN + 1];
    snprintf(action, sizeof action, "/c/%s", token);
    csrf_for(co->n, token, csrf);
    permit_consent_page p = {.node_name = permit_node_name(co->n),
                             .action = action,
                             .csrf = csrf,
                             .flash = flash,
                             .items = items,
                             .n = r.n};
    /* A page that cannot be made is an error, never an empty 200. */
    if (permit_web_consent_page(b, &p) != 0)
      permit_web_send_message(c, 503, "Please try again",
                              "Your choices cannot be shown right now.");
    else
      permit_web_send_page(c, 200, b);
  }
  for (size_t i = 0; sh != NULL && i < r.n; i++) {
    free(sh[i].title);
    free(sh[i].notice);
  }
  if (b != NULL) evbuffer_free(b);
  free(items);
  free(sh);
  free(hex);
  rows_free(&r);
}

static void grpc_answer(permit_call *c, void *data);

/* Submits a change for the buyer; the answer comes from the sync
 * thread. */
static void submit_op(permit_consent *co, permit_call *c, buyer_op *op) {
  op->co = co;
  int web = op->web;
  op->job = permit_job_new(c, web ? page_answer : grpc_answer, free, op);
  if (op->job == NULL) {
    free(op);
    if (web)
      permit_web_send_message(c, 503, "Please try again", "Out of memory.");
    else
      permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (permit_sync_submit(co->sync, buyer_work, op) != 0) {
    permit_job *j = op->job;
    permit_call_set_data(c, NULL);
    if (op->web)
      permit_web_send_message(c, 503, "Please try again",
                              "The service is stopping.");
    else
      permit_call_finish(c, PERMIT_GRPC_UNAVAILABLE, "the node is stopping");
    permit_job_abandon(j);
    permit_job_closed(j);
  }
}

static void consent_web(permit_call *c, const permit_http_request *r) {
  permit_consent *co = permit_call_method_arg(c);
  /* /c/<token>[/<action>] */
  const char *tok = r->path + 3;
  const char *slash = strchr(tok, '/');
  size_t tl = slash != NULL ? (size_t)(slash - tok) : strlen(tok);
  const char *action = slash != NULL ? slash + 1 : "";
  char token[PERMIT_TOKEN_MAX];
  uint8_t buyer[32];
  if (tl == 0 || tl >= sizeof token) {
    permit_web_send_message(c, 404, "Link not valid", token_problem(0));
    return;
  }
  memcpy(token, tok, tl);
  token[tl] = '\0';
  int rc = token_buyer(co->n, token, tl, buyer);
  if (rc != 0) {
    permit_logf(PERMIT_LEVEL_INFO, "consent.bad_link", "%s link refused",
                rc == PERMIT_TOKEN_EXPIRED ? "an expired" : "a forged or "
                                                            "malformed");
    permit_web_send_message(c, rc == PERMIT_TOKEN_EXPIRED ? 410 : 404,
                            rc == PERMIT_TOKEN_EXPIRED ? "Link expired"
                                                       : "Link not valid",
                            token_problem(rc));
    return;
  }
  int get = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
  if (action[0] == '\0') {
    if (!get) {
      permit_web_send_message(c, 405, "Not allowed",
                              "This page is only read.");
      return;
    }
    show_page(co, c, token, buyer, r->query);
    return;
  }
  int withdraw = strcmp(action, "withdraw") == 0;
  int confirm = strcmp(action, "erase-confirm") == 0;
  int erase = strcmp(action, "erase") == 0;
  if (!withdraw && !confirm && !erase) {
    permit_web_send_message(c, 404, "Not found", "There is no such page.");
    return;
  }
  if (strcmp(r->method, "POST") != 0) {
    /* A change needs the form: a link or a prefetch never makes one. */
    permit_web_send_message(c, 405, "Not allowed",
                            "Use the buttons on your consent page.");
    return;
  }
  if (!permit_web_same_origin(r->origin, r->sec_fetch_site, co->origin)) {
    permit_logf(PERMIT_LEVEL_WARN, "consent.cross_site",
                "a cross-site form post was refused");
    permit_web_send_message(c, 403, "Refused",
                            "This request did not come from your consent "
                            "page, so nothing was changed.");
    return;
  }
  permit_form_field f[8];
  size_t nf = 0;
  permit_err err = {0};
  char csrf[CSRF_LEN + 1];
  csrf_for(co->n, token, csrf);
  const char *got;
  if (strncmp(r->content_type, "application/x-www-form-urlencoded", 33) != 0 ||
      permit_form_parse(r->body, r->body_len, f, 8, &nf, &err) != 0 ||
      (got = permit_form_get(f, nf, "csrf")) == NULL ||
      strlen(got) != CSRF_LEN || !permit_memeq_ct(got, csrf, CSRF_LEN)) {
    permit_web_send_message(c, 403, "Refused",
                            "This form is not from your consent page, or it "
                            "is damaged; nothing was changed.");
    return;
  }
  char action_path[PERMIT_TOKEN_MAX + 8];
  snprintf(action_path, sizeof action_path, "/c/%s", token);
  if (confirm) {
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
      permit_web_send_message(c, 503, "Please try again", "Out of memory.");
      return;
    }
    if (permit_web_erase_confirm_page(b, permit_node_name(co->n),
                                      action_path, csrf) != 0)
      permit_web_send_message(c, 503, "Please try again",
                              "This page cannot be shown right now; nothing "
                              "was changed.");
    else
      permit_web_send_page(c, 200, b);
    evbuffer_free(b);
    return;
  }
  buyer_op *op = calloc(1, sizeof *op);
  if (op == NULL) {
    permit_web_send_message(c, 503, "Please try again", "Out of memory.");
    return;
  }
  op->web = 1;
  memcpy(op->buyer, buyer, 32);
  snprintf(op->token, sizeof op->token, "%s", token);
  if (withdraw) {
    const char *rec = permit_form_get(f, nf, "record");
    size_t idl = 0;
    if (rec == NULL || strlen(rec) != 2 * PERMIT_RECORD_ID_LEN ||
        permit_hex_decode(rec, strlen(rec), op->record_id,
                          sizeof op->record_id, &idl) != 0) {
      free(op);
      permit_web_send_message(c, 400, "Refused",
                              "The form names no opt-in; nothing was "
                              "changed.");
      return;
    }
    op->kind = OP_WITHDRAW;
  } else {
    const char *yes = permit_form_get(f, nf, "confirm");
    if (yes == NULL || strcmp(yes, "yes") != 0) {
      free(op);
      permit_web_send_message(c, 400, "Not confirmed",
                              "Erasure needs the confirmation; nothing was "
                              "changed.");
      return;
    }
    op->kind = OP_ERASE;
  }
  submit_op(co, c, op);
}

static void web_close(permit_call *c, int cancelled) {
  (void)cancelled;
  permit_job_closed(permit_call_data(c));
}

/* ---- Buyer (gRPC) ---- */

static int token_call(permit_consent *co, permit_call *c, const char *token,
                      uint8_t buyer[32]) {
  size_t tl = strlen(token);
  int rc = tl == 0 || tl >= PERMIT_TOKEN_MAX
               ? PERMIT_EINVAL
               : token_buyer(co->n, token, tl, buyer);
  if (rc == 0) return 0;
  permit_call_finish(c,
                     rc == PERMIT_TOKEN_EXPIRED ? PERMIT_GRPC_FAILED_PRECONDITION
                                                : PERMIT_GRPC_PERMISSION_DENIED,
                     "%s",
                     rc == PERMIT_TOKEN_EXPIRED
                         ? "the consent link has expired"
                         : "the consent link is not valid (forged, damaged "
                           "or revoked)");
  return -1;
}

static int issuer_only(permit_consent *co, permit_call *c) {
  if (permit_node_roles(co->n) & PERMIT_ROLE_ISSUER) return 0;
  permit_call_finish(c, PERMIT_GRPC_FAILED_PRECONDITION,
                     "%s keeps no buyer consents (no issuer role)",
                     permit_node_name(co->n));
  return -1;
}

static void list_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_consent *co = permit_call_method_arg(c);
  if (issuer_only(co, c) != 0) return;
  Permit__V1__ListConsentsRequest *req =
      permit__v1__list_consents_request__unpack(NULL, len, msg);
  uint8_t buyer[32];
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a ListConsentsRequest");
    return;
  }
  rows r = {0};
  permit_err err = {0};
  if (token_call(co, c, req->token, buyer) != 0) goto out;
  if (rows_load(co->n, buyer, &r, &err) != 0) {
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "consents cannot be read");
    goto out;
  }
  Permit__V1__Consent *cs = calloc(r.n ? r.n : 1, sizeof *cs);
  Permit__V1__Consent **cp = calloc(r.n ? r.n : 1, sizeof *cp);
  shown *sh = calloc(r.n ? r.n : 1, sizeof *sh);
  if (cs == NULL || cp == NULL || sh == NULL) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    for (size_t i = 0; i < r.n; i++) {
      const consent_entry *e = r.v[i].e;
      shown_fill(co->n, e, &sh[i]);
      permit__v1__consent__init(&cs[i]);
      cs[i].venue = e->venue;
      cs[i].list_id = e->list_id;
      cs[i].list_title = sh[i].title != NULL ? sh[i].title : "";
      cs[i].record_id.data = r.v[i].record_id;
      cs[i].record_id.len = PERMIT_RECORD_ID_LEN;
      cs[i].collected_at_ms = e->collected_at_ms;
      cs[i].notice_version = e->notice_version;
      cs[i].notice_sha256 = e->notice_sha256;
      cs[i].notice_text = sh[i].notice != NULL ? sh[i].notice : "";
      cs[i].state = e->state;
      cs[i].changed_at_ms = e->changed_at_ms;
      cp[i] = &cs[i];
    }
    Permit__V1__ListConsentsResponse resp =
        PERMIT__V1__LIST_CONSENTS_RESPONSE__INIT;
    resp.n_consents = r.n;
    resp.consents = cp;
    size_t n = permit__v1__list_consents_response__get_packed_size(&resp);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL) {
      permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    } else {
      permit__v1__list_consents_response__pack(&resp, buf);
      if (permit_call_send(c, buf, n) != 0)
        permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED,
                           "the answer does not fit in one message");
      else
        permit_call_finish(c, PERMIT_GRPC_OK, NULL);
      free(buf);
    }
  }
  for (size_t i = 0; sh != NULL && i < r.n; i++) {
    free(sh[i].title);
    free(sh[i].notice);
  }
  free(sh);
  free(cs);
  free(cp);
  rows_free(&r);
out:
  permit__v1__list_consents_request__free_unpacked(req, NULL);
}

static void grpc_answer(permit_call *c, void *data) {
  buyer_op *op = data;
  if (op->status != PERMIT_GRPC_OK) {
    permit_call_finish(c, op->status, "%s", op->msg);
    return;
  }
  uint8_t buf[64];
  size_t n;
  if (op->kind == OP_WITHDRAW) {
    Permit__V1__WithdrawResponse r = PERMIT__V1__WITHDRAW_RESPONSE__INIT;
    r.changed = op->changed;
    r.withdrawn_at_ms = op->at_ms;
    n = permit__v1__withdraw_response__pack(&r, buf);
  } else {
    Permit__V1__EraseResponse r = PERMIT__V1__ERASE_RESPONSE__INIT;
    r.records = op->records;
    r.venues = op->venues;
    n = permit__v1__erase_response__pack(&r, buf);
  }
  permit_call_send(c, buf, n);
  permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

static void change_message(permit_call *c, const uint8_t *msg, size_t len,
                           int kind) {
  permit_consent *co = permit_call_method_arg(c);
  if (issuer_only(co, c) != 0) return;
  buyer_op *op = calloc(1, sizeof *op);
  if (op == NULL) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  op->kind = kind;
  const char *token = NULL;
  Permit__V1__WithdrawRequest *w = NULL;
  Permit__V1__EraseRequest *e = NULL;
  if (kind == OP_WITHDRAW) {
    w = permit__v1__withdraw_request__unpack(NULL, len, msg);
    if (w == NULL) {
      permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                         "request is not a WithdrawRequest");
      goto fail;
    }
    if (w->record_id.len != PERMIT_RECORD_ID_LEN) {
      permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                         "record_id must be %d bytes, not %zu",
                         PERMIT_RECORD_ID_LEN, w->record_id.len);
      goto fail;
    }
    memcpy(op->record_id, w->record_id.data, PERMIT_RECORD_ID_LEN);
    token = w->token;
  } else {
    e = permit__v1__erase_request__unpack(NULL, len, msg);
    if (e == NULL) {
      permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                         "request is not an EraseRequest");
      goto fail;
    }
    token = e->token;
  }
  if (token_call(co, c, token, op->buyer) != 0) goto fail;
  if (w != NULL) permit__v1__withdraw_request__free_unpacked(w, NULL);
  if (e != NULL) permit__v1__erase_request__free_unpacked(e, NULL);
  submit_op(co, c, op);
  return;
fail:
  if (w != NULL) permit__v1__withdraw_request__free_unpacked(w, NULL);
  if (e != NULL) permit__v1__erase_request__free_unpacked(e, NULL);
  free(op);
}

static void withdraw_message(permit_call *c, const uint8_t *msg, size_t len) {
  change_message(c, msg, len, OP_WITHDRAW);
}

static void erase_message(permit_call *c, const uint8_t *msg, size_t len) {
  change_message(c, msg, len, OP_ERASE);
}

static void grpc_close(permit_call *c, int cancelled) {
  (void)cancelled;
  permit_job_closed(permit_call_data(c));
}

/* ---- venues' unsubscribes (sync thread) ---- */

int permit_consent_issued(permit_node *n, const char *venue,
                          const ProtobufCBinaryData *record_id) {
  if (record_id->len != PERMIT_RECORD_ID_LEN) return 0;
  uint8_t buyer[32];
  char v[PERMIT_NAME_MAX + 1];
  if (rec_lookup(n, record_id->data, buyer, v) != 0) return 0;
  return strcmp(v, venue) == 0;
}

int permit_consent_stage_withdrawal(permit_node *n, const char *venue,
                                    const Permit__V1__Record *rec,
                                    permit_batch *b, int *applied,
                                    permit_err *err) {
  *applied = 0;
  const ProtobufCBinaryData *id = &rec->withdrawal->refers_to;
  uint8_t buyer[32], key[BOPT_KEY_LEN];
  char v[PERMIT_NAME_MAX + 1];
  if (id->len != PERMIT_RECORD_ID_LEN) return 0;
  int rc = rec_lookup(n, id->data, buyer, v);
  if (rc == PERMIT_ENOTFOUND) return 0; /* erased since */
  if (rc != 0)
    return permit_err_set(err, rc, "cannot read the opt-in's record row");
  bopt_key(buyer, id->data, key);
  consent_entry *e = NULL;
  rc = entry_get(n, key, &e);
  if (rc == PERMIT_ENOTFOUND) return 0;
  if (rc != 0)
    return permit_err_set(err, rc, "cannot read the opt-in's consent row");
  char hex[2 * PERMIT_RECORD_ID_LEN + 1];
  permit_hex_encode(id->data, PERMIT_RECORD_ID_LEN, hex);
  if (strcmp(v, venue) != 0 || strcmp(e->venue, venue) != 0 ||
      strcmp(e->list_id, rec->list_id) != 0 ||
      e->subject.len != rec->subject.len ||
      !permit_memeq_ct(e->subject.data, rec->subject.data, e->subject.len)) {
    permit_logf(PERMIT_LEVEL_WARN, "consent.mismatch",
                "%s withdrew opt-in %s with another list or subject; "
                "ignored",
                venue, hex);
  } else if (strcmp(e->state, "active") == 0) {
    char *was = e->state;
    e->state = "unsubscribed";
    e->changed_at_ms = permit_now_ms();
    rc = entry_put(b, key, e);
    if (rc == 0) idem_put(b, e, id->data, PERMIT_IDEM_WITHDRAWN);
    e->state = was;
    if (rc != 0) rc = permit_err_set(err, rc, "out of memory");
    else *applied = 1;
  }
  permit__internal__consent_entry__free_unpacked(e, NULL);
  return rc;
}

/* ---- the service ---- */

permit_consent *permit_consent_new(permit_node *n, permit_sync *sync,
                                   permit_err *err) {
  permit_consent *co = calloc(1, sizeof *co);
  if (co == NULL) {
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  co->n = n;
  co->sync = sync;
  permit_web_origin(n, co->origin, sizeof co->origin);
  return co;
}

void permit_consent_free(permit_consent *co) { free(co); }

void permit_consent_methods(permit_consent *co,
                            permit_method out[PERMIT_BUYER_METHODS]) {
  out[0] = (permit_method){.path = "/permit.v1.Buyer/ListConsents",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = list_message,
                           .arg = co};
  out[1] = (permit_method){.path = "/permit.v1.Buyer/Withdraw",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = withdraw_message,
                           .on_close = grpc_close,
                           .arg = co};
  out[2] = (permit_method){.path = "/permit.v1.Buyer/Erase",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = erase_message,
                           .on_close = grpc_close,
                           .arg = co};
}

void permit_consent_routes(permit_consent *co,
                           permit_web_route out[PERMIT_CONSENT_ROUTES]) {
  out[0] = (permit_web_route){.prefix = "/c/",
                              .max_body = PERMIT_FORM_BODY_MAX,
                              .handler = consent_web,
                              .on_close = web_close,
                              .arg = co};
}
