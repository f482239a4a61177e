/*
 * tls.c - TLS 1.3 contexts whose peers are authenticated by pinned Ed25519
 * keys instead of by a CA (protocol.md section 3).
 *
 * A certificate is only the carrier of a key here: trust anchors, chain
 * building and validity dates play no part.  The whole decision is made in
 * verify_peer(), which OpenSSL calls once per handshake in place of
 * X509_verify_cert() (SSL_CTX_set_cert_verify_callback).  That avoids
 * overriding, one by one, the chain errors X509_verify_cert() reports for
 * a self-signed leaf, and logs each refused peer once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "crypto_internal.h"
#include "permit/logging.h"
#include "permit/tls.h"

/* A node name is a DNS name (protocol.md section 3). */
#define NAME_MAX_LEN 253
/* ub-common-name (RFC 5280); OpenSSL refuses a longer CN. */
#define CN_MAX_LEN 64
/* Far above a PEM Ed25519 certificate (~600 bytes). */
#define CERT_PEM_MAX (64 * 1024)
/* Ten years, leap days included. */
#define CERT_DAYS 3652
#define CERT_BACKDATE_SECS 3600
#define SERIAL_LEN 16

/* ---- Pin sets ---- */

typedef struct pin {
  uint8_t pub[PERMIT_ED25519_PUB_LEN];
  char name[NAME_MAX_LEN + 1];
} pin;

/*
 * A flat array scanned linearly: a node has tens of peers, and a lookup
 * happens once per handshake, so a hash table would buy nothing.
 */
struct permit_pinset {
  pthread_rwlock_t lock;
  atomic_int refs;
  pin *pins;
  size_t n, cap;
};

/*
 * The node-name rule of permit_name_validate() (record.h): 1..253
 * characters of a-z, 0-9, '-' and '.', labels of 1..63 characters that
 * neither start nor end with '-'.  Restated here so that the transport
 * does not depend on the record module.
 */
static int name_ok(const char *name) {
  if (name == NULL) return 0;
  size_t len = strnlen(name, NAME_MAX_LEN + 1), label = 0;
  if (len == 0 || len > NAME_MAX_LEN) return 0;
  for (size_t i = 0; i <= len; i++) {
    char c = name[i];
    if (c == '.' || c == '\0') {
      if (label == 0 || label > 63 || name[i - 1] == '-') return 0;
      label = 0;
      continue;
    }
    int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok || (c == '-' && label == 0)) return 0;
    label++;
  }
  return 1;
}

permit_pinset *permit_pinset_new(void) {
  permit_pinset *ps = calloc(1, sizeof *ps);
  if (ps == NULL) return NULL;
  if (pthread_rwlock_init(&ps->lock, NULL) != 0) {
    free(ps);
    return NULL;
  }
  atomic_init(&ps->refs, 1);
  return ps;
}

void permit_pinset_ref(permit_pinset *ps) {
  if (ps != NULL) atomic_fetch_add(&ps->refs, 1);
}

void permit_pinset_unref(permit_pinset *ps) {
  if (ps == NULL || atomic_fetch_sub(&ps->refs, 1) != 1) return;
  pthread_rwlock_destroy(&ps->lock);
  free(ps->pins);
  free(ps);
}

/* Index of |pub| in |ps|, or -1; the caller holds the lock. */
static long pin_find(const permit_pinset *ps, const uint8_t *pub) {
  for (size_t i = 0; i < ps->n; i++)
    if (memcmp(ps->pins[i].pub, pub, PERMIT_ED25519_PUB_LEN) == 0)
      return (long)i;
  return -1;
}

/*
 * Pinning a key again under the same name is a no-op (0); under another
 * name it is PERMIT_EEXIST, so a card cannot silently take over a key.
 * Several keys may share a name (an old and a new key during rotation).
 */
int permit_pinset_add(permit_pinset *ps, const uint8_t pub[32],
                      const char *name) {
  if (ps == NULL || pub == NULL || name == NULL) return PERMIT_EINVAL;
  if (strnlen(name, NAME_MAX_LEN + 1) > NAME_MAX_LEN) return PERMIT_ETOOBIG;
  if (!name_ok(name)) return PERMIT_EINVAL;
  int rc = 0;
  pthread_rwlock_wrlock(&ps->lock);
  long at = pin_find(ps, pub);
  if (at >= 0) {
    rc = strcmp(ps->pins[at].name, name) == 0 ? 0 : PERMIT_EEXIST;
  } else {
    if (ps->n == ps->cap) {
      size_t cap = ps->cap ? ps->cap * 2 : 8;
      pin *p = realloc(ps->pins, cap * sizeof *p);
      if (p == NULL) {
        rc = PERMIT_ENOMEM;
        goto out;
      }
      ps->pins = p;
      ps->cap = cap;
    }
    pin *p = &ps->pins[ps->n++];
    memcpy(p->pub, pub, PERMIT_ED25519_PUB_LEN);
    memcpy(p->name, name, strlen(name) + 1); /* at most 253, name_ok() */
  }
out:
  pthread_rwlock_unlock(&ps->lock);
  return rc;
}

int permit_pinset_remove(permit_pinset *ps, const uint8_t pub[32]) {
  if (ps == NULL || pub == NULL) return PERMIT_EINVAL;
  pthread_rwlock_wrlock(&ps->lock);
  long at = pin_find(ps, pub);
  if (at >= 0) ps->pins[at] = ps->pins[--ps->n]; /* order does not matter */
  pthread_rwlock_unlock(&ps->lock);
  return at >= 0 ? 0 : PERMIT_ENOTFOUND;
}

/*
 * A name that does not fit |cap| is PERMIT_ETOOBIG rather than truncated:
 * a cut name could match another peer's.
 */
int permit_pinset_lookup(permit_pinset *ps, const uint8_t pub[32], char *name,
                         size_t cap) {
  if (ps == NULL || pub == NULL) return PERMIT_EINVAL;
  if (name != NULL && cap > 0) name[0] = '\0';
  int rc = PERMIT_ENOTFOUND;
  pthread_rwlock_rdlock(&ps->lock);
  long at = pin_find(ps, pub);
  if (at >= 0) {
    rc = 0;
    if (name != NULL) {
      size_t len = strlen(ps->pins[at].name);
      if (len < cap)
        memcpy(name, ps->pins[at].name, len + 1);
      else
        rc = PERMIT_ETOOBIG;
    }
  }
  pthread_rwlock_unlock(&ps->lock);
  return rc;
}

/* ---- Certificates ---- */

/* Appends the OpenSSL reason for the last failure, then clears the queue
 * so that no stale error reaches an unrelated later caller. */
static int crypto_fail(permit_err *err, const char *what) {
  unsigned long e = ERR_peek_last_error();
  const char *reason = e ? ERR_reason_error_string(e) : NULL;
  permit_err_set(err, PERMIT_ECRYPTO, "tls: %s%s%s%s", what,
                 reason ? " (" : "", reason ? reason : "", reason ? ")" : "");
  ERR_clear_error();
  return PERMIT_ECRYPTO;
}

/* A random positive 128-bit serial: at most 17 octets in DER, within the
 * 20 that RFC 5280 4.1.2.2 allows. */
static int cert_set_serial(X509 *x) {
  uint8_t raw[SERIAL_LEN];
  if (permit_random(raw, sizeof raw) != 0) return 0;
  BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
  /* Zero is forbidden; at odds of 2^-128, any fixed value will do. */
  int ok = bn != NULL && (!BN_is_zero(bn) || BN_one(bn)) &&
           BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
  BN_free(bn);
  return ok;
}

static int cert_set_validity(X509 *x) {
  time_t now = time(NULL);
  return X509_time_adj_ex(X509_getm_notBefore(x), 0, -CERT_BACKDATE_SECS,
                          &now) != NULL &&
         X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS,
                          -CERT_BACKDATE_SECS, &now) != NULL;
}

/*
 * Subject CN=name (issuer the same: self-signed).  A name over the CN
 * limit leaves the subject empty, and RFC 5280 4.2.1.6 then wants the
 * subjectAltName critical; peers authenticate by key, not by name, so
 * nothing else depends on the CN.
 */
static int cert_set_names(X509 *x, const char *name, int *san_critical) {
  X509_NAME *subj = X509_get_subject_name(x);
  *san_critical = strlen(name) > CN_MAX_LEN;
  if (!*san_critical &&
      X509_NAME_add_entry_by_NID(subj, NID_commonName, MBSTRING_ASC,
                                 (const unsigned char *)name, -1, -1, 0) != 1)
    return 0;
  return X509_set_issuer_name(x, subj) == 1;
}

static int cert_add_san(X509 *x, const char *name, int critical) {
  GENERAL_NAMES *gens = GENERAL_NAMES_new();
  GENERAL_NAME *dns = a2i_GENERAL_NAME(NULL, NULL, NULL, GEN_DNS, name, 0);
  int ok = gens != NULL && dns != NULL && sk_GENERAL_NAME_push(gens, dns) > 0;
  if (ok)
    dns = NULL; /* owned by |gens| now */
  ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, critical,
                               X509V3_ADD_DEFAULT) == 1;
  GENERAL_NAME_free(dns);
  GENERAL_NAMES_free(gens);
  return ok;
}

static int cert_add_usage(X509 *x) {
  BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
  int ok = bc != NULL;
  if (ok) bc->ca = 0;
  ok = ok && X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1,
                               X509V3_ADD_DEFAULT) == 1;
  BASIC_CONSTRAINTS_free(bc);

  ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
  ok = ok && ku != NULL && ASN1_BIT_STRING_set_bit(ku, 0, 1) == 1 &&
       X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) == 1;
  ASN1_BIT_STRING_free(ku);

  /* Both: a node is the server of its listener and the client of its
   * outgoing peer connections with the same certificate. */
  EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
  ok = ok && eku != NULL &&
       sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) > 0 &&
       sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) > 0 &&
       X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) ==
           1;
  sk_ASN1_OBJECT_free(eku); /* the objects are OpenSSL's static ones */
  return ok;
}

static int cert_to_pem(X509 *x, char **pem, size_t *len) {
  BIO *mem = BIO_new(BIO_s_mem());
  char *data = NULL;
  long n = 0;
  int ok = mem != NULL && PEM_write_bio_X509(mem, x) == 1 &&
           (n = BIO_get_mem_data(mem, &data)) > 0;
  if (ok) {
    /* NUL-terminated as well, for the contexts that take a C string. */
    *pem = malloc((size_t)n + 1);
    ok = *pem != NULL;
    if (ok) {
      memcpy(*pem, data, (size_t)n);
      (*pem)[n] = '\0';
      *len = (size_t)n;
    }
  }
  BIO_free(mem);
  return ok;
}

int permit_tls_cert_create(const permit_sign_key *key, const char *name,
                           char **pem, size_t *len, permit_err *err) {
  if (pem != NULL) *pem = NULL;
  if (len != NULL) *len = 0;
  if (key == NULL || pem == NULL || len == NULL)
    return permit_err_set(err, PERMIT_EINVAL,
                          "tls: certificate needs a key and an output");
  if (!name_ok(name))
    return permit_err_set(err, PERMIT_EINVAL,
                          "tls: certificate name \"%.64s\" is not a node name "
                          "(1..253 of a-z, 0-9, '-', '.')",
                          name ? name : "");
  EVP_PKEY *pkey = permit_sign_key_evp(key);
  X509 *x = X509_new();
  int san_critical = 0;
  int ok = x != NULL && X509_set_version(x, X509_VERSION_3) == 1 &&
           cert_set_serial(x) && cert_set_validity(x) &&
           cert_set_names(x, name, &san_critical) &&
           X509_set_pubkey(x, pkey) == 1 &&
           cert_add_san(x, name, san_critical) && cert_add_usage(x) &&
           X509_sign(x, pkey, NULL) > 0; /* Ed25519 hashes internally */
  if (!ok) {
    X509_free(x);
    return crypto_fail(err, "cannot build the certificate");
  }
  ok = cert_to_pem(x, pem, len);
  X509_free(x);
  if (!ok) {
    ERR_clear_error();
    return permit_err_set(err, PERMIT_ENOMEM,
                          "tls: out of memory writing the certificate");
  }
  return 0;
}

/* ---- Peer verification ---- */

/*
 * Where a context keeps its pin set.  An ex_data index is process-wide
 * and created once; its free function drops the context's reference when
 * the SSL_CTX goes, which no SSL can outlive (each holds a reference to
 * its SSL_CTX).
 */
static int pins_index = -1;
static pthread_once_t pins_once = PTHREAD_ONCE_INIT;

static void pins_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                         long argl, void *argp) {
  (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
  permit_pinset_unref(ptr); /* NULL for a context without pins */
}

static void pins_index_create(void) {
  pins_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, pins_ex_free);
}

static permit_pinset *ctx_pins(const SSL_CTX *ctx) {
  pthread_once(&pins_once, pins_index_create);
  if (ctx == NULL || pins_index < 0) return NULL;
  return SSL_CTX_get_ex_data(ctx, pins_index);
}

/* The raw Ed25519 key of |x|; 0, or -1 for any other kind of key. */
static int cert_ed25519(X509 *x, uint8_t pub[PERMIT_ED25519_PUB_LEN]) {
  EVP_PKEY *pk = x != NULL ? X509_get0_pubkey(x) : NULL;
  size_t n = PERMIT_ED25519_PUB_LEN;
  if (pk == NULL || !EVP_PKEY_is_a(pk, "ED25519") ||
      EVP_PKEY_get_raw_public_key(pk, pub, &n) != 1 ||
      n != PERMIT_ED25519_PUB_LEN) {
    ERR_clear_error();
    return -1;
  }
  return 0;
}

/* "address:port" of the socket under |ssl|, for the logs. */
static void peer_addr(SSL *ssl, char *out, size_t cap) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  memset(&ss, 0, sizeof ss);
  char host[INET6_ADDRSTRLEN] = "";
  int fd = ssl != NULL ? SSL_get_fd(ssl) : -1;
  snprintf(out, cap, "unknown");
  if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) return;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(in->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    snprintf(out, cap, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
  } else if (ss.ss_family == AF_UNIX) {
    snprintf(out, cap, "local");
  }
}

/* Refuses the handshake with |why| logged; OpenSSL maps |x509err| to the
 * alert it sends. */
static int refuse(X509_STORE_CTX *xs, SSL *ssl, int x509err, const char *why) {
  char addr[INET6_ADDRSTRLEN + 16];
  peer_addr(ssl, addr, sizeof addr);
  permit_logf(PERMIT_LEVEL_INFO, "tls.bad_peer_cert", "%s %s: %s",
              ssl != NULL && SSL_is_server(ssl) ? "client" : "server", addr,
              why);
  ERR_clear_error();
  X509_STORE_CTX_set_error(xs, x509err);
  return 0;
}

/*
 * Accepts the peer when it sent exactly one certificate, that certificate
 * carries an Ed25519 key, is signed by that key, and the key is pinned.
 * Returns 1 to accept, 0 to fail the handshake.
 */
static int verify_peer(X509_STORE_CTX *xs, void *arg) {
  permit_pinset *pins = arg;
  SSL *ssl =
      X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
  X509 *leaf = X509_STORE_CTX_get0_cert(xs);
  /* OpenSSL passes the whole chain the peer sent, leaf included. */
  STACK_OF(X509) *sent = X509_STORE_CTX_get0_untrusted(xs);
  uint8_t pub[PERMIT_ED25519_PUB_LEN];

  if (leaf == NULL || pins == NULL)
    return refuse(xs, ssl, X509_V_ERR_APPLICATION_VERIFICATION,
                  "no certificate or no pin set");
  if (sent != NULL && sk_X509_num(sent) > 1)
    return refuse(xs, ssl, X509_V_ERR_CERT_CHAIN_TOO_LONG,
                  "sent a chain of more than one certificate");
  if (cert_ed25519(leaf, pub) != 0)
    return refuse(xs, ssl, X509_V_ERR_CERT_REJECTED,
                  "certificate key is not Ed25519");
  /* The pin is on the key; the self-signature shows whoever made the
   * certificate held that key (the handshake proves it holds it now). */
  if (X509_verify(leaf, X509_get0_pubkey(leaf)) != 1)
    return refuse(xs, ssl, X509_V_ERR_CERT_SIGNATURE_FAILURE,
                  "certificate is not self-signed by its key");
  if (permit_pinset_lookup(pins, pub, NULL, 0) != 0) {
    char id[PERMIT_KEY_ID_LEN], addr[INET6_ADDRSTRLEN + 16];
    permit_key_id(pub, sizeof pub, id);
    peer_addr(ssl, addr, sizeof addr);
    permit_logf(PERMIT_LEVEL_WARN, "tls.unpinned_peer",
                "%s %s offered key id %s, which is not a pinned peer key",
                ssl != NULL && SSL_is_server(ssl) ? "client" : "server", addr,
                id);
    X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_UNTRUSTED);
    return 0;
  }
  X509_STORE_CTX_set_error(xs, X509_V_OK);
  return 1;
}

/* ---- ALPN ---- */

static const unsigned char alpn_h2[] = {2, 'h', '2'};

/*
 * The select callback only runs when the client sent ALPN; a ClientHello
 * without it would otherwise complete with no protocol agreed.
 */
static int require_alpn(SSL *ssl, int *alert, void *arg) {
  (void)arg;
  const unsigned char *ext = NULL;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(
          ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
          &len) != 1) {
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  (void)ssl, (void)arg;
  /* |in| is the client's list of length-prefixed names. */
  for (unsigned int i = 0; i < inlen;) {
    unsigned int n = in[i];
    if (n == 0 || n > inlen - i - 1) break;
    if (n == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
}

/* ---- Contexts ---- */

static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf, (void)size, (void)rwflag, (void)u;
  return -1; /* never prompt on a terminal for an encrypted PEM */
}

static int ctx_load_identity(SSL_CTX *ctx, const permit_sign_key *key,
                             const char *cert_pem, permit_err *err) {
  size_t len = strnlen(cert_pem, CERT_PEM_MAX + 1);
  if (len > CERT_PEM_MAX)
    return permit_err_set(err, PERMIT_ETOOBIG,
                          "tls: certificate PEM is over %d bytes",
                          CERT_PEM_MAX);
  BIO *bio = BIO_new_mem_buf(cert_pem, (int)len);
  X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)
                        : NULL;
  BIO_free(bio);
  if (x == NULL) {
    ERR_clear_error();
    return permit_err_set(err, PERMIT_EINVAL,
                          "tls: cannot read the certificate PEM");
  }
  int ok = SSL_CTX_use_certificate(ctx, x) == 1;
  X509_free(x);
  if (!ok) return crypto_fail(err, "cannot use the certificate");
  if (SSL_CTX_use_PrivateKey(ctx, permit_sign_key_evp(key)) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    return permit_err_set(err, PERMIT_EINVAL,
                          "tls: the certificate is not for identity key %s",
                          permit_sign_key_id(key));
  }
  return 0;
}

static SSL_CTX *ctx_new(int server, const permit_sign_key *key,
                        const char *cert_pem, permit_pinset *pins,
                        permit_err *err) {
  const char *side = server ? "server" : "client";
  if (key == NULL || cert_pem == NULL || (!server && pins == NULL)) {
    permit_err_set(err, PERMIT_EINVAL, "tls: a %s context needs %s", side,
                   server ? "a key and a certificate"
                          : "a key, a certificate and a pin set");
    return NULL;
  }
  pthread_once(&pins_once, pins_index_create);
  if (pins_index < 0) {
    crypto_fail(err, "cannot reserve context data");
    return NULL;
  }
  SSL_CTX *ctx =
      SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL) {
    crypto_fail(err, "cannot create a context");
    return NULL;
  }
  int ok = SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1 &&
           SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1;
  /* No resumption: every connection shows its certificate again, so an
   * unpinned key cannot come back on a ticket issued before. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  ok = ok && SSL_CTX_set_num_tickets(ctx, 0) == 1;
  /* Idle HTTP/2 connections are the common case; do not keep 2 x 16 KiB
   * buffers for each. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (server) {
    SSL_CTX_set_client_hello_cb(ctx, require_alpn, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  } else {
    /* Inverted convention: 0 is success. */
    ok = ok && SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof alpn_h2) == 0;
  }
  if (!ok) {
    crypto_fail(err, "cannot configure the context");
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (ctx_load_identity(ctx, key, cert_pem, err) != 0) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (pins == NULL) {
    /* The local API listener: no CertificateRequest at all. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return ctx;
  }
  permit_pinset_ref(pins);
  if (SSL_CTX_set_ex_data(ctx, pins_index, pins) != 1) {
    permit_pinset_unref(pins);
    crypto_fail(err, "cannot attach the pin set");
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_cert_verify_callback(ctx, verify_peer, pins);
  SSL_CTX_set_verify(ctx,
                     SSL_VERIFY_PEER |
                         (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                     NULL);
  return ctx;
}

SSL_CTX *permit_tls_server_ctx(const permit_sign_key *key,
                               const char *cert_pem, permit_pinset *pins,
                               permit_err *err) {
  return ctx_new(1, key, cert_pem, pins, err);
}

SSL_CTX *permit_tls_client_ctx(const permit_sign_key *key,
                               const char *cert_pem, permit_pinset *pins,
                               permit_err *err) {
  return ctx_new(0, key, cert_pem, pins, err);
}

/*
 * Looks the key up again rather than trusting the handshake's verdict, so
 * a peer unpinned since its handshake is refused here too.  |pub| and
 * |name| are only filled on success (zeroed otherwise).
 */
int permit_tls_peer(SSL *ssl, uint8_t pub[32], char *name, size_t cap) {
  if (ssl == NULL || pub == NULL) return PERMIT_EINVAL;
  memset(pub, 0, PERMIT_ED25519_PUB_LEN);
  if (name != NULL && cap > 0) name[0] = '\0';
  permit_pinset *pins = ctx_pins(SSL_get_SSL_CTX(ssl));
  X509 *peer = SSL_get0_peer_certificate(ssl);
  uint8_t key[PERMIT_ED25519_PUB_LEN];
  if (pins == NULL || peer == NULL || !SSL_is_init_finished(ssl) ||
      SSL_get_verify_result(ssl) != X509_V_OK || cert_ed25519(peer, key) != 0)
    return PERMIT_EPERM;
  int rc = permit_pinset_lookup(pins, key, name, cap);
  if (rc == PERMIT_ENOTFOUND) return PERMIT_EPERM;
  if (rc != 0) return rc;
  memcpy(pub, key, sizeof key);
  return 0;
}

/* ---- The public listener (browsers, mail services) ---- */

/* Writes |len| bytes to |path| (mode |mode|), through a temporary file so
 * that a crash leaves the old file or the new one, never half of one. */
static int write_whole(const char *path, const char *data, size_t len,
                       mode_t mode, permit_err *err) {
  char tmp[4200];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
  if (n < 0 || (size_t)n >= sizeof tmp)
    return permit_err_set(err, PERMIT_EINVAL, "tls: path too long");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return permit_err_set(err, PERMIT_EIO, "tls: cannot create %s: %s", tmp,
                          strerror(errno));
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += (size_t)w;
  }
  int ok = off == len && fsync(fd) == 0;
  close(fd);
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return permit_err_set(err, PERMIT_EIO, "tls: cannot write %s", path);
  }
  return 0;
}

int permit_tls_public_cert_create(const char *name, const char *cert_path,
                                  const char *key_path, permit_err *err) {
  if (!name_ok(name))
    return permit_err_set(err, PERMIT_EINVAL,
                          "tls: \"%.64s\" is not a node name", name);
  EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *x = pkey != NULL ? X509_new() : NULL;
  int san_critical = 0;
  int ok = x != NULL && X509_set_version(x, X509_VERSION_3) == 1 &&
           cert_set_serial(x) && cert_set_validity(x) &&
           cert_set_names(x, name, &san_critical) &&
           X509_set_pubkey(x, pkey) == 1;
  /* Names a browser may use to reach a node on this machine, too. */
  GENERAL_NAMES *gens = ok ? GENERAL_NAMES_new() : NULL;
  const struct {
    int type;
    const char *v;
  } alts[] = {{GEN_DNS, name}, {GEN_DNS, "localhost"}, {GEN_IPADD, "127.0.0.1"}};
  for (size_t i = 0; gens != NULL && ok && i < 3; i++) {
    GENERAL_NAME *g = a2i_GENERAL_NAME(NULL, NULL, NULL, alts[i].type,
                                       alts[i].v, 0);
    ok = g != NULL && sk_GENERAL_NAME_push(gens, g) > 0;
    if (!ok) GENERAL_NAME_free(g);
  }
  ok = ok && gens != NULL &&
       X509_add1_ext_i2d(x, NID_subject_alt_name, gens, san_critical,
                         X509V3_ADD_DEFAULT) == 1 &&
       cert_add_usage(x) && X509_sign(x, pkey, EVP_sha256()) > 0;
  GENERAL_NAMES_free(gens);
  char *pem = NULL;
  size_t plen = 0;
  BIO *kb = ok ? BIO_new(BIO_s_mem()) : NULL;
  char *kdata = NULL;
  long klen = 0;
  ok = ok && cert_to_pem(x, &pem, &plen) && kb != NULL &&
       PEM_write_bio_PrivateKey(kb, pkey, NULL, NULL, 0, NULL, NULL) == 1 &&
       (klen = BIO_get_mem_data(kb, &kdata)) > 0;
  int rc = 0;
  if (!ok) {
    rc = crypto_fail(err, "cannot build the public certificate");
  } else if ((rc = write_whole(key_path, kdata, (size_t)klen, 0600, err)) ==
             0) {
    rc = write_whole(cert_path, pem, plen, 0644, err);
  }
  if (kdata != NULL) OPENSSL_cleanse(kdata, (size_t)klen);
  BIO_free(kb);
  free(pem);
  X509_free(x);
  EVP_PKEY_free(pkey);
  return rc;
}

SSL_CTX *permit_tls_public_ctx(const char *cert_path, const char *key_path,
                               permit_err *err) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL) {
    crypto_fail(err, "cannot create a context");
    return NULL;
  }
  /* TLS 1.2 too: the mail services that send one-click unsubscribes are
   * not all on 1.3.  HTTP/2 forbids 1.2's weak suites (RFC 9113 9.2.2):
   * ECDHE with AEAD only. */
  int ok = SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
           SSL_CTX_set_cipher_list(
               ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1") == 1;
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_client_hello_cb(ctx, require_alpn, NULL);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  if (!ok) {
    crypto_fail(err, "cannot configure the public context");
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
    crypto_fail(err, "cannot read the public certificate");
    permit_err_set(err, PERMIT_EINVAL,
                   "tls: cannot read the public certificate %s (a PEM chain)",
                   cert_path);
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    permit_err_set(err, PERMIT_EINVAL,
                   "tls: %s is not the private key (PEM, unencrypted) of %s",
                   key_path, cert_path);
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}
