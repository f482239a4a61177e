/*
 * fuzz_form - what a buyer's browser (or anyone) posts to the consent
 * centre and the one-click unsubscribe page (permit/web.h): the form
 * parser and the same-origin check.
 *
 * Input: cap (1) || body.
 *
 * The body is parsed into |cap| % 17 fields.  Accepted fields must keep
 * the documented bounds (non-empty, NUL-terminated names under 32 bytes,
 * values under 256, no name twice, at most |cap|), be found by
 * permit_form_get(), and parse back to the same fields once encoded again.
 * A refusal is PERMIT_EINVAL or PERMIT_ETOOBIG with a message that does
 * not quote the body.  Then the body, cut at its first two NUL bytes,
 * gives Origin, Sec-Fetch-Site and the node's own origin for
 * permit_web_same_origin().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h> /* memmem: the build defines _GNU_SOURCE */
#include <strings.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/web.h"

/* Appends |s| form-encoded (every byte but [A-Za-z0-9] as %XX). */
static size_t encode(const char *s, char *out) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9')) {
      out[o++] = (char)c;
    } else {
      out[o++] = '%';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    }
  }
  return o;
}

static void form(const uint8_t *body, size_t len, size_t cap) {
  permit_form_field *f = malloc((cap ? cap : 1) * sizeof *f);
  if (f == NULL) abort();
  size_t n = 99;
  permit_err err;
  int rc = permit_form_parse(body, len, cap ? f : NULL, cap, &n, &err);
  if (rc != 0) {
    FUZZ_CHECK(rc == PERMIT_EINVAL || rc == PERMIT_ETOOBIG);
    FUZZ_CHECK(err.code == rc && memchr(err.msg, '\0', sizeof err.msg));
    if (len >= 12)
      FUZZ_CHECK(memmem(err.msg, strlen(err.msg), body, len) == NULL);
    free(f);
    return;
  }
  FUZZ_CHECK(n <= cap);
  FUZZ_CHECK((n == 0) == (len == 0));
  /* Each field encodes to at most 3 * (31 + 255) + 2 characters. */
  char *again = malloc(n * (3 * (31 + 255) + 2) + 1);
  if (again == NULL) abort();
  size_t al = 0;
  for (size_t i = 0; i < n; i++) {
    size_t nl = strnlen(f[i].name, sizeof f[i].name);
    size_t vl = strnlen(f[i].value, sizeof f[i].value);
    FUZZ_CHECK(nl > 0 && nl < sizeof f[i].name);
    FUZZ_CHECK(vl < sizeof f[i].value);
    for (size_t j = 0; j < i; j++)
      FUZZ_CHECK(strcmp(f[i].name, f[j].name) != 0);
    FUZZ_CHECK(permit_form_get(f, n, f[i].name) == f[i].value);
    if (i > 0) again[al++] = '&';
    al += encode(f[i].name, again + al);
    again[al++] = '=';
    al += encode(f[i].value, again + al);
  }
  if (al <= PERMIT_FORM_BODY_MAX) {
    permit_form_field *g = malloc((cap ? cap : 1) * sizeof *g);
    if (g == NULL) abort();
    size_t m = 0;
    FUZZ_CHECK(permit_form_parse((const uint8_t *)again, al, cap ? g : NULL,
                                 cap, &m, NULL) == 0);
    FUZZ_CHECK(m == n);
    for (size_t i = 0; i < n; i++)
      FUZZ_CHECK(strcmp(f[i].name, g[i].name) == 0 &&
                 strcmp(f[i].value, g[i].value) == 0);
    free(g);
  }
  free(again);
  free(f);
}

static void same_origin(const uint8_t *data, size_t len) {
  char *s = fuzz_cstr(data, len);
  /* Up to three NUL-separated strings; a missing one is NULL. */
  const char *part[3] = {s, NULL, NULL};
  size_t at = strlen(s);
  for (int i = 1; i < 3 && at < len; i++) {
    part[i] = s + at + 1;
    at += 1 + strlen(part[i]);
  }
  int r = permit_web_same_origin(part[0], part[1], part[2]);
  FUZZ_CHECK(r == 0 || r == 1);
  const char *own = part[2];
  if (r == 1 && part[0] != NULL && part[0][0] != '\0')
    FUZZ_CHECK(own != NULL && strcasecmp(part[0], own) == 0);
  if (own != NULL && own[0] != '\0' && strcasecmp(own, "null") != 0) {
    FUZZ_CHECK(permit_web_same_origin(own, "same-origin", own) == 1);
    FUZZ_CHECK(permit_web_same_origin(own, "cross-site", own) == 0);
  }
  FUZZ_CHECK(permit_web_same_origin("null", part[1], own) == 0);
  free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_reader r;
  fuzz_reader_init(&r, data, size);
  size_t cap = fuzz_u8(&r) % 17;
  size_t len;
  const uint8_t *rest = fuzz_rest(&r, &len);
  /* An exact copy, so that a read past the body is seen. */
  uint8_t *body = malloc(len ? len : 1);
  if (body == NULL) abort();
  if (len > 0) memcpy(body, rest, len);
  form(body, len, cap);
  same_origin(body, len);
  free(body);
  return 0;
}
