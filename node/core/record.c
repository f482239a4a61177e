#include "permit/record.h"

#include <stdlib.h>
#include <string.h>

#include "permit/ed25519.h"
#include "permit/util.h"

void permit_trusted_key_set(permit_trusted_key *tk,
                            const uint8_t pub[PERMIT_ED25519_PUB_LEN]) {
  memcpy(tk->pub, pub, PERMIT_ED25519_PUB_LEN);
  permit_key_id(pub, PERMIT_ED25519_PUB_LEN, tk->key_id);
}

int permit_name_validate(const char *name, permit_err *err) {
  if (name == NULL || name[0] == '\0')
    return permit_err_set(err, PERMIT_EINVAL, "node name is empty");
  size_t len = strlen(name), label = 0;
  if (len > PERMIT_NAME_MAX)
    return permit_err_set(err, PERMIT_EINVAL,
                          "node name is longer than %d characters",
                          PERMIT_NAME_MAX);
  for (size_t i = 0; i <= len; i++) {
    char c = name[i];
    if (c == '.' || c == '\0') {
      if (label == 0 || label > 63 || name[i - 1] == '-')
        return permit_err_set(err, PERMIT_EINVAL,
                              "node name \"%.64s\" has an empty, over-long or "
                              "hyphen-ended label", name);
      label = 0;
      continue;
    }
    int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok || (c == '-' && label == 0))
      return permit_err_set(err, PERMIT_EINVAL,
                            "node name \"%.64s\" may hold only a-z, 0-9, '-' "
                            "and '.' (labels not starting with '-')", name);
    label++;
  }
  return 0;
}

int permit_list_id_validate(const char *list_id, permit_err *err) {
  if (list_id == NULL || list_id[0] == '\0')
    return permit_err_set(err, PERMIT_EINVAL, "list id is empty");
  size_t len = strlen(list_id);
  if (len > PERMIT_LIST_ID_MAX)
    return permit_err_set(err, PERMIT_EINVAL,
                          "list id is longer than %d characters",
                          PERMIT_LIST_ID_MAX);
  for (size_t i = 0; i < len; i++) {
    char c = list_id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return permit_err_set(err, PERMIT_EINVAL,
                            "list id \"%.64s\" may hold only a-z, 0-9, '.', "
                            "'_' and '-'", list_id);
  }
  return 0;
}

/*
 * Returns 1 when |s| (|len| bytes) is well-formed UTF-8 (RFC 3629): no
 * overlong forms, no surrogates, nothing above U+10FFFF, no truncated or
 * stray continuation bytes.
 */
static int utf8_valid(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    unsigned cp, min;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0; /* a continuation byte, C0/C1 (overlong) or F5..FF */
    }
    if (len - i - 1 < n) return 0;
    for (size_t j = 1; j <= n; j++) {
      if ((s[i + j] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += n + 1;
  }
  return 1;
}

/* A bounded optional text: at most |max| bytes of UTF-8, no control
 * characters. */
static int text_validate(const char *what, const char *s, size_t max,
                         int required, permit_err *err) {
  if (s == NULL || s[0] == '\0')
    return required ? permit_err_set(err, PERMIT_EINVAL, "%s is empty", what)
                    : 0;
  size_t len = strlen(s);
  if (len > max)
    return permit_err_set(err, PERMIT_EINVAL, "%s is longer than %zu bytes",
                          what, max);
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return permit_err_set(err, PERMIT_EINVAL,
                            "%s holds a control character", what);
  if (!utf8_valid((const unsigned char *)s, len))
    return permit_err_set(err, PERMIT_EINVAL, "%s is not valid UTF-8", what);
  return 0;
}

/* A key id as permit_key_id() writes it: 16 lower-case hex digits. */
static int key_id_valid(const char *s) {
  if (s == NULL || strlen(s) != PERMIT_KEY_ID_LEN - 1) return 0;
  for (const char *p = s; *p != '\0'; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
  return 1;
}

static int bytes_len(const char *what, ProtobufCBinaryData b, size_t want,
                     permit_err *err) {
  if (b.len != want)
    return permit_err_set(err, PERMIT_EINVAL, "%s is %zu bytes, not %zu",
                          what, b.len, want);
  return 0;
}

static int optin_validate(const Permit__V1__OptIn *o, permit_err *err) {
  int rc;
  if (o->notice_version == 0)
    return permit_err_set(err, PERMIT_EINVAL,
                          "opt_in.notice_version must be 1 or more");
  if ((rc = bytes_len("opt_in.notice_sha256", o->notice_sha256, 32, err)))
    return rc;
  if (o->collected_at_ms <= 0)
    return permit_err_set(err, PERMIT_EINVAL,
                          "opt_in.collected_at_ms is not set");
  if ((rc = text_validate("opt_in.method", o->method, 64, 1, err))) return rc;
  if ((rc = bytes_len("opt_in.order_ref_hash", o->order_ref_hash, 32, err)))
    return rc;
  if (o->evidence != NULL) {
    if ((rc = text_validate("opt_in.evidence.user_agent",
                            o->evidence->user_agent, 512, 0, err)))
      return rc;
    if ((rc = text_validate("opt_in.evidence.ip_prefix",
                            o->evidence->ip_prefix, 64, 0, err)))
      return rc;
  }
  const Permit__V1__SealedContact *sc = o->sealed_contact;
  if (sc == NULL)
    return permit_err_set(err, PERMIT_EINVAL,
                          "opt_in.sealed_contact is missing");
  if (sc->kem_id != 0x0020 || sc->kdf_id != 0x0001 ||
      (sc->aead_id != PERMIT_AEAD_AES_128_GCM &&
       sc->aead_id != PERMIT_AEAD_CHACHA20_POLY1305))
    return permit_err_set(err, PERMIT_EINVAL,
                          "opt_in.sealed_contact has an unsupported HPKE suite "
                          "(kem %u, kdf %u, aead %u)", sc->kem_id, sc->kdf_id,
                          sc->aead_id);
  if (!key_id_valid(sc->recipient_key_id))
    return permit_err_set(err, PERMIT_EINVAL,
                          "opt_in.sealed_contact.recipient_key_id is not a "
                          "key id (16 lower-case hex digits)");
  if ((rc = bytes_len("opt_in.sealed_contact.enc", sc->enc, 32, err)))
    return rc;
  if (sc->ciphertext.len <= PERMIT_AEAD_TAG_LEN ||
      sc->ciphertext.len > PERMIT_SEALED_MAX)
    return permit_err_set(err, PERMIT_EINVAL,
                          "opt_in.sealed_contact.ciphertext is %zu bytes "
                          "(want %d to %d)", sc->ciphertext.len,
                          PERMIT_AEAD_TAG_LEN + 1, PERMIT_SEALED_MAX);
  return 0;
}

int permit_record_validate(const Permit__V1__Record *rec, permit_err *err) {
  int rc;
  if ((rc = bytes_len("record_id", rec->record_id, PERMIT_RECORD_ID_LEN, err)))
    return rc;
  permit_err sub;
  if (permit_name_validate(rec->issuer, &sub))
    return permit_err_set(err, PERMIT_EINVAL, "issuer: %s", sub.msg);
  if (permit_name_validate(rec->audience, &sub))
    return permit_err_set(err, PERMIT_EINVAL, "audience: %s", sub.msg);
  if (strcmp(rec->issuer, rec->audience) == 0)
    return permit_err_set(err, PERMIT_EINVAL,
                          "issuer and audience are the same node");
  if ((rc = permit_list_id_validate(rec->list_id, err))) return rc;
  if ((rc = bytes_len("subject", rec->subject, PERMIT_SUBJECT_LEN, err)))
    return rc;
  if (rec->issued_at_ms <= 0)
    return permit_err_set(err, PERMIT_EINVAL, "issued_at_ms is not set");
  switch (rec->kind_case) {
  case PERMIT__V1__RECORD__KIND_OPT_IN:
    if (rec->opt_in == NULL)
      return permit_err_set(err, PERMIT_EINVAL,
                            "kind is opt_in but opt_in is missing");
    return optin_validate(rec->opt_in, err);
  case PERMIT__V1__RECORD__KIND_WITHDRAWAL: {
    const Permit__V1__Withdrawal *w = rec->withdrawal;
    if (w == NULL)
      return permit_err_set(err, PERMIT_EINVAL,
                            "kind is withdrawal but withdrawal is missing");
    if ((rc = bytes_len("withdrawal.refers_to", w->refers_to,
                        PERMIT_RECORD_ID_LEN, err)))
      return rc;
    if (w->reason < PERMIT__V1__WITHDRAWAL_REASON__WITHDRAWAL_REASON_BUYER_REQUEST ||
        w->reason > PERMIT__V1__WITHDRAWAL_REASON__WITHDRAWAL_REASON_EXPIRED)
      return permit_err_set(err, PERMIT_EINVAL,
                            "withdrawal.reason %d is not a known reason",
                            (int)w->reason);
    if (w->withdrawn_at_ms <= 0)
      return permit_err_set(err, PERMIT_EINVAL,
                            "withdrawal.withdrawn_at_ms is not set");
    return 0;
  }
  case PERMIT__V1__RECORD__KIND_ERASURE:
    if (rec->erasure == NULL)
      return permit_err_set(err, PERMIT_EINVAL,
                            "kind is erasure but erasure is missing");
    if (rec->erasure->requested_at_ms <= 0)
      return permit_err_set(err, PERMIT_EINVAL,
                            "erasure.requested_at_ms is not set");
    return 0;
  default:
    return permit_err_set(err, PERMIT_EINVAL,
                          "record has no kind (opt_in, withdrawal or erasure)");
  }
}

int permit_envelope_sign(const char *context, const uint8_t *body,
                         size_t bodylen, const permit_sign_key *key,
                         uint8_t **out, size_t *outlen, permit_err *err) {
  uint8_t sig[PERMIT_ED25519_SIG_LEN];
  if (permit_sign(key, context, body, bodylen, sig) != 0)
    return permit_err_set(err, PERMIT_ECRYPTO, "signing failed");
  Permit__V1__SignedRecord env = PERMIT__V1__SIGNED_RECORD__INIT;
  env.body.data = (uint8_t *)body;
  env.body.len = bodylen;
  env.signature.data = sig;
  env.signature.len = sizeof sig;
  env.key_id = (char *)permit_sign_key_id(key);
  size_t n = permit__v1__signed_record__get_packed_size(&env);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  *outlen = permit__v1__signed_record__pack(&env, buf);
  *out = buf;
  return 0;
}

int permit_record_sign(const Permit__V1__Record *rec,
                       const permit_sign_key *key, uint8_t **out,
                       size_t *outlen, permit_err *err) {
  int rc = permit_record_validate(rec, err);
  if (rc != 0) return rc;
  size_t n = permit__v1__record__get_packed_size(rec);
  if (n > PERMIT_RECORD_MAX_LEN - 128)
    return permit_err_set(err, PERMIT_ETOOBIG,
                          "record is %zu bytes, over the %d-byte limit", n,
                          PERMIT_RECORD_MAX_LEN);
  uint8_t *body = malloc(n ? n : 1);
  if (body == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  permit__v1__record__pack(rec, body);
  rc = permit_envelope_sign(PERMIT_RECORD_CONTEXT, body, n, key, out, outlen, err);
  free(body);
  return rc;
}

/* Reads the common envelope fields (1, 2, 3) of any of the three types. */
static int envelope_fields(const ProtobufCMessage *m, ProtobufCBinaryData *body,
                           ProtobufCBinaryData *sig, const char **key_id) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const ProtobufCFieldDescriptor *fb =
      protobuf_c_message_descriptor_get_field(d, 1);
  const ProtobufCFieldDescriptor *fs =
      protobuf_c_message_descriptor_get_field(d, 2);
  const ProtobufCFieldDescriptor *fk =
      protobuf_c_message_descriptor_get_field(d, 3);
  if (fb == NULL || fs == NULL || fk == NULL ||
      fb->type != PROTOBUF_C_TYPE_BYTES || fs->type != PROTOBUF_C_TYPE_BYTES ||
      fk->type != PROTOBUF_C_TYPE_STRING)
    return PERMIT_EINVAL;
  const char *base = (const char *)m;
  memcpy(body, base + fb->offset, sizeof *body);
  memcpy(sig, base + fs->offset, sizeof *sig);
  memcpy(key_id, base + fk->offset, sizeof *key_id);
  return 0;
}

/*
 * Decodes an envelope and finds its signer among |keys|, everything
 * permit_envelope_open() checks but the signature itself, which it leaves
 * in |*sig| and |*key| for the caller to verify.
 */
static int envelope_parse(const ProtobufCMessageDescriptor *desc,
                          const uint8_t *in, size_t len, size_t max,
                          const permit_trusted_key *keys, size_t nkeys,
                          ProtobufCMessage **env, ProtobufCBinaryData *body,
                          ProtobufCBinaryData *sig,
                          const permit_trusted_key **key, permit_err *err) {
  *env = NULL;
  if (len > max)
    return permit_err_set(err, PERMIT_ETOOBIG,
                          "%s is %zu bytes, over the %zu-byte limit",
                          desc->short_name, len, max);
  if (len == 0)
    return permit_err_set(err, PERMIT_EINVAL, "%s is empty",
                          desc->short_name);
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, in);
  if (m == NULL)
    return permit_err_set(err, PERMIT_EINVAL,
                          "%s is not a valid protobuf message (truncated or "
                          "malformed)", desc->short_name);
  const char *kid;
  int rc;
  /* Unknown envelope fields would travel unsigned: refuse them. */
  if (m->n_unknown_fields != 0) {
    rc = permit_err_set(err, PERMIT_EINVAL, "%s has unknown fields",
                        desc->short_name);
    goto fail;
  }
  if (envelope_fields(m, body, sig, &kid) != 0) {
    rc = permit_err_set(err, PERMIT_EINVAL, "%s is not an envelope type",
                        desc->short_name);
    goto fail;
  }
  if (body->len == 0) {
    rc = permit_err_set(err, PERMIT_EINVAL, "%s has an empty body",
                        desc->short_name);
    goto fail;
  }
  if (sig->len != PERMIT_ED25519_SIG_LEN) {
    rc = permit_err_set(err, PERMIT_EVERIFY,
                        "%s signature is %zu bytes, not 64", desc->short_name,
                        sig->len);
    goto fail;
  }
  const permit_trusted_key *k = NULL;
  for (size_t i = 0; i < nkeys && k == NULL; i++)
    if (strcmp(keys[i].key_id, kid) == 0) k = &keys[i];
  if (k == NULL) {
    rc = permit_err_set(err, PERMIT_ENOTFOUND,
                        "%s is signed by key \"%.32s\", which is not trusted "
                        "for this signer", desc->short_name, kid);
    goto fail;
  }
  *env = m;
  *key = k;
  return 0;
fail:
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

/* The error of a signature by |key| that does not verify. */
static int bad_signature(const ProtobufCMessageDescriptor *desc,
                         const permit_trusted_key *key, permit_err *err) {
  return permit_err_set(err, PERMIT_EVERIFY,
                        "%s signature by key %s does not verify",
                        desc->short_name, key->key_id);
}

int permit_envelope_open(const ProtobufCMessageDescriptor *desc,
                         const char *context, const uint8_t *in, size_t len,
                         size_t max, const permit_trusted_key *keys,
                         size_t nkeys, ProtobufCMessage **env,
                         const uint8_t **body, size_t *bodylen,
                         permit_err *err) {
  ProtobufCMessage *m;
  ProtobufCBinaryData b, s;
  const permit_trusted_key *k;
  int rc = envelope_parse(desc, in, len, max, keys, nkeys, &m, &b, &s, &k,
                          err);
  if (rc != 0) {
    *env = NULL;
    return rc;
  }
  if (permit_verify(k->pub, context, b.data, b.len, s.data, s.len) != 0) {
    protobuf_c_message_free_unpacked(m, NULL);
    *env = NULL;
    return bad_signature(desc, k, err);
  }
  *env = m;
  *body = b.data;
  *bodylen = b.len;
  return 0;
}

int permit_envelope_check_body(const ProtobufCMessage *m, const uint8_t *body,
                               size_t bodylen, const char *what,
                               permit_err *err) {
  /* The size alone catches the cut string, the repeated field and the
   * padded number without an allocation. */
  size_t n = protobuf_c_message_get_packed_size(m);
  if (n != bodylen)
    return permit_err_set(err, PERMIT_EINVAL,
                          "%s body is %zu bytes but re-encodes to %zu (a "
                          "string cut at a NUL, a repeated field or a padded "
                          "number)", what, bodylen, n);
  uint8_t *again = malloc(n ? n : 1);
  if (again == NULL) return permit_err_set(err, PERMIT_ENOMEM, "out of memory");
  protobuf_c_message_pack(m, again);
  int same = memcmp(again, body, n) == 0;
  free(again);
  if (!same)
    return permit_err_set(err, PERMIT_EINVAL,
                          "%s body is not in canonical form (fields out of "
                          "order)", what);
  return 0;
}

/* Decodes and validates the body of an opened SignedRecord |env|, which
 * it frees. */
static int record_body(ProtobufCMessage *env, const uint8_t *body,
                       size_t bodylen, Permit__V1__Record **out,
                       permit_err *err) {
  Permit__V1__Record *rec = permit__v1__record__unpack(NULL, bodylen, body);
  if (rec == NULL) {
    protobuf_c_message_free_unpacked(env, NULL);
    return permit_err_set(err, PERMIT_EINVAL,
                          "record body is not a valid Record message");
  }
  int rc = permit_envelope_check_body(&rec->base, body, bodylen, "record",
                                      err);
  protobuf_c_message_free_unpacked(env, NULL);
  if (rc == 0) rc = permit_record_validate(rec, err);
  if (rc != 0) {
    permit__v1__record__free_unpacked(rec, NULL);
    return rc;
  }
  *out = rec;
  return 0;
}

int permit_record_verify(const uint8_t *in, size_t len,
                         const permit_trusted_key *keys, size_t nkeys,
                         Permit__V1__Record **out, permit_err *err) {
  ProtobufCMessage *env;
  const uint8_t *body;
  size_t bodylen;
  *out = NULL;
  int rc = permit_envelope_open(&permit__v1__signed_record__descriptor,
                                PERMIT_RECORD_CONTEXT, in, len,
                                PERMIT_RECORD_MAX_LEN, keys, nkeys, &env,
                                &body, &bodylen, err);
  if (rc != 0) return rc;
  return record_body(env, body, bodylen, out, err);
}

/*
 * One signature of a failed batch, by the batch's own rule (a batch of
 * one), so that whether a record passes never depends on the others in
 * its batch; OpenSSL decides for the keys a batch leaves to it (weak
 * ones) and when the batch code cannot run.
 */
static int signature_alone(const permit_ed25519_item *it) {
  int one = permit_ed25519_batch_verify(it, 1);
  if (one == 1) return 1;
  if (one == 0 && permit_ed25519_key_check(it->pub) == 1) return 0;
  return permit_verify(it->pub, it->context, it->msg, it->len, it->sig,
                       PERMIT_ED25519_SIG_LEN) == 0;
}

int permit_record_verify_many(const permit_iov *in, size_t n,
                              const permit_trusted_key *keys, size_t nkeys,
                              Permit__V1__Record **out, int *rcs,
                              permit_err *errs) {
  const ProtobufCMessageDescriptor *d = &permit__v1__signed_record__descriptor;
  if (n > PERMIT_RECORD_VERIFY_MANY_MAX) return PERMIT_EINVAL;
  ProtobufCMessage *env[PERMIT_RECORD_VERIFY_MANY_MAX];
  ProtobufCBinaryData body[PERMIT_RECORD_VERIFY_MANY_MAX];
  const permit_trusted_key *key[PERMIT_RECORD_VERIFY_MANY_MAX];
  permit_ed25519_item items[PERMIT_RECORD_VERIFY_MANY_MAX] = {{0}};
  size_t nitems = 0;
  for (size_t i = 0; i < n; i++) {
    ProtobufCBinaryData sig;
    out[i] = NULL;
    rcs[i] = envelope_parse(d, in[i].base, in[i].len, PERMIT_RECORD_MAX_LEN,
                            keys, nkeys, &env[i], &body[i], &sig, &key[i],
                            &errs[i]);
    if (rcs[i] != 0) continue;
    items[nitems++] = (permit_ed25519_item){
        .pub = key[i]->pub, .sig = sig.data,
        .context = PERMIT_RECORD_CONTEXT, .msg = body[i].data,
        .len = body[i].len};
  }
  /* One batch answers for all; when it does not, each signature is checked
   * on its own, which also names the bad ones. */
  int batch_ok = permit_ed25519_batch_verify(items, nitems) == 1;
  for (size_t i = 0, j = 0; i < n; i++) {
    if (rcs[i] != 0) continue;
    const permit_ed25519_item *it = &items[j++];
    if (!batch_ok && !signature_alone(it)) {
      protobuf_c_message_free_unpacked(env[i], NULL);
      rcs[i] = bad_signature(d, key[i], &errs[i]);
      continue;
    }
    rcs[i] = record_body(env[i], body[i].data, body[i].len, &out[i],
                         &errs[i]);
  }
  return 0;
}

int permit_record_check_route(const Permit__V1__Record *rec,
                              const char *issuer, const char *audience,
                              permit_err *err) {
  if (rec->issuer == NULL || strcmp(rec->issuer, issuer) != 0)
    return permit_err_set(err, PERMIT_EPERM,
                          "record names issuer \"%.64s\" but came from "
                          "\"%.64s\"", rec->issuer != NULL ? rec->issuer : "",
                          issuer);
  if (rec->audience == NULL || strcmp(rec->audience, audience) != 0)
    return permit_err_set(err, PERMIT_EPERM,
                          "record is addressed to \"%.64s\", not to "
                          "\"%.64s\"",
                          rec->audience != NULL ? rec->audience : "",
                          audience);
  return 0;
}

void permit_record_free(Permit__V1__Record *rec) {
  if (rec != NULL) permit__v1__record__free_unpacked(rec, NULL);
}
