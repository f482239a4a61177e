/*
 * testlib.h - the few helpers every unit test shares: checks that count
 * and report failures, and loading of the JSON known-answer files under
 * tests/vectors/ (path given by the PERMIT_VECTORS compile definition, or
 * by $PERMIT_VECTORS_DIR when set).
 *
 * A test binary returns test_finish(): 0 when every check passed.
 */
#ifndef PERMIT_TESTLIB_H
#define PERMIT_TESTLIB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int test_checks;
extern int test_failures;

#define CHECK(cond)                                                          \
  do {                                                                       \
    test_checks++;                                                           \
    if (!(cond)) {                                                           \
      test_failures++;                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,       \
              #cond);                                                        \
    }                                                                        \
  } while (0)

/* A check with a printf-style note, for loops over vectors. */
#define CHECKF(cond, ...)                                                    \
  do {                                                                       \
    test_checks++;                                                           \
    if (!(cond)) {                                                           \
      test_failures++;                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__,       \
              #cond);                                                        \
      fprintf(stderr, __VA_ARGS__);                                          \
      fputc('\n', stderr);                                                   \
    }                                                                        \
  } while (0)

/* Prints "<name>: N checks, M failed" and returns the exit code. */
int test_finish(const char *name);

/*
 * Loads tests/vectors/<relpath> as JSON; exits the test with a message if
 * it is missing or malformed.  The caller owns the result (json_decref).
 */
json_t *test_load_json(const char *relpath);

/* The absolute path of tests/vectors/<relpath> in a static buffer. */
const char *test_vector_path(const char *relpath);

/*
 * Decodes the hex string member |key| of |obj| into a malloc'd buffer
 * (caller frees) and its length into |*len|; exits the test on bad input.
 */
uint8_t *test_hex(json_t *obj, const char *key, size_t *len);

/*
 * Decodes the hex literal |s| into |out| (|cap| bytes) and returns its
 * length; a bad literal is a bug in the test: it exits with a message.
 */
size_t test_unhex(const char *s, uint8_t *out, size_t cap);

/* The same for a base64 string value (not a member). */
uint8_t *test_b64(json_t *value, size_t *len);

/* A fresh, empty directory under $TMPDIR (static buffer, caller removes). */
const char *test_tmpdir(const char *tag);

/* rm -rf |path|. */
void test_rmrf(const char *path);

#endif
