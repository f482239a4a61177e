/*
 * permit/client.h - a gRPC client on nghttp2 and libevent, for calls to
 * peers (mutual TLS) and to the local API (h2c).
 *
 * A client is one HTTP/2 connection to one server, driven by the caller's
 * event loop; calls are streams on it.  It connects on the first call and,
 * after a failure, again on a later one, waiting an exponential back-off
 * with jitter between attempts; calls made meanwhile wait for the attempt
 * (or fail with UNAVAILABLE when it fails).  Every call ends with exactly
 * one on_done.
 */
#ifndef PERMIT_CLIENT_H
#define PERMIT_CLIENT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "permit/error.h"
#include "permit/grpc_wire.h"

struct event_base;

typedef struct permit_client permit_client;
typedef struct permit_client_call permit_client_call;

typedef struct permit_client_config {
  const char *host;      /* IPv4 address */
  int port;
  SSL_CTX *tls;          /* NULL: h2c; else TLS (the client takes a ref) */
  const char *authority; /* :authority and SNI; NULL: host:port */
  const char *bearer_token;
  int connect_timeout_ms;  /* 0: 5000 */
  int backoff_initial_ms;  /* 0: 200 */
  int backoff_max_ms;      /* 0: 30000 */
  uint32_t max_message;    /* 0: 1 MiB */
  /* Keepalive (0: none): while calls are open and nothing has come from
   * the server for keepalive_ms, a PING is sent; when nothing comes for
   * keepalive_timeout_ms (0: 10000) after it, the connection counts as
   * lost (its calls end with UNAVAILABLE).  A peer that vanished without
   * closing is noticed in seconds, not when TCP gives up. */
  int keepalive_ms;
  int keepalive_timeout_ms;
} permit_client_config;

typedef struct permit_client_handlers {
  /* A response message; |msg| is valid during the call only. */
  void (*on_message)(void *arg, const uint8_t *msg, size_t len);
  /* The call ended: a gRPC status and its (decoded) message. */
  void (*on_done)(void *arg, int status, const char *message);
} permit_client_handlers;

/* A client for |cfg| on |base|; nothing is connected yet. */
permit_client *permit_client_new(struct event_base *base,
                                 const permit_client_config *cfg,
                                 permit_err *err);

/* Closes the connection; open calls end with CANCELLED first. */
void permit_client_free(permit_client *c);

/*
 * Starts a call of |path| with one request message (unary or
 * server-streaming).  |timeout_ms| > 0 sets a deadline (sent as
 * grpc-timeout and enforced here: DEADLINE_EXCEEDED).  |h| and |arg| must
 * stay valid until on_done.  Returns the call (owned by the client, valid
 * until on_done returns), or NULL when out of memory.
 */
permit_client_call *permit_client_start(permit_client *c, const char *path,
                                        const uint8_t *req, size_t len,
                                        int64_t timeout_ms,
                                        const permit_client_handlers *h,
                                        void *arg);

/* Ends the call: RST_STREAM, then on_done(CANCELLED). */
void permit_client_cancel(permit_client_call *call);

/*
 * Stops (|paused| 1) or resumes reading the call's responses: while
 * paused no flow-control window is returned to the server, so it must
 * stop sending once the window is spent.
 */
void permit_client_pause(permit_client_call *call, int paused);

/* True while connected (handshake done). */
int permit_client_connected(const permit_client *c);

/*
 * A blocking unary call on a private event loop, for command-line tools
 * and tests.  On return |*status| holds the gRPC status, |msg| (capacity
 * |msgcap|) its message, and on OK |*resp| a malloc'd response (caller
 * frees).  Returns 0 when a status was obtained, else an error.
 */
int permit_client_unary_sync(const permit_client_config *cfg,
                             const char *path, const uint8_t *req,
                             size_t len, int64_t timeout_ms, int *status,
                             char *msg, size_t msgcap, uint8_t **resp,
                             size_t *resp_len);

/*
 * A blocking call with one request and any number of responses (unary or
 * server-streaming), each passed to |on_message|; the same contract as
 * permit_client_unary_sync() otherwise.  |on_message| may be NULL.
 */
int permit_client_stream_sync(const permit_client_config *cfg,
                              const char *path, const uint8_t *req,
                              size_t len, int64_t timeout_ms,
                              void (*on_message)(void *, const uint8_t *,
                                                 size_t),
                              void *arg, int *status, char *msg,
                              size_t msgcap);

#endif
