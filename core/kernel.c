/*
 * kernel.c -- references, c-lists, promises, the run queue and the crank.
 *
 * Everything the kernel knows is kept in the store under the keys listed in
 * docs/storage.md; this file only holds scratch buffers. That is what makes
 * a crank atomic: abort the store's crank buffer and every table is back.
 */
#include "kernel.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 160
#define NOTIFY_MERGE 16 /* notifies merged into one run-queue item */
#define VAL_MAX 256

struct ocap_kernel {
  ocap_store_t *s;
  ocap_kernel_hooks_t hooks;
  long long cranks;
  char errmsg[256];
};

/* A growable byte buffer for values too large for the stack. */
typedef struct buf {
  char *p;
  size_t len, cap;
} buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap * 2 : 256;
  while (cap < b->len + extra + 1)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p)
    return OCAP_ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int buf_add(buf_t *b, const char *s, size_t n) {
  if (buf_reserve(b, n))
    return OCAP_ENOMEM;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

static int buf_adds(buf_t *b, const char *s) {
  return buf_add(b, s, strlen(s));
}

/* Appends s as the inside of a JSON string (JSON.stringify's escaping). */
static int buf_add_json(buf_t *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[7];
    size_t n = 0;
    if (c == '"' || c == '\\') {
      esc[n++] = '\\';
      esc[n++] = (char)c;
    } else if (c == '\n') {
      esc[n++] = '\\';
      esc[n++] = 'n';
    } else if (c == '\t') {
      esc[n++] = '\\';
      esc[n++] = 't';
    } else if (c == '\r') {
      esc[n++] = '\\';
      esc[n++] = 'r';
    } else if (c < 0x20) {
      memcpy(esc, "\\u00", 4);
      n = 4;
      esc[n++] = hex[c >> 4];
      esc[n++] = hex[c & 15];
    } else {
      esc[n++] = (char)c;
    }
    if (buf_add(b, esc, n))
      return OCAP_ENOMEM;
  }
  return 0;
}

static int fail(ocap_kernel_t *k, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(k->errmsg, sizeof k->errmsg, fmt, ap);
  va_end(ap);
  return code;
}

/* ---- store access with formatted keys ---- */

/* Copies a reference (at most OCAP_REF_MAX - 1 bytes). */
static void refcpy(char *dst, const char *src) {
  size_t n = strlen(src);
  if (n >= OCAP_REF_MAX)
    n = OCAP_REF_MAX - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Writes n in decimal at p; returns the number of bytes. */
static size_t fmt_ll(char *p, long long n) {
  char tmp[24];
  size_t len = 0;
  unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
  do {
    tmp[len++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  size_t out = 0;
  if (n < 0)
    p[out++] = '-';
  while (len)
    p[out++] = tmp[--len];
  return out;
}

/*
 * Formats a key. Only %s and %lld occur in keys, and vsnprintf was a tenth
 * of the crank's cost, so this small formatter does the job instead.
 */
static size_t keyf(char *key, const char *fmt, va_list ap) {
  size_t n = 0;
  for (const char *f = fmt; *f && n < KEY_MAX - 24; f++) {
    if (*f != '%') {
      key[n++] = *f;
    } else if (f[1] == 's') {
      const char *s = va_arg(ap, const char *);
      size_t l = strlen(s);
      if (l > KEY_MAX - 24 - n)
        l = KEY_MAX - 24 - n;
      memcpy(key + n, s, l);
      n += l;
      f++;
    } else if (f[1] == 'l' && f[2] == 'l' && f[3] == 'd') {
      n += fmt_ll(key + n, va_arg(ap, long long));
      f += 3;
    } else {
      key[n++] = *f;
    }
  }
  key[n] = '\0';
  return n;
}

/* Declares `key`, formats fmt and the variadic arguments into it, and sets
 * `kl` to its length. */
#define FORMAT_KEY(key, kl, fmt)                                                                   \
  char key[KEY_MAX];                                                                               \
  size_t kl;                                                                                       \
  do {                                                                                             \
    va_list ap_;                                                                                   \
    va_start(ap_, fmt);                                                                            \
    kl = keyf(key, fmt, ap_);                                                                      \
    va_end(ap_);                                                                                   \
  } while (0)

/* Copies a small value into val (VAL_MAX bytes). Returns 1 found, 0 not. */
static int getv(ocap_kernel_t *k, char *val, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  if (ocap_store_get(k->s, key, kl, &v, &vl) != 1)
    return 0;
  if (vl >= VAL_MAX)
    vl = VAL_MAX - 1;
  memcpy(val, v, vl);
  val[vl] = '\0';
  return 1;
}

/* Reads a large value into a buffer (reset first). Returns 1 found, 0 not. */
static int getb(ocap_kernel_t *k, buf_t *b, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  b->len = 0;
  if (ocap_store_get(k->s, key, kl, &v, &vl) != 1)
    return 0;
  return buf_add(b, v, vl) ? 0 : 1;
}

static int has(ocap_kernel_t *k, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  return ocap_store_get(k->s, key, kl, &v, &vl) == 1;
}

static int setn(ocap_kernel_t *k, const char *val, size_t vl, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  return ocap_store_set(k->s, key, kl, val, vl);
}

#define setv(k, val, ...) setn((k), (val), strlen(val), __VA_ARGS__)

static int delv(ocap_kernel_t *k, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  return ocap_store_delete(k->s, key, kl);
}

static long long geti(ocap_kernel_t *k, long long dflt, const char *fmt, ...) {
  char val[VAL_MAX];
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  if (ocap_store_get(k->s, key, kl, &v, &vl) != 1)
    return dflt;
  if (vl >= VAL_MAX)
    vl = VAL_MAX - 1;
  memcpy(val, v, vl);
  val[vl] = '\0';
  return strtoll(val, NULL, 10);
}

static int seti(ocap_kernel_t *k, long long n, const char *fmt, ...) {
  char val[32];
  FORMAT_KEY(key, kl, fmt);
  size_t vl = fmt_ll(val, n);
  return ocap_store_set(k->s, key, kl, val, vl);
}

/* Returns the counter's value and stores value + 1. */
static long long bump(ocap_kernel_t *k, const char *key) {
  long long n = geti(k, 1, "%s", key);
  seti(k, n + 1, "%s", key);
  return n;
}

/* ---- references ---- */

static int is_kpid(const char *ref) {
  return ref[0] == 'k' && ref[1] == 'p';
}
static int is_kernel_ep(const char *ep) {
  return strcmp(ep, "kernel") == 0;
}

static int valid_eref(const char *r) {
  size_t n = strlen(r);
  if (n < 3 || n >= OCAP_REF_MAX)
    return 0;
  if ((r[0] != 'o' && r[0] != 'p') || (r[1] != '+' && r[1] != '-'))
    return 0;
  for (size_t i = 2; i < n; i++) {
    char c = r[i];
    if (!((c >= '0' && c <= '9') || c == 'd' || c == 'v' || c == '/' || c == ':'))
      return 0;
  }
  return 1;
}

static int valid_kref(const char *r) {
  size_t n = strlen(r);
  if (n < 3 || n >= OCAP_REF_MAX || r[0] != 'k' || (r[1] != 'o' && r[1] != 'p'))
    return 0;
  for (size_t i = 2; i < n; i++)
    if (r[i] < '0' || r[i] > '9')
      return 0;
  return 1;
}

/* The kernel's reference count of a promise: c-list entries, queued
 * messages and notifies, and other promises' resolutions that mention it. */
static void incref(ocap_kernel_t *k, const char *kref) {
  if (!is_kpid(kref))
    return;
  seti(k, geti(k, 0, "%s.refCount", kref) + 1, "%s.refCount", kref);
}

static void decref_slots(ocap_kernel_t *k, const char *enc, size_t len);

static void free_promise(ocap_kernel_t *k, const char *kpid) {
  buf_t data = {0};
  int had = getb(k, &data, "%s.data", kpid);
  /* Only settled promises are freed, and settling removed the decider,
   * subscribers and queue already. */
  delv(k, "%s.state", kpid);
  delv(k, "%s.data", kpid);
  delv(k, "%s.refCount", kpid);
  if (had)
    decref_slots(k, data.p, data.len);
  free(data.p);
}

static void decref(ocap_kernel_t *k, const char *kref) {
  if (!is_kpid(kref))
    return;
  long long n = geti(k, 0, "%s.refCount", kref) - 1;
  char state[VAL_MAX];
  if (n > 0) {
    seti(k, n, "%s.refCount", kref);
    return;
  }
  if (getv(k, state, "%s.state", kref) && strcmp(state, "unresolved") != 0) {
    free_promise(k, kref);
    return;
  }
  /* An unresolved promise lives on while its decider can still resolve it. */
  seti(k, 0, "%s.refCount", kref);
}

/* ---- capdata encoding: "slot slot\nbody" ---- */

char *ocap_capdata_encode(const ocap_capdata_t *cd, size_t *len) {
  buf_t b = {0};
  for (size_t i = 0; i < cd->nslots; i++) {
    if ((i && buf_add(&b, " ", 1)) || buf_adds(&b, cd->slots[i])) {
      free(b.p);
      return NULL;
    }
  }
  if (buf_add(&b, "\n", 1) || buf_add(&b, cd->body, cd->blen)) {
    free(b.p);
    return NULL;
  }
  *len = b.len;
  return b.p;
}

/* A parsed capdata: slots point into a private copy. */
typedef struct pcap {
  char *copy;
  const char *slots[64];
  const char **slotv;
  size_t nslots;
  const char *body;
  size_t blen;
} pcap_t;

static void pcap_free(pcap_t *p) {
  free(p->copy);
  if (p->slotv != p->slots)
    free((void *)p->slotv);
}

static int pcap_parse(pcap_t *p, const char *enc, size_t len) {
  memset(p, 0, sizeof *p);
  p->copy = malloc(len + 1);
  if (!p->copy)
    return OCAP_ENOMEM;
  memcpy(p->copy, enc, len);
  p->copy[len] = '\0';
  char *nl = memchr(p->copy, '\n', len);
  if (!nl)
    return OCAP_EINVAL;
  *nl = '\0';
  p->body = nl + 1;
  p->blen = len - (size_t)(nl + 1 - p->copy);
  size_t count = 0;
  for (char *c = p->copy; *c; c++)
    if (*c == ' ')
      count++;
  count = p->copy[0] ? count + 1 : 0;
  p->slotv = count <= 64 ? p->slots : malloc(count * sizeof *p->slotv);
  if (!p->slotv)
    return OCAP_ENOMEM;
  char *save = NULL;
  for (char *t = strtok_r(p->copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
    p->slotv[p->nslots++] = t;
  return 0;
}

static ocap_capdata_t pcap_view(const pcap_t *p) {
  ocap_capdata_t cd = {p->body, p->blen, p->slotv, p->nslots};
  return cd;
}

static void incref_slots(ocap_kernel_t *k, const char *enc, size_t len) {
  if (len && enc[0] == '\n')
    return; /* no slots: the common case, without parsing */
  pcap_t p;
  if (pcap_parse(&p, enc, len) == 0)
    for (size_t i = 0; i < p.nslots; i++)
      incref(k, p.slotv[i]);
  pcap_free(&p);
}

static void decref_slots(ocap_kernel_t *k, const char *enc, size_t len) {
  if (len && enc[0] == '\n')
    return;
  pcap_t p;
  if (pcap_parse(&p, enc, len) == 0)
    for (size_t i = 0; i < p.nslots; i++)
      decref(k, p.slotv[i]);
  pcap_free(&p);
}

/* Builds the capdata of a kernel error `[KERNEL:<code>] <detail>`. */
static int error_capdata(buf_t *b, const char *code, const char *detail) {
  b->len = 0;
  if (buf_adds(b, "\n#{\"#error\":\"[KERNEL:") || buf_adds(b, code) || buf_adds(b, "] ") ||
      buf_add_json(b, detail) || buf_adds(b, "\",\"name\":\"Error\"}"))
    return OCAP_ENOMEM;
  return 0;
}

/* ---- kernel lifecycle ---- */

int ocap_kernel_new(ocap_store_t *store, const ocap_kernel_hooks_t *hooks, ocap_kernel_t **out) {
  ocap_kernel_t *k = calloc(1, sizeof *k);
  if (!k)
    return OCAP_ENOMEM;
  k->s = store;
  k->hooks = *hooks;
  *out = k;
  return 0;
}

void ocap_kernel_free(ocap_kernel_t *k) {
  free(k);
}

ocap_store_t *ocap_kernel_store(ocap_kernel_t *k) {
  return k->s;
}

const char *ocap_kernel_errmsg(const ocap_kernel_t *k) {
  return k->errmsg;
}

long long ocap_kernel_cranks(const ocap_kernel_t *k) {
  return k->cranks;
}

int ocap_kernel_alloc_vat_id(ocap_kernel_t *k, char *out) {
  snprintf(out, OCAP_REF_MAX, "v%lld", bump(k, "nextVatId"));
  return 0;
}

int ocap_kernel_alloc_object(ocap_kernel_t *k, const char *ep, char *out) {
  memcpy(out, "ko", 2);
  out[2 + fmt_ll(out + 2, bump(k, "nextObjectId"))] = '\0';
  return setv(k, ep, "%s.owner", out);
}

int ocap_kernel_alloc_promise(ocap_kernel_t *k, const char *ep, char *out) {
  memcpy(out, "kp", 2);
  out[2 + fmt_ll(out + 2, bump(k, "nextPromiseId"))] = '\0';
  int rc = setv(k, "unresolved", "%s.state", out);
  if (!rc && ep)
    rc = setv(k, ep, "%s.decider", out);
  if (!rc)
    rc = seti(k, 0, "%s.refCount", out);
  return rc;
}

/* ---- c-lists ---- */

static int clist_add(ocap_kernel_t *k, const char *ep, const char *kref, const char *eref) {
  int rc = setv(k, eref, "%s.c.%s", ep, kref);
  if (!rc)
    rc = setv(k, kref, "%s.c.%s", ep, eref);
  incref(k, kref);
  return rc;
}

static void clist_remove(ocap_kernel_t *k, const char *ep, const char *kref) {
  char eref[VAL_MAX];
  if (is_kernel_ep(ep) || !getv(k, eref, "%s.c.%s", ep, kref))
    return;
  delv(k, "%s.c.%s", ep, kref);
  delv(k, "%s.c.%s", ep, eref);
  decref(k, kref);
}

int ocap_kernel_eref_to_kref(ocap_kernel_t *k, const char *ep, const char *eref, char *out) {
  if (is_kernel_ep(ep)) {
    if (!valid_kref(eref))
      return fail(k, OCAP_EINVAL, "invalid kref '%s'", eref);
    refcpy(out, eref);
    return 0;
  }
  if (!valid_eref(eref))
    return fail(k, OCAP_EINVAL, "vat %s used invalid vref '%s'", ep, eref);
  if (getv(k, out, "%s.c.%s", ep, eref))
    return 0;
  if (eref[1] == '-')
    return fail(k, OCAP_EINVAL, "vat %s used unknown import '%s'", ep, eref);
  int rc =
      eref[0] == 'o' ? ocap_kernel_alloc_object(k, ep, out) : ocap_kernel_alloc_promise(k, ep, out);
  if (!rc)
    rc = clist_add(k, ep, out, eref);
  return rc;
}

int ocap_kernel_kref_to_eref(ocap_kernel_t *k, const char *ep, const char *kref, char *out) {
  if (is_kernel_ep(ep)) {
    refcpy(out, kref);
    return 0;
  }
  if (getv(k, out, "%s.c.%s", ep, kref))
    return 0;
  int promise = is_kpid(kref);
  long long n = geti(k, 1, "%s.%s", ep, promise ? "nextPromiseId" : "nextObjectId");
  seti(k, n + 1, "%s.%s", ep, promise ? "nextPromiseId" : "nextObjectId");
  out[0] = promise ? 'p' : 'o';
  out[1] = '-';
  out[2 + fmt_ll(out + 2, n)] = '\0';
  return clist_add(k, ep, kref, out);
}

/* Translates capdata slots from ep's erefs to krefs into an encoding. */
static int capdata_e2k(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *cd, buf_t *out) {
  char kref[OCAP_REF_MAX];
  for (size_t i = 0; i < cd->nslots; i++) {
    int rc = ocap_kernel_eref_to_kref(k, ep, cd->slots[i], kref);
    if (rc)
      return rc;
    if ((i && buf_add(out, " ", 1)) || buf_adds(out, kref))
      return OCAP_ENOMEM;
  }
  if (buf_add(out, "\n", 1) || buf_add(out, cd->body, cd->blen))
    return OCAP_ENOMEM;
  return 0;
}

/* Translates a stored capdata (krefs) into ep's erefs, importing as needed.
 * The erefs are written into `pool`, which must outlive `out`. */
static int capdata_k2e(ocap_kernel_t *k, const char *ep, const pcap_t *in,
                       char (*pool)[OCAP_REF_MAX], const char **slots) {
  for (size_t i = 0; i < in->nslots; i++) {
    int rc = ocap_kernel_kref_to_eref(k, ep, in->slotv[i], pool[i]);
    if (rc)
      return rc;
    slots[i] = pool[i];
  }
  return 0;
}

/* ---- the run queue ---- */

static int enqueue(ocap_kernel_t *k, const char *item, size_t len) {
  long long tail = geti(k, 0, "runQueue.tail");
  int rc = setn(k, item, len, "runQueue.%lld", tail);
  if (!rc)
    rc = seti(k, tail + 1, "runQueue.tail");
  return rc;
}

long long ocap_kernel_queue_length(ocap_kernel_t *k) {
  return geti(k, 0, "runQueue.tail") - geti(k, 0, "runQueue.head");
}

/*
 * Queues a notify. When the queue's last item is already a notify for the
 * same endpoint, the promise joins it: nothing can happen between the two,
 * so one delivery tells both, and a pipelined chain costs one notify crank
 * instead of one per link.
 */
static int enqueue_notify(ocap_kernel_t *k, const char *ep, const char *kpid) {
  size_t el = strlen(ep), pl = strlen(kpid);
  if (el >= OCAP_REF_MAX || pl >= OCAP_REF_MAX)
    return OCAP_EINVAL;
  incref(k, kpid);
  long long head = geti(k, 0, "runQueue.head"), tail = geti(k, 0, "runQueue.tail");
  if (tail > head) {
    buf_t last = {0};
    if (getb(k, &last, "runQueue.%lld", tail - 1) && last.len > 8 + el &&
        memcmp(last.p, "notify ", 7) == 0 && memcmp(last.p + 7, ep, el) == 0 &&
        last.p[7 + el] == ' ') {
      size_t count = 0;
      for (size_t i = 0; i < last.len; i++)
        count += last.p[i] == ' ';
      if (count - 1 < NOTIFY_MERGE && !buf_add(&last, " ", 1) && !buf_add(&last, kpid, pl)) {
        int rc = setn(k, last.p, last.len, "runQueue.%lld", tail - 1);
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
  return enqueue(k, item, 8 + el + pl);
}

/* Enqueues a send whose capdata is already in krefs, taking references. */
static int enqueue_send(ocap_kernel_t *k, const char *target, const char *result, const char *enc,
                        size_t elen) {
  buf_t b = {0};
  int rc = 0;
  if (buf_adds(&b, "send ") || buf_adds(&b, target) || buf_add(&b, " ", 1) ||
      buf_adds(&b, result ? result : "-") || buf_add(&b, "\n", 1) || buf_add(&b, enc, elen))
    rc = OCAP_ENOMEM;
  if (!rc)
    rc = enqueue(k, b.p, b.len);
  if (!rc) {
    incref(k, target);
    if (result)
      incref(k, result);
    incref_slots(k, enc, elen);
  }
  free(b.p);
  return rc;
}

/* ---- syscalls ---- */

static int subscribers_add(ocap_kernel_t *k, const char *kpid, const char *ep) {
  char subs[VAL_MAX];
  buf_t b = {0};
  int found = getv(k, subs, "%s.subscribers", kpid);
  if (found) {
    char copy[VAL_MAX], *save = NULL;
    memcpy(copy, subs, sizeof copy);
    for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
      if (strcmp(t, ep) == 0)
        return 0;
    buf_adds(&b, subs);
    buf_add(&b, " ", 1);
  }
  buf_adds(&b, ep);
  int rc = b.p ? setn(k, b.p, b.len, "%s.subscribers", kpid) : OCAP_ENOMEM;
  free(b.p);
  return rc;
}

int ocap_kernel_send(ocap_kernel_t *k, const char *ep, const char *target,
                     const ocap_capdata_t *methargs, const char *result) {
  char tk[OCAP_REF_MAX], rk[OCAP_REF_MAX];
  int rc = ocap_kernel_eref_to_kref(k, ep, target, tk);
  if (rc)
    return rc;
  if (result) {
    if (!is_kernel_ep(ep)) {
      if (!valid_eref(result) || result[0] != 'p' || result[1] != '+')
        return fail(k, OCAP_EINVAL, "vat %s used invalid result vref '%s'", ep, result);
      if (has(k, "%s.c.%s", ep, result))
        return fail(k, OCAP_EINVAL, "vat %s reused result vref '%s'", ep, result);
    }
    rc = ocap_kernel_eref_to_kref(k, ep, result, rk);
    if (rc)
      return rc;
    /* Until it is delivered, nobody decides a result promise: the kernel
     * will hand that right to the vat that receives the message. */
    delv(k, "%s.decider", rk);
  }
  buf_t enc = {0};
  rc = capdata_e2k(k, ep, methargs, &enc);
  if (!rc)
    rc = enqueue_send(k, tk, result ? rk : NULL, enc.p, enc.len);
  /* The sender always wants its result: subscribe it here, which saves
   * every send a subscribe syscall. */
  if (!rc && result)
    rc = subscribers_add(k, rk, ep);
  free(enc.p);
  return rc;
}

int ocap_kernel_subscribe(ocap_kernel_t *k, const char *ep, const char *vpid) {
  char kpid[OCAP_REF_MAX], state[VAL_MAX];
  if (vpid[0] != 'p' && !is_kpid(vpid))
    return fail(k, OCAP_EINVAL, "%s subscribed to non-promise '%s'", ep, vpid);
  int rc = ocap_kernel_eref_to_kref(k, ep, vpid, kpid);
  if (rc)
    return rc;
  if (!getv(k, state, "%s.state", kpid))
    return fail(k, OCAP_EINVAL, "%s subscribed to unknown promise '%s'", ep, vpid);
  if (strcmp(state, "unresolved") != 0)
    return enqueue_notify(k, ep, kpid);
  /* The decider may subscribe too: once it resolves, its c-list entry is
   * retired and the notify finds nothing to tell it. */
  return subscribers_add(k, kpid, ep);
}

/* Settles kpid with data (an encoding in krefs) and schedules everything
 * that was waiting for it. */
static int settle(ocap_kernel_t *k, const char *kpid, int rejected, const char *enc, size_t len) {
  char subs[VAL_MAX];
  int rc = setv(k, rejected ? "rejected" : "fulfilled", "%s.state", kpid);
  if (!rc)
    rc = setn(k, enc, len, "%s.data", kpid);
  if (rc)
    return rc;
  incref_slots(k, enc, len);
  delv(k, "%s.decider", kpid);
  if (getv(k, subs, "%s.subscribers", kpid)) {
    char *save = NULL;
    delv(k, "%s.subscribers", kpid);
    for (char *t = strtok_r(subs, " ", &save); t; t = strtok_r(NULL, " ", &save))
      enqueue_notify(k, t, kpid);
  }
  /* Messages parked on the promise go back to the run queue, in order, still
   * addressed to the promise; routing them again follows the resolution. */
  long long tail = geti(k, 0, "%s.queueTail", kpid);
  buf_t item = {0};
  for (long long i = 0; i < tail; i++) {
    if (getb(k, &item, "%s.queue.%lld", kpid, i)) {
      enqueue(k, item.p, item.len);
      delv(k, "%s.queue.%lld", kpid, i);
    }
  }
  free(item.p);
  if (tail > 0)
    delv(k, "%s.queueTail", kpid);
  return 0;
}

int ocap_kernel_resolve(ocap_kernel_t *k, const char *ep, const ocap_resolution_t *r, size_t n) {
  char kpid[OCAP_REF_MAX], state[VAL_MAX], decider[VAL_MAX];
  for (size_t i = 0; i < n; i++) {
    int rc = ocap_kernel_eref_to_kref(k, ep, r[i].kpid, kpid);
    if (rc)
      return rc;
    if (!is_kpid(kpid))
      return fail(k, OCAP_EINVAL, "%s resolved non-promise '%s'", ep, r[i].kpid);
    if (!getv(k, state, "%s.state", kpid) || strcmp(state, "unresolved") != 0)
      return fail(k, OCAP_EINVAL, "%s resolved '%s', which is already settled", ep, r[i].kpid);
    if (!getv(k, decider, "%s.decider", kpid) || strcmp(decider, ep) != 0)
      return fail(k, OCAP_EINVAL, "%s may not resolve '%s': it is not the decider", ep, r[i].kpid);
    buf_t enc = {0};
    rc = capdata_e2k(k, ep, &r[i].data, &enc);
    if (!rc)
      rc = settle(k, kpid, r[i].rejected, enc.p, enc.len);
    free(enc.p);
    if (rc)
      return rc;
    /* The decider is done with the promise: retire its c-list entry, as its
     * liveslots forgets the vpid once resolved. */
    clist_remove(k, ep, kpid);
  }
  return 0;
}

/* ---- revocation ---- */

int ocap_kernel_revoke(ocap_kernel_t *k, const char *kref) {
  if (!valid_kref(kref))
    return fail(k, OCAP_EINVAL, "invalid kref '%s'", kref);
  if (is_kpid(kref))
    return fail(k, OCAP_EINVAL, "cannot revoke promise %s", kref);
  if (!has(k, "%s.owner", kref) && !has(k, "%s.revoked", kref))
    return fail(k, OCAP_ENOTFOUND, "unknown object %s", kref);
  return setv(k, "true", "%s.revoked", kref);
}

int ocap_kernel_is_revoked(ocap_kernel_t *k, const char *kref) {
  return has(k, "%s.revoked", kref);
}

/* ---- routing and delivery ---- */

/* Rejects the result of a message that cannot be delivered ("splat"). */
static int splat(ocap_kernel_t *k, const char *result, const char *enc, size_t len) {
  char state[VAL_MAX];
  if (!result || !getv(k, state, "%s.state", result) || strcmp(state, "unresolved") != 0)
    return 0;
  return settle(k, result, 1, enc, len);
}

static int splat_error(ocap_kernel_t *k, const char *result, const char *code, const char *detail) {
  buf_t b = {0};
  int rc = error_capdata(&b, code, detail);
  if (!rc)
    rc = splat(k, result, b.p, b.len);
  free(b.p);
  return rc;
}

/* If the encoded capdata is exactly one reference, copies it to out. */
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
  return 1;
}

static int deliver(ocap_kernel_t *k, const char *ep, const ocap_delivery_t *d, int *fatal,
                   char **why) {
  *fatal = OCAP_FATAL_NONE;
  *why = NULL;
  return k->hooks.deliver(k->hooks.ud, ep, d, fatal, why);
}

/* Delivers a send item to the owner of object `target` (never a promise:
 * messages to promises wait in the kernel until settled). Every message an
 * endpoint receives passes here, so this is the one place that checks
 * revocation. */
static int deliver_send(ocap_kernel_t *k, const char *target, const char *result, const char *enc,
                        size_t len, char *ep, int *fatal, char **why) {
  char owner[VAL_MAX], teref[OCAP_REF_MAX], reref[OCAP_REF_MAX];
  if (has(k, "%s.revoked", target)) {
    return splat_error(k, result, "OBJECT_REVOKED", "Target object has been revoked");
  } else if (!getv(k, owner, "%s.owner", target)) {
    char detail[128];
    snprintf(detail, sizeof detail, "Target object %s has been deleted", target);
    return splat_error(k, result, "OBJECT_DELETED", detail);
  }
  if (strlen(owner) >= OCAP_REF_MAX)
    return fail(k, OCAP_ECORRUPT, "corrupt owner of %s", target);
  memcpy(ep, owner, strlen(owner) + 1);
  if (k->hooks.prepare && !is_kernel_ep(ep))
    k->hooks.prepare(k->hooks.ud, ep);
  int rc = ocap_kernel_kref_to_eref(k, ep, target, teref);
  if (!rc && result) {
    rc = setv(k, ep, "%s.decider", result);
    if (!rc)
      rc = ocap_kernel_kref_to_eref(k, ep, result, reref);
  }
  pcap_t p;
  if (!rc)
    rc = pcap_parse(&p, enc, len);
  if (rc)
    return rc;
  char(*pool)[OCAP_REF_MAX] = p.nslots ? malloc(p.nslots * OCAP_REF_MAX) : NULL;
  const char **slots = p.nslots ? malloc(p.nslots * sizeof *slots) : NULL;
  if (p.nslots && (!pool || !slots))
    rc = OCAP_ENOMEM;
  if (!rc)
    rc = capdata_k2e(k, ep, &p, pool, slots);
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
  free(pool);
  free(slots);
  pcap_free(&p);
  return rc;
}

/* Parks a message on an unresolved promise. The item keeps its refs. */
static int park(ocap_kernel_t *k, const char *kpid, const char *item, size_t len) {
  long long tail = geti(k, 0, "%s.queueTail", kpid);
  int rc = setn(k, item, len, "%s.queue.%lld", kpid, tail);
  if (!rc)
    rc = seti(k, tail + 1, "%s.queueTail", kpid);
  return rc;
}

static void release_send(ocap_kernel_t *k, const char *target, const char *result, const char *enc,
                         size_t len) {
  decref(k, target);
  if (result)
    decref(k, result);
  decref_slots(k, enc, len);
}

/* Routes and delivers one send item. *parked is set when it waits. */
static int process_send(ocap_kernel_t *k, char *item, size_t len, char *ep, int *fatal, char **why,
                        const char **resultp, char *resbuf) {
  /* item = "send <target> <result>\n<slots>\n<body>" */
  char *nl = memchr(item, '\n', len);
  if (!nl)
    return fail(k, OCAP_ECORRUPT, "corrupt run-queue item");
  char target[OCAP_REF_MAX], result[OCAP_REF_MAX];
  char head[3 * OCAP_REF_MAX];
  size_t hl = (size_t)(nl - item);
  if (hl >= sizeof head)
    return fail(k, OCAP_ECORRUPT, "corrupt run-queue item");
  memcpy(head, item, hl);
  head[hl] = '\0';
  if (sscanf(head, "send %47s %47s", target, result) != 2)
    return fail(k, OCAP_ECORRUPT, "corrupt run-queue item '%s'", head);
  const char *res = strcmp(result, "-") == 0 ? NULL : result;
  if (res) {
    refcpy(resbuf, res);
    *resultp = resbuf;
  }
  const char *enc = nl + 1;
  size_t elen = len - hl - 1;
  char cur[OCAP_REF_MAX];
  refcpy(cur, target);
  int rc = 0;
  /* Follow resolved promises to the object they designate. */
  for (int hops = 0; is_kpid(cur); hops++) {
    char state[VAL_MAX];
    if (hops > 1000) {
      /* Promises resolved to each other: nothing can ever receive it. */
      rc = splat_error(k, res, "BAD_PROMISE_RESOLUTION",
                       "Message sent to promises that resolve to each other");
      goto done;
    }
    if (!getv(k, state, "%s.state", cur)) {
      rc = splat_error(k, res, "OBJECT_DELETED", "Target promise has been deleted");
      goto done;
    }
    if (strcmp(state, "unresolved") == 0) {
      /* The message waits here, even when a vat decides the promise: were
       * it handed to the decider, its liveslots would deliver it to its own
       * object once resolved, past the revocation check in deliver_send.
       * Parked, it is routed again on settlement like any other send. */
      return park(k, cur, item, len); /* the parked item keeps its refs */
    }
    buf_t data = {0};
    getb(k, &data, "%s.data", cur);
    if (strcmp(state, "rejected") == 0) {
      rc = splat(k, res, data.p, data.len);
      free(data.p);
      goto done;
    }
    char next[OCAP_REF_MAX];
    int one = single_ref(data.p, data.len, next);
    free(data.p);
    if (!one) {
      rc = splat_error(k, res, "BAD_PROMISE_RESOLUTION",
                       "Message sent to a promise that resolved to data");
      goto done;
    }
    refcpy(cur, next);
  }
  rc = deliver_send(k, cur, res, enc, elen, ep, fatal, why);
done:
  release_send(k, target, res, enc, elen);
  return rc;
}

/* The kpids of a notify item ("notify <ep> <kpid>..."), at most max. */
static size_t notify_kpids(const char *item, char (*kpids)[OCAP_REF_MAX], size_t max) {
  const char *p = strchr(item + 7, ' ');
  size_t n = 0;
  while (p && *p && n < max) {
    while (*p == ' ')
      p++;
    size_t l = strcspn(p, " ");
    if (!l || l >= OCAP_REF_MAX)
      break;
    memcpy(kpids[n], p, l);
    kpids[n++][l] = '\0';
    p += l;
  }
  return n;
}

/* One promise told in a notify delivery. */
typedef struct note {
  char kpid[OCAP_REF_MAX];
  char eref[OCAP_REF_MAX];
  int rejected;
  pcap_t cap;
  char (*pool)[OCAP_REF_MAX];
  const char **slotv;
} note_t;

/* Notes are allocated one by one: a pcap_t points into itself, so it must
 * not move when the list grows. */
typedef struct notes {
  note_t **v;
  size_t n, cap;
} notes_t;

/* Adds kpid (a settled promise) unless it is there already. */
static int notes_add(notes_t *ns, const char *kpid) {
  for (size_t i = 0; i < ns->n; i++)
    if (strcmp(ns->v[i]->kpid, kpid) == 0)
      return 0;
  if (ns->n == ns->cap) {
    size_t cap = ns->cap ? ns->cap * 2 : 8;
    note_t **v = realloc(ns->v, cap * sizeof *v);
    if (!v)
      return OCAP_ENOMEM;
    ns->v = v;
    ns->cap = cap;
  }
  note_t *nt = calloc(1, sizeof *nt);
  if (!nt)
    return OCAP_ENOMEM;
  refcpy(nt->kpid, kpid);
  ns->v[ns->n++] = nt;
  return 0;
}

static void notes_free(notes_t *ns) {
  for (size_t i = 0; i < ns->n; i++) {
    pcap_free(&ns->v[i]->cap);
    free(ns->v[i]->pool);
    free(ns->v[i]->slotv);
    free(ns->v[i]);
  }
  free(ns->v);
}

/*
 * Fills in note i: its data translated for ep, and queues every settled
 * promise its data mentions, so one delivery tells them all (the list is
 * its own work queue, and has no size limit).
 */
static int note_load(ocap_kernel_t *k, const char *ep, notes_t *ns, size_t i) {
  char state[VAL_MAX];
  note_t *nt = ns->v[i];
  buf_t data = {0};
  getv(k, state, "%s.state", nt->kpid);
  getb(k, &data, "%s.data", nt->kpid);
  int rc = pcap_parse(&nt->cap, data.p ? data.p : "\n", data.p ? data.len : 1);
  free(data.p);
  if (rc)
    return rc;
  nt->rejected = strcmp(state, "rejected") == 0;
  size_t nslots = nt->cap.nslots;
  for (size_t j = 0; j < nslots; j++) {
    const char *slot = nt->cap.slotv[j];
    if (is_kpid(slot) && getv(k, state, "%s.state", slot) && strcmp(state, "unresolved") != 0) {
      rc = notes_add(ns, slot);
      if (rc)
        return rc;
    }
  }
  if (nslots) {
    nt->pool = malloc(nslots * OCAP_REF_MAX);
    nt->slotv = malloc(nslots * sizeof *nt->slotv);
    if (!nt->pool || !nt->slotv)
      return OCAP_ENOMEM;
  }
  rc = ocap_kernel_kref_to_eref(k, ep, nt->kpid, nt->eref);
  if (!rc)
    rc = capdata_k2e(k, ep, &nt->cap, nt->pool, nt->slotv);
  return rc;
}

static int process_notify(ocap_kernel_t *k, char *item, char *ep, int *fatal, char **why) {
  char kpids[NOTIFY_MERGE][OCAP_REF_MAX], state[VAL_MAX];
  if (sscanf(item, "notify %47s", ep) != 1)
    return fail(k, OCAP_ECORRUPT, "corrupt run-queue item");
  size_t nk = notify_kpids(item, kpids, NOTIFY_MERGE);
  int rc = 0;
  notes_t ns = {0};
  for (size_t j = 0; j < nk && !rc; j++) {
    const char *kpid = kpids[j];
    if (!getv(k, state, "%s.state", kpid) || strcmp(state, "unresolved") == 0)
      continue;
    if (!is_kernel_ep(ep) && !has(k, "%s.c.%s", ep, kpid))
      continue; /* already retired: the endpoint learned it another way */
    rc = notes_add(&ns, kpid);
  }
  for (size_t i = 0; i < ns.n && !rc; i++)
    rc = note_load(k, ep, &ns, i);
  ocap_resolution_t *res = ns.n ? malloc(ns.n * sizeof *res) : NULL;
  if (ns.n && !res)
    rc = OCAP_ENOMEM;
  if (!rc && ns.n) {
    for (size_t i = 0; i < ns.n; i++) {
      res[i].kpid = ns.v[i]->eref;
      res[i].rejected = ns.v[i]->rejected;
      res[i].data = pcap_view(&ns.v[i]->cap);
      res[i].data.slots = ns.v[i]->slotv;
    }
    ocap_delivery_t d = {0};
    d.type = OCAP_DELIVER_NOTIFY;
    d.resolutions = res;
    d.nresolutions = ns.n;
    rc = deliver(k, ep, &d, fatal, why);
    /* The endpoint forgets promises once told their settlement. */
    if (!rc && *fatal == OCAP_FATAL_NONE)
      for (size_t i = 0; i < ns.n; i++)
        clist_remove(k, ep, ns.v[i]->kpid);
  }
  free(res);
  notes_free(&ns);
  for (size_t j = 0; j < nk; j++)
    decref(k, kpids[j]);
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
  default:
    return "VAT_FATAL:INTERNAL_ERROR";
  }
}

/* Pops the run queue's head into b. Returns 1 when there was an item. */
static int dequeue(ocap_kernel_t *k, buf_t *b) {
  long long head = geti(k, 0, "runQueue.head");
  long long tail = geti(k, 0, "runQueue.tail");
  if (head >= tail)
    return 0;
  if (!getb(k, b, "runQueue.%lld", head))
    return fail(k, OCAP_ECORRUPT, "run queue item %lld is missing", head);
  delv(k, "runQueue.%lld", head);
  seti(k, head + 1, "runQueue.head");
  return 1;
}

int ocap_kernel_step(ocap_kernel_t *k) {
  buf_t item = {0};
  int rc = ocap_store_commit(k->s); /* host writes made between cranks */
  if (rc)
    return rc;
  rc = dequeue(k, &item);
  if (rc <= 0) {
    free(item.p);
    return rc;
  }
  k->cranks++;
  char ep[OCAP_REF_MAX] = "";
  char resbuf[OCAP_REF_MAX];
  const char *result = NULL;
  int fatal = OCAP_FATAL_NONE;
  char *why = NULL;
  if (strncmp(item.p, "send ", 5) == 0)
    rc = process_send(k, item.p, item.len, ep, &fatal, &why, &result, resbuf);
  else if (strncmp(item.p, "notify ", 7) == 0)
    rc = process_notify(k, item.p, ep, &fatal, &why);
  else
    rc = fail(k, OCAP_ECORRUPT, "unknown run-queue item");
  if (rc == OCAP_EFATAL || fatal != OCAP_FATAL_NONE) {
    /* Undo everything the delivery did, then take the item off the queue
     * again and terminate the vat in this same crank. */
    ocap_store_abort(k->s);
    buf_t again = {0};
    dequeue(k, &again);
    free(again.p);
    if (strncmp(item.p, "send ", 5) == 0) {
      char *nl = memchr(item.p, '\n', item.len);
      char t[OCAP_REF_MAX], r[OCAP_REF_MAX];
      if (nl && sscanf(item.p, "send %47s %47s", t, r) == 2)
        release_send(k, t, NULL, nl + 1, item.len - (size_t)(nl + 1 - item.p));
    } else {
      char kps[NOTIFY_MERGE][OCAP_REF_MAX];
      size_t nk = notify_kpids(item.p, kps, NOTIFY_MERGE);
      for (size_t j = 0; j < nk; j++)
        decref(k, kps[j]);
    }
    ocap_kernel_crash(k, ep, fatal, why, result);
    if (result)
      decref(k, result);
    free(why);
    rc = 0;
  } else {
    free(why);
  }
  free(item.p);
  if (rc < 0) {
    ocap_store_abort(k->s);
    return rc;
  }
  rc = ocap_store_commit(k->s);
  return rc ? rc : 1;
}

int ocap_kernel_crash(ocap_kernel_t *k, const char *ep, int fatal, const char *why,
                      const char *result) {
  /* The message that killed the vat learns why; every other promise the
   * vat decided learns that the vat is gone. */
  char detail[512];
  snprintf(detail, sizeof detail, "vat %s terminated: %s", ep, why ? why : "fatal error");
  buf_t reason = {0};
  int rc = error_capdata(&reason, fatal_code(fatal), detail);
  if (rc)
    return rc;
  if (result)
    splat(k, result, reason.p, reason.len);
  snprintf(detail, sizeof detail, "vat %s terminated: [%s] %s", ep, fatal_code(fatal),
           why ? why : "fatal error");
  rc = error_capdata(&reason, "VAT_TERMINATED", detail);
  pcap_t rp;
  if (!rc)
    rc = pcap_parse(&rp, reason.p, reason.len);
  if (!rc) {
    ocap_capdata_t rcd = pcap_view(&rp);
    rc = ocap_kernel_terminate(k, ep, &rcd);
    pcap_free(&rp);
  }
  free(reason.p);
  return rc;
}

/*
 * The krefs in ep's c-list that start with `kind` ("k" for all, "kp" for
 * promises), collected first because callers delete entries as they go and
 * a scan must not run over a changing key range. Returns the count, or a
 * negative code; *out is malloc'd (caller frees).
 */
static long clist_krefs(ocap_kernel_t *k, const char *ep, const char *kind,
                        char (**out)[OCAP_REF_MAX]) {
  char prefix[KEY_MAX];
  int plen = snprintf(prefix, sizeof prefix, "%s.c.%s", ep, kind);
  size_t skip = (size_t)plen - strlen(kind); /* where the kref starts */
  size_t n = 0, cap = 0;
  char(*krefs)[OCAP_REF_MAX] = NULL;
  const char *key;
  size_t klen;
  char after[KEY_MAX] = "";
  size_t alen = 0;
  while (ocap_store_next_key(k->s, prefix, (size_t)plen, after, alen, 0, &key, &klen) == 1) {
    if (klen >= KEY_MAX)
      break;
    memcpy(after, key, klen);
    after[klen] = '\0';
    alen = klen;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      void *nk = realloc(krefs, cap * OCAP_REF_MAX);
      if (!nk) {
        free(krefs);
        return OCAP_ENOMEM;
      }
      krefs = nk;
    }
    refcpy(krefs[n++], after + skip);
  }
  *out = krefs;
  return (long)n;
}

int ocap_kernel_terminate(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *reason) {
  if (is_kernel_ep(ep))
    return fail(k, OCAP_EINVAL, "the kernel endpoint cannot be terminated");
  buf_t enc = {0};
  int rc = capdata_e2k(k, "kernel", reason, &enc);
  char(*krefs)[OCAP_REF_MAX] = NULL;
  long got = rc ? 0 : clist_krefs(k, ep, "k", &krefs);
  if (got < 0)
    rc = (int)got;
  size_t n = got > 0 ? (size_t)got : 0;
  for (size_t i = 0; i < n && !rc; i++) {
    char v[VAL_MAX];
    const char *kref = krefs[i];
    if (is_kpid(kref)) {
      if (getv(k, v, "%s.decider", kref) && strcmp(v, ep) == 0)
        settle(k, kref, 1, enc.p, enc.len);
    } else if (getv(k, v, "%s.owner", kref) && strcmp(v, ep) == 0) {
      delv(k, "%s.owner", kref);
    }
    clist_remove(k, ep, kref);
  }
  free(krefs);
  free(enc.p);
  /* The vat's own store goes with it. */
  char prefix[KEY_MAX];
  int plen = snprintf(prefix, sizeof prefix, "vs.%s.", ep);
  const char *key;
  size_t klen;
  while (ocap_store_next_key(k->s, prefix, (size_t)plen, prefix, (size_t)plen, 1, &key, &klen) ==
         1) {
    char *victim = malloc(klen);
    if (!victim)
      break;
    memcpy(victim, key, klen); /* the scan's key is the store's until the next call */
    ocap_store_delete(k->s, victim, klen);
    free(victim);
  }
  delv(k, "%s.nextObjectId", ep);
  delv(k, "%s.nextPromiseId", ep);
  if (k->hooks.terminated)
    k->hooks.terminated(k->hooks.ud, ep, reason->body, reason->blen);
  return rc;
}

int ocap_kernel_reject_decided(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *reason) {
  if (is_kernel_ep(ep))
    return fail(k, OCAP_EINVAL, "the kernel endpoint has no incarnations");
  buf_t enc = {0};
  int rc = capdata_e2k(k, "kernel", reason, &enc);
  char(*kpids)[OCAP_REF_MAX] = NULL;
  long got = rc ? 0 : clist_krefs(k, ep, "kp", &kpids);
  if (got < 0)
    rc = (int)got;
  size_t n = got > 0 ? (size_t)got : 0;
  for (size_t i = 0; i < n && !rc; i++) {
    char v[VAL_MAX];
    if (getv(k, v, "%s.decider", kpids[i]) && strcmp(v, ep) == 0) {
      rc = settle(k, kpids[i], 1, enc.p, enc.len);
      clist_remove(k, ep, kpids[i]);
    }
  }
  free(kpids);
  free(enc.p);
  return rc;
}
