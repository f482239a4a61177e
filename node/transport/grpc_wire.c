#include "permit/grpc_wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/error.h"

static const char *const status_names[] = {
    "OK",         "CANCELLED",          "UNKNOWN",
    "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS",   "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED",      "OUT_OF_RANGE",
    "UNIMPLEMENTED",    "INTERNAL",          "UNAVAILABLE",
    "DATA_LOSS",        "UNAUTHENTICATED"};

const char *permit_grpc_status_name(int code) {
  if (code < 0 || code > 16) return "UNKNOWN";
  return status_names[code];
}

int permit_grpc_parse_timeout(const char *v, size_t len, int64_t *usec) {
  if (len < 2 || len > 9) return PERMIT_EINVAL;
  int64_t n = 0;
  for (size_t i = 0; i + 1 < len; i++) {
    if (v[i] < '0' || v[i] > '9') return PERMIT_EINVAL;
    n = n * 10 + (v[i] - '0');
  }
  /* At most 99,999,999 hours: fits in int64 microseconds. */
  switch (v[len - 1]) {
  case 'H': *usec = n * 3600 * 1000000; break;
  case 'M': *usec = n * 60 * 1000000; break;
  case 'S': *usec = n * 1000000; break;
  case 'm': *usec = n * 1000; break;
  case 'u': *usec = n; break;
  case 'n': *usec = (n + 999) / 1000; break;
  default: return PERMIT_EINVAL;
  }
  return 0;
}

void permit_grpc_format_timeout(int64_t usec, char *out, size_t cap) {
  if (usec < 0) usec = 0;
  /* The value may have 8 digits: pick the finest unit that fits. */
  if (usec < 100000000)
    snprintf(out, cap, "%lldu", (long long)usec);
  else if (usec / 1000 < 100000000)
    snprintf(out, cap, "%lldm", (long long)(usec / 1000));
  else if (usec / 1000000 < 100000000)
    snprintf(out, cap, "%lldS", (long long)(usec / 1000000));
  else
    snprintf(out, cap, "%lldH", (long long)(usec / 3600000000LL));
}

size_t permit_grpc_percent_encode(const char *in, char *out, size_t cap) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  if (cap == 0) return 0;
  for (; *in != '\0'; in++) {
    unsigned char c = (unsigned char)*in;
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      if (o + 1 >= cap) break;
      out[o++] = (char)c;
    } else {
      if (o + 3 >= cap) break;
      out[o++] = '%';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    }
  }
  out[o] = '\0';
  return o;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t permit_grpc_percent_decode(const char *in, size_t len, char *out,
                                  size_t cap) {
  size_t o = 0;
  if (cap == 0) return 0;
  for (size_t i = 0; i < len && o + 1 < cap; i++) {
    int hi, lo;
    if (in[i] == '%' && i + 2 < len && (hi = hexval(in[i + 1])) >= 0 &&
        (lo = hexval(in[i + 2])) >= 0) {
      out[o++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[o++] = in[i];
    }
  }
  out[o] = '\0';
  return o;
}

void permit_grpc_frame_header(uint8_t out[PERMIT_GRPC_FRAME_HEADER],
                              uint32_t len) {
  out[0] = 0;
  out[1] = (uint8_t)(len >> 24);
  out[2] = (uint8_t)(len >> 16);
  out[3] = (uint8_t)(len >> 8);
  out[4] = (uint8_t)len;
}

void permit_grpc_deframer_init(permit_grpc_deframer *d, uint32_t max) {
  memset(d, 0, sizeof *d);
  d->max = max;
}

void permit_grpc_deframer_free(permit_grpc_deframer *d) {
  free(d->msg);
  d->msg = NULL;
}

int permit_grpc_deframer_idle(const permit_grpc_deframer *d) {
  return d->hdr_have == 0;
}

int permit_grpc_deframer_feed(permit_grpc_deframer *d, const uint8_t *data,
                              size_t len, permit_grpc_message_fn fn,
                              void *arg) {
  while (len > 0) {
    if (d->hdr_have < PERMIT_GRPC_FRAME_HEADER) {
      size_t take = PERMIT_GRPC_FRAME_HEADER - d->hdr_have;
      if (take > len) take = len;
      memcpy(d->hdr + d->hdr_have, data, take);
      d->hdr_have += take;
      data += take;
      len -= take;
      if (d->hdr_have < PERMIT_GRPC_FRAME_HEADER) return 0;
      if (d->hdr[0] > 1) return PERMIT_EINVAL;
      d->compressed = d->hdr[0];
      d->need = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
                (uint32_t)d->hdr[3] << 8 | d->hdr[4];
      if (d->need > d->max) return PERMIT_ETOOBIG;
      d->have = 0;
      if (d->need > 0) {
        d->msg = malloc(d->need);
        if (d->msg == NULL) return PERMIT_ENOMEM;
      }
    }
    size_t take = d->need - d->have;
    if (take > len) take = len;
    if (take > 0) {
      memcpy(d->msg + d->have, data, take);
      d->have += (uint32_t)take;
      data += take;
      len -= take;
    }
    if (d->have == d->need) {
      static const uint8_t empty[1];
      uint8_t *msg = d->msg;
      d->msg = NULL;
      d->hdr_have = 0;
      d->messages++;
      int rc = fn(arg, msg != NULL ? msg : empty, d->need, d->compressed);
      free(msg);
      if (rc != 0) return rc;
    }
  }
  return 0;
}

/* Reads a base-128 varint at |*at|; 0 when it runs past |n| or 10 bytes. */
static int pb_varint(const uint8_t *m, size_t n, size_t *at, uint64_t *v) {
  uint64_t x = 0;
  for (unsigned shift = 0; shift < 64 && *at < n; shift += 7) {
    uint8_t b = m[(*at)++];
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 1;
    }
  }
  return 0;
}

int permit_pb_strings_ok(const ProtobufCMessageDescriptor *desc,
                         const uint8_t *m, size_t n, const char **field) {
  size_t at = 0;
  while (at < n) {
    uint64_t key, v;
    if (!pb_varint(m, n, &at, &key)) return 1;
    switch (key & 7) {
    case 0: /* varint */
      if (!pb_varint(m, n, &at, &v)) return 1;
      break;
    case 1: /* 64-bit */
      if (n - at < 8) return 1;
      at += 8;
      break;
    case 5: /* 32-bit */
      if (n - at < 4) return 1;
      at += 4;
      break;
    case 2: { /* length-delimited */
      if (!pb_varint(m, n, &at, &v) || v > n - at) return 1;
      uint64_t num = key >> 3;
      const ProtobufCFieldDescriptor *f =
          num > 0 && num <= UINT32_MAX
              ? protobuf_c_message_descriptor_get_field(desc, (unsigned)num)
              : NULL;
      if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING &&
          memchr(m + at, 0, (size_t)v) != NULL) {
        *field = f->name;
        return 0;
      }
      at += (size_t)v;
      break;
    }
    default: /* groups and the rest: not proto3 */
      return 1;
    }
  }
  return 1;
}
