/*
 * health.c - grpc.health.v1.Health.  Statuses live in a small table under
 * a mutex; each worker keeps its own list of Watch calls, so a change is
 * pushed by running a notifier on every worker's thread.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "permit/services.h"

#define MAX_SERVICES 64
#define MAX_SERVICE_NAME 200

typedef struct watcher {
  permit_call *call;
  char service[MAX_SERVICE_NAME + 1];
  int sent; /* last status sent, -1 none */
} watcher;

struct permit_health {
  permit_server *srv;
  pthread_mutex_t mu;
  int n;
  char names[MAX_SERVICES][MAX_SERVICE_NAME + 1];
  permit_serving status[MAX_SERVICES];
  permit_call_list *watchers; /* Watch calls, per worker */
};

permit_health *permit_health_new(permit_server *srv) {
  permit_health *h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  h->srv = srv;
  h->watchers = permit_call_list_new(srv);
  if (h->watchers == NULL) {
    free(h);
    return NULL;
  }
  pthread_mutex_init(&h->mu, NULL);
  return h;
}

void permit_health_free(permit_health *h) {
  if (h == NULL) return;
  pthread_mutex_destroy(&h->mu);
  permit_call_list_free(h->watchers);
  free(h);
}

/* The status of |service|, or -1 when it is not known. */
static int health_get(permit_health *h, const char *service) {
  int st = -1;
  pthread_mutex_lock(&h->mu);
  for (int i = 0; i < h->n; i++)
    if (strcmp(h->names[i], service) == 0) st = (int)h->status[i];
  pthread_mutex_unlock(&h->mu);
  return st;
}

static int send_status(permit_call *c, int status) {
  Grpc__Health__V1__HealthCheckResponse resp =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
  uint8_t buf[16];
  size_t n = grpc__health__v1__health_check_response__pack(&resp, buf);
  return permit_call_send(c, buf, n);
}

/* Decodes the request's service name into |out|; a message on error. */
static const char *parse_request(const uint8_t *msg, size_t len, char *out) {
  Grpc__Health__V1__HealthCheckRequest *req =
      grpc__health__v1__health_check_request__unpack(NULL, len, msg);
  if (req == NULL) return "request is not a HealthCheckRequest";
  const char *why = NULL;
  if (strlen(req->service) > MAX_SERVICE_NAME)
    why = "service name is too long";
  else
    strcpy(out, req->service);
  grpc__health__v1__health_check_request__free_unpacked(req, NULL);
  return why;
}

static void check_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_health *h = permit_call_method_arg(c);
  char service[MAX_SERVICE_NAME + 1];
  const char *why = parse_request(msg, len, service);
  if (why != NULL) {
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT, "%s", why);
    return;
  }
  int st = health_get(h, service);
  if (st < 0) {
    permit_call_finish(c, PERMIT_GRPC_NOT_FOUND, "unknown service \"%s\"",
                       service);
    return;
  }
  send_status(c, st);
  permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

/* Sends |w| the current status if it changed and the client keeps up. */
static void watch_update(permit_health *h, watcher *w) {
  int st = health_get(h, w->service);
  if (st < 0) st = PERMIT_SERVICE_UNKNOWN;
  if (st == w->sent || permit_call_full(w->call)) return;
  if (send_status(w->call, st) == 0) w->sent = st;
}

static void watch_message(permit_call *c, const uint8_t *msg, size_t len) {
  permit_health *h = permit_call_method_arg(c);
  watcher *w = calloc(1, sizeof *w);
  if (w == NULL) {
    permit_call_finish(c, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  const char *why = parse_request(msg, len, w->service);
  if (why != NULL) {
    free(w);
    permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT, "%s", why);
    return;
  }
  w->call = c;
  w->sent = -1;
  permit_call_list_add(h->watchers, c);
  permit_call_set_data(c, w);
  watch_update(h, w);
}

static void watch_writable(permit_call *c) {
  watcher *w = permit_call_data(c);
  if (w != NULL) watch_update(permit_call_method_arg(c), w);
}

/* The server has taken the call off the list already. */
static void watch_close(permit_call *c, int cancelled) {
  (void)cancelled;
  free(permit_call_data(c));
}

static void notify_one(permit_call *c, void *arg) {
  watch_update(arg, permit_call_data(c));
}

static void notify_worker(int index, void *arg) {
  permit_health *h = arg;
  permit_call_list_each(h->watchers, index, notify_one, h);
}

int permit_health_set(permit_health *h, const char *service,
                      permit_serving status) {
  if (strlen(service) > MAX_SERVICE_NAME) return PERMIT_EINVAL;
  pthread_mutex_lock(&h->mu);
  int i;
  for (i = 0; i < h->n; i++)
    if (strcmp(h->names[i], service) == 0) break;
  if (i == h->n) {
    if (h->n == MAX_SERVICES) {
      pthread_mutex_unlock(&h->mu);
      return PERMIT_ETOOBIG;
    }
    strcpy(h->names[h->n++], service);
  }
  h->status[i] = status;
  pthread_mutex_unlock(&h->mu);
  return permit_server_on_workers(h->srv, notify_worker, h);
}

void permit_health_methods(permit_health *h, permit_method out[2]) {
  out[0] = (permit_method){.path = "/grpc.health.v1.Health/Check",
                           .kind = PERMIT_RPC_UNARY,
                           .on_message = check_message,
                           .arg = h};
  out[1] = (permit_method){.path = "/grpc.health.v1.Health/Watch",
                           .kind = PERMIT_RPC_SERVER_STREAM,
                           .on_message = watch_message,
                           .on_writable = watch_writable,
                           .on_close = watch_close,
                           .arg = h};
}
