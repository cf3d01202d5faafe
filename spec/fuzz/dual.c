/*
 * dual.c -- runs one probe in a vat and in the host on the same input and
 * checks that both decode it the same way.
 *
 * A probe (spec/fuzz/<PROBE>_probe.lua) is a chunk returning a function of
 * the input that returns true and a canonical text of what it decoded, or
 * false and the error; it raises only when an invariant of its own breaks.
 * The same chunk runs in a sandboxed vat, whose `cjson` is the vat JSON
 * decoder (core/ljson.c), and in the host, whose `cjson` is lua-cjson, so
 * two decoders that must agree on every body are checked against each
 * other: a body that means one thing in a vat and another in the host would
 * let a vat and the kernel disagree about a message (see the comment on
 * `same` for the one difference allowed).
 *
 * The vat has small limits, as a hostile sender would meet them; running
 * out of them is a clean refusal, after which the vat is rebuilt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "harness.h"

#ifndef PROBE
#error "define PROBE as the probe's name"
#endif

#define VAT_MEMORY ((size_t)16 << 20)
#define VAT_INSTRUCTIONS 20000000LL

typedef struct dual {
  lua_State *L; /* host state; the probe function is at index 1 */
  ocap_vat_t *vat;
  int vat_probe; /* registry reference in the vat */
  char *src;     /* the probe's source */
  size_t srclen;
} dual_t;

static dual_t D;

/* How the inputs ended, printed at exit when OCAP_FUZZ_STATS is set, to
 * see that the mutations reach past the first byte of the decoder. */
static long long n_both_ok, n_vat_refused, n_both_refused, n_limits;

static void print_stats(void) {
  fprintf(stderr,
          "fuzz: %lld decoded, %lld refused by both, %lld by the vat only, %lld hit limits\n",
          n_both_ok, n_both_refused, n_vat_refused, n_limits);
}

typedef struct input {
  const uint8_t *p;
  size_t n;
} input_t;

/* [-1, +0, e] Runs in the vat: loads the probe and keeps its function. */
static int load_tramp(lua_State *V) {
  lua_settop(V, 0);
  if (ocap_vat_load(ocap_vat_from_state(V), D.src, D.srclen, "=" PROBE "_probe") != 0)
    return lua_error(V);
  lua_call(V, 0, 1);
  D.vat_probe = luaL_ref(V, LUA_REGISTRYINDEX);
  return 0;
}

/* [-1, +2, e] Runs in the vat: probe(input). The input is pushed here,
 * inside the protected call, because pushing it may exhaust the vat's
 * memory. */
static int probe_tramp(lua_State *V) {
  const input_t *in = lua_touserdata(V, 1);
  lua_settop(V, 0);
  lua_rawgeti(V, LUA_REGISTRYINDEX, D.vat_probe);
  lua_pushlstring(V, (const char *)in->p, in->n);
  lua_call(V, 1, 2);
  return 2;
}

static void new_vat(void) {
  D.vat = fuzz_new_vat(VAT_MEMORY, VAT_INSTRUCTIONS);
  if (!D.vat)
    fuzz_fail("cannot build a vat");
  lua_State *V = ocap_vat_state(D.vat);
  lua_pushcfunction(V, load_tramp);
  if (ocap_vat_pcall(D.vat, 0, 0) != OCAP_VAT_OK)
    fuzz_fail("the probe does not load in a vat: %s", lua_tostring(V, -1));
}

/* Frees both states at exit, so that LeakSanitizer sees what the decoders
 * failed to free. */
static void close_states(void) {
  ocap_vat_free(D.vat);
  lua_close(D.L);
  free(D.src);
  memset(&D, 0, sizeof D);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  D.src = fuzz_read_source("spec/fuzz/" PROBE "_probe.lua", &D.srclen);
  D.L = fuzz_host_state();
  fuzz_host_dofile(D.L, "spec/fuzz/" PROBE "_probe.lua");
  new_vat();
  atexit(close_states);
  if (getenv("OCAP_FUZZ_STATS"))
    atexit(print_stats);
  return 0;
}

/* [-0, +0] Copies the string at idx of L into out (truncated), for reports. */
static void copy_out(lua_State *L, int idx, char *out, size_t cap) {
  size_t n = 0;
  const char *s = lua_tolstring(L, idx, &n);
  if (!s) {
    snprintf(out, cap, "(%s)", luaL_typename(L, idx));
    return;
  }
  if (n >= cap)
    n = cap - 1;
  memcpy(out, s, n);
  out[n] = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char host_out[2048], vat_out[2048];
  lua_State *L = D.L;
  if (!L)
    LLVMFuzzerInitialize(NULL, NULL);
  L = D.L;
  lua_settop(L, 1);
  lua_pushvalue(L, 1);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK)
    fuzz_fail("the host probe raised: %s", lua_tostring(L, -1));
  int host_ok = lua_toboolean(L, -2);
  copy_out(L, -1, host_out, sizeof host_out);
  /* The host's answer is the full text; the comparison uses it whole. */
  size_t host_len = 0;
  const char *host_text = lua_tolstring(L, -1, &host_len);

  input_t in = {data, size};
  lua_State *V = ocap_vat_state(D.vat);
  lua_pushcfunction(V, probe_tramp);
  lua_pushlightuserdata(V, &in);
  int st = ocap_vat_pcall(D.vat, 1, 2);
  if (st == OCAP_VAT_METER || st == OCAP_VAT_MEMORY) {
    /* A refusal: the limits held. The vat is spent, as the kernel would
     * terminate it. */
    n_limits++;
    ocap_vat_free(D.vat);
    new_vat();
    lua_settop(L, 1);
    return FUZZ_REFUSED;
  }
  if (st != OCAP_VAT_OK)
    fuzz_fail("the vat probe raised: %s", lua_tostring(V, -1));
  int vat_ok = lua_toboolean(V, -2);
  copy_out(V, -1, vat_out, sizeof vat_out);
  size_t vat_len = 0;
  const char *vat_text = lua_tolstring(V, -1, &vat_len);
  /* The vat decoder is strict JSON, and lua-cjson is not quite (it takes
   * raw control characters in strings, `1.` and `-.5`): the vat may refuse
   * what the host takes, but whatever the vat takes, the host must take
   * too, with the same meaning. */
  int same = !vat_ok || (host_ok && host_text && vat_text && host_len == vat_len &&
                         memcmp(host_text, vat_text, host_len) == 0);
  lua_settop(V, 0);
  lua_settop(L, 1);
  if (vat_ok)
    n_both_ok++;
  else if (host_ok)
    n_vat_refused++;
  else
    n_both_refused++;
  if (!same)
    fuzz_fail("the vat and the host disagree on a %zu-byte input:\n  host: %s %s\n  vat:  %s %s",
              size, host_ok ? "ok" : "error", host_out, vat_ok ? "ok" : "error", vat_out);
  return vat_ok ? 0 : FUZZ_REFUSED;
}
