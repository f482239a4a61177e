/* test_token: strict base64url (RFC 4648 known answers, non-canonical
 * input refused) and MACed tokens: round trip, any altered character,
 * another kind, context or secret, expiry, and size limits. */
#include <stdint.h>
#include <string.h>

#include "permit/token.h"
#include "testlib.h"

static const uint8_t secret_a[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                     12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                     23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static uint8_t secret_b[32];

#define CTX "tixly.example"
#define T0 1795000000000LL /* some time in 2026 */

static void test_b64_known(void) {
  /* RFC 4648 section 10, unpadded, and two that need - and _. */
  static const struct {
    const char *in;
    size_t len;
    const char *out;
  } v[] = {{"", 0, ""},
           {"f", 1, "Zg"},
           {"fo", 2, "Zm8"},
           {"foo", 3, "Zm9v"},
           {"foob", 4, "Zm9vYg"},
           {"fooba", 5, "Zm9vYmE"},
           {"foobar", 6, "Zm9vYmFy"},
           {"\xfb\xff", 2, "-_8"},
           {"\xfb\xef\xbe\xff\xff\xff", 6, "----____"}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char enc[32];
    uint8_t dec[32];
    size_t n = 99;
    CHECKF(permit_base64url_encode((const uint8_t *)v[i].in, v[i].len, enc,
                                   sizeof enc) == 0 &&
               strcmp(enc, v[i].out) == 0,
           "vector %zu", i);
    CHECKF(strlen(v[i].out) == PERMIT_BASE64URL_LEN(v[i].len), "len %zu", i);
    CHECKF(permit_base64url_decode(v[i].out, strlen(v[i].out), dec,
                                   sizeof dec, &n) == 0 &&
               n == v[i].len && memcmp(dec, v[i].in, n) == 0,
           "vector %zu", i);
    /* Exactly enough room, then one byte short. */
    size_t need = strlen(v[i].out) + 1;
    CHECK(permit_base64url_encode((const uint8_t *)v[i].in, v[i].len, enc,
                                  need) == 0);
    CHECK(permit_base64url_encode((const uint8_t *)v[i].in, v[i].len, enc,
                                  need - 1) == PERMIT_ETOOBIG);
    if (v[i].len > 0)
      CHECK(permit_base64url_decode(v[i].out, strlen(v[i].out), dec,
                                    v[i].len - 1, &n) == PERMIT_ETOOBIG);
  }
  /* Every byte value through a round trip. */
  uint8_t all[256], back[256];
  char text[PERMIT_BASE64URL_LEN(256) + 1];
  size_t n = 0;
  for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
  for (size_t len = 0; len <= 256; len += 37) {
    CHECK(permit_base64url_encode(all, len, text, sizeof text) == 0);
    CHECK(strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789-_") == strlen(text));
    CHECK(permit_base64url_decode(text, strlen(text), back, sizeof back,
                                  &n) == 0 &&
          n == len && memcmp(all, back, len) == 0);
  }
}

static void test_b64_strict(void) {
  static const char *bad[] = {
      "Z",        /* 4k+1 characters */
      "Zg==",     /* padding */
      "Zm8=",     /* padding */
      "Zh",       /* low 4 bits of the last character set */
      "Zm9",      /* low 2 bits of the last character set */
      "Zm9vY",    /* 4k+1 */
      "Zm+v",     /* the standard alphabet */
      "Zm/v",     /* the standard alphabet */
      "Zm9 v",    /* white space */
      "Zm9v\n",   /* a line break */
      "Zm\xc3\xa9v", /* not ASCII */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t out[16];
    size_t n = 0;
    CHECKF(permit_base64url_decode(bad[i], strlen(bad[i]), out, sizeof out,
                                   &n) == PERMIT_EINVAL,
           "bad input %zu", i);
  }
  /* An embedded NUL is counted by |len|, not a terminator. */
  uint8_t out[8];
  size_t n = 0;
  CHECK(permit_base64url_decode("Zm9v\0Zm9v", 9, out, sizeof out, &n) ==
        PERMIT_EINVAL);
  CHECK(permit_base64url_decode(NULL, 0, NULL, 0, &n) == 0 && n == 0);
  CHECK(permit_base64url_decode("Zg", 2, out, sizeof out, NULL) ==
        PERMIT_EINVAL);
  CHECK(permit_base64url_encode(NULL, 1, (char *)out, sizeof out) ==
        PERMIT_EINVAL);
  CHECK(permit_base64url_encode(out, 1, NULL, 8) == PERMIT_EINVAL);
  CHECK(permit_base64url_encode(out, 0, (char *)out, 0) == PERMIT_ETOOBIG);
}

static void test_round_trip(void) {
  uint8_t payload[PERMIT_TOKEN_PAYLOAD_MAX], got[PERMIT_TOKEN_PAYLOAD_MAX];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 7);
  size_t sizes[] = {0, 1, 2, 3, 32, 63, PERMIT_TOKEN_PAYLOAD_MAX};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    char tok[PERMIT_TOKEN_MAX];
    size_t len = 999;
    permit_err err = {0};
    CHECK(permit_token_make(secret_a, CTX, 7, T0 + 1000, payload, sizes[s],
                            tok, sizeof tok) == 0);
    CHECK(strlen(tok) == PERMIT_BASE64URL_LEN(25 + sizes[s]));
    CHECKF(permit_token_open(secret_a, CTX, 7, tok, strlen(tok), T0, got,
                             sizeof got, &len, &err) == 0,
           "size %zu: %s", sizes[s], err.msg);
    CHECK(len == sizes[s] && memcmp(got, payload, len) == 0);
    /* A payload too big for the caller's buffer is refused, not cut. */
    if (sizes[s] > 0)
      CHECK(permit_token_open(secret_a, CTX, 7, tok, strlen(tok), T0, got,
                              sizes[s] - 1, &len, &err) == PERMIT_ETOOBIG);
  }
  /* The longest token fits PERMIT_TOKEN_MAX; one byte short does not. */
  char tok[PERMIT_TOKEN_MAX];
  size_t longest = PERMIT_BASE64URL_LEN(25 + PERMIT_TOKEN_PAYLOAD_MAX);
  CHECK(longest + 1 <= PERMIT_TOKEN_MAX);
  CHECK(permit_token_make(secret_a, CTX, 7, 0, payload,
                          PERMIT_TOKEN_PAYLOAD_MAX, tok, longest + 1) == 0);
  CHECK(permit_token_make(secret_a, CTX, 7, 0, payload,
                          PERMIT_TOKEN_PAYLOAD_MAX, tok,
                          longest) == PERMIT_ETOOBIG);
  /* Two tokens made alike are alike (deterministic), others differ. */
  char t1[PERMIT_TOKEN_MAX], t2[PERMIT_TOKEN_MAX];
  CHECK(permit_token_make(secret_a, CTX, 1, T0, payload, 8, t1, sizeof t1) ==
        0);
  CHECK(permit_token_make(secret_a, CTX, 1, T0, payload, 8, t2, sizeof t2) ==
        0);
  CHECK(strcmp(t1, t2) == 0);
  CHECK(permit_token_make(secret_a, CTX, 1, T0 + 1, payload, 8, t2,
                          sizeof t2) == 0);
  CHECK(strcmp(t1, t2) != 0);
}

static void test_every_change_fails(void) {
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
      "+/=. %";
  uint8_t payload[32], got[64];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(0xa0 + i);
  char tok[PERMIT_TOKEN_MAX], bad[PERMIT_TOKEN_MAX];
  CHECK(permit_token_make(secret_a, CTX, 2, T0 + 60000, payload,
                          sizeof payload, tok, sizeof tok) == 0);
  size_t tl = strlen(tok), accepted = 0, tried = 0;
  for (size_t pos = 0; pos < tl; pos++) {
    for (size_t a = 0; a < sizeof alphabet - 1; a++) {
      if (alphabet[a] == tok[pos]) continue;
      memcpy(bad, tok, tl + 1);
      bad[pos] = alphabet[a];
      size_t len = 0;
      int rc = permit_token_open(secret_a, CTX, 2, bad, tl, T0, got,
                                 sizeof got, &len, NULL);
      tried++;
      if (rc != PERMIT_EINVAL && rc != PERMIT_EVERIFY) {
        accepted++;
        fprintf(stderr, "changed token accepted (pos %zu, '%c'): %d\n", pos,
                alphabet[a], rc);
      }
    }
  }
  CHECK(tried > 1000);
  CHECK(accepted == 0);
  /* Shortened and lengthened. */
  size_t len = 0;
  for (size_t cut = 0; cut < tl; cut++)
    CHECKF(permit_token_open(secret_a, CTX, 2, tok, cut, T0, got, sizeof got,
                             &len, NULL) < 0,
           "prefix of %zu characters", cut);
  memcpy(bad, tok, tl);
  memcpy(bad + tl, "AAAA", 5);
  CHECK(permit_token_open(secret_a, CTX, 2, bad, tl + 4, T0, got, sizeof got,
                          &len, NULL) < 0);
}

static void test_wrong_key_kind_context(void) {
  uint8_t payload[32] = {42}, got[64];
  char tok[PERMIT_TOKEN_MAX];
  size_t len = 0;
  permit_err err = {0};
  CHECK(permit_token_make(secret_a, CTX, 3, 0, payload, sizeof payload, tok,
                          sizeof tok) == 0);
  size_t tl = strlen(tok);
  CHECK(permit_token_open(secret_a, CTX, 3, tok, tl, T0, got, sizeof got,
                          &len, &err) == 0);
  CHECK(permit_token_open(secret_a, CTX, 4, tok, tl, T0, got, sizeof got,
                          &len, &err) == PERMIT_EINVAL);
  CHECK(strstr(err.msg, "malformed") != NULL);
  CHECK(permit_token_open(secret_a, "fillmore.example", 3, tok, tl, T0, got,
                          sizeof got, &len, &err) == PERMIT_EVERIFY);
  CHECK(permit_token_open(secret_a, CTX "x", 3, tok, tl, T0, got, sizeof got,
                          &len, &err) == PERMIT_EVERIFY);
  CHECK(permit_token_open(secret_b, CTX, 3, tok, tl, T0, got, sizeof got,
                          &len, &err) == PERMIT_EVERIFY);
  CHECK(err.code == PERMIT_EVERIFY);
  /* The message never repeats the token. */
  CHECK(strstr(err.msg, tok) == NULL);
  /* A refused token leaves the caller's buffer untouched. */
  memset(got, 0x55, sizeof got);
  CHECK(permit_token_open(secret_b, CTX, 3, tok, tl, T0, got, sizeof got,
                          &len, NULL) == PERMIT_EVERIFY);
  CHECK(got[0] == 0x55);
}

static void test_expiry(void) {
  uint8_t payload[4] = {1, 2, 3, 4}, got[8];
  char tok[PERMIT_TOKEN_MAX];
  size_t len = 0;
  permit_err err = {0};
  CHECK(permit_token_make(secret_a, CTX, 5, T0, payload, 4, tok,
                          sizeof tok) == 0);
  size_t tl = strlen(tok);
  CHECK(permit_token_open(secret_a, CTX, 5, tok, tl, T0 - 1, got, sizeof got,
                          &len, &err) == 0);
  CHECK(permit_token_open(secret_a, CTX, 5, tok, tl, T0, got, sizeof got,
                          &len, &err) == 0);
  memset(got, 0, sizeof got);
  len = 0;
  CHECK(permit_token_open(secret_a, CTX, 5, tok, tl, T0 + 1, got, sizeof got,
                          &len, &err) == PERMIT_TOKEN_EXPIRED);
  CHECK(strstr(err.msg, "expired") != NULL);
  CHECK(len == 4 && memcmp(got, payload, 4) == 0);
  /* Expired and altered: the tag is checked first. */
  char bad[PERMIT_TOKEN_MAX];
  memcpy(bad, tok, tl + 1);
  bad[tl / 2] = bad[tl / 2] == 'A' ? 'B' : 'A';
  CHECK(permit_token_open(secret_a, CTX, 5, bad, tl, T0 + 1, got, sizeof got,
                          &len, &err) == PERMIT_EVERIFY);
  /* Expiry 0 never expires. */
  CHECK(permit_token_make(secret_a, CTX, 5, 0, payload, 4, tok, sizeof tok) ==
        0);
  CHECK(permit_token_open(secret_a, CTX, 5, tok, strlen(tok), INT64_MAX, got,
                          sizeof got, &len, &err) == 0);
  /* The far future is a valid expiry. */
  CHECK(permit_token_make(secret_a, CTX, 5, INT64_MAX, payload, 4, tok,
                          sizeof tok) == 0);
  CHECK(permit_token_open(secret_a, CTX, 5, tok, strlen(tok), T0, got,
                          sizeof got, &len, &err) == 0);
}

static void test_limits(void) {
  uint8_t payload[PERMIT_TOKEN_PAYLOAD_MAX + 1] = {0}, got[128];
  char tok[PERMIT_TOKEN_MAX], big[4 * PERMIT_TOKEN_MAX];
  size_t len = 0;
  permit_err err = {0};
  /* Making. */
  CHECK(permit_token_make(secret_a, CTX, 1, 0, payload,
                          PERMIT_TOKEN_PAYLOAD_MAX + 1, tok,
                          sizeof tok) == PERMIT_EINVAL);
  CHECK(permit_token_make(secret_a, CTX, 1, -1, payload, 1, tok,
                          sizeof tok) == PERMIT_EINVAL);
  CHECK(permit_token_make(secret_a, "", 1, 0, payload, 1, tok, sizeof tok) ==
        PERMIT_EINVAL);
  CHECK(permit_token_make(secret_a, NULL, 1, 0, payload, 1, tok,
                          sizeof tok) == PERMIT_EINVAL);
  CHECK(permit_token_make(secret_a, "a\nb", 1, 0, payload, 1, tok,
                          sizeof tok) == PERMIT_EINVAL);
  CHECK(permit_token_make(NULL, CTX, 1, 0, payload, 1, tok, sizeof tok) ==
        PERMIT_EINVAL);
  CHECK(permit_token_make(secret_a, CTX, 1, 0, NULL, 1, tok, sizeof tok) ==
        PERMIT_EINVAL);
  CHECK(permit_token_make(secret_a, CTX, 1, 0, NULL, 0, tok, sizeof tok) ==
        0);
  char long_ctx[PERMIT_TOKEN_CONTEXT_MAX + 2];
  memset(long_ctx, 'n', sizeof long_ctx - 1);
  long_ctx[sizeof long_ctx - 1] = '\0';
  CHECK(permit_token_make(secret_a, long_ctx, 1, 0, payload, 1, tok,
                          sizeof tok) == PERMIT_EINVAL);
  long_ctx[PERMIT_TOKEN_CONTEXT_MAX] = '\0';
  CHECK(permit_token_make(secret_a, long_ctx, 1, 0, payload, 1, tok,
                          sizeof tok) == 0);
  CHECK(permit_token_open(secret_a, long_ctx, 1, tok, strlen(tok), T0, got,
                          sizeof got, &len, &err) == 0 &&
        len == 1);
  /* Opening: empty, oversized (bounded before decoding) and too short. */
  CHECK(permit_token_open(secret_a, CTX, 1, "", 0, T0, got, sizeof got, &len,
                          &err) == PERMIT_EINVAL);
  CHECK(strstr(err.msg, "malformed") != NULL);
  CHECK(permit_token_open(secret_a, CTX, 1, NULL, 0, T0, got, sizeof got,
                          &len, &err) == PERMIT_EINVAL);
  memset(big, 'A', sizeof big);
  CHECK(permit_token_open(secret_a, CTX, 1, big, sizeof big, T0, got,
                          sizeof got, &len, &err) == PERMIT_EINVAL);
  CHECK(permit_token_open(secret_a, CTX, 1, big, PERMIT_TOKEN_MAX, T0, got,
                          sizeof got, &len, &err) == PERMIT_EINVAL);
  /* 24 bytes: one short of kind, expiry and tag. */
  CHECK(permit_token_open(secret_a, CTX, 0, big, 32, T0, got, sizeof got,
                          &len, &err) == PERMIT_EINVAL);
  /* 25 zero bytes: well formed, kind 0, but no valid tag. */
  char zeros[PERMIT_BASE64URL_LEN(25) + 1];
  uint8_t zero_raw[25] = {0};
  CHECK(permit_base64url_encode(zero_raw, 25, zeros, sizeof zeros) == 0);
  CHECK(permit_token_open(secret_a, CTX, 0, zeros, strlen(zeros), T0, got,
                          sizeof got, &len, &err) == PERMIT_EVERIFY);
  /* 90 bytes: one more payload byte than any token has. */
  uint8_t raw[90] = {1};
  char over[PERMIT_BASE64URL_LEN(90) + 1];
  CHECK(permit_base64url_encode(raw, sizeof raw, over, sizeof over) == 0);
  CHECK(strlen(over) < PERMIT_TOKEN_MAX);
  CHECK(permit_token_open(secret_a, CTX, 1, over, strlen(over), T0, got,
                          sizeof got, &len, &err) == PERMIT_EINVAL);
  /* Bad arguments. */
  CHECK(permit_token_open(NULL, CTX, 1, zeros, strlen(zeros), T0, got,
                          sizeof got, &len, &err) == PERMIT_EINVAL);
  CHECK(permit_token_open(secret_a, CTX, 1, zeros, strlen(zeros), T0, got,
                          sizeof got, NULL, &err) == PERMIT_EINVAL);
  /* An empty payload opens into no buffer at all. */
  CHECK(permit_token_make(secret_a, CTX, 9, 0, NULL, 0, tok, sizeof tok) ==
        0);
  CHECK(permit_token_open(secret_a, CTX, 9, tok, strlen(tok), T0, NULL, 0,
                          &len, &err) == 0 &&
        len == 0);
}

int main(void) {
  for (size_t i = 0; i < sizeof secret_b; i++) secret_b[i] = (uint8_t)(200 - i);
  test_b64_known();
  test_b64_strict();
  test_round_trip();
  test_every_change_fails();
  test_wrong_key_kind_context();
  test_expiry();
  test_limits();
  return test_finish("test_token");
}
