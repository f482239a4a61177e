/*
 * permitd - the Permit node daemon.
 *
 * It opens the node (keys, created on first run; RocksDB; pinned peers),
 * serves the peer listener (TLS 1.3, mutual, pinned keys: Peer, Health,
 * reflection) and the local API listener (h2c on 127.0.0.1 by default,
 * optionally TLS and a bearer token: Checkout, Venue, Admin, Health,
 * reflection, /metrics), and runs the sync of every issuer's log.  It logs
 * JSON lines on stderr and stops cleanly on SIGINT or SIGTERM.
 */
#include <event2/buffer.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "permit/consent.h"
#include "permit/crypto.h"
#include "permit/logging.h"
#include "permit/node.h"
#include "permit/node_services.h"
#include "permit/server.h"
#include "permit/services.h"
#include "permit/tls.h"

#define MAX_TRUST 32
#define MAX_METHODS 32

typedef struct options {
  permit_config cfg;
  int workers;
  const char *trust[MAX_TRUST];
  int ntrust;
} options;

static void usage(FILE *to) {
  fprintf(to,
      "usage: permitd [--config FILE] [options]\n"
      "\n"
      "  --config FILE          read settings from FILE (permitctl init\n"
      "                         writes one); options below override it\n"
      "  --data DIR             node data directory (default ./permit-data);\n"
      "                         keys are created there on first run\n"
      "  --name NAME            node name, e.g. tixly.example (default\n"
      "                         permit.localhost)\n"
      "  --roles R              issuer, audience or both (default both)\n"
      "  --peer-listen H:P      peer listener, TLS 1.3 mutual (default\n"
      "                         127.0.0.1:7443; port 0: the kernel picks)\n"
      "  --api-listen H:P       local API listener (default 127.0.0.1:7080)\n"
      "  --api-tls              serve the local API over TLS, not h2c\n"
      "  --api-token TOKEN      require \"authorization: Bearer TOKEN\" on\n"
      "                         the local API\n"
      "  --trust-cert NAME=PEM  pin the Ed25519 key of certificate PEM as\n"
      "                         client NAME (a probe, not a Permit peer)\n"
      "  --workers N            event-loop threads (default: one per core)\n"
      "  --limit NAME=VALUE     change a limit: max-message (bytes, 1048576),\n"
      "                         max-streams (per connection, 128),\n"
      "                         max-header-list (bytes, 16384),\n"
      "                         max-connections (4096), handshake-timeout-ms\n"
      "                         (10000), idle-timeout-ms (300000),\n"
      "                         keepalive-ms (60000), keepalive-timeout-ms\n"
      "                         (20000)\n"
      "  --log-level L          debug, info, warn or error (default info)\n"
      "\n"
      "The ports actually bound are logged (event listener.ready) and\n"
      "written to DIR/ports.json; the certificate to DIR/node.crt.\n");
}

static int is_hostport(const char *s) {
  const char *colon = strrchr(s, ':');
  if (colon == NULL || colon == s || strlen(s) >= 300) return 0;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  return *end == '\0' && end != colon + 1 && p >= 0 && p <= 65535;
}

static int split_hostport(const char *s, char *host, size_t cap, int *port) {
  const char *colon = strrchr(s, ':');
  if (!is_hostport(s) || (size_t)(colon - s) >= cap) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  *port = atoi(colon + 1);
  return 0;
}

static int parse_args(int argc, char **argv, options *o) {
  permit_config_defaults(&o->cfg);
  /* The file first, wherever --config stands: options override it. */
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--config") == 0) {
      char why[512];
      if (permit_config_load(argv[i + 1], &o->cfg, why, sizeof why) != 0) {
        fprintf(stderr, "permitd: %s\n", why);
        return -1;
      }
    }
  int endpoint_set = o->cfg.peer_endpoint[0] != '\0';
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int takes = 1;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    } else if (strcmp(a, "--api-tls") == 0) {
      o->cfg.api_tls = 1;
      takes = 0;
    } else if (v == NULL) {
      fprintf(stderr, "permitd: unknown or incomplete option \"%s\"\n", a);
      return -1;
    } else if (strcmp(a, "--config") == 0) {
      /* read above */
    } else if (strcmp(a, "--data") == 0) {
      snprintf(o->cfg.data, sizeof o->cfg.data, "%s", v);
    } else if (strcmp(a, "--name") == 0) {
      permit_err err;
      if (permit_name_validate(v, &err) != 0) {
        fprintf(stderr, "permitd: --name: %s\n", err.msg);
        return -1;
      }
      snprintf(o->cfg.name, sizeof o->cfg.name, "%s", v);
    } else if (strcmp(a, "--roles") == 0) {
      o->cfg.roles = permit_config_parse_roles(v);
      if (o->cfg.roles < 0) {
        fprintf(stderr, "permitd: --roles wants issuer, audience or both\n");
        return -1;
      }
    } else if (strcmp(a, "--peer-listen") == 0 ||
               strcmp(a, "--api-listen") == 0) {
      if (!is_hostport(v)) {
        fprintf(stderr, "permitd: %s wants HOST:PORT, not \"%s\"\n", a, v);
        return -1;
      }
      snprintf(a[2] == 'p' ? o->cfg.peer_listen : o->cfg.api_listen, 300,
               "%s", v);
    } else if (strcmp(a, "--api-token") == 0) {
      if (strlen(v) < 16 || strlen(v) > 200) {
        fprintf(stderr, "permitd: --api-token must be 16 to 200 characters\n");
        return -1;
      }
      snprintf(o->cfg.api_token, sizeof o->cfg.api_token, "%s", v);
    } else if (strcmp(a, "--trust-cert") == 0) {
      if (o->ntrust == MAX_TRUST || strchr(v, '=') == NULL) {
        fprintf(stderr, "permitd: --trust-cert wants NAME=FILE (at most %d)\n",
                MAX_TRUST);
        return -1;
      }
      o->trust[o->ntrust++] = v;
    } else if (strcmp(a, "--workers") == 0) {
      o->workers = atoi(v);
      if (o->workers < 1 || o->workers > 64) {
        fprintf(stderr, "permitd: --workers must be 1 to 64\n");
        return -1;
      }
    } else if (strcmp(a, "--limit") == 0) {
      char name[64];
      const char *eq = strchr(v, '=');
      if (eq == NULL || (size_t)(eq - v) >= sizeof name) {
        fprintf(stderr, "permitd: --limit wants NAME=VALUE\n");
        return -1;
      }
      snprintf(name, sizeof name, "%.*s", (int)(eq - v), v);
      if (permit_config_set_limit(&o->cfg.lim, name, eq + 1) != 0) {
        fprintf(stderr, "permitd: --limit: bad or unknown limit \"%s\"\n", v);
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
  if (!endpoint_set)
    snprintf(o->cfg.peer_endpoint, sizeof o->cfg.peer_endpoint, "%s",
             o->cfg.peer_listen);
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
  permit_config *cfg = &o.cfg;
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

  int rc = 1;
  permit_err err = {0};
  permit_node *node = NULL;
  SSL_CTX *peer_tls = NULL, *api_tls = NULL, *client_tls = NULL,
          *public_tls = NULL;
  permit_consent *consent = NULL;
  permit_server *srv = NULL;
  permit_health *health = NULL;
  permit_reflection *refl = NULL;
  permit_peer_service *peer_svc = NULL;
  permit_checkout *checkout = NULL;
  permit_venue *venue = NULL;
  permit_admin *admin = NULL;
  permit_sync *sync = NULL;
  char path[4300];

  if (permit_crypto_init() != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "crypto.init_failed",
                "OpenSSL lacks an algorithm Permit needs");
    return 1;
  }
  permit_node_config ncfg = {.name = cfg->name,
                             .roles = cfg->roles,
                             .data_dir = cfg->data,
                             .endpoint = cfg->peer_endpoint,
                             .consent_base_url = cfg->consent_base,
                             .erased_handover_hours =
                                 cfg->erased_handover_hours > 0
                                     ? cfg->erased_handover_hours
                                     : -1,
                             .min_free_disk_mb = cfg->min_free_disk_mb > 0
                                                     ? cfg->min_free_disk_mb
                                                     : -1};
  if (permit_node_open(&ncfg, &node, &err) != 0) {
    if (err.code == PERMIT_ECORRUPT)
      permit_logf(PERMIT_LEVEL_ERROR, "data.damaged",
                  "%s; refusing to start: the data directory %s holds "
                  "evidence and is neither repaired nor wiped; restore it "
                  "from a backup",
                  err.msg, cfg->data);
    else
      permit_logf(PERMIT_LEVEL_ERROR,
                  err.code == PERMIT_EEXIST ? "data.locked"
                                            : "node.open_failed",
                  "%s", err.msg);
    goto out;
  }
  permit_logf(PERMIT_LEVEL_INFO, "node.opened",
              "node %s (%s), identity key %s, data in %s", cfg->name,
              permit_config_roles_name(cfg->roles),
              permit_sign_key_id(permit_node_sign_key(node)), cfg->data);

  snprintf(path, sizeof path, "%s/node.crt", cfg->data);
  if (write_file(path, permit_node_cert(node), 0644) != 0)
    permit_logf(PERMIT_LEVEL_WARN, "tls.cert_not_written", "cannot write %s",
                path);
  if (load_trust(&o, permit_node_pins(node), &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "peer.pin_failed", "%s", err.msg);
    goto out;
  }
  const permit_sign_key *key = permit_node_sign_key(node);
  peer_tls = permit_tls_server_ctx(key, permit_node_cert(node),
                                   permit_node_pins(node), &err);
  client_tls = peer_tls ? permit_tls_client_ctx(key, permit_node_cert(node),
                                                permit_node_pins(node), &err)
                        : NULL;
  if (client_tls != NULL && cfg->api_tls)
    api_tls = permit_tls_server_ctx(key, permit_node_cert(node), NULL, &err);
  if (client_tls == NULL || (cfg->api_tls && api_tls == NULL)) {
    permit_logf(PERMIT_LEVEL_ERROR, "tls.ctx_failed", "%s", err.msg);
    goto out;
  }
  if (cfg->public_listen[0] != '\0') {
    char cert[4200], keyf[4200];
    if (cfg->public_cert[0])
      snprintf(cert, sizeof cert, "%s", cfg->public_cert);
    else
      snprintf(cert, sizeof cert, "%s/public.crt", cfg->data);
    if (cfg->public_key[0])
      snprintf(keyf, sizeof keyf, "%s", cfg->public_key);
    else
      snprintf(keyf, sizeof keyf, "%s/public.key", cfg->data);
    struct stat cs, ks;
    if (stat(cert, &cs) != 0 && stat(keyf, &ks) != 0) {
      /* First start: a self-signed pair, as the config file says. */
      if (permit_tls_public_cert_create(cfg->name, cert, keyf, &err) != 0) {
        permit_logf(PERMIT_LEVEL_ERROR, "tls.public_cert_failed", "%s",
                    err.msg);
        goto out;
      }
      permit_logf(PERMIT_LEVEL_WARN, "tls.public_cert_created",
                  "made a self-signed certificate %s for the public "
                  "listener: browsers will warn until it is replaced by "
                  "a CA's",
                  cert);
    }
    public_tls = permit_tls_public_ctx(cert, keyf, &err);
    if (public_tls == NULL) {
      permit_logf(PERMIT_LEVEL_ERROR, "tls.ctx_failed", "%s", err.msg);
      goto out;
    }
  }

  srv = permit_server_new(o.workers, &cfg->lim, &err);
  if (srv == NULL) {
    permit_logf(PERMIT_LEVEL_ERROR, "server.failed", "%s", err.msg);
    goto out;
  }
  health = permit_health_new(srv);
  static const char *const services[] = {
      "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection", "permit.v1.Peer",
      "permit.v1.Checkout", "permit.v1.Venue", "permit.v1.Admin",
      "permit.v1.Buyer"};
  refl = permit_reflection_new(permit_descriptor_set,
                               permit_descriptor_set_len, services, 8, &err);
  peer_svc = refl ? permit_peer_service_new(node, srv, &err) : NULL;
  if (peer_svc != NULL && (cfg->roles & PERMIT_ROLE_ISSUER))
    checkout = permit_checkout_new(node, &err);
  if (peer_svc != NULL && (cfg->roles & PERMIT_ROLE_AUDIENCE))
    venue = permit_venue_new(node, srv, &err);
  if (health == NULL || refl == NULL || peer_svc == NULL ||
      ((cfg->roles & PERMIT_ROLE_ISSUER) && checkout == NULL) ||
      ((cfg->roles & PERMIT_ROLE_AUDIENCE) && venue == NULL)) {
    permit_logf(PERMIT_LEVEL_ERROR, "server.failed", "services: %s", err.msg);
    goto out;
  }
  sync = permit_sync_start(node, client_tls, &err);
  admin = sync ? permit_admin_new(node, sync, &err) : NULL;
  if (admin != NULL && (cfg->roles & PERMIT_ROLE_ISSUER))
    consent = permit_consent_new(node, sync, &err);
  if (venue != NULL && sync != NULL) permit_venue_set_sync(venue, sync);
  if (sync == NULL || admin == NULL ||
      ((cfg->roles & PERMIT_ROLE_ISSUER) && consent == NULL)) {
    permit_logf(PERMIT_LEVEL_ERROR, "sync.failed", "%s", err.msg);
    goto out;
  }

  /* Method tables: the peer listener serves peers only what they need. */
  permit_method peer_methods[MAX_METHODS], api_methods[MAX_METHODS];
  size_t np = 0, na = 0;
  permit_health_methods(health, peer_methods);
  permit_reflection_methods(refl, peer_methods + 2);
  permit_peer_service_methods(peer_svc, peer_methods + 4);
  np = 4 + PERMIT_PEER_METHODS;
  permit_health_methods(health, api_methods);
  permit_reflection_methods(refl, api_methods + 2);
  na = 4;
  if (checkout != NULL) {
    permit_checkout_methods(checkout, api_methods + na);
    na += PERMIT_CHECKOUT_METHODS;
  }
  if (venue != NULL) {
    permit_venue_methods(venue, api_methods + na);
    na += PERMIT_VENUE_METHODS;
  }
  permit_admin_methods(admin, api_methods + na);
  na += PERMIT_ADMIN_METHODS;
  if (consent != NULL) {
    permit_consent_methods(consent, api_methods + na);
    na += PERMIT_BUYER_METHODS;
  }
  permit_http_route routes[] = {{"/metrics", metrics_route, srv}};
  /* The public listener: web pages only, no gRPC. */
  permit_web_route web[4];
  size_t nweb = 0;
  permit_web_static_route(&web[nweb++]);
  if (consent != NULL) {
    permit_consent_routes(consent, web + nweb);
    nweb += PERMIT_CONSENT_ROUTES;
  }
  if (venue != NULL) {
    permit_venue_routes(venue, web + nweb);
    nweb += PERMIT_VENUE_ROUTES;
  }

  char peer_host[300], api_host[300];
  int peer_port, api_port;
  split_hostport(cfg->peer_listen, peer_host, sizeof peer_host, &peer_port);
  split_hostport(cfg->api_listen, api_host, sizeof api_host, &api_port);
  permit_listener_config peer = {.name = "peer",
                                 .host = peer_host,
                                 .port = peer_port,
                                 .tls = peer_tls,
                                 .methods = peer_methods,
                                 .nmethods = np};
  permit_listener_config api = {.name = "local",
                                .host = api_host,
                                .port = api_port,
                                .tls = api_tls,
                                .bearer_token =
                                    cfg->api_token[0] ? cfg->api_token : NULL,
                                .methods = api_methods,
                                .nmethods = na,
                                .routes = routes,
                                .nroutes = 1};
  char public_host[300] = "";
  int public_port = 0;
  if (public_tls != NULL)
    split_hostport(cfg->public_listen, public_host, sizeof public_host,
                   &public_port);
  permit_listener_config pub = {.name = "public",
                                .host = public_host,
                                .port = public_port,
                                .tls = public_tls,
                                .web = web,
                                .nweb = nweb};
  if (permit_server_listen(srv, &peer, &peer_port, &err) != 0 ||
      permit_server_listen(srv, &api, &api_port, &err) != 0 ||
      (public_tls != NULL &&
       permit_server_listen(srv, &pub, &public_port, &err) != 0) ||
      permit_server_start(srv, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "server.failed", "%s", err.msg);
    goto out;
  }
  permit_health_set(health, "", PERMIT_SERVING);
  permit_health_set(health, "grpc.health.v1.Health", PERMIT_SERVING);
  permit_logf(PERMIT_LEVEL_INFO, "listener.ready",
              "peer listener on %s:%d (TLS 1.3, mutual, pinned keys)",
              peer_host, peer_port);
  permit_logf(PERMIT_LEVEL_INFO, "listener.ready",
              "local API listener on %s:%d (%s%s)", api_host, api_port,
              cfg->api_tls ? "TLS" : "h2c",
              cfg->api_token[0] ? ", bearer token" : "");
  if (public_tls != NULL)
    permit_logf(PERMIT_LEVEL_INFO, "listener.ready",
                "public listener on %s:%d (HTTPS, HTTP/2): %s%s", public_host,
                public_port,
                consent != NULL ? "consent centre /c/, " : "",
                venue != NULL ? "unsubscribe links /u/" : "");
  char ports[160];
  snprintf(ports, sizeof ports,
           "{\"peer\": %d, \"api\": %d, \"public\": %d}\n", peer_port,
           api_port, public_tls != NULL ? public_port : 0);
  snprintf(path, sizeof path, "%s/ports.json", cfg->data);
  write_file(path, ports, 0644);
  permit_logf(PERMIT_LEVEL_INFO, "node.ready",
              "node %s ready (identity %s); Ctrl-C stops it", cfg->name,
              permit_sign_key_id(key));

  int sig = 0;
  sigwait(&stop, &sig);
  permit_logf(PERMIT_LEVEL_INFO, "node.stopping", "received %s, stopping",
              sig == SIGINT ? "SIGINT" : "SIGTERM");
  rc = 0;
  /* Watchers learn that the node goes away before their streams end. */
  permit_health_set(health, "", PERMIT_NOT_SERVING);
  permit_health_set(health, "grpc.health.v1.Health", PERMIT_NOT_SERVING);
out:
  if (sync != NULL) permit_sync_stop(sync);
  if (srv != NULL) permit_server_stop(srv);
  permit_server_free(srv);
  permit_admin_free(admin);
  permit_consent_free(consent);
  permit_venue_free(venue);
  permit_checkout_free(checkout);
  permit_peer_service_free(peer_svc);
  permit_health_free(health);
  permit_reflection_free(refl);
  if (peer_tls != NULL) SSL_CTX_free(peer_tls);
  if (api_tls != NULL) SSL_CTX_free(api_tls);
  if (client_tls != NULL) SSL_CTX_free(client_tls);
  if (public_tls != NULL) SSL_CTX_free(public_tls);
  permit_node_close(node);
  permit_crypto_cleanup();
  if (rc == 0) permit_logf(PERMIT_LEVEL_INFO, "node.stopped", "stopped cleanly");
  return rc;
}
