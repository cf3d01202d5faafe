local P = require 'ocap.promise'
local pass = require 'ocap.pass'

-- Returns a log table and a function making callbacks that append a label
-- and pass their argument on.
local function makeLog()
  local log = {}
  local function mark(label)
    return function(v)
      log[#log + 1] = label
      return v
    end
  end
  return log, mark
end

local function settled(p)
  P.drain()
  return P.state(p)
end

describe('ocap.promise', function()
  before_each(function()
    P.drain()
  end)

  after_each(function()
    P.setUnhandledRejectionHandler(nil)
    P.setMainDriver(nil)
    P.drain()
  end)

  describe('turns', function()
    it('never runs callbacks synchronously', function()
      local log, mark = makeLog()
      P.resolve(1):next(mark('a'))
      local kit = P.makePromiseKit()
      kit.promise:next(mark('b'))
      kit.resolve(2)
      assert.same({}, log)
      assert.is_true(P.hasTurns())
      assert.equal(2, P.drain())
      assert.same({ 'a', 'b' }, log)
      assert.is_false(P.hasTurns())
      assert.equal(0, P.drain())
    end)

    it('runs callbacks in FIFO order across promises', function()
      local log, mark = makeLog()
      local k1, k2 = P.makePromiseKit(), P.makePromiseKit()
      k1.promise:next(mark('k1a'))
      k2.promise:next(mark('k2a'))
      k1.promise:next(mark('k1b'))
      k2.resolve()
      k1.resolve()
      P.resolve():next(mark('r'))
      P.drain()
      assert.same({ 'k2a', 'k1a', 'k1b', 'r' }, log)
    end)

    it('interleaves chains like JS (a1, b1, a2)', function()
      local log, mark = makeLog()
      P.resolve():next(mark('a1')):next(mark('a2'))
      P.resolve():next(mark('b1'))
      P.drain()
      assert.same({ 'a1', 'b1', 'a2' }, log)
    end)

    it('takes two extra turns to adopt a returned promise, like JS', function()
      local log, mark = makeLog()
      P.resolve():next(function()
        log[#log + 1] = 'c1'
        return P.resolve()
      end):next(mark('c2'))
      P.resolve():next(mark('d1')):next(mark('d2')):next(mark('d3')):next(mark('d4'))
      P.drain()
      assert.same({ 'c1', 'd1', 'd2', 'd3', 'c2', 'd4' }, log)
    end)

    it('orders finally like JS', function()
      local log, mark = makeLog()
      P.resolve(1):finally(mark('f')):next(mark('f2'))
      P.resolve():next(mark('e1')):next(mark('e2')):next(mark('e3')):next(mark('e4'))
      P.drain()
      assert.same({ 'f', 'e1', 'e2', 'e3', 'f2', 'e4' }, log)
    end)

    it('runs turns queued during drain in the same drain', function()
      local log, mark = makeLog()
      P.resolve():next(function()
        P.resolve():next(mark('inner'))
      end)
      assert.equal(2, P.drain())
      assert.same({ 'inner' }, log)
    end)

    it('keeps FIFO order while the queue wraps around and grows', function()
      local log = {}
      for i = 1, 200 do
        P.resolve():next(function()
          log[#log + 1] = i
          P.resolve():next(function() log[#log + 1] = 1000 + i end)
          P.resolve():next(function() log[#log + 1] = 2000 + i end)
        end)
      end
      assert.equal(600, P.drain())
      local expected = {}
      for i = 1, 200 do expected[i] = i end
      for i = 1, 200 do
        expected[199 + 2 * i] = 1000 + i
        expected[200 + 2 * i] = 2000 + i
      end
      assert.same(expected, log)
    end)

    it('drains 10,000 chained nexts without overflowing the stack', function()
      local p = P.resolve(0)
      for _ = 1, 10000 do
        p = p:next(function(v) return v + 1 end)
      end
      assert.same({ 'fulfilled', 10000 }, { settled(p) })
    end)

    it('adopts a chain of 10,000 pending promises', function()
      local first = P.makePromiseKit()
      local last = first
      for _ = 1, 10000 do
        local kit = P.makePromiseKit()
        last.resolve(kit.promise)
        last = kit
      end
      last.resolve('end')
      assert.same({ 'fulfilled', 'end' }, { settled(first.promise) })
    end)
  end)

  describe('next, catch and finally', function()
    it('chains values', function()
      local p = P.resolve(1):next(function(v) return v + 1 end):next(function(v) return v * 10 end)
      assert.same({ 'fulfilled', 20 }, { settled(p) })
    end)

    it('passes values and reasons through missing handlers', function()
      local e = pass.makeError('no', 'Error')
      assert.same({ 'fulfilled', 7 }, { settled(P.resolve(7):next(nil, error):catch(error)) })
      local state, reason = settled(P.reject(e):next(error))
      assert.equal('rejected', state)
      assert.equal(e, reason)
    end)

    it('rejects the derived promise with what a callback throws, a string as an error', function()
      local e = { name = 'Error', message = 'boom' }
      local state, reason = settled(P.resolve():next(function() error(e) end))
      assert.equal('rejected', state)
      assert.equal(e, reason)
      -- A string becomes what a method raising it gives (docs/errors.md).
      state, reason = settled(P.resolve():next(function() error('plain', 0) end))
      assert.same({ 'rejected', 'Error', 'plain' }, { state, reason.name, reason.message })
      reason = select(2, settled(P.resolve():next(function() error('boom') end)))
      assert.same({ 'Error', 'boom' }, { reason.name, reason.message })
      assert.same({ 'rejected', 'a.lua:1: kept' }, { settled(P.reject('a.lua:1: kept'):finally(function() end)) })
    end)

    it('recovers with catch', function()
      local p = P.reject('bad'):catch(function(r) return 'fixed ' .. r end)
      assert.same({ 'fulfilled', 'fixed bad' }, { settled(p) })
      assert.same({ 'fulfilled', 3 }, { settled(P.resolve(3):catch(error)) })
    end)

    it('runs finally without changing the value or the reason', function()
      local calls = 0
      local function onFinally()
        calls = calls + 1
        return 'ignored'
      end
      assert.same({ 'fulfilled', 5 }, { settled(P.resolve(5):finally(onFinally)) })
      assert.same({ 'rejected', 'r' }, { settled(P.reject('r'):finally(onFinally)) })
      assert.equal(2, calls)
    end)

    it('rejects when finally throws or returns a rejected promise', function()
      local state, reason = settled(P.resolve(5):finally(function() error('f', 0) end))
      assert.same({ 'rejected', 'f' }, { state, reason.message })
      assert.same({ 'rejected', 'g' }, { settled(P.reject('r'):finally(function() return P.reject('g') end)) })
    end)

    it('waits for the promise finally returns', function()
      local kit = P.makePromiseKit()
      local p = P.resolve(5):finally(function() return kit.promise end)
      assert.equal('pending', settled(p))
      kit.resolve('ignored')
      assert.same({ 'fulfilled', 5 }, { settled(p) })
    end)

    it('works as p:await and with a finally handler that is nil', function()
      assert.same({ 'fulfilled', 1 }, { settled(P.resolve(1):finally(nil)) })
      assert.equal(P.await, P.resolve(1).await)
    end)
  end)

  describe('resolution', function()
    it('adopts the state of a promise', function()
      local inner = P.makePromiseKit()
      local outer = P.makePromiseKit()
      outer.resolve(inner.promise)
      assert.equal('pending', settled(outer.promise))
      inner.resolve('v')
      assert.same({ 'fulfilled', 'v' }, { settled(outer.promise) })
      local o2 = P.makePromiseKit()
      o2.resolve(P.reject('no'))
      assert.same({ 'rejected', 'no' }, { settled(o2.promise) })
    end)

    it('adopts a promise returned by a callback', function()
      local p = P.resolve():next(function() return P.resolve(1):next(function(v) return v + 1 end) end)
      assert.same({ 'fulfilled', 2 }, { settled(p) })
    end)

    it('rejects a promise resolved with itself with a TypeError', function()
      local kit = P.makePromiseKit()
      kit.resolve(kit.promise)
      local state, reason = settled(kit.promise)
      assert.equal('rejected', state)
      assert.equal('TypeError', reason.name)
      assert.is_true(pass.isError(reason))
      local p
      p = P.resolve():next(function() return p end)
      state, reason = settled(p)
      assert.equal('rejected', state)
      assert.equal('TypeError', reason.name)
    end)

    it('ignores resolve and reject after the first call', function()
      local kit = P.makePromiseKit()
      kit.resolve(1)
      kit.resolve(2)
      kit.reject('no')
      assert.same({ 'fulfilled', 1 }, { settled(kit.promise) })
      local pending = P.makePromiseKit()
      local k2 = P.makePromiseKit()
      k2.resolve(pending.promise)
      k2.resolve(3)
      k2.reject('x')
      assert.equal('pending', settled(k2.promise))
    end)

    it('returns a promise from resolve unchanged and registers every promise', function()
      local p = P.makePromiseKit().promise
      assert.equal(p, P.resolve(p))
      assert.is_true(P.isPromise(p))
      assert.is_true(pass.isPromise(p))
      assert.is_true(pass.isPromise(p:next()))
      assert.is_false(P.isPromise({}))
      assert.is_false(P.isPromise('x'))
      assert.is_false(P.isPromise({ next = function() end }))
    end)

    it('resolves and rejects bare promises with resolvePromise and rejectPromise', function()
      local p = P.makePromise()
      assert.equal('pending', settled(p))
      P.resolvePromise(p, 4)
      P.rejectPromise(p, 'late')
      assert.same({ 'fulfilled', 4 }, { settled(p) })
      local q = P.makePromise()
      q:catch(function() end)
      P.rejectPromise(q, 'r')
      assert.same({ 'rejected', 'r' }, { settled(q) })
    end)

    it('reports state', function()
      local kit = P.makePromiseKit()
      assert.same({ 'pending' }, { P.state(kit.promise) })
      assert.has_error(function() P.state(42) end)
    end)
  end)

  describe('combinators', function()
    it('all keeps list order whatever the settle order', function()
      local a, b = P.makePromiseKit(), P.makePromiseKit()
      local p = P.all({ a.promise, 'plain', b.promise })
      b.resolve('B')
      P.drain()
      a.resolve('A')
      assert.same({ 'fulfilled', { 'A', 'plain', 'B' } }, { settled(p) })
    end)

    it('all rejects with the first rejection', function()
      local a, b, c = P.makePromiseKit(), P.makePromiseKit(), P.makePromiseKit()
      local p = P.all({ a.promise, b.promise, c.promise })
      c.reject('c')
      b.reject('b')
      a.resolve('a')
      assert.same({ 'rejected', 'c' }, { settled(p) })
    end)

    it('all of an empty list is an empty table', function()
      assert.same({ 'fulfilled', {} }, { settled(P.all({})) })
    end)

    it('all keeps nils of packed lists and sets n', function()
      local state, values = settled(P.all({ n = 3, nil, P.resolve(nil), 3 }))
      assert.equal('fulfilled', state)
      assert.same({ n = 3, [3] = 3 }, values)
      values = select(2, settled(P.all({ 1, P.resolve(nil), 3 })))
      assert.same({ n = 3, 1, nil, 3 }, values)
    end)

    it('allSettled reports every outcome in order', function()
      local e = { message = 'no' }
      local state, results = settled(P.allSettled({ n = 3, P.reject(e), 2, nil }))
      assert.equal('fulfilled', state)
      assert.same({
        n = 3,
        { status = 'rejected', reason = e },
        { status = 'fulfilled', value = 2 },
        { status = 'fulfilled', value = nil },
      }, results)
      assert.equal(e, results[1].reason)
      assert.same({ 'fulfilled', {} }, { settled(P.allSettled({})) })
    end)

    it('race settles like the first to settle', function()
      local a, b = P.makePromiseKit(), P.makePromiseKit()
      local p = P.race({ a.promise, b.promise })
      b.reject('b')
      a.resolve('a')
      assert.same({ 'rejected', 'b' }, { settled(p) })
      local c = P.makePromiseKit()
      assert.same({ 'fulfilled', 'v' }, { settled(P.race({ c.promise, 'v' })) })
      assert.same({ 'fulfilled' }, { settled(P.race({ n = 2, nil, c.promise })) })
    end)

    it('race of an empty list stays pending', function()
      assert.equal('pending', settled(P.race({})))
    end)

    it('any fulfills with the first fulfillment or rejects with an AggregateError', function()
      assert.same({ 'fulfilled', 2 }, { settled(P.any({ P.reject('a'), P.resolve(2), 3 })) })
      local state, e = settled(P.any({ P.reject('a'), P.reject('b') }))
      assert.equal('rejected', state)
      assert.equal('AggregateError', e.name)
      assert.same({ 'a', 'b' }, e.errors)
      assert.equal('rejected', settled(P.any({})))
    end)
  end)

  describe('unhandled rejections', function()
    it('reports each unhandled rejection once, at the end of drain', function()
      local seen = {}
      P.setUnhandledRejectionHandler(function(reason, p)
        seen[#seen + 1] = { reason, P.isPromise(p) }
      end)
      local kit = P.makePromiseKit()
      kit.reject('lost')
      assert.same({}, seen)
      P.drain()
      assert.same({ { 'lost', true } }, seen)
      kit.promise:catch(function() end)
      P.drain()
      P.drain()
      assert.same({ { 'lost', true } }, seen)
    end)

    it('does not report rejections handled within the drain', function()
      local seen = {}
      P.setUnhandledRejectionHandler(function(reason) seen[#seen + 1] = reason end)
      local kit = P.makePromiseKit()
      kit.reject('handled')
      P.resolve():next(function() kit.promise:catch(function() end) end)
      P.reject('caught'):catch(function() end)
      P.resolve():next(function() error('derived', 0) end)
      P.drain()
      assert.same({ 'derived' }, { seen[1].message })
      assert.equal(1, #seen)
    end)

    it('reports the end of a chain, not its handled links', function()
      local seen = {}
      P.setUnhandledRejectionHandler(function(reason) seen[#seen + 1] = reason end)
      P.reject('r'):next(function() end):next(function() end)
      P.drain()
      assert.same({ 'r' }, seen)
    end)

    it('does nothing without a handler and returns the previous handler', function()
      local function h() end
      assert.is_nil(P.setUnhandledRejectionHandler(h))
      assert.equal(h, P.setUnhandledRejectionHandler(nil))
      P.reject('ignored')
      P.drain()
    end)
  end)

  describe('the C core', function()
    it('refuses what is not a promise where a promise is expected', function()
      local p = P.makePromise()
      local next = debug.getmetatable(p).__index.next
      assert.has_error(function() P.resolvePromise({}, 1) end)
      assert.has_error(function() P.rejectPromise(42, 1) end)
      assert.has_error(function() next({}) end)
      assert.has_error(function() next(setmetatable({}, {})) end)
      assert.has_error(function() P.state('x') end, 'state: not a promise')
      assert.equal('pending', P.state(p))
    end)

    it('makes separate queues that refuse each other\'s promises', function()
      local Q = require('ocap.promise.core').new()
      local p = P.makePromise()
      assert.is_false(Q.isPromise(p))
      assert.has_error(function() Q.resolvePromise(p, 1) end)
      assert.has_error(function() Q._internal.fulfill(p, 1) end)
      assert.has_error(function() Q._internal.rejectNow(p, 1) end)
      assert.has_error(function() Q.settleAndResume(p, true, 1) end)
      -- To another queue, one of these promises is a plain value.
      local got
      Q.onSettle(p, function(ok, v) got = { ok, v } end)
      assert.is_false(P.hasTurns())
      assert.equal(1, Q.drain())
      assert.same({ true, p }, got)
      assert.equal('pending', P.state(p))
    end)

    it('tracks a promise under a key of a table, which the promise remembers', function()
      local t, other = {}, {}
      local p = P.track(t, 5)
      assert.equal(p, t[5])
      assert.equal('pending', P.state(p))
      assert.equal(5, P.trackedKey(p, t))
      assert.is_nil(P.trackedKey(p, other))
      assert.is_nil(P.trackedKey(P.makePromise(), t))
      assert.is_nil(P.trackedKey({}, t))
      assert.has_error(function() P.track(nil, 1) end)
      -- What it remembers is out of reach of a slot write.
      assert.has_error(function() p[9] = other end)
      assert.equal(5, P.trackedKey(p, t))
    end)

    it('makes the dispatchers of liveslots over the tables it is given', function()
      local noop = function() end
      assert.has_error(function() P.dispatchers(nil, noop, P.xcall, noop, noop, noop, noop, noop, {}, noop) end)
      -- dispatchSettle: the promise of a key, out of pending, settled.
      local p = P.makePromise()
      local pending = { [7] = p }
      local _, settle = P.dispatchers({}, noop, P.xcall, noop, noop, noop, noop, noop, pending,
        function(key) error('tracked ' .. tostring(key)) end)
      settle(7, false, 'v')
      assert.is_nil(pending[7])
      assert.same({ 'fulfilled', 'v' }, { P.state(p) })
      -- dispatchCall: an export's method runs and its plain result goes to
      -- resolveValue; what it cannot run goes to the slow function as is.
      local obj, resolved, slow, after = {}, {}, {}, {}
      local function method(t, name)
        if t == obj and name == 'add' then return function(_, a, b) return a + b end end
      end
      local call = P.dispatchers({ ['o+1'] = obj }, method, P.xcall, function(_, _, ok, r) return ok, r end,
        function(e) return e end, function(vpid, v)
          resolved[#resolved + 1] = { vpid, v }
          return vpid ~= 9
        end, function(...) slow[#slow + 1] = { ... } end,
        function(...) after[#after + 1] = { ... } end, {}, noop)
      call('o+1', 5, 'add', 2, 3)
      call('o+1', 9, 'add', 1, 2)
      call('o+2', 6, 'add', 1, 1)
      call('o+1', 7, 'bootstrap')
      call('o+1', 8, 'sub', 1)
      assert.same({ { 5, 5 }, { 9, 3 } }, resolved)
      assert.same({ { 9, true, true, 3, false } }, after)
      assert.same({ { 'o+2', 6, 'add', 1, 1 }, { 'o+1', 7, 'bootstrap' }, { 'o+1', 8, 'sub', 1 } }, slow)
    end)

    it('writes and prints only promises through the metamethods', function()
      local mt = debug.getmetatable(P.makePromise())
      -- The queue's own state is a userdata with user values.
      local _, st = debug.getupvalue(P.drain, 1)
      assert.equal('userdata', type(st))
      assert.has_error(function() mt.__newindex(st, 1, 42) end)
      assert.has_error(function() mt.__tostring(st) end)
      assert.has_error(function() mt.__newindex(io.stdout, 1, 1) end)
      local got
      P.resolve(1):next(function(v) got = v end)
      P.drain()
      assert.equal(1, got)
    end)

    it('raises, not crashes, on a promise whose slots vat code overwrote', function()
      local p = P.makePromise()
      p:next(function() end)
      p[5] = 42
      P.resolvePromise(p, 1)
      assert.has_error(function() P.drain() end)
      -- The queue goes on working.
      local got
      P.resolve(2):next(function(v) got = v end)
      P.drain()
      assert.equal(2, got)
    end)

    it('keeps the turns after one that raises queued, in order', function()
      local log = {}
      P.onSettle(1, function() log[#log + 1] = 'a' end)
      P.onSettle(2, function() error('boom', 0) end)
      P.onSettle(3, function() log[#log + 1] = 'c' end)
      assert.has_error(function() P.drain() end, 'boom')
      assert.same({ 'a' }, log)
      assert.is_true(P.hasTurns())
      P.drain()
      assert.same({ 'a', 'c' }, log)
    end)

    it('lets a callback yield the coroutine that drains', function()
      local log = {}
      P.resolve(1):next(function(v)
        log[#log + 1] = 'in ' .. v
        coroutine.yield('paused')
        log[#log + 1] = 'back'
        return v + 1
      end):next(function(v) log[#log + 1] = 'then ' .. v end)
      local co = coroutine.create(function() return P.drain() end)
      local ok, what = coroutine.resume(co)
      assert.is_true(ok)
      assert.equal('paused', what)
      assert.same({ 'in 1' }, log)
      local n
      ok, n = coroutine.resume(co)
      assert.is_true(ok)
      assert.equal(2, n)
      assert.same({ 'in 1', 'back', 'then 2' }, log)
    end)

    it('grows the queue past its first ring without losing turns', function()
      local got = {}
      for i = 1, 100 do P.onSettle(i, function(_, v) got[#got + 1] = v end) end
      assert.equal(100, P.drain())
      for i = 1, 100 do assert.equal(i, got[i]) end
    end)
  end)

  describe('onSettle', function()
    it('calls fn(ok, value) in a later turn', function()
      local calls = {}
      local kit = P.makePromiseKit()
      P.onSettle(kit.promise, function(ok, v) calls[#calls + 1] = { ok, v } end)
      P.onSettle(P.reject('r'), function(ok, v) calls[#calls + 1] = { ok, v } end)
      P.onSettle('plain', function(ok, v) calls[#calls + 1] = { ok, v } end)
      kit.resolve(1)
      assert.same({}, calls)
      P.drain()
      assert.same({ { false, 'r' }, { true, 'plain' }, { true, 1 } }, calls)
    end)
  end)

  describe("call and settleAndResume (the runtime's direct paths)", function()
    it('hands back the result of a task that does not await, with no promise', function()
      assert.same({ true, true, 6 }, { P.call(function(a, b) return a * b end, 2, 3) })
      local e = { message = 'thrown' }
      assert.same({ true, false, e }, { P.call(function() error(e) end) })
      assert.is_false(P.hasTurns())
    end)

    it('gives a task that awaits a promise of its result', function()
      local kit = P.makePromiseKit()
      local done, p = P.call(function() return P.await(kit.promise) + 1 end)
      assert.is_false(done)
      assert.is_true(P.isPromise(p))
      assert.equal('pending', settled(p))
      kit.resolve(41)
      assert.same({ 'fulfilled', 42 }, { settled(p) })
      local done2, p2 = P.call(function()
        P.await(P.resolve())
        error('late', 0)
      end)
      assert.is_false(done2)
      assert.same({ 'rejected', 'late' }, { settled(p2) })
    end)

    it('reuses the coroutine of a finished task', function()
      local _, _, first = P.call(coroutine.running)
      local _, _, second = P.call(coroutine.running)
      assert.equal(first, second)
    end)

    it('lets the collector have idle workers once dropIdleWorkers(M) is called', function()
      local function ended(_, _, ok, r) return ok, r end
      local weak = setmetatable({}, { __mode = 'k' })
      local function held()
        collectgarbage()
        collectgarbage()
        local n = 0
        for _ in pairs(weak) do n = n + 1 end
        return n
      end
      weak[select(3, P.call(coroutine.running))] = true
      weak[select(3, P.xcall(ended, nil, nil, coroutine.running, ended))] = true
      assert.equal(2, held()) -- pooled, so kept
      require('ocap.promise.core').dropIdleWorkers(P)
      assert.equal(0, held())
      -- The next tasks make workers as usual, and pool them again.
      local _, _, a = P.call(coroutine.running)
      local _, _, b = P.call(coroutine.running)
      assert.equal(a, b)
      assert.same({ true, true, 5, false }, { P.xcall(ended, nil, nil, function() return 5 end, ended) })
      -- Anything but a module of the core is left alone.
      require('ocap.promise.core').dropIdleWorkers({ spawn = print })
      require('ocap.promise.core').dropIdleWorkers(nil)
      assert.equal(b, select(3, P.call(coroutine.running)))
    end)

    it('lets a task that awaits what nothing settles be collected, its worker taken from a pool', function()
      local weak = setmetatable({}, { __mode = 'k' })
      local function park() weak[coroutine.running()] = true; P.await(P.makePromise()) end
      local function handler(e) return e end
      local function ended(_, _, ok, r) return ok, r end
      -- Each task takes a worker a finished task left in its pool.
      P.call(function() end)
      assert.is_false((P.call(park)))
      P.xcall(ended, nil, nil, function() end, handler)
      assert.is_false((P.xcall(ended, nil, nil, park, handler)))
      -- A worker taken from a pool that itself runs a task which awaits.
      P.call(function() end)
      P.call(function() end)
      P.call(function() P.call(park) end)
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(weak))
    end)

    it('xcall: one xpcall in the task, and ended makes the outcome of a failure', function()
      local seen = {}
      local function handler(e) return 'handled ' .. e end
      local function ended(a, b, ok, r)
        seen[#seen + 1] = { a, b, ok, r }
        return false, 'reason: ' .. r
      end
      -- The fourth value says whether turns are queued (hasTurns).
      assert.same({ true, true, 6, false },
        { P.xcall(ended, 'a', 'b', function(x, y) return x * y end, handler, 2, 3) })
      assert.same({}, seen)
      assert.same({ true, false, 'reason: handled boom', false },
        { P.xcall(ended, 'a', 'b', function() error('boom', 0) end, handler) })
      assert.same({ true, true, 1, true },
        { P.xcall(ended, 'a', 'b', function() P.resolve():next(function() end); return 1 end, handler) })
      P.drain()
      assert.same({ { 'a', 'b', false, 'handled boom' } }, seen)
      -- A task that awaits gets a promise of the same outcome, and its
      -- worker serves the next task once it is done.
      local kit = P.makePromiseKit()
      local done, p = P.xcall(ended, 'c', 'd', function()
        P.await(kit.promise)
        error('late', 0)
      end, handler)
      assert.is_false(done)
      kit.resolve()
      assert.same({ 'rejected', 'reason: handled late' }, { settled(p) })
      assert.same({ 'c', 'd', false, 'handled late' }, seen[2])
      local _, _, first = P.xcall(ended, nil, nil, coroutine.running, handler)
      local _, _, second = P.xcall(ended, nil, nil, coroutine.running, handler)
      assert.equal(first, second)
      local _, _, plain = P.call(coroutine.running)
      assert.are_not.equal(first, plain)
    end)

    it('passes over a worker or an awaiting coroutine that its user closed', function()
      local function ended(_, _, ok, r) return ok, r end
      local _, _, worker = P.xcall(ended, nil, nil, coroutine.running, ended)
      assert.is_true(coroutine.close(worker))
      assert.same({ true, true, 7, false }, { P.xcall(ended, nil, nil, function() return 7 end, ended) })
      local _, _, again = P.xcall(ended, nil, nil, coroutine.running, ended)
      assert.are_not.equal(worker, again)
      -- The same for the workers of call (and spawn), pooled apart.
      local _, _, plain = P.call(coroutine.running)
      assert.is_true(coroutine.close(plain))
      assert.same({ true, true, 8 }, { P.call(function() return 8 end) })
      local _, _, plainAgain = P.call(coroutine.running)
      assert.are_not.equal(plain, plainAgain)
      assert.same({ 'fulfilled', 9 }, { P.state(P.spawn(function() return 9 end)) })
      -- A task closed while it awaits is not resumed, and nothing fails.
      local p = P.makePromise()
      local awaiting
      P.spawn(function()
        awaiting = coroutine.running()
        P.await(p)
        error('never resumed')
      end)
      assert.is_true(coroutine.close(awaiting))
      P.settleAndResume(p, true, 1)
      assert.same({ 'fulfilled', 1 }, { P.state(p) })
    end)

    it('runs nothing in an idle worker that someone else resumes', function()
      local function ended(_, _, ok, r) return ok, r end
      local ran = false
      local function task() ran = true end
      local _, _, plain = P.call(coroutine.running)
      local _, _, checked = P.xcall(ended, nil, nil, coroutine.running, ended)
      for _, worker in ipairs({ plain, checked }) do
        local ok, token = coroutine.resume(worker, 'key', task)
        assert.is_true(ok)
        assert.is_not_nil(token)
        assert.equal('suspended', coroutine.status(worker))
      end
      assert.is_false(ran)
      -- Both go on taking tasks.
      assert.same({ true, true, 5 }, { P.call(function() return 5 end) })
      assert.same({ true, true, 6, false }, { P.xcall(ended, nil, nil, function() return 6 end, ended) })
      assert.equal(plain, select(3, P.call(coroutine.running)))
    end)

    it('resumes the one coroutine awaiting a promise at once when no turn is queued', function()
      local p = P.makePromise()
      local log = {}
      P.spawn(function() log[#log + 1] = 'got ' .. P.await(p) end)
      P.settleAndResume(p, true, 'v')
      assert.same({ 'got v' }, log)
      local q = P.makePromise()
      P.spawn(function()
        local ok, err = pcall(P.await, q)
        log[#log + 1] = tostring(ok) .. ' ' .. err
      end)
      P.settleAndResume(q, false, 'no')
      assert.same({ 'got v', 'false no' }, log)
    end)

    it('queues the resumption behind turns already queued, and behind other reactions', function()
      local log, mark = makeLog()
      local p = P.makePromise()
      P.spawn(function() P.await(p); log[#log + 1] = 'resumed' end)
      P.resolve():next(mark('queued first'))
      P.settleAndResume(p, true, 1)
      assert.same({}, log)
      P.drain()
      assert.same({ 'queued first', 'resumed' }, log)
      local q = P.makePromise()
      local log2 = {}
      P.spawn(function() P.await(q); log2[#log2 + 1] = 'resumed' end)
      q:next(function() log2[#log2 + 1] = 'next' end)
      P.settleAndResume(q, true, 1)
      assert.same({}, log2)
      P.drain()
      assert.same({ 'resumed', 'next' }, log2)
    end)

    it('adopts a promise it is resolved with, in the usual turns', function()
      local p = P.makePromise()
      local log = {}
      P.spawn(function() log[#log + 1] = P.await(p) end)
      P.settleAndResume(p, true, P.resolve('inner'))
      assert.same({}, log)
      P.drain()
      assert.same({ 'inner' }, log)
    end)
  end)

  describe('await in spawned coroutines', function()
    it('returns the value of a promise', function()
      local kit = P.makePromiseKit()
      local log = {}
      local p = P.spawn(function(a, b)
        log[#log + 1] = 'start ' .. a .. b
        local v = P.await(kit.promise)
        log[#log + 1] = 'got ' .. v
        return v * 2
      end, 'x', 'y')
      assert.same({ 'start xy' }, log)
      assert.equal('pending', settled(p))
      kit.resolve(21)
      assert.same({ 'fulfilled', 42 }, { settled(p) })
      assert.same({ 'start xy', 'got 21' }, log)
    end)

    it('raises the rejection reason intact through pcall', function()
      local e = pass.makeError('nope', 'RangeError')
      local got
      local p = P.spawn(function()
        local ok, err = pcall(P.await, P.reject(e))
        assert(not ok)
        got = err
        local ok2, err2 = pcall(function() return P.reject('str'):await() end)
        return { ok2, err2 }
      end)
      assert.same({ 'fulfilled', { false, 'str' } }, { settled(p) })
      assert.equal(e, got)
    end)

    it('returns a non-promise as is, at once', function()
      local t = {}
      local got
      P.spawn(function() got = P.await(t) end)
      assert.equal(t, got)
    end)

    it('rejects the spawn promise with what fn throws', function()
      local e = { message = 'thrown' }
      local state, reason = settled(P.spawn(function() error(e) end))
      assert.equal('rejected', state)
      assert.equal(e, reason)
      assert.same({ 'rejected', 'late' }, {
        settled(P.spawn(function()
          P.await(P.resolve())
          error('late', 0)
        end)),
      })
    end)

    it('resumes after a turn, like JS await', function()
      local log = {}
      P.spawn(function()
        log[#log + 1] = 'w0'
        P.await(P.resolve(1))
        log[#log + 1] = 'w1'
        P.await(P.resolve(1))
        log[#log + 1] = 'w2'
      end)
      P.resolve():next(function() log[#log + 1] = 'j1' end):next(function() log[#log + 1] = 'j2' end)
      P.drain()
      assert.same({ 'w0', 'w1', 'j1', 'w2', 'j2' }, log)
    end)

    it('supports nested spawns', function()
      local kit = P.makePromiseKit()
      local p = P.spawn(function()
        local inner = P.spawn(function() return P.await(kit.promise) + 1 end)
        return P.await(inner) + 1
      end)
      kit.resolve(1)
      assert.same({ 'fulfilled', 3 }, { settled(p) })
    end)

    it('runs many concurrent coroutines', function()
      local kits, results = {}, {}
      for i = 1, 1000 do
        kits[i] = P.makePromiseKit()
        results[i] = P.spawn(function()
          local v = P.await(kits[i].promise)
          return P.await(P.resolve(v + i))
        end)
      end
      for i = 1000, 1, -1 do kits[i].resolve(i) end
      local state, values = settled(P.all(results))
      assert.equal('fulfilled', state)
      for i = 1, 1000 do assert.equal(2 * i, values[i]) end
    end)

    it('refuses to yield into a coroutine it did not make', function()
      local gen = coroutine.wrap(function() return pcall(P.await, P.resolve(1)) end)
      local ok, err = gen()
      assert.is_false(ok)
      assert.equal('await: not inside an ocap coroutine (use ocap.spawn)', err)
      local p = P.spawn(function()
        local inner = coroutine.create(function() return P.await(P.resolve(1)) end)
        local _, err2 = coroutine.resume(inner)
        error(err2, 0)
      end)
      assert.same({ 'rejected', 'await: not inside an ocap coroutine (use ocap.spawn)' }, { settled(p) })
    end)

    it('survives a stray resume of an awaiting coroutine', function()
      local kit = P.makePromiseKit()
      local co
      local p = P.spawn(function()
        co = coroutine.running()
        return P.await(kit.promise)
      end)
      coroutine.resume(co)
      assert.equal('pending', settled(p))
      kit.resolve('ok')
      assert.same({ 'fulfilled', 'ok' }, { settled(p) })
    end)

    it('runs nothing of a task again in a worker someone else resumed to its end', function()
      -- Its task's code holds the worker (coroutine.running) and resumes
      -- it itself, after the promise it awaits settles but before the
      -- await's turn: the task ends there. Neither that code's next resume
      -- nor the await's turn may take what the task left (its value, a
      -- function here) for a task to run.
      local ran = 0
      local function again() ran = ran + 1 end
      local function ended(_, _, ok, r) return ok, r end
      for _, start in ipairs({
        function(task) return P.spawn(task) end,
        function(task)
          local done, ok = P.xcall(ended, nil, nil, task, ended)
          assert.is_false(done)
          return ok
        end,
      }) do
        local kit = P.makePromiseKit()
        local co
        local p = start(function()
          co = coroutine.running()
          P.await(kit.promise)
          return again
        end)
        P.resolve():next(function() end) -- a turn queued: the await's waits
        kit.resolve('ok')
        assert.is_true((coroutine.resume(co)))
        assert.is_true((coroutine.resume(co, 'x')))
        P.drain()
        assert.equal(0, ran)
        assert.equal('pending', settled(p))
      end
    end)
  end)

  describe('await on the main thread', function()
    it('drains turns until the promise settles', function()
      local p = P.resolve(1):next(function(v) return v + 1 end)
      assert.equal(2, P.await(p))
      assert.equal(3, P.resolve(3):await())
      assert.equal('x', P.await('x'))
    end)

    it('raises the rejection reason as is', function()
      local e = { message = 'm' }
      local ok, err = pcall(P.await, P.resolve():next(function() error(e) end))
      assert.is_false(ok)
      assert.equal(e, err)
    end)

    it('raises when the promise can never settle', function()
      local ok, err = pcall(P.await, P.makePromiseKit().promise)
      assert.is_false(ok)
      assert.equal('promise can never settle: kernel is idle', err)
    end)

    it('calls the main driver', function()
      local kit = P.makePromiseKit()
      local calls = 0
      P.setMainDriver(function(isSettled)
        calls = calls + 1
        assert.is_false(isSettled())
        kit.resolve('driven')
        P.drain()
        assert.is_true(isSettled())
      end)
      assert.equal('driven', P.await(kit.promise))
      assert.equal(1, calls)
    end)
  end)
end)
