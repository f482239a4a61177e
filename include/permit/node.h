/*
 * permit/node.h - a running node's state, shared by its services: its
 * name and roles, keys, database, pinned peers, per-peer logs, lists and
 * the catalogs it has fetched.  Thread safe unless a function says
 * otherwise.
 *
 * Storage (column family default unless said):
 *   node/secret              32-byte node-local secret (buyer index,
 *                            order references, consent-centre tokens)
 *   peer/<name>              the peer's signed NodeCard
 *   list/<list_id>           CatalogList (current version), audience role
 *   notice/<list_id>/<ver>   notice text of each version, BE32 version
 *   catalog/<venue>          SignedCatalog fetched from a venue
 */
#ifndef PERMIT_NODE_H
#define PERMIT_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "permit/crypto.h"
#include "permit/error.h"
#include "permit/log.h"
#include "permit/record.h"
#include "permit/store.h"
#include "permit/tls.h"
#include "permit/v1/service.pb-c.h"

#define PERMIT_ROLE_ISSUER 1
#define PERMIT_ROLE_AUDIENCE 2
#define PERMIT_CARD_CONTEXT "permit/v1/card\n"
#define PERMIT_CATALOG_CONTEXT "permit/v1/catalog\n"
#define PERMIT_CONTACT_INFO "permit/v1/contact\n"
#define PERMIT_MAX_PEERS 256
#define PERMIT_ENDPOINT_MAX 300

typedef struct permit_node permit_node;

/* A pinned peer, as a copy (no pointers into the node). */
typedef struct permit_peer {
  char name[PERMIT_NAME_MAX + 1];
  char endpoint[PERMIT_ENDPOINT_MAX]; /* host:port of its peer listener */
  int roles;                          /* PERMIT_ROLE_* bits */
  permit_trusted_key identity;        /* verifies its records */
  uint8_t sealing_key[PERMIT_X25519_LEN];
  /* HKDF of the X25519 agreement, with the reseller's name first and the
   * venue's second whichever way a record travels, so both directions
   * give a buyer the same subject (protocol.md 4). */
  uint8_t pair_key[PERMIT_SHA256_LEN];
} permit_peer;

typedef struct permit_node_config {
  const char *name;     /* node name */
  int roles;            /* PERMIT_ROLE_* bits */
  const char *data_dir; /* keys/, db/, permit.lock */
  const char *endpoint; /* advertised host:port of the peer listener */
  const char *consent_base_url; /* for consent-centre links */
  /* Hours an erased contact is kept, sealed under a one-time key, for
   * its one hand-over on WatchContacts; 0: the default, 24; negative:
   * shredded at once, no hand-over. */
  int erased_handover_hours;
  /* Disk space the node keeps free (permit_store_set_reserve), MiB; 0:
   * the default, 64; negative: no check. */
  int min_free_disk_mb;
} permit_node_config;

/*
 * Opens the node: takes the data directory's lock, loads the keys
 * (creating them on first run), opens the database and the logs of every
 * pinned peer.  The caller owns |*out| (permit_node_close).
 */
int permit_node_open(const permit_node_config *cfg, permit_node **out,
                     permit_err *err);
void permit_node_close(permit_node *n);

const char *permit_node_name(const permit_node *n);
int permit_node_roles(const permit_node *n);
const char *permit_node_consent_base(const permit_node *n);
/* See permit_node_config.erased_handover_hours (0: none). */
int64_t permit_node_handover_ms(const permit_node *n);
/* The title of this venue's list |list_id| (the id when untitled);
 * PERMIT_ENOTFOUND when it is not defined here. */
int permit_node_list_title(permit_node *n, const char *list_id, char *out,
                           size_t cap);
const permit_sign_key *permit_node_sign_key(const permit_node *n);
const permit_kx_key *permit_node_seal_key(const permit_node *n);
permit_store *permit_node_store(permit_node *n);
/* The 32-byte node-local secret. */
const uint8_t *permit_node_secret(const permit_node *n);
/* The pin set of every peer's identity key (for the TLS contexts). */
permit_pinset *permit_node_pins(permit_node *n);
/* This node's certificate (PEM, NUL-terminated), made at open. */
const char *permit_node_cert(const permit_node *n);

/*
 * This node's card, signed now.  |*out| is a serialized NodeCard
 * (malloc'd, caller frees).
 */
int permit_node_card(permit_node *n, uint8_t **out, size_t *len,
                     permit_err *err);

/*
 * Builds and signs a card from its parts (no running node needed).
 * |*out| is a serialized NodeCard (malloc'd, caller frees).
 */
int permit_card_build(const permit_sign_key *sign, const permit_kx_key *seal,
                      const char *name, const char *endpoint, int roles,
                      uint8_t **out, size_t *len, permit_err *err);

/*
 * Verifies a NodeCard (its signature by the key it announces, the body's
 * fields) and decodes it into |peer| (pair_key left zero).
 */
int permit_card_verify(const uint8_t *card, size_t len, permit_peer *peer,
                       permit_err *err);

/*
 * Pins the peer |card| describes: verifies it, derives the pair key,
 * stores the card, pins its key for TLS and opens its logs.  Adding the
 * same card again is not an error; a different identity key for a known
 * name is refused (PERMIT_EEXIST) until key rotation exists.
 */
int permit_node_peer_add(permit_node *n, const uint8_t *card, size_t len,
                         permit_peer *out, permit_err *err);

/* Copies the peer called |name|; PERMIT_ENOTFOUND if none. */
int permit_node_peer(permit_node *n, const char *name, permit_peer *out);

/* Copies up to |cap| peers into |out|; returns how many there are. */
size_t permit_node_peers(permit_node *n, permit_peer *out, size_t cap);

/*
 * The log this node issues to |peer| (issuer = this node) and the mirror
 * of the log |peer| issues to this node (issuer = peer).  NULL when the
 * peer is not pinned.  Valid until permit_node_close().
 */
permit_log *permit_node_outbound(permit_node *n, const char *peer);
permit_log *permit_node_inbound(permit_node *n, const char *peer);

/*
 * Called (on the appending thread) after entries were appended to an
 * outbound log, so that Pull streams in follow mode can send them.
 */
typedef void (*permit_node_grow_fn)(void *arg, const char *peer);
void permit_node_on_grow(permit_node *n, permit_node_grow_fn fn, void *arg);
void permit_node_grew(permit_node *n, const char *peer);

/*
 * Called (on the writing thread) after the venue's contacts changed, so
 * that WatchContacts streams can send the new changes.
 */
typedef void (*permit_node_change_fn)(void *arg);
void permit_node_on_change(permit_node *n, permit_node_change_fn fn,
                           void *arg);
void permit_node_changed(permit_node *n);

/* ---- lists (audience role) ---- */

/*
 * Defines or updates list |list_id|: a changed notice text makes a new
 * version.  On success fills |out| (caller frees its strings with
 * permit_catalog_list_clear) with the current state; on failure leaves it
 * as it was.
 */
int permit_node_define_list(permit_node *n, const char *list_id,
                            const char *title, const char *notice_text,
                            int *changed, Permit__V1__CatalogList *out,
                            permit_err *err);

/* The signed catalog of this node's lists (malloc'd SignedCatalog). */
int permit_node_catalog(permit_node *n, uint8_t **out, size_t *len,
                        permit_err *err);

/*
 * Verifies a SignedCatalog from |venue| with its pinned key and decodes
 * it (caller frees with permit__v1__catalog__free_unpacked).
 */
int permit_catalog_verify(const permit_peer *venue, const uint8_t *in,
                          size_t len, Permit__V1__Catalog **out,
                          permit_err *err);

/* Stores a venue's verified catalog (issuer role). */
int permit_node_catalog_store(permit_node *n, const char *venue,
                              const uint8_t *signed_catalog, size_t len,
                              permit_err *err);

/* The cached catalog of |venue| (caller frees); PERMIT_ENOTFOUND if none. */
int permit_node_catalog_get(permit_node *n, const char *venue,
                            Permit__V1__Catalog **out, permit_err *err);

/* Frees the strings permit_node_define_list() put in |l|; a message only
 * initialised (its strings protobuf-c's static empty one) is left as is. */
void permit_catalog_list_clear(Permit__V1__CatalogList *l);

/*
 * The text of notice |version| of |venue|'s list, as kept from every
 * catalog fetched (malloc'd, NUL-terminated, caller frees).
 * PERMIT_ENOTFOUND when that version was never seen.
 */
int permit_node_notice_text(permit_node *n, const char *venue,
                            const char *list_id, uint32_t version,
                            char **text, permit_err *err);

/* True when a log flows between this node and |p| in some direction: one
 * issues and the other is an audience (protocol.md 6: opt-ins one way,
 * unsubscribes back the other). */
int permit_node_exchanges(permit_node *n, const permit_peer *p);

/* The secret that MACs consent-centre and unsubscribe links (a copy). */
void permit_node_token_secret(permit_node *n, uint8_t out[32]);

/* A new link secret, durably: every link made before stops working. */
int permit_node_token_rotate(permit_node *n, permit_err *err);

#endif
