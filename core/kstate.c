/*
 * kstate.c -- the kernel's failures, scratch buffers and typed access to
 * the store (see kstate.h for the conventions).
 */
#include "kstate.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"

static int buf_reserve(ocap__buf_t *b, size_t extra) {
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

int ocap__buf_add_grow(ocap__buf_t *b, const char *s, size_t n) {
  if (buf_reserve(b, n))
    return OCAP_ENOMEM;
  if (n)
    memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

int ocap__buf_adds(ocap__buf_t *b, const char *s) {
  return ocap__buf_add(b, s, strlen(s));
}

/* Appends s as the inside of a JSON string (JSON.stringify's escaping). */
int ocap__buf_add_json(ocap__buf_t *b, const char *s) {
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
      n = (size_t)(ocap_hex_json_escape(esc, c) - esc);
    } else {
      esc[n++] = (char)c;
    }
    if (ocap__buf_add(b, esc, n))
      return OCAP_ENOMEM;
  }
  return 0;
}

/* Records why a call failed through the caller's fault (a vat's illegal
 * syscall, a bad argument of the host); the kernel itself is fine. */
int ocap__fail(ocap_kernel_t *k, int code, const char *fmt, ...) {
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
int ocap__broken(ocap_kernel_t *k, int code, const char *fmt, ...) {
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
  return ocap__broken(k, code, "%s", what);
}

/* Copies at most 40 bytes of v into out (64 bytes) for a message, escaping
 * what is not printable, so a corrupt value cannot garble the report. */
const char *ocap__shown(const char *v, size_t vl, char *out) {
  size_t n = 0;
  out[n++] = '\'';
  for (size_t i = 0; i < vl && n < 50; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out[n++] = (char)c;
    } else {
      out[n++] = '\\';
      out[n++] = 'x';
      ocap_hex_byte(out + n, c);
      n += 2;
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
int ocap__corrupt(ocap_kernel_t *k, const char *key, const char *v, size_t vl, const char *what) {
  char sv[64];
  return ocap__broken(k, OCAP_ECORRUPT,
                      "corrupt database: key '%s' holds %s (%zu bytes), which is not %s", key,
                      ocap__shown(v, vl, sv), vl, what);
}

/* Reports a failed store call on key. */
int ocap__store_failed(ocap_kernel_t *k, int rc, const char *op, const char *key, size_t kl) {
  char sk[64];
  const char *detail = rc == OCAP_ENOMEM ? "" : ocap_store_errmsg(k->s);
  return ocap__broken(k, rc, "store %s of %s failed: %s%s%s", op, ocap__shown(key, kl, sk),
                      ocap_strerror(rc), *detail ? ": " : "", detail);
}

/* Writes n in decimal at p; returns the number of bytes (at most 20). */
size_t ocap__fmt_ll(char *p, long long n) {
  unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
  size_t out = 0;
  if (n < 0)
    p[out++] = '-';
  /* The digits are written in place from the end, two at a time, once
   * they are counted: ids are formatted at every import and every promise
   * made, and nearly all have at most eight digits, counted in three
   * compares. */
  static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233"
                              "34353637383940414243444546474849505152535455565758596061626364656667"
                              "6869707172737475767778798081828384858687888990919293949596979899";
  size_t len;
  if (u < 10000)
    len = u < 100 ? (u < 10 ? 1 : 2) : (u < 1000 ? 3 : 4);
  else if (u < 100000000)
    len = u < 1000000 ? (u < 100000 ? 5 : 6) : (u < 10000000 ? 7 : 8);
  else
    for (unsigned long long v = 1000000000ULL, l = 9;; v *= 10, l++)
      if (l == 20 || u < v) {
        len = l;
        break;
      }
  size_t i = out + len;
  while (u >= 100) {
    unsigned d = (unsigned)(u % 100) * 2;
    u /= 100;
    p[--i] = pairs[d + 1];
    p[--i] = pairs[d];
  }
  if (u >= 10) {
    p[--i] = pairs[u * 2 + 1];
    p[--i] = pairs[u * 2];
  } else {
    p[--i] = (char)('0' + u);
  }
  return out + len;
}

ocap__epc_t ocap__ep_code_n(const char *s, size_t l) {
  char ep[OCAP_REF_MAX];
  if (l == 0 || l >= sizeof ep)
    return 0;
  memcpy(ep, s, l);
  ep[l] = '\0';
  return ocap__ep_code(ep);
}

size_t ocap__ep_text(ocap__epc_t c, char *out) {
  if (c == 1) {
    memcpy(out, "kernel", 7);
    return 6;
  }
  out[0] = (c & 3) == 2 ? 'v' : 'r';
  size_t n = 1 + ocap__fmt_ll(out + 1, (long long)(c >> 2));
  out[n] = '\0';
  return n;
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
      n += ocap__fmt_ll(key + n, va_arg(ap, long long));
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
      return ocap__broken(k, OCAP_ECORRUPT,                                                        \
                          "a key of the form '%s' would be longer than %d bytes", fmt,             \
                          KEY_MAX - 1);                                                            \
  } while (0)

/* Looks key up. Returns 1 found, 0 missing, or a negative code. */
static int get_key(ocap_kernel_t *k, const char *key, size_t kl, const char **v, size_t *vl) {
  int rc = ocap_store_get(k->s, key, kl, v, vl);
  return rc < 0 ? ocap__store_failed(k, rc, "read", key, kl) : rc;
}

/* Reads a value whole into b (reset first). Returns 1 found, 0 missing,
 * or a negative code. */
int ocap__getb(ocap_kernel_t *k, ocap__buf_t *b, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  b->len = 0;
  int rc = get_key(k, key, kl, &v, &vl);
  if (rc <= 0)
    return rc;
  if (ocap__buf_add(b, v, vl))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading '%s'", key);
  return 1;
}

/* Returns 1 when the key exists, 0 when not, or a negative code. */
int ocap__has(ocap_kernel_t *k, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  return get_key(k, key, kl, &v, &vl);
}

/* memset, called through a volatile pointer by ocap__zalloc (kstate.h)
 * so that the compiler cannot turn malloc and memset back into calloc. */
static void *(*volatile zero_fill)(void *, int, size_t) = memset;

void *ocap__zalloc(size_t n) {
  void *p = malloc(n);
  if (p)
    zero_fill(p, 0, n);
  return p;
}

/* The pointer is read and written with memcpy, so that an array of any
 * element type can be passed by the address of its pointer. */
int ocap__reserve_grow(void *arrayp, size_t *cap, size_t need, size_t size, size_t first) {
  void *v;
  memcpy(&v, arrayp, sizeof v);
  size_t n = *cap ? *cap * 2 : first;
  while (n < need)
    n *= 2;
  void *nv = realloc(v, n * size);
  if (!nv)
    return OCAP_ENOMEM;
  memcpy(arrayp, &nv, sizeof nv);
  *cap = n;
  return 0;
}

/* A byte of a reference: the kernel's refs, vat ids and vrefs use these. */
static int ref_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' ||
         c == '-' || c == '/' || c == ':' || c == '_';
}

/* Whether v (vl bytes) can be a reference: short enough for OCAP_REF_MAX,
 * and only bytes a reference uses (no space, which separates them). */
int ocap__ref_like(const char *v, size_t vl) {
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
int ocap__get_ref(ocap_kernel_t *k, char *out, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  int rc = get_key(k, key, kl, &v, &vl);
  if (rc <= 0)
    return rc;
  if (!ocap__ref_like(v, vl))
    return ocap__corrupt(k, key, v, vl, "a reference");
  memcpy(out, v, vl);
  out[vl] = '\0';
  return 1;
}

/* Reads `<kpid>.state` from the store. Returns a ST_* value (ST_NONE when
 * missing), or a negative code. */
int ocap__read_state(ocap_kernel_t *k, const char *kpid) {
  char key[KEY_MAX];
  size_t kl = strlen(kpid);
  if (kl + sizeof ".state" > KEY_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "promise id '%.40s...' is too long", kpid);
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
  return ocap__corrupt(k, key, v, vl, "a promise state (unresolved, fulfilled or rejected)");
}

int ocap__parse_count(const char *v, size_t vl, long long *out) {
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
int ocap__get_count(ocap_kernel_t *k, long long dflt, long long *out, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t vl;
  *out = dflt;
  int rc = get_key(k, key, kl, &v, &vl);
  if (rc <= 0)
    return rc;
  if (!ocap__parse_count(v, vl, out))
    return ocap__corrupt(k, key, v, vl, "a count (a decimal integer from 0 to 2^53 - 1)");
  return 0;
}

int ocap__setn(ocap_kernel_t *k, const char *val, size_t vl, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  int rc = ocap_store_set(k->s, key, kl, val, vl);
  return rc ? ocap__store_failed(k, rc, "write", key, kl) : 0;
}

int ocap__delv(ocap_kernel_t *k, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  int rc = ocap_store_delete(k->s, key, kl);
  return rc ? ocap__store_failed(k, rc, "delete", key, kl) : 0;
}

/* Writes a count; one that would pass COUNT_MAX is refused, since reading
 * it back would fail. */
int ocap__seti(ocap_kernel_t *k, long long n, const char *fmt, ...) {
  char val[32];
  FORMAT_KEY(key, kl, fmt);
  if (n < 0 || n > COUNT_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "count %lld for key '%s' is out of range", n, key);
  size_t vl = ocap__fmt_ll(val, n);
  int rc = ocap_store_set(k->s, key, kl, val, vl);
  return rc ? ocap__store_failed(k, rc, "write", key, kl) : 0;
}

static const char *const counter_key[CTR_COUNT] = {"nextVatId", "nextObjectId", "nextPromiseId",
                                                   "nextPeerId"};

/*
 * nextPromiseId goes up at every message with a result, so the store keeps
 * a bound rather than its value: a sync that finds the committed value past
 * the stored one writes it plus OCAP_ID_RESERVE, and the syncs after leave
 * it alone until the kernel passes that too. A kernel opened on the store
 * goes on from the bound, which is above every id handed out before it was
 * written (and so above every id the store names): ids are still never
 * reused, a restart after a crash only skips those below the bound. A
 * kernel that closes writes the value itself (ids_exact), so that the one
 * opened next goes on from it. The other counters move rarely and keep
 * their value.
 */
static int counter_reserved(int i) {
  return i == CTR_PROMISE;
}

/* The value a sync writes for counter i. */
static long long counter_stored(const ocap_kernel_t *k, int i) {
  return counter_reserved(i) ? ocap__id_stored(k->cnext[i], k->ids_exact) : k->cnext[i];
}

/* Whether counter i was changed by a commit since the store last got it
 * (for a bound: went past it). */
static int counter_unsynced(const ocap_kernel_t *k, int i) {
  if (!(k->counters_loaded & (1 << i)))
    return 0;
  return counter_reserved(i) ? ocap__id_unsynced(k->cnext[i], k->snext[i], k->ids_exact)
                             : k->cnext[i] != k->snext[i];
}

/* Reads counter `which` the first time it is needed (each on its own, so
 * that a damaged one fails only what uses it). */
static int counter_load(ocap_kernel_t *k, int which) {
  if (k->counters_loaded & (1 << which))
    return 0;
  int rc = ocap__get_count(k, 1, &k->next[which], "%s", counter_key[which]);
  if (rc)
    return rc;
  k->cnext[which] = k->snext[which] = k->next[which];
  k->counters_loaded |= 1 << which;
  return 0;
}

int ocap__bump(ocap_kernel_t *k, int which, long long *out) {
  int rc = counter_load(k, which);
  if (rc)
    return rc;
  *out = k->next[which];
  if (*out >= COUNT_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "counter '%s' is exhausted (%lld)", counter_key[which],
                        *out);
  k->next[which]++;
  return 0;
}

int ocap__issued(ocap_kernel_t *k, int which, long long id) {
  int rc = counter_load(k, which);
  return rc ? rc : id < k->next[which];
}

long long ocap_kernel_next_id(ocap_kernel_t *k, char kind) {
  int which = kind == 'o' ? CTR_OBJECT : kind == 'p' ? CTR_PROMISE : kind == 'v' ? CTR_VAT : -1;
  if (which < 0)
    return ocap__fail(k, OCAP_EINVAL, "unknown id kind '%c'", kind);
  int rc = counter_load(k, which);
  return rc ? rc : k->next[which];
}

int ocap__check_key(ocap_kernel_t *k, const char *val, size_t vl, const char *fmt, ...) {
  FORMAT_KEY(key, kl, fmt);
  const char *v;
  size_t sl;
  int rc = ocap_store_get(k->s, key, kl, &v, &sl);
  if (rc < 0)
    return ocap__fail(k, rc, "reading '%s' failed", key);
  if ((rc == 0) != (val == NULL) || (val && (sl != vl || memcmp(v, val, vl) != 0)))
    return ocap__fail(k, OCAP_ECORRUPT, "the kernel holds %s%.*s%s for '%s', the store %s%.*s%s",
                      val ? "'" : "", val ? (int)vl : 4, val ? val : "none", val ? "'" : "", key,
                      rc ? "'" : "", rc ? (int)sl : 4, rc ? v : "none", rc ? "'" : "");
  return 0;
}

int ocap__counters_check(ocap_kernel_t *k) {
  for (int i = 0; i < CTR_COUNT; i++) {
    if (!(k->counters_loaded & (1 << i)))
      continue;
    /* The stored value, which the sync before made the committed one (or
     * its bound): an abort leaves the ids it spent in next. */
    char v[32];
    size_t vl = ocap__fmt_ll(v, k->snext[i]);
    /* An absent counter reads as 1, so 1 may be either. */
    int rc = k->snext[i] < k->cnext[i]
                 ? ocap__broken(k, OCAP_ECORRUPT, "counter '%s' is behind", counter_key[i])
             : k->snext[i] == 1 ? 0
                                : ocap__check_key(k, v, vl, "%s", counter_key[i]);
    if (rc)
      return rc;
  }
  return 0;
}

void ocap__counters_forget(ocap_kernel_t *k, const char *key) {
  for (int i = 0; i < CTR_COUNT; i++)
    if (strcmp(key, counter_key[i]) == 0 && k->next[i] == k->cnext[i] && !counter_unsynced(k, i))
      k->counters_loaded &= ~(1 << i);
}

/*
 * Nearly every crank takes an id (a result promise, an export), so the
 * counters are written, like the run queue, when the kernel syncs rather
 * than into each crank's buffer: their committed values, once per sync.
 */
int ocap__counters_unsynced(ocap_kernel_t *k) {
  for (int i = 0; i < CTR_COUNT; i++)
    if (counter_unsynced(k, i))
      return 1;
  return 0;
}

int ocap__counters_fill(ocap_kernel_t *k) {
  for (int i = 0; i < CTR_COUNT; i++) {
    if (counter_unsynced(k, i)) {
      int rc = ocap__seti(k, counter_stored(k, i), "%s", counter_key[i]);
      if (rc)
        return rc;
    }
  }
  return 0;
}

void ocap__counters_synced(ocap_kernel_t *k) {
  for (int i = 0; i < CTR_COUNT; i++)
    if (counter_unsynced(k, i))
      k->snext[i] = counter_stored(k, i);
}

void ocap__counters_done(ocap_kernel_t *k) {
  memcpy(k->cnext, k->next, sizeof k->cnext);
}

/*
 * An abort keeps the counters where the rolled-back work left them: the
 * ids it handed out are spent, never handed out again. Host code that ran
 * in the crank (a kernel service exporting an object, a message's result)
 * keeps them in its own tables, which no rollback undoes; a kref given
 * again would make another object (a vat's) decode on the host as the
 * host's own exo, or settle another promise's kit. The store keeps the
 * committed values until the next commit takes the spent ones with it.
 */
void ocap__counters_abort(ocap_kernel_t *k, int cleared) {
  if (cleared)
    k->counters_loaded = 0;
}
