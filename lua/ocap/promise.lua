--- Promises with JavaScript semantics and an explicit turn queue.
--
-- A promise is a table whose metatable is this module's `Promise`; its state
-- lives in the table's array slots (see S, V, ... below) and its first
-- reaction in three more slots, so that creating a promise allocates one
-- table and subscribing to it once allocates nothing.
--
-- Callbacks never run synchronously. Settling a promise queues one turn per
-- reaction; `M.drain()` runs turns in FIFO order until the queue is empty.
-- The queue is a ring of four slots per turn (a job function and its three
-- arguments), owned by this module: one queue per Lua state.
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
local M = {}

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

-- The slots of a promise table. An array part of eight slots, sized by the
-- constructor, costs a third of a hash part with eight named fields.
local S <const> = 1    -- state: PENDING, FULFILLED or REJECTED
local V <const> = 2    -- value or reason
local H <const> = 3    -- handled: a reaction was attached, or the rejection reported
local L <const> = 4    -- already resolved through resolvePromise, rejectPromise or a kit
local RA <const> = 5   -- the first reaction, three slots
local RB <const> = 6
local RC <const> = 7
local RX <const> = 8   -- further reactions: a flat array of triples, or nil
local STATE_NAMES = { [PENDING] = 'pending', [FULFILLED] = 'fulfilled', [REJECTED] = 'rejected' }

local IDLE_MESSAGE = 'promise can never settle: kernel is idle'
local NOT_OCAP_MESSAGE = 'await: not inside an ocap coroutine (use ocap.spawn)'

-- ocap.pass is required on first use, so that it may itself require this
-- module at load time. Each stub replaces itself with the real function.
local registerPromise, makeError = true, nil
makeError = function(message, name, code)
  makeError = require('ocap.pass').makeError
  return makeError(message, name, code)
end

-- What a promise says when it is used as the value it stands for: the
-- commonest slip is a forgotten `:await()` (`launchSubcluster(c).rootKref`).
local HINT = 'this is a promise; did you forget :await()?'

-- The methods of promises. Reading any other string key raises the hint
-- instead of answering nil; integer keys are the promise's own slots and
-- read as nil when empty, as they would without a metatable.
local methods = setmetatable({}, {
  __index = function(_, k)
    if type(k) == 'number' then return nil end
    error(("cannot read field '%s' of a promise: %s"):format(tostring(k), HINT), 2)
  end,
})

local function misuse(what)
  return function() error(('cannot %s a promise: %s'):format(what, HINT), 2) end
end

---@class ocap.Promise
local Promise = {
  __index = methods,
  __name = 'ocap.Promise',
  __call = misuse('call'),
  __concat = misuse('concatenate'),
  __lt = misuse('compare'),
  __le = misuse('compare'),
  __len = misuse('take the length of'),
}
local arithmetic = misuse('do arithmetic on')
for _, op in ipairs({ 'add', 'sub', 'mul', 'div', 'mod', 'pow', 'unm', 'idiv',
  'band', 'bor', 'bxor', 'shl', 'shr', 'bnot' }) do
  Promise['__' .. op] = arithmetic
end
function Promise.__tostring(p)
  return 'Promise <' .. STATE_NAMES[p[S]] .. '> (' .. HINT .. ')'
end

-- Reaction kinds other than `next`. A `next` reaction stores its derived
-- promise in the first slot; the others store one of these markers there.
local ADOPT = setmetatable({}, { __name = 'adopt' })   -- (ADOPT, target): settle target like this one
local SETTLE = setmetatable({}, { __name = 'settle' }) -- (SETTLE, fn): call fn(ok, value)
local AWAIT = setmetatable({}, { __name = 'await' })   -- (AWAIT, co): resume co

------------------------------------------------------------------------------
-- The turn queue.

-- It grows by doubling and never shrinks: a vat that queues many turns
-- keeps its larger ring, while an idle one holds 16 slots (256 bytes).
local RING_TURNS <const> = 4
local ring = {}        -- job, a, b, c for each turn
local ringCap = RING_TURNS
local ringSlots = RING_TURNS * 4
local head, tail, count = 1, 1, 0
for i = 1, ringSlots do ring[i] = false end

local function grow()
  local old, oldSlots = ring, ringSlots
  local new = {}
  local newSlots = oldSlots * 2
  for i = 1, newSlots do new[i] = false end
  local h = head
  for i = 1, count * 4 do
    new[i] = old[h]
    h = h + 1
    if h > oldSlots then h = 1 end
  end
  ring, ringSlots, ringCap = new, newSlots, ringCap * 2
  head, tail = 1, count * 4 + 1
end

local function enqueue(job, a, b, c)
  if count == ringCap then grow() end
  local t, r = tail, ring
  r[t] = job
  r[t + 1] = a
  r[t + 2] = b
  r[t + 3] = c
  t = t + 4
  if t > ringSlots then t = 1 end
  tail = t
  count = count + 1
end

------------------------------------------------------------------------------
-- Settling.

local unhandled = {}   -- rejected promises with no handler yet, in order
local unhandledN = 0
local unhandledHandler = nil

local fulfilledJob, rejectedJob, settleJob, callJob, resumeJob, adoptJob, taskEnded

-- Queues the turn that runs one reaction of a promise settled with (ok, v).
-- The ring push is inlined: this is the hottest function of the module.
local function schedule(a, b, c, ok, v)
  local job
  if a == ADOPT then
    job, a, b, c = settleJob, b, ok, v
  elseif a == SETTLE then
    job, a, b, c = callJob, b, ok, v
  elseif a == AWAIT then
    job, a, b, c = resumeJob, b, nil, nil
  elseif ok then
    job, c = fulfilledJob, v
  else
    job, b, c = rejectedJob, c, v
  end
  if count == ringCap then grow() end
  local t, r = tail, ring
  r[t] = job
  r[t + 1] = a
  r[t + 2] = b
  r[t + 3] = c
  t = t + 4
  if t > ringSlots then t = 1 end
  tail = t
  count = count + 1
end

-- Queues the reactions of p, just settled with (ok, v), and forgets them.
local function trigger(p, ok, v)
  schedule(p[RA], p[RB], p[RC], ok, v)
  p[RA], p[RB], p[RC] = false, nil, nil
  local x = p[RX]
  if x then
    p[RX] = false
    for i = 1, #x, 3 do
      schedule(x[i], x[i + 1], x[i + 2], ok, v)
    end
  end
end

local function fulfill(p, v)
  if p[S] ~= PENDING then return end
  p[S], p[V] = FULFILLED, v
  if p[RA] then trigger(p, true, v) end
end

local function rejectNow(p, e)
  if p[S] ~= PENDING then return end
  p[S], p[V] = REJECTED, e
  if not p[H] then
    unhandledN = unhandledN + 1
    unhandled[unhandledN] = p
  end
  if p[RA] then trigger(p, false, e) end
end

-- Resolves p with v, ignoring p's "already resolved" flag.
local function resolveNow(p, v)
  if getmetatable(v) == Promise then
    if v == p then
      rejectNow(p, makeError('Chaining cycle detected for promise', 'TypeError'))
    else
      enqueue(adoptJob, p, v)
    end
  else
    fulfill(p, v)
  end
end

-- Adds a reaction (a, b, c) to p, or queues it at once if p is settled.
-- Any reaction counts as handling a rejection.
local function subscribe(p, a, b, c)
  p[H] = true
  local s = p[S]
  if s == PENDING then
    if not p[RA] then
      p[RA], p[RB], p[RC] = a, b, c
    else
      local x = p[RX]
      if not x then
        p[RX] = { a, b, c }
      else
        local n = #x
        x[n + 1], x[n + 2], x[n + 3] = a, b, c
      end
    end
  else
    schedule(a, b, c, s == FULFILLED, p[V])
  end
end

local function newPromise()
  if registerPromise then
    -- ocap.pass recognises our promises by this metatable from now on.
    require('ocap.pass').registerPromiseMetatable(Promise)
    registerPromise = nil
  end
  return setmetatable({ PENDING, nil, false, false, false, nil, nil, false }, Promise)
end

------------------------------------------------------------------------------
-- Jobs: each runs one turn.

function fulfilledJob(d, h, v)
  if not h then return fulfill(d, v) end
  local ok, r = pcall(h, v)
  if not ok then
    rejectNow(d, r)
  elseif getmetatable(r) == Promise then
    resolveNow(d, r)
  elseif d[S] == PENDING then
    d[S], d[V] = FULFILLED, r
    if d[RA] then trigger(d, true, r) end
  end
end

function rejectedJob(d, h, e)
  if not h then return rejectNow(d, e) end
  local ok, r = pcall(h, e)
  if ok then resolveNow(d, r) else rejectNow(d, r) end
end

function settleJob(target, ok, v)
  if ok then fulfill(target, v) else rejectNow(target, v) end
end

function callJob(fn, ok, v)
  fn(ok, v)
end

-- NewPromiseResolveThenableJob: target follows thenable from now on.
function adoptJob(target, thenable)
  subscribe(thenable, ADOPT, target, false)
end

------------------------------------------------------------------------------
-- Coroutines.

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
  return true, ok, r, count > 0
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
  while not isSettled() and count > 0 do
    M.drain()
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
-- Turns.

local function reportUnhandled()
  local list, n = unhandled, unhandledN
  unhandled, unhandledN = {}, 0
  local handler = unhandledHandler
  for i = 1, n do
    local p = list[i]
    if not p[H] then
      p[H] = true
      if handler then handler(p[V], p) end
    end
  end
end

---Runs queued turns in FIFO order until the queue is empty, turns queued
---meanwhile included, then reports unhandled rejections.
---@return integer n the number of turns run
function M.drain()
  -- Every delivery ends with a drain, and most queue nothing.
  if count == 0 and unhandledN == 0 then return 0 end
  local n = 0
  repeat
    while count > 0 do
      local r, h = ring, head
      local job, a, b, c = r[h], r[h + 1], r[h + 2], r[h + 3]
      r[h + 1], r[h + 2], r[h + 3] = nil, nil, nil
      h = h + 4
      if h > ringSlots then h = 1 end
      head = h
      count = count - 1
      n = n + 1
      job(a, b, c)
    end
    if unhandledN > 0 then reportUnhandled() end
  until count == 0
  return n
end

---@return boolean true if turns are queued
function M.hasTurns()
  return count > 0
end

---Sets the function called as `fn(reason, promise)` once for each promise
---rejected with no handler attached by the end of a `drain`.
---@param fn? fun(reason: any, p: ocap.Promise) nil: ignore unhandled rejections
---@return function|nil previous the handler it replaces
function M.setUnhandledRejectionHandler(fn)
  local previous = unhandledHandler
  unhandledHandler = fn
  return previous
end

------------------------------------------------------------------------------
-- Promise methods.

---Like JS `then` (a Lua keyword). Non-function handlers pass values through
---only when nil or false; anything else is called.
---@param onFulfilled? fun(value: any): any
---@param onRejected? fun(reason: any): any
---@return ocap.Promise
function methods:next(onFulfilled, onRejected)
  local d = newPromise()
  subscribe(self, d, onFulfilled or false, onRejected or false)
  return d
end

---@param onRejected fun(reason: any): any
---@return ocap.Promise
function methods:catch(onRejected)
  local d = newPromise()
  subscribe(self, d, false, onRejected or false)
  return d
end

---Calls onFinally() once settled; the derived promise settles like this one
---after the promise onFinally returns (if any) fulfills, or rejects with what
---onFinally throws or its promise rejects with.
---@param onFinally fun(): any
---@return ocap.Promise
function methods:finally(onFinally)
  if not onFinally then return self:next() end
  return self:next(function(v)
    return M.resolve(onFinally()):next(function() return v end)
  end, function(e)
    return M.resolve(onFinally()):next(function() error(e, 0) end)
  end)
end

methods.await = M.await

------------------------------------------------------------------------------
-- Module functions.

---@param v any
---@return boolean true if v is one of this module's promises
function M.isPromise(v)
  return getmetatable(v) == Promise
end

---A new pending promise, for hosts that resolve it with `resolvePromise` and
---`rejectPromise` (cheaper than a kit: no closures).
---@return ocap.Promise
M.makePromise = newPromise

---Resolves p with v (adopting v if it is a promise); ignored once p has been
---resolved or rejected through this or a kit.
---@param p ocap.Promise
---@param v any
function M.resolvePromise(p, v)
  if p[L] then return end
  p[L] = true
  resolveNow(p, v)
end

---Rejects p with e; ignored once p has been resolved or rejected.
---@param p ocap.Promise
---@param e any
function M.rejectPromise(p, e)
  if p[L] then return end
  p[L] = true
  rejectNow(p, e)
end

---Settles p like `resolvePromise` (ok) or `rejectPromise`, and when the
---turn queue is empty and p's only reaction is an `await`, resumes that
---coroutine at once instead of queueing its turn: what `drain` would run
---next anyway. For a caller that drains right after, with nothing between.
---@param p ocap.Promise
---@param ok boolean
---@param v any
function M.settleAndResume(p, ok, v)
  if p[L] then return end
  p[L] = true
  if count == 0 and p[RA] == AWAIT and not p[RX] and p[S] == PENDING then
    if not ok then
      p[S], p[V] = REJECTED, v
    elseif getmetatable(v) ~= Promise then
      p[S], p[V] = FULFILLED, v
    else
      return resolveNow(p, v)
    end
    local co = p[RB]
    p[RA], p[RB] = false, nil
    -- resumeJob, inline: the task usually awaits again. A coroutine that
    -- is not suspended is skipped, as resumeJob skips it.
    local rok, what = coresume(co)
    if not rok then
      if unresumable(what) then return end
      error(what, 0)
    end
    if what == DONE then taskEnded(co) end
    return
  end
  if ok then resolveNow(p, v) else rejectNow(p, v) end
end

---A promise settled as a task ended: fulfilled with (or adopting) v when ok,
---else rejected with v.
---@param ok boolean
---@param v any
---@return ocap.Promise
function M.settled(ok, v)
  local p = newPromise()
  p[L] = true
  if ok then resolveNow(p, v) else rejectNow(p, v) end
  return p
end

---@return { promise: ocap.Promise, resolve: fun(v: any), reject: fun(e: any) }
function M.makePromiseKit()
  local p = newPromise()
  return {
    promise = p,
    resolve = function(v)
      if p[L] then return end
      p[L] = true
      resolveNow(p, v)
    end,
    reject = function(e)
      if p[L] then return end
      p[L] = true
      rejectNow(p, e)
    end,
  }
end

---@param v any
---@return ocap.Promise v itself if it is a promise, else a promise fulfilled with v
function M.resolve(v)
  if getmetatable(v) == Promise then return v end
  local p = newPromise()
  p[L] = true
  p[S], p[V] = FULFILLED, v
  return p
end

---@param e any
---@return ocap.Promise a promise rejected with e
function M.reject(e)
  local p = newPromise()
  p[L] = true
  rejectNow(p, e)
  return p
end

---Calls `fn(ok, value)` in a turn once p settles (at once if p is not a
---promise). Lighter than `next`: no derived promise. Counts as handling a
---rejection. Errors thrown by fn propagate out of `drain`.
---@param p any
---@param fn fun(ok: boolean, value: any)
function M.onSettle(p, fn)
  if getmetatable(p) == Promise then
    subscribe(p, SETTLE, fn, false)
  else
    enqueue(callJob, fn, true, p)
  end
end

---@param p ocap.Promise
---@return 'pending'|'fulfilled'|'rejected' state
---@return any value the value or reason (nil while pending)
function M.state(p)
  if getmetatable(p) ~= Promise then error('state: not a promise', 2) end
  return STATE_NAMES[p[S]], p[V]
end

-- The combinators (all, allSettled, race, any) load on first use: most
-- vats never call them. Their module gets the internals it builds on.
local combinators
local function combinator(name)
  return function(list)
    if not combinators then
      combinators = require('ocap.promise.combinators').make(Promise, SETTLE, newPromise, subscribe,
        enqueue, callJob, fulfill, rejectNow, function(...) return makeError(...) end)
    end
    return combinators[name](list)
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

return M
