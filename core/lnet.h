/* TCP for the remote comms' netlayers (lua/ocap/remote.lua) on a kernel's
 * libuv loop, plain (`tcp-testing-only`) or under TLS 1.3 (`tcp-tls`, with
 * the contexts of ltls.c), and the few cryptographic primitives CapTP
 * sessions need, from libsodium (lcrypto.c).
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
 *  4. A connection made with a TLS context carries the same events and
 *     calls, in plaintext: "open" comes once the TLS handshake is done and
 *     the peer's key matched the designator dialled, "data" is what
 *     SSL_read gave, and "tlserror" (data: OpenSSL's reason) replaces
 *     "eof" when the TLS layer fails; the connection is then closed too.
 *     Bytes written before the handshake is done wait for it.
 */
#ifndef OCAP_LNET_H
#define OCAP_LNET_H

#include <lua.h>
#include <openssl/ssl.h>

/* The length of a designator on `tcp-tls`: hex SHA-256. */
#define LTLS_DESIGNATOR_LEN 64

/* Pushes the table of the TCP functions. [-0, +1, e] */
int lnet_open(lua_State *L);

/* Pushes the table of the TLS functions (ltls.c). [-0, +1, e] */
int ltls_open(lua_State *L);

/* The SSL_CTX of the TLS context userdata at idx; raises if it is not one
 * or is closed. [-0, +0, e] */
SSL_CTX *ltls_checkcontext(lua_State *L, int idx);

/* Writes the designator of Ed25519 key pk (hex SHA-256 of its raw 32
 * bytes) to out. Returns 0, or -1 when pk is not an Ed25519 key. */
int ltls_designator(EVP_PKEY *pk, char out[LTLS_DESIGNATOR_LEN + 1]);

/* Pushes the table of the crypto functions. [-0, +1, e] */
int lcrypto_open(lua_State *L);

#endif
