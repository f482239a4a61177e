#include "permit/util.h"

#include <string.h>
#include <time.h>

#include "permit/error.h"

void permit_hex_encode(const uint8_t *in, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * len] = '\0';
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int permit_hex_decode(const char *in, size_t inlen, uint8_t *out, size_t cap,
                      size_t *outlen) {
  if (inlen % 2 != 0) return PERMIT_EINVAL;
  if (inlen / 2 > cap) return PERMIT_ETOOBIG;
  for (size_t i = 0; i < inlen / 2; i++) {
    int hi = hex_value(in[2 * i]), lo = hex_value(in[2 * i + 1]);
    if (hi < 0 || lo < 0) return PERMIT_EINVAL;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  *outlen = inlen / 2;
  return 0;
}

void permit_put_u64be(uint8_t out[8], uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    out[i] = (uint8_t)v;
    v >>= 8;
  }
}

uint64_t permit_get_u64be(const uint8_t in[8]) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | in[i];
  return v;
}

int permit_memeq_ct(const void *a, const void *b, size_t len) {
  const volatile uint8_t *x = a, *y = b;
  uint8_t diff = 0;
  for (size_t i = 0; i < len; i++) diff |= x[i] ^ y[i];
  return diff == 0;
}

void permit_wipe(void *p, size_t len) {
  /* glibc's explicit_bzero: a memset the compiler may not drop, at
   * memset's speed (a volatile byte loop cost ~1% of an opt-in). */
  if (p != NULL && len > 0) explicit_bzero(p, len);
}

int64_t permit_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
