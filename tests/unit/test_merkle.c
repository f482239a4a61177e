/*
 * test_merkle.c - RFC 9162 trees: the transparency-dev known-answer
 * vectors, every proof of every tree up to 70 leaves against a literal
 * transcription of the RFC's recursive definitions, the frontier, and the
 * callback cost of proofs in a large tree.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "permit/crypto.h"
#include "permit/error.h"
#include "permit/merkle.h"
#include "permit/util.h"
#include "testlib.h"

/* find tests/vectors/merkle/<kind> -name '*.json' | wc -l */
#define INCLUSION_FILES 98
#define CONSISTENCY_FILES 98

#define MAXN 70
#define LEVELS 8 /* 2^6 <= MAXN < 2^7 */
#define MAXPROOF (PERMIT_MERKLE_MAX_PROOF + 1)
/* Reference roots reach past MAXN for the changed-size checks. */
#define REFN (2 * MAXN + 3)

/* ---- Reference: RFC 9162 2.1, transcribed as literally as possible ---- */

static void ref_sha256(const void *a, size_t alen, const void *b, size_t blen,
                       const void *c, size_t clen, permit_hash out) {
  permit_iov parts[3] = {{a, alen}, {b, blen}, {c, clen}};
  CHECK(permit_sha256(parts, 3, out) == 0);
}

static void ref_leaf(const uint8_t *data, size_t len, permit_hash out) {
  static const uint8_t zero = 0x00;
  ref_sha256(&zero, 1, data, len, NULL, 0, out);
}

static void ref_node(const permit_hash l, const permit_hash r,
                     permit_hash out) {
  static const uint8_t one = 0x01;
  ref_sha256(&one, 1, l, PERMIT_HASH_LEN, r, PERMIT_HASH_LEN, out);
}

static uint64_t ref_split(uint64_t n) {
  uint64_t k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/* MTH(D[0:n]) over leaf hashes |d|. */
static void ref_mth(const permit_hash *d, uint64_t n, permit_hash out) {
  if (n == 0) {
    ref_sha256(NULL, 0, NULL, 0, NULL, 0, out);
  } else if (n == 1) {
    memcpy(out, d[0], PERMIT_HASH_LEN);
  } else {
    uint64_t k = ref_split(n);
    permit_hash l, r;
    ref_mth(d, k, l);
    ref_mth(d + k, n - k, r);
    ref_node(l, r, out);
  }
}

/* PATH(m, D[0:n]), 2.1.3.1. */
static void ref_path(uint64_t m, const permit_hash *d, uint64_t n,
                     permit_hash *out, size_t *len) {
  if (n <= 1) return;
  uint64_t k = ref_split(n);
  if (m < k) {
    ref_path(m, d, k, out, len);
    ref_mth(d + k, n - k, out[(*len)++]);
  } else {
    ref_path(m - k, d + k, n - k, out, len);
    ref_mth(d, k, out[(*len)++]);
  }
}

/* SUBPROOF(m, D[0:n], b), 2.1.4.1. */
static void ref_subproof(uint64_t m, const permit_hash *d, uint64_t n, int b,
                         permit_hash *out, size_t *len) {
  if (m == n) {
    if (!b) ref_mth(d, n, out[(*len)++]);
    return;
  }
  uint64_t k = ref_split(n);
  if (m <= k) {
    ref_subproof(m, d, k, b, out, len);
    ref_mth(d + k, n - k, out[(*len)++]);
  } else {
    ref_subproof(m - k, d + k, n - k, 0, out, len);
    ref_mth(d, k, out[(*len)++]);
  }
}

/* ---- An in-memory tree fed by frontier appends ---- */

typedef struct mem_tree {
  uint64_t limit; /* the tree size a proof is for: nodes past it refused */
  permit_hash node[LEVELS][MAXN];
  int have[LEVELS][MAXN];
  uint64_t leaves;     /* leaves emitted so far */
  unsigned last_level; /* of the last emitted node */
  long calls;          /* node_fn calls */
  long fail_at;        /* fail that call (1-based), 0 never */
  int stray;           /* requests for nodes outside the tree */
  int emit_errors;     /* emits out of order, twice or out of range */
} mem_tree;

static int mem_node(void *arg, unsigned level, uint64_t index,
                    permit_hash out) {
  mem_tree *t = arg;
  t->calls++;
  if (t->fail_at != 0 && t->calls == t->fail_at) return PERMIT_EIO;
  if (level >= LEVELS || index >= (t->limit >> level) || index >= MAXN ||
      !t->have[level][index]) {
    t->stray++;
    return PERMIT_ENOTFOUND;
  }
  memcpy(out, t->node[level][index], PERMIT_HASH_LEN);
  return 0;
}

static int mem_emit(void *arg, unsigned level, uint64_t index,
                    const permit_hash hash) {
  mem_tree *t = arg;
  /* Bottom up: the leaf, then each completed parent of the new leaf. */
  int ok = level < LEVELS && index < MAXN && !t->have[level][index];
  if (level == 0)
    ok = ok && index == t->leaves;
  else
    ok = ok && level == t->last_level + 1 &&
         index == (t->leaves - 1) >> level &&
         ((t->leaves >> level) << level) == t->leaves;
  if (!ok) {
    t->emit_errors++;
    return PERMIT_EINVAL;
  }
  if (level == 0) t->leaves++;
  t->last_level = level;
  memcpy(t->node[level][index], hash, PERMIT_HASH_LEN);
  t->have[level][index] = 1;
  return 0;
}

typedef struct fail_emit {
  int calls, fail_at;
} fail_emit;

static int failing_emit(void *arg, unsigned level, uint64_t index,
                        const permit_hash hash) {
  (void)level, (void)index, (void)hash;
  fail_emit *e = arg;
  return ++e->calls == e->fail_at ? PERMIT_EIO : 0;
}

static int same_frontier(const permit_merkle_frontier *a,
                         const permit_merkle_frontier *b) {
  return a->size == b->size && a->count == b->count && a->count <= 64 &&
         memcmp(a->hashes, b->hashes, a->count * sizeof a->hashes[0]) == 0;
}

/* Verifiers get exactly |len| heap hashes, so ASan sees any over-read. */
static int verify_incl(uint64_t index, uint64_t size, const permit_hash leaf,
                       const permit_hash *proof, size_t len,
                       const permit_hash root) {
  permit_hash *copy = len ? malloc(len * sizeof *copy) : NULL;
  if (len) memcpy(copy, proof, len * sizeof *copy);
  int rc = permit_merkle_verify_inclusion(index, size, leaf,
                                          (const permit_hash *)copy, len, root);
  free(copy);
  return rc;
}

static int verify_cons(uint64_t size1, uint64_t size2, const permit_hash root1,
                       const permit_hash root2, const permit_hash *proof,
                       size_t len) {
  permit_hash *copy = len ? malloc(len * sizeof *copy) : NULL;
  if (len) memcpy(copy, proof, len * sizeof *copy);
  int rc = permit_merkle_verify_consistency(size1, size2, root1, root2,
                                            (const permit_hash *)copy, len);
  free(copy);
  return rc;
}

/* Appends |n| leaf hashes to |t| through a frontier, keeping a snapshot of
 * the frontier at every size in |snap| (n + 1 entries) when not NULL. */
static void build(mem_tree *t, const permit_hash *leaves, uint64_t n,
                  permit_merkle_frontier *snap) {
  memset(t, 0, sizeof *t);
  permit_merkle_frontier f;
  permit_merkle_frontier_init(&f);
  if (snap) snap[0] = f;
  for (uint64_t i = 0; i < n; i++) {
    CHECK(permit_merkle_frontier_append(&f, leaves[i], mem_emit, t) == 0);
    permit_hash got, want;
    permit_merkle_frontier_root(&f, got);
    ref_mth(leaves, i + 1, want);
    CHECKF(f.size == i + 1 && memcmp(got, want, PERMIT_HASH_LEN) == 0,
           "frontier root at size %llu", (unsigned long long)(i + 1));
    if (snap) snap[i + 1] = f;
  }
  CHECK(t->emit_errors == 0);
}

/* ---- (a) The transparency-dev vectors ---- */

/* The leaves the vectors' trees were built from (RFC 6962 test data). */
static const char *const rfc_leaf_hex[8] = {
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
};

typedef struct vec_state {
  int inclusion, consistency;             /* files checked */
  int inclusion_exact, consistency_exact; /* proofs regenerated */
  int malformed_ok; /* wantErr false, yet a hash of the wrong length */
  permit_hash rfc_leaves[8];
  mem_tree rfc;
} vec_state;

static char *read_text(const char *path) {
  FILE *fp = fopen(path, "rb");
  if (fp == NULL) return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + len, 1, cap - len - 1, fp)) > 0) {
    len += got;
    if (len + 1 == cap) {
      char *bigger = realloc(buf, cap *= 2);
      if (bigger == NULL) free(buf);
      buf = bigger;
    }
  }
  fclose(fp);
  if (buf) buf[len] = '\0';
  return buf;
}

/*
 * Jansson's integers are signed 64-bit, and the vectors hold 2^64 - 1, so
 * the JSON is parsed with integers as reals and each size read exactly
 * from the text, then checked against the parsed (rounded) value.
 */
static int get_u64(const char *text, json_t *j, const char *key,
                   uint64_t *out) {
  char quoted[64];
  snprintf(quoted, sizeof quoted, "\"%s\"", key);
  const char *p = strstr(text, quoted);
  if (p == NULL) return -1;
  p += strlen(quoted);
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  if (*p++ != ':') return -1;
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  if (*p < '0' || *p > '9') return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(p, &end, 10);
  if (errno != 0) return -1;
  json_t *num = json_object_get(j, key);
  if (!json_is_number(num) || json_number_value(num) != (double)v) return -1;
  *out = v;
  return 0;
}

/* A hash value: 0 when it is a string of exactly 32 base64 bytes. */
static int get_hash(json_t *value, permit_hash out) {
  size_t len;
  uint8_t *b = test_b64(value, &len);
  int ok = len == PERMIT_HASH_LEN;
  if (ok) memcpy(out, b, PERMIT_HASH_LEN);
  free(b);
  return ok ? 0 : -1;
}

/* The proof member: null or an array; -1 when any hash is malformed. */
static int get_proof(json_t *j, permit_hash **proof, size_t *len) {
  json_t *arr = json_object_get(j, "proof");
  *proof = NULL;
  *len = 0;
  if (json_is_null(arr)) return 0;
  if (!json_is_array(arr)) return -1;
  size_t n = json_array_size(arr);
  *proof = calloc(n ? n : 1, sizeof **proof);
  int bad = 0;
  for (size_t i = 0; i < n; i++)
    if (get_hash(json_array_get(arr, i), (*proof)[i]) != 0) bad = 1;
  *len = n;
  return bad ? -1 : 0;
}

/* A happy path built from the RFC 6962 leaves: regenerate its proof. */
static void compare_inclusion(vec_state *s, const char *rel, uint64_t index,
                              uint64_t size, const permit_hash leaf,
                              const permit_hash root, const permit_hash *proof,
                              size_t len) {
  permit_hash want_root;
  if (size > 8 || index >= size) return;
  ref_mth(s->rfc_leaves, size, want_root);
  if (memcmp(leaf, s->rfc_leaves[index], PERMIT_HASH_LEN) != 0 ||
      memcmp(root, want_root, PERMIT_HASH_LEN) != 0)
    return;
  permit_hash got[MAXPROOF];
  size_t got_len = 0;
  s->rfc.limit = size;
  CHECK(permit_merkle_inclusion_proof(mem_node, &s->rfc, index, size, got,
                                      &got_len) == 0);
  CHECKF(got_len == len &&
             (len == 0 || memcmp(got, proof, len * sizeof *got) == 0),
         "generated proof differs from %s", rel);
  s->inclusion_exact++;
}

static void compare_consistency(vec_state *s, const char *rel, uint64_t size1,
                                uint64_t size2, const permit_hash root1,
                                const permit_hash root2,
                                const permit_hash *proof, size_t len) {
  permit_hash want1, want2;
  if (size2 > 8 || size1 == 0 || size1 > size2) return;
  ref_mth(s->rfc_leaves, size1, want1);
  ref_mth(s->rfc_leaves, size2, want2);
  if (memcmp(root1, want1, PERMIT_HASH_LEN) != 0 ||
      memcmp(root2, want2, PERMIT_HASH_LEN) != 0)
    return;
  permit_hash got[MAXPROOF];
  size_t got_len = 0;
  s->rfc.limit = size2;
  CHECK(permit_merkle_consistency_proof(mem_node, &s->rfc, size1, size2, got,
                                        &got_len) == 0);
  CHECKF(got_len == len &&
             (len == 0 || memcmp(got, proof, len * sizeof *got) == 0),
         "generated proof differs from %s", rel);
  s->consistency_exact++;
}

static void check_vector(vec_state *s, const char *rel, int inclusion) {
  char *text = read_text(test_vector_path(rel));
  CHECKF(text != NULL, "cannot read %s", rel);
  if (text == NULL) return;
  json_error_t e;
  json_t *j = json_loads(text, JSON_DECODE_INT_AS_REAL, &e);
  CHECKF(j != NULL, "%s: %s", rel, j ? "" : e.text);
  if (j == NULL) {
    free(text);
    return;
  }
  json_t *want = json_object_get(j, "wantErr");
  CHECKF(json_is_boolean(want), "%s has no wantErr", rel);
  int want_err = json_is_true(want);

  permit_hash *proof;
  size_t len;
  int bad = get_proof(j, &proof, &len);
  int rc;
  if (inclusion) {
    uint64_t index = 0, size = 0;
    permit_hash root, leaf;
    CHECKF(get_u64(text, j, "leafIdx", &index) == 0 &&
               get_u64(text, j, "treeSize", &size) == 0,
           "%s: sizes", rel);
    bad |= get_hash(json_object_get(j, "root"), root);
    bad |= get_hash(json_object_get(j, "leafHash"), leaf);
    rc = bad ? PERMIT_EVERIFY
             : verify_incl(index, size, leaf, (const permit_hash *)proof, len,
                           root);
    if (rc == 0 && !want_err)
      compare_inclusion(s, rel, index, size, leaf, root,
                        (const permit_hash *)proof, len);
    s->inclusion++;
  } else {
    uint64_t size1 = 0, size2 = 0;
    permit_hash root1, root2;
    CHECKF(get_u64(text, j, "size1", &size1) == 0 &&
               get_u64(text, j, "size2", &size2) == 0,
           "%s: sizes", rel);
    bad |= get_hash(json_object_get(j, "root1"), root1);
    bad |= get_hash(json_object_get(j, "root2"), root2);
    rc = bad ? PERMIT_EVERIFY
             : verify_cons(size1, size2, root1, root2,
                           (const permit_hash *)proof, len);
    if (rc == 0 && !want_err)
      compare_consistency(s, rel, size1, size2, root1, root2,
                          (const permit_hash *)proof, len);
    s->consistency++;
  }
  CHECKF(rc == 0 || rc == PERMIT_EVERIFY, "%s: rc %d", rel, rc);
  /*
   * A hash of the wrong length cannot even be passed to a verifier, so it
   * is an error.  Upstream accepts one such file (equal sizes, equal
   * 12-byte roots, compared as byte strings); it is counted, not hidden.
   */
  if (bad && !want_err) {
    printf(
        "merkle vectors: %s: wantErr false, but a hash is not 32 bytes: "
        "rejected\n",
        rel);
    s->malformed_ok++;
  }
  CHECKF((rc != 0) == (want_err || bad), "%s: wantErr %d, verification rc %d",
         rel, want_err, rc);
  free(proof);
  json_decref(j);
  free(text);
}

/* Every .json file under tests/vectors/<rel>, recursively. */
static void walk(vec_state *s, const char *rel, int inclusion) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", test_vector_path(rel));
  DIR *d = opendir(dir);
  CHECKF(d != NULL, "cannot open %s", dir);
  if (d == NULL) return;
  struct dirent *ent;
  while ((ent = readdir(d)) != NULL) {
    if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
      continue;
    char child[4096], full[8192];
    snprintf(child, sizeof child, "%s/%s", rel, ent->d_name);
    snprintf(full, sizeof full, "%s/%s", dir, ent->d_name);
    struct stat st;
    if (stat(full, &st) != 0) continue;
    size_t n = strlen(ent->d_name);
    if (S_ISDIR(st.st_mode))
      walk(s, child, inclusion);
    else if (n > 5 && strcmp(ent->d_name + n - 5, ".json") == 0)
      check_vector(s, child, inclusion);
  }
  closedir(d);
}

static void test_vectors(void) {
  static vec_state s;
  for (int i = 0; i < 8; i++) {
    const char *hex = rfc_leaf_hex[i];
    uint8_t data[16];
    size_t len;
    CHECK(permit_hex_decode(hex, strlen(hex), data, sizeof data, &len) == 0);
    ref_leaf(data, len, s.rfc_leaves[i]);
  }
  build(&s.rfc, s.rfc_leaves, 8, NULL);

  walk(&s, "merkle/inclusion", 1);
  walk(&s, "merkle/consistency", 0);
  printf(
      "merkle vectors: %d inclusion files, %d consistency files; "
      "%d + %d happy-path proofs regenerated exactly\n",
      s.inclusion, s.consistency, s.inclusion_exact, s.consistency_exact);
  CHECK(s.inclusion == INCLUSION_FILES);
  CHECK(s.consistency == CONSISTENCY_FILES);
  /* Happy paths in inclusion/0..4 and consistency/0..4. */
  CHECK(s.inclusion_exact == 5);
  CHECK(s.consistency_exact == 5);
  /* consistency/additional/sizes-are-equal-one-and-proof-is-empty.json */
  CHECK(s.malformed_ok == 1);
}

/* ---- (b) Every proof of every tree up to MAXN leaves ---- */

static void flip(permit_hash *h, size_t byte) {
  h[0][byte] ^= (uint8_t)(1u << (byte % 8));
}

static void check_hash_primitives(void) {
  static const char empty_hex[] =
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  uint8_t want[32];
  size_t len;
  permit_hash got, ref;
  CHECK(permit_hex_decode(empty_hex, 64, want, sizeof want, &len) == 0);
  permit_merkle_empty_root(got);
  CHECK(memcmp(got, want, 32) == 0);

  static const uint8_t data[] = "consent";
  permit_merkle_leaf_hash(data, 7, got);
  ref_leaf(data, 7, ref);
  CHECK(memcmp(got, ref, 32) == 0);
  permit_merkle_leaf_hash(NULL, 0, got);
  ref_leaf(NULL, 0, ref);
  CHECK(memcmp(got, ref, 32) == 0);

  permit_hash l, r;
  memset(l, 0xaa, 32);
  memset(r, 0x55, 32);
  permit_merkle_node_hash(l, r, got);
  ref_node(l, r, ref);
  CHECK(memcmp(got, ref, 32) == 0);
  permit_merkle_node_hash(l, r, l); /* output over an input */
  CHECK(memcmp(l, ref, 32) == 0);
}

static void check_subtrees(mem_tree *t, const permit_hash *leaves) {
  t->limit = MAXN;
  permit_hash got, want;
  int aligned = 0;
  for (uint64_t s = 0; s <= MAXN; s++) {
    for (uint64_t e = 0; e <= MAXN; e++) {
      t->calls = 0;
      t->stray = 0;
      int rc = permit_merkle_subtree_hash(mem_node, t, s, e, got);
      if (e <= s) {
        CHECKF(rc == PERMIT_EINVAL, "empty subtree [%llu,%llu)",
               (unsigned long long)s, (unsigned long long)e);
        continue;
      }
      uint64_t n = e - s, hb = 1;
      while (hb * 2 <= n) hb *= 2;
      if (s % hb != 0) {
        CHECKF(rc == PERMIT_EINVAL && t->calls == 0, "misaligned [%llu,%llu)",
               (unsigned long long)s, (unsigned long long)e);
        continue;
      }
      aligned++;
      ref_mth(leaves + s, n, want);
      CHECKF(rc == 0 && memcmp(got, want, 32) == 0 && t->stray == 0 &&
                 t->calls == __builtin_popcountll(n),
             "subtree [%llu,%llu)", (unsigned long long)s,
             (unsigned long long)e);
    }
  }
  CHECK(aligned > MAXN);
}

static void check_inclusion(mem_tree *t, const permit_hash *leaves,
                            const permit_hash *roots, uint64_t size,
                            uint64_t index) {
  permit_hash proof[MAXPROOF + 2], want[MAXPROOF], m[MAXPROOF + 2];
  size_t len = 0, want_len = 0;
  t->limit = size;
  t->stray = 0;
  t->calls = 0;
  int rc = permit_merkle_inclusion_proof(mem_node, t, index, size, proof, &len);
  ref_path(index, leaves, size, want, &want_len);
  CHECKF(rc == 0 && t->stray == 0 && len == want_len &&
             memcmp(proof, want, len * sizeof *proof) == 0,
         "inclusion proof %llu/%llu", (unsigned long long)index,
         (unsigned long long)size);
  if (rc != 0 || len != want_len) return;
  long calls = t->calls;

  const uint8_t *leaf = leaves[index], *root = roots[size];
  CHECK(verify_incl(index, size, leaf, proof, len, root) == 0);

  /* Every byte of the proof, the leaf and the root matters. */
  int undetected = 0;
  for (size_t i = 0; i < len; i++) {
    for (size_t b = 0; b < PERMIT_HASH_LEN; b++) {
      memcpy(m, proof, len * sizeof *m);
      flip(&m[i], b);
      undetected += verify_incl(index, size, leaf, m, len, root) == 0;
    }
  }
  for (size_t b = 0; b < PERMIT_HASH_LEN; b++) {
    permit_hash l2, r2;
    memcpy(l2, leaf, 32);
    memcpy(r2, root, 32);
    flip(&l2, b);
    flip(&r2, b);
    undetected += verify_incl(index, size, l2, proof, len, root) == 0;
    undetected += verify_incl(index, size, leaf, proof, len, r2) == 0;
  }
  /* Any other position.  Hashes do not encode sizes, so the same root
   * can pass for another size (the proof of 0 in 3 leaves reads the same
   * in 4): another size must fail against that size's own root. */
  for (uint64_t j = 0; j < size + 3; j++)
    if (j != index)
      undetected += verify_incl(j, size, leaf, proof, len, root) == 0;
  for (uint64_t n = 0; n < 2 * size + 3; n++)
    if (n != size)
      undetected += verify_incl(index, n, leaf, proof, len, roots[n]) == 0;
  undetected += verify_incl(index, UINT64_MAX, leaf, proof, len, root) == 0;
  /* A hash dropped, or one added at either end. */
  for (size_t i = 0; i < len; i++) {
    memcpy(m, proof, i * sizeof *m);
    memcpy(m + i, proof + i + 1, (len - i - 1) * sizeof *m);
    undetected += verify_incl(index, size, leaf, m, len - 1, root) == 0;
  }
  memcpy(m, proof, len * sizeof *m);
  memcpy(m[len], leaf, 32);
  undetected += verify_incl(index, size, leaf, m, len + 1, root) == 0;
  memcpy(m[len], root, 32);
  undetected += verify_incl(index, size, leaf, m, len + 1, root) == 0;
  memcpy(m[0], root, 32);
  memcpy(m + 1, proof, len * sizeof *m);
  undetected += verify_incl(index, size, leaf, m, len + 1, root) == 0;
  CHECKF(undetected == 0, "inclusion %llu/%llu: %d forgeries accepted",
         (unsigned long long)index, (unsigned long long)size, undetected);

  /* A failing store: its code comes back whichever call fails. */
  for (long k = 1; k <= calls; k++) {
    t->calls = 0;
    t->fail_at = k;
    CHECK(permit_merkle_inclusion_proof(mem_node, t, index, size, proof,
                                        &len) == PERMIT_EIO);
  }
  t->fail_at = 0;
}

static void check_consistency(mem_tree *t, const permit_hash *leaves,
                              const permit_hash *roots, uint64_t size1,
                              uint64_t size2) {
  permit_hash proof[MAXPROOF + 2], want[MAXPROOF], m[MAXPROOF + 2];
  size_t len = 0, want_len = 0;
  t->limit = size2;
  t->stray = 0;
  t->calls = 0;
  int rc =
      permit_merkle_consistency_proof(mem_node, t, size1, size2, proof, &len);
  ref_subproof(size1, leaves, size2, 1, want, &want_len);
  CHECKF(rc == 0 && t->stray == 0 && len == want_len &&
             memcmp(proof, want, len * sizeof *proof) == 0,
         "consistency proof %llu..%llu", (unsigned long long)size1,
         (unsigned long long)size2);
  if (rc != 0 || len != want_len) return;
  long calls = t->calls;

  const uint8_t *r1 = roots[size1], *r2 = roots[size2];
  CHECK(verify_cons(size1, size2, r1, r2, proof, len) == 0);

  int undetected = 0;
  for (size_t i = 0; i < len; i++) {
    for (size_t b = 0; b < PERMIT_HASH_LEN; b++) {
      memcpy(m, proof, len * sizeof *m);
      flip(&m[i], b);
      undetected += verify_cons(size1, size2, r1, r2, m, len) == 0;
    }
  }
  for (size_t b = 0; b < PERMIT_HASH_LEN; b++) {
    permit_hash x1, x2;
    memcpy(x1, r1, 32);
    memcpy(x2, r2, 32);
    flip(&x1, b);
    flip(&x2, b);
    undetected += verify_cons(size1, size2, x1, r2, proof, len) == 0;
    undetected += verify_cons(size1, size2, r1, x2, proof, len) == 0;
  }
  if (memcmp(r1, r2, 32) != 0)
    undetected += verify_cons(size1, size2, r2, r1, proof, len) == 0;
  /* Other sizes, each with its own root (see check_inclusion). */
  for (uint64_t n = 0; n < size2 + 3; n++)
    if (n != size1)
      undetected += verify_cons(n, size2, roots[n], r2, proof, len) == 0;
  for (uint64_t n = 0; n < 2 * size2 + 3; n++)
    if (n != size2)
      undetected += verify_cons(size1, n, r1, roots[n], proof, len) == 0;
  undetected += verify_cons(size1, UINT64_MAX, r1, r2, proof, len) == 0;
  for (size_t i = 0; i < len; i++) {
    memcpy(m, proof, i * sizeof *m);
    memcpy(m + i, proof + i + 1, (len - i - 1) * sizeof *m);
    undetected += verify_cons(size1, size2, r1, r2, m, len - 1) == 0;
  }
  memcpy(m, proof, len * sizeof *m);
  memcpy(m[len], r1, 32);
  undetected += verify_cons(size1, size2, r1, r2, m, len + 1) == 0;
  memcpy(m[len], r2, 32);
  undetected += verify_cons(size1, size2, r1, r2, m, len + 1) == 0;
  memcpy(m[0], r1, 32);
  memcpy(m + 1, proof, len * sizeof *m);
  undetected += verify_cons(size1, size2, r1, r2, m, len + 1) == 0;
  CHECKF(undetected == 0, "consistency %llu..%llu: %d forgeries accepted",
         (unsigned long long)size1, (unsigned long long)size2, undetected);

  for (long k = 1; k <= calls; k++) {
    t->calls = 0;
    t->fail_at = k;
    CHECK(permit_merkle_consistency_proof(mem_node, t, size1, size2, proof,
                                          &len) == PERMIT_EIO);
  }
  t->fail_at = 0;
}

/* ---- (c) The frontier ---- */

static void check_frontier(mem_tree *t, const permit_hash *leaves,
                           const permit_merkle_frontier *snap) {
  for (uint64_t size = 0; size <= MAXN; size++) {
    permit_merkle_frontier f, before;
    permit_hash root, want;
    memset(&f, 0x5a, sizeof f);
    t->limit = size;
    t->calls = 0;
    t->stray = 0;
    CHECK(permit_merkle_frontier_load(&f, size, mem_node, t) == 0);
    CHECKF(same_frontier(&f, &snap[size]) && t->stray == 0 &&
               t->calls == __builtin_popcountll(size),
           "frontier_load %llu", (unsigned long long)size);
    permit_merkle_frontier_root(&f, root);
    ref_mth(leaves, size, want);
    CHECK(memcmp(root, want, 32) == 0);

    /* A failed load leaves the old frontier. */
    for (long k = 1; k <= __builtin_popcountll(size); k++) {
      before = snap[0];
      f = before;
      t->calls = 0;
      t->fail_at = k;
      CHECK(permit_merkle_frontier_load(&f, size, mem_node, t) == PERMIT_EIO);
      CHECK(memcmp(&f, &before, sizeof f) == 0);
    }
    t->fail_at = 0;

    if (size == MAXN) break;
    /* The leaf plus one node per trailing one bit of size. */
    int emits = 1 + __builtin_ctzll(~size);
    for (int k = 1; k <= emits; k++) {
      fail_emit e = {0, k};
      f = snap[size];
      before = f;
      CHECK(permit_merkle_frontier_append(&f, leaves[size], failing_emit, &e) ==
            PERMIT_EIO);
      CHECKF(memcmp(&f, &before, sizeof f) == 0 && e.calls == k,
             "append at %llu, emit failing at call %d",
             (unsigned long long)size, k);
    }
    fail_emit none = {0, 0};
    f = snap[size];
    CHECK(permit_merkle_frontier_append(&f, leaves[size], failing_emit,
                                        &none) == 0);
    CHECK(none.calls == emits && same_frontier(&f, &snap[size + 1]));
    f = snap[size];
    CHECK(permit_merkle_frontier_append(&f, leaves[size], NULL, NULL) == 0);
    CHECK(same_frontier(&f, &snap[size + 1]));
  }

  /* A frontier that contradicts its size, and a full one. */
  permit_merkle_frontier f = snap[5];
  f.count = 1;
  CHECK(permit_merkle_frontier_append(&f, leaves[0], NULL, NULL) ==
        PERMIT_EINVAL);
  CHECK(f.size == 5 && f.count == 1);
  permit_merkle_frontier_init(&f);
  f.size = UINT64_MAX;
  f.count = 64;
  CHECK(permit_merkle_frontier_append(&f, leaves[0], NULL, NULL) ==
        PERMIT_ETOOBIG);
  CHECK(f.size == UINT64_MAX);
}

static void test_generation(void) {
  static mem_tree t;
  static permit_hash leaves[REFN + 1], roots[REFN + 1];
  static permit_merkle_frontier snap[MAXN + 1];
  for (uint64_t i = 0; i <= REFN; i++) {
    uint8_t data[8];
    permit_put_u64be(data, i);
    ref_leaf(data, 8, leaves[i]);
  }
  for (uint64_t n = 0; n <= REFN; n++) ref_mth(leaves, n, roots[n]);

  check_hash_primitives();
  build(&t, leaves, MAXN, snap);
  /* Every perfect subtree was emitted, with its MTH. */
  int emitted = 0, wrong = 0;
  for (unsigned l = 0; l < LEVELS; l++) {
    for (uint64_t i = 0; ((i + 1) << l) <= MAXN; i++) {
      permit_hash want;
      ref_mth(leaves + (i << l), (uint64_t)1 << l, want);
      emitted += t.have[l][i];
      wrong += !t.have[l][i] || memcmp(t.node[l][i], want, 32) != 0;
    }
  }
  CHECK(emitted == 2 * MAXN - __builtin_popcountll(MAXN) && wrong == 0);

  check_subtrees(&t, leaves);
  int proofs = 0;
  for (uint64_t size = 1; size <= MAXN; size++) {
    for (uint64_t i = 0; i < size; i++, proofs++)
      check_inclusion(&t, leaves, (const permit_hash *)roots, size, i);
    for (uint64_t s1 = 1; s1 <= size; s1++, proofs++)
      check_consistency(&t, leaves, (const permit_hash *)roots, s1, size);
  }
  printf("merkle generation: trees 1..%d, %d proofs checked\n", MAXN, proofs);

  /* Arguments no proof exists for. */
  permit_hash proof[MAXPROOF];
  size_t len = 0;
  t.limit = MAXN;
  CHECK(permit_merkle_inclusion_proof(mem_node, &t, 0, 0, proof, &len) ==
        PERMIT_EINVAL);
  CHECK(permit_merkle_inclusion_proof(mem_node, &t, 5, 5, proof, &len) ==
        PERMIT_EINVAL);
  CHECK(permit_merkle_consistency_proof(mem_node, &t, 0, 5, proof, &len) ==
        PERMIT_EINVAL);
  CHECK(permit_merkle_consistency_proof(mem_node, &t, 6, 5, proof, &len) ==
        PERMIT_EINVAL);
  CHECK(permit_merkle_consistency_proof(mem_node, &t, 0, 0, proof, &len) ==
        PERMIT_EINVAL);

  check_frontier(&t, leaves, snap);
}

/* ---- Verifiers are total ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Small, huge and boundary sizes alike. */
static uint64_t rng_size(void) {
  switch (rng() % 5) {
    case 0:
      return rng() % 70;
    case 1:
      return rng();
    case 2:
      return UINT64_MAX - rng() % 4;
    case 3:
      return (uint64_t)1 << (rng() % 64);
    default:
      return rng() >> (rng() % 64);
  }
}

static void test_totality(void) {
  permit_hash a, b, c;
  memset(a, 1, 32);
  memset(b, 2, 32);
  memset(c, 3, 32);
  CHECK(permit_merkle_verify_inclusion(0, 0, a, NULL, 0, a) == PERMIT_EVERIFY);
  CHECK(permit_merkle_verify_inclusion(1, 1, a, NULL, 0, a) == PERMIT_EVERIFY);
  CHECK(permit_merkle_verify_inclusion(0, 1, a, NULL, 0, a) == 0);
  CHECK(permit_merkle_verify_inclusion(UINT64_MAX, UINT64_MAX, a, NULL, 0, a) ==
        PERMIT_EVERIFY);
  CHECK(permit_merkle_verify_consistency(0, 0, a, a, NULL, 0) ==
        PERMIT_EVERIFY);
  CHECK(permit_merkle_verify_consistency(1, 1, a, a, NULL, 0) == 0);
  CHECK(permit_merkle_verify_consistency(UINT64_MAX, UINT64_MAX, a, a, NULL,
                                         0) == 0);
  CHECK(permit_merkle_verify_consistency(2, 1, a, b, NULL, 0) ==
        PERMIT_EVERIFY);
  CHECK(permit_merkle_verify_consistency(1, 2, a, b, NULL, 0) ==
        PERMIT_EVERIFY);

  /* Random sizes, indices, lengths and hashes: never accepted, never a
   * read past the proof (each proof is an exact heap block). */
  int accepted = 0;
  for (int iter = 0; iter < 20000; iter++) {
    size_t len = rng() % 80;
    if (iter % 4 == 0) len = rng() % 4;
    permit_hash *proof = len ? malloc(len * sizeof *proof) : NULL;
    for (size_t i = 0; i < len; i++)
      for (size_t j = 0; j < 32; j++) proof[i][j] = (uint8_t)rng();
    uint64_t n = rng_size();
    uint64_t m = iter % 3 == 0     ? rng_size()
                 : n == UINT64_MAX ? rng()
                                   : rng() % (n + 1);
    accepted += permit_merkle_verify_inclusion(
                    m, n, a, (const permit_hash *)proof, len, b) == 0;
    accepted += permit_merkle_verify_consistency(
                    m, n, a, b, (const permit_hash *)proof, len) == 0;
    accepted += permit_merkle_verify_consistency(
                    n, m, c, b, (const permit_hash *)proof, len) == 0;
    free(proof);
  }
  CHECK(accepted == 0);
}

/* ---- (d) Callback cost in a large tree ---- */

typedef struct synth {
  uint64_t size;
  long calls;
  int stray;
} synth;

/* No tree: a hash made from the coordinates. */
static int synth_node(void *arg, unsigned level, uint64_t index,
                      permit_hash out) {
  synth *s = arg;
  s->calls++;
  if (level >= 64 || index >= (s->size >> level)) s->stray++;
  memset(out, (int)level, PERMIT_HASH_LEN);
  permit_put_u64be(out, index);
  return 0;
}

static void test_cost(void) {
  const uint64_t n = ((uint64_t)1 << 20) + 12345;
  const uint64_t indices[] = {
      0,     1,     12344, 65536, ((uint64_t)1 << 20) - 1, (uint64_t)1 << 20,
      n - 2, n - 1, 777777};
  permit_hash proof[MAXPROOF];
  size_t len;
  long worst = 0;
  for (size_t i = 0; i < sizeof indices / sizeof *indices; i++) {
    synth s = {n, 0, 0};
    CHECK(permit_merkle_inclusion_proof(synth_node, &s, indices[i], n, proof,
                                        &len) == 0);
    CHECKF(s.calls <= 2 * 64 && s.stray == 0, "inclusion of %llu: %ld calls",
           (unsigned long long)indices[i], s.calls);
    if (s.calls > worst) worst = s.calls;
  }
  const uint64_t firsts[] = {1, 3, 12345, 65537, (uint64_t)1 << 20, n - 1, n};
  for (size_t i = 0; i < sizeof firsts / sizeof *firsts; i++) {
    synth s = {n, 0, 0};
    CHECK(permit_merkle_consistency_proof(synth_node, &s, firsts[i], n, proof,
                                          &len) == 0);
    CHECKF(s.calls <= 2 * 64 && s.stray == 0,
           "consistency from %llu: %ld calls", (unsigned long long)firsts[i],
           s.calls);
    if (s.calls > worst) worst = s.calls;
  }

  /* The largest tree there can be. */
  const uint64_t big = UINT64_MAX;
  const uint64_t big_idx[] = {0, 1, big / 2, big - 2, big - 1};
  for (size_t i = 0; i < sizeof big_idx / sizeof *big_idx; i++) {
    synth s = {big, 0, 0};
    CHECK(permit_merkle_inclusion_proof(synth_node, &s, big_idx[i], big, proof,
                                        &len) == 0);
    CHECK(len <= PERMIT_MERKLE_MAX_PROOF && s.calls <= 2 * 64 && s.stray == 0);
    if (s.calls > worst) worst = s.calls;
  }
  const uint64_t big_first[] = {1, 2, big / 2 + 1, big - 1, big};
  for (size_t i = 0; i < sizeof big_first / sizeof *big_first; i++) {
    synth s = {big, 0, 0};
    CHECK(permit_merkle_consistency_proof(synth_node, &s, big_first[i], big,
                                          proof, &len) == 0);
    CHECK(len <= PERMIT_MERKLE_MAX_PROOF && s.calls <= 2 * 64 && s.stray == 0);
    if (s.calls > worst) worst = s.calls;
  }
  /* Ending beside a leaf at depth 64 needs 65 hashes: refused. */
  const uint64_t too_long[] = {3, big / 2};
  for (size_t i = 0; i < 2; i++) {
    synth s = {big, 0, 0};
    CHECK(permit_merkle_consistency_proof(synth_node, &s, too_long[i], big,
                                          proof, &len) == PERMIT_ETOOBIG);
  }
  printf("merkle cost: at most %ld callbacks per proof (n = %llu and 2^64-1)\n",
         worst, (unsigned long long)n);
}

int main(void) {
  test_vectors();
  test_generation();
  test_totality();
  test_cost();
  permit_crypto_cleanup();
  return test_finish("test_merkle");
}
