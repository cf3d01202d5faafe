/* TCP connections on a kernel's libuv loop, for the netlayers of the remote
 * comms (see lnet.h for the conventions). A connection lives in a conn_t
 * that libuv owns until both its handles are closed; Lua holds a box that
 * points at it, cleared when it closes, so that a late call on the box is
 * harmless.
 *
 * A TLS connection never lets OpenSSL touch its socket: its SSL works
 * over a pair of memory BIOs. What libuv reads goes into the SSL's input
 * BIO and SSL_read turns it into the plaintext of "data" events; what Lua
 * writes goes through SSL_write, and the records it leaves in the output
 * BIO go to uv_write at once (tls_flush). */
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "lnet.h"
#include "lrpc.h"

#define SERVER_MT "ocap.net.server"
#define CONN_MT "ocap.net.conn"

typedef struct conn {
  uv_tcp_t tcp; /* first, so that a stream pointer is the conn */
  uv_timer_t timer;
  uv_connect_t req;
  lua_State *L; /* the main thread, in which callbacks run */
  int cb_ref;
  int box_ref;
  int closed;
  int handles;   /* handles still open; the conn is freed at zero */
  size_t queued; /* bytes handed to uv_write and not yet written */
  /* TLS only (ssl is NULL on plain TCP): */
  SSL *ssl;
  BIO *in, *out; /* the SSL's memory BIOs, which it owns */
  int outbound;
  int secure;  /* the handshake is done and the peer's key checked */
  int failed;  /* the TLS layer failed, or the peer is gone: no close_notify */
  char *early; /* what Lua wrote before the handshake was done */
  size_t early_n;
  char expect[LTLS_DESIGNATOR_LEN + 1]; /* outbound: the designator dialled */
  char peer[LTLS_DESIGNATOR_LEN + 1];   /* the designator of the peer's key */
} conn_t;

typedef struct server {
  uv_tcp_t tcp;
  lua_State *L;
  int cb_ref;
  SSL_CTX *ctx; /* NULL on plain TCP */
} server_t;

typedef struct {
  conn_t *c;
} connbox_t;

typedef struct {
  server_t *s;
} serverbox_t;

static void conn_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles == 0) {
    SSL_free(c->ssl);
    free(c->early);
    free(c);
  }
}

static void written(uv_write_t *w, int status) {
  conn_t *c = w->handle->data;
  c->queued -= ((lrpc_write_t *)w)->n;
  free(w);
}

/* Hands what the SSL left in its output BIO (records, alerts) to
 * uv_write. The bytes are read out of the BIO straight into the buffer
 * the write owns: one copy, as for plain TCP's lrpc_write_copy. */
static void tls_flush(conn_t *c) {
  size_t n;
  while ((n = BIO_ctrl_pending(c->out)) > 0) {
    lrpc_write_t *w = malloc(sizeof *w + n);
    if (!w)
      return; /* it stays in the BIO, counted in conn:queued() */
    int got = BIO_read(c->out, w->bytes, (int)(n > INT_MAX ? INT_MAX : n));
    if (got <= 0) {
      free(w);
      return;
    }
    w->n = (size_t)got;
    uv_buf_t b = uv_buf_init(w->bytes, (unsigned)got);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, written) != 0) {
      /* The socket failed: the read side reports it. */
      free(w);
      return;
    }
    c->queued += (size_t)got;
  }
}

/* [-0, +0, -] Closes c's handles and lets go of its Lua box and callback;
 * the box's pointer is cleared so that later calls on it do nothing. */
static void conn_close(conn_t *c) {
  if (c->closed)
    return;
  c->closed = 1;
  if (c->ssl && c->secure && !c->failed) {
    /* close_notify tells the peer the end is ours, not a cut. */
    ERR_clear_error();
    SSL_shutdown(c->ssl);
    tls_flush(c);
  }
  ERR_clear_error();
  lua_State *L = c->L;
  if (c->box_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->box_ref);
    connbox_t *box = lua_touserdata(L, -1);
    if (box)
      box->c = NULL;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, c->box_ref);
    c->box_ref = LUA_NOREF;
  }
  luaL_unref(L, LUA_REGISTRYINDEX, c->cb_ref);
  c->cb_ref = LUA_NOREF;
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

/* [-0, +0, -] Calls the callback with (box, event, data). An "eof" or a
 * "tlserror" closes the connection first, so that the callback sees it
 * closed. An error in the callback is dropped: the loop keeps serving
 * other connections. */
static void emit(conn_t *c, const char *event, const char *data, size_t n) {
  if (c->closed)
    return;
  lua_State *L = c->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->cb_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->box_ref);
  lua_pushstring(L, event);
  if (data)
    lua_pushlstring(L, data, n);
  else
    lua_pushnil(L);
  if (strcmp(event, "eof") == 0 || strcmp(event, "tlserror") == 0)
    conn_close(c);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK)
    lua_pop(L, 1);
}

/* [-0, +0, m] Makes a conn on loop with its box, which the registry holds
 * until the conn closes; with ctx, a TLS one that dials (outbound) or
 * accepts. NULL when out of memory. */
static conn_t *conn_new(lua_State *L, uv_loop_t *loop, int cb_ref_src, SSL_CTX *ctx, int outbound) {
  conn_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  if (ctx) {
    c->ssl = SSL_new(ctx);
    c->in = BIO_new(BIO_s_mem());
    c->out = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->in || !c->out) {
      BIO_free(c->in);
      BIO_free(c->out);
      SSL_free(c->ssl);
      free(c);
      ERR_clear_error();
      return NULL;
    }
    /* An empty input BIO means "wait for more", not the end. */
    BIO_set_mem_eof_return(c->in, -1);
    SSL_set_bio(c->ssl, c->in, c->out);
    if (outbound)
      SSL_set_connect_state(c->ssl);
    else
      SSL_set_accept_state(c->ssl);
  }
  c->outbound = outbound;
  c->L = L;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles = 2;
  connbox_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->c = c;
  luaL_setmetatable(L, CONN_MT);
  c->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_rawgeti(L, LUA_REGISTRYINDEX, cb_ref_src);
  c->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return c;
}

/* Writes "TLS: <OpenSSL's reason for the last failure>" (or fallback) to
 * msg, and clears OpenSSL's error queue. */
static void tls_reason(char *msg, size_t size, const char *fallback) {
  unsigned long e = ERR_get_error();
  const char *why = e ? ERR_reason_error_string(e) : NULL;
  snprintf(msg, size, "TLS: %s", why ? why : fallback);
  ERR_clear_error();
}

/* [-0, +0, -] The TLS layer failed for reason msg: the alert OpenSSL made
 * goes out, then the connection closes with a "tlserror". */
static void tls_fail_with(conn_t *c, const char *msg) {
  tls_flush(c);
  c->failed = 1;
  emit(c, "tlserror", msg, strlen(msg));
}

/* [-0, +0, -] As tls_fail_with, for the failure OpenSSL just reported. */
static void tls_fail(conn_t *c, const char *fallback) {
  char msg[256];
  tls_reason(msg, sizeof msg, fallback);
  tls_fail_with(c, msg);
}

/* [-0, +0, -] The handshake is done: the peer's certificate must hold an
 * Ed25519 key, and a peer we dialled must hold the key its designator
 * names. Then "open" (for a dial), and what Lua wrote meanwhile goes. */
static void tls_secure(conn_t *c) {
  X509 *cert = SSL_get0_peer_certificate(c->ssl);
  if (!cert || ltls_designator(X509_get0_pubkey(cert), c->peer) != 0) {
    tls_fail(c, "the peer's certificate holds no Ed25519 key");
    return;
  }
  c->secure = 1;
  if (c->outbound && strcmp(c->peer, c->expect) != 0) {
    const char *why = "the peer's key does not match its designator";
    emit(c, "eof", why, strlen(why));
    return;
  }
  if (c->outbound)
    emit(c, "open", NULL, 0);
  if (c->closed || !c->early)
    return;
  size_t done;
  ERR_clear_error();
  int ok = SSL_write_ex(c->ssl, c->early, c->early_n, &done);
  free(c->early);
  c->early = NULL;
  c->early_n = 0;
  if (!ok) {
    tls_fail(c, "write failed");
    return;
  }
  tls_flush(c);
}

/* [-0, +0, m] Moves the TLS connection on after bytes arrived (or once it
 * is connected, to send the first flight): the handshake while it is not
 * done, then the plaintext of every complete record, in one "data". */
static void tls_pump(conn_t *c) {
  if (!c->secure) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ) {
      tls_fail(c, "handshake failed");
      return;
    }
    tls_flush(c);
    if (e == SSL_ERROR_WANT_READ)
      return;
    tls_secure(c);
    if (c->closed)
      return;
  }
  /* Most reads bring one record: its plaintext stays in `first`, on the C
   * stack, and goes to Lua with one copy. Only when more records follow
   * are they gathered in a Lua buffer. */
  lua_State *L = c->L;
  char first[16384];
  size_t n = 0;
  luaL_Buffer b;
  int gathering = 0;
  int e = SSL_ERROR_NONE;
  ERR_clear_error();
  for (;;) {
    size_t got;
    char *p = first;
    if (n > 0 && !gathering) {
      luaL_buffinit(L, &b);
      luaL_addlstring(&b, first, n);
      gathering = 1;
    }
    if (gathering)
      p = luaL_prepbuffsize(&b, sizeof first);
    if (SSL_read_ex(c->ssl, p, sizeof first, &got) != 1) {
      e = SSL_get_error(c->ssl, 0);
      break;
    }
    if (gathering)
      luaL_addsize(&b, got);
    n += got;
  }
  const char *s = first;
  if (gathering) {
    luaL_pushresult(&b);
    s = lua_tostring(L, -1);
  }
  char why[256] = "";
  if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_ZERO_RETURN)
    tls_reason(why, sizeof why, "bad record");
  else
    tls_flush(c);
  /* What came before a bad record is still the peer's. */
  if (n > 0)
    emit(c, "data", s, n);
  if (gathering)
    lua_pop(L, 1);
  if (c->closed)
    return;
  if (why[0])
    tls_fail_with(c, why);
  else if (e == SSL_ERROR_ZERO_RETURN)
    emit(c, "eof", "closed by the peer", strlen("closed by the peer"));
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  /* The bytes are copied into a Lua string at once: one slab serves all. */
  static char slab[65536];
  buf->base = slab;
  buf->len = sizeof slab;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = (conn_t *)st;
  if (nread < 0) {
    c->failed = 1;
    emit(c, "eof", nread == UV_EOF ? "closed by the peer" : uv_strerror((int)nread),
         nread == UV_EOF ? strlen("closed by the peer") : strlen(uv_strerror((int)nread)));
    return;
  }
  if (nread > 0 && c->ssl) {
    /* A memory BIO takes it all, growing; SSL_read drains it at once. */
    if (BIO_write(c->in, buf->base, (int)nread) != (int)nread) {
      tls_fail(c, "out of memory");
      return;
    }
    tls_pump(c);
  } else if (nread > 0) {
    emit(c, "data", buf->base, (size_t)nread);
  }
}

static void on_timer(uv_timer_t *t) {
  emit(t->data, "timeout", NULL, 0);
}

static void on_connection(uv_stream_t *st, int status) {
  server_t *s = (server_t *)st;
  if (status < 0)
    return;
  conn_t *c = conn_new(s->L, st->loop, s->cb_ref, s->ctx, 0);
  if (!c)
    return;
  if (uv_accept(st, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  emit(c, "accept", NULL, 0);
  if (!c->closed)
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (status < 0) {
    const char *why = uv_strerror(status);
    emit(c, "eof", why, strlen(why));
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (c->ssl) {
    /* "open" waits for the handshake, which starts with our hello. */
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    tls_pump(c);
    return;
  }
  emit(c, "open", NULL, 0);
  if (!c->closed)
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* [-0, +0, e] Parses host (an IPv4 or IPv6 literal) and port. */
static int parse_addr(lua_State *L, int hi, int pi, struct sockaddr_storage *out) {
  const char *host = luaL_checkstring(L, hi);
  lua_Integer port = luaL_checkinteger(L, pi);
  luaL_argcheck(L, port >= 0 && port <= 65535, pi, "port out of range");
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0)
    return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0)
    return 0;
  return -1;
}

/* A peer that hangs up must make a write fail (libuv reports EPIPE), not
 * kill the process with SIGPIPE; a host's own handler is left alone. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
}

static void server_freed(uv_handle_t *h) {
  SSL_CTX_free(((server_t *)h)->ctx);
  free(h);
}

/* net.listen(K, host, port, callback [, tls]) -> server | nil, err  [-0, +1|2, e]
 * It listens on K's loop; each accepted connection reaches callback as
 * (conn, "accept"), then its events. With tls (a context of ocap.core.tls)
 * the connections speak TLS and present its certificate. */
static int net_listen(lua_State *L) {
  uv_loop_t *loop = lkernel_loop(L, 1);
  struct sockaddr_storage addr;
  luaL_checktype(L, 4, LUA_TFUNCTION);
  SSL_CTX *ctx = lua_isnoneornil(L, 5) ? NULL : ltls_checkcontext(L, 5);
  if (parse_addr(L, 2, 3, &addr) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "not an IP address: %s", lua_tostring(L, 2));
    return 2;
  }
  server_t *s = calloc(1, sizeof *s);
  if (!s)
    return luaL_error(L, "out of memory");
  ignore_sigpipe();
  if (ctx && SSL_CTX_up_ref(ctx))
    s->ctx = ctx;
  uv_tcp_init(loop, &s->tcp);
  int rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->tcp, 128, on_connection);
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->tcp, server_freed);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  s->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, 4);
  s->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  serverbox_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->s = s;
  luaL_setmetatable(L, SERVER_MT);
  return 1;
}

/* server:port() -> integer  [-0, +1, e]
 * The port it listens on (the one chosen when 0 was asked for). */
static int server_port(lua_State *L) {
  serverbox_t *box = luaL_checkudata(L, 1, SERVER_MT);
  if (!box->s)
    return luaL_error(L, "server is closed");
  struct sockaddr_storage addr;
  int len = sizeof addr;
  if (uv_tcp_getsockname(&box->s->tcp, (struct sockaddr *)&addr, &len) != 0)
    return luaL_error(L, "getsockname failed");
  int port = addr.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&addr)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&addr)->sin_port);
  lua_pushinteger(L, port);
  return 1;
}

/* server:close()  [-0, +0, -]
 * It stops listening; the connections it accepted stay open. */
static int server_close(lua_State *L) {
  serverbox_t *box = luaL_checkudata(L, 1, SERVER_MT);
  server_t *s = box->s;
  if (!s)
    return 0;
  box->s = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, s->cb_ref);
  uv_close((uv_handle_t *)&s->tcp, server_freed);
  return 0;
}

/* net.connect(K, host, port, callback [, tls, designator]) -> conn | nil, err
 * [-0, +1|2, e]
 * It connects on K's loop; callback gets (conn, "open") once connected,
 * or (conn, "eof", why) when that fails. With tls (a context of
 * ocap.core.tls) it speaks TLS, and "open" comes only once the peer proved
 * it holds the key whose designator (64 hex digits) is given. */
static int net_connect(lua_State *L) {
  uv_loop_t *loop = lkernel_loop(L, 1);
  struct sockaddr_storage addr;
  luaL_checktype(L, 4, LUA_TFUNCTION);
  SSL_CTX *ctx = lua_isnoneornil(L, 5) ? NULL : ltls_checkcontext(L, 5);
  const char *expect = ctx ? luaL_checkstring(L, 6) : "";
  if (parse_addr(L, 2, 3, &addr) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "not an IP address: %s", lua_tostring(L, 2));
    return 2;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lua_State *main = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, 4);
  int cb = luaL_ref(L, LUA_REGISTRYINDEX);
  conn_t *c = conn_new(main, loop, cb, ctx, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, cb);
  if (!c)
    return luaL_error(L, "out of memory");
  /* A designator of another length matches no key: the dial fails once
   * the peer showed its own. */
  snprintf(c->expect, sizeof c->expect, "%s", expect);
  c->req.data = c;
  ignore_sigpipe();
  int rc = uv_tcp_connect(&c->req, &c->tcp, (struct sockaddr *)&addr, on_connect);
  if (rc != 0) {
    conn_close(c);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->box_ref);
  return 1;
}

/* [-0, +0, e] Queues s (n bytes) on the TLS connection c: through
 * SSL_write once the handshake is done, until then in c->early. Returns
 * 0, or -1 when the TLS layer failed (c is then closed). */
static int tls_write(lua_State *L, conn_t *c, const char *s, size_t n) {
  if (!c->secure) {
    char *more = realloc(c->early, c->early_n + n + 1);
    if (!more)
      luaL_error(L, "out of memory");
    memcpy(more + c->early_n, s, n);
    c->early = more;
    c->early_n += n;
    return 0;
  }
  size_t done;
  ERR_clear_error();
  if (n > 0 && SSL_write_ex(c->ssl, s, n, &done) != 1) {
    tls_fail(c, "write failed");
    return -1;
  }
  tls_flush(c);
  return 0;
}

/* conn:write(s) -> boolean  [-0, +1, e]
 * It queues s; false when the connection is closed. */
static int conn_write(lua_State *L) {
  connbox_t *box = luaL_checkudata(L, 1, CONN_MT);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  conn_t *c = box->c;
  if (!c || c->closed) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (c->ssl) {
    lua_pushboolean(L, tls_write(L, c, s, n) == 0);
    return 1;
  }
  int rc = lrpc_write_copy((uv_stream_t *)&c->tcp, s, n, written);
  if (rc == UV_ENOMEM)
    return luaL_error(L, "out of memory");
  if (rc != 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  c->queued += n;
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:queued() -> integer  [-0, +1, e]
 * Bytes written and not yet taken by the peer's socket; on TLS, also those
 * waiting for the handshake or still in the SSL's output BIO. */
static int conn_queued(lua_State *L) {
  connbox_t *box = luaL_checkudata(L, 1, CONN_MT);
  conn_t *c = box->c;
  size_t n = 0;
  if (c) {
    n = c->queued + c->early_n;
    if (c->ssl)
      n += BIO_ctrl_pending(c->out);
  }
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* conn:peerDesignator() -> string | nil  [-0, +1, e]
 * On TLS, once the handshake is done, the designator of the key the peer
 * proved it holds; nil before, and on plain TCP. */
static int conn_peer_designator(lua_State *L) {
  connbox_t *box = luaL_checkudata(L, 1, CONN_MT);
  conn_t *c = box->c;
  if (c && c->secure)
    lua_pushstring(L, c->peer);
  else
    lua_pushnil(L);
  return 1;
}

/* conn:setTimer(ms)  [-0, +0, e]
 * One "timeout" event after ms milliseconds; 0 or less cancels it. */
static int conn_set_timer(lua_State *L) {
  connbox_t *box = luaL_checkudata(L, 1, CONN_MT);
  lua_Integer ms = luaL_checkinteger(L, 2);
  if (!box->c)
    return 0;
  uv_timer_stop(&box->c->timer);
  if (ms > 0)
    uv_timer_start(&box->c->timer, on_timer, (uint64_t)ms, 0);
  return 0;
}

/* conn:close()  [-0, +0, -]
 * Written bytes still queued go out first: libuv closes the socket after
 * the pending writes' callbacks. */
static int conn_lclose(lua_State *L) {
  connbox_t *box = luaL_checkudata(L, 1, CONN_MT);
  if (box->c)
    conn_close(box->c);
  return 0;
}

/* conn:pause(paused)  [-0, +0, e]
 * Stops reading from the connection (true) or reads again (false). A
 * peer's bytes then wait in the sockets, and its writes stall once they
 * are full: how the specs play a peer that does not read. */
static int conn_pause(lua_State *L) {
  connbox_t *box = luaL_checkudata(L, 1, CONN_MT);
  int paused = lua_toboolean(L, 2);
  conn_t *c = box->c;
  if (!c || c->closed)
    return 0;
  if (paused)
    uv_read_stop((uv_stream_t *)&c->tcp);
  else
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  return 0;
}

/* conn:isOpen() -> boolean  [-0, +1, -] */
static int conn_is_open(lua_State *L) {
  connbox_t *box = luaL_checkudata(L, 1, CONN_MT);
  lua_pushboolean(L, box->c != NULL && !box->c->closed);
  return 1;
}

static const luaL_Reg conn_methods[] = {
    {"write", conn_write},
    {"queued", conn_queued},
    {"setTimer", conn_set_timer},
    {"close", conn_lclose},
    {"isOpen", conn_is_open},
    {"pause", conn_pause},
    {"peerDesignator", conn_peer_designator},
    {NULL, NULL},
};

static const luaL_Reg server_methods[] = {
    {"port", server_port},
    {"close", server_close},
    {NULL, NULL},
};

#define WAIT_MAX_FDS 64

/* net.wait(fds, timeout) -> ready  [-0, +1, e]
 * Waits until one of the descriptors (the backend descriptors of several
 * kernels' loops, K:loopBackend) is readable, or timeout milliseconds
 * pass (-1: no limit). A host running several kernels in one Lua state
 * waits on all their loops at once this way: one loop's uv_run would
 * sleep through the others' IO. */
static int net_wait(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer timeout = luaL_checkinteger(L, 2);
  struct pollfd fds[WAIT_MAX_FDS];
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 0 && n <= WAIT_MAX_FDS, 1, "between 0 and 64 descriptors");
  for (lua_Integer i = 0; i < n; i++) {
    lua_geti(L, 1, i + 1);
    fds[i].fd = (int)luaL_checkinteger(L, -1);
    fds[i].events = POLLIN;
    fds[i].revents = 0;
    lua_pop(L, 1);
  }
  int rc = poll(fds, (nfds_t)n, timeout < 0 ? -1 : (int)(timeout > 1000000 ? 1000000 : timeout));
  lua_pushinteger(L, rc < 0 ? 0 : rc);
  return 1;
}

static const luaL_Reg net_functions[] = {
    {"listen", net_listen},
    {"connect", net_connect},
    {"wait", net_wait},
    {NULL, NULL},
};

int lnet_open(lua_State *L) {
  lrpc_class(L, CONN_MT, conn_methods);
  lrpc_class(L, SERVER_MT, server_methods);
  luaL_newlib(L, net_functions);
  return 1;
}
