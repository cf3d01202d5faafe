/*
 * vat.c -- a vat's Lua state: sandbox, memory budget, instruction meter, and
 * the one protected call path through which the kernel enters it.
 *
 * Four mechanisms keep untrusted code in its box, and each one covers a gap
 * left by the others:
 *
 *  - The allocator charges every byte to the vat. A refused allocation makes
 *    Lua run an emergency collection and ask again; only when that second
 *    request is refused too does the vat become fatally out of memory, so a
 *    program that merely carries garbage near its limit survives. Emergency
 *    collections that come too often (a heap kept just under the limit)
 *    are charged to the meter.
 *  - The meter bounds each call's work. In time mode (the default) it gives
 *    the call CPU time in proportion to its budget, and no hook runs until
 *    the "Time backstop" tick finds the time used up: an ordinary call pays
 *    nothing per instruction. In instruction mode a count hook charges
 *    instructions: it is set on the main thread when the state is created,
 *    and Lua copies a thread's hook into every thread it creates, so all
 *    coroutines are metered. Once the vat is marked
 *    (meter or memory) the hook re-arms itself to fire on every instruction
 *    of whatever thread it lands on and raises each time, so no `pcall`,
 *    `xpcall` or `coroutine.resume` inside the vat can swallow the failure.
 *  - The count hook has blind spots, and the sandbox replaces the library
 *    functions that reach into them: every C function whose work grows
 *    with its input charges for that work (the table under "Charges for
 *    the rest of the library" lists them all), the pattern functions are
 *    lmatch.c's, which charge for every matching step; `pcall`, `xpcall`
 *    and coroutine creation charge for the C work and the unused granule
 *    they stand for; and no vat code ever runs where Lua has switched hooks
 *    off: `__gc` metamethods are refused, and once the vat is fatal `xpcall`
 *    no longer calls the vat's handler and coroutines can no longer be
 *    closed (their `__close` metamethods would run unhooked).
 *  - What no wrapper can reach, VM instructions whose time grows with the
 *    strings they touch, is bounded by a CPU-time allowance per call (the
 *    "Time backstop" section), which stops the vat at its next instruction
 *    once the allowance is used up: time mode's meter, and instruction
 *    mode's backstop.
 */
#define _GNU_SOURCE /* timer_create with SIGEV_THREAD_ID */

#include "vat.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "errors.h"
#include "lmatch.h"

#if defined(__SANITIZE_ADDRESS__)
#define OCAP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OCAP_ASAN 1
#endif
#endif
#ifdef OCAP_ASAN
#include <sanitizer/asan_interface.h>
/* From the sanitizers' allocator interface, whose header GCC lacks. */
size_t __sanitizer_get_allocated_size(const volatile void *p);
#else
#define ASAN_POISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#endif

/*
 * Small blocks. Most of a vat's heap is small objects (strings, tables,
 * closures, prototypes, hash parts of a few slots): thousands of them in
 * an idle vat. malloc gives each a header and rounds it up to 16 bytes,
 * which took about a fifth of an idle vat's resident memory. Lua always
 * tells its allocator the size of the block it frees or resizes, so a vat
 * keeps its small blocks without headers: carved in SMALL_GRAIN-byte size
 * classes from chunks it owns, in the order they are asked for whatever
 * their class, and reused through one free list per class. A freed small
 * block stays with its vat; the chunks go back to malloc when the state
 * closes. Blocks over SMALL_MAX bytes are malloc's.
 *
 * A free list that is empty borrows from the smallest larger class that
 * has a block, splitting it, before the chunk is carved further: without
 * that, blocks freed in one class (a hash part outgrown at boot, a
 * prototype's main chunk) would stay unused while the vat carves new
 * blocks of other classes, and the classes up to 256 bytes cost more than
 * malloc's headers save. A split never leaves a SMALL_GRAIN-byte rest,
 * which hardly any object fits. An idle vat takes 1.4 KiB less resident
 * memory than with classes up to 128 bytes and no borrowing.
 *
 * Packing, while a vat boots (ocap_vat_set_packing): a request whose class
 * has no free block first takes a free block of the next class whole. The
 * runtime's boot leaves free blocks of classes the vat's start seldom asks
 * for (40 bytes: the upvalues and one-upvalue closures of its make and
 * boot functions), while the start carves new blocks of the class below;
 * giving 8 bytes of each such block to a request saves carving one. Only
 * while booting: a block served so goes back to its request's class when
 * freed, and its last 8 bytes are lost until the state closes, which a
 * vat's whole life must not accumulate. An idle vat takes 2 KiB less
 * resident memory.
 */
#define SMALL_GRAIN 8
#define SMALL_MAX 256
#define SMALL_CLASSES (SMALL_MAX / SMALL_GRAIN)

/*
 * Chunks. The newest chunk's tail that no block was carved from yet is
 * half a chunk on average, and each chunk costs two headers (malloc's and
 * the link below): with 4 KiB chunks the two took an idle vat about 2.5
 * KiB. A vat's first chunk is FIRST_CHUNK_BYTES, since booting any vat
 * (the sandbox and the runtime) takes more than that; a later one is at
 * least MIN_CHUNK_BYTES and at most about 1/128 of the chunks the vat
 * already has, so that neither the tail nor the headers are ever more
 * than a percent or two of a vat, small or large. Sizes are 8 bytes short
 * of a multiple of 16: glibc's malloc adds an 8-byte header and rounds to
 * 16, and wastes nothing on these. Over idle vats of eight sizes, these
 * chunks take 1.5 KiB less than 4 KiB ones, on average.
 *
 * When the kernel tells what the last vat of the same kind carved by the
 * end of its start (ocap_vat_limits_t.boot_bytes), the first chunk is that
 * size instead, up to MAX_FIRST_CHUNK_BYTES (glibc maps larger blocks
 * apart): a kernel launches many alike vats, and each then boots in one
 * chunk with next to nothing left uncarved, where the last 1 KiB chunk's
 * tail and the later chunks' headers took an idle vat 0.5 to 1.2 KiB.
 */
#define FIRST_CHUNK_BYTES (64 * 1024)
#define MAX_FIRST_CHUNK_BYTES (120 * 1024)
#define MIN_CHUNK_BYTES 1024
#define MAX_CHUNK_BYTES (64 * 1024)
#define MALLOC_HEADER 8

_Static_assert(SMALL_CLASSES <= 64, "the nonempty mask has a bit per class");

/* The classes a request of class c may borrow from: c + 2 and above. */
#define BORROW_MASK (~3ULL)

/* A chunk of small blocks; the blocks follow the header. */
struct chunk {
  struct chunk *next;
};

/* Why the meter ran out: what ocap_vat_fatal_reason reports. */
enum meter_cause {
  CAUSE_INSTRUCTIONS = 0, /* instructions and library charges */
  CAUSE_TIME = 1,         /* the CPU-time backstop */
  CAUSE_COLLECTIONS = 2,  /* emergency collections near the memory limit */
};

struct ocap_vat {
  /* First, so that vat.h's inline charge finds it (see ocap_vat_meter_t):
   * budget, charged, depth, fatal (0, OCAP_VAT_METER or OCAP_VAT_MEMORY;
   * never reset) and expired (the time allowance of this call ran out). */
  ocap_vat_meter_t meter;
  lua_State *L;
  size_t used;  /* bytes currently allocated by the state */
  size_t limit; /* the memory budget */
  int cause;    /* an enum meter_cause, when fatal is OCAP_VAT_METER */
  int refused;  /* the last growth request was refused */
  int mode;     /* an enum ocap_vat_meter_mode */
  int hooked;   /* the count hook meters instructions (see ocap_vat_new) */
  /* The kernel's runtime modules, which the vat reads but never copies. */
  const ocap_vat_module_t *runtime;
  size_t nruntime;
  /* Small blocks (see "Small blocks" above). */
  void *free_small[SMALL_CLASSES]; /* free blocks of each class, linked through their first word */
  unsigned long long nonempty;     /* bit c is set when free_small[c] holds a block */
  struct chunk *chunks;            /* every chunk the vat carved blocks from */
  size_t chunk_bytes;              /* their sizes' sum */
  char *bump, *bump_end;           /* the part of the newest chunk not carved yet */
  size_t first_chunk;              /* the first chunk's size (see "Chunks") */
  int packing;                     /* see "Packing" above */
  /* Emergency collections near the memory limit (see vat_alloc). */
  size_t fresh;        /* bytes allocated since the last emergency collection */
  long long thrashing; /* emergency collections charged in this call */
  /* The CPU-time backstop (see "Time backstop" below). */
  lua_State *_Atomic running; /* the thread running vat code, or NULL */
  struct watchdog *watchdog;  /* its thread's, during an outermost call */
  struct ocap_vat *outer_vat; /* the watchdog's vat before this call */
  long long allowance_ns;     /* CPU time per outermost call */
  long allowance_ticks;       /* the same in watchdog ticks */
  long start_tick;            /* the watchdog's tick count at the start */
  long ticks_used;            /* ticks the last finished call took */
  long long time_ns;          /* time mode: CPU time an instruction of budget buys */
  long long deadline_ns;      /* when polling: CPU time to stop at */
  char *why;                  /* ocap_vat_fatal_reason's text, malloc'd when first told */
};

/*
 * Registry keys. Only their addresses matter; they are const, so the module
 * keeps no mutable global state.
 */
static const char KEY_LOADED = 'L';    /* name -> module value */
static const char KEY_PRELOAD = 'P';   /* name -> {source, trusted[, length of its text]} */
static const char KEY_LOADING = 'I';   /* sentinel value in KEY_LOADED */
static const char KEY_METER_MSG = 'M'; /* interned fatal messages */
static const char KEY_MEMORY_MSG = 'm';
static const char KEY_RUNTIME_ENV = 'E'; /* the runtime modules' globals */
static const char KEY_VIEWS = 'V';       /* runtime module -> vat code's view (weak keys) */

/* The value getmetatable('') returns instead of the string metatable. */
#define STRING_MT_LOCK "locked"

/* Byte-copy work that counts as one instruction in the C library wrappers. */
#define BYTES_PER_INSTRUCTION 64

/*
 * What a protected call and a caught error cost, in instructions. Each
 * pcall sets up a C-level protected frame (a setjmp and a C call) and each
 * error unwinds and usually formats a message; both take about as long as
 * 50 instructions, so without these charges nested or failing pcalls would
 * run ten times longer than their budget suggests.
 */
#define PCALL_COST OCAP_VAT_PCALL_COST
#define ERROR_COST OCAP_VAT_ERROR_COST

static void vat_hook(lua_State *L, lua_Debug *ar);

/* ---------------------------------------------------------------------- */
/* Memory budget                                                          */

static void meter_stop(ocap_vat_t *v, int cause);

/*
 * A full collection walks the whole heap, and Lua runs one at each refused
 * allocation, so a vat that keeps its live data just under its limit makes
 * nearly every allocation cost a full collection: about 100 times slower
 * than usual, on the kernel's time. A collection is free when the vat
 * allocated at least a quarter of its heap since the previous one, which
 * is the pace of Lua's own collector; one that comes sooner is charged as
 * walking the heap, at 1 instruction per COLLECTION_BYTES_PER_INSTRUCTION
 * bytes in use (a full collection of small objects runs at about 10 bytes
 * per plain instruction's time). Called from the allocator, this cannot
 * raise: when the charge exhausts the budget it marks the vat and makes
 * the running thread stop at its next instruction.
 */
#define COLLECTION_BYTES_PER_INSTRUCTION 16

static void charge_collection(ocap_vat_t *v) {
  size_t fresh = v->fresh;
  v->fresh = 0;
  if (v->meter.depth == 0 || v->meter.fatal != 0 || fresh >= v->used / 4)
    return;
  v->thrashing++;
  v->meter.charged += (long long)(v->used / COLLECTION_BYTES_PER_INSTRUCTION);
  if (v->meter.charged >= v->meter.budget)
    meter_stop(v, CAUSE_COLLECTIONS);
}

/* The size class of a small block of n bytes (1 <= n <= SMALL_MAX). */
static size_t small_class(size_t n) {
  return (n - 1) / SMALL_GRAIN;
}

/* Puts a small block of n bytes on its class's free list. */
static void small_free(ocap_vat_t *v, void *p, size_t n) {
  size_t c = small_class(n);
  *(void **)p = v->free_small[c];
  v->free_small[c] = p;
  v->nonempty |= 1ULL << c;
  ASAN_POISON_MEMORY_REGION(p, (c + 1) * SMALL_GRAIN);
}

/* Takes the first block off the free list of class c, which holds one. */
static void *small_pop(ocap_vat_t *v, size_t c) {
  void *p = v->free_small[c];
  ASAN_UNPOISON_MEMORY_REGION(p, (c + 1) * SMALL_GRAIN);
  v->free_small[c] = *(void **)p;
  if (v->free_small[c] == NULL)
    v->nonempty &= ~(1ULL << c);
  return p;
}

/* The size of the vat's next chunk (see "Chunks"). */
static size_t next_chunk_bytes(const ocap_vat_t *v) {
  size_t n = MIN_CHUNK_BYTES;
  if (v->chunks == NULL)
    return v->first_chunk;
  while (n < MAX_CHUNK_BYTES && n * 128 <= v->chunk_bytes)
    n *= 2;
  return n - MALLOC_HEADER;
}

/*
 * The size of a vat's first chunk whose boot carves boot bytes (0 when
 * unknown; see "Chunks"): room for them and the chunk's link, 8 bytes
 * short of a multiple of 16.
 */
static size_t first_chunk_bytes(size_t boot) {
  size_t n = sizeof(struct chunk) + boot + MALLOC_HEADER;
  if (boot == 0 || n > MAX_FIRST_CHUNK_BYTES)
    return FIRST_CHUNK_BYTES - MALLOC_HEADER;
  if (n < MIN_CHUNK_BYTES)
    n = MIN_CHUNK_BYTES;
  return (n + 15) / 16 * 16 - MALLOC_HEADER;
}

/* A new block of bytes from the newest chunk, which has room for it. */
static inline void *carve(ocap_vat_t *v, size_t bytes) {
  void *p = v->bump;
  v->bump += bytes;
  ASAN_UNPOISON_MEMORY_REGION(p, bytes);
  return p;
}

/* A small block of n bytes, or NULL when malloc has no chunk to give. */
static void *small_alloc(ocap_vat_t *v, size_t n) {
  size_t c = small_class(n), bytes = (c + 1) * SMALL_GRAIN;
  unsigned long long larger = (v->nonempty >> c) & BORROW_MASK;
  void *p;
  if (v->free_small[c] != NULL)
    return small_pop(v, c);
  if (v->packing && (v->nonempty >> (c + 1) & 1))
    return small_pop(v, c + 1);
  if (larger != 0) {
    /* Borrow from the smallest larger class (see "Small blocks"). */
    size_t b = c + (size_t)__builtin_ctzll(larger);
    p = small_pop(v, b);
    small_free(v, (char *)p + bytes, (b - c) * SMALL_GRAIN);
    return p;
  }
  if ((size_t)(v->bump_end - v->bump) < bytes) {
    size_t size = next_chunk_bytes(v);
    struct chunk *k = malloc(size);
    size_t rest = (size_t)(v->bump_end - v->bump);
    if (k == NULL)
      return NULL;
    /* What is left of the old chunk serves the class it fits. */
    if (rest >= SMALL_GRAIN) {
      ASAN_UNPOISON_MEMORY_REGION(v->bump, rest);
      small_free(v, v->bump, rest - rest % SMALL_GRAIN);
    }
    k->next = v->chunks;
    v->chunks = k;
    v->chunk_bytes += size;
    v->bump = (char *)(k + 1);
    v->bump_end = (char *)k + size;
    ASAN_POISON_MEMORY_REGION(v->bump, (size_t)(v->bump_end - v->bump));
  }
  return carve(v, bytes);
}

/* Frees a block of n bytes (n > 0), small or malloc's. */
static void block_free(ocap_vat_t *v, void *p, size_t n) {
  if (n <= SMALL_MAX)
    small_free(v, p, n);
  else
    free(p);
}

/*
 * Resizes the block ptr of old bytes (a new block when old is 0) to nsize
 * bytes (nsize > 0); NULL, with ptr untouched, when memory ran out.
 */
static void *block_realloc(ocap_vat_t *v, void *ptr, size_t old, size_t nsize) {
  void *p;
  if (old > SMALL_MAX && nsize > SMALL_MAX)
    return realloc(ptr, nsize);
  if (old > 0 && old <= SMALL_MAX && nsize <= SMALL_MAX && small_class(old) == small_class(nsize))
    return ptr;
  p = nsize <= SMALL_MAX ? small_alloc(v, nsize) : malloc(nsize);
  if (p == NULL || old == 0)
    return p;
  memcpy(p, ptr, old < nsize ? old : nsize);
  block_free(v, ptr, old);
  return p;
}

/* Gives the vat's chunks back to malloc once its state is closed. */
static void free_chunks(ocap_vat_t *v) {
  struct chunk *k = v->chunks;
  while (k != NULL) {
    struct chunk *next = k->next;
#ifdef OCAP_ASAN
    ASAN_UNPOISON_MEMORY_REGION(k, __sanitizer_get_allocated_size(k));
#endif
    free(k);
    k = next;
  }
  v->chunks = NULL;
}

/*
 * vat_alloc's growth and resizing (nsize > 0), but for what it does
 * inline. Refuses growth beyond the budget. A marked vat may go
 * OCAP_VAT_MEMORY_SLACK bytes over, so that raising errors, unwinding and
 * closing the state still have room; frees and shrinks always succeed
 * because refusing them would leave Lua nothing to fall back on.
 */
static __attribute__((noinline)) void *alloc_slow(ocap_vat_t *v, void *ptr, size_t old,
                                                  size_t nsize) {
  void *p;
  if (nsize > old) {
    size_t cap = v->limit + (v->meter.fatal ? OCAP_VAT_MEMORY_SLACK : 0);
    if (v->used > cap || nsize - old > cap - v->used)
      goto refuse;
  }
  p = block_realloc(v, ptr, old, nsize);
  if (p == NULL)
    goto refuse;
  v->used = v->used - old + nsize;
  if (nsize > old) {
    v->refused = 0;
    v->fresh += nsize - old;
  }
  return p;
refuse:
  /*
   * Lua answers a refusal with an emergency collection and one more try;
   * two refusals in a row mean the collection could not make room.
   */
  if (v->refused && v->meter.fatal == 0)
    v->meter.fatal = OCAP_VAT_MEMORY;
  else if (!v->refused)
    charge_collection(v);
  v->refused = 1;
  return NULL;
}

/*
 * The vat's lua_Alloc. A free, and a new small block that its class's
 * free list or the newest chunk gives within the budget (most of a vat's
 * allocations), are done here; the rest is alloc_slow. Kept apart, the
 * common cases need none of the registers the rest does, whose saving
 * and restoring took about a third of this function's instructions: a
 * vat's boot makes some 2,700 calls.
 */
static void *vat_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  ocap_vat_t *v = ud;
  if (nsize == 0) {
    /* When ptr is NULL, osize encodes the kind of object, not a size. */
    if (ptr != NULL) {
      v->used -= osize;
      block_free(v, ptr, osize);
    }
    return NULL;
  }
  if (ptr == NULL && nsize <= SMALL_MAX && v->used <= v->limit && nsize <= v->limit - v->used) {
    size_t c = small_class(nsize), bytes = (c + 1) * SMALL_GRAIN;
    void *p;
    if (v->free_small[c] != NULL) {
      p = small_pop(v, c);
    } else if ((v->nonempty >> c) == 0 && (size_t)(v->bump_end - v->bump) >= bytes) {
      p = carve(v, bytes); /* no free block to take or borrow (small_alloc) */
    } else {
      return alloc_slow(v, NULL, 0, nsize);
    }
    v->used += nsize;
    v->refused = 0;
    v->fresh += nsize;
    return p;
  }
  return alloc_slow(v, ptr, ptr != NULL ? osize : 0, nsize);
}

/*
 * The lua_Alloc of a state that lua_close is freeing: its small blocks
 * stay where they are, as free_chunks gives their chunks back whole right
 * after, and only blocks malloc's own are freed one by one. A vat's close
 * frees some 2,000 small blocks. Finalizers that run in the close may
 * still allocate, as vat_alloc lets them.
 */
static void *closing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  ocap_vat_t *v = ud;
  if (nsize != 0)
    return vat_alloc(ud, ptr, osize, nsize);
  if (ptr != NULL) {
    v->used -= osize;
    if (osize > SMALL_MAX)
      free(ptr);
  }
  return NULL;
}

/* ---------------------------------------------------------------------- */
/* Instruction meter                                                      */

/* [-0, +1] Pushes the interned message for the vat's fatal status. */
static void push_fatal(lua_State *L, const ocap_vat_t *v) {
  lua_rawgetp(L, LUA_REGISTRYINDEX,
              v->meter.fatal == OCAP_VAT_METER ? &KEY_METER_MSG : &KEY_MEMORY_MSG);
}

/*
 * [-0, +1, e] Raises the vat's fatal message in L and re-arms L's hook to
 * fire on every instruction, so that a handler which catches this error
 * cannot run even one more instruction without raising again. The message
 * was interned at creation, so raising needs no memory.
 */
static int vat_die(lua_State *L, const ocap_vat_t *v) {
  lua_sethook(L, vat_hook, LUA_MASKCOUNT, 1);
  push_fatal(L, v);
  return lua_error(L);
}

/*
 * [-0, +0] Marks the vat out of instructions for cause and makes the thread running
 * vat code stop at its next instruction, where the hook raises. It only
 * sets fields and a hook, so the allocator and the watchdog's signal
 * handler may call it: lua_sethook is safe to call asynchronously (Lua's
 * own interpreter calls it from its SIGINT handler).
 */
static void meter_stop(ocap_vat_t *v, int cause) {
  lua_State *running = atomic_load_explicit(&v->running, memory_order_relaxed);
  if (v->meter.fatal == 0) {
    v->meter.fatal = OCAP_VAT_METER;
    v->cause = cause;
  }
  if (running != NULL)
    lua_sethook(running, vat_hook, LUA_MASKCOUNT, 1);
}

static int time_is_up(ocap_vat_t *v);

/*
 * [-0, +0, e] The count hook. Outside ocap_vat_pcall it does nothing, so the
 * kernel can run its own bits of Lua in the state without being metered.
 * It charges the count it was set with: normally a granule, but the
 * watchdog sets a count of 1 to stop a thread at its next instruction, and
 * the hook then goes back to granules.
 */
static void vat_hook(lua_State *L, lua_Debug *ar) {
  ocap_vat_t *v = ocap_vat_from_state(L);
  (void)ar;
  if (v == NULL || v->meter.depth == 0)
    return;
  if (v->meter.fatal == 0) {
    int count = lua_gethookcount(L);
    if (time_is_up(v)) {
      v->meter.fatal = OCAP_VAT_METER;
      v->cause = CAUSE_TIME;
    } else if (!v->hooked) {
      /* Time mode: a stop hook left over from before ocap_vat_forgive. */
      lua_sethook(L, NULL, 0, 0);
      return;
    } else {
      if (count != OCAP_VAT_GRANULE)
        lua_sethook(L, vat_hook, LUA_MASKCOUNT, OCAP_VAT_GRANULE);
      v->meter.charged += count;
      if (v->meter.charged < v->meter.budget)
        return;
      v->meter.fatal = OCAP_VAT_METER;
      v->cause = CAUSE_INSTRUCTIONS;
    }
  }
  vat_die(L, v);
}

/*
 * [-0, +0, e] Charges v (NULL for none) cost instructions for work a C
 * function is about to do in L, one of v's threads, raising the meter
 * error if the budget cannot cover it, or if the call's CPU time ran out
 * while the function was working.
 */
static void vat_charge_to(ocap_vat_t *v, lua_State *L, long long cost) {
  if (v == NULL || v->meter.depth == 0)
    return;
  if (v->meter.fatal == 0) {
    if (v->meter.expired) {
      v->meter.fatal = OCAP_VAT_METER;
      v->cause = CAUSE_TIME;
    } else if (cost < v->meter.budget - v->meter.charged) {
      v->meter.charged += cost;
      return;
    } else {
      v->meter.charged = v->meter.budget;
      v->meter.fatal = OCAP_VAT_METER;
      v->cause = CAUSE_INSTRUCTIONS;
    }
  }
  vat_die(L, v);
}

/* [-0, +0, e] vat_charge_to for the vat that owns L, if any. */
static void vat_charge(lua_State *L, long long cost) {
  vat_charge_to(ocap_vat_from_state(L), L, cost);
}

/* ---------------------------------------------------------------------- */
/* Time backstop                                                          */

/*
 * Some VM instructions take time in proportion to the strings they touch
 * (comparing with <, <= and ==, concatenating, copying varargs), and no
 * hook runs inside an instruction: 1000 comparisons of two 30 MB strings
 * run between two firings of the count hook. The meter therefore also
 * gives each outermost call a CPU-time allowance, budget *
 * OCAP_VAT_NS_PER_INSTRUCTION (at least OCAP_VAT_MIN_ALLOWANCE_NS), and a
 * vat that uses it up is stopped as out of instructions, with a reason
 * saying so.
 *
 * Each thread that runs vats has one watchdog: a periodic POSIX timer on
 * the thread's CPU-time clock that ticks every OCAP_VAT_TICK_NS of CPU and
 * signals that same thread. The tick handler counts ticks and, when the
 * vat whose call is running on the thread has been running for more ticks
 * than its allowance, marks it and sets a count hook of 1 on the Lua
 * thread running its code (which ocap_vat_pcall and the vat's
 * coroutine.resume and coroutine.wrap keep track of), so the vat stops at
 * its next instruction: the overrun is at most a tick plus one
 * instruction, or one charge of a metered C function.
 *
 * A call into a vat costs no system call: it notes the tick count and the
 * running vat. The timer keeps ticking while vats run and disarms itself
 * after two ticks with no vat running, so a thread that stopped running
 * vats is not interrupted; the next call re-arms it (one system call).
 *
 * The signal's handler is installed once per process; when something else
 * already handles OCAP_VAT_WATCHDOG_SIGNAL, or a timer cannot be created,
 * each call reads the thread's CPU clock when it starts and the count hook
 * reads it at each firing, and the overrun is then up to a granule.
 */
enum { WATCHDOG_NONE = 0, WATCHDOG_TIMER = 1, WATCHDOG_POLL = 2 };

typedef struct watchdog {
  volatile long ticks;          /* ticks of this thread's CPU clock */
  volatile int idle;            /* consecutive ticks with no vat running */
  volatile sig_atomic_t armed;  /* the timer is ticking */
  ocap_vat_t *volatile current; /* the vat running on this thread */
  int mode;                     /* WATCHDOG_TIMER or WATCHDOG_POLL */
  timer_t timer;
} watchdog_t;

/* The nanoseconds of CPU time the calling thread has used. */
static long long thread_cpu_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
    return 0;
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Whether the current call's CPU time ran out. */
static int time_is_up(ocap_vat_t *v) {
  if (v->meter.expired)
    return 1;
  if (v->watchdog != NULL && v->watchdog->mode == WATCHDOG_POLL &&
      thread_cpu_ns() >= v->deadline_ns) {
    v->meter.expired = 1;
    return 1;
  }
  return 0;
}

/*
 * The tick handler. The timer carries its thread's watchdog, so the
 * handler needs no thread-local lookup; it runs on that thread, between
 * two steps of whatever the thread was doing.
 */
static void watchdog_tick(int sig, siginfo_t *si, void *context) {
  static const struct itimerspec zero;
  watchdog_t *w = si->si_value.sival_ptr;
  ocap_vat_t *v;
  (void)sig;
  (void)context;
  if (si->si_code != SI_TIMER || w == NULL)
    return;
  w->ticks++;
  v = w->current;
  if (v == NULL) {
    /* timer_settime is async-signal-safe. */
    if (++w->idle >= 2 && timer_settime(w->timer, 0, &zero, NULL) == 0)
      w->armed = 0;
    return;
  }
  w->idle = 0;
  if (v->meter.depth > 0 && v->meter.fatal == 0 && w->ticks - v->start_tick > v->allowance_ticks) {
    v->meter.expired = 1;
    meter_stop(v, CAUSE_TIME);
  }
}

/*
 * Process-wide: the handler is installed once (there is one disposition
 * per signal, so this is process state by nature), and each thread finds
 * its watchdog under a key whose destructor deletes the timer when the
 * thread exits. These are the module's only globals, written once under
 * pthread_once, with a thread-local copy of the key's value: every
 * outermost call looks its thread's watchdog up, and the copy spares it
 * pthread_once and pthread_getspecific (about 45 instructions a call).
 */
static int watchdog_installed;
static int watchdog_keyed;
static pthread_key_t watchdog_key;
static pthread_once_t watchdog_once = PTHREAD_ONCE_INIT;
static _Thread_local watchdog_t *thread_watchdog_copy;

/* Deletes the calling thread's watchdog: the key's destructor runs on the
 * exiting thread, and the unloading thread deletes its own. */
static void watchdog_destroy(void *p) {
  watchdog_t *w = p;
  if (thread_watchdog_copy == w)
    thread_watchdog_copy = NULL;
  if (w->mode == WATCHDOG_TIMER)
    timer_delete(w->timer);
  free(w);
}

static void watchdog_install(void) {
  struct sigaction old, sa;
  if (pthread_key_create(&watchdog_key, watchdog_destroy) != 0)
    return;
  watchdog_keyed = 1;
  if (sigaction(OCAP_VAT_WATCHDOG_SIGNAL, NULL, &old) != 0)
    return;
  if ((old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != NULL : old.sa_handler != SIG_DFL)
    return; /* the host uses this signal: poll instead */
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = watchdog_tick;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  watchdog_installed = sigaction(OCAP_VAT_WATCHDOG_SIGNAL, &sa, NULL) == 0;
}

/*
 * When the module is unloaded (Lua closes the state that loaded ocap's C
 * module with dlclose), the handler's code goes away while tick timers may
 * still be armed: the signal is then ignored from here on, and the
 * unloading thread's timer deleted.
 */
__attribute__((destructor)) static void watchdog_unload(void) {
  struct sigaction sa;
  if (!watchdog_installed)
    return;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  sigaction(OCAP_VAT_WATCHDOG_SIGNAL, &sa, NULL);
  if (watchdog_keyed) {
    watchdog_t *w = pthread_getspecific(watchdog_key);
    if (w != NULL) {
      pthread_setspecific(watchdog_key, NULL);
      watchdog_destroy(w);
    }
    pthread_key_delete(watchdog_key);
  }
}

/*
 * The calling thread's watchdog, created on first use: a tick timer when
 * the handler is ours and the timer can be made, else polling. NULL only
 * when memory for it cannot be had, and then the vat runs without the
 * backstop.
 */
static watchdog_t *thread_watchdog(void) {
  watchdog_t *w = thread_watchdog_copy;
  struct sigevent sev;
  sigset_t set;
  if (w != NULL)
    return w;
  pthread_once(&watchdog_once, watchdog_install);
  if (!watchdog_keyed)
    return NULL;
  w = pthread_getspecific(watchdog_key);
  if (w != NULL)
    return thread_watchdog_copy = w;
  w = calloc(1, sizeof *w);
  if (w == NULL || pthread_setspecific(watchdog_key, w) != 0) {
    free(w);
    return NULL;
  }
  thread_watchdog_copy = w;
  w->mode = WATCHDOG_POLL;
  if (!watchdog_installed)
    return w;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = OCAP_VAT_WATCHDOG_SIGNAL;
  sev.sigev_value.sival_ptr = w;
#ifdef sigev_notify_thread_id
  sev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
#else
  sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
#endif
  if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &w->timer) != 0)
    return w;
  sigemptyset(&set);
  sigaddset(&set, OCAP_VAT_WATCHDOG_SIGNAL);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  w->mode = WATCHDOG_TIMER;
  return w;
}

/* Starts the allowance of v's outermost call on this thread. */
static void watchdog_start(ocap_vat_t *v) {
  watchdog_t *w = thread_watchdog();
  v->meter.expired = 0;
  v->watchdog = w;
  if (w == NULL)
    return;
  v->outer_vat = w->current;
  w->current = v;
  if (w->mode == WATCHDOG_POLL) {
    v->deadline_ns = thread_cpu_ns() + v->allowance_ns;
    return;
  }
  v->start_tick = w->ticks;
  if (!w->armed) {
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_nsec = OCAP_VAT_TICK_NS;
    its.it_interval.tv_nsec = OCAP_VAT_TICK_NS;
    w->idle = 0;
    if (timer_settime(w->timer, 0, &its, NULL) == 0)
      w->armed = 1;
  }
}

/* Ends the allowance of v's outermost call. */
static void watchdog_stop(ocap_vat_t *v) {
  v->ticks_used = 0;
  if (v->watchdog != NULL && v->watchdog->mode == WATCHDOG_TIMER)
    v->ticks_used = v->watchdog->ticks - v->start_tick;
  if (v->watchdog != NULL)
    v->watchdog->current = v->outer_vat;
  v->watchdog = NULL;
}

/* The number of integers in [i, j], saturated so it cannot overflow. */
static long long range_count(lua_Integer i, lua_Integer j) {
  lua_Unsigned n;
  if (j < i)
    return 0;
  n = (lua_Unsigned)j - (lua_Unsigned)i;
  return n >= (lua_Unsigned)LLONG_MAX ? LLONG_MAX : (long long)n + 1;
}

/* ---------------------------------------------------------------------- */
/* Metered library functions                                              */

/*
 * The library functions the metered ones call. Lua's libraries make them
 * light C functions, the same in every state of the process, so they are
 * found once, in a state of their own, and each vat's metered functions
 * are light C functions too: a closure holding its original cost every
 * vat 48 bytes per function.
 */
enum {
  ORIG_STRING_BYTE,
  ORIG_STRING_CHAR,
  ORIG_STRING_FORMAT,
  ORIG_STRING_LOWER,
  ORIG_STRING_UPPER,
  ORIG_STRING_REVERSE,
  ORIG_STRING_SUB,
  ORIG_STRING_PACK,
  ORIG_STRING_PACKSIZE,
  ORIG_STRING_UNPACK,
  ORIG_STRING_REP,
  ORIG_TABLE_UNPACK,
  ORIG_TABLE_MOVE,
  ORIG_TABLE_SORT,
  ORIG_TABLE_PACK,
  ORIG_UTF8_CHAR,
  ORIG_UTF8_LEN,
  ORIG_UTF8_CODEPOINT,
  ORIG_UTF8_OFFSET,
  ORIG_UTF8_CODES,
  ORIG_MATH_MAX,
  ORIG_MATH_MIN,
  ORIG_RAWEQUAL,
  ORIG_SELECT,
  ORIG_TONUMBER,
  ORIG_CO_CREATE,
  ORIG_CO_CLOSE,
  ORIG_COUNT
};

/* Each original's library (NULL: the base library's globals) and name. */
static const char *const original_names[ORIG_COUNT][2] = {
    {LUA_STRLIBNAME, "byte"},    {LUA_STRLIBNAME, "char"},   {LUA_STRLIBNAME, "format"},
    {LUA_STRLIBNAME, "lower"},   {LUA_STRLIBNAME, "upper"},  {LUA_STRLIBNAME, "reverse"},
    {LUA_STRLIBNAME, "sub"},     {LUA_STRLIBNAME, "pack"},   {LUA_STRLIBNAME, "packsize"},
    {LUA_STRLIBNAME, "unpack"},  {LUA_STRLIBNAME, "rep"},    {LUA_TABLIBNAME, "unpack"},
    {LUA_TABLIBNAME, "move"},    {LUA_TABLIBNAME, "sort"},   {LUA_TABLIBNAME, "pack"},
    {LUA_UTF8LIBNAME, "char"},   {LUA_UTF8LIBNAME, "len"},   {LUA_UTF8LIBNAME, "codepoint"},
    {LUA_UTF8LIBNAME, "offset"}, {LUA_UTF8LIBNAME, "codes"}, {LUA_MATHLIBNAME, "max"},
    {LUA_MATHLIBNAME, "min"},    {NULL, "rawequal"},         {NULL, "select"},
    {NULL, "tonumber"},          {LUA_COLIBNAME, "create"},  {LUA_COLIBNAME, "close"},
};

static lua_CFunction originals[ORIG_COUNT];
static pthread_once_t originals_once = PTHREAD_ONCE_INIT;

static int read_libraries(lua_State *L);

/* [-0, +0, e] Opens the libraries in a scratch state and reads each
 * original off them, one not found (or not a C function) staying NULL,
 * and the library functions the sandbox gives as they are. */
static int read_originals(lua_State *L) {
  luaL_openlibs(L);
  for (int k = 0; k < ORIG_COUNT; k++) {
    if (original_names[k][0] != NULL) {
      lua_getglobal(L, original_names[k][0]);
      lua_getfield(L, -1, original_names[k][1]);
    } else {
      lua_getglobal(L, original_names[k][1]);
    }
    originals[k] = lua_tocfunction(L, -1);
    lua_settop(L, 0);
  }
  if (!read_libraries(L))
    return luaL_error(L, "a library function cannot be shared");
  return 0;
}

/* Fills originals, once per process; a scratch state that cannot be made
 * leaves them NULL, and vat_setup then refuses to make a vat. */
static void find_originals(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return;
  lua_pushcfunction(L, read_originals);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK)
    memset(originals, 0, sizeof originals);
  lua_close(L);
}

/* [-0, +0] Whether every original was found. */
static int have_originals(void) {
  pthread_once(&originals_once, find_originals);
  for (int k = 0; k < ORIG_COUNT; k++)
    if (originals[k] == NULL)
      return 0;
  return 1;
}

/*
 * [-0, +r, e] Calls the original library function `which` with the
 * arguments as they are now and returns its r results. It runs in a
 * frame of its own, as it did when it was the metered function's
 * upvalue, so the errors it raises read as they always have.
 */
static int call_original(lua_State *L, int which) {
  lua_pushcfunction(L, originals[which]);
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/*
 * [-0, +0, e] Whether the length of the value at arg can be taken without
 * raising; the original functions raise their own argument errors
 * otherwise.
 */
static int has_length(lua_State *L, int arg) {
  int t = lua_type(L, arg);
  if (t == LUA_TTABLE || t == LUA_TSTRING)
    return 1;
  if (luaL_getmetafield(L, arg, "__len") == LUA_TNIL)
    return 0;
  lua_pop(L, 1);
  return 1;
}

/*
 * lauxlib's string buffers ask the allocator once, without the emergency
 * collection Lua's own allocations get, so garbage would count as
 * exhaustion. The buffer-building functions run under this wrapper: on a
 * memory error it collects and tries once more; a second refusal in a row
 * marks the vat (vat_alloc), so a real exhaustion still ends it.
 * [-n, +r] Calls f with the stack as its arguments, of which f reads the
 * first nargs: the rest are dropped, since copying them all could need
 * more stack than a C function is given (a vat may pass a stack's worth).
 */
static int with_collection(lua_State *L, lua_CFunction f, int nargs) {
  if (lua_gettop(L) > nargs)
    lua_settop(L, nargs);
  int n = lua_gettop(L);
  lua_pushcfunction(L, f);
  for (int i = 1; i <= n; i++)
    lua_pushvalue(L, i);
  int status = lua_pcall(L, n, LUA_MULTRET, 0);
  if (status == LUA_OK)
    return lua_gettop(L) - n;
  if (status != LUA_ERRMEM)
    return lua_error(L);
  lua_settop(L, n);
  lua_gc(L, LUA_GCCOLLECT, 0);
  lua_pushcfunction(L, f);
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

/* A memory error caught inside the vat still ends it: exhaustion is not an
 * error a vat may recover from. */
static void note_status(lua_State *L, int status) {
  ocap_vat_t *v = ocap_vat_from_state(L);
  if (status == LUA_ERRMEM && v != NULL && v->meter.fatal == 0)
    v->meter.fatal = OCAP_VAT_MEMORY;
}

/*
 * [-0, +1, e] string.rep. The original loops once per copy even when the
 * copies are empty, so string.rep('', 1e18) would spin in C for years
 * without allocating or executing an instruction.
 */
static int vat_string_rep(lua_State *L) {
  size_t l, lsep;
  luaL_checklstring(L, 1, &l);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (n <= 0 || l + lsep == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  if (l + lsep >= l && l + lsep <= (size_t)INT_MAX / (lua_Unsigned)n) {
    size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
    vat_charge(L, 1 + n / 4 + (long long)(total / BYTES_PER_INSTRUCTION));
  }
  return with_collection(L, originals[ORIG_STRING_REP], 3);
}

/* ---------------------------------------------------------------------- */
/* Charges for the rest of the library                                    */

/*
 * Every function the sandbox exposes, and how its work is bounded. "O(1)"
 * means constant work, or work bounded by the number of values the VM
 * already copied to call it; "charged" costs are in instructions, from
 * measurements of each function against a plain instruction (about 1.4 ns
 * of CPU on the reference machine; see docs/security.md).
 *
 *   base       assert, getmetatable, ipairs, next, pairs, rawget,
 *              rawlen, rawset, setmetatable, tostring, type, _VERSION: O(1)
 *              (tostring's __tostring and pairs' __pairs run metered Lua).
 *              pcall, xpcall: 50, plus 100 per error caught.
 *              error: 1 per 8 levels of a level above 8 (the stack walk).
 *              rawequal: 1 per 64 bytes of two equal-length strings.
 *              select: 1 per result.
 *              tonumber: 1 per byte of a string (1 per 2 without a base).
 *              require: 4 per byte of a module's source, once.
 *   string     byte: 1.5 per value. char: 2 per character. format: 1 per
 *              byte of the format, 1 per 64 bytes of each %s argument, 1.5
 *              per byte of each %q argument. len: O(1). lower, upper,
 *              reverse: 1 per 2 bytes. rep: 1 per 4 copies and per 64
 *              bytes. sub: 1 per 64 bytes of the result. pack: 4 per byte
 *              of the format, 1 per 64 bytes of string arguments. packsize,
 *              unpack: 4 per byte of the format (unpack: 1 per 64 bytes of
 *              the data too when the format reads zero-terminated strings).
 *              find, match, gmatch, gsub: lmatch.c, 1 per matching step.
 *              dump: not exposed.
 *   table      concat: 1 per element and 1 per 8 bytes. insert, remove,
 *              move, unpack: 1 per element moved or returned. pack: 1 per
 *              element. sort: n log2 n comparisons, each 1 plus 1 per 64
 *              bytes of the longest string in the table.
 *   utf8       char: 4 per code point. charpattern: a string. codepoint: 2
 *              per byte. len: 1.5 per byte. offset: 1 per 4 bytes it moves
 *              over, charged once it returns. codes: each step 1 per 4
 *              continuation bytes it skips.
 *   math       everything O(1) except max and min: 1 per argument. random
 *              and randomseed: not exposed (an endowment).
 *   coroutine  create, wrap: 1000 (a granule). close, isyieldable,
 *              resume, running, status, yield: O(1) (close runs metered
 *              __close handlers).
 *
 * What the VM itself does in one instruction is outside this table:
 * comparing, hashing and concatenating strings take time in proportion to
 * their length. The time backstop (below) bounds those.
 */

/*
 * [-0, +0, e] Charges units of work at a cost of sixty_fourths/64
 * instructions each (costs are given in 64ths of an instruction per unit),
 * saturating instead of overflowing.
 */
static void charge_units(lua_State *L, double units, int sixty_fourths) {
  double cost = 1 + units * sixty_fourths / 64.0;
  vat_charge(L, cost >= (double)LLONG_MAX ? LLONG_MAX : (long long)cost);
}

/* [-0, +0] The length of the string at arg, or 0 when it is not a string. */
static size_t string_len_at(lua_State *L, int arg) {
  return lua_type(L, arg) == LUA_TSTRING ? lua_rawlen(L, arg) : 0;
}

/*
 * The 1-based [i, j] slice of a string of len bytes that string.sub and
 * string.byte use, as a count of bytes (0 when empty).
 */
static double slice_len(lua_Integer i, lua_Integer j, size_t len) {
  lua_Integer l = (lua_Integer)len;
  if (i < 0)
    i = i < -l ? 1 : l + i + 1;
  else if (i == 0)
    i = 1;
  if (j < 0)
    j = j < -l ? 0 : l + j + 1;
  else if (j > l)
    j = l;
  return i > j ? 0 : (double)(j - i) + 1;
}

/* [-0, +1, e] string.lower, string.upper, string.reverse: per byte. */
static int string_bytewise(lua_State *L, int which) {
  charge_units(L, (double)string_len_at(L, 1), 32);
  return call_original(L, which);
}

/* [-0, +1, e] string.lower. */
static int vat_string_lower(lua_State *L) {
  return string_bytewise(L, ORIG_STRING_LOWER);
}

/* [-0, +1, e] string.upper. */
static int vat_string_upper(lua_State *L) {
  return string_bytewise(L, ORIG_STRING_UPPER);
}

/* [-0, +1, e] string.reverse. */
static int vat_string_reverse(lua_State *L) {
  return string_bytewise(L, ORIG_STRING_REVERSE);
}

/*
 * [-0, +1, e] string.sub: per byte of the result. The arguments are read
 * as the original reads them (a float or numeric string is an index too),
 * raising its own errors.
 */
static int vat_string_sub(lua_State *L) {
  size_t len;
  luaL_checklstring(L, 1, &len);
  charge_units(L, slice_len(luaL_checkinteger(L, 2), luaL_optinteger(L, 3, -1), len), 1);
  return call_original(L, ORIG_STRING_SUB);
}

/* [-0, +n, e] string.byte: per value returned. */
static int vat_string_byte(lua_State *L) {
  size_t len;
  lua_Integer i;
  luaL_checklstring(L, 1, &len);
  i = luaL_optinteger(L, 2, 1);
  charge_units(L, slice_len(i, luaL_optinteger(L, 3, i), len), 96);
  return call_original(L, ORIG_STRING_BYTE);
}

/* [-n, +1, e] string.char: per argument. */
static int vat_string_char(lua_State *L) {
  charge_units(L, lua_gettop(L), 128);
  return call_original(L, ORIG_STRING_CHAR);
}

/*
 * [-n, +1, e] string.format: per byte of the format, and per byte of each
 * string argument, at the cost of the conversion that takes it (%q
 * escapes byte by byte, %s copies). The format is scanned here the way
 * string.format reads it: flags, width and precision, then the conversion.
 */
static int vat_string_format(lua_State *L) {
  size_t lf;
  const char *f = lua_tolstring(L, 1, &lf);
  const char *end = f + lf;
  double cost = (double)lf * 64;
  int arg = 1;
  if (f == NULL)
    return call_original(L, ORIG_STRING_FORMAT);
  while (f < end) {
    if (*f++ != '%')
      continue;
    if (f < end && *f == '%') {
      f++;
      continue;
    }
    while (f < end && strchr("-+ #0123456789.", *f) != NULL)
      f++;
    if (f < end) {
      arg++;
      if (lua_type(L, arg) == LUA_TSTRING)
        cost += (double)lua_rawlen(L, arg) * (*f == 'q' ? 96 : 1);
      f++;
    }
  }
  charge_units(L, cost, 1);
  return call_original(L, ORIG_STRING_FORMAT);
}

/*
 * [-n, +r, e] string.pack and string.packsize: per byte of the format
 * (spaces and alignment options cost time but produce nothing), and per
 * byte of the strings pack copies.
 */
static int string_pack(lua_State *L, int which) {
  double cost = (double)string_len_at(L, 1) * 256;
  int n = lua_gettop(L);
  for (int k = 2; k <= n; k++)
    cost += (double)string_len_at(L, k);
  charge_units(L, cost, 1);
  return call_original(L, which);
}

/* [-n, +1, e] string.pack. */
static int vat_string_pack(lua_State *L) {
  return string_pack(L, ORIG_STRING_PACK);
}

/* [-1, +1, e] string.packsize. */
static int vat_string_packsize(lua_State *L) {
  return string_pack(L, ORIG_STRING_PACKSIZE);
}

/*
 * [-(2|3), +r, e] string.unpack: per byte of the format, and per byte of
 * the data when the format reads zero-terminated strings (`z`), which
 * scan for their end; other options read a fixed or prefixed size, so a
 * loop that unpacks a long buffer piece by piece stays linear.
 */
static int vat_string_unpack(lua_State *L) {
  size_t lf;
  const char *f = lua_tolstring(L, 1, &lf);
  double cost = (double)lf * 256;
  if (f != NULL && memchr(f, 'z', lf) != NULL)
    cost += (double)string_len_at(L, 2);
  charge_units(L, cost, 1);
  return call_original(L, ORIG_STRING_UNPACK);
}

/*
 * [-(1|2), +0, e] error: a string message gets the position of the
 * function `level` frames up, found by walking the call stack one frame
 * at a time, so a large level costs as many steps as the stack is deep.
 * Charged 1 per 8 levels asked for (ordinary levels are 1 to 3). It does
 * what lbaselib.c's error does rather than calling it, since an extra C
 * frame would shift every level by one.
 */
static int vat_error(lua_State *L) {
  lua_Integer level = luaL_optinteger(L, 2, 1);
  lua_settop(L, 1);
  if (lua_type(L, 1) == LUA_TSTRING && level > 0) {
    if (level > 8)
      charge_units(L, (double)level, 8);
    luaL_where(L, level > INT_MAX ? INT_MAX : (int)level);
    lua_pushvalue(L, 1);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

/* [-2, +1, e] rawequal: two strings of equal length are compared bytewise. */
static int vat_rawequal(lua_State *L) {
  size_t a = string_len_at(L, 1);
  if (a > 0 && a == string_len_at(L, 2))
    charge_units(L, (double)a, 1);
  return call_original(L, ORIG_RAWEQUAL);
}

/* [-n, +r, e] select, math.max, math.min, table.pack: per argument. */
static int per_argument(lua_State *L, int which) {
  charge_units(L, lua_gettop(L), 64);
  return call_original(L, which);
}

/* [-n, +r, e] select. */
static int vat_select(lua_State *L) {
  return per_argument(L, ORIG_SELECT);
}

/* [-n, +1, e] math.max. */
static int vat_math_max(lua_State *L) {
  return per_argument(L, ORIG_MATH_MAX);
}

/* [-n, +1, e] math.min. */
static int vat_math_min(lua_State *L) {
  return per_argument(L, ORIG_MATH_MIN);
}

/* [-n, +1, e] table.pack. */
static int vat_table_pack(lua_State *L) {
  return per_argument(L, ORIG_TABLE_PACK);
}

/* [-(1|2), +1, e] tonumber: a string is scanned in full. */
static int vat_tonumber(lua_State *L) {
  charge_units(L, (double)string_len_at(L, 1), lua_isnoneornil(L, 2) ? 32 : 64);
  return call_original(L, ORIG_TONUMBER);
}

/* [-n, +1, e] utf8.char: per code point. */
static int vat_utf8_char(lua_State *L) {
  charge_units(L, lua_gettop(L), 256);
  return call_original(L, ORIG_UTF8_CHAR);
}

/*
 * [-n, +r, e] utf8.len and utf8.codepoint: cost per byte of the range
 * they decode, which starts at dflt_i and ends at the string's end, or at
 * i when dflt_j_is_i is set.
 */
static int utf8_range(lua_State *L, lua_Integer dflt_i, int dflt_j_is_i, int cost, int which) {
  size_t len;
  lua_Integer i;
  luaL_checklstring(L, 1, &len);
  i = luaL_optinteger(L, 2, dflt_i);
  charge_units(L, slice_len(i, luaL_optinteger(L, 3, dflt_j_is_i ? i : -1), len), cost);
  return call_original(L, which);
}

/* [-n, +r, e] utf8.len. */
static int vat_utf8_len(lua_State *L) {
  return utf8_range(L, 1, 0, 96, ORIG_UTF8_LEN);
}

/* [-n, +r, e] utf8.codepoint. */
static int vat_utf8_codepoint(lua_State *L) {
  return utf8_range(L, 1, 1, 128, ORIG_UTF8_CODEPOINT);
}

/*
 * [-n, +1, e] utf8.offset: charged once it returns, for the bytes between
 * where it started and where it stopped; it moves over continuation bytes
 * one at a time, so its work is bounded by the string but not by n.
 */
static int vat_utf8_offset(lua_State *L) {
  size_t len = string_len_at(L, 1);
  lua_Integer n = luaL_optinteger(L, 2, 0);
  lua_Integer i = luaL_optinteger(L, 3, n >= 0 ? 1 : (lua_Integer)len + 1);
  int r = call_original(L, ORIG_UTF8_OFFSET);
  if (lua_isinteger(L, -1)) {
    lua_Integer at = lua_tointeger(L, -1);
    charge_units(L, (double)(at > i ? at - i : i - at), 16);
  } else {
    charge_units(L, (double)len, 16);
  }
  return r;
}

/*
 * [-2, +(0|2), e] The step function utf8.codes returns, wrapped: a step
 * skips every continuation byte after the previous character, and can be
 * called directly at any position, so it is charged for the run it skips.
 * Upvalue 1 is the original step function.
 */
static int vat_utf8_step(lua_State *L) {
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  if (s != NULL && lua_isinteger(L, 2)) {
    lua_Integer n = lua_tointeger(L, 2);
    size_t k = n > 0 ? (size_t)n : 0, run = 0;
    while (k + run < len && ((unsigned char)s[k + run] & 0xC0) == 0x80)
      run++;
    charge_units(L, (double)run, 16);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* [-(1|2), +3, e] utf8.codes, returning the metered step function. */
static int vat_utf8_codes(lua_State *L) {
  int r = call_original(L, ORIG_UTF8_CODES);
  if (r == 3) {
    lua_pushvalue(L, -3);
    lua_pushcclosure(L, vat_utf8_step, 1);
    lua_replace(L, -4);
  }
  return r;
}

/*
 * [-0, +0, e] Checks that arg is a table, or behaves like one for reading,
 * taking its length and, when write is set, writing, as ltablib.c's
 * checktab does.
 */
static void check_table_like(lua_State *L, int arg, int write) {
  static const char *const fields[] = {"__index", "__len", "__newindex"};
  if (lua_type(L, arg) == LUA_TTABLE)
    return;
  if (lua_getmetatable(L, arg)) {
    int ok = 1;
    for (int k = 0; k < (write ? 3 : 2) && ok; k++) {
      lua_pushstring(L, fields[k]);
      ok = lua_rawget(L, -2) != LUA_TNIL;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (ok)
      return;
  }
  luaL_checktype(L, arg, LUA_TTABLE);
}

/* [-0, +0, e] Appends t[i] (t at index 1) to b, as ltablib.c's addfield. */
static void concat_field(lua_State *L, luaL_Buffer *b, lua_Integer i) {
  lua_geti(L, 1, i);
  if (!lua_isstring(L, -1))
    luaL_error(L, "invalid value (at index %I) in table for 'concat'", (LUAI_UACINT)i);
  /* Copying costs 1 instruction per 8 bytes, the separator included. */
  vat_charge(L, (long long)((lua_rawlen(L, -1) + lua_rawlen(L, 2)) / 8));
  luaL_addvalue(b);
}

/*
 * [-0, +1, e] table.concat, rewritten to charge each element as it goes:
 * a range is only as long as its elements are present or metered __index
 * calls supply them, so the charge stays exact even for a wrong range.
 */
static int table_concat_body(lua_State *L) {
  luaL_Buffer b;
  lua_Integer last, i;
  size_t lsep;
  const char *sep;
  check_table_like(L, 1, 0);
  last = luaL_len(L, 1);
  sep = luaL_optlstring(L, 2, "", &lsep);
  i = luaL_optinteger(L, 3, 1);
  last = luaL_optinteger(L, 4, last);
  luaL_buffinit(L, &b);
  for (; i < last; i++) {
    vat_charge(L, 1);
    concat_field(L, &b, i);
    luaL_addlstring(&b, sep, lsep);
  }
  if (i == last)
    concat_field(L, &b, i);
  luaL_pushresult(&b);
  return 1;
}

/* table.concat, charged per element, with a collection before giving up. */
static int vat_table_concat(lua_State *L) {
  return with_collection(L, table_concat_body, 4);
}

/* [-0, +(j-i+1), e] table.unpack, charged per element. */
static int vat_table_unpack(lua_State *L) {
  lua_Integer i = luaL_optinteger(L, 2, 1);
  lua_Integer j;
  if (!lua_isnoneornil(L, 3))
    j = luaL_checkinteger(L, 3);
  else if (has_length(L, 1))
    j = luaL_len(L, 1);
  else
    return call_original(L, ORIG_TABLE_UNPACK);
  /* More than a stack's worth raises "too many results" before any work. */
  if (range_count(i, j) <= LUAI_MAXSTACK)
    vat_charge(L, range_count(i, j));
  lua_settop(L, 3);
  lua_pushinteger(L, i);
  lua_replace(L, 2);
  lua_pushinteger(L, j);
  lua_replace(L, 3);
  return call_original(L, ORIG_TABLE_UNPACK);
}

/*
 * [-0, +1, e] table.move, charged per element. Moving nils allocates
 * nothing, so without the charge table.move({}, 1, 1e15, 2) would loop in C
 * unmetered. The original's own range checks come first so that bad
 * arguments still raise an ordinary error.
 */
static int vat_table_move(lua_State *L) {
  lua_Integer f = luaL_checkinteger(L, 2);
  lua_Integer e = luaL_checkinteger(L, 3);
  lua_Integer t = luaL_checkinteger(L, 4);
  if (e >= f) {
    luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
    luaL_argcheck(L, t <= LUA_MAXINTEGER - (e - f), 4, "destination wrap around");
    vat_charge(L, range_count(f, e));
  }
  return call_original(L, ORIG_TABLE_MOVE);
}

/*
 * [-0, +1, e] table.sort, charged n log n comparisons for the length it
 * sees. Without a comparator, strings are compared bytewise up to their
 * first difference, so each comparison also costs 1 per 64 bytes of the
 * longest string in the table (found by a scan that costs 1 per element).
 * A __len that answers differently the second time can only make the
 * original sort read absent elements, which raises or runs metered Lua
 * code.
 */
static int vat_table_sort(lua_State *L) {
  if (has_length(L, 1)) {
    lua_Integer n = luaL_len(L, 1);
    double cost = 1;
    size_t longest = 0;
    for (lua_Integer k = n; k > 1; k >>= 1)
      cost++;
    /* The original refuses INT_MAX elements or more before any work. */
    if (n > 0 && n < INT_MAX) {
      if (lua_isnoneornil(L, 2) && lua_type(L, 1) == LUA_TTABLE) {
        vat_charge(L, n);
        for (lua_Integer k = 1; k <= n; k++) {
          if (lua_rawgeti(L, 1, k) == LUA_TSTRING && lua_rawlen(L, -1) > longest)
            longest = lua_rawlen(L, -1);
          lua_pop(L, 1);
        }
      }
      charge_units(L, (double)n * cost, 64 + (longest > INT_MAX / 2 ? INT_MAX / 2 : (int)longest));
    }
  }
  return call_original(L, ORIG_TABLE_SORT);
}

/*
 * [-0, +0, e] table.insert. Rewritten rather than wrapped because the
 * original takes #t itself, and a __len metamethod could report a small
 * length to the charge and a huge one to the shifting loop.
 */
static int vat_table_insert(lua_State *L) {
  lua_Integer e, pos;
  check_table_like(L, 1, 1);
  e = luaL_len(L, 1);
  e = (lua_Integer)((lua_Unsigned)e + 1u);
  switch (lua_gettop(L)) {
  case 2:
    pos = e;
    break;
  case 3:
    pos = luaL_checkinteger(L, 2);
    luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
    if (e > pos)
      vat_charge(L, range_count(pos, e - 1));
    for (lua_Integer i = e; i > pos; i--) {
      lua_geti(L, 1, i - 1);
      lua_seti(L, 1, i);
    }
    break;
  default:
    return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lua_seti(L, 1, pos);
  return 0;
}

/* [-0, +1, e] table.remove, rewritten for the same reason as insert. */
static int vat_table_remove(lua_State *L) {
  lua_Integer size, pos;
  check_table_like(L, 1, 1);
  size = luaL_len(L, 1);
  pos = luaL_optinteger(L, 2, size);
  if (pos != size)
    luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
  if (pos < size)
    vat_charge(L, range_count(pos, size - 1));
  lua_geti(L, 1, pos);
  for (; pos < size; pos++) {
    lua_geti(L, 1, pos + 1);
    lua_seti(L, 1, pos);
  }
  lua_pushnil(L);
  lua_seti(L, 1, pos);
  return 1;
}

/*
 * [-0, +1, e] setmetatable, refusing metatables with a __gc field. Lua runs
 * finalizers with hooks disabled, so a finalizer could loop forever
 * unmetered; the field is checked raw because that is how Lua decides
 * whether to register the object for finalization, even when __gc is not
 * yet a function.
 */
static int vat_setmetatable(lua_State *L) {
  int t = lua_type(L, 2);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  if (t == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL)
      return luaL_error(L, "__gc metamethods are not allowed in a vat");
    lua_pop(L, 1);
  }
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    return luaL_error(L, "cannot change a protected metatable");
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
}

/*
 * rawset that refuses tables with a protected metatable (exos, presences,
 * stores, hardened tables): those objects are immutable, and rawset would
 * otherwise go around their __newindex.
 */
static int vat_rawset(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkany(L, 2);
  luaL_checkany(L, 3);
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    return luaL_error(L, "rawset: cannot modify a protected object");
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 1;
}

/*
 * [-0, +(1|2)] Continuation of pcall, after lbaselib.c's finishpcall: returns
 * true and the results, or false and the error, charging for the error.
 */
static int pcall_done(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  if (status == LUA_OK || status == LUA_YIELD)
    return lua_gettop(L);
  note_status(L, status);
  vat_charge(L, ERROR_COST);
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
}

/* [-n, +(1|2)] pcall(f, ...), charging for the call and any error it catches. */
static int vat_pcall(lua_State *L) {
  luaL_checkany(L, 1);
  vat_charge(L, PCALL_COST);
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  return pcall_done(L, lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, pcall_done), 0);
}

/*
 * Lua calls a message handler where the error happened, before unwinding.
 * When the error is the meter's, raised from inside the count hook, Lua has
 * hooks switched off for the thread (it does so around every hook call), so
 * a vat's xpcall handler that loops there would run unmetered forever. The
 * vat's xpcall therefore installs a C handler that calls the vat's handler
 * only while the vat is not fatal; every other error is raised outside any
 * hook, where the handler is metered like any other code.
 */

/* [-1, +1] xpcall's message handler; upvalue 1 is the vat's handler. */
static int xpcall_handler(lua_State *L) {
  ocap_vat_t *v = ocap_vat_from_state(L);
  if (v != NULL && v->meter.fatal)
    return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/*
 * [-0, +(1|2)] Continuation of xpcall, with the function and handler below
 * true at index 3: returns true and the results, or false and the error,
 * charging for the error.
 */
static int xpcall_done(lua_State *L, int status, lua_KContext extra) {
  if (status == LUA_OK || status == LUA_YIELD)
    return lua_gettop(L) - (int)extra;
  note_status(L, status);
  vat_charge(L, ERROR_COST);
  lua_pushboolean(L, 0);
  lua_pushvalue(L, -2);
  return 2;
}

/* [-n, +(1|2)] xpcall(f, msgh, ...), as lbaselib.c's with msgh wrapped. */
static int vat_xpcall(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  vat_charge(L, PCALL_COST);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, xpcall_handler, 1);
  lua_replace(L, 2);
  lua_pushboolean(L, 1);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 2);
  return xpcall_done(L, lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, xpcall_done), 2);
}

/*
 * A coroutine that the meter killed still has hooks switched off, because
 * the error left the hook by longjmp and only a pcall on the same thread
 * would have restored them. Closing such a coroutine would run its pending
 * __close metamethods unmetered, so once the vat is fatal, coroutine.close
 * and the functions made by coroutine.wrap raise the fatal error instead.
 */

/*
 * [-0, +0] on from; [-narg, +nres] on co: lua_resume, with co recorded as the
 * thread running vat code while it runs, so that the watchdog stops the
 * right thread. A coroutine resumed after the allowance ran out stops at
 * its first instruction.
 */
static int tracked_resume(ocap_vat_t *v, lua_State *co, lua_State *from, int narg, int *nres) {
  lua_State *outer;
  int status;
  if (v == NULL)
    return lua_resume(co, from, narg, nres);
  outer = atomic_load_explicit(&v->running, memory_order_relaxed);
  atomic_store_explicit(&v->running, co, memory_order_relaxed);
  if (v->meter.expired && v->meter.depth > 0)
    lua_sethook(co, vat_hook, LUA_MASKCOUNT, 1);
  status = lua_resume(co, from, narg, nres);
  atomic_store_explicit(&v->running, outer, memory_order_relaxed);
  return status;
}

/* [-n, +(results)] The function coroutine.wrap returns; upvalue 1 is the thread. */
static int wrap_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  ocap_vat_t *v = ocap_vat_from_state(L);
  int narg = lua_gettop(L);
  int nres, status;
  if (!lua_checkstack(co, narg))
    return luaL_error(L, "too many arguments to resume");
  lua_xmove(L, co, narg);
  status = tracked_resume(v, co, L, narg, &nres);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      return luaL_error(L, "too many results to resume");
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  note_status(L, status);
  lua_xmove(co, L, 1);
  if (v != NULL && v->meter.fatal) {
    if (v->meter.depth > 0)
      return vat_die(L, v);
    return lua_error(L);
  }
  status = lua_status(co);
  if (status != LUA_OK && status != LUA_YIELD) {
    /* The coroutine died: close its variables, as the original does. */
    status = lua_resetthread(co);
    lua_pop(L, 1);
    lua_xmove(co, L, 1);
  }
  if (status != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

/*
 * The count hook counts down per thread, and a new thread starts with a full
 * granule, so a coroutine that runs fewer than OCAP_VAT_GRANULE instructions
 * before it dies is never charged. Creating a thread therefore charges the
 * granule up front; otherwise a chain of short-lived coroutines could run
 * hundreds of times its budget.
 */

/* [-n, +(results)] coroutine.resume, as lcorolib.c's, noting memory errors. */
static int vat_coroutine_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  int narg = lua_gettop(L) - 1;
  int nres, status;
  if (!lua_checkstack(co, narg)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "too many arguments to resume");
    return 2;
  }
  if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "cannot resume dead coroutine");
    return 2;
  }
  lua_xmove(L, co, narg);
  status = tracked_resume(ocap_vat_from_state(L), co, L, narg, &nres);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "too many results to resume");
      return 2;
    }
    lua_pushboolean(L, 1);
    lua_xmove(co, L, nres);
    return nres + 1;
  }
  note_status(L, status);
  {
    ocap_vat_t *v = ocap_vat_from_state(L);
    if (v != NULL && v->meter.fatal && v->meter.depth > 0) {
      lua_xmove(co, L, 1);
      return vat_die(L, v);
    }
  }
  lua_pushboolean(L, 0);
  lua_xmove(co, L, 1);
  return 2;
}

/* [-1, +1] coroutine.create, charged a granule. */
static int vat_coroutine_create(lua_State *L) {
  vat_charge(L, OCAP_VAT_GRANULE);
  return call_original(L, ORIG_CO_CREATE);
}

/* [-1, +1] coroutine.wrap, charged a granule, with the resume function above. */
static int vat_coroutine_wrap(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  vat_charge(L, OCAP_VAT_GRANULE);
  co = lua_newthread(L); /* copies L's hook, like coroutine.create */
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, wrap_resume, 1);
  return 1;
}

/* [-1, +(1|2)] coroutine.close, refused once the vat is fatal. */
static int vat_coroutine_close(lua_State *L) {
  ocap_vat_t *v = ocap_vat_from_state(L);
  if (v != NULL && v->meter.fatal) {
    if (v->meter.depth > 0)
      return vat_die(L, v);
    return luaL_error(L, "vat is fatal");
  }
  return call_original(L, ORIG_CO_CLOSE);
}

/* ---------------------------------------------------------------------- */
/* require                                                                */

/* The runtime module of that name, or NULL. */
static const ocap_vat_module_t *find_runtime(const ocap_vat_t *v, const char *name) {
  for (size_t i = 0; v != NULL && i < v->nruntime; i++)
    if (strcmp(v->runtime[i].name, name) == 0)
      return &v->runtime[i];
  return NULL;
}

/* [-0, +0] Whether name is the runtime's: `ocap.<anything>` and `cjson`
 * (`ocap` itself is the vat's own table). */
static int runtime_name(const char *name) {
  return strncmp(name, "ocap.", 5) == 0 || strcmp(name, "cjson") == 0;
}

/* __newindex of a runtime module's view  [-3, +0, e]; upvalue 1 is the
 * module's name. */
static int view_newindex(lua_State *L) {
  return luaL_error(L, "cannot modify runtime module '%s'", lua_tostring(L, lua_upvalueindex(1)));
}

/* The iterator of a view's __pairs  [-2, +(1|2), e]: next over the module,
 * its upvalue, which the view never hands out. */
static int view_next(lua_State *L) {
  lua_settop(L, 2);
  if (lua_next(L, lua_upvalueindex(1)))
    return 2;
  lua_pushnil(L);
  return 1;
}

/* __pairs of a view  [-1, +3]: view_next (its upvalue), the view, nil. */
static int view_pairs(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

/*
 * [-1, +1, e] Replaces the runtime module (a table) on top with the view
 * vat code gets of it, made once per module: its fields read through, and
 * writing one raises. The runtime loads some modules on first use and
 * calls their functions with what vat code must never hold (the raw
 * syscall table, liveslots' own state): a module vat code could change
 * would hand those to any function it put in the module's place.
 */
static void push_view(lua_State *L, const char *name) {
  int mod = lua_gettop(L);
  luaL_checkstack(L, 6, NULL);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_VIEWS) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_VIEWS);
  }
  lua_pushvalue(L, mod);
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L); /* the view */
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, mod);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, view_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, mod);
    lua_pushcclosure(L, view_next, 1);
    lua_pushcclosure(L, view_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushliteral(L, "runtime module");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, mod);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_replace(L, mod);
  lua_settop(L, mod);
}

/*
 * [-1, +1, e] load_module(name): the cached module value, or the module's code
 * run once with the name as its argument. The kernel's runtime modules come
 * first, so no preloaded module can stand in for one; they are read from
 * the kernel's buffer, since a copy in every vat would cost more than the
 * functions it makes, and run with the runtime's own globals. Nothing outside the vat's loaded
 * table, its preloaded sources and that runtime can be reached by name.
 */
static int load_module(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const ocap_vat_module_t *rt = find_runtime(ocap_vat_from_state(L), name);
  size_t len, charged;
  const char *src;
  int trusted;
  lua_settop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_LOADED); /* 2 */
  lua_pushvalue(L, 1);
  if (lua_rawget(L, 2) != LUA_TNIL) {
    if (lua_touserdata(L, -1) == (void *)&KEY_LOADING)
      return luaL_error(L, "module '%s' is required while it is being loaded (require loop)", name);
    return 1;
  }
  lua_pop(L, 1);
  if (rt != NULL) {
    src = rt->code;
    charged = len = rt->len;
    trusted = 1;
  } else {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_PRELOAD);
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) != LUA_TTABLE)
      return luaL_error(L, "module '%s' not found in this vat", name);
    lua_rawgeti(L, -1, 1);
    src = lua_tolstring(L, -1, &len); /* it stays on the stack, so it stays alive */
    charged = len;
    lua_rawgeti(L, -2, 2);
    trusted = lua_toboolean(L, -1);
    /* Code the kernel compiled is charged as the text it was made from. */
    if (lua_rawgeti(L, -3, 3) == LUA_TNUMBER)
      charged = (size_t)lua_tointeger(L, -1);
    lua_pop(L, 2);
  }
  /*
   * Parsing takes about as long per byte as four instructions, and a module
   * that fails is parsed again at every require, so loading is charged by
   * size.
   */
  vat_charge(L, 4 * (long long)charged);
  lua_pushfstring(L, "=%s", name);
  if (luaL_loadbufferx(L, src, len, lua_tostring(L, -1), trusted ? "bt" : "t") != LUA_OK)
    return luaL_error(L, "error loading module '%s': %s", name, lua_tostring(L, -1));
  if (rt != NULL) {
    /* A runtime module's _ENV, its main chunk's only upvalue, is the
     * runtime's own (see vat_setup). */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_RUNTIME_ENV);
    lua_setupvalue(L, -2, 1);
  }
  /* Mark the module as loading so that a require loop raises. */
  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, (void *)&KEY_LOADING);
  lua_rawset(L, 2);
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    /* Forget the mark and re-raise; a fatal vat re-raises on its own. */
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, 2);
    return lua_error(L);
  }
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -2);
  lua_rawset(L, 2);
  if (rt == NULL) {
    /* Loaded for good: its source is never read again, and would stay in
     * the heap as long as the vat lives. */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_PRELOAD);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  return 1;
}

/* [-1, +1, e] require(name), as load_module; the runtime's own require is
 * this function with a true upvalue (vat_setup), and vat code's gets a
 * runtime module as its view (push_view). */
static int vat_require(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  load_module(L);
  if (!lua_toboolean(L, lua_upvalueindex(1)) && runtime_name(name) && lua_type(L, -1) == LUA_TTABLE)
    push_view(L, name);
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Building the sandbox                                                   */

/*
 * The sandbox's tables are built from these lists, each at its final size,
 * rather than by opening the standard libraries and copying them: copying
 * made every vat intern and insert each name twice and left the libraries
 * behind as garbage for a full collection. An entry whose function is set
 * is ours (metered, above); one whose function is NULL is the library's
 * own, read once per process (read_libraries) and given as it is, a light
 * C function the same in every state. Names the sandbox leaves out are
 * simply not listed: string.dump, math.random and math.randomseed, and
 * every global but these. A name this Lua lacks (the 5.3 math functions
 * when it is built without LUA_COMPAT_MATHLIB) stays NULL and is left out,
 * as a copy would have left it out.
 */
static luaL_Reg base_lib[] = {
    {"assert", NULL},
    {"error", vat_error},
    {"getmetatable", NULL},
    {"ipairs", NULL},
    {"next", NULL},
    {"pairs", NULL},
    {"pcall", vat_pcall},
    {"rawequal", vat_rawequal},
    {"rawget", NULL},
    {"rawlen", NULL},
    {"rawset", vat_rawset},
    {"require", vat_require},
    {"select", vat_select},
    {"setmetatable", vat_setmetatable},
    {"tonumber", vat_tonumber},
    {"tostring", NULL},
    {"type", NULL},
    {"xpcall", vat_xpcall},
    {NULL, NULL},
};

/*
 * And the pattern functions, ocap_match_funcs: lmatch.c's, which count
 * their steps and, as light C functions with no meter of their own, charge
 * them to the vat, one instruction a step, so that a match that backtracks
 * exponentially simply runs out of budget. A step costs about as much time
 * as an instruction (docs/security.md has the figures).
 */
static luaL_Reg string_lib[] = {
    {"byte", vat_string_byte},
    {"char", vat_string_char},
    {"format", vat_string_format},
    {"len", NULL},
    {"lower", vat_string_lower},
    {"pack", vat_string_pack},
    {"packsize", vat_string_packsize},
    {"rep", vat_string_rep},
    {"reverse", vat_string_reverse},
    {"sub", vat_string_sub},
    {"unpack", vat_string_unpack},
    {"upper", vat_string_upper},
    {NULL, NULL},
};

/* The string metatable's, which coerce strings in arithmetic; __index and
 * __metatable are set apart. */
static luaL_Reg string_mt_lib[] = {
    {"__add", NULL}, {"__div", NULL}, {"__idiv", NULL}, {"__mod", NULL}, {"__mul", NULL},
    {"__pow", NULL}, {"__sub", NULL}, {"__unm", NULL},  {NULL, NULL},
};

static const luaL_Reg table_lib[] = {
    {"concat", vat_table_concat}, {"insert", vat_table_insert},
    {"move", vat_table_move},     {"pack", vat_table_pack},
    {"remove", vat_table_remove}, {"sort", vat_table_sort},
    {"unpack", vat_table_unpack}, {NULL, NULL},
};

/* And its four constants (set_math_constants). */
static luaL_Reg math_lib[] = {
    {"abs", NULL},
    {"acos", NULL},
    {"asin", NULL},
    {"atan", NULL},
    {"ceil", NULL},
    {"cos", NULL},
    {"deg", NULL},
    {"exp", NULL},
    {"floor", NULL},
    {"fmod", NULL},
    {"log", NULL},
    {"max", vat_math_max},
    {"min", vat_math_min},
    {"modf", NULL},
    {"rad", NULL},
    {"sin", NULL},
    {"sqrt", NULL},
    {"tan", NULL},
    {"tointeger", NULL},
    {"type", NULL},
    {"ult", NULL},
    /* Lua 5.3's, which a Lua built with LUA_COMPAT_MATHLIB keeps. */
    {"atan2", NULL},
    {"cosh", NULL},
    {"frexp", NULL},
    {"ldexp", NULL},
    {"log10", NULL},
    {"pow", NULL},
    {"sinh", NULL},
    {"tanh", NULL},
    {NULL, NULL},
};

/*
 * The runtime's own math holds only what runtime modules use, and a few
 * more of the same kind, with the four constants: 16 entries take a hash
 * part of 16 slots (384 bytes) where the vat's 33 take 64.
 */
static luaL_Reg runtime_math_lib[] = {
    {"abs", NULL},  {"ceil", NULL},        {"floor", NULL},       {"fmod", NULL},
    {"log", NULL},  {"max", vat_math_max}, {"min", vat_math_min}, {"modf", NULL},
    {"sqrt", NULL}, {"tointeger", NULL},   {"type", NULL},        {"ult", NULL},
    {NULL, NULL},
};

/* And utf8.charpattern (vat_setup). */
static const luaL_Reg utf8_lib[] = {
    {"char", vat_utf8_char}, {"codepoint", vat_utf8_codepoint}, {"codes", vat_utf8_codes},
    {"len", vat_utf8_len},   {"offset", vat_utf8_offset},       {NULL, NULL},
};

static luaL_Reg coroutine_lib[] = {
    {"close", vat_coroutine_close},
    {"create", vat_coroutine_create},
    {"isyieldable", NULL},
    {"resume", vat_coroutine_resume},
    {"running", NULL},
    {"status", NULL},
    {"wrap", vat_coroutine_wrap},
    {"yield", NULL},
    {NULL, NULL},
};

/*
 * [-0, +0, e] Fills the library's entries of lib from the table on top.
 * Returns 0 if one is there but is not a C function without upvalues,
 * which could not be shared as a light C function.
 */
static int read_library(lua_State *L, luaL_Reg *lib) {
  for (luaL_Reg *r = lib; r->name != NULL; r++) {
    if (r->func != NULL)
      continue;
    int t = lua_getfield(L, -1, r->name);
    if (t != LUA_TNIL && (!lua_iscfunction(L, -1) || lua_getupvalue(L, -1, 1) != NULL))
      return 0;
    r->func = lua_tocfunction(L, -1);
    lua_pop(L, 1);
  }
  return 1;
}

/* [-0, +0, e] Fills every list's library entries from the libraries, which
 * L has open. Returns 0 if one could not be read. */
static int read_libraries(lua_State *L) {
  static const struct {
    const char *name; /* NULL: the string metatable */
    luaL_Reg *lib;
  } lists[] = {
      {LUA_GNAME, base_lib},
      {LUA_STRLIBNAME, string_lib},
      {NULL, string_mt_lib},
      {LUA_MATHLIBNAME, math_lib},
      {LUA_MATHLIBNAME, runtime_math_lib},
      {LUA_COLIBNAME, coroutine_lib},
  };
  for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
    if (lists[k].name != NULL) {
      lua_getglobal(L, lists[k].name);
    } else {
      lua_pushliteral(L, "");
      lua_getmetatable(L, -1);
    }
    if (!lua_istable(L, -1) || !read_library(L, lists[k].lib))
      return 0;
    lua_settop(L, 0);
  }
  return 1;
}

/* The number of lib's entries this Lua has. */
static int lib_size(const luaL_Reg *lib) {
  int n = 0;
  for (const luaL_Reg *r = lib; r->name != NULL; r++)
    n += r->func != NULL;
  return n;
}

/*
 * [-0, +1, e] Pushes name as a Lua string. Every name set-up uses is new
 * to the state, or met once more: lua_pushstring's (and lua_setfield's)
 * cache of C pointers then only adds its compares, which cost set-up
 * about as much as interning the names did.
 */
static void push_name(lua_State *L, const char *name) {
  lua_pushlstring(L, name, strlen(name));
}

/* [-0, +0, e] Sets lib's entries this Lua has into the table at t. */
static void set_lib(lua_State *L, int t, const luaL_Reg *lib) {
  for (const luaL_Reg *r = lib; r->name != NULL; r++) {
    if (r->func != NULL) {
      push_name(L, r->name);
      lua_pushcfunction(L, r->func);
      lua_rawset(L, t);
    }
  }
}

/*
 * [-0, +0, e] Sets lib's entries this Lua has into the tables at a and b
 * (the vat's and the runtime's), each name interned once for both.
 */
static void set_lib_twins(lua_State *L, int a, int b, const luaL_Reg *lib) {
  for (const luaL_Reg *r = lib; r->name != NULL; r++) {
    if (r->func != NULL) {
      push_name(L, r->name);
      lua_pushvalue(L, -1);
      lua_pushcfunction(L, r->func);
      lua_rawset(L, b);
      lua_pushcfunction(L, r->func);
      lua_rawset(L, a);
    }
  }
}

/* [-1, +0, e] Sets field name of the tables at a and b to the value on top. */
static void set_twins(lua_State *L, int a, int b, const char *name) {
  push_name(L, name);
  lua_pushvalue(L, -1);
  lua_pushvalue(L, -3);
  lua_rawset(L, b);
  lua_rotate(L, -2, 1);
  lua_rawset(L, a);
}

/* [-0, +0, e] Sets the constants lmathlib.c sets into the math table at t. */
static void set_math_constants(lua_State *L, int t) {
  push_name(L, "pi");
  lua_pushnumber(L, (lua_Number)3.141592653589793238462643383279502884);
  lua_rawset(L, t);
  push_name(L, "huge");
  lua_pushnumber(L, (lua_Number)HUGE_VAL);
  lua_rawset(L, t);
  push_name(L, "maxinteger");
  lua_pushinteger(L, LUA_MAXINTEGER);
  lua_rawset(L, t);
  push_name(L, "mininteger");
  lua_pushinteger(L, LUA_MININTEGER);
  lua_rawset(L, t);
}

/* [-0, +2, e] Pushes two tables with room for lib's entries and extra more. */
static void push_twins(lua_State *L, const luaL_Reg *lib, int extra) {
  int n = lib_size(lib) + extra;
  lua_createtable(L, 0, n);
  lua_createtable(L, 0, n);
}

/*
 * [-0, +0, e] Builds the sandbox; runs under lua_pcall at creation so that
 * running out of memory here fails ocap_vat_new instead of panicking. The
 * package library is never made. The initial globals table, replaced by
 * the vat's, is the only garbage it leaves.
 *
 * Each table vat code sees has a twin of the same size in the runtime's own
 * globals (KEY_RUNTIME_ENV), where vat code cannot reach it: a runtime
 * module that loads on first use, after vat code ran, sees what it would
 * have seen at boot whatever that code did to its own globals. The
 * runtime's string library is also the private one behind string methods:
 * changing the global `string` table changes `string.upper` but never
 * ('x'):upper(), which trusted runtime code relies on. The metered
 * functions hold no state, so the twins share them. The runtime's math
 * holds only what runtime modules use (runtime_math_lib).
 */
static int vat_setup(lua_State *L) {
  /* Stack slots: each table vat code sees, then its twin. */
  enum { G = 1, RG, S, RS, T, RT, M, RM, U, RU, C, RC, LOADED, REG_LOADED, NSLOTS = REG_LOADED };
  static const struct {
    const char *name;
    int slot;
  } libs[] = {
      {LUA_STRLIBNAME, S},  {LUA_TABLIBNAME, T}, {LUA_MATHLIBNAME, M},
      {LUA_UTF8LIBNAME, U}, {LUA_COLIBNAME, C},
  };
  static const char pattern[] = "[\0-\x7F\xC2-\xFD][\x80-\xBF]*"; /* lutf8lib.c's */
  const int nlibs = (int)(sizeof libs / sizeof libs[0]);
  if (!have_originals())
    return luaL_error(L, "not enough memory");
  luaL_checkstack(L, NSLOTS + 4, NULL);
  push_twins(L, base_lib, 1 + nlibs);
  set_lib_twins(L, G, RG, base_lib);
  lua_pushliteral(L, LUA_VERSION);
  set_twins(L, G, RG, "_VERSION");
  push_twins(L, string_lib, lib_size(ocap_match_funcs));
  set_lib_twins(L, S, RS, string_lib);
  set_lib_twins(L, S, RS, ocap_match_funcs);
  push_twins(L, table_lib, 0);
  set_lib_twins(L, T, RT, table_lib);
  lua_createtable(L, 0, lib_size(math_lib) + 4);
  set_lib(L, M, math_lib);
  set_math_constants(L, M);
  lua_createtable(L, 0, lib_size(runtime_math_lib) + 4);
  set_lib(L, RM, runtime_math_lib);
  set_math_constants(L, RM);
  push_twins(L, utf8_lib, 1);
  set_lib_twins(L, U, RU, utf8_lib);
  lua_pushlstring(L, pattern, sizeof pattern - 1);
  set_twins(L, U, RU, "charpattern");
  push_twins(L, coroutine_lib, 0);
  set_lib_twins(L, C, RC, coroutine_lib);
  /*
   * The vat's loaded modules, and the registry's _LOADED table, where only
   * C code can see it: Lua reads it to name functions in tracebacks
   * ('string.rep', 'select').
   */
  lua_createtable(L, 0, nlibs);
  lua_createtable(L, 0, nlibs + 1);
  for (int k = 0; k < nlibs; k++) {
    push_name(L, libs[k].name);
    lua_pushvalue(L, -1);
    lua_pushvalue(L, libs[k].slot + 1);
    lua_rawset(L, RG);
    lua_pushvalue(L, -1);
    lua_pushvalue(L, libs[k].slot);
    lua_rawset(L, G);
    lua_pushvalue(L, -1);
    lua_pushvalue(L, libs[k].slot);
    lua_rawset(L, LOADED);
    lua_pushvalue(L, libs[k].slot);
    lua_rawset(L, REG_LOADED);
  }
  lua_pushvalue(L, G);
  lua_setfield(L, REG_LOADED, LUA_GNAME);
  lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_LOADED);
  lua_pushliteral(L, "");
  lua_createtable(L, 0, lib_size(string_mt_lib) + 2);
  set_lib(L, lua_gettop(L), string_mt_lib);
  lua_pushvalue(L, RS);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, STRING_MT_LOCK);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  lua_pushcclosure(L, vat_require, 1);
  lua_setfield(L, RG, "require");
  lua_pushvalue(L, RG);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_RUNTIME_ENV);
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_PRELOAD);
  lua_pushliteral(L, "vat exceeded its instruction budget");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_METER_MSG);
  lua_pushliteral(L, "vat exceeded its memory budget");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_MEMORY_MSG);
  lua_pushvalue(L, G);
  lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_settop(L, 0);
  return 0;
}

/* [-0, +0] Reports an error raised outside any protected call before Lua aborts. */
static int vat_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "ocap: unprotected error in a vat: %s\n", msg ? msg : "(not a string)");
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Public API                                                             */

int ocap_vat_new(const ocap_vat_limits_t *limits, ocap_vat_t **out) {
  ocap_vat_t *v;
  lua_State *L;
  *out = NULL;
  if (limits != NULL &&
      (limits->instructions < 0 || (limits->meter_mode != OCAP_VAT_METER_TIME &&
                                    limits->meter_mode != OCAP_VAT_METER_INSTRUCTIONS)))
    return OCAP_EINVAL;
  v = calloc(1, sizeof *v);
  if (v == NULL)
    return OCAP_ENOMEM;
  v->limit = limits != NULL && limits->memory > 0 ? limits->memory : OCAP_VAT_DEFAULT_MEMORY;
  v->first_chunk = first_chunk_bytes(limits != NULL ? limits->boot_bytes : 0);
  v->meter.budget = limits != NULL && limits->instructions > 0 ? limits->instructions
                                                               : OCAP_VAT_DEFAULT_INSTRUCTIONS;
  v->mode = limits != NULL ? limits->meter_mode : OCAP_VAT_METER_TIME;
  {
    watchdog_t *w = thread_watchdog();
    /*
     * Time mode needs the tick timer to stop a vat without a hook; where
     * there is none (the signal is taken, or no timer could be made) the
     * count hook runs in time mode too, and the hook polls the CPU clock.
     */
    v->hooked = v->mode == OCAP_VAT_METER_INSTRUCTIONS || w == NULL || w->mode != WATCHDOG_TIMER;
  }
  {
    double ns =
        (double)v->meter.budget * (v->mode == OCAP_VAT_METER_TIME ? OCAP_VAT_TIME_NS_PER_INSTRUCTION
                                                                  : OCAP_VAT_NS_PER_INSTRUCTION);
    /* An hour is beyond any budget the configuration accepts in practice. */
    v->allowance_ns = ns < OCAP_VAT_MIN_ALLOWANCE_NS ? OCAP_VAT_MIN_ALLOWANCE_NS
                      : ns > 3600e9                  ? 3600000000000LL
                                                     : (long long)ns;
    v->allowance_ticks = (long)((v->allowance_ns + OCAP_VAT_TICK_NS - 1) / OCAP_VAT_TICK_NS);
    if (v->mode == OCAP_VAT_METER_TIME)
      v->time_ns = OCAP_VAT_TIME_NS_PER_INSTRUCTION;
  }
  L = lua_newstate(vat_alloc, v);
  if (L == NULL) {
    free_chunks(v);
    free(v);
    return OCAP_ENOMEM;
  }
  v->L = L;
  lua_atpanic(L, vat_panic);
  /* Everything the sandbox makes stays alive: collecting while it is built
   * would be wasted work. */
  lua_gc(L, LUA_GCSTOP);
  lua_pushcfunction(L, vat_setup);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK || v->meter.fatal) {
    ocap_vat_free(v);
    return OCAP_ENOMEM;
  }
  lua_gc(L, LUA_GCRESTART);
  /* Every thread created from now on copies this hook from its creator. */
  if (v->hooked)
    lua_sethook(L, vat_hook, LUA_MASKCOUNT, OCAP_VAT_GRANULE);
  *out = v;
  return 0;
}

void ocap_vat_free(ocap_vat_t *v) {
  if (v == NULL)
    return;
  if (v->L != NULL) {
    lua_setallocf(v->L, closing_alloc, v);
    lua_close(v->L);
  }
  assert(v->used == 0);
  free_chunks(v);
  free(v->why);
  free(v);
}

lua_State *ocap_vat_state(ocap_vat_t *v) {
  return v->L;
}

ocap_vat_t *ocap_vat_from_state(lua_State *L) {
  void *ud = NULL;
  lua_Alloc f;
  /* The allocator's ud is shared by every thread of the state. */
  if (L == NULL)
    return NULL;
  f = lua_getallocf(L, &ud);
  return f == vat_alloc || f == closing_alloc ? ud : NULL;
}

/* Arguments of the protected helpers below, passed as a light userdata. */
struct vat_args {
  const char *name;
  const char *src;
  size_t len;
  int trusted;
  size_t srclen; /* the text compiled code was made from; 0 for none */
};

/*
 * [-1, +0, e] Records a module's source for require, as {source, trusted}
 * or, for code the kernel compiled, {code, true, length of its text};
 * index 1 holds a light userdata pointing to the struct vat_args.
 */
static int vat_preload_p(lua_State *L) {
  const struct vat_args *a = lua_touserdata(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_PRELOAD);
  lua_createtable(L, a->srclen ? 3 : 2, 0);
  lua_pushlstring(L, a->src, a->len);
  lua_rawseti(L, -2, 1);
  lua_pushboolean(L, a->trusted);
  lua_rawseti(L, -2, 2);
  if (a->srclen) {
    lua_pushinteger(L, (lua_Integer)a->srclen);
    lua_rawseti(L, -2, 3);
  }
  lua_setfield(L, -2, a->name);
  return 0;
}

/*
 * [-0, +0] Runs the C function f with the light userdata a under lua_pcall
 * with no meter. Returns 0, or OCAP_ENOMEM when f ran out of memory (the
 * only way these helpers can fail).
 */
static int vat_protect(ocap_vat_t *v, lua_CFunction f, void *a) {
  lua_State *L = v->L;
  int status;
  if (!lua_checkstack(L, 2))
    return OCAP_ENOMEM;
  lua_pushcfunction(L, f);
  lua_pushlightuserdata(L, a);
  status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) {
    lua_pop(L, 1);
    return OCAP_ENOMEM;
  }
  return 0;
}

void ocap_vat_set_runtime(ocap_vat_t *v, const ocap_vat_module_t *mods, size_t n) {
  v->runtime = mods;
  v->nruntime = n;
}

/*
 * [-1, +0, e] As vat_preload_p, for a module whose preload holds the code
 * the kernel compiled (its third field): nothing for any other.
 */
static int vat_preload_text_p(lua_State *L) {
  const struct vat_args *a = lua_touserdata(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_PRELOAD);
  if (lua_getfield(L, -1, a->name) != LUA_TTABLE || lua_rawgeti(L, -1, 3) == LUA_TNIL)
    return 0;
  lua_settop(L, 1);
  return vat_preload_p(L);
}

/* See ocap_vat_preload, ocap_vat_preload_compiled and ocap_vat_preload_text. */
static int preload(ocap_vat_t *v, lua_CFunction f, struct vat_args *a) {
  if (v == NULL || a->name == NULL || a->src == NULL)
    return OCAP_EINVAL;
  if (v->meter.fatal)
    return OCAP_EFATAL;
  return vat_protect(v, f, a);
}

int ocap_vat_preload(ocap_vat_t *v, const char *name, const char *src, size_t len, int trusted) {
  struct vat_args a = {name, src, len, trusted, 0};
  return preload(v, vat_preload_p, &a);
}

int ocap_vat_preloaded_code(ocap_vat_t *v) {
  lua_State *L = v->L;
  int found = 0;
  if (!lua_checkstack(L, 4))
    return 1; /* the caller's protected calls will tell */
  /* Nothing here allocates, so nothing can raise: no protected call. */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_PRELOAD);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -1) == LUA_TTABLE) {
      found = lua_rawgeti(L, -1, 3) != LUA_TNIL;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (found) {
      lua_pop(L, 1); /* the key: lua_next did not end */
      break;
    }
  }
  lua_pop(L, 1);
  return found;
}

int ocap_vat_preload_text(ocap_vat_t *v, const char *name, const char *src, size_t len) {
  struct vat_args a = {name, src, len, 0, 0};
  return preload(v, vat_preload_text_p, &a);
}

int ocap_vat_preload_compiled(ocap_vat_t *v, const char *name, const char *code, size_t len,
                              size_t srclen) {
  struct vat_args a = {name, code, len, 1, srclen};
  if (srclen == 0)
    return OCAP_EINVAL;
  return preload(v, vat_preload_p, &a);
}

/* [-2, +0, e] Sets loaded[name] to the value at index 2 (name in index 1's args). */
static int vat_set_loaded_p(lua_State *L) {
  const struct vat_args *a = lua_touserdata(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_LOADED);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, a->name);
  return 0;
}

int ocap_vat_set_loaded(ocap_vat_t *v, const char *name) {
  lua_State *L = v->L;
  struct vat_args a = {name, NULL, 0, 0, 0};
  int status;
  if (name == NULL || v->meter.fatal || !lua_checkstack(L, 2)) {
    lua_pop(L, 1);
    return name == NULL ? OCAP_EINVAL : v->meter.fatal ? OCAP_EFATAL : OCAP_ENOMEM;
  }
  /* The value travels as the call's second argument: f, a, value. */
  lua_pushcfunction(L, vat_set_loaded_p);
  lua_insert(L, -2);
  lua_pushlightuserdata(L, &a);
  lua_insert(L, -2);
  status = lua_pcall(L, 2, 0, 0);
  if (status != LUA_OK) {
    lua_pop(L, 1);
    return OCAP_ENOMEM;
  }
  return 0;
}

/* [-1, +1, e] Loads the source in text mode and returns the function. */
static int vat_load_p(lua_State *L) {
  const struct vat_args *a = lua_touserdata(L, 1);
  /*
   * Lua's own "attempt to load a binary chunk" would do, but vat authors
   * deserve to be told why their precompiled code is refused.
   */
  if (a->len > 0 && a->src[0] == LUA_SIGNATURE[0])
    return luaL_error(L, "%s: binary chunks are refused in a vat; load source text",
                      a->name != NULL ? a->name : "?");
  /*
   * lua_load sets the chunk's first upvalue, _ENV, to the registry's globals
   * table, which is the sandbox built at creation.
   */
  if (luaL_loadbufferx(L, a->src, a->len, a->name, "t") != LUA_OK)
    return lua_error(L);
  return 1;
}

int ocap_vat_load(ocap_vat_t *v, const char *src, size_t len, const char *chunkname) {
  lua_State *L = v->L;
  struct vat_args a = {chunkname, src, len, 0, 0};
  int status;
  if (!lua_checkstack(L, 2))
    return OCAP_ENOMEM; /* nothing pushed: the stack itself is out of room */
  if (v->meter.fatal) {
    push_fatal(L, v);
    return OCAP_EFATAL;
  }
  lua_pushcfunction(L, vat_load_p);
  lua_pushlightuserdata(L, &a);
  status = lua_pcall(L, 1, 1, 0);
  if (status == LUA_OK)
    return 0;
  if (status == LUA_ERRMEM || v->meter.fatal) {
    if (v->meter.fatal == 0)
      v->meter.fatal = OCAP_VAT_MEMORY;
    lua_pop(L, 1);
    push_fatal(L, v);
    return OCAP_ENOMEM;
  }
  return OCAP_EINVAL;
}

/*
 * [-0, +(0..2), e] The text of the error at index 1, as lua.c gives it: a
 * string (or number) as it is, else its __tostring's string (which runs
 * vat code: call this within the vat's budget), else its type.
 */
static const char *error_text(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg != NULL)
    return msg;
  if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
    return lua_tostring(L, -1);
  return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
}

/*
 * [-1, +1] The message handler of ocap_vat_pcall: adds a traceback to an
 * ordinary error and leaves a fatal one alone, since a fatal vat has no
 * instructions or memory to spare for it.
 */
static int vat_msgh(lua_State *L) {
  ocap_vat_t *v = ocap_vat_from_state(L);
  const char *msg;
  if (v != NULL && v->meter.fatal)
    return 1;
  msg = error_text(L);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/*
 * [-1, +0] Removes the message handler at index base. A call usually leaves
 * nothing (no results) or one value (an error) above it, and then a copy or
 * a pop does what lua_remove would, without its rotation of the stack.
 */
static void remove_handler(lua_State *L, int base) {
  int above = lua_gettop(L) - base;
  if (above == 0) {
    lua_settop(L, base - 1);
  } else if (above == 1) {
    lua_copy(L, -1, base);
    lua_settop(L, base);
  } else {
    lua_remove(L, base);
  }
}

void ocap_vat_push_handler(ocap_vat_t *v) {
  lua_pushcfunction(v->L, vat_msgh);
}

/* [-0, +0] Enters a call into the vat: the outermost one gets a fresh
 * budget and the watchdog's allowance; re-entry must not add. */
static inline void meter_enter(ocap_vat_t *v) {
  if (v->meter.depth++ == 0) {
    v->meter.charged = 0;
    v->thrashing = 0;
    v->fresh = 0;
    watchdog_start(v);
  }
}

/* [-0, +0] Leaves it: the outermost one ends the allowance. */
static inline void meter_leave(ocap_vat_t *v) {
  if (--v->meter.depth == 0)
    watchdog_stop(v);
}

/*
 * [-(nargs+1), +(nresults|1)] ocap_vat_pcall of the function at func;
 * own says whether the handler must be inserted below it, else it is
 * there already (ocap_vat_push_handler).
 */
static int pcall_at(ocap_vat_t *v, int func, int nargs, int nresults, int own) {
  lua_State *L = v->L, *outer;
  int below = func - 1; /* the level the call returns to */
  int h = below;
  int status;
  assert(nargs >= 0 && func >= 1);
  if (!v->meter.fatal && own && !lua_checkstack(L, 1))
    v->meter.fatal = OCAP_VAT_MEMORY; /* not even room for the handler */
  if (v->meter.fatal) {
    lua_settop(L, below);
    push_fatal(L, v);
    return v->meter.fatal;
  }
  if (own) {
    lua_pushcfunction(L, vat_msgh);
    lua_insert(L, func);
    h = func;
  }
  /*
   * Only the outermost call gets a fresh budget; re-entry must not add.
   * A re-entering call runs on the main thread even when the vat called
   * out from a coroutine, so the running thread is saved and restored.
   */
  outer = atomic_load_explicit(&v->running, memory_order_relaxed);
  atomic_store_explicit(&v->running, L, memory_order_relaxed);
  meter_enter(v);
  status = lua_pcall(L, nargs, nresults, h);
  meter_leave(v);
  atomic_store_explicit(&v->running, outer, memory_order_relaxed);
  if (own)
    remove_handler(L, h);
  if (status == LUA_ERRMEM && v->meter.fatal == 0)
    v->meter.fatal = OCAP_VAT_MEMORY;
  if (v->meter.fatal) {
    /* Whatever the call returned, a marked vat reports only its mark. */
    lua_settop(L, below);
    push_fatal(L, v);
    return v->meter.fatal;
  }
  return status == LUA_OK ? OCAP_VAT_OK : OCAP_VAT_ERROR;
}

int ocap_vat_pcall(ocap_vat_t *v, int nargs, int nresults) {
  lua_State *L = v->L;
  int func = lua_gettop(L) - nargs; /* the function's index */
  /* The handler may already be below the function (ocap_vat_push_handler). */
  int own = func < 2 || lua_tocfunction(L, func - 1) != vat_msgh;
  return pcall_at(v, func, nargs, nresults, own);
}

int ocap_vat_pcall_handled(ocap_vat_t *v, int nargs, int nresults) {
  int func = lua_gettop(v->L) - nargs;
  assert(func >= 2 && lua_tocfunction(v->L, func - 1) == vat_msgh);
  return pcall_at(v, func, nargs, nresults, 0);
}

void ocap_vat_close(ocap_vat_t *v) {
  meter_leave(v);
}

/*
 * [-2, +1, m] leg_traceback(err, co): the message vat_msgh makes for err,
 * with the traceback of co, whose call failed with it: a coroutine keeps
 * its frames after it fails, so the traceback is the one the handler would
 * have made where the error was raised.
 */
static int leg_traceback(lua_State *L) {
  lua_State *co = lua_tothread(L, 2);
  luaL_traceback(L, co, error_text(L), 0);
  return 1;
}

/*
 * [-0, +0] Lets go of what the thread co, whose call failed, holds: a
 * failed coroutine keeps its frames, and a delivery's (values it was
 * decoding, say) would stay in a vat that goes on. An error that leaves
 * a delivery's thread has passed every frame of vat code in it (a
 * method's errors stop at its protected call, which closes its
 * variables), so no __close metamethod runs here.
 */
static void dead_leg(lua_State *co) {
  lua_resetthread(co);
}

/* [-0, +1] Pushes onto v's main state the message leg_traceback makes for
 * the error on top of co, whose call failed; returns the status of that
 * protected call (a failed one pushes its error instead). */
static int leg_message(ocap_vat_t *v, lua_State *co) {
  lua_State *L = v->L;
  lua_pushcfunction(L, leg_traceback);
  lua_xmove(co, L, 1);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  return lua_pcall(L, 2, 1, 0);
}

int ocap_vat_resume_entry(ocap_vat_t *v, lua_State *co, int narg, int *nres, int *statusp) {
  lua_State *L = v->L, *outer;
  int status, tb = -1;
  *statusp = LUA_ERRRUN;
  if (!lua_checkstack(L, 4) && v->meter.fatal == 0)
    v->meter.fatal = OCAP_VAT_MEMORY; /* no room for what the call leaves */
  if (v->meter.fatal) {
    push_fatal(L, v);
    return v->meter.fatal;
  }
  outer = atomic_load_explicit(&v->running, memory_order_relaxed);
  atomic_store_explicit(&v->running, co, memory_order_relaxed);
  meter_enter(v);
  if (v->meter.expired)
    lua_sethook(co, vat_hook, LUA_MASKCOUNT, 1);
  *statusp = status = lua_resume(co, L, narg, nres);
  if (status == LUA_ERRMEM && v->meter.fatal == 0)
    v->meter.fatal = OCAP_VAT_MEMORY;
  if (status != LUA_OK && status != LUA_YIELD && !v->meter.fatal) {
    /* The message is made within the call's budgets, as vat_msgh makes
     * it in ocap_vat_pcall: the error's __tostring is vat code. */
    atomic_store_explicit(&v->running, L, memory_order_relaxed);
    tb = leg_message(v, co);
  }
  if (status != LUA_YIELD)
    meter_leave(v);
  atomic_store_explicit(&v->running, outer, memory_order_relaxed);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!v->meter.fatal)
      return OCAP_VAT_OK;
  } else if (!v->meter.fatal) {
    if (tb == LUA_OK) {
      dead_leg(co);
      return OCAP_VAT_ERROR;
    }
    v->meter.fatal = OCAP_VAT_MEMORY;
  }
  if (tb != -1)
    lua_pop(L, 1);
  if (status != LUA_OK && status != LUA_YIELD)
    dead_leg(co);
  /* Whatever the call returned, a marked vat reports only its mark. */
  push_fatal(L, v);
  return v->meter.fatal;
}

int ocap_vat_fatal(const ocap_vat_t *v) {
  return v->meter.fatal;
}

/*
 * The reason's text is made only for a vat that is told it, in a buffer of
 * its own: every live vat carrying one would cost it 160 bytes.
 */
#define WHY_BYTES 160

const char *ocap_vat_fatal_reason(ocap_vat_t *v) {
  if (v->meter.fatal == OCAP_VAT_MEMORY)
    return "memory limit exceeded";
  if (v->meter.fatal != OCAP_VAT_METER)
    return NULL;
  /* In time mode running out of time is the meter itself, not a backstop. */
  if (v->cause != CAUSE_COLLECTIONS &&
      (v->cause != CAUSE_TIME || v->mode != OCAP_VAT_METER_INSTRUCTIONS))
    return "instruction meter exhausted";
  if (v->why == NULL && (v->why = malloc(WHY_BYTES)) == NULL)
    return "instruction meter exhausted";
  if (v->cause == CAUSE_TIME)
    snprintf(v->why, WHY_BYTES,
             "instruction meter exhausted (CPU time: its allowance of %lld ms for %lld "
             "instructions ran out first)",
             v->allowance_ns / 1000000, v->meter.budget);
  else
    snprintf(v->why, WHY_BYTES,
             "instruction meter exhausted (garbage collection: %lld emergency collections near "
             "the memory limit)",
             v->thrashing);
  return v->why;
}

void ocap_vat_forgive(ocap_vat_t *v) {
  assert(v->meter.depth == 0);
  v->meter.fatal = 0;
  v->cause = CAUSE_INSTRUCTIONS;
  v->meter.expired = 0;
  v->refused = 0;
  /* vat_die re-armed the main thread's hook to fire at every instruction. */
  if (v->hooked)
    lua_sethook(v->L, vat_hook, LUA_MASKCOUNT, OCAP_VAT_GRANULE);
  else
    lua_sethook(v->L, NULL, 0, 0);
  lua_gc(v->L, LUA_GCCOLLECT, 0);
}

void ocap_vat_set_packing(ocap_vat_t *v, int on) {
  v->packing = on;
}

size_t ocap_vat_carved(const ocap_vat_t *v) {
  size_t links = 0;
  for (const struct chunk *k = v->chunks; k != NULL; k = k->next)
    links += sizeof *k;
  return v->chunk_bytes - links - (size_t)(v->bump_end - v->bump);
}

size_t ocap_vat_memory(const ocap_vat_t *v) {
  return v->used;
}

long long ocap_vat_instructions(const ocap_vat_t *v) {
  if (v->time_ns != 0 && v->meter.depth == 0)
    return v->meter.charged + (long long)v->ticks_used * (OCAP_VAT_TICK_NS / v->time_ns);
  return v->meter.charged;
}

/* [-0, +0, e] See vat.h; it is vat_charge, for C modules outside this file. */
void ocap_vat_charge(lua_State *L, long long cost) {
  vat_charge(L, cost);
}

/* [-0, +0, e] See vat.h: ocap_vat_charge_to's way when the budget is not
 * simply charged. */
void ocap__vat_charge_slow(ocap_vat_t *v, lua_State *L, long long cost) {
  vat_charge_to(v, L, cost);
}

/* [-narg, +nres] on co: ocap_vat_resume's work, for the vat v that owns L
 * (or NULL); both entry points have it inline. */
static inline int resume_in(ocap_vat_t *v, lua_State *L, lua_State *co, int narg, int *nres) {
  int status = tracked_resume(v, co, L, narg, nres);
  if (status == LUA_OK || status == LUA_YIELD)
    return status;
  note_status(L, status);
  if (v != NULL && v->meter.fatal && v->meter.depth > 0) {
    lua_xmove(co, L, 1);
    return vat_die(L, v);
  }
  return status;
}

int ocap_vat_resume(lua_State *L, lua_State *co, int narg, int *nres) {
  return resume_in(ocap_vat_from_state(L), L, co, narg, nres);
}

int ocap_vat_resume_in(ocap_vat_t *v, lua_State *L, lua_State *co, int narg, int *nres) {
  return resume_in(v, L, co, narg, nres);
}

void ocap_vat_pcall_failed(lua_State *L, int status) {
  note_status(L, status);
  vat_charge(L, ERROR_COST);
}

int ocap_vat_state_fatal(lua_State *L) {
  ocap_vat_t *v = ocap_vat_from_state(L);
  return v != NULL && v->meter.fatal;
}
