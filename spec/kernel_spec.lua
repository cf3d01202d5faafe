-- The foundation, end to end: launch subclusters, send messages, get
-- answers, and fail cleanly on bad input.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'
local rejection = support.rejection

local ECHO = 'spec/vats/echo.lua'

local function twoVats(params)
  return {
    bootstrap = 'alice',
    vats = {
      alice = { sourceSpec = ECHO, parameters = params or { who = 'alice' } },
      bob = { sourceSpec = ECHO },
    },
  }
end

describe('kernel', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  describe('launchSubcluster', function()
    it('creates the vats, calls bootstrap once with the other vats, returns its result', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      assert.matches('^s%d+$', r.subclusterId)
      assert.matches('^ko%d+$', r.rootKref)
      assert.same({ 'alice', 'bob' }, r.bootstrapResult.vats)
      assert.same({ who = 'alice' }, r.bootstrapResult.parameters)
      local boots = 0
      for _, e in ipairs(kernel:logs()) do
        if e.message == 'bootstrap' then boots = boots + 1 end
      end
      assert.equal(1, boots)
      local status = kernel:getStatus()
      assert.equal(2, #status.vats)
      assert.equal(r.subclusterId, status.vats[1].subclusterId)
      assert.equal('disconnected', status.remoteComms.state)
      local sc = kernel:getSubcluster(r.subclusterId)
      assert.same({ 'alice', 'bob' }, (function()
        local n = {}
        for name in pairs(sc.vats) do n[#n + 1] = name end
        table.sort(n)
        return n
      end)())
      assert.equal(1, #kernel:getSubclusters())
    end)

    it('gives bootstrap the root presences of the other vats, which answer E()', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      assert.equal(55, kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', 10 }):await())
    end)

    it('runs two vats ping-ponging many times', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local sum = kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', 200 }):await()
      assert.equal(200 * 201 // 2, sum)
    end)

    it('passes vats presences the host can call directly', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local bob = kernel:queueMessage(r.rootKref, 'peer', { 'bob' }):await()
      assert.matches('^ko%d+$', kernel:krefOf(bob))
      assert.equal('hi', ocap.E(bob).echo('hi'):await())
      local again = kernel:getPresence(kernel:krefOf(bob), 'echo')
      assert.equal(7, ocap.E(again).ping(7):await())
    end)

    it('knows a kref it has just given out, before any crank commits it', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local p = kernel:queueMessage(r.rootKref, 'ping', { 3 })
      local kp = kernel:krefOf(p)
      assert.matches('^kp%d+$', kp)
      assert.equal(3, kernel:getPresence(kp):await())
    end)
  end)

  describe('passable values', function()
    local values = {
      { 'nil', nil },
      { 'null', ocap.null },
      { 'true', true },
      { 'false', false },
      { 'integer', 42 },
      { 'negative integer', -7 },
      { 'float', 1.5 },
      { 'big integer', math.maxinteger },
      { 'small integer', math.mininteger },
      { '2^53 + 1', 9007199254740993 },
      { 'infinity', math.huge },
      { '-infinity', -math.huge },
      { 'string', 'hello' },
      { 'empty string', '' },
      { 'string starting with !', '!bang' },
      { 'string starting with #', '#hash' },
      { 'string starting with $', '$money' },
      { 'string starting with -', '-minus' },
      { 'array', { 1, 'two', { 3 } } },
      { 'record', { a = 1, b = { c = 'd' } } },
      { 'nested', { list = { { x = 1 }, { y = 2 } }, ['#key'] = '!v' } },
      { 'error', ocap.makeError('bad thing', 'RangeError') },
    }
    for _, case in ipairs(values) do
      it('round-trips ' .. case[1] .. ' vat to vat and vat to host', function()
        local r = kernel:launchSubcluster(twoVats()):await()
        local direct = kernel:queueMessage(r.rootKref, 'echo', table.pack(case[2])):await()
        local viaBob = kernel:queueMessage(r.rootKref, 'callPeer', table.pack('bob', 'echo', case[2])):await()
        if case[1] == 'error' then
          assert.equal('bad thing', direct.message)
          assert.equal('RangeError', direct.name)
          assert.equal('RangeError', viaBob.name)
        else
          assert.same(case[2], direct)
          assert.same(case[2], viaBob)
          if math.type(case[2]) == 'integer' then
            assert.equal('integer', math.type(direct))
            assert.equal('integer', math.type(viaBob))
          end
        end
      end)
    end

    it('round-trips NaN', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local v = kernel:queueMessage(r.rootKref, 'callPeer', { 'bob', 'echo', 0 / 0 }):await()
      assert.is_true(v ~= v)
    end)

    it('keeps nil inside packed sequences', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local v = kernel:queueMessage(r.rootKref, 'callPeer', table.pack('bob', 'echoAll', 1, nil, 3)):await()
      assert.equal(3, v.n)
      assert.equal(1, v[1])
      assert.is_nil(v[2])
      assert.equal(3, v[3])
    end)

    it('tells a vat-to-vat send of no argument from one of nil', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      for n = 0, 3 do
        local args = table.pack('bob', 'echoAll', nil, nil, nil)
        args.n = 2 + n
        local v = kernel:queueMessage(r.rootKref, 'callPeer', args):await()
        assert.same({ n = n }, v)
      end
      local v = kernel:queueMessage(r.rootKref, 'callPeer', table.pack('bob', 'echoAll', nil, 2)):await()
      assert.same({ n = 2, [2] = 2 }, v)
    end)

    it('passes the same object back as the same presence', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local thing = kernel:queueMessage(r.rootKref, 'makeThing', { 'x' }):await()
      local back = kernel:queueMessage(r.rootKref, 'echo', { thing }):await()
      assert.equal(thing, back)
      assert.equal('x', ocap.E(back).label():await())
    end)

    it('serializes with krefs on the host through ocap.marshal', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local thing = kernel:queueMessage(r.rootKref, 'makeThing', { 'x' }):await()
      local cd = ocap.marshal.serialize({ thing = thing, n = 1 })
      assert.equal('#{"n":1,"thing":"$0.Alleged: thing"}', cd.body)
      assert.same({ kernel:krefOf(thing) }, cd.slots)
      local back = ocap.marshal.unserialize(cd)
      assert.equal(thing, back.thing)
    end)

    it('refuses a non-passable argument at the sender with a clear error', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local ok, err = pcall(kernel.queueMessage, kernel, r.rootKref, 'echo', { function() end })
      assert.is_false(ok)
      assert.matches('function', tostring(err))
      local e = rejection(kernel:queueMessage(r.rootKref, 'sendBad', { 'bob' }))
      assert.matches('function', e.message)
      assert.equal(3, kernel:queueMessage(r.rootKref, 'ping', { 3 }):await())
    end)
  end)

  describe('errors', function()
    it("rejects the caller with message 'boom', without position or traceback", function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local e = rejection(kernel:queueMessage(r.rootKref, 'boom', {}))
      assert.equal('boom', e.message)
      assert.equal('Error', e.name)
      assert.equal('Error: boom', tostring(e))
      local res = kernel:queueMessage(r.rootKref, 'tryPeer', { 'bob', 'boom' }):await()
      assert.is_false(res.ok)
      assert.equal('boom', res.err.message)
    end)

    it('rejects the caller when a method returns something not passable', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local e = rejection(kernel:queueMessage(r.rootKref, 'returnFunction', {}))
      assert.matches('result is not passable: cannot pass function', e.message)
    end)

    it('passes plain data thrown with error() to the caller', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local e = rejection(kernel:queueMessage(r.rootKref, 'rejectData', {}))
      assert.same({ code = 7 }, e)
    end)

    it('rejects a method the object lacks, naming it', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local e = rejection(kernel:queueMessage(r.rootKref, 'noSuchMethod', {}))
      assert.matches('noSuchMethod', e.message)
      assert.equal(1, kernel:queueMessage(r.rootKref, 'ping', { 1 }):await())
    end)

    it('refuses queueMessage to an unknown or malformed kref', function()
      local ok, err = pcall(kernel.queueMessage, kernel, 'ko999', 'ping', {})
      assert.is_false(ok)
      assert.matches("unknown kref \"ko999\"", err)
      ok, err = pcall(kernel.queueMessage, kernel, 'bogus', 'ping', {})
      assert.is_false(ok)
      assert.matches('invalid kref', err)
    end)

    it('names a promise it gave out and freed: rejected, as a message sent to it is', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local kp
      do
        local p = kernel:queueMessage(r.rootKref, 'ping', { 1 })
        assert.equal(1, p:await())
        kp = kernel:krefOf(p)
      end
      -- The host let go of its result; the kernel frees the settled promise.
      collectgarbage()
      collectgarbage()
      kernel:collectGarbage():await()
      local deleted = '[KERNEL:OBJECT_DELETED] Target promise has been deleted'
      assert.equal(deleted, rejection(kernel:queueMessage(kp, 'ping', {})).message)
      -- getPresence raised "kernel subscribed to unknown promise", then
      -- gave a promise that stayed pending for ever.
      for _ = 1, 2 do
        local e = rejection(kernel:getPresence(kp))
        assert.same({ deleted, 'OBJECT_DELETED' }, { e.message, e.code })
      end
      assert.equal(2, kernel:queueMessage(r.rootKref, 'ping', { 2 }):await())
    end)

    it('refuses a kref written with a leading zero, and goes on', function()
      -- ko02 is no kref the kernel wrote: the host's mistake, not a
      -- damaged database, and the next message is not failed for it.
      local r = kernel:launchSubcluster(twoVats()):await()
      local n = tonumber(r.rootKref:match('^ko(%d+)$'))
      for _, bad in ipairs({ 'ko0' .. n, 'kp01', 'ko00' }) do
        local ok, err = pcall(kernel.queueMessage, kernel, bad, 'ping', { 1 })
        assert.is_false(ok)
        assert.matches('invalid kref "' .. bad .. '"', err, 1, true)
        assert.equal(1, kernel:queueMessage(r.rootKref, 'ping', { 1 }):await())
      end
    end)
  end)

  describe('launch failures leave nothing behind', function()
    local function expectLaunchError(cfg, pattern)
      local before = kernel:keyCount()
      local e = rejection(kernel:launchSubcluster(cfg))
      assert.matches(pattern, e.message)
      assert.equal(0, #kernel:getStatus().vats)
      assert.equal(0, #kernel:getSubclusters())
      -- The kernel stays usable.
      local r = kernel:launchSubcluster(twoVats()):await()
      assert.equal(5, kernel:queueMessage(r.rootKref, 'ping', { 5 }):await())
      return before
    end

    local function single(spec)
      return { bootstrap = 'a', vats = { a = { sourceSpec = spec } } }
    end

    it('when the vat file does not exist', function()
      expectLaunchError(single('spec/vats/missing.lua'),
        'ClusterConfig.vats.a.sourceSpec: cannot read "spec/vats/missing.lua"')
    end)
    it('when the vat does not parse', function()
      expectLaunchError(single('spec/vats/bad_syntax.lua'),
        'vat "a" failed to start: .*spec/vats/bad_syntax.lua:3: .*expected near')
    end)
    it('when the vat returns no buildRootObject', function()
      expectLaunchError(single('spec/vats/bad_noroot.lua'), 'does not return a table with buildRootObject')
    end)
    it('when the vat throws at its top level', function()
      expectLaunchError(single('spec/vats/bad_toplevel.lua'), 'top%-level failure')
    end)
    it('when buildRootObject throws', function()
      expectLaunchError(single('spec/vats/bad_build.lua'), 'buildRootObject failed: cannot build')
    end)
    it('when bootstrap throws', function()
      expectLaunchError(single('spec/vats/bad_bootstrap.lua'), 'bootstrap exploded')
    end)
    it('on a config with an unknown key', function()
      local cfg = twoVats()
      cfg.colour = 'blue'
      expectLaunchError(cfg, 'ClusterConfig: unknown key "colour"')
    end)
    it('on a vat config with an unknown key', function()
      local cfg = twoVats()
      cfg.vats.bob.sourcespec = 'x'
      expectLaunchError(cfg, 'ClusterConfig.vats.bob: unknown key "sourcespec"')
    end)
    it('on a missing bootstrap vat', function()
      local cfg = twoVats()
      cfg.bootstrap = 'carol'
      expectLaunchError(cfg, 'ClusterConfig.bootstrap: no vat named "carol"')
    end)
    it('on two source specs for one vat', function()
      local cfg = twoVats()
      cfg.vats.bob.bundleSpec = 'x.bundle'
      expectLaunchError(cfg,
        'ClusterConfig.vats.bob: exactly one of sourceSpec, bundleSpec, bundleName is required')
    end)
    it('on non-plain parameters', function()
      expectLaunchError(twoVats({ f = function() end }), 'ClusterConfig.vats.alice.parameters')
    end)
    it('on an unknown service', function()
      local cfg = twoVats()
      cfg.services = { 'nope' }
      expectLaunchError(cfg, "^no registered kernel service 'nope'$")
    end)
  end)

  describe('vats', function()
    it('answers pingVat and terminates vats, rejecting later sends', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      local status = kernel:getStatus()
      local bobId = status.vats[2].id
      assert.equal('pong', kernel:pingVat(bobId):await())
      local bob = kernel:queueMessage(r.rootKref, 'peer', { 'bob' }):await()
      kernel:terminateVat(bobId, 'enough'):await()
      assert.equal(1, #kernel:getStatus().vats)
      local e = rejection(ocap.E(bob).ping(1))
      assert.equal('OBJECT_DELETED', e.code)
      assert.equal(2, kernel:queueMessage(r.rootKref, 'ping', { 2 }):await())
    end)

    it('terminates a subcluster with all its vats', function()
      local r = kernel:launchSubcluster(twoVats()):await()
      kernel:terminateSubcluster(r.subclusterId):await()
      assert.equal(0, #kernel:getStatus().vats)
      assert.is_nil(kernel:getSubcluster(r.subclusterId))
      local e = rejection(kernel:queueMessage(r.rootKref, 'ping', { 1 }))
      assert.matches('OBJECT_DELETED', e.message)
    end)

    it('runs the counter of API.md with a service', function()
      kernel:registerKernelServiceObject('myService', ocap.makeDefaultExo('myService', {
        doSomething = function(_, what) return 'did ' .. what end,
      }))
      local r = kernel:launchSubcluster({ bootstrap = 'c', services = { 'myService' },
        vats = { c = { sourceSpec = 'vats/examples/counter.lua', parameters = { start = 5 } } } }):await()
      assert.equal(6, kernel:queueMessage(r.rootKref, 'increment', {}):await())
      assert.equal('did it', kernel:queueMessage(r.rootKref, 'askService', { 'it' }):await())
    end)

    it('refuses to free a running vat or the kernel from inside a crank', function()
      local attempts = {}
      local k2
      k2 = testing.makeKernel({ logger = function(e)
        if e.message == 'bootstrap' then
          local vatId = e.vatId
          attempts[#attempts + 1] = select(2, pcall(k2.K.terminate, k2.K, vatId, '#"x"'))
          attempts[#attempts + 1] = select(2, pcall(k2.K.stopVat, k2.K, vatId))
          attempts[#attempts + 1] = select(2, pcall(k2.K.close, k2.K))
        end
      end })
      local r = k2:launchSubcluster(twoVats()):await()
      assert.matches('cannot terminate vat v%d+ while it is running', attempts[1])
      assert.matches('cannot stop vat v%d+ while it is running', attempts[2])
      assert.matches('cannot stop the kernel while a crank is running', attempts[3])
      assert.equal(4, k2:queueMessage(r.rootKref, 'ping', { 4 }):await())
      k2:stop()
    end)

    it('routes vat log entries, with tags, to the host logger', function()
      kernel:launchSubcluster({
        bootstrap = 'alice',
        vats = {
          alice = { sourceSpec = 'vats/examples/alice.lua' },
          bob = { sourceSpec = 'vats/examples/bob.lua' },
        },
      }):await()
      local found
      for _, e in ipairs(kernel:logs()) do
        if e.message:match('heard') then found = e end
      end
      assert.is_truthy(found)
      assert.equal('log', found.level)
      assert.same({ 'alice' }, found.tags)
      assert.matches('^v%d+$', found.vatId)
    end)
  end)
end)
