/*
 * permit/merkle.h - RFC 9162 section 2.1 Merkle trees: leaf and node
 * hashes, roots, inclusion and consistency proofs and their verifiers, and
 * the frontier that makes an append O(log n).
 *
 * Proof generation does not hold the tree: it asks a callback for the hash
 * of a perfect, aligned subtree (|level| 0 is a leaf, node |index| at
 * level L covers leaves [index << L, (index + 1) << L)).  The log module
 * answers from RocksDB; tests answer from memory.
 */
#ifndef PERMIT_MERKLE_H
#define PERMIT_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#define PERMIT_HASH_LEN 32
/* Room for any inclusion proof, and any consistency proof of a tree of up
 * to 2^63 leaves (beyond that one can need 65 hashes: generation then
 * returns PERMIT_ETOOBIG; verification accepts up to 65). */
#define PERMIT_MERKLE_MAX_PROOF 64

typedef uint8_t permit_hash[PERMIT_HASH_LEN];

/* SHA-256(0x00 || data). */
void permit_merkle_leaf_hash(const uint8_t *data, size_t len, permit_hash out);

/* SHA-256(0x01 || left || right). */
void permit_merkle_node_hash(const permit_hash left, const permit_hash right,
                             permit_hash out);

/* MTH of the empty tree: SHA-256 of the empty string. */
void permit_merkle_empty_root(permit_hash out);

/*
 * Returns the hash of the perfect subtree (|level|, |index|) in |out|, or
 * a negative PERMIT_E* code that the caller passes on.
 */
typedef int (*permit_merkle_node_fn)(void *arg, unsigned level,
                                     uint64_t index, permit_hash out);

/*
 * MTH(D[start:end]) where [start, end) is a subtree as RFC 9162 splits
 * them: |start| a multiple of the largest power of two <= end - start.
 * O(log n) callback calls.  Returns PERMIT_EINVAL for an empty or
 * misaligned range, and a callback's positive return as PERMIT_EINVAL.
 */
int permit_merkle_subtree_hash(permit_merkle_node_fn fn, void *arg,
                               uint64_t start, uint64_t end, permit_hash out);

/*
 * The inclusion proof of leaf |index| in the tree of |size| leaves
 * (RFC 9162 2.1.3.1).  |proof| must hold PERMIT_MERKLE_MAX_PROOF hashes;
 * |*proof_len| receives the count.  PERMIT_EINVAL when index >= size.
 */
int permit_merkle_inclusion_proof(permit_merkle_node_fn fn, void *arg,
                                  uint64_t index, uint64_t size,
                                  permit_hash *proof, size_t *proof_len);

/*
 * The consistency proof between sizes |size1| and |size2| (RFC 9162
 * 2.1.4.1).  PERMIT_EINVAL unless 0 < size1 <= size2.  An equal pair gives
 * an empty proof.
 */
int permit_merkle_consistency_proof(permit_merkle_node_fn fn, void *arg,
                                    uint64_t size1, uint64_t size2,
                                    permit_hash *proof, size_t *proof_len);

/*
 * Verifies an inclusion proof (RFC 9162 2.1.3.2).  Returns 0 when |proof|
 * shows that |leaf_hash| is leaf |index| of the tree of |size| leaves whose
 * root is |root|, PERMIT_EVERIFY otherwise, PERMIT_ECRYPTO when hashing
 * itself failed (out of memory), so that is never taken for a bad proof.
 */
int permit_merkle_verify_inclusion(uint64_t index, uint64_t size,
                                   const permit_hash leaf_hash,
                                   const permit_hash *proof, size_t proof_len,
                                   const permit_hash root);

/*
 * Verifies a consistency proof (RFC 9162 2.1.4.2): 0 when the tree of
 * |size2| with root |root2| extends the tree of |size1| with root |root1|,
 * PERMIT_EVERIFY otherwise (size1 > size2 included), PERMIT_ECRYPTO when
 * hashing failed.  Hashes must be 32 bytes: RFC 9162 leaves no other
 * length, so a proof of equal sizes with roots of another length is
 * refused even though transparency-dev's verifier (which compares the
 * roots as opaque bytes) accepts one.
 */
int permit_merkle_verify_consistency(uint64_t size1, uint64_t size2,
                                     const permit_hash root1,
                                     const permit_hash root2,
                                     const permit_hash *proof,
                                     size_t proof_len);

/*
 * The right edge of a tree of |size| leaves: one perfect subtree root per
 * set bit of |size|, largest first.  Enough to append and to compute the
 * root without reading the leaves.
 */
typedef struct permit_merkle_frontier {
  uint64_t size;
  unsigned count;
  permit_hash hashes[64];
} permit_merkle_frontier;

/* Called for each node an append completes (the leaf itself included). */
typedef int (*permit_merkle_emit_fn)(void *arg, unsigned level, uint64_t index,
                                     const permit_hash hash);

/* An empty frontier. */
void permit_merkle_frontier_init(permit_merkle_frontier *f);

/*
 * Loads the frontier of a tree of |size| leaves through |fn| (one call per
 * set bit of |size|).  On failure |f| is unchanged.
 */
int permit_merkle_frontier_load(permit_merkle_frontier *f, uint64_t size,
                                permit_merkle_node_fn fn, void *arg);

/*
 * Appends |leaf_hash|: calls |emit| (when not NULL) for the leaf and every
 * perfect subtree it completes, bottom up, then updates |f|.  If |emit|
 * fails, |f| is left unchanged and its code is returned.
 */
int permit_merkle_frontier_append(permit_merkle_frontier *f,
                                  const permit_hash leaf_hash,
                                  permit_merkle_emit_fn emit, void *arg);

/* The root of the tree |f| describes (the empty root for size 0). */
void permit_merkle_frontier_root(const permit_merkle_frontier *f,
                                 permit_hash out);

#endif
