/*
 * queue.c -- the run queue (see queue.h): items in, items out, and the
 * parsing of an item back into its parts.
 */
#include "queue.h"

#include <stdlib.h>
#include <string.h>

#include "promise.h"
#include "refs.h"

#define NOTIFY_MERGE 16 /* notifies merged into one run-queue item */

/* An item: a send or a notify, as text (queue.h), malloc'd. */
typedef struct item {
  char *p;
  size_t len;
} item_t;

/*
 * The run queue in memory (kstate.h, convention 6). Item n lives at
 * v[n & mask]. `head` and `tail` are the bounds now, `chead` and `ctail`
 * those at the last commit, which the store holds; the items from chead to
 * tail stay in the ring, those a crank popped included, so that an abort
 * only has to move the bounds back. The one committed item a crank can
 * change is the last one, when a notify joins it: its committed text waits
 * in `undo` until the crank ends.
 */
struct ocap__queue {
  int loaded;
  long long head, tail, chead, ctail;
  item_t *v;
  size_t mask;
  long long undo_at; /* the index of the changed committed item, or -1 */
  item_t undo;
};

static item_t *slot(struct ocap__queue *q, long long n) {
  return &q->v[(size_t)n & q->mask];
}

/* Makes room for item `tail` while keeping every item from chead on. */
static int ring_reserve(struct ocap__queue *q) {
  size_t need = (size_t)(q->tail - q->chead) + 1;
  size_t cap = q->v ? q->mask + 1 : 0;
  if (need <= cap)
    return 0;
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

/* Frees the items from `from` to `to` (exclusive). */
static void free_items(struct ocap__queue *q, long long from, long long to) {
  for (long long n = from; n < to; n++) {
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
    slot(q, n)->p = b.p;
    slot(q, n)->len = b.len;
    q->tail++;
  }
  if (rc) {
    free_items(q, head, q->tail);
    return rc;
  }
  q->ctail = q->tail;
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
  free(q->v);
  free(q);
}

int ocap__queue_check(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  if (!q->loaded)
    return 0;
  char v[32];
  int rc = 0;
  if (q->head)
    rc = ocap__check_key(k, v, ocap__fmt_ll(v, q->head), "runQueue.head");
  if (!rc && q->tail)
    rc = ocap__check_key(k, v, ocap__fmt_ll(v, q->tail), "runQueue.tail");
  for (long long n = q->head; n < q->tail && !rc; n++)
    rc = ocap__check_key(k, slot(q, n)->p, slot(q, n)->len, "runQueue.%lld", n);
  return rc;
}

void ocap__queue_forget(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  if (!q->loaded || q->head != q->chead || q->tail != q->ctail || q->undo_at >= 0)
    return;
  free_items(q, q->chead, q->ctail);
  q->loaded = 0;
}

int ocap__queue_prepare(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  int rc = 0;
  if (!q->loaded)
    return 0;
  for (long long n = q->chead; n < q->head && n < q->ctail && !rc; n++)
    rc = ocap__delv(k, "runQueue.%lld", n);
  for (long long n = q->head > q->ctail ? q->head : q->ctail; n < q->tail && !rc; n++)
    rc = ocap__setn(k, slot(q, n)->p, slot(q, n)->len, "runQueue.%lld", n);
  if (!rc && q->undo_at >= q->head)
    rc = ocap__setn(k, slot(q, q->undo_at)->p, slot(q, q->undo_at)->len, "runQueue.%lld",
                    q->undo_at);
  if (!rc && q->head != q->chead)
    rc = ocap__seti(k, q->head, "runQueue.head");
  if (!rc && q->tail != q->ctail)
    rc = ocap__seti(k, q->tail, "runQueue.tail");
  return rc;
}

void ocap__queue_done(ocap_kernel_t *k) {
  struct ocap__queue *q = k->q;
  if (!q->loaded)
    return;
  free_items(q, q->chead, q->head);
  if (q->undo_at >= 0)
    free(q->undo.p);
  q->undo_at = -1;
  q->chead = q->head;
  q->ctail = q->tail;
}

void ocap__queue_abort(ocap_kernel_t *k, int cleared) {
  struct ocap__queue *q = k->q;
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

int ocap__enqueue(ocap_kernel_t *k, const char *item, size_t len) {
  LOAD(k);
  struct ocap__queue *q = k->q;
  if (q->tail >= COUNT_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "counter 'runQueue.tail' is exhausted");
  char *p = malloc(len + 1);
  if (!p || ring_reserve(q)) {
    free(p);
    return ocap__broken(k, OCAP_ENOMEM, "out of memory queueing an item");
  }
  memcpy(p, item, len);
  p[len] = '\0';
  slot(q, q->tail)->p = p;
  slot(q, q->tail)->len = len;
  q->tail++;
  return 0;
}

long long ocap_kernel_queue_length(ocap_kernel_t *k) {
  LOAD(k);
  return k->q->tail - k->q->head;
}

/*
 * Queues a notify. When the queue's last item is already a notify for the
 * same endpoint, the promise joins it: nothing can happen between the two,
 * so one delivery tells both, and a pipelined chain costs one notify crank
 * instead of one per link.
 */
int ocap__enqueue_notify(ocap_kernel_t *k, const char *ep, const char *kpid) {
  size_t el = strlen(ep), pl = strlen(kpid);
  if (!ocap__valid_ep(ep))
    return ocap__broken(k, OCAP_ECORRUPT, "cannot notify invalid endpoint '%.60s'", ep);
  if (!ocap__valid_kref(kpid))
    return ocap__broken(k, OCAP_ECORRUPT, "cannot notify invalid promise '%.60s'", kpid);
  int rc = ocap__incref(k, kpid);
  if (rc)
    return rc;
  LOAD(k);
  struct ocap__queue *q = k->q;
  item_t *last = q->tail > q->head ? slot(q, q->tail - 1) : NULL;
  if (last && last->len > 8 + el && memcmp(last->p, "notify ", 7) == 0 &&
      memcmp(last->p + 7, ep, el) == 0 && last->p[7 + el] == ' ') {
    size_t count = 0;
    for (size_t i = 0; i < last->len; i++)
      count += last->p[i] == ' ';
    if (count - 1 < NOTIFY_MERGE) {
      /* A committed item keeps its text for an abort; one this crank
       * queued, or changed already, is changed in place. */
      int keep = q->tail - 1 < q->ctail && q->undo_at != q->tail - 1;
      char *p = keep ? malloc(last->len + pl + 2) : realloc(last->p, last->len + pl + 2);
      if (!p)
        return ocap__broken(k, OCAP_ENOMEM, "out of memory queueing a notify");
      if (keep) {
        memcpy(p, last->p, last->len);
        q->undo = *last;
        q->undo_at = q->tail - 1;
      }
      p[last->len] = ' ';
      memcpy(p + last->len + 1, kpid, pl);
      last->p = p;
      last->len += pl + 1;
      p[last->len] = '\0';
      return 0;
    }
  }
  char item[3 * OCAP_REF_MAX];
  memcpy(item, "notify ", 7);
  memcpy(item + 7, ep, el);
  item[7 + el] = ' ';
  memcpy(item + 8 + el, kpid, pl);
  return ocap__enqueue(k, item, 8 + el + pl);
}

/*
 * What vat ep has waiting in the kernel (its messages in the run queue or
 * parked on promises) is kept under "<ep>.queuedBytes", absent when none.
 * A vat that is gone has no count, and nothing is charged to it any more.
 */
int ocap__charge_queued(ocap_kernel_t *k, const char *ep, long long delta) {
  long long n;
  int rc = ocap__get_count(k, -1, &n, "%s.queuedBytes", ep);
  if (rc)
    return rc;
  if (n < 0 && delta < 0)
    return 0;
  n = (n < 0 ? 0 : n) + delta;
  return n > 0 ? ocap__seti(k, n, "%s.queuedBytes", ep) : ocap__delv(k, "%s.queuedBytes", ep);
}

long long ocap_kernel_queued_bytes(ocap_kernel_t *k, const char *ep) {
  long long n;
  return ocap__get_count(k, 0, &n, "%s.queuedBytes", ep) ? 0 : n;
}

/* Enqueues a send whose capdata is already in krefs, taking references. A
 * vat's message names its sender after the result, so that what the vat
 * has waiting is charged to it until the message is delivered or dropped. */
int ocap__enqueue_send(ocap_kernel_t *k, const char *target, const char *result, const char *enc,
                       size_t elen, const char *sender) {
  ocap__buf_t b = {0};
  int rc = 0;
  if (ocap__buf_adds(&b, "send ") || ocap__buf_adds(&b, target) || ocap__buf_add(&b, " ", 1) ||
      ocap__buf_adds(&b, result ? result : "-") || (sender && ocap__buf_add(&b, " ", 1)) ||
      (sender && ocap__buf_adds(&b, sender)) || ocap__buf_add(&b, "\n", 1) ||
      ocap__buf_add(&b, enc, elen))
    rc = ocap__broken(k, OCAP_ENOMEM, "out of memory queueing a message");
  if (!rc)
    rc = ocap__enqueue(k, b.p, b.len);
  if (!rc && sender)
    rc = ocap__charge_queued(k, sender, (long long)b.len);
  if (!rc)
    rc = ocap__incref(k, target);
  if (!rc && result)
    rc = ocap__incref(k, result);
  if (!rc)
    rc = ocap__incref_slots(k, enc, elen);
  free(b.p);
  return rc;
}

/*
 * Parses the head of a send item, "send <target> <result> [<sender>]\n...",
 * into target, result and sender (OCAP_REF_MAX bytes each; result is "-"
 * for none, sender "" for the host's messages and items queued before
 * senders were recorded), and sets *capdata to where its capdata starts.
 * An item that does not parse whole is corruption, never cut to fit.
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
  *capdata = (size_t)(nl + 1 - item);
  return 0;
}

/*
 * The endpoint and kpids of a notify item ("notify <ep> <kpid>..."): *kpids
 * is malloc'd (caller frees) and holds *n of them. An item that does not
 * parse whole is corruption.
 */
int ocap__parse_notify(ocap_kernel_t *k, const char *item, size_t len, char *ep,
                       char (**kpids)[OCAP_REF_MAX], size_t *n) {
  char sv[64];
  *kpids = NULL;
  *n = 0;
  size_t count = 0;
  for (size_t i = 0; i < len; i++)
    count += item[i] == ' ';
  if (len < 7 || memcmp(item, "notify ", 7) != 0 || count < 2)
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s is not a notify",
                        ocap__shown(item, len, sv));
  char(*v)[OCAP_REF_MAX] = malloc((count - 1) * OCAP_REF_MAX);
  if (!v)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading a notify");
  size_t got = 0;
  for (size_t i = 7, word = 0; i <= len; word++) {
    size_t j = i;
    while (j < len && item[j] != ' ')
      j++;
    char *dst = word == 0 ? ep : v[got++];
    int ok = j > i && j - i < OCAP_REF_MAX;
    if (ok) {
      memcpy(dst, item + i, j - i);
      dst[j - i] = '\0';
      ok = word == 0 ? ocap__valid_ep(dst) : ocap__valid_kref(dst) && ocap__is_kpid(dst);
    }
    if (!ok) {
      free(v);
      return ocap__broken(k, OCAP_ECORRUPT,
                          "corrupt database: run-queue item %s has a bad reference",
                          ocap__shown(item, len, sv));
    }
    i = j + 1;
  }
  *kpids = v;
  *n = got;
  return 0;
}

int ocap__release_send(ocap_kernel_t *k, const char *target, const char *result, const char *enc,
                       size_t len) {
  int rc = ocap__decref(k, target);
  if (!rc && result)
    rc = ocap__decref(k, result);
  if (!rc)
    rc = ocap__decref_slots(k, enc, len);
  return rc;
}

/* Pops the run queue's head into b. Returns 1 when there was an item, 0
 * when the queue is empty, or a negative code. The item itself stays in
 * the ring until the crank commits (see struct ocap__queue). */
int ocap__dequeue(ocap_kernel_t *k, ocap__buf_t *b) {
  LOAD(k);
  struct ocap__queue *q = k->q;
  if (q->head >= q->tail)
    return 0;
  item_t *it = slot(q, q->head);
  b->len = 0;
  if (ocap__buf_add(b, it->p, it->len))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading the run queue");
  q->head++;
  return 1;
}
