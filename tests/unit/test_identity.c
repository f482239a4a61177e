/* test_identity: key creation and reload, the data directory's lock
 * (within a process and across fork), leftovers of a crashed creator,
 * and refusal of half a key pair and of readable key files. */
#include <dirent.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "permit/identity.h"
#include "testlib.h"

static int mode_of(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* The number of entries of |dir| whose name starts with |prefix|. */
static int count_prefixed(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
  closedir(d);
  return n;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (f != NULL) {
    fputs(text, f);
    fclose(f);
  }
}

static void test_create_and_reload(const char *base) {
  char data[4200], path[4300];
  snprintf(data, sizeof data, "%s/create", base);
  permit_err err = {0};
  permit_identity id, again;
  int fd = -1;
  /* The lock makes the missing data directory, mode 0700. */
  CHECK(permit_identity_lock(data, &fd, &err) == 0 && fd >= 0);
  CHECK(mode_of(data) == 0700);
  CHECK(permit_identity_open(data, 0, &id, &err) == PERMIT_ENOTFOUND);
  CHECK(permit_identity_open(data, 1, &id, &err) == 0 && id.created == 1);
  snprintf(path, sizeof path, "%s/keys", data);
  CHECK(mode_of(path) == 0700);
  snprintf(path, sizeof path, "%s/keys/identity.key", data);
  CHECK(mode_of(path) == 0600);
  snprintf(path, sizeof path, "%s/keys/sealing.key", data);
  CHECK(mode_of(path) == 0600);
  CHECK(count_prefixed(data, "keys.tmp") == 0);

  /* Reopened, with or without |create|: the same keys. */
  for (int create = 0; create <= 1; create++) {
    CHECK(permit_identity_open(data, create, &again, &err) == 0);
    CHECK(again.created == 0);
    CHECK(again.sign != NULL && id.sign != NULL &&
          strcmp(permit_sign_key_id(again.sign),
                 permit_sign_key_id(id.sign)) == 0);
    CHECK(again.seal != NULL && id.seal != NULL &&
          memcmp(permit_kx_key_public(again.seal),
                 permit_kx_key_public(id.seal), PERMIT_X25519_LEN) == 0);
    permit_identity_free(&again);
  }
  permit_identity_free(&id);
  permit_identity_unlock(fd);
}

static void test_leftovers(const char *base) {
  char data[4200], path[4300];
  snprintf(data, sizeof data, "%s/leftovers", base);
  permit_err err = {0};
  int fd = -1;
  CHECK(permit_identity_lock(data, &fd, &err) == 0);
  /* What a creator that crashed before its rename leaves: temporary
   * directories holding keys nobody ever used, and an empty keys/. */
  const char *left[] = {"keys.tmp", "keys.tmp-AbC123", "keys.tmp-x9y8z7"};
  for (size_t i = 0; i < sizeof left / sizeof *left; i++) {
    snprintf(path, sizeof path, "%s/%s", data, left[i]);
    CHECK(mkdir(path, 0700) == 0);
    snprintf(path, sizeof path, "%s/%s/identity.key", data, left[i]);
    write_file(path, "old\n");
  }
  snprintf(path, sizeof path, "%s/keys.tmp-x9y8z7/sealing.key", data);
  write_file(path, "old\n");
  snprintf(path, sizeof path, "%s/keys", data);
  CHECK(mkdir(path, 0700) == 0);
  permit_identity id;
  CHECK(permit_identity_open(data, 1, &id, &err) == 0 && id.created == 1);
  CHECK(count_prefixed(data, "keys.tmp") == 0);
  permit_identity_free(&id);
  CHECK(permit_identity_open(data, 0, &id, &err) == 0);
  permit_identity_free(&id);
  permit_identity_unlock(fd);
}

static void test_lock(const char *base) {
  char data[4200];
  snprintf(data, sizeof data, "%s/lock", base);
  permit_err err = {0};
  int fd1 = -1, fd2 = -1;
  CHECK(permit_identity_lock(data, &fd1, &err) == 0 && fd1 >= 0);
  /* flock belongs to the open file description: a second open of the
   * same file conflicts even in the same process. */
  CHECK(permit_identity_lock(data, &fd2, &err) == PERMIT_EEXIST);
  CHECK(fd2 == -1);
  char want[4300];
  snprintf(want, sizeof want, "another permitd or permitctl is using %s",
           data);
  CHECKF(strcmp(err.msg, want) == 0, "message \"%s\"", err.msg);
  permit_identity_unlock(fd1);
  CHECK(permit_identity_lock(data, &fd2, &err) == 0 && fd2 >= 0);
  permit_identity_unlock(fd2);

  /* Another process holding the lock makes this one fail until it exits. */
  int ready[2], release[2];
  CHECK(pipe(ready) == 0 && pipe(release) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = -1;
    char c = permit_identity_lock(data, &fd, NULL) == 0 ? 'L' : 'F';
    close(ready[0]);
    close(release[1]);
    if (write(ready[1], &c, 1) != 1) _exit(2);
    /* Hold the lock until the parent closes its end. */
    while (read(release[0], &c, 1) > 0) {
    }
    _exit(0);
  }
  CHECK(pid > 0);
  close(ready[1]);
  close(release[0]);
  char c = 0;
  CHECK(read(ready[0], &c, 1) == 1 && c == 'L');
  CHECK(permit_identity_lock(data, &fd1, &err) == PERMIT_EEXIST);
  CHECK(strstr(err.msg, "another permitd or permitctl") != NULL);
  close(release[1]);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
        WEXITSTATUS(status) == 0);
  close(ready[0]);
  CHECK(permit_identity_lock(data, &fd1, &err) == 0);
  permit_identity_unlock(fd1);
}

static void test_damaged(const char *base) {
  char data[4200], ipath[4300], spath[4300];
  snprintf(data, sizeof data, "%s/damaged", base);
  snprintf(ipath, sizeof ipath, "%s/keys/identity.key", data);
  snprintf(spath, sizeof spath, "%s/keys/sealing.key", data);
  permit_err err = {0};
  permit_identity id;
  int fd = -1;
  CHECK(permit_identity_lock(data, &fd, &err) == 0);
  CHECK(permit_identity_open(data, 1, &id, &err) == 0);
  permit_identity_free(&id);

  /* A key file that group or others can read is refused. */
  CHECK(chmod(ipath, 0640) == 0);
  CHECK(permit_identity_open(data, 0, &id, &err) == PERMIT_EPERM);
  CHECK(strstr(err.msg, "identity.key") != NULL);
  CHECK(chmod(ipath, 0600) == 0);
  CHECK(chmod(spath, 0604) == 0);
  CHECK(permit_identity_open(data, 0, &id, &err) == PERMIT_EPERM);
  CHECK(strstr(err.msg, "sealing.key") != NULL);
  CHECK(chmod(spath, 0600) == 0);
  CHECK(permit_identity_open(data, 0, &id, &err) == 0);
  permit_identity_free(&id);

  /* Half a pair is refused, even when asked to create, and left alone. */
  CHECK(unlink(spath) == 0);
  for (int create = 0; create <= 1; create++) {
    CHECK(permit_identity_open(data, create, &id, &err) == PERMIT_ECORRUPT);
    CHECK(strstr(err.msg, "sealing.key") != NULL);
  }
  CHECK(mode_of(ipath) == 0600 && mode_of(spath) == -1);
  permit_identity_unlock(fd);
}

/* permit_random() feeds key generation; RAND_bytes takes an int. */
static void test_random_bound(void) {
  uint8_t buf[16];
  memset(buf, 0, sizeof buf);
  CHECK(permit_random(buf, sizeof buf) == 0);
  if (SIZE_MAX > UINT32_MAX) {
    /* 2^32 + 16 would be cut to 16 bytes by a cast to int; it must be
     * refused before anything is written. */
    size_t huge = (size_t)UINT32_MAX + 1 + sizeof buf;
    memset(buf, 0, sizeof buf);
    CHECK(permit_random(buf, huge) == PERMIT_EINVAL);
    int zero = 1;
    for (size_t i = 0; i < sizeof buf; i++) zero &= buf[i] == 0;
    CHECK(zero);
  }
  CHECK(permit_random(buf, (size_t)INT_MAX + 1) == PERMIT_EINVAL);
}

int main(void) {
  const char *tmp = test_tmpdir("identity");
  char base[4096];
  snprintf(base, sizeof base, "%s", tmp);
  test_create_and_reload(base);
  test_leftovers(base);
  test_lock(base);
  test_damaged(base);
  test_random_bound();
  test_rmrf(base);
  permit_crypto_cleanup();
  return test_finish("test_identity");
}
