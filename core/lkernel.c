/*
 * lkernel.c -- the Lua binding of the kernel (`require 'ocap.core'`).
 *
 * It owns the vats' Lua states, gives each vat its syscalls, and delivers
 * to the kernel's own endpoint by calling a dispatch function in the host's
 * Lua state. The management plane (subclusters, configs, launch) is Lua, in
 * lua/ocap/kernel.lua; this file is the hot path between the crank loop and
 * the vats.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <uv.h>

#include "kernel.h"
#include "ljson.h"
#include "lnet.h"
#include "lio.h"
#include "lrpc.h"
#include "lsmallcaps.h"
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
  ocap_vat_module_t mods[];
} runtime_t;

/*
 * The parts of a vat record that belong to one Lua state of the vat. An
 * upgrade holds the old incarnation's aside while the new one starts, so
 * that a failed upgrade puts it back untouched, heap and timers included.
 */
typedef struct vheld {
  ocap_vat_t *vat; /* NULL when nothing is held */
  int dispatch_ref;
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
  vheld_t held;           /* the previous incarnation during an upgrade */
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
  lvat_t **vats;          /* open addressing by vat number; NULL marks a free slot */
  size_t nvats;           /* slots: 0 or a power of two, at most half full */
  size_t nlive;           /* records in it */
  runtime_t *runtime;
  int in_step;
  lua_Integer reap_interval;   /* deliveries to a vat between reaps; 0: never */
  lua_Integer host_since_reap; /* the same count for the host's own endpoint */
  int host_ran;                /* host Lua code ran during this crank (K:drive stops) */
  lvat_t *delivering;          /* the vat whose state is running now, if any */
  lvat_t *ran;                 /* the vat the current crank delivered to, if any */
};

static void release_runtime(runtime_t *rt);

/* ---- small helpers ---- */

/* [-0, +0, e] Returns the open kernel at idx; a closed one raises, since
 * its store and vats are gone. */
static lkernel_t *checkkernel(lua_State *L, int idx) {
  lkernel_t **p = luaL_checkudata(L, idx, KERNEL_MT);
  if (!*p)
    luaL_error(L, "kernel is stopped");
  return *p;
}

static char *dupstr(const char *s) {
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
static unsigned long long vat_number(const char *id) {
  size_t n = strlen(id);
  if (n < 2 || n > 17 || id[0] != 'v' || (id[1] == '0' && n > 2))
    return 0;
  unsigned long long v = 0;
  for (size_t i = 1; i < n; i++) {
    if (id[i] < '0' || id[i] > '9')
      return 0;
    v = v * 10 + (unsigned long long)(id[i] - '0');
  }
  return v <= 9007199254740991ULL ? v : 0;
}

/* The slot where vat number n is, or the free slot where it would go. */
static size_t vat_slot(const lkernel_t *lk, unsigned long long n) {
  size_t mask = lk->nvats - 1, i = (size_t)((n * 0x9e3779b97f4a7c15ULL) >> 17) & mask;
  while (lk->vats[i] && lk->vats[i]->num != n)
    i = (i + 1) & mask;
  return i;
}

static lvat_t *find_vat(lkernel_t *lk, const char *id) {
  unsigned long long n = vat_number(id);
  if (!n || !lk->nvats)
    return NULL;
  return lk->vats[vat_slot(lk, n)];
}

static vbudget_t default_budget(void) {
  vbudget_t b = {DEFAULT_MESSAGE_BYTES,
                 DEFAULT_MESSAGE_SLOTS,
                 DEFAULT_CRANK_BYTES,
                 DEFAULT_QUEUED_BYTES,
                 DEFAULT_LOG_BYTES,
                 DEFAULT_TIMERS,
                 (lua_Integer)OCAP_VAT_DEFAULT_MEMORY,
                 OCAP_VAT_DEFAULT_INSTRUCTIONS};
  return b;
}

/* Returns the record of vat id, made if new; NULL for an invalid id or
 * when memory runs out. The table grows with the number of vats, never
 * with the size of their numbers. */
static lvat_t *make_vat_record(lkernel_t *lk, const char *id) {
  lvat_t *rec = find_vat(lk, id);
  unsigned long long n = vat_number(id);
  if (rec || !n)
    return rec;
  if ((lk->nlive + 1) * 2 > lk->nvats) {
    size_t cap = lk->nvats ? lk->nvats * 2 : 16;
    lvat_t **v = calloc(cap, sizeof *v), **old = lk->vats;
    size_t oldn = lk->nvats;
    if (!v)
      return NULL;
    lk->vats = v;
    lk->nvats = cap;
    for (size_t i = 0; i < oldn; i++)
      if (old[i])
        lk->vats[vat_slot(lk, old[i]->num)] = old[i];
    free(old);
  }
  rec = calloc(1, sizeof *rec);
  if (!rec)
    return NULL;
  snprintf(rec->id, sizeof rec->id, "%s", id);
  rec->lk = lk;
  rec->dispatch_ref = LUA_NOREF;
  rec->held.dispatch_ref = LUA_NOREF;
  rec->budget = default_budget();
  rec->num = n;
  lk->vats[vat_slot(lk, n)] = rec;
  lk->nlive++;
  return rec;
}

static void timer_closed(uv_handle_t *h) {
  free(h->data);
}

static size_t timer_hash(long long id, size_t cap) {
  return (size_t)(((unsigned long long)id * 0x9E3779B97F4A7C15ULL) >> 32) & (cap - 1);
}

/* The slot of timer id in ts: the one holding it, or the free slot where
 * it would go. ts must have a slot. */
static vtimer_t **timer_slot(vtimers_t *ts, long long id) {
  size_t i = timer_hash(id, ts->cap);
  while (ts->slot[i] && ts->slot[i]->id != id)
    i = (i + 1) & (ts->cap - 1);
  return &ts->slot[i];
}

static vtimer_t *timer_find(vtimers_t *ts, long long id) {
  return ts->cap ? *timer_slot(ts, id) : NULL;
}

/* Adds t, whose id is not in ts. Returns 0 or OCAP_ENOMEM. */
static int timer_add(vtimers_t *ts, vtimer_t *t) {
  if (2 * (ts->n + 1) > ts->cap) {
    vtimers_t bigger = {calloc(ts->cap ? 2 * ts->cap : 16, sizeof(vtimer_t *)), 0, 0};
    if (!bigger.slot)
      return OCAP_ENOMEM;
    bigger.cap = ts->cap ? 2 * ts->cap : 16;
    for (size_t i = 0; i < ts->cap; i++)
      if (ts->slot[i])
        *timer_slot(&bigger, ts->slot[i]->id) = ts->slot[i];
    bigger.n = ts->n;
    free(ts->slot);
    *ts = bigger;
  }
  *timer_slot(ts, t->id) = t;
  ts->n++;
  return 0;
}

/* Removes timer id from ts, moving back the entries of its probe run so
 * that every entry stays reachable from its hash slot. */
static void timer_remove(vtimers_t *ts, long long id) {
  if (!ts->cap)
    return;
  vtimer_t **hole = timer_slot(ts, id);
  if (!*hole)
    return;
  *hole = NULL;
  ts->n--;
  size_t mask = ts->cap - 1, h = (size_t)(hole - ts->slot);
  for (size_t i = (h + 1) & mask; ts->slot[i]; i = (i + 1) & mask) {
    size_t home = timer_hash(ts->slot[i]->id, ts->cap);
    /* The entry may fill the hole when its home is not in (h, i]. */
    if (((i - home) & mask) >= ((i - h) & mask)) {
      ts->slot[h] = ts->slot[i];
      ts->slot[i] = NULL;
      h = i;
    }
  }
}

/* Stops and closes a timer's handle; libuv frees it in timer_closed. */
static void timer_close(vtimer_t *t) {
  uv_timer_stop(&t->handle);
  uv_close((uv_handle_t *)&t->handle, timer_closed);
}

static void stop_timers(vtimers_t *ts) {
  for (size_t i = 0; i < ts->cap; i++)
    if (ts->slot[i])
      timer_close(ts->slot[i]);
  free(ts->slot);
  memset(ts, 0, sizeof *ts);
}

static void stop_vat(lvat_t *rec) {
  stop_timers(&rec->timers);
  ocap_vat_free(rec->vat);
  rec->vat = NULL;
  release_runtime(rec->runtime);
  rec->runtime = NULL;
  rec->dispatch_ref = LUA_NOREF;
  free(rec->why);
  rec->why = NULL;
  free(rec->exit_body);
  rec->exit_body = NULL;
  rec->fatal = 0;
  rec->exiting = 0;
}

/* Exchanges the live state of rec with the one it holds aside. */
static void swap_held(lvat_t *rec) {
  vheld_t live = {rec->vat, rec->dispatch_ref, rec->timers, rec->runtime, rec->budget};
  rec->vat = rec->held.vat;
  rec->dispatch_ref = rec->held.dispatch_ref;
  rec->timers = rec->held.timers;
  rec->runtime = rec->held.runtime;
  rec->budget = rec->held.budget;
  rec->held = live;
}

/* Frees the state rec holds aside, if any: its timers, heap and runtime. */
static void drop_held(lvat_t *rec) {
  vheld_t *h = &rec->held;
  if (!h->vat)
    return;
  stop_timers(&h->timers);
  ocap_vat_free(h->vat);
  release_runtime(h->runtime);
  memset(h, 0, sizeof *h);
  h->dispatch_ref = LUA_NOREF;
}

/* [-0, +1, m] Pushes a table of the capdata's slots, or nil when it has
 * none: most messages carry none, and liveslots reads nil as no slots. */
static void push_slots(lua_State *L, const ocap_capdata_t *cd) {
  if (cd->nslots == 0) {
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, (int)cd->nslots, 0);
  for (size_t i = 0; i < cd->nslots; i++) {
    lua_pushstring(L, cd->slots[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/*
 * [-0, +n, m] Pushes a delivery's arguments as liveslots' dispatch takes
 * them and returns n, their count. The vat and the host's endpoint share it,
 * so both see a delivery in the same shape.
 */
static int push_delivery(lua_State *L, const ocap_delivery_t *d) {
  static const char *const gc_kind[] = {"dropExports", "retireExports", "retireImports",
                                        "bringOutYourDead", "stopVat"};
  STACK_CHECK_BEGIN(L);
  if (d->type >= OCAP_DELIVER_DROP_EXPORTS && d->type <= OCAP_DELIVER_STOP_VAT) {
    lua_pushstring(L, gc_kind[d->type - OCAP_DELIVER_DROP_EXPORTS]);
    if (d->type >= OCAP_DELIVER_BRING_OUT_YOUR_DEAD) {
      STACK_CHECK_END(L, 1);
      return 1;
    }
    lua_createtable(L, (int)d->nvrefs, 0);
    for (size_t i = 0; i < d->nvrefs; i++) {
      lua_pushstring(L, d->vrefs[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    STACK_CHECK_END(L, 2);
    return 2;
  }
  if (d->type == OCAP_DELIVER_TIMER) {
    lua_pushliteral(L, "timer");
    lua_pushinteger(L, (lua_Integer)strtoll(d->target, NULL, 10));
    STACK_CHECK_END(L, 2);
    return 2;
  }
  if (d->type == OCAP_DELIVER_MESSAGE) {
    lua_pushliteral(L, "message");
    lua_pushstring(L, d->target);
    lua_pushlstring(L, d->methargs.body, d->methargs.blen);
    push_slots(L, &d->methargs);
    if (d->result)
      lua_pushstring(L, d->result);
    else
      lua_pushnil(L);
    STACK_CHECK_END(L, 5);
    return 5;
  }
  lua_pushliteral(L, "notify");
  if (d->nresolutions == 1) {
    /* The common case, one resolution, goes flat: no tables to make. */
    const ocap_resolution_t *r = &d->resolutions[0];
    lua_pushstring(L, r->kpid);
    lua_pushboolean(L, r->rejected);
    lua_pushlstring(L, r->data.body, r->data.blen);
    push_slots(L, &r->data);
    STACK_CHECK_END(L, 5);
    return 5;
  }
  lua_createtable(L, (int)d->nresolutions, 0);
  for (size_t i = 0; i < d->nresolutions; i++) {
    const ocap_resolution_t *r = &d->resolutions[i];
    lua_createtable(L, 4, 0);
    lua_pushstring(L, r->kpid);
    lua_rawseti(L, -2, 1);
    lua_pushboolean(L, r->rejected);
    lua_rawseti(L, -2, 2);
    lua_pushlstring(L, r->data.body, r->data.blen);
    lua_rawseti(L, -2, 3);
    push_slots(L, &r->data);
    lua_rawseti(L, -2, 4);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  STACK_CHECK_END(L, 2);
  return 2;
}

#define SMALL_SLOTS 8

/*
 * [-0, +(0|1), e] Reads the slots table at idx into `small` when it fits
 * (the common case, so the crank path does not allocate), else into a
 * temporary array owned by a userdata it pushes, so that nothing leaks if a
 * later call raises. The strings stay owned by the table, which the caller
 * keeps on the stack; that is why a slot must already be a string.
 */
static const char **read_slots(lua_State *L, int idx, size_t *n, const char **small) {
  idx = lua_absindex(L, idx);
  if (lua_isnoneornil(L, idx)) {
    *n = 0;
    return NULL;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  size_t len = (size_t)lua_rawlen(L, idx);
  const char **slots = len <= SMALL_SLOTS ? small : lua_newuserdatauv(L, len * sizeof *slots, 0);
  for (size_t i = 0; i < len; i++) {
    /* A number would be converted on the stack only, and the new string
     * would die with the pop below. */
    slots[i] = lua_rawgeti(L, idx, (lua_Integer)i + 1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    if (!slots[i])
      luaL_error(L, "slot %d is not a string", (int)i + 1);
  }
  *n = len;
  return slots;
}

/* [-0, +(0|1), e] Reads a body and its slots (see read_slots); the
 * capdata borrows the strings from the stack. */
static ocap_capdata_t check_capdata(lua_State *L, int body_idx, int slots_idx, const char **small) {
  ocap_capdata_t cd;
  cd.body = luaL_checklstring(L, body_idx, &cd.blen);
  cd.slots = read_slots(L, slots_idx, &cd.nslots, small);
  return cd;
}

/* ---- syscalls of a vat ---- */

/* [-0, +0] Every syscall gets its vat's record as upvalue 1, so a vat can
 * only ever act as itself. */
static lvat_t *sysvat(lua_State *V) {
  return lua_touserdata(V, lua_upvalueindex(1));
}

/* [-0, +0, e] Makes the vat's crank fatal, then raises so the vat stops
 * here; it never returns. The mark survives a pcall in the vat that would
 * catch the error. */
static int illegal(lua_State *V, lvat_t *rec, const char *msg) {
  if (!rec->fatal) {
    rec->fatal = OCAP_FATAL_ILLEGAL_SYSCALL;
    free(rec->why);
    rec->why = dupstr(msg);
  }
  return luaL_error(V, "illegal syscall: %s", msg);
}

/*
 * [-0, +0, e] Reports a syscall's failure and never returns. A kernel
 * failure (the store failed, or holds something that cannot be right) is
 * not the vat's fault: the vat is stopped with an error, and the crank
 * fails and rolls back. Anything else is the vat's illegal syscall.
 */
static int syscall_failed(lua_State *V, lvat_t *rec) {
  ocap_kernel_t *k = rec->lk->k;
  if (ocap_kernel_failed(k))
    return luaL_error(V, "kernel failure: %s", ocap_kernel_errmsg(k));
  return illegal(V, rec, ocap_kernel_errmsg(k));
}

/* [-0, +0, e] Records a failed store call of a syscall as a kernel failure
 * and raises; it never returns. */
static int store_call_failed(lua_State *V, lvat_t *rec, int rc, const char *what) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s failed: %s: %s", what, ocap_strerror(rc),
           ocap_store_errmsg(rec->lk->s));
  ocap_kernel_note_failure(rec->lk->k, rc, msg);
  return syscall_failed(V, rec);
}

/*
 * [-0, +0, e] Makes the vat's crank fatal for going over a budget of one
 * delivery, then raises; it never returns. Like an illegal syscall, the
 * mark survives a pcall in the vat that would catch the error.
 */
static int over_quota(lua_State *V, lvat_t *rec, const char *fmt, long long n, long long max) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, n, max);
  if (!rec->fatal) {
    rec->fatal = OCAP_FATAL_QUOTA;
    free(rec->why);
    rec->why = dupstr(msg);
  }
  return luaL_error(V, "%s", msg);
}

/* [-0, +0, e] Adds s to b as the inside of a JSON string. */
static void add_json_string(luaL_Buffer *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      luaL_addchar(b, '\\');
      luaL_addchar(b, (char)c);
    } else if (c < 0x20 || c == 0x7f) {
      char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
      luaL_addlstring(b, esc, 6);
    } else {
      luaL_addchar(b, (char)c);
    }
  }
}

/* [-0, +1, e] Pushes the smallcaps body of an error whose message is msg
 * and returns it, with its length in *len. */
static const char *push_error_body(lua_State *L, const char *msg, size_t *len) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "#{\"#error\":\"");
  add_json_string(&b, msg, strlen(msg));
  luaL_addstring(&b, "\",\"name\":\"Error\"}");
  luaL_pushresult(&b);
  return lua_tolstring(L, -1, len);
}

/* The bytes of a capdata as the kernel stores it: body and slots. */
static lua_Integer capdata_bytes(const ocap_capdata_t *cd) {
  size_t n = cd->blen;
  for (size_t i = 0; i < cd->nslots; i++)
    n += strlen(cd->slots[i]) + 1;
  return (lua_Integer)n;
}

/*
 * [-0, +0] Checks one message (or resolution) against the vat's budget for
 * a single message. Returns NULL when it fits, else a description of the
 * excess in buf.
 */
static const char *message_excess(const lvat_t *rec, const ocap_capdata_t *cd, lua_Integer bytes,
                                  const char *what, char *buf, size_t size) {
  if ((lua_Integer)cd->nslots > rec->budget.message_slots)
    snprintf(buf, size, "%s with %zu slots is over this vat's limit of %lld (maxMessageSlots)",
             what, cd->nslots, (long long)rec->budget.message_slots);
  else if (bytes > rec->budget.message_bytes)
    snprintf(buf, size, "%s of %lld bytes is over this vat's limit of %lld (maxMessageBytes)", what,
             (long long)bytes, (long long)rec->budget.message_bytes);
  else
    return NULL;
  return buf;
}

/* [-0, +0, e] Charges bytes sent or resolved to the current delivery;
 * going over the delivery's budget is fatal. */
static void charge_sent(lua_State *V, lvat_t *rec, lua_Integer bytes) {
  rec->sent += bytes;
  if (rec->sent > rec->budget.crank_bytes)
    over_quota(V, rec,
               "sent %lld bytes in one delivery, over this vat's limit of %lld (maxCrankBytes)",
               (long long)rec->sent, (long long)rec->budget.crank_bytes);
}

/* send(target, body, slots, result?)  [-0, +0, e]
 * A message over the vat's size budget raises an ordinary error in the
 * sender before the kernel holds any of it, so a receiver is never asked
 * to decode it. */
static int sys_send(lua_State *V) {
  const char *small[SMALL_SLOTS];
  lvat_t *rec = sysvat(V);
  const char *target = luaL_checkstring(V, 1);
  ocap_capdata_t cd = check_capdata(V, 2, 3, small);
  const char *result = luaL_optstring(V, 4, NULL);
  char excess[192];
  lua_Integer bytes = capdata_bytes(&cd);
  if (message_excess(rec, &cd, bytes, "message", excess, sizeof excess)) {
    lua_pushstring(V, excess); /* no position: the sender's caller is not at fault */
    return lua_error(V);
  }
  /* Messages wait in the kernel until delivered: in the run queue, or
   * parked on a promise nobody may ever resolve. */
  long long queued = ocap_kernel_queued_bytes(rec->lk->k, rec->id);
  if (queued + bytes > rec->budget.queued_bytes) {
    lua_pushfstring(V,
                    "this vat has %I bytes of messages waiting in the kernel; %I more would "
                    "pass its limit of %I (maxQueuedBytes)",
                    (LUAI_UACINT)queued, (LUAI_UACINT)bytes, (LUAI_UACINT)rec->budget.queued_bytes);
    return lua_error(V);
  }
  charge_sent(V, rec, bytes);
  if (ocap_kernel_send(rec->lk->k, rec->id, target, &cd, result))
    return syscall_failed(V, rec);
  return 0;
}

/* subscribe(kpid)  [-0, +0, e] */
static int sys_subscribe(lua_State *V) {
  lvat_t *rec = sysvat(V);
  if (ocap_kernel_subscribe(rec->lk->k, rec->id, luaL_checkstring(V, 1)))
    return syscall_failed(V, rec);
  return 0;
}

/* resolve(kpid, rejected, body, slots)  [-0, +0, e] */
static int sys_resolve(lua_State *V) {
  const char *small[SMALL_SLOTS];
  lvat_t *rec = sysvat(V);
  ocap_resolution_t r;
  r.kpid = luaL_checkstring(V, 1);
  r.rejected = lua_toboolean(V, 2);
  r.data = check_capdata(V, 3, 4, small);
  char excess[192];
  lua_Integer bytes = capdata_bytes(&r.data);
  if (message_excess(rec, &r.data, bytes, "result", excess, sizeof excess)) {
    /* The decider settles the promise all the same, so its callers are
     * not left waiting: it is rejected with the reason instead. */
    ocap_capdata_t err = {0};
    err.body = push_error_body(V, excess, &err.blen);
    r.rejected = 1;
    r.data = err;
    bytes = (lua_Integer)err.blen;
  }
  charge_sent(V, rec, bytes);
  if (ocap_kernel_resolve(rec->lk->k, rec->id, &r, 1))
    return syscall_failed(V, rec);
  return 0;
}

/*
 * exit(failure, body)  [-0, +0, e]
 * Only records the exit: the vat is still running its crank, so
 * finish_exits terminates it after the crank.
 */
static int sys_exit(lua_State *V) {
  lvat_t *rec = sysvat(V);
  int failure = lua_toboolean(V, 1);
  const char *body = luaL_checkstring(V, 2);
  if (!rec->exiting) {
    rec->exiting = failure ? 2 : 1;
    rec->exit_body = dupstr(body);
  }
  return 0;
}

/* [-0, +1, e] Pushes "vs.<vatId>.<key>" for the key at idx and returns it.
 * Building the prefix here keeps a vat inside its own part of the store. */
static const char *vs_key(lua_State *V, lvat_t *rec, int idx, size_t *klen) {
  size_t n;
  const char *key = luaL_checklstring(V, idx, &n);
  luaL_Buffer b;
  luaL_buffinit(V, &b);
  luaL_addstring(&b, "vs.");
  luaL_addstring(&b, rec->id);
  luaL_addchar(&b, '.');
  luaL_addlstring(&b, key, n);
  luaL_pushresult(&b);
  return lua_tolstring(V, -1, klen);
}

/* vatstoreGet(key) -> value | nil  [-0, +1, e] */
static int sys_vatstore_get(lua_State *V) {
  lvat_t *rec = sysvat(V);
  size_t kl, vl;
  const char *key = vs_key(V, rec, 1, &kl), *val;
  int rc = ocap_store_get(rec->lk->s, key, kl, &val, &vl);
  if (rc < 0)
    return store_call_failed(V, rec, rc, "vatstore read");
  if (rc == 1)
    lua_pushlstring(V, val, vl);
  else
    lua_pushnil(V);
  return 1;
}

/* vatstoreSet(key, value)  [-0, +0, e] */
static int sys_vatstore_set(lua_State *V) {
  lvat_t *rec = sysvat(V);
  size_t kl, vl;
  const char *val = luaL_checklstring(V, 2, &vl);
  const char *key = vs_key(V, rec, 1, &kl);
  int rc = ocap_store_set(rec->lk->s, key, kl, val, vl);
  if (rc)
    return store_call_failed(V, rec, rc, "vatstore write");
  return 0;
}

/* vatstoreDelete(key)  [-0, +0, e] */
static int sys_vatstore_delete(lua_State *V) {
  lvat_t *rec = sysvat(V);
  size_t kl;
  const char *key = vs_key(V, rec, 1, &kl);
  int rc = ocap_store_delete(rec->lk->s, key, kl);
  if (rc)
    return store_call_failed(V, rec, rc, "vatstore delete");
  return 0;
}

/* vatstoreNext(prefix, after?) -> key | nil  [-0, +1, e]
 * The key comes back without the "vs.<vatId>." the vat never sees. */
static int sys_vatstore_next(lua_State *V) {
  lvat_t *rec = sysvat(V);
  size_t pl, al = 0, kl;
  const char *prefix = vs_key(V, rec, 1, &pl);
  const char *after = prefix;
  al = pl;
  int inclusive = 1;
  if (!lua_isnoneornil(V, 2)) {
    after = vs_key(V, rec, 2, &al);
    inclusive = 0;
  }
  const char *key;
  size_t strip = strlen(rec->id) + 4;
  int rc = ocap_store_next_key(rec->lk->s, prefix, pl, after, al, inclusive, &key, &kl);
  if (rc < 0)
    return store_call_failed(V, rec, rc, "vatstore scan");
  if (rc == 1 && kl >= strip)
    lua_pushlstring(V, key + strip, kl - strip);
  else
    lua_pushnil(V);
  return 1;
}

/*
 * Bounds of one log entry from a vat. The host decodes the entry and its
 * logger may walk every field, so what a vat can make the host do per log
 * call is bounded here, before the entry leaves C.
 */
#define LOG_ENTRY_MAX 16384 /* bytes of the payload */
#define LOG_VALUES_MAX 256  /* values (fields, elements) in the payload */
#define LOG_DEPTH_MAX 16    /* nesting of its tables */

/*
 * Why a log payload cannot go to the host, or NULL when it can: it must be
 * a smallcaps record within the bounds above. Only its shape is checked;
 * the host's decoder checks the syntax.
 */
static const char *log_problem(const char *p, size_t n) {
  if (n > LOG_ENTRY_MAX)
    return "it is over 16384 bytes";
  if (n < 2 || p[0] != '#' || p[1] != '{')
    return "it is not a smallcaps record";
  int depth = 0, in_string = 0;
  size_t values = 0;
  for (size_t i = 1; i < n; i++) {
    char c = p[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = 0;
    } else if (c == '"') {
      in_string = 1;
    } else if (c == '{' || c == '[') {
      values++;
      if (++depth > LOG_DEPTH_MAX)
        return "its tables are nested more than 16 deep";
    } else if (c == '}' || c == ']') {
      depth--;
    } else if (c == ',') {
      values++;
    }
    if (values > LOG_VALUES_MAX)
      return "it has more than 256 values";
  }
  return NULL;
}

/*
 * log(level, payload)  [-0, +0, e]
 * Hands a structured entry (a smallcaps record) to the host's logger, which
 * runs in the host's state; that state's stack is left as it was. An entry
 * over the bounds above reaches the host as a short notice instead, and
 * the payload bytes of one delivery count against the vat's maxLogBytes.
 */
static int sys_log(lua_State *V) {
  static const char *const levels[] = {"debug", "log", "warn", "error", NULL};
  lvat_t *rec = sysvat(V);
  lkernel_t *lk = rec->lk;
  const char *level = levels[luaL_checkoption(V, 1, NULL, levels)];
  size_t n;
  const char *payload = luaL_checklstring(V, 2, &n);
  rec->logged += (lua_Integer)n;
  if (rec->logged > rec->budget.log_bytes)
    return over_quota(V, rec,
                      "logged %lld bytes in one delivery, over this vat's limit of %lld "
                      "(maxLogBytes)",
                      (long long)rec->logged, (long long)rec->budget.log_bytes);
  lua_State *L = lk->L;
  if (!L || lk->logger_ref == LUA_NOREF)
    return 0;
  const char *problem = log_problem(payload, n);
  char notice[160];
  if (problem) {
    n = (size_t)snprintf(notice, sizeof notice,
                         "#{\"message\":\"log entry of %zu bytes dropped: %s\","
                         "\"tags\":[\"kernel\"]}",
                         n, problem);
    payload = notice;
  }
  STACK_CHECK_BEGIN(L);
  lk->host_ran = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->logger_ref);
  lua_pushstring(L, rec->id);
  lua_pushstring(L, level);
  lua_pushlstring(L, payload, n);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK)
    lua_pop(L, 1); /* A broken logger must not break the vat. */
  STACK_CHECK_END(L, 0);
  return 0;
}

/* Queues a firing for its crank. A one-shot timer is done once it fired,
 * so it is closed and stops counting against the vat's maxTimers. */
static void timer_fired(uv_timer_t *h) {
  vtimer_t *t = h->data;
  lvat_t *rec = t->rec;
  lkernel_t *lk = rec->lk;
  if (lk->nfired == lk->capfired && lk->headfired > 0) {
    lk->nfired -= lk->headfired;
    memmove(lk->fired, lk->fired + lk->headfired, lk->nfired * sizeof *lk->fired);
    lk->headfired = 0;
  }
  if (lk->nfired == lk->capfired) {
    size_t cap = lk->capfired ? lk->capfired * 2 : 16;
    firing_t *f = realloc(lk->fired, cap * sizeof *f);
    if (f) {
      lk->fired = f;
      lk->capfired = cap;
    }
  }
  /* Without room, dropping a tick beats crashing the kernel. */
  if (lk->nfired < lk->capfired) {
    firing_t *f = &lk->fired[lk->nfired++];
    snprintf(f->vat, sizeof f->vat, "%s", rec->id);
    f->id = t->id;
  }
  if (uv_timer_get_repeat(h) == 0) {
    timer_remove(&rec->timers, t->id);
    timer_close(t);
  }
}

/* timerStart(id, ms, repeatMs?)  [-0, +0, e]
 * Restarting an existing id reuses its handle, so a vat cannot pile up
 * timers by restarting one; a new one over the vat's maxTimers raises an
 * ordinary error. */
static int sys_timer_start(lua_State *V) {
  lvat_t *rec = sysvat(V);
  lua_Integer id = luaL_checkinteger(V, 1);
  lua_Number ms = luaL_checknumber(V, 2), rep = luaL_optnumber(V, 3, 0);
  /* Beyond 2^53 ms (285,000 years) is forever; the cast must not overflow. */
  const lua_Number far = 9007199254740992.0;
  uint64_t due = ms > 0 ? (uint64_t)(ms < far ? ms : far) : 0;
  uint64_t every = rep > 0 ? (uint64_t)(rep < far ? rep : far) : 0;
  vtimer_t *t = timer_find(&rec->timers, id);
  if (!t) {
    if ((lua_Integer)rec->timers.n >= rec->budget.timers) {
      lua_pushfstring(V, "too many live timers: this vat's limit is %I (maxTimers)",
                      (LUAI_UACINT)rec->budget.timers);
      return lua_error(V);
    }
    t = calloc(1, sizeof *t);
    if (!t)
      return luaL_error(V, "out of memory");
    t->id = id;
    t->rec = rec;
    if (timer_add(&rec->timers, t)) {
      free(t);
      return luaL_error(V, "out of memory");
    }
    uv_timer_init(&rec->lk->loop, &t->handle);
    t->handle.data = t;
  }
  uv_timer_start(&t->handle, timer_fired, due, every);
  return 0;
}

/* timerStop(id)  [-0, +0, e] */
static int sys_timer_stop(lua_State *V) {
  lvat_t *rec = sysvat(V);
  lua_Integer id = luaL_checkinteger(V, 1);
  vtimer_t *t = timer_find(&rec->timers, id);
  if (t) {
    timer_remove(&rec->timers, id);
    timer_close(t);
  }
  return 0;
}

/*
 * decode(fn, ...) -> true, fn(...) | false, err  [-n, +r, e]
 * Liveslots decodes the capdata of every delivery through it, as through
 * pcall: this is the delivery's one protected call around decoding. When
 * the decoding exhausts the vat's memory or meter, the record says so and
 * the error is raised on, and the kernel refuses the delivery instead of
 * terminating the vat for what its sender made it decode (refuse_decode).
 * A vat that wraps its own code in it only spares itself.
 */
static int sys_decode(lua_State *V) {
  lvat_t *rec = sysvat(V);
  luaL_checktype(V, 1, LUA_TFUNCTION);
  int st = lua_pcall(V, lua_gettop(V) - 1, LUA_MULTRET, 0);
  if (st == LUA_OK) {
    lua_pushboolean(V, 1);
    lua_insert(V, 1);
    return lua_gettop(V);
  }
  if (ocap_vat_fatal(rec->vat)) {
    rec->decode_failed = 1;
    return lua_error(V);
  }
  if (st == LUA_ERRMEM) {
    /* One refused buffer, short of exhaustion: an ordinary error. */
    lua_pop(V, 1);
    lua_pushfstring(V, "vat %s has no memory to decode this message", rec->id);
  }
  lua_pushboolean(V, 0);
  lua_insert(V, -2);
  return 2;
}

/* traceback(msg?) -> string  [-0, +1, e]
 * It is the runtime's only window on the stack, since vats get no debug. */
static int sys_traceback(lua_State *V) {
  luaL_traceback(V, V, luaL_optstring(V, 1, NULL), 2);
  return 1;
}

/* collectGarbage()  [-0, +0]
 * A full collection of the vat's heap, for liveslots at a reap point
 * (bringOutYourDead, docs/gc.md): its weak tables then hold exactly what
 * the heap still reaches. The sandbox has no collectgarbage, so that vat
 * code can neither run a collection nor see when one runs. One cycle is
 * enough: a vat has no finalizers to revive an object. */
static int sys_collect_garbage(lua_State *V) {
  lua_gc(V, LUA_GCCOLLECT, 0);
  return 0;
}

/*
 * [-0, +(0|1), m] Reads the argument at idx as a GC syscall takes it, a
 * sequence of strings and nothing else, into `small` when it fits, else
 * into an array owned by a userdata it pushes (see read_slots). Returns
 * NULL with *n unset when it is anything else. Only raw accesses: a
 * metatable (a hardened table's) changes nothing.
 */
static const char **read_vrefs(lua_State *L, int idx, size_t *n, const char **small) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    return NULL;
  size_t len = (size_t)lua_rawlen(L, idx), keys = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int ok = lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 &&
             (size_t)lua_tointeger(L, -2) <= len && lua_type(L, -1) == LUA_TSTRING;
    lua_pop(L, 1);
    keys++;
    if (!ok) {
      lua_pop(L, 1);
      return NULL;
    }
  }
  if (keys != len)
    return NULL;
  const char **v = len <= SMALL_SLOTS ? small : lua_newuserdatauv(L, len * sizeof *v, 0);
  for (size_t i = 0; i < len; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    v[i] = lua_tostring(L, -1); /* the table keeps it */
    lua_pop(L, 1);
  }
  *n = len;
  return v;
}

typedef int (*gc_call_t)(ocap_kernel_t *, const char *, const char *const *, size_t);
static const gc_call_t gc_calls[] = {ocap_kernel_drop_imports, ocap_kernel_retire_imports,
                                     ocap_kernel_retire_exports, ocap_kernel_abandon_exports};
static const char *const gc_call_names[] = {"dropImports", "retireImports", "retireExports",
                                            "abandonExports"};

/* dropImports(vrefs), retireImports, retireExports, abandonExports
 * [-0, +0, e] Upvalue 2 says which. Any misuse (a shape or a vref the
 * kernel refuses) is the vat's illegal syscall: its crank rolls back. */
static int sys_gc(lua_State *V) {
  lvat_t *rec = sysvat(V);
  int which = (int)lua_tointeger(V, lua_upvalueindex(2));
  const char *small[SMALL_SLOTS];
  size_t n = 0;
  const char **v = read_vrefs(V, 1, &n, small);
  if (!v) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s takes a sequence of vref strings", gc_call_names[which]);
    return illegal(V, rec, msg);
  }
  if (gc_calls[which](rec->lk->k, rec->id, v, n))
    return syscall_failed(V, rec);
  return 0;
}

static const luaL_Reg syscalls[] = {
    {"send", sys_send},
    {"subscribe", sys_subscribe},
    {"resolve", sys_resolve},
    {"exit", sys_exit},
    {"vatstoreGet", sys_vatstore_get},
    {"vatstoreSet", sys_vatstore_set},
    {"vatstoreDelete", sys_vatstore_delete},
    {"vatstoreNext", sys_vatstore_next},
    {"log", sys_log},
    {"traceback", sys_traceback},
    {"decode", sys_decode},
    {"collectGarbage", sys_collect_garbage},
    {NULL, NULL},
};

/* Only a vat endowed with setTimeout or setInterval gets these: a syscall
 * a vat was not given must not exist in it, whatever code gets hold of
 * its syscall table. */
static const luaL_Reg timer_syscalls[] = {
    {"timerStart", sys_timer_start},
    {"timerStop", sys_timer_stop},
    {NULL, NULL},
};

/* ---- entering a vat ---- */

/*
 * tramp(rec, delivery)  [-2, +0, e]
 * Runs inside the vat's protected path and builds the delivery's arguments
 * there, so that running out of the vat's memory while building them is
 * caught like any other failure of the crank.
 */
static int vat_deliver_tramp(lua_State *V) {
  lvat_t *rec = lua_touserdata(V, 1);
  const ocap_delivery_t *d = lua_touserdata(V, 2);
  lua_settop(V, 0);
  lua_rawgeti(V, LUA_REGISTRYINDEX, rec->dispatch_ref);
  int n = push_delivery(V, d);
  lua_call(V, n, 0);
  return 0;
}

static int map_status(int st) {
  return st == OCAP_VAT_METER    ? OCAP_FATAL_METER
         : st == OCAP_VAT_MEMORY ? OCAP_FATAL_MEMORY
                                 : OCAP_FATAL_INTERNAL;
}

/* [-0, +0] Runs d in the vat through the one protected path, with the
 * delivery's budgets fresh, and returns how the call ended; an error
 * message it leaves is popped, and kept in *msg (malloc'd) when asked. */
static int run_delivery(lkernel_t *lk, lvat_t *rec, const ocap_delivery_t *d, char **msg) {
  lua_State *V = ocap_vat_state(rec->vat);
  STACK_CHECK_BEGIN(V);
  rec->sent = 0;
  rec->logged = 0;
  rec->decode_failed = 0;
  lua_pushcfunction(V, vat_deliver_tramp);
  lua_pushlightuserdata(V, rec);
  lua_pushlightuserdata(V, (void *)d);
  lvat_t *outer = lk->delivering;
  lk->delivering = rec;
  lk->ran = rec;
  int st = ocap_vat_pcall(rec->vat, 2, 0);
  lk->delivering = outer;
  if (st != OCAP_VAT_OK) {
    const char *m = lua_tostring(V, -1);
    if (msg)
      *msg = dupstr(m ? m : "liveslots failed");
    lua_pop(V, 1);
  }
  STACK_CHECK_END(V, 0);
  return st;
}

/* [-0, +0] Hands an entry the kernel writes about a vat to the host's
 * logger, as the vat's own entries are (a smallcaps record). */
static void log_for_vat(lkernel_t *lk, lvat_t *rec, const char *level, const char *message) {
  lua_State *L = lk->L;
  if (!L || lk->logger_ref == LUA_NOREF)
    return;
  STACK_CHECK_BEGIN(L);
  lk->host_ran = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->logger_ref);
  lua_pushstring(L, rec->id);
  lua_pushstring(L, level);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "#{\"message\":\"");
  add_json_string(&b, message, strlen(message));
  luaL_addstring(&b, "\",\"tags\":[\"kernel\"]}");
  luaL_pushresult(&b);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK)
    lua_pop(L, 1);
  STACK_CHECK_END(L, 0);
}

/*
 * [-0, +0] A delivery whose decoding exhausted the vat's memory or meter:
 * the vat is not blamed for what its sender made it decode. Its mark is
 * cleared, and instead of the message its result is rejected (by the
 * kernel, in the vat's name, since the vat now decides it); instead of a
 * notify the vat is told that each promise was rejected. What the vat's
 * runtime did while decoding (imports, subscriptions) stays, so its tables
 * and the kernel's agree. Returns 0, or OCAP_EFATAL with *fatal and *why
 * set when even that fails.
 */
static int refuse_decode(lkernel_t *lk, lvat_t *rec, const ocap_delivery_t *d, int st, int *fatal,
                         char **why) {
  char msg[256], body[400];
  const char *what = d->type == OCAP_DELIVER_MESSAGE ? "message" : "promise resolution";
  if (st == OCAP_VAT_MEMORY)
    snprintf(msg, sizeof msg,
             "[KERNEL:DELIVERY_REFUSED] vat %s refused a %s it has no memory to decode "
             "(memoryLimit %lld bytes)",
             rec->id, what, (long long)rec->budget.memory);
  else
    snprintf(msg, sizeof msg,
             "[KERNEL:DELIVERY_REFUSED] vat %s refused a %s too costly to decode "
             "(meter %lld instructions)",
             rec->id, what, (long long)rec->budget.instructions);
  int blen = snprintf(body, sizeof body, "#{\"#error\":\"%s\",\"name\":\"Error\"}", msg);
  ocap_vat_forgive(rec->vat);
  log_for_vat(lk, rec, "warn", msg + strlen("[KERNEL:DELIVERY_REFUSED] "));
  ocap_capdata_t err = {body, (size_t)blen, NULL, 0};
  if (d->type == OCAP_DELIVER_MESSAGE) {
    if (!d->result)
      return 0;
    ocap_resolution_t r = {d->result, 1, err};
    if (ocap_kernel_resolve(lk->k, rec->id, &r, 1) == 0)
      return 0;
    *fatal = OCAP_FATAL_INTERNAL;
    *why = dupstr(ocap_kernel_errmsg(lk->k));
    return OCAP_EFATAL;
  }
  ocap_resolution_t *rs = malloc(d->nresolutions * sizeof *rs);
  if (!rs) {
    *fatal = OCAP_FATAL_INTERNAL;
    *why = dupstr("out of memory");
    return OCAP_EFATAL;
  }
  for (size_t i = 0; i < d->nresolutions; i++) {
    rs[i].kpid = d->resolutions[i].kpid;
    rs[i].rejected = 1;
    rs[i].data = err;
  }
  ocap_delivery_t told = *d;
  told.resolutions = rs;
  st = run_delivery(lk, rec, &told, why);
  free(rs);
  if (st == OCAP_VAT_OK && !rec->fatal)
    return 0;
  free(*why);
  *why = NULL;
  return st == OCAP_VAT_OK ? 0 : OCAP_EFATAL; /* finished by deliver_vat */
}

/*
 * [-0, +0] Delivers d to the live vat rec through the one protected path;
 * it never raises. Returns OCAP_EFATAL with *fatal and *why (malloc'd) set
 * when the crank must be rolled back and the vat terminated, else 0.
 */
static int deliver_vat(lkernel_t *lk, lvat_t *rec, const ocap_delivery_t *d, int *fatal,
                       char **why) {
  char *msg = NULL;
  /* Every delivery but a reap counts towards the next reap, which runs
   * before the run queue's next item. */
  if (d->type == OCAP_DELIVER_BRING_OUT_YOUR_DEAD)
    rec->since_reap = 0;
  else if (d->type != OCAP_DELIVER_STOP_VAT && lk->reap_interval > 0 &&
           ++rec->since_reap >= lk->reap_interval) {
    rec->since_reap = 0;
    ocap_kernel_schedule_reap(lk->k, rec->id);
  }
  int st = run_delivery(lk, rec, d, &msg);
  if ((st == OCAP_VAT_METER || st == OCAP_VAT_MEMORY) && rec->decode_failed && !rec->fatal &&
      d->type != OCAP_DELIVER_TIMER) {
    free(msg);
    msg = NULL;
    int rc = refuse_decode(lk, rec, d, st, fatal, why);
    if (rc == 0 || *fatal)
      return rc;
    st = ocap_vat_fatal(rec->vat) ? ocap_vat_fatal(rec->vat) : OCAP_VAT_ERROR;
  }
  if (rec->fatal && (st == OCAP_VAT_OK || st == OCAP_VAT_ERROR)) {
    /* An illegal syscall or a budget of the delivery: the vat's own error,
     * whether its code caught it or not. */
    *fatal = rec->fatal;
    *why = rec->why;
    rec->why = NULL;
    rec->fatal = 0;
  } else if (st != OCAP_VAT_OK) {
    *fatal = map_status(st);
    *why = dupstr(st == OCAP_VAT_METER || st == OCAP_VAT_MEMORY ? ocap_vat_fatal_reason(rec->vat)
                  : msg                                         ? msg
                                                                : "liveslots failed");
    free(rec->why);
    rec->why = NULL;
    rec->fatal = 0;
  }
  free(msg);
  return *fatal ? OCAP_EFATAL : 0;
}

/*
 * [-0, +0, m] Calls the host's `vatNeeded(vatId)` to (re)start a vat lazily,
 * since vats are only built when a delivery needs them. When it returns or
 * raises an error message, the vat's record keeps it as the reason the vat
 * could not start.
 */
static void ensure_vat(lkernel_t *lk, const char *ep) {
  lua_State *L = lk->L;
  if (!L || lk->vat_needed_ref == LUA_NOREF)
    return;
  STACK_CHECK_BEGIN(L);
  lk->host_ran = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->vat_needed_ref);
  lua_pushstring(L, ep);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_isstring(L, -1)) {
    lvat_t *rec = make_vat_record(lk, ep);
    const char *msg = lua_tostring(L, -1); /* NULL for an error object */
    if (rec) {
      free(rec->why);
      rec->why = msg ? dupstr(msg) : NULL;
    }
  }
  lua_pop(L, 1);
  STACK_CHECK_END(L, 0);
}

/*
 * [-0, +0, m] Delivers d to the kernel's own endpoint, the host's dispatch.
 * A failure there is reported and dropped rather than made fatal, because
 * the kernel endpoint cannot be terminated like a vat.
 */
static int deliver_host(lkernel_t *lk, const ocap_delivery_t *d) {
  lua_State *L = lk->L;
  if (!L || lk->host_dispatch_ref == LUA_NOREF)
    return 0;
  /* The host's heap is reaped like a vat's (deliver_vat): otherwise the
   * presences host code lets go of, and the exports they keep alive in
   * the vats, would pile up until the host asks for a collection. */
  if (d->type == OCAP_DELIVER_BRING_OUT_YOUR_DEAD)
    lk->host_since_reap = 0;
  else if (lk->reap_interval > 0 && ++lk->host_since_reap >= lk->reap_interval) {
    lk->host_since_reap = 0;
    ocap_kernel_schedule_reap(lk->k, "kernel");
  }
  STACK_CHECK_BEGIN(L);
  lk->host_ran = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->host_dispatch_ref);
  int n = push_delivery(L, d);
  if (lua_pcall(L, n, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "ocap: kernel endpoint dispatch failed: %s\n", msg ? msg : "(error object)");
    lua_pop(L, 1);
  }
  STACK_CHECK_END(L, 0);
  return 0;
}

/*
 * [-0, +0, m] The kernel's deliver hook: routes d to the host's endpoint or
 * to a vat, starting the vat first when its state is not live, and refuses
 * it (OCAP_EREFUSED) when the vat cannot be started. The kernel calls it
 * inside K:step, with the stepping thread in lk->L.
 */
static int hook_deliver(void *ud, const char *ep, const ocap_delivery_t *d, int *fatal,
                        char **why) {
  lkernel_t *lk = ud;
  if (strcmp(ep, "kernel") == 0)
    return deliver_host(lk, d);
  lvat_t *rec = find_vat(lk, ep);
  /* A vat that is not running has no heap to collect. */
  if (d->type == OCAP_DELIVER_BRING_OUT_YOUR_DEAD && (!rec || !rec->vat))
    return 0;
  if ((!rec || !rec->vat) && !(rec && rec->why)) {
    ensure_vat(lk, ep); /* not prepared: a notify to a vat not running */
    rec = find_vat(lk, ep);
  }
  if (!rec || !rec->vat) {
    /* A vat that cannot be started keeps its state for the host to decide
     * on: the delivery is refused, never made the vat's fatal fault. */
    *why = dupstr(rec && rec->why ? rec->why : "[KERNEL:VAT_FAILED] the vat could not be started");
    if (rec) {
      free(rec->why);
      rec->why = NULL;
    }
    return OCAP_EREFUSED;
  }
  return deliver_vat(lk, rec, d, fatal, why);
}

/*
 * [-0, +0] The kernel's prepare hook: starts a vat that is not running
 * before a message is routed to it. A failure is kept in the vat's record
 * (rec->why), and the delivery that follows reports it.
 */
static void hook_prepare(void *ud, const char *ep) {
  lkernel_t *lk = ud;
  lvat_t *rec = find_vat(lk, ep);
  if (!rec || !rec->vat)
    ensure_vat(lk, ep);
}

/*
 * [-0, +0, m] The kernel's pipelines hook: the host's `pipelines(kpid)`
 * says whether it takes the messages sent to a promise it decides (the
 * answer of a remote peer, which they follow across the wire). Vats never
 * do (docs/promises.md). An error in the function counts as no.
 */
static int hook_pipelines(void *ud, const char *ep, const char *eref) {
  lkernel_t *lk = ud;
  lua_State *L = lk->L;
  if (!L || lk->host_pipelines_ref == LUA_NOREF || strcmp(ep, "kernel") != 0)
    return 0;
  STACK_CHECK_BEGIN(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->host_pipelines_ref);
  lua_pushstring(L, eref);
  int yes = lua_pcall(L, 1, 1, 0) == LUA_OK && lua_toboolean(L, -1);
  lua_pop(L, 1);
  STACK_CHECK_END(L, 0);
  return yes;
}

/*
 * [-0, +0, m] The kernel's terminated hook: drops the vat's state, then tells
 * the host, whose handler records the reason. An error in the handler is
 * dropped, because the kernel has already forgotten the vat.
 */
static void hook_terminated(void *ud, const char *ep, const char *reason, size_t rlen) {
  lkernel_t *lk = ud;
  lvat_t *rec = find_vat(lk, ep);
  if (rec)
    stop_vat(rec);
  lua_State *L = lk->L;
  if (L && lk->terminated_ref != LUA_NOREF) {
    STACK_CHECK_BEGIN(L);
    lk->host_ran = 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lk->terminated_ref);
    lua_pushstring(L, ep);
    lua_pushlstring(L, reason, rlen);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      lua_pop(L, 1);
    STACK_CHECK_END(L, 0);
  }
}

/* ---- the Kernel userdata ---- */

static void kernel_close(lkernel_t *lk) {
  for (size_t i = 0; i < lk->nvats; i++) {
    if (lk->vats[i]) {
      stop_vat(lk->vats[i]);
      drop_held(lk->vats[i]);
      free(lk->vats[i]);
    }
  }
  free(lk->vats);
  release_runtime(lk->runtime);
  uv_run(&lk->loop, UV_RUN_NOWAIT); /* runs the timers' close callbacks */
  uv_loop_close(&lk->loop);
  free(lk->fired);
  ocap_kernel_free(lk->k);
  ocap_store_close(lk->s);
  free(lk);
}

/* [-0, +0] Releases the host's callbacks, which the registry of L holds. */
static void unref_all(lua_State *L, lkernel_t *lk) {
  luaL_unref(L, LUA_REGISTRYINDEX, lk->host_dispatch_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->vat_needed_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->logger_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->terminated_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->exit_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lk->host_pipelines_ref);
}

/* K:__gc()  [-0, +0, e]
 * It also serves K:close(), so it must be safe to call twice. */
static int k_gc(lua_State *L) {
  lkernel_t **p = luaL_checkudata(L, 1, KERNEL_MT);
  if (*p) {
    unref_all(L, *p);
    kernel_close(*p);
    *p = NULL;
  }
  return 0;
}

/* Creates the parents of path (like mkdir -p on its dirname), so a
 * database can live at a new nested path such as ./.ocap/weather. */
static void make_parents(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n >= sizeof buf)
    return;
  memcpy(buf, path, n + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return;
      *p = '/';
    }
  }
}

/*
 * core.open{ database = dir?, durability = 'none'|'fsync' }
 *   -> K | nil, msg, code  [-0, +(1|3), e]
 * The userdata exists before the kernel, so that its __gc frees whatever
 * part was built if a later step raises.
 */
static int core_open(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "database");
  const char *db = lua_tostring(L, -1);
  lua_getfield(L, 1, "durability");
  const char *dur = luaL_optstring(L, -1, "none");
  int durability = strcmp(dur, "fsync") == 0 ? OCAP_DURABILITY_FSYNC : OCAP_DURABILITY_NONE;
  if (strcmp(dur, "none") != 0 && strcmp(dur, "fsync") != 0)
    return luaL_error(L, "durability must be 'none' or 'fsync', got '%s'", dur);
  lkernel_t **p = lua_newuserdatauv(L, sizeof *p, 0);
  *p = NULL;
  luaL_setmetatable(L, KERNEL_MT);
  lkernel_t *lk = calloc(1, sizeof *lk);
  if (!lk)
    return luaL_error(L, "out of memory");
  lk->host_dispatch_ref = lk->vat_needed_ref = lk->logger_ref = lk->terminated_ref = LUA_NOREF;
  lk->exit_ref = lk->host_pipelines_ref = LUA_NOREF;
  if (uv_loop_init(&lk->loop) != 0) {
    free(lk);
    return luaL_error(L, "cannot create the event loop");
  }
  char *err = NULL;
  if (db)
    make_parents(db);
  int rc =
      db ? ocap_store_open_leveldb(db, durability, &lk->s, &err) : ocap_store_open_memory(&lk->s);
  if (rc) {
    uv_loop_close(&lk->loop);
    free(lk);
    lua_pushnil(L);
    lua_pushstring(L, err ? err : ocap_strerror(rc));
    lua_pushinteger(L, rc);
    free(err);
    return 3;
  }
  ocap_kernel_hooks_t hooks = {.ud = lk,
                               .deliver = hook_deliver,
                               .terminated = hook_terminated,
                               .prepare = hook_prepare,
                               .pipelines = hook_pipelines};
  if (ocap_kernel_new(lk->s, &hooks, &lk->k)) {
    ocap_store_close(lk->s);
    uv_loop_close(&lk->loop);
    free(lk);
    return luaL_error(L, "out of memory");
  }
  *p = lk;
  return 1;
}

/* K:close(): refused during a crank, whose vat or kernel it would free
 * while they run.  [-0, +0, e] */
static int k_close(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->in_step)
    return luaL_error(L, "cannot stop the kernel while a crank is running");
  return k_gc(L);
}

/*
 * [-0, +0, e] Brings the store up to date with the tables the kernel writes
 * later than at each commit (ocap_kernel_sync), before the host reads or
 * writes the store itself or flushes it. A failure raises. Returns 0.
 */
static int sync_tables(lua_State *L, lkernel_t *lk) {
  int rc = ocap_kernel_sync(lk->k);
  if (rc)
    return luaL_error(L, "store write failed: %s", ocap_kernel_errmsg(lk->k));
  return 0;
}

/* K:kvGet(key) -> value | nil  [-0, +1, e] */
static int k_kv_get(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  size_t kl, vl;
  const char *key = luaL_checklstring(L, 2, &kl), *val;
  int rc = sync_tables(L, lk);
  rc = ocap_store_get(lk->s, key, kl, &val, &vl);
  if (rc < 0)
    return luaL_error(L, "store read failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(lk->s));
  if (rc == 1)
    lua_pushlstring(L, val, vl);
  else
    lua_pushnil(L);
  return 1;
}

/* K:kvSet(key, value)  [-0, +0, e] */
static int k_kv_set(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  size_t kl, vl;
  const char *key = luaL_checklstring(L, 2, &kl);
  const char *val = luaL_checklstring(L, 3, &vl);
  int rc = sync_tables(L, lk);
  rc = ocap_store_set(lk->s, key, kl, val, vl);
  if (rc)
    return luaL_error(L, "store write failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(lk->s));
  ocap_kernel_forget(lk->k, key, kl);
  return 0;
}

/* K:kvDelete(key)  [-0, +0, e] */
static int k_kv_delete(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  size_t kl;
  const char *key = luaL_checklstring(L, 2, &kl);
  int rc = sync_tables(L, lk);
  rc = ocap_store_delete(lk->s, key, kl);
  if (rc)
    return luaL_error(L, "store delete failed: %s: %s", ocap_strerror(rc),
                      ocap_store_errmsg(lk->s));
  ocap_kernel_forget(lk->k, key, kl);
  return 0;
}

/* K:kvNext(prefix, after?) -> key | nil  [-0, +1, e]
 * The key is the first under prefix after `after`, or the first under
 * prefix when `after` is absent. */
static int k_kv_next(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  size_t pl, al = 0, kl;
  const char *prefix = luaL_checklstring(L, 2, &pl);
  const char *after = luaL_optlstring(L, 3, NULL, &al);
  const char *key;
  int inclusive = after == NULL;
  if (!after) {
    after = prefix;
    al = pl;
  }
  int rc = sync_tables(L, lk);
  rc = ocap_store_next_key(lk->s, prefix, pl, after, al, inclusive, &key, &kl);
  if (rc < 0)
    return luaL_error(L, "store scan failed: %s: %s", ocap_strerror(rc), ocap_store_errmsg(lk->s));
  if (rc == 1)
    lua_pushlstring(L, key, kl);
  else
    lua_pushnil(L);
  return 1;
}

/* K:kvCount() -> integer  [-0, +1, e] */
static int k_kv_count(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  sync_tables(L, lk);
  size_t n = ocap_store_count(lk->s);
  if (n == (size_t)-1)
    return luaL_error(L, "store count failed: %s", ocap_store_errmsg(lk->s));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* K:commit()  [-0, +0, e]
 * A kernel failure recorded since the last commit means the writes since
 * then may be half done: they are dropped, and the commit raises. */
static int k_commit(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (ocap_kernel_failed(lk->k)) {
    ocap_store_abort(lk->s);
    lua_pushfstring(L, "commit failed: %s", ocap_kernel_errmsg(lk->k));
    ocap_kernel_clear_failure(lk->k);
    return lua_error(L);
  }
  int rc = ocap_store_commit(lk->s);
  if (rc)
    return luaL_error(L, "commit failed: %s", ocap_strerror(rc));
  return 0;
}

/* K:abort()  [-0, +0, e] */
static int k_abort(lua_State *L) {
  ocap_store_abort(checkkernel(L, 1)->s);
  return 0;
}

/* K:flush()  [-0, +0, e] */
static int k_flush(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  sync_tables(L, lk);
  int rc = ocap_store_flush(lk->s);
  if (rc)
    return luaL_error(L, "flush failed: %s", ocap_strerror(rc));
  return 0;
}

/* K:pending() -> integer  [-0, +1, e] */
static int k_pending(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  sync_tables(L, lk); /* what waits in the tables is pending too */
  lua_pushinteger(L, (lua_Integer)ocap_store_pending(lk->s));
  return 1;
}

/* K:clear()  [-0, +0, e] */
static int k_clear(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  int rc = ocap_store_clear(lk->s);
  if (rc)
    return luaL_error(L, "clearing the store failed: %s", ocap_strerror(rc));
  return 0;
}

/* [-0, +0, e] Raises the kernel's last error; it never returns. */
static int raise_kernel(lua_State *L, lkernel_t *lk) {
  return luaL_error(L, "%s", ocap_kernel_errmsg(lk->k));
}

/* K:allocVatId() -> vatId  [-0, +1, e] */
static int k_alloc_vat_id(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  char out[OCAP_REF_MAX];
  if (ocap_kernel_alloc_vat_id(lk->k, out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:allocObject(owner?) -> kref  [-0, +1, e] */
static int k_alloc_object(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  char out[OCAP_REF_MAX];
  if (ocap_kernel_alloc_object(lk->k, luaL_optstring(L, 2, "kernel"), out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:allocPromise(decider?) -> kpid  [-0, +1, e] */
static int k_alloc_promise(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  char out[OCAP_REF_MAX];
  if (ocap_kernel_alloc_promise(lk->k, luaL_optstring(L, 2, "kernel"), out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:export(ep, eref) -> kref  [-0, +1, e]
 * The eref is exported on first sight. */
static int k_export(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  char out[OCAP_REF_MAX];
  if (ocap_kernel_eref_to_kref(lk->k, luaL_checkstring(L, 2), luaL_checkstring(L, 3), out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:import(vatId, kref) -> vref  [-0, +1, e]
 * The vat's vref for an object kref, added to its c-list on first sight:
 * how a reference reaches a vat outside a delivery (its parameters). */
static int k_import(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  const char *kref = luaL_checkstring(L, 3);
  char out[OCAP_REF_MAX];
  if (kref[0] != 'k' || kref[1] != 'o')
    return luaL_error(L, "K:import: '%s' is not an object kref", kref);
  if (ocap_kernel_kref_to_eref(lk->k, ep, kref, out))
    return raise_kernel(L, lk);
  lua_pushstring(L, out);
  return 1;
}

/* K:krefOf(vatId, vref) -> kref | nil  [-0, +1, e]
 * Unlike K:export, it never exports. */
static int k_kref_of(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  const char *eref = luaL_checkstring(L, 3);
  char out[OCAP_REF_MAX];
  int rc = ocap_kernel_kref_of(lk->k, ep, eref, out);
  if (rc < 0) {
    /* Only a read failed: report it here, not at the next crank. */
    lua_pushstring(L, ocap_kernel_errmsg(lk->k));
    ocap_kernel_clear_failure(lk->k);
    return lua_error(L);
  }
  if (rc == 1)
    lua_pushstring(L, out);
  else
    lua_pushnil(L);
  return 1;
}

/* K:dropImports(krefs), K:retireImports, K:retireExports,
 * K:abandonExports  [-0, +0, e]
 * The GC syscalls of the kernel's own endpoint (the host's liveslots),
 * upvalue 1 saying which. A misuse raises: the host cannot be terminated. */
static int k_gc_call(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  int which = (int)lua_tointeger(L, lua_upvalueindex(1));
  const char *small[SMALL_SLOTS];
  size_t n = 0;
  const char **v = read_vrefs(L, 2, &n, small);
  if (!v)
    return luaL_error(L, "%s takes a sequence of kref strings", gc_call_names[which]);
  if (gc_calls[which](lk->k, "kernel", v, n))
    return raise_kernel(L, lk);
  return 0;
}

/* K:pin(kref)  [-0, +0, e] Keeps an object whatever its counts. */
static int k_pin(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (ocap_kernel_pin(lk->k, luaL_checkstring(L, 2)))
    return raise_kernel(L, lk);
  return 0;
}

/* K:setReapInterval(n | false)  [-0, +0, e]
 * Deliveries to a vat between two reaps; false turns reaping off. */
static int k_set_reap_interval(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lk->reap_interval = lua_toboolean(L, 2) ? luaL_checkinteger(L, 2) : 0;
  return 0;
}

/* K:reapAll()  [-0, +0, e] Schedules a reap of every live vat, then of
 * the kernel's endpoint, to run before the run queue's next item. */
static int k_reap_all(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  for (size_t i = 0; i < lk->nvats; i++) {
    lvat_t *rec = lk->vats[i];
    if (rec && rec->vat && ocap_kernel_schedule_reap(lk->k, rec->id))
      return raise_kernel(L, lk);
  }
  if (ocap_kernel_schedule_reap(lk->k, "kernel"))
    return raise_kernel(L, lk);
  return 0;
}

/* [-0, +0, m] Appends vref to the table on top of the stack (ud: L). */
static int push_vref(void *ud, const char *vref) {
  lua_State *L = ud;
  lua_pushstring(L, vref);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

/* K:reachableImports(vatId) -> { vref... }  [-0, +1, e]
 * The imports the kernel counts reachable from the vat, in byte order of
 * their krefs. */
static int k_reachable_imports(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  lua_newtable(L);
  if (ocap_kernel_reachable_imports(lk->k, ep, push_vref, L))
    return raise_kernel(L, lk);
  return 1;
}

/* K:gcWork() -> integer  [-0, +1, e] GC actions and reaps waiting. */
static int k_gc_work(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  long long n = ocap_kernel_gc_work(lk->k);
  if (n < 0)
    return raise_kernel(L, lk);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* K:send(target, body, slots, result?)  [-0, +0, e]
 * It sends from the kernel's own endpoint. */
static int k_send(lua_State *L) {
  const char *small[SMALL_SLOTS];
  lkernel_t *lk = checkkernel(L, 1);
  const char *target = luaL_checkstring(L, 2);
  ocap_capdata_t cd = check_capdata(L, 3, 4, small);
  const char *result = luaL_optstring(L, 5, NULL);
  if (ocap_kernel_send(lk->k, "kernel", target, &cd, result))
    return raise_kernel(L, lk);
  return 0;
}

/* K:subscribe(kpid)  [-0, +0, e] */
static int k_subscribe(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (ocap_kernel_subscribe(lk->k, "kernel", luaL_checkstring(L, 2)))
    return raise_kernel(L, lk);
  return 0;
}

/* K:resolve(kpid, rejected, body, slots)  [-0, +0, e] */
static int k_resolve(lua_State *L) {
  const char *small[SMALL_SLOTS];
  lkernel_t *lk = checkkernel(L, 1);
  ocap_resolution_t r;
  r.kpid = luaL_checkstring(L, 2);
  r.rejected = lua_toboolean(L, 3);
  r.data = check_capdata(L, 4, 5, small);
  if (ocap_kernel_resolve(lk->k, "kernel", &r, 1))
    return raise_kernel(L, lk);
  return 0;
}

/*
 * [-0, +0, m] Runs after a crank and hands the vats that called exitVat to
 * the host's exit handler, which terminates them. It waits for the crank's
 * end because a vat cannot be freed while it runs.
 */
static void finish_exits(lua_State *L, lkernel_t *lk) {
  STACK_CHECK_BEGIN(L);
  for (size_t i = 0; i < lk->nvats; i++) {
    lvat_t *rec = lk->vats[i];
    if (!rec || !rec->exiting)
      continue;
    char *body = rec->exit_body;
    rec->exit_body = NULL;
    int failure = rec->exiting == 2;
    rec->exiting = 0;
    char id[OCAP_REF_MAX];
    snprintf(id, sizeof id, "%s", rec->id);
    /* The host records the completion and terminates the vat. */
    lk->host_ran = 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lk->exit_ref);
    if (lua_isfunction(L, -1)) {
      lua_pushstring(L, id);
      lua_pushboolean(L, failure);
      lua_pushstring(L, body ? body : "#\"#undefined\"");
      if (lua_pcall(L, 3, 0, 0) != LUA_OK)
        lua_pop(L, 1);
    } else {
      lua_pop(L, 1);
    }
    free(body);
  }
  STACK_CHECK_END(L, 0);
}

/* [-0, +0] Delivers the oldest timer firing as a crank of its own, so a
 * timer's work commits or rolls back like a message's. */
static int timer_crank(lkernel_t *lk) {
  firing_t f = lk->fired[lk->headfired++];
  if (lk->headfired == lk->nfired)
    lk->headfired = lk->nfired = 0;
  lvat_t *rec = find_vat(lk, f.vat);
  if (!rec || !rec->vat)
    return 1;
  int rc = ocap_kernel_failed(lk->k);
  if (!rc && (rc = ocap_store_commit(lk->s)) != 0)
    ocap_kernel_note_failure(lk->k, rc, "store commit failed");
  if (rc)
    return ocap_kernel_abort_crank(lk->k, rc);
  char id[32];
  snprintf(id, sizeof id, "%lld", f.id);
  ocap_delivery_t d = {0};
  d.type = OCAP_DELIVER_TIMER;
  d.target = id;
  int fatal = 0;
  char *why = NULL;
  rc = deliver_vat(lk, rec, &d, &fatal, &why);
  if (rc == OCAP_EFATAL && !ocap_kernel_failed(lk->k)) {
    ocap_store_abort(lk->s);
    rc = ocap_kernel_crash(lk->k, f.vat, fatal, why, NULL);
  }
  free(why);
  if (!rc && !ocap_kernel_failed(lk->k) && (rc = ocap_store_commit(lk->s)) != 0)
    ocap_kernel_note_failure(lk->k, rc, "store commit failed");
  if (rc || ocap_kernel_failed(lk->k))
    return ocap_kernel_abort_crank(lk->k, rc);
  return 1;
}

/*
 * [-0, +0, m] Runs one crank (the oldest timer firing first, else the head
 * of the run queue) with L as the stepping thread, then hands exits to the
 * host. Returns 1 when a crank ran, 0 when there was nothing to do, or a
 * negative OCAP_E* code when the crank failed and was rolled back.
 */
static int one_crank(lua_State *L, lkernel_t *lk) {
  lk->in_step = 1;
  lua_State *saved = lk->L;
  lk->L = L;
  lk->ran = NULL;
  int rc = lk->nfired ? timer_crank(lk) : ocap_kernel_step(lk->k);
  finish_exits(L, lk);
  lk->L = saved;
  lk->in_step = 0;
  /* A failed crank is rolled back, but the heap of the vat that ran in it
   * is not: that vat is stopped, to restart from the store (as the crank
   * left it) at its next delivery. */
  if (rc < 0 && lk->ran && lk->ran->vat)
    stop_vat(lk->ran);
  lk->ran = NULL;
  return rc;
}

/* K:step() -> ran  [-0, +1, e]
 * ran is false when there was nothing to do. */
static int k_step(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->in_step)
    return luaL_error(L, "kernel:step() called while a crank is running");
  int rc = one_crank(L, lk);
  if (rc < 0)
    return luaL_error(L, "crank failed: %s", ocap_kernel_errmsg(lk->k));
  lua_pushboolean(L, rc > 0);
  return 1;
}

/* K:drive(max, group) -> ran, visible  [-0, +2, e]
 * The host's driver: polls the event loop once without waiting, then runs
 * up to max cranks and stops after the first one in which host Lua code
 * ran (a delivery to the kernel's endpoint, a log entry, an exit, a
 * termination, a vat restart), because only host code can queue a host
 * turn or settle a promise the host awaits; the caller flushes before any
 * of that reaches host code. Cranks the host has not seen are grouped in
 * one store write, forced once group committed cranks are pending. ran counts the
 * cranks run; visible is true when host code ran. The batch is bounded so
 * that timers and IO get their turn between batches. */
static int k_drive(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 64);
  lua_Integer group = luaL_optinteger(L, 3, 512);
  if (lk->in_step)
    return luaL_error(L, "kernel:step() called while a crank is running");
  if (lk->nfired == 0 && uv_loop_alive(&lk->loop))
    uv_run(&lk->loop, UV_RUN_NOWAIT);
  lua_Integer ran = 0;
  int visible = 0;
  while (ran < max) {
    lk->host_ran = 0;
    int rc = one_crank(L, lk);
    if (rc < 0)
      return luaL_error(L, "crank failed: %s", ocap_kernel_errmsg(lk->k));
    if (rc == 0)
      break;
    ran++;
    /* Cranks whose changes wait in the tables written at sync count too:
     * a flush writes them. */
    if ((lua_Integer)(ocap_store_pending(lk->s) + (size_t)ocap_kernel_unsynced(lk->k)) >= group &&
        (sync_tables(L, lk) || (rc = ocap_store_flush(lk->s)) != 0))
      return luaL_error(L, "flush failed: %s", ocap_strerror(rc));
    if (lk->host_ran) {
      visible = 1;
      break;
    }
  }
  lua_pushinteger(L, ran);
  lua_pushboolean(L, visible);
  return 2;
}

/* K:queueLength() -> integer  [-0, +1, e] */
static int k_queue_length(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  long long n = ocap_kernel_queue_length(lk->k);
  if (n < 0)
    return raise_kernel(L, lk);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* K:cranks() -> integer  [-0, +1, e] */
static int k_cranks(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ocap_kernel_cranks(checkkernel(L, 1)->k));
  return 1;
}

/* K:nextId(kind) -> integer  [-0, +1, e]
 * The next id the kernel will give out for kind 'o' (objects), 'p'
 * (promises) or 'v' (vats), as the kernel sees it now: these counters are
 * written to the store only when it commits. */
static int k_next_id(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *kind = luaL_checkstring(L, 2);
  long long n = ocap_kernel_next_id(lk->k, kind[0]);
  if (n < 0) {
    /* Only a read failed (a damaged counter): nothing is half done, so
     * the failure is reported here and not left to fail the next crank. */
    lua_pushstring(L, ocap_kernel_errmsg(lk->k));
    ocap_kernel_clear_failure(lk->k);
    return lua_error(L);
  }
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* K:terminate(vatId, reasonBody)  [-0, +0, e] */
static int k_terminate(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  if (lk->delivering && lk->delivering == find_vat(lk, ep))
    return luaL_error(L, "cannot terminate vat %s while it is running", ep);
  ocap_capdata_t cd = {0};
  cd.body = luaL_checklstring(L, 3, &cd.blen);
  lua_State *saved = lk->L;
  lk->L = L;
  int rc = ocap_kernel_terminate(lk->k, ep, &cd);
  lk->L = saved;
  if (rc)
    return raise_kernel(L, lk);
  return 0;
}

/* K:revoke(kref)  [-0, +0, e] */
/* K:rejectDecided(vatId, reasonBody): rejects what the vat decided.  [-0, +0, e] */
static int k_reject_decided(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *ep = luaL_checkstring(L, 2);
  ocap_capdata_t cd = {0};
  cd.body = luaL_checklstring(L, 3, &cd.blen);
  if (ocap_kernel_reject_decided(lk->k, ep, &cd))
    return raise_kernel(L, lk);
  return 0;
}

static int k_revoke(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (ocap_kernel_revoke(lk->k, luaL_checkstring(L, 2)))
    return raise_kernel(L, lk);
  return 0;
}

/* K:isRevoked(kref) -> boolean  [-0, +1, e] */
static int k_is_revoked(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  int rc = ocap_kernel_is_revoked(lk->k, luaL_checkstring(L, 2));
  if (rc < 0)
    return raise_kernel(L, lk);
  lua_pushboolean(L, rc);
  return 1;
}

/* [-0, +0, e] Replaces *ref by a reference to the function at index 2, or
 * clears it when that argument is nil or absent. */
static int set_ref(lua_State *L, int *ref) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

/* K:setHostDispatch(dispatch?)  [-0, +0, e] */
static int k_set_host_dispatch(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->host_dispatch_ref);
}

/* K:setHostPipelines(pipelines?)  [-0, +0, e] */
static int k_set_host_pipelines(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->host_pipelines_ref);
}

/* K:setVatNeeded(vatNeeded?)  [-0, +0, e] */
static int k_set_vat_needed(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->vat_needed_ref);
}

/* K:setLogger(logger?)  [-0, +0, e] */
static int k_set_logger(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->logger_ref);
}

/* K:setTerminated(terminated?)  [-0, +0, e] */
static int k_set_terminated(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->terminated_ref);
}

/* K:setExitHandler(handler?)  [-0, +0, e] */
static int k_set_exit_handler(lua_State *L) {
  return set_ref(L, &checkkernel(L, 1)->exit_ref);
}

typedef struct dumpbuf {
  char *p;
  size_t len, cap;
} dumpbuf_t;

/* [-0, +0] The lua_Writer of lua_dump; it only appends to the dumpbuf_t. */
static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  dumpbuf_t *b = ud;
  if (b->len + sz > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + sz)
      cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np)
      return 1;
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, sz);
  b->len += sz;
  return 0;
}

/* Drops one reference to rt, and frees it with the last. Safe on NULL. */
static void release_runtime(runtime_t *rt) {
  if (!rt || --rt->refs > 0)
    return;
  for (size_t i = 0; i < rt->n; i++) {
    free((char *)rt->mods[i].name);
    free((char *)rt->mods[i].code);
  }
  free(rt);
}

/* K:setRuntime{ {name, source}, ... }  [-0, +0, e]
 * The kernel's own modules are compiled once here and read as trusted
 * bytecode by every vat, so that no vat pays for parsing them or holds a
 * copy of them. The chunks are stripped: their line numbers and local
 * names would cost each vat that loads them about a third more memory. */
static int k_set_runtime(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t n = (size_t)lua_rawlen(L, 2);
  release_runtime(lk->runtime);
  lk->runtime = calloc(1, sizeof *lk->runtime + n * sizeof lk->runtime->mods[0]);
  if (!lk->runtime)
    return luaL_error(L, "out of memory");
  lk->runtime->refs = 1;
  for (size_t i = 0; i < n; i++) {
    if (lua_rawgeti(L, 2, (lua_Integer)i + 1) != LUA_TTABLE)
      return luaL_error(L, "runtime module %d is not a {name, source} table", (int)i + 1);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    const char *name = luaL_checkstring(L, -2);
    size_t sl;
    const char *src = luaL_checklstring(L, -1, &sl);
    char chunk[128];
    snprintf(chunk, sizeof chunk, "=%s", name);
    if (luaL_loadbufferx(L, src, sl, chunk, "t") != LUA_OK)
      return lua_error(L);
    dumpbuf_t db = {0};
    int bad = lua_dump(L, dump_writer, &db, 1);
    ocap_vat_module_t *m = &lk->runtime->mods[i];
    m->name = dupstr(name);
    m->code = db.p;
    m->len = db.len;
    lk->runtime->n = i + 1;
    if (bad || !m->name)
      return luaL_error(L, "out of memory");
    lua_pop(L, 4);
  }
  return 0;
}

/* [-0, +0, e] Sets globals.<lib>.<fn> to the function fn of the library
 * table on top of the stack, a fresh one that stays out of the vat's
 * reach. globals is an absolute index. */
static void endow_lib_fn(lua_State *V, int globals, const char *lib, const char *fn) {
  STACK_CHECK_BEGIN(V);
  lua_getfield(V, -1, fn);
  if (lua_getfield(V, globals, lib) != LUA_TTABLE) {
    lua_pop(V, 1);
    lua_newtable(V);
    lua_pushvalue(V, -1);
    lua_setfield(V, globals, lib);
  }
  lua_insert(V, -2);
  lua_setfield(V, -2, fn);
  lua_pop(V, 1);
  STACK_CHECK_END(V, 0);
}

/* [-0, +0, e] Installs only the endowments named in the space-separated
 * list, since a vat gets no ambient authority. The Lua-made ones come from
 * the table at the absolute index endow. */
static void install_endowments(lua_State *V, lvat_t *rec, const char *list, int endow) {
  STACK_CHECK_BEGIN(V);
  lua_rawgeti(V, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  int globals = lua_gettop(V);
  char name[64];
  for (const char *p = list; *p;) {
    size_t n = strcspn(p, " ");
    if (n && n < sizeof name) {
      memcpy(name, p, n);
      name[n] = '\0';
      if (strcmp(name, "os.time") == 0 || strcmp(name, "os.clock") == 0 ||
          strcmp(name, "os.date") == 0) {
        /* The sandbox keeps no os library: open one for the function. */
        lua_pushcfunction(V, luaopen_os);
        lua_call(V, 0, 1);
        endow_lib_fn(V, globals, "os", name + 3);
        lua_pop(V, 1);
      } else if (strcmp(name, "math.random") == 0) {
        /* The sandbox's math has no generator: open a math library for
         * one, seeded from the vat's id so that each vat has its own. */
        lua_pushcfunction(V, luaopen_math);
        lua_call(V, 0, 1);
        lua_getfield(V, -1, "randomseed");
        unsigned long h = 5381;
        for (const char *c = rec->id; *c; c++)
          h = h * 33 + (unsigned char)*c;
        lua_pushinteger(V, (lua_Integer)h);
        lua_call(V, 1, 0);
        endow_lib_fn(V, globals, "math", "random");
        lua_pop(V, 1);
      } else if (lua_getfield(V, endow, name) != LUA_TNIL) {
        lua_setfield(V, globals, name);
      } else {
        lua_pop(V, 1);
      }
    }
    p += n;
    while (*p == ' ')
      p++;
  }
  lua_pop(V, 1);
  STACK_CHECK_END(V, 0);
}

/* [-0, +0] Whether the space-separated list holds the word name. */
static int list_has(const char *list, const char *name) {
  size_t nl = strlen(name);
  for (const char *p = list; *p;) {
    size_t n = strcspn(p, " ");
    if (n == nl && memcmp(p, name, n) == 0)
      return 1;
    p += n;
    while (*p == ' ')
      p++;
  }
  return 0;
}

/*
 * [-0, +0] Whether a bundle may hold a module of this name. `ocap`,
 * `ocap.<anything>` and `cjson` are the runtime's: a bundle module of such
 * a name would be loaded in place of the runtime and be handed the raw
 * syscall table, or be taken by vat code for the runtime.
 */
static int reserved_module(const char *name) {
  return strcmp(name, "ocap") == 0 || strncmp(name, "ocap.", 5) == 0 || strcmp(name, "cjson") == 0;
}

/*
 * [-0, +0, e] The first reserved name among main and the string keys of
 * the modules table at idx, or NULL. A key stays valid while its table
 * is on the stack.
 */
static const char *find_reserved_module(lua_State *L, int idx, const char *main) {
  if (main && reserved_module(main))
    return main;
  if (!lua_istable(L, idx))
    return NULL;
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING && reserved_module(lua_tostring(L, -1))) {
      const char *name = lua_tostring(L, -1);
      lua_pop(L, 1);
      return name;
    }
  }
  return NULL;
}

/*
 * What k_create_vat hands to the vat's trampolines. The strings belong to
 * the host's stack, which keeps them alive while the vat runs; they are
 * pushed into the vat only inside its protected path, because a vat whose
 * memory budget is exhausted would otherwise raise with no handler.
 */
typedef struct boot_args {
  lvat_t *rec;
  const char *info, *globals, *main, *params;
  int upgrade; /* the vat starts a new incarnation (createVat's `upgrade`) */
} boot_args_t;

/*
 * tramp(args)  [-1, +0, e]
 * Runs in the vat: boots liveslots, keeps its dispatch, and installs the
 * endowments.
 */
static int vat_boot_tramp(lua_State *V) {
  const boot_args_t *a = lua_touserdata(V, 1);
  lvat_t *rec = a->rec;
  lua_settop(V, 0);
  ocap_open_json(V);
  ocap_vat_set_loaded(ocap_vat_from_state(V), "cjson");
  luaopen_ocap_smallcaps(V);
  ocap_vat_set_loaded(ocap_vat_from_state(V), "ocap.smallcaps");
  lua_getglobal(V, "require");
  lua_pushliteral(V, "ocap.vatboot");
  lua_call(V, 1, 1);
  lua_getfield(V, -1, "boot");
  /* The syscall table goes to the runtime's boot only, which keeps it in
   * closures: no table or function vat code can reach leads to it. */
  luaL_newlibtable(V, syscalls);
  lua_pushlightuserdata(V, rec);
  luaL_setfuncs(V, syscalls, 1);
  for (int i = 0; i < 4; i++) {
    lua_pushlightuserdata(V, rec);
    lua_pushinteger(V, i);
    lua_pushcclosure(V, sys_gc, 2);
    lua_setfield(V, -2, gc_call_names[i]);
  }
  if (list_has(a->globals, "setTimeout") || list_has(a->globals, "setInterval")) {
    lua_pushlightuserdata(V, rec);
    luaL_setfuncs(V, timer_syscalls, 1);
  }
  lua_pushstring(V, a->info);
  /* The vat's globals, which the runtime's own differ from (vat.c). */
  lua_rawgeti(V, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_call(V, 3, 3); /* It returns dispatch, ocap and the endowments. */
  install_endowments(V, rec, a->globals, lua_gettop(V));
  lua_pop(V, 1);
  ocap_vat_set_loaded(ocap_vat_from_state(V), "ocap");
  /* The boot code has run for good: forgetting the module lets the vat
   * collect it, since only the closures it made are still needed. */
  lua_pushnil(V);
  ocap_vat_set_loaded(ocap_vat_from_state(V), "ocap.vatboot");
  rec->dispatch_ref = luaL_ref(V, LUA_REGISTRYINDEX);
  return 0;
}

/*
 * tramp(args) -> ok, err  [-1, +2, e]
 * Runs in the vat: dispatch('startVat', main, parameters, upgrade), whose
 * results say whether buildRootObject succeeded (and, for an upgrade,
 * whether it prepared again every durable kind).
 */
static int vat_start_tramp(lua_State *V) {
  const boot_args_t *a = lua_touserdata(V, 1);
  lua_rawgeti(V, LUA_REGISTRYINDEX, a->rec->dispatch_ref);
  lua_pushliteral(V, "startVat");
  lua_pushstring(V, a->main);
  lua_pushstring(V, a->params);
  lua_pushboolean(V, a->upgrade);
  lua_call(V, 4, 2);
  return 2;
}

/* The largest budgets createVat accepts; lua/ocap/config.lua refuses
 * larger ones with a message naming the field. */
#define OCAP_LIMIT_MEMORY_MAX ((lua_Integer)1 << 40)
#define OCAP_LIMIT_INSTRUCTIONS_MAX ((lua_Integer)1000000000000000)

/*
 * [-0, +0, e] Reads the optional integer field `name` of the table at idx,
 * 0 when absent. A value that is not an integer from 0 to max raises, so
 * that NaN, infinities, fractions or huge floats never reach a C cast.
 */
static lua_Integer opt_limit(lua_State *L, int idx, const char *name, lua_Integer max) {
  lua_getfield(L, idx, name);
  lua_Integer n = 0;
  if (!lua_isnil(L, -1)) {
    int ok;
    n = lua_tointegerx(L, -1, &ok);
    if (!ok || n < 0 || n > max)
      luaL_error(L, "createVat: %s must be an integer from 0 to %I", name, (LUAI_UACINT)max);
  }
  lua_pop(L, 1);
  return n;
}

/* [-0, +0, e] Sets *out to the optional integer field `name` of the table
 * at idx, when present; config.lua has checked its range. */
static void opt_budget(lua_State *L, int idx, const char *name, lua_Integer *out) {
  lua_Integer n = opt_limit(L, idx, name, (lua_Integer)1 << 40);
  lua_getfield(L, idx, name);
  if (!lua_isnil(L, -1))
    *out = n;
  lua_pop(L, 1);
}

/*
 * K:createVat(vatId, { info = json, main = name, modules = { name = src },
 *   parameters = body, globals = names, memory = n, instructions = n,
 *   meterMode = 'time' | 'instructions',
 *   maxMessageBytes = n, maxMessageSlots = n, maxCrankBytes = n, maxQueuedBytes = n,
 *   maxLogBytes = n, maxTimers = n, upgrade = bool })
 *   -> true | nil, msg, code?  [-0, +(1|2|3), e]
 * Builds the vat's state, boots liveslots and runs startVat (which calls
 * buildRootObject; with `upgrade`, a new incarnation's, which must prepare
 * every durable kind again). The store writes stay in the crank buffer. Every option
 * is checked before the state exists, so a bad option cannot leave a vat
 * half built.
 */
static int k_create_vat(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *id = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  lvat_t *rec = make_vat_record(lk, id);
  if (!rec)
    return luaL_error(L, "invalid vat id '%s'", id);
  if (rec->vat)
    return luaL_error(L, "vat %s is already running", id);
  ocap_vat_limits_t lim = {0, 0, OCAP_VAT_METER_TIME};
  lim.memory = (size_t)opt_limit(L, 3, "memory", OCAP_LIMIT_MEMORY_MAX);
  lim.instructions = (long long)opt_limit(L, 3, "instructions", OCAP_LIMIT_INSTRUCTIONS_MAX);
  lua_getfield(L, 3, "meterMode");
  if (!lua_isnil(L, -1)) {
    const char *mode = luaL_checkstring(L, -1);
    if (strcmp(mode, "instructions") == 0)
      lim.meter_mode = OCAP_VAT_METER_INSTRUCTIONS;
    else if (strcmp(mode, "time") != 0)
      return luaL_error(L, "invalid meter mode '%s'", mode);
  }
  lua_pop(L, 1);
  vbudget_t budget = default_budget();
  if (lim.memory)
    budget.memory = (lua_Integer)lim.memory;
  if (lim.instructions)
    budget.instructions = lim.instructions;
  opt_budget(L, 3, "maxMessageBytes", &budget.message_bytes);
  opt_budget(L, 3, "maxMessageSlots", &budget.message_slots);
  opt_budget(L, 3, "maxCrankBytes", &budget.crank_bytes);
  opt_budget(L, 3, "maxQueuedBytes", &budget.queued_bytes);
  opt_budget(L, 3, "maxLogBytes", &budget.log_bytes);
  opt_budget(L, 3, "maxTimers", &budget.timers);
  rec->budget = budget;
  rec->sent = rec->logged = 0;
  /* These four strings stay on the stack until the function returns. */
  boot_args_t args = {rec, NULL, NULL, NULL, NULL, 0};
  lua_getfield(L, 3, "upgrade");
  args.upgrade = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 3, "info");
  args.info = luaL_optstring(L, -1, "{}");
  lua_getfield(L, 3, "main");
  args.main = luaL_checkstring(L, -1);
  lua_getfield(L, 3, "parameters");
  args.params = luaL_optstring(L, -1, "#{}");
  lua_getfield(L, 3, "globals");
  args.globals = luaL_optstring(L, -1, "");
  lua_getfield(L, 3, "modules");
  const char *shadow = find_reserved_module(L, -1, args.main);
  if (shadow) {
    lua_pushnil(L);
    lua_pushfstring(L,
                    "bundle module \"%s\" would shadow ocap's runtime (a bundle cannot contain "
                    "ocap, ocap.* or cjson)",
                    shadow);
    return 2;
  }
  lua_pop(L, 1);
  if (ocap_vat_new(&lim, &rec->vat))
    return luaL_error(L, "out of memory creating vat %s", id);
  /* Deliveries make many short-lived tables: the generational collector
   * handles that pattern with less work than the incremental one. */
  lua_gc(ocap_vat_state(rec->vat), LUA_GCGEN, 0, 0);
  lua_getfield(L, 3, "modules");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      /* lua_tostring would turn a number key into a string in place and
       * confuse lua_next, so only string names count. */
      size_t sl;
      const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      const char *src = lua_tolstring(L, -1, &sl);
      if (name && src)
        ocap_vat_preload(rec->vat, name, src, sl, 0);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  /* The vat's require looks in the runtime first, so that no bundle module
   * can stand in for it even if the check above missed one. */
  if (lk->runtime) {
    ocap_vat_set_runtime(rec->vat, lk->runtime->mods, lk->runtime->n);
    rec->runtime = lk->runtime;
    rec->runtime->refs++;
  }
  lua_State *saved = lk->L;
  lk->L = L;
  lua_State *V = ocap_vat_state(rec->vat);
  lua_pushcfunction(V, vat_boot_tramp);
  lua_pushlightuserdata(V, &args);
  int st = ocap_vat_pcall(rec->vat, 1, 0);
  if (st == OCAP_VAT_OK) {
    lua_pushcfunction(V, vat_start_tramp);
    lua_pushlightuserdata(V, &args);
    st = ocap_vat_pcall(rec->vat, 1, 2);
    if (st == OCAP_VAT_OK && !lua_toboolean(V, -2) && !rec->fatal) {
      lua_pushnil(L);
      lua_pushstring(L, lua_tostring(V, -1));
      lua_pop(V, 2);
      stop_vat(rec);
      lk->L = saved;
      return 2;
    }
    if (st == OCAP_VAT_OK) {
      lua_pop(V, 2);
      /* What booting dropped (the runtime's main chunks, buildRootObject's
       * garbage) would otherwise grow old and stay until a major
       * collection; a full one now costs about 15 us, a launch 1.5 ms. */
      lua_gc(V, LUA_GCCOLLECT, 0);
    }
  }
  lk->L = saved;
  if (st != OCAP_VAT_OK || rec->fatal) {
    const char *msg = st == OCAP_VAT_METER || st == OCAP_VAT_MEMORY
                          ? ocap_vat_fatal_reason(rec->vat)
                      : rec->fatal ? rec->why
                                   : lua_tostring(V, -1);
    lua_pushnil(L);
    lua_pushstring(L, msg ? msg : "vat failed to start");
    lua_pushstring(L, st == OCAP_VAT_METER             ? "METER_EXHAUSTED"
                      : st == OCAP_VAT_MEMORY          ? "MEMORY_EXHAUSTED"
                      : rec->fatal == OCAP_FATAL_QUOTA ? "QUOTA_EXCEEDED"
                      : rec->fatal                     ? "ILLEGAL_SYSCALL"
                                                       : "INTERNAL_ERROR");
    stop_vat(rec);
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* K:stopVat(vatId)  [-0, +0, e]
 * It drops the vat's Lua state but not its tables, so the vat can be
 * restarted from the store. */
static int k_stop_vat(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lvat_t *rec = find_vat(lk, luaL_checkstring(L, 2));
  if (rec && rec == lk->delivering)
    return luaL_error(L, "cannot stop vat %s while it is running", rec->id);
  if (rec)
    stop_vat(rec);
  return 0;
}

/* K:deliverStop(vatId) -> true | false, reason  [-0, +(1|2), e]
 * Delivers stopVat to the vat's live heap, which an upgrade is about to
 * replace: its runtime abandons the exports only that heap held and drops
 * the imports only it held (docs/gc.md). What that does is written with
 * the upgrade, and undone with it when the upgrade fails. true when it ran
 * or there was no live heap; false and the reason when it failed (the
 * heap is then not fit to keep). */
static int k_deliver_stop(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *id = luaL_checkstring(L, 2);
  lvat_t *rec = find_vat(lk, id);
  ocap_delivery_t d;
  int fatal = 0;
  char *why = NULL;
  if (rec && rec == lk->delivering)
    return luaL_error(L, "cannot stop vat %s while it is running", id);
  if (!rec || !rec->vat) {
    lua_pushboolean(L, 1);
    return 1;
  }
  memset(&d, 0, sizeof d);
  d.type = OCAP_DELIVER_STOP_VAT;
  if (deliver_vat(lk, rec, &d, &fatal, &why) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, why ? why : "stopVat failed");
  free(why);
  return 2;
}

/* K:holdVat(vatId) -> held  [-0, +1, e]
 * Sets the vat's live state aside, so that createVat can start a new
 * incarnation while the old one is kept for K:releaseHeld. held is false
 * when the vat had no live state (nothing to keep). */
static int k_hold_vat(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *id = luaL_checkstring(L, 2);
  lvat_t *rec = find_vat(lk, id);
  if (rec && rec == lk->delivering)
    return luaL_error(L, "cannot hold vat %s while it is running", id);
  if (rec && rec->held.vat)
    return luaL_error(L, "vat %s already holds a previous incarnation", id);
  int held = rec && rec->vat;
  if (held)
    swap_held(rec);
  lua_pushboolean(L, held);
  return 1;
}

/* K:releaseHeld(vatId, restore)  [-0, +0, e]
 * Ends an upgrade. With restore, the state set aside by K:holdVat comes
 * back in place of the new one, which is stopped (a vat that held nothing
 * is left not live, to restart from the store); without, the held state
 * is freed and the new one stays. */
static int k_release_held(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  const char *id = luaL_checkstring(L, 2);
  int restore = lua_toboolean(L, 3);
  lvat_t *rec = find_vat(lk, id);
  if (rec && rec == lk->delivering)
    return luaL_error(L, "cannot release vat %s while it is running", id);
  if (!rec)
    return 0;
  if (restore) {
    stop_vat(rec);
    if (rec->held.vat)
      swap_held(rec);
  } else {
    drop_held(rec);
  }
  return 0;
}

/* K:vatLive(vatId) -> boolean  [-0, +1, e] */
static int k_vat_live(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lvat_t *rec = find_vat(lk, luaL_checkstring(L, 2));
  lua_pushboolean(L, rec && rec->vat);
  return 1;
}

/* K:vatMemory(vatId) -> bytes | nothing  [-0, +(0|1), e] */
static int k_vat_memory(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lvat_t *rec = find_vat(lk, luaL_checkstring(L, 2));
  if (!rec || !rec->vat)
    return 0;
  lua_pushinteger(L, (lua_Integer)ocap_vat_memory(rec->vat));
  return 1;
}

/* K:loopAlive() -> boolean  [-0, +1, e]
 * It is true while timers or other handles are pending. */
static int k_loop_alive(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lua_pushboolean(L, lk->nfired > 0 || uv_loop_alive(&lk->loop));
  return 1;
}

/* K:runLoop(wait) -> fired  [-0, +1, e]
 * It runs ready libuv callbacks and, when wait is true, waits for one. */
static int k_run_loop(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  if (lk->nfired == 0)
    uv_run(&lk->loop, lua_toboolean(L, 2) ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  lua_pushboolean(L, lk->nfired > 0);
  return 1;
}

/* K:loopBackend() -> fd, timeout  [-0, +2]
 * The descriptor that becomes readable when the kernel's loop has IO or
 * timers ready, and the milliseconds until its next timer (-1: none), so
 * that a host loop can wake the kernel instead of polling it (ocap.h's
 * ocap_host_attach_loop). */
static int k_loop_backend(lua_State *L) {
  lkernel_t *lk = checkkernel(L, 1);
  lua_pushinteger(L, uv_backend_fd(&lk->loop));
  lua_pushinteger(L, lk->nfired > 0 ? 0 : uv_backend_timeout(&lk->loop));
  return 2;
}

static const luaL_Reg kernel_methods[] = {
    {"close", k_close},
    {"kvGet", k_kv_get},
    {"kvSet", k_kv_set},
    {"kvDelete", k_kv_delete},
    {"kvNext", k_kv_next},
    {"kvCount", k_kv_count},
    {"commit", k_commit},
    {"abort", k_abort},
    {"flush", k_flush},
    {"pending", k_pending},
    {"clear", k_clear},
    {"allocVatId", k_alloc_vat_id},
    {"allocObject", k_alloc_object},
    {"allocPromise", k_alloc_promise},
    {"krefOf", k_kref_of},
    {"import", k_import},
    {"export", k_export},
    {"send", k_send},
    {"subscribe", k_subscribe},
    {"resolve", k_resolve},
    {"step", k_step},
    {"drive", k_drive},
    {"queueLength", k_queue_length},
    {"cranks", k_cranks},
    {"nextId", k_next_id},
    {"terminate", k_terminate},
    {"rejectDecided", k_reject_decided},
    {"revoke", k_revoke},
    {"isRevoked", k_is_revoked},
    {"setHostDispatch", k_set_host_dispatch},
    {"setHostPipelines", k_set_host_pipelines},
    {"setVatNeeded", k_set_vat_needed},
    {"setLogger", k_set_logger},
    {"setTerminated", k_set_terminated},
    {"setExitHandler", k_set_exit_handler},
    {"setRuntime", k_set_runtime},
    {"createVat", k_create_vat},
    {"stopVat", k_stop_vat},
    {"deliverStop", k_deliver_stop},
    {"holdVat", k_hold_vat},
    {"releaseHeld", k_release_held},
    {"vatLive", k_vat_live},
    {"vatMemory", k_vat_memory},
    {"loopAlive", k_loop_alive},
    {"loopBackend", k_loop_backend},
    {"runLoop", k_run_loop},
    {"pin", k_pin},
    {"setReapInterval", k_set_reap_interval},
    {"reapAll", k_reap_all},
    {"gcWork", k_gc_work},
    {"reachableImports", k_reachable_imports},
    {NULL, NULL},
};

/* The libuv loop of the kernel at idx, for the daemon's control channel
 * (lrpc.c), which serves on it. [-0, +0, e] */
uv_loop_t *lkernel_loop(lua_State *L, int idx) {
  return &checkkernel(L, idx)->loop;
}

static const luaL_Reg core_functions[] = {
    {"open", core_open},
    {NULL, NULL},
};

/* require 'ocap.core' -> { open = f }  [-0, +1, e] */
int luaopen_ocap_core(lua_State *L) {
  if (luaL_newmetatable(L, KERNEL_MT)) {
    luaL_newlib(L, kernel_methods);
    for (int i = 0; i < 4; i++) {
      lua_pushinteger(L, i);
      lua_pushcclosure(L, k_gc_call, 1);
      lua_setfield(L, -2, gc_call_names[i]);
    }
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, k_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, core_functions);
  lrpc_open(L);
  lua_setfield(L, -2, "rpc");
  lnet_open(L);
  lua_setfield(L, -2, "net");
  lcrypto_open(L);
  lua_setfield(L, -2, "crypto");
  ltls_open(L);
  lua_setfield(L, -2, "tls");
  lio_open(L);
  lua_setfield(L, -2, "io");
  return 1;
}
