/*
 * permit/util.h - small byte helpers shared by every module.
 */
#ifndef PERMIT_UTIL_H
#define PERMIT_UTIL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Writes the lower-case hex of |len| bytes of |in| to |out|, which must
 * have room for 2*len+1 characters; |out| is NUL-terminated.
 */
void permit_hex_encode(const uint8_t *in, size_t len, char *out);

/*
 * Decodes the hex string |in| of |inlen| characters into |out| (capacity
 * |cap|).  Upper and lower case are accepted.  On success stores the byte
 * count in |*outlen| and returns 0; returns PERMIT_EINVAL for an odd length
 * or a non-hex character and PERMIT_ETOOBIG when |cap| is too small.
 */
int permit_hex_decode(const char *in, size_t inlen, uint8_t *out, size_t cap,
                      size_t *outlen);

/* Big-endian 64-bit load and store. */
void permit_put_u64be(uint8_t out[8], uint64_t v);
uint64_t permit_get_u64be(const uint8_t in[8]);

/* Compares |len| bytes in time that does not depend on their contents. */
int permit_memeq_ct(const void *a, const void *b, size_t len);

/* Overwrites |len| bytes at |p| in a way the compiler will not remove. */
void permit_wipe(void *p, size_t len);

/* Wall clock in milliseconds since the Unix epoch. */
int64_t permit_now_ms(void);

#endif
