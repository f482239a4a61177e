/*
 * permit/token.h - MACed capability tokens for URLs, and the strict
 * base64url they are written in.
 *
 * A token is the unpadded base64url (RFC 4648 section 5) of
 *
 *   kind (1) || expiry_ms (8, big-endian; 0 = never) || payload (0..64)
 *   || tag (16)
 *
 * where tag is the first 16 bytes of
 *
 *   HMAC-SHA256(secret, "permit/v1/token\n" || context || "\n" || kind
 *               || expiry_ms || payload).
 *
 * |kind| separates the uses of one secret (a consent-centre link cannot be
 * replayed as an unsubscribe link); |context| is a caller string such as
 * the node's name, so that a token of one node is worthless at another
 * even if they shared a secret.  The payload is authenticated, not
 * encrypted: anyone holding the token can read it.
 */
#ifndef PERMIT_TOKEN_H
#define PERMIT_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "permit/error.h"

/* Longest token string, including its NUL. */
#define PERMIT_TOKEN_MAX 160
/* Longest payload a token carries. */
#define PERMIT_TOKEN_PAYLOAD_MAX 64
/* Longest |context|, in bytes. */
#define PERMIT_TOKEN_CONTEXT_MAX 255

/*
 * A positive result of permit_token_open(): the tag is valid but the
 * token's expiry has passed.  The payload is still filled in, so that a
 * caller can say "this link has expired" rather than "this link is bad".
 */
#define PERMIT_TOKEN_EXPIRED 1

/* Characters of the unpadded base64url of |n| bytes, without the NUL. */
#define PERMIT_BASE64URL_LEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))

/*
 * Writes the unpadded base64url of |len| bytes of |in| to |out|, which
 * holds |cap| bytes and is NUL-terminated.  Returns PERMIT_EINVAL when
 * |out| is NULL or |in| is NULL with |len| non-zero, PERMIT_ETOOBIG when
 * |cap| is under PERMIT_BASE64URL_LEN(len) + 1.
 */
int permit_base64url_encode(const uint8_t *in, size_t len, char *out,
                            size_t cap);

/*
 * Decodes |len| characters of unpadded base64url at |in| into |out|
 * (capacity |cap|) and stores the byte count in |*outlen|.  Strict: only
 * A-Z a-z 0-9 - _, no padding or white space, no length of the form
 * 4k+1, and the unused low bits of the last character must be zero, so
 * that every byte string has exactly one encoding.  Returns PERMIT_EINVAL
 * for input that breaks these rules, PERMIT_ETOOBIG when |cap| is too
 * small.
 */
int permit_base64url_decode(const char *in, size_t len, uint8_t *out,
                            size_t cap, size_t *outlen);

/*
 * Makes a token of |kind| carrying |len| bytes of |payload| (NULL when
 * |len| is 0), valid until |expiry_ms| (Unix milliseconds, 0 for never),
 * and writes it NUL-terminated to |out| (capacity |cap|;
 * PERMIT_TOKEN_MAX always suffices).  |context| must be 1 to
 * PERMIT_TOKEN_CONTEXT_MAX bytes without a line break.
 *
 * Returns 0; PERMIT_EINVAL for a NULL |secret| or |out|, a bad |context|,
 * a negative |expiry_ms| or a payload over PERMIT_TOKEN_PAYLOAD_MAX;
 * PERMIT_ETOOBIG when |cap| is too small; PERMIT_ECRYPTO when HMAC fails.
 */
int permit_token_make(const uint8_t secret[32], const char *context,
                      uint8_t kind, int64_t expiry_ms, const uint8_t *payload,
                      size_t len, char *out, size_t cap);

/*
 * Checks |token_len| characters of |token| (need not be NUL-terminated)
 * as a token of |kind| for |context| under |secret| at time |now_ms|, and
 * on success copies its payload to |payload| (capacity |cap|) and its
 * length to |*len|.
 *
 * Returns
 *   0                     valid;
 *   PERMIT_TOKEN_EXPIRED  valid tag, but now_ms > expiry (payload filled);
 *   PERMIT_EINVAL         "malformed": too long, not strict base64url, a
 *                         wrong length or another kind (also for bad
 *                         arguments);
 *   PERMIT_EVERIFY        the tag does not match (a forged or altered
 *                         token, or another secret or context);
 *   PERMIT_ETOOBIG        the payload does not fit in |cap|;
 *   PERMIT_ECRYPTO        HMAC failed.
 * |err|, when not NULL, gets a message that never contains the token.
 * The payload is written only for 0 and PERMIT_TOKEN_EXPIRED.
 */
int permit_token_open(const uint8_t secret[32], const char *context,
                      uint8_t kind, const char *token, size_t token_len,
                      int64_t now_ms, uint8_t *payload, size_t cap,
                      size_t *len, permit_err *err);

#endif
