/*
 * permit/identity.h - a node's keys on disk: the Ed25519 identity key and
 * the X25519 sealing key (protocol.md section 3), kept as
 * <data>/keys/identity.key and <data>/keys/sealing.key, mode 0600 in a
 * 0700 directory.
 *
 * One process at a time may use a data directory: a program (permitd,
 * permitctl) must take permit_identity_lock() before it touches anything
 * in it, and hold the lock until it exits.
 */
#ifndef PERMIT_IDENTITY_H
#define PERMIT_IDENTITY_H

#include "permit/crypto.h"
#include "permit/error.h"

typedef struct permit_identity {
  permit_sign_key *sign; /* identity key */
  permit_kx_key *seal;   /* sealing key */
  int created;           /* 1 when this call made the keys */
} permit_identity;

/*
 * Takes the data directory's lock: creates |data_dir| (mode 0700) when it
 * is missing, opens or creates <data_dir>/permit.lock and takes an
 * exclusive flock on it without waiting.  On success |*fd_out| is the
 * lock's descriptor; the caller keeps it open for as long as it uses the
 * directory, normally the life of the process, and may give it back with
 * permit_identity_unlock().  The lock belongs to this open file
 * description: a second permit_identity_lock() of the same directory, even
 * from the same process, fails; a child made by fork() shares the parent's
 * lock.  |*fd_out| is -1 on failure.
 *
 * Returns PERMIT_EEXIST ("another permitd or permitctl is using <dir>")
 * when another holder has it, PERMIT_EINVAL for a path too long, or
 * PERMIT_EIO when the directory or the lock file cannot be made.
 */
int permit_identity_lock(const char *data_dir, int *fd_out, permit_err *err);

/* Releases a lock from permit_identity_lock() by closing |fd|; -1 is a
 * no-op. */
void permit_identity_unlock(int fd);

/*
 * Loads the node's keys from |data_dir|, creating the directory and the
 * keys when |create| is set and there are none yet.  The caller must hold
 * permit_identity_lock() on |data_dir|: creation clears the temporary
 * directories a crashed creator left, which would destroy the keys of a
 * creator still running.  Half a key pair (one file without the other) is
 * refused rather than completed, since it means the directory was damaged.
 * Free with permit_identity_free().
 *
 * Returns PERMIT_ENOTFOUND when there are no keys and |create| is 0,
 * PERMIT_ECORRUPT for half a pair, PERMIT_EPERM for a key file that group
 * or others can read, PERMIT_EIO when a file or directory operation
 * (including the fsync that makes new keys durable) fails, and the key
 * loaders' codes for damaged key files.
 */
int permit_identity_open(const char *data_dir, int create,
                         permit_identity *id, permit_err *err);

void permit_identity_free(permit_identity *id);

/* Creates |path| as a directory of mode |mode| if it does not exist. */
int permit_mkdir(const char *path, unsigned mode, permit_err *err);

#endif
