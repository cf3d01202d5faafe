/*
 * object.h -- kernel objects: who owns each one, whether it is revoked
 * (internal to the kernel; see kstate.h).
 *
 * An object is `ko<N>.owner` (the endpoint that exports it; gone once the
 * object is deleted), `ko<N>.revoked`, and for garbage collection (gc.h)
 * `ko<N>.refCount` (its reachable and recognizable counts), `ko<N>.pinned`
 * and `ko<N>.dropped` (docs/storage.md). All are kept in memory (kstate.h,
 * convention 6) and written when the kernel syncs.
 */
#ifndef OCAP_OBJECT_H
#define OCAP_OBJECT_H

#include "kstate.h"

int ocap__objects_new(ocap_kernel_t *k);
void ocap__objects_free(ocap_kernel_t *k);
void ocap__objects_done(ocap_kernel_t *k);
void ocap__objects_abort(ocap_kernel_t *k, int cleared);
/* The objects are written when the kernel syncs, not at commit
 * (ocap_kernel_sync): whether a record's committed values may be missing
 * from the store, the writes of those values (into the sync's buffer), and
 * the note that the store has them. */
int ocap__objects_unsynced(ocap_kernel_t *k);
/* Whether an object changed since the last commit or abort. */
int ocap__objects_changed(ocap_kernel_t *k);
int ocap__objects_fill(ocap_kernel_t *k);
void ocap__objects_synced(ocap_kernel_t *k);
void ocap__objects_forget(ocap_kernel_t *k, const char *koid);

/* The owner of koid: 1 with it in out (OCAP_REF_MAX bytes), 0 when the
 * object has none (deleted, or never was), or a negative code. */
int ocap__get_owner(ocap_kernel_t *k, const char *koid, char *out);
/* Where a message to koid goes, with one lookup: 2 when the object is
 * revoked, else 1 with its owner in out as ocap__get_owner, 0 when it has
 * none, or a negative code. */
int ocap__get_target(ocap_kernel_t *k, const char *koid, char *out);
/* The same for the object koN, given N (0 <= N <= COUNT_MAX), which
 * spares reading its name. */
int ocap__ko_target(ocap_kernel_t *k, long long id, char *owner);
/* Sets the owner (NULL: the object is deleted). */
int ocap__set_owner(ocap_kernel_t *k, const char *koid, const char *ep);
/* Whether koid is revoked: 1, 0, or a negative code. */
int ocap__get_revoked(ocap_kernel_t *k, const char *koid);
/* Revokes koid, for good. */
int ocap__set_revoked(ocap_kernel_t *k, const char *koid);

/* What garbage collection knows of an object. */
typedef struct ocap__objinfo {
  char owner[OCAP_REF_MAX]; /* "" when deleted */
  long long reachable, recognizable;
  int pinned;  /* the kernel keeps it whatever its counts */
  int dropped; /* its owner was told nobody reaches it (dropExports) */
} ocap__objinfo_t;

/* Fills *out: 1 when the object has a record, 0 (all zero) when not, or a
 * negative code. */
int ocap__obj_info(ocap_kernel_t *k, const char *koid, ocap__objinfo_t *out);
/* Adds dreach and drecog to the counts; a count that drops to 0 makes the
 * object a candidate for gc.c at the end of the crank. A count that would
 * go below 0 (or reachable above recognizable) is corruption. */
int ocap__obj_count(ocap_kernel_t *k, const char *koid, int dreach, int drecog);
/* The same for the object koN, given N (0 <= N <= COUNT_MAX). */
int ocap__ko_count(ocap_kernel_t *k, long long id, int dreach, int drecog);
enum { OBJ_PINNED = 1, OBJ_DROPPED = 2 };
/* Sets or clears one of the flags above. */
int ocap__obj_set_flag(ocap_kernel_t *k, const char *koid, int flag, int on);

#endif
