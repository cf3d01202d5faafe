/*
 * clist.c -- the endpoints' c-lists in memory (see clist.h).
 *
 * Like the promises (promise.c), an entry keeps three versions of its
 * value: now, at the last commit, and in the store. The committed one is
 * kept lazily: each crank (each commit or abort) is an epoch, and an
 * entry's first change in an epoch saves its value as it was (cval) and
 * marks the entry with the epoch. Until the epoch ends, that saved value
 * is the committed one; after it, the value now is. So a commit visits
 * nothing it changed, except the few entries listed for it (`fix`): those
 * the crank emptied, which go if the store lacks them too, and those whose
 * saved value is a text to free. An abort, rare, puts the saved values
 * back, walking the sync list: an entry joins it at its first change,
 * since its committed value may then differ from the store's, and is
 * written under `<ep>.c.<ref>` when the kernel syncs (kernel.h). An entry
 * made and emptied in one crank goes at once; one made and retired
 * between two syncs (a promise's, mostly) never reaches the store. An
 * entry gone in memory and in the store is dropped, and so is a c-list
 * left empty, at the end of the crank.
 *
 * Keys and values are words (clist.h): a reference's code, so that a
 * lookup is a multiply and a compare of words, and a change copies a word;
 * the text of a key or a value is made only for the store (sync, the
 * integrity check) and for the few callers that need it. A reference with
 * no code is kept as text beside its word: a value's text is shared
 * between its versions while they are equal, and freed when none of the
 * three uses it.
 */
#include "clist.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idtable.h"
#include "refs.h"

#define SPARES_MAX 256 /* spare entries a kernel keeps */

/* A round trip makes and retires four entries: they are taken from the
 * table's spares, not malloc'd each time. */
typedef ocap__centry_t centry_t;
typedef ocap__clist_t clist_t;

typedef struct dirty {
  clist_t *c;
  centry_t *e;
} dirty_t;

struct ocap__clists {
  ocap__clists_head_t h; /* first (clist.h): the vats' c-lists by N (vat_index) */
  void **slots;          /* clist_t records by endpoint, for those vat_index does not place */
  size_t mask, n;
  clist_t *kernel; /* the kernel endpoint's (its imports), which every host call reaches */
  uint64_t epoch;  /* the crank's (the file's comment); entries start at 0 */
  int changed;     /* whether the crank changed an entry or a counter */
  dirty_t *fix;    /* the entries the end of the crank visits */
  size_t nfix, capfix;
  clist_t *empty; /* the c-lists an entry's removal left empty, by next_empty */
  dirty_t *sync;  /* the entries whose committed value the store may lack */
  size_t nsync, capsync;
  clist_t **idirty; /* the c-lists whose counters this crank changed */
  size_t nidirty, capidirty;
  clist_t **isync; /* those whose committed counters the store may lack */
  size_t nisync, capisync;
  centry_t *spares; /* entries free to reuse */
  size_t nspares;
  char vtext[OCAP_REF_MAX + 8]; /* the text ocap__clist_get returns for a code */
};

static size_t str_hash(const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
  return (size_t)(h ^ (h >> 32));
}

/* ---- references as words ---- */

size_t ocap__ref_text(uint64_t w, char *out) {
  static const char prefix[8][2] = {{'?', '?'}, {'k', 'o'}, {'k', 'p'}, {'o', '+'},
                                    {'o', '-'}, {'p', '+'}, {'p', '-'}, {'?', '?'}};
  static const char pairs[201] =
      "00010203040506070809101112131415161718192021222324252627282930313233"
      "34353637383940414243444546474849505152535455565758596061626364656667"
      "6869707172737475767778798081828384858687888990919293949596979899";
  /* 10^t for t > 0, 0 for t = 0 (so that 0 has one digit). */
  static const uint64_t p10[20] = {0,
                                   10ULL,
                                   100ULL,
                                   1000ULL,
                                   10000ULL,
                                   100000ULL,
                                   1000000ULL,
                                   10000000ULL,
                                   100000000ULL,
                                   1000000000ULL,
                                   10000000000ULL,
                                   100000000000ULL,
                                   1000000000000ULL,
                                   10000000000000ULL,
                                   100000000000000ULL,
                                   1000000000000000ULL,
                                   10000000000000000ULL,
                                   100000000000000000ULL,
                                   1000000000000000000ULL,
                                   10000000000000000000ULL};
  unsigned kind = REF_KIND(w);
  uint64_t n = REF_NUM(w);
  memcpy(out, prefix[kind], 2);
  /* The digits are counted without a loop: bits * 1233 / 4096 is
   * floor(log10(2^bits)), one short of the count or right, which one
   * compare tells. Then they are written in place from the end, two at a
   * time: a round trip formats a few refs of four or five digits. */
  unsigned t = ((unsigned)(64 - __builtin_clzll(n | 1)) * 1233u) >> 12;
  size_t len = 2 + t + (n >= p10[t]);
  out[len] = '\0';
  char *p = out + len;
  while (n >= 100) {
    uint64_t q = n / 100;
    memcpy(p -= 2, pairs + 2 * (n - q * 100), 2);
    n = q;
  }
  if (n >= 10)
    memcpy(p - 2, pairs + 2 * n, 2);
  else
    p[-1] = (char)('0' + n);
  return len;
}

uint64_t ocap__ckey_text(const char *ref) {
  return ((uint64_t)str_hash(ref) << 3) | REF_TEXT;
}

uint64_t ocap__cv_make(const char *s, size_t n) {
  ocap__ctext_t *t = malloc(sizeof *t + n + 1);
  if (!t)
    return 0;
  t->len = n;
  memcpy(t->s, s, n);
  t->s[n] = '\0';
  return (uint64_t)(uintptr_t)t | REF_TEXT;
}

void ocap__cv_free(uint64_t v) {
  if (REF_KIND(v) == REF_TEXT)
    free((void *)(uintptr_t)(v & ~(uint64_t)7));
}

/*
 * The value word of a value as stored (v, vl bytes): its code (with
 * CV_DROP after a mark `_ `) when it is the canonical text of one, its
 * text then in vt, else a text value; 0 when out of memory.
 */
static uint64_t cv_parse(const char *v, size_t vl, char *vt) {
  uint64_t drop = 0;
  if (vl > 2 && v[0] == '_' && v[1] == ' ') {
    drop = CV_DROP;
    v += 2;
    vl -= 2;
  }
  if (vl < sizeof((centry_t *)0)->vt) {
    memcpy(vt, v, vl);
    vt[vl] = '\0';
    uint64_t w = strlen(vt) == vl ? ocap__ref_code(vt) : 0;
    if (w)
      return w | drop;
  }
  if (drop) {
    v -= 2;
    vl += 2;
  }
  return ocap__cv_make(v, vl);
}

/* The text of value word val (not 0) into buf (OCAP_REF_MAX + 8 bytes)
 * unless it has its own: the text and its length in *len. */
static const char *cv_str(uint64_t val, char *buf, size_t *len) {
  const ocap__ctext_t *t = ocap__cv_text(val);
  if (t) {
    *len = t->len;
    return t->s;
  }
  size_t m = 0;
  if (val & CV_DROP) {
    buf[0] = '_';
    buf[1] = ' ';
    m = 2;
  }
  *len = m + ocap__ref_text(val & ~CV_DROP, buf + m);
  return buf;
}

/* ---- an endpoint's entries ---- */

#define key_hash ocap__ckey_hash
#define entry_slot ocap__clist_slot

void **ocap__clist_slot_text(clist_t *c, const ocap__ckey_t *key) {
  for (size_t i = key_hash(key->w) & c->mask;; i = (i + 1) & c->mask) {
    centry_t *e = c->slots[i];
    if (!e || (e->key == key->w && strcmp(e->xkey, key->s) == 0))
      return &c->slots[i];
  }
}

/* The slot an entry hashes to (ocap__home_fn). */
static size_t entry_home(const void *rec, size_t mask) {
  return key_hash(((const centry_t *)rec)->key) & mask;
}

/* The text of e's key: its own, or made in buf (OCAP_REF_MAX bytes). */
static const char *entry_ref(const centry_t *e, char *buf) {
  if (e->xkey)
    return e->xkey;
  ocap__ref_text(e->key, buf);
  return buf;
}

/* Frees value v of e unless another version of it (a or b) uses it. */
static inline void val_drop(uint64_t v, uint64_t a, uint64_t b) {
  if (REF_KIND(v) == REF_TEXT && v != a && v != b)
    ocap__cv_free(v);
}

/* e's committed value (the file's comment). */
static inline uint64_t committed(const struct ocap__clists *t, const centry_t *e) {
  return e->epoch == t->epoch ? e->cval : e->val;
}

/* Lists c as maybe left empty, for the end of the crank: it is not
 * dropped before, as callers hold it. */
static inline void maybe_empty(struct ocap__clists *t, clist_t *c) {
  if (!c->dirty) {
    c->dirty = 1;
    c->next_empty = t->empty;
    t->empty = c;
  }
}

/* Gives e back: to the spares when there is room. */
__attribute__((always_inline)) static inline void entry_free(struct ocap__clists *t, centry_t *e) {
  /* An entry goes when its values are gone: only a whole c-list's end
   * frees one that has some. */
  uint64_t cv = committed(t, e);
  if (e->val | cv | e->sval) {
    val_drop(e->val, cv, e->sval);
    val_drop(cv, e->sval, 0);
    val_drop(e->sval, 0, 0);
  }
  if (e->xkey)
    free(e->xkey);
  if (t->nspares < SPARES_MAX) {
    e->next_spare = t->spares;
    t->spares = e;
    t->nspares++;
  } else {
    free(e);
  }
}

/* Empties slot i of c, shifting back the entries probed past it, so that
 * no lookup stops at the hole before reaching them. */
__attribute__((always_inline)) static inline void slot_clear(clist_t *c, size_t i) {
  size_t mask = c->mask;
  void **s = c->slots;
  s[i] = NULL;
  for (size_t j = (i + 1) & mask; s[j]; j = (j + 1) & mask) {
    /* The entry at j moves back into the hole when the hole lies between
     * its home and j, cyclically: no farther from j than its home. */
    size_t h = key_hash(((centry_t *)s[j])->key);
    if (((j - h) & mask) >= ((j - i) & mask)) {
      s[i] = s[j];
      s[j] = NULL;
      i = j;
    }
  }
  c->n--;
}

/* Removes e, found in slot sl of c (or NULL: it is looked for). */
__attribute__((always_inline)) static inline void
entry_remove_at(struct ocap__clists *t, clist_t *c, centry_t *e, void **sl) {
  if (!sl) {
    size_t mask = c->mask, i = key_hash(e->key) & mask;
    while (c->slots[i] != e)
      i = (i + 1) & mask;
    sl = &c->slots[i];
  }
  entry_free(t, e);
  slot_clear(c, (size_t)(sl - c->slots));
}

#define entry_remove(t, c, e) entry_remove_at(t, c, e, NULL)

/* Adds an entry for key with value word val (0: absent), which it owns
 * from then on; NULL when out of memory. sl, when not NULL, is the empty
 * slot entry_slot found for key, which a caller that just looked key up
 * passes to spare probing again; it is found anew if the table grows. */
__attribute__((always_inline)) static inline centry_t *
entry_add(struct ocap__clists *t, clist_t *c, const ocap__ckey_t *key, uint64_t val, void **sl) {
  /* Kept at most a quarter full, not half like the other tables: a
   * round trip adds and removes four entries, and removal shifts back the
   * run after its slot, which a fuller table makes long. */
  if ((c->n + 1) * 4 > c->mask + 1) {
    if (ocap__oa_grow(&c->slots, &c->mask, entry_home))
      return NULL;
    sl = NULL;
  }
  char *xkey = NULL;
  if (REF_KIND(key->w) == REF_TEXT) {
    size_t n = strlen(key->s) + 1;
    if (!(xkey = malloc(n)))
      return NULL;
    memcpy(xkey, key->s, n);
  }
  centry_t *e = t->spares;
  if (e) {
    t->spares = e->next_spare;
    t->nspares--;
  } else if (!(e = malloc(sizeof *e))) {
    free(xkey);
    return NULL;
  }
  e->key = key->w;
  e->val = e->cval = e->sval = val;
  e->epoch = 0;
  e->vtlen = 0;
  e->xkey = xkey;
  e->fix = 0;
  e->syncat = 0;
  *(sl ? sl : entry_slot(c, key)) = e;
  c->n++;
  return e;
}

static void clist_free(struct ocap__clists *t, clist_t *c) {
  for (size_t i = 0; i <= c->mask; i++)
    if (c->slots[i])
      entry_free(t, c->slots[i]);
  free(c->slots);
  free(c);
}

/* ---- the endpoints ---- */

/*
 * A vat's c-list is found by the N of its endpoint `v<N>`, in an array:
 * a few instructions, where hashing the name and comparing it cost about
 * eighty, and a round trip finds a c-list about twenty times. Vat ids are
 * handed out in order, so the array stays about as long as the number of
 * vats. The kernel's endpoint has a field of its own, since every host
 * call reaches its c-list; any name neither takes (a peer's, a leading
 * zero, which would make two names one N, or more than six digits) is
 * hashed.
 */
static inline long vat_index(const char *ep) {
  if (ep[0] != 'v' || ep[1] < '0' || ep[1] > '9' || (ep[1] == '0' && ep[2]))
    return -1;
  long n = ep[1] - '0';
  for (const char *c = ep + 2; *c; c++) {
    if (*c < '0' || *c > '9' || c - ep > 6)
      return -1;
    n = n * 10 + (*c - '0');
  }
  return n;
}

static void **clist_slot(struct ocap__clists *t, const char *ep) {
  for (size_t i = str_hash(ep) & t->mask;; i = (i + 1) & t->mask) {
    clist_t *c = t->slots[i];
    if (!c || strcmp(c->ep, ep) == 0)
      return &t->slots[i];
  }
}

/* The slot a c-list hashes to (ocap__home_fn). */
static size_t clist_home(const void *rec, size_t mask) {
  return str_hash(((const clist_t *)rec)->ep) & mask;
}

/* ep's c-list in memory, or NULL. */
static inline clist_t *clist_get_ep(struct ocap__clists *t, const char *ep) {
  long v = vat_index(ep);
  if (v >= 0)
    return (size_t)v < t->h.nbyvat ? t->h.byvat[v] : NULL;
  if (ocap__is_kernel_ep(ep))
    return t->kernel;
  return *clist_slot(t, ep);
}

/* Files c, whose endpoint has no c-list in memory. Returns 0 or
 * OCAP_ENOMEM (then nothing changed). */
static int clist_place(struct ocap__clists *t, clist_t *c) {
  long v = vat_index(c->ep);
  if (v >= 0) {
    if ((size_t)v >= t->h.nbyvat) {
      size_t n = t->h.nbyvat ? t->h.nbyvat * 2 : 16;
      while (n <= (size_t)v)
        n *= 2;
      clist_t **nv = realloc(t->h.byvat, n * sizeof *nv);
      if (!nv)
        return OCAP_ENOMEM;
      memset(nv + t->h.nbyvat, 0, (n - t->h.nbyvat) * sizeof *nv);
      t->h.byvat = nv;
      t->h.nbyvat = n;
    }
    t->h.byvat[v] = c;
    return 0;
  }
  if (ocap__is_kernel_ep(c->ep)) {
    t->kernel = c;
    return 0;
  }
  if (ocap__oa_full(t->n, t->mask) && ocap__oa_grow(&t->slots, &t->mask, clist_home))
    return OCAP_ENOMEM;
  *clist_slot(t, c->ep) = c;
  t->n++;
  return 0;
}

static void clist_remove_ep(struct ocap__clists *t, clist_t *c) {
  long v = vat_index(c->ep);
  if (v >= 0) {
    t->h.byvat[v] = NULL;
    clist_free(t, c);
    return;
  }
  if (c == t->kernel) {
    t->kernel = NULL;
    clist_free(t, c);
    return;
  }
  size_t i = str_hash(c->ep) & t->mask;
  while (t->slots[i] != c)
    i = (i + 1) & t->mask;
  clist_free(t, c);
  ocap__oa_delete(t->slots, t->mask, i, clist_home);
  t->n--;
}

int ocap__clists_new(ocap_kernel_t *k) {
  struct ocap__clists *t = calloc(1, sizeof *t);
  if (t)
    t->slots = calloc(64, sizeof *t->slots);
  if (!t || !t->slots) {
    free(t);
    return OCAP_ENOMEM;
  }
  t->mask = 63;
  t->epoch = 1;
  k->c = t;
  return 0;
}

static void drop_all(struct ocap__clists *t) {
  for (size_t i = 0; i <= t->mask; i++) {
    if (t->slots[i])
      clist_free(t, t->slots[i]);
    t->slots[i] = NULL;
  }
  for (size_t i = 0; i < t->h.nbyvat; i++) {
    if (t->h.byvat[i])
      clist_free(t, t->h.byvat[i]);
    t->h.byvat[i] = NULL;
  }
  if (t->kernel)
    clist_free(t, t->kernel);
  t->kernel = NULL;
  t->n = 0;
  t->nfix = 0;
  t->empty = NULL;
  t->nsync = 0;
  t->nidirty = 0;
  t->nisync = 0;
}

void ocap__clists_free(ocap_kernel_t *k) {
  struct ocap__clists *t = k->c;
  if (!t)
    return;
  drop_all(t);
  while (t->spares) {
    centry_t *e = t->spares;
    t->spares = e->next_spare;
    free(e);
  }
  free(t->slots);
  free(t->h.byvat);
  free(t->fix);
  free(t->sync);
  free(t->idirty);
  free(t->isync);
  free(t);
}

/* What the reference r (n bytes) names, by its form: 'o' an object (ko<N>,
 * o+<N>, o-<N>, a virtual object's o+d...), 'p' a promise (kp<N>, p+<N>,
 * p-<N>); 0 for anything else, which the checks where it is used report. */
static char ref_names(const char *r, size_t n) {
  if (n > 1 && r[0] == 'k')
    r++;
  else if (n < 2 || (r[1] != '+' && r[1] != '-'))
    return 0;
  return r[0] == 'o' || r[0] == 'p' ? r[0] : 0;
}

/* Checks that the stored entry key = v (vl bytes, maybe marked `_ `),
 * whose reference starts at ref, pairs an object with an object and a
 * promise with a promise: damage that does not would be taken as a
 * reference of the other kind, and its counts kept on the wrong record. */
static int entry_kinds(ocap_kernel_t *k, const char *key, const char *ref, const char *v,
                       size_t vl) {
  size_t m = vl > 2 && v[0] == '_' && v[1] == ' ' ? 2 : 0;
  char a = ref_names(ref, strlen(ref)), b = ref_names(v + m, vl - m);
  if (!a || !b || a == b)
    return 0;
  return ocap__corrupt(k, key, v, vl, a == 'o' ? "an object's reference" : "a promise's reference");
}

/* Reads ep's c-list from the store: every key under `<ep>.c.`. */
__attribute__((noinline)) static int clist_load(ocap_kernel_t *k, const char *ep, clist_t **out) {
  struct ocap__clists *t = k->c;
  size_t el = strlen(ep);
  char prefix[KEY_MAX];
  if (el + 4 > KEY_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "endpoint '%.40s...' is too long", ep);
  memcpy(prefix, ep, el);
  memcpy(prefix + el, ".c.", 4);
  size_t plen = el + 3;
  clist_t *c = calloc(1, sizeof *c + el + 1);
  if (c)
    c->slots = calloc(16, sizeof *c->slots);
  if (!c || !c->slots) {
    free(c);
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading the c-list of %s", ep);
  }
  c->mask = 15;
  memcpy(c->ep, ep, el + 1);
  static const char *const id_key[2] = {"%s.nextObjectId", "%s.nextPromiseId"};
  for (int i = 0; i < 2; i++) {
    int rc = ocap__get_count(k, -1, &c->next[i], id_key[i], ep);
    if (rc) {
      clist_free(t, c);
      return rc;
    }
    c->cnext[i] = c->snext[i] = c->next[i];
  }
  ocap__buf_t after = {0};
  const char *key, *v;
  size_t klen, vl;
  int rc;
  while ((rc = ocap_store_next_key(k->s, prefix, plen, after.p, after.len, 0, &key, &klen)) == 1) {
    after.len = 0;
    if (ocap__buf_add(&after, key, klen) || ocap__buf_add(&after, "", 1)) {
      rc = ocap__broken(k, OCAP_ENOMEM, "out of memory reading the c-list of %s", ep);
      break;
    }
    after.len--; /* the NUL stays after the key, out of the scan's `after` */
    rc = ocap_store_get(k->s, after.p, after.len, &v, &vl);
    if (rc < 0) {
      rc = ocap__store_failed(k, rc, "read", after.p, after.len);
      break;
    }
    if (rc == 0)
      continue;
    if ((rc = entry_kinds(k, after.p, after.p + plen, v, vl)) != 0)
      break;
    ocap__ckey_t ck;
    ocap__ckey(&ck, after.p + plen);
    char vt[sizeof((centry_t *)0)->vt];
    uint64_t val = cv_parse(v, vl, vt);
    centry_t *e = val ? entry_add(t, c, &ck, val, NULL) : NULL;
    if (e) {
      memcpy(e->vt, vt, sizeof vt);
      e->vtlen = REF_KIND(val) == REF_TEXT ? 0 : (unsigned)strlen(vt);
    } else {
      ocap__cv_free(val);
      rc = ocap__broken(k, OCAP_ENOMEM, "out of memory reading the c-list of %s", ep);
      break;
    }
  }
  if (rc < 0 && !k->err)
    rc = ocap__store_failed(k, rc, "scan", prefix, plen);
  free(after.p);
  if (rc == 0 && clist_place(t, c))
    rc = ocap__broken(k, OCAP_ENOMEM, "out of memory reading the c-list of %s", ep);
  if (rc < 0) {
    clist_free(t, c);
    return rc;
  }
  *out = c;
  return 0;
}

/* ep's c-list, read from the store if need be. The load is kept out of
 * line: inlined, it made every lookup save and restore its registers. */
static inline int clist_find(ocap_kernel_t *k, const char *ep, clist_t **out) {
  clist_t *c = clist_get_ep(k->c, ep);
  if (c) {
    *out = c;
    return 0;
  }
  return clist_load(k, ep, out);
}

int ocap__clist_of_any(ocap_kernel_t *k, const char *ep, clist_t **out) {
  return clist_find(k, ep, out);
}

int ocap__clist_of_ep_any(ocap_kernel_t *k, const char *ep, clist_t **out) {
  /* A vat's name that vat_index reads is valid: the check costs nothing
   * more on the hot path. */
  long v = vat_index(ep);
  if (v >= 0 && (size_t)v < k->c->h.nbyvat && k->c->h.byvat[v]) {
    *out = k->c->h.byvat[v];
    return 0;
  }
  if (!ocap__valid_ep(ep))
    return ocap__fail(k, OCAP_EINVAL, "invalid endpoint '%.60s'", ep);
  return clist_find(k, ep, out);
}

int ocap__clist_get(ocap_kernel_t *k, const char *ep, const char *ref, const char **v, size_t *vl) {
  clist_t *c;
  int rc = clist_find(k, ep, &c);
  if (rc)
    return rc;
  ocap__ckey_t key;
  ocap__ckey(&key, ref);
  centry_t *e = *entry_slot(c, &key);
  if (!e || !e->val)
    return 0;
  uint64_t val = e->val;
  if (REF_KIND(val) == REF_TEXT || (val & CV_DROP)) {
    *v = cv_str(val, k->c->vtext, vl);
    return 1;
  }
  *v = ocap__centry_vt(e);
  *vl = e->vtlen;
  /* A code is well formed; whether it is what the key calls for (a vref
   * for a vat's kref, a kref for a vref) is one test of its kind. */
  int kref_key = REF_IS_KREF(key.w), kref_val = REF_IS_KREF(val);
  if (REF_KIND(key.w) == REF_TEXT)
    return 1;
  if (ocap__is_kernel_ep(ep))
    return kref_key && kref_val ? 2 : 1;
  return kref_key != kref_val ? 2 : 1;
}

/* Whether value word val (not 0), ep's entry for an object kref, makes
 * ep an importer of it: the kernel endpoint's entries all are imports, a
 * vat's when its vref is `o-N` (after the `_ ` of a dropped one). */
static int is_import(const char *ep, uint64_t val) {
  if (ocap__is_kernel_ep(ep))
    return 1;
  const ocap__ctext_t *t = ocap__cv_text(val);
  if (!t)
    return REF_KIND(val) == REF_OI;
  const char *s = t->s;
  if (s[0] == '_' && s[1] == ' ')
    s += 2;
  return s[0] == 'o' && s[1] == '-';
}

/*
 * Keeps the importers' index `ko<N>.i.<ep>` in step with ep's entry for
 * key: written when an import entry appears, deleted when it goes. It is
 * written straight into the crank buffer, so it commits and rolls back
 * with the crank, and a scan of `ko<N>.i.` always sees the entries as they
 * are now.
 */
__attribute__((noinline)) static int index_importer(ocap_kernel_t *k, const char *ep,
                                                    const ocap__ckey_t *key, uint64_t old,
                                                    uint64_t val) {
  char buf[OCAP_REF_MAX];
  const char *ref = key->s;
  if (REF_KIND(key->w) == REF_TEXT) {
    if (ref[0] != 'k' || ref[1] != 'o')
      return 0;
  } else if (REF_KIND(key->w) != REF_KO) {
    return 0;
  }
  int was = old && is_import(ep, old), now = val && is_import(ep, val);
  if (was == now)
    return 0;
  if (REF_KIND(key->w) != REF_TEXT) {
    ocap__ref_text(key->w, buf);
    ref = buf;
  }
  return now ? ocap__setn(k, "1", 1, "%s.i.%s", ref, ep) : ocap__delv(k, "%s.i.%s", ref, ep);
}

/* A failed ocap__clist_put: frees val, which it would have kept. Out of
 * line, so that the path that succeeds saves fewer registers. */
__attribute__((noinline, cold)) static int put_failed(ocap_kernel_t *k, clist_t *c, uint64_t val,
                                                      int rc) {
  ocap__cv_free(val);
  return rc ? rc : ocap__broken(k, OCAP_ENOMEM, "out of memory changing the c-list of %s", c->ep);
}

/* Makes room for n more entries in the sync list and in the fix list, so
 * that a change, once begun, cannot fail. */
__attribute__((noinline)) static int lists_grow(struct ocap__clists *t, size_t n) {
  return ocap__reserve(&t->sync, &t->capsync, t->nsync + n, sizeof *t->sync, 32) ||
         ocap__reserve(&t->fix, &t->capfix, t->nfix + n, sizeof *t->fix, 16);
}

static inline int lists_room(struct ocap__clists *t, size_t n) {
  return t->nsync + n > t->capsync || t->nfix + n > t->capfix ? lists_grow(t, n) : 0;
}

/* Takes e off the sync list. */
static inline void sync_unlist(struct ocap__clists *t, centry_t *e) {
  if (!e->syncat)
    return;
  dirty_t last = t->sync[--t->nsync];
  t->sync[e->syncat - 1] = last;
  last.e->syncat = e->syncat;
  e->syncat = 0;
}

/* Lists e of c for the end of the crank (lists_room made room). */
static inline void fix_list(struct ocap__clists *t, clist_t *c, centry_t *e) {
  if (!e->fix) {
    t->fix[t->nfix].c = c;
    t->fix[t->nfix++].e = e;
    e->fix = 1;
  }
}

/*
 * Sets c's entry for key, in slot sl, to val (lists_room made room, the
 * importers' index is done): returns 0, or -1 when out of memory. The
 * entry's first change in the crank saves its value as it was, and lists
 * it for the sync. An entry emptied that was absent before the crank and
 * in the store goes at once; one emptied that was not, or whose value
 * before the crank is a text (to free once it is no longer the committed
 * one), is listed for the end of the crank.
 */
__attribute__((always_inline)) static inline int
put_in(struct ocap__clists *t, clist_t *c, const ocap__ckey_t *key, void **sl, uint64_t val) {
  centry_t *e = *sl;
  if (!e) {
    if (!val)
      return 0;
    if (!(e = entry_add(t, c, key, 0, sl)))
      return -1;
    e->epoch = t->epoch; /* absent before the crank: cval is 0 */
  } else if (e->epoch != t->epoch) {
    e->cval = e->val;
    e->epoch = t->epoch;
  }
  if (!e->syncat) {
    t->sync[t->nsync].c = c;
    t->sync[t->nsync++].e = e;
    e->syncat = (unsigned)t->nsync;
  }
  val_drop(e->val, e->cval, e->sval);
  e->val = val;
  e->vtlen = 0;
  if (!val) {
    if (!e->cval && !e->sval && !e->fix) {
      sync_unlist(t, e);
      entry_remove_at(t, c, e, sl);
      if (!c->n)
        maybe_empty(t, c);
    } else {
      fix_list(t, c, e);
    }
  } else if (REF_KIND(e->cval) == REF_TEXT) {
    fix_list(t, c, e);
  }
  return 0;
}

/* The importers' index for c's entry for key, in slot sl, set to val:
 * only an object's kref-keyed entry is in it. */
static inline int put_index(ocap_kernel_t *k, clist_t *c, const ocap__ckey_t *key, void **sl,
                            uint64_t val) {
  unsigned kind = REF_KIND(key->w);
  if (kind != REF_KO && kind != REF_TEXT)
    return 0;
  centry_t *e = *sl;
  return index_importer(k, c->ep, key, e ? e->val : 0, val);
}

int ocap__clist_put(ocap_kernel_t *k, clist_t *c, const ocap__ckey_t *key, void **sl,
                    uint64_t val) {
  struct ocap__clists *t = k->c;
  if (!sl)
    sl = entry_slot(c, key);
  if (!*sl && !val)
    return 0;
  int rc = put_index(k, c, key, sl, val);
  if (rc || lists_room(t, 1))
    return put_failed(k, c, val, rc);
  t->changed = 1;
  return put_in(t, c, key, sl, val) ? put_failed(k, c, val, 0) : 0;
}

/* ocap__clist_put2 where a key may be in the importers' index: two calls
 * of ocap__clist_put. */
__attribute__((noinline)) static int put2_indexed(ocap_kernel_t *k, clist_t *c,
                                                  const ocap__ckey_t *key1, void **sl1,
                                                  uint64_t val1, const ocap__ckey_t *key2,
                                                  uint64_t val2) {
  int rc = ocap__clist_put(k, c, key1, sl1, val1);
  if (rc) {
    ocap__cv_free(val2);
    return rc;
  }
  return ocap__clist_put(k, c, key2, NULL, val2);
}

int ocap__clist_put2(ocap_kernel_t *k, clist_t *c, const ocap__ckey_t *key1, void **sl1,
                     uint64_t val1, const ocap__ckey_t *key2, uint64_t val2) {
  /* A promise's pair, the common case, has no key in the index: one test
   * of both kinds sends the others to the general path. */
  const unsigned indexed = 1u << REF_KO | 1u << REF_TEXT;
  if (((1u << REF_KIND(key1->w)) | (1u << REF_KIND(key2->w))) & indexed)
    return put2_indexed(k, c, key1, sl1, val1, key2, val2);
  struct ocap__clists *t = k->c;
  if (!sl1)
    sl1 = entry_slot(c, key1);
  if (lists_room(t, 2) || put_in(t, c, key1, sl1, val1)) {
    ocap__cv_free(val2);
    return put_failed(k, c, val1, 0);
  }
  t->changed = 1;
  /* Looked up after the first change, which may move entries. */
  if (put_in(t, c, key2, entry_slot(c, key2), val2))
    return put_failed(k, c, val2, 0);
  return 0;
}

/* Lists c as having its counters changed by this crank, and makes room
 * for it in the sync list, which the end of the crank cannot fail to add
 * it to. */
static int ids_touch(ocap_kernel_t *k, clist_t *c) {
  struct ocap__clists *t = k->c;
  if (c->ids)
    return 0;
  if (ocap__reserve(&t->idirty, &t->capidirty, t->nidirty + 1, sizeof *t->idirty, 16) ||
      ocap__reserve(&t->isync, &t->capisync, t->nisync + t->nidirty + 1, sizeof *t->isync, 16))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory importing into %s", c->ep);
  t->idirty[t->nidirty++] = c;
  c->ids = 1;
  t->changed = 1;
  return 0;
}

int ocap__clist_next_id(ocap_kernel_t *k, clist_t *c, int promise, long long *out) {
  const char *ep = c->ep;
  int rc;
  long long n = c->next[promise] < 0 ? 1 : c->next[promise];
  if (n >= COUNT_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "counter '%s.%s' is exhausted", ep,
                        promise ? "nextPromiseId" : "nextObjectId");
  rc = ids_touch(k, c);
  if (rc)
    return rc;
  *out = n;
  c->next[promise] = n + 1;
  return 0;
}

int ocap__clist_clear_ids(ocap_kernel_t *k, const char *ep) {
  clist_t *c;
  int rc = clist_find(k, ep, &c);
  if (!rc)
    rc = ids_touch(k, c);
  if (!rc)
    c->next[0] = c->next[1] = -1;
  return rc;
}

long ocap__clist_importers(ocap_kernel_t *k, const char *kref, char (**out)[OCAP_REF_MAX]) {
  char prefix[KEY_MAX];
  int pl = snprintf(prefix, sizeof prefix, "%s.i.", kref);
  if (pl < 0 || (size_t)pl >= sizeof prefix)
    return ocap__broken(k, OCAP_ECORRUPT, "kref '%.40s...' is too long", kref);
  char(*eps)[OCAP_REF_MAX] = NULL;
  size_t n = 0, cap = 0;
  ocap__buf_t after = {0};
  const char *key;
  size_t klen;
  int rc;
  while ((rc = ocap_store_next_key(k->s, prefix, (size_t)pl, after.p, after.len, 0, &key, &klen)) ==
         1) {
    after.len = 0;
    if (ocap__buf_add(&after, key, klen)) {
      rc = ocap__broken(k, OCAP_ENOMEM, "out of memory listing the importers of %s", kref);
      break;
    }
    size_t el = klen - (size_t)pl;
    if (!ocap__ref_like(after.p + pl, el)) {
      rc = ocap__corrupt(k, after.p, "1", 1, "a key `ko<N>.i.<endpoint>`");
      break;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 8;
      void *v = realloc(eps, cap * sizeof *eps);
      if (!v) {
        rc = ocap__broken(k, OCAP_ENOMEM, "out of memory listing the importers of %s", kref);
        break;
      }
      eps = v;
    }
    memcpy(eps[n], after.p + pl, el);
    eps[n++][el] = '\0';
  }
  if (rc < 0 && !k->err)
    rc = ocap__store_failed(k, rc, "scan", prefix, (size_t)pl);
  free(after.p);
  if (rc < 0) {
    free(eps);
    return rc;
  }
  *out = eps;
  return (long)n;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int ocap__clist_each(ocap_kernel_t *k, const char *ep, const char *prefix,
                     int (*each)(void *ud, const char *ref), void *ud) {
  clist_t *c;
  int rc = clist_find(k, ep, &c);
  if (rc)
    return rc;
  size_t pl = strlen(prefix), n = 0;
  /* The texts of keys with a code are made here, in one block after the
   * array of pointers: each may change the c-list. */
  const char **refs = malloc((c->n + 1) * (sizeof *refs + OCAP_REF_MAX));
  if (!refs)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory listing the c-list of %s", ep);
  char(*texts)[OCAP_REF_MAX] = (char(*)[OCAP_REF_MAX])(refs + c->n + 1);
  for (size_t i = 0; i <= c->mask; i++) {
    centry_t *e = c->slots[i];
    if (!e || !e->val)
      continue;
    const char *ref = entry_ref(e, texts[n]);
    if (strncmp(ref, prefix, pl) == 0)
      refs[n++] = ref;
  }
  qsort(refs, n, sizeof *refs, cmp_str);
  for (size_t i = 0; i < n && !rc; i++)
    rc = each(ud, refs[i]);
  free(refs);
  return rc;
}

/* Checks c's entries and counters against the store. */
static int check_one(ocap_kernel_t *k, const clist_t *c) {
  int rc = 0;
  if (c) {
    for (size_t j = 0; j <= c->mask && !rc; j++) {
      centry_t *e = c->slots[j];
      if (!e)
        continue;
      char rbuf[OCAP_REF_MAX], vbuf[OCAP_REF_MAX + 8];
      size_t vl = 0;
      const char *v = e->val ? cv_str(e->val, vbuf, &vl) : NULL;
      rc = ocap__check_key(k, v, vl, "%s.c.%s", c->ep, entry_ref(e, rbuf));
    }
    static const char *const id_key[2] = {"%s.nextObjectId", "%s.nextPromiseId"};
    for (int j = 0; j < 2 && !rc; j++) {
      char v[32];
      /* The stored value, the committed one or its bound after the sync
       * before: an abort leaves the ids it spent in next. */
      if (c->snext[j] < c->cnext[j])
        return ocap__broken(k, OCAP_ECORRUPT, "counter '%s.%s' is behind", c->ep,
                            j ? "nextPromiseId" : "nextObjectId");
      size_t vl = c->snext[j] < 0 ? 0 : ocap__fmt_ll(v, c->snext[j]);
      rc = ocap__check_key(k, c->snext[j] < 0 ? NULL : v, vl, id_key[j], c->ep);
    }
  }
  return rc;
}

int ocap__clists_check(ocap_kernel_t *k) {
  struct ocap__clists *t = k->c;
  int rc = 0;
  for (size_t i = 0; i <= t->mask && !rc; i++)
    rc = check_one(k, t->slots[i]);
  for (size_t i = 0; i < t->h.nbyvat && !rc; i++)
    rc = check_one(k, t->h.byvat[i]);
  if (!rc)
    rc = check_one(k, t->kernel);
  return rc;
}

void ocap__clists_forget(ocap_kernel_t *k, const char *ep) {
  struct ocap__clists *t = k->c;
  clist_t *c = clist_get_ep(t, ep);
  if (!c)
    return;
  /* A changed entry holds a value the store does not have yet (every
   * entry a crank changes is in the sync list). */
  if (c->dirty)
    return;
  for (size_t i = 0; i < t->nsync; i++)
    if (t->sync[i].c == c)
      return;
  if (c->ids || c->idsync)
    return;
  /* Ids that rolled-back cranks spent (ids_spent) go into the host's
   * writes, which the c-list is read back with: they stay spent. */
  static const char *const id_key[2] = {"%s.nextObjectId", "%s.nextPromiseId"};
  for (int j = 0; j < 2; j++)
    if (c->next[j] > c->cnext[j] && ocap__seti(k, c->next[j], id_key[j], c->ep))
      return;
  clist_remove_ep(t, c);
}

/* ---- the store's hooks, and the sync ---- */

/*
 * An endpoint's nextPromiseId goes up at every message with a result it
 * receives, so the store keeps a bound, as for the kernel's own (kstate.c,
 * counter_reserved): written OCAP_ID_RESERVE past the committed value when
 * that passes it, left alone until then. Its imports' numbers are so never
 * given twice, and a restart after a crash skips those below the bound.
 * nextObjectId keeps its value. -1 is an absent key.
 */
static long long id_stored(const clist_t *c, int j, int exact) {
  return j == 1 ? ocap__id_stored(c->cnext[j], exact) : c->cnext[j];
}

static int id_unsynced(const clist_t *c, int j, int exact) {
  return j == 1 ? ocap__id_unsynced(c->cnext[j], c->snext[j], exact) : c->cnext[j] != c->snext[j];
}

static int ids_unsynced(const clist_t *c, int exact) {
  return id_unsynced(c, 0, exact) || id_unsynced(c, 1, exact);
}

/* Lists c for the sync when its counters are not stored as they are. */
static int list_exact(ocap_kernel_t *k, clist_t *c) {
  struct ocap__clists *t = k->c;
  if (!c || c->idsync || !ids_unsynced(c, 1))
    return 0;
  if (ocap__reserve(&t->isync, &t->capisync, t->nisync + 1, sizeof *t->isync, 16))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory closing the c-lists");
  t->isync[t->nisync++] = c;
  c->idsync = t->nisync;
  return 0;
}

/* Lists every c-list whose nextPromiseId the store has as a bound, for the
 * sync of a kernel that closes (k->ids_exact): the next one opened on the
 * store goes on from the value. */
int ocap__clists_exact(ocap_kernel_t *k) {
  struct ocap__clists *t = k->c;
  int rc = 0;
  for (size_t i = 0; i <= t->mask && !rc; i++)
    rc = list_exact(k, t->slots[i]);
  for (size_t i = 0; i < t->h.nbyvat && !rc; i++)
    rc = list_exact(k, t->h.byvat[i]);
  return rc ? rc : list_exact(k, t->kernel);
}

int ocap__clists_unsynced(ocap_kernel_t *k) {
  return k->c->nsync > 0 || k->c->nisync > 0;
}

int ocap__clists_changed(ocap_kernel_t *k) {
  return k->c->changed;
}

int ocap__clists_fill(ocap_kernel_t *k) {
  struct ocap__clists *t = k->c;
  static const char *const id_key[2] = {"%s.nextObjectId", "%s.nextPromiseId"};
  for (size_t i = 0; i < t->nisync; i++) {
    clist_t *c = t->isync[i];
    for (int j = 0; j < 2; j++) {
      if (!id_unsynced(c, j, k->ids_exact))
        continue;
      int rc = c->cnext[j] < 0 ? ocap__delv(k, id_key[j], c->ep)
                               : ocap__seti(k, id_stored(c, j, k->ids_exact), id_key[j], c->ep);
      if (rc)
        return rc;
    }
  }
  for (size_t i = 0; i < t->nsync; i++) {
    centry_t *e = t->sync[i].e;
    const char *ep = t->sync[i].c->ep;
    uint64_t cv = committed(t, e);
    if (cv == e->sval)
      continue;
    char rbuf[OCAP_REF_MAX], vbuf[OCAP_REF_MAX + 8];
    const char *ref = entry_ref(e, rbuf);
    size_t vl = 0;
    /* The text first: an argument's order of evaluation is unspecified. */
    const char *v = cv ? cv_str(cv, vbuf, &vl) : NULL;
    int rc = v ? ocap__setn(k, v, vl, "%s.c.%s", ep, ref) : ocap__delv(k, "%s.c.%s", ep, ref);
    if (rc)
      return rc;
  }
  return 0;
}

/* Whether nothing of c is left, in memory or in the store, to keep it for. */
static int droppable(const clist_t *c) {
  return c->n == 0 && !c->ids && !c->idsync && c->next[0] < 0 && c->next[1] < 0 &&
         c->cnext[0] < 0 && c->cnext[1] < 0 && c->snext[0] < 0 && c->snext[1] < 0;
}

/* Drops the c-lists listed as maybe left empty (maybe_empty) that are. */
static void drop_empty(struct ocap__clists *t) {
  clist_t *c = t->empty;
  t->empty = NULL;
  while (c) {
    clist_t *next = c->next_empty;
    c->dirty = 0;
    if (droppable(c))
      clist_remove_ep(t, c);
    c = next;
  }
}

void ocap__clists_synced(ocap_kernel_t *k) {
  struct ocap__clists *t = k->c;
  size_t n = 0; /* the entries kept in the list, moved to its front */
  for (size_t i = 0; i < t->nsync; i++) {
    clist_t *c = t->sync[i].c;
    centry_t *e = t->sync[i].e;
    uint64_t cv = committed(t, e);
    val_drop(e->sval, e->val, cv);
    e->sval = cv;
    /* One the open crank changed stays listed: its commit may make its
     * value the committed one. One listed for the end of the crank is
     * left to it. */
    if (e->epoch == t->epoch) {
      t->sync[n] = t->sync[i];
      e->syncat = (unsigned)++n;
      continue;
    }
    e->syncat = 0;
    if (!e->fix && !e->val && !cv) {
      entry_remove(t, c, e);
      if (!c->n)
        maybe_empty(t, c);
    }
  }
  t->nsync = n;
  drop_empty(t);
  /* The counters last: a c-list listed here was kept by drop_empty. */
  for (size_t i = 0; i < t->nisync; i++) {
    clist_t *c = t->isync[i];
    for (int j = 0; j < 2; j++)
      if (id_unsynced(c, j, k->ids_exact))
        c->snext[j] = id_stored(c, j, k->ids_exact);
    c->idsync = 0;
    if (droppable(c))
      clist_remove_ep(t, c);
  }
  t->nisync = 0;
}

/*
 * On an abort, keeps in c's counters the ids the rolled-back crank took:
 * those stay spent, never given again, as the kernel's own
 * (ocap__counters_abort). An endpoint's state outside the store (a remote
 * session's tables, the host's liveslots) may hold an eref the crank gave
 * it, and no rollback undoes that: the same eref given to another object
 * would be taken there for the first (a vat that ran in the crank is
 * stopped and rebuilt from the store, so its own erefs are safe either
 * way). A counter the crank cleared (its endpoint gone) goes back to the
 * committed one, which the rollback brings back; one it only advanced
 * keeps its value, in memory: the next crank that gives the endpoint an
 * id commits it (what holds the spent ids outside the store does not
 * outlive the kernel either), or the host's writes when it forgets the
 * c-list (ocap__clists_forget).
 */
static void ids_spent(clist_t *c) {
  for (int j = 0; j < 2; j++)
    if (c->next[j] < c->cnext[j])
      c->next[j] = c->cnext[j];
}

/* Ends the crank's changes to the counters, keeping or dropping them. */
static void end_ids(struct ocap__clists *t, int keep) {
  for (size_t i = 0; i < t->nidirty; i++) {
    clist_t *c = t->idirty[i];
    if (keep)
      memcpy(c->cnext, c->next, sizeof c->cnext);
    else
      ids_spent(c);
    c->ids = 0;
    if (keep && !c->idsync && ids_unsynced(c, 0)) {
      t->isync[t->nisync++] = c;
      c->idsync = t->nisync;
    }
  }
  t->nidirty = 0;
}

/* Removes e of c, gone now, before the crank and in the store (its
 * committed value is 0, whichever epoch). */
__attribute__((always_inline)) static inline void entry_gone(struct ocap__clists *t, clist_t *c,
                                                             centry_t *e) {
  sync_unlist(t, e);
  entry_remove(t, c, e);
  if (!c->n)
    maybe_empty(t, c);
}

/* Ends the epoch (the file's comment): from now on, each entry's value is
 * its committed one. */
static inline void end_epoch(struct ocap__clists *t) {
  if (t->empty)
    drop_empty(t);
  t->epoch++;
  t->changed = 0;
}

/* Commits the crank: only the entries listed for it are visited. */
void ocap__clists_done(ocap_kernel_t *k) {
  struct ocap__clists *t = k->c;
  for (size_t i = 0; i < t->nfix; i++) {
    clist_t *c = t->fix[i].c;
    centry_t *e = t->fix[i].e;
    e->fix = 0;
    val_drop(e->cval, e->val, e->sval);
    e->cval = e->val;
    if (!e->val && !e->sval)
      entry_gone(t, c, e);
  }
  t->nfix = 0;
  if (t->nidirty)
    end_ids(t, 1);
  end_epoch(t);
}

/* Rolls the crank back: every entry it changed is in the sync list, and
 * gets back its value from before the crank. */
void ocap__clists_abort(ocap_kernel_t *k, int cleared) {
  struct ocap__clists *t = k->c;
  for (size_t i = 0; i < t->nfix; i++)
    t->fix[i].e->fix = 0;
  t->nfix = 0;
  /* From the end: taking an entry off the list moves the last one into
   * its place, which was visited already. */
  for (size_t i = t->nsync; i-- > 0;) {
    clist_t *c = t->sync[i].c;
    centry_t *e = t->sync[i].e;
    if (e->epoch != t->epoch)
      continue;
    if (e->val != e->cval) {
      val_drop(e->val, e->cval, e->sval);
      e->val = e->cval;
      e->vtlen = 0;
    }
    if (!e->val && !e->sval)
      entry_gone(t, c, e);
  }
  end_ids(t, 0);
  end_epoch(t);
  if (cleared)
    drop_all(t);
}
