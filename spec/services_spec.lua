-- Kernel services, system subclusters, the kernel facet and revocation
-- (issue #4), driven through real kernels.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'
local rejection = support.rejection

local USER = 'spec/vats/service_user.lua'
local ECHO = 'spec/vats/echo.lua'

local function makeService(log)
  return ocap.makeDefaultExo('testService', {
    double = function(_, n) return n * 2 end,
    fail = function() error('service broke') end,
    useObject = function(_, obj)
      log[#log + 1] = 'got object'
      return ocap.E(obj).hello('service'):await()
    end,
    slow = function(_, n)
      -- Waits on a vat's answer: a slow service must not block cranks.
      return n
    end,
  })
end

local function userCluster(services)
  return { bootstrap = 'user', services = services, vats = { user = { sourceSpec = USER } } }
end

describe('kernel services', function()
  local kernel, log
  before_each(function()
    log = {}
    kernel = testing.makeKernel()
  end)
  after_each(function() kernel:stop() end)

  it('registers a service and returns its name, kref and visibility', function()
    local info = kernel:registerKernelServiceObject('testService', makeService(log))
    assert.equal('testService', info.name)
    assert.matches('^ko%d+$', info.kref)
    assert.is_false(info.systemOnly)
    local ok, err = pcall(kernel.registerKernelServiceObject, kernel, 'testService', makeService(log))
    assert.is_false(ok)
    assert.matches('already registered', err)
  end)

  it('injects services into bootstrap and answers calls from vats', function()
    kernel:registerKernelServiceObject('testService', makeService(log))
    local r = kernel:launchSubcluster(userCluster({ 'testService' })):await()
    assert.same({ 'testService' }, r.bootstrapResult)
    assert.equal(42, kernel:queueMessage(r.rootKref, 'call', { 'testService', 'double', 21 }):await())
  end)

  it('lets a service call back an object a vat passed it', function()
    kernel:registerKernelServiceObject('testService', makeService(log))
    local r = kernel:launchSubcluster(userCluster({ 'testService' })):await()
    local res = kernel:queueMessage(r.rootKref, 'callWithObject', { 'testService' }):await()
    assert.same({ result = 'hello service', calls = 1 }, res)
    assert.same({ 'got object' }, log)
  end)

  it('rejects with DELIVERY_FAILED when a service throws or lacks the method', function()
    kernel:registerKernelServiceObject('testService', makeService(log))
    local r = kernel:launchSubcluster(userCluster({ 'testService' })):await()
    local res = kernel:queueMessage(r.rootKref, 'try', { 'testService', 'fail' }):await()
    assert.is_false(res.ok)
    assert.equal('[KERNEL:DELIVERY_FAILED] service broke', res.value.message)
    assert.equal('DELIVERY_FAILED', res.value.code)
    res = kernel:queueMessage(r.rootKref, 'try', { 'testService', 'nope' }):await()
    assert.matches('^%[KERNEL:DELIVERY_FAILED%] .*nope', res.value.message)
    assert.equal(2, kernel:queueMessage(r.rootKref, 'ping', { 2 }):await())
  end)

  it('lets a slow service wait without blocking other cranks', function()
    local gate = ocap.makePromiseKit()
    kernel:registerKernelServiceObject('gate', ocap.makeDefaultExo('gate', {
      pass = function(_, v) return gate.promise:await() .. ' ' .. v end,
    }))
    local r = kernel:launchSubcluster(userCluster({ 'gate' })):await()
    local waiting = kernel:queueMessage(r.rootKref, 'call', { 'gate', 'pass', 'through' })
    kernel:run()
    -- The service is suspended in its coroutine; other messages still flow.
    assert.equal(7, kernel:queueMessage(r.rootKref, 'ping', { 7 }):await())
    assert.equal('pending', (require('ocap.promise').state(waiting)))
    gate.resolve('opened')
    assert.equal('opened through', waiting:await())
  end)

  it('fails a launch naming an unknown service, before any vat starts', function()
    local e = rejection(kernel:launchSubcluster(userCluster({ 'weatherService' })))
    assert.equal("no registered kernel service 'weatherService'", e.message)
    assert.equal(0, #kernel:getStatus().vats)
  end)

  it('hides systemOnly services from ordinary subclusters', function()
    kernel:registerKernelServiceObject('secret', makeService(log), { systemOnly = true })
    local e = rejection(kernel:launchSubcluster(userCluster({ 'secret' })))
    assert.equal("no registered kernel service 'secret'", e.message)
    e = rejection(kernel:launchSubcluster(userCluster({ 'kernelFacet' })))
    assert.equal("no registered kernel service 'kernelFacet'", e.message)
  end)

  it('keeps a service kref across restarts, so stored references work', function()
    local db = testing.tempDir()
    kernel:stop()
    kernel = testing.makeKernel({ database = db, services = { testService = makeService(log) } })
    local r = kernel:launchSubcluster(userCluster({ 'testService' })):await()
    local kref = kernel.services.testService.info.kref
    kernel = testing.restart(kernel, { services = { testService = makeService(log) } })
    assert.equal(kref, kernel.services.testService.info.kref)
    assert.equal(8, kernel:queueMessage(r.rootKref, 'call', { 'testService', 'double', 4 }):await())
  end)
end)

describe('system subclusters', function()
  local kernel
  local function system(name, services)
    return { name = name, config = userCluster(services or { 'kernelFacet' }) }
  end
  after_each(function() if kernel then kernel:stop() end end)

  it('launches at init and answers through getSystemSubclusterRoot', function()
    kernel = testing.makeKernel({ systemSubclusters = { system('sys') } })
    local root = kernel:getSystemSubclusterRoot('sys')
    assert.matches('^ko%d+$', root)
    assert.equal(3, kernel:queueMessage(root, 'ping', { 3 }):await())
    local ok, err = pcall(kernel.getSystemSubclusterRoot, kernel, 'nope')
    assert.is_false(ok)
    assert.equal('System subcluster "nope" not found', err)
  end)

  it('gets the kernel facet in bootstrap and reads the status through it', function()
    kernel = testing.makeKernel({ systemSubclusters = { system('sys') } })
    local root = kernel:getSystemSubclusterRoot('sys')
    assert.equal('pong', kernel:queueMessage(root, 'facet', { 'ping' }):await())
    local status = kernel:queueMessage(root, 'facet', { 'getStatus' }):await()
    assert.equal(1, #status.vats)
    assert.equal('disconnected', status.remoteComms.state)
  end)

  it('launches and terminates subclusters through the kernel facet', function()
    kernel = testing.makeKernel({ systemSubclusters = { system('sys') } })
    local root = kernel:getSystemSubclusterRoot('sys')
    local r = kernel:queueMessage(root, 'launchViaFacet', {
      { bootstrap = 'e', vats = { e = { sourceSpec = ECHO } } } }):await()
    assert.equal(9, r.pong)
    assert.equal(2, #kernel:getStatus().vats)
    kernel:queueMessage(root, 'facet', { 'terminateSubcluster', r.subclusterId }):await()
    assert.equal(1, #kernel:getStatus().vats)
  end)

  it('is restored on restart without a second bootstrap, baggage intact', function()
    local db = testing.tempDir()
    local svc = makeService({})
    kernel = testing.makeKernel({ database = db, services = { testService = svc },
      systemSubclusters = { system('sys', { 'kernelFacet', 'testService' }) } })
    local root = kernel:getSystemSubclusterRoot('sys')
    kernel = testing.restart(kernel, { services = { testService = makeService({}) } })
    assert.equal(root, kernel:getSystemSubclusterRoot('sys'))
    local boots = 0
    for _, m in ipairs(testing.messages(kernel)) do
      if m:match('^bootstrap services') then boots = boots + 1 end
    end
    assert.equal(0, boots)
    assert.equal(10, kernel:queueMessage(root, 'call', { 'testService', 'double', 5 }):await())
    assert.equal('pong', kernel:queueMessage(root, 'facet', { 'ping' }):await())
  end)

  it('terminates a system subcluster that is no longer declared', function()
    local db = testing.tempDir()
    kernel = testing.makeKernel({ database = db, systemSubclusters = { system('a'), system('b') } })
    assert.equal(2, #kernel:getStatus().vats)
    kernel = testing.restart(kernel, { systemSubclusters = { system('b') } })
    assert.equal(1, #kernel:getStatus().vats)
    assert.has_error(function() kernel:getSystemSubclusterRoot('a') end, 'System subcluster "a" not found')
    assert.equal(4, kernel:queueMessage(kernel:getSystemSubclusterRoot('b'), 'ping', { 4 }):await())
  end)

  it('rejects duplicate names', function()
    local ok, err = pcall(testing.makeKernel, { systemSubclusters = { system('a'), system('a') } })
    assert.is_false(ok)
    assert.matches('duplicate system subcluster name "a"', err)
  end)

  it('lets only system subclusters use systemOnly services', function()
    local svc = makeService({})
    kernel = testing.makeKernel({ systemSubclusters = { system('sys', { 'kernelFacet' }) } })
    kernel:registerKernelServiceObject('secret', svc, { systemOnly = true })
    local e = rejection(kernel:launchSubcluster(userCluster({ 'secret' })))
    assert.equal("no registered kernel service 'secret'", e.message)
  end)
end)

describe('revocation', function()
  local kernel, r, thing
  before_each(function()
    kernel = testing.makeKernel()
    r = kernel:launchSubcluster({ bootstrap = 'a', vats = {
      a = { sourceSpec = USER }, b = { sourceSpec = USER } } }):await()
    -- Made in vat b, so vat a reaches it through the kernel.
    thing = kernel:queueMessage(r.rootKref, 'peerThing', { 'b' }):await()
  end)
  after_each(function() kernel:stop() end)

  it('rejects host messages to a revoked object, permanently', function()
    local kref = kernel:krefOf(thing)
    assert.equal('poked', ocap.E(thing).poke():await())
    assert.is_false(kernel:isRevoked(kref))
    kernel:revoke(kref)
    assert.is_true(kernel:isRevoked(kref))
    for _ = 1, 3 do
      local e = rejection(ocap.E(thing).poke())
      assert.equal('[KERNEL:OBJECT_REVOKED] Target object has been revoked', e.message)
      assert.equal('OBJECT_REVOKED', e.code)
    end
    assert.equal(1, kernel:queueMessage(r.rootKref, 'ping', { 1 }):await())
  end)

  it('rejects vat messages to revoked objects, and the sender lives on', function()
    local other = kernel:queueMessage(r.rootKref, 'peerThing', { 'b' }):await()
    kernel:revoke(kernel:krefOf(thing))
    kernel:revoke(kernel:krefOf(other))
    for _, t in ipairs({ thing, other }) do
      local res = kernel:queueMessage(r.rootKref, 'sendTo', { t, 'poke' }):await()
      assert.is_false(res.ok)
      assert.equal('OBJECT_REVOKED', res.value.code)
    end
    assert.equal(5, kernel:queueMessage(r.rootKref, 'ping', { 5 }):await())
  end)

  it('rejects messages waiting on a promise that resolves to a revoked object', function()
    kernel:revoke(kernel:krefOf(thing))
    local p = kernel:queueMessage(r.rootKref, 'identity', { thing })
    local e = rejection(ocap.E(p).poke())
    assert.equal('OBJECT_REVOKED', e.code)
  end)

  it('refuses to revoke a promise', function()
    local p = kernel:queueMessage(r.rootKref, 'promiseForThing', {})
    local ok, err = pcall(kernel.revoke, kernel, kernel:krefOf(p))
    assert.is_false(ok)
    assert.matches('cannot revoke promise', err)
  end)

  it('survives a restart', function()
    kernel:stop()
    local db = testing.tempDir()
    kernel = testing.makeKernel({ database = db })
    r = kernel:launchSubcluster({ bootstrap = 'a', vats = { a = { sourceSpec = USER } } }):await()
    thing = kernel:queueMessage(r.rootKref, 'makeThing', {}):await()
    local kref = kernel:krefOf(thing)
    kernel:revoke(kref)
    kernel = testing.restart(kernel)
    assert.is_true(kernel:isRevoked(kref))
    assert.equal('OBJECT_REVOKED', rejection(kernel:queueMessage(kref, 'poke', {})).code)
  end)
end)
