#include "ctl.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "permit/grpc_wire.h"
#include "permit/identity.h"
#include "permit/node.h"

/* "permitctl CMD: " or, without a command, "permitctl: ". */
static void complain(const char *cmd, const char *what, const char *detail) {
  fprintf(stderr, "permitctl%s%s: %s%s\n", cmd[0] ? " " : "", cmd, what,
          detail);
}

int ctl_api_open(const permit_config *c, ctl_api *a, const char *cmd) {
  memset(a, 0, sizeof *a);
  const char *colon = strrchr(c->api_listen, ':');
  if (colon == NULL) {
    complain(cmd, "bad api address ", c->api_listen);
    return -1;
  }
  snprintf(a->host, sizeof a->host, "%.*s", (int)(colon - c->api_listen),
           c->api_listen);
  a->cc.host = a->host;
  a->cc.port = atoi(colon + 1);
  /* A node configured with port 0 writes the port it bound. */
  char path[4200];
  snprintf(path, sizeof path, "%s/ports.json", c->data);
  json_t *ports = json_load_file(path, 0, NULL);
  json_int_t p = json_integer_value(json_object_get(ports, "api"));
  if (p > 0 && p < 65536) a->cc.port = (int)p;
  json_decref(ports);
  a->roles = c->roles;
  snprintf(a->addr, sizeof a->addr, "%s:%d", a->host, a->cc.port);
  a->cc.connect_timeout_ms = 5000;
  a->cc.bearer_token = c->api_token[0] ? c->api_token : NULL;
  if (!c->api_tls) return 0;
  /* The API is served with the node's identity key: trust only that. */
  permit_identity id;
  permit_err err = {0};
  if (permit_identity_open(c->data, 0, &id, &err) != 0) {
    complain(cmd, err.msg, "");
    return -1;
  }
  char *cert = NULL;
  size_t cl = 0;
  a->pins = permit_pinset_new();
  if (a->pins != NULL &&
      permit_tls_cert_create(id.sign, c->name, &cert, &cl, &err) == 0 &&
      permit_pinset_add(a->pins, permit_sign_key_public(id.sign), c->name) ==
          0)
    a->tls = permit_tls_client_ctx(id.sign, cert, a->pins, &err);
  free(cert);
  permit_identity_free(&id);
  if (a->tls == NULL) {
    complain(cmd, "TLS: ", err.msg[0] ? err.msg : "cannot set up");
    return -1;
  }
  a->cc.tls = a->tls;
  a->cc.authority = c->name;
  return 0;
}

void ctl_api_close(ctl_api *a) {
  if (a->tls != NULL) SSL_CTX_free(a->tls);
  if (a->pins != NULL) permit_pinset_unref(a->pins);
  a->tls = NULL;
  a->pins = NULL;
}

char *ctl_b64_encode(const uint8_t *in, size_t len) {
  if (len > (size_t)INT32_MAX / 2) return NULL;
  char *out = malloc(4 * ((len + 2) / 3) + 1);
  if (out != NULL) EVP_EncodeBlock((unsigned char *)out, in, (int)len);
  return out;
}

void ctl_iso_time(int64_t ms, char *buf, size_t cap) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL ||
      strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf(buf, cap, "(time %lld ms)", (long long)ms);
}

const char *ctl_role_hint(const ctl_api *a, const char *path, int status,
                          char *buf, size_t cap) {
  /* permitd serves Checkout and Buyer only with the issuer role, Venue
   * only with the audience role; a missing service is UNIMPLEMENTED. */
  static const struct {
    const char *service;
    int role;
  } needs[] = {{"/permit.v1.Checkout/", PERMIT_ROLE_ISSUER},
               {"/permit.v1.Buyer/", PERMIT_ROLE_ISSUER},
               {"/permit.v1.Venue/", PERMIT_ROLE_AUDIENCE}};
  buf[0] = '\0';
  if (status != PERMIT_GRPC_UNIMPLEMENTED) return buf;
  for (size_t i = 0; i < sizeof needs / sizeof needs[0]; i++) {
    if (strncmp(path, needs[i].service, strlen(needs[i].service)) != 0 ||
        (a->roles & needs[i].role))
      continue;
    snprintf(buf, cap, " (the node at %s does not have the %s role; its "
                       "config says roles = %s)", a->addr,
             needs[i].role == PERMIT_ROLE_ISSUER ? "issuer" : "audience",
             a->roles == PERMIT_ROLE_ISSUER     ? "issuer"
             : a->roles == PERMIT_ROLE_AUDIENCE ? "audience"
                                                : "both");
  }
  return buf;
}

int ctl_out_check(const char *path, const char *cmd) {
  size_t len = strlen(path);
  if (len == 0 || path[len - 1] == '/') {
    fprintf(stderr, "permitctl %s: --out \"%s\" does not name a file\n", cmd,
            path);
    return 2;
  }
  /* lstat: a symlink is refused, not followed; rename() would replace
   * the link itself, and a device or FIFO would become a plain file. */
  struct stat st;
  if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
    fprintf(stderr, "permitctl %s: %s exists and is not a regular file\n",
            cmd, path);
    return 1;
  }
  return 0;
}

int ctl_out_open(ctl_out *o, const char *path, const char *cmd) {
  o->f = NULL;
  o->path = path;
  o->err = 0;
  int rc = ctl_out_check(path, cmd);
  if (rc != 0) return rc;
  if ((size_t)snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", path,
                       (long)getpid()) >= sizeof o->tmp) {
    fprintf(stderr, "permitctl %s: --out path too long\n", cmd);
    return 2;
  }
  o->f = fopen(o->tmp, "wx");
  if (o->f == NULL) {
    fprintf(stderr, "permitctl %s: cannot write %s: %s\n", cmd, o->tmp,
            strerror(errno));
    return 1;
  }
  return 0;
}

int ctl_out_close(ctl_out *o, int keep, const char *cmd) {
  if (o->f == NULL) return 1;
  /* After a failed write stdio may drop what it buffered and flush
   * nothing, so the writer's errno is the one to tell. */
  int ok = keep && !ferror(o->f);
  int e = o->err != 0 ? o->err : EIO;
  if (ok && (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)) {
    ok = 0;
    e = errno;
  }
  if (fclose(o->f) != 0 && ok) {
    ok = 0;
    e = errno;
  }
  o->f = NULL;
  if (ok && rename(o->tmp, o->path) != 0) {
    ok = 0;
    e = errno;
  }
  if (!ok) remove(o->tmp);
  if (!ok && keep) {
    fprintf(stderr, "permitctl %s: cannot write %s: %s\n", cmd, o->path,
            strerror(e));
  }
  return ok ? 0 : 1;
}

const char *ctl_escape(const char *s, char *buf, size_t cap) {
  size_t n = 0;
  if (cap == 0) return buf;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char one[5];
    if (c == '\n') snprintf(one, sizeof one, "\\n");
    else if (c == '\t') snprintf(one, sizeof one, "\\t");
    else if (c == '\\') snprintf(one, sizeof one, "\\\\");
    else if (c < 0x20 || c > 0x7e) snprintf(one, sizeof one, "\\x%02x", c);
    else snprintf(one, sizeof one, "%c", c);
    size_t l = strlen(one);
    if (n + l >= cap) break;
    memcpy(buf + n, one, l);
    n += l;
  }
  buf[n] = '\0';
  return buf;
}

int ctl_is_token(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s <= 0x20 || *s == 0x7f) return 0;
  return 1;
}
