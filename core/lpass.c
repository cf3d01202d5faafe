/*
 * lpass.c -- ocap.pass in C: the passable world's special values (null,
 * the array mark, error values, hardened tables) and the registries of
 * remotables and promises; see lua/ocap/pass.lua for the module's API.
 *
 * Every vat loads ocap.pass at boot. As Lua it kept 30 prototypes and
 * their closures alive in each vat (about 16 KiB, since prototypes cannot
 * be shared between Lua states); as C closures over one table, the
 * codec's model, it costs a vat about 48 bytes a function.
 *
 * Conventions:
 *  1. Each function behaves as the Lua it replaces did: the same results
 *     (count and values), the same errors at the same level (a C
 *     function's luaL_error names its caller, as Lua's error(msg, 2) did
 *     from the Lua function), and `==` and getmetatable as Lua reads them
 *     (lua_compare honours __eq; __metatable answers for a metatable).
 *  2. The state is the model table (lsmallcaps.h, enum ocap_sc_model),
 *     upvalue 1 of every function here and of the codec's.
 *  3. Work that grows with a value (harden's walk, array's arguments) is
 *     charged to the vat it runs in and uses no C recursion, so a deep or
 *     large value neither overflows the C stack nor runs unmetered.
 *  4. The parts a vat rarely uses stay Lua, loaded on first use through
 *     the require the module was made with: classification
 *     (ocap.pass.style) and the OCapN boxes (ocap.pass.boxes).
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsmallcaps.h"
#include "vat.h"

/* Built alone as a module for a host state, there is no vat to charge. */
#ifdef OCAP_SMALLCAPS_STANDALONE
#define ocap_vat_charge(L, cost) ((void)(L), (void)(cost))
#endif

/* What harden charges a vat: per table it hardens and per field it moves
 * (about what the Lua it replaces cost in instructions, and more than the
 * C takes). */
#define HARDEN_TABLE_COST 16
#define HARDEN_FIELD_COST 4

#define MODEL lua_upvalueindex(1)

/* [-0, +1] Pushes the model's entry k; returns its type. */
static int model_get(lua_State *L, int k) {
  return lua_rawgeti(L, MODEL, k);
}

/* [-0, +1] Pushes what getmetatable(v) answers in Lua for the value at idx:
 * nil, the metatable, or its __metatable field. */
static void push_getmetatable(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (!lua_getmetatable(L, idx)) {
    lua_pushnil(L);
    return;
  }
  if (luaL_getmetafield(L, idx, "__metatable") != LUA_TNIL)
    lua_remove(L, -2);
}

/* [-0, +0, e] Whether t[v] (t is the model's table k, read raw) is not nil. */
static int in_registry(lua_State *L, int k, int v) {
  v = lua_absindex(L, v);
  model_get(L, k);
  lua_pushvalue(L, v);
  int found = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return found;
}

/* [-0, +0, e] `v == model[k]` as Lua compares them. */
static int equals_model(lua_State *L, int v, int k) {
  v = lua_absindex(L, v);
  model_get(L, k);
  int eq = lua_compare(L, v, -1, LUA_OPEQ);
  lua_pop(L, 1);
  return eq;
}

/* [-0, +0, e] isPromise(v): registered, or a userdata (what ocap.promise
 * makes) whose metatable (as getmetatable reads it) is ocap.promise's. */
static int is_promise(lua_State *L, int v) {
  v = lua_absindex(L, v);
  model_get(L, M_PROMISES);
  lua_pushvalue(L, v);
  lua_rawget(L, -2);
  int yes = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
  lua_pop(L, 2);
  if (yes)
    return 1;
  if (model_get(L, M_PROMISE_MT) == LUA_TNIL || lua_type(L, v) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    return 0;
  }
  push_getmetatable(L, v);
  yes = lua_compare(L, -1, -2, LUA_OPEQ);
  lua_pop(L, 2);
  return yes;
}

/* ---- null, arrays, errors ---- */

/* __tostring of null  [-1, +1] */
static int null_tostring(lua_State *L) {
  lua_pushliteral(L, "null");
  return 1;
}

/* __newindex of null  [-3, +0, e] */
static int null_newindex(lua_State *L) {
  return luaL_error(L, "cannot modify null");
}

/* __newindex of the array mark's metatable  [-3, +0, e] */
static int array_mt_newindex(lua_State *L) {
  return luaL_error(L, "cannot modify the array metatable");
}

/* __newindex of hardened tables and of the error tag  [-3, +0, e] */
static int refuse(lua_State *L) {
  return luaL_error(L, "cannot modify hardened table");
}

/* isNull(v) -> boolean  [-1, +1, e] */
static int p_is_null(lua_State *L) {
  lua_settop(L, 1);
  lua_pushboolean(L, equals_model(L, 1, M_NULL));
  return 1;
}

/* array(...) -> table  [-n, +1, e]
 * The elements, marked; with `n` when any of them is nil. */
static int p_array(lua_State *L) {
  int n = lua_gettop(L), holes = 0;
  ocap_vat_charge(L, n);
  lua_createtable(L, n, 0);
  for (int i = 1; i <= n; i++) {
    holes = holes || lua_isnil(L, i);
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i);
  }
  if (holes) {
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
  }
  model_get(L, M_ARRAY_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* __tostring of error values  [-1, +1, e]: "<name>: <message>". */
static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "name");
  luaL_tolstring(L, -1, NULL);
  lua_pushliteral(L, ": ");
  lua_getfield(L, 1, "message");
  luaL_tolstring(L, -1, NULL);
  lua_remove(L, -2);
  lua_concat(L, 3);
  return 1;
}

/* The length of a run of [A-Z_] at s (n bytes). */
static size_t code_run(const char *s, size_t n) {
  size_t k = 0;
  while (k < n && ((s[k] >= 'A' && s[k] <= 'Z') || s[k] == '_'))
    k++;
  return k;
}

/* [-0, +1, e] Pushes the code of the kernel error message at idx, or nil:
 * `[KERNEL:VAT_FATAL:<CODE>]` gives `VAT_FATAL:<CODE>`, `[KERNEL:<CODE>]`
 * gives `<CODE>`, with codes of capitals and underscores. */
static void push_kernel_code(lua_State *L, int idx) {
  static const char prefix[] = "[KERNEL:", fatal[] = "VAT_FATAL:";
  size_t n;
  const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &n) : NULL;
  if (s == NULL || n < sizeof prefix - 1 || memcmp(s, prefix, sizeof prefix - 1) != 0) {
    lua_pushnil(L);
    return;
  }
  s += sizeof prefix - 1;
  n -= sizeof prefix - 1;
  if (n > sizeof fatal - 1 && memcmp(s, fatal, sizeof fatal - 1) == 0) {
    size_t k = code_run(s + sizeof fatal - 1, n - (sizeof fatal - 1));
    if (k > 0 && k < n - (sizeof fatal - 1) && s[sizeof fatal - 1 + k] == ']') {
      lua_pushlstring(L, s, sizeof fatal - 1 + k);
      return;
    }
  }
  size_t k = code_run(s, n);
  if (k > 0 && k < n && s[k] == ']')
    lua_pushlstring(L, s, k);
  else
    lua_pushnil(L);
}

/* kernelErrorCode(message) -> code | nil  [-1, +1, e] */
static int p_kernel_error_code(lua_State *L) {
  push_kernel_code(L, 1);
  return 1;
}

/* makeError(message, name?, code?) -> error  [-3, +1, e] */
static int p_make_error(lua_State *L) {
  lua_settop(L, 3);
  if (lua_isnil(L, 1)) {
    lua_pushliteral(L, "");
    lua_replace(L, 1);
  } else if (lua_type(L, 1) != LUA_TSTRING) {
    luaL_tolstring(L, 1, NULL);
    lua_replace(L, 1);
  }
  if (lua_isnil(L, 2)) {
    lua_pushliteral(L, "Error");
    lua_replace(L, 2);
  } else if (lua_type(L, 2) != LUA_TSTRING) {
    return luaL_error(L, "error name must be a string, got %s", luaL_typename(L, 2));
  }
  if (lua_isnil(L, 3)) {
    push_kernel_code(L, 1);
    lua_replace(L, 3);
  }
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "message");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "name");
  lua_pushvalue(L, 3);
  lua_setfield(L, -2, "code");
  model_get(L, M_ERROR_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* isError(v) -> boolean  [-1, +1, e] */
static int p_is_error(lua_State *L) {
  int yes = 0;
  if (lua_type(L, 1) == LUA_TTABLE) {
    push_getmetatable(L, 1);
    yes = equals_model(L, -1, M_ERROR_TAG);
  }
  lua_pushboolean(L, yes);
  return 1;
}

/* ---- remotables and promises ---- */

/* [-0, +0, e] Raises what the registering function `who` says of a value
 * at idx that is neither a table nor a userdata. */
static void check_object(lua_State *L, int idx, const char *who) {
  int t = lua_type(L, idx);
  if (t != LUA_TTABLE && t != LUA_TUSERDATA && t != LUA_TLIGHTUSERDATA)
    luaL_error(L, "%s: expected a table or userdata, got %s", who, luaL_typename(L, idx));
}

/* registerRemotable(obj, iface?) -> obj  [-2, +1, e] */
static int p_register_remotable(lua_State *L) {
  lua_settop(L, 2);
  check_object(L, 1, "registerRemotable");
  if (lua_isnil(L, 2)) {
    lua_pushliteral(L, "Remotable");
    lua_replace(L, 2);
  } else if (lua_type(L, 2) != LUA_TSTRING) {
    return luaL_error(L, "registerRemotable: iface must be a string");
  }
  if (is_promise(L, 1))
    return luaL_error(L, "registerRemotable: object is already a promise");
  model_get(L, M_REMOTABLES);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, -3);
  lua_settop(L, 1);
  return 1;
}

/* remotableIface(obj) -> string | nil  [-1, +1] */
static int p_remotable_iface(lua_State *L) {
  lua_settop(L, 1);
  model_get(L, M_REMOTABLES);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  return 1;
}

/* isRemotable(v) -> boolean  [-1, +1] */
static int p_is_remotable(lua_State *L) {
  lua_settop(L, 1);
  lua_pushboolean(L, in_registry(L, M_REMOTABLES, 1));
  return 1;
}

/* registerPromise(p) -> p  [-1, +1, e] */
static int p_register_promise(lua_State *L) {
  lua_settop(L, 1);
  check_object(L, 1, "registerPromise");
  model_get(L, M_REMOTABLES);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  if (lua_toboolean(L, -1))
    return luaL_error(L, "registerPromise: object is already a remotable");
  model_get(L, M_PROMISES);
  lua_pushvalue(L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_settop(L, 1);
  return 1;
}

/* registerPromiseMetatable(mt)  [-1, +0]
 * ocap.promise declares its metatable once; the codec reads the same
 * model entry. */
static int p_register_promise_mt(lua_State *L) {
  lua_settop(L, 1);
  lua_rawseti(L, MODEL, M_PROMISE_MT);
  return 0;
}

/* isPromise(v) -> boolean  [-1, +1, e] */
static int p_is_promise(lua_State *L) {
  lua_settop(L, 1);
  lua_pushboolean(L, is_promise(L, 1));
  return 1;
}

/* ---- harden ---- */

/* __len of hardened tables  [-2, +1, e]: the length of the contents. */
static int hardened_len(lua_State *L) {
  model_get(L, M_SHADOWS);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  lua_len(L, -1);
  return 1;
}

/* __pairs of hardened tables  [-1, +3]: next, the contents, nil. */
static int hardened_pairs(lua_State *L) {
  model_get(L, M_NEXT);
  model_get(L, M_SHADOWS);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  lua_remove(L, -2);
  lua_pushnil(L);
  return 3;
}

/*
 * [-0, +0, e] Hardens the table at t unless it is hardened already, a
 * remotable, a promise, null, or has a metatable other than the array
 * mark; pushes each table it holds onto the work list at idx.
 */
static void harden_one(lua_State *L, int t, int todo, lua_Integer *ntodo) {
  if (in_registry(L, M_SHADOWS, t) || in_registry(L, M_REMOTABLES, t) || is_promise(L, t) ||
      equals_model(L, t, M_NULL))
    return;
  push_getmetatable(L, t);
  int marked = 0;
  if (!lua_isnil(L, -1)) {
    marked = equals_model(L, -1, M_ARRAY_MT);
    if (!marked) {
      lua_pop(L, 1); /* errors, foreign objects */
      return;
    }
  }
  lua_pop(L, 1);
  ocap_vat_charge(L, HARDEN_TABLE_COST);
  lua_newtable(L); /* the shadow */
  int shadow = lua_gettop(L);
  lua_Integer fields = 0;
  /* Clearing fields while traversing is allowed by lua_next. */
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, shadow);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, t);
    if (++fields % 64 == 0)
      ocap_vat_charge(L, 64 * HARDEN_FIELD_COST);
  }
  ocap_vat_charge(L, (fields % 64) * HARDEN_FIELD_COST);
  if (marked) {
    model_get(L, M_ARRAY_MT);
    lua_setmetatable(L, shadow);
  }
  /* Registered before its contents are, so that cycles terminate. */
  model_get(L, M_SHADOWS);
  lua_pushvalue(L, t);
  lua_pushvalue(L, shadow);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_createtable(L, 0, 6);
  lua_pushliteral(L, "ocap.hardened");
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, shadow);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, refuse);
  lua_setfield(L, -2, "__newindex");
  model_get(L, M_HARDENED_LEN);
  lua_setfield(L, -2, "__len");
  model_get(L, M_HARDENED_PAIRS);
  lua_setfield(L, -2, "__pairs");
  lua_pushliteral(L, "hardened");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, t);
  lua_pushnil(L);
  while (lua_next(L, shadow) != 0) {
    if (lua_type(L, -1) == LUA_TTABLE)
      lua_rawseti(L, todo, ++*ntodo);
    else
      lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* harden(v) -> v  [-1, +1, e]
 * Hardens v and every table it holds, through a work list instead of
 * recursion, so that depth costs no C stack. */
static int p_harden(lua_State *L) {
  lua_settop(L, 1);
  if (lua_type(L, 1) != LUA_TTABLE)
    return 1;
  lua_newtable(L); /* 2: the tables still to harden */
  lua_Integer n = 0;
  lua_pushvalue(L, 1);
  lua_rawseti(L, 2, ++n);
  while (n > 0) {
    lua_rawgeti(L, 2, n);
    lua_pushnil(L);
    lua_rawseti(L, 2, n--);
    harden_one(L, lua_gettop(L), 2, &n);
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  return 1;
}

/* isFrozen(v) -> boolean  [-1, +1, e] */
static int p_is_frozen(lua_State *L) {
  lua_settop(L, 1);
  lua_pushboolean(L, lua_type(L, 1) != LUA_TTABLE || in_registry(L, M_SHADOWS, 1) ||
                         in_registry(L, M_REMOTABLES, 1) || is_promise(L, 1) ||
                         equals_model(L, 1, M_NULL) || in_registry(L, M_BOXES, 1));
  return 1;
}

/* contents(t) -> the contents of a hardened table, or t  [-1, +1] */
static int p_contents(lua_State *L) {
  lua_settop(L, 1);
  model_get(L, M_SHADOWS);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) == LUA_TNIL || !lua_toboolean(L, -1))
    lua_pushvalue(L, 1);
  return 1;
}

/* ---- the parts loaded on first use ---- */

/* [-0, +1, e] Pushes the result of require(name), with the require the
 * module was made with. */
static void require_runtime(lua_State *L, const char *name) {
  model_get(L, M_REQUIRE);
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
}

/* The fields of the module that ocap.pass.boxes supplies. */
static const char *const box_fields[] = {"symbol", "bytes", "bigint", "makeTagged", "box", NULL};

/* loadBoxes() -> the boxes kit  [-0, +1, e]
 * Loads ocap.pass.boxes with the private box table and the module, once,
 * and puts its functions in the module. */
static int p_load_boxes(lua_State *L) {
  if (model_get(L, M_BOX_KIT) != LUA_TNIL)
    return 1;
  lua_pop(L, 1);
  require_runtime(L, "ocap.pass.boxes");
  model_get(L, M_BOXES);
  model_get(L, M_MODULE);
  lua_call(L, 2, 1);
  lua_pushvalue(L, -1);
  lua_rawseti(L, MODEL, M_BOX_KIT);
  model_get(L, M_MODULE);
  for (const char *const *f = box_fields; *f != NULL; f++) {
    lua_getfield(L, -2, *f);
    lua_setfield(L, -2, *f); /* the module has no __newindex */
  }
  lua_pop(L, 1);
  return 1;
}

/* __index of the module  [-2, +1, e]: the box functions, loaded on first
 * touch; nil for any other absent field. */
static int p_module_index(lua_State *L) {
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  for (const char *const *f = box_fields; k != NULL && *f != NULL; f++) {
    if (strcmp(k, *f) == 0) {
      p_load_boxes(L);
      lua_getfield(L, -1, k);
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

/* [-0, +1, e] Pushes the classifying kit of ocap.pass.style, made on
 * first use with the private tables. */
static void push_style(lua_State *L) {
  if (model_get(L, M_STYLE) != LUA_TNIL)
    return;
  lua_pop(L, 1);
  require_runtime(L, "ocap.pass.style");
  lua_getfield(L, -1, "make");
  lua_createtable(L, 0, 8);
  static const struct {
    const char *name;
    int k;
  } priv[] = {{"remotables", M_REMOTABLES}, {"shadows", M_SHADOWS},    {"boxes", M_BOXES},
              {"arrayMT", M_ARRAY_MT},      {"errorTag", M_ERROR_TAG}, {"null", M_NULL}};
  for (size_t i = 0; i < sizeof priv / sizeof priv[0]; i++) {
    model_get(L, priv[i].k);
    lua_setfield(L, -2, priv[i].name);
  }
  lua_pushvalue(L, MODEL);
  lua_pushcclosure(L, p_load_boxes, 1);
  lua_setfield(L, -2, "loadBoxes");
  lua_pushvalue(L, MODEL);
  lua_pushcclosure(L, p_is_promise, 1);
  lua_setfield(L, -2, "isPromise");
  lua_call(L, 1, 1);
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, MODEL, M_STYLE);
}

/* [-1, +r, e] Calls the style kit's function `name` with argument 1 and
 * returns all it returns. */
static int call_style(lua_State *L, const char *name) {
  lua_settop(L, 1);
  push_style(L);
  lua_getfield(L, -1, name);
  lua_pushvalue(L, 1);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - 2;
}

/* classify(t) -> style, ...  [-1, +r, e] */
static int p_classify(lua_State *L) {
  return call_style(L, "classify");
}

/* passStyleOf(v) -> style  [-1, +r, e] */
static int p_pass_style_of(lua_State *L) {
  return call_style(L, "passStyleOf");
}

/* isArray(v) -> boolean  [-1, +r, e] */
static int p_is_array(lua_State *L) {
  return call_style(L, "isArray");
}

/* ---- the module ---- */

static const luaL_Reg pass_funcs[] = {
    {"isNull", p_is_null},
    {"array", p_array},
    {"kernelErrorCode", p_kernel_error_code},
    {"makeError", p_make_error},
    {"isError", p_is_error},
    {"registerRemotable", p_register_remotable},
    {"remotableIface", p_remotable_iface},
    {"isRemotable", p_is_remotable},
    {"registerPromise", p_register_promise},
    {"registerPromiseMetatable", p_register_promise_mt},
    {"isPromise", p_is_promise},
    {"harden", p_harden},
    {"isFrozen", p_is_frozen},
    {"contents", p_contents},
    {"classify", p_classify},
    {"passStyleOf", p_pass_style_of},
    {"isArray", p_is_array},
    {NULL, NULL},
};

/* [-0, +1, e] Pushes a new table whose keys are weak, with the shared
 * metatable at mt. */
static void new_weak(lua_State *L, int mt) {
  lua_newtable(L);
  lua_pushvalue(L, mt);
  lua_setmetatable(L, -2);
}

/* pass(require, next) -> module  [-2, +1, e] */
int ocap_pass_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_createtable(L, M_MODEL_SIZE, 0); /* 3: the model */
  lua_pushvalue(L, 1);
  lua_rawseti(L, 3, M_REQUIRE);
  lua_pushvalue(L, 2);
  lua_rawseti(L, 3, M_NEXT);
  /* One weak-keyed metatable for the four registries. */
  lua_createtable(L, 0, 1); /* 4 */
  lua_pushliteral(L, "k");
  lua_setfield(L, 4, "__mode");
  static const int weak[] = {M_REMOTABLES, M_PROMISES, M_SHADOWS, M_BOXES};
  for (size_t i = 0; i < sizeof weak / sizeof weak[0]; i++) {
    new_weak(L, 4);
    lua_rawseti(L, 3, weak[i]);
  }
  lua_pop(L, 1);
  /* null */
  lua_newtable(L);
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "ocap.null");
  lua_setfield(L, -2, "__name");
  lua_pushcfunction(L, null_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, null_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "null");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_rawseti(L, 3, M_NULL);
  /* The array mark, whose fields cannot be added to. */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "ocap.array");
  lua_setfield(L, -2, "__name");
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, array_mt_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  lua_rawseti(L, 3, M_ARRAY_MT);
  /* The error tag (what getmetatable answers for an error value) and the
   * error values' metatable. */
  lua_newtable(L);
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "ocap.error");
  lua_setfield(L, -2, "__name");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pushcfunction(L, refuse);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, 3, M_ERROR_TAG);
  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "ocap.error");
  lua_setfield(L, -2, "__name");
  lua_insert(L, -2);
  lua_setfield(L, -2, "__metatable");
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_rawseti(L, 3, M_ERROR_MT);
  /* Every hardened table's __len and __pairs. */
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, hardened_len, 1);
  lua_rawseti(L, 3, M_HARDENED_LEN);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, hardened_pairs, 1);
  lua_rawseti(L, 3, M_HARDENED_PAIRS);
  /* The module. */
  luaL_newlibtable(L, pass_funcs); /* 4 */
  lua_pushvalue(L, 3);
  luaL_setfuncs(L, pass_funcs, 1);
  lua_pushvalue(L, -1);
  lua_rawseti(L, 3, M_MODULE);
  lua_rawgeti(L, 3, M_NULL);
  lua_setfield(L, 4, "null");
  lua_rawgeti(L, 3, M_ARRAY_MT);
  lua_setfield(L, 4, "ARRAY_MT");
  lua_getfield(L, 4, "makeError");
  lua_rawseti(L, 3, M_MAKE_ERROR);
  ocap_sc_push_codec(L, 3);
  lua_setfield(L, 4, "codec");
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, p_module_index, 1);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, 4);
  return 1;
}
