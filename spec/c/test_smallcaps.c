/*
 * test_smallcaps.c -- unit tests for core/smallcaps.c, the text side of the
 * C codec: numbers as JavaScript prints them, JSON strings, key order, and
 * the scan that decides which bodies the fast decoder takes. The codec over
 * Lua values is compared with the Lua codec in spec/smallcaps_spec.lua.
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lsmallcaps.h"
#include "smallcaps.h"

#include "check.h"

static int test_numbers(void) {
  int fails = 0;
  static const struct {
    double x;
    const char *js;
  } cases[] = {
      {0.1, "0.1"},
      {0.1 + 0.2, "0.30000000000000004"},
      {1.0 / 3, "0.3333333333333333"},
      {123.456, "123.456"},
      {1e21, "1e+21"},
      {1e21 + 1e6, "1.000000000000001e+21"},
      {1e20, "100000000000000000000"},
      {1152921504606846976.0, "1152921504606847000"},
      {1e-7, "1e-7"},
      {-1.5e-7, "-1.5e-7"},
      {0.000001, "0.000001"},
      {1.25e-6, "0.00000125"},
      {5e-324, "5e-324"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {3.0, "3"},
      {-0.0, "0"},
      {9007199254740992.0, "9007199254740992"},
      {123e-20, "1.23e-18"},
      {1180591620717411303424.0, "1.1805916207174113e+21"},
      /* Powers of two whose nearest 16-digit decimal does not read back. */
      {9.332636185032189e-302, "9.332636185032189e-302"},
      {1.0715086071862673e+301, "1.0715086071862673e+301"},
  };
  char out[OCAP_SC_NUMBER_MAX];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = ocap_sc_format_number(cases[i].x, out);
    if (strcmp(out, cases[i].js) != 0 || n != strlen(out)) {
      fprintf(stderr, "format %.17g: got %s, want %s\n", cases[i].x, out, cases[i].js);
      fails++;
    }
  }

  long long iv;
  double dv;
  CHECK(ocap_sc_number("3.0", 3, &iv, &dv) == 1 && iv == 3);
  CHECK(ocap_sc_number("-0", 2, &iv, &dv) == 1 && iv == 0);
  CHECK(ocap_sc_number("1e2", 3, &iv, &dv) == 1 && iv == 100);
  CHECK(ocap_sc_number("9007199254740993", 16, &iv, &dv) == 1 && iv == 9007199254740992LL);
  CHECK(ocap_sc_number("9007199254740994", 16, &iv, &dv) == 0 && dv == 9007199254740994.0);
  CHECK(ocap_sc_number("1e+21", 5, &iv, &dv) == 0 && dv == 1e21);
  CHECK(ocap_sc_number("3.5", 3, &iv, &dv) == 0 && dv == 3.5);
  ocap_sc_bigint("9223372036854775808", 19, 1, &iv);
  CHECK(iv == (-9223372036854775807LL - 1));
  return fails;
}

static int test_strings_and_keys(void) {
  int fails = 0;
  char out[64];
  const char in[] = "a\0\x1f\x7f\"\\/\b\f\n\r\t";
  char *e = ocap_sc_quote(in, sizeof in - 1, 1, out);
  *e = '\0';
  CHECK(strcmp(out, "\"a\\u0000\\u001f\x7f\\\"\\\\/\\b\\f\\n\\r\\t\"") == 0);
  e = ocap_sc_quote("#x", 2, 1, out);
  *e = '\0';
  CHECK(strcmp(out, "\"!#x\"") == 0);
  e = ocap_sc_quote("#x", 2, 0, out);
  *e = '\0';
  CHECK(strcmp(out, "\"#x\"") == 0);
  e = ocap_sc_quote(".x", 2, 1, out);
  *e = '\0';
  CHECK(strcmp(out, "\".x\"") == 0);

  size_t n = ocap_sc_unescape("a\\u00e9\\ud83d\\ude00\\n", 21, out);
  CHECK(n == 8 && memcmp(out, "a\xc3\xa9\xf0\x9f\x98\x80\n", 8) == 0);

  /* UTF-16 order: U+E000 after U+1F600, both after ASCII. */
  CHECK(ocap_sc_key_cmp("z", 1, "\xf0\x9f\x98\x80", 4) < 0);
  CHECK(ocap_sc_key_cmp("\xee\x80\x80", 3, "\xf0\x9f\x98\x80", 4) > 0);
  CHECK(ocap_sc_key_cmp("a", 1, "a\0", 2) < 0);
  CHECK(ocap_sc_key_cmp("ab", 2, "ab", 2) == 0);

  unsigned long long ix;
  CHECK(ocap_sc_index_key("0", 1, &ix) && ix == 0);
  CHECK(ocap_sc_index_key("4294967294", 10, &ix) && ix == 4294967294ULL);
  CHECK(!ocap_sc_index_key("4294967295", 10, &ix));
  CHECK(!ocap_sc_index_key("01", 2, &ix));
  CHECK(!ocap_sc_index_key("-1", 2, &ix));
  CHECK(!ocap_sc_index_key("", 0, &ix));
  return fails;
}

/* Scans body (with its '#') given nslots slots; returns what the scan
 * answered, with the findings in *sc. */
static int scan(const char *body, size_t nslots, ocap_sc_slot_t *slots, ocap_sc_scan_t *sc) {
  memset(sc, 0, sizeof *sc);
  memset(slots, 0, 4 * sizeof *slots);
  sc->slots = nslots ? slots : NULL;
  sc->nslots = nslots;
  return ocap_sc_scan(sc, body + 1, strlen(body) - 1);
}

static int test_scan(void) {
  int fails = 0;
  ocap_sc_slot_t slots[4];
  ocap_sc_scan_t sc;
  static const char *const taken[] = {
      "#[\"ping\",[1,-2,3.5,true,false,null]]",
      "#{\"a\":{},\"!#b\":[[]],\"c\":\"!$\"}",
      "#[\"#undefined\",\"#NaN\",\"#Infinity\",\"#-Infinity\",\"+9223372036854775807\"]",
      "# [ 1 , { \"x\" : \"y\" } ] ",
      "#\"\\u0021\\\"x\"",
      "#{ }",
      "#[{\"#error\":\"!#x\",\"name\":\"RangeError\"}]",
  };
  for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++) {
    if (scan(taken[i], 0, slots, &sc) != 0) {
      fprintf(stderr, "left %s: %s\n", taken[i], sc.why);
      fails++;
    }
  }
  static const char *const left[] = {
      "#[1,",
      "#[1,]",
      "#01",
      "#NaN",
      "#\"%x\"",
      "#\"'\"",
      "#\"#foo\"",
      "#{\"#tag\":1}",
      "#{\"$0\":1}",
      "#\"+9223372036854775808\"",
      "#\"-1x\"",
      "#\"\\ud800\"",
      "#\"\\\"x\"",
      "#\"$0\"",
      "#\"\\u0024x\"",
      "#{\"#error\":\"x\"}",
      "#{\"name\":\"E\",\"#error\":\"x\"}",
      "#{\"#error\":\"#undefined\",\"name\":\"E\"}",
      "#{\"#error\":\"x\",\"name\":\"E\",\"errorId\":\"e1\"}",

  };
  for (size_t i = 0; i < sizeof left / sizeof left[0]; i++) {
    if (scan(left[i], 0, slots, &sc) != OCAP_SC_LEAVE) {
      fprintf(stderr, "took %s\n", left[i]);
      fails++;
    }
  }

  /* Slots: one style and one interface name each; a bare reference takes
   * the name given anywhere in the body. */
  CHECK(scan("#[\"$0\",\"$0.Alleged: x\",\"&1\",\"&1\"]", 2, slots, &sc) == 0);
  CHECK(slots[0].style == 1 && slots[0].named && slots[0].ilen == 10 &&
        memcmp(slots[0].iface, "Alleged: x", 10) == 0);
  CHECK(slots[1].style == 2 && !slots[1].named);
  CHECK(scan("#[\"$0\",\"&0\"]", 1, slots, &sc) == OCAP_SC_LEAVE);
  CHECK(scan("#[\"$0.x\",\"$0.y\"]", 1, slots, &sc) == OCAP_SC_LEAVE);
  CHECK(scan("#\"$1\"", 1, slots, &sc) == OCAP_SC_LEAVE);
  CHECK(scan("#\"&0.x\"", 1, slots, &sc) == OCAP_SC_LEAVE);

  /* Nesting: 1000 levels are taken, 1001 are left. */
  static char deep[2 * 1001 + 2];
  deep[0] = '#';
  for (int d = 1000; d <= 1001; d++) {
    memset(deep + 1, '[', (size_t)d);
    memset(deep + 1 + d, ']', (size_t)d);
    deep[1 + 2 * d] = '\0';
    CHECK(scan(deep, 0, slots, &sc) == (d <= 1000 ? 0 : OCAP_SC_LEAVE));
  }

  /* Container sizes, in the order they open. */
  unsigned sizes[4];
  memset(&sc, 0, sizeof sc);
  sc.sizes = sizes;
  sc.nsizes = 4;
  const char *b = "[[],{\"a\":1,\"b\":[1,2,3]},4]";
  CHECK(ocap_sc_scan(&sc, b, strlen(b)) == 0);
  CHECK(sc.containers == 4 && sizes[0] == 3 && sizes[1] == 0 && sizes[2] == 2 && sizes[3] == 3);
  return fails;
}

/* Integers in decimal, as vpids, slot numbers and safe integers are
 * written: every length from 1 to 19 digits, both signs, the extremes. */
static int test_integers(void) {
  int fails = 0;
  char out[OCAP_SC_INT_MAX + 1], want[32];
  long long p = 1;
  for (int digits = 1; digits <= 19; digits++, p = digits <= 19 ? p * 10 : p) {
    /* The last, all nines, would overflow at 19 digits: the largest
     * integer stands in for it. */
    const long long nines = digits < 19 ? 9 * p + (p - 1) : 9223372036854775807LL;
    const long long cases[] = {p, p - 1, 2 * p + 7, -p, -(p - 1), nines};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      size_t n = ocap_sc_format_int(cases[i], out);
      out[n] = '\0';
      snprintf(want, sizeof want, "%lld", cases[i]);
      if (strcmp(out, want) != 0) {
        fprintf(stderr, "format_int %s: got %s\n", want, out);
        fails++;
      }
    }
  }
  size_t n = ocap_sc_format_int(-9223372036854775807LL - 1, out);
  out[n] = '\0';
  CHECK(n == 20 && strcmp(out, "-9223372036854775808") == 0);
  n = ocap_sc_format_int(9223372036854775807LL, out);
  out[n] = '\0';
  CHECK(n == 19 && strcmp(out, "9223372036854775807") == 0);
  return fails;
}

/*
 * [-0, +0] Compares the flat call the syscall writes for the method and
 * arguments on L's stack (ocap_sc_encode_flat_call) with encodeCallArgs'
 * body for them (codec at index codec, the method above it); returns 1
 * when they differ or the flat writer went past its buffer, and sets
 * *flat when it wrote a body.
 */
static int flat_call_differs(lua_State *L, int codec, int *flat) {
  char buf[OCAP_SC_FLAT_MAX + 16];
  memset(buf, 0x5a, sizeof buf);
  int top = lua_gettop(L);
  size_t n = ocap_sc_encode_flat_call(NULL, L, codec + 1, buf);
  for (size_t i = OCAP_SC_FLAT_MAX; i < sizeof buf; i++)
    if (buf[i] != 0x5a)
      return 1;
  *flat = n > 0;
  if (n == 0)
    return 0; /* encodeCallArgs would need a real model for the rest */
  lua_getfield(L, codec, "encodeCallArgs");
  lua_pushvalue(L, codec + 1);
  lua_pushnil(L);
  for (int i = codec + 2; i <= top; i++)
    lua_pushvalue(L, i);
  lua_call(L, top - codec + 1, 2);
  size_t blen;
  const char *body = lua_tolstring(L, -2, &blen);
  int differs = body == NULL || blen != n || memcmp(body, buf, n) != 0 || !lua_isnil(L, -1);
  if (differs)
    fprintf(stderr, "flat call %.*s, encodeCallArgs %s\n", (int)n, buf, body ? body : "(nil)");
  lua_settop(L, top);
  return differs;
}

/* The syscalls' flat call (lsmallcaps.c) writes encodeCallArgs' body byte
 * for byte, up to the last byte of its buffer, and no further. */
static int test_flat_calls(void) {
  int fails = 0, flat = 0;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_newtable(L); /* a model: plain values never read it */
  ocap_sc_push_codec(L, -1);
  int codec = lua_gettop(L);
  char s[600];
  memset(s, 'x', sizeof s);
  /* One string argument of every length around the end of the buffer. */
  for (size_t len = 480; len <= 520; len++) {
    lua_pushliteral(L, "ping");
    lua_pushlstring(L, s, len);
    fails += flat_call_differs(L, codec, &flat);
    /* The body is len + 14 bytes: flat when it fits with a little room
     * to spare, never when it does not fit. */
    CHECK(flat ? len + 14 <= OCAP_SC_FLAT_MAX : len + 14 > OCAP_SC_FLAT_MAX - 4);
    lua_settop(L, codec);
  }
  /* Integers, booleans and strings after one another up to the end. */
  for (size_t len = 440; len <= 500; len++) {
    lua_pushlstring(L, s, 3);
    lua_pushlstring(L, s, len);
    lua_pushinteger(L, -OCAP_SC_MAX_SAFE);
    lua_pushboolean(L, 0);
    fails += flat_call_differs(L, codec, &flat);
    lua_settop(L, codec);
  }
  /* Values encodeCallArgs writes otherwise: left to it. */
  lua_pushliteral(L, "m");
  lua_pushinteger(L, OCAP_SC_MAX_SAFE + 1);
  fails += flat_call_differs(L, codec, &flat);
  CHECK(!flat);
  lua_settop(L, codec);
  lua_pushliteral(L, "m");
  lua_pushnumber(L, 1.5);
  fails += flat_call_differs(L, codec, &flat);
  CHECK(!flat);
  lua_settop(L, codec);
  lua_pushliteral(L, "m");
  lua_pushliteral(L, "#special");
  fails += flat_call_differs(L, codec, &flat);
  CHECK(!flat);
  lua_settop(L, codec);
  lua_pushliteral(L, "m");
  lua_pushliteral(L, "a\"quote");
  fails += flat_call_differs(L, codec, &flat);
  CHECK(!flat);
  lua_settop(L, codec);
  /* No arguments, and the extremes of the safe integers. */
  lua_pushliteral(L, "m");
  fails += flat_call_differs(L, codec, &flat);
  CHECK(flat);
  lua_pushinteger(L, OCAP_SC_MAX_SAFE);
  lua_pushinteger(L, 0);
  lua_pushboolean(L, 1);
  lua_pushliteral(L, "");
  fails += flat_call_differs(L, codec, &flat);
  CHECK(flat);
  lua_close(L);
  return fails;
}

int main(void) {
  int fails =
      test_numbers() + test_integers() + test_strings_and_keys() + test_scan() + test_flat_calls();
  if (fails) {
    fprintf(stderr, "test_smallcaps: %d failures\n", fails);
    return 1;
  }
  printf("test_smallcaps: ok\n");
  return 0;
}
