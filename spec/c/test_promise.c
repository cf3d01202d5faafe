/*
 * test_promise.c -- unit tests for core/lpromise.c, the C core of
 * ocap.promise: an allocation that fails at any point of settling,
 * subscribing or draining (a vat's memory budget running out) leaves the
 * records and the turn queue valid. The semantics themselves are specced
 * through the Lua module in spec/promise_spec.lua.
 */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lpromise.h"

#include "check.h"

/* An allocator that refuses to grow anything once `budget` allocations
 * have been made while `limited` is set. */
typedef struct budget {
  long budget;
  int limited;
  int refused;
} budget_t;

static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  budget_t *b = ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (b->limited && (ptr == NULL || nsize > osize)) {
    if (b->budget <= 0) {
      b->refused = 1;
      return NULL;
    }
    b->budget--;
  }
  return realloc(ptr, nsize);
}

/* [-1, +0] limit(n): from now on, n more allocations succeed. */
static int limit(lua_State *L) {
  budget_t *b = lua_touserdata(L, lua_upvalueindex(1));
  b->budget = (long)luaL_checkinteger(L, 1);
  b->limited = 1;
  return 0;
}

/* [-0, +0] unlimit(): allocations succeed again. */
static int unlimit(lua_State *L) {
  budget_t *b = lua_touserdata(L, lua_upvalueindex(1));
  b->limited = 0;
  return 0;
}

/*
 * The script: twelve promises with three reactions each, settled (and
 * subscribed to again) under the budget, then drained without it. A turn
 * that raises is lost, as any error out of drain loses its turn, but no
 * settled promise may keep a reaction it never queued, no reaction may run
 * twice or before its promise settles, and the queue must still run turns
 * in order. Returns whether the limited part ran to its end.
 */
static const char SCRIPT[] =
    "local core, limit, unlimit = ...\n"
    "local P = core.new()\n"
    "P._internal.configure(function(m) return m end, function() end, coroutine.resume,\n"
    "  coroutine.create, pcall, xpcall)\n"
    "local ps, ds, ran = {}, {}, {}\n"
    "for i = 1, 12 do\n"
    "  ps[i], ds[i], ran[i] = P.makePromise(), {}, 0\n"
    "  local function h(v) ran[i] = ran[i] + 1 return v end\n"
    "  for j = 1, 3 do ds[i][j] = ps[i]:next(h, h) end\n"
    "end\n"
    "local later = {}\n"
    "-- A promise's slots are its user values.\n"
    "local slot = debug.getuservalue\n"
    "local function body()\n"
    "  for i = 1, 12 do\n"
    "    if i % 2 == 0 then P.resolvePromise(ps[i], i)\n"
    "    else P.rejectPromise(ps[i], i) end\n"
    "    later[i] = ps[i]:next()\n"
    "  end\n"
    "  P.drain()\n"
    "end\n"
    "limit(LIMIT)\n"
    "local ok = pcall(body)\n"
    "unlimit()\n"
    "P.drain()\n"
    "assert(not P.hasTurns(), 'turns left after drain')\n"
    "local function check(p)\n"
    "  if P.state(p) == 'pending' then return end\n"
    "  assert(not slot(p, 5) and not slot(p, 8), 'a settled promise kept a reaction')\n"
    "end\n"
    "for i = 1, 12 do\n"
    "  assert(ran[i] <= 3, 'a reaction ran twice')\n"
    "  check(ps[i])\n"
    "  if later[i] then check(later[i]) end\n"
    "  for j = 1, 3 do check(ds[i][j]) end\n"
    "  if P.state(ps[i]) == 'pending' then\n"
    "    assert(ran[i] == 0 and slot(ps[i], 5), 'a pending promise lost a reaction')\n"
    "  end\n"
    "end\n"
    "local order = {}\n"
    "for i = 1, 40 do\n"
    "  P.resolve(i):next(function(v) order[#order + 1] = v end)\n"
    "end\n"
    "P.drain()\n"
    "for i = 1, 40 do assert(order[i] == i, 'queue out of order') end\n"
    "return ok\n";

/* Runs SCRIPT with `limit` allocations allowed; returns -1 on a failed
 * check, else whether the limited part ran to its end without a refusal. */
static int run_with_limit(long n) {
  budget_t b = {0, 0, 0};
  lua_State *L = lua_newstate(budget_alloc, &b);
  int r;
  luaL_openlibs(L);
  lua_pushinteger(L, n);
  lua_setglobal(L, "LIMIT");
  if (luaL_loadstring(L, SCRIPT) != LUA_OK) {
    fprintf(stderr, "load: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return -1;
  }
  luaopen_ocap_promise_core(L);
  lua_pushlightuserdata(L, &b);
  lua_pushcclosure(L, limit, 1);
  lua_pushlightuserdata(L, &b);
  lua_pushcclosure(L, unlimit, 1);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
    fprintf(stderr, "limit %ld: %s\n", n, lua_tostring(L, -1));
    lua_close(L);
    return -1;
  }
  r = lua_toboolean(L, -1) && !b.refused;
  lua_close(L);
  return r;
}

static int test_allocation_failures(void) {
  int fails = 0, r = 0;
  long n;
  for (n = 0; n < 2000 && r == 0; n++) {
    r = run_with_limit(n);
    CHECK(r >= 0);
    if (r < 0)
      break;
  }
  /* The budget must have run out at every step of the way before the
   * script finally ran through. */
  CHECK(r == 1 && n > 20);
  return fails;
}

int main(void) {
  int fails = test_allocation_failures();
  if (fails)
    fprintf(stderr, "test_promise: %d failure(s)\n", fails);
  else
    printf("test_promise: ok\n");
  return fails != 0;
}
