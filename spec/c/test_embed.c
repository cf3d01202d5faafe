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

#include "check.h"

/* What the service and the result callbacks saw. */
typedef struct seen {
  ocap_host_t *host;
  ocap_reply_t *held;  /* a reply the service keeps for later */
  int calls;           /* service calls */
  int results;         /* result callbacks */
  int ok;              /* ok of the last result */
  char text[512];      /* text of the last result */
  int free_in_cb;      /* the result callback frees the host */
  int rc;              /* what the service's last ocap_reply_* returned */
  int logs;            /* log entries seen by log_and_free */
  int free_in_service; /* the service frees the host, then answers */
  int after_free;      /* what a call made after that free returned */
  int capdata;         /* the keeper answers take with capdata... */
  char answer[256];    /* ...this one, or else what it was given */
  char given[512];     /* the arguments of the keeper's last take */
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

/* The relay vat: it makes objects, calls what it is given, and calls the
 * host's keeper service. */
static const char relay_vat[] =
    "local ocap = require 'ocap'\n"
    "local E = ocap.E\n"
    "return { buildRootObject = function(vatPowers)\n"
    "  local keeper\n"
    "  return ocap.makeDefaultExo('relay', {\n"
    "    bootstrap = function(_, _vats, services) keeper = services.keeper end,\n"
    "    make = function(_) return ocap.makeDefaultExo('thing', {\n"
    "      hi = function(_, who) return 'hi ' .. tostring(who) .. ' from thing' end }) end,\n"
    "    call = function(_, target, method, ...) return E(target)[method](...):await() end,\n"
    "    viaKeeper = function(_, method)\n"
    "      local t = E(keeper)[method]():await()\n"
    "      return E(t).hi('keeper'):await()\n"
    "    end,\n"
    "    tell = function(_, v) return E(keeper).take(v):await() end,\n"
    "    say = function(_, msg) vatPowers.logger:log(msg) return msg end,\n"
    "  })\n"
    "end }\n";

/* The keeper service: give answers with the reference held in s->text,
 * take with the arguments it was given, bad with a kref nobody has. With
 * free_in_service it first frees the host. */
static void keeper(void *ud, const char *method, const char *args, ocap_reply_t *reply) {
  seen_t *s = ud;
  s->calls++;
  if (s->free_in_service) {
    ocap_host_free(s->host);
    s->after_free = ocap_host_queue_message(s->host, "ko1", "m", "[]", on_result, s);
  }
  if (strcmp(method, "give") == 0) {
    char out[sizeof s->text + 16];
    snprintf(out, sizeof out, "{\"@kref\":\"%s\"}", s->text);
    s->rc = ocap_reply_resolve(reply, out);
  } else if (strcmp(method, "take") == 0) {
    snprintf(s->given, sizeof s->given, "%s", args);
    if (s->capdata)
      s->rc = ocap_reply_resolve_capdata(reply, s->answer[0] ? s->answer : args);
    else
      s->rc = ocap_reply_resolve(reply, args);
  } else {
    s->rc = ocap_reply_resolve(reply, "{\"@kref\":\"ko999999\"}");
  }
}

/* Counts log entries and frees the host on the first that says "bye". */
static void log_and_free(void *ud, const char *entry) {
  seen_t *s = ud;
  s->logs++;
  if (strstr(entry, "\"bye\"") != NULL)
    ocap_host_free(s->host);
}

/* A host with the keeper service (speaking capdata when capdata) and the
 * relay vat launched from a temporary directory dir (mkdtemp'd by the
 * caller); relay gets the vat's root kref. */
static ocap_host_t *make_relay_host_as(seen_t *s, const char *dir, char *relay, int capdata,
                                       int *fails_out) {
  int fails = 0;
  write_file(dir, "relay.lua", relay_vat);
  write_file(dir, "relay-cluster.lua",
             "return { bootstrap = 'relay', services = { 'keeper' },\n"
             "  vats = { relay = { sourceSpec = 'relay.lua' } } }\n");
  memset(s, 0, sizeof *s);
  ocap_host_options_t opts = {.base_dir = dir, .logger = log_and_free, .logger_ud = s};
  ocap_host_t *h = NULL;
  CHECK(ocap_host_new(&opts, &h, NULL) == 0);
  if (h == NULL) {
    *fails_out += fails;
    return NULL;
  }
  s->host = h;
  static const char *const methods[] = {"give", "take", "bad", NULL};
  if (capdata)
    CHECK(ocap_host_register_service_capdata(h, "keeper", methods, keeper, s, NULL, 0) == 0);
  else
    CHECK(ocap_host_register_service(h, "keeper", methods, keeper, s, NULL, 0) == 0);
  char config[600];
  snprintf(config, sizeof config, "%s/relay-cluster.lua", dir);
  CHECK(ocap_host_launch_file(h, config, on_result, s) == 0);
  CHECK(ocap_host_run(h) == 0);
  const char *k = strstr(s->text, "\"rootKref\":\"");
  CHECK(s->ok && k != NULL && sscanf(k + 12, "%31[^\"]", relay) == 1);
  s->results = 0;
  *fails_out += fails;
  return h;
}

static ocap_host_t *make_relay_host(seen_t *s, const char *dir, char *relay, int *fails_out) {
  return make_relay_host_as(s, dir, relay, 0, fails_out);
}

static void remove_relay(const char *dir) {
  char path[600];
  snprintf(path, sizeof path, "%s/relay.lua", dir);
  remove(path);
  snprintf(path, sizeof path, "%s/relay-cluster.lua", dir);
  remove(path);
  rmdir(dir);
}

/* References cross the boundary both ways as {"@kref":..}: in message
 * arguments, in results, and in what a C service answers. */
static int test_references(void) {
  int fails = 0;
  char dir[] = "/tmp/ocap-embed-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  seen_t s;
  char relay[32] = "", thing[32] = "", args[128];
  ocap_host_t *h = make_relay_host(&s, dir, relay, &fails);
  if (h == NULL)
    return fails;
  /* A result that is an object is its kref. */
  CHECK(ocap_host_queue_message(h, relay, "make", "[]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 1 && s.ok && sscanf(s.text, "{\"@kref\":\"%31[^\"]\"}", thing) == 1);
  /* An argument that is a kref reaches the vat as that object. */
  snprintf(args, sizeof args, "[{\"@kref\":\"%s\"},\"hi\",\"C\"]", thing);
  CHECK(ocap_host_queue_message(h, relay, "call", args, on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 2 && s.ok && strcmp(s.text, "\"hi C from thing\"") == 0);
  /* So does a C service's answer... */
  snprintf(s.text, sizeof s.text, "%s", thing);
  CHECK(ocap_host_queue_message(h, relay, "viaKeeper", "[\"give\"]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.rc == 0);
  CHECK(s.results == 3 && s.ok && strcmp(s.text, "\"hi keeper from thing\"") == 0);
  /* ...and a service is given references as krefs, nested too. */
  snprintf(args, sizeof args, "[{\"in\":[{\"@kref\":\"%s\"}]}]", thing);
  CHECK(ocap_host_queue_message(h, relay, "tell", args, on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  snprintf(args, sizeof args, "[{\"in\":[{\"@kref\":\"%s\"}]}]", thing);
  CHECK(s.results == 4 && s.ok && strcmp(s.text, args) == 0);
  /* A kref the kernel does not know, in the arguments: nothing queued. */
  CHECK(ocap_host_queue_message(h, relay, "call", "[{\"@kref\":\"ko999999\"},\"hi\"]", on_result,
                                &s) == OCAP_ENOTFOUND);
  CHECK(strstr(ocap_host_errmsg(h), "unknown kref \"ko999999\"") != NULL);
  CHECK(ocap_host_queue_message(h, relay, "call", "[{\"@kref\":7}]", on_result, &s) == OCAP_EINVAL);
  /* A reference is not an argument list. */
  snprintf(args, sizeof args, "{\"@kref\":\"%s\"}", thing);
  CHECK(ocap_host_queue_message(h, relay, "call", args, on_result, &s) == OCAP_EINVAL);
  CHECK(strstr(ocap_host_errmsg(h), "JSON array") != NULL);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 4);
  /* ...in a service's answer: the service gets OCAP_EINVAL, the caller
   * an error. */
  CHECK(ocap_host_queue_message(h, relay, "viaKeeper", "[\"bad\"]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.rc == OCAP_EINVAL);
  CHECK(s.results == 5 && !s.ok && strstr(s.text, "service result: unknown kref") != NULL);
  ocap_host_free(h);
  remove_relay(dir);
  return fails;
}

/* Capdata instead of JSON: references as slots, both ways, and capdata
 * that does not decode. */
static int test_capdata(void) {
  int fails = 0;
  char dir[] = "/tmp/ocap-embed-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  seen_t s;
  char relay[32] = "", thing[32] = "", args[256], want[256];
  ocap_host_t *h = make_relay_host_as(&s, dir, relay, 1, &fails);
  if (h == NULL)
    return fails;
  s.capdata = 1;
  CHECK(ocap_host_queue_message_capdata(h, relay, "make", "{\"body\":\"#[]\",\"slots\":[]}",
                                        on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 1 && s.ok &&
        sscanf(s.text, "{\"body\":\"#\\\"$0.Alleged: thing\\\"\",\"slots\":[\"%31[^\"]\"]}",
               thing) == 1);
  snprintf(args, sizeof args,
           "{\"body\":\"#[\\\"$0.Alleged: thing\\\",\\\"hi\\\",\\\"C\\\"]\",\"slots\":[\"%s\"]}",
           thing);
  CHECK(ocap_host_queue_message_capdata(h, relay, "call", args, on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 2 && s.ok &&
        strcmp(s.text, "{\"body\":\"#\\\"hi C from thing\\\"\",\"slots\":[]}") == 0);
  /* A capdata service gets its arguments as capdata and answers so. */
  snprintf(args, sizeof args, "{\"body\":\"#[[\\\"$0.Alleged: thing\\\",7]]\",\"slots\":[\"%s\"]}",
           thing);
  CHECK(ocap_host_queue_message_capdata(h, relay, "tell", args, on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  snprintf(want, sizeof want, "{\"body\":\"#[[\\\"$0.Alleged: thing\\\",7]]\",\"slots\":[\"%s\"]}",
           thing);
  CHECK(strcmp(s.given, want) == 0);
  CHECK(s.rc == 0 && s.results == 3 && s.ok && strcmp(s.text, want) == 0);
  /* Capdata that does not decode. */
  CHECK(ocap_host_queue_message_capdata(h, relay, "call", "[1]", on_result, &s) == OCAP_EINVAL);
  CHECK(strstr(ocap_host_errmsg(h), "capdata must be") != NULL);
  CHECK(ocap_host_queue_message_capdata(h, relay, "call", "{\"body\":\"#[\",\"slots\":[]}",
                                        on_result, &s) == OCAP_EINVAL);
  CHECK(strstr(ocap_host_errmsg(h), "invalid capdata") != NULL);
  CHECK(ocap_host_queue_message_capdata(h, relay, "call", "{\"body\":\"#{}\",\"slots\":[]}",
                                        on_result, &s) == OCAP_EINVAL);
  CHECK(strstr(ocap_host_errmsg(h), "must be an array") != NULL);
  CHECK(ocap_host_queue_message_capdata(
            h, relay, "call", "{\"body\":\"#[\\\"$0.Alleged: x\\\"]\",\"slots\":[\"ko999999\"]}",
            on_result, &s) == OCAP_ENOTFOUND);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 3);
  /* ...in a service's answer. */
  snprintf(s.answer, sizeof s.answer, "{\"body\":\"#[\",\"slots\":[]}");
  CHECK(ocap_host_queue_message_capdata(h, relay, "tell", "{\"body\":\"#[1]\",\"slots\":[]}",
                                        on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.rc == OCAP_EINVAL);
  CHECK(s.results == 4 && !s.ok && strstr(s.text, "service result: invalid capdata") != NULL);
  ocap_host_free(h);
  remove_relay(dir);
  return fails;
}

/* A host freed from inside a C service method: the method's reply is
 * then only freed, and no callback runs afterwards. */
static int test_free_in_service(void) {
  int fails = 0;
  char dir[] = "/tmp/ocap-embed-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  seen_t s;
  char relay[32] = "";
  ocap_host_t *h = make_relay_host(&s, dir, relay, &fails);
  if (h == NULL)
    return fails;
  s.free_in_service = 1;
  CHECK(ocap_host_queue_message(h, relay, "tell", "[1]", on_result, &s) == 0);
  CHECK(ocap_host_queue_message(h, relay, "tell", "[2]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0); /* frees h on its way out */
  CHECK(s.calls == 1 && s.rc == OCAP_ESTOPPED && s.after_free == OCAP_ESTOPPED);
  CHECK(s.results == 0);
  remove_relay(dir);
  return fails;
}

/* A host freed from inside its logger: no log entry and no result
 * reaches the host afterwards. */
static int test_free_in_logger(void) {
  int fails = 0;
  char dir[] = "/tmp/ocap-embed-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  seen_t s;
  char relay[32] = "";
  ocap_host_t *h = make_relay_host(&s, dir, relay, &fails);
  if (h == NULL)
    return fails;
  CHECK(ocap_host_queue_message(h, relay, "say", "[\"hello\"]", on_result, &s) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(s.results == 1 && s.ok);
  int logs = s.logs;
  CHECK(logs > 0);
  CHECK(ocap_host_queue_message(h, relay, "say", "[\"bye\"]", on_result, &s) == 0);
  CHECK(ocap_host_queue_message(h, relay, "say", "[\"never\"]", on_result, &s) == 0);
  ocap_host_run(h); /* frees h on its way out */
  CHECK(s.logs == logs + 1 && s.results == 1);
  remove_relay(dir);
  return fails;
}

/* Calls made from inside a result callback: a message queued there runs,
 * and a nested ocap_host_run is refused with OCAP_ESCRIPT, not a crash. */
typedef struct chain {
  seen_t *s;
  int nested_rc;
  char nested_msg[256];
  int step;
} chain_t;

static void chained(void *ud, int ok, const char *text) {
  chain_t *c = ud;
  c->step++;
  snprintf(c->s->text, sizeof c->s->text, "%s", text);
  if (c->step == 1) {
    c->nested_rc = ocap_host_run(c->s->host);
    snprintf(c->nested_msg, sizeof c->nested_msg, "%s", ocap_host_errmsg(c->s->host));
    ocap_host_queue_message(c->s->host, root, "sum", "[10,20]", chained, c);
  }
}

static int test_reentrant(void) {
  int fails = 0;
  seen_t s;
  ocap_host_t *h = make_host(&s, &fails);
  if (h == NULL)
    return fails;
  chain_t c = {.s = &s, .nested_rc = 1};
  CHECK(ocap_host_queue_message(h, root, "sum", "[1,2]", chained, &c) == 0);
  CHECK(ocap_host_run(h) == 0);
  CHECK(c.step == 2 && strstr(s.text, "\"total\":30") != NULL);
  /* Result callbacks run inside the crank that settled the result. */
  CHECK(c.nested_rc == OCAP_ESCRIPT && strstr(c.nested_msg, "while a crank is running") != NULL);
  ocap_host_free(h);
  return fails;
}

/* Counts the host loop's turns (a check handle runs once per turn). */
typedef struct turns {
  uv_check_t check;
  int turns;
} turns_t;

static void count_turn(uv_check_t *c) {
  ((turns_t *)c->data)->turns++;
}

static void stop_counting(void *ud, int ok, const char *text) {
  turns_t *t = ud;
  seen_t *s = t->check.loop->data;
  s->results++;
  s->ok = ok;
  snprintf(s->text, sizeof s->text, "%s", text);
  uv_close((uv_handle_t *)&t->check, NULL);
}

/* An attached kernel runs long work in bounded batches: the host loop
 * turns (its check handle runs) many times before the result arrives. */
static int test_attached_batches(void) {
  int fails = 0;
  char dir[] = "/tmp/ocap-embed-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  write_file(dir, "loop-cluster.lua",
             "return { bootstrap = 'looper', vats = {\n"
             "  looper = { sourceSpec = '" OCAP_SOURCE_DIR "/spec/vats/looper.lua',\n"
             "    globals = { 'setTimeout' } },\n"
             "  echo = { sourceSpec = '" OCAP_SOURCE_DIR "/spec/vats/echo.lua' } } }\n");
  ocap_host_options_t opts = {.base_dir = dir, .logger = quiet};
  ocap_host_t *h = NULL;
  CHECK(ocap_host_new(&opts, &h, NULL) == 0);
  if (h == NULL)
    return fails;
  seen_t s = {.host = h};
  uv_loop_t loop;
  CHECK(uv_loop_init(&loop) == 0);
  loop.data = &s;
  CHECK(ocap_host_attach_loop(h, &loop) == 0);
  char config[600];
  snprintf(config, sizeof config, "%s/loop-cluster.lua", dir);
  CHECK(ocap_host_launch_file(h, config, on_result, &s) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  const char *k = strstr(s.text, "\"rootKref\":\"");
  char looper[32] = "";
  CHECK(s.ok && k != NULL && sscanf(k + 12, "%31[^\"]", looper) == 1);
  turns_t t = {0};
  uv_check_init(&loop, &t.check);
  t.check.data = &t;
  uv_check_start(&t.check, count_turn);
  /* 400 round trips to the echo vat: 800 cranks, 64 at most per batch. */
  CHECK(ocap_host_queue_message(h, looper, "relay", "[400]", stop_counting, &t) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(s.ok && strcmp(s.text, "400") == 0);
  CHECK(t.turns >= 800 / 64 - 1);
  ocap_host_free(h);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
  remove(config);
  rmdir(dir);
  return fails;
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
  fails += test_attached_batches();
  fails += test_references();
  fails += test_capdata();
  fails += test_free_in_service();
  fails += test_free_in_logger();
  fails += test_reentrant();
  if (fails) {
    fprintf(stderr, "test_embed: %d failure(s)\n", fails);
    return 1;
  }
  printf("test_embed: ok\n");
  return 0;
}
