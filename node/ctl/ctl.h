/*
 * ctl.h - what permitctl's commands share (ctl.c): reaching the running
 * node's local API, output files, base64, timestamps and quoting.
 */
#ifndef PERMITCTL_CTL_H
#define PERMITCTL_CTL_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "config.h"
#include "permit/client.h"
#include "permit/tls.h"

/* Where the node's local API is, and how to reach it. */
typedef struct ctl_api {
  permit_client_config cc;
  char host[300];
  SSL_CTX *tls;
  permit_pinset *pins;
  int roles;            /* PERMIT_ROLE_* bits, as the node's config says */
  char addr[320];       /* host:port actually dialled, for messages */
} ctl_api;

/*
 * Fills |a| from the node's configuration: the port it really bound
 * (DATA/ports.json) when present, its bearer token, and for a TLS API a
 * context that trusts exactly the node's own identity key.  Prints what
 * is wrong (prefixed with |cmd|) and returns -1; ctl_api_close() is safe
 * either way.
 */
int ctl_api_open(const permit_config *c, ctl_api *a, const char *cmd);
void ctl_api_close(ctl_api *a);

/*
 * When a call to |path| (a gRPC method path) ended with |status| because
 * the node lacks the role that method's service needs, as far as the
 * node's configuration says: " (the node at HOST:PORT does not have the
 * ROLE role; ...)" in |buf|.  Otherwise "".  Returns |buf|.
 */
const char *ctl_role_hint(const ctl_api *a, const char *path, int status,
                          char *buf, size_t cap);

/*
 * An output file written through a temporary file next to it, then
 * renamed over it: a reader sees the old file or the whole new one.
 */
typedef struct ctl_out {
  FILE *f;
  const char *path;
  int err; /* errno of a failed write, when the writer saw one */
  char tmp[4200];
} ctl_out;

/*
 * Checks that |path| may be (re)written by ctl_out_open(): not empty, not
 * ending in '/', and either missing or a regular file (lstat: a symlink,
 * device, FIFO, socket or directory is refused, never replaced).  Prints
 * why not, prefixed with |cmd|, and returns the exit code (2 for a path
 * that cannot name a file, 1 for one that names something else); 0 when
 * it may.
 */
int ctl_out_check(const char *path, const char *cmd);

/*
 * ctl_out_check() again, then creates the temporary file (O_EXCL, so it
 * never follows a link or reuses a file).  Returns the exit code as
 * ctl_out_check() does, or 1 when it cannot be created (printed).  |path|
 * is kept: it must outlive |o|.
 */
int ctl_out_open(ctl_out *o, const char *path, const char *cmd);

/*
 * Closes |o|: when |keep| and no write to |o->f| failed, flushes, syncs
 * and renames the temporary file over the path (0, or 1 with the error
 * printed, |o->err| for a failed write); otherwise removes it (returns 1,
 * printing why only when |keep|).
 */
int ctl_out_close(ctl_out *o, int keep, const char *cmd);

/* Standard base64 with padding, malloc'd and NUL-terminated; NULL when
 * out of memory or too long. */
char *ctl_b64_encode(const uint8_t *in, size_t len);

/* |ms| since the epoch as 2026-11-22T18:42:43Z. */
void ctl_iso_time(int64_t ms, char *buf, size_t cap);

/*
 * |s| with its control characters, backslashes and bytes above 0x7e
 * written as \n, \t, \\ or \xHH, cut to fit |cap|: user input quoted
 * in a message cannot break the line or drive the terminal.  Returns
 * |buf|.
 */
const char *ctl_escape(const char *s, char *buf, size_t cap);

/* True when |s| holds no control character (C0 or DEL) and no space. */
int ctl_is_token(const char *s);

#endif
