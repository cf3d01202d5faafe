/*
 * lmarshal.c -- ocap.marshal in C: smallcaps capdata through the C codec
 * (lsmallcaps.c), handing what it leaves (every error, rare inputs) to
 * the Lua reference codec, ocap.marshal.reference, loaded on first need;
 * see lua/ocap/marshal.lua for the module's API.
 *
 * Every vat loads ocap.marshal at boot and makes one marshaller; as Lua
 * they kept 14 prototypes and their closures in each vat (about 5 KiB).
 *
 * Conventions:
 *  1. Each function behaves as the Lua it replaces did: the same results
 *     and the same errors (level 0 for bad capdata, the caller's position
 *     for makeMarshal's arguments).
 *  2. Upvalue 1 of every function is the module's state (enum below); a
 *     marshaller's functions also hold its valToSlot and slotToVal as
 *     upvalues 2 and 3.
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsmallcaps.h"

/* The module's state, upvalue 1 of its functions. */
enum {
  S_ENCODE = 1,  /* codec.encode */
  S_ENCODE_CALL, /* codec.encodeCall */
  S_DECODE,      /* codec.decode */
  S_REQUIRE,     /* the require the module was made with */
  S_REFERENCE,   /* ocap.marshal.reference, once loaded */
  S_SIZE = S_REFERENCE
};

#define STATE lua_upvalueindex(1)
#define VAL_TO_SLOT lua_upvalueindex(2)
#define SLOT_TO_VAL lua_upvalueindex(3)

/* [-0, +1, e] Pushes the reference codec, loading it on first need. */
static void push_reference(lua_State *L) {
  if (lua_rawgeti(L, STATE, S_REFERENCE) != LUA_TNIL)
    return;
  lua_pop(L, 1);
  lua_rawgeti(L, STATE, S_REQUIRE);
  lua_pushliteral(L, "ocap.marshal.reference");
  lua_call(L, 1, 1);
  lua_pushvalue(L, -1);
  lua_rawseti(L, STATE, S_REFERENCE);
}

/* [-n, +r, e] Calls the reference codec's function `name` with the n
 * values on top of the stack and returns the count of all it returns,
 * which replace everything on the stack. */
static int call_reference(lua_State *L, const char *name, int n) {
  push_reference(L);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  lua_insert(L, -(n + 1));
  int base = lua_gettop(L) - (n + 1);
  lua_call(L, n, LUA_MULTRET);
  int r = lua_gettop(L) - base;
  lua_rotate(L, 1, r);
  lua_settop(L, r);
  return r;
}

/* [-0, +0, e] Raises msg with no position, as error(msg, 0) does. */
static int fail(lua_State *L, const char *msg) {
  lua_pushstring(L, msg);
  return lua_error(L);
}

/*
 * [-0, +r, e] The value of the capdata at index cd, with slotToVal at
 * index s2v (or nil): the checks the Lua decoder makes first, with its
 * messages, then the C codec, then the reference for what it leaves.
 */
static int unserialize_with(lua_State *L, int cd, int s2v) {
  cd = lua_absindex(L, cd);
  s2v = lua_absindex(L, s2v);
  if (lua_type(L, cd) != LUA_TTABLE) {
    lua_pushfstring(L, "capdata must be a table, got %s", luaL_typename(L, cd));
    return lua_error(L);
  }
  lua_getfield(L, cd, "body");
  int body = lua_gettop(L);
  lua_getfield(L, cd, "slots");
  int slots = lua_gettop(L);
  if (lua_type(L, body) != LUA_TSTRING)
    return fail(L, "capdata body must be a string");
  if (lua_tostring(L, body)[0] != '#')
    return fail(L, "capdata body must start with \"#\" (smallcaps)");
  if (!lua_isnil(L, slots) && lua_type(L, slots) != LUA_TTABLE)
    return fail(L, "capdata slots must be a table");
  lua_rawgeti(L, STATE, S_DECODE);
  lua_pushvalue(L, body);
  lua_pushvalue(L, slots);
  lua_pushvalue(L, s2v);
  lua_call(L, 3, 2);
  if (lua_toboolean(L, -2))
    return 1;
  lua_pop(L, 2);
  lua_pushvalue(L, cd);
  lua_pushvalue(L, s2v);
  return call_reference(L, "unserialize", 2);
}

/* [-1, +r, e] `encode(v, valToSlot) or reference.serialize(v,
 * valToSlot)` for v at index 1, valToSlot at index v2s (or none). */
static int serialize_with(lua_State *L, int v2s) {
  lua_settop(L, 1);
  lua_rawgeti(L, STATE, S_ENCODE);
  lua_pushvalue(L, 1);
  int n = 1;
  if (v2s != 0) {
    lua_pushvalue(L, v2s);
    n = 2;
  }
  lua_call(L, n, 1);
  if (lua_toboolean(L, -1))
    return 1;
  lua_pop(L, 1);
  if (v2s != 0)
    lua_pushvalue(L, v2s);
  else
    lua_pushnil(L);
  return call_reference(L, "serialize", 2);
}

/* jsonString(s) -> JSON.stringify of s  [-1, +r, e] */
static int m_json_string(lua_State *L) {
  lua_settop(L, 1);
  return call_reference(L, "jsonString", 1);
}

/* formatNumber(x) -> the number as JavaScript writes it  [-1, +r, e] */
static int m_format_number(lua_State *L) {
  lua_settop(L, 1);
  return call_reference(L, "formatNumber", 1);
}

/* serializeData(v) -> capdata  [-1, +r, e] */
static int m_serialize_data(lua_State *L) {
  return serialize_with(L, 0);
}

/* unserializeData(capdata) -> value  [-1, +r, e] */
static int m_unserialize_data(lua_State *L) {
  lua_settop(L, 1);
  lua_pushnil(L);
  return unserialize_with(L, 1, 2);
}

/* A marshaller's serialize(v)  [-1, +r, e] */
static int mm_serialize(lua_State *L) {
  return serialize_with(L, VAL_TO_SLOT);
}

/* A marshaller's unserialize(capdata)  [-1, +r, e] */
static int mm_unserialize(lua_State *L) {
  lua_settop(L, 1);
  return unserialize_with(L, 1, SLOT_TO_VAL);
}

/* A marshaller's unserializeBody(body): unserialize of { body = body }
 * (no slots), with no capdata table when the codec takes it: a durable
 * store's value that holds no refs, read at every get.  [-1, +r, e] */
static int mm_unserialize_body(lua_State *L) {
  lua_settop(L, 1);
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_rawgeti(L, STATE, S_DECODE);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_pushvalue(L, SLOT_TO_VAL);
    lua_call(L, 3, 2);
    if (lua_toboolean(L, -2))
      return 1;
    lua_pop(L, 2);
  }
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "body");
  return unserialize_with(L, -1, SLOT_TO_VAL);
}

/* A marshaller's serializeCall(method, args): the methargs array
 * {method, args}, for sends.  [-2, +r, e] */
static int mm_serialize_call(lua_State *L) {
  lua_settop(L, 2);
  lua_rawgeti(L, STATE, S_ENCODE_CALL);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, VAL_TO_SLOT);
  lua_call(L, 3, 1);
  if (lua_toboolean(L, -1))
    return 1;
  lua_pop(L, 1);
  lua_pushvalue(L, VAL_TO_SLOT);
  return call_reference(L, "serializeCall", 3);
}

/* makeMarshal(valToSlot, slotToVal) -> marshaller  [-2, +1, e] */
static int m_make_marshal(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"serialize", mm_serialize},
      {"unserialize", mm_unserialize},
      {"unserializeBody", mm_unserialize_body},
      {"serializeCall", mm_serialize_call},
      {NULL, NULL},
  };
  if (lua_type(L, 1) != LUA_TFUNCTION || lua_type(L, 2) != LUA_TFUNCTION)
    return luaL_error(L, "makeMarshal(valToSlot, slotToVal): both must be functions");
  lua_settop(L, 2);
  luaL_newlibtable(L, funcs);
  lua_pushvalue(L, STATE);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  luaL_setfuncs(L, funcs, 3);
  return 1;
}

/* __index of the module  [-2, +1, e]: `reference` loads the Lua codec
 * when first read, and stays; nil for any other absent field. */
static int m_index(lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "reference") != 0) {
    lua_pushnil(L);
    return 1;
  }
  push_reference(L);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);
  return 1;
}

/* marshal(require, codec) -> module  [-2, +1, e] */
int ocap_marshal_new(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"jsonString", m_json_string},       {"formatNumber", m_format_number},
      {"serializeData", m_serialize_data}, {"unserializeData", m_unserialize_data},
      {"makeMarshal", m_make_marshal},     {NULL, NULL},
  };
  static const struct {
    const char *name;
    int k;
  } codec[] = {{"encode", S_ENCODE}, {"encodeCall", S_ENCODE_CALL}, {"decode", S_DECODE}};
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_createtable(L, S_SIZE, 0); /* 3: the state */
  lua_pushvalue(L, 1);
  lua_rawseti(L, 3, S_REQUIRE);
  for (size_t i = 0; i < sizeof codec / sizeof codec[0]; i++) {
    if (lua_getfield(L, 2, codec[i].name) != LUA_TFUNCTION)
      return luaL_error(L, "smallcaps.marshal: codec.%s is missing", codec[i].name);
    lua_rawseti(L, 3, codec[i].k);
  }
  luaL_newlibtable(L, funcs);
  lua_pushvalue(L, 3);
  luaL_setfuncs(L, funcs, 1);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, m_index, 1);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
