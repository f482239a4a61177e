#include "permit/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/util.h"

/* Keys: every log's rows start with an 8-byte tag, the first 8 bytes of
 * SHA-256(origin); the head row also stores the origin, so a tag collision
 * is detected at open instead of mixing two logs. */
#define TAG_LEN 8
#define LEAF_KEY_LEN (TAG_LEN + 8)
#define NODE_KEY_LEN (TAG_LEN + 1 + 8)

/* One append waiting for the group commit. */
typedef struct pending {
  const permit_iov *entries;
  size_t n;
  permit_log_extra_fn extra;
  void *arg;
  permit_err *err;
  uint64_t seq;
  int rc;
  int done;
  struct pending *next;
  /* Asynchronous appends only: called once committed, then freed. */
  permit_log_done_fn done_fn;
  void *done_arg;
  permit_err own_err;
} pending;

struct permit_log {
  permit_store *store;
  uint8_t tag[TAG_LEN];
  char origin[PERMIT_ORIGIN_MAX];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  permit_merkle_frontier frontier; /* of the durable entries */
  pending *queue, *queue_tail;
  int committing;
  int failed; /* a synced write failed: what is on disk is unknown */
  permit_batch *batch; /* used only by the committing thread */
  /* Leads groups of asynchronous appends, which have no waiting thread. */
  pthread_t committer;
  int committer_running, stopping;
};

static void leaf_key(const permit_log *log, uint64_t seq, uint8_t k[LEAF_KEY_LEN]) {
  memcpy(k, log->tag, TAG_LEN);
  permit_put_u64be(k + TAG_LEN, seq);
}

static void node_key(const permit_log *log, unsigned level, uint64_t index,
                     uint8_t k[NODE_KEY_LEN]) {
  memcpy(k, log->tag, TAG_LEN);
  k[TAG_LEN] = (uint8_t)level;
  permit_put_u64be(k + TAG_LEN + 1, index);
}

/* permit_merkle_node_fn over the stored tree. */
static int node_read(void *arg, unsigned level, uint64_t index,
                     permit_hash out) {
  permit_log *log = arg;
  uint8_t k[NODE_KEY_LEN];
  node_key(log, level, index, k);
  int rc = permit_store_get_fixed(log->store, PERMIT_CF_LOG_NODES, k, sizeof k,
                                  out, PERMIT_HASH_LEN, NULL);
  return rc == PERMIT_ENOTFOUND ? PERMIT_ECORRUPT : rc;
}

/* permit_merkle_emit_fn: adds a completed node to the batch. */
static int node_emit(void *arg, unsigned level, uint64_t index,
                     const permit_hash hash) {
  permit_log *log = arg;
  uint8_t k[NODE_KEY_LEN];
  node_key(log, level, index, k);
  permit_batch_put(log->batch, PERMIT_CF_LOG_NODES, k, sizeof k, hash,
                   PERMIT_HASH_LEN);
  return 0;
}

static void head_put(permit_log *log, uint64_t size) {
  uint8_t v[8 + PERMIT_ORIGIN_MAX];
  size_t olen = strlen(log->origin);
  permit_put_u64be(v, size);
  memcpy(v + 8, log->origin, olen);
  permit_batch_put(log->batch, PERMIT_CF_LOG_META, log->tag, TAG_LEN, v,
                   8 + olen);
}

int permit_log_open(permit_store *s, const char *issuer, const char *audience,
                    permit_log **out, permit_err *err) {
  permit_err sub;
  if (permit_name_validate(issuer, &sub) != 0)
    return permit_err_set(err, PERMIT_EINVAL, "log issuer: %s", sub.msg);
  if (permit_name_validate(audience, &sub) != 0)
    return permit_err_set(err, PERMIT_EINVAL, "log audience: %s", sub.msg);
  permit_log *log = calloc(1, sizeof *log);
  if (log == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  log->store = s;
  snprintf(log->origin, sizeof log->origin, "permit/v1/log/%s/%s", issuer,
           audience);
  uint8_t h[PERMIT_SHA256_LEN];
  permit_iov iov = {log->origin, strlen(log->origin)};
  int rc = permit_sha256(&iov, 1, h);
  if (rc != 0) {
    free(log);
    return permit_err_set(err, rc, "cannot hash the log origin");
  }
  memcpy(log->tag, h, TAG_LEN);
  log->batch = permit_batch_new(s);
  if (log->batch == NULL) {
    free(log);
    return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  }
  pthread_mutex_init(&log->mu, NULL);
  pthread_cond_init(&log->cv, NULL);
  permit_merkle_frontier_init(&log->frontier);

  uint8_t *v = NULL;
  size_t vlen = 0;
  rc = permit_store_get(s, PERMIT_CF_LOG_META, log->tag, TAG_LEN, &v, &vlen,
                        err);
  if (rc == PERMIT_ENOTFOUND) {
    permit_err_clear(err);
    *out = log;
    return 0;
  }
  if (rc != 0) goto fail;
  if (vlen < 8 || vlen - 8 != strlen(log->origin) ||
      memcmp(v + 8, log->origin, vlen - 8) != 0) {
    rc = permit_err_set(err, PERMIT_ECORRUPT,
                        "log head for %s names another log", log->origin);
    goto fail;
  }
  uint64_t size = permit_get_u64be(v);
  rc = permit_merkle_frontier_load(&log->frontier, size, node_read, log);
  if (rc != 0) {
    rc = permit_err_set(err, rc,
                        "log %s of %llu entries: tree nodes missing or "
                        "damaged", log->origin, (unsigned long long)size);
    goto fail;
  }
  free(v);
  *out = log;
  return 0;
fail:
  free(v);
  permit_log_close(log);
  return rc;
}

void permit_log_close(permit_log *log) {
  if (log == NULL) return;
  pthread_mutex_lock(&log->mu);
  log->stopping = 1;
  int running = log->committer_running;
  pthread_cond_broadcast(&log->cv);
  pthread_mutex_unlock(&log->mu);
  /* The commit thread finishes what is queued before it ends. */
  if (running) pthread_join(log->committer, NULL);
  pthread_mutex_destroy(&log->mu);
  pthread_cond_destroy(&log->cv);
  permit_batch_free(log->batch);
  free(log);
}

const char *permit_log_origin(const permit_log *log) { return log->origin; }

uint64_t permit_log_size(permit_log *log) {
  pthread_mutex_lock(&log->mu);
  uint64_t n = log->frontier.size;
  pthread_mutex_unlock(&log->mu);
  return n;
}

void permit_log_head(permit_log *log, uint64_t *size, permit_hash root) {
  pthread_mutex_lock(&log->mu);
  *size = log->frontier.size;
  permit_merkle_frontier_root(&log->frontier, root);
  pthread_mutex_unlock(&log->mu);
}

/*
 * Commits |group| as one batch on top of |f| (a copy of the durable
 * frontier, advanced here).  An entry whose extra writes fail is rolled
 * back alone; a failed write fails the whole group and is returned, so
 * that the caller can mark the log failed.  Runs without the lock: only
 * the committing thread touches log->batch.
 */
static int commit_group(permit_log *log, pending *group,
                        permit_merkle_frontier *f) {
  permit_batch_clear(log->batch);
  int any = 0;
  for (pending *p = group; p != NULL; p = p->next) {
    permit_merkle_frontier before = *f;
    permit_batch_savepoint(log->batch);
    uint8_t k[LEAF_KEY_LEN];
    permit_hash leaf;
    p->seq = f->size;
    p->rc = 0;
    for (size_t i = 0; i < p->n && p->rc == 0; i++) {
      leaf_key(log, f->size, k);
      if (!permit_log_pruned(p->entries[i].base, p->entries[i].len, leaf))
        permit_merkle_leaf_hash(p->entries[i].base, p->entries[i].len, leaf);
      permit_batch_put(log->batch, PERMIT_CF_LOG_LEAVES, k, sizeof k,
                       p->entries[i].base, p->entries[i].len);
      p->rc = permit_merkle_frontier_append(f, leaf, node_emit, log);
    }
    int extra_rc = 0;
    if (p->rc == 0 && p->extra != NULL)
      extra_rc = p->rc = p->extra(p->arg, p->seq, log->batch);
    if (p->rc != 0) {
      /* Callers test for rc != 0 or for rc < 0: a positive value must not
       * pass for success with the second kind. */
      if (extra_rc > 0) {
        p->rc = permit_err_set(p->err, PERMIT_EINVAL,
                               "append to %s: extra writes returned %d, not "
                               "an error code", log->origin, extra_rc);
      } else {
        permit_err_set(p->err, p->rc, "append to %s: %s", log->origin,
                       permit_strerror(p->rc));
      }
      permit_batch_rollback(log->batch);
      *f = before;
      continue;
    }
    permit_batch_release(log->batch);
    any = 1;
  }
  if (!any) return 0;
  head_put(log, f->size);
  permit_err werr;
  int rc = permit_store_write(log->store, log->batch, 1, &werr);
  if (rc != 0)
    for (pending *p = group; p != NULL; p = p->next)
      if (p->rc == 0) {
        p->rc = rc;
        permit_err_set(p->err, rc, "append to %s: %s", log->origin,
                       werr.msg);
      }
  return rc;
}

/* Fails every append in |group| because of an earlier write error. */
static void fail_group(permit_log *log, pending *group) {
  for (pending *p = group, *next; p != NULL; p = next) {
    next = p->next;
    p->rc = permit_err_set(p->err, PERMIT_EIO,
                           "log %s had a write error; reopen it",
                           log->origin);
    p->done = 1;
  }
}

int permit_log_append(permit_log *log, const uint8_t *entry, size_t len,
                      permit_log_extra_fn extra, void *arg, uint64_t *seq,
                      permit_err *err) {
  permit_iov one = {entry, len};
  return permit_log_append_many(log, &one, 1, extra, arg, seq, err);
}

/*
 * Takes every queued append and commits it as one group.  Called with the
 * lock held and nobody committing; returns with the lock held.  Waiting
 * threads are woken; asynchronous appends get their callback, outside the
 * lock, on this thread.
 */
static void lead_locked(permit_log *log) {
  pending *group = log->queue;
  log->queue = log->queue_tail = NULL;
  if (log->failed) {
    /* Queued behind the group whose write failed. */
    fail_group(log, group);
  } else {
    log->committing = 1;
    permit_merkle_frontier f = log->frontier;
    pthread_mutex_unlock(&log->mu);
    int wrc = commit_group(log, group, &f);
    pthread_mutex_lock(&log->mu);
    /* After a failed synced write the batch may or may not be on disk:
     * the frontier cannot follow, so no later append may build on it. */
    if (wrc != 0) log->failed = 1;
    /* A failed write leaves the in-memory frontier as it was. */
    int wrote = 0;
    for (pending *p = group; p != NULL; p = p->next) wrote |= p->rc == 0;
    if (wrote) log->frontier = f;
    log->committing = 0;
  }
  /* Split: waiters are woken; callbacks run after the unlock. */
  pending *async = NULL;
  for (pending *p = group, *next; p != NULL; p = next) {
    next = p->next;
    if (p->done_fn != NULL) {
      p->next = async;
      async = p;
    } else {
      p->done = 1;
    }
  }
  pthread_cond_broadcast(&log->cv);
  if (async == NULL) return;
  pthread_mutex_unlock(&log->mu);
  for (pending *p = async, *next; p != NULL; p = next) {
    next = p->next;
    p->done_fn(p->done_arg, p->rc, p->seq, p->rc != 0 ? &p->own_err : NULL);
    free(p);
  }
  pthread_mutex_lock(&log->mu);
}

static void *committer_main(void *arg) {
  permit_log *log = arg;
  pthread_mutex_lock(&log->mu);
  while (!log->stopping || log->queue != NULL) {
    if (log->queue != NULL && !log->committing)
      lead_locked(log);
    else
      pthread_cond_wait(&log->cv, &log->mu);
  }
  pthread_mutex_unlock(&log->mu);
  return NULL;
}

static int check_entries(const permit_iov *entries, size_t n,
                         permit_err *err) {
  if (n == 0 || n > PERMIT_LOG_MAX_BATCH)
    return permit_err_set(err, PERMIT_EINVAL,
                          "append of %zu entries (want 1 to %d)", n,
                          PERMIT_LOG_MAX_BATCH);
  for (size_t i = 0; i < n; i++)
    if (entries[i].len == 0 || entries[i].len > PERMIT_RECORD_MAX_LEN)
      return permit_err_set(err, PERMIT_EINVAL,
                            "log entry is %zu bytes (want 1 to %d)",
                            entries[i].len, PERMIT_RECORD_MAX_LEN);
  return 0;
}

/* Adds |p| to the queue; the lock is held. */
static void enqueue_locked(permit_log *log, pending *p) {
  if (log->queue_tail != NULL)
    log->queue_tail->next = p;
  else
    log->queue = p;
  log->queue_tail = p;
}

int permit_log_append_many(permit_log *log, const permit_iov *entries,
                           size_t n, permit_log_extra_fn extra, void *arg,
                           uint64_t *first_seq, permit_err *err) {
  int rc = check_entries(entries, n, err);
  if (rc != 0) return rc;
  if (err != NULL) permit_err_clear(err);
  pending me = {.entries = entries, .n = n, .extra = extra, .arg = arg,
                .err = err};
  pthread_mutex_lock(&log->mu);
  if (log->failed) {
    pthread_mutex_unlock(&log->mu);
    return permit_err_set(err, PERMIT_EIO,
                          "log %s had a write error; reopen it", log->origin);
  }
  enqueue_locked(log, &me);
  /* Lead when nobody commits; otherwise the current leader (or the next
   * one) takes this entry with its group. */
  while (!me.done) {
    if (log->committing || log->queue == NULL)
      pthread_cond_wait(&log->cv, &log->mu);
    else
      lead_locked(log);
  }
  pthread_mutex_unlock(&log->mu);
  if (me.rc == 0 && first_seq != NULL) *first_seq = me.seq;
  return me.rc;
}

int permit_log_append_async(permit_log *log, const permit_iov *entries,
                            size_t n, permit_log_extra_fn extra, void *arg,
                            permit_log_done_fn done, void *done_arg,
                            permit_err *err) {
  int rc = check_entries(entries, n, err);
  if (rc != 0) return rc;
  pending *p = calloc(1, sizeof *p);
  if (p == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  *p = (pending){.entries = entries, .n = n, .extra = extra, .arg = arg,
                 .done_fn = done, .done_arg = done_arg};
  p->err = &p->own_err;
  pthread_mutex_lock(&log->mu);
  if (log->failed || log->stopping) {
    pthread_mutex_unlock(&log->mu);
    free(p);
    return permit_err_set(err, PERMIT_EIO,
                          "log %s had a write error; reopen it", log->origin);
  }
  if (!log->committer_running) {
    if (pthread_create(&log->committer, NULL, committer_main, log) != 0) {
      pthread_mutex_unlock(&log->mu);
      free(p);
      return permit_err_set(err, PERMIT_ENOMEM,
                            "cannot start the commit thread");
    }
    pthread_setname_np(log->committer, "permit-commit");
    log->committer_running = 1;
  }
  enqueue_locked(log, p);
  pthread_cond_broadcast(&log->cv);
  pthread_mutex_unlock(&log->mu);
  return 0;
}

int permit_log_get(permit_log *log, uint64_t seq, uint8_t **entry,
                   size_t *len, permit_err *err) {
  if (seq >= permit_log_size(log))
    return permit_err_set(err, PERMIT_ENOTFOUND,
                          "%s has no entry %llu", log->origin,
                          (unsigned long long)seq);
  uint8_t k[LEAF_KEY_LEN];
  leaf_key(log, seq, k);
  int rc = permit_store_get(log->store, PERMIT_CF_LOG_LEAVES, k, sizeof k,
                            entry, len, err);
  if (rc == PERMIT_ENOTFOUND)
    return permit_err_set(err, PERMIT_ECORRUPT,
                          "%s: entry %llu below the head is missing",
                          log->origin, (unsigned long long)seq);
  return rc;
}

int permit_log_pruned(const void *entry, size_t len, permit_hash leaf) {
  const uint8_t *e = entry;
  if (len != PERMIT_LOG_PRUNED_LEN || e[0] != 0) return 0;
  if (leaf != NULL) memcpy(leaf, e + 1, PERMIT_HASH_LEN);
  return 1;
}

int permit_log_prune(permit_log *log, uint64_t seq, const permit_hash known,
                     permit_batch *b, permit_err *err) {
  uint8_t k[LEAF_KEY_LEN], marker[PERMIT_LOG_PRUNED_LEN];
  marker[0] = 0;
  int rc = 0;
  if (known != NULL)
    memcpy(marker + 1, known, PERMIT_HASH_LEN);
  else
    rc = node_read(log, 0, seq, marker + 1);
  if (rc != 0)
    return permit_err_set(err, rc == PERMIT_ECORRUPT ? PERMIT_ENOTFOUND : rc,
                          "%s has no leaf hash for entry %llu", log->origin,
                          (unsigned long long)seq);
  leaf_key(log, seq, k);
  permit_batch_put(b, PERMIT_CF_LOG_LEAVES, k, sizeof k, marker,
                   sizeof marker);
  return 0;
}

typedef struct scan_state {
  permit_log *log;
  uint64_t next, to;
  permit_log_visit_fn visit;
  void *arg;
  int stopped;  /* the visitor stopped the scan ... */
  int visit_rc; /* ... by returning this */
} scan_state;

static int scan_one(void *arg, const uint8_t *k, size_t klen,
                    const uint8_t *v, size_t vlen) {
  scan_state *st = arg;
  if (klen != LEAF_KEY_LEN) return PERMIT_ECORRUPT;
  uint64_t seq = permit_get_u64be(k + TAG_LEN);
  if (seq >= st->to) return 1;
  if (seq != st->next) return PERMIT_ECORRUPT;
  st->next++;
  int rc = st->visit(st->arg, seq, v, vlen);
  if (rc != 0) {
    st->stopped = 1;
    st->visit_rc = rc;
  }
  return rc;
}

int permit_log_scan(permit_log *log, uint64_t from, uint64_t to,
                    permit_log_visit_fn visit, void *arg, permit_err *err) {
  uint64_t size = permit_log_size(log);
  if (to > size) to = size;
  if (from >= to) return 0;
  scan_state st = {.log = log, .next = from, .to = to, .visit = visit,
                   .arg = arg};
  uint8_t start[LEAF_KEY_LEN];
  leaf_key(log, from, start);
  int rc = permit_store_scan(log->store, PERMIT_CF_LOG_LEAVES, log->tag,
                             TAG_LEN, start, sizeof start, scan_one, &st, err);
  /* A scan the visitor stopped did not reach |to| by design. */
  if (st.stopped) return st.visit_rc;
  if (rc == 1) rc = 0; /* scan_one's stop at |to| */
  if (rc == 0 && st.next != to)
    rc = PERMIT_ECORRUPT;
  if (rc == PERMIT_ECORRUPT)
    permit_err_set(err, rc, "%s: entries missing near %llu", log->origin,
                   (unsigned long long)st.next);
  return rc;
}

int permit_log_root_at(permit_log *log, uint64_t size, permit_hash root,
                       permit_err *err) {
  if (size > permit_log_size(log))
    return permit_err_set(err, PERMIT_EINVAL,
                          "%s has fewer than %llu entries", log->origin,
                          (unsigned long long)size);
  if (size == 0) {
    permit_merkle_empty_root(root);
    return 0;
  }
  int rc = permit_merkle_subtree_hash(node_read, log, 0, size, root);
  if (rc != 0) permit_err_set(err, rc, "%s: tree nodes unreadable", log->origin);
  return rc;
}

int permit_log_inclusion_proof(permit_log *log, uint64_t index, uint64_t size,
                               permit_hash *proof, size_t *proof_len,
                               permit_err *err) {
  if (index >= size || size > permit_log_size(log))
    return permit_err_set(err, PERMIT_EINVAL,
                          "no entry %llu in the first %llu of %s",
                          (unsigned long long)index, (unsigned long long)size,
                          log->origin);
  int rc = permit_merkle_inclusion_proof(node_read, log, index, size, proof,
                                         proof_len);
  if (rc != 0) permit_err_set(err, rc, "%s: tree nodes unreadable", log->origin);
  return rc;
}

int permit_log_consistency_proof(permit_log *log, uint64_t size1,
                                 uint64_t size2, permit_hash *proof,
                                 size_t *proof_len, permit_err *err) {
  if (size1 == 0 || size1 > size2 || size2 > permit_log_size(log))
    return permit_err_set(err, PERMIT_EINVAL,
                          "no consistency proof from %llu to %llu in %s",
                          (unsigned long long)size1, (unsigned long long)size2,
                          log->origin);
  int rc = permit_merkle_consistency_proof(node_read, log, size1, size2, proof,
                                           proof_len);
  if (rc != 0) permit_err_set(err, rc, "%s: tree nodes unreadable", log->origin);
  return rc;
}

int permit_log_checkpoint(permit_log *log, const permit_sign_key *key,
                          int64_t timestamp_ms, uint8_t **out, size_t *outlen,
                          permit_err *err) {
  Permit__V1__Checkpoint cp = PERMIT__V1__CHECKPOINT__INIT;
  permit_hash root;
  uint64_t size;
  permit_log_head(log, &size, root);
  cp.origin = log->origin;
  cp.size = size;
  cp.root_hash.data = root;
  cp.root_hash.len = sizeof root;
  cp.timestamp_ms = timestamp_ms;
  uint8_t body[PERMIT_CHECKPOINT_MAX_LEN];
  size_t n = permit__v1__checkpoint__get_packed_size(&cp);
  if (n > sizeof body)
    return permit_err_set(err, PERMIT_ETOOBIG, "checkpoint too large");
  permit__v1__checkpoint__pack(&cp, body);
  int rc = permit_envelope_sign(PERMIT_CHECKPOINT_CONTEXT, body, n, key, out,
                                outlen, err);
  if (rc != 0) return rc;
  rc = permit_store_put(log->store, PERMIT_CF_CHECKPOINTS, log->tag, TAG_LEN,
                        *out, *outlen, err);
  if (rc != 0) {
    free(*out);
    *out = NULL;
  }
  return rc;
}

int permit_log_latest_checkpoint(permit_log *log, uint8_t **out,
                                 size_t *outlen, permit_err *err) {
  return permit_store_get(log->store, PERMIT_CF_CHECKPOINTS, log->tag, TAG_LEN,
                          out, outlen, err);
}

/* Checks "permit/v1/log/<issuer>/<audience>" with two valid names. */
static int origin_validate(const char *origin, permit_err *err) {
  static const char prefix[] = "permit/v1/log/";
  const size_t plen = sizeof prefix - 1;
  char issuer[PERMIT_NAME_MAX + 1];
  permit_err sub;
  if (origin == NULL || strncmp(origin, prefix, plen) != 0)
    return permit_err_set(err, PERMIT_EINVAL,
                          "checkpoint origin does not start with %s", prefix);
  const char *name = origin + plen, *slash = strchr(name, '/');
  if (slash == NULL || (size_t)(slash - name) > PERMIT_NAME_MAX)
    return permit_err_set(err, PERMIT_EINVAL,
                          "checkpoint origin \"%.80s\" is not %s<issuer>/"
                          "<audience>", origin, prefix);
  memcpy(issuer, name, (size_t)(slash - name));
  issuer[slash - name] = '\0';
  if (permit_name_validate(issuer, &sub) != 0)
    return permit_err_set(err, PERMIT_EINVAL, "checkpoint origin issuer: %s",
                          sub.msg);
  if (permit_name_validate(slash + 1, &sub) != 0)
    return permit_err_set(err, PERMIT_EINVAL,
                          "checkpoint origin audience: %s", sub.msg);
  return 0;
}

int permit_checkpoint_verify(const uint8_t *in, size_t len,
                             const permit_trusted_key *keys, size_t nkeys,
                             Permit__V1__Checkpoint **out, permit_err *err) {
  ProtobufCMessage *env;
  const uint8_t *body;
  size_t bodylen;
  *out = NULL;
  int rc = permit_envelope_open(&permit__v1__signed_checkpoint__descriptor,
                                PERMIT_CHECKPOINT_CONTEXT, in, len,
                                PERMIT_CHECKPOINT_MAX_LEN, keys, nkeys, &env,
                                &body, &bodylen, err);
  if (rc != 0) return rc;
  Permit__V1__Checkpoint *cp =
      permit__v1__checkpoint__unpack(NULL, bodylen, body);
  if (cp == NULL) {
    protobuf_c_message_free_unpacked(env, NULL);
    return permit_err_set(err, PERMIT_EINVAL,
                          "checkpoint body is not a valid Checkpoint");
  }
  rc = permit_envelope_check_body(&cp->base, body, bodylen, "checkpoint", err);
  protobuf_c_message_free_unpacked(env, NULL);
  if (rc == 0 && cp->root_hash.len != PERMIT_HASH_LEN)
    rc = permit_err_set(err, PERMIT_EINVAL,
                        "checkpoint root hash is %zu bytes, not %d",
                        cp->root_hash.len, PERMIT_HASH_LEN);
  if (rc == 0) rc = origin_validate(cp->origin, err);
  if (rc != 0) {
    permit__v1__checkpoint__free_unpacked(cp, NULL);
    return rc;
  }
  *out = cp;
  return 0;
}
