/*
 * permitd - the Permit node daemon.
 *
 * It creates or loads the node's keys, opens its RocksDB database, makes
 * the TLS certificate of its identity key, and serves two listeners: the
 * peer listener (TLS 1.3, mutual, pinned keys) and the local API listener
 * (h2c on 127.0.0.1 by default, optionally TLS and a bearer token).  It
 * logs JSON lines on stderr and stops cleanly on SIGINT or SIGTERM.
 */
#include <event2/buffer.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "permit/crypto.h"
#include "permit/identity.h"
#include "permit/logging.h"
#include "permit/record.h"
#include "permit/server.h"
#include "permit/services.h"
#include "permit/store.h"
#include "permit/tls.h"

#define MAX_TRUST 32

typedef struct options {
  const char *data;
  const char *name;
  char peer_host[64];
  int peer_port;
  char api_host[64];
  int api_port;
  const char *api_token;
  int api_tls;
  int workers;
  const char *trust[MAX_TRUST];
  int ntrust;
  permit_server_limits lim;
} options;

static void usage(FILE *to) {
  fprintf(to,
      "usage: permitd [options]\n"
      "\n"
      "  --data DIR             node data directory (default ./permit-data);\n"
      "                         keys are created there on first run\n"
      "  --name NAME            node name, e.g. tixly.example (default\n"
      "                         permit.localhost)\n"
      "  --peer-listen H:P      peer listener, TLS 1.3 mutual (default\n"
      "                         127.0.0.1:7443; port 0: the kernel picks)\n"
      "  --api-listen H:P       local API listener (default 127.0.0.1:7080)\n"
      "  --api-tls              serve the local API over TLS, not h2c\n"
      "  --api-token TOKEN      require \"authorization: Bearer TOKEN\" on\n"
      "                         the local API\n"
      "  --trust-cert NAME=PEM  pin the Ed25519 key of certificate PEM as\n"
      "                         peer NAME (repeatable)\n"
      "  --workers N            event-loop threads (default: one per core)\n"
      "  --limit NAME=VALUE     change a limit: max-message (bytes, 1048576),\n"
      "                         max-streams (per connection, 128),\n"
      "                         max-header-list (bytes, 16384),\n"
      "                         max-connections (4096), handshake-timeout-ms\n"
      "                         (10000), idle-timeout-ms (300000)\n"
      "  --log-level L          debug, info, warn or error (default info)\n"
      "\n"
      "The ports actually bound are logged (event listener.ready) and\n"
      "written to DIR/ports.json; the certificate to DIR/node.crt.\n");
}

static int parse_hostport(const char *s, char *host, size_t cap, int *port) {
  const char *colon = strrchr(s, ':');
  if (colon == NULL || (size_t)(colon - s) >= cap || colon == s) return -1;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end != '\0' || p < 0 || p > 65535 || end == colon + 1) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  *port = (int)p;
  return 0;
}

/* NAME=VALUE for one of the server limits; each has a sane range. */
static int parse_limit(const char *s, permit_server_limits *l) {
  static const struct {
    const char *name;
    long min, max;
  } known[] = {{"max-message", 1024, 64L << 20},
               {"max-streams", 1, 10000},
               {"max-header-list", 1024, 1 << 20},
               {"max-connections", 1, 1000000},
               {"handshake-timeout-ms", 100, 600000},
               {"idle-timeout-ms", 100, 86400000}};
  const char *eq = strchr(s, '=');
  if (eq == NULL) return -1;
  char *end;
  long v = strtol(eq + 1, &end, 10);
  if (*end != '\0' || end == eq + 1) return -1;
  for (int i = 0; i < 6; i++) {
    if (strncmp(s, known[i].name, (size_t)(eq - s)) != 0 ||
        known[i].name[eq - s] != '\0')
      continue;
    if (v < known[i].min || v > known[i].max) return -1;
    switch (i) {
    case 0: l->max_message = (uint32_t)v; break;
    case 1: l->max_concurrent_streams = (uint32_t)v; break;
    case 2: l->max_header_list = (uint32_t)v; break;
    case 3: l->max_connections = (int)v; break;
    case 4: l->handshake_timeout_ms = (int)v; break;
    case 5: l->idle_timeout_ms = (int)v; break;
    }
    return 0;
  }
  return -1;
}

static int parse_args(int argc, char **argv, options *o) {
  permit_server_limits_default(&o->lim);
  o->data = "./permit-data";
  o->name = "permit.localhost";
  strcpy(o->peer_host, "127.0.0.1");
  o->peer_port = 7443;
  strcpy(o->api_host, "127.0.0.1");
  o->api_port = 7080;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int takes = 1;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    } else if (strcmp(a, "--api-tls") == 0) {
      o->api_tls = 1;
      takes = 0;
    } else if (v == NULL) {
      fprintf(stderr, "permitd: unknown or incomplete option \"%s\"\n", a);
      return -1;
    } else if (strcmp(a, "--data") == 0) {
      o->data = v;
    } else if (strcmp(a, "--name") == 0) {
      permit_err err;
      if (permit_name_validate(v, &err) != 0) {
        fprintf(stderr, "permitd: --name: %s\n", err.msg);
        return -1;
      }
      o->name = v;
    } else if (strcmp(a, "--peer-listen") == 0) {
      if (parse_hostport(v, o->peer_host, sizeof o->peer_host,
                         &o->peer_port) != 0) {
        fprintf(stderr, "permitd: --peer-listen wants HOST:PORT, not \"%s\"\n",
                v);
        return -1;
      }
    } else if (strcmp(a, "--api-listen") == 0) {
      if (parse_hostport(v, o->api_host, sizeof o->api_host, &o->api_port) !=
          0) {
        fprintf(stderr, "permitd: --api-listen wants HOST:PORT, not \"%s\"\n",
                v);
        return -1;
      }
    } else if (strcmp(a, "--api-token") == 0) {
      if (strlen(v) < 16 || strlen(v) > 200) {
        fprintf(stderr, "permitd: --api-token must be 16 to 200 characters\n");
        return -1;
      }
      o->api_token = v;
    } else if (strcmp(a, "--trust-cert") == 0) {
      if (o->ntrust == MAX_TRUST || strchr(v, '=') == NULL) {
        fprintf(stderr, "permitd: --trust-cert wants NAME=FILE (at most %d)\n",
                MAX_TRUST);
        return -1;
      }
      o->trust[o->ntrust++] = v;
    } else if (strcmp(a, "--limit") == 0) {
      if (parse_limit(v, &o->lim) != 0) {
        fprintf(stderr, "permitd: --limit: bad or unknown limit \"%s\"\n", v);
        return -1;
      }
    } else if (strcmp(a, "--workers") == 0) {
      o->workers = atoi(v);
      if (o->workers < 1 || o->workers > 64) {
        fprintf(stderr, "permitd: --workers must be 1 to 64\n");
        return -1;
      }
    } else if (strcmp(a, "--log-level") == 0) {
      int l = permit_logging_parse_level(v);
      if (l < 0) {
        fprintf(stderr, "permitd: unknown log level \"%s\"\n", v);
        return -1;
      }
      permit_logging_set_level((permit_level)l);
    } else {
      fprintf(stderr, "permitd: unknown option \"%s\"\n", a);
      return -1;
    }
    i += takes;
  }
  return 0;
}

/* Reads a small text file into a malloc'd NUL-terminated buffer. */
static char *read_small_file(const char *path, size_t *len, permit_err *err) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    permit_err_set(err, PERMIT_ENOTFOUND, "cannot open %s", path);
    return NULL;
  }
  char *buf = malloc(65537);
  size_t n = buf != NULL ? fread(buf, 1, 65536, f) : 0;
  int big = buf != NULL && n == 65536 && fgetc(f) != EOF;
  fclose(f);
  if (buf == NULL || big) {
    free(buf);
    permit_err_set(err, PERMIT_ETOOBIG, "%s is over 64 KiB", path);
    return NULL;
  }
  buf[n] = '\0';
  *len = n;
  return buf;
}

/* Writes |text| to |path| through a temporary file and a rename. */
static int write_file(const char *path, const char *text, unsigned mode) {
  char tmp[4300];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL) return -1;
  fputs(text, f);
  int ok = fflush(f) == 0;
  fclose(f);
  chmod(tmp, (mode_t)mode);
  return ok && rename(tmp, path) == 0 ? 0 : -1;
}

static int load_trust(const options *o, permit_pinset *pins, permit_err *err) {
  for (int i = 0; i < o->ntrust; i++) {
    char name[PERMIT_NAME_MAX + 1];
    const char *eq = strchr(o->trust[i], '=');
    size_t nl = (size_t)(eq - o->trust[i]);
    if (nl == 0 || nl > PERMIT_NAME_MAX)
      return permit_err_set(err, PERMIT_EINVAL, "--trust-cert: bad name");
    memcpy(name, o->trust[i], nl);
    name[nl] = '\0';
    size_t len;
    char *pem = read_small_file(eq + 1, &len, err);
    if (pem == NULL) return PERMIT_EINVAL;
    uint8_t pub[32];
    permit_err sub = {0};
    int rc = permit_tls_cert_key(pem, len, pub, &sub);
    free(pem);
    if (rc == 0 && (rc = permit_pinset_add(pins, pub, name)) != 0)
      snprintf(sub.msg, sizeof sub.msg, "cannot pin \"%.64s\": %s", name,
               permit_strerror(rc));
    if (rc != 0)
      return permit_err_set(err, rc, "--trust-cert %s: %s", o->trust[i],
                            sub.msg);
    char kid[PERMIT_KEY_ID_LEN];
    permit_key_id(pub, 32, kid);
    permit_logf(PERMIT_LEVEL_INFO, "peer.pinned", "pinned %s (key %s)", name,
                kid);
  }
  return 0;
}

static int metrics_route(void *arg, struct evbuffer *body,
                         const char **content_type) {
  permit_server_metrics(arg, body);
  *content_type = "text/plain; version=0.0.4; charset=utf-8";
  return 200;
}

int main(int argc, char **argv) {
  options o = {0};
  if (parse_args(argc, argv, &o) != 0) {
    usage(stderr);
    return 2;
  }
  /* A shell starts background jobs with SIGINT ignored; an ignored signal
   * never reaches sigwait(), so restore the default first.  Then block the
   * stop signals before any thread starts, so only sigwait() sees them. */
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  int rc = 1, lock_fd = -1;
  permit_err err = {0};
  permit_identity id = {0};
  permit_store *store = NULL;
  permit_pinset *pins = NULL;
  SSL_CTX *peer_tls = NULL, *api_tls = NULL;
  permit_server *srv = NULL;
  permit_health *health = NULL;
  permit_reflection *refl = NULL;
  char *cert = NULL;
  char path[4300];

  if (permit_crypto_init() != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "crypto.init_failed",
                "OpenSSL lacks an algorithm Permit needs");
    return 1;
  }
  if (permit_identity_lock(o.data, &lock_fd, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "data.locked", "%s", err.msg);
    goto out;
  }
  if (permit_identity_open(o.data, 1, &id, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "keys.failed", "%s", err.msg);
    goto out;
  }
  permit_logf(PERMIT_LEVEL_INFO, id.created ? "keys.created" : "keys.loaded",
              "%s identity key %s in %s/keys",
              id.created ? "created" : "loaded", permit_sign_key_id(id.sign),
              o.data);

  snprintf(path, sizeof path, "%s/db", o.data);
  if (permit_store_open(path, &store, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "store.failed", "%s", err.msg);
    goto out;
  }
  permit_logf(PERMIT_LEVEL_INFO, "store.opened", "RocksDB database %s open",
              path);

  size_t certlen;
  if (permit_tls_cert_create(id.sign, o.name, &cert, &certlen, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "tls.cert_failed", "%s", err.msg);
    goto out;
  }
  snprintf(path, sizeof path, "%s/node.crt", o.data);
  if (write_file(path, cert, 0644) != 0)
    permit_logf(PERMIT_LEVEL_WARN, "tls.cert_not_written",
                "cannot write %s", path);
  pins = permit_pinset_new();
  if (pins == NULL || load_trust(&o, pins, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "peer.pin_failed", "%s", err.msg);
    goto out;
  }
  peer_tls = permit_tls_server_ctx(id.sign, cert, pins, &err);
  if (peer_tls == NULL) {
    permit_logf(PERMIT_LEVEL_ERROR, "tls.ctx_failed", "%s", err.msg);
    goto out;
  }
  if (o.api_tls) {
    api_tls = permit_tls_server_ctx(id.sign, cert, NULL, &err);
    if (api_tls == NULL) {
      permit_logf(PERMIT_LEVEL_ERROR, "tls.ctx_failed", "%s", err.msg);
      goto out;
    }
  }

  srv = permit_server_new(o.workers, &o.lim, &err);
  if (srv == NULL) {
    permit_logf(PERMIT_LEVEL_ERROR, "server.failed", "%s", err.msg);
    goto out;
  }
  health = permit_health_new(srv);
  static const char *const services[] = {
      "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection"};
  refl = permit_reflection_new(permit_descriptor_set,
                               permit_descriptor_set_len, services, 3, &err);
  if (health == NULL || refl == NULL) {
    permit_logf(PERMIT_LEVEL_ERROR, "server.failed", "services: %s", err.msg);
    goto out;
  }
  permit_method methods[4];
  permit_health_methods(health, methods);
  permit_reflection_methods(refl, methods + 2);
  permit_http_route routes[] = {{"/metrics", metrics_route, srv}};

  permit_listener_config peer = {.name = "peer",
                                 .host = o.peer_host,
                                 .port = o.peer_port,
                                 .tls = peer_tls,
                                 .methods = methods,
                                 .nmethods = 4};
  permit_listener_config api = {.name = "local",
                                .host = o.api_host,
                                .port = o.api_port,
                                .tls = api_tls,
                                .bearer_token = o.api_token,
                                .methods = methods,
                                .nmethods = 4,
                                .routes = routes,
                                .nroutes = 1};
  int peer_port, api_port;
  if (permit_server_listen(srv, &peer, &peer_port, &err) != 0 ||
      permit_server_listen(srv, &api, &api_port, &err) != 0 ||
      permit_server_start(srv, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "server.failed", "%s", err.msg);
    goto out;
  }
  permit_health_set(health, "", PERMIT_SERVING);
  permit_health_set(health, "grpc.health.v1.Health", PERMIT_SERVING);
  permit_logf(PERMIT_LEVEL_INFO, "listener.ready",
              "peer listener on %s:%d (TLS 1.3, mutual, pinned keys)",
              o.peer_host, peer_port);
  permit_logf(PERMIT_LEVEL_INFO, "listener.ready",
              "local API listener on %s:%d (%s%s)", o.api_host, api_port,
              o.api_tls ? "TLS" : "h2c", o.api_token ? ", bearer token" : "");
  char ports[128];
  snprintf(ports, sizeof ports, "{\"peer\": %d, \"api\": %d}\n", peer_port,
           api_port);
  snprintf(path, sizeof path, "%s/ports.json", o.data);
  write_file(path, ports, 0644);
  permit_logf(PERMIT_LEVEL_INFO, "node.ready",
              "node %s ready (identity %s); Ctrl-C stops it", o.name,
              permit_sign_key_id(id.sign));

  int sig = 0;
  sigwait(&stop, &sig);
  permit_logf(PERMIT_LEVEL_INFO, "node.stopping", "received %s, stopping",
              sig == SIGINT ? "SIGINT" : "SIGTERM");
  rc = 0;
  /* Watchers learn that the node goes away before their streams end. */
  permit_health_set(health, "", PERMIT_NOT_SERVING);
  permit_health_set(health, "grpc.health.v1.Health", PERMIT_NOT_SERVING);
out:
  if (srv != NULL) permit_server_stop(srv);
  permit_server_free(srv);
  permit_health_free(health);
  permit_reflection_free(refl);
  if (peer_tls != NULL) SSL_CTX_free(peer_tls);
  if (api_tls != NULL) SSL_CTX_free(api_tls);
  if (pins != NULL) permit_pinset_unref(pins);
  free(cert);
  permit_store_close(store);
  permit_identity_free(&id);
  if (lock_fd >= 0) permit_identity_unlock(lock_fd);
  permit_crypto_cleanup();
  if (rc == 0) permit_logf(PERMIT_LEVEL_INFO, "node.stopped", "stopped cleanly");
  return rc;
}
