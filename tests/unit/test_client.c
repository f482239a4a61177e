/*
 * test_client: the gRPC client against the gRPC server, in one process
 * on 127.0.0.1: unary and server-streaming calls, errors, deadlines,
 * back-pressure from a paused reader, mutual TLS with pinned keys,
 * reconnection with back-off, a server that stops, and the PING
 * keepalive (a live server keeps a quiet call; a silent peer loses it).
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "permit/client.h"
#include "permit/server.h"
#include "permit/tls.h"
#include "testlib.h"

#define FIRE_MSG 1024

static atomic_int hang_closed, fire_produced, fire_blocked;
static char last_peer[64];

static void echo_msg(permit_call *c, const uint8_t *m, size_t n) {
  const char *peer = permit_call_peer(c);
  snprintf(last_peer, sizeof last_peer, "%s", peer ? peer : "");
  permit_call_send(c, m, n);
  permit_call_finish(c, PERMIT_GRPC_OK, NULL);
}

static void count_msg(permit_call *c, const uint8_t *m, size_t n) {
  uint8_t buf[100];
  int count = n > 0 ? m[0] : 0;
  for (int i = 0; i < count; i++) {
    memset(buf, i, sizeof buf);
    permit_call_send(c, buf, sizeof buf);
  }
  permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT, "done after %d \xe2\x9c\x93",
                     count);
}

static void hang_msg(permit_call *c, const uint8_t *m, size_t n) {
  (void)c, (void)m, (void)n;
}
static void hang_close(permit_call *c, int cancelled) {
  (void)c;
  if (cancelled) atomic_fetch_add(&hang_closed, 1);
}

/* Produces while the send queue has room, as a Pull stream would. */
static void fire_more(permit_call *c) {
  uint8_t buf[FIRE_MSG];
  memset(buf, 'f', sizeof buf);
  while (!permit_call_full(c) && !permit_call_finished(c)) {
    permit_call_send(c, buf, sizeof buf);
    atomic_fetch_add(&fire_produced, 1);
  }
  atomic_store(&fire_blocked, 1);
}
static void fire_msg(permit_call *c, const uint8_t *m, size_t n) {
  (void)m, (void)n;
  fire_more(c);
}
static void fire_writable(permit_call *c) {
  atomic_store(&fire_blocked, 0);
  fire_more(c);
}

static const permit_method methods[] = {
    {.path = "/t.T/Echo", .kind = PERMIT_RPC_UNARY, .on_message = echo_msg},
    {.path = "/t.T/Count", .kind = PERMIT_RPC_SERVER_STREAM,
     .on_message = count_msg},
    {.path = "/t.T/Hang", .kind = PERMIT_RPC_UNARY, .on_message = hang_msg,
     .on_close = hang_close},
    {.path = "/t.T/Fire", .kind = PERMIT_RPC_SERVER_STREAM,
     .on_message = fire_msg, .on_writable = fire_writable},
};

typedef struct result {
  int done, status, messages;
  size_t bytes;
  char msg[512];
  uint8_t first[2048];
  size_t first_len;
} result;

static void on_message(void *arg, const uint8_t *m, size_t n) {
  result *r = arg;
  if (r->messages == 0 && n <= sizeof r->first) {
    memcpy(r->first, m, n);
    r->first_len = n;
  }
  r->messages++;
  r->bytes += n;
}
static void on_done(void *arg, int status, const char *msg) {
  result *r = arg;
  r->done = 1;
  r->status = status;
  snprintf(r->msg, sizeof r->msg, "%s", msg);
}
static const permit_client_handlers handlers = {on_message, on_done};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs |base| until *flag is set or |seconds| pass; returns *flag. */
static int run_until(struct event_base *base, volatile int *flag,
                     double seconds) {
  double end = now_s() + seconds;
  struct timeval tick = {0, 10000};
  while (!*flag && now_s() < end) {
    event_base_loopexit(base, &tick);
    event_base_dispatch(base);
  }
  return *flag;
}

static int atomic_flag_set(atomic_int *a) { return atomic_load(a) != 0; }

/* Like run_until, for a counter another thread moves. */
static int run_until_atomic(struct event_base *base, atomic_int *a,
                            double seconds) {
  double end = now_s() + seconds;
  struct timeval tick = {0, 10000};
  while (!atomic_flag_set(a) && now_s() < end) {
    event_base_loopexit(base, &tick);
    event_base_dispatch(base);
  }
  return atomic_flag_set(a);
}

static permit_server *start_server(SSL_CTX *tls, int *port) {
  permit_err err;
  permit_server *s = permit_server_new(1, NULL, &err);
  permit_listener_config cfg = {.name = "test", .host = "127.0.0.1",
                                .port = *port, .tls = tls,
                                .methods = methods, .nmethods = 4};
  if (s == NULL || permit_server_listen(s, &cfg, port, &err) != 0 ||
      permit_server_start(s, &err) != 0) {
    fprintf(stderr, "server: %s\n", err.msg);
    exit(2);
  }
  return s;
}

static void test_h2c(struct event_base *base) {
  int port = 0;
  permit_server *s = start_server(NULL, &port);
  permit_err err;
  permit_client_config cfg = {.host = "127.0.0.1", .port = port};
  permit_client *c = permit_client_new(base, &cfg, &err);

  result r = {0};
  uint8_t payload[1000];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)i;
  permit_client_start(c, "/t.T/Echo", payload, sizeof payload, 5000,
                      &handlers, &r);
  CHECK(run_until(base, &r.done, 10));
  CHECK(r.status == PERMIT_GRPC_OK && r.messages == 1 &&
        r.first_len == sizeof payload &&
        memcmp(r.first, payload, sizeof payload) == 0);
  CHECK(permit_client_connected(c));

  /* Server streaming, ending with an error status and a UTF-8 message. */
  memset(&r, 0, sizeof r);
  uint8_t n = 50;
  permit_client_start(c, "/t.T/Count", &n, 1, 5000, &handlers, &r);
  CHECK(run_until(base, &r.done, 10));
  CHECK(r.messages == 50 && r.bytes == 5000);
  CHECKF(r.status == PERMIT_GRPC_INVALID_ARGUMENT &&
             strcmp(r.msg, "done after 50 \xe2\x9c\x93") == 0,
         "status %d msg %s", r.status, r.msg);

  /* Unknown method. */
  memset(&r, 0, sizeof r);
  permit_client_start(c, "/t.T/Nope", NULL, 0, 5000, &handlers, &r);
  CHECK(run_until(base, &r.done, 10));
  CHECK(r.status == PERMIT_GRPC_UNIMPLEMENTED &&
        strstr(r.msg, "/t.T/Nope") != NULL);

  /* Deadline: the client gives up and the server sees the cancel. */
  memset(&r, 0, sizeof r);
  permit_client_start(c, "/t.T/Hang", NULL, 0, 200, &handlers, &r);
  CHECK(run_until(base, &r.done, 10));
  CHECK(r.status == PERMIT_GRPC_DEADLINE_EXCEEDED);
  CHECK(run_until_atomic(base, &hang_closed, 10));

  /* Many calls at once on one connection. */
  result many[40];
  memset(many, 0, sizeof many);
  for (int i = 0; i < 40; i++)
    permit_client_start(c, "/t.T/Echo", (uint8_t *)"x", 1, 5000, &handlers,
                        &many[i]);
  int all = 1;
  for (int i = 0; i < 40; i++)
    all &= run_until(base, &many[i].done, 10) &&
           many[i].status == PERMIT_GRPC_OK;
  CHECK(all);

  /* Back-pressure: a paused reader makes the server stop producing. */
  memset(&r, 0, sizeof r);
  atomic_store(&fire_produced, 0);
  atomic_store(&fire_blocked, 0);
  permit_client_call *fc =
      permit_client_start(c, "/t.T/Fire", NULL, 0, 0, &handlers, &r);
  permit_client_pause(fc, 1);
  CHECK(run_until_atomic(base, &fire_blocked, 10));
  /* Let the last frames arrive, then measure what the server made. */
  int produced = atomic_load(&fire_produced);
  double settle_end = now_s() + 0.3;
  volatile int never = 0;
  while (now_s() < settle_end) run_until(base, &never, 0.05);
  int produced_later = atomic_load(&fire_produced);
  size_t bound = 65535 + 256 * 1024 + 2 * (FIRE_MSG + 5) * 64;
  CHECKF((size_t)produced_later * FIRE_MSG <= bound,
         "server produced %d KiB for a paused reader", produced_later);
  CHECK(produced_later == produced);
  /* Resume: production goes on. */
  permit_client_pause(fc, 0);
  int before = produced_later;
  double end = now_s() + 10;
  while (atomic_load(&fire_produced) < before + 2000 && now_s() < end)
    run_until(base, &never, 0.02);
  CHECK(atomic_load(&fire_produced) >= before + 2000);
  permit_client_cancel(fc);
  CHECK(r.done && r.status == PERMIT_GRPC_CANCELLED);
  printf("back-pressure: a paused reader let the server produce %d KiB "
         "(window + queue bound %zu KiB)\n",
         produced_later, bound / 1024);

  /* The server stops: a stream in progress ends UNAVAILABLE. */
  memset(&r, 0, sizeof r);
  permit_client_start(c, "/t.T/Hang", NULL, 0, 0, &handlers, &r);
  run_until(base, &never, 0.1);
  permit_server_stop(s);
  CHECK(run_until(base, &r.done, 10));
  CHECKF(r.status == PERMIT_GRPC_UNAVAILABLE, "status %d %s", r.status,
         r.msg);
  permit_client_free(c);
  permit_server_free(s);
}

/* A port nobody listens on (bound, read, closed). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, (struct sockaddr *)&sin, sizeof sin);
  socklen_t sl = sizeof sin;
  getsockname(fd, (struct sockaddr *)&sin, &sl);
  close(fd);
  return ntohs(sin.sin_port);
}

static void test_reconnect(struct event_base *base) {
  int port = free_port();
  permit_err err;
  permit_client_config cfg = {.host = "127.0.0.1", .port = port,
                              .backoff_initial_ms = 100,
                              .backoff_max_ms = 400};
  permit_client *c = permit_client_new(base, &cfg, &err);
  result r = {0};
  permit_client_start(c, "/t.T/Echo", (uint8_t *)"a", 1, 5000, &handlers, &r);
  CHECK(run_until(base, &r.done, 10));
  CHECK(r.status == PERMIT_GRPC_UNAVAILABLE &&
        strstr(r.msg, "cannot connect") != NULL);
  /* The server comes up; a later call goes through after the back-off. */
  permit_server *s = start_server(NULL, &port);
  int ok = 0;
  double end = now_s() + 10;
  while (!ok && now_s() < end) {
    memset(&r, 0, sizeof r);
    permit_client_start(c, "/t.T/Echo", (uint8_t *)"a", 1, 5000, &handlers,
                        &r);
    run_until(base, &r.done, 10);
    ok = r.status == PERMIT_GRPC_OK;
  }
  CHECK(ok);
  permit_client_free(c);
  permit_server_free(s);
}

static void test_keepalive(struct event_base *base) {
  permit_err err;
  /* A live server that never answers the call still answers PINGs: the
   * call outlives many keepalive periods. */
  int port = 0;
  permit_server *s = start_server(NULL, &port);
  permit_client_config cfg = {.host = "127.0.0.1", .port = port,
                              .keepalive_ms = 100,
                              .keepalive_timeout_ms = 300};
  permit_client *c = permit_client_new(base, &cfg, &err);
  result r = {0};
  permit_client_call *call =
      permit_client_start(c, "/t.T/Hang", (uint8_t *)"k", 1, 0, &handlers, &r);
  CHECK(!run_until(base, &r.done, 1.5));
  CHECK(permit_client_connected(c));
  permit_client_cancel(call);
  CHECK(r.done && r.status == PERMIT_GRPC_CANCELLED);
  permit_client_free(c);
  permit_server_free(s);

  /* A peer that accepted the connection and then went silent (a dead
   * link looks the same): the call ends within the keepalive. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sin;
  CHECK(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        listen(fd, 4) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &sl) == 0);
  cfg.port = ntohs(sin.sin_port);
  c = permit_client_new(base, &cfg, &err);
  memset(&r, 0, sizeof r);
  double t0 = now_s();
  permit_client_start(c, "/t.T/Hang", (uint8_t *)"k", 1, 0, &handlers, &r);
  CHECK(run_until(base, &r.done, 5));
  CHECKF(r.status == PERMIT_GRPC_UNAVAILABLE && strstr(r.msg, "PING") != NULL,
         "status %d %s", r.status, r.msg);
  CHECKF(now_s() - t0 < 2, "took %.2f s", now_s() - t0);
  permit_client_free(c);
  close(fd);
}

static void test_tls(struct event_base *base) {
  permit_sign_key *sk, *ck, *ok_other;
  char *scert, *ccert, *ocert;
  size_t l;
  permit_err err;
  permit_sign_key_generate(&sk);
  permit_sign_key_generate(&ck);
  permit_sign_key_generate(&ok_other);
  permit_tls_cert_create(sk, "server.example", &scert, &l, &err);
  permit_tls_cert_create(ck, "client.example", &ccert, &l, &err);
  permit_tls_cert_create(ok_other, "other.example", &ocert, &l, &err);
  permit_pinset *spins = permit_pinset_new(), *cpins = permit_pinset_new();
  permit_pinset_add(spins, permit_sign_key_public(ck), "client.example");
  permit_pinset_add(cpins, permit_sign_key_public(sk), "server.example");
  SSL_CTX *sctx = permit_tls_server_ctx(sk, scert, spins, &err);
  SSL_CTX *cctx = permit_tls_client_ctx(ck, ccert, cpins, &err);
  SSL_CTX *octx = permit_tls_client_ctx(ok_other, ocert, cpins, &err);
  CHECK(sctx && cctx && octx);
  int port = 0;
  permit_server *s = start_server(sctx, &port);

  permit_client_config cfg = {.host = "127.0.0.1", .port = port, .tls = cctx,
                              .authority = "server.example"};
  permit_client *c = permit_client_new(base, &cfg, &err);
  result r = {0};
  permit_client_start(c, "/t.T/Echo", (uint8_t *)"tls", 3, 5000, &handlers,
                      &r);
  CHECK(run_until(base, &r.done, 10));
  CHECKF(r.status == PERMIT_GRPC_OK, "status %d %s", r.status, r.msg);
  CHECK(strcmp(last_peer, "client.example") == 0);
  permit_client_free(c);

  /* A client whose key the server has not pinned. */
  cfg.tls = octx;
  c = permit_client_new(base, &cfg, &err);
  memset(&r, 0, sizeof r);
  permit_client_start(c, "/t.T/Echo", (uint8_t *)"tls", 3, 5000, &handlers,
                      &r);
  CHECK(run_until(base, &r.done, 10));
  CHECKF(r.status == PERMIT_GRPC_UNAVAILABLE, "status %d %s", r.status, r.msg);
  permit_client_free(c);

  /* The blocking helper, over mutual TLS. */
  cfg.tls = cctx;
  int status = -1;
  char msg[256];
  uint8_t *resp = NULL;
  size_t rl = 0;
  CHECK(permit_client_unary_sync(&cfg, "/t.T/Echo", (uint8_t *)"sync", 4, 5000,
                                 &status, msg, sizeof msg, &resp, &rl) == 0);
  CHECK(status == PERMIT_GRPC_OK && rl == 4 && memcmp(resp, "sync", 4) == 0);
  free(resp);

  permit_server_free(s);
  SSL_CTX_free(sctx);
  SSL_CTX_free(cctx);
  SSL_CTX_free(octx);
  permit_pinset_unref(spins);
  permit_pinset_unref(cpins);
  free(scert);
  free(ccert);
  free(ocert);
  permit_sign_key_free(sk);
  permit_sign_key_free(ck);
  permit_sign_key_free(ok_other);
}

int main(int argc, char **argv) {
  /* A peer that closes first must not kill the test with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  const char *only = argc > 1 ? argv[1] : "";
  struct event_base *base = event_base_new();
  if (!*only || !strcmp(only, "h2c")) test_h2c(base);
  if (!*only || !strcmp(only, "reconnect")) test_reconnect(base);
  if (!*only || !strcmp(only, "tls")) test_tls(base);
  if (!*only || !strcmp(only, "keepalive")) test_keepalive(base);
  event_base_loop(base, EVLOOP_NONBLOCK); /* deferred frees */
  event_base_free(base);
  permit_crypto_cleanup();
  return test_finish("test_client");
}
