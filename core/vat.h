/*
 * vat.h -- a vat's Lua state: sandbox, memory budget, instruction meter, and
 * the one protected call path through which the kernel enters it.
 *
 * Conventions:
 *  1. A vat is a separate lua_State created with an allocator that charges
 *     the vat's memory budget. Going over the budget makes the allocation
 *     fail and marks the vat OCAP_VAT_MEMORY. The per-call budget is
 *     metered in one of two modes. In time mode (the default) it buys CPU
 *     time, OCAP_VAT_TIME_NS_PER_INSTRUCTION per instruction, and no hook
 *     runs until a per-thread CPU-clock tick finds the allowance used up;
 *     in instruction mode a count hook installed on the main thread (and
 *     so inherited by every coroutine) charges every instruction. Either
 *     way the vat is marked OCAP_VAT_METER when the budget runs out, and
 *     from then on a hook raises an error at every instruction, so pcall
 *     inside the vat cannot swallow the failure.
 *  2. The global environment is built from an allow-list (see vat.c);
 *     chunks are loaded in text mode only, except the kernel's own runtime
 *     modules (ocap_vat_set_runtime, or ocap_vat_preload with trusted set)
 *     and the code the kernel compiled from a bundle's text
 *     (ocap_vat_preload_compiled).
 *  3. The kernel calls into the vat only through ocap_vat_pcall(), which
 *     resets the meter, installs a traceback handler, and reports how the
 *     call ended.
 *  4. Functions that touch the vat's stack state their stack effect as
 *     [-pop, +push] in Lua's manual notation.
 */
#ifndef OCAP_VAT_H
#define OCAP_VAT_H

#include <signal.h>
#include <stddef.h>

#include <lua.h>

typedef struct ocap_vat ocap_vat_t;

/* How the instruction budget is metered. */
enum ocap_vat_meter_mode {
  OCAP_VAT_METER_TIME = 0,         /* as CPU time: no per-instruction cost */
  OCAP_VAT_METER_INSTRUCTIONS = 1, /* by a count hook: deterministic */
};

typedef struct ocap_vat_limits {
  size_t memory;          /* bytes; 0 means the default */
  long long instructions; /* per ocap_vat_pcall; 0 means the default */
  int meter_mode;         /* an enum ocap_vat_meter_mode; 0 is time */
  /* The small-block bytes a booted vat of this kind carved, as
   * ocap_vat_carved told of the last one; 0 when unknown. Sizes the vat's
   * first chunk so that booting leaves little of it uncarved. */
  size_t boot_bytes;
} ocap_vat_limits_t;

#define OCAP_VAT_DEFAULT_MEMORY ((size_t)64 << 20)
#define OCAP_VAT_DEFAULT_INSTRUCTIONS 100000000LL

/*
 * In instruction mode the count hook fires every OCAP_VAT_GRANULE
 * instructions, so the meter and ocap_vat_instructions() are precise to a
 * granule.
 */
#define OCAP_VAT_GRANULE 1000

/*
 * Time mode: each outermost ocap_vat_pcall may use instructions *
 * OCAP_VAT_TIME_NS_PER_INSTRUCTION nanoseconds of its thread's CPU time
 * (and at least OCAP_VAT_MIN_ALLOWANCE_NS). Library charges
 * (ocap_vat_charge) are held to the instruction budget as in instruction
 * mode, so a charge the budget cannot cover is refused before the work;
 * the work itself is on the CPU clock, so the charges are not converted
 * to time and added (that would count the same work twice). Measured on the
 * reference machine (2-core AMD EPYC, Debian's Lua 5.4), a plain
 * instruction takes about 1.4 ns, method calls 2.4, closures and
 * coroutines 7 to 23, formatting and sorting 50 to 67, and building a
 * table with fresh string keys about 170 ns an instruction (each C library
 * call counts as one). At 20 ns a budget of B buys at most about 14 times
 * the time of B plain instructions (plus a tick): 2 s for the default
 * budget, so a runaway delivery costs a few times what it costs in
 * instruction mode rather than tens of times. Plain code, method calls
 * and closures get their whole budget; code that averages more than 20 ns
 * an instruction for a whole call (coroutine switches, formatting,
 * sorting, building big string-keyed tables) runs fewer than B
 * instructions, down to about B / 8. The
 * instructions a budget buys scale with the machine's speed; a vat that
 * needs the same count on every machine uses instruction mode.
 */
#if defined(__SANITIZE_ADDRESS__)
#define OCAP_VAT_TIME_NS_PER_INSTRUCTION 60
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OCAP_VAT_TIME_NS_PER_INSTRUCTION 60
#endif
#endif
#ifndef OCAP_VAT_TIME_NS_PER_INSTRUCTION
#define OCAP_VAT_TIME_NS_PER_INSTRUCTION 20
#endif

/*
 * Instruction mode's CPU-time backstop: each outermost ocap_vat_pcall may use at most
 * instructions * OCAP_VAT_NS_PER_INSTRUCTION nanoseconds of its thread's
 * CPU time (and at least OCAP_VAT_MIN_ALLOWANCE_NS); a vat that uses it up
 * is stopped as OCAP_VAT_METER. A plain instruction takes about 1.4 ns and
 * the most expensive ordinary code measured (building a large table with
 * string keys) about 220 ns per instruction, so only instructions whose
 * cost grows with their operands (comparing or concatenating long strings)
 * come near it. Sanitizers slow everything down, and get more.
 */
#if defined(__SANITIZE_ADDRESS__)
#define OCAP_VAT_NS_PER_INSTRUCTION 4000
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OCAP_VAT_NS_PER_INSTRUCTION 4000
#endif
#endif
#ifndef OCAP_VAT_NS_PER_INSTRUCTION
#define OCAP_VAT_NS_PER_INSTRUCTION 500
#endif
#define OCAP_VAT_MIN_ALLOWANCE_NS 50000000LL

/* The backstop's clock ticks every 5 ms of CPU time: its precision. */
#define OCAP_VAT_TICK_NS 5000000L

/*
 * The real-time signal of the backstop's tick timers (one per thread that
 * runs vats). Its handler is installed on first use unless the process
 * already handles the signal, in which case the meter reads the CPU clock
 * at each granule instead.
 */
#define OCAP_VAT_WATCHDOG_SIGNAL (SIGRTMIN + 5)

/*
 * How far a marked vat may go over its memory budget, so that raising the
 * fatal error, unwinding and lua_close never fail for want of memory.
 */
#define OCAP_VAT_MEMORY_SLACK ((size_t)256 << 10)

/* How a call into the vat ended. */
enum ocap_vat_status {
  OCAP_VAT_OK = 0,     /* returned normally */
  OCAP_VAT_ERROR = 1,  /* raised an ordinary error; message on the stack */
  OCAP_VAT_METER = 2,  /* instruction budget exhausted (fatal) */
  OCAP_VAT_MEMORY = 3, /* memory budget exhausted (fatal) */
};

/*
 * Creates a sandboxed vat state. Returns 0, OCAP_ENOMEM (also when the
 * memory budget cannot hold the sandbox), or OCAP_EINVAL for a negative
 * instruction budget or an unknown meter mode.
 */
int ocap_vat_new(const ocap_vat_limits_t *limits, ocap_vat_t **out);

/* Closes the state and frees everything. Safe on NULL. */
void ocap_vat_free(ocap_vat_t *v);

lua_State *ocap_vat_state(ocap_vat_t *v);

/*
 * The vat that owns L (any thread of its state), or NULL when L belongs to a
 * state not made by ocap_vat_new.
 */
ocap_vat_t *ocap_vat_from_state(lua_State *L);

/* One of the kernel's runtime modules: a binary chunk made by lua_dump. */
typedef struct ocap_vat_module {
  const char *name;
  const char *code;
  size_t len;
} ocap_vat_module_t;

/*
 * [-0, +0] Gives the vat's `require` the kernel's runtime modules, which
 * come before any preloaded module of the same name. Nothing is copied and
 * nothing is allocated: the n modules, their names and their code must
 * outlive the vat, and stay unchanged, since every require of a module not
 * yet loaded reads them.
 */
void ocap_vat_set_runtime(ocap_vat_t *v, const ocap_vat_module_t *mods, size_t n);

/*
 * [-0, +0] Registers module source for the vat's `require`. Trusted modules (the
 * kernel's runtime) may be precompiled binary chunks; others are loaded in
 * text mode only. The source is copied; a module already loaded keeps its
 * cached value. Returns 0, OCAP_EINVAL, OCAP_ENOMEM or OCAP_EFATAL.
 */
int ocap_vat_preload(ocap_vat_t *v, const char *name, const char *src, size_t len, int trusted);

/*
 * [-0, +0] Registers for the vat's `require` a module the kernel compiled
 * itself, with lua_dump and without stripping, from srclen (> 0) bytes of
 * text loaded in mode "t" under the chunk name require would give it
 * ("=name"): require then makes exactly the functions that text would
 * make, line numbers and local names included, without parsing it again,
 * and charges the vat as for the text. The code must never come from vat
 * code or a bundle (docs/security.md). It is copied. Returns as
 * ocap_vat_preload.
 */
int ocap_vat_preload_compiled(ocap_vat_t *v, const char *name, const char *code, size_t len,
                              size_t srclen);

/*
 * [-0, +0] Gives a module registered with ocap_vat_preload_compiled, which
 * the vat has not required yet, back its text src, as ocap_vat_preload
 * would (untrusted): the code, with its line info and local names, takes
 * more of the vat's heap than the text, for as long as the vat lives
 * without requiring it. Any other module is left as it is. Returns as
 * ocap_vat_preload.
 */
int ocap_vat_preload_text(ocap_vat_t *v, const char *name, const char *src, size_t len);

/*
 * [-0, +0] Whether the vat's require still holds code registered with
 * ocap_vat_preload_compiled, not loaded yet; cheaper than a protected
 * call (ocap_vat_preload_text) per module when none is left.
 */
int ocap_vat_preloaded_code(ocap_vat_t *v);

/*
 * [-1, +0] Pops a value and makes it what `require(name)` returns in the vat
 * (for example the vat's own `ocap` table). Returns 0, OCAP_EINVAL,
 * OCAP_ENOMEM or OCAP_EFATAL; the value is popped in every case.
 */
int ocap_vat_set_loaded(ocap_vat_t *v, const char *name);

/*
 * [-0, +1] Loads a text chunk with the vat's environment; pushes the
 * function, or the error message when it returns nonzero: OCAP_EINVAL for a
 * syntax error or a binary chunk, OCAP_ENOMEM when loading exhausted the
 * memory budget (the vat is then marked), OCAP_EFATAL when the vat was
 * already marked. Pushes nothing only when the stack cannot grow
 * (OCAP_ENOMEM with the vat unmarked).
 */
int ocap_vat_load(ocap_vat_t *v, const char *src, size_t len, const char *chunkname);

/*
 * [-(nargs+1), +(nresults|1)] The one protected path: calls the function
 * below the nargs arguments with a fresh instruction budget. Returns an
 * ocap_vat_status; on anything but OCAP_VAT_OK one value (the error message
 * with traceback) is left on the stack instead of the results. A vat that
 * ever returned METER or MEMORY stays marked (ocap_vat_fatal).
 */
int ocap_vat_pcall(ocap_vat_t *v, int nargs, int nresults);

/*
 * [-0, +1] Pushes ocap_vat_pcall's message handler onto v's stack. A caller
 * that pushes it right below the function spares ocap_vat_pcall inserting
 * it under the arguments and removing it afterwards (two rotations of the
 * stack per call); the handler then stays where it is, for the caller to pop
 * after the results.
 */
void ocap_vat_push_handler(ocap_vat_t *v);

/*
 * [-(nargs+1), +(nresults|1)] ocap_vat_pcall for a caller that pushed the
 * handler (ocap_vat_push_handler) right below the function: it spares
 * looking for it, as a delivery does for every message.
 */
int ocap_vat_pcall_handled(ocap_vat_t *v, int nargs, int nresults);

/*
 * [-0, +(0|1)] on v's main state; [-narg, +nres] on co: the protected
 * path by a coroutine, for a delivery that runs in one of the vat's
 * threads (ldeliver.c): lua_resume(co) with ocap_vat_pcall's budgets
 * (fresh when it is the outermost call), co being the thread the
 * watchdog stops while it runs; *status is lua_resume's. Returns
 * OCAP_VAT_OK when co returned or yielded (*nres values on co), else an
 * ocap_vat_status with one value pushed on the main state, as
 * ocap_vat_pcall leaves it (the error with co's traceback, or the fatal
 * message). When co yielded, the call stays open, for ocap_vat_pcall
 * calls with the same budgets, until ocap_vat_close ends it.
 */
int ocap_vat_resume_entry(ocap_vat_t *v, lua_State *co, int narg, int *nres, int *status);

/* [-0, +0] Ends the call ocap_vat_resume_entry left open. */
void ocap_vat_close(ocap_vat_t *v);

/* OCAP_VAT_METER or OCAP_VAT_MEMORY when the vat was marked, else 0. */
int ocap_vat_fatal(const ocap_vat_t *v);

/*
 * Why the vat was marked, for the kernel's termination reason: "instruction
 * meter exhausted" (with what ran out when it was the CPU-time backstop or
 * garbage collection near the memory limit) or "memory limit exceeded";
 * NULL for a vat that is not marked. The text lives until the next call.
 */
const char *ocap_vat_fatal_reason(ocap_vat_t *v);

/*
 * Clears the vat's mark, for an exhaustion the kernel does not hold against
 * the vat (decoding a message another vat sent it), and collects its
 * garbage. Lua leaves a state consistent after any error, so the vat can
 * go on. Call it only outside ocap_vat_pcall.
 */
void ocap_vat_forgive(ocap_vat_t *v);

/*
 * Turns packing on or off (off when the vat is made): while it is on, the
 * vat's allocator fills a small request from a free block of the next
 * size class, whole, rather than carve a new block, which keeps the holes
 * a vat's boot leaves from staying empty for its whole life. For a vat's
 * boot only: each block so served keeps 8 unused bytes until the state
 * closes.
 */
void ocap_vat_set_packing(ocap_vat_t *v, int on);

/*
 * Bytes of small blocks the vat carved from its chunks so far, used or
 * free: what ocap_vat_limits_t.boot_bytes takes, read when a vat's start
 * is over.
 */
size_t ocap_vat_carved(const ocap_vat_t *v);

/* Bytes the vat's state uses now. */
size_t ocap_vat_memory(const ocap_vat_t *v);

/*
 * Instructions charged during the last (or current) ocap_vat_pcall. In
 * instruction mode, the count (to a granule) plus library charges; in time
 * mode, the library charges plus the CPU time of the last finished call in
 * instructions at OCAP_VAT_TIME_NS_PER_INSTRUCTION, counted in whole
 * OCAP_VAT_TICK_NS ticks (so 0 for a call shorter than a tick).
 */
long long ocap_vat_instructions(const ocap_vat_t *v);

/*
 * [-0, +0, e] Charges cost instructions to the vat that owns L for work a C
 * function does on its behalf (decoding a message, say), raising the meter
 * error when the budget cannot cover it. Outside a vat, or outside
 * ocap_vat_pcall, it does nothing, so code shared with the host may call it.
 */
void ocap_vat_charge(lua_State *L, long long cost);

/*
 * The meter's state, at the start of every vat, so that the common charge
 * is made inline. Only vat.c writes it, except the inline charge's add.
 */
typedef struct ocap_vat_meter {
  long long budget;              /* instructions allowed per outermost call */
  long long charged;             /* instructions charged in the current or last call */
  int depth;                     /* nesting of ocap_vat_pcall; the meter runs when > 0 */
  int fatal;                     /* 0, OCAP_VAT_METER or OCAP_VAT_MEMORY */
  volatile sig_atomic_t expired; /* the call's time allowance ran out */
} ocap_vat_meter_t;

/* [-0, +0, e] The way of ocap_vat_charge_to below that checks and raises. */
void ocap__vat_charge_slow(ocap_vat_t *v, lua_State *L, long long cost);

/*
 * [-0, +0, e] ocap_vat_charge for a caller that holds the vat: v owns L
 * (or is NULL, and then nothing is charged). Finding the vat of a state
 * is an allocator lookup, and the syscalls and a delivery's decoding
 * charge several times per message; a charge the running call's budget
 * covers is an add here.
 */
static inline void ocap_vat_charge_to(ocap_vat_t *v, lua_State *L, long long cost) {
  ocap_vat_meter_t *m = (ocap_vat_meter_t *)(void *)v; /* its first member */
  if (m != NULL && m->depth > 0 && m->fatal == 0 && !m->expired && cost >= 0 &&
      cost < m->budget - m->charged)
    m->charged += cost;
  else
    ocap__vat_charge_slow(v, L, cost);
}

/*
 * The runtime's own tasks (lpromise.c) resume coroutines and make protected
 * calls in C, without going through the vat's coroutine.resume, pcall and
 * xpcall; these do what those do around them, so that the meter and the
 * watchdog see a task exactly as they see vat code. Outside a vat they
 * are plain.
 */

/* What the vat's pcall and xpcall charge for a call and for an error it
 * catches, in instructions. */
#define OCAP_VAT_PCALL_COST 50
#define OCAP_VAT_ERROR_COST 100

/*
 * [-narg, +(nres|1)] on co: lua_resume(co, L, narg, nres) as the vat's
 * coroutine.resume makes it: co is the thread the watchdog stops while it
 * runs, and a memory error marks the vat. When the vat is marked fatal by
 * the time co fails, it raises the fatal error in L instead of returning,
 * as coroutine.resume does. Returns lua_resume's status.
 */
int ocap_vat_resume(lua_State *L, lua_State *co, int narg, int *nres);

/* ocap_vat_resume for a caller that holds the vat that owns L (NULL for
 * none): it spares the allocator lookup that finds it, as
 * ocap_vat_charge_to does. */
int ocap_vat_resume_in(ocap_vat_t *v, lua_State *L, lua_State *co, int narg, int *nres);

/* [-0, +0, e] What the vat's pcall and xpcall do when the call they
 * protect ended with the error status: a memory error marks the vat, and
 * the error is charged (raising the meter error when it cannot be). */
void ocap_vat_pcall_failed(lua_State *L, int status);

/* [-0, +0] Whether the vat that owns L is marked fatal (0 outside a vat):
 * a message handler must then not run vat code (see vat.c's xpcall). */
int ocap_vat_state_fatal(lua_State *L);

#endif
