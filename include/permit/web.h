/*
 * permit/web.h - the buyer's web pages (the reseller's consent centre,
 * the venue's one-click unsubscribe page of RFC 8058) and the parsing of
 * what their forms post.  No sockets: pages are written into a libevent
 * evbuffer that the HTTP/2 server sends.
 *
 * Every page is a complete HTML5 document in UTF-8 (send it as
 * "text/html; charset=utf-8" with permit_web_security_headers), readable
 * on a phone, with no JavaScript and no inline style: its only stylesheet
 * is /static/permit.css, whose text permit_web_css() returns (send it as
 * "text/css; charset=utf-8").  Every string taken from the caller is
 * HTML-escaped, so names, titles and notice texts from peers are shown,
 * never interpreted.  URLs the pages link or post to (|action|,
 * |back_href|) must be paths on the node's own origin: they are refused
 * unless they start with a single '/'.
 *
 * The render functions write a whole page or nothing: on failure |out| is
 * unchanged.  They keep no pointer to their arguments.
 */
#ifndef PERMIT_WEB_H
#define PERMIT_WEB_H

#include <stddef.h>
#include <stdint.h>

#include "permit/error.h"

struct evbuffer;

/*
 * The headers every page (and the stylesheet) is sent with, as name,
 * value, name, value, ..., NULL; names in lower case for HTTP/2:
 * content-security-policy (no script, styles only from our origin, forms
 * only to our origin, no framing, no <base>), x-content-type-options,
 * referrer-policy same-origin (the URLs hold capability tokens, which
 * must not leak to other sites; not no-referrer, under which browsers
 * send "Origin: null" on our own form posts), cache-control no-store
 * (nor to shared caches), x-frame-options and cross-origin-opener-policy.
 */
extern const char *const permit_web_security_headers[];

/*
 * Appends |s| to |out| with & < > " ' written as character references;
 * other bytes, UTF-8 included, pass unchanged.  A NULL |s| appends
 * nothing.  Returns 0 or PERMIT_ENOMEM.
 */
int permit_web_escape(struct evbuffer *out, const char *s);

/* The stylesheet served at /static/permit.css (static, |*len| its size). */
const char *permit_web_css(size_t *len);

/*
 * Writes |ms| (Unix milliseconds) as "2026-11-22 19:53 UTC" into |out|,
 * which holds at least PERMIT_WEB_DATE_LEN bytes; "unknown date" when
 * the time cannot be shown.
 */
#define PERMIT_WEB_DATE_LEN 32
void permit_web_format_date(int64_t ms, char out[PERMIT_WEB_DATE_LEN]);

/* One of the buyer's opt-ins, as the consent centre shows it.  Every
 * string is borrowed for the call only. */
typedef struct permit_consent_item {
  const char *venue;       /* the venue's node name */
  const char *list_id;     /* shown when |list_title| is NULL or "" */
  const char *list_title;  /* may be NULL or "" */
  const char *notice_text; /* NULL: "notice text not available" */
  uint32_t notice_version;
  int64_t collected_at_ms; /* when the buyer joined */
  /* "active", "withdrawn", "unsubscribed at the venue" or "erased";
   * only "active" items get a "Leave this list" form. */
  const char *state;
  int64_t changed_at_ms;     /* when it stopped being active; 0 none */
  const char *record_id_hex; /* 32 hex digits */
} permit_consent_item;

typedef struct permit_consent_page {
  const char *node_name; /* the reseller, shown in the heading */
  const char *action;    /* path forms post under, e.g. "/c/<token>" */
  const char *csrf;      /* value of every form's hidden "csrf" field */
  const char *flash;     /* message shown at the top; NULL none */
  const permit_consent_item *items;
  size_t n;
} permit_consent_page;

/*
 * The consent centre: one card per item, then "Erase me everywhere".
 *
 * Stable hooks for tests and the browser driver: each card is an element
 * with class "consent", data-record="<record_id_hex>" and
 * data-state="<state>"; an active card holds
 *   <form method="post" action="{action}/withdraw"> with hidden fields
 *   csrf and record (= record_id_hex) and a button of class "withdraw";
 * the page ends with <form method="post" action="{action}/erase-confirm">
 * with hidden csrf and the button id="erase".
 *
 * Returns 0; PERMIT_EINVAL when a required string is NULL, |action| is
 * not a path, |items| is NULL with |n| non-zero, or a record id is not 32
 * hex digits; PERMIT_ENOMEM.
 */
int permit_web_consent_page(struct evbuffer *out, const permit_consent_page *p);

/*
 * "Are you sure": what erasure does (every venue deletes the contact; it
 * cannot be undone), a form posting to {action}/erase with hidden csrf
 * and confirm=yes (button id="erase-confirm"), and a "keep my data" link
 * to {action}.  Returns 0, PERMIT_EINVAL or PERMIT_ENOMEM.
 */
int permit_web_erase_confirm_page(struct evbuffer *out, const char *node_name,
                                  const char *action, const char *csrf);

/*
 * A plain page for results and errors: |title| as heading, |text| as a
 * paragraph, and a link to |back_href| when it is not NULL.  Returns 0,
 * PERMIT_EINVAL or PERMIT_ENOMEM.
 */
int permit_web_message_page(struct evbuffer *out, const char *title,
                            const char *text, const char *back_href);

/*
 * The venue's page behind its List-Unsubscribe link.  With |done| 0: a
 * form posting to |action| with the hidden field
 * List-Unsubscribe=One-Click (button id="unsubscribe"), so a person's
 * click sends exactly the body a mail provider sends under RFC 8058 and
 * one handler serves both.  With |done| 1: "you are unsubscribed".
 * |list_title| may be NULL.  Returns 0, PERMIT_EINVAL or PERMIT_ENOMEM.
 */
int permit_web_unsubscribe_page(struct evbuffer *out, const char *venue_name,
                                const char *list_title, const char *action,
                                int done);

/* ---- application/x-www-form-urlencoded ---- */

#define PERMIT_FORM_BODY_MAX 8192

/* One decoded field; both strings NUL-terminated. */
typedef struct permit_form_field {
  char name[32];
  char value[256];
} permit_form_field;

/*
 * Parses a form body of |len| bytes into |out| (room for |cap| fields)
 * and stores the field count in |*n|.  Strict, for the forms these pages
 * send: fields are name=value joined by '&', '+' means space, %XX is
 * decoded (either case).
 *
 * Returns 0 (an empty body is zero fields); PERMIT_ETOOBIG for a body
 * over PERMIT_FORM_BODY_MAX, a decoded name over 31 or value over 255
 * bytes, or more than |cap| fields; PERMIT_EINVAL for a bad %-escape, an
 * empty field ("a&&b", a trailing '&'), a field without '=', an empty
 * name, a name or value that is not UTF-8 or holds a control character,
 * or a name given twice.  |err| names the field by position, never
 * quoting the body.
 */
int permit_form_parse(const uint8_t *body, size_t len, permit_form_field *out,
                      size_t cap, size_t *n, permit_err *err);

/* The value of the field |name| among |n|, or NULL. */
const char *permit_form_get(const permit_form_field *f, size_t n,
                            const char *name);

/*
 * Whether a form post may come from one of our own pages, from the
 * request's Origin and Sec-Fetch-Site headers (NULL or "" when absent)
 * and |own_origin|, the node's origin as a browser writes it
 * ("https://127.0.0.1:8443": no default port, no trailing slash).
 *
 * Returns 1 when Sec-Fetch-Site, if present, is "same-origin" or "none"
 * and Origin, if present, equals |own_origin| (ignoring ASCII case);
 * 0 otherwise, and for Origin "null" (sandboxed or opaque origins).
 * When both headers are absent it returns 1: some older browsers send
 * neither on a same-origin post, nor do mail providers posting RFC 8058
 * unsubscribes.  So this is the first line of defence only: the hidden
 * csrf field, which the caller computes and checks, is the second.  A
 * NULL or empty |own_origin| matches no Origin.
 */
int permit_web_same_origin(const char *origin, const char *sec_fetch_site,
                           const char *own_origin);

#endif
