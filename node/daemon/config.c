#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "permit/node.h"

void permit_config_defaults(permit_config *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "permit.localhost");
  c->roles = PERMIT_ROLE_ISSUER | PERMIT_ROLE_AUDIENCE;
  snprintf(c->data, sizeof c->data, "./permit-data");
  snprintf(c->peer_listen, sizeof c->peer_listen, "127.0.0.1:7443");
  snprintf(c->api_listen, sizeof c->api_listen, "127.0.0.1:7080");
  c->erased_handover_hours = 24;
  c->min_free_disk_mb = 64;
  permit_server_limits_default(&c->lim);
}

int permit_config_parse_roles(const char *s) {
  if (strcmp(s, "issuer") == 0) return PERMIT_ROLE_ISSUER;
  if (strcmp(s, "audience") == 0) return PERMIT_ROLE_AUDIENCE;
  if (strcmp(s, "both") == 0) return PERMIT_ROLE_ISSUER | PERMIT_ROLE_AUDIENCE;
  return -1;
}

const char *permit_config_roles_name(int roles) {
  if (roles == PERMIT_ROLE_ISSUER) return "issuer";
  if (roles == PERMIT_ROLE_AUDIENCE) return "audience";
  return "both";
}

int permit_config_set_limit(permit_server_limits *l, const char *name,
                            const char *value) {
  static const struct {
    const char *name;
    long min, max;
  } known[] = {{"max-message", 1024, 64L << 20},
               {"max-streams", 1, 10000},
               {"max-header-list", 1024, 1 << 20},
               {"max-connections", 1, 1000000},
               {"handshake-timeout-ms", 100, 600000},
               {"idle-timeout-ms", 100, 86400000},
               {"keepalive-ms", 100, 86400000},
               {"keepalive-timeout-ms", 100, 600000}};
  char *end;
  errno = 0;
  long v = strtol(value, &end, 10);
  if (*value == '\0' || *end != '\0' || errno != 0) return -1;
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    if (strcmp(name, known[i].name) != 0) continue;
    if (v < known[i].min || v > known[i].max) return -1;
    switch (i) {
    case 0: l->max_message = (uint32_t)v; break;
    case 1: l->max_concurrent_streams = (uint32_t)v; break;
    case 2: l->max_header_list = (uint32_t)v; break;
    case 3: l->max_connections = (int)v; break;
    case 4: l->handshake_timeout_ms = (int)v; break;
    case 5: l->idle_timeout_ms = (int)v; break;
    case 6: l->keepalive_ms = (int)v; break;
    case 7: l->keepalive_timeout_ms = (int)v; break;
    }
    return 0;
  }
  return -1;
}

typedef struct load_ctx {
  permit_config *c;
  char why[200];
  char dir[4096];
} load_ctx;

static int set_str(char *dst, size_t cap, const char *v) {
  if (strlen(v) >= cap) return 0;
  snprintf(dst, cap, "%s", v);
  return 1;
}

static int is_hostport(const char *v) {
  const char *colon = strrchr(v, ':');
  if (colon == NULL || colon == v) return 0;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  return *end == '\0' && end != colon + 1 && p >= 0 && p <= 65535;
}

/* inih calls this per key; 0 stops the parse with an error. */
static int on_key(void *arg, const char *sec, const char *key,
                  const char *v) {
  load_ctx *lc = arg;
  permit_config *c = lc->c;
#define IS(s, k) (strcmp(sec, s) == 0 && strcmp(key, k) == 0)
  if (IS("node", "name")) {
    if (!set_str(c->name, sizeof c->name, v) ||
        permit_name_validate(v, NULL) != 0) {
      snprintf(lc->why, sizeof lc->why, "node.name \"%.60s\" is not a node name",
               v);
      return 0;
    }
  } else if (IS("node", "roles")) {
    c->roles = permit_config_parse_roles(v);
    if (c->roles < 0) {
      snprintf(lc->why, sizeof lc->why,
               "node.roles must be issuer, audience or both");
      return 0;
    }
  } else if (IS("node", "data")) {
    int ok = v[0] == '/' ? set_str(c->data, sizeof c->data, v)
                         : snprintf(c->data, sizeof c->data, "%s/%s", lc->dir,
                                    v) < (int)sizeof c->data;
    if (!ok || v[0] == '\0') {
      snprintf(lc->why, sizeof lc->why, "node.data is empty or too long");
      return 0;
    }
  } else if (IS("peer", "listen") || IS("peer", "endpoint") ||
             IS("api", "listen")) {
    char *dst = IS("peer", "listen")     ? c->peer_listen
                : IS("peer", "endpoint") ? c->peer_endpoint
                                         : c->api_listen;
    if (!is_hostport(v) || !set_str(dst, 300, v)) {
      snprintf(lc->why, sizeof lc->why, "%s.%s wants HOST:PORT", sec, key);
      return 0;
    }
  } else if (IS("api", "tls")) {
    if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
      snprintf(lc->why, sizeof lc->why, "api.tls must be true or false");
      return 0;
    }
    c->api_tls = strcmp(v, "true") == 0;
  } else if (IS("api", "token")) {
    size_t l = strlen(v);
    if ((l > 0 && l < 16) || !set_str(c->api_token, sizeof c->api_token, v)) {
      snprintf(lc->why, sizeof lc->why,
               "api.token must be empty or 16 to 255 characters");
      return 0;
    }
  } else if (IS("public", "listen")) {
    if ((v[0] != '\0' && !is_hostport(v)) ||
        !set_str(c->public_listen, sizeof c->public_listen, v)) {
      snprintf(lc->why, sizeof lc->why,
               "public.listen wants HOST:PORT (or nothing: no listener)");
      return 0;
    }
  } else if (IS("public", "cert") || IS("public", "key")) {
    char *dst = IS("public", "cert") ? c->public_cert : c->public_key;
    int ok = v[0] == '/' ? set_str(dst, 4096, v)
                         : snprintf(dst, 4096, "%s/%s", lc->dir, v) < 4096;
    if (!ok || v[0] == '\0') {
      snprintf(lc->why, sizeof lc->why, "public.%s is empty or too long",
               key);
      return 0;
    }
  } else if (IS("consent", "erased_handover_hours")) {
    char *end;
    long h = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || h < 0 || h > 720) {
      snprintf(lc->why, sizeof lc->why,
               "consent.erased_handover_hours must be 0 to 720");
      return 0;
    }
    c->erased_handover_hours = (int)h;
  } else if (IS("consent", "base_url")) {
    if (!set_str(c->consent_base, sizeof c->consent_base, v) ||
        strncmp(v, "https://", 8) != 0) {
      snprintf(lc->why, sizeof lc->why,
               "consent.base_url must be an https:// URL");
      return 0;
    }
  } else if (IS("limits", "min-free-disk-mb")) {
    char *end;
    long mb = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || mb < 0 || mb > 1048576) {
      snprintf(lc->why, sizeof lc->why,
               "limits.min-free-disk-mb must be 0 to 1048576");
      return 0;
    }
    c->min_free_disk_mb = (int)mb;
  } else if (strcmp(sec, "limits") == 0) {
    if (permit_config_set_limit(&c->lim, key, v) != 0) {
      snprintf(lc->why, sizeof lc->why, "limits.%.40s: unknown or out of range",
               key);
      return 0;
    }
  } else {
    snprintf(lc->why, sizeof lc->why, "unknown setting %.30s.%.40s", sec, key);
    return 0;
  }
#undef IS
  return 1;
}

int permit_config_load(const char *path, permit_config *c, char *err,
                       size_t errcap) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    snprintf(err, errcap, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  int rc = permit_config_parse(f, path, c, err, errcap);
  fclose(f);
  return rc;
}

/* Far above any real configuration. */
#define CONFIG_FILE_MAX (1 << 20)
/* libinih reads a line into a buffer of INI_MAX_LINE bytes and takes what
 * does not fit for a line of its own: a longer line would be misread. */
#define CONFIG_LINE_MAX (INI_MAX_LINE - 1)

/* Reads |f| whole into a NUL-terminated buffer and checks that libinih
 * will read it as written: no NUL byte, no line over CONFIG_LINE_MAX. */
static char *config_read(FILE *f, const char *path, char *err,
                         size_t errcap) {
  size_t n = 0, cap = 0;
  char *buf = NULL;
  for (;;) {
    if (n == cap) {
      size_t want = cap == 0 ? 4096 : 2 * cap;
      char *grown = want <= 2 * CONFIG_FILE_MAX ? realloc(buf, want + 1)
                                                 : NULL;
      if (grown == NULL) {
        snprintf(err, errcap, "%s: out of memory", path);
        free(buf);
        return NULL;
      }
      buf = grown;
      cap = want;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (ferror(f) || n > CONFIG_FILE_MAX) {
      snprintf(err, errcap, ferror(f) ? "cannot read %s" : "%s is larger "
               "than 1 MiB: not a configuration file", path);
      free(buf);
      return NULL;
    }
    if (got == 0) break;
  }
  buf[n] = '\0';
  size_t line = 1, len = 0;
  for (size_t i = 0; i < n; i++) {
    if (buf[i] == '\0') {
      snprintf(err, errcap, "%s line %zu: a NUL byte (not a text file?)",
               path, line);
      free(buf);
      return NULL;
    }
    if (buf[i] == '\n') {
      line++;
      len = 0;
    } else if (buf[i] != '\r' && ++len > CONFIG_LINE_MAX) {
      snprintf(err, errcap, "%s line %zu: longer than %d characters, more "
               "than permitd reads in one line", path, line, CONFIG_LINE_MAX);
      free(buf);
      return NULL;
    }
  }
  return buf;
}

int permit_config_parse(FILE *f, const char *path, permit_config *c,
                        char *err, size_t errcap) {
  load_ctx lc = {.c = c};
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    snprintf(lc.dir, sizeof lc.dir, ".");
  else
    snprintf(lc.dir, sizeof lc.dir, "%.*s", (int)(slash - path), path);
  char *text = config_read(f, path, err, errcap);
  if (text == NULL) return -1;
  int line = ini_parse_string(text, on_key, &lc);
  free(text);
  if (line != 0) {
    snprintf(err, errcap, "%s line %d: %s", path, line,
             lc.why[0] ? lc.why : "not an INI line");
    return -1;
  }
  if (c->peer_endpoint[0] == '\0')
    snprintf(c->peer_endpoint, sizeof c->peer_endpoint, "%s", c->peer_listen);
  return 0;
}

int permit_config_write(const char *path, const permit_config *c, char *err,
                        size_t errcap) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    snprintf(err, errcap, "cannot create %s: %s", path, strerror(errno));
    return -1;
  }
  FILE *f = fdopen(fd, "w");
  fprintf(f,
      "# Permit node configuration, written by permitctl init.\n"
      "# permitd --config THIS_FILE runs the node.\n"
      "\n"
      "[node]\n"
      "# The node's name, DNS-like and lower case; peers know it by it.\n"
      "name = %s\n"
      "# issuer: collects buyers' opt-ins (a reseller);\n"
      "# audience: receives them for its own lists (a venue); or both.\n"
      "roles = %s\n"
      "# Keys, database and lock; relative to this file's folder.\n"
      "data = .\n"
      "\n"
      "[peer]\n"
      "# Where the peer listener binds: TLS 1.3, mutual, pinned keys.\n"
      "listen = %s\n"
      "# The address peers dial, as written in this node's card.\n"
      "endpoint = %s\n"
      "\n"
      "[api]\n"
      "# The local API for this organisation's own systems (gRPC, and\n"
      "# GET /metrics).  Keep it on a private address.\n"
      "listen = %s\n"
      "# true: TLS with this node's certificate; false: h2c.\n"
      "tls = %s\n"
      "# When set (16+ characters), required as \"authorization: Bearer\".\n"
      "token = %s\n"
      "\n"
      "[public]\n"
      "# The public HTTPS listener (HTTP/2): the buyers' consent centre on\n"
      "# an issuer, one-click unsubscribe links (RFC 8058) on an audience.\n"
      "# Empty: none.\n"
      "listen = %s\n"
      "# Its certificate chain and key (PEM), relative to this folder.\n"
      "# When both are missing at start, a self-signed P-256 pair is made\n"
      "# (fine on 127.0.0.1; use a CA's for buyers on the internet).\n"
      "cert = public.crt\n"
      "key = public.key\n"
      "\n"
      "[consent]\n"
      "# The public listener's address as buyers reach it: consent links\n"
      "# (<base_url>/c/...) and unsubscribe links (<base_url>/u/...) start\n"
      "# with it, and form posts must come from its origin.\n"
      "base_url = %s\n"
      "# (audience) An erased buyer's contact is handed once to a\n"
      "# WatchContacts watcher, so the venue's mailing tool can delete it;\n"
      "# until then it is kept sealed under a one-time key, at most this\n"
      "# many hours.  0: shredded at once, never handed over.\n"
      "erased_handover_hours = %d\n"
      "\n"
      "[limits]\n"
      "# Largest gRPC message, bytes.\n"
      "max-message = %u\n"
      "# Concurrent streams per HTTP/2 connection.\n"
      "max-streams = %u\n"
      "# Bytes of one request header block.\n"
      "max-header-list = %u\n"
      "# Open connections, all listeners together.\n"
      "max-connections = %d\n"
      "# From accept to the first HTTP/2 bytes (TLS handshake included).\n"
      "handshake-timeout-ms = %d\n"
      "# A connection with no stream open is closed after this.\n"
      "idle-timeout-ms = %d\n"
      "# A client with streams open that has sent nothing for this long\n"
      "# (noticed within twice this) is sent a PING ...\n"
      "keepalive-ms = %d\n"
      "# ... and the connection is closed when nothing comes back within\n"
      "# this (a client gone without closing its connection).\n"
      "keepalive-timeout-ms = %d\n"
      "# Disk space kept free: below it opt-ins are refused\n"
      "# (RESOURCE_EXHAUSTED) and syncs pause, until space returns; a\n"
      "# full disk would fail synced writes half way.  0: no check.\n"
      "min-free-disk-mb = %d\n",
      c->name, permit_config_roles_name(c->roles), c->peer_listen,
      c->peer_endpoint[0] ? c->peer_endpoint : c->peer_listen, c->api_listen,
      c->api_tls ? "true" : "false", c->api_token, c->public_listen,
      c->consent_base[0] ? c->consent_base : "https://127.0.0.1",
      c->erased_handover_hours,
      c->lim.max_message, c->lim.max_concurrent_streams,
      c->lim.max_header_list, c->lim.max_connections,
      c->lim.handshake_timeout_ms, c->lim.idle_timeout_ms,
      c->lim.keepalive_ms, c->lim.keepalive_timeout_ms, c->min_free_disk_mb);
  int ok = fflush(f) == 0 && fsync(fd) == 0;
  fclose(f);
  if (!ok) {
    snprintf(err, errcap, "cannot write %s", path);
    unlink(path);
    return -1;
  }
  return 0;
}
