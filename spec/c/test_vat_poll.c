/*
 * test_vat_poll.c -- the CPU-time backstop of core/vat.c when the host
 * process already handles the watchdog's signal: the vat must leave the
 * host's handler alone and fall back to reading the CPU clock at each
 * firing of the count hook, which still stops a vat comparing long strings.
 * A separate program, because the signal's disposition is process-wide.
 */
#define _GNU_SOURCE

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "vat.h"

#include "check.h"

/* The host's own handler for the signal; it is never called here. */
static void host_handler(int sig, siginfo_t *si, void *context) {
  (void)sig;
  (void)si;
  (void)context;
}

int main(void) {
  static const char attack[] =
      "local a, b = ('x'):rep(1024):rep(4096), ('x'):rep(1024):rep(4096) .. 'y'\n"
      "for i = 1, 1e9 do done = i local c = a < b end";
  struct sigaction sa, now;
  int fails = 0, status;
  ocap_vat_t *v = NULL;
  ocap_vat_limits_t limits = {64 << 20, 1000000, OCAP_VAT_METER_INSTRUCTIONS, 0};
  lua_State *L;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = host_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  CHECK(sigaction(OCAP_VAT_WATCHDOG_SIGNAL, &sa, NULL) == 0);
  CHECK(ocap_vat_new(&limits, &v) == 0);
  if (v == NULL)
    return 1;
  L = ocap_vat_state(v);
  CHECK(ocap_vat_load(v, attack, strlen(attack), "=attack") == 0);
  status = ocap_vat_pcall(v, 0, 0);
  CHECK(status == OCAP_VAT_METER);
  CHECK(ocap_vat_fatal_reason(v) != NULL && strstr(ocap_vat_fatal_reason(v), "CPU time") != NULL);
  lua_settop(L, 0);
  /* As in test_vat: far fewer comparisons than the 250,000 the budget admits. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_getfield(L, -1, "done");
  CHECK(lua_tointeger(L, -1) > 0 &&
        (double)lua_tointeger(L, -1) < 1e6 * OCAP_VAT_NS_PER_INSTRUCTION * 256.0 / (4 << 20));
  lua_settop(L, 0);
  ocap_vat_free(v);
  /* The host's handler is still in place. */
  CHECK(sigaction(OCAP_VAT_WATCHDOG_SIGNAL, NULL, &now) == 0 && (now.sa_flags & SA_SIGINFO) &&
        now.sa_sigaction == host_handler);
  if (fails) {
    fprintf(stderr, "test_vat_poll: %d failure(s)\n", fails);
    return 1;
  }
  printf("test_vat_poll: ok\n");
  return 0;
}
