-- Eventual send and promise semantics across vats (issue #5), with the
-- exact order of events.
local testing = require 'ocap.testing'
local ocap = require 'ocap'

local SCENARIO = 'spec/vats/scenario.lua'

local function launch(kernel)
  return kernel:launchSubcluster({
    bootstrap = 'alice',
    vats = {
      alice = { sourceSpec = SCENARIO, parameters = { name = 'alice' } },
      bob = { sourceSpec = SCENARIO, parameters = { name = 'bob' } },
    },
  }):await()
end

local function events(kernel)
  local out = {}
  for _, e in ipairs(kernel:logs()) do
    if e.message:match('^%a+: ') then out[#out + 1] = e.message end
  end
  return out
end

describe('promises between vats', function()
  local kernel, root
  before_each(function()
    kernel = testing.makeKernel()
    root = launch(kernel).rootKref
  end)
  after_each(function() kernel:stop() end)

  local function run(method, ...)
    return kernel:queueMessage(root, method, table.pack(...)):await()
  end

  it('makes promises of the fields of a promised value with E.get', function()
    local got = ocap.E.get(ocap.Promise.resolve({ answer = 42 }))
    assert.equal(42, ocap.await(got.answer))
    assert.is_nil(ocap.await(got.missing))
  end)

  it('passes a promise resolved before the send', function()
    run('passResolvedBefore')
    assert.same({ 'alice: sending', 'bob: got promise', 'bob: value early', 'alice: reply took early' },
      events(kernel))
  end)

  it('passes a promise resolved after the send', function()
    run('passResolvedAfterSend')
    assert.same({ 'alice: sending', 'alice: resolving', 'bob: got promise', 'bob: value later',
      'alice: reply took later' }, events(kernel))
  end)

  it('passes a promise resolved after the reply', function()
    run('passResolvedAfterReply')
    assert.same({ 'alice: sending', 'bob: got promise', 'alice: reply noted', 'alice: resolved',
      'bob: value last', 'alice: bob saw nothing yet' }, events(kernel))
  end)

  it('pipelines E(E(bob).first()).second()', function()
    assert.equal('second done', run('pipeline'))
    assert.same({ 'alice: sending both', 'bob: first', 'bob: second', 'alice: got second done' },
      events(kernel))
  end)

  it('delivers a message sent to a result promise once it resolves', function()
    run('sendToResultBeforeResolution')
    assert.same({ 'alice: sent to unresolved result', 'bob: slowFirst', 'bob: release',
      'bob: late second', 'alice: got late second done' }, events(kernel))
  end)

  it('passes a result promise as an argument to another call', function()
    assert.equal(10, run('resultAsArgument'))
    assert.same({ 'bob: makeValue', 'bob: double got promise', 'alice: double 10' }, events(kernel))
  end)

  it('gets back, as the promise it holds, a pending result it passed on', function()
    -- A vat keys the results it awaits by their number: a slot naming one
    -- must find it, for the vat's notify as for the value.
    run('sendBack')
    assert.same({ 'bob: slowFirst', 'alice: same true', 'bob: release', 'alice: settled', 'alice: done' },
      events(kernel))
  end)

  it("settles a method's result after the turns it queued", function()
    run('awaitTurnSender')
    assert.same({ 'alice: noted from a turn', 'alice: got returned' }, events(kernel))
  end)

  it('runs the reactions to a result in the order they were attached', function()
    run('awaitAndNext')
    assert.same({ 'alice: await returned', 'alice: next ran', 'alice: later next ran' }, events(kernel))
  end)

  it('runs promise chains in order', function()
    assert.equal(6, run('chain'))
    assert.same({ 'alice: chain 1', 'alice: chain 2', 'alice: chain 3', 'alice: chain 4', 'alice: chain 5' },
      events(kernel))
  end)

  it('follows a promise resolved to another promise', function()
    run('promiseToPromise')
    assert.same({ 'alice: a resolved to b', 'bob: got promise', 'bob: value via b', 'alice: reply took via b' },
      events(kernel))
  end)

  it('resolves crosswise promises between vats', function()
    assert.equal('from bob', run('crosswise'))
    assert.same({ 'bob: exchange', 'bob: bob got from alice', 'alice: alice got from bob' }, events(kernel))
  end)

  it('walks a lazily produced sequence with eventual calls', function()
    assert.same({ 1, 2, 3, 4, 5 }, run('walk', 5))
  end)

  it('sends to a promise the host holds, before and after it resolves', function()
    local p = kernel:queueMessage(root, 'self', {})
    local viaPromise = ocap.E(p).ping(3)
    assert.equal(3, viaPromise:await())
    assert.equal(4, ocap.E(p).ping(4):await())
  end)

  it('keeps messages to a vat-decided promise in the kernel until it settles', function()
    local bob = kernel:queueMessage(root, 'peerRoot', {}):await()
    local p = ocap.E(bob).slowFirst()
    local r = ocap.E(p).second()
    kernel:run()
    -- The message waits in the kernel, not in bob's runtime, so that it
    -- reaches bob's object only through the kernel's routing (revocation).
    local function parked()
      local K, n, key = kernel.K, 0, nil
      repeat
        key = K:kvNext('kp', key)
        if key and key:match('%.queue%.') then n = n + 1 end
      until not key
      return n
    end
    assert.equal(1, parked())
    ocap.E(bob).releaseFirst():await()
    assert.equal('late second done', r:await())
    assert.equal(0, parked())
  end)

  it('gives the same answer pipelined and awaited, in fewer cranks', function()
    local c0 = kernel:stats().cranks
    assert.equal(20, run('pipelineChain', 20))
    local c1 = kernel:stats().cranks
    assert.equal(20, run('awaitChain', 20))
    local c2 = kernel:stats().cranks
    assert.is_true(c1 - c0 < c2 - c1, ('pipelined %d cranks, awaited %d'):format(c1 - c0, c2 - c1))
  end)

  it('settles everything when many promises resolve at once', function()
    local bob = kernel:queueMessage(root, 'peerRoot', {}):await()
    local calls = {}
    for i = 1, 16 do calls[i] = kernel:queueMessage(root, 'peerRoot', {}) end
    local results = {}
    for i = 1, 16 do results[i] = ocap.E(bob).manyResolvedAll(10) end
    for i = 1, 16 do
      local list = results[i]:await()
      assert.equal(10, #list)
      assert.is_true(ocap.isPromise(list[1]))
      assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, ocap.Promise.all(list):await())
      assert.equal(bob, calls[i]:await())
    end
  end)

  it('survives two promises resolved to each other in one crank', function()
    assert.equal('still here', run('mutualInOneCrank'))
    assert.equal(1, run('ping', 1))
  end)

  it('survives two promises resolved to each other across cranks', function()
    assert.equal('sent', run('mutualAcrossCranks'))
    kernel:run() -- the kernel goes idle: no message loops between the vats
    assert.equal(2, run('ping', 2))
    for _, e in ipairs(events(kernel)) do assert.not_matches('mutual', e) end
  end)

  it('logs a rejection nobody handles, once', function()
    run('unhandled')
    local n = 0
    for _, e in ipairs(kernel:logs()) do
      if e.message:match('unhandled rejection') and e.message:match('nobody cares') then n = n + 1 end
    end
    assert.equal(1, n)
  end)

  it('rejects messages queued on a promise that resolves to data', function()
    local p = kernel:queueMessage(root, 'ping', { 1 })
    local ok, err = pcall(ocap.await, ocap.E(p).anything())
    assert.is_false(ok)
    assert.equal('BAD_PROMISE_RESOLUTION', err.code)
  end)
end)

describe('no hung callers', function()
  local kernel, r
  before_each(function()
    kernel = testing.makeKernel()
    r = launch(kernel)
  end)
  after_each(function() kernel:stop() end)

  it('rejects the promises a terminated vat decided, for vat and host callers', function()
    local bobId = kernel:getSubcluster(r.subclusterId).vats.bob
    -- alice waits on bob inside a vat; the host waits on bob directly.
    local fromAlice = kernel:queueMessage(r.rootKref, 'askNever', {})
    local bob = kernel:queueMessage(r.rootKref, 'peerRoot', {}):await()
    local fromHost = ocap.E(bob).never()
    kernel:run()
    kernel:terminateVat(bobId, 'test'):await()
    local ok, err = pcall(ocap.await, fromHost)
    assert.is_false(ok)
    assert.equal('VAT_TERMINATED', err.code)
    assert.equal('VAT_TERMINATED', fromAlice:await().code)
    local log = table.concat(events(kernel), '\n')
    assert.matches('alice: never settled: false VAT_TERMINATED', log)
  end)
end)

describe('callers of a vat that restarts', function()
  it('are rejected instead of waiting forever', function()
    local kernel = testing.makeKernel()
    local r = launch(kernel)
    local aliceId = kernel:getSubcluster(r.subclusterId).vats.alice
    local hung = kernel:queueMessage(r.rootKref, 'askNever', {})
    kernel:run()
    kernel:restartVat(aliceId):await()
    local ok, err = pcall(ocap.await, hung)
    assert.is_false(ok)
    assert.equal('VAT_TERMINATED', err.code)
    assert.matches('restarted', err.message)
    assert.equal(3, kernel:queueMessage(r.rootKref, 'ping', { 3 }):await())
    kernel:stop()
  end)
end)

describe('storage', function()
  it('stays flat after 10,000 vat-to-vat round trips', function()
    local kernel = testing.makeKernel()
    local r = launch(kernel)
    kernel:queueMessage(r.rootKref, 'pingBob', { 10 }):await()
    local before = kernel:keyCount()
    kernel:queueMessage(r.rootKref, 'pingBob', { 10000 }):await()
    local after = kernel:keyCount()
    assert.is_true(after - before <= 5, ('grew by %d keys'):format(after - before))
    kernel:stop()
  end)
end)

describe('await on the main thread', function()
  it('returns at the crank that settled its promise, leaving the rest queued', function()
    local kernel = testing.makeKernel()
    local r = kernel:launchSubcluster({ bootstrap = 'alice', vats = {
      alice = { sourceSpec = 'spec/vats/echo.lua' }, bob = { sourceSpec = 'spec/vats/echo.lua' } } }):await()
    local chain = kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', 200 })
    local before = kernel:stats().cranks
    assert.equal(1, kernel:queueMessage(r.rootKref, 'echo', { 1 }):await())
    -- Four cranks: alice starts the chain (sending bob ping(1)), alice
    -- echoes (queueing the host's notify), bob answers ping(1), then the
    -- notify settles the host's promise. The chain's next step waits.
    assert.equal(4, kernel:stats().cranks - before)
    assert.equal(1, kernel:stats().queue)
    kernel:run()
    assert.equal(200 * 201 / 2, chain:await())
    kernel:stop()
  end)
end)
