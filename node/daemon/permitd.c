/*
 * permitd - the Permit node daemon.
 *
 * Today it brings a node's ground up: it creates or loads the node's keys,
 * opens its RocksDB database, reports what it did as JSON lines on stderr
 * and waits for SIGINT or SIGTERM to close everything cleanly.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/crypto.h"
#include "permit/identity.h"
#include "permit/logging.h"
#include "permit/store.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: permitd [--data DIR] [--log-level debug|info|warn|error]\n"
          "\n"
          "  --data DIR       node data directory (default ./permit-data);\n"
          "                   keys are created there on first run\n"
          "  --log-level L    lowest level logged (default info)\n");
}

int main(int argc, char **argv) {
  const char *data = "./permit-data";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
      data = argv[++i];
    } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
      int l = permit_logging_parse_level(argv[++i]);
      if (l < 0) {
        fprintf(stderr, "permitd: unknown log level \"%s\"\n", argv[i]);
        return 2;
      }
      permit_logging_set_level((permit_level)l);
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "permitd: unknown or incomplete option \"%s\"\n",
              argv[i]);
      usage(stderr);
      return 2;
    }
  }

  /* Signals are taken synchronously by sigwait() below, so block them
   * before any thread (RocksDB's) starts and inherits the mask. */
  /* A shell starts background jobs with SIGINT ignored; an ignored signal
   * never reaches sigwait(), so restore the default first. */
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  if (permit_crypto_init() != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "crypto.init_failed",
                "OpenSSL lacks an algorithm Permit needs");
    return 1;
  }
  permit_err err = {0};
  permit_identity id;
  if (permit_identity_open(data, 1, &id, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "keys.failed", "%s", err.msg);
    permit_crypto_cleanup();
    return 1;
  }
  permit_logf(PERMIT_LEVEL_INFO, id.created ? "keys.created" : "keys.loaded",
              "%s identity key %s in %s/keys", id.created ? "created" : "loaded",
              permit_sign_key_id(id.sign), data);

  char dbdir[4200];
  snprintf(dbdir, sizeof dbdir, "%s/db", data);
  permit_store *store = NULL;
  if (permit_store_open(dbdir, &store, &err) != 0) {
    permit_logf(PERMIT_LEVEL_ERROR, "store.failed", "%s", err.msg);
    permit_identity_free(&id);
    permit_crypto_cleanup();
    return 1;
  }
  permit_logf(PERMIT_LEVEL_INFO, "store.opened", "RocksDB database %s open",
              dbdir);
  permit_logf(PERMIT_LEVEL_INFO, "node.ready",
              "node ready (identity %s); Ctrl-C stops it",
              permit_sign_key_id(id.sign));

  int sig = 0;
  sigwait(&stop, &sig);
  permit_logf(PERMIT_LEVEL_INFO, "node.stopping", "received %s, stopping",
              sig == SIGINT ? "SIGINT" : "SIGTERM");
  permit_store_close(store);
  permit_identity_free(&id);
  permit_crypto_cleanup();
  permit_logf(PERMIT_LEVEL_INFO, "node.stopped", "stopped cleanly");
  return 0;
}
