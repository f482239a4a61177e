/* test_pool: the task pool runs every task exactly once, in submission
 * order on one thread, several at a time on several, names its threads,
 * counts its backlog, and runs what is queued before it is freed. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "permit/pool.h"
#include "testlib.h"

enum { MANY = 20000 };

static atomic_int counter;

static void bump(void *arg) {
  (void)arg;
  atomic_fetch_add(&counter, 1);
}

/* One thread: the order of submission. */
static int order[64], norder;
static void record(void *arg) { order[norder++] = (int)(intptr_t)arg; }

/* A gate the tasks wait at (with a deadline, so a bug fails, not hangs). */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int arrived, open_gate, gate_timeouts;
static char names[4][16];

static void at_gate(void *arg) {
  (void)arg;
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 10;
  pthread_mutex_lock(&gate_mu);
  if (arrived < 4)
    pthread_getname_np(pthread_self(), names[arrived], sizeof names[0]);
  arrived++;
  pthread_cond_broadcast(&gate_cv);
  while (!open_gate)
    if (pthread_cond_timedwait(&gate_cv, &gate_mu, &dl) != 0) {
      gate_timeouts++;
      break;
    }
  pthread_mutex_unlock(&gate_mu);
}

/* Waits until |n| tasks are at the gate, or 10 s. */
static int wait_arrived(int n) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 10;
  pthread_mutex_lock(&gate_mu);
  int ok = 1;
  while (arrived < n && ok)
    ok = pthread_cond_timedwait(&gate_cv, &gate_mu, &dl) == 0;
  pthread_mutex_unlock(&gate_mu);
  return arrived >= n;
}

static void gate_release(void) {
  pthread_mutex_lock(&gate_mu);
  open_gate = 1;
  pthread_cond_broadcast(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
}

static void gate_reset(void) {
  arrived = open_gate = 0;
  memset(names, 0, sizeof names);
}

static void test_order(void) {
  permit_err err;
  permit_pool *p = permit_pool_new(1, "t-order", &err);
  CHECK(p != NULL);
  norder = 0;
  for (int i = 0; i < 64; i++)
    CHECK(permit_pool_submit(p, record, (void *)(intptr_t)i) == 0);
  permit_pool_free(p); /* runs all 64 first */
  int in_order = norder == 64;
  for (int i = 0; i < norder; i++) in_order &= order[i] == i;
  CHECK(in_order);
}

static void test_many(void) {
  permit_err err;
  permit_pool *p = permit_pool_new(4, "t-many", &err);
  CHECK(p != NULL);
  atomic_store(&counter, 0);
  int ok = 1;
  for (int i = 0; i < MANY; i++) ok &= permit_pool_submit(p, bump, NULL) == 0;
  CHECK(ok);
  permit_pool_free(p);
  CHECK(atomic_load(&counter) == MANY);
}

/* Four threads run four tasks at once (each waits for the others), with
 * the pool's name; the backlog counts running and queued tasks. */
static void test_concurrent(void) {
  permit_err err;
  gate_reset();
  permit_pool *p = permit_pool_new(4, "permit-test-pool-long", &err);
  CHECK(p != NULL);
  for (int i = 0; i < 4; i++) CHECK(permit_pool_submit(p, at_gate, NULL) == 0);
  CHECK(wait_arrived(4));
  atomic_store(&counter, 0);
  for (int i = 0; i < 3; i++) CHECK(permit_pool_submit(p, bump, NULL) == 0);
  CHECK(permit_pool_backlog(p) == 7);
  CHECK(atomic_load(&counter) == 0); /* every thread is busy */
  gate_release();
  permit_pool_free(p);
  CHECK(atomic_load(&counter) == 3);
  CHECK(gate_timeouts == 0);
  /* Truncated to what the kernel keeps (15 bytes). */
  for (int i = 0; i < 4; i++)
    CHECKF(strcmp(names[i], "permit-test-poo") == 0, "name %s", names[i]);
}

static void test_thread_bounds(void) {
  permit_err err;
  permit_pool *p = permit_pool_new(0, NULL, &err); /* at least one */
  CHECK(p != NULL);
  atomic_store(&counter, 0);
  CHECK(permit_pool_submit(p, bump, NULL) == 0);
  permit_pool_free(p);
  CHECK(atomic_load(&counter) == 1);
  permit_pool_free(NULL);
}

int main(void) {
  test_order();
  test_many();
  test_concurrent();
  test_thread_bounds();
  return test_finish("test_pool");
}
