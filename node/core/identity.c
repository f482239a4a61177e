#include "permit/identity.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 4200

int permit_mkdir(const char *path, unsigned mode, permit_err *err) {
  if (mkdir(path, (mode_t)mode) == 0) return 0;
  if (errno == EEXIST) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    return permit_err_set(err, PERMIT_EIO, "%s exists and is not a directory",
                          path);
  }
  return permit_err_set(err, PERMIT_EIO, "cannot create directory %s: %s",
                        path, strerror(errno));
}

int permit_identity_lock(const char *data_dir, int *fd_out, permit_err *err) {
  char path[PATH_CAP];
  *fd_out = -1;
  if (snprintf(path, sizeof path, "%s/permit.lock", data_dir) >=
      (int)sizeof path)
    return permit_err_set(err, PERMIT_EINVAL, "data directory path too long");
  int rc = permit_mkdir(data_dir, 0700, err);
  if (rc != 0) return rc;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0)
    return permit_err_set(err, PERMIT_EIO, "cannot open %s: %s", path,
                          strerror(errno));
  int r;
  while ((r = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {
  }
  if (r != 0) {
    int e = errno;
    close(fd);
    if (e == EWOULDBLOCK)
      return permit_err_set(err, PERMIT_EEXIST,
                            "another permitd or permitctl is using %s",
                            data_dir);
    return permit_err_set(err, PERMIT_EIO, "cannot lock %s: %s", path,
                          strerror(e));
  }
  *fd_out = fd;
  return 0;
}

void permit_identity_unlock(int fd) {
  if (fd >= 0) close(fd);
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Removes the key files we write in a temporary directory, then the
 * directory if that emptied it.  Anything else in it is left alone. */
static void tmp_remove(const char *tmp) {
  char p[PATH_CAP + 32];
  snprintf(p, sizeof p, "%s/identity.key", tmp);
  unlink(p);
  snprintf(p, sizeof p, "%s/sealing.key", tmp);
  unlink(p);
  rmdir(tmp);
}

/*
 * Clears keys.tmp-* (and the keys.tmp of older versions) left in
 * |data_dir| by a creator that crashed before its rename: they hold keys
 * nobody ever used.  Safe only under the lock, which rules out a creator
 * that is still running.
 */
static void tmp_clear_leftovers(const char *data_dir) {
  DIR *d = opendir(data_dir);
  if (d == NULL) return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, "keys.tmp") != 0 &&
        strncmp(de->d_name, "keys.tmp-", 9) != 0)
      continue;
    char tmp[PATH_CAP];
    if (snprintf(tmp, sizeof tmp, "%s/%s", data_dir, de->d_name) <
        (int)sizeof tmp)
      tmp_remove(tmp);
  }
  closedir(d);
}

/* Fsyncs directory |dir| so that a rename inside it is durable. */
static int dir_sync(const char *dir, permit_err *err) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return permit_err_set(err, PERMIT_EIO, "cannot open %s to sync it: %s",
                          dir, strerror(errno));
  int rc = 0;
  if (fsync(fd) != 0)
    rc = permit_err_set(err, PERMIT_EIO, "cannot fsync %s: %s", dir,
                        strerror(errno));
  close(fd);
  return rc;
}

/* Makes both keys in a fresh temporary directory and renames it to
 * |keys|, so that a crash never leaves half a pair in place. */
static int identity_create(const char *data_dir, const char *keys,
                           permit_identity *id, permit_err *err) {
  int rc;
  if ((rc = permit_mkdir(data_dir, 0700, err))) return rc;
  tmp_clear_leftovers(data_dir);
  rmdir(keys); /* an empty keys/ only; a full one was handled by the caller */
  char tmp[PATH_CAP], ti[PATH_CAP + 32], ts[PATH_CAP + 32];
  if (snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", keys) >= (int)sizeof tmp)
    return permit_err_set(err, PERMIT_EINVAL, "data directory path too long");
  if (mkdtemp(tmp) == NULL)
    return permit_err_set(err, PERMIT_EIO, "cannot create directory %s: %s",
                          tmp, strerror(errno));
  snprintf(ti, sizeof ti, "%s/identity.key", tmp);
  snprintf(ts, sizeof ts, "%s/sealing.key", tmp);
  if ((rc = permit_sign_key_generate(&id->sign)) ||
      (rc = permit_kx_key_generate(&id->seal))) {
    rc = permit_err_set(err, rc, "key generation failed");
    goto fail;
  }
  if ((rc = permit_sign_key_save(id->sign, ti, err)) ||
      (rc = permit_kx_key_save(id->seal, ts, err)))
    goto fail;
  if (rename(tmp, keys) != 0) {
    rc = permit_err_set(err, PERMIT_EIO, "cannot rename %s to %s: %s", tmp,
                        keys, strerror(errno));
    goto fail;
  }
  /* The keys are in place; without this sync a crash could still lose
   * the rename, and with it keys already handed to peers. */
  if ((rc = dir_sync(data_dir, err))) {
    permit_identity_free(id);
    return rc;
  }
  id->created = 1;
  return 0;
fail:
  permit_identity_free(id);
  tmp_remove(tmp);
  return rc;
}

int permit_identity_open(const char *data_dir, int create,
                         permit_identity *id, permit_err *err) {
  char keys[4096], ipath[PATH_CAP], spath[PATH_CAP];
  memset(id, 0, sizeof *id);
  if (snprintf(keys, sizeof keys, "%s/keys", data_dir) >= (int)sizeof keys)
    return permit_err_set(err, PERMIT_EINVAL, "data directory path too long");
  snprintf(ipath, sizeof ipath, "%s/identity.key", keys);
  snprintf(spath, sizeof spath, "%s/sealing.key", keys);
  int have_i = exists(ipath), have_s = exists(spath), rc;
  if (have_i != have_s)
    return permit_err_set(err, PERMIT_ECORRUPT,
                          "%s exists but %s does not: refusing to make a new "
                          "key next to an old one (restore the missing file "
                          "from backup)", have_i ? ipath : spath,
                          have_i ? spath : ipath);
  if (!have_i) {
    if (!create)
      return permit_err_set(err, PERMIT_ENOTFOUND,
                            "no keys in %s (run permitd once, or permitctl "
                            "init, to create them)", keys);
    return identity_create(data_dir, keys, id, err);
  }
  if ((rc = permit_sign_key_load(ipath, &id->sign, err)) ||
      (rc = permit_kx_key_load(spath, &id->seal, err))) {
    permit_identity_free(id);
    return rc;
  }
  return 0;
}

void permit_identity_free(permit_identity *id) {
  permit_sign_key_free(id->sign);
  permit_kx_key_free(id->seal);
  id->sign = NULL;
  id->seal = NULL;
}
