/*
 * harness.c -- the support shared by the fuzz harnesses; see harness.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "errors.h"
#include "ljson.h"
#include "lpromise.h"
#include "lsmallcaps.h"

#ifndef OCAP_FUZZ_SOURCE_DIR
#define OCAP_FUZZ_SOURCE_DIR "."
#endif

int luaopen_ocap_core(lua_State *L);

void fuzz_fail(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "\n==fuzz== invariant broken: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  fflush(stderr);
  abort();
}

const char *fuzz_source_dir(void) {
  const char *d = getenv("OCAP_SOURCE_DIR");
  return d && *d ? d : OCAP_FUZZ_SOURCE_DIR;
}

char *fuzz_read_source(const char *relpath, size_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", fuzz_source_dir(), relpath);
  FILE *f = fopen(path, "rb");
  if (!f)
    fuzz_fail("cannot read %s", path);
  size_t cap = 1 << 16, n = 0;
  char *p = malloc(cap);
  for (;;) {
    if (!p)
      fuzz_fail("out of memory reading %s", path);
    n += fread(p + n, 1, cap - n - 1, f);
    if (n < cap - 1)
      break;
    cap *= 2;
    p = realloc(p, cap);
  }
  fclose(f);
  p[n] = '\0';
  if (len)
    *len = n;
  return p;
}

/* [-0, +1] The message handler of the harnesses' protected calls. */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

lua_State *fuzz_host_state(void) {
  /* Lua targets find the source tree through the environment too. */
  setenv("OCAP_SOURCE_DIR", fuzz_source_dir(), 0);
  lua_State *L = luaL_newstate();
  if (!L)
    fuzz_fail("cannot create the host state");
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/spec/?.lua;", fuzz_source_dir(),
                  fuzz_source_dir(), fuzz_source_dir());
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_ocap_core);
  lua_setfield(L, -2, "ocap.core");
  lua_pushcfunction(L, luaopen_ocap_smallcaps);
  lua_setfield(L, -2, "ocap.smallcaps");
  lua_pushcfunction(L, luaopen_ocap_promise_core);
  lua_setfield(L, -2, "ocap.promise.core");
  lua_pop(L, 2);
  return L;
}

void fuzz_host_dofile(lua_State *L, const char *relpath) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", fuzz_source_dir(), relpath);
  lua_pushcfunction(L, traceback);
  if (luaL_loadfile(L, path) != LUA_OK || lua_pcall(L, 0, 1, -2) != LUA_OK)
    fuzz_fail("%s: %s", relpath, lua_tostring(L, -1));
  lua_remove(L, -2);
}

/* The runtime modules a decoding vat needs, in load order. */
static const char *const VAT_MODULES[] = {"ocap.pass",       "ocap.pass.boxes",
                                          "ocap.pass.style", "ocap.marshal",
                                          "ocap.hex",        "ocap.marshal.reference"};

/* [-1, +0, e] Runs in the vat: installs the JSON decoder as its `cjson`
 * and the C smallcaps codec, as the kernel's boot trampoline does. */
static int open_json_tramp(lua_State *V) {
  lua_settop(V, 0);
  ocap_open_json(V);
  ocap_vat_set_loaded(ocap_vat_from_state(V), "cjson");
  luaopen_ocap_smallcaps(V);
  ocap_vat_set_loaded(ocap_vat_from_state(V), "ocap.smallcaps");
  return 0;
}

ocap_vat_t *fuzz_new_vat(size_t memory, long long instructions) {
  ocap_vat_limits_t lim = {memory, instructions, OCAP_VAT_METER_TIME, 0};
  ocap_vat_t *v = NULL;
  if (ocap_vat_new(&lim, &v))
    return NULL;
  for (size_t i = 0; i < sizeof VAT_MODULES / sizeof *VAT_MODULES; i++) {
    char rel[256];
    size_t len;
    snprintf(rel, sizeof rel, "lua/%s.lua", VAT_MODULES[i]);
    for (char *c = rel + 4; *c; c++)
      if (*c == '.' && strcmp(c, ".lua") != 0)
        *c = '/';
    char *src = fuzz_read_source(rel, &len);
    int rc = ocap_vat_preload(v, VAT_MODULES[i], src, len, 1);
    free(src);
    if (rc) {
      ocap_vat_free(v);
      return NULL;
    }
  }
  lua_State *V = ocap_vat_state(v);
  lua_pushcfunction(V, open_json_tramp);
  if (ocap_vat_pcall(v, 0, 0) != OCAP_VAT_OK) {
    ocap_vat_free(v);
    return NULL;
  }
  return v;
}
