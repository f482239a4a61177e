/*
 * peer.c - permit.v1.Peer, what an issuer serves its audiences on the
 * mutual-TLS peer listener (protocol.md 3, 5 and 6).
 *
 * Authorisation comes from the TLS handshake alone: the caller's name is
 * the name its pinned key was added under, and a peer reads only the log
 * addressed to that name.
 *
 * Pull streams the log from a cursor, in chunks and only while the call's
 * send queue has room (HTTP/2 flow control is the back-pressure), with a
 * signed checkpoint of the head once the entries it covers are out, at
 * least every CP_EVERY_ENTRIES entries, and at the head.  Checkpoints are signed by one thread per service, never on a
 * worker (permit_log_checkpoint() stores the checkpoint with a synced
 * write): at most once per head of each log, at least every second while
 * the log grows, and sooner (rate limited) when a call waits for one.  The
 * newest one per log is cached and shared by every stream.
 *
 * Open Pull and GetCheckpoint calls sit in one list per worker, touched
 * only by that worker.  When a log grows (permit_node_grew(), on whatever
 * thread appended) or a checkpoint is signed, a resume job runs on every
 * worker and pumps the calls there; jobs are coalesced, and none is posted
 * while no call is open.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "permit/logging.h"
#include "permit/node_services.h"
#include "permit/util.h"

/* Entries read per log scan; a pump stops earlier when the queue fills. */
#define PULL_CHUNK 256
/* A stream carries a checkpoint at least once per this many entries. */
#define CP_EVERY_ENTRIES 1000
/* A growing log gets a new checkpoint at least this often. */
#define CP_EVERY_MS 1000
/* Calls waiting for a checkpoint get one no sooner than this after the
 * previous signature of the same log, so that many followers of a busy
 * log do not turn every append into a signature and an fsync. */
#define CP_MIN_GAP_MS 50

/* The newest signed checkpoint of one outbound log. */
typedef struct cp_slot {
  char peer[PERMIT_NAME_MAX + 1];
  permit_log *log;
  uint8_t *cp; /* SignedCheckpoint bytes, NULL before the first */
  size_t cp_len;
  uint64_t cp_size;
  int64_t tried_at; /* monotonic ms of the last signing attempt */
  int wanted;       /* a call waits for a checkpoint of the head */
  int grew;         /* appended to since the last signature */
} cp_slot;

/*
 * What a queued resume job points to.  It outlives the service while jobs
 * are queued: a job that runs after permit_peer_service_free() (in
 * permit_server_free()'s final loop) finds |ps| NULL and does nothing.
 */
typedef struct hub {
  atomic_int refs;
  pthread_rwlock_t lock; /* written only to detach the service */
  permit_peer_service *ps;
} hub;

enum { CALL_PULL, CALL_CHECKPOINT };

/* One open Pull or GetCheckpoint call. */
typedef struct pcall {
  permit_call *call;
  permit_peer_service *ps;
  struct pcall *prev, *next;
  int kind;
  int worker;
  cp_slot *slot;
  permit_log *log;
  /* Pull */
  uint64_t next_seq;
  int follow;
  int cp_sent_any;
  uint64_t cp_sent; /* size of the last checkpoint sent */
  uint64_t since_cp; /* entries sent since */
  int asked;         /* a checkpoint was asked for since */
  uint8_t *held;    /* a checkpoint to send once next_seq reaches its size */
  size_t held_len;
  uint64_t held_size;
  /* GetCheckpoint: answer with a checkpoint of at least this size */
  uint64_t target;
} pcall;

struct permit_peer_service {
  permit_node *n;
  permit_server *srv;
  int nworkers;
  hub *hub;
  atomic_int open_calls; /* Pull and waiting GetCheckpoint calls */
  pthread_mutex_t mu;    /* slots, queued, stopping */
  pthread_cond_t cv;     /* wakes the checkpoint thread */
  cp_slot *slots[PERMIT_MAX_PEERS];
  size_t nslots;
  uint8_t *queued; /* per worker: a resume job is queued and not started */
  int stopping;
  int thread_started;
  pthread_t thread;
  pcall **lists; /* per worker, touched only by that worker */
  int fault_rewrite; /* tests only: serve checkpoints of a false history */
};

/* Tests of equivocation detection set PERMIT_FAULT_REWRITE_HISTORY to
 * this; any other value is ignored. */
#define FAULT_REWRITE_ON "yes-i-am-a-test-and-this-node-must-lie"

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hub_unref(hub *h) {
  if (atomic_fetch_sub(&h->refs, 1) != 1) return;
  pthread_rwlock_destroy(&h->lock);
  free(h);
}

/* The size a SignedCheckpoint states; our own bytes, so only decoded. */
static int cp_size_of(const uint8_t *cp, size_t len, uint64_t *size) {
  Permit__V1__SignedCheckpoint *env =
      permit__v1__signed_checkpoint__unpack(NULL, len, cp);
  if (env == NULL) return PERMIT_EINVAL;
  Permit__V1__Checkpoint *body =
      permit__v1__checkpoint__unpack(NULL, env->body.len, env->body.data);
  permit__v1__signed_checkpoint__free_unpacked(env, NULL);
  if (body == NULL) return PERMIT_EINVAL;
  *size = body->size;
  permit__v1__checkpoint__free_unpacked(body, NULL);
  return 0;
}

/* The slot of |peer|'s log, made on first use; NULL when the table is
 * full.  The lock is held. */
static cp_slot *slot_locked(permit_peer_service *ps, const char *peer,
                            permit_log *log) {
  for (size_t i = 0; i < ps->nslots; i++)
    if (ps->slots[i]->log == log) return ps->slots[i];
  if (ps->nslots == PERMIT_MAX_PEERS) return NULL;
  cp_slot *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  snprintf(s->peer, sizeof s->peer, "%s", peer);
  s->log = log;
  /* The newest checkpoint signed before a restart still holds: the log
   * is exactly its durable entries, and none was signed beyond them. */
  if (permit_log_latest_checkpoint(log, &s->cp, &s->cp_len, NULL) == 0 &&
      (cp_size_of(s->cp, s->cp_len, &s->cp_size) != 0 ||
       s->cp_size > permit_log_size(log))) {
    free(s->cp);
    s->cp = NULL;
    s->cp_size = 0;
  }
  ps->slots[ps->nslots++] = s;
  return s;
}

static cp_slot *slot_get(permit_peer_service *ps, const char *peer,
                         permit_log *log) {
  pthread_mutex_lock(&ps->mu);
  cp_slot *s = slot_locked(ps, peer, log);
  pthread_mutex_unlock(&ps->mu);
  return s;
}

static void resume_run(int worker, void *arg);

/*
 * Has every worker pump its open calls soon.  Any thread.  A worker with a
 * job queued and not yet started gets no second one: that job reads the
 * log's state when it runs, so it sees whatever made this call.
 */
static void resume_all(permit_peer_service *ps) {
  /* A call that opens after this check pumps once on its own, and reads
   * the log after the change that brought us here. */
  if (atomic_load(&ps->open_calls) == 0) return;
  int post = 0;
  pthread_mutex_lock(&ps->mu);
  for (int w = 0; w < ps->nworkers; w++)
    if (!ps->queued[w]) post = 1;
  if (post && !ps->stopping) {
    for (int w = 0; w < ps->nworkers; w++) ps->queued[w] = 1;
    atomic_fetch_add(&ps->hub->refs, ps->nworkers);
  } else {
    post = 0;
  }
  pthread_mutex_unlock(&ps->mu);
  if (post && permit_server_on_workers(ps->srv, resume_run, ps->hub) != 0) {
    /* Some jobs may be queued, so the references they hold stay taken
     * (the hub then leaks, on out-of-memory only); the flags are cleared
     * so that the next change tries again. */
    permit_logf(PERMIT_LEVEL_WARN, "peer.resume_failed",
                "cannot queue a resume job on the workers (out of memory)");
    pthread_mutex_lock(&ps->mu);
    for (int w = 0; w < ps->nworkers; w++) ps->queued[w] = 0;
    pthread_mutex_unlock(&ps->mu);
  }
}

/* permit_node_grow_fn: any thread, after entries were appended. */
static void on_grow(void *arg, const char *peer) {
  permit_peer_service *ps = arg;
  if (ps == NULL) return; /* unregistered meanwhile */
  permit_log *log = permit_node_outbound(ps->n, peer);
  if (log == NULL) return;
  pthread_mutex_lock(&ps->mu);
  cp_slot *s = slot_locked(ps, peer, log);
  if (s != NULL && !s->grew) {
    /* Only the first growth since the last signature needs the thread:
     * it then waits for the signature's time on its own (a wake-up per
     * appended entry cost ~3 us of CPU per opt-in). */
    s->grew = 1;
    pthread_cond_signal(&ps->cv);
  }
  pthread_mutex_unlock(&ps->mu);
  resume_all(ps);
}

/* The fault switch: re-signs |*cp| with its root changed, as an issuer
 * that rewrote history would.  Its key is real, so only the root check of
 * an audience can catch it. */
static void fault_rewrite(permit_peer_service *ps, uint8_t **cp, size_t *len) {
  Permit__V1__SignedCheckpoint *env =
      permit__v1__signed_checkpoint__unpack(NULL, *len, *cp);
  Permit__V1__Checkpoint *body =
      env != NULL ? permit__v1__checkpoint__unpack(NULL, env->body.len,
                                                   env->body.data)
                  : NULL;
  uint8_t buf[PERMIT_CHECKPOINT_MAX_LEN], *forged = NULL;
  size_t flen = 0;
  if (body != NULL && body->root_hash.len == PERMIT_HASH_LEN &&
      permit__v1__checkpoint__get_packed_size(body) <= sizeof buf) {
    body->root_hash.data[0] ^= 0x01;
    size_t bl = permit__v1__checkpoint__pack(body, buf);
    if (permit_envelope_sign(PERMIT_CHECKPOINT_CONTEXT, buf, bl,
                             permit_node_sign_key(ps->n), &forged, &flen,
                             NULL) == 0) {
      free(*cp);
      *cp = forged;
      *len = flen;
    }
  }
  if (body != NULL) permit__v1__checkpoint__free_unpacked(body, NULL);
  if (env != NULL) permit__v1__signed_checkpoint__free_unpacked(env, NULL);
}

/* Signs a checkpoint of |s|'s head; the lock is held and dropped around
 * the signature and its synced write. */
static void sign_locked(permit_peer_service *ps, cp_slot *s) {
  s->wanted = s->grew = 0;
  s->tried_at = mono_ms();
  pthread_mutex_unlock(&ps->mu);
  uint8_t *cp = NULL;
  size_t len = 0;
  uint64_t size = 0;
  permit_err err = {0};
  int rc = permit_log_checkpoint(s->log, permit_node_sign_key(ps->n),
                                 permit_now_ms(), &cp, &len, &err);
  if (rc == 0 && cp_size_of(cp, len, &size) != 0)
    rc = permit_err_set(&err, PERMIT_ECORRUPT, "cannot decode our own "
                        "checkpoint");
  if (rc == 0 && ps->fault_rewrite && size > 1) fault_rewrite(ps, &cp, &len);
  if (rc != 0)
    permit_logf(PERMIT_LEVEL_ERROR, "checkpoint.failed",
                "cannot sign a checkpoint of the log for %s: %s", s->peer,
                err.msg);
  pthread_mutex_lock(&ps->mu);
  if (rc != 0) {
    free(cp);
    /* Try again a second later rather than spin on a failing store. */
    s->grew = 1;
    return;
  }
  free(s->cp);
  s->cp = cp;
  s->cp_len = len;
  s->cp_size = size;
}

/*
 * The checkpoint thread: signs the head of each log that grew (at most
 * once per CP_EVERY_MS) or that a call waits for (at most once per
 * CP_MIN_GAP_MS), and resumes the calls after each signature.
 */
static void *checkpointer_main(void *arg) {
  permit_peer_service *ps = arg;
  pthread_mutex_lock(&ps->mu);
  while (!ps->stopping) {
    int64_t now = mono_ms(), wake = -1;
    cp_slot *due = NULL;
    for (size_t i = 0; i < ps->nslots && due == NULL; i++) {
      cp_slot *s = ps->slots[i];
      if (!s->wanted && !s->grew) continue;
      if (s->cp != NULL && permit_log_size(s->log) == s->cp_size) {
        s->wanted = s->grew = 0; /* the head is signed already */
        continue;
      }
      int64_t at = s->tried_at + (s->wanted ? CP_MIN_GAP_MS : CP_EVERY_MS);
      if (s->tried_at == 0 || at <= now)
        due = s;
      else if (wake < 0 || at < wake)
        wake = at;
    }
    if (due != NULL) {
      sign_locked(ps, due);
      pthread_mutex_unlock(&ps->mu);
      resume_all(ps);
      pthread_mutex_lock(&ps->mu);
      continue;
    }
    if (wake < 0) {
      pthread_cond_wait(&ps->cv, &ps->mu);
    } else {
      struct timespec ts = {.tv_sec = wake / 1000,
                            .tv_nsec = (wake % 1000) * 1000000};
      pthread_cond_timedwait(&ps->cv, &ps->mu, &ts);
    }
  }
  pthread_mutex_unlock(&ps->mu);
  return NULL;
}

/* Asks the checkpoint thread for a checkpoint of |s|'s head. */
static void want_checkpoint(permit_peer_service *ps, cp_slot *s) {
  pthread_mutex_lock(&ps->mu);
  s->wanted = 1;
  pthread_cond_signal(&ps->cv);
  pthread_mutex_unlock(&ps->mu);
}

/* ---- calls ---- */

static void pcall_unlink(pcall *pc) {
  permit_peer_service *ps = pc->ps;
  if (pc->prev != NULL)
    pc->prev->next = pc->next;
  else
    ps->lists[pc->worker] = pc->next;
  if (pc->next != NULL) pc->next->prev = pc->prev;
  atomic_fetch_sub(&ps->open_calls, 1);
}

static void pcall_close(permit_call *c, int cancelled) {
  pcall *pc = permit_call_data(c);
  (void)cancelled;
  if (pc == NULL) return;
  pcall_unlink(pc);
  free(pc->held);
  free(pc);
}

/* Sends a PullResponse holding |cp| as is: field 2, length-delimited, so
 * the signed bytes are never re-encoded. */
static int send_checkpoint_item(permit_call *c, const uint8_t *cp,
                                size_t len) {
  uint8_t *buf = malloc(len + 11);
  if (buf == NULL) return PERMIT_ENOMEM;
  size_t n = 0;
  buf[n++] = 0x12;
  for (uint64_t v = len; ; v >>= 7) {
    if (v < 0x80) {
      buf[n++] = (uint8_t)v;
      break;
    }
    buf[n++] = (uint8_t)(v | 0x80);
  }
  memcpy(buf + n, cp, len);
  int rc = permit_call_send(c, buf, n + len);
  free(buf);
  return rc;
}

/* permit_log_visit_fn: one entry into the stream; stops once full. */
static int send_entry(void *arg, uint64_t seq, const uint8_t *entry,
                      size_t len) {
  pcall *pc = arg;
  Permit__V1__LogEntry le = PERMIT__V1__LOG_ENTRY__INIT;
  le.seq = seq;
  if (permit_log_pruned(entry, len, NULL)) {
    /* An erased buyer's entry: the leaf hash keeps the tree checkable. */
    le.leaf_hash.data = (uint8_t *)entry + 1;
    le.leaf_hash.len = PERMIT_HASH_LEN;
  } else {
    le.signed_record.data = (uint8_t *)entry;
    le.signed_record.len = len;
  }
  Permit__V1__PullResponse r = PERMIT__V1__PULL_RESPONSE__INIT;
  r.item_case = PERMIT__V1__PULL_RESPONSE__ITEM_ENTRY;
  r.entry = &le;
  size_t n = permit__v1__pull_response__get_packed_size(&r);
  uint8_t *buf = malloc(n);
  if (buf == NULL) return PERMIT_ENOMEM;
  permit__v1__pull_response__pack(&r, buf);
  int rc = permit_call_send(pc->call, buf, n);
  free(buf);
  if (rc != 0) return rc;
  pc->next_seq = seq + 1;
  pc->since_cp++;
  return permit_call_full(pc->call) ? 1 : 0;
}

/* Takes the newest signed checkpoint when it is newer than the last one
 * this stream sent and no other is waiting to be sent. */
static void take_checkpoint(pcall *pc) {
  permit_peer_service *ps = pc->ps;
  pthread_mutex_lock(&ps->mu);
  cp_slot *s = pc->slot;
  if (s->cp != NULL && (!pc->cp_sent_any || s->cp_size > pc->cp_sent)) {
    uint8_t *copy = malloc(s->cp_len);
    if (copy != NULL) {
      memcpy(copy, s->cp, s->cp_len);
      pc->held = copy;
      pc->held_len = s->cp_len;
      pc->held_size = s->cp_size;
    }
  }
  pthread_mutex_unlock(&ps->mu);
}

/*
 * Produces as much of a Pull stream as the send queue takes: entries in
 * order and checkpoints of the head.  A checkpoint goes out as soon as the
 * entries it covers are out, or earlier once CP_EVERY_ENTRIES entries went
 * without one (a long backlog then carries the issuer's commitment to the
 * head from its start; the audience checks it when it gets there).  At
 * the head the stream needs a checkpoint of exactly the head, asked of
 * the checkpoint thread when there is none yet (its signature resumes
 * us).  Without follow the call ends after that checkpoint.
 */
static void pull_pump(pcall *pc) {
  permit_call *c = pc->call;
  while (!permit_call_finished(c) && !permit_call_full(c)) {
    if (pc->held == NULL) take_checkpoint(pc);
    int due = pc->since_cp >= CP_EVERY_ENTRIES;
    if (pc->held != NULL && (pc->held_size <= pc->next_seq || due)) {
      int rc = send_checkpoint_item(c, pc->held, pc->held_len);
      free(pc->held);
      pc->held = NULL;
      if (rc != 0) {
        permit_call_finish(c, PERMIT_GRPC_INTERNAL,
                           "cannot queue a checkpoint: %s",
                           permit_strerror(rc));
        return;
      }
      pc->cp_sent_any = 1;
      pc->cp_sent = pc->held_size;
      pc->since_cp = 0;
      pc->asked = 0;
      continue;
    }
    if (due && pc->held == NULL && !pc->asked) {
      /* Only once per stretch: the signature resumes us. */
      want_checkpoint(pc->ps, pc->slot);
      pc->asked = 1;
    }
    uint64_t size = permit_log_size(pc->log);
    if (pc->next_seq < size) {
      uint64_t to = size - pc->next_seq > PULL_CHUNK
                        ? pc->next_seq + PULL_CHUNK
                        : size;
      permit_err err = {0};
      int rc = permit_log_scan(pc->log, pc->next_seq, to, send_entry, pc,
                               &err);
      if (rc < 0) {
        permit_logf(PERMIT_LEVEL_ERROR, "peer.pull_failed",
                    "log for %s at %llu: %s", pc->slot->peer,
                    (unsigned long long)pc->next_seq,
                    err.msg[0] ? err.msg : permit_strerror(rc));
        permit_call_finish(c, PERMIT_GRPC_INTERNAL,
                           "cannot read the log at entry %llu",
                           (unsigned long long)pc->next_seq);
        return;
      }
      continue;
    }
    if (pc->cp_sent_any && pc->cp_sent == pc->next_seq) {
      if (!pc->follow) permit_call_finish(c, PERMIT_GRPC_OK, NULL);
      return; /* following: the next append resumes us */
    }
    want_checkpoint(pc->ps, pc->slot);
    return;
  }
}

/* Answers a GetCheckpoint once a checkpoint of its target size exists. */
static void checkpoint_pump(pcall *pc) {
  permit_peer_service *ps = pc->ps;
  if (permit_call_finished(pc->call)) return;
  uint8_t *copy = NULL;
  size_t len = 0;
  pthread_mutex_lock(&ps->mu);
  cp_slot *s = pc->slot;
  if (s->cp != NULL && s->cp_size >= pc->target) {
    copy = malloc(s->cp_len);
    if (copy != NULL) memcpy(copy, s->cp, s->cp_len);
    len = s->cp_len;
  } else {
    s->wanted = 1;
    pthread_cond_signal(&ps->cv);
  }
  pthread_mutex_unlock(&ps->mu);
  if (copy == NULL && len > 0) {
    permit_call_finish(pc->call, PERMIT_GRPC_RESOURCE_EXHAUSTED,
                       "out of memory");
    return;
  }
  if (copy == NULL) return; /* the signature resumes us */
  int rc = permit_call_send(pc->call, copy, len);
  free(copy);
  if (rc != 0)
    permit_call_finish(pc->call, PERMIT_GRPC_INTERNAL,
                       "cannot queue the checkpoint");
  else
    permit_call_finish(pc->call, PERMIT_GRPC_OK, NULL);
}

static void pump(pcall *pc) {
  if (pc->kind == CALL_PULL)
    pull_pump(pc);
  else
    checkpoint_pump(pc);
}

static void resume_run(int worker, void *arg) {
  hub *h = arg;
  pthread_rwlock_rdlock(&h->lock);
  permit_peer_service *ps = h->ps;
  if (ps != NULL) {
    pthread_mutex_lock(&ps->mu);
    ps->queued[worker] = 0;
    pthread_mutex_unlock(&ps->mu);
    /* A pump never closes a call synchronously (the transport defers
     * on_close), so the list stays intact while we walk it. */
    for (pcall *pc = ps->lists[worker]; pc != NULL; pc = pc->next) pump(pc);
  }
  pthread_rwlock_unlock(&h->lock);
  hub_unref(h);
}

static void pull_writable(permit_call *c) {
  pcall *pc = permit_call_data(c);
  if (pc != NULL) pull_pump(pc);
}

/* Registers |pc| on its worker's list, then produces what it can. */
static void pcall_start(permit_call *c, pcall *pc) {
  permit_peer_service *ps = pc->ps;
  pc->call = c;
  pc->worker = permit_call_worker(c);
  pc->next = ps->lists[pc->worker];
  if (pc->next != NULL) pc->next->prev = pc;
  ps->lists[pc->worker] = pc;
  atomic_fetch_add(&ps->open_calls, 1);
  permit_call_set_data(c, pc);
  pump(pc);
}

/*
 * Checks that the caller may read the log addressed to |audience| and
 * finds it.  On refusal finishes the call and returns -1.
 */
static int authorize(permit_call *c, permit_peer_service *ps,
                     const char *audience, permit_log **log) {
  const char *peer = permit_call_peer(c);
  if (peer == NULL) {
    permit_call_finish(c, PERMIT_GRPC_UNAUTHENTICATED,
                       "Peer calls need mutual TLS with a pinned key");
    return -1;
  }
  if (audience[0] == '\0') {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "audience is empty: name the log's audience (your "
                       "own node name)");
    return -1;
  }
  if (strcmp(audience, peer) != 0) {
    permit_logf(PERMIT_LEVEL_WARN, "peer.denied",
                "%s asked for the log addressed to %.253s", peer, audience);
    permit_call_finish(c, PERMIT_GRPC_PERMISSION_DENIED,
                       "the log for %.253s is not addressed to you (%s)",
                       audience, peer);
    return -1;
  }
  permit_peer p;
  *log = NULL;
  /* Opt-ins flow from issuer to audience, unsubscribes back: a log
   * exists wherever one side issues and the other is an audience. */
  if (permit_node_peer(ps->n, peer, &p) == 0 && permit_node_exchanges(ps->n, &p))
    *log = permit_node_outbound(ps->n, peer);
  if (*log == NULL) {
    permit_call_finish(c, PERMIT_GRPC_PERMISSION_DENIED,
                       "no log flows between %s and %s: one must issue and "
                       "the other be an audience",
                       permit_node_name(ps->n), peer);
    return -1;
  }
  return 0;
}

static void pull_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_peer_service *ps = permit_call_method_arg(c);
  Permit__V1__PullRequest *req =
      permit__v1__pull_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a PullRequest");
    return;
  }
  permit_log *log;
  if (authorize(c, ps, req->audience, &log) != 0) goto out;
  uint64_t size = permit_log_size(log);
  if (req->from_seq > size) {
    permit_call_finish(c, PERMIT_GRPC_OUT_OF_RANGE,
                       "from_seq %llu is past the end of the log for %s "
                       "(%llu entries)",
                       (unsigned long long)req->from_seq, req->audience,
                       (unsigned long long)size);
    goto out;
  }
  pcall *pc = calloc(1, sizeof *pc);
  cp_slot *slot = pc != NULL ? slot_get(ps, req->audience, log) : NULL;
  if (slot == NULL) {
    free(pc);
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  *pc = (pcall){.ps = ps, .kind = CALL_PULL, .slot = slot, .log = log,
                .next_seq = req->from_seq, .follow = req->follow};
  permit_logf(PERMIT_LEVEL_DEBUG, "peer.pull", "%s pulls from %llu%s",
              req->audience, (unsigned long long)req->from_seq,
              req->follow ? ", following" : "");
  pcall_start(c, pc);
out:
  permit__v1__pull_request__free_unpacked(req, NULL);
}

static void get_checkpoint_message(permit_call *c, const uint8_t *msg,
                                   size_t len) {
  permit_peer_service *ps = permit_call_method_arg(c);
  Permit__V1__GetCheckpointRequest *req =
      permit__v1__get_checkpoint_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a GetCheckpointRequest");
    return;
  }
  permit_log *log;
  if (authorize(c, ps, req->audience, &log) == 0) {
    pcall *pc = calloc(1, sizeof *pc);
    cp_slot *slot = pc != NULL ? slot_get(ps, req->audience, log) : NULL;
    if (slot == NULL) {
      free(pc);
      permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    } else {
      *pc = (pcall){.ps = ps, .kind = CALL_CHECKPOINT, .slot = slot,
                    .log = log, .target = permit_log_size(log)};
      pcall_start(c, pc);
    }
  }
  permit__v1__get_checkpoint_request__free_unpacked(req, NULL);
}

/* Sends a Proof of |n| hashes and ends the call. */
static void send_proof(permit_call *c, permit_hash *hashes, size_t n) {
  ProtobufCBinaryData bins[PERMIT_MERKLE_MAX_PROOF];
  for (size_t i = 0; i < n; i++) {
    bins[i].data = hashes[i];
    bins[i].len = PERMIT_HASH_LEN;
  }
  Permit__V1__Proof p = PERMIT__V1__PROOF__INIT;
  p.n_hashes = n;
  p.hashes = bins;
  uint8_t buf[PERMIT_MERKLE_MAX_PROOF * (PERMIT_HASH_LEN + 2) + 8];
  size_t len = permit__v1__proof__pack(&p, buf);
  if (permit_call_send(c, buf, len) != 0) {
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "cannot queue the proof");
    return;
  }
  permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

static void inclusion_message(permit_call *c, const uint8_t *msg,
                              size_t len) {
  permit_peer_service *ps = permit_call_method_arg(c);
  Permit__V1__GetInclusionProofRequest *req =
      permit__v1__get_inclusion_proof_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a GetInclusionProofRequest");
    return;
  }
  permit_log *log;
  if (authorize(c, ps, req->audience, &log) != 0) goto out;
  uint64_t size = permit_log_size(log);
  if (req->tree_size > size) {
    permit_call_finish(c, PERMIT_GRPC_OUT_OF_RANGE,
                       "tree_size %llu is past the end of the log (%llu "
                       "entries)",
                       (unsigned long long)req->tree_size,
                       (unsigned long long)size);
    goto out;
  }
  if (req->seq >= req->tree_size) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "seq %llu is not in a tree of %llu entries",
                       (unsigned long long)req->seq,
                       (unsigned long long)req->tree_size);
    goto out;
  }
  permit_hash proof[PERMIT_MERKLE_MAX_PROOF];
  size_t n = 0;
  permit_err err = {0};
  if (permit_log_inclusion_proof(log, req->seq, req->tree_size, proof, &n,
                                 &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "peer.proof_failed", "%s", err.msg);
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "cannot make the proof");
    goto out;
  }
  send_proof(c, proof, n);
out:
  permit__v1__get_inclusion_proof_request__free_unpacked(req, NULL);
}

static void consistency_message(permit_call *c, const uint8_t *msg,
                                size_t len) {
  permit_peer_service *ps = permit_call_method_arg(c);
  Permit__V1__GetConsistencyProofRequest *req =
      permit__v1__get_consistency_proof_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a GetConsistencyProofRequest");
    return;
  }
  permit_log *log;
  if (authorize(c, ps, req->audience, &log) != 0) goto out;
  uint64_t size = permit_log_size(log);
  if (req->size2 > size) {
    permit_call_finish(c, PERMIT_GRPC_OUT_OF_RANGE,
                       "size2 %llu is past the end of the log (%llu entries)",
                       (unsigned long long)req->size2,
                       (unsigned long long)size);
    goto out;
  }
  if (req->size1 == 0 || req->size1 > req->size2) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "want 0 < size1 <= size2, got size1 %llu and size2 "
                       "%llu",
                       (unsigned long long)req->size1,
                       (unsigned long long)req->size2);
    goto out;
  }
  permit_hash proof[PERMIT_MERKLE_MAX_PROOF];
  size_t n = 0;
  permit_err err = {0};
  if (permit_log_consistency_proof(log, req->size1, req->size2, proof, &n,
                                   &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "peer.proof_failed", "%s", err.msg);
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "cannot make the proof");
    goto out;
  }
  send_proof(c, proof, n);
out:
  permit__v1__get_consistency_proof_request__free_unpacked(req, NULL);
}

static void get_card_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_peer_service *ps = permit_call_method_arg(c);
  (void)msg, (void)len; /* GetCardRequest has no fields */
  if (permit_call_peer(c) == NULL) {
    permit_call_finish(c, PERMIT_GRPC_UNAUTHENTICATED,
                       "Peer calls need mutual TLS with a pinned key");
    return;
  }
  uint8_t *card = NULL;
  size_t cl = 0;
  permit_err err = {0};
  if (permit_node_card(ps->n, &card, &cl, &err) != 0) {
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "cannot sign the card: %s",
                       err.msg);
    return;
  }
  int rc = permit_call_send(c, card, cl);
  free(card);
  if (rc != 0)
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "cannot queue the card");
  else
    permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

static void get_catalog_message(permit_call *c, const uint8_t *msg,
                                size_t len) {
  permit_peer_service *ps = permit_call_method_arg(c);
  (void)msg, (void)len; /* GetCatalogRequest has no fields */
  if (permit_call_peer(c) == NULL) {
    permit_call_finish(c, PERMIT_GRPC_UNAUTHENTICATED,
                       "Peer calls need mutual TLS with a pinned key");
    return;
  }
  if (!(permit_node_roles(ps->n) & PERMIT_ROLE_AUDIENCE)) {
    permit_call_finish(c, PERMIT_GRPC_FAILED_PRECONDITION,
                       "%s has no lists (no audience role)",
                       permit_node_name(ps->n));
    return;
  }
  uint8_t *cat = NULL;
  size_t cl = 0;
  permit_err err = {0};
  if (permit_node_catalog(ps->n, &cat, &cl, &err) != 0) {
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "cannot sign the catalog: %s",
                       err.msg);
    return;
  }
  int rc = permit_call_send(c, cat, cl);
  free(cat);
  if (rc != 0)
    permit_call_finish(c, PERMIT_GRPC_INTERNAL, "cannot queue the catalog");
  else
    permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

/* ---- the service ---- */

permit_peer_service *permit_peer_service_new(permit_node *n,
                                             permit_server *srv,
                                             permit_err *err) {
  permit_peer_service *ps = calloc(1, sizeof *ps);
  if (ps == NULL) {
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  ps->n = n;
  ps->srv = srv;
  ps->nworkers = permit_server_worker_count(srv);
  ps->hub = calloc(1, sizeof *ps->hub);
  ps->queued = calloc((size_t)ps->nworkers, 1);
  ps->lists = calloc((size_t)ps->nworkers, sizeof *ps->lists);
  if (ps->hub == NULL || ps->queued == NULL || ps->lists == NULL) {
    free(ps->hub);
    free(ps->queued);
    free(ps->lists);
    free(ps);
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  atomic_init(&ps->hub->refs, 1);
  pthread_rwlock_init(&ps->hub->lock, NULL);
  ps->hub->ps = ps;
  atomic_init(&ps->open_calls, 0);
  const char *fault = getenv("PERMIT_FAULT_REWRITE_HISTORY");
  ps->fault_rewrite = fault != NULL && strcmp(fault, FAULT_REWRITE_ON) == 0;
  if (ps->fault_rewrite)
    permit_logf(PERMIT_LEVEL_ERROR, "peer.fault_injection",
                "PERMIT_FAULT_REWRITE_HISTORY is set: this node serves "
                "checkpoints of a history it does not have, to test that "
                "audiences catch equivocation; never run it for real");
  pthread_mutex_init(&ps->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&ps->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&ps->thread, NULL, checkpointer_main, ps) != 0) {
    permit_err_set(err, PERMIT_ENOMEM, "cannot start the checkpoint thread");
    permit_peer_service_free(ps);
    return NULL;
  }
  pthread_setname_np(ps->thread, "permit-checkpt");
  ps->thread_started = 1;
  permit_node_on_grow(n, on_grow, ps);
  return ps;
}

/*
 * After permit_server_stop() (every call is closed then).  Jobs still
 * queued on the workers hold the hub, not the service.
 */
void permit_peer_service_free(permit_peer_service *ps) {
  if (ps == NULL) return;
  if (ps->thread_started) permit_node_on_grow(ps->n, NULL, NULL);
  pthread_mutex_lock(&ps->mu);
  ps->stopping = 1;
  pthread_cond_signal(&ps->cv);
  pthread_mutex_unlock(&ps->mu);
  if (ps->thread_started) pthread_join(ps->thread, NULL);
  pthread_rwlock_wrlock(&ps->hub->lock);
  ps->hub->ps = NULL;
  pthread_rwlock_unlock(&ps->hub->lock);
  hub_unref(ps->hub);
  for (size_t i = 0; i < ps->nslots; i++) {
    free(ps->slots[i]->cp);
    free(ps->slots[i]);
  }
  pthread_mutex_destroy(&ps->mu);
  pthread_cond_destroy(&ps->cv);
  free(ps->queued);
  free(ps->lists);
  free(ps);
}

void permit_peer_service_methods(permit_peer_service *ps,
                                 permit_method out[PERMIT_PEER_METHODS]) {
  out[0] = (permit_method){.path = "/permit.v1.Peer/GetCard",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = get_card_message,
                           .arg = ps};
  out[1] = (permit_method){.path = "/permit.v1.Peer/GetCatalog",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = get_catalog_message,
                           .arg = ps};
  out[2] = (permit_method){.path = "/permit.v1.Peer/Pull",
                           .kind = PERMIT_RPC_SERVER_STREAM,
                           .on_message = pull_message,
                           .on_writable = pull_writable,
                           .on_close = pcall_close,
                           .arg = ps};
  out[3] = (permit_method){.path = "/permit.v1.Peer/GetCheckpoint",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = get_checkpoint_message,
                           .on_close = pcall_close,
                           .arg = ps};
  out[4] = (permit_method){.path = "/permit.v1.Peer/GetInclusionProof",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = inclusion_message,
                           .arg = ps};
  out[5] = (permit_method){.path = "/permit.v1.Peer/GetConsistencyProof",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = consistency_message,
                           .arg = ps};
}
