/*
 * clist.h -- the endpoints' c-lists in memory (internal to the kernel; see
 * kstate.h, convention 6, and refs.h for what a c-list holds).
 *
 * A vat's c-list is read from the store whole, with one prefix scan of
 * `<ep>.c.`, the first time the kernel touches it, with the vat's import
 * counters `<ep>.nextObjectId` and `.nextPromiseId`. Entries map a reference
 * (a kref or a vref, the part of the key after `<ep>.c.`) to the value
 * stored under that key. Both are kept as codes (refs.h) where they have
 * one, else as text; a value is checked where it is used, so a damaged one
 * is reported as it was when read at each use.
 */
#ifndef OCAP_CLIST_H
#define OCAP_CLIST_H

#include <stdint.h>

#include "kstate.h"
#include "refs.h"

int ocap__clists_new(ocap_kernel_t *k);
void ocap__clists_free(ocap_kernel_t *k);
void ocap__clists_done(ocap_kernel_t *k);
void ocap__clists_abort(ocap_kernel_t *k, int cleared);
/* The c-lists are written when the kernel syncs, not at commit
 * (ocap_kernel_sync): whether an entry's committed value may be missing
 * from the store, the writes of those values (into the sync's buffer), and
 * the note that the store has them. */
int ocap__clists_unsynced(ocap_kernel_t *k);
/* Whether the crank changed a c-list since the last commit or abort. */
int ocap__clists_changed(ocap_kernel_t *k);
int ocap__clists_fill(ocap_kernel_t *k);
void ocap__clists_synced(ocap_kernel_t *k);

/*
 * A reference looked up: w is its code (refs.h), or, for one with none,
 * REF_TEXT with the hash of its text s above the kind bits. A key is made
 * once (ocap__ckey) and used for every lookup and change of its entry.
 */
typedef struct ocap__ckey {
  uint64_t w;
  const char *s; /* the text, for a key of kind REF_TEXT */
} ocap__ckey_t;

void ocap__ckey(ocap__ckey_t *key, const char *ref);
/* The key of code w (not 0). */
static inline ocap__ckey_t ocap__ckey_code(uint64_t w) {
  ocap__ckey_t key = {w, NULL};
  return key;
}

/*
 * An entry's value is a word: 0 for none, a code (refs.h) with CV_DROP set
 * when the value is stored with the mark `_ ` in front (an import the
 * endpoint dropped), or, for a value with no code, the address of an
 * ocap__ctext_t with REF_TEXT in its low bits, holding the value as read or
 * written (mark included).
 */
#define CV_DROP (1ULL << 63)
typedef struct ocap__ctext {
  size_t len;
  char s[]; /* NUL-terminated too */
} ocap__ctext_t;

static inline const ocap__ctext_t *ocap__cv_text(uint64_t v) {
  return REF_KIND(v) == REF_TEXT ? (const ocap__ctext_t *)(uintptr_t)(v & ~(uint64_t)7) : NULL;
}
/* A text value for s (n bytes), or 0 when out of memory. The c-list owns
 * it once stored (ocap__clist_store); ocap__cv_free frees one that was not. */
uint64_t ocap__cv_make(const char *s, size_t n);
void ocap__cv_free(uint64_t v);

/*
 * Where a lookup found its key in ep's c-list, or where its entry would go,
 * so that a change of the same entry right after (removing what was read,
 * adding what was missing) need not look it up again. It is good until the
 * c-list gains or loses an entry; ocap__clist_store checks that (a
 * generation count) and looks the key up again when it is stale.
 */
typedef struct ocap__cpos {
  void *c; /* the c-list (clist.c), NULL before a lookup */
  void **slot;
  unsigned long gen;
  ocap__ckey_t key;
} ocap__cpos_t;

/* ep's entry for key: 1 with its value word in *val (not 0), 0 when there
 * is none, or a negative code; *pos is filled either way. */
int ocap__clist_look(ocap_kernel_t *k, const char *ep, const ocap__ckey_t *key, uint64_t *val,
                     ocap__cpos_t *pos);
/* Sets ep's entry for key to the value word val (0 removes it); pos, when
 * not NULL, is where a lookup of the same key just was. A text value is
 * the c-list's from the call on, even when it fails. */
int ocap__clist_store(ocap_kernel_t *k, const char *ep, const ocap__ckey_t *key, uint64_t val,
                      const ocap__cpos_t *pos);

/* The value of `<ep>.c.<ref>` as text: 1 with *v (owned by the table,
 * valid until the next lookup or change of a c-list) and *vl set, 0 when
 * there is none, or a negative code. It returns 2 instead of 1 when the
 * value is well formed for its key (a vref for a kref of a vat's c-list, a
 * kref for a vref), so its reader can skip the checks that find a damaged
 * one. ocap__clist_getp fills *pos too (ocap__export_new). */
int ocap__clist_get(ocap_kernel_t *k, const char *ep, const char *ref, const char **v, size_t *vl);
int ocap__clist_getp(ocap_kernel_t *k, const char *ep, const char *ref, const char **v, size_t *vl,
                     ocap__cpos_t *pos);
/* The refs of ep's c-list that start with `prefix`, in byte order, for
 * each(ud, ref) until it returns nonzero (which is returned). */
int ocap__clist_each(ocap_kernel_t *k, const char *ep, const char *prefix,
                     int (*each)(void *ud, const char *ref), void *ud);

/* The next N of an import o-N (promise 0) or p-N (promise 1) the kernel
 * gives ep, advancing `<ep>.nextObjectId` or `.nextPromiseId` (kept with
 * the c-list, written at sync like it); ocap__clist_clear_ids removes both
 * (ep's termination). */
int ocap__clist_next_id(ocap_kernel_t *k, const char *ep, int promise, long long *out);
int ocap__clist_clear_ids(ocap_kernel_t *k, const char *ep);

/* The endpoints that import object kref (the exporter is not one), read
 * from the index `<kref>.i.<ep>` with one scan: a malloc'd array in *out
 * (NULL when none) and their number, or a negative code. */
long ocap__clist_importers(ocap_kernel_t *k, const char *kref, char (**out)[OCAP_REF_MAX]);

#endif
