/*
 * clist.h -- the endpoints' c-lists in memory (internal to the kernel; see
 * kstate.h, convention 6, and refs.h for what a c-list holds).
 *
 * A vat's c-list is read from the store whole, with one prefix scan of
 * `<ep>.c.`, the first time the kernel touches it, with the vat's import
 * counters `<ep>.nextObjectId` and `.nextPromiseId`. Entries map a reference
 * (a kref or a vref, the part of the key after `<ep>.c.`) to the value
 * stored under that key. Both are kept as codes (refs.h) where they have
 * one, else as text; a value is checked where it is used, so a damaged one
 * is reported as it was when read at each use.
 */
#ifndef OCAP_CLIST_H
#define OCAP_CLIST_H

#include <stdint.h>

#include "kstate.h"
#include "refs.h"

int ocap__clists_new(ocap_kernel_t *k);
void ocap__clists_free(ocap_kernel_t *k);
void ocap__clists_done(ocap_kernel_t *k);
void ocap__clists_abort(ocap_kernel_t *k, int cleared);
/* The c-lists are written when the kernel syncs, not at commit
 * (ocap_kernel_sync): whether an entry's committed value may be missing
 * from the store, the writes of those values (into the sync's buffer), and
 * the note that the store has them. */
int ocap__clists_unsynced(ocap_kernel_t *k);
/* Whether the crank changed a c-list since the last commit or abort. */
int ocap__clists_changed(ocap_kernel_t *k);
int ocap__clists_fill(ocap_kernel_t *k);
void ocap__clists_synced(ocap_kernel_t *k);
/* Lists for the sync the c-lists whose counters the store has as bounds
 * (a kernel that closes stores their values). */
int ocap__clists_exact(ocap_kernel_t *k);

/*
 * A reference looked up: w is its code (refs.h), or, for one with none,
 * REF_TEXT with the hash of its text s above the kind bits. A key is made
 * once (ocap__ckey) and used for every lookup and change of its entry.
 */
typedef struct ocap__ckey {
  uint64_t w;
  const char *s; /* the text, for a key of kind REF_TEXT */
} ocap__ckey_t;

/* The word of a key with no code: its text's hash, kind REF_TEXT. */
uint64_t ocap__ckey_text(const char *ref);
static inline void ocap__ckey(ocap__ckey_t *key, const char *ref) {
  key->s = ref;
  key->w = ocap__ref_code(ref);
  if (!key->w)
    key->w = ocap__ckey_text(ref);
}
/* The key of code w (not 0). */
static inline ocap__ckey_t ocap__ckey_code(uint64_t w) {
  ocap__ckey_t key = {w, NULL};
  return key;
}

/*
 * An entry's value is a word: 0 for none, a code (refs.h) with CV_DROP set
 * when the value is stored with the mark `_ ` in front (an import the
 * endpoint dropped), or, for a value with no code, the address of an
 * ocap__ctext_t with REF_TEXT in its low bits, holding the value as read or
 * written (mark included).
 */
#define CV_DROP (1ULL << 63)
typedef struct ocap__ctext {
  size_t len;
  char s[]; /* NUL-terminated too */
} ocap__ctext_t;

static inline const ocap__ctext_t *ocap__cv_text(uint64_t v) {
  return REF_KIND(v) == REF_TEXT ? (const ocap__ctext_t *)(uintptr_t)(v & ~(uint64_t)7) : NULL;
}
/* A text value for s (n bytes), or 0 when out of memory. The c-list owns
 * it once stored (ocap__clist_store); ocap__cv_free frees one that was not. */
uint64_t ocap__cv_make(const char *s, size_t n);
void ocap__cv_free(uint64_t v);

/*
 * An entry, and a c-list, laid out here so that refs.c looks entries up
 * in place: a round trip looks up about a dozen, and each call through
 * another layer cost more than the lookup. Only clist.c changes them.
 * `vt` is the text of val when val is a code (its mark left out), made
 * the first time a caller needs it (ocap__centry_vt) and copied after
 * that: most entries are looked up for their text again and again, and
 * most of those a round trip makes are never asked for theirs.
 */
typedef struct ocap__centry {
  uint64_t key; /* the ref's word (ocap__ckey_t) */
  /* Now, before the crank's first change, and in the store; 0 when
   * absent. cval means something only while epoch is the crank's
   * (clist.c): a crank's commit makes val the committed value by moving
   * on to the next epoch, without visiting what it changed. */
  uint64_t val, cval, sval;
  uint64_t epoch;  /* the epoch of its last change */
  char *xkey;      /* the ref's text, for a key of kind REF_TEXT */
  unsigned fix;    /* listed for the end of the crank (clist.c) */
  unsigned syncat; /* its index in the sync list + 1, 0 when not listed */
  struct ocap__centry *next_spare;
  unsigned vtlen; /* strlen(vt), 0 until it is made */
  char vt[24];
} ocap__centry_t;

/*
 * One endpoint's c-list: open addressing with linear probing, by key. It
 * keeps the endpoint's import counters too (`<ep>.nextObjectId` and
 * `.nextPromiseId`, the next N of o-N and p-N), in three versions like the
 * entries, -1 when the key is absent; `ids` says the crank changed them,
 * `idsync` where it is in the sync list of counters.
 */
typedef struct ocap__clist {
  void **slots; /* ocap__centry_t records (idtable.h's open addressing) */
  size_t mask, n;
  int dirty;                      /* listed as maybe empty (clist.c) */
  struct ocap__clist *next_empty; /* that list */
  long long next[2], cnext[2], snext[2];
  int ids;
  size_t idsync;
  char ep[];
} ocap__clist_t;

static inline size_t ocap__ckey_hash(uint64_t w) {
  return (size_t)((w * 0x9e3779b97f4a7c15ULL) >> 29);
}

/* ocap__clist_slot for a key of kind REF_TEXT, which compares texts. */
void **ocap__clist_slot_text(ocap__clist_t *c, const ocap__ckey_t *key);

/* The slot of c holding key's entry, or the free slot where it would go:
 * good until c gains or loses an entry. A key with a code is found by its
 * word alone, in a loop of a few instructions a probe; a text key goes to
 * ocap__clist_slot_text. */
static inline void **ocap__clist_slot(ocap__clist_t *c, const ocap__ckey_t *key) {
  uint64_t w = key->w;
  if (REF_KIND(w) == REF_TEXT)
    return ocap__clist_slot_text(c, key);
  void **s = c->slots;
  size_t mask = c->mask;
  for (size_t i = ocap__ckey_hash(w) & mask;; i = (i + 1) & mask) {
    ocap__centry_t *e = s[i];
    if (!e || e->key == w)
      return &s[i];
  }
}

/* The text of e's value, a code (its mark left out), in e->vt. */
static inline const char *ocap__centry_vt(ocap__centry_t *e) {
  if (!e->vtlen)
    e->vtlen = (unsigned)ocap__ref_text(e->val & ~CV_DROP, e->vt);
  return e->vt;
}

/* The value word in slot sl (0 for none). */
static inline uint64_t ocap__clist_val(void **sl) {
  ocap__centry_t *e = *sl;
  return e ? e->val : 0;
}

/* ep's c-list, read from the store the first time: 0 with it in *out, or
 * a negative code. ocap__clist_of_ep first checks ep is an endpoint's
 * name, a caller's fault when it is not. The _any versions take every
 * case; the inline ones find a vat's c-list in memory first. */
int ocap__clist_of_any(ocap_kernel_t *k, const char *ep, ocap__clist_t **out);
int ocap__clist_of_ep_any(ocap_kernel_t *k, const char *ep, ocap__clist_t **out);

/* The start of the kernel's table of c-lists (clist.c): the vats' c-lists
 * by the N of `v<N>`, NULL for one not in memory. */
typedef struct ocap__clists_head {
  ocap__clist_t **byvat;
  size_t nbyvat;
} ocap__clists_head_t;

/* The c-list of vat ep in memory when its name is `v<N>` (no leading
 * zero), else NULL: a few instructions, where a call cost more than the
 * search. A NULL sends the caller to the general path, which finds every
 * other case (and `v0`). */
static inline ocap__clist_t *ocap__clist_vat(ocap_kernel_t *k, const char *ep) {
  const ocap__clists_head_t *h = (const ocap__clists_head_t *)(const void *)k->c;
  /* ep[1] is read only after ep[0]: an empty name has no second byte. */
  if (ep[0] != 'v')
    return NULL;
  size_t n = (unsigned char)ep[1] - (unsigned)'0';
  if (n - 1 > 8)
    return NULL;
  /* A round trip finds a c-list about fifteen times, mostly of a vat
   * `v<N>` of one digit: that case skips the loop. */
  for (const char *p = ep + 2; *p; p++) {
    unsigned d = (unsigned char)*p - (unsigned)'0';
    if (d > 9 || n >= h->nbyvat)
      return NULL;
    n = n * 10 + d;
  }
  return n < h->nbyvat ? h->byvat[n] : NULL;
}

static inline int ocap__clist_of(ocap_kernel_t *k, const char *ep, ocap__clist_t **out) {
  ocap__clist_t *c = ocap__clist_vat(k, ep);
  if (!c)
    return ocap__clist_of_any(k, ep, out);
  *out = c;
  return 0;
}

static inline int ocap__clist_of_ep(ocap_kernel_t *k, const char *ep, ocap__clist_t **out) {
  ocap__clist_t *c = ocap__clist_vat(k, ep);
  if (!c)
    return ocap__clist_of_ep_any(k, ep, out);
  *out = c;
  return 0;
}

/* Sets c's entry for key to the value word val (0 removes it): sl is the
 * slot ocap__clist_slot gave for key with no change of c since, or NULL.
 * A text value is the c-list's from the call on, even when it fails. */
int ocap__clist_put(ocap_kernel_t *k, ocap__clist_t *c, const ocap__ckey_t *key, void **sl,
                    uint64_t val);
/* Two ocap__clist_put in one call, the way a c-list's pair of entries
 * (kref to eref and back) comes and goes: key1 (slot sl1, or NULL) to
 * val1, then key2 to val2. Both text values are the c-list's from the
 * call on. */
int ocap__clist_put2(ocap_kernel_t *k, ocap__clist_t *c, const ocap__ckey_t *key1, void **sl1,
                     uint64_t val1, const ocap__ckey_t *key2, uint64_t val2);

/* The value of `<ep>.c.<ref>` as text: 1 with *v (owned by the table,
 * valid until the next lookup or change of a c-list) and *vl set, 0 when
 * there is none, or a negative code. It returns 2 instead of 1 when the
 * value is well formed for its key (a vref for a kref of a vat's c-list, a
 * kref for a vref), so its reader can skip the checks that find a damaged
 * one. */
int ocap__clist_get(ocap_kernel_t *k, const char *ep, const char *ref, const char **v, size_t *vl);
/* The refs of ep's c-list that start with `prefix`, in byte order, for
 * each(ud, ref) until it returns nonzero (which is returned). */
int ocap__clist_each(ocap_kernel_t *k, const char *ep, const char *prefix,
                     int (*each)(void *ud, const char *ref), void *ud);

/* The next N of an import o-N (promise 0) or p-N (promise 1) the kernel
 * gives c's endpoint, advancing `<ep>.nextObjectId` or `.nextPromiseId`
 * (kept with the c-list, written at sync like it); ocap__clist_clear_ids
 * removes both (ep's termination). */
int ocap__clist_next_id(ocap_kernel_t *k, ocap__clist_t *c, int promise, long long *out);
int ocap__clist_clear_ids(ocap_kernel_t *k, const char *ep);

/* The endpoints that import object kref (the exporter is not one), read
 * from the index `<kref>.i.<ep>` with one scan: a malloc'd array in *out
 * (NULL when none) and their number, or a negative code. */
long ocap__clist_importers(ocap_kernel_t *k, const char *kref, char (**out)[OCAP_REF_MAX]);

#endif
