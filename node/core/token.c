#include "permit/token.h"

#include <string.h>

#include "permit/crypto.h"
#include "permit/util.h"

#define TOKEN_DOMAIN "permit/v1/token\n"
#define TOKEN_TAG_LEN 16
#define TOKEN_HEAD_LEN 9 /* kind and expiry */
#define TOKEN_RAW_MIN (TOKEN_HEAD_LEN + TOKEN_TAG_LEN)
#define TOKEN_RAW_MAX (TOKEN_RAW_MIN + PERMIT_TOKEN_PAYLOAD_MAX)

_Static_assert(PERMIT_BASE64URL_LEN(TOKEN_RAW_MAX) < PERMIT_TOKEN_MAX,
               "PERMIT_TOKEN_MAX must hold the longest token");

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int permit_base64url_encode(const uint8_t *in, size_t len, char *out,
                            size_t cap) {
  if (out == NULL || (in == NULL && len != 0)) return PERMIT_EINVAL;
  /* Checked before the macro so that its multiplication cannot wrap. */
  if (len / 3 > (cap - 1) / 4 || cap <= PERMIT_BASE64URL_LEN(len))
    return PERMIT_ETOOBIG;
  size_t o = 0, i = 0;
  for (; len - i >= 3; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64url_alphabet[v >> 18];
    out[o++] = b64url_alphabet[(v >> 12) & 63];
    out[o++] = b64url_alphabet[(v >> 6) & 63];
    out[o++] = b64url_alphabet[v & 63];
  }
  size_t rest = len - i;
  if (rest > 0) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (rest == 2) v |= (uint32_t)in[i + 1] << 8;
    out[o++] = b64url_alphabet[v >> 18];
    out[o++] = b64url_alphabet[(v >> 12) & 63];
    if (rest == 2) out[o++] = b64url_alphabet[(v >> 6) & 63];
  }
  out[o] = '\0';
  return 0;
}

static int b64url_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

int permit_base64url_decode(const char *in, size_t len, uint8_t *out,
                            size_t cap, size_t *outlen) {
  if (outlen == NULL || (len != 0 && (in == NULL))) return PERMIT_EINVAL;
  if (len % 4 == 1) return PERMIT_EINVAL;
  size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
  if (need > cap) return PERMIT_ETOOBIG;
  if (need != 0 && out == NULL) return PERMIT_EINVAL;
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64url_value(in[i]);
    if (v < 0) return PERMIT_EINVAL;
    acc = (acc << 6 | (uint32_t)v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  /* Left-over bits must be zero, or two strings would decode alike. */
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return PERMIT_EINVAL;
  *outlen = o;
  return 0;
}

static int context_ok(const char *context) {
  if (context == NULL) return 0;
  size_t n = strnlen(context, PERMIT_TOKEN_CONTEXT_MAX + 1);
  /* A line break in the context could make two contexts' MAC inputs meet. */
  return n > 0 && n <= PERMIT_TOKEN_CONTEXT_MAX &&
         memchr(context, '\n', n) == NULL;
}

/* The 16-byte tag of |body| (kind, expiry and payload). */
static int token_tag(const uint8_t secret[32], const char *context,
                     const uint8_t *body, size_t body_len,
                     uint8_t tag[TOKEN_TAG_LEN]) {
  uint8_t msg[sizeof TOKEN_DOMAIN - 1 + PERMIT_TOKEN_CONTEXT_MAX + 1 +
              TOKEN_RAW_MAX];
  uint8_t mac[PERMIT_SHA256_LEN];
  size_t cl = strlen(context), m = 0;
  memcpy(msg, TOKEN_DOMAIN, sizeof TOKEN_DOMAIN - 1);
  m += sizeof TOKEN_DOMAIN - 1;
  memcpy(msg + m, context, cl);
  m += cl;
  msg[m++] = '\n';
  memcpy(msg + m, body, body_len);
  m += body_len;
  int rc = permit_hmac_sha256(secret, 32, msg, m, mac);
  if (rc == 0) memcpy(tag, mac, TOKEN_TAG_LEN);
  /* The payload may identify a buyer: leave no copy on the stack. */
  permit_wipe(msg, sizeof msg);
  permit_wipe(mac, sizeof mac);
  return rc != 0 ? PERMIT_ECRYPTO : 0;
}

int permit_token_make(const uint8_t secret[32], const char *context,
                      uint8_t kind, int64_t expiry_ms, const uint8_t *payload,
                      size_t len, char *out, size_t cap) {
  if (secret == NULL || out == NULL || !context_ok(context) || expiry_ms < 0 ||
      len > PERMIT_TOKEN_PAYLOAD_MAX || (payload == NULL && len != 0))
    return PERMIT_EINVAL;
  size_t raw_len = TOKEN_RAW_MIN + len;
  if (cap <= PERMIT_BASE64URL_LEN(raw_len)) return PERMIT_ETOOBIG;
  uint8_t raw[TOKEN_RAW_MAX];
  raw[0] = kind;
  permit_put_u64be(raw + 1, (uint64_t)expiry_ms);
  if (len > 0) memcpy(raw + TOKEN_HEAD_LEN, payload, len);
  int rc = token_tag(secret, context, raw, TOKEN_HEAD_LEN + len,
                     raw + TOKEN_HEAD_LEN + len);
  if (rc == 0) rc = permit_base64url_encode(raw, raw_len, out, cap);
  permit_wipe(raw, sizeof raw);
  return rc;
}

int permit_token_open(const uint8_t secret[32], const char *context,
                      uint8_t kind, const char *token, size_t token_len,
                      int64_t now_ms, uint8_t *payload, size_t cap,
                      size_t *len, permit_err *err) {
  if (secret == NULL || !context_ok(context) || len == NULL ||
      (payload == NULL && cap != 0) || (token == NULL && token_len != 0))
    return permit_err_set(err, PERMIT_EINVAL, "token: bad arguments");
  /* Bounded before decoding: the length is the attacker's. */
  if (token_len == 0 || token_len >= PERMIT_TOKEN_MAX)
    return permit_err_set(err, PERMIT_EINVAL, "token: malformed (length)");
  uint8_t raw[TOKEN_RAW_MAX];
  size_t raw_len = 0;
  if (permit_base64url_decode(token, token_len, raw, sizeof raw, &raw_len) !=
          0 ||
      raw_len < TOKEN_RAW_MIN)
    return permit_err_set(err, PERMIT_EINVAL, "token: malformed (encoding)");
  if (raw[0] != kind)
    return permit_err_set(err, PERMIT_EINVAL, "token: malformed (kind)");

  size_t body_len = raw_len - TOKEN_TAG_LEN;
  uint8_t tag[TOKEN_TAG_LEN];
  int rc = token_tag(secret, context, raw, body_len, tag);
  if (rc != 0) {
    permit_wipe(raw, sizeof raw);
    return permit_err_set(err, rc, "token: HMAC failed");
  }
  if (!permit_memeq_ct(tag, raw + body_len, TOKEN_TAG_LEN)) {
    permit_wipe(raw, sizeof raw);
    return permit_err_set(err, PERMIT_EVERIFY, "token: does not verify");
  }
  size_t plen = body_len - TOKEN_HEAD_LEN;
  if (plen > cap) {
    permit_wipe(raw, sizeof raw);
    return permit_err_set(err, PERMIT_ETOOBIG,
                          "token: payload of %zu bytes over %zu", plen, cap);
  }
  if (plen > 0) memcpy(payload, raw + TOKEN_HEAD_LEN, plen);
  *len = plen;
  uint64_t expiry = permit_get_u64be(raw + 1);
  permit_wipe(raw, sizeof raw);
  if (expiry != 0 && (now_ms < 0 || (uint64_t)now_ms > expiry))
    return permit_err_set(err, PERMIT_TOKEN_EXPIRED, "token: expired");
  return 0;
}
