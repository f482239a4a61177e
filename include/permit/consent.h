/*
 * permit/consent.h - the issuer's side of a buyer's consent (protocol.md
 * 4, 7 and 9): the buyer index, the consent-centre links, the Buyer
 * service (ListConsents, Withdraw, Erase) and its web pages, and the
 * unsubscribes venues send back.
 *
 * Storage (no email, no name; the buyer key is HMAC(node secret,
 * "buyer\n" || normalized email)):
 *   indexes      "bopt/" || buyer (32) || record_id (16) -> ConsentEntry
 *                (venue_store.proto), one per opt-in: a prefix scan
 *                finds all of a buyer's opt-ins
 *   records      "rec/" hex(record_id) -> seq (8, BE) || buyer (32) ||
 *                venue name
 *   idempotency  order key -> record_id (16) || seq (8, BE) || state (1:
 *                0 active, 1 withdrawn, 2 erased; absent: active)
 *
 * Every change of a buyer's consent (withdraw, erase, an unsubscribe
 * applied) runs on the sync thread, the single writer of that state; an
 * opt-in only ever adds new rows, on the log's commit thread.
 */
#ifndef PERMIT_CONSENT_H
#define PERMIT_CONSENT_H

#include "permit/node.h"
#include "permit/node_services.h"
#include "permit/server.h"
#include "permit/v1/venue_store.pb-c.h"

#define PERMIT_BUYER_KEY_LEN 32
#define PERMIT_IDEM_ACTIVE 0
#define PERMIT_IDEM_WITHDRAWN 1
#define PERMIT_IDEM_ERASED 2
/* A consent-centre link lives this long. */
#define PERMIT_CONSENT_LINK_DAYS 365
#define PERMIT_LINK_MAX 700

/* ---- for the checkout ---- */

/*
 * The buyer's consent-centre link, <base>/c/<token>: the token names the
 * buyer key, expires and is MACed with the node's link secret.
 */
int permit_consent_link(permit_node *n, const uint8_t buyer[32], char *out,
                        size_t cap);

/* Adds the rows of a new opt-in (see above) to |b|. */
void permit_consent_stage_optin(permit_batch *b, const uint8_t buyer[32],
                                const uint8_t record_id[16], uint64_t seq,
                                const Permit__Internal__ConsentEntry *e);

/* The buyer key of the opt-in |record_id| (its "rec/" row);
 * PERMIT_ENOTFOUND when there is none. */
int permit_consent_record_buyer(permit_node *n, const uint8_t record_id[16],
                                uint8_t buyer[32]);

/* ---- for the sync ---- */

/* True when |record_id| names an opt-in this node issued to |venue|. */
int permit_consent_issued(permit_node *n, const char *venue,
                          const ProtobufCBinaryData *record_id);

/*
 * Stages the effect of the Withdrawal |rec| that |venue| sent back (an
 * unsubscribe at the venue): the opt-in it names becomes "unsubscribed".
 * |*applied| is 0 when it was not active, or the record does not match
 * the opt-in (other list or subject: logged).
 */
int permit_consent_stage_withdrawal(permit_node *n, const char *venue,
                                    const Permit__V1__Record *rec,
                                    permit_batch *b, int *applied,
                                    permit_err *err);

/* ---- the service ---- */

typedef struct permit_consent permit_consent;

/*
 * The Buyer service and consent-centre pages of |n|; |public_origin| is
 * the origin the pages are served from ("https://host:port"), which form
 * posts must come from.  Changes run on |sync|'s thread.
 */
permit_consent *permit_consent_new(permit_node *n, permit_sync *sync,
                                   permit_err *err);
void permit_consent_free(permit_consent *c);

#define PERMIT_BUYER_METHODS 3
void permit_consent_methods(permit_consent *c,
                            permit_method out[PERMIT_BUYER_METHODS]);

/* "/c/" (the consent centre). */
#define PERMIT_CONSENT_ROUTES 1
void permit_consent_routes(permit_consent *c,
                           permit_web_route out[PERMIT_CONSENT_ROUTES]);

/* "/static/permit.css", for every node with a public listener. */
void permit_web_static_route(permit_web_route *out);

/*
 * Helpers shared with the venue's pages: sends a complete page in |body|
 * with the security headers (|status|, text/html), or a 303 redirect.
 */
struct evbuffer;
void permit_web_send_page(permit_call *c, int status, struct evbuffer *body);
void permit_web_send_message(permit_call *c, int status, const char *title,
                             const char *text);
void permit_web_redirect(permit_call *c, const char *location);

/* The origin ("https://host:port") of the node's public base URL. */
void permit_web_origin(permit_node *n, char *out, size_t cap);

#endif
