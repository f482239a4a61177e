#include "permit/web.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *const permit_web_security_headers[] = {
    "content-security-policy",
    "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options", "nosniff",
    /* Not no-referrer: under it a browser sends "Origin: null" on our own
     * form posts (Fetch, "serializing a request origin"), which the
     * same-origin check must refuse.  same-origin still keeps the tokens
     * in our URLs from other sites. */
    "referrer-policy", "same-origin",
    "cache-control", "no-store",
    "x-frame-options", "DENY",
    "cross-origin-opener-policy", "same-origin",
    NULL};

/* Large targets and one column on a phone; two colour schemes. */
static const char css[] =
    ":root{color-scheme:light dark;--fg:#1c1c21;--bg:#f6f6f8;--card:#fff;"
    "--line:#d3d3da;--muted:#55555f;--accent:#0b57d0;--danger:#b3261e}\n"
    "@media (prefers-color-scheme:dark){:root{--fg:#e6e6ea;--bg:#121215;"
    "--card:#1d1d22;--line:#3b3b44;--muted:#a3a3ad;--accent:#8ab4f8;"
    "--danger:#f2b8b5}}\n"
    "*{box-sizing:border-box}\n"
    "html{-webkit-text-size-adjust:100%;text-size-adjust:100%}\n"
    "body{margin:0;background:var(--bg);color:var(--fg);"
    "font:1rem/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif}\n"
    "main{max-width:40rem;margin:0 auto;padding:1rem}\n"
    "h1{font-size:1.5rem;line-height:1.25;margin:.5rem 0 1rem;"
    "overflow-wrap:anywhere}\n"
    "h2{font-size:1.15rem;line-height:1.3;margin:0 0 .25rem;"
    "overflow-wrap:anywhere}\n"
    "p{margin:.25rem 0;overflow-wrap:anywhere}\n"
    ".consent,.erase,.panel{background:var(--card);border:1px solid "
    "var(--line);border-radius:.5rem;padding:1rem;margin:0 0 1rem}\n"
    "section>:last-child{margin-bottom:0}\n"
    ".meta,.state{color:var(--muted)}\n"
    ".state.active{color:var(--fg);font-weight:600}\n"
    ".flash{border-left:4px solid var(--accent);background:var(--card);"
    "padding:.75rem 1rem;margin:0 0 1rem}\n"
    "details{margin:.5rem 0}\n"
    "summary{cursor:pointer;color:var(--accent);padding:.5rem 0}\n"
    ".notice{white-space:pre-wrap;border-left:3px solid var(--line);"
    "padding-left:.75rem;margin:.5rem 0}\n"
    "form{margin:.75rem 0 0}\n"
    "button,.button{display:block;width:100%;min-height:2.75rem;"
    "padding:.6rem 1.1rem;font:inherit;text-align:center;"
    "text-decoration:none;border-radius:.4rem;border:1px solid "
    "var(--accent);background:transparent;color:var(--accent);"
    "cursor:pointer}\n"
    "button.primary{background:var(--accent);color:var(--card)}\n"
    "button.danger{border-color:var(--danger);color:var(--danger)}\n"
    "button.danger.primary{background:var(--danger);color:var(--card)}\n"
    ".button{margin-top:.75rem}\n"
    "@media (min-width:30rem){button,.button{display:inline-block;"
    "width:auto}}\n"
    "a{color:var(--accent)}\n"
    ":focus-visible{outline:3px solid var(--accent);outline-offset:2px}\n";

const char *permit_web_css(size_t *len) {
  if (len != NULL) *len = sizeof css - 1;
  return css;
}

int permit_web_escape(struct evbuffer *out, const char *s) {
  if (s == NULL) return 0;
  const char *run = s;
  for (const char *c = s;; c++) {
    const char *ref = NULL;
    switch (*c) {
      case '&': ref = "&amp;"; break;
      case '<': ref = "&lt;"; break;
      case '>': ref = "&gt;"; break;
      case '"': ref = "&quot;"; break;
      case '\'': ref = "&#39;"; break;
      case '\0': break;
      default: continue;
    }
    if (c > run && evbuffer_add(out, run, (size_t)(c - run)) != 0)
      return PERMIT_ENOMEM;
    if (ref == NULL) return 0;
    if (evbuffer_add(out, ref, strlen(ref)) != 0) return PERMIT_ENOMEM;
    run = c + 1;
  }
}

void permit_web_format_date(int64_t ms, char out[PERMIT_WEB_DATE_LEN]) {
  int64_t sec = ms / 1000 - (ms % 1000 < 0);
  time_t t = (time_t)sec;
  struct tm tm;
  if ((int64_t)t != sec || gmtime_r(&t, &tm) == NULL || tm.tm_year < -1900 ||
      tm.tm_year > 9999 - 1900 ||
      strftime(out, PERMIT_WEB_DATE_LEN, "%Y-%m-%d %H:%M UTC", &tm) == 0)
    snprintf(out, PERMIT_WEB_DATE_LEN, "unknown date");
}

/* ---- pages ---- */

static int hex_digit(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A page under construction: written to a buffer of its own and moved to
 * the caller's only when complete, so a failure leaves no half page. */
typedef struct page {
  struct evbuffer *b;
  int rc;
} page;

static void put(page *p, const char *s) {
  if (p->rc == 0 && evbuffer_add(p->b, s, strlen(s)) != 0)
    p->rc = PERMIT_ENOMEM;
}

static void esc(page *p, const char *s) {
  if (p->rc == 0) p->rc = permit_web_escape(p->b, s);
}

/* A path on our own origin: "//host" and "/\host" would leave it. */
static int path_ok(const char *s) {
  return s != NULL && s[0] == '/' && s[1] != '/' && s[1] != '\\';
}

static int hex32_ok(const char *s) {
  if (s == NULL) return 0;
  for (int i = 0; i < 32; i++)
    if (s[i] == '\0' || hex_digit((uint8_t)s[i]) < 0) return 0;
  return s[32] == '\0';
}

/* Opens a page whose <title> is |t1| followed by |t2| (may be NULL). */
static int page_begin(page *p, const char *t1, const char *t2) {
  p->rc = 0;
  p->b = evbuffer_new();
  if (p->b == NULL) return PERMIT_ENOMEM;
  put(p,
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, "
      "initial-scale=1\">\n"
      "<meta name=\"referrer\" content=\"same-origin\">\n"
      "<meta name=\"robots\" content=\"noindex, nofollow\">\n<title>");
  esc(p, t1);
  esc(p, t2);
  put(p,
      "</title>\n<link rel=\"stylesheet\" href=\"/static/permit.css\">\n"
      "</head>\n<body>\n<main>\n");
  return 0;
}

static int page_end(page *p, struct evbuffer *out) {
  put(p, "</main>\n</body>\n</html>\n");
  if (p->rc == 0 && evbuffer_add_buffer(out, p->b) != 0) p->rc = PERMIT_ENOMEM;
  evbuffer_free(p->b);
  p->b = NULL;
  return p->rc;
}

/* <input type="hidden" name=|name| value=|value|> */
static void hidden(page *p, const char *name, const char *value) {
  put(p, "<input type=\"hidden\" name=\"");
  esc(p, name);
  put(p, "\" value=\"");
  esc(p, value);
  put(p, "\">\n");
}

/* <form method="post" action="|action||suffix|"> */
static void form_open(page *p, const char *action, const char *suffix) {
  put(p, "<form method=\"post\" action=\"");
  esc(p, action);
  esc(p, suffix);
  put(p, "\">\n");
}

static void consent_item(page *p, const permit_consent_item *it,
                         const char *action, const char *csrf) {
  char date[PERMIT_WEB_DATE_LEN];
  int active = strcmp(it->state, "active") == 0;
  put(p, "<section class=\"consent\" data-record=\"");
  esc(p, it->record_id_hex);
  put(p, "\" data-state=\"");
  esc(p, it->state);
  put(p, "\">\n<h2>");
  esc(p, it->venue);
  put(p, "</h2>\n<p class=\"list\">");
  esc(p, it->list_title != NULL && it->list_title[0] != '\0' ? it->list_title
                                                             : it->list_id);
  put(p, "</p>\n<p class=\"meta\">Joined ");
  permit_web_format_date(it->collected_at_ms, date);
  esc(p, date);
  put(p, active ? "</p>\n<p class=\"state active\">Status: "
                : "</p>\n<p class=\"state\">Status: ");
  esc(p, it->state);
  if (it->changed_at_ms != 0) {
    permit_web_format_date(it->changed_at_ms, date);
    put(p, " (since ");
    esc(p, date);
    put(p, ")");
  }
  char version[16];
  snprintf(version, sizeof version, "%lu", (unsigned long)it->notice_version);
  put(p, "</p>\n<details>\n<summary>The notice you agreed to (version ");
  esc(p, version);
  put(p, ")</summary>\n<p class=\"notice\">");
  esc(p, it->notice_text != NULL ? it->notice_text
                                 : "The notice text is not available.");
  put(p, "</p>\n</details>\n");
  if (active) {
    form_open(p, action, "/withdraw");
    hidden(p, "csrf", csrf);
    hidden(p, "record", it->record_id_hex);
    put(p,
        "<button type=\"submit\" class=\"withdraw\">Leave this list</button>\n"
        "</form>\n");
  }
  put(p, "</section>\n");
}

int permit_web_consent_page(struct evbuffer *out,
                            const permit_consent_page *cp) {
  if (out == NULL || cp == NULL || cp->node_name == NULL ||
      !path_ok(cp->action) || cp->csrf == NULL ||
      (cp->items == NULL && cp->n != 0))
    return PERMIT_EINVAL;
  for (size_t i = 0; i < cp->n; i++) {
    const permit_consent_item *it = &cp->items[i];
    if (it->venue == NULL || it->state == NULL ||
        !hex32_ok(it->record_id_hex) ||
        (it->list_id == NULL &&
         (it->list_title == NULL || it->list_title[0] == '\0')))
      return PERMIT_EINVAL;
  }
  page p;
  if (page_begin(&p, "Your mailing-list choices at ", cp->node_name) != 0)
    return PERMIT_ENOMEM;
  put(&p, "<h1>Your mailing-list choices at ");
  esc(&p, cp->node_name);
  put(&p, "</h1>\n");
  if (cp->flash != NULL) {
    put(&p, "<p class=\"flash\" role=\"status\">");
    esc(&p, cp->flash);
    put(&p, "</p>\n");
  }
  if (cp->n == 0) {
    put(&p, "<p class=\"empty\">You have no mailing-list sign-ups through ");
    esc(&p, cp->node_name);
    put(&p, ".</p>\n");
  }
  for (size_t i = 0; i < cp->n; i++)
    consent_item(&p, &cp->items[i], cp->action, cp->csrf);
  put(&p, "<section class=\"erase\">\n<h2>Erase me everywhere</h2>\n"
          "<p>Every venue you joined through ");
  esc(&p, cp->node_name);
  put(&p, " deletes your contact details and stops writing to you. "
          "You will be asked to confirm.</p>\n");
  form_open(&p, cp->action, "/erase-confirm");
  hidden(&p, "csrf", cp->csrf);
  put(&p, "<button type=\"submit\" id=\"erase\" class=\"danger\">"
          "Erase me everywhere</button>\n</form>\n</section>\n");
  return page_end(&p, out);
}

int permit_web_erase_confirm_page(struct evbuffer *out, const char *node_name,
                                  const char *action, const char *csrf) {
  if (out == NULL || node_name == NULL || !path_ok(action) || csrf == NULL)
    return PERMIT_EINVAL;
  page p;
  if (page_begin(&p, "Erase your data?", NULL) != 0) return PERMIT_ENOMEM;
  put(&p, "<h1>Erase your data?</h1>\n<section class=\"panel\">\n"
          "<p>Every venue you joined through ");
  esc(&p, node_name);
  put(&p, " will be told to delete your email address and name and to stop "
          "writing to you. Your sign-ups are ended everywhere.</p>\n"
          "<p><strong>This cannot be undone.</strong> To hear from a venue "
          "again you would have to sign up again.</p>\n");
  form_open(&p, action, "/erase");
  hidden(&p, "csrf", csrf);
  hidden(&p, "confirm", "yes");
  put(&p, "<button type=\"submit\" id=\"erase-confirm\" "
          "class=\"danger primary\">Yes, erase me everywhere</button>\n"
          "</form>\n<a class=\"button\" href=\"");
  esc(&p, action);
  put(&p, "\">No, keep my data</a>\n</section>\n");
  return page_end(&p, out);
}

int permit_web_message_page(struct evbuffer *out, const char *title,
                            const char *text, const char *back_href) {
  if (out == NULL || title == NULL || text == NULL ||
      (back_href != NULL && !path_ok(back_href)))
    return PERMIT_EINVAL;
  page p;
  if (page_begin(&p, title, NULL) != 0) return PERMIT_ENOMEM;
  put(&p, "<h1>");
  esc(&p, title);
  put(&p, "</h1>\n<section class=\"panel\">\n<p>");
  esc(&p, text);
  put(&p, "</p>\n");
  if (back_href != NULL) {
    put(&p, "<p><a href=\"");
    esc(&p, back_href);
    put(&p, "\">Back</a></p>\n");
  }
  put(&p, "</section>\n");
  return page_end(&p, out);
}

int permit_web_unsubscribe_page(struct evbuffer *out, const char *venue_name,
                                const char *list_title, const char *action,
                                int done) {
  if (out == NULL || venue_name == NULL || !path_ok(action))
    return PERMIT_EINVAL;
  int titled = list_title != NULL && list_title[0] != '\0';
  page p;
  if (page_begin(&p, done ? "You are unsubscribed" : "Unsubscribe", NULL) != 0)
    return PERMIT_ENOMEM;
  if (done) {
    put(&p, "<h1>You are unsubscribed</h1>\n<section class=\"panel\">\n<p>");
    esc(&p, venue_name);
    put(&p, " will send you no more emails from ");
    if (titled) {
      put(&p, "&ldquo;");
      esc(&p, list_title);
      put(&p, "&rdquo;");
    } else {
      put(&p, "this list");
    }
    put(&p, ".</p>\n</section>\n");
    return page_end(&p, out);
  }
  put(&p, "<h1>Unsubscribe</h1>\n<section class=\"panel\">\n<p>Stop "
          "receiving ");
  if (titled) {
    put(&p, "&ldquo;");
    esc(&p, list_title);
    put(&p, "&rdquo;");
  } else {
    put(&p, "this list");
  }
  put(&p, " from ");
  esc(&p, venue_name);
  put(&p, "?</p>\n");
  form_open(&p, action, NULL);
  /* The RFC 8058 body, so a click and a mail provider post the same. */
  hidden(&p, "List-Unsubscribe", "One-Click");
  put(&p, "<button type=\"submit\" id=\"unsubscribe\" class=\"primary\">"
          "Unsubscribe</button>\n</form>\n</section>\n");
  return page_end(&p, out);
}

/* ---- forms ---- */

/* UTF-8 (RFC 3629: no overlongs, surrogates or values past U+10FFFF)
 * without C0 or C1 control characters or DEL. */
static int text_ok(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint32_t c = s[i], cp, min;
    size_t more;
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return 0;
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) {
      more = 1, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      more = 2, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      more = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0;
    }
    if (len - i - 1 < more) return 0;
    for (size_t k = 1; k <= more; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
        cp <= 0x9f)
      return 0;
    i += more + 1;
  }
  return 1;
}

/* Decodes |len| bytes of a name or value into |out| (capacity |cap|,
 * NUL-terminated).  PERMIT_EINVAL for a bad escape, PERMIT_ETOOBIG. */
static int form_decode(const uint8_t *in, size_t len, char *out, size_t cap,
                       size_t *outlen) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    uint8_t c = in[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      if (len - i < 3) return PERMIT_EINVAL;
      int h = hex_digit(in[i + 1]), l = hex_digit(in[i + 2]);
      if (h < 0 || l < 0) return PERMIT_EINVAL;
      c = (uint8_t)(h << 4 | l);
      i += 2;
    }
    if (o + 1 >= cap) return PERMIT_ETOOBIG;
    out[o++] = (char)c;
  }
  out[o] = '\0';
  *outlen = o;
  return 0;
}

int permit_form_parse(const uint8_t *body, size_t len, permit_form_field *out,
                      size_t cap, size_t *n, permit_err *err) {
  if (n == NULL || (body == NULL && len != 0) || (out == NULL && cap != 0))
    return permit_err_set(err, PERMIT_EINVAL, "form: bad arguments");
  *n = 0;
  if (len > PERMIT_FORM_BODY_MAX)
    return permit_err_set(err, PERMIT_ETOOBIG,
                          "form: body of %zu bytes is over %d", len,
                          PERMIT_FORM_BODY_MAX);
  size_t count = 0;
  for (size_t i = 0; len > 0;) {
    size_t end = i, k = count + 1;
    while (end < len && body[end] != '&') end++;
    if (end == i)
      return permit_err_set(err, PERMIT_EINVAL, "form: field %zu is empty",
                            k);
    if (count == cap)
      return permit_err_set(err, PERMIT_ETOOBIG, "form: more than %zu fields",
                            cap);
    const uint8_t *eq = memchr(body + i, '=', end - i);
    if (eq == NULL)
      return permit_err_set(err, PERMIT_EINVAL, "form: field %zu has no '='",
                            k);
    size_t eqi = (size_t)(eq - body), nl = 0, vl = 0;
    permit_form_field *f = &out[count];
    int rc = form_decode(body + i, eqi - i, f->name, sizeof f->name, &nl);
    if (rc == PERMIT_ETOOBIG)
      return permit_err_set(err, rc, "form: name of field %zu is over %zu "
                            "bytes", k, sizeof f->name - 1);
    if (rc != 0)
      return permit_err_set(err, rc, "form: name of field %zu has a bad "
                            "%%-escape", k);
    rc = form_decode(eq + 1, end - eqi - 1, f->value, sizeof f->value, &vl);
    if (rc == PERMIT_ETOOBIG)
      return permit_err_set(err, rc, "form: value of field %zu is over %zu "
                            "bytes", k, sizeof f->value - 1);
    if (rc != 0)
      return permit_err_set(err, rc, "form: value of field %zu has a bad "
                            "%%-escape", k);
    if (nl == 0)
      return permit_err_set(err, PERMIT_EINVAL, "form: field %zu has no name",
                            k);
    if (!text_ok((const uint8_t *)f->name, nl) ||
        !text_ok((const uint8_t *)f->value, vl))
      return permit_err_set(err, PERMIT_EINVAL,
                            "form: field %zu is not UTF-8 without control "
                            "characters", k);
    for (size_t j = 0; j < count; j++)
      if (strcmp(out[j].name, f->name) == 0)
        return permit_err_set(err, PERMIT_EINVAL,
                              "form: field %zu repeats field %zu's name", k,
                              j + 1);
    count++;
    if (end == len) break;
    i = end + 1;
  }
  *n = count;
  return 0;
}

const char *permit_form_get(const permit_form_field *f, size_t n,
                            const char *name) {
  if (f == NULL || name == NULL) return NULL;
  for (size_t i = 0; i < n; i++)
    if (strcmp(f[i].name, name) == 0) return f[i].value;
  return NULL;
}

/* ---- cross-site requests ---- */

/* ASCII case-insensitive equality, whatever the locale. */
static int ascii_caseeq(const char *a, const char *b) {
  for (;; a++, b++) {
    unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
    if (x >= 'A' && x <= 'Z') x += 'a' - 'A';
    if (y >= 'A' && y <= 'Z') y += 'a' - 'A';
    if (x != y) return 0;
    if (x == '\0') return 1;
  }
}

int permit_web_same_origin(const char *origin, const char *sec_fetch_site,
                           const char *own_origin) {
  if (sec_fetch_site != NULL && sec_fetch_site[0] != '\0' &&
      !ascii_caseeq(sec_fetch_site, "same-origin") &&
      !ascii_caseeq(sec_fetch_site, "none"))
    return 0;
  if (origin != NULL && origin[0] != '\0') {
    /* Sandboxed frames, data: URLs and some redirects post as "null". */
    if (ascii_caseeq(origin, "null")) return 0;
    return own_origin != NULL && own_origin[0] != '\0' &&
           ascii_caseeq(origin, own_origin);
  }
  return 1;
}
