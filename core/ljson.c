/*
 * ljson.c -- a JSON decoder for vats, which cannot load C modules.
 *
 * It offers the part of lua-cjson's interface that ocap.marshal uses
 * (decode, null, new), so the same marshal code runs in vats and in the
 * host, where the real lua-cjson is used. Numbers that are integral and
 * within 2^53 decode as Lua integers; JSON null decodes as the null
 * light userdata, as in lua-cjson.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "hex.h"
#include "ljson.h"

/* The nesting limit keeps hostile input from exhausting the C stack. */
#define MAX_DEPTH 1000

/* 2^53: integers up to it in magnitude are exact as doubles. */
#define MAX_SAFE_INT 9007199254740992LL

/* Every parse function pushes its value on the stack of L. */
typedef struct parser {
  lua_State *L;
  const char *start, *p, *end;
  int depth;
} parser_t;

/* [-0, +0, e] Raises a parse error naming the 1-based byte it stopped at;
 * it never returns. */
static int perr(parser_t *ps, const char *what) {
  return luaL_error(ps->L, "JSON: %s at byte %d", what, (int)(ps->p - ps->start) + 1);
}

static void skip_ws(parser_t *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static void parse_value(parser_t *ps);

/* [-0, +0, e] Reads the four hex digits of a \u escape. */
static unsigned read_hex4(parser_t *ps) {
  if (ps->end - ps->p < 4)
    perr(ps, "truncated \\u escape");
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = ocap_hex_value(ps->p[i]);
    if (h < 0)
      perr(ps, "bad \\u escape");
    v = v * 16 + (unsigned)h;
  }
  ps->p += 4;
  return v;
}

/* [-?, +?, m] Appends cp as UTF-8 to b; like every luaL_Buffer call it may
 * move the buffer's box on the stack. */
static void add_utf8(luaL_Buffer *b, unsigned cp) {
  char out[4];
  int n;
  if (cp < 0x80) {
    out[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  luaL_addlstring(b, out, (size_t)n);
}

/* [-0, +1, e] Pushes the string at ps->p. A string without escapes is
 * pushed straight from the input, since it needs no buffer. */
static void parse_string(parser_t *ps) {
  ps->p++; /* opening quote */
  const char *start = ps->p;
  while (ps->p < ps->end && *ps->p != '"' && *ps->p != '\\' && (unsigned char)*ps->p >= 0x20)
    ps->p++;
  if (ps->p < ps->end && *ps->p == '"') {
    lua_pushlstring(ps->L, start, (size_t)(ps->p - start));
    ps->p++;
    return;
  }
  luaL_Buffer b;
  luaL_buffinit(ps->L, &b);
  luaL_addlstring(&b, start, (size_t)(ps->p - start));
  for (;;) {
    if (ps->p >= ps->end)
      perr(ps, "unterminated string");
    char c = *ps->p++;
    if (c == '"')
      break;
    if ((unsigned char)c < 0x20)
      perr(ps, "control character in string");
    if (c != '\\') {
      luaL_addchar(&b, c);
      continue;
    }
    if (ps->p >= ps->end)
      perr(ps, "unterminated escape");
    c = *ps->p++;
    switch (c) {
    case '"':
    case '\\':
    case '/':
      luaL_addchar(&b, c);
      break;
    case 'b':
      luaL_addchar(&b, '\b');
      break;
    case 'f':
      luaL_addchar(&b, '\f');
      break;
    case 'n':
      luaL_addchar(&b, '\n');
      break;
    case 'r':
      luaL_addchar(&b, '\r');
      break;
    case 't':
      luaL_addchar(&b, '\t');
      break;
    case 'u': {
      /* A surrogate must come as a high-low pair, which is one character:
       * a lone one has no UTF-8 encoding, and lua-cjson refuses it too. */
      unsigned cp = read_hex4(ps);
      if (cp >= 0xDC00 && cp < 0xE000)
        perr(ps, "lone surrogate in \\u escape");
      if (cp >= 0xD800 && cp < 0xDC00) {
        if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u')
          perr(ps, "lone surrogate in \\u escape");
        ps->p += 2;
        unsigned lo = read_hex4(ps);
        if (lo < 0xDC00 || lo >= 0xE000)
          perr(ps, "lone surrogate in \\u escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      add_utf8(&b, cp);
      break;
    }
    default:
      perr(ps, "bad escape");
    }
  }
  luaL_pushresult(&b);
}

static int is_digit(const parser_t *ps, const char *q) {
  return q < ps->end && *q >= '0' && *q <= '9';
}

/* [-0, +1, e] Pushes the number at ps->p, which must follow JSON's grammar
 * exactly: no leading zeros, '+', bare '.', hex or trailing '.', so that a
 * vat never accepts a number that JSON.parse and the host's lua-cjson
 * refuse. Integral values within 2^53 become integers, as in lua-cjson, so
 * that counts stay integers. */
static void parse_number(parser_t *ps) {
  char buf[64];
  const char *start = ps->p, *q = ps->p;
  int is_float = 0;
  if (q < ps->end && *q == '-')
    q++;
  if (q < ps->end && *q == '0') {
    q++;
  } else if (is_digit(ps, q)) {
    while (is_digit(ps, q))
      q++;
  } else {
    perr(ps, "bad number");
  }
  if (q < ps->end && *q == '.') {
    is_float = 1;
    q++;
    if (!is_digit(ps, q))
      perr(ps, "bad number");
    while (is_digit(ps, q))
      q++;
  }
  if (q < ps->end && (*q == 'e' || *q == 'E')) {
    is_float = 1;
    q++;
    if (q < ps->end && (*q == '+' || *q == '-'))
      q++;
    if (!is_digit(ps, q))
      perr(ps, "bad number");
    while (is_digit(ps, q))
      q++;
  }
  size_t n = (size_t)(q - start);
  if (n >= sizeof buf) {
    perr(ps, "number too long");
    return; /* not reached: it tells the compiler that buf is not overrun */
  }
  ps->p = q;
  memcpy(buf, start, n);
  buf[n] = '\0';
  char *endp;
  /* Beyond 2^53 an integer is read as the double JSON.parse and lua-cjson
   * make of it, so that a vat and the host read the same number. */
  if (!is_float && n < 17) {
    long long v = strtoll(buf, &endp, 10);
    if (*endp == '\0' && v <= MAX_SAFE_INT && v >= -MAX_SAFE_INT) {
      lua_pushinteger(ps->L, (lua_Integer)v);
      return;
    }
  }
  double d = strtod(buf, &endp);
  if (*endp != '\0')
    perr(ps, "bad number");
  if (d == floor(d) && fabs(d) <= (double)MAX_SAFE_INT)
    lua_pushinteger(ps->L, (lua_Integer)d);
  else
    lua_pushnumber(ps->L, d);
}

/* [-0, +0, e] Consumes the literal w (true, false or null) or raises. */
static void expect_word(parser_t *ps, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, w, n) != 0)
    perr(ps, "unexpected token");
  ps->p += n;
}

/* [-0, +1, e] Pushes the value at ps->p. A container holds its table, a
 * key and a value on the stack at once, which is why each level checks for
 * room before it recurses. */
static void parse_value(parser_t *ps) {
  lua_State *L = ps->L;
  skip_ws(ps);
  if (ps->p >= ps->end)
    perr(ps, "unexpected end");
  char c = *ps->p;
  if (c == '{' || c == '[') {
    if (++ps->depth > MAX_DEPTH)
      perr(ps, "nesting too deep");
    luaL_checkstack(L, 4, "JSON nesting");
    ps->p++;
    lua_newtable(L);
    skip_ws(ps);
    char close = c == '{' ? '}' : ']';
    if (ps->p < ps->end && *ps->p == close) {
      ps->p++;
      ps->depth--;
      return;
    }
    lua_Integer i = 1;
    for (;;) {
      skip_ws(ps);
      if (c == '{') {
        if (ps->p >= ps->end || *ps->p != '"')
          perr(ps, "expected key");
        parse_string(ps);
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
          perr(ps, "expected ':'");
        ps->p++;
        parse_value(ps);
        lua_rawset(L, -3);
      } else {
        parse_value(ps);
        lua_rawseti(L, -2, i++);
      }
      skip_ws(ps);
      if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        continue;
      }
      if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        break;
      }
      perr(ps, "expected ',' or closing bracket");
    }
    ps->depth--;
    return;
  }
  if (c == '"') {
    parse_string(ps);
  } else if (c == 't') {
    expect_word(ps, "true");
    lua_pushboolean(L, 1);
  } else if (c == 'f') {
    expect_word(ps, "false");
    lua_pushboolean(L, 0);
  } else if (c == 'n') {
    expect_word(ps, "null");
    lua_pushlightuserdata(L, NULL);
  } else if (c == '-' || (c >= '0' && c <= '9')) {
    parse_number(ps);
  } else {
    perr(ps, "unexpected token");
  }
}

/* decode(text) -> value  [-0, +1, e] */
static int json_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  parser_t ps = {L, s, s, s + len, 0};
  parse_value(&ps);
  skip_ws(&ps);
  if (ps.p != ps.end)
    perr(&ps, "trailing garbage");
  return 1;
}

/* encode(string) -> json  [-0, +1, e]
 * It is JSON.stringify of a string. Only strings are needed, because
 * ocap.marshal writes everything else itself. */
static int json_encode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
    case '"':
      luaL_addstring(&b, "\\\"");
      break;
    case '\\':
      luaL_addstring(&b, "\\\\");
      break;
    case '\b':
      luaL_addstring(&b, "\\b");
      break;
    case '\f':
      luaL_addstring(&b, "\\f");
      break;
    case '\n':
      luaL_addstring(&b, "\\n");
      break;
    case '\r':
      luaL_addstring(&b, "\\r");
      break;
    case '\t':
      luaL_addstring(&b, "\\t");
      break;
    default:
      if (c < 0x20) {
        char esc[6];
        luaL_addlstring(&b, esc, (size_t)(ocap_hex_json_escape(esc, c) - esc));
      } else {
        luaL_addchar(&b, (char)c);
      }
    }
  }
  luaL_addchar(&b, '"');
  luaL_pushresult(&b);
  return 1;
}

/* new() -> the module  [-0, +1]
 * A vat has one decoder with no settings, so lua-cjson's new() returns it. */
static int json_new(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  return 1;
}

/* f(...)  [-0, +0]
 * It stands in for cjson's configuration functions (decode_max_depth and
 * the others), which have nothing to configure here. */
static int json_noop(lua_State *L) {
  (void)L;
  return 0;
}

/* __index(module, key) -> json_noop  [-0, +1]
 * Any unknown name is a configuration function, so marshal code written
 * for lua-cjson runs unchanged. */
static int json_index(lua_State *L) {
  lua_pushcfunction(L, json_noop);
  return 1;
}

/* [-0, +1, m] Pushes the module table; see ljson.h. */
int ocap_open_json(lua_State *L) {
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, json_decode);
  lua_setfield(L, -2, "decode");
  lua_pushcfunction(L, json_encode);
  lua_setfield(L, -2, "encode");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, json_new, 1);
  lua_setfield(L, -2, "new");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, json_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
