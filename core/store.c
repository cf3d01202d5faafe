/*
 * store.c -- the kernel's key-value store (see store.h for the conventions).
 *
 * The store has three layers, read from the top down:
 *
 *  1. The crank buffer: every set and delete since the last commit, in a
 *     small hash map whose slots carry a generation number, so commit and
 *     abort empty it in constant time without freeing anything. Keys and
 *     values live in a bump arena that is rewound at the same moment.
 *  2. The committed layer: a hash map from key to a cell. For the in-memory
 *     backend it is the whole truth; for LevelDB it is a write-through cache
 *     that also remembers keys known to be absent. A committed delete leaves
 *     an absent cell behind instead of freeing it, so pointers held by the
 *     ordered index stay valid and a pending delete keeps hiding the
 *     database's stale copy; absent cells are swept once they outnumber the
 *     live ones.
 *  3. LevelDB, for the LevelDB backend only. It lags the committed layer by
 *     the pending batch until the next flush.
 *
 * next_key needs the keys in order. The buffer keeps a sorted index of its
 * keys. The committed layer keeps one of the cells the layer below cannot
 * list: every cell for the in-memory backend, only the pending ones for
 * LevelDB, whose own iterator lists the rest. Both indexes are sorted
 * lazily: new keys are appended and merged in at the next next_key, so the
 * hot path (get, set, commit) never pays for ordering.
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700 /* realpath */
#define _GNU_SOURCE       /* dladdr, RTLD_NOLOAD and RTLD_NODELETE */

#include "store.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <leveldb/c.h>

/* Lengths are stored in 32 bits to keep cells and entries small. */
#define MAX_LEN UINT32_MAX
/* A standard arena block; larger values get a block of their own. */
#define ARENA_BLOCK ((size_t)64 << 10)
/* Absent cells are swept when there are more than this many of them. */
#define SWEEP_MIN 1024
/*
 * New keys a commit leaves unsorted at most: beyond it the commit sorts
 * them (see settle_order), so that the ordering work a next_key finds
 * waiting is bounded whatever the kernel wrote since the last scan.
 */
#define ORDER_AT_COMMIT 4096
/* LevelDB's block cache: small, since our own cache serves the hot path. */
#define LDB_BLOCK_CACHE ((size_t)8 << 20)
/*
 * Bytes of keys and values written in one session from which a clean close
 * has LevelDB write its log out as a table (see ocap_store_close); below it
 * the next open replays the log in less time than the table would cost.
 */
#define LDB_COMPACT_AT_CLOSE ((size_t)64 << 10)

/* An empty byte string may come as NULL, which memcmp and memcpy must not see. */
#define NONNULL(p, len) ((len) == 0 ? "" : (p))

/* ---- keys ---------------------------------------------------------------- */

/*
 * A word-at-a-time multiplicative hash with a final avalanche. Kernel keys
 * are short ("v1.c.ko12"), so reading eight bytes per step beats a
 * byte-wise FNV-1a, and the finalizer gives linear probing good low bits.
 */
static uint32_t hash_key(const char *k, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, k, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
    k += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t w = 0;
    memcpy(&w, k, n);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
  }
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return (uint32_t)h;
}

/* Byte-order comparison, a shorter key sorting before its extensions. */
static int keycmp(const char *a, size_t al, const char *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  if (c != 0)
    return c;
  return al < bl ? -1 : al > bl;
}

static int has_prefix(const char *k, size_t kl, const char *p, size_t pl) {
  return kl >= pl && memcmp(k, p, pl) == 0;
}

/* ---- sorted key index ---------------------------------------------------- */

/* One key of an ordered index; `ref` says where it came from. */
struct skey {
  const char *key;
  size_t klen;
  void *ref;
};

/*
 * An ordered index in three parts of one array: a sorted main run, a sorted
 * recent run, and an unsorted tail. Appending is O(1). sidx_sort sorts the
 * tail into the recent run, and the recent run into the main one once it
 * is longer than about the square root of main, so a next_key after every
 * new key costs O(sqrt n) moves rather than O(n), and lookups search both
 * runs. Merges move whole blocks found by binary search.
 */
struct sidx {
  struct skey *v;
  size_t nmain; /* v[0, nmain) is sorted */
  size_t nrun;  /* v[nmain, nrun) is sorted */
  size_t n;     /* v[nrun, n) is not */
  size_t cap;
  struct skey *tmp;
  size_t tmpcap;
  unsigned long long placed; /* keys sorted or merged into main, for tests */
};

static int sidx_reserve(struct sidx *x, size_t n) {
  if (n <= x->cap)
    return 0;
  size_t cap = x->cap ? x->cap : 64;
  while (cap < n)
    cap *= 2;
  struct skey *v = realloc(x->v, cap * sizeof *v);
  if (v == NULL)
    return OCAP_ENOMEM;
  x->v = v;
  x->cap = cap;
  return 0;
}

/* The caller has reserved room, so appending cannot fail. */
static void sidx_push(struct sidx *x, const char *key, size_t klen, void *ref) {
  struct skey *k = &x->v[x->n++];
  k->key = key;
  k->klen = klen;
  k->ref = ref;
}

static void sidx_clear(struct sidx *x) {
  x->nmain = x->nrun = x->n = 0;
}

static int skey_cmp(const void *a, const void *b) {
  const struct skey *x = a, *y = b;
  return keycmp(x->key, x->klen, y->key, y->klen);
}

/* The first position in the sorted v[lo, hi) whose key is > k (>= k when
 * inclusive is set). */
static size_t seek_run(const struct skey *v, size_t lo, size_t hi, const char *k, size_t kl,
                       int inclusive) {
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = keycmp(v[mid].key, v[mid].klen, k, kl);
    if (c < 0 || (c == 0 && !inclusive))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/*
 * Merges the t sorted keys of src into the sorted v[base, base + na), which
 * has room for them after it. Working from the back, each key of src finds
 * its place by binary search and the keys above it move up in one block.
 */
static void merge_back(struct skey *v, size_t base, size_t na, const struct skey *src, size_t t) {
  size_t end = base + na, o = base + na + t;
  while (t > 0) {
    const struct skey *k = &src[--t];
    size_t p = seek_run(v, base, end, k->key, k->klen, 0);
    o -= end - p;
    memmove(&v[o], &v[p], (end - p) * sizeof *v);
    end = p;
    v[--o] = *k;
  }
}

/* Copies v[from, from + t) aside and merges it into the sorted v[base, from). */
static int merge_part(struct sidx *x, size_t base, size_t from, size_t t) {
  if (t > x->tmpcap) {
    struct skey *tmp = realloc(x->tmp, t * sizeof *tmp);
    if (tmp == NULL)
      return OCAP_ENOMEM;
    x->tmp = tmp;
    x->tmpcap = t;
  }
  memcpy(x->tmp, &x->v[from], t * sizeof *x->tmp);
  merge_back(x->v, base, from - base, x->tmp, t);
  return 0;
}

static int sidx_sort(struct sidx *x) {
  size_t t = x->n - x->nrun;
  if (t > 0) {
    qsort(&x->v[x->nrun], t, sizeof *x->v, skey_cmp);
    x->placed += t;
    if (x->nrun > x->nmain && merge_part(x, x->nmain, x->nrun, t) != 0)
      return OCAP_ENOMEM;
    x->nrun = x->n;
  }
  size_t run = x->nrun - x->nmain;
  if (run > 256 && run * run > x->nmain) {
    if (x->nmain > 0 && merge_part(x, 0, x->nmain, run) != 0)
      return OCAP_ENOMEM;
    x->placed += run;
    x->nmain = x->nrun;
  }
  return 0;
}

/* A position in both runs of a sorted index (sidx_sort has emptied the tail). */
struct scur {
  size_t i, j;
};

static void scur_seek(struct scur *c, const struct sidx *x, const char *k, size_t kl,
                      int inclusive) {
  c->i = seek_run(x->v, 0, x->nmain, k, kl, inclusive);
  c->j = seek_run(x->v, x->nmain, x->n, k, kl, inclusive);
}

/* The smaller key under the cursor, or NULL at the end. */
static const struct skey *scur_peek(const struct scur *c, const struct sidx *x) {
  const struct skey *a = c->i < x->nmain ? &x->v[c->i] : NULL;
  const struct skey *b = c->j < x->n ? &x->v[c->j] : NULL;
  if (a == NULL || b == NULL)
    return a != NULL ? a : b;
  return skey_cmp(a, b) < 0 ? a : b;
}

/* Steps past k, which scur_peek returned. */
static void scur_next(struct scur *c, const struct sidx *x, const struct skey *k) {
  if (c->i < x->nmain && k == &x->v[c->i])
    c->i++;
  else
    c->j++;
}

static void sidx_free(struct sidx *x) {
  free(x->v);
  free(x->tmp);
  memset(x, 0, sizeof *x);
}

/* ---- committed layer ----------------------------------------------------- */

/*
 * A committed key. The cell itself never moves, so the ordered index can
 * point at it. A small value lives inline after the key (one malloc per
 * key); a value that outgrows that room moves to a heap buffer of its own.
 */
struct cell {
  char *val;
  uint32_t klen, vlen, vcap;
  uint8_t absent;  /* known not to exist (a committed delete or a miss) */
  uint8_t pending; /* committed but not yet flushed to LevelDB */
  uint8_t indb;    /* LevelDB may hold the key (so a delete must be written) */
  uint8_t heap;    /* val is its own allocation rather than inline */
  char key[];
};

struct cslot {
  uint32_t hash;
  struct cell *cell; /* NULL marks an empty slot */
};

/* Open addressing with linear probing; nothing is removed except by rebuild. */
struct cmap {
  struct cslot *slots;
  size_t mask, n;
};

static size_t round16(size_t n) {
  return (n + 15) & ~(size_t)15;
}

/* Makes an absent cell with `room` bytes of inline value space. */
static struct cell *cell_new(const char *key, size_t klen, size_t room) {
  room = round16(room);
  struct cell *c = malloc(sizeof *c + klen + room);
  if (c == NULL)
    return NULL;
  memcpy(c->key, key, klen);
  c->klen = (uint32_t)klen;
  c->val = c->key + klen;
  c->vcap = (uint32_t)room;
  c->vlen = 0;
  c->absent = 1;
  c->pending = 0;
  c->indb = 1; /* unknown: assume LevelDB may have it */
  c->heap = 0;
  return c;
}

static void cell_free(struct cell *c) {
  if (c->heap)
    free(c->val);
  free(c);
}

/* Makes room for a value of vlen bytes, keeping the current one intact. */
static int cell_reserve(struct cell *c, size_t vlen) {
  if (vlen <= c->vcap)
    return 0;
  size_t cap = round16(vlen);
  if (cap > MAX_LEN)
    cap = vlen;
  char *v = c->heap ? realloc(c->val, cap) : malloc(cap);
  if (v == NULL)
    return OCAP_ENOMEM;
  if (!c->heap && c->vlen > 0)
    memcpy(v, c->val, c->vlen);
  c->val = v;
  c->vcap = (uint32_t)cap;
  c->heap = 1;
  return 0;
}

static struct cell *cmap_find(const struct cmap *m, uint32_t h, const char *key, size_t klen) {
  if (m->slots == NULL)
    return NULL;
  for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
    struct cslot *sl = &m->slots[i];
    if (sl->cell == NULL)
      return NULL;
    if (sl->hash == h && sl->cell->klen == klen && memcmp(sl->cell->key, key, klen) == 0)
      return sl->cell;
  }
}

/* Inserts a cell known not to be in the map; the caller has made room. */
static void cmap_put(struct cmap *m, uint32_t h, struct cell *c) {
  size_t i = h & m->mask;
  while (m->slots[i].cell != NULL)
    i = (i + 1) & m->mask;
  m->slots[i].hash = h;
  m->slots[i].cell = c;
  m->n++;
}

/* Rehashes into a table of ncap slots (a power of two), dropping absent
 * cells when `drop_absent` is set; the dropped cells are freed. */
static int cmap_rebuild(struct cmap *m, size_t ncap, int drop_absent) {
  struct cslot *ns = calloc(ncap, sizeof *ns);
  if (ns == NULL)
    return OCAP_ENOMEM;
  struct cmap nm = {ns, ncap - 1, 0};
  if (m->slots != NULL) {
    for (size_t i = 0; i <= m->mask; i++) {
      struct cell *c = m->slots[i].cell;
      if (c == NULL)
        continue;
      if (drop_absent && c->absent)
        cell_free(c);
      else
        cmap_put(&nm, m->slots[i].hash, c);
    }
  }
  free(m->slots);
  *m = nm;
  return 0;
}

/* Ensures `extra` more cells fit under a load factor of 3/4. */
static int cmap_reserve(struct cmap *m, size_t extra) {
  size_t need = m->n + extra;
  size_t cap = m->slots ? m->mask + 1 : 0;
  if (need * 4 < cap * 3)
    return 0;
  size_t ncap = cap ? cap : 64;
  while (need * 4 >= ncap * 3)
    ncap *= 2;
  return cmap_rebuild(m, ncap, 0);
}

static void cmap_free(struct cmap *m) {
  if (m->slots != NULL) {
    for (size_t i = 0; i <= m->mask; i++)
      if (m->slots[i].cell != NULL)
        cell_free(m->slots[i].cell);
  }
  free(m->slots);
  memset(m, 0, sizeof *m);
}

/* ---- crank buffer -------------------------------------------------------- */

struct ablock {
  struct ablock *next;
  size_t cap, used;
  char data[];
};

/* A bump allocator for the buffer's keys and values, rewound on commit. */
struct arena {
  struct ablock *head;
};

static char *arena_alloc(struct arena *a, size_t n) {
  struct ablock *b = a->head;
  if (b != NULL && b->cap - b->used >= n) {
    char *p = b->data + b->used;
    b->used += n;
    return p;
  }
  size_t cap = n > ARENA_BLOCK / 4 ? n : ARENA_BLOCK;
  struct ablock *nb = malloc(sizeof *nb + cap);
  if (nb == NULL)
    return NULL;
  nb->cap = cap;
  nb->used = n;
  /* An oversized block goes behind the head so the head's room stays usable. */
  if (cap != ARENA_BLOCK && b != NULL) {
    nb->next = b->next;
    b->next = nb;
  } else {
    nb->next = b;
    a->head = nb;
  }
  return nb->data;
}

/* Keeps one standard block for the next crank and frees the rest. */
static void arena_reset(struct arena *a) {
  struct ablock *keep = NULL, *b = a->head;
  while (b != NULL) {
    struct ablock *next = b->next;
    if (keep == NULL && b->cap == ARENA_BLOCK) {
      keep = b;
    } else {
      free(b);
    }
    b = next;
  }
  if (keep != NULL) {
    keep->used = 0;
    keep->next = NULL;
  }
  a->head = keep;
}

static void arena_free(struct arena *a) {
  struct ablock *b = a->head;
  while (b != NULL) {
    struct ablock *next = b->next;
    free(b);
    b = next;
  }
  a->head = NULL;
}

/* One key touched in this crank. */
struct bentry {
  const char *key; /* in the arena */
  char *val;       /* in the arena; vcap bytes of room for reuse */
  uint32_t klen, vlen, vcap, hash;
  uint8_t deleted;   /* the crank deleted the key */
  struct cell *cell; /* set by commit_prepare for commit_apply */
};

/* A slot is occupied only when its gen equals the buffer's current gen. */
struct bslot {
  uint32_t hash, gen, idx;
};

struct buffer {
  struct bslot *slots;
  size_t mask;
  uint32_t gen;
  struct bentry *e;
  size_t n, cap;
  struct arena arena;
  struct sidx order; /* refs are entry indexes */
  long delta;        /* change in the key count this crank */
};

static struct bentry *buf_find(const struct buffer *b, uint32_t h, const char *key, size_t klen) {
  for (size_t i = h & b->mask;; i = (i + 1) & b->mask) {
    const struct bslot *sl = &b->slots[i];
    if (sl->gen != b->gen)
      return NULL;
    if (sl->hash == h) {
      struct bentry *e = &b->e[sl->idx];
      if (e->klen == klen && memcmp(e->key, key, klen) == 0)
        return e;
    }
  }
}

static void buf_slot_put(struct bslot *slots, size_t mask, uint32_t gen, uint32_t h, uint32_t idx) {
  size_t i = h & mask;
  while (slots[i].gen == gen)
    i = (i + 1) & mask;
  slots[i].hash = h;
  slots[i].gen = gen;
  slots[i].idx = idx;
}

/* Makes room for one more entry in the map, the entry array and the index. */
static int buf_reserve(struct buffer *b) {
  if ((b->n + 1) * 2 > b->mask + 1) {
    size_t ncap = (b->mask + 1) * 2;
    struct bslot *ns = calloc(ncap, sizeof *ns);
    if (ns == NULL)
      return OCAP_ENOMEM;
    for (size_t i = 0; i < b->n; i++)
      buf_slot_put(ns, ncap - 1, 1, b->e[i].hash, (uint32_t)i);
    free(b->slots);
    b->slots = ns;
    b->mask = ncap - 1;
    b->gen = 1;
  }
  if (b->n == b->cap) {
    size_t ncap = b->cap * 2;
    struct bentry *ne = realloc(b->e, ncap * sizeof *ne);
    if (ne == NULL)
      return OCAP_ENOMEM;
    b->e = ne;
    b->cap = ncap;
  }
  return sidx_reserve(&b->order, b->n + 1);
}

static void buf_reset(struct buffer *b) {
  b->n = 0;
  b->delta = 0;
  sidx_clear(&b->order);
  arena_reset(&b->arena);
  if (++b->gen == 0) {
    /* After 2^32 cranks the stamps wrap, so clear them for real once. */
    memset(b->slots, 0, (b->mask + 1) * sizeof *b->slots);
    b->gen = 1;
  }
}

static int buf_init(struct buffer *b) {
  memset(b, 0, sizeof *b);
  b->slots = calloc(64, sizeof *b->slots);
  b->e = malloc(32 * sizeof *b->e);
  if (b->slots == NULL || b->e == NULL)
    return OCAP_ENOMEM;
  b->mask = 63;
  b->cap = 32;
  b->gen = 1;
  return 0;
}

static void buf_free(struct buffer *b) {
  free(b->slots);
  free(b->e);
  arena_free(&b->arena);
  sidx_free(&b->order);
}

/* ---- the store ----------------------------------------------------------- */

struct ocap_store {
  struct buffer buf;
  struct buffer direct; /* ocap_store_commit_direct's own buffer, made at first use */
  int has_direct;
  struct cmap cache;
  size_t nabsent;      /* absent cells in the cache */
  size_t count;        /* committed keys, once counted */
  int uncounted;       /* LevelDB's keys not counted yet: see ocap_store_count */
  struct sidx ordered; /* see the top of the file; refs are cells */

  /* LevelDB backend only; db is NULL for the in-memory one. */
  leveldb_t *db;
  leveldb_options_t *options;
  leveldb_cache_t *block_cache;
  leveldb_filterpolicy_t *filter;
  leveldb_readoptions_t *ropts;
  leveldb_writeoptions_t *wopts;
  leveldb_writebatch_t *batch; /* the pending batch under FSYNC */
  leveldb_iterator_t *it;      /* reused by next_key until the next write */
  int durability;
  size_t npending; /* commits in the pending batch */
  size_t logged;   /* bytes of keys and values written to LevelDB since open */

  char *dir;
  char *errmsg;
  unsigned long long scan_steps;  /* keys next_key examined, for tests */
  unsigned long long order_steps; /* keys next_key sorted or merged, for tests */
  unsigned long long written;     /* bytes passed to set and delete, for tests */
  void (*trace)(void *ud, const char *key, size_t klen, int deleted); /* for tests */
  void *trace_ud;
  unsigned fault_ops; /* testing hook: which calls count down */
  long fault_in;      /* the fault_in-th of them fails (0: none) */
  int fault_code;
  char *keybuf; /* next_key's result */
  size_t keycap;
  ocap_store_hooks_t hooks; /* all NULL when none is set */
};

static char *vformat(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return NULL;
  char *m = malloc((size_t)n + 1);
  if (m != NULL)
    vsnprintf(m, (size_t)n + 1, fmt, ap);
  return m;
}

static char *format(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *m = vformat(fmt, ap);
  va_end(ap);
  return m;
}

/* Records the detailed message for ocap_store_errmsg and returns code. */
static int fail(ocap_store_t *s, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *m = vformat(fmt, ap);
  va_end(ap);
  free(s->errmsg);
  s->errmsg = m;
  return code;
}

/* Counts down the testing hook's armed fault; returns its code when this
 * call is the one to fail, else 0. */
static int injected(ocap_store_t *s, unsigned op) {
  if (s->fault_in <= 0 || !(s->fault_ops & op) || --s->fault_in > 0)
    return 0;
  return fail(s, s->fault_code, "injected fault");
}

long ocap_store_inject_fault(ocap_store_t *s, unsigned ops, long n, int code) {
  long left = s->fault_in;
  s->fault_ops = ops;
  s->fault_in = n > 0 ? n : 0;
  s->fault_code = code;
  return left;
}

unsigned long long ocap_store_scan_steps(const ocap_store_t *s) {
  return s->scan_steps;
}

unsigned long long ocap_store_order_steps(const ocap_store_t *s) {
  return s->order_steps;
}

unsigned long long ocap_store_bytes_written(const ocap_store_t *s) {
  return s->written;
}

void ocap_store_trace_writes(ocap_store_t *s,
                             void (*fn)(void *ud, const char *key, size_t klen, int deleted),
                             void *ud) {
  s->trace = fn;
  s->trace_ud = ud;
}

/*
 * LevelDB reports errors only as text (Status::ToString), whose first word
 * names the kind: "Corruption: ..." for corruption, "IO error: ..." and
 * others for the rest.
 */
static int ldb_code(const char *lerr) {
  return strncmp(lerr, "Corruption", 10) == 0 ? OCAP_ECORRUPT : OCAP_EIO;
}

static int ldb_fail(ocap_store_t *s, const char *what, char *lerr) {
  int code = ldb_code(lerr);
  fail(s, code, "database %s: %s: %s", s->dir, what, lerr);
  leveldb_free(lerr);
  return code;
}

/* Drops next_key's iterator, which must not outlive a write to LevelDB. */
static void drop_iterator(ocap_store_t *s) {
  if (s->it != NULL) {
    leveldb_iter_destroy(s->it);
    s->it = NULL;
  }
}

/*
 * Removes the keys whose cell is absent (refs are cells), keeping each of
 * the three parts in its order, so that no key needs sorting again.
 */
static void sidx_drop_absent(struct sidx *x) {
  size_t w = 0, nmain = 0, nrun = 0;
  for (size_t i = 0; i < x->n; i++) {
    if (i == x->nmain)
      nmain = w;
    if (i == x->nrun)
      nrun = w;
    if (!((const struct cell *)x->v[i].ref)->absent)
      x->v[w++] = x->v[i];
  }
  x->nmain = x->nmain == x->n ? w : nmain;
  x->nrun = x->nrun == x->n ? w : nrun;
  x->n = w;
}

/*
 * Frees absent cells once they outnumber live ones. With LevelDB it is only
 * called when nothing is pending (after a flush or a NONE commit), because
 * a pending absent cell is what hides the database's stale copy of a
 * deleted key; the guard keeps that true should a caller change.
 */
static void maybe_sweep(ocap_store_t *s) {
  if (s->nabsent <= SWEEP_MIN || s->nabsent * 2 <= s->cache.n)
    return;
  if (s->db != NULL && s->ordered.n > 0)
    return;
  size_t live = s->cache.n - s->nabsent, ncap = 64;
  while (live * 4 >= ncap * 3)
    ncap *= 2;
  /*
   * The ordered index must not point at the cells about to be freed. It
   * keeps its order, rather than listing the survivors again unsorted:
   * sorting millions of keys would fall to the next next_key, which may run
   * in a vat's delivery and on its meter (the kernel's housekeeping, not
   * the vat's work).
   */
  if (s->db == NULL)
    sidx_drop_absent(&s->ordered);
  if (cmap_rebuild(&s->cache, ncap, 1) != 0) {
    /* Sweeping is an optimization; without memory it can wait. The index
     * lists the absent cells again, since a set may make them live. */
    if (s->db == NULL) {
      sidx_clear(&s->ordered);
      for (size_t i = 0; i <= s->cache.mask; i++) {
        struct cell *c = s->cache.slots[i].cell;
        if (c != NULL)
          sidx_push(&s->ordered, c->key, c->klen, c);
      }
    }
    return;
  }
  s->nabsent = 0;
}

/*
 * Sorts the ordered index's new keys once a commit has left more than
 * ORDER_AT_COMMIT of them. The kernel commits outside any vat's meter, and
 * the sorting is the same work next_key would otherwise do in one go at
 * the next scan, perhaps in a vat's delivery and billed to it. Without
 * memory it waits for next_key, which reports the failure.
 */
static void settle_order(ocap_store_t *s) {
  if (s->ordered.n - s->ordered.nrun > ORDER_AT_COMMIT)
    (void)sidx_sort(&s->ordered);
}

/*
 * Finds the committed cell for a key, reading LevelDB on a cache miss and
 * caching what it finds, absence included. *out is NULL only for the
 * in-memory backend when the key does not exist.
 */
static int lower_cell(ocap_store_t *s, uint32_t h, const char *key, size_t klen,
                      struct cell **out) {
  struct cell *c = cmap_find(&s->cache, h, key, klen);
  if (c != NULL || s->db == NULL) {
    *out = c;
    return 0;
  }
  if (cmap_reserve(&s->cache, 1) != 0)
    return OCAP_ENOMEM;
  char *lerr = NULL;
  size_t vlen = 0;
  char *v = leveldb_get(s->db, s->ropts, key, klen, &vlen, &lerr);
  if (lerr != NULL)
    return ldb_fail(s, "read failed", lerr);
  if (v != NULL && vlen > MAX_LEN) {
    leveldb_free(v);
    return fail(s, OCAP_EIO, "database %s: a value is larger than 4 GB", s->dir);
  }
  c = cell_new(key, klen, v != NULL ? vlen : 0);
  if (c == NULL) {
    leveldb_free(v);
    return OCAP_ENOMEM;
  }
  if (v != NULL) {
    if (vlen > 0)
      memcpy(c->val, v, vlen);
    c->vlen = (uint32_t)vlen;
    c->absent = 0;
    leveldb_free(v);
  } else {
    c->indb = 0; /* LevelDB said so */
    s->nabsent++;
  }
  cmap_put(&s->cache, h, c);
  *out = c;
  return 0;
}

static int lower_exists(ocap_store_t *s, uint32_t h, const char *key, size_t klen, int *exists) {
  struct cell *c;
  int rc = lower_cell(s, h, key, klen, &c);
  if (rc == 0)
    *exists = c != NULL && !c->absent;
  return rc;
}

/* ---- opening and closing ------------------------------------------------- */

static ocap_store_t *store_new(void) {
  ocap_store_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  if (buf_init(&s->buf) != 0 || cmap_reserve(&s->cache, 1) != 0) {
    buf_free(&s->buf);
    cmap_free(&s->cache);
    free(s);
    return NULL;
  }
  return s;
}

int ocap_store_open_memory(ocap_store_t **out) {
  *out = store_new();
  return *out != NULL ? 0 : OCAP_ENOMEM;
}

/* How the directory looks before LevelDB is allowed near it. */
enum dir_state {
  DIR_MISSING,
  DIR_EMPTY,
  DIR_DATABASE,
  DIR_FOREIGN,
  DIR_NOTDIR,
  DIR_ERROR,
  DIR_BADFILE
};

/* CURRENT names the manifest in one short line; LevelDB reads it whole. */
#define CURRENT_MAX 4096

static const char *file_kind(mode_t m) {
  return S_ISLNK(m)    ? "a symbolic link"
         : S_ISCHR(m)  ? "a character device"
         : S_ISBLK(m)  ? "a block device"
         : S_ISFIFO(m) ? "a FIFO"
         : S_ISSOCK(m) ? "a socket"
         : S_ISDIR(m)  ? "a directory"
                       : "not a regular file";
}

/*
 * Checks, before LevelDB touches them, that the files of a database
 * directory are regular files: LevelDB reads CURRENT whole and reads the
 * manifest and logs to their end, so a symlink to a device (/dev/zero)
 * would hang or exhaust memory, and a FIFO would block, before it reported
 * anything. lstat does not follow links, so a link is refused whatever it
 * points to. Returns DIR_DATABASE, or DIR_BADFILE with *bad (malloc'd)
 * saying which file is wrong, or DIR_ERROR with *err.
 */
static enum dir_state check_files(const char *dir, int *err, char **bad) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    *err = errno;
    return DIR_ERROR;
  }
  enum dir_state state = DIR_DATABASE;
  struct dirent *de;
  while (state == DIR_DATABASE && (de = readdir(d)) != NULL) {
    const char *n = de->d_name;
    struct stat st;
    if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
      continue;
    if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      *err = errno;
      state = DIR_ERROR;
    } else if (!S_ISREG(st.st_mode)) {
      *bad = format("%s is %s, not a regular file", n, file_kind(st.st_mode));
      state = DIR_BADFILE;
    } else if (strcmp(n, "CURRENT") == 0 && st.st_size > CURRENT_MAX) {
      *bad = format("CURRENT is %lld bytes long, more than %d", (long long)st.st_size, CURRENT_MAX);
      state = DIR_BADFILE;
    }
  }
  closedir(d);
  return state;
}

/*
 * A directory holding only what LevelDB writes before CURRENT when it
 * creates a database (LOCK, LOG, LOG.old, the first manifest MANIFEST-000001
 * and the temporary 000001.dbtmp that is renamed to CURRENT) is a creation
 * that was interrupted, by a crash say, before any data could be written,
 * so it counts as empty: LevelDB rewrites those files when it creates the
 * database again.
 */
static enum dir_state inspect_dir(const char *dir, int *err, char **bad) {
  struct stat st;
  if (stat(dir, &st) != 0) {
    *err = errno;
    return errno == ENOENT ? DIR_MISSING : DIR_ERROR;
  }
  if (!S_ISDIR(st.st_mode))
    return DIR_NOTDIR;
  DIR *d = opendir(dir);
  if (d == NULL) {
    *err = errno;
    return DIR_ERROR;
  }
  enum dir_state state = DIR_EMPTY;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    const char *n = de->d_name;
    if (strcmp(n, "CURRENT") == 0) {
      state = DIR_DATABASE;
      break;
    }
    if (strcmp(n, ".") != 0 && strcmp(n, "..") != 0 && strcmp(n, "LOCK") != 0 &&
        strcmp(n, "LOG") != 0 && strcmp(n, "LOG.old") != 0 && strcmp(n, "MANIFEST-000001") != 0 &&
        strcmp(n, "000001.dbtmp") != 0)
      state = DIR_FOREIGN;
  }
  closedir(d);
  return state == DIR_DATABASE ? check_files(dir, err, bad) : state;
}

/*
 * Turns LevelDB's open error into a code and a message naming the directory.
 * A failed lock reads "IO error: lock <dir>/LOCK: <reason>", the reason
 * being "already held by process" when this process has it open and the
 * fcntl error (EAGAIN) when another process does.
 */
static int open_error(const char *dir, const char *lerr, char **msg) {
  int code;
  if (strncmp(lerr, "IO error: lock ", 15) == 0) {
    code = OCAP_ELOCKED;
    if (strstr(lerr, "already held by process") != NULL)
      *msg = format("database %s is already open in this process", dir);
    else
      *msg = format("database %s is in use by another process", dir);
  } else if (ldb_code(lerr) == OCAP_ECORRUPT) {
    code = OCAP_ECORRUPT;
    *msg = format("database %s is corrupt (%s)", dir, lerr);
  } else {
    code = OCAP_EIO;
    *msg = format("cannot open database %s: %s", dir, lerr);
  }
  return code;
}

static int count_keys(ocap_store_t *s) {
  leveldb_readoptions_t *ro = leveldb_readoptions_create();
  leveldb_readoptions_set_fill_cache(ro, 0);
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, ro);
  size_t n = 0;
  for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it))
    n++;
  char *lerr = NULL;
  leveldb_iter_get_error(it, &lerr);
  leveldb_iter_destroy(it);
  leveldb_readoptions_destroy(ro);
  if (lerr != NULL)
    return ldb_fail(s, "counting keys failed", lerr);
  s->count = n;
  return 0;
}

/*
 * LevelDB compacts on a thread it starts at the first compaction and never
 * stops: between compactions it waits on a condition variable in the
 * library's static storage, for the life of the process. When Lua closes a
 * state it unloads the C modules the state loaded, and with ocap's module
 * goes LevelDB if nothing else holds it: the waiting thread's condition
 * variable is then unmapped, and the next signal that thread takes aborts
 * the process ("The futex facility returned an unexpected error code").
 * So the library that holds LevelDB (a shared libleveldb, or the module
 * itself when it is linked in statically) is made undeletable before the
 * first database is opened.
 */
static void pin_leveldb(void) {
  union {
    leveldb_t *(*fn)(const leveldb_options_t *, const char *, char **);
    void *p;
  } open_fn = {leveldb_open};
  Dl_info info;
  if (dladdr(open_fn.p, &info) != 0 && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
}

static pthread_once_t pin_leveldb_once = PTHREAD_ONCE_INIT;

int ocap_store_open_leveldb(const char *dir, int durability, ocap_store_t **out, char **errmsg) {
  ocap_store_t *s = NULL;
  enum dir_state state;
  char *msg = NULL, *lerr = NULL, *canon = NULL, *bad = NULL;
  int rc = 0, err = 0;
  *out = NULL;
  if (errmsg != NULL)
    *errmsg = NULL;
  if (durability != OCAP_DURABILITY_NONE && durability != OCAP_DURABILITY_FSYNC) {
    msg = format("invalid durability %d for database %s", durability, dir);
    rc = OCAP_EINVAL;
    goto done;
  }
  state = inspect_dir(dir, &err, &bad);
  switch (state) {
  case DIR_BADFILE:
    msg = format("database %s is corrupt (%s)", dir, bad ? bad : "a file is not a regular file");
    rc = OCAP_ECORRUPT;
    goto done;
  case DIR_NOTDIR:
    msg = format("%s is not a directory, so not an ocap database", dir);
    rc = OCAP_ENOTDB;
    goto done;
  case DIR_FOREIGN:
    msg = format("%s is not empty and is not an ocap database (it has no CURRENT file)", dir);
    rc = OCAP_ENOTDB;
    goto done;
  case DIR_ERROR:
    msg = format("cannot open database %s: %s", dir, strerror(err));
    rc = OCAP_EIO;
    goto done;
  default:
    break;
  }
  /*
   * LevelDB refuses a second open of a database by this process only when
   * the path is spelled the same way: its table of held locks compares
   * names, and fcntl locks never conflict within one process. So it gets
   * the canonical path, on which /x/db, /x/db/, ./db and a symlink to it
   * all meet. realpath needs the directory to exist, so a missing one is
   * created here rather than by LevelDB.
   */
  if (state == DIR_MISSING && mkdir(dir, 0755) != 0 && errno != EEXIST) {
    err = errno;
    msg = format("cannot open database %s: %s", dir, strerror(err));
    rc = OCAP_EIO;
    goto done;
  }
  canon = realpath(dir, NULL);
  if (canon == NULL) {
    err = errno;
    msg = format("cannot open database %s: %s", dir, strerror(err));
    rc = err == ENOMEM ? OCAP_ENOMEM : OCAP_EIO;
    goto done;
  }

  s = store_new();
  if (s == NULL || (s->dir = strdup(dir)) == NULL) {
    ocap_store_close(s);
    rc = OCAP_ENOMEM;
    goto done;
  }
  s->durability = durability;
  s->options = leveldb_options_create();
  s->block_cache = leveldb_cache_create_lru(LDB_BLOCK_CACHE);
  s->filter = leveldb_filterpolicy_create_bloom(10);
  s->ropts = leveldb_readoptions_create();
  s->wopts = leveldb_writeoptions_create();
  s->batch = leveldb_writebatch_create();
  leveldb_options_set_create_if_missing(s->options, state != DIR_DATABASE);
  leveldb_options_set_paranoid_checks(s->options, 1);
  leveldb_options_set_cache(s->options, s->block_cache);
  /* Bloom filters make the existence check of a brand-new key cheap. */
  leveldb_options_set_filter_policy(s->options, s->filter);
  pthread_once(&pin_leveldb_once, pin_leveldb);
  s->db = leveldb_open(s->options, canon, &lerr);
  if (lerr != NULL) {
    rc = open_error(dir, lerr, &msg);
    leveldb_free(lerr);
    s->db = NULL;
    ocap_store_close(s);
    goto done;
  }
  /*
   * Counting the keys reads the whole database, which at a restart costs
   * more than anything else the kernel does per idle vat: it waits for the
   * first ocap_store_count, which only diagnostics call.
   */
  s->uncounted = 1;
  *out = s;
done:
  free(canon);
  free(bad);
  if (errmsg != NULL)
    *errmsg = msg;
  else
    free(msg);
  return rc;
}

void ocap_store_close(ocap_store_t *s) {
  if (s == NULL)
    return;
  if (s->db != NULL) {
    ocap_store_flush(s);
    drop_iterator(s);
    /*
     * LevelDB keeps what was written since it opened in its write-ahead
     * log, and the next open replays that log record by record into a
     * memory table and writes it out as a sorted table: for a kernel that
     * launched many vats the replay was nearly all of a restart (about
     * 75,000 instructions per idle vat, bench/results.md). A session that
     * wrote that much has the table written now instead, by compacting an
     * empty key range, which writes out only the memory table. A crash
     * skips this and the log is replayed as before: nothing depends on it.
     */
    if (s->logged >= LDB_COMPACT_AT_CLOSE)
      leveldb_compact_range(s->db, "", 0, "", 0);
    leveldb_close(s->db);
  }
  if (s->batch != NULL)
    leveldb_writebatch_destroy(s->batch);
  if (s->wopts != NULL)
    leveldb_writeoptions_destroy(s->wopts);
  if (s->ropts != NULL)
    leveldb_readoptions_destroy(s->ropts);
  if (s->options != NULL)
    leveldb_options_destroy(s->options);
  if (s->filter != NULL)
    leveldb_filterpolicy_destroy(s->filter);
  if (s->block_cache != NULL)
    leveldb_cache_destroy(s->block_cache);
  buf_free(&s->buf);
  if (s->has_direct)
    buf_free(&s->direct);
  cmap_free(&s->cache);
  sidx_free(&s->ordered);
  free(s->dir);
  free(s->errmsg);
  free(s->keybuf);
  free(s);
}

const char *ocap_store_errmsg(const ocap_store_t *s) {
  return s != NULL && s->errmsg != NULL ? s->errmsg : "";
}

/* ---- reads and writes ---------------------------------------------------- */

int ocap_store_get(ocap_store_t *s, const char *key, size_t klen, const char **val, size_t *vlen) {
  int rc = injected(s, OCAP_FAULT_GET);
  if (rc != 0)
    return rc;
  key = NONNULL(key, klen);
  uint32_t h = hash_key(key, klen);
  struct bentry *e = buf_find(&s->buf, h, key, klen);
  if (e != NULL) {
    if (e->deleted)
      return 0;
    *val = e->val;
    *vlen = e->vlen;
    return 1;
  }
  struct cell *c;
  rc = lower_cell(s, h, key, klen, &c);
  if (rc != 0)
    return rc;
  if (c == NULL || c->absent)
    return 0;
  *val = c->val;
  *vlen = c->vlen;
  return 1;
}

/*
 * Adds a buffer entry for a key the crank has not touched yet. Its key and
 * value share one arena allocation.
 */
static int buf_add(ocap_store_t *s, uint32_t h, const char *key, size_t klen, const char *val,
                   size_t vlen, int deleted, int existed) {
  struct buffer *b = &s->buf;
  if (buf_reserve(b) != 0)
    return OCAP_ENOMEM;
  char *p = arena_alloc(&b->arena, klen + vlen);
  if (p == NULL)
    return OCAP_ENOMEM;
  memcpy(p, key, klen);
  if (vlen > 0)
    memcpy(p + klen, val, vlen);
  uint32_t idx = (uint32_t)b->n++;
  struct bentry *e = &b->e[idx];
  e->key = p;
  e->val = p + klen;
  e->klen = (uint32_t)klen;
  e->vlen = e->vcap = (uint32_t)vlen;
  e->hash = h;
  e->deleted = (uint8_t)deleted;
  e->cell = NULL;
  buf_slot_put(b->slots, b->mask, b->gen, h, idx);
  sidx_push(&b->order, e->key, klen, (void *)(uintptr_t)idx);
  b->delta += (deleted ? 0 : 1) - existed;
  return 0;
}

int ocap_store_set(ocap_store_t *s, const char *key, size_t klen, const char *val, size_t vlen) {
  if (klen > MAX_LEN || vlen > MAX_LEN)
    return fail(s, OCAP_EINVAL, "key or value longer than 4 GB");
  int rc = injected(s, OCAP_FAULT_SET);
  if (rc != 0)
    return rc;
  s->written += klen + vlen;
  if (s->trace != NULL)
    s->trace(s->trace_ud, key, klen, 0);
  key = NONNULL(key, klen);
  val = NONNULL(val, vlen);
  uint32_t h = hash_key(key, klen);
  struct bentry *e = buf_find(&s->buf, h, key, klen);
  if (e != NULL) {
    if (vlen > e->vcap) {
      char *p = arena_alloc(&s->buf.arena, vlen);
      if (p == NULL)
        return OCAP_ENOMEM;
      e->val = p;
      e->vcap = (uint32_t)vlen;
    }
    /* val may be a pointer get returned into this very entry. */
    if (vlen > 0)
      memmove(e->val, val, vlen);
    e->vlen = (uint32_t)vlen;
    if (e->deleted) {
      e->deleted = 0;
      s->buf.delta++;
    }
    return 0;
  }
  int existed;
  rc = lower_exists(s, h, key, klen, &existed);
  if (rc != 0)
    return rc;
  return buf_add(s, h, key, klen, val, vlen, 0, existed);
}

int ocap_store_delete(ocap_store_t *s, const char *key, size_t klen) {
  if (klen > MAX_LEN)
    return fail(s, OCAP_EINVAL, "key longer than 4 GB");
  int rc = injected(s, OCAP_FAULT_DELETE);
  if (rc != 0)
    return rc;
  s->written += klen;
  if (s->trace != NULL)
    s->trace(s->trace_ud, key, klen, 1);
  key = NONNULL(key, klen);
  uint32_t h = hash_key(key, klen);
  struct bentry *e = buf_find(&s->buf, h, key, klen);
  if (e != NULL) {
    if (!e->deleted) {
      e->deleted = 1;
      s->buf.delta--;
    }
    return 0;
  }
  int existed;
  rc = lower_exists(s, h, key, klen, &existed);
  if (rc != 0)
    return rc;
  /* Deleting a key that does not exist changes nothing worth recording. */
  if (!existed)
    return 0;
  return buf_add(s, h, key, klen, NULL, 0, 1, existed);
}

/*
 * Counts LevelDB's keys and adds the committed cranks not yet flushed: each
 * pending key that LevelDB lacks and the cache holds counts one more, each
 * that LevelDB holds and the cache deleted one less. Returns 0 or an error.
 */
static int count_committed(ocap_store_t *s) {
  int rc = count_keys(s);
  if (rc != 0)
    return rc;
  long n = (long)s->count;
  for (size_t i = 0; i < s->ordered.n; i++) {
    struct cell *c = s->ordered.v[i].ref;
    char *lerr = NULL;
    size_t vl = 0;
    char *v = leveldb_get(s->db, s->ropts, c->key, c->klen, &vl, &lerr);
    if (lerr != NULL)
      return ldb_fail(s, "counting keys failed", lerr);
    int indb = v != NULL;
    leveldb_free(v);
    n += (c->absent ? 0 : 1) - indb;
  }
  s->count = (size_t)n;
  return 0;
}

size_t ocap_store_count(ocap_store_t *s) {
  if (s->uncounted) {
    if (count_committed(s) != 0)
      return (size_t)-1;
    s->uncounted = 0;
  }
  return (size_t)((long)s->count + s->buf.delta);
}

/* ---- ordered scans ------------------------------------------------------- */

/* Copies next_key's result into memory the store owns. */
static int return_key(ocap_store_t *s, const char *k, size_t kl, const char **key, size_t *klen) {
  if (kl + 1 > s->keycap) {
    size_t cap = s->keycap ? s->keycap : 64;
    while (cap < kl + 1)
      cap *= 2;
    char *nb = malloc(cap);
    if (nb == NULL)
      return OCAP_ENOMEM;
    /* The old buffer may be the caller's `after`, so free it only now. */
    free(s->keybuf);
    s->keybuf = nb;
    s->keycap = cap;
  }
  memcpy(s->keybuf, k, kl);
  s->keybuf[kl] = '\0';
  *key = s->keybuf;
  *klen = kl;
  return 1;
}

int ocap_store_next_key(ocap_store_t *s, const char *prefix, size_t plen, const char *after,
                        size_t alen, int inclusive, const char **key, size_t *klen) {
  int rc = injected(s, OCAP_FAULT_NEXT);
  if (rc != 0)
    return rc;
  prefix = NONNULL(prefix, plen);
  after = NONNULL(after, alen);
  const char *start = after;
  size_t slen = alen;
  if (keycmp(after, alen, prefix, plen) < 0) {
    start = prefix;
    slen = plen;
    inclusive = 1;
  }
  struct buffer *b = &s->buf;
  unsigned long long placed = s->ordered.placed;
  if (sidx_sort(&b->order) != 0 || sidx_sort(&s->ordered) != 0)
    return OCAP_ENOMEM;
  s->order_steps += s->ordered.placed - placed;

  /* The buffer's candidate: its first live key in range. */
  const struct skey *bk = NULL;
  struct scur cur;
  scur_seek(&cur, &b->order, start, slen, inclusive);
  for (const struct skey *k; (k = scur_peek(&cur, &b->order)) != NULL;
       scur_next(&cur, &b->order, k)) {
    s->scan_steps++;
    if (!has_prefix(k->key, k->klen, prefix, plen))
      break;
    if (!b->e[(uintptr_t)k->ref].deleted) {
      bk = k;
      break;
    }
  }

  /*
   * The committed candidate merges the ordered cells with LevelDB's
   * iterator, a cell winning over the database's copy of the same key, and
   * skips keys the buffer deletes. Once it reaches the buffer's candidate
   * the latter is the answer, so the walk stops there.
   */
  scur_seek(&cur, &s->ordered, start, slen, inclusive);
  if (s->db != NULL) {
    if (s->it == NULL)
      s->it = leveldb_create_iterator(s->db, s->ropts);
    leveldb_iter_seek(s->it, start, slen);
    if (!inclusive && leveldb_iter_valid(s->it)) {
      size_t dl;
      const char *d = leveldb_iter_key(s->it, &dl);
      if (keycmp(d, dl, start, slen) == 0)
        leveldb_iter_next(s->it);
    }
  }
  const char *lk = NULL;
  size_t lkl = 0;
  for (;;) {
    s->scan_steps++;
    const struct skey *p = scur_peek(&cur, &s->ordered);
    if (p != NULL && !has_prefix(p->key, p->klen, prefix, plen))
      p = NULL;
    const char *d = NULL;
    size_t dl = 0;
    if (s->it != NULL && leveldb_iter_valid(s->it)) {
      d = leveldb_iter_key(s->it, &dl);
      if (!has_prefix(d, dl, prefix, plen))
        d = NULL;
    }
    if (p == NULL && d == NULL)
      break;
    const char *ck;
    size_t ckl;
    int from_db = 0;
    if (p != NULL && (d == NULL || keycmp(p->key, p->klen, d, dl) <= 0)) {
      if (d != NULL && keycmp(p->key, p->klen, d, dl) == 0)
        leveldb_iter_next(s->it);
      scur_next(&cur, &s->ordered, p);
      if (((const struct cell *)p->ref)->absent)
        continue;
      ck = p->key;
      ckl = p->klen;
    } else {
      ck = d;
      ckl = dl;
      from_db = 1;
    }
    if (bk != NULL && keycmp(ck, ckl, bk->key, bk->klen) >= 0)
      break;
    const struct bentry *e = buf_find(b, hash_key(ck, ckl), ck, ckl);
    if (e != NULL && e->deleted) {
      if (from_db)
        leveldb_iter_next(s->it);
      continue;
    }
    lk = ck;
    lkl = ckl;
    break;
  }
  if (s->it != NULL) {
    char *lerr = NULL;
    leveldb_iter_get_error(s->it, &lerr);
    if (lerr != NULL) {
      drop_iterator(s);
      return ldb_fail(s, "scan failed", lerr);
    }
  }
  if (lk != NULL)
    return return_key(s, lk, lkl, key, klen);
  if (bk != NULL)
    return return_key(s, bk->key, bk->klen, key, klen);
  return 0;
}

/* ---- commit, abort, flush, clear ----------------------------------------- */

/*
 * Everything that can fail (memory for new cells and larger values, room in
 * the indexes) happens before anything visible changes, and what it leaves
 * behind on failure is harmless: absent cells and spare capacity.
 */
static int commit_prepare(ocap_store_t *s) {
  struct buffer *b = &s->buf;
  if (cmap_reserve(&s->cache, b->n) != 0 || sidx_reserve(&s->ordered, s->ordered.n + b->n) != 0)
    return OCAP_ENOMEM;
  for (size_t i = 0; i < b->n; i++) {
    struct bentry *e = &b->e[i];
    struct cell *c = cmap_find(&s->cache, e->hash, e->key, e->klen);
    if (c == NULL) {
      /* A new key gets its value inline, so it costs a single malloc. */
      c = cell_new(e->key, e->klen, e->deleted ? 0 : e->vlen);
      if (c == NULL)
        return OCAP_ENOMEM;
      cmap_put(&s->cache, e->hash, c);
      s->nabsent++;
      if (s->db == NULL)
        sidx_push(&s->ordered, c->key, c->klen, c);
    }
    if (!e->deleted && cell_reserve(c, e->vlen) != 0)
      return OCAP_ENOMEM;
    e->cell = c;
  }
  return 0;
}

/* Applies the buffer to the prepared cells; this cannot fail. */
static void commit_apply(ocap_store_t *s, int pending) {
  struct buffer *b = &s->buf;
  for (size_t i = 0; i < b->n; i++) {
    struct bentry *e = &b->e[i];
    struct cell *c = e->cell;
    if (e->deleted) {
      if (!c->absent) {
        c->absent = 1;
        c->vlen = 0;
        s->nabsent++;
      }
    } else {
      if (c->absent) {
        c->absent = 0;
        s->nabsent--;
      }
      if (e->vlen > 0)
        memcpy(c->val, e->val, e->vlen);
      c->vlen = e->vlen;
    }
    if (pending && !c->pending) {
      c->pending = 1;
      sidx_push(&s->ordered, c->key, c->klen, c);
    }
  }
  s->count = (size_t)((long)s->count + b->delta);
  buf_reset(b);
}

void ocap_store_set_hooks(ocap_store_t *s, const ocap_store_hooks_t *hooks) {
  if (hooks != NULL)
    s->hooks = *hooks;
  else
    memset(&s->hooks, 0, sizeof s->hooks);
}

int ocap_store_commit(ocap_store_t *s) {
  int rc = s->hooks.prepare != NULL ? s->hooks.prepare(s->hooks.ud) : 0;
  if (rc != 0)
    return rc;
  if (s->buf.n == 0) {
    if (s->hooks.done != NULL)
      s->hooks.done(s->hooks.ud);
    return 0;
  }
  rc = injected(s, OCAP_FAULT_COMMIT);
  if (rc == 0)
    rc = commit_prepare(s);
  if (rc != 0)
    return rc;
  if (s->hooks.done != NULL)
    s->hooks.done(s->hooks.ud);
  if (s->db == NULL) {
    commit_apply(s, 0);
    maybe_sweep(s);
    settle_order(s);
    return 0;
  }
  /* Both durabilities group commits: a crank's cells join the pending set
   * and reach LevelDB at the next flush, which the kernel calls before any
   * result of the crank is shown to the host. FSYNC flushes with fsync. */
  commit_apply(s, 1);
  s->npending++;
  settle_order(s);
  return 0;
}

/*
 * Runs fill, whose writes go to a buffer of their own, and applies them
 * straight to the committed layer (and the pending set), without the
 * hooks and without touching the crank buffer. When fill or the commit
 * fails, nothing of it is applied.
 */
int ocap_store_commit_direct(ocap_store_t *s, int (*fill)(void *ud), void *ud) {
  if (!s->has_direct) {
    if (buf_init(&s->direct) != 0) {
      buf_free(&s->direct);
      return OCAP_ENOMEM;
    }
    s->has_direct = 1;
  }
  struct buffer crank = s->buf;
  s->buf = s->direct;
  int rc = fill(ud);
  if (rc == 0 && s->buf.n > 0) {
    rc = injected(s, OCAP_FAULT_COMMIT);
    if (rc == 0)
      rc = commit_prepare(s);
  }
  if (rc != 0) {
    buf_reset(&s->buf);
  } else if (s->buf.n > 0) {
    commit_apply(s, s->db != NULL);
    if (s->db != NULL)
      s->npending++;
  }
  s->direct = s->buf;
  s->buf = crank;
  if (rc == 0 && s->db == NULL)
    maybe_sweep(s);
  if (rc == 0)
    settle_order(s);
  return rc;
}

size_t ocap_store_buffered(const ocap_store_t *s) {
  return s->buf.n;
}

void ocap_store_abort(ocap_store_t *s) {
  buf_reset(&s->buf);
  if (s->hooks.abort != NULL)
    s->hooks.abort(s->hooks.ud, 0);
}

int ocap_store_flush(ocap_store_t *s) {
  if (s->db == NULL || s->npending == 0)
    return 0;
  drop_iterator(s);
  /*
   * The batch holds each pending key's final state once, so a key made and
   * removed between two flushes (most kernel promises) costs LevelDB
   * nothing at all.
   */
  leveldb_writebatch_clear(s->batch);
  for (size_t i = 0; i < s->ordered.n; i++) {
    struct cell *c = s->ordered.v[i].ref;
    if (!c->absent) {
      leveldb_writebatch_put(s->batch, c->key, c->klen, c->val, c->vlen);
      s->logged += c->klen + c->vlen;
    } else if (c->indb) {
      leveldb_writebatch_delete(s->batch, c->key, c->klen);
      s->logged += c->klen;
    }
  }
  char *lerr = NULL;
  leveldb_writeoptions_set_sync(s->wopts, s->durability == OCAP_DURABILITY_FSYNC);
  leveldb_write(s->db, s->wopts, s->batch, &lerr);
  leveldb_writebatch_clear(s->batch);
  if (lerr != NULL)
    return ldb_fail(s, "write failed", lerr); /* Still pending: retry later. */
  s->npending = 0;
  for (size_t i = 0; i < s->ordered.n; i++) {
    struct cell *c = s->ordered.v[i].ref;
    c->pending = 0;
    c->indb = !c->absent;
  }
  sidx_clear(&s->ordered);
  maybe_sweep(s);
  return 0;
}

size_t ocap_store_pending(const ocap_store_t *s) {
  return s->npending;
}

int ocap_store_durable(const ocap_store_t *s) {
  return s->db != NULL;
}

int ocap_store_clear(ocap_store_t *s) {
  buf_reset(&s->buf);
  if (s->hooks.abort != NULL)
    s->hooks.abort(s->hooks.ud, 1);
  if (s->db != NULL) {
    drop_iterator(s);
    leveldb_writebatch_clear(s->batch);
    s->npending = 0;
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_readoptions_set_fill_cache(ro, 0);
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, ro);
    leveldb_writebatch_t *del = leveldb_writebatch_create();
    for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it)) {
      size_t kl;
      const char *k = leveldb_iter_key(it, &kl);
      leveldb_writebatch_delete(del, k, kl);
    }
    char *lerr = NULL;
    leveldb_iter_get_error(it, &lerr);
    leveldb_iter_destroy(it);
    leveldb_readoptions_destroy(ro);
    if (lerr == NULL) {
      leveldb_writeoptions_set_sync(s->wopts, s->durability == OCAP_DURABILITY_FSYNC);
      leveldb_write(s->db, s->wopts, del, &lerr);
    }
    leveldb_writebatch_destroy(del);
    if (lerr != NULL) {
      /* The database may still hold keys, so the cache must not claim otherwise. */
      cmap_free(&s->cache);
      s->nabsent = 0;
      sidx_clear(&s->ordered);
      s->uncounted = 1;
      return ldb_fail(s, "clearing failed", lerr);
    }
  }
  cmap_free(&s->cache);
  s->nabsent = 0;
  s->count = 0;
  s->uncounted = 0;
  sidx_clear(&s->ordered);
  return 0;
}
