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

/* Reads the run queue's bounds, which must satisfy head <= tail. */
static int queue_bounds(ocap_kernel_t *k, long long *head, long long *tail) {
  int rc = ocap__get_count(k, 0, head, "runQueue.head");
  if (!rc)
    rc = ocap__get_count(k, 0, tail, "runQueue.tail");
  if (!rc && *head > *tail)
    rc = ocap__broken(k, OCAP_ECORRUPT,
                      "corrupt database: runQueue.head (%lld) is after runQueue.tail "
                      "(%lld)",
                      *head, *tail);
  return rc;
}

int ocap__enqueue(ocap_kernel_t *k, const char *item, size_t len) {
  long long tail;
  int rc = ocap__get_count(k, 0, &tail, "runQueue.tail");
  if (!rc && tail >= COUNT_MAX)
    rc = ocap__broken(k, OCAP_ECORRUPT, "counter 'runQueue.tail' is exhausted");
  if (!rc)
    rc = ocap__setn(k, item, len, "runQueue.%lld", tail);
  if (!rc)
    rc = ocap__seti(k, tail + 1, "runQueue.tail");
  return rc;
}

long long ocap_kernel_queue_length(ocap_kernel_t *k) {
  long long head, tail;
  int rc = queue_bounds(k, &head, &tail);
  return rc ? rc : tail - head;
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
  long long head, tail;
  if (!rc)
    rc = queue_bounds(k, &head, &tail);
  if (rc)
    return rc;
  if (tail > head) {
    ocap__buf_t last = {0};
    int got = ocap__getb(k, &last, "runQueue.%lld", tail - 1);
    if (got < 0)
      return got;
    if (got && last.len > 8 + el && memcmp(last.p, "notify ", 7) == 0 &&
        memcmp(last.p + 7, ep, el) == 0 && last.p[7 + el] == ' ') {
      size_t count = 0;
      for (size_t i = 0; i < last.len; i++)
        count += last.p[i] == ' ';
      if (count - 1 < NOTIFY_MERGE) {
        if (ocap__buf_add(&last, " ", 1) || ocap__buf_add(&last, kpid, pl))
          rc = ocap__broken(k, OCAP_ENOMEM, "out of memory queueing a notify");
        else
          rc = ocap__setn(k, last.p, last.len, "runQueue.%lld", tail - 1);
        free(last.p);
        return rc;
      }
    }
    free(last.p);
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
 * when the queue is empty, or a negative code. */
int ocap__dequeue(ocap_kernel_t *k, ocap__buf_t *b) {
  long long head, tail;
  int rc = queue_bounds(k, &head, &tail);
  if (rc)
    return rc;
  if (head >= tail)
    return 0;
  rc = ocap__getb(k, b, "runQueue.%lld", head);
  if (rc == 0)
    return ocap__broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %lld is missing", head);
  if (rc > 0)
    rc = ocap__delv(k, "runQueue.%lld", head);
  if (!rc)
    rc = ocap__seti(k, head + 1, "runQueue.head");
  return rc ? rc : 1;
}
