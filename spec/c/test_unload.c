/*
 * test_unload.c -- a Lua state that loaded ocap's module and opened a
 * database is closed while the process goes on: LevelDB's compaction
 * thread, which never exits, must still find its library mapped. Lua
 * unloads the modules of a state it closes, so a LevelDB that went with
 * ocap's module left the thread waiting on unmapped memory, and the next
 * signal it took aborted the process ("The futex facility returned an
 * unexpected error code"), as it did at the end of busted runs. A separate
 * program that loads the module the way lua5.4 does, linked with Lua only,
 * so that nothing else holds LevelDB.
 */
#define _GNU_SOURCE

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "check.h"

/* Writes 8 MiB through the store, twice its write buffer, so that LevelDB
 * compacts and so starts its thread, then closes the database. */
static const char chunk[] = "package.cpath = './lib/?.so'\n"
                            "local core = require 'ocap.core'\n"
                            "local K = assert(core.open({ database = ... }))\n"
                            "local v = ('x'):rep(4096)\n"
                            "for i = 1, 2048 do K:kvSet(('k.%06d'):format(i), v) if i % 256 == 0 "
                            "then K:commit() K:flush() end end\n"
                            "K:commit() K:flush()\n"
                            "K:close()\n";

/* A handler that does nothing: taking the signal is the test. */
static void on_usr1(int sig) {
  (void)sig;
}

/* Whether a library whose path contains name is mapped in this process. */
static int mapped(const char *name) {
  char line[512];
  int found = 0;
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL)
    return -1;
  while (!found && fgets(line, sizeof line, f) != NULL)
    found = strstr(line, name) != NULL;
  fclose(f);
  return found;
}

/* The number of threads of this process other than the caller; each gets
 * SIGUSR1 when signal is set. */
static int other_threads(int signal) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  pid_t me = (pid_t)syscall(SYS_gettid);
  int n = 0;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL) {
    pid_t tid = (pid_t)atoi(e->d_name);
    if (tid <= 0 || tid == me)
      continue;
    n++;
    if (signal)
      syscall(SYS_tgkill, getpid(), tid, SIGUSR1);
  }
  closedir(d);
  return n;
}

int main(void) {
  char dir[] = "/tmp/ocap-unload-XXXXXX";
  char cmd[64];
  struct sigaction sa;
  struct timespec pause = {0, 50 * 1000 * 1000};
  int fails = 0;
  lua_State *L;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  if (mkdtemp(dir) == NULL)
    return 1;
  L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_loadstring(L, chunk) != LUA_OK || (lua_pushstring(L, dir), lua_pcall(L, 1, 0, 0)) != 0) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    fails++;
  }
  CHECK(mapped("leveldb") == 1);
  CHECK(other_threads(0) > 0); /* the compaction thread: else this tests nothing */
  lua_close(L);                /* unloads ocap's module */
  CHECK(mapped("leveldb") == 1);
  /* Before the fix, this is where the process aborted. */
  other_threads(1);
  nanosleep(&pause, NULL);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fails++;
  if (fails == 0)
    printf("test_unload: ok\n");
  return fails != 0;
}
