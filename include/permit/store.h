/*
 * permit/store.h - the node's one RocksDB database, split into column
 * families by purpose (protocol.md section 8).
 *
 * Writes that belong together go in one permit_batch and are applied
 * atomically; acknowledged writes are synced (fsync of the write-ahead log)
 * and RocksDB groups concurrent synced writers into one fsync.  Errors
 * carry RocksDB's own message.
 */
#ifndef PERMIT_STORE_H
#define PERMIT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "permit/error.h"

typedef enum permit_cf {
  PERMIT_CF_DEFAULT = 0, /* node metadata */
  PERMIT_CF_RECORDS,     /* records by id */
  PERMIT_CF_LOG_LEAVES,  /* per-peer log entries */
  PERMIT_CF_LOG_NODES,   /* per-peer Merkle tree nodes */
  PERMIT_CF_LOG_META,    /* per-peer log heads */
  PERMIT_CF_CHECKPOINTS, /* signed checkpoints */
  PERMIT_CF_CURSORS,     /* sync positions */
  PERMIT_CF_INDEXES,     /* buyer and subject indexes */
  PERMIT_CF_IDEMPOTENCY, /* idempotency keys */
  PERMIT_CF_CONTACTS,    /* venue-side contacts, encrypted */
  PERMIT_CF_COUNT
} permit_cf;

/* The column family's name in RocksDB ("default", "records", ...). */
const char *permit_cf_name(permit_cf cf);

typedef struct permit_store permit_store;

/*
 * Opens (creating if missing) the database in directory |dir|.  A database
 * with corrupt files is refused, never repaired: the message is RocksDB's.
 * The caller owns |*out| (permit_store_close).
 */
int permit_store_open(const char *dir, permit_store **out, permit_err *err);

/* Closes the database; every synced write is on disk.  NULL is a no-op. */
/*
 * A node keeps |bytes| free on its disk: a full disk would fail a synced
 * write half way into RocksDB's error state, so new work is refused
 * before that (0, the default, checks nothing).
 */
void permit_store_set_reserve(permit_store *s, uint64_t bytes);

/* True when the free space of the database's file system (read at most
 * twice a second) is under the reserve; |*free_bytes| gets it (may be
 * NULL).  Thread safe. */
int permit_store_space_low(permit_store *s, uint64_t *free_bytes);

/* Opens an existing database without writing anything to it (not even a
 * new write-ahead log): for checks before the real open.  Writes fail. */
int permit_store_open_read_only(const char *dir, permit_store **out,
                                permit_err *err);

void permit_store_close(permit_store *s);

/*
 * Reads |key| of |cf|.  On success |*val| is a malloc'd copy of |*vlen|
 * bytes (caller frees).  PERMIT_ENOTFOUND when absent, PERMIT_EIO when
 * the read fails (a checksum mismatch included), PERMIT_ENOMEM.
 */
int permit_store_get(permit_store *s, permit_cf cf, const void *key,
                     size_t klen, uint8_t **val, size_t *vlen,
                     permit_err *err);

/* Reads into a caller buffer of exactly |len| bytes; PERMIT_ECORRUPT when
 * the stored value has another length. */
int permit_store_get_fixed(permit_store *s, permit_cf cf, const void *key,
                           size_t klen, void *val, size_t len,
                           permit_err *err);

/* A set of writes applied all or nothing by permit_store_write(). */
typedef struct permit_batch permit_batch;

/*
 * A new, empty batch for writes to |s|, or NULL when out of memory.  The
 * batch must not outlive |s|.
 */
permit_batch *permit_batch_new(permit_store *s);
void permit_batch_free(permit_batch *b);
void permit_batch_clear(permit_batch *b);
void permit_batch_put(permit_batch *b, permit_cf cf, const void *key,
                      size_t klen, const void *val, size_t vlen);
void permit_batch_delete(permit_batch *b, permit_cf cf, const void *key,
                         size_t klen);
/*
 * Marks the batch's current end; permit_batch_rollback() drops what was
 * added since the last mark, permit_batch_release() forgets the mark.
 */
void permit_batch_savepoint(permit_batch *b);
void permit_batch_rollback(permit_batch *b);
void permit_batch_release(permit_batch *b);

/* Number of operations in |b|. */
int permit_batch_count(const permit_batch *b);

/*
 * Applies |b| atomically.  With |sync| the call returns only after the
 * write-ahead log is fsync'd: what it acknowledged survives a crash.
 * Returns 0 or PERMIT_EIO with RocksDB's message.  After PERMIT_EIO on a
 * synced write the batch may or may not be on disk: the caller cannot
 * tell until it reopens the database.
 */
int permit_store_write(permit_store *s, permit_batch *b, int sync,
                       permit_err *err);

/* One synced put; returns as permit_store_write(). */
int permit_store_put(permit_store *s, permit_cf cf, const void *key,
                     size_t klen, const void *val, size_t vlen,
                     permit_err *err);

/*
 * The number of synced writes (permit_store_write() with |sync|, and
 * permit_store_put()) that succeeded since |s| was opened.  Thread safe;
 * tests use it to see that a path asks for durability.
 */
uint64_t permit_store_synced_writes(permit_store *s);

/*
 * Called for each key/value in order; a non-zero return stops the scan
 * and becomes permit_store_scan()'s result (use a positive value to stop
 * without an error).
 */
typedef int (*permit_store_visit_fn)(void *arg, const uint8_t *key,
                                     size_t klen, const uint8_t *val,
                                     size_t vlen);

/*
 * Visits, in key order, the keys of |cf| that start with |prefix|,
 * beginning at |start| (NULL: at the prefix).  Returns 0 when the scan
 * ended, the visitor's non-zero value when it stopped it, or PERMIT_EIO
 * with RocksDB's message when reading failed (a checksum mismatch
 * included).
 */
int permit_store_scan(permit_store *s, permit_cf cf, const void *prefix,
                      size_t plen, const void *start, size_t slen,
                      permit_store_visit_fn visit, void *arg,
                      permit_err *err);

/* Flushes every memtable to SST files and compacts every column family
 * (used before byte-level checks of the data directory and to measure
 * disk use). */
int permit_store_compact(permit_store *s, permit_err *err);

/*
 * Reads every key and value of every column family with checksums
 * verified (not kept in the block cache): a node holding evidence checks
 * its files before it serves.  |*keys| counts what was read.
 * PERMIT_ECORRUPT with RocksDB's message (naming the file) when a block
 * is damaged.  Nothing is written, nothing repaired.
 */
int permit_store_verify(permit_store *s, uint64_t *keys, permit_err *err);

#endif
