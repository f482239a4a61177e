/*
 * permit/job.h - a request answered from another thread.
 *
 * A handler on a server worker that must wait for work elsewhere (a
 * durable write on the sync thread, say) makes a job, hands it to that
 * thread and returns.  The other thread fills the job's data and calls
 * permit_job_done(); the answer then runs on the call's worker, unless
 * the call has closed meanwhile, in which case only the data is freed.
 * The call's on_close must call permit_job_closed().  Whichever of the
 * two comes last frees the job, so neither side ever touches a freed
 * call or job.
 */
#ifndef PERMIT_JOB_H
#define PERMIT_JOB_H

#include "permit/server.h"

typedef struct permit_job permit_job;

/* Runs on the call's worker with the call still open. */
typedef void (*permit_job_answer_fn)(permit_call *c, void *data);

/*
 * A job for |c| (worker thread), holding |data|, freed with |free_data|
 * (may be NULL) when the job goes.  Stores itself as the call's data
 * (permit_call_set_data).  NULL when out of memory.
 */
permit_job *permit_job_new(permit_call *c, permit_job_answer_fn answer,
                           void (*free_data)(void *), void *data);

void *permit_job_data(const permit_job *j);

/* The work is done (any thread): post the answer to the worker. */
void permit_job_done(permit_job *j);

/* From the call's on_close (worker thread): the call is gone.  Also for
 * a job that was never handed over: then it is freed here at once. */
void permit_job_closed(permit_job *j);

/* Drops the work side of a job that could not be handed over (the call
 * is answered by the caller and its on_close frees the rest). */
void permit_job_abandon(permit_job *j);

#endif
