/*
 * test_embed.c -- specs of the C embedding API (include/ocap.h), driven the
 * way a C host drives it: a kernel with the example's C service `calc` and
 * the adder vat of host/examples/embed, messages with result callbacks,
 * replies given later or never, bad handles and bad input, and hosts freed
 * with work in flight or from inside their own callbacks. Under `make asan`
 * LeakSanitizer also checks that nothing leaks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ocap.h"

#ifndef OCAP_SOURCE_DIR
#define OCAP_SOURCE_DIR "."
#endif
#define EXAMPLE OCAP_SOURCE_DIR "/host/examples/embed"

/* Each test counts its own failures in a local `fails`. */
#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
      fails++;                                                                                     \
    }                                                                                              \
  } while (0)

/* What the service and the result callbacks saw. */
typedef struct seen {
  ocap_host_t *host;
  ocap_reply_t *held; /* a reply the service keeps for later */
  int calls;          /* service calls */
  int results;        /* result callbacks */
  int ok;             /* ok of the last result */
  char text[512];     /* text of the last result */
  int free_in_cb;     /* the result callback frees the host */
} seen_t;

/* add answers at once, slowDouble keeps its reply, fail rejects, and
 * bad answers with JSON that does not parse. */
static void calc(void *ud, const char *method, const char *args, ocap_reply_t *reply) {
  seen_t *s = ud;
  s->calls++;
  long a = 0, b = 0;
  sscanf(args, "[%ld,%ld]", &a, &b);
  if (strcmp(method, "add") == 0) {
    char out[32];
    snprintf(out, sizeof out, "%ld", a + b);
    ocap_reply_resolve(reply, out);
  } else if (strcmp(method, "slowDouble") == 0) {
    s->held = reply;
  } else {
    ocap_reply_reject(reply, "calc: this method always fails");
  }
}

static void on_result(void *ud, int ok, const char *text) {
  seen_t *s = ud;
  s->results++;
  s->ok = ok;
  snprintf(s->text, sizeof s->text, "%s", text);
  if (s->free_in_cb)
    ocap_host_free(s->host);
}

static void quiet(void *ud, const char *entry) {}

static char root[32];

/* Makes a host with calc registered and the adder launched; root gets the
 * adder's kref. Returns NULL (and counts a failure) if that fails. */
static ocap_host_t *make_host(seen_t *s, int *fails_out) {
  int fails = 0;
  ocap_host_options_t opts = {.base_dir = EXAMPLE, .logger = quiet};
  ocap_host_t *h = NULL;
  char *err = NULL;
  int rc = ocap_host_new(&opts, &h, &err);
  CHECK(rc == 0);
  if (rc != 0) {
    fprintf(stderr, "ocap_host_new: %s\n", err ? err : "?");
    free(err);
    *fails_out += fails;
    return NULL;
  }
  memset(s, 0, sizeof *s);
  s->host = h;
  static const char *const methods[] = {"add", "slowDouble", "fail", NULL};
  char kref[32] = "";
  CHECK(ocap_host_register_service(h, "calc", methods, calc, s, kref, sizeof kref) == 0);
  CHECK(strncmp(kref, "ko", 2) == 0);
  CHECK(ocap_host_launch_file(h, EXAMPLE "/cluster.lua", on_result, s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s->results == 1 && s->ok);
  const char *k = strstr(s->text, "\"rootKref\":\"");
  CHECK(k != NULL && sscanf(k + 12, "%31[^\"]", root) == 1);
  s->results = 0;
  *fails_out += fails;
  return h;
}

static int test_bad_handles(void) {
  int fails = 0;
  static const char *const methods[] = {"m", NULL};
  CHECK(ocap_host_new(NULL, NULL, NULL) == OCAP_EINVAL);
  CHECK(ocap_host_run(NULL) == OCAP_EINVAL);
  CHECK(ocap_host_attach_loop(NULL, NULL) == OCAP_EINVAL);
  CHECK(ocap_host_register_service(NULL, "x", methods, calc, NULL, NULL, 0) == OCAP_EINVAL);
  CHECK(ocap_host_launch_file(NULL, "x", NULL, NULL) == OCAP_EINVAL);
  CHECK(ocap_host_run_script(NULL, "x") == OCAP_EINVAL);
  CHECK(ocap_host_queue_message(NULL, "ko1", "m", "[]", NULL, NULL) == OCAP_EINVAL);
  CHECK(ocap_reply_resolve(NULL, "1") == OCAP_EINVAL);
  CHECK(ocap_reply_reject(NULL, "no") == OCAP_EINVAL);
  ocap_host_free(NULL);
  CHECK(strcmp(ocap_strerror(OCAP_ESCRIPT), "Lua code failed") == 0);
  CHECK(strcmp(ocap_strerror(OCAP_ESTOPPED), "host is stopped") == 0);
  return fails;
}

/* A database directory that cannot be made is an error with a message. */
static int test_bad_database(void) {
  int fails = 0;
  ocap_host_options_t opts = {.database = "/proc/no/such/dir", .logger = quiet};
  ocap_host_t *h = (ocap_host_t *)&opts;
  char *err = NULL;
  CHECK(ocap_host_new(&opts, &h, &err) < 0);
  CHECK(h == NULL);
  CHECK(err != NULL && strstr(err, "Kernel.make") != NULL);
  free(err);
  return fails;
}

static int test_messages(void) {
  int fails = 0;
  seen_t s;
  ocap_host_t *h = make_host(&s, &fails);
  if (h == NULL)
    return fails;
  /* A C service that answers at once. */
  CHECK(ocap_host_queue_message(h, root, "sum", "[2, 3]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 1 && s.ok && strcmp(s.text, "{\"by\":\"C\",\"total\":5}") == 0);
  /* A C service that fails. */
  CHECK(ocap_host_queue_message(h, root, "broken", "[]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 2 && !s.ok && strstr(s.text, "calc: this method always fails") != NULL);
  /* A C service that answers later: nothing until the reply is given. */
  CHECK(ocap_host_queue_message(h, root, "later", "[21]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 2 && s.held != NULL);
  CHECK(ocap_reply_resolve(s.held, "42") == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 3 && s.ok && strcmp(s.text, "42") == 0);
  /* A reply that is not JSON: an error for the service and the caller. */
  s.held = NULL;
  CHECK(ocap_host_queue_message(h, root, "later", "[1]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(ocap_reply_resolve(s.held, "{not json") == OCAP_EINVAL);
  CHECK(strstr(ocap_host_errmsg(h), "invalid JSON") != NULL);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 4 && !s.ok && strstr(s.text, "invalid JSON") != NULL);
  ocap_host_free(h);
  return fails;
}

static int test_bad_input(void) {
  int fails = 0;
  seen_t s;
  ocap_host_t *h = make_host(&s, &fails);
  if (h == NULL)
    return fails;
  CHECK(ocap_host_queue_message(h, root, "sum", "[2,", on_result, &s) == OCAP_EINVAL);
  CHECK(strstr(ocap_host_errmsg(h), "invalid JSON") != NULL);
  CHECK(ocap_host_queue_message(h, root, "sum", "{\"a\":1}", on_result, &s) == OCAP_EINVAL);
  CHECK(strstr(ocap_host_errmsg(h), "JSON array") != NULL);
  CHECK(ocap_host_queue_message(h, "nonsense", "sum", "[]", on_result, &s) == OCAP_ENOTFOUND);
  CHECK(ocap_host_queue_message(h, root, NULL, "[]", on_result, &s) == OCAP_EINVAL);
  /* A well-formed kref the kernel does not know. */
  CHECK(ocap_host_queue_message(h, "ko999999", "sum", "[]", on_result, &s) == OCAP_ENOTFOUND);
  CHECK(strstr(ocap_host_errmsg(h), "unknown kref \"ko999999\"") != NULL);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 0);
  /* Config files and scripts that fail. */
  CHECK(ocap_host_launch_file(h, EXAMPLE "/no-such.lua", NULL, NULL) == OCAP_ESCRIPT);
  CHECK(strstr(ocap_host_errmsg(h), "no-such.lua") != NULL);
  CHECK(ocap_host_run_script(h, EXAMPLE "/no-such.lua") == OCAP_ESCRIPT);
  static const char *const methods[] = {"m", NULL};
  CHECK(ocap_host_register_service(h, "calc", methods, calc, &s, NULL, 0) == OCAP_EINVAL);
  CHECK(strstr(ocap_host_errmsg(h), "already registered") != NULL);
  ocap_host_free(h);
  return fails;
}

/* Freeing a host with messages queued and a reply outstanding: no
 * callback runs afterwards, and the late reply is only freed. */
static int test_free_in_flight(void) {
  int fails = 0;
  seen_t s;
  ocap_host_t *h = make_host(&s, &fails);
  if (h == NULL)
    return fails;
  CHECK(ocap_host_queue_message(h, root, "later", "[5]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.held != NULL);
  CHECK(ocap_host_queue_message(h, root, "sum", "[1,1]", on_result, &s) == 0);
  CHECK(ocap_host_queue_message(h, root, "sum", "[1,2]", on_result, &s) == 0);
  ocap_host_free(h);
  CHECK(s.results == 0);
  CHECK(ocap_reply_resolve(s.held, "10") == OCAP_ESTOPPED);
  CHECK(s.results == 0);
  return fails;
}

/* A host freed from inside its own result callback: the callback returns,
 * the free happens, and the second result is never delivered. */
static int test_free_in_callback(void) {
  int fails = 0;
  seen_t s;
  ocap_host_t *h = make_host(&s, &fails);
  if (h == NULL)
    return fails;
  s.free_in_cb = 1;
  CHECK(ocap_host_queue_message(h, root, "sum", "[1,1]", on_result, &s) == 0);
  CHECK(ocap_host_queue_message(h, root, "sum", "[1,2]", on_result, &s) == 0);
  ocap_host_run(h); /* frees h on its way out */
  CHECK(s.results == 1 && s.ok && strstr(s.text, "\"total\":2") != NULL);
  return fails;
}

/* A Lua host script gets the kernel and can use it. */
static int test_script(void) {
  int fails = 0;
  seen_t s;
  ocap_host_t *h = make_host(&s, &fails);
  if (h == NULL)
    return fails;
  char path[] = "/tmp/ocap-embed-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fprintf(f,
          "local kernel = ...\n"
          "local r = kernel:queueMessage('%s', 'sum', { 4, 5 }):await()\n"
          "assert(r.total == 9, 'total ' .. tostring(r.total))\n"
          "error('script ran to the end')\n",
          root);
  fclose(f);
  CHECK(ocap_host_run_script(h, path) == OCAP_ESCRIPT);
  CHECK(strstr(ocap_host_errmsg(h), "script ran to the end") != NULL);
  CHECK(s.calls == 1);
  remove(path);
  ocap_host_free(h);
  return fails;
}

/* Completes the reply held by the service from a timer of the host's loop. */
static void answer_later(uv_timer_t *t) {
  seen_t *s = t->data;
  ocap_reply_resolve(s->held, "42");
  s->held = NULL;
  uv_close((uv_handle_t *)t, NULL);
}

/* A kernel attached to the host's own loop: uv_run returns once the
 * kernel is idle, a reply completed from a loop timer wakes it, and a
 * host freed from its callback closes its handles, so the loop closes. */
static int test_attached(void) {
  int fails = 0;
  seen_t s;
  ocap_host_t *h = make_host(&s, &fails);
  if (h == NULL)
    return fails;
  uv_loop_t loop;
  CHECK(uv_loop_init(&loop) == 0);
  CHECK(ocap_host_attach_loop(h, &loop) == 0);
  CHECK(ocap_host_attach_loop(h, &loop) == OCAP_EINVAL);
  CHECK(ocap_host_queue_message(h, root, "sum", "[20,22]", on_result, &s) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(s.results == 1 && s.ok && strstr(s.text, "\"total\":42") != NULL);
  CHECK(ocap_host_queue_message(h, root, "later", "[21]", on_result, &s) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(s.results == 1 && s.held != NULL);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = &s;
  uv_timer_start(&t, answer_later, 1, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(s.results == 2 && s.ok && strcmp(s.text, "42") == 0);
  s.free_in_cb = 1;
  CHECK(ocap_host_queue_message(h, root, "sum", "[1,1]", on_result, &s) == 0);
  CHECK(ocap_host_queue_message(h, root, "sum", "[1,2]", on_result, &s) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(s.results == 3);
  CHECK(uv_loop_close(&loop) == 0);
  return fails;
}

/* Writes text to dir/name. */
static void write_file(const char *dir, const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

/* A vat timer on an attached kernel: the host loop wakes the kernel when
 * the kernel's own loop is due (its backend descriptor and timeout), so
 * uv_run does not return before the timer's result arrives. */
static int test_attached_vat_timer(void) {
  int fails = 0;
  char dir[] = "/tmp/ocap-embed-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  write_file(dir, "sleeper.lua",
             "local ocap = require 'ocap'\n"
             "return { buildRootObject = function()\n"
             "  return ocap.makeDefaultExo('sleeper', {\n"
             "    sleep = function(_, ms)\n"
             "      local kit = ocap.makePromiseKit()\n"
             "      setTimeout(function() kit.resolve('woke') end, ms)\n"
             "      return kit.promise\n"
             "    end,\n"
             "  })\n"
             "end }\n");
  write_file(dir, "sleeper-cluster.lua",
             "return { bootstrap = 's', vats = { s = { sourceSpec = 'sleeper.lua',\n"
             "  globals = { 'setTimeout' } } } }\n");
  ocap_host_options_t opts = {.base_dir = dir, .logger = quiet};
  ocap_host_t *h = NULL;
  CHECK(ocap_host_new(&opts, &h, NULL) == 0);
  if (h == NULL)
    return fails;
  seen_t s = {.host = h};
  uv_loop_t loop;
  CHECK(uv_loop_init(&loop) == 0);
  CHECK(ocap_host_attach_loop(h, &loop) == 0);
  char config[600];
  snprintf(config, sizeof config, "%s/sleeper-cluster.lua", dir);
  CHECK(ocap_host_launch_file(h, config, on_result, &s) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(s.results == 1 && s.ok);
  const char *k = strstr(s.text, "\"rootKref\":\"");
  char sleeper[32] = "";
  CHECK(k != NULL && sscanf(k + 12, "%31[^\"]", sleeper) == 1);
  CHECK(ocap_host_queue_message(h, sleeper, "sleep", "[30]", on_result, &s) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(s.results == 2 && s.ok && strcmp(s.text, "\"woke\"") == 0);
  ocap_host_free(h);
  uv_run(&loop, UV_RUN_DEFAULT); /* the handles' close callbacks */
  CHECK(uv_loop_close(&loop) == 0);
  snprintf(config, sizeof config, "%s/sleeper.lua", dir);
  remove(config);
  snprintf(config, sizeof config, "%s/sleeper-cluster.lua", dir);
  remove(config);
  rmdir(dir);
  return fails;
}

int main(void) {
  int fails = 0;
  fails += test_bad_handles();
  fails += test_bad_database();
  fails += test_messages();
  fails += test_bad_input();
  fails += test_free_in_flight();
  fails += test_free_in_callback();
  fails += test_script();
  fails += test_attached();
  fails += test_attached_vat_timer();
  if (fails) {
    fprintf(stderr, "test_embed: %d failure(s)\n", fails);
    return 1;
  }
  printf("test_embed: ok\n");
  return 0;
}
