/*
 * proof.c - permitctl's proof of consent.
 *
 * `proof` asks the venue's running node (Admin/GetProof) for what shows
 * one buyer's consent and writes it as one JSON file: the issuer's signed
 * record, exactly as it is the log's entry, the issuer's signed checkpoint
 * of that log, and the inclusion proof that joins them.  `verify-proof`
 * checks such a file offline, with nothing but the issuer's card, and
 * says what it proves and what it does not (the email is sealed: the
 * record names the buyer only by a pairwise pseudonym).
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "ctl.h"
#include "proof.h"
#include "permit/client.h"
#include "permit/contacts.h"
#include "permit/identity.h"
#include "permit/log.h"
#include "permit/merkle.h"
#include "permit/node.h"
#include "permit/record.h"
#include "permit/util.h"

#define PROOF_FORMAT "permit-consent-proof/1"
/* A proof holds one record, one checkpoint, a notice of at most 16 KiB
 * and a few hashes: anything much larger is not one. */
#define PROOF_FILE_MAX (1 << 20)
#define CARD_FILE_MAX (64 * 1024)
#define CARD_MAX 8192

/* ---- arguments ---- */

/* The value after option |name|, or NULL. */
static const char *arg_value(int argc, char **argv, const char *name) {
  for (int i = 0; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return NULL;
}

/*
 * Checks that every option is one of |known| (NULL-terminated) with a
 * value, given once, and that there are exactly |npos| other words; the
 * first of them goes to |*pos|.  Prints what is wrong and returns -1.
 */
static int arg_check(int argc, char **argv, const char *const *known,
                     int npos, const char **pos, const char *cmd) {
  int seen = 0;
  for (int i = 0; i < argc; i++) {
    if (strncmp(argv[i], "--", 2) != 0) {
      if (seen++ == 0 && pos != NULL) *pos = argv[i];
      continue;
    }
    int ok = 0;
    for (const char *const *k = known; *k != NULL; k++)
      ok |= strcmp(argv[i], *k) == 0;
    for (int j = 0; j < i; j++)
      if (strcmp(argv[j], argv[i]) == 0) ok = 0;
    if (!ok || i + 1 >= argc) {
      fprintf(stderr, "permitctl %s: unknown, repeated or incomplete option "
                      "\"%s\"\n", cmd, argv[i]);
      return -1;
    }
    i++;
  }
  if (seen != npos) {
    fprintf(stderr, "permitctl %s: expected %d file name%s, got %d\n", cmd,
            npos, npos == 1 ? "" : "s", seen);
    return -1;
  }
  return 0;
}

/* ---- encodings ---- */

/*
 * Decodes standard base64 with padding into a malloc'd |*out| of at most
 * |max| bytes.  Only the canonical encoding of the result is accepted (no
 * white space, zero spare bits), so that no two strings decode alike and a
 * changed character is always a changed value.
 */
static int b64_decode(const char *in, size_t max, uint8_t **out,
                      size_t *outlen) {
  size_t len = strlen(in);
  *out = NULL;
  if (len == 0 || len % 4 != 0 || len / 4 > (max + 2) / 3) return -1;
  uint8_t *buf = malloc(len / 4 * 3);
  if (buf == NULL) return -1;
  int n = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len);
  size_t pad = in[len - 1] == '=' ? (in[len - 2] == '=' ? 2 : 1) : 0;
  char *again = n >= 0 && (size_t)n >= pad
                    ? ctl_b64_encode(buf, (size_t)n - pad)
                    : NULL;
  int ok = again != NULL && strcmp(again, in) == 0 && (size_t)n - pad <= max;
  free(again);
  if (!ok) {
    free(buf);
    return -1;
  }
  *out = buf;
  *outlen = (size_t)n - pad;
  return 0;
}

/* Exactly 64 lower-case hex digits into |out|. */
static int hash_decode(const char *in, permit_hash out) {
  size_t got;
  if (strlen(in) != 2 * PERMIT_HASH_LEN) return -1;
  for (const char *p = in; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return -1;
  return permit_hex_decode(in, 2 * PERMIT_HASH_LEN, out, PERMIT_HASH_LEN,
                           &got) == 0 && got == PERMIT_HASH_LEN ? 0 : -1;
}

/*
 * |s| when it is text without control characters (tab and line breaks
 * too when |multiline|), else a placeholder: what a file says is printed
 * only when it cannot drive the terminal.
 */
static const char *printable(const char *s, int multiline) {
  return permit_contacts_text_ok(s, strlen(s), multiline)
             ? s
             : "(text with control characters, not shown)";
}

/* Reads a whole file of at most |max| bytes as JSON (duplicate keys are
 * refused: a reader must not pick one of two values). */
static json_t *json_file(const char *path, size_t max, char *why,
                         size_t cap) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(why, cap, "cannot read %s: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(max + 1);
  size_t n = buf != NULL ? fread(buf, 1, max + 1, f) : 0;
  int bad = ferror(f);
  fclose(f);
  json_t *j = NULL;
  if (buf == NULL || bad) {
    snprintf(why, cap, "cannot read %s", path);
  } else if (n > max) {
    snprintf(why, cap, "%s is larger than %zu bytes", path, max);
  } else {
    json_error_t je;
    j = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
      snprintf(why, cap, "%s is not JSON: line %d: %s", path, je.line,
               je.text);
    else if (!json_is_object(j)) {
      snprintf(why, cap, "%s is not a JSON object", path);
      json_decref(j);
      j = NULL;
    }
  }
  free(buf);
  return j;
}

/* ---- proof ---- */

/* The ConsentProof as the JSON of the file, or NULL when out of memory. */
static json_t *proof_json(const Permit__V1__ConsentProof *p) {
  json_t *j = json_object(), *hashes = json_array();
  char *rec = ctl_b64_encode(p->signed_record.data, p->signed_record.len);
  char *cp = ctl_b64_encode(p->signed_checkpoint.data, p->signed_checkpoint.len);
  int ok = j != NULL && hashes != NULL && rec != NULL && cp != NULL;
  for (size_t i = 0; ok && i < p->n_inclusion; i++) {
    char hex[2 * PERMIT_HASH_LEN + 1];
    ok = p->inclusion[i].len == PERMIT_HASH_LEN;
    if (ok) {
      permit_hex_encode(p->inclusion[i].data, PERMIT_HASH_LEN, hex);
      ok = json_array_append_new(hashes, json_string(hex)) == 0;
    }
  }
  ok = ok &&
       json_object_set_new(j, "format", json_string(PROOF_FORMAT)) == 0 &&
       json_object_set_new(j, "issuer", json_string(p->issuer)) == 0 &&
       json_object_set_new(j, "audience", json_string(p->audience)) == 0 &&
       json_object_set_new(j, "list_id", json_string(p->list_id)) == 0 &&
       json_object_set_new(j, "seq", json_integer((json_int_t)p->seq)) == 0 &&
       json_object_set_new(j, "signed_record", json_string(rec)) == 0 &&
       json_object_set_new(j, "signed_checkpoint", json_string(cp)) == 0 &&
       json_object_set(j, "inclusion_proof", hashes) == 0;
  if (ok && p->list_title[0] != '\0')
    ok = json_object_set_new(j, "list_title", json_string(p->list_title)) == 0;
  if (ok && p->notice_text[0] != '\0')
    ok = json_object_set_new(j, "notice_text",
                             json_string(p->notice_text)) == 0;
  free(rec);
  free(cp);
  json_decref(hashes);
  if (!ok) {
    json_decref(j);
    return NULL;
  }
  return j;
}

/* Writes |text| and a newline to |path| (see ctl_out). */
static int write_atomically(const char *path, const char *text) {
  ctl_out o;
  int rc = ctl_out_open(&o, path, "proof");
  if (rc != 0) return rc;
  if (fputs(text, o.f) == EOF || fputc('\n', o.f) == EOF) o.err = errno;
  return ctl_out_close(&o, 1, "proof");
}

int permitctl_proof(int argc, char **argv) {
  static const char *const known[] = {"--email", "--list",   "--out",
                                      "--issuer", "--config", "--data",
                                      NULL};
  if (arg_check(argc, argv, known, 0, NULL, "proof") != 0) return 2;
  const char *email = arg_value(argc, argv, "--email");
  const char *list = arg_value(argc, argv, "--list");
  const char *out = arg_value(argc, argv, "--out");
  const char *issuer = arg_value(argc, argv, "--issuer");
  if (email == NULL || list == NULL) {
    fprintf(stderr, "permitctl proof: --email and --list are required\n");
    return 2;
  }
  /* Refused before asking the node: nothing to throw away after. */
  int orc = out != NULL ? ctl_out_check(out, "proof") : 0;
  if (orc != 0) return orc;
  permit_config c;
  permit_config_defaults(&c);
  const char *file = arg_value(argc, argv, "--config");
  const char *data = arg_value(argc, argv, "--data");
  char path[4200], why[512];
  if (file == NULL) {
    snprintf(path, sizeof path, "%s/permit.conf",
             data != NULL ? data : "./permit-data");
    file = path;
  }
  if (permit_config_load(file, &c, why, sizeof why) != 0) {
    fprintf(stderr, "permitctl proof: %s\n", why);
    return 1;
  }
  ctl_api api;
  if (ctl_api_open(&c, &api, "proof") != 0) {
    ctl_api_close(&api);
    return 1;
  }
  Permit__V1__GetProofRequest req = PERMIT__V1__GET_PROOF_REQUEST__INIT;
  req.email = (char *)email;
  req.list_id = (char *)list;
  req.issuer = (char *)(issuer != NULL ? issuer : "");
  size_t rl = permit__v1__get_proof_request__get_packed_size(&req);
  uint8_t *rb = malloc(rl ? rl : 1);
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  int status = PERMIT_GRPC_UNKNOWN, rc = -1;
  char msg[512] = "";
  if (rb != NULL) {
    permit__v1__get_proof_request__pack(&req, rb);
    rc = permit_client_unary_sync(&api.cc, "/permit.v1.Admin/GetProof", rb,
                                  rl, 30000, &status, msg, sizeof msg, &resp,
                                  &resp_len);
    permit_wipe(rb, rl); /* it holds the email */
  }
  free(rb);
  ctl_api_close(&api);
  if (rc != 0 || status != PERMIT_GRPC_OK) {
    fprintf(stderr, "permitctl proof: %s%s%s\n",
            rc != 0 ? "call failed" : permit_grpc_status_name(status),
            msg[0] ? ": " : "", msg);
    return 1;
  }
  Permit__V1__ConsentProof *p =
      permit__v1__consent_proof__unpack(NULL, resp_len, resp);
  free(resp);
  json_t *j = p != NULL ? proof_json(p) : NULL;
  char *text = j != NULL ? json_dumps(j, JSON_INDENT(2)) : NULL;
  int ret = 1;
  if (text == NULL) {
    fprintf(stderr, "permitctl proof: the node's answer is not a proof\n");
  } else if (out == NULL) {
    ret = printf("%s\n", text) < 0 || fflush(stdout) != 0 ? 1 : 0;
  } else if ((ret = write_atomically(out, text)) == 0) {
    fprintf(stderr, "proof of consent on list %s (entry %llu of the log from "
                    "%s) written to %s\n", p->list_id,
            (unsigned long long)p->seq, p->issuer, out);
    ret = 0;
  }
  free(text);
  json_decref(j);
  if (p != NULL) permit__v1__consent_proof__free_unpacked(p, NULL);
  return ret;
}

/* ---- verify-proof ---- */

/* What a proof file holds, decoded; freed by proof_file_free(). */
typedef struct proof_file {
  json_t *json;
  const char *issuer, *audience, *list_id, *title, *notice;
  size_t notice_len;
  uint64_t seq;
  uint8_t *record, *cp;
  size_t record_len, cp_len;
  permit_hash hashes[PERMIT_MERKLE_MAX_PROOF];
  size_t nhashes;
} proof_file;

static void proof_file_free(proof_file *pf) {
  json_decref(pf->json);
  free(pf->record);
  free(pf->cp);
}

/* A string member of |j|, or NULL (and |why| set) when it is missing. */
static const char *member(json_t *j, const char *name, int required,
                          char *why, size_t cap) {
  json_t *v = json_object_get(j, name);
  if (v == NULL && !required) return NULL;
  if (!json_is_string(v)) {
    snprintf(why, cap, "the proof file has no string \"%s\"", name);
    return NULL;
  }
  return json_string_value(v);
}

/* Reads and decodes the proof file (the checks of what it says come
 * later).  Returns 0, or -1 with |why|. */
static int proof_file_read(const char *path, proof_file *pf, char *why,
                           size_t cap) {
  memset(pf, 0, sizeof *pf);
  pf->json = json_file(path, PROOF_FILE_MAX, why, cap);
  if (pf->json == NULL) return -1;
  json_t *j = pf->json;
  const char *format = member(j, "format", 1, why, cap);
  if (format == NULL) return -1;
  if (strcmp(format, PROOF_FORMAT) != 0) {
    snprintf(why, cap, "the file's format is \"%.100s\", not %s",
             printable(format, 0), PROOF_FORMAT);
    return -1;
  }
  const char *rec, *cp;
  if ((pf->issuer = member(j, "issuer", 1, why, cap)) == NULL ||
      (pf->audience = member(j, "audience", 1, why, cap)) == NULL ||
      (pf->list_id = member(j, "list_id", 1, why, cap)) == NULL ||
      (rec = member(j, "signed_record", 1, why, cap)) == NULL ||
      (cp = member(j, "signed_checkpoint", 1, why, cap)) == NULL)
    return -1;
  why[0] = '\0';
  pf->title = member(j, "list_title", 0, why, cap);
  pf->notice = member(j, "notice_text", 0, why, cap);
  if (why[0] != '\0') return -1;
  if (pf->notice != NULL)
    pf->notice_len = json_string_length(json_object_get(j, "notice_text"));
  json_t *seq = json_object_get(j, "seq");
  if (!json_is_integer(seq) || json_integer_value(seq) < 0) {
    snprintf(why, cap, "the proof file's \"seq\" is not a number >= 0");
    return -1;
  }
  pf->seq = (uint64_t)json_integer_value(seq);
  if (b64_decode(rec, PERMIT_RECORD_MAX_LEN, &pf->record, &pf->record_len)) {
    snprintf(why, cap, "\"signed_record\" is not canonical base64 of at most "
                       "%d bytes", PERMIT_RECORD_MAX_LEN);
    return -1;
  }
  if (b64_decode(cp, PERMIT_CHECKPOINT_MAX_LEN, &pf->cp, &pf->cp_len)) {
    snprintf(why, cap, "\"signed_checkpoint\" is not canonical base64 of at "
                       "most %d bytes", PERMIT_CHECKPOINT_MAX_LEN);
    return -1;
  }
  json_t *hashes = json_object_get(j, "inclusion_proof");
  if (!json_is_array(hashes) ||
      json_array_size(hashes) > PERMIT_MERKLE_MAX_PROOF) {
    snprintf(why, cap, "\"inclusion_proof\" is not a list of at most %d "
                       "hashes", PERMIT_MERKLE_MAX_PROOF);
    return -1;
  }
  pf->nhashes = json_array_size(hashes);
  for (size_t i = 0; i < pf->nhashes; i++) {
    const char *h = json_string_value(json_array_get(hashes, i));
    if (h == NULL || hash_decode(h, pf->hashes[i]) != 0) {
      snprintf(why, cap, "\"inclusion_proof\"[%zu] is not 64 lower-case hex "
                         "digits", i);
      return -1;
    }
  }
  return 0;
}

/* Reads a card file (as `permitctl card` prints) and verifies the card. */
static int card_read(const char *path, permit_peer *peer, char *why,
                     size_t cap) {
  json_t *j = json_file(path, CARD_FILE_MAX, why, cap);
  if (j == NULL) return -1;
  const char *enc = json_string_value(json_object_get(j, "card"));
  uint8_t *card = NULL;
  size_t len = 0;
  int rc = -1;
  permit_err err = {0};
  if (enc == NULL || b64_decode(enc, CARD_MAX, &card, &len) != 0)
    snprintf(why, cap, "%s is not a card file (JSON with a base64 \"card\", "
                       "as permitctl card prints)", path);
  else if (permit_card_verify(card, len, peer, &err) != 0)
    snprintf(why, cap, "the card in %s does not verify: %s", path, err.msg);
  else
    rc = 0;
  free(card);
  json_decref(j);
  return rc;
}

/*
 * The checks, in the order that makes each one mean something: the key
 * comes from the card, the checkpoint and the record must be signed by
 * it, and the record's exact bytes must be the checkpoint's entry |seq|.
 * Prints what the proof shows and returns 0, or returns -1 with |why|.
 */
static int proof_check(proof_file *pf, const permit_peer *card, char *why,
                       size_t cap) {
  const permit_trusted_key *key = &card->identity;
  Permit__V1__Checkpoint *cp = NULL;
  Permit__V1__Record *rec = NULL;
  permit_err err = {0};
  int rc = -1;
  char origin[PERMIT_ORIGIN_MAX + 1];
  if (strcmp(pf->issuer, card->name) != 0) {
    snprintf(why, cap, "the proof names issuer \"%.253s\" but the card is "
                       "%s's", printable(pf->issuer, 0), card->name);
    goto out;
  }
  if (permit_checkpoint_verify(pf->cp, pf->cp_len, key, 1, &cp, &err) != 0) {
    snprintf(why, cap, "the checkpoint is not signed by %s's identity key "
                       "(%s): %s", card->name, key->key_id, err.msg);
    goto out;
  }
  snprintf(origin, sizeof origin, "permit/v1/log/%.253s/%.253s", pf->issuer,
           pf->audience);
  if (strcmp(cp->origin, origin) != 0) {
    snprintf(why, cap, "the checkpoint is of the log %.300s, not of "
                       "permit/v1/log/%.253s/%.253s", cp->origin, pf->issuer,
             printable(pf->audience, 0));
    goto out;
  }
  if (permit_record_verify(pf->record, pf->record_len, key, 1, &rec, &err) !=
      0) {
    snprintf(why, cap, "the record does not verify with %s's identity key "
                       "(%s): %s", card->name, key->key_id, err.msg);
    goto out;
  }
  if (permit_record_check_route(rec, pf->issuer, pf->audience, &err) != 0) {
    snprintf(why, cap, "the record's route: %s", err.msg);
    goto out;
  }
  if (rec->kind_case != PERMIT__V1__RECORD__KIND_OPT_IN ||
      rec->opt_in == NULL) {
    snprintf(why, cap, "the record is not an opt-in");
    goto out;
  }
  if (strcmp(rec->list_id, pf->list_id) != 0) {
    snprintf(why, cap, "the file says list \"%.64s\" but the record is for "
                       "list %s", printable(pf->list_id, 0), rec->list_id);
    goto out;
  }
  if (pf->seq >= cp->size) {
    snprintf(why, cap, "entry %llu is not in the checkpoint's tree of %llu "
                       "entries", (unsigned long long)pf->seq,
             (unsigned long long)cp->size);
    goto out;
  }
  permit_hash leaf;
  permit_merkle_leaf_hash(pf->record, pf->record_len, leaf);
  int irc = permit_merkle_verify_inclusion(pf->seq, cp->size, leaf,
                                           pf->hashes, pf->nhashes,
                                           cp->root_hash.data);
  char root[2 * PERMIT_HASH_LEN + 1];
  permit_hex_encode(cp->root_hash.data, PERMIT_HASH_LEN, root);
  if (irc != 0) {
    snprintf(why, cap, "the inclusion proof does not show the record as "
                       "entry %llu of the tree of %llu entries with root %s%s",
             (unsigned long long)pf->seq, (unsigned long long)cp->size, root,
             irc == PERMIT_EVERIFY ? "" : " (hashing failed)");
    goto out;
  }
  const Permit__V1__OptIn *o = rec->opt_in;
  char notice_hex[2 * PERMIT_SHA256_LEN + 1] = "";
  if (o->notice_sha256.len == PERMIT_SHA256_LEN)
    permit_hex_encode(o->notice_sha256.data, PERMIT_SHA256_LEN, notice_hex);
  if (pf->notice != NULL) {
    uint8_t sha[PERMIT_SHA256_LEN];
    permit_iov iov = {pf->notice, pf->notice_len};
    if (permit_sha256(&iov, 1, sha) != 0 ||
        o->notice_sha256.len != PERMIT_SHA256_LEN ||
        memcmp(sha, o->notice_sha256.data, PERMIT_SHA256_LEN) != 0) {
      snprintf(why, cap, "the notice text in the file is not the one the "
                         "record names (sha256 %s)", notice_hex);
      goto out;
    }
  }
  char collected[40], signed_at[40], subject[2 * PERMIT_SUBJECT_LEN + 1],
      rid[2 * PERMIT_RECORD_ID_LEN + 1];
  ctl_iso_time(o->collected_at_ms, collected, sizeof collected);
  ctl_iso_time(cp->timestamp_ms, signed_at, sizeof signed_at);
  permit_hex_encode(rec->subject.data, rec->subject.len, subject);
  permit_hex_encode(rec->record_id.data, rec->record_id.len, rid);
  printf("%s collected consent (method %s) at %s for list %s of %s, notice "
         "version %u (sha256 %s, %s), subject %s; record %s is entry %llu of "
         "the log whose root %s at size %llu %s signed at %s.\n",
         rec->issuer, o->method, collected, rec->list_id, rec->audience,
         o->notice_version, notice_hex,
         pf->notice != NULL ? "text matches" : "text not included", subject,
         rid, (unsigned long long)pf->seq, root, (unsigned long long)cp->size,
         rec->issuer, signed_at);
  printf("The subject is the buyer's pseudonym between %s and %s (an HMAC of "
         "the email under their pair key): the proof does not show the email "
         "itself; either of them can show that an email gives this subject.\n",
         rec->issuer, rec->audience);
  printf("Checked offline with the card of %s (identity key %s): the "
         "record's and the checkpoint's signatures, the route %s -> %s, and "
         "that the exact record bytes are entry %llu of that log.\n",
         card->name, key->key_id, rec->issuer, rec->audience,
         (unsigned long long)pf->seq);
  if (pf->title != NULL)
    printf("List title, as the venue states it (not signed by %s): %s\n",
           rec->issuer, printable(pf->title, 0));
  if (pf->notice != NULL)
    printf("Notice text of version %u (its SHA-256 is the record's):\n%s\n",
           o->notice_version, printable(pf->notice, 1));
  rc = 0;
out:
  if (cp != NULL) permit__v1__checkpoint__free_unpacked(cp, NULL);
  if (rec != NULL) permit_record_free(rec);
  return rc;
}

int permitctl_verify_proof(int argc, char **argv) {
  static const char *const known[] = {"--issuer-card", NULL};
  const char *file = NULL;
  if (arg_check(argc, argv, known, 1, &file, "verify-proof") != 0) return 2;
  const char *card_path = arg_value(argc, argv, "--issuer-card");
  if (card_path == NULL) {
    fprintf(stderr, "permitctl verify-proof: FILE and --issuer-card CARD.json "
                    "are required\n");
    return 2;
  }
  char why[1024] = "";
  permit_peer card;
  proof_file pf;
  int rc = card_read(card_path, &card, why, sizeof why);
  if (rc == 0) rc = proof_file_read(file, &pf, why, sizeof why);
  else memset(&pf, 0, sizeof pf);
  if (rc == 0) rc = proof_check(&pf, &card, why, sizeof why);
  proof_file_free(&pf);
  if (rc != 0) {
    fprintf(stderr, "permitctl verify-proof: NOT VERIFIED: %s\n", why);
    return 1;
  }
  return 0;
}
