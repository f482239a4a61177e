/* test_log: durable appends, roots against a recomputation, proofs,
 * concurrent appends, extra writes (and their failure inside a group),
 * scans a visitor stops, a failed write, checkpoints, reopen. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "permit/log.h"
#include "permit/util.h"
#include "testlib.h"

#define N 1000

static void entry_for(uint64_t i, char *buf, size_t *len) {
  *len = (size_t)snprintf(buf, 64, "entry %llu of the test log",
                          (unsigned long long)i);
}

/* Reference root: every leaf hashed again, folded with a fresh frontier. */
static void reference_root(permit_log *log, uint64_t size, permit_hash out) {
  permit_merkle_frontier f;
  permit_merkle_frontier_init(&f);
  for (uint64_t i = 0; i < size; i++) {
    uint8_t *e;
    size_t n;
    permit_hash leaf;
    if (permit_log_get(log, i, &e, &n, NULL) != 0) {
      memset(out, 0, PERMIT_HASH_LEN);
      return;
    }
    permit_merkle_leaf_hash(e, n, leaf);
    permit_merkle_frontier_append(&f, leaf, NULL, NULL);
    free(e);
  }
  permit_merkle_frontier_root(&f, out);
}

static int count_visit(void *arg, uint64_t seq, const uint8_t *e, size_t n) {
  uint64_t *next = arg;
  char want[64];
  size_t wl;
  entry_for(seq, want, &wl);
  if (seq != *next || n != wl || memcmp(e, want, n) != 0) return -100;
  (*next)++;
  return 0;
}

typedef struct worker {
  permit_log *log;
  int id;
  uint64_t seqs[200];
  int failed;
} worker;

static void *append_worker(void *arg) {
  worker *w = arg;
  for (int i = 0; i < 200; i++) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "worker %d item %d", w->id, i);
    if (permit_log_append(w->log, (uint8_t *)buf, (size_t)n, NULL, NULL,
                          &w->seqs[i], NULL) != 0)
      w->failed++;
  }
  return NULL;
}

static int extra_index(void *arg, uint64_t seq, permit_batch *b) {
  uint8_t v[8];
  permit_put_u64be(v, seq);
  permit_batch_put(b, PERMIT_CF_INDEXES, arg, strlen(arg), v, 8);
  return 0;
}

static int extra_fail(void *arg, uint64_t seq, permit_batch *b) {
  (void)seq;
  permit_batch_put(b, PERMIT_CF_INDEXES, arg, strlen(arg), "x", 1);
  return PERMIT_EEXIST;
}

/* Stops the scan after |limit| entries with |stop_rc|. */
typedef struct stopper {
  int seen, limit, stop_rc;
} stopper;

static int stop_visit(void *arg, uint64_t seq, const uint8_t *e, size_t n) {
  stopper *st = arg;
  (void)seq, (void)e, (void)n;
  return ++st->seen == st->limit ? st->stop_rc : 0;
}

static void test_scan_stop(permit_log *log) {
  /* 1 is the value that permit_store_scan's own callers also use. */
  const int rcs[] = {1, 42, PERMIT_EEXIST};
  for (size_t i = 0; i < sizeof rcs / sizeof *rcs; i++) {
    stopper st = {.limit = 5, .stop_rc = rcs[i]};
    permit_err err = {0};
    int rc = permit_log_scan(log, 10, 100, stop_visit, &st, &err);
    CHECKF(rc == rcs[i] && st.seen == 5 && err.code == 0 &&
               err.msg[0] == '\0',
           "visitor's %d came back as %d, \"%s\"", rcs[i], rc, err.msg);
  }
}

static int extra_positive(void *arg, uint64_t seq, permit_batch *b) {
  (void)seq;
  permit_batch_put(b, PERMIT_CF_INDEXES, arg, strlen(arg), "p", 1);
  return 1;
}

/* ---- One group, one failing extra among succeeding neighbours. ---- */

#define G_THREADS 4
#define G_ROUNDS 50

static _Thread_local int g_me; /* this thread's index, for the extras */

typedef struct g_slot {
  char key[32];  /* index key the extra writes */
  int runner;    /* the thread that ran the extra (the group's leader) */
  int rc;
  uint64_t seq;
} g_slot;

typedef struct g_state {
  permit_log *log;
  pthread_barrier_t barrier;
  g_slot slot[G_ROUNDS][G_THREADS];
} g_state;

typedef struct g_arg {
  g_state *st;
  int id;
} g_arg;

static int g_extra_ok(void *arg, uint64_t seq, permit_batch *b) {
  g_slot *sl = arg;
  uint8_t v[8];
  sl->runner = g_me;
  permit_put_u64be(v, seq);
  permit_batch_put(b, PERMIT_CF_INDEXES, sl->key, strlen(sl->key), v, 8);
  return 0;
}

static int g_extra_fail(void *arg, uint64_t seq, permit_batch *b) {
  g_slot *sl = arg;
  (void)seq;
  sl->runner = g_me;
  permit_batch_put(b, PERMIT_CF_INDEXES, sl->key, strlen(sl->key), "x", 1);
  return PERMIT_EEXIST;
}

static void g_entry(int round, int id, char *buf, size_t *len) {
  *len = (size_t)snprintf(buf, 64, "group round %d thread %d", round, id);
}

static void *g_worker(void *arg) {
  g_arg *a = arg;
  g_me = a->id;
  for (int r = 0; r < G_ROUNDS; r++) {
    g_slot *sl = &a->st->slot[r][a->id];
    char buf[64];
    size_t n;
    g_entry(r, a->id, buf, &n);
    snprintf(sl->key, sizeof sl->key, "g/%d/%d", r, a->id);
    sl->runner = -1;
    int fails = a->id == r % G_THREADS;
    pthread_barrier_wait(&a->st->barrier);
    sl->rc = permit_log_append(a->st->log, (uint8_t *)buf, n,
                               fails ? g_extra_fail : g_extra_ok, sl,
                               &sl->seq, NULL);
  }
  return NULL;
}

static void test_group_failure(permit_store *s) {
  permit_log *log;
  permit_err err = {0};
  CHECK(permit_log_open(s, "tixly.example", "group.example", &log, &err) ==
        0);
  g_state *st = calloc(1, sizeof *st);
  st->log = log;
  pthread_barrier_init(&st->barrier, NULL, G_THREADS);
  pthread_t th[G_THREADS];
  g_arg args[G_THREADS];
  for (int i = 0; i < G_THREADS; i++) {
    args[i] = (g_arg){st, i};
    pthread_create(&th[i], NULL, g_worker, &args[i]);
  }
  for (int i = 0; i < G_THREADS; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&st->barrier);

  const uint64_t want = G_ROUNDS * (G_THREADS - 1);
  CHECK(permit_log_size(log) == want);
  uint8_t *seen = calloc(want, 1);
  int rc_ok = 1, entries_ok = 1, index_ok = 1, shared = 0;
  for (int r = 0; r < G_ROUNDS; r++) {
    int f = r % G_THREADS, with_neighbour = 0;
    for (int t = 0; t < G_THREADS; t++) {
      g_slot *sl = &st->slot[r][t];
      uint8_t v[8];
      int irc = permit_store_get_fixed(s, PERMIT_CF_INDEXES, sl->key,
                                       strlen(sl->key), v, t == f ? 1 : 8,
                                       NULL);
      if (t == f) {
        rc_ok &= sl->rc == PERMIT_EEXIST;
        index_ok &= irc == PERMIT_ENOTFOUND;
        continue;
      }
      rc_ok &= sl->rc == 0;
      with_neighbour |= sl->runner == st->slot[r][f].runner;
      if (sl->rc != 0 || sl->seq >= want || seen[sl->seq]) {
        entries_ok = 0;
        continue;
      }
      seen[sl->seq] = 1;
      index_ok &= irc == 0 && permit_get_u64be(v) == sl->seq;
      char buf[64];
      size_t n;
      uint8_t *got = NULL;
      size_t gl = 0;
      g_entry(r, t, buf, &n);
      entries_ok &= permit_log_get(log, sl->seq, &got, &gl, NULL) == 0 &&
                    gl == n && memcmp(got, buf, n) == 0;
      free(got);
    }
    shared += with_neighbour;
  }
  CHECK(rc_ok);
  CHECK(entries_ok);
  CHECK(index_ok);
  /* Each thread leads at most one group per round, so an extra that ran on
   * the same thread as the failing one was committed in its group. */
  printf("test_log: %d of %d rounds had the failing entry in a group with "
         "others\n", shared, G_ROUNDS);
  CHECK(shared > 0);
  permit_hash root, ref;
  uint64_t size;
  permit_log_head(log, &size, root);
  reference_root(log, size, ref);
  CHECK(size == want && memcmp(root, ref, 32) == 0);
  free(seen);
  free(st);
  permit_log_close(log);
}

/* ---- A synced write that fails. ---- */

/* The descriptor of the database's open write-ahead log (<dir>/NNN.log). */
static int wal_fd(const char *dbdir) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int found = -1;
  struct dirent *de;
  size_t dl = strlen(dbdir);
  while ((de = readdir(d)) != NULL) {
    char link[300], target[4300];
    snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    const char *base = target + dl + 1;
    if ((size_t)n > dl + 5 && strncmp(target, dbdir, dl) == 0 &&
        target[dl] == '/' && strchr(base, '/') == NULL &&
        strcmp(target + n - 4, ".log") == 0 && base[0] >= '0' &&
        base[0] <= '9')
      found = atoi(de->d_name);
  }
  closedir(d);
  return found;
}

static void test_write_failure(const char *dir) {
  char path[4200];
  snprintf(path, sizeof path, "%s/faulty", dir);
  permit_store *s;
  permit_log *log;
  permit_err err = {0};
  uint64_t seq;
  CHECK(permit_store_open(path, &s, &err) == 0);
  CHECK(permit_log_open(s, "tixly.example", "fault.example", &log, &err) ==
        0);
  CHECK(permit_log_append(log, (uint8_t *)"kept", 4, NULL, NULL, &seq,
                          &err) == 0);
  /* Every later write to the write-ahead log fails as on a full disk. */
  int wal = wal_fd(path);
  int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
  CHECK(wal >= 0 && full >= 0);
  if (wal < 0 || full < 0) {
    permit_log_close(log);
    permit_store_close(s);
    return;
  }
  CHECK(dup2(full, wal) == wal);
  close(full);
  int rc = permit_log_append(log, (uint8_t *)"lost", 4, NULL, NULL, &seq,
                             &err);
  CHECKF(rc == PERMIT_EIO, "append on a failing disk: %d \"%s\"", rc,
         err.msg);
  CHECK(permit_log_size(log) == 1);
  /* The log now refuses appends itself, whatever the store would do. */
  rc = permit_log_append(log, (uint8_t *)"next", 4, NULL, NULL, &seq, &err);
  CHECK(rc == PERMIT_EIO);
  CHECKF(strstr(err.msg, "had a write error; reopen it") != NULL &&
             strstr(err.msg, "fault.example") != NULL,
         "message \"%s\"", err.msg);
  permit_iov two[2] = {{"a", 1}, {"b", 1}};
  CHECK(permit_log_append_many(log, two, 2, NULL, NULL, &seq, &err) ==
        PERMIT_EIO);
  CHECK(permit_log_size(log) == 1);
  uint8_t *e = NULL;
  size_t el = 0;
  CHECK(permit_log_get(log, 0, &e, &el, &err) == 0 && el == 4 &&
        memcmp(e, "kept", 4) == 0);
  free(e);
  permit_log_close(log);
  permit_store_close(s);

  /* Reopened, the log continues from what is durable. */
  CHECK(permit_store_open(path, &s, &err) == 0);
  CHECK(permit_log_open(s, "tixly.example", "fault.example", &log, &err) ==
        0);
  uint64_t size = permit_log_size(log);
  CHECK(size == 1 || size == 2);
  CHECK(permit_log_append(log, (uint8_t *)"again", 5, NULL, NULL, &seq,
                          &err) == 0 &&
        seq == size);
  permit_log_close(log);
  permit_store_close(s);
}

static void test_synced(permit_store *s) {
  permit_log *log;
  permit_err err = {0};
  CHECK(permit_log_open(s, "tixly.example", "synced.example", &log, &err) ==
        0);
  const uint64_t n = 20;
  uint64_t before = permit_store_synced_writes(s);
  for (uint64_t i = 0; i < n; i++) {
    char buf[64];
    size_t len;
    uint64_t seq;
    entry_for(i, buf, &len);
    CHECK(permit_log_append(log, (uint8_t *)buf, len, NULL, NULL, &seq,
                            &err) == 0);
  }
  CHECK(permit_store_synced_writes(s) - before >= n);
  permit_log_close(log);
}

/* ---- Checkpoint bodies: canonical, with a well-formed origin. ---- */

static int cp_verify_body(const uint8_t *body, size_t len,
                          const permit_sign_key *key,
                          const permit_trusted_key *tk, permit_err *err) {
  uint8_t *env = NULL;
  size_t n = 0;
  Permit__V1__Checkpoint *c = NULL;
  if (permit_envelope_sign(PERMIT_CHECKPOINT_CONTEXT, body, len, key, &env,
                           &n, err) != 0)
    return 1;
  int rc = permit_checkpoint_verify(env, n, tk, 1, &c, err);
  if (c != NULL) permit__v1__checkpoint__free_unpacked(c, NULL);
  free(env);
  return rc;
}

static size_t cp_pack(const char *origin, uint8_t *out) {
  static uint8_t root[32] = {7};
  Permit__V1__Checkpoint cp = PERMIT__V1__CHECKPOINT__INIT;
  cp.origin = (char *)origin;
  cp.size = 10;
  cp.root_hash = (ProtobufCBinaryData){sizeof root, root};
  cp.timestamp_ms = 1790000000000;
  return permit__v1__checkpoint__pack(&cp, out);
}

static void test_checkpoint_body(const permit_sign_key *key,
                                 const permit_trusted_key *tk) {
  static const char good[] = "permit/v1/log/tixly.example/fillmore.example";
  uint8_t body[512], bad[600];
  permit_err err = {0};
  size_t bl = cp_pack(good, body);
  CHECK(cp_verify_body(body, bl, key, tk, &err) == 0);

  static const char *const origins[] = {
      "permit/v1/log/tixly.example",
      "permit/v1/log/tixly.example/",
      "permit/v1/log//fillmore.example",
      "permit/v1/log/Tixly.example/fillmore.example",
      "permit/v1/log/tixly.example/fillmore.example/x",
      "permit/v1/log/tixly.example/fill more.example",
      "permit/v1/logs/tixly.example/fillmore.example",
      "permit/v1/log/tixly.example/fillmore.example\n",
  };
  for (size_t i = 0; i < sizeof origins / sizeof *origins; i++) {
    size_t n = cp_pack(origins[i], bad);
    int rc = cp_verify_body(bad, n, key, tk, &err);
    CHECKF(rc == PERMIT_EINVAL && strstr(err.msg, "origin") != NULL,
           "origin \"%s\": %d \"%s\"", origins[i], rc, err.msg);
  }

  /* The origin (field 1, first) with a NUL and more after it. */
  CHECK(body[0] == 0x0a && body[1] == sizeof good - 1);
  size_t n = 0;
  bad[n++] = 0x0a;
  bad[n++] = (uint8_t)(sizeof good - 1 + 5);
  memcpy(bad + n, good, sizeof good - 1);
  n += sizeof good - 1;
  memcpy(bad + n, "\0evil", 5);
  n += 5;
  memcpy(bad + n, body + 2 + sizeof good - 1, bl - 2 - (sizeof good - 1));
  n += bl - 2 - (sizeof good - 1);
  CHECK(cp_verify_body(bad, n, key, tk, &err) == PERMIT_EINVAL);
  CHECKF(strstr(err.msg, "re-encodes") != NULL, "message \"%s\"", err.msg);

  /* size (field 2) given again: the last copy wins when decoding. */
  memcpy(bad, body, bl);
  bad[bl] = 0x10;
  bad[bl + 1] = 5;
  CHECK(cp_verify_body(bad, bl + 2, key, tk, &err) == PERMIT_EINVAL);
}


/* ---- asynchronous appends ---- */

typedef struct async_state {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, failed;
  uint64_t seqs[64];
  int order[64];
} async_state;

typedef struct async_one {
  async_state *st;
  int index;
  permit_iov iov;
  char buf[32];
} async_one;

static void async_done(void *arg, int rc, uint64_t seq, const permit_err *err) {
  async_one *one = arg;
  async_state *st = one->st;
  (void)err;
  pthread_mutex_lock(&st->mu);
  if (rc != 0) st->failed++;
  st->seqs[one->index] = seq;
  st->done++;
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
}

static void test_async(permit_store *s) {
  permit_log *log;
  permit_err err;
  CHECK(permit_log_open(s, "tixly.example", "async.example", &log, &err) == 0);
  async_state st = {.mu = PTHREAD_MUTEX_INITIALIZER,
                    .cv = PTHREAD_COND_INITIALIZER};
  static async_one ones[64];
  for (int i = 0; i < 64; i++) {
    ones[i].st = &st;
    ones[i].index = i;
    int n = snprintf(ones[i].buf, sizeof ones[i].buf, "async %d", i);
    ones[i].iov = (permit_iov){ones[i].buf, (size_t)n};
    CHECK(permit_log_append_async(log, &ones[i].iov, 1, NULL, NULL, async_done,
                                  &ones[i], &err) == 0);
    if (i == 31) {
      /* A synchronous append in the middle joins the same queue. */
      uint64_t q;
      CHECK(permit_log_append(log, (uint8_t *)"sync", 4, NULL, NULL, &q,
                              &err) == 0);
    }
  }
  pthread_mutex_lock(&st.mu);
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 30;
  while (st.done < 64 &&
         pthread_cond_timedwait(&st.cv, &st.mu, &dl) == 0) {
  }
  pthread_mutex_unlock(&st.mu);
  CHECK(st.done == 64 && st.failed == 0);
  CHECK(permit_log_size(log) == 65);
  int ok = 1;
  for (int i = 0; i < 64; i++) {
    uint8_t *e = NULL;
    size_t el = 0;
    ok &= permit_log_get(log, st.seqs[i], &e, &el, NULL) == 0 &&
          el == ones[i].iov.len && memcmp(e, ones[i].buf, el) == 0;
    free(e);
  }
  CHECK(ok);
  /* Entries queued and not yet committed are committed by close. */
  st.done = 0;
  for (int i = 0; i < 8; i++)
    CHECK(permit_log_append_async(log, &ones[i].iov, 1, NULL, NULL, async_done,
                                  &ones[i], &err) == 0);
  permit_log_close(log);
  CHECK(st.done == 8);
  CHECK(permit_log_open(s, "tixly.example", "async.example", &log, &err) == 0);
  CHECK(permit_log_size(log) == 73);
  CHECK(permit_log_append_async(log, &ones[0].iov, 0, NULL, NULL, async_done,
                                &ones[0], &err) == PERMIT_EINVAL);
  permit_log_close(log);
}

int main(void) {
  const char *dir = test_tmpdir("log");
  char path[4200];
  snprintf(path, sizeof path, "%s/db", dir);
  permit_store *s;
  permit_err err = {0};
  CHECK(permit_store_open(path, &s, &err) == 0);
  permit_log *log;
  CHECK(permit_log_open(s, "tixly.example", "fillmore.example", &log, &err) ==
        0);
  CHECK(strcmp(permit_log_origin(log),
               "permit/v1/log/tixly.example/fillmore.example") == 0);
  CHECK(permit_log_open(s, "Bad Name", "fillmore.example", &log, &err) ==
        PERMIT_EINVAL);
  test_async(s);

  permit_hash root, ref;
  uint64_t size;
  permit_log_head(log, &size, root);
  permit_merkle_empty_root(ref);
  CHECK(size == 0 && memcmp(root, ref, 32) == 0);

  /* Appends, with roots checked against a recomputation along the way. */
  int root_ok = 1;
  for (uint64_t i = 0; i < N; i++) {
    char buf[64];
    size_t n;
    uint64_t seq;
    entry_for(i, buf, &n);
    if (permit_log_append(log, (uint8_t *)buf, n, NULL, NULL, &seq, &err) ||
        seq != i)
      root_ok = 0;
    if (i == 0 || i == 1 || i == 2 || i == 6 || i == 63 || i == 64 ||
        i == 99 || i == N - 1) {
      permit_log_head(log, &size, root);
      reference_root(log, i + 1, ref);
      root_ok &= size == i + 1 && memcmp(root, ref, 32) == 0;
    }
  }
  CHECK(root_ok);
  CHECK(permit_log_size(log) == N);
  CHECK(permit_log_append(log, (uint8_t *)"", 0, NULL, NULL, NULL, &err) ==
        PERMIT_EINVAL);

  /* Roots at earlier sizes from the stored nodes. */
  int at_ok = 1;
  uint64_t sizes[] = {1, 2, 3, 7, 8, 9, 100, 511, 512, 513, 999, 1000};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    permit_hash a;
    reference_root(log, sizes[i], ref);
    at_ok &= permit_log_root_at(log, sizes[i], a, &err) == 0 &&
             memcmp(a, ref, 32) == 0;
  }
  CHECK(at_ok);
  CHECK(permit_log_root_at(log, N + 1, ref, &err) == PERMIT_EINVAL);

  /* Scan and get. */
  uint64_t next = 10;
  CHECK(permit_log_scan(log, 10, 500, count_visit, &next, &err) == 0);
  CHECK(next == 500);
  next = 990;
  CHECK(permit_log_scan(log, 990, 5000, count_visit, &next, &err) == 0);
  CHECK(next == N);
  test_scan_stop(log);
  uint8_t *e;
  size_t el;
  CHECK(permit_log_get(log, N, &e, &el, &err) == PERMIT_ENOTFOUND);

  /* Inclusion and consistency proofs verify against the roots. */
  int inc_ok = 1, con_ok = 1;
  for (uint64_t idx = 0; idx < N; idx += 37) {
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
      uint64_t sz = sizes[si];
      if (idx >= sz) continue;
      permit_hash proof[PERMIT_MERKLE_MAX_PROOF], leaf, r;
      size_t pl;
      char buf[64];
      size_t n;
      entry_for(idx, buf, &n);
      permit_merkle_leaf_hash((uint8_t *)buf, n, leaf);
      permit_log_root_at(log, sz, r, NULL);
      inc_ok &= permit_log_inclusion_proof(log, idx, sz, proof, &pl, &err) ==
                    0 &&
                permit_merkle_verify_inclusion(idx, sz, leaf, proof, pl, r) ==
                    0;
    }
  }
  for (size_t a = 0; a < sizeof sizes / sizeof *sizes; a++)
    for (size_t b = a; b < sizeof sizes / sizeof *sizes; b++) {
      permit_hash proof[PERMIT_MERKLE_MAX_PROOF], r1, r2;
      size_t pl;
      permit_log_root_at(log, sizes[a], r1, NULL);
      permit_log_root_at(log, sizes[b], r2, NULL);
      con_ok &= permit_log_consistency_proof(log, sizes[a], sizes[b], proof,
                                             &pl, &err) == 0 &&
                permit_merkle_verify_consistency(sizes[a], sizes[b], r1, r2,
                                                 proof, pl) == 0;
    }
  CHECK(inc_ok);
  CHECK(con_ok);
  permit_hash proof[PERMIT_MERKLE_MAX_PROOF];
  size_t pl;
  CHECK(permit_log_inclusion_proof(log, N, N, proof, &pl, &err) ==
        PERMIT_EINVAL);
  CHECK(permit_log_consistency_proof(log, 5, N + 1, proof, &pl, &err) ==
        PERMIT_EINVAL);

  /* Checkpoints: signed, verifiable, kept as the latest. */
  permit_sign_key *key, *other;
  CHECK(permit_sign_key_generate(&key) == 0);
  CHECK(permit_sign_key_generate(&other) == 0);
  permit_trusted_key tk;
  permit_trusted_key_set(&tk, permit_sign_key_public(key));
  uint8_t *cp;
  size_t cpl;
  CHECK(permit_log_checkpoint(log, key, 1790000000000, &cp, &cpl, &err) == 0);
  Permit__V1__Checkpoint *c = NULL;
  CHECK(permit_checkpoint_verify(cp, cpl, &tk, 1, &c, &err) == 0);
  permit_log_head(log, &size, root);
  CHECK(c && c->size == N && memcmp(c->root_hash.data, root, 32) == 0 &&
        strcmp(c->origin, permit_log_origin(log)) == 0 &&
        c->timestamp_ms == 1790000000000);
  if (c) permit__v1__checkpoint__free_unpacked(c, NULL);
  uint8_t *latest;
  size_t ll;
  CHECK(permit_log_latest_checkpoint(log, &latest, &ll, &err) == 0 &&
        ll == cpl && memcmp(latest, cp, cpl) == 0);
  free(latest);
  cp[cpl - 1] ^= 1;
  CHECK(permit_checkpoint_verify(cp, cpl, &tk, 1, &c, &err) != 0);
  free(cp);
  CHECK(permit_log_checkpoint(log, other, 1, &cp, &cpl, &err) == 0);
  CHECK(permit_checkpoint_verify(cp, cpl, &tk, 1, &c, &err) ==
        PERMIT_ENOTFOUND);
  free(cp);
  test_checkpoint_body(key, &tk);

  /* Extra writes commit with the entry; a failing one fails alone. */
  uint64_t seq;
  CHECK(permit_log_append(log, (uint8_t *)"x", 1, extra_index, "idx/a", &seq,
                          &err) == 0);
  uint8_t sv[8];
  CHECK(permit_store_get_fixed(s, PERMIT_CF_INDEXES, "idx/a", 5, sv, 8,
                               &err) == 0 &&
        permit_get_u64be(sv) == seq);
  uint64_t before = permit_log_size(log);
  CHECK(permit_log_append(log, (uint8_t *)"y", 1, extra_fail, "idx/b", &seq,
                          &err) == PERMIT_EEXIST);
  CHECK(permit_log_size(log) == before);
  CHECK(permit_store_get_fixed(s, PERMIT_CF_INDEXES, "idx/b", 5, sv, 1,
                               &err) == PERMIT_ENOTFOUND);
  /* A positive return is not success: it fails the append as EINVAL. */
  CHECK(permit_log_append(log, (uint8_t *)"z", 1, extra_positive, "idx/c",
                          &seq, &err) == PERMIT_EINVAL);
  CHECK(strstr(err.msg, "returned 1") != NULL);
  CHECK(permit_log_size(log) == before);
  CHECK(permit_store_get_fixed(s, PERMIT_CF_INDEXES, "idx/c", 5, sv, 1,
                               &err) == PERMIT_ENOTFOUND);

  /* Batch append: all entries, consecutive numbers. */
  permit_iov many[3] = {{"m0", 2}, {"m1", 2}, {"m2", 2}};
  CHECK(permit_log_append_many(log, many, 3, NULL, NULL, &seq, &err) == 0 &&
        seq == before && permit_log_size(log) == before + 3);
  CHECK(permit_log_append_many(log, many, 0, NULL, NULL, &seq, &err) ==
        PERMIT_EINVAL);

  /* Concurrent appenders: every entry lands once, at the seq returned. */
  permit_log *log2;
  CHECK(permit_log_open(s, "tixly.example", "bluenote.example", &log2,
                        &err) == 0);
  worker w[8];
  pthread_t th[8];
  for (int i = 0; i < 8; i++) {
    w[i] = (worker){.log = log2, .id = i};
    pthread_create(&th[i], NULL, append_worker, &w[i]);
  }
  for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
  CHECK(permit_log_size(log2) == 1600);
  int conc_ok = 1;
  uint8_t *seen = calloc(1600, 1);
  for (int i = 0; i < 8; i++) {
    conc_ok &= w[i].failed == 0;
    for (int j = 0; j < 200; j++) {
      char want[64];
      int n = snprintf(want, sizeof want, "worker %d item %d", i, j);
      uint64_t q = w[i].seqs[j];
      if (q >= 1600 || seen[q]) {
        conc_ok = 0;
        continue;
      }
      seen[q] = 1;
      uint8_t *got = NULL;
      size_t gl = 0;
      conc_ok &= permit_log_get(log2, q, &got, &gl, NULL) == 0 &&
                 gl == (size_t)n && memcmp(got, want, gl) == 0;
      free(got);
    }
  }
  free(seen);
  CHECK(conc_ok);
  permit_log_head(log2, &size, root);
  reference_root(log2, size, ref);
  CHECK(memcmp(root, ref, 32) == 0);

  test_group_failure(s);
  test_synced(s);

  /* Reopen: same head, appends continue. */
  permit_hash root1;
  uint64_t size1;
  permit_log_head(log, &size1, root1);
  permit_log_close(log);
  permit_log_close(log2);
  permit_store_close(s);
  CHECK(permit_store_open(path, &s, &err) == 0);
  CHECK(permit_log_open(s, "tixly.example", "fillmore.example", &log, &err) ==
        0);
  permit_log_head(log, &size, root);
  CHECK(size == size1 && memcmp(root, root1, 32) == 0);
  CHECK(permit_log_append(log, (uint8_t *)"after", 5, NULL, NULL, &seq,
                          &err) == 0 &&
        seq == size1);
  permit_log_head(log, &size, root);
  reference_root(log, size, ref);
  CHECK(memcmp(root, ref, 32) == 0);
  permit_log_close(log);
  permit_store_close(s);

  test_write_failure(dir);

  permit_sign_key_free(key);
  permit_sign_key_free(other);
  test_rmrf(dir);
  permit_crypto_cleanup();
  return test_finish("test_log");
}
