/*
 * main.c -- the `ocap` command: Lua 5.4 with the kernel built in.
 *
 * It puts the Lua half of ocap (the ocap.* modules) on package.path, then
 * hands the command line to ocap.cli, which implements the subcommands.
 *
 * Where the modules are found, first match wins:
 *  1. $OCAP_LUADIR, when set (for working on the modules);
 *  2. the source tree's lua/, only for the binary the build made in its
 *     build directory (make build), so an edit is picked up at once;
 *  3. next to the executable, as installed: <bin>/../<luadir>, where
 *     <luadir> is the install's relative Lua directory (share/lua/5.4 by
 *     default, which is also where luarocks deploys a rock's modules), so
 *     a prefix can be moved or copied as a whole;
 *  4. the absolute Lua directory the install was configured with, if any.
 * An installed binary never looks in the source tree it was built from.
 */
#define _DEFAULT_SOURCE /* realpath, readlink */

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lsmallcaps.h"
#include "lsyrup.h"

int luaopen_ocap_core(lua_State *L);

#ifndef OCAP_SOURCE_LUADIR
#define OCAP_SOURCE_LUADIR ""
#endif
#ifndef OCAP_BUILD_DIR
#define OCAP_BUILD_DIR ""
#endif
#ifndef OCAP_INSTALL_LUADIR
#define OCAP_INSTALL_LUADIR "share/lua/5.4"
#endif

/*
 * Writes the directory holding the running executable into buf (without a
 * trailing slash). Returns 0, or -1 when it cannot be known.
 */
static int exe_dir(char *buf, size_t size) {
  ssize_t n = readlink("/proc/self/exe", buf, size - 1);
  if (n <= 0 || (size_t)n >= size - 1)
    return -1;
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (slash == NULL)
    return -1;
  *slash = '\0';
  return 0;
}

/* Writes the install prefix of an executable in directory exe into buf:
 * the parent of its bin/ directory. */
static void prefix_of(const char *exe, char *buf, size_t size) {
  size_t n = strlen(exe);
  if (n > 4 && strcmp(exe + n - 4, "/bin") == 0)
    snprintf(buf, size, "%.*s", (int)(n - 4), exe);
  else
    snprintf(buf, size, "%s/..", exe);
}

/* Whether two paths name the same existing directory. */
static int same_dir(const char *a, const char *b) {
  struct stat sa, sb;
  return *a && *b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

/* [-0, +0] Appends "dir/?.lua;dir/?/init.lua;" to the buffer (which is on
 * top of the stack, as luaL_Buffer requires). */
static void add_dir(luaL_Buffer *b, const char *dir) {
  if (dir == NULL || *dir == '\0')
    return;
  luaL_addstring(b, dir);
  luaL_addstring(b, "/?.lua;");
  luaL_addstring(b, dir);
  luaL_addstring(b, "/?/init.lua;");
}

/* [-0, +0, m] Puts our Lua directories in front of package.path and the
 * built-in modules (ocap.core, ocap.sys, ocap.smallcaps, ocap.syrup) in
 * package.preload. */
static int luaopen_ocap_sys(lua_State *L);

static void set_path(lua_State *L) {
  char exe[PATH_MAX], prefix[PATH_MAX + 4], rel[PATH_MAX + sizeof OCAP_INSTALL_LUADIR + 8];
  int have_exe = exe_dir(exe, sizeof exe) == 0;
  if (have_exe)
    prefix_of(exe, prefix, sizeof prefix);
  luaL_Buffer b;
  lua_getglobal(L, "package");
  luaL_buffinit(L, &b);
  add_dir(&b, getenv("OCAP_LUADIR"));
  if (have_exe && same_dir(exe, OCAP_BUILD_DIR)) {
    add_dir(&b, OCAP_SOURCE_LUADIR);
  } else {
    const char *installed = OCAP_INSTALL_LUADIR;
    if (installed[0] == '/') {
      if (have_exe) {
        snprintf(rel, sizeof rel, "%s/share/lua/5.4", prefix);
        add_dir(&b, rel);
      }
      add_dir(&b, installed);
    } else if (have_exe) {
      snprintf(rel, sizeof rel, "%s/%s", prefix, installed);
      add_dir(&b, rel);
    }
  }
  lua_getfield(L, -2, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_ocap_core);
  lua_setfield(L, -2, "ocap.core");
  lua_pushcfunction(L, luaopen_ocap_sys);
  lua_setfield(L, -2, "ocap.sys");
  lua_pushcfunction(L, luaopen_ocap_smallcaps);
  lua_setfield(L, -2, "ocap.smallcaps");
  lua_pushcfunction(L, luaopen_ocap_syrup);
  lua_setfield(L, -2, "ocap.syrup");
  lua_pop(L, 2);
}

/* ---------------------------------------------------------------------- */
/* ocap.sys: the few file-system calls the command line needs that Lua's   */
/* standard library lacks. Failures return nil, message.                  */

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
static int luaopen_ocap_sys(lua_State *L) {
  luaL_newlib(L, sys_funcs);
  return 1;
}

/* ---------------------------------------------------------------------- */

/* [-1, +1] The message handler: the error with a traceback. */
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

/* [-2, +1, e] require('ocap.cli').main(args) with argc and argv. */
static int run(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  set_path(L);
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
