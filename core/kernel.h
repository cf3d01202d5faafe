/*
 * kernel.h -- kernel references, c-lists, promise table, run queue and the
 * crank loop. Pure C: it never touches a lua_State. Endpoints (vats and the
 * kernel's own Lua state) are reached through the deliver hook.
 *
 * The implementation is one file per concept, read in the order a message
 * takes: kernel.c (lifecycle, the send syscall, termination), refs.c
 * (references and c-lists; clist.c keeps the c-lists in memory, object.c
 * the kernel objects), queue.c
 * (the run queue), crank.c (one crank:
 * route, deliver, commit or roll back), promise.c (resolve, settle,
 * subscribers, parked messages); capdata.c and kstate.c (the kernel's
 * failures and its typed access to the store) serve them all.
 *
 * Conventions:
 *  1. krefs are "ko<N>" (objects) and "kp<N>" (promises), never reused.
 *     Endpoint refs ("erefs") are vrefs for vats ("v<N>") and remote peers
 *     ("r<N>", one per CapTP session): "o+N", "o-N", "p+N", "p-N". The
 *     kernel's own endpoint, named "kernel", uses krefs as its erefs: its
 *     c-list is the identity.
 *  2. All state lives in the store (store.h), under the keys documented in
 *     docs/storage.md, so a crank's changes commit or roll back together.
 *  3. Capdata crosses this interface as an ocap_capdata_t whose slots are
 *     erefs of the endpoint concerned; the kernel translates them.
 *  4. Functions return 0 or a negative OCAP_E* code; syscall failures that
 *     make the calling vat illegal return OCAP_EINVAL with
 *     ocap_kernel_errmsg() saying why.
 *  5. One crank = one run-queue item delivered to one endpoint, then a
 *     commit. A delivery that reports a fatal failure is rolled back and the
 *     vat is terminated in the same crank.
 */
#ifndef OCAP_KERNEL_H
#define OCAP_KERNEL_H

#include <stddef.h>

#include "store.h"

typedef struct ocap_kernel ocap_kernel_t;

#define OCAP_REF_MAX 48

typedef struct ocap_capdata {
  const char *body;
  size_t blen;
  const char *const *slots;
  size_t nslots;
} ocap_capdata_t;

typedef struct ocap_resolution {
  const char *kpid; /* eref of the promise */
  int rejected;
  ocap_capdata_t data;
} ocap_resolution_t;

/* Timer deliveries come from the host's event loop, not the run queue; their
 * `target` is the timer's id. */
enum ocap_delivery_type {
  OCAP_DELIVER_MESSAGE = 1,
  OCAP_DELIVER_NOTIFY = 2,
  OCAP_DELIVER_TIMER = 3,
  /* Garbage collection (docs/gc.md): `vrefs` lists the objects. */
  OCAP_DELIVER_DROP_EXPORTS = 4,
  OCAP_DELIVER_RETIRE_EXPORTS = 5,
  OCAP_DELIVER_RETIRE_IMPORTS = 6,
  OCAP_DELIVER_BRING_OUT_YOUR_DEAD = 7, /* a reap: nothing else */
  OCAP_DELIVER_STOP_VAT = 8             /* the heap is about to be replaced: nothing else */
};

/* A delivery to an endpoint, already translated into its erefs. */
typedef struct ocap_delivery {
  int type;
  const char *target; /* message: eref of the target object or promise */
  ocap_capdata_t methargs;
  const char *result;                   /* message: eref of the result promise, or NULL */
  const ocap_resolution_t *resolutions; /* notify */
  size_t nresolutions;
  const char *const *vrefs; /* dropExports, retireExports, retireImports */
  size_t nvrefs;
} ocap_delivery_t;

/* Why an endpoint was terminated; used in rejection messages. */
enum ocap_fatal {
  OCAP_FATAL_NONE = 0,
  OCAP_FATAL_ILLEGAL_SYSCALL,
  OCAP_FATAL_METER,
  OCAP_FATAL_MEMORY,
  OCAP_FATAL_INTERNAL,
  OCAP_FATAL_QUOTA, /* a kernel-side budget of one delivery (bytes sent, log) */
};

typedef struct ocap_kernel_hooks {
  void *ud;
  /*
   * Delivers d to endpoint ep. Returns 0, or OCAP_EFATAL after setting
   * *fatal (an ocap_fatal) and *why (malloc'd, the kernel frees it) when the
   * endpoint failed fatally: the kernel then rolls the crank back and
   * terminates the endpoint. It returns OCAP_EREFUSED after setting *why
   * (malloc'd) to a full `[KERNEL:<CODE>] <detail>` message when the
   * endpoint cannot take the delivery but must be kept (a vat that failed
   * to restart): the kernel rolls the crank back, drops the item and
   * rejects a message's result with that message. Any other negative code,
   * or a kernel failure recorded during the delivery, fails the crank (see
   * ocap_kernel_failed).
   */
  int (*deliver)(void *ud, const char *ep, const ocap_delivery_t *d, int *fatal, char **why);
  /* Called after an endpoint was terminated, so its runtime can be freed;
   * `reason` is the rejection capdata's body. */
  void (*terminated)(void *ud, const char *ep, const char *reason, size_t rlen);
  /*
   * Called before a message is routed to vat ep, before the kernel gives it
   * the message's result promise: a vat that is not running is (re)started
   * here, so a restart can reject what its previous incarnation decided
   * without touching the new message. May be NULL.
   */
  void (*prepare)(void *ud, const char *ep);
  /*
   * Promise pipelining: whether endpoint ep, which decides the unresolved
   * promise eref (its ref for it), takes a message sent to that promise
   * now, as a delivery whose target is eref, instead of the kernel keeping
   * it until the promise settles (docs/promises.md). Asked each time such a
   * message is routed, only for an endpoint that is running (it is not
   * prepared first), and after a delivery that made ep the decider of
   * its result, when messages were parked on it: a yes then has them
   * delivered to ep at once, in the same crank and in order, so that the
   * promise's messages arrive in the order they were sent. May be NULL:
   * every message then waits.
   */
  int (*pipelines)(void *ud, const char *ep, const char *eref);
  /*
   * Called when the kernel rolls back a crank's delivery and the crank
   * goes on (the endpoint failed fatally and is terminated, or refused the
   * delivery): what host code asked for during the delivery, to be done
   * after the crank, goes with it, though the crank then commits. May be
   * NULL.
   */
  void (*undone)(void *ud);
} ocap_kernel_hooks_t;

/* Opens the kernel on a store (initialising an empty one). The kernel sets
 * the store's hooks (store.h): one kernel per store, freed before the
 * store is closed. */
int ocap_kernel_new(ocap_store_t *store, const ocap_kernel_hooks_t *hooks, ocap_kernel_t **out);
/* Frees the kernel after writing its committed state into the store
 * (ocap_kernel_sync); the store is left open. */
void ocap_kernel_free(ocap_kernel_t *k);
ocap_store_t *ocap_kernel_store(ocap_kernel_t *k);
/* Why the last call failed: a kernel failure's message while one is
 * recorded (ocap_kernel_failed), else the last misuse's. */
const char *ocap_kernel_errmsg(const ocap_kernel_t *k);

/*
 * Kernel failures. A failed store call, or a stored value that cannot be
 * right (corruption), is a kernel failure, not the fault of the endpoint
 * that made the call. The first one is recorded, and the crank in progress
 * fails with it: ocap_kernel_step rolls the crank back and returns the
 * code, with ocap_kernel_errmsg() naming what failed (for corruption, the
 * key and what is wrong with its value). A failure recorded outside a crank
 * (a host call) makes the next step drop the host's uncommitted writes and
 * return it, unless the caller ends it first with ocap_kernel_abort_crank
 * (the Lua binding does, for a host call that raises it): the next step
 * then runs as usual. ocap_kernel_failed() returns the recorded code or 0;
 * ocap_kernel_note_failure() records one found outside kernel.c (the Lua
 * binding's own store calls); ocap_kernel_clear_failure() forgets it.
 */
int ocap_kernel_failed(const ocap_kernel_t *k);
int ocap_kernel_note_failure(ocap_kernel_t *k, int code, const char *what);
void ocap_kernel_clear_failure(ocap_kernel_t *k);

/*
 * Brings the store up to date with the tables the kernel writes later than
 * at each commit (the id counters, the run queue, the vats' queued bytes,
 * the promises' records, the c-lists and the objects, docs/storage.md):
 * their committed state
 * is written straight to the store's committed layer, leaving the crank
 * buffer alone, so it may be called at any time, inside a crank too. Call
 * it before flushing and before reading the store from outside the kernel.
 * Returns 0 or a negative code (a kernel failure, recorded).
 */
int ocap_kernel_sync(ocap_kernel_t *k);
/* The number of commits since the last sync, from the first one that
 * changed a table written at sync on: with the store's pending cranks,
 * what a flush would write. */
long long ocap_kernel_unsynced(const ocap_kernel_t *k);

/*
 * Testing hook: checks that every table the kernel keeps in memory
 * (docs/storage.md) holds what the store holds, as it must between a
 * commit or an abort and the next change (it syncs first). Returns 0, or OCAP_ECORRUPT
 * with ocap_kernel_errmsg() naming the first key that differs.
 */
int ocap_kernel_check(ocap_kernel_t *k);

/*
 * Tells the kernel that `key` was written in its store by someone else
 * (K:kvSet, for inspection and tests): a table the kernel keeps in memory
 * (docs/storage.md) forgets what it holds for that key, unless it has
 * uncommitted changes there, and reads the store again at next use.
 * Returns 0, or OCAP_EINVAL, forgetting nothing, when
 * ocap_kernel_may_forget says no.
 */
int ocap_kernel_forget(ocap_kernel_t *k, const char *key, size_t kl);

/*
 * Whether the kernel may forget `key` now: not while a crank runs (host
 * code called from it, ocap_kernel_step) if the key belongs to a table
 * whose records the kernel keeps in memory (promises, objects, c-lists,
 * the run queue, GC actions), since the crank holds such records across
 * the deliveries it makes. The host checks it before writing such a key
 * (K:kvSet, K:kvDelete).
 */
int ocap_kernel_may_forget(const ocap_kernel_t *k, const char *key, size_t kl);

/* Allocates the next vat id ("v<N>") into out (OCAP_REF_MAX bytes). Ids
 * and counters read from the store must be decimal integers from 0 to
 * 2^53 - 1; any other value is corruption. */
int ocap_kernel_alloc_vat_id(ocap_kernel_t *k, char *out);
/* Allocates the next remote peer's endpoint id ("r<N>", counter
 * `nextPeerId`): one per CapTP session, never reused, so that a c-list
 * left by a session that ended with the kernel is never taken for a new
 * one's (docs/remote.md). */
int ocap_kernel_alloc_peer_id(ocap_kernel_t *k, char *out);
/* The number of entries of ep's c-list whose kref starts with `kind`
 * ("k" for all, "ko" objects, "kp" promises), or a negative code; 0 for
 * the kernel endpoint, whose c-list is the identity. */
long ocap_kernel_clist_size(ocap_kernel_t *k, const char *ep, const char *kind);
/* The next id that ocap_kernel_alloc_* will give out for kind 'o'
 * (objects), 'p' (promises) or 'v' (vats), or a negative code. */
long long ocap_kernel_next_id(ocap_kernel_t *k, char kind);
/* Allocates a kernel object owned by ep, or a promise decided by ep. */
int ocap_kernel_alloc_object(ocap_kernel_t *k, const char *ep, char *out);
int ocap_kernel_alloc_promise(ocap_kernel_t *k, const char *ep, char *out);

/* Maps an eref of ep to its kref, exporting it when it is a new export.
 * For the kernel endpoint the eref is a kref, which, like the kref of
 * ocap_kernel_kref_to_eref, must be one the kernel gave out, spelled as it
 * writes it: any other is OCAP_EINVAL (`invalid kref '<s>'`, or `unknown
 * kref '<s>'` for an id not allocated yet), and nothing is changed. */
int ocap_kernel_eref_to_kref(ocap_kernel_t *k, const char *ep, const char *eref, char *out);
/* Maps a kref to ep's eref, importing it when ep does not know it yet. */
int ocap_kernel_kref_to_eref(ocap_kernel_t *k, const char *ep, const char *kref, char *out);

/* The kref ep's eref stands for, without exporting: 1 with it in out
 * (OCAP_REF_MAX bytes), 0 when ep's c-list does not have eref (or ep is
 * not a vat), or a negative code. */
int ocap_kernel_kref_of(ocap_kernel_t *k, const char *ep, const char *eref, char *out);

/* Syscalls, with erefs of the calling endpoint ep. A send with a result
 * subscribes ep to that result. */
int ocap_kernel_send(ocap_kernel_t *k, const char *ep, const char *target,
                     const ocap_capdata_t *methargs, const char *result);
int ocap_kernel_subscribe(ocap_kernel_t *k, const char *ep, const char *kpid);
int ocap_kernel_resolve(ocap_kernel_t *k, const char *ep, const ocap_resolution_t *r, size_t n);

/*
 * Runs one crank. Returns 1 when an item was delivered, 0 when the run
 * queue is empty, or a negative code on a kernel (not vat) failure.
 */
int ocap_kernel_step(ocap_kernel_t *k);
/*
 * Ends a crank that failed with code rc (a crank run outside
 * ocap_kernel_step, such as a timer's), or host calls since the last
 * commit one of which met a kernel failure: the writes since the last
 * commit are dropped, and a recorded kernel failure is cleared, its
 * message kept for ocap_kernel_errmsg(). Returns the failure's code (rc
 * when none).
 */
int ocap_kernel_abort_crank(ocap_kernel_t *k, int rc);
/* Bytes of vat ep's messages waiting in the kernel: in the run queue or
 * parked on unresolved promises (0 for the kernel endpoint). */
long long ocap_kernel_queued_bytes(ocap_kernel_t *k, const char *ep);
/* Number of items in the run queue, or a negative code. */
long long ocap_kernel_queue_length(ocap_kernel_t *k);
/* Number of cranks run since the kernel was opened. */
long long ocap_kernel_cranks(const ocap_kernel_t *k);

/*
 * Terminates endpoint ep: its objects become deleted, promises it decides
 * are rejected with `reason` (a plain-data capdata), its c-list is removed.
 */
int ocap_kernel_terminate(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *reason);

/*
 * Terminates ep because it failed fatally (ocap_fatal) for reason `why`:
 * its promises are rejected with `[KERNEL:VAT_FATAL:<CODE>] ...`. If
 * `result` is not NULL, that promise is rejected the same way.
 */
int ocap_kernel_crash(ocap_kernel_t *k, const char *ep, int fatal, const char *why,
                      const char *result);

/*
 * Rejects every unresolved promise ep decides with `reason`: used when a
 * vat restarts, since the heap that would have resolved them is gone.
 */
int ocap_kernel_reject_decided(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *reason);

/* Revocation (issue #4): permanent; a promise cannot be revoked. */
int ocap_kernel_revoke(ocap_kernel_t *k, const char *kref);
int ocap_kernel_is_revoked(ocap_kernel_t *k, const char *kref);

/*
 * Garbage collection (docs/gc.md). The four GC syscalls, with erefs of ep
 * (krefs for the kernel endpoint): each checks every ref and fails with
 * OCAP_EINVAL (an illegal syscall) at the first one that is not what the
 * call takes; the crank then rolls back, so nothing is half done.
 *   drop_imports: imports ep still reaches; they stay recognized.
 *   retire_imports: imports ep dropped; its entries go.
 *   retire_exports: exports ep was told nobody reaches; the object is
 *     deleted, and every endpoint still recognizing it is told.
 *   abandon_exports: exports of ep; the object loses its owner.
 */
int ocap_kernel_drop_imports(ocap_kernel_t *k, const char *ep, const char *const *refs, size_t n);
int ocap_kernel_retire_imports(ocap_kernel_t *k, const char *ep, const char *const *refs, size_t n);
int ocap_kernel_retire_exports(ocap_kernel_t *k, const char *ep, const char *const *refs, size_t n);
int ocap_kernel_abandon_exports(ocap_kernel_t *k, const char *ep, const char *const *refs,
                                size_t n);
/* Calls each(ud, vref) for every import of vat ep the kernel counts
 * reachable from it (its c-list entries not dropped), until it returns
 * nonzero (which is returned). */
int ocap_kernel_reachable_imports(ocap_kernel_t *k, const char *ep,
                                  int (*each)(void *ud, const char *vref), void *ud);
/* Keeps an object whatever its counts (vat roots, kernel services), until
 * its owner is terminated. */
int ocap_kernel_pin(ocap_kernel_t *k, const char *kref);
/* Queues a reap (bringOutYourDead) of ep, once; reaps run after GC
 * actions and before the run queue. Kept in memory only. */
int ocap_kernel_schedule_reap(ocap_kernel_t *k, const char *ep);
/* GC actions and reaps waiting, or a negative code. */
long long ocap_kernel_gc_work(ocap_kernel_t *k);

/* Helpers for the capdata encoding used in the store ("slots\nbody"). */
char *ocap_capdata_encode(const ocap_capdata_t *cd, size_t *len);

#endif
