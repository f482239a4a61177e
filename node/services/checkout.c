/*
 * checkout.c - permit.v1.Checkout, the reseller checkout's local API
 * (protocol.md 4 and 7): ListOffers shows a venue's lists, RecordOptIn
 * turns a ticked box into a signed opt-in record, sealed to the venue,
 * in the venue's log.
 *
 * RecordOptIn never blocks the worker: the worker checks the request and
 * claims its idempotency key, a pool thread (one per core) looks the key
 * up, builds, seals and signs the record and hands it to the log's group
 * commit (permit_log_append_async), and the worker answers when the
 * commit thread reports it durable.  The pool spreads the signing and
 * sealing over every core, however the connections fall on the workers.
 * In the same atomic batch as the entry it writes (keys and values
 * binary):
 *
 *   idempotency  HMAC(secret, "order\n" order_ref "\n" venue "\n" list_id)
 *                -> record_id (16) || seq (8, BE) || state (1)
 *   and the buyer's consent rows (permit/consent.h): "bopt/" and "rec/",
 *   keyed by HMAC(secret, "buyer\n" email), never the email.
 *
 * No plaintext email or name is stored, logged or put in an error
 * message (those are logged too): the contact exists only inside the
 * sealed record.
 *
 * Idempotency under concurrency: the log cannot check "is this key new?"
 * for two appends in one group, so the checkout serialises them.  The
 * first request for an (order_ref, venue, list_id) claims the key in an
 * in-memory table of in-flight keys, then looks it up in the store.  A
 * request for a claimed key joins the claim as a waiter and is answered
 * when the first one ends: ALREADY_ACTIVE with its record when it was
 * recorded, UNAVAILABLE ("retry") when it failed.  The claim is dropped
 * only once the record and its key are durable, so a later request finds
 * the key in the store.
 *
 * Every request's state (an "op") is shared by its worker and the commit
 * thread; a small mutex and a stage decide which of them frees it, so
 * that a call the client cancelled meanwhile is never touched and its
 * state is freed exactly once.
 */
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "permit/consent.h"
#include "permit/hpke.h"
#include "permit/logging.h"
#include "permit/node_services.h"
#include "permit/pool.h"
#include "permit/util.h"

#define EMAIL_MAX 254
#define NAME_MAX_BYTES 100
#define LOCALE_MAX 35
#define ORDER_REF_MAX 128
#define USER_AGENT_MAX 512
#define IP_PREFIX_MAX 64
#define FLIGHT_BUCKETS 256
#define OPT_IN_METHOD "checkout-checkbox"
#define LINK_MAX PERMIT_LINK_MAX
/* Messages quote node names and list ids: room for the longest. */
#define WHY_LEN 1024

/* Who may free an op (see the file comment). */
enum {
  OP_WORKER, /* only its worker knows it */
  OP_SHARED, /* in a flight: freed by the resolver once the call closed */
  OP_POSTED, /* answer queued on the worker: freed by deliver() */
  OP_ORPHAN  /* could not be queued: freed by on_close */
};

typedef struct flight flight;
typedef struct permit_checkout permit_checkout;

typedef struct op {
  pthread_mutex_t mu; /* closed and stage */
  int closed, stage;
  permit_call *call;
  struct event_base *base;
  struct op *next; /* in its flight */
  /* the answer */
  int status; /* a gRPC status */
  int created;
  char msg[WHY_LEN];
  uint8_t record_id[PERMIT_RECORD_ID_LEN];
  uint64_t seq;
  char link[LINK_MAX];
  /* the append, for the request that claimed the key */
  permit_checkout *co;
  flight *f;
  uint8_t *entry;
  permit_iov iov;
  uint8_t idem_key[PERMIT_SHA256_LEN];
  uint8_t buyer[PERMIT_SHA256_LEN];
  char venue[PERMIT_NAME_MAX + 1];
  char list_id[PERMIT_LIST_ID_MAX + 1];
  /* for the consent row */
  uint8_t subject[PERMIT_SUBJECT_LEN];
  uint8_t notice_sha[32];
  uint32_t notice_version;
  int64_t collected_at_ms;
} op;

/* The requests for one idempotency key while its first is in flight. */
struct flight {
  uint8_t key[PERMIT_SHA256_LEN];
  /* The buyer the order's opt-in is (or is being) recorded for: the
   * claimer's, or the stored record's when the order is a replay.  A
   * request naming another buyer is refused, not told ALREADY_ACTIVE. */
  uint8_t buyer[PERMIT_SHA256_LEN];
  flight *next;   /* in its bucket */
  op *ops, *tail; /* the claimer first */
};

/* A venue's catalog as last verified, keyed by its stored bytes. */
typedef struct cat_entry {
  char venue[PERMIT_NAME_MAX + 1];
  uint8_t *raw;
  size_t len;
  Permit__V1__Catalog *cat;
} cat_entry;

struct permit_checkout {
  permit_node *n;
  pthread_mutex_t mu; /* flights, pending */
  pthread_cond_t cv;  /* pending reached zero */
  flight *flights[FLIGHT_BUCKETS];
  int pending; /* claims not yet resolved */
  pthread_mutex_t cat_mu;
  cat_entry *cats[PERMIT_MAX_PEERS];
  size_t ncats;
  permit_pool *pool; /* builds records; NULL: the worker does */
};

/* A claimed request on its way to the pool. */
typedef struct claim_task {
  permit_checkout *co;
  op *o;
  flight *f;
  Permit__V1__RecordOptInRequest *req;
  char email[EMAIL_MAX + 1]; /* normalized */
} claim_task;

/* ---- checks ---- */

/*
 * The length of the UTF-8 sequence at |s| (|n| bytes left), or 0 when it
 * is not a well-formed one (RFC 3629 section 4: no overlong forms, no
 * surrogates, nothing above U+10FFFF).
 */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char b = s[0], lo = 0x80, hi = 0xbf;
  size_t len;
  if (b < 0x80) return 1;
  if (b >= 0xc2 && b <= 0xdf) {
    len = 2;
  } else if (b >= 0xe0 && b <= 0xef) {
    len = 3;
    if (b == 0xe0) lo = 0xa0;
    if (b == 0xed) hi = 0x9f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    len = 4;
    if (b == 0xf0) lo = 0x90;
    if (b == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xbf) return 0;
  return len;
}

/* Text of at most |max| bytes: UTF-8 without C0, DEL or C1 controls. */
static int text_check(const char *what, const char *s, size_t max,
                      char *why, size_t cap) {
  size_t len = strlen(s);
  if (len > max) {
    snprintf(why, cap, "%s is %zu bytes, more than %zu", what, len, max);
    return -1;
  }
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t k = utf8_seq(u + i, len - i);
    if (k == 0) {
      snprintf(why, cap, "%s is not valid UTF-8", what);
      return -1;
    }
    if (u[i] < 0x20 || u[i] == 0x7f || (k == 2 && u[i] == 0xc2 &&
                                        u[i + 1] < 0xa0)) {
      snprintf(why, cap, "%s holds a control character", what);
      return -1;
    }
    i += k;
  }
  return 0;
}

static int ascii_alnum(unsigned char b) {
  return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
         (b >= '0' && b <= '9');
}

/* Normalizes and checks an address into |out| (EMAIL_MAX + 1 bytes).
 * The messages never quote it: they are logged. */
static int email_check(const char *email, char *out, char *why, size_t cap) {
  int rc = permit_email_normalize(email, strlen(email), out, EMAIL_MAX + 1);
  if (rc == PERMIT_ETOOBIG) {
    snprintf(why, cap, "email is longer than %d bytes", EMAIL_MAX);
    return -1;
  }
  if (rc != 0) {
    snprintf(why, cap, "email is empty");
    return -1;
  }
  size_t len = strlen(out);
  const char *at = strchr(out, '@');
  if (len < 3 || at == NULL || strchr(at + 1, '@') != NULL) {
    snprintf(why, cap, "email must be one address: local-part@domain");
    return -1;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char b = (unsigned char)out[i];
    if (b <= 0x20 || b == 0x7f) {
      snprintf(why, cap, "email holds a space or a control character");
      return -1;
    }
  }
  if (text_check("email", out, EMAIL_MAX, why, cap) != 0) return -1;
  const char *domain = at + 1, *dot = strchr(domain, '.');
  size_t dl = strlen(domain);
  if (at == out) {
    snprintf(why, cap, "email has an empty local part (before the @)");
    return -1;
  }
  if (dot == NULL || domain[0] == '.' || domain[dl - 1] == '.' ||
      strstr(domain, "..") != NULL) {
    snprintf(why, cap, "email domain must be a name with a dot, like "
                       "example.com");
    return -1;
  }
  /* RFC 5322's dot-atom (UTF-8 allowed, RFC 6531): no quoted local parts,
   * no specials like <>()[],;:\" that a mailing tool would misread. */
  size_t ll = (size_t)(at - out);
  if (out[0] == '.' || out[ll - 1] == '.' || memmem(out, ll, "..", 2)) {
    snprintf(why, cap, "email local part (before the @) may not start or end "
                       "with a dot or hold two in a row");
    return -1;
  }
  for (size_t i = 0; i < ll; i++) {
    unsigned char b = (unsigned char)out[i];
    if (b < 0x80 && !ascii_alnum(b) &&
        strchr("!#$%&'*+-/=?^_`{|}~.", b) == NULL) {
      snprintf(why, cap, "email local part holds '%c', which an address "
                         "may only hold in quotes", b);
      return -1;
    }
  }
  for (size_t i = 0; i < dl; i++) {
    unsigned char b = (unsigned char)domain[i];
    if (b < 0x80 && !ascii_alnum(b) && b != '-' && b != '.') {
      snprintf(why, cap, "email domain may hold only letters, digits, '-' "
                         "and '.'");
      return -1;
    }
  }
  return 0;
}

static int order_ref_check(const char *s, char *why, size_t cap) {
  size_t len = strlen(s);
  if (len == 0 || len > ORDER_REF_MAX) {
    snprintf(why, cap, "order_ref must be 1 to %d characters", ORDER_REF_MAX);
    return -1;
  }
  for (size_t i = 0; i < len; i++)
    if (s[i] < 0x20 || s[i] > 0x7e) {
      snprintf(why, cap, "order_ref must be printable ASCII");
      return -1;
    }
  return 0;
}

static int locale_check(const char *s, char *why, size_t cap) {
  size_t len = strlen(s);
  if (len > LOCALE_MAX) {
    snprintf(why, cap, "locale is longer than %d characters", LOCALE_MAX);
    return -1;
  }
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '-')) {
      snprintf(why, cap, "locale must be a BCP 47 tag such as en-GB "
                         "(letters, digits and '-')");
      return -1;
    }
  }
  return 0;
}

static int ip_prefix_check(const char *s, char *why, size_t cap) {
  size_t len = strlen(s);
  if (len > IP_PREFIX_MAX) {
    snprintf(why, cap, "ip_prefix is longer than %d characters",
             IP_PREFIX_MAX);
    return -1;
  }
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
          (c >= 'A' && c <= 'F') || c == '.' || c == ':' || c == '/')) {
      snprintf(why, cap, "ip_prefix must be an address prefix such as "
                         "203.0.113.0/24");
      return -1;
    }
  }
  return 0;
}

/* Checks every field of |req| but those that need the venue's catalog;
 * the normalized address goes to |email|. */
static int request_check(const Permit__V1__RecordOptInRequest *req,
                         char *email, char *why, size_t cap) {
  permit_err sub = {0};
  if (order_ref_check(req->order_ref, why, cap) != 0 ||
      email_check(req->email, email, why, cap) != 0 ||
      text_check("given_name", req->given_name, NAME_MAX_BYTES, why, cap) ||
      text_check("family_name", req->family_name, NAME_MAX_BYTES, why,
                 cap) ||
      locale_check(req->locale, why, cap) != 0 ||
      text_check("user_agent", req->user_agent, USER_AGENT_MAX, why, cap) ||
      ip_prefix_check(req->ip_prefix, why, cap) != 0)
    return -1;
  if (req->venue[0] == '\0') {
    snprintf(why, cap, "venue is empty");
    return -1;
  }
  if (permit_name_validate(req->venue, &sub) != 0) {
    snprintf(why, cap, "venue: %s", sub.msg);
    return -1;
  }
  if (permit_list_id_validate(req->list_id, &sub) != 0) {
    snprintf(why, cap, "list_id: %s", sub.msg);
    return -1;
  }
  if (req->notice_version == 0) {
    snprintf(why, cap, "notice_version must be the version shown to the "
                       "buyer (1 or more)");
    return -1;
  }
  return 0;
}

/* ---- keys and links ---- */

/* HMAC-SHA256 under the node secret of the parts, joined by "\n". */
static int secret_mac(permit_checkout *co, const char *const *parts,
                      size_t n, uint8_t out[PERMIT_SHA256_LEN]) {
  char buf[1024];
  size_t len = 0;
  for (size_t i = 0; i < n; i++) {
    size_t pl = strlen(parts[i]);
    if (len + pl + 1 > sizeof buf) return PERMIT_ETOOBIG;
    if (i > 0) buf[len++] = '\n';
    memcpy(buf + len, parts[i], pl);
    len += pl;
  }
  int rc = permit_hmac_sha256(permit_node_secret(co->n), 32,
                              (const uint8_t *)buf, len, out);
  permit_wipe(buf, len);
  return rc;
}

/* ---- catalogs ---- */

/*
 * The current notice of |list_id| in |venue|'s stored catalog.  The
 * catalog is verified again only when its stored bytes changed.  On
 * failure returns a gRPC status and fills |why|.
 */
static int catalog_notice(permit_checkout *co, const permit_peer *venue,
                          const char *list_id, uint32_t *version,
                          uint8_t sha[32], char *why, size_t cap) {
  char key[16 + PERMIT_NAME_MAX];
  int kl = snprintf(key, sizeof key, "catalog/%s", venue->name);
  uint8_t *raw = NULL;
  size_t len = 0;
  permit_err err = {0};
  int rc = permit_store_get(permit_node_store(co->n), PERMIT_CF_DEFAULT, key,
                            (size_t)kl, &raw, &len, &err);
  if (rc == PERMIT_ENOTFOUND) {
    snprintf(why, cap, "no catalog from %s yet (it is fetched from the "
                       "venue: is it reachable?)", venue->name);
    return PERMIT_GRPC_NOT_FOUND;
  }
  if (rc != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "checkout.store_failed", "%s", err.msg);
    snprintf(why, cap, "cannot read the catalog of %s", venue->name);
    return PERMIT_GRPC_INTERNAL;
  }
  int status = PERMIT_GRPC_OK;
  pthread_mutex_lock(&co->cat_mu);
  cat_entry *e = NULL;
  for (size_t i = 0; i < co->ncats && e == NULL; i++)
    if (strcmp(co->cats[i]->venue, venue->name) == 0) e = co->cats[i];
  if (e == NULL && co->ncats < PERMIT_MAX_PEERS &&
      (e = calloc(1, sizeof *e)) != NULL) {
    snprintf(e->venue, sizeof e->venue, "%s", venue->name);
    co->cats[co->ncats++] = e;
  }
  if (e == NULL) {
    status = PERMIT_GRPC_RESOURCE_EXHAUSTED;
    snprintf(why, cap, "out of memory");
  } else if (e->cat == NULL || e->len != len ||
             memcmp(e->raw, raw, len) != 0) {
    Permit__V1__Catalog *cat = NULL;
    if (permit_catalog_verify(venue, raw, len, &cat, &err) != 0) {
      permit_logf(PERMIT_LEVEL_ERROR, "checkout.bad_catalog",
                  "the stored catalog of %s: %s", venue->name, err.msg);
      status = PERMIT_GRPC_INTERNAL;
      snprintf(why, cap, "the stored catalog of %s does not verify",
               venue->name);
    } else {
      if (e->cat != NULL) permit__v1__catalog__free_unpacked(e->cat, NULL);
      free(e->raw);
      e->cat = cat;
      e->raw = raw;
      e->len = len;
      raw = NULL;
    }
  }
  if (status == PERMIT_GRPC_OK) {
    const Permit__V1__CatalogList *l = NULL;
    for (size_t i = 0; i < e->cat->n_lists && l == NULL; i++)
      if (strcmp(e->cat->lists[i]->list_id, list_id) == 0)
        l = e->cat->lists[i];
    if (l == NULL) {
      status = PERMIT_GRPC_NOT_FOUND;
      snprintf(why, cap, "%s has no list \"%s\"", venue->name, list_id);
    } else {
      *version = l->notice_version;
      memcpy(sha, l->notice_sha256.data, 32); /* verified: 32 bytes */
    }
  }
  pthread_mutex_unlock(&co->cat_mu);
  free(raw);
  return status;
}

/* ---- ops ---- */

static op *op_new(permit_call *c) {
  op *o = calloc(1, sizeof *o);
  if (o == NULL) return NULL;
  pthread_mutex_init(&o->mu, NULL);
  o->call = c;
  o->base = permit_call_base(c);
  return o;
}

static void op_free(op *o) {
  free(o->entry);
  pthread_mutex_destroy(&o->mu);
  free(o);
}

/* Sends the answer and ends the call (worker thread). */
static void respond(op *o) {
  permit_call *c = o->call;
  if (o->status != PERMIT_GRPC_OK) {
    permit_call_finish(c, o->status, "%s", o->msg);
    return;
  }
  Permit__V1__RecordOptInResponse r = PERMIT__V1__RECORD_OPT_IN_RESPONSE__INIT;
  r.record_id.data = o->record_id;
  r.record_id.len = sizeof o->record_id;
  r.status = o->created
                 ? PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__CREATED
                 : PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__ALREADY_ACTIVE;
  r.consent_link = o->link;
  r.seq = o->seq;
  uint8_t buf[64 + LINK_MAX];
  size_t n = permit__v1__record_opt_in_response__pack(&r, buf);
  if (permit_call_send(c, buf, n) != 0)
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "cannot queue the answer");
  else
    permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

/* event_base_once callback on the op's worker. */
static void deliver(evutil_socket_t fd, short what, void *arg) {
  op *o = arg;
  (void)fd, (void)what;
  pthread_mutex_lock(&o->mu);
  int closed = o->closed;
  o->stage = OP_WORKER;
  pthread_mutex_unlock(&o->mu);
  if (!closed) {
    permit_call_set_data(o->call, NULL);
    respond(o);
  }
  op_free(o);
}

/* Hands |o|'s answer to its worker, or frees it if its call is gone. */
static void settle(op *o) {
  pthread_mutex_lock(&o->mu);
  if (o->closed) {
    pthread_mutex_unlock(&o->mu);
    op_free(o);
    return;
  }
  o->stage = event_base_once(o->base, -1, EV_TIMEOUT, deliver, o, NULL) == 0
                 ? OP_POSTED
                 : OP_ORPHAN; /* the client's deadline ends it */
  pthread_mutex_unlock(&o->mu);
}

static void optin_close(permit_call *c, int cancelled) {
  op *o = permit_call_data(c);
  (void)cancelled;
  if (o == NULL) return;
  pthread_mutex_lock(&o->mu);
  o->closed = 1;
  int mine = o->stage == OP_WORKER || o->stage == OP_ORPHAN;
  pthread_mutex_unlock(&o->mu);
  if (mine) op_free(o);
}

/*
 * Ends the claim |f| and answers everyone in it: with |status| OK the
 * claimer gets CREATED (when |created|) or ALREADY_ACTIVE, the waiters
 * ALREADY_ACTIVE, all with |record_id| and |seq|; otherwise the claimer
 * gets |status| and |msg| and the waiters are told to retry.  Any thread.
 */
static void flight_resolve(permit_checkout *co, flight *f, int status,
                           const char *msg, int created,
                           const uint8_t *record_id, uint64_t seq) {
  uint8_t id[PERMIT_RECORD_ID_LEN] = {0};
  if (record_id != NULL) memcpy(id, record_id, sizeof id);
  pthread_mutex_lock(&co->mu);
  flight **pp = &co->flights[f->key[0]];
  while (*pp != f) pp = &(*pp)->next;
  *pp = f->next;
  pthread_mutex_unlock(&co->mu);
  for (op *o = f->ops, *next; o != NULL; o = next) {
    next = o->next;
    int claimer = o == f->ops;
    if (status == PERMIT_GRPC_OK &&
        memcmp(o->buyer, f->buyer, sizeof f->buyer) != 0) {
      o->status = PERMIT_GRPC_ALREADY_EXISTS;
      snprintf(o->msg, sizeof o->msg,
               "this order already has an opt-in to this list, recorded for "
               "a different buyer; nothing was recorded (a new buyer needs "
               "a new order reference)");
    } else if (status == PERMIT_GRPC_OK) {
      o->status = PERMIT_GRPC_OK;
      o->created = claimer && created;
      memcpy(o->record_id, id, sizeof id);
      o->seq = seq;
    } else if (claimer) {
      o->status = status;
      snprintf(o->msg, sizeof o->msg, "%s", msg);
    } else {
      o->status = PERMIT_GRPC_UNAVAILABLE;
      snprintf(o->msg, sizeof o->msg,
               "a request for the same order was being recorded and did not "
               "complete; retry");
    }
    settle(o);
  }
  free(f);
  pthread_mutex_lock(&co->mu);
  if (--co->pending == 0) pthread_cond_broadcast(&co->cv);
  pthread_mutex_unlock(&co->mu);
}

/* permit_log_extra_fn: the indexes, in the entry's batch (commit thread). */
static int optin_extra(void *arg, uint64_t seq, permit_batch *b) {
  op *o = arg;
  uint8_t v[PERMIT_RECORD_ID_LEN + 8 + 1];
  memcpy(v, o->record_id, PERMIT_RECORD_ID_LEN);
  permit_put_u64be(v + PERMIT_RECORD_ID_LEN, seq);
  v[PERMIT_RECORD_ID_LEN + 8] = PERMIT_IDEM_ACTIVE;
  permit_batch_put(b, PERMIT_CF_IDEMPOTENCY, o->idem_key, sizeof o->idem_key,
                   v, sizeof v);
  Permit__Internal__ConsentEntry e = PERMIT__INTERNAL__CONSENT_ENTRY__INIT;
  e.venue = o->venue;
  e.list_id = o->list_id;
  e.collected_at_ms = o->collected_at_ms;
  e.notice_version = o->notice_version;
  e.notice_sha256.data = o->notice_sha;
  e.notice_sha256.len = sizeof o->notice_sha;
  e.state = "active";
  e.subject.data = o->subject;
  e.subject.len = sizeof o->subject;
  e.idem_key.data = o->idem_key;
  e.idem_key.len = sizeof o->idem_key;
  permit_consent_stage_optin(b, o->buyer, o->record_id, seq, &e);
  return 0;
}

/* permit_log_done_fn: the append is durable or failed (commit thread). */
static void optin_done(void *arg, int rc, uint64_t seq, const permit_err *err) {
  op *o = arg;
  permit_checkout *co = o->co;
  if (rc != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "checkout.append_failed",
                "opt-in for %s list %s: %s", o->venue, o->list_id,
                err != NULL ? err->msg : permit_strerror(rc));
    flight_resolve(co, o->f, PERMIT_GRPC_UNAVAILABLE,
                   "the opt-in could not be stored durably; retry", 0, NULL,
                   0);
    return;
  }
  char hex[2 * PERMIT_RECORD_ID_LEN + 1];
  permit_hex_encode(o->record_id, PERMIT_RECORD_ID_LEN, hex);
  permit_logf(PERMIT_LEVEL_INFO, "checkout.opt_in",
              "record %s for %s list %s, entry %llu", hex, o->venue,
              o->list_id, (unsigned long long)seq);
  permit_node_grew(co->n, o->venue);
  flight_resolve(co, o->f, PERMIT_GRPC_OK, NULL, 1, o->record_id, seq);
}

/* Seals |email| and the names to |venue| and signs the record into
 * o->entry. */
static int build_record(permit_checkout *co, op *o,
                        const Permit__V1__RecordOptInRequest *req,
                        const char *email, const permit_peer *venue,
                        uint32_t version, const uint8_t sha[32],
                        permit_err *err) {
  const char *issuer = permit_node_name(co->n);
  uint8_t subject[PERMIT_SUBJECT_LEN], order_hash[PERMIT_SHA256_LEN];
  if (permit_random(o->record_id, sizeof o->record_id) != 0)
    return permit_err_set(err, PERMIT_ECRYPTO, "no randomness");
  const char *order_parts[] = {"order-ref", req->order_ref};
  if (permit_subject(venue->pair_key, email, strlen(email), subject) != 0 ||
      secret_mac(co, order_parts, 2, order_hash) != 0)
    return permit_err_set(err, PERMIT_ECRYPTO, "cannot derive the subject");

  Permit__V1__Contact ct = PERMIT__V1__CONTACT__INIT;
  ct.email = (char *)email;
  ct.given_name = req->given_name;
  ct.family_name = req->family_name;
  ct.locale = req->locale;
  /* Bounded by the checks: 254 + 100 + 100 + 35 bytes and their tags. */
  uint8_t pt[640], sealed[PERMIT_HPKE_ENC_LEN + sizeof pt +
                          PERMIT_AEAD_TAG_LEN];
  size_t ptl = permit__v1__contact__get_packed_size(&ct);
  if (ptl > sizeof pt)
    return permit_err_set(err, PERMIT_ETOOBIG, "contact too large");
  permit__v1__contact__pack(&ct, pt);
  char info[sizeof PERMIT_CONTACT_INFO + 2 * PERMIT_NAME_MAX + 2];
  int il = snprintf(info, sizeof info, "%s%s\n%s", PERMIT_CONTACT_INFO, issuer,
                    venue->name);
  int rc = permit_hpke_seal(PERMIT_AEAD_CHACHA20_POLY1305, venue->sealing_key,
                            (const uint8_t *)info, (size_t)il, o->record_id,
                            sizeof o->record_id, pt, ptl, sealed);
  permit_wipe(pt, sizeof pt);
  if (rc != 0)
    return permit_err_set(err, rc, "cannot seal the contact to %s",
                          venue->name);

  char kid[PERMIT_KEY_ID_LEN];
  permit_key_id(venue->sealing_key, PERMIT_X25519_LEN, kid);
  Permit__V1__SealedContact sc = PERMIT__V1__SEALED_CONTACT__INIT;
  sc.kem_id = PERMIT_HPKE_KEM_X25519;
  sc.kdf_id = PERMIT_HPKE_KDF_HKDF_SHA256;
  sc.aead_id = PERMIT_AEAD_CHACHA20_POLY1305;
  sc.recipient_key_id = kid;
  sc.enc.data = sealed;
  sc.enc.len = PERMIT_HPKE_ENC_LEN;
  sc.ciphertext.data = sealed + PERMIT_HPKE_ENC_LEN;
  sc.ciphertext.len = ptl + PERMIT_AEAD_TAG_LEN;

  Permit__V1__Evidence ev = PERMIT__V1__EVIDENCE__INIT;
  ev.user_agent = req->user_agent;
  ev.ip_prefix = req->ip_prefix;
  int64_t now = permit_now_ms();
  memcpy(o->subject, subject, sizeof o->subject);
  memcpy(o->notice_sha, sha, sizeof o->notice_sha);
  o->notice_version = version;
  o->collected_at_ms = now;
  Permit__V1__OptIn oi = PERMIT__V1__OPT_IN__INIT;
  oi.notice_version = version;
  oi.notice_sha256.data = (uint8_t *)sha;
  oi.notice_sha256.len = 32;
  oi.collected_at_ms = now;
  oi.method = OPT_IN_METHOD;
  oi.order_ref_hash.data = order_hash;
  oi.order_ref_hash.len = sizeof order_hash;
  if (req->user_agent[0] != '\0' || req->ip_prefix[0] != '\0')
    oi.evidence = &ev;
  oi.sealed_contact = &sc;

  Permit__V1__Record rec = PERMIT__V1__RECORD__INIT;
  rec.record_id.data = o->record_id;
  rec.record_id.len = sizeof o->record_id;
  rec.issuer = (char *)issuer;
  rec.audience = (char *)venue->name;
  rec.list_id = req->list_id;
  rec.subject.data = subject;
  rec.subject.len = sizeof subject;
  rec.issued_at_ms = now;
  rec.kind_case = PERMIT__V1__RECORD__KIND_OPT_IN;
  rec.opt_in = &oi;
  size_t len = 0;
  rc = permit_record_sign(&rec, permit_node_sign_key(co->n), &o->entry, &len,
                          err);
  if (rc == 0) {
    o->iov.base = o->entry;
    o->iov.len = len;
  }
  return rc;
}

/*
 * The claimer's part, once it holds the key: the store lookup, the checks
 * against the venue and its catalog, the record and the append.  Every
 * outcome ends in flight_resolve(), here or on the commit thread.
 */
static void optin_claimed(permit_checkout *co, op *o, flight *f,
                          const Permit__V1__RecordOptInRequest *req,
                          const char *email) {
  char why[WHY_LEN];
  permit_err err = {0};
  uint8_t *v = NULL;
  size_t vl = 0;
  int rc = permit_store_get(permit_node_store(co->n), PERMIT_CF_IDEMPOTENCY,
                            o->idem_key, sizeof o->idem_key, &v, &vl, &err);
  if (rc == 0 && vl != PERMIT_RECORD_ID_LEN + 8 + 1) {
    free(v);
    rc = PERMIT_ECORRUPT;
    permit_err_set(&err, rc, "an idempotency row has %zu bytes", vl);
  }
  if (rc == 0) {
    int state = v[PERMIT_RECORD_ID_LEN + 8];
    if (state == PERMIT_IDEM_ACTIVE) {
      /* A replay names the buyer the record was made for. */
      int brc = permit_consent_record_buyer(co->n, v, f->buyer);
      if (brc != 0)
        permit_logf(PERMIT_LEVEL_WARN, "checkout.replay_unchecked",
                    "an order's record has no buyer row (%s): its replay "
                    "is answered without comparing buyers",
                    permit_strerror(brc));
      flight_resolve(co, f, PERMIT_GRPC_OK, NULL, 0, v,
                     permit_get_u64be(v + PERMIT_RECORD_ID_LEN));
    } else
      /* The same order again must not bring back what the buyer took
       * back: a new opt-in comes with a new order. */
      flight_resolve(co, f, PERMIT_GRPC_FAILED_PRECONDITION,
                     state == PERMIT_IDEM_ERASED
                         ? "this order's opt-in was erased at the buyer's "
                           "request; it is not recorded again"
                         : "this order's opt-in was withdrawn; a new opt-in "
                           "needs a new order",
                     0, NULL, 0);
    free(v);
    return;
  }
  if (rc != PERMIT_ENOTFOUND) {
    permit_logf(PERMIT_LEVEL_ERROR, "checkout.store_failed", "%s", err.msg);
    flight_resolve(co, f, PERMIT_GRPC_INTERNAL,
                   "cannot read the idempotency keys", 0, NULL, 0);
    return;
  }
  uint64_t free_bytes = 0;
  if (permit_store_space_low(permit_node_store(co->n), &free_bytes)) {
    /* Refused before anything is written: a full disk would fail the
     * synced write half way.  Replays of recorded orders still answer. */
    snprintf(why, sizeof why, "the node's disk is nearly full (%llu MiB "
             "free): opt-ins are refused until space is freed; nothing was "
             "recorded", (unsigned long long)(free_bytes >> 20));
    flight_resolve(co, f, PERMIT_GRPC_RESOURCE_EXHAUSTED, why, 0, NULL, 0);
    return;
  }
  permit_peer venue;
  if (permit_node_peer(co->n, req->venue, &venue) != 0 ||
      !(venue.roles & PERMIT_ROLE_AUDIENCE)) {
    snprintf(why, sizeof why, "unknown venue \"%s\": no pinned peer of that "
             "name has the audience role", req->venue);
    flight_resolve(co, f, PERMIT_GRPC_NOT_FOUND, why, 0, NULL, 0);
    return;
  }
  uint32_t current = 0;
  uint8_t sha[32];
  int status = catalog_notice(co, &venue, req->list_id, &current, sha, why,
                              sizeof why);
  if (status != PERMIT_GRPC_OK) {
    flight_resolve(co, f, status, why, 0, NULL, 0);
    return;
  }
  if (req->notice_version != current) {
    snprintf(why, sizeof why, "notice version %u was shown but the current "
             "version is %u: show the new text and ask again",
             req->notice_version, current);
    flight_resolve(co, f, PERMIT_GRPC_FAILED_PRECONDITION, why, 0, NULL, 0);
    return;
  }
  permit_log *log = permit_node_outbound(co->n, venue.name);
  if (log == NULL ||
      build_record(co, o, req, email, &venue, current, sha, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "checkout.build_failed", "for %s: %s",
                venue.name, log == NULL ? "no log" : err.msg);
    flight_resolve(co, f, PERMIT_GRPC_INTERNAL, "cannot build the record", 0,
                   NULL, 0);
    return;
  }
  snprintf(o->venue, sizeof o->venue, "%s", venue.name);
  snprintf(o->list_id, sizeof o->list_id, "%s", req->list_id);
  if (permit_log_append_async(log, &o->iov, 1, optin_extra, o, optin_done, o,
                              &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "checkout.append_failed", "for %s: %s",
                venue.name, err.msg);
    flight_resolve(co, f, PERMIT_GRPC_UNAVAILABLE,
                   "the log cannot take the opt-in now; retry", 0, NULL, 0);
  }
}

/* Frees a request without leaving the plaintext contact on the heap. */
static void request_free(Permit__V1__RecordOptInRequest *req) {
  if (req == NULL) return;
  permit_wipe(req->email, strlen(req->email));
  permit_wipe(req->given_name, strlen(req->given_name));
  permit_wipe(req->family_name, strlen(req->family_name));
  permit__v1__record_opt_in_request__free_unpacked(req, NULL);
}

/* permit_pool_fn: the claimer's part on a pool thread. */
static void claim_run(void *arg) {
  claim_task *t = arg;
  optin_claimed(t->co, t->o, t->f, t->req, t->email);
  permit_wipe(t->email, sizeof t->email);
  request_free(t->req);
  free(t);
}

/*
 * Checks |*reqp|, derives its keys and link and claims its idempotency
 * key (or joins the claim in flight).  Returns PERMIT_GRPC_OK once |o| is
 * in a flight (whose resolution answers it), else a status with |why|.
 * The request becomes the pool's (*reqp set to NULL) when its claim is
 * handed over.
 */
static int optin_begin(permit_checkout *co, op *o,
                       Permit__V1__RecordOptInRequest **reqp, char *why,
                       size_t cap) {
  const Permit__V1__RecordOptInRequest *req = *reqp;
  char email[EMAIL_MAX + 1];
  int status = PERMIT_GRPC_OK;
  if (request_check(req, email, why, cap) != 0) {
    status = PERMIT_GRPC_INVALID_ARGUMENT;
    goto out;
  }
  const char *idem_parts[] = {"order", req->order_ref, req->venue,
                              req->list_id};
  const char *buyer_parts[] = {"buyer", email};
  if (secret_mac(co, idem_parts, 4, o->idem_key) != 0 ||
      secret_mac(co, buyer_parts, 2, o->buyer) != 0 ||
      permit_consent_link(co->n, o->buyer, o->link, sizeof o->link) != 0) {
    snprintf(why, cap, "cannot derive the order's keys");
    status = PERMIT_GRPC_INTERNAL;
    goto out;
  }
  o->co = co;
  pthread_mutex_lock(&co->mu);
  flight *f = co->flights[o->idem_key[0]];
  while (f != NULL && memcmp(f->key, o->idem_key, sizeof f->key) != 0)
    f = f->next;
  if (f != NULL) {
    /* Answered when the request in flight ends. */
    f->tail->next = o;
    f->tail = o;
    o->stage = OP_SHARED;
    pthread_mutex_unlock(&co->mu);
    goto out;
  }
  f = calloc(1, sizeof *f);
  if (f == NULL) {
    pthread_mutex_unlock(&co->mu);
    snprintf(why, cap, "out of memory");
    status = PERMIT_GRPC_RESOURCE_EXHAUSTED;
    goto out;
  }
  memcpy(f->key, o->idem_key, sizeof f->key);
  memcpy(f->buyer, o->buyer, sizeof f->buyer);
  f->ops = f->tail = o;
  f->next = co->flights[f->key[0]];
  co->flights[f->key[0]] = f;
  co->pending++;
  o->f = f;
  o->stage = OP_SHARED;
  pthread_mutex_unlock(&co->mu);
  claim_task *t = co->pool != NULL ? malloc(sizeof *t) : NULL;
  if (t != NULL) {
    *t = (claim_task){.co = co, .o = o, .f = f, .req = *reqp};
    memcpy(t->email, email, sizeof t->email);
    if (permit_pool_submit(co->pool, claim_run, t) == 0) {
      *reqp = NULL;
      goto out;
    }
    permit_wipe(t->email, sizeof t->email);
    free(t);
  }
  optin_claimed(co, o, f, req, email); /* no pool: here */
out:
  permit_wipe(email, sizeof email);
  return status;
}

static void optin_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_checkout *co = permit_call_method_arg(c);
  if (!(permit_node_roles(co->n) & PERMIT_ROLE_ISSUER)) {
    permit_call_finish(c, PERMIT_GRPC_FAILED_PRECONDITION,
                       "%s does not collect opt-ins (no issuer role)",
                       permit_node_name(co->n));
    return;
  }
  if (permit_call_refuse_nul(
          c, &permit__v1__record_opt_in_request__descriptor, msg, len))
    return;
  Permit__V1__RecordOptInRequest *req =
      permit__v1__record_opt_in_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a RecordOptInRequest");
    return;
  }
  op *o = op_new(c);
  if (o == NULL) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    char why[WHY_LEN];
    permit_call_set_data(c, o);
    int status = optin_begin(co, o, &req, why, sizeof why);
    if (status != PERMIT_GRPC_OK) {
      permit_call_set_data(c, NULL);
      op_free(o);
      permit_call_finish(c, status, "%s", why);
    }
  }
  request_free(req); /* unless the pool has it */
}

static void offers_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_checkout *co = permit_call_method_arg(c);
  if (!(permit_node_roles(co->n) & PERMIT_ROLE_ISSUER)) {
    permit_call_finish(c, PERMIT_GRPC_FAILED_PRECONDITION,
                       "%s does not collect opt-ins (no issuer role)",
                       permit_node_name(co->n));
    return;
  }
  Permit__V1__ListOffersRequest *req =
      permit__v1__list_offers_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a ListOffersRequest");
    return;
  }
  permit_peer venue;
  permit_err err = {0};
  Permit__V1__Catalog *cat = NULL;
  if (req->venue[0] == '\0') {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT, "venue is empty");
  } else if (permit_node_peer(co->n, req->venue, &venue) != 0 ||
             !(venue.roles & PERMIT_ROLE_AUDIENCE)) {
    permit_call_finish(c, PERMIT_GRPC_NOT_FOUND,
                       "unknown venue \"%.253s\": no pinned peer of that name "
                       "has the audience role",
                       req->venue);
  } else if (permit_node_catalog_get(co->n, req->venue, &cat, &err) != 0) {
    if (err.code == PERMIT_ENOTFOUND) {
      permit_call_finish(c, PERMIT_GRPC_NOT_FOUND, "%s", err.msg);
    } else {
      permit_logf(PERMIT_LEVEL_ERROR, "checkout.bad_catalog", "%s", err.msg);
      permit_call_finish(c, PERMIT_GRPC_INTERNAL,
                         "the stored catalog of %s cannot be read",
                         req->venue);
    }
  } else {
    Permit__V1__ListOffersResponse r = PERMIT__V1__LIST_OFFERS_RESPONSE__INIT;
    r.venue = req->venue;
    r.n_lists = cat->n_lists;
    r.lists = cat->lists;
    size_t n = permit__v1__list_offers_response__get_packed_size(&r);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL) {
      permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    } else {
      permit__v1__list_offers_response__pack(&r, buf);
      if (permit_call_send(c, buf, n) != 0)
        permit_call_finish(c, PERMIT_GRPC_INTERNAL,
                           "the offers do not fit in one message");
      else
        permit_call_finish(c, PERMIT_GRPC_OK, NULL);
      free(buf);
    }
    permit__v1__catalog__free_unpacked(cat, NULL);
  }
  permit__v1__list_offers_request__free_unpacked(req, NULL);
}

/* ---- the service ---- */

permit_checkout *permit_checkout_new(permit_node *n, permit_err *err) {
  permit_checkout *co = calloc(1, sizeof *co);
  if (co == NULL) {
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  co->n = n;
  pthread_mutex_init(&co->mu, NULL);
  pthread_cond_init(&co->cv, NULL);
  pthread_mutex_init(&co->cat_mu, NULL);
  if (permit_node_roles(n) & PERMIT_ROLE_ISSUER) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    permit_err perr;
    co->pool = permit_pool_new(cores < 1 ? 1 : (int)cores, "permit-checkout",
                               &perr);
    if (co->pool == NULL)
      permit_logf(PERMIT_LEVEL_WARN, "checkout.pool",
                  "%s; records are built on the server's workers", perr.msg);
  }
  return co;
}

/*
 * Waits for the appends in flight (their completion needs the service),
 * then frees it.  Their answers go nowhere when the server is gone: every
 * call is closed by then, and a closed call's state is freed, not
 * answered.
 */
void permit_checkout_free(permit_checkout *co) {
  if (co == NULL) return;
  pthread_mutex_lock(&co->mu);
  while (co->pending > 0) pthread_cond_wait(&co->cv, &co->mu);
  pthread_mutex_unlock(&co->mu);
  permit_pool_free(co->pool); /* idle by now */
  for (size_t i = 0; i < co->ncats; i++) {
    if (co->cats[i]->cat != NULL)
      permit__v1__catalog__free_unpacked(co->cats[i]->cat, NULL);
    free(co->cats[i]->raw);
    free(co->cats[i]);
  }
  pthread_mutex_destroy(&co->mu);
  pthread_cond_destroy(&co->cv);
  pthread_mutex_destroy(&co->cat_mu);
  free(co);
}

void permit_checkout_methods(permit_checkout *co,
                             permit_method out[PERMIT_CHECKOUT_METHODS]) {
  out[0] = (permit_method){.path = "/permit.v1.Checkout/ListOffers",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = offers_message,
                           .arg = co};
  out[1] = (permit_method){.path = "/permit.v1.Checkout/RecordOptIn",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = optin_message,
                           .on_close = optin_close,
                           .arg = co};
}
