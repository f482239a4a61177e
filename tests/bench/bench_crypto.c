/*
 * bench_crypto: the cost of one call of each primitive the opt-in path
 * makes, next to the bare OpenSSL operation it is built on, measured in
 * the same run the way `openssl speed` measures it (one key, one context,
 * reused).  The ratios are what tests/bench/run-optin-bench.sh's ceilings
 * assume: issuing a record is one Ed25519 sign and two X25519, receiving
 * one is one verify and one X25519.
 *
 * usage: bench_crypto [-t THREADS] [-s SECONDS | -n CALLS] [-o NAME]
 *                     [--check]
 *   -t  threads running each operation at once (default 1); the figures
 *       are totals over all threads, so lock contention inside OpenSSL
 *       shows as a ratio that falls as threads rise.
 *   -s  seconds per operation (default 0.5).
 *   -n  a fixed number of calls per operation and thread instead, for
 *       instruction counts: valgrind --tool=callgrind
 *       --toggle-collect=run_loop bench_crypto -n 1000 -o permit_sign
 *   -o  only the operations whose name contains NAME.
 *   --check  compares HMAC, HKDF, SHA-256, AEAD, sign/verify and HPKE
 *       against references built here on fresh OpenSSL contexts, on
 *       random inputs and keys from many threads, then exits: 0 when all
 *       agree.
 */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "permit/crypto.h"
#include "permit/hpke.h"

#define MSG_LEN 300     /* about a record body */
#define CONTACT_LEN 120 /* about a packed Contact */
#define INFO "permit/v1/contact\nissuer.example\naudience.example"
#define CONTEXT "permit/v1/record\n"

static double seconds = 0.5;
static int nthreads = 1;
static unsigned long count;  /* -n: calls per operation instead of -s */
static const char *only;     /* -o: the operations whose name has this */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "bench_crypto: %s\n", what);
  ERR_print_errors_fp(stderr);
  exit(1);
}

/* ---- shared inputs, made once ---- */

static permit_sign_key *sign_key;
static permit_kx_key *kx_key, *kx_peer;
static uint8_t msg[MSG_LEN], sig[PERMIT_ED25519_SIG_LEN];
static uint8_t contact[CONTACT_LEN];
static uint8_t sealed[PERMIT_HPKE_ENC_LEN + CONTACT_LEN + PERMIT_AEAD_TAG_LEN];
static uint8_t record_id[16];
static uint8_t key32[32];

/* The bare operations, as openssl speed runs them. */
static EVP_PKEY *raw_sign_pkey, *raw_kx_pkey, *raw_kx_peer;

static void setup(void) {
  if (permit_sign_key_generate(&sign_key) != 0 ||
      permit_kx_key_generate(&kx_key) != 0 ||
      permit_kx_key_generate(&kx_peer) != 0)
    die("keygen");
  permit_random(msg, sizeof msg);
  permit_random(contact, sizeof contact);
  permit_random(record_id, sizeof record_id);
  permit_random(key32, sizeof key32);
  if (permit_sign(sign_key, CONTEXT, msg, sizeof msg, sig) != 0)
    die("sign");
  if (permit_hpke_seal(PERMIT_AEAD_CHACHA20_POLY1305,
                       permit_kx_key_public(kx_key), (const uint8_t *)INFO,
                       strlen(INFO), record_id, sizeof record_id, contact,
                       sizeof contact, sealed) != 0)
    die("hpke seal");
  raw_sign_pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  raw_kx_pkey = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
  raw_kx_peer = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
  if (!raw_sign_pkey || !raw_kx_pkey || !raw_kx_peer) die("raw keygen");
}

static void teardown(void) {
  permit_sign_key_free(sign_key);
  permit_kx_key_free(kx_key);
  permit_kx_key_free(kx_peer);
  EVP_PKEY_free(raw_sign_pkey);
  EVP_PKEY_free(raw_kx_pkey);
  EVP_PKEY_free(raw_kx_peer);
}

/* ---- the operations; each returns 0 on success ---- */

typedef struct op_state {
  EVP_MD_CTX *sign, *verify;
  EVP_PKEY_CTX *derive;
  uint8_t sig[PERMIT_ED25519_SIG_LEN];
} op_state;

typedef int (*op_fn)(op_state *st);

static int raw_sign(op_state *st) {
  size_t n = sizeof st->sig;
  return EVP_DigestSign(st->sign, st->sig, &n, msg, sizeof msg) == 1 ? 0 : -1;
}

static int raw_verify(op_state *st) {
  return EVP_DigestVerify(st->verify, st->sig, sizeof st->sig, msg,
                          sizeof msg) == 1
             ? 0
             : -1;
}

static int raw_x25519(op_state *st) {
  uint8_t out[32];
  size_t n = sizeof out;
  return EVP_PKEY_derive(st->derive, out, &n) == 1 ? 0 : -1;
}

static int op_sign(op_state *st) {
  (void)st;
  uint8_t s[PERMIT_ED25519_SIG_LEN];
  return permit_sign(sign_key, CONTEXT, msg, sizeof msg, s);
}

static int op_verify(op_state *st) {
  (void)st;
  return permit_verify(permit_sign_key_public(sign_key), CONTEXT, msg,
                       sizeof msg, sig, sizeof sig);
}

static int op_kx_derive(op_state *st) {
  (void)st;
  uint8_t out[32];
  return permit_kx_derive(kx_key, permit_kx_key_public(kx_peer), out);
}

static int op_kx_generate(op_state *st) {
  (void)st;
  permit_kx_key *k;
  int rc = permit_kx_key_generate(&k);
  permit_kx_key_free(k);
  return rc;
}

static int op_hpke_seal(op_state *st) {
  (void)st;
  uint8_t out[sizeof sealed];
  return permit_hpke_seal(PERMIT_AEAD_CHACHA20_POLY1305,
                          permit_kx_key_public(kx_key), (const uint8_t *)INFO,
                          strlen(INFO), record_id, sizeof record_id, contact,
                          sizeof contact, out);
}

static int op_hpke_open(op_state *st) {
  (void)st;
  uint8_t pt[CONTACT_LEN];
  return permit_hpke_open(PERMIT_AEAD_CHACHA20_POLY1305, kx_key,
                          (const uint8_t *)INFO, strlen(INFO), record_id,
                          sizeof record_id, sealed, sizeof sealed, pt);
}

static int op_hmac(op_state *st) {
  (void)st;
  uint8_t out[32];
  return permit_hmac_sha256(key32, sizeof key32, msg, 40, out);
}

static int op_hkdf(op_state *st) {
  (void)st;
  uint8_t out[32];
  return permit_hkdf(NULL, 0, key32, sizeof key32, (const uint8_t *)INFO,
                     strlen(INFO), out, sizeof out);
}

static int op_sha256(op_state *st) {
  (void)st;
  uint8_t out[32];
  permit_iov parts[2] = {{"\x01", 1}, {msg, 64}};
  return permit_sha256(parts, 2, out);
}

static int op_aead_seal(op_state *st) {
  (void)st;
  uint8_t out[CONTACT_LEN + PERMIT_AEAD_TAG_LEN];
  return permit_aead_seal(PERMIT_AEAD_CHACHA20_POLY1305, key32, 32, msg, 12,
                          record_id, sizeof record_id, contact,
                          sizeof contact, out);
}

static int op_key_id(op_state *st) {
  (void)st;
  char id[PERMIT_KEY_ID_LEN];
  permit_key_id(key32, sizeof key32, id);
  return id[0] != '\0' ? 0 : -1;
}

/* What checkout.c does in crypto for one record. */
static int op_issue(op_state *st) {
  uint8_t subject[32], mac[32];
  int rc = op_hmac(st);            /* the subject */
  if (rc == 0) rc = op_hmac(st);   /* the order hash */
  if (rc == 0) rc = op_hpke_seal(st);
  if (rc == 0) rc = op_key_id(st); /* the recipient key id */
  if (rc == 0) rc = op_sign(st);
  if (rc == 0) rc = op_hmac(st);   /* the consent link */
  (void)subject, (void)mac;
  return rc;
}

/* What sync.c and contacts.c do in crypto for one record. */
static int op_receive(op_state *st) {
  int rc = op_verify(st);
  if (rc == 0) rc = op_hpke_open(st);
  if (rc == 0) rc = op_hmac(st);      /* the subject check */
  if (rc == 0) rc = op_aead_seal(st); /* the contact at rest */
  return rc;
}

/* ---- the timing loop ---- */

typedef struct job {
  op_fn fn;
  double deadline;
  unsigned long count;
  int failed;
} job;

static void op_state_init(op_state *st) {
  memset(st, 0, sizeof *st);
  st->sign = EVP_MD_CTX_new();
  st->verify = EVP_MD_CTX_new();
  st->derive = EVP_PKEY_CTX_new_from_pkey(NULL, raw_kx_pkey, NULL);
  size_t n = sizeof st->sig;
  if (!st->sign || !st->verify || !st->derive ||
      EVP_DigestSignInit_ex(st->sign, NULL, NULL, NULL, NULL, raw_sign_pkey,
                            NULL) != 1 ||
      EVP_DigestSign(st->sign, st->sig, &n, msg, sizeof msg) != 1 ||
      EVP_DigestVerifyInit_ex(st->verify, NULL, NULL, NULL, NULL,
                              raw_sign_pkey, NULL) != 1 ||
      EVP_PKEY_derive_init(st->derive) != 1 ||
      EVP_PKEY_derive_set_peer(st->derive, raw_kx_peer) != 1)
    die("raw contexts");
}

static void op_state_free(op_state *st) {
  EVP_MD_CTX_free(st->sign);
  EVP_MD_CTX_free(st->verify);
  EVP_PKEY_CTX_free(st->derive);
}

/* The measured loop, apart so that callgrind can count just it
 * (--toggle-collect=run_loop). */
__attribute__((noinline)) static void run_loop(job *j, op_state *st) {
  unsigned long n = 0;
  if (count > 0) {
    for (; n < count; n++)
      if (j->fn(st) != 0) j->failed = 1;
  } else {
    do {
      for (int i = 0; i < 16; i++)
        if (j->fn(st) != 0) j->failed = 1;
      n += 16;
    } while (now_s() < j->deadline);
  }
  j->count = n;
}

static void *run_job(void *arg) {
  job *j = arg;
  op_state st;
  op_state_init(&st);
  run_loop(j, &st);
  op_state_free(&st);
  return NULL;
}

/* Runs |fn| on every thread for |seconds|; returns operations per second
 * in all. */
static double measure(op_fn fn, const char *name) {
  if (only != NULL && strstr(name, only) == NULL) return 1;
  pthread_t th[64];
  job jobs[64];
  double t0 = now_s();
  for (int i = 0; i < nthreads; i++) {
    jobs[i] = (job){fn, t0 + seconds, 0, 0};
    if (pthread_create(&th[i], NULL, run_job, &jobs[i]) != 0)
      die("pthread_create");
  }
  unsigned long total = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(th[i], NULL);
    total += jobs[i].count;
    if (jobs[i].failed) {
      fprintf(stderr, "bench_crypto: %s failed\n", name);
      exit(1);
    }
  }
  double rate = (double)total / (now_s() - t0);
  printf("%-28s %9.2f us/op %11.0f ops/s\n", name, nthreads * 1e6 / rate,
         rate);
  fflush(stdout);
  return rate;
}

/* ---- --check: the same results as fresh OpenSSL contexts ---- */

static unsigned rnd(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return *s >> 8;
}

static void ref_hmac(const uint8_t *key, size_t keylen, const uint8_t *d,
                     size_t len, uint8_t out[32]) {
  static const uint8_t empty[1];
  size_t outlen = 0;
  EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *c = EVP_MAC_CTX_new(mac);
  OSSL_PARAM p[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
      OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(c, keylen ? key : empty, keylen, p) != 1 ||
      EVP_MAC_update(c, d, len) != 1 ||
      EVP_MAC_final(c, out, &outlen, 32) != 1)
    die("ref hmac");
  EVP_MAC_CTX_free(c);
  EVP_MAC_free(mac);
}

static void ref_hkdf(const uint8_t *salt, size_t saltlen, const uint8_t *ikm,
                     size_t ikmlen, const uint8_t *info, size_t infolen,
                     uint8_t *out, size_t outlen) {
  static uint8_t empty[1];
  EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
  EVP_KDF_CTX *c = EVP_KDF_CTX_new(kdf);
  OSSL_PARAM p[5], *q = p;
  *q++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
  *q++ = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_KEY, ikmlen ? (void *)ikm : empty, ikmlen);
  if (saltlen)
    *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                             (void *)salt, saltlen);
  if (infolen)
    *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                             (void *)info, infolen);
  *q = OSSL_PARAM_construct_end();
  if (EVP_KDF_derive(c, out, outlen, p) != 1) die("ref hkdf");
  EVP_KDF_CTX_free(c);
  EVP_KDF_free(kdf);
}

static void ref_aead_seal(permit_aead_id aead, const uint8_t *key,
                          const uint8_t *nonce, const uint8_t *aad,
                          size_t aadlen, const uint8_t *pt, size_t ptlen,
                          uint8_t *ct) {
  EVP_CIPHER *ci = EVP_CIPHER_fetch(NULL,
                                    aead == PERMIT_AEAD_AES_128_GCM
                                        ? "AES-128-GCM"
                                        : "ChaCha20-Poly1305",
                                    NULL);
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int n = 0;
  if (EVP_EncryptInit_ex2(c, ci, key, nonce, NULL) != 1 ||
      (aadlen && EVP_EncryptUpdate(c, NULL, &n, aad, (int)aadlen) != 1) ||
      (ptlen && EVP_EncryptUpdate(c, ct, &n, pt, (int)ptlen) != 1) ||
      EVP_EncryptFinal_ex(c, ct + ptlen, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, ct + ptlen) != 1)
    die("ref aead");
  EVP_CIPHER_CTX_free(c);
  EVP_CIPHER_free(ci);
}

static int check_failed;

/* Keys every --check thread shares, so their pooled and cached contexts
 * meet many peers, messages and threads. */
#define SHARED_KEYS 6
static permit_sign_key *shared_sign[SHARED_KEYS];
static permit_kx_key *shared_kx[SHARED_KEYS];

#define EXPECT(cond, ...)                                                      \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "check: " __VA_ARGS__);                                  \
      fprintf(stderr, " (%s:%d)\n", __FILE__, __LINE__);                       \
      __atomic_store_n(&check_failed, 1, __ATOMIC_RELAXED);                    \
    }                                                                          \
  } while (0)

/* One thread's share of --check; |arg| seeds its inputs. */
static void *check_thread(void *arg) {
  unsigned s = (unsigned)(size_t)arg;
  uint8_t a[600], b[600], c[600 + 16], d[600 + 16], e[600], key[64];
  uint8_t got[1024], want[1024];
  for (int round = 0; round < 300; round++) {
    size_t keylen = rnd(&s) % 65, alen = rnd(&s) % 200, blen = rnd(&s) % 600;
    for (size_t i = 0; i < sizeof a; i++) a[i] = (uint8_t)rnd(&s);
    for (size_t i = 0; i < sizeof b; i++) b[i] = (uint8_t)rnd(&s);
    for (size_t i = 0; i < sizeof key; i++) key[i] = (uint8_t)rnd(&s);

    /* HMAC, keys of every length up to a block. */
    EXPECT(permit_hmac_sha256(key, keylen, b, blen, got) == 0, "hmac rc");
    ref_hmac(key, keylen, b, blen, want);
    EXPECT(memcmp(got, want, 32) == 0, "hmac keylen %zu len %zu", keylen,
           blen);

    /* SHA-256 in parts. */
    permit_iov parts[3] = {{a, alen}, {b, blen}, {key, keylen}};
    uint8_t whole[600 + 200 + 64];
    memcpy(whole, a, alen);
    memcpy(whole + alen, b, blen);
    memcpy(whole + alen + blen, key, keylen);
    EXPECT(permit_sha256(parts, 3, got) == 0, "sha256 rc");
    unsigned wl = 0;
    EVP_Digest(whole, alen + blen + keylen, want, &wl, EVP_sha256(), NULL);
    EXPECT(memcmp(got, want, 32) == 0, "sha256 len %zu", alen + blen + keylen);

    /* HKDF, salts absent and present, outputs over many blocks. */
    size_t outlen = 1 + rnd(&s) % 300, saltlen = rnd(&s) % 3 ? keylen : 0;
    size_t infolen = rnd(&s) % 3 ? alen : 0;
    EXPECT(permit_hkdf(saltlen ? key : NULL, saltlen, b, blen,
                       infolen ? a : NULL, infolen, got, outlen) == 0,
           "hkdf rc");
    ref_hkdf(key, saltlen, b, blen, a, infolen, want, outlen);
    EXPECT(memcmp(got, want, outlen) == 0, "hkdf out %zu", outlen);

    /* AEAD seal against the reference; open it back, then tamper. */
    permit_aead_id ids[2] = {PERMIT_AEAD_AES_128_GCM,
                             PERMIT_AEAD_CHACHA20_POLY1305};
    permit_aead_id id = ids[rnd(&s) % 2];
    size_t kl = permit_aead_key_len(id);
    EXPECT(permit_aead_seal(id, key, kl, key + 40, 12, alen ? a : NULL, alen,
                            b, blen, c) == 0,
           "aead seal rc");
    ref_aead_seal(id, key, key + 40, a, alen, b, blen, d);
    EXPECT(memcmp(c, d, blen + 16) == 0, "aead %d len %zu", (int)id, blen);
    if (rnd(&s) % 2) {
      d[rnd(&s) % (blen + 16)] ^= 1;
      EXPECT(permit_aead_open(id, key, kl, key + 40, 12, alen ? a : NULL,
                              alen, d, blen + 16, e) == PERMIT_EVERIFY,
             "aead tamper");
    }
    EXPECT(permit_aead_open(id, key, kl, key + 40, 12, alen ? a : NULL, alen,
                            c, blen + 16, e) == 0 &&
               memcmp(e, b, blen) == 0,
           "aead open %d len %zu", (int)id, blen);

    /* Keys that come and go: a cache keyed by address would sign with the
     * wrong one. */
    permit_sign_key *sk;
    EXPECT(permit_sign_key_from_seed(key, &sk) == 0, "seed");
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, key,
                                                32);
    size_t sl = 64;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestSignInit(md, NULL, NULL, NULL, pk);
    EVP_DigestSign(md, want, &sl, b, blen);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    EXPECT(permit_sign(sk, NULL, b, blen, got) == 0 &&
               memcmp(got, want, 64) == 0,
           "sign");
    EXPECT(permit_verify(permit_sign_key_public(sk), NULL, b, blen, got,
                         64) == 0,
           "verify");
    got[rnd(&s) % 64] ^= 0x10;
    EXPECT(permit_verify(permit_sign_key_public(sk), NULL, b, blen, got,
                         64) == PERMIT_EVERIFY,
           "verify tampered");
    permit_sign_key_free(sk);

    /* HPKE both ways with fresh keys. */
    permit_kx_key *kx;
    EXPECT(permit_kx_key_from_private(key + 32, &kx) == 0, "kx");
    EXPECT(permit_hpke_seal(id, permit_kx_key_public(kx), a, alen, key, 16,
                            b, blen, got) == 0,
           "hpke seal");
    EXPECT(permit_hpke_open(id, kx, a, alen, key, 16, got,
                            PERMIT_HPKE_ENC_LEN + blen + 16, e) == 0 &&
               memcmp(e, b, blen) == 0,
           "hpke open");
    permit_kx_key_free(kx);

    /* Long-lived keys: a signature verifies under its key only, and
     * X25519 agrees both ways, whatever the contexts saw before. */
    size_t i = rnd(&s) % SHARED_KEYS, j = (i + 1 + rnd(&s) % (SHARED_KEYS - 1))
                                              % SHARED_KEYS;
    EXPECT(permit_sign(shared_sign[i], "ctx\n", b, blen, got) == 0, "sign");
    EXPECT(permit_verify(permit_sign_key_public(shared_sign[i]), "ctx\n", b,
                         blen, got, 64) == 0,
           "verify shared");
    EXPECT(permit_verify(permit_sign_key_public(shared_sign[j]), "ctx\n", b,
                         blen, got, 64) == PERMIT_EVERIFY,
           "verify under another key");
    EXPECT(permit_verify(permit_sign_key_public(shared_sign[i]), "ctx!", b,
                         blen, got, 64) == PERMIT_EVERIFY,
           "verify under another context");
    uint8_t ij[32], ji[32];
    EXPECT(permit_kx_derive(shared_kx[i], permit_kx_key_public(shared_kx[j]),
                            ij) == 0 &&
               permit_kx_derive(shared_kx[j],
                                permit_kx_key_public(shared_kx[i]), ji) == 0 &&
               memcmp(ij, ji, 32) == 0,
           "x25519 both ways");
    EXPECT(permit_hpke_seal(id, permit_kx_key_public(shared_kx[i]), a, alen,
                            key, 16, b, blen, got) == 0,
           "hpke seal shared");
    EXPECT(permit_hpke_open(id, shared_kx[i], a, alen, key, 16, got,
                            PERMIT_HPKE_ENC_LEN + blen + 16, e) == 0 &&
               memcmp(e, b, blen) == 0,
           "hpke open shared");
    EXPECT(permit_hpke_open(id, shared_kx[j], a, alen, key, 16, got,
                            PERMIT_HPKE_ENC_LEN + blen + 16,
                            e) == PERMIT_EVERIFY,
           "hpke open with another key");
  }
  return NULL;
}

/* permit_random() after a fork: the child must not repeat the parent. */
static void check_random_fork(void) {
  uint8_t a[16], b[16], c[16];
  EXPECT(permit_random(a, sizeof a) == 0, "random");
  int fd[2];
  if (pipe(fd) != 0) die("pipe");
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    int ok = permit_random(b, sizeof b) == 0 &&
             write(fd[1], b, sizeof b) == (ssize_t)sizeof b;
    /* A full exit, so that leak checkers see the child clean up too. */
    permit_crypto_cleanup();
    exit(ok ? 0 : 1);
  }
  close(fd[1]);
  EXPECT(permit_random(c, sizeof c) == 0, "random");
  EXPECT(read(fd[0], b, sizeof b) == (ssize_t)sizeof b, "child's bytes");
  close(fd[0]);
  int st;
  waitpid(pid, &st, 0);
  EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child");
  EXPECT(memcmp(b, c, sizeof b) != 0, "parent and child drew the same bytes");
  EXPECT(memcmp(a, c, sizeof a) != 0, "two draws alike");
  /* Sizes around the pool's direct limit, and nothing repeats. */
  uint8_t prev[100] = {0}, cur[100];
  for (size_t n = 1; n <= sizeof cur; n++) {
    EXPECT(permit_random(cur, n) == 0, "random %zu", n);
    if (n >= 8) EXPECT(memcmp(cur, prev, n) != 0, "repeat at %zu", n);
    memcpy(prev, cur, n);
  }
}

static int run_check(void) {
  check_random_fork();
  for (size_t i = 0; i < SHARED_KEYS; i++)
    if (permit_sign_key_generate(&shared_sign[i]) != 0 ||
        permit_kx_key_generate(&shared_kx[i]) != 0)
      die("shared keys");
  pthread_t th[64];
  for (int i = 0; i < nthreads; i++)
    if (pthread_create(&th[i], NULL, check_thread, (void *)(size_t)(i + 1)) !=
        0)
      die("pthread_create");
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
  for (size_t i = 0; i < SHARED_KEYS; i++) {
    permit_sign_key_free(shared_sign[i]);
    permit_kx_key_free(shared_kx[i]);
  }
  printf("check: %s\n", check_failed ? "FAILED" : "all agree");
  return check_failed ? 1 : 0;
}

int main(int argc, char **argv) {
  int check = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
      nthreads = atoi(argv[++i]);
    else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      count = strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
      only = argv[++i];
    else if (strcmp(argv[i], "--check") == 0)
      check = 1;
    else {
      fprintf(stderr, "usage: bench_crypto [-t THREADS] [-s SECONDS | -n "
                      "CALLS] [-o NAME] [--check]\n");
      return 2;
    }
  }
  if (nthreads < 1 || nthreads > 64 || seconds <= 0) {
    fprintf(stderr, "bench_crypto: 1..64 threads, positive seconds\n");
    return 2;
  }
  if (permit_crypto_init() != 0) die("init");
  if (check) {
    int rc = run_check();
    permit_crypto_cleanup();
    return rc;
  }
  setup();
  printf("%d thread(s), %.1f s per operation\n", nthreads, seconds);
  printf("-- bare OpenSSL, one context reused (openssl speed's way)\n");
  double s = measure(raw_sign, "Ed25519 sign");
  double v = measure(raw_verify, "Ed25519 verify");
  double x = measure(raw_x25519, "X25519 derive");
  printf("-- permit\n");
  measure(op_sign, "permit_sign");
  measure(op_verify, "permit_verify");
  measure(op_kx_derive, "permit_kx_derive");
  measure(op_kx_generate, "permit_kx_key_generate");
  measure(op_hpke_seal, "permit_hpke_seal");
  measure(op_hpke_open, "permit_hpke_open");
  measure(op_hmac, "permit_hmac_sha256 (40 B)");
  measure(op_hkdf, "permit_hkdf (32 B out)");
  measure(op_sha256, "permit_sha256 (65 B, 2 parts)");
  measure(op_aead_seal, "permit_aead_seal (120 B)");
  printf("-- per record, crypto only\n");
  double is = measure(op_issue, "issue (checkout.c)");
  double rs = measure(op_receive, "receive (sync.c)");
  double ic = 1 / (1 / s + 2 / x), rc = 1 / (1 / v + 1 / x);
  if (only == NULL) {
    printf("issue   %.0f/s, ceiling (1 sign + 2 X25519) %.0f/s: %.2f\n", is,
           ic, is / ic);
    printf("receive %.0f/s, ceiling (1 verify + 1 X25519) %.0f/s: %.2f\n",
           rs, rc, rs / rc);
  }
  teardown();
  permit_crypto_cleanup();
  return 0;
}
