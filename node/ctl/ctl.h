/*
 * ctl.h - what permitctl's commands share (ctl.c): reaching the running
 * node's local API, base64 and timestamps.
 */
#ifndef PERMITCTL_CTL_H
#define PERMITCTL_CTL_H

#include <openssl/ssl.h>
#include <stddef.h>
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

/* Standard base64 with padding, malloc'd and NUL-terminated; NULL when
 * out of memory or too long. */
char *ctl_b64_encode(const uint8_t *in, size_t len);

/* |ms| since the epoch as 2026-11-22T18:42:43Z. */
void ctl_iso_time(int64_t ms, char *buf, size_t cap);

#endif
