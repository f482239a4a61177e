/*
 * permitctl - the operator's command line for a Permit node.
 *
 * `init` and `keys` and `card` work on the data directory itself; every
 * other command talks to the running node over its local API.
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "proof.h"
#include "permit/client.h"
#include "permit/crypto.h"
#include "permit/identity.h"
#include "permit/node.h"
#include "permit/store.h"
#include "permit/util.h"

static void usage(FILE *to) {
  fprintf(to,
      "usage: permitctl COMMAND [options]\n"
      "\n"
      "Every command takes --config FILE or --data DIR to find the node\n"
      "(default ./permit-data/permit.conf).\n"
      "\n"
      "  init --name NAME --role issuer|audience|both --peer-addr HOST:PORT\n"
      "       [--api-addr HOST:PORT] [--public-addr HOST:PORT]\n"
      "       [--consent-url URL] [--data DIR]\n"
      "                          create a node: keys, certificate, config\n"
      "  keys                    show the node's key ids and public keys\n"
      "  card                    print this node's signed card (JSON)\n"
      "  peer add CARD.json      pin a peer after checking its card\n"
      "  peer list               peers with their sync state\n"
      "  list define --id ID --title TITLE --notice-file FILE\n"
      "                          define a list (venue); a changed notice text\n"
      "                          makes a new version\n"
      "  offers --venue NAME     a venue's lists as the checkout shows them\n"
      "  optin --order REF --email EMAIL --venue NAME --list ID\n"
      "        --notice-version N [--given NAME] [--family NAME]\n"
      "        [--locale TAG]    record a buyer's opt-in (reseller)\n"
      "  contacts export --list ID [--format csv|jsonl] [--out FILE]\n"
      "                          a list's contacts for a mailing tool\n"
      "  proof --email EMAIL --list ID [--issuer NAME] [--out FILE]\n"
      "                          one file proving a buyer's consent: the\n"
      "                          signed record, its inclusion proof and the\n"
      "                          signed checkpoint (venue)\n"
      "  verify-proof FILE --issuer-card CARD.json\n"
      "                          check a proof file offline and say what it\n"
      "                          proves\n"
      "  unsubscribe --email E --list L\n"
      "                          (venue) withdraw that buyer here and tell\n"
      "                          the issuer\n"
      "  rotate-link-secret      (node stopped) void every consent and\n"
      "                          unsubscribe link made so far\n"
      "  compact                 flush and compact the database of a\n"
      "                          stopped node\n"
      "  version                 show the version\n");
}

/* ---- options ---- */

typedef struct args {
  int argc;
  char **argv;
} args;

/* The value of --name in |a|, or NULL. */
static const char *opt(const args *a, const char *name) {
  for (int i = 0; i + 1 < a->argc; i++)
    if (strcmp(a->argv[i], name) == 0) return a->argv[i + 1];
  return NULL;
}

/* Refuses options not in |known| (NULL-terminated), and stray words. */
static int check_opts(const args *a, const char *const *known, int positional,
                      const char *cmd) {
  int seen_pos = 0;
  for (int i = 0; i < a->argc; i++) {
    if (strncmp(a->argv[i], "--", 2) != 0) {
      if (++seen_pos > positional) {
        fprintf(stderr, "permitctl %s: unexpected \"%s\"\n", cmd, a->argv[i]);
        return -1;
      }
      continue;
    }
    int ok = 0;
    for (const char *const *k = known; *k != NULL; k++)
      ok |= strcmp(a->argv[i], *k) == 0;
    if (!ok || i + 1 >= a->argc) {
      fprintf(stderr, "permitctl %s: unknown or incomplete option \"%s\"\n",
              cmd, a->argv[i]);
      return -1;
    }
    i++;
  }
  return 0;
}

/* The first positional word after the command. */
static const char *positional(const args *a) {
  for (int i = 0; i < a->argc; i++) {
    if (strncmp(a->argv[i], "--", 2) == 0) {
      i++;
      continue;
    }
    return a->argv[i];
  }
  return NULL;
}

/* Loads the node's configuration as --config / --data say. */
static int load_config(const args *a, permit_config *c) {
  permit_config_defaults(c);
  const char *file = opt(a, "--config");
  char path[4200];
  if (file == NULL) {
    const char *data = opt(a, "--data");
    snprintf(path, sizeof path, "%s/permit.conf",
             data != NULL ? data : "./permit-data");
    file = path;
  }
  char why[512];
  if (permit_config_load(file, c, why, sizeof why) != 0) {
    fprintf(stderr, "permitctl: %s\n", why);
    return -1;
  }
  return 0;
}

/* ---- talking to the node ---- */

/* One unary call; prints the error and returns -1 unless OK. */
static int call(ctl_api *a, const char *path, const ProtobufCMessage *req,
                uint8_t **resp, size_t *rlen) {
  size_t n = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) return -1;
  protobuf_c_message_pack(req, buf);
  int status;
  char msg[512];
  int rc = permit_client_unary_sync(&a->cc, path, buf, n, 30000, &status, msg,
                                    sizeof msg, resp, rlen);
  free(buf);
  if (rc != 0 || status != PERMIT_GRPC_OK) {
    char hint[400];
    fprintf(stderr, "permitctl: %s: %s%s%s%s\n", path,
            rc != 0 ? "call failed" : permit_grpc_status_name(status),
            msg[0] ? ": " : "", msg,
            rc != 0 ? "" : ctl_role_hint(a, path, status, hint, sizeof hint));
    return -1;
  }
  return 0;
}

/* ---- commands ---- */

/*
 * The inih that permitd reads permit.conf with takes at most 199
 * characters of a line and reads the rest as a line of its own, so a
 * longer "key = value" would come back as something else or an error.
 */
#define CONF_LINE_MAX 199

/* True when "|key| = |value|" fits on one line of permit.conf. */
static int conf_fits(const char *key, const char *value) {
  return strlen(key) + 3 + strlen(value) <= CONF_LINE_MAX;
}

/*
 * True when |v| is a HOST:PORT that permitd accepts for |key| (config.c:
 * a host before the last ':', a decimal port 0 to 65535, 0 letting the
 * kernel pick) and that cannot change permit.conf's structure: no space
 * or control character, and short enough for one line.  A sign or spaces
 * before the port, which strtol() would let through, are refused too.
 */
static int hostport_ok(const char *v, const char *key) {
  const char *colon = strrchr(v, ':');
  if (colon == NULL || colon == v || colon[1] == '\0' || !ctl_is_token(v) ||
      !conf_fits(key, v))
    return 0;
  unsigned long port = 0;
  for (const char *p = colon + 1; *p; p++) {
    if (*p < '0' || *p > '9') return 0;
    port = port * 10 + (unsigned long)(*p - '0');
    if (port > 65535) return 0;
  }
  return 1;
}

/*
 * What in |data| shows that a node already lives there (its keys or its
 * database), into |what|; 0 when nothing does.  lstat: even a dangling
 * link there is someone's.
 */
static int holds_node(const char *data, char *what, size_t cap) {
  static const char *const parts[] = {"keys/identity.key",
                                      "keys/sealing.key", "db"};
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    struct stat st;
    snprintf(what, cap, "%s/%s", data, parts[i]);
    if (lstat(what, &st) == 0) return 1;
  }
  what[0] = '\0';
  return 0;
}

static int cmd_init(const args *a) {
  static const char *const known[] = {"--name", "--role", "--peer-addr",
                                      "--api-addr", "--consent-url", "--data",
                                      "--public-addr", NULL};
  if (check_opts(a, known, 0, "init") != 0) return 2;
  const char *name = opt(a, "--name"), *role = opt(a, "--role"),
             *peer = opt(a, "--peer-addr");
  if (name == NULL || role == NULL || peer == NULL) {
    fprintf(stderr, "permitctl init: --name, --role and --peer-addr are "
                    "required\n");
    return 2;
  }
  permit_config c;
  permit_config_defaults(&c);
  permit_err err;
  char shown[600];
  if (permit_name_validate(name, &err) != 0) {
    /* The message quotes the name: escaped, it cannot break the line. */
    fprintf(stderr, "permitctl init: --name: %s\n",
            ctl_escape(err.msg, shown, sizeof shown));
    return 2;
  }
  if (!conf_fits("name", name)) {
    fprintf(stderr, "permitctl init: --name is longer than %zu characters, "
                    "more than a line of permit.conf holds\n",
            (size_t)CONF_LINE_MAX - strlen("name = "));
    return 2;
  }
  snprintf(c.name, sizeof c.name, "%s", name);
  c.roles = permit_config_parse_roles(role);
  if (c.roles < 0) {
    fprintf(stderr, "permitctl init: --role wants issuer, audience or both\n");
    return 2;
  }
  const char *api_addr = opt(a, "--api-addr");
  const char *url = opt(a, "--consent-url");
  const char *pub = opt(a, "--public-addr");
  /* The peer address is written twice, the longer key being endpoint. */
  const struct {
    const char *option, *value, *key;
  } addrs[] = {{"--peer-addr", peer, "endpoint"},
               {"--api-addr", api_addr, "listen"},
               {"--public-addr", pub, "listen"}};
  for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
    if (addrs[i].value == NULL || hostport_ok(addrs[i].value, addrs[i].key))
      continue;
    fprintf(stderr, "permitctl init: %s \"%s\" is not HOST:PORT (a host "
                    "without spaces or control characters, a port 0 to "
                    "65535, at most %zu characters)\n", addrs[i].option,
            ctl_escape(addrs[i].value, shown, sizeof shown),
            (size_t)CONF_LINE_MAX - strlen(addrs[i].key) - 3);
    return 2;
  }
  snprintf(c.peer_listen, sizeof c.peer_listen, "%s", peer);
  snprintf(c.peer_endpoint, sizeof c.peer_endpoint, "%s", peer);
  if (api_addr != NULL) snprintf(c.api_listen, sizeof c.api_listen, "%s", api_addr);
  if (pub != NULL) {
    snprintf(c.public_listen, sizeof c.public_listen, "%s", pub);
    /* Links point at the listener unless told otherwise. */
    snprintf(c.consent_base, sizeof c.consent_base, "https://%s", pub);
  }
  if (url != NULL) {
    if (strncmp(url, "https://", 8) != 0 || url[8] == '\0' ||
        !ctl_is_token(url)) {
      fprintf(stderr, "permitctl init: --consent-url must be an https:// URL "
                      "without spaces or control characters\n");
      return 2;
    }
    snprintf(c.consent_base, sizeof c.consent_base, "%s", url);
  }
  if (!conf_fits("base_url", c.consent_base)) {
    fprintf(stderr, "permitctl init: the consent URL %s is longer than %zu "
                    "characters, more than a line of permit.conf holds\n",
            url != NULL ? "(--consent-url)" : "(https:// and --public-addr)",
            (size_t)CONF_LINE_MAX - strlen("base_url = "));
    return 2;
  }
  const char *data = opt(a, "--data");
  if (data == NULL) data = "./permit-data";
  snprintf(c.data, sizeof c.data, "%s", data);

  char path[4200], what[4300];
  snprintf(path, sizeof path, "%s/permit.conf", data);
  struct stat st;
  if (lstat(path, &st) == 0) {
    fprintf(stderr, "permitctl init: %s exists: this node is already "
                    "initialised\n", path);
    return 1;
  }
  /* Checked before the lock, which makes the directory, and again under
   * it, against a permitd making its keys meanwhile. */
  int lock = -1, held = holds_node(data, what, sizeof what);
  if (!held && permit_identity_lock(data, &lock, &err) != 0) {
    fprintf(stderr, "permitctl init: %s\n", err.msg);
    return 1;
  }
  if (held || holds_node(data, what, sizeof what)) {
    fprintf(stderr, "permitctl init: %s already holds a node's keys or "
                    "database (%s); init makes a new node: give it an empty "
                    "--data directory\n", data, what);
    permit_identity_unlock(lock);
    return 1;
  }
  /* The config first: if the keys then cannot be made it is removed, and
   * a second init starts from the same empty directory. */
  char errbuf[512];
  if (permit_config_write(path, &c, errbuf, sizeof errbuf) != 0) {
    fprintf(stderr, "permitctl init: %s\n", errbuf);
    permit_identity_unlock(lock);
    return 1;
  }
  permit_identity id;
  if (permit_identity_open(data, 1, &id, &err) != 0) {
    fprintf(stderr, "permitctl init: %s\n", err.msg);
    unlink(path);
    permit_identity_unlock(lock);
    return 1;
  }
  printf("created node %s (%s) in %s\n", name,
         permit_config_roles_name(c.roles), data);
  printf("identity key %s\n", permit_sign_key_id(id.sign));
  permit_identity_free(&id);
  permit_identity_unlock(lock);
  printf("config %s\nrun it with: permitd --config %s\n", path, path);
  return 0;
}

static int cmd_keys(const args *a) {
  static const char *const known[] = {"--data", "--config", NULL};
  if (check_opts(a, known, 0, "keys") != 0) return 2;
  const char *data = opt(a, "--data");
  permit_config c;
  if (data == NULL && opt(a, "--config") != NULL) {
    if (load_config(a, &c) != 0) return 1;
    data = c.data;
  }
  if (data == NULL) data = "./permit-data";
  permit_identity id;
  permit_err err = {0};
  if (permit_identity_open(data, 0, &id, &err) != 0) {
    fprintf(stderr, "permitctl keys: %s\n", err.msg);
    return 1;
  }
  char hex[2 * PERMIT_X25519_LEN + 1], kid[PERMIT_KEY_ID_LEN];
  permit_hex_encode(permit_sign_key_public(id.sign), PERMIT_ED25519_PUB_LEN,
                    hex);
  printf("identity key (Ed25519)  id %s  public %s\n",
         permit_sign_key_id(id.sign), hex);
  permit_hex_encode(permit_kx_key_public(id.seal), PERMIT_X25519_LEN, hex);
  permit_key_id(permit_kx_key_public(id.seal), PERMIT_X25519_LEN, kid);
  printf("sealing key (X25519)    id %s  public %s\n", kid, hex);
  permit_identity_free(&id);
  return 0;
}


static const char *const role_names[] = {NULL, "issuer", "audience"};

static int cmd_card(const args *a) {
  static const char *const known[] = {"--data", "--config", NULL};
  if (check_opts(a, known, 0, "card") != 0) return 2;
  permit_config c;
  if (load_config(a, &c) != 0) return 1;
  permit_identity id;
  permit_err err;
  if (permit_identity_open(c.data, 0, &id, &err) != 0) {
    fprintf(stderr, "permitctl card: %s\n", err.msg);
    return 1;
  }
  uint8_t *card;
  size_t cl;
  int rc = permit_card_build(id.sign, id.seal, c.name, c.peer_endpoint,
                             c.roles, &card, &cl, &err);
  if (rc != 0) {
    permit_identity_free(&id);
    fprintf(stderr, "permitctl card: %s\n", err.msg);
    return 1;
  }
  json_t *j = json_object(), *roles = json_array();
  for (int r = 1; r <= 2; r++)
    if (c.roles & r) json_array_append_new(roles, json_string(role_names[r]));
  char *enc = ctl_b64_encode(card, cl);
  json_object_set_new(j, "name", json_string(c.name));
  json_object_set_new(j, "endpoint", json_string(c.peer_endpoint));
  json_object_set_new(j, "roles", roles);
  json_object_set_new(j, "identity_key_id",
                      json_string(permit_sign_key_id(id.sign)));
  json_object_set_new(j, "card", json_string(enc));
  char *text = json_dumps(j, JSON_INDENT(2));
  printf("%s\n", text);
  free(text);
  free(enc);
  json_decref(j);
  free(card);
  permit_identity_free(&id);
  return 0;
}

/*
 * Reads a card file as `permitctl card` prints it into |*out| (free with
 * permit__v1__node_card__free_unpacked()); prints what is wrong and
 * returns -1.  The card's signature is the node's to check.
 */
static int card_file_read(const char *file, Permit__V1__NodeCard **out) {
  *out = NULL;
  FILE *f = fopen(file, "rb");
  if (f == NULL) {
    fprintf(stderr, "permitctl peer add: cannot read %s: %s\n", file,
            strerror(errno));
    return -1;
  }
  json_error_t je;
  json_t *j = json_loadf(f, 0, &je);
  int bad = ferror(f), e = errno;
  fclose(f);
  if (bad) {
    fprintf(stderr, "permitctl peer add: cannot read %s: %s\n", file,
            strerror(e));
    json_decref(j);
    return -1;
  }
  const char *enc = json_string_value(json_object_get(j, "card"));
  size_t el = enc ? strlen(enc) : 0;
  uint8_t *raw = enc ? malloc(el ? el : 1) : NULL;
  int n = raw && el > 0 && el % 4 == 0 && el <= 8192
              ? EVP_DecodeBlock(raw, (const unsigned char *)enc, (int)el)
              : -1;
  if (n > 0 && enc[el - 1] == '=') n--;
  if (n > 0 && enc[el - 2] == '=') n--;
  *out = n > 0 ? permit__v1__node_card__unpack(NULL, (size_t)n, raw) : NULL;
  free(raw);
  json_decref(j);
  if (*out == NULL) {
    fprintf(stderr, "permitctl peer add: %s is not a card file (JSON with a "
                    "base64 \"card\", as permitctl card prints)\n", file);
    return -1;
  }
  return 0;
}

static int cmd_peer(const args *a) {
  static const char *const known[] = {"--data", "--config", NULL};
  const char *sub = a->argc > 0 ? a->argv[0] : "";
  args rest = {a->argc - 1, a->argv + 1};
  int add = strcmp(sub, "add") == 0;
  if (!add && strcmp(sub, "list") != 0) {
    fprintf(stderr, "permitctl peer: add CARD.json or list\n");
    return 2;
  }
  if (check_opts(&rest, known, add, "peer") != 0) return 2;
  const char *file = positional(&rest);
  if (add && file == NULL) {
    fprintf(stderr, "permitctl peer add: CARD.json is required\n");
    return 2;
  }
  Permit__V1__NodeCard *card = NULL;
  if (add && card_file_read(file, &card) != 0) return 1;
  permit_config c;
  ctl_api api;
  if (load_config(&rest, &c) != 0 || ctl_api_open(&c, &api, "") != 0) {
    if (card != NULL) permit__v1__node_card__free_unpacked(card, NULL);
    return 1;
  }
  int rc = 1;
  uint8_t *resp = NULL;
  size_t rl = 0;
  if (add) {
    Permit__V1__AddPeerRequest req = PERMIT__V1__ADD_PEER_REQUEST__INIT;
    req.card = card;
    if (call(&api, "/permit.v1.Admin/AddPeer", &req.base, &resp, &rl) == 0) {
      Permit__V1__PeerInfo *pi = permit__v1__peer_info__unpack(NULL, rl, resp);
      if (pi != NULL) {
        printf("pinned %s (key %s) at %s\n", pi->name, pi->key_id,
               pi->endpoint);
        permit__v1__peer_info__free_unpacked(pi, NULL);
        rc = 0;
      }
    }
    permit__v1__node_card__free_unpacked(card, NULL);
  } else {
    Permit__V1__ListPeersRequest req = PERMIT__V1__LIST_PEERS_REQUEST__INIT;
    if (call(&api, "/permit.v1.Admin/ListPeers", &req.base, &resp, &rl) == 0) {
      Permit__V1__ListPeersResponse *lp =
          permit__v1__list_peers_response__unpack(NULL, rl, resp);
      if (lp != NULL) {
        printf("%-24s %-18s %-16s %-9s %-9s %s\n", "PEER", "ROLES", "KEY",
               "SENT", "RECEIVED", "SYNC");
        for (size_t i = 0; i < lp->n_peers; i++) {
          Permit__V1__PeerInfo *p = lp->peers[i];
          char roles[32] = "";
          for (size_t r = 0; r < p->n_roles; r++)
            snprintf(roles + strlen(roles), sizeof roles - strlen(roles),
                     "%s%s", r ? "," : "",
                     p->roles[r] == PERMIT__V1__ROLE__ROLE_ISSUER ? "issuer"
                                                                 : "audience");
          printf("%-24s %-18s %-16s %-9llu %-9llu %s%s\n", p->name, roles,
                 p->key_id, (unsigned long long)p->outbound_size,
                 (unsigned long long)p->inbound_size,
                 p->sync_state[0] ? p->sync_state : "-",
                 p->equivocation ? "  (EQUIVOCATION)" : "");
        }
        permit__v1__list_peers_response__free_unpacked(lp, NULL);
        rc = 0;
      }
    }
  }
  free(resp);
  ctl_api_close(&api);
  return rc;
}

static int cmd_list(const args *a) {
  static const char *const known[] = {"--data", "--config", "--id",
                                      "--title", "--notice-file", NULL};
  const char *sub = a->argc > 0 ? a->argv[0] : "";
  args rest = {a->argc - 1, a->argv + 1};
  if (strcmp(sub, "define") != 0) {
    fprintf(stderr, "permitctl list: define --id ID --title T "
                    "--notice-file FILE\n");
    return 2;
  }
  if (check_opts(&rest, known, 0, "list define") != 0) return 2;
  const char *id = opt(&rest, "--id"), *title = opt(&rest, "--title"),
             *file = opt(&rest, "--notice-file");
  if (id == NULL || title == NULL || file == NULL) {
    fprintf(stderr, "permitctl list define: --id, --title and --notice-file "
                    "are required\n");
    return 2;
  }
  FILE *f = fopen(file, "rb");
  if (f == NULL) {
    fprintf(stderr, "permitctl list define: cannot read %s: %s\n", file,
            strerror(errno));
    return 1;
  }
  char *text = malloc(16386);
  size_t n = text ? fread(text, 1, 16385, f) : 0;
  int bad = ferror(f), e = errno;
  fclose(f);
  if (bad) {
    fprintf(stderr, "permitctl list define: cannot read %s: %s\n", file,
            strerror(e));
    free(text);
    return 1;
  }
  if (text == NULL || n > 16384 || n == 0) {
    fprintf(stderr, "permitctl list define: %s must hold 1 to 16384 bytes\n",
            file);
    free(text);
    return 1;
  }
  /* The text goes on as a C string: a NUL would silently end it there,
   * and the notice stored would not be the file. */
  if (memchr(text, '\0', n) != NULL) {
    fprintf(stderr, "permitctl list define: %s contains a NUL byte; a notice "
                    "is UTF-8 text\n", file);
    free(text);
    return 1;
  }
  text[n] = '\0';
  permit_config c;
  ctl_api api;
  if (load_config(&rest, &c) != 0 || ctl_api_open(&c, &api, "") != 0) {
    free(text);
    return 1;
  }
  Permit__V1__DefineListRequest req = PERMIT__V1__DEFINE_LIST_REQUEST__INIT;
  req.list_id = (char *)id;
  req.title = (char *)title;
  req.notice_text = text;
  uint8_t *resp = NULL;
  size_t rl;
  int rc = 1;
  if (call(&api, "/permit.v1.Venue/DefineList", &req.base, &resp, &rl) == 0) {
    Permit__V1__DefineListResponse *r =
        permit__v1__define_list_response__unpack(NULL, rl, resp);
    if (r != NULL) {
      char hex[65] = "";
      if (r->notice_sha256.len == 32)
        permit_hex_encode(r->notice_sha256.data, 32, hex);
      printf("list %s: notice version %u%s, sha256 %s\n", id,
             r->notice_version, r->changed ? " (new)" : " (same text)", hex);
      permit__v1__define_list_response__free_unpacked(r, NULL);
      rc = 0;
    }
  }
  free(resp);
  free(text);
  ctl_api_close(&api);
  return rc;
}

static int cmd_offers(const args *a) {
  static const char *const known[] = {"--data", "--config", "--venue", NULL};
  if (check_opts(a, known, 0, "offers") != 0) return 2;
  const char *venue = opt(a, "--venue");
  if (venue == NULL) {
    fprintf(stderr, "permitctl offers: --venue is required\n");
    return 2;
  }
  permit_config c;
  ctl_api api;
  if (load_config(a, &c) != 0 || ctl_api_open(&c, &api, "") != 0) return 1;
  Permit__V1__ListOffersRequest req = PERMIT__V1__LIST_OFFERS_REQUEST__INIT;
  req.venue = (char *)venue;
  uint8_t *resp = NULL;
  size_t rl;
  int rc = 1;
  if (call(&api, "/permit.v1.Checkout/ListOffers", &req.base, &resp, &rl) ==
      0) {
    Permit__V1__ListOffersResponse *r =
        permit__v1__list_offers_response__unpack(NULL, rl, resp);
    for (size_t i = 0; r != NULL && i < r->n_lists; i++)
      printf("%s  \"%s\"  notice v%u: %s\n", r->lists[i]->list_id,
             r->lists[i]->title, r->lists[i]->notice_version,
             r->lists[i]->notice_text);
    if (r != NULL) {
      permit__v1__list_offers_response__free_unpacked(r, NULL);
      rc = 0;
    }
  }
  free(resp);
  ctl_api_close(&api);
  return rc;
}

static int cmd_optin(const args *a) {
  static const char *const known[] = {
      "--data",  "--config", "--order", "--email", "--venue", "--list",
      "--notice-version", "--given", "--family", "--locale", NULL};
  if (check_opts(a, known, 0, "optin") != 0) return 2;
  Permit__V1__RecordOptInRequest req = PERMIT__V1__RECORD_OPT_IN_REQUEST__INIT;
  req.order_ref = (char *)opt(a, "--order");
  req.email = (char *)opt(a, "--email");
  req.venue = (char *)opt(a, "--venue");
  req.list_id = (char *)opt(a, "--list");
  const char *ver = opt(a, "--notice-version");
  if (!req.order_ref || !req.email || !req.venue || !req.list_id || !ver) {
    fprintf(stderr, "permitctl optin: --order, --email, --venue, --list and "
                    "--notice-version are required\n");
    return 2;
  }
  char *end;
  unsigned long v = strtoul(ver, &end, 10);
  if (*end != '\0' || v == 0 || v > 0xffffffffUL) {
    fprintf(stderr, "permitctl optin: --notice-version is a number\n");
    return 2;
  }
  req.notice_version = (uint32_t)v;
  const char *g = opt(a, "--given"), *f = opt(a, "--family"),
             *l = opt(a, "--locale");
  req.given_name = (char *)(g ? g : "");
  req.family_name = (char *)(f ? f : "");
  req.locale = (char *)(l ? l : "");
  permit_config c;
  ctl_api api;
  if (load_config(a, &c) != 0 || ctl_api_open(&c, &api, "") != 0) return 1;
  uint8_t *resp = NULL;
  size_t rl;
  int rc = 1;
  if (call(&api, "/permit.v1.Checkout/RecordOptIn", &req.base, &resp, &rl) ==
      0) {
    Permit__V1__RecordOptInResponse *r =
        permit__v1__record_opt_in_response__unpack(NULL, rl, resp);
    if (r != NULL) {
      char hex[33] = "";
      if (r->record_id.len == 16) permit_hex_encode(r->record_id.data, 16, hex);
      printf("%s record %s (seq %llu)\nconsent link: %s\n",
             r->status ==
                     PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__ALREADY_ACTIVE
                 ? "already active:"
                 : "created",
             hex, (unsigned long long)r->seq, r->consent_link);
      permit__v1__record_opt_in_response__free_unpacked(r, NULL);
      rc = 0;
    }
  }
  free(resp);
  ctl_api_close(&api);
  return rc;
}

/* RFC 4180: quote when needed, double the quotes. */
static void csv_field(FILE *out, const char *s, int last) {
  int quote = strpbrk(s, ",\"\r\n") != NULL;
  if (quote) {
    fputc('"', out);
    for (; *s; s++) {
      if (*s == '"') fputc('"', out);
      fputc(*s, out);
    }
    fputc('"', out);
  } else {
    fputs(s, out);
  }
  fputs(last ? "\r\n" : ",", out);
}

typedef struct export_ctx {
  FILE *out;
  int jsonl, count, bad;
  int header; /* the CSV header is out */
  int werr;   /* errno of the first failed write */
} export_ctx;

/* The CSV header goes out with the first contact, or after an OK answer
 * with none: a call refused before either leaves no header-only file. */
static void export_header(export_ctx *x) {
  if (x->jsonl || x->header) return;
  if (fputs("Email Address,First Name,Last Name,Language,Opt-in Time,"
            "Source,Notice Version,Record Id,Unsubscribe URL\r\n",
            x->out) == EOF && x->werr == 0)
    x->werr = errno;
  x->header = 1;
}


static void export_one(void *arg, const uint8_t *msg, size_t len) {
  export_ctx *x = arg;
  Permit__V1__ContactEntry *e =
      permit__v1__contact_entry__unpack(NULL, len, msg);
  if (e == NULL) {
    x->bad++;
    return;
  }
  char when[32], rid[33] = "", ver[16];
  export_header(x);
  ctl_iso_time(e->collected_at_ms, when, sizeof when);
  if (e->record_id.len == 16) permit_hex_encode(e->record_id.data, 16, rid);
  snprintf(ver, sizeof ver, "%u", e->notice_version);
  if (x->jsonl) {
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s}", "email",
        e->email, "given_name", e->given_name, "family_name", e->family_name,
        "locale", e->locale, "opt_in_time", when, "source", e->issuer,
        "notice_version", (int)e->notice_version, "record_id", rid, "list_id",
        e->list_id, "status", e->status, "unsubscribe_url",
        e->unsubscribe_url);
    char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (line != NULL) fprintf(x->out, "%s\n", line);
    free(line);
    json_decref(j);
  } else {
    csv_field(x->out, e->email, 0);
    csv_field(x->out, e->given_name, 0);
    csv_field(x->out, e->family_name, 0);
    csv_field(x->out, e->locale, 0);
    csv_field(x->out, when, 0);
    csv_field(x->out, e->issuer, 0);
    csv_field(x->out, ver, 0);
    csv_field(x->out, rid, 0);
    csv_field(x->out, e->unsubscribe_url, 1);
  }
  if (x->werr == 0 && ferror(x->out)) x->werr = errno;
  x->count++;
  permit__v1__contact_entry__free_unpacked(e, NULL);
}

static int cmd_contacts(const args *a) {
  static const char *const known[] = {"--data", "--config", "--list",
                                      "--format", "--out", NULL};
  const char *sub = a->argc > 0 ? a->argv[0] : "";
  args rest = {a->argc - 1, a->argv + 1};
  if (strcmp(sub, "export") != 0) {
    fprintf(stderr, "permitctl contacts: export --list ID\n");
    return 2;
  }
  if (check_opts(&rest, known, 0, "contacts export") != 0) return 2;
  const char *list = opt(&rest, "--list"), *format = opt(&rest, "--format"),
             *file = opt(&rest, "--out");
  if (list == NULL) {
    fprintf(stderr, "permitctl contacts export: --list is required\n");
    return 2;
  }
  if (format == NULL) format = "csv";
  if (strcmp(format, "csv") != 0 && strcmp(format, "jsonl") != 0) {
    fprintf(stderr, "permitctl contacts export: --format is csv or jsonl\n");
    return 2;
  }
  /* Refused before asking the node: nothing to throw away after. */
  int orc = file != NULL ? ctl_out_check(file, "contacts export") : 0;
  if (orc != 0) return orc;
  permit_config c;
  ctl_api api;
  if (load_config(&rest, &c) != 0 || ctl_api_open(&c, &api, "") != 0) return 1;
  /* Written to a temporary file and renamed: a failed export leaves no
   * half file for the mailing tool to import. */
  ctl_out o = {.f = stdout};
  if (file != NULL && (orc = ctl_out_open(&o, file, "contacts export")) != 0) {
    ctl_api_close(&api);
    return orc;
  }
  export_ctx x = {o.f, strcmp(format, "jsonl") == 0, 0, 0, 0, 0};
  Permit__V1__ListContactsRequest req = PERMIT__V1__LIST_CONTACTS_REQUEST__INIT;
  req.list_id = (char *)list;
  size_t n = permit__v1__list_contacts_request__get_packed_size(&req);
  uint8_t *buf = malloc(n ? n : 1);
  int status = PERMIT_GRPC_UNKNOWN, rc = -1;
  char msg[512] = "", hint[400] = "";
  if (buf != NULL) {
    permit__v1__list_contacts_request__pack(&req, buf);
    rc = permit_client_stream_sync(&api.cc, "/permit.v1.Venue/ListContacts",
                                   buf, n, 60000, export_one, &x, &status,
                                   msg, sizeof msg);
  }
  free(buf);
  int ok = rc == 0 && status == PERMIT_GRPC_OK && x.bad == 0;
  if (ok) export_header(&x);
  if (!ok) {
    if (rc == 0 && status == PERMIT_GRPC_OK)
      snprintf(msg, sizeof msg, "%d answers are not contact entries", x.bad);
    fprintf(stderr, "permitctl contacts export: %s%s%s%s\n",
            rc != 0 || status == PERMIT_GRPC_OK
                ? "call failed"
                : permit_grpc_status_name(status),
            msg[0] ? ": " : "", msg,
            rc != 0 ? ""
                    : ctl_role_hint(&api, "/permit.v1.Venue/ListContacts",
                                    status, hint, sizeof hint));
  }
  if (file != NULL) {
    o.err = x.werr;
    ok = ctl_out_close(&o, ok, "contacts export") == 0 && ok;
    if (ok)
      fprintf(stderr, "%d contacts of list %s written to %s\n", x.count, list,
              file);
  } else if (ok && (ferror(stdout) || fflush(stdout) != 0)) {
    fprintf(stderr, "permitctl contacts export: cannot write to standard "
                    "output: %s\n", strerror(ferror(stdout) && x.werr ? x.werr
                                                                 : errno));
    ok = 0;
  }
  ctl_api_close(&api);
  return ok ? 0 : 1;
}

static int cmd_unsubscribe(const args *a) {
  static const char *const known[] = {"--data", "--config", "--email",
                                      "--list", NULL};
  if (check_opts(a, known, 0, "unsubscribe") != 0) return 2;
  Permit__V1__UnsubscribeRequest req = PERMIT__V1__UNSUBSCRIBE_REQUEST__INIT;
  req.email = (char *)opt(a, "--email");
  req.list_id = (char *)opt(a, "--list");
  if (req.email == NULL || req.list_id == NULL) {
    fprintf(stderr, "permitctl unsubscribe: --email and --list are "
                    "required\n");
    return 2;
  }
  permit_config c;
  ctl_api api;
  if (load_config(a, &c) != 0 || ctl_api_open(&c, &api, "") != 0) return 1;
  uint8_t *resp = NULL;
  size_t rl;
  int rc = 1;
  if (call(&api, "/permit.v1.Venue/Unsubscribe", &req.base, &resp, &rl) ==
      0) {
    Permit__V1__UnsubscribeResponse *r =
        permit__v1__unsubscribe_response__unpack(NULL, rl, resp);
    if (r != NULL) {
      if (r->withdrawn > 0)
        printf("unsubscribed from %s: %d opt-in%s withdrawn; the issuer%s "
               "told\n",
               req.list_id, r->withdrawn, r->withdrawn == 1 ? "" : "s",
               r->withdrawn == 1 ? " is" : "s are");
      else
        printf("no active contact with that address on %s: nothing to do\n",
               req.list_id);
      permit__v1__unsubscribe_response__free_unpacked(r, NULL);
      rc = 0;
    }
  }
  free(resp);
  ctl_api_close(&api);
  return rc;
}

/* Offline: the node must be stopped (its lock is taken). */
static int cmd_rotate_link_secret(const args *a) {
  static const char *const known[] = {"--data", "--config", NULL};
  if (check_opts(a, known, 0, "rotate-link-secret") != 0) return 2;
  permit_config c;
  if (load_config(a, &c) != 0) return 1;
  int lock = -1;
  permit_err err;
  permit_store *s = NULL;
  char path[4200];
  uint8_t fresh[32];
  snprintf(path, sizeof path, "%s/db", c.data);
  int rc = permit_identity_lock(c.data, &lock, &err);
  if (rc == 0) rc = permit_store_open(path, &s, &err);
  if (rc == 0 && permit_random(fresh, sizeof fresh) != 0)
    rc = permit_err_set(&err, PERMIT_ECRYPTO, "no randomness");
  if (rc == 0)
    rc = permit_store_put(s, PERMIT_CF_DEFAULT, "node/token-secret", 17,
                          fresh, sizeof fresh, &err);
  permit_wipe(fresh, sizeof fresh);
  permit_store_close(s);
  if (lock >= 0) permit_identity_unlock(lock);
  if (rc != 0) {
    fprintf(stderr, "permitctl rotate-link-secret: %s%s\n", err.msg,
            err.code == PERMIT_EEXIST ? " (stop the node first)" : "");
    return 1;
  }
  printf("new link secret in %s: every consent and unsubscribe link made "
         "before is void\n", path);
  return 0;
}

static int cmd_compact(const args *a) {
  static const char *const known[] = {"--data", "--config", NULL};
  if (check_opts(a, known, 0, "compact") != 0) return 2;
  permit_config c;
  if (load_config(a, &c) != 0) return 1;
  int lock = -1;
  permit_err err;
  permit_store *s = NULL;
  char path[4200];
  snprintf(path, sizeof path, "%s/db", c.data);
  int rc = permit_identity_lock(c.data, &lock, &err);
  if (rc == 0) rc = permit_store_open(path, &s, &err);
  if (rc == 0) rc = permit_store_compact(s, &err);
  permit_store_close(s);
  if (lock >= 0) permit_identity_unlock(lock);
  if (rc != 0) {
    fprintf(stderr, "permitctl compact: %s\n", err.msg);
    return 1;
  }
  printf("compacted %s\n", path);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  args a = {argc - 2, argv + 2};
  int rc;
  if (strcmp(cmd, "init") == 0) rc = cmd_init(&a);
  else if (strcmp(cmd, "keys") == 0) rc = cmd_keys(&a);
  else if (strcmp(cmd, "card") == 0) rc = cmd_card(&a);
  else if (strcmp(cmd, "peer") == 0) rc = cmd_peer(&a);
  else if (strcmp(cmd, "list") == 0) rc = cmd_list(&a);
  else if (strcmp(cmd, "offers") == 0) rc = cmd_offers(&a);
  else if (strcmp(cmd, "optin") == 0) rc = cmd_optin(&a);
  else if (strcmp(cmd, "contacts") == 0) rc = cmd_contacts(&a);
  else if (strcmp(cmd, "compact") == 0) rc = cmd_compact(&a);
  else if (strcmp(cmd, "unsubscribe") == 0) rc = cmd_unsubscribe(&a);
  else if (strcmp(cmd, "rotate-link-secret") == 0)
    rc = cmd_rotate_link_secret(&a);
  else if (strcmp(cmd, "proof") == 0) rc = permitctl_proof(a.argc, a.argv);
  else if (strcmp(cmd, "verify-proof") == 0)
    rc = permitctl_verify_proof(a.argc, a.argv);
  else if (strcmp(cmd, "version") == 0) {
    printf("permitctl 0.1.0 (protocol permit/v1)\n");
    rc = 0;
  } else if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0) {
    usage(stdout);
    rc = 0;
  } else {
    fprintf(stderr, "permitctl: unknown command \"%s\"\n", cmd);
    usage(stderr);
    rc = 2;
  }
  permit_crypto_cleanup();
  return rc;
}
