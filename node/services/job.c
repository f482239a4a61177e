/*
 * job.c - a request answered from another thread (see permit/job.h).
 * Two references: the call's (dropped by on_close) and the work's
 * (dropped after the answer ran or was skipped).
 */
#include "permit/job.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>

struct permit_job {
  pthread_mutex_t mu;
  int refs;
  int closed;
  permit_call *call;
  struct event_base *base;
  permit_job_answer_fn answer;
  void (*free_data)(void *);
  void *data;
};

permit_job *permit_job_new(permit_call *c, permit_job_answer_fn answer,
                           void (*free_data)(void *), void *data) {
  permit_job *j = calloc(1, sizeof *j);
  if (j == NULL) return NULL;
  pthread_mutex_init(&j->mu, NULL);
  j->refs = 2;
  j->call = c;
  j->base = permit_call_base(c);
  j->answer = answer;
  j->free_data = free_data;
  j->data = data;
  permit_call_set_data(c, j);
  return j;
}

void *permit_job_data(const permit_job *j) { return j->data; }

static void job_unref(permit_job *j) {
  pthread_mutex_lock(&j->mu);
  int left = --j->refs;
  pthread_mutex_unlock(&j->mu);
  if (left > 0) return;
  if (j->free_data != NULL) j->free_data(j->data);
  pthread_mutex_destroy(&j->mu);
  free(j);
}

/* On the worker: the call closes only on this thread, so the flag read
 * here stays true until the answer is given. */
static void job_deliver(evutil_socket_t fd, short what, void *arg) {
  permit_job *j = arg;
  (void)fd, (void)what;
  pthread_mutex_lock(&j->mu);
  int closed = j->closed;
  pthread_mutex_unlock(&j->mu);
  if (!closed) j->answer(j->call, j->data);
  job_unref(j);
}

void permit_job_done(permit_job *j) {
  /* When the loop is gone, its calls are closed too (or soon will be):
   * their on_close drops the other reference. */
  if (event_base_once(j->base, -1, EV_TIMEOUT, job_deliver, j, NULL) != 0)
    job_unref(j);
}

void permit_job_closed(permit_job *j) {
  if (j == NULL) return;
  pthread_mutex_lock(&j->mu);
  j->closed = 1;
  pthread_mutex_unlock(&j->mu);
  job_unref(j);
}

void permit_job_abandon(permit_job *j) { job_unref(j); }
