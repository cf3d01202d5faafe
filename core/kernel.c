/*
 * kernel.c -- references, c-lists, promises, the run queue and the crank.
 *
 * Everything the kernel knows is kept in the store under the keys listed in
 * docs/storage.md; this file only holds scratch buffers. That is what makes
 * a crank atomic: abort the store's crank buffer and every table is back.
 *
 * Nothing read back from the store is trusted to fit a fixed buffer or to
 * be well formed: values are read whole, and a value that cannot be what
 * its key says (a reference too long, a count that is not a number, a
 * state that is no state) is reported as corruption naming the key. A
 * store call that fails, like corruption, is a kernel failure: it is
 * recorded in the kernel (k->err) so that the crank in progress fails and
 * rolls back instead of committing half its work.
 */
#include "kernel.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 160
#define NOTIFY_MERGE 16 /* notifies merged into one run-queue item */

struct ocap_kernel {
  ocap_store_t *s;
  ocap_kernel_hooks_t hooks;
  long long cranks;
  int err;             /* the kernel failure the current crank must fail with, or 0 */
  char errmsg[512];    /* why the last call failed, when it was the caller's fault */
  char brokenmsg[512]; /* why, when it was a kernel failure (err != 0) */
};

/* A growable byte buffer for values too large for the stack. */
typedef struct buf {
  char *p;
  size_t len, cap;
} buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap)
    return 0;
  if (extra > SIZE_MAX / 4 - b->len)
    return OCAP_ENOMEM;
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
  if (n)
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

/* Records why a call failed through the caller's fault (a vat's illegal
 * syscall, a bad argument of the host); the kernel itself is fine. */
static int fail(ocap_kernel_t *k, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(k->errmsg, sizeof k->errmsg, fmt, ap);
  va_end(ap);
  return code;
}

/*
 * Records a kernel failure: the store failed, or what it holds cannot be
 * right. The first one of a crank is kept, and the crank fails with it
 * (ocap_kernel_step rolls back), since code that went on after it may have
 * written only part of its work.
 */
static int broken(ocap_kernel_t *k, int code, const char *fmt, ...) {
  if (k->err == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->brokenmsg, sizeof k->brokenmsg, fmt, ap);
    va_end(ap);
    k->err = code;
  }
  return code;
}

int ocap_kernel_failed(const ocap_kernel_t *k) {
  return k->err;
}

int ocap_kernel_note_failure(ocap_kernel_t *k, int code, const char *what) {
  return broken(k, code, "%s", what);
}

/* Copies at most 40 bytes of v into out (64 bytes) for a message, escaping
 * what is not printable, so a corrupt value cannot garble the report. */
static const char *shown(const char *v, size_t vl, char *out) {
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
  out[n++] = '\'';
  for (size_t i = 0; i < vl && n < 50; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out[n++] = (char)c;
    } else {
      out[n++] = '\\';
      out[n++] = 'x';
      out[n++] = hex[c >> 4];
      out[n++] = hex[c & 15];
    }
  }
  out[n++] = '\'';
  if (vl > 40 || n >= 52) {
    memcpy(out + n, "...", 3);
    n += 3;
  }
  out[n] = '\0';
  return out;
}

/* Reports a value that cannot be what its key says. */
static int corrupt(ocap_kernel_t *k, const char *key, const char *v, size_t vl, const char *what) {
  char sv[64];
  return broken(k, OCAP_ECORRUPT,
                "corrupt database: key '%s' holds %s (%zu bytes), which is not %s", key,
                shown(v, vl, sv), vl, what);
}

/* Reports a failed store call on key. */
static int store_failed(ocap_kernel_t *k, int rc, const char *op, const char *key, size_t kl) {
  char sk[64];
  const char *detail = rc == OCAP_ENOMEM ? "" : ocap_store_errmsg(k->s);
  return broken(k, rc, "store %s of %s failed: %s%s%s", op, shown(key, kl, sk), ocap_strerror(rc),
                *detail ? ": " : "", detail);
}

/* ---- store access with formatted keys ---- */

/* Writes n in decimal at p; returns the number of bytes (at most 20). */
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
 * Formats a key into key (KEY_MAX bytes). Only %s and %lld occur in keys,
 * and vsnprintf was a tenth of the crank's cost, so this small formatter
 * does the job instead. Returns the length, or 0 when the key would not
 * fit: keys are made of references, which callers check, so a key that
 * long comes from a corrupt value and must not be silently cut.
 */
static size_t keyf(char *key, const char *fmt, va_list ap) {
  size_t n = 0;
  for (const char *f = fmt; *f; f++) {
    if (f[0] == '%' && f[1] == 's') {
      const char *s = va_arg(ap, const char *);
      size_t l = strlen(s);
      if (l >= KEY_MAX - n)
        return 0;
      memcpy(key + n, s, l);
      n += l;
      f++;
    } else if (f[0] == '%' && f[1] == 'l' && f[2] == 'l' && f[3] == 'd') {
      if (KEY_MAX - n <= 21)
        return 0;
      n += fmt_ll(key + n, va_arg(ap, long long));
      f += 3;
    } else {
      if (KEY_MAX - n <= 1)
        return 0;
      key[n++] = *f;
    }
  }
  key[n] = '\0';
  return n;
}

/* Declares `key`, formats fmt and the variadic arguments into it, and sets
 * `kl` to its length; a key too long makes the enclosing function return
 * a kernel failure. */
#define FORMAT_KEY(key, kl, fmt)                                                                   \
  char key[KEY_MAX];                                                                               \
  size_t kl;                                                                                       \
  do {                                                                                             \
    va_list ap_;                                                                                   \
    va_start(ap_, fmt);                                                                            \
    kl = keyf(key, fmt, ap_);                                                                      \
    va_end(ap_);                                                                                   \
    if (kl == 0)                                                                                   \
      return broken(k, OCAP_ECORRUPT, "a key of the form '%s' would be longer than %d bytes", fmt, \
                    KEY_MAX - 1);                                                                  \
  } while (0)

/* Looks key up. Returns 1 found, 0 missing, or a negative code. */
static int get_key(ocap_kernel_t *k, const char *key, size_t kl, const char **v, size_t *vl) {
  int rc = ocap_store_get(k->s, key, kl, v, vl);
  return rc < 0 ? store_failed(k, rc, "read", key, kl) : rc;
}

/* Reads a value whole into b (reset first). Returns 1 found, 0 missing,
 * or a negative code. */
static int getb(ocap_kernel_t *k, buf_t *b, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  b->len = 0;
  int rc = get_key(k, key, kl, &v, &vl);
  if (rc <= 0)
    return rc;
  if (buf_add(b, v, vl))
    return broken(k, OCAP_ENOMEM, "out of memory reading '%s'", key);
  return 1;
}

/* Returns 1 when the key exists, 0 when not, or a negative code. */
static int has(ocap_kernel_t *k, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  return get_key(k, key, kl, &v, &vl);
}

/* A byte of a reference: the kernel's refs, vat ids and vrefs use these. */
static int ref_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' ||
         c == '-' || c == '/' || c == ':' || c == '_';
}

/* Whether v (vl bytes) can be a reference: short enough for OCAP_REF_MAX,
 * and only bytes a reference uses (no space, which separates them). */
static int ref_like(const char *v, size_t vl) {
  if (vl == 0 || vl >= OCAP_REF_MAX)
    return 0;
  for (size_t i = 0; i < vl; i++)
    if (!ref_char(v[i]))
      return 0;
  return 1;
}

/*
 * Reads a value that must be a reference (a kref, a vref, an endpoint)
 * into out (OCAP_REF_MAX bytes). Returns 1 found, 0 missing, or a negative
 * code; a value that cannot be a reference is corruption.
 */
static int get_ref(ocap_kernel_t *k, char *out, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  int rc = get_key(k, key, kl, &v, &vl);
  if (rc <= 0)
    return rc;
  if (!ref_like(v, vl))
    return corrupt(k, key, v, vl, "a reference");
  memcpy(out, v, vl);
  out[vl] = '\0';
  return 1;
}

/* A promise's state, as get_state returns it. */
enum { ST_NONE = 0, ST_UNRESOLVED = 1, ST_FULFILLED = 2, ST_REJECTED = 3 };

/* Reads `<kpid>.state`. Returns a ST_* value (ST_NONE when missing), or a
 * negative code. */
static int get_state(ocap_kernel_t *k, const char *kpid) {
  char key[KEY_MAX];
  size_t kl = strlen(kpid);
  if (kl + sizeof ".state" > KEY_MAX)
    return broken(k, OCAP_ECORRUPT, "promise id '%.40s...' is too long", kpid);
  memcpy(key, kpid, kl);
  memcpy(key + kl, ".state", sizeof ".state");
  kl += sizeof ".state" - 1;
  const char *v;
  size_t vl;
  int rc = get_key(k, key, kl, &v, &vl);
  if (rc <= 0)
    return rc;
  if (vl == 10 && memcmp(v, "unresolved", 10) == 0)
    return ST_UNRESOLVED;
  if (vl == 9 && memcmp(v, "fulfilled", 9) == 0)
    return ST_FULFILLED;
  if (vl == 8 && memcmp(v, "rejected", 8) == 0)
    return ST_REJECTED;
  return corrupt(k, key, v, vl, "a promise state (unresolved, fulfilled or rejected)");
}

/*
 * Ids and counts are decimal integers from 0 to 2^53 - 1: a Lua number holds
 * them exactly, and adding one to them never overflows.
 */
#define COUNT_MAX 9007199254740991LL

/* Parses a count written by fmt_ll: digits only, no sign, no leading zero. */
static int parse_count(const char *v, size_t vl, long long *out) {
  if (vl == 0 || vl > 16 || (v[0] == '0' && vl > 1))
    return 0;
  long long n = 0;
  for (size_t i = 0; i < vl; i++) {
    if (v[i] < '0' || v[i] > '9')
      return 0;
    n = n * 10 + (v[i] - '0');
  }
  if (n > COUNT_MAX)
    return 0;
  *out = n;
  return 1;
}

/* Reads a count into *out (dflt when missing). Returns 0 or a negative
 * code; a value that is not a count is corruption. */
static int get_count(ocap_kernel_t *k, long long dflt, long long *out, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  *out = dflt;
  int rc = get_key(k, key, kl, &v, &vl);
  if (rc <= 0)
    return rc;
  if (!parse_count(v, vl, out))
    return corrupt(k, key, v, vl, "a count (a decimal integer from 0 to 2^53 - 1)");
  return 0;
}

static int setn(ocap_kernel_t *k, const char *val, size_t vl, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  int rc = ocap_store_set(k->s, key, kl, val, vl);
  return rc ? store_failed(k, rc, "write", key, kl) : 0;
}

#define setv(k, val, ...) setn((k), (val), strlen(val), __VA_ARGS__)

static int delv(ocap_kernel_t *k, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  int rc = ocap_store_delete(k->s, key, kl);
  return rc ? store_failed(k, rc, "delete", key, kl) : 0;
}

/* Writes a count; one that would pass COUNT_MAX is refused, since reading
 * it back would fail. */
static int seti(ocap_kernel_t *k, long long n, const char *fmt, ...) {
  char val[32];
  FORMAT_KEY(key, kl, fmt);
  if (n < 0 || n > COUNT_MAX)
    return broken(k, OCAP_ECORRUPT, "count %lld for key '%s' is out of range", n, key);
  size_t vl = fmt_ll(val, n);
  int rc = ocap_store_set(k->s, key, kl, val, vl);
  return rc ? store_failed(k, rc, "write", key, kl) : 0;
}

/* Sets *out to the counter's value and stores value + 1. Returns 0 or a
 * negative code. */
static int bump(ocap_kernel_t *k, const char *key, long long *out) {
  int rc = get_count(k, 1, out, "%s", key);
  if (!rc && *out >= COUNT_MAX)
    rc = broken(k, OCAP_ECORRUPT, "counter '%s' is exhausted (%lld)", key, *out);
  if (!rc)
    rc = seti(k, *out + 1, "%s", key);
  return rc;
}

/* ---- references ---- */

static int is_kpid(const char *ref) {
  return ref[0] == 'k' && ref[1] == 'p';
}
static int is_kernel_ep(const char *ep) {
  return strcmp(ep, "kernel") == 0;
}

/* An endpoint: `kernel` or a vat id `v<N>`. */
static int valid_ep(const char *ep) {
  size_t n = strlen(ep);
  if (is_kernel_ep(ep))
    return 1;
  if (n < 2 || n > 17 || ep[0] != 'v' || (ep[1] == '0' && n > 2))
    return 0;
  for (size_t i = 1; i < n; i++)
    if (ep[i] < '0' || ep[i] > '9')
      return 0;
  return 1;
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

/* Checks an endpoint a caller passed in. */
static int check_ep(ocap_kernel_t *k, const char *ep) {
  return valid_ep(ep) ? 0 : fail(k, OCAP_EINVAL, "invalid endpoint '%.60s'", ep);
}

/* The kernel's reference count of a promise: c-list entries, queued
 * messages and notifies, and other promises' resolutions that mention it. */
static int incref(ocap_kernel_t *k, const char *kref) {
  if (!is_kpid(kref))
    return 0;
  long long n;
  int rc = get_count(k, 0, &n, "%s.refCount", kref);
  return rc ? rc : seti(k, n + 1, "%s.refCount", kref);
}

static int decref_slots(ocap_kernel_t *k, const char *enc, size_t len);

static int free_promise(ocap_kernel_t *k, const char *kpid) {
  buf_t data = {0};
  int had = getb(k, &data, "%s.data", kpid);
  int rc = had < 0 ? had : 0;
  /* Only settled promises are freed, and settling removed the decider,
   * subscribers and queue already. */
  if (!rc)
    rc = delv(k, "%s.state", kpid);
  if (!rc)
    rc = delv(k, "%s.data", kpid);
  if (!rc)
    rc = delv(k, "%s.refCount", kpid);
  if (!rc && had > 0)
    rc = decref_slots(k, data.p, data.len);
  free(data.p);
  return rc;
}

static int decref(ocap_kernel_t *k, const char *kref) {
  if (!is_kpid(kref))
    return 0;
  long long n;
  int rc = get_count(k, 0, &n, "%s.refCount", kref);
  if (rc)
    return rc;
  if (n > 1)
    return seti(k, n - 1, "%s.refCount", kref);
  int st = get_state(k, kref);
  if (st < 0)
    return st;
  if (st == ST_FULFILLED || st == ST_REJECTED)
    return free_promise(k, kref);
  /* An unresolved promise lives on while its decider can still resolve it. */
  return seti(k, 0, "%s.refCount", kref);
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

/* Parses an encoding. Returns 0, OCAP_ENOMEM, or OCAP_EINVAL when it has no
 * slot line; p must be freed with pcap_free in every case. */
static int pcap_parse(pcap_t *p, const char *enc, size_t len) {
  memset(p, 0, sizeof *p);
  p->slotv = p->slots;
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
  if (count > 64) {
    p->slotv = malloc(count * sizeof *p->slotv);
    if (!p->slotv)
      return OCAP_ENOMEM;
  }
  char *save = NULL;
  for (char *t = strtok_r(p->copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
    p->slotv[p->nslots++] = t;
  return 0;
}

/* Parses an encoding the kernel stored (what names where it came from);
 * one it cannot parse is corruption. */
static int pcap_load(ocap_kernel_t *k, pcap_t *p, const char *enc, size_t len, const char *what) {
  int rc = pcap_parse(p, enc, len);
  if (rc == OCAP_ENOMEM)
    return broken(k, rc, "out of memory parsing %s", what);
  if (rc)
    return broken(k, OCAP_ECORRUPT, "corrupt database: %s is not capdata (it has no slot line)",
                  what);
  return 0;
}

static ocap_capdata_t pcap_view(const pcap_t *p) {
  ocap_capdata_t cd = {p->body, p->blen, p->slotv, p->nslots};
  return cd;
}

static int incref_slots(ocap_kernel_t *k, const char *enc, size_t len) {
  if (len && enc[0] == '\n')
    return 0; /* no slots: the common case, without parsing */
  pcap_t p;
  int rc = pcap_load(k, &p, enc, len, "a capdata the kernel holds");
  for (size_t i = 0; i < p.nslots && !rc; i++)
    rc = incref(k, p.slotv[i]);
  pcap_free(&p);
  return rc;
}

static int decref_slots(ocap_kernel_t *k, const char *enc, size_t len) {
  if (len && enc[0] == '\n')
    return 0;
  pcap_t p;
  int rc = pcap_load(k, &p, enc, len, "a capdata the kernel holds");
  for (size_t i = 0; i < p.nslots && !rc; i++)
    rc = decref(k, p.slotv[i]);
  pcap_free(&p);
  return rc;
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
  return k->err ? k->brokenmsg : k->errmsg;
}

void ocap_kernel_clear_failure(ocap_kernel_t *k) {
  k->err = 0;
  k->brokenmsg[0] = '\0';
}

long long ocap_kernel_cranks(const ocap_kernel_t *k) {
  return k->cranks;
}

int ocap_kernel_alloc_vat_id(ocap_kernel_t *k, char *out) {
  long long n;
  int rc = bump(k, "nextVatId", &n);
  if (rc)
    return rc;
  out[0] = 'v';
  out[1 + fmt_ll(out + 1, n)] = '\0';
  return 0;
}

int ocap_kernel_alloc_object(ocap_kernel_t *k, const char *ep, char *out) {
  long long n;
  int rc = check_ep(k, ep);
  if (!rc)
    rc = bump(k, "nextObjectId", &n);
  if (rc)
    return rc;
  memcpy(out, "ko", 2);
  out[2 + fmt_ll(out + 2, n)] = '\0';
  return setv(k, ep, "%s.owner", out);
}

int ocap_kernel_alloc_promise(ocap_kernel_t *k, const char *ep, char *out) {
  long long n;
  int rc = ep ? check_ep(k, ep) : 0;
  if (!rc)
    rc = bump(k, "nextPromiseId", &n);
  if (rc)
    return rc;
  memcpy(out, "kp", 2);
  out[2 + fmt_ll(out + 2, n)] = '\0';
  rc = setv(k, "unresolved", "%s.state", out);
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
  if (!rc)
    rc = incref(k, kref);
  return rc;
}

static int clist_remove(ocap_kernel_t *k, const char *ep, const char *kref) {
  char eref[OCAP_REF_MAX];
  if (is_kernel_ep(ep))
    return 0;
  int rc = get_ref(k, eref, "%s.c.%s", ep, kref);
  if (rc <= 0)
    return rc;
  rc = delv(k, "%s.c.%s", ep, kref);
  if (!rc)
    rc = delv(k, "%s.c.%s", ep, eref);
  if (!rc)
    rc = decref(k, kref);
  return rc;
}

int ocap_kernel_eref_to_kref(ocap_kernel_t *k, const char *ep, const char *eref, char *out) {
  if (is_kernel_ep(ep)) {
    if (!valid_kref(eref))
      return fail(k, OCAP_EINVAL, "invalid kref '%.60s'", eref);
    memcpy(out, eref, strlen(eref) + 1);
    return 0;
  }
  if (!valid_ep(ep))
    return fail(k, OCAP_EINVAL, "invalid endpoint '%.60s'", ep);
  if (!valid_eref(eref))
    return fail(k, OCAP_EINVAL, "vat %s used invalid vref '%.60s'", ep, eref);
  int rc = get_ref(k, out, "%s.c.%s", ep, eref);
  if (rc < 0)
    return rc;
  if (rc > 0) {
    if (!valid_kref(out))
      return broken(k, OCAP_ECORRUPT, "corrupt database: key '%s.c.%s' holds '%s', not a kref", ep,
                    eref, out);
    return 0;
  }
  if (eref[1] == '-')
    return fail(k, OCAP_EINVAL, "vat %s used unknown import '%s'", ep, eref);
  rc =
      eref[0] == 'o' ? ocap_kernel_alloc_object(k, ep, out) : ocap_kernel_alloc_promise(k, ep, out);
  if (!rc)
    rc = clist_add(k, ep, out, eref);
  return rc;
}

int ocap_kernel_kref_to_eref(ocap_kernel_t *k, const char *ep, const char *kref, char *out) {
  if (!valid_kref(kref))
    return broken(k, OCAP_ECORRUPT, "corrupt database: '%.60s' is not a kref", kref);
  if (is_kernel_ep(ep)) {
    memcpy(out, kref, strlen(kref) + 1);
    return 0;
  }
  if (!valid_ep(ep))
    return fail(k, OCAP_EINVAL, "invalid endpoint '%.60s'", ep);
  int rc = get_ref(k, out, "%s.c.%s", ep, kref);
  if (rc < 0)
    return rc;
  if (rc > 0) {
    if (!valid_eref(out))
      return broken(k, OCAP_ECORRUPT, "corrupt database: key '%s.c.%s' holds '%s', not a vref", ep,
                    kref, out);
    return 0;
  }
  int promise = is_kpid(kref);
  long long n;
  rc = get_count(k, 1, &n, "%s.%s", ep, promise ? "nextPromiseId" : "nextObjectId");
  if (!rc && n >= COUNT_MAX)
    rc = broken(k, OCAP_ECORRUPT, "counter '%s.%s' is exhausted", ep,
                promise ? "nextPromiseId" : "nextObjectId");
  if (!rc)
    rc = seti(k, n + 1, "%s.%s", ep, promise ? "nextPromiseId" : "nextObjectId");
  if (rc)
    return rc;
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
      return broken(k, OCAP_ENOMEM, "out of memory translating capdata");
  }
  if (buf_add(out, "\n", 1) || buf_add(out, cd->body, cd->blen))
    return broken(k, OCAP_ENOMEM, "out of memory translating capdata");
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

/* Reads the run queue's bounds, which must satisfy head <= tail. */
static int queue_bounds(ocap_kernel_t *k, long long *head, long long *tail) {
  int rc = get_count(k, 0, head, "runQueue.head");
  if (!rc)
    rc = get_count(k, 0, tail, "runQueue.tail");
  if (!rc && *head > *tail)
    rc = broken(k, OCAP_ECORRUPT,
                "corrupt database: runQueue.head (%lld) is after runQueue.tail "
                "(%lld)",
                *head, *tail);
  return rc;
}

static int enqueue(ocap_kernel_t *k, const char *item, size_t len) {
  long long tail;
  int rc = get_count(k, 0, &tail, "runQueue.tail");
  if (!rc && tail >= COUNT_MAX)
    rc = broken(k, OCAP_ECORRUPT, "counter 'runQueue.tail' is exhausted");
  if (!rc)
    rc = setn(k, item, len, "runQueue.%lld", tail);
  if (!rc)
    rc = seti(k, tail + 1, "runQueue.tail");
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
static int enqueue_notify(ocap_kernel_t *k, const char *ep, const char *kpid) {
  size_t el = strlen(ep), pl = strlen(kpid);
  if (!valid_ep(ep))
    return broken(k, OCAP_ECORRUPT, "cannot notify invalid endpoint '%.60s'", ep);
  if (!valid_kref(kpid))
    return broken(k, OCAP_ECORRUPT, "cannot notify invalid promise '%.60s'", kpid);
  int rc = incref(k, kpid);
  long long head, tail;
  if (!rc)
    rc = queue_bounds(k, &head, &tail);
  if (rc)
    return rc;
  if (tail > head) {
    buf_t last = {0};
    int got = getb(k, &last, "runQueue.%lld", tail - 1);
    if (got < 0)
      return got;
    if (got && last.len > 8 + el && memcmp(last.p, "notify ", 7) == 0 &&
        memcmp(last.p + 7, ep, el) == 0 && last.p[7 + el] == ' ') {
      size_t count = 0;
      for (size_t i = 0; i < last.len; i++)
        count += last.p[i] == ' ';
      if (count - 1 < NOTIFY_MERGE) {
        if (buf_add(&last, " ", 1) || buf_add(&last, kpid, pl))
          rc = broken(k, OCAP_ENOMEM, "out of memory queueing a notify");
        else
          rc = setn(k, last.p, last.len, "runQueue.%lld", tail - 1);
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
    rc = broken(k, OCAP_ENOMEM, "out of memory queueing a message");
  if (!rc)
    rc = enqueue(k, b.p, b.len);
  if (!rc)
    rc = incref(k, target);
  if (!rc && result)
    rc = incref(k, result);
  if (!rc)
    rc = incref_slots(k, enc, elen);
  free(b.p);
  return rc;
}

/* ---- syscalls ---- */

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
static int subscribers_add(ocap_kernel_t *k, const char *kpid, const char *ep) {
  buf_t b = {0};
  int rc = getb(k, &b, "%s.subscribers", kpid);
  if (rc > 0 && has_word(b.p, b.len, ep)) {
    free(b.p);
    return 0;
  }
  if (rc >= 0) {
    if ((rc > 0 && buf_add(&b, " ", 1)) || buf_adds(&b, ep))
      rc = broken(k, OCAP_ENOMEM, "out of memory adding a subscriber");
    else
      rc = setn(k, b.p, b.len, "%s.subscribers", kpid);
  }
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
        return fail(k, OCAP_EINVAL, "vat %s used invalid result vref '%.60s'", ep, result);
      rc = has(k, "%s.c.%s", ep, result);
      if (rc < 0)
        return rc;
      if (rc)
        return fail(k, OCAP_EINVAL, "vat %s reused result vref '%s'", ep, result);
    }
    rc = ocap_kernel_eref_to_kref(k, ep, result, rk);
    if (rc)
      return rc;
    /* Until it is delivered, nobody decides a result promise: the kernel
     * will hand that right to the vat that receives the message. */
    rc = delv(k, "%s.decider", rk);
    if (rc)
      return rc;
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
  char kpid[OCAP_REF_MAX];
  if (vpid[0] != 'p' && !is_kpid(vpid))
    return fail(k, OCAP_EINVAL, "%s subscribed to non-promise '%.60s'", ep, vpid);
  int rc = ocap_kernel_eref_to_kref(k, ep, vpid, kpid);
  if (rc)
    return rc;
  int st = get_state(k, kpid);
  if (st < 0)
    return st;
  if (st == ST_NONE)
    return fail(k, OCAP_EINVAL, "%s subscribed to unknown promise '%s'", ep, vpid);
  if (st != ST_UNRESOLVED)
    return enqueue_notify(k, ep, kpid);
  /* The decider may subscribe too: once it resolves, its c-list entry is
   * retired and the notify finds nothing to tell it. */
  return subscribers_add(k, kpid, ep);
}

/* Settles kpid with data (an encoding in krefs) and schedules everything
 * that was waiting for it. */
static int settle(ocap_kernel_t *k, const char *kpid, int rejected, const char *enc, size_t len) {
  int rc = setv(k, rejected ? "rejected" : "fulfilled", "%s.state", kpid);
  if (!rc)
    rc = setn(k, enc, len, "%s.data", kpid);
  if (!rc)
    rc = incref_slots(k, enc, len);
  if (!rc)
    rc = delv(k, "%s.decider", kpid);
  buf_t subs = {0};
  int got = rc ? 0 : getb(k, &subs, "%s.subscribers", kpid);
  if (got < 0)
    rc = got;
  if (got > 0) {
    rc = delv(k, "%s.subscribers", kpid);
    char ep[OCAP_REF_MAX];
    for (size_t i = 0; i < subs.len && !rc;) {
      size_t j = i;
      while (j < subs.len && subs.p[j] != ' ')
        j++;
      int ok = j > i && j - i < OCAP_REF_MAX;
      if (ok) {
        memcpy(ep, subs.p + i, j - i);
        ep[j - i] = '\0';
        ok = valid_ep(ep);
      }
      if (!ok) {
        char key[KEY_MAX];
        snprintf(key, sizeof key, "%s.subscribers", kpid);
        rc = corrupt(k, key, subs.p, subs.len, "a list of endpoints");
        break;
      }
      rc = enqueue_notify(k, ep, kpid);
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
    rc = get_count(k, 0, &tail, "%s.queueTail", kpid);
  buf_t item = {0};
  for (long long i = 0; i < tail && !rc; i++) {
    got = getb(k, &item, "%s.queue.%lld", kpid, i);
    if (got == 0)
      rc = broken(k, OCAP_ECORRUPT,
                  "corrupt database: message %lld of the %lld parked on %s is missing", i, tail,
                  kpid);
    else if (got < 0)
      rc = got;
    if (!rc)
      rc = enqueue(k, item.p, item.len);
    if (!rc)
      rc = delv(k, "%s.queue.%lld", kpid, i);
  }
  free(item.p);
  if (!rc && tail > 0)
    rc = delv(k, "%s.queueTail", kpid);
  return rc;
}

int ocap_kernel_resolve(ocap_kernel_t *k, const char *ep, const ocap_resolution_t *r, size_t n) {
  char kpid[OCAP_REF_MAX], decider[OCAP_REF_MAX];
  for (size_t i = 0; i < n; i++) {
    int rc = ocap_kernel_eref_to_kref(k, ep, r[i].kpid, kpid);
    if (rc)
      return rc;
    if (!is_kpid(kpid))
      return fail(k, OCAP_EINVAL, "%s resolved non-promise '%s'", ep, r[i].kpid);
    int st = get_state(k, kpid);
    if (st < 0)
      return st;
    if (st != ST_UNRESOLVED)
      return fail(k, OCAP_EINVAL, "%s resolved '%s', which is already settled", ep, r[i].kpid);
    rc = get_ref(k, decider, "%s.decider", kpid);
    if (rc < 0)
      return rc;
    if (rc == 0 || strcmp(decider, ep) != 0)
      return fail(k, OCAP_EINVAL, "%s may not resolve '%s': it is not the decider", ep, r[i].kpid);
    buf_t enc = {0};
    rc = capdata_e2k(k, ep, &r[i].data, &enc);
    if (!rc)
      rc = settle(k, kpid, r[i].rejected, enc.p, enc.len);
    free(enc.p);
    /* The decider is done with the promise: retire its c-list entry, as its
     * liveslots forgets the vpid once resolved. */
    if (!rc)
      rc = clist_remove(k, ep, kpid);
    if (rc)
      return rc;
  }
  return 0;
}

/* ---- revocation ---- */

int ocap_kernel_revoke(ocap_kernel_t *k, const char *kref) {
  if (!valid_kref(kref))
    return fail(k, OCAP_EINVAL, "invalid kref '%.60s'", kref);
  if (is_kpid(kref))
    return fail(k, OCAP_EINVAL, "cannot revoke promise %s", kref);
  int owned = has(k, "%s.owner", kref);
  int revoked = owned ? 0 : has(k, "%s.revoked", kref);
  if (owned < 0 || revoked < 0)
    return owned < 0 ? owned : revoked;
  if (!owned && !revoked)
    return fail(k, OCAP_ENOTFOUND, "unknown object %s", kref);
  return setv(k, "true", "%s.revoked", kref);
}

int ocap_kernel_is_revoked(ocap_kernel_t *k, const char *kref) {
  if (!valid_kref(kref))
    return 0;
  return has(k, "%s.revoked", kref);
}
/* ---- routing and delivery ---- */

/* Rejects the result of a message that cannot be delivered ("splat"). */
static int splat(ocap_kernel_t *k, const char *result, const char *enc, size_t len) {
  if (!result)
    return 0;
  int st = get_state(k, result);
  if (st != ST_UNRESOLVED)
    return st < 0 ? st : 0;
  return settle(k, result, 1, enc, len);
}

static int splat_error(ocap_kernel_t *k, const char *result, const char *code, const char *detail) {
  buf_t b = {0};
  int rc = error_capdata(&b, code, detail);
  if (rc)
    rc = broken(k, rc, "out of memory making an error");
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
  return valid_kref(out);
}

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
    return broken(k, rc, "delivery to %s failed: %s", ep, ocap_strerror(rc));
  return rc;
}

/* Delivers a send item to the owner of object `target` (never a promise:
 * messages to promises wait in the kernel until settled). Every message an
 * endpoint receives passes here, so this is the one place that checks
 * revocation. */
static int deliver_send(ocap_kernel_t *k, const char *target, const char *result, const char *enc,
                        size_t len, char *ep, int *fatal, char **why) {
  char owner[OCAP_REF_MAX], teref[OCAP_REF_MAX], reref[OCAP_REF_MAX];
  int rc = has(k, "%s.revoked", target);
  if (rc > 0)
    return splat_error(k, result, "OBJECT_REVOKED", "Target object has been revoked");
  if (rc == 0)
    rc = get_ref(k, owner, "%s.owner", target);
  if (rc == 0) {
    char detail[128];
    snprintf(detail, sizeof detail, "Target object %s has been deleted", target);
    return splat_error(k, result, "OBJECT_DELETED", detail);
  }
  if (rc < 0)
    return rc;
  if (!valid_ep(owner))
    return broken(k, OCAP_ECORRUPT, "corrupt database: the owner of %s is '%s', not an endpoint",
                  target, owner);
  memcpy(ep, owner, strlen(owner) + 1);
  if (k->hooks.prepare && !is_kernel_ep(ep))
    k->hooks.prepare(k->hooks.ud, ep);
  if (k->err)
    return k->err;
  rc = ocap_kernel_kref_to_eref(k, ep, target, teref);
  if (!rc && result) {
    rc = setv(k, ep, "%s.decider", result);
    if (!rc)
      rc = ocap_kernel_kref_to_eref(k, ep, result, reref);
  }
  if (rc)
    return rc;
  pcap_t p;
  rc = pcap_load(k, &p, enc, len, "a queued message");
  char(*pool)[OCAP_REF_MAX] = NULL;
  const char **slots = NULL;
  if (!rc && p.nslots) {
    pool = malloc(p.nslots * OCAP_REF_MAX);
    slots = malloc(p.nslots * sizeof *slots);
    if (!pool || !slots)
      rc = broken(k, OCAP_ENOMEM, "out of memory translating a message");
  }
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
  long long tail;
  int rc = get_count(k, 0, &tail, "%s.queueTail", kpid);
  if (!rc && tail >= COUNT_MAX)
    rc = broken(k, OCAP_ECORRUPT, "counter '%s.queueTail' is exhausted", kpid);
  if (!rc)
    rc = setn(k, item, len, "%s.queue.%lld", kpid, tail);
  if (!rc)
    rc = seti(k, tail + 1, "%s.queueTail", kpid);
  return rc;
}

static int release_send(ocap_kernel_t *k, const char *target, const char *result, const char *enc,
                        size_t len) {
  int rc = decref(k, target);
  if (!rc && result)
    rc = decref(k, result);
  if (!rc)
    rc = decref_slots(k, enc, len);
  return rc;
}

/*
 * Parses the head of a send item, "send <target> <result>\n...", into
 * target and result (OCAP_REF_MAX bytes each; result is "-" for none), and
 * sets *capdata to where its capdata starts. An item that does not parse
 * whole is corruption, never cut to fit.
 */
static int parse_send(ocap_kernel_t *k, const char *item, size_t len, char *target, char *result,
                      size_t *capdata) {
  const char *nl = memchr(item, '\n', len);
  const char *t = item + 5, *sp = nl ? memchr(t, ' ', (size_t)(nl - t)) : NULL;
  char sv[64];
  if (!nl || len < 5 || memcmp(item, "send ", 5) != 0 || !sp)
    return broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s is not a send",
                  shown(item, len, sv));
  size_t tl = (size_t)(sp - t), rl = (size_t)(nl - sp - 1);
  if (tl == 0 || tl >= OCAP_REF_MAX || rl == 0 || rl >= OCAP_REF_MAX)
    return broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s has a bad reference",
                  shown(item, len, sv));
  memcpy(target, t, tl);
  target[tl] = '\0';
  memcpy(result, sp + 1, rl);
  result[rl] = '\0';
  if (!valid_kref(target) ||
      (strcmp(result, "-") != 0 && (!valid_kref(result) || !is_kpid(result))))
    return broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s has a bad reference",
                  shown(item, len, sv));
  *capdata = (size_t)(nl + 1 - item);
  return 0;
}

/* Routes and delivers one send item. */
static int process_send(ocap_kernel_t *k, char *item, size_t len, char *ep, int *fatal, char **why,
                        const char **resultp, char *resbuf) {
  char target[OCAP_REF_MAX], result[OCAP_REF_MAX];
  size_t at;
  int rc = parse_send(k, item, len, target, result, &at);
  if (rc)
    return rc;
  const char *res = strcmp(result, "-") == 0 ? NULL : result;
  if (res) {
    memcpy(resbuf, res, strlen(res) + 1);
    *resultp = resbuf;
  }
  const char *enc = item + at;
  size_t elen = len - at;
  char cur[OCAP_REF_MAX];
  memcpy(cur, target, strlen(target) + 1);
  /* Follow resolved promises to the object they designate. */
  for (int hops = 0; is_kpid(cur); hops++) {
    if (hops > 1000) {
      /* Promises resolved to each other: nothing can ever receive it. */
      rc = splat_error(k, res, "BAD_PROMISE_RESOLUTION",
                       "Message sent to promises that resolve to each other");
      goto done;
    }
    int st = get_state(k, cur);
    if (st < 0)
      return st;
    if (st == ST_NONE) {
      rc = splat_error(k, res, "OBJECT_DELETED", "Target promise has been deleted");
      goto done;
    }
    if (st == ST_UNRESOLVED) {
      /* The message waits here, even when a vat decides the promise: were
       * it handed to the decider, its liveslots would deliver it to its own
       * object once resolved, past the revocation check in deliver_send.
       * Parked, it is routed again on settlement like any other send. */
      return park(k, cur, item, len); /* the parked item keeps its refs */
    }
    buf_t data = {0};
    rc = getb(k, &data, "%s.data", cur);
    if (rc <= 0) {
      free(data.p);
      return rc < 0 ? rc
                    : broken(k, OCAP_ECORRUPT, "corrupt database: settled promise %s has no data",
                             cur);
    }
    if (st == ST_REJECTED) {
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
    memcpy(cur, next, strlen(next) + 1);
  }
  rc = deliver_send(k, cur, res, enc, elen, ep, fatal, why);
done:
  if (rc == 0 || rc == OCAP_EFATAL) {
    int rr = release_send(k, target, res, enc, elen);
    if (rr)
      rc = rr;
  }
  return rc;
}

/*
 * The endpoint and kpids of a notify item ("notify <ep> <kpid>..."): *kpids
 * is malloc'd (caller frees) and holds *n of them. An item that does not
 * parse whole is corruption.
 */
static int parse_notify(ocap_kernel_t *k, const char *item, size_t len, char *ep,
                        char (**kpids)[OCAP_REF_MAX], size_t *n) {
  char sv[64];
  *kpids = NULL;
  *n = 0;
  size_t count = 0;
  for (size_t i = 0; i < len; i++)
    count += item[i] == ' ';
  if (len < 7 || memcmp(item, "notify ", 7) != 0 || count < 2)
    return broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s is not a notify",
                  shown(item, len, sv));
  char(*v)[OCAP_REF_MAX] = malloc((count - 1) * OCAP_REF_MAX);
  if (!v)
    return broken(k, OCAP_ENOMEM, "out of memory reading a notify");
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
      ok = word == 0 ? valid_ep(dst) : valid_kref(dst) && is_kpid(dst);
    }
    if (!ok) {
      free(v);
      return broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %s has a bad reference",
                    shown(item, len, sv));
    }
    i = j + 1;
  }
  *kpids = v;
  *n = got;
  return 0;
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
 * not move when the list grows. `set` indexes them by kpid (open
 * addressing; a slot holds an index + 1, 0 when free; at most half full),
 * so that a notify telling n promises is built in O(n), not O(n^2). */
typedef struct notes {
  note_t **v;
  size_t n, cap;
  size_t *set;
  size_t setcap;
} notes_t;

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

/* Makes room in the set for one more kpid. Returns 0 or OCAP_ENOMEM. */
static int notes_grow_set(notes_t *ns) {
  if (2 * (ns->n + 1) <= ns->setcap)
    return 0;
  size_t cap = ns->setcap ? 2 * ns->setcap : 32;
  size_t *set = calloc(cap, sizeof *set);
  if (!set)
    return OCAP_ENOMEM;
  free(ns->set);
  ns->set = set;
  ns->setcap = cap;
  for (size_t i = 0; i < ns->n; i++)
    *notes_slot(ns, ns->v[i]->kpid) = i + 1;
  return 0;
}

/* Adds kpid (a settled promise) unless it is there already. */
static int notes_add(ocap_kernel_t *k, notes_t *ns, const char *kpid) {
  if (notes_grow_set(ns))
    return broken(k, OCAP_ENOMEM, "out of memory building a notify");
  size_t *slot = notes_slot(ns, kpid);
  if (*slot)
    return 0;
  if (ns->n == ns->cap) {
    size_t cap = ns->cap ? ns->cap * 2 : 8;
    note_t **v = realloc(ns->v, cap * sizeof *v);
    if (!v)
      return broken(k, OCAP_ENOMEM, "out of memory building a notify");
    ns->v = v;
    ns->cap = cap;
  }
  note_t *nt = calloc(1, sizeof *nt);
  if (!nt)
    return broken(k, OCAP_ENOMEM, "out of memory building a notify");
  nt->cap.slotv = nt->cap.slots;
  memcpy(nt->kpid, kpid, strlen(kpid) + 1);
  ns->v[ns->n++] = nt;
  *slot = ns->n;
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
  free(ns->set);
}

/*
 * Fills in note i: its data translated for ep, and queues every settled
 * promise its data mentions, so one delivery tells them all (the list is
 * its own work queue, and has no size limit).
 */
static int note_load(ocap_kernel_t *k, const char *ep, notes_t *ns, size_t i) {
  note_t *nt = ns->v[i];
  buf_t data = {0};
  int st = get_state(k, nt->kpid);
  int got = st < 0 ? st : getb(k, &data, "%s.data", nt->kpid);
  if (got <= 0) {
    free(data.p);
    return got < 0 ? got
                   : broken(k, OCAP_ECORRUPT, "corrupt database: settled promise %s has no data",
                            nt->kpid);
  }
  int rc = pcap_load(k, &nt->cap, data.p, data.len, "a promise's data");
  free(data.p);
  if (rc)
    return rc;
  nt->rejected = st == ST_REJECTED;
  size_t nslots = nt->cap.nslots;
  for (size_t j = 0; j < nslots; j++) {
    const char *slot = nt->cap.slotv[j];
    if (!is_kpid(slot))
      continue;
    int sst = get_state(k, slot);
    if (sst < 0)
      return sst;
    if (sst == ST_FULFILLED || sst == ST_REJECTED) {
      rc = notes_add(k, ns, slot);
      if (rc)
        return rc;
      nt = ns->v[i];
    }
  }
  if (nslots) {
    nt->pool = malloc(nslots * OCAP_REF_MAX);
    nt->slotv = malloc(nslots * sizeof *nt->slotv);
    if (!nt->pool || !nt->slotv)
      return broken(k, OCAP_ENOMEM, "out of memory building a notify");
  }
  rc = ocap_kernel_kref_to_eref(k, ep, nt->kpid, nt->eref);
  if (!rc)
    rc = capdata_k2e(k, ep, &nt->cap, nt->pool, nt->slotv);
  return rc;
}

static int process_notify(ocap_kernel_t *k, const char *item, size_t len, char *ep, int *fatal,
                          char **why) {
  char(*kpids)[OCAP_REF_MAX];
  size_t nk;
  int rc = parse_notify(k, item, len, ep, &kpids, &nk);
  if (rc)
    return rc;
  notes_t ns = {0};
  for (size_t j = 0; j < nk && !rc; j++) {
    const char *kpid = kpids[j];
    int st = get_state(k, kpid);
    if (st < 0) {
      rc = st;
      break;
    }
    if (st == ST_NONE || st == ST_UNRESOLVED)
      continue;
    if (!is_kernel_ep(ep)) {
      rc = has(k, "%s.c.%s", ep, kpid);
      if (rc <= 0)
        continue; /* already retired: the endpoint learned it another way */
    }
    rc = notes_add(k, &ns, kpid);
  }
  for (size_t i = 0; i < ns.n && !rc; i++)
    rc = note_load(k, ep, &ns, i);
  ocap_resolution_t *res = NULL;
  if (!rc && ns.n) {
    res = malloc(ns.n * sizeof *res);
    if (!res)
      rc = broken(k, OCAP_ENOMEM, "out of memory building a notify");
  }
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
      for (size_t i = 0; i < ns.n && !rc; i++)
        rc = clist_remove(k, ep, ns.v[i]->kpid);
  }
  free(res);
  notes_free(&ns);
  for (size_t j = 0; j < nk && (rc == 0 || rc == OCAP_EFATAL); j++) {
    int rr = decref(k, kpids[j]);
    if (rr)
      rc = rr;
  }
  free(kpids);
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

/* Pops the run queue's head into b. Returns 1 when there was an item, 0
 * when the queue is empty, or a negative code. */
static int dequeue(ocap_kernel_t *k, buf_t *b) {
  long long head, tail;
  int rc = queue_bounds(k, &head, &tail);
  if (rc)
    return rc;
  if (head >= tail)
    return 0;
  rc = getb(k, b, "runQueue.%lld", head);
  if (rc == 0)
    return broken(k, OCAP_ECORRUPT, "corrupt database: run-queue item %lld is missing", head);
  if (rc > 0)
    rc = delv(k, "runQueue.%lld", head);
  if (!rc)
    rc = seti(k, head + 1, "runQueue.head");
  return rc ? rc : 1;
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

/* Takes a crank's item off the queue again after the crank was aborted
 * and drops the references it held. */
static int crank_drop_item(ocap_kernel_t *k, const buf_t *item) {
  buf_t again = {0};
  int rc = dequeue(k, &again);
  free(again.p);
  rc = rc < 0 ? rc : 0;
  if (!rc && strncmp(item->p, "send ", 5) == 0) {
    char t[OCAP_REF_MAX], r[OCAP_REF_MAX];
    size_t at;
    rc = parse_send(k, item->p, item->len, t, r, &at);
    if (!rc)
      rc = release_send(k, t, NULL, item->p + at, item->len - at);
  } else if (!rc) {
    char nep[OCAP_REF_MAX];
    char(*kps)[OCAP_REF_MAX];
    size_t nk;
    rc = parse_notify(k, item->p, item->len, nep, &kps, &nk);
    for (size_t j = 0; j < nk && !rc; j++)
      rc = decref(k, kps[j]);
    free(kps);
  }
  return rc;
}

/* Undoes a crank whose endpoint failed fatally, takes its item off the
 * queue again and terminates the endpoint, all in this crank. */
static int crank_fatal(ocap_kernel_t *k, const buf_t *item, const char *ep, int fatal,
                       const char *why, const char *result) {
  ocap_store_abort(k->s);
  int rc = crank_drop_item(k, item);
  if (!rc)
    rc = ocap_kernel_crash(k, ep, fatal, why, result);
  if (!rc && result)
    rc = decref(k, result);
  return rc;
}

/*
 * Undoes a crank whose endpoint refused the delivery: the item leaves the
 * queue and drops its references, and a message's result is rejected with
 * msg (a full `[KERNEL:<CODE>] <detail>` text). The endpoint and its state
 * stay as they were.
 */
static int crank_refused(ocap_kernel_t *k, const buf_t *item, const char *result, const char *msg) {
  ocap_store_abort(k->s);
  int rc = crank_drop_item(k, item);
  if (!rc && result) {
    buf_t b = {0};
    if (buf_adds(&b, "\n#{\"#error\":\"") || buf_add_json(&b, msg ? msg : "delivery refused") ||
        buf_adds(&b, "\",\"name\":\"Error\"}"))
      rc = OCAP_ENOMEM;
    if (!rc)
      rc = splat(k, result, b.p, b.len);
    free(b.p);
    if (!rc)
      rc = decref(k, result);
  }
  return rc;
}

int ocap_kernel_step(ocap_kernel_t *k) {
  /* A host call that failed since the last crank may have left its writes
   * half done: they are dropped, and this crank reports why. */
  if (k->err)
    return ocap_kernel_abort_crank(k, k->err);
  int rc = ocap_store_commit(k->s); /* host writes made between cranks */
  if (rc) {
    broken(k, rc, "store commit failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(k->s));
    return ocap_kernel_abort_crank(k, rc);
  }
  buf_t item = {0};
  rc = dequeue(k, &item);
  if (rc <= 0) {
    free(item.p);
    return rc < 0 ? ocap_kernel_abort_crank(k, rc) : 0;
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
    rc = process_notify(k, item.p, item.len, ep, &fatal, &why);
  else
    rc = broken(k, OCAP_ECORRUPT, "corrupt database: unknown run-queue item");
  if (!k->err && rc == OCAP_EREFUSED)
    rc = crank_refused(k, &item, result, why);
  else if (!k->err && (rc == OCAP_EFATAL || fatal != OCAP_FATAL_NONE))
    rc = crank_fatal(k, &item, ep, fatal, why, result);
  free(why);
  free(item.p);
  if (rc < 0 || k->err)
    return ocap_kernel_abort_crank(k, rc);
  rc = ocap_store_commit(k->s);
  if (rc) {
    broken(k, rc, "store commit failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(k->s));
    return ocap_kernel_abort_crank(k, rc);
  }
  return 1;
}

int ocap_kernel_crash(ocap_kernel_t *k, const char *ep, int fatal, const char *why,
                      const char *result) {
  /* The message that killed the vat learns why; every other promise the
   * vat decided learns that the vat is gone. The detail is built whole: a
   * vat's message has no length limit. */
  buf_t detail = {0}, reason = {0};
  int rc = 0;
  if (buf_adds(&detail, "vat ") || buf_adds(&detail, ep) || buf_adds(&detail, " terminated: ") ||
      buf_adds(&detail, why ? why : "fatal error") ||
      error_capdata(&reason, fatal_code(fatal), detail.p))
    rc = broken(k, OCAP_ENOMEM, "out of memory terminating %s", ep);
  if (!rc && result)
    rc = splat(k, result, reason.p, reason.len);
  detail.len = 0;
  if (!rc && (buf_adds(&detail, "vat ") || buf_adds(&detail, ep) ||
              buf_adds(&detail, " terminated: [") || buf_adds(&detail, fatal_code(fatal)) ||
              buf_adds(&detail, "] ") || buf_adds(&detail, why ? why : "fatal error") ||
              error_capdata(&reason, "VAT_TERMINATED", detail.p)))
    rc = broken(k, OCAP_ENOMEM, "out of memory terminating %s", ep);
  pcap_t rp;
  if (!rc) {
    rc = pcap_load(k, &rp, reason.p, reason.len, "a termination reason");
    if (!rc) {
      ocap_capdata_t rcd = pcap_view(&rp);
      rc = ocap_kernel_terminate(k, ep, &rcd);
    }
    pcap_free(&rp);
  }
  free(detail.p);
  free(reason.p);
  return rc;
}

/*
 * The krefs in ep's c-list that start with `kind` ("k" for all, "kp" for
 * promises), collected first because callers delete entries as they go.
 * The scan moves on from the last key it saw, so it reads each key once.
 * Returns the count, or a negative code; *out is malloc'd (caller frees).
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
  int rc;
  *out = NULL;
  while ((rc = ocap_store_next_key(k->s, prefix, (size_t)plen, after, alen, 0, &key, &klen)) == 1) {
    if (klen - skip >= OCAP_REF_MAX || klen >= KEY_MAX) {
      char sk[64];
      free(krefs);
      return broken(k, OCAP_ECORRUPT, "corrupt database: c-list key %s is too long",
                    shown(key, klen, sk));
    }
    memcpy(after, key, klen);
    after[klen] = '\0';
    alen = klen;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      void *nk = realloc(krefs, cap * OCAP_REF_MAX);
      if (!nk) {
        free(krefs);
        return broken(k, OCAP_ENOMEM, "out of memory listing the c-list of %s", ep);
      }
      krefs = nk;
    }
    memcpy(krefs[n], after + skip, klen - skip + 1);
    if (!valid_kref(krefs[n])) {
      free(krefs);
      return broken(k, OCAP_ECORRUPT, "corrupt database: c-list key '%s' names no kref", after);
    }
    n++;
  }
  if (rc < 0) {
    free(krefs);
    return store_failed(k, rc, "scan", prefix, (size_t)plen);
  }
  *out = krefs;
  return (long)n;
}

/*
 * Deletes every key under prefix. Each deleted key is where the next scan
 * starts, so no scan walks again over what was deleted and the whole
 * deletion is linear in the number of keys.
 */
static int delete_prefix(ocap_kernel_t *k, const char *prefix, size_t plen) {
  buf_t last = {0};
  const char *key;
  size_t klen;
  int inclusive = 1, rc = 0;
  if (buf_add(&last, prefix, plen))
    return broken(k, OCAP_ENOMEM, "out of memory deleting %s", prefix);
  for (;;) {
    rc = ocap_store_next_key(k->s, prefix, plen, last.p, last.len, inclusive, &key, &klen);
    if (rc <= 0) {
      if (rc < 0)
        rc = store_failed(k, rc, "scan", prefix, plen);
      break;
    }
    inclusive = 0;
    last.len = 0;
    if (buf_add(&last, key, klen)) { /* key is the store's until its next call */
      rc = broken(k, OCAP_ENOMEM, "out of memory deleting %s", prefix);
      break;
    }
    rc = ocap_store_delete(k->s, last.p, last.len);
    if (rc) {
      rc = store_failed(k, rc, "delete", last.p, last.len);
      break;
    }
  }
  free(last.p);
  return rc;
}

int ocap_kernel_terminate(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *reason) {
  if (is_kernel_ep(ep))
    return fail(k, OCAP_EINVAL, "the kernel endpoint cannot be terminated");
  int rc = check_ep(k, ep);
  if (rc)
    return rc;
  buf_t enc = {0};
  rc = capdata_e2k(k, "kernel", reason, &enc);
  char(*krefs)[OCAP_REF_MAX] = NULL;
  long got = rc ? 0 : clist_krefs(k, ep, "k", &krefs);
  if (got < 0)
    rc = (int)got;
  size_t n = got > 0 ? (size_t)got : 0;
  for (size_t i = 0; i < n && !rc; i++) {
    char v[OCAP_REF_MAX];
    const char *kref = krefs[i];
    if (is_kpid(kref)) {
      rc = get_ref(k, v, "%s.decider", kref);
      if (rc > 0)
        rc = strcmp(v, ep) == 0 ? settle(k, kref, 1, enc.p, enc.len) : 0;
    } else {
      rc = get_ref(k, v, "%s.owner", kref);
      if (rc > 0)
        rc = strcmp(v, ep) == 0 ? delv(k, "%s.owner", kref) : 0;
    }
    if (!rc)
      rc = clist_remove(k, ep, kref);
  }
  free(krefs);
  free(enc.p);
  /* The vat's own store goes with it. */
  char prefix[KEY_MAX];
  int plen = snprintf(prefix, sizeof prefix, "vs.%s.", ep);
  if (!rc)
    rc = delete_prefix(k, prefix, (size_t)plen);
  if (!rc)
    rc = delv(k, "%s.nextObjectId", ep);
  if (!rc)
    rc = delv(k, "%s.nextPromiseId", ep);
  if (!rc && k->hooks.terminated)
    k->hooks.terminated(k->hooks.ud, ep, reason->body, reason->blen);
  return rc;
}

int ocap_kernel_reject_decided(ocap_kernel_t *k, const char *ep, const ocap_capdata_t *reason) {
  if (is_kernel_ep(ep))
    return fail(k, OCAP_EINVAL, "the kernel endpoint has no incarnations");
  int rc = check_ep(k, ep);
  if (rc)
    return rc;
  buf_t enc = {0};
  rc = capdata_e2k(k, "kernel", reason, &enc);
  char(*kpids)[OCAP_REF_MAX] = NULL;
  long got = rc ? 0 : clist_krefs(k, ep, "kp", &kpids);
  if (got < 0)
    rc = (int)got;
  size_t n = got > 0 ? (size_t)got : 0;
  for (size_t i = 0; i < n && !rc; i++) {
    char v[OCAP_REF_MAX];
    rc = get_ref(k, v, "%s.decider", kpids[i]);
    if (rc > 0) {
      rc = 0;
      if (strcmp(v, ep) == 0) {
        rc = settle(k, kpids[i], 1, enc.p, enc.len);
        if (!rc)
          rc = clist_remove(k, ep, kpids[i]);
      }
    }
  }
  free(kpids);
  free(enc.p);
  return rc;
}
