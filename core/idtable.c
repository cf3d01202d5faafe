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

/* Kernel ids are consecutive, so the multiplication spreads them over the
 * table and the shift folds the high bits back into the masked ones. */
static size_t id_hash(long long id) {
  unsigned long long h = (unsigned long long)id * 0x9e3779b97f4a7c15ULL;
  return (size_t)(h ^ (h >> 29));
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

void *ocap__idtable_find(const ocap__idtable_t *t, long long id) {
  return t->slots[find_slot(t, id)];
}

/* Doubles the table when one more record would make it over half full. */
static int grow(ocap__idtable_t *t) {
  if ((t->n + 1) * 2 <= t->mask + 1)
    return 0;
  size_t oldcap = t->mask + 1, cap = oldcap * 2;
  void **old = t->slots, **ns = calloc(cap, sizeof *ns);
  if (!ns)
    return OCAP_ENOMEM;
  t->slots = ns;
  t->mask = cap - 1;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i])
      t->slots[find_slot(t, rec_id(old[i]))] = old[i];
  free(old);
  return 0;
}

int ocap__idtable_insert(ocap__idtable_t *t, void *rec) {
  if (grow(t))
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
  t->slots[i] = NULL;
  t->n--;
  for (size_t j = (i + 1) & t->mask; t->slots[j]; j = (j + 1) & t->mask) {
    size_t home = id_hash(rec_id(t->slots[j])) & t->mask;
    /* A record moves back into the hole unless its home lies cyclically
     * in (i, j], where a lookup would stop at the hole before reaching
     * it. */
    if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
      t->slots[i] = t->slots[j];
      t->slots[j] = NULL;
      i = j;
    }
  }
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
