/* IO channels on a kernel's libuv loop (see lio.h).
 *
 * A channel is a C struct that the Lua userdata points to. It outlives the
 * userdata while libuv still holds any of its handles or requests: `refs`
 * counts them, and the struct is freed once it is closed, unreferenced and
 * no longer boxed. Input goes through one buffer: a line is handed out by
 * ch:read() when its newline is in the buffer; reading from the source
 * stops while a whole line waits, so a peer that sends faster than the vat
 * reads is held back by the socket, not buffered here. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "lio.h"
#include "lrpc.h"

#define CHANNEL_MT "ocap.io.Channel"
#define READ_CHUNK 65536

enum { KIND_SOCKET, KIND_LISTEN, KIND_NETWORK, KIND_FILE, KIND_CONSOLE };

typedef struct chan chan_t;

/* A connected stream: an accepted client, a TCP client, or stdin. */
typedef struct stream {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
    uv_tty_t tty;
  } u;
  chan_t *ch;
  int reading;
} stream_t;

/* One write: a stream write, or a file write waiting in the channel's
 * queue (file writes go one at a time so that they keep their order). */
typedef struct wreq {
  union {
    uv_write_t w;
    uv_fs_t fs;
  } u;
  chan_t *ch;
  lua_Integer token;
  size_t n, off;
  struct wreq *next;
  char data[];
} wreq_t;

struct chan {
  int kind;
  uv_loop_t *loop;
  lua_State *L; /* the main thread, in which notifications run */
  int notify_ref;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } server;
  int has_server;
  stream_t *client; /* the stream input comes from and output goes to */
  uv_connect_t connect_req;
  int connecting;
  /* File input and output (file channels; the console's stdout, and its
   * stdin when that is not a stream). */
  int rfd, wfd, own_fds;
  int64_t roff;
  uv_fs_t read_req;
  int fs_reading;
  wreq_t *wq_head, *wq_tail;
  int fs_writing;
  /* Input. */
  char *slab; /* where libuv reads into */
  char *buf;
  size_t len, cap;
  int want;       /* a reader waits */
  int eof;        /* the input ended (a server's: its client's) */
  int toolong;    /* a line over LIO_MAX_LINE is to be reported */
  int discarding; /* dropping the rest of that line */
  size_t queued;  /* bytes in writes not yet done */
  int refs;       /* libuv handles and requests still out */
  int closed, boxed;
};

typedef struct {
  chan_t *ch;
} box_t;

static void maybe_free(chan_t *ch) {
  if (!ch->closed || ch->refs > 0 || ch->boxed)
    return;
  if (ch->own_fds) {
    if (ch->rfd >= 0)
      close(ch->rfd);
    if (ch->wfd >= 0 && ch->wfd != ch->rfd)
      close(ch->wfd);
  }
  free(ch->slab);
  free(ch->buf);
  free(ch);
}

static void release(chan_t *ch) {
  ch->refs--;
  maybe_free(ch);
}

/* Calls the channel's notify function with (event, token, err); an error
 * in it is dropped, as it would otherwise unwind through libuv.
 * [-0, +0, -] */
static void notify(chan_t *ch, const char *event, lua_Integer token, const char *err) {
  if (ch->closed || ch->notify_ref == LUA_NOREF)
    return;
  lua_State *L = ch->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ch->notify_ref);
  lua_pushstring(L, event);
  lua_pushinteger(L, token);
  if (err)
    lua_pushstring(L, err);
  else
    lua_pushnil(L);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK)
    lua_pop(L, 1);
}

/* ---- input ---- */

static int has_line(chan_t *ch) {
  return ch->len > 0 && memchr(ch->buf, '\n', ch->len) != NULL;
}

static int ready(chan_t *ch) {
  return ch->toolong || ch->eof || has_line(ch);
}

/* Appends n bytes of input, dropping those of a line that was too long. */
static void absorb(chan_t *ch, const char *data, size_t n) {
  if (ch->discarding) {
    const char *nl = memchr(data, '\n', n);
    if (!nl)
      return;
    n -= (size_t)(nl + 1 - data);
    data = nl + 1;
    ch->discarding = 0;
  }
  if (ch->len + n > ch->cap) {
    size_t cap = ch->cap ? ch->cap : 256;
    while (cap < ch->len + n)
      cap *= 2;
    char *nb = realloc(ch->buf, cap);
    if (!nb) {
      /* Without memory the line cannot be kept: it is reported as too
       * long, which is what it is for this process. */
      ch->len = 0;
      ch->toolong = ch->discarding = 1;
      return;
    }
    ch->buf = nb;
    ch->cap = cap;
  }
  memcpy(ch->buf + ch->len, data, n);
  ch->len += n;
  if (ch->len > LIO_MAX_LINE && !has_line(ch)) {
    ch->len = 0;
    ch->toolong = ch->discarding = 1;
  }
}

static void update_ref(chan_t *ch) {
  if (!ch->has_server || ch->closed)
    return;
  /* A listening server keeps the loop (and an `await` on the host) alive
   * only while a reader waits for its next client. */
  if (ch->want && !ch->client)
    uv_ref(&ch->server.handle);
  else
    uv_unref(&ch->server.handle);
}

static void stop_reading(chan_t *ch) {
  if (ch->client && ch->client->reading) {
    uv_read_stop(&ch->client->u.stream);
    ch->client->reading = 0;
  }
}

static void start_reading(chan_t *ch);

/* Called when input arrived or ended: a waiting reader is told once there
 * is something for it. [-0, +0, -] */
static void after_input(chan_t *ch) {
  if (!ready(ch)) {
    if (ch->want)
      start_reading(ch);
    return;
  }
  stop_reading(ch);
  if (ch->want) {
    ch->want = 0;
    update_ref(ch);
    notify(ch, "input", 0, NULL);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  stream_t *s = h->data;
  (void)suggested;
  if (!s->ch->slab)
    s->ch->slab = malloc(READ_CHUNK);
  b->base = s->ch->slab;
  b->len = s->ch->slab ? READ_CHUNK : 0;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  stream_t *s = st->data;
  chan_t *ch = s->ch;
  if (ch->closed || s != ch->client)
    return;
  if (nread > 0) {
    absorb(ch, b->base, (size_t)nread);
  } else if (nread < 0) {
    ch->eof = 1;
    stop_reading(ch);
  }
  after_input(ch);
}

static void on_fs_read(uv_fs_t *req) {
  chan_t *ch = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  ch->fs_reading = 0;
  if (!ch->closed) {
    if (r > 0) {
      ch->roff += r;
      absorb(ch, ch->slab, (size_t)r);
    } else {
      ch->eof = 1;
    }
    after_input(ch);
  }
  release(ch);
}

static void start_reading(chan_t *ch) {
  if (ch->closed || ch->eof)
    return;
  if (ch->rfd >= 0) {
    if (ch->fs_reading)
      return;
    if (!ch->slab && !(ch->slab = malloc(READ_CHUNK))) {
      ch->eof = 1;
      return;
    }
    uv_buf_t b = uv_buf_init(ch->slab, READ_CHUNK);
    ch->read_req.data = ch;
    if (uv_fs_read(ch->loop, &ch->read_req, ch->rfd, &b, 1, ch->roff, on_fs_read) == 0) {
      ch->fs_reading = 1;
      ch->refs++;
    } else {
      ch->eof = 1;
    }
    return;
  }
  if (ch->client && !ch->client->reading && !ch->connecting) {
    if (uv_read_start(&ch->client->u.stream, on_alloc, on_read) == 0)
      ch->client->reading = 1;
    else
      ch->eof = 1;
  }
}

/* ---- streams ---- */

static void stream_closed(uv_handle_t *h) {
  stream_t *s = h->data;
  chan_t *ch = s->ch;
  free(s);
  release(ch);
}

static void close_stream(stream_t *s) {
  if (!uv_is_closing(&s->u.handle))
    uv_close(&s->u.handle, stream_closed);
}

static void shut_down(uv_shutdown_t *req, int status) {
  (void)status;
  close_stream(req->data);
  free(req);
}

/* A server's client whose input ended and was read to its end: once the
 * writes queued for it are done, it is hung up on and the next client can
 * come. */
static void finish_client(chan_t *ch) {
  stream_t *s = ch->client;
  ch->client = NULL;
  ch->eof = 0;
  ch->len = 0;
  ch->discarding = 0;
  uv_shutdown_t *req = malloc(sizeof *req);
  if (req) {
    req->data = s;
    if (uv_shutdown(req, &s->u.stream, shut_down) == 0)
      return;
    free(req);
  }
  close_stream(s);
}

/* A new stream of the channel's server kind, counted in its refs. */
static stream_t *new_stream(chan_t *ch) {
  stream_t *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  int rc = ch->kind == KIND_SOCKET ? uv_pipe_init(ch->loop, &s->u.pipe, 0)
                                   : uv_tcp_init(ch->loop, &s->u.tcp);
  if (rc != 0) {
    free(s);
    return NULL;
  }
  s->u.handle.data = s;
  s->ch = ch;
  ch->refs++;
  return s;
}

static void on_connection(uv_stream_t *server, int status) {
  chan_t *ch = server->data;
  if (status < 0 || ch->closed)
    return;
  stream_t *s = new_stream(ch);
  if (!s)
    return;
  /* One client at a time: a second is accepted only to be hung up on,
   * so that it learns at once instead of waiting in the backlog. */
  if (uv_accept(server, &s->u.stream) != 0 || ch->client) {
    close_stream(s);
    return;
  }
  ch->client = s;
  update_ref(ch);
  if (ch->want)
    start_reading(ch);
}

static void on_connect(uv_connect_t *req, int status) {
  chan_t *ch = req->data;
  ch->connecting = 0;
  if (!ch->closed) {
    if (status < 0) {
      ch->eof = 1;
      close_stream(ch->client);
      ch->client = NULL;
      notify(ch, "connected", 0, uv_strerror(status));
      after_input(ch);
    } else {
      notify(ch, "connected", 0, NULL);
      if (!ch->closed && ch->want)
        start_reading(ch);
    }
  }
  release(ch);
}

/* ---- output ---- */

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = req->data;
  chan_t *ch = w->ch;
  ch->queued -= w->n;
  notify(ch, "written", w->token, status < 0 ? uv_strerror(status) : NULL);
  free(w);
  release(ch);
}

static void pump(chan_t *ch);

static void on_fs_written(uv_fs_t *req) {
  wreq_t *w = req->data;
  chan_t *ch = w->ch;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  ch->fs_writing = 0;
  if (!ch->closed && r >= 0 && w->off + (size_t)r < w->n) {
    w->off += (size_t)r;
    pump(ch); /* the rest of a partial write */
    return;
  }
  ch->wq_head = w->next;
  if (!ch->wq_head)
    ch->wq_tail = NULL;
  ch->queued -= w->n;
  notify(ch, "written", w->token, r < 0 ? uv_strerror((int)r) : NULL);
  free(w);
  if (!ch->closed)
    pump(ch);
  release(ch);
}

/* Starts the file write at the head of the queue, unless one runs. */
static void pump(chan_t *ch) {
  wreq_t *w = ch->wq_head;
  if (!w || ch->fs_writing)
    return;
  uv_buf_t b = uv_buf_init(w->data + w->off, (unsigned)(w->n - w->off));
  w->u.fs.data = w;
  int rc = uv_fs_write(ch->loop, &w->u.fs, ch->wfd, &b, 1, -1, on_fs_written);
  if (rc == 0) {
    ch->fs_writing = 1;
    return;
  }
  ch->wq_head = w->next;
  if (!ch->wq_head)
    ch->wq_tail = NULL;
  ch->queued -= w->n;
  notify(ch, "written", w->token, uv_strerror(rc));
  free(w);
  release(ch);
  pump(ch);
}

/* ---- the Lua side ---- */

static chan_t *checkchan(lua_State *L) {
  box_t *box = luaL_checkudata(L, 1, CHANNEL_MT);
  return box->ch;
}

/* ch:read() -> line | false | nil [, err]  [-0, +1|2, -]
 * The next line without its newline; false when none is there yet (the
 * notify function gets "input" when there is); nil at the end of input,
 * and nil with a message for a line that was too long (dropped). For a
 * server, the end is its client's: the next client can then connect. */
static int chan_read(lua_State *L) {
  chan_t *ch = checkchan(L);
  if (!ch || ch->closed) {
    lua_pushnil(L);
    return 1;
  }
  if (ch->toolong) {
    ch->toolong = 0;
    lua_pushnil(L);
    lua_pushfstring(L, "line longer than %d bytes (dropped)", LIO_MAX_LINE);
    return 2;
  }
  char *nl = ch->len ? memchr(ch->buf, '\n', ch->len) : NULL;
  if (nl) {
    size_t n = (size_t)(nl - ch->buf);
    int toolong = n > LIO_MAX_LINE;
    if (toolong)
      lua_pushnil(L);
    else
      lua_pushlstring(L, ch->buf, n);
    ch->len -= n + 1;
    memmove(ch->buf, nl + 1, ch->len);
    if (!toolong)
      return 1;
    lua_pushfstring(L, "line longer than %d bytes (dropped)", LIO_MAX_LINE);
    return 2;
  }
  if (ch->eof) {
    if (ch->len > 0 && !ch->discarding) {
      lua_pushlstring(L, ch->buf, ch->len);
      ch->len = 0;
      return 1;
    }
    lua_pushnil(L);
    if (ch->has_server && ch->client)
      finish_client(ch);
    update_ref(ch);
    return 1;
  }
  ch->want = 1;
  start_reading(ch);
  update_ref(ch);
  if (ch->eof) { /* the source failed at once */
    ch->want = 0;
    lua_pushnil(L);
    return 1;
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* ch:write(s, token) -> true | nil, err  [-0, +1|2, e]
 * Queues s and a newline; the notify function gets ("written", token,
 * err|nil) when it is written or failed. */
static int chan_write(lua_State *L) {
  chan_t *ch = checkchan(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  lua_Integer token = luaL_checkinteger(L, 3);
  const char *err = NULL;
  if (!ch || ch->closed)
    err = "the channel is closed";
  else if (ch->wfd < 0 && (!ch->client || ch->connecting))
    err = "no client is connected";
  else if (n + 1 > LIO_MAX_QUEUED - ch->queued)
    err = lua_pushfstring(L, "write buffer full (limit %d bytes)", LIO_MAX_QUEUED);
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  wreq_t *w = malloc(sizeof *w + n + 1);
  if (!w)
    return luaL_error(L, "out of memory");
  memcpy(w->data, s, n);
  w->data[n] = '\n';
  w->ch = ch;
  w->token = token;
  w->n = n + 1;
  w->off = 0;
  w->next = NULL;
  if (ch->wfd >= 0) {
    if (ch->wq_tail)
      ch->wq_tail->next = w;
    else
      ch->wq_head = w;
    ch->wq_tail = w;
    ch->queued += w->n;
    ch->refs++;
    pump(ch);
  } else {
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->n);
    w->u.w.data = w;
    int rc = uv_write(&w->u.w, &ch->client->u.stream, &b, 1, on_written);
    if (rc != 0) {
      free(w);
      lua_pushnil(L);
      lua_pushstring(L, uv_strerror(rc));
      return 2;
    }
    ch->queued += w->n;
    ch->refs++;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void server_closed(uv_handle_t *h) {
  release(h->data);
}

/* Closes everything the channel holds; no notification follows. The
 * caller decides about ch->boxed. [-0, +0, -] */
static void chan_shut(lua_State *L, chan_t *ch) {
  if (ch->closed)
    return;
  ch->closed = 1;
  luaL_unref(L, LUA_REGISTRYINDEX, ch->notify_ref);
  ch->notify_ref = LUA_NOREF;
  if (ch->has_server)
    uv_close(&ch->server.handle, server_closed);
  if (ch->client) {
    close_stream(ch->client); /* its pending writes are cancelled */
    ch->client = NULL;
  }
  if (ch->fs_reading)
    uv_cancel((uv_req_t *)&ch->read_req);
  /* Queued file writes that have not started are dropped. */
  wreq_t *w = ch->fs_writing && ch->wq_head ? ch->wq_head->next : ch->wq_head;
  if (ch->fs_writing && ch->wq_head)
    ch->wq_head->next = NULL;
  else
    ch->wq_head = ch->wq_tail = NULL;
  while (w) {
    wreq_t *next = w->next;
    ch->queued -= w->n;
    free(w);
    ch->refs--;
    w = next;
  }
}

/* ch:close()  [-0, +0, -] */
static int chan_close(lua_State *L) {
  chan_t *ch = checkchan(L);
  if (ch)
    chan_shut(L, ch);
  return 0;
}

/* ch:idle() -> boolean  [-0, +1, -]
 * True once a closed channel has nothing left in libuv's hands, so that
 * the kernel's loop can be closed. */
static int chan_idle(lua_State *L) {
  chan_t *ch = checkchan(L);
  lua_pushboolean(L, !ch || ch->refs == 0);
  return 1;
}

/* ch:port() -> integer | nil  [-0, +1, -]
 * The port a TCP server listens on (useful when it was given port 0). */
static int chan_port(lua_State *L) {
  chan_t *ch = checkchan(L);
  struct sockaddr_storage ss;
  int n = sizeof ss;
  if (!ch || ch->closed || ch->kind != KIND_LISTEN ||
      uv_tcp_getsockname(&ch->server.tcp, (struct sockaddr *)&ss, &n) != 0) {
    lua_pushnil(L);
    return 1;
  }
  int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                      : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  lua_pushinteger(L, port);
  return 1;
}

/* __gc  [-0, +0, -] */
static int chan_gc(lua_State *L) {
  box_t *box = luaL_checkudata(L, 1, CHANNEL_MT);
  chan_t *ch = box->ch;
  if (ch) {
    box->ch = NULL;
    chan_shut(L, ch);
    ch->boxed = 0;
    maybe_free(ch);
  }
  return 0;
}

/* Makes a channel of kind on K's loop (argument 1) with the notify
 * function at index fn, and pushes its userdata, which holds K so that
 * the loop outlives it. [-0, +1, e] */
static chan_t *newchan(lua_State *L, int kind, int fn) {
  uv_loop_t *loop = lkernel_loop(L, 1);
  luaL_checktype(L, fn, LUA_TFUNCTION);
  box_t *box = lua_newuserdatauv(L, sizeof *box, 1);
  box->ch = NULL;
  luaL_setmetatable(L, CHANNEL_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  chan_t *ch = calloc(1, sizeof *ch);
  if (!ch)
    luaL_error(L, "out of memory");
  ch->kind = kind;
  ch->loop = loop;
  ch->rfd = ch->wfd = -1;
  ch->boxed = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  ch->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, fn);
  ch->notify_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  box->ch = ch;
  /* A peer that hangs up must make a write fail, not kill the process. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
  return ch;
}

/* Replaces the channel's userdata on the stack top with (nil, msg), after
 * closing what was made. [-1, +2, -] */
static int failed(lua_State *L, chan_t *ch, const char *msg) {
  chan_shut(L, ch);
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* A socket file at path that nobody listens on is what a killed server
 * left: it goes. Anything else there is kept, and bind reports it. */
static void remove_stale_socket(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
    return;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno == ECONNREFUSED)
    unlink(path);
  close(fd);
}

/* Whether the directory path would be created in does not exist. */
static int missing_dir(const char *path) {
  char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash)
    return 0;
  if (slash == dir)
    slash[1] = '\0';
  else
    *slash = '\0';
  struct stat st;
  return stat(dir, &st) != 0 && errno == ENOENT;
}

/* io.socket(K, path, notify) -> ch | nil, err  [-0, +1|2, e]
 * A Unix socket server at path (mode 0600), one client at a time. */
static int io_socket(lua_State *L) {
  const char *path = luaL_checkstring(L, 2);
  chan_t *ch = newchan(L, KIND_SOCKET, 3);
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
    return failed(L, ch, "socket path too long");
  remove_stale_socket(path);
  uv_pipe_init(ch->loop, &ch->server.pipe, 0);
  ch->server.handle.data = ch;
  ch->has_server = 1;
  ch->refs++;
  mode_t old = umask(0177);
  int rc = uv_pipe_bind(&ch->server.pipe, path);
  umask(old);
  if (rc == UV_EACCES && missing_dir(path))
    rc = UV_ENOENT; /* libuv says EACCES for a directory that is not there */
  if (rc == 0)
    rc = uv_listen(&ch->server.stream, 8, on_connection);
  if (rc != 0)
    return failed(L, ch, uv_strerror(rc));
  uv_unref(&ch->server.handle);
  return 1;
}

/* Fills addr from host and port; "localhost" is the IPv4 loopback. */
static int make_addr(const char *host, int port, struct sockaddr_storage *addr) {
  if (strcmp(host, "localhost") == 0)
    host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)addr) == 0)
    return 0;
  return uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr);
}

/* io.listen(K, host, port, notify) -> ch | nil, err  [-0, +1|2, e]
 * A TCP server, one client at a time. */
static int io_listen(lua_State *L) {
  const char *host = luaL_checkstring(L, 2);
  int port = (int)luaL_checkinteger(L, 3);
  chan_t *ch = newchan(L, KIND_LISTEN, 4);
  struct sockaddr_storage addr;
  if (make_addr(host, port, &addr) != 0)
    return failed(L, ch, "not a numeric IP address");
  uv_tcp_init(ch->loop, &ch->server.tcp);
  ch->server.handle.data = ch;
  ch->has_server = 1;
  ch->refs++;
  int rc = uv_tcp_bind(&ch->server.tcp, (struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen(&ch->server.stream, 8, on_connection);
  if (rc != 0)
    return failed(L, ch, uv_strerror(rc));
  uv_unref(&ch->server.handle);
  return 1;
}

/* io.connect(K, host, port, notify) -> ch | nil, err  [-0, +1|2, e]
 * A TCP client; the notify function gets ("connected", 0, err|nil). */
static int io_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 2);
  int port = (int)luaL_checkinteger(L, 3);
  chan_t *ch = newchan(L, KIND_NETWORK, 4);
  struct sockaddr_storage addr;
  if (make_addr(host, port, &addr) != 0)
    return failed(L, ch, "not a numeric IP address");
  stream_t *s = calloc(1, sizeof *s);
  if (!s)
    return failed(L, ch, "out of memory");
  uv_tcp_init(ch->loop, &s->u.tcp);
  s->u.handle.data = s;
  s->ch = ch;
  ch->refs++;
  ch->client = s;
  ch->connect_req.data = ch;
  int rc = uv_tcp_connect(&ch->connect_req, &s->u.tcp, (struct sockaddr *)&addr, on_connect);
  if (rc != 0)
    return failed(L, ch, uv_strerror(rc));
  ch->connecting = 1;
  ch->refs++;
  return 1;
}

/* io.file(K, path, readable, writable, notify) -> ch | nil, err
 * [-0, +1|2, e]
 * Reads lines from the start of path and appends to it (created mode 0600
 * when writable and missing). */
static int io_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 2);
  int readable = lua_toboolean(L, 3), writable = lua_toboolean(L, 4);
  chan_t *ch = newchan(L, KIND_FILE, 5);
  ch->own_fds = 1;
  if (writable && (ch->wfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0)
    return failed(L, ch, uv_strerror(-errno));
  if (readable && (ch->rfd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
    return failed(L, ch, uv_strerror(-errno));
  struct stat st;
  if (fstat(readable ? ch->rfd : ch->wfd, &st) == 0 && S_ISDIR(st.st_mode))
    return failed(L, ch, uv_strerror(UV_EISDIR));
  return 1;
}

/* io.console(K, readable, writable, notify) -> ch | nil, err
 * [-0, +1|2, e]
 * The host's stdin (a stream when it is a terminal, pipe or socket; else
 * read as a file) and stdout (written as a file, one write at a time, so
 * that its blocking mode is left alone). Both are duplicated, so closing
 * the channel leaves the process's own descriptors open. */
static int io_console(lua_State *L) {
  int readable = lua_toboolean(L, 2), writable = lua_toboolean(L, 3);
  chan_t *ch = newchan(L, KIND_CONSOLE, 4);
  ch->own_fds = 1;
  if (writable && (ch->wfd = fcntl(1, F_DUPFD_CLOEXEC, 3)) < 0)
    return failed(L, ch, uv_strerror(-errno));
  if (!readable)
    return 1;
  uv_handle_type t = uv_guess_handle(0);
  int fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
  if (fd < 0)
    return failed(L, ch, uv_strerror(-errno));
  if (t != UV_TTY && t != UV_NAMED_PIPE && t != UV_TCP) {
    ch->rfd = fd;
    return 1;
  }
  stream_t *s = calloc(1, sizeof *s);
  if (!s) {
    close(fd);
    return failed(L, ch, "out of memory");
  }
  int rc;
  if (t == UV_TTY)
    rc = uv_tty_init(ch->loop, &s->u.tty, fd, 1);
  else if (t == UV_NAMED_PIPE && (rc = uv_pipe_init(ch->loop, &s->u.pipe, 0)) == 0)
    rc = uv_pipe_open(&s->u.pipe, fd);
  else if (t == UV_TCP && (rc = uv_tcp_init(ch->loop, &s->u.tcp)) == 0)
    rc = uv_tcp_open(&s->u.tcp, fd);
  s->u.handle.data = s;
  s->ch = ch;
  ch->refs++;
  ch->client = s;
  if (rc != 0)
    return failed(L, ch, uv_strerror(rc));
  return 1;
}

static const luaL_Reg channel_methods[] = {
    {"read", chan_read}, {"write", chan_write}, {"close", chan_close},
    {"idle", chan_idle}, {"port", chan_port},   {NULL, NULL},
};

static const luaL_Reg io_functions[] = {
    {"socket", io_socket}, {"listen", io_listen},   {"connect", io_connect},
    {"file", io_file},     {"console", io_console}, {NULL, NULL},
};

int lio_open(lua_State *L) {
  if (luaL_newmetatable(L, CHANNEL_MT)) {
    luaL_newlib(L, channel_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, chan_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, io_functions);
  lua_pushinteger(L, LIO_MAX_LINE);
  lua_setfield(L, -2, "MAX_LINE");
  lua_pushinteger(L, LIO_MAX_QUEUED);
  lua_setfield(L, -2, "MAX_QUEUED");
  return 1;
}
