#include "testlib.h"

#include <ftw.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "permit/util.h"

int test_checks;
int test_failures;

int test_finish(const char *name) {
  printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
  return test_failures == 0 && test_checks > 0 ? 0 : 1;
}

const char *test_vector_path(const char *relpath) {
  static char path[4096];
  /* PERMIT_VECTORS_DIR lets a test point the binaries at damaged copies. */
  const char *dir = getenv("PERMIT_VECTORS_DIR");
  snprintf(path, sizeof path, "%s/%s", dir != NULL ? dir : PERMIT_VECTORS,
           relpath);
  return path;
}

json_t *test_load_json(const char *relpath) {
  json_error_t e;
  json_t *j = json_load_file(test_vector_path(relpath), 0, &e);
  if (j == NULL) {
    fprintf(stderr, "cannot load %s: %s (line %d)\n", relpath, e.text, e.line);
    exit(2);
  }
  return j;
}

uint8_t *test_hex(json_t *obj, const char *key, size_t *len) {
  const char *s = json_string_value(json_object_get(obj, key));
  if (s == NULL) {
    fprintf(stderr, "vector has no string member \"%s\"\n", key);
    exit(2);
  }
  size_t n = strlen(s);
  uint8_t *out = malloc(n / 2 + 1);
  if (out == NULL || permit_hex_decode(s, n, out, n / 2 + 1, len) != 0) {
    fprintf(stderr, "vector member \"%s\" is not hex\n", key);
    exit(2);
  }
  return out;
}

size_t test_unhex(const char *s, uint8_t *out, size_t cap) {
  size_t n = 0;
  if (permit_hex_decode(s, strlen(s), out, cap, &n) != 0) {
    fprintf(stderr, "bad hex literal %s\n", s);
    exit(2);
  }
  return n;
}

uint8_t *test_b64(json_t *value, size_t *len) {
  const char *s = json_string_value(value);
  if (s == NULL) {
    fprintf(stderr, "vector value is not a string\n");
    exit(2);
  }
  size_t n = strlen(s);
  uint8_t *out = malloc(n / 4 * 3 + 3);
  if (out == NULL) exit(2);
  if (n == 0) {
    *len = 0;
    return out;
  }
  int got = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
  if (got < 0 || n % 4 != 0) {
    fprintf(stderr, "vector value \"%s\" is not base64\n", s);
    exit(2);
  }
  /* EVP_DecodeBlock counts the padding as zero bytes. */
  if (s[n - 1] == '=') got--;
  if (s[n - 2] == '=') got--;
  *len = (size_t)got;
  return out;
}

const char *test_tmpdir(const char *tag) {
  static char path[4096];
  const char *base = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/permit-%s-XXXXXX",
           base != NULL ? base : "/tmp", tag);
  if (mkdtemp(path) == NULL) {
    perror("mkdtemp");
    exit(2);
  }
  return path;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

void test_rmrf(const char *path) {
  nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
