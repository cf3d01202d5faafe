/*
 * ocap.c -- the C embedding API (include/ocap.h).
 *
 * A host owns one Lua state that runs the Lua host API (ocap.Kernel) through
 * ocap.embed; this file only moves JSON text across, keeps the C-side
 * records (services, replies, result callbacks) and runs the kernel from the
 * host's libuv loop. Result records live in Lua userdata, so closing the Lua
 * state frees every callback still pending without calling it.
 */
#define _GNU_SOURCE /* dladdr, realpath */

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "errors.h" /* the same codes as ocap.h: the compiler checks they agree */
#include "ljson.h"
#include "lpromise.h"
#include "lsmallcaps.h"
#include "lsys.h"
#include "lsyrup.h"
#include "ocap.h"

int luaopen_ocap_core(lua_State *L);

#ifndef OCAP_EMBED_SOURCE_LUADIR
#define OCAP_EMBED_SOURCE_LUADIR ""
#endif
#ifndef OCAP_EMBED_BUILD_DIR
#define OCAP_EMBED_BUILD_DIR ""
#endif
#ifndef OCAP_INSTALL_LUADIR
#define OCAP_INSTALL_LUADIR "share/lua/5.4"
#endif

typedef struct service {
  ocap_service_fn fn;
  void *ud;
} service_t;

/* The loop handles of an attached host; freed by their close callbacks,
 * which may run after the host itself is gone. */
typedef struct attach {
  uv_idle_t idle;   /* active while the kernel has work */
  uv_timer_t timer; /* due with the kernel loop's next timer */
  uv_poll_t poll;   /* the kernel loop's backend descriptor */
  ocap_host_t *host;
  int open;
  int polling; /* poll is initialized */
} attach_t;

struct ocap_reply {
  ocap_host_t *host; /* NULL once the host is freed */
  int kit;           /* registry ref of the promise kit */
  ocap_reply_t *prev, *next;
};

/* A pending result callback; a Lua userdata. */
typedef struct result_rec {
  ocap_host_t *host;
  ocap_result_fn cb;
  void *ud;
} result_rec_t;

struct ocap_host {
  lua_State *L;   /* the main thread */
  lua_State *cur; /* the thread that called into C, during a callback */
  int self;       /* registry ref of the ocap.embed instance */
  ocap_log_fn log;
  void *log_ud;
  service_t *services;
  int nservices, cservices;
  ocap_reply_t *replies;
  attach_t *attach;
  int depth;  /* public calls and loop callbacks in progress */
  int doomed; /* ocap_host_free was called inside a callback */
  char err[512];
};

/* ---------------------------------------------------------------------- */

static void set_err(ocap_host_t *h, const char *msg) {
  snprintf(h->err, sizeof h->err, "%s", msg ? msg : "(no message)");
}

static lua_State *host_L(ocap_host_t *h) {
  return h->cur ? h->cur : h->L;
}

static void really_free(ocap_host_t *h);

static void enter(ocap_host_t *h) {
  h->depth++;
}

/* Ends a public call or loop callback; the outermost one carries out a
 * free requested from inside a callback. Returns code, or OCAP_ESTOPPED
 * when the host went away. */
static int leave(ocap_host_t *h, int code) {
  if (--h->depth == 0 && h->doomed) {
    really_free(h);
    return code;
  }
  return code;
}

/* [-0, +1] Pushes method `name` of the embed instance. */
static void push_method(lua_State *L, ocap_host_t *h, const char *name) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->self);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

/* [-(nargs+1), +0] Calls the function below nargs arguments; expects
 * (ok, message) back. Returns 0, or code with the message in h->err. */
static int call_checked(ocap_host_t *h, lua_State *L, int nargs, int code) {
  int top = lua_gettop(L) - nargs - 1;
  int rc = 0;
  if (lua_pcall(L, nargs, 2, 0) != LUA_OK) {
    set_err(h, lua_tostring(L, -1));
    rc = code;
  } else if (!lua_toboolean(L, -2)) {
    set_err(h, lua_tostring(L, -1));
    rc = code;
  }
  lua_settop(L, top);
  return rc;
}

/* ---------------------------------------------------------------------- */
/* Callbacks from ocap.embed into C. */

/* C.log(json)  [-0, +0] */
static int c_log(lua_State *L) {
  ocap_host_t *h = lua_touserdata(L, lua_upvalueindex(1));
  if (h->doomed || h->log == NULL)
    return 0;
  lua_State *saved = h->cur;
  h->cur = L;
  h->log(h->log_ud, luaL_checkstring(L, 1));
  h->cur = saved;
  return 0;
}

/* C.call(id, method, argsJson, kit)  [-0, +0, e] */
static int c_call(lua_State *L) {
  ocap_host_t *h = lua_touserdata(L, lua_upvalueindex(1));
  int id = (int)luaL_checkinteger(L, 1);
  const char *method = luaL_checkstring(L, 2);
  const char *args = luaL_checkstring(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  if (h->doomed || id < 0 || id >= h->nservices)
    return 0;
  ocap_reply_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return luaL_error(L, "out of memory");
  lua_pushvalue(L, 4);
  r->kit = luaL_ref(L, LUA_REGISTRYINDEX);
  r->host = h;
  r->next = h->replies;
  if (h->replies)
    h->replies->prev = r;
  h->replies = r;
  lua_State *saved = h->cur;
  h->cur = L;
  h->services[id].fn(h->services[id].ud, method, args, r);
  h->cur = saved;
  return 0;
}

/* C.result(rec, ok, text)  [-0, +0] */
static int c_result(lua_State *L) {
  result_rec_t *rec = lua_touserdata(L, 1);
  if (rec == NULL || rec->cb == NULL || rec->host->doomed)
    return 0;
  ocap_host_t *h = rec->host;
  ocap_result_fn cb = rec->cb;
  rec->cb = NULL; /* at most once */
  lua_State *saved = h->cur;
  h->cur = L;
  cb(rec->ud, lua_toboolean(L, 2), luaL_checkstring(L, 3));
  h->cur = saved;
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Finding the Lua modules. */

/* [-0, +0, m] Puts dir/?.lua;dir/?/init.lua in front of package.path. */
static void prepend_path(lua_State *L, const char *dir) {
  if (dir == NULL || *dir == '\0')
    return;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
}

/* Writes the real path of the file this code was loaded from into buf
 * (PATH_MAX bytes): libocap.so, or the program itself when libocap is
 * linked statically (the `ocap` executable), which dladdr would name only
 * by its argv[0]. Returns 0, or -1 when it cannot be known. */
static int code_path(char *buf) {
  Dl_info mine, prog;
  if (!dladdr((void *)ocap_host_new, &mine))
    return -1;
  if (dladdr((void *)getauxval(AT_PHDR), &prog) && prog.dli_fbase == mine.dli_fbase) {
    ssize_t n = readlink("/proc/self/exe", buf, PATH_MAX - 1);
    if (n <= 0)
      return -1;
    buf[n] = '\0';
    return 0;
  }
  return mine.dli_fname && realpath(mine.dli_fname, buf) ? 0 : -1;
}

/* [-0, +0, m] Sets package.path and the built-in modules of a state that
 * libocap makes. The modules are found, first match first: lua_dir (a
 * host's option), $OCAP_LUADIR, then either the source tree's lua/ (for
 * a program or library in the build directory, so an edit is picked up at
 * once) or the install's: <prefix>/<luadir> where <prefix> is the parent
 * of the directory holding the library (lib/) or program (bin/), so that
 * a prefix can be moved as a whole; an absolute luadir (a rock's) comes
 * after <prefix>/share/lua/5.4. An installed copy never looks in the
 * source tree it was built from. */
static void set_paths(lua_State *L, const char *lua_dir) {
  char self[PATH_MAX], out[PATH_MAX + sizeof OCAP_INSTALL_LUADIR + 16];
  const char *installed = OCAP_INSTALL_LUADIR, *build = OCAP_EMBED_BUILD_DIR;
  size_t bl = strlen(build);
  int have_self = code_path(self) == 0;
  if (have_self && bl > 0 && strncmp(self, build, bl) == 0 && self[bl] == '/') {
    prepend_path(L, OCAP_EMBED_SOURCE_LUADIR);
  } else {
    char *slash = have_self ? strrchr(self, '/') : NULL;
    if (slash) {
      *slash = '\0';
      slash = strrchr(self, '/');
      if (slash)
        *slash = '\0';
    }
    if (installed[0] == '/') {
      prepend_path(L, installed);
      installed = "share/lua/5.4";
    }
    if (slash) {
      snprintf(out, sizeof out, "%s/%s", self, installed);
      prepend_path(L, out);
    }
  }
  prepend_path(L, getenv("OCAP_LUADIR"));
  prepend_path(L, lua_dir);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_ocap_core);
  lua_setfield(L, -2, "ocap.core");
  lua_pushcfunction(L, luaopen_ocap_smallcaps);
  lua_setfield(L, -2, "ocap.smallcaps");
  lua_pushcfunction(L, luaopen_ocap_promise_core);
  lua_setfield(L, -2, "ocap.promise.core");
  lua_pushcfunction(L, luaopen_ocap_syrup);
  lua_setfield(L, -2, "ocap.syrup");
  lua_pushcfunction(L, luaopen_ocap_sys);
  lua_setfield(L, -2, "ocap.sys");
  lua_pop(L, 2);
}

/* [-0, +0, e] Makes the embed instance: its arguments are on the stack
 * as light userdata (host, options). */
static int make_instance(lua_State *L) {
  ocap_host_t *h = lua_touserdata(L, 1);
  const ocap_host_options_t *o = lua_touserdata(L, 2);
  luaL_openlibs(L);
  set_paths(L, o ? o->lua_dir : NULL);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "ocap.embed");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "make");
  lua_createtable(L, 0, 3);
  lua_pushlightuserdata(L, h);
  lua_pushcclosure(L, c_log, 1);
  lua_setfield(L, -2, "log");
  lua_pushlightuserdata(L, h);
  lua_pushcclosure(L, c_call, 1);
  lua_setfield(L, -2, "call");
  lua_pushcfunction(L, c_result);
  lua_setfield(L, -2, "result");
  ocap_open_json(L);
  if (o && o->database)
    lua_pushstring(L, o->database);
  else
    lua_pushnil(L);
  lua_pushboolean(L, o && o->reset_storage);
  if (o && o->base_dir)
    lua_pushstring(L, o->base_dir);
  else
    lua_pushnil(L);
  lua_pushboolean(L, o && o->logger);
  lua_call(L, 6, 1);
  h->self = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

int ocap_host_new(const ocap_host_options_t *opts, ocap_host_t **out, char **errmsg) {
  if (errmsg)
    *errmsg = NULL;
  if (out == NULL)
    return OCAP_EINVAL;
  *out = NULL;
  ocap_host_t *h = calloc(1, sizeof *h);
  if (h == NULL)
    return OCAP_ENOMEM;
  h->L = luaL_newstate();
  if (h->L == NULL) {
    free(h);
    return OCAP_ENOMEM;
  }
  if (opts) {
    h->log = opts->logger;
    h->log_ud = opts->logger_ud;
  }
  lua_pushcfunction(h->L, make_instance);
  lua_pushlightuserdata(h->L, h);
  lua_pushlightuserdata(h->L, (void *)opts);
  if (lua_pcall(h->L, 2, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(h->L, -1);
    int rc = OCAP_EINVAL;
    if (msg && strstr(msg, "lock"))
      rc = OCAP_ELOCKED;
    if (errmsg)
      *errmsg = strdup(msg ? msg : "(no message)");
    lua_close(h->L);
    free(h);
    return rc;
  }
  *out = h;
  return 0;
}

static void attach_closed(uv_handle_t *handle) {
  attach_t *a = handle->data;
  if (--a->open == 0)
    free(a);
}

static void really_free(ocap_host_t *h) {
  if (h->attach) {
    attach_t *a = h->attach;
    a->host = NULL;
    uv_close((uv_handle_t *)&a->idle, attach_closed);
    uv_close((uv_handle_t *)&a->timer, attach_closed);
    if (a->polling)
      uv_close((uv_handle_t *)&a->poll, attach_closed);
    h->attach = NULL;
  }
  for (ocap_reply_t *r = h->replies; r; r = r->next)
    r->host = NULL;
  push_method(h->L, h, "stop");
  if (lua_pcall(h->L, 0, 0, 0) != LUA_OK)
    lua_pop(h->L, 1);
  lua_close(h->L);
  free(h->services);
  free(h);
}

void ocap_host_free(ocap_host_t *host) {
  if (host == NULL || host->doomed)
    return;
  host->doomed = 1;
  if (host->depth == 0)
    really_free(host);
}

const char *ocap_host_errmsg(const ocap_host_t *host) {
  return host ? host->err : "no host";
}

int ocap_host_run(ocap_host_t *host) {
  if (host == NULL)
    return OCAP_EINVAL;
  if (host->doomed)
    return OCAP_ESTOPPED;
  enter(host);
  lua_State *L = host_L(host);
  push_method(L, host, "run");
  int rc = 0;
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    set_err(host, lua_tostring(L, -1));
    lua_pop(L, 1);
    rc = OCAP_ESCRIPT;
  }
  return leave(host, rc);
}

/* ---------------------------------------------------------------------- */
/* The host's loop. */

static void pump(attach_t *a);

static void on_idle(uv_idle_t *handle) {
  pump(handle->data);
}

/* Work was queued from outside a batch: run a batch soon. */
static void wake(ocap_host_t *h) {
  if (h->attach && !h->doomed)
    uv_idle_start(&h->attach->idle, on_idle);
}

static void on_timer(uv_timer_t *handle) {
  pump(handle->data);
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  pump(handle->data);
}

/* Runs one bounded batch, then either stays on the idle handle (more work),
 * or waits for the kernel's own loop (vat timers, IO channels) through its
 * backend descriptor and next timeout, which is how libuv lets one loop be
 * embedded in another, or sleeps until a call of the API wakes it. */
static void pump(attach_t *a) {
  ocap_host_t *h = a->host;
  if (h == NULL || h->doomed)
    return;
  enter(h);
  lua_State *L = h->L;
  push_method(L, h, "pump");
  int busy = 0, alive = 0, fd = -1, timeout = -1;
  if (lua_pcall(L, 0, 4, 0) != LUA_OK) {
    set_err(h, lua_tostring(L, -1));
    if (h->log && !h->doomed)
      h->log(h->log_ud, "{\"level\":\"error\",\"message\":\"ocap: the kernel's batch failed\"}");
    lua_pop(L, 1);
  } else {
    busy = lua_toboolean(L, -4);
    alive = lua_toboolean(L, -3);
    fd = (int)luaL_optinteger(L, -2, -1);
    timeout = (int)luaL_optinteger(L, -1, -1);
    lua_pop(L, 4);
  }
  if (!h->doomed) {
    if (busy) {
      uv_idle_start(&a->idle, on_idle);
    } else {
      uv_idle_stop(&a->idle);
      uv_timer_stop(&a->timer);
      if (alive && fd >= 0 && !a->polling && uv_poll_init(a->idle.loop, &a->poll, fd) == 0) {
        a->poll.data = a;
        a->polling = 1;
        a->open++;
      }
      if (a->polling) {
        if (alive)
          uv_poll_start(&a->poll, UV_READABLE, on_poll);
        else
          uv_poll_stop(&a->poll);
      }
      if (alive && timeout >= 0)
        uv_timer_start(&a->timer, on_timer, (uint64_t)timeout, 0);
    }
  }
  leave(h, 0);
}

int ocap_host_attach_loop(ocap_host_t *host, uv_loop_t *loop) {
  if (host == NULL || loop == NULL)
    return OCAP_EINVAL;
  if (host->doomed)
    return OCAP_ESTOPPED;
  if (host->attach) {
    set_err(host, "the host is already attached to a loop");
    return OCAP_EINVAL;
  }
  attach_t *a = calloc(1, sizeof *a);
  if (a == NULL)
    return OCAP_ENOMEM;
  a->host = host;
  uv_idle_init(loop, &a->idle);
  uv_timer_init(loop, &a->timer);
  a->idle.data = a;
  a->timer.data = a;
  a->open = 2;
  host->attach = a;
  uv_idle_start(&a->idle, on_idle);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Services and replies. */

/* [-0, +0] Registers a service whose methods get their arguments as
 * JSON, or as capdata when capdata is nonzero. */
static int register_service(ocap_host_t *host, const char *name, const char *const *methods,
                            ocap_service_fn fn, void *ud, char *kref_out, size_t kref_size,
                            int capdata) {
  if (host == NULL || name == NULL || methods == NULL || fn == NULL)
    return OCAP_EINVAL;
  if (host->doomed)
    return OCAP_ESTOPPED;
  if (host->nservices == host->cservices) {
    int n = host->cservices ? host->cservices * 2 : 4;
    service_t *s = realloc(host->services, (size_t)n * sizeof *s);
    if (s == NULL)
      return OCAP_ENOMEM;
    host->services = s;
    host->cservices = n;
  }
  enter(host);
  lua_State *L = host_L(host);
  int top = lua_gettop(L);
  push_method(L, host, "register");
  lua_pushstring(L, name);
  lua_newtable(L);
  for (int i = 0; methods[i]; i++) {
    lua_pushstring(L, methods[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, host->nservices);
  lua_pushboolean(L, capdata);
  int rc = 0;
  if (lua_pcall(L, 4, 1, 0) != LUA_OK) {
    set_err(host, lua_tostring(L, -1));
    rc = OCAP_EINVAL;
  } else {
    host->services[host->nservices].fn = fn;
    host->services[host->nservices].ud = ud;
    host->nservices++;
    if (kref_out && kref_size > 0)
      snprintf(kref_out, kref_size, "%s", lua_tostring(L, -1));
  }
  lua_settop(L, top);
  return leave(host, rc);
}

int ocap_host_register_service(ocap_host_t *host, const char *name, const char *const *methods,
                               ocap_service_fn fn, void *ud, char *kref_out, size_t kref_size) {
  return register_service(host, name, methods, fn, ud, kref_out, kref_size, 0);
}

int ocap_host_register_service_capdata(ocap_host_t *host, const char *name,
                                       const char *const *methods, ocap_service_fn fn, void *ud,
                                       char *kref_out, size_t kref_size) {
  return register_service(host, name, methods, fn, ud, kref_out, kref_size, 1);
}

/* [-0, +0] Settles a reply with a result (JSON, or capdata when capdata
 * is nonzero) or a message, and frees it. */
static int reply_complete(ocap_reply_t *r, int ok, const char *text, int capdata) {
  if (r == NULL)
    return OCAP_EINVAL;
  ocap_host_t *h = r->host;
  if (h == NULL) {
    free(r);
    return OCAP_ESTOPPED;
  }
  if (r->prev)
    r->prev->next = r->next;
  else
    h->replies = r->next;
  if (r->next)
    r->next->prev = r->prev;
  int rc = 0;
  if (h->doomed) {
    free(r);
    return OCAP_ESTOPPED;
  }
  enter(h);
  lua_State *L = host_L(h);
  push_method(L, h, "settle");
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->kit);
  lua_pushboolean(L, ok);
  lua_pushstring(L, text ? text : (ok ? "null" : "service call failed"));
  lua_pushboolean(L, capdata);
  rc = call_checked(h, L, 4, OCAP_EINVAL);
  luaL_unref(L, LUA_REGISTRYINDEX, r->kit);
  free(r);
  wake(h);
  return leave(h, rc);
}

int ocap_reply_resolve(ocap_reply_t *reply, const char *result_json) {
  if (reply != NULL && result_json == NULL)
    result_json = "null";
  return reply_complete(reply, 1, result_json, 0);
}

int ocap_reply_resolve_capdata(ocap_reply_t *reply, const char *result_capdata) {
  if (reply != NULL && result_capdata == NULL)
    result_capdata = "{\"body\":\"#null\",\"slots\":[]}";
  return reply_complete(reply, 1, result_capdata, 1);
}

int ocap_reply_reject(ocap_reply_t *reply, const char *message) {
  return reply_complete(reply, 0, message, 0);
}

/* ---------------------------------------------------------------------- */
/* Launching, scripts, messages. */

/* [-0, +1] Pushes a result record for cb (a userdata owned by Lua). */
static void push_rec(lua_State *L, ocap_host_t *h, ocap_result_fn cb, void *ud) {
  result_rec_t *rec = lua_newuserdatauv(L, sizeof *rec, 0);
  rec->host = h;
  rec->cb = cb;
  rec->ud = ud;
}

int ocap_host_launch_file(ocap_host_t *host, const char *config_path, ocap_result_fn cb, void *ud) {
  if (host == NULL || config_path == NULL)
    return OCAP_EINVAL;
  if (host->doomed)
    return OCAP_ESTOPPED;
  enter(host);
  lua_State *L = host_L(host);
  push_method(L, host, "launch");
  lua_pushstring(L, config_path);
  push_rec(L, host, cb, ud);
  int rc = call_checked(host, L, 2, OCAP_ESCRIPT);
  wake(host);
  return leave(host, rc);
}

int ocap_host_run_script(ocap_host_t *host, const char *path) {
  if (host == NULL || path == NULL)
    return OCAP_EINVAL;
  if (host->doomed)
    return OCAP_ESTOPPED;
  enter(host);
  lua_State *L = host_L(host);
  push_method(L, host, "script");
  lua_pushstring(L, path);
  int rc = call_checked(host, L, 1, OCAP_ESCRIPT);
  wake(host);
  return leave(host, rc);
}

/* [-0, +0] Queues a message whose arguments and result are JSON, or
 * capdata when capdata is nonzero. */
static int queue_message(ocap_host_t *host, const char *target, const char *method,
                         const char *args, ocap_result_fn cb, void *ud, int capdata) {
  if (host == NULL || target == NULL || method == NULL)
    return OCAP_EINVAL;
  if (host->doomed)
    return OCAP_ESTOPPED;
  enter(host);
  lua_State *L = host_L(host);
  push_method(L, host, "queue");
  lua_pushstring(L, target);
  lua_pushstring(L, method);
  lua_pushstring(L, args ? args : capdata ? "{\"body\":\"#[]\",\"slots\":[]}" : "[]");
  push_rec(L, host, cb, ud);
  lua_pushboolean(L, capdata);
  int rc = call_checked(host, L, 5, OCAP_EINVAL);
  if (rc == 0)
    wake(host);
  else if (strstr(host->err, "no such kref") || strstr(host->err, "unknown kref"))
    rc = OCAP_ENOTFOUND;
  return leave(host, rc);
}

int ocap_host_queue_message(ocap_host_t *host, const char *target, const char *method,
                            const char *args_json, ocap_result_fn cb, void *ud) {
  return queue_message(host, target, method, args_json, cb, ud, 0);
}

int ocap_host_queue_message_capdata(ocap_host_t *host, const char *target, const char *method,
                                    const char *args_capdata, ocap_result_fn cb, void *ud) {
  return queue_message(host, target, method, args_capdata, cb, ud, 1);
}

/* ---------------------------------------------------------------------- */
/* The command line. */

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
static int run_cli(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  luaL_openlibs(L);
  set_paths(L, NULL);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "ocap.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_pushstring(L, argc > 0 ? argv[0] : "ocap");
  lua_setfield(L, -2, "prog");
  lua_call(L, 1, 1);
  return 1;
}

int ocap_main(int argc, char **argv) {
  if (argc < 0 || (argc > 0 && argv == NULL))
    return 1;
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "ocap: cannot create Lua state\n");
    return 1;
  }
  lua_pushcfunction(L, msghandler);
  lua_pushcfunction(L, run_cli);
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
