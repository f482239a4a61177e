/* proof.c - placeholder until the proof commands land. */
#include <stdio.h>

#include "proof.h"

int permitctl_proof(int argc, char **argv) {
  (void)argc, (void)argv;
  fprintf(stderr, "permitctl proof: not built yet\n");
  return 1;
}

int permitctl_verify_proof(int argc, char **argv) {
  (void)argc, (void)argv;
  fprintf(stderr, "permitctl verify-proof: not built yet\n");
  return 1;
}
