#include "permit/identity.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

int permit_identity_open(const char *data_dir, int create,
                         permit_identity *id, permit_err *err) {
  char keys[4096], ipath[4200], spath[4200];
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
    /* Both keys are written in keys.tmp and the directory renamed into
     * place, so a crash here never leaves half a pair.  A keys.tmp left by
     * such a crash held keys nobody ever used: it is safe to discard. */
    char tmp[4200], ti[4300], ts[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", keys);
    snprintf(ti, sizeof ti, "%s/identity.key", tmp);
    snprintf(ts, sizeof ts, "%s/sealing.key", tmp);
    if ((rc = permit_mkdir(data_dir, 0700, err))) return rc;
    unlink(ti);
    unlink(ts);
    rmdir(keys); /* an empty keys/ only; a full one was handled above */
    if ((rc = permit_mkdir(tmp, 0700, err))) return rc;
    if ((rc = permit_sign_key_generate(&id->sign)) ||
        (rc = permit_kx_key_generate(&id->seal))) {
      permit_identity_free(id);
      return permit_err_set(err, rc, "key generation failed");
    }
    if ((rc = permit_sign_key_save(id->sign, ti, err)) ||
        (rc = permit_kx_key_save(id->seal, ts, err))) {
      permit_identity_free(id);
      return rc;
    }
    if (rename(tmp, keys) != 0) {
      permit_identity_free(id);
      return permit_err_set(err, PERMIT_EIO, "cannot rename %s to %s: %s",
                            tmp, keys, strerror(errno));
    }
    int dfd = open(data_dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
    id->created = 1;
    return 0;
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
