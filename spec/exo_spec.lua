-- Exos and guards in real vats (issue #6, part 4): interface guards on
-- exo classes exported from a vat, kit facets, scalar map stores, objects
-- passed through messages and called back, the temperature converter, and
-- passability checked at the sender.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'
local rejection = support.rejection
local E = ocap.E

local EXOS = 'spec/vats/exos.lua'
local ECHO = 'spec/vats/echo.lua'

describe('exos in vats', function()
  local kernel, a, aP, b, echo
  before_each(function()
    kernel = testing.makeKernel()
    local r = kernel:launchSubcluster({
      bootstrap = 'a',
      vats = { a = { sourceSpec = EXOS }, b = { sourceSpec = EXOS }, e = { sourceSpec = ECHO } },
    }):await()
    a = r.rootKref
    aP = kernel:getPresence(a, 'exos')
    b = kernel:queueMessage(a, 'peer', { 'b' }):await()
    echo = kernel:queueMessage(a, 'peer', { 'e' }):await()
  end)
  after_each(function() kernel:stop() end)

  local function make(method, ...)
    return kernel:queueMessage(a, method, table.pack(...)):await()
  end

  describe('interface guards on a defineExoClass instance', function()
    local svc
    before_each(function() svc = make('makeService', 'svc') end)

    it('let matching calls through, from the host and from another vat', function()
      assert.equal('Alleged: Service', tostring(svc):match('Alleged: [%w ]+'))
      assert.equal('Echo: hi', E(svc).echo('hi'):await())
      assert.equal('Echo: queued', kernel:queueMessage(kernel:krefOf(svc), 'echo', { 'queued' }):await())
      assert.equal(3, E(svc).add(1, 2):await())
      assert.equal(6, E(svc).add(1, 2, 3):await())
      assert.same({ x = 1 }, E(svc).configure({ x = 1 }):await())
      assert.equal(3, E(svc).count({ 0, 1, 2 }):await())
      local thing = make('makeThing', 't')
      assert.equal('svc got Alleged: thing', E(svc).describe(thing):await())
      assert.equal('Echo: from b', E(b).call(svc, 'echo', 'from b'):await())
      assert.equal(7, E(b).call(svc, 'add', 3, 4):await())
    end)

    local violations = {
      { 'echo', { 5 }, 'In "echo" method of (ServiceInterface): arg 0: must be a string, got number 5' },
      { 'add', { 1 }, 'In "add" method of (ServiceInterface): arg 1: missing (expected at least 2 arguments, got 1)' },
      { 'add', { 1, 2, 3, 4 },
        'In "add" method of (ServiceInterface): arg 3: unexpected (expected at most 3 arguments, got 4)' },
      { 'add', { 1, 'two' }, 'In "add" method of (ServiceInterface): arg 1: must be a number, got string "two"' },
      { 'describe', { 'x' },
        'In "describe" method of (ServiceInterface): arg 0: must be a remotable "thing", got string "x"' },
      { 'configure', { { 1, 2 } },
        'In "configure" method of (ServiceInterface): arg 0: must be a record, got array {1, 2}' },
      { 'count', { { 1, -2 } },
        'In "count" method of (ServiceInterface): arg 0: [2]: must be a non-negative integer, got number -2' },
    }

    for _, v in ipairs(violations) do
      local method, args, message = v[1], v[2], v[3]
      it('reject ' .. method .. '(' .. #args .. ' args) from the host, naming the method and the argument', function()
        local err = rejection(E(svc)[method](table.unpack(args)))
        assert.equal(message, err.message)
        assert.equal('Error', err.name)
        assert.is_nil(err.code)
        -- queueMessage with a kref takes the same path.
        assert.equal(message, rejection(kernel:queueMessage(kernel:krefOf(svc), method, args)).message)
        -- The method never ran.
        assert.equal(0, E(svc).calls():await())
      end)
    end

    it('reject a violating call from another vat with the same message', function()
      for _, v in ipairs(violations) do
        local method, args, message = v[1], v[2], v[3]
        local r = E(b).tryCall(svc, method, table.unpack(args)):await()
        assert.is_false(r.ok, method)
        assert.equal(message, r.err)
      end
      assert.equal(0, E(svc).calls():await())
      assert.equal('Echo: fine', E(svc).echo('fine'):await())
    end)

    it('reject a result that violates the return guard', function()
      local msg = 'In "badReturn" method of (ServiceInterface): return value: must be a string, got number 1'
      assert.equal(msg, rejection(E(svc).badReturn()).message)
      local r = E(b).tryCall(svc, 'badReturn'):await()
      assert.is_false(r.ok)
      assert.equal(msg, r.err)
    end)

    it('reject a method the class does not have, as a TypeError', function()
      local err = rejection(E(svc).nosuch(1))
      assert.equal('TypeError', err.name)
      assert.equal('Alleged: Service has no method "nosuch"', err.message)
    end)
  end)

  describe('objects passed through messages', function()
    it('keep their identity: an exo that goes to another vat and back is the same object', function()
      local svc = make('makeService', 'mine')
      assert.is_true(make('isMine', svc))
      -- b passes the presence it was given back to a.
      assert.is_true(E(b).call(aP, 'isMine', svc):await())
      local bsvc = E(b).makeService('theirs'):await()
      assert.is_false(E(b).call(aP, 'isMine', bsvc):await())
      -- Through a third vat and back to the host: the same presence.
      assert.equal(svc, E(echo).echo(svc):await())
      assert.equal('Echo: back', E(E(echo).echo(svc):await()).echo('back'):await())
    end)

    it('can be called back: a vat passes its exo to another vat, which calls it', function()
      local r = make('subscribeTo', 'b', 'first')
      assert.same({ 'heard first' }, r.answers)
      assert.same({ 'first' }, r.heard)
      -- b kept both listeners, and calls each back.
      r = make('subscribeTo', 'b', 'second')
      assert.same({ 'heard second', 'heard second' }, r.answers)
      assert.same({ 'first', 'second', 'second' }, r.heard)
    end)

    it('can be passed by the host to a vat that did not make them', function()
      local svc = make('makeService', 'passed')
      assert.equal('Echo: via echo', E(echo).call(svc, 'echo', 'via echo'):await())
      local err = rejection(E(echo).call(svc, 'echo', 42))
      assert.equal('In "echo" method of (ServiceInterface): arg 0: must be a string, got number 42', err.message)
    end)
  end)

  describe('defineExoClassKit facets', function()
    it('passed to other vats work and share one state', function()
      local kit = make('makeTemperature', 20)
      assert.matches('Alleged: Temperature celsius', tostring(kit.celsius), 1, true)
      assert.matches('Alleged: Temperature fahrenheit', tostring(kit.fahrenheit), 1, true)
      assert.equal(68, E(kit.fahrenheit).getValue():await())
      -- b sets through the fahrenheit facet; the celsius facet sees it.
      assert.equal(100, E(b).useScale(kit.fahrenheit, 212):await())
      assert.equal(100, E(kit.celsius).getValue():await())
      -- The echo vat sets through the celsius facet.
      assert.equal(32, E(echo).call(kit.celsius, 'setValue', 0):await())
      assert.equal(32, E(kit.fahrenheit).getValue():await())
      -- Another kit has its own state.
      local other = make('makeTemperature', 100)
      assert.equal(212, E(other.fahrenheit).getValue():await())
      assert.equal(0, E(kit.celsius).getValue():await())
    end)

    it("check each facet's guard", function()
      local kit = make('makeTemperature', 20)
      local msg = 'In "setValue" method of (TemperatureScale): arg 0: must be a number, got string "hot"'
      assert.equal(msg, rejection(E(kit.celsius).setValue('hot')).message)
      local r = E(b).tryCall(kit.fahrenheit, 'setValue', 'hot'):await()
      assert.is_false(r.ok)
      assert.equal(msg, r.err)
      assert.equal(20, E(kit.celsius).getValue():await())
      assert.equal('Alleged: Temperature celsius has no method "getCelsius"',
        rejection(E(kit.celsius).getCelsius()).message)
    end)
  end)

  describe('the temperature converter', function()
    it('is used across vats through its class methods', function()
      local conv = make('makeConverter', 0)
      assert.same({ 32, 212, -40 }, E(b).useConverter(conv):await())
      assert.equal(-40, E(conv).getCelsius():await())
      assert.equal(-40, E(conv).getFahrenheit():await())
      E(conv).setCelsius(37.5)
      assert.equal(99.5, E(conv).getFahrenheit():await())
    end)

    it('refuses a bad argument and keeps its state', function()
      local conv = make('makeConverter', 25)
      local msg = 'In "setCelsius" method of (TemperatureConverter): arg 0: must be a number, got string "hot"'
      local r = E(b).tryCall(conv, 'setCelsius', 'hot'):await()
      assert.is_false(r.ok)
      assert.equal(msg, r.err)
      assert.equal(msg, rejection(E(conv).setCelsius('hot')).message)
      assert.equal(77, E(conv).getFahrenheit():await())
      -- Two converters are independent.
      local other = make('makeConverter', 100)
      assert.equal(212, E(other).getFahrenheit():await())
      assert.equal(25, E(conv).getCelsius():await())
    end)
  end)

  describe('scalar map stores inside a vat', function()
    it('init, get, set, has, delete, keys and getSize, with their errors', function()
      local r = make('storeDemo')
      -- booleans, then numbers, then remotables, then strings
      assert.same({ true, 10, 'thing', 'a', 'b' }, r.keys)
      assert.equal(5, r.size)
      assert.equal(3, r.b)
      assert.same({ nested = true }, r.a)
      assert.equal('a remotable key', r.byThing)
      assert.is_true(r.hasA)
      assert.is_false(r.dup.ok)
      assert.equal('key "a" already registered in demo', r.dup.err)
      assert.is_false(r.missing.ok)
      assert.equal('key "zz" not found in demo', r.missing.err)
      assert.is_false(r.badKey.ok)
      assert.matches('invalid store key .*: keys are strings, numbers, booleans or remotables', r.badKey.err)
      assert.is_false(r.hasAAfterDelete)
      assert.equal(4, r.sizeAfterDelete)
      assert.equal('MapStore(demo)', r.label)
    end)

    it('passed to another vat or the host, answer E() with the same store', function()
      local store = make('getStore')
      assert.matches('Alleged: mapStore', tostring(store), 1, true)
      E(b).call(store, 'init', 'x', 1):await()
      assert.equal(1, E(b).call(store, 'get', 'x'):await())
      assert.equal(1, make('storeGet', 'x'))
      assert.is_true(E(store).has('x'):await())
      E(store).set('x', { y = 2 }):await()
      assert.same({ y = 2 }, make('storeGet', 'x'))
      assert.equal(1, E(store).getSize():await())
      assert.equal('key "x" already registered in things', rejection(E(store).init('x', 3)).message)
      local thing = E(b).makeThing('from b'):await()
      E(store).init('t', thing):await()
      local entries = make('storeKeys')
      assert.equal(2, #entries)
      assert.equal('t', entries[1][1])
      assert.equal('from b', E(entries[1][2]).label():await())
    end)

    it('kept in baggage survive a restart of the vat, with imports in them', function()
      local thing = E(b).makeThing('imported'):await()
      assert.equal(1, make('keepInBaggage', 'k', { data = 1, who = thing }))
      local vatId = kernel:getSubclusters()[1].vats.a
      kernel:restartVat(vatId):await()
      local v = make('fromBaggage', 'k')
      assert.equal(1, v.data)
      assert.equal('imported', E(v.who).label():await())
      assert.equal(2, make('keepInBaggage', 'k2', 'more'))
    end)
  end)

  describe('harden and passability', function()
    it('harden freezes data deeply, which still passes between vats', function()
      local r = make('hardenDemo', 'e')
      assert.is_true(r.same)
      for _, k in ipairs({ 'top', 'nested', 'add' }) do
        assert.is_false(r[k].ok, k)
        assert.matches('cannot modify hardened table', r[k].err, 1, true)
      end
      assert.equal(1, r.a)
      assert.same({ a = 1, nested = { b = 2 }, list = { 1, 2, 3 } }, r.echoed)
    end)

    it('hardened data from the host reaches a vat', function()
      local data = ocap.harden({ list = { 1, 2 }, rec = { k = 'v' } })
      assert.has_error(function() data.list[3] = 3 end)
      assert.same({ list = { 1, 2 }, rec = { k = 'v' } }, E(echo).echo(data):await())
    end)

    local bad = {
      ['function'] = 'cannot pass function (at [2][1])',
      coroutine = 'cannot pass thread (coroutine) (at [2][1])',
      cyclic = 'cannot pass cyclic structure (at [2][1].self)',
      mixed = 'cannot pass table with mixed integer and string keys (at [2][1])',
      metatable = 'cannot pass table with a foreign metatable (at [2][1])',
    }
    for what, message in pairs(bad) do
      it('a vat sending a ' .. what .. ' fails at the sender, and nothing is delivered', function()
        -- The target lives in another vat (an E() call on a vat's own exo
        -- stays in the vat, unmarshalled).
        local svc = E(b).makeService('target'):await()
        local r = make('sendBad', svc, what)
        assert.is_false(r.ok)
        assert.equal(message, r.err)
        assert.equal(0, E(svc).calls():await())
        assert.equal(1, make('ping', 1))
      end)
    end

    it('the host sending a function fails at once, and nothing is delivered', function()
      local svc = make('makeService', 'target')
      local ok, err = pcall(E(svc).echo, function() end)
      assert.is_false(ok)
      assert.matches('cannot pass function (at [2][1])', tostring(err), 1, true)
      ok, err = pcall(kernel.queueMessage, kernel, kernel:krefOf(svc), 'echo', { function() end })
      assert.is_false(ok)
      assert.matches('cannot pass function', tostring(err), 1, true)
      assert.equal(0, kernel:stats().queue)
      assert.equal(0, E(svc).calls():await())
    end)

    it('a method returning a function rejects its caller', function()
      assert.equal('result is not passable: cannot pass function',
        rejection(kernel:queueMessage(a, 'returnFunction', {})).message)
      local r = E(b).tryCall(aP, 'returnFunction'):await()
      assert.is_false(r.ok)
      assert.equal('result is not passable: cannot pass function', r.err)
    end)
  end)
end)
