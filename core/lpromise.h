/*
 * lpromise.h -- the core of ocap.promise in C (`ocap.promise.core`).
 *
 * lua/ocap/promise.lua is the module vat and host code require; it gives
 * this core its hooks and loads what is cold (finally, the combinators)
 * on first use, and takes everything else from here: the promise records,
 * settling and adoption, reactions, the turn queue and drain, next and
 * catch, kits and onSettle, and the tasks (call, xcall, spawn, await and
 * their pooled coroutines). The module has two functions: new(), which
 * makes a queue and the module table over it (promise.lua calls it once
 * as it loads, so a Lua state has one queue), and dropIdleWorkers(M),
 * which lets the collector have the idle pooled coroutines of the module
 * table M (a vat's start calls it, so that an idle vat keeps none).
 *
 * Conventions:
 *
 * 1. A promise is a userdata whose metatable is the module's: its bytes
 *    hold the state and flags (state, handled, locked, which first
 *    reaction), its user values the value and the reactions (three slots
 *    for the first, further ones); promise.lua's header documents them
 *    and the ECMAScript turn ordering this module keeps.
 * 2. Every function is a C closure over the same two upvalues (the
 *    queue's state and the promise metatable), so a vat pays a closure per
 *    function and no prototype.
 * 3. A raise in the middle of an operation (the vat's memory budget, a
 *    callback's error) leaves the records and the queue valid: room in the
 *    queue is made before anything is written, and a turn leaves the
 *    queue before it runs.
 * 4. Arguments from vat code are checked; a record whose slots vat code
 *    overwrote raises rather than crashes.
 * 5. drain charges the vat's meter for every turn it runs, and calls
 *    callbacks with continuations, so that a callback may yield the
 *    coroutine that drains as it could when drain was Lua.
 * 6. Coroutines are created through the state's own coroutine.create
 *    (handed over by promise.lua); tasks are resumed and run in protected
 *    calls in C, with what vat.c does around the vat's coroutine.resume,
 *    pcall and xpcall (ocap_vat_resume, ocap_vat_pcall_failed), so that a
 *    vat's meter and watchdog see them as they see vat code's.
 */
#ifndef OCAP_LPROMISE_H
#define OCAP_LPROMISE_H

#include <lua.h>

/* [-0, +1, m] Pushes the module table { new, dropIdleWorkers }. */
int luaopen_ocap_promise_core(lua_State *L);

/* [-0, +0] The queue of the core whose drain function is at idx, or NULL
 * when the value there is not such a function. The queue lives as long as
 * that function does. */
const void *ocap_promise_queue(lua_State *L, int idx);

/* Whether drain would do nothing on queue q: no turn is queued and no
 * unhandled rejection waits to be reported. A caller that drains after
 * each delivery (ldeliver.c) skips the call then, for the price of a
 * test instead of a call into the vat. */
int ocap_promise_idle(const void *q);

/*
 * Legs: a delivery the kernel runs in one of the vat's threads rather than
 * on its main one (lpromise.c says why), resumed with
 * ocap_vat_resume_entry (vat.h).
 *
 * [-0, +0; +*narg on the leg] ocap_promise_leg: takes the idle worker of queue q a delivery
 * can run in and pushes onto it what runs fn(arg) there when it is
 * resumed with them (*narg values); fn may yield it only through
 * dispatchCall. NULL when there is none (the delivery then takes the
 * main thread). Its pool's slot still holds it: the caller anchors it
 * while it runs.
 */
lua_State *ocap_promise_leg(const void *q, lua_CFunction fn, void *arg, int *narg);

/* [-nres, +0] on co: whether the resume of the leg co, which ended with
 * status (LUA_OK or LUA_YIELD) and nres values (popped here), ended its
 * delivery, the leg going back to its pool; else the leg parked (its
 * method awaits), and is its method's task from now on. */
int ocap_promise_leg_ended(const void *q, lua_State *co, int status, int nres);

#endif
