/*
 * client.c - gRPC over HTTP/2 on nghttp2 and libevent (client side).
 *
 * Flow control is manual: the session does not return window on its own;
 * a call returns it as its data is consumed, so a paused call makes the
 * server stop once the window is spent.
 */
#include "permit/client.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include "permit/crypto.h"

#define OUT_HIGH (64 * 1024)

typedef enum { C_IDLE, C_CONNECTING, C_READY, C_BACKOFF } cstate;

struct permit_client_call {
  permit_client *c;
  permit_client_call *prev, *next;
  int32_t id; /* 0 until submitted */
  char path[256];
  uint8_t *req;
  size_t req_len, req_off;
  const permit_client_handlers *h;
  void *arg;
  permit_grpc_deframer df;
  int http_status, grpc_status, paused;
  char grpc_msg[512];
  size_t unconsumed;
  struct event *deadline;
  int64_t timeout_ms;
};

struct permit_client {
  struct event_base *base;
  char *host, *authority, *bearer;
  int port;
  SSL_CTX *tls;
  int connect_timeout_ms, backoff_initial_ms, backoff_max_ms;
  int keepalive_ms, keepalive_timeout_ms;
  uint32_t max_message;
  struct bufferevent *bev;
  nghttp2_session *h2;
  cstate state;
  struct event *flush_ev, *backoff_ev, *ping_ev;
  int backoff_ms;
  int64_t last_rx_ms;   /* when bytes last came from the server */
  int64_t ping_sent_ms; /* when the unanswered PING went out */
  int ping_out;
  permit_client_call *calls;
  int in_recv; /* inside nghttp2 callbacks: do not free the session */
};

static nghttp2_session_callbacks *client_callbacks;
static nghttp2_option *client_options;
static pthread_once_t client_once = PTHREAD_ONCE_INIT;

static void client_connect(permit_client *c);
static void client_flush(permit_client *c);

/* Removes |call| from the client and reports its end. */
static void call_end(permit_client_call *call, int status, const char *msg) {
  permit_client *c = call->c;
  if (call->prev != NULL)
    call->prev->next = call->next;
  else
    c->calls = call->next;
  if (call->next != NULL) call->next->prev = call->prev;
  if (call->id != 0 && c->h2 != NULL)
    nghttp2_session_set_stream_user_data(c->h2, call->id, NULL);
  if (call->deadline != NULL) event_free(call->deadline);
  permit_grpc_deframer_free(&call->df);
  free(call->req);
  const permit_client_handlers *h = call->h;
  void *arg = call->arg;
  free(call);
  if (h->on_done != NULL) h->on_done(arg, status, msg != NULL ? msg : "");
}

/* Ends every call: the connection is gone. */
static void fail_all(permit_client *c, int only_submitted, int status,
                     const char *msg) {
  permit_client_call *call = c->calls;
  while (call != NULL) {
    permit_client_call *next = call->next;
    if (!only_submitted || call->id != 0) call_end(call, status, msg);
    call = next;
  }
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void client_drop(permit_client *c) {
  if (c->ping_ev != NULL) evtimer_del(c->ping_ev);
  c->ping_out = 0;
  if (c->h2 != NULL) {
    nghttp2_session_del(c->h2);
    c->h2 = NULL;
  }
  if (c->bev != NULL) {
    bufferevent_free(c->bev);
    c->bev = NULL;
  }
}

/* The connection ended; |failed_connect| when it never became ready. */
static void client_lost(permit_client *c, int failed_connect,
                        const char *why) {
  char msg[320];
  snprintf(msg, sizeof msg, "%s %s:%d: %s",
           failed_connect ? "cannot connect to" : "connection lost to",
           c->host, c->port, why);
  client_drop(c);
  if (failed_connect) {
    fail_all(c, 0, PERMIT_GRPC_UNAVAILABLE, msg);
    /* Next attempt after a jittered, growing back-off. */
    uint8_t r[2] = {0, 0};
    permit_random(r, sizeof r);
    int wait = c->backoff_ms / 2 + (int)((r[0] << 8 | r[1]) %
                                         (unsigned)(c->backoff_ms / 2 + 1));
    c->backoff_ms *= 2;
    if (c->backoff_ms > c->backoff_max_ms) c->backoff_ms = c->backoff_max_ms;
    c->state = C_BACKOFF;
    struct timeval tv = {wait / 1000, (wait % 1000) * 1000};
    evtimer_add(c->backoff_ev, &tv);
  } else {
    fail_all(c, 1, PERMIT_GRPC_UNAVAILABLE, msg);
    c->state = C_IDLE;
    if (c->calls != NULL) client_connect(c);
  }
}

static ssize_t req_read(nghttp2_session *h2, int32_t id, uint8_t *buf,
                        size_t length, uint32_t *flags,
                        nghttp2_data_source *src, void *user) {
  permit_client_call *call = src->ptr;
  (void)h2, (void)id, (void)user;
  size_t n = call->req_len - call->req_off;
  if (n > length) n = length;
  memcpy(buf, call->req + call->req_off, n);
  call->req_off += n;
  if (call->req_off == call->req_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

#define NV(n, v) \
  {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

static void call_submit(permit_client_call *call) {
  permit_client *c = call->c;
  char authority[300], timeout[32] = "", authz[256] = "";
  if (c->authority != NULL)
    snprintf(authority, sizeof authority, "%s", c->authority);
  else
    snprintf(authority, sizeof authority, "%s:%d", c->host, c->port);
  nghttp2_nv hdrs[8] = {NV(":method", "POST"),
                        NV(":scheme", c->tls ? "https" : "http"),
                        NV(":path", call->path), NV(":authority", authority),
                        NV("content-type", "application/grpc"),
                        NV("te", "trailers")};
  size_t n = 6;
  if (call->timeout_ms > 0) {
    permit_grpc_format_timeout(call->timeout_ms * 1000, timeout,
                               sizeof timeout);
    hdrs[n++] = (nghttp2_nv)NV("grpc-timeout", timeout);
  }
  if (c->bearer != NULL) {
    snprintf(authz, sizeof authz, "Bearer %s", c->bearer);
    hdrs[n++] = (nghttp2_nv)NV("authorization", authz);
  }
  nghttp2_data_provider prd = {.source.ptr = call, .read_callback = req_read};
  int32_t id = nghttp2_submit_request(c->h2, NULL, hdrs, n, &prd, call);
  if (id < 0) {
    call_end(call, PERMIT_GRPC_UNAVAILABLE, nghttp2_strerror(id));
    return;
  }
  call->id = id;
}

static void submit_pending(permit_client *c) {
  for (permit_client_call *call = c->calls, *next; call != NULL; call = next) {
    next = call->next;
    if (call->id == 0) call_submit(call);
  }
}

static void client_flush(permit_client *c) {
  if (c->h2 == NULL || c->in_recv) return;
  struct evbuffer *out = bufferevent_get_output(c->bev);
  while (evbuffer_get_length(out) < OUT_HIGH) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(c->h2, &data);
    if (n < 0) {
      client_lost(c, 0, nghttp2_strerror((int)n));
      return;
    }
    if (n == 0) break;
    evbuffer_add(out, data, (size_t)n);
  }
  if (!nghttp2_session_want_read(c->h2) &&
      !nghttp2_session_want_write(c->h2) && evbuffer_get_length(out) == 0)
    client_lost(c, 0, "session ended");
}

static void on_flush(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  client_flush(arg);
}

static void schedule_flush(permit_client *c) {
  if (c->flush_ev != NULL) event_active(c->flush_ev, 0, 0);
}

/* ---- nghttp2 callbacks ---- */

static int cb_header(nghttp2_session *h2, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  (void)flags, (void)user;
  permit_client_call *call =
      nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
  if (call == NULL) return 0;
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
  if (IS(":status")) {
    call->http_status = 0;
    for (size_t i = 0; i < valuelen && i < 3; i++)
      call->http_status = call->http_status * 10 + (value[i] - '0');
  } else if (IS("grpc-status")) {
    int st = 0;
    for (size_t i = 0; i < valuelen && i < 3; i++) {
      if (value[i] < '0' || value[i] > '9') {
        st = PERMIT_GRPC_UNKNOWN;
        break;
      }
      st = st * 10 + (value[i] - '0');
    }
    call->grpc_status = st;
  } else if (IS("grpc-message")) {
    permit_grpc_percent_decode((const char *)value, valuelen, call->grpc_msg,
                               sizeof call->grpc_msg);
  }
#undef IS
  return 0;
}

typedef struct deliver_ctx {
  permit_client_call *call;
} deliver_ctx;

static int deliver(void *arg, const uint8_t *msg, size_t len, int compressed) {
  permit_client_call *call = arg;
  if (compressed) return PERMIT_EINVAL;
  if (call->h->on_message != NULL) call->h->on_message(call->arg, msg, len);
  return 0;
}

static int cb_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t id,
                         const uint8_t *data, size_t len, void *user) {
  (void)flags, (void)user;
  permit_client_call *call = nghttp2_session_get_stream_user_data(h2, id);
  if (call == NULL) {
    nghttp2_session_consume(h2, id, len);
    return 0;
  }
  int rc = permit_grpc_deframer_feed(&call->df, data, len, deliver, call);
  if (rc != 0) {
    nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    call->grpc_status = rc == PERMIT_ETOOBIG ? PERMIT_GRPC_RESOURCE_EXHAUSTED
                                             : PERMIT_GRPC_INTERNAL;
    snprintf(call->grpc_msg, sizeof call->grpc_msg, "%s",
             rc == PERMIT_ETOOBIG ? "response message over the limit"
                                  : "malformed response message");
  }
  if (call->paused)
    call->unconsumed += len;
  else
    nghttp2_session_consume(h2, id, len);
  return 0;
}

static int cb_stream_close(nghttp2_session *h2, int32_t id, uint32_t code,
                           void *user) {
  (void)user;
  permit_client_call *call = nghttp2_session_get_stream_user_data(h2, id);
  if (call == NULL) return 0;
  int status = call->grpc_status;
  const char *msg = call->grpc_msg;
  char buf[128];
  if (status < 0) {
    if (code == NGHTTP2_REFUSED_STREAM) {
      status = PERMIT_GRPC_UNAVAILABLE;
      msg = "stream refused by the server";
    } else if (code == NGHTTP2_CANCEL) {
      status = PERMIT_GRPC_CANCELLED;
      msg = "stream cancelled";
    } else if (code != NGHTTP2_NO_ERROR) {
      status = PERMIT_GRPC_INTERNAL;
      snprintf(buf, sizeof buf, "stream reset: %s",
               nghttp2_http2_strerror(code));
      msg = buf;
    } else if (call->http_status != 200) {
      /* PROTOCOL-HTTP2.md's mapping of HTTP statuses without grpc-status. */
      switch (call->http_status) {
      case 400: status = PERMIT_GRPC_INTERNAL; break;
      case 401: status = PERMIT_GRPC_UNAUTHENTICATED; break;
      case 403: status = PERMIT_GRPC_PERMISSION_DENIED; break;
      case 404: status = PERMIT_GRPC_UNIMPLEMENTED; break;
      case 429: case 502: case 503: case 504:
        status = PERMIT_GRPC_UNAVAILABLE; break;
      default: status = PERMIT_GRPC_UNKNOWN;
      }
      snprintf(buf, sizeof buf, "HTTP status %d", call->http_status);
      msg = buf;
    } else {
      status = PERMIT_GRPC_INTERNAL;
      msg = "response without grpc-status";
    }
  } else if (status == PERMIT_GRPC_OK && !permit_grpc_deframer_idle(&call->df)) {
    status = PERMIT_GRPC_INTERNAL;
    msg = "response ended inside a message";
  }
  char copy[512];
  snprintf(copy, sizeof copy, "%s", msg);
  call_end(call, status, copy);
  return 0;
}

static void client_setup(void) {
  evthread_use_pthreads();
  nghttp2_session_callbacks_new(&client_callbacks);
  nghttp2_session_callbacks_set_on_header_callback(client_callbacks,
                                                   cb_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(client_callbacks,
                                                            cb_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(client_callbacks,
                                                         cb_stream_close);
  nghttp2_option_new(&client_options);
  nghttp2_option_set_no_auto_window_update(client_options, 1);
  nghttp2_option_set_no_closed_streams(client_options, 1);
}

/* ---- keepalive ---- */

static void ping_arm(permit_client *c, int64_t ms) {
  if (ms < 1) ms = 1;
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
  evtimer_add(c->ping_ev, &tv);
}

/* Bytes the kernel holds for this connection, not read yet: a loop that
 * was busy may run the PING timer before the read of the answer. */
static int unread_bytes(permit_client *c) {
  int n = 0;
  evutil_socket_t fd = c->bev != NULL ? bufferevent_getfd(c->bev) : -1;
  if (fd < 0 || ioctl(fd, FIONREAD, &n) != 0) return 0;
  return n;
}

/*
 * The keepalive timer of a ready connection: a PING once the server has
 * been quiet for keepalive_ms while calls are open (an idle connection
 * is the server's to close), and the connection given up when nothing at
 * all comes back within keepalive_timeout_ms.  Without it a follow
 * stream over a link that went dark waits for TCP to give up: minutes of
 * retransmission back-off, or never when this side has nothing to send.
 */
static void on_ping(evutil_socket_t fd, short what, void *arg) {
  permit_client *c = arg;
  (void)fd, (void)what;
  if (c->state != C_READY || c->h2 == NULL) return;
  int64_t now = mono_ms();
  if (c->ping_out) {
    if (c->last_rx_ms >= c->ping_sent_ms) {
      c->ping_out = 0; /* answered, or something else came */
    } else if (now - c->ping_sent_ms < c->keepalive_timeout_ms) {
      ping_arm(c, c->keepalive_timeout_ms - (now - c->ping_sent_ms));
      return;
    } else if (unread_bytes(c) > 0) {
      ping_arm(c, 100);
      return;
    } else {
      char why[64];
      snprintf(why, sizeof why, "no answer to a PING in %d ms",
               c->keepalive_timeout_ms);
      client_lost(c, 0, why);
      return;
    }
  }
  int64_t quiet = now - c->last_rx_ms;
  if (c->calls == NULL || quiet < c->keepalive_ms) {
    ping_arm(c, c->calls == NULL ? c->keepalive_ms : c->keepalive_ms - quiet);
    return;
  }
  int rc = nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL);
  if (rc != 0) {
    client_lost(c, 0, nghttp2_strerror(rc));
    return;
  }
  c->ping_out = 1;
  c->ping_sent_ms = now;
  ping_arm(c, c->keepalive_timeout_ms);
  client_flush(c);
}

/* ---- connection ---- */

static void on_read(struct bufferevent *bev, void *arg) {
  permit_client *c = arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  c->last_rx_ms = mono_ms();
  struct evbuffer_iovec v[16];
  int n = evbuffer_peek(in, -1, NULL, v, 16);
  if (n > 16) n = 16;
  size_t used = 0;
  c->in_recv = 1;
  for (int i = 0; i < n; i++) {
    ssize_t r = nghttp2_session_mem_recv(c->h2, v[i].iov_base, v[i].iov_len);
    if (r < 0) {
      c->in_recv = 0;
      client_lost(c, 0, nghttp2_strerror((int)r));
      return;
    }
    used += v[i].iov_len;
  }
  c->in_recv = 0;
  evbuffer_drain(in, used);
  client_flush(c);
}

static void on_write(struct bufferevent *bev, void *arg) {
  (void)bev;
  client_flush(arg);
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  permit_client *c = arg;
  if (what & BEV_EVENT_CONNECTED) {
    if (c->tls != NULL) {
      const unsigned char *alpn = NULL;
      unsigned alen = 0;
      SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(bev), &alpn, &alen);
      if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
        client_lost(c, 1, "server did not agree to h2");
        return;
      }
    }
    bufferevent_set_timeouts(bev, NULL, NULL);
    if (nghttp2_session_client_new2(&c->h2, client_callbacks, c,
                                    client_options) != 0) {
      client_lost(c, 1, "out of memory");
      return;
    }
    /* A large connection window: per-stream windows do the pacing. */
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1);
    c->state = C_READY;
    c->backoff_ms = c->backoff_initial_ms;
    if (c->keepalive_ms > 0) {
      c->last_rx_ms = mono_ms();
      ping_arm(c, c->keepalive_ms);
    }
    submit_pending(c);
    client_flush(c);
    return;
  }
  if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF | BEV_EVENT_TIMEOUT)) {
    char why[256] = "closed";
    unsigned long e = c->tls ? bufferevent_get_openssl_error(bev) : 0;
    if (e != 0)
      ERR_error_string_n(e, why, sizeof why);
    else if (what & BEV_EVENT_TIMEOUT)
      snprintf(why, sizeof why, "timed out");
    else if (what & BEV_EVENT_ERROR)
      snprintf(why, sizeof why, "%s",
               evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    client_lost(c, c->state == C_CONNECTING, why);
  }
}

static void client_connect(permit_client *c) {
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)c->port);
  if (inet_pton(AF_INET, c->host, &sin.sin_addr) != 1) {
    c->state = C_CONNECTING;
    client_lost(c, 1, "not an IPv4 address");
    return;
  }
  if (c->tls != NULL) {
    SSL *ssl = SSL_new(c->tls);
    if (ssl != NULL && c->authority != NULL)
      SSL_set_tlsext_host_name(ssl, c->authority);
    c->bev = ssl == NULL ? NULL
                         : bufferevent_openssl_socket_new(
                               c->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                               BEV_OPT_CLOSE_ON_FREE);
  } else {
    c->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
  }
  c->state = C_CONNECTING;
  if (c->bev == NULL) {
    client_lost(c, 1, "out of memory");
    return;
  }
  bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
  struct timeval tv = {c->connect_timeout_ms / 1000,
                       (c->connect_timeout_ms % 1000) * 1000};
  bufferevent_set_timeouts(c->bev, &tv, &tv);
  bufferevent_enable(c->bev, EV_READ | EV_WRITE);
  if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&sin,
                                 sizeof sin) != 0) {
    client_lost(c, 1, "connect failed");
    return;
  }
  evutil_socket_t fd = bufferevent_getfd(c->bev);
  int one = 1;
  if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void on_backoff(evutil_socket_t fd, short what, void *arg) {
  permit_client *c = arg;
  (void)fd, (void)what;
  c->state = C_IDLE;
  if (c->calls != NULL) client_connect(c);
}

permit_client *permit_client_new(struct event_base *base,
                                 const permit_client_config *cfg,
                                 permit_err *err) {
  pthread_once(&client_once, client_setup);
  permit_client *c = calloc(1, sizeof *c);
  if (c == NULL) {
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  c->base = base;
  c->host = strdup(cfg->host);
  c->port = cfg->port;
  c->authority = cfg->authority ? strdup(cfg->authority) : NULL;
  c->bearer = cfg->bearer_token ? strdup(cfg->bearer_token) : NULL;
  if (cfg->tls != NULL) {
    SSL_CTX_up_ref(cfg->tls);
    c->tls = cfg->tls;
  }
  c->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms
                                                      : 5000;
  c->backoff_initial_ms = cfg->backoff_initial_ms > 0 ? cfg->backoff_initial_ms
                                                      : 200;
  c->backoff_max_ms = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : 30000;
  c->backoff_ms = c->backoff_initial_ms;
  c->keepalive_ms = cfg->keepalive_ms > 0 ? cfg->keepalive_ms : 0;
  c->keepalive_timeout_ms =
      cfg->keepalive_timeout_ms > 0 ? cfg->keepalive_timeout_ms : 10000;
  c->max_message = cfg->max_message > 0 ? cfg->max_message : 1 << 20;
  c->flush_ev = event_new(base, -1, 0, on_flush, c);
  c->backoff_ev = evtimer_new(base, on_backoff, c);
  c->ping_ev = evtimer_new(base, on_ping, c);
  if (c->host == NULL || c->flush_ev == NULL || c->backoff_ev == NULL ||
      c->ping_ev == NULL) {
    permit_client_free(c);
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  return c;
}

void permit_client_free(permit_client *c) {
  if (c == NULL) return;
  fail_all(c, 0, PERMIT_GRPC_CANCELLED, "client closed");
  client_drop(c);
  if (c->flush_ev != NULL) event_free(c->flush_ev);
  if (c->backoff_ev != NULL) event_free(c->backoff_ev);
  if (c->ping_ev != NULL) event_free(c->ping_ev);
  if (c->tls != NULL) SSL_CTX_free(c->tls);
  free(c->host);
  free(c->authority);
  free(c->bearer);
  free(c);
}

int permit_client_connected(const permit_client *c) {
  return c->state == C_READY;
}

static void on_call_deadline(evutil_socket_t fd, short what, void *arg) {
  permit_client_call *call = arg;
  permit_client *c = call->c;
  (void)fd, (void)what;
  if (call->id != 0 && c->h2 != NULL) {
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->id,
                              NGHTTP2_CANCEL);
    schedule_flush(c);
  }
  call_end(call, PERMIT_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
}

permit_client_call *permit_client_start(permit_client *c, const char *path,
                                        const uint8_t *req, size_t len,
                                        int64_t timeout_ms,
                                        const permit_client_handlers *h,
                                        void *arg) {
  permit_client_call *call = calloc(1, sizeof *call);
  if (call == NULL) return NULL;
  call->c = c;
  snprintf(call->path, sizeof call->path, "%s", path);
  call->req_len = len + PERMIT_GRPC_FRAME_HEADER;
  call->req = malloc(call->req_len);
  if (call->req == NULL) {
    free(call);
    return NULL;
  }
  permit_grpc_frame_header(call->req, (uint32_t)len);
  if (len > 0) memcpy(call->req + PERMIT_GRPC_FRAME_HEADER, req, len);
  call->h = h;
  call->arg = arg;
  call->grpc_status = -1;
  call->timeout_ms = timeout_ms;
  permit_grpc_deframer_init(&call->df, c->max_message);
  call->next = c->calls;
  if (c->calls != NULL) c->calls->prev = call;
  c->calls = call;
  if (timeout_ms > 0) {
    call->deadline = evtimer_new(c->base, on_call_deadline, call);
    struct timeval tv = {(time_t)(timeout_ms / 1000),
                         (suseconds_t)(timeout_ms % 1000) * 1000};
    evtimer_add(call->deadline, &tv);
  }
  if (c->state == C_READY && nghttp2_session_check_request_allowed(c->h2)) {
    call_submit(call);
    schedule_flush(c);
  } else if (c->state == C_IDLE) {
    client_connect(c);
  }
  /* C_CONNECTING / C_BACKOFF: submitted when the connection is ready. */
  return call;
}

void permit_client_cancel(permit_client_call *call) {
  permit_client *c = call->c;
  if (call->id != 0 && c->h2 != NULL) {
    nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->id,
                              NGHTTP2_CANCEL);
    schedule_flush(c);
  }
  call_end(call, PERMIT_GRPC_CANCELLED, "cancelled by the client");
}

void permit_client_pause(permit_client_call *call, int paused) {
  permit_client *c = call->c;
  call->paused = paused;
  if (!paused && call->unconsumed > 0 && call->id != 0 && c->h2 != NULL) {
    nghttp2_session_consume(c->h2, call->id, call->unconsumed);
    call->unconsumed = 0;
    schedule_flush(c);
  }
}

/* Keeps the last response of a unary call. */
typedef struct unary_result {
  uint8_t *resp;
  size_t len;
} unary_result;

static void unary_keep(void *arg, const uint8_t *msg, size_t len) {
  unary_result *u = arg;
  free(u->resp);
  u->resp = malloc(len ? len : 1);
  if (u->resp != NULL) memcpy(u->resp, msg, len);
  u->len = len;
}

int permit_client_unary_sync(const permit_client_config *cfg,
                             const char *path, const uint8_t *req,
                             size_t len, int64_t timeout_ms, int *status,
                             char *msg, size_t msgcap, uint8_t **resp,
                             size_t *resp_len) {
  unary_result u = {0};
  int rc = permit_client_stream_sync(cfg, path, req, len, timeout_ms,
                                     unary_keep, &u, status, msg, msgcap);
  if (rc == 0 && *status == PERMIT_GRPC_OK && resp != NULL) {
    *resp = u.resp;
    *resp_len = u.len;
  } else {
    free(u.resp);
  }
  return rc;
}

typedef struct stream_sync {
  void (*on_message)(void *, const uint8_t *, size_t);
  void *arg;
  struct event_base *base;
  int done, status;
  char *msg;
  size_t msgcap;
} stream_sync;

static void stream_sync_message(void *arg, const uint8_t *msg, size_t len) {
  stream_sync *s = arg;
  if (s->on_message != NULL) s->on_message(s->arg, msg, len);
}

static void stream_sync_done(void *arg, int status, const char *message) {
  stream_sync *s = arg;
  s->done = 1;
  s->status = status;
  if (s->msg != NULL) snprintf(s->msg, s->msgcap, "%s", message);
  event_base_loopbreak(s->base);
}

int permit_client_stream_sync(const permit_client_config *cfg,
                              const char *path, const uint8_t *req,
                              size_t len, int64_t timeout_ms,
                              void (*on_message)(void *, const uint8_t *,
                                                 size_t),
                              void *arg, int *status, char *msg,
                              size_t msgcap) {
  pthread_once(&client_once, client_setup);
  struct event_base *base = event_base_new();
  if (base == NULL) return PERMIT_ENOMEM;
  permit_err err;
  permit_client *c = permit_client_new(base, cfg, &err);
  if (c == NULL) {
    event_base_free(base);
    return PERMIT_ENOMEM;
  }
  stream_sync s = {on_message, arg, base, 0, 0, msg, msgcap};
  static const permit_client_handlers h = {stream_sync_message,
                                           stream_sync_done};
  if (permit_client_start(c, path, req, len, timeout_ms, &h, &s) == NULL) {
    permit_client_free(c);
    event_base_free(base);
    return PERMIT_ENOMEM;
  }
  while (!s.done) event_base_loop(base, EVLOOP_ONCE);
  permit_client_free(c);
  event_base_loop(base, EVLOOP_NONBLOCK);
  event_base_free(base);
  *status = s.status;
  return 0;
}
