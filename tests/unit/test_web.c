/* test_web: HTML escaping, the pages (hooks, forms only where they
 * belong, hostile strings shown but never interpreted, only known tags
 * and attributes, no script or inline style), the security headers, form
 * parsing and the same-origin check. */
#include <ctype.h>
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "permit/web.h"
#include "testlib.h"

#define EVIL "<script>alert(1)</script>"
#define EVIL_ESC "&lt;script&gt;alert(1)&lt;/script&gt;"
#define EVIL_ATTR "\"><img src=x onerror=alert(1)> ' onfocus='alert(2)' autofocus x='"
#define JOINED_MS 1795377180000LL /* 2026-11-22 19:53:00 UTC */

/* The contents of |b| as a malloc'd string (caller frees); |b| drained. */
static char *take(struct evbuffer *b) {
  size_t n = evbuffer_get_length(b);
  char *s = malloc(n + 1);
  if (s == NULL) abort();
  evbuffer_remove(b, s, n);
  s[n] = '\0';
  return s;
}

static size_t count(const char *hay, const char *needle) {
  size_t n = 0, l = strlen(needle);
  for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + l, needle))
    n++;
  return n;
}

/* strstr ignoring ASCII case. */
static int contains_ci(const char *hay, const char *needle) {
  size_t l = strlen(needle);
  for (; *hay; hay++) {
    size_t i = 0;
    while (i < l && tolower((unsigned char)hay[i]) ==
                        tolower((unsigned char)needle[i]))
      i++;
    if (i == l) return 1;
  }
  return 0;
}

static int in_list(const char *s, size_t len, const char *const *list) {
  for (; *list != NULL; list++)
    if (strlen(*list) == len && strncmp(*list, s, len) == 0) return 1;
  return 0;
}

/*
 * Walks every tag of |html| and checks that its name and its attribute
 * names are ones our pages use and every value is double-quoted; an
 * injected tag or a quote that broke out of an attribute fails here.
 * Returns the number of problems (printed).
 */
static int quiet;

static int tags_ok(const char *html) {
  static const char *const tags[] = {
      "!DOCTYPE", "html",    "head", "meta",    "title", "link",
      "body",     "main",    "h1",   "h2",      "p",     "section",
      "details",  "summary", "form", "input",   "button", "a",
      "strong",   NULL};
  static const char *const attrs[] = {
      "lang",       "charset", "name",  "content", "rel",   "href",
      "class",      "role",    "method", "action", "type",  "value",
      "id",         "data-record", "data-state", NULL};
  int bad = 0;
  for (const char *p = strchr(html, '<'); p != NULL; p = strchr(p, '<')) {
    p++;
    if (*p == '/') p++;
    size_t n = strcspn(p, " >");
    if (!in_list(p, n, tags)) {
      if (!quiet) fprintf(stderr, "unexpected tag <%.*s\n", (int)n, p);
      bad++;
    }
    p += n;
    if (strncmp(p - n, "!DOCTYPE", 8) == 0) {
      p = strchr(p, '>');
      if (p == NULL) return bad + 1;
      continue;
    }
    while (*p == ' ') {
      p++;
      size_t an = strcspn(p, "= >");
      if (!in_list(p, an, attrs)) {
        if (!quiet) fprintf(stderr, "unexpected attribute %.*s\n", (int)an, p);
        bad++;
      }
      p += an;
      if (*p == '=') {
        if (p[1] != '"') {
          if (!quiet) fprintf(stderr, "unquoted attribute value\n");
          bad++;
        }
        const char *close = strchr(p + 2, '"');
        if (close == NULL) return bad + 1;
        if (memchr(p + 2, '<', (size_t)(close - p - 2)) != NULL ||
            memchr(p + 2, '>', (size_t)(close - p - 2)) != NULL) {
          if (!quiet) fprintf(stderr, "raw < or > inside an attribute\n");
          bad++;
        }
        p = close + 1;
      }
    }
    if (*p != '>') {
      if (!quiet) fprintf(stderr, "tag not closed where expected: %.20s\n", p);
      bad++;
    }
  }
  return bad;
}

/* The checker itself catches what it is there to catch. */
static void test_tags_ok(void) {
  quiet = 1;
  CHECK(tags_ok("<p class=\"a\">x</p><a href=\"/b\">y</a>") == 0);
  CHECK(tags_ok("<p>x<script>y</script></p>") > 0);
  CHECK(tags_ok("<p onclick=\"x\">") > 0);
  CHECK(tags_ok("<p class=a>") > 0);
  CHECK(tags_ok("<p class=\"\"><img src=x>\">") > 0);
  CHECK(tags_ok("<p class=\"x\" autofocus>") > 0);
  quiet = 0;
}

/* What every page must be and must not contain. */
static void check_page(const char *html, const char *what) {
  CHECKF(strncmp(html, "<!DOCTYPE html>\n<html lang=\"en\">", 31) == 0, "%s",
         what);
  CHECKF(strstr(html, "<meta charset=\"utf-8\">") != NULL, "%s", what);
  CHECKF(strstr(html, "<meta name=\"viewport\" content=\"width=device-width, "
                      "initial-scale=1\">") != NULL,
         "%s", what);
  CHECKF(strstr(html, "<link rel=\"stylesheet\" href=\"/static/permit.css\">") !=
             NULL,
         "%s", what);
  size_t len = strlen(html);
  CHECKF(len > 8 && strcmp(html + len - 8, "</html>\n") == 0, "%s", what);
  CHECKF(!contains_ci(html, "<script"), "%s", what);
  CHECKF(!contains_ci(html, "style="), "%s", what);
  CHECKF(!contains_ci(html, "<style"), "%s", what);
  CHECKF(!contains_ci(html, "<img"), "%s", what);
  CHECKF(!contains_ci(html, "javascript:"), "%s", what);
  CHECKF(tags_ok(html) == 0, "%s", what);
  CHECKF(count(html, "<title>") == 1 && count(html, "<h1>") == 1, "%s", what);
}

static void test_escape(void) {
  struct evbuffer *b = evbuffer_new();
  CHECK(permit_web_escape(b, "&<>\"'") == 0);
  char *s = take(b);
  CHECK(strcmp(s, "&amp;&lt;&gt;&quot;&#39;") == 0);
  free(s);
  CHECK(permit_web_escape(b, "plain text") == 0);
  s = take(b);
  CHECK(strcmp(s, "plain text") == 0);
  free(s);
  /* UTF-8 passes through byte for byte. */
  const char *utf8 = "Zo\xc3\xab \xe2\x80\x93 \xe6\x9d\xb1\xe4\xba\xac "
                     "\xf0\x9f\x8e\xab caf\xc3\xa9";
  CHECK(permit_web_escape(b, utf8) == 0);
  s = take(b);
  CHECK(strcmp(s, utf8) == 0);
  free(s);
  CHECK(permit_web_escape(b, "a&&b<c>\"d'e'") == 0);
  s = take(b);
  CHECK(strcmp(s, "a&amp;&amp;b&lt;c&gt;&quot;d&#39;e&#39;") == 0);
  free(s);
  CHECK(permit_web_escape(b, EVIL) == 0);
  s = take(b);
  CHECK(strcmp(s, EVIL_ESC) == 0);
  free(s);
  CHECK(permit_web_escape(b, NULL) == 0 && permit_web_escape(b, "") == 0);
  CHECK(evbuffer_get_length(b) == 0);
  /* Character references are escaped too, not passed as markup. */
  CHECK(permit_web_escape(b, "&lt;") == 0);
  s = take(b);
  CHECK(strcmp(s, "&amp;lt;") == 0);
  free(s);
  evbuffer_free(b);
}

static void test_date(void) {
  char d[PERMIT_WEB_DATE_LEN];
  permit_web_format_date(JOINED_MS, d);
  CHECK(strcmp(d, "2026-11-22 19:53 UTC") == 0);
  permit_web_format_date(JOINED_MS + 59999, d);
  CHECK(strcmp(d, "2026-11-22 19:53 UTC") == 0);
  permit_web_format_date(0, d);
  CHECK(strcmp(d, "1970-01-01 00:00 UTC") == 0);
  permit_web_format_date(-1, d);
  CHECK(strcmp(d, "1969-12-31 23:59 UTC") == 0);
  permit_web_format_date(INT64_MAX, d);
  CHECK(strcmp(d, "unknown date") == 0);
  permit_web_format_date(INT64_MIN, d);
  CHECK(strcmp(d, "unknown date") == 0);
}

static void test_headers_and_css(void) {
  size_t n = 0;
  int csp = 0, names = 0;
  while (permit_web_security_headers[n] != NULL) n++;
  CHECK(n == 12);
  for (size_t i = 0; i + 1 < n; i += 2) {
    const char *name = permit_web_security_headers[i];
    for (const char *c = name; *c; c++) CHECK(!isupper((unsigned char)*c));
    if (strcmp(name, "content-security-policy") == 0) {
      csp = strcmp(permit_web_security_headers[i + 1],
                   "default-src 'none'; style-src 'self'; form-action "
                   "'self'; frame-ancestors 'none'; base-uri 'none'") == 0;
    }
    names += (strcmp(name, "x-content-type-options") == 0 &&
              strcmp(permit_web_security_headers[i + 1], "nosniff") == 0) +
             (strcmp(name, "referrer-policy") == 0 &&
              strcmp(permit_web_security_headers[i + 1], "same-origin") == 0) +
             (strcmp(name, "cache-control") == 0 &&
              strcmp(permit_web_security_headers[i + 1], "no-store") == 0) +
             (strcmp(name, "x-frame-options") == 0 &&
              strcmp(permit_web_security_headers[i + 1], "DENY") == 0) +
             (strcmp(name, "cross-origin-opener-policy") == 0 &&
              strcmp(permit_web_security_headers[i + 1], "same-origin") == 0);
  }
  CHECK(csp == 1 && names == 5);

  size_t len = 0;
  const char *css = permit_web_css(&len);
  CHECK(css != NULL && len > 100 && strlen(css) == len);
  CHECK(strstr(css, "</") == NULL && strstr(css, "url(") == NULL &&
        strstr(css, "@import") == NULL);
  CHECK(permit_web_css(NULL) == css);
}

static const permit_consent_item sample_items[] = {
    {"fillmore.example", "newsletter", "The Fillmore News",
     "We send you one email a week.\nUnsubscribe any time.", 3, JOINED_MS,
     "active", 0, "00112233445566778899aabbccddeeff"},
    {"bluenote.example", "jazz", NULL, NULL, 1, JOINED_MS - 86400000,
     "withdrawn", JOINED_MS + 3600000, "ffeeddccbbaa99887766554433221100"},
    {"bluenote.example", "events", "", "Events", 2, JOINED_MS,
     "unsubscribed at the venue", JOINED_MS, "0123456789abcdef0123456789ABCDEF"},
    {"fillmore.example", "vip", "VIP", "VIP", 1, JOINED_MS, "erased",
     JOINED_MS, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
};

static void test_consent_page(void) {
  struct evbuffer *b = evbuffer_new();
  permit_consent_page p = {"tixly.example", "/c/TOKEN-abc_1", "csrf-value",
                           "You left The Fillmore News.", sample_items, 4};
  CHECK(permit_web_consent_page(b, &p) == 0);
  char *s = take(b);
  check_page(s, "consent");
  CHECK(strstr(s, "<title>Your mailing-list choices at tixly.example"
                  "</title>") != NULL);
  CHECK(strstr(s, "<h1>Your mailing-list choices at tixly.example</h1>") !=
        NULL);
  CHECK(strstr(s, "You left The Fillmore News.") != NULL);
  CHECK(count(s, "class=\"consent\"") == 4);
  CHECK(strstr(s, "class=\"consent\" data-record=\"00112233445566778899aabb"
                  "ccddeeff\" data-state=\"active\"") != NULL);
  CHECK(strstr(s, "data-record=\"ffeeddccbbaa99887766554433221100\" "
                  "data-state=\"withdrawn\"") != NULL);
  CHECK(strstr(s, "data-state=\"unsubscribed at the venue\"") != NULL);
  CHECK(strstr(s, "data-state=\"erased\"") != NULL);
  /* A withdraw form for the active item only. */
  CHECK(count(s, "class=\"withdraw\"") == 1);
  CHECK(count(s, "action=\"/c/TOKEN-abc_1/withdraw\"") == 1);
  CHECK(strstr(s, "<input type=\"hidden\" name=\"record\" value=\"00112233445"
                  "566778899aabbccddeeff\">") != NULL);
  CHECK(count(s, "name=\"record\"") == 1);
  const char *form = strstr(s, "action=\"/c/TOKEN-abc_1/withdraw\"");
  const char *card = strstr(s, "data-record=\"00112233445566778899aabb");
  const char *next = strstr(s, "data-record=\"ffeedd");
  CHECK(form != NULL && card != NULL && next != NULL && card < form &&
        form < next);
  /* Titles, list ids, dates, notices. */
  CHECK(strstr(s, "The Fillmore News") != NULL);
  CHECK(strstr(s, "<p class=\"list\">jazz</p>") != NULL);
  CHECK(strstr(s, "<p class=\"list\">events</p>") != NULL);
  CHECK(strstr(s, "Joined 2026-11-22 19:53 UTC") != NULL);
  CHECK(strstr(s, "Joined 2026-11-21 19:53 UTC") != NULL);
  CHECK(strstr(s, "since 2026-11-22 20:53 UTC") != NULL);
  CHECK(strstr(s, "(version 3)") != NULL);
  CHECK(strstr(s, "We send you one email a week.\nUnsubscribe any time.") !=
        NULL);
  CHECK(strstr(s, "not available") != NULL);
  CHECK(count(s, "<details>") == 4);
  /* The erase form, with the csrf field in every form. */
  CHECK(count(s, "id=\"erase\"") == 1);
  CHECK(count(s, "action=\"/c/TOKEN-abc_1/erase-confirm\"") == 1);
  CHECK(count(s, "<form method=\"post\"") == 2);
  CHECK(count(s, "<input type=\"hidden\" name=\"csrf\" value=\"csrf-value\">") ==
        2);
  free(s);

  /* No items: a sentence, no withdraw form, still the erase form. */
  permit_consent_page empty = {"tixly.example", "/c/t", "x", NULL, NULL, 0};
  CHECK(permit_web_consent_page(b, &empty) == 0);
  s = take(b);
  check_page(s, "empty consent");
  CHECK(strstr(s, "You have no mailing-list sign-ups") != NULL);
  CHECK(count(s, "class=\"consent\"") == 0);
  CHECK(count(s, "class=\"withdraw\"") == 0);
  CHECK(count(s, "class=\"flash\"") == 0);
  CHECK(count(s, "id=\"erase\"") == 1);
  free(s);

  /* Refused, leaving the buffer as it was. */
  evbuffer_add(b, "x", 1);
  permit_consent_page q = p;
  const char *actions[] = {"//evil.example/c", "/\\evil.example", "c/t",
                           "https://evil.example/", "", NULL};
  for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
    q.action = actions[i];
    CHECKF(permit_web_consent_page(b, &q) == PERMIT_EINVAL, "action %zu", i);
  }
  q = p;
  q.csrf = NULL;
  CHECK(permit_web_consent_page(b, &q) == PERMIT_EINVAL);
  q = p;
  q.items = NULL;
  CHECK(permit_web_consent_page(b, &q) == PERMIT_EINVAL);
  permit_consent_item bad = sample_items[0];
  q = p;
  q.items = &bad;
  q.n = 1;
  const char *ids[] = {"0011", "00112233445566778899aabbccddeeff00",
                       "00112233445566778899aabbccddeefg", "\"><b>", NULL};
  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
    bad.record_id_hex = ids[i];
    CHECKF(permit_web_consent_page(b, &q) == PERMIT_EINVAL, "id %zu", i);
  }
  bad = sample_items[0];
  bad.state = NULL;
  CHECK(permit_web_consent_page(b, &q) == PERMIT_EINVAL);
  CHECK(permit_web_consent_page(b, NULL) == PERMIT_EINVAL);
  CHECK(evbuffer_get_length(b) == 1);
  evbuffer_free(b);
}

static void test_other_pages(void) {
  struct evbuffer *b = evbuffer_new();
  char *s;
  CHECK(permit_web_erase_confirm_page(b, "tixly.example", "/c/T", "k") == 0);
  s = take(b);
  check_page(s, "erase confirm");
  CHECK(strstr(s, "cannot be undone") != NULL);
  CHECK(count(s, "<form method=\"post\" action=\"/c/T/erase\">") == 1);
  CHECK(strstr(s, "<input type=\"hidden\" name=\"confirm\" value=\"yes\">") !=
        NULL);
  CHECK(strstr(s, "<input type=\"hidden\" name=\"csrf\" value=\"k\">") != NULL);
  CHECK(count(s, "id=\"erase-confirm\"") == 1);
  CHECK(strstr(s, "<a class=\"button\" href=\"/c/T\">") != NULL);
  free(s);
  CHECK(permit_web_erase_confirm_page(b, "n", "//x", "k") == PERMIT_EINVAL);
  CHECK(permit_web_erase_confirm_page(b, "n", "/c/T", NULL) == PERMIT_EINVAL);

  CHECK(permit_web_message_page(b, "Link expired", "Ask for a new one.",
                                NULL) == 0);
  s = take(b);
  check_page(s, "message");
  CHECK(strstr(s, "<h1>Link expired</h1>") != NULL);
  CHECK(strstr(s, "Ask for a new one.") != NULL);
  CHECK(strstr(s, "<a ") == NULL);
  free(s);
  CHECK(permit_web_message_page(b, "Done", "You left.", "/c/T") == 0);
  s = take(b);
  check_page(s, "message with link");
  CHECK(strstr(s, "<a href=\"/c/T\">Back</a>") != NULL);
  free(s);
  CHECK(permit_web_message_page(b, "t", "x", "javascript:alert(1)") ==
        PERMIT_EINVAL);
  CHECK(permit_web_message_page(b, NULL, "x", NULL) == PERMIT_EINVAL);

  CHECK(permit_web_unsubscribe_page(b, "fillmore.example", "News", "/u/T", 0) ==
        0);
  s = take(b);
  check_page(s, "unsubscribe");
  CHECK(count(s, "<form method=\"post\" action=\"/u/T\">") == 1);
  CHECK(strstr(s, "<input type=\"hidden\" name=\"List-Unsubscribe\" "
                  "value=\"One-Click\">") != NULL);
  CHECK(count(s, "id=\"unsubscribe\"") == 1);
  CHECK(strstr(s, "News") != NULL && strstr(s, "fillmore.example") != NULL);
  free(s);
  CHECK(permit_web_unsubscribe_page(b, "fillmore.example", NULL, "/u/T", 1) ==
        0);
  s = take(b);
  check_page(s, "unsubscribed");
  CHECK(strstr(s, "You are unsubscribed") != NULL);
  CHECK(strstr(s, "<form") == NULL);
  CHECK(strstr(s, "this list") != NULL);
  free(s);
  CHECK(permit_web_unsubscribe_page(b, "v", "l", "u/T", 0) == PERMIT_EINVAL);
  CHECK(evbuffer_get_length(b) == 0);
  evbuffer_free(b);
}

/* Every caller string set to hostile text: shown escaped, never markup. */
static void test_hostile_strings(void) {
  const char *evils[] = {EVIL, EVIL_ATTR};
  for (size_t e = 0; e < 2; e++) {
    const char *x = evils[e];
    struct evbuffer *b = evbuffer_new();
    permit_consent_item items[2] = {
        {x, x, x, x, 1, JOINED_MS, "active", 0,
         "00112233445566778899aabbccddeeff"},
        {x, x, NULL, x, 1, JOINED_MS, x, JOINED_MS,
         "00112233445566778899aabbccddeef0"}};
    permit_consent_page p = {x, "/c/<script>\"'", x, x, items, 2};
    char action[64];
    snprintf(action, sizeof action, "/%s", x);
    char *pages[6];
    CHECK(permit_web_consent_page(b, &p) == 0);
    pages[0] = take(b);
    CHECK(permit_web_erase_confirm_page(b, x, action, x) == 0);
    pages[1] = take(b);
    CHECK(permit_web_message_page(b, x, x, action) == 0);
    pages[2] = take(b);
    CHECK(permit_web_unsubscribe_page(b, x, x, action, 0) == 0);
    pages[3] = take(b);
    CHECK(permit_web_unsubscribe_page(b, x, x, action, 1) == 0);
    pages[4] = take(b);
    CHECK(permit_web_unsubscribe_page(b, x, NULL, action, 0) == 0);
    pages[5] = take(b);
    for (int i = 0; i < 6; i++) {
      char what[32];
      snprintf(what, sizeof what, "hostile %zu page %d", e, i);
      check_page(pages[i], what);
      CHECKF(strstr(pages[i], x) == NULL, "%s", what);
      if (e == 0) CHECKF(strstr(pages[i], EVIL_ESC) != NULL, "%s", what);
      free(pages[i]);
    }
    evbuffer_free(b);
  }
}

/* Parses |body| into |f|; returns the result. */
static int parse(const char *body, permit_form_field *f, size_t cap,
                 size_t *n) {
  permit_err err = {0};
  int rc = permit_form_parse((const uint8_t *)body, strlen(body), f, cap, n,
                             &err);
  if (rc != 0) CHECK(err.msg[0] != '\0' && err.code == rc);
  return rc;
}

static void test_form(void) {
  permit_form_field f[4];
  size_t n = 99;
  CHECK(parse("csrf=abc&record=00ff", f, 4, &n) == 0 && n == 2);
  CHECK(strcmp(permit_form_get(f, n, "csrf"), "abc") == 0);
  CHECK(strcmp(permit_form_get(f, n, "record"), "00ff") == 0);
  CHECK(permit_form_get(f, n, "confirm") == NULL);
  CHECK(permit_form_get(f, n, "CSRF") == NULL);
  CHECK(permit_form_get(NULL, 0, "csrf") == NULL);

  /* '+' and %20 are spaces; escapes in either case; '=' in a value. */
  CHECK(parse("a=one+two%20three&b=%3d%3D%26%2B&c=x=y", f, 4, &n) == 0 &&
        n == 3);
  CHECK(strcmp(permit_form_get(f, n, "a"), "one two three") == 0);
  CHECK(strcmp(permit_form_get(f, n, "b"), "==&+") == 0);
  CHECK(strcmp(permit_form_get(f, n, "c"), "x=y") == 0);
  /* RFC 8058's body; an empty value; escaped UTF-8. */
  CHECK(parse("List-Unsubscribe=One-Click", f, 4, &n) == 0 && n == 1 &&
        strcmp(permit_form_get(f, n, "List-Unsubscribe"), "One-Click") == 0);
  CHECK(parse("a=&b=%C3%A9", f, 4, &n) == 0 && n == 2 &&
        strcmp(permit_form_get(f, n, "a"), "") == 0 &&
        strcmp(permit_form_get(f, n, "b"), "\xc3\xa9") == 0);
  /* Empty body: no fields. */
  n = 99;
  CHECK(parse("", f, 4, &n) == 0 && n == 0);
  CHECK(permit_form_parse(NULL, 0, f, 4, &n, NULL) == 0 && n == 0);

  static const char *invalid[] = {
      "a=%zz",           /* not hex */
      "a=%4",            /* cut short */
      "a=%",             /* cut short */
      "a%=1",            /* in a name */
      "a=%00",           /* NUL */
      "a=%0A",           /* line break */
      "a=%7F",           /* DEL */
      "a=%C2%85",        /* C1 control (NEL) */
      "a=%C3",           /* cut UTF-8 */
      "a=%C0%AF",        /* overlong */
      "a=%ED%A0%80",     /* surrogate */
      "a=%F4%90%80%80",  /* past U+10FFFF */
      "a=%FF",           /* never UTF-8 */
      "a=1&a=2",         /* duplicate */
      "a=1&b=2&a=3",     /* duplicate */
      "a",               /* no '=' */
      "a=1&b",           /* no '=' */
      "=1",              /* no name */
      "a=1&",            /* trailing '&' */
      "&a=1",            /* leading '&' */
      "a=1&&b=2",        /* empty field */
      "&",               /* empty field */
      "a=\t",            /* a raw control character */
  };
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
    CHECKF(parse(invalid[i], f, 4, &n) == PERMIT_EINVAL, "case %zu: %s", i,
           invalid[i]);

  /* Bounds: name 31 bytes fits, 32 does not; value 255 and 256. */
  char body[PERMIT_FORM_BODY_MAX + 2];
  memset(body, 'n', 31);
  strcpy(body + 31, "=v");
  CHECK(parse(body, f, 4, &n) == 0 && n == 1 && strlen(f[0].name) == 31);
  memset(body, 'n', 32);
  strcpy(body + 32, "=v");
  CHECK(parse(body, f, 4, &n) == PERMIT_ETOOBIG);
  strcpy(body, "v=");
  memset(body + 2, 'x', 255);
  body[257] = '\0';
  CHECK(parse(body, f, 4, &n) == 0 && strlen(f[0].value) == 255);
  strcpy(body + 257, "x");
  CHECK(parse(body, f, 4, &n) == PERMIT_ETOOBIG);
  /* 255 decoded bytes written as 765 escaped ones still fit. */
  strcpy(body, "v=");
  for (int i = 0; i < 255; i++) memcpy(body + 2 + 3 * i, "%41", 3);
  body[2 + 3 * 255] = '\0';
  CHECK(parse(body, f, 4, &n) == 0 && strlen(f[0].value) == 255 &&
        f[0].value[0] == 'A');
  /* Fields beyond |cap|. */
  CHECK(parse("a=1&b=2&c=3&d=4", f, 4, &n) == 0 && n == 4);
  CHECK(parse("a=1&b=2&c=3&d=4&e=5", f, 4, &n) == PERMIT_ETOOBIG);
  CHECK(parse("a=1", f, 0, &n) == PERMIT_ETOOBIG);
  /* The body bound: 8 KiB is parsed, one byte more is not. */
  memset(body, 0, sizeof body);
  strcpy(body, "v=");
  memset(body + 2, '+', PERMIT_FORM_BODY_MAX - 2);
  CHECK(parse(body, f, 4, &n) == PERMIT_ETOOBIG); /* value over 255 */
  body[PERMIT_FORM_BODY_MAX] = '+';
  permit_err err = {0};
  CHECK(permit_form_parse((const uint8_t *)body, PERMIT_FORM_BODY_MAX + 1, f,
                          4, &n, &err) == PERMIT_ETOOBIG);
  CHECK(strstr(err.msg, "8192") != NULL);
  CHECK(permit_form_parse((const uint8_t *)"a=1", 3, f, 4, NULL, NULL) ==
        PERMIT_EINVAL);
  /* A message never quotes the body (it may hold personal data). */
  CHECK(permit_form_parse((const uint8_t *)"secret%zz=1", 11, f, 4, &n,
                          &err) == PERMIT_EINVAL);
  CHECK(strstr(err.msg, "secret") == NULL);
}

static void test_same_origin(void) {
  const char *own = "https://127.0.0.1:8443";
  static const struct {
    const char *origin, *site;
    int want;
  } v[] = {
      {NULL, NULL, 1},
      {"", "", 1},
      {"https://127.0.0.1:8443", "", 1},
      {"https://127.0.0.1:8443", "same-origin", 1},
      {"HTTPS://127.0.0.1:8443", "same-origin", 1},
      {"", "same-origin", 1},
      {"", "none", 1},
      {"https://127.0.0.1:8443", "same-site", 0},
      {"https://127.0.0.1:8443", "cross-site", 0},
      {"", "cross-site", 0},
      {"", "same-site", 0},
      {"", "bogus", 0},
      {"null", "", 0},
      {"null", "same-origin", 0},
      {"https://evil.example", "", 0},
      {"https://evil.example", "same-origin", 0},
      {"http://127.0.0.1:8443", "same-origin", 0},
      {"https://127.0.0.1:8444", "", 0},
      {"https://127.0.0.1", "", 0},
      {"https://127.0.0.1:8443/", "", 0},
      {"https://127.0.0.1:84430", "", 0},
      {"https://127.0.0.1:8443.evil.example", "", 0},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    CHECKF(permit_web_same_origin(v[i].origin, v[i].site, own) == v[i].want,
           "case %zu", i);
  CHECK(permit_web_same_origin("https://a.example", "", "HTTPS://A.EXAMPLE") ==
        1);
  /* Without an own origin any Origin is refused; none at all still passes. */
  CHECK(permit_web_same_origin("https://a.example", "", NULL) == 0);
  CHECK(permit_web_same_origin("https://a.example", "", "") == 0);
  CHECK(permit_web_same_origin("", "", NULL) == 1);
}

int main(void) {
  test_tags_ok();
  test_escape();
  test_date();
  test_headers_and_css();
  test_consent_page();
  test_other_pages();
  test_hostile_strings();
  test_form();
  test_same_origin();
  return test_finish("test_web");
}
