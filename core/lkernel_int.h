/*
 * lkernel_int.h -- what the files of the Lua binding of the kernel
 * (`require 'ocap.core'`) share: the Kernel userdata's record, a vat's
 * record, and the few functions one of them calls in another. It is
 * private to those files.
 *
 * One message goes through them in this order: the host's K:send
 * (lkernel.c) or a vat's send syscall (lsyscall.c) hands it to the kernel
 * (kernel.c), whose run queue holds it; K:step or K:drive (lkernel.c) runs
 * the crank, whose deliver hook enters the receiving vat (ldeliver.c),
 * starting its Lua state first when it is not live (lvat.c); the vat's
 * liveslots then answers with the resolve syscall (lsyscall.c). A timer
 * firing (lvattimer.c) is a crank of its own and enters the vat the same
 * way.
 */
#ifndef OCAP_LKERNEL_INT_H
#define OCAP_LKERNEL_INT_H

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "kernel.h"
#include "kstate.h"
#include "srccache.h"
#include "store.h"
#include "vat.h"

#define KERNEL_MT "ocap.Kernel"

/*
 * Debug builds check that a function leaves the stack of L as its comment
 * says: STACK_CHECK_BEGIN(L) records the top, STACK_CHECK_END(L, delta)
 * asserts it moved by delta. The record is named after the state's variable
 * so one function can check two states (the host's and a vat's). Only normal
 * returns are checked: a raised error unwinds the stack by design. With
 * NDEBUG both compile to nothing.
 */
#ifndef NDEBUG
#define STACK_CHECK_BEGIN(L) const int stack_top_##L = lua_gettop(L)
#define STACK_CHECK_END(L, delta) assert(lua_gettop(L) == stack_top_##L + (delta))
#else
#define STACK_CHECK_BEGIN(L) ((void)0)
#define STACK_CHECK_END(L, delta) ((void)0)
#endif

typedef struct lkernel lkernel_t;

typedef struct vtimer vtimer_t;

/*
 * A vat's live timers by id: open addressing with linear probing, a power
 * of two slots at most half full, so arming, stopping and firing a timer
 * cost the same however many the vat has (a list made arming n timers
 * quadratic).
 */
typedef struct vtimers {
  vtimer_t **slot; /* NULL marks a free slot */
  size_t cap, n;
} vtimers_t;

/*
 * What a vat may cost the kernel (creationOptions; docs/security.md). The
 * vat's Lua state is bounded by its own memory and meter; these bound what
 * it makes the kernel hold on its behalf: messages, log entries, timers.
 */
typedef struct vbudget {
  lua_Integer message_bytes; /* capdata bytes (body and slots) of one send or resolution */
  lua_Integer message_slots; /* slots of one send or resolution */
  lua_Integer crank_bytes;   /* capdata bytes sent and resolved in one delivery */
  lua_Integer queued_bytes;  /* bytes of its messages waiting in the kernel */
  lua_Integer log_bytes;     /* log payload bytes in one delivery */
  lua_Integer timers;        /* live timers */
  lua_Integer memory;        /* the vat state's budgets, for messages */
  lua_Integer instructions;
} vbudget_t;

#define DEFAULT_MESSAGE_BYTES ((lua_Integer)1 << 20)
#define DEFAULT_MESSAGE_SLOTS ((lua_Integer)16384)
#define DEFAULT_CRANK_BYTES ((lua_Integer)16 << 20)
#define DEFAULT_QUEUED_BYTES ((lua_Integer)64 << 20)
#define DEFAULT_LOG_BYTES ((lua_Integer)1 << 20)
#define DEFAULT_TIMERS ((lua_Integer)1000)

/*
 * The kernel's runtime modules, compiled once and stripped of debug
 * information, which every vat's require reads in place. A live vat holds
 * a reference, so setRuntime may replace the runtime under running vats.
 */
typedef struct runtime {
  int refs; /* the kernel's, and one per live vat state */
  size_t n; /* the modules built so far */
  /* What the last vat to start carved (ocap_vat_limits_t.boot_bytes). */
  size_t boot_bytes;
  ocap_vat_module_t mods[];
} runtime_t;

/*
 * The parts of a vat record that belong to one Lua state of the vat. An
 * upgrade holds the old incarnation's aside while the new one starts, so
 * that a failed upgrade puts it back untouched, heap and timers included.
 * It is malloc'd for the upgrade only: a vat record kept it inline, about
 * 120 bytes that every vat paid for a state only an upgrade uses.
 */
typedef struct vheld {
  ocap_vat_t *vat;
  int dispatch_ref, call_ref, settle_ref, model_ref, drain_ref;
  const void *queue;
  vtimers_t timers;
  runtime_t *runtime;
  vbudget_t budget;
} vheld_t;

/*
 * One vat's runtime. The record outlives the vat's state, so that a vat
 * restarted lazily keeps its slot and a pointer to it stays valid.
 */
typedef struct lvat {
  char id[OCAP_REF_MAX];
  unsigned long long num; /* N of the id "v<N>" */
  vtimers_t timers;       /* The vat's live libuv timers. */
  ocap_vat_t *vat;        /* It is NULL while the vat is not live. */
  int dispatch_ref;       /* Liveslots' dispatch, in the vat's registry. */
  int call_ref;           /* Its dispatchCall and dispatchSettle, or */
  int settle_ref;         /* LUA_NOREF (ldeliver.c), and the model of */
  int model_ref;          /* the codec it decodes with. */
  int drain_ref;          /* The promise core's drain, which the kernel */
  const void *queue;      /* calls after those two when its queue has work. */
  int fatal;              /* An illegal syscall sets it, as an ocap fatal code. */
  char *why;              /* The malloc'd reason for fatal. */
  int exiting;            /* exitVat was called: 1 for success, 2 for failure. */
  char *exit_body;
  vbudget_t budget;
  lua_Integer sent;       /* capdata bytes sent and resolved in this delivery */
  lua_Integer logged;     /* log payload bytes in this delivery */
  int decode_failed;      /* decoding this delivery ran out of a budget */
  lua_Integer since_reap; /* deliveries since its last reap (gc.reapInterval) */
  runtime_t *runtime;     /* the runtime the live state reads, referenced */
  vheld_t *held;          /* the previous incarnation during an upgrade, else NULL */
  lkernel_t *lk;
} lvat_t;

/* A vat's timer. Only libuv's close callback frees it, since libuv holds
 * the handle until then. */
struct vtimer {
  uv_timer_t handle;
  long long id;
  lvat_t *rec;
};

/* A timer that fired and waits for its crank. Timers only queue firings,
 * because a libuv callback must not run a vat outside a crank. */
typedef struct firing {
  char vat[OCAP_REF_MAX];
  long long id;
} firing_t;

/* Firings wait in fired[head..n), taken from the front in O(1); the array
 * is compacted only when it must grow. */

struct lkernel {
  uv_loop_t loop;
  firing_t *fired;
  size_t headfired, nfired, capfired;
  ocap_store_t *s;
  ocap_kernel_t *k;
  lua_State *L; /* The host thread driving the kernel right now. */
  int host_dispatch_ref, vat_needed_ref, logger_ref, terminated_ref, exit_ref;
  int host_pipelines_ref; /* the host's answer to the kernel's pipelines hook */
  int peer_dispatch_ref;  /* the remote layer's: deliveries to peers, and their pipelines */
  int after_crank_ref;    /* the host's after-crank handler (K:setAfterCrank) */
  int drain_ref;          /* the host's promise drain (K:setDrain), for K:await, */
  int has_turns_ref;      /* and hasTurns, which it calls when */
  const void *drain_q;    /* drain's queue, which ocap_promise_idle reads, is NULL */
  int track_ref;          /* the host liveslots' trackPromise, */
  int pending_ref;        /* its pending promises by kpid, and */
  int settle_ref;         /* ocap.promise's settleAndResume (K:setHostResults) */
  lua_Integer c_sends;    /* host sends K:queueFlat took, */
  lua_Integer c_notifies; /* and resolutions ocap__host_notify took (K:hostPaths) */
  lvat_t **vats;          /* open addressing by vat number; NULL marks a free slot */
  size_t nvats;           /* slots: 0 or a power of two, at most half full */
  size_t nlive;           /* records in it */
  runtime_t *runtime;
  ocap__srccache_t srccache; /* vat sources the kernel compiled (lvat.c) */
  int in_step;
  int cranking;    /* a crank's writes are in the store's buffer: K:commit is the crank's */
  int after_crank; /* host code asked to run after this crank (K:afterCrank) */
  int exits;       /* a vat called exitVat since finish_exits last looked */
  lua_Integer reap_interval;   /* deliveries to a vat between reaps; 0: never */
  lua_Integer host_since_reap; /* the same count for the host's own endpoint */
  int host_ran;                /* host Lua code ran during this crank (K:drive stops) */
  lvat_t *delivering;          /* the vat whose state is running now, if any */
  lvat_t *ran;                 /* the vat the current crank delivered to, if any */
  lvat_t *started;             /* the vat the current crank started (vatNeeded), if any */
  const char *starting;        /* the vat vatNeeded is asked to start now, or NULL */
};

/* [-0, +0, e] Returns the open kernel at idx; a closed one raises, since
 * its store and vats are gone. */
static inline lkernel_t *checkkernel(lua_State *L, int idx) {
  lkernel_t **p = luaL_checkudata(L, idx, KERNEL_MT);
  if (!*p)
    luaL_error(L, "kernel is stopped");
  return *p;
}

/* [-0, +0, e] Raises when a crank is running: `K:<name>` starts or closes
 * a vat's Lua state, outside the store, which the crank's rollback would
 * not undo. Host code in a crank asks for such work after it (the kernel's
 * methods do, through K:afterCrank, which runs once `cranking` is clear).
 * The one start a crank makes itself, the vat vatNeeded is asked for, is
 * allowed by K:createVat: one_crank stops that vat if the crank fails. */
static inline void refuse_in_crank(lua_State *L, const lkernel_t *lk, const char *name) {
  if (lk->cranking)
    luaL_error(L,
               "K:%s is refused while a crank is running: it starts or stops a vat outside the "
               "store, which a rollback would not undo (do it after the crank)",
               name);
}

static inline char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

/*
 * The number N of a vat id "v<N>": 1 to 16 digits without a leading zero,
 * at most 2^53 - 1, as the kernel allocates them. Returns 0 for anything
 * else, so an absurd id read from a damaged database is refused here
 * rather than sizing a table.
 */
static inline unsigned long long vat_number(const char *id) {
  ocap__epc_t c = ocap__ep_code(id);
  return (c & 3) == 2 && c >> 2 <= (uint64_t)COUNT_MAX ? c >> 2 : 0;
}

/* The slot where vat number n is, or the free slot where it would go. */
static inline size_t vat_slot(const lkernel_t *lk, unsigned long long n) {
  size_t mask = lk->nvats - 1, i = (size_t)((n * 0x9e3779b97f4a7c15ULL) >> 17) & mask;
  while (lk->vats[i] && lk->vats[i]->num != n)
    i = (i + 1) & mask;
  return i;
}

static inline lvat_t *find_vat(lkernel_t *lk, const char *id) {
  unsigned long long n = vat_number(id);
  if (!n || !lk->nvats)
    return NULL;
  return lk->vats[vat_slot(lk, n)];
}

/* The slots or vrefs a call reads without allocating (read_slots). */
#define SMALL_SLOTS 8

/* [-0, +0] Every syscall gets its vat's record as upvalue 1, so a vat can
 * only ever act as itself. */
static inline lvat_t *sysvat(lua_State *V) {
  return lua_touserdata(V, lua_upvalueindex(1));
}

typedef int (*gc_call_t)(ocap_kernel_t *, const char *, const char *const *, size_t);

/* lvat.c: a vat's record and its Lua state. */
lvat_t *ocap__make_vat_record(lkernel_t *lk, const char *id);
void ocap__stop_vat(lvat_t *rec);
void ocap__drop_held(lvat_t *rec);
void ocap__release_runtime(runtime_t *rt);
extern const luaL_Reg ocap__vat_methods[];

/* lvattimer.c: a vat's timers. */
void ocap__stop_timers(vtimers_t *ts);
int ocap__timer_crank(lkernel_t *lk);
extern const luaL_Reg ocap__timer_syscalls[];

/* lsyscall.c: a vat's syscalls. */
void ocap__push_syscalls(lua_State *V, lvat_t *rec, int timers);
ocap_capdata_t ocap__check_capdata(lua_State *L, int body_idx, int slots_idx, const char **small);
const char **ocap__read_vrefs(lua_State *L, int idx, size_t *n, const char **small);
void ocap__add_json_string(luaL_Buffer *b, const char *s, size_t n);
extern const gc_call_t ocap__gc_calls[4];
extern const char *const ocap__gc_call_names[4];

/* ldeliver.c: entering a vat, or the host's endpoint. */
int ocap__deliver_vat(lkernel_t *lk, lvat_t *rec, const ocap_delivery_t *d, int *fatal, char **why);
int ocap__hook_deliver(void *ud, const char *ep, const ocap_delivery_t *d, int *fatal, char **why);
void ocap__hook_prepare(void *ud, const char *ep);
int ocap__hook_pipelines(void *ud, const char *ep, const char *eref);
void ocap__hook_terminated(void *ud, const char *ep, const char *reason, size_t rlen);

/* lkernel.c: the host's side of a delivery it takes in C. */
int ocap__host_notify(lkernel_t *lk, lua_State *L, const ocap_delivery_t *d);

#endif
