/*
 * object.h -- kernel objects: who owns each one, whether it is revoked
 * (internal to the kernel; see kstate.h).
 *
 * An object is `ko<N>.owner` (the endpoint that exports it; gone once the
 * object is deleted) and `ko<N>.revoked` (docs/storage.md). Both are kept
 * in memory (kstate.h, convention 6), in a record that has room for the
 * reachable and recognizable counts garbage collection will keep.
 */
#ifndef OCAP_OBJECT_H
#define OCAP_OBJECT_H

#include "kstate.h"

int ocap__objects_new(ocap_kernel_t *k);
void ocap__objects_free(ocap_kernel_t *k);
int ocap__objects_prepare(ocap_kernel_t *k);
void ocap__objects_done(ocap_kernel_t *k);
void ocap__objects_abort(ocap_kernel_t *k, int cleared);
void ocap__objects_forget(ocap_kernel_t *k, const char *koid);

/* The owner of koid: 1 with it in out (OCAP_REF_MAX bytes), 0 when the
 * object has none (deleted, or never was), or a negative code. */
int ocap__get_owner(ocap_kernel_t *k, const char *koid, char *out);
/* Sets the owner (NULL: the object is deleted). */
int ocap__set_owner(ocap_kernel_t *k, const char *koid, const char *ep);
/* Whether koid is revoked: 1, 0, or a negative code. */
int ocap__get_revoked(ocap_kernel_t *k, const char *koid);
/* Revokes koid, for good. */
int ocap__set_revoked(ocap_kernel_t *k, const char *koid);

#endif
