/*
 * test_idtable.c -- unit tests for core/idtable.c: a differential test that
 * runs random inserts, removals and lookups over a table and a naive
 * reference side by side, through many growths; a test that forces probe
 * runs to wrap around the end of the slots and then deletes inside them;
 * and a test that clearing hands every record to the callback once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "idtable.h"

#include "check.h"

/* A record as the kernel's are laid out: its id first, then its data. */
typedef struct rec {
  long long id;
  long long payload; /* a function of the id, to catch mixed-up records */
} rec_t;

static rec_t *rec_new(long long id) {
  rec_t *r = malloc(sizeof *r);
  if (!r) {
    fprintf(stderr, "test_idtable: out of memory\n");
    exit(1);
  }
  r->id = id;
  r->payload = id * 7 + 3;
  return r;
}

/* A small pseudo-random generator, so that a failure is reproducible. */
static unsigned long long rng_state = 88172645463325252ULL;
static unsigned long long rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* The ids the differential test draws from: mostly small consecutive ones
 * as the kernel allocates them, and a few far apart and negative ones. */
#define NIDS 3000
static long long id_of(size_t i) {
  if (i % 10 == 9)
    return (long long)(i * 1000003ULL) - 1000000000LL;
  return (long long)i;
}

/* Checks that the table holds exactly the records the reference does. */
static int agree(const ocap__idtable_t *t, rec_t *const *ref) {
  int fails = 0;
  size_t count = 0, pos = 0;
  rec_t *r;
  while ((r = ocap__idtable_next(t, &pos)) != NULL) {
    count++;
    CHECK(r->payload == r->id * 7 + 3);
  }
  size_t want = 0;
  for (size_t i = 0; i < NIDS; i++) {
    if (ref[i])
      want++;
    CHECK(ocap__idtable_find(t, id_of(i)) == ref[i]);
  }
  CHECK(count == want);
  CHECK(t->n == want);
  /* The table must never be more than half full, so probes stay short. */
  CHECK(t->n * 2 <= t->mask + 1);
  return fails;
}

static int test_differential(void) {
  int fails = 0;
  ocap__idtable_t t;
  rec_t **ref = calloc(NIDS, sizeof *ref);
  CHECK(ref && ocap__idtable_init(&t, 2) == 0);
  if (fails)
    return fails;
  for (int step = 0; step < 200000 && !fails; step++) {
    /* Phases that mostly insert and mostly remove make the table grow
     * and empty out again, several times over. */
    int inserting = (step / 20000) % 2 == 0;
    size_t i = (size_t)(rng() % NIDS);
    int op = (int)(rng() % 10);
    if (!ref[i] && (inserting ? op < 8 : op < 2)) {
      ref[i] = rec_new(id_of(i));
      CHECK(ocap__idtable_insert(&t, ref[i]) == 0);
    } else if (ref[i] && (inserting ? op < 2 : op < 8)) {
      rec_t *r = ocap__idtable_remove(&t, id_of(i));
      CHECK(r == ref[i]);
      free(r);
      ref[i] = NULL;
    } else if (!ref[i]) {
      CHECK(ocap__idtable_remove(&t, id_of(i)) == NULL);
    }
    if (step % 997 == 0)
      fails += agree(&t, ref);
  }
  fails += agree(&t, ref);
  ocap__idtable_free(&t, free);
  free(ref);
  return fails;
}

/* The table's hash, copied here only to choose ids that collide. */
static size_t home_of(long long id, size_t mask) {
  unsigned long long h = (unsigned long long)id * 0x9e3779b97f4a7c15ULL;
  return (size_t)(h ^ (h >> 29)) & mask;
}

/*
 * Fills a run of slots that starts at the last one and wraps around to
 * the first, with ids that all have the last slot as their home, plus one
 * whose home is slot 0 and so sits past them; then removes each in turn
 * and checks that all the others are still found.
 */
static int test_wraparound(void) {
  int fails = 0;
  enum { CAP = 16, MASK = CAP - 1, RUN = 5 };
  long long ids[RUN + 1];
  int nids = 0;
  for (long long id = 0; nids < RUN; id++)
    if (home_of(id, MASK) == MASK)
      ids[nids++] = id;
  for (long long id = 0;; id++)
    if (home_of(id, MASK) == 0) {
      ids[nids++] = id;
      break;
    }
  for (int gone = 0; gone <= nids; gone++) {
    ocap__idtable_t t;
    CHECK(ocap__idtable_init(&t, CAP) == 0);
    for (int i = 0; i < nids; i++)
      CHECK(ocap__idtable_insert(&t, rec_new(ids[i])) == 0);
    CHECK(t.mask == MASK); /* six records fit without growing */
    /* The run wrapped: the first slots hold records homed at the last. */
    CHECK(t.slots[MASK] && home_of(((rec_t *)t.slots[MASK])->id, MASK) == MASK);
    CHECK(t.slots[0] && home_of(((rec_t *)t.slots[0])->id, MASK) == MASK);
    if (gone < nids) {
      free(ocap__idtable_remove(&t, ids[gone]));
      CHECK(ocap__idtable_find(&t, ids[gone]) == NULL);
    }
    for (int i = 0; i < nids; i++)
      if (i != gone) {
        rec_t *r = ocap__idtable_find(&t, ids[i]);
        CHECK(r && r->id == ids[i]);
      }
    ocap__idtable_free(&t, free);
  }
  return fails;
}

static int freed;
static void count_free(void *rec) {
  freed++;
  free(rec);
}

static int test_clear(void) {
  int fails = 0;
  ocap__idtable_t t;
  CHECK(ocap__idtable_init(&t, 4) == 0);
  for (long long id = 1; id <= 100; id++)
    CHECK(ocap__idtable_insert(&t, rec_new(id)) == 0);
  freed = 0;
  ocap__idtable_clear(&t, count_free);
  CHECK(freed == 100);
  CHECK(t.n == 0);
  size_t pos = 0;
  CHECK(ocap__idtable_next(&t, &pos) == NULL);
  /* A cleared table is usable again. */
  CHECK(ocap__idtable_insert(&t, rec_new(5)) == 0);
  CHECK(ocap__idtable_find(&t, 5) != NULL);
  freed = 0;
  ocap__idtable_free(&t, count_free);
  CHECK(freed == 1);
  return fails;
}

int main(void) {
  int fails = 0;
  fails += test_differential();
  fails += test_wraparound();
  fails += test_clear();
  if (fails) {
    fprintf(stderr, "test_idtable: %d failure(s)\n", fails);
    return 1;
  }
  printf("test_idtable: ok\n");
  return 0;
}
