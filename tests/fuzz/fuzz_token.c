/*
 * fuzz_token - the capability tokens in consent-centre and unsubscribe
 * URLs (permit/token.h): permit_token_open() and the strict base64url
 * they are written in.
 *
 * Input: kind (1) || now_ms (8) || cap (1) || token characters.
 *
 * The token is opened with the fuzz link secret.  One that opens (only an
 * intact seed can: the tag is an HMAC) must be exactly what
 * permit_token_make() writes for its kind, expiry and payload, and
 * expired exactly when now_ms is past its expiry.  The same characters
 * are decoded as base64url into a buffer of |cap| bytes: what decodes
 * must encode back to the same characters (one encoding per byte
 * string), and any bytes must encode and decode back to themselves.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/token.h"
#include "permit/util.h"

static void open_token(uint8_t kind, int64_t now, const char *tok,
                       size_t len) {
  uint8_t payload[PERMIT_TOKEN_PAYLOAD_MAX];
  size_t plen = 0;
  permit_err err;
  int rc = permit_token_open(fuzz_token_secret, FUZZ_TOKEN_CONTEXT, kind, tok,
                             len, now, payload, sizeof payload, &plen, &err);
  if (rc != 0 && rc != PERMIT_TOKEN_EXPIRED) {
    FUZZ_CHECK(rc == PERMIT_EINVAL || rc == PERMIT_EVERIFY);
    FUZZ_CHECK(err.code == rc && memchr(err.msg, '\0', sizeof err.msg));
    return;
  }
  FUZZ_CHECK(plen <= PERMIT_TOKEN_PAYLOAD_MAX);
  uint8_t raw[PERMIT_TOKEN_MAX];
  size_t raw_len;
  FUZZ_CHECK(permit_base64url_decode(tok, len, raw, sizeof raw, &raw_len) ==
             0);
  FUZZ_CHECK(raw_len == 9 + plen + 16 && raw[0] == kind);
  uint64_t expiry = permit_get_u64be(raw + 1);
  FUZZ_CHECK(expiry <= INT64_MAX);
  int expired = expiry != 0 && (now < 0 || (uint64_t)now > expiry);
  FUZZ_CHECK((rc == PERMIT_TOKEN_EXPIRED) == expired);
  char again[PERMIT_TOKEN_MAX];
  FUZZ_CHECK(permit_token_make(fuzz_token_secret, FUZZ_TOKEN_CONTEXT, kind,
                               (int64_t)expiry, payload, plen, again,
                               sizeof again) == 0);
  FUZZ_CHECK(strlen(again) == len && memcmp(again, tok, len) == 0);
  /* Too small a payload buffer is refused, not overrun. */
  if (plen > 0) {
    uint8_t *small = malloc(plen - 1 ? plen - 1 : 1);
    if (small == NULL) abort();
    size_t n = 0;
    FUZZ_CHECK(permit_token_open(fuzz_token_secret, FUZZ_TOKEN_CONTEXT, kind,
                                 tok, len, now, small, plen - 1, &n,
                                 NULL) == PERMIT_ETOOBIG);
    free(small);
  }
}

static void base64url(const char *s, size_t len, size_t cap) {
  uint8_t *out = malloc(cap ? cap : 1);
  if (out == NULL) abort();
  size_t n = 0;
  int rc = permit_base64url_decode(s, len, cap ? out : NULL, cap, &n);
  FUZZ_CHECK(rc == 0 || rc == PERMIT_EINVAL || rc == PERMIT_ETOOBIG);
  if (rc == 0) {
    FUZZ_CHECK(n <= cap);
    FUZZ_CHECK(PERMIT_BASE64URL_LEN(n) == len);
    char *enc = malloc(len + 1);
    if (enc == NULL) abort();
    FUZZ_CHECK(permit_base64url_encode(out, n, enc, len + 1) == 0);
    FUZZ_CHECK(memcmp(enc, s, len) == 0 && enc[len] == '\0');
    /* One byte less of room is refused. */
    FUZZ_CHECK(permit_base64url_encode(out, n, enc, len) == PERMIT_ETOOBIG);
    free(enc);
  }
  free(out);

  /* Any bytes survive a round trip. */
  size_t el = PERMIT_BASE64URL_LEN(len);
  char *enc = malloc(el + 1);
  uint8_t *dec = malloc(len ? len : 1);
  if (enc == NULL || dec == NULL) abort();
  FUZZ_CHECK(permit_base64url_encode((const uint8_t *)s, len, enc, el + 1) ==
             0);
  FUZZ_CHECK(strlen(enc) == el);
  FUZZ_CHECK(permit_base64url_decode(enc, el, dec, len, &n) == 0);
  FUZZ_CHECK(n == len && (len == 0 || memcmp(dec, s, len) == 0));
  free(dec);
  free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_reader r;
  fuzz_reader_init(&r, data, size);
  uint8_t kind = fuzz_u8(&r);
  int64_t now = (int64_t)fuzz_u64(&r);
  uint8_t cap = fuzz_u8(&r);
  size_t len;
  const uint8_t *rest = fuzz_rest(&r, &len);
  /* A copy of exactly |len| bytes: a read past it is a bug ASan sees. */
  char *tok = malloc(len ? len : 1);
  if (tok == NULL) abort();
  if (len > 0) memcpy(tok, rest, len);
  open_token(kind, now, tok, len);
  base64url(tok, len, cap >= 128 ? len : cap);
  free(tok);
  return 0;
}
