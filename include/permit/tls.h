/*
 * permit/tls.h - TLS 1.3 for Permit's listeners and peer connections, on
 * OpenSSL 3.0.
 *
 * Peers authenticate each other by key, not by a CA (the WireGuard and
 * Syncthing model): each node's certificate is self-signed with its
 * Ed25519 identity key, and a handshake succeeds only when the other
 * side's certificate key is in the pin set.  ALPN is "h2" only.
 */
#ifndef PERMIT_TLS_H
#define PERMIT_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "permit/crypto.h"
#include "permit/error.h"

/* Longest node name, as permit_name_validate() allows. */
#define PERMIT_TLS_NAME_MAX 253

/*
 * Makes a self-signed X.509 v3 certificate for |key| with subject and
 * subjectAltName DNS |name|, valid from one hour ago for ten years, signed
 * with Ed25519.  |name| must be a node name; one over 64 characters gets
 * no CN and a critical SAN instead.  |*pem| is malloc'd, NUL-terminated
 * PEM text of |*len| bytes (caller frees).
 */
int permit_tls_cert_create(const permit_sign_key *key, const char *name,
                           char **pem, size_t *len, permit_err *err);

/*
 * The set of peer identity keys a node accepts, changeable while
 * connections are made (peer add/remove).  Thread safe.
 */
typedef struct permit_pinset permit_pinset;

/* A new empty set (refcount 1), or NULL when out of memory. */
permit_pinset *permit_pinset_new(void);
void permit_pinset_ref(permit_pinset *ps);
/* Drops a reference; the set is freed with the last. */
void permit_pinset_unref(permit_pinset *ps);

/*
 * Pins |pub| (an Ed25519 public key) under the peer name |name|.  Returns
 * 0 (also when the same key is pinned under the same name again),
 * PERMIT_EEXIST when the key is pinned under another name, PERMIT_EINVAL
 * for a name that is not a node name, PERMIT_ETOOBIG over 253 characters.
 * Two keys may share a name (key rotation).
 */
int permit_pinset_add(permit_pinset *ps, const uint8_t pub[32],
                      const char *name);
/* Unpins |pub|; PERMIT_ENOTFOUND when it was not pinned. */
int permit_pinset_remove(permit_pinset *ps, const uint8_t pub[32]);
/*
 * Looks |pub| up; when pinned copies the peer name into |name| (capacity
 * |cap|, may be NULL) and returns 0, else PERMIT_ENOTFOUND.
 * PERMIT_ETOOBIG when the name does not fit |cap| (never truncated: a cut
 * name could match another peer's).
 */
int permit_pinset_lookup(permit_pinset *ps, const uint8_t pub[32], char *name,
                         size_t cap);

/*
 * A server context: TLS 1.3 only, ALPN "h2" only (a client offering no h2
 * fails the handshake), certificate from |cert_pem| and |key|.  When
 * |pins| is not NULL, a client certificate is required and must carry a
 * pinned Ed25519 key (the context keeps a reference); a handshake from an
 * unpinned key fails and is logged (event "tls.unpinned_peer") with the
 * offered key id.  When |pins| is NULL no client certificate is asked for.
 * Caller frees with SSL_CTX_free().
 */
SSL_CTX *permit_tls_server_ctx(const permit_sign_key *key,
                               const char *cert_pem, permit_pinset *pins,
                               permit_err *err);

/*
 * A client context: TLS 1.3 only, offers ALPN "h2", presents |cert_pem| /
 * |key|, and accepts the server only when its certificate key is in
 * |pins| (required).  It does not refuse a server that selects no ALPN
 * protocol: check SSL_get0_alpn_selected() after the handshake.  Caller
 * frees with SSL_CTX_free().
 */
SSL_CTX *permit_tls_client_ctx(const permit_sign_key *key,
                               const char *cert_pem, permit_pinset *pins,
                               permit_err *err);

/*
 * After a completed handshake: the other side's Ed25519 public key into
 * |pub| and, when |name| is not NULL, its pinned peer name.  PERMIT_EPERM
 * when it presented no certificate or an unpinned one (also one unpinned
 * after the handshake), PERMIT_ETOOBIG when the name does not fit |cap|.
 */
int permit_tls_peer(SSL *ssl, uint8_t pub[32], char *name, size_t cap);

/*
 * Reads the Ed25519 public key of the PEM certificate |pem| (|len| bytes)
 * into |pub|.  PERMIT_EINVAL when it is not a certificate or its key is
 * of another type.
 */
int permit_tls_cert_key(const char *pem, size_t len, uint8_t pub[32],
                        permit_err *err);

/*
 * The public listener's context (the consent centre, one-click
 * unsubscribes): TLS 1.2 or 1.3 with ECDHE and AEAD suites only, ALPN
 * "h2" only, no client certificate; certificate chain and unencrypted
 * private key from PEM files.  PERMIT_EINVAL (in |err|) names the file
 * that cannot be used.  Caller frees with SSL_CTX_free().
 */
SSL_CTX *permit_tls_public_ctx(const char *cert_path, const char *key_path,
                               permit_err *err);

/*
 * Writes a new self-signed ECDSA P-256 certificate for |name| (also
 * valid for localhost and 127.0.0.1) and its key (mode 0600), for
 * a public listener that has no certificate from a CA yet (browsers do
 * not accept Ed25519 certificates).  Each file is replaced atomically.
 */
int permit_tls_public_cert_create(const char *name, const char *cert_path,
                                  const char *key_path, permit_err *err);

#endif
