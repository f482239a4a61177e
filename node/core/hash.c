/*
 * hash.c - the process-wide cache of fetched OpenSSL algorithms, and the
 * hash functions built on it.  OpenSSL 3.0 looks an algorithm up in its
 * provider tables on every implicit fetch (EVP_sha256() and friends);
 * fetching once and reusing the handle keeps that out of the hot path.
 *
 * SHA-256 and HMAC-SHA256 run on one digest context per thread, and
 * small permit_random() requests are served from a per-thread pool of
 * random bytes; both are made on the thread's first call and freed when
 * the thread ends (or, for the thread that calls exit(), by an atexit
 * hook).  HMAC is RFC 2104 written out on that context: OpenSSL's EVP_MAC
 * allocates a context, copies the key to the secure heap and parses its
 * parameters on every call, which costs more than the hashing of a short
 * message.
 */
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "crypto_internal.h"
#include "permit/crypto.h"
#include "permit/util.h"

#define SHA256_BLOCK 64

static permit_algs algs;
static int algs_ok;
static pthread_once_t algs_once = PTHREAD_ONCE_INIT;

static void algs_fetch(void) {
  algs.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  algs.sha512 = EVP_MD_fetch(NULL, "SHA512", NULL);
  algs.hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  algs.hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
  algs.aes_128_gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
  algs.chacha20_poly1305 = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  algs_ok = algs.sha256 && algs.sha512 && algs.hmac && algs.hkdf && algs.aes_128_gcm &&
            algs.chacha20_poly1305;
}

int permit_crypto_init(void) {
  pthread_once(&algs_once, algs_fetch);
  return algs_ok ? 0 : PERMIT_ECRYPTO;
}

const permit_algs *permit_algs_get(void) {
  return permit_crypto_init() == 0 ? &algs : NULL;
}

/* ---- per-thread state ---- */

/* Random bytes drawn from OpenSSL at once per thread; requests above
 * RAND_DIRECT bytes skip the pool. */
#define RAND_POOL 1024
#define RAND_DIRECT 64

typedef struct thread_state {
  EVP_MD_CTX *md;   /* SHA-256, initialised; NULL until first needed */
  unsigned rand_gen; /* fork_gen when the pool was filled */
  size_t rand_left;  /* unused bytes, at the pool's end */
  uint8_t rand[RAND_POOL];
  void *crypto; /* crypto.c's contexts, or NULL */
} thread_state;

static pthread_key_t state_key;
static pthread_once_t state_key_once = PTHREAD_ONCE_INIT;
static int state_key_ok;
static _Thread_local thread_state *thread_st;
/* Bumped in a forked child, whose pools, copied from the parent, must not
 * hand out the bytes the parent will. */
static atomic_uint fork_gen;

static void state_free(void *arg) {
  thread_state *t = arg;
  permit_crypto_thread_free(t->crypto);
  EVP_MD_CTX_free(t->md);
  permit_wipe(t->rand, sizeof t->rand);
  free(t);
  thread_st = NULL;
}

/* exit() runs no thread-exit destructors: free the exiting thread's. */
static void state_free_at_exit(void) {
  if (thread_st == NULL) return;
  pthread_setspecific(state_key, NULL);
  state_free(thread_st);
}

static void on_fork_child(void) {
  atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
}

static void state_key_create(void) {
  /* OpenSSL registers its own atexit cleanup when first initialised;
   * initialising it first puts ours ahead of it at exit. */
  if (permit_crypto_init() != 0) return;
  state_key_ok = pthread_key_create(&state_key, state_free) == 0 &&
                 atexit(state_free_at_exit) == 0 &&
                 pthread_atfork(NULL, NULL, on_fork_child) == 0;
}

/* The calling thread's state, or NULL when it cannot be made. */
static thread_state *state_get(void) {
  thread_state *t = thread_st;
  if (t != NULL) return t;
  pthread_once(&state_key_once, state_key_create);
  if (!state_key_ok) return NULL;
  t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  if (pthread_setspecific(state_key, t) != 0) {
    free(t);
    return NULL;
  }
  thread_st = t;
  return t;
}

void **permit_thread_crypto_slot(void) {
  thread_state *t = state_get();
  return t != NULL ? &t->crypto : NULL;
}

/*
 * The calling thread's SHA-256 context, initialised and ready for
 * updates, or NULL when it cannot be made.  Callers hand it back with
 * md_release() whatever happened.
 */
static EVP_MD_CTX *md_acquire(void) {
  thread_state *t = state_get();
  if (t == NULL) return NULL;
  if (t->md == NULL) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex2(md, algs.sha256, NULL) != 1) {
      EVP_MD_CTX_free(md);
      ERR_clear_error();
      return NULL;
    }
    t->md = md;
  }
  return t->md;
}

/*
 * Starts the context over, which also overwrites the state the last hash
 * left (an HMAC's output, an HKDF key); a context that will not restart
 * is dropped, so the next call builds a fresh one.
 */
static void md_release(EVP_MD_CTX *md) {
  if (EVP_DigestInit_ex2(md, NULL, NULL) == 1) return;
  ERR_clear_error();
  thread_st->md = NULL;
  EVP_MD_CTX_free(md);
}

void permit_crypto_cleanup(void) {
  /* The caller is the last user: its state goes now, not at exit. */
  if (thread_st != NULL) {
    pthread_setspecific(state_key, NULL);
    state_free(thread_st);
  }
  EVP_MD_free(algs.sha256);
  EVP_MD_free(algs.sha512);
  EVP_MAC_free(algs.hmac);
  EVP_KDF_free(algs.hkdf);
  EVP_CIPHER_free(algs.aes_128_gcm);
  EVP_CIPHER_free(algs.chacha20_poly1305);
  algs = (permit_algs){0};
  algs_ok = 0;
}

/*
 * Small requests come from a per-thread pool filled by one RAND_bytes
 * call: each call costs OpenSSL a fork check (a getpid() system call) and
 * a DRBG step, which for 16 bytes is most of the price.  Bytes handed out
 * are wiped from the pool; a forked child refills before its first use.
 */
int permit_random(uint8_t *out, size_t len) {
  if (out == NULL && len > 0) return PERMIT_EINVAL;
  /* RAND_bytes takes an int: a larger |len| would be cut, and the caller
   * would believe the whole buffer random. */
  if (len > INT_MAX) return PERMIT_EINVAL;
  thread_state *t = len <= RAND_DIRECT ? state_get() : NULL;
  if (t == NULL) return RAND_bytes(out, (int)len) == 1 ? 0 : PERMIT_ECRYPTO;
  unsigned gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
  if (t->rand_gen != gen || t->rand_left < len) {
    permit_wipe(t->rand, sizeof t->rand);
    t->rand_left = 0;
    if (RAND_bytes(t->rand, (int)sizeof t->rand) != 1) {
      permit_wipe(t->rand, sizeof t->rand);
      return PERMIT_ECRYPTO;
    }
    t->rand_gen = gen;
    t->rand_left = sizeof t->rand;
  }
  uint8_t *p = t->rand + sizeof t->rand - t->rand_left;
  memcpy(out, p, len);
  permit_wipe(p, len);
  t->rand_left -= len;
  return 0;
}

/* Hashes the |n| parts into |md|; 1 on success. */
static int md_update_parts(EVP_MD_CTX *md, const permit_iov *parts,
                           size_t n) {
  for (size_t i = 0; i < n; i++)
    if (EVP_DigestUpdate(md, parts[i].base, parts[i].len) != 1) return 0;
  return 1;
}

int permit_sha256(const permit_iov *parts, size_t n,
                  uint8_t out[PERMIT_SHA256_LEN]) {
  EVP_MD_CTX *md = md_acquire();
  if (md == NULL) return PERMIT_ECRYPTO;
  int ok = md_update_parts(md, parts, n) &&
           EVP_DigestFinal_ex(md, out, NULL) == 1;
  md_release(md);
  return ok ? 0 : PERMIT_ECRYPTO;
}

int permit_hmac_sha256_iov(const uint8_t *key, size_t keylen,
                           const permit_iov *parts, size_t n,
                           uint8_t out[PERMIT_SHA256_LEN]) {
  if ((key == NULL && keylen > 0) || (parts == NULL && n > 0) || out == NULL)
    return PERMIT_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (parts[i].base == NULL && parts[i].len > 0) return PERMIT_EINVAL;
  EVP_MD_CTX *md = md_acquire();
  if (md == NULL) return PERMIT_ECRYPTO;
  /* RFC 2104: a key longer than a block is hashed first; the key is then
   * zero-padded to a block and XORed with ipad (0x36) or opad (0x5c). */
  uint8_t pad[SHA256_BLOCK], inner[PERMIT_SHA256_LEN];
  int ok = 1;
  memset(pad, 0, sizeof pad);
  if (keylen > SHA256_BLOCK) {
    ok = EVP_DigestUpdate(md, key, keylen) == 1 &&
         EVP_DigestFinal_ex(md, pad, NULL) == 1 &&
         EVP_DigestInit_ex2(md, NULL, NULL) == 1;
  } else if (keylen > 0) {
    memcpy(pad, key, keylen);
  }
  for (size_t i = 0; i < sizeof pad; i++) pad[i] ^= 0x36;
  ok = ok && EVP_DigestUpdate(md, pad, sizeof pad) == 1 &&
       md_update_parts(md, parts, n) &&
       EVP_DigestFinal_ex(md, inner, NULL) == 1 &&
       EVP_DigestInit_ex2(md, NULL, NULL) == 1;
  for (size_t i = 0; i < sizeof pad; i++) pad[i] ^= 0x36 ^ 0x5c;
  ok = ok && EVP_DigestUpdate(md, pad, sizeof pad) == 1 &&
       EVP_DigestUpdate(md, inner, sizeof inner) == 1 &&
       EVP_DigestFinal_ex(md, out, NULL) == 1;
  permit_wipe(pad, sizeof pad);
  permit_wipe(inner, sizeof inner);
  md_release(md);
  if (!ok) {
    ERR_clear_error();
    permit_wipe(out, PERMIT_SHA256_LEN);
    return PERMIT_ECRYPTO;
  }
  return 0;
}

int permit_hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *data,
                       size_t len, uint8_t out[PERMIT_SHA256_LEN]) {
  permit_iov part = {data, len};
  return permit_hmac_sha256_iov(key, keylen, &part, 1, out);
}
