/*
 * lpromise.c -- the core of ocap.promise in C; see lpromise.h.
 *
 * A record is a full userdata, the slots promise.lua documents: one
 * allocation, which a table (its header, then its array part) takes two
 * for. Its bytes (prec_t) hold the state, the flags and the kind of its
 * first reaction, read and written with no API call; its NSLOTS user
 * values hold the value and the reactions. The queue
 * is a ring of four slots a turn (a job kind and its three arguments) in
 * a Lua table whose array part is sized when it is made, so writing a
 * turn never allocates: making room is the only step that can raise, and
 * it comes before anything is written.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lpromise.h"
#include "vat.h"

/* Built alone as a module for a host state (CMakeLists.txt), the core is
 * never in a vat, so it has no meter to charge. */
#ifdef OCAP_PROMISE_STANDALONE
#define ocap_vat_charge(L, cost) ((void)(L), (void)(cost))
#define ocap_vat_state_fatal(L) ((void)(L), 0)
#endif

/* What drain charges the vat for each turn it runs, in instructions:
 * about what the Lua loop it replaces executed. */
#define TURN_COST 16

enum { PENDING = 0, FULFILLED = 1, REJECTED = 2 };

/* The slots of a promise record (promise.lua). */
enum {
  S = 1,  /* state */
  V = 2,  /* value or reason */
  H = 3,  /* handled */
  LK = 4, /* already resolved */
  RA = 5, /* the first reaction, three slots */
  RB = 6,
  RC = 7,
  RX = 8, /* further reactions: a flat array of triples */
  NSLOTS = 8,
  /* Beyond the slots, which vat code cannot write: */
  OWNER = 9, /* the table that tracks the promise (track), or nil */
  KEY = 10,  /* its key there */
  NUV = 10
};

/* The jobs a turn runs, stored as integers in the ring. */
enum { J_FULFILLED = 1, J_REJECTED, J_SETTLE, J_CALL, J_RESUME, J_ADOPT };

/* The user values of the state userdata. */
enum {
  UV_RING = 1,       /* the ring table */
  UV_UNHANDLED,      /* rejected promises with no handler yet, in order */
  UV_HANDLER,        /* the unhandled rejection handler, or nil */
  UV_MAKE_ERROR,     /* makeError(message, name), from promise.lua */
  UV_FIRST,          /* called before the first promise is made */
  UV_COCREATE,       /* the state's coroutine.create (a vat's is metered) */
  UV_RESUME,         /* resumeJob(co), the turn of an await */
  UV_TRACKED,        /* co -> the promise of its task's result, while it awaits */
  UV_POOL,           /* idle workers of call (pool 0) */
  UV_CHECKED_POOL,   /* idle workers of xcall (pool 1) */
  UV_POOL_W,         /* the C mirror of pool 0's table (pool_t.w) */
  UV_CHECKED_W,      /* and of pool 1's */
  UV_MSGH,           /* the message handler xcall last wrapped (task_msgh) */
  UV_DRIVER,         /* the main driver, or nil for the default */
  UV_WORKER,         /* the body of call's workers */
  UV_CHECKED_WORKER, /* the body of xcall's workers */
  UV_DRAIN,          /* drain, for the default main driver */
  UV_COUNT = UV_DRAIN
};

/* Reaction markers: a `next` reaction stores its derived promise in the
 * first slot, the others one of these addresses as a light userdata. Only
 * their addresses matter; they are never written. */
static const char ADOPT = 'a';  /* (ADOPT, target): settle target like this one */
static const char SETTLE = 's'; /* (SETTLE, fn): call fn(ok, value) */
static const char AWAIT = 'w';  /* (AWAIT, co): resume co */

/* What workers are resumed with and yield, as light userdata: vat code
 * can compare them but never make one. */
static const char POOL_KEY = 'p';    /* hands a worker of call a task */
static const char CHECKED_KEY = 'c'; /* hands a worker of xcall a task */
static const char DONE = 'd';        /* yielded by a worker whose task succeeded */
static const char FAILED = 'f';      /* yielded by a worker whose task failed */
static const char STRAY = 'x';       /* yielded by an idle worker resumed by someone else */
static const char AWAITING = 'y';    /* yielded by await */
static const char LEG_KEY = 'e'; /* hands a worker of xcall a delivery (ocap_promise_push_leg) */

/* Idle workers kept for reuse, per pool. */
#define POOL_MAX 64

static const char IDLE_MESSAGE[] = "promise can never settle: kernel is idle";
static const char NOT_OCAP_MESSAGE[] = "await: not inside an ocap coroutine (use ocap.spawn)";

#define STATE lua_upvalueindex(1)
#define PROMISE_MT lua_upvalueindex(2)

#define RING_TURNS 4

/*
 * A pool of idle workers: a Lua table (UV_POOL or UV_CHECKED_POOL) holds
 * them for the collector, and w mirrors it in C, so that taking a worker
 * and putting it back where it was taken from touch no table. Taking one
 * leaves its slot as it was: slots n to hi - 1 may still hold workers
 * taken since (running ones, or ones that ended), never one that awaits,
 * since a worker that starts to await has them cleared (pool_forget).
 */
typedef struct pool {
  lua_State **w; /* w[i] is what slot i + 1 of the table holds, for i < hi */
  int n;         /* idle workers: w[0] to w[n - 1] */
  int hi;        /* slots that may be filled */
  int cap;       /* entries w has room for */
} pool_t;

/* The queue's state; its Lua values are the userdata's user values. */
typedef struct pstate {
  lua_Integer head, tail; /* ring slots of the next turn to run and to fill */
  lua_Integer count;      /* turns queued */
  lua_Integer cap;        /* turns the ring holds */
  lua_Integer unhandled;  /* entries in the unhandled list */
  pool_t pool[2];         /* idle workers of call (0) and xcall (1) */
  const void *msgh_of;    /* the handler UV_MSGH wraps (its address), or NULL */
  int registered;         /* UV_FIRST was called */
} pstate_t;

static const char HINT[] = "this is a promise; did you forget :await()?";

static pstate_t *state_of(lua_State *L) {
  return lua_touserdata(L, STATE);
}

/* [-0, +0] Whether the value at idx is a userdata with this module's
 * metatable. */
static int is_promise(lua_State *L, int idx) {
  int r;
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
    return 0;
  r = lua_rawequal(L, -1, PROMISE_MT);
  lua_pop(L, 1);
  return r;
}

/* [-0, +0, v] Raises unless the value at idx is a promise: what a reaction
 * names as a promise may have been overwritten by vat code. */
static void check_record(lua_State *L, int idx) {
  if (!is_promise(L, idx))
    luaL_error(L, "ocap.promise: a promise's reaction slots were overwritten");
}

/*
 * The bytes of a record: its state, flags and what its first reaction is,
 * read and written with no call into Lua. Slots S, H and LK live here,
 * not in their user values; a reaction's values stay user values.
 */
typedef struct prec {
  lua_Integer state;     /* S: PENDING, FULFILLED or REJECTED */
  unsigned char handled; /* H */
  unsigned char locked;  /* LK */
  unsigned char first;   /* R_NONE, R_SLOTS or R_AWAIT: the first reaction */
  unsigned char more;    /* RX may hold further reactions */
} prec_t;

/* What a record's first reaction is: none, the triple in RA to RC, or an
 * await whose coroutine is in RB (RA and RC unwritten: the await's fast
 * path writes one user value). */
enum { R_NONE = 0, R_SLOTS, R_AWAIT };

/* The bytes of the record at p, which must be a promise. */
#define REC(L, p) ((prec_t *)lua_touserdata(L, p))

/* [-0, +0, v] Raises an argument error unless argument arg is a promise. */
static void check_promise(lua_State *L, int arg) {
  if (!is_promise(L, arg))
    luaL_typeerror(L, arg, "promise");
}

/* [-0, +0] Sets slot k of the record at p to nil. */
static void set_nil(lua_State *L, int p, int k) {
  lua_pushnil(L);
  lua_setiuservalue(L, p, k);
}

/* ---- the turn queue ---- */

/* [-0, +1] Pushes the ring. */
static void push_ring(lua_State *L) {
  lua_getiuservalue(L, STATE, UV_RING);
}

/*
 * [-0, +0, m] Makes room for n more turns. A bigger ring is filled before
 * it replaces the old one, so a raise leaves the queue as it was; it never
 * shrinks, as in the Lua version.
 */
static void ring_reserve(lua_State *L, pstate_t *st, lua_Integer n) {
  lua_Integer cap = st->cap, slots = st->cap * 4, h = st->head, i;
  int ring;
  if (st->count + n <= cap)
    return;
  while (cap < st->count + n) {
    if (cap > INT_MAX / 8)
      luaL_error(L, "ocap.promise: too many queued turns");
    cap *= 2;
  }
  luaL_checkstack(L, 3, NULL);
  lua_createtable(L, (int)(cap * 4), 0);
  push_ring(L);
  ring = lua_gettop(L);
  for (i = 1; i <= st->count * 4; i++) {
    lua_rawgeti(L, ring, h);
    lua_rawseti(L, ring - 1, i);
    if (++h > slots)
      h = 1;
  }
  lua_pop(L, 1);
  lua_setiuservalue(L, STATE, UV_RING);
  st->cap = cap;
  st->head = 1;
  st->tail = st->count * 4 + 1;
}

/*
 * [-3, +0] Queues a turn of the given kind whose arguments are the top
 * three values, into the ring at index ring. The caller made room, and the
 * ring's array part holds every slot, so this cannot raise.
 */
static void ring_put(lua_State *L, pstate_t *st, int ring, int kind) {
  lua_Integer t = st->tail;
  lua_rawseti(L, ring, t + 3);
  lua_rawseti(L, ring, t + 2);
  lua_rawseti(L, ring, t + 1);
  lua_pushinteger(L, kind);
  lua_rawseti(L, ring, t);
  t += 4;
  if (t > st->cap * 4)
    t = 1;
  st->tail = t;
  st->count++;
}

/*
 * [-0, +0] Queues the turn that runs the reaction (a, b, c), at those
 * indices, of a promise settled with (ok, the value at v), into the ring at
 * index ring, which has room. Needs three free stack slots.
 */
static void schedule(lua_State *L, pstate_t *st, int ring, int a, int b, int c, int ok, int v) {
  const void *m = lua_touserdata(L, a);
  int kind;
  if (m == &ADOPT || m == &SETTLE) {
    kind = m == &ADOPT ? J_SETTLE : J_CALL;
    lua_pushvalue(L, b);
    lua_pushboolean(L, ok);
    lua_pushvalue(L, v);
  } else if (m == &AWAIT) {
    kind = J_RESUME;
    lua_pushvalue(L, b);
    lua_pushnil(L);
    lua_pushnil(L);
  } else {
    kind = ok ? J_FULFILLED : J_REJECTED;
    lua_pushvalue(L, a);
    lua_pushvalue(L, ok ? b : c);
    lua_pushvalue(L, v);
  }
  ring_put(L, st, ring, kind);
}

/* ---- settling ---- */

/* [-0, +0, m] Appends the record at p to the unhandled list. */
static void unhandled_add(lua_State *L, pstate_t *st, int p) {
  lua_getiuservalue(L, STATE, UV_UNHANDLED);
  lua_pushvalue(L, p);
  lua_rawseti(L, -2, st->unhandled + 1);
  lua_pop(L, 1);
  st->unhandled++;
}

/*
 * [-0, +0, e] Settles the record at p with the value at v, fulfilled or
 * rejected (fulfill and rejectNow of the Lua version); a settled record is
 * left as is. Its reactions are queued in order and forgotten. Room for
 * them and the unhandled entry are made first, so a raise there changes
 * nothing but spare room.
 */
static void settle_now(lua_State *L, pstate_t *st, int p, int v, int rejected) {
  int top = lua_gettop(L), x = 0, ring, first;
  lua_Integer n = 0, xn = 0, i;
  prec_t *r;
  check_record(L, p);
  r = REC(L, p);
  if (r->state != PENDING)
    return;
  luaL_checkstack(L, 10, NULL);
  first = r->first;
  if (first != R_NONE) {
    n = 1;
    if (r->more && lua_getiuservalue(L, p, RX) == LUA_TTABLE) {
      x = top + 1;
      xn = (lua_Integer)lua_rawlen(L, x) / 3;
      n += xn;
    } else if (r->more) {
      lua_pop(L, 1);
    }
  }
  ring_reserve(L, st, n);
  if (rejected && !r->handled)
    unhandled_add(L, st, p);
  lua_pushvalue(L, v);
  lua_setiuservalue(L, p, V);
  r->state = rejected ? REJECTED : FULFILLED;
  if (n > 0) {
    push_ring(L);
    ring = lua_gettop(L);
    if (first == R_AWAIT)
      lua_pushlightuserdata(L, (void *)&AWAIT);
    else
      lua_getiuservalue(L, p, RA);
    lua_getiuservalue(L, p, RB);
    lua_getiuservalue(L, p, RC);
    schedule(L, st, ring, ring + 1, ring + 2, ring + 3, !rejected, v);
    lua_pop(L, 3);
    r->first = R_NONE;
    if (first == R_SLOTS)
      set_nil(L, p, RA);
    set_nil(L, p, RB);
    if (first == R_SLOTS)
      set_nil(L, p, RC);
    if (x) {
      r->more = 0;
      set_nil(L, p, RX);
      for (i = 0; i < xn; i++) {
        lua_rawgeti(L, x, 3 * i + 1);
        lua_rawgeti(L, x, 3 * i + 2);
        lua_rawgeti(L, x, 3 * i + 3);
        schedule(L, st, ring, ring + 1, ring + 2, ring + 3, !rejected, v);
        lua_pop(L, 3);
      }
    }
  }
  lua_settop(L, top);
}

/* [-0, +1, e] Pushes makeError(message, name) from promise.lua. */
static void push_error(lua_State *L, const char *message, const char *name) {
  luaL_checkstack(L, 3, NULL);
  lua_getiuservalue(L, STATE, UV_MAKE_ERROR);
  lua_pushstring(L, message);
  lua_pushstring(L, name);
  lua_call(L, 2, 1);
}

/* [-0, +0, e] Resolves the record at p with the value at v, ignoring its
 * "already resolved" flag: a promise is adopted in a turn of its own
 * (NewPromiseResolveThenableJob), anything else fulfills p. */
static void resolve_now(lua_State *L, pstate_t *st, int p, int v) {
  if (!is_promise(L, v)) {
    settle_now(L, st, p, v, 0);
  } else if (lua_rawequal(L, p, v)) {
    push_error(L, "Chaining cycle detected for promise", "TypeError");
    settle_now(L, st, p, lua_gettop(L), 1);
    lua_pop(L, 1);
  } else {
    check_record(L, p);
    ring_reserve(L, st, 1);
    luaL_checkstack(L, 4, NULL);
    push_ring(L);
    lua_pushvalue(L, p);
    lua_pushvalue(L, v);
    lua_pushnil(L);
    ring_put(L, st, lua_gettop(L) - 3, J_ADOPT);
    lua_pop(L, 1);
  }
}

/*
 * [-0, +0, m] Adds the reaction (a, b, c), at those indices, to the record
 * at p, or queues it at once if p is settled. Any reaction counts as
 * handling a rejection. A reaction is written with its first slot last,
 * which is what marks it present, and further reactions go to the triple
 * after the last whole one, so a raise leaves no half reaction behind.
 */
static void subscribe(lua_State *L, pstate_t *st, int p, int a, int b, int c) {
  lua_Integer s, n;
  prec_t *r;
  check_record(L, p);
  luaL_checkstack(L, 6, NULL);
  r = REC(L, p);
  r->handled = 1;
  s = r->state;
  if (s != PENDING) {
    int ring;
    ring_reserve(L, st, 1);
    push_ring(L);
    ring = lua_gettop(L);
    lua_getiuservalue(L, p, V);
    schedule(L, st, ring, a, b, c, s == FULFILLED, ring + 1);
    lua_pop(L, 2);
  } else if (r->first == R_NONE) {
    lua_pushvalue(L, c);
    lua_setiuservalue(L, p, RC);
    lua_pushvalue(L, b);
    lua_setiuservalue(L, p, RB);
    lua_pushvalue(L, a);
    lua_setiuservalue(L, p, RA);
    r->first = R_SLOTS;
  } else if (!r->more || lua_getiuservalue(L, p, RX) != LUA_TTABLE) {
    if (r->more)
      lua_pop(L, 1);
    lua_createtable(L, 3, 0);
    lua_pushvalue(L, a);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, b);
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, c);
    lua_rawseti(L, -2, 3);
    lua_setiuservalue(L, p, RX);
    r->more = 1;
  } else {
    n = (lua_Integer)lua_rawlen(L, -1) / 3 * 3;
    lua_pushvalue(L, a);
    lua_rawseti(L, -2, n + 1);
    lua_pushvalue(L, b);
    lua_rawseti(L, -2, n + 2);
    lua_pushvalue(L, c);
    lua_rawseti(L, -2, n + 3);
    lua_pop(L, 1);
  }
}

/* [-0, +1, e] Pushes a new pending promise. The first one made in the
 * state first calls promise.lua's hook, which declares the metatable to
 * ocap.pass (required on first use, so that it may require this module). */
static void new_promise(lua_State *L, pstate_t *st) {
  if (!st->registered) {
    if (lua_getiuservalue(L, STATE, UV_FIRST) == LUA_TFUNCTION) {
      lua_call(L, 0, 0);
      st->registered = 1;
    } else {
      lua_pop(L, 1);
    }
  }
  memset(lua_newuserdatauv(L, sizeof(prec_t), NUV), 0, sizeof(prec_t));
  lua_pushvalue(L, PROMISE_MT);
  lua_setmetatable(L, -2);
}

/* The length of the `<chunk>:<line>: ` position Lua put in front of the
 * error message s (len bytes), 0 when it has none: the shortest prefix
 * without a newline that ends in a colon, digits, a colon and a space, as
 * liveslots' stripPosition finds it. */
static size_t position_len(const char *s, size_t len) {
  for (size_t i = 0; i < len && s[i] != '\n'; i++) {
    size_t j = i + 1;
    if (s[i] != ':' || j >= len || s[j] < '0' || s[j] > '9')
      continue;
    while (j < len && s[j] >= '0' && s[j] <= '9')
      j++;
    if (j + 1 < len && s[j] == ':' && s[j + 1] == ' ')
      return j + 2;
  }
  return 0;
}

/* [-0, +0, e] Replaces the string a callback raised, at idx, by what a
 * method that raised it gives its caller (docs/errors.md): an error value
 * whose message has lost the position, so that `error('boom')` reaches
 * whoever awaits the derived promise, in this state or through the
 * kernel, with the message `boom`. */
static void raised_string(lua_State *L, int idx) {
  size_t len;
  const char *s = lua_tolstring(L, idx, &len);
  size_t skip = position_len(s, len);
  luaL_checkstack(L, 2, NULL);
  lua_getiuservalue(L, STATE, UV_MAKE_ERROR);
  lua_pushlstring(L, s + skip, len - skip);
  lua_call(L, 1, 1);
  lua_replace(L, idx);
}

/* ---- drain ---- */

/* drain's stack: its own slots, then the turn being run. */
#define D_N 1       /* turns run so far, saved before each call */
#define D_LIST 2    /* the unhandled list being reported, or nil */
#define D_I 3       /* the next index in it */
#define D_HANDLER 4 /* the handler it is reported to */
#define D_BASE 4

/* What drain_k continues after (its lua_KContext). */
enum { K_FULFILLED = 1, K_REJECTED, K_CALL, K_REPORT };

static int drain_k(lua_State *L, int status, lua_KContext ctx);

/*
 * [-0, +0, e] The end of a turn that called a handler, with the derived
 * promise at D_BASE + 1 and the handler's result or error above it:
 * settles the derived promise as fulfilledJob and rejectedJob did.
 */
static void handled(lua_State *L, pstate_t *st, int kind, int status) {
  int d = D_BASE + 1, r = D_BASE + 2;
  int ok = status == LUA_OK || status == LUA_YIELD;
  if (!ok && status == LUA_ERRRUN && lua_type(L, r) == LUA_TSTRING && !ocap_vat_state_fatal(L))
    raised_string(L, r);
  if (!ok)
    settle_now(L, st, d, r, 1);
  else if (kind == K_REJECTED || is_promise(L, r))
    resolve_now(L, st, d, r);
  else
    settle_now(L, st, d, r, 0);
}

/* [-0, +0, e] Saves n where a continuation finds it. */
static void save_n(lua_State *L, lua_Integer n) {
  lua_pushinteger(L, n);
  lua_replace(L, D_N);
}

/*
 * [-0, +0, e] Runs the turn at the head of the queue, which leaves the
 * queue before it runs, so an error it raises leaves the queue valid and
 * propagates out of drain with the turns after it still queued.
 */
static void run_turn(lua_State *L, pstate_t *st, lua_Integer n) {
  lua_Integer h = st->head;
  int kind, a = D_BASE + 1, b = D_BASE + 2, c = D_BASE + 3;
  push_ring(L);
  lua_rawgeti(L, D_BASE + 1, h);
  kind = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_rawgeti(L, D_BASE + 1, h + 1);
  lua_rawgeti(L, D_BASE + 1, h + 2);
  lua_rawgeti(L, D_BASE + 1, h + 3);
  for (int i = 1; i <= 3; i++) {
    lua_pushnil(L);
    lua_rawseti(L, D_BASE + 1, h + i);
  }
  h += 4;
  st->head = h > st->cap * 4 ? 1 : h;
  st->count--;
  lua_remove(L, D_BASE + 1);
  switch (kind) {
  case J_FULFILLED:
  case J_REJECTED:
    /* (d, handler, value) */
    if (!lua_toboolean(L, b)) {
      settle_now(L, st, a, c, kind == J_REJECTED);
    } else {
      int k = kind == J_FULFILLED ? K_FULFILLED : K_REJECTED;
      save_n(L, n);
      handled(L, st, k, lua_pcallk(L, 1, 1, 0, k, drain_k));
    }
    break;
  case J_SETTLE:
    /* (target, ok, value) */
    settle_now(L, st, a, c, !lua_toboolean(L, b));
    break;
  case J_CALL:
    /* (fn, ok, value) */
    save_n(L, n);
    lua_callk(L, 2, 0, K_CALL, drain_k);
    break;
  case J_RESUME:
    /* (co) */
    lua_settop(L, a);
    lua_getiuservalue(L, STATE, UV_RESUME);
    lua_insert(L, a);
    save_n(L, n);
    lua_callk(L, 1, 0, K_CALL, drain_k);
    break;
  case J_ADOPT:
    /* (target, thenable): the target follows the thenable from now on. */
    lua_pushlightuserdata(L, (void *)&ADOPT);
    lua_pushboolean(L, 0);
    subscribe(L, st, b, c + 1, a, c + 2);
    break;
  default:
    break;
  }
  lua_settop(L, D_BASE);
}

/*
 * [-0, +0, e] Reports the rest of the unhandled list at D_LIST, from index
 * D_I, to the handler at D_HANDLER: each promise still unhandled is marked
 * handled and reported once.
 */
static void report(lua_State *L, pstate_t *st, lua_Integer n) {
  lua_Integer i = lua_tointeger(L, D_I), len = (lua_Integer)lua_rawlen(L, D_LIST);
  int p = D_BASE + 1;
  for (; i <= len; i++) {
    lua_rawgeti(L, D_LIST, i);
    check_record(L, p);
    if (!REC(L, p)->handled) {
      REC(L, p)->handled = 1;
      if (lua_toboolean(L, D_HANDLER)) {
        lua_pushvalue(L, D_HANDLER);
        lua_getiuservalue(L, p, V);
        lua_pushvalue(L, p);
        save_n(L, n);
        lua_pushinteger(L, i + 1);
        lua_replace(L, D_I);
        lua_callk(L, 2, 0, K_REPORT, drain_k);
      }
    }
    lua_settop(L, D_BASE);
  }
  lua_pushnil(L);
  lua_replace(L, D_LIST);
}

/*
 * [-0, +1, e] drain's loop, from the state its stack holds: runs turns in
 * FIFO order until none is left, turns queued meanwhile included, then
 * reports unhandled rejections, and again while reporting queued turns.
 * Pushes the number of turns run.
 */
static int drain_loop(lua_State *L, pstate_t *st, lua_Integer n) {
  for (;;) {
    if (lua_type(L, D_LIST) == LUA_TTABLE) {
      report(L, st, n);
      if (st->count == 0)
        break;
    }
    while (st->count > 0) {
      ocap_vat_charge(L, TURN_COST);
      n++;
      run_turn(L, st, n);
    }
    if (st->unhandled == 0)
      break;
    /* The list is swapped for a new one before it is reported: what the
     * handler rejects is reported by a later drain. */
    lua_createtable(L, 0, 0);
    lua_getiuservalue(L, STATE, UV_UNHANDLED);
    lua_replace(L, D_LIST);
    lua_setiuservalue(L, STATE, UV_UNHANDLED);
    st->unhandled = 0;
    lua_pushinteger(L, 1);
    lua_replace(L, D_I);
    lua_getiuservalue(L, STATE, UV_HANDLER);
    lua_replace(L, D_HANDLER);
  }
  lua_pushinteger(L, n);
  return 1;
}

/* [-?, +1, e] Continues drain after a callback that yielded. */
static int drain_k(lua_State *L, int status, lua_KContext ctx) {
  pstate_t *st = state_of(L);
  if (ctx == K_FULFILLED || ctx == K_REJECTED)
    handled(L, st, (int)ctx, status);
  lua_settop(L, D_BASE);
  return drain_loop(L, st, lua_tointeger(L, D_N));
}

/* [-0, +1, e] drain() -> n: see promise.lua. */
static int promise_drain(lua_State *L) {
  pstate_t *st = state_of(L);
  if (st->count == 0 && st->unhandled == 0) {
    lua_pushinteger(L, 0);
    return 1;
  }
  lua_settop(L, 0);
  luaL_checkstack(L, 16, NULL);
  lua_pushinteger(L, 0);
  lua_pushnil(L);
  lua_pushinteger(L, 1);
  lua_pushnil(L);
  return drain_loop(L, st, 0);
}

/* [-0, +0] See lpromise.h: drain's first upvalue is its queue. */
const void *ocap_promise_queue(lua_State *L, int idx) {
  const void *q;
  if (lua_tocfunction(L, idx) != promise_drain || !lua_getupvalue(L, idx, 1))
    return NULL;
  q = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return q;
}

int ocap_promise_idle(const void *q) {
  const pstate_t *st = q;
  return st->count == 0 && st->unhandled == 0;
}

/* [-0, +1] hasTurns() -> whether turns are queued. */
static int promise_has_turns(lua_State *L) {
  lua_pushboolean(L, state_of(L)->count > 0);
  return 1;
}

/* [-0, +1] setUnhandledRejectionHandler(fn?) -> the previous handler. */
static int promise_set_handler(lua_State *L) {
  lua_settop(L, 1);
  lua_getiuservalue(L, STATE, UV_HANDLER);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, STATE, UV_HANDLER);
  return 1;
}

/* ---- promises ---- */

/* [-0, +1, e] makePromise() -> a new pending promise. */
static int promise_make(lua_State *L) {
  new_promise(L, state_of(L));
  return 1;
}

/* [-2, +1, e] track(t, key) -> a new pending promise p, with t[key] = p
 * (a raw write) and p remembering both: what liveslots does for the
 * result of each send, in one call and with no weak table of keys. */
static int promise_track(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  /* Vat code can call track too: its raw write must not go around a
   * protected table's __newindex (hardened tables, exos, stores), which
   * the vat's rawset refuses for the same reason. */
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    return luaL_error(L, "track: cannot modify a protected object");
  new_promise(L, state_of(L));
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 3, OWNER);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 3, KEY);
  return 1;
}

/* [-2, +1] trackedKey(v, t) -> the key v was made for by track(t, key),
 * or nil when v is not a promise track made for t. */
static int promise_tracked_key(lua_State *L) {
  lua_settop(L, 2);
  if (!is_promise(L, 1) || lua_getiuservalue(L, 1, OWNER) != LUA_TTABLE || !lua_rawequal(L, 2, 3))
    return 0;
  lua_getiuservalue(L, 1, KEY);
  return 1;
}

/* [-0, +1] isPromise(v) -> whether v is one of this state's promises. */
static int promise_is(lua_State *L) {
  lua_pushboolean(L, is_promise(L, 1));
  return 1;
}

/* [-0, +0, e] resolvePromise(p, v): resolves p unless already resolved. */
static int promise_resolve_promise(lua_State *L) {
  check_promise(L, 1);
  lua_settop(L, 2);
  if (REC(L, 1)->locked)
    return 0;
  REC(L, 1)->locked = 1;
  resolve_now(L, state_of(L), 1, 2);
  return 0;
}

/* [-0, +0, e] rejectPromise(p, e): rejects p unless already resolved. */
static int promise_reject_promise(lua_State *L) {
  check_promise(L, 1);
  lua_settop(L, 2);
  if (REC(L, 1)->locked)
    return 0;
  REC(L, 1)->locked = 1;
  settle_now(L, state_of(L), 1, 2, 1);
  return 0;
}

/*
 * [-0, +(0|1), e] settleAndResume's first half, on the arguments (p, ok,
 * v) at 1 to 3. When p is not resolved yet, no turn is queued, and p's
 * only reaction is an await, settles p with (ok, v) without queueing that
 * await's turn, forgets the reaction, pushes its coroutine and returns 1.
 * Otherwise settles p like resolvePromise or rejectPromise and returns 0.
 */
static int take_awaiter(lua_State *L, pstate_t *st) {
  int ok;
  check_promise(L, 1);
  lua_settop(L, 3);
  prec_t *r;
  ok = lua_toboolean(L, 2);
  r = REC(L, 1);
  if (r->locked)
    return 0;
  r->locked = 1;
  if (st->count == 0 && r->first == R_AWAIT && !r->more && r->state == PENDING &&
      (!ok || !is_promise(L, 3))) {
    lua_pushvalue(L, 3);
    lua_setiuservalue(L, 1, V);
    r->state = ok ? FULFILLED : REJECTED;
    r->first = R_NONE;
    lua_getiuservalue(L, 1, RB);
    set_nil(L, 1, RB);
    return 1;
  }
  lua_settop(L, 3);
  if (ok)
    resolve_now(L, st, 1, 3);
  else
    settle_now(L, st, 1, 3, 1);
  return 0;
}

/* [-0, +1, e] settled(ok, v) -> a promise resolved with v when ok, else
 * rejected with v. */
static int promise_settled(lua_State *L) {
  pstate_t *st = state_of(L);
  int ok = lua_toboolean(L, 1);
  lua_settop(L, 2);
  new_promise(L, st);
  REC(L, 3)->locked = 1;
  if (ok)
    resolve_now(L, st, 3, 2);
  else
    settle_now(L, st, 3, 2, 1);
  return 1;
}

/* [-0, +1, e] resolve(v) -> v if it is a promise, else one fulfilled with v. */
static int promise_resolve(lua_State *L) {
  lua_settop(L, 1);
  if (is_promise(L, 1))
    return 1;
  new_promise(L, state_of(L));
  REC(L, 2)->locked = 1;
  REC(L, 2)->state = FULFILLED;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 2, V);
  return 1;
}

/* [-0, +1, e] reject(e) -> a promise rejected with e. */
static int promise_reject(lua_State *L) {
  pstate_t *st = state_of(L);
  lua_settop(L, 1);
  new_promise(L, st);
  REC(L, 2)->locked = 1;
  settle_now(L, st, 2, 1, 1);
  return 1;
}

/* [-0, +0, e] A kit's resolve(v) or reject(e); upvalue 3 is its promise,
 * and upvalue 4 true for reject. */
static int kit_settle(lua_State *L) {
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(3));
  if (REC(L, 2)->locked)
    return 0;
  REC(L, 2)->locked = 1;
  if (lua_toboolean(L, lua_upvalueindex(4)))
    settle_now(L, state_of(L), 2, 1, 1);
  else
    resolve_now(L, state_of(L), 2, 1);
  return 0;
}

/* [-0, +1, e] makePromiseKit() -> { promise, resolve, reject }. */
static int promise_kit(lua_State *L) {
  int i;
  lua_settop(L, 0);
  new_promise(L, state_of(L));
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, 1);
  lua_setfield(L, 2, "promise");
  for (i = 0; i < 2; i++) {
    lua_pushvalue(L, STATE);
    lua_pushvalue(L, PROMISE_MT);
    lua_pushvalue(L, 1);
    lua_pushboolean(L, i);
    lua_pushcclosure(L, kit_settle, 4);
    lua_setfield(L, 2, i ? "reject" : "resolve");
  }
  return 1;
}

/* [-0, +0, e] onSettle(p, fn): calls fn(ok, value) in a turn once p
 * settles, or in the next turn with (true, p) if p is not a promise. */
static int promise_on_settle(lua_State *L) {
  pstate_t *st = state_of(L);
  lua_settop(L, 2);
  if (is_promise(L, 1)) {
    lua_pushlightuserdata(L, (void *)&SETTLE);
    lua_pushboolean(L, 0);
    subscribe(L, st, 1, 3, 2, 4);
  } else {
    ring_reserve(L, st, 1);
    push_ring(L);
    lua_pushvalue(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    ring_put(L, st, 3, J_CALL);
  }
  return 0;
}

/* [-0, +2, e] state(p) -> 'pending'|'fulfilled'|'rejected', value. */
static int promise_state(lua_State *L) {
  static const char *const names[] = {"pending", "fulfilled", "rejected"};
  lua_Integer s;
  if (!is_promise(L, 1))
    return luaL_error(L, "state: not a promise");
  s = REC(L, 1)->state;
  if (s >= PENDING && s <= REJECTED)
    lua_pushstring(L, names[s]);
  else
    lua_pushnil(L);
  lua_getiuservalue(L, 1, V);
  return 2;
}

/* [-0, +0, e] internal.fulfill(p, v): settles p unless it is settled. */
static int promise_fulfill(lua_State *L) {
  check_promise(L, 1);
  lua_settop(L, 2);
  settle_now(L, state_of(L), 1, 2, 0);
  return 0;
}

/* [-0, +0, e] internal.rejectNow(p, e): rejects p unless it is settled. */
static int promise_reject_now(lua_State *L) {
  check_promise(L, 1);
  lua_settop(L, 2);
  settle_now(L, state_of(L), 1, 2, 1);
  return 0;
}

/* [-0, +0] internal.configure(makeError, first, resume, create, pcall,
 * xpcall): promise.lua's hooks, and the state's own coroutine library and
 * protected calls. Workers are made with its coroutine.create, which a
 * vat meters; they are resumed and protected as its coroutine.resume,
 * pcall and xpcall do it (see tasks, below), so those three are checked
 * but not kept. */
static int promise_configure(lua_State *L) {
  static const int slots[] = {UV_MAKE_ERROR, UV_FIRST, 0, UV_COCREATE, 0, 0};
  int i;
  for (i = 0; i < 6; i++)
    luaL_checktype(L, i + 1, LUA_TFUNCTION);
  for (i = 0; i < 6; i++) {
    if (slots[i] == 0)
      continue;
    lua_pushvalue(L, i + 1);
    lua_setiuservalue(L, STATE, slots[i]);
  }
  return 0;
}

/* ---- tasks ----
 *
 * A task runs in a pooled coroutine, a worker, whose body is C: it takes a
 * task, runs it in a protected call (xcall's with a message handler),
 * and yields DONE (or FAILED) over the task's value to wait for its next
 * task; the C that resumed it takes the value and clears the frame, so an
 * idle worker holds nothing of its last task. Creating a coroutine costs more than a whole promise
 * round trip, hence the pools. Workers are created through the state's own coroutine.create, and
 * resumed and protected with vat.c's ocap_vat_resume, OCAP_VAT_PCALL_COST and
 * ocap_vat_pcall_failed, which do what the vat's coroutine.resume, pcall and xpcall do around them:
 * a vat's meter and watchdog see a task exactly as they see vat code.
 *
 * A worker is known by its thread's extra space (lua_getextraspace),
 * which holds a tag made of its own address, the state's and whether it
 * is xcall's; no other thread can hold its tag, since a thread's extra
 * space starts as a copy of the main thread's, whose address differs.
 */

/* Built alone as a module for a host state, the core is never in a vat:
 * its tasks resume and protect as the plain coroutine.resume and pcall
 * do. */
#ifdef OCAP_PROMISE_STANDALONE
#define ocap_vat_resume(L, co, narg, nres) lua_resume((co), (L), (narg), (nres))
#define ocap_vat_pcall_failed(L, status) ((void)(L), (void)(status))
#define IN_VAT(L) ((void)(L), 0)
#else
#define IN_VAT(L) (ocap_vat_from_state(L) != NULL)
#endif

/* Where a worker continues after a call or a yield (its lua_KContext). */
enum { WK_IDLE = 1, WK_TASK, WK_CHECKED_IDLE, WK_CHECKED_TASK, WK_ENDED, WK_LEG };

static int worker_k(lua_State *co, int status, lua_KContext ctx);

_Static_assert(LUA_EXTRASPACE >= sizeof(uintptr_t), "a worker's tag fits its extra space");

#define TAG_CALL ((uintptr_t)0x6f63617054736b31u)
#define TAG_CHECKED ((uintptr_t)0x6f63617058736b32u)
#define TAG_PARKED ((uintptr_t)0x6f6361704c656733u)
#define TAG_LEG ((uintptr_t)0x6f6361704c656734u)

/* Pool 1's further tags (see legs, below): a worker whose delivery
 * yielded, and one whose delivery ended by returning. */
enum { PARKED = 2, LEG = 3 };

/* The tag of the worker co of st's pool k (0 for call's, 1 for xcall's),
 * or of a PARKED or LEG one. */
static uintptr_t worker_tag(const pstate_t *st, lua_State *co, int k) {
  static const uintptr_t tags[] = {TAG_CALL, TAG_CHECKED, TAG_PARKED, TAG_LEG};
  return (uintptr_t)co ^ (uintptr_t)st ^ tags[k];
}

/* [-0, +0] Tags co as st's worker of pool k, or as PARKED. */
static void set_tag(const pstate_t *st, lua_State *co, int k) {
  uintptr_t tag = worker_tag(st, co, k);
  memcpy(lua_getextraspace(co), &tag, sizeof tag);
}

/* [-0, +0] The tag co's extra space holds (set_tag). */
static uintptr_t tag_of(lua_State *co) {
  uintptr_t x;
  memcpy(&x, lua_getextraspace(co), sizeof x);
  return x;
}

/* [-0, +0] Which pool's worker co is (0 or 1), or -1 when it is not one
 * of st's workers. */
static int worker_pool(const pstate_t *st, lua_State *co) {
  uintptr_t x = tag_of(co);
  if (x == worker_tag(st, co, 0))
    return 0;
  if (x == worker_tag(st, co, 1) || x == worker_tag(st, co, PARKED) || x == worker_tag(st, co, LEG))
    return 1;
  return -1;
}

/* [-0, +0] Whether co is a leg that parked (ocap_promise_leg_ended). */
static int is_parked(const pstate_t *st, lua_State *co) {
  return tag_of(co) == worker_tag(st, co, PARKED);
}

/* [-0, +0] Whether co, whose status is LUA_OK, is a leg whose delivery
 * ended by returning (and which nobody started since): the next task
 * starts it afresh. */
static int ended_leg(const pstate_t *st, lua_State *co) {
  return tag_of(co) == worker_tag(st, co, LEG) && lua_gettop(co) == 0;
}

/* [-0, +0] Whether co is suspended, as coroutine.status says. */
static int co_suspended(lua_State *L, lua_State *co) {
  lua_Debug ar;
  if (co == NULL || co == L)
    return 0;
  switch (lua_status(co)) {
  case LUA_YIELD:
    return 1;
  case LUA_OK:
    return !lua_getstack(co, 0, &ar) && lua_gettop(co) > 0;
  default:
    return 0;
  }
}

/* [-0, +0] Whether the value at idx of co is what lua_resume answers when
 * it refuses to resume a coroutine that is not suspended (one its user
 * closed, say), which runs nothing. */
static int unresumable(lua_State *co, int idx) {
  const char *what;
  if (lua_type(co, idx) != LUA_TSTRING)
    return 0;
  what = lua_tostring(co, idx);
  return strcmp(what, "cannot resume dead coroutine") == 0 ||
         strcmp(what, "cannot resume non-suspended coroutine") == 0;
}

/* [-0, +0, m] tracked[co] = the value at v. */
static void tracked_set(lua_State *L, int co, int v) {
  lua_getiuservalue(L, STATE, UV_TRACKED);
  lua_pushvalue(L, co);
  lua_pushvalue(L, v);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* [-0, +1] Pushes tracked[co]; returns its type. */
static int tracked_get(lua_State *L, int co) {
  int t;
  lua_getiuservalue(L, STATE, UV_TRACKED);
  lua_pushvalue(L, co);
  t = lua_rawget(L, -2);
  lua_remove(L, -2);
  return t;
}

/* [-0, +0, m] Gives pool k's mirror room for one more entry. */
static void pool_grow(lua_State *L, pstate_t *st, int k) {
  pool_t *p = &st->pool[k];
  int cap = p->cap ? p->cap * 2 : 4;
  lua_State **w;
  if (cap > POOL_MAX)
    cap = POOL_MAX;
  w = lua_newuserdatauv(L, (size_t)cap * sizeof *w, 0);
  if (p->hi > 0)
    memcpy(w, p->w, (size_t)p->hi * sizeof *w);
  lua_setiuservalue(L, STATE, UV_POOL_W + k);
  p->w = w;
  p->cap = cap;
}

/*
 * [-0, +0, m] Puts the idle worker co, at index idx, back in pool k unless
 * the pool is full. Put back where it was taken from, as it usually is,
 * it is already in its slot and nothing is written. Room is made before
 * anything is written, so a raise leaves the pool as it was.
 */
static void pool_push(lua_State *L, pstate_t *st, int k, lua_State *co, int idx) {
  pool_t *p = &st->pool[k];
  if (p->n >= POOL_MAX)
    return;
  if (p->n < p->hi && p->w[p->n] == co) {
    p->n++;
    return;
  }
  if (p->n >= p->cap)
    pool_grow(L, st, k);
  lua_getiuservalue(L, STATE, UV_POOL + k);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, p->n + 1);
  lua_pop(L, 1);
  p->w[p->n++] = co;
  if (p->n > p->hi)
    p->hi = p->n;
}

/* [-0, +0] Takes the last idle worker of pool k that can be resumed, or
 * started afresh (an ended leg); one its user closed is dropped. NULL
 * when there is none. Its slot still holds it for the collector until
 * the caller anchors it. */
static lua_State *pool_take(pstate_t *st, int k) {
  pool_t *p = &st->pool[k];
  while (p->n > 0) {
    lua_State *co = p->w[--p->n];
    int status = lua_status(co);
    if (status == LUA_YIELD || (k == 1 && status == LUA_OK && ended_leg(st, co)))
      return co;
  }
  return NULL;
}

/* [-0, +0] Clears pool k's slots beyond its idle workers, so that a worker
 * taken from it that now awaits is held only by what it awaits: its
 * task is garbage when that is. */
static void pool_forget(lua_State *L, pstate_t *st, int k) {
  pool_t *p = &st->pool[k];
  int i;
  if (p->hi <= p->n)
    return;
  lua_getiuservalue(L, STATE, UV_POOL + k);
  for (i = p->n; i < p->hi; i++) {
    lua_pushnil(L);
    lua_rawseti(L, -2, i + 1);
    p->w[i] = NULL;
  }
  lua_pop(L, 1);
  p->hi = p->n;
}

/*
 * [-0, +0, e] A task's end, with its value on top of the worker's frame:
 * yields DONE, or FAILED when the task failed, over it, waiting for the
 * next task at idle. The resumer takes the value and clears the frame
 * (take_outcome). The task's key is cleared first: a task's own code
 * that resumed its worker to this end (it can hold it) leaves the frame
 * as it is, and resuming it again, as that code or the await's turn can,
 * must find a stray resume, not a task in what the last one left.
 */
static int worker_done(lua_State *co, int ok, int idle) {
  lua_pushnil(co);
  lua_replace(co, 1);
  lua_pushlightuserdata(co, (void *)(ok ? &DONE : &FAILED));
  return lua_yieldk(co, 1, idle, worker_k);
}

/* [-0, +0, e] Yields token from the worker co, continuing at ctx when
 * resumed; an idle worker's stack holds nothing of its last task. */
static int worker_yield(lua_State *co, const char *token, int ctx) {
  lua_settop(co, 0);
  lua_pushlightuserdata(co, (void *)token);
  return lua_yieldk(co, 1, ctx, worker_k);
}

/* [-?, +0, e] The end of call's protected call, which ended with status,
 * its first result or error on top. */
static int worker_ran(lua_State *co, int status) {
  int ok = status == LUA_OK || status == LUA_YIELD;
  if (!ok)
    ocap_vat_pcall_failed(co, status);
  return worker_done(co, ok, WK_IDLE);
}

/* [-?, +0, e] The body of call's workers, given (key, fn, ...): runs fn(...)
 * protected, as the state's pcall does, when key is POOL_KEY, else yields
 * STRAY. */
static int worker(lua_State *co) {
  if (lua_touserdata(co, 1) != &POOL_KEY)
    return worker_yield(co, &STRAY, WK_IDLE);
  if (lua_gettop(co) < 2)
    lua_settop(co, 2); /* pcall(nil): the task fails as a call of nil */
  ocap_vat_charge(co, OCAP_VAT_PCALL_COST);
  return worker_ran(co, lua_pcallk(co, lua_gettop(co) - 2, 1, 0, WK_TASK, worker_k));
}

/* [-?, +0, e] After xcall's task, which ended with status, its first
 * result or error on top of (key, ended, a, b, msgh): when it failed,
 * ended(a, b, false, reason), in the same coroutine, makes its outcome. */
static int checked_ran(lua_State *co, int status) {
  if (status == LUA_OK || status == LUA_YIELD)
    return worker_done(co, 1, WK_CHECKED_IDLE);
  ocap_vat_pcall_failed(co, status);
  lua_pushvalue(co, 2);
  lua_pushvalue(co, 3);
  lua_pushvalue(co, 4);
  lua_pushboolean(co, 0);
  lua_pushvalue(co, -5);
  lua_callk(co, 4, 2, WK_ENDED, worker_k);
  return worker_done(co, lua_toboolean(co, -2), WK_CHECKED_IDLE);
}

/*
 * ---- legs ----
 *
 * A delivery the kernel decoded (ldeliver.c) runs in an idle worker of
 * xcall's pool, a leg, rather than on the vat's main thread: the kernel
 * resumes it (ocap_vat_resume_entry) with (LEG_KEY, fn, arg) and it calls
 * fn(arg), which calls dispatchCall or dispatchSettle. dispatchCall, in a
 * leg, runs the method in the leg's own frames (call_inline): a method
 * that does not await needs no coroutine of its own, and one that awaits
 * yields the leg, which stays its task (it parks), while the kernel takes
 * another worker for the next delivery. A parked leg's method ending
 * settles its result in dispatchCall's continuation (call_ran), as the
 * promise of its task would have, and the worker goes back to the pool
 * through whoever resumed it (resume_awaiter), as a task's does.
 */

/* [-?, +0, e] A worker idle in its body, given (LEG_KEY, fn, arg): runs
 * fn(arg) and returns, which makes it an ended leg. */
static int leg(lua_State *co) {
  lua_callk(co, lua_gettop(co) - 2, 0, WK_LEG, worker_k);
  return 0;
}

lua_State *ocap_promise_leg(const void *q, lua_CFunction fn, void *arg, int *narg) {
  lua_State *co = pool_take((pstate_t *)(uintptr_t)q, 1);
  if (co == NULL)
    return NULL;
  if (lua_status(co) == LUA_YIELD) {
    /* Idle in its body, which runs fn(arg) (leg). */
    lua_pushlightuserdata(co, (void *)&LEG_KEY);
    *narg = 3;
  } else {
    *narg = 1; /* an ended leg: fn is the thread's body */
  }
  lua_pushcfunction(co, fn);
  lua_pushlightuserdata(co, arg);
  return co;
}

int ocap_promise_leg_ended(const void *q, lua_State *co, int status, int nres) {
  pstate_t *st = (pstate_t *)(uintptr_t)q;
  pool_t *p = &st->pool[1];
  lua_pop(co, nres);
  if (status != LUA_OK) {
    set_tag(st, co, PARKED);
    return 0;
  }
  set_tag(st, co, LEG);
  /* Back where it was taken from, unless a worker pooled meanwhile took
   * its slot (the collector then has it). */
  if (p->n < p->hi && p->w[p->n] == co)
    p->n++;
  return 1;
}

/* [-?, +0, e] The body of xcall's workers, given (key, ended, a, b, msgh,
 * fn, ...): runs fn(...) protected with the message handler msgh, as the
 * state's xpcall does, when key is CHECKED_KEY, else yields STRAY. */
static int checked_worker(lua_State *co) {
  if (lua_touserdata(co, 1) == &LEG_KEY)
    return leg(co);
  if (lua_touserdata(co, 1) != &CHECKED_KEY || lua_gettop(co) < 6)
    return worker_yield(co, &STRAY, WK_CHECKED_IDLE);
  ocap_vat_charge(co, OCAP_VAT_PCALL_COST);
  return checked_ran(co, lua_pcallk(co, lua_gettop(co) - 6, 1, 5, WK_CHECKED_TASK, worker_k));
}

/* [-?, +0, e] Where a worker continues after a call that yielded or a
 * yield of its own. */
static int worker_k(lua_State *co, int status, lua_KContext ctx) {
  switch (ctx) {
  case WK_TASK:
    return worker_ran(co, status);
  case WK_ENDED:
    return worker_done(co, lua_toboolean(co, -2), WK_CHECKED_IDLE);
  case WK_CHECKED_TASK:
    return checked_ran(co, status);
  case WK_CHECKED_IDLE:
    return checked_worker(co);
  case WK_LEG:
    return 0; /* a leg that parked ended: see resume_awaiter */
  default:
    return worker(co);
  }
}

/*
 * [-1, +1] A task's message handler; upvalue 1 is the handler xcall was
 * given. As the vat's xpcall's (vat.c), it lets the error pass as is once
 * the vat is fatal, so that no vat code runs where the meter cannot stop
 * it.
 */
static int task_msgh(lua_State *L) {
  if (ocap_vat_state_fatal(L))
    return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/*
 * [-0, +1, m] Pushes the message handler for the handler at h: in a vat
 * task_msgh over it, kept for the next call with the same handler (a
 * delivery's is always the same), elsewhere the handler itself, as the
 * plain xpcall calls it.
 */
static void push_msgh(lua_State *L, pstate_t *st, int h) {
  const void *id = lua_topointer(L, h);
  if (!IN_VAT(L)) {
    lua_pushvalue(L, h);
    return;
  }
  if (id == st->msgh_of) {
    lua_getiuservalue(L, STATE, UV_MSGH);
    return;
  }
  /* The wrapper holds the handler, so its address is not reused while
   * msgh_of names it. */
  lua_pushvalue(L, h);
  lua_pushcclosure(L, task_msgh, 1);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, STATE, UV_MSGH);
  st->msgh_of = id;
}

/*
 * [-0, +0] Whether the worker co, resumed with status and nres results,
 * is done with its task: 0 when not, else 1 when the task succeeded and 2
 * when it failed. The token alone does not say so: a task's own code can
 * yield the token it saw by resuming a worker itself, and a worker taken
 * for idle mid-task would hand the next task, its function and
 * arguments, to that code. A worker done with its task yields from its C
 * body, with no frame above it.
 */
static int task_done(lua_State *co, int status, int nres) {
  lua_Debug ar;
  const void *t;
  if (status != LUA_YIELD || nres != 1)
    return 0;
  t = lua_touserdata(co, -1);
  if ((t != &DONE && t != &FAILED) || lua_getstack(co, 1, &ar))
    return 0;
  return t == &DONE ? 1 : 2;
}

/* [-0, +2] Pushes how the task the worker co is done with ended, (ok,
 * value), done as task_done says, and clears co's frame. */
static void take_outcome(lua_State *L, lua_State *co, int done) {
  lua_pushboolean(L, done == 1);
  lua_pop(co, 1);
  lua_xmove(co, L, 1);
  lua_settop(co, 0);
}

/* [-0, +1, e] Pushes a new worker of pool k, tagged; returns it. */
static lua_State *new_worker(lua_State *L, pstate_t *st, int k) {
  lua_State *co;
  uintptr_t tag;
  lua_getiuservalue(L, STATE, UV_COCREATE);
  lua_getiuservalue(L, STATE, k ? UV_CHECKED_WORKER : UV_WORKER);
  lua_call(L, 1, 1);
  co = lua_tothread(L, -1);
  if (co == NULL)
    luaL_error(L, "ocap.promise: coroutine.create made no coroutine");
  tag = worker_tag(st, co, k);
  memcpy(lua_getextraspace(co), &tag, sizeof tag);
  return co;
}

/*
 * [-n, +1, e] Takes a worker of pool k, or makes one, and resumes it with
 * key and the n values above index base, all of the stack's top (they
 * move to the worker); leaves the worker at base + 1, which holds it
 * while it runs, and returns it, with the resume's status and results.
 */
static lua_State *run_task(lua_State *L, pstate_t *st, int k, const char *key, int base,
                           int *status, int *nres) {
  int n = lua_gettop(L) - base;
  lua_State *co = pool_take(st, k);
  if (co == NULL) {
    co = new_worker(L, st, k);
    lua_insert(L, base + 1);
  }
  if (!lua_checkstack(co, n + 3))
    luaL_error(L, "too many arguments to resume");
  if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
    /* An ended leg starts its body afresh, a worker again. */
    lua_getiuservalue(L, STATE, UV_CHECKED_WORKER);
    lua_xmove(L, co, 1);
    set_tag(st, co, 1);
  }
  lua_pushlightuserdata(co, (void *)key);
  lua_xmove(L, co, n);
  if (lua_gettop(L) == base) {
    /* Taken from the pool: its slot holds it only until a worker that
     * awaits clears it, which can happen while it runs. */
    lua_pushthread(co);
    lua_xmove(co, L, 1);
  }
  *status = ocap_vat_resume(L, co, n + 1, nres);
  return co;
}

/*
 * [-0, +(2|3|4), e] The end of a resume of the task worker co of pool k,
 * at index base + 1, the top, that returned status and nres results:
 * pushes false and the promise of the task's result while it awaits, else
 * true, ok and its first result (or what it threw), pooling the worker;
 * for xcall's (k = 1), then also whether turns are queued (its busy).
 * Returns how many it pushed.
 */
static int task_resumed(lua_State *L, pstate_t *st, lua_State *co, int k, int base, int status,
                        int nres) {
  int done;
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_xmove(co, L, 1);
    return lua_error(L);
  }
  done = task_done(co, status, nres);
  if (!done) {
    lua_pop(co, nres);
    pool_forget(L, st, k);
    new_promise(L, st);
    tracked_set(L, base + 1, base + 2);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, base + 2);
    lua_remove(L, base + 2);
    return 2;
  }
  lua_pushboolean(L, 1);
  take_outcome(L, co, done);
  pool_push(L, st, k, co, base + 1);
  if (!k)
    return 3;
  lua_pushboolean(L, st->count > 0);
  return 4;
}

/* [-n, +(2|3), e] call(fn, ...) -> done, okOrPromise, value: see
 * promise.lua. */
static int promise_call(lua_State *L) {
  pstate_t *st = state_of(L);
  int status, nres;
  lua_State *co;
  luaL_checkstack(L, 8, NULL);
  co = run_task(L, st, 0, &POOL_KEY, 0, &status, &nres);
  return task_resumed(L, st, co, 0, 0, status, nres);
}

/* [-n, +(2|4), e] xcall(ended, a, b, fn, handler, ...) -> done,
 * okOrPromise, value, busy: see promise.lua. The worker gets (ended, a,
 * b, msgh, fn, ...), the message handler under the function as a
 * protected call wants it. */
static int promise_xcall(lua_State *L) {
  pstate_t *st = state_of(L);
  int status, nres;
  lua_State *co;
  luaL_checktype(L, 5, LUA_TFUNCTION);
  luaL_checkstack(L, 8, NULL);
  push_msgh(L, st, 5);
  lua_copy(L, 4, 5);
  lua_replace(L, 4);
  co = run_task(L, st, 1, &CHECKED_KEY, 0, &status, &nres);
  return task_resumed(L, st, co, 1, 0, status, nres);
}

/* [-n, +1, e] spawn(fn, ...) -> the promise of fn's first result. */
static int promise_spawn(lua_State *L) {
  pstate_t *st = state_of(L);
  int r = promise_call(L), top = lua_gettop(L);
  if (r == 2)
    return 1;
  /* true, ok, value */
  new_promise(L, st);
  REC(L, top + 1)->locked = 1;
  if (lua_toboolean(L, top - 1))
    resolve_now(L, st, top + 1, top);
  else
    settle_now(L, st, top + 1, top, 1);
  return 1;
}

/*
 * [-0, +0, e] Resumes the coroutine co, at index idx, for the turn of its
 * await. A task it runs that ends is pooled, and the promise of its result
 * settled. Returns 0, or -1 (leaving the error message on top of co) when
 * co refused to be resumed; raises what the coroutine raised.
 */
static int resume_awaiter(lua_State *L, pstate_t *st, lua_State *co, int idx) {
  int nres, status = ocap_vat_resume(L, co, 0, &nres), top, k, done;
  if (status != LUA_OK && status != LUA_YIELD) {
    if (unresumable(co, -1))
      return -1;
    lua_xmove(co, L, 1);
    return lua_error(L);
  }
  if (status == LUA_OK && is_parked(st, co)) {
    /* A leg that parked ended: its method settled its result (call_ran),
     * and the worker is pooled as an ended leg. */
    lua_pop(co, nres);
    set_tag(st, co, LEG);
    pool_push(L, st, 1, co, idx);
    return 0;
  }
  done = task_done(co, status, nres);
  if (!done) {
    lua_pop(co, nres);
    return 0;
  }
  /* The worker's task ended after awaiting: the worker goes back to its
   * pool, and the promise of the task's result is settled. */
  top = lua_gettop(L);
  luaL_checkstack(L, 6, NULL);
  take_outcome(L, co, done);
  k = worker_pool(st, co);
  if (k >= 0)
    pool_push(L, st, k, co, idx);
  if (tracked_get(L, idx) == LUA_TUSERDATA) {
    lua_pushnil(L);
    tracked_set(L, idx, top + 4);
    if (lua_toboolean(L, top + 1))
      resolve_now(L, st, top + 3, top + 2);
    else
      settle_now(L, st, top + 3, top + 2, 1);
  }
  lua_settop(L, top);
  return 0;
}

/* [-1, +0, e] resumeJob(co): the turn of an await. A coroutine that is not
 * suspended is being resumed by someone other than the await it is in;
 * await checks its promise, so skipping it is safe. */
static int promise_resume_job(lua_State *L) {
  lua_State *co;
  lua_settop(L, 1);
  co = lua_tothread(L, 1);
  if (!co_suspended(L, co))
    return 0;
  if (resume_awaiter(L, state_of(L), co, 1) < 0) {
    lua_xmove(co, L, 1);
    return lua_error(L);
  }
  return 0;
}

/* [-3, +0, e] settleAndResume(p, ok, v): see promise.lua. */
static int promise_settle_and_resume(lua_State *L) {
  pstate_t *st = state_of(L);
  lua_State *co;
  int idx;
  if (!take_awaiter(L, st))
    return 0;
  idx = lua_gettop(L);
  co = lua_tothread(L, idx);
  if (co == NULL)
    return luaL_error(L, "ocap.promise: a promise's reaction slots were overwritten");
  /* resumeJob, inline: the task usually awaits again. A coroutine that is
   * not suspended is skipped, as resumeJob skips it. */
  if (resume_awaiter(L, st, co, idx) < 0)
    lua_pop(co, 1);
  return 0;
}

/* ---- liveslots' dispatchers ----
 *
 * What the kernel calls for a delivery it decoded itself (ldeliver.c),
 * as C closures over the queue (upvalues 1 and 2, like every function
 * here) and what liveslots hands over: a delivery's common case runs no
 * Lua function of liveslots', and its other cases go to the Lua function
 * given for them with the same arguments.
 */

/* The further upvalues of dispatchCall. */
enum { DC_EXPORTS = 3, DC_METHOD, DC_MSGH, DC_ENDED, DC_HANDLER, DC_RESOLVE, DC_SLOW, DC_AFTER };

/* And of dispatchSettle. */
enum { DS_PENDING = 3, DS_TRACK };

/* [-0, +1, m] Pushes dispatchCall's message handler, made on first use. */
static void push_call_msgh(lua_State *L, pstate_t *st) {
  if (lua_type(L, lua_upvalueindex(DC_MSGH)) == LUA_TNIL) {
    push_msgh(L, st, lua_upvalueindex(DC_HANDLER));
    lua_copy(L, -1, lua_upvalueindex(DC_MSGH));
  } else {
    lua_pushvalue(L, lua_upvalueindex(DC_MSGH));
  }
}

/*
 * [-?, +0, e] The end of a method call_inline ran, with dispatchCall's n
 * arguments, the target, the method's function and the message handler
 * below its first result or error, as its protected call ended with
 * status. A failure becomes ended(target, method, false, reason). A
 * method that did not yield its leg settles the result as xcall's tail
 * does; one whose leg parked settles it as its task's promise would have
 * (after with a promise, which then settles).
 */
static int call_ran(lua_State *L, pstate_t *st, int n, int status) {
  int r = n + 4, ok = 1;
  if (status != LUA_OK && status != LUA_YIELD) {
    ocap_vat_pcall_failed(L, status);
    lua_pushvalue(L, lua_upvalueindex(DC_ENDED));
    lua_pushvalue(L, n + 1);
    lua_pushvalue(L, 3);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, r);
    lua_call(L, 4, 2);
    ok = lua_toboolean(L, -2);
    r = lua_gettop(L);
  }
  if (is_parked(st, L)) {
    new_promise(L, st);
    lua_pushvalue(L, lua_upvalueindex(DC_AFTER));
    lua_pushvalue(L, 2);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -4);
    lua_call(L, 3, 0);
    if (ok)
      resolve_now(L, st, lua_gettop(L), r);
    else
      settle_now(L, st, lua_gettop(L), r, 1);
    return 0;
  }
  if (ok && st->count == 0 && lua_toboolean(L, 2)) {
    lua_pushvalue(L, lua_upvalueindex(DC_RESOLVE));
    lua_pushvalue(L, 2);
    lua_pushvalue(L, r);
    lua_call(L, 2, 1);
    if (lua_toboolean(L, -1))
      return 0;
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(DC_AFTER));
  lua_pushvalue(L, 2);
  lua_pushboolean(L, 1);
  lua_pushboolean(L, ok);
  lua_pushvalue(L, r);
  lua_pushboolean(L, st->count > 0);
  lua_call(L, 5, 0);
  return 0;
}

/* [-?, +0, e] call_inline's continuation: its method yielded, or failed. */
static int call_k(lua_State *L, int status, lua_KContext ctx) {
  return call_ran(L, state_of(L), (int)ctx, status);
}

/*
 * [-0, +0, e] dispatchCall's common case in a leg, with its n arguments,
 * the target at n + 1 and the method's function at n + 2: runs the method
 * protected in the leg itself, as xcall's worker would have.
 */
static int call_inline(lua_State *L, pstate_t *st, int n) {
  int i;
  push_call_msgh(L, st);
  lua_pushvalue(L, n + 2);
  lua_pushvalue(L, n + 1);
  for (i = 4; i <= n; i++)
    lua_pushvalue(L, i);
  ocap_vat_charge(L, OCAP_VAT_PCALL_COST);
  return call_ran(L, st, n, lua_pcallk(L, n - 2, 1, n + 3, n, call_k));
}

/*
 * [-n, +0, e] dispatchCall(targetVref, resultVpid, method, ...): when
 * targetVref is an export and method (not bootstrap) a method of its exo,
 * runs it as xcall(ended, target, method, fn, handler, target, ...) and
 * resolves resultVpid with its result through resolveValue when it
 * returned plain data without awaiting and queued no turn; what remains
 * goes to after(resultVpid, done, ok, r, busy). Any other delivery goes to
 * slow(targetVref, resultVpid, method, ...) as is.
 */
static int dispatch_call(lua_State *L) {
  int n = lua_gettop(L), target = n + 1, fn = n + 2, r, i, status, nres;
  pstate_t *st = state_of(L);
  lua_State *co;
  luaL_checkstack(L, n + 12, NULL);
  if (n < 3)
    goto slow;
  lua_pushvalue(L, 1);
  if (!lua_toboolean(L, (lua_rawget(L, lua_upvalueindex(DC_EXPORTS)), -1)))
    goto slow;
  if (lua_type(L, 3) == LUA_TSTRING && strcmp(lua_tostring(L, 3), "bootstrap") == 0)
    goto slow;
  lua_pushvalue(L, lua_upvalueindex(DC_METHOD));
  lua_pushvalue(L, target);
  lua_pushvalue(L, 3);
  lua_call(L, 2, 1);
  if (lua_type(L, fn) != LUA_TFUNCTION)
    goto slow;
  if (lua_isyieldable(L))
    return call_inline(L, st, n);
  /* xcall(ended, target, method, fn, handler, target, ...), inline: the
   * worker gets (ended, target, method, msgh, fn, target, ...). */
  lua_pushvalue(L, lua_upvalueindex(DC_ENDED));
  lua_pushvalue(L, target);
  lua_pushvalue(L, 3);
  push_call_msgh(L, st);
  lua_pushvalue(L, fn);
  lua_pushvalue(L, target);
  for (i = 4; i <= n; i++)
    lua_pushvalue(L, i);
  co = run_task(L, st, 1, &CHECKED_KEY, fn, &status, &nres);
  if (task_resumed(L, st, co, 1, fn, status, nres) == 2)
    lua_settop(L, fn + 5); /* false, promise, nil, nil, as xcall's four */
  r = fn + 2;
  /* done, ok, value, busy at r to r + 3 */
  if (lua_toboolean(L, r) && lua_toboolean(L, r + 1) && !lua_toboolean(L, r + 3) &&
      lua_toboolean(L, 2)) {
    lua_pushvalue(L, lua_upvalueindex(DC_RESOLVE));
    lua_pushvalue(L, 2);
    lua_pushvalue(L, r + 2);
    lua_call(L, 2, 1);
    if (lua_toboolean(L, -1))
      return 0;
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(DC_AFTER));
  lua_insert(L, r);
  lua_pushvalue(L, 2);
  lua_insert(L, r + 1);
  lua_call(L, 5, 0);
  return 0;
slow:
  lua_settop(L, n);
  lua_pushvalue(L, lua_upvalueindex(DC_SLOW));
  lua_insert(L, 1);
  lua_call(L, n, 0);
  return 0;
}

/*
 * [-3, +0, e] dispatchSettle(vpid, rejected, value): takes the promise of
 * vpid out of pending (track(vpid) makes it when pending has none) and
 * settles it as settleAndResume does.
 */
static int dispatch_settle(lua_State *L) {
  lua_settop(L, 3);
  lua_pushvalue(L, 1);
  if (!lua_toboolean(L, (lua_rawget(L, lua_upvalueindex(DS_PENDING)), -1))) {
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(DS_TRACK));
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
  }
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  lua_rawset(L, lua_upvalueindex(DS_PENDING));
  /* (p, ok, value) for settleAndResume */
  lua_replace(L, 1);
  lua_pushboolean(L, !lua_toboolean(L, 2));
  lua_replace(L, 2);
  return promise_settle_and_resume(L);
}

/*
 * [-10, +2, e] dispatchers(exports, method, xcall, ended, handler,
 * resolveValue, slowCall, after, pending, track) -> dispatchCall,
 * dispatchSettle, as above: liveslots' delivery functions for a vat, over
 * its own tables and functions. xcall is this module's, which
 * dispatchCall runs inline (not through a call of it), so it is only
 * checked.
 */
static int promise_dispatchers(lua_State *L) {
  static const int types[] = {LUA_TTABLE,    LUA_TFUNCTION, LUA_TFUNCTION, LUA_TFUNCTION,
                              LUA_TFUNCTION, LUA_TFUNCTION, LUA_TFUNCTION, LUA_TFUNCTION,
                              LUA_TTABLE,    LUA_TFUNCTION};
  int i;
  for (i = 0; i < 10; i++)
    luaL_checktype(L, i + 1, types[i]);
  lua_settop(L, 10);
  lua_pushvalue(L, STATE);
  lua_pushvalue(L, PROMISE_MT);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushnil(L); /* the message handler, made on first use (push_msgh) */
  for (i = 4; i <= 8; i++)
    lua_pushvalue(L, i);
  lua_pushcclosure(L, dispatch_call, DC_AFTER);
  lua_pushvalue(L, STATE);
  lua_pushvalue(L, PROMISE_MT);
  lua_pushvalue(L, 9);
  lua_pushvalue(L, 10);
  lua_pushcclosure(L, dispatch_settle, DS_TRACK);
  return 2;
}

/* [-0, +1] isSettled() for the main driver; upvalue 1 is the promise. */
static int main_is_settled(lua_State *L) {
  lua_pushboolean(L, REC(L, lua_upvalueindex(1))->state != PENDING);
  return 1;
}

/* [-0, +1, e] await on the main thread, of the promise at 1: runs the
 * main driver until it settles. */
static int main_await(lua_State *L, pstate_t *st) {
  lua_Integer s;
  REC(L, 1)->handled = 1;
  if (REC(L, 1)->state == PENDING) {
    if (lua_getiuservalue(L, STATE, UV_DRIVER) != LUA_TNIL) {
      lua_pushvalue(L, 1);
      lua_pushcclosure(L, main_is_settled, 1);
      lua_call(L, 1, 0);
    } else {
      lua_pop(L, 1);
      while (REC(L, 1)->state == PENDING && st->count > 0) {
        lua_getiuservalue(L, STATE, UV_DRAIN);
        lua_call(L, 0, 0);
      }
    }
  }
  s = REC(L, 1)->state;
  lua_getiuservalue(L, 1, V);
  if (s == FULFILLED)
    return 1;
  if (s != REJECTED)
    lua_pushstring(L, IDLE_MESSAGE);
  return lua_error(L);
}

static int await_k(lua_State *L, int status, lua_KContext ctx);

/* [-0, +1, e] The rest of an await in a task, on the promise at 1: yields
 * until it settles, then returns its value or raises its reason. */
static int await_rest(lua_State *L) {
  lua_Integer s;
  lua_settop(L, 1);
  s = REC(L, 1)->state;
  if (s == PENDING) {
    lua_pushlightuserdata(L, (void *)&AWAITING);
    return lua_yieldk(L, 1, 0, await_k);
  }
  lua_getiuservalue(L, 1, V);
  if (s == FULFILLED)
    return 1;
  return lua_error(L);
}

/* [-?, +1, e] await resumed. */
static int await_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return await_rest(L);
}

/* [-1, +1, e] await(p): see promise.lua. */
static int promise_await(lua_State *L) {
  pstate_t *st = state_of(L);
  prec_t *r;
  int k;
  lua_settop(L, 1);
  if (!is_promise(L, 1))
    return 1;
  if (lua_pushthread(L)) {
    lua_pop(L, 1);
    return main_await(L, st);
  }
  /* The thread, at 2, is what the await reaction resumes. */
  k = worker_pool(st, L);
  if (k < 0) {
    lua_pushstring(L, NOT_OCAP_MESSAGE);
    return lua_error(L);
  }
  /* A leg that parks is held only by what it awaits from now on, as a
   * task that awaits is (task_resumed). */
  if (k == 1)
    pool_forget(L, st, 1);
  /* subscribe's common case, inline: a pending promise with no reaction
   * yet takes the await as its first, written first slot last. */
  r = REC(L, 1);
  if (r->state == PENDING && r->first == R_NONE) {
    r->handled = 1;
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, 1, RB);
    r->first = R_AWAIT;
    lua_pushlightuserdata(L, (void *)&AWAITING);
    return lua_yieldk(L, 1, 0, await_k);
  }
  lua_settop(L, 2);
  lua_pushlightuserdata(L, (void *)&AWAIT);
  lua_pushboolean(L, 0);
  subscribe(L, st, 1, 3, 2, 4);
  lua_settop(L, 1);
  lua_pushlightuserdata(L, (void *)&AWAITING);
  return lua_yieldk(L, 1, 0, await_k);
}

/* [-1, +0] setMainDriver(fn?): see promise.lua. */
static int promise_set_main_driver(lua_State *L) {
  lua_settop(L, 1);
  lua_setiuservalue(L, STATE, UV_DRIVER);
  return 0;
}

/* ---- methods ---- */

/* [-0, +1, e] p:next(onFulfilled?, onRejected?) -> derived promise. A
 * handler that is nil or false passes the value through. */
static int method_next(lua_State *L) {
  check_promise(L, 1);
  lua_settop(L, 3);
  if (!lua_toboolean(L, 2)) {
    lua_pushboolean(L, 0);
    lua_replace(L, 2);
  }
  if (!lua_toboolean(L, 3)) {
    lua_pushboolean(L, 0);
    lua_replace(L, 3);
  }
  new_promise(L, state_of(L));
  subscribe(L, state_of(L), 1, 4, 2, 3);
  return 1;
}

/* [-0, +1, e] p:catch(onRejected) -> derived promise. */
static int method_catch(lua_State *L) {
  check_promise(L, 1);
  lua_settop(L, 2);
  lua_pushboolean(L, 0);
  lua_insert(L, 2);
  return method_next(L);
}

/* [-2, +1, e] The methods table's __index: an integer key reads as nil
 * (the slots are read through the module's functions), any other key
 * raises the hint. */
static int methods_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TNUMBER)
    return 0;
  return luaL_error(L, "cannot read field '%s' of a promise: %s", luaL_tolstring(L, 2, NULL), HINT);
}

static int promise_newindex(lua_State *L);

/*
 * [-0, +0, v] Raises unless argument 1 is a promise record of some queue,
 * for the metamethods, which have no upvalue (a closure would cost every
 * vat its bytes) and which vat code can call on any value: a userdata
 * whose metatable's __newindex is promise_newindex is one, since vat code
 * cannot set a userdata's metatable.
 */
static void check_any_record(lua_State *L) {
  int ok = 0;
  if (lua_type(L, 1) == LUA_TUSERDATA && lua_getmetatable(L, 1)) {
    lua_pushliteral(L, "__newindex");
    ok = lua_rawget(L, -2) == LUA_TFUNCTION && lua_tocfunction(L, -1) == promise_newindex;
    lua_pop(L, 2);
  }
  if (!ok)
    luaL_typeerror(L, 1, "promise");
}

/* [-3, +0, e] __newindex: an integer key from 1 to NSLOTS writes that
 * slot of the record, as a raw write of the table a promise once was did
 * (the core checks what it reads back); any other key raises. */
static int promise_newindex(lua_State *L) {
  lua_Integer k = lua_type(L, 2) == LUA_TNUMBER ? lua_tointeger(L, 2) : 0;
  prec_t *r;
  check_any_record(L);
  if (k < 1 || k > NSLOTS)
    return luaL_error(L, "cannot modify a promise");
  r = REC(L, 1);
  lua_settop(L, 3);
  switch (k) {
  case S:
    r->state = lua_tointeger(L, 3);
    return 0;
  case H:
    r->handled = (unsigned char)lua_toboolean(L, 3);
    return 0;
  case LK:
    r->locked = (unsigned char)lua_toboolean(L, 3);
    return 0;
  case RA:
    r->first = lua_toboolean(L, 3) ? R_SLOTS : R_NONE;
    break;
  case RX:
    r->more = (unsigned char)lua_toboolean(L, 3);
    break;
  default:
    break;
  }
  lua_setiuservalue(L, 1, (int)k);
  return 0;
}

/* [-0, +1] __tostring: the state and the hint. */
static int promise_tostring(lua_State *L) {
  static const char *const names[] = {"pending", "fulfilled", "rejected"};
  lua_Integer s;
  check_any_record(L);
  s = REC(L, 1)->state;
  lua_pushfstring(L, "Promise <%s> (%s)", s >= PENDING && s <= REJECTED ? names[s] : "?", HINT);
  return 1;
}

/* The metamethods of a promise used as the value it stands for. */
#define MISUSE(fn, what)                                                                           \
  static int fn(lua_State *L) {                                                                    \
    return luaL_error(L, "cannot " what " a promise: %s", HINT);                                   \
  }
MISUSE(misuse_call, "call")
MISUSE(misuse_concat, "concatenate")
MISUSE(misuse_compare, "compare")
MISUSE(misuse_len, "take the length of")
MISUSE(misuse_arith, "do arithmetic on")

static const luaL_Reg promise_meta[] = {
    {"__call", misuse_call},
    {"__concat", misuse_concat},
    {"__lt", misuse_compare},
    {"__le", misuse_compare},
    {"__len", misuse_len},
    {"__add", misuse_arith},
    {"__sub", misuse_arith},
    {"__mul", misuse_arith},
    {"__div", misuse_arith},
    {"__mod", misuse_arith},
    {"__pow", misuse_arith},
    {"__unm", misuse_arith},
    {"__idiv", misuse_arith},
    {"__band", misuse_arith},
    {"__bor", misuse_arith},
    {"__bxor", misuse_arith},
    {"__shl", misuse_arith},
    {"__shr", misuse_arith},
    {"__bnot", misuse_arith},
    {"__tostring", promise_tostring},
    {"__newindex", promise_newindex},
    {NULL, NULL},
};

static const luaL_Reg method_funcs[] = {
    {"next", method_next},
    {"catch", method_catch},
    {NULL, NULL},
};

static const luaL_Reg module_funcs[] = {
    {"makePromise", promise_make},
    {"track", promise_track},
    {"trackedKey", promise_tracked_key},
    {"isPromise", promise_is},
    {"resolvePromise", promise_resolve_promise},
    {"rejectPromise", promise_reject_promise},
    {"settled", promise_settled},
    {"resolve", promise_resolve},
    {"reject", promise_reject},
    {"makePromiseKit", promise_kit},
    {"onSettle", promise_on_settle},
    {"state", promise_state},
    {"drain", promise_drain},
    {"hasTurns", promise_has_turns},
    {"setUnhandledRejectionHandler", promise_set_handler},
    {"await", promise_await},
    {"call", promise_call},
    {"xcall", promise_xcall},
    {"spawn", promise_spawn},
    {"settleAndResume", promise_settle_and_resume},
    {"setMainDriver", promise_set_main_driver},
    {"dispatchers", promise_dispatchers},
    {NULL, NULL},
};

static const luaL_Reg internal_funcs[] = {
    {"fulfill", promise_fulfill},
    {"rejectNow", promise_reject_now},
    {"configure", promise_configure},
    {NULL, NULL},
};

/* [-0, +0, m] Registers the functions l into the table at t as closures
 * over the state at ud and the metatable at meta. */
static void set_funcs(lua_State *L, int t, int ud, int meta, const luaL_Reg *l) {
  lua_pushvalue(L, t);
  lua_pushvalue(L, ud);
  lua_pushvalue(L, meta);
  luaL_setfuncs(L, l, 2);
  lua_pop(L, 1);
}

/*
 * [-0, +1, m] new() -> a module table over a new queue: the public
 * functions and `_internal`, which promise.lua takes and removes (the
 * functions that ignore a promise's "already resolved" flag, the await
 * marker, what getmetatable answers for a promise, and its methods
 * table). Each load of promise.lua makes its own, as each load of the Lua
 * version had its own queue.
 */
static int promise_new(lua_State *L) {
  pstate_t *st;
  int mod, ud, meta, methods, internal;
  lua_settop(L, 0);
  luaL_checkstack(L, 10, NULL);
  lua_createtable(L, 0, 24);
  mod = lua_gettop(L);
  st = lua_newuserdatauv(L, sizeof *st, UV_COUNT);
  ud = lua_gettop(L);
  st->head = st->tail = 1;
  st->count = st->unhandled = 0;
  st->cap = RING_TURNS;
  st->registered = 0;
  lua_createtable(L, RING_TURNS * 4, 0);
  lua_setiuservalue(L, ud, UV_RING);
  lua_createtable(L, 0, 0);
  lua_setiuservalue(L, ud, UV_UNHANDLED);
  memset(st->pool, 0, sizeof st->pool);
  st->msgh_of = NULL;
  /* The table of tasks' promises is weak: a worker that awaits a promise
   * nothing settles is garbage, and so is its task. */
  lua_createtable(L, 0, 0);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, ud, UV_TRACKED);
  lua_createtable(L, 0, 0);
  lua_setiuservalue(L, ud, UV_POOL);
  lua_createtable(L, 0, 0);
  lua_setiuservalue(L, ud, UV_CHECKED_POOL);
  /* Workers are told by their extra space (see tasks): a vat's main
   * thread's, which every new thread copies, is made to hold no worker's
   * tag. A host's belongs to the host (the Lua manual leaves it to the
   * application), and its bytes match a tag only by a chance of 2^-64. */
  if (IN_VAT(L)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    memset(lua_getextraspace(lua_tothread(L, -1)), 0, LUA_EXTRASPACE);
    lua_pop(L, 1);
  }
  lua_createtable(L, 0, 24);
  meta = lua_gettop(L);
  lua_createtable(L, 0, 4);
  methods = lua_gettop(L);
  lua_createtable(L, 0, 10);
  internal = lua_gettop(L);

  set_funcs(L, methods, ud, meta, method_funcs);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, methods_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, methods);

  lua_pushvalue(L, meta);
  luaL_setfuncs(L, promise_meta, 0);
  lua_pop(L, 1);
  lua_pushvalue(L, methods);
  lua_setfield(L, meta, "__index");
  lua_pushliteral(L, "ocap.Promise");
  lua_setfield(L, meta, "__name");
  /* getmetatable(p) answers the queue's state, not the metatable: vat
   * code that could write the metatable would give every promise made
   * after it a field of its choosing, __gc among them, and Lua runs
   * finalizers with the instruction meter off (vat.c refuses __gc for
   * that). The state is a userdata per queue, which Lua code can neither
   * change nor make, so it still tells this queue's promises apart. */
  lua_pushvalue(L, ud);
  lua_setfield(L, meta, "__metatable");

  set_funcs(L, mod, ud, meta, module_funcs);
  /* p:await is the module's await itself. */
  lua_getfield(L, mod, "await");
  lua_setfield(L, methods, "await");
  {
    static const struct {
      int uv;
      lua_CFunction f;
    } own[] = {
        {UV_RESUME, promise_resume_job},
        {UV_WORKER, worker},
        {UV_CHECKED_WORKER, checked_worker},
        {UV_DRAIN, promise_drain},
    };
    size_t i;
    for (i = 0; i < sizeof own / sizeof *own; i++) {
      lua_pushvalue(L, ud);
      lua_pushvalue(L, meta);
      lua_pushcclosure(L, own[i].f, 2);
      lua_setiuservalue(L, ud, own[i].uv);
    }
  }
  set_funcs(L, internal, ud, meta, internal_funcs);
  lua_pushvalue(L, ud);
  lua_setfield(L, internal, "Promise");
  lua_pushvalue(L, methods);
  lua_setfield(L, internal, "methods");
  lua_pushvalue(L, internal);
  lua_setfield(L, mod, "_internal");
  lua_settop(L, mod);
  return 1;
}

/*
 * [-1, +0, m] dropIdleWorkers(M): lets the collector have the idle workers
 * of the module table M's pools, and their mirrors. A vat's start leaves
 * the worker of buildRootObject's task pooled, over a kilobyte that an
 * idle vat would keep for nothing (its deliveries run in xcall's pool);
 * the next task makes a worker as usual. Workers taken from a pool are
 * anchored by whoever runs them, so no running one loses its holder.
 * Anything but a module of this core is ignored.
 */
static int promise_drop_idle_workers(lua_State *L) {
  pstate_t *st;
  int k;
  lua_settop(L, 1);
  if (lua_type(L, 1) != LUA_TTABLE)
    return 0;
  lua_getfield(L, 1, "spawn");
  if (lua_tocfunction(L, -1) != promise_spawn || lua_getupvalue(L, -1, 1) == NULL)
    return 0;
  st = lua_touserdata(L, -1);
  for (k = 0; k < 2; k++) {
    lua_createtable(L, 0, 0);
    lua_setiuservalue(L, -2, UV_POOL + k);
    lua_pushnil(L);
    lua_setiuservalue(L, -2, UV_POOL_W + k);
    memset(&st->pool[k], 0, sizeof st->pool[k]);
  }
  return 0;
}

/* [-0, +1, m] See lpromise.h: the module is { new = promise_new,
 * dropIdleWorkers = promise_drop_idle_workers }. */
int luaopen_ocap_promise_core(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, promise_new);
  lua_setfield(L, -2, "new");
  lua_pushcfunction(L, promise_drop_idle_workers);
  lua_setfield(L, -2, "dropIdleWorkers");
  return 1;
}
