--- Promises with JavaScript semantics and an explicit turn queue.
--
-- A promise is a userdata whose metatable is this module's `Promise`: its
-- bytes hold the state and flags (handled, already resolved), its user
-- values the value and its first reaction (three slots), so that creating
-- a promise allocates one object and subscribing to it once allocates
-- nothing (core/lpromise.c names the slots). An eighth slot holds further
-- reactions. Slots are read through the module's functions (state); a
-- write of an integer key writes that slot. `getmetatable(p)` answers the
-- queue's state (a userdata, `Promise` below), never the metatable: code
-- that could write the metatable could give promises a finalizer.
--
-- Callbacks never run synchronously. Settling a promise queues one turn per
-- reaction; `M.drain()` runs turns in FIFO order until the queue is empty.
-- The queue is a ring of four slots per turn (a job and its three
-- arguments), owned by this module: one queue per Lua state.
--
-- The module is C (core/lpromise.c, `ocap.promise.core`): a vat loads this
-- runtime as its own copy of each Lua function, while C functions cost it
-- nothing. This file gives the C core its hooks and loads `finally` and the
-- combinators on first use (ocap.promise.combinators), and documents the
-- API below.
--
-- Ordering follows ECMAScript exactly, turn for turn:
--
-- 1. A reaction (`next`, `catch`, `finally`, `await`, `onSettle`, a
--    combinator's element) costs one turn after the promise settles, or one
--    turn after it is attached if the promise is already settled.
-- 2. Resolving a promise with another of our promises (from a kit's
--    `resolve`, or by returning it from a callback) costs two extra turns, as
--    in JS: one for NewPromiseResolveThenableJob, which subscribes to it, and
--    one for the reaction that settles the adopting promise. So
--    `resolve():next(a1):next(a2)` and `resolve():next(b1)` log a1, b1, a2,
--    and a callback returning a promise delays its successor by two turns.
-- 3. `finally` is specified as in JS: `next(v -> resolve(f()):next(-> v))`.
-- 4. `all`, `allSettled`, `race` and `any` subscribe to each element in list
--    order; a non-promise element is an already-fulfilled one, so its turn is
--    queued at once.
-- 5. `await` in a coroutine always yields, even on a settled promise (one
--    turn, as in JS); `await` of a non-promise value returns it at once.
--    On the main thread, `await` of a settled promise returns at once
--    without running queued turns (there is no caller to yield to).
--
-- Coroutines made by `spawn` are pooled and reused once their function has
-- returned, so `coroutine.running()` identifies a task only while it runs.
-- A task must not `coroutine.yield` by itself: only `await` resumes it.
--
-- Only this module's promises are adopted: a table with a `next` method is a
-- plain value (Lua has no thenable convention, and presences may well have a
-- method called `next`).
local M = require('ocap.promise.core').new()
-- Functions that ignore a promise's "already resolved" flag are the
-- combinators' alone; the rest of the internals are used once, below.
local I = M._internal
M._internal = nil
local fulfill, rejectNow = I.fulfill, I.rejectNow

-- The API, implemented in core/lpromise.c:
--
-- Promises.
--   makePromise() -> p: a new pending promise, for hosts that resolve it
--     with resolvePromise and rejectPromise (cheaper than a kit: no
--     closures).
--   track(t, key) -> p: a new pending promise, with t[key] = p (a raw
--     write, refused on a table with a protected metatable, as the vat's
--     rawset refuses it); p remembers t and key (liveslots' pending table
--     and a send's result, in one call).
--   trackedKey(v, t) -> the key of v if track(t, key) made it, else nil.
--   makePromiseKit() -> { promise, resolve(v), reject(e) }
--   resolvePromise(p, v): resolves p with v (adopting v if it is a
--     promise); ignored once p has been resolved or rejected through this,
--     rejectPromise or a kit.
--   rejectPromise(p, e): rejects p with e; ignored likewise.
--   resolve(v) -> v itself if it is a promise, else a promise fulfilled
--     with v.
--   reject(e) -> a promise rejected with e.
--   settled(ok, v) -> a promise settled as a task ended: fulfilled with (or
--     adopting) v when ok, else rejected with v.
--   isPromise(v) -> true if v is one of this module's promises.
--   state(p) -> 'pending'|'fulfilled'|'rejected', the value or reason.
--   p:next(onFulfilled?, onRejected?) -> derived promise: JS `then` (a Lua
--     keyword). Handlers pass values through only when nil or false;
--     anything else is called. What a handler raises rejects the derived
--     promise; a string as an error value, its position removed, as a
--     method's raise is given to its caller (docs/errors.md).
--   p:catch(onRejected) -> derived promise.
--   p:finally(onFinally) -> derived promise settled like p after the
--     promise onFinally returns (if any) fulfills, or rejected with what
--     onFinally throws or its promise rejects with.
--   p:await(), await(p) -> p's value; raises its reason as is. In a
--     coroutine made by spawn it yields until p settles; on the main
--     thread it runs the main driver until p settles. A non-promise value
--     is returned as is.
--   onSettle(p, fn): calls fn(ok, value) in a turn once p settles (at once
--     if p is not a promise). Lighter than next: no derived promise.
--     Counts as handling a rejection. Errors thrown by fn propagate out of
--     drain.
--   settleAndResume(p, ok, v): settles p like resolvePromise (ok) or
--     rejectPromise, and when the turn queue is empty and p's only
--     reaction is an await, resumes that coroutine at once instead of
--     queueing its turn: what drain would run next anyway. For a caller
--     that drains right after, with nothing between.
--
-- Turns.
--   drain() -> n: runs queued turns in FIFO order until the queue is
--     empty, turns queued meanwhile included, then reports unhandled
--     rejections; returns the number of turns run.
--   hasTurns() -> true if turns are queued.
--   setUnhandledRejectionHandler(fn?) -> the previous handler: fn(reason,
--     promise) is called once for each promise rejected with no handler
--     attached by the end of a drain; nil ignores them.
--   setMainDriver(fn?): installs the function await calls on the main
--     thread, as fn(isSettled); it must run the world (kernel cranks and
--     drain) until isSettled() is true or nothing can make progress. nil
--     restores the default (drain until settled or no turns).
--
-- Tasks.
--   spawn(fn, ...) -> the promise of fn's first result, rejected with what
--     fn throws: runs fn(...) in a new ocap coroutine, at once, until its
--     first await or its end.
--   call(fn, ...) -> done, okOrPromise, value: like spawn, for a caller
--     that handles a result at once: a task that ends without awaiting
--     gets no promise. done is true if fn returned or threw without
--     awaiting; then okOrPromise is false if fn threw and value is fn's
--     first result or what it threw; else okOrPromise is the promise of
--     fn's first result.
--   xcall(ended, a, b, fn, handler, ...) -> done, okOrPromise, value,
--     busy: like call, for a caller that handles a failure where it
--     happens: runs xpcall(fn, handler, ...) in an ocap coroutine, at once;
--     when it fails, ended(a, b, false, reason), in the same coroutine,
--     makes the task's outcome (ok, value). ended must not raise. busy,
--     when done, is whether turns are queued (hasTurns). A delivery's
--     method runs this way.
--
-- Deliveries.
--   dispatchers(exports, method, xcall, ended, handler, resolveValue,
--     slowCall, after, pending, track) -> dispatchCall, dispatchSettle:
--     the functions the kernel calls for the deliveries it decodes
--     itself, made by liveslots over its own tables and functions
--     (core/lpromise.c says what each does), so that a message to an
--     exo's method that returns plain data, and a resolution, run no Lua
--     function of liveslots'.
--
-- The combinators, below, load on first use.

-- ocap.pass is required on first use, so that it may itself require this
-- module at load time. The stub replaces itself with the real function.
local makeError
makeError = function(message, name, code)
  makeError = require('ocap.pass').makeError
  return makeError(message, name, code)
end

-- finally and the combinators (all, allSettled, race, any) load on first
-- use: most vats never call them. Their module gets the internals it
-- builds on.
local cold
local function coldModule()
  if not cold then
    cold = require('ocap.promise.combinators').make(M, fulfill, rejectNow,
      function(...) return makeError(...) end)
  end
  return cold
end

function I.methods:finally(onFinally)
  return coldModule().finally(self, onFinally)
end

local function combinator(name)
  return function(list)
    return coldModule()[name](list)
  end
end

---A promise of the list of the elements' values, in list order; rejected by
---the first element to reject. `n` is set on the result when the list had
---one or when a value is nil.
---@param list any[] a sequence, or packed with `n`
---@return ocap.Promise
M.all = combinator('all')

---A promise of `{ status = 'fulfilled', value = v }` or
---`{ status = 'rejected', reason = e }` for each element, in list order.
---@param list any[]
---@return ocap.Promise
M.allSettled = combinator('allSettled')

---A promise settled like the first element to settle; pending forever for
---an empty list.
---@param list any[]
---@return ocap.Promise
M.race = combinator('race')

---A promise fulfilled like the first element to fulfill; rejected with an
---`AggregateError` whose `errors` lists every reason if all reject.
---@param list any[]
---@return ocap.Promise
M.any = combinator('any')

-- The C core calls makeError for a chaining cycle, and declares what
-- getmetatable answers for a promise to ocap.pass before the first
-- promise is made. It makes
-- coroutines with this state's own coroutine.create (a vat's is metered),
-- and resumes them and runs tasks as a vat's coroutine.resume, pcall and
-- xpcall would (the other three functions are checked, not kept).
local Promise = I.Promise
I.configure(function(message, name) return makeError(message, name) end,
  function() require('ocap.pass').registerPromiseMetatable(Promise) end,
  coroutine.resume, coroutine.create, pcall, xpcall)

return M
