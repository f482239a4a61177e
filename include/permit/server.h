/*
 * permit/server.h - a gRPC server on nghttp2, libevent and OpenSSL.
 *
 * One event loop per worker thread; every listener has one socket per
 * worker (SO_REUSEPORT), so the kernel spreads connections and no lock
 * sits on the request path.  A connection, its streams and its calls live
 * on one worker: handlers run on that worker's thread and must not block.
 *
 * A call is one gRPC stream.  Unary and server-streaming methods get their
 * request message once the client has half-closed; bidirectional ones get
 * each message as it arrives.  Responses are queued with
 * permit_call_send() and sent as HTTP/2 flow control allows; a streaming
 * handler keeps memory bounded by producing only while
 * permit_call_queued() is under its high-water mark and resuming from
 * on_writable.
 */
#ifndef PERMIT_SERVER_H
#define PERMIT_SERVER_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "permit/error.h"
#include "permit/grpc_wire.h"

struct event_base;
struct evbuffer;

typedef struct permit_server permit_server;
typedef struct permit_call permit_call;

/* Limits; protocol.md section 10 gives the defaults. */
typedef struct permit_server_limits {
  uint32_t max_message;            /* largest gRPC message, 1 MiB */
  uint32_t max_concurrent_streams; /* per connection, 128 */
  uint32_t max_header_list;        /* bytes of one header block, 16 KiB */
  int handshake_timeout_ms;        /* accept to first h2 frame, 10 s */
  int idle_timeout_ms;             /* no stream open, 300 s */
  int keepalive_ms;         /* silence, streams open, before a PING: 60 s */
  int keepalive_timeout_ms; /* then silence before the end: 20 s */
  int max_connections;             /* per server, 4096 */
  size_t call_high_water;          /* queued bytes per call, 256 KiB */
} permit_server_limits;

void permit_server_limits_default(permit_server_limits *l);

typedef enum permit_rpc_kind {
  PERMIT_RPC_UNARY,
  PERMIT_RPC_SERVER_STREAM,
  PERMIT_RPC_BIDI
} permit_rpc_kind;

/* A gRPC method a listener serves. */
typedef struct permit_method {
  const char *path; /* "/grpc.health.v1.Health/Check" */
  permit_rpc_kind kind;
  /* A request message (exactly one for unary and server-streaming). */
  void (*on_message)(permit_call *c, const uint8_t *msg, size_t len);
  /* Bidi: the client half-closed.  NULL finishes the call with OK. */
  void (*on_half_close)(permit_call *c);
  /* Streaming: the send queue fell below half the high-water mark. */
  void (*on_writable)(permit_call *c);
  /* Exactly once, when the call ends for any reason; |cancelled| when it
   * ended before the handler finished it (peer reset, deadline, shutdown).
   * Free per-call data here; |c| is invalid afterwards. */
  void (*on_close)(permit_call *c, int cancelled);
  void *arg; /* permit_call_method_arg() */
} permit_method;

/* A plain HTTP/2 GET route (for /metrics). */
typedef struct permit_http_route {
  const char *path;
  /* Appends the body to |body|; returns the HTTP status. */
  int (*handler)(void *arg, struct evbuffer *body, const char **content_type);
  void *arg;
} permit_http_route;

/*
 * A web request (HTTP, not gRPC) on a listener's web routes: a page of
 * the consent centre, a one-click unsubscribe.  Strings are "" when the
 * header is absent and "\x01" when it was too long to keep; all are valid
 * during the handler only.
 */
typedef struct permit_http_request {
  const char *method;         /* "GET", "HEAD" or "POST" */
  const char *path;           /* without the query */
  const char *query;          /* after '?', "" when none */
  const char *content_type;
  const char *origin;         /* the Origin header */
  const char *sec_fetch_site; /* the Sec-Fetch-Site header */
  const char *authority;      /* :authority */
  const uint8_t *body;        /* NULL when empty */
  size_t body_len;
} permit_http_request;

/*
 * A web route: requests whose path is |prefix| or starts with it.  The
 * handler runs on the worker once the request (and its body, at most
 * |max_body| bytes, else 413) is complete, and answers with
 * permit_http_respond(), at once or later from the same worker (e.g.
 * after a durable write elsewhere: post the answer back with
 * event_base_once on permit_call_base()).  on_close runs exactly once
 * when the exchange ends; after it the call must not be touched.
 */
typedef struct permit_web_route {
  const char *prefix;
  size_t max_body;
  void (*handler)(permit_call *c, const permit_http_request *r);
  void (*on_close)(permit_call *c, int cancelled); /* may be NULL */
  void *arg; /* permit_call_method_arg() */
} permit_web_route;

typedef struct permit_http_header {
  const char *name; /* lower case (HTTP/2) */
  const char *value;
} permit_http_header;

/*
 * Answers a web request with |status|, |content_type|, the |n| extra
 * headers and a copy of the body (not sent for HEAD).  Later calls do
 * nothing.  Worker thread only.
 */
void permit_http_respond(permit_call *c, int status, const char *content_type,
                         const permit_http_header *hdrs, size_t n,
                         const void *body, size_t len);

/* True once the web request has been answered (or the call ended). */
int permit_http_answered(const permit_call *c);

typedef struct permit_listener_config {
  const char *name; /* "peer", "local": for logs and metrics */
  const char *host; /* address to bind, e.g. "127.0.0.1" */
  int port;         /* 0: the kernel chooses */
  /* NULL: h2c (prior knowledge).  Otherwise TLS 1.3 with ALPN h2; the
   * server takes a reference.  With a pinning context, calls carry the
   * peer's name (permit_call_peer). */
  SSL_CTX *tls;
  const char *bearer_token; /* when set, required as "authorization" */
  const permit_method *methods;
  size_t nmethods;
  const permit_http_route *routes;
  size_t nroutes;
  /* Web routes (GET, HEAD, POST of forms); tried before the gRPC methods
   * for any request that is not application/grpc. */
  const permit_web_route *web;
  size_t nweb;
} permit_listener_config;

/* A server with |workers| threads (0: one per core). */
permit_server *permit_server_new(int workers, const permit_server_limits *l,
                                 permit_err *err);

/* Binds a listener; |*bound_port| receives its port. Before start only. */
int permit_server_listen(permit_server *s, const permit_listener_config *cfg,
                         int *bound_port, permit_err *err);

/* Starts the worker threads. */
int permit_server_start(permit_server *s, permit_err *err);

/* Stops accepting, ends every call (UNAVAILABLE), joins the workers. */
void permit_server_stop(permit_server *s);

void permit_server_free(permit_server *s);

int permit_server_worker_count(const permit_server *s);

/*
 * Runs fn(worker_index, arg) on every worker's own thread, soon.  Safe
 * from any thread.  |arg| must stay valid until every run is done.
 */
int permit_server_on_workers(permit_server *s, void (*fn)(int, void *),
                             void *arg);

/* Prometheus text exposition of the server's counters. */
void permit_server_metrics(permit_server *s, struct evbuffer *out);

/* ---- calls (worker thread only) ---- */

/*
 * Queues one response message.  PERMIT_ETOOBIG over the message limit,
 * PERMIT_EINVAL once finished, PERMIT_ENOMEM.
 */
int permit_call_send(permit_call *c, const uint8_t *msg, size_t len);

/*
 * Ends the call with INVALID_ARGUMENT, naming the field, when a string
 * field of the request |msg| (|len| bytes, of type |desc|) holds a NUL
 * byte (see permit_pb_strings_ok).  Returns 1 when it did, 0 otherwise.
 */
int permit_call_refuse_nul(permit_call *c,
                           const ProtobufCMessageDescriptor *desc,
                           const uint8_t *msg, size_t len);

/*
 * Ends the call with |status| and a message (percent-encoded on the wire).
 * Sends queued messages first, then the trailers.  Later calls do nothing.
 */
void permit_call_finish(permit_call *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Bytes queued and not yet handed to HTTP/2. */
size_t permit_call_queued(const permit_call *c);
/* True once queued() is at or over the high-water mark. */
int permit_call_full(const permit_call *c);
int permit_call_finished(const permit_call *c);

void permit_call_set_data(permit_call *c, void *data);
void *permit_call_data(const permit_call *c);
void *permit_call_method_arg(const permit_call *c);
/* The pinned peer name on a mutual-TLS listener, else NULL. */
const char *permit_call_peer(const permit_call *c);
int permit_call_worker(const permit_call *c);
struct event_base *permit_call_base(const permit_call *c);

/* ---- per-worker lists of open calls ---- */

/*
 * Lists of open calls, one per worker, for streams that wait for news
 * (Health/Watch, Venue/WatchContacts): a notifier runs on each worker
 * (permit_server_on_workers) and walks that worker's list.  Worker
 * threads only; no lock needed.
 */
typedef struct permit_call_list permit_call_list;

permit_call_list *permit_call_list_new(permit_server *s);
/* Frees |l|; the server must be stopped (no call still on it). */
void permit_call_list_free(permit_call_list *l);

/*
 * Puts |c| on its worker's list.  A call is on one list at most; the
 * server takes it off when the call closes, before on_close runs.
 */
void permit_call_list_add(permit_call_list *l, permit_call *c);

/* Calls fn(c, arg) for each call on |worker|'s list; fn may finish it. */
void permit_call_list_each(permit_call_list *l, int worker,
                           void (*fn)(permit_call *c, void *arg), void *arg);

#endif
