/*
 * queue.h -- the run queue (internal to the kernel; see kstate.h).
 *
 * It is kept in memory as a ring (kstate.h, convention 6) and stored, at
 * each ocap_kernel_sync rather than at each commit, as
 * `runQueue.<n>` for n from `runQueue.head` to `runQueue.tail`
 * (docs/storage.md). Each item is either a send, "send <target> <result|->
 * [<sender>]\n<capdata>", or a notify, "notify <ep> <kpid> <kpid>...". An item holds a
 * reference to every promise it names. That text is only the stored
 * form: an item the kernel queues is kept in its parts (its references
 * and, for a send, its capdata), and written as text only when the store
 * gets it; an item read from the store is parsed, and checked, when a
 * crank takes it.
 */
#ifndef OCAP_QUEUE_H
#define OCAP_QUEUE_H

#include <stdlib.h>

#include "kstate.h"

/* The queue's memory (kstate.h, convention 6), made and freed with the
 * kernel, and the store's hooks for it (it has no prepare: see sync). */
int ocap__queue_new(ocap_kernel_t *k);
void ocap__queue_free(ocap_kernel_t *k);
void ocap__queue_done(ocap_kernel_t *k);
void ocap__queue_abort(ocap_kernel_t *k, int cleared);
/* The queue is written when the kernel syncs, not at each commit
 * (ocap_kernel_sync): whether the store lacks some of its committed state,
 * the writes of that state (into the sync's buffer), and the note that the
 * store has it. */
int ocap__queue_unsynced(ocap_kernel_t *k);
int ocap__queue_fill(ocap_kernel_t *k);
void ocap__queue_synced(ocap_kernel_t *k);
/* Whether the queue or a queued-byte count changed since the last commit
 * or abort. */
int ocap__queue_changed(ocap_kernel_t *k);

/* Copies ref into dst (OCAP_REF_MAX bytes) and returns its length, or -1
 * when it does not fit (dst then holds a cut copy, unterminated). A loop:
 * a reference is a few bytes, and calls to strlen and memcpy cost more. */
static inline long ocap__ref_copy(char *dst, const char *src) {
  for (long i = 0; i < OCAP_REF_MAX; i++)
    if ((dst[i] = src[i]) == '\0')
      return i;
  return -1;
}

/* The promises a notify the kernel queues tells at most, merged into one
 * item (ocap__enqueue_notify). */
#define OCAP_NOTIFY_MERGE 16

/* Appends an item given as its stored text (its references already
 * taken); it is checked when a crank takes it. */
int ocap__enqueue(ocap_kernel_t *k, const char *item, size_t len);
/* Enqueues a send from endpoint ep, whose methargs (in ep's erefs) are
 * translated into krefs, exporting what ep names for the first time; the
 * item takes references. A vat sender (NULL for the host) is charged for
 * it until it is gone. rrec, when not NULL, is the result's record
 * (promise.h). */
int ocap__enqueue_send(ocap_kernel_t *k, const char *target, const char *result,
                       struct ocap__kp *rrec, const char *ep, const ocap_capdata_t *methargs,
                       const char *sender);
/* Adds delta to the bytes vat ep has waiting in the kernel (<ep>.queuedBytes);
 * a vat that is gone is charged nothing. The counts are kept by vat
 * number: ocap__charge_vat charges vat vN given N, which spares reading
 * its id. */
int ocap__charge_queued(ocap_kernel_t *k, const char *ep, long long delta);
int ocap__charge_vat(ocap_kernel_t *k, long long vat, long long delta);
/* Removes vat ep's count (its termination). The counts are kept in memory
 * with the queue and written at commit; ocap__queued_forget drops the one
 * of ep unless the crank changed it (ocap_kernel_forget). */
int ocap__clear_queued(ocap_kernel_t *k, const char *ep);
void ocap__queued_forget(ocap_kernel_t *k, const char *ep);
/* Queues a notify of kpid to ep, merged into the last item when it can be;
 * rec, when not NULL, is kpid's record (promise.h), which spares finding
 * it again, and kpid may then be NULL (the queue keeps promises by
 * number). */
int ocap__enqueue_notify(ocap_kernel_t *k, const char *ep, const char *kpid, struct ocap__kp *rec);
/* The same for the endpoint of code ep (kstate.h, not 0) and the promise
 * of record rec, as a promise keeps its subscribers. */
int ocap__enqueue_notify_ep(ocap_kernel_t *k, ocap__epc_t ep, struct ocap__kp *rec);
/*
 * A run-queue item as the crank that took it sees it, in its parts. A
 * send's capdata is lent: it stays valid until the crank gives the item
 * back (ocap__queue_return), whatever the crank's host code commits.
 */
typedef struct ocap__qitem {
  int notify; /* 0: a send, 1: a notify */
  /* A send: result and sender are "" when it has none. */
  char target[OCAP_REF_MAX], result[OCAP_REF_MAX], sender[OCAP_REF_MAX];
  long long rid;   /* the N of its result kpN when the kernel queued it, else -1 */
  long long sid;   /* the N of its sender vN, else -1 (none, or not written so) */
  long long tid;   /* the N of its target koN, else -1 (a promise, or not written so) */
  const char *enc; /* its capdata (in krefs), elen bytes */
  size_t elen;
  size_t bytes; /* the length of its stored text: what its sender is charged */
  /* A notify: its endpoint and its n promises, in `small` when they fit,
   * and their numbers in ids when the kernel queued it (else NULL). */
  char ep[OCAP_REF_MAX];
  char (*kpids)[OCAP_REF_MAX];
  const long long *ids;
  size_t n;
  char small[OCAP_NOTIFY_MERGE][OCAP_REF_MAX];
  long long smallids[OCAP_NOTIFY_MERGE];
} ocap__qitem_t;

/* Pops the head into *out: 1 when there was an item, 0 when empty, or a
 * negative code (an item read from the store that is damaged: the head
 * stays). *out is freed with ocap__qitem_free when the call returned 1.
 * The first item a crank takes stays valid until the crank calls
 * ocap__queue_return once it has ended. */
int ocap__dequeue(ocap_kernel_t *k, ocap__qitem_t *out);
/* Whether an abort put the item the crank was lent back at the head: not
 * when host code committed after the crank took it (K:commit from a
 * delivery, in C), which an abort does not undo. */
int ocap__queue_lent_back(const ocap_kernel_t *k);
static inline void ocap__qitem_free(ocap__qitem_t *it) {
  if (it->notify && it->kpids && it->kpids != it->small)
    free(it->kpids);
  it->kpids = NULL;
}
void ocap__queue_return(ocap_kernel_t *k);
/* Appends a send item's stored text to b (a message parked on a promise
 * is kept as text). */
int ocap__qitem_text(ocap_kernel_t *k, const ocap__qitem_t *it, ocap__buf_t *b);

/* Parses and checks a send item's stored text (result and sender "" when
 * it names none); *capdata is where its capdata starts. */
int ocap__parse_send(ocap_kernel_t *k, const char *item, size_t len, char *target, char *result,
                     char *sender, size_t *capdata);
/* Drops the references a send item held (rrec as for ocap__enqueue_send;
 * tid the N of target koN, or -1 to read it from target). */
int ocap__release_send(ocap_kernel_t *k, const char *target, long long tid, const char *result,
                       struct ocap__kp *rrec, const char *enc, size_t len);

#endif
