/*
 * permit/contacts.h - the venue's store of buyers: every contact an issuer
 * delivered, per list, with its personal data encrypted at rest under a
 * key of its own subject, and a numbered feed of changes.
 *
 * Storage (column family contacts; venue_store.proto has the messages):
 *   c/<list_id>/<issuer>/ || subject     StoredContact
 *   k/<issuer>/ || subject               the subject's 32-byte key
 *   s/<issuer>/ || subject || list_id    empty: the lists holding it
 *   feed/ || BE64(change)                ContactFeedEntry
 *   feed/head                            BE64 of the last change number
 *
 * The email and names exist on disk only inside StoredContact.sealed
 * (ChaCha20-Poly1305 under the subject key); erasing a subject deletes
 * its rows and, with its last row, its key, so that copies of old rows
 * (backups, unreclaimed files) stay unreadable.
 *
 * Writes are staged in a transaction and then added to the caller's
 * batch (the sync adds them to the append of the records that caused
 * them), so a record and its effect become durable together.  There must
 * be one writer at a time: a transaction reads the feed head and the
 * subject keys as it stages, and sees no other transaction's writes.
 * Reads are safe from any thread.
 */
#ifndef PERMIT_CONTACTS_H
#define PERMIT_CONTACTS_H

#include <stddef.h>
#include <stdint.h>

#include "permit/error.h"
#include "permit/record.h"
#include "permit/store.h"
#include "permit/v1/permit.pb-c.h"
#include "permit/v1/service.pb-c.h"

/* Longest row key: "c/" list "/" issuer "/" subject. */
#define PERMIT_CONTACT_KEY_MAX (2 + 64 + 1 + 253 + 1 + 32)

/* Bounds on a delivered Contact's fields, in bytes. */
#define PERMIT_CONTACT_EMAIL_MAX 320
#define PERMIT_CONTACT_NAME_MAX 256
#define PERMIT_CONTACT_LOCALE_MAX 35

/*
 * Checks an opened Contact: an email of 1 to PERMIT_CONTACT_EMAIL_MAX
 * bytes, names and locale within their bounds, all UTF-8 without control
 * characters.  PERMIT_EINVAL naming the field (never its value: it is
 * personal data).
 */
int permit_contact_validate(const Permit__V1__Contact *c, permit_err *err);

/*
 * True when |s| (|len| bytes) is well-formed UTF-8 (RFC 3629) with no
 * control character but, when |multiline|, tab and line breaks.
 */
int permit_contacts_text_ok(const char *s, size_t len, int multiline);

/* ---- writing ---- */

typedef struct permit_contacts_txn permit_contacts_txn;

/* A new, empty transaction on |s|; the caller owns |*out|. */
int permit_contacts_txn_new(permit_store *s, permit_contacts_txn **out,
                            permit_err *err);

/* Frees |t| and wipes the keys it read; NULL is a no-op. */
void permit_contacts_txn_free(permit_contacts_txn *t);

/*
 * Stages the opt-in |rec| (a verified record) whose sealed contact opened
 * to |contact|; |seq| is the record's position in the issuer's log.  The
 * row of (list, issuer, subject) becomes this opt-in, status "active",
 * replacing an earlier one; a "subscribed" change is added.
 * PERMIT_EINVAL when |rec| is not an opt-in, PERMIT_EIO when the store
 * cannot be read, PERMIT_ECRYPTO, PERMIT_ENOMEM.
 */
int permit_contacts_txn_opt_in(permit_contacts_txn *t,
                               const Permit__V1__Record *rec,
                               const Permit__V1__Contact *contact,
                               uint64_t seq, permit_err *err);

/*
 * Stages the withdrawal |rec|: when the row of its subject and list holds
 * the opt-in it refers to and is active, the row becomes "withdrawn" and
 * an "unsubscribed" change is added (|*applied| 1); otherwise nothing
 * changes (|*applied| 0).
 */
int permit_contacts_txn_withdraw(permit_contacts_txn *t,
                                 const Permit__V1__Record *rec, uint64_t seq,
                                 int *applied, permit_err *err);

/*
 * Stages the erasure |rec|: deletes the row of its subject and list, and
 * the subject's key when no other list holds the subject; adds an
 * "erased" change.  |*applied| is 0 when there was no row.
 */
int permit_contacts_txn_erase(permit_contacts_txn *t,
                              const Permit__V1__Record *rec, uint64_t seq,
                              int *applied, permit_err *err);

/*
 * Stages an unsubscribe at this venue: the active row of (|list_id|,
 * |issuer|, |subject|) becomes "withdrawn" with an "unsubscribed" change,
 * and |record_id| receives the opt-in it withdraws, for the Withdrawal
 * record sent back to the issuer (|*applied| 1).  |*applied| 0 when the
 * row is already withdrawn.  PERMIT_ENOTFOUND when there is no row.
 */
int permit_contacts_txn_unsubscribe(permit_contacts_txn *t,
                                    const char *list_id, const char *issuer,
                                    const uint8_t subject[PERMIT_SUBJECT_LEN],
                                    uint8_t record_id[PERMIT_RECORD_ID_LEN],
                                    int *applied, permit_err *err);

/*
 * The entries of the issuer's log (the mirror) whose sealed contacts an
 * erasure staged in |t| made void: the caller prunes them
 * (permit_log_prune) in the same batch.  |*seqs| belongs to |t|.
 */
size_t permit_contacts_txn_prunes(const permit_contacts_txn *t,
                                  const uint64_t **seqs);

/* Whether erasures staged in |t| keep the contact for its one hand-over
 * on the feed (the default) or shred it at once. */
void permit_contacts_txn_handover(permit_contacts_txn *t, int on);

/* The number of changes staged so far. */
uint64_t permit_contacts_txn_changes(const permit_contacts_txn *t);

/*
 * Adds every staged write, and the new feed head, to |b|.  May be called
 * again with another batch (after a failed write, say): it adds the same
 * writes.
 */
void permit_contacts_txn_write(const permit_contacts_txn *t, permit_batch *b);

/* ---- reading ---- */

/* Where a listing stopped: the key of the last row it passed. */
typedef struct permit_contacts_cursor {
  uint8_t key[PERMIT_CONTACT_KEY_MAX];
  size_t len; /* 0: before the first row */
} permit_contacts_cursor;

/*
 * Called with each contact, decrypted; |e| and its strings are valid
 * during the call only (and are wiped after it).  Returning 0 goes on, a
 * positive value stops after this contact, a negative one stops with
 * that error.
 */
typedef int (*permit_contact_visit_fn)(void *arg,
                                       const Permit__V1__ContactEntry *e);

/*
 * Visits the contacts of |list_id| after |cursor| in key order (issuer,
 * then subject), leaving out withdrawn ones unless |include_withdrawn|,
 * and moves the cursor past each row it passes.  Returns 0 at the end of
 * the list, the visitor's non-zero value when it stopped, PERMIT_EINVAL
 * for a bad list id, PERMIT_EIO.  A row that does not decrypt is logged
 * ("contacts.damaged") and skipped.
 */
int permit_contacts_list(permit_store *s, const char *list_id,
                         int include_withdrawn,
                         permit_contacts_cursor *cursor,
                         permit_contact_visit_fn visit, void *arg,
                         permit_err *err);

/*
 * Called with each change; |c| is valid during the call only.  The
 * contact in it is the row as it is now (decrypted), or for a row since
 * erased only its list, issuer, record id, seq and status "erased".
 * Return values as permit_contact_visit_fn.
 */
typedef int (*permit_change_visit_fn)(void *arg,
                                      const Permit__V1__ContactChange *c);

/*
 * Visits the changes numbered after |after| in order.  Returns as
 * permit_contacts_list().
 */
int permit_contacts_changes(permit_store *s, uint64_t after,
                            permit_change_visit_fn visit, void *arg,
                            permit_err *err);

/*
 * An "erased" change carries the contact as it was until it has been
 * delivered once: this forgets it (the one-time key and the sealed copy)
 * after a watcher was sent change |change|.  A synced write.
 */
int permit_contacts_farewell_forget(permit_store *s, uint64_t change,
                                    permit_err *err);

/* Forgets every farewell kept since before |before_ms| (nobody watched
 * the feed in time); |*purged| counts them. */
int permit_contacts_farewell_purge(permit_store *s, int64_t before_ms,
                                   size_t *purged, permit_err *err);

/* The last change number in |*head| (0: none yet). */
int permit_contacts_head(permit_store *s, uint64_t *head, permit_err *err);

#endif
