/*
 * gc.h -- garbage collection of kernel objects (internal to the kernel;
 * see kstate.h, and docs/gc.md for the model).
 *
 * Each object has two counts (object.h): reachable, the references that
 * can send to it (importers' c-list entries flagged reachable, queued and
 * parked messages, settled promises' data), and recognizable, the same
 * plus the importers' entries that were dropped. The exporter's own entry
 * counts in neither. A count that drops to 0 makes the object a candidate;
 * at the end of the crank (the store's prepare hook) each candidate that
 * still has a count of 0 becomes a GC action for its owner, kept under
 * `gcAction.<ep>.<kind>.ko<N>` so that it commits or rolls back with the
 * change that made it:
 *
 *   `<ep> dropExport <kref>`    nobody reaches it (dropExports delivery)
 *   `<ep> retireExport <kref>`  nobody recognizes it: it is deleted
 *                               (retireExports delivery)
 *   `<ep> retireImport <kref>`  its exporter retired it while ep still
 *                               recognized it (retireImports delivery)
 *
 * A GC crank (crank.c) runs before any reap or run-queue item: it takes
 * the actions of one endpoint and one kind, drops those no longer true,
 * applies the rest and delivers them in one delivery.
 *
 * Reaps (bringOutYourDead) are scheduled in memory only: a reap lost to a
 * restart is harmless, the next one collects what it would have.
 */
#ifndef OCAP_GC_H
#define OCAP_GC_H

#include "kstate.h"

/* The GC state's memory (kstate.h, convention 6) and the store's hooks. */
int ocap__gc_new(ocap_kernel_t *k);
void ocap__gc_free(ocap_kernel_t *k);
int ocap__gc_prepare(ocap_kernel_t *k);
void ocap__gc_done(ocap_kernel_t *k);
/* Whether the crank has candidates or changed the actions. */
int ocap__gc_changed(ocap_kernel_t *k);
void ocap__gc_abort(ocap_kernel_t *k, int cleared);
int ocap__gc_check(ocap_kernel_t *k);
void ocap__gc_forget(ocap_kernel_t *k);

/* Notes that a count of object koN dropped to 0 in this crank. */
int ocap__gc_maybe_free(ocap_kernel_t *k, long long id);

/* The kinds of GC actions, in the order an endpoint gets them. */
enum { GC_DROP_EXPORT = 0, GC_RETIRE_EXPORT = 1, GC_RETIRE_IMPORT = 2 };

/* The actions of one endpoint and one kind, taken for a GC crank. */
typedef struct ocap__gcbatch {
  char ep[OCAP_REF_MAX];
  int kind;
  size_t n;                    /* the actions still true, applied */
  char (*erefs)[OCAP_REF_MAX]; /* their erefs in ep */
  const char **vrefs;          /* pointers to erefs, for the delivery */
} ocap__gcbatch_t;

/* Whether a GC action is waiting: 1, 0, or a negative code. */
int ocap__gc_pending(ocap_kernel_t *k);
/* Takes the first endpoint's actions of its first kind out of the set,
 * applies those still true (flags, deletions) and lists their erefs in b
 * (b->n may be 0). Returns 1, 0 when there is none, or a negative code. */
int ocap__gc_take(ocap_kernel_t *k, ocap__gcbatch_t *b);
/* Takes b's actions out of the set again, after the crank that applied
 * them was rolled back: they are not retried. */
int ocap__gc_discard(ocap_kernel_t *k, const ocap__gcbatch_t *b);
void ocap__gcbatch_free(ocap__gcbatch_t *b);

/* The reaps waiting (bringOutYourDead), in memory. */
int ocap__gc_next_reap(ocap_kernel_t *k, char *ep);

#endif
