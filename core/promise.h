/*
 * promise.h -- kernel promises: state, decider, subscribers, parked
 * messages and reference counts (internal to the kernel; see kstate.h).
 *
 * A promise's record is `<kpid>.state`, `.decider`, `.subscribers`,
 * `.refCount`, `.data`, and the messages parked on it while it is
 * unresolved, `.queue.<n>` and `.queueTail` (docs/storage.md), all kept in
 * memory and written when the kernel syncs (promise.c). A settled
 * promise is freed when its count drops to zero.
 */
#ifndef OCAP_PROMISE_H
#define OCAP_PROMISE_H

#include <stdint.h>

#include "kstate.h"

/* The memory of the promises' states and counts (kstate.h, convention
 * 6), made and freed with the kernel, and the store's hooks for it. */
int ocap__promises_new(ocap_kernel_t *k);
void ocap__promises_free(ocap_kernel_t *k);
void ocap__promises_done(ocap_kernel_t *k);
void ocap__promises_abort(ocap_kernel_t *k, int cleared);
/* The promises are written when the kernel syncs, not at commit
 * (ocap_kernel_sync): whether any record's committed values may be missing
 * from the store, the writes of those values (into the sync's buffer), and
 * the note that the store has them. */
int ocap__promises_unsynced(ocap_kernel_t *k);
int ocap__promises_fill(ocap_kernel_t *k);
void ocap__promises_synced(ocap_kernel_t *k);
/* Whether a promise changed since the last commit or abort. */
int ocap__promises_changed(ocap_kernel_t *k);

/*
 * A promise's record in memory. The hot paths (a send, its delivery, a
 * resolution, a notify) find it once and pass it on rather than its kpid,
 * which every function would parse and look up again. Host code runs
 * inside a crank (the host's and the peers' dispatch, vatNeeded, the
 * pipelines hook), and what it calls there may end the crank's changes
 * early or sync the tables: the host's own calls commit (kernel:revoke,
 * terminateVat, launchSubcluster), launchSubcluster aborts what it wrote
 * when a vat fails to start, and reads sync. A commit, abort or sync drops
 * only the record of a promise that is gone (one without a count, among
 * its other keys), and a forget or a clear, which drop any record, are
 * refused while a crank runs (ocap_kernel_may_forget, K:clear). So a
 * crank may keep a record across host code only while its run-queue item
 * holds a reference to that promise (a send's result, a notify's
 * promises, and through their data the promises a notify tells with
 * them): a counted promise is never gone, and the item is released only
 * after the delivery.
 */
typedef struct ocap__kp ocap__kp_t;

/*
 * The record itself is promise.c's: it is shown here only so that the
 * few calls a round trip makes a dozen times (a count up or down on a
 * record this crank already changed, its number, its state) are a few
 * inline instructions rather than a call. Nothing outside promise.c reads
 * or writes a field but through the functions of this header.
 */
typedef struct ocap__pitem {
  char *p;
  size_t len;
} ocap__pitem_t;

/* One version of a promise's keys: the record holds three, as they are
 * now, at the last commit, and in the store. */
typedef struct ocap__pver {
  int state;           /* ST_* */
  long long refs;      /* the count, -1 when it has no key */
  ocap__epc_t decider; /* 0 when none */
  ocap__epc_t sub;     /* the first subscriber, 0 when none */
  ocap__epc_t *more;   /* the other subscribers, in order, NULL when none */
  size_t nmore;        /* how many */
  char *data;          /* the settlement (capdata in krefs), NULL when none */
  size_t datalen;
  long long qtail; /* the number of parked messages */
} ocap__pver_t;

struct ocap__kp {
  long long id;          /* the N of kpN */
  int dirty;             /* listed among the records this crank changed */
  ocap__pver_t now;      /* the keys as this crank left them */
  ocap__pver_t com;      /* the keys at the last commit */
  ocap__pver_t sto;      /* the keys in the store */
  ocap__pitem_t *parked; /* the parked messages (promise.c) */
  size_t parkedcap;
  long long qbase; /* where the current ones start */
  int retaken;     /* taken since the last sync (promise.c) */
  size_t syncat;   /* its index in the sync list + 1, 0 when not listed */
};

/* The record of kpid: 0 with *out set, or a negative code. With `create`
 * unset, *out is NULL for a promise that does not exist; the getters below
 * take NULL as such a promise (no state, decider, parked messages or
 * data). */
int ocap__kp_find(ocap_kernel_t *k, const char *kpid, int create, ocap__kp_t **out);
/* The same for the promise kpN, given N (0 <= N <= COUNT_MAX), which
 * spares reading its name: the run queue keeps promises by number. */
int ocap__kp_find_id(ocap_kernel_t *k, long long id, int create, ocap__kp_t **out);
/* Writes the kpid of r into out (OCAP_REF_MAX bytes). */
void ocap__kp_name(const ocap__kp_t *r, char *out);
/* The N of r's kpid kpN. */
static inline long long ocap__kp_id(const ocap__kp_t *r) {
  return r->id;
}
static inline int ocap__kp_state(const ocap__kp_t *r) {
  return r ? r->now.state : ST_NONE;
}
/* The decider: 1 with its endpoint written to out (OCAP_REF_MAX bytes),
 * or 0 when it has none. */
int ocap__kp_decider(const ocap__kp_t *r, char *out);
static inline long long ocap__kp_parked(const ocap__kp_t *r) {
  return r ? r->now.qtail : 0;
}
/* The data (capdata in krefs), NULL when none, with its length in *len;
 * valid until the record changes. */
static inline const char *ocap__kp_data(const ocap__kp_t *r, size_t *len) {
  *len = r && r->now.data ? r->now.datalen : 0;
  return r ? r->now.data : NULL;
}
/* ocap_kernel_alloc_promise (kernel.h), giving the new record in *rec;
 * ep is an endpoint the caller checked (ocap__valid_ep), or NULL. */
int ocap__alloc_promise(ocap_kernel_t *k, const char *ep, char *out, ocap__kp_t **rec);
/* What the functions below named by kpid do, on a record found. */
int ocap__kp_set_decider(ocap_kernel_t *k, ocap__kp_t *r, const char *ep);
/* A count changes inline on a record this crank already changed, when it
 * stays in range and above 0 (the _slow functions do the rest: listing the
 * record, the range check, freeing a settled promise at 0). */
int ocap__kp_incref_slow(ocap_kernel_t *k, ocap__kp_t *r);
int ocap__kp_decref_slow(ocap_kernel_t *k, ocap__kp_t *r);
static inline int ocap__kp_incref(ocap_kernel_t *k, ocap__kp_t *r) {
  if (r->dirty && r->now.refs >= 0 && r->now.refs < COUNT_MAX) {
    r->now.refs++;
    return 0;
  }
  return ocap__kp_incref_slow(k, r);
}
static inline int ocap__kp_decref(ocap_kernel_t *k, ocap__kp_t *r) {
  if (r->dirty && r->now.refs > 1) {
    r->now.refs--;
    return 0;
  }
  return ocap__kp_decref_slow(k, r);
}
int ocap__kp_subscribe(ocap_kernel_t *k, ocap__kp_t *r, const char *ep);
int ocap__kp_settle(ocap_kernel_t *k, ocap__kp_t *r, int rejected, const char *enc, size_t len);

/* A settled promise's data (capdata in krefs), copied into b: 1, 0 when it
 * has none, or a negative code. */
int ocap__get_data(ocap_kernel_t *k, const char *kpid, ocap__buf_t *b);

/* A promise's decider: 1 with its endpoint copied to out (OCAP_REF_MAX
 * bytes), 0 when it has none, or a negative code. */
int ocap__get_decider(ocap_kernel_t *k, const char *kpid, char *out);
/* Sets the decider (NULL: nobody decides it until a delivery). */
int ocap__set_decider(ocap_kernel_t *k, const char *kpid, const char *ep);

/* A promise's state: a ST_* value (ST_NONE for a promise that does not
 * exist), or a negative code. */
int ocap__get_state(ocap_kernel_t *k, const char *kpid);

/* The kernel's reference count of a promise: c-list entries, queued
 * messages and notifies, and other promises' data. For an object, both its
 * counts (gc.h): queued and parked messages, and promises' data. */
int ocap__incref(ocap_kernel_t *k, const char *kref);
int ocap__decref(ocap_kernel_t *k, const char *kref);
/* The same for every slot of a stored capdata. */
int ocap__incref_slots(ocap_kernel_t *k, const char *enc, size_t len);
int ocap__decref_slots(ocap_kernel_t *k, const char *enc, size_t len);

/* Adds ep to the promise's subscribers (once). */
int ocap__subscribers_add(ocap_kernel_t *k, const char *kpid, const char *ep);
/* Settles kpid with data (an encoding in krefs), notifies its subscribers
 * and sends its parked messages back to the run queue. */
int ocap__settle(ocap_kernel_t *k, const char *kpid, int rejected, const char *enc, size_t len);
/* Parks a run-queue item on an unresolved promise; the item keeps its refs. */
int ocap__park(ocap_kernel_t *k, const char *kpid, const char *item, size_t len);
/* The number of messages parked on kpid (0 for none), or a negative code. */
long long ocap__parked(ocap_kernel_t *k, const char *kpid);
/* Takes every message parked on the unresolved promise kpid, for its
 * decider, which takes them now (promise pipelining): *items (malloc'd,
 * each item's p too; NULL when none) gets copies of the *n items, in
 * order, which keep their refs. */
int ocap__unpark(ocap_kernel_t *k, const char *kpid, ocap__buf_t **items, size_t *n);

#endif
