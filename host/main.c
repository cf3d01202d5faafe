/*
 * main.c -- the `ocap` command: Lua 5.4 with the kernel built in.
 *
 * It finds the Lua half of ocap (lua/ocap/) next to the build, in the
 * install directory, or on LUA_PATH, then hands the command line to
 * ocap.cli, which implements the subcommands.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_ocap_core(lua_State *L);

#ifndef OCAP_SOURCE_LUADIR
#define OCAP_SOURCE_LUADIR ""
#endif
#ifndef OCAP_INSTALL_LUADIR
#define OCAP_INSTALL_LUADIR ""
#endif

/* [-0, +0] Puts our Lua directories in front of package.path. */
static void set_path(lua_State *L) {
  const char *dirs[] = {getenv("OCAP_LUADIR"), OCAP_SOURCE_LUADIR, OCAP_INSTALL_LUADIR};
  luaL_Buffer b;
  lua_getglobal(L, "package");
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
    if (!dirs[i] || !*dirs[i])
      continue;
    luaL_addstring(&b, dirs[i]);
    luaL_addstring(&b, "/?.lua;");
    luaL_addstring(&b, dirs[i]);
    luaL_addstring(&b, "/?/init.lua;");
  }
  lua_getfield(L, -2, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_ocap_core);
  lua_setfield(L, -2, "ocap.core");
  lua_pop(L, 2);
}

static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* [-0, +0] require('ocap.cli').main(args) */
static int run(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "ocap.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_pushstring(L, argv[0]);
  lua_setfield(L, -2, "prog");
  lua_call(L, 1, 1);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "ocap: cannot create Lua state\n");
    return 1;
  }
  luaL_openlibs(L);
  set_path(L);
  lua_pushcfunction(L, msghandler);
  lua_pushcfunction(L, run);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 1);
  int code = 0;
  if (status != LUA_OK) {
    fprintf(stderr, "ocap: %s\n", lua_tostring(L, -1));
    code = 1;
  } else if (lua_isinteger(L, -1)) {
    code = (int)lua_tointeger(L, -1);
  }
  lua_close(L);
  return code;
}
