/*
 * server.c - gRPC over HTTP/2 on nghttp2 and libevent (server side).
 *
 * Layers, bottom up: a worker owns an event loop and its connections; a
 * connection owns a bufferevent (plain or OpenSSL) and an nghttp2
 * session; a stream owns one call.  nghttp2 is driven in memory
 * (mem_recv / mem_send) and never re-entered: anything that wants to send
 * from outside nghttp2's callbacks activates the connection's flush event,
 * which runs from the loop.
 */
#include "permit/server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>

#include "permit/record.h"

#include "permit/logging.h"
#include "permit/tls.h"
#include "permit/util.h"

#define MAX_LISTENERS 4
#define OUT_HIGH (64 * 1024) /* stop asking nghttp2 for frames above this */
#define OUT_LOW (16 * 1024)  /* and resume below this */
#define PATH_MAX_LEN 256
#define NSTATUS 17
/* Request bytes one connection may hold at once: messages being
 * reassembled or waiting for the half-close, in max_message units (else a
 * client opening every stream with a message just under the limit pins
 * streams x max_message), and web request bodies. */
#define HELD_MESSAGES 4
#define HELD_WEB (64 * 1024)
/* A connection we are ending gets this long to flush its GOAWAY and for
 * the client to close, reading and dropping what it still sends. */
#define LINGER_MS 1000
/* Stream resets a connection may cause, in a burst and per second after:
 * the client's RST_STREAMs (rapid reset, CVE-2023-44487) and ours, which
 * a client provokes with stream errors to the same effect (CVE-2025-8671,
 * which nghttp2's own limit does not see). */
#define RESET_BURST 1000
#define RESET_RATE 33

typedef struct permit_server permit_server;
typedef struct worker worker;
typedef struct conn conn;
typedef struct stream stream;

typedef struct listener {
  permit_server *srv;
  int index;
  char *name;
  char *bearer;
  SSL_CTX *tls;
  const permit_method *methods;
  size_t nmethods;
  const permit_http_route *routes;
  size_t nroutes;
  const permit_web_route *web;
  size_t nweb;
  int port;
  /* Counters, read by the metrics endpoint from any thread. */
  atomic_uint_fast64_t accepted, refused, open, handshake_failed, streams,
      bytes_in, bytes_out;
  atomic_uint_fast64_t *calls; /* (nmethods + 1) * NSTATUS */
} listener;

struct worker {
  permit_server *srv;
  int index;
  struct event_base *base;
  pthread_t thread;
  struct evconnlistener *lev[MAX_LISTENERS];
  void *lev_arg[MAX_LISTENERS];
  conn *conns;
};

struct permit_server {
  permit_server_limits lim;
  int nworkers;
  worker *workers;
  listener listeners[MAX_LISTENERS];
  int nlisteners;
  int started;
  atomic_int nconns;
};

struct permit_call {
  stream *st;
  const permit_method *m;
  int method_index;
  void *data;
  struct evbuffer *out;
  struct event *deadline;
  int headers_sent, finished, deferred, closed, was_full, routed;
  int aborted; /* ended by the transport (deadline, shutdown, bad input) */
  struct permit_call_list *list; /* the list it is on, if any */
  const permit_web_route *web;   /* a web request: its route */
  permit_call *list_prev, *list_next;
  int status;
  char message[512];
};

struct stream {
  conn *c;
  int32_t id;
  stream *prev, *next;
  /* request */
  char path[PATH_MAX_LEN];
  char method[8];
  char content_type[64];
  char encoding[32];
  char authz[256];
  char origin[256];
  char fetch_site[32];
  char authority[256];
  int64_t timeout_us; /* -1: none */
  int bad_timeout, path_too_long;
  size_t header_bytes;
  int half_closed;
  size_t discarded; /* request bytes dropped after we answered */
  size_t held;      /* counted in conn->held_msg / held_web */
  int reset_sent;
  permit_grpc_deframer df;
  uint8_t *req;
  size_t req_len;
  int req_count;
  /* plain HTTP response */
  struct evbuffer *http_body;
  /* web request body */
  struct evbuffer *web_in;
  permit_call call;
};

struct conn {
  worker *w;
  listener *l;
  struct bufferevent *bev;
  nghttp2_session *h2;
  struct event *flush_ev, *idle_ev;
  struct event *ka_ev;    /* keepalive: a silent client with streams open */
  int heard;              /* bytes came in since ka_ev last fired */
  int ping_out;           /* our keepalive PING is unanswered */
  struct event *hs_ev;    /* accept to the client's first SETTINGS */
  struct event *linger_ev;
  conn *prev, *next;
  stream *streams;
  int nstreams;
  int preface_done, closing;
  int dead;               /* ending: input is read and dropped */
  int lingering;          /* our side shut down, waiting for the client */
  int calm;               /* over the reset budget: to be cut off */
  uint32_t reset_tokens;
  time_t reset_at;        /* CLOCK_MONOTONIC seconds of the last refill */
  size_t held_msg, held_web;
  char peer[PERMIT_NAME_MAX + 1];
  int has_peer;
  char addr[64];
};

void permit_server_limits_default(permit_server_limits *l) {
  l->max_message = 1 << 20;
  l->max_concurrent_streams = 128;
  l->max_header_list = 16 * 1024;
  l->handshake_timeout_ms = 10000;
  l->idle_timeout_ms = 300000;
  l->keepalive_ms = 60000;
  l->keepalive_timeout_ms = 20000;
  l->max_connections = 4096;
  l->call_high_water = 256 * 1024;
}

/* ---------------------------------------------------------------- */
/* connections                                                        */

static void conn_schedule_flush(conn *c) {
  if (c->flush_ev != NULL) event_active(c->flush_ev, 0, 0);
}

static void call_close(stream *st, int cancelled);

static void stream_free(stream *st) {
  conn *c = st->c;
  if (st->prev != NULL)
    st->prev->next = st->next;
  else
    c->streams = st->next;
  if (st->next != NULL) st->next->prev = st->prev;
  c->nstreams--;
  if (st->call.web != NULL)
    c->held_web -= st->held;
  else
    c->held_msg -= st->held;
  permit_grpc_deframer_free(&st->df);
  free(st->req);
  if (st->call.out != NULL) evbuffer_free(st->call.out);
  if (st->call.deadline != NULL) event_free(st->call.deadline);
  if (st->http_body != NULL) evbuffer_free(st->http_body);
  if (st->web_in != NULL) evbuffer_free(st->web_in);
  free(st);
  if (c->nstreams == 0 && c->idle_ev != NULL) {
    struct timeval tv = {c->w->srv->lim.idle_timeout_ms / 1000,
                         (c->w->srv->lim.idle_timeout_ms % 1000) * 1000};
    event_add(c->idle_ev, &tv);
  }
}

static void conn_free(conn *c) {
  /* nghttp2_session_del() runs no callbacks: end the calls first. */
  while (c->streams != NULL) {
    stream *st = c->streams;
    call_close(st, 1);
    stream_free(st);
  }
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    c->w->conns = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  nghttp2_session_del(c->h2);
  if (c->flush_ev != NULL) event_free(c->flush_ev);
  if (c->idle_ev != NULL) event_free(c->idle_ev);
  if (c->ka_ev != NULL) event_free(c->ka_ev);
  if (c->hs_ev != NULL) event_free(c->hs_ev);
  if (c->linger_ev != NULL) event_free(c->linger_ev);
  bufferevent_free(c->bev);
  atomic_fetch_sub(&c->l->open, 1);
  atomic_fetch_sub(&c->w->srv->nconns, 1);
  worker *w = c->w;
  int closing = c->closing;
  free(c);
  if (closing && w->conns == NULL) event_base_loopexit(w->base, NULL);
}

static void conn_linger(conn *c);
static void conn_end(conn *c, uint32_t code);

/* Counts one stream reset against the connection's budget; nonzero, and
 * c->calm set, once it is spent. */
static int conn_count_reset(conn *c) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  if (now.tv_sec > c->reset_at) {
    uint64_t t = c->reset_tokens +
                 (uint64_t)(now.tv_sec - c->reset_at) * RESET_RATE;
    c->reset_tokens = t > RESET_BURST ? RESET_BURST : (uint32_t)t;
    c->reset_at = now.tv_sec;
  }
  if (c->reset_tokens == 0) {
    c->calm = 1;
    return 1;
  }
  c->reset_tokens--;
  return 0;
}

/* Sends what nghttp2 has, within the output bound; closes when done. */
static void conn_flush(conn *c) {
  struct evbuffer *out = bufferevent_get_output(c->bev);
  while (c->h2 != NULL && evbuffer_get_length(out) < OUT_HIGH) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(c->h2, &data);
    if (n < 0) {
      permit_logf(PERMIT_LEVEL_WARN, "h2.send_failed", "%s %s: %s",
                  c->l->name, c->addr, nghttp2_strerror((int)n));
      conn_free(c);
      return;
    }
    if (n == 0) break;
    atomic_fetch_add(&c->l->bytes_out, (uint64_t)n);
    evbuffer_add(out, data, (size_t)n);
  }
  if (c->calm && !c->dead) {
    permit_logf(PERMIT_LEVEL_INFO, "h2.too_many_resets",
                "%s %s: over %d stream resets, closing", c->l->name,
                c->addr, RESET_BURST);
    conn_end(c, NGHTTP2_ENHANCE_YOUR_CALM);
    return;
  }
  /* Tell streaming handlers whose queues drained that they may go on. */
  for (stream *st = c->streams, *next; st != NULL; st = next) {
    next = st->next;
    permit_call *call = &st->call;
    if (call->was_full && !call->finished &&
        evbuffer_get_length(call->out) < c->w->srv->lim.call_high_water / 2) {
      call->was_full = 0;
      if (call->m != NULL && call->m->on_writable != NULL)
        call->m->on_writable(call);
    }
  }
  if (c->h2 == NULL || evbuffer_get_length(out) != 0 ||
      nghttp2_session_want_write(c->h2))
    return;
  /* Done: the peer or we ended the session, or we are stopping and every
   * stream has been answered. */
  if (c->closing && c->nstreams == 0)
    conn_free(c);
  else if (!nghttp2_session_want_read(c->h2) || c->dead)
    conn_linger(c);
}

static void on_flush_event(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  conn_flush(arg);
}

static void on_linger_end(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  conn_free(arg);
}

/*
 * The session is over and its last frames are with the kernel.  Closing
 * now, with client bytes still unread, would make the kernel answer with
 * a reset that can destroy the GOAWAY on its way (a client cut off for
 * flooding is still sending).  So: shut our side down, drop what still
 * comes, and close at the client's EOF or after LINGER_MS.
 */
static void conn_linger(conn *c) {
  c->dead = 1;
  if (c->lingering) return;
  c->lingering = 1;
  shutdown(bufferevent_getfd(c->bev), SHUT_WR);
  if (!evtimer_pending(c->linger_ev, NULL)) {
    struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
    evtimer_add(c->linger_ev, &tv);
  }
}

/*
 * Ends the connection with a GOAWAY carrying |code|.  Input is no longer
 * processed; a client that does not read its GOAWAY is dropped after
 * LINGER_MS all the same.
 */
static void conn_end(conn *c, uint32_t code) {
  if (!c->dead) {
    c->dead = 1;
    nghttp2_session_terminate_session(c->h2, code);
    struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
    evtimer_add(c->linger_ev, &tv);
  }
  conn_flush(c);
}

static void on_idle(evutil_socket_t fd, short what, void *arg) {
  conn *c = arg;
  (void)fd, (void)what;
  if (c->nstreams > 0 || c->dead) return;
  permit_logf(PERMIT_LEVEL_DEBUG, "conn.idle", "%s %s idle, closing",
              c->l->name, c->addr);
  conn_end(c, NGHTTP2_NO_ERROR);
}

static void ka_arm(conn *c, int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  evtimer_add(c->ka_ev, &tv);
}

/*
 * Keepalive.  A client gone without a FIN (a cut cable, a suspended
 * laptop, a middlebox that forgot the flow) would keep its streams (a
 * venue's follow-mode Pull, a WatchContacts) open for ever: nothing is
 * written to them while nothing happens.  So when a connection with
 * streams open has sent nothing for a whole keepalive_ms period (the last
 * byte came one to two periods ago) we PING it, and end it when nothing
 * comes back within keepalive_timeout_ms.  A flag per read, not a clock
 * read per read.  Any bytes count as an answer; connections without
 * streams are the idle timer's.
 */
static void on_keepalive(evutil_socket_t fd, short what, void *arg) {
  conn *c = arg;
  (void)fd, (void)what;
  if (c->dead) return;
  const permit_server_limits *lim = &c->w->srv->lim;
  if (c->heard || c->nstreams == 0) {
    c->heard = 0;
    c->ping_out = 0;
    ka_arm(c, lim->keepalive_ms);
    return;
  }
  if (c->ping_out) {
    permit_logf(PERMIT_LEVEL_INFO, "conn.keepalive_timeout",
                "%s %s sent nothing for over %d ms, not even the answer to a "
                "PING, with %d stream(s) open: closing", c->l->name, c->addr,
                lim->keepalive_ms + lim->keepalive_timeout_ms, c->nstreams);
    conn_end(c, NGHTTP2_NO_ERROR);
    return;
  }
  if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL) != 0) {
    ka_arm(c, lim->keepalive_ms);
    return;
  }
  c->ping_out = 1;
  ka_arm(c, lim->keepalive_timeout_ms);
  conn_schedule_flush(c);
}

/* Accept to the end of the client's connection preface (its first
 * SETTINGS): one deadline, however slowly the bytes trickle in. */
static void on_handshake_timeout(evutil_socket_t fd, short what, void *arg) {
  conn *c = arg;
  (void)fd, (void)what;
  if (c->h2 == NULL) {
    atomic_fetch_add(&c->l->handshake_failed, 1);
    permit_logf(PERMIT_LEVEL_INFO, "conn.handshake_failed",
                "%s %s: handshake timed out", c->l->name, c->addr);
  } else {
    permit_logf(PERMIT_LEVEL_INFO, "conn.timeout",
                "%s %s: no HTTP/2 preface in time", c->l->name, c->addr);
  }
  conn_free(c);
}

/* The GOAWAY code for an error nghttp2_session_mem_recv() returned. */
static uint32_t recv_error_code(ssize_t r) {
  switch (r) {
  case NGHTTP2_ERR_FLOODED:
#ifdef PERMIT_HAVE_MAX_CONTINUATIONS
  case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
#endif
    return NGHTTP2_ENHANCE_YOUR_CALM;
  case NGHTTP2_ERR_BAD_CLIENT_MAGIC:
    return NGHTTP2_PROTOCOL_ERROR;
  default:
    return NGHTTP2_INTERNAL_ERROR;
  }
}

static void on_read(struct bufferevent *bev, void *arg) {
  conn *c = arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  struct evbuffer_iovec v[16];
  int n;
  c->heard = 1;
  while (evbuffer_get_length(in) > 0) {
    if (c->dead || !nghttp2_session_want_read(c->h2)) {
      /* Ending: what the client still sends is dropped unread. */
      atomic_fetch_add(&c->l->bytes_in, evbuffer_get_length(in));
      evbuffer_drain(in, evbuffer_get_length(in));
      break;
    }
    n = evbuffer_peek(in, -1, NULL, v, 16);
    if (n > 16) n = 16;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
      ssize_t r =
          nghttp2_session_mem_recv(c->h2, v[i].iov_base, v[i].iov_len);
      if (r < 0) {
        /* Fatal for the session, and nghttp2 does not always queue a
         * GOAWAY itself (too many CONTINUATIONs): without one the client
         * could go on sending, and each read would fail and log again. */
        if (c->calm)
          permit_logf(PERMIT_LEVEL_INFO, "h2.too_many_resets",
                      "%s %s: over %d stream resets, closing", c->l->name,
                      c->addr, RESET_BURST);
        else
          permit_logf(PERMIT_LEVEL_INFO, "h2.protocol_error", "%s %s: %s",
                      c->l->name, c->addr, nghttp2_strerror((int)r));
        atomic_fetch_add(&c->l->bytes_in, evbuffer_get_length(in));
        evbuffer_drain(in, evbuffer_get_length(in));
        conn_end(c, c->calm ? NGHTTP2_ENHANCE_YOUR_CALM
                            : recv_error_code(r));
        return;
      }
      used += v[i].iov_len;
    }
    atomic_fetch_add(&c->l->bytes_in, used);
    evbuffer_drain(in, used);
  }
  conn_flush(c);
}

static void on_write(struct bufferevent *bev, void *arg) {
  (void)bev;
  conn_flush(arg);
}

/* ---------------------------------------------------------------- */
/* calls                                                              */

/* application/grpc or application/grpc+proto, parameters allowed: the
 * only codec served.  application/grpc+json and the like get 415. */
static int grpc_proto_type(const char *ct) {
  if (strncmp(ct, "application/grpc", 16) != 0) return 0;
  ct += 16;
  if (strncmp(ct, "+proto", 6) == 0) ct += 6;
  return *ct == '\0' || *ct == ';';
}

static int find_method(listener *l, const char *path) {
  for (size_t i = 0; i < l->nmethods; i++)
    if (strcmp(l->methods[i].path, path) == 0) return (int)i;
  return -1;
}

struct permit_call_list {
  int n;
  permit_call **heads; /* one per worker */
};

permit_call_list *permit_call_list_new(permit_server *s) {
  permit_call_list *l = calloc(1, sizeof *l);
  if (l == NULL) return NULL;
  l->n = s->nworkers;
  l->heads = calloc((size_t)l->n, sizeof *l->heads);
  if (l->heads == NULL) {
    free(l);
    return NULL;
  }
  return l;
}

void permit_call_list_free(permit_call_list *l) {
  if (l == NULL) return;
  free(l->heads);
  free(l);
}

void permit_call_list_add(permit_call_list *l, permit_call *c) {
  int w = c->st->c->w->index;
  c->list = l;
  c->list_prev = NULL;
  c->list_next = l->heads[w];
  if (c->list_next != NULL) c->list_next->list_prev = c;
  l->heads[w] = c;
}

static void call_list_remove(permit_call *c) {
  permit_call_list *l = c->list;
  if (l == NULL) return;
  if (c->list_prev != NULL)
    c->list_prev->list_next = c->list_next;
  else
    l->heads[c->st->c->w->index] = c->list_next;
  if (c->list_next != NULL) c->list_next->list_prev = c->list_prev;
  c->list = NULL;
}

void permit_call_list_each(permit_call_list *l, int worker,
                           void (*fn)(permit_call *c, void *arg), void *arg) {
  /* A call closes only from nghttp2's callbacks, never inside |fn|, but
   * the next pointer is taken first all the same. */
  for (permit_call *c = l->heads[worker], *next; c != NULL; c = next) {
    next = c->list_next;
    fn(c, arg);
  }
}

static void count_call(stream *st, int status) {
  listener *l = st->c->l;
  int mi = st->call.method_index >= 0 ? st->call.method_index : (int)l->nmethods;
  if (status < 0 || status >= NSTATUS) status = PERMIT_GRPC_UNKNOWN;
  atomic_fetch_add(&l->calls[mi * NSTATUS + status], 1);
}

/* Ends the handler's part exactly once. */
static void call_close(stream *st, int cancelled) {
  permit_call *call = &st->call;
  if (call->closed) return;
  call->closed = 1;
  if (!call->finished) {
    call->finished = 1;
    call->status = PERMIT_GRPC_CANCELLED;
  }
  if (call->out != NULL) /* a gRPC call, not a plain HTTP request */
    count_call(st, cancelled && call->status == PERMIT_GRPC_OK
                       ? PERMIT_GRPC_CANCELLED
                       : call->status);
  call_list_remove(call);
  if (call->routed && call->m->on_close != NULL)
    call->m->on_close(call, cancelled);
  else if (call->web != NULL && call->web->on_close != NULL)
    call->web->on_close(call, cancelled);
}

static ssize_t data_read(nghttp2_session *h2, int32_t id, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user) {
  stream *st = src->ptr;
  permit_call *call = &st->call;
  (void)user;
  size_t have = evbuffer_get_length(call->out);
  size_t n = have < length ? have : length;
  if (n > 0) evbuffer_remove(call->out, buf, n);
  if (have > n) return (ssize_t)n;
  if (!call->finished) {
    if (n > 0) return (ssize_t)n;
    call->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  /* Finished and drained: end the body and send the trailers. */
  char status[8], msg[sizeof call->message * 3];
  snprintf(status, sizeof status, "%d", call->status);
  permit_grpc_percent_encode(call->message, msg, sizeof msg);
  nghttp2_nv trl[2] = {
      {(uint8_t *)"grpc-status", (uint8_t *)status, 11, strlen(status),
       NGHTTP2_NV_FLAG_NONE},
      {(uint8_t *)"grpc-message", (uint8_t *)msg, 12, strlen(msg),
       NGHTTP2_NV_FLAG_NONE}};
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  if (nghttp2_submit_trailer(h2, id, trl, msg[0] ? 2 : 1) == 0)
    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
  return (ssize_t)n;
}

#define NV(n, v) \
  {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

/* Sends the response headers with the body to come from call->out. */
static int call_start_response(permit_call *call) {
  stream *st = call->st;
  nghttp2_nv hdrs[] = {NV(":status", "200"),
                       NV("content-type", "application/grpc"),
                       NV("grpc-accept-encoding", "identity")};
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
  int rv = nghttp2_submit_response(st->c->h2, st->id, hdrs, 3, &prd);
  if (rv != 0) return PERMIT_EIO;
  call->headers_sent = 1;
  return 0;
}

int permit_call_send(permit_call *call, const uint8_t *msg, size_t len) {
  stream *st = call->st;
  if (call->finished) return PERMIT_EINVAL;
  if (len > st->c->w->srv->lim.max_message) return PERMIT_ETOOBIG;
  uint8_t hdr[PERMIT_GRPC_FRAME_HEADER];
  permit_grpc_frame_header(hdr, (uint32_t)len);
  if (evbuffer_add(call->out, hdr, sizeof hdr) != 0 ||
      evbuffer_add(call->out, msg, len) != 0)
    return PERMIT_ENOMEM;
  if (!call->headers_sent) {
    if (call_start_response(call) != 0) return PERMIT_EIO;
  } else if (call->deferred) {
    call->deferred = 0;
    nghttp2_session_resume_data(st->c->h2, st->id);
  }
  if (evbuffer_get_length(call->out) >= st->c->w->srv->lim.call_high_water)
    call->was_full = 1;
  conn_schedule_flush(st->c);
  return 0;
}

void permit_call_finish(permit_call *call, int status, const char *fmt, ...) {
  stream *st = call->st;
  if (call->finished) return;
  call->finished = 1;
  call->status = status;
  call->message[0] = '\0';
  if (fmt != NULL && status != PERMIT_GRPC_OK) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->message, sizeof call->message, fmt, ap);
    va_end(ap);
  }
  if (call->deadline != NULL) event_del(call->deadline);
  if (!call->headers_sent) {
    /* Trailers-Only: one HEADERS frame that ends the stream. */
    char code[8], msg[sizeof call->message * 3];
    snprintf(code, sizeof code, "%d", status);
    permit_grpc_percent_encode(call->message, msg, sizeof msg);
    nghttp2_nv hdrs[] = {NV(":status", "200"),
                         NV("content-type", "application/grpc"),
                         NV("grpc-status", code), NV("grpc-message", msg)};
    call->headers_sent = 1;
    nghttp2_submit_response(st->c->h2, st->id, hdrs, msg[0] ? 4 : 3, NULL);
  } else if (call->deferred) {
    call->deferred = 0;
    nghttp2_session_resume_data(st->c->h2, st->id);
  }
  if (status != PERMIT_GRPC_OK)
    permit_logf(PERMIT_LEVEL_DEBUG, "grpc.call_failed", "%s %s: %s: %s",
                st->c->l->name, st->path, permit_grpc_status_name(status),
                call->message);
  conn_schedule_flush(st->c);
}

size_t permit_call_queued(const permit_call *c) {
  return evbuffer_get_length(c->out);
}
int permit_call_refuse_nul(permit_call *c,
                           const ProtobufCMessageDescriptor *desc,
                           const uint8_t *msg, size_t len) {
  const char *field = NULL;
  if (permit_pb_strings_ok(desc, msg, len, &field)) return 0;
  permit_call_finish(c, PERMIT_GRPC_INVALID_ARGUMENT, "%s holds a NUL byte",
                     field);
  return 1;
}

int permit_call_full(const permit_call *c) {
  return evbuffer_get_length(c->out) >= c->st->c->w->srv->lim.call_high_water;
}
int permit_call_finished(const permit_call *c) { return c->finished; }
void permit_call_set_data(permit_call *c, void *data) { c->data = data; }
void *permit_call_data(const permit_call *c) { return c->data; }
void *permit_call_method_arg(const permit_call *c) {
  return c->web != NULL ? c->web->arg : c->m->arg;
}
const char *permit_call_peer(const permit_call *c) {
  return c->st->c->has_peer ? c->st->c->peer : NULL;
}
int permit_call_worker(const permit_call *c) { return c->st->c->w->index; }
struct event_base *permit_call_base(const permit_call *c) {
  return c->st->c->w->base;
}

static ssize_t http_body_read(nghttp2_session *h2, int32_t id, uint8_t *buf,
                              size_t length, uint32_t *flags,
                              nghttp2_data_source *src, void *user) {
  stream *st = src->ptr;
  (void)h2, (void)id, (void)user;
  int n = evbuffer_remove(st->http_body, buf, length);
  if (n < 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (evbuffer_get_length(st->http_body) == 0) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return n;
}

/* A plain HTTP response (not gRPC) with an optional body. */
static void http_respond(stream *st, int status, const char *ctype,
                         const char *text) {
  char code[8];
  snprintf(code, sizeof code, "%d", status);
  if (st->http_body == NULL) st->http_body = evbuffer_new();
  if (text != NULL) evbuffer_add(st->http_body, text, strlen(text));
  nghttp2_nv hdrs[] = {NV(":status", code), NV("content-type", ctype)};
  nghttp2_data_provider prd = {.source.ptr = st,
                               .read_callback = http_body_read};
  st->call.headers_sent = 1;
  st->call.finished = 1;
  st->call.status = -1; /* not a gRPC call: not counted */
  nghttp2_submit_response(st->c->h2, st->id, hdrs, 2, &prd);
}

void permit_http_respond(permit_call *call, int status,
                         const char *content_type,
                         const permit_http_header *hdrs, size_t n,
                         const void *body, size_t len) {
  stream *st = call->st;
  if (call->finished || call->closed) return;
  enum { MAX_HDRS = 16 };
  if (n > MAX_HDRS) n = MAX_HDRS;
  char code[8], clen[24];
  int head = strcmp(st->method, "HEAD") == 0;
  snprintf(code, sizeof code, "%d", status);
  snprintf(clen, sizeof clen, "%zu", len);
  if (st->http_body == NULL) st->http_body = evbuffer_new();
  if (st->http_body == NULL) {
    nghttp2_submit_rst_stream(st->c->h2, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_INTERNAL_ERROR);
    call->finished = 1;
    conn_schedule_flush(st->c);
    return;
  }
  if (!head && len > 0) evbuffer_add(st->http_body, body, len);
  nghttp2_nv nv[3 + MAX_HDRS];
  size_t k = 0;
  nv[k++] = (nghttp2_nv)NV(":status", code);
  nv[k++] = (nghttp2_nv)NV("content-type", content_type);
  nv[k++] = (nghttp2_nv)NV("content-length", clen);
  for (size_t i = 0; i < n; i++)
    nv[k++] = (nghttp2_nv){(uint8_t *)hdrs[i].name, (uint8_t *)hdrs[i].value,
                           strlen(hdrs[i].name), strlen(hdrs[i].value),
                           NGHTTP2_NV_FLAG_NONE};
  nghttp2_data_provider prd = {.source.ptr = st,
                               .read_callback = http_body_read};
  call->headers_sent = 1;
  call->finished = 1;
  nghttp2_submit_response(st->c->h2, st->id, nv, k,
                          evbuffer_get_length(st->http_body) > 0 ? &prd
                                                                 : NULL);
  conn_schedule_flush(st->c);
}

int permit_http_answered(const permit_call *c) {
  return c->finished || c->closed;
}

/* A web request of |st| is complete: hand it to its route. */
static void web_dispatch(stream *st) {
  permit_call *call = &st->call;
  char path[PATH_MAX_LEN];
  snprintf(path, sizeof path, "%s", st->path);
  char *q = strchr(path, '?');
  const char *query = "";
  if (q != NULL) {
    *q = '\0';
    query = q + 1;
  }
  size_t blen = st->web_in != NULL ? evbuffer_get_length(st->web_in) : 0;
  const uint8_t *body =
      blen > 0 ? evbuffer_pullup(st->web_in, (ev_ssize_t)blen) : NULL;
  permit_http_request r = {.method = st->method,
                           .path = path,
                           .query = query,
                           .content_type = st->content_type,
                           .origin = st->origin,
                           .sec_fetch_site = st->fetch_site,
                           .authority = st->authority,
                           .body = body,
                           .body_len = body != NULL ? blen : 0};
  call->web->handler(call, &r);
}

/* The route of a web request, or NULL. */
static const permit_web_route *web_find(const listener *l, const char *path) {
  for (size_t i = 0; i < l->nweb; i++) {
    size_t pl = strlen(l->web[i].prefix);
    if (strncmp(path, l->web[i].prefix, pl) == 0) return &l->web[i];
  }
  return NULL;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg) {
  permit_call *call = arg;
  (void)fd, (void)what;
  if (!call->finished) call->aborted = 1;
  permit_call_finish(call, PERMIT_GRPC_DEADLINE_EXCEEDED,
                     "deadline exceeded");
}

/* The request headers are complete: decide what the stream is. */
static void stream_route(stream *st) {
  conn *c = st->c;
  listener *l = c->l;
  permit_call *call = &st->call;
  call->st = st;
  call->method_index = -1;
  int authorized = 1;
  if (l->bearer != NULL) {
    size_t want = strlen(l->bearer);
    authorized = strncmp(st->authz, "Bearer ", 7) == 0 &&
                 strlen(st->authz + 7) == want &&
                 permit_memeq_ct(st->authz + 7, l->bearer, want);
  }
  int grpc = strncmp(st->content_type, "application/grpc", 16) == 0;
  const permit_web_route *web = NULL;
  if (!grpc && !st->path_too_long &&
      (strcmp(st->method, "GET") == 0 || strcmp(st->method, "HEAD") == 0 ||
       strcmp(st->method, "POST") == 0))
    web = web_find(l, st->path);
  if (web != NULL) {
    if (!authorized) {
      http_respond(st, 401, "text/plain; charset=utf-8",
                   "missing or wrong bearer token\n");
      return;
    }
    call->web = web;
    call->status = -2; /* a web exchange: closed through its route */
    return;
  }
  if (strcmp(st->method, "GET") == 0) {
    if (!authorized) {
      http_respond(st, 401, "text/plain; charset=utf-8",
                   "missing or wrong bearer token\n");
      return;
    }
    for (size_t i = 0; i < l->nroutes; i++)
      if (strcmp(l->routes[i].path, st->path) == 0) {
        const char *ctype = "text/plain; charset=utf-8";
        st->http_body = evbuffer_new();
        int status = l->routes[i].handler(l->routes[i].arg, st->http_body,
                                          &ctype);
        http_respond(st, status, ctype, NULL);
        return;
      }
    http_respond(st, 404, "text/plain; charset=utf-8", "not found\n");
    return;
  }
  if (strcmp(st->method, "POST") != 0) {
    http_respond(st, 405, "text/plain; charset=utf-8",
                 "gRPC calls use POST\n");
    return;
  }
  if (!grpc_proto_type(st->content_type)) {
    http_respond(st, 415, "text/plain; charset=utf-8",
                 "content-type must be application/grpc or "
                 "application/grpc+proto (messages are protobuf only)\n");
    return;
  }
  call->out = evbuffer_new();
  call->method_index = find_method(l, st->path);
  if (!authorized) {
    permit_call_finish(call, PERMIT_GRPC_UNAUTHENTICATED,
                       "missing or wrong bearer token");
    return;
  }
  if (call->method_index < 0) {
    permit_call_finish(call, PERMIT_GRPC_UNIMPLEMENTED,
                       "unknown method %s", st->path_too_long
                                                ? "(path too long)"
                                                : st->path);
    return;
  }
  if (st->encoding[0] != '\0' && strcmp(st->encoding, "identity") != 0) {
    permit_call_finish(call, PERMIT_GRPC_UNIMPLEMENTED,
                       "grpc-encoding %s is not supported (identity only)",
                       st->encoding);
    return;
  }
  if (st->bad_timeout) {
    permit_call_finish(call, PERMIT_GRPC_INVALID_ARGUMENT,
                       "malformed grpc-timeout");
    return;
  }
  call->m = &l->methods[call->method_index];
  if (st->timeout_us >= 0) {
    if (st->timeout_us == 0) {
      permit_call_finish(call, PERMIT_GRPC_DEADLINE_EXCEEDED,
                         "deadline exceeded");
      return;
    }
    call->deadline = evtimer_new(c->w->base, on_deadline, call);
    struct timeval tv = {(time_t)(st->timeout_us / 1000000),
                         (suseconds_t)(st->timeout_us % 1000000)};
    evtimer_add(call->deadline, &tv);
  }
  call->routed = 1;
}

/*
 * Recounts the request bytes |st| holds (a message being reassembled or
 * waiting for the half-close, or a web body) into its connection's total;
 * nonzero when that total is over the connection's budget.
 */
static int stream_hold(stream *st) {
  conn *c = st->c;
  size_t now;
  if (st->call.web != NULL) {
    now = st->web_in != NULL ? evbuffer_get_length(st->web_in) : 0;
    c->held_web = c->held_web - st->held + now;
    st->held = now;
    return c->held_web > HELD_WEB;
  }
  now = (st->df.msg != NULL ? st->df.need : 0) +
        (st->req != NULL ? st->req_len : 0);
  c->held_msg = c->held_msg - st->held + now;
  st->held = now;
  return c->held_msg > (size_t)HELD_MESSAGES * c->w->srv->lim.max_message;
}

static int on_request_message(void *arg, const uint8_t *msg, size_t len,
                              int compressed) {
  stream *st = arg;
  permit_call *call = &st->call;
  if (compressed) {
    call->aborted = 1;
    permit_call_finish(call, PERMIT_GRPC_UNIMPLEMENTED,
                       "compressed messages are not supported");
    return 1;
  }
  if (call->m->kind == PERMIT_RPC_BIDI) {
    call->m->on_message(call, msg, len);
    return call->finished ? 1 : 0;
  }
  if (++st->req_count > 1) {
    call->aborted = 1;
    permit_call_finish(call, PERMIT_GRPC_INTERNAL,
                       "%s takes exactly one request message", st->path);
    return 1;
  }
  st->req = malloc(len ? len : 1);
  if (st->req == NULL) {
    call->aborted = 1;
    permit_call_finish(call, PERMIT_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return 1;
  }
  memcpy(st->req, msg, len);
  st->req_len = len;
  return 0;
}

/* The client half-closed: a unary or server-streaming call can start. */
static void stream_request_done(stream *st) {
  permit_call *call = &st->call;
  st->half_closed = 1;
  if (call->web != NULL) {
    if (!call->finished) web_dispatch(st);
    return;
  }
  if (!call->routed || call->finished) return;
  if (!permit_grpc_deframer_idle(&st->df)) {
    call->aborted = 1;
    permit_call_finish(call, PERMIT_GRPC_INTERNAL,
                       "request ended inside a message");
    return;
  }
  if (call->m->kind == PERMIT_RPC_BIDI) {
    if (call->m->on_half_close != NULL)
      call->m->on_half_close(call);
    else
      call->aborted = 1;
    permit_call_finish(call, PERMIT_GRPC_OK, NULL);
    return;
  }
  if (st->req_count != 1) {
    call->aborted = 1;
    permit_call_finish(call, PERMIT_GRPC_INTERNAL,
                       "%s takes exactly one request message", st->path);
    return;
  }
  call->m->on_message(call, st->req, st->req_len);
  free(st->req);
  st->req = NULL;
  stream_hold(st);
}

/* ---------------------------------------------------------------- */
/* nghttp2 callbacks                                                   */

static int cb_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame,
                            void *user) {
  conn *c = user;
  if (frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  stream *st = calloc(1, sizeof *st);
  if (st == NULL) return NGHTTP2_ERR_CALLBACK_FAILURE;
  st->c = c;
  st->id = frame->hd.stream_id;
  st->timeout_us = -1;
  st->call.st = st;
  st->call.method_index = -1;
  permit_grpc_deframer_init(&st->df, c->w->srv->lim.max_message);
  st->next = c->streams;
  if (c->streams != NULL) c->streams->prev = st;
  c->streams = st;
  c->nstreams++;
  if (c->idle_ev != NULL) event_del(c->idle_ev);
  atomic_fetch_add(&c->l->streams, 1);
  nghttp2_session_set_stream_user_data(h2, st->id, st);
  return 0;
}

static void copy_value(char *dst, size_t cap, const uint8_t *v, size_t len) {
  if (len >= cap) len = cap - 1;
  memcpy(dst, v, len);
  dst[len] = '\0';
}

static int cb_header(nghttp2_session *h2, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  conn *c = user;
  (void)flags;
  stream *st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
  if (st == NULL || frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  /* RFC 9113 6.5.2 counts 32 bytes of overhead per field. */
  st->header_bytes += namelen + valuelen + 32;
  if (st->header_bytes > c->w->srv->lim.max_header_list) {
    nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_ENHANCE_YOUR_CALM);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
  if (IS(":path")) {
    if (valuelen >= PATH_MAX_LEN) st->path_too_long = 1;
    copy_value(st->path, sizeof st->path, value, valuelen);
  } else if (IS(":method")) {
    copy_value(st->method, sizeof st->method, value, valuelen);
  } else if (IS("content-type")) {
    copy_value(st->content_type, sizeof st->content_type, value, valuelen);
  } else if (IS("grpc-encoding")) {
    copy_value(st->encoding, sizeof st->encoding, value, valuelen);
  } else if (IS("authorization")) {
    copy_value(st->authz, sizeof st->authz, value, valuelen);
  } else if (IS("origin")) {
    if (valuelen >= sizeof st->origin)
      strcpy(st->origin, "\x01");
    else
      copy_value(st->origin, sizeof st->origin, value, valuelen);
  } else if (IS("sec-fetch-site")) {
    if (valuelen >= sizeof st->fetch_site)
      strcpy(st->fetch_site, "\x01");
    else
      copy_value(st->fetch_site, sizeof st->fetch_site, value, valuelen);
  } else if (IS(":authority") || IS("host")) {
    if (valuelen >= sizeof st->authority)
      strcpy(st->authority, "\x01");
    else
      copy_value(st->authority, sizeof st->authority, value, valuelen);
  } else if (IS("grpc-timeout")) {
    if (permit_grpc_parse_timeout((const char *)value, valuelen,
                                  &st->timeout_us) != 0)
      st->bad_timeout = 1;
  }
#undef IS
  return 0;
}

static int cb_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame,
                         void *user) {
  conn *c = user;
  if (frame->hd.type == NGHTTP2_SETTINGS && !c->preface_done &&
      !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
    /* The client's preface is complete: the handshake deadline is met. */
    c->preface_done = 1;
    event_del(c->hs_ev);
  }
  /* Stop reading at once: on_read() sends the GOAWAY. */
  if (frame->hd.type == NGHTTP2_RST_STREAM && conn_count_reset(c))
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  stream *st = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
  if (st == NULL) return 0;
  if (frame->hd.type == NGHTTP2_HEADERS &&
      frame->headers.cat == NGHTTP2_HCAT_REQUEST)
    stream_route(st);
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    stream_request_done(st);
  return 0;
}

static int cb_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id,
                         const uint8_t *data, size_t len, void *user) {
  (void)flags, (void)user;
  stream *st = nghttp2_session_get_stream_user_data(h2, id);
  if (st == NULL) return 0;
  if (st->call.web != NULL && !st->call.finished) {
    size_t have = st->web_in != NULL ? evbuffer_get_length(st->web_in) : 0;
    if (have + len > st->call.web->max_body) {
      permit_http_respond(&st->call, 413, "text/plain; charset=utf-8", NULL,
                          0, "request body too large\n", 23);
      st->discarded += len;
      return 0;
    }
    if (st->web_in == NULL) st->web_in = evbuffer_new();
    if (st->web_in == NULL || evbuffer_add(st->web_in, data, len) != 0) {
      permit_http_respond(&st->call, 503, "text/plain; charset=utf-8", NULL,
                          0, "out of memory\n", 14);
    } else if (stream_hold(st)) {
      /* Many bodies at once on one connection: no browser does that. */
      evbuffer_drain(st->web_in, evbuffer_get_length(st->web_in));
      stream_hold(st);
      permit_http_respond(&st->call, 503, "text/plain; charset=utf-8", NULL,
                          0, "too many request bodies at once\n", 32);
    }
    return 0;
  }
  if (!st->call.routed || st->call.finished) {
    /* We have answered; the client is still sending.  A little is simply
     * dropped (some clients report a reset as an error even after a full
     * answer); past 64 KiB the stream is reset so it stops. */
    st->discarded += len;
    if (st->discarded > 64 * 1024 && !st->reset_sent) {
      st->reset_sent = 1;
      nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
    }
    return 0;
  }
  int rc = permit_grpc_deframer_feed(&st->df, data, len, on_request_message,
                                     st);
  if (stream_hold(st) && !st->call.finished) {
    /* Over the connection's budget: this call gives its bytes back. */
    permit_grpc_deframer_free(&st->df);
    free(st->req);
    st->req = NULL;
    stream_hold(st);
    st->call.aborted = 1;
    permit_call_finish(&st->call, PERMIT_GRPC_RESOURCE_EXHAUSTED,
                       "too many request bytes held on this connection "
                       "(over %u)",
                       HELD_MESSAGES * st->c->w->srv->lim.max_message);
    return 0;
  }
  if (rc == 0 || st->call.finished) return 0;
  st->call.aborted = 1;
  if (rc == PERMIT_ETOOBIG)
    permit_call_finish(&st->call, PERMIT_GRPC_RESOURCE_EXHAUSTED,
                       "message of %u bytes is over the limit of %u bytes",
                       st->df.need, st->df.max);
  else if (rc == PERMIT_EINVAL)
    permit_call_finish(&st->call, PERMIT_GRPC_INTERNAL,
                       "bad message flag byte");
  else
    permit_call_finish(&st->call, PERMIT_GRPC_RESOURCE_EXHAUSTED,
                       "out of memory");
  return 0;
}

static int cb_frame_send(nghttp2_session *h2, const nghttp2_frame *frame,
                         void *user) {
  (void)h2;
  /* conn_flush() sees c->calm when the budget is spent. */
  if (frame->hd.type == NGHTTP2_RST_STREAM) conn_count_reset(user);
  return 0;
}

static int cb_stream_close(nghttp2_session *h2, int32_t id, uint32_t code,
                           void *user) {
  (void)user;
  stream *st = nghttp2_session_get_stream_user_data(h2, id);
  if (st == NULL) return 0;
  nghttp2_session_set_stream_user_data(h2, id, NULL);
  int cancelled =
      !st->call.finished || st->call.aborted || code != NGHTTP2_NO_ERROR;
  if (st->call.status != -1) call_close(st, cancelled);
  stream_free(st);
  return 0;
}

/* ---------------------------------------------------------------- */
/* accepting                                                           */

static nghttp2_session_callbacks *server_callbacks;
static nghttp2_option *server_options;
static pthread_once_t h2_once = PTHREAD_ONCE_INIT;

static void h2_setup(void) {
  evthread_use_pthreads();
  nghttp2_session_callbacks_new(&server_callbacks);
  nghttp2_session_callbacks_set_on_begin_headers_callback(server_callbacks,
                                                          cb_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(server_callbacks,
                                                   cb_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(server_callbacks,
                                                       cb_frame_recv);
  nghttp2_session_callbacks_set_on_frame_send_callback(server_callbacks,
                                                       cb_frame_send);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(server_callbacks,
                                                            cb_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(server_callbacks,
                                                         cb_stream_close);
  nghttp2_option_new(&server_options);
  /* Closed streams are not kept for priority bookkeeping: bounded
   * memory per connection whatever the client does. */
  nghttp2_option_set_no_closed_streams(server_options, 1);
  nghttp2_option_set_max_settings(server_options, 32);
  nghttp2_option_set_max_outbound_ack(server_options, 1000);
#ifdef PERMIT_HAVE_STREAM_RESET_RATE_LIMIT
  /* Rapid reset (CVE-2023-44487) is cut off by conn_count_reset() with
   * ENHANCE_YOUR_CALM; nghttp2's own limit (INTERNAL_ERROR) stays as a
   * backstop, twice as loose so that ours always acts first. */
  nghttp2_option_set_stream_reset_rate_limit(server_options, 2 * RESET_BURST,
                                             2 * RESET_RATE);
#endif
#ifdef PERMIT_HAVE_MAX_CONTINUATIONS
  /* CONTINUATION flood (CVE-2024-27316 family). */
  nghttp2_option_set_max_continuations(server_options, 8);
#endif
}

static int conn_start_h2(conn *c) {
  const permit_server_limits *lim = &c->w->srv->lim;
  if (nghttp2_session_server_new2(&c->h2, server_callbacks, c,
                                  server_options) != 0)
    return -1;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, lim->max_concurrent_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, lim->max_header_list},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 3) != 0) return -1;
  c->flush_ev = event_new(c->w->base, -1, 0, on_flush_event, c);
  c->idle_ev = evtimer_new(c->w->base, on_idle, c);
  c->ka_ev = evtimer_new(c->w->base, on_keepalive, c);
  if (c->flush_ev == NULL || c->idle_ev == NULL || c->ka_ev == NULL)
    return -1;
  struct timeval tv = {lim->idle_timeout_ms / 1000,
                       (lim->idle_timeout_ms % 1000) * 1000};
  evtimer_add(c->idle_ev, &tv);
  ka_arm(c, lim->keepalive_ms);
  return 0;
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  conn *c = arg;
  if (what & BEV_EVENT_CONNECTED) {
    /* TLS handshake complete. */
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alen);
    if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
      permit_logf(PERMIT_LEVEL_INFO, "tls.no_h2", "%s %s: ALPN h2 not agreed",
                  c->l->name, c->addr);
      conn_free(c);
      return;
    }
    uint8_t pub[32];
    if (permit_tls_peer(ssl, pub, c->peer, sizeof c->peer) == 0)
      c->has_peer = 1;
    if (conn_start_h2(c) != 0) {
      conn_free(c);
      return;
    }
    conn_flush(c);
    return;
  }
  if ((what & BEV_EVENT_ERROR) && c->h2 == NULL) {
    atomic_fetch_add(&c->l->handshake_failed, 1);
    unsigned long e = bufferevent_get_openssl_error(bev);
    char buf[256] = "";
    if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
    permit_logf(PERMIT_LEVEL_INFO, "conn.handshake_failed", "%s %s: %s",
                c->l->name, c->addr, buf);
  }
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
    /* Streams still open are cancelled by conn_free(). */
    conn_free(c);
  }
}

typedef struct listen_arg {
  worker *w;
  listener *l;
  struct evconnlistener *lev;
  struct event *pause_tm; /* accept() ran out of descriptors: wait */
  int stopping;
} listen_arg;

/* accept() failures, counted and logged at most every 10 s (a full
 * descriptor table would otherwise log on every wakeup). */
static atomic_uint_fast64_t accept_failures;
static _Atomic int64_t accept_logged_ms;

#define ACCEPT_PAUSE_MS 100
#define ACCEPT_LOG_EVERY_MS 10000

static void on_accept_resume(evutil_socket_t fd, short what, void *arg) {
  listen_arg *la = arg;
  (void)fd, (void)what;
  if (!la->stopping) evconnlistener_enable(la->lev);
}

/*
 * Out of descriptors (EMFILE, ENFILE) or kernel memory, the pending
 * connection stays queued and the listening socket stays readable: left
 * enabled, the loop would spin on accept().  The listener rests for a
 * moment instead; connections already open are served meanwhile, new ones
 * wait in the backlog (or are refused by the kernel when it is full).
 */
static void on_accept_error(struct evconnlistener *lev, void *arg) {
  listen_arg *la = arg;
  int e = EVUTIL_SOCKET_ERROR();
  uint64_t n = atomic_fetch_add(&accept_failures, 1) + 1;
  int64_t now = permit_now_ms(), last = atomic_load(&accept_logged_ms);
  if (now - last >= ACCEPT_LOG_EVERY_MS &&
      atomic_compare_exchange_strong(&accept_logged_ms, &last, now))
    permit_logf(PERMIT_LEVEL_ERROR, "server.accept_failed",
                "%s listener: accept(): %s (%llu failures so far); new "
                "connections wait until descriptors are free",
                la->l->name, evutil_socket_error_to_string(e),
                (unsigned long long)n);
  if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
    evconnlistener_disable(lev);
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    evtimer_add(la->pause_tm, &tv);
  }
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg) {
  listen_arg *la = arg;
  worker *w = la->w;
  listener *l = la->l;
  (void)lev, (void)salen;
  if (atomic_fetch_add(&w->srv->nconns, 1) >= w->srv->lim.max_connections) {
    atomic_fetch_sub(&w->srv->nconns, 1);
    atomic_fetch_add(&l->refused, 1);
    evutil_closesocket(fd);
    return;
  }
  atomic_fetch_add(&l->accepted, 1);
  atomic_fetch_add(&l->open, 1);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  conn *c = calloc(1, sizeof *c);
  if (c == NULL) {
    evutil_closesocket(fd);
    atomic_fetch_sub(&l->open, 1);
    atomic_fetch_sub(&w->srv->nconns, 1);
    return;
  }
  c->w = w;
  c->l = l;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  c->reset_tokens = RESET_BURST;
  c->reset_at = now.tv_sec;
  if (sa->sa_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
    snprintf(c->addr, sizeof c->addr, "%s:%d", ip, ntohs(in->sin_port));
  } else {
    snprintf(c->addr, sizeof c->addr, "fd %d", (int)fd);
  }
  if (l->tls != NULL) {
    SSL *ssl = SSL_new(l->tls);
    c->bev = ssl == NULL ? NULL
                         : bufferevent_openssl_socket_new(
                               w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                               BEV_OPT_CLOSE_ON_FREE);
  } else {
    c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
  }
  if (c->bev == NULL) {
    evutil_closesocket(fd);
    atomic_fetch_sub(&l->open, 1);
    atomic_fetch_sub(&w->srv->nconns, 1);
    free(c);
    return;
  }
  c->next = w->conns;
  if (w->conns != NULL) w->conns->prev = c;
  w->conns = c;
  c->hs_ev = evtimer_new(w->base, on_handshake_timeout, c);
  c->linger_ev = evtimer_new(w->base, on_linger_end, c);
  if (c->hs_ev == NULL || c->linger_ev == NULL) {
    conn_free(c);
    return;
  }
  /* Not bufferevent timeouts: those restart at every byte, so a client
   * trickling its ClientHello would never be cut off. */
  struct timeval hs = {w->srv->lim.handshake_timeout_ms / 1000,
                       (w->srv->lim.handshake_timeout_ms % 1000) * 1000};
  evtimer_add(c->hs_ev, &hs);
  bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
  bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
  bufferevent_setwatermark(c->bev, EV_READ, 0, 256 * 1024);
  if (l->tls == NULL && conn_start_h2(c) != 0) {
    conn_free(c);
    return;
  }
  bufferevent_enable(c->bev, EV_READ | EV_WRITE);
  if (c->h2 != NULL) conn_flush(c);
}

/* ---------------------------------------------------------------- */
/* the server                                                          */

permit_server *permit_server_new(int workers, const permit_server_limits *l,
                                 permit_err *err) {
  pthread_once(&h2_once, h2_setup);
  if (workers <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    workers = n > 0 ? (int)n : 1;
  }
  permit_server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  if (l != NULL)
    s->lim = *l;
  else
    permit_server_limits_default(&s->lim);
  s->nworkers = workers;
  s->workers = calloc((size_t)workers, sizeof *s->workers);
  for (int i = 0; s->workers != NULL && i < workers; i++) {
    s->workers[i].srv = s;
    s->workers[i].index = i;
    s->workers[i].base = event_base_new();
    if (s->workers[i].base == NULL) {
      permit_server_free(s);
      permit_err_set(err, PERMIT_ENOMEM, "cannot create an event loop");
      return NULL;
    }
  }
  if (s->workers == NULL) {
    free(s);
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  return s;
}

int permit_server_worker_count(const permit_server *s) { return s->nworkers; }

/* A listening socket with SO_REUSEPORT, so each worker can have one. */
static evutil_socket_t bind_socket(const char *host, int port,
                                   permit_err *err) {
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
    permit_err_set(err, PERMIT_EINVAL, "listen address %s is not IPv4", host);
    return -1;
  }
  evutil_socket_t fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
                                           SOCK_CLOEXEC, 0);
  if (fd < 0) {
    permit_err_set(err, PERMIT_EIO, "socket: %s", strerror(errno));
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
      listen(fd, 1024) != 0) {
    permit_err_set(err, PERMIT_EIO, "cannot listen on %s:%d: %s", host, port,
                   strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

int permit_server_listen(permit_server *s, const permit_listener_config *cfg,
                         int *bound_port, permit_err *err) {
  if (s->started || s->nlisteners == MAX_LISTENERS)
    return permit_err_set(err, PERMIT_EINVAL,
                          "listeners are added before start, at most %d",
                          MAX_LISTENERS);
  listener *l = &s->listeners[s->nlisteners];
  memset(l, 0, sizeof *l);
  l->srv = s;
  l->index = s->nlisteners;
  l->name = strdup(cfg->name);
  l->bearer = cfg->bearer_token ? strdup(cfg->bearer_token) : NULL;
  l->methods = cfg->methods;
  l->nmethods = cfg->nmethods;
  l->routes = cfg->routes;
  l->nroutes = cfg->nroutes;
  l->web = cfg->web;
  l->nweb = cfg->nweb;
  l->calls = calloc((cfg->nmethods + 1) * NSTATUS, sizeof *l->calls);
  if (cfg->tls != NULL) {
    SSL_CTX_up_ref(cfg->tls);
    l->tls = cfg->tls;
  }
  s->nlisteners++;
  int port = cfg->port;
  for (int i = 0; i < s->nworkers; i++) {
    evutil_socket_t fd = bind_socket(cfg->host, port, err);
    if (fd < 0) return PERMIT_EIO;
    if (i == 0) {
      struct sockaddr_in sin;
      socklen_t sl = sizeof sin;
      getsockname(fd, (struct sockaddr *)&sin, &sl);
      port = ntohs(sin.sin_port);
    }
    listen_arg *la = calloc(1, sizeof *la);
    if (la == NULL) {
      close(fd);
      return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    }
    s->workers[i].lev_arg[l->index] = la;
    la->w = &s->workers[i];
    la->l = l;
    worker *w = &s->workers[i];
    w->lev[l->index] = evconnlistener_new(
        w->base, on_accept, la, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_DISABLED, -1,
        fd);
    la->lev = w->lev[l->index];
    la->pause_tm = evtimer_new(w->base, on_accept_resume, la);
    if (w->lev[l->index] == NULL || la->pause_tm == NULL) {
      if (w->lev[l->index] == NULL) close(fd);
      return permit_err_set(err, PERMIT_EIO, "cannot watch the listener");
    }
    evconnlistener_set_error_cb(w->lev[l->index], on_accept_error);
  }
  l->port = port;
  if (bound_port != NULL) *bound_port = port;
  return 0;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
  return NULL;
}

int permit_server_start(permit_server *s, permit_err *err) {
  for (int i = 0; i < s->nworkers; i++) {
    for (int j = 0; j < s->nlisteners; j++)
      evconnlistener_enable(s->workers[i].lev[j]);
    if (pthread_create(&s->workers[i].thread, NULL, worker_main,
                       &s->workers[i]) != 0)
      return permit_err_set(err, PERMIT_EIO, "cannot start worker %d", i);
    pthread_setname_np(s->workers[i].thread, "permit-worker");
    s->started = i + 1;
  }
  return 0;
}

static void worker_force_exit(evutil_socket_t fd, short what, void *arg) {
  worker *w = arg;
  (void)fd, (void)what;
  while (w->conns != NULL) conn_free(w->conns);
  event_base_loopexit(w->base, NULL);
}

/* Graceful stop on the worker's thread: no new connections; every open
 * call ends with UNAVAILABLE and every connection gets a GOAWAY; the loop
 * ends when they are flushed, or after a grace period. */
static void worker_stop(evutil_socket_t fd, short what, void *arg) {
  worker *w = arg;
  (void)fd, (void)what;
  for (int j = 0; j < MAX_LISTENERS; j++) {
    listen_arg *la = w->lev_arg[j];
    if (la != NULL) {
      la->stopping = 1;
      if (la->pause_tm != NULL) evtimer_del(la->pause_tm);
    }
    if (w->lev[j] != NULL) evconnlistener_disable(w->lev[j]);
  }
  for (conn *c = w->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->h2 == NULL) {
      conn_free(c);
      continue;
    }
    for (stream *st = c->streams; st != NULL; st = st->next)
      if (st->call.routed && !st->call.finished) {
        st->call.aborted = 1;
        permit_call_finish(&st->call, PERMIT_GRPC_UNAVAILABLE,
                           "server shutting down");
      }
    /* A plain GOAWAY, not terminate_session(), which would drop the
     * responses and trailers still queued. */
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    c->closing = 1;
    conn_schedule_flush(c);
  }
  if (w->conns == NULL) {
    event_base_loopexit(w->base, NULL);
    return;
  }
  struct timeval grace = {2, 0};
  event_base_once(w->base, -1, EV_TIMEOUT, worker_force_exit, w, &grace);
}

void permit_server_stop(permit_server *s) {
  for (int i = 0; i < s->started; i++)
    event_base_once(s->workers[i].base, -1, EV_TIMEOUT, worker_stop,
                    &s->workers[i], NULL);
  for (int i = 0; i < s->started; i++)
    pthread_join(s->workers[i].thread, NULL);
  s->started = 0;
}

void permit_server_free(permit_server *s) {
  if (s == NULL) return;
  if (s->started) permit_server_stop(s);
  for (int i = 0; s->workers != NULL && i < s->nworkers; i++) {
    worker *w = &s->workers[i];
    while (w->conns != NULL) conn_free(w->conns);
    for (int j = 0; j < MAX_LISTENERS; j++) {
      if (w->lev[j] != NULL) evconnlistener_free(w->lev[j]);
      listen_arg *la = w->lev_arg[j];
      if (la != NULL && la->pause_tm != NULL) event_free(la->pause_tm);
      free(la);
    }
    /* Run what bufferevent_free() deferred before the loop goes away:
     * event_base_free() drops queued callbacks, and the references they
     * hold, without running them. */
    if (w->base != NULL) {
      event_base_loop(w->base, EVLOOP_NONBLOCK);
      event_base_free(w->base);
    }
  }
  for (int j = 0; j < s->nlisteners; j++) {
    listener *l = &s->listeners[j];
    free(l->name);
    free(l->bearer);
    free(l->calls);
    if (l->tls != NULL) SSL_CTX_free(l->tls);
  }
  free(s->workers);
  free(s);
}

typedef struct on_workers_job {
  void (*fn)(int, void *);
  void *arg;
  int index;
} on_workers_job;

static void on_workers_run(evutil_socket_t fd, short what, void *arg) {
  on_workers_job *job = arg;
  (void)fd, (void)what;
  job->fn(job->index, job->arg);
  free(job);
}

int permit_server_on_workers(permit_server *s, void (*fn)(int, void *),
                             void *arg) {
  for (int i = 0; i < s->nworkers; i++) {
    on_workers_job *job = malloc(sizeof *job);
    if (job == NULL) return PERMIT_ENOMEM;
    *job = (on_workers_job){fn, arg, i};
    if (event_base_once(s->workers[i].base, -1, EV_TIMEOUT, on_workers_run,
                        job, NULL) != 0) {
      free(job);
      return PERMIT_EIO;
    }
  }
  return 0;
}

void permit_server_metrics(permit_server *s, struct evbuffer *out) {
  static const char *const help[][2] = {
      {"permit_connections_accepted_total", "Connections accepted."},
      {"permit_connections_refused_total", "Connections refused at the cap."},
      {"permit_connections_open", "Connections open now."},
      {"permit_handshakes_failed_total", "TLS handshakes that failed."},
      {"permit_streams_total", "HTTP/2 streams opened by clients."},
      {"permit_received_bytes_total", "Bytes received (after TLS)."},
      {"permit_sent_bytes_total", "Bytes sent (before TLS)."}};
  for (int k = 0; k < 7; k++) {
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", help[k][0],
                        help[k][1], help[k][0],
                        k == 2 ? "gauge" : "counter");
    for (int j = 0; j < s->nlisteners; j++) {
      listener *l = &s->listeners[j];
      atomic_uint_fast64_t *v[] = {&l->accepted, &l->refused,
                                   &l->open,     &l->handshake_failed,
                                   &l->streams,  &l->bytes_in,
                                   &l->bytes_out};
      evbuffer_add_printf(out, "%s{listener=\"%s\"} %llu\n", help[k][0],
                          l->name, (unsigned long long)atomic_load(v[k]));
    }
  }
  evbuffer_add_printf(out,
                      "# HELP permit_grpc_calls_total gRPC calls by method "
                      "and status.\n# TYPE permit_grpc_calls_total counter\n");
  for (int j = 0; j < s->nlisteners; j++) {
    listener *l = &s->listeners[j];
    for (size_t m = 0; m <= l->nmethods; m++)
      for (int st = 0; st < NSTATUS; st++) {
        uint64_t n = atomic_load(&l->calls[m * NSTATUS + (size_t)st]);
        if (n == 0) continue;
        evbuffer_add_printf(
            out,
            "permit_grpc_calls_total{listener=\"%s\",method=\"%s\","
            "code=\"%s\"} %llu\n",
            l->name, m < l->nmethods ? l->methods[m].path : "unknown",
            permit_grpc_status_name(st), (unsigned long long)n);
      }
  }
}
