/* test_store: column families, atomic batches, prefix scans, reopen,
 * and refusal of a damaged database. */
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

int main(void) {
  const char *dir = test_tmpdir("store");
  char path[4200];
  snprintf(path, sizeof path, "%s/db", dir);
  permit_store *s = NULL;
  permit_err err = {0};
  CHECK(permit_store_open(path, &s, &err) == 0);
  CHECK(strcmp(permit_cf_name(PERMIT_CF_CONTACTS), "contacts") == 0);

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
  CHECK(permit_store_write(s, b, 1, &err) == 0);
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

  test_rmrf(dir);
  return test_finish("test_store");
}
