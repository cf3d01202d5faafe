/*
 * lruntime.c -- the small C pieces of ocap.api and ocap.vatboot that a vat
 * keeps after boot: the ocap table's fields loaded on first touch, the
 * ocap.marshal of a context, and trampolines into Lua code that loads
 * only when first called.
 *
 * A Lua function a vat keeps costs it its prototype (prototypes cannot be
 * shared between Lua states); these C closures cost it 32 bytes and 16 per
 * upvalue. Each behaves as the Lua it replaces did.
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsmallcaps.h"

/* ---- trampolines ---- */

/* A trampoline's upvalues. */
enum { T_REQUIRE = 1, T_MODULE, T_NAME, T_CONTEXT };

/* [-n, +r, e] Calls require(module)[name](context, ...) and returns all it
 * returns. */
static int trampoline(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(T_REQUIRE));
  lua_pushvalue(L, lua_upvalueindex(T_MODULE));
  lua_call(L, 1, 1);
  lua_pushvalue(L, lua_upvalueindex(T_NAME));
  lua_gettable(L, -2);
  lua_remove(L, -2);
  lua_pushvalue(L, lua_upvalueindex(T_CONTEXT));
  lua_rotate(L, 1, 2);
  lua_call(L, n + 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* lazy(require, module, name, context) -> f  [-4, +1, e]
 * f(...) is require(module)[name](context, ...): code a vat seldom runs
 * stays out of it until it first does. */
static int r_lazy(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TSTRING);
  luaL_checktype(L, 3, LUA_TSTRING);
  lua_settop(L, 4);
  lua_pushcclosure(L, trampoline, 4);
  return 1;
}

/* ---- tables that fill themselves ---- */

/* [-2, +(1|2), e] next(t, k), as the sandbox's next does, for a filled
 * table's __pairs: the vat's global next is the vat's to replace. */
static int raw_next(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1))
    return 2;
  lua_pushnil(L);
  return 1;
}

/*
 * __index(t, k), __newindex(t, k, v) and __pairs(t) of a table that
 * fills itself  [-(1|2|3), +(0|1|3), e]: drops t's metatable and fills
 * t with require(module)[name](context, t) (the trampoline's upvalues),
 * then answers rawget(t, k), does rawset(t, k, v), or answers next, t,
 * nil. Until then t is an empty table whose protected metatable hides
 * this function; from then on it is the plain table that call made of
 * it. A write fills it first, so that the fill cannot undo the write.
 * The fill runs only the runtime's code, which raises only when the vat
 * runs out of memory or instructions, and that ends the vat.
 */
static int filling(lua_State *L) {
  int n = lua_gettop(L); /* 1 for __pairs, 2 for __index, 3 for __newindex */
  lua_settop(L, 3);
  luaL_checktype(L, 1, LUA_TTABLE);
  /* First, or the fill's own writes would come back here. */
  lua_pushnil(L);
  lua_setmetatable(L, 1);
  lua_pushvalue(L, lua_upvalueindex(T_REQUIRE));
  lua_pushvalue(L, lua_upvalueindex(T_MODULE));
  lua_call(L, 1, 1);
  lua_pushvalue(L, lua_upvalueindex(T_NAME));
  lua_gettable(L, -2);
  lua_pushvalue(L, lua_upvalueindex(T_CONTEXT));
  lua_pushvalue(L, 1);
  lua_call(L, 2, 0);
  lua_settop(L, 3);
  if (n == 1) {
    lua_pushcfunction(L, raw_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
  }
  if (n == 3) {
    lua_rawset(L, 1);
    return 0;
  }
  lua_settop(L, 2);
  lua_rawget(L, 1);
  return 1;
}

/* [-4, +1, e] Pops require, module, name and context and pushes an empty
 * table that fills itself with require(module)[name](context, t) on its
 * first read, write or pairs (see filling). */
static void push_filling(lua_State *L) {
  lua_pushcclosure(L, filling, 4);
  lua_newtable(L);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__newindex");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__pairs");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_remove(L, -2);
}

/* ---- the ocap table's fields on first touch ---- */

/*
 * [-0, +0, e] Checks the table at index 1, which an __index below fills in
 * with a raw write: vatPowers' and the ocap table's metatables are not
 * locked, so vat code can call their __index with anything. Only a table
 * it could write itself will do: a raw access to anything else is
 * undefined behaviour, and a raw write into an exo, a presence, a store
 * or a hardened table would go around its __newindex (as vat.c's rawset
 * refuses to).
 */
static void check_filled(lua_State *L, const char *what) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    luaL_error(L, "%s: cannot modify a protected object", what);
}

/*
 * The ocap fields ocap.guards provides, and those read from ocap.pass on
 * first touch: its boxes, and `array`, which the ocap table leaves out so
 * that its other sixteen fields fit a hash part of 16 slots (a 17th field
 * doubled it to 32, 384 bytes more in every vat).
 */
static const char *const guard_fields[] = {"M", "defineExoClass", "defineExoClassKit", NULL};
static const char *const box_fields[] = {"symbol", "bytes", "bigint", "makeTagged", "array", NULL};

/* Upvalues of the ocap table's __index. */
enum { F_PASS = 1, F_REQUIRE, F_PCALL };

/* [-0, +0] Whether the value at idx is a string among names. */
static int named(lua_State *L, int idx, const char *const *names) {
  if (lua_type(L, idx) != LUA_TSTRING)
    return 0;
  const char *k = lua_tostring(L, idx);
  for (; *names != NULL; names++)
    if (strcmp(k, *names) == 0)
      return 1;
  return 0;
}

/* __index of an ocap table  [-2, +1, e]: a pass field is ocap.pass's, kept
 * once read; a guard field loads ocap.guards (nil when it cannot) and
 * fills in every guard field the table lacks; nil for anything else. */
static int ocap_index(lua_State *L) {
  lua_settop(L, 2);
  int box = named(L, 2, box_fields);
  if (!box && !named(L, 2, guard_fields)) {
    lua_pushnil(L);
    return 1;
  }
  check_filled(L, "ocap");
  if (box) {
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(F_PASS));
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(F_PCALL));
  lua_pushvalue(L, lua_upvalueindex(F_REQUIRE));
  lua_pushliteral(L, "ocap.guards");
  lua_call(L, 2, 2);
  if (!lua_toboolean(L, 3) || lua_type(L, 4) != LUA_TTABLE) {
    lua_pushnil(L);
    return 1;
  }
  for (const char *const *f = guard_fields; *f != NULL; f++) {
    lua_pushstring(L, *f);
    if (lua_rawget(L, 1) == LUA_TNIL) {
      lua_pushstring(L, *f);
      lua_getfield(L, 4, *f);
      lua_rawset(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, 1);
  return 1;
}

/* ocapFields(pass, require, pcall) -> the ocap table's metatable  [-3, +1, e] */
static int r_ocap_fields(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  lua_createtable(L, 0, 1);
  lua_insert(L, 1);
  lua_pushcclosure(L, ocap_index, 3);
  lua_setfield(L, 1, "__index");
  return 1;
}

/* ---- a context's ocap.marshal ---- */

/* Upvalues of a context marshal's functions. */
enum { C_MARSHAL = 1, C_CURRENT };

/* [-1, +r, e] Calls current().<mine>(v) when the context has a marshaller,
 * else marshal.<plain>(v), with v at index 1, and returns all it returns. */
static int through_context(lua_State *L, const char *mine, const char *plain) {
  lua_settop(L, 1);
  if (lua_toboolean(L, lua_upvalueindex(C_CURRENT))) {
    lua_pushvalue(L, lua_upvalueindex(C_CURRENT));
    lua_call(L, 0, 1);
    if (lua_toboolean(L, -1)) {
      lua_getfield(L, -1, mine);
      lua_pushvalue(L, 1);
      lua_call(L, 1, LUA_MULTRET);
      return lua_gettop(L) - 2;
    }
    lua_pop(L, 1);
  }
  lua_getfield(L, lua_upvalueindex(C_MARSHAL), plain);
  lua_pushvalue(L, 1);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - 1;
}

/* A context marshal's serialize(v)  [-1, +r, e] */
static int context_serialize(lua_State *L) {
  return through_context(L, "serialize", "serializeData");
}

/* A context marshal's unserialize(capdata)  [-1, +r, e] */
static int context_unserialize(lua_State *L) {
  return through_context(L, "unserialize", "unserializeData");
}

/* contextMarshal(marshal, current?) -> t  [-2, +1, e]
 * The marshal module, plus serialize and unserialize through the
 * context's marshaller, current() (the vat's, or the host's latest
 * kernel), so slots are vrefs in a vat and krefs on the host. */
static int r_context_marshal(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"serialize", context_serialize},
      {"unserialize", context_unserialize},
      {NULL, NULL},
  };
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  luaL_newlibtable(L, funcs);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  luaL_setfuncs(L, funcs, 2);
  /* Its metatable is protected: its __index is the marshal module itself,
   * which vat code only ever gets as a read-only view (vat.c). */
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "ocap.marshal");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  return 1;
}

/* ---- a vat's startVat ---- */

/* Upvalues of startVat. */
enum { S_LS = 1, S_CTX, S_EXPLAIN, S_NAME, S_REQUIRE, S_PCALL };

/* The module vatboot's lazy parts come from. */
#define RARE "ocap.vatboot.rare"

/* [-0, +1, e] Pushes a trampoline to ocap.vatboot.rare's function name,
 * with the vat's context, as vatboot's lazy(require, RARE, name, ctx). */
static void push_rare(lua_State *L, const char *name) {
  lua_pushvalue(L, lua_upvalueindex(S_REQUIRE));
  lua_pushliteral(L, RARE);
  lua_pushstring(L, name);
  lua_pushvalue(L, lua_upvalueindex(S_CTX));
  lua_pushcclosure(L, trampoline, 4);
}

/*
 * __index of vatPowers  [-2, +1, e]; upvalues require and the vat's
 * context. Its logger, made on first touch and kept, fills itself on its
 * own first use (ocap.vatboot.rare's fillLogger, with the logger module):
 * a vat that takes its logger at start and seldom logs loads neither
 * until it does. nil for any other key.
 */
static int powers_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (lua_type(L, 2) != LUA_TSTRING || strcmp(k, "logger") != 0) {
    lua_pushnil(L);
    return 1;
  }
  check_filled(L, "vatPowers");
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushliteral(L, RARE);
  lua_pushliteral(L, "fillLogger");
  lua_pushvalue(L, lua_upvalueindex(2));
  push_filling(L);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
}

/* [-0, +1, e] Pushes require(module)[name]. */
static void push_runtime_fn(lua_State *L, const char *module, const char *name) {
  lua_pushvalue(L, lua_upvalueindex(S_REQUIRE));
  lua_pushstring(L, module);
  lua_call(L, 1, 1);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

/* [-0, +1, e] Pushes ls[name]. */
static void push_ls(lua_State *L, const char *name) {
  lua_getfield(L, lua_upvalueindex(S_LS), name);
}

/* [-1, +1, e] Replaces the value on top with explain(value). */
static void explain_top(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(S_EXPLAIN));
  lua_insert(L, -2);
  lua_call(L, 1, 1);
}

/* [-1, +2] Returns false and the message on top (a string). */
static int start_failed(lua_State *L) {
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
}

/*
 * startVat(main, paramsBody, upgrade) -> true | false, message  [-3, +(1|2), e]
 * Loads the vat's main module, decodes its parameters (turning the
 * references the kernel put in its c-list for them into presences), runs
 * buildRootObject(vatPowers, parameters, baggage) to completion and
 * exports its result as the root object, o+0. With upgrade, every durable
 * kind the previous incarnation defined must have been prepared again.
 * Once it succeeds, the vat's state drops it and the maker of its baggage
 * shell. It was Lua: a vat kept its prototype, code and messages through
 * its start, and they were left as holes in its heap after it (1.5 KiB).
 */
static int start_vat(lua_State *L) {
  enum { MAIN = 1, PARAMS_BODY, UPGRADE, MOD, PARAMS, POWERS, BAGGAGE, ROOT };
  lua_settop(L, 3);
  /* local ok, mod = pcall(require, main) */
  lua_pushvalue(L, lua_upvalueindex(S_PCALL));
  lua_pushvalue(L, lua_upvalueindex(S_REQUIRE));
  lua_pushvalue(L, MAIN);
  lua_call(L, 2, 2);
  if (!lua_toboolean(L, -2)) {
    explain_top(L);
    luaL_tolstring(L, -1, NULL);
    return start_failed(L);
  }
  lua_remove(L, -2); /* MOD */
  if (lua_type(L, MOD) != LUA_TTABLE || lua_getfield(L, MOD, "buildRootObject") != LUA_TFUNCTION) {
    /* The runtime's string.format, behind string methods (vat.c). */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_getfield(L, -1, "__index");
    lua_getfield(L, -1, "format");
    lua_pushliteral(L, "vat %q does not return a table with buildRootObject");
    lua_pushvalue(L, lua_upvalueindex(S_NAME));
    lua_call(L, 2, 1);
    return start_failed(L);
  }
  lua_pop(L, 1);
  /* local params = marshal.unserializeData({ body = paramsBody, slots = {} }) */
  push_runtime_fn(L, "ocap.marshal", "unserializeData");
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, PARAMS_BODY);
  lua_setfield(L, -2, "body");
  lua_newtable(L);
  lua_setfield(L, -2, "slots");
  lua_call(L, 1, 1); /* PARAMS */
  /* References the kernel put in the vat's c-list for its parameters. */
  if (lua_type(L, PARAMS) == LUA_TTABLE && lua_getfield(L, PARAMS, "$ocap.refs") == LUA_TTABLE) {
    int refs = lua_gettop(L);
    lua_pushnil(L);
    lua_setfield(L, PARAMS, "$ocap.refs");
    lua_pushnil(L);
    while (lua_next(L, refs)) {
      push_ls(L, "presenceFor");
      lua_insert(L, -2);
      lua_call(L, 1, 1);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, PARAMS);
    }
  }
  lua_settop(L, PARAMS);
  /* vatPowers; its logger is made on first use. */
  lua_createtable(L, 0, 2); /* POWERS */
  push_rare(L, "exitVat");
  lua_setfield(L, POWERS, "exitVat");
  push_rare(L, "exitVatWithFailure");
  lua_setfield(L, POWERS, "exitVatWithFailure");
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, lua_upvalueindex(S_REQUIRE));
  lua_pushvalue(L, lua_upvalueindex(S_CTX));
  lua_pushcclosure(L, powers_index, 2);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, POWERS);
  push_ls(L, "baggage");
  lua_call(L, 0, 1); /* BAGGAGE */
  /* local p = promise.spawn(mod.buildRootObject, vatPowers, params, baggage) */
  push_runtime_fn(L, "ocap.promise", "spawn");
  lua_getfield(L, MOD, "buildRootObject");
  lua_pushvalue(L, POWERS);
  lua_pushvalue(L, PARAMS);
  lua_pushvalue(L, BAGGAGE);
  lua_call(L, 4, 1);
  push_runtime_fn(L, "ocap.promise", "drain");
  lua_call(L, 0, 0);
  push_runtime_fn(L, "ocap.promise", "state");
  lua_insert(L, -2);
  lua_call(L, 1, 2);
  const char *state = lua_tostring(L, -2);
  if (state != NULL && strcmp(state, "pending") == 0) {
    lua_pushliteral(L, "buildRootObject did not finish (it awaits something that never settles)");
    return start_failed(L);
  }
  if (state != NULL && strcmp(state, "rejected") == 0) {
    push_runtime_fn(L, "ocap.liveslots", "normalizeError");
    lua_insert(L, -2);
    explain_top(L);
    lua_call(L, 1, 1);
    /* reason.message or reason */
    lua_getfield(L, -1, "message");
    if (!lua_toboolean(L, -1))
      lua_pop(L, 1);
    lua_pushliteral(L, "buildRootObject failed: ");
    luaL_tolstring(L, -2, NULL);
    lua_concat(L, 2);
    return start_failed(L);
  }
  lua_replace(L, ROOT);
  lua_settop(L, ROOT);
  push_runtime_fn(L, "ocap.pass", "isRemotable");
  lua_pushvalue(L, ROOT);
  lua_call(L, 1, 1);
  if (!lua_toboolean(L, -1)) {
    lua_pushliteral(L, "buildRootObject must return a remotable (use makeDefaultExo)");
    return start_failed(L);
  }
  lua_pop(L, 1);
  if (lua_toboolean(L, UPGRADE)) {
    push_ls(L, "durable");
    lua_call(L, 0, 1);
    lua_getfield(L, -1, "unprepared");
    lua_call(L, 0, 1);
    lua_Integer n = luaL_len(L, -1);
    if (n > 0) {
      luaL_Buffer b;
      int missing = lua_gettop(L);
      luaL_buffinit(L, &b);
      luaL_addstring(
          &b, "buildRootObject did not prepare again what the previous incarnation defined: ");
      for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1)
          luaL_addstring(&b, ", ");
        lua_geti(L, missing, i);
        luaL_addvalue(&b);
      }
      luaL_addstring(&b, " (call prepareExo / prepareExoClass for each)");
      luaL_pushresult(&b);
      return start_failed(L);
    }
    lua_pop(L, 1);
  }
  push_ls(L, "exportAs");
  lua_pushvalue(L, ROOT);
  lua_pushliteral(L, "o+0");
  lua_call(L, 2, 0);
  /* The worker buildRootObject's task ran in stays pooled: an idle vat
   * need not keep it (ocap.promise.core's dropIdleWorkers). */
  push_runtime_fn(L, "ocap.promise.core", "dropIdleWorkers");
  lua_pushvalue(L, lua_upvalueindex(S_REQUIRE));
  lua_pushliteral(L, "ocap.promise");
  lua_call(L, 1, 1);
  lua_call(L, 1, 0);
  /* A vat starts once: its state can drop this function, and the maker of
   * its baggage shell (the store kit hands out baggage from now on). */
  lua_pushnil(L);
  lua_setfield(L, lua_upvalueindex(S_LS), "startVat");
  lua_pushnil(L);
  lua_setfield(L, lua_upvalueindex(S_LS), "baggage");
  lua_pushboolean(L, 1);
  return 1;
}

/* startVat(ls, ctx, explain, name, require, pcall) -> the vat's startVat
 * [-6, +1, e] (see start_vat). */
static int r_start_vat(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 5, LUA_TFUNCTION);
  luaL_checktype(L, 6, LUA_TFUNCTION);
  lua_settop(L, 6);
  lua_pushcclosure(L, start_vat, 6);
  return 1;
}

/* [-0, +0, e] Adds lazy, ocapFields, contextMarshal and startVat to the
 * table on top. */
void ocap_runtime_funcs(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"lazy", r_lazy},
      {"startVat", r_start_vat},
      {"ocapFields", r_ocap_fields},
      {"contextMarshal", r_context_marshal},
      {NULL, NULL},
  };
  luaL_setfuncs(L, funcs, 0);
}
