/*
 * test_issuer: the issuer side of the opt-in flow in one process.  A
 * reseller node (tixly.example) serves Checkout on h2c and Peer on mutual
 * TLS; two venue nodes (fillmore.example, bluenote.example) exist as
 * state only, and the test plays fillmore's sync with the gRPC client:
 * RecordOptIn and its idempotency (also under concurrent duplicates and
 * a cancelled call), the checks and their status codes, Pull with and
 * without follow, checkpoints against a recomputed Merkle root, proofs,
 * the authorisation of every Peer call, and no plaintext contact in the
 * reseller's data directory.
 */
#include <event2/event.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "permit/client.h"
#include "permit/ed25519.h"
#include "permit/hpke.h"
#include "permit/node.h"
#include "permit/node_services.h"
#include "permit/server.h"
#include "permit/util.h"
#include "permit/token.h"
#include "testlib.h"

#define ISSUER "tixly.example"
#define VENUE "fillmore.example"
#define OTHER "bluenote.example"
#define NOTICE1 "Send me news from The Fillmore. Unsubscribe at any time."
#define NOTICE2 "Send me news and offers from The Fillmore. Unsubscribe " \
                "at any time."
#define MAX_ENTRIES 128
#define MAX_CPS 16

/* ---- the event loop ---- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs |base| until *flag is set or |seconds| pass; returns *flag. */
static int run_until(struct event_base *base, volatile int *flag,
                     double seconds) {
  double end = now_s() + seconds;
  struct timeval tick = {0, 10000};
  while (!*flag && now_s() < end) {
    event_base_loopexit(base, &tick);
    event_base_dispatch(base);
  }
  return *flag;
}

static void run_for(struct event_base *base, double seconds) {
  volatile int never = 0;
  run_until(base, &never, seconds);
}

/* ---- unary calls ---- */

typedef struct unary_res {
  int done, status, messages;
  char msg[512];
  uint8_t *resp;
  size_t resp_len;
} unary_res;

static void unary_message(void *arg, const uint8_t *m, size_t n) {
  unary_res *r = arg;
  r->messages++;
  free(r->resp);
  r->resp = malloc(n ? n : 1);
  memcpy(r->resp, m, n);
  r->resp_len = n;
}
static void unary_done(void *arg, int status, const char *msg) {
  unary_res *r = arg;
  r->done = 1;
  r->status = status;
  snprintf(r->msg, sizeof r->msg, "%s", msg);
}
static const permit_client_handlers unary_handlers = {unary_message,
                                                      unary_done};

static void unary_reset(unary_res *r) {
  free(r->resp);
  memset(r, 0, sizeof *r);
}

/* A blocking call on the test's loop; |r| is reset first. */
static int unary(struct event_base *base, permit_client *c, const char *path,
                 const uint8_t *req, size_t len, unary_res *r) {
  unary_reset(r);
  permit_client_start(c, path, req, len, 10000, &unary_handlers, r);
  if (!run_until(base, &r->done, 15)) return -1;
  return r->status;
}

/* ---- the world ---- */

typedef struct expect {
  uint8_t record_id[16];
  char email[64]; /* normalized */
  char given[64], family[64], locale[16];
} expect;

typedef struct world {
  char dirs[3][4096];
  permit_node *iss, *ven, *oth;
  permit_server *srv;
  permit_peer_service *ps;
  permit_checkout *co;
  SSL_CTX *stls, *ctls, *otls;
  struct event_base *base;
  permit_client *api, *peer, *plain, *other;
  permit_peer iss_at_venue; /* the issuer as the venue pinned it */
  expect ex[MAX_ENTRIES];
  int nex;
} world;

static permit_node *open_node(char *dir, const char *name, int roles) {
  permit_err err = {0};
  snprintf(dir, 4096, "%s", test_tmpdir(name));
  permit_node_config cfg = {.name = name, .roles = roles, .data_dir = dir,
                            .endpoint = "127.0.0.1:7001"};
  permit_node *n = NULL;
  if (permit_node_open(&cfg, &n, &err) != 0) {
    fprintf(stderr, "node %s: %s\n", name, err.msg);
    exit(2);
  }
  return n;
}

/* Pins |a|'s card at |b|. */
static void pin(permit_node *a, permit_node *b, permit_peer *out) {
  uint8_t *card;
  size_t len;
  permit_err err = {0};
  CHECK(permit_node_card(a, &card, &len, &err) == 0);
  CHECKF(permit_node_peer_add(b, card, len, out, &err) == 0, "%s", err.msg);
  free(card);
}

static void define_list(permit_node *venue, const char *notice,
                        permit_node *issuer) {
  permit_err err = {0};
  Permit__V1__CatalogList cl = PERMIT__V1__CATALOG_LIST__INIT;
  int changed = 0;
  CHECKF(permit_node_define_list(venue, "newsletter", "News", notice,
                                 &changed, &cl, &err) == 0,
         "%s", err.msg);
  permit_catalog_list_clear(&cl);
  uint8_t *cat;
  size_t len;
  CHECK(permit_node_catalog(venue, &cat, &len, &err) == 0);
  CHECK(permit_node_catalog_store(issuer, permit_node_name(venue), cat, len,
                                  &err) == 0);
  free(cat);
}

static void world_start(world *w) {
  permit_err err = {0};
  memset(w, 0, sizeof *w);
  w->iss = open_node(w->dirs[0], ISSUER, PERMIT_ROLE_ISSUER);
  w->ven = open_node(w->dirs[1], VENUE, PERMIT_ROLE_AUDIENCE);
  w->oth = open_node(w->dirs[2], OTHER, PERMIT_ROLE_AUDIENCE);
  pin(w->iss, w->ven, &w->iss_at_venue);
  pin(w->iss, w->oth, NULL);
  pin(w->ven, w->iss, NULL);
  pin(w->oth, w->iss, NULL);
  define_list(w->ven, NOTICE1, w->iss);
  define_list(w->oth, "Blue Note news.", w->iss);

  w->srv = permit_server_new(1, NULL, &err);
  CHECK(w->srv != NULL);
  w->ps = permit_peer_service_new(w->iss, w->srv, &err);
  w->co = permit_checkout_new(w->iss, &err);
  CHECK(w->ps != NULL && w->co != NULL);
  static permit_method api_m[PERMIT_CHECKOUT_METHODS];
  static permit_method peer_m[PERMIT_PEER_METHODS];
  permit_checkout_methods(w->co, api_m);
  permit_peer_service_methods(w->ps, peer_m);
  w->stls = permit_tls_server_ctx(permit_node_sign_key(w->iss),
                                  permit_node_cert(w->iss),
                                  permit_node_pins(w->iss), &err);
  w->ctls = permit_tls_client_ctx(permit_node_sign_key(w->ven),
                                  permit_node_cert(w->ven),
                                  permit_node_pins(w->ven), &err);
  w->otls = permit_tls_client_ctx(permit_node_sign_key(w->oth),
                                  permit_node_cert(w->oth),
                                  permit_node_pins(w->oth), &err);
  CHECK(w->stls && w->ctls && w->otls);
  int api_port = 0, peer_port = 0, plain_port = 0;
  permit_listener_config api = {.name = "local", .host = "127.0.0.1",
                                .methods = api_m,
                                .nmethods = PERMIT_CHECKOUT_METHODS};
  permit_listener_config peer = {.name = "peer", .host = "127.0.0.1",
                                 .tls = w->stls, .methods = peer_m,
                                 .nmethods = PERMIT_PEER_METHODS};
  /* The Peer methods on h2c too: there the caller has no name. */
  permit_listener_config plain = {.name = "plain", .host = "127.0.0.1",
                                  .methods = peer_m,
                                  .nmethods = PERMIT_PEER_METHODS};
  if (permit_server_listen(w->srv, &api, &api_port, &err) != 0 ||
      permit_server_listen(w->srv, &peer, &peer_port, &err) != 0 ||
      permit_server_listen(w->srv, &plain, &plain_port, &err) != 0 ||
      permit_server_start(w->srv, &err) != 0) {
    fprintf(stderr, "server: %s\n", err.msg);
    exit(2);
  }
  w->base = event_base_new();
  permit_client_config cc = {.host = "127.0.0.1", .port = api_port};
  w->api = permit_client_new(w->base, &cc, &err);
  cc.port = plain_port;
  w->plain = permit_client_new(w->base, &cc, &err);
  cc.port = peer_port;
  cc.tls = w->ctls;
  cc.authority = ISSUER;
  w->peer = permit_client_new(w->base, &cc, &err);
  cc.tls = w->otls;
  w->other = permit_client_new(w->base, &cc, &err);
  CHECK(w->api && w->plain && w->peer && w->other);
}

/* Stops the server and frees the services, as permitd does. */
static void world_stop_server(world *w) {
  permit_client_free(w->api);
  permit_client_free(w->plain);
  permit_client_free(w->peer);
  permit_client_free(w->other);
  event_base_loop(w->base, EVLOOP_NONBLOCK);
  event_base_free(w->base);
  permit_server_stop(w->srv);
  permit_checkout_free(w->co);
  permit_peer_service_free(w->ps);
  permit_server_free(w->srv);
  SSL_CTX_free(w->stls);
  SSL_CTX_free(w->ctls);
  SSL_CTX_free(w->otls);
}

static void world_free(world *w) {
  permit_node_close(w->iss);
  permit_node_close(w->ven);
  permit_node_close(w->oth);
  for (int i = 0; i < 3; i++) test_rmrf(w->dirs[i]);
}

/* ---- RecordOptIn ---- */

typedef struct optin {
  const char *order, *email, *given, *family, *locale, *venue, *list;
  uint32_t version;
} optin;

static size_t pack_optin(const optin *o, uint8_t *buf) {
  Permit__V1__RecordOptInRequest r = PERMIT__V1__RECORD_OPT_IN_REQUEST__INIT;
  r.order_ref = (char *)o->order;
  r.email = (char *)o->email;
  r.given_name = (char *)(o->given ? o->given : "");
  r.family_name = (char *)(o->family ? o->family : "");
  r.locale = (char *)(o->locale ? o->locale : "");
  r.venue = (char *)(o->venue ? o->venue : VENUE);
  r.list_id = (char *)(o->list ? o->list : "newsletter");
  r.notice_version = o->version ? o->version : 1;
  r.user_agent = "Mozilla/5.0 (test)";
  r.ip_prefix = "203.0.113.0/24";
  return permit__v1__record_opt_in_request__pack(&r, buf);
}

/* Records |o|; on OK decodes the answer into |*resp| (caller frees). */
static int record(world *w, const optin *o,
                  Permit__V1__RecordOptInResponse **resp, char *msg,
                  size_t cap) {
  uint8_t buf[4096];
  size_t n = pack_optin(o, buf);
  unary_res r = {0};
  int st = unary(w->base, w->api, "/permit.v1.Checkout/RecordOptIn", buf, n,
                 &r);
  if (msg != NULL) snprintf(msg, cap, "%s", r.msg);
  if (resp != NULL)
    *resp = st == 0 ? permit__v1__record_opt_in_response__unpack(
                          NULL, r.resp_len, r.resp)
                    : NULL;
  unary_reset(&r);
  return st;
}

/* Records |o| for the venue and remembers what its entry must hold. */
static void record_expect(world *w, const optin *o) {
  Permit__V1__RecordOptInResponse *resp = NULL;
  char msg[512];
  int st = record(w, o, &resp, msg, sizeof msg);
  CHECKF(st == 0 && resp != NULL, "status %d: %s", st, msg);
  if (resp == NULL) return;
  CHECK(resp->status == PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__CREATED);
  expect *e = &w->ex[w->nex++];
  memcpy(e->record_id, resp->record_id.data, 16);
  permit_email_normalize(o->email, strlen(o->email), e->email,
                         sizeof e->email);
  snprintf(e->given, sizeof e->given, "%s", o->given ? o->given : "");
  snprintf(e->family, sizeof e->family, "%s", o->family ? o->family : "");
  snprintf(e->locale, sizeof e->locale, "%s", o->locale ? o->locale : "");
  permit__v1__record_opt_in_response__free_unpacked(resp, NULL);
}

static void test_checkout(world *w) {
  permit_err err = {0};
  /* ListOffers: the venue's lists as its catalog says. */
  Permit__V1__ListOffersRequest lr = PERMIT__V1__LIST_OFFERS_REQUEST__INIT;
  lr.venue = VENUE;
  uint8_t buf[4096];
  size_t n = permit__v1__list_offers_request__pack(&lr, buf);
  unary_res r = {0};
  CHECK(unary(w->base, w->api, "/permit.v1.Checkout/ListOffers", buf, n,
              &r) == 0);
  Permit__V1__ListOffersResponse *lo =
      permit__v1__list_offers_response__unpack(NULL, r.resp_len, r.resp);
  CHECK(lo != NULL && lo->n_lists == 1 &&
        strcmp(lo->lists[0]->list_id, "newsletter") == 0 &&
        lo->lists[0]->notice_version == 1 &&
        strcmp(lo->lists[0]->notice_text, NOTICE1) == 0);
  if (lo != NULL) permit__v1__list_offers_response__free_unpacked(lo, NULL);
  lr.venue = "nowhere.example";
  n = permit__v1__list_offers_request__pack(&lr, buf);
  CHECK(unary(w->base, w->api, "/permit.v1.Checkout/ListOffers", buf, n,
              &r) == PERMIT_GRPC_NOT_FOUND);
  CHECK(strstr(r.msg, "unknown venue") != NULL);

  /* The first opt-in, and its key material. */
  uint64_t synced = permit_store_synced_writes(permit_node_store(w->iss));
  optin a = {.order = "ORD-1001", .email = "  Ada.Lovelace@Example.COM ",
             .given = "Ada", .family = "Lovelace", .locale = "en-GB"};
  Permit__V1__RecordOptInResponse *first = NULL, *again = NULL;
  char msg[512];
  CHECK(record(w, &a, &first, msg, sizeof msg) == 0 && first != NULL);
  if (first == NULL) return;
  CHECK(first->status ==
        PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__CREATED);
  CHECK(first->record_id.len == 16 && first->seq == 0);
  CHECK(permit_store_synced_writes(permit_node_store(w->iss)) > synced);
  expect *e = &w->ex[w->nex++];
  memcpy(e->record_id, first->record_id.data, 16);
  snprintf(e->email, sizeof e->email, "ada.lovelace@example.com");
  snprintf(e->given, sizeof e->given, "Ada");
  snprintf(e->family, sizeof e->family, "Lovelace");
  snprintf(e->locale, sizeof e->locale, "en-GB");

  /* The consent link: a token naming the buyer key, under the link
   * secret, that expires in a year. */
  static const char prefix[] = "https://" ISSUER "/c/";
  CHECKF(strncmp(first->consent_link, prefix, sizeof prefix - 1) == 0,
         "link %s", first->consent_link);
  const char *token = first->consent_link + sizeof prefix - 1;
  uint8_t buyer[32], secret[32], payload[PERMIT_TOKEN_PAYLOAD_MAX];
  const char *bl = "buyer\nada.lovelace@example.com";
  permit_hmac_sha256(permit_node_secret(w->iss), 32, (const uint8_t *)bl,
                     strlen(bl), buyer);
  permit_node_token_secret(w->iss, secret);
  size_t pl = 0;
  int64_t now = permit_now_ms();
  CHECK(permit_token_open(secret, ISSUER, 'c', token, strlen(token), now,
                          payload, sizeof payload, &pl, &err) == 0 &&
        pl == 32 && memcmp(payload, buyer, 32) == 0);
  CHECK(permit_token_open(secret, ISSUER, 'c', token, strlen(token),
                          now + 366LL * 86400000, payload, sizeof payload,
                          &pl, &err) == PERMIT_TOKEN_EXPIRED);
  /* Rotating the secret revokes every link. */
  CHECK(permit_node_token_rotate(w->iss, &err) == 0);
  permit_node_token_secret(w->iss, secret);
  CHECK(permit_token_open(secret, ISSUER, 'c', token, strlen(token), now,
                          payload, sizeof payload, &pl, &err) ==
        PERMIT_EVERIFY);

  /* What the append wrote beside the entry. */
  char ik[256];
  int il = snprintf(ik, sizeof ik, "order\nORD-1001\n%s\nnewsletter", VENUE);
  uint8_t idem[32], v[25];
  permit_hmac_sha256(permit_node_secret(w->iss), 32, (const uint8_t *)ik,
                     (size_t)il, idem);
  CHECK(permit_store_get_fixed(permit_node_store(w->iss),
                               PERMIT_CF_IDEMPOTENCY, idem, 32, v, 25,
                               &err) == 0 &&
        memcmp(v, first->record_id.data, 16) == 0 &&
        permit_get_u64be(v + 16) == 0 && v[24] == 0);
  /* The buyer's opt-in row (what the consent centre lists), and no
   * longer the "buyer/" index earlier versions wrote and nothing read. */
  uint8_t ok[5 + 32 + 16];
  memcpy(ok, "bopt/", 5);
  memcpy(ok + 5, buyer, 32);
  memcpy(ok + 37, first->record_id.data, 16);
  uint8_t *row = NULL;
  size_t rowl = 0;
  CHECK(permit_store_get(permit_node_store(w->iss), PERMIT_CF_INDEXES, ok,
                         sizeof ok, &row, &rowl, &err) == 0 && rowl > 0);
  free(row);
  uint8_t bk[6 + 32 + 64];
  memcpy(bk, "buyer/", 6);
  memcpy(bk + 6, buyer, 32);
  int bkl = 38 + snprintf((char *)bk + 38, sizeof bk - 38, "/%s/newsletter",
                          VENUE);
  uint8_t rid[16];
  CHECK(permit_store_get_fixed(permit_node_store(w->iss), PERMIT_CF_INDEXES,
                               bk, (size_t)bkl, rid, 16, &err) ==
        PERMIT_ENOTFOUND);

  /* The same order again: the same record, nothing appended. */
  CHECK(record(w, &a, &again, msg, sizeof msg) == 0 && again != NULL);
  if (again != NULL) {
    CHECK(again->status ==
          PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__ALREADY_ACTIVE);
    CHECK(again->record_id.len == 16 &&
          memcmp(again->record_id.data, first->record_id.data, 16) == 0 &&
          again->seq == first->seq);
    permit__v1__record_opt_in_response__free_unpacked(again, NULL);
  }
  CHECK(permit_log_size(permit_node_outbound(w->iss, VENUE)) == 1);
  /* The same order for another buyer is refused, not answered with the
   * first buyer's record, and nothing is recorded for either. */
  optin other = a;
  other.email = "bob@example.com";
  other.given = "Bob";
  CHECKF(record(w, &other, NULL, msg, sizeof msg) ==
                 PERMIT_GRPC_ALREADY_EXISTS &&
             strstr(msg, "different buyer") != NULL &&
             strstr(msg, "bob@") == NULL,
         "another buyer, same order: %s", msg);
  CHECK(permit_log_size(permit_node_outbound(w->iss, VENUE)) == 1);

  /* Bad input: the right code, a message naming the field, and never
   * the address itself (messages are logged). */
  struct {
    optin o;
    int status;
    const char *says;
  } bad[] = {
      {{.order = "ORD-2", .email = "not-an-address"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email"},
      {{.order = "ORD-2", .email = "a b@example.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email"},
      {{.order = "ORD-2", .email = "@example.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email"},
      {{.order = "ORD-2", .email = "bob@localhost"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email"},
      {{.order = "ORD-2", .email = "bob@@example.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email"},
      {{.order = "ORD-2", .email = "<bob>@example.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email local part"},
      {{.order = "ORD-2", .email = "bob,ann@example.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email local part"},
      {{.order = "ORD-2", .email = "bob..b@example.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email local part"},
      {{.order = "ORD-2", .email = ".bob@example.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email local part"},
      {{.order = "ORD-2", .email = "bob@exa_mple.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email domain"},
      {{.order = "ORD-2", .email = "bob@[192.0.2.1]"},
       PERMIT_GRPC_INVALID_ARGUMENT, "email domain"},
      {{.order = "", .email = "bob@example.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "order_ref"},
      {{.order = "ORD\x01", .email = "bob@example.com"},
       PERMIT_GRPC_INVALID_ARGUMENT, "order_ref"},
      {{.order = "ORD-2", .email = "bob@example.com", .given = "B\xffob"},
       PERMIT_GRPC_INVALID_ARGUMENT, "given_name"},
      {{.order = "ORD-2", .email = "bob@example.com",
        .family = "0123456789012345678901234567890123456789012345678901234"
                  "5678901234567890123456789012345678901234567890"},
       PERMIT_GRPC_INVALID_ARGUMENT, "family_name"},
      {{.order = "ORD-2", .email = "bob@example.com", .locale = "en_GB"},
       PERMIT_GRPC_INVALID_ARGUMENT, "locale"},
      {{.order = "ORD-2", .email = "bob@example.com", .venue = "Bad Name"},
       PERMIT_GRPC_INVALID_ARGUMENT, "venue"},
      {{.order = "ORD-2", .email = "bob@example.com",
        .venue = "nowhere.example"},
       PERMIT_GRPC_NOT_FOUND, "unknown venue"},
      {{.order = "ORD-2", .email = "bob@example.com", .venue = ISSUER},
       PERMIT_GRPC_NOT_FOUND, "unknown venue"},
      {{.order = "ORD-2", .email = "bob@example.com", .list = "nope"},
       PERMIT_GRPC_NOT_FOUND, "no list"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int st = record(w, &bad[i].o, NULL, msg, sizeof msg);
    CHECKF(st == bad[i].status && strstr(msg, bad[i].says) != NULL &&
               strstr(msg, "bob@") == NULL,
           "case %zu: status %d: %s", i, st, msg);
  }
  CHECK(permit_log_size(permit_node_outbound(w->iss, VENUE)) == 1);

  /* A new notice text: the old version is refused with a clear message,
   * the new one accepted, and a retry of an order recorded under the old
   * text is still ALREADY_ACTIVE. */
  define_list(w->ven, NOTICE2, w->iss);
  optin b = {.order = "ORD-1002", .email = "grace@example.org",
             .given = "Grace", .family = "Hopper", .locale = "en-US"};
  CHECK(record(w, &b, NULL, msg, sizeof msg) ==
        PERMIT_GRPC_FAILED_PRECONDITION);
  CHECKF(strstr(msg, "notice version 1 was shown but the current version is "
                     "2: show the new text and ask again") != NULL,
         "%s", msg);
  b.version = 2;
  record_expect(w, &b);
  CHECK(record(w, &a, &again, msg, sizeof msg) == 0 && again != NULL &&
        again->status ==
            PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__ALREADY_ACTIVE);
  if (again != NULL)
    permit__v1__record_opt_in_response__free_unpacked(again, NULL);
  permit__v1__record_opt_in_response__free_unpacked(first, NULL);

  /* Another venue's opt-in goes to its own log. */
  optin c = {.order = "ORD-1003", .email = "miles@example.net",
             .given = "Miles", .family = "Davis", .venue = OTHER};
  CHECK(record(w, &c, NULL, msg, sizeof msg) == 0);
  CHECK(permit_log_size(permit_node_outbound(w->iss, OTHER)) == 1);
  unary_reset(&r);
}

/* The RecordOptIn answer in |r|: NULL unless the call was OK and its
 * message decodes (caller frees). */
static Permit__V1__RecordOptInResponse *optin_answer(const unary_res *r) {
  return r->status == 0 ? permit__v1__record_opt_in_response__unpack(
                              NULL, r->resp_len, r->resp)
                        : NULL;
}

/* Eight copies of one order at once: one record, eight equal answers. */
static void test_concurrent_duplicates(world *w) {
  optin o = {.order = "ORD-2001", .email = "nina@example.com",
             .given = "Nina", .family = "Simone", .version = 2};
  uint8_t buf[4096];
  size_t n = pack_optin(&o, buf);
  uint64_t before = permit_log_size(permit_node_outbound(w->iss, VENUE));
  unary_res r[8];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 8; i++)
    permit_client_start(w->api, "/permit.v1.Checkout/RecordOptIn", buf, n,
                        10000, &unary_handlers, &r[i]);
  int created = 0, active = 0, same = 1;
  uint8_t id[16] = {0};
  for (int i = 0; i < 8; i++) {
    CHECK(run_until(w->base, &r[i].done, 15));
    CHECKF(r[i].status == 0, "copy %d: %d %s", i, r[i].status, r[i].msg);
    Permit__V1__RecordOptInResponse *resp = optin_answer(&r[i]);
    if (resp == NULL) continue;
    created += resp->status ==
               PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__CREATED;
    active += resp->status ==
              PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__ALREADY_ACTIVE;
    if (created + active == 1) memcpy(id, resp->record_id.data, 16);
    same &= resp->record_id.len == 16 &&
            memcmp(id, resp->record_id.data, 16) == 0;
    if (resp->status == PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__CREATED) {
      expect *e = &w->ex[w->nex++];
      memcpy(e->record_id, resp->record_id.data, 16);
      snprintf(e->email, sizeof e->email, "nina@example.com");
      snprintf(e->given, sizeof e->given, "Nina");
      snprintf(e->family, sizeof e->family, "Simone");
    }
    permit__v1__record_opt_in_response__free_unpacked(resp, NULL);
  }
  CHECKF(created == 1 && active == 7 && same, "created %d active %d", created,
         active);
  CHECK(permit_log_size(permit_node_outbound(w->iss, VENUE)) == before + 1);
  for (int i = 0; i < 8; i++) unary_reset(&r[i]);
}

/* One order for two buyers at once, alternating: one record, the same
 * buyer's copies ALREADY_ACTIVE, the other buyer's refused. */
static void test_concurrent_other_buyer(world *w) {
  optin o[2] = {{.order = "ORD-2002", .email = "etta@example.com",
                 .given = "Etta", .family = "James", .version = 2},
                {.order = "ORD-2002", .email = "billie@example.com",
                 .given = "Billie", .family = "Holiday", .version = 2}};
  uint8_t buf[2][4096];
  size_t n[2] = {pack_optin(&o[0], buf[0]), pack_optin(&o[1], buf[1])};
  uint64_t before = permit_log_size(permit_node_outbound(w->iss, VENUE));
  unary_res r[8];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 8; i++)
    permit_client_start(w->api, "/permit.v1.Checkout/RecordOptIn",
                        buf[i % 2], n[i % 2], 10000, &unary_handlers, &r[i]);
  int winner = -1, active[2] = {0, 0}, refused[2] = {0, 0};
  for (int i = 0; i < 8; i++) {
    CHECK(run_until(w->base, &r[i].done, 15));
    if (r[i].status == PERMIT_GRPC_ALREADY_EXISTS) {
      refused[i % 2]++;
      continue;
    }
    CHECKF(r[i].status == 0, "copy %d: %d %s", i, r[i].status, r[i].msg);
    Permit__V1__RecordOptInResponse *resp = optin_answer(&r[i]);
    if (resp == NULL) continue;
    if (resp->status == PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__CREATED) {
      CHECK(winner == -1);
      winner = i % 2;
      expect *e = &w->ex[w->nex++];
      memcpy(e->record_id, resp->record_id.data, 16);
      snprintf(e->email, sizeof e->email, "%s", o[i % 2].email);
      snprintf(e->given, sizeof e->given, "%s", o[i % 2].given);
      snprintf(e->family, sizeof e->family, "%s", o[i % 2].family);
    } else {
      active[i % 2]++;
    }
    permit__v1__record_opt_in_response__free_unpacked(resp, NULL);
  }
  CHECKF(winner >= 0 && active[winner] == 3 && refused[winner] == 0 &&
             active[1 - winner] == 0 && refused[1 - winner] == 4,
         "winner %d, active %d/%d, refused %d/%d", winner, active[0],
         active[1], refused[0], refused[1]);
  CHECK(permit_log_size(permit_node_outbound(w->iss, VENUE)) == before + 1);
  for (int i = 0; i < 8; i++) unary_reset(&r[i]);
}

/* A name with a NUL byte (a field sent again after the packed request:
 * the last one counts) is refused, not cut at the NUL and recorded. */
static void test_nul_in_name(world *w) {
  optin o = {.order = "ORD-2003", .email = "nul@example.com",
             .given = "Nul", .family = "Byte", .version = 2};
  uint8_t buf[4096];
  size_t n = pack_optin(&o, buf);
  static const uint8_t given[] = {0x1a, 3, 'a', 0, 'b'}; /* field 3 */
  memcpy(buf + n, given, sizeof given);
  n += sizeof given;
  uint64_t before = permit_log_size(permit_node_outbound(w->iss, VENUE));
  unary_res r;
  memset(&r, 0, sizeof r);
  permit_client_start(w->api, "/permit.v1.Checkout/RecordOptIn", buf, n,
                      10000, &unary_handlers, &r);
  CHECK(run_until(w->base, &r.done, 15));
  CHECKF(r.status == PERMIT_GRPC_INVALID_ARGUMENT &&
             strstr(r.msg, "given_name holds a NUL byte") != NULL,
         "NUL in given_name: %d %s", r.status, r.msg);
  CHECK(permit_log_size(permit_node_outbound(w->iss, VENUE)) == before);
  unary_reset(&r);
}

/* Runs the loop without waiting for about |usec| microseconds. */
static void spin(struct event_base *base, int usec) {
  double end = now_s() + usec / 1e6;
  do
    event_base_loop(base, EVLOOP_NONBLOCK);
  while (now_s() < end);
}

/*
 * Clients that give up at every moment of their RecordOptIn: before it is
 * sent, while the record is being written, after the answer.  Each order
 * is recorded at most once, a retry finds it, and nothing leaks or is
 * touched after its call closed (the sanitizers watch).
 */
static void test_cancelled(world *w) {
  enum { N = 24 };
  uint8_t buf[N][4096];
  size_t len[N];
  char order[N][32], email[N][64];
  uint64_t before = permit_log_size(permit_node_outbound(w->iss, VENUE));
  int cancelled = 0;
  for (int i = 0; i < N; i++) {
    snprintf(order[i], sizeof order[i], "ORD-30%02d", i);
    snprintf(email[i], sizeof email[i], "cancel%02d@example.com", i);
    optin o = {.order = order[i], .email = email[i], .given = "Ella",
               .family = "Fitzgerald", .version = 2};
    len[i] = pack_optin(&o, buf[i]);
    unary_res r = {0};
    permit_client_call *call = permit_client_start(
        w->api, "/permit.v1.Checkout/RecordOptIn", buf[i], len[i], 10000,
        &unary_handlers, &r);
    spin(w->base, i * 150);
    if (!r.done) {
      permit_client_cancel(call);
      cancelled++;
    }
    CHECK(r.done);
    unary_reset(&r);
  }
  run_for(w->base, 0.2);
  int again = 0;
  for (int i = 0; i < N; i++) {
    optin o = {.order = order[i], .email = email[i], .given = "Ella",
               .family = "Fitzgerald", .version = 2};
    Permit__V1__RecordOptInResponse *resp = NULL;
    CHECK(record(w, &o, &resp, NULL, 0) == 0 && resp != NULL);
    if (resp == NULL) continue;
    again += resp->status ==
             PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__ALREADY_ACTIVE;
    expect *e = &w->ex[w->nex++];
    memcpy(e->record_id, resp->record_id.data, 16);
    memcpy(e->email, email[i], sizeof e->email);
    snprintf(e->given, sizeof e->given, "Ella");
    snprintf(e->family, sizeof e->family, "Fitzgerald");
    permit__v1__record_opt_in_response__free_unpacked(resp, NULL);
  }
  CHECK(permit_log_size(permit_node_outbound(w->iss, VENUE)) == before + N);
  printf("cancel: %d of %d calls cancelled by the client; %d orders were "
         "already recorded when retried\n", cancelled, N, again);
}

/* ---- Pull ---- */

typedef struct pull_res {
  int done, status;
  char msg[512];
  int bad;
  uint64_t seqs[MAX_ENTRIES];
  uint8_t *entries[MAX_ENTRIES];
  size_t lens[MAX_ENTRIES];
  int n;
  uint8_t *cps[MAX_CPS];
  size_t cp_lens[MAX_CPS];
  int cp_after[MAX_CPS]; /* entries received before it */
  int ncp;
} pull_res;

static void pull_message(void *arg, const uint8_t *m, size_t len) {
  pull_res *r = arg;
  Permit__V1__PullResponse *pr =
      permit__v1__pull_response__unpack(NULL, len, m);
  if (pr == NULL) {
    r->bad++;
    return;
  }
  if (pr->item_case == PERMIT__V1__PULL_RESPONSE__ITEM_ENTRY &&
      r->n < MAX_ENTRIES) {
    r->seqs[r->n] = pr->entry->seq;
    r->lens[r->n] = pr->entry->signed_record.len;
    r->entries[r->n] = malloc(pr->entry->signed_record.len);
    memcpy(r->entries[r->n], pr->entry->signed_record.data,
           pr->entry->signed_record.len);
    r->n++;
  } else if (pr->item_case == PERMIT__V1__PULL_RESPONSE__ITEM_CHECKPOINT &&
             r->ncp < MAX_CPS) {
    size_t cl = permit__v1__signed_checkpoint__get_packed_size(pr->checkpoint);
    r->cps[r->ncp] = malloc(cl);
    permit__v1__signed_checkpoint__pack(pr->checkpoint, r->cps[r->ncp]);
    r->cp_lens[r->ncp] = cl;
    r->cp_after[r->ncp] = r->n;
    r->ncp++;
  } else {
    r->bad++;
  }
  permit__v1__pull_response__free_unpacked(pr, NULL);
}
static void pull_done(void *arg, int status, const char *msg) {
  pull_res *r = arg;
  r->done = 1;
  r->status = status;
  snprintf(r->msg, sizeof r->msg, "%s", msg);
}
static const permit_client_handlers pull_handlers = {pull_message, pull_done};

static void pull_free(pull_res *r) {
  for (int i = 0; i < r->n; i++) free(r->entries[i]);
  for (int i = 0; i < r->ncp; i++) free(r->cps[i]);
  memset(r, 0, sizeof *r);
}

static permit_client_call *pull_start(permit_client *c, const char *audience,
                                      uint64_t from, int follow,
                                      pull_res *r) {
  Permit__V1__PullRequest req = PERMIT__V1__PULL_REQUEST__INIT;
  req.audience = (char *)audience;
  req.from_seq = from;
  req.follow = follow;
  uint8_t buf[512];
  size_t n = permit__v1__pull_request__pack(&req, buf);
  memset(r, 0, sizeof *r);
  return permit_client_start(c, "/permit.v1.Peer/Pull", buf, n,
                             follow ? 0 : 10000, &pull_handlers, r);
}

/* The root of the first |size| entries of |r|, recomputed. */
static void root_of(const pull_res *r, uint64_t size, permit_hash root) {
  permit_merkle_frontier f;
  permit_merkle_frontier_init(&f);
  for (uint64_t i = 0; i < size; i++) {
    permit_hash leaf;
    permit_merkle_leaf_hash(r->entries[i], r->lens[i], leaf);
    permit_merkle_frontier_append(&f, leaf, NULL, NULL);
  }
  permit_merkle_frontier_root(&f, root);
}

/*
 * Checks one entry as the venue's sync would: the issuer's signature, the
 * route, the sealed contact opened with the venue's key, the subject from
 * the venue's own pair key.
 */
static void check_entry(world *w, const uint8_t *entry, size_t len) {
  permit_err err = {0};
  Permit__V1__Record *rec = NULL;
  CHECKF(permit_record_verify(entry, len, &w->iss_at_venue.identity, 1, &rec,
                              &err) == 0,
         "%s", err.msg);
  if (rec == NULL) return;
  CHECKF(permit_record_check_route(rec, ISSUER, VENUE, &err) == 0, "%s",
         err.msg);
  CHECK(rec->kind_case == PERMIT__V1__RECORD__KIND_OPT_IN &&
        strcmp(rec->opt_in->method, "checkout-checkbox") == 0);
  const expect *e = NULL;
  for (int i = 0; i < w->nex; i++)
    if (rec->record_id.len == 16 &&
        memcmp(w->ex[i].record_id, rec->record_id.data, 16) == 0)
      e = &w->ex[i];
  CHECK(e != NULL);
  const Permit__V1__SealedContact *sc = rec->opt_in->sealed_contact;
  CHECK(sc->kem_id == 0x20 && sc->kdf_id == 1 && sc->aead_id == 3);
  char kid[PERMIT_KEY_ID_LEN];
  permit_key_id(permit_kx_key_public(permit_node_seal_key(w->ven)), 32, kid);
  CHECK(strcmp(sc->recipient_key_id, kid) == 0);
  size_t inlen = sc->enc.len + sc->ciphertext.len;
  uint8_t *in = malloc(inlen), *pt = malloc(inlen);
  memcpy(in, sc->enc.data, sc->enc.len);
  memcpy(in + sc->enc.len, sc->ciphertext.data, sc->ciphertext.len);
  const char *info = "permit/v1/contact\n" ISSUER "\n" VENUE;
  int rc = permit_hpke_open(PERMIT_AEAD_CHACHA20_POLY1305,
                            permit_node_seal_key(w->ven),
                            (const uint8_t *)info, strlen(info),
                            rec->record_id.data, rec->record_id.len, in,
                            inlen, pt);
  CHECK(rc == 0);
  Permit__V1__Contact *ct =
      rc == 0 ? permit__v1__contact__unpack(NULL, inlen - 48, pt) : NULL;
  CHECK(ct != NULL);
  if (ct != NULL && e != NULL) {
    CHECKF(strcmp(ct->email, e->email) == 0 &&
               strcmp(ct->given_name, e->given) == 0 &&
               strcmp(ct->family_name, e->family) == 0 &&
               strcmp(ct->locale, e->locale) == 0,
           "contact %s %s %s %s", ct->email, ct->given_name, ct->family_name,
           ct->locale);
    /* Both sides derive the same pair key, so the same subject. */
    uint8_t subject[32];
    permit_subject(w->iss_at_venue.pair_key, e->email, strlen(e->email),
                   subject);
    CHECK(rec->subject.len == 32 && memcmp(rec->subject.data, subject, 32) == 0);
  }
  if (ct != NULL) permit__v1__contact__free_unpacked(ct, NULL);
  free(in);
  free(pt);
  permit_record_free(rec);
}

/* Verifies checkpoint |i| of |r| against the recomputed root; returns its
 * size. */
static uint64_t check_checkpoint(world *w, const pull_res *r, int i,
                                 permit_hash root_out) {
  permit_err err = {0};
  Permit__V1__Checkpoint *cp = NULL;
  CHECKF(permit_checkpoint_verify(r->cps[i], r->cp_lens[i],
                                  &w->iss_at_venue.identity, 1, &cp,
                                  &err) == 0,
         "%s", err.msg);
  if (cp == NULL) return 0;
  CHECK(strcmp(cp->origin, "permit/v1/log/" ISSUER "/" VENUE) == 0);
  uint64_t from = r->n > 0 ? r->seqs[0] : 0;
  /* A checkpoint may come before the entries it covers, never without
   * them. */
  CHECKF(cp->size <= from + (uint64_t)r->n, "cp %llu, %d entries",
         (unsigned long long)cp->size, r->n);
  permit_hash root;
  if (from == 0 && cp->size <= (uint64_t)r->n) {
    root_of(r, cp->size, root);
    CHECK(memcmp(root, cp->root_hash.data, 32) == 0);
  }
  if (root_out != NULL) memcpy(root_out, cp->root_hash.data, 32);
  uint64_t size = cp->size;
  permit__v1__checkpoint__free_unpacked(cp, NULL);
  return size;
}

static void test_pull(world *w) {
  permit_log *log = permit_node_outbound(w->iss, VENUE);
  uint64_t size = permit_log_size(log);
  CHECK(size == (uint64_t)w->nex);

  /* From the start, without follow: every entry, then a checkpoint of
   * exactly them, then OK. */
  pull_res r;
  pull_start(w->peer, VENUE, 0, 0, &r);
  CHECK(run_until(w->base, &r.done, 15));
  CHECKF(r.status == 0, "%d %s", r.status, r.msg);
  CHECK(r.bad == 0 && (uint64_t)r.n == size && r.ncp >= 1);
  for (int i = 0; i < r.n; i++) {
    CHECK(r.seqs[i] == (uint64_t)i);
    check_entry(w, r.entries[i], r.lens[i]);
  }
  for (int i = 0; i < r.ncp; i++) check_checkpoint(w, &r, i, NULL);
  if (r.ncp > 0) CHECK(check_checkpoint(w, &r, r.ncp - 1, NULL) == size);

  /* The proofs an auditor asks for, against that checkpoint. */
  permit_hash root;
  CHECK(check_checkpoint(w, &r, r.ncp - 1, root) == size);
  for (uint64_t i = 0; i < size; i++) {
    Permit__V1__GetInclusionProofRequest q =
        PERMIT__V1__GET_INCLUSION_PROOF_REQUEST__INIT;
    q.audience = VENUE;
    q.seq = i;
    q.tree_size = size;
    uint8_t buf[256];
    size_t n = permit__v1__get_inclusion_proof_request__pack(&q, buf);
    unary_res u = {0};
    CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetInclusionProof", buf,
                n, &u) == 0);
    Permit__V1__Proof *p = permit__v1__proof__unpack(NULL, u.resp_len, u.resp);
    CHECK(p != NULL);
    if (p != NULL) {
      permit_hash hashes[PERMIT_MERKLE_MAX_PROOF], leaf;
      for (size_t k = 0; k < p->n_hashes && k < PERMIT_MERKLE_MAX_PROOF; k++)
        memcpy(hashes[k], p->hashes[k].data, 32);
      permit_merkle_leaf_hash(r.entries[i], r.lens[i], leaf);
      CHECK(permit_merkle_verify_inclusion(i, size, leaf, hashes,
                                           p->n_hashes, root) == 0);
      permit__v1__proof__free_unpacked(p, NULL);
    }
    unary_reset(&u);
  }
  {
    Permit__V1__GetConsistencyProofRequest q =
        PERMIT__V1__GET_CONSISTENCY_PROOF_REQUEST__INIT;
    q.audience = VENUE;
    q.size1 = 1;
    q.size2 = size;
    uint8_t buf[256];
    size_t n = permit__v1__get_consistency_proof_request__pack(&q, buf);
    unary_res u = {0};
    CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetConsistencyProof", buf,
                n, &u) == 0);
    Permit__V1__Proof *p = permit__v1__proof__unpack(NULL, u.resp_len, u.resp);
    CHECK(p != NULL);
    if (p != NULL) {
      permit_hash hashes[PERMIT_MERKLE_MAX_PROOF], root1;
      for (size_t k = 0; k < p->n_hashes && k < PERMIT_MERKLE_MAX_PROOF; k++)
        memcpy(hashes[k], p->hashes[k].data, 32);
      root_of(&r, 1, root1);
      CHECK(permit_merkle_verify_consistency(1, size, root1, root, hashes,
                                             p->n_hashes) == 0);
      permit__v1__proof__free_unpacked(p, NULL);
    }
    /* Sizes out of range. */
    q.size1 = 0;
    n = permit__v1__get_consistency_proof_request__pack(&q, buf);
    CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetConsistencyProof", buf,
                n, &u) == PERMIT_GRPC_INVALID_ARGUMENT);
    q.size1 = 1;
    q.size2 = size + 1;
    n = permit__v1__get_consistency_proof_request__pack(&q, buf);
    CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetConsistencyProof", buf,
                n, &u) == PERMIT_GRPC_OUT_OF_RANGE);
    Permit__V1__GetInclusionProofRequest iq =
        PERMIT__V1__GET_INCLUSION_PROOF_REQUEST__INIT;
    iq.audience = VENUE;
    iq.seq = size;
    iq.tree_size = size;
    n = permit__v1__get_inclusion_proof_request__pack(&iq, buf);
    CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetInclusionProof", buf,
                n, &u) == PERMIT_GRPC_INVALID_ARGUMENT);
    iq.seq = 0;
    iq.tree_size = size + 1;
    n = permit__v1__get_inclusion_proof_request__pack(&iq, buf);
    CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetInclusionProof", buf,
                n, &u) == PERMIT_GRPC_OUT_OF_RANGE);
    unary_reset(&u);
  }

  /* GetCheckpoint: the head, signed once and reused. */
  {
    Permit__V1__GetCheckpointRequest q =
        PERMIT__V1__GET_CHECKPOINT_REQUEST__INIT;
    q.audience = VENUE;
    uint8_t buf[256];
    size_t n = permit__v1__get_checkpoint_request__pack(&q, buf);
    unary_res u = {0};
    CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetCheckpoint", buf, n,
                &u) == 0);
    CHECK(u.resp_len == r.cp_lens[r.ncp - 1] &&
          memcmp(u.resp, r.cps[r.ncp - 1], u.resp_len) == 0);
    unary_reset(&u);
  }

  /* From the middle. */
  pull_res mid;
  pull_start(w->peer, VENUE, size - 1, 0, &mid);
  CHECK(run_until(w->base, &mid.done, 15));
  CHECK(mid.status == 0 && mid.n == 1 && mid.seqs[0] == size - 1 &&
        mid.ncp >= 1);
  pull_free(&mid);
  pull_free(&r);
}

static void test_follow(world *w) {
  permit_log *log = permit_node_outbound(w->iss, VENUE);
  uint64_t size = permit_log_size(log);
  pull_res r;
  permit_client_call *call = pull_start(w->peer, VENUE, size, 1, &r);
  /* Caught up at once: a checkpoint of the current head. */
  double end = now_s() + 10;
  while (r.ncp == 0 && now_s() < end) run_for(w->base, 0.01);
  CHECK(r.ncp == 1 && r.n == 0 && !r.done);
  const char *emails[] = {"sonny@example.com", "billie@example.com",
                          "chet@example.com"};
  const char *given[] = {"Sonny", "Billie", "Chet"};
  double t0 = now_s();
  for (int i = 0; i < 3; i++) {
    char order[32];
    snprintf(order, sizeof order, "ORD-400%d", i);
    optin o = {.order = order, .email = emails[i], .given = given[i],
               .family = "Test", .locale = "fr", .version = 2};
    record_expect(w, &o);
  }
  end = now_s() + 10;
  while (r.n < 3 && now_s() < end) run_for(w->base, 0.005);
  double took = now_s() - t0;
  CHECKF(r.n == 3 && !r.done, "followed %d entries, done %d", r.n, r.done);
  printf("follow: 3 opt-ins reached the follower %.0f ms after the first "
         "was recorded\n", took * 1000);
  for (int i = 0; i < r.n; i++) {
    CHECK(r.seqs[i] == size + (uint64_t)i);
    check_entry(w, r.entries[i], r.lens[i]);
  }
  /* And a checkpoint of the new head follows within the second. */
  end = now_s() + 5;
  int have = 0;
  while (!have && now_s() < end) {
    run_for(w->base, 0.01);
    for (int i = 0; i < r.ncp; i++)
      have |= check_checkpoint(w, &r, i, NULL) == size + 3;
  }
  CHECK(have);
  permit_client_cancel(call);
  CHECK(r.done && r.status == PERMIT_GRPC_CANCELLED);
  pull_free(&r);

  /* GetCheckpoint right after an append waits for a checkpoint of the new
   * head rather than answering with the old one. */
  optin o = {.order = "ORD-4100", .email = "dizzy@example.com",
             .given = "Dizzy", .family = "Gillespie", .version = 2};
  record_expect(w, &o);
  Permit__V1__GetCheckpointRequest q = PERMIT__V1__GET_CHECKPOINT_REQUEST__INIT;
  q.audience = VENUE;
  uint8_t buf[256];
  size_t n = permit__v1__get_checkpoint_request__pack(&q, buf);
  unary_res u = {0};
  t0 = now_s();
  CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetCheckpoint", buf, n,
              &u) == 0);
  took = now_s() - t0;
  Permit__V1__Checkpoint *cp = NULL;
  permit_err err = {0};
  CHECK(permit_checkpoint_verify(u.resp, u.resp_len,
                                 &w->iss_at_venue.identity, 1, &cp,
                                 &err) == 0);
  CHECK(cp != NULL && cp->size == permit_log_size(log));
  CHECK(took < 1.0);
  if (cp != NULL) permit__v1__checkpoint__free_unpacked(cp, NULL);
  unary_reset(&u);
}

static void test_authorization(world *w) {
  pull_res r;
  /* Another audience's log. */
  pull_start(w->peer, OTHER, 0, 0, &r);
  CHECK(run_until(w->base, &r.done, 15));
  CHECKF(r.status == PERMIT_GRPC_PERMISSION_DENIED &&
             strstr(r.msg, "the log for " OTHER " is not addressed to you"),
         "%d %s", r.status, r.msg);
  CHECK(r.n == 0 && r.ncp == 0);
  pull_free(&r);
  /* Its own log, as the other venue: only its own entry. */
  pull_start(w->other, OTHER, 0, 0, &r);
  CHECK(run_until(w->base, &r.done, 15));
  CHECK(r.status == 0 && r.n == 1);
  pull_free(&r);
  /* Past the end. */
  uint64_t size = permit_log_size(permit_node_outbound(w->iss, VENUE));
  pull_start(w->peer, VENUE, size + 5, 0, &r);
  CHECK(run_until(w->base, &r.done, 15));
  CHECK(r.status == PERMIT_GRPC_OUT_OF_RANGE);
  pull_free(&r);
  /* No TLS identity. */
  pull_start(w->plain, VENUE, 0, 0, &r);
  CHECK(run_until(w->base, &r.done, 15));
  CHECK(r.status == PERMIT_GRPC_UNAUTHENTICATED);
  pull_free(&r);
  unary_res u = {0};
  Permit__V1__GetCheckpointRequest q = PERMIT__V1__GET_CHECKPOINT_REQUEST__INIT;
  q.audience = OTHER;
  uint8_t buf[256];
  size_t n = permit__v1__get_checkpoint_request__pack(&q, buf);
  CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetCheckpoint", buf, n,
              &u) == PERMIT_GRPC_PERMISSION_DENIED);
  CHECK(unary(w->base, w->plain, "/permit.v1.Peer/GetCard", NULL, 0, &u) ==
        PERMIT_GRPC_UNAUTHENTICATED);
  /* The card, and no catalog from a node without lists. */
  CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetCard", NULL, 0, &u) == 0);
  permit_peer p;
  permit_err err = {0};
  CHECK(permit_card_verify(u.resp, u.resp_len, &p, &err) == 0 &&
        strcmp(p.name, ISSUER) == 0 && p.roles == PERMIT_ROLE_ISSUER);
  CHECK(unary(w->base, w->peer, "/permit.v1.Peer/GetCatalog", NULL, 0, &u) ==
        PERMIT_GRPC_FAILED_PRECONDITION);
  unary_reset(&u);
}

/*
 * A backlog larger than the send queue and the checkpoint interval: the
 * stream resumes on flow control, stays in order, and carries a
 * checkpoint of the head early and at the end, each matching the root of
 * the entries it covers.
 */
typedef struct bulk_res {
  int done, status, bad;
  char msg[256];
  uint64_t n;
  permit_hash *leaves; /* one per entry received */
  int ncp;
  uint64_t cp_size[MAX_CPS];
  uint64_t cp_after[MAX_CPS];
  permit_hash cp_root[MAX_CPS];
  permit_trusted_key key;
} bulk_res;

static void bulk_message(void *arg, const uint8_t *m, size_t len) {
  bulk_res *r = arg;
  Permit__V1__PullResponse *pr =
      permit__v1__pull_response__unpack(NULL, len, m);
  if (pr == NULL) {
    r->bad++;
    return;
  }
  if (pr->item_case == PERMIT__V1__PULL_RESPONSE__ITEM_ENTRY) {
    if (pr->entry->seq != r->n) r->bad++;
    permit_merkle_leaf_hash(pr->entry->signed_record.data,
                            pr->entry->signed_record.len, r->leaves[r->n]);
    r->n++;
  } else if (pr->item_case == PERMIT__V1__PULL_RESPONSE__ITEM_CHECKPOINT &&
             r->ncp < MAX_CPS) {
    size_t cl = permit__v1__signed_checkpoint__get_packed_size(pr->checkpoint);
    uint8_t *cpb = malloc(cl);
    permit__v1__signed_checkpoint__pack(pr->checkpoint, cpb);
    Permit__V1__Checkpoint *cp = NULL;
    if (permit_checkpoint_verify(cpb, cl, &r->key, 1, &cp, NULL) == 0) {
      r->cp_size[r->ncp] = cp->size;
      r->cp_after[r->ncp] = r->n;
      memcpy(r->cp_root[r->ncp], cp->root_hash.data, 32);
      r->ncp++;
      permit__v1__checkpoint__free_unpacked(cp, NULL);
    } else {
      r->bad++;
    }
    free(cpb);
  } else {
    r->bad++;
  }
  permit__v1__pull_response__free_unpacked(pr, NULL);
}
static void bulk_done(void *arg, int status, const char *msg) {
  bulk_res *r = arg;
  r->done = 1;
  r->status = status;
  snprintf(r->msg, sizeof r->msg, "%s", msg);
}

static void test_backlog(world *w) {
  enum { EXTRA = 3000 };
  permit_log *log = permit_node_outbound(w->iss, OTHER);
  permit_err err = {0};
  /* The log does not look inside entries: filler stands for records. */
  static uint8_t filler[EXTRA][600];
  permit_iov iov[EXTRA];
  for (int i = 0; i < EXTRA; i++) {
    memset(filler[i], 'a' + i % 26, sizeof filler[i]);
    memcpy(filler[i], &i, sizeof i);
    iov[i] = (permit_iov){filler[i], sizeof filler[i]};
  }
  CHECK(permit_log_append_many(log, iov, EXTRA, NULL, NULL, NULL, &err) ==
        0);
  permit_node_grew(w->iss, OTHER);
  uint64_t total = permit_log_size(log);

  static const permit_client_handlers h = {bulk_message, bulk_done};
  bulk_res r = {0};
  r.leaves = calloc(total, sizeof *r.leaves);
  permit_peer iss_at_other;
  CHECK(permit_node_peer(w->oth, ISSUER, &iss_at_other) == 0);
  r.key = iss_at_other.identity;
  Permit__V1__PullRequest req = PERMIT__V1__PULL_REQUEST__INIT;
  req.audience = OTHER;
  uint8_t buf[128];
  size_t n = permit__v1__pull_request__pack(&req, buf);
  permit_client_call *call =
      permit_client_start(w->other, "/permit.v1.Peer/Pull", buf, n, 30000,
                          &h, &r);
  /* A reader that pauses: the server must wait for it, then go on. */
  double end = now_s() + 10;
  while (r.n == 0 && !r.done && now_s() < end) spin(w->base, 100);
  permit_client_pause(call, 1);
  run_for(w->base, 0.2);
  uint64_t paused_at = r.n;
  run_for(w->base, 0.2);
  CHECK(r.n == paused_at && !r.done);
  permit_client_pause(call, 0);
  CHECK(run_until(w->base, &r.done, 20));
  CHECKF(r.status == 0 && r.bad == 0 && r.n == total, "%d %s: %llu of %llu",
         r.status, r.msg, (unsigned long long)r.n,
         (unsigned long long)total);
  int early = 0, last = 0;
  for (int i = 0; i < r.ncp; i++) {
    if (i > 0) CHECK(r.cp_size[i] > r.cp_size[i - 1]);
    CHECK(r.cp_size[i] <= r.n);
    if (r.cp_size[i] > r.n || r.n != total) continue;
    permit_merkle_frontier f;
    permit_merkle_frontier_init(&f);
    for (uint64_t k = 0; k < r.cp_size[i]; k++)
      permit_merkle_frontier_append(&f, r.leaves[k], NULL, NULL);
    permit_hash root;
    permit_merkle_frontier_root(&f, root);
    CHECK(memcmp(root, r.cp_root[i], 32) == 0);
    early |= r.cp_size[i] == total && r.cp_after[i] < total;
    last |= r.cp_size[i] == total;
  }
  CHECK(last);
  printf("backlog: %llu entries, paused reader held at %llu; checkpoints",
         (unsigned long long)r.n, (unsigned long long)paused_at);
  for (int i = 0; i < r.ncp; i++)
    printf(" %llu (after %llu)", (unsigned long long)r.cp_size[i],
           (unsigned long long)r.cp_after[i]);
  printf("%s\n", early ? "; the head was committed to before its entries"
                       : "");
  free(r.leaves);
}

/* The venue's own Peer service: its signed catalog, and no log to pull
 * since it issues nothing. */
static void test_venue_peer(world *w) {
  permit_err err = {0};
  permit_server *srv = permit_server_new(1, NULL, &err);
  permit_peer_service *ps = permit_peer_service_new(w->ven, srv, &err);
  CHECK(srv != NULL && ps != NULL);
  permit_method m[PERMIT_PEER_METHODS];
  permit_peer_service_methods(ps, m);
  SSL_CTX *stls = permit_tls_server_ctx(permit_node_sign_key(w->ven),
                                        permit_node_cert(w->ven),
                                        permit_node_pins(w->ven), &err);
  SSL_CTX *ctls = permit_tls_client_ctx(permit_node_sign_key(w->iss),
                                        permit_node_cert(w->iss),
                                        permit_node_pins(w->iss), &err);
  int port = 0;
  permit_listener_config lc = {.name = "peer", .host = "127.0.0.1",
                               .tls = stls, .methods = m,
                               .nmethods = PERMIT_PEER_METHODS};
  CHECK(permit_server_listen(srv, &lc, &port, &err) == 0 &&
        permit_server_start(srv, &err) == 0);
  permit_client_config cc = {.host = "127.0.0.1", .port = port, .tls = ctls,
                             .authority = VENUE};
  permit_client *c = permit_client_new(w->base, &cc, &err);
  unary_res u = {0};
  CHECK(unary(w->base, c, "/permit.v1.Peer/GetCatalog", NULL, 0, &u) == 0);
  permit_peer venue;
  Permit__V1__Catalog *cat = NULL;
  CHECK(permit_node_peer(w->iss, VENUE, &venue) == 0);
  CHECKF(permit_catalog_verify(&venue, u.resp, u.resp_len, &cat, &err) == 0,
         "%s", err.msg);
  CHECK(cat != NULL && cat->n_lists == 1 && cat->lists[0]->notice_version == 2);
  if (cat != NULL) permit__v1__catalog__free_unpacked(cat, NULL);
  pull_res r;
  /* The venue's own log back to the issuer (its unsubscribes): empty. */
  pull_start(c, ISSUER, 0, 0, &r);
  CHECK(run_until(w->base, &r.done, 15));
  CHECKF(r.status == PERMIT_GRPC_OK, "pull of the venue's log: %d",
         r.status);
  pull_free(&r);
  unary_reset(&u);
  permit_client_free(c);
  event_base_loop(w->base, EVLOOP_NONBLOCK);
  permit_server_stop(srv);
  permit_peer_service_free(ps);
  permit_server_free(srv);
  SSL_CTX_free(stls);
  SSL_CTX_free(ctls);
}

/* A new Peer service (a restarted node) reuses the checkpoint signed of
 * the head before: a Pull to the head signs and writes nothing. */
static void test_restart(world *w) {
  permit_err err = {0};
  struct event_base *base = event_base_new();
  permit_server *srv = permit_server_new(1, NULL, &err);
  permit_peer_service *ps = permit_peer_service_new(w->iss, srv, &err);
  CHECK(srv != NULL && ps != NULL);
  permit_method m[PERMIT_PEER_METHODS];
  permit_peer_service_methods(ps, m);
  SSL_CTX *stls = permit_tls_server_ctx(permit_node_sign_key(w->iss),
                                        permit_node_cert(w->iss),
                                        permit_node_pins(w->iss), &err);
  SSL_CTX *ctls = permit_tls_client_ctx(permit_node_sign_key(w->ven),
                                        permit_node_cert(w->ven),
                                        permit_node_pins(w->ven), &err);
  int port = 0;
  permit_listener_config lc = {.name = "peer", .host = "127.0.0.1",
                               .tls = stls, .methods = m,
                               .nmethods = PERMIT_PEER_METHODS};
  CHECK(permit_server_listen(srv, &lc, &port, &err) == 0 &&
        permit_server_start(srv, &err) == 0);
  permit_client_config cc = {.host = "127.0.0.1", .port = port, .tls = ctls,
                             .authority = ISSUER};
  permit_client *c = permit_client_new(base, &cc, &err);
  permit_store *st = permit_node_store(w->iss);
  uint64_t synced = permit_store_synced_writes(st);
  uint64_t size = permit_log_size(permit_node_outbound(w->iss, VENUE));
  pull_res r;
  pull_start(c, VENUE, 0, 0, &r);
  CHECK(run_until(base, &r.done, 15));
  CHECK(r.status == 0 && (uint64_t)r.n == size && r.ncp >= 1);
  if (r.ncp >= 1) CHECK(check_checkpoint(w, &r, r.ncp - 1, NULL) == size);
  CHECK(permit_store_synced_writes(st) == synced);
  pull_free(&r);
  permit_client_free(c);
  event_base_loop(base, EVLOOP_NONBLOCK);
  event_base_free(base);
  permit_server_stop(srv);
  permit_peer_service_free(ps);
  permit_server_free(srv);
  SSL_CTX_free(stls);
  SSL_CTX_free(ctls);
}

/* ---- nothing in plaintext at rest ---- */

static const char *const secrets[] = {
    "ada.lovelace@example.com", "Ada.Lovelace@Example.COM",
    "grace@example.org", "nina@example.com", "ella@example.com",
    "sonny@example.com", "miles@example.net", "dizzy@example.com",
    "cancel07@example.com", "Lovelace", "Fitzgerald", "Gillespie",
    "Hopper", "Simone"};
static int found_plaintext;
static long files_scanned;

static int scan_file(const char *path, const struct stat *st, int flag,
                     struct FTW *ftw) {
  (void)ftw;
  if (flag != FTW_F || !S_ISREG(st->st_mode)) return 0;
  FILE *f = fopen(path, "rb");
  if (f == NULL) return 0;
  size_t cap = (size_t)st->st_size + 1, len;
  char *buf = malloc(cap);
  len = fread(buf, 1, cap, f);
  fclose(f);
  files_scanned++;
  for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
    if (memmem(buf, len, secrets[i], strlen(secrets[i])) != NULL) {
      fprintf(stderr, "%s holds \"%s\"\n", path, secrets[i]);
      found_plaintext++;
    }
  free(buf);
  return 0;
}

static void test_at_rest(world *w) {
  permit_err err = {0};
  CHECKF(permit_store_compact(permit_node_store(w->iss), &err) == 0, "%s",
         err.msg);
  nftw(w->dirs[0], scan_file, 16, FTW_PHYS);
  CHECK(files_scanned > 3);
  CHECK(found_plaintext == 0);
  printf("at rest: %ld files of the reseller's data directory hold no test "
         "address or name\n", files_scanned);
}

/*
 * A card whose identity key is a weak point is refused: under the
 * identity anyone can make a signature OpenSSL accepts (R = [S]B), and a
 * key with a small-order component is as bad for batch checks.
 */
static void test_weak_card_keys(void) {
  uint8_t id[32] = {1}; /* the identity point (x 0, y 1) */
  uint8_t seal[32];
  memset(seal, 9, sizeof seal);
  Permit__V1__NodeCardBody b = PERMIT__V1__NODE_CARD_BODY__INIT;
  Permit__V1__Role roles[] = {PERMIT__V1__ROLE__ROLE_ISSUER};
  b.name = "forged.example";
  b.endpoint = "127.0.0.1:1";
  b.roles = roles;
  b.n_roles = 1;
  b.identity_key = (ProtobufCBinaryData){32, id};
  b.sealing_key = (ProtobufCBinaryData){32, seal};
  uint8_t body[512], sig[64] = {0}, card[1024];
  size_t bl = permit__v1__node_card_body__pack(&b, body);
  sig[32] = 5; /* S = 5, R = [5]B: [S]B - [h]A is R whatever h is */
  CHECK(permit_ed25519_scalarmult(sig, sig + 32, NULL) == 0);
  char kid[PERMIT_KEY_ID_LEN];
  permit_key_id(id, 32, kid);
  Permit__V1__NodeCard c = PERMIT__V1__NODE_CARD__INIT;
  c.body = (ProtobufCBinaryData){bl, body};
  c.signature = (ProtobufCBinaryData){64, sig};
  c.key_id = kid;
  size_t cl = permit__v1__node_card__pack(&c, card);
  /* The forgery is good enough for OpenSSL ... */
  CHECK(permit_verify(id, PERMIT_CARD_CONTEXT, body, bl, sig, 64) == 0);
  /* ... but not for a card. */
  permit_peer p;
  permit_err err = {0};
  CHECK(permit_card_verify(card, cl, &p, &err) == PERMIT_EINVAL &&
        strstr(err.msg, "prime order") != NULL);

  permit_sign_key *k;
  CHECK(permit_sign_key_generate(&k) == 0);
  const uint8_t *good = permit_sign_key_public(k);
  uint8_t order4[32] = {0}, mixed[32];
  CHECK(permit_ed25519_key_check(good) == 1);
  CHECK(permit_ed25519_key_check(id) == 0);
  CHECK(permit_ed25519_key_check(order4) == 0); /* y = 0: order 4 */
  CHECK(permit_ed25519_point_add(mixed, good, order4) == 0 &&
        permit_ed25519_key_check(mixed) == 0);
  permit_sign_key_free(k);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  (void)argc, (void)argv;
  world w;
  test_weak_card_keys();
  world_start(&w);
  test_checkout(&w);
  test_concurrent_duplicates(&w);
  test_concurrent_other_buyer(&w);
  test_nul_in_name(&w);
  test_cancelled(&w);
  test_pull(&w);
  test_follow(&w);
  test_authorization(&w);
  test_backlog(&w);
  test_venue_peer(&w);
  world_stop_server(&w);
  test_restart(&w);
  test_at_rest(&w);
  world_free(&w);
  permit_crypto_cleanup();
  return test_finish("test_issuer");
}
