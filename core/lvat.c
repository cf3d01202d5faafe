/*
 * lvat.c -- a vat's record and its Lua state: the kernel's runtime modules,
 * compiled once for every vat; booting liveslots with the vat's
 * endowments; the module names a bundle may not use; and the Kernel
 * methods that create, stop and upgrade vats. A vat made here receives its
 * deliveries through ldeliver.c and acts through its syscalls
 * (lsyscall.c).
 */
#include <lualib.h>

#include "ljson.h"
#include "lkernel_int.h"
#include "lpromise.h"
#include "lsmallcaps.h"

/* The largest text the kernel compiles for its cache (preload_module). */
#define SRCCACHE_MAX_TEXT (OCAP__SRCCACHE_BYTES / 8)

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
lvat_t *ocap__make_vat_record(lkernel_t *lk, const char *id) {
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
  rec->dispatch_ref = rec->call_ref = rec->settle_ref = rec->model_ref = rec->drain_ref = LUA_NOREF;
  rec->queue = NULL;
  rec->budget = default_budget();
  rec->num = n;
  lk->vats[vat_slot(lk, n)] = rec;
  lk->nlive++;
  return rec;
}

void ocap__stop_vat(lvat_t *rec) {
  ocap__stop_timers(&rec->timers);
  ocap_vat_free(rec->vat);
  rec->vat = NULL;
  ocap__release_runtime(rec->runtime);
  rec->runtime = NULL;
  rec->dispatch_ref = rec->call_ref = rec->settle_ref = rec->model_ref = rec->drain_ref = LUA_NOREF;
  rec->queue = NULL;
  free(rec->why);
  rec->why = NULL;
  free(rec->exit_body);
  rec->exit_body = NULL;
  rec->fatal = 0;
  rec->exiting = 0;
}

/* Sets the live state of rec aside, leaving rec with none; 0 when out of
 * memory (rec is untouched then). */
static int hold_live(lvat_t *rec) {
  vheld_t *h = malloc(sizeof *h);
  if (!h)
    return 0;
  *h = (vheld_t){.vat = rec->vat,
                 .dispatch_ref = rec->dispatch_ref,
                 .call_ref = rec->call_ref,
                 .settle_ref = rec->settle_ref,
                 .model_ref = rec->model_ref,
                 .drain_ref = rec->drain_ref,
                 .queue = rec->queue,
                 .timers = rec->timers,
                 .runtime = rec->runtime,
                 .budget = rec->budget};
  rec->vat = NULL;
  rec->dispatch_ref = rec->call_ref = rec->settle_ref = rec->model_ref = rec->drain_ref = LUA_NOREF;
  rec->queue = NULL;
  memset(&rec->timers, 0, sizeof rec->timers);
  rec->runtime = NULL;
  memset(&rec->budget, 0, sizeof rec->budget);
  rec->held = h;
  return 1;
}

/* Puts the state rec holds aside back as its live state, which must have
 * been stopped (ocap__stop_vat). */
static void restore_held(lvat_t *rec) {
  vheld_t *h = rec->held;
  rec->vat = h->vat;
  rec->dispatch_ref = h->dispatch_ref;
  rec->call_ref = h->call_ref;
  rec->settle_ref = h->settle_ref;
  rec->model_ref = h->model_ref;
  rec->drain_ref = h->drain_ref;
  rec->queue = h->queue;
  rec->timers = h->timers;
  rec->runtime = h->runtime;
  rec->budget = h->budget;
  free(h);
  rec->held = NULL;
}

/* Frees the state rec holds aside, if any: its timers, heap and runtime. */
void ocap__drop_held(lvat_t *rec) {
  vheld_t *h = rec->held;
  if (!h)
    return;
  ocap__stop_timers(&h->timers);
  ocap_vat_free(h->vat);
  ocap__release_runtime(h->runtime);
  free(h);
  rec->held = NULL;
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
void ocap__release_runtime(runtime_t *rt) {
  if (!rt || --rt->refs > 0)
    return;
  for (size_t i = 0; i < rt->n; i++) {
    free((char *)rt->mods[i].name);
    free((char *)rt->mods[i].code);
  }
  free(rt);
}

/*
 * [-0, +(0|1)] Compiles the text src, under chunkname, into db (which the
 * caller frees), stripped or not. Returns 1 when done; 0 when the text did
 * not load, with the message pushed; -1 when the dump ran out of memory.
 */
static int compile_text(lua_State *L, const char *src, size_t len, const char *chunkname, int strip,
                        dumpbuf_t *db) {
  if (luaL_loadbufferx(L, src, len, chunkname, "t") != LUA_OK)
    return 0;
  int bad = lua_dump(L, dump_writer, db, strip);
  lua_pop(L, 1);
  return bad ? -1 : 1;
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
  ocap__release_runtime(lk->runtime);
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
    dumpbuf_t db = {0};
    int done = compile_text(L, src, sl, chunk, 1, &db);
    if (done == 0)
      return lua_error(L);
    int bad = done < 0;
    ocap_vat_module_t *m = &lk->runtime->mods[i];
    m->name = dupstr(name);
    m->code = db.p;
    m->len = db.len;
    lk->runtime->n = i + 1;
    if (bad || !m->name)
      return luaL_error(L, "out of memory");
    lua_pop(L, 3);
  }
  return 0;
}

/* [-0, +0] The name and text of the modules table's entry that lua_next
 * left on top of the stack, as *name and *src (length *len), when it is a
 * text under a string name; 0 for any other entry. lua_tostring would turn
 * a number key into a string in place and confuse lua_next, so only
 * string names count. */
static int module_entry(lua_State *L, const char **name, const char **src, size_t *len) {
  *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
  *src = lua_tolstring(L, -1, len);
  return *name && *src;
}

/*
 * [-0, +0, e] Gives vat the module `name` of text src for its require: as
 * the code the kernel compiled from it, which the kernel keeps for the
 * next vats of the same sources, or as the text when that did not compile.
 * Then the vat loads the text as it always did, and fails in the same way
 * at the same time, when it requires the module: a syntax error, or a
 * binary chunk, which only the text mode refuses. Code is never made from
 * anything but text, so a bundle cannot hand a vat bytecode
 * (docs/security.md). The parse the kernel does is not metered, so a
 * large text is left to the vat, whose meter pays for it.
 */
static int preload_module(lua_State *L, lkernel_t *lk, ocap_vat_t *vat, const char *name,
                          const char *src, size_t len) {
  const char *chunk = lua_pushfstring(L, "=%s", name);
  size_t codelen = 0;
  const char *code = ocap__srccache_find(&lk->srccache, chunk, src, len, &codelen);
  dumpbuf_t db = {0};
  if (!code && len > 0 && len <= SRCCACHE_MAX_TEXT) {
    int done = compile_text(L, src, len, chunk, 0, &db);
    if (done == 0)
      lua_pop(L, 1);
    if (done > 0) {
      /* Not kept when out of memory: this vat still reads it. */
      ocap__srccache_put(&lk->srccache, chunk, src, len, db.p, db.len);
      code = db.p;
      codelen = db.len;
    }
  }
  if (code)
    ocap_vat_preload_compiled(vat, name, code, codelen, len);
  else
    ocap_vat_preload(vat, name, src, len, 0);
  free(db.p);
  lua_pop(L, 1);
  return code != NULL;
}

/*
 * [-0, +0, e] Once vat has started: each module of the table at index
 * mods that it was given as code and has not required gets its text back
 * (ocap_vat_preload_text). Code, with its line info and local names, is
 * larger than the text (a 13.7 KB module makes 17.1 KB of it) and would
 * stay in an idle vat's heap for its whole life; a module required later
 * is parsed then, and metered, as it always was.
 */
static void unrequired_as_text(lua_State *L, int mods, ocap_vat_t *vat) {
  lua_pushnil(L);
  while (lua_next(L, mods)) {
    const char *name, *src;
    size_t sl;
    if (module_entry(L, &name, &src, &sl))
      ocap_vat_preload_text(vat, name, src, sl);
    lua_pop(L, 1);
  }
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
 * What ends a vat whose createVat raises in the host's state once the
 * vat's state exists (the host out of memory in a preload, say): a
 * to-be-closed value on k_create_vat's stack, armed from ocap_vat_new
 * until createVat answers. Its __close stops the vat, which raising left
 * half built (its collector stopped, still packing, no dispatch) and
 * taken for running, and gives the kernel back its host thread.
 */
typedef struct boot_guard {
  lkernel_t *lk;
  lvat_t *rec;      /* the vat while armed, else NULL */
  lua_State *saved; /* lk->L before the boot */
} boot_guard_t;

/* __close of a boot guard  [-0, +0] */
static int boot_guard_close(lua_State *L) {
  boot_guard_t *g = lua_touserdata(L, 1);
  if (g->rec) {
    g->lk->L = g->saved;
    ocap__stop_vat(g->rec);
    g->rec = NULL;
  }
  return 0;
}

/* [-0, +1, m] Pushes a boot guard, not armed, marked to be closed. */
static boot_guard_t *push_boot_guard(lua_State *L, lkernel_t *lk) {
  boot_guard_t *g = lua_newuserdatauv(L, sizeof *g, 0);
  *g = (boot_guard_t){lk, NULL, lk->L};
  if (luaL_newmetatable(L, "ocap.BootGuard")) {
    lua_pushcfunction(L, boot_guard_close);
    lua_setfield(L, -2, "__close");
  }
  lua_setmetatable(L, -2);
  lua_toclose(L, -1);
  return g;
}

/*
 * tramp(args)  [-1, +0, e]
 * Runs in the vat: boots liveslots, keeps its two dispatch functions, and
 * installs the endowments.
 */
static int vat_boot_tramp(lua_State *V) {
  const boot_args_t *a = lua_touserdata(V, 1);
  lvat_t *rec = a->rec;
  lua_settop(V, 0);
  ocap_open_json(V);
  ocap_vat_set_loaded(ocap_vat_from_state(V), "cjson");
  luaopen_ocap_smallcaps(V);
  ocap_vat_set_loaded(ocap_vat_from_state(V), "ocap.smallcaps");
  luaopen_ocap_promise_core(V);
  ocap_vat_set_loaded(ocap_vat_from_state(V), "ocap.promise.core");
  lua_getglobal(V, "require");
  lua_pushliteral(V, "ocap.vatboot");
  lua_call(V, 1, 1);
  lua_getfield(V, -1, "boot");
  /* The syscall table goes to the runtime's boot only, which keeps it in
   * closures: no table or function vat code can reach leads to it. */
  ocap__push_syscalls(V, rec,
                      list_has(a->globals, "setTimeout") || list_has(a->globals, "setInterval"));
  lua_pushstring(V, a->info);
  /* The vat's globals, which the runtime's own differ from (vat.c). */
  lua_rawgeti(V, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  /* It returns dispatch, ocap, the endowments, the two functions that
   * take the deliveries the kernel decodes (ldeliver.c), nil from an
   * older runtime, and the promise core's drain, which the kernel calls
   * after them, and only when the core has work for it. */
  lua_call(V, 3, 6);
  int endow = lua_gettop(V) - 3;
  rec->call_ref = rec->settle_ref = rec->model_ref = rec->drain_ref = LUA_NOREF;
  rec->queue = ocap_promise_queue(V, -1);
  if (rec->queue && ocap_sc_push_model(V) && lua_isfunction(V, -3) && lua_isfunction(V, -4)) {
    rec->model_ref = luaL_ref(V, LUA_REGISTRYINDEX);
    rec->drain_ref = luaL_ref(V, LUA_REGISTRYINDEX);
    rec->settle_ref = luaL_ref(V, LUA_REGISTRYINDEX);
    rec->call_ref = luaL_ref(V, LUA_REGISTRYINDEX);
  } else {
    rec->queue = NULL;
    lua_settop(V, endow);
  }
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
  if (!lk->starting || strcmp(lk->starting, id) != 0)
    refuse_in_crank(L, lk, "createVat");
  luaL_checktype(L, 3, LUA_TTABLE);
  lvat_t *rec = ocap__make_vat_record(lk, id);
  if (!rec)
    return luaL_error(L, "invalid vat id '%s'", id);
  if (rec->vat)
    return luaL_error(L, "vat %s is already running", id);
  ocap_vat_limits_t lim = {0, 0, OCAP_VAT_METER_TIME, 0};
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
  if (lk->runtime)
    lim.boot_bytes = lk->runtime->boot_bytes;
  boot_guard_t *guard = push_boot_guard(L, lk);
  if (ocap_vat_new(&lim, &rec->vat))
    return luaL_error(L, "out of memory creating vat %s", id);
  guard->rec = rec;
  /*
   * The collector rests from here to the collection after boot, which
   * restarts it: the preloads and the boot make next to no garbage it
   * could find (81 bytes of 105 KiB), and the incremental steps their
   * allocations would pay for (the preloads' copies of the modules' code
   * about 12,000 instructions a vat, the boot 28,000) would mark and sweep
   * what that collection goes over again. An allocation the memory budget
   * refuses still collects first (Lua's emergency collection ignores a
   * stop); a boot that fails ends the vat.
   */
  lua_gc(ocap_vat_state(rec->vat), LUA_GCSTOP);
  /* Until its start is over (vat.c, "Packing"). */
  ocap_vat_set_packing(rec->vat, 1);
  int compiled = 0; /* whether a module was given as code */
  lua_getfield(L, 3, "modules");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      const char *name, *src;
      size_t sl;
      if (module_entry(L, &name, &src, &sl))
        compiled |= preload_module(L, lk, rec->vat, name, src, sl);
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
    /*
     * Lua's string table doubles when it holds as many strings as it has
     * buckets and halves only below a quarter: the runtime's boot leaves
     * strings that are garbage (its main chunks' constants), and with the
     * vat's own they would cross 512 and make the table 8 KiB instead of
     * 4 for the vat's whole life. Collecting them first costs a launch
     * about 115,000 instructions (3%) and saves every idle vat 4 KiB; it
     * also gives the boot's garbage back for the start to reuse.
     */
    lua_gc(V, LUA_GCRESTART);
    lua_gc(V, LUA_GCCOLLECT, 0);
    lua_pushcfunction(V, vat_start_tramp);
    lua_pushlightuserdata(V, &args);
    st = ocap_vat_pcall(rec->vat, 1, 2);
    if (st == OCAP_VAT_OK && !lua_toboolean(V, -2) && !rec->fatal) {
      lua_pushnil(L);
      lua_pushstring(L, lua_tostring(V, -1));
      lua_pop(V, 2);
      guard->rec = NULL;
      ocap__stop_vat(rec);
      lk->L = saved;
      return 2;
    }
    if (st == OCAP_VAT_OK) {
      lua_pop(V, 2);
      if (compiled && ocap_vat_preloaded_code(rec->vat)) {
        lua_getfield(L, 3, "modules");
        unrequired_as_text(L, lua_gettop(L), rec->vat);
        lua_pop(L, 1);
      }
      /*
       * Deliveries make many short-lived tables: the generational collector
       * handles that pattern with less work than the incremental one. The
       * switch collects in full (atomically), so what booting dropped (the
       * runtime's main chunks, buildRootObject's garbage) does not grow old
       * and stay until a major collection; it costs about 15 us, a launch
       * 1.5 ms. The vat boots with the incremental collector because only
       * that one shrinks a thread's stack: liveslots' boot takes the main
       * thread's to 160 slots (2.6 KiB), which its collection after boot
       * gives back, where a generational one would keep it for the vat's
       * whole life.
       */
      lua_gc(V, LUA_GCGEN, 0, 0);
      ocap_vat_set_packing(rec->vat, 0);
      /* The next vat's first chunk (vat.c, "Chunks"). */
      if (rec->runtime)
        rec->runtime->boot_bytes = ocap_vat_carved(rec->vat);
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
    guard->rec = NULL;
    ocap__stop_vat(rec);
    return 3;
  }
  guard->rec = NULL;
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
  refuse_in_crank(L, lk, "stopVat");
  if (rec)
    ocap__stop_vat(rec);
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
  if (ocap__deliver_vat(lk, rec, &d, &fatal, &why) == 0) {
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
  refuse_in_crank(L, lk, "holdVat");
  if (rec && rec->held)
    return luaL_error(L, "vat %s already holds a previous incarnation", id);
  int held = rec && rec->vat;
  if (held && !hold_live(rec))
    return luaL_error(L, "not enough memory");
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
  refuse_in_crank(L, lk, "releaseHeld");
  if (!rec)
    return 0;
  if (restore) {
    ocap__stop_vat(rec);
    if (rec->held)
      restore_held(rec);
  } else {
    ocap__drop_held(rec);
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

/* The methods of the Kernel userdata that build, stop and upgrade vats;
 * luaopen_ocap_core adds them to the ones of lkernel.c. */
const luaL_Reg ocap__vat_methods[] = {
    /* The runtime every new vat reads. */
    {"setRuntime", k_set_runtime},
    /* A vat's life (start, stop, the three steps of an upgrade) and state. */
    {"createVat", k_create_vat},
    {"stopVat", k_stop_vat},
    {"deliverStop", k_deliver_stop},
    {"holdVat", k_hold_vat},
    {"releaseHeld", k_release_held},
    {"vatLive", k_vat_live},
    {"vatMemory", k_vat_memory},
    {NULL, NULL},
};
