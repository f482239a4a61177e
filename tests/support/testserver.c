/*
 * permit-testserver: the transport with a firehose method, for tests that
 * need a server-streaming call producing as fast as the client allows.
 *
 *   permit-testserver PORTFILE
 * Serves on 127.0.0.1 (kernel-assigned port, written to PORTFILE) over
 * h2c: grpc.health.v1.Health and /permit.test.Fire/Stream, which sends
 * 1 KiB messages for as long as HTTP/2 flow control lets it, pausing when
 * its queue is full.  Stops on SIGTERM or SIGINT.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "permit/crypto.h"
#include "permit/server.h"
#include "permit/services.h"

static void fire_more(permit_call *c) {
  uint8_t buf[1024];
  memset(buf, 'f', sizeof buf);
  while (!permit_call_full(c) && !permit_call_finished(c))
    permit_call_send(c, buf, sizeof buf);
}

static void fire_msg(permit_call *c, const uint8_t *m, size_t n) {
  (void)m, (void)n;
  fire_more(c);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: permit-testserver PORTFILE\n");
    return 2;
  }
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);
  permit_err err;
  permit_server *s = permit_server_new(2, NULL, &err);
  permit_health *h = s ? permit_health_new(s) : NULL;
  if (h == NULL) return 1;
  permit_method methods[3];
  permit_health_methods(h, methods);
  methods[2] = (permit_method){.path = "/permit.test.Fire/Stream",
                               .kind = PERMIT_RPC_SERVER_STREAM,
                               .on_message = fire_msg,
                               .on_writable = fire_more};
  permit_listener_config cfg = {.name = "test", .host = "127.0.0.1",
                                .methods = methods, .nmethods = 3};
  int port;
  if (permit_server_listen(s, &cfg, &port, &err) != 0 ||
      permit_server_start(s, &err) != 0) {
    fprintf(stderr, "permit-testserver: %s\n", err.msg);
    return 1;
  }
  permit_health_set(h, "", PERMIT_SERVING);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
  FILE *f = fopen(tmp, "w");
  if (f == NULL) return 1;
  fprintf(f, "%d\n", port);
  fclose(f);
  rename(tmp, argv[1]);
  int sig;
  sigwait(&stop, &sig);
  permit_server_stop(s);
  permit_server_free(s);
  permit_health_free(h);
  permit_crypto_cleanup();
  return 0;
}
