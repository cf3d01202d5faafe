/* The daemon's control channel (see lrpc.h). Requests are lines of at most
 * LRPC_MAX_LINE bytes; a longer one is reported once to the Lua callback
 * and its rest discarded up to its newline, so one bad client cannot make
 * the daemon buffer without bound. Callbacks only hand lines to Lua, which
 * queues them: the kernel is never entered from inside uv_run. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "lrpc.h"

#define LRPC_MAX_LINE (1024 * 1024)
/* The most clients served at once: one more is told so and hung up on,
 * so that clients that connect and never send cannot exhaust the
 * daemon's descriptors. */
#define LRPC_MAX_CLIENTS 64
#define STR2(x) #x
#define STR(x) STR2(x)
#define SERVER_MT "ocap.rpc.server"
#define CONN_MT "ocap.rpc.conn"

typedef struct server server_t;

typedef struct conn {
  uv_pipe_t pipe;
  server_t *srv;
  char *buf;
  size_t len, cap;
  int discarding; /* inside a line that was too long */
  int closed;
  int ref;                  /* registry reference to the conn's userdata box */
  struct conn *prev, *next; /* the server's connections not yet freed */
} conn_t;

struct server {
  uv_pipe_t pipe;
  uv_signal_t *signals[2]; /* SIGTERM and SIGINT: a graceful stop */
  lua_State *L;            /* the main thread, in which callbacks run */
  int cb_ref;
  int closed;    /* 1 once closing, 2 once its pipe is closed */
  int nconns;    /* client connections not yet freed */
  conn_t *conns; /* the same connections, as a list */
};

typedef struct {
  conn_t *c;
} connbox_t;

typedef struct {
  server_t *s;
} serverbox_t;

static void free_handle(uv_handle_t *h) {
  free(h->data);
}

/* The server's record goes once its pipe is closed and its last client
 * connection freed, whichever close callback runs last: libuv runs close
 * callbacks newest first, so the pipe's, closed after the clients', would
 * otherwise free the record before they read it. */
static void server_release(server_t *s) {
  if (s->closed == 2 && s->nconns == 0)
    free(s);
}

static void server_pipe_freed(uv_handle_t *h) {
  server_t *s = h->data;
  s->closed = 2;
  server_release(s);
}

static void conn_freed(uv_handle_t *h) {
  conn_t *c = (conn_t *)h;
  server_t *s = c->srv;
  s->nconns--;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  free(c->buf);
  free(c);
  server_release(s);
}

/* Closes c and drops the registry's hold on its Lua box, whose pointer is
 * cleared so that a later conn:write() reports the client gone.
 * [-0, +0, -] */
static void conn_close(lua_State *L, conn_t *c) {
  if (c->closed)
    return;
  c->closed = 1;
  if (c->ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
    connbox_t *box = lua_touserdata(L, -1);
    if (box)
      box->c = NULL;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
    c->ref = LUA_NOREF;
  }
  uv_close((uv_handle_t *)&c->pipe, conn_freed);
}

/* Calls the server's callback with (conn, line) or (conn, nil, reason).
 * An error in it is swallowed: the daemon keeps serving. [-0, +0, -] */
static void deliver(conn_t *c, const char *line, size_t n, const char *reason) {
  lua_State *L = c->srv->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->srv->cb_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref);
  if (line)
    lua_pushlstring(L, line, n);
  else
    lua_pushnil(L);
  lua_pushstring(L, reason ? reason : "");
  if (lua_pcall(L, 3, 0, 0) != LUA_OK)
    lua_pop(L, 1);
}

/* A SIGTERM or SIGINT: the callback gets (nil, nil, "SIGTERM"|"SIGINT"),
 * so that the daemon stops as `stop` makes it stop. [-0, +0, -] */
static void on_signal(uv_signal_t *h, int signum) {
  server_t *s = h->data;
  lua_State *L = s->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->cb_ref);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushstring(L, signum == SIGTERM ? "SIGTERM" : "SIGINT");
  if (lua_pcall(L, 3, 0, 0) != LUA_OK)
    lua_pop(L, 1);
}

static void signal_freed(uv_handle_t *h) {
  free(h);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536];
  buf->base = slab;
  buf->len = sizeof slab;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = (conn_t *)st;
  if (nread < 0) {
    conn_close(c->srv->L, c);
    return;
  }
  for (ssize_t i = 0; i < nread && !c->closed; i++) {
    char ch = buf->base[i];
    if (ch == '\n') {
      if (!c->discarding)
        deliver(c, c->buf ? c->buf : "", c->len, NULL);
      c->len = 0;
      c->discarding = 0;
      continue;
    }
    if (c->discarding)
      continue;
    if (c->len >= LRPC_MAX_LINE) {
      c->discarding = 1;
      c->len = 0;
      deliver(c, NULL, 0, "request too large");
      continue;
    }
    if (c->len == c->cap) {
      size_t cap = c->cap ? c->cap * 2 : 256;
      char *nb = realloc(c->buf, cap);
      if (!nb) {
        conn_close(c->srv->L, c);
        return;
      }
      c->buf = nb;
      c->cap = cap;
    }
    c->buf[c->len++] = ch;
  }
}

static void on_connection(uv_stream_t *st, int status) {
  server_t *s = (server_t *)st;
  if (status < 0)
    return;
  conn_t *c = calloc(1, sizeof *c);
  if (!c)
    return;
  uv_pipe_init(st->loop, &c->pipe, 0);
  c->srv = s;
  c->ref = LUA_NOREF;
  s->nconns++;
  c->next = s->conns;
  if (c->next)
    c->next->prev = c;
  s->conns = c;
  if (uv_accept(st, (uv_stream_t *)&c->pipe) != 0) {
    c->closed = 1;
    uv_close((uv_handle_t *)&c->pipe, conn_freed);
    return;
  }
  if (s->nconns > LRPC_MAX_CLIENTS) {
    /* The answer fits an empty socket buffer: a best-effort write. */
    static const char busy[] =
        "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,"
        "\"message\":\"too many clients (limit " STR(LRPC_MAX_CLIENTS) ")\"}}\n";
    uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
    uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
    c->closed = 1;
    uv_close((uv_handle_t *)&c->pipe, conn_freed);
    return;
  }
  lua_State *L = s->L;
  connbox_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->c = c;
  luaL_setmetatable(L, CONN_MT);
  c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static void written(uv_write_t *w, int status) {
  free(w);
}

int lrpc_write_copy(uv_stream_t *st, const char *s, size_t n, uv_write_cb cb) {
  lrpc_write_t *w = malloc(sizeof *w + (n ? n : 1));
  if (!w)
    return UV_ENOMEM;
  w->n = n;
  memcpy(w->bytes, s, n);
  uv_buf_t b = uv_buf_init(w->bytes, (unsigned)n);
  int rc = uv_write(&w->req, st, &b, 1, cb);
  if (rc != 0)
    free(w);
  return rc;
}

/* conn:write(s) -> boolean  [-0, +1, e]
 * It queues s for the client; false when the client is gone. */
static int conn_write(lua_State *L) {
  connbox_t *box = luaL_checkudata(L, 1, CONN_MT);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (!box->c || box->c->closed) {
    lua_pushboolean(L, 0);
    return 1;
  }
  int rc = lrpc_write_copy((uv_stream_t *)&box->c->pipe, s, n, written);
  if (rc == UV_ENOMEM)
    return luaL_error(L, "out of memory");
  if (rc != 0)
    conn_close(L, box->c);
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* conn:close()  [-0, +0, -] */
static int conn_lclose(lua_State *L) {
  connbox_t *box = luaL_checkudata(L, 1, CONN_MT);
  if (box->c)
    conn_close(L, box->c);
  return 0;
}

/* rpc.listen(K, path, callback) -> server | nil, err  [-0, +1|2, e]
 * It serves the Unix socket at path (created mode 0600) on K's loop;
 * callback(conn, line | nil, reason) runs for each request line, and
 * callback(nil, nil, "SIGTERM"|"SIGINT") when one of those arrives. */
static int rpc_listen(lua_State *L) {
  uv_loop_t *loop = lkernel_loop(L, 1);
  const char *path = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  server_t *s = calloc(1, sizeof *s);
  if (!s)
    return luaL_error(L, "out of memory");
  /* A client that hangs up before its answer must make the write fail,
   * not kill the daemon. */
  signal(SIGPIPE, SIG_IGN);
  uv_pipe_init(loop, &s->pipe, 0);
  mode_t old = umask(0177);
  int rc = uv_pipe_bind(&s->pipe, path);
  umask(old);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->pipe, 16, on_connection);
  if (rc != 0) {
    s->pipe.data = s;
    uv_close((uv_handle_t *)&s->pipe, free_handle);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  s->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, 3);
  s->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  static const int signums[2] = {SIGTERM, SIGINT};
  for (int i = 0; i < 2; i++) {
    uv_signal_t *sig = malloc(sizeof *sig);
    if (sig && uv_signal_init(loop, sig) == 0) {
      sig->data = s;
      uv_signal_start(sig, on_signal, signums[i]);
      uv_unref((uv_handle_t *)sig);
      s->signals[i] = sig;
    } else {
      free(sig);
    }
  }
  serverbox_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->s = s;
  luaL_setmetatable(L, SERVER_MT);
  return 1;
}

/* server:close()  [-0, +0, -]
 * It closes the server and every client connection, so that the kernel's
 * loop can be closed after it has run once more. */
static int server_close(lua_State *L) {
  serverbox_t *box = luaL_checkudata(L, 1, SERVER_MT);
  server_t *s = box->s;
  if (!s || s->closed)
    return 0;
  s->closed = 1;
  for (int i = 0; i < 2; i++)
    if (s->signals[i])
      uv_close((uv_handle_t *)s->signals[i], signal_freed);
  /* The server's own list, not a walk of the loop's handles: the loop also
   * has pipes that are not connections (IO channels). A connection leaves
   * the list only in its close callback, so closing does not change it. */
  for (conn_t *c = s->conns; c; c = c->next)
    conn_close(s->L, c);
  luaL_unref(L, LUA_REGISTRYINDEX, s->cb_ref);
  s->pipe.data = s;
  box->s = NULL;
  uv_loop_t *loop = s->pipe.loop;
  uv_close((uv_handle_t *)&s->pipe, server_pipe_freed);
  uv_run(loop, UV_RUN_NOWAIT);
  return 0;
}

/* Sends all n bytes of s on the blocking socket fd: 0, or -1 when the
 * peer is gone or the send failed. */
static int send_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

/* [-0, +1|2, -] Connects a new blocking stream socket to addr and pushes
 * its fd, or nil and why it failed (the socket closed again). */
static int push_connected(lua_State *L, const struct sockaddr *addr, socklen_t len) {
  int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, addr, len) != 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    lua_pushnil(L);
    lua_pushstring(L, strerror(e));
    return 2;
  }
  lua_pushinteger(L, fd);
  return 1;
}

/* rpc.call(path, line) -> reply | nil, err  [-0, +1|2, e]
 * A blocking client: connects, sends line and a newline, returns the first
 * line of the answer without its newline. */
static int rpc_call(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t n;
  const char *line = luaL_checklstring(L, 2, &n);
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof addr.sun_path) {
    lua_pushnil(L);
    lua_pushstring(L, "socket path too long");
    return 2;
  }
  strcpy(addr.sun_path, path);
  if (push_connected(L, (struct sockaddr *)&addr, sizeof addr) == 2)
    return 2;
  int fd = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_Buffer b;
  /* A request that could not be sent in full gets no answer to wait for. */
  int sent = send_all(fd, line, n) == 0 && send_all(fd, "\n", 1) == 0;
  luaL_buffinit(L, &b);
  int done = 0;
  char chunk[4096];
  while (sent && !done) {
    ssize_t r = recv(fd, chunk, sizeof chunk, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    char *nl = memchr(chunk, '\n', (size_t)r);
    luaL_addlstring(&b, chunk, nl ? (size_t)(nl - chunk) : (size_t)r);
    done = nl != NULL;
  }
  close(fd);
  luaL_pushresult(&b);
  if (!done) {
    lua_pushnil(L);
    lua_pushstring(L, "the daemon closed the connection without an answer");
    return 2;
  }
  return 1;
}

/* rpc.connect(path) -> fd | nil, err  [-0, +1|2, e]
 * A raw connection for tests of misbehaving clients: rpc.send(fd, s)
 * writes, rpc.close(fd) hangs up. */
static int rpc_connect(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof addr.sun_path)
    return luaL_error(L, "socket path too long");
  strcpy(addr.sun_path, path);
  return push_connected(L, (struct sockaddr *)&addr, sizeof addr);
}

/* rpc.send(fd, s) -> boolean  [-0, +1, e] */
static int rpc_send(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  int fd = (int)luaL_checkinteger(L, 1);
  lua_pushboolean(L, send_all(fd, s, n) == 0);
  return 1;
}

/* rpc.tcpConnect(ip, port) -> fd | nil, err  [-0, +1|2, e]
 * A raw TCP connection (IPv4), for tests of IO channels. */
static int rpc_tcp_connect(lua_State *L) {
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)luaL_checkinteger(L, 2));
  if (inet_pton(AF_INET, luaL_checkstring(L, 1), &addr.sin_addr) != 1)
    return luaL_error(L, "not an IPv4 address");
  return push_connected(L, (struct sockaddr *)&addr, sizeof addr);
}

/* rpc.recv(fd [, ms]) -> bytes | nil, why  [-0, +1|2, e]
 * What the peer sent, up to 64 KiB, waiting at most ms milliseconds
 * (default 10000) so that a broken test fails instead of hanging; nil and
 * "eof" when the peer has hung up. */
static int rpc_recv(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  int ms = (int)luaL_optinteger(L, 2, 10000);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int rc;
  while ((rc = poll(&p, 1, ms)) < 0 && errno == EINTR)
    ;
  if (rc == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  char chunk[65536];
  ssize_t n;
  while ((n = recv(fd, chunk, sizeof chunk, 0)) < 0 && errno == EINTR)
    ;
  if (n <= 0) {
    lua_pushnil(L);
    lua_pushstring(L, n == 0 ? "eof" : strerror(errno));
    return 2;
  }
  lua_pushlstring(L, chunk, (size_t)n);
  return 1;
}

/* rpc.close(fd)  [-0, +0, e] */
static int rpc_close(lua_State *L) {
  close((int)luaL_checkinteger(L, 1));
  return 0;
}

/* rpc.daemonize() -> pid  [-0, +1, e]
 * It forks; the child (which gets 0) starts a new session with its
 * standard streams on /dev/null. The parent gets the child's pid. */
static int rpc_daemonize(lua_State *L) {
  pid_t pid = fork();
  if (pid < 0)
    return luaL_error(L, "fork failed: %s", strerror(errno));
  if (pid == 0) {
    setsid();
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
      dup2(fd, 0);
      dup2(fd, 1);
      dup2(fd, 2);
      if (fd > 2)
        close(fd);
    }
  }
  lua_pushinteger(L, pid);
  return 1;
}

/* rpc.lock(path) -> fd | nil  [-0, +1, e]
 * An exclusive flock on path, held until the process exits (so a killed
 * daemon releases it); nil when another process holds it. */
static int rpc_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return luaL_error(L, "cannot open %s: %s", path, strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, fd);
  return 1;
}

/* rpc.kill(pid, sig) -> boolean  [-0, +1, e] */
static int rpc_kill(lua_State *L) {
  lua_pushboolean(L, kill((pid_t)luaL_checkinteger(L, 1), (int)luaL_optinteger(L, 2, 0)) == 0);
  return 1;
}

/* rpc.isatty(fd) -> boolean  [-0, +1, e]
 * Whether fd is a terminal: the CLI prints progress only to one. */
static int rpc_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* rpc.getpid() -> pid  [-0, +1, -] */
static int rpc_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

/* rpc.owner(path) -> uid, mode | nil, err  [-0, +2, e]
 * The owner and permission bits of path, and the caller's uid third. */
static int rpc_owner(lua_State *L) {
  struct stat st;
  if (stat(luaL_checkstring(L, 1), &st) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushinteger(L, st.st_uid);
  lua_pushinteger(L, st.st_mode & 07777);
  lua_pushinteger(L, getuid());
  return 3;
}

/* rpc.mkdir(path) -> true | nil, err  [-0, +1|2, e]
 * It creates path with mode 0700; an existing directory is fine. */
static int rpc_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg conn_methods[] = {
    {"write", conn_write}, {"close", conn_lclose}, {NULL, NULL}};
static const luaL_Reg server_methods[] = {{"close", server_close}, {NULL, NULL}};
static const luaL_Reg rpc_functions[] = {
    {"listen", rpc_listen}, {"call", rpc_call},     {"daemonize", rpc_daemonize},
    {"lock", rpc_lock},     {"kill", rpc_kill},     {"getpid", rpc_getpid},
    {"owner", rpc_owner},   {"mkdir", rpc_mkdir},   {"connect", rpc_connect},
    {"send", rpc_send},     {"close", rpc_close},   {"tcpConnect", rpc_tcp_connect},
    {"recv", rpc_recv},     {"isatty", rpc_isatty}, {NULL, NULL},
};

void lrpc_class(lua_State *L, const char *name, const luaL_Reg *methods) {
  if (luaL_newmetatable(L, name)) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

int lrpc_open(lua_State *L) {
  lrpc_class(L, CONN_MT, conn_methods);
  lrpc_class(L, SERVER_MT, server_methods);
  luaL_newlib(L, rpc_functions);
  lua_pushinteger(L, LRPC_MAX_LINE);
  lua_setfield(L, -2, "MAX_LINE");
  lua_pushinteger(L, LRPC_MAX_CLIENTS);
  lua_setfield(L, -2, "MAX_CLIENTS");
  return 1;
}
