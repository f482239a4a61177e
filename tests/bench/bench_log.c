/*
 * bench_log: the cost of one durable append and of proofs on a log of
 * 1,000,000 entries (or argv[2]), each next to a baseline measured in the
 * same run on the same database: a single synced RocksDB put of the same
 * size (for appends) and a single RocksDB point read (for proofs).
 *
 * usage: bench_log DIR [ENTRIES]   (DIR is created; use a disk, not tmpfs)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "permit/log.h"
#include "permit/util.h"

#define ENTRY_LEN 400 /* about a signed opt-in with a sealed contact */
#define SAMPLES 2000

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Sorts |v| and returns its |q| quantile. */
static double quantile(double *v, int n, double q) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[(int)(q * (n - 1))];
}

static void die(const char *what, const permit_err *err) {
  fprintf(stderr, "bench_log: %s: %s\n", what, err->msg);
  exit(1);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_log DIR [ENTRIES]\n");
    return 2;
  }
  uint64_t entries = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;
  permit_store *s;
  permit_log *log;
  permit_err err = {0};
  if (permit_store_open(argv[1], &s, &err) != 0) die("open", &err);
  if (permit_log_open(s, "bench-issuer.example", "bench-audience.example",
                      &log, &err) != 0)
    die("log", &err);

  /* Fill to |entries| in atomic batches of 1000 (the sync path's shape). */
  static uint8_t buf[1000][ENTRY_LEN];
  permit_iov iov[1000];
  double t0 = now_us();
  uint64_t have = permit_log_size(log);
  while (have < entries) {
    size_t n = entries - have < 1000 ? (size_t)(entries - have) : 1000;
    for (size_t i = 0; i < n; i++) {
      memset(buf[i], 'a' + (int)((have + i) % 26), ENTRY_LEN);
      permit_put_u64be(buf[i], have + i);
      iov[i] = (permit_iov){buf[i], ENTRY_LEN};
    }
    if (permit_log_append_many(log, iov, n, NULL, NULL, NULL, &err) != 0)
      die("fill", &err);
    have += n;
  }
  double fill_s = (now_us() - t0) / 1e6;
  printf("log size                    %llu entries of %d bytes (filled in "
         "%.1f s)\n", (unsigned long long)have, ENTRY_LEN, fill_s);

  static double a[SAMPLES], b[SAMPLES];
  /* Single durable appends, alternating with the baseline synced put so
   * both see the same disk state. */
  int napp = 500;
  for (int i = 0; i < napp; i++) {
    uint8_t e[ENTRY_LEN];
    memset(e, 'z', sizeof e);
    permit_put_u64be(e, have + (uint64_t)i);
    double t = now_us();
    if (permit_log_append(log, e, sizeof e, NULL, NULL, NULL, &err) != 0)
      die("append", &err);
    a[i] = now_us() - t;
    char k[32];
    int kl = snprintf(k, sizeof k, "bench/%d", i);
    t = now_us();
    if (permit_store_put(s, PERMIT_CF_DEFAULT, k, (size_t)kl, e, sizeof e,
                         &err) != 0)
      die("put", &err);
    b[i] = now_us() - t;
  }
  double app50 = quantile(a, napp, 0.5), app99 = quantile(a, napp, 0.99);
  double put50 = quantile(b, napp, 0.5);
  printf("durable append              p50 %.1f us  p99 %.1f us\n", app50,
         app99);
  printf("baseline synced put         p50 %.1f us\n", put50);
  printf("append / synced put         %.2f\n", app50 / put50);

  uint64_t size = permit_log_size(log);
  /* Current root from the frontier: no reads. */
  permit_hash root;
  t0 = now_us();
  for (int i = 0; i < 10000; i++) {
    uint64_t sz;
    permit_log_head(log, &sz, root);
  }
  printf("current root (frontier)     %.2f us\n", (now_us() - t0) / 10000);

  srand(42);
  permit_hash proof[PERMIT_MERKLE_MAX_PROOF];
  size_t pl;
  int nproof = SAMPLES, bad = 0;
  for (int i = 0; i < nproof; i++) {
    uint64_t idx = ((uint64_t)rand() << 16 ^ (uint64_t)rand()) % size;
    double t = now_us();
    if (permit_log_inclusion_proof(log, idx, size, proof, &pl, &err) != 0)
      die("inclusion", &err);
    a[i] = now_us() - t;
    uint8_t *e;
    size_t el;
    permit_hash leaf;
    if (permit_log_get(log, idx, &e, &el, &err) != 0) die("get", &err);
    t = now_us();
    permit_merkle_leaf_hash(e, el, leaf);
    bad += permit_merkle_verify_inclusion(idx, size, leaf, proof, pl, root) != 0;
    b[i] = now_us() - t;
    free(e);
  }
  double inc50 = quantile(a, nproof, 0.5), inc99 = quantile(a, nproof, 0.99);
  double ver50 = quantile(b, nproof, 0.5);
  printf("inclusion proof (%zu hashes) p50 %.1f us  p99 %.1f us  (%d failed "
         "to verify)\n", pl, inc50, inc99, bad);
  printf("inclusion verify            p50 %.1f us\n", ver50);

  for (int i = 0; i < nproof; i++) {
    uint64_t s1 = 1 + ((uint64_t)rand() << 16 ^ (uint64_t)rand()) % size;
    double t = now_us();
    if (permit_log_consistency_proof(log, s1, size, proof, &pl, &err) != 0)
      die("consistency", &err);
    a[i] = now_us() - t;
  }
  double con50 = quantile(a, nproof, 0.5), con99 = quantile(a, nproof, 0.99);
  printf("consistency proof           p50 %.1f us  p99 %.1f us\n", con50,
         con99);

  /* Baseline: one point read of a tree node. */
  for (int i = 0; i < nproof; i++) {
    uint64_t idx = ((uint64_t)rand() << 16 ^ (uint64_t)rand()) % size;
    uint8_t *e;
    size_t el;
    double t = now_us();
    if (permit_log_get(log, idx, &e, &el, &err) != 0) die("get", &err);
    a[i] = now_us() - t;
    free(e);
  }
  double get50 = quantile(a, nproof, 0.5);
  printf("baseline point read         p50 %.1f us\n", get50);
  printf("inclusion proof / read      %.1f\n", inc50 / get50);
  printf("consistency proof / read    %.1f\n", con50 / get50);

  permit_log_close(log);
  permit_store_close(s);
  permit_crypto_cleanup();
  return bad != 0;
}
