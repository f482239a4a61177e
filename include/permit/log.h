/*
 * permit/log.h - the append-only log from one issuer to one audience
 * (protocol.md section 5), kept in the store with its Merkle tree.
 *
 * Entry i is the bytes of the i-th SignedRecord.  An append writes the
 * entry, the tree nodes it completes and the new head in one synced batch,
 * so after a crash the log is exactly the acknowledged entries.  Appends
 * from many threads are grouped: one thread commits every entry waiting at
 * that moment in a single batch and fsync.  The current root comes from
 * the in-memory frontier in O(log n) hashes; proofs read O(log n) nodes.
 */
#ifndef PERMIT_LOG_H
#define PERMIT_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "permit/crypto.h"
#include "permit/error.h"
#include "permit/merkle.h"
#include "permit/record.h"
#include "permit/store.h"

#define PERMIT_CHECKPOINT_CONTEXT "permit/v1/checkpoint\n"
#define PERMIT_CHECKPOINT_MAX_LEN 4096
#define PERMIT_LOG_MAX_BATCH 4096
#define PERMIT_ORIGIN_MAX (16 + 2 * PERMIT_NAME_MAX + 1)

typedef struct permit_log permit_log;

/*
 * Opens the log from |issuer| to |audience| in |s| (an empty log when
 * there is none yet).  PERMIT_EINVAL for bad names, PERMIT_ECORRUPT when
 * the stored head and tree disagree, PERMIT_EIO when they cannot be read,
 * PERMIT_ENOMEM.  The caller owns |*out| (permit_log_close) and keeps |s|
 * open longer.
 */
int permit_log_open(permit_store *s, const char *issuer, const char *audience,
                    permit_log **out, permit_err *err);

/* Waits for queued asynchronous appends to be committed (their callbacks
 * run), then frees |log|; no synchronous append may be in progress.  NULL
 * is a no-op. */
void permit_log_close(permit_log *log);

/* "permit/v1/log/<issuer>/<audience>". */
const char *permit_log_origin(const permit_log *log);

/* The number of durable entries. */
uint64_t permit_log_size(permit_log *log);

/*
 * Writes more state in the same atomic batch as the entry with sequence
 * number |seq| (an index, a cursor).  Called on the committing thread,
 * which may be another appender's; must not call back into the log.  A
 * negative PERMIT_E* return fails this append alone (its entries and its
 * writes are dropped) and is passed to its caller; a positive return is
 * turned into PERMIT_EINVAL.
 *
 * Appends are committed in groups, and the callback works on the group's
 * shared batch, so it must not set, roll back or release savepoints in
 * |b| (the log keeps one per entry), and it cannot see the writes of other
 * entries of the same group: they are not in the store yet.  A check such
 * as "is this idempotency key new?" read from the store here can therefore
 * pass for two appends in one group; callers that need one must serialise
 * those appends themselves.
 */
typedef int (*permit_log_extra_fn)(void *arg, uint64_t seq, permit_batch *b);

/*
 * Appends |entry| (1 to PERMIT_RECORD_MAX_LEN bytes) and returns once it
 * is durable (a synced write), its sequence number in |*seq|.  |extra| may
 * be NULL.  Thread safe.
 *
 * Returns 0, PERMIT_EINVAL for an empty or oversized entry, the |extra|
 * callback's error (PERMIT_EINVAL for a positive value), or PERMIT_EIO
 * when the write failed.  After a failed write the entries may or may not
 * be on disk, so the log stops: this and every later append to this
 * permit_log returns PERMIT_EIO ("log <origin> had a write error; reopen
 * it").  Close it and open it again to continue from what is durable.
 */
int permit_log_append(permit_log *log, const uint8_t *entry, size_t len,
                      permit_log_extra_fn extra, void *arg, uint64_t *seq,
                      permit_err *err);

/*
 * Appends |n| entries (at most PERMIT_LOG_MAX_BATCH) atomically: all are
 * durable or none.  |*first_seq| receives the first one's number and
 * |extra| is called once, with that number.  Returns as
 * permit_log_append(), with PERMIT_EINVAL also for |n| out of range.
 */
int permit_log_append_many(permit_log *log, const permit_iov *entries,
                           size_t n, permit_log_extra_fn extra, void *arg,
                           uint64_t *first_seq, permit_err *err);

/*
 * Called once when an asynchronous append is durable (|rc| 0, |first_seq|
 * its first entry) or has failed (|err| says why).  Runs on the log's
 * commit thread or on another appender's thread, never with a log lock
 * held: hand the result to your own thread (e.g. event_base_once).
 */
typedef void (*permit_log_done_fn)(void *arg, int rc, uint64_t first_seq,
                                   const permit_err *err);

/*
 * Like permit_log_append_many() without waiting: the append joins the next
 * group commit and |done| reports its outcome.  |entries| (and what they
 * point to) and |arg| must stay valid until |done| has been called.  An
 * event-loop thread uses this so that it never blocks on fsync, and so
 * that many appends share one.  Returns 0 when queued (|done| will be
 * called), or an error (|done| will not be).
 */
int permit_log_append_async(permit_log *log, const permit_iov *entries,
                            size_t n, permit_log_extra_fn extra, void *arg,
                            permit_log_done_fn done, void *done_arg,
                            permit_err *err);

/*
 * Pruning (protocol.md 9): a log keeps every leaf hash forever, so it
 * stays verifiable, but the payload of an entry may be dropped (an
 * erased buyer's sealed contact).  A pruned entry is stored, read, scanned
 * and served as a marker of PERMIT_LOG_PRUNED_LEN bytes: 0x00 (which no
 * SignedRecord starts with) and the leaf hash.  Appending a marker (a
 * mirror receiving a pruned entry) adds that leaf hash to the tree.
 */
#define PERMIT_LOG_PRUNED_LEN (1 + PERMIT_HASH_LEN)

/* True when |entry| is a pruned marker; its leaf hash into |leaf| (may be
 * NULL). */
int permit_log_pruned(const void *entry, size_t len, permit_hash leaf);

/*
 * Adds to |b| the write that replaces the payload of entry |seq| with its
 * pruned marker (the caller writes |b|, synced, with what caused it).
 * The leaf hash is read from the tree, or taken from |known| (not NULL)
 * for an entry that is being appended in the same batch.
 * PERMIT_ENOTFOUND past the durable size; PERMIT_EIO.
 */
int permit_log_prune(permit_log *log, uint64_t seq, const permit_hash known,
                     permit_batch *b, permit_err *err);

/* Reads entry |seq| (malloc'd copy, caller frees).  PERMIT_ENOTFOUND past
 * the end. */
int permit_log_get(permit_log *log, uint64_t seq, uint8_t **entry,
                   size_t *len, permit_err *err);

/*
 * Called per entry by permit_log_scan(); a non-zero return stops the scan
 * and becomes its result (use a positive value to stop without an error).
 */
typedef int (*permit_log_visit_fn)(void *arg, uint64_t seq,
                                   const uint8_t *entry, size_t len);

/*
 * Visits entries [from, to) in order (|to| capped at the durable size).
 * Returns 0 when every entry was visited; the visitor's non-zero value,
 * unchanged and with |err| untouched, when it stopped the scan;
 * PERMIT_ECORRUPT when entries below the head are missing; PERMIT_EIO when
 * the store cannot be read.
 */
int permit_log_scan(permit_log *log, uint64_t from, uint64_t to,
                    permit_log_visit_fn visit, void *arg, permit_err *err);

/* The durable size and its root, read together. */
void permit_log_head(permit_log *log, uint64_t *size, permit_hash root);

/* The root of the first |size| entries (O(log n) node reads). */
int permit_log_root_at(permit_log *log, uint64_t size, permit_hash root,
                       permit_err *err);

/* Proofs over the durable log; |proof| holds PERMIT_MERKLE_MAX_PROOF. */
int permit_log_inclusion_proof(permit_log *log, uint64_t index, uint64_t size,
                               permit_hash *proof, size_t *proof_len,
                               permit_err *err);
int permit_log_consistency_proof(permit_log *log, uint64_t size1,
                                 uint64_t size2, permit_hash *proof,
                                 size_t *proof_len, permit_err *err);

/*
 * Signs a checkpoint of the current head at |timestamp_ms| with |key| and
 * keeps it as the log's latest.  |*out| is the SignedCheckpoint
 * (malloc'd, caller frees).
 */
int permit_log_checkpoint(permit_log *log, const permit_sign_key *key,
                          int64_t timestamp_ms, uint8_t **out, size_t *outlen,
                          permit_err *err);

/* The latest checkpoint kept by permit_log_checkpoint(). */
int permit_log_latest_checkpoint(permit_log *log, uint8_t **out,
                                 size_t *outlen, permit_err *err);

/*
 * Verifies a SignedCheckpoint against |keys| and decodes it; checks that
 * the body is the canonical encoding of the checkpoint
 * (permit_envelope_check_body), an origin "permit/v1/log/<issuer>/
 * <audience>" of two valid node names and a 32-byte root.  |*out| is owned
 * by the caller (permit__v1__checkpoint__free_unpacked).  Codes as
 * permit_envelope_open(), plus PERMIT_EINVAL for a bad body.
 */
int permit_checkpoint_verify(const uint8_t *in, size_t len,
                             const permit_trusted_key *keys, size_t nkeys,
                             Permit__V1__Checkpoint **out, permit_err *err);

#endif
