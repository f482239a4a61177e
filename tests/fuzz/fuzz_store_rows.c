/*
 * fuzz_store_rows - the protobuf rows a node keeps and reads back (a
 * venue's contacts and change feed, the consent centre's entries, the
 * sealed Contact's plaintext, a venue's stored lists), and the consent
 * page drawn from peer-supplied strings.  A damaged database, or a peer
 * whose strings reach these rows, must not crash the node.
 *
 * Input: kind (1) || row.  kind % 5: 0 StoredContact, 1 ContactFeedEntry,
 * 2 ConsentEntry, 3 Contact, 4 CatalogList.
 *
 * A row that decodes must hold what the services assume without checking
 * (every string non-NULL, bytes with data behind their length) and, when
 * it has no unknown fields, encode again to bytes that decode to the same
 * encoding.  The strings of
 * consent entries and lists then fill a consent-centre page, whose markup
 * (the count of < > " ') must not depend on them: they are escaped.
 */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "permit/error.h"
#include "permit/v1/venue_store.pb-c.h"
#include "permit/v1/service.pb-c.h"
#include "permit/web.h"

static const ProtobufCMessageDescriptor *const kinds[] = {
    &permit__internal__stored_contact__descriptor,
    &permit__internal__contact_feed_entry__descriptor,
    &permit__internal__consent_entry__descriptor,
    &permit__v1__contact__descriptor,
    &permit__v1__catalog_list__descriptor};

/* Every string and bytes field of |m| is usable as the services use it. */
static void check_fields(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *at = (const char *)m + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) continue;
    if (f->type == PROTOBUF_C_TYPE_STRING) {
      const char *s;
      memcpy(&s, at, sizeof s);
      FUZZ_CHECK(s != NULL);
      (void)strlen(s); /* ASan checks the terminator is in bounds */
    } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
      ProtobufCBinaryData b;
      memcpy(&b, at, sizeof b);
      FUZZ_CHECK(b.len == 0 || b.data != NULL);
      if (b.len > 0) (void)((volatile const uint8_t *)b.data)[b.len - 1];
    }
  }
}

static size_t count_markup(struct evbuffer *b) {
  size_t len = evbuffer_get_length(b), n = 0;
  const char *p = (const char *)evbuffer_pullup(b, -1);
  for (size_t i = 0; i < len; i++)
    n += p[i] == '<' || p[i] == '>' || p[i] == '"' || p[i] == '\'';
  return n;
}

/* A copy of |s| with each character that HTML cares about made 'x'
 * (NULL for NULL). */
static char *defanged(const char *s) {
  if (s == NULL) return NULL;
  char *d = strdup(s);
  if (d == NULL) abort();
  for (char *p = d; *p != '\0'; p++)
    if (strchr("<>\"'&", *p) != NULL) *p = 'x';
  return d;
}

static int render(const char *venue, const char *list_id, const char *title,
                  const char *notice, const char *state,
                  struct evbuffer *out) {
  permit_consent_item it = {
      .venue = venue,
      .list_id = list_id,
      .list_title = title,
      .notice_text = notice,
      .notice_version = 3,
      .collected_at_ms = 1767225600000,
      .state = state,
      .changed_at_ms = 0,
      .record_id_hex = "5e110ca70102030405060708090a0b0c"};
  permit_consent_page p = {.node_name = venue,
                           .action = "/c/token",
                           .csrf = list_id,
                           .flash = title,
                           .items = &it,
                           .n = 1};
  return permit_web_consent_page(out, &p);
}

/* The page's markup is the same with the strings as with their defanged
 * copies. */
static void page(const char *venue, const char *list_id, const char *title,
                 const char *notice, const char *state) {
  struct evbuffer *a = evbuffer_new(), *b = evbuffer_new();
  if (a == NULL || b == NULL) abort();
  char *v = defanged(venue), *l = defanged(list_id), *t = defanged(title),
       *n = defanged(notice), *s = defanged(state);
  int rc = render(venue, list_id, title, notice, state, a);
  int rc2 = render(v, l, t, n, s, b);
  FUZZ_CHECK(rc == rc2);
  if (rc == 0) FUZZ_CHECK(count_markup(a) == count_markup(b));
  free(v), free(l), free(t), free(n), free(s);
  evbuffer_free(a);
  evbuffer_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_reader r;
  fuzz_reader_init(&r, data, size);
  uint8_t kind = fuzz_u8(&r) % 5;
  size_t len;
  const uint8_t *row = fuzz_rest(&r, &len);
  ProtobufCMessage *m = protobuf_c_message_unpack(kinds[kind], NULL, len, row);
  if (m == NULL) return 0;
  check_fields(m);

  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *again = malloc(n ? n : 1);
  if (again == NULL) abort();
  FUZZ_CHECK(protobuf_c_message_pack(m, again) == n);
  /* Unknown fields are kept as read, and protobuf-c reads some it cannot
   * write back (field number 0 in an over-long tag: see
   * regressions/store_rows/); no row the node writes has any. */
  if (m->n_unknown_fields == 0) {
    ProtobufCMessage *m2 =
        protobuf_c_message_unpack(kinds[kind], NULL, n, again);
    FUZZ_CHECK(m2 != NULL);
    size_t n2 = protobuf_c_message_get_packed_size(m2);
    uint8_t *third = malloc(n2 ? n2 : 1);
    if (third == NULL) abort();
    protobuf_c_message_pack(m2, third);
    FUZZ_CHECK(n2 == n && memcmp(third, again, n) == 0);
    free(third);
    protobuf_c_message_free_unpacked(m2, NULL);
  }
  free(again);

  if (kind == 2) {
    const Permit__Internal__ConsentEntry *e =
        (const Permit__Internal__ConsentEntry *)m;
    page(e->venue, e->list_id, "", NULL, e->state);
  } else if (kind == 4) {
    const Permit__V1__CatalogList *l = (const Permit__V1__CatalogList *)m;
    page("fillmore.example", l->list_id, l->title, l->notice_text, "active");
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}
