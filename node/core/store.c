#include "permit/store.h"

#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

struct permit_store {
  rocksdb_t *db;
  rocksdb_options_t *opts, *fopts; /* without and with Bloom filters */
  rocksdb_cache_t *cache;
  rocksdb_block_based_table_options_t *table, *ftable;
  rocksdb_column_family_handle_t *cf[PERMIT_CF_COUNT];
  rocksdb_readoptions_t *ro;
  rocksdb_writeoptions_t *wo_sync;
  rocksdb_writeoptions_t *wo_async;
  _Atomic uint64_t synced_writes; /* successful synced writes */
  char *dir;
  _Atomic uint64_t reserve;    /* bytes to keep free; 0: no check */
  _Atomic int64_t checked_ms;  /* when free space was last read */
  _Atomic uint64_t free_bytes; /* what it was */
};

struct permit_batch {
  permit_store *store;
  rocksdb_writebatch_t *wb;
};

#define MEMTABLES_MB 32
#define CACHE_MB 8

static const char *const cf_names[PERMIT_CF_COUNT] = {
    "default",     "records", "log_leaves", "log_nodes",   "log_meta",
    "checkpoints", "cursors", "indexes",    "idempotency", "contacts"};

const char *permit_cf_name(permit_cf cf) {
  return cf < PERMIT_CF_COUNT ? cf_names[cf] : "?";
}

/* Moves a RocksDB error string into |err| and frees it. */
static int rocks_err(permit_err *err, char *msg, const char *what) {
  int rc = permit_err_set(err, PERMIT_EIO, "%s: %s", what, msg);
  rocksdb_free(msg);
  return rc;
}

static int store_open(const char *dir, int read_only, permit_store **out,
                      permit_err *err) {
  permit_store *s = calloc(1, sizeof *s);
  if (s == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  s->opts = rocksdb_options_create();
  rocksdb_options_set_create_if_missing(s->opts, 1);
  rocksdb_options_set_create_missing_column_families(s->opts, 1);
  /* Checksums are verified on every read and at open: a damaged file is
   * reported, not skipped.  Only a torn last WAL record (a write that was
   * never acknowledged) is tolerated on recovery. */
  rocksdb_options_set_paranoid_checks(s->opts, 1);
  rocksdb_options_set_wal_recovery_mode(
      s->opts, rocksdb_tolerate_corrupted_tail_records_recovery);
  rocksdb_options_increase_parallelism(s->opts, 2);
  rocksdb_options_set_max_open_files(s->opts, 256);
  rocksdb_options_set_compression(s->opts, rocksdb_lz4_compression);
  /* Flushes and compactions sync their files a megabyte at a time rather
   * than in one burst at the end, which would stall the synced WAL writes
   * acknowledged opt-ins wait for. */
  rocksdb_options_set_bytes_per_sync(s->opts, 1 << 20);
  /* Memory is bounded for the whole database, not per column family:
   * ten families with RocksDB's default 64 MiB memtables each would let a
   * node catching up on a long log grow to hundreds of MiB.  MEMTABLES_MB
   * of memtables in all (flushed early when full) and a CACHE_MB block
   * cache: a venue syncing a million records peaked at 115-120 MiB
   * resident with 32 and 16 (148 MiB with 48 and 32, at the same speed);
   * its reads on the write path are mostly answered by the filters. */
  rocksdb_options_set_write_buffer_size(s->opts, 16 << 20);
  rocksdb_options_set_db_write_buffer_size(s->opts, (size_t)MEMTABLES_MB << 20);
  s->cache = rocksdb_cache_create_lru((size_t)CACHE_MB << 20);
  s->table = rocksdb_block_based_options_create();
  rocksdb_block_based_options_set_block_cache(s->table, s->cache);
  rocksdb_options_set_block_based_table_factory(s->opts, s->table);
  /* The families whose point reads mostly miss (a new order, a new
   * subject) get a whole-key Bloom filter (10 bits per key, ~1% false
   * positives) in each table and memtable, which answers those without
   * reading a block.  The logs' families are only read at positions that
   * exist: a filter there would cost memory for nothing.  The table
   * options own the policy. */
  s->fopts = rocksdb_options_create_copy(s->opts);
  s->ftable = rocksdb_block_based_options_create();
  rocksdb_block_based_options_set_block_cache(s->ftable, s->cache);
  rocksdb_block_based_options_set_filter_policy(
      s->ftable, rocksdb_filterpolicy_create_bloom_full(10));
  rocksdb_block_based_options_set_whole_key_filtering(s->ftable, 1);
  rocksdb_options_set_block_based_table_factory(s->fopts, s->ftable);
  rocksdb_options_set_memtable_whole_key_filtering(s->fopts, 1);
  rocksdb_options_set_memtable_prefix_bloom_size_ratio(s->fopts, 0.02);

  const rocksdb_options_t *cf_opts[PERMIT_CF_COUNT];
  for (int i = 0; i < PERMIT_CF_COUNT; i++) cf_opts[i] = s->opts;
  cf_opts[PERMIT_CF_DEFAULT] = cf_opts[PERMIT_CF_RECORDS] =
      cf_opts[PERMIT_CF_INDEXES] = cf_opts[PERMIT_CF_IDEMPOTENCY] =
          cf_opts[PERMIT_CF_CONTACTS] = s->fopts;
  char *msg = NULL;
  if (read_only)
    s->db = rocksdb_open_for_read_only_column_families(
        s->opts, dir, PERMIT_CF_COUNT, cf_names, cf_opts, s->cf, 0, &msg);
  else
    s->db = rocksdb_open_column_families(s->opts, dir, PERMIT_CF_COUNT,
                                         cf_names, cf_opts, s->cf, &msg);
  if (msg != NULL) {
    char what[512];
    snprintf(what, sizeof what, "cannot open database %s", dir);
    rocks_err(err, msg, what);
    rocksdb_options_destroy(s->opts);
    rocksdb_options_destroy(s->fopts);
    rocksdb_block_based_options_destroy(s->table);
    rocksdb_block_based_options_destroy(s->ftable);
    rocksdb_cache_destroy(s->cache);
    free(s);
    return PERMIT_EIO;
  }
  s->ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_verify_checksums(s->ro, 1);
  s->wo_sync = rocksdb_writeoptions_create();
  rocksdb_writeoptions_set_sync(s->wo_sync, 1);
  s->wo_async = rocksdb_writeoptions_create();
  s->dir = strdup(dir);
  *out = s;
  return 0;
}

void permit_store_set_reserve(permit_store *s, uint64_t bytes) {
  atomic_store(&s->reserve, bytes);
  atomic_store(&s->checked_ms, 0);
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int permit_store_space_low(permit_store *s, uint64_t *free_bytes) {
  uint64_t reserve = atomic_load(&s->reserve);
  if (reserve == 0 || s->dir == NULL) return 0;
  /* statvfs at most twice a second: the check sits on the request path. */
  int64_t now = mono_ms();
  if (now - atomic_load(&s->checked_ms) >= 500) {
    struct statvfs vfs;
    if (statvfs(s->dir, &vfs) == 0)
      atomic_store(&s->free_bytes, (uint64_t)vfs.f_bavail * vfs.f_frsize);
    atomic_store(&s->checked_ms, now);
  }
  uint64_t fb = atomic_load(&s->free_bytes);
  if (free_bytes != NULL) *free_bytes = fb;
  return fb < reserve;
}

int permit_store_open(const char *dir, permit_store **out, permit_err *err) {
  return store_open(dir, 0, out, err);
}

int permit_store_open_read_only(const char *dir, permit_store **out,
                                permit_err *err) {
  return store_open(dir, 1, out, err);
}

void permit_store_close(permit_store *s) {
  if (s == NULL) return;
  for (int i = 0; i < PERMIT_CF_COUNT; i++)
    if (s->cf[i] != NULL) rocksdb_column_family_handle_destroy(s->cf[i]);
  rocksdb_close(s->db);
  rocksdb_readoptions_destroy(s->ro);
  rocksdb_writeoptions_destroy(s->wo_sync);
  rocksdb_writeoptions_destroy(s->wo_async);
  free(s->dir);
  rocksdb_options_destroy(s->opts);
  rocksdb_options_destroy(s->fopts);
  rocksdb_block_based_options_destroy(s->table);
  rocksdb_block_based_options_destroy(s->ftable);
  rocksdb_cache_destroy(s->cache);
  free(s);
}

int permit_store_get(permit_store *s, permit_cf cf, const void *key,
                     size_t klen, uint8_t **val, size_t *vlen,
                     permit_err *err) {
  char *msg = NULL;
  rocksdb_pinnableslice_t *p =
      rocksdb_get_pinned_cf(s->db, s->ro, s->cf[cf], key, klen, &msg);
  if (msg != NULL) return rocks_err(err, msg, "read failed");
  if (p == NULL)
    return permit_err_set(err, PERMIT_ENOTFOUND, "no such key in %s",
                          cf_names[cf]);
  size_t n;
  const char *v = rocksdb_pinnableslice_value(p, &n);
  uint8_t *copy = malloc(n ? n : 1);
  if (copy == NULL) {
    rocksdb_pinnableslice_destroy(p);
    return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  }
  memcpy(copy, v, n);
  rocksdb_pinnableslice_destroy(p);
  *val = copy;
  *vlen = n;
  return 0;
}

int permit_store_get_fixed(permit_store *s, permit_cf cf, const void *key,
                           size_t klen, void *val, size_t len,
                           permit_err *err) {
  char *msg = NULL;
  rocksdb_pinnableslice_t *p =
      rocksdb_get_pinned_cf(s->db, s->ro, s->cf[cf], key, klen, &msg);
  if (msg != NULL) return rocks_err(err, msg, "read failed");
  if (p == NULL)
    return permit_err_set(err, PERMIT_ENOTFOUND, "no such key in %s",
                          cf_names[cf]);
  size_t n;
  const char *v = rocksdb_pinnableslice_value(p, &n);
  int rc = 0;
  if (n != len)
    rc = permit_err_set(err, PERMIT_ECORRUPT,
                        "value in %s is %zu bytes, expected %zu",
                        cf_names[cf], n, len);
  else
    memcpy(val, v, n);
  rocksdb_pinnableslice_destroy(p);
  return rc;
}

permit_batch *permit_batch_new(permit_store *s) {
  permit_batch *b = malloc(sizeof *b);
  if (b == NULL) return NULL;
  b->store = s;
  b->wb = rocksdb_writebatch_create();
  return b;
}

void permit_batch_free(permit_batch *b) {
  if (b == NULL) return;
  rocksdb_writebatch_destroy(b->wb);
  free(b);
}

void permit_batch_clear(permit_batch *b) { rocksdb_writebatch_clear(b->wb); }

void permit_batch_put(permit_batch *b, permit_cf cf, const void *key,
                      size_t klen, const void *val, size_t vlen) {
  rocksdb_writebatch_put_cf(b->wb, b->store->cf[cf], key, klen, val, vlen);
}

void permit_batch_delete(permit_batch *b, permit_cf cf, const void *key,
                         size_t klen) {
  rocksdb_writebatch_delete_cf(b->wb, b->store->cf[cf], key, klen);
}

void permit_batch_savepoint(permit_batch *b) {
  rocksdb_writebatch_set_save_point(b->wb);
}

void permit_batch_rollback(permit_batch *b) {
  char *msg = NULL;
  rocksdb_writebatch_rollback_to_save_point(b->wb, &msg);
  /* Fails only without a mark, a programming error; nothing to undo. */
  rocksdb_free(msg);
}

void permit_batch_release(permit_batch *b) {
  char *msg = NULL;
  rocksdb_writebatch_pop_save_point(b->wb, &msg);
  rocksdb_free(msg);
}

int permit_batch_count(const permit_batch *b) {
  return rocksdb_writebatch_count(b->wb);
}

int permit_store_write(permit_store *s, permit_batch *b, int sync,
                       permit_err *err) {
  char *msg = NULL;
  rocksdb_write(s->db, sync ? s->wo_sync : s->wo_async, b->wb, &msg);
  if (msg != NULL) return rocks_err(err, msg, "write failed");
  if (sync)
    atomic_fetch_add_explicit(&s->synced_writes, 1, memory_order_relaxed);
  return 0;
}

int permit_store_put(permit_store *s, permit_cf cf, const void *key,
                     size_t klen, const void *val, size_t vlen,
                     permit_err *err) {
  char *msg = NULL;
  rocksdb_put_cf(s->db, s->wo_sync, s->cf[cf], key, klen, val, vlen, &msg);
  if (msg != NULL) return rocks_err(err, msg, "write failed");
  atomic_fetch_add_explicit(&s->synced_writes, 1, memory_order_relaxed);
  return 0;
}

uint64_t permit_store_synced_writes(permit_store *s) {
  return atomic_load_explicit(&s->synced_writes, memory_order_relaxed);
}

int permit_store_scan(permit_store *s, permit_cf cf, const void *prefix,
                      size_t plen, const void *start, size_t slen,
                      permit_store_visit_fn visit, void *arg,
                      permit_err *err) {
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[cf]);
  if (start != NULL)
    rocksdb_iter_seek(it, start, slen);
  else
    rocksdb_iter_seek(it, prefix, plen);
  int rc = 0;
  for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    size_t kl, vl;
    const char *k = rocksdb_iter_key(it, &kl);
    if (kl < plen || memcmp(k, prefix, plen) != 0) break;
    const char *v = rocksdb_iter_value(it, &vl);
    rc = visit(arg, (const uint8_t *)k, kl, (const uint8_t *)v, vl);
    if (rc != 0) break;
  }
  if (rc == 0) {
    char *msg = NULL;
    rocksdb_iter_get_error(it, &msg);
    if (msg != NULL) rc = rocks_err(err, msg, "scan failed");
  }
  rocksdb_iter_destroy(it);
  return rc;
}

int permit_store_compact(permit_store *s, permit_err *err) {
  rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
  rocksdb_flushoptions_set_wait(fo, 1);
  int rc = 0;
  for (int i = 0; i < PERMIT_CF_COUNT && rc == 0; i++) {
    char *msg = NULL;
    rocksdb_flush_cf(s->db, fo, s->cf[i], &msg);
    if (msg != NULL) rc = rocks_err(err, msg, "flush failed");
  }
  rocksdb_flushoptions_destroy(fo);
  for (int i = 0; i < PERMIT_CF_COUNT && rc == 0; i++)
    rocksdb_compact_range_cf(s->db, s->cf[i], NULL, 0, NULL, 0);
  return rc;
}

int permit_store_verify(permit_store *s, uint64_t *keys, permit_err *err) {
  /* Every block read once, its checksum checked, nothing kept in cache. */
  rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_verify_checksums(ro, 1);
  rocksdb_readoptions_set_fill_cache(ro, 0);
  uint64_t n = 0;
  int rc = 0;
  for (int i = 0; i < PERMIT_CF_COUNT && rc == 0; i++) {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, s->cf[i]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
      size_t vl;
      (void)rocksdb_iter_value(it, &vl);
      n++;
    }
    char *msg = NULL;
    rocksdb_iter_get_error(it, &msg);
    if (msg != NULL) {
      char what[64];
      snprintf(what, sizeof what, "column family %s is damaged", cf_names[i]);
      rc = rocks_err(err, msg, what);
      rc = rc == PERMIT_EIO ? PERMIT_ECORRUPT : rc;
      if (err != NULL) err->code = rc;
    }
    rocksdb_iter_destroy(it);
  }
  rocksdb_readoptions_destroy(ro);
  if (keys != NULL) *keys = n;
  return rc;
}
