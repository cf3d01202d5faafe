--- Promises with JavaScript semantics and an explicit turn queue.
--
-- A promise is a table whose metatable is this module's `Promise`; its state
-- lives in the table's array slots (see S, V, ... below) and its first
-- reaction in three more slots, so that creating a promise allocates one
-- table and subscribing to it once allocates nothing.
--
-- Callbacks never run synchronously. Settling a promise queues one turn per
-- reaction; `M.drain()` runs turns in FIFO order until the queue is empty.
-- The queue is a ring of four slots per turn (a job and its three
-- arguments), owned by this module: one queue per Lua state.
--
-- The records, settling, reactions, the queue and `drain`, `next`, `catch`,
-- kits and `onSettle` are C (core/lpromise.c, `ocap.promise.core`): a vat
-- loads this runtime as its own copy of each Lua function, while C functions
-- cost it nothing. What runs coroutines (await, call, xcall, spawn) stays
-- here, and `finally` and the combinators load on first use
-- (ocap.promise.combinators).
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
-- The functions that ignore a promise's "already resolved" flag are this
-- module's and the combinators' alone.
local I = M._internal
M._internal = nil

local getmetatable = getmetatable
local setmetatable = setmetatable
local pcall = pcall
local xpcall = xpcall
local error = error
local cocreate = coroutine.create
local coresume = coroutine.resume
local coyield = coroutine.yield
local corunning = coroutine.running
local costatus = coroutine.status

local PENDING <const> = 0
local FULFILLED <const> = 1
local REJECTED <const> = 2

-- The slots of a promise table (core/lpromise.c writes them). An array part
-- of eight slots, sized by the constructor, costs a third of a hash part
-- with eight named fields.
local S <const> = 1    -- state: PENDING, FULFILLED or REJECTED
local V <const> = 2    -- value or reason
local H <const> = 3    -- handled: a reaction was attached, or the rejection reported
-- 4: already resolved through resolvePromise, rejectPromise or a kit
local RA <const> = 5   -- the first reaction, three slots
local RB <const> = 6
local RC <const> = 7
-- 8: further reactions, a flat array of triples, or nil

local IDLE_MESSAGE = 'promise can never settle: kernel is idle'
local NOT_OCAP_MESSAGE = 'await: not inside an ocap coroutine (use ocap.spawn)'

local Promise, methods, AWAIT = I.Promise, I.methods, I.AWAIT
local subscribe, resolveNow, rejectNow, takeAwaiter = I.subscribe, I.resolveNow, I.rejectNow, I.takeAwaiter
local newPromise, hasTurns, drain = M.makePromise, M.hasTurns, M.drain

-- ocap.pass is required on first use, so that it may itself require this
-- module at load time. The stub replaces itself with the real function.
local makeError
makeError = function(message, name, code)
  makeError = require('ocap.pass').makeError
  return makeError(message, name, code)
end

------------------------------------------------------------------------------
-- Coroutines.

local resumeJob, taskEnded

-- Every coroutine spawn made, to true, or while its task awaits, to the
-- promise of the task's result. A task that ends without awaiting never
-- gets one: its caller takes the result directly.
local tracked = setmetatable({}, { __mode = 'k' })
local POOL_KEY = {}      -- first resume argument that hands a worker a task
local CHECKED_KEY = {}   -- the same, for a task of M.xcall
local DONE = {}          -- yielded by a worker that finished its task
local STRAY = {}         -- yielded by an idle worker resumed by someone else
local AWAITING = {}      -- yielded by await
local POOL_MAX <const> = 64
local pool, poolN = {}, 0
-- The workers of M.xcall, pooled apart from the others (see checkedWorker).
local checkedPool, checkedN = {}, 0
local checkedWorkers = setmetatable({}, { __mode = 'k' })

-- How the task a worker just finished ended, handed to whoever resumed it
-- right after the resume returns: yielding the values instead would keep
-- the last result alive on the idle worker's stack.
local doneOk, doneValue = false, nil

local function finishTask(ok, r)
  doneOk, doneValue = ok, r
end

-- The body of every spawned coroutine: it runs tasks and is reused for the
-- next one once its task is done, as creating a coroutine costs more than a
-- whole promise round trip.
-- Idling is a separate tail call so that an idle worker's stack holds no
-- trace of its last task.
local idle
local function worker(key, fn, ...)
  if key == POOL_KEY then
    finishTask(pcall(fn, ...))
    return idle(DONE)
  end
  return idle(STRAY)
end

function idle(token)
  return worker(coyield(token))
end

-- The workers of M.xcall, pooled apart: their body takes the task's
-- arguments as they come, with no call in between, and only a failure
-- costs a call to ended.
local checkedIdle
local function checkedWorker(key, ended, a, b, fn, handler, ...)
  if key == CHECKED_KEY then
    local ok, r = xpcall(fn, handler, ...)
    if ok then
      doneOk, doneValue = true, r
    else
      doneOk, doneValue = ended(a, b, false, r)
    end
    return checkedIdle(DONE)
  end
  return checkedIdle(STRAY)
end

function checkedIdle(token)
  return checkedWorker(coyield(token))
end

-- Resumes a task's coroutine. Returns true, ok and the task's first result
-- (or what it threw) when the task finished, and pools the worker; returns
-- false while the task awaits.
-- Whether what coroutine.resume answered is its refusal to resume a
-- coroutine that is not suspended (one that its user closed, say), which
-- runs nothing: cheaper to recognise after the fact than to ask
-- coroutine.status before every resume.
local function unresumable(what)
  return what == 'cannot resume dead coroutine' or what == 'cannot resume non-suspended coroutine'
end

-- Puts a worker whose task is done back in its pool, unless it is full.
local function repool(co)
  if checkedWorkers[co] then
    if checkedN < POOL_MAX then
      checkedN = checkedN + 1
      checkedPool[checkedN] = co
    end
  elseif poolN < POOL_MAX then
    poolN = poolN + 1
    pool[poolN] = co
  end
end

local function resumeTask(co, ...)
  local ok, what = coresume(co, ...)
  if not ok then error(what, 0) end
  if what ~= DONE then return false end
  local tok, r = doneOk, doneValue
  doneOk, doneValue = false, nil
  repool(co)
  return true, tok, r
end

-- A task's coroutine just finished (yielded DONE) after awaiting: pools
-- it, and settles the promise of its result.
function taskEnded(co)
  local ok, r = doneOk, doneValue
  doneOk, doneValue = false, nil
  repool(co)
  local p = tracked[co]
  if p and p ~= true then
    tracked[co] = true
    if ok then resolveNow(p, r) else rejectNow(p, r) end
  end
end

function resumeJob(co)
  -- A coroutine that is not suspended is being resumed by someone other
  -- than the await it is in; await checks its promise, so skipping is safe.
  if costatus(co) == 'suspended' then
    local ok, what = coresume(co)
    if not ok then error(what, 0) end
    if what == DONE then taskEnded(co) end
  end
end

---Runs `fn(...)` in an ocap coroutine, at once, until its first `await` or
---its end. Cheaper than `spawn` for a caller that handles a result at once:
---a task that ends without awaiting gets no promise.
---@param fn function
---@param ... any arguments for fn
---@return boolean done true if fn returned or threw without awaiting
---@return any okOrPromise when done, false if fn threw; else the promise of fn's first result
---@return any value when done, fn's first result or what it threw
-- A pooled worker, or a new one.
local function acquire()
  local co
  while poolN > 0 and co == nil do
    co = pool[poolN]
    pool[poolN] = nil
    poolN = poolN - 1
    if costatus(co) ~= 'suspended' then co = nil end  -- closed by its user
  end
  if co == nil then
    co = cocreate(worker)
    tracked[co] = true
  end
  return co
end

function M.call(fn, ...)
  local co = acquire()
  local done, ok, r = resumeTask(co, POOL_KEY, fn, ...)
  if done then return true, ok, r end
  local p = newPromise()
  tracked[co] = p
  return false, p
end
local call = M.call

---Like `call`, for a caller that handles a failure where it happens: runs
---`xpcall(fn, handler, ...)` in an ocap coroutine, at once; when it fails,
---`ended(a, b, false, reason)`, in the same coroutine, makes the task's
---outcome (ok, value). ended must not raise. One protected call where
---`call` of a function that xpcalls would make two, and no Lua call
---between this and fn: a delivery's method runs this way.
---@param ended fun(a: any, b: any, ok: boolean, r: any): boolean, any
---@return boolean done
---@return any okOrPromise
---@return any value
---@return boolean|nil busy when done, whether turns are queued (hasTurns)
function M.xcall(ended, a, b, fn, handler, ...)
  local co, rok, what
  -- Every delivered method comes this way, so the checked pool is taken
  -- from and refilled here rather than through functions shared with
  -- call: those two Lua calls cost about 300 instructions a round trip
  -- (callgrind, bench/roundtrip.lua). A closed worker is recognised by
  -- the resume it refuses, which saves call's coroutine.status.
  repeat
    if checkedN > 0 then
      co = checkedPool[checkedN]
      checkedPool[checkedN] = nil
      checkedN = checkedN - 1
    else
      co = cocreate(checkedWorker)
      tracked[co] = true
      checkedWorkers[co] = true
    end
    rok, what = coresume(co, CHECKED_KEY, ended, a, b, fn, handler, ...)
    -- A worker its user closed refuses the resume without running
    -- anything: the next one takes the task.
  until rok or not unresumable(what)
  if not rok then error(what, 0) end
  if what ~= DONE then
    local p = newPromise()
    tracked[co] = p
    return false, p
  end
  local ok, r = doneOk, doneValue
  doneOk, doneValue = false, nil
  if checkedN < POOL_MAX then
    checkedN = checkedN + 1
    checkedPool[checkedN] = co
  end
  return true, ok, r, hasTurns()
end

---Runs `fn(...)` in a new ocap coroutine, at once, until its first `await`
---or its end.
---@param fn function
---@param ... any arguments for fn
---@return ocap.Promise promise of fn's first result; rejected with what fn throws
function M.spawn(fn, ...)
  local done, ok, r = call(fn, ...)
  if not done then return ok end
  return M.settled(ok, r)
end

local function defaultDriver(isSettled)
  while not isSettled() and hasTurns() do
    drain()
  end
end

local mainDriver = defaultDriver

local function mainAwait(p)
  p[H] = true
  if p[S] == PENDING then
    mainDriver(function() return p[S] ~= PENDING end)
  end
  local s = p[S]
  if s == FULFILLED then return p[V] end
  if s == REJECTED then error(p[V], 0) end
  error(IDLE_MESSAGE, 0)
end

---Waits for a promise. In a coroutine made by `spawn` it yields until p
---settles; on the main thread it runs the main driver until p settles.
---A non-promise value is returned as is.
---@param p any
---@return any value p's fulfillment value; raises its rejection reason as is
function M.await(p)
  if getmetatable(p) ~= Promise then return p end
  local co, isMain = corunning()
  if isMain then return mainAwait(p) end
  if not tracked[co] then error(NOT_OCAP_MESSAGE, 0) end
  if p[S] == PENDING and not p[RA] then
    -- subscribe's common case, inline: the first reaction of a pending
    -- promise.
    p[H] = true
    p[RA], p[RB], p[RC] = AWAIT, co, false
  else
    subscribe(p, AWAIT, co, false)
  end
  repeat coyield(AWAITING) until p[S] ~= PENDING
  if p[S] == FULFILLED then return p[V] end
  error(p[V], 0)
end

---Installs the function `await` calls on the main thread. It is called as
---`fn(isSettled)` and must run the world (kernel cranks and `drain`) until
---`isSettled()` is true or nothing can make progress.
---@param fn? fun(isSettled: fun(): boolean) nil restores the default (drain until settled or no turns)
function M.setMainDriver(fn)
  mainDriver = fn or defaultDriver
end

------------------------------------------------------------------------------
-- What the C core does not do.

---Settles p like `resolvePromise` (ok) or `rejectPromise`, and when the
---turn queue is empty and p's only reaction is an `await`, resumes that
---coroutine at once instead of queueing its turn: what `drain` would run
---next anyway. For a caller that drains right after, with nothing between.
---@param p ocap.Promise
---@param ok boolean
---@param v any
function M.settleAndResume(p, ok, v)
  local co = takeAwaiter(p, ok, v)
  if co == nil then return end
  -- resumeJob, inline: the task usually awaits again. A coroutine that
  -- is not suspended is skipped, as resumeJob skips it.
  local rok, what = coresume(co)
  if not rok then
    if unresumable(what) then return end
    error(what, 0)
  end
  if what == DONE then taskEnded(co) end
end

methods.await = M.await

-- finally and the combinators (all, allSettled, race, any) load on first
-- use: most vats never call them. Their module gets the internals it
-- builds on.
local cold
local function coldModule()
  if not cold then
    cold = require('ocap.promise.combinators').make(M, I, function(...) return makeError(...) end)
  end
  return cold
end

---Calls onFinally() once settled; the derived promise settles like this one
---after the promise onFinally returns (if any) fulfills, or rejects with what
---onFinally throws or its promise rejects with.
---@param onFinally fun(): any
---@return ocap.Promise
function methods:finally(onFinally)
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

-- The C core calls makeError for a chaining cycle, declares the metatable
-- to ocap.pass before the first promise is made, and runs an await's turn
-- with resumeJob.
I.configure(function(message, name) return makeError(message, name) end,
  function() require('ocap.pass').registerPromiseMetatable(Promise) end,
  resumeJob)

return M
