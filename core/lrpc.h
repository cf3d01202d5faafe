/* The daemon's control channel: a line-oriented Unix socket server on a
 * kernel's libuv loop, a blocking client, and the few POSIX calls the
 * daemon needs (fork, flock, kill, ownership checks) that Lua lacks. */
#ifndef OCAP_LRPC_H
#define OCAP_LRPC_H

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

/* The libuv loop of the kernel userdata at idx; raises if it is not one.
 * [-0, +0, e] (defined in lkernel.c) */
uv_loop_t *lkernel_loop(lua_State *L, int idx);

/* Registers the metatable `name` (once) with methods as its __index, for
 * the userdata classes of lrpc.c and lnet.c. [-0, +0, e] */
void lrpc_class(lua_State *L, const char *name, const luaL_Reg *methods);

/* A stream write that owns a copy of its bytes, so that the caller's
 * buffer (a Lua string) may go at once: one allocation, freed with free()
 * by the write's callback, which may read n first. */
typedef struct lrpc_write {
  uv_write_t req;
  size_t n;
  char bytes[];
} lrpc_write_t;

/* Queues a copy of s (n bytes) on st, cb to run when it is written.
 * Returns 0, UV_ENOMEM, or libuv's error (then nothing is queued). */
int lrpc_write_copy(uv_stream_t *st, const char *s, size_t n, uv_write_cb cb);

/* Pushes the table of the control-channel functions. [-0, +1, e] */
int lrpc_open(lua_State *L);

#endif
