/*
 * test_extraspace.c -- the promise core (core/lpromise.c) tells its
 * workers by their threads' extra space (LUA_EXTRASPACE), and a host
 * that loads ocap into its own Lua state may keep its own data in its
 * main thread's extra space, as the Lua manual leaves it to the
 * application: making a promise queue in a state that is not a vat's
 * leaves that data as it was.
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lpromise.h"

#include "check.h"

int main(void) {
  int fails = 0;
  lua_State *L = luaL_newstate();
  unsigned char mark[LUA_EXTRASPACE];
  for (size_t i = 0; i < sizeof mark; i++)
    mark[i] = (unsigned char)(0xa5 ^ i);
  memcpy(lua_getextraspace(L), mark, sizeof mark);
  luaL_openlibs(L);
  luaL_requiref(L, "ocap.promise.core", luaopen_ocap_promise_core, 0);
  lua_getfield(L, -1, "new");
  CHECK(lua_pcall(L, 0, 1, 0) == LUA_OK);
  CHECK(memcmp(lua_getextraspace(L), mark, sizeof mark) == 0);
  lua_close(L);
  if (fails)
    fprintf(stderr, "test_extraspace: %d failure(s)\n", fails);
  return fails ? 1 : 0;
}
