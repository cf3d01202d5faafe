/* IO channels: line-oriented byte streams on a kernel's libuv loop (a Unix
 * or TCP server that serves one client at a time, a TCP client, a file,
 * the host's standard streams), for lua/ocap/io.lua, which turns them into
 * kernel services.
 *
 * Conventions:
 * 1. Nothing here enters the kernel: libuv callbacks only call the
 *    channel's Lua notify function, which settles host promises.
 * 2. A channel reads only while a reader waits and no whole line is
 *    buffered, so its input buffer is bounded by LIO_MAX_LINE plus one
 *    read; pending writes are bounded by LIO_MAX_QUEUED bytes.
 * 3. After ch:close() no callback reaches Lua; the C side lives on until
 *    its last handle and request have finished. */
#ifndef OCAP_LIO_H
#define OCAP_LIO_H

#include <lua.h>

/* The longest line a channel reads, without its newline. */
#define LIO_MAX_LINE (64 * 1024)
/* The most bytes a channel holds in writes not yet done. */
#define LIO_MAX_QUEUED (1024 * 1024)

/* Pushes the table of the IO channel constructors. [-0, +1, e] */
int lio_open(lua_State *L);

#endif
