/*
 * bench_optin: drives a reseller's Checkout/RecordOptIn through the
 * project's own gRPC client, many calls in flight on one connection per
 * client slot group.
 *
 *   bench_optin HOST:PORT VENUE LIST NOTICE_VERSION COUNT CONCURRENCY
 *               [RATE] [PREFIX]
 *
 * Without RATE it keeps CONCURRENCY calls in flight and reports the
 * throughput; with RATE (calls per second) it starts calls on that
 * schedule and reports latency percentiles.  Every call must be CREATED.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "permit/client.h"
#include "permit/v1/service.pb-c.h"

typedef struct bench {
  struct event_base *base;
  permit_client *clients[8];
  int nclients;
  const char *venue, *list, *prefix;
  uint32_t version;
  long count, started, done, failed;
  double *lat;
  double t0;
  int concurrency;
  double rate;
  struct event *tick;
  char last_err[256];
} bench;

typedef struct one {
  bench *b;
  double t;
} one;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void start_one(bench *b);

static void on_msg(void *arg, const uint8_t *m, size_t n) {
  one *o = arg;
  Permit__V1__RecordOptInResponse *r =
      permit__v1__record_opt_in_response__unpack(NULL, n, m);
  if (r == NULL ||
      r->status != PERMIT__V1__RECORD_OPT_IN_RESPONSE__STATUS__CREATED)
    o->b->failed++;
  if (r != NULL) permit__v1__record_opt_in_response__free_unpacked(r, NULL);
}

static void on_done(void *arg, int status, const char *msg) {
  one *o = arg;
  bench *b = o->b;
  if (status != 0) {
    b->failed++;
    snprintf(b->last_err, sizeof b->last_err, "%s: %s",
             permit_grpc_status_name(status), msg);
  }
  b->lat[b->done++] = now() - o->t;
  free(o);
  if (b->done == b->count) {
    event_base_loopbreak(b->base);
    return;
  }
  if (b->rate == 0 && b->started < b->count) start_one(b);
}

static const permit_client_handlers handlers = {on_msg, on_done};

static void start_one(bench *b) {
  long i = b->started++;
  char order[64], email[96];
  snprintf(order, sizeof order, "%s-%ld", b->prefix, i);
  snprintf(email, sizeof email, "%s.%ld@bench.example", b->prefix, i);
  Permit__V1__RecordOptInRequest req = PERMIT__V1__RECORD_OPT_IN_REQUEST__INIT;
  req.order_ref = order;
  req.email = email;
  req.given_name = "Bench";
  req.family_name = "Buyer";
  req.locale = "en";
  req.venue = (char *)b->venue;
  req.list_id = (char *)b->list;
  req.notice_version = b->version;
  uint8_t buf[512];
  size_t n = permit__v1__record_opt_in_request__pack(&req, buf);
  one *o = malloc(sizeof *o);
  o->b = b;
  o->t = now();
  permit_client_start(b->clients[i % b->nclients],
                      "/permit.v1.Checkout/RecordOptIn", buf, n, 30000,
                      &handlers, o);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
  bench *b = arg;
  (void)fd, (void)what;
  /* Start every call whose time has come. */
  long due = (long)((now() - b->t0) * b->rate) + 1;
  while (b->started < b->count && b->started < due) start_one(b);
}

static int cmp(const void *x, const void *y) {
  double a = *(const double *)x, c = *(const double *)y;
  return a < c ? -1 : a > c;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: bench_optin HOST:PORT VENUE LIST VERSION COUNT "
                    "CONCURRENCY [RATE] [PREFIX]\n");
    return 2;
  }
  char host[64];
  const char *colon = strrchr(argv[1], ':');
  snprintf(host, sizeof host, "%.*s", (int)(colon - argv[1]), argv[1]);
  bench b = {0};
  b.venue = argv[2];
  b.list = argv[3];
  b.version = (uint32_t)atoi(argv[4]);
  b.count = atol(argv[5]);
  b.concurrency = atoi(argv[6]);
  b.rate = argc > 7 ? atof(argv[7]) : 0;
  b.prefix = argc > 8 ? argv[8] : "b";
  b.lat = calloc((size_t)b.count, sizeof *b.lat);
  b.base = event_base_new();
  /* A few connections, so one TCP stream is not the limit. */
  b.nclients = 4;
  permit_client_config cc = {.host = host, .port = atoi(colon + 1)};
  permit_err err;
  for (int i = 0; i < b.nclients; i++)
    b.clients[i] = permit_client_new(b.base, &cc, &err);
  b.t0 = now();
  if (b.rate > 0) {
    b.tick = event_new(b.base, -1, EV_PERSIST, on_tick, &b);
    struct timeval tv = {0, 1000};
    event_add(b.tick, &tv);
  } else {
    for (int i = 0; i < b.concurrency && b.started < b.count; i++)
      start_one(&b);
  }
  event_base_dispatch(b.base);
  double secs = now() - b.t0;
  /* What this generator took from the cores the server shares. */
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
               ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  qsort(b.lat, (size_t)b.done, sizeof *b.lat, cmp);
  printf("calls %ld, failed %ld, %.2f s, %.0f calls/s, latency p50 %.2f ms "
         "p99 %.2f ms, client CPU %.0f us/call%s%s\n",
         b.done, b.failed, secs, b.done / secs, 1e3 * b.lat[b.done / 2],
         1e3 * b.lat[(long)(b.done * 0.99)], cpu / b.done * 1e6,
         b.failed ? "; last error: " : "", b.failed ? b.last_err : "");
  if (b.tick) event_free(b.tick);
  for (int i = 0; i < b.nclients; i++) permit_client_free(b.clients[i]);
  event_base_loop(b.base, EVLOOP_NONBLOCK);
  event_base_free(b.base);
  free(b.lat);
  return b.failed != 0;
}
