/*
 * pool.h - a fixed set of threads running submitted tasks in order of
 * submission (several at a time, one per thread).
 *
 * For work that costs CPU and must not stay on the thread that received
 * it: a server worker owns its connections, so a busy connection would
 * otherwise keep every task it brings on one core.
 */
#ifndef PERMIT_POOL_H
#define PERMIT_POOL_H

#include "permit/error.h"

typedef struct permit_pool permit_pool;

typedef void (*permit_pool_fn)(void *arg);

/* Starts |threads| threads (at least one) named |name| (15 bytes at
 * most).  NULL with |err| set when none could be started. */
permit_pool *permit_pool_new(int threads, const char *name, permit_err *err);

/* Queues fn(arg).  PERMIT_ENOMEM, or PERMIT_EINVAL once the pool is
 * stopping: the task is then not run and the caller keeps |arg|. */
int permit_pool_submit(permit_pool *p, permit_pool_fn fn, void *arg);

/* Tasks queued or running now. */
unsigned long permit_pool_backlog(permit_pool *p);

/* Runs every task already queued, then ends the threads and frees the
 * pool.  No task may submit to the pool it runs on after this began. */
void permit_pool_free(permit_pool *p);

#endif
