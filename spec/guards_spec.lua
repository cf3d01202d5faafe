local guards = require 'ocap.guards'
local pass = require 'ocap.pass'
local exo = require 'ocap.exo'

local M = guards.M
local check = guards.check
local defineExoClass = guards.defineExoClass
local defineExoClassKit = guards.defineExoClassKit
local makeExo = guards.makeExo

-- Calls obj:method(...) and returns the message of the error value it
-- raises (failing the test when it does not raise one).
local function callError(obj, method, ...)
  local ok, err = pcall(obj[method], obj, ...)
  assert.is_false(ok, 'expected ' .. method .. ' to raise')
  assert.is_true(pass.isError(err), 'expected an error value, got ' .. tostring(err))
  return err.message
end

local function rejects(pattern, value)
  local ok, msg = check(pattern, value)
  assert.is_false(ok)
  assert.is_string(msg)
  return msg
end

local function accepts(pattern, value)
  local ok, msg = check(pattern, value)
  assert.is_true(ok, msg)
  assert.is_nil(msg)
end

describe('ocap.guards', function()
  describe('patterns', function()
    local remote = exo.makeDefaultExo('thing', {})

    it('M.any() accepts any passable, nil included', function()
      for _, v in ipairs({ 1, 'a', true, pass.null, { 1, 2 }, { a = { b = 1 } }, remote }) do
        accepts(M.any(), v)
      end
      accepts(M.any(), nil)
      accepts(M.any(), pass.makeError('boom'))
    end)

    it('M.any() rejects non-passables, deeply', function()
      assert.are.equal('must be passable, got function (cannot pass function)', rejects(M.any(), print))
      local msg = rejects(M.any(), { f = print })
      assert.are.equal('must be passable, got record {f = <function>} (cannot pass function)', msg)
      local cyclic = {}
      cyclic[1] = cyclic
      assert.matches('cannot pass cyclic table', rejects(M.any(), cyclic), 1, true)
      assert.matches('foreign metatable', rejects(M.any(), setmetatable({}, {})), 1, true)
    end)

    it('M.string()', function()
      accepts(M.string(), '')
      accepts(M.string(), 'hello')
      assert.are.equal('must be a string, got number 42', rejects(M.string(), 42))
      assert.are.equal('must be a string, got nil', rejects(M.string(), nil))
      assert.are.equal('must be a string, got boolean true', rejects(M.string(), true))
      assert.are.equal('must be a string, got record {a = 1}', rejects(M.string(), { a = 1 }))
      assert.are.equal('must be a string, got array {1, "x"}', rejects(M.string(), { 1, 'x' }))
      assert.are.equal('must be a string, got null', rejects(M.string(), pass.null))
      assert.are.equal('must be a string, got remotable "Alleged: thing"', rejects(M.string(), remote))
    end)

    it('M.number()', function()
      accepts(M.number(), 42)
      accepts(M.number(), -1.5)
      accepts(M.number(), 0 / 0)
      accepts(M.number(), math.huge)
      assert.are.equal('must be a number, got string "42"', rejects(M.number(), '42'))
    end)

    it('M.integer() refuses floats, even integral ones', function()
      accepts(M.integer(), 3)
      accepts(M.integer(), -7)
      accepts(M.integer(), math.maxinteger)
      assert.are.equal('must be an integer, got number 3.0', rejects(M.integer(), 3.0))
      assert.are.equal('must be an integer, got number 1.5', rejects(M.integer(), 1.5))
      assert.are.equal('must be an integer, got string "3"', rejects(M.integer(), '3'))
    end)

    it('M.nat()', function()
      accepts(M.nat(), 0)
      accepts(M.nat(), 12)
      assert.are.equal('must be a non-negative integer, got number -1', rejects(M.nat(), -1))
      assert.are.equal('must be a non-negative integer, got number 2.5', rejects(M.nat(), 2.5))
    end)

    it('M.boolean()', function()
      accepts(M.boolean(), true)
      accepts(M.boolean(), false)
      assert.are.equal('must be a boolean, got nil', rejects(M.boolean(), nil))
      assert.are.equal('must be a boolean, got number 0', rejects(M.boolean(), 0))
    end)

    it("M['nil']() and M.undefined()", function()
      accepts(M['nil'](), nil)
      accepts(M.undefined(), nil)
      assert.are.equal(M['nil'](), M.undefined())
      assert.are.equal('must be nil, got boolean false', rejects(M['nil'](), false))
      assert.are.equal('must be nil, got null', rejects(M.undefined(), pass.null))
    end)

    it('M.null()', function()
      accepts(M.null(), pass.null)
      assert.are.equal('must be null, got nil', rejects(M.null(), nil))
    end)

    it('M.remotable(name?)', function()
      accepts(M.remotable(), remote)
      accepts(M.remotable('Other'), remote) -- the name is documentation, as in Endo
      assert.are.equal('must be a remotable, got record {}', rejects(M.remotable(), {}))
      assert.are.equal('must be a remotable "Counter", got string "c"', rejects(M.remotable('Counter'), 'c'))
      assert.has_error(function() M.remotable(1) end, 'M.remotable: name must be a string')
    end)

    it('M.promise()', function()
      local p = pass.registerPromise({})
      accepts(M.promise(), p)
      assert.are.equal('must be a promise, got remotable "Alleged: thing"', rejects(M.promise(), remote))
    end)

    it('M.error()', function()
      accepts(M.error(), pass.makeError('boom'))
      assert.are.equal('must be an error, got string "boom"', rejects(M.error(), 'boom'))
    end)

    it('M.record()', function()
      accepts(M.record(), {})
      accepts(M.record(), { a = 1, b = { 'x' } })
      accepts(M.record(), pass.harden({ a = 1 }))
      assert.are.equal('must be a record, got array {1, 2}', rejects(M.record(), { 1, 2 }))
      assert.are.equal('must be a record, got array {}', rejects(M.record(), pass.array()))
      assert.are.equal('must be a record, got number 1', rejects(M.record(), 1))
      assert.matches('cannot pass function', rejects(M.record(), { f = print }), 1, true)
    end)

    it('M.array()', function()
      accepts(M.array(), {})
      accepts(M.array(), pass.array())
      accepts(M.array(), { 1, 'two', { 3 } })
      accepts(M.array(), table.pack(1, nil, 3))
      accepts(M.array(), pass.harden({ 1, 2 }))
      assert.are.equal('must be an array, got record {a = 1}', rejects(M.array(), { a = 1 }))
      assert.are.equal('must be an array, got string "x"', rejects(M.array(), 'x'))
    end)

    it('M.arrayOf(p)', function()
      accepts(M.arrayOf(M.string()), {})
      accepts(M.arrayOf(M.string()), { 'a', 'b' })
      assert.are.equal('[2]: must be a string, got number 2', rejects(M.arrayOf(M.string()), { 'a', 2 }))
      assert.are.equal('must be an array, got string "a"', rejects(M.arrayOf(M.string()), 'a'))
      local nested = M.arrayOf(M.arrayOf(M.nat()))
      assert.are.equal('[1][2]: must be a non-negative integer, got number -3', rejects(nested, { { 1, -3 } }))
    end)

    it('M.recordOf(keyP, valueP)', function()
      local p = M.recordOf(M.string(), M.number())
      accepts(p, {})
      accepts(p, { a = 1, b = 2.5 })
      assert.are.equal('.b: must be a number, got string "x"', rejects(p, { a = 1, b = 'x' }))
      assert.are.equal('["a b"]: must be a number, got boolean true', rejects(p, { ['a b'] = true }))
      assert.are.equal('must be a record, got array {1}', rejects(p, { 1 }))
      local keyed = M.recordOf(M.anyOf('x', 'y'), M.any())
      accepts(keyed, { x = 1 })
      assert.are.equal('key "z": must be "x" or "y", got string "z"', rejects(keyed, { z = 1 }))
    end)

    it('M.opt(p)', function()
      accepts(M.opt(M.string()), nil)
      accepts(M.opt(M.string()), 'a')
      assert.are.equal('must be a string or nil, got number 1', rejects(M.opt(M.string()), 1))
      -- A failure inside the value keeps its path.
      assert.are.equal('[1]: must be a string, got number 1', rejects(M.opt(M.arrayOf(M.string())), { 1 }))
    end)

    it('M.eq(v) compares plain data deeply', function()
      accepts(M.eq(42), 42)
      accepts(M.eq(42), 42.0)
      accepts(M.eq('a'), 'a')
      accepts(M.eq({ 1, { a = 2 } }), { 1, { a = 2 } })
      accepts(M.eq({ a = { 'x' } }), pass.harden({ a = { 'x' } }))
      accepts(M.eq(remote), remote)
      accepts(M.eq(pass.null), pass.null)
      accepts(M.eq(nil), nil)
      accepts(M.eq(0 / 0), 0 / 0)
      assert.are.equal('must be 42, got number 43', rejects(M.eq(42), 43))
      assert.are.equal('must be "a", got string "b"', rejects(M.eq('a'), 'b'))
      assert.are.equal('must be {1, {a = 2}}, got array {1, {a = 3}}',
        rejects(M.eq({ 1, { a = 2 } }), { 1, { a = 3 } }))
      rejects(M.eq({ a = 1 }), { a = 1, b = 2 })
      rejects(M.eq({ 1, 2 }), { 1 })
      rejects(M.eq(remote), exo.makeDefaultExo('thing', {}))
      assert.has_error(function() M.eq(print) end, 'M.eq: cannot pass function')
    end)

    it('M.anyOf(p...)', function()
      local p = M.anyOf(M.string(), M.nat(), M.undefined())
      accepts(p, 'a')
      accepts(p, 3)
      accepts(p, nil)
      assert.are.equal('must be a string, a non-negative integer or nil, got number -1', rejects(p, -1))
      assert.are.equal('must be nothing, got number 1', rejects(M.anyOf(), 1))
    end)

    it('M.gte(n) and M.lte(n)', function()
      accepts(M.gte(5), 5)
      accepts(M.gte(5), 7.5)
      accepts(M.lte(5), 5)
      accepts(M.lte(5), -2)
      assert.are.equal('must be at least 5, got number 3', rejects(M.gte(5), 3))
      assert.are.equal('must be at most 5, got number 6', rejects(M.lte(5), 6))
      assert.are.equal('must be at least 5, got string "9"', rejects(M.gte(5), '9'))
      rejects(M.gte(0), 0 / 0)
      accepts(M.gte('b'), 'c')
      rejects(M.gte('b'), 'a')
      accepts(M.allOf(M.integer(), M.gte(1), M.lte(10)), 10)
      assert.are.equal('must be at most 10, got number 11', rejects(M.allOf(M.integer(), M.gte(1), M.lte(10)), 11))
      assert.has_error(function() M.gte({}) end, 'M.gte: bound must be a number or a string')
    end)

    it('plain values are M.eq patterns, tables match structurally', function()
      accepts('ok', 'ok')
      assert.are.equal('must be "ok", got string "no"', rejects('ok', 'no'))
      accepts(3, 3)
      accepts(false, false)
      accepts(pass.null, pass.null)
      local point = { x = M.number(), y = M.number(), label = M.opt(M.string()) }
      accepts(point, { x = 1, y = 2 })
      accepts(point, { x = 1, y = 2, label = 'origin' })
      assert.are.equal('.y: must be a number, got string "2"', rejects(point, { x = 1, y = '2' }))
      assert.are.equal('unexpected field "z" in record {x = 1, y = 2, z = 3}', rejects(point, { x = 1, y = 2, z = 3 }))
      assert.are.equal('must be a record, got number 1', rejects(point, 1))
      local pair = { M.string(), M.nat() }
      accepts(pair, { 'a', 1 })
      assert.are.equal('[2]: must be a non-negative integer, got number -1', rejects(pair, { 'a', -1 }))
      assert.are.equal('must be an array of length 2, got array {"a"}', rejects(pair, { 'a' }))
    end)

    it('refuses what cannot be a pattern', function()
      assert.has_error(function() check(print, 1) end, 'check: a function is not a pattern')
      assert.has_error(function() M.arrayOf({ print }) end, 'M.arrayOf: a function is not a pattern')
      assert.has_error(function() M.call(M.call()) end, 'M.call: a guard is not a pattern')
    end)

    it('patterns and M are read-only', function()
      assert.has_error(function() M.string = nil end, 'cannot modify M')
      assert.has_error(function()
        local p = M.string()
        p.x = 1
      end, 'cannot modify a pattern or guard')
      assert.are.equal('M.arrayOf(M.opt(M.string()))', tostring(M.arrayOf(M.opt(M.string()))))
      assert.is_true(guards.isPattern(M.any()))
      assert.is_false(guards.isPattern({}))
    end)

    it('mustMatch raises an error value', function()
      assert.are.equal(5, guards.mustMatch(5, M.nat(), 'count'))
      local ok, err = pcall(guards.mustMatch, -5, M.nat(), 'count')
      assert.is_false(ok)
      assert.are.equal('count: must be a non-negative integer, got number -5', err.message)
    end)
  end)

  describe('symbols, byte arrays, big integers and tagged values', function()
    it('are passable, named in messages, and compared by contents', function()
      accepts(M.any(), pass.symbol('a'))
      accepts(M.any(), pass.makeTagged('t', { pass.bytes('x') }))
      accepts(M.eq(pass.makeTagged('t', { 1 })), pass.makeTagged('t', { 1 }))
      accepts(M.eq(pass.bigint('99999999999999999999')), pass.bigint('99999999999999999999'))
      assert.equal('must be <tagged(t)>, got <tagged(t)>', rejects(M.eq(pass.makeTagged('t', { 1 })),
        pass.makeTagged('t', { 2 })))
      assert.equal('must be a string, got <symbol(a)>', rejects(M.string(), pass.symbol('a')))
      assert.equal('must be passable, got <tagged(t)> (cannot pass function)',
        rejects(M.any(), pass.makeTagged('t', { print })))
    end)
  end)

  describe('method guards', function()
    local I = M.interface('Calc', {
      add = M.call(M.number(), M.number()):returns(M.number()),
      greet = M.call(M.string()):optional(M.string(), M.boolean()):returns(M.string()),
      sum = M.call():rest(M.arrayOf(M.number())):returns(M.number()),
      count = M.call(M.string()):rest(M.any()):returns(M.nat()),
      broken = M.call():returns(M.string()),
      anything = M.call(M.any()),
    })
    local calc = makeExo('Calc', I, {
      add = function(_, a, b) return a + b end,
      greet = function(_, name, greeting, shout)
        local s = (greeting or 'hello') .. ' ' .. name
        return shout and s:upper() or s
      end,
      sum = function(_, ...)
        local t = 0
        for i = 1, select('#', ...) do t = t + select(i, ...) end
        return t
      end,
      count = function(_, _, ...) return select('#', ...) end,
      broken = function() return 42 end,
      anything = function(_, v) return v end,
    })

    it('checks required arguments, naming the method and the 0-based position', function()
      assert.are.equal(3, calc:add(1, 2))
      assert.are.equal('In "add" method of (Calc): arg 1: must be a number, got string "2"',
        callError(calc, 'add', 1, '2'))
      assert.are.equal('In "add" method of (Calc): arg 0: must be a number, got nil', callError(calc, 'add', nil, 2))
    end)

    it('refuses missing required arguments and unexpected extra ones', function()
      assert.are.equal('In "add" method of (Calc): arg 1: missing (expected at least 2 arguments, got 1)',
        callError(calc, 'add', 1))
      assert.are.equal('In "add" method of (Calc): arg 2: unexpected (expected at most 2 arguments, got 3)',
        callError(calc, 'add', 1, 2, 3))
      -- Trailing nils are not arguments a caller meant to pass.
      assert.are.equal(3, calc:add(1, 2, nil, nil))
      -- M.any() takes a nil that was passed, not one that was not.
      assert.is_nil(calc:anything(nil))
      assert.matches('arg 0: missing', callError(calc, 'anything'), 1, true)
    end)

    it(':optional(...) accepts nil or a match', function()
      assert.are.equal('hello bob', calc:greet('bob'))
      assert.are.equal('hi bob', calc:greet('bob', 'hi'))
      assert.are.equal('HELLO BOB', calc:greet('bob', nil, true))
      assert.are.equal('In "greet" method of (Calc): arg 2: must be a boolean, got string "yes"',
        callError(calc, 'greet', 'bob', 'hi', 'yes'))
      assert.are.equal('In "greet" method of (Calc): arg 3: unexpected (expected at most 3 arguments, got 4)',
        callError(calc, 'greet', 'bob', 'hi', true, 'extra'))
    end)

    it(':rest(p) matches the remaining arguments', function()
      assert.are.equal(0, calc:sum())
      assert.are.equal(6, calc:sum(1, 2, 3))
      assert.are.equal('In "sum" method of (Calc): arg 2: must be a number, got string "3"',
        callError(calc, 'sum', 1, 2, '3'))
      assert.are.equal(3, calc:count('x', 1, nil, 'y'))
      assert.matches('rest args: must be passable', callError(calc, 'count', 'x', print), 1, true)
    end)

    it(':returns(p) checks the return value', function()
      assert.are.equal('In "broken" method of (Calc): return value: must be a string, got number 42',
        callError(calc, 'broken'))
    end)

    it('unguarded returns must still be passable', function()
      local leak = makeExo('Leak', M.interface('LeakI', { get = M.call() }), {
        get = function() return print end,
      })
      assert.are.equal('In "get" method of (LeakI): return value: '
        .. 'must be passable, got function (cannot pass function)', callError(leak, 'get'))
    end)

    it('guards are immutable and chainable', function()
      local base = M.call(M.string())
      local withReturns = base:returns(M.string())
      assert.are_not.equal(base, withReturns)
      assert.are.equal('M.call(M.string()):returns(M.any())', tostring(base))
      assert.are.equal('M.call(M.string()):optional(M.nat()):rest(M.any()):returns(M.string())',
        tostring(base:optional(M.nat()):rest(M.any()):returns(M.string())))
      assert.are.equal(M.call, M.callWhen)
      assert.has_error(function() M.interface('X', { f = M.string() }) end,
        'M.interface "X": guard of "f" must be a method guard (M.call(...))')
    end)
  end)

  describe('interfaces', function()
    local I = M.interface('GreeterI', { greet = M.call(M.string()):returns(M.string()) })

    it('refuse a method the interface does not guard, at definition time', function()
      assert.has_error(function()
        defineExoClass('Greeter', I, nil, {
          greet = function(_, n) return n end,
          shout = function(_, n) return n end,
        })
      end, 'methods ["shout"] not guarded by "GreeterI"')
    end)

    it('refuse an interface method that is not implemented', function()
      assert.has_error(function()
        defineExoClass('Greeter', I, nil, {})
      end, 'methods ["greet"] not implemented by "Greeter"')
      assert.has_error(function()
        makeExo('Greeter', I, {})
      end, 'methods ["greet"] not implemented by "Greeter"')
    end)

    it("defaultGuards = 'passable' lets unguarded methods through, checking passability", function()
      local loose = M.interface('LooseI', { greet = M.call(M.string()) }, { defaultGuards = 'passable' })
      local g = makeExo('Loose', loose, {
        greet = function(_, n) return 'hi ' .. n end,
        other = function(_, ...) return select('#', ...) end,
      })
      assert.are.equal(3, g:other(1, 'x', { y = 2 }))
      assert.matches('In "other" method of (LooseI): rest args: must be passable',
        callError(g, 'other', print), 1, true)
      assert.matches('In "greet" method of (LooseI): arg 0', callError(g, 'greet', 1), 1, true)
      local sloppy = M.interface('SloppyI', {}, { sloppy = true })
      assert.are.equal(1, makeExo('S', sloppy, { f = function() return 1 end }):f())
      assert.has_error(function() M.interface('BadI', {}, { defaultGuards = 'never' }) end,
        'M.interface: unrecognized defaultGuards "never"')
    end)

    it('a nil interface guard checks nothing', function()
      local e = makeExo('Free', nil, { id = function(_, v) return v end })
      assert.are.equal(print, e:id(print))
    end)

    it('must be made by M.interface', function()
      assert.has_error(function()
        defineExoClass('X', { greet = M.call() }, nil, { greet = function() end })
      end, 'defineExoClass: interface guard must be made by M.interface (or be nil)')
    end)
  end)

  describe('defineExoClass', function()
    local CounterI = M.interface('CounterI', {
      increment = M.call():optional(M.nat()):returns(M.nat()),
      getCount = M.call():returns(M.nat()),
      whoami = M.call():returns(M.remotable()),
    })
    local makeCounter = defineExoClass('Counter', CounterI,
      function(start) return { count = start or 0 } end,
      {
        increment = function(ctx, by)
          ctx.state.count = ctx.state.count + (by or 1)
          return ctx.state.count
        end,
        getCount = function(ctx) return ctx.state.count end,
        whoami = function(ctx) return ctx.self end,
      })

    it('gives each instance its own state', function()
      local a, b = makeCounter(), makeCounter(10)
      assert.are.equal(1, a:increment())
      assert.are.equal(3, a:increment(2))
      assert.are.equal(11, b:increment())
      assert.are.equal(3, a:getCount())
      assert.are.equal(11, b:getCount())
    end)

    it('passes context.self, the instance', function()
      local a, b = makeCounter(), makeCounter()
      assert.are.equal(a, a:whoami())
      assert.are.equal(b, b:whoami())
    end)

    it('makes hardened remotable exos that liveslots can call', function()
      local c = makeCounter()
      assert.is_true(pass.isRemotable(c))
      assert.are.equal('remotable', pass.passStyleOf(c))
      assert.are.equal('Alleged: Counter', pass.remotableIface(c))
      assert.are.equal('Alleged: Counter', tostring(c))
      assert.are.equal('exo', getmetatable(c))
      assert.has_error(function() c.count = 5 end)
      assert.has_error(function() c.increment = function() end end)
      assert.has_error(function() setmetatable(c, {}) end)
      assert.is_nil(next(c))
      -- What liveslots does: impl[method](obj, ...args), guarded too.
      local impl = exo.methods(c)
      assert.are.equal(4, impl.increment(c, 4))
      local ok, err = pcall(impl.increment, c, -1)
      assert.is_false(ok)
      assert.are.equal('In "increment" method of (CounterI): arg 0: must be a non-negative integer, got number -1',
        err.message)
    end)

    it('refuses a receiver that is not an instance', function()
      local a = makeCounter()
      local ok, err = pcall(a.getCount, {})
      assert.is_false(ok)
      assert.are.equal('In "getCount" method of (CounterI): receiver is not a "Counter" instance ' ..
        '(call it as obj:getCount(...))', err.message)
      ok = pcall(a.getCount)
      assert.is_false(ok)
    end)

    it('works without an interface guard, and runs options.finish', function()
      local finished
      local make = defineExoClass('Box', nil, function(v) return { v = v } end, {
        get = function(ctx) return ctx.state.v end,
      }, { finish = function(ctx) finished = ctx end })
      local box = make(print)
      assert.are.equal(print, box:get())
      assert.are.equal(box, finished.self)
      assert.has_error(function()
        defineExoClass('Bad', nil, function() return 1 end, {})()
      end, 'defineExoClass "Bad": init must return a table, got number')
    end)
  end)

  describe('defineExoClassKit', function()
    local UpI = M.interface('UpCounter', { incr = M.call():optional(M.nat()):returns(M.nat()) })
    local DownI = M.interface('DownCounter', { decr = M.call():optional(M.nat()):returns(M.nat()) })
    local makeCounterKit = defineExoClassKit('Counter', { up = UpI, down = DownI },
      function(x) return { x = x or 0 } end,
      {
        up = {
          incr = function(ctx, y)
            ctx.state.x = ctx.state.x + (y or 1)
            return ctx.state.x
          end,
        },
        down = {
          decr = function(ctx, y)
            local nx = ctx.state.x - (y or 1)
            if nx < 0 then return ctx.facets.up:incr(0) end -- reaching another facet
            ctx.state.x = nx
            return nx
          end,
        },
      })

    it('makes facets sharing one state', function()
      local kit = makeCounterKit(3)
      assert.are.equal(5, kit.up:incr(2))
      assert.are.equal(4, kit.down:decr())
      assert.are.equal(4, kit.down:decr(10)) -- through context.facets
      local other = makeCounterKit()
      assert.are.equal(1, other.up:incr())
      assert.are.equal(5, kit.up:incr())
    end)

    it('gives each facet its own exo, alleged name and guard', function()
      local kit = makeCounterKit()
      assert.are.equal('Alleged: Counter up', pass.remotableIface(kit.up))
      assert.are.equal('Alleged: Counter down', pass.remotableIface(kit.down))
      assert.are.equal('In "incr" method of (UpCounter): arg 0: must be a non-negative integer, got number -1',
        callError(kit.up, 'incr', -1))
      assert.are.equal('In "decr" method of (DownCounter): arg 0: must be a non-negative integer, got string "a"',
        callError(kit.down, 'decr', 'a'))
      -- A facet's method refuses another facet as its receiver.
      local ok = pcall(kit.up.incr, kit.down)
      assert.is_false(ok)
      assert.has_error(function() kit.extra = 1 end)
      assert.are.equal('copyRecord', pass.passStyleOf(kit))
    end)

    it('checks interface guards against facets', function()
      assert.has_error(function()
        defineExoClassKit('K', { up = UpI, side = DownI }, nil, { up = { incr = function() end } })
      end, 'defineExoClassKit "K": interface guard for unknown facet "side"')
      assert.has_error(function()
        defineExoClassKit('K', { up = UpI }, nil, { up = { incr = function() end }, down = { decr = function() end } })
      end, 'defineExoClassKit "K": facet "down" has no interface guard')
      assert.has_error(function()
        defineExoClassKit('K', { up = UpI }, nil, { up = { incr = function() end, reset = function() end } })
      end, 'methods ["reset"] not guarded by "UpCounter"')
    end)
  end)

  describe('temperature converter', function()
    -- After the ocap-kernel exo example: one state, a celsius and a
    -- fahrenheit face, and a plain class with setCelsius/getFahrenheit.
    local function toF(c) return c * 9 / 5 + 32 end
    local function toC(f) return (f - 32) * 5 / 9 end

    local ConverterI = M.interface('TemperatureConverter', {
      setCelsius = M.call(M.number()),
      setFahrenheit = M.call(M.number()),
      getCelsius = M.call():returns(M.number()),
      getFahrenheit = M.call():returns(M.number()),
    })
    local makeConverter = defineExoClass('TemperatureConverter', ConverterI,
      function(celsius) return { celsius = celsius or 0 } end,
      {
        setCelsius = function(ctx, c) ctx.state.celsius = c end,
        setFahrenheit = function(ctx, f) ctx.state.celsius = toC(f) end,
        getCelsius = function(ctx) return ctx.state.celsius end,
        getFahrenheit = function(ctx) return toF(ctx.state.celsius) end,
      })

    it('converts through the class', function()
      local t = makeConverter()
      assert.are.equal(32, t:getFahrenheit())
      t:setCelsius(100)
      assert.are.equal(212, t:getFahrenheit())
      t:setFahrenheit(-40)
      assert.are.equal(-40, t:getCelsius())
      assert.are.equal('In "setCelsius" method of (TemperatureConverter): arg 0: must be a number, got string "hot"',
        callError(t, 'setCelsius', 'hot'))
      assert.are.equal(-40, t:getCelsius()) -- the refused call changed nothing
    end)

    local ScaleI = M.interface('TemperatureScale', {
      getValue = M.call():returns(M.number()),
      setValue = M.call(M.number()):returns(M.number()),
    })
    local makeTemperature = defineExoClassKit('Temperature',
      { celsius = ScaleI, fahrenheit = ScaleI },
      function(celsius) return { celsius = celsius } end,
      {
        celsius = {
          getValue = function(ctx) return ctx.state.celsius end,
          setValue = function(ctx, v)
            ctx.state.celsius = v
            return ctx.facets.fahrenheit:getValue()
          end,
        },
        fahrenheit = {
          getValue = function(ctx) return toF(ctx.state.celsius) end,
          setValue = function(ctx, v)
            ctx.state.celsius = toC(v)
            return ctx.facets.celsius:getValue()
          end,
        },
      })

    it('converts through the kit facets', function()
      local t = makeTemperature(20)
      assert.are.equal(68, t.fahrenheit:getValue())
      assert.are.equal(212, t.celsius:setValue(100))
      assert.are.equal(0, t.fahrenheit:setValue(32))
      assert.are.equal(0, t.celsius:getValue())
      assert.are.equal('In "setValue" method of (TemperatureScale): arg 0: must be a number, got nil',
        callError(t.fahrenheit, 'setValue', nil))
    end)
  end)

  describe('the ServiceI example of the API', function()
    local ServiceI = M.interface('ServiceInterface', {
      echo = M.call(M.string()):returns(M.string()),
    })
    local makeService = defineExoClass('Service', ServiceI,
      function() return {} end,
      { echo = function(_, message) return 'Echo: ' .. message end })

    it('echoes strings', function()
      assert.are.equal('Echo: hi', makeService():echo('hi'))
    end)

    it('rejects a number, naming echo and arg 0', function()
      local service = makeService()
      local ok, err = pcall(service.echo, service, 42)
      assert.is_false(ok)
      assert.is_true(pass.isError(err))
      assert.are.equal('Error', err.name)
      assert.are.equal('In "echo" method of (ServiceInterface): arg 0: must be a string, got number 42', err.message)
      assert.are.equal('Error: In "echo" method of (ServiceInterface): arg 0: must be a string, got number 42',
        tostring(err))
      -- The same through liveslots' path.
      ok, err = pcall(exo.methods(service).echo, service, 42)
      assert.is_false(ok)
      assert.matches('"echo".*arg 0', err.message)
    end)
  end)

  describe('makeExo', function()
    it('calls methods with the exo as self', function()
      local I = M.interface('PingI', { ping = M.call(M.string()):returns(M.string()), me = M.call() })
      local e
      e = makeExo('Pinger', I, {
        ping = function(self, s)
          assert.are.equal(e, self)
          return 'pong ' .. s
        end,
        me = function(self) return self end,
      })
      assert.are.equal('pong x', e:ping('x'))
      assert.are.equal(e, e:me())
      assert.are.equal('Alleged: Pinger', pass.remotableIface(e))
      assert.are.equal('In "ping" method of (PingI): arg 0: must be a string, got boolean true',
        callError(e, 'ping', true))
      assert.has_error(function() e.x = 1 end)
    end)
  end)
end)
