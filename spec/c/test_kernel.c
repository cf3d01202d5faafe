/*
 * test_kernel.c -- unit tests for the kernel (core/kernel.h) on the in-memory store,
 * with endpoints played by a deliver hook that records what it is told.
 *
 * They check what the Lua specs cannot reach: that every store call the
 * kernel makes is checked (a fault injected into any one of them fails the
 * crank and leaves the store as it was), that stored values are read whole
 * and corrupt ones are reported by key, and that terminating a vat scans
 * its store in linear time (counted in scan steps, never timed).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel.h"
#include "kstate.h"

static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

#define REQUIRE(cond)                                                                              \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);                   \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

/* ---- a recording endpoint hook ------------------------------------------- */

#define LOG_MAX 4096
#define LINE_MAX_ 96

/*
 * What endpoints were told, one line per delivery ("v3 notify" or "v1 msg
 * #..."). Lines of the crank in progress are pending until the test sees
 * the crank succeed, since a failed crank is rolled back and runs again.
 */
typedef struct record {
  char lines[LOG_MAX][LINE_MAX_];
  int n, pending;
} record_t;

static int hook_deliver(void *ud, const char *ep, const ocap_delivery_t *d, int *fatal,
                        char **why) {
  record_t *r = ud;
  (void)fatal;
  (void)why;
  REQUIRE(r->n + r->pending < LOG_MAX);
  char *line = r->lines[r->n + r->pending++];
  static const char *const gc_name[] = {"dropExports", "retireExports", "retireImports",
                                        "bringOutYourDead"};
  if (d->type == OCAP_DELIVER_NOTIFY)
    snprintf(line, LINE_MAX_, "%s notify %zu", ep, d->nresolutions);
  else if (d->type >= OCAP_DELIVER_DROP_EXPORTS)
    snprintf(line, LINE_MAX_, "%s %s%s%s", ep, gc_name[d->type - OCAP_DELIVER_DROP_EXPORTS],
             d->nvrefs ? " " : "", d->nvrefs ? d->vrefs[0] : "");
  else
    snprintf(line, LINE_MAX_, "%s msg %.*s", ep, (int)d->methargs.blen, d->methargs.body);
  return 0;
}

static ocap_kernel_t *new_kernel(record_t *r) {
  ocap_store_t *s = NULL;
  ocap_kernel_t *k = NULL;
  REQUIRE(ocap_store_open_memory(&s) == 0);
  ocap_kernel_hooks_t hooks = {.ud = r, .deliver = hook_deliver};
  REQUIRE(ocap_kernel_new(s, &hooks, &k) == 0);
  memset(r, 0, sizeof *r);
  return k;
}

/*
 * Opens a new kernel on k's store in place of k, as a restart would: the
 * kernel reads the tables it keeps in memory (the run queue, the id
 * counters) from the store at first use, so that is when a damaged value
 * written below it is found.
 */
static ocap_kernel_t *reopen(ocap_kernel_t *k, record_t *r) {
  ocap_store_t *s = ocap_kernel_store(k);
  ocap_kernel_free(k);
  ocap_kernel_hooks_t hooks = {.ud = r, .deliver = hook_deliver};
  REQUIRE(ocap_kernel_new(s, &hooks, &k) == 0);
  return k;
}

static void free_kernel(ocap_kernel_t *k) {
  ocap_store_t *s = ocap_kernel_store(k);
  ocap_kernel_free(k);
  ocap_store_close(s);
}

/* Reading or writing the store from outside the kernel comes after a sync
 * (kernel.h): the run queue is written there later than at each commit. */
static int put(ocap_kernel_t *k, const char *key, const char *val) {
  REQUIRE(ocap_kernel_sync(k) == 0);
  return ocap_store_set(ocap_kernel_store(k), key, strlen(key), val, strlen(val));
}

static char *dump_as_is(ocap_kernel_t *k);

/* Every key and value of the store, in order, then the run queue's length
 * as the kernel sees it in memory, as one malloc'd string. */
static char *dump(ocap_kernel_t *k) {
  REQUIRE(ocap_kernel_sync(k) == 0);
  return dump_as_is(k);
}

/* The same without a sync first: what the store holds now. */
static char *dump_as_is(ocap_kernel_t *k) {
  ocap_store_t *s = ocap_kernel_store(k);
  size_t cap = 1 << 16, len = 0;
  char *out = malloc(cap), last[256] = "";
  size_t lastlen = 0;
  const char *key, *val;
  size_t kl, vl;
  REQUIRE(out != NULL);
  while (ocap_store_next_key(s, "", 0, last, lastlen, 0, &key, &kl) == 1) {
    REQUIRE(kl < sizeof last);
    memcpy(last, key, kl);
    lastlen = kl;
    REQUIRE(ocap_store_get(s, last, lastlen, &val, &vl) == 1);
    while (len + kl + vl + 3 > cap) {
      cap *= 2;
      REQUIRE((out = realloc(out, cap)) != NULL);
    }
    memcpy(out + len, last, kl);
    len += kl;
    out[len++] = '=';
    memcpy(out + len, val, vl);
    len += vl;
    out[len++] = ';';
  }
  while (len + 32 > cap) {
    cap *= 2;
    REQUIRE((out = realloc(out, cap)) != NULL);
  }
  snprintf(out + len, cap - len, "#queue=%lld", ocap_kernel_queue_length(k));
  return out;
}

/*
 * Runs cranks until the queue is empty. With `faults`, each crank is first
 * run with a fault injected into its 1st store call, then its 2nd, and so
 * on: every run that meets its fault must fail and leave the store exactly
 * as before; the run whose fault comes too late succeeds. Returns the
 * number of failed runs.
 */
static int run(ocap_kernel_t *k, record_t *r, int faults) {
  ocap_store_t *s = ocap_kernel_store(k);
  int failed = 0;
  REQUIRE(ocap_store_commit(s) == 0);
  for (;;) {
    int rc = 0;
    for (long i = 1; faults; i++) {
      char *before = dump(k);
      ocap_store_inject_fault(s, OCAP_FAULT_ALL, i, OCAP_EIO);
      r->pending = 0;
      rc = ocap_kernel_step(k);
      int fired = ocap_store_inject_fault(s, 0, 0, 0) == 0;
      char *after = dump(k);
      if (fired) {
        /* The fault must fail the crank, which leaves nothing behind. */
        CHECK(rc == OCAP_EIO);
        CHECK(strcmp(before, after) == 0);
        if (ocap_kernel_check(k) != 0) {
          fprintf(stderr, "  fault %ld: %s\n", i, ocap_kernel_errmsg(k));
          failures++;
        }
        CHECK(ocap_kernel_failed(k) == 0);
        if (strstr(ocap_kernel_errmsg(k), "injected fault") == NULL) {
          fprintf(stderr, "  fault %ld: message %s\n", i, ocap_kernel_errmsg(k));
          failures++;
        }
        if (rc != OCAP_EIO || strcmp(before, after) != 0)
          fprintf(stderr, "  fault %ld: step returned %d (%s)\n", i, rc, ocap_kernel_errmsg(k));
        failed++;
      }
      free(before);
      free(after);
      if (!fired)
        break;
      if (rc >= 0) {
        r->n += r->pending;
        r->pending = 0;
        if (rc == 0)
          return failed;
        i = 0; /* it ran anyway (a failure went unnoticed): next crank */
      }
    }
    if (!faults) {
      r->pending = 0;
      rc = ocap_kernel_step(k);
    }
    REQUIRE(rc >= 0);
    r->n += r->pending;
    r->pending = 0;
    if (rc == 0)
      return failed;
  }
}

/* Runs one crank, keeping its log lines when it succeeds. */
static int step(ocap_kernel_t *k, record_t *r) {
  r->pending = 0;
  int rc = ocap_kernel_step(k);
  if (rc >= 0)
    r->n += r->pending;
  r->pending = 0;
  return rc;
}

/* How many log lines start with prefix. */
static int count_lines(const record_t *r, const char *prefix) {
  int n = 0;
  for (int i = 0; i < r->n; i++)
    n += strncmp(r->lines[i], prefix, strlen(prefix)) == 0;
  return n;
}

/* ---- scenarios ----------------------------------------------------------- */

/*
 * nvats vats subscribe to a promise the kernel decides; nmsgs messages wait
 * on it; it resolves to an object of v1, so the messages go to v1 and every
 * vat is told once.
 */
static void subscribers(int nvats, int nmsgs, int faults) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char kp[OCAP_REF_MAX], ko[OCAP_REF_MAX], eref[OCAP_REF_MAX], ep[16];
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  for (int i = 1; i <= nvats; i++) {
    snprintf(ep, sizeof ep, "v%d", i);
    REQUIRE(ocap_kernel_kref_to_eref(k, ep, kp, eref) == 0);
    REQUIRE(ocap_kernel_subscribe(k, ep, eref) == 0);
  }
  for (int i = 0; i < nmsgs; i++) {
    char body[32];
    snprintf(body, sizeof body, "#[\"m%d\",[]]", i);
    ocap_capdata_t args = {body, strlen(body), NULL, 0};
    REQUIRE(ocap_kernel_send(k, "kernel", kp, &args, NULL) == 0);
  }
  run(k, r, faults); /* the messages are parked on the promise */
  CHECK(r->n == 0);
  const char *slot = ko;
  ocap_resolution_t res = {kp, 0, {"#\"$0.Alleged: thing\"", 20, &slot, 1}};
  REQUIRE(ocap_kernel_resolve(k, "kernel", &res, 1) == 0);
  int failed = run(k, r, faults);
  CHECK(!faults || failed > 0);
  for (int i = 1; i <= nvats; i++) {
    char want[24];
    snprintf(want, sizeof want, "v%d notify", i);
    if (count_lines(r, want) != 1) {
      fprintf(stderr, "  %s: told %d times\n", want, count_lines(r, want));
      failures++;
    }
  }
  CHECK(count_lines(r, "v1 msg") == nmsgs);
  for (int i = 0, m = 0; i < r->n; i++) {
    char want[40];
    snprintf(want, sizeof want, "v1 msg #[\"m%d\",[]]", m);
    if (strncmp(r->lines[i], "v1 msg", 6) == 0)
      CHECK(strcmp(r->lines[i], want) == 0 && ++m);
  }
  CHECK(ocap_kernel_queue_length(k) == 0);
  free_kernel(k);
  free(r);
}

/* Terminating a vat deletes its store with work linear in its size: the
 * scan used to start over after every delete. */
static void terminate_linear(int n) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  ocap_store_t *s = ocap_kernel_store(k);
  char key[48], ko[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "vs.v1.entry.%d", i);
    REQUIRE(put(k, key, "x") == 0);
  }
  REQUIRE(put(k, "vs.v10.keep", "x") == 0 && put(k, "vs.v2.keep", "x") == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  unsigned long long steps = ocap_store_scan_steps(s);
  ocap_capdata_t reason = {"#\"gone\"", 7, NULL, 0};
  CHECK(ocap_kernel_terminate(k, "v1", &reason) == 0);
  CHECK(ocap_store_commit(s) == 0);
  steps = ocap_store_scan_steps(s) - steps;
  if (steps > 4 * (unsigned long long)n + 64) {
    fprintf(stderr, "  terminating a vat with %d entries took %llu scan steps\n", n, steps);
    failures++;
  }
  const char *k2;
  size_t kl;
  CHECK(ocap_store_next_key(s, "vs.v1.", 6, "", 0, 1, &k2, &kl) == 0);
  CHECK(ocap_store_get(s, "vs.v10.keep", 11, &k2, &kl) == 1); /* other vats keep theirs */
  CHECK(ocap_store_get(s, "vs.v2.keep", 10, &k2, &kl) == 1);
  free_kernel(k);
  free(r);
}

/*
 * A fault in any store call of a termination (a host call, outside a
 * crank) makes the call fail, and the next crank drops its half-done
 * writes: the vat is either wholly there or wholly gone.
 */
static void terminate_faults(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  ocap_store_t *s = ocap_kernel_store(k);
  char ko[OCAP_REF_MAX], kp[OCAP_REF_MAX], eref[OCAP_REF_MAX], key[48];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "p+1", kp) == 0); /* v1 decides it */
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", kp, eref) == 0);
  REQUIRE(ocap_kernel_subscribe(k, "v2", eref) == 0);
  for (int i = 0; i < 20; i++) {
    snprintf(key, sizeof key, "vs.v1.entry.%d", i);
    REQUIRE(put(k, key, "x") == 0);
  }
  REQUIRE(ocap_store_commit(s) == 0);
  ocap_capdata_t reason = {"#\"gone\"", 7, NULL, 0};
  int failed = 0;
  for (long i = 1;; i++) {
    char *before = dump(k);
    ocap_store_inject_fault(s, OCAP_FAULT_ALL, i, OCAP_EIO);
    int rc = ocap_kernel_terminate(k, "v1", &reason);
    int fired = ocap_store_inject_fault(s, 0, 0, 0) == 0;
    if (!fired) {
      CHECK(rc == 0);
      free(before);
      break;
    }
    failed++;
    CHECK(rc == OCAP_EIO && ocap_kernel_failed(k) == OCAP_EIO);
    CHECK(ocap_kernel_step(k) == OCAP_EIO); /* drops the half-done termination */
    char *after = dump(k);
    CHECK(strcmp(before, after) == 0);
    if (ocap_kernel_check(k) != 0) {
      fprintf(stderr, "  terminate fault %ld: %s\n", i, ocap_kernel_errmsg(k));
      failures++;
    }
    free(before);
    free(after);
  }
  CHECK(failed > 20);
  CHECK(run(k, r, 0) == 0);
  CHECK(r->n == 1 && strcmp(r->lines[0], "v2 notify 1") == 0); /* told v1 is gone */
  const char *k2;
  size_t kl;
  CHECK(ocap_store_next_key(s, "vs.v1.", 6, "", 0, 1, &k2, &kl) == 0);
  free_kernel(k);
  free(r);
}

/* Sets key to val, reopens the kernel, runs one crank, and checks it fails
 * with ECORRUPT and a message holding `mention`; then restores the old
 * value and reopens the kernel again. */
static ocap_kernel_t *corrupt_case(ocap_kernel_t *k, record_t *r, const char *key, const char *val,
                                   const char *mention) {
  ocap_store_t *s = ocap_kernel_store(k);
  const char *old;
  size_t ol;
  char *saved = NULL;
  REQUIRE(ocap_kernel_sync(k) == 0);
  if (ocap_store_get(s, key, strlen(key), &old, &ol) == 1) {
    REQUIRE((saved = malloc(ol + 1)) != NULL);
    memcpy(saved, old, ol);
    saved[ol] = '\0';
  }
  REQUIRE(put(k, key, val) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  k = reopen(k, r);
  int rc = ocap_kernel_step(k);
  const char *msg = ocap_kernel_errmsg(k);
  if (rc != OCAP_ECORRUPT || strstr(msg, mention) == NULL) {
    fprintf(stderr, "  %s = '%.40s': step returned %d, '%s'; want ECORRUPT and '%s'\n", key, val,
            rc, msg, mention);
    failures++;
  }
  CHECK(ocap_kernel_failed(k) == 0);
  REQUIRE(ocap_kernel_sync(k) == 0);
  if (saved)
    REQUIRE(put(k, key, saved) == 0);
  else
    REQUIRE(ocap_store_delete(s, key, strlen(key)) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  free(saved);
  return reopen(k, r);
}

/*
 * Values that cannot be right make a clean error naming the key, never a
 * hang, an overflow or a silent cut; with the value repaired the kernel
 * runs on.
 */
static void corrupt_values(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char kp[OCAP_REF_MAX], ko[OCAP_REF_MAX], eref[OCAP_REF_MAX], key[64];
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", kp, eref) == 0);
  REQUIRE(ocap_kernel_subscribe(k, "v2", eref) == 0);
  ocap_capdata_t args = {"#[\"ping\",[]]", 12, NULL, 0};
  REQUIRE(ocap_kernel_send(k, "kernel", ko, &args, NULL) == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);

  k = corrupt_case(k, r, "runQueue.tail", "abc", "key 'runQueue.tail' holds 'abc'");
  k = corrupt_case(k, r, "runQueue.tail", "99999999999999999999", "not a count");
  k = corrupt_case(k, r, "runQueue.tail", "-1", "not a count");
  k = corrupt_case(k, r, "runQueue.head", "7", "runQueue.head (7) is after runQueue.tail");
  k = corrupt_case(k, r, "runQueue.0", "send ko1 -", "is not a send");
  k = corrupt_case(k, r, "runQueue.0",
                   "send ko1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa -\n\n#1",
                   "bad reference");
  snprintf(key, sizeof key, "%s.owner", ko);
  k = corrupt_case(k, r, key, "v1 v2", "not a reference");
  char longref[200];
  memset(longref, 'o', sizeof longref - 1);
  longref[sizeof longref - 1] = '\0';
  snprintf(key, sizeof key, "v1.c.%s", ko);
  k = corrupt_case(k, r, key, longref, "not a reference"); /* it overflowed a 48-byte buffer */
  /* An object's entry naming a promise, and back: neither build saw it,
   * and the object's counts went to the wrong record. */
  k = corrupt_case(k, r, key, "p-1", "holds 'p-1' (3 bytes), which is not an object's reference");
  k = corrupt_case(k, r, key, "_ p-1", "which is not an object's reference");
  k = corrupt_case(k, r, "v1.c.o+1", kp, "which is not an object's reference");
  CHECK(step(k, r) == 1); /* repaired, the message goes */
  CHECK(r->n == 1 && strcmp(r->lines[0], "v1 msg #[\"ping\",[]]") == 0);

  /* A parked-message count far beyond what is there fails at once. */
  snprintf(key, sizeof key, "%s.queueTail", kp);
  REQUIRE(put(k, key, "9007199254740990") == 0);
  k = reopen(k, r);
  ocap_resolution_t res = {kp, 0, {"#1", 2, NULL, 0}};
  CHECK(ocap_kernel_resolve(k, "kernel", &res, 1) == OCAP_ECORRUPT);
  CHECK(strstr(ocap_kernel_errmsg(k), "message 0 of the 9007199254740990 parked on") != NULL);
  CHECK(ocap_kernel_step(k) == OCAP_ECORRUPT); /* drops the half-done host call */
  CHECK(ocap_kernel_failed(k) == 0);
  k = reopen(k, r); /* which it read while the damaged value was there */

  /* A subscriber list that is not one, and a state that is no state. */
  snprintf(key, sizeof key, "%s.subscribers", kp);
  REQUIRE(put(k, key, "v2 v3;x") == 0);
  k = reopen(k, r);
  CHECK(ocap_kernel_resolve(k, "kernel", &res, 1) == OCAP_ECORRUPT);
  CHECK(strstr(ocap_kernel_errmsg(k), "subscribers' holds 'v2 v3;x'") != NULL);
  ocap_kernel_abort_crank(k, 0);
  /* A decider that is a reference but no endpoint (the record keeps
   * endpoints as numbers, so it is refused when read). */
  snprintf(key, sizeof key, "%s.decider", kp);
  REQUIRE(put(k, key, "o+5") == 0);
  k = reopen(k, r);
  CHECK(ocap_kernel_resolve(k, "kernel", &res, 1) == OCAP_ECORRUPT);
  CHECK(strstr(ocap_kernel_errmsg(k), "decider' holds 'o+5' (3 bytes), which is not an endpoint") !=
        NULL);
  ocap_kernel_abort_crank(k, 0);
  snprintf(key, sizeof key, "%s.state", kp);
  REQUIRE(put(k, key, "maybe") == 0);
  k = reopen(k, r);
  CHECK(ocap_kernel_resolve(k, "kernel", &res, 1) == OCAP_ECORRUPT);
  CHECK(strstr(ocap_kernel_errmsg(k), "not a promise state") != NULL);
  ocap_kernel_abort_crank(k, 0);
  k = reopen(k, r);

  /* Counters at their limit refuse to count further instead of overflowing.
   * (The kernel reopened reads the uncommitted value, which the abort drops.) */
  REQUIRE(put(k, "nextVatId", "9007199254740991") == 0);
  k = reopen(k, r);
  char id[OCAP_REF_MAX];
  CHECK(ocap_kernel_alloc_vat_id(k, id) == OCAP_ECORRUPT);
  CHECK(strstr(ocap_kernel_errmsg(k), "nextVatId") != NULL);
  ocap_kernel_abort_crank(k, 0);
  REQUIRE(put(k, "nextVatId", "9007199254740990") == 0);
  k = reopen(k, r);
  CHECK(ocap_kernel_alloc_vat_id(k, id) == 0 && strcmp(id, "v9007199254740990") == 0);
  ocap_kernel_abort_crank(k, 0);

  /* The subscribers were never harmed: resolving now tells v2, after v1
   * learned that nothing refers to its object any more (GC first). */
  CHECK(ocap_kernel_resolve(k, "kernel", &res, 1) == 0);
  CHECK(run(k, r, 0) == 0);
  CHECK(r->n == 4 && strcmp(r->lines[1], "v1 dropExports o+1") == 0 &&
        strcmp(r->lines[2], "v1 retireExports o+1") == 0 &&
        strcmp(r->lines[3], "v2 notify 1") == 0);
  free_kernel(k);
  free(r);
}

/* The value of key, or "" when absent (a static buffer). */
static const char *val(ocap_kernel_t *k, const char *key) {
  static char buf[128];
  const char *v;
  size_t vl;
  REQUIRE(ocap_kernel_sync(k) == 0);
  int rc = ocap_store_get(ocap_kernel_store(k), key, strlen(key), &v, &vl);
  if (rc != 1 || vl >= sizeof buf)
    return "";
  memcpy(buf, v, vl);
  buf[vl] = '\0';
  return buf;
}

/*
 * Garbage collection under injected faults: v2 imports v1's object, drops
 * it, retires it. Each GC crank (the dropExports and retireExports
 * deliveries, the deletion) fails cleanly at every store call it makes,
 * and runs before the run queue's next item; a refused GC syscall changes
 * nothing.
 */
static void gc_faults(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char ko[OCAP_REF_MAX], eref[OCAP_REF_MAX], key[64];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko, eref) == 0);
  CHECK(strcmp(eref, "o-1") == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  snprintf(key, sizeof key, "%s.refCount", ko);
  CHECK(strcmp(val(k, key), "1,1") == 0);

  /* Refused calls change nothing, even uncommitted. */
  const char *twice[] = {"o-1", "o-1"}, *unknown[] = {"o-9"}, *one[] = {"o-1"};
  char *before = dump(k);
  CHECK(ocap_kernel_drop_imports(k, "v2", twice, 2) == OCAP_EINVAL);
  CHECK(strstr(ocap_kernel_errmsg(k), "named twice") != NULL);
  CHECK(ocap_kernel_drop_imports(k, "v2", unknown, 1) == OCAP_EINVAL);
  CHECK(ocap_kernel_retire_imports(k, "v2", one, 1) == OCAP_EINVAL);
  CHECK(ocap_kernel_retire_exports(k, "v1", (const char *[]){"o+1"}, 1) == OCAP_EINVAL);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  char *after = dump(k);
  CHECK(strcmp(before, after) == 0);
  free(before);
  free(after);

  /* Dropped: v1 is told before the message queued meanwhile. */
  REQUIRE(ocap_kernel_drop_imports(k, "v2", one, 1) == 0);
  ocap_capdata_t args = {"#[\"ping\",[]]", 12, NULL, 0};
  char root[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+0", root) == 0);
  REQUIRE(ocap_kernel_pin(k, root) == 0); /* else collected after the message */
  REQUIRE(ocap_kernel_send(k, "kernel", root, &args, NULL) == 0);
  CHECK(run(k, r, 1) > 0);
  CHECK(r->n == 2 && strcmp(r->lines[0], "v1 dropExports o+1") == 0 &&
        strncmp(r->lines[1], "v1 msg", 6) == 0);
  CHECK(strcmp(val(k, key), "0,1") == 0);
  snprintf(key, sizeof key, "%s.dropped", ko);
  CHECK(strcmp(val(k, key), "true") == 0);

  /* Retired: v1 is told, and every key of the object goes. */
  REQUIRE(ocap_kernel_retire_imports(k, "v2", one, 1) == 0);
  CHECK(run(k, r, 1) > 0);
  CHECK(r->n == 3 && strcmp(r->lines[2], "v1 retireExports o+1") == 0);
  char *all = dump(k);
  snprintf(key, sizeof key, "%s.", ko); /* ko<N>.owner, .refCount, .dropped */
  CHECK(strstr(all, key) == NULL);
  snprintf(key, sizeof key, ".c.%s", ko); /* both vats' entries */
  CHECK(strstr(all, key) == NULL);
  CHECK(strstr(all, "o+1") == NULL && strstr(all, "o-1") == NULL);
  CHECK(strstr(all, "gcAction.") == NULL);
  free(all);

  /* A reap runs before the run queue, and only once however often asked. */
  REQUIRE(ocap_kernel_send(k, "kernel", root, &args, NULL) == 0);
  REQUIRE(ocap_kernel_schedule_reap(k, "v2") == 0);
  REQUIRE(ocap_kernel_schedule_reap(k, "v2") == 0);
  CHECK(ocap_kernel_gc_work(k) == 1);
  CHECK(run(k, r, 0) == 0);
  CHECK(r->n == 5 && strcmp(r->lines[3], "v2 bringOutYourDead") == 0 &&
        strncmp(r->lines[4], "v1 msg", 6) == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

/*
 * Retiring an export that an importer still recognizes finds the
 * importers through the index `ko<N>.i.<ep>`: the scan steps it takes do
 * not grow with the number of vats ever created (it used to look in every
 * one's c-list).
 */
static void retire_indexed(int nvats) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  ocap_store_t *s = ocap_kernel_store(k);
  char vat[OCAP_REF_MAX], ko[OCAP_REF_MAX], eref[OCAP_REF_MAX], last[OCAP_REF_MAX];
  for (int i = 0; i < nvats; i++)
    REQUIRE(ocap_kernel_alloc_vat_id(k, vat) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko, eref) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, vat, ko, last) == 0); /* the newest vat too */
  REQUIRE(ocap_store_commit(s) == 0);
  const char *one[] = {"o-1"};
  REQUIRE(ocap_kernel_drop_imports(k, "v2", one, 1) == 0);
  REQUIRE(ocap_kernel_drop_imports(k, vat, one, 1) == 0);
  CHECK(run(k, r, 1) > 0);
  CHECK(r->n == 1 && strcmp(r->lines[0], "v1 dropExports o+1") == 0);
  k = reopen(k, r); /* no c-list in memory */
  unsigned long long steps = ocap_store_scan_steps(s);
  CHECK(ocap_kernel_retire_exports(k, "v1", (const char *[]){"o+1"}, 1) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  steps = ocap_store_scan_steps(s) - steps;
  if (steps > 64) {
    fprintf(stderr, "  retiring an export with %d vats took %llu scan steps\n", nvats, steps);
    failures++;
  }
  r->n = 0;
  CHECK(run(k, r, 1) > 0);
  char want[OCAP_REF_MAX + 32];
  snprintf(want, sizeof want, "%s retireImports o-1", vat);
  CHECK(r->n == 2 && strcmp(r->lines[0], "v2 retireImports o-1") == 0 &&
        strcmp(r->lines[1], want) == 0);
  char *all = dump(k);
  snprintf(want, sizeof want, "%s.", ko); /* the object and its index are gone */
  CHECK(strstr(all, want) == NULL);
  free(all);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

/*
 * A backlog of GC actions costs the same bytes per action however long
 * it is: each action has its own key (they used to be one value,
 * rewritten whole at each change). v2 drops v1's n objects one commit at
 * a time; the last commit writes no more than the first. The backlog is
 * then read back from the store by a new kernel and drained, in order,
 * under injected faults when `faults`.
 */
static void gc_backlog(int n, int faults) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  ocap_store_t *s = ocap_kernel_store(k);
  char ex[32], im[32], ko[OCAP_REF_MAX], eref[OCAP_REF_MAX];
  for (int i = 1; i <= n; i++) {
    snprintf(ex, sizeof ex, "o+%d", i);
    REQUIRE(ocap_kernel_eref_to_kref(k, "v1", ex, ko) == 0);
    REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko, eref) == 0);
  }
  REQUIRE(ocap_store_commit(s) == 0);
  unsigned long long first = 0, last = 0;
  for (int i = 1; i <= n; i++) {
    snprintf(im, sizeof im, "o-%d", i);
    REQUIRE(ocap_kernel_drop_imports(k, "v2", (const char *[]){im}, 1) == 0);
    unsigned long long before = ocap_store_bytes_written(s);
    REQUIRE(ocap_store_commit(s) == 0);
    last = ocap_store_bytes_written(s) - before;
    if (i == 1)
      first = last;
  }
  CHECK(ocap_kernel_gc_work(k) == n);
  if (last > first + 8) {
    fprintf(stderr, "  a GC action with %d waiting wrote %llu bytes, the first %llu\n", n, last,
            first);
    failures++;
  }
  k = reopen(k, r);
  CHECK(ocap_kernel_gc_work(k) == n);
  CHECK(ocap_kernel_check(k) == 0);
  CHECK(faults ? run(k, r, 1) > 0 : run(k, r, 0) == 0);
  CHECK(r->n == 1 && strcmp(r->lines[0], "v1 dropExports o+1") == 0);
  CHECK(ocap_kernel_gc_work(k) == 0);
  char *all = dump(k);
  CHECK(strstr(all, "gcAction.") == NULL);
  free(all);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

/* ---- tables written at sync --------------------------------------------- */

/*
 * An endpoint that works with promises through the kernel's syscalls, as a
 * vat would. On a message it resolves the message's result and, when
 * `also` is set, that promise it decides as well (once); on "work" it then sends
 * "sub" to its object with a new result promise of its own, p+<next>.
 * With `fail` set, each delivery then fails as the kernel's own failure
 * would (the crank rolls back and the item stays queued).
 */
typedef struct script {
  record_t r; /* first, for hook_deliver */
  ocap_kernel_t *k;
  const char *also;
  int fail, next;
  int keep; /* leave results unresolved */
  int pipe; /* take the messages sent to the promises it decides */
} script_t;

static int script_deliver(void *ud, const char *ep, const ocap_delivery_t *d, int *fatal,
                          char **why) {
  script_t *sc = ud;
  hook_deliver(&sc->r, ep, d, fatal, why);
  if (d->type != OCAP_DELIVER_MESSAGE)
    return sc->fail ? OCAP_EIO : 0;
  int rc = 0;
  ocap_resolution_t res = {d->result, 0, {"#\"done\"", 7, NULL, 0}};
  if (d->result && !sc->keep)
    rc = ocap_kernel_resolve(sc->k, ep, &res, 1);
  /* `also` resolves to the vat's object, so messages parked on it go there. */
  const char *slot = "o+1";
  ocap_resolution_t obj = {sc->also, 0, {"#\"$0.Alleged: thing\"", 20, &slot, 1}};
  if (!rc && sc->also) {
    rc = ocap_kernel_resolve(sc->k, ep, &obj, 1);
    sc->also = NULL;
  }
  if (!rc && strncmp(d->methargs.body, "#[\"work\"", 8) == 0) {
    char vp[16];
    snprintf(vp, sizeof vp, "p+%d", sc->next++);
    ocap_capdata_t args = {"#[\"sub\",[]]", 11, NULL, 0};
    rc = ocap_kernel_send(sc->k, ep, d->target, &args, vp);
  }
  return rc ? rc : sc->fail ? OCAP_EIO : 0;
}

static int script_pipelines(void *ud, const char *ep, const char *eref) {
  (void)ep;
  (void)eref;
  return ((script_t *)ud)->pipe;
}

static ocap_kernel_t *new_script_kernel(script_t *sc) {
  ocap_store_t *s = NULL;
  memset(sc, 0, sizeof *sc);
  sc->next = 1;
  REQUIRE(ocap_store_open_memory(&s) == 0);
  ocap_kernel_hooks_t hooks = {.ud = sc, .deliver = script_deliver, .pipelines = script_pipelines};
  REQUIRE(ocap_kernel_new(s, &hooks, &sc->k) == 0);
  return sc->k;
}

static ocap_kernel_t *reopen_script(script_t *sc) {
  ocap_store_t *s = ocap_kernel_store(sc->k);
  ocap_kernel_free(sc->k);
  ocap_kernel_hooks_t hooks = {.ud = sc, .deliver = script_deliver, .pipelines = script_pipelines};
  REQUIRE(ocap_kernel_new(s, &hooks, &sc->k) == 0);
  return sc->k;
}

/* The keys a traced store was asked to write, each followed by a space. */
typedef struct written {
  char keys[1 << 14];
  size_t len;
} written_t;

static void note_write(void *ud, const char *key, size_t klen, int deleted) {
  written_t *w = ud;
  (void)deleted;
  if (w->len + klen + 2 < sizeof w->keys) {
    memcpy(w->keys + w->len, key, klen);
    w->len += klen;
    w->keys[w->len++] = ' ';
    w->keys[w->len] = '\0';
  }
}

/* Whether a key in w starts with prefix and, when digit is set, goes on
 * with a digit. */
static int wrote(const written_t *w, const char *prefix, int digit) {
  size_t pl = strlen(prefix);
  for (const char *p = w->keys; *p;) {
    const char *sp = strchr(p, ' ');
    if (strncmp(p, prefix, pl) == 0 && (!digit || (p[pl] >= '0' && p[pl] <= '9')))
      return 1;
    p = sp + 1;
  }
  return 0;
}

/*
 * Promises, run-queue items and c-list entries made and finished between
 * two syncs never reach the store, nor do the counts of the object the
 * messages go to (each counts it while queued): the host sends "work"
 * with a result, the vat resolves it and makes, and later resolves, a
 * promise of its own; all are freed, every item delivered, every c-list
 * entry of theirs retired. The store is asked to write none of their keys,
 * through the cranks and the sync after them. A promise still alive at
 * the sync is written then, and only then.
 */
static void unsynced_promises(void) {
  script_t *sc = malloc(sizeof *sc);
  REQUIRE(sc != NULL);
  ocap_kernel_t *k = new_script_kernel(sc);
  ocap_store_t *s = ocap_kernel_store(k);
  char ko[OCAP_REF_MAX], kp[OCAP_REF_MAX], kp2[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_pin(k, ko) == 0);
  written_t *w = calloc(1, sizeof *w);
  REQUIRE(w != NULL);
  /* The first round trip before the trace: the store gets the queue's
   * bounds once. */
  for (int i = 0; i < 4; i++) {
    if (i == 1) {
      REQUIRE(ocap_store_commit(s) == 0 && ocap_kernel_sync(k) == 0);
      ocap_store_trace_writes(s, note_write, w);
    }
    ocap_capdata_t args = {"#[\"work\",[]]", 12, NULL, 0};
    REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
    REQUIRE(ocap_kernel_send(k, "kernel", ko, &args, kp) == 0);
    REQUIRE(run(k, &sc->r, 0) == 0);
  }
  CHECK(count_lines(&sc->r, "v1 msg #[\"work\"") == 4);
  CHECK(count_lines(&sc->r, "v1 msg #[\"sub\"") == 4);
  CHECK(count_lines(&sc->r, "kernel notify") == 4);
  REQUIRE(ocap_kernel_sync(k) == 0);
  if (wrote(w, "kp", 1) || wrote(w, "runQueue.", 1) || wrote(w, "v1.c.", 0) || wrote(w, "ko", 1)) {
    fprintf(stderr, "  promises and items made and gone between syncs were written: %s\n", w->keys);
    failures++;
  }
  /* The queue was empty at the last sync and is again: its bounds go back
   * to the store's, and nothing of it is written. */
  CHECK(!wrote(w, "runQueue.", 0));
  /* The promise counters (the kernel's, v1's imports') went up at each
   * round trip, below the bounds the sync before wrote: not written. */
  CHECK(!wrote(w, "nextPromiseId", 0) && !wrote(w, "v1.nextPromiseId", 0));
  CHECK(ocap_kernel_check(k) == 0);
  w->len = 0;
  w->keys[0] = '\0';
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp2) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  CHECK(!wrote(w, "kp", 1)); /* not at commit */
  REQUIRE(ocap_kernel_sync(k) == 0);
  char key[64];
  snprintf(key, sizeof key, "%s.state ", kp2);
  CHECK(strstr(w->keys, key) != NULL); /* but at the sync */
  ocap_store_trace_writes(s, NULL, NULL);
  CHECK(ocap_kernel_check(k) == 0);
  free(w);
  free_kernel(k);
  free(sc);
}

/* Sets up a script kernel for rollback_unsynced: v1's object, a promise
 * kpP v1 decides with a message parked on it, and "work" queued with a
 * result kpW; the parking crank has run, nothing is synced since. */
static ocap_kernel_t *parked_setup(script_t *sc) {
  ocap_kernel_t *k = new_script_kernel(sc);
  char ko[OCAP_REF_MAX], kpp[OCAP_REF_MAX], kpw[OCAP_REF_MAX], eref[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_pin(k, ko) == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "v1", kpp) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v1", kpp, eref) == 0);
  CHECK(strcmp(eref, "p-1") == 0);
  ocap_capdata_t park = {"#[\"parked\",[]]", 14, NULL, 0};
  ocap_capdata_t work = {"#[\"work\",[]]", 12, NULL, 0};
  REQUIRE(ocap_kernel_send(k, "kernel", kpp, &park, NULL) == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kpw) == 0);
  REQUIRE(ocap_kernel_send(k, "kernel", ko, &work, kpw) == 0);
  REQUIRE(step(k, &sc->r) == 1); /* "parked" waits on kpP */
  CHECK(sc->r.n == 0);
  return k;
}

/*
 * A crank that fails after settling promises (one with a message parked
 * on it, which goes back to the run queue), making a new one and queueing
 * items, all on records the store does not have yet, leaves the tables as
 * the last commit left them: the same state as a kernel that never ran
 * that crank, in memory and, after a sync, in the store; and a kernel that
 * goes on from it does what one restarted from that store does (once that
 * one has spent the ids the crank took, which stay spent).
 */
static void rollback_unsynced(void) {
  script_t *x = malloc(sizeof *x), *y = malloc(sizeof *y);
  REQUIRE(x != NULL && y != NULL);
  ocap_kernel_t *kx = parked_setup(x), *ky = parked_setup(y);
  x->also = "p-1";
  x->fail = 1;
  CHECK(step(kx, &x->r) == OCAP_EIO);
  CHECK(ocap_kernel_failed(kx) == 0 && x->r.n == 0);
  CHECK(ocap_kernel_queue_length(kx) == ocap_kernel_queue_length(ky));
  if (ocap_kernel_check(kx) != 0) { /* the tables in memory, against the store */
    fprintf(stderr, "  after a rollback: %s\n", ocap_kernel_errmsg(kx));
    failures++;
  }
  char *dx = dump(kx), *dy = dump(ky);
  if (strcmp(dx, dy) != 0) {
    fprintf(stderr, "  after a rollback:\n    %s\n  without the crank:\n    %s\n", dx, dy);
    failures++;
  }
  free(dx);
  free(dy);
  /* x goes on from its tables in memory, y from its store. The ids x's
   * rolled-back crank took stay spent (ocap__counters_abort, and an
   * endpoint's own in its c-list): y spends the same, in the same crank,
   * which it rolls back too. */
  x->fail = 0;
  ky = reopen_script(y);
  y->also = "p-1";
  y->fail = 1;
  CHECK(step(ky, &y->r) == OCAP_EIO);
  CHECK(ocap_kernel_failed(ky) == 0 && y->r.n == 0);
  y->fail = 0;
  x->also = y->also = "p-1";
  CHECK(run(kx, &x->r, 0) == 0 && run(ky, &y->r, 0) == 0);
  CHECK(x->r.n == y->r.n && x->r.n == 4);
  for (int i = 0; i < x->r.n && i < y->r.n; i++)
    CHECK(strcmp(x->r.lines[i], y->r.lines[i]) == 0);
  CHECK(count_lines(&x->r, "v1 msg #[\"parked\"") == 1);
  /* The same store once each kernel closes: the promise counters' bounds
   * depend on when each was written, their values not. */
  kx = reopen_script(x);
  ky = reopen_script(y);
  dx = dump(kx);
  dy = dump(ky);
  CHECK(strcmp(dx, dy) == 0);
  CHECK(ocap_kernel_check(kx) == 0 && ocap_kernel_check(ky) == 0);
  free(dx);
  free(dy);
  free_kernel(kx);
  free_kernel(ky);
  free(x);
  free(y);
}

/* The store's value of key as it is, without a sync first ("" if absent). */
static const char *raw(ocap_kernel_t *k, const char *key) {
  static char buf[128];
  const char *v;
  size_t vl;
  int rc = ocap_store_get(ocap_kernel_store(k), key, strlen(key), &v, &vl);
  if (rc != 1 || vl >= sizeof buf)
    return "";
  memcpy(buf, v, vl);
  buf[vl] = '\0';
  return buf;
}

/*
 * The id counters are kept in memory and written when the kernel syncs,
 * not into each crank's buffer: commits leave the store's nextObjectId
 * alone, a sync writes the committed value (never one an abort took
 * back), and a kernel opened on the store goes on from there.
 */
static void counters_at_sync(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  ocap_store_t *s = ocap_kernel_store(k);
  char ko[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  CHECK(strcmp(ko, "ko1") == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  CHECK(strcmp(raw(k, "nextObjectId"), "") == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+2", ko) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  CHECK(strcmp(raw(k, "nextObjectId"), "") == 0);
  /* An id taken by work that is rolled back stays spent (host code that
   * ran in the crank may hold it): the store keeps the committed value
   * until the next commit, which takes the spent id with it. */
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+3", ko) == 0);
  CHECK(strcmp(ko, "ko3") == 0);
  ocap_store_abort(s);
  REQUIRE(ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "nextObjectId"), "3") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+4", ko) == 0);
  CHECK(strcmp(ko, "ko4") == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  CHECK(strcmp(raw(k, "nextObjectId"), "3") == 0);
  /* Freeing the kernel syncs: the next one goes on from ko5. */
  k = reopen(k, r);
  CHECK(strcmp(raw(k, "nextObjectId"), "5") == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+5", ko) == 0);
  CHECK(strcmp(ko, "ko5") == 0);
  free_kernel(k);
  free(r);
}

/*
 * The promise counters (the kernel's nextPromiseId, an endpoint's) go up
 * at every message with a result: a sync writes a bound OCAP_ID_RESERVE
 * past the committed value, and the syncs after leave it until the kernel
 * passes it. A kernel that closes writes the values, and the next one
 * goes on from them; one opened on the bound (after a crash) from there.
 */
static void promise_bounds(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  ocap_store_t *s = ocap_kernel_store(k);
  char kp[OCAP_REF_MAX], eref[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  CHECK(strcmp(kp, "kp1") == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v1", kp, eref) == 0);
  CHECK(strcmp(eref, "p-1") == 0);
  REQUIRE(ocap_store_commit(s) == 0 && ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "nextPromiseId"), "1026") == 0);
  CHECK(strcmp(raw(k, "v1.nextPromiseId"), "1026") == 0);
  for (int i = 0; i < 3; i++) {
    REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
    REQUIRE(ocap_kernel_kref_to_eref(k, "v1", kp, eref) == 0);
  }
  CHECK(strcmp(kp, "kp4") == 0 && strcmp(eref, "p-4") == 0);
  REQUIRE(ocap_store_commit(s) == 0 && ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "nextPromiseId"), "1026") == 0);
  CHECK(strcmp(raw(k, "v1.nextPromiseId"), "1026") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  k = reopen(k, r);
  CHECK(strcmp(raw(k, "nextPromiseId"), "5") == 0);
  CHECK(strcmp(raw(k, "v1.nextPromiseId"), "5") == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  CHECK(strcmp(kp, "kp5") == 0);
  REQUIRE(ocap_store_commit(s) == 0 && ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "nextPromiseId"), "1030") == 0);
  /* A store left with its bounds, as a crash leaves it: the kernel opened
   * on it goes on from them, past every id handed out. */
  ocap_kernel_free(k);
  REQUIRE(ocap_store_set(s, "nextPromiseId", 13, "1030", 4) == 0);
  REQUIRE(ocap_store_set(s, "v1.nextPromiseId", 16, "1026", 4) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  ocap_kernel_hooks_t hooks = {.ud = r, .deliver = hook_deliver};
  REQUIRE(ocap_kernel_new(s, &hooks, &k) == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  CHECK(strcmp(kp, "kp1030") == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v1", kp, eref) == 0);
  CHECK(strcmp(eref, "p-1026") == 0);
  free_kernel(k);
  free(r);
}

/*
 * The run queue keeps the items the kernel queues in their parts and
 * writes their text only when it syncs: the stored items are exactly the
 * text docs/storage.md describes (a vat's send names its sender, notifies
 * to one endpoint merge), and a kernel opened on the store runs them.
 */
static void queue_text(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char ko[OCAP_REF_MAX], eref[OCAP_REF_MAX], rk[OCAP_REF_MAX], kpa[OCAP_REF_MAX];
  char kpb[OCAP_REF_MAX], want[160];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko, eref) == 0);
  ocap_capdata_t args = {"#[\"ping\",[]]", 12, NULL, 0};
  REQUIRE(ocap_kernel_send(k, "v2", eref, &args, "p+5") == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v2", "p+5", rk) == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kpa) == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kpb) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", kpa, eref) == 0);
  REQUIRE(ocap_kernel_subscribe(k, "v2", eref) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", kpb, eref) == 0);
  REQUIRE(ocap_kernel_subscribe(k, "v2", eref) == 0);
  ocap_resolution_t res[2] = {{kpa, 0, {"#1", 2, NULL, 0}}, {kpb, 0, {"#2", 2, NULL, 0}}};
  REQUIRE(ocap_kernel_resolve(k, "kernel", res, 2) == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  CHECK(strcmp(raw(k, "runQueue.0"), "") == 0); /* not at commit */
  REQUIRE(ocap_kernel_sync(k) == 0);
  snprintf(want, sizeof want, "send %s %s v2\n\n#[\"ping\",[]]", ko, rk);
  CHECK(strcmp(raw(k, "runQueue.0"), want) == 0);
  snprintf(want, sizeof want, "notify v2 %s %s", kpa, kpb);
  CHECK(strcmp(raw(k, "runQueue.1"), want) == 0);
  CHECK(strcmp(raw(k, "runQueue.tail"), "2") == 0);
  snprintf(want, sizeof want, "%zu", strlen(raw(k, "runQueue.0")));
  CHECK(strcmp(raw(k, "v2.queuedBytes"), want) == 0);
  CHECK(ocap_kernel_check(k) == 0);
  /* Read back as text, the items run as they would have. */
  k = reopen(k, r);
  CHECK(step(k, r) == 1 && step(k, r) == 1 && step(k, r) == 0);
  CHECK(r->n == 2 && strcmp(r->lines[0], "v1 msg #[\"ping\",[]]") == 0 &&
        strcmp(r->lines[1], "v2 notify 2") == 0);
  REQUIRE(ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "v2.queuedBytes"), "") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

/*
 * Items queued and taken between two syncs that both found the queue
 * empty are never written, and their numbers are taken again: the store
 * keeps its bounds, the kernel agrees with it, and an item queued later is
 * written under the next number the store expects and runs after a
 * restart.
 */
static void queue_rebased(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char ko[OCAP_REF_MAX], eref[OCAP_REF_MAX], want[160];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko, eref) == 0);
  ocap_capdata_t args = {"#[\"ping\",[]]", 12, NULL, 0};
  REQUIRE(ocap_kernel_send(k, "v2", eref, &args, NULL) == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  REQUIRE(ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "runQueue.tail"), "1") == 0);
  CHECK(step(k, r) == 1 && step(k, r) == 0);
  REQUIRE(ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "runQueue.0"), "") == 0);
  CHECK(strcmp(raw(k, "runQueue.head"), "1") == 0 && strcmp(raw(k, "runQueue.tail"), "1") == 0);
  for (int i = 0; i < 3; i++) {
    REQUIRE(ocap_kernel_send(k, "v2", eref, &args, NULL) == 0);
    REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
    CHECK(step(k, r) == 1);
  }
  CHECK(r->n == 4);
  REQUIRE(ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "runQueue.head"), "1") == 0 && strcmp(raw(k, "runQueue.tail"), "1") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  /* The next item takes number 1 again, and a restart runs it. */
  REQUIRE(ocap_kernel_send(k, "v2", eref, &args, NULL) == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  REQUIRE(ocap_kernel_sync(k) == 0);
  snprintf(want, sizeof want, "send %s - v2\n\n#[\"ping\",[]]", ko);
  CHECK(strcmp(raw(k, "runQueue.1"), want) == 0);
  CHECK(strcmp(raw(k, "runQueue.tail"), "2") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  k = reopen(k, r);
  r->n = 0;
  CHECK(step(k, r) == 1 && step(k, r) == 0);
  CHECK(r->n == 1 && strcmp(r->lines[0], "v1 msg #[\"ping\",[]]") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

/*
 * A run-queue key the host writes (K:kvSet, for inspection or tests) is
 * read again at next use, also when the queue went empty again since a
 * sync that found the store's empty too: the items queued and taken
 * meanwhile left the kernel's bounds past the store's, which no sync took
 * back (queue_rebase), and the kernel kept its own queue, never running
 * the item the host wrote.
 */
static void queue_forget_rebased(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char ko[OCAP_REF_MAX], item[160];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  CHECK(strcmp(ko, "ko1") == 0);
  REQUIRE(ocap_kernel_pin(k, ko) == 0);
  ocap_capdata_t args = {"#[\"ping\",[]]", 12, NULL, 0};
  REQUIRE(ocap_kernel_send(k, "kernel", ko, &args, NULL) == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  CHECK(step(k, r) == 1 && step(k, r) == 0);
  REQUIRE(ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "runQueue.head"), "1") == 0 && strcmp(raw(k, "runQueue.tail"), "1") == 0);
  /* Host messages queued and taken: nothing for a sync to write. */
  for (int i = 0; i < 3; i++) {
    REQUIRE(ocap_kernel_send(k, "kernel", ko, &args, NULL) == 0);
    REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
    CHECK(step(k, r) == 1);
  }
  /* What K:kvSet does: a sync, the write, and the kernel told. The item
   * counts in its target's counts, as one the kernel queues does. */
  snprintf(item, sizeof item, "send %s -\n\n#[\"host\",[]]", ko);
  REQUIRE(put(k, "runQueue.1", item) == 0);
  REQUIRE(ocap_kernel_forget(k, "runQueue.1", 10) == 0);
  REQUIRE(put(k, "runQueue.tail", "2") == 0);
  REQUIRE(ocap_kernel_forget(k, "runQueue.tail", 13) == 0);
  REQUIRE(put(k, "ko1.refCount", "1,1") == 0);
  REQUIRE(ocap_kernel_forget(k, "ko1.refCount", 12) == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  r->n = 0;
  CHECK(step(k, r) == 1);
  CHECK(r->n == 1 && strcmp(r->lines[0], "v1 msg #[\"host\",[]]") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

/*
 * An endpoint's import counters (`<ep>.nextObjectId`, kept with its
 * c-list) follow the kernel's: an eref a rolled-back crank gave an
 * endpoint stays spent, since the endpoint's own state outside the store
 * (a remote session's tables) keeps it; the store keeps the committed
 * value until a crank gives that endpoint another id.
 */
static void endpoint_ids_spent(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  ocap_store_t *s = ocap_kernel_store(k);
  char ko1[OCAP_REF_MAX], ko2[OCAP_REF_MAX], ko3[OCAP_REF_MAX], er[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko1) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+2", ko2) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+3", ko3) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "r1", ko1, er) == 0);
  CHECK(strcmp(er, "o-1") == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  /* The rolled-back crank gives r1 o-2 for ko2. */
  REQUIRE(ocap_kernel_kref_to_eref(k, "r1", ko2, er) == 0);
  CHECK(strcmp(er, "o-2") == 0);
  ocap_store_abort(s);
  REQUIRE(ocap_kernel_sync(k) == 0);
  CHECK(strcmp(raw(k, "r1.nextObjectId"), "2") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  /* The next gives ko3 a fresh eref, and commits the spent one. */
  REQUIRE(ocap_kernel_kref_to_eref(k, "r1", ko3, er) == 0);
  CHECK(strcmp(er, "o-3") == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  CHECK(ocap_kernel_check(k) == 0);
  k = reopen(k, r);
  CHECK(strcmp(raw(k, "r1.nextObjectId"), "4") == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "r1", ko2, er) == 0);
  CHECK(strcmp(er, "o-4") == 0);
  free_kernel(k);
  free(r);
}

/*
 * A sync that fails at any one of its store calls writes nothing and is a
 * kernel failure, which the next crank reports; the tables in memory are
 * untouched, so the next sync writes everything: the run queue, promises
 * with their data and parked messages, c-list entries, counts and
 * counters, all waiting since the last one.
 */
static void sync_faults(void) {
  script_t *sc = malloc(sizeof *sc);
  REQUIRE(sc != NULL);
  ocap_kernel_t *k = parked_setup(sc);
  ocap_store_t *s = ocap_kernel_store(k);
  char kp[OCAP_REF_MAX], ko[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  ocap_capdata_t work = {"#[\"work\",[]]", 12, NULL, 0};
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  REQUIRE(ocap_kernel_send(k, "kernel", ko, &work, kp) == 0);
  REQUIRE(step(k, &sc->r) == 1 && step(k, &sc->r) == 1); /* two "work"s delivered */
  char *before = dump_as_is(k);
  int failed = 0;
  for (long i = 1;; i++) {
    ocap_store_inject_fault(s, OCAP_FAULT_ALL, i, OCAP_EIO);
    int rc = ocap_kernel_sync(k);
    int fired = ocap_store_inject_fault(s, 0, 0, 0) == 0;
    if (!fired) {
      CHECK(rc == 0);
      break;
    }
    failed++;
    CHECK(rc == OCAP_EIO && ocap_kernel_failed(k) == OCAP_EIO);
    char *after = dump_as_is(k);
    CHECK(strcmp(before, after) == 0);
    free(after);
    CHECK(step(k, &sc->r) == OCAP_EIO); /* the next crank reports it */
    CHECK(ocap_kernel_failed(k) == 0);
  }
  CHECK(failed > 10);
  if (ocap_kernel_check(k) != 0) {
    fprintf(stderr, "  after a sync that failed: %s\n", ocap_kernel_errmsg(k));
    failures++;
  }
  char *synced = dump_as_is(k);
  CHECK(strcmp(before, synced) != 0);
  free(synced);
  free(before);
  CHECK(run(k, &sc->r, 0) == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(sc);
}

/*
 * Messages parked on a promise, in the store since a sync, are all taken
 * by its decider (pipelining); a message parked on it later is its first
 * again: the next sync writes it over the old first one, and the store
 * and the tables agree.
 */
static void retake_parked(void) {
  script_t *sc = malloc(sizeof *sc);
  REQUIRE(sc != NULL);
  ocap_kernel_t *k = new_script_kernel(sc);
  char ko[OCAP_REF_MAX], kp[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_pin(k, ko) == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  ocap_capdata_t m1 = {"#[\"m1\",[]]", 10, NULL, 0}, m2 = {"#[\"m2\",[]]", 10, NULL, 0};
  ocap_capdata_t m3 = {"#[\"m3\",[]]", 10, NULL, 0}, call = {"#[\"call\",[]]", 12, NULL, 0};
  REQUIRE(ocap_kernel_send(k, "kernel", kp, &m1, NULL) == 0);
  REQUIRE(ocap_kernel_send(k, "kernel", kp, &m2, NULL) == 0);
  REQUIRE(ocap_kernel_send(k, "kernel", ko, &call, kp) == 0);
  REQUIRE(step(k, &sc->r) == 1 && step(k, &sc->r) == 1); /* m1 and m2 wait on kp */
  REQUIRE(ocap_kernel_sync(k) == 0);
  sc->keep = sc->pipe = 1;
  REQUIRE(step(k, &sc->r) == 1); /* v1 decides kp now, and takes m1 and m2 */
  CHECK(sc->r.n == 3 && strcmp(sc->r.lines[1], "v1 msg #[\"m1\",[]]") == 0);
  sc->pipe = 0;
  REQUIRE(ocap_kernel_send(k, "kernel", kp, &m3, NULL) == 0);
  REQUIRE(step(k, &sc->r) == 1); /* m3 waits */
  if (ocap_kernel_check(k) != 0) {
    fprintf(stderr, "  parked again after a take: %s\n", ocap_kernel_errmsg(k));
    failures++;
  }
  free_kernel(k);
  free(sc);
}

/*
 * A remote peer's endpoint ("r<N>", kernel.h) is an endpoint like a vat's:
 * its ids come from their own counter and are never reused, an object it
 * exports is routed to it with the message's result, which it decides,
 * its c-list counts, and its termination rejects what it decides and
 * removes every key of its.
 */
static void peer_endpoint(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  ocap_store_t *s = ocap_kernel_store(k);
  char vat[OCAP_REF_MAX], peer[OCAP_REF_MAX], ko[OCAP_REF_MAX], eref[OCAP_REF_MAX];
  char kp[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_alloc_vat_id(k, vat) == 0);
  REQUIRE(ocap_kernel_alloc_peer_id(k, peer) == 0);
  CHECK(strcmp(vat, "v1") == 0 && strcmp(peer, "r1") == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, peer, "o+5", ko) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, vat, ko, eref) == 0);
  CHECK(ocap_kernel_clist_size(k, peer, "ko") == 1 && ocap_kernel_clist_size(k, peer, "kp") == 0);
  ocap_capdata_t cd = {"#[\"ping\",[]]", 12, NULL, 0};
  REQUIRE(ocap_kernel_send(k, vat, eref, &cd, "p+1") == 0);
  REQUIRE(ocap_kernel_kref_of(k, vat, "p+1", kp) == 1);
  REQUIRE(ocap_store_commit(s) == 0);
  CHECK(step(k, r) == 1);
  CHECK(r->n == 1 && strcmp(r->lines[0], "r1 msg #[\"ping\",[]]") == 0);
  CHECK(ocap_kernel_clist_size(k, peer, "kp") == 1);
  ocap_capdata_t why = {"#\"lost\"", 7, NULL, 0};
  REQUIRE(ocap_kernel_terminate(k, peer, &why) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  CHECK(ocap_kernel_clist_size(k, peer, "k") == 0);
  CHECK(step(k, r) == 1); /* the vat is told its result was rejected */
  CHECK(r->n == 2 && strcmp(r->lines[1], "v1 notify 1") == 0);
  char *all = dump(k);
  CHECK(strstr(all, "r1.") == NULL);
  CHECK(strstr(all, "nextPeerId") != NULL);
  free(all);
  REQUIRE(ocap_kernel_alloc_peer_id(k, peer) == 0);
  CHECK(strcmp(peer, "r2") == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  if (ocap_kernel_check(k) != 0) {
    fprintf(stderr, "  peer_endpoint: %s\n", ocap_kernel_errmsg(k));
    failures++;
  }
  free_kernel(k);
  free(r);
}

/*
 * Host code that runs in a delivery to the kernel endpoint may write a
 * promise's key (K:kvSet), and the kernel then forgets that promise's
 * record unless the crank changed it (ocap_kernel_forget). A notify crank
 * keeps the records of the promises it tells until it ends (it releases
 * them after the delivery), so it must hold them; a record dropped under
 * it would be used after it is freed (ASan sees it in `make asan`).
 */
typedef struct forgetter {
  record_t r; /* first, for hook_deliver */
  ocap_kernel_t *k;
} forgetter_t;

static int forget_deliver(void *ud, const char *ep, const ocap_delivery_t *d, int *fatal,
                          char **why) {
  forgetter_t *f = ud;
  hook_deliver(&f->r, ep, d, fatal, why);
  for (size_t i = 0; d->type == OCAP_DELIVER_NOTIFY && i < d->nresolutions; i++) {
    char key[64];
    int n = snprintf(key, sizeof key, "%s.state", d->resolutions[i].kpid);
    /* Refused: the crank holds the record across this delivery. */
    CHECK(ocap_kernel_forget(f->k, key, (size_t)n) == OCAP_EINVAL);
  }
  return 0;
}

static void forget_in_delivery(void) {
  forgetter_t *f = calloc(1, sizeof *f);
  ocap_store_t *s = NULL;
  REQUIRE(f != NULL && ocap_store_open_memory(&s) == 0);
  ocap_kernel_hooks_t hooks = {.ud = f, .deliver = forget_deliver};
  REQUIRE(ocap_kernel_new(s, &hooks, &f->k) == 0);
  ocap_kernel_t *k = f->k;
  char kp[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  REQUIRE(ocap_kernel_subscribe(k, "kernel", kp) == 0);
  ocap_resolution_t res = {kp, 0, {"#\"done\"", 7, NULL, 0}};
  REQUIRE(ocap_kernel_resolve(k, "kernel", &res, 1) == 0);
  /* Synced, the record is one the kernel may forget. */
  REQUIRE(ocap_store_commit(s) == 0 && ocap_kernel_sync(k) == 0);
  REQUIRE(run(k, &f->r, 0) == 0);
  CHECK(count_lines(&f->r, "kernel notify 1") == 1);
  /* The notify's reference is released: the settled promise is gone. */
  char key[64];
  snprintf(key, sizeof key, "%s.state", kp);
  const char *v;
  size_t vl;
  CHECK(ocap_kernel_sync(k) == 0);
  CHECK(ocap_store_get(s, key, strlen(key), &v, &vl) == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(f);
}

/* A deliver hook whose host code commits the store mid-crank (K:commit
 * from a kernel service), then reuses the memory that commit let go of. */
typedef struct committer {
  record_t r;
  ocap_kernel_t *k;
  char *junk[8];
  int n;
} committer_t;

static int commit_deliver(void *ud, const char *ep, const ocap_delivery_t *d, int *fatal,
                          char **why) {
  committer_t *c = ud;
  hook_deliver(&c->r, ep, d, fatal, why);
  if (d->type == OCAP_DELIVER_MESSAGE && c->n < 8) {
    REQUIRE(ocap_store_commit(ocap_kernel_store(c->k)) == 0);
    for (int i = 0; i < 8 && c->n < 8; i++) { /* blocks of the item's size, scribbled */
      c->junk[c->n] = malloc(64);
      REQUIRE(c->junk[c->n] != NULL);
      memset(c->junk[c->n++], 'x', 64);
    }
  }
  return 0;
}

/*
 * The crank reads its run-queue item in place (the queue lends it), after
 * the delivery too, to release the references its capdata holds: a commit
 * by host code during the delivery must not free it under the crank.
 */
static void commit_in_delivery(void) {
  committer_t *c = calloc(1, sizeof *c);
  ocap_store_t *s = NULL;
  REQUIRE(c != NULL && ocap_store_open_memory(&s) == 0);
  ocap_kernel_hooks_t hooks = {.ud = c, .deliver = commit_deliver};
  REQUIRE(ocap_kernel_new(s, &hooks, &c->k) == 0);
  ocap_kernel_t *k = c->k;
  char ko[OCAP_REF_MAX], arg[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+2", arg) == 0);
  const char *slots[] = {arg};
  ocap_capdata_t args = {"#[\"ping\",[\"$0.Alleged: x\"]]", 27, slots, 1};
  REQUIRE(ocap_kernel_send(k, "kernel", ko, &args, NULL) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  CHECK(ocap_kernel_step(k) == 1);
  CHECK(ocap_kernel_failed(k) == 0);
  CHECK(c->r.pending == 1);
  CHECK(ocap_kernel_check(k) == 0);
  for (int i = 0; i < c->n; i++)
    free(c->junk[i]);
  free_kernel(k);
  free(c);
}

/* A deliver hook whose host code commits mid-crank, as commit_deliver's,
 * and then fails v1's delivery: fatally, or by refusing it. */
typedef struct splitter {
  record_t r;
  ocap_kernel_t *k;
  int refuse, armed;
} splitter_t;

static int split_deliver(void *ud, const char *ep, const ocap_delivery_t *d, int *fatal,
                         char **why) {
  splitter_t *sp = ud;
  hook_deliver(&sp->r, ep, d, fatal, why);
  if (d->type != OCAP_DELIVER_MESSAGE || strcmp(ep, "v1") != 0 || !sp->armed)
    return 0;
  sp->armed = 0;
  REQUIRE(ocap_store_commit(ocap_kernel_store(sp->k)) == 0);
  if (sp->refuse)
    return OCAP_EREFUSED;
  *fatal = OCAP_FATAL_ILLEGAL_SYSCALL;
  return 0;
}

/*
 * A delivery that fails after host code committed mid-crank is undone
 * back to that commit only, which had already taken its item off the run
 * queue: taking "its" item off again took the next one, a message to
 * another vat, which was never delivered.
 */
static void commit_then_fail(int refuse) {
  splitter_t *sp = calloc(1, sizeof *sp);
  ocap_store_t *s = NULL;
  REQUIRE(sp != NULL && ocap_store_open_memory(&s) == 0);
  ocap_kernel_hooks_t hooks = {.ud = sp, .deliver = split_deliver};
  REQUIRE(ocap_kernel_new(s, &hooks, &sp->k) == 0);
  ocap_kernel_t *k = sp->k;
  sp->refuse = refuse;
  char ko1[OCAP_REF_MAX], ko2[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko1) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v2", "o+1", ko2) == 0);
  ocap_capdata_t first = {"#[\"first\",[]]", 13, NULL, 0};
  ocap_capdata_t second = {"#[\"second\",[]]", 14, NULL, 0};
  REQUIRE(ocap_kernel_send(k, "kernel", ko1, &first, NULL) == 0);
  REQUIRE(ocap_kernel_send(k, "kernel", ko2, &second, NULL) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  sp->armed = 1;
  CHECK(step(k, &sp->r) == 1);
  CHECK(count_lines(&sp->r, "v1 msg #[\"first\"") == 1);
  for (int i = 0; i < 10 && step(k, &sp->r) == 1; i++)
    ;
  CHECK(count_lines(&sp->r, "v2 msg #[\"second\"") == 1);
  CHECK(ocap_kernel_failed(k) == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(sp);
}

/* Counts the imports reachable_imports reports, and whether `want` is one. */
typedef struct reach_seen {
  const char *want;
  int n, found;
} reach_seen_t;

static int note_reachable(void *ud, const char *vref) {
  reach_seen_t *rs = ud;
  rs->n++;
  rs->found |= strcmp(vref, rs->want) == 0;
  return 0;
}

/* Whether v2 reaches its import vref, as the kernel has it in memory. */
static int v2_reaches(ocap_kernel_t *k, const char *vref) {
  reach_seen_t rs = {vref, 0, 0};
  REQUIRE(ocap_kernel_reachable_imports(k, "v2", note_reachable, &rs) == 0);
  return rs.found;
}

/*
 * A c-list entry keeps three versions of its value (now, committed,
 * stored), in buffers of its own while they are short. An import that v2
 * drops and reaches again, through commits and aborts with no sync between
 * them, must come back from each abort as it was committed, and reach the
 * store as the last commit left it; refs and values too long for the
 * entry's buffers go the same way. Entries retired and made again reuse
 * spare records (ASan checks that a long ref never gets a short one's).
 */
static void clist_versions(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  ocap_store_t *s = ocap_kernel_store(k);
  const char *longvref = "o+d123/4567890123:4567890"; /* past both inline sizes */
  char ko[OCAP_REF_MAX], kol[OCAP_REF_MAX], eref[OCAP_REF_MAX], key[64];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", longvref, kol) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko, eref) == 0);
  CHECK(strcmp(eref, "o-1") == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", kol, eref) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  snprintf(key, sizeof key, "v2.c.%s", ko);
  CHECK(strcmp(val(k, key), "o-1") == 0); /* synced: stored = committed = now */
  const char *drop[] = {"o-1"};
  /* Committed dropped, stored reachable: every buffer holds a version. */
  REQUIRE(ocap_kernel_drop_imports(k, "v2", drop, 1) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  CHECK(!v2_reaches(k, "o-1"));
  for (int round = 0; round < 6; round++) {
    REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko, eref) == 0); /* reached again */
    CHECK(v2_reaches(k, "o-1"));
    ocap_store_abort(s);
    CHECK(!v2_reaches(k, "o-1"));
    REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko, eref) == 0);
    REQUIRE(ocap_store_commit(s) == 0);
    CHECK(v2_reaches(k, "o-1"));
    REQUIRE(ocap_kernel_drop_imports(k, "v2", drop, 1) == 0);
    CHECK(!v2_reaches(k, "o-1"));
    if (round % 2)
      ocap_store_abort(s);
    else
      REQUIRE(ocap_store_commit(s) == 0);
    CHECK(v2_reaches(k, "o-1") == round % 2);
    if (round % 2) { /* leave it dropped and committed for the next round */
      REQUIRE(ocap_kernel_drop_imports(k, "v2", drop, 1) == 0);
      REQUIRE(ocap_store_commit(s) == 0);
    }
  }
  CHECK(strcmp(raw(k, key), "o-1") == 0); /* no sync yet */
  CHECK(strcmp(val(k, key), "_ o-1") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  /* v1's entry for its long vref, read back whole by a new kernel. */
  k = reopen(k, r);
  s = ocap_kernel_store(k);
  REQUIRE(ocap_kernel_kref_of(k, "v1", longvref, eref) == 1);
  CHECK(strcmp(eref, kol) == 0);
  snprintf(key, sizeof key, "v1.c.%s", kol);
  CHECK(strcmp(val(k, key), longvref) == 0);
  /* Retired entries go to the spares; new ones, short and long, are made
   * from them or afresh, and hold what they were given. */
  const char *retire[] = {"o-1"};
  REQUIRE(ocap_kernel_retire_imports(k, "v2", retire, 1) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  snprintf(key, sizeof key, "v2.c.%s", ko);
  CHECK(strcmp(val(k, key), "") == 0);
  char ko3[OCAP_REF_MAX], ko4[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+d9/123456789012345678", ko3) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+3", ko4) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko3, eref) == 0);
  REQUIRE(ocap_store_commit(s) == 0);
  REQUIRE(ocap_kernel_kref_of(k, "v1", "o+d9/123456789012345678", eref) == 1);
  CHECK(strcmp(eref, ko3) == 0);
  REQUIRE(ocap_kernel_kref_of(k, "v1", "o+3", eref) == 1);
  CHECK(strcmp(eref, ko4) == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

/*
 * The kernel writes the number of a kref without a leading zero, so a
 * host that names `ko02` or `kp01` names nothing the kernel gave out: the
 * call fails as the caller's fault (invalid kref), and leaves the kernel
 * working. It is not the damaged database that the same text read from
 * the store would be, a failure that sticks until the next crank.
 */
static void host_kref_spelling(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char ko[OCAP_REF_MAX], kp[OCAP_REF_MAX], out[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+2", ko) == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  CHECK(strcmp(ko, "ko2") == 0 && strcmp(kp, "kp2") == 0);
  ocap_capdata_t args = {"#[\"ping\",[]]", 12, NULL, 0};
  static const char *const bad[] = {"ko02", "kp02", "ko002", "ko00", "ko12345678901234567890"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK(ocap_kernel_send(k, "kernel", bad[i], &args, NULL) == OCAP_EINVAL);
    CHECK(strstr(ocap_kernel_errmsg(k), "invalid kref") != NULL);
    CHECK(ocap_kernel_failed(k) == 0);
    const char *slots[] = {bad[i]};
    ocap_capdata_t withslot = {"#[\"ping\",[\"$0\"]]", 16, slots, 1};
    CHECK(ocap_kernel_send(k, "kernel", ko, &withslot, NULL) == OCAP_EINVAL);
    CHECK(ocap_kernel_failed(k) == 0);
    CHECK(ocap_kernel_eref_to_kref(k, "kernel", bad[i], out) == OCAP_EINVAL);
    CHECK(ocap_kernel_failed(k) == 0);
    ocap_kernel_abort_crank(k, 0);
  }
  /* The kernel goes on: a message to the object as the kernel spells it
   * is delivered. */
  REQUIRE(ocap_kernel_send(k, "kernel", ko, &args, NULL) == 0);
  CHECK(step(k, r) == 1);
  CHECK(r->n == 1 && strcmp(r->lines[0], "v1 msg #[\"ping\",[]]") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

/* Checks that a call (rc, named by what) that names a kref the kernel
 * never gave out was refused as the caller's mistake, the kernel usable. */
static void refused_unknown(ocap_kernel_t *k, int rc, const char *what) {
  if (rc != OCAP_EINVAL || !strstr(ocap_kernel_errmsg(k), "unknown kref"))
    fprintf(stderr, "%s: %d %s\n", what, rc, ocap_kernel_errmsg(k));
  CHECK(rc == OCAP_EINVAL && strstr(ocap_kernel_errmsg(k), "unknown kref") != NULL);
  CHECK(ocap_kernel_failed(k) == 0);
}

/*
 * A C host names krefs the kernel never gave out (ids its counters have
 * not reached): refused as the caller's mistake, and no record is made
 * for them. A record made then was a second one of the same id once the
 * counter gave that id out, and the next abort freed it twice.
 */
static void host_kref_unissued(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char ko[OCAP_REF_MAX], kp[OCAP_REF_MAX], out[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", kp) == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  char nko[OCAP_REF_MAX], nkp[OCAP_REF_MAX], fkp[OCAP_REF_MAX];
  snprintf(nko, sizeof nko, "ko%lld", ocap_kernel_next_id(k, 'o'));
  snprintf(nkp, sizeof nkp, "kp%lld", ocap_kernel_next_id(k, 'p'));
  snprintf(fkp, sizeof fkp, "kp%lld", ocap_kernel_next_id(k, 'p') + 1);
  ocap_capdata_t args = {"#[\"ping\",[]]", 12, NULL, 0};
  const char *const bad[] = {nko, nkp, fkp, "kp40", "ko40", "kp999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const char *slots[] = {bad[i]};
    ocap_capdata_t withslot = {"#[\"ping\",[\"$0\"]]", 16, slots, 1};
    refused_unknown(k, ocap_kernel_send(k, "kernel", bad[i], &args, NULL), "send target");
    refused_unknown(k, ocap_kernel_send(k, "kernel", ko, &withslot, NULL), "send slot");
    refused_unknown(k, ocap_kernel_eref_to_kref(k, "kernel", bad[i], out), "eref_to_kref");
    refused_unknown(k, ocap_kernel_kref_to_eref(k, "v1", bad[i], out), "kref_to_eref");
    if (bad[i][1] == 'p') {
      refused_unknown(k, ocap_kernel_send(k, "kernel", ko, &args, bad[i]), "send result");
      refused_unknown(k, ocap_kernel_subscribe(k, "kernel", bad[i]), "subscribe");
      ocap_resolution_t res = {bad[i], 0, {"#1", 2, NULL, 0}};
      refused_unknown(k, ocap_kernel_resolve(k, "kernel", &res, 1), "resolve");
    }
    /* Kept, as a host would: nothing was changed. */
    CHECK(ocap_store_commit(ocap_kernel_store(k)) == 0);
  }
  /* The counters then give those ids out, each to one record, which an
   * abort drops once. */
  char p2[OCAP_REF_MAX], o2[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", p2) == 0);
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+2", o2) == 0);
  CHECK(strcmp(p2, nkp) == 0 && strcmp(o2, nko) == 0);
  REQUIRE(ocap_kernel_send(k, "kernel", ko, &args, p2) == 0);
  ocap_kernel_abort_crank(k, 0);
  /* That promise, given out in a crank that was aborted, has no record:
   * as a result it is refused too, not made again. */
  refused_unknown(k, ocap_kernel_send(k, "kernel", ko, &args, p2), "send lost result");
  CHECK(ocap_store_commit(ocap_kernel_store(k)) == 0);
  /* The kernel goes on: a message with a promise allocated now for its
   * result is delivered. */
  REQUIRE(ocap_kernel_alloc_promise(k, "kernel", p2) == 0);
  CHECK(strcmp(p2, fkp) == 0);
  REQUIRE(ocap_kernel_send(k, "kernel", ko, &args, p2) == 0);
  CHECK(step(k, r) == 1);
  CHECK(r->n == 1 && strcmp(r->lines[0], "v1 msg #[\"ping\",[]]") == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

/*
 * An endpoint's name that is empty: every call that takes one refuses it
 * as a caller's fault, reading no byte past the name (the name here is a
 * block of one byte, which AddressSanitizer guards: `make asan`).
 */
static void empty_endpoint(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char *ep = malloc(1);
  REQUIRE(ep != NULL);
  ep[0] = '\0';
  char ko[OCAP_REF_MAX], out[OCAP_REF_MAX];
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_store_commit(ocap_kernel_store(k)) == 0);
  CHECK(ocap_kernel_eref_to_kref(k, ep, "o+1", out) == OCAP_EINVAL);
  CHECK(ocap_kernel_eref_to_kref(k, ep, "p+1", out) == OCAP_EINVAL);
  CHECK(ocap_kernel_kref_to_eref(k, ep, ko, out) == OCAP_EINVAL);
  CHECK(ocap_kernel_subscribe(k, ep, "p-1") == OCAP_EINVAL);
  CHECK(ocap_kernel_kref_of(k, ep, "o+1", out) == 0);
  /* Refused, nothing changed: the kernel goes on. */
  ocap_kernel_abort_crank(k, 0);
  CHECK(ocap_kernel_eref_to_kref(k, "v1", "o+1", out) == 0 && strcmp(out, ko) == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free(ep);
  free_kernel(k);
  free(r);
}

/*
 * A vat's send and resolve with its promise given as a number (p+<n> and
 * p-<n>), as its syscalls pass it: the same entries as with the vref's
 * text, and the same refusals with the same messages, the vref's text
 * made for them.
 */
static void numbered_vpids(void) {
  record_t *r = malloc(sizeof *r);
  REQUIRE(r != NULL);
  ocap_kernel_t *k = new_kernel(r);
  char ko[OCAP_REF_MAX], target[OCAP_REF_MAX], kp[OCAP_REF_MAX], kp6[OCAP_REF_MAX];
  char body[] = "#[\"ping\",[]]";
  ocap_capdata_t args = {body, strlen(body), NULL, 0};
  REQUIRE(ocap_kernel_eref_to_kref(k, "v1", "o+1", ko) == 0);
  REQUIRE(ocap_kernel_kref_to_eref(k, "v2", ko, target) == 0);
  /* p+5 by number, p+6 by text: each names a new promise in v2's c-list. */
  REQUIRE(ocap__kernel_send_pe(k, "v2", target, &args, 5) == 0);
  REQUIRE(ocap_kernel_send(k, "v2", target, &args, "p+6") == 0);
  CHECK(ocap_kernel_kref_of(k, "v2", "p+5", kp) == 1 && strncmp(kp, "kp", 2) == 0);
  CHECK(ocap_kernel_kref_of(k, "v2", "p+6", kp6) == 1 && strcmp(kp, kp6) != 0);
  /* Reused, by number or by text: refused alike. */
  CHECK(ocap__kernel_send_pe(k, "v2", target, &args, 5) == OCAP_EINVAL);
  CHECK(strcmp(ocap_kernel_errmsg(k), "vat v2 reused result vref 'p+5'") == 0);
  CHECK(ocap_kernel_send(k, "v2", target, &args, "p+5") == OCAP_EINVAL);
  CHECK(strcmp(ocap_kernel_errmsg(k), "vat v2 reused result vref 'p+5'") == 0);
  CHECK(ocap__kernel_send_pe(k, "v2", target, &args, 6) == OCAP_EINVAL);
  CHECK(strcmp(ocap_kernel_errmsg(k), "vat v2 reused result vref 'p+6'") == 0);
  /* Both messages reach v1, which decides their results as p-1 and p-2. */
  CHECK(run(k, r, 0) == 0);
  CHECK(count_lines(r, "v1 msg") == 2);
  ocap_capdata_t data = {"#1", 2, NULL, 0};
  CHECK(ocap__kernel_resolve_pi(k, "v1", 9, 0, &data) == OCAP_EINVAL);
  CHECK(strcmp(ocap_kernel_errmsg(k), "vat v1 used unknown import 'p-9'") == 0);
  CHECK(ocap__kernel_resolve_pi(k, "v2", 1, 0, &data) == OCAP_EINVAL);
  CHECK(strcmp(ocap_kernel_errmsg(k), "vat v2 used unknown import 'p-1'") == 0);
  REQUIRE(ocap__kernel_resolve_pi(k, "v1", 1, 0, &data) == 0);
  ocap_resolution_t res = {"p-2", 1, {"#2", 2, NULL, 0}};
  REQUIRE(ocap_kernel_resolve(k, "v1", &res, 1) == 0);
  /* Each resolved promise left v1's c-list: resolving it again, either
   * way, is refused alike. */
  CHECK(ocap__kernel_resolve_pi(k, "v1", 2, 0, &data) == OCAP_EINVAL);
  CHECK(strcmp(ocap_kernel_errmsg(k), "vat v1 used unknown import 'p-2'") == 0);
  res.kpid = "p-1";
  CHECK(ocap_kernel_resolve(k, "v1", &res, 1) == OCAP_EINVAL);
  CHECK(strcmp(ocap_kernel_errmsg(k), "vat v1 used unknown import 'p-1'") == 0);
  /* v2 is told both settlements. */
  CHECK(run(k, r, 0) == 0);
  CHECK(count_lines(r, "v2 notify") >= 1);
  CHECK(ocap_kernel_kref_of(k, "v2", "p+5", kp) == 0);
  CHECK(ocap_kernel_kref_of(k, "v2", "p+6", kp) == 0);
  CHECK(ocap_kernel_check(k) == 0);
  free_kernel(k);
  free(r);
}

int main(void) {
  clist_versions();
  commit_in_delivery();
  commit_then_fail(0);
  commit_then_fail(1);
  counters_at_sync();
  promise_bounds();
  queue_text();
  queue_rebased();
  queue_forget_rebased();
  endpoint_ids_spent();
  gc_faults();
  retire_indexed(3);
  retire_indexed(2000);
  gc_backlog(12, 1);
  gc_backlog(400, 0);
  subscribers(100, 0, 0);
  subscribers(6, 3, 1);
  terminate_linear(3000);
  terminate_linear(30000);
  terminate_faults();
  corrupt_values();
  unsynced_promises();
  rollback_unsynced();
  sync_faults();
  retake_parked();
  peer_endpoint();
  forget_in_delivery();
  host_kref_spelling();
  host_kref_unissued();
  empty_endpoint();
  numbered_vpids();
  if (failures > 0) {
    fprintf(stderr, "test_kernel: %d failure(s)\n", failures);
    return 1;
  }
  printf("test_kernel: all passed\n");
  return 0;
}
