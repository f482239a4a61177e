/*
 * permit/node_services.h - the services of a Permit node, on top of
 * permit_node (state) and permit_server (transport):
 *
 *   issuer side:   Peer (served to audiences over mutual TLS), Checkout
 *   audience side: the sync of every issuer's log, Venue
 *   both:          Admin (for permitctl)
 *
 * Each service is created once, before the server starts, and freed after
 * it stops.  Its methods are added to a listener's table.
 */
#ifndef PERMIT_NODE_SERVICES_H
#define PERMIT_NODE_SERVICES_H

#include "permit/node.h"
#include "permit/server.h"

/* ---- Peer (peer listener) ---- */

typedef struct permit_peer_service permit_peer_service;

/*
 * The Peer service of |n|.  It registers itself with permit_node_on_grow()
 * so that Pull streams in follow mode hear of new entries, and signs a
 * checkpoint of each outbound log at least every second while it grows.
 */
permit_peer_service *permit_peer_service_new(permit_node *n,
                                             permit_server *srv,
                                             permit_err *err);
void permit_peer_service_free(permit_peer_service *ps);
#define PERMIT_PEER_METHODS 6
void permit_peer_service_methods(permit_peer_service *ps,
                                 permit_method out[PERMIT_PEER_METHODS]);

/* ---- Checkout (local API, issuer role) ---- */

typedef struct permit_checkout permit_checkout;

permit_checkout *permit_checkout_new(permit_node *n, permit_err *err);
void permit_checkout_free(permit_checkout *c);
#define PERMIT_CHECKOUT_METHODS 2
void permit_checkout_methods(permit_checkout *c,
                             permit_method out[PERMIT_CHECKOUT_METHODS]);

/* ---- sync (audience role; and catalog fetching, issuer role) ---- */

typedef struct permit_sync permit_sync;

/*
 * Starts one thread that, for every pinned peer, pulls the log the peer
 * issues to this node (when the peer issues and this node is an
 * audience) and fetches the peer's catalog (when the peer is an audience
 * and this node issues).  Peers added later are picked up by
 * permit_sync_peer_added().  |tls| is the client context (mutual TLS,
 * pinned keys); the sync takes a reference.
 */
permit_sync *permit_sync_start(permit_node *n, SSL_CTX *tls, permit_err *err);
void permit_sync_peer_added(permit_sync *s, const char *peer);
/* A line on the sync of |peer| for `permitctl peer list`: "following",
 * "connecting", "backing off: <why>", "stopped: equivocation ...". */
void permit_sync_state(permit_sync *s, const char *peer, char *out, size_t cap);
void permit_sync_stop(permit_sync *s);

/*
 * Runs fn(arg, 0) soon on the sync thread, in submission order, or
 * fn(arg, 1) when the sync stops first.  The sync thread is the single
 * writer of the contacts and of the consent state, and the only appender
 * of a venue's unsubscribes: jobs that change them run there.
 * PERMIT_EINVAL once the sync is stopping (fn will not run),
 * PERMIT_ENOMEM.
 */
typedef void (*permit_sync_job_fn)(void *arg, int cancelled);
int permit_sync_submit(permit_sync *s, permit_sync_job_fn fn, void *arg);
permit_node *permit_sync_node(permit_sync *s);

/* ---- Venue (local API, audience role) ---- */

typedef struct permit_venue permit_venue;

permit_venue *permit_venue_new(permit_node *n, permit_server *srv,
                               permit_err *err);
void permit_venue_free(permit_venue *v);
#define PERMIT_VENUE_METHODS 4
void permit_venue_methods(permit_venue *v,
                          permit_method out[PERMIT_VENUE_METHODS]);

/* The sync that runs the venue's unsubscribes; set before serving. */
void permit_venue_set_sync(permit_venue *v, permit_sync *sync);

/* "/u/": the one-click unsubscribe links (RFC 8058) of exported
 * contacts, for the public listener. */
#define PERMIT_VENUE_ROUTES 1
void permit_venue_routes(permit_venue *v,
                         permit_web_route out[PERMIT_VENUE_ROUTES]);

/* ---- Admin (local API) ---- */

typedef struct permit_admin permit_admin;

permit_admin *permit_admin_new(permit_node *n, permit_sync *sync,
                               permit_err *err);
void permit_admin_free(permit_admin *a);
#define PERMIT_ADMIN_METHODS 4
void permit_admin_methods(permit_admin *a,
                          permit_method out[PERMIT_ADMIN_METHODS]);

#endif
