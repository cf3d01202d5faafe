/*
 * clist.h -- the endpoints' c-lists in memory (internal to the kernel; see
 * kstate.h, convention 6, and refs.h for what a c-list holds).
 *
 * A vat's c-list is read from the store whole, with one prefix scan of
 * `<ep>.c.`, the first time the kernel touches it, with the vat's import
 * counters `<ep>.nextObjectId` and `.nextPromiseId`. Entries map a reference
 * (a kref or a vref, the part of the key after `<ep>.c.`) to the value
 * stored under that key. Values are kept as stored and checked where they
 * are used, so a damaged one is reported as it was when read at each use.
 */
#ifndef OCAP_CLIST_H
#define OCAP_CLIST_H

#include <stdint.h>

#include "kstate.h"

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

/* The value of `<ep>.c.<ref>`: 1 with *v (owned by the table, valid until
 * the next change of the c-list) and *vl set, 0 when there is none, or a
 * negative code. It returns 2 instead of 1 when the value is one the
 * kernel itself put there with ocap__clist_put, rather than one read from
 * the store: such a value is well formed (a kref or a vref), so its
 * reader can skip the checks that find a damaged one. */
int ocap__clist_get(ocap_kernel_t *k, const char *ep, const char *ref, const char **v, size_t *vl);
/*
 * Where ocap__clist_getp found ref in ep's c-list, or where its entry
 * would go, so that a change of the same entry right after (removing what
 * was read, adding what was missing) need not look it up again. It is
 * good until the c-list gains or loses an entry; ocap__clist_setp checks
 * that (a generation count) and looks the ref up again when it is stale.
 */
typedef struct ocap__cpos {
  void *c; /* the c-list (clist.c), NULL before a lookup */
  void **slot;
  unsigned long gen;
  size_t len, hash;
  uint64_t w[2];
} ocap__cpos_t;

/* ocap__clist_get, also filling *pos. */
int ocap__clist_getp(ocap_kernel_t *k, const char *ep, const char *ref, const char **v, size_t *vl,
                     ocap__cpos_t *pos);
/* ocap__clist_set (formed 0) or ocap__clist_put (formed 1) of the same ep
 * and ref that ocap__clist_getp found at *pos. */
int ocap__clist_setp(ocap_kernel_t *k, const char *ep, const char *ref, const char *val, int formed,
                     const ocap__cpos_t *pos);
/* Sets `<ep>.c.<ref>` to val, or removes it when val is NULL. */
int ocap__clist_set(ocap_kernel_t *k, const char *ep, const char *ref, const char *val);
/* The same for a value the caller made or checked itself, so that it is
 * well formed: a kref, or a vref (ocap__valid_kref, ocap__valid_eref). */
int ocap__clist_put(ocap_kernel_t *k, const char *ep, const char *ref, const char *val);
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
