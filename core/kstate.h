/*
 * kstate.h -- the kernel's state and its typed access to the store
 * (internal to the kernel's files: kernel.c, refs.c, clist.c, object.c, gc.c,
 * capdata.c, promise.c, queue.c, crank.c; the public interface is kernel.h).
 *
 * Conventions:
 *  1. Everything the kernel knows is in the store under the keys listed in
 *     docs/storage.md at every commit, but for the id counters, the run
 *     queue, the vats' queued bytes, the promises' records, the c-lists and
 *     the objects' keys, which are there from the next ocap_kernel_sync
 *     (before every flush and every read of the store from outside the
 *     kernel) on. That is what makes a crank atomic: abort the store's
 *     crank buffer (and, by convention 6, the tables in memory with it) and
 *     every table is back.
 *  2. Keys are formatted from a format with only %s and %lld in it. A key
 *     that would not fit KEY_MAX bytes is a kernel failure, never cut.
 *  3. Nothing read back from the store is trusted to fit a fixed buffer or
 *     to be well formed: values are read whole, and a value that cannot be
 *     what its key says is reported as corruption naming the key.
 *  4. A failed store call, like corruption, is a kernel failure: it is
 *     recorded in the kernel (ocap__broken) so that the crank in progress
 *     fails and rolls back instead of committing half its work. A caller's
 *     fault (an illegal syscall) is reported with ocap__fail instead.
 *  5. Functions that read return 1 found, 0 missing, or a negative OCAP_E*
 *     code; functions that write return 0 or a negative code.
 *  6. The hottest tables (the id counters, the run queue and the vats'
 *     queued bytes, the promises' records, the objects and the c-lists)
 *     are kept in memory: they are changed in place, their values at the
 *     last commit kept beside (the store's done and abort hooks, store.h,
 *     keep or put back a crank's changes), and written as final states
 *     when the kernel syncs (convention 1). The keys and values in the
 *     store are the same as if they were written at once. They are read
 *     from the store when first used, which is when a damaged value is
 *     found.
 */
#ifndef OCAP_KSTATE_H
#define OCAP_KSTATE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernel.h"

/* A zeroed block of n bytes, or NULL. glibc's calloc skips the per-thread
 * cache that malloc serves small blocks from, so for the records made and
 * freed every crank (c-list entries, promises, notes) malloc and memset
 * cost a fraction of it. The compiler turns a malloc followed by a memset
 * of the same size back into calloc; the memset is called through a
 * volatile pointer so that it cannot. */
void *ocap__zalloc(size_t n);

/*
 * Makes room for `need` elements of `size` bytes in a growable array:
 * arrayp is the address of the pointer to it (NULL for none yet), *cap its
 * capacity, doubled (from `first`) until it is enough. Returns 0, or
 * OCAP_ENOMEM with the array unchanged. The tables' lists of changed and
 * unsynced records grow this way; the test that they need not grow is
 * inline, as they are checked at every change.
 */
int ocap__reserve_grow(void *arrayp, size_t *cap, size_t need, size_t size, size_t first);
static inline int ocap__reserve(void *arrayp, size_t *cap, size_t need, size_t size, size_t first) {
  return need <= *cap ? 0 : ocap__reserve_grow(arrayp, cap, need, size, first);
}

#define KEY_MAX 160

/*
 * Ids and counts are decimal integers from 0 to 2^53 - 1: a Lua number holds
 * them exactly, and adding one to them never overflows.
 */
#define COUNT_MAX 9007199254740991LL
/* How far past the committed value a promise counter's stored bound is
 * written (kstate.c, counter_reserved, says why; clist.c keeps each
 * endpoint's the same way). */
#define OCAP_ID_RESERVE 1024

/* What the store keeps for a promise counter whose committed value is n:
 * its bound, or n itself when exact (a kernel that closes) or absent (-1). */
static inline long long ocap__id_stored(long long n, int exact) {
  return !exact && n >= 0 && n <= COUNT_MAX - OCAP_ID_RESERVE ? n + OCAP_ID_RESERVE : n;
}

/* Whether a sync must write a promise counter whose committed value is n
 * and stored one s: a bound only once n went past it. */
static inline int ocap__id_unsynced(long long n, long long s, int exact) {
  return !exact && n >= 0 ? n > s : n != s;
}

/* The kernel-wide id counters, kept as fields (see ocap__bump). */
enum { CTR_VAT, CTR_OBJECT, CTR_PROMISE, CTR_PEER, CTR_COUNT };

struct ocap__queue;
struct ocap__promises;
struct ocap__clists;
struct ocap__objects;
struct ocap__gc;
struct ocap__kp; /* a promise's record (promise.h) */

struct ocap_kernel {
  ocap_store_t *s;
  ocap_kernel_hooks_t hooks;
  long long cranks;
  long long unsynced_commits; /* commits since the last sync that changed a table written at sync */
  int err;                    /* the kernel failure the current crank must fail with, or 0 */
  int cranking;               /* a crank runs: host code it calls must not forget records */
  char errmsg[512];           /* why the last call failed, when it was the caller's fault */
  char brokenmsg[512];        /* why, when it was a kernel failure (err != 0) */
  /*
   * Tables kept in memory rather than read from the store at each use
   * (conventions 1 and 6): loaded on first use, changed in place during a
   * crank, and written into the store's crank buffer as final states when
   * it commits (the store's prepare hook); an abort puts back what the
   * last commit left (the counters excepted: ocap__counters_abort).
   */
  int counters_loaded;        /* bit (1 << CTR_*) once read */
  long long next[CTR_COUNT];  /* the next id of each counter */
  long long cnext[CTR_COUNT]; /* the same at the last commit */
  long long snext[CTR_COUNT]; /* the same in the store (written at sync) */
  int ids_exact;              /* the kernel closes: counters are stored as they are */
  struct ocap__queue *q;      /* the run queue (queue.c) */
  struct ocap__promises *p;   /* promises' states and counts (promise.c) */
  struct ocap__clists *c;     /* the endpoints' c-lists (clist.c) */
  struct ocap__objects *o;    /* kernel objects (object.c) */
  struct ocap__gc *g;         /* GC actions and reaps (gc.c) */
};

/* A growable byte buffer for values too large for the stack; {0} is empty. */
typedef struct ocap__buf {
  char *p;
  size_t len, cap;
} ocap__buf_t;

/* Appending returns 0 or OCAP_ENOMEM; the buffer stays NUL-terminated.
 * A message's capdata is built with a few appends to a buffer that has
 * room: that case is inline, growing is not. */
int ocap__buf_add_grow(ocap__buf_t *b, const char *s, size_t n);
static inline int ocap__buf_add(ocap__buf_t *b, const char *s, size_t n) {
  if (b->cap - b->len <= n)
    return ocap__buf_add_grow(b, s, n);
  if (n)
    memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}
int ocap__buf_adds(ocap__buf_t *b, const char *s);
/* Appends s as the inside of a JSON string (JSON.stringify's escaping). */
int ocap__buf_add_json(ocap__buf_t *b, const char *s);

/* Failures (convention 4); both return code. */
int ocap__fail(ocap_kernel_t *k, int code, const char *fmt, ...);
int ocap__broken(ocap_kernel_t *k, int code, const char *fmt, ...);
/* Reports a value that cannot be what its key says. */
int ocap__corrupt(ocap_kernel_t *k, const char *key, const char *v, size_t vl, const char *what);
/* Reports a failed store call (op: "read", "write", ...) on key. */
int ocap__store_failed(ocap_kernel_t *k, int rc, const char *op, const char *key, size_t kl);
/* Quotes at most 40 bytes of v into out (64 bytes) for a message. */
const char *ocap__shown(const char *v, size_t vl, char *out);

/* Whether v (vl bytes) can be a reference: shorter than OCAP_REF_MAX, and
 * only bytes a reference uses (no space, which separates them). */
int ocap__ref_like(const char *v, size_t vl);

/*
 * An endpoint as a number: 0 for none, 1 for the kernel, and N << 2 | 2
 * for the vat vN, N << 2 | 3 for the peer rN (the endpoints
 * ocap__valid_ep accepts, refs.h, whose N is below 10^17). The tables
 * kept in memory hold owners, deciders and subscribers so: eight bytes to
 * copy at each commit and one compare, where the text took 48 and strcmp.
 */
typedef uint64_t ocap__epc_t;

/* Compared byte by byte, stopping at the first that differs: a vat's
 * endpoint costs one compare, and the kernel's a few, where a call to
 * strcmp cost about twenty instructions on each host call's path. */
static inline int ocap__is_kernel_ep(const char *ep) {
  return ep[0] == 'k' && ep[1] == 'e' && ep[2] == 'r' && ep[3] == 'n' && ep[4] == 'e' &&
         ep[5] == 'l' && ep[6] == '\0';
}

/* The code of the endpoint ep, or 0 when ep is not one: the one reader
 * of an endpoint's syntax (ocap__valid_ep and the vat-number readers ask
 * it). */
static inline ocap__epc_t ocap__ep_code(const char *ep) {
  if (ep[0] != 'v' && ep[0] != 'r')
    return ocap__is_kernel_ep(ep) ? 1 : 0;
  if (ep[1] < '0' || ep[1] > '9' || (ep[1] == '0' && ep[2]))
    return 0;
  uint64_t n = 0;
  for (size_t i = 1; ep[i]; i++) {
    if (ep[i] < '0' || ep[i] > '9' || i >= 17)
      return 0;
    n = n * 10 + (uint64_t)(ep[i] - '0');
  }
  return n << 2 | (ep[0] == 'v' ? 2u : 3u);
}
/* The same for the l bytes at s (not NUL-terminated). */
ocap__epc_t ocap__ep_code_n(const char *s, size_t l);
/* Writes the endpoint of code c (not 0) into out (OCAP_REF_MAX bytes);
 * returns its length. */
size_t ocap__ep_text(ocap__epc_t c, char *out);

/* Parses a count written by ocap__fmt_ll (digits only, no sign, no leading
 * zero, at most COUNT_MAX) into *out: 1 when it is one, else 0. */
int ocap__parse_count(const char *v, size_t vl, long long *out);
/* Writes n in decimal at p; returns the number of bytes (at most 20). */
size_t ocap__fmt_ll(char *p, long long n);

/* Store access with formatted keys (conventions 2, 3 and 5). */
int ocap__getb(ocap_kernel_t *k, ocap__buf_t *b, const char *fmt, ...);
int ocap__has(ocap_kernel_t *k, const char *fmt, ...);
int ocap__get_ref(ocap_kernel_t *k, char *out, const char *fmt, ...);
int ocap__get_count(ocap_kernel_t *k, long long dflt, long long *out, const char *fmt, ...);
int ocap__setn(ocap_kernel_t *k, const char *val, size_t vl, const char *fmt, ...);
#define ocap__setv(k, val, ...) ocap__setn((k), (val), strlen(val), __VA_ARGS__)
int ocap__delv(ocap_kernel_t *k, const char *fmt, ...);
int ocap__seti(ocap_kernel_t *k, long long n, const char *fmt, ...);
/* Sets *out to the value of counter `which` (a CTR_*) and advances it. */
int ocap__bump(ocap_kernel_t *k, int which, long long *out);
/* Whether counter `which` (a CTR_*) has given out id: 1 if it has, 0 if
 * not (id is at or past it), or a negative code when it cannot be read. */
int ocap__issued(ocap_kernel_t *k, int which, long long id);
/* The store's hooks for the counters (convention 6), and their part of
 * ocap_kernel_sync, like the run queue's (queue.h): they are written when
 * the kernel syncs, not at each commit. */
void ocap__counters_done(ocap_kernel_t *k);
int ocap__counters_unsynced(ocap_kernel_t *k);
int ocap__counters_fill(ocap_kernel_t *k);
void ocap__counters_synced(ocap_kernel_t *k);
void ocap__counters_abort(ocap_kernel_t *k, int cleared);
/*
 * Each table's part of ocap_kernel_check (kernel.h): 0 when what it holds
 * in memory is what the store holds, else OCAP_ECORRUPT through ocap__fail
 * naming the key. ocap__check_key compares one key (val NULL: absent).
 */
int ocap__check_key(ocap_kernel_t *k, const char *val, size_t vl, const char *fmt, ...);
int ocap__counters_check(ocap_kernel_t *k);
int ocap__queue_check(ocap_kernel_t *k);
int ocap__promises_check(ocap_kernel_t *k);
int ocap__clists_check(ocap_kernel_t *k);
int ocap__objects_check(ocap_kernel_t *k);
/*
 * Whether anything a commit would keep changed since the last commit or
 * abort: the store's crank buffer or a table kept in memory. A crank
 * commits what host code did before it only when this says so, since
 * most cranks follow one another with nothing in between.
 */
int ocap__kernel_changed(ocap_kernel_t *k);
/* ocap_kernel_send from vat ep with the result p+<n> (0 < n <=
 * COUNT_MAX) given as its number, as a vat's send syscall has it: the
 * kernel reads the number as it is, where a text would be written by the
 * syscall and read back by the kernel. */
int ocap__kernel_send_pe(ocap_kernel_t *k, const char *ep, const char *target,
                         const ocap_capdata_t *methargs, long long n);
/* ocap_kernel_resolve of one resolution from vat ep, of its import
 * p-<n> (0 < n <= COUNT_MAX) given as its number, as the resolve syscall
 * has it when liveslots hands it the number a delivery gave. */
int ocap__kernel_resolve_pi(ocap_kernel_t *k, const char *ep, long long n, int rejected,
                            const ocap_capdata_t *data);
/* Each table's part of ocap_kernel_forget (kernel.h). */
void ocap__counters_forget(ocap_kernel_t *k, const char *key);
void ocap__queue_forget(ocap_kernel_t *k);
void ocap__promises_forget(ocap_kernel_t *k, const char *kpid);
void ocap__clists_forget(ocap_kernel_t *k, const char *ep);

/* A promise's state, as ocap__get_state returns it. */
enum { ST_NONE = 0, ST_UNRESOLVED = 1, ST_FULFILLED = 2, ST_REJECTED = 3 };

/* Reads `<kpid>.state` from the store: a ST_* value (ST_NONE when
 * missing), or a negative code. The kernel reads it through
 * ocap__get_state (promise.h), which keeps it in memory. */
int ocap__read_state(ocap_kernel_t *k, const char *kpid);

#endif
