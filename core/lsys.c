/*
 * lsys.c -- ocap.sys: the few file-system calls the command line (ocap.cli,
 * ocap.bundle) needs that Lua's standard library lacks. libocap preloads
 * it in every host state it makes (core/ocap.c).
 */
#define _DEFAULT_SOURCE

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsys.h"

/* The functions return nil, message on failure. */

/* sys.isdir(path) -> boolean  [-0, +1] */
static int sys_isdir(lua_State *L) {
  struct stat st;
  const char *path = luaL_checkstring(L, 1);
  lua_pushboolean(L, stat(path, &st) == 0 && S_ISDIR(st.st_mode));
  return 1;
}

/* __gc of the box that owns an open DIR, so that a raising push cannot
 * leak it.  [-0, +0] */
static int dir_gc(lua_State *L) {
  DIR **box = luaL_checkudata(L, 1, "ocap.sys.Dir");
  if (*box != NULL)
    closedir(*box);
  *box = NULL;
  return 0;
}

/* sys.listdir(path) -> { names... } sorted, without . and .. | nil, msg
 * [-0, +(1|2), m] */
static int sys_listdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  DIR **box = lua_newuserdatauv(L, sizeof *box, 0); /* 2 */
  *box = NULL;
  if (luaL_newmetatable(L, "ocap.sys.Dir")) {
    lua_pushcfunction(L, dir_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, 2);
  *box = opendir(path);
  if (*box == NULL) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_newtable(L); /* 3 */
  int n = 0;
  struct dirent *de;
  while ((de = readdir(*box)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    lua_pushstring(L, de->d_name);
    lua_rawseti(L, 3, ++n);
  }
  closedir(*box);
  *box = NULL;
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_pushvalue(L, 3);
  lua_call(L, 1, 0);
  lua_settop(L, 3);
  return 1;
}

/* sys.mkdirs(path) -> true | nil, msg: makes path and its missing parents.
 * [-0, +(1|2), m] */
static int sys_mkdirs(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  char buf[PATH_MAX];
  if (n == 0 || n >= sizeof buf) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: invalid directory name", path);
    return 2;
  }
  memcpy(buf, path, n + 1);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot create directory %s: %s", buf, strerror(errno));
        return 2;
      }
      *p = c;
      if (c == '\0')
        break;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg sys_funcs[] = {
    {"isdir", sys_isdir},
    {"listdir", sys_listdir},
    {"mkdirs", sys_mkdirs},
    {NULL, NULL},
};

/* [-0, +1] require 'ocap.sys' */
int luaopen_ocap_sys(lua_State *L) {
  luaL_newlib(L, sys_funcs);
  return 1;
}
