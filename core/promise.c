/*
 * promise.c -- kernel promises (see promise.h): allocation, reference
 * counts, subscribers, the subscribe and resolve syscalls, settlement, and
 * the messages parked on a promise until it settles.
 */
#include "promise.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capdata.h"
#include "queue.h"
#include "refs.h"

/* The kernel's reference count of a promise: c-list entries, queued
 * messages and notifies, and other promises' resolutions that mention it. */
int ocap__incref(ocap_kernel_t *k, const char *kref) {
  if (!ocap__is_kpid(kref))
    return 0;
  long long n;
  int rc = ocap__get_count(k, 0, &n, "%s.refCount", kref);
  return rc ? rc : ocap__seti(k, n + 1, "%s.refCount", kref);
}

static int free_promise(ocap_kernel_t *k, const char *kpid) {
  ocap__buf_t data = {0};
  int had = ocap__getb(k, &data, "%s.data", kpid);
  int rc = had < 0 ? had : 0;
  /* Only settled promises are freed, and settling removed the decider,
   * subscribers and queue already. */
  if (!rc)
    rc = ocap__delv(k, "%s.state", kpid);
  if (!rc)
    rc = ocap__delv(k, "%s.data", kpid);
  if (!rc)
    rc = ocap__delv(k, "%s.refCount", kpid);
  if (!rc && had > 0)
    rc = ocap__decref_slots(k, data.p, data.len);
  free(data.p);
  return rc;
}

int ocap__decref(ocap_kernel_t *k, const char *kref) {
  if (!ocap__is_kpid(kref))
    return 0;
  long long n;
  int rc = ocap__get_count(k, 0, &n, "%s.refCount", kref);
  if (rc)
    return rc;
  if (n > 1)
    return ocap__seti(k, n - 1, "%s.refCount", kref);
  int st = ocap__get_state(k, kref);
  if (st < 0)
    return st;
  if (st == ST_FULFILLED || st == ST_REJECTED)
    return free_promise(k, kref);
  /* An unresolved promise lives on while its decider can still resolve it. */
  return ocap__seti(k, 0, "%s.refCount", kref);
}

int ocap__incref_slots(ocap_kernel_t *k, const char *enc, size_t len) {
  if (len && enc[0] == '\n')
    return 0; /* no slots: the common case, without parsing */
  ocap__pcap_t p;
  int rc = ocap__pcap_load(k, &p, enc, len, "a capdata the kernel holds");
  for (size_t i = 0; i < p.nslots && !rc; i++)
    rc = ocap__incref(k, p.slotv[i]);
  ocap__pcap_free(&p);
  return rc;
}

int ocap__decref_slots(ocap_kernel_t *k, const char *enc, size_t len) {
  if (len && enc[0] == '\n')
    return 0;
  ocap__pcap_t p;
  int rc = ocap__pcap_load(k, &p, enc, len, "a capdata the kernel holds");
  for (size_t i = 0; i < p.nslots && !rc; i++)
    rc = ocap__decref(k, p.slotv[i]);
  ocap__pcap_free(&p);
  return rc;
}

int ocap_kernel_alloc_promise(ocap_kernel_t *k, const char *ep, char *out) {
  long long n;
  int rc = ep ? ocap__check_ep(k, ep) : 0;
  if (!rc)
    rc = ocap__bump(k, CTR_PROMISE, &n);
  if (rc)
    return rc;
  memcpy(out, "kp", 2);
  out[2 + ocap__fmt_ll(out + 2, n)] = '\0';
  rc = ocap__setv(k, "unresolved", "%s.state", out);
  if (!rc && ep)
    rc = ocap__setv(k, ep, "%s.decider", out);
  if (!rc)
    rc = ocap__seti(k, 0, "%s.refCount", out);
  return rc;
}

/* Whether the space-separated list s (n bytes) holds the word w. */
static int has_word(const char *s, size_t n, const char *w) {
  size_t wl = strlen(w);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && s[j] != ' ')
      j++;
    if (j - i == wl && memcmp(s + i, w, wl) == 0)
      return 1;
    i = j + 1;
  }
  return 0;
}

/* Adds ep to the promise's subscribers (read whole: the list has no size
 * limit). */
int ocap__subscribers_add(ocap_kernel_t *k, const char *kpid, const char *ep) {
  ocap__buf_t b = {0};
  int rc = ocap__getb(k, &b, "%s.subscribers", kpid);
  if (rc > 0 && has_word(b.p, b.len, ep)) {
    free(b.p);
    return 0;
  }
  if (rc >= 0) {
    if ((rc > 0 && ocap__buf_add(&b, " ", 1)) || ocap__buf_adds(&b, ep))
      rc = ocap__broken(k, OCAP_ENOMEM, "out of memory adding a subscriber");
    else
      rc = ocap__setn(k, b.p, b.len, "%s.subscribers", kpid);
  }
  free(b.p);
  return rc;
}

int ocap_kernel_subscribe(ocap_kernel_t *k, const char *ep, const char *vpid) {
  char kpid[OCAP_REF_MAX];
  if (vpid[0] != 'p' && !ocap__is_kpid(vpid))
    return ocap__fail(k, OCAP_EINVAL, "%s subscribed to non-promise '%.60s'", ep, vpid);
  int rc = ocap_kernel_eref_to_kref(k, ep, vpid, kpid);
  if (rc)
    return rc;
  int st = ocap__get_state(k, kpid);
  if (st < 0)
    return st;
  if (st == ST_NONE)
    return ocap__fail(k, OCAP_EINVAL, "%s subscribed to unknown promise '%s'", ep, vpid);
  if (st != ST_UNRESOLVED)
    return ocap__enqueue_notify(k, ep, kpid);
  /* The decider may subscribe too: once it resolves, its c-list entry is
   * retired and the notify finds nothing to tell it. */
  return ocap__subscribers_add(k, kpid, ep);
}

/* Settles kpid with data (an encoding in krefs) and schedules everything
 * that was waiting for it. */
int ocap__settle(ocap_kernel_t *k, const char *kpid, int rejected, const char *enc, size_t len) {
  int rc = ocap__setv(k, rejected ? "rejected" : "fulfilled", "%s.state", kpid);
  if (!rc)
    rc = ocap__setn(k, enc, len, "%s.data", kpid);
  if (!rc)
    rc = ocap__incref_slots(k, enc, len);
  if (!rc)
    rc = ocap__delv(k, "%s.decider", kpid);
  ocap__buf_t subs = {0};
  int got = rc ? 0 : ocap__getb(k, &subs, "%s.subscribers", kpid);
  if (got < 0)
    rc = got;
  if (got > 0) {
    rc = ocap__delv(k, "%s.subscribers", kpid);
    char ep[OCAP_REF_MAX];
    for (size_t i = 0; i < subs.len && !rc;) {
      size_t j = i;
      while (j < subs.len && subs.p[j] != ' ')
        j++;
      int ok = j > i && j - i < OCAP_REF_MAX;
      if (ok) {
        memcpy(ep, subs.p + i, j - i);
        ep[j - i] = '\0';
        ok = ocap__valid_ep(ep);
      }
      if (!ok) {
        char key[KEY_MAX];
        snprintf(key, sizeof key, "%s.subscribers", kpid);
        rc = ocap__corrupt(k, key, subs.p, subs.len, "a list of endpoints");
        break;
      }
      rc = ocap__enqueue_notify(k, ep, kpid);
      i = j + 1;
    }
  }
  free(subs.p);
  /* Messages parked on the promise go back to the run queue, in order, still
   * addressed to the promise; routing them again follows the resolution.
   * They are numbered from 0 without gaps, so a missing one is corruption
   * (and a queueTail too large is found at its first missing item). */
  long long tail = 0;
  if (!rc)
    rc = ocap__get_count(k, 0, &tail, "%s.queueTail", kpid);
  ocap__buf_t item = {0};
  for (long long i = 0; i < tail && !rc; i++) {
    got = ocap__getb(k, &item, "%s.queue.%lld", kpid, i);
    if (got == 0)
      rc = ocap__broken(k, OCAP_ECORRUPT,
                        "corrupt database: message %lld of the %lld parked on %s is missing", i,
                        tail, kpid);
    else if (got < 0)
      rc = got;
    if (!rc)
      rc = ocap__enqueue(k, item.p, item.len);
    if (!rc)
      rc = ocap__delv(k, "%s.queue.%lld", kpid, i);
  }
  free(item.p);
  if (!rc && tail > 0)
    rc = ocap__delv(k, "%s.queueTail", kpid);
  return rc;
}

int ocap_kernel_resolve(ocap_kernel_t *k, const char *ep, const ocap_resolution_t *r, size_t n) {
  char kpid[OCAP_REF_MAX], decider[OCAP_REF_MAX];
  for (size_t i = 0; i < n; i++) {
    int rc = ocap_kernel_eref_to_kref(k, ep, r[i].kpid, kpid);
    if (rc)
      return rc;
    if (!ocap__is_kpid(kpid))
      return ocap__fail(k, OCAP_EINVAL, "%s resolved non-promise '%s'", ep, r[i].kpid);
    int st = ocap__get_state(k, kpid);
    if (st < 0)
      return st;
    if (st != ST_UNRESOLVED)
      return ocap__fail(k, OCAP_EINVAL, "%s resolved '%s', which is already settled", ep,
                        r[i].kpid);
    rc = ocap__get_ref(k, decider, "%s.decider", kpid);
    if (rc < 0)
      return rc;
    if (rc == 0 || strcmp(decider, ep) != 0)
      return ocap__fail(k, OCAP_EINVAL, "%s may not resolve '%s': it is not the decider", ep,
                        r[i].kpid);
    ocap__buf_t enc = {0};
    rc = ocap__capdata_e2k(k, ep, &r[i].data, &enc);
    if (!rc)
      rc = ocap__settle(k, kpid, r[i].rejected, enc.p, enc.len);
    free(enc.p);
    /* The decider is done with the promise: retire its c-list entry, as its
     * liveslots forgets the vpid once resolved. */
    if (!rc)
      rc = ocap__clist_remove(k, ep, kpid);
    if (rc)
      return rc;
  }
  return 0;
}

/* Parks a message on an unresolved promise. The item keeps its refs. */
int ocap__park(ocap_kernel_t *k, const char *kpid, const char *item, size_t len) {
  long long tail;
  int rc = ocap__get_count(k, 0, &tail, "%s.queueTail", kpid);
  if (!rc && tail >= COUNT_MAX)
    rc = ocap__broken(k, OCAP_ECORRUPT, "counter '%s.queueTail' is exhausted", kpid);
  if (!rc)
    rc = ocap__setn(k, item, len, "%s.queue.%lld", kpid, tail);
  if (!rc)
    rc = ocap__seti(k, tail + 1, "%s.queueTail", kpid);
  return rc;
}

int ocap_kernel_reject_decided(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *reason) {
  if (ocap__is_kernel_ep(ep))
    return ocap__fail(k, OCAP_EINVAL, "the kernel endpoint has no incarnations");
  int rc = ocap__check_ep(k, ep);
  if (rc)
    return rc;
  ocap__buf_t enc = {0};
  rc = ocap__capdata_e2k(k, "kernel", reason, &enc);
  char(*kpids)[OCAP_REF_MAX] = NULL;
  long got = rc ? 0 : ocap__clist_krefs(k, ep, "kp", &kpids);
  if (got < 0)
    rc = (int)got;
  size_t n = got > 0 ? (size_t)got : 0;
  for (size_t i = 0; i < n && !rc; i++) {
    char v[OCAP_REF_MAX];
    rc = ocap__get_ref(k, v, "%s.decider", kpids[i]);
    if (rc > 0) {
      rc = 0;
      if (strcmp(v, ep) == 0) {
        rc = ocap__settle(k, kpids[i], 1, enc.p, enc.len);
        if (!rc)
          rc = ocap__clist_remove(k, ep, kpids[i]);
      }
    }
  }
  free(kpids);
  free(enc.p);
  return rc;
}
