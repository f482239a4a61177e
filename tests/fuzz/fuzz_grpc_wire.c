/*
 * fuzz_grpc_wire - gRPC's byte handling (permit/grpc_wire.h): the
 * length-prefixed message deframer a peer's DATA frames go through, the
 * grpc-timeout parser and the grpc-message percent-encoding.
 *
 * Input: max selector (1) || chunk seed (1) || stream.
 *
 * The stream is deframed twice, in one call and in chunks whose sizes
 * come from the seed, and both must deliver the same messages and end
 * the same way: where a DATA frame splits a message must not matter.  The
 * seed also makes the callback stop the feed after a few messages.  The
 * same bytes then go to the timeout parser (a parsed value must format
 * and parse again to no more than itself) and to the percent decoder and
 * encoder (encoding then decoding gives back the string), and to the
 * NUL check of a request's string fields.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/grpc_wire.h"
#include "permit/v1/service.pb-c.h"

/* What one deframing saw: a running hash of every message, in order.
 * The callback stops the feed after |stop| messages (0: never). */
typedef struct seen {
  uint32_t max;
  uint64_t stop;
  uint64_t count;
  uint64_t hash;
} seen;

static int on_message(void *arg, const uint8_t *msg, size_t len,
                      int compressed) {
  seen *s = arg;
  FUZZ_CHECK(len <= s->max);
  FUZZ_CHECK(compressed == 0 || compressed == 1);
  /* FNV-1a over the length, flag and every byte (ASan checks the reads). */
  uint64_t h = s->hash ^ (uint64_t)len ^ ((uint64_t)compressed << 40);
  h *= 0x100000001b3ULL;
  for (size_t i = 0; i < len; i++) h = (h ^ msg[i]) * 0x100000001b3ULL;
  s->hash = h;
  s->count++;
  return s->count == s->stop ? 1 : 0;
}

static void deframe(const uint8_t *data, size_t len, uint32_t max,
                    uint8_t chunk_seed) {
  seen whole = {.max = max, .stop = chunk_seed % 8},
       parts = {.max = max, .stop = chunk_seed % 8};
  permit_grpc_deframer d;

  permit_grpc_deframer_init(&d, max);
  int rc_whole = permit_grpc_deframer_feed(&d, data, len, on_message, &whole);
  int idle_whole = permit_grpc_deframer_idle(&d);
  FUZZ_CHECK(d.messages == whole.count);
  permit_grpc_deframer_free(&d);

  /* Chunk sizes 1..32 from a small LCG; an empty feed between chunks
   * must change nothing. */
  permit_grpc_deframer_init(&d, max);
  uint32_t x = chunk_seed;
  int rc_parts = 0;
  size_t off = 0;
  while (off < len && rc_parts == 0) {
    x = x * 1103515245u + 12345u;
    size_t n = 1 + (x >> 16) % 32;
    if (n > len - off) n = len - off;
    rc_parts = permit_grpc_deframer_feed(&d, data + off, n, on_message, &parts);
    if (rc_parts == 0)
      rc_parts = permit_grpc_deframer_feed(&d, data + off, 0, on_message,
                                           &parts);
    off += n;
  }
  int idle_parts = permit_grpc_deframer_idle(&d);
  permit_grpc_deframer_free(&d);

  FUZZ_CHECK(rc_whole == rc_parts);
  FUZZ_CHECK(rc_whole == 0 || rc_whole == PERMIT_EINVAL ||
             rc_whole == PERMIT_ETOOBIG || rc_whole == 1);
  FUZZ_CHECK(rc_whole != 1 || whole.count == whole.stop);
  FUZZ_CHECK(whole.count == parts.count);
  FUZZ_CHECK(whole.hash == parts.hash);
  if (rc_whole == 0) FUZZ_CHECK(idle_whole == idle_parts);
}

static void timeout(const uint8_t *data, size_t len) {
  int64_t usec = -1;
  if (permit_grpc_parse_timeout((const char *)data, len, &usec) != 0) return;
  FUZZ_CHECK(usec >= 0);
  /* Formatting may round down to a coarser unit, never up. */
  char buf[32];
  permit_grpc_format_timeout(usec, buf, sizeof buf);
  int64_t again = -1;
  FUZZ_CHECK(permit_grpc_parse_timeout(buf, strlen(buf), &again) == 0);
  FUZZ_CHECK(again <= usec);
  FUZZ_CHECK(usec - again < 3600LL * 1000000);
}

static void percent(const uint8_t *data, size_t len, uint8_t cap_seed) {
  /* Decoding into a buffer of any size stays inside it. */
  size_t cap = cap_seed % 64;
  char *small = malloc(cap ? cap : 1);
  if (small == NULL) abort();
  size_t n = permit_grpc_percent_decode((const char *)data, len, small, cap);
  FUZZ_CHECK(cap == 0 ? n == 0 : n < cap && small[n] == '\0');
  free(small);

  /* Encoding a C string with room to spare, then decoding, is lossless;
   * with too little room it cuts between characters. */
  char *s = fuzz_cstr(data, len);
  size_t slen = strlen(s);
  char *enc = malloc(3 * slen + 1);
  char *dec = malloc(slen + 1);
  if (enc == NULL || dec == NULL) abort();
  size_t el = permit_grpc_percent_encode(s, enc, 3 * slen + 1);
  FUZZ_CHECK(el == strlen(enc) && el <= 3 * slen);
  for (size_t i = 0; i < el; i++)
    FUZZ_CHECK(enc[i] >= 0x20 && enc[i] <= 0x7e);
  size_t dl = permit_grpc_percent_decode(enc, el, dec, slen + 1);
  FUZZ_CHECK(dl == slen && memcmp(dec, s, slen) == 0);
  if (slen > 0) {
    size_t cut = permit_grpc_percent_encode(s, enc, 1 + cap_seed % slen);
    FUZZ_CHECK(cut == strlen(enc) && cut <= (size_t)cap_seed % slen);
    FUZZ_CHECK(cut == 0 || enc[cut - 1] != '%');
    FUZZ_CHECK(cut < 2 || enc[cut - 2] != '%');
  }
  free(dec);
  free(enc);
  free(s);
}

/* The NUL check of string fields: never reads past the input, and a
 * refusal names a string field of the type and means a NUL is there. */
static void strings(const uint8_t *in, size_t len) {
  const char *field = NULL;
  if (permit_pb_strings_ok(&permit__v1__record_opt_in_request__descriptor,
                           in, len, &field))
    return;
  FUZZ_CHECK(field != NULL && memchr(in, 0, len) != NULL);
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(
          &permit__v1__record_opt_in_request__descriptor, field);
  FUZZ_CHECK(f != NULL && f->type == PROTOBUF_C_TYPE_STRING);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint32_t maxes[] = {0, 1, 5, 64, 4096, 1u << 20};
  fuzz_reader r;
  fuzz_reader_init(&r, data, size);
  uint8_t max_sel = fuzz_u8(&r);
  uint8_t seed = fuzz_u8(&r);
  size_t len;
  const uint8_t *stream = fuzz_rest(&r, &len);
  deframe(stream, len, maxes[max_sel % 6], seed);
  timeout(stream, len);
  percent(stream, len, seed);
  strings(stream, len);
  return 0;
}
