/* The daemon's control channel: a line-oriented Unix socket server on a
 * kernel's libuv loop, a blocking client, and the few POSIX calls the
 * daemon needs (fork, flock, kill, ownership checks) that Lua lacks. */
#ifndef OCAP_LRPC_H
#define OCAP_LRPC_H

#include <lua.h>
#include <uv.h>

/* The libuv loop of the kernel userdata at idx; raises if it is not one.
 * [-0, +0, e] (defined in lkernel.c) */
uv_loop_t *lkernel_loop(lua_State *L, int idx);

/* Pushes the table of the control-channel functions. [-0, +1, e] */
int lrpc_open(lua_State *L);

#endif
