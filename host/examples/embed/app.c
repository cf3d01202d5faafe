/*
 * app.c -- embedding ocap in a C program with its own libuv loop.
 *
 * It makes an in-memory kernel attached to the program's loop, registers a
 * kernel service written in C (`calc`: add answers at once, slowDouble
 * answers from a libuv timer, fail rejects), launches the subcluster of
 * cluster.lua whose vat calls it, and prints what comes back, while a
 * repeating libuv timer of its own keeps ticking alongside.
 *
 *   cc app.c $(pkg-config --cflags --libs ocap) -o app && ./app DIR
 *
 * DIR is the directory holding cluster.lua and adder-vat.lua.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ocap.h>
#include <uv.h>

static ocap_host_t *host;
static uv_timer_t ticker;
static int ticks, pending;
static char root[32];
static char results[3][256]; /* printed in order once all are in */
static const char *const names[3] = {"sum(2, 3)", "later(21)", "broken()"};

/* A reply the slowDouble method owes, answered from a one-shot timer. */
typedef struct later {
  uv_timer_t timer;
  ocap_reply_t *reply;
  long n;
} later_t;

static void later_closed(uv_handle_t *h) {
  free(h->data);
}

static void later_fire(uv_timer_t *t) {
  later_t *l = t->data;
  char out[32];
  snprintf(out, sizeof out, "%ld", l->n * 2);
  ocap_reply_resolve(l->reply, out);
  uv_close((uv_handle_t *)&l->timer, later_closed);
}

/* The C service: args is a JSON array such as [2,3]. */
static void calc(void *ud, const char *method, const char *args, ocap_reply_t *reply) {
  long a = 0, b = 0;
  sscanf(args, "[%ld,%ld]", &a, &b);
  if (strcmp(method, "add") == 0) {
    char out[32];
    snprintf(out, sizeof out, "%ld", a + b);
    ocap_reply_resolve(reply, out);
  } else if (strcmp(method, "slowDouble") == 0) {
    later_t *l = malloc(sizeof *l);
    l->reply = reply;
    l->n = a;
    uv_timer_init(ud, &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, later_fire, 20, 0);
  } else {
    ocap_reply_reject(reply, "calc: this method always fails");
  }
}

static void done(void) {
  if (--pending == 0) {
    uv_timer_stop(&ticker);
    uv_close((uv_handle_t *)&ticker, NULL);
    for (int i = 0; i < 3; i++)
      printf("%s -> %s\n", names[i], results[i]);
    printf("ticker fired alongside: %s\n", ticks > 0 ? "yes" : "no");
    ocap_host_free(host);
  }
}

static void print_result(void *ud, int ok, const char *text) {
  snprintf(results[(int)(long)ud], sizeof results[0], "%s %s", ok ? "ok" : "error", text);
  done();
}

static void launched(void *ud, int ok, const char *text) {
  if (!ok) {
    fprintf(stderr, "launch failed: %s\n", text);
    exit(1);
  }
  /* text is {"bootstrapResult":..,"rootKref":"ko..","subclusterId":..} */
  const char *k = strstr(text, "\"rootKref\":\"");
  if (k == NULL || sscanf(k + 12, "%31[^\"]", root) != 1) {
    fprintf(stderr, "no root kref in %s\n", text);
    exit(1);
  }
  printf("launched\n");
  pending = 3;
  ocap_host_queue_message(host, root, "sum", "[2,3]", print_result, (void *)0L);
  ocap_host_queue_message(host, root, "later", "[21]", print_result, (void *)1L);
  ocap_host_queue_message(host, root, "broken", "[]", print_result, (void *)2L);
}

static void tick(uv_timer_t *t) {
  ticks++;
}

static void quiet(void *ud, const char *entry) {}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  uv_loop_t *loop = uv_default_loop();
  ocap_host_options_t opts = {.base_dir = dir, .logger = quiet};
  char *err = NULL;
  int rc = ocap_host_new(&opts, &host, &err);
  if (rc != 0) {
    fprintf(stderr, "ocap_host_new: %s: %s\n", ocap_strerror(rc), err ? err : "");
    free(err);
    return 1;
  }
  static const char *const methods[] = {"add", "slowDouble", "fail", NULL};
  rc = ocap_host_register_service(host, "calc", methods, calc, loop, NULL, 0);
  if (rc == 0)
    rc = ocap_host_attach_loop(host, loop);
  char config[4096];
  snprintf(config, sizeof config, "%s/cluster.lua", dir);
  if (rc == 0)
    rc = ocap_host_launch_file(host, config, launched, NULL);
  if (rc != 0) {
    fprintf(stderr, "ocap: %s: %s\n", ocap_strerror(rc), ocap_host_errmsg(host));
    ocap_host_free(host);
    return 1;
  }
  uv_timer_init(loop, &ticker);
  uv_timer_start(&ticker, tick, 1, 1);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return 0;
}
