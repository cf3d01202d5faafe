/*
 * ldeliver.c -- entering a vat: the kernel's hooks, which a crank calls to
 * deliver a message, a notify or a GC action to a vat or to the host's own
 * endpoint. A vat is entered only through its one protected path
 * (run_delivery), its Lua state started first by the host when it is not
 * live (lvat.c); what the vat does in the delivery comes back through its
 * syscalls (lsyscall.c).
 */
#include "lkernel_int.h"
#include "lpromise.h"
#include "lsmallcaps.h"

/* [-0, +1, m] Pushes a table of the capdata's slots, or nil when it has
 * none: most messages carry none, and liveslots reads nil as no slots. */
static void push_slots(lua_State *L, const ocap_capdata_t *cd) {
  if (cd->nslots == 0) {
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, (int)cd->nslots, 0);
  for (size_t i = 0; i < cd->nslots; i++) {
    lua_pushstring(L, cd->slots[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/*
 * [-0, +n, m] Pushes a delivery's arguments as liveslots' dispatch takes
 * them and returns n, their count. The vat and the host's endpoint share it,
 * so both see a delivery in the same shape.
 */
static int push_delivery(lua_State *L, const ocap_delivery_t *d) {
  static const char *const gc_kind[] = {"dropExports", "retireExports", "retireImports",
                                        "bringOutYourDead", "stopVat"};
  STACK_CHECK_BEGIN(L);
  if (d->type >= OCAP_DELIVER_DROP_EXPORTS && d->type <= OCAP_DELIVER_STOP_VAT) {
    lua_pushstring(L, gc_kind[d->type - OCAP_DELIVER_DROP_EXPORTS]);
    if (d->type >= OCAP_DELIVER_BRING_OUT_YOUR_DEAD) {
      STACK_CHECK_END(L, 1);
      return 1;
    }
    lua_createtable(L, (int)d->nvrefs, 0);
    for (size_t i = 0; i < d->nvrefs; i++) {
      lua_pushstring(L, d->vrefs[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    STACK_CHECK_END(L, 2);
    return 2;
  }
  if (d->type == OCAP_DELIVER_TIMER) {
    lua_pushliteral(L, "timer");
    lua_pushinteger(L, (lua_Integer)strtoll(d->target, NULL, 10));
    STACK_CHECK_END(L, 2);
    return 2;
  }
  if (d->type == OCAP_DELIVER_MESSAGE) {
    lua_pushliteral(L, "message");
    lua_pushstring(L, d->target);
    lua_pushlstring(L, d->methargs.body, d->methargs.blen);
    push_slots(L, &d->methargs);
    if (d->result)
      lua_pushstring(L, d->result);
    else
      lua_pushnil(L);
    STACK_CHECK_END(L, 5);
    return 5;
  }
  lua_pushliteral(L, "notify");
  if (d->nresolutions == 1) {
    /* The common case, one resolution, goes flat: no tables to make. */
    const ocap_resolution_t *r = &d->resolutions[0];
    lua_pushstring(L, r->kpid);
    lua_pushboolean(L, r->rejected);
    lua_pushlstring(L, r->data.body, r->data.blen);
    push_slots(L, &r->data);
    STACK_CHECK_END(L, 5);
    return 5;
  }
  lua_createtable(L, (int)d->nresolutions, 0);
  for (size_t i = 0; i < d->nresolutions; i++) {
    const ocap_resolution_t *r = &d->resolutions[i];
    lua_createtable(L, 4, 0);
    lua_pushstring(L, r->kpid);
    lua_rawseti(L, -2, 1);
    lua_pushboolean(L, r->rejected);
    lua_rawseti(L, -2, 2);
    lua_pushlstring(L, r->data.body, r->data.blen);
    lua_rawseti(L, -2, 3);
    push_slots(L, &r->data);
    lua_rawseti(L, -2, 4);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  STACK_CHECK_END(L, 2);
  return 2;
}

/* ---- entering a vat ---- */

/* [-0, +1, m] Pushes a vpid "p<sign><N>" (N a decimal of at most 18
 * digits without leading zeros, as liveslots' pendingKey reads one) as the
 * integer N, any other vpid as its string, so that no string
 * is made for every delivery. dispatchCall takes a message's result that
 * the kernel made for the vat ("p-<N>") so, since the vat only hands it
 * back to the resolve syscall (which takes N for it); dispatchSettle takes
 * a promise the vat made ("p+<N>", numbered by sendNumbered) so, as
 * liveslots keys the promises it awaits by that number. */
static void push_vpid(lua_State *V, const char *vpid, char sign) {
  if (vpid[0] == 'p' && vpid[1] == sign && vpid[2] >= '1' && vpid[2] <= '9') {
    lua_Integer n = vpid[2] - '0';
    const char *p = vpid + 3, *end = vpid + 2 + 18;
    unsigned digit;
    /* One unsigned comparison per digit, which also stops at the zero. */
    while ((digit = (unsigned)(unsigned char)*p - '0') <= 9 && p < end) {
      n = n * 10 + (lua_Integer)digit;
      p++;
    }
    if (*p == '\0') {
      lua_pushinteger(V, n);
      return;
    }
  }
  lua_pushstring(V, vpid);
}

/* [-?, +0] Where a leg's delivery continues once the method that parked
 * it ended (lpromise.c): that ended its task, not the delivery, whose
 * drain ran when it parked (run_leg). */
static int parked_k(lua_State *V, int status, lua_KContext ctx) {
  (void)V;
  (void)status;
  (void)ctx;
  return 0;
}

/*
 * [-0, +(0|1), e] Delivers a message, or a notify of one resolution, whose
 * capdata has no slots, the common case, to liveslots decoded here:
 * dispatchCall(target, result, method, args...) or dispatchSettle(kpid,
 * rejected, value). The body never becomes a Lua string, and liveslots
 * makes no protected call to decode it; the codec's model is fetched only
 * for a body its flat decoding leaves. Returns 1, or 0 with the stack as
 * it found it for a delivery of another kind or a body the codec leaves,
 * which goes the general way (push_delivery).
 *
 * Without slots, decoding calls nothing of the vat's (no slotToVal, no
 * import to count) and raises only when it exhausts the vat's memory or
 * meter: the mark set around it then makes the kernel refuse the
 * delivery, as the decode syscall does for the general way.
 */
static int deliver_values(lua_State *V, lvat_t *rec, const ocap_delivery_t *d) {
  const ocap_capdata_t *cd;
  int call = d->type == OCAP_DELIVER_MESSAGE;
  if (call)
    cd = &d->methargs;
  else if (d->type == OCAP_DELIVER_NOTIFY && d->nresolutions == 1)
    cd = &d->resolutions[0].data;
  else
    return 0;
  if (cd->nslots != 0)
    return 0;
  STACK_CHECK_BEGIN(V);
  if (call) {
    lua_rawgeti(V, LUA_REGISTRYINDEX, rec->call_ref);
    lua_pushstring(V, d->target);
    if (d->result)
      push_vpid(V, d->result, '-');
    else
      lua_pushnil(V);
  } else {
    lua_rawgeti(V, LUA_REGISTRYINDEX, rec->settle_ref);
    push_vpid(V, d->resolutions[0].kpid, '+');
    lua_pushboolean(V, d->resolutions[0].rejected);
  }
  rec->decode_failed = 1;
  int v = ocap_sc_push_decoded_flat(rec->vat, V, cd->body, cd->blen, call);
  if (v < 0) {
    /* The model goes under the values, and out of the call's way once
     * they are pushed. */
    lua_rawgeti(V, LUA_REGISTRYINDEX, rec->model_ref);
    int model = lua_gettop(V);
    v = ocap_sc_push_decoded(V, model, cd->body, cd->blen, call);
    lua_remove(V, model);
  }
  rec->decode_failed = 0;
  if (v < 0) {
    lua_pop(V, 3);
    STACK_CHECK_END(V, 0);
    return 0;
  }
  /* In a leg, dispatchCall's method may park it: nothing below runs. */
  lua_callk(V, 2 + v, 0, 0, parked_k);
  /* Liveslots' drain after the delivery, when the promise core has work
   * for it: most deliveries queue no turn (two calls into the vat saved
   * per round trip). */
  if (!ocap_promise_idle(rec->queue)) {
    lua_rawgeti(V, LUA_REGISTRYINDEX, rec->drain_ref);
    lua_call(V, 0, 0);
  }
  STACK_CHECK_END(V, 0);
  return 1;
}

/* What run_delivery hands the trampoline, as one light userdata. */
typedef struct tramp_args {
  lvat_t *rec;
  const ocap_delivery_t *d;
} tramp_args_t;

/*
 * tramp(args)  [-0, +0, e]
 * Runs inside the vat's protected path and builds the delivery's arguments
 * there, so that running out of the vat's memory while building them is
 * caught like any other failure of the crank. Its argument stays below
 * the call it makes, which takes its function and arguments from the top.
 */
static int vat_deliver_tramp(lua_State *V) {
  const tramp_args_t *a = lua_touserdata(V, 1);
  lvat_t *rec = a->rec;
  const ocap_delivery_t *d = a->d;
  if (rec->call_ref != LUA_NOREF && deliver_values(V, rec, d))
    return 0;
  lua_rawgeti(V, LUA_REGISTRYINDEX, rec->dispatch_ref);
  int n = push_delivery(V, d);
  lua_call(V, n, 0);
  return 0;
}

static int map_status(int st) {
  return st == OCAP_VAT_METER    ? OCAP_FATAL_METER
         : st == OCAP_VAT_MEMORY ? OCAP_FATAL_MEMORY
                                 : OCAP_FATAL_INTERNAL;
}

/*
 * [-0, +(0|1)] Runs the trampoline in co, an idle worker of the vat's
 * promise core (a leg, lpromise.c), rather than in a protected call on
 * the main thread: a method that does not await then runs in it with no
 * coroutine of its own. When the method awaits, the leg parks as its
 * task, and what the delivery queued is drained here, within the same
 * budgets. Returns as ocap_vat_pcall, leaving the same.
 */
static int run_leg(lvat_t *rec, lua_State *co, int narg) {
  lua_State *V = ocap_vat_state(rec->vat);
  int nres, status, st;
  /* Held here while it runs: a worker pooled meanwhile may take its slot. */
  lua_pushthread(co);
  lua_xmove(co, V, 1);
  st = ocap_vat_resume_entry(rec->vat, co, narg, &nres, &status);
  if (status == LUA_YIELD && st == OCAP_VAT_OK) {
    if (!ocap_promise_leg_ended(rec->queue, co, status, nres) && !ocap_promise_idle(rec->queue)) {
      lua_rawgeti(V, LUA_REGISTRYINDEX, rec->drain_ref);
      st = ocap_vat_pcall(rec->vat, 0, 0);
    }
  } else if (st == OCAP_VAT_OK) {
    ocap_promise_leg_ended(rec->queue, co, status, nres);
  }
  if (status == LUA_YIELD)
    ocap_vat_close(rec->vat);
  if (st != OCAP_VAT_OK)
    lua_copy(V, -1, -2); /* the message, over the thread */
  lua_pop(V, 1);
  return st;
}

/* [-0, +0] Whether d can run in a leg: a message or one resolution the
 * kernel decodes itself (deliver_values). */
static int legged(lvat_t *rec, const ocap_delivery_t *d) {
  if (rec->call_ref == LUA_NOREF)
    return 0;
  if (d->type == OCAP_DELIVER_MESSAGE)
    return d->methargs.nslots == 0;
  return d->type == OCAP_DELIVER_NOTIFY && d->nresolutions == 1 &&
         d->resolutions[0].data.nslots == 0;
}

/* [-0, +0] Runs d in the vat through the one protected path, with the
 * delivery's budgets fresh, and returns how the call ended; an error
 * message it leaves is popped, and kept in *msg (malloc'd) when asked. */
static int run_delivery(lkernel_t *lk, lvat_t *rec, const ocap_delivery_t *d, char **msg) {
  lua_State *V = ocap_vat_state(rec->vat);
  STACK_CHECK_BEGIN(V);
  rec->sent = 0;
  rec->logged = 0;
  rec->decode_failed = 0;
  tramp_args_t args = {rec, d};
  lvat_t *outer = lk->delivering;
  lk->delivering = rec;
  lk->ran = rec;
  lua_State *co = NULL;
  int st, narg;
  if (legged(rec, d) && !ocap_vat_fatal(rec->vat))
    co = ocap_promise_leg(rec->queue, vat_deliver_tramp, &args, &narg);
  if (co) {
    st = run_leg(rec, co, narg);
  } else {
    ocap_vat_push_handler(rec->vat); /* spares ocap_vat_pcall inserting it */
    lua_pushcfunction(V, vat_deliver_tramp);
    lua_pushlightuserdata(V, &args);
    st = ocap_vat_pcall_handled(rec->vat, 1, 0);
  }
  lk->delivering = outer;
  if (st != OCAP_VAT_OK) {
    const char *m = lua_tostring(V, -1);
    if (msg)
      *msg = dupstr(m ? m : "liveslots failed");
    lua_pop(V, 1);
  }
  if (!co)
    lua_pop(V, 1); /* the handler */
  STACK_CHECK_END(V, 0);
  return st;
}

/* [-0, +0] Hands an entry the kernel writes about a vat to the host's
 * logger, as the vat's own entries are (a smallcaps record). */
static void log_for_vat(lkernel_t *lk, lvat_t *rec, const char *level, const char *message) {
  lua_State *L = lk->L;
  if (!L || lk->logger_ref == LUA_NOREF)
    return;
  STACK_CHECK_BEGIN(L);
  lk->host_ran = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->logger_ref);
  lua_pushstring(L, rec->id);
  lua_pushstring(L, level);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "#{\"message\":\"");
  ocap__add_json_string(&b, message, strlen(message));
  luaL_addstring(&b, "\",\"tags\":[\"kernel\"]}");
  luaL_pushresult(&b);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK)
    lua_pop(L, 1);
  STACK_CHECK_END(L, 0);
}

/*
 * [-0, +0] A delivery whose decoding exhausted the vat's memory or meter:
 * the vat is not blamed for what its sender made it decode. Its mark is
 * cleared, and instead of the message its result is rejected (by the
 * kernel, in the vat's name, since the vat now decides it); instead of a
 * notify the vat is told that each promise was rejected. What the vat's
 * runtime did while decoding (imports, subscriptions) stays, so its tables
 * and the kernel's agree. Returns 0, or OCAP_EFATAL with *fatal and *why
 * set when even that fails.
 */
static int refuse_decode(lkernel_t *lk, lvat_t *rec, const ocap_delivery_t *d, int st, int *fatal,
                         char **why) {
  char msg[256], body[400];
  const char *what = d->type == OCAP_DELIVER_MESSAGE ? "message" : "promise resolution";
  if (st == OCAP_VAT_MEMORY)
    snprintf(msg, sizeof msg,
             "[KERNEL:DELIVERY_REFUSED] vat %s refused a %s it has no memory to decode "
             "(memoryLimit %lld bytes)",
             rec->id, what, (long long)rec->budget.memory);
  else
    snprintf(msg, sizeof msg,
             "[KERNEL:DELIVERY_REFUSED] vat %s refused a %s too costly to decode "
             "(meter %lld instructions)",
             rec->id, what, (long long)rec->budget.instructions);
  int blen = snprintf(body, sizeof body, "#{\"#error\":\"%s\",\"name\":\"Error\"}", msg);
  ocap_vat_forgive(rec->vat);
  log_for_vat(lk, rec, "warn", msg + strlen("[KERNEL:DELIVERY_REFUSED] "));
  ocap_capdata_t err = {body, (size_t)blen, NULL, 0};
  if (d->type == OCAP_DELIVER_MESSAGE) {
    if (!d->result)
      return 0;
    ocap_resolution_t r = {d->result, 1, err};
    if (ocap_kernel_resolve(lk->k, rec->id, &r, 1) == 0)
      return 0;
    *fatal = OCAP_FATAL_INTERNAL;
    *why = dupstr(ocap_kernel_errmsg(lk->k));
    return OCAP_EFATAL;
  }
  ocap_resolution_t *rs = malloc(d->nresolutions * sizeof *rs);
  if (!rs) {
    *fatal = OCAP_FATAL_INTERNAL;
    *why = dupstr("out of memory");
    return OCAP_EFATAL;
  }
  for (size_t i = 0; i < d->nresolutions; i++) {
    rs[i].kpid = d->resolutions[i].kpid;
    rs[i].rejected = 1;
    rs[i].data = err;
  }
  ocap_delivery_t told = *d;
  told.resolutions = rs;
  st = run_delivery(lk, rec, &told, why);
  free(rs);
  if (st == OCAP_VAT_OK && !rec->fatal)
    return 0;
  free(*why);
  *why = NULL;
  return st == OCAP_VAT_OK ? 0 : OCAP_EFATAL; /* finished by ocap__deliver_vat */
}

/*
 * [-0, +0] Delivers d to the live vat rec through the one protected path;
 * it never raises. Returns OCAP_EFATAL with *fatal and *why (malloc'd) set
 * when the crank must be rolled back and the vat terminated, else 0.
 */
int ocap__deliver_vat(lkernel_t *lk, lvat_t *rec, const ocap_delivery_t *d, int *fatal,
                      char **why) {
  char *msg = NULL;
  /* Every delivery but a reap counts towards the next reap, which runs
   * before the run queue's next item. */
  if (d->type == OCAP_DELIVER_BRING_OUT_YOUR_DEAD)
    rec->since_reap = 0;
  else if (d->type != OCAP_DELIVER_STOP_VAT && lk->reap_interval > 0 &&
           ++rec->since_reap >= lk->reap_interval) {
    rec->since_reap = 0;
    ocap_kernel_schedule_reap(lk->k, rec->id);
  }
  int st = run_delivery(lk, rec, d, &msg);
  if ((st == OCAP_VAT_METER || st == OCAP_VAT_MEMORY) && rec->decode_failed && !rec->fatal &&
      d->type != OCAP_DELIVER_TIMER) {
    free(msg);
    msg = NULL;
    int rc = refuse_decode(lk, rec, d, st, fatal, why);
    if (rc == 0 || *fatal)
      return rc;
    st = ocap_vat_fatal(rec->vat) ? ocap_vat_fatal(rec->vat) : OCAP_VAT_ERROR;
  }
  if (rec->fatal && (st == OCAP_VAT_OK || st == OCAP_VAT_ERROR)) {
    /* An illegal syscall or a budget of the delivery: the vat's own error,
     * whether its code caught it or not. */
    *fatal = rec->fatal;
    *why = rec->why;
    rec->why = NULL;
    rec->fatal = 0;
  } else if (st != OCAP_VAT_OK) {
    *fatal = map_status(st);
    *why = dupstr(st == OCAP_VAT_METER || st == OCAP_VAT_MEMORY ? ocap_vat_fatal_reason(rec->vat)
                  : msg                                         ? msg
                                                                : "liveslots failed");
    free(rec->why);
    rec->why = NULL;
    rec->fatal = 0;
  }
  free(msg);
  return *fatal ? OCAP_EFATAL : 0;
}

/*
 * [-0, +0, m] Calls the host's `vatNeeded(vatId)` to (re)start a vat lazily,
 * since vats are only built when a delivery needs them. When it returns or
 * raises an error message, the vat's record keeps it as the reason the vat
 * could not start.
 */
static void ensure_vat(lkernel_t *lk, const char *ep) {
  lua_State *L = lk->L;
  if (!L || lk->vat_needed_ref == LUA_NOREF)
    return;
  STACK_CHECK_BEGIN(L);
  lk->host_ran = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->vat_needed_ref);
  lua_pushstring(L, ep);
  const char *was = lk->starting;
  lk->starting = ep;
  int rc = lua_pcall(L, 1, 1, 0);
  lk->starting = was;
  if (rc != LUA_OK || lua_isstring(L, -1)) {
    lvat_t *rec = ocap__make_vat_record(lk, ep);
    const char *msg = lua_tostring(L, -1); /* NULL for an error object */
    if (rec) {
      free(rec->why);
      rec->why = msg ? dupstr(msg) : NULL;
    }
  }
  lua_pop(L, 1);
  STACK_CHECK_END(L, 0);
  /* The start goes with the crank: its writes (the previous incarnation's
   * promises rejected, the imports its heap must learn) roll back if the
   * crank fails, even before the vat is delivered to, and the heap must
   * then go too, to start again (one_crank). */
  lvat_t *rec = find_vat(lk, ep);
  if (rec && rec->vat)
    lk->started = rec;
}

/*
 * [-0, +0, m] Delivers d to the kernel's own endpoint, the host's dispatch.
 * A failure there is reported and dropped rather than made fatal, because
 * the kernel endpoint cannot be terminated like a vat.
 */
static int deliver_host(lkernel_t *lk, const ocap_delivery_t *d) {
  lua_State *L = lk->L;
  if (!L || lk->host_dispatch_ref == LUA_NOREF)
    return 0;
  /* The host's heap is reaped like a vat's (ocap__deliver_vat): otherwise the
   * presences host code lets go of, and the exports they keep alive in
   * the vats, would pile up until the host asks for a collection. */
  if (d->type == OCAP_DELIVER_BRING_OUT_YOUR_DEAD)
    lk->host_since_reap = 0;
  else if (lk->reap_interval > 0 && ++lk->host_since_reap >= lk->reap_interval) {
    lk->host_since_reap = 0;
    ocap_kernel_schedule_reap(lk->k, "kernel");
  }
  lk->host_ran = 1;
  if (ocap__host_notify(lk, L, d)) /* the common resolution, in C (lkernel.c) */
    return 0;
  STACK_CHECK_BEGIN(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->host_dispatch_ref);
  int n = push_delivery(L, d);
  if (lua_pcall(L, n, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "ocap: kernel endpoint dispatch failed: %s\n", msg ? msg : "(error object)");
    lua_pop(L, 1);
  }
  STACK_CHECK_END(L, 0);
  return 0;
}

/*
 * [-0, +0, m] Delivers d to a remote peer's endpoint: the host's remote
 * layer writes what it means for the peer (op:deliver, op:gc-export), to
 * be sent once the crank commits. As for the host's endpoint, a failure
 * is reported and dropped: the layer ends a session itself.
 *
 * A message must not vanish when no session takes it: the kernel can
 * hold an endpoint r<N> that nothing serves, because no remote layer set
 * a peer dispatch (a kernel opened without `remote` on a database that
 * still names the endpoint) or because the session has ended and its
 * endpoint is terminated only once the crank in progress is over (the
 * layer's dispatch then returns a `[KERNEL:<CODE>] ...` message). The
 * message is refused instead (OCAP_EREFUSED, *why set), and the kernel
 * rejects its result with that error. Other deliveries to such an
 * endpoint (notifies, GC) carry nothing anyone waits for: dropped.
 */
static int deliver_peer(lkernel_t *lk, const char *ep, const ocap_delivery_t *d, char **why) {
  lua_State *L = lk->L;
  if (d->type == OCAP_DELIVER_BRING_OUT_YOUR_DEAD)
    return 0;
  if (!L || lk->peer_dispatch_ref == LUA_NOREF) {
    if (d->type != OCAP_DELIVER_MESSAGE)
      return 0;
    size_t n = strlen(ep) + 96;
    *why = malloc(n);
    if (!*why)
      return OCAP_ENOMEM;
    snprintf(
        *why, n,
        "[KERNEL:CONNECTION_LOST] peer endpoint %s has no session: remote comms are not running",
        ep);
    return OCAP_EREFUSED;
  }
  STACK_CHECK_BEGIN(L);
  lk->host_ran = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lk->peer_dispatch_ref);
  lua_pushstring(L, ep);
  int n = push_delivery(L, d);
  int rc = 0;
  if (lua_pcall(L, n + 1, 1, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "ocap: peer %s dispatch failed: %s\n", ep, msg ? msg : "(error object)");
  } else if (d->type == OCAP_DELIVER_MESSAGE && lua_type(L, -1) == LUA_TSTRING) {
    *why = dupstr(lua_tostring(L, -1));
    rc = *why ? OCAP_EREFUSED : OCAP_ENOMEM;
  }
  lua_pop(L, 1);
  STACK_CHECK_END(L, 0);
  return rc;
}

/*
 * [-0, +0, m] The kernel's deliver hook: routes d to the host's endpoint,
 * to a remote peer's or
 * to a vat, starting the vat first when its state is not live, and refuses
 * it (OCAP_EREFUSED) when the vat cannot be started. The kernel calls it
 * inside K:step, with the stepping thread in lk->L.
 */
int ocap__hook_deliver(void *ud, const char *ep, const ocap_delivery_t *d, int *fatal, char **why) {
  lkernel_t *lk = ud;
  if (ep[0] == 'k' && strcmp(ep, "kernel") == 0)
    return deliver_host(lk, d);
  if (ep[0] == 'r')
    return deliver_peer(lk, ep, d, why);
  lvat_t *rec = find_vat(lk, ep);
  /* A vat that is not running has no heap to collect. */
  if (d->type == OCAP_DELIVER_BRING_OUT_YOUR_DEAD && (!rec || !rec->vat))
    return 0;
  if ((!rec || !rec->vat) && !(rec && rec->why)) {
    ensure_vat(lk, ep); /* not prepared: a notify to a vat not running */
    rec = find_vat(lk, ep);
  }
  if (!rec || !rec->vat) {
    /* A vat that cannot be started keeps its state for the host to decide
     * on: the delivery is refused, never made the vat's fatal fault. */
    *why = dupstr(rec && rec->why ? rec->why : "[KERNEL:VAT_FAILED] the vat could not be started");
    if (rec) {
      free(rec->why);
      rec->why = NULL;
    }
    return OCAP_EREFUSED;
  }
  return ocap__deliver_vat(lk, rec, d, fatal, why);
}

/*
 * [-0, +0] The kernel's prepare hook: starts a vat that is not running
 * before a message is routed to it. A failure is kept in the vat's record
 * (rec->why), and the delivery that follows reports it.
 */
void ocap__hook_prepare(void *ud, const char *ep) {
  lkernel_t *lk = ud;
  if (ep[0] == 'r') /* a peer has no state to start */
    return;
  lvat_t *rec = find_vat(lk, ep);
  if (!rec || !rec->vat)
    ensure_vat(lk, ep);
}

/*
 * [-0, +0, m] The kernel's pipelines hook: the host's `pipelines(kpid)`
 * says whether it takes the messages sent to a promise it decides (a
 * promise that follows a remote answer), and the remote layer's
 * dispatch(ep, 'pipelines', eref) whether a peer takes those sent to a
 * promise it decides (its answer, which they follow across the wire).
 * Vats never do (docs/promises.md). An error in the function counts as no.
 */
int ocap__hook_pipelines(void *ud, const char *ep, const char *eref) {
  lkernel_t *lk = ud;
  lua_State *L = lk->L;
  int peer = ep[0] == 'r';
  int ref = peer ? lk->peer_dispatch_ref : lk->host_pipelines_ref;
  if (!L || ref == LUA_NOREF || (!peer && strcmp(ep, "kernel") != 0))
    return 0;
  STACK_CHECK_BEGIN(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  if (peer) {
    lua_pushstring(L, ep);
    lua_pushliteral(L, "pipelines");
  }
  lua_pushstring(L, eref);
  int yes = lua_pcall(L, peer ? 3 : 1, 1, 0) == LUA_OK && lua_toboolean(L, -1);
  lua_pop(L, 1);
  STACK_CHECK_END(L, 0);
  return yes;
}

/*
 * [-0, +0, m] The kernel's terminated hook: drops the vat's state, then tells
 * the host, whose handler records the reason. An error in the handler is
 * dropped, because the kernel has already forgotten the vat.
 */
void ocap__hook_terminated(void *ud, const char *ep, const char *reason, size_t rlen) {
  lkernel_t *lk = ud;
  lvat_t *rec = find_vat(lk, ep);
  if (rec)
    ocap__stop_vat(rec);
  lua_State *L = lk->L;
  if (L && lk->terminated_ref != LUA_NOREF) {
    STACK_CHECK_BEGIN(L);
    lk->host_ran = 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lk->terminated_ref);
    lua_pushstring(L, ep);
    lua_pushlstring(L, reason, rlen);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      lua_pop(L, 1);
    STACK_CHECK_END(L, 0);
  }
}
