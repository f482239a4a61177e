/*
 * crypto.c - HKDF, AEAD, Ed25519 and X25519 keys, key files and the
 * pairwise pseudonym, on the algorithms hash.c fetched once.
 *
 * OpenSSL leaves a reason on its per-thread error queue whenever it
 * refuses something; the paths that fail on peer input (a bad signature,
 * a low-order point, a tag mismatch, a broken key file) clear it so that a
 * later, unrelated caller does not find stale errors there.
 *
 * OpenSSL 3.0 spends more on building a context than on many of the
 * operations themselves: each new signing, key-exchange or key-import
 * context looks its algorithm up by name in the provider tables, under a
 * lock.  So contexts are kept and reused:
 *   - a key's signing and key-exchange contexts, in a small pool inside
 *     the key (taken and given back under a mutex), freed with the key;
 *   - per thread: the AEAD contexts, the X25519 import context, and
 *     small caches of the Ed25519 public keys verified
 *     against and the X25519 public keys derived with, freed when the
 *     thread ends (or, for the thread that calls exit(), by an atexit
 *     hook).  Reused AEAD contexts are re-keyed with zeros after each
 *     message, so no message key outlives its call.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto_internal.h"
#include "permit/crypto.h"
#include "permit/util.h"

/* Far above a PEM Ed25519 or X25519 key (~120 bytes); anything larger is
 * not one of ours. */
#define KEY_FILE_MAX (16 * 1024)

/* EVP update calls take an int length; feed larger buffers in pieces. */
#define EVP_CHUNK (1 << 30)

/* Contexts a key keeps for reuse: about the threads that sign at once. */
#define POOL_MAX 8
/* Per thread: the signers one thread verifies (a node's peers, its own
 * key), and the X25519 public keys it derives with (the venues sealed
 * to).  Misses cost a rebuilt context, not a wrong answer. */
#define VERIFY_CACHE 4
#define PEER_CACHE 4

/* OpenSSL refuses NULL data pointers even for empty strings. */
static const uint8_t empty_buf[1];

/* ---- contexts kept for reuse ---- */

/* Contexts bound to one key, shared by the threads using the key. */
typedef struct ctx_pool {
  pthread_mutex_t lock;
  size_t n;
  void *ctx[POOL_MAX];
} ctx_pool;

static ctx_pool *pool_new(void) {
  ctx_pool *p = calloc(1, sizeof *p);
  if (p != NULL && pthread_mutex_init(&p->lock, NULL) != 0) {
    free(p);
    return NULL;
  }
  return p;
}

/* Frees the pool and, with |free_ctx|, every context in it. */
static void pool_free(ctx_pool *p, void (*free_ctx)(void *)) {
  if (p == NULL) return;
  for (size_t i = 0; i < p->n; i++) free_ctx(p->ctx[i]);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

/* A context from the pool, or NULL when it is empty. */
static void *pool_take(ctx_pool *p) {
  pthread_mutex_lock(&p->lock);
  void *c = p->n > 0 ? p->ctx[--p->n] : NULL;
  pthread_mutex_unlock(&p->lock);
  return c;
}

/* Gives |c| back; 0 when the pool is full and the caller must free it. */
static int pool_put(ctx_pool *p, void *c) {
  pthread_mutex_lock(&p->lock);
  int kept = p->n < POOL_MAX;
  if (kept) p->ctx[p->n++] = c;
  pthread_mutex_unlock(&p->lock);
  return kept;
}

static void md_ctx_free(void *c) { EVP_MD_CTX_free(c); }
static void pkey_ctx_free(void *c) { EVP_PKEY_CTX_free(c); }

/*
 * Whether a one-shot Ed25519 context can sign or verify twice.  OpenSSL
 * 3.0 allows it (openssl speed relies on it); later releases mark the
 * context finalised after one call.  Learnt from the first reused context:
 * one that succeeds settles WORKS; one that fails where a fresh context
 * then succeeds settles BROKEN, and contexts are no longer kept.  Until
 * then a failure on a reused context is retried on a fresh one, so an
 * answer never rests on the guess.
 */
enum { REUSE_UNKNOWN, REUSE_WORKS, REUSE_BROKEN };
static atomic_int oneshot_reuse = REUSE_UNKNOWN;

typedef struct verify_slot {
  uint8_t pub[PERMIT_ED25519_PUB_LEN];
  EVP_MD_CTX *md; /* NULL: the slot is free */
} verify_slot;

typedef struct peer_slot {
  uint8_t pub[PERMIT_X25519_LEN];
  EVP_PKEY *pkey; /* NULL: the slot is free */
} peer_slot;

/* One thread's contexts; every member may be NULL until first needed. */
typedef struct thread_state {
  EVP_CIPHER_CTX *aead[2]; /* AES-128-GCM, ChaCha20-Poly1305 */
  EVP_PKEY_CTX *x25519_fromdata;
  verify_slot verify[VERIFY_CACHE];
  peer_slot peer[PEER_CACHE];
  unsigned verify_next, peer_next; /* round-robin eviction */
} thread_state;

/* This thread's contexts, kept behind hash.c's per-thread slot (which
 * owns their lifetime); cached here to skip the call. */
static _Thread_local thread_state *thread_st;

void permit_crypto_thread_free(void *contexts) {
  thread_state *t = contexts;
  if (t == NULL) return;
  for (size_t i = 0; i < 2; i++) EVP_CIPHER_CTX_free(t->aead[i]);
  EVP_PKEY_CTX_free(t->x25519_fromdata);
  for (size_t i = 0; i < VERIFY_CACHE; i++) EVP_MD_CTX_free(t->verify[i].md);
  for (size_t i = 0; i < PEER_CACHE; i++) EVP_PKEY_free(t->peer[i].pkey);
  free(t);
  thread_st = NULL;
}

/* The calling thread's state, or NULL when it cannot be made. */
static thread_state *state_get(void) {
  if (thread_st != NULL) return thread_st;
  void **slot = permit_thread_crypto_slot();
  if (slot == NULL) return NULL;
  if (*slot == NULL) *slot = calloc(1, sizeof(thread_state));
  thread_st = *slot;
  return thread_st;
}

/* ---- HKDF, on HMAC-SHA256 (RFC 5869) ---- */

int permit_hkdf_extract(const uint8_t *salt, size_t saltlen,
                        const uint8_t *ikm, size_t ikmlen,
                        uint8_t prk[PERMIT_SHA256_LEN]) {
  if ((salt == NULL && saltlen > 0) || (ikm == NULL && ikmlen > 0) ||
      prk == NULL)
    return PERMIT_EINVAL;
  /* An absent salt is HashLen zero bytes (2.2), which HMAC pads to the
   * same block as an empty key. */
  permit_iov part = {ikm, ikmlen};
  int rc = permit_hmac_sha256_iov(salt, saltlen, &part, 1, prk);
  return rc == 0 ? 0 : PERMIT_ECRYPTO;
}

int permit_hkdf_expand(const uint8_t *prk, size_t prklen, const uint8_t *info,
                       size_t infolen, uint8_t *out, size_t outlen) {
  if (prk == NULL || prklen < PERMIT_SHA256_LEN || out == NULL ||
      outlen == 0 || outlen > PERMIT_HKDF_MAX_OUT ||
      (info == NULL && infolen > 0))
    return PERMIT_EINVAL;
  /* T(i) = HMAC(PRK, T(i-1) || info || i), T(0) empty; at most 255
   * blocks, so the counter fits its byte. */
  uint8_t t[PERMIT_SHA256_LEN], next[PERMIT_SHA256_LEN];
  size_t tlen = 0, done = 0;
  uint8_t i = 0;
  int rc = 0;
  while (rc == 0 && done < outlen) {
    i++;
    permit_iov parts[3] = {{t, tlen}, {info, infolen}, {&i, 1}};
    rc = permit_hmac_sha256_iov(prk, prklen, parts, 3, next);
    size_t n = outlen - done < sizeof t ? outlen - done : sizeof t;
    if (rc == 0) {
      memcpy(t, next, sizeof t);
      memcpy(out + done, t, n);
    }
    tlen = sizeof t;
    done += n;
  }
  permit_wipe(t, sizeof t);
  permit_wipe(next, sizeof next);
  if (rc != 0) {
    permit_wipe(out, outlen);
    return PERMIT_ECRYPTO;
  }
  return 0;
}

int permit_hkdf(const uint8_t *salt, size_t saltlen, const uint8_t *ikm,
                size_t ikmlen, const uint8_t *info, size_t infolen,
                uint8_t *out, size_t outlen) {
  /* Check the output limits before doing any work. */
  if (out == NULL || outlen == 0 || outlen > PERMIT_HKDF_MAX_OUT)
    return PERMIT_EINVAL;
  uint8_t prk[PERMIT_SHA256_LEN];
  int rc = permit_hkdf_extract(salt, saltlen, ikm, ikmlen, prk);
  if (rc == 0)
    rc = permit_hkdf_expand(prk, sizeof prk, info, infolen, out, outlen);
  permit_wipe(prk, sizeof prk);
  return rc;
}

/* ---- AEAD ---- */

size_t permit_aead_key_len(permit_aead_id aead) {
  switch (aead) {
  case PERMIT_AEAD_AES_128_GCM: return 16;
  case PERMIT_AEAD_CHACHA20_POLY1305: return 32;
  }
  return 0;
}

/*
 * The checks seal and open share, then the calling thread's context for
 * |aead|, set to its cipher but keyless.  Returns 0 with it in |*ctx|,
 * PERMIT_EINVAL for an unknown AEAD or a bad length, PERMIT_ECRYPTO when
 * the algorithms or the context are missing.
 */
static int aead_prepare(permit_aead_id aead, const uint8_t *key,
                        size_t keylen, const uint8_t *nonce, size_t noncelen,
                        const uint8_t *aad, size_t aadlen,
                        EVP_CIPHER_CTX **ctx) {
  size_t want = permit_aead_key_len(aead);
  if (want == 0 || key == NULL || keylen != want || nonce == NULL ||
      noncelen != PERMIT_AEAD_NONCE_LEN || (aad == NULL && aadlen > 0))
    return PERMIT_EINVAL;
  const permit_algs *a = permit_algs_get();
  thread_state *t = a != NULL ? state_get() : NULL;
  if (t == NULL) return PERMIT_ECRYPTO;
  size_t i = aead == PERMIT_AEAD_AES_128_GCM ? 0 : 1;
  if (t->aead[i] == NULL) {
    const EVP_CIPHER *cipher = i == 0 ? a->aes_128_gcm : a->chacha20_poly1305;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c == NULL || EVP_CipherInit_ex2(c, cipher, NULL, NULL, 1, NULL) != 1) {
      EVP_CIPHER_CTX_free(c);
      ERR_clear_error();
      return PERMIT_ECRYPTO;
    }
    t->aead[i] = c;
  }
  *ctx = t->aead[i];
  return 0;
}

/*
 * Ends a use of the thread's AEAD context |c|: re-keys it with zeros so
 * the message key does not stay in memory, or, after a failure or when
 * that fails, frees it so that the next call starts from a new one.
 */
static void aead_release(EVP_CIPHER_CTX *c, int ok) {
  static const uint8_t zero_key[32];
  if (ok && EVP_CipherInit_ex2(c, NULL, zero_key, NULL, -1, NULL) == 1)
    return;
  ERR_clear_error();
  thread_state *t = thread_st;
  for (size_t i = 0; i < 2; i++)
    if (t->aead[i] == c) t->aead[i] = NULL;
  EVP_CIPHER_CTX_free(c);
}

/* Feeds |len| bytes to the cipher; |out| NULL means the bytes are AAD. */
static int cipher_update(EVP_CIPHER_CTX *c, uint8_t *out, const uint8_t *in,
                         size_t len) {
  while (len > 0) {
    int n = len > EVP_CHUNK ? EVP_CHUNK : (int)len;
    int outl = 0;
    if (EVP_CipherUpdate(c, out, &outl, in, n) != 1) return 0;
    if (out != NULL) {
      if (outl != n) return 0;
      out += n;
    }
    in += n;
    len -= (size_t)n;
  }
  return 1;
}

int permit_aead_seal(permit_aead_id aead, const uint8_t *key, size_t keylen,
                     const uint8_t *nonce, size_t noncelen, const uint8_t *aad,
                     size_t aadlen, const uint8_t *pt, size_t ptlen,
                     uint8_t *ct) {
  if (ct == NULL || (pt == NULL && ptlen > 0) ||
      ptlen > SIZE_MAX - PERMIT_AEAD_TAG_LEN)
    return PERMIT_EINVAL;
  EVP_CIPHER_CTX *c = NULL;
  int rc = aead_prepare(aead, key, keylen, nonce, noncelen, aad, aadlen, &c);
  if (rc != 0) return rc;
  int outl = 0;
  /* The cipher stays NULL: the context's own is reused, with no lookup. */
  int ok = EVP_EncryptInit_ex2(c, NULL, key, nonce, NULL) == 1 &&
           cipher_update(c, NULL, aad, aadlen) &&
           cipher_update(c, ct, pt, ptlen) &&
           EVP_EncryptFinal_ex(c, ct + ptlen, &outl) == 1 && outl == 0 &&
           EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, PERMIT_AEAD_TAG_LEN,
                               ct + ptlen) == 1;
  aead_release(c, ok);
  if (!ok) {
    ERR_clear_error();
    permit_wipe(ct, ptlen + PERMIT_AEAD_TAG_LEN);
    return PERMIT_ECRYPTO;
  }
  return 0;
}

int permit_aead_open(permit_aead_id aead, const uint8_t *key, size_t keylen,
                     const uint8_t *nonce, size_t noncelen, const uint8_t *aad,
                     size_t aadlen, const uint8_t *ct, size_t ctlen,
                     uint8_t *pt) {
  if (ct == NULL || ctlen < PERMIT_AEAD_TAG_LEN) return PERMIT_EINVAL;
  size_t ptlen = ctlen - PERMIT_AEAD_TAG_LEN;
  if (pt == NULL && ptlen > 0) return PERMIT_EINVAL;
  EVP_CIPHER_CTX *c = NULL;
  int rc = aead_prepare(aead, key, keylen, nonce, noncelen, aad, aadlen, &c);
  if (rc != 0) return rc;
  /* Copied first: with |pt| == |ct| the decryption must not be able to
   * reach the tag, and OpenSSL's ctrl wants a writable buffer. */
  uint8_t tag[PERMIT_AEAD_TAG_LEN];
  memcpy(tag, ct + ptlen, sizeof tag);
  int ok = EVP_DecryptInit_ex2(c, NULL, key, nonce, NULL) == 1 &&
           EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, sizeof tag, tag) ==
               1 &&
           cipher_update(c, NULL, aad, aadlen) &&
           cipher_update(c, pt, ct, ptlen);
  rc = ok ? 0 : PERMIT_ECRYPTO;
  int outl = 0;
  uint8_t scratch[1];
  /* The tag is compared here; a mismatch is the peer's doing, and leaves
   * the context fit for the next message.  Nothing is written to
   * |scratch| by these stream-mode AEADs. */
  if (rc == 0 && (EVP_DecryptFinal_ex(c, scratch, &outl) != 1 || outl != 0))
    rc = PERMIT_EVERIFY;
  aead_release(c, rc != PERMIT_ECRYPTO);
  if (rc != 0) {
    ERR_clear_error();
    if (ptlen > 0) permit_wipe(pt, ptlen);
  }
  return rc;
}

/* ---- Key ids ---- */

void permit_key_id(const uint8_t *pub, size_t publen,
                   char out[PERMIT_KEY_ID_LEN]) {
  uint8_t h[PERMIT_SHA256_LEN];
  permit_iov part = {pub != NULL ? pub : empty_buf, pub != NULL ? publen : 0};
  if (permit_sha256(&part, 1, h) != 0) {
    out[0] = '\0';
    return;
  }
  permit_hex_encode(h, (PERMIT_KEY_ID_LEN - 1) / 2, out);
}

/* ---- Ed25519 ---- */

struct permit_sign_key {
  EVP_PKEY *pkey;
  ctx_pool *sign_ctxs; /* mutable behind a const key: a cache */
  uint8_t pub[PERMIT_ED25519_PUB_LEN];
  char id[PERMIT_KEY_ID_LEN];
};

/* Takes ownership of |pkey| whatever happens. */
static int sign_key_wrap(EVP_PKEY *pkey, permit_sign_key **out) {
  permit_sign_key *k = calloc(1, sizeof *k);
  ctx_pool *pool = k != NULL ? pool_new() : NULL;
  if (pool == NULL) {
    EVP_PKEY_free(pkey);
    free(k);
    return PERMIT_ENOMEM;
  }
  size_t n = sizeof k->pub;
  if (!EVP_PKEY_is_a(pkey, "ED25519") ||
      EVP_PKEY_get_raw_public_key(pkey, k->pub, &n) != 1 ||
      n != sizeof k->pub) {
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    pool_free(pool, md_ctx_free);
    free(k);
    return PERMIT_ECRYPTO;
  }
  k->pkey = pkey;
  k->sign_ctxs = pool;
  permit_key_id(k->pub, sizeof k->pub, k->id);
  *out = k;
  return 0;
}

int permit_sign_key_generate(permit_sign_key **out) {
  if (out == NULL) return PERMIT_EINVAL;
  *out = NULL;
  if (permit_crypto_init() != 0) return PERMIT_ECRYPTO;
  EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  if (pkey == NULL) {
    ERR_clear_error();
    return PERMIT_ECRYPTO;
  }
  return sign_key_wrap(pkey, out);
}

int permit_sign_key_from_seed(const uint8_t seed[PERMIT_ED25519_SEED_LEN],
                              permit_sign_key **out) {
  if (out == NULL) return PERMIT_EINVAL;
  *out = NULL;
  if (seed == NULL) return PERMIT_EINVAL;
  if (permit_crypto_init() != 0) return PERMIT_ECRYPTO;
  EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key_ex(
      NULL, "ED25519", NULL, seed, PERMIT_ED25519_SEED_LEN);
  if (pkey == NULL) {
    ERR_clear_error();
    return PERMIT_ECRYPTO;
  }
  return sign_key_wrap(pkey, out);
}

void permit_sign_key_free(permit_sign_key *key) {
  if (key == NULL) return;
  /* The contexts hold references to the key: they go first. */
  pool_free(key->sign_ctxs, md_ctx_free);
  EVP_PKEY_free(key->pkey);
  free(key);
}

EVP_PKEY *permit_sign_key_evp(const permit_sign_key *key) { return key->pkey; }

const uint8_t *permit_sign_key_public(const permit_sign_key *key) {
  return key->pub;
}

const char *permit_sign_key_id(const permit_sign_key *key) { return key->id; }

/*
 * Ed25519 is one-shot (the message is hashed twice), so a context prefix
 * cannot be streamed in: builds context || msg in |*buf| (caller frees)
 * or, without a context, points |*data| at |msg|.
 */
static int signed_bytes(const char *context, const uint8_t *msg, size_t len,
                        uint8_t **buf, const uint8_t **data, size_t *datalen) {
  *buf = NULL;
  if (msg == NULL && len > 0) return PERMIT_EINVAL;
  if (context == NULL) {
    *data = len > 0 ? msg : empty_buf;
    *datalen = len;
    return 0;
  }
  size_t clen = strlen(context);
  if (len > SIZE_MAX - clen) return PERMIT_EINVAL;
  size_t total = clen + len;
  *buf = malloc(total > 0 ? total : 1);
  if (*buf == NULL) return PERMIT_ENOMEM;
  memcpy(*buf, context, clen);
  if (len > 0) memcpy(*buf + clen, msg, len);
  *data = *buf;
  *datalen = total;
  return 0;
}

/* A context ready to sign with |pkey| or verify against it, or NULL. */
static EVP_MD_CTX *oneshot_ctx_new(EVP_PKEY *pkey, int sign) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (md == NULL) return NULL;
  int ok = sign ? EVP_DigestSignInit_ex(md, NULL, NULL, NULL, NULL, pkey,
                                        NULL)
                : EVP_DigestVerifyInit_ex(md, NULL, NULL, NULL, NULL, pkey,
                                          NULL);
  if (ok != 1) {
    EVP_MD_CTX_free(md);
    return NULL;
  }
  return md;
}

/* Records what a reused context's call taught (see oneshot_reuse):
 * |reused_ok| is whether it succeeded, |fresh_ok| whether the fresh
 * context tried after it did. */
static void oneshot_learn(int reused_ok, int fresh_ok) {
  int expected = REUSE_UNKNOWN;
  if (reused_ok)
    atomic_compare_exchange_strong(&oneshot_reuse, &expected, REUSE_WORKS);
  else if (fresh_ok)
    atomic_compare_exchange_strong(&oneshot_reuse, &expected, REUSE_BROKEN);
}

static int sign_once(EVP_MD_CTX *md, const uint8_t *data, size_t len,
                     uint8_t sig[PERMIT_ED25519_SIG_LEN]) {
  size_t siglen = PERMIT_ED25519_SIG_LEN;
  return EVP_DigestSign(md, sig, &siglen, data, len) == 1 &&
         siglen == PERMIT_ED25519_SIG_LEN;
}

int permit_sign(const permit_sign_key *key, const char *context,
                const uint8_t *msg, size_t len,
                uint8_t sig[PERMIT_ED25519_SIG_LEN]) {
  if (key == NULL || sig == NULL) return PERMIT_EINVAL;
  uint8_t *buf;
  const uint8_t *data;
  size_t datalen;
  int rc = signed_bytes(context, msg, len, &buf, &data, &datalen);
  if (rc != 0) return rc;
  int ok = 0, reused = 0;
  EVP_MD_CTX *md = atomic_load(&oneshot_reuse) != REUSE_BROKEN
                       ? pool_take(key->sign_ctxs)
                       : NULL;
  if (md != NULL) {
    reused = 1;
    ok = sign_once(md, data, datalen, sig);
    if (ok) oneshot_learn(1, 0);
    if (!ok) {
      ERR_clear_error();
      EVP_MD_CTX_free(md);
    }
  }
  if (!ok) {
    md = oneshot_ctx_new(key->pkey, 1);
    ok = md != NULL && sign_once(md, data, datalen, sig);
    if (reused) oneshot_learn(0, ok);
  }
  if (md != NULL && (!ok || atomic_load(&oneshot_reuse) == REUSE_BROKEN ||
                     !pool_put(key->sign_ctxs, md)))
    EVP_MD_CTX_free(md);
  free(buf);
  if (!ok) {
    ERR_clear_error();
    permit_wipe(sig, PERMIT_ED25519_SIG_LEN);
    return PERMIT_ECRYPTO;
  }
  return 0;
}

/*
 * A context verifying against |pub|: the thread's cached one, moved out
 * of the cache (*cached set), or a new one.  NULL with |*rc| set when the
 * key cannot be loaded (PERMIT_EVERIFY) or memory runs out.
 */
static EVP_MD_CTX *verify_ctx_get(thread_state *t,
                                  const uint8_t pub[PERMIT_ED25519_PUB_LEN],
                                  int *cached, int *rc) {
  *cached = 0;
  if (t != NULL && atomic_load(&oneshot_reuse) != REUSE_BROKEN) {
    for (size_t i = 0; i < VERIFY_CACHE; i++) {
      verify_slot *s = &t->verify[i];
      if (s->md != NULL && memcmp(s->pub, pub, sizeof s->pub) == 0) {
        EVP_MD_CTX *md = s->md;
        s->md = NULL;
        *cached = 1;
        return md;
      }
    }
  }
  /* The point is decoded, and refused if malformed, inside the verify. */
  EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, pub,
                                                  PERMIT_ED25519_PUB_LEN);
  if (pkey == NULL) {
    *rc = PERMIT_EVERIFY;
    return NULL;
  }
  /* The context holds its own reference to the key. */
  EVP_MD_CTX *md = oneshot_ctx_new(pkey, 0);
  EVP_PKEY_free(pkey);
  if (md == NULL) *rc = PERMIT_EVERIFY;
  return md;
}

/* Keeps |md|, a context verifying against |pub|, in the thread's cache. */
static void verify_ctx_keep(thread_state *t,
                            const uint8_t pub[PERMIT_ED25519_PUB_LEN],
                            EVP_MD_CTX *md) {
  if (t == NULL || atomic_load(&oneshot_reuse) == REUSE_BROKEN) {
    EVP_MD_CTX_free(md);
    return;
  }
  verify_slot *s = NULL;
  for (size_t i = 0; i < VERIFY_CACHE && s == NULL; i++)
    if (t->verify[i].md == NULL) s = &t->verify[i];
  if (s == NULL) {
    s = &t->verify[t->verify_next++ % VERIFY_CACHE];
    EVP_MD_CTX_free(s->md);
  }
  memcpy(s->pub, pub, sizeof s->pub);
  s->md = md;
}

int permit_verify(const uint8_t pub[PERMIT_ED25519_PUB_LEN],
                  const char *context, const uint8_t *msg, size_t len,
                  const uint8_t *sig, size_t siglen) {
  if (pub == NULL || sig == NULL || siglen != PERMIT_ED25519_SIG_LEN ||
      (msg == NULL && len > 0))
    return PERMIT_EVERIFY;
  if (permit_crypto_init() != 0) return PERMIT_ECRYPTO;
  uint8_t *buf;
  const uint8_t *data;
  size_t datalen;
  int rc = signed_bytes(context, msg, len, &buf, &data, &datalen);
  if (rc != 0) return rc == PERMIT_EINVAL ? PERMIT_EVERIFY : rc;
  thread_state *t = state_get();
  int cached = 0;
  EVP_MD_CTX *md = verify_ctx_get(t, pub, &cached, &rc);
  int valid = md != NULL && EVP_DigestVerify(md, sig, siglen, data,
                                             datalen) == 1;
  if (cached && valid) oneshot_learn(1, 0);
  /* A reused context's refusal is final only once reuse is known to
   * work; until then a fresh context has the last word. */
  if (cached && !valid && atomic_load(&oneshot_reuse) != REUSE_WORKS) {
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    md = verify_ctx_get(NULL, pub, &cached, &rc);
    valid = md != NULL && EVP_DigestVerify(md, sig, siglen, data,
                                           datalen) == 1;
    oneshot_learn(0, valid);
  }
  if (md != NULL) verify_ctx_keep(t, pub, md);
  free(buf);
  if (md == NULL) {
    ERR_clear_error();
    return rc;
  }
  if (!valid) {
    ERR_clear_error();
    return PERMIT_EVERIFY;
  }
  return 0;
}

/* ---- X25519 ---- */

struct permit_kx_key {
  EVP_PKEY *pkey;
  ctx_pool *derive_ctxs; /* mutable behind a const key: a cache */
  uint8_t pub[PERMIT_X25519_LEN];
};

/* Takes ownership of |pkey| whatever happens. */
static int kx_key_wrap(EVP_PKEY *pkey, permit_kx_key **out) {
  permit_kx_key *k = calloc(1, sizeof *k);
  ctx_pool *pool = k != NULL ? pool_new() : NULL;
  if (pool == NULL) {
    EVP_PKEY_free(pkey);
    free(k);
    return PERMIT_ENOMEM;
  }
  size_t n = sizeof k->pub;
  if (!EVP_PKEY_is_a(pkey, "X25519") ||
      EVP_PKEY_get_raw_public_key(pkey, k->pub, &n) != 1 ||
      n != sizeof k->pub) {
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    pool_free(pool, pkey_ctx_free);
    free(k);
    return PERMIT_ECRYPTO;
  }
  k->pkey = pkey;
  k->derive_ctxs = pool;
  *out = k;
  return 0;
}

/*
 * Imports X25519 key material through the thread's import context (no
 * lookup of the algorithm): a public key alone, or a private key whose
 * public half OpenSSL computes.  Returns the key, or NULL.
 */
static EVP_PKEY *x25519_import(thread_state *t, const uint8_t *pub,
                               const uint8_t *priv) {
  if (t->x25519_fromdata == NULL) {
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
    if (c == NULL || EVP_PKEY_fromdata_init(c) != 1) {
      EVP_PKEY_CTX_free(c);
      return NULL;
    }
    t->x25519_fromdata = c;
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(
          priv != NULL ? OSSL_PKEY_PARAM_PRIV_KEY : OSSL_PKEY_PARAM_PUB_KEY,
          (void *)(priv != NULL ? priv : pub), PERMIT_X25519_LEN),
      OSSL_PARAM_construct_end()};
  EVP_PKEY *pkey = NULL;
  if (EVP_PKEY_fromdata(t->x25519_fromdata, &pkey,
                        priv != NULL ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
                        params) != 1) {
    EVP_PKEY_free(pkey);
    return NULL;
  }
  return pkey;
}

int permit_kx_key_generate(permit_kx_key **out) {
  if (out == NULL) return PERMIT_EINVAL;
  *out = NULL;
  if (permit_crypto_init() != 0) return PERMIT_ECRYPTO;
  /* HPKE makes one per sealed message.  An X25519 private key is 32
   * random bytes (RFC 7748 6.1); drawing them from permit_random()'s pool
   * and importing them through the thread's context costs what
   * EVP_PKEY_keygen() does less its own random call and lookups. */
  thread_state *t = state_get();
  if (t == NULL) return PERMIT_ECRYPTO;
  uint8_t sk[PERMIT_X25519_LEN];
  EVP_PKEY *pkey = permit_random(sk, sizeof sk) == 0
                       ? x25519_import(t, NULL, sk)
                       : NULL;
  permit_wipe(sk, sizeof sk);
  if (pkey == NULL) {
    ERR_clear_error();
    return PERMIT_ECRYPTO;
  }
  return kx_key_wrap(pkey, out);
}

int permit_kx_key_from_private(const uint8_t sk[PERMIT_X25519_LEN],
                               permit_kx_key **out) {
  if (out == NULL) return PERMIT_EINVAL;
  *out = NULL;
  if (sk == NULL) return PERMIT_EINVAL;
  if (permit_crypto_init() != 0) return PERMIT_ECRYPTO;
  EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, sk,
                                                   PERMIT_X25519_LEN);
  if (pkey == NULL) {
    ERR_clear_error();
    return PERMIT_ECRYPTO;
  }
  return kx_key_wrap(pkey, out);
}

void permit_kx_key_free(permit_kx_key *key) {
  if (key == NULL) return;
  pool_free(key->derive_ctxs, pkey_ctx_free);
  EVP_PKEY_free(key->pkey);
  free(key);
}

const uint8_t *permit_kx_key_public(const permit_kx_key *key) {
  return key->pub;
}

int permit_kx_key_private(const permit_kx_key *key,
                          uint8_t sk[PERMIT_X25519_LEN]) {
  if (key == NULL || sk == NULL) return PERMIT_EINVAL;
  size_t n = PERMIT_X25519_LEN;
  if (EVP_PKEY_get_raw_private_key(key->pkey, sk, &n) != 1 ||
      n != PERMIT_X25519_LEN) {
    ERR_clear_error();
    permit_wipe(sk, PERMIT_X25519_LEN);
    return PERMIT_ECRYPTO;
  }
  return 0;
}

/*
 * The X25519 public key |pub| as an OpenSSL key, borrowed from the
 * thread's cache (valid until the thread's next call here), or NULL.
 */
static EVP_PKEY *peer_key_get(thread_state *t,
                              const uint8_t pub[PERMIT_X25519_LEN]) {
  for (size_t i = 0; i < PEER_CACHE; i++)
    if (t->peer[i].pkey != NULL &&
        memcmp(t->peer[i].pub, pub, PERMIT_X25519_LEN) == 0)
      return t->peer[i].pkey;
  EVP_PKEY *pkey = x25519_import(t, pub, NULL);
  if (pkey == NULL) return NULL;
  peer_slot *s = NULL;
  for (size_t i = 0; i < PEER_CACHE && s == NULL; i++)
    if (t->peer[i].pkey == NULL) s = &t->peer[i];
  if (s == NULL) {
    s = &t->peer[t->peer_next++ % PEER_CACHE];
    /* A derive context may still hold it; the reference count keeps it
     * alive there. */
    EVP_PKEY_free(s->pkey);
  }
  memcpy(s->pub, pub, PERMIT_X25519_LEN);
  s->pkey = pkey;
  return pkey;
}

int permit_kx_derive(const permit_kx_key *key,
                     const uint8_t peer_pub[PERMIT_X25519_LEN],
                     uint8_t shared[PERMIT_X25519_LEN]) {
  if (key == NULL || peer_pub == NULL || shared == NULL) return PERMIT_EINVAL;
  thread_state *t = state_get();
  EVP_PKEY *peer = t != NULL ? peer_key_get(t, peer_pub) : NULL;
  EVP_PKEY_CTX *pctx = pool_take(key->derive_ctxs);
  if (pctx == NULL) {
    pctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    if (pctx != NULL && EVP_PKEY_derive_init(pctx) != 1) {
      EVP_PKEY_CTX_free(pctx);
      pctx = NULL;
    }
  }
  size_t n = PERMIT_X25519_LEN;
  int rc = 0;
  /* No peer validation: X25519 accepts every 32-byte string, and the one
   * thing to refuse, a low-order point, shows as the zero output below. */
  if (peer == NULL || pctx == NULL ||
      EVP_PKEY_derive_set_peer_ex(pctx, peer, 0) != 1)
    rc = PERMIT_ECRYPTO;
  /* OpenSSL 3.0 fails the derive itself on the zero output, which is the
   * only way input makes it fail. */
  else if (EVP_PKEY_derive(pctx, shared, &n) != 1 || n != PERMIT_X25519_LEN)
    rc = PERMIT_EVERIFY;
  /* A context that failed is not trusted with the next call. */
  if (pctx != NULL && (rc != 0 || !pool_put(key->derive_ctxs, pctx)))
    EVP_PKEY_CTX_free(pctx);
  if (rc == 0) {
    /* Our own check, in constant time, so the policy does not rest on a
     * library detail. */
    uint8_t acc = 0;
    for (size_t i = 0; i < PERMIT_X25519_LEN; i++) acc |= shared[i];
    if (acc == 0) rc = PERMIT_EVERIFY;
  }
  if (rc != 0) {
    ERR_clear_error();
    permit_wipe(shared, PERMIT_X25519_LEN);
  }
  return rc;
}

/* ---- Key files ---- */

/* Fsyncs the directory holding |path| so that the new name is durable. */
static int sync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (slash == NULL)
    dir = strdup(".");
  else if (slash == path)
    dir = strdup("/");
  else
    dir = strndup(path, (size_t)(slash - path));
  if (dir == NULL) return -1;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return -1;
  int r = fsync(fd);
  int saved = errno;
  close(fd);
  errno = saved;
  return r;
}

static int write_all(int fd, const char *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int key_file_write(EVP_PKEY *pkey, const char *path, const char *what,
                          permit_err *err) {
  if (path == NULL || path[0] == '\0')
    return permit_err_set(err, PERMIT_EINVAL, "%s key file: empty path", what);
  /* The secure-memory BIO clears its buffer when freed. */
  BIO *bio = BIO_new(BIO_s_secmem());
  char *pem = NULL;
  long pemlen = 0;
  if (bio == NULL ||
      PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
      (pemlen = BIO_get_mem_data(bio, &pem)) <= 0) {
    BIO_free(bio);
    ERR_clear_error();
    return permit_err_set(err, PERMIT_ECRYPTO,
                          "%s key file %s: cannot encode the key", what, path);
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY,
                0600);
  if (fd < 0) {
    int e = errno;
    BIO_free(bio);
    if (e == EEXIST)
      return permit_err_set(err, PERMIT_EEXIST,
                            "%s key file %s already exists; not overwriting",
                            what, path);
    return permit_err_set(err, e == EACCES ? PERMIT_EPERM : PERMIT_EIO,
                          "%s key file %s: cannot create: %s", what, path,
                          strerror(e));
  }
  int rc = 0, e = 0;
  const char *step = NULL;
  if (write_all(fd, pem, (size_t)pemlen) != 0) {
    e = errno;
    step = "write";
  } else if (fsync(fd) != 0) {
    e = errno;
    step = "fsync";
  }
  if (close(fd) != 0 && e == 0) {
    e = errno;
    step = "close";
  }
  if (e == 0 && sync_parent_dir(path) != 0) {
    e = errno;
    step = "fsync the directory of";
  }
  BIO_free(bio);
  if (e != 0) {
    /* A half-written key must not be mistaken for a key later. */
    unlink(path);
    rc = permit_err_set(err, PERMIT_EIO, "%s key file %s: cannot %s it: %s",
                        what, path, step, strerror(e));
  }
  return rc;
}

/* Never prompt on a terminal for an encrypted key: ours are not. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf, (void)size, (void)rwflag, (void)u;
  return -1;
}

/*
 * Reads the PEM private key at |path| into |*out| after checking that only
 * the owner can read it.  |type| is OpenSSL's name ("ED25519").
 */
static int key_file_read(const char *path, const char *type, const char *what,
                         EVP_PKEY **out, permit_err *err) {
  *out = NULL;
  if (path == NULL || path[0] == '\0')
    return permit_err_set(err, PERMIT_EINVAL, "%s key file: empty path", what);
  /* O_NONBLOCK so that a FIFO put in the key's place cannot hang us
   * before the regular-file check below. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT)
      return permit_err_set(err, PERMIT_ENOTFOUND,
                            "%s key file %s does not exist", what, path);
    return permit_err_set(err, e == EACCES ? PERMIT_EPERM : PERMIT_EIO,
                          "%s key file %s: cannot open: %s", what, path,
                          strerror(e));
  }
  /* fstat of the open file, so the mode checked is that of what is read. */
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return permit_err_set(err, PERMIT_EIO, "%s key file %s: cannot stat: %s",
                          what, path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return permit_err_set(err, PERMIT_EINVAL,
                          "%s key file %s is not a regular file", what, path);
  }
  if ((st.st_mode & 077) != 0) {
    close(fd);
    return permit_err_set(
        err, PERMIT_EPERM,
        "%s key file %s has mode %04o; group and others must have no "
        "access (chmod 600 %s)",
        what, path, (unsigned)(st.st_mode & 07777), path);
  }
  if (st.st_size > KEY_FILE_MAX) {
    close(fd);
    return permit_err_set(err, PERMIT_EINVAL,
                          "%s key file %s is %lld bytes, too large for a key",
                          what, path, (long long)st.st_size);
  }
  /* Read to EOF, not just st_size bytes, in case the file grew. */
  uint8_t *buf = malloc(KEY_FILE_MAX + 1);
  if (buf == NULL) {
    close(fd);
    return permit_err_set(err, PERMIT_ENOMEM, "%s key file %s: out of memory",
                          what, path);
  }
  size_t len = 0;
  int e = 0;
  while (len <= KEY_FILE_MAX) {
    ssize_t n = read(fd, buf + len, KEY_FILE_MAX + 1 - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      e = errno;
      break;
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  close(fd);
  int rc = 0;
  if (e != 0) {
    rc = permit_err_set(err, PERMIT_EIO, "%s key file %s: cannot read: %s",
                        what, path, strerror(e));
  } else if (len > KEY_FILE_MAX) {
    rc = permit_err_set(err, PERMIT_EINVAL,
                        "%s key file %s is too large for a key", what, path);
  } else {
    BIO *bio = BIO_new_mem_buf(buf, (int)len);
    EVP_PKEY *pkey =
        bio != NULL ? PEM_read_bio_PrivateKey_ex(bio, NULL, no_passphrase,
                                                 NULL, NULL, NULL)
                    : NULL;
    BIO_free(bio);
    ERR_clear_error();
    if (pkey == NULL) {
      rc = permit_err_set(err, PERMIT_EINVAL,
                          "%s key file %s does not hold a PEM private key",
                          what, path);
    } else if (!EVP_PKEY_is_a(pkey, type)) {
      rc = permit_err_set(err, PERMIT_EINVAL,
                          "%s key file %s holds a %s key, not %s", what, path,
                          EVP_PKEY_get0_type_name(pkey), type);
      EVP_PKEY_free(pkey);
    } else {
      *out = pkey;
    }
  }
  permit_wipe(buf, len);
  free(buf);
  return rc;
}

int permit_sign_key_save(const permit_sign_key *key, const char *path,
                         permit_err *err) {
  if (key == NULL)
    return permit_err_set(err, PERMIT_EINVAL, "identity key file: no key");
  return key_file_write(key->pkey, path, "identity", err);
}

int permit_kx_key_save(const permit_kx_key *key, const char *path,
                       permit_err *err) {
  if (key == NULL)
    return permit_err_set(err, PERMIT_EINVAL, "sealing key file: no key");
  return key_file_write(key->pkey, path, "sealing", err);
}

int permit_sign_key_load(const char *path, permit_sign_key **out,
                         permit_err *err) {
  if (out == NULL)
    return permit_err_set(err, PERMIT_EINVAL, "identity key file: no output");
  *out = NULL;
  EVP_PKEY *pkey;
  int rc = key_file_read(path, "ED25519", "identity", &pkey, err);
  if (rc != 0) return rc;
  rc = sign_key_wrap(pkey, out);
  if (rc != 0)
    return permit_err_set(err, rc, "identity key file %s: %s", path,
                          permit_strerror(rc));
  return 0;
}

int permit_kx_key_load(const char *path, permit_kx_key **out,
                       permit_err *err) {
  if (out == NULL)
    return permit_err_set(err, PERMIT_EINVAL, "sealing key file: no output");
  *out = NULL;
  EVP_PKEY *pkey;
  int rc = key_file_read(path, "X25519", "sealing", &pkey, err);
  if (rc != 0) return rc;
  rc = kx_key_wrap(pkey, out);
  if (rc != 0)
    return permit_err_set(err, rc, "sealing key file %s: %s", path,
                          permit_strerror(rc));
  return 0;
}

/* ---- Pairwise pseudonyms ---- */

int permit_pair_key(const permit_kx_key *own,
                    const uint8_t peer_pub[PERMIT_X25519_LEN],
                    const char *issuer, const char *audience,
                    uint8_t pair_key[PERMIT_SHA256_LEN]) {
  static const char label[] = "permit/v1/pair\n";
  if (own == NULL || peer_pub == NULL || issuer == NULL || audience == NULL ||
      pair_key == NULL)
    return PERMIT_EINVAL;
  size_t llen = sizeof label - 1, ilen = strlen(issuer),
         alen = strlen(audience);
  if (alen > SIZE_MAX - llen - 1 || ilen > SIZE_MAX - llen - 1 - alen)
    return PERMIT_EINVAL;
  size_t infolen = llen + ilen + 1 + alen;
  uint8_t *info = malloc(infolen);
  if (info == NULL) return PERMIT_ENOMEM;
  memcpy(info, label, llen);
  memcpy(info + llen, issuer, ilen);
  info[llen + ilen] = '\n';
  memcpy(info + llen + ilen + 1, audience, alen);
  uint8_t shared[PERMIT_X25519_LEN];
  int rc = permit_kx_derive(own, peer_pub, shared);
  if (rc == 0)
    rc = permit_hkdf(NULL, 0, shared, sizeof shared, info, infolen, pair_key,
                     PERMIT_SHA256_LEN);
  permit_wipe(shared, sizeof shared);
  free(info);
  return rc;
}

static int is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
         c == '\r';
}

int permit_email_normalize(const char *email, size_t len, char *out,
                           size_t cap) {
  if (email == NULL || out == NULL) return PERMIT_EINVAL;
  size_t start = 0, end = len;
  while (start < end && is_ascii_space(email[start])) start++;
  while (end > start && is_ascii_space(email[end - 1])) end--;
  size_t n = end - start;
  if (n == 0) return PERMIT_EINVAL;
  /* A NUL inside would make two different inputs print alike. */
  if (memchr(email + start, '\0', n) != NULL) return PERMIT_EINVAL;
  if (cap <= n) return PERMIT_ETOOBIG;
  for (size_t i = 0; i < n; i++) {
    char c = email[start + i];
    out[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
  }
  out[n] = '\0';
  return 0;
}

int permit_subject(const uint8_t pair_key[PERMIT_SHA256_LEN], const char *email,
                   size_t len, uint8_t subject[PERMIT_SHA256_LEN]) {
  if (pair_key == NULL || email == NULL || subject == NULL ||
      len == SIZE_MAX)
    return PERMIT_EINVAL;
  char *norm = malloc(len + 1);
  if (norm == NULL) return PERMIT_ENOMEM;
  int rc = permit_email_normalize(email, len, norm, len + 1);
  if (rc == 0)
    rc = permit_hmac_sha256(pair_key, PERMIT_SHA256_LEN, (const uint8_t *)norm,
                            strlen(norm), subject);
  /* The address is personal data; do not leave it on the heap. */
  permit_wipe(norm, len + 1);
  free(norm);
  return rc;
}
