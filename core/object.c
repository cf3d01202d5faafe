/*
 * object.c -- kernel objects (see object.h).
 *
 * Records work like the promises' (promise.c): read from the store the
 * first time an object is touched (an object allocated here is known to
 * be new), three versions of each field kept (now, at the last commit,
 * in the store), the records a crank changed listed so that commit makes
 * their values the committed ones and abort puts the committed ones back,
 * the records whose committed values the store lacks listed and written
 * when the kernel syncs (kernel.h), and a record whose keys are all gone,
 * in memory and in the store, dropped. A message's target counts it while
 * the message is queued, so most counts go up and down again between two
 * syncs. The owner is kept as an endpoint's code (kstate.h): a version is
 * then 40 bytes to copy at each commit, and the one read of every message
 * (ocap__get_target) writes the owner's few bytes from it.
 */
#include "object.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gc.h"
#include "idtable.h"
#include "refs.h"

/* One version of an object's keys: the record holds three, as they are
 * now, at the last commit, and in the store. */
typedef struct over {
  ocap__epc_t owner;      /* the owner's code (kstate.h), 0 when none */
  long long reach, recog; /* `ko<N>.refCount`: the reachable count and the
                             recognizable one (gc.h) */
  int revoked;            /* `ko<N>.revoked` exists */
  int pinned;             /* `ko<N>.pinned` exists */
  int dropped;            /* `ko<N>.dropped` exists */
} over_t;

typedef struct orec {
  long long id;  /* the N of koN */
  over_t now;    /* the keys as this crank left them */
  over_t com;    /* the keys at the last commit */
  over_t sto;    /* the keys in the store */
  int dirty;     /* listed in `dirty` */
  size_t syncat; /* its index in `sync` + 1, 0 when not listed */
} orec_t;

struct ocap__objects {
  ocap__idtable_t table; /* the records in memory, by id */
  orec_t **dirty;        /* the records this crank changed */
  size_t ndirty, capdirty;
  orec_t **sync; /* the records whose committed values the store may lack */
  size_t nsync, capsync;
};

/* The N of "koN", or -1 when koid is not an object id. */
static long long ko_number(const char *koid) {
  return ocap__kref_number(koid, REF_KO);
}

/* Whether every key of a version of the object is gone. */
static int gone(const over_t *v) {
  return !v->owner && !v->revoked && !v->reach && !v->recog && !v->pinned && !v->dropped;
}

static int same(const over_t *a, const over_t *b) {
  return a->owner == b->owner && a->reach == b->reach && a->recog == b->recog &&
         a->revoked == b->revoked && a->pinned == b->pinned && a->dropped == b->dropped;
}

/* Writes "ko<id>" into out (OCAP_REF_MAX bytes). */
static void ko_name(char *out, long long id) {
  memcpy(out, "ko", 2);
  out[2 + ocap__fmt_ll(out + 2, id)] = '\0';
}

/* Reads `<koid>.refCount`, "<reachable>,<recognizable>" (0,0 when absent). */
static int read_counts(ocap_kernel_t *k, const char *koid, orec_t *r) {
  ocap__buf_t b = {0};
  int rc = ocap__getb(k, &b, "%s.refCount", koid);
  if (rc > 0) {
    const char *comma = memchr(b.p, ',', b.len);
    if (!comma || !ocap__parse_count(b.p, (size_t)(comma - b.p), &r->now.reach) ||
        !ocap__parse_count(comma + 1, b.len - (size_t)(comma + 1 - b.p), &r->now.recog) ||
        r->now.reach > r->now.recog) {
      char key[KEY_MAX];
      snprintf(key, sizeof key, "%s.refCount", koid);
      rc = ocap__corrupt(
          k, key, b.p, b.len,
          "two counts \"<reachable>,<recognizable>\", the first not above the second");
    }
  }
  free(b.p);
  return rc < 0 ? rc : 0;
}

int ocap__objects_new(ocap_kernel_t *k) {
  struct ocap__objects *t = calloc(1, sizeof *t);
  if (!t || ocap__idtable_init(&t->table, 64)) {
    free(t);
    return OCAP_ENOMEM;
  }
  k->o = t;
  return 0;
}

/* Forgets every record, and with them the list of changed ones. */
static void drop_all(struct ocap__objects *t) {
  ocap__idtable_clear(&t->table, free);
  t->ndirty = 0;
  t->nsync = 0;
}

void ocap__objects_free(ocap_kernel_t *k) {
  struct ocap__objects *t = k->o;
  if (!t)
    return;
  ocap__idtable_free(&t->table, free);
  free(t->dirty);
  free(t->sync);
  free(t);
}

/*
 * The record of koN (koid, or NULL to have it written from id), read from
 * the store, or made without reading it when `fresh`, as for lookup_id:
 * the first use of an object, out of the hot path.
 */
static int load(ocap_kernel_t *k, long long id, const char *koid, int create, int fresh,
                orec_t **out) {
  struct ocap__objects *t = k->o;
  char name[OCAP_REF_MAX], owner[OCAP_REF_MAX];
  if (!koid) {
    ko_name(name, id);
    koid = name;
  }
  orec_t *r = ocap__zalloc(sizeof *r);
  if (!r)
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading object %s", koid);
  r->id = id;
  int rc = fresh ? 0 : ocap__get_ref(k, owner, "%s.owner", koid);
  if (rc > 0 && !(r->now.owner = ocap__ep_code(owner)))
    rc = ocap__broken(k, OCAP_ECORRUPT,
                      "corrupt database: the owner of %s is '%s', not an endpoint", koid, owner);
  if (rc >= 0 && !fresh)
    rc = r->now.revoked = ocap__has(k, "%s.revoked", koid);
  if (rc >= 0 && !fresh)
    rc = read_counts(k, koid, r);
  if (rc >= 0 && !fresh)
    rc = r->now.pinned = ocap__has(k, "%s.pinned", koid);
  if (rc >= 0 && !fresh)
    rc = r->now.dropped = ocap__has(k, "%s.dropped", koid);
  if (rc < 0 || (gone(&r->now) && !create)) {
    free(r);
    return rc < 0 ? rc : 0;
  }
  r->com = r->sto = r->now;
  if (ocap__idtable_insert(&t->table, r)) {
    free(r);
    return ocap__broken(k, OCAP_ENOMEM, "out of memory reading object %s", koid);
  }
  *out = r;
  return 0;
}

/*
 * The record of koN (0 <= N <= COUNT_MAX), read from the store when it is
 * not in memory yet (or made without reading it when `fresh`). With
 * `create` unset, an object the store does not have either is not kept,
 * and *out is NULL. koid is its name when the caller has it, else NULL.
 */
static inline int lookup_id(ocap_kernel_t *k, long long id, const char *koid, int create, int fresh,
                            orec_t **out) {
  orec_t *found = ocap__idtable_find(&k->o->table, id);
  *out = NULL;
  if (!found)
    return load(k, id, koid, create, fresh, out);
  /* A record kept only until the store is told that the object is gone
   * stands for no object, as the store does once it is dropped. */
  *out = !create && !found->dirty && gone(&found->now) ? NULL : found;
  return 0;
}

/* The same by name: a name that is no object id is none (corruption when
 * it must be one, `create`). */
static inline int lookup(ocap_kernel_t *k, const char *koid, int create, int fresh, orec_t **out) {
  long long id = ko_number(koid);
  if (id >= 0)
    return lookup_id(k, id, koid, create, fresh, out);
  *out = NULL;
  return create
             ? ocap__broken(k, OCAP_ECORRUPT, "corrupt database: '%.60s' is not an object id", koid)
             : 0;
}

/* Lists r among the records this crank changed, with room in the sync
 * list too, which the end of the crank cannot fail to add it to. */
static int list_changed(ocap_kernel_t *k, orec_t *r) {
  struct ocap__objects *t = k->o;
  if (ocap__reserve(&t->dirty, &t->capdirty, t->ndirty + 1, sizeof *t->dirty, 32) ||
      ocap__reserve(&t->sync, &t->capsync, t->nsync + t->ndirty + 1, sizeof *t->sync, 32))
    return ocap__broken(k, OCAP_ENOMEM, "out of memory changing an object");
  t->dirty[t->ndirty++] = r;
  r->dirty = 1;
  return 0;
}

/* The record of koid, listed as changed by this crank. */
static int change(ocap_kernel_t *k, const char *koid, int fresh, orec_t **out) {
  int rc = lookup(k, koid, 1, fresh, out);
  return rc || (*out)->dirty ? rc : list_changed(k, *out);
}

int ocap__get_owner(ocap_kernel_t *k, const char *koid, char *out) {
  orec_t *r;
  int rc = lookup(k, koid, 0, 0, &r);
  if (rc || !r || !r->now.owner)
    return rc;
  ocap__ep_text(r->now.owner, out);
  return 1;
}

/* Where a message to r goes (ocap__get_target). */
static int target_of(const orec_t *r, char *owner) {
  if (!r)
    return 0;
  if (r->now.revoked)
    return 2;
  if (!r->now.owner)
    return 0;
  ocap__ep_text(r->now.owner, owner);
  return 1;
}

int ocap__get_target(ocap_kernel_t *k, const char *koid, char *owner) {
  orec_t *r;
  int rc = lookup(k, koid, 0, 0, &r);
  return rc ? rc : target_of(r, owner);
}

int ocap__ko_target(ocap_kernel_t *k, long long id, char *owner) {
  orec_t *r;
  int rc = lookup_id(k, id, NULL, 0, 0, &r);
  return rc ? rc : target_of(r, owner);
}

int ocap__set_owner(ocap_kernel_t *k, const char *koid, const char *ep) {
  orec_t *r;
  ocap__epc_t c = ep ? ocap__ep_code(ep) : 0;
  if (ep && !c)
    return ocap__broken(k, OCAP_ECORRUPT, "owner '%.60s' of %s is not an endpoint", ep, koid);
  /* An owner is set only when the object is made, so its id is new. */
  int rc = change(k, koid, ep != NULL, &r);
  if (rc)
    return rc;
  r->now.owner = c;
  if (ep)
    return 0;
  /* A deleted object is nobody's export: it is neither pinned nor
   * dropped, and its record goes once no importer recognizes it. */
  r->now.pinned = r->now.dropped = 0;
  return 0;
}

int ocap__obj_info(ocap_kernel_t *k, const char *koid, ocap__objinfo_t *out) {
  orec_t *r;
  memset(out, 0, sizeof *out);
  int rc = lookup(k, koid, 0, 0, &r);
  if (rc || !r)
    return rc;
  if (r->now.owner)
    ocap__ep_text(r->now.owner, out->owner);
  out->reachable = r->now.reach;
  out->recognizable = r->now.recog;
  out->pinned = r->now.pinned;
  out->dropped = r->now.dropped;
  return 1;
}

/* Adds dreach and drecog to the counts of r (ocap__obj_count), listing it
 * as changed first if it is not yet. */
static int count(ocap_kernel_t *k, orec_t *r, int dreach, int drecog) {
  int rc = r->dirty ? 0 : list_changed(k, r);
  if (rc)
    return rc;
  long long reach = r->now.reach + dreach, recog = r->now.recog + drecog;
  if (reach < 0 || recog < 0 || reach > recog || recog > COUNT_MAX) {
    char koid[OCAP_REF_MAX];
    ko_name(koid, r->id);
    return ocap__broken(k, OCAP_ECORRUPT,
                        "corrupt database: the counts of %s (%lld,%lld) cannot change by (%d,%d)",
                        koid, r->now.reach, r->now.recog, dreach, drecog);
  }
  r->now.reach = reach;
  r->now.recog = recog;
  /* The owner learns at the end of the crank (gc.c), once every change of
   * the crank is in: a count that drops to 0 may well rise again. A
   * pinned object (a vat root, the target of most messages) is never a
   * candidate; were it unpinned, its owner would be gone. */
  if (((dreach < 0 && !reach) || (drecog < 0 && !recog)) && !r->now.pinned)
    return ocap__gc_maybe_free(k, r->id);
  return 0;
}

int ocap__obj_count(ocap_kernel_t *k, const char *koid, int dreach, int drecog) {
  orec_t *r;
  int rc = lookup(k, koid, 1, 0, &r);
  return rc ? rc : count(k, r, dreach, drecog);
}

int ocap__ko_count(ocap_kernel_t *k, long long id, int dreach, int drecog) {
  orec_t *r;
  int rc = lookup_id(k, id, NULL, 1, 0, &r);
  return rc ? rc : count(k, r, dreach, drecog);
}

int ocap__obj_set_flag(ocap_kernel_t *k, const char *koid, int flag, int on) {
  orec_t *r;
  int rc = change(k, koid, 0, &r);
  if (rc)
    return rc;
  if (flag == OBJ_PINNED)
    r->now.pinned = on;
  else
    r->now.dropped = on;
  return 0;
}

int ocap__get_revoked(ocap_kernel_t *k, const char *koid) {
  orec_t *r;
  int rc = lookup(k, koid, 0, 0, &r);
  return rc ? rc : r ? r->now.revoked : 0;
}

int ocap__set_revoked(ocap_kernel_t *k, const char *koid) {
  orec_t *r;
  int rc = change(k, koid, 0, &r);
  if (!rc)
    r->now.revoked = 1;
  return rc;
}

/* Writes "<reach>,<recog>" into v (48 bytes) and returns its length, or
 * 0 when both are 0 (the key is absent then). */
static size_t counts_text(char *v, long long reach, long long recog) {
  if (!reach && !recog)
    return 0;
  size_t n = ocap__fmt_ll(v, reach);
  v[n++] = ',';
  n += ocap__fmt_ll(v + n, recog);
  v[n] = '\0';
  return n;
}

int ocap__objects_check(ocap_kernel_t *k) {
  struct ocap__objects *t = k->o;
  int rc = 0;
  size_t pos = 0;
  orec_t *r;
  while (!rc && (r = ocap__idtable_next(&t->table, &pos)) != NULL) {
    char koid[OCAP_REF_MAX];
    memcpy(koid, "ko", 2);
    koid[2 + ocap__fmt_ll(koid + 2, r->id)] = '\0';
    char owner[OCAP_REF_MAX];
    size_t ol = r->now.owner ? ocap__ep_text(r->now.owner, owner) : 0;
    rc = ocap__check_key(k, ol ? owner : NULL, ol, "%s.owner", koid);
    /* Any value marks an object revoked; the kernel writes "true". The
     * same goes for `pinned` and `dropped`. */
    if (!rc && !r->now.revoked)
      rc = ocap__check_key(k, NULL, 0, "%s.revoked", koid);
    if (!rc && !r->now.pinned)
      rc = ocap__check_key(k, NULL, 0, "%s.pinned", koid);
    if (!rc && !r->now.dropped)
      rc = ocap__check_key(k, NULL, 0, "%s.dropped", koid);
    char v[48];
    size_t vl = counts_text(v, r->now.reach, r->now.recog);
    if (!rc)
      rc = ocap__check_key(k, vl ? v : NULL, vl, "%s.refCount", koid);
  }
  return rc;
}

void ocap__objects_forget(ocap_kernel_t *k, const char *koid) {
  struct ocap__objects *t = k->o;
  long long id = ko_number(koid);
  if (id < 0)
    return;
  orec_t *r = ocap__idtable_find(&t->table, id);
  /* A changed record holds values the store does not have yet. */
  if (r && !r->dirty && !r->syncat)
    free(ocap__idtable_remove(&t->table, id));
}

/* Takes r off the sync list. */
static void sync_unlist(struct ocap__objects *t, orec_t *r) {
  if (!r->syncat)
    return;
  orec_t *last = t->sync[--t->nsync];
  t->sync[r->syncat - 1] = last;
  last->syncat = r->syncat;
  r->syncat = 0;
}

int ocap__objects_unsynced(ocap_kernel_t *k) {
  return k->o->nsync > 0;
}

int ocap__objects_changed(ocap_kernel_t *k) {
  return k->o->ndirty > 0;
}

int ocap__objects_fill(ocap_kernel_t *k) {
  struct ocap__objects *t = k->o;
  char koid[OCAP_REF_MAX];
  for (size_t i = 0; i < t->nsync; i++) {
    orec_t *r = t->sync[i];
    int rc = 0;
    ko_name(koid, r->id);
    if (r->com.owner != r->sto.owner) {
      char owner[OCAP_REF_MAX];
      rc = r->com.owner ? ocap__setn(k, owner, ocap__ep_text(r->com.owner, owner), "%s.owner", koid)
                        : ocap__delv(k, "%s.owner", koid);
    }
    if (!rc && r->com.revoked != r->sto.revoked)
      rc = r->com.revoked ? ocap__setv(k, "true", "%s.revoked", koid)
                          : ocap__delv(k, "%s.revoked", koid);
    if (!rc && r->com.pinned != r->sto.pinned)
      rc = r->com.pinned ? ocap__setv(k, "true", "%s.pinned", koid)
                         : ocap__delv(k, "%s.pinned", koid);
    if (!rc && r->com.dropped != r->sto.dropped)
      rc = r->com.dropped ? ocap__setv(k, "true", "%s.dropped", koid)
                          : ocap__delv(k, "%s.dropped", koid);
    if (!rc && (r->com.reach != r->sto.reach || r->com.recog != r->sto.recog)) {
      char v[48];
      size_t vl = counts_text(v, r->com.reach, r->com.recog);
      rc = vl ? ocap__setn(k, v, vl, "%s.refCount", koid) : ocap__delv(k, "%s.refCount", koid);
    }
    if (rc)
      return rc;
  }
  return 0;
}

void ocap__objects_synced(ocap_kernel_t *k) {
  struct ocap__objects *t = k->o;
  for (size_t i = 0; i < t->nsync; i++) {
    orec_t *r = t->sync[i];
    r->sto = r->com;
    r->syncat = 0;
    if (!r->dirty && gone(&r->now))
      free(ocap__idtable_remove(&t->table, r->id));
  }
  t->nsync = 0;
}

/* Ends the crank's changes, keeping (commit) or dropping (abort) them. A
 * record whose committed values the store may lack joins the sync list
 * (change made its room); one gone in memory and in the store is dropped. */
static void end_crank(struct ocap__objects *t, int keep) {
  for (size_t i = 0; i < t->ndirty; i++) {
    orec_t *r = t->dirty[i];
    if (keep)
      r->com = r->now;
    else
      r->now = r->com;
    r->dirty = 0;
    if (gone(&r->now) && gone(&r->sto)) {
      sync_unlist(t, r);
      free(ocap__idtable_remove(&t->table, r->id));
    } else if (keep && same(&r->com, &r->sto)) {
      /* Changed and changed back (a message's target counts it while it
       * is queued): the store has it, and the sync has nothing to do. */
      sync_unlist(t, r);
    } else if (keep && !r->syncat) {
      t->sync[t->nsync++] = r;
      r->syncat = t->nsync;
    }
  }
  t->ndirty = 0;
}

void ocap__objects_done(ocap_kernel_t *k) {
  end_crank(k->o, 1);
}

void ocap__objects_abort(ocap_kernel_t *k, int cleared) {
  end_crank(k->o, 0);
  if (cleared)
    drop_all(k->o);
}
