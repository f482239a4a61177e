/*
 * venue.c - permit.v1.Venue, the venue's local API: define lists, stream
 * the contacts of a list decrypted, and watch contact changes live.
 *
 * Streams produce while the call's queue has room and resume from
 * on_writable, so a slow reader holds only a bounded queue.  Each worker
 * keeps its own list of WatchContacts calls; when the sync has applied a
 * batch, a notifier runs on every worker and each watcher sends what is
 * new since its last change.
 *
 * Unsubscribes (the Unsubscribe call, and the one-click link every
 * exported contact carries, RFC 8058) run on the sync thread, the single
 * writer of the contacts: the row becomes "withdrawn" and a Withdrawal
 * (UNSUBSCRIBED_AT_VENUE) goes into this node's log to the issuer, in
 * one synced batch, before the answer.
 */
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/consent.h"
#include "permit/contacts.h"
#include "permit/job.h"
#include "permit/logging.h"
#include "permit/node_services.h"
#include "permit/token.h"
#include "permit/util.h"
#include "permit/web.h"

#define TOKEN_KIND_UNSUBSCRIBE 'u'
#define URL_MAX 1024

typedef struct watcher {
  permit_call *call;
  uint64_t last; /* the last change sent */
} watcher;

typedef struct lister {
  char list_id[PERMIT_LIST_ID_MAX + 1];
  int include_withdrawn;
  int defined; /* the list exists on this node */
  uint64_t sent;
  permit_contacts_cursor cursor;
} lister;

struct permit_venue {
  permit_node *n;
  permit_server *srv;
  permit_sync *sync;
  permit_call_list *watchers; /* WatchContacts calls, per worker */
};

/* ---- one-click links ---- */

/* The token's context names the node, list and issuer; hashed, as the
 * three together may be longer than a context can be. */
static void unsub_context(permit_node *n, const char *list_id,
                          const char *issuer, char *out, size_t cap) {
  const char *name = permit_node_name(n);
  permit_iov parts[6] = {{"unsubscribe\n", 12}, {name, strlen(name)},
                         {"\n", 1},             {list_id, strlen(list_id)},
                         {"\n", 1},             {issuer, strlen(issuer)}};
  uint8_t h[PERMIT_SHA256_LEN];
  if (cap < 2 * sizeof h + 1 || permit_sha256(parts, 6, h) != 0) {
    snprintf(out, cap, "-");
    return;
  }
  permit_hex_encode(h, sizeof h, out);
}

/* <base>/u/<list>/<issuer>/<token>: the token MACs the subject with the
 * list and issuer; it does not expire (old emails keep working) but dies
 * with a rotation of the link secret.  "" when it cannot be made. */
static void unsubscribe_url(permit_node *n, const char *list_id,
                            const char *issuer, const ProtobufCBinaryData *subject,
                            char *out, size_t cap) {
  out[0] = '\0';
  if (subject->len != PERMIT_SUBJECT_LEN) return;
  uint8_t secret[32];
  char ctx[PERMIT_TOKEN_CONTEXT_MAX + 1], token[PERMIT_TOKEN_MAX];
  permit_node_token_secret(n, secret);
  unsub_context(n, list_id, issuer, ctx, sizeof ctx);
  int rc = permit_token_make(secret, ctx, TOKEN_KIND_UNSUBSCRIBE, 0,
                             subject->data, subject->len, token,
                             sizeof token);
  permit_wipe(secret, sizeof secret);
  if (rc != 0) return;
  const char *base = permit_node_consent_base(n);
  size_t bl = strlen(base);
  while (bl > 0 && base[bl - 1] == '/') bl--;
  int w = bl > 0 ? snprintf(out, cap, "%.*s/u/%s/%s/%s", (int)bl, base,
                            list_id, issuer, token)
                 : snprintf(out, cap, "https://%s/u/%s/%s/%s",
                            permit_node_name(n), list_id, issuer, token);
  if (w < 0 || (size_t)w >= cap) out[0] = '\0';
}

/* Queues |m| packed on |c|; wipes the copy (it may hold a contact). */
static int send_msg(permit_call *c, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) return PERMIT_ENOMEM;
  protobuf_c_message_pack(m, buf);
  int rc = permit_call_send(c, buf, n);
  permit_wipe(buf, n);
  free(buf);
  return rc;
}

static int grpc_code(int rc) {
  switch (rc) {
  case PERMIT_EINVAL: return PERMIT_GRPC_INVALID_ARGUMENT;
  case PERMIT_ENOTFOUND: return PERMIT_GRPC_NOT_FOUND;
  case PERMIT_ETOOBIG: return PERMIT_GRPC_RESOURCE_EXHAUSTED;
  case PERMIT_ENOMEM: return PERMIT_GRPC_RESOURCE_EXHAUSTED;
  case PERMIT_EPERM: return PERMIT_GRPC_PERMISSION_DENIED;
  case PERMIT_ECORRUPT: return PERMIT_GRPC_DATA_LOSS;
  default: return PERMIT_GRPC_INTERNAL;
  }
}

/* ---- DefineList ---- */

/* A DefineList request on its way through the sync thread, which does
 * the synced write so that the worker's other calls do not wait on it. */
typedef struct define_op {
  permit_node *n;
  permit_job *job; /* NULL: run on the worker (no sync thread) */
  Permit__V1__DefineListRequest *req;
  int cancelled, rc, changed;
  permit_err err;
  Permit__V1__CatalogList l;
} define_op;

static void define_free(void *p) {
  define_op *op = p;
  permit_catalog_list_clear(&op->l);
  permit__v1__define_list_request__free_unpacked(op->req, NULL);
  free(op);
}

static void define_work(void *arg, int cancelled) {
  define_op *op = arg;
  op->cancelled = cancelled;
  if (!cancelled)
    op->rc = permit_node_define_list(op->n, op->req->list_id, op->req->title,
                                     op->req->notice_text, &op->changed,
                                     &op->l, &op->err);
  if (op->job != NULL) permit_job_done(op->job);
}

static void define_answer(permit_call *c, void *data) {
  define_op *op = data;
  if (op->cancelled) {
    permit_call_finish(c, PERMIT_GRPC_UNAVAILABLE,
                       "the node is stopping; retry");
    return;
  }
  if (op->rc != 0) {
    permit_call_finish(c, grpc_code(op->rc), "%s", op->err.msg);
    return;
  }
  Permit__V1__DefineListResponse resp = PERMIT__V1__DEFINE_LIST_RESPONSE__INIT;
  resp.notice_version = op->l.notice_version;
  resp.notice_sha256 = op->l.notice_sha256;
  resp.changed = op->changed != 0;
  if (send_msg(c, &resp.base) != 0)
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
  else
    permit_call_finish(c, PERMIT_GRPC_OK, NULL);
  permit_logf(PERMIT_LEVEL_INFO, "venue.list_defined",
              "list %s: notice version %u%s", op->req->list_id,
              op->l.notice_version, op->changed ? " (new)" : "");
}

static void define_list(permit_call *c, const uint8_t *msg, size_t len) {
  permit_venue *v = permit_call_method_arg(c);
  if (permit_call_refuse_nul(c, &permit__v1__define_list_request__descriptor,
                             msg, len))
    return;
  Permit__V1__DefineListRequest *req =
      permit__v1__define_list_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a DefineListRequest");
    return;
  }
  if (!permit_contacts_text_ok(req->title, strlen(req->title), 0) ||
      !permit_contacts_text_ok(req->notice_text, strlen(req->notice_text),
                               1)) {
    permit__v1__define_list_request__free_unpacked(req, NULL);
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "title and notice text must be UTF-8 without control "
                       "characters");
    return;
  }
  define_op *op = calloc(1, sizeof *op);
  if (op == NULL) {
    permit__v1__define_list_request__free_unpacked(req, NULL);
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  op->n = v->n;
  op->req = req;
  permit__v1__catalog_list__init(&op->l);
  if (v->sync == NULL) {
    /* No sync thread on this node: the write is done here. */
    define_work(op, 0);
    define_answer(c, op);
    define_free(op);
    return;
  }
  op->job = permit_job_new(c, define_answer, define_free, op);
  if (op->job == NULL) {
    define_free(op);
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (permit_sync_submit(v->sync, define_work, op) != 0) {
    permit_job *j = op->job;
    permit_call_set_data(c, NULL);
    permit_call_finish(c, PERMIT_GRPC_UNAVAILABLE,
                       "the node is stopping; retry");
    permit_job_abandon(j);
    permit_job_closed(j);
  }
}

static void define_close(permit_call *c, int cancelled) {
  (void)cancelled;
  permit_job_closed(permit_call_data(c));
}

/* ---- ListContacts ---- */

static int list_visit(void *arg, const Permit__V1__ContactEntry *e) {
  permit_call *c = arg;
  permit_venue *v = permit_call_method_arg(c);
  lister *ls = permit_call_data(c);
  Permit__V1__ContactEntry copy = *e;
  char url[URL_MAX];
  if (strcmp(e->status, "active") == 0) {
    unsubscribe_url(v->n, e->list_id, e->issuer, &e->subject, url,
                    sizeof url);
    copy.unsubscribe_url = url;
  }
  int rc = send_msg(c, &copy.base);
  if (rc != 0) return rc;
  ls->sent++;
  return permit_call_full(c) ? 1 : 0;
}

static void list_produce(permit_call *c) {
  permit_venue *v = permit_call_method_arg(c);
  lister *ls = permit_call_data(c);
  if (ls == NULL || permit_call_finished(c) || permit_call_full(c)) return;
  permit_err err = {0};
  int rc = permit_contacts_list(permit_node_store(v->n), ls->list_id,
                                ls->include_withdrawn, &ls->cursor,
                                list_visit, c, &err);
  if (rc > 0) return; /* full: on_writable goes on */
  if (rc < 0)
    permit_call_finish(c, grpc_code(rc), "listing contacts: %s",
                       err.msg[0] ? err.msg : permit_strerror(rc));
  else if (ls->sent == 0 && !ls->defined)
    permit_call_finish(c, PERMIT_GRPC_NOT_FOUND,
                       "no list \"%s\" on this node", ls->list_id);
  else
    permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

static void list_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_venue *v = permit_call_method_arg(c);
  Permit__V1__ListContactsRequest *req =
      permit__v1__list_contacts_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a ListContactsRequest");
    return;
  }
  permit_err err;
  if (permit_list_id_validate(req->list_id, &err) != 0) {
    permit__v1__list_contacts_request__free_unpacked(req, NULL);
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT, "%s", err.msg);
    return;
  }
  lister *ls = calloc(1, sizeof *ls);
  if (ls == NULL) {
    permit__v1__list_contacts_request__free_unpacked(req, NULL);
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  snprintf(ls->list_id, sizeof ls->list_id, "%s", req->list_id);
  ls->include_withdrawn = req->include_withdrawn;
  permit__v1__list_contacts_request__free_unpacked(req, NULL);
  char title[256]; /* titles are at most 200 bytes */
  ls->defined =
      permit_node_list_title(v->n, ls->list_id, title, sizeof title) == 0;
  permit_call_set_data(c, ls);
  list_produce(c);
}

static void list_close(permit_call *c, int cancelled) {
  (void)cancelled;
  free(permit_call_data(c));
  permit_call_set_data(c, NULL);
}

/* ---- WatchContacts ---- */

static int watch_visit(void *arg, const Permit__V1__ContactChange *ch) {
  permit_call *c = arg;
  permit_venue *v = permit_call_method_arg(c);
  watcher *w = permit_call_data(c);
  Permit__V1__ContactChange copy = *ch;
  Permit__V1__ContactEntry e;
  char url[URL_MAX];
  if (ch->contact != NULL && strcmp(ch->contact->status, "active") == 0) {
    e = *ch->contact;
    unsubscribe_url(v->n, e.list_id, e.issuer, &e.subject, url, sizeof url);
    e.unsubscribe_url = url;
    copy.contact = &e;
  }
  int rc = send_msg(c, &copy.base);
  if (rc != 0) return rc;
  w->last = ch->change;
  /* An erased contact is handed over once, then forgotten for good. */
  if (ch->contact != NULL && strcmp(ch->contact->status, "erased") == 0 &&
      ch->contact->email[0] != '\0') {
    permit_err err = {0};
    if (permit_contacts_farewell_forget(permit_node_store(v->n), ch->change,
                                        &err) != 0)
      permit_logf(PERMIT_LEVEL_ERROR, "contacts.forget_failed", "%s",
                  err.msg);
  }
  return permit_call_full(c) ? 1 : 0;
}

/* Sends what changed since the watcher's last change, while it has room. */
static void watch_produce(permit_venue *v, watcher *w) {
  permit_call *c = w->call;
  if (permit_call_finished(c) || permit_call_full(c)) return;
  permit_err err = {0};
  int rc = permit_contacts_changes(permit_node_store(v->n), w->last,
                                   watch_visit, c, &err);
  if (rc < 0)
    permit_call_finish(c, grpc_code(rc), "reading changes: %s",
                       err.msg[0] ? err.msg : permit_strerror(rc));
}

static void watch_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_venue *v = permit_call_method_arg(c);
  Permit__V1__WatchContactsRequest *req =
      permit__v1__watch_contacts_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not a WatchContactsRequest");
    return;
  }
  uint64_t since = req->since;
  permit__v1__watch_contacts_request__free_unpacked(req, NULL);
  /* A cursor past the feed's head (a tool's stale or restored state)
   * would wait silently and skip every change up to it. */
  uint64_t head = 0;
  permit_err err = {0};
  int hrc = permit_contacts_head(permit_node_store(v->n), &head, &err);
  if (hrc != 0) {
    permit_call_finish(c, grpc_code(hrc), "reading the change feed: %s",
                       err.msg[0] ? err.msg : permit_strerror(hrc));
    return;
  }
  if (since > head) {
    permit_call_finish(c, PERMIT_GRPC_OUT_OF_RANGE,
                       "since %llu is past the newest change, %llu: resume "
                       "from a change number this node gave",
                       (unsigned long long)since, (unsigned long long)head);
    return;
  }
  watcher *w = calloc(1, sizeof *w);
  if (w == NULL) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  w->call = c;
  w->last = since;
  permit_call_list_add(v->watchers, c);
  permit_call_set_data(c, w);
  watch_produce(v, w);
}

static void watch_writable(permit_call *c) {
  watcher *w = permit_call_data(c);
  if (w != NULL) watch_produce(permit_call_method_arg(c), w);
}

/* The server has taken the call off the list already. */
static void watch_close(permit_call *c, int cancelled) {
  (void)cancelled;
  free(permit_call_data(c));
  permit_call_set_data(c, NULL);
}

static void notify_one(permit_call *c, void *arg) {
  watch_produce(arg, permit_call_data(c));
}

/* On worker |index|: every watcher there sends what is new. */
static void notify_worker(int index, void *arg) {
  permit_venue *v = arg;
  permit_call_list_each(v->watchers, index, notify_one, v);
}

/* permit_node_change_fn: on the sync thread, after a batch. */
static void on_change(void *arg) {
  permit_venue *v = arg;
  if (permit_server_on_workers(v->srv, notify_worker, v) != 0)
    permit_logf(PERMIT_LEVEL_WARN, "venue.notify_failed",
                "WatchContacts streams will hear of the change late");
}

/* ---- Unsubscribe ---- */

typedef struct unsub_op {
  permit_venue *v;
  permit_job *job;
  int web;
  char list_id[PERMIT_LIST_ID_MAX + 1];
  /* by email (the RPC), or one row (the link) */
  char email[PERMIT_CONTACT_EMAIL_MAX + 1];
  char issuer[PERMIT_NAME_MAX + 1];
  uint8_t subject[PERMIT_SUBJECT_LEN];
  /* the outcome */
  int status;
  char msg[256];
  int withdrawn;
} unsub_op;

static void unsub_free(void *p) {
  unsub_op *op = p;
  permit_wipe(op->email, sizeof op->email);
  free(op);
}

typedef struct unsub_extra {
  permit_contacts_txn *t;
} unsub_extra;

static int unsub_extra_fn(void *arg, uint64_t seq, permit_batch *b) {
  (void)seq;
  permit_contacts_txn_write(((unsub_extra *)arg)->t, b);
  return 0;
}

/* Unsubscribes (list, issuer, subject); sync thread.  0 or a gRPC
 * status with op->msg. */
static int unsub_one(unsub_op *op, const char *issuer,
                     const uint8_t subject[PERMIT_SUBJECT_LEN]) {
  permit_node *n = op->v->n;
  permit_store *st = permit_node_store(n);
  permit_contacts_txn *t = NULL;
  permit_err err = {0};
  uint8_t rid[PERMIT_RECORD_ID_LEN], id[PERMIT_RECORD_ID_LEN];
  uint8_t *entry = NULL;
  size_t len = 0;
  int applied = 0, status = PERMIT_GRPC_OK;
  if (permit_contacts_txn_new(st, &t, &err) != 0) {
    snprintf(op->msg, sizeof op->msg, "contacts cannot be read");
    return PERMIT_GRPC_INTERNAL;
  }
  int rc = permit_contacts_txn_unsubscribe(t, op->list_id, issuer, subject,
                                           rid, &applied, &err);
  if (rc == PERMIT_ENOTFOUND || (rc == 0 && !applied)) goto out;
  if (rc != 0) {
    snprintf(op->msg, sizeof op->msg, "contacts cannot be changed");
    permit_logf(PERMIT_LEVEL_ERROR, "venue.unsubscribe_failed", "%s",
                err.msg);
    status = PERMIT_GRPC_INTERNAL;
    goto out;
  }
  permit_log *log = permit_node_outbound(n, issuer);
  if (log == NULL || permit_random(id, sizeof id) != 0) {
    snprintf(op->msg, sizeof op->msg, "no log to %s", issuer);
    status = PERMIT_GRPC_INTERNAL;
    goto out;
  }
  int64_t now = permit_now_ms();
  Permit__V1__Withdrawal w = PERMIT__V1__WITHDRAWAL__INIT;
  w.refers_to.data = rid;
  w.refers_to.len = sizeof rid;
  w.reason =
      PERMIT__V1__WITHDRAWAL_REASON__WITHDRAWAL_REASON_UNSUBSCRIBED_AT_VENUE;
  w.withdrawn_at_ms = now;
  Permit__V1__Record rec = PERMIT__V1__RECORD__INIT;
  rec.record_id.data = id;
  rec.record_id.len = sizeof id;
  rec.issuer = (char *)permit_node_name(n);
  rec.audience = (char *)issuer;
  rec.list_id = op->list_id;
  rec.subject.data = (uint8_t *)subject;
  rec.subject.len = PERMIT_SUBJECT_LEN;
  rec.issued_at_ms = now;
  rec.kind_case = PERMIT__V1__RECORD__KIND_WITHDRAWAL;
  rec.withdrawal = &w;
  uint64_t seq = 0;
  unsub_extra ux = {t};
  if (permit_record_sign(&rec, permit_node_sign_key(n), &entry, &len, &err) !=
      0) {
    snprintf(op->msg, sizeof op->msg, "cannot sign the withdrawal");
    status = PERMIT_GRPC_INTERNAL;
  } else if (permit_log_append(log, entry, len, unsub_extra_fn, &ux, &seq,
                               &err) != 0) {
    snprintf(op->msg, sizeof op->msg,
             "the unsubscribe could not be stored durably; retry");
    permit_logf(PERMIT_LEVEL_ERROR, "venue.append_failed", "%s", err.msg);
    status = PERMIT_GRPC_UNAVAILABLE;
  } else {
    char hex[2 * PERMIT_RECORD_ID_LEN + 1];
    permit_hex_encode(rid, sizeof rid, hex);
    permit_logf(PERMIT_LEVEL_INFO, "venue.unsubscribed",
                "opt-in %s on list %s unsubscribed here: entry %llu to %s",
                hex, op->list_id, (unsigned long long)seq, issuer);
    op->withdrawn++;
    permit_node_grew(n, issuer);
    permit_node_changed(n);
  }
out:
  free(entry);
  permit_contacts_txn_free(t);
  return status;
}

static void unsub_work(void *arg, int cancelled) {
  unsub_op *op = arg;
  op->status = PERMIT_GRPC_OK;
  if (cancelled) {
    op->status = PERMIT_GRPC_UNAVAILABLE;
    snprintf(op->msg, sizeof op->msg, "the node is stopping; retry");
  } else if (op->email[0] == '\0') {
    op->status = unsub_one(op, op->issuer, op->subject);
  } else {
    /* The buyer's subject differs per issuer: try each. */
    permit_peer *peers = calloc(PERMIT_MAX_PEERS, sizeof *peers);
    size_t np = peers ? permit_node_peers(op->v->n, peers, PERMIT_MAX_PEERS)
                      : 0;
    if (np > PERMIT_MAX_PEERS) np = PERMIT_MAX_PEERS;
    if (peers == NULL) {
      op->status = PERMIT_GRPC_RESOURCE_EXHAUSTED;
      snprintf(op->msg, sizeof op->msg, "out of memory");
    }
    for (size_t i = 0; i < np && op->status == PERMIT_GRPC_OK; i++) {
      uint8_t subject[PERMIT_SUBJECT_LEN];
      if (!(peers[i].roles & PERMIT_ROLE_ISSUER) ||
          permit_subject(peers[i].pair_key, op->email, strlen(op->email),
                         subject) != 0)
        continue;
      op->status = unsub_one(op, peers[i].name, subject);
    }
    free(peers);
  }
  permit_job_done(op->job);
}

/* The unsubscribe page, or a 503 message when it cannot be made (never
 * an empty 200: a person would not know whether it worked). */
static void send_unsub_page(permit_call *c, permit_node *n,
                            const char *list_id, const char *action,
                            int done) {
  char title[512];
  if (permit_node_list_title(n, list_id, title, sizeof title) != 0)
    snprintf(title, sizeof title, "%s", list_id);
  struct evbuffer *b = evbuffer_new();
  if (b == NULL || permit_web_unsubscribe_page(b, permit_node_name(n), title,
                                               action, done) != 0) {
    if (b != NULL) evbuffer_free(b);
    permit_web_send_message(c, 503, "Please try again",
                            done ? "You are unsubscribed, but this page "
                                   "could not be shown."
                                 : "This page could not be shown.");
    return;
  }
  permit_web_send_page(c, 200, b);
  evbuffer_free(b);
}

static void unsub_answer(permit_call *c, void *data) {
  unsub_op *op = data;
  if (op->web) {
    if (op->status != PERMIT_GRPC_OK) {
      permit_web_send_message(c, 503, "Please try again", op->msg);
      return;
    }
    /* The "done" page has no form, but its action must still be a path
     * of ours: "" made the page fail and the answer an empty 200. */
    send_unsub_page(c, op->v->n, op->list_id, "/u/", 1);
    return;
  }
  if (op->status != PERMIT_GRPC_OK) {
    permit_call_finish(c, op->status, "%s", op->msg);
    return;
  }
  Permit__V1__UnsubscribeResponse r = PERMIT__V1__UNSUBSCRIBE_RESPONSE__INIT;
  r.withdrawn = op->withdrawn;
  uint8_t buf[16];
  size_t n = permit__v1__unsubscribe_response__pack(&r, buf);
  permit_call_send(c, buf, n);
  permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

/* Hands |op| to the sync thread; answers at once when it cannot. */
static void unsub_submit(permit_venue *v, permit_call *c, unsub_op *op) {
  op->v = v;
  int web = op->web;
  op->job = permit_job_new(c, unsub_answer, unsub_free, op);
  if (op->job == NULL) {
    unsub_free(op);
    if (web)
      permit_web_send_message(c, 503, "Please try again", "Out of memory.");
    else
      permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (v->sync == NULL || permit_sync_submit(v->sync, unsub_work, op) != 0) {
    permit_job *j = op->job;
    const char *why = v->sync == NULL ? "unsubscribes are not being taken "
                                        "(no sync runs)"
                                      : "the node is stopping";
    permit_call_set_data(c, NULL);
    if (web)
      permit_web_send_message(c, 503, "Please try again", why);
    else
      permit_call_finish(c, PERMIT_GRPC_UNAVAILABLE, "%s", why);
    permit_job_abandon(j);
    permit_job_closed(j);
  }
}

static void unsubscribe(permit_call *c, const uint8_t *msg, size_t len) {
  permit_venue *v = permit_call_method_arg(c);
  Permit__V1__UnsubscribeRequest *req =
      permit__v1__unsubscribe_request__unpack(NULL, len, msg);
  if (req == NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "request is not an UnsubscribeRequest");
    return;
  }
  permit_err err = {0};
  char email[PERMIT_CONTACT_EMAIL_MAX + 1];
  size_t el = strlen(req->email);
  unsub_op *op = NULL;
  char title[256]; /* titles are at most 200 bytes */
  if (permit_list_id_validate(req->list_id, &err) != 0) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT, "%s", err.msg);
  } else if (permit_node_list_title(v->n, req->list_id, title,
                                    sizeof title) != 0) {
    /* A mistyped list must not read as "nothing to do". */
    permit_call_finish(c, PERMIT_GRPC_NOT_FOUND, "no list \"%s\" on this node",
                       req->list_id);
  } else if (el == 0 || el > PERMIT_CONTACT_EMAIL_MAX ||
             !permit_contacts_text_ok(req->email, el, 0) ||
             strchr(req->email, '@') == NULL ||
             permit_email_normalize(req->email, el, email, sizeof email) !=
                 0) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT,
                       "email must be an address of 1 to %d bytes",
                       PERMIT_CONTACT_EMAIL_MAX);
  } else if ((op = calloc(1, sizeof *op)) == NULL) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    snprintf(op->list_id, sizeof op->list_id, "%s", req->list_id);
    memcpy(op->email, email, strlen(email) + 1);
    unsub_submit(v, c, op);
  }
  permit_wipe(email, sizeof email);
  permit_wipe(req->email, el);
  permit__v1__unsubscribe_request__free_unpacked(req, NULL);
}

static void unsub_close(permit_call *c, int cancelled) {
  (void)cancelled;
  permit_job_closed(permit_call_data(c));
}

/* /u/<list>/<issuer>/<token>: GET shows a button, POST (RFC 8058
 * one-click, or that button) unsubscribes. */
static void unsub_web(permit_call *c, const permit_http_request *r) {
  permit_venue *v = permit_call_method_arg(c);
  char list_id[PERMIT_LIST_ID_MAX + 1], issuer[PERMIT_NAME_MAX + 1];
  char token[PERMIT_TOKEN_MAX];
  const char *p = r->path + 3, *parts[3];
  size_t lens[3];
  for (int i = 0; i < 3; i++) {
    const char *end = i < 2 ? strchr(p, '/') : p + strlen(p);
    if (end == NULL) {
      permit_web_send_message(c, 404, "Link not valid",
                              "This unsubscribe link is not complete.");
      return;
    }
    parts[i] = p;
    lens[i] = (size_t)(end - p);
    p = end + (i < 2);
  }
  if (lens[0] == 0 || lens[0] >= sizeof list_id || lens[1] == 0 ||
      lens[1] >= sizeof issuer || lens[2] == 0 || lens[2] >= sizeof token ||
      strchr(parts[2], '/') != NULL) {
    permit_web_send_message(c, 404, "Link not valid",
                            "This unsubscribe link is not valid.");
    return;
  }
  memcpy(list_id, parts[0], lens[0]);
  list_id[lens[0]] = '\0';
  memcpy(issuer, parts[1], lens[1]);
  issuer[lens[1]] = '\0';
  memcpy(token, parts[2], lens[2]);
  token[lens[2]] = '\0';
  uint8_t secret[32], subject[PERMIT_TOKEN_PAYLOAD_MAX];
  char ctx[PERMIT_TOKEN_CONTEXT_MAX + 1];
  size_t sl = 0;
  permit_node_token_secret(v->n, secret);
  unsub_context(v->n, list_id, issuer, ctx, sizeof ctx);
  int rc = permit_token_open(secret, ctx, TOKEN_KIND_UNSUBSCRIBE, token,
                             lens[2], permit_now_ms(), subject,
                             sizeof subject, &sl, NULL);
  permit_wipe(secret, sizeof secret);
  if (rc != 0 || sl != PERMIT_SUBJECT_LEN) {
    permit_logf(PERMIT_LEVEL_INFO, "venue.bad_link",
                "a forged or malformed unsubscribe link was refused");
    permit_web_send_message(c, 404, "Link not valid",
                            "This unsubscribe link is not valid. Check that "
                            "it was copied whole.");
    return;
  }
  if (strcmp(r->method, "POST") != 0) {
    /* A GET (a link scanner, a prefetch) never unsubscribes. */
    send_unsub_page(c, v->n, list_id, r->path, 0);
    return;
  }
  permit_form_field f[4];
  size_t nf = 0;
  const char *one = NULL;
  if (strncmp(r->content_type, "application/x-www-form-urlencoded", 33) ==
          0 &&
      permit_form_parse(r->body, r->body_len, f, 4, &nf, NULL) == 0)
    one = permit_form_get(f, nf, "List-Unsubscribe");
  else if (strncmp(r->content_type, "multipart/form-data", 19) == 0 &&
           r->body != NULL && r->body_len < PERMIT_FORM_BODY_MAX) {
    /* RFC 8058 allows it; the one field is all that matters. */
    char body[PERMIT_FORM_BODY_MAX + 1];
    memcpy(body, r->body, r->body_len);
    body[r->body_len] = '\0';
    if (strstr(body, "name=\"List-Unsubscribe\"") != NULL &&
        strstr(body, "One-Click") != NULL)
      one = "One-Click";
  }
  if (one == NULL || strcmp(one, "One-Click") != 0) {
    permit_web_send_message(c, 400, "Not unsubscribed",
                            "The request is not a one-click unsubscribe "
                            "(RFC 8058: List-Unsubscribe=One-Click).");
    return;
  }
  unsub_op *op = calloc(1, sizeof *op);
  if (op == NULL) {
    permit_web_send_message(c, 503, "Please try again", "Out of memory.");
    return;
  }
  op->web = 1;
  snprintf(op->list_id, sizeof op->list_id, "%s", list_id);
  snprintf(op->issuer, sizeof op->issuer, "%s", issuer);
  memcpy(op->subject, subject, PERMIT_SUBJECT_LEN);
  unsub_submit(v, c, op);
}

void permit_venue_set_sync(permit_venue *v, permit_sync *sync) {
  v->sync = sync;
}

void permit_venue_routes(permit_venue *v,
                         permit_web_route out[PERMIT_VENUE_ROUTES]) {
  out[0] = (permit_web_route){.prefix = "/u/",
                              .max_body = PERMIT_FORM_BODY_MAX,
                              .handler = unsub_web,
                              .on_close = unsub_close,
                              .arg = v};
}

/* ---- the service ---- */

permit_venue *permit_venue_new(permit_node *n, permit_server *srv,
                               permit_err *err) {
  if (!(permit_node_roles(n) & PERMIT_ROLE_AUDIENCE)) {
    permit_err_set(err, PERMIT_EINVAL,
                   "the Venue service needs the audience role");
    return NULL;
  }
  permit_venue *v = calloc(1, sizeof *v);
  if (v != NULL) v->watchers = permit_call_list_new(srv);
  if (v == NULL || v->watchers == NULL) {
    free(v);
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  v->n = n;
  v->srv = srv;
  permit_node_on_change(n, on_change, v);
  return v;
}

void permit_venue_free(permit_venue *v) {
  if (v == NULL) return;
  permit_node_on_change(v->n, NULL, NULL);
  permit_call_list_free(v->watchers);
  free(v);
}

void permit_venue_methods(permit_venue *v,
                          permit_method out[PERMIT_VENUE_METHODS]) {
  out[0] = (permit_method){.path = "/permit.v1.Venue/DefineList",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = define_list,
                           .on_close = define_close,
                           .arg = v};
  out[1] = (permit_method){.path = "/permit.v1.Venue/ListContacts",
                           .kind = PERMIT_RPC_SERVER_STREAM,
                           .on_message = list_message,
                           .on_writable = list_produce,
                           .on_close = list_close,
                           .arg = v};
  out[2] = (permit_method){.path = "/permit.v1.Venue/WatchContacts",
                           .kind = PERMIT_RPC_SERVER_STREAM,
                           .on_message = watch_message,
                           .on_writable = watch_writable,
                           .on_close = watch_close,
                           .arg = v};
  out[3] = (permit_method){.path = "/permit.v1.Venue/Unsubscribe",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = unsubscribe,
                           .on_close = unsub_close,
                           .arg = v};
}
