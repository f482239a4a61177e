/*
 * permit/record.h - signed record envelopes (protocol.md section 4).
 *
 * A record is built as a permit.v1.Record, validated, serialized and signed
 * into a SignedRecord.  A received envelope is checked in this order:
 * bounded size, envelope decode, key id known, Ed25519 over the exact body
 * bytes received, then body decode and field validation.  Nothing is
 * re-serialized before the signature is checked.
 */
#ifndef PERMIT_RECORD_H
#define PERMIT_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "permit/crypto.h"
#include "permit/error.h"
#include "permit/v1/permit.pb-c.h"

/* Largest SignedRecord accepted, in bytes (contacts are small). */
#define PERMIT_RECORD_MAX_LEN (64 * 1024)
#define PERMIT_RECORD_ID_LEN 16
#define PERMIT_SUBJECT_LEN 32
#define PERMIT_NAME_MAX 253
#define PERMIT_LIST_ID_MAX 64
/* Largest sealed Contact ciphertext (tag included). */
#define PERMIT_SEALED_MAX 4096

#define PERMIT_RECORD_CONTEXT "permit/v1/record\n"

/* A public key a verifier trusts for one signer. */
typedef struct permit_trusted_key {
  uint8_t pub[PERMIT_ED25519_PUB_LEN];
  char key_id[PERMIT_KEY_ID_LEN];
} permit_trusted_key;

/* Fills |tk| from a public key (computes its key id). */
void permit_trusted_key_set(permit_trusted_key *tk,
                            const uint8_t pub[PERMIT_ED25519_PUB_LEN]);

/*
 * Checks a node name: 1..253 characters of lower-case letters, digits,
 * '-' and '.', labels of 1..63 that neither start nor end with '-'.
 */
int permit_name_validate(const char *name, permit_err *err);

/* Checks a list id: 1..64 characters of [a-z0-9._-]. */
int permit_list_id_validate(const char *list_id, permit_err *err);

/*
 * Checks every field of |rec| against protocol.md: lengths, names, text
 * that is UTF-8 without control characters, a set kind with its message
 * present and its own fields.  PERMIT_EINVAL with a message that says
 * which field is wrong.
 */
int permit_record_validate(const Permit__V1__Record *rec, permit_err *err);

/*
 * Validates |rec|, serializes it and signs it with |key| into a
 * SignedRecord.  On success |*out| is a malloc'd buffer of |*outlen| bytes
 * that the caller frees.
 */
int permit_record_sign(const Permit__V1__Record *rec,
                       const permit_sign_key *key, uint8_t **out,
                       size_t *outlen, permit_err *err);

/*
 * Signs |context| || |body| with |key| and packs body, signature and key id
 * as fields 1, 2 and 3, the layout SignedRecord, SignedCheckpoint and
 * NodeCard share.  |*out| is malloc'd (caller frees).
 */
int permit_envelope_sign(const char *context, const uint8_t *body,
                         size_t bodylen, const permit_sign_key *key,
                         uint8_t **out, size_t *outlen, permit_err *err);

/*
 * Checks a signed envelope made under |context| (a SignedRecord,
 * SignedCheckpoint or NodeCard: body 1, signature 2, key_id 3) against the
 * |nkeys| trusted keys.  On success |*body| and |*bodylen| point into
 * |*env|, the decoded envelope the caller frees with
 * protobuf_c_message_free_unpacked().  PERMIT_ETOOBIG over |max|,
 * PERMIT_EINVAL when undecodable, PERMIT_ENOTFOUND for an unknown key id,
 * PERMIT_EVERIFY for a bad signature.
 */
int permit_envelope_open(const ProtobufCMessageDescriptor *desc,
                         const char *context, const uint8_t *in, size_t len,
                         size_t max, const permit_trusted_key *keys,
                         size_t nkeys, ProtobufCMessage **env,
                         const uint8_t **body, size_t *bodylen,
                         permit_err *err);

/*
 * Checks that |body| (|bodylen| bytes) is exactly the encoding of |m|, the
 * message decoded from it: protobuf-c accepts a string cut short by a NUL,
 * a field given twice (the last wins), over-long varints and fields out of
 * order, all of which would let two different signed byte strings mean the
 * same message.  |what| names the message in the error ("record").
 * PERMIT_EINVAL when it is not canonical, PERMIT_ENOMEM.
 */
int permit_envelope_check_body(const ProtobufCMessage *m, const uint8_t *body,
                               size_t bodylen, const char *what,
                               permit_err *err);

/*
 * Verifies a SignedRecord from |in| against |keys| and decodes and
 * validates its body, which must be the canonical encoding of the record
 * (permit_envelope_check_body).  On success |*out| is the record, owned by
 * the caller (permit_record_free).  Codes as permit_envelope_open(), plus
 * PERMIT_EINVAL for an invalid or non-canonical body and PERMIT_ENOMEM.
 *
 * It checks only that one of |keys| signed the record.  It does not check
 * that rec->issuer is the node that owns the signing key, nor that
 * rec->audience is the local node: the caller (sync) knows both and must
 * check them with permit_record_check_route(), passing only the issuer's
 * own keys in |keys|.
 */
int permit_record_verify(const uint8_t *in, size_t len,
                         const permit_trusted_key *keys, size_t nkeys,
                         Permit__V1__Record **out, permit_err *err);

/* The most records permit_record_verify_many() takes in one call. */
#define PERMIT_RECORD_VERIFY_MANY_MAX 64

/*
 * permit_record_verify() on each of the |n| SignedRecords |in|, with the
 * signatures checked in one Ed25519 batch (permit_ed25519_batch_verify)
 * and one by one only when the batch fails, to name the bad ones.  Entry
 * i's outcome is |rcs[i]|, with |errs[i]| and |out[i]| (the record, owned
 * by the caller, NULL on failure) as permit_record_verify() sets them.
 * Returns 0, or PERMIT_EINVAL when |n| is over
 * PERMIT_RECORD_VERIFY_MANY_MAX (nothing is set then).
 *
 * Signatures are held to the cofactored equation of RFC 8032 5.1.7, by
 * the batch and, when it fails, one at a time (permit/ed25519.h), so
 * whether an entry passes does not depend on the others in the call.
 * That accepts one kind of signature permit_record_verify() (OpenSSL)
 * refuses: one whose R has a small-order component, which only the key's
 * owner can make.  Everything else gets the same answer.
 */
int permit_record_verify_many(const permit_iov *in, size_t n,
                              const permit_trusted_key *keys, size_t nkeys,
                              Permit__V1__Record **out, int *rcs,
                              permit_err *errs);

/*
 * Checks that |rec| was issued by |issuer| (the node whose keys verified
 * it) and addressed to |audience| (the receiving node).  PERMIT_EPERM, with
 * a message naming both, when either differs.
 */
int permit_record_check_route(const Permit__V1__Record *rec,
                              const char *issuer, const char *audience,
                              permit_err *err);

void permit_record_free(Permit__V1__Record *rec);

#endif
