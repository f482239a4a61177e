/*
 * pool.c - threads taking tasks from one queue (see permit/pool.h).
 */
#include "permit/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define POOL_THREADS_MAX 64

typedef struct task {
  permit_pool_fn fn;
  void *arg;
  struct task *next;
} task;

struct permit_pool {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* a task came, or the pool stops */
  task *head, *tail;
  unsigned long backlog; /* queued or running */
  int stopping;
  int nthreads;
  pthread_t tid[POOL_THREADS_MAX];
};

static void *pool_main(void *arg) {
  permit_pool *p = arg;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (p->head == NULL && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
    task *t = p->head;
    if (t == NULL) break; /* stopping, and the queue is empty */
    p->head = t->next;
    if (p->head == NULL) p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    t->fn(t->arg);
    free(t);
    pthread_mutex_lock(&p->mu);
    p->backlog--;
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

permit_pool *permit_pool_new(int threads, const char *name, permit_err *err) {
  if (threads < 1) threads = 1;
  if (threads > POOL_THREADS_MAX) threads = POOL_THREADS_MAX;
  permit_pool *p = calloc(1, sizeof *p);
  if (p == NULL) {
    permit_err_set(err, PERMIT_ENOMEM, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  for (int i = 0; i < threads; i++) {
    if (pthread_create(&p->tid[i], NULL, pool_main, p) != 0) break;
    if (name != NULL) {
      char n[16];
      snprintf(n, sizeof n, "%s", name);
      pthread_setname_np(p->tid[i], n);
    }
    p->nthreads++;
  }
  if (p->nthreads == 0) {
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
    permit_err_set(err, PERMIT_ENOMEM, "cannot start a thread for %s",
                   name != NULL ? name : "a pool");
    return NULL;
  }
  return p;
}

int permit_pool_submit(permit_pool *p, permit_pool_fn fn, void *arg) {
  task *t = malloc(sizeof *t);
  if (t == NULL) return PERMIT_ENOMEM;
  *t = (task){fn, arg, NULL};
  pthread_mutex_lock(&p->mu);
  if (p->stopping) {
    pthread_mutex_unlock(&p->mu);
    free(t);
    return PERMIT_EINVAL;
  }
  if (p->tail != NULL)
    p->tail->next = t;
  else
    p->head = t;
  p->tail = t;
  p->backlog++;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

unsigned long permit_pool_backlog(permit_pool *p) {
  pthread_mutex_lock(&p->mu);
  unsigned long n = p->backlog;
  pthread_mutex_unlock(&p->mu);
  return n;
}

void permit_pool_free(permit_pool *p) {
  if (p == NULL) return;
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->nthreads; i++) pthread_join(p->tid[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}
