/*
 * idtable.h -- a hash table of caller-owned records keyed by an integer id
 * (internal to the kernel).
 *
 * Conventions:
 * 1. A record is a caller's struct whose first member is its `long long`
 *    id; the table stores pointers to records and reads the id through
 *    them, so an id must not change while its record is in a table.
 * 2. The table never allocates or frees a record itself, except that
 *    clearing or freeing a table hands each record to a callback.
 * 3. Functions that can fail return 0 or OCAP_ENOMEM; on failure the table
 *    is unchanged.
 * 4. Inserting or removing invalidates iteration positions; finding does
 *    not.
 */
#ifndef OCAP_IDTABLE_H
#define OCAP_IDTABLE_H

#include <stddef.h>

typedef struct ocap__idtable {
  void **slots; /* open addressing with linear probing, by id */
  size_t mask;  /* capacity - 1, the capacity a power of two */
  size_t n;     /* records held */
} ocap__idtable_t;

/* Makes an empty table of `cap` slots (a power of two). */
int ocap__idtable_init(ocap__idtable_t *t, size_t cap);
/* Empties the table, handing every record to free_rec (when not NULL),
 * then releases the slots. */
void ocap__idtable_free(ocap__idtable_t *t, void (*free_rec)(void *));
/* Empties the table, handing every record to free_rec (when not NULL). */
void ocap__idtable_clear(ocap__idtable_t *t, void (*free_rec)(void *));
/* The slot an id hashes to, before masking. Kernel ids are consecutive,
 * so the multiplication spreads them over the table and the shift folds
 * the high bits back into the masked ones. */
static inline size_t ocap__id_hash(long long id) {
  unsigned long long h = (unsigned long long)id * 0x9e3779b97f4a7c15ULL;
  return (size_t)(h ^ (h >> 29));
}

/* The record with this id, or NULL. Inline: the kernel finds records
 * several times a round trip, and the call cost about as much as the
 * probe. */
static inline void *ocap__idtable_find(const ocap__idtable_t *t, long long id) {
  for (size_t i = ocap__id_hash(id) & t->mask;; i = (i + 1) & t->mask) {
    void *rec = t->slots[i];
    if (!rec || *(const long long *)rec == id)
      return rec;
  }
}
/* Adds rec, whose id must not be in the table yet, growing it if needed. */
int ocap__idtable_insert(ocap__idtable_t *t, void *rec);
/* Takes the record with this id out of the table and returns it (NULL when
 * there is none); the caller frees it. */
void *ocap__idtable_remove(ocap__idtable_t *t, long long id);
/* The first record at or after slot *pos, which is advanced past it, or
 * NULL when there is none left. Start with *pos = 0. */
void *ocap__idtable_next(const ocap__idtable_t *t, size_t *pos);

/*
 * Open addressing with linear probing as this table does it, shared with
 * the kernel's tables keyed by name (clist.c): a table is `slots`, mask +
 * 1 of them (a power of two), NULL marking a free one, and home(rec, mask)
 * gives the slot a record hashes to. Only growing and deleting are shared:
 * a lookup compares its keys in place, where a callback would cost every
 * probe of the hot path.
 */
typedef size_t (*ocap__home_fn)(const void *rec, size_t mask);

/* Whether one more record would make a table of mask + 1 slots holding n
 * records over half full, which keeps probe runs short. */
static inline int ocap__oa_full(size_t n, size_t mask) {
  return (n + 1) * 2 > mask + 1;
}
/* Doubles the table, placing every record again. Returns 0, or
 * OCAP_ENOMEM with the table unchanged. */
int ocap__oa_grow(void ***slots, size_t *mask, ocap__home_fn home);
/* Empties slot i and moves back the records probed past it, so that no
 * lookup stops at the hole before reaching them (no tombstones: a table
 * whose records come and go every crank never fills up with dead slots). */
void ocap__oa_delete(void **slots, size_t mask, size_t i, ocap__home_fn home);

#endif
