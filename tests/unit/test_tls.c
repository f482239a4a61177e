/*
 * test_tls.c - tls.c in real handshakes: both ends run non-blocking in
 * this one thread over a socketpair, so every case is deterministic and
 * needs no ports.  Covers mutual pinning, each way a peer is refused
 * (unpinned key, no certificate, chain, wrong key type, forged
 * self-signature, no h2, TLS 1.2), the certificate's contents, and pin
 * set changes taking effect on the next handshake.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "crypto_internal.h"
#include "permit/crypto.h"
#include "permit/tls.h"
#include "testlib.h"

#define SRV_NAME "server.example"
#define CLI_NAME "client.example"
#define ODD_NAME "stranger.example"
/* Generous for sanitizer builds; a case normally takes milliseconds. */
#define DEADLINE_MS 10000

static permit_sign_key *srv_key, *cli_key, *odd_key;
static char *srv_pem, *cli_pem, *odd_pem;
static permit_pinset *srv_pins, *cli_pins;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- A connection between two contexts ---- */

typedef struct conn {
  SSL *c, *s;
  int cfd, sfd;
  int c_state, s_state; /* 0 in progress, 1 done, -1 failed */
  int c_reason, s_reason; /* OpenSSL's reason for a failure */
} conn;

/* A connected pair over 127.0.0.1 on a port the kernel picks; the
 * connect completes from the listen backlog, before accept. */
static int tcp_pair(int fds[2]) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t al = sizeof a;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int l = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
  fds[0] = socket(AF_INET, SOCK_STREAM, 0);
  fds[1] = -1;
  if (l >= 0 && fds[0] >= 0 && bind(l, (struct sockaddr *)&a, sizeof a) == 0 &&
      listen(l, 1) == 0 && getsockname(l, (struct sockaddr *)&a, &al) == 0 &&
      connect(fds[0], (struct sockaddr *)&a, sizeof a) == 0)
    ok = (fds[1] = accept(l, NULL, NULL)) >= 0;
  if (l >= 0) close(l);
  if (!ok && fds[0] >= 0) close(fds[0]);
  return ok;
}

static int conn_open_on(conn *k, SSL_CTX *cctx, SSL_CTX *sctx, int tcp) {
  int fds[2];
  memset(k, 0, sizeof *k);
  k->cfd = k->sfd = -1;
  if (tcp ? !tcp_pair(fds) : socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
    return 0;
  k->cfd = fds[0];
  k->sfd = fds[1];
  fcntl(k->cfd, F_SETFL, O_NONBLOCK);
  fcntl(k->sfd, F_SETFL, O_NONBLOCK);
  k->c = SSL_new(cctx);
  k->s = SSL_new(sctx);
  if (k->c == NULL || k->s == NULL || SSL_set_fd(k->c, k->cfd) != 1 ||
      SSL_set_fd(k->s, k->sfd) != 1)
    return 0;
  SSL_set_connect_state(k->c);
  SSL_set_accept_state(k->s);
  return 1;
}

static int conn_open(conn *k, SSL_CTX *cctx, SSL_CTX *sctx) {
  return conn_open_on(k, cctx, sctx, 0);
}

static void conn_close(conn *k) {
  SSL_free(k->c);
  SSL_free(k->s);
  if (k->cfd >= 0) close(k->cfd);
  if (k->sfd >= 0) close(k->sfd);
  ERR_clear_error();
}

/* One handshake step; a failed side stops writing so the other side sees
 * end of stream instead of waiting for the deadline. */
static void hs_step(SSL *ssl, int fd, int *state, int *reason) {
  if (*state != 0) return;
  int r = SSL_do_handshake(ssl);
  if (r == 1) {
    *state = 1;
    return;
  }
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
  *state = -1;
  *reason = ERR_GET_REASON(ERR_peek_error());
  ERR_clear_error();
  shutdown(fd, SHUT_WR);
}

/* Runs both handshakes until each has finished or failed. */
static void conn_handshake(conn *k) {
  int64_t end = mono_ms() + DEADLINE_MS;
  while ((k->c_state == 0 || k->s_state == 0) && mono_ms() < end) {
    hs_step(k->c, k->cfd, &k->c_state, &k->c_reason);
    hs_step(k->s, k->sfd, &k->s_state, &k->s_reason);
    if (k->c_state != 0 && k->s_state != 0) break;
    struct pollfd p[2] = {{k->cfd, POLLIN, 0}, {k->sfd, POLLIN, 0}};
    poll(p, 2, 50);
  }
}

/* Reads up to |cap| bytes; the count, or -1 on an error, end of stream or
 * the deadline. */
static int conn_read(SSL *ssl, int fd, char *buf, int cap) {
  int64_t end = mono_ms() + DEADLINE_MS;
  while (mono_ms() < end) {
    int r = SSL_read(ssl, buf, cap);
    if (r > 0) return r;
    int e = SSL_get_error(ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) break;
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, 50);
  }
  ERR_clear_error();
  return -1;
}

/* Application data both ways: the connection really works. */
static int conn_exchange(conn *k) {
  char buf[16];
  if (SSL_write(k->c, "ping", 4) != 4) return 0;
  if (conn_read(k->s, k->sfd, buf, sizeof buf) != 4 ||
      memcmp(buf, "ping", 4) != 0)
    return 0;
  if (SSL_write(k->s, "pong", 4) != 4) return 0;
  return conn_read(k->c, k->cfd, buf, sizeof buf) == 4 &&
         memcmp(buf, "pong", 4) == 0;
}

/* A full connection attempt; |c_ok|/|s_ok| say whether each side ended up
 * with a usable connection (the TLS 1.3 client finishes before the server
 * has judged its certificate, so "usable" includes reading a reply). */
static int last_reason; /* the server's, else the client's */

static void try_connect_on(SSL_CTX *cctx, SSL_CTX *sctx, int tcp, int *c_ok,
                           int *s_ok) {
  conn k;
  *c_ok = *s_ok = 0;
  if (conn_open_on(&k, cctx, sctx, tcp)) {
    conn_handshake(&k);
    last_reason = k.s_reason ? k.s_reason : k.c_reason;
    *s_ok = k.s_state == 1;
    *c_ok = k.c_state == 1 && k.s_state == 1 && conn_exchange(&k);
  }
  conn_close(&k);
}

static void try_connect(SSL_CTX *cctx, SSL_CTX *sctx, int *c_ok, int *s_ok) {
  try_connect_on(cctx, sctx, 0, c_ok, s_ok);
}

/* ---- Capturing the log lines a case writes to stderr ---- */

static int saved_stderr = -1;
static FILE *capture_file;

static void capture_start(void) {
  fflush(stderr);
  capture_file = tmpfile();
  saved_stderr = dup(STDERR_FILENO);
  if (capture_file != NULL) dup2(fileno(capture_file), STDERR_FILENO);
}

/* Restores stderr; returns what was written meanwhile (caller frees). */
static char *capture_end(void) {
  fflush(stderr);
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  char *out = calloc(1, 65536);
  if (capture_file != NULL) {
    rewind(capture_file);
    if (out != NULL) {
      size_t n = fread(out, 1, 65535, capture_file);
      out[n] = '\0';
    }
    fclose(capture_file);
  }
  return out;
}

/* ---- Helpers ---- */

static X509 *pem_to_x509(const char *pem) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
  BIO_free(b);
  return x;
}

static char *x509_to_pem(X509 *x) {
  BIO *b = BIO_new(BIO_s_mem());
  char *data = NULL, *out = NULL;
  PEM_write_bio_X509(b, x);
  long n = BIO_get_mem_data(b, &data);
  if (n > 0 && (out = malloc((size_t)n + 1)) != NULL) {
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
  }
  BIO_free(b);
  return out;
}

/* A bare TLS 1.3 client context offering |alpn|, accepting any server,
 * with |cert|/|pkey| when given: the peers tls.c must refuse. */
static SSL_CTX *raw_client(const unsigned char *alpn, unsigned alpnlen,
                           X509 *cert, EVP_PKEY *pkey) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  if (alpn != NULL) SSL_CTX_set_alpn_protos(ctx, alpn, alpnlen);
  if (cert != NULL) {
    SSL_CTX_use_certificate(ctx, cert);
    SSL_CTX_use_PrivateKey(ctx, pkey);
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  return ctx;
}

/* A self-signed P-256 certificate: a key type peers must refuse. */
static X509 *ec_cert(EVP_PKEY *ec) {
  X509 *x = X509_new();
  X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)"ec.example", -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  X509_set_pubkey(x, ec);
  X509_sign(x, ec, EVP_sha256());
  return x;
}

static int has_line(const char *log, const char *event, const char *level,
                    const char *text) {
  char ev[128], lv[64];
  snprintf(ev, sizeof ev, "\"event\":\"%s\"", event);
  snprintf(lv, sizeof lv, "\"level\":\"%s\"", level);
  for (const char *line = log; line != NULL && *line != '\0';) {
    const char *nl = strchr(line, '\n');
    size_t n = nl ? (size_t)(nl - line) : strlen(line);
    char buf[4096];
    if (n >= sizeof buf) n = sizeof buf - 1;
    memcpy(buf, line, n);
    buf[n] = '\0';
    if (strstr(buf, ev) && strstr(buf, lv) && strstr(buf, text)) return 1;
    line = nl ? nl + 1 : NULL;
  }
  return 0;
}

/* ---- (h) the certificate ---- */

static void test_cert(void) {
  X509 *x = pem_to_x509(srv_pem);
  CHECK(x != NULL);
  if (x == NULL) return;
  CHECK(X509_get_version(x) == X509_VERSION_3);

  char cn[256] = "";
  X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
                            sizeof cn);
  CHECKF(strcmp(cn, SRV_NAME) == 0, "CN %s", cn);
  CHECK(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) ==
        0);

  int crit = -1;
  GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
  CHECK(san != NULL && sk_GENERAL_NAME_num(san) == 1);
  if (san != NULL && sk_GENERAL_NAME_num(san) == 1) {
    GENERAL_NAME *g = sk_GENERAL_NAME_value(san, 0);
    CHECK(g->type == GEN_DNS);
    if (g->type == GEN_DNS) {
      const ASN1_IA5STRING *d = g->d.dNSName;
      CHECK(ASN1_STRING_length(d) == (int)strlen(SRV_NAME) &&
            memcmp(ASN1_STRING_get0_data(d), SRV_NAME, strlen(SRV_NAME)) ==
                0);
    }
  }
  GENERAL_NAMES_free(san);
  CHECK(X509_check_host(x, SRV_NAME, 0, 0, NULL) == 1);

  /* Self-signed by the identity key, whose public half it carries. */
  EVP_PKEY *pk = X509_get0_pubkey(x);
  CHECK(pk != NULL && EVP_PKEY_is_a(pk, "ED25519"));
  CHECK(X509_verify(x, permit_sign_key_evp(srv_key)) == 1);
  CHECK(X509_verify(x, permit_sign_key_evp(cli_key)) != 1);
  ERR_clear_error();
  uint8_t raw[32];
  size_t rawlen = sizeof raw;
  CHECK(pk != NULL && EVP_PKEY_get_raw_public_key(pk, raw, &rawlen) == 1 &&
        rawlen == 32 && memcmp(raw, permit_sign_key_public(srv_key), 32) == 0);

  /* A leaf for both ends of a connection, never a CA. */
  BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit,
                                           NULL);
  CHECK(bc != NULL && bc->ca == 0 && crit == 1);
  BASIC_CONSTRAINTS_free(bc);
  CHECK(X509_check_ca(x) == 0);
  CHECK((X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE) != 0);
  CHECK((X509_get_key_usage(x) & KU_KEY_CERT_SIGN) == 0);
  CHECK((X509_get_extended_key_usage(x) & (XKU_SSL_SERVER | XKU_SSL_CLIENT)) ==
        (XKU_SSL_SERVER | XKU_SSL_CLIENT));

  /* Valid from about an hour ago for about ten years. */
  int days = 0, secs = 0;
  CHECK(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);
  CHECK(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notBefore(x)) == 1 &&
        days == 0 && secs <= -3590 && secs >= -3700);
  CHECK(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x),
                       X509_get0_notAfter(x)) == 1 &&
        days >= 3652 && days <= 3653);

  /* A positive serial, fresh for each certificate. */
  BIGNUM *s1 = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  CHECK(s1 != NULL && !BN_is_negative(s1) && !BN_is_zero(s1) &&
        BN_num_bytes(s1) <= 16);
  char *pem2 = NULL;
  size_t len2 = 0;
  CHECK(permit_tls_cert_create(srv_key, SRV_NAME, &pem2, &len2, NULL) == 0);
  X509 *x2 = pem2 ? pem_to_x509(pem2) : NULL;
  CHECK(x2 != NULL && len2 == strlen(pem2));
  if (x2 != NULL) {
    BIGNUM *s2 = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x2), NULL);
    CHECK(s2 != NULL && BN_cmp(s1, s2) != 0);
    BN_free(s2);
  }
  BN_free(s1);
  X509_free(x2);
  free(pem2);
  X509_free(x);

  /* A name over the CN limit: empty subject, critical SAN. */
  char longname[200];
  snprintf(longname, sizeof longname, "%s.%s.example",
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
           "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
  char *lpem = NULL;
  size_t llen = 0;
  CHECK(permit_tls_cert_create(srv_key, longname, &lpem, &llen, NULL) == 0);
  X509 *lx = lpem ? pem_to_x509(lpem) : NULL;
  CHECK(lx != NULL);
  if (lx != NULL) {
    CHECK(X509_NAME_entry_count(X509_get_subject_name(lx)) == 0);
    GENERAL_NAMES *lsan = X509_get_ext_d2i(lx, NID_subject_alt_name, &crit,
                                           NULL);
    CHECK(lsan != NULL && crit == 1);
    GENERAL_NAMES_free(lsan);
    CHECK(X509_check_host(lx, longname, 0, 0, NULL) == 1);
    CHECK(X509_verify(lx, permit_sign_key_evp(srv_key)) == 1);
  }
  X509_free(lx);
  free(lpem);

  /* Bad arguments. */
  permit_err err = {0};
  char *p = (char *)"x";
  size_t l = 1;
  CHECK(permit_tls_cert_create(srv_key, "", &p, &l, &err) == PERMIT_EINVAL);
  CHECK(p == NULL && l == 0 && err.msg[0] != '\0');
  CHECK(permit_tls_cert_create(srv_key, NULL, &p, &l, NULL) == PERMIT_EINVAL);
  CHECK(permit_tls_cert_create(srv_key, "Upper.example", &p, &l, NULL) ==
        PERMIT_EINVAL);
  CHECK(permit_tls_cert_create(srv_key, "a,DNS:evil.example", &p, &l,
                               NULL) == PERMIT_EINVAL);
  CHECK(permit_tls_cert_create(NULL, SRV_NAME, &p, &l, NULL) ==
        PERMIT_EINVAL);
  char huge[300];
  memset(huge, 'a', sizeof huge - 1);
  huge[sizeof huge - 1] = '\0';
  CHECK(permit_tls_cert_create(srv_key, huge, &p, &l, NULL) == PERMIT_EINVAL);
}

/* ---- (i) pin sets ---- */

static void test_pinset(void) {
  permit_pinset *ps = permit_pinset_new();
  CHECK(ps != NULL);
  if (ps == NULL) return;
  const uint8_t *a = permit_sign_key_public(srv_key);
  const uint8_t *b = permit_sign_key_public(cli_key);
  char name[254];

  CHECK(permit_pinset_lookup(ps, a, name, sizeof name) == PERMIT_ENOTFOUND);
  CHECK(name[0] == '\0');
  CHECK(permit_pinset_add(ps, a, "a.example") == 0);
  CHECK(permit_pinset_lookup(ps, a, name, sizeof name) == 0 &&
        strcmp(name, "a.example") == 0);
  CHECK(permit_pinset_lookup(ps, a, NULL, 0) == 0);
  CHECK(permit_pinset_lookup(ps, b, NULL, 0) == PERMIT_ENOTFOUND);
  /* Same key and name again: no-op; another name: refused. */
  CHECK(permit_pinset_add(ps, a, "a.example") == 0);
  CHECK(permit_pinset_add(ps, a, "other.example") == PERMIT_EEXIST);
  /* Two keys may share a name (key rotation). */
  CHECK(permit_pinset_add(ps, b, "a.example") == 0);
  /* A name that does not fit is refused, not truncated. */
  char small[4];
  CHECK(permit_pinset_lookup(ps, a, small, sizeof small) == PERMIT_ETOOBIG);
  CHECK(small[0] == '\0');

  /* Names: bounded at 253, node-name characters only. */
  char n253[254], n254[255];
  for (int i = 0; i < 253; i++) n253[i] = (i % 50 == 49) ? '.' : 'x';
  n253[253] = '\0';
  memset(n254, 'x', 254);
  n254[254] = '\0';
  uint8_t k3[32], k4[32];
  memset(k3, 3, sizeof k3);
  memset(k4, 4, sizeof k4);
  CHECK(permit_pinset_add(ps, k3, n253) == 0);
  CHECK(permit_pinset_lookup(ps, k3, name, sizeof name) == 0 &&
        strcmp(name, n253) == 0);
  CHECK(permit_pinset_add(ps, k4, n254) == PERMIT_ETOOBIG);
  CHECK(permit_pinset_add(ps, k4, "") == PERMIT_EINVAL);
  CHECK(permit_pinset_add(ps, k4, "bad name") == PERMIT_EINVAL);
  CHECK(permit_pinset_add(ps, k4, "bad\n.example") == PERMIT_EINVAL);
  CHECK(permit_pinset_add(ps, k4, NULL) == PERMIT_EINVAL);
  CHECK(permit_pinset_lookup(ps, k4, NULL, 0) == PERMIT_ENOTFOUND);

  /* Growing past the first allocation keeps every entry. */
  for (int i = 0; i < 40; i++) {
    uint8_t k[32] = {0};
    k[0] = 0xee;
    k[1] = (uint8_t)i;
    CHECK(permit_pinset_add(ps, k, "many.example") == 0);
  }
  int found = 0;
  for (int i = 0; i < 40; i++) {
    uint8_t k[32] = {0};
    k[0] = 0xee;
    k[1] = (uint8_t)i;
    found += permit_pinset_lookup(ps, k, NULL, 0) == 0;
  }
  CHECK(found == 40);

  CHECK(permit_pinset_remove(ps, a) == 0);
  CHECK(permit_pinset_remove(ps, a) == PERMIT_ENOTFOUND);
  CHECK(permit_pinset_lookup(ps, a, NULL, 0) == PERMIT_ENOTFOUND);
  CHECK(permit_pinset_lookup(ps, b, name, sizeof name) == 0 &&
        strcmp(name, "a.example") == 0);
  CHECK(permit_pinset_lookup(ps, k3, NULL, 0) == 0);

  CHECK(permit_pinset_add(NULL, a, "a.example") == PERMIT_EINVAL);
  CHECK(permit_pinset_remove(NULL, a) == PERMIT_EINVAL);
  CHECK(permit_pinset_lookup(NULL, a, NULL, 0) == PERMIT_EINVAL);

  /* References: the set lives until the last unref (ASan would report a
   * use after free or a leak otherwise). */
  permit_pinset_ref(ps);
  permit_pinset_unref(ps);
  CHECK(permit_pinset_lookup(ps, b, NULL, 0) == 0);
  permit_pinset_unref(ps);
  permit_pinset_ref(NULL);
  permit_pinset_unref(NULL);
}

/* Writers and readers at once on one set. */
typedef struct churn_arg {
  permit_pinset *ps;
  int id;
  int errors;
} churn_arg;

static void *churn(void *p) {
  churn_arg *a = p;
  uint8_t k[32];
  memset(k, 0x50 + a->id, sizeof k);
  char name[254];
  for (int i = 0; i < 2000; i++) {
    if (permit_pinset_add(a->ps, k, "churn.example") != 0) a->errors++;
    if (permit_pinset_lookup(a->ps, k, name, sizeof name) != 0 ||
        strcmp(name, "churn.example") != 0)
      a->errors++;
    if (permit_pinset_lookup(a->ps, permit_sign_key_public(cli_key), NULL,
                             0) != 0)
      a->errors++;
    if (permit_pinset_remove(a->ps, k) != 0) a->errors++;
  }
  return NULL;
}

static void test_pinset_threads(SSL_CTX *cctx, SSL_CTX *sctx) {
  enum { N = 4 };
  pthread_t t[N];
  churn_arg args[N];
  int started = 0;
  for (int i = 0; i < N; i++) {
    args[i] = (churn_arg){srv_pins, i, 0};
    if (pthread_create(&t[i], NULL, churn, &args[i]) == 0) started++;
  }
  CHECK(started == N);
  /* Handshakes read the same set meanwhile. */
  int c_ok, s_ok;
  for (int i = 0; i < 3; i++) {
    try_connect(cctx, sctx, &c_ok, &s_ok);
    CHECK(c_ok && s_ok);
  }
  for (int i = 0; i < started; i++) {
    pthread_join(t[i], NULL);
    CHECKF(args[i].errors == 0, "thread %d: %d errors", i, args[i].errors);
  }
}

/* ---- Handshakes ---- */

static void test_mutual(SSL_CTX *cctx, SSL_CTX *sctx) {
  conn k;
  CHECK(conn_open(&k, cctx, sctx));
  conn_handshake(&k);
  CHECK(k.c_state == 1 && k.s_state == 1);
  CHECK(SSL_version(k.c) == TLS1_3_VERSION &&
        SSL_version(k.s) == TLS1_3_VERSION);

  const unsigned char *proto = NULL;
  unsigned plen = 0;
  SSL_get0_alpn_selected(k.c, &proto, &plen);
  CHECK(plen == 2 && memcmp(proto, "h2", 2) == 0);
  SSL_get0_alpn_selected(k.s, &proto, &plen);
  CHECK(plen == 2 && memcmp(proto, "h2", 2) == 0);

  uint8_t pub[32];
  char name[254];
  CHECK(permit_tls_peer(k.s, pub, name, sizeof name) == 0);
  CHECK(memcmp(pub, permit_sign_key_public(cli_key), 32) == 0);
  CHECK(strcmp(name, CLI_NAME) == 0);
  CHECK(permit_tls_peer(k.c, pub, name, sizeof name) == 0);
  CHECK(memcmp(pub, permit_sign_key_public(srv_key), 32) == 0);
  CHECK(strcmp(name, SRV_NAME) == 0);
  CHECK(permit_tls_peer(k.c, pub, NULL, 0) == 0);
  CHECK(permit_tls_peer(NULL, pub, NULL, 0) == PERMIT_EINVAL);

  CHECK(conn_exchange(&k));
  /* No ticket was issued, so nothing could be resumed later. */
  SSL_SESSION *sess = SSL_get0_session(k.c);
  CHECK(sess == NULL || !SSL_SESSION_is_resumable(sess));
  conn_close(&k);
}

static void test_refusals(SSL_CTX *cctx, SSL_CTX *sctx) {
  permit_err err = {0};
  int c_ok, s_ok;
  char *log;

  /* (b) a client the server has not pinned, over TCP so that the log
   * names its address. */
  SSL_CTX *odd_c = permit_tls_client_ctx(odd_key, odd_pem, cli_pins, &err);
  CHECKF(odd_c != NULL, "%s", err.msg);
  capture_start();
  try_connect_on(odd_c, sctx, 1, &c_ok, &s_ok);
  log = capture_end();
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_CERTIFICATE_VERIFY_FAILED);
  CHECKF(has_line(log, "tls.unpinned_peer", "warn",
                  permit_sign_key_id(odd_key)),
         "log: %s", log);
  CHECKF(has_line(log, "tls.unpinned_peer", "warn", "client 127.0.0.1:"),
         "log: %s", log);
  free(log);
  SSL_CTX_free(odd_c);

  /* (c) a server the client has not pinned. */
  SSL_CTX *odd_s = permit_tls_server_ctx(odd_key, odd_pem, srv_pins, &err);
  CHECKF(odd_s != NULL, "%s", err.msg);
  capture_start();
  conn k;
  CHECK(conn_open(&k, cctx, odd_s));
  conn_handshake(&k);
  log = capture_end();
  CHECK(k.c_state == -1 && k.s_state != 1);
  CHECK(k.c_reason == SSL_R_CERTIFICATE_VERIFY_FAILED);
  uint8_t pub[32];
  CHECK(permit_tls_peer(k.c, pub, NULL, 0) == PERMIT_EPERM);
  conn_close(&k);
  CHECKF(has_line(log, "tls.unpinned_peer", "warn",
                  permit_sign_key_id(odd_key)),
         "log: %s", log);
  free(log);
  SSL_CTX_free(odd_s);

  /* (d) ALPN other than h2, or none at all. */
  SSL_CTX *h1 = permit_tls_client_ctx(cli_key, cli_pem, cli_pins, NULL);
  CHECK(h1 != NULL &&
        SSL_CTX_set_alpn_protos(h1, (const unsigned char *)"\x08http/1.1",
                                9) == 0);
  try_connect(h1, sctx, &c_ok, &s_ok);
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_NO_APPLICATION_PROTOCOL);
  CHECK(h1 != NULL && SSL_CTX_set_alpn_protos(h1, NULL, 0) == 0);
  try_connect(h1, sctx, &c_ok, &s_ok);
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_CALLBACK_FAILED); /* require_alpn() */
  /* h2 among others is fine. */
  CHECK(h1 != NULL &&
        SSL_CTX_set_alpn_protos(
            h1, (const unsigned char *)"\x08http/1.1\x02h2", 12) == 0);
  try_connect(h1, sctx, &c_ok, &s_ok);
  CHECK(s_ok && c_ok);
  SSL_CTX_free(h1);

  /* (e) no client certificate against a pinning server. */
  SSL_CTX *anon = raw_client((const unsigned char *)"\x02h2", 3, NULL, NULL);
  try_connect(anon, sctx, &c_ok, &s_ok);
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE);

  /* (f) the local API server (no pins) takes it, and knows no peer. */
  SSL_CTX *local = permit_tls_server_ctx(srv_key, srv_pem, NULL, &err);
  CHECKF(local != NULL, "%s", err.msg);
  CHECK(conn_open(&k, anon, local));
  conn_handshake(&k);
  CHECK(k.c_state == 1 && k.s_state == 1 && conn_exchange(&k));
  CHECK(permit_tls_peer(k.s, pub, NULL, 0) == PERMIT_EPERM);
  conn_close(&k);
  /* A client with a certificate is not asked for it there. */
  CHECK(conn_open(&k, cctx, local));
  conn_handshake(&k);
  CHECK(k.c_state == 1 && k.s_state == 1 && conn_exchange(&k));
  CHECK(SSL_get0_peer_certificate(k.s) == NULL);
  CHECK(permit_tls_peer(k.s, pub, NULL, 0) == PERMIT_EPERM);
  conn_close(&k);
  /* ALPN h2 is still required. */
  SSL_CTX *anon_h1 =
      raw_client((const unsigned char *)"\x08http/1.1", 9, NULL, NULL);
  try_connect(anon_h1, local, &c_ok, &s_ok);
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_NO_APPLICATION_PROTOCOL);
  SSL_CTX_free(anon_h1);
  SSL_CTX_free(local);
  SSL_CTX_free(anon);

  /* (g) a client limited to TLS 1.2. */
  SSL_CTX *old = permit_tls_client_ctx(cli_key, cli_pem, cli_pins, NULL);
  CHECK(old != NULL &&
        SSL_CTX_set_min_proto_version(old, TLS1_2_VERSION) == 1 &&
        SSL_CTX_set_max_proto_version(old, TLS1_2_VERSION) == 1);
  try_connect(old, sctx, &c_ok, &s_ok);
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_UNSUPPORTED_PROTOCOL);
  SSL_CTX_free(old);

  /* A chain of two certificates, though its leaf is pinned. */
  SSL_CTX *chain = permit_tls_client_ctx(cli_key, cli_pem, cli_pins, NULL);
  X509 *extra = pem_to_x509(odd_pem);
  CHECK(chain != NULL && extra != NULL &&
        SSL_CTX_add1_chain_cert(chain, extra) == 1);
  X509_free(extra);
  capture_start();
  try_connect(chain, sctx, &c_ok, &s_ok);
  log = capture_end();
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_CERTIFICATE_VERIFY_FAILED);
  CHECKF(has_line(log, "tls.bad_peer_cert", "info", "chain"), "log: %s", log);
  free(log);
  SSL_CTX_free(chain);

  /* A pinned key in a certificate someone else signed. */
  X509 *forged = pem_to_x509(cli_pem);
  CHECK(forged != NULL &&
        X509_sign(forged, permit_sign_key_evp(odd_key), NULL) > 0);
  char *forged_pem = forged ? x509_to_pem(forged) : NULL;
  SSL_CTX *fc = forged_pem
                    ? permit_tls_client_ctx(cli_key, forged_pem, cli_pins, &err)
                    : NULL;
  CHECKF(fc != NULL, "%s", err.msg);
  capture_start();
  try_connect(fc, sctx, &c_ok, &s_ok);
  log = capture_end();
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_CERTIFICATE_VERIFY_FAILED);
  CHECKF(has_line(log, "tls.bad_peer_cert", "info", "self-signed"), "log: %s",
         log);
  free(log);
  SSL_CTX_free(fc);
  free(forged_pem);
  X509_free(forged);

  /* A key that is not Ed25519. */
  EVP_PKEY *ec = EVP_EC_gen("P-256");
  X509 *ecx = ec ? ec_cert(ec) : NULL;
  CHECK(ecx != NULL);
  SSL_CTX *ecc = raw_client((const unsigned char *)"\x02h2", 3, ecx, ec);
  capture_start();
  try_connect(ecc, sctx, &c_ok, &s_ok);
  log = capture_end();
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_CERTIFICATE_VERIFY_FAILED);
  CHECKF(has_line(log, "tls.bad_peer_cert", "info", "Ed25519"), "log: %s",
         log);
  free(log);
  SSL_CTX_free(ecc);
  X509_free(ecx);
  EVP_PKEY_free(ec);
}

/* (i) pin changes apply to the next handshake of an existing context. */
static void test_unpin(SSL_CTX *cctx, SSL_CTX *sctx) {
  int c_ok, s_ok;
  conn k;
  CHECK(conn_open(&k, cctx, sctx));
  conn_handshake(&k);
  CHECK(k.c_state == 1 && k.s_state == 1 && conn_exchange(&k));

  CHECK(permit_pinset_remove(srv_pins, permit_sign_key_public(cli_key)) == 0);
  /* The open connection's peer is no longer a pinned one. */
  uint8_t pub[32];
  CHECK(permit_tls_peer(k.s, pub, NULL, 0) == PERMIT_EPERM);
  conn_close(&k);
  capture_start();
  try_connect(cctx, sctx, &c_ok, &s_ok);
  char *log = capture_end();
  CHECK(!s_ok && !c_ok);
  CHECK(last_reason == SSL_R_CERTIFICATE_VERIFY_FAILED);
  CHECKF(has_line(log, "tls.unpinned_peer", "warn",
                  permit_sign_key_id(cli_key)),
         "log: %s", log);
  free(log);

  CHECK(permit_pinset_add(srv_pins, permit_sign_key_public(cli_key),
                          CLI_NAME) == 0);
  try_connect(cctx, sctx, &c_ok, &s_ok);
  CHECK(c_ok && s_ok);
}

/* Context arguments, and the pin set outliving its caller's reference. */
static void test_ctx_args(void) {
  permit_err err = {0};
  CHECK(permit_tls_client_ctx(cli_key, cli_pem, NULL, &err) == NULL);
  CHECK(err.code == PERMIT_EINVAL);
  CHECK(permit_tls_server_ctx(NULL, srv_pem, srv_pins, NULL) == NULL);
  CHECK(permit_tls_server_ctx(srv_key, NULL, srv_pins, NULL) == NULL);
  err = (permit_err){0};
  CHECK(permit_tls_server_ctx(srv_key, "not a certificate", srv_pins, &err) ==
        NULL);
  CHECK(err.code == PERMIT_EINVAL);
  err = (permit_err){0};
  /* Another key's certificate. */
  CHECK(permit_tls_server_ctx(srv_key, cli_pem, srv_pins, &err) == NULL);
  CHECKF(err.code == PERMIT_EINVAL && strstr(err.msg, "not for") != NULL,
         "%s", err.msg);
  CHECK(ERR_peek_error() == 0);

  permit_pinset *ps = permit_pinset_new();
  CHECK(ps != NULL &&
        permit_pinset_add(ps, permit_sign_key_public(cli_key), CLI_NAME) == 0);
  SSL_CTX *s = permit_tls_server_ctx(srv_key, srv_pem, ps, NULL);
  permit_pinset_unref(ps); /* the context keeps its own reference */
  CHECK(s != NULL);
  int c_ok, s_ok;
  SSL_CTX *c = permit_tls_client_ctx(cli_key, cli_pem, cli_pins, NULL);
  try_connect(c, s, &c_ok, &s_ok);
  CHECK(c_ok && s_ok);
  SSL_CTX_free(c);
  SSL_CTX_free(s);
}

static void make_identity(permit_sign_key **key, char **pem,
                          const char *name) {
  size_t len = 0;
  permit_err err = {0};
  if (permit_sign_key_generate(key) != 0 ||
      permit_tls_cert_create(*key, name, pem, &len, &err) != 0) {
    fprintf(stderr, "cannot make identity %s: %s\n", name, err.msg);
    exit(2);
  }
}

int main(void) {
  CHECK(permit_crypto_init() == 0);
  make_identity(&srv_key, &srv_pem, SRV_NAME);
  make_identity(&cli_key, &cli_pem, CLI_NAME);
  make_identity(&odd_key, &odd_pem, ODD_NAME);

  srv_pins = permit_pinset_new();
  cli_pins = permit_pinset_new();
  CHECK(srv_pins != NULL && cli_pins != NULL);
  CHECK(permit_pinset_add(srv_pins, permit_sign_key_public(cli_key),
                          CLI_NAME) == 0);
  CHECK(permit_pinset_add(cli_pins, permit_sign_key_public(srv_key),
                          SRV_NAME) == 0);

  permit_err err = {0};
  SSL_CTX *sctx = permit_tls_server_ctx(srv_key, srv_pem, srv_pins, &err);
  CHECKF(sctx != NULL, "%s", err.msg);
  SSL_CTX *cctx = permit_tls_client_ctx(cli_key, cli_pem, cli_pins, &err);
  CHECKF(cctx != NULL, "%s", err.msg);

  test_cert();
  test_pinset();
  if (sctx != NULL && cctx != NULL) {
    test_mutual(cctx, sctx);
    test_refusals(cctx, sctx);
    test_unpin(cctx, sctx);
    test_pinset_threads(cctx, sctx);
  }
  test_ctx_args();

  SSL_CTX_free(cctx);
  SSL_CTX_free(sctx);
  permit_pinset_unref(srv_pins);
  permit_pinset_unref(cli_pins);
  permit_sign_key_free(srv_key);
  permit_sign_key_free(cli_key);
  permit_sign_key_free(odd_key);
  free(srv_pem);
  free(cli_pem);
  free(odd_pem);
  permit_crypto_cleanup();
  return test_finish("test_tls");
}
