/*
 * lvattimer.c -- a vat's timers (setTimeout, setInterval): its live libuv
 * timers by id, the syscalls that arm and stop them, and the crank in
 * which a firing is delivered. A libuv callback only queues the firing;
 * the next crank (lkernel.c) takes it and enters the vat like any other
 * delivery (ldeliver.c).
 */
#include "lkernel_int.h"

static void timer_closed(uv_handle_t *h) {
  free(h->data);
}

static size_t timer_hash(long long id, size_t cap) {
  return (size_t)(((unsigned long long)id * 0x9E3779B97F4A7C15ULL) >> 32) & (cap - 1);
}

/* The slot of timer id in ts: the one holding it, or the free slot where
 * it would go. ts must have a slot. */
static vtimer_t **timer_slot(vtimers_t *ts, long long id) {
  size_t i = timer_hash(id, ts->cap);
  while (ts->slot[i] && ts->slot[i]->id != id)
    i = (i + 1) & (ts->cap - 1);
  return &ts->slot[i];
}

static vtimer_t *timer_find(vtimers_t *ts, long long id) {
  return ts->cap ? *timer_slot(ts, id) : NULL;
}

/* Adds t, whose id is not in ts. Returns 0 or OCAP_ENOMEM. */
static int timer_add(vtimers_t *ts, vtimer_t *t) {
  if (2 * (ts->n + 1) > ts->cap) {
    vtimers_t bigger = {calloc(ts->cap ? 2 * ts->cap : 16, sizeof(vtimer_t *)), 0, 0};
    if (!bigger.slot)
      return OCAP_ENOMEM;
    bigger.cap = ts->cap ? 2 * ts->cap : 16;
    for (size_t i = 0; i < ts->cap; i++)
      if (ts->slot[i])
        *timer_slot(&bigger, ts->slot[i]->id) = ts->slot[i];
    bigger.n = ts->n;
    free(ts->slot);
    *ts = bigger;
  }
  *timer_slot(ts, t->id) = t;
  ts->n++;
  return 0;
}

/* Removes timer id from ts, moving back the entries of its probe run so
 * that every entry stays reachable from its hash slot. */
static void timer_remove(vtimers_t *ts, long long id) {
  if (!ts->cap)
    return;
  vtimer_t **hole = timer_slot(ts, id);
  if (!*hole)
    return;
  *hole = NULL;
  ts->n--;
  size_t mask = ts->cap - 1, h = (size_t)(hole - ts->slot);
  for (size_t i = (h + 1) & mask; ts->slot[i]; i = (i + 1) & mask) {
    size_t home = timer_hash(ts->slot[i]->id, ts->cap);
    /* The entry may fill the hole when its home is not in (h, i]. */
    if (((i - home) & mask) >= ((i - h) & mask)) {
      ts->slot[h] = ts->slot[i];
      ts->slot[i] = NULL;
      h = i;
    }
  }
}

/* Stops and closes a timer's handle; libuv frees it in timer_closed. */
static void timer_close(vtimer_t *t) {
  uv_timer_stop(&t->handle);
  uv_close((uv_handle_t *)&t->handle, timer_closed);
}

void ocap__stop_timers(vtimers_t *ts) {
  for (size_t i = 0; i < ts->cap; i++)
    if (ts->slot[i])
      timer_close(ts->slot[i]);
  free(ts->slot);
  memset(ts, 0, sizeof *ts);
}

/* Queues a firing for its crank. A one-shot timer is done once it fired,
 * so it is closed and stops counting against the vat's maxTimers. */
static void timer_fired(uv_timer_t *h) {
  vtimer_t *t = h->data;
  lvat_t *rec = t->rec;
  lkernel_t *lk = rec->lk;
  if (lk->nfired == lk->capfired && lk->headfired > 0) {
    lk->nfired -= lk->headfired;
    memmove(lk->fired, lk->fired + lk->headfired, lk->nfired * sizeof *lk->fired);
    lk->headfired = 0;
  }
  if (lk->nfired == lk->capfired) {
    size_t cap = lk->capfired ? lk->capfired * 2 : 16;
    firing_t *f = realloc(lk->fired, cap * sizeof *f);
    if (f) {
      lk->fired = f;
      lk->capfired = cap;
    }
  }
  /* Without room, dropping a tick beats crashing the kernel. */
  if (lk->nfired < lk->capfired) {
    firing_t *f = &lk->fired[lk->nfired++];
    snprintf(f->vat, sizeof f->vat, "%s", rec->id);
    f->id = t->id;
  }
  if (uv_timer_get_repeat(h) == 0) {
    timer_remove(&rec->timers, t->id);
    timer_close(t);
  }
}

/* timerStart(id, ms, repeatMs?)  [-0, +0, e]
 * Restarting an existing id reuses its handle, so a vat cannot pile up
 * timers by restarting one; a new one over the vat's maxTimers raises an
 * ordinary error. */
static int sys_timer_start(lua_State *V) {
  lvat_t *rec = sysvat(V);
  lua_Integer id = luaL_checkinteger(V, 1);
  lua_Number ms = luaL_checknumber(V, 2), rep = luaL_optnumber(V, 3, 0);
  /* Beyond 2^53 ms (285,000 years) is forever; the cast must not overflow. */
  const lua_Number far = 9007199254740992.0;
  uint64_t due = ms > 0 ? (uint64_t)(ms < far ? ms : far) : 0;
  uint64_t every = rep > 0 ? (uint64_t)(rep < far ? rep : far) : 0;
  vtimer_t *t = timer_find(&rec->timers, id);
  if (!t) {
    if ((lua_Integer)rec->timers.n >= rec->budget.timers) {
      lua_pushfstring(V, "too many live timers: this vat's limit is %I (maxTimers)",
                      (LUAI_UACINT)rec->budget.timers);
      return lua_error(V);
    }
    t = calloc(1, sizeof *t);
    if (!t)
      return luaL_error(V, "out of memory");
    t->id = id;
    t->rec = rec;
    if (timer_add(&rec->timers, t)) {
      free(t);
      return luaL_error(V, "out of memory");
    }
    uv_timer_init(&rec->lk->loop, &t->handle);
    t->handle.data = t;
  }
  uv_timer_start(&t->handle, timer_fired, due, every);
  return 0;
}

/* timerStop(id)  [-0, +0, e] */
static int sys_timer_stop(lua_State *V) {
  lvat_t *rec = sysvat(V);
  lua_Integer id = luaL_checkinteger(V, 1);
  vtimer_t *t = timer_find(&rec->timers, id);
  if (t) {
    timer_remove(&rec->timers, id);
    timer_close(t);
  }
  return 0;
}

/* Only a vat endowed with setTimeout or setInterval gets these: a syscall
 * a vat was not given must not exist in it, whatever code gets hold of
 * its syscall table. */
const luaL_Reg ocap__timer_syscalls[] = {
    {"timerStart", sys_timer_start},
    {"timerStop", sys_timer_stop},
    {NULL, NULL},
};

/* [-0, +0] Delivers the oldest timer firing as a crank of its own, so a
 * timer's work commits or rolls back like a message's. */
int ocap__timer_crank(lkernel_t *lk) {
  firing_t f = lk->fired[lk->headfired++];
  if (lk->headfired == lk->nfired)
    lk->headfired = lk->nfired = 0;
  lvat_t *rec = find_vat(lk, f.vat);
  if (!rec || !rec->vat)
    return 1;
  int rc = ocap_kernel_failed(lk->k);
  if (!rc && (rc = ocap_store_commit(lk->s)) != 0)
    ocap_kernel_note_failure(lk->k, rc, "store commit failed");
  if (rc)
    return ocap_kernel_abort_crank(lk->k, rc);
  char id[32];
  snprintf(id, sizeof id, "%lld", f.id);
  ocap_delivery_t d = {0};
  d.type = OCAP_DELIVER_TIMER;
  d.target = id;
  int fatal = 0;
  char *why = NULL;
  rc = ocap__deliver_vat(lk, rec, &d, &fatal, &why);
  if (rc == OCAP_EFATAL && !ocap_kernel_failed(lk->k)) {
    ocap_store_abort(lk->s);
    rc = ocap_kernel_crash(lk->k, f.vat, fatal, why, NULL);
  }
  free(why);
  if (!rc && !ocap_kernel_failed(lk->k) && (rc = ocap_store_commit(lk->s)) != 0)
    ocap_kernel_note_failure(lk->k, rc, "store commit failed");
  if (rc || ocap_kernel_failed(lk->k))
    return ocap_kernel_abort_crank(lk->k, rc);
  return 1;
}
