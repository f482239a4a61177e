/*
 * proof.h - permitctl's proof-of-consent commands (proof.c).
 */
#ifndef PERMITCTL_PROOF_H
#define PERMITCTL_PROOF_H

/* permitctl proof --email E --list L [--out FILE] [--config F|--data D] */
int permitctl_proof(int argc, char **argv);

/* permitctl verify-proof FILE --issuer-card CARD.json */
int permitctl_verify_proof(int argc, char **argv);

#endif
