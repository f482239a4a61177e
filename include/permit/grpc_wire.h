/*
 * permit/grpc_wire.h - the parts of gRPC's HTTP/2 mapping that are pure
 * byte handling (PROTOCOL-HTTP2.md): status codes, grpc-timeout,
 * grpc-message percent-encoding, and the 5-byte length-prefixed message
 * framing.  No sockets; the transport and the fuzz targets share it.
 */
#ifndef PERMIT_GRPC_WIRE_H
#define PERMIT_GRPC_WIRE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* gRPC status codes. */
typedef enum permit_grpc_status {
  PERMIT_GRPC_OK = 0,
  PERMIT_GRPC_CANCELLED = 1,
  PERMIT_GRPC_UNKNOWN = 2,
  PERMIT_GRPC_INVALID_ARGUMENT = 3,
  PERMIT_GRPC_DEADLINE_EXCEEDED = 4,
  PERMIT_GRPC_NOT_FOUND = 5,
  PERMIT_GRPC_ALREADY_EXISTS = 6,
  PERMIT_GRPC_PERMISSION_DENIED = 7,
  PERMIT_GRPC_RESOURCE_EXHAUSTED = 8,
  PERMIT_GRPC_FAILED_PRECONDITION = 9,
  PERMIT_GRPC_ABORTED = 10,
  PERMIT_GRPC_OUT_OF_RANGE = 11,
  PERMIT_GRPC_UNIMPLEMENTED = 12,
  PERMIT_GRPC_INTERNAL = 13,
  PERMIT_GRPC_UNAVAILABLE = 14,
  PERMIT_GRPC_DATA_LOSS = 15,
  PERMIT_GRPC_UNAUTHENTICATED = 16
} permit_grpc_status;

#define PERMIT_GRPC_FRAME_HEADER 5

/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN" for an out-of-range code. */
const char *permit_grpc_status_name(int code);

/*
 * Parses a grpc-timeout value (1 to 8 digits then one of H M S m u n)
 * into microseconds, rounding nanoseconds up.  Returns 0, or
 * PERMIT_EINVAL for anything else.
 */
int permit_grpc_parse_timeout(const char *v, size_t len, int64_t *usec);

/* Formats |usec| as a grpc-timeout value into |out| (at least 16 bytes). */
void permit_grpc_format_timeout(int64_t usec, char *out, size_t cap);

/*
 * Percent-encodes |in| for grpc-message: bytes outside 0x20..0x7E and '%'
 * become %XX.  Writes at most |cap| - 1 characters and a NUL, cutting only
 * between encoded characters; returns the length written.
 */
size_t permit_grpc_percent_encode(const char *in, char *out, size_t cap);

/* Decodes a grpc-message value; a malformed %XX is kept as it is. */
size_t permit_grpc_percent_decode(const char *in, size_t len, char *out,
                                  size_t cap);

/*
 * Checks the top-level string fields of the encoded protobuf message |m|
 * (|n| bytes) of type |desc| for a NUL byte, at which protobuf-c's decoded
 * C string would silently end.  Returns 1 when there is none (or when the
 * encoding is malformed, which decoding refuses anyway), else 0 with the
 * field's name in |*field|.
 */
int permit_pb_strings_ok(const ProtobufCMessageDescriptor *desc,
                         const uint8_t *m, size_t n, const char **field);

/* Writes the 5-byte prefix of an uncompressed message of |len| bytes. */
void permit_grpc_frame_header(uint8_t out[PERMIT_GRPC_FRAME_HEADER],
                              uint32_t len);

/*
 * Reassembles length-prefixed messages from DATA payloads that split them
 * anywhere.  Memory is bounded by |max| (the largest message accepted):
 * a message's buffer is allocated only once its declared length is known
 * to be within the bound.
 */
typedef struct permit_grpc_deframer {
  uint8_t hdr[PERMIT_GRPC_FRAME_HEADER];
  size_t hdr_have;
  uint8_t *msg;
  uint32_t need, have;
  uint32_t max;
  int compressed;
  uint64_t messages; /* complete messages delivered */
} permit_grpc_deframer;

/* Called for each complete message; non-zero stops feeding with it. */
typedef int (*permit_grpc_message_fn)(void *arg, const uint8_t *msg,
                                      size_t len, int compressed);

void permit_grpc_deframer_init(permit_grpc_deframer *d, uint32_t max);
void permit_grpc_deframer_free(permit_grpc_deframer *d);

/*
 * Feeds |len| bytes.  Returns 0, PERMIT_ETOOBIG when a message declares a
 * length over |max| (the stream must then be failed with
 * RESOURCE_EXHAUSTED), PERMIT_EINVAL for a flag byte other than 0 or 1,
 * PERMIT_ENOMEM, or the callback's non-zero value.  After an error the
 * deframer must not be fed again.
 */
int permit_grpc_deframer_feed(permit_grpc_deframer *d, const uint8_t *data,
                              size_t len, permit_grpc_message_fn fn,
                              void *arg);

/* True when no partial message is buffered (a clean end of stream). */
int permit_grpc_deframer_idle(const permit_grpc_deframer *d);

#endif
