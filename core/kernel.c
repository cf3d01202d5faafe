/*
 * kernel.c -- the kernel's lifecycle, the send syscall and termination.
 *
 * The path of one message, in the order it happens: ocap_kernel_send
 * (here) translates the sender's vrefs through its c-list (refs.c) and
 * appends a send item to the run queue (queue.c); ocap_kernel_step
 * (crank.c) pops it, routes it and delivers it, translating krefs into the
 * receiver's vrefs (refs.c); the receiver's resolve syscall settles the
 * result promise (promise.c), which queues a notify to the sender; the
 * next crank delivers that notify. kstate.c holds what they share: the
 * kernel's failures and its typed access to the store.
 */
#include "kernel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capdata.h"
#include "clist.h"
#include "gc.h"
#include "object.h"
#include "promise.h"
#include "queue.h"
#include "refs.h"

/*
 * The store's hooks (kstate.h, convention 6): whoever commits or aborts the
 * store, the tables kept in memory commit or roll back with it. A failed
 * write in prepare is a kernel failure like any other, so the crank (or the
 * host call) that made the changes fails.
 */
static int tables_prepare(void *ud) {
  ocap_kernel_t *k = ud;
  /* GC first: it turns the crank's candidates into actions, reading the
   * objects' final counts. */
  int rc = ocap__gc_prepare(k);
  /* The id counters, the run queue, the promises, the c-lists and the
   * objects are written by ocap_kernel_sync, not at each commit. */
  return rc;
}

/* Whether a table written at sync holds committed state the store lacks. */
static int unsynced(ocap_kernel_t *k) {
  return ocap__counters_unsynced(k) || ocap__queue_unsynced(k) || ocap__promises_unsynced(k) ||
         ocap__clists_unsynced(k) || ocap__objects_unsynced(k);
}

static void tables_done(void *ud) {
  ocap_kernel_t *k = ud;
  ocap__counters_done(k);
  ocap__queue_done(k);
  ocap__promises_done(k);
  ocap__clists_done(k);
  ocap__objects_done(k);
  ocap__gc_done(k);
  /* Once a commit since the last sync left something unsynced, every
   * later one counts without asking the tables again (only a sync writes
   * what they hold; a count too high only makes it come sooner). */
  if (k->unsynced_commits > 0 || unsynced(k))
    k->unsynced_commits++;
}

static void tables_abort(void *ud, int cleared) {
  ocap_kernel_t *k = ud;
  ocap__counters_abort(k, cleared);
  ocap__queue_abort(k, cleared);
  ocap__promises_abort(k, cleared);
  ocap__clists_abort(k, cleared);
  ocap__objects_abort(k, cleared);
  ocap__gc_abort(k, cleared);
}

int ocap__kernel_changed(ocap_kernel_t *k) {
  return ocap_store_buffered(k->s) > 0 || memcmp(k->next, k->cnext, sizeof k->next) != 0 ||
         ocap__queue_changed(k) || ocap__promises_changed(k) || ocap__clists_changed(k) ||
         ocap__objects_changed(k) || ocap__gc_changed(k);
}

/* Writes what the tables written at sync have committed and the store
 * lacks (ocap_kernel_sync), into the buffer of a direct commit. */
static int tables_fill(void *ud) {
  ocap_kernel_t *k = ud;
  int rc = ocap__counters_fill(k);
  if (!rc)
    rc = ocap__queue_fill(k);
  if (!rc)
    rc = ocap__promises_fill(k);
  if (!rc)
    rc = ocap__clists_fill(k);
  return rc ? rc : ocap__objects_fill(k);
}

int ocap_kernel_sync(ocap_kernel_t *k) {
  if (!unsynced(k))
    return 0;
  int rc = ocap_store_commit_direct(k->s, tables_fill, k);
  if (rc) {
    if (!k->err) /* fill records its own failures */
      ocap__broken(k, rc, "store commit of the kernel's tables failed: %s", ocap_strerror(rc));
    return rc;
  }
  ocap__counters_synced(k);
  ocap__queue_synced(k);
  ocap__promises_synced(k);
  ocap__clists_synced(k);
  ocap__objects_synced(k);
  k->unsynced_commits = 0;
  return 0;
}

long long ocap_kernel_unsynced(const ocap_kernel_t *k) {
  return k->unsynced_commits;
}

int ocap_kernel_check(ocap_kernel_t *k) {
  int rc = ocap_kernel_sync(k);
  if (rc)
    return rc;
  rc = ocap__counters_check(k);
  if (!rc)
    rc = ocap__queue_check(k);
  if (!rc)
    rc = ocap__promises_check(k);
  if (!rc)
    rc = ocap__clists_check(k);
  if (!rc)
    rc = ocap__objects_check(k);
  return rc ? rc : ocap__gc_check(k);
}

/* The table of the kernel that keeps a NUL-terminated key in memory, and
 * in *dot the key's first dot (NULL when it has none). */
enum {
  TABLE_COUNTERS,
  TABLE_QUEUE,
  TABLE_GC,
  TABLE_OBJECTS,
  TABLE_PROMISES,
  TABLE_QUEUED,
  TABLE_CLISTS
};
static int key_table(const char *key, const char **dot) {
  *dot = strchr(key, '.');
  if (strncmp(key, "runQueue.", 9) == 0)
    return TABLE_QUEUE;
  if (strncmp(key, "gcAction.", 9) == 0)
    return TABLE_GC;
  if (strncmp(key, "ko", 2) == 0 && *dot)
    return TABLE_OBJECTS;
  if (strncmp(key, "kp", 2) == 0 && *dot)
    return TABLE_PROMISES;
  if (*dot && strcmp(*dot, ".queuedBytes") == 0)
    return TABLE_QUEUED;
  if (*dot && (strncmp(*dot, ".c.", 3) == 0 || strcmp(*dot, ".nextObjectId") == 0 ||
               strcmp(*dot, ".nextPromiseId") == 0))
    return TABLE_CLISTS;
  return TABLE_COUNTERS;
}

int ocap_kernel_may_forget(const ocap_kernel_t *k, const char *key, size_t kl) {
  char buf[KEY_MAX];
  const char *dot;
  if (!k->cranking || kl >= sizeof buf || memchr(key, '\0', kl))
    return 1;
  memcpy(buf, key, kl);
  buf[kl] = '\0';
  return key_table(buf, &dot) == TABLE_COUNTERS;
}

int ocap_kernel_forget(ocap_kernel_t *k, const char *key, size_t kl) {
  char buf[KEY_MAX];
  const char *dot;
  if (!ocap_kernel_may_forget(k, key, kl))
    return OCAP_EINVAL;
  if (kl >= sizeof buf || memchr(key, '\0', kl))
    return 0;
  memcpy(buf, key, kl);
  buf[kl] = '\0';
  int table = key_table(buf, &dot);
  if (table != TABLE_QUEUE && table != TABLE_GC && table != TABLE_COUNTERS)
    buf[dot - buf] = '\0'; /* the record's name */
  switch (table) {
  case TABLE_QUEUE:
    ocap__queue_forget(k);
    break;
  case TABLE_GC:
    ocap__gc_forget(k);
    break;
  case TABLE_OBJECTS:
    ocap__objects_forget(k, buf);
    break;
  case TABLE_PROMISES:
    ocap__promises_forget(k, buf);
    break;
  case TABLE_QUEUED:
    ocap__queued_forget(k, buf);
    break;
  case TABLE_CLISTS:
    ocap__clists_forget(k, buf);
    break;
  default:
    ocap__counters_forget(k, buf);
  }
  return 0;
}

int ocap_kernel_new(ocap_store_t *store, const ocap_kernel_hooks_t *hooks, ocap_kernel_t **out) {
  ocap_kernel_t *k = calloc(1, sizeof *k);
  if (!k || ocap__queue_new(k) || ocap__promises_new(k) || ocap__clists_new(k) ||
      ocap__objects_new(k) || ocap__gc_new(k)) {
    if (k) {
      ocap__queue_free(k);
      ocap__promises_free(k);
      ocap__clists_free(k);
      ocap__objects_free(k);
    }
    free(k);
    return OCAP_ENOMEM;
  }
  k->s = store;
  k->hooks = *hooks;
  ocap_store_hooks_t sh = {k, tables_prepare, tables_done, tables_abort};
  ocap_store_set_hooks(store, &sh);
  *out = k;
  return 0;
}

void ocap_kernel_free(ocap_kernel_t *k) {
  if (!k)
    return;
  /* The store keeps what was committed: a kernel opened on it next must
   * find the tables written later than at each commit too, and the id
   * counters as they are rather than their bounds. */
  k->ids_exact = 1;
  /* Out of memory listing the c-lists: the bounds stay, which are right
   * too (a kernel opened next only skips ids), and the tables are still
   * written, or the store's pending cranks would be flushed without them. */
  if (ocap__clists_exact(k) != 0)
    k->ids_exact = 0;
  ocap_kernel_sync(k);
  ocap_store_set_hooks(k->s, NULL);
  ocap__queue_free(k);
  ocap__promises_free(k);
  ocap__clists_free(k);
  ocap__objects_free(k);
  ocap__gc_free(k);
  free(k);
}

ocap_store_t *ocap_kernel_store(ocap_kernel_t *k) {
  return k->s;
}

const char *ocap_kernel_errmsg(const ocap_kernel_t *k) {
  return k->err ? k->brokenmsg : k->errmsg;
}

void ocap_kernel_clear_failure(ocap_kernel_t *k) {
  k->err = 0;
  k->brokenmsg[0] = '\0';
}

long long ocap_kernel_cranks(const ocap_kernel_t *k) {
  return k->cranks;
}

/* Writes "<prefix><N>" into out with the next value of counter ctr: vat
 * and peer endpoint ids are one letter and a number that is never reused. */
static int alloc_endpoint_id(ocap_kernel_t *k, int ctr, char prefix, char *out) {
  long long n;
  int rc = ocap__bump(k, ctr, &n);
  if (rc)
    return rc;
  out[0] = prefix;
  out[1 + ocap__fmt_ll(out + 1, n)] = '\0';
  return 0;
}

int ocap_kernel_alloc_vat_id(ocap_kernel_t *k, char *out) {
  return alloc_endpoint_id(k, CTR_VAT, 'v', out);
}

int ocap_kernel_alloc_peer_id(ocap_kernel_t *k, char *out) {
  return alloc_endpoint_id(k, CTR_PEER, 'r', out);
}

static int count_ref(void *ud, const char *ref) {
  (void)ref;
  ++*(long *)ud;
  return 0;
}

long ocap_kernel_clist_size(ocap_kernel_t *k, const char *ep, const char *kind) {
  long n = 0;
  int rc = ocap__check_ep(k, ep);
  if (!rc && !ocap__is_kernel_ep(ep))
    rc = ocap__clist_each(k, ep, kind, count_ref, &n);
  return rc ? rc : n;
}

/* The rest of a send whose target (tk) and result (rk, NULL for none, its
 * record rrec) are krefs already. */
static int send_krefs(ocap_kernel_t *k, const char *ep, const char *tk, const char *rk,
                      ocap__kp_t *rrec, const ocap_capdata_t *methargs) {
  int rc = 0;
  /* Until it is delivered, nobody decides a result promise: the kernel
   * will hand that right to the vat that receives the message. */
  if (rk)
    rc = ocap__kp_set_decider(k, rrec, NULL);
  if (!rc)
    rc = ocap__enqueue_send(k, tk, rk, rrec, ep, methargs, ep[0] == 'v' ? ep : NULL);
  /* The sender always wants its result: subscribe it here, which saves
   * every send a subscribe syscall. */
  if (!rc && rk)
    rc = ocap__kp_subscribe(k, rrec, ep);
  return rc;
}

int ocap_kernel_send(ocap_kernel_t *k, const char *ep, const char *target,
                     const ocap_capdata_t *methargs, const char *result) {
  char tk[OCAP_REF_MAX], rk[OCAP_REF_MAX];
  ocap__kp_t *rrec = NULL; /* the result's record, found once */
  int rc = ocap_kernel_eref_to_kref(k, ep, target, tk);
  if (rc)
    return rc;
  if (result) {
    if (!ocap__is_kernel_ep(ep)) {
      rc = ocap__export_result(k, ep, result, rk, &rrec);
    } else {
      /* The host's result is a promise it allocated: one the kernel has
       * no record of (allocated in a crank that was aborted, or already
       * freed) is refused, not made again. */
      rc = ocap_kernel_eref_to_kref(k, ep, result, rk);
      if (!rc)
        rc = ocap__kp_find(k, rk, 0, &rrec);
      if (!rc && !rrec)
        rc = ocap__fail(k, OCAP_EINVAL, "unknown kref '%.60s'", result);
    }
    if (rc)
      return rc;
  }
  return send_krefs(k, ep, tk, result ? rk : NULL, rrec, methargs);
}

int ocap__kernel_send_pe(ocap_kernel_t *k, const char *ep, const char *target,
                         const ocap_capdata_t *methargs, long long n) {
  char tk[OCAP_REF_MAX], rk[OCAP_REF_MAX];
  ocap__kp_t *rrec = NULL;
  int rc = ocap_kernel_eref_to_kref(k, ep, target, tk);
  if (!rc)
    rc = ocap__export_result_pe(k, ep, n, rk, &rrec);
  return rc ? rc : send_krefs(k, ep, tk, rk, rrec, methargs);
}

/*
 * Deletes every key under prefix. Each deleted key is where the next scan
 * starts, so no scan walks again over what was deleted and the whole
 * deletion is linear in the number of keys.
 */
static int delete_prefix(ocap_kernel_t *k, const char *prefix, size_t plen) {
  ocap__buf_t last = {0};
  const char *key;
  size_t klen;
  int inclusive = 1, rc = 0;
  if (ocap__buf_add(&last, prefix, plen))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory deleting %s", prefix);
  for (;;) {
    rc = ocap_store_next_key(k->s, prefix, plen, last.p, last.len, inclusive, &key, &klen);
    if (rc <= 0) {
      if (rc < 0)
        rc = ocap__store_failed(k, rc, "scan", prefix, plen);
      break;
    }
    inclusive = 0;
    last.len = 0;
    if (ocap__buf_add(&last, key, klen)) { /* key is the store's until its next call */
      rc = ocap__broken(k, OCAP_ENOMEM, "out of memory deleting %s", prefix);
      break;
    }
    rc = ocap_store_delete(k->s, last.p, last.len);
    if (rc) {
      rc = ocap__store_failed(k, rc, "delete", last.p, last.len);
      break;
    }
  }
  free(last.p);
  return rc;
}

int ocap_kernel_terminate(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *reason) {
  if (ocap__is_kernel_ep(ep))
    return ocap__fail(k, OCAP_EINVAL, "the kernel endpoint cannot be terminated");
  int rc = ocap__check_ep(k, ep);
  if (rc)
    return rc;
  ocap__buf_t enc = {0};
  rc = ocap__capdata_e2k(k, "kernel", reason, &enc);
  char(*krefs)[OCAP_REF_MAX] = NULL;
  long got = rc ? 0 : ocap__clist_krefs(k, ep, "k", &krefs);
  if (got < 0)
    rc = (int)got;
  size_t n = got > 0 ? (size_t)got : 0;
  for (size_t i = 0; i < n && !rc; i++) {
    char v[OCAP_REF_MAX];
    const char *kref = krefs[i];
    if (ocap__is_kpid(kref)) {
      rc = ocap__get_decider(k, kref, v);
      if (rc > 0)
        rc = strcmp(v, ep) == 0 ? ocap__settle(k, kref, 1, enc.p, enc.len) : 0;
    } else {
      rc = ocap__get_owner(k, kref, v);
      if (rc > 0)
        rc = strcmp(v, ep) == 0 ? ocap__set_owner(k, kref, NULL) : 0;
    }
    if (!rc)
      rc = ocap__clist_remove(k, ep, kref);
  }
  free(krefs);
  free(enc.p);
  /* The vat's own store goes with it. */
  char prefix[KEY_MAX];
  int plen = snprintf(prefix, sizeof prefix, "vs.%s.", ep);
  if (!rc)
    rc = delete_prefix(k, prefix, (size_t)plen);
  if (!rc)
    rc = ocap__clist_clear_ids(k, ep);
  if (!rc)
    rc = ocap__clear_queued(k, ep);
  if (!rc && k->hooks.terminated)
    k->hooks.terminated(k->hooks.ud, ep, reason->body, reason->blen);
  return rc;
}
