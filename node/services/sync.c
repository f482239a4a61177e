/*
 * sync.c - the audience side of the logs (protocol.md 5 and 6), and the
 * issuer side's catalog fetching.
 *
 * One thread with its own event loop keeps one link per pinned peer.  A
 * link pulls the log the peer issues to this node (Peer/Pull in follow
 * mode from the mirror's size) and buffers what arrives; a batch is
 * applied when it is full, when a checkpoint arrives or when the stream
 * has been quiet for a moment.  Applying checks every entry (signature by
 * the peer's pinned key, route, sequence, the sealed contact and its
 * subject), then appends the entries to the mirror log with their
 * contacts and feed changes in the same synced write: the mirror's size
 * is the cursor, so a restart resumes with no gap and no duplicate.
 * Applying runs on this thread, so the fsync blocks no server worker.
 * The checks are most of the cost and independent of each other: a pool
 * of threads (one per core) runs them, a batch at a time in chunks, while
 * this thread goes on reading the stream and stores the batch checked
 * before.  Batches are stored strictly in stream order; beyond a few
 * batches in hand the stream is paused (HTTP/2 flow control holds the
 * issuer back).
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <netdb.h>
#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "permit/client.h"
#include "permit/consent.h"
#include "permit/contacts.h"
#include "permit/hpke.h"
#include "permit/logging.h"
#include "permit/node_services.h"
#include "permit/util.h"

#define BATCH_MAX 512             /* entries per atomic append */
#define BATCH_BYTES (8u << 20)    /* or this many bytes buffered */
#define PAUSE_ITEMS (4 * BATCH_MAX) /* stop reading beyond this */
#define QUIET_MS 10               /* apply after a pause this long, */
#define MAX_WAIT_MS 100           /* or this long after the first item */
#define RETRY_INITIAL_MS 200
/* A peer that was unreachable is tried again this often at most: after a
 * partition heals the venue catches up within seconds, and a connection
 * attempt every few seconds costs a down peer next to nothing. */
#define RETRY_MAX_MS 5000
/* A peer link's connection sends a PING after this long without a byte
 * from the peer and is given up when nothing comes back within the
 * timeout: an idle follow stream on a dead link is otherwise only noticed
 * when TCP gives up, and a link that came back only at TCP's next
 * retransmission, up to minutes later. */
#define KEEPALIVE_MS 10000
#define KEEPALIVE_TIMEOUT_MS 10000
#define REJECT_RETRY_MS 60000     /* after a rejected entry */
#define CATALOG_EVERY_MS 5000
#define CATALOG_TIMEOUT_MS 10000
#define FOLLOW_CHECK_MS 500
#define WATCH_EVERY_MS 30000
/* A follow stream that brings nothing for this long is started again: a
 * peer that answers PINGs but whose stream is stuck would otherwise hold
 * it forever (a vanished one is caught by the keepalive).  An idle log
 * sends nothing, so this cannot be short. */
#define SILENT_MS 300000
#define PENDING_CP_MAX 16
/* An erased contact waits permit_node_handover_ms() for a WatchContacts
 * watcher to be handed it once, then is forgotten unseen; checked a few
 * times in that span, at most hourly. */
#define FAREWELL_CHECK_MAX_MS (3600LL * 1000)
#define FAREWELL_CHECK_MIN_MS (60LL * 1000)
#define STATE_MAX 320
#define VERIFY_THREADS_MAX 8
#define VERIFY_CHUNK 16 /* entries a pool thread takes at a time */
_Static_assert(VERIFY_CHUNK <= PERMIT_RECORD_VERIFY_MANY_MAX,
               "a chunk's signatures are one batch");

static const char PULL_PATH[] = "/permit.v1.Peer/Pull";
static const char CATALOG_PATH[] = "/permit.v1.Peer/GetCatalog";

/* A buffered PullResponse item. */
typedef struct item {
  int checkpoint; /* a SignedCheckpoint, else a log entry */
  uint64_t seq;
  uint8_t *data;
  size_t len;
} item;

/* A verified checkpoint larger than the mirror, checked once it grows. */
typedef struct held_cp {
  uint8_t *data;
  size_t len;
  uint64_t size;
  int64_t ts;
  uint8_t root[PERMIT_HASH_LEN];
} held_cp;

typedef struct unit unit;

typedef struct peer_link {
  permit_sync *s;
  permit_peer peer;
  int pull, catalog; /* what this node does with the peer */
  permit_client *client;
  char endpoint_err[STATE_MAX];

  /* Pull (sync thread only). */
  permit_log *inbound;
  permit_client_call *call;
  int call_ended;  /* on_done ran for the call last started */
  int progressed;  /* the current stream brought a valid item */
  int discard;     /* ignore the rest of the stream */
  int failed;      /* a local failure (not the issuer's fault) */
  char reject[STATE_MAX]; /* why the stream was given up */
  int halted;      /* equivocation: never pulled again */
  int dead;        /* the mirror log had a write error */
  uint64_t next_seq;
  item *items;
  size_t nitems, cap, bytes;
  int paused;
  /* Batches handed over, in stream order: being checked, or checked and
   * waiting to be stored (sync thread only). */
  unit *units, *units_tail;
  size_t inflight;    /* entries in them */
  int broken;         /* one failed to apply: the rest are dropped */
  int restart_wanted; /* pull_start waits until they are stored */
  struct event *verified_ev;
  int silent;       /* the stream was ended for its silence */
  int64_t first_ms; /* when the oldest buffered item arrived */
  int64_t last_rx_ms;
  int backoff_ms;
  int fails;            /* streams that failed since one last worked */
  int64_t down_since_ms; /* when the first of them failed */
  char last_fail[STATE_MAX];
  struct event *apply_ev, *quiet_tm, *retry_tm, *follow_tm;
  held_cp pending[PENDING_CP_MAX];
  size_t npending;
  int have_newest;
  uint64_t newest_size;
  int64_t newest_ts;

  /* Catalog (sync thread only). */
  permit_client_call *cat_call;
  int cat_ended;
  uint8_t *cat_buf;
  size_t cat_len;
  struct event *cat_tm;

  /* Read by other threads under s->mu. */
  char state[STATE_MAX];
  char cat_state[STATE_MAX];
} peer_link;

typedef struct sync_job {
  permit_sync_job_fn fn;
  void *arg;
  struct sync_job *next;
} sync_job;

struct permit_sync {
  permit_node *n;
  SSL_CTX *tls;
  struct event_base *base;
  struct event *wake_ev;
  struct event *purge_tm;
  pthread_t thread;
  int closing; /* sync thread only: the loop has ended */
  int verify_threads;
  char seal_key_id[PERMIT_KEY_ID_LEN];

  /* The verify pool: batches of every link with chunks left to take. */
  pthread_mutex_t pool_mu;
  pthread_cond_t pool_cv;      /* work came, or the pool stops */
  pthread_cond_t pool_done_cv; /* a batch was checked */
  unit *pool_head, *pool_tail;
  int pool_stopping;
  int pool_threads;
  pthread_t pool_tid[VERIFY_THREADS_MAX];

  pthread_mutex_t mu; /* guards what follows and every link's states */
  int stopping;
  char (*added)[PERMIT_NAME_MAX + 1];
  size_t nadded, added_cap;
  peer_link **links;
  size_t nlinks;
  sync_job *jobs, *jobs_tail;
};


static void set_state(peer_link *l, int catalog, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_state(peer_link *l, int catalog, const char *fmt, ...) {
  char buf[STATE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&l->s->mu);
  memcpy(catalog ? l->cat_state : l->state, buf, sizeof buf);
  pthread_mutex_unlock(&l->s->mu);
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A growing delay with jitter: between half and all of |*ms|. */
static void backoff_next(int *ms, struct timeval *tv) {
  uint8_t r[2] = {0, 0};
  permit_random(r, sizeof r);
  int wait = *ms / 2 + (int)((unsigned)(r[0] << 8 | r[1]) %
                             (unsigned)(*ms / 2 + 1));
  *ms = *ms >= RETRY_MAX_MS / 2 ? RETRY_MAX_MS : *ms * 2;
  tv->tv_sec = wait / 1000;
  tv->tv_usec = (wait % 1000) * 1000;
}

/* ---- the client ---- */

/*
 * Makes the link's client from the peer's endpoint "host:port" (an IPv4
 * address or a name resolved to one).  A message in l->endpoint_err when
 * it cannot.
 */
static int ensure_client(peer_link *l) {
  if (l->client != NULL) return 0;
  const char *ep = l->peer.endpoint;
  const char *colon = strrchr(ep, ':');
  char host[PERMIT_ENDPOINT_MAX];
  long port = colon != NULL ? strtol(colon + 1, NULL, 10) : 0;
  if (colon == NULL || colon == ep || port <= 0 || port > 65535 ||
      (size_t)(colon - ep) >= sizeof host) {
    snprintf(l->endpoint_err, sizeof l->endpoint_err,
             "endpoint \"%.60s\" is not host:port", ep);
    return PERMIT_EINVAL;
  }
  memcpy(host, ep, (size_t)(colon - ep));
  host[colon - ep] = '\0';
  struct in_addr a;
  char ip[INET_ADDRSTRLEN];
  if (inet_pton(AF_INET, host, &a) == 1) {
    inet_ntop(AF_INET, &a, ip, sizeof ip);
  } else {
    /* A blocking lookup is fine here: this thread serves no caller. */
    struct addrinfo hints = {.ai_family = AF_INET,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int grc = getaddrinfo(host, NULL, &hints, &res);
    if (grc != 0 || res == NULL) {
      snprintf(l->endpoint_err, sizeof l->endpoint_err,
               "cannot resolve %.60s: %s", host, gai_strerror(grc));
      if (res != NULL) freeaddrinfo(res);
      return PERMIT_EINVAL;
    }
    inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip,
              sizeof ip);
    freeaddrinfo(res);
  }
  /* The client's own back-off for failed connects is capped like ours:
   * a call waits for whichever is later. */
  permit_client_config cfg = {.host = ip,
                              .port = (int)port,
                              .tls = l->s->tls,
                              .authority = l->peer.name,
                              .backoff_initial_ms = RETRY_INITIAL_MS,
                              .backoff_max_ms = RETRY_MAX_MS,
                              .keepalive_ms = KEEPALIVE_MS,
                              .keepalive_timeout_ms = KEEPALIVE_TIMEOUT_MS};
  permit_err err;
  l->client = permit_client_new(l->s->base, &cfg, &err);
  if (l->client == NULL) {
    snprintf(l->endpoint_err, sizeof l->endpoint_err, "%s", err.msg);
    return err.code;
  }
  return 0;
}

/* ---- items ---- */

static void items_clear(peer_link *l) {
  for (size_t i = 0; i < l->nitems; i++) free(l->items[i].data);
  l->nitems = 0;
  l->bytes = 0;
  if (l->quiet_tm != NULL) evtimer_del(l->quiet_tm);
}

static int items_push(peer_link *l, int checkpoint, uint64_t seq,
                      uint8_t *data, size_t len) {
  if (l->nitems == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    item *g = realloc(l->items, cap * sizeof *g);
    if (g == NULL) return PERMIT_ENOMEM;
    l->items = g;
    l->cap = cap;
  }
  l->items[l->nitems++] = (item){checkpoint, seq, data, len};
  l->bytes += len;
  return 0;
}

/* ---- verification (any thread) ---- */

typedef struct verified {
  int rc;
  permit_err err;
  Permit__V1__Record *rec;
  Permit__V1__Contact *contact; /* opt-ins */
  int ours; /* a withdrawal of an opt-in this node issued */
} verified;

/* What the checks need; read-only while they run. */
typedef struct verify_ctx {
  permit_node *node;
  int roles; /* this node's */
  const permit_peer *peer;
  const char *self;
  const permit_kx_key *seal;
  const char *seal_key_id;
} verify_ctx;

/*
 * A run of consecutive stream items: a batch of entries (checked by the
 * pool, then stored) or a lone checkpoint.  The pool's fields are under
 * s->pool_mu; the rest belongs to the sync thread, or to the pool thread
 * checking a chunk of it.
 */
struct unit {
  peer_link *l;
  item *items; /* owned */
  size_t n;
  int checkpoint;
  verified *v; /* per entry */
  verify_ctx vc;
  size_t next_chunk, nchunks, chunks_done;
  int done;
  unit *next;      /* the link's order */
  unit *pool_next; /* the pool's queue */
};

static void contact_free(Permit__V1__Contact *c) {
  if (c == NULL) return;
  char *f[] = {c->email, c->given_name, c->family_name, c->locale};
  for (size_t i = 0; i < 4; i++)
    if (f[i] != NULL) permit_wipe(f[i], strlen(f[i]));
  permit__v1__contact__free_unpacked(c, NULL);
}

/* Opens the sealed contact of the opt-in |rec| and checks it is the
 * buyer the subject names. */
static int open_contact(const verify_ctx *vc, const Permit__V1__Record *rec,
                        Permit__V1__Contact **out, permit_err *err) {
  const Permit__V1__SealedContact *sc = rec->opt_in->sealed_contact;
  if (strcmp(sc->recipient_key_id, vc->seal_key_id) != 0)
    return permit_err_set(err, PERMIT_EPERM,
                          "contact sealed to key %s, not this node's %s",
                          sc->recipient_key_id, vc->seal_key_id);
  char info[sizeof PERMIT_CONTACT_INFO + 2 * PERMIT_NAME_MAX + 2];
  int il = snprintf(info, sizeof info, "%s%s\n%s", PERMIT_CONTACT_INFO,
                    rec->issuer, rec->audience);
  size_t inl = PERMIT_HPKE_ENC_LEN + sc->ciphertext.len;
  size_t ptl = sc->ciphertext.len - PERMIT_AEAD_TAG_LEN;
  uint8_t *in = malloc(inl), *pt = malloc(ptl);
  int rc = 0;
  if (in == NULL || pt == NULL) {
    rc = permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    goto out;
  }
  memcpy(in, sc->enc.data, PERMIT_HPKE_ENC_LEN);
  memcpy(in + PERMIT_HPKE_ENC_LEN, sc->ciphertext.data, sc->ciphertext.len);
  rc = permit_hpke_open((permit_aead_id)sc->aead_id, vc->seal, (uint8_t *)info,
                        (size_t)il, rec->record_id.data, rec->record_id.len,
                        in, inl, pt);
  if (rc != 0) {
    rc = permit_err_set(err, PERMIT_EVERIFY,
                        "the sealed contact does not open (%s)",
                        permit_strerror(rc));
    goto out;
  }
  Permit__V1__Contact *c = permit__v1__contact__unpack(NULL, ptl, pt);
  if (c == NULL) {
    rc = permit_err_set(err, PERMIT_EINVAL,
                        "the sealed contact is not a Contact");
    goto out;
  }
  if ((rc = permit_contact_validate(c, err)) == 0) {
    uint8_t subject[PERMIT_SUBJECT_LEN];
    rc = permit_subject(vc->peer->pair_key, c->email, strlen(c->email),
                        subject);
    if (rc != 0)
      rc = permit_err_set(err, PERMIT_EINVAL,
                          "no subject for the sealed email (%s)",
                          permit_strerror(rc));
    else if (!permit_memeq_ct(subject, rec->subject.data, PERMIT_SUBJECT_LEN))
      rc = permit_err_set(err, PERMIT_EVERIFY,
                          "the subject is not the sealed email's: the record "
                          "carries another buyer's contact");
  }
  if (rc != 0)
    contact_free(c);
  else
    *out = c;
out:
  if (pt != NULL) {
    permit_wipe(pt, ptl);
    free(pt);
  }
  free(in);
  return rc;
}

/* The checks after the signature's: route, role and the sealed contact
 * of the record in v->rec (verified, or NULL with v->rc set). */
static void verify_rest(const verify_ctx *vc, const item *it, verified *v) {
  permit_err err = {0};
  if (v->rc != 0) {
    err = v->err;
  } else if ((v->rc = permit_record_check_route(v->rec, vc->peer->name,
                                                vc->self, &err)) == 0) {
    const Permit__V1__Record *r = v->rec;
    /* Unsubscribes from a venue come back on its log to us; everything
     * else on a log is for an audience. */
    if (r->kind_case == PERMIT__V1__RECORD__KIND_WITHDRAWAL &&
        (vc->roles & PERMIT_ROLE_ISSUER))
      v->ours = permit_consent_issued(vc->node, vc->peer->name,
                                      &r->withdrawal->refers_to);
    if (!v->ours && !(vc->roles & PERMIT_ROLE_AUDIENCE))
      v->rc = permit_err_set(&err, PERMIT_EPERM,
                             "a record for an audience, but %s is not one%s",
                             vc->self,
                             r->kind_case == PERMIT__V1__RECORD__KIND_WITHDRAWAL
                                 ? " (and it withdraws no opt-in of ours)"
                                 : "");
    else if (r->kind_case == PERMIT__V1__RECORD__KIND_OPT_IN)
      v->rc = open_contact(vc, v->rec, &v->contact, &err);
  }
  if (v->rc != 0)
    permit_err_set(&v->err, v->rc, "entry %llu: %s",
                   (unsigned long long)it->seq, err.msg);
}

/*
 * Checks entries [first, end) of |u| (at most VERIFY_CHUNK).  A pruned
 * entry has no record to check: its leaf hash joins the tree and the next
 * checkpoint vouches for it.  The others' signatures are checked in one
 * batch.
 */
static void verify_range(unit *u, size_t first, size_t end) {
  permit_iov in[VERIFY_CHUNK] = {{0}};
  Permit__V1__Record *rec[VERIFY_CHUNK];
  int rcs[VERIFY_CHUNK];
  permit_err errs[VERIFY_CHUNK];
  size_t idx[VERIFY_CHUNK], n = 0;
  for (size_t i = first; i < end; i++) {
    const item *it = &u->items[i];
    u->v[i].rec = NULL;
    u->v[i].rc = 0;
    if (permit_log_pruned(it->data, it->len, NULL)) continue;
    in[n] = (permit_iov){it->data, it->len};
    idx[n++] = i;
  }
  /* Refuses only more than PERMIT_RECORD_VERIFY_MANY_MAX entries, which
   * a chunk never has (the _Static_assert by VERIFY_CHUNK). */
  int many = permit_record_verify_many(in, n, &u->vc.peer->identity, 1, rec,
                                       rcs, errs);
  assert(many == 0);
  (void)many;
  for (size_t k = 0; k < n; k++) {
    verified *v = &u->v[idx[k]];
    v->rec = rec[k];
    v->rc = rcs[k];
    if (v->rc != 0) v->err = errs[k];
    verify_rest(&u->vc, &u->items[idx[k]], v);
  }
}

/* Checks chunk |c| of |u|. */
static void verify_chunk(unit *u, size_t c) {
  size_t first = c * VERIFY_CHUNK, end = first + VERIFY_CHUNK;
  verify_range(u, first, end < u->n ? end : u->n);
}

/* A pool thread: takes the next chunk of the oldest batch and checks it;
 * the last chunk of a batch wakes its link. */
static void *pool_main(void *arg) {
  permit_sync *s = arg;
  pthread_mutex_lock(&s->pool_mu);
  for (;;) {
    while (s->pool_head == NULL && !s->pool_stopping)
      pthread_cond_wait(&s->pool_cv, &s->pool_mu);
    unit *u = s->pool_head;
    if (u == NULL) break; /* stopping, and nothing is left */
    size_t c = u->next_chunk++;
    if (u->next_chunk == u->nchunks) {
      s->pool_head = u->pool_next;
      if (s->pool_head == NULL) s->pool_tail = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    verify_chunk(u, c);
    pthread_mutex_lock(&s->pool_mu);
    if (++u->chunks_done == u->nchunks) {
      u->done = 1;
      pthread_cond_broadcast(&s->pool_done_cv);
      /* Under the lock: the link waits for this before it goes away. */
      event_active(u->l->verified_ev, 0, 0);
    }
  }
  pthread_mutex_unlock(&s->pool_mu);
  return NULL;
}

static void pool_start(permit_sync *s) {
  pthread_mutex_init(&s->pool_mu, NULL);
  pthread_cond_init(&s->pool_cv, NULL);
  pthread_cond_init(&s->pool_done_cv, NULL);
  for (int t = 0; t < s->verify_threads; t++) {
    if (pthread_create(&s->pool_tid[t], NULL, pool_main, s) != 0) break;
    pthread_setname_np(s->pool_tid[t], "permit-verify");
    s->pool_threads++;
  }
  if (s->pool_threads < s->verify_threads)
    permit_logf(PERMIT_LEVEL_WARN, "sync.pool",
                "%d of %d checking threads started%s", s->pool_threads,
                s->verify_threads,
                s->pool_threads == 0 ? "; the sync thread checks entries "
                                       "itself" : "");
}

/* After every link is gone: nothing is queued any more. */
static void pool_stop(permit_sync *s) {
  pthread_mutex_lock(&s->pool_mu);
  s->pool_stopping = 1;
  pthread_cond_broadcast(&s->pool_cv);
  pthread_mutex_unlock(&s->pool_mu);
  for (int t = 0; t < s->pool_threads; t++) pthread_join(s->pool_tid[t], NULL);
  pthread_cond_destroy(&s->pool_cv);
  pthread_cond_destroy(&s->pool_done_cv);
  pthread_mutex_destroy(&s->pool_mu);
}

static void unit_free(unit *u) {
  for (size_t i = 0; i < u->n; i++) {
    free(u->items[i].data);
    if (u->v != NULL) {
      permit_record_free(u->v[i].rec);
      contact_free(u->v[i].contact);
    }
  }
  free(u->items);
  free(u->v);
  free(u);
}

/* ---- checkpoints ---- */

static size_t cp_key(const char *issuer, char *out, size_t cap) {
  int n = snprintf(out, cap, "cp/%s", issuer);
  return n < 0 ? 0 : (size_t)n;
}

/* Stops the link for good and keeps both signed checkpoints. */
static void equivocation(peer_link *l, const uint8_t *cp, size_t cplen,
                         uint64_t size, const permit_hash ours) {
  permit_store *st = permit_node_store(l->s->n);
  char key[32 + PERMIT_NAME_MAX], prefix[32 + PERMIT_NAME_MAX];
  uint8_t *held = NULL;
  size_t hl = 0;
  permit_err err = {0};
  size_t kl = cp_key(l->peer.name, key, sizeof key);
  int hrc = permit_store_get(st, PERMIT_CF_CHECKPOINTS, key, kl, &held, &hl,
                             NULL);
  int pl = snprintf(prefix, sizeof prefix, "equivocation/%s/", l->peer.name);
  permit_batch *b = permit_batch_new(st);
  int rc = PERMIT_ENOMEM;
  if (b != NULL) {
    /* Numbered after any evidence kept before (never overwritten). */
    int n = 0;
    for (;; n++) {
      kl = (size_t)snprintf(key, sizeof key, "%s%d", prefix, n);
      uint8_t *v;
      size_t vl;
      if (permit_store_get(st, PERMIT_CF_CHECKPOINTS, key, kl, &v, &vl,
                           NULL) != 0)
        break;
      free(v);
    }
    if (hrc == 0) {
      kl = (size_t)snprintf(key, sizeof key, "%s%d", prefix, n++);
      permit_batch_put(b, PERMIT_CF_CHECKPOINTS, key, kl, held, hl);
    }
    kl = (size_t)snprintf(key, sizeof key, "%s%d", prefix, n);
    permit_batch_put(b, PERMIT_CF_CHECKPOINTS, key, kl, cp, cplen);
    rc = permit_store_write(st, b, 1, &err);
  }
  permit_batch_free(b);
  free(held);
  char ours_hex[2 * PERMIT_HASH_LEN + 1];
  permit_hex_encode(ours, PERMIT_HASH_LEN, ours_hex);
  l->halted = 1;
  l->discard = 1;
  set_state(l, 0,
            "stopped: equivocation: %s signed a checkpoint of size %llu whose "
            "root is not the log's (%.16s...); %s",
            l->peer.name, (unsigned long long)size, ours_hex,
            rc == 0 ? "both checkpoints kept as evidence"
                    : "the evidence could not be stored");
  permit_logf(PERMIT_LEVEL_ERROR, "sync.equivocation",
              "%s signed a checkpoint of %s at size %llu whose root differs "
              "from the root of the entries it signed (%s); the log is "
              "stopped for good; evidence %s under %.*s in column family "
              "checkpoints",
              l->peer.name, permit_log_origin(l->inbound),
              (unsigned long long)size, ours_hex,
              rc == 0 ? "kept" : "NOT stored", pl, prefix);
  if (rc != 0)
    permit_logf(PERMIT_LEVEL_ERROR, "sync.store_failed", "%s", err.msg);
}

/* Keeps |cp| as the newest checkpoint of the log when it is. */
static void keep_newest(peer_link *l, const uint8_t *cp, size_t cplen,
                        uint64_t size, int64_t ts) {
  if (l->have_newest && (size < l->newest_size ||
                         (size == l->newest_size && ts <= l->newest_ts)))
    return;
  permit_store *st = permit_node_store(l->s->n);
  char key[8 + PERMIT_NAME_MAX];
  size_t kl = cp_key(l->peer.name, key, sizeof key);
  permit_batch *b = permit_batch_new(st);
  permit_err err;
  /* Synced: proofs are built on it, and after a crash it must still be
   * the one the mirror was checked against. */
  if (b != NULL) {
    permit_batch_put(b, PERMIT_CF_CHECKPOINTS, key, kl, cp, cplen);
    if (permit_store_write(st, b, 1, &err) == 0) {
      l->have_newest = 1;
      l->newest_size = size;
      l->newest_ts = ts;
    } else {
      permit_logf(PERMIT_LEVEL_WARN, "sync.store_failed",
                  "checkpoint of %s: %s", l->peer.name, err.msg);
    }
  }
  permit_batch_free(b);
}

/* Compares a verified checkpoint with the mirror (size <= mirror). */
static void check_root(peer_link *l, const uint8_t *cp, size_t cplen,
                       uint64_t size, const uint8_t *root, int64_t ts) {
  permit_hash ours;
  permit_err err;
  if (permit_log_root_at(l->inbound, size, ours, &err) != 0) {
    permit_logf(PERMIT_LEVEL_WARN, "sync.checkpoint_unchecked",
                "%s: %s", l->peer.name, err.msg);
    return;
  }
  if (!permit_memeq_ct(ours, root, PERMIT_HASH_LEN))
    equivocation(l, cp, cplen, size, ours);
  else
    keep_newest(l, cp, cplen, size, ts);
}

/* Checks held checkpoints the mirror has now reached. */
static void check_pending(peer_link *l) {
  uint64_t size = permit_log_size(l->inbound);
  size_t kept = 0;
  for (size_t i = 0; i < l->npending; i++) {
    held_cp *h = &l->pending[i];
    if (h->size <= size && !l->halted)
      check_root(l, h->data, h->len, h->size, h->root, h->ts);
    if (h->size <= size || l->halted)
      free(h->data);
    else
      l->pending[kept++] = *h;
  }
  l->npending = kept;
}

/* Gives up the current stream: |why| becomes the state. */
static void reject(peer_link *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reject(peer_link *l, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(l->reject, sizeof l->reject, fmt, ap);
  va_end(ap);
  l->discard = 1;
  set_state(l, 0, "stopped: %s", l->reject);
  permit_logf(PERMIT_LEVEL_ERROR, "sync.rejected",
              "log %s stopped: %s; nothing of it was stored",
              permit_log_origin(l->inbound), l->reject);
}

/* Checks a checkpoint from the stream; 0 unless it stopped the log. */
static int apply_checkpoint(peer_link *l, const item *it) {
  Permit__V1__Checkpoint *cp;
  permit_err err;
  if (permit_checkpoint_verify(it->data, it->len, &l->peer.identity, 1, &cp,
                               &err) != 0) {
    reject(l, "checkpoint: %s", err.msg);
    return -1;
  }
  const char *origin = permit_log_origin(l->inbound);
  int rc = 0;
  if (strcmp(cp->origin, origin) != 0) {
    reject(l, "checkpoint of \"%.120s\" on the stream of %s", cp->origin,
           origin);
    rc = -1;
  } else if (cp->size <= permit_log_size(l->inbound)) {
    check_root(l, it->data, it->len, cp->size, cp->root_hash.data,
               cp->timestamp_ms);
  } else {
    /* Ahead of the entries: checked when the mirror gets there. */
    if (l->npending == PENDING_CP_MAX) {
      free(l->pending[0].data);
      memmove(l->pending, l->pending + 1,
              (PENDING_CP_MAX - 1) * sizeof *l->pending);
      l->npending--;
    }
    held_cp *h = &l->pending[l->npending];
    h->data = malloc(it->len);
    if (h->data != NULL) {
      memcpy(h->data, it->data, it->len);
      h->len = it->len;
      h->size = cp->size;
      h->ts = cp->timestamp_ms;
      memcpy(h->root, cp->root_hash.data, PERMIT_HASH_LEN);
      l->npending++;
    }
  }
  permit__v1__checkpoint__free_unpacked(cp, NULL);
  return rc != 0 || l->halted ? -1 : 0;
}

/* ---- applying entries ---- */

/* Notices already checked in one batch: (list, version) -> known. */
#define NOTICE_MEMO 16
typedef struct notice_memo {
  char list_id[PERMIT_LIST_ID_MAX + 1];
  uint32_t version;
  uint8_t sha[PERMIT_SHA256_LEN];
  int known;
} notice_memo;

/*
 * Whether the opt-in |rec| names a list this venue defines and a notice
 * it published: that version's text (kept at "notice/<list>/" ||
 * BE32(version)) hashes to the record's notice_sha256.
 */
static int notice_known(permit_node *n, notice_memo *memo, size_t *nmemo,
                        const Permit__V1__Record *rec) {
  const Permit__V1__OptIn *o = rec->opt_in;
  if (o->notice_sha256.len != PERMIT_SHA256_LEN) return 0;
  for (size_t i = 0; i < *nmemo; i++)
    if (memo[i].version == o->notice_version &&
        strcmp(memo[i].list_id, rec->list_id) == 0)
      return memo[i].known &&
             memcmp(memo[i].sha, o->notice_sha256.data, PERMIT_SHA256_LEN) ==
                 0;
  char key[16 + PERMIT_LIST_ID_MAX];
  int kl = snprintf(key, sizeof key, "notice/%s/", rec->list_id);
  if (kl < 0 || (size_t)kl + 4 > sizeof key) return 0;
  uint32_t v = o->notice_version;
  key[kl] = (char)(v >> 24);
  key[kl + 1] = (char)(v >> 16);
  key[kl + 2] = (char)(v >> 8);
  key[kl + 3] = (char)v;
  uint8_t *text = NULL;
  size_t tl = 0;
  notice_memo m = {.version = v};
  snprintf(m.list_id, sizeof m.list_id, "%s", rec->list_id);
  if (permit_store_get(permit_node_store(n), PERMIT_CF_DEFAULT, key,
                       (size_t)kl + 4, &text, &tl, NULL) == 0) {
    permit_iov iov = {text, tl};
    m.known = permit_sha256(&iov, 1, m.sha) == 0;
    free(text);
  }
  if (*nmemo < NOTICE_MEMO) memo[(*nmemo)++] = m;
  return m.known &&
         memcmp(m.sha, o->notice_sha256.data, PERMIT_SHA256_LEN) == 0;
}

/* What an applied batch writes besides its entries. */
typedef struct apply_extra {
  peer_link *l;
  permit_contacts_txn *t;
  const item *items; /* the entries being appended */
  size_t n;
  const Permit__V1__Record **ours; /* withdrawals of our opt-ins */
  size_t nours;
  size_t ours_applied;
  permit_err err;
} apply_extra;

/* permit_log_extra_fn: contacts, their pruned copies, our withdrawals. */
static int apply_extra_fn(void *arg, uint64_t first, permit_batch *b) {
  apply_extra *ax = arg;
  permit_contacts_txn_write(ax->t, b);
  const uint64_t *prunes;
  size_t np = permit_contacts_txn_prunes(ax->t, &prunes);
  for (size_t i = 0; i < np; i++) {
    permit_hash known;
    const uint8_t *kp = NULL;
    if (prunes[i] >= first && prunes[i] - first < ax->n) {
      /* Appended in this very batch: its leaf is not in the tree yet. */
      const item *it = &ax->items[prunes[i] - first];
      if (!permit_log_pruned(it->data, it->len, known))
        permit_merkle_leaf_hash(it->data, it->len, known);
      kp = known;
    }
    int rc = permit_log_prune(ax->l->inbound, prunes[i], kp, b, &ax->err);
    if (rc != 0) return rc;
  }
  ax->ours_applied = 0;
  for (size_t i = 0; i < ax->nours; i++) {
    int applied = 0;
    int rc = permit_consent_stage_withdrawal(ax->l->s->n, ax->l->peer.name,
                                             ax->ours[i], b, &applied,
                                             &ax->err);
    if (rc != 0) return rc;
    ax->ours_applied += (size_t)applied;
  }
  return 0;
}

/* A failure of this node (not of the issuer's data): retried later. */
static void local_failure(peer_link *l, const char *what, const char *msg) {
  l->failed = 1;
  l->discard = 1;
  set_state(l, 0, "backing off: %s: %s", what, msg);
  permit_logf(PERMIT_LEVEL_ERROR, "sync.apply_failed", "%s from %s: %s",
              what, l->peer.name, msg);
}

/*
 * Stores |n| consecutive entries the pool has checked (|v|).  The valid
 * ones before the first bad one are stored; the bad one stops the log.
 * Adds the number of contact changes made to |*changes|; returns 0 when
 * all |n| were stored.
 */
static int apply_entries(peer_link *l, const item *items, size_t n,
                         const verified *v, uint64_t *changes) {
  permit_sync *s = l->s;
  permit_iov *iov = calloc(n, sizeof *iov);
  const Permit__V1__Record **ours = calloc(n, sizeof *ours);
  size_t nours = 0, npruned = 0, nmemo = 0;
  notice_memo memo[NOTICE_MEMO];
  permit_contacts_txn *t = NULL;
  permit_err err = {0};
  int result = -1;
  if (iov == NULL || ours == NULL) {
    local_failure(l, "applying entries", "out of memory");
    goto out;
  }
  uint64_t free_bytes = 0;
  if (permit_store_space_low(permit_node_store(s->n), &free_bytes)) {
    /* Backs off and pulls again later: the entries stay at the issuer. */
    char msg[128];
    snprintf(msg, sizeof msg, "the disk is nearly full (%llu MiB free); "
             "resumes when space returns",
             (unsigned long long)(free_bytes >> 20));
    local_failure(l, "applying entries", msg);
    goto out;
  }
  size_t ok = 0;
  while (ok < n && v[ok].rc == 0) ok++;
  if (ok > 0) {
    if (permit_contacts_txn_new(permit_node_store(s->n), &t, &err) != 0) {
      local_failure(l, "reading contacts", err.msg);
      goto out;
    }
    permit_contacts_txn_handover(t, permit_node_handover_ms(s->n) > 0);
    for (size_t i = 0; i < ok; i++) {
      const Permit__V1__Record *rec = v[i].rec;
      int applied = 1, rc = 0;
      iov[i].base = items[i].data;
      iov[i].len = items[i].len;
      if (rec == NULL) {
        npruned++;
        continue;
      }
      if (v[i].ours) {
        ours[nours++] = rec;
        continue;
      }
      if (rec->kind_case == PERMIT__V1__RECORD__KIND_OPT_IN &&
          !notice_known(s->n, memo, &nmemo, rec)) {
        /* The entry stays in the log (evidence of what the issuer sent),
         * but nobody joins a list on a notice this venue never showed. */
        permit_logf(PERMIT_LEVEL_WARN, "sync.unknown_notice",
                    "entry %llu from %s: an opt-in to list %s on notice "
                    "version %u, which this node does not define with that "
                    "text; the contact is not added",
                    (unsigned long long)items[i].seq, l->peer.name,
                    rec->list_id, rec->opt_in->notice_version);
        continue;
      }
      if (rec->kind_case == PERMIT__V1__RECORD__KIND_OPT_IN)
        rc = permit_contacts_txn_opt_in(t, rec, v[i].contact, items[i].seq,
                                        &err);
      else if (rec->kind_case == PERMIT__V1__RECORD__KIND_WITHDRAWAL)
        rc = permit_contacts_txn_withdraw(t, rec, items[i].seq, &applied,
                                          &err);
      else
        rc = permit_contacts_txn_erase(t, rec, items[i].seq, &applied, &err);
      if (rc != 0) {
        local_failure(l, "staging contacts", err.msg);
        goto out;
      }
      if (!applied)
        permit_logf(PERMIT_LEVEL_INFO, "sync.no_effect",
                    "entry %llu from %s (%s on list %s) matches no contact",
                    (unsigned long long)items[i].seq, l->peer.name,
                    rec->kind_case == PERMIT__V1__RECORD__KIND_WITHDRAWAL
                        ? "withdrawal"
                        : "erasure",
                    rec->list_id);
    }
    uint64_t size = permit_log_size(l->inbound), first = 0;
    if (items[0].seq != size) {
      char msg[96];
      snprintf(msg, sizeof msg, "entry %llu does not follow the mirror's %llu",
               (unsigned long long)items[0].seq, (unsigned long long)size);
      local_failure(l, "applying entries", msg);
      goto out;
    }
    apply_extra ax = {.l = l, .t = t, .items = items, .n = ok, .ours = ours,
                      .nours = nours};
    if (permit_log_append_many(l->inbound, iov, ok, apply_extra_fn, &ax,
                               &first, &err) != 0) {
      /* The log refuses further appends until the node reopens it. */
      l->dead = 1;
      l->discard = 1;
      set_state(l, 0, "stopped: cannot store entries: %s", err.msg);
      permit_logf(PERMIT_LEVEL_ERROR, "sync.store_failed",
                  "log %s: %s; restart the node to resume",
                  permit_log_origin(l->inbound), err.msg);
      goto out;
    }
    *changes += permit_contacts_txn_changes(t);
    if (npruned > 0)
      permit_logf(PERMIT_LEVEL_WARN, "sync.pruned_entries",
                  "%s: %zu entries arrived pruned (payload erased at the "
                  "issuer; only their leaf hashes are kept)",
                  permit_log_origin(l->inbound), npruned);
    if (ax.ours_applied > 0) {
      permit_logf(PERMIT_LEVEL_INFO, "sync.unsubscribed",
                  "%s: %zu opt-ins withdrawn at the venue",
                  permit_log_origin(l->inbound), ax.ours_applied);
    }
    permit_logf(PERMIT_LEVEL_DEBUG, "sync.applied",
                "%s: entries %llu to %llu, %llu contact changes",
                permit_log_origin(l->inbound), (unsigned long long)first,
                (unsigned long long)(first + ok - 1),
                (unsigned long long)permit_contacts_txn_changes(t));
  }
  if (ok < n)
    reject(l, "%s", v[ok].err.msg);
  else
    result = 0;
out:
  free(iov);
  free(ours);
  permit_contacts_txn_free(t);
  return result;
}

static void pull_start(peer_link *l);

/*
 * Hands everything buffered over as units, in order: runs of entries to
 * the pool, checkpoints between them.  What is buffered is always a valid
 * prefix of the stream (an item that breaks it is refused before it is
 * buffered), but after a unit failed to apply nothing more is.
 */
static void dispatch(peer_link *l) {
  permit_sync *s = l->s;
  size_t i = 0;
  if (l->quiet_tm != NULL) evtimer_del(l->quiet_tm);
  while (i < l->nitems && !l->broken && !l->halted && !l->dead) {
    int cp = l->items[i].checkpoint;
    size_t j = i + 1;
    while (!cp && j < l->nitems && !l->items[j].checkpoint &&
           j - i < BATCH_MAX)
      j++;
    unit *u = calloc(1, sizeof *u);
    item *its = malloc((j - i) * sizeof *its);
    verified *v = cp ? NULL : calloc(j - i, sizeof *v);
    if (u == NULL || its == NULL || (!cp && v == NULL)) {
      free(u);
      free(its);
      free(v);
      /* The units before this one are whole: they are still stored. */
      local_failure(l, "checking entries", "out of memory");
      break;
    }
    memcpy(its, l->items + i, (j - i) * sizeof *its);
    *u = (unit){.l = l, .items = its, .n = j - i, .checkpoint = cp, .v = v};
    if (l->units_tail != NULL)
      l->units_tail->next = u;
    else
      l->units = u;
    l->units_tail = u;
    i = j;
    if (cp) {
      u->done = 1; /* checked when its turn comes */
      continue;
    }
    l->inflight += u->n;
    u->vc = (verify_ctx){.node = s->n,
                         .roles = permit_node_roles(s->n),
                         .peer = &l->peer,
                         .self = permit_node_name(s->n),
                         .seal = permit_node_seal_key(s->n),
                         .seal_key_id = s->seal_key_id};
    u->nchunks = (u->n + VERIFY_CHUNK - 1) / VERIFY_CHUNK;
    if (s->pool_threads == 0) {
      for (size_t c = 0; c < u->nchunks; c++) verify_chunk(u, c);
      u->done = 1;
      continue;
    }
    pthread_mutex_lock(&s->pool_mu);
    if (s->pool_tail != NULL)
      s->pool_tail->pool_next = u;
    else
      s->pool_head = u;
    s->pool_tail = u;
    pthread_cond_broadcast(&s->pool_cv);
    pthread_mutex_unlock(&s->pool_mu);
  }
  /* Not handed over: dropped (fetched again from the mirror's size). */
  for (; i < l->nitems; i++) free(l->items[i].data);
  l->nitems = 0;
  l->bytes = 0;
}

/* Waits for every unit of |l| to be checked (the link is going away). */
static void units_wait(peer_link *l) {
  permit_sync *s = l->s;
  pthread_mutex_lock(&s->pool_mu);
  for (unit *u = l->units; u != NULL; u = u->next)
    while (!u->done) pthread_cond_wait(&s->pool_done_cv, &s->pool_mu);
  pthread_mutex_unlock(&s->pool_mu);
}

/*
 * Stores the checked units at the head of the queue, in order, up to the
 * first that fails (after which the rest are dropped as they come), then
 * acts on what the stream's state became.
 */
static void drain(peer_link *l) {
  permit_sync *s = l->s;
  uint64_t changes = 0;
  for (unit *u; (u = l->units) != NULL;) {
    pthread_mutex_lock(&s->pool_mu);
    int done = u->done;
    pthread_mutex_unlock(&s->pool_mu);
    if (!done) break;
    l->units = u->next;
    if (l->units == NULL) l->units_tail = NULL;
    if (!u->checkpoint) l->inflight -= u->n;
    if (!l->broken && !l->halted && !l->dead) {
      int rc = u->checkpoint
                   ? apply_checkpoint(l, &u->items[0])
                   : apply_entries(l, u->items, u->n, u->v, &changes);
      if (rc != 0)
        l->broken = 1;
      else if (!u->checkpoint)
        check_pending(l);
    }
    unit_free(u);
  }
  if (changes > 0) permit_node_changed(s->n);
  if (l->broken) items_clear(l);
  if (l->s->closing) return;
  if (l->call != NULL && l->discard) {
    permit_client_cancel(l->call); /* on_done decides what comes next */
  } else if (l->call != NULL && l->paused &&
             l->nitems + l->inflight < PAUSE_ITEMS / 2) {
    l->paused = 0;
    permit_client_pause(l->call, 0);
  }
  if (l->units == NULL && l->restart_wanted) {
    l->restart_wanted = 0;
    pull_start(l);
  }
}

/* The buffer is due (full, a checkpoint, a pause in the stream). */
static void on_apply(evutil_socket_t fd, short what, void *arg) {
  peer_link *l = arg;
  (void)fd, (void)what;
  if (l->nitems > 0) dispatch(l);
  drain(l);
}

/* A unit's checks are done (from the pool). */
static void on_verified(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  drain(arg);
}

/* ---- the Pull stream ---- */

/* The stream works (an item came, or it is connected and waiting). */
static void link_up(peer_link *l) {
  l->progressed = 1;
  set_state(l, 0, "following");
  if (l->fails > 0)
    permit_logf(PERMIT_LEVEL_INFO, "sync.resumed",
                "Pull of %s from %s resumed after %lld s (%d failed "
                "attempt%s)", permit_log_origin(l->inbound), l->peer.endpoint,
                (long long)((mono_ms() - l->down_since_ms) / 1000), l->fails,
                l->fails == 1 ? "" : "s");
  l->fails = 0;
}

static void pull_message(void *arg, const uint8_t *msg, size_t len) {
  peer_link *l = arg;
  if (l->discard || l->s->closing) return;
  int64_t now_ms = mono_ms();
  size_t before = l->nitems;
  l->last_rx_ms = now_ms;
  Permit__V1__PullResponse *r =
      permit__v1__pull_response__unpack(NULL, len, msg);
  int now = 0;
  if (r == NULL) {
    reject(l, "a Pull response that is not a PullResponse");
    now = 1;
  } else if (r->item_case == PERMIT__V1__PULL_RESPONSE__ITEM_ENTRY &&
             r->entry != NULL) {
    const Permit__V1__LogEntry *e = r->entry;
    size_t el = e->signed_record.len;
    uint8_t *copy = NULL;
    int pruned = el == 0 && e->leaf_hash.len == PERMIT_HASH_LEN;
    if (pruned) el = PERMIT_LOG_PRUNED_LEN;
    if (e->seq != l->next_seq) {
      reject(l, "entry %llu arrived where %llu was due",
             (unsigned long long)e->seq, (unsigned long long)l->next_seq);
      now = 1;
    } else if (el == 0 || el > PERMIT_RECORD_MAX_LEN ||
               (!pruned && e->leaf_hash.len != 0)) {
      reject(l, "entry %llu: %zu bytes (want 1 to %d) and a %zu-byte leaf "
             "hash (want none, or 32 for a pruned entry)",
             (unsigned long long)e->seq, el, PERMIT_RECORD_MAX_LEN,
             e->leaf_hash.len);
      now = 1;
    } else if ((copy = malloc(el)) == NULL) {
      local_failure(l, "buffering entries", "out of memory");
      now = 1;
    } else {
      if (pruned) {
        copy[0] = 0;
        memcpy(copy + 1, e->leaf_hash.data, PERMIT_HASH_LEN);
      } else {
        memcpy(copy, e->signed_record.data, el);
      }
      if (items_push(l, 0, e->seq, copy, el) == 0) {
        l->next_seq++;
      } else {
        free(copy);
        local_failure(l, "buffering entries", "out of memory");
        now = 1;
      }
    }
  } else if (r->item_case == PERMIT__V1__PULL_RESPONSE__ITEM_CHECKPOINT &&
             r->checkpoint != NULL) {
    /* The envelope is packed again; the signed body inside is kept as
     * received, and that is what the signature covers. */
    size_t cl = permit__v1__signed_checkpoint__get_packed_size(r->checkpoint);
    uint8_t *copy = cl <= PERMIT_CHECKPOINT_MAX_LEN ? malloc(cl ? cl : 1)
                                                    : NULL;
    if (cl > PERMIT_CHECKPOINT_MAX_LEN) {
      reject(l, "a checkpoint of %zu bytes", cl);
    } else if (copy == NULL) {
      local_failure(l, "buffering a checkpoint", "out of memory");
    } else {
      permit__v1__signed_checkpoint__pack(r->checkpoint, copy);
      if (items_push(l, 1, 0, copy, cl) != 0) {
        free(copy);
        local_failure(l, "buffering a checkpoint", "out of memory");
      }
    }
    now = 1;
  } else {
    reject(l, "a Pull response with neither entry nor checkpoint");
    now = 1;
  }
  if (r != NULL) permit__v1__pull_response__free_unpacked(r, NULL);
  if (!l->discard && !l->progressed) link_up(l);
  if (before == 0 && l->nitems > 0) l->first_ms = now_ms;
  if (now || l->nitems >= BATCH_MAX || l->bytes >= BATCH_BYTES ||
      (l->nitems > 0 && now_ms - l->first_ms >= MAX_WAIT_MS)) {
    event_active(l->apply_ev, 0, 0);
  } else if (l->nitems > 0) {
    /* Re-armed by every item: fires once the stream pauses. */
    struct timeval tv = {0, QUIET_MS * 1000};
    evtimer_add(l->quiet_tm, &tv);
  }
  /* Checking and storing run after this read; stop reading if they fall
   * behind. */
  if (l->nitems + l->inflight >= PAUSE_ITEMS && l->call != NULL &&
      !l->paused) {
    l->paused = 1;
    permit_client_pause(l->call, 1);
  }
}

static void pull_done(void *arg, int status, const char *message) {
  peer_link *l = arg;
  l->call = NULL;
  l->call_ended = 1;
  l->paused = 0;
  if (l->s->closing) return;
  evtimer_del(l->follow_tm);
  /* What arrived before the end is as good as ever. */
  if (l->nitems > 0) event_active(l->apply_ev, 0, 0);
  if (l->halted || l->dead) return;
  struct timeval tv;
  if (l->reject[0] && !l->failed) {
    /* The issuer sent something bad; it will not get better soon, but an
     * operator may fix it (a new card, a repaired log). */
    tv.tv_sec = REJECT_RETRY_MS / 1000;
    tv.tv_usec = 0;
    evtimer_add(l->retry_tm, &tv);
    return;
  }
  if (l->progressed) l->backoff_ms = RETRY_INITIAL_MS;
  if (l->silent) {
    set_state(l, 0, "reconnecting: nothing from %s for %d s", l->peer.name,
              SILENT_MS / 1000);
  } else if (!l->failed && status == PERMIT_GRPC_OK) {
    set_state(l, 0, "reconnecting: %s ended the stream", l->peer.name);
    permit_logf(PERMIT_LEVEL_INFO, "sync.stream_ended",
                "Pull of %s from %s ended: OK %s",
                permit_log_origin(l->inbound), l->peer.endpoint, message);
  } else if (!l->failed) {
    if (l->fails++ == 0) l->down_since_ms = mono_ms();
    snprintf(l->last_fail, sizeof l->last_fail, "%s: %.200s",
             permit_grpc_status_name(status), message);
    set_state(l, 0, "backing off: %s", l->last_fail);
    /* Retried every few seconds while the peer is away: logged on the
     * 1st, 2nd, 4th, 8th... failure, so a long outage stays a few lines. */
    if ((l->fails & (l->fails - 1)) == 0)
      permit_logf(PERMIT_LEVEL_WARN, "sync.stream_ended",
                  "Pull of %s from %s ended: %s (failure %d in %lld s)",
                  permit_log_origin(l->inbound), l->peer.endpoint,
                  l->last_fail, l->fails,
                  (long long)((mono_ms() - l->down_since_ms) / 1000));
  }
  backoff_next(&l->backoff_ms, &tv);
  evtimer_add(l->retry_tm, &tv);
}

static const permit_client_handlers pull_handlers = {pull_message, pull_done};

/* Watches the stream: soon after the start, then every 30 s. */
static void on_follow_check(evutil_socket_t fd, short what, void *arg) {
  peer_link *l = arg;
  (void)fd, (void)what;
  if (l->call == NULL || l->discard) return;
  /* Connected and nothing to send yet is following too. */
  if (!l->progressed && permit_client_connected(l->client)) link_up(l);
  if (mono_ms() - l->last_rx_ms >= SILENT_MS) {
    l->silent = 1;
    permit_client_cancel(l->call); /* pull_done starts it again */
    return;
  }
  struct timeval tv = {WATCH_EVERY_MS / 1000, 0};
  evtimer_add(l->follow_tm, &tv);
}

static void pull_start(peer_link *l) {
  permit_sync *s = l->s;
  if (l->halted || l->dead || s->closing || l->call != NULL) return;
  /* What is left from the last stream (it ended while they waited) is
   * stored first: the new one starts from the mirror's size. */
  if (l->nitems > 0) dispatch(l);
  if (l->units != NULL) {
    l->restart_wanted = 1;
    drain(l); /* calls back here once they are stored */
    return;
  }
  if (l->halted || l->dead) return;
  l->discard = l->failed = l->progressed = l->silent = l->broken = 0;
  l->reject[0] = '\0';
  l->last_rx_ms = mono_ms();
  struct timeval tv;
  if (ensure_client(l) != 0) {
    set_state(l, 0, "backing off: %s", l->endpoint_err);
    backoff_next(&l->backoff_ms, &tv);
    evtimer_add(l->retry_tm, &tv);
    return;
  }
  Permit__V1__PullRequest req = PERMIT__V1__PULL_REQUEST__INIT;
  req.audience = (char *)permit_node_name(s->n);
  req.from_seq = permit_log_size(l->inbound);
  req.follow = 1;
  uint8_t buf[32 + PERMIT_NAME_MAX];
  size_t n = permit__v1__pull_request__pack(&req, buf);
  l->next_seq = req.from_seq;
  if (l->fails > 0)
    set_state(l, 0, "connecting to %s; unreachable for %lld s, last: %s",
              l->peer.endpoint,
              (long long)((mono_ms() - l->down_since_ms) / 1000),
              l->last_fail);
  else
    set_state(l, 0, "connecting to %s", l->peer.endpoint);
  l->call_ended = 0;
  permit_client_call *c =
      permit_client_start(l->client, PULL_PATH, buf, n, 0, &pull_handlers, l);
  if (c == NULL) {
    set_state(l, 0, "backing off: out of memory");
    backoff_next(&l->backoff_ms, &tv);
    evtimer_add(l->retry_tm, &tv);
    return;
  }
  /* A call that failed at once has already been reported (and freed). */
  if (!l->call_ended) {
    l->call = c;
    tv = (struct timeval){0, FOLLOW_CHECK_MS * 1000};
    evtimer_add(l->follow_tm, &tv);
  }
}

static void on_retry(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  pull_start(arg);
}

/* ---- catalogs (issuer side) ---- */

static void catalog_message(void *arg, const uint8_t *msg, size_t len) {
  peer_link *l = arg;
  free(l->cat_buf);
  l->cat_buf = malloc(len ? len : 1);
  l->cat_len = l->cat_buf != NULL ? len : 0;
  if (l->cat_buf != NULL && len > 0) memcpy(l->cat_buf, msg, len);
}

/* The same lists, titles and notices (the issue time aside). */
static int catalog_lists_equal(const Permit__V1__Catalog *a,
                               const Permit__V1__Catalog *b) {
  if (a->n_lists != b->n_lists) return 0;
  for (size_t i = 0; i < a->n_lists; i++) {
    const Permit__V1__CatalogList *x = a->lists[i], *y = b->lists[i];
    if (strcmp(x->list_id, y->list_id) != 0 ||
        strcmp(x->title, y->title) != 0 ||
        x->notice_version != y->notice_version ||
        strcmp(x->notice_text, y->notice_text) != 0)
      return 0;
  }
  return 1;
}

static void catalog_done(void *arg, int status, const char *message) {
  peer_link *l = arg;
  l->cat_call = NULL;
  l->cat_ended = 1;
  if (l->s->closing) return;
  permit_err err;
  if (status != PERMIT_GRPC_OK) {
    set_state(l, 1, "catalog: %s: %s", permit_grpc_status_name(status),
              message);
  } else if (l->cat_buf == NULL) {
    set_state(l, 1, "catalog: empty answer");
  } else {
    Permit__V1__Catalog *c;
    if (permit_catalog_verify(&l->peer, l->cat_buf, l->cat_len, &c, &err) !=
        0) {
      set_state(l, 1, "catalog refused: %s", err.msg);
      permit_logf(PERMIT_LEVEL_ERROR, "sync.catalog_refused", "%s: %s",
                  l->peer.name, err.msg);
    } else {
      size_t lists = c->n_lists;
      /* Stored only when its lists changed: it is fetched every few
       * seconds, signed afresh each time. */
      Permit__V1__Catalog *old = NULL;
      int same = permit_node_catalog_get(l->s->n, l->peer.name, &old,
                                         NULL) == 0 &&
                 catalog_lists_equal(old, c);
      if (old != NULL) permit__v1__catalog__free_unpacked(old, NULL);
      permit__v1__catalog__free_unpacked(c, NULL);
      if (!same && permit_node_catalog_store(l->s->n, l->peer.name,
                                             l->cat_buf, l->cat_len,
                                             &err) != 0) {
        set_state(l, 1, "catalog: %s", err.msg);
      } else {
        set_state(l, 1, "catalog of %zu list%s", lists, lists == 1 ? "" : "s");
        permit_logf(PERMIT_LEVEL_DEBUG, "sync.catalog",
                    "catalog of %s: %zu lists", l->peer.name, lists);
      }
    }
  }
  free(l->cat_buf);
  l->cat_buf = NULL;
  l->cat_len = 0;
  struct timeval tv = {CATALOG_EVERY_MS / 1000, 0};
  evtimer_add(l->cat_tm, &tv);
}

static const permit_client_handlers catalog_handlers = {catalog_message,
                                                        catalog_done};

static void catalog_fetch(peer_link *l) {
  struct timeval tv = {CATALOG_EVERY_MS / 1000, 0};
  if (l->s->closing || l->cat_call != NULL) return;
  if (ensure_client(l) != 0) {
    set_state(l, 1, "catalog: %s", l->endpoint_err);
    evtimer_add(l->cat_tm, &tv);
    return;
  }
  l->cat_ended = 0;
  permit_client_call *c = permit_client_start(
      l->client, CATALOG_PATH, NULL, 0, CATALOG_TIMEOUT_MS, &catalog_handlers,
      l);
  if (c == NULL) {
    set_state(l, 1, "catalog: out of memory");
    evtimer_add(l->cat_tm, &tv);
  } else if (!l->cat_ended) {
    l->cat_call = c;
  }
}

static void on_catalog_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  catalog_fetch(arg);
}

/* ---- links ---- */

static peer_link *link_find(permit_sync *s, const char *name) {
  for (size_t i = 0; i < s->nlinks; i++)
    if (strcmp(s->links[i]->peer.name, name) == 0) return s->links[i];
  return NULL;
}

/* Loads what the store says of the log: equivocation, newest checkpoint. */
static void link_load(peer_link *l) {
  permit_store *st = permit_node_store(l->s->n);
  char key[32 + PERMIT_NAME_MAX];
  int kl = snprintf(key, sizeof key, "equivocation/%s/0", l->peer.name);
  uint8_t *v;
  size_t vl;
  if (permit_store_get(st, PERMIT_CF_CHECKPOINTS, key, (size_t)kl, &v, &vl,
                       NULL) == 0) {
    free(v);
    l->halted = 1;
    set_state(l, 0,
              "stopped: equivocation: %s signed two views of the log "
              "(evidence in checkpoints under equivocation/%s/)",
              l->peer.name, l->peer.name);
    return;
  }
  size_t ckl = cp_key(l->peer.name, key, sizeof key);
  if (permit_store_get(st, PERMIT_CF_CHECKPOINTS, key, ckl, &v, &vl, NULL) ==
      0) {
    Permit__V1__Checkpoint *cp;
    if (permit_checkpoint_verify(v, vl, &l->peer.identity, 1, &cp, NULL) ==
        0) {
      l->have_newest = 1;
      l->newest_size = cp->size;
      l->newest_ts = cp->timestamp_ms;
      permit__v1__checkpoint__free_unpacked(cp, NULL);
    }
    free(v);
  }
}

static void link_add(permit_sync *s, const permit_peer *p) {
  if (link_find(s, p->name) != NULL) return;
  peer_link *l = calloc(1, sizeof *l);
  if (l == NULL) {
    permit_logf(PERMIT_LEVEL_ERROR, "sync.failed",
                "out of memory adding %s", p->name);
    return;
  }
  int self = permit_node_roles(s->n);
  l->s = s;
  l->peer = *p;
  l->pull = permit_node_exchanges(s->n, p);
  l->catalog =
      (p->roles & PERMIT_ROLE_AUDIENCE) && (self & PERMIT_ROLE_ISSUER);
  l->backoff_ms = RETRY_INITIAL_MS;
  l->inbound = permit_node_inbound(s->n, p->name);
  snprintf(l->state, sizeof l->state, "idle");
  snprintf(l->cat_state, sizeof l->cat_state, "catalog: not fetched yet");
  l->apply_ev = event_new(s->base, -1, 0, on_apply, l);
  l->verified_ev = event_new(s->base, -1, 0, on_verified, l);
  l->quiet_tm = evtimer_new(s->base, on_apply, l);
  l->retry_tm = evtimer_new(s->base, on_retry, l);
  l->follow_tm = evtimer_new(s->base, on_follow_check, l);
  l->cat_tm = evtimer_new(s->base, on_catalog_timer, l);
  pthread_mutex_lock(&s->mu);
  peer_link **g = realloc(s->links, (s->nlinks + 1) * sizeof *g);
  if (g != NULL) {
    s->links = g;
    s->links[s->nlinks++] = l;
  }
  pthread_mutex_unlock(&s->mu);
  if (g == NULL || l->apply_ev == NULL || l->verified_ev == NULL ||
      l->quiet_tm == NULL ||
      l->retry_tm == NULL || l->follow_tm == NULL || l->cat_tm == NULL ||
      (l->pull && l->inbound == NULL)) {
    set_state(l, 0, "stopped: cannot start (out of memory)");
    l->dead = 1;
    if (g == NULL) {
      /* Not in the set: nothing will free it later. */
      if (l->apply_ev) event_free(l->apply_ev);
      if (l->verified_ev) event_free(l->verified_ev);
      if (l->quiet_tm) event_free(l->quiet_tm);
      if (l->retry_tm) event_free(l->retry_tm);
      if (l->follow_tm) event_free(l->follow_tm);
      if (l->cat_tm) event_free(l->cat_tm);
      free(l);
    }
    return;
  }
  if (l->pull) {
    link_load(l);
    if (!l->halted) pull_start(l);
  }
  if (l->catalog) catalog_fetch(l);
}

/* Ends the link's calls and frees it; the sync thread, loop ended. */
static void link_free(peer_link *l) {
  /* Entries already received are stored rather than fetched again. */
  if (l->nitems > 0 && !l->discard && !l->halted && !l->dead) dispatch(l);
  items_clear(l);
  units_wait(l);
  drain(l);
  free(l->items);
  /* Frees the calls (on_done sees closing) and the connection. */
  permit_client_free(l->client);
  for (size_t i = 0; i < l->npending; i++) free(l->pending[i].data);
  free(l->cat_buf);
  if (l->apply_ev) event_free(l->apply_ev);
  if (l->verified_ev) event_free(l->verified_ev);
  if (l->quiet_tm) event_free(l->quiet_tm);
  if (l->retry_tm) event_free(l->retry_tm);
  if (l->follow_tm) event_free(l->follow_tm);
  if (l->cat_tm) event_free(l->cat_tm);
  free(l);
}

/* ---- the thread ---- */

/* Runs the queued jobs; with |cancelled| (the sync stops) they are only
 * told so. */
static void run_jobs(permit_sync *s, int cancelled) {
  for (;;) {
    pthread_mutex_lock(&s->mu);
    sync_job *j = s->jobs;
    if (j != NULL) {
      s->jobs = j->next;
      if (s->jobs == NULL) s->jobs_tail = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (j == NULL) return;
    j->fn(j->arg, cancelled);
    free(j);
  }
}

int permit_sync_submit(permit_sync *s, permit_sync_job_fn fn, void *arg) {
  sync_job *j = malloc(sizeof *j);
  if (j == NULL) return PERMIT_ENOMEM;
  *j = (sync_job){fn, arg, NULL};
  pthread_mutex_lock(&s->mu);
  if (s->stopping) {
    pthread_mutex_unlock(&s->mu);
    free(j);
    return PERMIT_EINVAL;
  }
  if (s->jobs_tail != NULL)
    s->jobs_tail->next = j;
  else
    s->jobs = j;
  s->jobs_tail = j;
  pthread_mutex_unlock(&s->mu);
  event_active(s->wake_ev, 0, 0);
  return 0;
}

permit_node *permit_sync_node(permit_sync *s) { return s->n; }

static void on_purge(evutil_socket_t fd, short what, void *arg) {
  permit_sync *s = arg;
  (void)fd, (void)what;
  size_t purged = 0;
  permit_err err = {0};
  int64_t keep = permit_node_handover_ms(s->n);
  if (permit_contacts_farewell_purge(permit_node_store(s->n),
                                     permit_now_ms() - keep, &purged,
                                     &err) != 0)
    permit_logf(PERMIT_LEVEL_ERROR, "contacts.purge_failed", "%s", err.msg);
  else if (purged > 0)
    permit_logf(PERMIT_LEVEL_INFO, "contacts.farewells_purged",
                "%zu erased contacts were never watched and are forgotten",
                purged);
  int64_t every = keep / 4;
  if (every > FAREWELL_CHECK_MAX_MS) every = FAREWELL_CHECK_MAX_MS;
  if (every < FAREWELL_CHECK_MIN_MS) every = FAREWELL_CHECK_MIN_MS;
  struct timeval tv = {(time_t)(every / 1000), 0};
  evtimer_add(s->purge_tm, &tv);
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
  permit_sync *s = arg;
  (void)fd, (void)what;
  run_jobs(s, 0);
  for (;;) {
    char name[PERMIT_NAME_MAX + 1];
    pthread_mutex_lock(&s->mu);
    int stopping = s->stopping, have = s->nadded > 0;
    if (have) {
      memcpy(name, s->added[--s->nadded], sizeof name);
    }
    pthread_mutex_unlock(&s->mu);
    if (stopping) {
      event_base_loopbreak(s->base);
      return;
    }
    if (!have) return;
    permit_peer p;
    if (permit_node_peer(s->n, name, &p) == 0) link_add(s, &p);
  }
}

static void *sync_main(void *arg) {
  permit_sync *s = arg;
  permit_peer *peers = calloc(PERMIT_MAX_PEERS, sizeof *peers);
  if (peers != NULL) {
    size_t n = permit_node_peers(s->n, peers, PERMIT_MAX_PEERS);
    if (n > PERMIT_MAX_PEERS) n = PERMIT_MAX_PEERS;
    for (size_t i = 0; i < n; i++) link_add(s, &peers[i]);
    free(peers);
  } else {
    permit_logf(PERMIT_LEVEL_ERROR, "sync.failed", "out of memory");
  }
  if (permit_node_roles(s->n) & PERMIT_ROLE_AUDIENCE) {
    s->purge_tm = evtimer_new(s->base, on_purge, s);
    if (s->purge_tm != NULL) on_purge(-1, 0, s);
  }
  event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
  s->closing = 1;
  if (s->purge_tm != NULL) event_free(s->purge_tm);
  pthread_mutex_lock(&s->mu);
  peer_link **links = s->links;
  size_t n = s->nlinks;
  s->links = NULL;
  s->nlinks = 0;
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; i < n; i++) link_free(links[i]);
  free(links);
  pool_stop(s);
  run_jobs(s, 1);
  /* Run what bufferevent_free() deferred before the loop goes away. */
  event_base_loop(s->base, EVLOOP_NONBLOCK);
  return NULL;
}

permit_sync *permit_sync_start(permit_node *n, SSL_CTX *tls, permit_err *err) {
  /* Other threads wake this loop: it needs libevent's locking, which
   * must be on before the base is made. */
  evthread_use_pthreads();
  permit_sync *s = calloc(1, sizeof *s);
  if (s == NULL) {
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  s->n = n;
  pthread_mutex_init(&s->mu, NULL);
  permit_key_id(permit_kx_key_public(permit_node_seal_key(n)),
                PERMIT_X25519_LEN, s->seal_key_id);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  s->verify_threads = cores < 1 ? 1
                      : cores > VERIFY_THREADS_MAX ? VERIFY_THREADS_MAX
                                                   : (int)cores;
  pool_start(s);
  s->base = event_base_new();
  s->wake_ev = s->base ? event_new(s->base, -1, 0, on_wake, s) : NULL;
  if (s->wake_ev == NULL) {
    if (s->base != NULL) event_base_free(s->base);
    pool_stop(s);
    pthread_mutex_destroy(&s->mu);
    free(s);
    permit_err_set(err, PERMIT_ENOMEM, "cannot make the sync's event loop");
    return NULL;
  }
  if (tls != NULL) {
    SSL_CTX_up_ref(tls);
    s->tls = tls;
  }
  if (pthread_create(&s->thread, NULL, sync_main, s) != 0) {
    event_free(s->wake_ev);
    event_base_free(s->base);
    if (s->tls != NULL) SSL_CTX_free(s->tls);
    pool_stop(s);
    pthread_mutex_destroy(&s->mu);
    free(s);
    permit_err_set(err, PERMIT_ENOMEM, "cannot start the sync thread");
    return NULL;
  }
  pthread_setname_np(s->thread, "permit-sync");
  return s;
}

void permit_sync_peer_added(permit_sync *s, const char *peer) {
  if (s == NULL || strlen(peer) > PERMIT_NAME_MAX) return;
  pthread_mutex_lock(&s->mu);
  if (s->nadded == s->added_cap) {
    size_t cap = s->added_cap ? s->added_cap * 2 : 8;
    void *g = realloc(s->added, cap * sizeof *s->added);
    if (g == NULL) {
      pthread_mutex_unlock(&s->mu);
      permit_logf(PERMIT_LEVEL_ERROR, "sync.failed",
                  "out of memory adding %s", peer);
      return;
    }
    s->added = g;
    s->added_cap = cap;
  }
  snprintf(s->added[s->nadded++], PERMIT_NAME_MAX + 1, "%s", peer);
  pthread_mutex_unlock(&s->mu);
  event_active(s->wake_ev, 0, 0);
}

void permit_sync_state(permit_sync *s, const char *peer, char *out,
                       size_t cap) {
  if (cap == 0) return;
  snprintf(out, cap, "idle");
  if (s == NULL) return;
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->nlinks; i++) {
    peer_link *l = s->links[i];
    if (strcmp(l->peer.name, peer) != 0) continue;
    if (l->pull && l->catalog)
      snprintf(out, cap, "%s; %s", l->state, l->cat_state);
    else if (l->pull)
      snprintf(out, cap, "%s", l->state);
    else if (l->catalog)
      snprintf(out, cap, "%s", l->cat_state);
    break;
  }
  pthread_mutex_unlock(&s->mu);
}

void permit_sync_stop(permit_sync *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&s->mu);
  s->stopping = 1;
  pthread_mutex_unlock(&s->mu);
  event_active(s->wake_ev, 0, 0);
  pthread_join(s->thread, NULL);
  event_free(s->wake_ev);
  event_base_free(s->base);
  if (s->tls != NULL) SSL_CTX_free(s->tls);
  free(s->added);
  pthread_mutex_destroy(&s->mu);
  free(s);
}
