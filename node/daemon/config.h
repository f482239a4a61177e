/*
 * config.h - the node's configuration file (INI, written by permitctl
 * init), shared by permitd and permitctl.
 */
#ifndef PERMIT_DAEMON_CONFIG_H
#define PERMIT_DAEMON_CONFIG_H

#include <stdio.h>

#include "permit/server.h"

typedef struct permit_config {
  char name[254];
  int roles;              /* PERMIT_ROLE_* bits */
  char data[4096];        /* absolute or relative to the caller's cwd */
  char peer_listen[300];  /* host:port */
  char peer_endpoint[300];
  char api_listen[300];
  int api_tls;
  char api_token[256];
  char consent_base[512];
  char public_listen[300]; /* host:port; "" = no public listener */
  char public_cert[4096];  /* PEM chain; relative to the file's folder */
  char public_key[4096];   /* PEM key, unencrypted */
  int erased_handover_hours; /* 0 to 720 */
  int min_free_disk_mb;      /* 0: no check */
  permit_server_limits lim;
} permit_config;

/* Defaults (no file). */
void permit_config_defaults(permit_config *c);

/*
 * Reads |path| over |c| (which holds defaults).  A relative data
 * directory is taken relative to the file's folder.  Unknown sections or
 * keys and bad values are errors naming the line.
 */
int permit_config_load(const char *path, permit_config *c, char *err,
                       size_t errcap);

/*
 * permit_config_load() on a file already open for reading (not closed
 * here); |path| names it in errors and gives the folder relative paths
 * are taken from.  Separate so that the fuzz target can parse bytes from
 * memory.
 */
int permit_config_parse(FILE *f, const char *path, permit_config *c,
                        char *err, size_t errcap);

/* Writes a fully commented file for |c|; refuses to overwrite. */
int permit_config_write(const char *path, const permit_config *c, char *err,
                        size_t errcap);

/* "issuer", "audience" or "both" into PERMIT_ROLE_* bits; -1 if none. */
int permit_config_parse_roles(const char *s);
const char *permit_config_roles_name(int roles);

/* NAME=VALUE or (NAME, VALUE) for one of the server limits. */
int permit_config_set_limit(permit_server_limits *l, const char *name,
                            const char *value);

#endif
