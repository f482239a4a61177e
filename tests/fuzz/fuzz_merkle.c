/*
 * fuzz_merkle - the proof verifiers of permit/merkle.h, which take a
 * peer's inclusion and consistency proofs (GetInclusionProof,
 * GetConsistencyProof, permitctl proof).
 *
 * Input: mode (1) || fields, by mode % 6:
 *   0  raw inclusion:    index (8) || size (8) || leaf hash (32) ||
 *                        root (32) || proof hashes (the rest, 32 each)
 *   1  raw consistency:  size1 (8) || size2 (8) || root1 (32) ||
 *                        root2 (32) || proof hashes
 *   2  inclusion in a tree of up to 256 distinct leaves:
 *                        size (1) || index (1) || mutations
 *   3  consistency in that tree: size2 (1) || size1 (1) || mutations
 *   4  inclusion in a tree of identical leaves, of any size up to 2^64-1
 *                        (deep proofs): size (8) || index (8) || mutations
 *   5  consistency in that tree: size2 (8) || size1 (8) || mutations
 * Numbers are big-endian; missing bytes read as zeros.
 *
 * Raw modes check only that the verifiers answer 0 or PERMIT_EVERIFY.
 * The tree modes make a real proof, which must verify, then apply up to
 * four mutations of three bytes each (flip a bit of a proof hash, of the
 * leaf or first root, of the root; drop the last or first hash; append a
 * hash; swap two hashes; move to another leaf): whenever the result
 * differs from the real proof, it must be refused, except where it is
 * another true claim (one leaf whose hash is the root; equal sizes with
 * equal roots).
 */
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/merkle.h"

#define SMALL_LEVELS 9 /* 256 leaves */
#define SMALL_MAX (1u << (SMALL_LEVELS - 1))

/* Every perfect subtree of the small tree, and the one hash per level of
 * the tree whose leaves are all alike. */
static permit_hash small[SMALL_LEVELS][SMALL_MAX];
static permit_hash uniform[64];

static void trees_init(void) {
  static int done;
  if (done) return;
  for (uint32_t i = 0; i < SMALL_MAX; i++) {
    uint8_t leaf[8] = {'l', 'e', 'a', 'f', (uint8_t)(i >> 24),
                       (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};
    permit_merkle_leaf_hash(leaf, sizeof leaf, small[0][i]);
  }
  for (unsigned l = 1; l < SMALL_LEVELS; l++)
    for (uint32_t i = 0; i < SMALL_MAX >> l; i++)
      permit_merkle_node_hash(small[l - 1][2 * i], small[l - 1][2 * i + 1],
                              small[l][i]);
  permit_merkle_leaf_hash((const uint8_t *)"same", 4, uniform[0]);
  for (unsigned l = 1; l < 64; l++)
    permit_merkle_node_hash(uniform[l - 1], uniform[l - 1], uniform[l]);
  done = 1;
}

static int small_node(void *arg, unsigned level, uint64_t index,
                      permit_hash out) {
  (void)arg;
  if (level >= SMALL_LEVELS || index >= (SMALL_MAX >> level))
    return PERMIT_EINVAL;
  memcpy(out, small[level][index], PERMIT_HASH_LEN);
  return 0;
}

static int uniform_node(void *arg, unsigned level, uint64_t index,
                        permit_hash out) {
  (void)arg;
  /* A perfect subtree must lie below 2^64 leaves. */
  if (level >= 64 || index > (UINT64_MAX >> level)) return PERMIT_EINVAL;
  memcpy(out, uniform[level], PERMIT_HASH_LEN);
  return 0;
}

/* The root of the first |size| leaves, two ways that must agree. */
static void root_of(permit_merkle_node_fn fn, uint64_t size, permit_hash out) {
  permit_merkle_frontier f;
  permit_merkle_frontier_init(&f);
  FUZZ_CHECK(permit_merkle_frontier_load(&f, size, fn, NULL) == 0);
  permit_merkle_frontier_root(&f, out);
  permit_hash again;
  FUZZ_CHECK(permit_merkle_subtree_hash(fn, NULL, 0, size, again) == 0);
  FUZZ_CHECK(memcmp(out, again, PERMIT_HASH_LEN) == 0);
}

/* A proof under test: what a verifier is given. */
typedef struct claim {
  uint64_t index;   /* inclusion: the leaf; consistency: unused */
  permit_hash a, b; /* inclusion: leaf, root; consistency: root1, root2 */
  permit_hash proof[PERMIT_MERKLE_MAX_PROOF + 2];
  size_t len;
} claim;

static int same_claim(const claim *x, const claim *y) {
  return x->index == y->index && x->len == y->len &&
         memcmp(x->a, y->a, PERMIT_HASH_LEN) == 0 &&
         memcmp(x->b, y->b, PERMIT_HASH_LEN) == 0 &&
         memcmp(x->proof, y->proof, x->len * PERMIT_HASH_LEN) == 0;
}

static void flip(uint8_t *h, uint8_t bit) { h[bit >> 3] ^= 1u << (bit & 7); }

/* Applies up to four mutations; |leaves| > 0 allows moving the index. */
static void mutate(fuzz_reader *r, claim *c, uint64_t leaves) {
  for (int m = 0; m < 4 && r->left >= 3; m++) {
    uint8_t op = fuzz_u8(r), x = fuzz_u8(r), y = fuzz_u8(r);
    switch (op % 8) {
    case 0:
      if (c->len > 0) flip(c->proof[x % c->len], y);
      break;
    case 1: flip(c->a, y); break;
    case 2: flip(c->b, y); break;
    case 3:
      if (c->len > 0) c->len--;
      break;
    case 4:
      if (c->len > 0) {
        memmove(c->proof[0], c->proof[1], (c->len - 1) * PERMIT_HASH_LEN);
        c->len--;
      }
      break;
    case 5:
      if (c->len < PERMIT_MERKLE_MAX_PROOF + 2) {
        memset(c->proof[c->len], x, PERMIT_HASH_LEN);
        c->proof[c->len][0] = y;
        c->len++;
      }
      break;
    case 6:
      if (c->len > 1) {
        permit_hash t;
        size_t i = x % c->len, j = y % c->len;
        memcpy(t, c->proof[i], PERMIT_HASH_LEN);
        memcpy(c->proof[i], c->proof[j], PERMIT_HASH_LEN);
        memcpy(c->proof[j], t, PERMIT_HASH_LEN);
      }
      break;
    case 7:
      if (leaves > 0) c->index = ((uint64_t)x << 8 | y) % leaves;
      break;
    }
  }
}

static void inclusion(fuzz_reader *r, permit_merkle_node_fn fn,
                      uint64_t size, uint64_t index, int distinct) {
  claim real, c;
  memset(&real, 0, sizeof real);
  real.index = index;
  FUZZ_CHECK(fn(NULL, 0, index, real.a) == 0);
  root_of(fn, size, real.b);
  FUZZ_CHECK(permit_merkle_inclusion_proof(fn, NULL, index, size, real.proof,
                                           &real.len) == 0);
  FUZZ_CHECK(permit_merkle_verify_inclusion(index, size, real.a, real.proof,
                                            real.len, real.b) == 0);
  c = real;
  mutate(r, &c, distinct ? size : 0);
  int rc = permit_merkle_verify_inclusion(c.index, size, c.a, c.proof, c.len,
                                          c.b);
  /* In a tree of one leaf the root is the leaf hash: a leaf and a root
   * changed alike are another true claim. */
  int single = size == 1 && c.len == 0 &&
               memcmp(c.a, c.b, PERMIT_HASH_LEN) == 0;
  FUZZ_CHECK(rc == (same_claim(&c, &real) || single ? 0 : PERMIT_EVERIFY));
}

static void consistency(fuzz_reader *r, permit_merkle_node_fn fn,
                        uint64_t size1, uint64_t size2) {
  claim real, c;
  memset(&real, 0, sizeof real);
  root_of(fn, size1, real.a);
  root_of(fn, size2, real.b);
  int rc = permit_merkle_consistency_proof(fn, NULL, size1, size2, real.proof,
                                           &real.len);
  /* Past 2^63 leaves a proof may need 65 hashes, which is refused. */
  if (rc == PERMIT_ETOOBIG && size2 > (UINT64_MAX >> 1)) return;
  FUZZ_CHECK(rc == 0);
  FUZZ_CHECK(permit_merkle_verify_consistency(size1, size2, real.a, real.b,
                                              real.proof, real.len) == 0);
  c = real;
  mutate(r, &c, 0);
  rc = permit_merkle_verify_consistency(size1, size2, c.a, c.b, c.proof,
                                        c.len);
  /* Equal sizes need equal roots, whatever they are. */
  int equal = size1 == size2 && c.len == 0 &&
              memcmp(c.a, c.b, PERMIT_HASH_LEN) == 0;
  FUZZ_CHECK(rc == (same_claim(&c, &real) || equal ? 0 : PERMIT_EVERIFY));
}

static void raw(fuzz_reader *r, int consistent) {
  static permit_hash proof[256];
  uint64_t x = fuzz_u64(r), y = fuzz_u64(r);
  permit_hash a, b;
  fuzz_fill(r, a, sizeof a);
  fuzz_fill(r, b, sizeof b);
  size_t len = r->left / PERMIT_HASH_LEN;
  if (len > 256) len = 256;
  for (size_t i = 0; i < len; i++) fuzz_fill(r, proof[i], PERMIT_HASH_LEN);
  int rc = consistent
               ? permit_merkle_verify_consistency(x, y, a, b, proof, len)
               : permit_merkle_verify_inclusion(x, y, a, proof, len, b);
  FUZZ_CHECK(rc == 0 || rc == PERMIT_EVERIFY);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  trees_init();
  fuzz_reader r;
  fuzz_reader_init(&r, data, size);
  uint8_t mode = fuzz_u8(&r) % 6;
  switch (mode) {
  case 0:
  case 1: raw(&r, mode == 1); break;
  case 2: {
    uint64_t n = 1 + (uint64_t)fuzz_u8(&r);
    inclusion(&r, small_node, n, fuzz_u8(&r) % n, 1);
    break;
  }
  case 3: {
    uint64_t n2 = 1 + (uint64_t)fuzz_u8(&r);
    consistency(&r, small_node, 1 + fuzz_u8(&r) % n2, n2);
    break;
  }
  case 4: {
    uint64_t n = fuzz_u64(&r);
    if (n == 0) n = 1;
    inclusion(&r, uniform_node, n, fuzz_u64(&r) % n, 0);
    break;
  }
  case 5: {
    uint64_t n2 = fuzz_u64(&r);
    if (n2 == 0) n2 = 1;
    uint64_t n1 = fuzz_u64(&r) % n2;
    consistency(&r, uniform_node, n1 == 0 ? n2 : n1, n2);
    break;
  }
  }
  return 0;
}
