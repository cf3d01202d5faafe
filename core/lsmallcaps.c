/*
 * lsmallcaps.c -- the smallcaps codec over Lua values; see lsmallcaps.h.
 *
 * Encoding walks a Lua value and writes its body into a buffer owned by a
 * userdata, so an error raised halfway (by valToSlot, or the vat's meter or
 * memory budget) leaks nothing. Decoding checks the whole body first
 * (ocap_sc_scan), so slotToVal is never called for a body that is then
 * found wrong, and then pushes the values straight onto the caller's
 * stack. Both charge the vat they run in for their work, up front where
 * the size is known and in batches where it is not, so a vat's meter
 * bounds them as it bounds Lua code.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsmallcaps.h"
#include "smallcaps.h"
#include "vat.h"

/* Built alone as a module for a host state (CMakeLists.txt), the codec is
 * never in a vat, so it has no meter to charge. */
#ifdef OCAP_SMALLCAPS_STANDALONE
#define ocap_vat_charge(L, cost) ((void)(L), (void)(cost))
#define ocap_vat_charge_to(v, L, cost) ((void)(v), (void)(L), (void)(cost))
#endif

/* [-0, +0, e] Charges the vat v, which owns L, or when v is NULL the vat
 * that owns L, if any: the syscalls and a delivery know their vat, and
 * spare the lookup. */
static void bill(ocap_vat_t *v, lua_State *L, long long cost) {
  if (v != NULL)
    ocap_vat_charge_to(v, L, cost);
  else
    ocap_vat_charge(L, cost);
}

/* The model (lsmallcaps.h) is upvalue 1 of every codec function; a codec
 * made by new() fills the entries up to M_MAKE_ERROR. */
#define M_COUNT M_MAKE_ERROR

/*
 * What the codec charges a vat, in instructions (about 1.4 ns each on the
 * reference machine, docs/security.md): one per BYTES_PER_INSTRUCTION bytes
 * scanned or written and VALUE_COST per value built or walked, about what
 * the work takes (20 to 80 ns a value), and far under what the Lua codec
 * cost.
 */
#define BYTES_PER_INSTRUCTION 8
#define VALUE_COST 16
/* Costs the encoder gathers before it charges them. */
#define CHARGE_BATCH 4096
/* Bodies up to this size are written on the C stack; longer ones move to
 * a userdata. */
#define LOCAL_BUFFER 512

#define LEAVE OCAP_SC_LEAVE

/* ---- encoding ---- */

typedef struct enc {
  lua_State *L;
  int loaded; /* the model's values are on the stack (enc_load) */
  int mb;     /* stack index of model value 1; value k is at mb + k - 1 */
  int mtkey;  /* stack index of the string "__metatable" */
  int v2s;    /* stack index of valToSlot, or 0 */
  int slots;  /* stack index of the slots table (nil until a slot is met) */
  int map;    /* stack index of object -> slot index (likewise) */
  int box;    /* stack index of the buffer's userdata */
  lua_Integer nslots;
  char *b;
  size_t n, cap;
  size_t charged_n; /* bytes of output already charged */
  long long cost;   /* instructions not yet charged */
  char local[LOCAL_BUFFER];
} enc_t;

#define MV(e, k) ((e)->mb + (k)-1)

/* [-0, +0, e] Adds instructions to the bill, charging it in batches. */
static void charge(enc_t *e, long long c) {
  e->cost += c;
  if (e->cost >= CHARGE_BATCH) {
    long long c2 = e->cost + (long long)((e->n - e->charged_n) / BYTES_PER_INSTRUCTION);
    e->cost = 0;
    e->charged_n = e->n;
    ocap_vat_charge(e->L, c2);
  }
}

/* [-0, +0, m] Returns room for need more bytes, moving the buffer to a
 * larger userdata (in its reserved stack slot) when it is short. */
static char *room(enc_t *e, size_t need) {
  if (e->cap - e->n >= need)
    return e->b + e->n;
  size_t cap = e->cap * 2;
  if (cap < e->n + need)
    cap = e->n + need;
  if (cap < e->n) /* overflow */
    luaL_error(e->L, "smallcaps body too large");
  charge(e, CHARGE_BATCH); /* charges the bytes written so far */
  char *nb = lua_newuserdatauv(e->L, cap, 0);
  memcpy(nb, e->b, e->n);
  lua_replace(e->L, e->box);
  e->b = nb;
  e->cap = cap;
  return nb + e->n;
}

/* [-0, +0, m] */
static void put(enc_t *e, const char *s, size_t n) {
  memcpy(room(e, n), s, n);
  e->n += n;
}

/* [-0, +0, m] */
static void put_char(enc_t *e, char c) {
  *room(e, 1) = c;
  e->n++;
}

/* Writes v in decimal; returns the length (at most 20). */
static size_t fmt_int(char *out, long long v) {
  return ocap_sc_format_int(v, out);
}

/* [-0, +0, m] Writes s as a JSON string, `!`-escaped when special. A long
 * string is measured first, so that its room is not six times its size. */
static void put_quoted(enc_t *e, const char *s, size_t n, int special) {
  size_t need = OCAP_SC_QUOTE_BOUND(n);
  if (n > 4096) {
    need = 3;
    for (size_t i = 0; i < n; i++) {
      unsigned char c = (unsigned char)s[i];
      need += c >= 0x20 && c != '"' && c != '\\' ? 1 : 6;
    }
  }
  charge(e, 1 + (long long)(n / BYTES_PER_INSTRUCTION));
  char *o = room(e, need);
  e->n = (size_t)(ocap_sc_quote(s, n, special, o) - e->b);
}

/* [-0, +0, m] Writes a slot index with its sigil, as `"$3"` or `"&3`
 * (without the closing quote when open is set). */
static void put_slot(enc_t *e, char sigil, lua_Integer index, int open) {
  char *o = room(e, 24);
  o[0] = '"';
  o[1] = sigil;
  size_t k = 2 + fmt_int(o + 2, (long long)index);
  if (!open)
    o[k++] = '"';
  e->n += k;
}

/* [-0, +0, e] Fills the model's slots on the stack, the first time a table
 * is met: a body of plain values never needs them. */
static void enc_load(enc_t *e) {
  lua_State *L = e->L;
  for (int k = 1; k <= M_PROMISE_MT; k++) {
    lua_rawgeti(L, lua_upvalueindex(1), k);
    lua_replace(L, MV(e, k));
  }
  lua_pushliteral(L, "__metatable");
  lua_replace(L, e->mtkey);
  e->loaded = 1;
}

/* [-0, +1] Pushes what getmetatable(v) gives in Lua: the metatable's
 * __metatable field when it has one. Returns 0 (pushing nothing) when v
 * has no metatable. */
static int push_getmetatable(enc_t *e, int idx) {
  lua_State *L = e->L;
  if (!lua_getmetatable(L, idx))
    return 0;
  lua_pushvalue(L, e->mtkey);
  if (lua_rawget(L, -2) != LUA_TNIL)
    lua_remove(L, -2);
  else
    lua_pop(L, 1);
  return 1;
}

static int enc_value(enc_t *e, int idx, int depth);

/* [-0, +0, e] Writes the remotable or promise at idx as a slot, asking
 * valToSlot for a new one. style: 1 remotable, 2 promise. */
static int enc_slot(enc_t *e, int idx, int style) {
  lua_State *L = e->L;
  if (!e->v2s)
    return LEAVE; /* plain data: the reference says it cannot pass */
  if (lua_isnil(L, e->map)) {
    lua_newtable(L);
    lua_replace(L, e->slots);
    lua_newtable(L);
    lua_replace(L, e->map);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->map) == LUA_TNUMBER) {
    lua_Integer index = lua_tointeger(L, -1);
    lua_pop(L, 1);
    put_slot(e, style == 2 ? '&' : '$', index, 0);
    return 0;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, e->v2s);
  lua_pushvalue(L, idx);
  if (style == 2)
    lua_pushliteral(L, "promise");
  else
    lua_pushliteral(L, "remotable");
  lua_call(L, 2, 1);
  if (lua_type(L, -1) != LUA_TSTRING)
    return LEAVE;
  lua_Integer index = e->nslots++;
  lua_rawseti(L, e->slots, index + 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, index);
  lua_rawset(L, e->map);
  if (style == 2) {
    put_slot(e, '&', index, 0);
    return 0;
  }
  /* The interface as it is now: valToSlot may have renamed the object. */
  lua_pushvalue(L, idx);
  if (lua_rawget(L, MV(e, M_REMOTABLES)) != LUA_TSTRING)
    return LEAVE;
  size_t ilen;
  const char *iface = lua_tolstring(L, -1, &ilen);
  put_slot(e, '$', index, 1);
  /* The quoted interface's opening quote becomes the dot: "$3.iface". */
  size_t at = e->n;
  put_quoted(e, iface, ilen, 0);
  e->b[at] = '.';
  lua_pop(L, 1);
  return 0;
}

/* [-0, +0, e] Writes an error value: its message and name only. */
static int enc_error(enc_t *e, int idx) {
  lua_State *L = e->L;
  lua_getfield(L, idx, "message");
  lua_getfield(L, idx, "name");
  if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
    return LEAVE;
  size_t ml, nl;
  const char *m = lua_tolstring(L, -2, &ml), *nm = lua_tolstring(L, -1, &nl);
  put(e, "{\"#error\":", 10);
  put_quoted(e, m, ml, 1);
  put(e, ",\"name\":", 8);
  put_quoted(e, nm, nl, 1);
  put_char(e, '}');
  lua_pop(L, 2);
  return 0;
}

/* [-0, +0, e] Writes elements 1..n of the table at c. */
static int enc_array(enc_t *e, int c, lua_Integer n, int depth) {
  lua_State *L = e->L;
  put_char(e, '[');
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1)
      put_char(e, ',');
    lua_rawgeti(L, c, i);
    if (enc_value(e, lua_gettop(L), depth))
      return LEAVE;
    lua_pop(L, 1);
    charge(e, VALUE_COST);
  }
  put_char(e, ']');
  return 0;
}

/* A record key being written. */
typedef struct kref {
  const char *s;
  size_t n;
  int idx;                  /* stack index of the key string */
  int is_index;             /* an array-index-like key */
  unsigned long long index; /* its value */
  size_t off, len;          /* where its member was written */
} kref_t;

static int kref_cmp(const void *a, const void *b) {
  const kref_t *x = a, *y = b;
  return ocap_sc_key_cmp(x->s, x->n, y->s, y->n);
}

static int kref_index_cmp(const void *a, const void *b) {
  const kref_t *x = *(const kref_t *const *)a, *y = *(const kref_t *const *)b;
  return x->index < y->index ? -1 : x->index > y->index;
}

#define SMALL_KEYS 16
/* Records with more keys are left to the Lua codec: their keys would take
 * that many slots of the Lua stack, which holds a million at most. */
#define MAX_RECORD_KEYS 100000

/*
 * [-0, +0, e] Writes the record at c, whose keys are all strings. Members
 * are encoded in sorted key order, which decides slot numbers, and emitted
 * in JavaScript's enumeration order: index-like keys first, in numeric
 * order. The keys are kept on the stack while it works, so that they stay
 * alive whatever valToSlot does to the table.
 */
static int enc_record(enc_t *e, int c, int depth) {
  lua_State *L = e->L;
  int kbase = lua_gettop(L);
  size_t nk = 0;
  lua_pushnil(L);
  while (lua_next(L, c)) {
    lua_pop(L, 1);
    luaL_checkstack(L, 3, "smallcaps record keys");
    lua_pushvalue(L, -1);
    nk++;
  }
  kref_t small[SMALL_KEYS];
  kref_t *ks =
      nk <= SMALL_KEYS ? small : lua_newuserdatauv(L, nk * (sizeof(kref_t) + sizeof(kref_t *)), 0);
  int nindex = 0;
  for (size_t i = 0; i < nk; i++) {
    kref_t *k = &ks[i];
    k->idx = kbase + 1 + (int)i;
    k->s = lua_tolstring(L, k->idx, &k->n);
    k->is_index = ocap_sc_index_key(k->s, k->n, &k->index);
    nindex += k->is_index;
  }
  long long lg = 1;
  while ((1LL << lg) < (long long)nk)
    lg++;
  charge(e, (long long)nk * (lg + VALUE_COST) + 1);
  qsort(ks, nk, sizeof *ks, kref_cmp);
  size_t start = e->n;
  put_char(e, '{');
  for (size_t i = 0; i < nk; i++) {
    kref_t *k = &ks[i];
    if (i > 0)
      put_char(e, ',');
    k->off = e->n;
    put_quoted(e, k->s, k->n, 1);
    put_char(e, ':');
    lua_pushvalue(L, k->idx);
    lua_rawget(L, c);
    if (enc_value(e, lua_gettop(L), depth))
      return LEAVE;
    lua_pop(L, 1);
    k->len = e->n - k->off;
  }
  put_char(e, '}');
  if (nindex) {
    /* Reorder the members: copy them aside, then write them back. */
    kref_t **order = nk <= SMALL_KEYS ? NULL : (kref_t **)(ks + nk);
    kref_t *small_order[SMALL_KEYS];
    if (!order)
      order = small_order;
    size_t no = 0;
    for (size_t i = 0; i < nk; i++)
      if (ks[i].is_index)
        order[no++] = &ks[i];
    qsort(order, no, sizeof *order, kref_index_cmp);
    for (size_t i = 0; i < nk; i++)
      if (!ks[i].is_index)
        order[no++] = &ks[i];
    size_t total = e->n - start;
    char *copy = lua_newuserdatauv(L, total, 0);
    memcpy(copy, e->b + start, total);
    e->n = start;
    put_char(e, '{');
    for (size_t i = 0; i < nk; i++) {
      if (i > 0)
        put_char(e, ',');
      put(e, copy + (order[i]->off - start), order[i]->len);
    }
    put_char(e, '}');
  }
  lua_settop(L, kbase);
  return 0;
}

/*
 * [-0, +0, e] Writes the table at c (a plain table or a hardened one's
 * contents) as pass.classify sees it: an array when its keys are 1..k, or
 * a marked array, or one counted by an integer n; a record when all its
 * keys are strings. Anything else is left to the reference.
 */
static int enc_container(enc_t *e, int c, int marked, int depth) {
  lua_State *L = e->L;
  if (++depth > OCAP_SC_MAX_DEPTH)
    return LEAVE;
  /* Keys met in the order 1, 2, ...: a sequence in the array part. */
  lua_Integer seq = 0;
  int broke = 0;
  lua_pushnil(L);
  while (lua_next(L, c)) {
    lua_pop(L, 1);
    if (lua_isinteger(L, -1) && lua_tointeger(L, -1) == seq + 1) {
      seq++;
      continue;
    }
    lua_pop(L, 1);
    broke = 1;
    break;
  }
  if (!broke) {
    if (seq > 0 || marked)
      return enc_array(e, c, seq, depth);
    put(e, "{}", 2);
    return 0;
  }
  lua_Integer count = 0, maxk = 0;
  size_t nk = 0;
  int only_n = 0;
  lua_pushnil(L);
  while (lua_next(L, c)) {
    lua_pop(L, 1);
    int kt = lua_type(L, -1);
    if (kt == LUA_TNUMBER && lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k < 1) {
        lua_pop(L, 1);
        return LEAVE;
      }
      count++;
      if (k > maxk)
        maxk = k;
    } else if (kt == LUA_TSTRING) {
      size_t kl;
      const char *ks = lua_tolstring(L, -1, &kl);
      only_n = ++nk == 1 && kl == 1 && ks[0] == 'n';
    } else {
      lua_pop(L, 1);
      return LEAVE;
    }
  }
  if (nk == 0) {
    if (count != maxk)
      return LEAVE; /* sparse */
    return enc_array(e, c, maxk, depth);
  }
  if (count == 0 && !marked)
    return nk <= MAX_RECORD_KEYS ? enc_record(e, c, depth) : LEAVE;
  if (nk == 1 && only_n) {
    lua_pushliteral(L, "n");
    lua_rawget(L, c); /* a raw read, as in pass.classify */
    int ok;
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    ok = ok && lua_isinteger(L, -1);
    lua_pop(L, 1);
    if (!ok || n < maxk)
      return LEAVE;
    return enc_array(e, c, n, depth);
  }
  return LEAVE;
}

/* [-0, +0, e] Writes a table or userdata. */
static int enc_table(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  luaL_checkstack(L, 8, "smallcaps nesting");
  if (!e->loaded)
    enc_load(e);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, MV(e, M_REMOTABLES)) != LUA_TNIL) {
    lua_pop(L, 1);
    return enc_slot(e, idx, 1);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  int promise = lua_rawget(L, MV(e, M_PROMISES)) == LUA_TBOOLEAN && lua_toboolean(L, -1);
  lua_pop(L, 1);
  int hasmt = push_getmetatable(e, idx);
  if (lua_type(L, idx) != LUA_TTABLE) {
    /* ocap.promise's promises are userdata. */
    if (!promise && hasmt && lua_rawequal(L, -1, MV(e, M_PROMISE_MT)))
      promise = 1;
    if (hasmt)
      lua_pop(L, 1);
    return promise ? enc_slot(e, idx, 2) : LEAVE;
  }
  if (!promise && hasmt && lua_rawequal(L, -1, MV(e, M_PROMISE_MT)))
    promise = 1;
  if (promise) {
    if (hasmt)
      lua_pop(L, 1);
    return enc_slot(e, idx, 2);
  }
  if (!hasmt)
    return enc_container(e, idx, 0, depth);
  if (lua_rawequal(L, -1, MV(e, M_ARRAY_MT))) {
    lua_pop(L, 1);
    return enc_container(e, idx, 1, depth);
  }
  if (lua_rawequal(L, -1, MV(e, M_ERROR_TAG))) {
    lua_pop(L, 1);
    return enc_error(e, idx);
  }
  lua_pop(L, 1);
  if (lua_rawequal(L, idx, MV(e, M_NULL))) {
    put(e, "null", 4);
    return 0;
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, MV(e, M_SHADOWS)) != LUA_TTABLE)
    return LEAVE; /* a foreign metatable */
  int shadow = lua_gettop(L);
  int marked = 0;
  if (push_getmetatable(e, shadow)) {
    marked = lua_rawequal(L, -1, MV(e, M_ARRAY_MT));
    lua_pop(L, 1);
  }
  int r = enc_container(e, shadow, marked, depth);
  if (r == 0)
    lua_pop(L, 1);
  return r;
}

/* [-0, +0, e] Writes the value at idx; depth counts enclosing tables. */
static int enc_value(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    put_quoted(e, s, n, 1);
    return 0;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      lua_Integer v = lua_tointeger(L, idx);
      char *o = room(e, 24);
      if (v <= OCAP_SC_MAX_SAFE && v >= -OCAP_SC_MAX_SAFE) {
        e->n += fmt_int(o, (long long)v);
      } else {
        size_t k = 0;
        o[k++] = '"';
        if (v > 0)
          o[k++] = '+';
        k += fmt_int(o + k, (long long)v);
        o[k++] = '"';
        e->n += k;
      }
    } else {
      double x = lua_tonumber(L, idx);
      if (x != x)
        put(e, "\"#NaN\"", 6);
      else if (isinf(x))
        put(e, x > 0 ? "\"#Infinity\"" : "\"#-Infinity\"", x > 0 ? 11 : 12);
      else
        e->n += ocap_sc_format_number(x, room(e, OCAP_SC_NUMBER_MAX));
    }
    return 0;
  case LUA_TTABLE:
  case LUA_TUSERDATA:
    return enc_table(e, idx, depth);
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx))
      put(e, "true", 4);
    else
      put(e, "false", 5);
    return 0;
  case LUA_TNIL:
    put(e, "\"#undefined\"", 12);
    return 0;
  default:
    return LEAVE; /* functions, threads, light userdata */
  }
}

/* Stack slots an encoding reserves: the model's values, the key string,
 * the slot tables and the buffer's userdata. */
#define ENC_SLOTS (M_PROMISE_MT + 4)

/* [-0, +ENC_SLOTS, e] Sets up an encoding. Its stack slots start as nil
 * and are filled when needed, so encoding a plain value costs little. */
static void enc_begin(lua_State *L, enc_t *e, int v2s) {
  e->L = L;
  e->loaded = 0;
  e->v2s = lua_isnoneornil(L, v2s) ? 0 : v2s;
  e->nslots = 0;
  e->charged_n = 0;
  e->cost = 0;
  luaL_checkstack(L, ENC_SLOTS + 8, "smallcaps");
  int top = lua_gettop(L);
  lua_settop(L, top + ENC_SLOTS);
  e->mb = top + 1;
  e->mtkey = top + M_PROMISE_MT + 1;
  e->slots = top + M_PROMISE_MT + 2;
  e->map = top + M_PROMISE_MT + 3;
  e->box = top + M_PROMISE_MT + 4;
  e->b = e->local;
  e->cap = sizeof e->local;
  e->b[0] = '#';
  e->n = 1;
}

/* [-0, +1, e] Ends an encoding: pushes { body, slots }, or nil when it was
 * left to the reference. */
static int enc_end(lua_State *L, enc_t *e, int r) {
  if (r) {
    lua_pushnil(L);
    return 1;
  }
  ocap_vat_charge(L, e->cost + (long long)((e->n - e->charged_n) / BYTES_PER_INSTRUCTION));
  lua_createtable(L, 0, 2);
  lua_pushlstring(L, e->b, e->n);
  lua_setfield(L, -2, "body");
  if (lua_isnil(L, e->slots))
    lua_createtable(L, 0, 0);
  else
    lua_pushvalue(L, e->slots);
  lua_setfield(L, -2, "slots");
  return 1;
}

/* [-0, +(1|2), e] Ends an encoding as two values, its body and its slots
 * (nil when it has none), so that a caller that hands them on at once
 * makes no table; or one nil when it was left to the reference. */
static int enc_end_parts(lua_State *L, enc_t *e, int r) {
  if (r) {
    lua_pushnil(L);
    return 1;
  }
  ocap_vat_charge(L, e->cost + (long long)((e->n - e->charged_n) / BYTES_PER_INSTRUCTION));
  lua_pushlstring(L, e->b, e->n);
  lua_pushvalue(L, e->slots);
  return 2;
}

/*
 * A flat encoding writes values that enc_value writes without the stack
 * slots enc_begin reserves (numbers, booleans, nil and plain strings)
 * into the local buffer, which it never outgrows: a body of them, the
 * commonest result and call, costs no stack work beyond its string.
 */

/* Strings up to this length are flat: their room, quoted, fits the local
 * buffer with what surrounds them. */
#define FLAT_STRING_MAX 80

_Static_assert(OCAP_SC_FLAT_MAX == LOCAL_BUFFER, "a flat body fits the local buffer");

/* [-0, +0] Sets up a flat encoding. */
static void enc_begin_flat(lua_State *L, enc_t *e) {
  e->L = L;
  e->loaded = 0;
  e->v2s = e->mb = e->mtkey = e->slots = e->map = e->box = 0;
  e->nslots = 0;
  e->charged_n = 0;
  e->cost = 0;
  e->b = e->local;
  e->cap = sizeof e->local;
  e->b[0] = '#';
  e->n = 1;
}

/* [-0, +2, e] Ends a flat encoding as enc_end_parts does: its body and
 * nil for its slots. */
static int enc_end_flat(lua_State *L, enc_t *e) {
  ocap_vat_charge(L, e->cost + (long long)(e->n / BYTES_PER_INSTRUCTION));
  lua_pushlstring(L, e->b, e->n);
  lua_pushnil(L);
  return 2;
}

/* [-0, +0] Whether the value at idx is written flat. */
static int flat_value(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  return t == LUA_TNUMBER || t == LUA_TBOOLEAN || t == LUA_TNIL ||
         (t == LUA_TSTRING && lua_rawlen(L, idx) <= FLAT_STRING_MAX);
}

/* [-0, +0, e] See lsmallcaps.h. */
size_t ocap_sc_encode_flat_value(ocap_vat_t *v, lua_State *L, int idx, char *buf) {
  enc_t e;
  if (lua_isinteger(L, idx)) {
    /* The commonest result, written straight into buf as enc_value
     * would write it. */
    lua_Integer x = lua_tointeger(L, idx);
    if (x <= OCAP_SC_MAX_SAFE && x >= -OCAP_SC_MAX_SAFE) {
      size_t n = 1 + fmt_int(buf + 1, (long long)x);
      buf[0] = '#';
      ocap_vat_charge_to(v, L, (long long)(n / BYTES_PER_INSTRUCTION));
      return n;
    }
  }
  if (!flat_value(L, idx))
    return 0;
  enc_begin_flat(L, &e);
  enc_value(&e, idx, 0);
  ocap_vat_charge_to(v, L, e.cost + (long long)(e.n / BYTES_PER_INSTRUCTION));
  memcpy(buf, e.b, e.n);
  return e.n;
}

/* [-0, +(1|2), e] encode and encodeParts: the value at 1, with valToSlot
 * at 2. */
static int encode_value(lua_State *L, int parts) {
  if (parts && flat_value(L, 1)) {
    enc_t e;
    enc_begin_flat(L, &e);
    enc_value(&e, 1, 0);
    return enc_end_flat(L, &e);
  }
  lua_settop(L, 2);
  enc_t e;
  enc_begin(L, &e, 2);
  int r = enc_value(&e, 1, 0);
  return parts ? enc_end_parts(L, &e, r) : enc_end(L, &e, r);
}

/* encode(v, valToSlot?) -> { body, slots } | nil  [-0, +1, e] */
static int sc_encode(lua_State *L) {
  return encode_value(L, 0);
}

/* encodeParts(v, valToSlot?) -> body, slots | nil  [-0, +(1|2), e] */
static int sc_encode_parts(lua_State *L) {
  return encode_value(L, 1);
}

/* Whether s needs neither escaping nor the `!` mark. */
static int plain_string(const char *s, size_t n) {
  if (n > 0 && (unsigned char)s[0] >= 33 && (unsigned char)s[0] <= 45)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == '"' || c == '\\')
      return 0;
  }
  return 1;
}

/* [-0, +0] The room enc_value asks for the value at idx when it is one
 * marshal.lua's serializeCall writes without classifying it (a safe
 * integer, a boolean or a plain string), else 0. */
static size_t simple_size(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER: {
    if (!lua_isinteger(L, idx))
      return 0;
    lua_Integer v = lua_tointeger(L, idx);
    return v <= OCAP_SC_MAX_SAFE && v >= -OCAP_SC_MAX_SAFE ? 24 : 0;
  }
  case LUA_TBOOLEAN:
    return 5;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return plain_string(s, n) ? OCAP_SC_QUOTE_BOUND(n) : 0;
  }
  default:
    return 0;
  }
}

/* [-0, +0] Whether the value at idx is one marshal.lua's serializeCall
 * writes without classifying it: a safe integer, a boolean or a plain
 * string. */
static int simple_value(lua_State *L, int idx) {
  return simple_size(L, idx) > 0;
}

/* [-0, +0, m] Writes the start of a call's body, `[<method>,[`, for the
 * simple method at idx; put_call_arg writes its arguments, and
 * put_call_close its end. */
static inline void put_call_open(enc_t *e, int idx) {
  put_char(e, '[');
  enc_value(e, idx, 1);
  put(e, ",[", 2);
}

/* [-0, +0, m] Writes the simple argument at idx, the first one or not. */
static inline void put_call_arg(enc_t *e, int idx, int first) {
  if (!first)
    put_char(e, ',');
  enc_value(e, idx, 1);
}

/* [-0, +0, m] */
static inline void put_call_close(enc_t *e) {
  put(e, "]]", 2);
}

/*
 * [-0, +0, e] Writes a call whose method and arguments are all simple as
 * marshal.lua's serializeCall does: the arguments are args[1..n] with n
 * from args.n or #args, read as a caller reads them. Returns 0, or LEAVE
 * with the buffer as it found it.
 */
static int enc_simple_call(enc_t *e) {
  lua_State *L = e->L;
  if (!simple_value(L, 1) || lua_type(L, 1) != LUA_TSTRING || lua_type(L, 2) != LUA_TTABLE)
    return LEAVE;
  lua_getfield(L, 2, "n");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_len(L, 2);
  }
  int isnum;
  lua_Integer n = lua_tointegerx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum)
    return LEAVE;
  size_t start = e->n;
  put_call_open(e, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 2, i);
    if (!simple_value(L, -1)) {
      lua_pop(L, 1);
      e->n = start;
      return LEAVE;
    }
    put_call_arg(e, lua_gettop(L), i == 1);
    lua_pop(L, 1);
  }
  put_call_close(e);
  return 0;
}

/* [-0, +(1|2), e] encodeCall and encodeCallParts: the body of the array
 * { method, args } (at 1 and 2, valToSlot at 3) without making that
 * table. */
static int encode_call(lua_State *L, int parts) {
  lua_settop(L, 3);
  if (lua_isnil(L, 1) || lua_isnil(L, 2)) {
    lua_pushnil(L); /* the table would not be an array of two */
    return 1;
  }
  enc_t e;
  enc_begin(L, &e, 3);
  int r = enc_simple_call(&e);
  if (r) {
    put_char(&e, '[');
    r = enc_value(&e, 1, 1);
    if (!r) {
      put_char(&e, ',');
      r = enc_value(&e, 2, 1);
    }
    if (!r)
      put_char(&e, ']');
  }
  return parts ? enc_end_parts(L, &e, r) : enc_end(L, &e, r);
}

/* encodeCall(method, args, valToSlot?) -> { body, slots } | nil  [-0, +1, e] */
static int sc_encode_call(lua_State *L) {
  return encode_call(L, 0);
}

/* encodeCallParts(method, args, valToSlot?) -> body, slots | nil
 * [-0, +(1|2), e] */
static int sc_encode_call_parts(lua_State *L) {
  return encode_call(L, 1);
}

/*
 * encodeCallArgs(method, valToSlot, ...) -> body, slots | nil
 * [-n, +(1|2), e] encodeCallParts of the arguments as they come, so that
 * an eventual send makes no table of them: a call of simple values is
 * written from the stack; any other goes through encodeCallParts with the
 * arguments gathered as table.pack gathers them.
 */
static int sc_encode_call_args(lua_State *L) {
  if (lua_gettop(L) < 2)
    lua_settop(L, 2);
  int top = lua_gettop(L);
  if (lua_type(L, 1) != LUA_TSTRING) {
    lua_pushnil(L); /* nil, or another method: encodeCallParts' to decide */
    return 1;
  }
  /* The room the body asks for: the values' and its punctuation's. */
  size_t need = simple_size(L, 1), size = need + 6;
  for (int i = 3; need && i <= top; i++) {
    need = simple_size(L, i);
    size += need + 1;
  }
  if (!need) {
    int n = top - 2;
    lua_createtable(L, n, 1);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(L, 2 + i);
      lua_rawseti(L, -2, i);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    lua_pushvalue(L, 2);
    lua_copy(L, top + 1, 2);
    lua_copy(L, top + 2, 3);
    lua_settop(L, 3);
    return encode_call(L, 1);
  }
  enc_t e;
  int flat = size <= LOCAL_BUFFER;
  if (flat)
    enc_begin_flat(L, &e);
  else
    enc_begin(L, &e, 2);
  put_call_open(&e, 1);
  for (int i = 3; i <= top; i++)
    put_call_arg(&e, i, i == 3);
  put_call_close(&e);
  return flat ? enc_end_flat(L, &e) : enc_end_parts(L, &e, 0);
}

/* [-0, +0, e] See lsmallcaps.h. */
/* Bytes the flat call keeps free after each value it writes: what may
 * come before the next value's own check, `,[` after the method and the
 * closing `]]`. */
#define FLAT_CALL_RESERVE 4

size_t ocap_sc_encode_flat_call(ocap_vat_t *v, lua_State *L, int m, char *buf) {
  int top = lua_gettop(L);
  char *o = buf, *end = buf + OCAP_SC_FLAT_MAX;
  long long cost = 0;
  if (m > top || lua_type(L, m) != LUA_TSTRING)
    return 0;
  /* One pass, straight into buf, writing what put_call_open, put_call_arg
   * and put_call_close write and adding up what put_quoted charges. */
  *o++ = '#';
  *o++ = '[';
  for (int i = m; i <= top; i++) {
    if (i > m + 1)
      *o++ = ',';
    switch (lua_type(L, i)) {
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, i, &n);
      if (!plain_string(s, n) || (size_t)(end - o) < n + 2 + FLAT_CALL_RESERVE)
        return 0;
      *o++ = '"';
      memcpy(o, s, n);
      o += n;
      *o++ = '"';
      cost += 1 + (long long)(n / BYTES_PER_INSTRUCTION);
      break;
    }
    case LUA_TNUMBER: {
      if (!lua_isinteger(L, i) || (size_t)(end - o) < OCAP_SC_INT_MAX + FLAT_CALL_RESERVE)
        return 0;
      lua_Integer x = lua_tointeger(L, i);
      if (x > OCAP_SC_MAX_SAFE || x < -OCAP_SC_MAX_SAFE)
        return 0;
      o += fmt_int(o, (long long)x);
      break;
    }
    case LUA_TBOOLEAN:
      if ((size_t)(end - o) < 5 + FLAT_CALL_RESERVE)
        return 0;
      if (lua_toboolean(L, i)) {
        memcpy(o, "true", 4);
        o += 4;
      } else {
        memcpy(o, "false", 5);
        o += 5;
      }
      break;
    default:
      return 0;
    }
    if (i == m) {
      *o++ = ',';
      *o++ = '[';
    }
  }
  *o++ = ']';
  *o++ = ']';
  size_t n = (size_t)(o - buf);
  ocap_vat_charge_to(v, L, cost + (long long)(n / BYTES_PER_INSTRUCTION));
  return n;
}

/* ---- decoding ---- */

typedef struct dec {
  lua_State *L;
  const char *p;
  int model; /* index of the model table: an upvalue or on the stack */
  int slots_idx, s2v_idx;
  int cache_idx; /* slot index + 1 -> value (nil until a slot is met) */
  const ocap_sc_slot_t *slots;
  char *scratch; /* room for the longest escaped string */
  int bang_keys;
  const unsigned *sizes; /* of the first nsizes containers, from the scan */
  size_t nsizes, next;   /* next: the container to open next */
} dec_t;

static void dec_ws(dec_t *d) {
  while (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r')
    d->p++;
}

static int dec_value(dec_t *d);

/* [-0, +1, e] Pushes the value of slot reference s ("$3", "$3.iface",
 * "&3"), calling slotToVal the first time the slot is met. */
static int dec_slot(dec_t *d, const char *s, size_t n) {
  lua_State *L = d->L;
  int style = s[0] == '&' ? 2 : 1;
  lua_Integer index = 0;
  for (size_t i = 1; i < n && s[i] != '.'; i++)
    index = index * 10 + (s[i] - '0');
  if (lua_isnil(L, d->cache_idx)) {
    lua_newtable(L);
    lua_replace(L, d->cache_idx);
  }
  if (lua_rawgeti(L, d->cache_idx, index + 1) != LUA_TNIL)
    return 0;
  lua_pop(L, 1);
  lua_pushvalue(L, d->s2v_idx);
  if (lua_rawgeti(L, d->slots_idx, index + 1) == LUA_TNIL)
    return LEAVE;
  const ocap_sc_slot_t *sl = &d->slots[index];
  if (style == 1 && sl->named)
    lua_pushlstring(L, sl->iface, sl->ilen);
  else
    lua_pushnil(L);
  if (style == 2)
    lua_pushliteral(L, "promise");
  else
    lua_pushliteral(L, "remotable");
  lua_call(L, 3, 1);
  if (lua_isnil(L, -1))
    return LEAVE; /* the reference names the slot in its error */
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->cache_idx, index + 1);
  return 0;
}

/* [-0, +1, e] Pushes the string at d->p (its opening quote) as smallcaps
 * reads it; a key is only unescaped from `!`. */
static int dec_string(dec_t *d, int key) {
  lua_State *L = d->L;
  const char *s = d->p + 1, *q = s;
  int esc = 0;
  while (*q != '"') {
    if (*q == '\\') {
      esc = 1;
      q += 2;
    } else {
      q++;
    }
  }
  size_t n = (size_t)(q - s);
  d->p = q + 1;
  if (esc) {
    size_t m = ocap_sc_unescape(s, n, d->scratch);
    if (m > 0 && d->scratch[0] == '!')
      lua_pushlstring(L, d->scratch + 1, m - 1);
    else
      lua_pushlstring(L, d->scratch, m);
    return 0;
  }
  unsigned char c = n ? (unsigned char)s[0] : 0;
  if (c < 33 || c > 45) {
    lua_pushlstring(L, s, n);
    return 0;
  }
  if (c == '!' || key) {
    lua_pushlstring(L, s + 1, n - 1);
    return 0;
  }
  switch (c) {
  case '#':
    if (s[1] == 'u') {
      lua_pushnil(L);
    } else if (s[1] == 'N') {
      volatile double zero = 0.0;
      lua_pushnumber(L, zero / zero); /* the NaN Lua's 0/0 makes */
    } else {
      lua_pushnumber(L, s[1] == 'I' ? HUGE_VAL : -HUGE_VAL);
    }
    return 0;
  case '$':
  case '&':
    return dec_slot(d, s, n);
  default: { /* + - */
    long long v;
    ocap_sc_bigint(s + 1, n - 1, c == '-', &v);
    lua_pushinteger(L, (lua_Integer)v);
    return 0;
  }
  }
}

/* [-0, +1, e] Pushes the error value of a record {"#error":<string>,
 * "name":<string>} at d->p (its first key), made by pass.makeError as the
 * Lua decoder makes it, which derives its code from a kernel message. */
static int dec_error(dec_t *d) {
  lua_State *L = d->L;
  lua_rawgeti(L, d->model, M_MAKE_ERROR);
  d->p += 8; /* "#error" */
  dec_ws(d);
  d->p++; /* : */
  dec_ws(d);
  dec_string(d, 1); /* a key's reading: only `!` is special here */
  dec_ws(d);
  d->p++; /* , */
  dec_ws(d);
  d->p += 6; /* "name" */
  dec_ws(d);
  d->p++; /* : */
  dec_ws(d);
  dec_string(d, 1);
  dec_ws(d);
  d->p++; /* } */
  lua_call(L, 2, 1);
  return 0;
}

/* [-0, +1, e] Pushes an array or record; the scan checked its syntax. */
static int dec_container(dec_t *d) {
  lua_State *L = d->L;
  luaL_checkstack(L, 8, "smallcaps nesting");
  char close = *d->p == '[' ? ']' : '}';
  d->p++;
  size_t k = d->next++;
  if (close == '}') {
    dec_ws(d);
    /* The scan took a record with this first key only in the form
     * {"#error":<string>,"name":<string>}. */
    if (strncmp(d->p, "\"#error\"", 8) == 0)
      return dec_error(d);
  }
  int size = k < d->nsizes ? (int)d->sizes[k] : 0;
  if (close == ']')
    lua_createtable(L, size, 0);
  else
    lua_createtable(L, 0, size);
  int t = lua_gettop(L);
  dec_ws(d);
  if (close == ']') {
    lua_Integer i = 0;
    int holes = 0;
    if (*d->p == ']')
      d->p++;
    else
      for (;;) {
        if (dec_value(d))
          return LEAVE;
        i++;
        if (lua_isnil(L, -1)) {
          holes = 1;
          lua_pop(L, 1);
        } else {
          lua_rawseti(L, t, i);
        }
        dec_ws(d);
        if (*d->p++ == ']')
          break;
      }
    if (holes) {
      lua_pushinteger(L, i);
      lua_setfield(L, t, "n");
    }
    lua_rawgeti(L, d->model, M_ARRAY_MT);
    lua_setmetatable(L, t);
    return 0;
  }
  /* With `!`-escaped keys in the body, every name a record's keys decode
   * to is noted, and a record where two keys meet is left to the
   * reference, which knows which meetings are errors. */
  int seen = 0;
  if (d->bang_keys) {
    lua_newtable(L);
    seen = lua_gettop(L);
  }
  if (*d->p == '}') {
    d->p++;
  } else {
    for (;;) {
      dec_ws(d);
      dec_string(d, 1);
      if (seen) {
        lua_pushvalue(L, -1);
        if (lua_rawget(L, seen) != LUA_TNIL)
          return LEAVE;
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, seen);
      }
      dec_ws(d);
      d->p++; /* : */
      if (dec_value(d))
        return LEAVE;
      lua_rawset(L, t);
      dec_ws(d);
      if (*d->p++ == '}')
        break;
    }
  }
  lua_settop(L, t);
  return 0;
}

/* [-0, +1, e] Pushes the value at d->p. */
static int dec_value(dec_t *d) {
  lua_State *L = d->L;
  dec_ws(d);
  switch (*d->p) {
  case '[':
  case '{':
    return dec_container(d);
  case '"':
    return dec_string(d, 0);
  case 't':
    d->p += 4;
    lua_pushboolean(L, 1);
    return 0;
  case 'f':
    d->p += 5;
    lua_pushboolean(L, 0);
    return 0;
  case 'n':
    d->p += 4;
    lua_rawgeti(L, d->model, M_NULL);
    return 0;
  default: {
    const char *s = d->p;
    while ((*d->p >= '0' && *d->p <= '9') || *d->p == '-' || *d->p == '+' || *d->p == '.' ||
           *d->p == 'e' || *d->p == 'E')
      d->p++;
    long long i;
    double x;
    if (ocap_sc_number(s, (size_t)(d->p - s), &i, &x))
      lua_pushinteger(L, (lua_Integer)i);
    else
      lua_pushnumber(L, x);
    return 0;
  }
  }
}

#define SMALL_SLOTS 8
/* Tables made at their size: the first this many of a body. */
#define SMALL_SIZES 256

/*
 * [-0, +0] Whether the n bytes at s are a whole JSON integer of at most 15
 * digits (so always a safe integer), -?(0|[1-9][0-9]*): a body that is
 * only that, a common result, is read without the scan. Sets *v.
 */
static int small_integer(const char *s, size_t n, lua_Integer *v) {
  size_t i = 0;
  int neg = 0;
  if (n > 0 && s[0] == '-') {
    neg = 1;
    i = 1;
  }
  if (i == n || n - i > 15 || s[i] < '0' || s[i] > '9' || (s[i] == '0' && n - i > 1))
    return 0;
  lua_Integer x = 0;
  for (; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    x = x * 10 + (s[i] - '0');
  }
  *v = neg ? -x : x;
  return 1;
}

/* The most arguments decodeCall pushes; a call with more is decode's. */
#define CALL_ARGS_MAX 64

/*
 * The stack room fast_call makes at a time. A vat's main thread keeps the
 * stack it grew to for its whole life (its generational collector never
 * shrinks it), so asking for CALL_ARGS_MAX slots at once would give every
 * vat that ever got a call about 1.4 KiB of stack it does not use.
 */
#define FAST_ROOM 8

/*
 * [-0, +(1+n), e] Pushes the method and the n arguments of a call body,
 * the array [method, [args...]]. The two arrays get no tables: their
 * places in the scan's sizes are passed over. Returns 0 with *n set, or
 * LEAVE for any other shape, a method that is not a string, or more than
 * CALL_ARGS_MAX arguments.
 */
static int dec_call(dec_t *d, int *n) {
  lua_State *L = d->L;
  dec_ws(d);
  if (*d->p != '[')
    return LEAVE;
  d->p++;
  d->next++;
  if (dec_value(d) || lua_type(L, -1) != LUA_TSTRING)
    return LEAVE;
  dec_ws(d);
  if (*d->p != ',')
    return LEAVE;
  d->p++;
  dec_ws(d);
  if (*d->p != '[')
    return LEAVE;
  d->p++;
  size_t k = d->next++;
  if (k >= d->nsizes || d->sizes[k] > CALL_ARGS_MAX)
    return LEAVE;
  luaL_checkstack(L, (int)d->sizes[k] + 8, "smallcaps arguments");
  int i = 0;
  dec_ws(d);
  if (*d->p == ']')
    d->p++;
  else
    for (;;) {
      if (i == CALL_ARGS_MAX || dec_value(d))
        return LEAVE;
      i++;
      dec_ws(d);
      if (*d->p++ == ']')
        break;
    }
  dec_ws(d);
  if (*d->p != ']')
    return LEAVE;
  *n = i;
  return 0;
}

/* [-0, +(0|1)] Pushes the string whose opening quote is at *p when it is
 * plain (no escape, no control character, no special first byte), moving
 * *p past it; returns 0, or LEAVE pushing nothing. */
static int fast_string(lua_State *L, const char **p, const char *end) {
  const char *s = *p + 1, *q = s;
  while (q < end && *q != '"') {
    unsigned char c = (unsigned char)*q;
    if (c < 0x20 || c == '\\')
      return LEAVE;
    q++;
  }
  if (q == end || (q > s && (unsigned char)s[0] >= 33 && (unsigned char)s[0] <= 45))
    return LEAVE;
  lua_pushlstring(L, s, (size_t)(q - s));
  *p = q + 1;
  return 0;
}

/*
 * [-0, +v, e] The commonest message body read in one pass, without the
 * scan: [method, [args...]] as the encoder writes it (no white space),
 * whose method is a plain string and whose arguments, at most
 * CALL_ARGS_MAX, are plain strings, integers of at most 15 digits and
 * booleans. Pushes the method and the arguments and returns their count
 * (v = 1 + n), charging what the scan and the decoder would; returns
 * LEAVE with the stack as it found it for any other body.
 */
static int fast_call(ocap_vat_t *vat, lua_State *L, const char *body, size_t blen) {
  const char *p = body + 1, *end = body + blen;
  if (blen < 3 || body[0] != '#' || p[0] != '[' || p[1] != '"' || !lua_checkstack(L, 1 + FAST_ROOM))
    return LEAVE;
  int top = lua_gettop(L), n = 0;
  p++;
  if (fast_string(L, &p, end) || end - p < 2 || p[0] != ',' || p[1] != '[')
    goto leave;
  p += 2;
  if (p < end && *p == ']') {
    p++;
  } else {
    for (;;) {
      if (n == CALL_ARGS_MAX || p == end ||
          (n > 0 && n % FAST_ROOM == 0 && !lua_checkstack(L, FAST_ROOM)))
        goto leave;
      char c = *p;
      if (c == '"') {
        if (fast_string(L, &p, end))
          goto leave;
      } else if (c == 't' && end - p >= 4 && memcmp(p, "true", 4) == 0) {
        lua_pushboolean(L, 1);
        p += 4;
      } else if (c == 'f' && end - p >= 5 && memcmp(p, "false", 5) == 0) {
        lua_pushboolean(L, 0);
        p += 5;
      } else {
        /* -?(0|[1-9][0-9]*), at most 15 digits; not -0 */
        int neg = c == '-';
        const char *d = p + neg, *q = d;
        lua_Integer v = 0;
        while (q < end && *q >= '0' && *q <= '9' && q - d <= 15)
          v = v * 10 + (*q++ - '0');
        size_t nd = (size_t)(q - d);
        if (nd == 0 || nd > 15 || (d[0] == '0' && (nd > 1 || neg)))
          goto leave;
        lua_pushinteger(L, neg ? -v : v);
        p = q;
      }
      n++;
      if (p == end)
        goto leave;
      if (*p++ == ']')
        break;
      if (p[-1] != ',')
        goto leave;
    }
  }
  if (end - p != 1 || *p != ']')
    goto leave;
  /* The scan would count the two arrays, the method and the arguments. */
  bill(vat, L, 1 + (long long)(blen / BYTES_PER_INSTRUCTION) + (3 + n) * VALUE_COST);
  return 1 + n;
leave:
  lua_settop(L, top);
  return LEAVE;
}

/* Escaped strings up to this size are unescaped on the C stack. */
#define LOCAL_SCRATCH 256

/*
 * [-0, +(k+v), e] Decodes the blen bytes at body (a body: `#` and its
 * JSON) with the model at index model, the slots table at slots_idx and
 * slotToVal at s2v_idx (0 for none: the body must then name no slot).
 * Pushes what it works with (*k values: the slots' cache, when the body
 * has slots, and room for a long escaped string), then the body's value
 * (v = 1) or, with call set, the call's method and arguments (v = 1 + n).
 * Returns v, or LEAVE with the stack as it found it for a body left to the
 * reference (every error, and any other shape for a call).
 */
/*
 * [-0, +v, e] The bodies decoding reads without the scan or the model:
 * a call fast_call reads, or a value that is a small integer. Pushes what
 * decode_buf would and returns v, charging what it would; LEAVE, pushing
 * nothing, for any other body.
 */
static int decode_flat(ocap_vat_t *v, lua_State *L, const char *body, size_t blen, int call) {
  lua_Integer small_int;
  if (call)
    return fast_call(v, L, body, blen);
  if (blen == 0 || body[0] != '#' || !small_integer(body + 1, blen - 1, &small_int))
    return LEAVE;
  /* What the scan and dec_value would answer, and charge, for it. */
  bill(v, L, 1 + (long long)(blen / BYTES_PER_INSTRUCTION) + VALUE_COST);
  lua_pushinteger(L, small_int);
  return 1;
}

static int decode_buf(lua_State *L, int model, const char *body, size_t blen, int slots_idx,
                      int s2v_idx, size_t nslots, int call, int *k) {
  *k = 0;
  int v = decode_flat(NULL, L, body, blen, call);
  if (v != LEAVE)
    return v;
  if (blen == 0 || body[0] != '#')
    return LEAVE;
  /* The body's bytes, charged with its values once they are counted. */
  long long cost = 1 + (long long)(blen / BYTES_PER_INSTRUCTION);
  int top = lua_gettop(L);
  ocap_sc_slot_t small[SMALL_SLOTS], *slots = NULL;
  /* A slots table's length is whatever border its maker left (a sparse
   * table of a few entries can claim 2^61, and room for that many
   * overflows size_t), while a body of blen bytes names fewer than blen
   * slots. The scan gets room for blen at most: a body naming a slot
   * beyond that is left to the reference, which reads the table as is. */
  if (nslots > blen)
    nslots = blen;
  if (s2v_idx && nslots > 0) {
    slots = nslots <= SMALL_SLOTS ? small : lua_newuserdatauv(L, nslots * sizeof *slots, 0);
    memset(slots, 0, nslots * sizeof *slots);
  }
  unsigned sizes[SMALL_SIZES];
  ocap_sc_scan_t sc = {slots, slots ? nslots : 0, sizes, SMALL_SIZES, 0, 0, 0, 0, NULL};
  int left = ocap_sc_scan(&sc, body + 1, blen - 1);
  ocap_vat_charge(L, cost + (left ? 0 : (long long)sc.values * VALUE_COST));
  if (left) {
    lua_settop(L, top);
    return LEAVE;
  }
  luaL_checkstack(L, 8, "smallcaps");
  char scratch[LOCAL_SCRATCH];
  dec_t d = {.L = L,
             .p = body + 1,
             .model = model,
             .slots_idx = slots_idx,
             .s2v_idx = s2v_idx,
             .slots = slots,
             .scratch = scratch,
             .bang_keys = sc.bang_keys,
             .sizes = sizes,
             .nsizes = SMALL_SIZES};
  if (slots) {
    lua_pushnil(L);
    d.cache_idx = lua_gettop(L);
  }
  if (sc.escaped_max > LOCAL_SCRATCH)
    d.scratch = lua_newuserdatauv(L, sc.escaped_max, 0);
  *k = lua_gettop(L) - top;
  int n = 0;
  if (call ? dec_call(&d, &n) : dec_value(&d)) {
    lua_settop(L, top);
    *k = 0;
    return LEAVE;
  }
  return call ? 1 + n : 1;
}

/* [-0, +(1|2|2+n), e] decode, or with call set decodeCall: the body at 1,
 * its slots at 2, slotToVal at 3. */
static int decode_body(lua_State *L, int call) {
  size_t blen;
  const char *body = luaL_checklstring(L, 1, &blen);
  int s2v = lua_isnoneornil(L, 3) ? 0 : 3;
  size_t nslots = lua_type(L, 2) == LUA_TTABLE ? (size_t)lua_rawlen(L, 2) : 0;
  lua_settop(L, 3);
  lua_pushboolean(L, 1);
  int k, v = decode_buf(L, lua_upvalueindex(1), body, blen, 2, s2v, nslots, call, &k);
  if (v == LEAVE) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (k > 0) {
    /* The true goes up to the values, over what decoding kept. */
    lua_pushboolean(L, 1);
    lua_rotate(L, -(v + 1), 1);
  }
  return 1 + v;
}

/* decode(body, slots?, slotToVal?) -> true, value | false  [-0, +(1|2), e]
 * A body whose slots are referred to needs slotToVal; without it, the
 * body must have none (plain data). */
static int sc_decode(lua_State *L) {
  return decode_body(L, 0);
}

/* decodeCall(body, slots?, slotToVal?) -> true, method, args... | false
 * [-0, +(1|2+n), e] A message body, [method, [args...]], as the method
 * and its arguments, so that a delivery makes no table for either array:
 * false for any other shape, and whatever decode would leave. */
static int sc_decode_call(lua_State *L) {
  return decode_body(L, 1);
}

/* The registry's key for the model of the first codec made in a state:
 * in a vat, the runtime's own (ocap.pass), made before any vat code runs. */
static const char MODEL_KEY = 'm';

/* [-0, +1] See lsmallcaps.h. */
int ocap_sc_push_model(lua_State *L) {
  return lua_rawgetp(L, LUA_REGISTRYINDEX, &MODEL_KEY) == LUA_TTABLE;
}

/* [-0, +v, e] See lsmallcaps.h. */
int ocap_sc_push_decoded_flat(ocap_vat_t *vat, lua_State *L, const char *body, size_t blen,
                              int call) {
  int v = decode_flat(vat, L, body, blen, call);
  return v == LEAVE ? -1 : v;
}

/* [-0, +v, e] See lsmallcaps.h. */
int ocap_sc_push_decoded(lua_State *L, int model, const char *body, size_t blen, int call) {
  int k, v = decode_buf(L, model, body, blen, 0, 0, 0, call, &k);
  if (v != LEAVE && k > 0) {
    /* The values go down over what decoding kept. */
    lua_rotate(L, -(v + k), v);
    lua_pop(L, k);
  }
  return v;
}

/* setPromiseMetatable(mt)  [-0, +0]
 * ocap.promise declares its metatable after pass has made the codec. */
static int sc_set_promise_mt(lua_State *L) {
  lua_settop(L, 1);
  lua_rawseti(L, lua_upvalueindex(1), M_PROMISE_MT);
  return 0;
}

/* [-0, +1, e] See lsmallcaps.h. */
void ocap_sc_push_codec(lua_State *L, int model) {
  static const luaL_Reg codec_funcs[] = {
      {"encode", sc_encode},
      {"encodeCall", sc_encode_call},
      {"encodeParts", sc_encode_parts},
      {"encodeCallParts", sc_encode_call_parts},
      {"encodeCallArgs", sc_encode_call_args},
      {"decode", sc_decode},
      {"decodeCall", sc_decode_call},
      {"setPromiseMetatable", sc_set_promise_mt},
      {NULL, NULL},
  };
  model = lua_absindex(L, model);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &MODEL_KEY) == LUA_TNIL) {
    lua_pushvalue(L, model);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &MODEL_KEY);
  }
  lua_pop(L, 1);
  luaL_newlibtable(L, codec_funcs);
  lua_pushvalue(L, model);
  luaL_setfuncs(L, codec_funcs, 1);
}

/* new(model) -> codec  [-1, +1, e]
 * model = { remotables, promises, shadows, arrayMT, errorTag, null,
 * makeError }. The first codec made in a state is also the one
 * ocap_sc_push_decoded decodes with. */
static int sc_new(lua_State *L) {
  static const char *const fields[] = {"remotables", "promises", "shadows",
                                       "arrayMT",    "errorTag", "null"};
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_createtable(L, M_COUNT, 0);
  for (int k = 0; k < 6; k++) {
    int t = lua_getfield(L, 1, fields[k]);
    if (t == LUA_TNIL || (k < 3 && t != LUA_TTABLE))
      return luaL_error(L, "smallcaps.new: model.%s is missing", fields[k]);
    lua_rawseti(L, -2, k + 1);
  }
  if (lua_getfield(L, 1, "makeError") != LUA_TFUNCTION)
    return luaL_error(L, "smallcaps.new: model.makeError is missing");
  lua_rawseti(L, -2, M_MAKE_ERROR);
  ocap_sc_push_codec(L, -1);
  return 1;
}

static const luaL_Reg module_funcs[] = {
    {"new", sc_new}, {"pass", ocap_pass_new}, {"marshal", ocap_marshal_new}, {"exo", ocap_exo_new},
    {NULL, NULL},
};

/* [-0, +1, m] See lsmallcaps.h. */
int luaopen_ocap_smallcaps(lua_State *L) {
  lua_createtable(L, 0, 8);
  luaL_setfuncs(L, module_funcs, 0);
  ocap_runtime_funcs(L);
  return 1;
}
