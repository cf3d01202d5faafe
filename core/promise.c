/*
 * promise.c -- kernel promises (see promise.h): allocation, reference
 * counts, subscribers, the subscribe and resolve syscalls, settlement, and
 * the messages parked on a promise until it settles.
 */
#include "promise.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capdata.h"
#include "idtable.h"
#include "object.h"
#include "queue.h"
#include "refs.h"

/*
 * Each promise's whole record (`<kpid>.state`, `.refCount`, `.decider`,
 * `.subscribers`, `.data`, and the parked messages `.queue.<n>` with
 * `.queueTail`) is kept in memory (kstate.h, convention 6): a round trip
 * touches it dozens of times, the count changing with every c-list entry,
 * queued item and resolution that names the promise. A record is read
 * from the store the first time a promise is touched (a promise allocated
 * here is known to be new) and keeps three versions of each field: now,
 * at the last commit, and in the store. The records a crank changed are
 * listed in `dirty`, so that commit makes their values the committed ones
 * and abort puts the committed ones back; nothing is written then. The
 * records whose committed values the store may lack are listed in `sync`,
 * and ocap__promises_fill writes them when the kernel syncs (kernel.h):
 * most promises are made, settled and freed between two syncs, and never
 * reach the store at all. A record whose promise is gone, in memory and
 * in the store, is dropped.
 *
 * A version is small, since commit copies it: the decider and the
 * subscribers are endpoints kept as numbers (ocap__ep_code, kstate.h),
 * turned into text only for the store and for the notifies, and the
 * subscribers past the first (a promise nearly always has one: the
 * sender of the message it is the result of) and the data are blocks
 * shared between the versions while they are equal, never changed in
 * place: a block is freed when none of the three uses it. The parked
 * messages are one array. Messages are only ever appended (while
 * unresolved) or all taken (at settlement, or when a decider that
 * pipelines takes them, ocap__unpark), and the items a crank takes stay
 * until it ends, for an abort: the current ones are items qbase to qbase
 * + now.qtail - 1, the committed ones 0 to com.qtail - 1, and the array
 * holds qbase + now.qtail >= com.qtail of them (qbase is 0 until a take).
 * A commit after a take moves the current ones to the front; `retaken`
 * then says that the store's numbering no longer matches.
 */
typedef struct ocap__kp prec_t;
typedef ocap__pver_t pver_t;
typedef ocap__pitem_t pitem_t;
typedef ocap__epc_t epc_t;

/* Whether every key of a version of the promise is gone (a version
 * without a first subscriber has no others). */
static int gone(const pver_t *v) {
  return v->state == ST_NONE && v->refs < 0 && !v->decider && !v->sub && v->qtail == 0 && !v->data;
}

/* Frees p unless another version of the same field (a or b) uses it. */
static void blk_drop(void *p, const void *a, const void *b) {
  if (p && p != a && p != b)
    free(p);
}

/* Makes dst a copy of src, sharing its blocks, and frees the blocks dst
 * held that neither src nor the third version (other) uses. */
static inline void ver_set(pver_t *dst, const pver_t *src, const pver_t *other) {
  if (dst->more != src->more)
    blk_drop(dst->more, src->more, other->more);
  if (dst->data != src->data)
    blk_drop(dst->data, src->data, other->data);
  *dst = *src;
}

/* Frees the parked items from `from` to `to` (exclusive). */
static void parked_free(prec_t *r, long long from, long long to) {
  for (long long n = from; n < to; n++) {
    free(r->parked[n].p);
    r->parked[n].p = NULL;
  }
}

/* Frees what a record holds: its strings and parked messages. */
static void prec_clear(prec_t *r) {
  blk_drop(r->now.more, r->com.more, r->sto.more);
  blk_drop(r->com.more, r->sto.more, NULL);
  free(r->sto.more);
  blk_drop(r->now.data, r->com.data, r->sto.data);
  blk_drop(r->com.data, r->sto.data, NULL);
  free(r->sto.data);
  parked_free(r, 0, r->qbase + r->now.qtail);
  free(r->parked);
}

/* Frees a record and what it holds; it takes a void pointer so that the
 * table can hand records to it (idtable.h). */
static void prec_free(void *p) {
  prec_clear(p);
  free(p);
}

/* The records kept for reuse: a round trip makes one promise and frees
 * it, and a record is a few hundred bytes to allocate and zero. Under
 * AddressSanitizer none is kept, so that a use after free is found. */
#if defined(__SANITIZE_ADDRESS__)
#define SPARE_RECORDS 0
#else
#define SPARE_RECORDS 8
#endif

/*
 * The records in memory are found by id in two places: `young`, a slot
 * per id modulo YOUNG (a record takes its slot when it is free), and the
 * table for the others. A round trip makes a promise and frees it a crank
 * or two later, while few others live, so nearly every record is young:
 * found, added and removed with one load, where the table's hashing and
 * probing cost about fifty instructions each way.
 */
#define YOUNG 64

struct ocap__promises {
  prec_t *spare[SPARE_RECORDS + 1];
  size_t nspare;
  prec_t *young[YOUNG];  /* the young records (see above), NULL for none */
  ocap__idtable_t table; /* the others, by id */
  prec_t **dirty;        /* the records this crank changed */
  size_t ndirty, capdirty;
  prec_t **sync; /* the records whose committed values the store may lack */
  size_t nsync, capsync;
};

static const char *const state_name[] = {NULL, "unresolved", "fulfilled", "rejected"};

/* The N of "kpN", or -1 when kpid is not a promise id. */
static long long kp_number(const char *kpid) {
  return ocap__kref_number(kpid, REF_KP);
}

/* Writes "kp<id>" into out (OCAP_REF_MAX bytes). */
static void kp_name(char *out, long long id) {
  memcpy(out, "kp", 2);
  out[2 + ocap__fmt_ll(out + 2, id)] = '\0';
}

/* The record with this id, or NULL. */
static inline prec_t *tab_find(struct ocap__promises *t, long long id) {
  prec_t *r = t->young[id & (YOUNG - 1)];
  return r && r->id == id ? r : ocap__idtable_find(&t->table, id);
}

/* Adds r, whose id is in neither place yet: 0 or OCAP_ENOMEM. */
static int tab_insert(struct ocap__promises *t, prec_t *r) {
  prec_t **slot = &t->young[r->id & (YOUNG - 1)];
  if (*slot)
    return ocap__idtable_insert(&t->table, r);
  *slot = r;
  return 0;
}

/* Takes r out of where it is. */
static void tab_remove(struct ocap__promises *t, prec_t *r) {
  prec_t **slot = &t->young[r->id & (YOUNG - 1)];
  if (*slot == r)
    *slot = NULL;
  else
    ocap__idtable_remove(&t->table, r->id);
}

/* The first record at or after position *pos, which is advanced past it,
 * or NULL when there is none left (as ocap__idtable_next). */
static prec_t *tab_next(struct ocap__promises *t, size_t *pos) {
  for (; *pos < YOUNG; ++*pos)
    if (t->young[*pos])
      return t->young[(*pos)++];
  size_t at = *pos - YOUNG;
  prec_t *r = ocap__idtable_next(&t->table, &at);
  *pos = at + YOUNG;
  return r;
}

/* Empties both places, handing every record to prec_free. */
static void tab_clear(struct ocap__promises *t) {
  for (size_t i = 0; i < YOUNG; i++) {
    if (t->young[i])
      prec_free(t->young[i]);
    t->young[i] = NULL;
  }
  ocap__idtable_clear(&t->table, prec_free);
}

int ocap__promises_new(ocap_kernel_t *k) {
  struct ocap__promises *t = calloc(1, sizeof *t);
  if (!t || ocap__idtable_init(&t->table, 64)) {
    free(t);
    return OCAP_ENOMEM;
  }
  k->p = t;
  return 0;
}

/* Forgets every record, and with them the lists. */
static void drop_all(struct ocap__promises *t) {
  tab_clear(t);
  t->ndirty = 0;
  t->nsync = 0;
}

/* A zeroed record, reused when one is spare; NULL when out of memory. */
static prec_t *prec_new(struct ocap__promises *t) {
  if (!t->nspare)
    return ocap__zalloc(sizeof(prec_t));
  prec_t *r = t->spare[--t->nspare];
  memset(r, 0, sizeof *r);
  return r;
}

/* Frees a record no table lists, keeping it for reuse when there is room. */
static void prec_recycle(struct ocap__promises *t, prec_t *r) {
  if (t->nspare == SPARE_RECORDS) {
    prec_free(r);
    return;
  }
  prec_clear(r);
  t->spare[t->nspare++] = r;
}

void ocap__promises_free(ocap_kernel_t *k) {
  struct ocap__promises *t = k->p;
  if (!t)
    return;
  for (size_t i = 0; i < t->nspare; i++)
    free(t->spare[i]);
  tab_clear(t);
  ocap__idtable_free(&t->table, NULL);
  free(t->dirty);
  free(t->sync);
  free(t);
}

/* Takes r off the sync list (touch made the list's room). */
static void sync_unlist(struct ocap__promises *t, prec_t *r) {
  if (!r->syncat)
    return;
  prec_t *last = t->sync[--t->nsync];
  t->sync[r->syncat - 1] = last;
  last->syncat = r->syncat;
  r->syncat = 0;
}

/* Drops r from the table and frees it. */
static void drop(struct ocap__promises *t, prec_t *r) {
  sync_unlist(t, r);
  tab_remove(t, r);
  prec_recycle(t, r);
}

/* Reads the parked messages 0 to r->now.qtail - 1 of kpid. They are numbered
 * from 0 without gaps, so a missing one is corruption (and a queueTail
 * too large is found at its first missing item). */
static int parked_load(ocap_kernel_t *k, const char *kpid, prec_t *r) {
  long long tail = r->now.qtail;
  r->now.qtail = 0;
  for (long long i = 0; i < tail; i++) {
    ocap__buf_t item = {0};
    int got = ocap__getb(k, &item, "%s.queue.%lld", kpid, i);
    if (got == 0)
      got = ocap__broken(k, OCAP_ECORRUPT,
                         "corrupt database: message %lld of the %lld parked on %s is missing", i,
                         tail, kpid);
    if (got > 0 && (size_t)i == r->parkedcap) {
      size_t cap = r->parkedcap ? r->parkedcap * 2 : 4;
      pitem_t *v = realloc(r->parked, cap * sizeof *v);
      if (!v)
        got = ocap__broken(k, OCAP_ENOMEM, "out of memory reading promise %s", kpid);
      else {
        r->parked = v;
        r->parkedcap = cap;
      }
    }
    if (got < 0) {
      free(item.p);
      return got;
    }
    r->parked[i].p = item.p;
    r->parked[i].len = item.len;
    r->now.qtail = i + 1;
  }
  return 0;
}

/* Reports that `<kpid>.<field>` holds v (vl bytes), which is not `what`. */
static int corrupt_field(ocap_kernel_t *k, const char *kpid, const char *field, const char *v,
                         size_t vl, const char *what) {
  char key[KEY_MAX];
  snprintf(key, sizeof key, "%s.%s", kpid, field);
  return ocap__corrupt(k, key, v, vl, what);
}

/* Reads the subscribers of kpid, the n bytes at s (endpoints separated by
 * single spaces), into v. Returns 0 or a negative code. */
static int subs_parse(ocap_kernel_t *k, const char *kpid, const char *s, size_t n, pver_t *v) {
  size_t words = 1;
  for (size_t i = 0; i < n; i++)
    words += s[i] == ' ';
  epc_t *more = words > 1 ? malloc((words - 1) * sizeof *more) : NULL;
  if (words > 1 && !more)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading promise %s", kpid);
  size_t got = 0;
  for (size_t i = 0; i <= n; got++) {
    size_t j = i;
    while (j < n && s[j] != ' ')
      j++;
    epc_t c = ocap__ep_code_n(s + i, j - i);
    if (!c) {
      free(more);
      return corrupt_field(k, kpid, "subscribers", s, n, "a list of endpoints");
    }
    if (got == 0)
      v->sub = c;
    else
      more[got - 1] = c;
    i = j + 1;
  }
  v->more = more;
  v->nmore = words - 1;
  return 0;
}

/* Writes the subscribers of v as the store keeps them into b (reset
 * first; left empty when there are none). Returns 0 or OCAP_ENOMEM. */
static int subs_text(const pver_t *v, ocap__buf_t *b) {
  char ep[OCAP_REF_MAX];
  b->len = 0;
  for (size_t i = 0; v->sub && i <= v->nmore; i++) {
    size_t n = ocap__ep_text(i ? v->more[i - 1] : v->sub, ep);
    if ((i && ocap__buf_add(b, " ", 1)) || ocap__buf_add(b, ep, n))
      return OCAP_ENOMEM;
  }
  return 0;
}

static int found_record(prec_t *found, int create, prec_t **out);
static int load(ocap_kernel_t *k, const char *kpid, long long id, int create, prec_t **out);

/*
 * The record of kpid, read from the store when it is not in memory yet.
 * With `create` unset, a promise the store does not have either is not
 * kept, and *out is NULL. Returns 0 or a negative code.
 */
static int lookup(ocap_kernel_t *k, const char *kpid, int create, prec_t **out) {
  struct ocap__promises *t = k->p;
  *out = NULL;
  long long id = kp_number(kpid);
  if (id < 0)
    return create ? ocap__broken(k, OCAP_ECORRUPT, "corrupt database: '%.60s' is not a promise id",
                                 kpid)
                  : 0;
  prec_t *found = tab_find(t, id);
  return found ? found_record(found, create, out) : load(k, kpid, id, create, out);
}

/* What lookup gives for a record in memory. A record kept only until the
 * store is told that the promise is gone stands for no promise, as the
 * store does once it is dropped. */
static int found_record(prec_t *found, int create, prec_t **out) {
  *out = !create && !found->dirty && gone(&found->now) ? NULL : found;
  return 0;
}

/* The record of kpid (whose N is id) read from the store, as for lookup. */
static int load(ocap_kernel_t *k, const char *kpid, long long id, int create, prec_t **out) {
  struct ocap__promises *t = k->p;
  prec_t *r = prec_new(t);
  if (!r)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading promise %s", kpid);
  r->id = id;
  ocap__buf_t subs = {0}, data = {0};
  char dec[OCAP_REF_MAX];
  int rc = r->now.state = ocap__read_state(k, kpid);
  if (rc >= 0)
    rc = ocap__get_count(k, -1, &r->now.refs, "%s.refCount", kpid);
  if (rc >= 0)
    rc = ocap__get_ref(k, dec, "%s.decider", kpid);
  if (rc > 0 && !(r->now.decider = ocap__ep_code(dec)))
    rc = corrupt_field(k, kpid, "decider", dec, strlen(dec), "an endpoint");
  if (rc >= 0)
    rc = ocap__getb(k, &subs, "%s.subscribers", kpid);
  if (rc > 0)
    rc = subs_parse(k, kpid, subs.p, subs.len, &r->now);
  free(subs.p);
  if (rc >= 0)
    rc = ocap__getb(k, &data, "%s.data", kpid);
  if (rc > 0) {
    r->now.data = data.p;
    r->now.datalen = data.len;
  } else {
    free(data.p);
  }
  if (rc >= 0)
    rc = ocap__get_count(k, 0, &r->now.qtail, "%s.queueTail", kpid);
  if (rc >= 0)
    rc = parked_load(k, kpid, r);
  if (rc < 0 || (gone(&r->now) && !create)) {
    prec_free(r);
    return rc < 0 ? rc : 0;
  }
  r->com = r->sto = r->now;
  if (tab_insert(t, r)) {
    prec_free(r);
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading promise %s", kpid);
  }
  *out = r;
  return 0;
}

/* Lists r among the records this crank changed, before it is changed, and
 * makes room for it in the sync list, which the end of the crank cannot
 * fail to add it to. A record is changed a dozen times in a round trip,
 * nearly always already listed: that test is inline, the rest is not. */
static int touch_list(ocap_kernel_t *k, prec_t *r) {
  struct ocap__promises *t = k->p;
  if (ocap__reserve(&t->dirty, &t->capdirty, t->ndirty + 1, sizeof *t->dirty, 32) ||
      ocap__reserve(&t->sync, &t->capsync, t->nsync + t->ndirty + 1, sizeof *t->sync, 32))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory changing a promise");
  t->dirty[t->ndirty++] = r;
  r->dirty = 1;
  return 0;
}

static inline int touch(ocap_kernel_t *k, prec_t *r) {
  return r->dirty ? 0 : touch_list(k, r);
}

/* Makes the record of a promise just allocated (kpid, whose N is id),
 * unresolved with its count at 0 and decided by `decider`, and lists it
 * as changed: the store cannot hold it yet, since ids are never reused.
 * The record is written whole at once (fields not named are zero), which
 * costs less than zeroing it first. */
static int fresh(ocap_kernel_t *k, const char *kpid, long long id, epc_t decider, prec_t **out) {
  struct ocap__promises *t = k->p;
  prec_t *r = t->nspare ? t->spare[--t->nspare] : malloc(sizeof *r);
  if (r) {
    const pver_t none = {.state = ST_NONE, .refs = -1};
    *r = (prec_t){.id = id,
                  .now = {.state = ST_UNRESOLVED, .refs = 0, .decider = decider},
                  .com = none,
                  .sto = none};
  }
  /* Listed before it is in the table, so that nothing is left half made. */
  int rc = r ? touch_list(k, r) : OCAP_ENOMEM;
  if (!rc && tab_insert(t, r)) {
    t->ndirty--;
    rc = OCAP_ENOMEM;
  }
  if (rc) {
    free(r);
    return ocap__broken(k, OCAP_ENOMEM, "out of memory making promise %s", kpid);
  }
  *out = r;
  return 0;
}

/* The record of kpid, made if needed and listed as changed by this crank. */
static int change(ocap_kernel_t *k, const char *kpid, prec_t **r) {
  int rc = lookup(k, kpid, 1, r);
  return rc ? rc : touch(k, *r);
}

/* A malloc'd copy of s (n bytes, NUL-terminated), or NULL for NULL. */
static int copy_str(ocap_kernel_t *k, const char *s, size_t n, char **out, const char *what) {
  *out = NULL;
  if (!s)
    return 0;
  char *p = malloc(n + 1);
  if (!p)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory %s", what);
  memcpy(p, s, n);
  p[n] = '\0';
  *out = p;
  return 0;
}

/* Replaces the data of r with a copy of s (n bytes; NULL for none),
 * freeing the old one unless the committed or the stored version still
 * uses it. */
static int set_data(ocap_kernel_t *k, prec_t *r, const char *s, size_t n) {
  char *p;
  int rc = copy_str(k, s, n, &p, "settling a promise");
  if (rc)
    return rc;
  blk_drop(r->now.data, r->com.data, r->sto.data);
  r->now.data = p;
  r->now.datalen = n;
  return 0;
}

/* Empties the subscribers of r. */
static void clear_subs(prec_t *r) {
  blk_drop(r->now.more, r->com.more, r->sto.more);
  r->now.sub = 0;
  r->now.more = NULL;
  r->now.nmore = 0;
}

int ocap__kp_find(ocap_kernel_t *k, const char *kpid, int create, ocap__kp_t **out) {
  return lookup(k, kpid, create, out);
}

int ocap__kp_find_id(ocap_kernel_t *k, long long id, int create, ocap__kp_t **out) {
  prec_t *found = tab_find(k->p, id);
  if (found)
    return found_record(found, create, out);
  char kpid[OCAP_REF_MAX];
  kp_name(kpid, id);
  *out = NULL;
  return load(k, kpid, id, create, out);
}

void ocap__kp_name(const ocap__kp_t *r, char *out) {
  kp_name(out, r->id);
}

int ocap__kp_decider(const ocap__kp_t *r, char *out) {
  if (!r || !r->now.decider)
    return 0;
  ocap__ep_text(r->now.decider, out);
  return 1;
}

int ocap__get_data(ocap_kernel_t *k, const char *kpid, ocap__buf_t *b) {
  prec_t *r;
  b->len = 0;
  int rc = lookup(k, kpid, 0, &r);
  if (rc || !r || !r->now.data)
    return rc;
  if (ocap__buf_add(b, r->now.data, r->now.datalen))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading '%s.data'", kpid);
  return 1;
}

int ocap__get_decider(ocap_kernel_t *k, const char *kpid, char *out) {
  prec_t *r;
  int rc = lookup(k, kpid, 0, &r);
  return rc ? rc : ocap__kp_decider(r, out);
}

int ocap__kp_set_decider(ocap_kernel_t *k, ocap__kp_t *r, const char *ep) {
  int rc = touch(k, r);
  if (rc)
    return rc;
  epc_t c = ep ? ocap__ep_code(ep) : 0;
  if (ep && !c) {
    char kpid[OCAP_REF_MAX];
    kp_name(kpid, r->id);
    return ocap__broken(k, OCAP_ECORRUPT, "decider '%.60s' of %s is not an endpoint", ep, kpid);
  }
  r->now.decider = c;
  return 0;
}

int ocap__set_decider(ocap_kernel_t *k, const char *kpid, const char *ep) {
  prec_t *r;
  int rc = lookup(k, kpid, 1, &r);
  return rc ? rc : ocap__kp_set_decider(k, r, ep);
}

int ocap__get_state(ocap_kernel_t *k, const char *kpid) {
  prec_t *r;
  int rc = lookup(k, kpid, 0, &r);
  return rc ? rc : r ? r->now.state : ST_NONE;
}

/* Sets the state and the count of r (refs -1 removes the count). Callers
 * pass the record they looked up: a round trip sets counts dozens of
 * times, and finding a record again by its name is most of what a change
 * costs. */
static inline int set_promise(ocap_kernel_t *k, prec_t *r, int state, long long refs) {
  int rc = touch(k, r);
  if (rc)
    return rc;
  if (refs > COUNT_MAX) {
    char kpid[OCAP_REF_MAX];
    kp_name(kpid, r->id);
    return ocap__broken(k, OCAP_ECORRUPT, "count %lld for key '%s.refCount' is out of range", refs,
                        kpid);
  }
  r->now.state = state;
  r->now.refs = refs;
  return 0;
}

int ocap__promises_check(ocap_kernel_t *k) {
  struct ocap__promises *t = k->p;
  int rc = 0;
  size_t pos = 0;
  prec_t *r;
  ocap__buf_t subs = {0};
  while (!rc && (r = tab_next(t, &pos)) != NULL) {
    char kpid[OCAP_REF_MAX], v[32], dec[OCAP_REF_MAX];
    kp_name(kpid, r->id);
    const char *st = r->now.state == ST_NONE ? NULL : state_name[r->now.state];
    rc = ocap__check_key(k, st, st ? strlen(st) : 0, "%s.state", kpid);
    if (!rc)
      rc = ocap__check_key(k, r->now.refs < 0 ? NULL : v,
                           r->now.refs < 0 ? 0 : ocap__fmt_ll(v, r->now.refs), "%s.refCount", kpid);
    size_t dl = r->now.decider ? ocap__ep_text(r->now.decider, dec) : 0;
    if (!rc)
      rc = ocap__check_key(k, dl ? dec : NULL, dl, "%s.decider", kpid);
    if (!rc && subs_text(&r->now, &subs))
      rc = ocap__fail(k, OCAP_ENOMEM, "out of memory checking %s", kpid);
    if (!rc)
      rc = ocap__check_key(k, subs.len ? subs.p : NULL, subs.len, "%s.subscribers", kpid);
    if (!rc)
      rc = ocap__check_key(k, r->now.data, r->now.datalen, "%s.data", kpid);
    if (!rc)
      rc = ocap__check_key(k, r->now.qtail ? v : NULL,
                           r->now.qtail ? ocap__fmt_ll(v, r->now.qtail) : 0, "%s.queueTail", kpid);
    for (long long n = 0; n < r->now.qtail && !rc; n++)
      rc = ocap__check_key(k, r->parked[r->qbase + n].p, r->parked[r->qbase + n].len,
                           "%s.queue.%lld", kpid, n);
    if (!rc)
      rc = ocap__check_key(k, NULL, 0, "%s.queue.%lld", kpid, r->now.qtail);
  }
  free(subs.p);
  return rc;
}

void ocap__promises_forget(ocap_kernel_t *k, const char *kpid) {
  struct ocap__promises *t = k->p;
  long long id = kp_number(kpid);
  if (id < 0)
    return;
  prec_t *r = tab_find(t, id);
  /* A changed record holds values the store does not have yet. */
  if (r && !r->dirty && !r->syncat)
    drop(t, r);
}

int ocap__promises_unsynced(ocap_kernel_t *k) {
  return k->p->nsync > 0;
}

int ocap__promises_changed(ocap_kernel_t *k) {
  return k->p->ndirty > 0;
}

/* Writes the committed values of the listed records that the store lacks
 * (ocap_kernel_sync, into its own buffer). */
int ocap__promises_fill(ocap_kernel_t *k) {
  struct ocap__promises *t = k->p;
  char kpid[OCAP_REF_MAX];
  ocap__buf_t subs = {0};
  int rc = 0;
  for (size_t i = 0; i < t->nsync && !rc; i++) {
    prec_t *r = t->sync[i];
    kp_name(kpid, r->id);
    if (r->com.state != r->sto.state)
      rc = r->com.state == ST_NONE ? ocap__delv(k, "%s.state", kpid)
                                   : ocap__setv(k, state_name[r->com.state], "%s.state", kpid);
    if (!rc && r->com.refs != r->sto.refs)
      rc = r->com.refs < 0 ? ocap__delv(k, "%s.refCount", kpid)
                           : ocap__seti(k, r->com.refs, "%s.refCount", kpid);
    if (!rc && r->com.decider != r->sto.decider) {
      char dec[OCAP_REF_MAX];
      rc = r->com.decider
               ? ocap__setn(k, dec, ocap__ep_text(r->com.decider, dec), "%s.decider", kpid)
               : ocap__delv(k, "%s.decider", kpid);
    }
    /* The blocks of the subscribers past the first are never changed in
     * place, so the same block is the same list. */
    if (!rc &&
        (r->com.sub != r->sto.sub || r->com.more != r->sto.more || r->com.nmore != r->sto.nmore)) {
      if (!r->com.sub)
        rc = ocap__delv(k, "%s.subscribers", kpid);
      else if (subs_text(&r->com, &subs))
        rc = ocap__broken(k, OCAP_ENOMEM, "out of memory writing %s", kpid);
      else
        rc = ocap__setn(k, subs.p, subs.len, "%s.subscribers", kpid);
    }
    if (!rc && r->com.data != r->sto.data)
      rc = r->com.data ? ocap__setn(k, r->com.data, r->com.datalen, "%s.data", kpid)
                       : ocap__delv(k, "%s.data", kpid);
    /* Messages are appended while the promise is unresolved and all taken
     * at once: the store lacks the ones past its tail, or has ones the
     * committed record no longer holds; after a take, every one differs. */
    for (long long n = r->com.qtail; n < r->sto.qtail && !rc; n++)
      rc = ocap__delv(k, "%s.queue.%lld", kpid, n);
    for (long long n = r->retaken ? 0 : r->sto.qtail; n < r->com.qtail && !rc; n++)
      rc = ocap__setn(k, r->parked[n].p, r->parked[n].len, "%s.queue.%lld", kpid, n);
    if (!rc && r->com.qtail != r->sto.qtail)
      rc = r->com.qtail ? ocap__seti(k, r->com.qtail, "%s.queueTail", kpid)
                        : ocap__delv(k, "%s.queueTail", kpid);
  }
  free(subs.p);
  return rc;
}

/* The store now holds what fill wrote: the committed values become the
 * stored ones, and the records of promises gone everywhere are dropped. */
void ocap__promises_synced(ocap_kernel_t *k) {
  struct ocap__promises *t = k->p;
  for (size_t i = 0; i < t->nsync; i++) {
    prec_t *r = t->sync[i];
    ver_set(&r->sto, &r->com, &r->now);
    r->retaken = 0;
    r->syncat = 0;
    if (!r->dirty && gone(&r->now))
      drop(t, r);
  }
  t->nsync = 0;
}

/* Ends the crank's changes to the listed records, keeping (commit) or
 * dropping (abort) them. A record whose committed values the store may
 * lack joins the sync list (touch made its room); one gone everywhere is
 * dropped. */
static void settle_dirty(struct ocap__promises *t, int keep) {
  for (size_t i = 0; i < t->ndirty; i++) {
    prec_t *r = t->dirty[i];
    /* Most promises are made, settled and freed between two syncs: the
     * commit that frees one drops its record without copying it first. */
    if (keep && gone(&r->now) && gone(&r->sto)) {
      drop(t, r);
      continue;
    }
    long long held = r->qbase + r->now.qtail;
    if (keep) {
      ver_set(&r->com, &r->now, &r->sto);
      if (r->qbase) { /* the taken items go, the current ones move up */
        parked_free(r, 0, r->qbase);
        memmove(r->parked, r->parked + r->qbase, (size_t)r->now.qtail * sizeof *r->parked);
        for (long long n = r->now.qtail; n < held; n++)
          r->parked[n].p = NULL;
        r->retaken = 1;
        held = r->now.qtail;
        r->qbase = 0;
      }
    } else {
      ver_set(&r->now, &r->com, &r->sto);
      r->qbase = 0;
    }
    parked_free(r, r->now.qtail, held);
    r->dirty = 0;
    if (gone(&r->com) && gone(&r->sto)) {
      drop(t, r);
    } else if (keep && !r->syncat) {
      t->sync[t->nsync++] = r;
      r->syncat = t->nsync;
    }
  }
  t->ndirty = 0;
}

void ocap__promises_done(ocap_kernel_t *k) {
  settle_dirty(k->p, 1);
}

void ocap__promises_abort(ocap_kernel_t *k, int cleared) {
  struct ocap__promises *t = k->p;
  settle_dirty(t, 0);
  if (cleared)
    drop_all(t);
}

/* The kernel's reference count of a promise: c-list entries, queued
 * messages and notifies, and other promises' resolutions that mention it. */
int ocap__kp_incref_slow(ocap_kernel_t *k, ocap__kp_t *r) {
  return set_promise(k, r, r->now.state, (r->now.refs < 0 ? 0 : r->now.refs) + 1);
}

int ocap__incref(ocap_kernel_t *k, const char *kref) {
  if (!ocap__is_kpid(kref))
    return ocap__obj_count(k, kref, 1, 1);
  prec_t *r = NULL;
  int rc = lookup(k, kref, 1, &r);
  return rc ? rc : ocap__kp_incref(k, r);
}

static int free_promise(ocap_kernel_t *k, prec_t *r) {
  ocap__buf_t data = {0};
  int rc = touch(k, r);
  /* Data with slots is copied first: releasing its slots may touch any
   * promise. Data without (the slot line empty) has nothing to release. */
  int slots = r->now.data && r->now.datalen && r->now.data[0] != '\n';
  if (!rc && slots && ocap__buf_add(&data, r->now.data, r->now.datalen)) {
    char kpid[OCAP_REF_MAX];
    kp_name(kpid, r->id);
    rc = ocap__broken(k, OCAP_ENOMEM, "out of memory freeing %s", kpid);
  }
  int had = !rc && slots;
  /* Only settled promises are freed, and settling removed the decider,
   * subscribers and queue already. */
  if (!rc)
    rc = set_promise(k, r, ST_NONE, -1);
  if (!rc)
    rc = set_data(k, r, NULL, 0);
  if (!rc && had)
    rc = ocap__decref_slots(k, data.p, data.len);
  free(data.p);
  return rc;
}

int ocap__kp_decref_slow(ocap_kernel_t *k, ocap__kp_t *r) {
  if (r->now.refs > 1)
    return set_promise(k, r, r->now.state, r->now.refs - 1);
  if (r->now.state == ST_FULFILLED || r->now.state == ST_REJECTED)
    return free_promise(k, r);
  /* An unresolved promise lives on while its decider can still resolve it. */
  return set_promise(k, r, r->now.state, 0);
}

int ocap__decref(ocap_kernel_t *k, const char *kref) {
  if (!ocap__is_kpid(kref))
    return ocap__obj_count(k, kref, -1, -1);
  prec_t *r = NULL;
  int rc = lookup(k, kref, 1, &r);
  return rc ? rc : ocap__kp_decref(k, r);
}

int ocap__incref_slots(ocap_kernel_t *k, const char *enc, size_t len) {
  if (len && enc[0] == '\n')
    return 0; /* no slots: the common case, without parsing */
  ocap__pcap_t p;
  int rc = ocap__pcap_borrow(k, &p, enc, len, "a capdata the kernel holds");
  for (size_t i = 0; i < p.nslots && !rc; i++)
    rc = ocap__incref(k, p.slotv[i]);
  ocap__pcap_free(&p);
  return rc;
}

int ocap__decref_slots(ocap_kernel_t *k, const char *enc, size_t len) {
  if (len && enc[0] == '\n')
    return 0;
  ocap__pcap_t p;
  int rc = ocap__pcap_borrow(k, &p, enc, len, "a capdata the kernel holds");
  for (size_t i = 0; i < p.nslots && !rc; i++)
    rc = ocap__decref(k, p.slotv[i]);
  ocap__pcap_free(&p);
  return rc;
}

int ocap_kernel_alloc_promise(ocap_kernel_t *k, const char *ep, char *out) {
  ocap__kp_t *r;
  int rc = ep ? ocap__check_ep(k, ep) : 0;
  return rc ? rc : ocap__alloc_promise(k, ep, out, &r);
}

int ocap__alloc_promise(ocap_kernel_t *k, const char *ep, char *out, ocap__kp_t **rec) {
  long long n;
  *rec = NULL;
  epc_t c = ep ? ocap__ep_code(ep) : 0;
  if (ep && !c)
    return ocap__broken(k, OCAP_ECORRUPT, "decider '%.60s' of a new promise is not an endpoint",
                        ep);
  int rc = ocap__bump(k, CTR_PROMISE, &n);
  if (rc)
    return rc;
  memcpy(out, "kp", 2);
  out[2 + ocap__fmt_ll(out + 2, n)] = '\0';
  return fresh(k, out, n, c, rec);
}

/* Whether c is among the subscribers of v. */
static int has_sub(const pver_t *v, epc_t c) {
  if (v->sub == c)
    return 1;
  for (size_t i = 0; i < v->nmore; i++)
    if (v->more[i] == c)
      return 1;
  return 0;
}

/* Adds ep to the promise's subscribers. Every send subscribes its sender
 * to its result, which is the first subscriber and costs no allocation;
 * the list of the others, shared with the other versions, is made anew
 * with each one added. */
int ocap__kp_subscribe(ocap_kernel_t *k, ocap__kp_t *r, const char *ep) {
  epc_t c = ocap__ep_code(ep);
  if (!c)
    return ocap__broken(k, OCAP_ECORRUPT, "subscriber '%.60s' is not an endpoint", ep);
  if (has_sub(&r->now, c))
    return 0;
  int rc = touch(k, r);
  if (rc)
    return rc;
  if (!r->now.sub) {
    r->now.sub = c;
    return 0;
  }
  epc_t *more = malloc((r->now.nmore + 1) * sizeof *more);
  if (!more)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory adding a subscriber");
  if (r->now.nmore)
    memcpy(more, r->now.more, r->now.nmore * sizeof *more);
  more[r->now.nmore] = c;
  blk_drop(r->now.more, r->com.more, r->sto.more);
  r->now.more = more;
  r->now.nmore++;
  return 0;
}

int ocap__subscribers_add(ocap_kernel_t *k, const char *kpid, const char *ep) {
  prec_t *r;
  int rc = lookup(k, kpid, 1, &r);
  return rc ? rc : ocap__kp_subscribe(k, r, ep);
}

int ocap_kernel_subscribe(ocap_kernel_t *k, const char *ep, const char *vpid) {
  char kpid[OCAP_REF_MAX];
  if (vpid[0] != 'p' && !ocap__is_kpid(vpid))
    return ocap__fail(k, OCAP_EINVAL, "%s subscribed to non-promise '%.60s'", ep, vpid);
  int rc = ocap_kernel_eref_to_kref(k, ep, vpid, kpid);
  if (rc)
    return rc;
  prec_t *r;
  rc = lookup(k, kpid, 0, &r);
  if (rc)
    return rc;
  int st = ocap__kp_state(r);
  if (st == ST_NONE)
    return ocap__fail(k, OCAP_EINVAL, "%s subscribed to unknown promise '%s'", ep, vpid);
  if (st != ST_UNRESOLVED)
    return ocap__enqueue_notify(k, ep, kpid, r);
  /* The decider may subscribe too: once it resolves, its c-list entry is
   * retired and the notify finds nothing to tell it. */
  return ocap__kp_subscribe(k, r, ep);
}

/* Settles kpid with data (an encoding in krefs) and schedules everything
 * that was waiting for it. */
/* ocap__kp_settle. When `own` is not NULL, it is enc itself, a malloc'd
 * block (NUL-terminated) that the record takes as its data instead of a
 * copy, and that is freed if the settlement fails first. */
static int settle(ocap_kernel_t *k, prec_t *r, int rejected, const char *enc, size_t len,
                  char *own) {
  int rc = set_promise(k, r, rejected ? ST_REJECTED : ST_FULFILLED, r->now.refs);
  if (!rc) {
    r->now.decider = 0;
    if (own) {
      blk_drop(r->now.data, r->com.data, r->sto.data);
      r->now.data = own;
      r->now.datalen = len;
      own = NULL;
    } else {
      rc = set_data(k, r, enc, len);
    }
  }
  free(own);
  if (!rc)
    rc = ocap__incref_slots(k, enc, len);
  /* The record stays put while notifies are queued (its map only changes
   * at commit), and queueing a notify changes only its count, so its list
   * can be walked in place and dropped after. */
  for (size_t i = 0; !rc && r->now.sub && i <= r->now.nmore; i++)
    rc = ocap__enqueue_notify_ep(k, i ? r->now.more[i - 1] : r->now.sub, r);
  if (!rc)
    clear_subs(r);
  /* Messages parked on the promise go back to the run queue, in order, still
   * addressed to the promise; routing them again follows the resolution.
   * The items stay in the record until the crank ends (an abort puts them
   * back). */
  for (long long i = 0; i < r->now.qtail && !rc; i++)
    rc = ocap__enqueue(k, r->parked[r->qbase + i].p, r->parked[r->qbase + i].len);
  if (!rc) {
    r->qbase += r->now.qtail;
    r->now.qtail = 0;
  }
  return rc;
}

int ocap__kp_settle(ocap_kernel_t *k, ocap__kp_t *r, int rejected, const char *enc, size_t len) {
  return settle(k, r, rejected, enc, len, NULL);
}

int ocap__settle(ocap_kernel_t *k, const char *kpid, int rejected, const char *enc, size_t len) {
  prec_t *r;
  int rc = lookup(k, kpid, 1, &r);
  return rc ? rc : ocap__kp_settle(k, r, rejected, enc, len);
}

/* The vref a resolution names, for a message: vref, or when NULL, p-<n>
 * written into buf (OCAP_REF_MAX bytes). */
static const char *resolved_name(const char *vref, long long n, char *buf) {
  if (vref)
    return vref;
  ocap__ref_text(REF_MAKE(REF_PI, n), buf);
  return buf;
}

/* Resolves kpid (its code kcode, 0 when none), which ep names vref (or
 * p-<n> when vref is NULL), to data. */
static int resolve_kpid(ocap_kernel_t *k, const char *ep, const char *kpid, uint64_t kcode,
                        const char *vref, long long n, int rejected, const ocap_capdata_t *data) {
  char name[OCAP_REF_MAX];
  if (!ocap__is_kpid(kpid))
    return ocap__fail(k, OCAP_EINVAL, "%s resolved non-promise '%s'", ep,
                      resolved_name(vref, n, name));
  /* The record is found once: checked, settled and notified through it
   * (it stays in place until the crank ends). A kpid with a code is found
   * by its number, not read again. */
  prec_t *p;
  int rc = REF_KIND(kcode) == REF_KP && REF_NUM(kcode) <= (uint64_t)COUNT_MAX
               ? ocap__kp_find_id(k, (long long)REF_NUM(kcode), 0, &p)
               : lookup(k, kpid, 0, &p);
  if (rc)
    return rc;
  if (ocap__kp_state(p) != ST_UNRESOLVED)
    return ocap__fail(k, OCAP_EINVAL, "%s resolved '%s', which is already settled", ep,
                      resolved_name(vref, n, name));
  epc_t c = ocap__ep_code(ep);
  if (!c || p->now.decider != c)
    return ocap__fail(k, OCAP_EINVAL, "%s may not resolve '%s': it is not the decider", ep,
                      resolved_name(vref, n, name));
  ocap__buf_t enc = {0};
  rc = ocap__capdata_e2k(k, ep, data, &enc);
  /* The translated data becomes the promise's, without a copy. */
  if (!rc)
    rc = settle(k, p, rejected, enc.p, enc.len, enc.p);
  else
    free(enc.p);
  /* The decider is done with the promise: retire its c-list entry, as its
   * liveslots forgets the vpid once resolved. */
  return rc ? rc : ocap__clist_remove_kp(k, ep, kpid, p);
}

int ocap_kernel_resolve(ocap_kernel_t *k, const char *ep, const ocap_resolution_t *r, size_t n) {
  char kpid[OCAP_REF_MAX];
  for (size_t i = 0; i < n; i++) {
    int rc = ocap_kernel_eref_to_kref(k, ep, r[i].kpid, kpid);
    if (!rc)
      rc = resolve_kpid(k, ep, kpid, 0, r[i].kpid, 0, r[i].rejected, &r[i].data);
    if (rc)
      return rc;
  }
  return 0;
}

int ocap__kernel_resolve_pi(ocap_kernel_t *k, const char *ep, long long n, int rejected,
                            const ocap_capdata_t *data) {
  char kpid[OCAP_REF_MAX];
  uint64_t kcode;
  int rc = ocap__import_kp(k, ep, n, kpid, &kcode);
  return rc ? rc : resolve_kpid(k, ep, kpid, kcode, NULL, n, rejected, data);
}

/* Parks a message on an unresolved promise. The item keeps its refs. */
int ocap__park(ocap_kernel_t *k, const char *kpid, const char *item, size_t len) {
  prec_t *r;
  int rc = change(k, kpid, &r);
  if (rc)
    return rc;
  if (r->now.qtail >= COUNT_MAX)
    return ocap__broken(k, OCAP_ECORRUPT, "counter '%s.queueTail' is exhausted", kpid);
  if ((size_t)(r->qbase + r->now.qtail) == r->parkedcap) {
    size_t cap = r->parkedcap ? r->parkedcap * 2 : 4;
    pitem_t *v = realloc(r->parked, cap * sizeof *v);
    if (!v)
      return ocap__broken(k, OCAP_ENOMEM, "out of memory parking a message");
    r->parked = v;
    r->parkedcap = cap;
  }
  char *p;
  rc = copy_str(k, item, len, &p, "parking a message");
  if (rc)
    return rc;
  r->parked[r->qbase + r->now.qtail].p = p;
  r->parked[r->qbase + r->now.qtail].len = len;
  r->now.qtail++;
  return 0;
}

long long ocap__parked(ocap_kernel_t *k, const char *kpid) {
  prec_t *r;
  int rc = lookup(k, kpid, 0, &r);
  return rc ? rc : r ? r->now.qtail : 0;
}

int ocap__unpark(ocap_kernel_t *k, const char *kpid, ocap__buf_t **items, size_t *n) {
  prec_t *r;
  *items = NULL;
  *n = 0;
  int rc = change(k, kpid, &r);
  if (rc || r->now.qtail == 0)
    return rc;
  ocap__buf_t *v = calloc((size_t)r->now.qtail, sizeof *v);
  if (!v)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory taking the messages parked on %s", kpid);
  for (long long i = 0; i < r->now.qtail; i++) {
    if (ocap__buf_add(&v[i], r->parked[r->qbase + i].p, r->parked[r->qbase + i].len)) {
      for (long long j = 0; j <= i; j++)
        free(v[j].p);
      free(v);
      return ocap__broken(k, OCAP_ENOMEM, "out of memory taking the messages parked on %s", kpid);
    }
  }
  *items = v;
  *n = (size_t)r->now.qtail;
  /* As at settlement, the items stay in the record until the crank ends
   * (an abort puts them back). */
  r->qbase += r->now.qtail;
  r->now.qtail = 0;
  return 0;
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
    rc = ocap__get_decider(k, kpids[i], v);
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
