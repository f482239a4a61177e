/*
 * permit/identity.h - a node's keys on disk: the Ed25519 identity key and
 * the X25519 sealing key (protocol.md section 3), kept as
 * <data>/keys/identity.key and <data>/keys/sealing.key, mode 0600 in a
 * 0700 directory.
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
 * Loads the node's keys from |data_dir|, creating the directory and the
 * keys when |create| is set and there are none yet.  Half a key pair (one
 * file without the other) is refused rather than completed, since it
 * means the directory was damaged.  Free with permit_identity_free().
 */
int permit_identity_open(const char *data_dir, int create,
                         permit_identity *id, permit_err *err);

void permit_identity_free(permit_identity *id);

/* Creates |path| as a directory of mode |mode| if it does not exist. */
int permit_mkdir(const char *path, unsigned mode, permit_err *err);

#endif
