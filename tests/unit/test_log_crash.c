/*
 * test_log_crash: a child process appends to a log from several threads
 * with synced writes and reports each acknowledged entry on a pipe; the
 * parent SIGKILLs it at a random moment, many times.  After each kill the
 * log must hold every acknowledged entry at its sequence number, its root
 * must equal a recomputation from the stored entries, and appends must
 * continue.  Rounds: PERMIT_CRASH_ROUNDS (default 100).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "permit/log.h"
#include "permit/util.h"
#include "testlib.h"

#define THREADS 4
#define ENTRY_LEN 48

/* What the child says for each acknowledged append. */
typedef struct ack {
  uint64_t seq;
  char entry[ENTRY_LEN];
} ack;

typedef struct child_thread {
  permit_log *log;
  int fd, round, id;
} child_thread;

static void *child_appender(void *arg) {
  child_thread *t = arg;
  for (unsigned i = 0;; i++) {
    ack a;
    memset(&a, 0, sizeof a);
    snprintf(a.entry, sizeof a.entry, "round %d thread %d item %u", t->round,
             t->id, i);
    if (permit_log_append(t->log, (uint8_t *)a.entry, sizeof a.entry, NULL,
                          NULL, &a.seq, NULL) != 0)
      _exit(3);
    /* One write of a small struct to a pipe is atomic. */
    if (write(t->fd, &a, sizeof a) != sizeof a) _exit(4);
  }
  return NULL;
}

static void child_main(const char *path, int fd, int round) {
  permit_store *s;
  permit_log *log;
  permit_err err;
  if (permit_store_open(path, &s, &err) != 0 ||
      permit_log_open(s, "tixly.example", "fillmore.example", &log, &err) !=
          0) {
    fprintf(stderr, "child: %s\n", err.msg);
    _exit(2);
  }
  child_thread t[THREADS];
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++) {
    t[i] = (child_thread){log, fd, round, i};
    pthread_create(&th[i], NULL, child_appender, &t[i]);
  }
  for (;;) pause();
}

/* Reads one ack, waiting up to |ms|; 1 read, 0 end of pipe, -1 timeout. */
static int read_ack(int fd, ack *a, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, ms) <= 0) return -1;
  size_t got = 0;
  while (got < sizeof *a) {
    ssize_t n = read(fd, (char *)a + got, sizeof *a - got);
    if (n == 0) return 0;
    if (n < 0) {
      if (errno == EINTR) continue;
      return 0;
    }
    got += (size_t)n;
  }
  return 1;
}

int main(void) {
  const char *env = getenv("PERMIT_CRASH_ROUNDS");
  int rounds = env != NULL ? atoi(env) : 100;
  if (rounds < 1) rounds = 1;
  const char *dir = test_tmpdir("crash");
  char path[4200];
  snprintf(path, sizeof path, "%s/db", dir);
  srand((unsigned)time(NULL) ^ (unsigned)getpid());

  size_t cap = 1 << 16, total_acked = 0;
  ack *acked = malloc(cap * sizeof *acked);
  int all_ok = 1;
  for (int r = 0; r < rounds && all_ok; r++) {
    int p[2];
    if (pipe(p) != 0) return 2;
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      child_main(path, p[1], r);
    }
    close(p[1]);
    /* Kill after a random number of acknowledgements plus a random delay,
     * so the kill lands anywhere in an append. */
    int want = 1 + rand() % 150;
    ack a;
    for (int got = 0; got < want; got++) {
      int rc = read_ack(p[0], &a, 30000);
      if (rc != 1) {
        fprintf(stderr, "round %d: child stopped acknowledging\n", r);
        all_ok = 0;
        break;
      }
      if (total_acked == cap) acked = realloc(acked, (cap *= 2) * sizeof *acked);
      acked[total_acked++] = a;
    }
    struct timespec d = {0, (rand() % 3000) * 1000L};
    nanosleep(&d, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    /* Acknowledgements written before the kill still count. */
    while (read_ack(p[0], &a, 0) == 1) {
      if (total_acked == cap) acked = realloc(acked, (cap *= 2) * sizeof *acked);
      acked[total_acked++] = a;
    }
    close(p[0]);
    CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
           "round %d: child exited with status %d", r, status);

    permit_store *s;
    permit_log *log;
    permit_err err = {0};
    if (permit_store_open(path, &s, &err) != 0 ||
        permit_log_open(s, "tixly.example", "fillmore.example", &log, &err) !=
            0) {
      CHECKF(0, "round %d: reopen failed: %s", r, err.msg);
      all_ok = 0;
      break;
    }
    uint64_t size = permit_log_size(log);
    int present = 1;
    for (size_t i = 0; i < total_acked; i++) {
      uint8_t *e = NULL;
      size_t el = 0;
      if (acked[i].seq >= size ||
          permit_log_get(log, acked[i].seq, &e, &el, NULL) != 0 ||
          el != ENTRY_LEN || memcmp(e, acked[i].entry, ENTRY_LEN) != 0)
        present = 0;
      free(e);
    }
    CHECKF(present, "round %d: an acknowledged entry is missing or wrong", r);
    /* The root from the frontier equals a recomputation from the leaves. */
    permit_merkle_frontier f;
    permit_merkle_frontier_init(&f);
    for (uint64_t i = 0; i < size; i++) {
      uint8_t *e = NULL;
      size_t el = 0;
      permit_hash leaf;
      if (permit_log_get(log, i, &e, &el, NULL) != 0) break;
      permit_merkle_leaf_hash(e, el, leaf);
      permit_merkle_frontier_append(&f, leaf, NULL, NULL);
      free(e);
    }
    permit_hash root, ref;
    uint64_t hs;
    permit_log_head(log, &hs, root);
    permit_merkle_frontier_root(&f, ref);
    CHECKF(f.size == size && memcmp(root, ref, 32) == 0,
           "round %d: root differs from recomputation", r);
    uint64_t seq;
    CHECKF(permit_log_append(log, (uint8_t *)"after crash", 11, NULL, NULL,
                             &seq, &err) == 0 && seq == size,
           "round %d: append after reopen failed: %s", r, err.msg);
    all_ok &= present && memcmp(root, ref, 32) == 0;
    permit_log_close(log);
    permit_store_close(s);
  }
  printf("test_log_crash: %d rounds, %zu acknowledged appends checked\n",
         rounds, total_acked);
  free(acked);
  test_rmrf(dir);
  permit_crypto_cleanup();
  return test_finish("test_log_crash");
}
