/*
 * crank.c -- one crank: take the run queue's head, route it, deliver it to
 * one endpoint, and commit; or roll back when the endpoint failed fatally
 * or refused, or the kernel failed.
 *
 * A send follows resolved promises to the object they designate, waits on
 * an unresolved one (promise.c parks it) unless the promise's decider takes
 * it (pipelining), or is "splatted": its result is rejected when nothing
 * can receive it. A notify tells an endpoint about
 * settled promises, and about every settled promise their data mentions,
 * in one delivery.
 */
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

/* Rejects the result of a message that cannot be delivered ("splat"). */
static int splat(ocap_kernel_t *k, const char *result, const char *enc, size_t len) {
  if (!result)
    return 0;
  int st = ocap__get_state(k, result);
  if (st != ST_UNRESOLVED)
    return st < 0 ? st : 0;
  return ocap__settle(k, result, 1, enc, len);
}

static int splat_error(ocap_kernel_t *k, const char *result, const char *code, const char *detail) {
  ocap__buf_t b = {0};
  int rc = ocap__error_capdata(&b, code, detail);
  if (rc)
    rc = ocap__broken(k, rc, "out of memory making an error");
  if (!rc)
    rc = splat(k, result, b.p, b.len);
  free(b.p);
  return rc;
}

/* If the encoded capdata is exactly one reference, copies it to out and
 * returns 1; returns 0 when it is anything else. */
static int single_ref(const char *enc, size_t len, char *out) {
  const char *nl = memchr(enc, '\n', len);
  if (!nl || nl == enc || memchr(enc, ' ', (size_t)(nl - enc)))
    return 0;
  const char *body = nl + 1;
  size_t blen = len - (size_t)(body - enc);
  if (blen < 5 || body[0] != '#' || body[1] != '"' || (body[2] != '$' && body[2] != '&') ||
      body[3] != '0' || body[blen - 1] != '"' || (body[4] != '.' && body[4] != '"'))
    return 0;
  size_t n = (size_t)(nl - enc);
  if (n >= OCAP_REF_MAX)
    return 0;
  memcpy(out, enc, n);
  out[n] = '\0';
  return ocap__valid_kref(out);
}

/* The slots of a message translated without allocating. */
#define SLOTS_INLINE 4

/* Hands d to ep. A kernel failure during the delivery (a syscall whose
 * store write failed) wins over whatever the endpoint reports. */
static int deliver(ocap_kernel_t *k, const char *ep, const ocap_delivery_t *d, int *fatal,
                   char **why) {
  *fatal = OCAP_FATAL_NONE;
  *why = NULL;
  int rc = k->hooks.deliver(k->hooks.ud, ep, d, fatal, why);
  if (k->err)
    return k->err;
  if (rc < 0 && rc != OCAP_EFATAL && rc != OCAP_EREFUSED)
    return ocap__broken(k, rc, "delivery to %s failed: %s", ep, ocap_strerror(rc));
  return rc;
}

/*
 * Whether ep, the decider of the unresolved promise kpid, takes the
 * messages sent to it now (promise pipelining, kernel.h): 1, 0 or a
 * negative code.
 */
static int takes_messages(ocap_kernel_t *k, const char *kpid, const char *ep) {
  char eref[OCAP_REF_MAX];
  if (ocap__is_kernel_ep(ep)) {
    memcpy(eref, kpid, strlen(kpid) + 1);
  } else {
    int rc = ocap__clist_entry(k, ep, kpid, eref, NULL);
    if (rc <= 0)
      return rc;
  }
  int rc = k->hooks.pipelines(k->hooks.ud, ep, eref);
  return k->err ? k->err : rc > 0;
}

/*
 * Whether the decider of the unresolved promise kpid takes a message sent
 * to it now: 1 with the decider copied to ep, 0 when the message waits in
 * the kernel, or a negative code. While messages parked before the decider
 * took the promise wait (drain_parked gives them to it as soon as it does),
 * later ones wait behind them, so that all arrive in the order they were
 * sent.
 */
static int pipelining_decider(ocap_kernel_t *k, const char *kpid, char *ep) {
  if (!k->hooks.pipelines)
    return 0;
  long long parked = ocap__parked(k, kpid);
  if (parked != 0)
    return parked < 0 ? (int)parked : 0;
  int rc = ocap__get_decider(k, kpid, ep);
  return rc <= 0 ? rc : takes_messages(k, kpid, ep);
}

/* Delivers a send item to the owner of object `target`, or to `decider`,
 * the endpoint that decides the unresolved promise `target` and takes its
 * messages (pipelining_decider). Every message to an object passes here,
 * so this is the one place that checks revocation; a promise cannot be
 * revoked, and the decider may only send the message on through the
 * kernel or out of it (a remote peer's answer). */
static int deliver_send(ocap_kernel_t *k, const char *target, long long tid, const char *decider,
                        const char *result, ocap__kp_t *rrec, const char *enc, size_t len, char *ep,
                        int *fatal, char **why) {
  char teref[OCAP_REF_MAX], reref[OCAP_REF_MAX];
  int rc;
  if (decider) {
    ocap__ref_copy(ep, decider);
  } else {
    /* The owner goes straight to ep: an object keeps it as an endpoint's
     * code (a stored owner that is not one fails when read, object.c), so
     * its text needs no check here. */
    rc = tid >= 0 ? ocap__ko_target(k, tid, ep) : ocap__get_target(k, target, ep);
    if (rc == 2)
      return splat_error(k, result, "OBJECT_REVOKED", "Target object has been revoked");
    if (rc == 0) {
      char detail[128];
      snprintf(detail, sizeof detail, "Target object %s has been deleted", target);
      return splat_error(k, result, "OBJECT_DELETED", detail);
    }
    if (rc < 0)
      return rc;
    if (k->hooks.prepare && !ocap__is_kernel_ep(ep))
      k->hooks.prepare(k->hooks.ud, ep);
    if (k->err)
      return k->err;
  }
  rc = ocap__kref_to_eref(k, ep, target, teref);
  if (!rc && result) {
    rc = rrec ? ocap__kp_set_decider(k, rrec, ep) : ocap__set_decider(k, result, ep);
    if (!rc)
      rc = ocap__kp_to_eref(k, ep, result, rrec, reref);
  }
  if (rc)
    return rc;
  /* A message without slots, the common case, needs no parse: its body
   * is what follows the empty slot line. */
  ocap__pcap_t p;
  if (len && enc[0] == '\n') {
    p.copy = NULL;
    p.slotv = p.slots;
    p.nslots = 0;
    p.body = enc + 1;
    p.blen = len - 1;
  } else {
    rc = ocap__pcap_borrow(k, &p, enc, len, "a queued message");
  }
  /* A message's few slots are translated on the stack. */
  char small_pool[SLOTS_INLINE][OCAP_REF_MAX], (*pool)[OCAP_REF_MAX] = small_pool;
  const char *small_slots[SLOTS_INLINE], **slots = small_slots;
  if (!rc && p.nslots > SLOTS_INLINE) {
    pool = malloc(p.nslots * OCAP_REF_MAX);
    slots = malloc(p.nslots * sizeof *slots);
    if (!pool || !slots)
      rc = ocap__broken(k, OCAP_ENOMEM, "out of memory translating a message");
  }
  if (!rc && p.nslots)
    rc = ocap__capdata_k2e(k, ep, &p, pool, slots);
  if (!rc) {
    ocap_delivery_t d = {0};
    d.type = OCAP_DELIVER_MESSAGE;
    d.target = teref;
    d.methargs.body = p.body;
    d.methargs.blen = p.blen;
    d.methargs.slots = slots;
    d.methargs.nslots = p.nslots;
    d.result = result ? reref : NULL;
    rc = deliver(k, ep, &d, fatal, why);
  }
  if (pool != small_pool)
    free(pool);
  if (slots != small_slots)
    free(slots);
  if (p.copy || p.slotv != p.slots)
    ocap__pcap_free(&p);
  return rc;
}

/*
 * After a delivery that made ep the decider of `result`: the messages
 * parked on it before (they were sent to it while the message was still
 * on its way), when ep takes them, are delivered to ep now, in this crank
 * and in order, before any later message can be; and so on for their own
 * results. A chain of calls that waited on an unsettled promise is then
 * pipelined as a whole once the promise settles.
 */
static int drain_parked(ocap_kernel_t *k, const char *ep, const char *result, ocap__kp_t *rrec,
                        int *fatal, char **why) {
  /* Usually nothing waits on a new result: its record says so at once. */
  if (!k->hooks.pipelines || (rrec && ocap__kp_parked(rrec) == 0))
    return 0;
  char(*work)[OCAP_REF_MAX] = NULL;
  size_t nwork = 0, capwork = 0, next = 0;
  int rc = 0;
  char dest[OCAP_REF_MAX]; /* a copy: `work` moves as it grows */
  memcpy(dest, result, strlen(result) + 1);
  for (;;) {
    /* The first promise is the delivered message's result, whose record
     * the caller found. */
    long long parked = rrec ? ocap__kp_parked(rrec) : ocap__parked(k, dest);
    rrec = NULL;
    if (parked > 0)
      rc = takes_messages(k, dest, ep);
    else
      rc = parked < 0 ? (int)parked : 0;
    ocap__buf_t *items = NULL;
    size_t n = 0;
    if (rc > 0)
      rc = ocap__unpark(k, dest, &items, &n);
    for (size_t i = 0; i < n; i++) {
      char target[OCAP_REF_MAX], res[OCAP_REF_MAX], sender[OCAP_REF_MAX], got[OCAP_REF_MAX];
      size_t at;
      if (!rc && *fatal == OCAP_FATAL_NONE)
        rc = ocap__parse_send(k, items[i].p, items[i].len, target, res, sender, &at);
      if (!rc && *fatal == OCAP_FATAL_NONE) {
        const char *r = res[0] ? res : NULL;
        const char *enc = items[i].p + at;
        size_t elen = items[i].len - at;
        rc = deliver_send(k, dest, -1, ep, r, NULL, enc, elen, got, fatal, why);
        if (!rc && *fatal == OCAP_FATAL_NONE)
          rc = ocap__release_send(k, target, -1, r, NULL, enc, elen);
        if (!rc && sender[0])
          rc = ocap__charge_queued(k, sender, -(long long)items[i].len);
        if (!rc && r) {
          if (nwork == capwork) {
            size_t cap = capwork ? capwork * 2 : 8;
            char(*w)[OCAP_REF_MAX] = realloc(work, cap * sizeof *w);
            if (!w)
              rc = ocap__broken(k, OCAP_ENOMEM, "out of memory delivering parked messages");
            else {
              work = w;
              capwork = cap;
            }
          }
          if (!rc)
            memcpy(work[nwork++], r, strlen(r) + 1);
        }
      }
      free(items[i].p);
    }
    free(items);
    if (rc || *fatal != OCAP_FATAL_NONE || next == nwork)
      break;
    memcpy(dest, work[next], strlen(work[next]) + 1);
    next++;
  }
  free(work);
  return rc;
}

/* Routes and delivers one send item. */
static int process_send(ocap_kernel_t *k, const ocap__qitem_t *it, char *ep, int *fatal, char **why,
                        const char **resultp) {
  const char *target = it->target, *sender = it->sender;
  const char *res = it->result[0] ? it->result : NULL;
  ocap__kp_t *rrec = NULL; /* the result's record, found once */
  int rc;
  if (res) {
    *resultp = res;
    rc = it->rid >= 0 ? ocap__kp_find_id(k, it->rid, 1, &rrec) : ocap__kp_find(k, res, 1, &rrec);
    if (rc)
      return rc;
  }
  const char *enc = it->enc;
  size_t elen = it->elen;
  /* A message to an object, the common case, routes on its target as it
   * is; one to a promise follows it in buf. */
  char buf[OCAP_REF_MAX];
  const char *cur = target;
  /* Follow resolved promises to the object they designate. */
  for (int hops = 0; ocap__is_kpid(cur); hops++) {
    if (hops > 1000) {
      /* Promises resolved to each other: nothing can ever receive it. */
      rc = splat_error(k, res, "BAD_PROMISE_RESOLUTION",
                       "Message sent to promises that resolve to each other");
      goto done;
    }
    int st = ocap__get_state(k, cur);
    if (st < 0)
      return st;
    if (st == ST_NONE) {
      rc = splat_error(k, res, "OBJECT_DELETED", "Target promise has been deleted");
      goto done;
    }
    if (st == ST_UNRESOLVED) {
      /* The message waits here unless the decider takes it (a remote
       * peer's answer, which the message follows across the wire). A vat
       * never does: its liveslots would deliver it to its own object once
       * resolved, past the revocation check in deliver_send. Parked, it is
       * routed again on settlement like any other send. */
      char decider[OCAP_REF_MAX];
      rc = pipelining_decider(k, cur, decider);
      if (rc < 0)
        return rc;
      if (rc == 0) { /* the parked item keeps its refs */
        ocap__buf_t text = {0};
        rc = ocap__qitem_text(k, it, &text);
        if (!rc)
          rc = ocap__park(k, cur, text.p, text.len);
        free(text.p);
        return rc;
      }
      rc = deliver_send(k, cur, -1, decider, res, rrec, enc, elen, ep, fatal, why);
      if (!rc && *fatal == OCAP_FATAL_NONE && res)
        rc = drain_parked(k, ep, res, rrec, fatal, why);
      goto done;
    }
    ocap__buf_t data = {0};
    rc = ocap__get_data(k, cur, &data);
    if (rc <= 0) {
      free(data.p);
      return rc < 0 ? rc
                    : ocap__broken(k, OCAP_ECORRUPT,
                                   "corrupt database: settled promise %s has no data", cur);
    }
    if (st == ST_REJECTED) {
      rc = splat(k, res, data.p, data.len);
      free(data.p);
      goto done;
    }
    int one = single_ref(data.p, data.len, buf);
    free(data.p);
    if (!one) {
      rc = splat_error(k, res, "BAD_PROMISE_RESOLUTION",
                       "Message sent to a promise that resolved to data");
      goto done;
    }
    cur = buf;
  }
  /* The item read its target's number once: it serves while the message
   * goes to the object the item names. */
  rc = deliver_send(k, cur, cur == target ? it->tid : -1, NULL, res, rrec, enc, elen, ep, fatal,
                    why);
  if (!rc && *fatal == OCAP_FATAL_NONE && res)
    rc = drain_parked(k, ep, res, rrec, fatal, why);
done:
  if (rc == 0 || rc == OCAP_EFATAL) {
    /* The item is gone: delivered, or rejected at its result. */
    int rr = ocap__release_send(k, target, it->tid, res, rrec, enc, elen);
    if (!rr && sender[0])
      rr = it->sid >= 0 ? ocap__charge_vat(k, it->sid, -(long long)it->bytes)
                        : ocap__charge_queued(k, sender, -(long long)it->bytes);
    if (rr)
      rc = rr;
  }
  return rc;
}

/* The records a notify finds without allocating (a notify merges at most
 * 16 promises, queue.c). */
#define NOTIFY_RECS 16

/* One promise told in a notify delivery. */
typedef struct note {
  char kpid[OCAP_REF_MAX];
  ocap__kp_t *rec; /* its record, when the caller found it */
  int has_eref;    /* eref is known already (read from the c-list) */
  char eref[OCAP_REF_MAX];
  int rejected;
  ocap__pcap_t cap;
  char (*pool)[OCAP_REF_MAX];
  const char **slotv;
} note_t;

/* The notes a notify holds without allocating: it usually tells one
 * promise, and rarely more than a few. */
#define NOTES_INLINE 4

/*
 * Notes do not move once added: an ocap__pcap_t points into itself. The
 * first NOTES_INLINE live in `first`, inside the list (which stays where
 * its caller put it), later ones are allocated one by one. Up to
 * NOTES_INLINE notes are told apart by comparing kpids; past that, `set`
 * indexes them by kpid (open addressing; a slot holds an index + 1, 0 when
 * free; at most half full), so that a notify telling n promises is built
 * in O(n), not O(n^2). Start a list with notes_init.
 */
typedef struct notes {
  note_t **v;
  size_t n, cap;
  size_t *set; /* NULL while n <= NOTES_INLINE */
  size_t setcap;
  note_t *vsmall[NOTES_INLINE]; /* v while it fits */
  note_t first[NOTES_INLINE];
} notes_t;

static void notes_init(notes_t *ns) {
  ns->v = ns->vsmall;
  ns->n = 0;
  ns->cap = NOTES_INLINE;
  ns->set = NULL;
  ns->setcap = 0;
}

static size_t kpid_hash(const char *s) {
  size_t h = 14695981039346656037ULL & (size_t)-1;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * (size_t)1099511628211ULL;
  return h;
}

/* The set slot of kpid: the one naming it, or the free one it would take. */
static size_t *notes_slot(notes_t *ns, const char *kpid) {
  size_t mask = ns->setcap - 1, i = kpid_hash(kpid) & mask;
  while (ns->set[i] && strcmp(ns->v[ns->set[i] - 1]->kpid, kpid) != 0)
    i = (i + 1) & mask;
  return &ns->set[i];
}

/* Makes room in the set for one more kpid once the list outgrows
 * comparing. Returns 0 or OCAP_ENOMEM. */
static int notes_grow_set(notes_t *ns) {
  if (ns->n < NOTES_INLINE || 2 * (ns->n + 1) <= ns->setcap)
    return 0;
  size_t cap = ns->setcap ? 2 * ns->setcap : 32;
  size_t *set = ocap__zalloc(cap * sizeof *set);
  if (!set)
    return OCAP_ENOMEM;
  free(ns->set);
  ns->set = set;
  ns->setcap = cap;
  for (size_t i = 0; i < ns->n; i++)
    *notes_slot(ns, ns->v[i]->kpid) = i + 1;
  return 0;
}

/* Adds kpid (a settled promise; rec is its record, or NULL; eref the
 * endpoint's ref for it, or NULL when not read yet) unless it is there
 * already. */
static int notes_add(ocap_kernel_t *k, notes_t *ns, const char *kpid, ocap__kp_t *rec,
                     const char *eref) {
  if (notes_grow_set(ns))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory building a notify");
  size_t *slot = NULL;
  if (ns->set) {
    slot = notes_slot(ns, kpid);
    if (*slot)
      return 0;
  } else {
    for (size_t i = 0; i < ns->n; i++)
      if (strcmp(ns->v[i]->kpid, kpid) == 0)
        return 0;
  }
  if (ns->n == ns->cap) {
    size_t cap = ns->cap * 2;
    note_t **v = ns->v == ns->vsmall ? malloc(cap * sizeof *v) : realloc(ns->v, cap * sizeof *v);
    if (!v)
      return ocap__broken(k, OCAP_ENOMEM, "out of memory building a notify");
    if (ns->v == ns->vsmall)
      memcpy(v, ns->vsmall, sizeof ns->vsmall);
    ns->v = v;
    ns->cap = cap;
  }
  note_t *nt = ns->n < NOTES_INLINE ? &ns->first[ns->n] : malloc(sizeof *nt);
  if (!nt)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory building a notify");
  nt->cap.copy = NULL;
  nt->cap.slotv = nt->cap.slots;
  nt->pool = NULL;
  nt->slotv = NULL;
  nt->rejected = 0;
  memcpy(nt->kpid, kpid, strlen(kpid) + 1);
  nt->rec = rec;
  nt->has_eref = eref != NULL;
  if (eref)
    memcpy(nt->eref, eref, strlen(eref) + 1);
  ns->v[ns->n++] = nt;
  if (slot)
    *slot = ns->n;
  return 0;
}

static void notes_free(notes_t *ns) {
  for (size_t i = 0; i < ns->n; i++) {
    ocap__pcap_free(&ns->v[i]->cap);
    free(ns->v[i]->pool);
    free(ns->v[i]->slotv);
    if (i >= NOTES_INLINE)
      free(ns->v[i]);
  }
  if (ns->v != ns->vsmall)
    free(ns->v);
  free(ns->set);
}

/*
 * Fills in note i: its data translated for ep, and queues every settled
 * promise its data mentions, so one delivery tells them all (the list is
 * its own work queue, and has no size limit).
 */
static int note_load(ocap_kernel_t *k, const char *ep, notes_t *ns, size_t i) {
  note_t *nt = ns->v[i];
  int rc = nt->rec ? 0 : ocap__kp_find(k, nt->kpid, 0, &nt->rec);
  if (rc)
    return rc;
  int st = ocap__kp_state(nt->rec);
  size_t dlen;
  const char *data = ocap__kp_data(nt->rec, &dlen);
  if (!data)
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: settled promise %s has no data",
                        nt->kpid);
  /* Parsed straight from the record: the parse takes its own copy. */
  rc = ocap__pcap_load(k, &nt->cap, data, dlen, "a promise's data");
  if (rc)
    return rc;
  nt->rejected = st == ST_REJECTED;
  size_t nslots = nt->cap.nslots;
  for (size_t j = 0; j < nslots; j++) {
    const char *slot = nt->cap.slotv[j];
    if (!ocap__is_kpid(slot))
      continue;
    int sst = ocap__get_state(k, slot);
    if (sst < 0)
      return sst;
    if (sst == ST_FULFILLED || sst == ST_REJECTED) {
      rc = notes_add(k, ns, slot, NULL, NULL);
      if (rc)
        return rc;
      nt = ns->v[i];
    }
  }
  if (nslots) {
    nt->pool = malloc(nslots * OCAP_REF_MAX);
    nt->slotv = malloc(nslots * sizeof *nt->slotv);
    if (!nt->pool || !nt->slotv)
      return ocap__broken(k, OCAP_ENOMEM, "out of memory building a notify");
  }
  rc = nt->has_eref ? 0 : ocap__kref_to_eref(k, ep, nt->kpid, nt->eref);
  if (!rc)
    rc = ocap__capdata_k2e(k, ep, &nt->cap, nt->pool, nt->slotv);
  return rc;
}

static int process_notify(ocap_kernel_t *k, const ocap__qitem_t *it, char *ep, int *fatal,
                          char **why) {
  char(*kpids)[OCAP_REF_MAX] = it->kpids;
  size_t nk = it->n;
  int rc = 0;
  ocap__ref_copy(ep, it->ep);
  notes_t ns;
  notes_init(&ns);
  /* Each promise's record is found once, here, for its note and for the
   * release of the item's reference at the end. */
  ocap__kp_t *small[NOTIFY_RECS], **recs = nk <= NOTIFY_RECS ? small : calloc(nk, sizeof *recs);
  if (!recs)
    rc = ocap__broken(k, OCAP_ENOMEM, "out of memory reading a notify");
  for (size_t j = 0; j < nk && !rc; j++) {
    const char *kpid = kpids[j];
    recs[j] = NULL;
    rc = it->ids ? ocap__kp_find_id(k, it->ids[j], 0, &recs[j])
                 : ocap__kp_find(k, kpid, 0, &recs[j]);
    if (rc)
      break;
    int st = ocap__kp_state(recs[j]);
    if (st == ST_NONE || st == ST_UNRESOLVED)
      continue;
    const char *eref = NULL;
    if (!ocap__is_kernel_ep(ep)) {
      const char *v;
      size_t vl;
      rc = ocap__clist_get(k, ep, kpid, &v, &vl);
      if (rc <= 0)
        continue; /* already retired: the endpoint learned it another way */
      /* The entry is the vref the delivery names the promise by: a value
       * that is not one is left to ocap__kref_to_eref, which says
       * what is wrong with it. */
      if (rc == 2 || (vl < OCAP_REF_MAX && ocap__valid_eref(v)))
        eref = v;
    }
    rc = notes_add(k, &ns, kpid, recs[j], eref);
  }
  for (size_t i = 0; i < ns.n && !rc; i++)
    rc = note_load(k, ep, &ns, i);
  ocap_resolution_t small_res[NOTES_INLINE], *res = small_res;
  if (!rc && ns.n > NOTES_INLINE) {
    res = malloc(ns.n * sizeof *res);
    if (!res)
      rc = ocap__broken(k, OCAP_ENOMEM, "out of memory building a notify");
  }
  if (!rc && ns.n) {
    for (size_t i = 0; i < ns.n; i++) {
      res[i].kpid = ns.v[i]->eref;
      res[i].rejected = ns.v[i]->rejected;
      res[i].data = ocap__pcap_view(&ns.v[i]->cap);
      res[i].data.slots = ns.v[i]->slotv;
    }
    ocap_delivery_t d = {0};
    d.type = OCAP_DELIVER_NOTIFY;
    d.resolutions = res;
    d.nresolutions = ns.n;
    rc = deliver(k, ep, &d, fatal, why);
    /* The endpoint forgets promises once told their settlement. */
    if (!rc && *fatal == OCAP_FATAL_NONE)
      for (size_t i = 0; i < ns.n && !rc; i++)
        rc = ocap__clist_remove_kp(k, ep, ns.v[i]->kpid, ns.v[i]->rec);
  }
  if (res != small_res)
    free(res);
  notes_free(&ns);
  for (size_t j = 0; j < nk && (rc == 0 || rc == OCAP_EFATAL); j++) {
    int rr = recs[j] ? ocap__kp_decref(k, recs[j]) : ocap__decref(k, kpids[j]);
    if (rr)
      rc = rr;
  }
  if (recs != small)
    free(recs);
  return rc;
}

static const char *fatal_code(int fatal) {
  switch (fatal) {
  case OCAP_FATAL_ILLEGAL_SYSCALL:
    return "VAT_FATAL:ILLEGAL_SYSCALL";
  case OCAP_FATAL_METER:
    return "VAT_FATAL:METER_EXHAUSTED";
  case OCAP_FATAL_MEMORY:
    return "VAT_FATAL:MEMORY_EXHAUSTED";
  case OCAP_FATAL_QUOTA:
    return "VAT_FATAL:QUOTA_EXCEEDED";
  default:
    return "VAT_FATAL:INTERNAL_ERROR";
  }
}

int ocap_kernel_abort_crank(ocap_kernel_t *k, int rc) {
  ocap_store_abort(k->s);
  if (k->err) {
    rc = k->err;
    memcpy(k->errmsg, k->brokenmsg, sizeof k->errmsg - 1);
    k->errmsg[sizeof k->errmsg - 1] = '\0';
    ocap_kernel_clear_failure(k);
  }
  return rc;
}

/* Rolls back the crank's delivery, which the crank goes on from: the
 * host drops what it was asked to do after the crank in that delivery. */
static void undo_delivery(ocap_kernel_t *k) {
  ocap_store_abort(k->s);
  if (k->hooks.undone)
    k->hooks.undone(k->hooks.ud);
}

/* Takes a crank's item off the queue again after the crank was aborted
 * and drops the references it held (a message's result excepted: the
 * caller settles it first). An item a commit by host code during the
 * delivery kept taken is not there to take: the head is the next item. */
static int crank_drop_item(ocap_kernel_t *k, const ocap__qitem_t *item) {
  int rc = 0;
  if (ocap__queue_lent_back(k)) {
    ocap__qitem_t *again = malloc(sizeof *again);
    if (!again)
      return ocap__broken(k, OCAP_ENOMEM, "out of memory dropping a run-queue item");
    rc = ocap__dequeue(k, again);
    if (rc > 0)
      ocap__qitem_free(again);
    free(again);
    rc = rc < 0 ? rc : 0;
  }
  if (!rc && !item->notify) {
    rc = ocap__release_send(k, item->target, item->tid, NULL, NULL, item->enc, item->elen);
    if (!rc && item->sender[0])
      rc = item->sid >= 0 ? ocap__charge_vat(k, item->sid, -(long long)item->bytes)
                          : ocap__charge_queued(k, item->sender, -(long long)item->bytes);
  } else if (!rc) {
    for (size_t j = 0; j < item->n && !rc; j++)
      rc = ocap__decref(k, item->kpids[j]);
  }
  return rc;
}

/* Undoes a crank whose endpoint failed fatally, takes its item off the
 * queue again and terminates the endpoint, all in this crank. */
static int crank_fatal(ocap_kernel_t *k, const ocap__qitem_t *item, const char *ep, int fatal,
                       const char *why, const char *result) {
  undo_delivery(k);
  int rc = crank_drop_item(k, item);
  if (!rc)
    rc = ocap_kernel_crash(k, ep, fatal, why, result);
  if (!rc && result)
    rc = ocap__decref(k, result);
  return rc;
}

/*
 * Undoes a crank whose endpoint refused the delivery: the item leaves the
 * queue and drops its references, and a message's result is rejected with
 * msg (a full `[KERNEL:<CODE>] <detail>` text). The endpoint and its state
 * stay as they were.
 */
static int crank_refused(ocap_kernel_t *k, const ocap__qitem_t *item, const char *result,
                         const char *msg) {
  undo_delivery(k);
  int rc = crank_drop_item(k, item);
  if (!rc && result) {
    ocap__buf_t b = {0};
    if (ocap__buf_adds(&b, "\n#{\"#error\":\"") ||
        ocap__buf_add_json(&b, msg ? msg : "delivery refused") ||
        ocap__buf_adds(&b, "\",\"name\":\"Error\"}"))
      rc = OCAP_ENOMEM;
    if (!rc)
      rc = splat(k, result, b.p, b.len);
    free(b.p);
    if (!rc)
      rc = ocap__decref(k, result);
  }
  return rc;
}

/* Commits a crank, or rolls it back when it failed. Returns 1 or the
 * failure's code. */
static int crank_end(ocap_kernel_t *k, int rc) {
  if (rc < 0 || k->err)
    return ocap_kernel_abort_crank(k, rc);
  rc = ocap_store_commit(k->s);
  if (rc) {
    ocap__broken(k, rc, "store commit failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(k->s));
    return ocap_kernel_abort_crank(k, rc);
  }
  return 1;
}

/*
 * Delivers a GC delivery or a reap, which no run-queue item carries. When
 * the endpoint fails fatally, the crank is undone and the vat terminated;
 * when it refuses (a vat that cannot start), the crank is undone. `undo`
 * (may be NULL) then takes the batch's actions out again, so that they are
 * not retried for ever.
 */
static int deliver_gc(ocap_kernel_t *k, const char *ep, const ocap_delivery_t *d,
                      const ocap__gcbatch_t *undo) {
  int fatal = OCAP_FATAL_NONE;
  char *why = NULL;
  int rc = deliver(k, ep, d, &fatal, &why);
  if (!k->err && (rc == OCAP_EREFUSED || rc == OCAP_EFATAL || fatal != OCAP_FATAL_NONE)) {
    undo_delivery(k);
    rc = undo ? ocap__gc_discard(k, undo) : 0;
    if (!rc && fatal != OCAP_FATAL_NONE)
      rc = ocap_kernel_crash(k, ep, fatal, why, NULL);
  }
  free(why);
  return rc;
}

/* One crank of GC actions: one endpoint's actions of one kind. */
static int gc_crank(ocap_kernel_t *k) {
  static const int type[] = {OCAP_DELIVER_DROP_EXPORTS, OCAP_DELIVER_RETIRE_EXPORTS,
                             OCAP_DELIVER_RETIRE_IMPORTS};
  ocap__gcbatch_t b;
  int rc = ocap__gc_take(k, &b);
  if (rc <= 0)
    return rc < 0 ? ocap_kernel_abort_crank(k, rc) : 0;
  k->cranks++;
  rc = 0;
  if (b.n) {
    ocap_delivery_t d = {0};
    d.type = type[b.kind];
    d.vrefs = b.vrefs;
    d.nvrefs = b.n;
    rc = deliver_gc(k, b.ep, &d, &b);
  }
  ocap__gcbatch_free(&b);
  return crank_end(k, rc);
}

/* One reap: the endpoint's runtime collects its garbage and tells the
 * kernel what it dropped (GC syscalls). */
static int reap_crank(ocap_kernel_t *k, const char *ep) {
  k->cranks++;
  ocap_delivery_t d = {0};
  d.type = OCAP_DELIVER_BRING_OUT_YOUR_DEAD;
  return crank_end(k, deliver_gc(k, ep, &d, NULL));
}

static int step(ocap_kernel_t *k);

/* A crank keeps records across the host code it calls (deliveries to the
 * host, the hooks): while it runs, ocap_kernel_forget refuses to drop them. */
int ocap_kernel_step(ocap_kernel_t *k) {
  int was = k->cranking;
  k->cranking = 1;
  int rc = step(k);
  k->cranking = was;
  return rc;
}

static int step(ocap_kernel_t *k) {
  /* A host call that failed since the last crank may have left its writes
   * half done: they are dropped, and this crank reports why. */
  if (k->err)
    return ocap_kernel_abort_crank(k, k->err);
  /* Host writes made between cranks are committed on their own, so that
   * the crank's rollback cannot take them. */
  int rc = ocap__kernel_changed(k) ? ocap_store_commit(k->s) : 0;
  if (rc) {
    ocap__broken(k, rc, "store commit failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(k->s));
    return ocap_kernel_abort_crank(k, rc);
  }
  /* GC actions first, then reaps, then the run queue (docs/gc.md). */
  rc = ocap__gc_pending(k);
  if (rc)
    return rc < 0 ? ocap_kernel_abort_crank(k, rc) : gc_crank(k);
  char reap[OCAP_REF_MAX];
  if (ocap__gc_next_reap(k, reap))
    return reap_crank(k, reap);
  ocap__qitem_t item; /* lent by the queue until the crank ends */
  rc = ocap__dequeue(k, &item);
  if (rc <= 0)
    return rc < 0 ? ocap_kernel_abort_crank(k, rc) : 0;
  k->cranks++;
  char ep[OCAP_REF_MAX];
  ep[0] = '\0';
  const char *result = NULL;
  int fatal = OCAP_FATAL_NONE;
  char *why = NULL;
  if (!item.notify)
    rc = process_send(k, &item, ep, &fatal, &why, &result);
  else
    rc = process_notify(k, &item, ep, &fatal, &why);
  if (!k->err && rc == OCAP_EREFUSED)
    rc = crank_refused(k, &item, result, why);
  else if (!k->err && (rc == OCAP_EFATAL || fatal != OCAP_FATAL_NONE))
    rc = crank_fatal(k, &item, ep, fatal, why, result);
  if (why)
    free(why);
  rc = crank_end(k, rc);
  ocap__qitem_free(&item);
  ocap__queue_return(k);
  return rc;
}

int ocap_kernel_crash(ocap_kernel_t *k, const char *ep, int fatal, const char *why,
                      const char *result) {
  /* The message that killed the vat learns why; every other promise the
   * vat decided learns that the vat is gone. The detail is built whole: a
   * vat's message has no length limit. */
  ocap__buf_t detail = {0}, reason = {0};
  int rc = 0;
  if (ocap__buf_adds(&detail, "vat ") || ocap__buf_adds(&detail, ep) ||
      ocap__buf_adds(&detail, " terminated: ") ||
      ocap__buf_adds(&detail, why ? why : "fatal error") ||
      ocap__error_capdata(&reason, fatal_code(fatal), detail.p))
    rc = ocap__broken(k, OCAP_ENOMEM, "out of memory terminating %s", ep);
  if (!rc && result)
    rc = splat(k, result, reason.p, reason.len);
  detail.len = 0;
  if (!rc &&
      (ocap__buf_adds(&detail, "vat ") || ocap__buf_adds(&detail, ep) ||
       ocap__buf_adds(&detail, " terminated: [") || ocap__buf_adds(&detail, fatal_code(fatal)) ||
       ocap__buf_adds(&detail, "] ") || ocap__buf_adds(&detail, why ? why : "fatal error") ||
       ocap__error_capdata(&reason, "VAT_TERMINATED", detail.p)))
    rc = ocap__broken(k, OCAP_ENOMEM, "out of memory terminating %s", ep);
  ocap__pcap_t rp;
  if (!rc) {
    rc = ocap__pcap_load(k, &rp, reason.p, reason.len, "a termination reason");
    if (!rc) {
      ocap_capdata_t rcd = ocap__pcap_view(&rp);
      rc = ocap_kernel_terminate(k, ep, &rcd);
    }
    ocap__pcap_free(&rp);
  }
  free(detail.p);
  free(reason.p);
  return rc;
}
