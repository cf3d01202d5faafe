/*
 * lsyrup.c -- Syrup over Lua values; see lsyrup.h and docs/remote.md.
 *
 * Values of the OCapN data model that Lua has no type for (byte arrays,
 * symbols, integers beyond 64 bits, tagged values, other records, sets)
 * are boxes: small tables with a metatable of this module, made by
 * syrup.bytes, syrup.symbol, syrup.bigint, syrup.tagged, syrup.record and
 * syrup.set. Everything else is one of ocap's passables (lua/ocap/pass.lua):
 * nil, pass.null, booleans, numbers, strings, arrays, records, errors, and
 * ocap's own symbols, byte arrays, big integers and tagged values (which a
 * vat can hold, and which encode as this module's boxes do). Decoding
 * makes this module's boxes.
 *
 * Encoding walks the value and pushes one Lua string per value, so no C
 * buffer outlives an error raised halfway. Decoding reads the input with
 * the strict reader of syrup.c and pushes values as it goes; the reader
 * lives in a userdata because its frames are large (40 KB), and one
 * reader is kept for the next call (take_reader): CapTP decodes every
 * message, and a fresh 40 KB userdata for each made Lua's collector run
 * as if every message had allocated that much.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsyrup.h"
#include "syrup.h"

/* The module's state, upvalue 1 of every function: a table indexed by
 * these. */
enum {
  S_BYTES_MT = 1, /* the boxes' metatables */
  S_SYMBOL_MT,
  S_BIGINT_MT,
  S_TAGGED_MT,
  S_RECORD_MT,
  S_SET_MT,
  S_NULL,       /* pass.null */
  S_ARRAY_MT,   /* pass's array mark */
  S_CLASSIFY,   /* pass.classify */
  S_MAKE_ERROR, /* pass.makeError */
  S_READER,     /* a spare reader userdata, or false while one call uses it */
  S_COUNT = S_READER
};

static const char *const box_names[] = {"bytes", "symbol", "bigint", "tagged", "record", "set"};

/* [-0, +1, -] Pushes field i of the state. */
static void get_state(lua_State *L, int i) {
  lua_rawgeti(L, lua_upvalueindex(1), i);
}

/* [-0, +0, -] Which box (S_BYTES_MT..S_SET_MT) the value at idx is, or 0. */
static int box_kind(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
    return 0;
  for (int k = S_BYTES_MT; k <= S_SET_MT; k++) {
    get_state(L, k);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (same) {
      lua_pop(L, 1);
      return k;
    }
  }
  lua_pop(L, 1);
  return 0;
}

/* [-1, +1, -] Sets the box metatable k on the table at the top. */
static void set_box(lua_State *L, int k) {
  get_state(L, k);
  lua_setmetatable(L, -2);
}

/*
 * [-0, +1, m] Pushes a reader for this call and returns it: the module's
 * spare one, which is taken out of the state until give_reader returns
 * it, or a new one when the spare is in use (a __gc metamethod or
 * pass.makeError that decodes while a decode runs) or was lost to an
 * error raised while a call held it.
 */
static ocap_syrup_reader_t *take_reader(lua_State *L) {
  get_state(L, S_READER);
  ocap_syrup_reader_t *r = lua_touserdata(L, -1);
  if (r) {
    lua_pushboolean(L, 0);
    lua_rawseti(L, lua_upvalueindex(1), S_READER);
    return r;
  }
  lua_pop(L, 1);
  return lua_newuserdatauv(L, sizeof *r, 0);
}

/* [-0, +0, -] Makes the reader at idx the spare one again. */
static void give_reader(lua_State *L, int idx) {
  lua_pushvalue(L, idx);
  lua_rawseti(L, lua_upvalueindex(1), S_READER);
}

/* ---- the box makers ---- */

/* [-0, +1, e] Pushes a box of kind k holding the string s in field f. */
static void push_string_box(lua_State *L, int k, const char *f, const char *s, size_t n) {
  lua_createtable(L, 0, 1);
  lua_pushlstring(L, s, n);
  lua_setfield(L, -2, f);
  set_box(L, k);
}

/* syrup.bytes(s) -> a byte-array box { bytes = s }. [-0, +1, e] */
static int l_bytes(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  push_string_box(L, S_BYTES_MT, "bytes", s, n);
  return 1;
}

/* syrup.symbol(name) -> a symbol box { name = name }; name is UTF-8.
 * [-0, +1, e] */
static int l_symbol(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_argcheck(L, ocap_syrup_utf8(s, n), 1, "symbol name is not valid UTF-8");
  push_string_box(L, S_SYMBOL_MT, "name", s, n);
  return 1;
}

/* syrup.bigint(decimal) -> a big integer box { digits = "-123..." } in
 * canonical form (no leading zeros, no "-0"). [-0, +1, e] */
static int l_bigint(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n + 2);
  size_t len = ocap_syrup_put_decimal(s, n, out);
  luaL_argcheck(L, len > 0, 1, "not a decimal integer");
  /* put_decimal writes digits then the sign; the box keeps "-digits". */
  char sign = out[len - 1];
  lua_createtable(L, 0, 1);
  if (sign == '-') {
    lua_pushliteral(L, "-");
    lua_pushlstring(L, out, len - 1);
    lua_concat(L, 2);
  } else {
    lua_pushlstring(L, out, len - 1);
  }
  lua_setfield(L, -2, "digits");
  set_box(L, S_BIGINT_MT);
  return 1;
}

/* syrup.tagged(tag, value) -> { tag = tag, value = value }. [-0, +1, e] */
static int l_tagged(lua_State *L) {
  size_t n;
  const char *tag = luaL_checklstring(L, 1, &n);
  luaL_argcheck(L, ocap_syrup_utf8(tag, n), 1, "tag is not valid UTF-8");
  lua_settop(L, 2);
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "tag");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "value");
  set_box(L, S_TAGGED_MT);
  return 1;
}

/* syrup.record(label, args?) -> { label = label, args = args }; args is a
 * list (default empty). [-0, +1, e] */
static int l_record(lua_State *L) {
  luaL_checkany(L, 1);
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    lua_newtable(L);
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "label");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "args");
  set_box(L, S_RECORD_MT);
  return 1;
}

/* syrup.set(items) -> { items = items }. [-0, +1, e] */
static int l_set(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "items");
  set_box(L, S_SET_MT);
  return 1;
}

/* syrup.kind(v) -> "bytes", "symbol", "bigint", "tagged", "record", "set"
 * or nil. [-0, +1, -] */
static int l_kind(lua_State *L) {
  int k = box_kind(L, 1);
  if (k)
    lua_pushstring(L, box_names[k - S_BYTES_MT]);
  else
    lua_pushnil(L);
  return 1;
}

/* ---- encoding ---- */

static void encode(lua_State *L, int idx, int depth);

/* An encoded item kept for sorting: its bytes live in a Lua table. */
typedef struct item {
  const char *s;
  size_t n;
  int pos; /* where it is in the holding table */
} item_t;

static int item_cmp(const void *a, const void *b) {
  const item_t *x = a, *y = b;
  return ocap_syrup_cmp(x->s, x->n, y->s, y->n);
}

/* [-0, +1, e] Pushes the encoding of a symbol or string. */
static void push_atom(lua_State *L, const char *s, size_t n, char tag) {
  char pre[OCAP_SYRUP_NUM_MAX];
  size_t k = ocap_syrup_put_len(n, tag, pre);
  lua_pushlstring(L, pre, k);
  lua_pushlstring(L, s, n);
  lua_concat(L, 2);
}

/* [-0, +1, e] Pushes the encoding of the array at idx, whose length is len
 * (nils count), wrapped in open and close. */
static void encode_seq(lua_State *L, int idx, lua_Integer len, const char *open, const char *close,
                       int depth) {
  luaL_Buffer b;
  idx = lua_absindex(L, idx);
  luaL_buffinit(L, &b);
  luaL_addstring(&b, open);
  for (lua_Integer i = 1; i <= len; i++) {
    lua_geti(L, idx, i);
    encode(L, -1, depth + 1);
    lua_remove(L, -2);
    luaL_addvalue(&b);
  }
  luaL_addstring(&b, close);
  luaL_pushresult(&b);
}

/* [-0, +0, e] The length of the list at idx: `n` when it is an integer,
 * else the border. */
static lua_Integer list_len(lua_State *L, int idx) {
  lua_Integer len;
  idx = lua_absindex(L, idx);
  if (lua_getfield(L, idx, "n") == LUA_TNUMBER && lua_isinteger(L, -1))
    len = lua_tointeger(L, -1);
  else
    len = (lua_Integer)luaL_len(L, idx);
  lua_pop(L, 1);
  return len;
}

/*
 * [-0, +1, e] Pushes the encoding of a set (items at idx, a list) or of a
 * dictionary (the table at idx, whose keys must all be strings), sorted by
 * encoded bytes. Duplicate set members are an error: the decoder refuses
 * them too.
 */
static void encode_sorted(lua_State *L, int idx, int is_set, int depth) {
  idx = lua_absindex(L, idx);
  lua_newtable(L); /* holds the encoded items */
  int hold = lua_gettop(L);
  int count = 0;
  if (is_set) {
    lua_Integer len = list_len(L, idx);
    for (lua_Integer i = 1; i <= len; i++) {
      lua_geti(L, idx, i);
      encode(L, -1, depth + 1);
      lua_rawseti(L, hold, ++count);
      lua_pop(L, 1);
    }
  } else {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "syrup: cannot encode a record key that is not a string");
      encode(L, -2, depth + 1);
      lua_rawseti(L, hold, ++count);
      encode(L, -1, depth + 1);
      lua_rawseti(L, hold, ++count);
      lua_pop(L, 1);
    }
  }
  int step = is_set ? 1 : 2, nitems = count / step;
  item_t *items = lua_newuserdatauv(L, sizeof(item_t) * (size_t)(nitems ? nitems : 1), 0);
  for (int i = 0; i < nitems; i++) {
    lua_rawgeti(L, hold, i * step + 1);
    items[i].s = lua_tolstring(L, -1, &items[i].n);
    items[i].pos = i * step + 1;
    lua_pop(L, 1); /* still held by the table */
  }
  qsort(items, (size_t)nitems, sizeof *items, item_cmp);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, is_set ? '#' : '{');
  for (int i = 0; i < nitems; i++) {
    if (is_set && i > 0 && item_cmp(&items[i - 1], &items[i]) == 0)
      luaL_error(L, "syrup: cannot encode a set with duplicate members");
    luaL_addlstring(&b, items[i].s, items[i].n);
    if (!is_set) {
      lua_rawgeti(L, hold, items[i].pos + 1);
      luaL_addvalue(&b);
    }
  }
  luaL_addchar(&b, is_set ? '$' : '}');
  luaL_pushresult(&b);
  lua_replace(L, hold);
  lua_settop(L, hold);
}

/* [-0, +1, e] Pushes `<label args...>` for a label symbol and args at idx
 * (or none when idx is 0). */
static void encode_record(lua_State *L, const char *label, int idx, int depth) {
  lua_pushliteral(L, "<");
  push_atom(L, label, strlen(label), '\'');
  if (idx) {
    lua_Integer len = list_len(L, idx);
    encode_seq(L, idx, len, "", "", depth);
  } else {
    lua_pushliteral(L, "");
  }
  lua_pushliteral(L, ">");
  lua_concat(L, 4);
}

/* [-0, +1, e] Pushes `<desc:tagged tag value>` for the table at idx, whose
 * field tag is the tag and field vfield the value. */
static void encode_tagged(lua_State *L, int idx, const char *vfield, int depth) {
  size_t n;
  lua_pushliteral(L, "<");
  push_atom(L, "desc:tagged", 11, '\'');
  lua_getfield(L, idx, "tag");
  const char *s = lua_tolstring(L, -1, &n);
  if (!s || !ocap_syrup_utf8(s, n))
    luaL_error(L, "syrup: malformed tagged box");
  push_atom(L, s, n, '\'');
  lua_remove(L, -2);
  lua_getfield(L, idx, vfield);
  encode(L, -1, depth + 1);
  lua_remove(L, -2);
  lua_pushliteral(L, ">");
  lua_concat(L, 5);
}

/* [-0, +1, e] Pushes the encoding of a box of kind k at idx. */
static void encode_box(lua_State *L, int idx, int k, int depth) {
  size_t n;
  const char *s;
  switch (k) {
  case S_BYTES_MT:
  case S_SYMBOL_MT:
    lua_getfield(L, idx, k == S_BYTES_MT ? "bytes" : "name");
    s = lua_tolstring(L, -1, &n);
    if (!s)
      luaL_error(L, "syrup: malformed %s box", box_names[k - S_BYTES_MT]);
    push_atom(L, s, n, k == S_BYTES_MT ? ':' : '\'');
    lua_remove(L, -2);
    return;
  case S_BIGINT_MT: {
    lua_getfield(L, idx, "digits");
    s = lua_tolstring(L, -1, &n);
    if (!s)
      luaL_error(L, "syrup: malformed bigint box");
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n + 2);
    size_t len = ocap_syrup_put_decimal(s, n, out);
    if (len == 0)
      luaL_error(L, "syrup: malformed bigint box");
    luaL_pushresultsize(&b, len);
    lua_remove(L, -2);
    return;
  }
  case S_TAGGED_MT:
    encode_tagged(L, idx, "value", depth);
    return;
  case S_RECORD_MT:
    lua_pushliteral(L, "<");
    lua_getfield(L, idx, "label");
    encode(L, -1, depth + 1);
    lua_remove(L, -2);
    if (lua_getfield(L, idx, "args") != LUA_TTABLE)
      luaL_error(L, "syrup: malformed record box");
    encode_seq(L, -1, list_len(L, -1), "", "", depth);
    lua_remove(L, -2);
    lua_pushliteral(L, ">");
    lua_concat(L, 4);
    return;
  default: /* S_SET_MT */
    if (lua_getfield(L, idx, "items") != LUA_TTABLE)
      luaL_error(L, "syrup: malformed set box");
    encode_sorted(L, -1, 1, depth);
    lua_remove(L, -2);
    return;
  }
}

/* [-0, +1, e] Pushes the Syrup encoding of the value at idx. */
static void encode(lua_State *L, int idx, int depth) {
  idx = lua_absindex(L, idx);
  if (depth > OCAP_SYRUP_MAX_DEPTH)
    luaL_error(L, "syrup: cannot encode a value nested more than %d deep", OCAP_SYRUP_MAX_DEPTH);
  luaL_checkstack(L, 8, "syrup: nested too deeply");
  char num[OCAP_SYRUP_NUM_MAX];
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    encode_record(L, "void", 0, depth);
    return;
  case LUA_TBOOLEAN:
    lua_pushstring(L, lua_toboolean(L, idx) ? "t" : "f");
    return;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      lua_pushlstring(L, num, ocap_syrup_put_int(lua_tointeger(L, idx), num));
    } else {
      ocap_syrup_put_double(lua_tonumber(L, idx), num);
      lua_pushlstring(L, num, 9);
    }
    return;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (!ocap_syrup_utf8(s, n))
      luaL_error(L, "syrup: cannot encode a string that is not valid UTF-8 "
                    "(byte arrays are syrup.bytes)");
    push_atom(L, s, n, '"');
    return;
  }
  case LUA_TTABLE:
  case LUA_TUSERDATA:
    break;
  default:
    luaL_error(L, "syrup: cannot encode a %s", luaL_typename(L, idx));
  }
  int k = box_kind(L, idx);
  if (k) {
    encode_box(L, idx, k, depth);
    return;
  }
  /* One of pass's styles: classify says which, and where its contents are. */
  get_state(L, S_CLASSIFY);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 3);
  const char *style = lua_tostring(L, -3);
  if (!style)
    luaL_error(L, "syrup: %s", lua_tostring(L, -2) ? lua_tostring(L, -2) : "cannot encode");
  int top = lua_gettop(L);
  if (strcmp(style, "copyArray") == 0) {
    encode_seq(L, top, lua_tointeger(L, top - 1), "[", "]", depth);
  } else if (strcmp(style, "copyRecord") == 0) {
    encode_sorted(L, top, 0, depth);
  } else if (strcmp(style, "null") == 0) {
    encode_record(L, "null", 0, depth);
  } else if (strcmp(style, "symbol") == 0 || strcmp(style, "byteArray") == 0 ||
             strcmp(style, "bigint") == 0) {
    /* ocap's own boxes (pass.symbol, pass.bytes, pass.bigint): classify
     * gives their contents, whose fields are named as in this module's. */
    int k = style[0] == 's' ? S_SYMBOL_MT : style[1] == 'y' ? S_BYTES_MT : S_BIGINT_MT;
    if (k == S_SYMBOL_MT) {
      size_t n;
      lua_getfield(L, top - 1, "name");
      const char *s = lua_tolstring(L, -1, &n);
      if (!s || !ocap_syrup_utf8(s, n))
        luaL_error(L, "syrup: cannot encode a symbol that is not valid UTF-8");
      lua_pop(L, 1);
    }
    encode_box(L, top - 1, k, depth);
  } else if (strcmp(style, "tagged") == 0) {
    encode_tagged(L, top - 1, "payload", depth);
  } else if (strcmp(style, "error") == 0) {
    lua_newtable(L);
    lua_getfield(L, idx, "message");
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "syrup: cannot encode an error whose message is not a string");
    lua_rawseti(L, -2, 1);
    encode_record(L, "desc:error", lua_gettop(L), depth);
    lua_remove(L, -2);
  } else {
    luaL_error(L,
               "syrup: cannot encode a %s: references are encoded by a CapTP "
               "session (ocap.remote)",
               style);
  }
  lua_replace(L, top - 2);
  lua_settop(L, top - 2);
}

/* syrup.encode(v) -> string. Raises `syrup: ...` for what Syrup cannot
 * carry. [-0, +1, e] */
static int l_encode(lua_State *L) {
  lua_settop(L, 1);
  encode(L, 1, 0);
  return 1;
}

/* ---- decoding ---- */

/* [-0, +0, e] Reads the next token or raises the reader's error. */
static void next_tok(lua_State *L, ocap_syrup_reader_t *r, ocap_syrup_tok_t *t) {
  int rc = ocap_syrup_next(r, t);
  if (rc < 0)
    luaL_error(L, "syrup: %s at byte %d", r->err, (int)r->err_off);
  if (rc == 0)
    luaL_error(L, "syrup: internal error: input ended inside a value");
}

/* [-0, +1, e] Pushes an integer token: a Lua integer when it fits in 64
 * bits, else a bigint box. */
static void push_int(lua_State *L, const ocap_syrup_tok_t *t) {
  /* Accumulate negatively so that -2^63 fits. */
  long long v = 0;
  int fits = t->n <= 19;
  for (size_t i = 0; fits && i < t->n; i++) {
    int d = t->p[i] - '0';
    if (v < (LLONG_MIN + d) / 10)
      fits = 0;
    else
      v = v * 10 - d;
  }
  if (fits && !t->neg && v == LLONG_MIN)
    fits = 0;
  if (fits) {
    lua_pushinteger(L, t->neg ? v : -v);
    return;
  }
  lua_createtable(L, 0, 1);
  if (t->neg) {
    lua_pushliteral(L, "-");
    lua_pushlstring(L, t->p, t->n);
    lua_concat(L, 2);
  } else {
    lua_pushlstring(L, t->p, t->n);
  }
  lua_setfield(L, -2, "digits");
  set_box(L, S_BIGINT_MT);
}

static void decode(lua_State *L, ocap_syrup_reader_t *r, const ocap_syrup_tok_t *t);

/* [-0, +1, e] Reads items up to the closing token into a new list table
 * (marked as pass's array, with `n` when an item is nil); returns the
 * count. */
static lua_Integer decode_items(lua_State *L, ocap_syrup_reader_t *r) {
  ocap_syrup_tok_t t;
  lua_Integer n = 0;
  int holes = 0;
  lua_newtable(L);
  for (;;) {
    next_tok(L, r, &t);
    if (t.kind == OCAP_SY_CLOSE)
      break;
    decode(L, r, &t);
    holes |= lua_isnil(L, -1);
    lua_seti(L, -2, ++n);
  }
  if (holes) {
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
  }
  get_state(L, S_ARRAY_MT);
  lua_setmetatable(L, -2);
  return n;
}

/* Whether the token is the symbol s. */
static int is_symbol(const ocap_syrup_tok_t *t, const char *s) {
  return t->kind == OCAP_SY_SYMBOL && t->n == strlen(s) && memcmp(t->p, s, t->n) == 0;
}

/* [-0, +1, e] Reads a record after its `<`: the OCapN passables void,
 * null, desc:tagged and desc:error become nil, pass.null, a tagged box and
 * a pass error; any other record a record box. */
static void decode_record(lua_State *L, ocap_syrup_reader_t *r) {
  ocap_syrup_tok_t label;
  next_tok(L, r, &label);
  if (label.kind == OCAP_SY_CLOSE)
    luaL_error(L, "syrup: internal error: record without a label");
  decode(L, r, &label);
  int li = lua_gettop(L), ai = li + 1;
  lua_Integer n = decode_items(L, r);
  if (is_symbol(&label, "void") && n == 0) {
    lua_settop(L, li - 1);
    lua_pushnil(L);
    return;
  }
  if (is_symbol(&label, "null") && n == 0) {
    lua_settop(L, li - 1);
    get_state(L, S_NULL);
    return;
  }
  if (is_symbol(&label, "desc:tagged") && n == 2) {
    lua_geti(L, ai, 1);
    if (box_kind(L, -1) == S_SYMBOL_MT) {
      lua_createtable(L, 0, 2);
      lua_getfield(L, -2, "name");
      lua_setfield(L, -2, "tag");
      lua_geti(L, ai, 2);
      lua_setfield(L, -2, "value");
      set_box(L, S_TAGGED_MT);
      lua_replace(L, li);
      lua_settop(L, li);
      return;
    }
    lua_settop(L, ai);
  }
  if (is_symbol(&label, "desc:error") && n == 1) {
    if (lua_geti(L, ai, 1) == LUA_TSTRING) {
      get_state(L, S_MAKE_ERROR);
      lua_insert(L, -2);
      lua_call(L, 1, 1);
      lua_replace(L, li);
      lua_settop(L, li);
      return;
    }
    lua_settop(L, ai);
  }
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, li);
  lua_setfield(L, -2, "label");
  lua_pushvalue(L, ai);
  lua_setfield(L, -2, "args");
  set_box(L, S_RECORD_MT);
  lua_replace(L, li);
  lua_settop(L, li);
}

/* [-0, +1, e] Reads a dictionary after its `{`. Keys must be strings
 * (OCapN structs); a void value leaves its key out, as Lua cannot hold
 * nil in a table. */
static void decode_dict(lua_State *L, ocap_syrup_reader_t *r) {
  ocap_syrup_tok_t t;
  lua_newtable(L);
  for (;;) {
    next_tok(L, r, &t);
    if (t.kind == OCAP_SY_CLOSE)
      return;
    if (t.kind != OCAP_SY_STRING)
      luaL_error(L, "syrup: dictionary key is not a string at byte %d", (int)t.off);
    lua_pushlstring(L, t.p, t.n);
    next_tok(L, r, &t);
    decode(L, r, &t);
    lua_rawset(L, -3);
  }
}

/* [-0, +1, e] Pushes the value that starts with token t. */
static void decode(lua_State *L, ocap_syrup_reader_t *r, const ocap_syrup_tok_t *t) {
  luaL_checkstack(L, 8, "syrup: nested too deeply");
  switch (t->kind) {
  case OCAP_SY_BOOL:
    lua_pushboolean(L, t->b);
    return;
  case OCAP_SY_INT:
    push_int(L, t);
    return;
  case OCAP_SY_FLOAT:
    lua_pushnumber(L, t->d);
    return;
  case OCAP_SY_BYTES:
    push_string_box(L, S_BYTES_MT, "bytes", t->p, t->n);
    return;
  case OCAP_SY_STRING:
    lua_pushlstring(L, t->p, t->n);
    return;
  case OCAP_SY_SYMBOL:
    push_string_box(L, S_SYMBOL_MT, "name", t->p, t->n);
    return;
  case OCAP_SY_LIST:
    decode_items(L, r);
    return;
  case OCAP_SY_DICT:
    decode_dict(L, r);
    return;
  case OCAP_SY_SET:
    lua_createtable(L, 0, 1);
    decode_items(L, r);
    lua_setfield(L, -2, "items");
    set_box(L, S_SET_MT);
    return;
  case OCAP_SY_RECORD:
    decode_record(L, r);
    return;
  default:
    luaL_error(L, "syrup: internal error: unexpected token");
  }
}

/* syrup.decode(bytes) -> value. Raises `syrup: <what> at byte <offset>`
 * for input that is not exactly one canonical Syrup value. [-0, +1, e] */
static int l_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_settop(L, 1);
  ocap_syrup_reader_t *r = take_reader(L);
  ocap_syrup_tok_t t;
  ocap_syrup_reader_init(r, s, n);
  next_tok(L, r, &t);
  decode(L, r, &t);
  int rc = ocap_syrup_next(r, &t);
  give_reader(L, 2);
  if (rc != 0)
    return luaL_error(L, "syrup: %s at byte %d", r->err ? r->err : "internal error",
                      (int)r->err_off);
  return 1;
}

/* syrup.check(bytes) -> true | nil, message, offset: whether bytes is
 * exactly one canonical Syrup value, without building it. [-0, +1|3, e] */
static int l_check(lua_State *L) {
  size_t n, off;
  const char *s = luaL_checklstring(L, 1, &n), *err;
  lua_settop(L, 1);
  ocap_syrup_reader_t *r = take_reader(L);
  ocap_syrup_tok_t t;
  int rc;
  ocap_syrup_reader_init(r, s, n);
  while ((rc = ocap_syrup_next(r, &t)) == 1) {
  }
  give_reader(L, 2);
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  err = r->err;
  off = r->err_off;
  lua_pushnil(L);
  lua_pushstring(L, err);
  lua_pushinteger(L, (lua_Integer)off);
  return 3;
}

/* Whether a reader's error only says that the input stopped early, so
 * that more bytes of a stream may complete the value. */
static int is_truncation(const ocap_syrup_reader_t *r) {
  return strncmp(r->err, "truncated input", 15) == 0 || strcmp(r->err, "empty input") == 0 ||
         strcmp(r->err, "length exceeds the remaining input") == 0;
}

/* syrup.frame(bytes [, init]) -> length | false  [-0, +1, e]
 * For a stream of concatenated values (CapTP over a netlayer): the length
 * of the first complete value that starts at position init of bytes (1 by
 * default), or false when the rest of bytes holds only the start of one.
 * Raises `syrup: <what> at byte <offset>` (from init) when the bytes there
 * cannot start a canonical value, whatever may follow. */
static int l_frame(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer init = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, init >= 1 && (size_t)init <= n + 1, 2, "initial position out of range");
  s += init - 1;
  n -= (size_t)(init - 1);
  lua_settop(L, 2);
  ocap_syrup_reader_t *r = take_reader(L);
  ocap_syrup_tok_t t;
  ocap_syrup_reader_init(r, s, n);
  while (!r->done) {
    if (ocap_syrup_next(r, &t) < 0) {
      give_reader(L, 3);
      if (is_truncation(r)) {
        lua_pushboolean(L, 0);
        return 1;
      }
      return luaL_error(L, "syrup: %s at byte %d", r->err, (int)r->err_off);
    }
  }
  give_reader(L, 3);
  lua_pushinteger(L, (lua_Integer)r->pos);
  return 1;
}

/* [-0, +1, -] __eq of the atom boxes: same kind, same field. */
static int box_eq(lua_State *L) {
  int k = box_kind(L, 1);
  if (k == 0 || k != box_kind(L, 2)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  const char *f = k == S_BYTES_MT ? "bytes" : k == S_SYMBOL_MT ? "name" : "digits";
  lua_getfield(L, 1, f);
  lua_getfield(L, 2, f);
  lua_pushboolean(L, lua_rawequal(L, -1, -2));
  return 1;
}

/* [-0, +1, e] __tostring of the boxes, for messages and tests. */
static int box_tostring(lua_State *L) {
  int k = box_kind(L, 1);
  const char *name = k ? box_names[k - S_BYTES_MT] : "?";
  switch (k) {
  case S_BYTES_MT:
    lua_getfield(L, 1, "bytes");
    lua_pushfstring(L, "syrup.bytes(%d bytes)", (int)luaL_len(L, -1));
    return 1;
  case S_SYMBOL_MT:
    lua_getfield(L, 1, "name");
    lua_pushfstring(L, "syrup.symbol(%s)", lua_tostring(L, -1));
    return 1;
  case S_BIGINT_MT:
    lua_getfield(L, 1, "digits");
    lua_pushfstring(L, "syrup.bigint(%s)", lua_tostring(L, -1));
    return 1;
  default:
    lua_pushfstring(L, "syrup.%s", name);
    return 1;
  }
}

static const luaL_Reg module_funcs[] = {
    {"encode", l_encode}, {"decode", l_decode}, {"check", l_check},   {"bytes", l_bytes},
    {"symbol", l_symbol}, {"bigint", l_bigint}, {"tagged", l_tagged}, {"record", l_record},
    {"set", l_set},       {"kind", l_kind},     {"frame", l_frame},   {NULL, NULL}};

int luaopen_ocap_syrup(lua_State *L) {
  lua_createtable(L, S_COUNT, 0); /* the state */
  int st = lua_gettop(L);
  for (int k = S_BYTES_MT; k <= S_SET_MT; k++) {
    lua_createtable(L, 0, 4);
    lua_pushfstring(L, "ocap.syrup.%s", box_names[k - S_BYTES_MT]);
    lua_setfield(L, -2, "__name");
    /* The metatable cannot be reached or changed from Lua. */
    lua_pushfstring(L, "ocap.syrup.%s", box_names[k - S_BYTES_MT]);
    lua_setfield(L, -2, "__metatable");
    lua_pushvalue(L, st);
    lua_pushcclosure(L, box_tostring, 1);
    lua_setfield(L, -2, "__tostring");
    if (k <= S_BIGINT_MT) {
      lua_pushvalue(L, st);
      lua_pushcclosure(L, box_eq, 1);
      lua_setfield(L, -2, "__eq");
    }
    lua_rawseti(L, st, k);
  }
  /* ocap's passables, from lua/ocap/pass.lua. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "ocap.pass");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "null");
  lua_rawseti(L, st, S_NULL);
  lua_getfield(L, -1, "ARRAY_MT");
  lua_rawseti(L, st, S_ARRAY_MT);
  lua_getfield(L, -1, "classify");
  lua_rawseti(L, st, S_CLASSIFY);
  lua_getfield(L, -1, "makeError");
  lua_rawseti(L, st, S_MAKE_ERROR);
  lua_pop(L, 1);
  lua_pushboolean(L, 0); /* the first call makes the spare reader */
  lua_rawseti(L, st, S_READER);
  luaL_newlibtable(L, module_funcs);
  lua_pushvalue(L, st);
  luaL_setfuncs(L, module_funcs, 1);
  lua_pushinteger(L, OCAP_SYRUP_MAX_DEPTH);
  lua_setfield(L, -2, "maxDepth");
  lua_remove(L, st);
  return 1;
}
