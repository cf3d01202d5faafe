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
/* The record with this id, or NULL. */
void *ocap__idtable_find(const ocap__idtable_t *t, long long id);
/* Adds rec, whose id must not be in the table yet, growing it if needed. */
int ocap__idtable_insert(ocap__idtable_t *t, void *rec);
/* Takes the record with this id out of the table and returns it (NULL when
 * there is none); the caller frees it. */
void *ocap__idtable_remove(ocap__idtable_t *t, long long id);
/* The first record at or after slot *pos, which is advanced past it, or
 * NULL when there is none left. Start with *pos = 0. */
void *ocap__idtable_next(const ocap__idtable_t *t, size_t *pos);

#endif
