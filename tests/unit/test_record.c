/* test_record: signed envelopes, field validation, tampering, bounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/record.h"
#include "testlib.h"

static uint8_t rid[16], subj[32], nsha[32], oref[32], enc[32], ct[120],
    refers[16];

/* A valid opt-in record; the caller may break one field. */
static void make_optin(Permit__V1__Record *r, Permit__V1__OptIn *o,
                       Permit__V1__SealedContact *sc, Permit__V1__Evidence *ev) {
  permit__v1__record__init(r);
  permit__v1__opt_in__init(o);
  permit__v1__sealed_contact__init(sc);
  permit__v1__evidence__init(ev);
  r->record_id = (ProtobufCBinaryData){sizeof rid, rid};
  r->issuer = "tixly.example";
  r->audience = "fillmore.example";
  r->list_id = "newsletter";
  r->subject = (ProtobufCBinaryData){sizeof subj, subj};
  r->issued_at_ms = 1790000000000;
  r->kind_case = PERMIT__V1__RECORD__KIND_OPT_IN;
  r->opt_in = o;
  o->notice_version = 3;
  o->notice_sha256 = (ProtobufCBinaryData){sizeof nsha, nsha};
  o->collected_at_ms = 1790000000000;
  o->method = "checkout-checkbox";
  o->order_ref_hash = (ProtobufCBinaryData){sizeof oref, oref};
  ev->user_agent = "Mozilla/5.0";
  ev->ip_prefix = "203.0.113.0/24";
  o->evidence = ev;
  sc->kem_id = 0x20;
  sc->kdf_id = 1;
  sc->aead_id = 3;
  sc->recipient_key_id = "0123456789abcdef";
  sc->enc = (ProtobufCBinaryData){sizeof enc, enc};
  sc->ciphertext = (ProtobufCBinaryData){sizeof ct, ct};
  o->sealed_contact = sc;
}

/* Two signing keys, the first one trusted, and a valid opt-in record. */
typedef struct fixture {
  permit_sign_key *k, *other;
  permit_trusted_key tk;
  Permit__V1__Record r;
  Permit__V1__OptIn o;
  Permit__V1__SealedContact sc;
  Permit__V1__Evidence ev;
} fixture;

static void fixture_init(fixture *f) {
  CHECK(permit_sign_key_generate(&f->k) == 0);
  CHECK(permit_sign_key_generate(&f->other) == 0);
  permit_trusted_key_set(&f->tk, permit_sign_key_public(f->k));
  make_optin(&f->r, &f->o, &f->sc, &f->ev);
}

/* Signs |r| and checks that validation fails with a message naming
 * |field|. */
static void expect_invalid(const Permit__V1__Record *r, const char *field,
                           const permit_sign_key *k) {
  permit_err err = {0};
  uint8_t *out = NULL;
  size_t n;
  int rc = permit_record_sign(r, k, &out, &n, &err);
  CHECKF(rc == PERMIT_EINVAL, "field %s: rc %d", field, rc);
  CHECKF(strstr(err.msg, field) != NULL, "message \"%s\" lacks \"%s\"",
         err.msg, field);
  free(out);
}

static void test_roundtrip_and_tamper(void) {
  fixture f;
  fixture_init(&f);
  permit_sign_key *k = f.k, *other = f.other;
  permit_trusted_key tk = f.tk;
  Permit__V1__Record r = f.r;
  permit_err err = {0};
  uint8_t *env = NULL;
  size_t n = 0;
  CHECK(permit_record_sign(&r, k, &env, &n, &err) == 0);

  Permit__V1__Record *got = NULL;
  CHECK(permit_record_verify(env, n, &tk, 1, &got, &err) == 0);
  CHECK(got != NULL && strcmp(got->issuer, "tixly.example") == 0);
  CHECK(got != NULL && got->kind_case == PERMIT__V1__RECORD__KIND_OPT_IN &&
        got->opt_in->notice_version == 3 &&
        got->opt_in->sealed_contact->ciphertext.len == sizeof ct);
  permit_record_free(got);

  /* Every single-bit flip anywhere in the envelope must fail. */
  int accepted = 0;
  for (size_t i = 0; i < n * 8; i++) {
    env[i / 8] ^= (uint8_t)(1u << (i % 8));
    Permit__V1__Record *x = NULL;
    if (permit_record_verify(env, n, &tk, 1, &x, NULL) == 0) {
      accepted++;
      permit_record_free(x);
    }
    env[i / 8] ^= (uint8_t)(1u << (i % 8));
  }
  CHECKF(accepted == 0, "%d of %zu bit flips were accepted", accepted, n * 8);

  /* Every truncation fails with a message. */
  int trunc_ok = 0;
  for (size_t len = 0; len < n; len++) {
    Permit__V1__Record *x = NULL;
    permit_err e = {0};
    if (permit_record_verify(env, len, &tk, 1, &x, &e) == 0 ||
        e.msg[0] == '\0') {
      trunc_ok++;
      permit_record_free(x);
    }
  }
  CHECK(trunc_ok == 0);

  /* Signed by a key that is not trusted: unknown key id. */
  uint8_t *env2 = NULL;
  size_t n2;
  CHECK(permit_record_sign(&r, other, &env2, &n2, &err) == 0);
  CHECK(permit_record_verify(env2, n2, &tk, 1, &got, &err) ==
        PERMIT_ENOTFOUND);
  CHECK(strstr(err.msg, "not trusted") != NULL);

  /* Signed by another key but claiming the trusted key's id. */
  Permit__V1__SignedRecord *sr =
      permit__v1__signed_record__unpack(NULL, n2, env2);
  CHECK(sr != NULL);
  if (sr != NULL) {
    char *saved = sr->key_id;
    sr->key_id = tk.key_id;
    uint8_t forged[4096];
    size_t fn = permit__v1__signed_record__pack(sr, forged);
    sr->key_id = saved;
    CHECK(permit_record_verify(forged, fn, &tk, 1, &got, &err) ==
          PERMIT_EVERIFY);
    permit__v1__signed_record__free_unpacked(sr, NULL);
  }
  free(env2);

  /* A checkpoint signature is not a record signature (domain separation). */
  uint8_t body[1024];
  size_t bl = permit__v1__record__get_packed_size(&r);
  permit__v1__record__pack(&r, body);
  uint8_t *cpenv = NULL;
  size_t cpn;
  CHECK(permit_envelope_sign("permit/v1/checkpoint\n", body, bl, k, &cpenv,
                             &cpn, &err) == 0);
  CHECK(permit_record_verify(cpenv, cpn, &tk, 1, &got, &err) ==
        PERMIT_EVERIFY);
  free(cpenv);

  /* An envelope with an unknown (unsigned) field is refused. */
  uint8_t extra[8192];
  memcpy(extra, env, n);
  extra[n] = (9 << 3) | 0; /* field 9, varint */
  extra[n + 1] = 1;
  CHECK(permit_record_verify(extra, n + 2, &tk, 1, &got, &err) ==
        PERMIT_EINVAL);
  CHECK(strstr(err.msg, "unknown") != NULL);

  /* Oversized input is refused before parsing. */
  uint8_t *big = calloc(1, PERMIT_RECORD_MAX_LEN + 1);
  CHECK(permit_record_verify(big, PERMIT_RECORD_MAX_LEN + 1, &tk, 1, &got,
                             &err) == PERMIT_ETOOBIG);
  CHECK(strstr(err.msg, "limit") != NULL);
  free(big);
  CHECK(permit_record_verify(env, 0, &tk, 1, &got, &err) == PERMIT_EINVAL);

  /* A validly signed body that is not a valid record. */
  uint8_t junk[] = {0x0a, 0x05, 'h', 'e', 'l', 'l', 'o'};
  uint8_t *jenv = NULL;
  size_t jn;
  CHECK(permit_envelope_sign(PERMIT_RECORD_CONTEXT, junk, sizeof junk, k,
                             &jenv, &jn, &err) == 0);
  CHECK(permit_record_verify(jenv, jn, &tk, 1, &got, &err) == PERMIT_EINVAL);
  free(jenv);

  free(env);
  permit_sign_key_free(k);
  permit_sign_key_free(other);
}

static void test_validation(void) {
  permit_sign_key *k;
  CHECK(permit_sign_key_generate(&k) == 0);
  Permit__V1__Record r;
  Permit__V1__OptIn o;
  Permit__V1__SealedContact sc;
  Permit__V1__Evidence ev;

#define BREAK(stmt, field)              \
  do {                                  \
    make_optin(&r, &o, &sc, &ev);       \
    stmt;                               \
    expect_invalid(&r, field, k);       \
  } while (0)

  BREAK(r.record_id.len = 15, "record_id");
  BREAK(r.issuer = "Tixly.example", "issuer");
  BREAK(r.issuer = "", "issuer");
  BREAK(r.issuer = "-bad.example", "issuer");
  BREAK(r.issuer = "a..b", "issuer");
  BREAK(r.audience = "fill more", "audience");
  BREAK(r.audience = "tixly.example", "same node");
  BREAK(r.list_id = "News", "list id");
  BREAK(r.list_id = "", "list id");
  BREAK(r.subject.len = 31, "subject");
  BREAK(r.issued_at_ms = 0, "issued_at_ms");
  BREAK(r.kind_case = PERMIT__V1__RECORD__KIND__NOT_SET, "kind");
  BREAK(o.notice_version = 0, "notice_version");
  BREAK(o.notice_sha256.len = 0, "notice_sha256");
  BREAK(o.collected_at_ms = -1, "collected_at_ms");
  BREAK(o.method = "", "method");
  BREAK(o.method = "a\nb", "method");
  BREAK(o.order_ref_hash.len = 16, "order_ref_hash");
  BREAK(o.sealed_contact = NULL, "sealed_contact");
  BREAK(sc.aead_id = 2, "HPKE suite");
  BREAK(sc.enc.len = 31, "enc");
  BREAK(sc.ciphertext.len = 16, "ciphertext");
  BREAK(sc.recipient_key_id = "xyz", "recipient_key_id");
  BREAK(sc.recipient_key_id = "0123456789ABCDEF", "recipient_key_id");
  BREAK(sc.recipient_key_id = "0123456789abcdeg", "recipient_key_id");
  BREAK(sc.recipient_key_id = "0123456789abcdef0", "recipient_key_id");
  BREAK(sc.recipient_key_id = NULL, "recipient_key_id");
  BREAK(o.method = "check\xffout", "method");
  BREAK(ev.ip_prefix = "203.0.113.0\xc0\xaf" "24", "ip_prefix");
  /* A kind whose message is missing is refused, not dereferenced. */
  BREAK(r.opt_in = NULL, "opt_in");
  BREAK((r.kind_case = PERMIT__V1__RECORD__KIND_WITHDRAWAL,
         r.withdrawal = NULL), "withdrawal");
  BREAK((r.kind_case = PERMIT__V1__RECORD__KIND_ERASURE, r.erasure = NULL),
        "erasure");
  char longua[600];
  memset(longua, 'a', sizeof longua - 1);
  longua[sizeof longua - 1] = '\0';
  BREAK(ev.user_agent = longua, "user_agent");
  char longname[300];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  BREAK(r.issuer = longname, "issuer");

  /* Withdrawal and erasure records. */
  Permit__V1__Withdrawal w = PERMIT__V1__WITHDRAWAL__INIT;
  make_optin(&r, &o, &sc, &ev);
  r.kind_case = PERMIT__V1__RECORD__KIND_WITHDRAWAL;
  r.withdrawal = &w;
  w.refers_to = (ProtobufCBinaryData){sizeof refers, refers};
  w.withdrawn_at_ms = 1790000000001;
  expect_invalid(&r, "reason", k);
  w.reason = PERMIT__V1__WITHDRAWAL_REASON__WITHDRAWAL_REASON_BUYER_REQUEST;
  permit_err err;
  uint8_t *env;
  size_t n;
  CHECK(permit_record_sign(&r, k, &env, &n, &err) == 0);
  permit_trusted_key tk;
  permit_trusted_key_set(&tk, permit_sign_key_public(k));
  Permit__V1__Record *got = NULL;
  CHECK(permit_record_verify(env, n, &tk, 1, &got, &err) == 0);
  CHECK(got && got->kind_case == PERMIT__V1__RECORD__KIND_WITHDRAWAL &&
        memcmp(got->withdrawal->refers_to.data, refers, 16) == 0);
  permit_record_free(got);
  free(env);
  w.refers_to.len = 0;
  expect_invalid(&r, "refers_to", k);

  Permit__V1__Erasure e = PERMIT__V1__ERASURE__INIT;
  r.kind_case = PERMIT__V1__RECORD__KIND_ERASURE;
  r.erasure = &e;
  expect_invalid(&r, "requested_at_ms", k);
  e.requested_at_ms = 5;
  CHECK(permit_record_sign(&r, k, &env, &n, &err) == 0);
  free(env);

  CHECK(permit_name_validate("tixly.example", NULL) == 0);
  CHECK(permit_name_validate("a-b.c1", NULL) == 0);
  CHECK(permit_name_validate("a-.b", NULL) == PERMIT_EINVAL);
  CHECK(permit_name_validate("a.", NULL) == PERMIT_EINVAL);
  permit_sign_key_free(k);
}

/* Signs |body| as a record body, as a signer with its own encoder would. */
static int verify_body(const uint8_t *body, size_t len,
                       const permit_sign_key *k, const permit_trusted_key *tk,
                       permit_err *err) {
  uint8_t *env = NULL;
  size_t n = 0;
  Permit__V1__Record *got = NULL;
  if (permit_envelope_sign(PERMIT_RECORD_CONTEXT, body, len, k, &env, &n,
                           err) != 0)
    return 1;
  int rc = permit_record_verify(env, n, tk, 1, &got, err);
  permit_record_free(got);
  free(env);
  return rc;
}

/*
 * A signed body is accepted only as the exact encoding of the record it
 * decodes to: otherwise two different signed byte strings (two records
 * ids, two log entries) would mean the same record, or a signer could
 * hide bytes from checks that read the decoded fields.
 */
static void test_canonical_body(void) {
  permit_sign_key *k;
  CHECK(permit_sign_key_generate(&k) == 0);
  permit_trusted_key tk;
  permit_trusted_key_set(&tk, permit_sign_key_public(k));
  Permit__V1__Record r;
  Permit__V1__OptIn o;
  Permit__V1__SealedContact sc;
  Permit__V1__Evidence ev;
  make_optin(&r, &o, &sc, &ev);
  r.issuer = "a.example";
  uint8_t body[1024], bad[1100];
  size_t bl = permit__v1__record__get_packed_size(&r);
  CHECK(bl < sizeof body);
  permit__v1__record__pack(&r, body);
  permit_err err = {0};
  CHECK(verify_body(body, bl, k, &tk, &err) == 0);

  /* record_id (field 1, 16 bytes) comes first, then issuer (field 2). */
  const size_t at = 2 + sizeof rid;
  CHECK(body[at] == 0x12 && body[at + 1] == 9 &&
        memcmp(body + at + 2, "a.example", 9) == 0);
  const size_t after = at + 2 + 9;

  /* An issuer with an embedded NUL: protobuf-c's C string stops at it,
   * so the decoded issuer would be "a.example". */
  static const char evil[] = "a.example\0evil";
  size_t n = 0;
  memcpy(bad, body, at);
  n = at;
  bad[n++] = 0x12;
  bad[n++] = (uint8_t)(sizeof evil - 1);
  memcpy(bad + n, evil, sizeof evil - 1);
  n += sizeof evil - 1;
  memcpy(bad + n, body + after, bl - after);
  n += bl - after;
  CHECK(verify_body(bad, n, k, &tk, &err) == PERMIT_EINVAL);
  CHECKF(strstr(err.msg, "re-encodes") != NULL, "message \"%s\"", err.msg);

  /* Field 2 given twice: the last copy wins when decoding. */
  memcpy(bad, body, bl);
  n = bl;
  memcpy(bad + n, body + at, after - at);
  n += after - at;
  CHECK(verify_body(bad, n, k, &tk, &err) == PERMIT_EINVAL);
  CHECKF(strstr(err.msg, "record body") != NULL, "message \"%s\"", err.msg);
  static const uint8_t other[] = {0x12, 4, 'e', 'v', 'i', 'l'};
  memcpy(bad, body, bl);
  memcpy(bad + bl, other, sizeof other);
  CHECK(verify_body(bad, bl + sizeof other, k, &tk, &err) == PERMIT_EINVAL);

  /* The issuer's length as a padded two-byte varint (0x89 0x00 = 9). */
  memcpy(bad, body, at + 1);
  n = at + 1;
  bad[n++] = 0x89;
  bad[n++] = 0x00;
  memcpy(bad + n, body + at + 2, bl - at - 2);
  n += bl - at - 2;
  CHECK(verify_body(bad, n, k, &tk, &err) == PERMIT_EINVAL);

  /* The same fields in another order: issuer moved to the end. */
  memcpy(bad, body, at);
  n = at;
  memcpy(bad + n, body + after, bl - after);
  n += bl - after;
  memcpy(bad + n, body + at, after - at);
  n += after - at;
  CHECK(n == bl);
  CHECK(verify_body(bad, n, k, &tk, &err) == PERMIT_EINVAL);
  CHECKF(strstr(err.msg, "canonical") != NULL, "message \"%s\"", err.msg);

  permit_sign_key_free(k);
}

static void test_utf8(void) {
  permit_sign_key *k;
  CHECK(permit_sign_key_generate(&k) == 0);
  permit_trusted_key tk;
  permit_trusted_key_set(&tk, permit_sign_key_public(k));
  Permit__V1__Record r;
  Permit__V1__OptIn o;
  Permit__V1__SealedContact sc;
  Permit__V1__Evidence ev;
  static const char *const bad[] = {
      "\xc0\xaf",             /* overlong '/' */
      "\xc1\xbf",             /* overlong */
      "\xe0\x80\xaf",         /* overlong, three bytes */
      "\xf0\x80\x80\xaf",     /* overlong, four bytes */
      "\xed\xa0\x80",         /* U+D800, a surrogate */
      "\xed\xbf\xbf",         /* U+DFFF */
      "\xf4\x90\x80\x80",     /* U+110000 */
      "\xf5\x80\x80\x80",     /* no such lead byte */
      "\xff",                 /* never in UTF-8 */
      "\x80",                 /* a continuation without a lead */
      "ab\xe2\x82",           /* cut short at the end */
      "\xe2\x28\xa1",         /* a lead without its continuation */
      "\xf0\x9f\x98",         /* cut short */
  };
  static const char *const good[] = {
      "Mozilla/5.0 (Macintosh) M\xc3\xbcller",
      "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", /* three-byte forms */
      "\xf0\x9f\x98\x80",                     /* U+1F600 */
      "\xf4\x8f\xbf\xbf",                     /* U+10FFFF */
      "\xed\x9f\xbf \xee\x80\x80",           /* U+D7FF, U+E000 */
      "\xc2\x80 \xdf\xbf \xe0\xa0\x80",      /* smallest of each length */
  };
  int refused = 0;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char ua[64];
    snprintf(ua, sizeof ua, "Mozilla/5.0 %s", bad[i]);
    make_optin(&r, &o, &sc, &ev);
    ev.user_agent = ua;
    permit_err err = {0};
    uint8_t *env = NULL;
    size_t n = 0;
    int rc = permit_record_sign(&r, k, &env, &n, &err);
    free(env);
    /* The same bytes signed by an encoder that does not check them. */
    uint8_t body[1024];
    size_t bl = permit__v1__record__get_packed_size(&r);
    permit__v1__record__pack(&r, body);
    permit_err verr = {0};
    int vrc = verify_body(body, bl, k, &tk, &verr);
    int ok = rc == PERMIT_EINVAL && strstr(err.msg, "user_agent") != NULL &&
             strstr(err.msg, "UTF-8") != NULL && vrc == PERMIT_EINVAL &&
             strstr(verr.msg, "user_agent") != NULL;
    CHECKF(ok, "invalid UTF-8 #%zu: sign %d \"%s\", verify %d \"%s\"", i,
           rc, err.msg, vrc, verr.msg);
    refused += ok;
  }
  CHECK(refused == (int)(sizeof bad / sizeof *bad));
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    make_optin(&r, &o, &sc, &ev);
    ev.user_agent = (char *)good[i];
    permit_err err = {0};
    uint8_t *env = NULL;
    size_t n = 0;
    Permit__V1__Record *got = NULL;
    int ok = permit_record_sign(&r, k, &env, &n, &err) == 0 &&
             permit_record_verify(env, n, &tk, 1, &got, &err) == 0 &&
             strcmp(got->opt_in->evidence->user_agent, good[i]) == 0;
    CHECKF(ok, "valid UTF-8 #%zu refused: %s", i, err.msg);
    permit_record_free(got);
    free(env);
  }
  permit_sign_key_free(k);
}

static void test_route(void) {
  permit_sign_key *k;
  CHECK(permit_sign_key_generate(&k) == 0);
  permit_trusted_key tk;
  permit_trusted_key_set(&tk, permit_sign_key_public(k));
  Permit__V1__Record r;
  Permit__V1__OptIn o;
  Permit__V1__SealedContact sc;
  Permit__V1__Evidence ev;
  make_optin(&r, &o, &sc, &ev);
  permit_err err = {0};
  uint8_t *env = NULL;
  size_t n = 0;
  Permit__V1__Record *got = NULL;
  CHECK(permit_record_sign(&r, k, &env, &n, &err) == 0);
  CHECK(permit_record_verify(env, n, &tk, 1, &got, &err) == 0);
  if (got != NULL) {
    CHECK(permit_record_check_route(got, "tixly.example", "fillmore.example",
                                    &err) == 0);
    /* Verified with another issuer's keys, e.g. a venue forging for a
     * reseller it also trusts. */
    CHECK(permit_record_check_route(got, "evil.example", "fillmore.example",
                                    &err) == PERMIT_EPERM);
    CHECK(strstr(err.msg, "tixly.example") != NULL &&
          strstr(err.msg, "evil.example") != NULL);
    /* Addressed to another node. */
    CHECK(permit_record_check_route(got, "tixly.example", "bluenote.example",
                                    &err) == PERMIT_EPERM);
    CHECK(strstr(err.msg, "fillmore.example") != NULL &&
          strstr(err.msg, "bluenote.example") != NULL);
    CHECK(permit_record_check_route(got, "tixly.example", "fillmore.exampl",
                                    &err) == PERMIT_EPERM);
  }
  permit_record_free(got);
  free(env);
  permit_sign_key_free(k);
}

/* Checks permit_record_verify_many() on |n| envelopes against
 * permit_record_verify() on each: same code, same message, same record. */
static int many_matches_one(const permit_iov *in, size_t n,
                            const permit_trusted_key *tk) {
  Permit__V1__Record *out[PERMIT_RECORD_VERIFY_MANY_MAX];
  int rcs[PERMIT_RECORD_VERIFY_MANY_MAX];
  permit_err errs[PERMIT_RECORD_VERIFY_MANY_MAX];
  if (permit_record_verify_many(in, n, tk, 1, out, rcs, errs) != 0) return 0;
  int same = 1;
  for (size_t i = 0; i < n; i++) {
    Permit__V1__Record *one = NULL;
    permit_err e = {0};
    int rc = permit_record_verify(in[i].base, in[i].len, tk, 1, &one, &e);
    if (rc != rcs[i] || (rc != 0 && strcmp(e.msg, errs[i].msg) != 0) ||
        (rc == 0) != (out[i] != NULL) ||
        (rc == 0 && (out[i]->record_id.len != one->record_id.len ||
                     memcmp(out[i]->record_id.data, one->record_id.data,
                            one->record_id.len) != 0))) {
      fprintf(stderr, "  entry %zu: one by one %d \"%s\", batched %d \"%s\"\n",
              i, rc, e.msg, rcs[i], rcs[i] != 0 ? errs[i].msg : "");
      same = 0;
    }
    permit_record_free(one);
    permit_record_free(out[i]);
  }
  return same;
}

static void test_verify_many(void) {
  fixture f;
  fixture_init(&f);
  permit_err err = {0};
  enum { N = 16 };
  uint8_t *env[N], ids[N][16];
  size_t len[N];
  permit_iov in[N];
  for (int i = 0; i < N; i++) {
    memset(ids[i], 0x40 + i, sizeof ids[i]);
    f.r.record_id = (ProtobufCBinaryData){sizeof ids[i], ids[i]};
    CHECK(permit_record_sign(&f.r, f.k, &env[i], &len[i], &err) == 0);
    in[i] = (permit_iov){env[i], len[i]};
  }
  f.r.record_id = (ProtobufCBinaryData){sizeof rid, rid};

  /* All good, and the edges of the size. */
  CHECK(many_matches_one(in, N, &f.tk));
  CHECK(many_matches_one(in, 1, &f.tk));
  CHECK(many_matches_one(in, 0, &f.tk));
  Permit__V1__Record *out[PERMIT_RECORD_VERIFY_MANY_MAX + 1];
  int rcs[PERMIT_RECORD_VERIFY_MANY_MAX + 1];
  permit_err errs[PERMIT_RECORD_VERIFY_MANY_MAX + 1];
  permit_iov lots[PERMIT_RECORD_VERIFY_MANY_MAX + 1];
  for (size_t i = 0; i < PERMIT_RECORD_VERIFY_MANY_MAX + 1; i++)
    lots[i] = in[i % N];
  CHECK(permit_record_verify_many(lots, PERMIT_RECORD_VERIFY_MANY_MAX + 1,
                                  &f.tk, 1, out, rcs, errs) == PERMIT_EINVAL);
  CHECK(many_matches_one(lots, PERMIT_RECORD_VERIFY_MANY_MAX, &f.tk));

  /* Every kind of bad entry among good ones: each keeps its own error and
   * the good ones pass. */
  uint8_t *untrusted, *cpenv, *jenv, *forged = malloc(4096), *extra;
  size_t un, cpn, jn, fn = 0;
  CHECK(permit_record_sign(&f.r, f.other, &untrusted, &un, &err) == 0);
  Permit__V1__SignedRecord *sr =
      permit__v1__signed_record__unpack(NULL, un, untrusted);
  CHECK(sr != NULL);
  if (sr != NULL) {
    char *saved = sr->key_id;
    sr->key_id = f.tk.key_id; /* another key's signature, our key's id */
    fn = permit__v1__signed_record__pack(sr, forged);
    sr->key_id = saved;
    permit__v1__signed_record__free_unpacked(sr, NULL);
  }
  uint8_t body[1024];
  size_t bl = permit__v1__record__get_packed_size(&f.r);
  permit__v1__record__pack(&f.r, body);
  CHECK(permit_envelope_sign("permit/v1/checkpoint\n", body, bl, f.k, &cpenv,
                             &cpn, &err) == 0);
  uint8_t junk[] = {0x0a, 0x05, 'h', 'e', 'l', 'l', 'o'};
  CHECK(permit_envelope_sign(PERMIT_RECORD_CONTEXT, junk, sizeof junk, f.k,
                             &jenv, &jn, &err) == 0);
  extra = malloc(len[0] + 2);
  memcpy(extra, env[0], len[0]);
  extra[len[0]] = (9 << 3) | 0;
  extra[len[0] + 1] = 1;
  uint8_t *flipped = malloc(len[1]);
  memcpy(flipped, env[1], len[1]);
  flipped[len[1] - 70] ^= 0x10; /* inside the signature */
  permit_iov mixed[] = {in[2],        {untrusted, un}, in[3],
                        {forged, fn}, {cpenv, cpn},    {jenv, jn},
                        in[4],        {extra, len[0] + 2},
                        {flipped, len[1]}, {env[5], len[5] - 1},
                        {env[6], 0},  in[7]};
  CHECK(many_matches_one(mixed, sizeof mixed / sizeof mixed[0], &f.tk));
  CHECK(permit_record_verify_many(mixed, sizeof mixed / sizeof mixed[0], &f.tk,
                                  1, out, rcs, errs) == 0);
  CHECK(rcs[0] == 0 && rcs[2] == 0 && rcs[6] == 0 && rcs[11] == 0);
  CHECK(rcs[1] == PERMIT_ENOTFOUND && rcs[3] == PERMIT_EVERIFY &&
        rcs[4] == PERMIT_EVERIFY && rcs[5] == PERMIT_EINVAL &&
        rcs[7] == PERMIT_EINVAL && rcs[8] == PERMIT_EVERIFY);
  CHECK(strstr(errs[8].msg, "does not verify") != NULL);
  for (size_t i = 0; i < sizeof mixed / sizeof mixed[0]; i++)
    permit_record_free(out[i]);

  /* Random single-bit flips in random members of a batch. */
  unsigned seed = 12345;
  int mismatches = 0;
  for (int round = 0; round < 150; round++) {
    uint8_t *copy[N];
    permit_iov b[N];
    for (int i = 0; i < N; i++) {
      copy[i] = malloc(len[i]);
      memcpy(copy[i], env[i], len[i]);
      b[i] = (permit_iov){copy[i], len[i]};
    }
    int flips = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 3;
    for (int f = 0; f < flips; f++) {
      seed = seed * 1103515245u + 12345u;
      size_t i = (seed >> 16) % N;
      seed = seed * 1103515245u + 12345u;
      size_t bit = (seed >> 8) % (len[i] * 8);
      copy[i][bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    if (!many_matches_one(b, N, &f.tk)) mismatches++;
    for (int i = 0; i < N; i++) free(copy[i]);
  }
  CHECKF(mismatches == 0, "%d of 150 flipped batches differ", mismatches);

  for (int i = 0; i < N; i++) free(env[i]);
  free(untrusted);
  free(forged);
  free(cpenv);
  free(jenv);
  free(extra);
  free(flipped);
  permit_sign_key_free(f.k);
  permit_sign_key_free(f.other);
}

int main(void) {
  for (size_t i = 0; i < sizeof ct; i++) ct[i] = (uint8_t)i;
  memset(rid, 1, sizeof rid);
  memset(subj, 2, sizeof subj);
  memset(nsha, 3, sizeof nsha);
  memset(oref, 4, sizeof oref);
  memset(enc, 5, sizeof enc);
  memset(refers, 6, sizeof refers);
  test_roundtrip_and_tamper();
  test_validation();
  test_canonical_body();
  test_utf8();
  test_route();
  test_verify_many();
  permit_crypto_cleanup();
  return test_finish("test_record");
}
