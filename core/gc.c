/*
 * gc.c -- garbage collection of kernel objects (see gc.h): the candidates
 * of a crank, the GC actions they become, the four GC syscalls and their
 * checks, and the reaps waiting.
 *
 * The actions are a set kept in memory, sorted by endpoint, kind and
 * object id, and one key each in the store, `gcAction.<ep>.<kind>.ko<N>`:
 * each action added or taken writes or deletes its own key straight into
 * the crank buffer, so a change costs the same bytes however long the
 * backlog, and commits or rolls back with the crank. An abort that finds
 * the set changed forgets it: it is read again from the store, which holds
 * the last commit's, when next used.
 */
#include "gc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clist.h"
#include "object.h"
#include "refs.h"

typedef struct act {
  char ep[OCAP_REF_MAX];
  int kind;
  long long id;
} act_t;

typedef struct acts {
  act_t *v;
  size_t n, cap;
} acts_t;

struct ocap__gc {
  int loaded;
  acts_t now;
  int dirty;        /* now has changed since the last commit */
  long long *maybe; /* ids whose count dropped to 0 in this crank */
  size_t nmaybe, capmaybe;
  char (*reaps)[OCAP_REF_MAX]; /* endpoints to reap, oldest first */
  size_t headreap, nreaps, capreaps;
};

static const char *const kind_name[] = {"dropExport", "retireExport", "retireImport"};

int ocap__gc_new(ocap_kernel_t *k) {
  k->g = calloc(1, sizeof *k->g);
  return k->g ? 0 : OCAP_ENOMEM;
}

void ocap__gc_free(ocap_kernel_t *k) {
  struct ocap__gc *g = k->g;
  if (!g)
    return;
  free(g->now.v);
  free(g->maybe);
  free(g->reaps);
  free(g);
  k->g = NULL;
}

static int act_cmp(const act_t *a, const act_t *b) {
  int c = strcmp(a->ep, b->ep);
  if (c)
    return c;
  if (a->kind != b->kind)
    return a->kind < b->kind ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

static void koid_of(char *out, long long id) {
  memcpy(out, "ko", 2);
  out[2 + ocap__fmt_ll(out + 2, id)] = '\0';
}

#define ACT_PREFIX "gcAction."
#define ACT_PREFIX_LEN (sizeof ACT_PREFIX - 1)

/* Parses a stored key `gcAction.<ep>.<kind>.ko<N>` into *a: 1 when it is
 * one, else 0. */
static int parse_act(const char *s, size_t n, act_t *a) {
  if (n <= ACT_PREFIX_LEN || memcmp(s, ACT_PREFIX, ACT_PREFIX_LEN) != 0)
    return 0;
  s += ACT_PREFIX_LEN;
  n -= ACT_PREFIX_LEN;
  size_t ko = n, dot;
  while (ko > 0 && s[ko - 1] != '.')
    ko--;
  if (ko < 2)
    return 0;
  dot = ko - 1;
  while (dot > 0 && s[dot - 1] != '.')
    dot--;
  if (dot < 2 || dot - 1 >= OCAP_REF_MAX)
    return 0;
  memcpy(a->ep, s, dot - 1);
  a->ep[dot - 1] = '\0';
  a->kind = -1;
  for (int i = 0; i < 3; i++)
    if (ko - 1 - dot == strlen(kind_name[i]) && memcmp(s + dot, kind_name[i], ko - 1 - dot) == 0)
      a->kind = i;
  return a->kind >= 0 && ocap__valid_ep(a->ep) && n - ko > 2 && s[ko] == 'k' && s[ko + 1] == 'o' &&
         ocap__parse_count(s + ko + 2, n - ko - 2, &a->id);
}

static int act_cmp_v(const void *a, const void *b) {
  return act_cmp(a, b);
}

/* Reads the set from the store: every key under `gcAction.`. */
__attribute__((noinline)) static int gc_read(ocap_kernel_t *k) {
  struct ocap__gc *g = k->g;
  ocap__buf_t after = {0};
  const char *key;
  size_t klen;
  int rc;
  g->now.n = 0;
  while ((rc = ocap_store_next_key(k->s, ACT_PREFIX, ACT_PREFIX_LEN, after.p, after.len, 0, &key,
                                   &klen)) == 1) {
    after.len = 0;
    act_t a;
    memset(&a, 0, sizeof a);
    if (ocap__buf_add(&after, key, klen)) {
      rc = ocap__broken(k, OCAP_ENOMEM, "out of memory reading the GC actions");
      break;
    }
    if (!parse_act(after.p, after.len, &a)) {
      rc =
          ocap__corrupt(k, after.p, "1", 1,
                        "a key `gcAction.<endpoint>.<dropExport|retireExport|retireImport>.ko<N>`");
      break;
    }
    if (g->now.n == g->now.cap) {
      size_t cap = g->now.cap ? g->now.cap * 2 : 16;
      act_t *v = realloc(g->now.v, cap * sizeof *v);
      if (!v) {
        rc = ocap__broken(k, OCAP_ENOMEM, "out of memory reading the GC actions");
        break;
      }
      g->now.v = v;
      g->now.cap = cap;
    }
    g->now.v[g->now.n++] = a;
  }
  if (rc < 0 && !k->err)
    rc = ocap__store_failed(k, rc, "scan", ACT_PREFIX, ACT_PREFIX_LEN);
  free(after.p);
  if (rc < 0) {
    g->now.n = 0;
    return rc;
  }
  /* The store's order is the keys' bytes; the set's is numeric by id.
   * (No actions, no array: qsort must not be given NULL.) */
  if (g->now.n > 1)
    qsort(g->now.v, g->now.n, sizeof *g->now.v, act_cmp_v);
  g->loaded = 1;
  g->dirty = 0;
  return 0;
}

/* The set, read the first time: every crank asks whether it has actions,
 * which is then a test and no call. */
static inline int gc_load(ocap_kernel_t *k) {
  return k->g->loaded ? 0 : gc_read(k);
}

/* Writes (or, with del, deletes) the key of action a. */
static int act_store(ocap_kernel_t *k, const act_t *a, int del) {
  char koid[OCAP_REF_MAX];
  koid_of(koid, a->id);
  return del ? ocap__delv(k, ACT_PREFIX "%s.%s.%s", a->ep, kind_name[a->kind], koid)
             : ocap__setn(k, "1", 1, ACT_PREFIX "%s.%s.%s", a->ep, kind_name[a->kind], koid);
}

/* Adds an action to the set (once). */
static int act_add(ocap_kernel_t *k, const char *ep, int kind, long long id) {
  struct ocap__gc *g = k->g;
  int rc = gc_load(k);
  if (rc)
    return rc;
  act_t a;
  memset(&a, 0, sizeof a);
  memcpy(a.ep, ep, strlen(ep) + 1);
  a.kind = kind;
  a.id = id;
  size_t lo = 0, hi = g->now.n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = act_cmp(&g->now.v[mid], &a);
    if (c == 0)
      return 0;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (g->now.n == g->now.cap) {
    size_t cap = g->now.cap ? g->now.cap * 2 : 16;
    act_t *v = realloc(g->now.v, cap * sizeof *v);
    if (!v)
      return ocap__broken(k, OCAP_ENOMEM, "out of memory adding a GC action");
    g->now.v = v;
    g->now.cap = cap;
  }
  rc = act_store(k, &a, 0);
  if (rc)
    return rc;
  memmove(g->now.v + lo + 1, g->now.v + lo, (g->now.n - lo) * sizeof a);
  g->now.v[lo] = a;
  g->now.n++;
  g->dirty = 1;
  return 0;
}

int ocap__gc_maybe_free(ocap_kernel_t *k, long long id) {
  struct ocap__gc *g = k->g;
  if (g->nmaybe == g->capmaybe) {
    size_t cap = g->capmaybe ? g->capmaybe * 2 : 32;
    long long *v = realloc(g->maybe, cap * sizeof *v);
    if (!v)
      return ocap__broken(k, OCAP_ENOMEM, "out of memory noting a garbage object");
    g->maybe = v;
    g->capmaybe = cap;
  }
  g->maybe[g->nmaybe++] = id;
  return 0;
}

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

/*
 * Turns the crank's candidates into actions: by now every change of the
 * crank is in, so a count that rose again is seen as it ends. A pinned
 * object, and one whose owner is gone, needs no action: the latter's
 * record goes by itself once its counts are 0 (object.c).
 */
static int process_maybe(ocap_kernel_t *k) {
  struct ocap__gc *g = k->g;
  qsort(g->maybe, g->nmaybe, sizeof *g->maybe, cmp_ll);
  int rc = 0;
  char koid[OCAP_REF_MAX];
  for (size_t i = 0; i < g->nmaybe && !rc; i++) {
    if (i && g->maybe[i] == g->maybe[i - 1])
      continue;
    koid_of(koid, g->maybe[i]);
    ocap__objinfo_t o;
    int got = ocap__obj_info(k, koid, &o);
    if (got < 0)
      rc = got;
    if (got <= 0 || !o.owner[0] || o.pinned)
      continue;
    if (!o.reachable && !o.dropped)
      rc = act_add(k, o.owner, GC_DROP_EXPORT, g->maybe[i]);
    if (!rc && !o.recognizable)
      rc = act_add(k, o.owner, GC_RETIRE_EXPORT, g->maybe[i]);
  }
  if (rc >= 0)
    g->nmaybe = 0;
  return rc < 0 ? rc : 0;
}

int ocap__gc_prepare(ocap_kernel_t *k) {
  return k->g->nmaybe ? process_maybe(k) : 0;
}

int ocap__gc_changed(ocap_kernel_t *k) {
  return k->g->nmaybe > 0 || k->g->dirty;
}

void ocap__gc_done(ocap_kernel_t *k) {
  struct ocap__gc *g = k->g;
  g->nmaybe = 0;
  g->dirty = 0;
}

void ocap__gc_abort(ocap_kernel_t *k, int cleared) {
  struct ocap__gc *g = k->g;
  g->nmaybe = 0;
  if (cleared || g->dirty) {
    g->loaded = 0;
    g->now.n = 0;
  }
  g->dirty = 0;
}

int ocap__gc_check(ocap_kernel_t *k) {
  struct ocap__gc *g = k->g;
  if (!g->loaded)
    return 0;
  int rc = 0;
  for (size_t i = 0; i < g->now.n && !rc; i++) {
    char koid[OCAP_REF_MAX];
    koid_of(koid, g->now.v[i].id);
    rc = ocap__check_key(k, "1", 1, ACT_PREFIX "%s.%s.%s", g->now.v[i].ep,
                         kind_name[g->now.v[i].kind], koid);
  }
  /* And every key is one of the set. */
  ocap__buf_t after = {0};
  const char *key;
  size_t klen;
  while (!rc && (rc = ocap_store_next_key(k->s, ACT_PREFIX, ACT_PREFIX_LEN, after.p, after.len, 0,
                                          &key, &klen)) == 1) {
    after.len = 0;
    act_t a;
    memset(&a, 0, sizeof a);
    rc = ocap__buf_add(&after, key, klen) ? ocap__fail(k, OCAP_ENOMEM, "out of memory") : 0;
    if (!rc && (!parse_act(after.p, after.len, &a) || !g->now.n ||
                !bsearch(&a, g->now.v, g->now.n, sizeof a, act_cmp_v)))
      rc = ocap__check_key(k, NULL, 0, "%s", after.p);
  }
  free(after.p);
  return rc < 0 ? rc : 0;
}

void ocap__gc_forget(ocap_kernel_t *k) {
  struct ocap__gc *g = k->g;
  if (!g->dirty)
    g->loaded = 0;
}

int ocap__gc_pending(ocap_kernel_t *k) {
  int rc = gc_load(k);
  return rc ? rc : k->g->now.n > 0;
}

/* Removes now.v[at .. at + n) from the set, and their keys. */
static int acts_cut(ocap_kernel_t *k, size_t at, size_t n) {
  struct ocap__gc *g = k->g;
  for (size_t i = at; i < at + n; i++) {
    int rc = act_store(k, &g->now.v[i], 1);
    if (rc)
      return rc;
  }
  memmove(g->now.v + at, g->now.v + at + n, (g->now.n - at - n) * sizeof *g->now.v);
  g->now.n -= n;
  g->dirty = 1;
  return 0;
}

/*
 * Applies one action if it is still true, writing ep's eref for the
 * object into eref: 1 applied, 0 no longer true, or a negative code.
 */
static int apply(ocap_kernel_t *k, const char *ep, int kind, const char *koid, char *eref) {
  ocap__objinfo_t o;
  int rc = ocap__obj_info(k, koid, &o);
  if (rc <= 0)
    return rc;
  if (kind == GC_RETIRE_IMPORT) {
    int reach;
    rc = ocap__clist_entry(k, ep, koid, eref, &reach);
    if (rc <= 0)
      return rc;
    rc = ocap__clist_remove(k, ep, koid);
    return rc ? rc : 1;
  }
  if (strcmp(o.owner, ep) != 0 || o.pinned || o.reachable)
    return 0;
  if (kind == GC_DROP_EXPORT) {
    if (o.dropped)
      return 0;
    rc = ocap__export_eref(k, ep, koid, eref);
    if (rc <= 0)
      return rc;
    rc = ocap__obj_set_flag(k, koid, OBJ_DROPPED, 1);
    return rc ? rc : 1;
  }
  if (o.recognizable)
    return 0;
  rc = ocap__export_eref(k, ep, koid, eref);
  if (rc <= 0)
    return rc;
  /* Nobody can name it any more: the object goes, with its owner's
   * c-list entries. */
  rc = ocap__clist_remove(k, ep, koid);
  if (!rc)
    rc = ocap__set_owner(k, koid, NULL);
  return rc ? rc : 1;
}

void ocap__gcbatch_free(ocap__gcbatch_t *b) {
  free(b->erefs);
  free(b->vrefs);
  b->erefs = NULL;
  b->vrefs = NULL;
}

int ocap__gc_take(ocap_kernel_t *k, ocap__gcbatch_t *b) {
  struct ocap__gc *g = k->g;
  memset(b, 0, sizeof *b);
  int rc = gc_load(k);
  if (rc || !g->now.n)
    return rc;
  size_t n = 1;
  while (n < g->now.n && strcmp(g->now.v[n].ep, g->now.v[0].ep) == 0 &&
         g->now.v[n].kind == g->now.v[0].kind)
    n++;
  memcpy(b->ep, g->now.v[0].ep, sizeof b->ep);
  b->kind = g->now.v[0].kind;
  b->erefs = malloc(n * sizeof *b->erefs);
  b->vrefs = malloc(n * sizeof *b->vrefs);
  long long *ids = malloc(n * sizeof *ids);
  if (!b->erefs || !b->vrefs || !ids) {
    free(ids);
    ocap__gcbatch_free(b);
    return ocap__broken(k, OCAP_ENOMEM, "out of memory taking GC actions");
  }
  for (size_t i = 0; i < n; i++)
    ids[i] = g->now.v[i].id;
  rc = acts_cut(k, 0, n);
  char koid[OCAP_REF_MAX];
  for (size_t i = 0; i < n && !rc; i++) {
    koid_of(koid, ids[i]);
    rc = apply(k, b->ep, b->kind, koid, b->erefs[b->n]);
    if (rc > 0) {
      b->vrefs[b->n] = b->erefs[b->n];
      b->n++;
      rc = 0;
    }
  }
  free(ids);
  if (rc) {
    ocap__gcbatch_free(b);
    return rc;
  }
  return 1;
}

int ocap__gc_discard(ocap_kernel_t *k, const ocap__gcbatch_t *b) {
  struct ocap__gc *g = k->g;
  int rc = gc_load(k);
  if (rc)
    return rc;
  size_t at = 0, n = 0;
  while (at < g->now.n && (strcmp(g->now.v[at].ep, b->ep) != 0 || g->now.v[at].kind != b->kind))
    at++;
  while (at + n < g->now.n && strcmp(g->now.v[at + n].ep, b->ep) == 0 &&
         g->now.v[at + n].kind == b->kind)
    n++;
  return n ? acts_cut(k, at, n) : 0;
}

/* ---- reaps ---- */

int ocap_kernel_schedule_reap(ocap_kernel_t *k, const char *ep) {
  struct ocap__gc *g = k->g;
  if (!ocap__valid_ep(ep))
    return ocap__fail(k, OCAP_EINVAL, "invalid endpoint '%.60s'", ep);
  for (size_t i = g->headreap; i < g->nreaps; i++)
    if (strcmp(g->reaps[i], ep) == 0)
      return 0;
  if (g->headreap && g->headreap == g->nreaps)
    g->headreap = g->nreaps = 0;
  if (g->nreaps == g->capreaps) {
    size_t cap = g->capreaps ? g->capreaps * 2 : 16;
    void *v = realloc(g->reaps, cap * sizeof *g->reaps);
    if (!v)
      return ocap__fail(k, OCAP_ENOMEM, "out of memory scheduling a reap");
    g->reaps = v;
    g->capreaps = cap;
  }
  memcpy(g->reaps[g->nreaps++], ep, strlen(ep) + 1);
  return 0;
}

int ocap__gc_next_reap(ocap_kernel_t *k, char *ep) {
  struct ocap__gc *g = k->g;
  if (g->headreap == g->nreaps)
    return 0;
  memcpy(ep, g->reaps[g->headreap++], OCAP_REF_MAX);
  return 1;
}

long long ocap_kernel_gc_work(ocap_kernel_t *k) {
  int rc = gc_load(k);
  if (rc)
    return rc;
  return (long long)(k->g->now.n + (k->g->nreaps - k->g->headreap));
}

/* ---- the syscalls ---- */

/* The kref of ep's eref r, which must be an object of ep's of the given
 * direction ('+' export, '-' import; for the kernel endpoint, a kref that
 * it owns or not). Returns 0, or OCAP_EINVAL through ocap__fail. */
static int object_of(ocap_kernel_t *k, const char *ep, const char *call, const char *r, char dir,
                     char *kref, ocap__objinfo_t *o) {
  int host = ocap__is_kernel_ep(ep);
  memset(o, 0, sizeof *o);
  if (host ? !ocap__valid_kref(r) || r[1] != 'o'
           : !ocap__valid_eref(r) || r[0] != 'o' || r[1] != dir)
    return ocap__fail(k, OCAP_EINVAL, "%s %s '%.60s': not an %s", ep, call, r,
                      dir == '+' ? "export" : "import");
  int rc;
  if (host) {
    memcpy(kref, r, strlen(r) + 1);
    rc = 1;
  } else {
    rc = ocap_kernel_kref_of(k, ep, r, kref);
  }
  if (rc < 0)
    return rc;
  if (rc == 0)
    return ocap__fail(k, OCAP_EINVAL, "%s %s '%s': not an %s of %s", ep, call, r,
                      dir == '+' ? "export" : "import", ep);
  rc = ocap__obj_info(k, kref, o);
  if (rc < 0)
    return rc;
  if (rc == 0 && dir == '+')
    return ocap__fail(k, OCAP_EINVAL, "%s %s '%s': not an export of %s", ep, call, r, ep);
  if (dir == '+' && strcmp(o->owner, ep) != 0)
    return ocap__fail(k, OCAP_EINVAL, "%s %s '%s': not an export of %s", ep, call, r, ep);
  if (host && dir == '-' && strcmp(o->owner, ep) == 0)
    return ocap__fail(k, OCAP_EINVAL, "%s %s '%s': not an import", ep, call, r);
  return 0;
}

/* The reachable flag of ep's import kref: 0 or 1, or a negative code
 * (OCAP_EINVAL when ep does not have it). */
static int import_reach(ocap_kernel_t *k, const char *ep, const char *call, const char *r,
                        const char *kref) {
  char eref[OCAP_REF_MAX];
  int reach;
  int rc = ocap__clist_entry(k, ep, kref, eref, &reach);
  if (rc < 0)
    return rc;
  if (rc == 0)
    return ocap__fail(k, OCAP_EINVAL, "%s %s '%s': not an import of %s", ep, call, r, ep);
  return reach;
}

/* Queues a retireImport of kref to every endpoint that imports it, found
 * through the importers' index (clist.h): the work follows the number of
 * importers, not of vats ever created. */
static int retire_importers(ocap_kernel_t *k, const char *kref) {
  char(*eps)[OCAP_REF_MAX] = NULL;
  long n = ocap__clist_importers(k, kref, &eps);
  int rc = n < 0 ? (int)n : 0;
  for (long i = 0; i < n && !rc; i++)
    rc = act_add(k, eps[i], GC_RETIRE_IMPORT, atoll(kref + 2));
  free(eps);
  return rc;
}

static int cmp_ref(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Refuses a call that names a ref twice: dropping twice is as illegal in
 * one call as in two. */
static int check_twice(ocap_kernel_t *k, const char *ep, const char *call, const char *const *refs,
                       size_t n) {
  if (n < 2)
    return 0;
  const char **v = malloc(n * sizeof *v);
  if (!v)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory checking %s", call);
  memcpy(v, refs, n * sizeof *v);
  qsort(v, n, sizeof *v, cmp_ref);
  int rc = 0;
  for (size_t i = 1; i < n && !rc; i++)
    if (strcmp(v[i - 1], v[i]) == 0)
      rc = ocap__fail(k, OCAP_EINVAL, "%s %s '%.60s': named twice", ep, call, v[i]);
  free(v);
  return rc;
}

/*
 * Checks one ref of a GC syscall (kind: the GC_* of gc.h, or -1 for
 * abandonExports): 0 when the call may take it, with its kref in kref,
 * else OCAP_EINVAL through ocap__fail or a kernel failure. Nothing changes
 * until every ref passed, so a refused call, even the host's, which no
 * crank rolls back, leaves no trace.
 */
static int check_ref(ocap_kernel_t *k, const char *ep, const char *call, int kind, const char *r,
                     char *kref) {
  ocap__objinfo_t o;
  int import = kind == GC_DROP_EXPORT || kind == GC_RETIRE_IMPORT;
  int rc = object_of(k, ep, call, r, import ? '-' : '+', kref, &o);
  if (rc)
    return rc;
  if (import) {
    rc = import_reach(k, ep, call, r, kref);
    if (rc == 0 && kind == GC_DROP_EXPORT)
      return ocap__fail(k, OCAP_EINVAL, "%s %s '%s': already dropped", ep, call, r);
    if (rc == 1 && kind == GC_RETIRE_IMPORT)
      return ocap__fail(k, OCAP_EINVAL, "%s %s '%s': still reachable (drop it first)", ep, call, r);
    return rc < 0 ? rc : 0;
  }
  if (kind == GC_RETIRE_EXPORT && (o.reachable || !o.dropped || o.pinned))
    return ocap__fail(k, OCAP_EINVAL, "%s %s '%s': still reachable", ep, call, r);
  /* The root outlives every incarnation (an upgrade keeps its kref, and
   * the kernel's records name it): no runtime lets go of it. Another
   * pinned export, a caplet parameter, may be ephemeral and so abandoned
   * by an upgrade; it then answers OBJECT_DELETED, and stays pinned. */
  if (kind < 0 && o.pinned && strcmp(r, "o+0") == 0)
    return ocap__fail(k, OCAP_EINVAL, "%s %s '%s': the vat's root cannot be abandoned", ep, call,
                      r);
  return 0;
}

/* Runs a GC syscall: every ref checked, then each applied. The kinds of
 * gc.h name the calls here: GC_DROP_EXPORT dropImports, GC_RETIRE_IMPORT
 * retireImports, GC_RETIRE_EXPORT retireExports, -1 abandonExports. */
static int gc_call(ocap_kernel_t *k, const char *ep, const char *call, int kind,
                   const char *const *refs, size_t n) {
  char kref[OCAP_REF_MAX], eref[OCAP_REF_MAX];
  int rc = ocap__check_ep(k, ep);
  if (!rc)
    rc = check_twice(k, ep, call, refs, n);
  for (size_t i = 0; i < n && !rc; i++)
    rc = check_ref(k, ep, call, kind, refs[i], kref);
  for (size_t i = 0; i < n && !rc; i++) {
    rc = check_ref(k, ep, call, kind, refs[i], kref);
    if (rc)
      break;
    if (kind == GC_DROP_EXPORT) {
      int reach;
      rc = ocap__clist_entry(k, ep, kref, eref, &reach);
      if (rc > 0)
        rc = ocap__clist_set_reach(k, ep, kref, eref, 0);
      if (!rc)
        rc = ocap__obj_count(k, kref, -1, 0);
      continue;
    }
    if (kind == GC_RETIRE_EXPORT) {
      ocap__objinfo_t o;
      rc = ocap__obj_info(k, kref, &o);
      if (rc > 0)
        rc = o.recognizable ? retire_importers(k, kref) : 0;
    }
    /* An import's entry goes; an export's object goes, or loses its
     * owner while importers still recognize it. */
    if (!rc)
      rc = ocap__clist_remove(k, ep, kref);
    if (!rc && kind != GC_RETIRE_IMPORT)
      rc = ocap__set_owner(k, kref, NULL);
  }
  return rc;
}

int ocap_kernel_drop_imports(ocap_kernel_t *k, const char *ep, const char *const *refs, size_t n) {
  return gc_call(k, ep, "dropImports", GC_DROP_EXPORT, refs, n);
}

int ocap_kernel_retire_imports(ocap_kernel_t *k, const char *ep, const char *const *refs,
                               size_t n) {
  return gc_call(k, ep, "retireImports", GC_RETIRE_IMPORT, refs, n);
}

int ocap_kernel_retire_exports(ocap_kernel_t *k, const char *ep, const char *const *refs,
                               size_t n) {
  return gc_call(k, ep, "retireExports", GC_RETIRE_EXPORT, refs, n);
}

int ocap_kernel_abandon_exports(ocap_kernel_t *k, const char *ep, const char *const *refs,
                                size_t n) {
  return gc_call(k, ep, "abandonExports", -1, refs, n);
}

int ocap_kernel_reachable_imports(ocap_kernel_t *k, const char *ep,
                                  int (*each)(void *ud, const char *vref), void *ud) {
  if (ocap__is_kernel_ep(ep) || !ocap__valid_ep(ep))
    return ocap__fail(k, OCAP_EINVAL, "invalid vat '%.60s'", ep);
  char(*krefs)[OCAP_REF_MAX] = NULL;
  long n = ocap__clist_krefs(k, ep, "ko", &krefs);
  int rc = n < 0 ? (int)n : 0;
  for (long i = 0; i < n && !rc; i++) {
    char eref[OCAP_REF_MAX];
    int reach;
    rc = ocap__clist_entry(k, ep, krefs[i], eref, &reach);
    rc = rc > 0 && reach && eref[1] == '-' ? each(ud, eref) : rc < 0 ? rc : 0;
  }
  free(krefs);
  return rc;
}

int ocap_kernel_pin(ocap_kernel_t *k, const char *kref) {
  ocap__objinfo_t o;
  if (!ocap__valid_kref(kref) || kref[1] != 'o')
    return ocap__fail(k, OCAP_EINVAL, "cannot pin '%.60s': not an object", kref);
  int rc = ocap__obj_info(k, kref, &o);
  if (rc < 0)
    return rc;
  if (!o.owner[0])
    return ocap__fail(k, OCAP_EINVAL, "cannot pin %s: it has no owner", kref);
  return o.pinned ? 0 : ocap__obj_set_flag(k, kref, OBJ_PINNED, 1);
}
