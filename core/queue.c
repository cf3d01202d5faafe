/*
 * queue.c -- the run queue (see queue.h): items in, items out, and the
 * parsing of an item back into its parts.
 */
#include "queue.h"

#include <stdlib.h>
#include <string.h>

#include "idtable.h"
#include "object.h"
#include "promise.h"
#include "refs.h"

/*
 * An item. One the kernel queued is kept in its parts: a send's
 * references and its capdata (p, malloc'd), a notify's endpoint and
 * promise numbers; its stored text is made only when the store gets it
 * (item_text). One read from the store, or given as text (a message that
 * was parked), is kept as that text (p, malloc'd, NUL-terminated) and
 * parsed, with the checks that find a damaged item, when a crank takes it.
 */
enum { ITEM_TEXT, ITEM_SEND, ITEM_NOTIFY };
typedef struct item {
  int kind;
  char *p; /* the text, or a send's capdata; NULL for a notify */
  size_t len;
  union {
    struct {
      char target[OCAP_REF_MAX], result[OCAP_REF_MAX], sender[OCAP_REF_MAX]; /* "" for none */
      long long rid, sid, tid;                                               /* as in the view */
      size_t bytes; /* the length of its text */
      size_t cap;   /* the size of the block p, for its reuse (spare) */
    } s;
    struct {
      ocap__epc_t ep;
      size_t n;
      long long kp[OCAP_NOTIFY_MERGE]; /* the N of each kpN */
    } n;
  } u;
} item_t;

/*
 * The run queue in memory (kstate.h, convention 6). Item n lives at
 * v[n & mask]. `head` and `tail` are the bounds now, `chead` and `ctail`
 * those at the last commit, which the store holds; the items from chead to
 * tail stay in the ring, those a crank popped included, so that an abort
 * only has to move the bounds back. The one committed item a crank can
 * change is the last one, when a notify joins it: its committed text waits
 * in `undo` until the crank ends.
 *
 * The queue is not written at each commit: most items are queued by one
 * crank and taken by the next, and writing each one and then deleting it
 * was a tenth of a round trip. `shead` and `stail` are the bounds the store
 * holds, and `slast` says that the store's last item (stail - 1) was
 * changed since (a notify joined it). ocap__queue_fill writes the committed
 * state over them, straight to the committed layer, whenever someone reads
 * the store from outside the kernel or before a flush (kernel.h,
 * ocap_kernel_sync); items made and taken in between are never written.
 */
/*
 * A vat's `<vatId>.queuedBytes` in memory, like the queue (kstate.h,
 * convention 6): every send and delivery of a vat changes it, so it is read
 * from the store once and, like the queue, written when the kernel syncs
 * (a message's bytes are charged and released again between two syncs).
 * `n`, `cn` and `sn` are the count now, at the last commit and in the
 * store, -1 when the key is absent. A
 * record stays while the kernel is open (one per vat that sent), so that
 * a count that keeps going back to none is not read again.
 */
typedef struct qbytes {
  long long id; /* the N of vN */
  long long n, cn, sn;
  int dirty;    /* listed in qdirty */
  int unsynced; /* listed in qsync */
} qbytes_t;

struct ocap__queue {
  int loaded;
  long long head, tail, chead, ctail;
  item_t *v;
  size_t mask;
  long long undo_at; /* the index of the changed committed item, or -1 */
  item_t undo;
  long long shead, stail; /* the bounds the store holds */
  int slast;              /* the store's item stail - 1 changed since */
  long long lent;         /* the index of the item a crank holds (ocap__dequeue), or -1 */
  char *orphan;           /* its text, when the queue let go of it meanwhile */
  size_t orphan_cap;      /* its block's size when it is a send's capdata, else 0 */
  char *spare;            /* a delivered send's block, kept for the next send */
  size_t spare_cap;
  ocap__idtable_t qb; /* qbytes_t by vat number */
  qbytes_t **qdirty;  /* the records this crank changed */
  size_t nqdirty, capqdirty;
  qbytes_t **qsync; /* the records whose committed count the store lacks */
  size_t nqsync, capqsync;
  qbytes_t *qlast; /* the record last found, for a vat's next send or delivery */
};

static item_t *slot(struct ocap__queue *q, long long n) {
  return &q->v[(size_t)n & q->mask];
}

/* Grows the ring to hold `need` items, keeping every item from chead on. */
__attribute__((noinline)) static int ring_grow(struct ocap__queue *q, size_t need) {
  size_t cap = q->v ? q->mask + 1 : 0;
  size_t ncap = cap ? cap * 2 : 64;
  while (ncap < need)
    ncap *= 2;
  item_t *nv = malloc(ncap * sizeof *nv);
  if (!nv)
    return OCAP_ENOMEM;
  for (long long n = q->chead; n < q->tail; n++)
    nv[(size_t)n & (ncap - 1)] = *slot(q, n);
  free(q->v);
  q->v = nv;
  q->mask = ncap - 1;
  return 0;
}

/* Makes room for item `tail` while keeping every item from chead on. */
static inline int ring_reserve(struct ocap__queue *q) {
  size_t need = (size_t)(q->tail - q->chead) + 1;
  return q->v && need <= q->mask + 1 ? 0 : ring_grow(q, need);
}

/* The stored text of a send item: "send <target> <result|-> [<sender>]\n"
 * then its capdata, appended to b. */
static int send_text(ocap__buf_t *b, const char *target, const char *result, const char *sender,
                     const char *enc, size_t elen) {
  char head[3 * OCAP_REF_MAX + 8], *w = head;
  size_t tl = strlen(target), rl = strlen(result), sl = strlen(sender);
  memcpy(w, "send ", 5);
  w += 5;
  memcpy(w, target, tl);
  w += tl;
  *w++ = ' ';
  if (rl) {
    memcpy(w, result, rl);
    w += rl;
  } else {
    *w++ = '-';
  }
  if (sl) {
    *w++ = ' ';
    memcpy(w, sender, sl);
    w += sl;
  }
  *w++ = '\n';
  return ocap__buf_add(b, head, (size_t)(w - head)) || ocap__buf_add(b, enc, elen) ? OCAP_ENOMEM
                                                                                   : 0;
}

/*
 * The stored text of an item: *v and *vl point at it, in it->p for a
 * text item, else in b (reset first), which the caller frees. Returns 0 or
 * a kernel failure.
 */
static int item_text(ocap_kernel_t *k, const item_t *it, ocap__buf_t *b, const char **v,
                     size_t *vl) {
  b->len = 0;
  if (it->kind == ITEM_TEXT) {
    *v = it->p;
    *vl = it->len;
    return 0;
  }
  int rc = 0;
  if (it->kind == ITEM_SEND) {
    rc = send_text(b, it->u.s.target, it->u.s.result, it->u.s.sender, it->p, it->len);
  } else {
    char ep[OCAP_REF_MAX];
    size_t el = ocap__ep_text(it->u.n.ep, ep);
    rc = ocap__buf_adds(b, "notify ") || ocap__buf_add(b, ep, el) ? OCAP_ENOMEM : 0;
    for (size_t i = 0; i < it->u.n.n && !rc; i++) {
      char num[24];
      size_t nl = ocap__fmt_ll(num, it->u.n.kp[i]);
      rc = ocap__buf_add(b, " kp", 3) || ocap__buf_add(b, num, nl) ? OCAP_ENOMEM : 0;
    }
  }
  if (rc)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory writing the run queue");
  *v = b->p;
  *vl = b->len;
  return 0;
}

/* Frees the items from `from` to `to` (exclusive). The memory of the item a
 * crank holds is kept until it gives it back (ocap__queue_return): host
 * code the crank runs may commit (K:commit), which lets go of the items
 * taken before. */
static inline void free_items(struct ocap__queue *q, long long from, long long to) {
  for (long long n = from; n < to; n++) {
    if (n == q->lent && !q->orphan) {
      q->orphan = slot(q, n)->p;
      q->orphan_cap = slot(q, n)->kind == ITEM_SEND ? slot(q, n)->u.s.cap : 0;
    } else
      free(slot(q, n)->p);
    slot(q, n)->p = NULL;
  }
}

/*
 * Reads the queue from the store the first time it is needed: its bounds,
 * which must satisfy head <= tail, and every item between them, numbered
 * without gaps (a missing one is corruption, and a tail too large is found
 * at its first missing item).
 */
static int queue_load(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  long long head, tail;
  int rc = ocap__get_count(k, 0, &head, "runQueue.head");
  if (!rc)
    rc = ocap__get_count(k, 0, &tail, "runQueue.tail");
  if (!rc && head > tail)
    rc = ocap__broken(k, OCAP_ECORRUPT,
                      "corrupt database: runQueue.head (%lld) is after runQueue.tail "
                      "(%lld)",
                      head, tail);
  if (rc)
    return rc;
  q->chead = q->head = q->tail = head;
  q->undo_at = -1;
  for (long long n = head; n < tail && !rc; n++) {
    ocap__buf_t b = {0};
    int got = ocap__getb(k, &b, "runQueue.%lld", n);
    if (got == 0)
      rc = ocap__broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %lld is missing", n);
    else if (got < 0)
      rc = got;
    else if (ring_reserve(q))
      rc = ocap__broken(k, OCAP_ENOMEM, "out of memory reading the run queue");
    if (rc) {
      free(b.p);
      break;
    }
    slot(q, n)->kind = ITEM_TEXT;
    slot(q, n)->p = b.p;
    slot(q, n)->len = b.len;
    q->tail++;
  }
  if (rc) {
    free_items(q, head, q->tail);
    return rc;
  }
  q->ctail = q->stail = q->tail;
  q->shead = head;
  q->slast = 0;
  q->loaded = 1;
  return 0;
}

#define LOAD(k)                                                                                    \
  do {                                                                                             \
    if (!(k)->q->loaded) {                                                                         \
      int rc_ = queue_load(k);                                                                     \
      if (rc_)                                                                                     \
        return rc_;                                                                                \
    }                                                                                              \
  } while (0)

int ocap__queue_new(ocap_kernel_t *k) {
  k->q = calloc(1, sizeof *k->q);
  if (k->q && ocap__idtable_init(&k->q->qb, 16)) {
    free(k->q);
    k->q = NULL;
  }
  if (k->q)
    k->q->lent = -1;
  return k->q ? 0 : OCAP_ENOMEM;
}

void ocap__queue_free(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  if (!q)
    return;
  if (q->loaded) {
    free_items(q, q->chead, q->tail);
    if (q->undo_at >= 0)
      free(q->undo.p);
  }
  free(q->orphan);
  free(q->spare);
  free(q->v);
  ocap__idtable_free(&q->qb, free);
  free(q->qdirty);
  free(q->qsync);
  free(q);
}

/* Whether the committed queue and the store's are both empty, the store's
 * bounds set: the sync has nothing to write (queue_rebase). */
static int both_empty(const struct ocap__queue *q) {
  return q->chead == q->ctail && q->shead == q->stail && q->shead != 0;
}

/*
 * An empty queue whose store holds an empty queue too needs no write: the
 * items queued and taken since were never written, so the numbers they
 * took can be taken again, and the bounds go back to the store's. A host
 * round trip so writes neither runQueue.head nor .tail (two of the four
 * keys its flush wrote). Nothing may hold an item's number meanwhile: no
 * crank is under way (the bounds are the committed ones) and none holds
 * the item it took. A store whose bounds are still 0 (absent in a new
 * one) gets them once, so that the kernel's keys do not come and go with
 * the queue's use.
 */
static void queue_rebase(struct ocap__queue *q) {
  if (!both_empty(q) || q->chead == q->shead)
    return;
  if (q->head != q->chead || q->tail != q->ctail || q->undo_at >= 0 || q->lent >= 0)
    return;
  q->head = q->tail = q->chead = q->ctail = q->shead;
}

int ocap__queue_check(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  if (!q->loaded)
    return 0;
  char v[32];
  int rc = 0;
  /* An empty queue goes on from its own numbers until a sync takes the
   * store's back (queue_rebase): the store keeps its bounds meanwhile. */
  long long head = q->head, tail = q->tail;
  if (head == tail && head == q->chead && tail == q->ctail && both_empty(q))
    head = tail = q->shead;
  if (head)
    rc = ocap__check_key(k, v, ocap__fmt_ll(v, head), "runQueue.head");
  if (!rc && tail)
    rc = ocap__check_key(k, v, ocap__fmt_ll(v, tail), "runQueue.tail");
  ocap__buf_t b = {0};
  for (long long n = q->head; n < q->tail && !rc; n++) {
    const char *t;
    size_t tl;
    rc = item_text(k, slot(q, n), &b, &t, &tl);
    if (!rc)
      rc = ocap__check_key(k, t, tl, "runQueue.%lld", n);
  }
  free(b.p);
  size_t pos = 0;
  qbytes_t *r;
  while (!rc && (r = ocap__idtable_next(&q->qb, &pos)) != NULL) {
    char ep[32];
    ep[0] = 'v';
    ep[1 + ocap__fmt_ll(ep + 1, r->id)] = '\0';
    size_t vl = r->n >= 0 ? ocap__fmt_ll(v, r->n) : 0;
    rc = ocap__check_key(k, r->n >= 0 ? v : NULL, vl, "%s.queuedBytes", ep);
  }
  return rc;
}

void ocap__queue_forget(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  /* A queue empty again since a sync that found the store's empty too is
   * the store's: no sync took its bounds back, since none was due. */
  if (q->loaded)
    queue_rebase(q);
  if (!q->loaded || q->head != q->chead || q->tail != q->ctail || q->undo_at >= 0 ||
      q->shead != q->chead || q->stail != q->ctail || q->slast)
    return;
  free_items(q, q->chead, q->ctail);
  q->loaded = 0;
}

/* Writes the committed queued-byte counts the store does not have yet
 * (ocap__queue_fill); the records it wrote are marked by `sn` later. */
static int qbytes_fill(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  for (size_t i = 0; i < q->nqsync; i++) {
    qbytes_t *r = q->qsync[i];
    if (r->cn == r->sn)
      continue;
    char ep[32];
    ep[0] = 'v';
    ep[1 + ocap__fmt_ll(ep + 1, r->id)] = '\0';
    int rc = r->cn >= 0 ? ocap__seti(k, r->cn, "%s.queuedBytes", ep)
                        : ocap__delv(k, "%s.queuedBytes", ep);
    if (rc)
      return rc;
  }
  return 0;
}

/* Ends the crank's changes to the counts, keeping or dropping them; a
 * count kept joins those the next sync writes (qbytes_set made room). */
static inline void qbytes_end(struct ocap__queue *q, int keep) {
  for (size_t i = 0; i < q->nqdirty; i++) {
    qbytes_t *r = q->qdirty[i];
    if (keep)
      r->cn = r->n;
    else
      r->n = r->cn;
    r->dirty = 0;
    if (keep && r->cn != r->sn && !r->unsynced) {
      r->unsynced = 1;
      q->qsync[q->nqsync++] = r;
    }
  }
  q->nqdirty = 0;
}

/* The committed text of item n (chead <= n < ctail). */
static const item_t *committed_item(struct ocap__queue *q, long long n) {
  return n == q->undo_at ? &q->undo : slot(q, n);
}

int ocap__queue_changed(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  return q->nqdirty > 0 ||
         (q->loaded && (q->head != q->chead || q->tail != q->ctail || q->undo_at >= 0));
}

int ocap__queue_unsynced(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  return (q->loaded && (q->shead != q->chead || q->stail != q->ctail || q->slast) &&
          !both_empty(q)) ||
         q->nqsync > 0;
}

/* Writes the committed queue over what the store holds (ocap_kernel_sync). */
int ocap__queue_fill(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  int rc = qbytes_fill(k);
  if (rc || !q->loaded)
    return rc;
  queue_rebase(q);
  for (long long n = q->shead; n < q->chead && n < q->stail && !rc; n++)
    rc = ocap__delv(k, "runQueue.%lld", n);
  /* The items the store lacks, and its last one when a notify joined it. */
  ocap__buf_t b = {0};
  long long last = q->stail - 1;
  for (long long n = q->chead > q->stail ? q->chead : q->stail; n < q->ctail && !rc; n++) {
    const char *t;
    size_t tl;
    rc = item_text(k, committed_item(q, n), &b, &t, &tl);
    if (!rc)
      rc = ocap__setn(k, t, tl, "runQueue.%lld", n);
  }
  if (!rc && q->slast && last >= q->chead && last < q->ctail) {
    const char *t;
    size_t tl;
    rc = item_text(k, committed_item(q, last), &b, &t, &tl);
    if (!rc)
      rc = ocap__setn(k, t, tl, "runQueue.%lld", last);
  }
  free(b.p);
  if (!rc && q->chead != q->shead)
    rc = ocap__seti(k, q->chead, "runQueue.head");
  if (!rc && q->ctail != q->stail)
    rc = ocap__seti(k, q->ctail, "runQueue.tail");
  return rc;
}

void ocap__queue_synced(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  if (q->loaded) {
    q->shead = q->chead;
    q->stail = q->ctail;
    q->slast = 0;
  }
  for (size_t i = 0; i < q->nqsync; i++) {
    q->qsync[i]->sn = q->qsync[i]->cn;
    q->qsync[i]->unsynced = 0;
  }
  q->nqsync = 0;
}

void ocap__queue_done(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  qbytes_end(q, 1);
  if (!q->loaded)
    return;
  free_items(q, q->chead, q->head);
  if (q->undo_at >= 0 && q->undo_at < q->stail)
    q->slast = 1;
  if (q->undo_at >= 0)
    free(q->undo.p);
  q->undo_at = -1;
  q->chead = q->head;
  q->ctail = q->tail;
}

void ocap__queue_abort(ocap_kernel_t *k, int cleared) {
  struct ocap__queue *q = k->q;
  qbytes_end(q, 0);
  if (cleared) {
    ocap__idtable_clear(&q->qb, free);
    q->qlast = NULL;
    q->nqsync = 0;
  }
  if (!q->loaded)
    return;
  free_items(q, q->ctail, q->tail);
  if (q->undo_at >= 0) {
    free(slot(q, q->undo_at)->p);
    *slot(q, q->undo_at) = q->undo;
  }
  q->undo_at = -1;
  q->head = q->chead;
  q->tail = q->ctail;
  if (cleared) {
    free_items(q, q->chead, q->ctail);
    q->loaded = 0;
  }
}

/* Appends a slot for an item at the tail (loading the queue first) and
 * points *out at it; the caller fills it in and counts it (q->tail++). */
static inline int enqueue_slot(ocap_kernel_t *k, item_t **out) {
  LOAD(k);
  struct ocap__queue *q = k->q;
  if (q->tail >= COUNT_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "counter 'runQueue.tail' is exhausted");
  if (ring_reserve(q))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory queueing an item");
  *out = slot(q, q->tail);
  return 0;
}

int ocap__enqueue(ocap_kernel_t *k, const char *item, size_t len) {
  item_t *it = NULL;
  int rc = enqueue_slot(k, &it);
  if (rc)
    return rc;
  char *p = malloc(len + 1);
  if (!p)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory queueing an item");
  memcpy(p, item, len);
  p[len] = '\0';
  it->kind = ITEM_TEXT;
  it->p = p;
  it->len = len;
  k->q->tail++;
  return 0;
}

long long ocap_kernel_queue_length(ocap_kernel_t *k) {
  LOAD(k);
  return k->q->tail - k->q->head;
}

/* The N of "kpN", or -1 when kpid is not written that way (a promise id
 * read from a damaged store may not be). */
static long long kp_number(const char *kpid) {
  return ocap__kref_number(kpid, REF_KP);
}

/*
 * Queues a notify. When the queue's last item is already a notify the
 * kernel queued for the same endpoint, the promise joins it: nothing can
 * happen between the two, so one delivery tells both, and a pipelined
 * chain costs one notify crank instead of one per link. The endpoint is
 * kept as its code, which the promise's subscribers are kept as too.
 */
int ocap__enqueue_notify_ep(ocap_kernel_t *k, ocap__epc_t ep, ocap__kp_t *rec) {
  int rc = ocap__kp_incref(k, rec);
  if (rc)
    return rc;
  LOAD(k);
  struct ocap__queue *q = k->q;
  long long id = ocap__kp_id(rec);
  item_t *last = q->tail > q->head ? slot(q, q->tail - 1) : NULL;
  if (last && last->kind == ITEM_NOTIFY && last->u.n.n < OCAP_NOTIFY_MERGE && last->u.n.ep == ep) {
    /* A committed item is kept as it was for an abort; one this crank
     * queued, or changed already, is changed in place. */
    if (q->tail - 1 < q->ctail && q->undo_at != q->tail - 1) {
      q->undo = *last;
      q->undo_at = q->tail - 1;
    }
    last->u.n.kp[last->u.n.n++] = id;
    return 0;
  }
  item_t *it = NULL;
  rc = enqueue_slot(k, &it);
  if (rc)
    return rc;
  it->kind = ITEM_NOTIFY;
  it->p = NULL;
  it->len = 0;
  it->u.n.ep = ep;
  it->u.n.n = 1;
  it->u.n.kp[0] = id;
  q->tail++;
  return 0;
}

int ocap__enqueue_notify(ocap_kernel_t *k, const char *ep, const char *kpid, ocap__kp_t *rec) {
  ocap__epc_t code = ocap__ep_code(ep);
  if (!code)
    return ocap__broken(k, OCAP_ECORRUPT, "cannot notify invalid endpoint '%.60s'", ep);
  if (rec)
    return ocap__enqueue_notify_ep(k, code, rec);
  if (!ocap__valid_kref(kpid))
    return ocap__broken(k, OCAP_ECORRUPT, "cannot notify invalid promise '%.60s'", kpid);
  ocap__kp_t *r = NULL;
  long long id = kp_number(kpid);
  int rc = id >= 0 ? ocap__kp_find_id(k, id, 1, &r) : 0;
  if (rc)
    return rc;
  if (r)
    return ocap__enqueue_notify_ep(k, code, r);
  /* A promise id the kernel would not write: queued as it is named. */
  rc = ocap__incref(k, kpid);
  if (rc)
    return rc;
  ocap__buf_t b = {0};
  rc = ocap__buf_adds(&b, "notify ") || ocap__buf_adds(&b, ep) || ocap__buf_adds(&b, " ") ||
               ocap__buf_adds(&b, kpid)
           ? ocap__broken(k, OCAP_ENOMEM, "out of memory queueing a notify")
           : ocap__enqueue(k, b.p, b.len);
  free(b.p);
  return rc;
}

/*
 * What vat ep has waiting in the kernel (its messages in the run queue or
 * parked on promises) is kept under "<ep>.queuedBytes", absent when none.
 * A vat that is gone has no count, and nothing is charged to it any more.
 */
/* The number N of a vat id "vN", or -1 for another endpoint. */
static inline long long vat_number(const char *ep) {
  ocap__epc_t c = ocap__ep_code(ep);
  return (c & 3) == 2 && c >> 2 <= (uint64_t)COUNT_MAX ? (long long)(c >> 2) : -1;
}

/* Reads the queued-byte record of vat vN from the store into the table.
 * Apart from qbytes_find, so that the lookup stays a leaf without a
 * buffer to guard. */
__attribute__((noinline)) static int qbytes_load(ocap_kernel_t *k, long long id, qbytes_t **out) {
  struct ocap__queue *q = k->q;
  char ep[24];
  ep[0] = 'v';
  ep[1 + ocap__fmt_ll(ep + 1, id)] = '\0';
  long long n;
  int rc = ocap__get_count(k, -1, &n, "%s.queuedBytes", ep);
  if (rc)
    return rc;
  qbytes_t *r = calloc(1, sizeof *r);
  if (r) { /* the id first: the table files the record under it */
    r->id = id;
    r->n = r->cn = r->sn = n;
  }
  if (!r || ocap__idtable_insert(&q->qb, r)) {
    free(r);
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading %s.queuedBytes", ep);
  }
  *out = r;
  return 0;
}

/* The queued-byte record of vat vN, given N, read from the store the
 * first time. */
static inline int qbytes_find(ocap_kernel_t *k, long long id, qbytes_t **out) {
  struct ocap__queue *q = k->q;
  /* A vat's message is charged when sent and released when delivered,
   * usually the next crank: the last record found is checked first. */
  qbytes_t *r = q->qlast;
  if (!r || r->id != id) {
    r = ocap__idtable_find(&q->qb, id);
    if (!r) {
      int rc = qbytes_load(k, id, &r);
      if (rc)
        return rc;
    }
    q->qlast = r;
  }
  *out = r;
  return 0;
}

/* The queued-byte record of endpoint ep; *out is NULL for an endpoint that
 * is not a vat id written as the kernel writes it. */
static int qbytes_get(ocap_kernel_t *k, const char *ep, qbytes_t **out) {
  long long id = vat_number(ep);
  *out = NULL;
  return id < 0 ? 0 : qbytes_find(k, id, out);
}

/* Lists record r as changed by this crank. */
__attribute__((noinline)) static int qbytes_dirty(ocap_kernel_t *k, qbytes_t *r) {
  struct ocap__queue *q = k->q;
  if (ocap__reserve(&q->qdirty, &q->capqdirty, q->nqdirty + 1, sizeof *q->qdirty, 16) ||
      ocap__reserve(&q->qsync, &q->capqsync, q->nqsync + q->nqdirty + 1, sizeof *q->qsync, 16))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory charging queued bytes");
  q->qdirty[q->nqdirty++] = r;
  r->dirty = 1;
  return 0;
}

/* Sets vat ep's count to n (-1: no key), listing the record as changed. */
static inline int qbytes_set(ocap_kernel_t *k, qbytes_t *r, long long n) {
  int rc = r->dirty ? 0 : qbytes_dirty(k, r);
  if (!rc)
    r->n = n;
  return rc;
}

/* Adds delta to the count of record r (vat ep's). */
static inline int charge(ocap_kernel_t *k, qbytes_t *r, long long delta) {
  long long n = r->n;
  if (n < 0 && delta < 0)
    return 0;
  n = (n < 0 ? 0 : n) + delta;
  if (n > COUNT_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "count %lld for key 'v%lld.queuedBytes' is out of range",
                        n, r->id);
  return qbytes_set(k, r, n > 0 ? n : -1);
}

int ocap__charge_vat(ocap_kernel_t *k, long long vat, long long delta) {
  qbytes_t *r;
  int rc = qbytes_find(k, vat, &r);
  return rc ? rc : charge(k, r, delta);
}

int ocap__charge_queued(ocap_kernel_t *k, const char *ep, long long delta) {
  long long vat = vat_number(ep);
  if (vat >= 0)
    return ocap__charge_vat(k, vat, delta);
  /* Not a vat id the kernel writes (a sender read from a damaged item):
   * its count is kept in the store only. */
  long long n;
  int rc = ocap__get_count(k, -1, &n, "%s.queuedBytes", ep);
  if (rc)
    return rc;
  if (n < 0 && delta < 0)
    return 0;
  n = (n < 0 ? 0 : n) + delta;
  if (n > COUNT_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "count %lld for key '%s.queuedBytes' is out of range", n,
                        ep);
  return n > 0 ? ocap__seti(k, n, "%s.queuedBytes", ep) : ocap__delv(k, "%s.queuedBytes", ep);
}

int ocap__clear_queued(ocap_kernel_t *k, const char *ep) {
  qbytes_t *r;
  int rc = qbytes_get(k, ep, &r);
  if (rc)
    return rc;
  return r ? qbytes_set(k, r, -1) : ocap__delv(k, "%s.queuedBytes", ep);
}

void ocap__queued_forget(ocap_kernel_t *k, const char *ep) {
  struct ocap__queue *q = k->q;
  long long id = vat_number(ep);
  qbytes_t *r = id < 0 ? NULL : ocap__idtable_find(&q->qb, id);
  /* A changed record holds a count the store does not have yet. */
  if (r && !r->dirty && !r->unsynced) {
    if (r == q->qlast)
      q->qlast = NULL;
    free(ocap__idtable_remove(&q->qb, id));
  }
}

long long ocap_kernel_queued_bytes(ocap_kernel_t *k, const char *ep) {
  qbytes_t *r;
  long long n;
  if (qbytes_get(k, ep, &r))
    return 0;
  if (r)
    return r->n < 0 ? 0 : r->n;
  return ocap__get_count(k, 0, &n, "%s.queuedBytes", ep) ? 0 : n;
}

/*
 * Enqueues a send, taking references: its references and its capdata,
 * translated from ep's erefs (exporting what ep names for the first time)
 * into a block the item takes as it is, so a message costs one allocation
 * and no copy. A vat's message names its sender, so that what the vat has
 * waiting is charged to it until the message is delivered or dropped.
 */
int ocap__enqueue_send(ocap_kernel_t *k, const char *target, const char *result, ocap__kp_t *rrec,
                       const char *ep, const ocap_capdata_t *methargs, const char *sender) {
  struct ocap__queue *q = k->q;
  ocap__buf_t b = {q->spare, 0, q->spare ? q->spare_cap : 0};
  q->spare = NULL;
  int rc = ocap__capdata_e2k(k, ep, methargs, &b);
  item_t *it = NULL;
  if (!rc)
    rc = enqueue_slot(k, &it);
  long tl = 0, rl = 0, sl = 0;
  if (!rc) {
    tl = ocap__ref_copy(it->u.s.target, target);
    rl = ocap__ref_copy(it->u.s.result, result ? result : "");
    sl = ocap__ref_copy(it->u.s.sender, sender ? sender : "");
    if (tl < 0 || rl < 0 || sl < 0)
      rc = ocap__broken(k, OCAP_ECORRUPT, "a reference of a message is too long");
  }
  if (rc) {
    free(b.p);
    return rc;
  }
  it->kind = ITEM_SEND;
  it->p = b.p;
  it->len = b.len;
  it->u.s.cap = b.cap;
  it->u.s.rid = result && rrec ? ocap__kp_id(rrec) : -1;
  it->u.s.sid = sender ? vat_number(sender) : -1;
  it->u.s.tid = ocap__kref_number(target, REF_KO);
  it->u.s.bytes = (size_t)(5 + tl + 1 + (rl ? rl : 1) + (sl ? 1 + sl : 0) + 1) + b.len;
  q->tail++;
  if (sender)
    rc = it->u.s.sid >= 0 ? ocap__charge_vat(k, it->u.s.sid, (long long)it->u.s.bytes)
                          : ocap__charge_queued(k, sender, (long long)it->u.s.bytes);
  if (!rc)
    rc = it->u.s.tid >= 0 ? ocap__ko_count(k, it->u.s.tid, 1, 1) : ocap__incref(k, target);
  if (!rc && result)
    rc = rrec ? ocap__kp_incref(k, rrec) : ocap__incref(k, result);
  if (!rc)
    rc = ocap__incref_slots(k, b.p, b.len);
  return rc;
}

/*
 * Parses the head of a send item, "send <target> <result> [<sender>]\n...",
 * into target, result and sender (OCAP_REF_MAX bytes each; result is ""
 * for none, written "-", sender "" for the host's messages and items
 * queued before senders were recorded), and sets *capdata to where its
 * capdata starts. An item that does not parse whole is corruption, never
 * cut to fit.
 */
int ocap__parse_send(ocap_kernel_t *k, const char *item, size_t len, char *target, char *result,
                     char *sender, size_t *capdata) {
  const char *nl = memchr(item, '\n', len);
  const char *t = item + 5, *sp = nl ? memchr(t, ' ', (size_t)(nl - t)) : NULL;
  char sv[64];
  if (!nl || len < 5 || memcmp(item, "send ", 5) != 0 || !sp)
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s is not a send",
                        ocap__shown(item, len, sv));
  const char *sp2 = memchr(sp + 1, ' ', (size_t)(nl - sp - 1));
  const char *rend = sp2 ? sp2 : nl;
  size_t tl = (size_t)(sp - t), rl = (size_t)(rend - sp - 1);
  size_t sl = sp2 ? (size_t)(nl - sp2 - 1) : 0;
  if (tl == 0 || tl >= OCAP_REF_MAX || rl == 0 || rl >= OCAP_REF_MAX || sl >= OCAP_REF_MAX ||
      (sp2 && sl == 0))
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s has a bad reference",
                        ocap__shown(item, len, sv));
  memcpy(target, t, tl);
  target[tl] = '\0';
  memcpy(result, sp + 1, rl);
  result[rl] = '\0';
  memcpy(sender, sp2 ? sp2 + 1 : "", sl);
  sender[sl] = '\0';
  if (!ocap__valid_kref(target) ||
      (strcmp(result, "-") != 0 && (!ocap__valid_kref(result) || !ocap__is_kpid(result))) ||
      (sl && sender[0] != 'v'))
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s has a bad reference",
                        ocap__shown(item, len, sv));
  if (strcmp(result, "-") == 0)
    result[0] = '\0';
  *capdata = (size_t)(nl + 1 - item);
  return 0;
}

/*
 * Parses a notify item's stored text, "notify <ep> <kpid>...", into it:
 * its kpids go to it->small when they fit, else to a malloc'd array
 * (ocap__qitem_free). An item that does not parse whole is corruption.
 */
static int parse_notify(ocap_kernel_t *k, const char *item, size_t len, ocap__qitem_t *it) {
  char sv[64];
  size_t count = 0;
  for (size_t i = 0; i < len; i++)
    count += item[i] == ' ';
  if (len < 7 || memcmp(item, "notify ", 7) != 0 || count < 2)
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s is not a notify",
                        ocap__shown(item, len, sv));
  char(*v)[OCAP_REF_MAX] =
      count - 1 <= OCAP_NOTIFY_MERGE ? it->small : malloc((count - 1) * OCAP_REF_MAX);
  if (!v)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading a notify");
  it->kpids = v;
  size_t got = 0;
  for (size_t i = 7, word = 0; i <= len; word++) {
    size_t j = i;
    while (j < len && item[j] != ' ')
      j++;
    /* Never more words than counted: the count sized v. */
    int ok = word < count && j > i && j - i < OCAP_REF_MAX;
    char *dst = !ok ? NULL : word == 0 ? it->ep : v[got++];
    if (ok) {
      memcpy(dst, item + i, j - i);
      dst[j - i] = '\0';
      ok = word == 0 ? ocap__valid_ep(dst) : ocap__valid_kref(dst) && ocap__is_kpid(dst);
    }
    if (!ok)
      return ocap__broken(k, OCAP_ECORRUPT,
                          "corrupt database: run-queue item %s has a bad reference",
                          ocap__shown(item, len, sv));
    i = j + 1;
  }
  it->n = got;
  return 0;
}

int ocap__qitem_text(ocap_kernel_t *k, const ocap__qitem_t *it, ocap__buf_t *b) {
  if (send_text(b, it->target, it->result, it->sender, it->enc, it->elen))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory parking a message");
  return 0;
}

int ocap__release_send(ocap_kernel_t *k, const char *target, long long tid, const char *result,
                       ocap__kp_t *rrec, const char *enc, size_t len) {
  if (tid < 0)
    tid = ocap__kref_number(target, REF_KO);
  int rc = tid >= 0 ? ocap__ko_count(k, tid, -1, -1) : ocap__decref(k, target);
  if (!rc && result)
    rc = rrec ? ocap__kp_decref(k, rrec) : ocap__decref(k, result);
  if (!rc)
    rc = ocap__decref_slots(k, enc, len);
  return rc;
}

/* Fills *out with text item it, parsed and checked: apart from item_view,
 * whose items the kernel queued need neither. */
__attribute__((noinline)) static int item_parse(ocap_kernel_t *k, const item_t *it,
                                                ocap__qitem_t *out) {
  if (it->len >= 5 && memcmp(it->p, "send ", 5) == 0) {
    size_t at;
    out->notify = 0;
    out->rid = -1;
    int rc = ocap__parse_send(k, it->p, it->len, out->target, out->result, out->sender, &at);
    out->sid = rc || !out->sender[0] ? -1 : vat_number(out->sender);
    out->tid = rc ? -1 : ocap__kref_number(out->target, REF_KO);
    out->enc = it->p + at;
    out->elen = it->len - at;
    out->bytes = it->len;
    return rc;
  }
  if (it->len >= 7 && memcmp(it->p, "notify ", 7) == 0) {
    out->notify = 1;
    int rc = parse_notify(k, it->p, it->len, out);
    if (rc)
      ocap__qitem_free(out);
    return rc;
  }
  return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: unknown run-queue item");
}

/* Fills *out with item it, parsing (and checking) it if it is text. The
 * references are copied whole (a fixed size is a few moves, no call). */
static int item_view(ocap_kernel_t *k, const item_t *it, ocap__qitem_t *out) {
  out->kpids = NULL;
  out->ids = NULL;
  if (it->kind == ITEM_SEND) {
    out->notify = 0;
    memcpy(out->target, it->u.s.target, OCAP_REF_MAX);
    memcpy(out->result, it->u.s.result, OCAP_REF_MAX);
    memcpy(out->sender, it->u.s.sender, OCAP_REF_MAX);
    out->rid = it->u.s.rid;
    out->sid = it->u.s.sid;
    out->tid = it->u.s.tid;
    out->enc = it->p;
    out->elen = it->len;
    out->bytes = it->u.s.bytes;
    return 0;
  }
  if (it->kind == ITEM_NOTIFY) {
    out->notify = 1;
    ocap__ep_text(it->u.n.ep, out->ep);
    out->kpids = out->small;
    for (size_t i = 0; i < it->u.n.n; i++) {
      memcpy(out->small[i], "kp", 2);
      out->small[i][2 + ocap__fmt_ll(out->small[i] + 2, it->u.n.kp[i])] = '\0';
      out->smallids[i] = it->u.n.kp[i];
    }
    out->ids = out->smallids;
    out->n = it->u.n.n;
    return 0;
  }
  return item_parse(k, it, out);
}

/* Pops the run queue's head into *out. Returns 1 when there was an item,
 * 0 when the queue is empty, or a negative code. A send's capdata is lent,
 * not copied: it stays in the ring until the crank commits, and an abort
 * only moves the head back over it (see struct ocap__queue); the first
 * item a crank takes is kept past a commit until ocap__queue_return.
 * Nothing in a crank changes an item it took: a notify joins only an item
 * after the head. */
int ocap__dequeue(ocap_kernel_t *k, ocap__qitem_t *out) {
  LOAD(k);
  struct ocap__queue *q = k->q;
  if (q->head >= q->tail)
    return 0;
  int rc = item_view(k, slot(q, q->head), out);
  if (rc)
    return rc;
  if (q->lent < 0)
    q->lent = q->head;
  q->head++;
  return 1;
}

int ocap__queue_lent_back(const ocap_kernel_t *k) {
  return k->q->lent >= 0 && k->q->head == k->q->lent;
}

/* The largest block kept for reuse: a message's capdata is usually small. */
#define SPARE_MAX 4096

void ocap__queue_return(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  /* Most cranks deliver one message and queue one: the block of the one
   * delivered takes the next one's capdata, which spares a malloc and a
   * free per message. */
  if (q->orphan && !q->spare && q->orphan_cap && q->orphan_cap <= SPARE_MAX) {
    q->spare = q->orphan;
    q->spare_cap = q->orphan_cap;
  } else {
    free(q->orphan);
  }
  q->orphan = NULL;
  q->lent = -1;
}
