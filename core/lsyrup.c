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
  S_READ_VALUE, /* read_value, the protected part of syrup.read */
  S_COUNT = S_READ_VALUE
};

static const char *const box_names[] = {"bytes", "symbol", "bigint", "tagged", "record", "set"};

/* [-0, +1, -] Pushes field i of the state. */
static void get_state(lua_State *L, int i) {
  lua_rawgeti(L, lua_upvalueindex(1), i);
}

/* The identities of the boxes' metatables (S_BYTES_MT..S_SET_MT, from
 * index 1) and of pass's array mark (index 0), upvalue 2 of every
 * function: telling a box from a table compares pointers, not values
 * fetched from the state one by one. */
typedef struct mts {
  const void *mt[S_SET_MT + 1];
} mts_t;

/* [-0, +0, -] Which box (S_BYTES_MT..S_SET_MT) the value at idx is, 0 for
 * another table or userdata, or -1 for a table marked as pass's array. */
static int box_kind_or_array(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
    return 0;
  const void *mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  const mts_t *m = lua_touserdata(L, lua_upvalueindex(2));
  for (int k = S_BYTES_MT; k <= S_SET_MT; k++) {
    if (m->mt[k] == mt)
      return k;
  }
  return m->mt[0] == mt ? -1 : 0;
}

/* [-0, +0, -] Which box (S_BYTES_MT..S_SET_MT) the value at idx is, or 0. */
static int box_kind(lua_State *L, int idx) {
  int k = box_kind_or_array(L, idx);
  return k > 0 ? k : 0;
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

/*
 * The bytes written so far. They start in a buffer on the C stack; a
 * bigger value moves them to a userdata held at stack slot `slot`, so that
 * an error raised halfway (a value Syrup cannot carry) leaves nothing to
 * free. One buffer is written for the whole value: no Lua string is made
 * for its parts.
 */
typedef struct wbuf {
  char *p;
  size_t n, cap;
  int slot;
} wbuf_t;

/* [-0, +0, m] Makes room for `more` bytes. */
static void wb_reserve(lua_State *L, wbuf_t *b, size_t more) {
  if (b->n + more <= b->cap)
    return;
  size_t cap = b->cap * 2;
  while (cap < b->n + more)
    cap *= 2;
  char *p = lua_newuserdatauv(L, cap, 0);
  memcpy(p, b->p, b->n);
  lua_replace(L, b->slot);
  b->p = p;
  b->cap = cap;
}

/* [-0, +0, m] Appends n bytes. */
static void wb_put(lua_State *L, wbuf_t *b, const char *s, size_t n) {
  wb_reserve(L, b, n);
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

/* [-0, +0, m] Appends one byte. */
static void wb_putc(lua_State *L, wbuf_t *b, char c) {
  wb_reserve(L, b, 1);
  b->p[b->n++] = c;
}

static void encode(lua_State *L, wbuf_t *b, int idx, int depth);

/* An encoded item kept for sorting: where its bytes are in the buffer (a
 * dictionary entry's key; the value follows it, up to `end`). */
typedef struct item {
  size_t off, n, end;
  const wbuf_t *b;
} item_t;

static int item_cmp(const void *a, const void *c) {
  const item_t *x = a, *y = c;
  return ocap_syrup_cmp(x->b->p + x->off, x->n, y->b->p + y->off, y->n);
}

/* [-0, +0, m] Appends the encoding of a symbol or string. */
static void put_atom(lua_State *L, wbuf_t *b, const char *s, size_t n, char tag) {
  char pre[OCAP_SYRUP_NUM_MAX];
  wb_put(L, b, pre, ocap_syrup_put_len(n, tag, pre));
  wb_put(L, b, s, n);
}

/* [-0, +0, e] Appends the items 1..len of the array at idx (nils count). */
static void encode_seq(lua_State *L, wbuf_t *b, int idx, lua_Integer len, int depth) {
  idx = lua_absindex(L, idx);
  for (lua_Integer i = 1; i <= len; i++) {
    lua_geti(L, idx, i);
    encode(L, b, -1, depth + 1);
    lua_pop(L, 1);
  }
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
 * [-0, +0, e] Appends the encoding of a set (items at idx, a list) or of a
 * dictionary (the table at idx, whose keys must all be strings), sorted by
 * encoded bytes. The items are written one after the other, then put in
 * order through a copy. Duplicate set members are an error: the decoder
 * refuses them too.
 */
static void encode_sorted(lua_State *L, wbuf_t *b, int idx, int is_set, int depth) {
  idx = lua_absindex(L, idx);
  size_t cap = 8, count = 0;
  item_t *items = lua_newuserdatauv(L, cap * sizeof *items, 0);
  int hold = lua_gettop(L);
  wb_putc(L, b, is_set ? '#' : '{');
  size_t start = b->n;
  lua_Integer len = is_set ? list_len(L, idx) : 0;
  if (!is_set)
    lua_pushnil(L);
  for (lua_Integer i = 1;; i++) {
    if (count == cap) {
      item_t *more = lua_newuserdatauv(L, 2 * cap * sizeof *items, 0);
      memcpy(more, items, count * sizeof *items);
      lua_replace(L, hold);
      items = more;
      cap *= 2;
    }
    item_t *it = &items[count];
    it->b = b;
    it->off = b->n;
    if (is_set) {
      if (i > len)
        break;
      lua_geti(L, idx, i);
      encode(L, b, -1, depth + 1);
      lua_pop(L, 1);
      it->n = b->n - it->off;
    } else {
      if (!lua_next(L, idx))
        break;
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "syrup: cannot encode a record key that is not a string");
      encode(L, b, -2, depth + 1);
      it->n = b->n - it->off;
      encode(L, b, -1, depth + 1);
      lua_pop(L, 1);
    }
    it->end = b->n;
    count++;
  }
  size_t used = b->n - start;
  if (count > 1) {
    qsort(items, count, sizeof *items, item_cmp);
    for (size_t i = 1; is_set && i < count; i++) {
      if (item_cmp(&items[i - 1], &items[i]) == 0)
        luaL_error(L, "syrup: cannot encode a set with duplicate members");
    }
    char *copy = lua_newuserdatauv(L, used, 0);
    memcpy(copy, b->p + start, used);
    size_t at = start;
    for (size_t i = 0; i < count; i++) {
      size_t n = items[i].end - items[i].off;
      memcpy(b->p + at, copy + (items[i].off - start), n);
      at += n;
    }
    lua_pop(L, 1);
  }
  wb_putc(L, b, is_set ? '$' : '}');
  lua_settop(L, hold - 1);
}

/* [-0, +0, e] Appends `<label args...>` for a label symbol and args at idx
 * (or none when idx is 0). */
static void encode_record(lua_State *L, wbuf_t *b, const char *label, int idx, int depth) {
  wb_putc(L, b, '<');
  put_atom(L, b, label, strlen(label), '\'');
  if (idx)
    encode_seq(L, b, idx, list_len(L, idx), depth);
  wb_putc(L, b, '>');
}

/* [-0, +0, e] Appends `<desc:tagged tag value>` for the table at idx, whose
 * field tag is the tag and field vfield the value. */
static void encode_tagged(lua_State *L, wbuf_t *b, int idx, const char *vfield, int depth) {
  size_t n;
  idx = lua_absindex(L, idx);
  wb_putc(L, b, '<');
  put_atom(L, b, "desc:tagged", 11, '\'');
  lua_getfield(L, idx, "tag");
  const char *s = lua_tolstring(L, -1, &n);
  if (!s || !ocap_syrup_utf8(s, n))
    luaL_error(L, "syrup: malformed tagged box");
  put_atom(L, b, s, n, '\'');
  lua_pop(L, 1);
  lua_getfield(L, idx, vfield);
  encode(L, b, -1, depth + 1);
  lua_pop(L, 1);
  wb_putc(L, b, '>');
}

/* [-0, +0, e] Appends the encoding of a box of kind k at idx. */
static void encode_box(lua_State *L, wbuf_t *b, int idx, int k, int depth) {
  size_t n;
  const char *s;
  idx = lua_absindex(L, idx);
  switch (k) {
  case S_BYTES_MT:
  case S_SYMBOL_MT:
    lua_getfield(L, idx, k == S_BYTES_MT ? "bytes" : "name");
    s = lua_tolstring(L, -1, &n);
    if (!s)
      luaL_error(L, "syrup: malformed %s box", box_names[k - S_BYTES_MT]);
    put_atom(L, b, s, n, k == S_BYTES_MT ? ':' : '\'');
    lua_pop(L, 1);
    return;
  case S_BIGINT_MT: {
    lua_getfield(L, idx, "digits");
    s = lua_tolstring(L, -1, &n);
    if (!s)
      luaL_error(L, "syrup: malformed bigint box");
    wb_reserve(L, b, n + 2);
    size_t len = ocap_syrup_put_decimal(s, n, b->p + b->n);
    if (len == 0)
      luaL_error(L, "syrup: malformed bigint box");
    b->n += len;
    lua_pop(L, 1);
    return;
  }
  case S_TAGGED_MT:
    encode_tagged(L, b, idx, "value", depth);
    return;
  case S_RECORD_MT:
    wb_putc(L, b, '<');
    lua_getfield(L, idx, "label");
    encode(L, b, -1, depth + 1);
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "args") != LUA_TTABLE)
      luaL_error(L, "syrup: malformed record box");
    encode_seq(L, b, -1, list_len(L, -1), depth);
    lua_pop(L, 1);
    wb_putc(L, b, '>');
    return;
  default: /* S_SET_MT */
    if (lua_getfield(L, idx, "items") != LUA_TTABLE)
      luaL_error(L, "syrup: malformed set box");
    encode_sorted(L, b, -1, 1, depth);
    lua_pop(L, 1);
    return;
  }
}

/* [-0, +0, e] Appends the Syrup encoding of the value at idx. */
static void encode(lua_State *L, wbuf_t *b, int idx, int depth) {
  idx = lua_absindex(L, idx);
  if (depth > OCAP_SYRUP_MAX_DEPTH)
    luaL_error(L, "syrup: cannot encode a value nested more than %d deep", OCAP_SYRUP_MAX_DEPTH);
  luaL_checkstack(L, 8, "syrup: nested too deeply");
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    encode_record(L, b, "void", 0, depth);
    return;
  case LUA_TBOOLEAN:
    wb_putc(L, b, lua_toboolean(L, idx) ? 't' : 'f');
    return;
  case LUA_TNUMBER:
    wb_reserve(L, b, OCAP_SYRUP_NUM_MAX);
    if (lua_isinteger(L, idx)) {
      b->n += ocap_syrup_put_int(lua_tointeger(L, idx), b->p + b->n);
    } else {
      ocap_syrup_put_double(lua_tonumber(L, idx), b->p + b->n);
      b->n += 9;
    }
    return;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (!ocap_syrup_utf8(s, n))
      luaL_error(L, "syrup: cannot encode a string that is not valid UTF-8 "
                    "(byte arrays are syrup.bytes)");
    put_atom(L, b, s, n, '"');
    return;
  }
  case LUA_TTABLE:
  case LUA_TUSERDATA:
    break;
  default:
    luaL_error(L, "syrup: cannot encode a %s", luaL_typename(L, idx));
  }
  int k = box_kind_or_array(L, idx);
  if (k > 0) {
    encode_box(L, b, idx, k, depth);
    return;
  }
  if (k < 0) {
    /* A list marked as pass's array (CapTP builds its messages of them)
     * whose keys are 1..n goes without asking classify: it would say
     * copyArray of length n. Any other key (`n`, say) is classify's. */
    lua_Integer seq = 0;
    int plain = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) != seq + 1) {
        lua_pop(L, 1);
        plain = 0;
        break;
      }
      seq++;
    }
    if (plain) {
      wb_putc(L, b, '[');
      encode_seq(L, b, idx, seq, depth);
      wb_putc(L, b, ']');
      return;
    }
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
    wb_putc(L, b, '[');
    encode_seq(L, b, top, lua_tointeger(L, top - 1), depth);
    wb_putc(L, b, ']');
  } else if (strcmp(style, "copyRecord") == 0) {
    encode_sorted(L, b, top, 0, depth);
  } else if (strcmp(style, "null") == 0) {
    encode_record(L, b, "null", 0, depth);
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
    encode_box(L, b, top - 1, k, depth);
  } else if (strcmp(style, "tagged") == 0) {
    encode_tagged(L, b, top - 1, "payload", depth);
  } else if (strcmp(style, "error") == 0) {
    lua_newtable(L);
    lua_getfield(L, idx, "message");
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "syrup: cannot encode an error whose message is not a string");
    lua_rawseti(L, -2, 1);
    encode_record(L, b, "desc:error", lua_gettop(L), depth);
    lua_pop(L, 1);
  } else {
    luaL_error(L,
               "syrup: cannot encode a %s: references are encoded by a CapTP "
               "session (ocap.remote)",
               style);
  }
  lua_settop(L, top - 3);
}

/* Bytes of the C stack a value is first encoded in: a CapTP message fits. */
#define ENCODE_STACK_BUF 512

/* syrup.encode(v) -> string. Raises `syrup: ...` for what Syrup cannot
 * carry. [-0, +1, e] */
static int l_encode(lua_State *L) {
  char first[ENCODE_STACK_BUF];
  lua_settop(L, 1);
  lua_pushnil(L); /* slot 2: the buffer once it outgrows `first` */
  wbuf_t b = {first, 0, sizeof first, 2};
  encode(L, &b, 1, 0);
  lua_pushlstring(L, b.p, b.n);
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

/* [-1, +1, e] The protected part of syrup.read: decodes one value with the
 * reader (a light userdata) at index 1. */
static int read_value(lua_State *L) {
  ocap_syrup_reader_t *r = lua_touserdata(L, 1);
  ocap_syrup_tok_t t;
  next_tok(L, r, &t);
  decode(L, r, &t);
  return 1;
}

/*
 * syrup.read(bytes [, init]) -> length, value | false  [-0, +1|2, e]
 * For a stream of concatenated values (CapTP over a netlayer): decodes the
 * first value that starts at position init of bytes (1 by default) and
 * returns its length and the value, or false when the rest of bytes holds
 * only the start of one. It is syrup.frame and syrup.decode in one pass
 * over the bytes, without a copy of the value's bytes. Raises `syrup:
 * <what> at byte <offset>` (from init) as syrup.frame does.
 */
static int l_read(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer init = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, init >= 1 && (size_t)init <= n + 1, 2, "initial position out of range");
  lua_settop(L, 2);
  ocap_syrup_reader_t *r = take_reader(L);
  ocap_syrup_reader_init(r, s + init - 1, n - (size_t)(init - 1));
  get_state(L, S_READ_VALUE);
  lua_pushlightuserdata(L, r);
  int rc = lua_pcall(L, 1, 1, 0);
  /* The reader is ours again: read_value ended, one way or the other. */
  give_reader(L, 3);
  if (rc != LUA_OK) {
    if (r->err && is_truncation(r)) {
      lua_pushboolean(L, 0);
      return 1;
    }
    return lua_error(L);
  }
  lua_pushinteger(L, (lua_Integer)r->pos);
  lua_insert(L, -2);
  return 2;
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
    {"set", l_set},       {"kind", l_kind},     {"frame", l_frame},   {"read", l_read},
    {NULL, NULL}};

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
  mts_t *m = lua_newuserdatauv(L, sizeof *m, 0);
  for (int k = S_BYTES_MT; k <= S_SET_MT; k++) {
    lua_rawgeti(L, st, k);
    m->mt[k] = lua_topointer(L, -1);
    lua_pop(L, 1);
  }
  lua_rawgeti(L, st, S_ARRAY_MT);
  m->mt[0] = lua_topointer(L, -1);
  lua_pop(L, 1);
  int mi = lua_gettop(L);
  for (int k = S_BYTES_MT; k <= S_SET_MT; k++) {
    lua_rawgeti(L, st, k);
    lua_pushvalue(L, st);
    lua_pushvalue(L, mi);
    lua_pushcclosure(L, box_tostring, 2);
    lua_setfield(L, -2, "__tostring");
    if (k <= S_BIGINT_MT) {
      lua_pushvalue(L, st);
      lua_pushvalue(L, mi);
      lua_pushcclosure(L, box_eq, 2);
      lua_setfield(L, -2, "__eq");
    }
    lua_pop(L, 1);
  }
  lua_pushvalue(L, st);
  lua_pushvalue(L, mi);
  lua_pushcclosure(L, read_value, 2);
  lua_rawseti(L, st, S_READ_VALUE);
  luaL_newlibtable(L, module_funcs);
  lua_pushvalue(L, st);
  lua_pushvalue(L, mi);
  luaL_setfuncs(L, module_funcs, 2);
  lua_remove(L, mi);
  lua_pushinteger(L, OCAP_SYRUP_MAX_DEPTH);
  lua_setfield(L, -2, "maxDepth");
  lua_remove(L, st);
  return 1;
}
