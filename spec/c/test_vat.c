/*
 * test_vat.c -- unit tests for core/vat.c: the sandbox's globals, loading,
 * require, the string metatable lock, and the memory and instruction meters
 * under the attacks a hostile vat would try.
 */
#define _XOPEN_SOURCE 700

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "errors.h"
#include "vat.h"

#define STR_(x) #x
#define STR(x) STR_(x)

#include "check.h"

/*
 * A hang guard, not a timing check: an attack that has not ended after this
 * many seconds of the process's CPU time (which, unlike wall-clock time,
 * does not grow when the machine is loaded) is reported by name and the test
 * exits. The meter ends every attack in well under a second of CPU time, and
 * its own CPU-time backstop within the allowance, so only a vat the meter
 * cannot stop at all gets here. ctest's TIMEOUT catches a hang that uses no
 * CPU.
 */
#ifndef HANG_CPU_SECONDS
#define HANG_CPU_SECONDS 120
#endif
/*
 * The budgets of test_attacks; small to keep the test fast. Building with
 * -DATTACK_INSTRUCTIONS=100000000 -DATTACK_MEMORY=67108864 checks the
 * attacks against the defaults.
 */
#ifndef ATTACK_INSTRUCTIONS
#define ATTACK_INSTRUCTIONS 10000000
#endif
#ifndef ATTACK_MEMORY
#define ATTACK_MEMORY (16 << 20)
#endif

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The attack test_attacks runs now, for the hang guard's report. */
static const char *volatile current_attack;

/* Reports the attack that hangs and ends the test; async-signal-safe. */
static void on_hang(int sig) {
  static const char head[] = "test_vat: HANG: no end after " STR(HANG_CPU_SECONDS) " s of CPU: ";
  const char *a = current_attack;
  (void)sig;
  if (write(2, head, sizeof head - 1) < 0 || (a != NULL && write(2, a, strlen(a)) < 0) ||
      write(2, "\n", 1) < 0)
    _exit(2);
  _exit(2);
}

/*
 * Arms (seconds > 0) or disarms the hang guard: SIGPROF after that much
 * more CPU time of the process.
 */
static void hang_guard(int seconds) {
  struct itimerval it = {{0, 0}, {seconds, 0}};
  signal(SIGPROF, on_hang);
  setitimer(ITIMER_PROF, &it, NULL);
}

/*
 * The meter mode new_vat gives its vats. Tests that count instructions run
 * in instruction mode; main runs the containment tests in both modes.
 */
static int meter_mode = OCAP_VAT_METER_INSTRUCTIONS;

/* Whether this is the sanitizers' build, which runs code about ten times slower. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static ocap_vat_t *new_vat(size_t memory, long long instructions) {
  ocap_vat_limits_t limits = {memory, instructions, meter_mode, 0};
  ocap_vat_t *v = NULL;
  if (ocap_vat_new(&limits, &v) != 0) {
    fprintf(stderr, "ocap_vat_new failed\n");
    return NULL;
  }
  return v;
}

/*
 * [-0, +1] Loads and calls code in v, leaving one value: its first result or
 * the error message. Returns the ocap_vat_status, or -1 when it did not load.
 */
static int run(ocap_vat_t *v, const char *code) {
  if (ocap_vat_load(v, code, strlen(code), "=test") != 0)
    return -1;
  return ocap_vat_pcall(v, 0, 1);
}

/* [-0, +0] Whether code returns true; prints what it did otherwise. */
static int is_true(ocap_vat_t *v, const char *code) {
  lua_State *L = ocap_vat_state(v);
  int top = lua_gettop(L);
  int status = run(v, code);
  int ok = status == OCAP_VAT_OK && lua_toboolean(L, -1);
  if (!ok)
    fprintf(stderr, "not true (status %d): %s\n  -> %s\n", status, code,
            lua_tostring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1));
  lua_settop(L, top);
  return ok;
}

/*
 * [-0, +0] Runs code and checks it ends with the wanted status and, when
 * text is not NULL, a message containing it. Returns the failures.
 */
static int expect(ocap_vat_t *v, const char *code, int want, const char *text) {
  lua_State *L = ocap_vat_state(v);
  int fails = 0;
  int top = lua_gettop(L);
  int status = run(v, code);
  const char *msg = lua_tostring(L, -1);
  CHECK(lua_gettop(L) == top + 1);
  CHECK(status == want);
  if (text != NULL)
    CHECK(msg != NULL && strstr(msg, text) != NULL);
  if (fails)
    fprintf(stderr, "  code: %s\n  status %d, message: %s\n", code, status, msg ? msg : "-");
  lua_settop(L, top);
  return fails;
}

/* [-0, +0] Does nothing; something to call in a vat that cannot load. */
static int nop(lua_State *L) {
  (void)L;
  return 0;
}

static int test_globals(void) {
  static const char *const present[] = {
      "assert",   "error",         "ipairs",       "next",         "pairs",          "pcall",
      "xpcall",   "select",        "tonumber",     "tostring",     "type",           "rawequal",
      "rawlen",   "rawget",        "rawset",       "setmetatable", "getmetatable",   "string",
      "table",    "math",          "utf8",         "coroutine",    "_VERSION",       "require",
      "math.sin", "string.format", "table.concat", "utf8.char",    "coroutine.wrap", NULL,
  };
  static const char *const absent[] = {
      "io",
      "os",
      "debug",
      "package",
      "load",
      "loadstring",
      "dofile",
      "loadfile",
      "collectgarbage",
      "print",
      "_G",
      "string.dump",
      "math.random",
      "math.randomseed",
      "module",
      "setfenv",
      "getfenv",
      "unpack",
      "require('string').dump",
      NULL,
  };
  int fails = 0;
  char code[256];
  ocap_vat_t *v = new_vat(0, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  for (const char *const *n = present; *n != NULL; n++) {
    snprintf(code, sizeof code, "return %s ~= nil", *n);
    CHECK(is_true(v, code));
  }
  for (const char *const *n = absent; *n != NULL; n++) {
    snprintf(code, sizeof code, "return %s == nil", *n);
    CHECK(is_true(v, code));
  }
  CHECK(is_true(v, "return _VERSION == 'Lua 5.4'"));
  CHECK(is_true(v, "return ('x').dump == nil"));
  CHECK(is_true(v, "return require('string') == string and require('math') == math"));
  /* Nothing reachable by name leads to the real package table. */
  fails += expect(v, "return require('package')", OCAP_VAT_ERROR, "not found in this vat");
  fails += expect(v, "return require('debug')", OCAP_VAT_ERROR, "not found in this vat");
  fails += expect(v, "return require('_G')", OCAP_VAT_ERROR, "not found in this vat");
  fails += expect(v, "return require('io')", OCAP_VAT_ERROR, "not found in this vat");
  /* Globals are the vat's own to write. */
  CHECK(is_true(v, "x = 5 return x == 5"));
  CHECK(is_true(v, "return x == 5"));
  ocap_vat_free(v);
  return fails;
}

/* Writes the bytes of a chunk into a luaL_Buffer-like growing array. */
struct dump_buf {
  char data[4096];
  size_t len;
};

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  struct dump_buf *b = ud;
  (void)L;
  if (b->len + sz > sizeof b->data)
    return 1;
  memcpy(b->data + b->len, p, sz);
  b->len += sz;
  return 0;
}

static int test_binary_chunks(void) {
  int fails = 0;
  struct dump_buf chunk = {{0}, 0};
  lua_State *plain = luaL_newstate();
  ocap_vat_t *v = new_vat(0, 0);
  lua_State *L;
  CHECK(v != NULL && plain != NULL);
  if (v == NULL || plain == NULL)
    return fails;
  L = ocap_vat_state(v);
  /* A real precompiled chunk, made in an ordinary state. */
  CHECK(luaL_loadstring(plain, "return 'from bytecode'") == LUA_OK);
  CHECK(lua_dump(plain, dump_writer, &chunk, 1) == 0);
  lua_close(plain);

  CHECK(ocap_vat_load(v, chunk.data, chunk.len, "=bin") == OCAP_EINVAL);
  CHECK(lua_isstring(L, -1) && strstr(lua_tostring(L, -1), "binary") != NULL);
  lua_pop(L, 1);
  CHECK(ocap_vat_load(v, "\x1bLua garbage", 12, "=bin") == OCAP_EINVAL);
  CHECK(strstr(lua_tostring(L, -1), "binary chunks are refused") != NULL);
  lua_pop(L, 1);
  CHECK(ocap_vat_load(v, "return +", 8, "=syntax") == OCAP_EINVAL);
  CHECK(strstr(lua_tostring(L, -1), "syntax:1:") != NULL);
  lua_pop(L, 1);

  /* Only trusted preloads may be bytecode. */
  CHECK(ocap_vat_preload(v, "untrusted", chunk.data, chunk.len, 0) == 0);
  CHECK(ocap_vat_preload(v, "trusted", chunk.data, chunk.len, 1) == 0);
  fails += expect(v, "return require('untrusted')", OCAP_VAT_ERROR, "binary chunk");
  CHECK(is_true(v, "return require('trusted') == 'from bytecode'"));
  CHECK(lua_gettop(L) == 0);
  ocap_vat_free(v);
  return fails;
}

static int test_string_metatable(void) {
  int fails = 0;
  ocap_vat_t *v = new_vat(0, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  CHECK(is_true(v, "return getmetatable('') == 'locked'"));
  CHECK(is_true(v, "return getmetatable('abc') ~= string"));
  CHECK(is_true(v, "return not pcall(setmetatable, '', {})"));
  CHECK(is_true(v, "return not pcall(rawset, getmetatable(''), '__index', {})"));
  CHECK(is_true(v, "return ('abc'):upper() == 'ABC' and ('ab'):rep(2, ',') == 'ab,ab'"));
  /* Changing the global string table cannot reach the methods of strings. */
  CHECK(is_true(v, "string.upper = function() return 'pwned' end\n"
                   "string.evil = function() return 'pwned' end\n"
                   "return ('x'):upper() == 'X' and ('x').evil == nil"));
  CHECK(is_true(v, "return ('x'):upper() == 'X'"));
  CHECK(is_true(v, "return string.upper('x') == 'pwned'"));
  ocap_vat_free(v);
  return fails;
}

static int test_require(void) {
  static const char mod[] = "local name = ...\n"
                            "count = (count or 0) + 1\n"
                            "return { name = name }";
  static const char loop_a[] = "return require('loop_b')";
  static const char loop_b[] = "return require('loop_a')";
  static const char fails_once[] = "if not tried then tried = true error('first try fails') end\n"
                                   "return 'second'";
  int fails = 0;
  ocap_vat_t *v = new_vat(0, 0);
  lua_State *L;
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  L = ocap_vat_state(v);
  CHECK(ocap_vat_preload(v, "m", mod, strlen(mod), 0) == 0);
  CHECK(ocap_vat_preload(v, "nothing", "local x = 1", 11, 0) == 0);
  CHECK(ocap_vat_preload(v, "loop_a", loop_a, strlen(loop_a), 0) == 0);
  CHECK(ocap_vat_preload(v, "loop_b", loop_b, strlen(loop_b), 0) == 0);
  CHECK(ocap_vat_preload(v, "flaky", fails_once, strlen(fails_once), 0) == 0);
  CHECK(ocap_vat_preload(v, "broken", "return +", 8, 0) == 0);
  CHECK(is_true(v, "local a, b = require('m'), require('m')\n"
                   "return a == b and a.name == 'm' and count == 1"));
  CHECK(is_true(v, "return require('nothing') == true"));
  fails +=
      expect(v, "return require('nope')", OCAP_VAT_ERROR, "module 'nope' not found in this vat");
  fails += expect(v, "return require('loop_a')", OCAP_VAT_ERROR, "require loop");
  /* A failed load is forgotten, not cached and not mistaken for a loop. */
  fails += expect(v, "return require('flaky')", OCAP_VAT_ERROR, "first try fails");
  CHECK(is_true(v, "return require('flaky') == 'second'"));
  fails += expect(v, "return require('broken')", OCAP_VAT_ERROR, "error loading module 'broken'");
  /* The kernel can place a value for require. */
  lua_newtable(L);
  lua_pushinteger(L, 42);
  lua_setfield(L, -2, "answer");
  CHECK(ocap_vat_set_loaded(v, "ocap") == 0);
  CHECK(lua_gettop(L) == 0);
  CHECK(is_true(v, "return require('ocap').answer == 42"));
  CHECK(lua_gettop(L) == 0);
  ocap_vat_free(v);
  return fails;
}

static int test_errors(void) {
  int fails = 0;
  ocap_vat_t *v = new_vat(0, 0);
  lua_State *L;
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  L = ocap_vat_state(v);
  fails += expect(v, "local function inner() error('boom') end inner()", OCAP_VAT_ERROR, "boom");
  fails += expect(v, "error('boom')", OCAP_VAT_ERROR, "stack traceback");
  fails += expect(v, "error('boom')", OCAP_VAT_ERROR, "test:1:");
  fails += expect(v, "error({})", OCAP_VAT_ERROR, "(error object is a table value)");
  fails += expect(v, "error(setmetatable({}, {__tostring = function() return 'custom' end}))",
                  OCAP_VAT_ERROR, "custom");
  CHECK(ocap_vat_fatal(v) == 0);
  /* The state stays usable after ordinary errors. */
  CHECK(is_true(v, "return 1 + 1 == 2"));
  /* Results and arguments go through; the stack stays balanced. */
  CHECK(ocap_vat_load(v, "local a, b = ... return a + b, a * b", 36, "=args") == 0);
  lua_pushinteger(L, 3);
  lua_pushinteger(L, 4);
  CHECK(ocap_vat_pcall(v, 2, 2) == OCAP_VAT_OK);
  CHECK(lua_gettop(L) == 2 && lua_tointeger(L, 1) == 7 && lua_tointeger(L, 2) == 12);
  lua_settop(L, 0);
  CHECK(ocap_vat_load(v, "return 1, 2, 3", 14, "=multi") == 0);
  CHECK(ocap_vat_pcall(v, 0, LUA_MULTRET) == OCAP_VAT_OK);
  CHECK(lua_gettop(L) == 3);
  lua_settop(L, 0);
  /* A handler pushed below the function is used and left in place. */
  ocap_vat_push_handler(v);
  CHECK(ocap_vat_load(v, "error('boom')", 13, "=pre") == 0);
  CHECK(ocap_vat_pcall(v, 0, 0) == OCAP_VAT_ERROR);
  CHECK(lua_gettop(L) == 2 && lua_tocfunction(L, 1) != NULL);
  CHECK(lua_tostring(L, 2) != NULL && strstr(lua_tostring(L, 2), "stack traceback") != NULL);
  lua_settop(L, 1);
  CHECK(ocap_vat_load(v, "local a = ... return a, a * 2", 29, "=pre") == 0);
  lua_pushinteger(L, 5);
  CHECK(ocap_vat_pcall(v, 1, 2) == OCAP_VAT_OK);
  CHECK(lua_gettop(L) == 3 && lua_tointeger(L, 2) == 5 && lua_tointeger(L, 3) == 10);
  lua_settop(L, 0);
  /* Finalizers run with hooks off, so they are refused. */
  fails += expect(v, "setmetatable({}, {__gc = true})", OCAP_VAT_ERROR, "__gc");
  CHECK(is_true(v, "local t = setmetatable({}, {__index = {a = 1}}) return t.a == 1"));
  CHECK(is_true(v, "return not pcall(setmetatable, setmetatable({}, {__metatable = 1}), {})"));
  ocap_vat_free(v);

  /*
   * Deep recursion is an ordinary error when the budget holds Lua's whole
   * stack (a million slots and their call records, about 80 MB).
   */
  v = new_vat((size_t)256 << 20, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  fails += expect(v, "local function f() return 1 + f() end return f()", OCAP_VAT_ERROR,
                  "stack overflow");
  CHECK(is_true(v, "return true"));
  ocap_vat_free(v);
  return fails;
}

static int test_from_state(void) {
  int fails = 0;
  ocap_vat_t *v = new_vat(0, 0);
  lua_State *L, *co, *plain;
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  L = ocap_vat_state(v);
  CHECK(ocap_vat_from_state(L) == v);
  co = lua_newthread(L);
  CHECK(ocap_vat_from_state(co) == v);
  /* Lua 5.4 copies the creator's hook into a new thread. */
  CHECK(lua_gethook(co) == lua_gethook(L) && lua_gethook(L) != NULL);
  CHECK((lua_gethookmask(co) & LUA_MASKCOUNT) != 0);
  CHECK(lua_gethookcount(co) == OCAP_VAT_GRANULE);
  lua_pop(L, 1);
  plain = luaL_newstate();
  CHECK(ocap_vat_from_state(plain) == NULL);
  lua_close(plain);
  ocap_vat_free(v);
  ocap_vat_free(NULL);
  return fails;
}

static int test_new_limits(void) {
  int fails = 0;
  ocap_vat_limits_t tiny = {1024, 0, 0, 0};
  ocap_vat_limits_t small = {16 << 10, 0, 0, 0};
  ocap_vat_limits_t negative = {0, -1, 0, 0};
  ocap_vat_t *v = (ocap_vat_t *)&fails;
  CHECK(ocap_vat_new(&tiny, &v) == OCAP_ENOMEM && v == NULL);
  CHECK(ocap_vat_new(&small, &v) == OCAP_ENOMEM && v == NULL);
  CHECK(ocap_vat_new(&negative, &v) == OCAP_EINVAL && v == NULL);
  CHECK(ocap_vat_new(NULL, &v) == 0 && v != NULL);
  ocap_vat_free(v);
  return fails;
}

/*
 * Packing (vat.c): while it is on, a 32-byte block comes from a free
 * 40-byte block, whole, when no 32-byte block is free; while it is off,
 * the 40-byte block stays free and a new block is carved.
 */
static int test_packing(void) {
  enum { DRAIN = 4096 };
  int fails = 0;
  ocap_vat_t *v = new_vat(0, 0);
  static void *drained[2][DRAIN];
  void *ud;
  lua_Alloc f;
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  f = lua_getallocf(ocap_vat_state(v), &ud);
  for (int on = 0; on <= 1; on++) {
    void *big, *got;
    ocap_vat_set_packing(v, on);
    /* Whatever 32-byte blocks are free (the state's, and the rest of a
     * block split for the 40 bytes) are taken first, and kept until the
     * end. */
    big = f(ud, NULL, 0, 40);
    CHECK(big != NULL);
    for (int i = 0; i < DRAIN; i++)
      drained[on][i] = f(ud, NULL, 0, 32);
    f(ud, big, 40, 0);
    got = f(ud, NULL, 0, 32);
    CHECK(got != NULL);
    CHECK(on ? got == big : got != big);
    f(ud, got, 32, 0);
  }
  for (int on = 0; on <= 1; on++)
    for (int i = 0; i < DRAIN; i++)
      f(ud, drained[on][i], 32, 0);
  ocap_vat_free(v);
  return fails;
}

/*
 * A vat's first chunk (vat.c, "Chunks"): a vat told what an alike vat
 * carved (boot_bytes) carves the same blocks from one chunk. 80 KiB of
 * 64-byte blocks overflow the default first chunk; the last 1,000 come
 * from the chunks' bump pointer (the first few may be free blocks the
 * state left), so they are contiguous only within one chunk. Returns
 * whether they all were.
 */
static int carved_contiguous(ocap_vat_t *v) {
  enum { BLOCKS = 1280, TAIL = 1000, SIZE = 64 };
  static char *blocks[BLOCKS];
  int contiguous = 1;
  void *ud;
  lua_Alloc f = lua_getallocf(ocap_vat_state(v), &ud);
  lua_gc(ocap_vat_state(v), LUA_GCSTOP);
  for (int i = 0; i < BLOCKS; i++)
    blocks[i] = f(ud, NULL, 0, SIZE);
  for (int i = BLOCKS - TAIL; i < BLOCKS; i++)
    if (blocks[i] == NULL || (i > BLOCKS - TAIL && blocks[i] != blocks[i - 1] + SIZE))
      contiguous = 0;
  for (int i = 0; i < BLOCKS; i++)
    if (blocks[i] != NULL)
      f(ud, blocks[i], SIZE, 0);
  return contiguous;
}

static int test_first_chunk(void) {
  int fails = 0;
  ocap_vat_limits_t lim = {0, 0, meter_mode, 0};
  ocap_vat_t *a = new_vat(0, 0), *b = NULL;
  CHECK(a != NULL);
  if (a == NULL)
    return fails;
  CHECK(!carved_contiguous(a));
  lim.boot_bytes = ocap_vat_carved(a);
  ocap_vat_free(a);
  CHECK(ocap_vat_new(&lim, &b) == 0);
  if (b == NULL)
    return fails;
  CHECK(carved_contiguous(b));
  CHECK(ocap_vat_carved(b) <= lim.boot_bytes);
  ocap_vat_free(b);
  return fails;
}

static int test_meter(void) {
  static const char loop[] = "local n = 0 for i = 1, 1e6 do n = n + i end return n";
  int fails = 0;
  ocap_vat_t *v = new_vat(0, 100000);
  lua_State *L;
  long long used;
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  L = ocap_vat_state(v);
  /* The meter runs only inside ocap_vat_pcall. */
  CHECK(ocap_vat_load(v, loop, strlen(loop), "=loop") == 0);
  CHECK(lua_pcall(L, 0, 1, 0) == LUA_OK && lua_tointeger(L, -1) == 500000500000LL);
  lua_pop(L, 1);
  CHECK(ocap_vat_fatal(v) == 0);
  CHECK(is_true(v, "return true"));
  CHECK(ocap_vat_instructions(v) < OCAP_VAT_GRANULE * 2);
  fails += expect(v, loop, OCAP_VAT_METER, "instruction budget");
  CHECK(ocap_vat_fatal(v) == OCAP_VAT_METER);
  CHECK(ocap_vat_instructions(v) >= 100000);
  /* Sticky: nothing runs any more, and loading says why. */
  lua_pushcfunction(L, nop);
  CHECK(ocap_vat_pcall(v, 0, 0) == OCAP_VAT_METER);
  CHECK(lua_gettop(L) == 1 && strstr(lua_tostring(L, 1), "instruction budget") != NULL);
  lua_settop(L, 0);
  ocap_vat_push_handler(v);
  lua_pushcfunction(L, nop);
  CHECK(ocap_vat_pcall(v, 0, 0) == OCAP_VAT_METER);
  CHECK(lua_gettop(L) == 2 && strstr(lua_tostring(L, 2), "instruction budget") != NULL);
  lua_settop(L, 0);
  CHECK(ocap_vat_load(v, "return 1", 8, "=x") == OCAP_EFATAL);
  lua_pop(L, 1);
  CHECK(ocap_vat_preload(v, "m", "return 1", 8, 0) == OCAP_EFATAL);
  lua_pushnil(L);
  CHECK(ocap_vat_set_loaded(v, "m") == OCAP_EFATAL);
  CHECK(lua_gettop(L) == 0);
  ocap_vat_free(v);

  /* The count is charged per granule and reset per call. */
  v = new_vat(0, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  CHECK(is_true(v, "local n = 0 for i = 1, 1e6 do n = n + i end return n > 0"));
  used = ocap_vat_instructions(v);
  CHECK(used >= 1000000 && used <= 5000000);
  CHECK(is_true(v, "return true"));
  CHECK(ocap_vat_instructions(v) < used);
  ocap_vat_free(v);

  /* Instruction mode is deterministic: a fresh vat counts the same again. */
  v = new_vat(0, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  CHECK(is_true(v, "local n = 0 for i = 1, 1e6 do n = n + i end return n > 0"));
  CHECK(ocap_vat_instructions(v) == used);
  ocap_vat_free(v);
  return fails;
}

/*
 * A C function the test puts into a vat to re-enter it through
 * ocap_vat_pcall, as a kernel syscall might.
 * [-1, +1] Calls its argument and returns the status.
 */
static int reenter(lua_State *L) {
  ocap_vat_t *v = ocap_vat_from_state(L);
  int status;
  lua_settop(L, 1);
  status = ocap_vat_pcall(v, 0, 0);
  lua_settop(L, 0);
  lua_pushinteger(L, status);
  return 1;
}

static int test_reentry(void) {
  int fails = 0;
  ocap_vat_t *v = new_vat(0, 1000000);
  lua_State *L;
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  L = ocap_vat_state(v);
  lua_pushcfunction(L, reenter);
  lua_setglobal(L, "reenter");
  CHECK(is_true(v, "return reenter(function() end) == 0"));
  /* A nested call shares the outer budget instead of getting a new one. */
  CHECK(is_true(v, "for i = 1, 1e5 do end\n"
                   "return reenter(function() for i = 1, 1e5 do end end) == 0"));
  CHECK(ocap_vat_instructions(v) >= 200000);
  /* Once the inner call is fatal, the outer one cannot continue. */
  fails += expect(v, "local s = reenter(function() while true do end end) return s", OCAP_VAT_METER,
                  NULL);
  ocap_vat_free(v);
  return fails;
}

/*
 * Each of these must end fatally, stay fatal, and leave a vat that frees
 * cleanly. What stops it must be the meters, never the CPU-time backstop:
 * a METER attack has been charged its whole budget (and at most a twentieth
 * more, what one charge of a C function or of collections may add past
 * it), a MEMORY attack no more than its budget. Work the meter did not see
 * would leave the charge short and the backstop's reason, so the test
 * catches it without looking at a clock.
 */
/*
 * A module that takes long to parse, runs a handful of instructions and
 * fails, for require loops.
 */
#define ONE_LINE "t = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 }\n"
#define TEN_LINES                                                                                  \
  ONE_LINE ONE_LINE ONE_LINE ONE_LINE ONE_LINE ONE_LINE ONE_LINE ONE_LINE ONE_LINE ONE_LINE
#define HUNDRED_LINES                                                                              \
  TEN_LINES TEN_LINES TEN_LINES TEN_LINES TEN_LINES TEN_LINES TEN_LINES TEN_LINES TEN_LINES        \
      TEN_LINES

static const char big_and_broken[] = "local function never_called()\n" HUNDRED_LINES HUNDRED_LINES
    HUNDRED_LINES HUNDRED_LINES HUNDRED_LINES "end error('broken')";

static int test_attacks(void) {
  static const char *const attacks[] = {
      /* CPU */
      "while true do end",
      "while true do pcall(function() while true do end end) end",
      "while true do pcall(error) end",
      "while true do xpcall(function() while true do end end, function() while true do end end) "
      "end",
      "while true do local co = coroutine.create(function() while true do end end)\n"
      "  coroutine.resume(co) end",
      "while true do pcall(coroutine.wrap(function() while true do end end)) end",
      "local co = coroutine.wrap(function()\n"
      "  while true do pcall(function() while true do end end) end end)\n"
      "while true do pcall(co) end",
      "local function f() return 1 + f() end while true do pcall(f) end",
      "local function f() return pcall(f) end while true do f() end",
      "local t = setmetatable({}, {__index = function(t, k) return t[k] end})\n"
      "while true do pcall(function() return t.x end) end",
      "local t = setmetatable({}, {__tostring = function(t) return tostring(t) end})\n"
      "while true do pcall(tostring, t) end",
      "local function f() return coroutine.resume(coroutine.create(f)) end while true do f() end",
      "local function f() return coroutine.wrap(f)() end while true do pcall(f) end",
      "local function f() return ('x'):gsub('.', f) end while true do pcall(f) end",
      "local function f() table.sort({3, 2, 1}, function() return f() end) end\n"
      "while true do pcall(f) end",
      "while true do pcall(string.rep, 'x', 1e10) end",
      "while true do pcall(require, 'nope') end",
      "while true do pcall(require, 'big_and_broken') end",
      /* handlers and __close metamethods, which Lua may run with hooks off */
      "xpcall(function() while true do end end, function() while true do end end)",
      "local function f() return 1 + f() end\n"
      "while true do xpcall(f, function() while true do end end) end",
      "while true do pcall(function()\n"
      "  local x <close> = setmetatable({}, {__close = function() while true do end end})\n"
      "  while true do end end) end",
      "local co = coroutine.create(function()\n"
      "  local x <close> = setmetatable({}, {__close = function() while true do end end})\n"
      "  while true do end end)\n"
      "coroutine.resume(co) coroutine.close(co) while true do end",
      "local f = coroutine.wrap(function()\n"
      "  local x <close> = setmetatable({}, {__close = function() while true do end end})\n"
      "  while true do end end)\n"
      "while true do pcall(f) end",
      "local f = coroutine.wrap(function()\n"
      "  local x <close> = setmetatable({}, {__close = function() while true do end end})\n"
      "  coroutine.yield() end)\n"
      "f() while true do pcall(f) end",
      "while true do pcall(error, setmetatable({}, {__tostring = function()\n"
      "  while true do end end})) end",
      "error(setmetatable({}, {__tostring = function() while true do end end}))",
      /* C functions whose loops execute no instructions */
      "table.move({}, 1, 1e15, 2)",
      "table.insert(setmetatable({}, {__len = function() return math.maxinteger - 1 end}), 1, 0)",
      "table.remove(setmetatable({}, {__len = function() return 1e15 end}), 1)",
      "table.concat(setmetatable({}, {__index = function() return '' end}), '', 1, 1e15)",
      "while true do pcall(string.rep, '', 1e18) pcall(string.rep, 'ab', 1e6) end",
      /* memory */
      "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1e6) end",
      "return string.rep('x', 1e9)",
      "local t = {} for i = 1, 1e9 do t[i] = {} end",
      "local s = 'x' while true do pcall(function() s = table.concat({s, s}) end) end",
      "while true do pcall(function() local t = {}\n"
      "  for i = 1, 1e9 do t[#t + 1] = ('x'):rep(100) .. i end\n"
      "  return table.concat(t) end) end",
      "local keep = {} while true do pcall(function()\n"
      "  for i = 1, 1e9 do keep[#keep + 1] = {i} end end) end",
      "local t = {} while true do local co = coroutine.wrap(function()\n"
      "  for i = 1, 1e9 do t[#t + 1] = tostring(i) end end) pcall(co) end",
      NULL,
  };
  int fails = 0;
  for (const char *const *a = attacks; *a != NULL; a++) {
    /* Time mode stops at the allowance, 50 times longer: keep it short. */
    ocap_vat_t *v =
        new_vat((size_t)ATTACK_MEMORY,
                meter_mode == OCAP_VAT_METER_TIME ? ATTACK_INSTRUCTIONS / 10 : ATTACK_INSTRUCTIONS);
    lua_State *L;
    double t0, elapsed;
    long long used;
    char reason[256];
    int status, again, bad;
    CHECK(v != NULL);
    if (v == NULL)
      continue;
    L = ocap_vat_state(v);
    CHECK(ocap_vat_preload(v, "big_and_broken", big_and_broken, sizeof big_and_broken - 1, 0) == 0);
    current_attack = *a;
    hang_guard(HANG_CPU_SECONDS);
    t0 = now();
    status = run(v, *a);
    elapsed = now() - t0;
    hang_guard(0);
    used = ocap_vat_instructions(v);
    snprintf(reason, sizeof reason, "%s",
             ocap_vat_fatal_reason(v) ? ocap_vat_fatal_reason(v) : "-");
    if (getenv("TEST_VAT_VERBOSE"))
      fprintf(stderr, "%.3f s, status %d, %lld instructions, %s: %.40s\n", elapsed, status, used,
              reason, *a);
    bad = fails;
    CHECK(status == OCAP_VAT_METER || status == OCAP_VAT_MEMORY);
    CHECK(strstr(reason, "CPU time") == NULL);
    /* Only instruction mode counts; time mode is bounded by the hang guard. */
    if (meter_mode == OCAP_VAT_METER_INSTRUCTIONS) {
      if (status == OCAP_VAT_METER)
        CHECK(used >= ATTACK_INSTRUCTIONS &&
              used <= ATTACK_INSTRUCTIONS + ATTACK_INSTRUCTIONS / 20);
      else
        CHECK(used <= ATTACK_INSTRUCTIONS);
    }
    CHECK(lua_gettop(L) == 1 && lua_isstring(L, -1));
    CHECK(ocap_vat_fatal(v) == status);
    CHECK(ocap_vat_memory(v) <= (size_t)ATTACK_MEMORY + OCAP_VAT_MEMORY_SLACK);
    lua_settop(L, 0);
    lua_pushcfunction(L, nop);
    again = ocap_vat_pcall(v, 0, 0);
    CHECK(again == status && lua_gettop(L) == 1);
    lua_settop(L, 0);
    if (fails != bad)
      fprintf(stderr, "  attack: %s\n  status %d, %lld instructions charged, reason: %s\n", *a,
              status, used, reason);
    ocap_vat_free(v);
  }
  return fails;
}

/* The replaced xpcall and coroutine functions keep their meaning. */
static int test_replaced_functions(void) {
  int fails = 0;
  ocap_vat_t *v = new_vat(0, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  CHECK(is_true(v, "local ok, a, b = xpcall(function(x, y) return y, x end, error, 1, 2)\n"
                   "return ok == true and a == 2 and b == 1"));
  CHECK(is_true(v, "local ok, m = xpcall(error, function(e) return 'handled ' .. e end, 'x', 0)\n"
                   "return ok == false and m == 'handled x'"));
  CHECK(is_true(v, "return not xpcall(error, function(e) error('again', 0) end, 'x', 0)"));
  /* What the handler returns is what xpcall returns. */
  CHECK(is_true(v, "local ok, m = xpcall(function() local x = nil; return x.y end,\n"
                   "  function(e) return 'at the error: ' .. e end)\n"
                   "return not ok and m:find('at the error: test:1: attempt to index', 1, true)"));
  /* The vat's error keeps the positions levels 1 and 2 name, and tables as they are. */
  CHECK(is_true(v, "local function f() error('boom') end\n"
                   "local function g() error('up', 2) end\n"
                   "local t = {} local _, a = pcall(f) local _, b = pcall(function()\n"
                   "  g() end) local _, c = pcall(error, t) local _, d = pcall(error, 'x', 0)\n"
                   "return a == 'test:1: boom' and b == 'test:4: up' and c == t and d == 'x'"));
  CHECK(is_true(v, "return select('#', xpcall(function() end, error)) == 1"));
  CHECK(is_true(v, "local ok, a, b = pcall(function(x) return x, 2 end, 1)\n"
                   "return ok and a == 1 and b == 2 and select('#', pcall(error)) == 2"));
  CHECK(is_true(v, "local co = coroutine.wrap(function()\n"
                   "  return pcall(function() return coroutine.yield(1) + 1 end) end)\n"
                   "local first = co() local ok, second = co(41)\n"
                   "return first == 1 and ok and second == 42"));
  CHECK(is_true(v, "return not pcall(xpcall, print)"));
  CHECK(is_true(v, "local co = coroutine.wrap(function()\n"
                   "  return xpcall(function() return coroutine.yield(1) + 1 end, error) end)\n"
                   "local first = co() local ok, second = co(41)\n"
                   "return first == 1 and ok and second == 42"));
  CHECK(is_true(v, "local f = coroutine.wrap(function(a) local b = coroutine.yield(a + 1)\n"
                   "  return b * 2 end)\n"
                   "return f(1) == 2 and f(10) == 20 and not pcall(f)"));
  CHECK(is_true(v,
                "local closed = false\n"
                "local f = coroutine.wrap(function()\n"
                "  local x <close> = setmetatable({}, {__close = function() closed = true end})\n"
                "  error('inner', 0) end)\n"
                "local ok, m = pcall(f) return not ok and m == 'inner' and closed"));
  CHECK(is_true(v,
                "local closed = false\n"
                "local co = coroutine.create(function()\n"
                "  local x <close> = setmetatable({}, {__close = function() closed = true end})\n"
                "  coroutine.yield() end)\n"
                "coroutine.resume(co) return coroutine.close(co) and closed"));
  CHECK(ocap_vat_fatal(v) == 0);
  ocap_vat_free(v);
  return fails;
}

/* Cheap answers the metered C functions must still give. */
static int test_metered_library(void) {
  int fails = 0;
  ocap_vat_t *v = new_vat(0, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  CHECK(is_true(v, "return string.rep('', 1e18) == '' and string.rep('', 1e18, '') == ''"));
  CHECK(is_true(v, "return ('x'):rep(3, '-') == 'x-x-x' and ('x'):rep(0) == ''"));
  fails += expect(v, "return string.rep('x', 1e10)", OCAP_VAT_ERROR, "too large");
  CHECK(is_true(v, "local t = {1, 2, 3} table.insert(t, 1, 0) table.insert(t, 4)\n"
                   "return table.concat(t, ',') == '0,1,2,3,4'"));
  CHECK(is_true(v, "local t = {1, 2, 3} return table.remove(t, 1) == 1 and table.remove(t) == 3\n"
                   "  and #t == 1 and table.remove({}) == nil"));
  CHECK(is_true(v, "local t = table.move({1, 2, 3}, 1, 3, 2) return table.concat(t) == '1123'"));
  CHECK(is_true(v, "local t = {3, 1, 2} table.sort(t) return table.concat(t, '', 2) == '23'"));
  CHECK(is_true(v, "local a, b = table.unpack({1, 2}) return a == 1 and b == 2"));
  fails += expect(v, "table.insert({}, 5, 1)", OCAP_VAT_ERROR, "position out of bounds");
  fails += expect(v, "table.insert({}, 1, 2, 3)", OCAP_VAT_ERROR, "wrong number of arguments");
  fails += expect(v, "table.move({}, -1, math.maxinteger, 1)", OCAP_VAT_ERROR, "too many elements");
  fails += expect(v, "table.concat(nil)", OCAP_VAT_ERROR, "table expected");
  fails += expect(v, "table.concat({}, '', 1, 1e9)", OCAP_VAT_ERROR, "invalid value (at index 1)");
  CHECK(is_true(
      v, "return table.concat({'a', 'b', 3}, ', ') == 'a, b, 3'\n"
         "  and table.concat({}) == '' and table.concat({'a', 'b', 'c'}, '', 2, 3) == 'bc'"));
  /* The wrapped library functions answer as the originals do. */
  CHECK(is_true(
      v, "return ('abc'):upper() == 'ABC' and ('ABC'):lower() == 'abc'\n"
         "  and ('abc'):reverse() == 'cba' and ('abcdef'):sub(2, -2) == 'bcde'\n"
         "  and ('abc'):sub(5) == '' and select('#', ('abc'):byte(1, -1)) == 3\n"
         "  and string.char(104, 105) == 'hi' and ('%5.1f|%s|%q'):format(1.25, 'x', 'a\\n') =="
         " '  1.2|x|\"a\\\\\\n\"'"));
  CHECK(is_true(v, "local p = string.pack('i4z', 7, 'hi') local a, b = string.unpack('i4z', p)\n"
                   "return a == 7 and b == 'hi' and string.packsize('i4i8') == 12"));
  CHECK(is_true(v, "local s = 'h\\u{e9}llo' local cps = {}\n"
                   "for _, c in utf8.codes(s) do cps[#cps + 1] = c end\n"
                   "return utf8.len(s) == 5 and #cps == 5 and cps[2] == 233\n"
                   "  and utf8.offset(s, 3) == 4 and utf8.codepoint(s, 2) == 233\n"
                   "  and utf8.char(72, 233) == 'H\\u{e9}' and utf8.len('\\xff') == nil"));
  CHECK(is_true(v, "local t = {'pear', 'apple', 'fig'} table.sort(t)\n"
                   "local u = {3, 1, 2} table.sort(u, function(a, b) return a > b end)\n"
                   "return table.concat(t, ',') == 'apple,fig,pear' and table.concat(u) == '321'"));
  CHECK(is_true(
      v,
      "return tonumber('  42  ') == 42 and tonumber('ff', 16) == 255 and tonumber('x') == nil\n"
      "  and rawequal('ab', 'a' .. 'b') and select('#', 1, 2, 3) == 3 and select(-1, 1, 2) == 2\n"
      "  and math.max(1, 5, 3) == 5 and math.min(4, 2) == 2 and table.pack(1, 2).n == 2"));
  CHECK(is_true(v, "local t = setmetatable({}, {__index = function(_, i) return 'v' .. i end,\n"
                   "  __len = function() return 3 end})\n"
                   "return table.concat(t) == 'v1v2v3'"));
  CHECK(ocap_vat_fatal(v) == 0);
  ocap_vat_free(v);
  return fails;
}

static int test_memory(void) {
  static const char churn[] = "local keep = {}\n"
                              "for i = 1, 25 do keep[i] = string.rep('k', 100000) .. i end\n"
                              "for i = 1, 200 do local s = string.rep('y', 300000) .. i end\n"
                              "return #keep == 25";
  int fails = 0;
  size_t m0, m1, m2;
  ocap_vat_t *v = new_vat(0, 0);
  lua_State *L;
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  L = ocap_vat_state(v);
  m0 = ocap_vat_memory(v);
  CHECK(m0 > 0 && m0 < (size_t)(1 << 20));
  CHECK(is_true(v, "big = {} for i = 1, 1e5 do big[i] = {i} end return true"));
  m1 = ocap_vat_memory(v);
  CHECK(m1 > m0 + (1 << 20));
  CHECK(is_true(v, "big = nil return true"));
  lua_gc(L, LUA_GCCOLLECT, 0);
  m2 = ocap_vat_memory(v);
  CHECK(m2 < m1 - (1 << 20));
  ocap_vat_free(v);

  /* Garbage near the limit is collected in an emergency, not fatal. */
  v = new_vat((size_t)4 << 20, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  CHECK(is_true(v, churn));
  CHECK(ocap_vat_fatal(v) == 0);
  ocap_vat_free(v);

  /* Exhaustion caught by the vat's own pcall is fatal all the same. */
  v = new_vat((size_t)4 << 20, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  fails +=
      expect(v,
             "local t = {}\n"
             "local ok = pcall(function() for i = 1, 1e9 do t[i] = ('x'):rep(1000) .. i end end)\n"
             "t = nil return ok",
             OCAP_VAT_MEMORY, "memory budget");
  CHECK(ocap_vat_fatal(v) == OCAP_VAT_MEMORY);
  ocap_vat_free(v);

  /* Loading counts against the budget too; running out there is fatal. */
  v = new_vat((size_t)4 << 20, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  L = ocap_vat_state(v);
  {
    size_t len = (size_t)5 << 20;
    char *src = malloc(len);
    CHECK(src != NULL);
    if (src != NULL) {
      memset(src, 'x', len);
      memcpy(src, "return '", 8);
      src[len - 1] = '\'';
      CHECK(ocap_vat_load(v, src, len, "=huge") == OCAP_ENOMEM);
      CHECK(lua_gettop(L) == 1 && strstr(lua_tostring(L, 1), "memory budget") != NULL);
      CHECK(ocap_vat_fatal(v) == OCAP_VAT_MEMORY);
      lua_settop(L, 0);
      free(src);
    }
  }
  ocap_vat_free(v);

  /* Deep recursion under a small budget runs out of memory, not stack. */
  v = new_vat((size_t)4 << 20, 0);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  fails += expect(v, "local function f() return 1 + f() end return f()", OCAP_VAT_MEMORY, NULL);
  ocap_vat_free(v);
  return fails;
}

/*
 * The CPU-time backstop: comparisons of long strings are single VM
 * instructions the count hook cannot see between, so a vat comparing two
 * 4 MiB strings in a loop is stopped by its time allowance (the minimum,
 * 50 ms of CPU, for this small budget), long before its budget of
 * instructions would run out, also inside a coroutine and under pcall. The
 * test counts the comparisons the vat managed, in a global it can read
 * after the vat is fatal.
 */
static int test_time_backstop(void) {
  static const char *const attacks[] = {
      "local a, b = ('x'):rep(1024):rep(4096), ('x'):rep(1024):rep(4096) .. 'y'\n"
      "for i = 1, 1e9 do done = i local c = a < b end",
      "local a, b = ('x'):rep(1024):rep(4096), ('x'):rep(1024):rep(4096) .. 'y'\n"
      "local co = coroutine.wrap(function() for i = 1, 1e9 do done = i\n"
      "  local c = a < b if i % 7 == 0 then coroutine.yield() end end end)\n"
      "while true do pcall(co) end",
      "local a, b = ('x'):rep(1024):rep(4096), ('x'):rep(1024):rep(4096):sub(2) .. 'y'\n"
      "for i = 1, 1e9 do done = i local c = a == b end",
  };
  /*
   * Time mode charges what the library does as instructions: under the
   * sanitizers building the two strings alone uses up 1e6 of them (at
   * 60 ns each), so there it gets ten times more. The bound follows the
   * allowance the budget buys in the vat's mode.
   */
  long long budget = meter_mode == OCAP_VAT_METER_TIME && SANITIZED ? 10000000 : 1000000;
  double ns = (double)budget * (meter_mode == OCAP_VAT_METER_TIME ? OCAP_VAT_TIME_NS_PER_INSTRUCTION
                                                                  : OCAP_VAT_NS_PER_INSTRUCTION);
  if (ns < (double)OCAP_VAT_MIN_ALLOWANCE_NS)
    ns = (double)OCAP_VAT_MIN_ALLOWANCE_NS;
  int fails = 0;
  for (size_t k = 0; k < sizeof attacks / sizeof attacks[0]; k++) {
    ocap_vat_t *v = new_vat(64 << 20, budget);
    lua_State *L;
    CHECK(v != NULL);
    if (v == NULL)
      return fails;
    L = ocap_vat_state(v);
    fails += expect(v, attacks[k], OCAP_VAT_METER, "instruction budget");
    /* Time mode's meter is the time itself: its reason says no more. */
    if (meter_mode == OCAP_VAT_METER_INSTRUCTIONS)
      CHECK(strstr(ocap_vat_fatal_reason(v), "CPU time") != NULL);
    /*
     * No core compares 256 bytes a nanosecond, so the allowance admits
     * fewer than this many comparisons of 4 MiB: about 30,000 (240,000
     * under sanitizers), where the budget alone admits 250,000.
     */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_getfield(L, -1, "done");
    CHECK(lua_tointeger(L, -1) > 0 && (double)lua_tointeger(L, -1) < ns * 256.0 / (4 << 20));
    if (getenv("TEST_VAT_VERBOSE"))
      fprintf(stderr, "backstop %zu: %lld comparisons\n", k, (long long)lua_tointeger(L, -1));
    lua_pop(L, 2);
    ocap_vat_free(v);
  }
  /* An ordinary call leaves the vat healthy, and the reasons say which budget ran out. */
  {
    ocap_vat_t *v = new_vat(0, 100000);
    CHECK(v != NULL);
    if (v == NULL)
      return fails;
    CHECK(ocap_vat_fatal_reason(v) == NULL);
    CHECK(is_true(v, "return ('x'):rep(1000) < ('y'):rep(1000)"));
    fails += expect(v, "while true do end", OCAP_VAT_METER, "instruction budget");
    CHECK(strcmp(ocap_vat_fatal_reason(v), "instruction meter exhausted") == 0);
    ocap_vat_free(v);
  }
  return fails;
}

/*
 * A vat that keeps its live data just under its memory limit makes every
 * allocation run a full collection; those collections are charged, so it
 * runs out of instructions, with a reason that says why.
 */
static int test_collection_thrash(void) {
  static const char thrash[] = "local kept = {}\n"
                               "for i = 1, 1e9 do kept[i] = {i}\n"
                               "  for j = 1, 20 do local g = {j} end end";
  int fails = 0;
  ocap_vat_t *v = new_vat(8 << 20, 50000000);
  CHECK(v != NULL);
  if (v == NULL)
    return fails;
  fails += expect(v, thrash, OCAP_VAT_METER, "instruction budget");
  CHECK(strstr(ocap_vat_fatal_reason(v), "garbage collection") != NULL);
  ocap_vat_free(v);
  return fails;
}

/*
 * Time mode: no count hook runs while a call is within its allowance, and
 * a runaway call is stopped by the CPU-clock tick, with the CPU-time
 * reason; library charges still count against the budget.
 */
static int test_time_mode(void) {
  int fails = 0;
  ocap_vat_limits_t bad = {0, 0, 7, 0};
  ocap_vat_limits_t lim = {0, 100000, OCAP_VAT_METER_TIME, 0};
  ocap_vat_t *v = (ocap_vat_t *)&fails;
  lua_State *L;
  const char *reason;
  CHECK(ocap_vat_new(&bad, &v) == OCAP_EINVAL && v == NULL);
  CHECK(ocap_vat_new(&lim, &v) == 0);
  if (v == NULL)
    return fails;
  L = ocap_vat_state(v);
  /* No hook, so a loop of a million instructions is never counted. */
  CHECK(lua_gethook(L) == NULL);
  CHECK(is_true(v, "local n = 0 for i = 1, 1e6 do n = n + i end\n"
                   "return coroutine.wrap(function() for i = 1, 1e5 do end return true end)()"));
  CHECK(lua_gethook(L) == NULL && ocap_vat_fatal(v) == 0);
  /* A library charge over the budget is refused before the work is done. */
  fails += expect(v, "return #string.rep('x', 64 * 200000)", OCAP_VAT_METER, "instruction budget");
  reason = ocap_vat_fatal_reason(v);
  CHECK(reason != NULL && strcmp(reason, "instruction meter exhausted") == 0);
  ocap_vat_forgive(v);
  CHECK(lua_gethook(L) == NULL);
  /* A runaway loop, even under pcall in a coroutine, is stopped by the tick. */
  fails += expect(v,
                  "local co = coroutine.wrap(function() while true do pcall(function() while true "
                  "do end end) end end)\n"
                  "while true do pcall(co) end",
                  OCAP_VAT_METER, "instruction budget");
  reason = ocap_vat_fatal_reason(v);
  CHECK(reason != NULL && strcmp(reason, "instruction meter exhausted") == 0);
  ocap_vat_free(v);
  return fails;
}

int main(void) {
  int fails = 0;
  fails += test_globals();
  fails += test_binary_chunks();
  fails += test_string_metatable();
  fails += test_require();
  fails += test_errors();
  fails += test_from_state();
  fails += test_new_limits();
  fails += test_packing();
  fails += test_first_chunk();
  fails += test_meter();
  fails += test_reentry();
  fails += test_attacks();
  fails += test_replaced_functions();
  fails += test_metered_library();
  fails += test_memory();
  fails += test_time_backstop();
  fails += test_collection_thrash();
  fails += test_time_mode();
  /* The containment tests again, with vats metered by time. */
  meter_mode = OCAP_VAT_METER_TIME;
  fails += test_attacks();
  fails += test_replaced_functions();
  fails += test_metered_library();
  fails += test_memory();
  fails += test_time_backstop();
  if (fails) {
    fprintf(stderr, "test_vat: %d failure(s)\n", fails);
    return 1;
  }
  printf("test_vat: ok\n");
  return 0;
}
