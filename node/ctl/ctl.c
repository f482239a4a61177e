#include "ctl.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "permit/identity.h"

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
