/* TCP for the remote comms' netlayers (lua/ocap/remote.lua) on a kernel's
 * libuv loop, and the few cryptographic primitives CapTP sessions need,
 * from libsodium (lcrypto.c).
 *
 * Conventions:
 *  1. Callbacks only hand events to Lua, which queues them: the kernel is
 *     never entered from inside uv_run (as for lrpc.c).
 *  2. A connection's events reach the Lua callback as (conn, event, data):
 *     "accept" (a server's new connection), "open" (an outgoing one is
 *     connected), "data" (bytes read), "timeout" (its timer fired), "eof"
 *     (closed by the peer or failed; data says why). After "eof" the
 *     connection is closed and gets no more events.
 *  3. Nothing here decodes what it reads: a peer's bytes are Lua's to judge.
 */
#ifndef OCAP_LNET_H
#define OCAP_LNET_H

#include <lua.h>

/* Pushes the table of the TCP functions. [-0, +1, e] */
int lnet_open(lua_State *L);

/* Pushes the table of the crypto functions. [-0, +1, e] */
int lcrypto_open(lua_State *L);

#endif
