/* test_log: durable appends, roots against a recomputation, proofs,
 * concurrent appends, extra writes, checkpoints, reopen. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

  permit_sign_key_free(key);
  permit_sign_key_free(other);
  test_rmrf(dir);
  permit_crypto_cleanup();
  return test_finish("test_log");
}
