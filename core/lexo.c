/*
 * lexo.c -- ocap.exo in C: hardened remotable objects whose methods take
 * the receiver first; see lua/ocap/exo.lua for the module's API.
 *
 * Every vat loads ocap.exo at boot; as Lua it kept its prototypes in each
 * vat, and every exo kept two closures of its own for its metatable.
 *
 * Conventions:
 *  1. Each function behaves as the Lua it replaces did: the same results
 *     and errors, raised at the caller's position. Messages that quote
 *     a name go through the runtime's string.format, which is metered.
 *  2. Upvalue 1 of every function is the module's state (enum below).
 *  3. An exo's metatable holds its interface at index 1, where no code
 *     but these functions can read it (its __metatable hides the table);
 *     its __newindex and __tostring are shared by every exo.
 */
#include <lauxlib.h>
#include <lua.h>

#include "lsmallcaps.h"
#include "vat.h"

/* Built alone as a module for a host state, there is no vat to charge. */
#ifdef OCAP_SMALLCAPS_STANDALONE
#define ocap_vat_charge(L, cost) ((void)(L), (void)(cost))
#endif

/* What makeDefaultExo charges a vat per method it copies, about what the
 * Lua loop it replaces cost. */
#define METHOD_COST 8

/* The interface of an exo is "Alleged: <name>". */
#define ALLEGED "Alleged: "

/* The module's state, upvalue 1 of its functions. */
enum {
  S_METHODS_OF = 1, /* exo -> its method table (weak keys) */
  S_REGISTER,       /* pass.registerRemotable */
  S_PAIRS,          /* pairs */
  S_FORMAT,         /* string.format */
  S_NEWINDEX,       /* every exo's __newindex */
  S_TOSTRING,       /* every exo's __tostring */
  S_SIZE = S_TOSTRING
};

#define STATE lua_upvalueindex(1)

/* [-n, +1, e] Pushes string.format(fmt, <the n values on top>), replacing
 * them. */
static void format(lua_State *L, const char *fmt, int n) {
  lua_rawgeti(L, STATE, S_FORMAT);
  lua_pushstring(L, fmt);
  lua_rotate(L, -(n + 2), 2);
  lua_call(L, n + 1, 1);
}

/* [-1, +0, e] Raises the message on top with the position of the caller
 * of the running C function, as error(msg, 2) did from the Lua one. */
static int raise_here(lua_State *L) {
  luaL_where(L, 1);
  lua_insert(L, -2);
  lua_concat(L, 2);
  return lua_error(L);
}

/* [-0, +1] Pushes the interface of the exo at idx, or nil. */
static void push_iface(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) {
    lua_pushnil(L);
    return;
  }
  lua_rawgeti(L, -1, 1);
  lua_remove(L, -2);
}

/* __tostring of exos  [-1, +1]: the interface. */
static int exo_tostring(lua_State *L) {
  push_iface(L, 1);
  if (lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushliteral(L, "exo");
  }
  return 1;
}

/* __newindex of exos  [-3, +0, e]: no field can be set. */
static int exo_newindex(lua_State *L) {
  push_iface(L, 1);
  size_t n;
  const char *iface = lua_tolstring(L, -1, &n);
  if (iface != NULL && n >= sizeof ALLEGED - 1)
    lua_pushlstring(L, iface + sizeof ALLEGED - 1, n - (sizeof ALLEGED - 1));
  else
    lua_pushliteral(L, "?");
  luaL_tolstring(L, 2, NULL);
  format(L, "cannot modify exo %q (field %s)", 2);
  return raise_here(L);
}

/* makeDefaultExo(name, methods) -> exo  [-2, +1, e]
 * A remotable with interface "Alleged: <name>" whose methods are a copy
 * of the string-keyed functions of methods (read with pairs). */
static int x_make_default_exo(lua_State *L) {
  lua_settop(L, 2);
  if (lua_type(L, 1) != LUA_TSTRING)
    return luaL_error(L, "makeDefaultExo: name must be a string");
  if (lua_type(L, 2) != LUA_TTABLE)
    return luaL_error(L, "makeDefaultExo: methods must be a table");
  lua_newtable(L); /* 3: the method table */
  lua_rawgeti(L, STATE, S_PAIRS);
  lua_pushvalue(L, 2);
  lua_call(L, 1, 3); /* 4, 5, 6: the iterator, its state, the key */
  for (;;) {
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 5);
    lua_pushvalue(L, 6);
    lua_call(L, 2, 2);
    if (lua_isnil(L, -2)) {
      lua_pop(L, 2);
      break;
    }
    ocap_vat_charge(L, METHOD_COST);
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TFUNCTION) {
      lua_pushvalue(L, 1);
      luaL_tolstring(L, -3, NULL);
      format(L, "makeDefaultExo %q: method %s is not a function", 2);
      return raise_here(L);
    }
    lua_pushvalue(L, -2);
    lua_replace(L, 6);
    lua_rawset(L, 3);
  }
  lua_settop(L, 3);
  lua_pushliteral(L, ALLEGED);
  lua_pushvalue(L, 1);
  lua_concat(L, 2); /* 4: the interface */
  lua_newtable(L);  /* 5: the exo */
  lua_createtable(L, 1, 4);
  lua_pushvalue(L, 4);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "__index");
  lua_rawgeti(L, STATE, S_NEWINDEX);
  lua_setfield(L, -2, "__newindex");
  lua_rawgeti(L, STATE, S_TOSTRING);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "exo");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, 5);
  lua_rawgeti(L, STATE, S_METHODS_OF);
  lua_pushvalue(L, 5);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_rawgeti(L, STATE, S_REGISTER);
  lua_pushvalue(L, 5);
  lua_pushvalue(L, 4);
  lua_call(L, 2, 0);
  return 1;
}

/* methods(v) -> the method table of an exo, or nil  [-1, +1] */
static int x_methods(lua_State *L) {
  lua_settop(L, 1);
  lua_rawgeti(L, STATE, S_METHODS_OF);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  return 1;
}

/* method(v, name) -> the function implementing method name of the exo v,
 * or nil when v is not an exo or that entry of its method table is not a
 * function  [-2, +1, e]
 * methods and the type test in one call: what a delivery asks first. */
static int x_method(lua_State *L) {
  lua_settop(L, 2);
  lua_rawgeti(L, STATE, S_METHODS_OF);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, 3) != LUA_TTABLE)
    return 0;
  /* Indexed as Lua code would: a method table may find its methods
   * through its own __index (vats/omnium/registry.lua's forwarders). */
  lua_pushvalue(L, 2);
  if (lua_gettable(L, 4) != LUA_TFUNCTION)
    return 0;
  return 1;
}

/* register(obj, impl): records an object made elsewhere (exo classes) as
 * an exo with that method table.  [-2, +0, e] */
static int x_register(lua_State *L) {
  lua_settop(L, 2);
  lua_rawgeti(L, STATE, S_METHODS_OF);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, -3);
  return 0;
}

/* exo(registerRemotable, pairs, format) -> module  [-3, +1, e] */
int ocap_exo_new(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"makeDefaultExo", x_make_default_exo},
      {"methods", x_methods},
      {"method", x_method},
      {"register", x_register},
      {NULL, NULL},
  };
  for (int k = 1; k <= 3; k++)
    luaL_checktype(L, k, LUA_TFUNCTION);
  lua_settop(L, 3);
  lua_createtable(L, S_SIZE, 0); /* 4: the state */
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawseti(L, 4, S_METHODS_OF);
  for (int k = 1; k <= 3; k++) {
    lua_pushvalue(L, k);
    lua_rawseti(L, 4, S_REGISTER + k - 1);
  }
  lua_pushvalue(L, 4);
  lua_pushcclosure(L, exo_newindex, 1);
  lua_rawseti(L, 4, S_NEWINDEX);
  lua_pushcfunction(L, exo_tostring);
  lua_rawseti(L, 4, S_TOSTRING);
  luaL_newlibtable(L, funcs);
  lua_pushvalue(L, 4);
  luaL_setfuncs(L, funcs, 1);
  return 1;
}
