/*
 * idtable.c -- a hash table of records keyed by an integer id (see
 * idtable.h).
 *
 * Linear probing keeps a lookup to a few adjacent slots, and the table is
 * kept at most half full so that probe runs stay short. Deletion shifts
 * back the records probed past the freed slot instead of leaving
 * tombstones, so that a table whose records come and go every crank never
 * fills up with dead slots.
 */
#include "idtable.h"

#include <stdlib.h>

#include "errors.h"

/* The id of a record, which is its first member (idtable.h, 1). */
static long long rec_id(const void *rec) {
  return *(const long long *)rec;
}

#define id_hash ocap__id_hash

/* The slot a record hashes to (ocap__home_fn). */
static size_t id_home(const void *rec, size_t mask) {
  return id_hash(rec_id(rec)) & mask;
}

/* The slot holding id, or the empty slot where it would go. */
static size_t find_slot(const ocap__idtable_t *t, long long id) {
  size_t i = id_hash(id) & t->mask;
  while (t->slots[i] && rec_id(t->slots[i]) != id)
    i = (i + 1) & t->mask;
  return i;
}

int ocap__idtable_init(ocap__idtable_t *t, size_t cap) {
  t->slots = calloc(cap, sizeof *t->slots);
  if (!t->slots)
    return OCAP_ENOMEM;
  t->mask = cap - 1;
  t->n = 0;
  return 0;
}

void ocap__idtable_clear(ocap__idtable_t *t, void (*free_rec)(void *)) {
  for (size_t i = 0; i <= t->mask; i++) {
    if (t->slots[i] && free_rec)
      free_rec(t->slots[i]);
    t->slots[i] = NULL;
  }
  t->n = 0;
}

void ocap__idtable_free(ocap__idtable_t *t, void (*free_rec)(void *)) {
  if (!t->slots)
    return;
  ocap__idtable_clear(t, free_rec);
  free(t->slots);
  t->slots = NULL;
}

int ocap__oa_grow(void ***slots, size_t *mask, ocap__home_fn home) {
  size_t oldcap = *mask + 1, cap = oldcap * 2;
  void **old = *slots, **ns = calloc(cap, sizeof *ns);
  if (!ns)
    return OCAP_ENOMEM;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i]) {
      size_t j = home(old[i], cap - 1);
      while (ns[j])
        j = (j + 1) & (cap - 1);
      ns[j] = old[i];
    }
  free(old);
  *slots = ns;
  *mask = cap - 1;
  return 0;
}

void ocap__oa_delete(void **slots, size_t mask, size_t i, ocap__home_fn home) {
  slots[i] = NULL;
  for (size_t j = (i + 1) & mask; slots[j]; j = (j + 1) & mask) {
    size_t h = home(slots[j], mask);
    /* A record moves back into the hole unless its home lies cyclically
     * in (i, j], where a lookup would stop at the hole before reaching
     * it. */
    if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
      slots[i] = slots[j];
      slots[j] = NULL;
      i = j;
    }
  }
}

int ocap__idtable_insert(ocap__idtable_t *t, void *rec) {
  if (ocap__oa_full(t->n, t->mask) && ocap__oa_grow(&t->slots, &t->mask, id_home))
    return OCAP_ENOMEM;
  t->slots[find_slot(t, rec_id(rec))] = rec;
  t->n++;
  return 0;
}

void *ocap__idtable_remove(ocap__idtable_t *t, long long id) {
  size_t i = find_slot(t, id);
  void *rec = t->slots[i];
  if (!rec)
    return NULL;
  ocap__oa_delete(t->slots, t->mask, i, id_home);
  t->n--;
  return rec;
}

void *ocap__idtable_next(const ocap__idtable_t *t, size_t *pos) {
  for (size_t i = *pos; i <= t->mask; i++)
    if (t->slots[i]) {
      *pos = i + 1;
      return t->slots[i];
    }
  *pos = t->mask + 1;
  return NULL;
}
