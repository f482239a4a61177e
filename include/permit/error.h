/*
 * permit/error.h - error codes and the caller-supplied error message.
 *
 * Every fallible function returns 0 on success or one of the negative
 * PERMIT_E* codes below.  Functions whose failures a person will read also
 * take a |permit_err *|: when it is not NULL, a failing call writes one line
 * into it that says what was wrong ("record: audience is empty").
 */
#ifndef PERMIT_ERROR_H
#define PERMIT_ERROR_H

#include <stddef.h>

enum {
  PERMIT_OK = 0,
  PERMIT_EINVAL = -1,    /* malformed, out-of-range or missing input */
  PERMIT_ENOMEM = -2,    /* allocation failed */
  PERMIT_ECRYPTO = -3,   /* the crypto library failed (not the input) */
  PERMIT_EVERIFY = -4,   /* a signature, tag or proof did not verify */
  PERMIT_EIO = -5,       /* a file or storage operation failed */
  PERMIT_ENOTFOUND = -6, /* no such key, record or entry */
  PERMIT_EEXIST = -7,    /* it is already there */
  PERMIT_EPERM = -8,     /* unsafe file permissions or access refused */
  PERMIT_ETOOBIG = -9,   /* input over a configured bound */
  PERMIT_ECORRUPT = -10  /* stored data is inconsistent with itself */
};

#define PERMIT_ERR_MSG_LEN 256

/* A one-line, human-readable description of a failure. */
typedef struct permit_err {
  int code;
  char msg[PERMIT_ERR_MSG_LEN];
} permit_err;

/*
 * Returns a short static description of |code| ("invalid argument").
 */
const char *permit_strerror(int code);

/*
 * Formats a message into |err| (ignored when |err| is NULL), sets
 * err->code to |code| and returns |code|, so that a failing path can say
 * `return permit_err_set(err, PERMIT_EINVAL, "bad %s", what);`.
 */
int permit_err_set(permit_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Empties |err| (no-op when NULL). */
void permit_err_clear(permit_err *err);

#endif
