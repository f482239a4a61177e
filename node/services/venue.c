/*
 * venue.c - permit.v1.Venue, the venue's local API: define lists, stream
 * the contacts of a list decrypted, and watch contact changes live.
 *
 * Streams produce while the call's queue has room and resume from
 * on_writable, so a slow reader holds only a bounded queue.  Each worker
 * keeps its own list of WatchContacts calls; when the sync has applied a
 * batch, a notifier runs on every worker and each watcher sends what is
 * new since its last change.
 */
#include <stdlib.h>
#include <string.h>

#include "permit/contacts.h"
#include "permit/logging.h"
#include "permit/node_services.h"
#include "permit/util.h"

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
  permit_call_list *watchers; /* WatchContacts calls, per worker */
};

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

static void define_list(permit_call *c, const uint8_t *msg, size_t len) {
  permit_venue *v = permit_call_method_arg(c);
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
  Permit__V1__CatalogList l = PERMIT__V1__CATALOG_LIST__INIT;
  permit_err err = {0};
  int changed = 0;
  /* A synced write on this worker: lists are defined rarely, by staff. */
  int rc = permit_node_define_list(v->n, req->list_id, req->title,
                                   req->notice_text, &changed, &l, &err);
  if (rc != 0) {
    permit_call_finish(c, grpc_code(rc), "%s", err.msg);
  } else {
    Permit__V1__DefineListResponse resp =
        PERMIT__V1__DEFINE_LIST_RESPONSE__INIT;
    resp.notice_version = l.notice_version;
    resp.notice_sha256 = l.notice_sha256;
    resp.changed = changed != 0;
    if (send_msg(c, &resp.base) != 0)
      permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    else
      permit_call_finish(c, PERMIT_GRPC_OK, NULL);
    permit_logf(PERMIT_LEVEL_INFO, "venue.list_defined",
                "list %s: notice version %u%s", req->list_id,
                l.notice_version, changed ? " (new)" : "");
  }
  permit_catalog_list_clear(&l);
  permit__v1__define_list_request__free_unpacked(req, NULL);
}

/* ---- ListContacts ---- */

static int list_visit(void *arg, const Permit__V1__ContactEntry *e) {
  permit_call *c = arg;
  lister *ls = permit_call_data(c);
  int rc = send_msg(c, &e->base);
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
  char key[8 + PERMIT_LIST_ID_MAX];
  int kl = snprintf(key, sizeof key, "list/%s", ls->list_id);
  uint8_t *val;
  size_t vl;
  if (permit_store_get(permit_node_store(v->n), PERMIT_CF_DEFAULT, key,
                       (size_t)kl, &val, &vl, NULL) == 0) {
    ls->defined = 1;
    free(val);
  }
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
  watcher *w = permit_call_data(c);
  int rc = send_msg(c, &ch->base);
  if (rc != 0) return rc;
  w->last = ch->change;
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
  watcher *w = calloc(1, sizeof *w);
  if (w == NULL) {
    permit__v1__watch_contacts_request__free_unpacked(req, NULL);
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  w->call = c;
  w->last = req->since;
  permit__v1__watch_contacts_request__free_unpacked(req, NULL);
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

static void unsubscribe(permit_call *c, const uint8_t *msg, size_t len) {
  (void)msg, (void)len;
  permit_call_finish(c, PERMIT_GRPC_UNIMPLEMENTED,
                     "Unsubscribe comes with withdrawals");
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
                           .arg = v};
}
