/*
 * lua_target.c -- a fuzz harness whose target is written in Lua and runs
 * in a host state, with the kernel built in as `ocap run` has it.
 *
 * spec/fuzz/<TARGET>.lua is a chunk returning a function of the input. It
 * returns true when the input was accepted and false when it was refused
 * cleanly, and raises only when an invariant broke, which fails the run.
 * The C side of the kernel (store, kernel, vats) runs under the sanitizers
 * like the rest of the harness.
 */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>

#include "harness.h"

#ifndef TARGET
#error "define TARGET as the Lua target's name"
#endif

static lua_State *L; /* the target function is at index 2 */

/* Printed at exit when OCAP_FUZZ_STATS is set, to see how deep the
 * mutations reach. */
static long long n_accepted, n_refused;

static void print_stats(void) {
  fprintf(stderr, "fuzz: %lld accepted, %lld refused\n", n_accepted, n_refused);
}

/* [-0, +1] The message handler: the error with a traceback. */
static int traceback(lua_State *S) {
  const char *msg = lua_tostring(S, 1);
  luaL_traceback(S, S, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

/* Closing the state at exit stops the target's kernels and runs its
 * finalizers, so that LeakSanitizer sees what the kernel failed to free. */
static void close_state(void) {
  lua_close(L);
  L = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = fuzz_host_state();
  atexit(close_state);
  if (getenv("OCAP_FUZZ_STATS"))
    atexit(print_stats);
  lua_pushcfunction(L, traceback);
  fuzz_host_dofile(L, "spec/fuzz/" TARGET ".lua");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L)
    LLVMFuzzerInitialize(NULL, NULL);
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 1, 1) != LUA_OK)
    fuzz_fail("the %s target raised on a %zu-byte input: %s", TARGET, size, lua_tostring(L, -1));
  int accepted = lua_toboolean(L, -1);
  if (accepted)
    n_accepted++;
  else
    n_refused++;
  lua_settop(L, 2);
  return accepted ? 0 : FUZZ_REFUSED;
}
