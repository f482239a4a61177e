/*
 * merkle.c - RFC 9162 section 2.1 Merkle trees.
 *
 * Nothing here holds a tree.  Proofs are assembled from perfect, aligned
 * subtree hashes that a callback supplies; a range that is not perfect is
 * the concatenation of one perfect subtree per set bit of its length
 * (largest first), so it costs at most 64 callbacks.  Verifiers only shift
 * and hash, and need no memory beyond a few hashes.
 */
#include "permit/merkle.h"

#include <string.h>

#include "permit/crypto.h"
#include "permit/error.h"
#include "permit/util.h"

/* Prefixes that keep a leaf from ever hashing like an interior node. */
static const uint8_t leaf_prefix = 0x00;
static const uint8_t node_prefix = 0x01;

static int leaf_hash(const uint8_t *data, size_t len, permit_hash out) {
  /* OpenSSL wants a non-NULL pointer even for an empty update. */
  permit_iov parts[2] = {{&leaf_prefix, 1}, {data ? data : &leaf_prefix, len}};
  return permit_sha256(parts, 2, out);
}

/* |out| may alias |left| or |right|: the digest is written at the end. */
static int node_hash(const permit_hash left, const permit_hash right,
                     permit_hash out) {
  permit_iov parts[3] = {
      {&node_prefix, 1}, {left, PERMIT_HASH_LEN}, {right, PERMIT_HASH_LEN}};
  return permit_sha256(parts, 3, out);
}

/*
 * The void entry points cannot report a failed hash (the crypto library
 * out of memory).  They then write zeros rather than leave stale bytes;
 * verifiers never rely on them, and compute their own hashes checked.
 */
void permit_merkle_leaf_hash(const uint8_t *data, size_t len, permit_hash out) {
  if (leaf_hash(data, len, out) != 0) memset(out, 0, PERMIT_HASH_LEN);
}

void permit_merkle_node_hash(const permit_hash left, const permit_hash right,
                             permit_hash out) {
  if (node_hash(left, right, out) != 0) memset(out, 0, PERMIT_HASH_LEN);
}

void permit_merkle_empty_root(permit_hash out) {
  if (permit_sha256(NULL, 0, out) != 0) memset(out, 0, PERMIT_HASH_LEN);
}

/* Largest power of two <= n, for n > 0. */
static uint64_t high_bit(uint64_t n) {
  return (uint64_t)1 << (63 - __builtin_clzll(n));
}

/* RFC 9162's k: the largest power of two strictly below n, for n >= 2. */
static uint64_t split_point(uint64_t n) { return high_bit(n - 1); }

static int bit_index(uint64_t pow2) { return __builtin_ctzll(pow2); }

/* A callback's answer, with anything but 0 treated as a failure. */
static int get_node(permit_merkle_node_fn fn, void *arg, unsigned level,
                    uint64_t index, permit_hash out) {
  int rc = fn(arg, level, index, out);
  if (rc == 0) return 0;
  return rc < 0 ? rc : PERMIT_EINVAL;
}

int permit_merkle_subtree_hash(permit_merkle_node_fn fn, void *arg,
                               uint64_t start, uint64_t end, permit_hash out) {
  if (fn == NULL || out == NULL || end <= start) return PERMIT_EINVAL;
  uint64_t n = end - start;
  /*
   * The range splits into one perfect subtree per set bit of n, largest
   * first; each is aligned exactly when the first one is.
   */
  if (start % high_bit(n) != 0) return PERMIT_EINVAL;

  /* Fold right to left: MTH = H(c1, H(c2, ... H(c_{m-1}, c_m))). */
  permit_hash acc, part;
  uint64_t pos = end;
  int first = 1;
  for (uint64_t rest = n; rest != 0; rest &= rest - 1) {
    uint64_t size = rest & (~rest + 1);
    unsigned level = (unsigned)bit_index(size);
    pos -= size;
    int rc = get_node(fn, arg, level, pos >> level, first ? acc : part);
    if (rc == 0 && !first) rc = node_hash(part, acc, acc);
    if (rc != 0) return rc;
    first = 0;
  }
  memcpy(out, acc, PERMIT_HASH_LEN);
  return 0;
}

/* Proofs are built root first; RFC 9162 lists them leaf first. */
static void reverse(permit_hash *proof, size_t n) {
  permit_hash tmp;
  for (size_t i = 0, j = n; i + 1 < j; i++, j--) {
    memcpy(tmp, proof[i], PERMIT_HASH_LEN);
    memcpy(proof[i], proof[j - 1], PERMIT_HASH_LEN);
    memcpy(proof[j - 1], tmp, PERMIT_HASH_LEN);
  }
}

int permit_merkle_inclusion_proof(permit_merkle_node_fn fn, void *arg,
                                  uint64_t index, uint64_t size,
                                  permit_hash *proof, size_t *proof_len) {
  if (fn == NULL || proof == NULL || proof_len == NULL || index >= size)
    return PERMIT_EINVAL;
  /*
   * Walk down from the root.  Going left, the sibling is the right part,
   * which may be imperfect; after that every range is perfect, so only one
   * sibling ever costs more than one callback.
   */
  uint64_t lo = 0, n = size;
  size_t len = 0;
  while (n > 1) {
    uint64_t k = split_point(n);
    /* The depth of a tree below 2^64 leaves is at most 64. */
    if (len == PERMIT_MERKLE_MAX_PROOF) return PERMIT_ETOOBIG;
    int rc;
    if (index - lo < k) {
      rc = permit_merkle_subtree_hash(fn, arg, lo + k, lo + n, proof[len]);
      n = k;
    } else {
      rc = permit_merkle_subtree_hash(fn, arg, lo, lo + k, proof[len]);
      lo += k;
      n -= k;
    }
    if (rc != 0) return rc;
    len++;
  }
  reverse(proof, len);
  *proof_len = len;
  return 0;
}

int permit_merkle_consistency_proof(permit_merkle_node_fn fn, void *arg,
                                    uint64_t size1, uint64_t size2,
                                    permit_hash *proof, size_t *proof_len) {
  if (fn == NULL || proof == NULL || proof_len == NULL || size1 == 0 ||
      size1 > size2)
    return PERMIT_EINVAL;
  /*
   * SUBPROOF(m, D[lo:lo+n], whole) of RFC 9162 2.1.4.1, unrolled.  As for
   * inclusion, at most one sibling is an imperfect range.
   */
  uint64_t lo = 0, m = size1, n = size2;
  int whole = 1;
  size_t len = 0;
  for (;;) {
    if (m == n && whole) break;
    /*
     * A proof can be one hash longer than the tree is deep (size1 = 3 in
     * a tree deeper than 63), which PERMIT_MERKLE_MAX_PROOF cannot hold.
     */
    if (len == PERMIT_MERKLE_MAX_PROOF) return PERMIT_ETOOBIG;
    int rc;
    if (m == n) {
      rc = permit_merkle_subtree_hash(fn, arg, lo, lo + n, proof[len]);
      if (rc != 0) return rc;
      len++;
      break;
    }
    uint64_t k = split_point(n);
    if (m <= k) {
      rc = permit_merkle_subtree_hash(fn, arg, lo + k, lo + n, proof[len]);
      n = k;
    } else {
      rc = permit_merkle_subtree_hash(fn, arg, lo, lo + k, proof[len]);
      lo += k;
      m -= k;
      n -= k;
      whole = 0;
    }
    if (rc != 0) return rc;
    len++;
  }
  reverse(proof, len);
  *proof_len = len;
  return 0;
}

int permit_merkle_verify_inclusion(uint64_t index, uint64_t size,
                                   const permit_hash leaf_hash,
                                   const permit_hash *proof, size_t proof_len,
                                   const permit_hash root) {
  if (leaf_hash == NULL || root == NULL || (proof == NULL && proof_len != 0))
    return PERMIT_EVERIFY;
  /* RFC 9162 2.1.3.2; a proof longer than the deepest tree cannot fit. */
  if (index >= size || proof_len > PERMIT_MERKLE_MAX_PROOF)
    return PERMIT_EVERIFY;
  uint64_t fn = index, sn = size - 1;
  permit_hash r;
  memcpy(r, leaf_hash, PERMIT_HASH_LEN);
  for (size_t i = 0; i < proof_len; i++) {
    if (sn == 0) return PERMIT_EVERIFY;
    int rc;
    if ((fn & 1) || fn == sn) {
      rc = node_hash(proof[i], r, r);
      /* Skip the levels where this node had no right sibling. */
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      rc = node_hash(r, proof[i], r);
    }
    if (rc != 0) return rc;
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0 || !permit_memeq_ct(r, root, PERMIT_HASH_LEN))
    return PERMIT_EVERIFY;
  return 0;
}

int permit_merkle_verify_consistency(uint64_t size1, uint64_t size2,
                                     const permit_hash root1,
                                     const permit_hash root2,
                                     const permit_hash *proof,
                                     size_t proof_len) {
  if (root1 == NULL || root2 == NULL || (proof == NULL && proof_len != 0))
    return PERMIT_EVERIFY;
  /* Nothing can be proved about the empty tree, nor about shrinking. */
  if (size1 == 0 || size1 > size2) return PERMIT_EVERIFY;
  if (size1 == size2) {
    if (proof_len != 0 || !permit_memeq_ct(root1, root2, PERMIT_HASH_LEN))
      return PERMIT_EVERIFY;
    return 0;
  }
  /* RFC 9162 2.1.4.2.  The longest real proof is depth + 1 <= 65 hashes. */
  if (proof_len == 0 || proof_len > PERMIT_MERKLE_MAX_PROOF + 1)
    return PERMIT_EVERIFY;

  /*
   * When size1 is a power of two its root is the first node of the path
   * and the proof leaves it out; index into the path without copying it.
   */
  int prepend = (size1 & (size1 - 1)) == 0;
  size_t path_len = proof_len + (size_t)prepend;
  uint64_t fn = size1 - 1, sn = size2 - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  permit_hash fr, sr;
  memcpy(fr, prepend ? root1 : proof[0], PERMIT_HASH_LEN);
  memcpy(sr, fr, PERMIT_HASH_LEN);
  for (size_t i = 1; i < path_len; i++) {
    const uint8_t *c = proof[i - (size_t)prepend];
    if (sn == 0) return PERMIT_EVERIFY;
    int rc;
    if ((fn & 1) || fn == sn) {
      rc = node_hash(c, fr, fr);
      if (rc == 0) rc = node_hash(c, sr, sr);
      while (!(fn & 1) && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      rc = node_hash(sr, c, sr);
    }
    if (rc != 0) return rc;
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0 || !permit_memeq_ct(fr, root1, PERMIT_HASH_LEN) ||
      !permit_memeq_ct(sr, root2, PERMIT_HASH_LEN))
    return PERMIT_EVERIFY;
  return 0;
}

void permit_merkle_frontier_init(permit_merkle_frontier *f) {
  memset(f, 0, sizeof *f);
}

int permit_merkle_frontier_load(permit_merkle_frontier *f, uint64_t size,
                                permit_merkle_node_fn fn, void *arg) {
  if (f == NULL || fn == NULL) return PERMIT_EINVAL;
  /* Filled aside so that a failed load leaves |f| as it was. */
  permit_merkle_frontier tmp;
  permit_merkle_frontier_init(&tmp);
  uint64_t pos = 0;
  for (int level = 63; level >= 0; level--) {
    uint64_t bit = (uint64_t)1 << level;
    if (!(size & bit)) continue;
    int rc =
        get_node(fn, arg, (unsigned)level, pos >> level, tmp.hashes[tmp.count]);
    if (rc != 0) return rc;
    tmp.count++;
    pos += bit;
  }
  tmp.size = size;
  *f = tmp;
  return 0;
}

int permit_merkle_frontier_append(permit_merkle_frontier *f,
                                  const permit_hash leaf_hash,
                                  permit_merkle_emit_fn emit, void *arg) {
  if (f == NULL || leaf_hash == NULL) return PERMIT_EINVAL;
  /* A frontier that disagrees with its size would send us out of bounds. */
  if (f->count != (unsigned)__builtin_popcountll(f->size)) return PERMIT_EINVAL;
  if (f->size == UINT64_MAX) return PERMIT_ETOOBIG;

  /* Each trailing one bit of size is a subtree the new leaf completes. */
  unsigned merges = (unsigned)__builtin_ctzll(~f->size);
  permit_hash h;
  memcpy(h, leaf_hash, PERMIT_HASH_LEN);
  int rc = emit ? emit(arg, 0, f->size, h) : 0;
  for (unsigned i = 0; rc == 0 && i < merges; i++) {
    rc = node_hash(f->hashes[f->count - 1 - i], h, h);
    if (rc == 0 && emit) rc = emit(arg, i + 1, f->size >> (i + 1), h);
  }
  if (rc != 0) return rc < 0 ? rc : PERMIT_EINVAL;

  f->count -= merges;
  memcpy(f->hashes[f->count], h, PERMIT_HASH_LEN);
  f->count++;
  f->size++;
  return 0;
}

void permit_merkle_frontier_root(const permit_merkle_frontier *f,
                                 permit_hash out) {
  /* A frontier that disagrees with its size has no root; see above. */
  if (f->count != (unsigned)__builtin_popcountll(f->size)) {
    memset(out, 0, PERMIT_HASH_LEN);
    return;
  }
  if (f->count == 0) {
    permit_merkle_empty_root(out);
    return;
  }
  permit_hash acc;
  memcpy(acc, f->hashes[f->count - 1], PERMIT_HASH_LEN);
  for (unsigned i = f->count - 1; i-- > 0;) {
    if (node_hash(f->hashes[i], acc, acc) != 0) {
      memset(out, 0, PERMIT_HASH_LEN);
      return;
    }
  }
  memcpy(out, acc, PERMIT_HASH_LEN);
}
