/*
 * test_audience: the venue side of the opt-in flow, in one process on
 * 127.0.0.1.  An issuer node (tixly.example) and a venue node
 * (fillmore.example) live in temporary directories with each other's
 * cards pinned.  A small stand-in for the issuer's Peer/Pull (the real
 * one is peer.c) streams the issuer's outbound log over mutual TLS and can
 * be told to slip in a forged entry or a lying checkpoint.  The venue's
 * sync pulls it; the checks look at the venue's mirror log, its contacts
 * (decrypted), the Venue service, restarts, forgeries, equivocation, the
 * issuer's catalog fetch, and finally every byte of the data directories.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "permit/client.h"
#include "permit/contacts.h"
#include "permit/hpke.h"
#include "permit/logging.h"
#include "permit/node_services.h"
#include "permit/util.h"
#include "testlib.h"

#define ISSUER "tixly.example"
#define VENUE "fillmore.example"
#define LIST "newsletter"
#define NOTICE "Send me news and offers from The Fillmore. Unsubscribe any time."
#define BULK 2000

static struct event_base *g_base; /* the test's client loop */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs the client loop in 10 ms ticks until cond(arg) or |seconds|. */
static int wait_for(int (*cond)(void *), void *arg, double seconds) {
  double end = now_s() + seconds;
  struct timeval tick = {0, 10000};
  while (!cond(arg)) {
    if (now_s() > end) return 0;
    event_base_loopexit(g_base, &tick);
    event_base_dispatch(g_base);
  }
  return 1;
}

/* A port nobody listens on (bound, read, closed). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, (struct sockaddr *)&sin, sizeof sin);
  socklen_t sl = sizeof sin;
  getsockname(fd, (struct sockaddr *)&sin, &sl);
  close(fd);
  return ntohs(sin.sin_port);
}

/* ---- the issuer's records ---- */

static permit_node *g_issuer, *g_venue;
static uint8_t g_notice_sha[32];

typedef struct optin {
  const char *email;         /* sealed in the contact */
  const char *subject_email; /* the subject's email; NULL: |email| */
  const char *given, *family;
  const char *audience;          /* NULL: the venue */
  const permit_sign_key *signer; /* NULL: the issuer's key */
  uint32_t notice_version;       /* 0: 1, the version defined */
  uint8_t record_id[16];         /* out */
} optin;

static void record_head(Permit__V1__Record *r, uint8_t rid[16],
                        const char *audience, uint8_t subject[32]) {
  permit_random(rid, 16);
  r->record_id.data = rid;
  r->record_id.len = 16;
  r->issuer = ISSUER;
  r->audience = (char *)audience;
  r->list_id = LIST;
  r->subject.data = subject;
  r->subject.len = 32;
  r->issued_at_ms = permit_now_ms();
}

static const uint8_t *pair_key(void) {
  static permit_peer p;
  permit_node_peer(g_issuer, VENUE, &p);
  return p.pair_key;
}

/* Builds and signs an opt-in as the issuer's checkout would. */
static uint8_t *make_optin(optin *o, size_t *len) {
  permit_peer venue;
  CHECK(permit_node_peer(g_issuer, VENUE, &venue) == 0);
  const char *audience = o->audience ? o->audience : VENUE;
  const char *se = o->subject_email ? o->subject_email : o->email;
  uint8_t subject[32], order[32];
  permit_subject(venue.pair_key, se, strlen(se), subject);
  Permit__V1__Record r = PERMIT__V1__RECORD__INIT;
  record_head(&r, o->record_id, audience, subject);

  Permit__V1__Contact c = PERMIT__V1__CONTACT__INIT;
  c.email = (char *)o->email;
  c.given_name = (char *)o->given;
  c.family_name = (char *)o->family;
  c.locale = "en-US";
  uint8_t pt[1024], sealed[1024 + 64];
  size_t pl = permit__v1__contact__pack(&c, pt);
  char info[600];
  int il = snprintf(info, sizeof info, "%s%s\n%s", PERMIT_CONTACT_INFO,
                    ISSUER, audience);
  CHECK(permit_hpke_seal(PERMIT_AEAD_CHACHA20_POLY1305, venue.sealing_key,
                         (uint8_t *)info, (size_t)il, o->record_id, 16, pt, pl,
                         sealed) == 0);
  char kid[PERMIT_KEY_ID_LEN];
  permit_key_id(venue.sealing_key, 32, kid);
  Permit__V1__SealedContact sc = PERMIT__V1__SEALED_CONTACT__INIT;
  sc.kem_id = PERMIT_HPKE_KEM_X25519;
  sc.kdf_id = PERMIT_HPKE_KDF_HKDF_SHA256;
  sc.aead_id = PERMIT_AEAD_CHACHA20_POLY1305;
  sc.recipient_key_id = kid;
  sc.enc.data = sealed;
  sc.enc.len = PERMIT_HPKE_ENC_LEN;
  sc.ciphertext.data = sealed + PERMIT_HPKE_ENC_LEN;
  sc.ciphertext.len = pl + PERMIT_AEAD_TAG_LEN;

  Permit__V1__OptIn oi = PERMIT__V1__OPT_IN__INIT;
  permit_random(order, sizeof order);
  oi.notice_version = o->notice_version ? o->notice_version : 1;
  oi.notice_sha256.data = g_notice_sha;
  oi.notice_sha256.len = 32;
  oi.collected_at_ms = permit_now_ms();
  oi.method = "checkout-checkbox";
  oi.order_ref_hash.data = order;
  oi.order_ref_hash.len = 32;
  oi.sealed_contact = &sc;
  r.kind_case = PERMIT__V1__RECORD__KIND_OPT_IN;
  r.opt_in = &oi;
  uint8_t *out = NULL;
  permit_err err;
  const permit_sign_key *key =
      o->signer ? o->signer : permit_node_sign_key(g_issuer);
  CHECKF(permit_record_sign(&r, key, &out, len, &err) == 0, "%s", err.msg);
  return out;
}

/* A withdrawal (|erase| 0) or erasure of |email|'s opt-in |rid|. */
static uint8_t *make_end(const char *email, const uint8_t rid[16], int erase,
                         size_t *len) {
  uint8_t subject[32], own[16];
  permit_subject(pair_key(), email, strlen(email), subject);
  Permit__V1__Record r = PERMIT__V1__RECORD__INIT;
  record_head(&r, own, VENUE, subject);
  Permit__V1__Withdrawal w = PERMIT__V1__WITHDRAWAL__INIT;
  Permit__V1__Erasure e = PERMIT__V1__ERASURE__INIT;
  if (erase) {
    e.requested_at_ms = permit_now_ms();
    r.kind_case = PERMIT__V1__RECORD__KIND_ERASURE;
    r.erasure = &e;
  } else {
    w.refers_to.data = (uint8_t *)rid;
    w.refers_to.len = 16;
    w.reason = PERMIT__V1__WITHDRAWAL_REASON__WITHDRAWAL_REASON_BUYER_REQUEST;
    w.withdrawn_at_ms = permit_now_ms();
    r.kind_case = PERMIT__V1__RECORD__KIND_WITHDRAWAL;
    r.withdrawal = &w;
  }
  uint8_t *out = NULL;
  permit_err err;
  CHECKF(permit_record_sign(&r, permit_node_sign_key(g_issuer), &out, len,
                            &err) == 0,
         "%s", err.msg);
  return out;
}

static void issue(uint8_t *rec, size_t len) {
  permit_err err;
  uint64_t seq;
  permit_log *out = permit_node_outbound(g_issuer, VENUE);
  CHECKF(permit_log_append(out, rec, len, NULL, NULL, &seq, &err) == 0, "%s",
         err.msg);
  free(rec);
}

static void issue_optin(optin *o) {
  size_t len;
  uint8_t *rec = make_optin(o, &len);
  issue(rec, len);
}

/* ---- a stand-in for the issuer's Peer/Pull ---- */

/* An entry the stand-in sends as if it were number |seq|. */
typedef struct fake_entry {
  uint8_t *data; /* NULL: none */
  size_t len;
  uint64_t seq;
} fake_entry;

typedef struct fake {
  pthread_mutex_t mu;
  fake_entry forged; /* sent once per call after the real entries */
  fake_entry swap;   /* sent in place of the real entry swap.seq */
  uint8_t *extra_cp; /* sent once per call after the real entries */
  size_t extra_cp_len;
  int extra_sends, extra_gen;
  atomic_int pulls;
  atomic_ullong last_from;
} fake;

static fake F = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef struct pull_call {
  permit_call *c;
  uint64_t next;
  int follow, since_cp, forged_sent, extra_gen;
  struct event *tick;
} pull_call;

static int send_item(permit_call *c, Permit__V1__PullResponse *r) {
  size_t n = permit__v1__pull_response__get_packed_size(r);
  uint8_t *buf = malloc(n);
  permit__v1__pull_response__pack(r, buf);
  int rc = permit_call_send(c, buf, n);
  free(buf);
  return rc;
}

static int send_entry(permit_call *c, uint64_t seq, uint8_t *data,
                      size_t len) {
  Permit__V1__LogEntry e = PERMIT__V1__LOG_ENTRY__INIT;
  e.seq = seq;
  e.signed_record.data = data;
  e.signed_record.len = len;
  Permit__V1__PullResponse r = PERMIT__V1__PULL_RESPONSE__INIT;
  r.item_case = PERMIT__V1__PULL_RESPONSE__ITEM_ENTRY;
  r.entry = &e;
  return send_item(c, &r);
}

static int send_checkpoint(permit_call *c, const uint8_t *cp, size_t len) {
  Permit__V1__SignedCheckpoint *sc =
      permit__v1__signed_checkpoint__unpack(NULL, len, cp);
  Permit__V1__PullResponse r = PERMIT__V1__PULL_RESPONSE__INIT;
  r.item_case = PERMIT__V1__PULL_RESPONSE__ITEM_CHECKPOINT;
  r.checkpoint = sc;
  int rc = send_item(c, &r);
  permit__v1__signed_checkpoint__free_unpacked(sc, NULL);
  return rc;
}

static void pull_produce(permit_call *c) {
  pull_call *pc = permit_call_data(c);
  if (pc == NULL || permit_call_finished(c)) return;
  permit_log *log = permit_node_outbound(g_issuer, VENUE);
  uint64_t size = permit_log_size(log);
  permit_err err;
  while (!permit_call_full(c) && pc->next < size) {
    uint8_t *e;
    size_t len;
    if (permit_log_get(log, pc->next, &e, &len, &err) != 0) {
      permit_call_finish(c, PERMIT_GRPC_INTERNAL, "%s", err.msg);
      return;
    }
    pthread_mutex_lock(&F.mu);
    if (F.swap.data != NULL && F.swap.seq == pc->next) {
      free(e);
      len = F.swap.len;
      e = malloc(len);
      memcpy(e, F.swap.data, len);
    }
    pthread_mutex_unlock(&F.mu);
    send_entry(c, pc->next++, e, len);
    free(e);
    pc->since_cp = 1;
  }
  if (pc->next == size && !permit_call_full(c)) {
    if (pc->since_cp) {
      uint8_t *cp;
      size_t cl;
      if (permit_log_checkpoint(log, permit_node_sign_key(g_issuer),
                                permit_now_ms(), &cp, &cl, &err) == 0) {
        send_checkpoint(c, cp, cl);
        free(cp);
      }
      pc->since_cp = 0;
    }
    pthread_mutex_lock(&F.mu);
    if (F.forged.data != NULL && !pc->forged_sent) {
      send_entry(c, F.forged.seq, F.forged.data, F.forged.len);
      pc->forged_sent = 1;
    }
    if (F.extra_cp != NULL && pc->extra_gen != F.extra_gen) {
      send_checkpoint(c, F.extra_cp, F.extra_cp_len);
      pc->extra_gen = F.extra_gen;
      F.extra_sends++;
    }
    pthread_mutex_unlock(&F.mu);
  }
  if (!pc->follow && pc->next == size) {
    permit_call_finish(c, PERMIT_GRPC_OK, NULL);
    return;
  }
  struct timeval tv = {0, 20000}; /* follow: look for growth */
  evtimer_add(pc->tick, &tv);
}

static void pull_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  pull_produce(arg);
}

static void pull_message(permit_call *c, const uint8_t *m, size_t n) {
  Permit__V1__PullRequest *req = permit__v1__pull_request__unpack(NULL, n, m);
  const char *peer = permit_call_peer(c);
  if (req == NULL || peer == NULL || strcmp(req->audience, peer) != 0 ||
      strcmp(peer, VENUE) != 0) {
    if (req) permit__v1__pull_request__free_unpacked(req, NULL);
    permit_call_finish(c, PERMIT_GRPC_PERMISSION_DENIED, "not your log");
    return;
  }
  pull_call *pc = calloc(1, sizeof *pc);
  pc->c = c;
  pc->next = req->from_seq;
  pc->follow = req->follow;
  pc->tick = evtimer_new(permit_call_base(c), pull_tick, c);
  atomic_store(&F.last_from, req->from_seq);
  atomic_fetch_add(&F.pulls, 1);
  permit__v1__pull_request__free_unpacked(req, NULL);
  permit_call_set_data(c, pc);
  pull_produce(c);
}

static void pull_close(permit_call *c, int cancelled) {
  pull_call *pc = permit_call_data(c);
  (void)cancelled;
  if (pc == NULL) return;
  event_free(pc->tick);
  free(pc);
}

/* The venue's GetCatalog, for the issuer's sync. */
static void catalog_message(permit_call *c, const uint8_t *m, size_t n) {
  (void)m, (void)n;
  uint8_t *cat;
  size_t cl;
  permit_err err;
  permit_node *venue = permit_call_method_arg(c);
  if (permit_node_catalog(venue, &cat, &cl, &err) != 0) {
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "%s", err.msg);
    return;
  }
  permit_call_send(c, cat, cl);
  free(cat);
  permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

/* Puts |data| (owned; NULL: none) in |slot| as entry |seq|. */
static void fake_put(fake_entry *slot, uint8_t *data, size_t len,
                     uint64_t seq) {
  pthread_mutex_lock(&F.mu);
  free(slot->data);
  *slot = (fake_entry){data, len, seq};
  pthread_mutex_unlock(&F.mu);
}

/* A forged entry |seq| sent after the real ones; NULL: none. */
static void fake_set(uint8_t *forged, size_t len, uint64_t seq) {
  fake_put(&F.forged, forged, len, seq);
}

/* The entry |seq| goes out as |rec| (owned) instead; NULL: as it is. */
static void fake_swap(uint8_t *rec, size_t len, uint64_t seq) {
  fake_put(&F.swap, rec, len, seq);
}

/* ---- looking at the venue ---- */

typedef struct seen {
  int n, active, withdrawn;
  char emails[16][64], given[16][64], status[16][16];
  int bulk;
} seen;

static int seen_one(void *arg, const Permit__V1__ContactEntry *e) {
  seen *s = arg;
  if (strncmp(e->email, "buyer", 5) == 0) {
    s->bulk++;
  } else if (s->n < 16) {
    snprintf(s->emails[s->n], 64, "%s", e->email);
    snprintf(s->given[s->n], 64, "%s", e->given_name);
    snprintf(s->status[s->n], 16, "%s", e->status);
    s->n++;
  }
  if (strcmp(e->status, "active") == 0) s->active++;
  if (strcmp(e->status, "withdrawn") == 0) s->withdrawn++;
  return 0;
}

static int venue_contacts(int include_withdrawn, seen *s) {
  memset(s, 0, sizeof *s);
  permit_contacts_cursor cur = {.len = 0};
  permit_err err;
  return permit_contacts_list(permit_node_store(g_venue), LIST,
                              include_withdrawn, &cur, seen_one, s, &err);
}

static int find_email(const seen *s, const char *email) {
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->emails[i], email) == 0) return i;
  return -1;
}

static uint64_t mirror_size(void) {
  return permit_log_size(permit_node_inbound(g_venue, ISSUER));
}
static uint64_t issued_size(void) {
  return permit_log_size(permit_node_outbound(g_issuer, VENUE));
}
static uint64_t feed_head(void) {
  uint64_t h = 0;
  permit_contacts_head(permit_node_store(g_venue), &h, NULL);
  return h;
}

static int caught_up(void *arg) {
  (void)arg;
  return mirror_size() == issued_size();
}

static permit_sync *g_sync;

static int grew(void *arg) { return mirror_size() > *(uint64_t *)arg; }

static int state_has(void *arg) {
  char st[400];
  permit_sync_state(g_sync, ISSUER, st, sizeof st);
  return strstr(st, (const char *)arg) != NULL;
}

static int pulls_at_least(void *arg) {
  return atomic_load(&F.pulls) >= *(int *)arg;
}

static SSL_CTX *g_venue_tls, *g_issuer_tls;

static void sync_start(void) {
  permit_err err;
  g_sync = permit_sync_start(g_venue, g_venue_tls, &err);
  CHECKF(g_sync != NULL, "%s", err.msg);
}

static void sync_stop(void) {
  permit_sync_stop(g_sync);
  g_sync = NULL;
}

/* ---- the contacts store on its own ---- */

typedef struct feed_seen {
  int n;
  char kinds[16][16], emails[16][64], status[16][16];
} feed_seen;

static int feed_one(void *arg, const Permit__V1__ContactChange *c) {
  feed_seen *f = arg;
  if (f->n < 16) {
    snprintf(f->kinds[f->n], 16, "%s", c->kind);
    snprintf(f->emails[f->n], 64, "%s", c->contact->email);
    snprintf(f->status[f->n], 16, "%s", c->contact->status);
  }
  f->n++;
  return 0;
}

static int count_one(void *arg, const Permit__V1__ContactEntry *e) {
  (void)e;
  ++*(int *)arg;
  return 0;
}

static int list_count(permit_store *st, const char *list, int withdrawn) {
  int n = 0;
  permit_contacts_cursor cur = {.len = 0};
  permit_contacts_list(st, list, withdrawn, &cur, count_one, &n, NULL);
  return n;
}

/* Applies |t| in one synced batch and frees it. */
static void txn_commit(permit_store *st, permit_contacts_txn *t) {
  permit_batch *b = permit_batch_new(st);
  permit_contacts_txn_write(t, b);
  permit_err err;
  CHECK(permit_store_write(st, b, 1, &err) == 0);
  permit_batch_free(b);
  permit_contacts_txn_free(t);
}

static void test_contacts_store(void) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", test_tmpdir("aud-contacts"));
  permit_store *st;
  permit_err err;
  CHECK(permit_store_open(dir, &st, &err) == 0);
  uint8_t subject[32], rid[16], rid2[16], rid_b[16], other[16];
  memset(subject, 7, sizeof subject);
  permit_random(rid, 16);
  permit_random(rid2, 16);
  permit_random(rid_b, 16);
  permit_random(other, 16);
  Permit__V1__Contact c = PERMIT__V1__CONTACT__INIT;
  c.email = "store@example.org";
  c.given_name = "Store";
  Permit__V1__OptIn oi = PERMIT__V1__OPT_IN__INIT;
  oi.notice_version = 3;
  oi.notice_sha256.data = subject;
  oi.notice_sha256.len = 32;
  oi.collected_at_ms = 1;
  oi.method = "checkout-checkbox";
  Permit__V1__Record r = PERMIT__V1__RECORD__INIT;
  r.issuer = ISSUER;
  r.audience = VENUE;
  r.subject.data = subject;
  r.subject.len = 32;
  r.kind_case = PERMIT__V1__RECORD__KIND_OPT_IN;
  r.opt_in = &oi;
  Permit__V1__Withdrawal w = PERMIT__V1__WITHDRAWAL__INIT;
  Permit__V1__Erasure e = PERMIT__V1__ERASURE__INIT;
  Permit__V1__Record wr = r, er = r;
  wr.kind_case = PERMIT__V1__RECORD__KIND_WITHDRAWAL;
  wr.withdrawal = &w;
  w.refers_to.len = 16;
  er.kind_case = PERMIT__V1__RECORD__KIND_ERASURE;
  er.erasure = &e;

  /* One subject on lists a and b; in one transaction an opt-in, a
   * withdrawal that names another record (no effect) and one that names
   * it (effect): a transaction sees its own writes. */
  permit_contacts_txn *t;
  CHECK(permit_contacts_txn_new(st, &t, &err) == 0);
  r.list_id = "a";
  r.record_id.data = rid;
  r.record_id.len = 16;
  CHECK(permit_contacts_txn_opt_in(t, &r, &c, 0, &err) == 0);
  r.list_id = "b";
  r.record_id.data = rid_b;
  CHECK(permit_contacts_txn_opt_in(t, &r, &c, 1, &err) == 0);
  int applied = -1;
  wr.list_id = "a";
  w.refers_to.data = other;
  CHECK(permit_contacts_txn_withdraw(t, &wr, 2, &applied, &err) == 0 &&
        applied == 0);
  w.refers_to.data = rid;
  CHECK(permit_contacts_txn_withdraw(t, &wr, 3, &applied, &err) == 0 &&
        applied == 1);
  CHECK(permit_contacts_txn_changes(t) == 3);
  txn_commit(st, t);
  CHECK(list_count(st, "a", 0) == 0 && list_count(st, "a", 1) == 1);
  CHECK(list_count(st, "b", 0) == 1);

  /* A new opt-in on a replaces the withdrawn row. */
  CHECK(permit_contacts_txn_new(st, &t, &err) == 0);
  r.list_id = "a";
  r.record_id.data = rid2;
  c.given_name = "Again";
  CHECK(permit_contacts_txn_opt_in(t, &r, &c, 4, &err) == 0);
  txn_commit(st, t);
  CHECK(list_count(st, "a", 0) == 1 && list_count(st, "a", 1) == 1);

  /* Erasure on a keeps the key (b still holds the subject) ... */
  uint8_t key[80];
  int kl = snprintf((char *)key, sizeof key, "k/%s/", ISSUER);
  memcpy(key + kl, subject, 32);
  uint8_t *v;
  size_t vl;
  CHECK(permit_contacts_txn_new(st, &t, &err) == 0);
  er.list_id = "a";
  CHECK(permit_contacts_txn_erase(t, &er, 5, &applied, &err) == 0 && applied);
  txn_commit(st, t);
  CHECK(list_count(st, "a", 1) == 0 && list_count(st, "b", 0) == 1);
  CHECK(permit_store_get(st, PERMIT_CF_CONTACTS, key, (size_t)kl + 32, &v, &vl,
                         NULL) == 0);
  free(v);
  /* ... erasure on b, the last list, takes the key; erasing again is a
   * no-op. */
  CHECK(permit_contacts_txn_new(st, &t, &err) == 0);
  er.list_id = "b";
  CHECK(permit_contacts_txn_erase(t, &er, 6, &applied, &err) == 0 && applied);
  CHECK(permit_contacts_txn_erase(t, &er, 7, &applied, &err) == 0 &&
        !applied);
  txn_commit(st, t);
  CHECK(list_count(st, "b", 1) == 0);
  CHECK(permit_store_get(st, PERMIT_CF_CONTACTS, key, (size_t)kl + 32, &v, &vl,
                         NULL) == PERMIT_ENOTFOUND);

  /* The feed: every change in order; erased rows carry no contact. */
  feed_seen f = {0};
  CHECK(permit_contacts_changes(st, 0, feed_one, &f, &err) == 0);
  static const char *const kinds[] = {"subscribed", "subscribed",
                                      "unsubscribed", "subscribed", "erased",
                                      "erased"};
  CHECK(f.n == 6);
  for (int i = 0; i < 6 && i < f.n; i++) {
    CHECKF(strcmp(f.kinds[i], kinds[i]) == 0, "change %d is %s", i + 1,
           f.kinds[i]);
    /* The erasures hand the contact over once (the farewell), the other
     * changes of erased rows have nothing left to show. */
    CHECKF(strcmp(f.status[i], "erased") == 0 &&
               (i >= 4 ? f.emails[i][0] != '\0' : f.emails[i][0] == '\0'),
           "change %d: %s, email %s", i + 1, f.status[i],
           f.emails[i][0] ? "shown" : "none");
  }
  /* Once delivered, a farewell is forgotten: the key and the copy. */
  CHECK(permit_contacts_farewell_forget(st, 5, &err) == 0 &&
        permit_contacts_farewell_forget(st, 6, &err) == 0);
  memset(&f, 0, sizeof f);
  CHECK(permit_contacts_changes(st, 0, feed_one, &f, &err) == 0 && f.n == 6);
  for (int i = 0; i < 6 && i < f.n; i++)
    CHECKF(f.emails[i][0] == '\0', "change %d still shows an email", i + 1);
  /* With the hand-over off (erased_handover_hours = 0) an erasure shreds
   * at once: its change carries no contact, no one-time key is kept. */
  CHECK(permit_contacts_txn_new(st, &t, &err) == 0);
  r.list_id = "c";
  CHECK(permit_contacts_txn_opt_in(t, &r, &c, 8, &err) == 0);
  txn_commit(st, t);
  CHECK(permit_contacts_txn_new(st, &t, &err) == 0);
  permit_contacts_txn_handover(t, 0);
  er.list_id = "c";
  CHECK(permit_contacts_txn_erase(t, &er, 9, &applied, &err) == 0 && applied);
  txn_commit(st, t);
  memset(&f, 0, sizeof f);
  CHECK(permit_contacts_changes(st, 6, feed_one, &f, &err) == 0 && f.n == 2 &&
        strcmp(f.kinds[1], "erased") == 0 && f.emails[1][0] == '\0');
  size_t purged = 1;
  CHECK(permit_contacts_farewell_purge(st, INT64_MAX, &purged, &err) == 0 &&
        purged == 0);
  memset(&f, 0, sizeof f);
  CHECK(permit_contacts_changes(st, 4, feed_one, &f, &err) == 0 && f.n == 4);
  uint64_t head;
  CHECK(permit_contacts_head(st, &head, &err) == 0 && head == 8);

  /* Bad contacts are refused by name, not by value. */
  Permit__V1__Contact bad = PERMIT__V1__CONTACT__INIT;
  bad.email = "";
  CHECK(permit_contact_validate(&bad, &err) == PERMIT_EINVAL &&
        strstr(err.msg, "email") != NULL);
  bad.email = "a@b.example";
  bad.given_name = "bad\xff";
  CHECK(permit_contact_validate(&bad, &err) == PERMIT_EINVAL &&
        strstr(err.msg, "given_name") != NULL);
  bad.given_name = "tab\tname";
  CHECK(permit_contact_validate(&bad, &err) == PERMIT_EINVAL);
  bad.given_name = "Zo\xc3\xab";
  CHECK(permit_contact_validate(&bad, &err) == 0);
  CHECK(permit_contacts_text_ok("a\nb", 3, 1) && !permit_contacts_text_ok("a\nb", 3, 0));
  permit_store_close(st);
  test_rmrf(dir);
}

/* ---- the tests ---- */

static const optin named[] = {
    {.email = "ada.lovelace@example.org", .given = "Ada", .family = "Lovelace"},
    {.email = "Grace.Hopper@Example.org", .given = "Grace", .family = "Hopper"},
    {.email = "alan.turing@example.org", .given = "Alan", .family = "Turing"},
    {.email = "katherine.johnson@example.org", .given = "Katherine",
     .family = "Johnson"},
    {.email = "edsger@example.org", .given = "Edsger", .family = "Dijkstra"}};
#define NAMED 5
static uint8_t named_rid[NAMED][16];
static uint64_t expect_changes;

static void test_first_sync(void) {
  for (int i = 0; i < NAMED; i++) {
    optin o = named[i];
    issue_optin(&o);
    memcpy(named_rid[i], o.record_id, 16);
  }
  for (int i = 0; i < BULK; i++) {
    char email[64];
    snprintf(email, sizeof email, "buyer%04d@example.net", i);
    optin o = {.email = email, .given = "Bulk", .family = "Buyer"};
    issue_optin(&o);
  }
  /* Ada opts in again (another order): the newer replaces the older. */
  optin again = {.email = "ada.lovelace@example.org", .given = "Augusta",
                 .family = "King"};
  issue_optin(&again);
  /* Grace withdraws, Alan asks for erasure. */
  size_t len;
  uint8_t *rec = make_end(named[1].email, named_rid[1], 0, &len);
  issue(rec, len);
  rec = make_end(named[2].email, named_rid[2], 1, &len);
  issue(rec, len);
  expect_changes = NAMED + BULK + 3;

  double t0 = now_s();
  sync_start();
  CHECK(wait_for(caught_up, NULL, 120));
  double took = now_s() - t0;
  printf("first sync: %llu entries in %.2f s\n",
         (unsigned long long)mirror_size(), took);
  CHECK(wait_for(state_has, "following", 10));

  seen s;
  CHECK(venue_contacts(0, &s) == 0);
  CHECKF(s.active == NAMED - 2 + BULK && s.bulk == BULK, "active %d bulk %d",
         s.active, s.bulk);
  int ada = find_email(&s, "ada.lovelace@example.org");
  CHECKF(ada >= 0 && strcmp(s.given[ada], "Augusta") == 0, "ada %d %s", ada,
         ada >= 0 ? s.given[ada] : "");
  CHECK(find_email(&s, "Grace.Hopper@Example.org") < 0);
  CHECK(find_email(&s, "alan.turing@example.org") < 0);
  int kj = find_email(&s, "katherine.johnson@example.org");
  CHECK(kj >= 0 && strcmp(s.given[kj], "Katherine") == 0);
  CHECK(venue_contacts(1, &s) == 0);
  int g = find_email(&s, "Grace.Hopper@Example.org");
  CHECK(g >= 0 && strcmp(s.status[g], "withdrawn") == 0 && s.withdrawn == 1);
  CHECK(find_email(&s, "alan.turing@example.org") < 0);
  /* Alan's erasure took his key too (his only list). */
  uint8_t subject[32], key[80];
  permit_subject(pair_key(), named[2].email, strlen(named[2].email), subject);
  int kl = snprintf((char *)key, sizeof key, "k/%s/", ISSUER);
  memcpy(key + kl, subject, 32);
  uint8_t *v;
  size_t vl;
  CHECK(permit_store_get(permit_node_store(g_venue), PERMIT_CF_CONTACTS, key,
                         (size_t)kl + 32, &v, &vl, NULL) == PERMIT_ENOTFOUND);
  CHECKF(feed_head() == expect_changes, "feed head %llu",
         (unsigned long long)feed_head());
  /* The newest checkpoint is kept. */
  CHECK(permit_store_get(permit_node_store(g_venue), PERMIT_CF_CHECKPOINTS,
                         "cp/" ISSUER, strlen("cp/" ISSUER), &v, &vl,
                         NULL) == 0);
  free(v);
}

static void test_follow_and_restart(void) {
  /* Live: entries appended while following arrive. */
  for (int i = 0; i < 3; i++) {
    char email[64];
    snprintf(email, sizeof email, "live%d@example.com", i);
    optin o = {.email = email, .given = "Live", .family = "Buyer"};
    issue_optin(&o);
  }
  expect_changes += 3;
  CHECK(wait_for(caught_up, NULL, 30));

  /* Restart: resumes at the mirror's size, no duplicate. */
  uint64_t size = mirror_size();
  sync_stop();
  int pulls = atomic_load(&F.pulls) + 1;
  sync_start();
  CHECK(wait_for(pulls_at_least, &pulls, 30));
  CHECKF(atomic_load(&F.last_from) == size, "resumed from %llu, not %llu",
         (unsigned long long)atomic_load(&F.last_from),
         (unsigned long long)size);
  optin o = {.email = "after.restart@example.com", .given = "After",
             .family = "Restart"};
  issue_optin(&o);
  expect_changes++;
  CHECK(wait_for(caught_up, NULL, 30));
  CHECK(mirror_size() == size + 1);
  CHECKF(feed_head() == expect_changes, "feed head %llu, want %llu",
         (unsigned long long)feed_head(), (unsigned long long)expect_changes);
  seen s;
  venue_contacts(0, &s);
  CHECK(s.active == NAMED - 2 + BULK + 3 + 1);

  /* Stopped again and again in the middle of a catch-up: every entry
   * still arrives exactly once. */
  sync_stop();
  for (int i = 0; i < 1000; i++) {
    char email[64];
    snprintf(email, sizeof email, "mid%04d@example.net", i);
    optin m = {.email = email, .given = "Mid", .family = "Sync"};
    issue_optin(&m);
  }
  expect_changes += 1000;
  int stops = 0;
  for (int round = 0; round < 6 && !caught_up(NULL); round++) {
    uint64_t at = mirror_size();
    sync_start();
    CHECK(wait_for(grew, &at, 30));
    sync_stop();
    stops += !caught_up(NULL);
  }
  sync_start();
  CHECK(wait_for(caught_up, NULL, 60));
  printf("catch-up of 1000 stopped %d times midway: %llu entries, %llu "
         "changes\n", stops, (unsigned long long)mirror_size(),
         (unsigned long long)feed_head());
  CHECK(feed_head() == expect_changes);
  venue_contacts(0, &s);
  CHECK(s.active == NAMED - 2 + BULK + 3 + 1 + 1000);
}

/* A checkpoint signed by |key| with a random root. */
static uint8_t *lying_checkpoint(const char *origin, uint64_t size,
                                 const permit_sign_key *key, size_t *len) {
  Permit__V1__Checkpoint cp = PERMIT__V1__CHECKPOINT__INIT;
  uint8_t root[32], body[512];
  permit_random(root, sizeof root);
  cp.origin = (char *)origin;
  cp.size = size;
  cp.root_hash.data = root;
  cp.root_hash.len = 32;
  cp.timestamp_ms = permit_now_ms();
  size_t bl = permit__v1__checkpoint__pack(&cp, body);
  uint8_t *out = NULL;
  permit_err err;
  CHECK(permit_envelope_sign(PERMIT_CHECKPOINT_CONTEXT, body, bl, key, &out,
                             len, &err) == 0);
  return out;
}

static void fake_extra_cp(uint8_t *cp, size_t len) {
  pthread_mutex_lock(&F.mu);
  free(F.extra_cp);
  F.extra_cp = cp;
  F.extra_cp_len = len;
  F.extra_sends = 0;
  F.extra_gen++;
  pthread_mutex_unlock(&F.mu);
}

/* Each forgery stops the log; nothing of it is stored. */
static void test_forgeries(void) {
  permit_sign_key *other;
  permit_sign_key_generate(&other);
  uint64_t size = mirror_size(), head = feed_head();
  seen before;
  venue_contacts(1, &before);
  struct {
    const char *what, *expect;
    uint8_t *rec;
    size_t len;
    uint64_t seq;
    int checkpoint;
  } cases[8];
  memset(cases, 0, sizeof cases);
  optin o1 = {.email = "forged@example.org", .given = "F", .signer = other};
  cases[0].what = "signed by another key";
  cases[0].expect = "stopped: entry";
  cases[0].rec = make_optin(&o1, &cases[0].len);
  optin o2 = {.email = "misrouted@example.org", .given = "M",
              .audience = "bluenote.example"};
  cases[1].what = "addressed to another venue";
  cases[1].expect = "bluenote.example";
  cases[1].rec = make_optin(&o2, &cases[1].len);
  optin o3 = {.email = "gap@example.org", .given = "G"};
  cases[2].what = "a skipped sequence number";
  cases[2].expect = "was due";
  cases[2].rec = make_optin(&o3, &cases[2].len);
  optin o4 = {.email = "mallory@example.org", .given = "Mallory",
              .subject_email = "ada.lovelace@example.org"};
  cases[3].what = "another buyer's contact under a subject";
  cases[3].expect = "another buyer";
  cases[3].rec = make_optin(&o4, &cases[3].len);
  optin o5 = {.email = "tampered@example.org", .given = "T"};
  cases[4].what = "a changed byte under the signature";
  cases[4].expect = "stopped: entry";
  cases[4].rec = make_optin(&o5, &cases[4].len);
  cases[4].rec[10] ^= 1; /* inside the body */
  cases[5].what = "not a SignedRecord";
  cases[5].expect = "stopped: entry";
  cases[5].rec = malloc(7);
  memcpy(cases[5].rec, "garbage", 7);
  cases[5].len = 7;
  for (int i = 0; i < 6; i++) cases[i].seq = size + (i == 2);
  cases[6].what = "a checkpoint of another log";
  cases[6].expect = "stopped: checkpoint of";
  cases[6].rec = lying_checkpoint("permit/v1/log/" ISSUER "/bluenote.example",
                                  size, permit_node_sign_key(g_issuer),
                                  &cases[6].len);
  cases[6].checkpoint = 1;
  cases[7].what = "a checkpoint signed by another key";
  cases[7].expect = "stopped: checkpoint:";
  cases[7].rec = lying_checkpoint("permit/v1/log/" ISSUER "/" VENUE, size,
                                  other, &cases[7].len);
  cases[7].checkpoint = 1;

  sync_stop();
  for (int i = 0; i < 8; i++) {
    if (cases[i].checkpoint) {
      fake_set(NULL, 0, 0);
      fake_extra_cp(cases[i].rec, cases[i].len);
    } else
      fake_set(cases[i].rec, cases[i].len, cases[i].seq);
    sync_start();
    char want[64];
    snprintf(want, sizeof want, "stopped:");
    int stopped = wait_for(state_has, want, 30);
    char st[400];
    permit_sync_state(g_sync, ISSUER, st, sizeof st);
    CHECKF(stopped && strstr(st, cases[i].expect) != NULL, "%s: state %s",
           cases[i].what, st);
    printf("forgery (%s): %s\n", cases[i].what, st);
    sync_stop();
    CHECKF(mirror_size() == size, "%s: mirror grew to %llu", cases[i].what,
           (unsigned long long)mirror_size());
    CHECK(feed_head() == head);
    if (cases[i].checkpoint) fake_extra_cp(NULL, 0);
  }
  fake_set(NULL, 0, 0);
  seen after;
  venue_contacts(1, &after);
  CHECK(after.n == before.n && after.active == before.active &&
        after.bulk == before.bulk);
  for (int i = 0; i < after.n; i++) {
    CHECK(strstr(after.emails[i], "forged") == NULL &&
          strstr(after.emails[i], "mallory") == NULL &&
          strstr(after.emails[i], "misrouted") == NULL);
    CHECK(strcmp(after.given[i], "Mallory") != 0);
  }
  permit_sign_key_free(other);

  /* Honest entries flow again. */
  sync_start();
  optin o = {.email = "honest@example.com", .given = "Honest",
             .family = "Buyer"};
  issue_optin(&o);
  expect_changes++;
  CHECK(wait_for(caught_up, NULL, 30));
  CHECK(feed_head() == expect_changes);

  /* An opt-in on a notice version the venue never published: the entry
   * is kept (the log stays whole), nobody is added. */
  optin stale = {.email = "unshown@example.com", .given = "Unshown",
                 .notice_version = 9};
  issue_optin(&stale);
  CHECK(wait_for(caught_up, NULL, 30));
  CHECK(feed_head() == expect_changes);
  venue_contacts(1, &after);
  for (int i = 0; i < after.n; i++)
    CHECK(strstr(after.emails[i], "unshown") == NULL);
  char st[400];
  permit_sync_state(g_sync, ISSUER, st, sizeof st);
  CHECKF(strstr(st, "stopped") == NULL, "state %s", st);
}

/* ---- the Venue service, over the local API ---- */

typedef struct stream {
  int done, status, messages;
  char msg[256];
  uint64_t last_change;
  char last_kind[32], last_email[64];
  uint8_t first[2048];
  size_t first_len;
} stream;

static void st_message(void *arg, const uint8_t *m, size_t n) {
  stream *s = arg;
  if (s->messages++ == 0 && n <= sizeof s->first) {
    memcpy(s->first, m, n);
    s->first_len = n;
  }
}
static void st_done(void *arg, int status, const char *msg) {
  stream *s = arg;
  s->done = 1;
  s->status = status;
  snprintf(s->msg, sizeof s->msg, "%s", msg);
}
static const permit_client_handlers st_handlers = {st_message, st_done};

static void watch_message(void *arg, const uint8_t *m, size_t n) {
  stream *s = arg;
  Permit__V1__ContactChange *c = permit__v1__contact_change__unpack(NULL, n, m);
  s->messages++;
  if (c == NULL) return;
  s->last_change = c->change;
  snprintf(s->last_kind, sizeof s->last_kind, "%s", c->kind);
  snprintf(s->last_email, sizeof s->last_email, "%s",
           c->contact ? c->contact->email : "");
  permit__v1__contact_change__free_unpacked(c, NULL);
}
static const permit_client_handlers watch_handlers = {watch_message, st_done};

static int done(void *arg) { return ((stream *)arg)->done; }
static int watched(void *arg) {
  stream *s = arg;
  return s->messages >= 1 && strcmp(s->last_email, "watched@example.com") == 0;
}
static int watched_n(void *arg) { return ((stream *)arg)->messages >= 2; }

static void call(permit_client *c, const char *path, ProtobufCMessage *req,
                 stream *s) {
  uint8_t buf[512];
  size_t n = protobuf_c_message_pack(req, buf);
  memset(s, 0, sizeof *s);
  permit_client_start(c, path, buf, n, 10000, &st_handlers, s);
  CHECK(wait_for(done, s, 15));
}

static void test_venue_service(int port) {
  permit_err err;
  permit_client_config cfg = {.host = "127.0.0.1", .port = port};
  permit_client *c = permit_client_new(g_base, &cfg, &err);
  stream s;

  Permit__V1__ListContactsRequest lr = PERMIT__V1__LIST_CONTACTS_REQUEST__INIT;
  lr.list_id = LIST;
  call(c, "/permit.v1.Venue/ListContacts", &lr.base, &s);
  seen direct;
  venue_contacts(0, &direct);
  CHECKF(s.status == PERMIT_GRPC_OK && s.messages == direct.active,
         "ListContacts: %d %s, %d contacts (want %d)", s.status, s.msg,
         s.messages, direct.active);
  Permit__V1__ContactEntry *e =
      permit__v1__contact_entry__unpack(NULL, s.first_len, s.first);
  CHECK(e != NULL && strcmp(e->list_id, LIST) == 0 &&
        strcmp(e->issuer, ISSUER) == 0 && e->record_id.len == 16 &&
        e->notice_version == 1 && strcmp(e->status, "active") == 0 &&
        strchr(e->email, '@') != NULL && e->collected_at_ms > 0);
  /* Each active contact carries its one-click unsubscribe link. */
  CHECKF(e != NULL && strncmp(e->unsubscribe_url, "https://", 8) == 0 &&
             strstr(e->unsubscribe_url, "/u/" LIST "/" ISSUER "/") != NULL &&
             e->subject.len == 32,
         "unsubscribe_url %s", e ? e->unsubscribe_url : "-");
  if (e) permit__v1__contact_entry__free_unpacked(e, NULL);
  lr.include_withdrawn = 1;
  call(c, "/permit.v1.Venue/ListContacts", &lr.base, &s);
  CHECK(s.status == PERMIT_GRPC_OK && s.messages == direct.active + 1);
  lr.list_id = "no-such-list";
  call(c, "/permit.v1.Venue/ListContacts", &lr.base, &s);
  CHECKF(s.status == PERMIT_GRPC_NOT_FOUND, "%d %s", s.status, s.msg);
  lr.list_id = "Bad List!";
  call(c, "/permit.v1.Venue/ListContacts", &lr.base, &s);
  CHECK(s.status == PERMIT_GRPC_INVALID_ARGUMENT);

  /* DefineList: the same text keeps the version; a new one makes one. */
  Permit__V1__DefineListRequest dr = PERMIT__V1__DEFINE_LIST_REQUEST__INIT;
  dr.list_id = LIST;
  dr.title = "Fillmore news";
  dr.notice_text = NOTICE;
  call(c, "/permit.v1.Venue/DefineList", &dr.base, &s);
  Permit__V1__DefineListResponse *d =
      permit__v1__define_list_response__unpack(NULL, s.first_len, s.first);
  CHECK(s.status == PERMIT_GRPC_OK && d != NULL && d->notice_version == 1 &&
        !d->changed && d->notice_sha256.len == 32 &&
        memcmp(d->notice_sha256.data, g_notice_sha, 32) == 0);
  if (d) permit__v1__define_list_response__free_unpacked(d, NULL);
  dr.list_id = "jazz-nights";
  dr.title = "Jazz nights";
  dr.notice_text = "News of jazz nights.\nUnsubscribe any time.";
  call(c, "/permit.v1.Venue/DefineList", &dr.base, &s);
  d = permit__v1__define_list_response__unpack(NULL, s.first_len, s.first);
  CHECK(s.status == PERMIT_GRPC_OK && d != NULL && d->notice_version == 1 &&
        d->changed);
  if (d) permit__v1__define_list_response__free_unpacked(d, NULL);
  dr.notice_text = "News of jazz nights, now weekly.";
  call(c, "/permit.v1.Venue/DefineList", &dr.base, &s);
  d = permit__v1__define_list_response__unpack(NULL, s.first_len, s.first);
  CHECK(s.status == PERMIT_GRPC_OK && d != NULL && d->notice_version == 2 &&
        d->changed);
  if (d) permit__v1__define_list_response__free_unpacked(d, NULL);
  dr.notice_text = "bad \x01 control";
  call(c, "/permit.v1.Venue/DefineList", &dr.base, &s);
  CHECK(s.status == PERMIT_GRPC_INVALID_ARGUMENT);
  /* Refused by the node's own checks (these once freed protobuf-c's static
   * empty string and brought the node down); nothing is defined. */
  const char *bad_ids[] = {"", "Bad List!", "news letter", ".", "..",
                           "-news"};
  dr.notice_text = "News of jazz nights.";
  for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
    dr.list_id = (char *)bad_ids[i];
    call(c, "/permit.v1.Venue/DefineList", &dr.base, &s);
    CHECKF(s.status == PERMIT_GRPC_INVALID_ARGUMENT, "id \"%s\": %d %s",
           bad_ids[i], s.status, s.msg);
  }
  dr.list_id = "jazz-nights";
  dr.notice_text = " \n\t\r\n";
  call(c, "/permit.v1.Venue/DefineList", &dr.base, &s);
  CHECKF(s.status == PERMIT_GRPC_INVALID_ARGUMENT &&
             strstr(s.msg, "blank") != NULL,
         "blank notice: %d %s", s.status, s.msg);
  dr.title = "   ";
  dr.notice_text = "News of jazz nights, now weekly.";
  call(c, "/permit.v1.Venue/DefineList", &dr.base, &s);
  CHECK(s.status == PERMIT_GRPC_INVALID_ARGUMENT);
  dr.title = "Jazz nights";
  call(c, "/permit.v1.Venue/DefineList", &dr.base, &s);
  d = permit__v1__define_list_response__unpack(NULL, s.first_len, s.first);
  CHECKF(s.status == PERMIT_GRPC_OK && d != NULL && d->notice_version == 2 &&
             !d->changed,
         "after the refusals: %d %s", s.status, s.msg);
  if (d) permit__v1__define_list_response__free_unpacked(d, NULL);
  /* A defined list with no contacts is an empty answer, not NOT_FOUND. */
  lr.list_id = "jazz-nights";
  call(c, "/permit.v1.Venue/ListContacts", &lr.base, &s);
  CHECK(s.status == PERMIT_GRPC_OK && s.messages == 0);

  Permit__V1__UnsubscribeRequest ur = PERMIT__V1__UNSUBSCRIBE_REQUEST__INIT;
  ur.email = "ada.lovelace@example.org";
  ur.list_id = LIST;
  call(c, "/permit.v1.Venue/Unsubscribe", &ur.base, &s);
  /* This harness runs no sync behind the Venue service, and the sync is
   * what writes unsubscribes: refused, not half done (the CLI tests run
   * the real thing). */
  CHECKF(s.status == PERMIT_GRPC_UNAVAILABLE, "Unsubscribe: %d %s", s.status,
         s.msg);
  /* A list this venue does not have is named, not "nothing to do". */
  ur.list_id = "no-such-list";
  call(c, "/permit.v1.Venue/Unsubscribe", &ur.base, &s);
  CHECKF(s.status == PERMIT_GRPC_NOT_FOUND &&
             strstr(s.msg, "no list \"no-such-list\"") != NULL,
         "Unsubscribe from an unknown list: %d %s", s.status, s.msg);

  /* WatchContacts: the last two changes, then a live one. */
  Permit__V1__WatchContactsRequest wr = PERMIT__V1__WATCH_CONTACTS_REQUEST__INIT;
  wr.since = feed_head() - 2;
  uint8_t buf[32];
  size_t n = permit__v1__watch_contacts_request__pack(&wr, buf);
  stream w;
  memset(&w, 0, sizeof w);
  permit_client_call *wc = permit_client_start(
      c, "/permit.v1.Venue/WatchContacts", buf, n, 0, &watch_handlers, &w);
  CHECK(wait_for(watched_n, &w, 15));
  CHECKF(w.messages == 2 && w.last_change == expect_changes,
         "watch: %d messages, last %llu", w.messages,
         (unsigned long long)w.last_change);
  optin o = {.email = "watched@example.com", .given = "Watched",
             .family = "Live"};
  issue_optin(&o);
  expect_changes++;
  CHECK(wait_for(watched, &w, 30));
  CHECKF(w.messages == 3 && w.last_change == expect_changes &&
             strcmp(w.last_kind, "subscribed") == 0 && !w.done,
         "watch: %d messages, last %llu (%s)", w.messages,
         (unsigned long long)w.last_change, w.last_kind);
  permit_client_cancel(wc);

  /* From the start: every change, erasure included, no personal data of
   * the erased buyer. */
  wr.since = 0;
  n = permit__v1__watch_contacts_request__pack(&wr, buf);
  memset(&w, 0, sizeof w);
  wc = permit_client_start(c, "/permit.v1.Venue/WatchContacts", buf, n, 0,
                           &watch_handlers, &w);
  uint64_t want = expect_changes;
  double end = now_s() + 30;
  while (w.last_change < want && now_s() < end) {
    struct timeval tick = {0, 10000};
    event_base_loopexit(g_base, &tick);
    event_base_dispatch(g_base);
  }
  CHECKF(w.last_change == want && (uint64_t)w.messages == want,
         "watch from 0: %d messages, last %llu", w.messages,
         (unsigned long long)w.last_change);
  permit_client_cancel(wc);

  /* A cursor past the newest change is refused, not left waiting while
   * the changes up to it go by; the head itself is a valid cursor. */
  uint64_t past[] = {feed_head() + 1, UINT64_MAX};
  for (size_t i = 0; i < 2; i++) {
    Permit__V1__WatchContactsRequest pr =
        PERMIT__V1__WATCH_CONTACTS_REQUEST__INIT;
    pr.since = past[i];
    call(c, "/permit.v1.Venue/WatchContacts", &pr.base, &s);
    CHECKF(s.status == PERMIT_GRPC_OUT_OF_RANGE &&
               strstr(s.msg, "past the newest change") != NULL,
           "since %llu: %d %s", (unsigned long long)past[i], s.status,
           s.msg);
  }
  permit_client_free(c);
}

static int catalog_fetched(void *arg) {
  Permit__V1__Catalog *cat;
  if (permit_node_catalog_get(g_issuer, arg, &cat, NULL) != 0) return 0;
  int ok = cat->n_lists >= 1;
  permit__v1__catalog__free_unpacked(cat, NULL);
  return ok;
}

/*
 * The issuer's sync fetches and keeps each venue's signed catalog, also
 * of a venue pinned while it runs.
 */
static void test_catalog(void) {
  permit_err err;
  permit_sync *s = permit_sync_start(g_issuer, g_issuer_tls, &err);
  CHECK(s != NULL);
  CHECK(wait_for(catalog_fetched, VENUE, 30));
  Permit__V1__Catalog *cat;
  if (permit_node_catalog_get(g_issuer, VENUE, &cat, &err) == 0) {
    int found = 0;
    for (size_t i = 0; i < cat->n_lists; i++)
      found |= strcmp(cat->lists[i]->list_id, LIST) == 0 &&
               strcmp(cat->lists[i]->notice_text, NOTICE) == 0;
    CHECK(found);
    permit__v1__catalog__free_unpacked(cat, NULL);
  }
  char st[400];
  permit_sync_state(s, VENUE, st, sizeof st);
  CHECKF(strstr(st, "catalog of") != NULL, "%s", st);
  permit_sync_state(s, "unknown.example", st, sizeof st);
  CHECK(strcmp(st, "idle") == 0);

  /* A second venue, pinned now. */
  char dir[4096], ep[64];
  snprintf(dir, sizeof dir, "%s", test_tmpdir("aud-venue2"));
  int port = free_port();
  snprintf(ep, sizeof ep, "127.0.0.1:%d", port);
  permit_node_config bc = {.name = "bluenote.example",
                           .roles = PERMIT_ROLE_AUDIENCE,
                           .data_dir = dir,
                           .endpoint = ep};
  permit_node *blue = NULL;
  CHECK(permit_node_open(&bc, &blue, &err) == 0);
  Permit__V1__CatalogList l;
  CHECK(permit_node_define_list(blue, "jazz", "Jazz at the Blue Note",
                                "Jazz news from the Blue Note.", NULL, &l,
                                &err) == 0);
  permit_catalog_list_clear(&l);
  uint8_t *card;
  size_t cl;
  permit_node_card(g_issuer, &card, &cl, &err);
  CHECK(permit_node_peer_add(blue, card, cl, NULL, &err) == 0);
  free(card);
  permit_node_card(blue, &card, &cl, &err);
  CHECK(permit_node_peer_add(g_issuer, card, cl, NULL, &err) == 0);
  free(card);
  SSL_CTX *tls = permit_tls_server_ctx(permit_node_sign_key(blue),
                                       permit_node_cert(blue),
                                       permit_node_pins(blue), &err);
  permit_method m = {.path = "/permit.v1.Peer/GetCatalog",
                     .kind = PERMIT_RPC_UNARY,
                     .on_message = catalog_message,
                     .arg = blue};
  permit_server *srv = permit_server_new(1, NULL, &err);
  permit_listener_config lc = {.name = "peer", .host = "127.0.0.1",
                               .port = port, .tls = tls, .methods = &m,
                               .nmethods = 1};
  CHECK(permit_server_listen(srv, &lc, &port, &err) == 0);
  CHECK(permit_server_start(srv, &err) == 0);
  permit_sync_peer_added(s, "bluenote.example");
  CHECK(wait_for(catalog_fetched, "bluenote.example", 30));
  permit_sync_state(s, "bluenote.example", st, sizeof st);
  /* The venue's log back to us (unsubscribes) is pulled too; this fake
   * venue serves only its catalog. */
  CHECKF(strstr(st, "catalog of 1 list") != NULL, "%s", st);
  permit_sync_stop(s);
  permit_server_free(srv);
  SSL_CTX_free(tls);
  permit_node_close(blue);
  test_rmrf(dir);
}

static int extra_sent(void *arg) {
  (void)arg;
  pthread_mutex_lock(&F.mu);
  int n = F.extra_sends;
  pthread_mutex_unlock(&F.mu);
  return n > 0;
}

static const char *const ev0 = "equivocation/" ISSUER "/0";
static const char *const ev1 = "equivocation/" ISSUER "/1";

/* Checks the evidence: the held checkpoint (|held|) and the lying one. */
static void check_evidence(const uint8_t *held, size_t held_len,
                           const uint8_t *lie, size_t lie_len) {
  permit_store *vs = permit_node_store(g_venue);
  permit_peer ip;
  permit_node_peer(g_venue, ISSUER, &ip);
  uint8_t *v;
  size_t vl;
  Permit__V1__Checkpoint *c0 = NULL, *c1 = NULL;
  if (permit_store_get(vs, PERMIT_CF_CHECKPOINTS, ev0, strlen(ev0), &v, &vl,
                       NULL) == 0) {
    CHECK(vl == held_len && memcmp(v, held, vl) == 0);
    CHECK(permit_checkpoint_verify(v, vl, &ip.identity, 1, &c0, NULL) == 0);
    free(v);
  } else {
    CHECK(!"no evidence 0");
  }
  if (permit_store_get(vs, PERMIT_CF_CHECKPOINTS, ev1, strlen(ev1), &v, &vl,
                       NULL) == 0) {
    CHECK(vl == lie_len && memcmp(v, lie, vl) == 0);
    CHECK(permit_checkpoint_verify(v, vl, &ip.identity, 1, &c1, NULL) == 0);
    free(v);
  } else {
    CHECK(!"no evidence 1");
  }
  if (c0 != NULL && c1 != NULL) {
    /* The held one agrees with the mirror; the lying one does not. */
    permit_hash ours;
    permit_log *in = permit_node_inbound(g_venue, ISSUER);
    permit_log_root_at(in, c0->size, ours, NULL);
    CHECK(memcmp(ours, c0->root_hash.data, 32) == 0);
    permit_log_root_at(in, c1->size, ours, NULL);
    CHECK(memcmp(ours, c1->root_hash.data, 32) != 0);
  }
  if (c0) permit__v1__checkpoint__free_unpacked(c0, NULL);
  if (c1) permit__v1__checkpoint__free_unpacked(c1, NULL);
}

static size_t held_checkpoint(uint8_t *out, size_t cap) {
  uint8_t *v;
  size_t vl, n = 0;
  if (permit_store_get(permit_node_store(g_venue), PERMIT_CF_CHECKPOINTS,
                       "cp/" ISSUER, strlen("cp/" ISSUER), &v, &vl,
                       NULL) == 0) {
    if (vl <= cap) {
      memcpy(out, v, vl);
      n = vl;
    }
    free(v);
  }
  return n;
}

/*
 * Checkpoints that contradict the entries the issuer signed: one for a
 * size the venue already holds, and one ahead of the mirror, caught when
 * the entries get there.
 */
static void test_equivocation(void) {
  const char *origin = "permit/v1/log/" ISSUER "/" VENUE;
  const permit_sign_key *ik = permit_node_sign_key(g_issuer);
  uint8_t held[4096];
  size_t held_len;
  char st[400];

  /* Ahead: a lying checkpoint of size+1 arrives before entry |size|. */
  uint64_t size = mirror_size();
  held_len = held_checkpoint(held, sizeof held);
  CHECK(held_len > 0);
  size_t al;
  uint8_t *ahead = lying_checkpoint(origin, size + 1, ik, &al);
  fake_extra_cp(ahead, al);
  CHECK(wait_for(extra_sent, NULL, 30));
  CHECK(!state_has("equivocation"));
  optin o = {.email = "caught.later@example.com", .given = "Later"};
  issue_optin(&o);
  CHECK(wait_for(state_has, "equivocation", 30));
  permit_sync_state(g_sync, ISSUER, st, sizeof st);
  printf("equivocation ahead of the mirror: %s\n", st);
  CHECK(mirror_size() == size + 1);
  held_len = held_checkpoint(held, sizeof held);
  check_evidence(held, held_len, ahead, al);
  sync_stop();
  /* Forget it (an operator's decision), and go on. */
  fake_extra_cp(NULL, 0);
  permit_batch *b = permit_batch_new(permit_node_store(g_venue));
  permit_batch_delete(b, PERMIT_CF_CHECKPOINTS, ev0, strlen(ev0));
  permit_batch_delete(b, PERMIT_CF_CHECKPOINTS, ev1, strlen(ev1));
  permit_err err;
  CHECK(permit_store_write(permit_node_store(g_venue), b, 1, &err) == 0);
  permit_batch_free(b);
  sync_start();
  CHECK(wait_for(state_has, "following", 30));
  CHECK(wait_for(caught_up, NULL, 30));

  /* Behind: a lying checkpoint of size 5, which the venue holds. */
  size = mirror_size();
  held_len = held_checkpoint(held, sizeof held);
  size_t sl;
  uint8_t *lie = lying_checkpoint(origin, 5, ik, &sl);
  fake_extra_cp(lie, sl);
  /* The running stream sends it on its next look at the log. */
  CHECK(wait_for(state_has, "equivocation", 30));
  permit_sync_state(g_sync, ISSUER, st, sizeof st);
  printf("equivocation: %s\n", st);
  CHECK(strstr(st, "stopped:") == st);
  check_evidence(held, held_len, lie, sl);

  /* Stopped for good: new entries are not taken, even after a restart. */
  optin late = {.email = "too.late@example.com", .given = "Late"};
  issue_optin(&late);
  sync_stop();
  int pulls = atomic_load(&F.pulls);
  sync_start();
  CHECK(wait_for(state_has, "equivocation", 10));
  volatile int never = 0;
  double end = now_s() + 0.5;
  while (now_s() < end && !never) {
    struct timeval tick = {0, 10000};
    event_base_loopexit(g_base, &tick);
    event_base_dispatch(g_base);
  }
  CHECK(atomic_load(&F.pulls) == pulls);
  CHECK(mirror_size() == size);
  sync_stop();
  fake_extra_cp(NULL, 0);
}

/* ---- nothing personal at rest ---- */

static const char *const needles[] = {
    "ada.lovelace@example.org", "Grace.Hopper@Example.org",
    "grace.hopper@example.org", "alan.turing@example.org",
    "katherine.johnson@example.org", "edsger@example.org",
    "buyer0007@example.net", "live1@example.com", "watched@example.com",
    "Lovelace", "Katherine", "Dijkstra", "Augusta"};
#define NNEEDLES (sizeof needles / sizeof *needles)
static int g_found[NNEEDLES];
static int g_files;

static int scan_file(const char *path, const struct stat *st, int flag,
                     struct FTW *ftw) {
  (void)ftw;
  if (flag != FTW_F || !S_ISREG(st->st_mode)) return 0;
  FILE *f = fopen(path, "rb");
  if (f == NULL) return 0;
  size_t cap = (size_t)st->st_size + 1, n;
  char *buf = malloc(cap);
  n = fread(buf, 1, cap, f);
  fclose(f);
  g_files++;
  for (size_t i = 0; i < NNEEDLES; i++)
    if (memmem(buf, n, needles[i], strlen(needles[i])) != NULL) {
      g_found[i]++;
      fprintf(stderr, "plaintext \"%s\" in %s\n", needles[i], path);
    }
  free(buf);
  return 0;
}

static void test_at_rest(const char *venue_dir, const char *issuer_dir) {
  permit_err err;
  CHECK(permit_store_compact(permit_node_store(g_venue), &err) == 0);
  CHECK(permit_store_compact(permit_node_store(g_issuer), &err) == 0);
  memset(g_found, 0, sizeof g_found);
  g_files = 0;
  nftw(venue_dir, scan_file, 16, FTW_PHYS);
  nftw(issuer_dir, scan_file, 16, FTW_PHYS);
  int any = 0;
  for (size_t i = 0; i < NNEEDLES; i++) any += g_found[i];
  CHECKF(any == 0 && g_files > 0, "%d plaintext hits in %d files", any,
         g_files);
  printf("at rest: %d files searched, no test email or name in plaintext\n",
         g_files);
}

/* Hundreds of opt-ins and their withdrawals in one transaction: every
 * withdrawal finds the row staged before it (the transaction's own index
 * of its writes, grown several times on the way), and a withdrawal that
 * names another record finds the row but leaves it. */
static void test_contacts_big_txn(void) {
  enum { N = 300 };
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", test_tmpdir("aud-bigtxn"));
  permit_store *st;
  permit_err err;
  CHECK(permit_store_open(dir, &st, &err) == 0);
  static uint8_t subjects[N][32], rids[N][16];
  uint8_t sha[32] = {0}, other[16];
  permit_random(other, sizeof other);
  Permit__V1__Contact c = PERMIT__V1__CONTACT__INIT;
  c.email = "many@example.org";
  Permit__V1__OptIn oi = PERMIT__V1__OPT_IN__INIT;
  oi.notice_version = 1;
  oi.notice_sha256.data = sha;
  oi.notice_sha256.len = 32;
  oi.method = "checkout-checkbox";
  Permit__V1__Record r = PERMIT__V1__RECORD__INIT;
  r.issuer = ISSUER;
  r.audience = VENUE;
  r.list_id = "big";
  r.subject.len = 32;
  r.record_id.len = 16;
  r.kind_case = PERMIT__V1__RECORD__KIND_OPT_IN;
  r.opt_in = &oi;
  Permit__V1__Withdrawal w = PERMIT__V1__WITHDRAWAL__INIT;
  Permit__V1__Record wr = r;
  wr.kind_case = PERMIT__V1__RECORD__KIND_WITHDRAWAL;
  wr.withdrawal = &w;
  w.refers_to.len = 16;
  permit_contacts_txn *t;
  CHECK(permit_contacts_txn_new(st, &t, &err) == 0);
  uint64_t seq = 0;
  int ok = 1;
  for (int i = 0; i < N; i++) {
    permit_random(subjects[i], 32);
    permit_random(rids[i], 16);
    r.subject.data = subjects[i];
    r.record_id.data = rids[i];
    ok &= permit_contacts_txn_opt_in(t, &r, &c, seq++, &err) == 0;
  }
  CHECK(ok);
  int applied_all = 1, other_none = 1;
  for (int i = 0; i < N; i++) {
    int applied = -1;
    wr.subject.data = subjects[i];
    w.refers_to.data = other;
    ok &= permit_contacts_txn_withdraw(t, &wr, seq++, &applied, &err) == 0;
    other_none &= applied == 0;
    w.refers_to.data = rids[i];
    ok &= permit_contacts_txn_withdraw(t, &wr, seq++, &applied, &err) == 0;
    applied_all &= applied == 1;
  }
  CHECK(ok && applied_all && other_none);
  CHECK(permit_contacts_txn_changes(t) == 2 * N);
  txn_commit(st, t);
  CHECK(list_count(st, "big", 0) == 0 && list_count(st, "big", 1) == N);
  permit_store_close(st);
}

/*
 * A forged entry in the middle of a long catch-up, with honest entries
 * before and after it: the batches before it are stored (several of
 * them, checked on the pool while earlier ones were being stored), the
 * entries before it in its own batch too, and nothing from it on, though
 * the batches after it were already being checked.  Once the issuer
 * sends the real entry, everything arrives exactly once.
 */
static void test_forgery_mid_stream(void) {
  enum { AHEAD = 1300, AFTER = 1300 };
  sync_stop();
  uint64_t size = mirror_size(), head = feed_head();
  CHECK(size == issued_size());
  for (int i = 0; i < AHEAD + AFTER; i++) {
    char email[64];
    /* "buyer...": counted in bulk by seen_one, not among the named. */
    snprintf(email, sizeof email, "buyer-forged-run%04d@example.net", i);
    optin o = {.email = email, .given = "Mid", .family = "Stream"};
    issue_optin(&o);
  }
  permit_sign_key *other;
  permit_sign_key_generate(&other);
  optin forged = {.email = "midforged@example.org", .given = "F",
                  .signer = other};
  size_t len;
  uint8_t *rec = make_optin(&forged, &len);
  uint64_t bad = size + AHEAD;
  fake_swap(rec, len, bad);
  sync_start();
  CHECK(wait_for(state_has, "stopped: entry", 60));
  char st[400], want[64];
  permit_sync_state(g_sync, ISSUER, st, sizeof st);
  snprintf(want, sizeof want, "entry %llu:", (unsigned long long)bad);
  CHECKF(strstr(st, want) != NULL, "state %s", st);
  sync_stop();
  CHECKF(mirror_size() == bad, "mirror %llu, want %llu",
         (unsigned long long)mirror_size(), (unsigned long long)bad);
  CHECK(feed_head() == head + AHEAD);
  fake_swap(NULL, 0, 0);
  sync_start();
  CHECK(wait_for(caught_up, NULL, 120));
  CHECK(feed_head() == head + AHEAD + AFTER);
  expect_changes += AHEAD + AFTER;
  seen s;
  venue_contacts(1, &s);
  CHECK(find_email(&s, "midforged@example.org") < 0);
  permit_sign_key_free(other);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  /* The rejections below are logged as errors; PERMIT_TEST_DEBUG shows
   * the sync's batches too. */
  permit_logging_set_level(getenv("PERMIT_TEST_DEBUG") ? PERMIT_LEVEL_DEBUG
                                                       : PERMIT_LEVEL_WARN);
  g_base = event_base_new();
  char issuer_dir[4096], venue_dir[4096];
  snprintf(issuer_dir, sizeof issuer_dir, "%s", test_tmpdir("aud-issuer"));
  snprintf(venue_dir, sizeof venue_dir, "%s", test_tmpdir("aud-venue"));
  int issuer_port = free_port(), venue_port = free_port();
  char issuer_ep[64], venue_ep[64];
  snprintf(issuer_ep, sizeof issuer_ep, "127.0.0.1:%d", issuer_port);
  snprintf(venue_ep, sizeof venue_ep, "localhost:%d", venue_port);
  permit_err err;
  permit_node_config ic = {.name = ISSUER, .roles = PERMIT_ROLE_ISSUER,
                           .data_dir = issuer_dir, .endpoint = issuer_ep};
  permit_node_config vc = {.name = VENUE, .roles = PERMIT_ROLE_AUDIENCE,
                           .data_dir = venue_dir, .endpoint = venue_ep};
  if (permit_node_open(&ic, &g_issuer, &err) != 0 ||
      permit_node_open(&vc, &g_venue, &err) != 0) {
    fprintf(stderr, "node: %s\n", err.msg);
    return 2;
  }
  uint8_t *card;
  size_t cl;
  CHECK(permit_node_card(g_issuer, &card, &cl, &err) == 0);
  CHECK(permit_node_peer_add(g_venue, card, cl, NULL, &err) == 0);
  free(card);
  CHECK(permit_node_card(g_venue, &card, &cl, &err) == 0);
  CHECK(permit_node_peer_add(g_issuer, card, cl, NULL, &err) == 0);
  free(card);
  permit_peer a, b;
  permit_node_peer(g_issuer, VENUE, &a);
  permit_node_peer(g_venue, ISSUER, &b);
  CHECK(memcmp(a.pair_key, b.pair_key, 32) == 0);
  Permit__V1__CatalogList l;
  int changed;
  CHECK(permit_node_define_list(g_venue, LIST, "Fillmore news", NOTICE,
                                &changed, &l, &err) == 0);
  memcpy(g_notice_sha, l.notice_sha256.data, 32);
  permit_catalog_list_clear(&l);

  /* The issuer's peer listener (Pull) and the venue's (GetCatalog). */
  SSL_CTX *issuer_srv_tls = permit_tls_server_ctx(
      permit_node_sign_key(g_issuer), permit_node_cert(g_issuer),
      permit_node_pins(g_issuer), &err);
  SSL_CTX *venue_srv_tls = permit_tls_server_ctx(
      permit_node_sign_key(g_venue), permit_node_cert(g_venue),
      permit_node_pins(g_venue), &err);
  g_venue_tls = permit_tls_client_ctx(permit_node_sign_key(g_venue),
                                      permit_node_cert(g_venue),
                                      permit_node_pins(g_venue), &err);
  g_issuer_tls = permit_tls_client_ctx(permit_node_sign_key(g_issuer),
                                       permit_node_cert(g_issuer),
                                       permit_node_pins(g_issuer), &err);
  CHECK(issuer_srv_tls && venue_srv_tls && g_venue_tls && g_issuer_tls);
  static const permit_method pull_methods[] = {
      {.path = "/permit.v1.Peer/Pull", .kind = PERMIT_RPC_SERVER_STREAM,
       .on_message = pull_message, .on_writable = pull_produce,
       .on_close = pull_close}};
  /* The server keeps the table: it lives as long as main. */
  const permit_method catalog_methods[] = {
      {.path = "/permit.v1.Peer/GetCatalog", .kind = PERMIT_RPC_UNARY,
       .on_message = catalog_message, .arg = g_venue}};
  permit_server *issuer_srv = permit_server_new(1, NULL, &err);
  permit_listener_config il = {.name = "peer", .host = "127.0.0.1",
                               .port = issuer_port, .tls = issuer_srv_tls,
                               .methods = pull_methods, .nmethods = 1};
  CHECK(permit_server_listen(issuer_srv, &il, &issuer_port, &err) == 0);
  CHECK(permit_server_start(issuer_srv, &err) == 0);

  /* The venue: its peer listener and its local API with Venue. */
  permit_server *venue_srv = permit_server_new(1, NULL, &err);
  permit_venue *venue = permit_venue_new(g_venue, venue_srv, &err);
  CHECK(venue != NULL);
  CHECK(permit_venue_new(g_issuer, venue_srv, &err) == NULL); /* no role */
  permit_method vm[PERMIT_VENUE_METHODS];
  permit_venue_methods(venue, vm);
  permit_listener_config vl = {.name = "peer", .host = "127.0.0.1",
                               .port = venue_port, .tls = venue_srv_tls,
                               .methods = catalog_methods, .nmethods = 1};
  int api_port = 0;
  permit_listener_config al = {.name = "local", .host = "127.0.0.1",
                               .port = 0, .methods = vm,
                               .nmethods = PERMIT_VENUE_METHODS};
  CHECK(permit_server_listen(venue_srv, &vl, &venue_port, &err) == 0);
  CHECK(permit_server_listen(venue_srv, &al, &api_port, &err) == 0);
  CHECK(permit_server_start(venue_srv, &err) == 0);

  test_contacts_store();
  test_contacts_big_txn();
  test_first_sync();
  test_follow_and_restart();
  test_forgeries();
  test_forgery_mid_stream();
  test_venue_service(api_port);
  test_catalog();
  test_equivocation();
  test_at_rest(venue_dir, issuer_dir);

  permit_server_stop(issuer_srv);
  permit_server_free(issuer_srv);
  permit_server_stop(venue_srv);
  permit_server_free(venue_srv);
  permit_venue_free(venue);
  SSL_CTX_free(issuer_srv_tls);
  SSL_CTX_free(venue_srv_tls);
  SSL_CTX_free(g_venue_tls);
  SSL_CTX_free(g_issuer_tls);
  permit_node_close(g_issuer);
  permit_node_close(g_venue);
  fake_set(NULL, 0, 0);
  fake_swap(NULL, 0, 0);
  event_base_loop(g_base, EVLOOP_NONBLOCK);
  event_base_free(g_base);
  test_rmrf(issuer_dir);
  test_rmrf(venue_dir);
  permit_crypto_cleanup();
  return test_finish("test_audience");
}
