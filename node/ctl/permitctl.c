/*
 * permitctl - the operator's command line for a Permit node.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permit/crypto.h"
#include "permit/identity.h"
#include "permit/util.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: permitctl COMMAND [options]\n"
          "\n"
          "commands:\n"
          "  keys [--data DIR]   show the node's key ids and public keys\n"
          "  version             show the version\n"
          "  help                show this text\n");
}

static int cmd_keys(int argc, char **argv) {
  const char *data = "./permit-data";
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
      data = argv[++i];
    } else {
      fprintf(stderr, "permitctl keys: unknown or incomplete option \"%s\"\n",
              argv[i]);
      return 2;
    }
  }
  permit_identity id;
  permit_err err = {0};
  if (permit_identity_open(data, 0, &id, &err) != 0) {
    fprintf(stderr, "permitctl keys: %s\n", err.msg);
    return 1;
  }
  char hex[2 * PERMIT_X25519_LEN + 1], kid[PERMIT_KEY_ID_LEN];
  permit_hex_encode(permit_sign_key_public(id.sign), PERMIT_ED25519_PUB_LEN,
                    hex);
  printf("identity key (Ed25519)  id %s  public %s\n",
         permit_sign_key_id(id.sign), hex);
  permit_hex_encode(permit_kx_key_public(id.seal), PERMIT_X25519_LEN, hex);
  permit_key_id(permit_kx_key_public(id.seal), PERMIT_X25519_LEN, kid);
  printf("sealing key (X25519)    id %s  public %s\n", kid, hex);
  permit_identity_free(&id);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  int rc;
  if (strcmp(cmd, "keys") == 0) {
    rc = cmd_keys(argc - 2, argv + 2);
  } else if (strcmp(cmd, "version") == 0) {
    printf("permitctl 0.1.0 (protocol permit/v1)\n");
    rc = 0;
  } else if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0) {
    usage(stdout);
    rc = 0;
  } else {
    fprintf(stderr, "permitctl: unknown command \"%s\"\n", cmd);
    usage(stderr);
    rc = 2;
  }
  permit_crypto_cleanup();
  return rc;
}
