/*
 * bench_ed25519: the cost per signature of permit_ed25519_batch_verify()
 * next to OpenSSL's single Ed25519 verification, measured in the same run
 * on the same signatures (300-byte messages under the record context, as
 * sync receives them).
 *
 * OpenSSL is measured three ways, one signature per call:
 *   - EVP_DigestVerify on one context initialised once (as openssl speed
 *     and bench_crypto measure it; the fastest);
 *   - EVP_DigestVerifyInit_ex then EVP_DigestVerify on a reused context;
 *   - permit_verify(), what the venue calls today.
 * The batch is measured for n = 1, 4, 16, 64 and 256 signatures under one
 * key, and under 4 keys (item i under key i mod 4).  The batch keeps the
 * last 16 keys that passed its checks per thread, so these figures are
 * for keys seen before; two more rows show n = 16 with keys it has not
 * kept (64 keys in turn): one key per batch, and 16 keys per batch.  The
 * ratio is the batch's signatures per second over the fastest OpenSSL
 * figure.
 *
 * usage: bench_ed25519 [-s SECONDS]   (seconds per measurement, default 1)
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "permit/crypto.h"
#include "permit/ed25519.h"

#define MSG_LEN 300
#define CONTEXT "permit/v1/record\n"
#define NMAX 256

static double seconds = 1.0;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "bench_ed25519: %s\n", what);
  ERR_print_errors_fp(stderr);
  exit(1);
}

#define NKEYS 64
#define COLD 1024 /* signatures in each cold-key set */

/* A set of signatures; s->n of them. */
typedef struct sigset {
  size_t n;
  uint8_t (*msg)[MSG_LEN];
  uint8_t (*sig)[PERMIT_ED25519_SIG_LEN];
  /* context || msg, for the bare OpenSSL calls */
  uint8_t (*tbs)[sizeof CONTEXT - 1 + MSG_LEN];
  permit_ed25519_item *items;
  EVP_PKEY **pkey;
} sigset;

static permit_sign_key *keys[NKEYS];
static EVP_PKEY *pkeys[NKEYS];
static sigset one_key, four_keys, cold_one, cold_16;

/* |n| signatures, item i under key key_of(i). */
static void make_set(sigset *s, size_t n, int (*key_of)(size_t)) {
  s->n = n;
  s->msg = malloc(n * sizeof *s->msg);
  s->sig = malloc(n * sizeof *s->sig);
  s->tbs = malloc(n * sizeof *s->tbs);
  s->items = malloc(n * sizeof *s->items);
  s->pkey = malloc(n * sizeof *s->pkey);
  if (!s->msg || !s->sig || !s->tbs || !s->items || !s->pkey) die("memory");
  for (size_t i = 0; i < n; i++) {
    int k = key_of(i);
    if (permit_random(s->msg[i], MSG_LEN) != 0) die("random");
    if (permit_sign(keys[k], CONTEXT, s->msg[i], MSG_LEN, s->sig[i]) != 0)
      die("sign");
    memcpy(s->tbs[i], CONTEXT, sizeof CONTEXT - 1);
    memcpy(s->tbs[i] + sizeof CONTEXT - 1, s->msg[i], MSG_LEN);
    s->items[i] = (permit_ed25519_item){permit_sign_key_public(keys[k]),
                                        s->sig[i], CONTEXT, s->msg[i], MSG_LEN};
    s->pkey[i] = pkeys[k];
  }
}

static void free_set(sigset *s) {
  free(s->msg);
  free(s->sig);
  free(s->tbs);
  free(s->items);
  free(s->pkey);
}

static int key_one(size_t i) { return (void)i, 0; }
static int key_four(size_t i) { return (int)(i % 4); }
/* Batches of 16 in turn under keys 0..63: none kept from the last round. */
static int key_cold_one(size_t i) { return (int)(i / 16 % NKEYS); }
static int key_cold_16(size_t i) { return (int)(i % NKEYS); }

/* Verifications per second of OpenSSL on one key's signatures; |mode| 0:
 * context initialised once, 1: initialised per signature, 2:
 * permit_verify(). */
static double openssl_rate(int mode) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (md == NULL || EVP_DigestVerifyInit_ex(md, NULL, NULL, NULL, NULL,
                                            one_key.pkey[0], NULL) != 1)
    die("verify context");
  unsigned long n = 0;
  double t0 = now_s(), t1;
  do {
    for (size_t i = 0; i < NMAX; i++) {
      int ok;
      if (mode == 2) {
        ok =
            permit_verify(one_key.items[i].pub, CONTEXT, one_key.msg[i],
                          MSG_LEN, one_key.sig[i], PERMIT_ED25519_SIG_LEN) == 0;
      } else {
        if (mode == 1 && EVP_DigestVerifyInit_ex(md, NULL, NULL, NULL, NULL,
                                                 one_key.pkey[i], NULL) != 1)
          die("verify init");
        ok = EVP_DigestVerify(md, one_key.sig[i], PERMIT_ED25519_SIG_LEN,
                              one_key.tbs[i], sizeof one_key.tbs[i]) == 1;
      }
      if (!ok) die("a valid signature failed");
    }
    n += NMAX;
    t1 = now_s();
  } while (t1 - t0 < seconds);
  EVP_MD_CTX_free(md);
  return (double)n / (t1 - t0);
}

/* Signatures per second through batches of |n| from |s|. */
static double batch_rate(const sigset *s, size_t n) {
  unsigned long sigs = 0;
  double t0 = now_s(), t1;
  do {
    for (size_t off = 0; off + n <= s->n; off += n) {
      if (permit_ed25519_batch_verify(s->items + off, n) != 1)
        die("a valid batch failed");
      sigs += n;
    }
    t1 = now_s();
  } while (t1 - t0 < seconds);
  return (double)sigs / (t1 - t0);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
      seconds = atof(argv[++i]);
    } else {
      fprintf(stderr, "usage: bench_ed25519 [-s SECONDS]\n");
      return 2;
    }
  }
  for (int k = 0; k < NKEYS; k++) {
    if (permit_sign_key_generate(&keys[k]) != 0) die("keygen");
    pkeys[k] = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL,
                                              permit_sign_key_public(keys[k]),
                                              PERMIT_ED25519_PUB_LEN);
    if (pkeys[k] == NULL) die("public key");
  }
  make_set(&one_key, NMAX, key_one);
  make_set(&four_keys, NMAX, key_four);
  make_set(&cold_one, COLD, key_cold_one);
  make_set(&cold_16, COLD, key_cold_16);
  /* Warm up: the one-time tables, OpenSSL's provider lookups. */
  if (permit_ed25519_batch_verify(one_key.items, 16) != 1) die("warm-up");
  (void)openssl_rate(2);

  static const char *const names[3] = {
      "EVP_DigestVerify, context set once",
      "EVP_DigestVerifyInit_ex + EVP_DigestVerify", "permit_verify"};
  double best = 0;
  printf("OpenSSL %s, %d-byte messages, %.1f s per figure\n",
         OpenSSL_version(OPENSSL_VERSION_STRING), MSG_LEN, seconds);
  for (int m = 0; m < 3; m++) {
    double r = openssl_rate(m);
    if (r > best) best = r;
    printf("%-44s %8.0f/s %7.2f us\n", names[m], r, 1e6 / r);
  }
  printf("\n%5s %5s %12s %10s %12s %8s\n", "n", "keys", "us/batch", "us/sig",
         "sigs/s", "ratio");
  static const size_t ns[] = {1, 4, 16, 64, 256};
  for (int set = 0; set < 2; set++) {
    const sigset *s = set == 0 ? &one_key : &four_keys;
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
      size_t n = ns[i];
      double r = batch_rate(s, n);
      printf("%5zu %5d %12.1f %10.2f %12.0f %7.2fx\n", n,
             set == 0 ? 1 : (n < 4 ? (int)n : 4), 1e6 * (double)n / r, 1e6 / r,
             r, r / best);
    }
  }
  double r = batch_rate(&cold_one, 16);
  printf("%5d %5d %12.1f %10.2f %12.0f %7.2fx  keys not kept\n", 16, 1,
         1e6 * 16 / r, 1e6 / r, r, r / best);
  r = batch_rate(&cold_16, 16);
  printf("%5d %5d %12.1f %10.2f %12.0f %7.2fx  keys not kept\n", 16, 16,
         1e6 * 16 / r, 1e6 / r, r, r / best);
  printf(
      "\nratio: batch signatures per second over the fastest OpenSSL "
      "figure (%.0f/s, %.2f us), same run\n",
      best, 1e6 / best);
  free_set(&one_key);
  free_set(&four_keys);
  free_set(&cold_one);
  free_set(&cold_16);
  for (int k = 0; k < NKEYS; k++) {
    permit_sign_key_free(keys[k]);
    EVP_PKEY_free(pkeys[k]);
  }
  permit_crypto_cleanup();
  return 0;
}
