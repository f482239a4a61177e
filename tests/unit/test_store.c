/* test_store: column families, atomic batches, prefix scans, reopen,
 * the synced-write counter, and refusal of a damaged database. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "permit/store.h"
#include "testlib.h"

typedef struct seen {
  int n;
  char keys[16][16];
} seen;

static int collect(void *arg, const uint8_t *k, size_t kl, const uint8_t *v,
                   size_t vl) {
  seen *s = arg;
  (void)v, (void)vl;
  if (s->n < 16 && kl < 16) {
    memcpy(s->keys[s->n], k, kl);
    s->keys[s->n][kl] = '\0';
  }
  s->n++;
  return s->n == 100 ? 7 : 0;
}

#define SST_KEYS 1000

/* A value that LZ4 cannot shrink much, so the keys span many blocks. */
static void sst_value(int i, uint8_t v[100]) {
  uint32_t x = 2654435761u * (uint32_t)(i + 1);
  for (int j = 0; j < 100; j++) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    v[j] = (uint8_t)x;
  }
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
  if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

/* The one *.sst file in |dir| into |out|; 0 when there is exactly one. */
static int find_sst(const char *dir, char *out, size_t cap) {
  DIR *d = opendir(dir);
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t l = strlen(de->d_name);
    if (l > 4 && strcmp(de->d_name + l - 4, ".sst") == 0) {
      snprintf(out, cap, "%s/%s", dir, de->d_name);
      n++;
    }
  }
  closedir(d);
  return n == 1 ? 0 : -1;
}

static int count_visit(void *arg, const uint8_t *k, size_t kl,
                       const uint8_t *v, size_t vl) {
  (void)k, (void)kl, (void)v, (void)vl;
  (*(int *)arg)++;
  return 0;
}

/*
 * Damaged bytes in the middle of a table file: RocksDB opens the database
 * (the open checks file sizes, not every block), and the damage shows as
 * "Corruption: block checksum mismatch" on the first read of the damaged
 * block, never as wrong data, with the file left as it was.
 */
static void test_corrupt_sst(const char *dir) {
  char path[4200], sst[4500];
  snprintf(path, sizeof path, "%s/sst", dir);
  permit_store *s = NULL;
  permit_err err = {0};
  CHECK(permit_store_open(path, &s, &err) == 0);
  permit_batch *b = permit_batch_new(s);
  for (int i = 0; i < SST_KEYS; i++) {
    char k[16];
    uint8_t v[100];
    int kl = snprintf(k, sizeof k, "r/%05d", i);
    sst_value(i, v);
    permit_batch_put(b, PERMIT_CF_RECORDS, k, (size_t)kl, v, sizeof v);
  }
  CHECK(permit_store_write(s, b, 1, &err) == 0);
  permit_batch_free(b);
  CHECK(permit_store_compact(s, &err) == 0);
  permit_store_close(s);

  CHECK(find_sst(path, sst, sizeof sst) == 0);
  size_t len = 0;
  uint8_t *bytes = read_all(sst, &len);
  CHECK(bytes != NULL && len > 64 * 1024);
  if (bytes == NULL || len <= 64 * 1024) {
    free(bytes);
    return;
  }
  for (size_t i = len / 2; i < len / 2 + 16; i++) bytes[i] ^= 0xff;
  FILE *f = fopen(sst, "r+b");
  CHECK(f != NULL);
  if (f != NULL) {
    CHECK(fwrite(bytes, 1, len, f) == len);
    fclose(f);
  }

  int orc = permit_store_open(path, &s, &err);
  CHECKF(orc == 0, "open of a database with a damaged block: %d \"%s\"", orc,
         err.msg);
  if (orc == 0) {
    int seen = 0;
    int rc = permit_store_scan(s, PERMIT_CF_RECORDS, "r/", 2, NULL, 0,
                               count_visit, &seen, &err);
    CHECKF(rc == PERMIT_EIO && strstr(err.msg, "Corruption") != NULL,
           "scan: %d \"%s\"", rc, err.msg);
    CHECK(seen < SST_KEYS);
    /* Every key reads back right or fails with RocksDB's reason. */
    int right = 0, corrupt = 0, other = 0;
    char msg[PERMIT_ERR_MSG_LEN] = "";
    for (int i = 0; i < SST_KEYS; i++) {
      char k[16];
      uint8_t want[100], *v = NULL;
      size_t vl = 0;
      int kl = snprintf(k, sizeof k, "r/%05d", i);
      sst_value(i, want);
      rc = permit_store_get(s, PERMIT_CF_RECORDS, k, (size_t)kl, &v, &vl,
                            &err);
      if (rc == 0 && vl == sizeof want && memcmp(v, want, vl) == 0)
        right++;
      else if (rc == PERMIT_EIO && strstr(err.msg, "Corruption") != NULL) {
        corrupt++;
        memcpy(msg, err.msg, sizeof msg);
      } else
        other++;
      free(v);
    }
    CHECKF(corrupt > 0 && other == 0 && right + corrupt == SST_KEYS,
           "%d right, %d corrupt, %d other", right, corrupt, other);
    printf("test_store: damaged table opened; %d keys read right, %d "
           "refused: %.120s\n", right, corrupt, msg);
    permit_store_close(s);
  }
  /* Neither repaired nor removed. */
  size_t len2 = 0;
  uint8_t *after = read_all(sst, &len2);
  CHECK(after != NULL && len2 == len && memcmp(after, bytes, len) == 0);
  free(after);
  free(bytes);
}

int main(void) {
  const char *dir = test_tmpdir("store");
  char path[4200];
  snprintf(path, sizeof path, "%s/db", dir);
  permit_store *s = NULL;
  permit_err err = {0};
  CHECK(permit_store_open(path, &s, &err) == 0);
  CHECK(strcmp(permit_cf_name(PERMIT_CF_CONTACTS), "contacts") == 0);
  CHECK(permit_store_synced_writes(s) == 0);

  /* Missing key. */
  uint8_t *v;
  size_t vl;
  CHECK(permit_store_get(s, PERMIT_CF_RECORDS, "nope", 4, &v, &vl, &err) ==
        PERMIT_ENOTFOUND);

  /* Column families are separate namespaces. */
  CHECK(permit_store_put(s, PERMIT_CF_RECORDS, "k", 1, "records", 7, &err) ==
        0);
  CHECK(permit_store_put(s, PERMIT_CF_INDEXES, "k", 1, "indexes", 7, &err) ==
        0);
  CHECK(permit_store_get(s, PERMIT_CF_RECORDS, "k", 1, &v, &vl, &err) == 0 &&
        vl == 7 && memcmp(v, "records", 7) == 0);
  free(v);
  CHECK(permit_store_get(s, PERMIT_CF_INDEXES, "k", 1, &v, &vl, &err) == 0 &&
        vl == 7 && memcmp(v, "indexes", 7) == 0);
  free(v);

  /* get_fixed checks the stored length. */
  char four[4];
  CHECK(permit_store_get_fixed(s, PERMIT_CF_RECORDS, "k", 1, four, 4, &err) ==
        PERMIT_ECORRUPT);

  /* A batch with a savepoint: the rolled-back part is not written. */
  permit_batch *b = permit_batch_new(s);
  permit_batch_put(b, PERMIT_CF_CURSORS, "a/1", 3, "x", 1);
  permit_batch_put(b, PERMIT_CF_CURSORS, "a/2", 3, "x", 1);
  permit_batch_savepoint(b);
  permit_batch_put(b, PERMIT_CF_CURSORS, "a/3", 3, "x", 1);
  permit_batch_rollback(b);
  permit_batch_put(b, PERMIT_CF_CURSORS, "b/1", 3, "x", 1);
  permit_batch_delete(b, PERMIT_CF_RECORDS, "k", 1);
  CHECK(permit_batch_count(b) == 4);
  uint64_t synced = permit_store_synced_writes(s);
  CHECK(synced == 2); /* the two puts */
  CHECK(permit_store_write(s, b, 1, &err) == 0);
  CHECK(permit_store_synced_writes(s) == synced + 1);
  permit_batch_free(b);
  CHECK(permit_store_get(s, PERMIT_CF_RECORDS, "k", 1, &v, &vl, &err) ==
        PERMIT_ENOTFOUND);
  CHECK(permit_store_get(s, PERMIT_CF_CURSORS, "a/3", 3, &v, &vl, &err) ==
        PERMIT_ENOTFOUND);

  /* Prefix scan stays inside the prefix, in order, from a start key. */
  seen sn = {0};
  CHECK(permit_store_scan(s, PERMIT_CF_CURSORS, "a/", 2, NULL, 0, collect,
                          &sn, &err) == 0);
  CHECK(sn.n == 2 && strcmp(sn.keys[0], "a/1") == 0 &&
        strcmp(sn.keys[1], "a/2") == 0);
  memset(&sn, 0, sizeof sn);
  CHECK(permit_store_scan(s, PERMIT_CF_CURSORS, "a/", 2, "a/2", 3, collect,
                          &sn, &err) == 0);
  CHECK(sn.n == 1 && strcmp(sn.keys[0], "a/2") == 0);

  /* A visitor's non-zero return stops the scan and is returned. */
  b = permit_batch_new(s);
  for (int i = 0; i < 200; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "m/%03d", i);
    permit_batch_put(b, PERMIT_CF_INDEXES, k, (size_t)kl, "v", 1);
  }
  CHECK(permit_store_write(s, b, 0, &err) == 0);
  CHECK(permit_store_synced_writes(s) == synced + 1); /* not synced */
  permit_batch_free(b);
  memset(&sn, 0, sizeof sn);
  CHECK(permit_store_scan(s, PERMIT_CF_INDEXES, "m/", 2, NULL, 0, collect,
                          &sn, &err) == 7);
  CHECK(sn.n == 100);

  CHECK(permit_store_compact(s, &err) == 0);
  permit_store_close(s);

  /* Everything survives a reopen. */
  CHECK(permit_store_open(path, &s, &err) == 0);
  CHECK(permit_store_get(s, PERMIT_CF_CURSORS, "b/1", 3, &v, &vl, &err) == 0);
  free(v);
  /* A second open of the same database is refused with RocksDB's reason. */
  permit_store *s2 = NULL;
  CHECK(permit_store_open(path, &s2, &err) == PERMIT_EIO);
  CHECK(strstr(err.msg, "lock") != NULL || strstr(err.msg, "LOCK") != NULL);
  permit_store_close(s);

  /* A damaged database (CURRENT names a missing manifest) is refused with
   * a message, and left as it was. */
  char cur[4300];
  snprintf(cur, sizeof cur, "%s/CURRENT", path);
  FILE *f = fopen(cur, "w");
  CHECK(f != NULL);
  if (f != NULL) {
    fputs("MANIFEST-999999\n", f);
    fclose(f);
  }
  CHECK(permit_store_open(path, &s, &err) == PERMIT_EIO);
  CHECK(strstr(err.msg, "cannot open database") != NULL);
  struct stat st;
  CHECK(stat(cur, &st) == 0 && st.st_size == 16);

  test_corrupt_sst(dir);
  test_rmrf(dir);
  return test_finish("test_store");
}
