/*
 * seeds.c - writes the seed corpora of the fuzz targets: small, real
 * examples of each input, made with the code under test and the fixed
 * keys of fuzz.h (so that signed and sealed seeds verify and open), plus
 * the Merkle proofs of tests/vectors/merkle.
 *
 *   fuzz-seeds OUT_DIR VECTORS_DIR
 *
 * writes OUT_DIR/<target>/<name> for every target (run.sh's targets
 * without the fuzz_ prefix).  Output is deterministic: no clock, no
 * randomness.  tests/fuzz/README.md says when to run it again.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "permit/grpc_wire.h"
#include "permit/hpke.h"
#include "permit/log.h"
#include "permit/node.h"
#include "permit/token.h"
#include "permit/util.h"
#include "permit/v1/venue_store.pb-c.h"

static const char *out_dir;
static int written;

static void die(const char *what) {
  fprintf(stderr, "fuzz-seeds: %s\n", what);
  exit(1);
}

/* Writes |prefix_len| bytes of |prefix| then |len| bytes of |data| as
 * OUT_DIR/|target|/|name|. */
static void seed2(const char *target, const char *name, const void *prefix,
                  size_t prefix_len, const void *data, size_t len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", out_dir, target);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) die("cannot make a folder");
  /* Plain file names: the vectors' names hold '@' and brackets. */
  char clean[256];
  size_t i = 0;
  for (; name[i] != '\0' && i + 1 < sizeof clean; i++) {
    char ch = name[i];
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
             (ch >= '0' && ch <= '9') || ch == '-' || ch == '.';
    clean[i] = ok ? ch : '_';
  }
  clean[i] = '\0';
  snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, clean);
  FILE *f = fopen(path, "wb");
  if (f == NULL) die("cannot write a seed");
  if ((prefix_len > 0 && fwrite(prefix, 1, prefix_len, f) != prefix_len) ||
      (len > 0 && fwrite(data, 1, len, f) != len) || fclose(f) != 0)
    die("cannot write a seed");
  written++;
}

static void seed(const char *target, const char *name, const void *data,
                 size_t len) {
  seed2(target, name, NULL, 0, data, len);
}

/* A seed whose first byte is a mode. */
static void seed_mode(const char *target, const char *name, uint8_t mode,
                      const void *data, size_t len) {
  seed2(target, name, &mode, 1, data, len);
}

static void sha256(const void *data, size_t len, uint8_t out[32]) {
  permit_iov part = {data, len};
  if (permit_sha256(&part, 1, out) != 0) die("sha256 failed");
}

/* ---- records and sealed contacts ---- */

static const uint8_t record_id[16] = {0x5e, 0x11, 0x0c, 0xa7, 0x01, 0x02,
                                      0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
                                      0x09, 0x0a, 0x0b, 0x0c};
static const uint8_t subject[32] = {
    0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b,
    0x5c, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70};
static const char notice[] =
    "Send me news from The Fillmore: shows, presales and offers. "
    "Unsubscribe at any time.";

/* The Contact Ada Lovelace, sealed as checkout seals it: HPKE to the
 * fuzz sealing key, info "permit/v1/contact\n" issuer "\n" audience, aad
 * the record id; the ephemeral key derived from a fixed ikmE. */
typedef struct sealed {
  uint8_t enc[PERMIT_HPKE_ENC_LEN];
  uint8_t ct[256];
  size_t ct_len;
  uint8_t info[128];
  size_t info_len;
} sealed;

static void seal_contact(permit_aead_id aead, sealed *s) {
  Permit__V1__Contact c = PERMIT__V1__CONTACT__INIT;
  c.email = "ada@example.org";
  c.given_name = "Ada";
  c.family_name = "Lovelace";
  c.locale = "en-GB";
  uint8_t pt[128];
  size_t pt_len = permit__v1__contact__get_packed_size(&c);
  if (pt_len > sizeof pt) die("contact too long");
  permit__v1__contact__pack(&c, pt);
  s->info_len = (size_t)snprintf((char *)s->info, sizeof s->info,
                                 "%s%s\n%s", PERMIT_CONTACT_INFO,
                                 FUZZ_ISSUER, FUZZ_AUDIENCE);
  uint8_t ikm[32];
  memset(ikm, 0x2a, sizeof ikm);
  permit_hpke_ctx ctx;
  if (permit_hpke_setup_base_s(aead, permit_kx_key_public(fuzz_kx_key()),
                               s->info, s->info_len, ikm, sizeof ikm, s->enc,
                               &ctx) != 0 ||
      permit_hpke_ctx_seal(&ctx, record_id, sizeof record_id, pt, pt_len,
                           s->ct) != 0)
    die("HPKE seal failed");
  s->ct_len = pt_len + PERMIT_AEAD_TAG_LEN;
  permit_hpke_ctx_wipe(&ctx);
}

/* Signs |rec| and writes its body (mode 1) and envelope (mode 0). */
static void record_seeds(const char *name, const Permit__V1__Record *rec) {
  uint8_t body[4096];
  size_t n = permit__v1__record__get_packed_size(rec);
  if (n > sizeof body) die("record too long");
  permit__v1__record__pack(rec, body);
  uint8_t *env;
  size_t env_len;
  permit_err err;
  if (permit_record_sign(rec, fuzz_sign_key(), &env, &env_len, &err) != 0)
    die(err.msg);
  char file[128];
  snprintf(file, sizeof file, "%s-signed", name);
  seed_mode("record", file, 0, env, env_len);
  snprintf(file, sizeof file, "%s-body", name);
  seed_mode("record", file, 1, body, n);
  free(env);
}

static void records_and_hpke(void) {
  sealed s;
  seal_contact(PERMIT_AEAD_CHACHA20_POLY1305, &s);
  uint8_t notice_sha[32], order_sha[32];
  sha256(notice, sizeof notice - 1, notice_sha);
  sha256("TX-2026-000123", 14, order_sha);
  char kx_id[PERMIT_KEY_ID_LEN];
  permit_key_id(permit_kx_key_public(fuzz_kx_key()), PERMIT_X25519_LEN, kx_id);

  Permit__V1__SealedContact sc = PERMIT__V1__SEALED_CONTACT__INIT;
  sc.kem_id = PERMIT_HPKE_KEM_X25519;
  sc.kdf_id = PERMIT_HPKE_KDF_HKDF_SHA256;
  sc.aead_id = PERMIT_AEAD_CHACHA20_POLY1305;
  sc.recipient_key_id = kx_id;
  sc.enc = (ProtobufCBinaryData){sizeof s.enc, s.enc};
  sc.ciphertext = (ProtobufCBinaryData){s.ct_len, s.ct};
  Permit__V1__Evidence ev = PERMIT__V1__EVIDENCE__INIT;
  ev.user_agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0";
  ev.ip_prefix = "203.0.113.0/24";
  Permit__V1__OptIn o = PERMIT__V1__OPT_IN__INIT;
  o.notice_version = 3;
  o.notice_sha256 = (ProtobufCBinaryData){32, notice_sha};
  o.collected_at_ms = 1767225600000;
  o.method = "checkout-checkbox";
  o.order_ref_hash = (ProtobufCBinaryData){32, order_sha};
  o.evidence = &ev;
  o.sealed_contact = &sc;

  Permit__V1__Record rec = PERMIT__V1__RECORD__INIT;
  rec.record_id = (ProtobufCBinaryData){sizeof record_id,
                                        (uint8_t *)record_id};
  rec.issuer = FUZZ_ISSUER;
  rec.audience = FUZZ_AUDIENCE;
  rec.list_id = "newsletter";
  rec.subject = (ProtobufCBinaryData){sizeof subject, (uint8_t *)subject};
  rec.issued_at_ms = 1767225600123;
  rec.kind_case = PERMIT__V1__RECORD__KIND_OPT_IN;
  rec.opt_in = &o;
  record_seeds("optin", &rec);
  o.evidence = NULL;
  record_seeds("optin-no-evidence", &rec);

  Permit__V1__Withdrawal w = PERMIT__V1__WITHDRAWAL__INIT;
  w.refers_to = rec.record_id;
  w.reason = PERMIT__V1__WITHDRAWAL_REASON__WITHDRAWAL_REASON_BUYER_REQUEST;
  w.withdrawn_at_ms = 1767312000000;
  uint8_t wid[16];
  memcpy(wid, record_id, sizeof wid);
  wid[15] ^= 0xff;
  rec.record_id.data = wid;
  rec.kind_case = PERMIT__V1__RECORD__KIND_WITHDRAWAL;
  rec.opt_in = NULL;
  rec.withdrawal = &w;
  record_seeds("withdrawal", &rec);

  Permit__V1__Erasure e = PERMIT__V1__ERASURE__INIT;
  e.requested_at_ms = 1767398400000;
  rec.kind_case = PERMIT__V1__RECORD__KIND_ERASURE;
  rec.withdrawal = NULL;
  rec.erasure = &e;
  record_seeds("erasure", &rec);

  /* hpke: aead (1) || info length (1) || aad length (1) || info || aad ||
   * enc || ciphertext. */
  for (int i = 0; i < 2; i++) {
    permit_aead_id aead =
        i == 0 ? PERMIT_AEAD_CHACHA20_POLY1305 : PERMIT_AEAD_AES_128_GCM;
    seal_contact(aead, &s);
    uint8_t buf[512];
    size_t n = 0;
    buf[n++] = i == 0 ? 1 : 0;
    buf[n++] = (uint8_t)s.info_len;
    buf[n++] = sizeof record_id;
    memcpy(buf + n, s.info, s.info_len);
    n += s.info_len;
    memcpy(buf + n, record_id, sizeof record_id);
    n += sizeof record_id;
    memcpy(buf + n, s.enc, sizeof s.enc);
    n += sizeof s.enc;
    memcpy(buf + n, s.ct, s.ct_len);
    n += s.ct_len;
    seed("hpke", i == 0 ? "contact-chacha20poly1305" : "contact-aes128gcm",
         buf, n);
    /* The smallest input that gets to decapsulation: an empty message. */
    if (i == 0) {
      permit_hpke_ctx ctx;
      uint8_t ikm[32], small[3 + PERMIT_HPKE_ENC_LEN + PERMIT_AEAD_TAG_LEN];
      memset(ikm, 0x17, sizeof ikm);
      small[0] = 1, small[1] = 0, small[2] = 0;
      if (permit_hpke_setup_base_s(PERMIT_AEAD_CHACHA20_POLY1305,
                                   permit_kx_key_public(fuzz_kx_key()), NULL,
                                   0, ikm, sizeof ikm, small + 3, &ctx) != 0 ||
          permit_hpke_ctx_seal(&ctx, NULL, 0, NULL, 0,
                               small + 3 + PERMIT_HPKE_ENC_LEN) != 0)
        die("HPKE seal failed");
      seed("hpke", "empty-message", small, sizeof small);
    }
  }
}

/* ---- cards, checkpoints, catalogs ---- */

static void signed_seeds(const char *target, const char *name,
                         const char *context, const uint8_t *body,
                         size_t len) {
  uint8_t *env;
  size_t env_len;
  permit_err err;
  if (permit_envelope_sign(context, body, len, fuzz_sign_key(), &env,
                           &env_len, &err) != 0)
    die(err.msg);
  char file[128];
  snprintf(file, sizeof file, "%s-signed", name);
  seed_mode(target, file, 0, env, env_len);
  snprintf(file, sizeof file, "%s-body", name);
  seed_mode(target, file, 1, body, len);
  free(env);
}

static void cards(void) {
  Permit__V1__NodeCardBody b = PERMIT__V1__NODE_CARD_BODY__INIT;
  Permit__V1__Role roles[2] = {PERMIT__V1__ROLE__ROLE_AUDIENCE,
                               PERMIT__V1__ROLE__ROLE_ISSUER};
  b.name = FUZZ_AUDIENCE;
  b.endpoint = "127.0.0.1:7443";
  b.roles = roles;
  b.n_roles = 1;
  b.identity_key = (ProtobufCBinaryData){
      32, (uint8_t *)permit_sign_key_public(fuzz_sign_key())};
  b.sealing_key = (ProtobufCBinaryData){
      32, (uint8_t *)permit_kx_key_public(fuzz_kx_key())};
  b.issued_at_ms = 1767225600000;
  b.card_version = 1;
  uint8_t body[512];
  size_t n = permit__v1__node_card_body__pack(&b, body);
  signed_seeds("card", "venue", PERMIT_CARD_CONTEXT, body, n);
  b.name = FUZZ_ISSUER;
  b.endpoint = "[::1]:8443";
  b.n_roles = 2;
  n = permit__v1__node_card_body__pack(&b, body);
  signed_seeds("card", "both-roles", PERMIT_CARD_CONTEXT, body, n);
}

static void checkpoints(void) {
  Permit__V1__Checkpoint cp = PERMIT__V1__CHECKPOINT__INIT;
  uint8_t root[32];
  sha256("root", 4, root);
  cp.origin = "permit/v1/log/" FUZZ_ISSUER "/" FUZZ_AUDIENCE;
  cp.size = 5;
  cp.root_hash = (ProtobufCBinaryData){32, root};
  cp.timestamp_ms = 1767225600000;
  uint8_t body[512];
  size_t n = permit__v1__checkpoint__pack(&cp, body);
  signed_seeds("checkpoint", "five", PERMIT_CHECKPOINT_CONTEXT, body, n);
  cp.size = 0;
  permit_merkle_empty_root(root);
  n = permit__v1__checkpoint__pack(&cp, body);
  signed_seeds("checkpoint", "empty", PERMIT_CHECKPOINT_CONTEXT, body, n);
}

static void catalogs(void) {
  static const char text2[] = "Jazz news from the Blue Note, twice a month.";
  uint8_t sha1[32], sha2[32];
  sha256(notice, sizeof notice - 1, sha1);
  sha256(text2, sizeof text2 - 1, sha2);
  Permit__V1__CatalogList l1 = PERMIT__V1__CATALOG_LIST__INIT;
  l1.list_id = "newsletter";
  l1.title = "The Fillmore news";
  l1.notice_version = 3;
  l1.notice_text = (char *)notice;
  l1.notice_sha256 = (ProtobufCBinaryData){32, sha1};
  Permit__V1__CatalogList l2 = PERMIT__V1__CATALOG_LIST__INIT;
  l2.list_id = "jazz.weekly";
  l2.title = "Caf\xc3\xa9 jazz";
  l2.notice_version = 1;
  l2.notice_text = (char *)text2;
  l2.notice_sha256 = (ProtobufCBinaryData){32, sha2};
  Permit__V1__CatalogList *lists[2] = {&l1, &l2};
  Permit__V1__Catalog c = PERMIT__V1__CATALOG__INIT;
  c.audience = FUZZ_AUDIENCE;
  c.issued_at_ms = 1767225600000;
  c.lists = lists;
  c.n_lists = 2;
  uint8_t body[1024];
  size_t n = permit__v1__catalog__pack(&c, body);
  signed_seeds("catalog", "two-lists", PERMIT_CATALOG_CONTEXT, body, n);
  c.n_lists = 0;
  n = permit__v1__catalog__pack(&c, body);
  signed_seeds("catalog", "no-lists", PERMIT_CATALOG_CONTEXT, body, n);

  /* The same kinds of row a node stores (store_rows): a list. */
  n = permit__v1__catalog_list__pack(&l1, body);
  seed_mode("store_rows", "catalog-list", 4, body, n);
}

/* ---- the venue's and the consent centre's stored rows ---- */

static void store_rows(void) {
  uint8_t buf[1024], sha[32], sealed_row[64];
  size_t n;
  sha256(notice, sizeof notice - 1, sha);
  memset(sealed_row, 0xc3, sizeof sealed_row);
  Permit__Internal__StoredContact sc = PERMIT__INTERNAL__STORED_CONTACT__INIT;
  sc.record_id = (ProtobufCBinaryData){16, (uint8_t *)record_id};
  sc.issuer = FUZZ_ISSUER;
  sc.list_id = "newsletter";
  sc.subject = (ProtobufCBinaryData){32, (uint8_t *)subject};
  sc.collected_at_ms = 1767225600000;
  sc.notice_version = 3;
  sc.notice_sha256 = (ProtobufCBinaryData){32, sha};
  sc.method = "checkout-checkbox";
  sc.seq = 7;
  sc.status = "active";
  sc.sealed = (ProtobufCBinaryData){sizeof sealed_row, sealed_row};
  sc.status_seq = 7;
  sc.change = 12;
  n = permit__internal__stored_contact__pack(&sc, buf);
  seed_mode("store_rows", "stored-contact", 0, buf, n);

  uint8_t key[64];
  size_t kl = (size_t)snprintf((char *)key, sizeof key, "c/newsletter/%s/",
                               FUZZ_ISSUER);
  memcpy(key + kl, subject, 32);
  Permit__Internal__ContactFeedEntry fe =
      PERMIT__INTERNAL__CONTACT_FEED_ENTRY__INIT;
  fe.kind = "unsubscribed";
  fe.contact_key = (ProtobufCBinaryData){kl + 32, key};
  fe.record_id = sc.record_id;
  fe.issuer = FUZZ_ISSUER;
  fe.list_id = "newsletter";
  fe.seq = 9;
  fe.at_ms = 1767312000000;
  n = permit__internal__contact_feed_entry__pack(&fe, buf);
  seed_mode("store_rows", "feed-entry", 1, buf, n);

  Permit__Internal__ConsentEntry ce = PERMIT__INTERNAL__CONSENT_ENTRY__INIT;
  uint8_t idem[16];
  memset(idem, 0x1d, sizeof idem);
  ce.venue = FUZZ_AUDIENCE;
  ce.list_id = "newsletter";
  ce.seq = 7;
  ce.collected_at_ms = 1767225600000;
  ce.notice_version = 3;
  ce.notice_sha256 = (ProtobufCBinaryData){32, sha};
  ce.state = "active";
  ce.subject = (ProtobufCBinaryData){32, (uint8_t *)subject};
  ce.idem_key = (ProtobufCBinaryData){sizeof idem, idem};
  n = permit__internal__consent_entry__pack(&ce, buf);
  seed_mode("store_rows", "consent-entry", 2, buf, n);

  Permit__V1__Contact c = PERMIT__V1__CONTACT__INIT;
  c.email = "ada@example.org";
  c.given_name = "Ada";
  c.family_name = "Lovelace";
  c.locale = "en-GB";
  n = permit__v1__contact__pack(&c, buf);
  seed_mode("store_rows", "contact", 3, buf, n);
}

/* ---- configuration files ---- */

static void config_seed(const char *name, const permit_config *c) {
  char path[256];
  snprintf(path, sizeof path, "/tmp/permit-fuzz-seeds-%d.conf", (int)getpid());
  unlink(path);
  char err[512];
  if (permit_config_write(path, c, err, sizeof err) != 0) die(err);
  FILE *f = fopen(path, "rb");
  if (f == NULL) die("cannot read the written configuration");
  static char text[16384];
  size_t n = fread(text, 1, sizeof text, f);
  fclose(f);
  unlink(path);
  seed("config", name, text, n);
}

static void configs(void) {
  permit_config c;
  permit_config_defaults(&c);
  snprintf(c.name, sizeof c.name, "%s", FUZZ_AUDIENCE);
  c.roles = PERMIT_ROLE_AUDIENCE;
  config_seed("venue", &c);
  snprintf(c.name, sizeof c.name, "%s", FUZZ_ISSUER);
  c.roles = PERMIT_ROLE_ISSUER;
  snprintf(c.peer_listen, sizeof c.peer_listen, "[::]:7443");
  snprintf(c.peer_endpoint, sizeof c.peer_endpoint, "tixly.example:7443");
  c.api_tls = 1;
  snprintf(c.api_token, sizeof c.api_token, "0123456789abcdef0123");
  snprintf(c.public_listen, sizeof c.public_listen, "127.0.0.1:8443");
  snprintf(c.consent_base, sizeof c.consent_base,
           "https://consent.tixly.example");
  c.erased_handover_hours = 0;
  c.lim.max_message = 4096;
  c.lim.max_connections = 10;
  config_seed("reseller", &c);
  static const char minimal[] =
      "; hand-written\n[node]\nname=a.example\ndata=/var/lib/permit\n"
      "[peer]\nlisten=0.0.0.0:1\n[limits]\nmax-streams=1\n";
  seed("config", "minimal", minimal, sizeof minimal - 1);
}

/* ---- tokens, forms, gRPC framing ---- */

static void token_seed(const char *name, uint8_t kind, int64_t expiry,
                       int64_t now, const uint8_t *payload, size_t len) {
  char tok[PERMIT_TOKEN_MAX];
  if (permit_token_make(fuzz_token_secret, FUZZ_TOKEN_CONTEXT, kind, expiry,
                        payload, len, tok, sizeof tok) != 0)
    die("token_make failed");
  uint8_t head[10];
  head[0] = kind;
  permit_put_u64be(head + 1, (uint64_t)now);
  head[9] = 200; /* decode base64url with room to spare */
  seed2("token", name, head, sizeof head, tok, strlen(tok));
}

static void tokens(void) {
  uint8_t buyer[32];
  sha256("buyer ada@example.org", 21, buyer);
  int64_t t = 1767225600000;
  token_seed("consent-valid", 'c', t + 365LL * 86400000, t, buyer, 32);
  token_seed("consent-expired", 'c', t, t + 1, buyer, 32);
  token_seed("unsubscribe-never-expires", 'u', 0, t, subject, 32);
  token_seed("empty-payload", 'c', t, t, NULL, 0);
  static const char b64[] = "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0c"
                            "SGVsbG8sIHdvcmxkIQ";
  seed("token", "base64url-short-cap", b64, sizeof b64 - 1);
}

static void forms(void) {
  static const char *bodies[][2] = {
      {"withdraw", "csrf=Jq3v0iT6C1c2mZVQ9xw8Ng&record="
                   "5e110ca70102030405060708090a0b0c"},
      {"erase", "csrf=Jq3v0iT6C1c2mZVQ9xw8Ng&confirm=yes"},
      {"one-click", "List-Unsubscribe=One-Click"},
      {"escapes", "name=Caf%C3%A9+au+lait&x=%2b%2F"},
      {"origin-same", "https://127.0.0.1:8443\0same-origin\0"
                      "https://127.0.0.1:8443"},
      {"origin-cross", "https://evil.example\0cross-site\0"
                       "https://127.0.0.1:8443"},
      {"origin-absent", "\0\0https://127.0.0.1:8443"}};
  static const size_t lens[] = {0, 0, 0, 0, 22 + 1 + 11 + 1 + 22,
                                20 + 1 + 10 + 1 + 22, 2 + 22};
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    uint8_t cap = 8;
    size_t len = lens[i] ? lens[i] : strlen(bodies[i][1]);
    seed2("form", bodies[i][0], &cap, 1, bodies[i][1], len);
  }
}

static void grpc_wire(void) {
  /* max selector 4 (4096 bytes), chunk seed, then messages. */
  uint8_t buf[256];
  size_t n = 0;
  buf[n++] = 4;
  buf[n++] = 7;
  static const char *msgs[] = {"", "hello", "\x0a\x05world"};
  for (size_t i = 0; i < 3; i++) {
    size_t l = strlen(msgs[i]);
    permit_grpc_frame_header(buf + n, (uint32_t)l);
    if (i == 2) buf[n] = 1; /* compressed flag */
    n += PERMIT_GRPC_FRAME_HEADER;
    memcpy(buf + n, msgs[i], l);
    n += l;
  }
  seed("grpc_wire", "three-messages", buf, n);
  /* A header declaring more than the bound. */
  uint8_t big[2 + 5] = {3, 1, 0, 0, 0, 1, 0};
  seed("grpc_wire", "over-max", big, sizeof big);
  /* Half a message at the end. */
  uint8_t half[2 + 5 + 3] = {4, 200, 0, 0, 0, 0, 9, 'a', 'b', 'c'};
  seed("grpc_wire", "partial", half, sizeof half);
  static const char *texts[][2] = {
      {"timeout-seconds", "\x02\x00" "30S"},
      {"timeout-nanos", "\x02\x00" "99999999n"},
      {"timeout-hours", "\x02\x00" "99999999H"},
      {"percent", "\x02\x05" "caf%C3%A9 100%25 done%"}};
  for (size_t i = 0; i < 4; i++)
    seed("grpc_wire", texts[i][0], texts[i][1], strlen(texts[i][1]));
}

/* ---- Merkle proofs ---- */

static int b64_value(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Standard base64 of exactly 32 bytes into |out|; 0 when it is not. */
static int b64_hash(json_t *v, uint8_t out[32]) {
  const char *s = json_string_value(v);
  if (s == NULL) return 0;
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (; *s != '\0' && *s != '='; s++) {
    int x = b64_value((unsigned char)*s);
    if (x < 0) return 0;
    acc = acc << 6 | (uint32_t)x;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o == 32) return 0;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  return o == 32;
}

/* One vector as a raw-mode input (mode 0 inclusion, 1 consistency);
 * skipped when a hash is not 32 bytes. */
static void merkle_vector(const char *path, const char *name, int consist) {
  json_error_t jerr;
  json_t *j = json_load_file(path, 0, &jerr);
  if (j == NULL) {
    /* jansson's integers stop at INT64_MAX; the tree-mode seeds cover
     * larger sizes. */
    fprintf(stderr, "fuzz-seeds: skipped %s: %s\n", path, jerr.text);
    return;
  }
  uint8_t buf[3 + 16 + 64 + 70 * 32];
  size_t n = 0;
  buf[n++] = (uint8_t)consist;
  const char *k1 = consist ? "size1" : "leafIdx";
  const char *k2 = consist ? "size2" : "treeSize";
  json_int_t v1 = json_integer_value(json_object_get(j, k1));
  json_int_t v2 = json_integer_value(json_object_get(j, k2));
  permit_put_u64be(buf + n, (uint64_t)v1);
  n += 8;
  permit_put_u64be(buf + n, (uint64_t)v2);
  n += 8;
  int ok = b64_hash(json_object_get(j, consist ? "root1" : "leafHash"),
                    buf + n);
  n += 32;
  ok = ok && b64_hash(json_object_get(j, consist ? "root2" : "root"), buf + n);
  n += 32;
  json_t *proof = json_object_get(j, "proof");
  for (size_t i = 0; ok && i < json_array_size(proof) && i < 70; i++) {
    ok = b64_hash(json_array_get(proof, i), buf + n);
    n += 32;
  }
  if (ok) seed("merkle", name, buf, n);
  json_decref(j);
}

static int by_name(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

/* Every happy-path vector, and the others of the smallest sizes. */
static void merkle_vectors(const char *vectors) {
  for (int consist = 0; consist < 2; consist++) {
    const char *kind = consist ? "consistency" : "inclusion";
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/merkle/%s", vectors, kind);
    struct dirent **sub;
    int ns = scandir(dir, &sub, NULL, by_name);
    if (ns < 0) die("cannot read tests/vectors/merkle");
    for (int i = 0; i < ns; i++) {
      if (sub[i]->d_name[0] == '.') {
        free(sub[i]);
        continue;
      }
      char d2[4600];
      snprintf(d2, sizeof d2, "%s/%s", dir, sub[i]->d_name);
      struct dirent **f;
      int nf = scandir(d2, &f, NULL, by_name);
      for (int k = 0; k < nf; k++) {
        const char *fn = f[k]->d_name;
        int take = strcmp(fn, "happy-path.json") == 0 ||
                   (strcmp(sub[i]->d_name, "1") == 0 &&
                    strstr(fn, ".json") != NULL);
        if (take) {
          char path[5200], name[600];
          snprintf(path, sizeof path, "%s/%s", d2, fn);
          snprintf(name, sizeof name, "%s-%s-%.*s", kind, sub[i]->d_name,
                   (int)(strlen(fn) - 5), fn);
          merkle_vector(path, name, consist);
        }
        free(f[k]);
      }
      free(f);
      free(sub[i]);
    }
    free(sub);
  }
}

static void merkle_trees(void) {
  /* mode, sizes, then mutations of three bytes (see fuzz_merkle.c). */
  static const uint8_t small_incl[] = {2, 6, 4};
  static const uint8_t small_incl_mut[] = {2, 255, 77, 0, 3, 9, 7, 0, 76};
  static const uint8_t small_cons[] = {3, 9, 3};
  static const uint8_t small_cons_mut[] = {3, 130, 64, 6, 0, 1, 4, 0, 0};
  uint8_t big[1 + 16 + 3];
  big[0] = 4;
  permit_put_u64be(big + 1, UINT64_MAX);
  permit_put_u64be(big + 9, (1ULL << 62) + 12345);
  big[17] = 0, big[18] = 40, big[19] = 200;
  seed("merkle", "tree-small-inclusion", small_incl, sizeof small_incl);
  seed("merkle", "tree-small-inclusion-mutated", small_incl_mut,
       sizeof small_incl_mut);
  seed("merkle", "tree-small-consistency", small_cons, sizeof small_cons);
  seed("merkle", "tree-small-consistency-mutated", small_cons_mut,
       sizeof small_cons_mut);
  seed("merkle", "tree-huge-inclusion", big, sizeof big);
  big[0] = 5;
  permit_put_u64be(big + 1, (1ULL << 63) - 3);
  permit_put_u64be(big + 9, 3);
  seed("merkle", "tree-huge-consistency", big, sizeof big);
}

static void ed25519_batches(void) {
  /* See fuzz_ed25519.c: count, then items.  Sixteen good signatures
   * under one key (flip 0xffff: none), the two keys mixed with one bad
   * bit, and a raw item (kind 2) among signed ones. */
  uint8_t b[1 + 24 * 8];
  size_t n = 0;
  b[n++] = 15;
  for (int i = 0; i < 16; i++) {
    b[n++] = 0;
    b[n++] = 4;
    b[n++] = (uint8_t)i, b[n++] = 'r', b[n++] = 'e', b[n++] = 'c';
    b[n++] = 0xff, b[n++] = 0xff;
  }
  seed("ed25519", "sixteen-good", b, n);
  n = 0;
  b[n++] = 3;
  for (int i = 0; i < 4; i++) {
    b[n++] = (uint8_t)(i & 1);
    b[n++] = 2;
    b[n++] = 'm', b[n++] = (uint8_t)i;
    b[n++] = i == 2 ? 0x01 : 0xff, b[n++] = i == 2 ? 0x00 : 0xff;
  }
  seed("ed25519", "two-keys-one-flip", b, n);
  /* Two items: a signed one, then a raw one (kind 2): the identity as
   * key (y = 1), R and S zero, message "x". */
  uint8_t raw[1 + 5 + 1 + 32 + 64 + 1 + 1] = {1, 0, 1, 'x', 0xff, 0xff, 2};
  raw[7] = 1;
  raw[7 + 32 + 64] = 1;
  raw[7 + 32 + 64 + 1] = 'x';
  seed("ed25519", "signed-and-raw", raw, sizeof raw);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: fuzz-seeds OUT_DIR VECTORS_DIR\n");
    return 2;
  }
  out_dir = argv[1];
  if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
    die("cannot make the output folder");
  records_and_hpke();
  cards();
  checkpoints();
  catalogs();
  store_rows();
  configs();
  tokens();
  forms();
  grpc_wire();
  merkle_vectors(argv[2]);
  merkle_trees();
  ed25519_batches();
  printf("fuzz-seeds: %d seeds in %s\n", written, out_dir);
  return 0;
}
